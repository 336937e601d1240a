/* inject.c - ptrace injection for memprof attach/detach (see inject.h). */
#define _GNU_SOURCE
#include "inject.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if !defined(__x86_64__)
#error "memprof attach injects x86-64 code: this architecture is not supported"
#endif

static int fail(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(char *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, MP_ERRLEN, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- the target's memory ---- */

int mp_remote_read(pid_t pid, uint64_t addr, void *buf, size_t n)
{
    struct iovec local = {buf, n}, remote = {(void *)(uintptr_t)addr, n};
    ssize_t got = process_vm_readv(pid, &local, 1, &remote, 1, 0);
    if (got == (ssize_t)n)
        return 0;
    if (got >= 0)
        errno = EFAULT;
    return -1;
}

int mp_remote_write(pid_t pid, uint64_t addr, const void *buf, size_t n)
{
    struct iovec local = {(void *)buf, n}, remote = {(void *)(uintptr_t)addr, n};
    ssize_t put = process_vm_writev(pid, &local, 1, &remote, 1, 0);
    if (put == (ssize_t)n)
        return 0;
    if (put >= 0)
        errno = EFAULT;
    return -1;
}

/* ---- the target's objects: /proc/PID/maps and their ELF files ---- */

typedef struct {
    const unsigned char *data;
    size_t len;
    const Elf64_Ehdr *eh;
} elf_t;

/* [off, off + n) lies within a file of `len` bytes (no overflow). */
static int fits(uint64_t len, uint64_t off, uint64_t n) { return off <= len && n <= len - off; }

/* Maps an object of the target, through /proc/PID/root (its own view of
 * the file system: right in a container too). */
static int elf_open(pid_t pid, const char *path, elf_t *e)
{
    char full[PATH_MAX + 32];
    snprintf(full, sizeof full, "/proc/%d/root%s", (int)pid, path);
    int fd = open(full, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat st;
    void *m = MAP_FAILED;
    if (fstat(fd, &st) == 0 && (size_t)st.st_size >= sizeof(Elf64_Ehdr))
        m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED)
        return -1;
    e->data = m;
    e->len = (size_t)st.st_size;
    e->eh = m;
    if (memcmp(e->eh->e_ident, ELFMAG, SELFMAG) || e->eh->e_ident[EI_CLASS] != ELFCLASS64 ||
        e->eh->e_machine != EM_X86_64 || !fits(e->len, e->eh->e_phoff, (uint64_t)e->eh->e_phnum * sizeof(Elf64_Phdr)) ||
        !fits(e->len, e->eh->e_shoff, (uint64_t)e->eh->e_shnum * sizeof(Elf64_Shdr))) {
        munmap(m, e->len);
        return -1;
    }
    return 0;
}

static void elf_close(elf_t *e) { munmap((void *)e->data, e->len); }

static const Elf64_Phdr *elf_phdr(const elf_t *e, unsigned i)
{
    return (const Elf64_Phdr *)(e->data + e->eh->e_phoff) + i;
}

/* Value of the defined dynamic symbol `name`, or 0. */
static uint64_t elf_dynsym(const elf_t *e, const char *name)
{
    const Elf64_Shdr *sh = (const Elf64_Shdr *)(e->data + e->eh->e_shoff);
    for (unsigned i = 0; i < e->eh->e_shnum; i++) {
        if (sh[i].sh_type != SHT_DYNSYM || sh[i].sh_link >= e->eh->e_shnum)
            continue;
        const Elf64_Shdr *str = &sh[sh[i].sh_link];
        if (!fits(e->len, sh[i].sh_offset, sh[i].sh_size) || !fits(e->len, str->sh_offset, str->sh_size))
            return 0;
        const Elf64_Sym *sym = (const Elf64_Sym *)(e->data + sh[i].sh_offset);
        const char *names = (const char *)e->data + str->sh_offset;
        size_t want = strlen(name);
        for (size_t k = 0; k < sh[i].sh_size / sizeof *sym; k++)
            if (sym[k].st_shndx != SHN_UNDEF && sym[k].st_value && sym[k].st_name < str->sh_size &&
                strnlen(names + sym[k].st_name, str->sh_size - sym[k].st_name) == want &&
                memcmp(names + sym[k].st_name, name, want) == 0)
                return sym[k].st_value;
    }
    return 0;
}

typedef struct {
    char path[PATH_MAX];
    uint64_t start; /* its lowest mapping's start, that mapping's file offset */
    uint64_t offset;
} object_t;

/* The distinct file-backed objects of process pid, in the order of maps. */
static int proc_objects(pid_t pid, object_t **out, size_t *n)
{
    char name[64];
    snprintf(name, sizeof name, "/proc/%d/maps", (int)pid);
    FILE *f = fopen(name, "re");
    if (!f)
        return -1;
    object_t *v = NULL;
    size_t cap = 0;
    *n = 0;
    char line[PATH_MAX + 256];
    while (fgets(line, sizeof line, f)) {
        unsigned long long start, end, off;
        int pos = 0;
        if (sscanf(line, "%llx-%llx %*s %llx %*s %*s %n", &start, &end, &off, &pos) < 3 || !pos)
            continue;
        char *path = line + pos;
        path[strcspn(path, "\n")] = '\0';
        if (path[0] != '/' || strstr(path, " (deleted)"))
            continue;
        size_t i = 0;
        while (i < *n && strcmp(v[i].path, path))
            i++;
        if (i < *n)
            continue; /* its first (lowest) mapping is known */
        if (*n == cap) {
            object_t *g = realloc(v, (cap = cap ? cap * 2 : 64) * sizeof *v);
            if (!g) {
                free(v);
                fclose(f);
                return -1;
            }
            v = g;
        }
        snprintf(v[*n].path, sizeof v[*n].path, "%s", path);
        v[*n].start = start;
        v[*n].offset = off;
        (*n)++;
    }
    fclose(f);
    *out = v;
    return 0;
}

/* Load bias: 0 for an executable at fixed addresses, else where the first
 * PT_LOAD went (its mapping with file offset 0). */
static int elf_bias(const elf_t *e, const object_t *o, uint64_t *bias)
{
    if (e->eh->e_type == ET_EXEC) {
        *bias = 0;
        return 0;
    }
    for (unsigned i = 0; i < e->eh->e_phnum; i++) { /* the segment the lowest mapping shows */
        const Elf64_Phdr *ph = elf_phdr(e, i);
        uint64_t from = ph->p_offset & ~(uint64_t)0xfff;
        if (ph->p_type == PT_LOAD && o->offset >= from && o->offset < ph->p_offset + ph->p_filesz) {
            *bias = o->start - (((ph->p_vaddr & ~(uint64_t)0xfff) + (o->offset - from)));
            return 0;
        }
    }
    return -1;
}

int mp_proc_has_object(pid_t pid, const char *object, char *path, size_t len)
{
    object_t *v;
    size_t n;
    if (proc_objects(pid, &v, &n))
        return 0;
    int found = 0;
    for (size_t i = 0; i < n && !found; i++)
        if (strstr(v[i].path, object)) {
            found = 1;
            if (path)
                snprintf(path, len, "%s", v[i].path);
        }
    free(v);
    return found;
}

/* Calls fn on each object of process pid whose path contains `object`
 * (every one when NULL), its ELF file mapped, until fn returns 0. 0 when
 * one did, -1 otherwise. */
static int each_object(pid_t pid, const char *object, int (*fn)(const elf_t *, const object_t *, void *), void *arg)
{
    object_t *v;
    size_t n;
    if (proc_objects(pid, &v, &n))
        return -1;
    int rc = -1;
    for (size_t i = 0; i < n && rc; i++) {
        elf_t e;
        if ((object && !strstr(v[i].path, object)) || elf_open(pid, v[i].path, &e))
            continue;
        rc = fn(&e, &v[i], arg);
        elf_close(&e);
    }
    free(v);
    return rc;
}

typedef struct {
    const char *name;
    uint64_t *addr;
    char *path;
    size_t len;
} sym_query_t;

static int symbol_in(const elf_t *e, const object_t *o, void *arg)
{
    sym_query_t *q = arg;
    uint64_t bias, value = elf_dynsym(e, q->name);
    if (!value || elf_bias(e, o, &bias))
        return -1;
    *q->addr = bias + value;
    if (q->path)
        snprintf(q->path, q->len, "%s", o->path);
    return 0;
}

int mp_proc_symbol(pid_t pid, const char *object, const char *name, uint64_t *addr, char *path, size_t len)
{
    sym_query_t q = {name, addr, path, len};
    return each_object(pid, object, symbol_in, &q);
}

static int syscall_in(const elf_t *e, const object_t *o, void *arg)
{
    uint64_t bias;
    if (elf_bias(e, o, &bias))
        return -1;
    for (unsigned k = 0; k < e->eh->e_phnum; k++) {
        const Elf64_Phdr *ph = elf_phdr(e, k);
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X) || !fits(e->len, ph->p_offset, ph->p_filesz))
            continue;
        const unsigned char *p = e->data + ph->p_offset;
        for (uint64_t j = 0; j + 1 < ph->p_filesz; j++)
            if (p[j] == 0x0f && p[j + 1] == 0x05) {
                *(uint64_t *)arg = bias + ph->p_vaddr + j;
                return 0;
            }
    }
    return -1;
}

int mp_proc_syscall_insn(pid_t pid, uint64_t *addr) { return each_object(pid, "/libc.so", syscall_in, addr); }

/* ---- ptrace ---- */

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

const char *mp_inject_perm_hint(void)
{
    static char hint[400];
    FILE *f = fopen("/proc/sys/kernel/yama/ptrace_scope", "re");
    int scope = -1;
    if (f) {
        if (fscanf(f, "%d", &scope) != 1)
            scope = -1;
        fclose(f);
    }
    if (scope >= 1)
        snprintf(hint, sizeof hint,
                 "; /proc/sys/kernel/yama/ptrace_scope is %d, which lets only %s trace it: run memprof as root "
                 "(or with CAP_SYS_PTRACE: sudo setcap cap_sys_ptrace+ep on memprof-attach)%s",
                 scope, scope == 1 ? "its parent or a process with CAP_SYS_PTRACE" : "processes with CAP_SYS_PTRACE",
                 scope == 1 ? ", or allow it for now with: echo 0 | sudo tee /proc/sys/kernel/yama/ptrace_scope" : "");
    else
        snprintf(hint, sizeof hint, "; it belongs to another user, or another debugger traces it: run memprof as "
                                    "the process's user, or as root (CAP_SYS_PTRACE)");
    return hint;
}

int mp_inject_seize(mp_inject_t *t, pid_t pid, char *err)
{
    memset(t, 0, sizeof *t);
    t->pid = pid;
    if (mp_proc_syscall_insn(pid, &t->syscall_insn))
        return fail(err, "cannot find the C library (libc.so.6) in process %d", (int)pid);
    if (ptrace(PTRACE_SEIZE, pid, 0, 0)) {
        if (errno == ESRCH)
            return fail(err, "no such process: %d", (int)pid);
        if (errno == EPERM)
            return fail(err, "not allowed to trace process %d%s", (int)pid, mp_inject_perm_hint());
        return fail(err, "cannot trace process %d: %s", (int)pid, strerror(errno));
    }
    t->seized = 1;
    if (ptrace(PTRACE_INTERRUPT, pid, 0, 0))
        return fail(err, "cannot stop process %d: %s", (int)pid, strerror(errno));
    for (int waited = 0;;) {
        int st;
        pid_t w = waitpid(pid, &st, __WALL | WNOHANG);
        if (w < 0)
            return fail(err, "cannot wait for process %d: %s", (int)pid, strerror(errno));
        if (w == 0) { /* an uninterruptible wait (vfork, a frozen cgroup, NFS...): give up, touching nothing */
            if (waited >= 5000)
                return fail(err, "process %d did not stop within 5 s (its main thread is in an uninterruptible "
                                 "wait); try again later", (int)pid);
            sleep_ms(1);
            waited++;
            continue;
        }
        if (WIFEXITED(st) || WIFSIGNALED(st)) {
            t->seized = 0;
            return fail(err, "process %d exited", (int)pid);
        }
        if (!WIFSTOPPED(st))
            continue;
        if (st >> 16 != PTRACE_EVENT_STOP) { /* a signal on its way: kept for the release */
            t->pending_sig = WSTOPSIG(st);
            if (ptrace(PTRACE_CONT, pid, 0, 0)) /* the interrupt stop comes next */
                return fail(err, "cannot stop process %d: %s", (int)pid, strerror(errno));
            continue;
        }
        break;
    }
    if (ptrace(PTRACE_GETREGS, pid, 0, &t->regs))
        return fail(err, "cannot read the registers of process %d: %s", (int)pid, strerror(errno));
    t->xstate_len = 1 << 16;
    t->xstate = malloc(t->xstate_len);
    if (!t->xstate)
        return fail(err, "out of memory");
    struct iovec iov = {t->xstate, t->xstate_len};
    t->xstate_note = NT_X86_XSTATE;
    if (ptrace(PTRACE_GETREGSET, pid, (void *)(uintptr_t)NT_X86_XSTATE, &iov)) {
        iov.iov_len = t->xstate_len;
        t->xstate_note = NT_PRFPREG;
        if (ptrace(PTRACE_GETREGSET, pid, (void *)(uintptr_t)NT_PRFPREG, &iov))
            return fail(err, "cannot read the floating-point state of process %d: %s", (int)pid, strerror(errno));
    }
    t->xstate_len = iov.iov_len;
    t->saved = 1;
    return 0;
}

/* Resumes with `req` until the thread stops with signal `want`; other
 * signals are kept for the release, interrupt stops resumed through. */
static int resume_until(mp_inject_t *t, int req, int want, int timeout_ms, struct user_regs_struct *regs, char *err)
{
    if (ptrace(req, t->pid, 0, 0))
        return fail(err, "cannot resume process %d: %s", (int)t->pid, strerror(errno));
    for (int waited = 0;;) {
        int st;
        pid_t w = waitpid(t->pid, &st, __WALL | WNOHANG);
        if (w < 0)
            return fail(err, "cannot wait for process %d: %s", (int)t->pid, strerror(errno));
        if (w == 0) {
            if (waited >= timeout_ms) {
                /* stopped again, so that the release finds it stopped */
                ptrace(PTRACE_INTERRUPT, t->pid, 0, 0);
                while (waitpid(t->pid, &st, __WALL) == t->pid && WIFSTOPPED(st) && st >> 16 != PTRACE_EVENT_STOP) {
                    t->pending_sig = WSTOPSIG(st);
                    ptrace(PTRACE_CONT, t->pid, 0, 0);
                }
                return fail(err, "process %d did not finish the injected call in %d ms", (int)t->pid, timeout_ms);
            }
            sleep_ms(1);
            waited++;
            continue;
        }
        if (WIFEXITED(st) || WIFSIGNALED(st)) {
            t->seized = 0;
            return fail(err, "process %d exited during the injection", (int)t->pid);
        }
        if (!WIFSTOPPED(st))
            continue;
        int sig = WSTOPSIG(st);
        if (st >> 16 == PTRACE_EVENT_STOP || sig != want) {
            if (st >> 16 != PTRACE_EVENT_STOP)
                t->pending_sig = sig;
            if (ptrace(req, t->pid, 0, 0))
                return fail(err, "cannot resume process %d: %s", (int)t->pid, strerror(errno));
            continue;
        }
        if (ptrace(PTRACE_GETREGS, t->pid, 0, regs))
            return fail(err, "cannot read the registers of process %d: %s", (int)t->pid, strerror(errno));
        return 0;
    }
}

int mp_inject_syscall(mp_inject_t *t, long nr, const long args[6], long *ret, char *err)
{
    struct user_regs_struct r = t->regs;
    r.rip = t->syscall_insn;
    r.rax = (unsigned long)nr;
    r.orig_rax = (unsigned long)-1; /* no restart of a system call the thread was in */
    r.rdi = (unsigned long)args[0];
    r.rsi = (unsigned long)args[1];
    r.rdx = (unsigned long)args[2];
    r.r10 = (unsigned long)args[3];
    r.r8 = (unsigned long)args[4];
    r.r9 = (unsigned long)args[5];
    if (ptrace(PTRACE_SETREGS, t->pid, 0, &r))
        return fail(err, "cannot set the registers of process %d: %s", (int)t->pid, strerror(errno));
    if (resume_until(t, PTRACE_SINGLESTEP, SIGTRAP, 5000, &r, err))
        return -1;
    if (r.rip != t->syscall_insn + 2)
        return fail(err, "the injected system call %ld in process %d ended at %#llx, not after the instruction",
                    nr, (int)t->pid, (unsigned long long)r.rip);
    *ret = (long)r.rax;
    return 0;
}

int mp_inject_call(mp_inject_t *t, uint64_t fn, uint64_t a1, uint64_t a2, uint64_t *ret, int timeout_ms, char *err)
{
    struct user_regs_struct r = t->regs;
    uint64_t sp = ((uint64_t)r.rsp - 1024) & ~(uint64_t)15, zero = 0;
    sp -= 8; /* the return address: 0, where the call's return faults */
    if (mp_remote_write(t->pid, sp, &zero, sizeof zero))
        return fail(err, "cannot write on the stack of process %d: %s", (int)t->pid, strerror(errno));
    r.rsp = sp;
    r.rip = fn;
    r.rdi = a1;
    r.rsi = a2;
    r.rax = 0;
    r.orig_rax = (unsigned long)-1;
    r.eflags &= ~0x400ul; /* the direction flag clear, as the ABI has it at a call */
    if (ptrace(PTRACE_SETREGS, t->pid, 0, &r))
        return fail(err, "cannot set the registers of process %d: %s", (int)t->pid, strerror(errno));
    if (resume_until(t, PTRACE_CONT, SIGSEGV, timeout_ms, &r, err))
        return -1;
    if (r.rip != 0)
        return fail(err, "the injected call crashed process %d's thread at %#llx (signal SIGSEGV, not its return)",
                    (int)t->pid, (unsigned long long)r.rip);
    *ret = r.rax;
    return 0;
}

int mp_inject_release(mp_inject_t *t, char *err)
{
    int rc = 0;
    if (t->seized) {
        struct iovec iov = {t->xstate, t->xstate_len};
        if (!t->saved)
            ; /* stopped before anything was read or changed: nothing to put back */
        else if (ptrace(PTRACE_SETREGS, t->pid, 0, &t->regs))
            rc = fail(err, "cannot restore the registers of process %d: %s", (int)t->pid, strerror(errno));
        else if (t->xstate && ptrace(PTRACE_SETREGSET, t->pid, (void *)(uintptr_t)t->xstate_note, &iov))
            rc = fail(err, "cannot restore the floating-point state of process %d: %s", (int)t->pid,
                      strerror(errno));
        /* not stopped (it never reached the stop): our exit detaches it */
        if (ptrace(PTRACE_DETACH, t->pid, 0, (void *)(uintptr_t)t->pending_sig) && !rc && t->saved)
            rc = fail(err, "cannot let process %d go: %s", (int)t->pid, strerror(errno));
        t->seized = 0;
    }
    free(t->xstate);
    t->xstate = NULL;
    return rc;
}

/* ---- the loader ---- */

size_t mp_attach_loader_code(unsigned char *buf, size_t len)
{
    /* int loader(memprof_attach_req_t *rq): offsets of dlopen_fn 0, dlsym_fn 8,
     * done 16, entry 32 (0x20), library 64 (0x40); see memprof/control.h.
     * The entry is tail-called: once it says `done`, the thread runs no more
     * of this page (the command unmaps it then; it also checks where the
     * thread is, for the failure path's last three instructions). */
    static const unsigned char code[] = {
        0x53,                               /* push rbx          (the stack 16-aligned for the calls) */
        0x48, 0x89, 0xfb,                   /* mov rbx, rdi */
        0x48, 0x8d, 0x7b, 0x40,             /* lea rdi, [rbx+0x40]   library */
        0xbe, 0x02, 0x10, 0x00, 0x00,       /* mov esi, RTLD_NOW|RTLD_NODELETE */
        0xff, 0x13,                         /* call [rbx]            dlopen */
        0x48, 0x85, 0xc0,                   /* test rax, rax */
        0x74, 0x15,                         /* jz fail */
        0x48, 0x89, 0xc7,                   /* mov rdi, rax */
        0x48, 0x8d, 0x73, 0x20,             /* lea rsi, [rbx+0x20]   entry */
        0xff, 0x53, 0x08,                   /* call [rbx+8]          dlsym */
        0x48, 0x85, 0xc0,                   /* test rax, rax */
        0x74, 0x06,                         /* jz fail */
        0x48, 0x89, 0xdf,                   /* mov rdi, rbx */
        0x5b,                               /* pop rbx */
        0xff, 0xe0,                         /* jmp rax               entry(rq): returns for us, never here */
        0xc7, 0x43, 0x10, 0x02, 0, 0, 0,    /* fail: mov dword [rbx+0x10], 2 */
        0x5b,                               /* pop rbx */
        0x31, 0xc0,                         /* xor eax, eax */
        0xc3,                               /* ret */
    };
    size_t n = sizeof code < len ? sizeof code : len;
    memcpy(buf, code, n);
    return n;
}
