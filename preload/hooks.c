/* hooks.c - the allocator entry points of libmemprof.so (the only file with
 * functions named like libc's). Each one calls the real allocator found with
 * dlsym(RTLD_NEXT) and, while this process records and the calling thread is
 * not already inside the recorder, hands the event to recorder.c.
 *
 * Order matters: a free is recorded before the real free runs and an
 * allocation after the real allocator returns, so that when another thread
 * reuses a freed address at once, its allocation is recorded after our free.
 * While dlsym itself runs (it may call calloc), a static bootstrap pool
 * answers; its blocks are never handed to the real free. _exit, _Exit, and
 * kill/raise of the process itself are here too: they end the process
 * without running destructors, so they write the trailer first.
 *
 * Cost, measured with callgrind on tests/c/alloc_counts (25 allocator calls
 * a round): a hook adds about 26 instructions to the real allocator when the
 * process does not record, and recording an event costs about 215 (no Python
 * stack: lock, encoding, rings, compression amortized).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "memprof/format.h"
#include "recorder.h"

typedef struct {
    void *(*malloc)(size_t);
    void (*free)(void *);
    void *(*calloc)(size_t, size_t);
    void *(*realloc)(void *, size_t);
    int (*posix_memalign)(void **, size_t, size_t);
    void *(*aligned_alloc)(size_t, size_t);
    void *(*memalign)(size_t, size_t);
    void *(*valloc)(size_t);
    void *(*pvalloc)(size_t);
    void (*exit_)(int) __attribute__((noreturn));
    int (*kill)(pid_t, int);
    int (*raise)(int);
    void *(*mmap)(void *, size_t, int, int, int, off_t);
    int (*munmap)(void *, size_t);
    void *(*mremap)(void *, size_t, size_t, int, ...);
    int (*setname)(pthread_t, const char *);
    int (*prctl)(int, unsigned long, unsigned long, unsigned long, unsigned long);
    int (*dlclose)(void *);
    void *(*dlopen)(const char *, int);
    int (*execve)(const char *, char *const[], char *const[]);
    int (*execvpe)(const char *, char *const[], char *const[]);
    int (*fexecve)(int, char *const[], char *const[]);
    int (*spawn)(pid_t *, const char *, const posix_spawn_file_actions_t *, const posix_spawnattr_t *,
                 char *const[], char *const[]);
    int (*spawnp)(pid_t *, const char *, const posix_spawn_file_actions_t *, const posix_spawnattr_t *,
                  char *const[], char *const[]);
} mp_real_t;

static mp_real_t real;
static atomic_int resolved;
static atomic_int resolving;

/* ---- bootstrap pool: serves dlsym's own allocations ---- */

#define BOOT_SIZE (64 * 1024)
static _Alignas(64) unsigned char boot_pool[BOOT_SIZE];
static atomic_size_t boot_used;

static int boot_owns(const void *p)
{
    return (const unsigned char *)p >= boot_pool && (const unsigned char *)p < boot_pool + BOOT_SIZE;
}

/* 16-byte header holding the size, then the block (zeroed: the pool is BSS). */
static void *boot_alloc(size_t n, size_t align)
{
    if (align < 16)
        align = 16;
    size_t need = (n + 16 + align + 15) & ~(size_t)15;
    size_t at = atomic_fetch_add(&boot_used, need);
    if (at + need > BOOT_SIZE) {
        mp_log("memprof: bootstrap pool exhausted while resolving the allocator", NULL);
        return NULL;
    }
    uintptr_t base = (uintptr_t)(boot_pool + at + 16);
    uintptr_t p = (base + align - 1) & ~(uintptr_t)(align - 1);
    memcpy((void *)(p - sizeof(size_t)), &n, sizeof n);
    return (void *)p;
}

static size_t boot_size(const void *p)
{
    size_t n;
    memcpy(&n, (const unsigned char *)p - sizeof n, sizeof n);
    return n;
}

/* Preloaded (this library is in the global scope: its control API is
 * found there), this library's malloc is the one everybody calls, and the
 * real one is the next in the search order. Loaded late (dlopen by a Tracker,
 * RTLD_LOCAL: not in the global scope), the real one is what the program
 * calls: the first malloc of the global scope. */
int mp_preloaded;

/* Loaded late: the first object of the global scope (in load order, the
 * executable apart: a non-PIE one names its PLT entry as the function, a
 * PLT we patch) whose own definition dlsym finds. That is where the
 * program's calls were bound, and an allocator preloaded before us counts. */
#define LATE_OBJECTS 256
static int list_object(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    const char **names = arg;
    size_t n = 0;
    while (names[n])
        n++;
    if (n + 1 < LATE_OBJECTS && info->dlpi_name && info->dlpi_name[0])
        names[n] = info->dlpi_name;
    return 0;
}

static void *late_sym(const char *name, const char *const *objects)
{
    for (size_t i = 0; objects[i]; i++) {
        void *h = dlopen(objects[i], RTLD_NOLOAD | RTLD_LAZY);
        if (!h)
            continue;
        void *f = dlsym(h, name);
        Dl_info def;
        int here = f && dladdr(f, &def) && def.dli_fname && strcmp(def.dli_fname, objects[i]) == 0;
        dlclose(h);
        if (here)
            return f;
    }
    return dlsym(RTLD_DEFAULT, name);
}

static MP_COLD MP_NOINLINE void resolve(void)
{
    atomic_store(&resolving, 1);
    mp_real_t r;
    Dl_info self, found;
    /* not malloc itself: a non-PIE executable answers with its PLT entry */
    void *global = dlopen(NULL, RTLD_LAZY | RTLD_NOLOAD); /* the global scope alone */
    void *m = global ? dlsym(global, "memprof_control_active") : NULL;
    mp_preloaded = m && dladdr(m, &found) && dladdr((void *)resolve, &self) && found.dli_fbase == self.dli_fbase;
    static const char *objects[LATE_OBJECTS];
    if (!mp_preloaded)
        dl_iterate_phdr(list_object, objects);
#define SYM(name) (mp_preloaded ? dlsym(RTLD_NEXT, name) : late_sym(name, objects))
    r.malloc = SYM("malloc");
    r.free = SYM("free");
    r.calloc = SYM("calloc");
    r.realloc = SYM("realloc");
    r.posix_memalign = SYM("posix_memalign");
    r.aligned_alloc = SYM("aligned_alloc");
    r.memalign = SYM("memalign");
    r.valloc = SYM("valloc");
    r.pvalloc = SYM("pvalloc");
    r.exit_ = SYM("_exit");
    r.kill = SYM("kill");
    r.raise = SYM("raise");
    r.mmap = SYM("mmap");
    r.munmap = SYM("munmap");
    r.mremap = SYM("mremap");
    r.setname = SYM("pthread_setname_np");
    r.prctl = SYM("prctl");
    r.dlclose = SYM("dlclose");
    r.execve = SYM("execve");
    r.execvpe = SYM("execvpe");
    r.fexecve = SYM("fexecve");
    r.spawn = SYM("posix_spawn");
    r.spawnp = SYM("posix_spawnp");
    if (!r.kill || !r.raise || !r.mmap || !r.munmap || !r.mremap || !r.setname || !r.prctl || !r.dlclose ||
        !r.execve || !r.execvpe || !r.fexecve || !r.spawn || !r.spawnp ||
        !r.malloc || !r.free || !r.calloc || !r.realloc || !r.posix_memalign || !r.memalign ||
        !r.exit_) {
        static const char msg[] = "memprof: cannot find the real allocator; aborting\n";
        (void)!write(2, msg, sizeof msg - 1);
        _exit(127);
    }
    r.dlopen = SYM("dlopen");
#undef SYM
    real = r;
    atomic_store(&resolved, 1);
    atomic_store(&resolving, 0);
}

/* Returns 1 when the real functions are usable, 0 while they are being
 * looked up (the caller then serves from the pool). */
static inline int ready(void)
{
    if (MP_LIKELY(atomic_load_explicit(&resolved, memory_order_acquire)))
        return 1;
    if (atomic_load(&resolving))
        return 0;
    resolve();
    return 1;
}

void mp_hooks_init(void) { (void)ready(); }

void mp_count_tracker_alloc(void);

/* 1 when this call is to be recorded. A call made while the recorder itself
 * runs is not, and is counted: the recorder must make none. */
static inline int recording(void)
{
    if (MP_LIKELY(!mp_guard))
        return atomic_load_explicit(&mp_active, memory_order_relaxed);
    if (mp_guard == MP_GUARD_REC && atomic_load_explicit(&mp_active, memory_order_relaxed))
        mp_count_tracker_alloc();
    return 0;
}

/* The same for mappings, which the recorder makes on purpose (its tables,
 * libunwind's caches): not recorded, not counted. */
static inline int recording_map(void)
{
    return !mp_guard && atomic_load_explicit(&mp_active, memory_order_relaxed);
}

MP_EXPORT void *malloc(size_t n)
{
    if (MP_UNLIKELY(!ready()))
        return boot_alloc(n, 16);
    void *p = real.malloc(n);
    if (recording() && p)
        mp_rec_alloc(MEMPROF_A_MALLOC, p, n);
    return p;
}

MP_EXPORT void free(void *p)
{
    if (!p || MP_UNLIKELY(boot_owns(p)))
        return;
    if (MP_UNLIKELY(!ready()))
        return; /* cannot happen: nothing but the pool was handed out yet */
    if (recording())
        mp_rec_free(MEMPROF_D_FREE, p);
    real.free(p);
}

MP_EXPORT void *calloc(size_t n, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    if (MP_UNLIKELY(!ready()))
        return boot_alloc(total, 16);
    void *p = real.calloc(n, size);
    if (recording() && p)
        mp_rec_alloc(MEMPROF_A_CALLOC, p, total);
    return p;
}

/* realloc and reallocarray: the old block is recorded as freed before the
 * call (its address may be reused by another thread the moment the call
 * returns); if the call fails the old block is still live, so it is restored. */
static void *boot_realloc(void *p, size_t n)
{
    void *q = malloc(n);
    if (q) {
        size_t old = boot_size(p);
        memcpy(q, p, old < n ? old : n);
    }
    return q;
}

MP_EXPORT void *realloc(void *p, size_t n)
{
    if (MP_UNLIKELY(p && boot_owns(p)))
        return boot_realloc(p, n);
    if (MP_UNLIKELY(!ready()))
        return p ? NULL : boot_alloc(n, 16);
    if (!recording())
        return real.realloc(p, n);
    if (p)
        mp_rec_free(MEMPROF_D_REALLOC, p);
    void *q = real.realloc(p, n);
    if (q)
        mp_rec_alloc(MEMPROF_A_REALLOC, q, n);
    else if (p && n)
        mp_rec_restore(p);
    return q;
}

MP_EXPORT void *reallocarray(void *p, size_t n, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    if (MP_UNLIKELY(p && boot_owns(p)))
        return boot_realloc(p, total);
    if (MP_UNLIKELY(!ready()))
        return p ? NULL : boot_alloc(total, 16);
    /* Not the real reallocarray: glibc's calls realloc through the PLT,
     * which would record the block twice. */
    if (!recording())
        return real.realloc(p, total);
    if (p)
        mp_rec_free(MEMPROF_D_REALLOC, p);
    void *q = real.realloc(p, total);
    if (q)
        mp_rec_alloc(MEMPROF_A_REALLOCARRAY, q, total);
    else if (p && total)
        mp_rec_restore(p);
    return q;
}

MP_EXPORT int posix_memalign(void **out, size_t align, size_t n)
{
    if (MP_UNLIKELY(!ready())) {
        *out = boot_alloc(n, align);
        return *out ? 0 : ENOMEM;
    }
    int rc = real.posix_memalign(out, align, n);
    if (rc == 0 && recording() && *out)
        mp_rec_alloc(MEMPROF_A_POSIX_MEMALIGN, *out, n);
    return rc;
}

MP_EXPORT void *aligned_alloc(size_t align, size_t n)
{
    if (MP_UNLIKELY(!ready()))
        return boot_alloc(n, align);
    void *p = real.aligned_alloc ? real.aligned_alloc(align, n) : real.memalign(align, n);
    if (recording() && p)
        mp_rec_alloc(MEMPROF_A_ALIGNED_ALLOC, p, n);
    return p;
}

MP_EXPORT void *memalign(size_t align, size_t n)
{
    if (MP_UNLIKELY(!ready()))
        return boot_alloc(n, align);
    void *p = real.memalign(align, n);
    if (recording() && p)
        mp_rec_alloc(MEMPROF_A_MEMALIGN, p, n);
    return p;
}

MP_EXPORT void *valloc(size_t n)
{
    if (MP_UNLIKELY(!ready()))
        return boot_alloc(n, 4096);
    void *p = real.valloc ? real.valloc(n) : real.memalign((size_t)sysconf(_SC_PAGESIZE), n);
    if (recording() && p)
        mp_rec_alloc(MEMPROF_A_VALLOC, p, n);
    return p;
}

MP_EXPORT void *pvalloc(size_t n)
{
    if (MP_UNLIKELY(!ready()))
        return boot_alloc(n, 4096);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    void *p = real.pvalloc ? real.pvalloc(n) : real.memalign(page, (n + page - 1) & ~(page - 1));
    if (recording() && p)
        mp_rec_alloc(MEMPROF_A_PVALLOC, p, n);
    return p;
}

/* ---- mappings ----
 * A mapping of a file is told apart from anonymous memory (MAP_ANONYMOUS):
 * reports never count a mapped file as heap. munmap may free part of a
 * mapping; mremap is a free of the old range and a new mapping. */

MP_EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    if (MP_UNLIKELY(!ready()))
        return (void *)syscall(SYS_mmap, addr, len, prot, flags, fd, off);
    void *p = real.mmap(addr, len, prot, flags, fd, off);
    if (p != MAP_FAILED && recording_map())
        mp_rec_alloc((flags & MAP_ANONYMOUS) || fd < 0 ? MEMPROF_A_MMAP : MEMPROF_A_MMAP_FILE, p, len);
    return p;
}

MP_EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
    __attribute__((alias("mmap")));

MP_EXPORT int munmap(void *addr, size_t len)
{
    if (MP_UNLIKELY(!ready()))
        return (int)syscall(SYS_munmap, addr, len);
    if (recording_map())
        mp_rec_free_range(MEMPROF_D_MUNMAP, addr, len);
    return real.munmap(addr, len);
}

MP_EXPORT void *mremap(void *old, size_t old_len, size_t len, int flags, ...)
{
    void *want = NULL;
    if (flags & MREMAP_FIXED) {
        va_list ap;
        va_start(ap, flags);
        want = va_arg(ap, void *);
        va_end(ap);
    }
    if (MP_UNLIKELY(!ready()))
        return (void *)syscall(SYS_mremap, old, old_len, len, flags, want);
    /* old_len 0 duplicates a shared mapping, DONTUNMAP keeps the old range:
     * neither frees anything */
    int frees = old_len && !(flags & MREMAP_DONTUNMAP);
    int rec = recording_map();
    if (rec && frees)
        mp_rec_free_range(MEMPROF_D_MREMAP, old, old_len);
    void *p = real.mremap(old, old_len, len, flags, want);
    if (rec && p != MAP_FAILED)
        mp_rec_alloc(MEMPROF_A_MREMAP, p, len);
    else if (rec && frees)
        mp_rec_restore(old);
    return p;
}

/* ---- thread names and loaded objects ---- */

MP_EXPORT int pthread_setname_np(pthread_t th, const char *name)
{
    if (MP_UNLIKELY(!ready()))
        return ENOSYS;
    int rc = real.setname(th, name);
    if (rc == 0 && recording_map())
        mp_rec_thread_name((unsigned long)th, name, strnlen(name, 64));
    return rc;
}

MP_EXPORT int prctl(int option, ...)
{
    va_list ap;
    va_start(ap, option);
    unsigned long a2 = va_arg(ap, unsigned long), a3 = va_arg(ap, unsigned long);
    unsigned long a4 = va_arg(ap, unsigned long), a5 = va_arg(ap, unsigned long);
    va_end(ap);
    if (MP_UNLIKELY(!ready()))
        return (int)syscall(SYS_prctl, option, a2, a3, a4, a5);
    int rc = real.prctl(option, a2, a3, a4, a5);
    if (rc == 0 && option == PR_SET_NAME && a2 && recording_map())
        mp_rec_thread_name((unsigned long)pthread_self(), (const char *)a2, strnlen((const char *)a2, 16));
    return rc;
}

MP_EXPORT int dlclose(void *handle)
{
    while (!ready())
        sched_yield();
    int rc = real.dlclose(handle);
    atomic_fetch_add(&mp_code_gen, 1);  /* unwind rules of unmapped code go */
    atomic_store(&mp_modules_dirty, 1); /* read the list of objects again */
    return rc;
}

/* ---- exec and spawn ----
 * The capture is finished before exec replaces this image (resumed if the
 * exec fails); with --follow-fork the new program gets what it needs to
 * profile itself (a Python one writes a capture of its own). Nothing here
 * allocates: a vfork child runs it on its parent's memory. */

#define ENV_MAX 1024
#define ENV_ROOM 16384

enum { X_EXECVE, X_EXECVPE, X_FEXECVE, X_SPAWN, X_SPAWNP };

typedef struct {
    int kind;
    const char *path;
    int fd;
    pid_t *pid;
    const posix_spawn_file_actions_t *fa;
    const posix_spawnattr_t *attr;
    char *const *argv;
} exec_call_t;

static int call_real(const exec_call_t *c, char *const envp[])
{
    switch (c->kind) {
    case X_EXECVE: return real.execve(c->path, c->argv, envp);
    case X_EXECVPE: return real.execvpe(c->path, c->argv, envp);
    case X_FEXECVE: return real.fexecve(c->fd, c->argv, envp);
    case X_SPAWN: return real.spawn(c->pid, c->path, c->fa, c->attr, c->argv, envp);
    default: return real.spawnp(c->pid, c->path, c->fa, c->attr, c->argv, envp);
    }
}

/* The children's environment takes room on the stack only when children
 * are followed (a thread with a small stack may exec). */
static MP_NOINLINE int call_with_child_env(const exec_call_t *c, char *const envp[])
{
    char *env[ENV_MAX], buf[ENV_ROOM];
    return call_real(c, mp_child_env(envp, env, ENV_MAX, buf, sizeof buf));
}

static int do_exec(const exec_call_t *c, char *const envp[])
{
    while (!ready()) /* another thread is looking the real functions up: a moment */
        sched_yield();
    int spawn = c->kind >= X_SPAWN;
    if (!spawn)
        mp_rec_exec_begin();
    int rc = mp_following() ? call_with_child_env(c, envp) : call_real(c, envp);
    if (!spawn) {
        int err = errno;
        mp_rec_exec_failed();
        errno = err;
    }
    return rc;
}

MP_EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
    return do_exec(&(exec_call_t){X_EXECVE, path, -1, NULL, NULL, NULL, argv}, envp);
}

MP_EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
    return do_exec(&(exec_call_t){X_EXECVPE, file, -1, NULL, NULL, NULL, argv}, envp);
}

MP_EXPORT int fexecve(int fd, char *const argv[], char *const envp[])
{
    return do_exec(&(exec_call_t){X_FEXECVE, NULL, fd, NULL, NULL, NULL, argv}, envp);
}

MP_EXPORT int execv(const char *path, char *const argv[])
{
    extern char **environ;
    return execve(path, argv, environ);
}

MP_EXPORT int execvp(const char *file, char *const argv[])
{
    extern char **environ;
    return execvpe(file, argv, environ);
}

/* execl, execlp, execle: the arguments into an array on the stack. Returns
 * 0, or -1 with errno E2BIG when there are too many. */
#define ARGS_MAX 4096

static int collect_args(char **av, const char *arg0, va_list *ap)
{
    size_t n = 0;
    av[n++] = (char *)arg0;
    while (n < ARGS_MAX && (av[n] = va_arg(*ap, char *)) != NULL)
        n++;
    if (n < ARGS_MAX)
        return 0;
    errno = E2BIG;
    return -1;
}

MP_EXPORT int execl(const char *path, const char *arg, ...)
{
    extern char **environ;
    char *av[ARGS_MAX];
    va_list ap;
    va_start(ap, arg);
    int rc = collect_args(av, arg, &ap);
    va_end(ap);
    return rc ? rc : execve(path, av, environ);
}

MP_EXPORT int execlp(const char *file, const char *arg, ...)
{
    extern char **environ;
    char *av[ARGS_MAX];
    va_list ap;
    va_start(ap, arg);
    int rc = collect_args(av, arg, &ap);
    va_end(ap);
    return rc ? rc : execvpe(file, av, environ);
}

MP_EXPORT int execle(const char *path, const char *arg, ...)
{
    char *av[ARGS_MAX];
    va_list ap;
    va_start(ap, arg);
    int rc = collect_args(av, arg, &ap);
    char *const *envp = rc ? NULL : va_arg(ap, char *const *);
    va_end(ap);
    return rc ? rc : execve(path, av, envp);
}

MP_EXPORT int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                          const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    return do_exec(&(exec_call_t){X_SPAWN, path, -1, pid, fa, attr, argv}, envp);
}

MP_EXPORT int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
                           const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    return do_exec(&(exec_call_t){X_SPAWNP, file, -1, pid, fa, attr, argv}, envp);
}

/* _exit skips atexit handlers and destructors; the capture still gets its
 * trailer (os._exit() in the profiled process lands here). */
MP_EXPORT void _exit(int status)
{
    if (!ready()) /* another thread is still looking the real one up */
        for (;;)
            syscall(SYS_exit_group, status);
    mp_rec_finish();
    real.exit_(status);
}

MP_EXPORT void _Exit(int status) { _exit(status); }

/* 1 when `sig`, delivered now, ends this process: its action is the
 * default one, that default terminates, and it is not blocked. */
static int ends_process(int sig)
{
    if (sig == SIGKILL)
        return 1;
    if (sig <= 0 || sig >= NSIG || sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU ||
        sig == SIGCHLD || sig == SIGCONT || sig == SIGURG || sig == SIGWINCH)
        return 0;
    struct sigaction sa;
    sigset_t blocked;
    if (sigaction(sig, NULL, &sa) != 0 || sa.sa_handler != SIG_DFL)
        return 0;
    return pthread_sigmask(SIG_BLOCK, NULL, &blocked) == 0 && !sigismember(&blocked, sig);
}

/* A process that kills itself (Python re-raises SIGINT after finalizing on
 * ^C; os.kill(os.getpid(), ...)) skips destructors: finish the capture. */
MP_EXPORT int kill(pid_t pid, int sig)
{
    if (!ready())
        return (int)syscall(SYS_kill, pid, sig);
    if (pid == getpid() && ends_process(sig))
        mp_rec_finish();
    return real.kill(pid, sig);
}

MP_EXPORT int raise(int sig)
{
    if (!ready())
        return (int)syscall(SYS_tgkill, getpid(), gettid(), sig);
    if (ends_process(sig))
        mp_rec_finish();
    return real.raise(sig);
}

/* ---- loaded late: the table got.c patches in ----
 * Loaded by dlopen, this library's malloc is not the one the program's
 * objects call: got.c points their GOT entries at these hooks instead.
 * The hooks are named through hidden aliases: a reference to `malloc`
 * itself from here would bind to the program's (the global scope's). */

/* dlopen: the new object (and what it brought along) is patched too. */
static void *late_dlopen(const char *file, int mode)
{
    void *h = real.dlopen(file, mode);
    if (h)
        mp_got_refresh();
    atomic_store(&mp_modules_dirty, 1);
    return h;
}

#define HOOK(name) {#name, (void *)mp_hook_##name}
#define ALIAS(name) extern __typeof__(name) mp_hook_##name __attribute__((alias(#name), copy(name), visibility("hidden")))
ALIAS(malloc);
ALIAS(free);
ALIAS(calloc);
ALIAS(realloc);
ALIAS(reallocarray);
ALIAS(posix_memalign);
ALIAS(aligned_alloc);
ALIAS(memalign);
ALIAS(valloc);
ALIAS(pvalloc);
ALIAS(mmap);
ALIAS(mmap64);
ALIAS(munmap);
ALIAS(mremap);
ALIAS(pthread_setname_np);
ALIAS(prctl);
ALIAS(dlclose);
ALIAS(_exit);
ALIAS(_Exit);

const mp_hook_t mp_hooks[] = {
    HOOK(malloc),  HOOK(free),    HOOK(calloc), HOOK(realloc), HOOK(reallocarray), HOOK(posix_memalign),
    HOOK(aligned_alloc), HOOK(memalign), HOOK(valloc), HOOK(pvalloc), HOOK(mmap), HOOK(mmap64),
    HOOK(munmap),  HOOK(mremap),  HOOK(pthread_setname_np), HOOK(prctl), HOOK(dlclose), HOOK(_exit),
    HOOK(_Exit),   {"dlopen", (void *)late_dlopen}, {NULL, NULL},
};
