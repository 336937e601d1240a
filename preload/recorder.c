/* recorder.c - the capture writer inside the profiled process.
 *
 * One writer lock orders every event: whoever holds it appends the record to
 * the one block buffer, so the file order is the global order and the reader
 * needs no merge. A full block is compressed (LZ4, caller-provided state) and
 * written at once, so a killed process loses at most the block in progress
 * (a block is also written when an event comes more than a second after the
 * last write, so a busy program loses at most about a second). Memory for tables comes from mmap, never from malloc;
 * a failure turns recording off, says so in one line on stderr, and the
 * program goes on. After fork the child stops recording: it never writes to
 * the parent's file.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <lz4.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "encode.h"
#include "memprof/memprof.h"
#include "recorder.h"

MP_TLS int mp_guard;
atomic_int mp_active;
static MP_TLS mp_thread_t *mp_self;

void mp_hooks_init(void);

/* ---- the writer lock: a futex mutex (0 free, 1 held, 2 held + waiters) ---- */

static atomic_int wlock;

static MP_COLD MP_NOINLINE void lock_slow(void)
{
    for (int spin = 0; spin < 100; spin++) {
        int c = 0;
        if (atomic_load_explicit(&wlock, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_weak_explicit(&wlock, &c, 1, memory_order_acquire, memory_order_relaxed))
            return;
        __builtin_ia32_pause();
    }
    while (atomic_exchange_explicit(&wlock, 2, memory_order_acquire) != 0)
        syscall(SYS_futex, &wlock, FUTEX_WAIT_PRIVATE, 2, NULL, NULL, 0);
}

static inline void lock(void)
{
    int c = 0;
    if (!atomic_compare_exchange_strong_explicit(&wlock, &c, 1, memory_order_acquire, memory_order_relaxed))
        lock_slow();
}

static inline void unlock(void)
{
    if (atomic_fetch_sub_explicit(&wlock, 1, memory_order_release) != 1) {
        atomic_store_explicit(&wlock, 0, memory_order_release);
        syscall(SYS_futex, &wlock, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    }
}

/* ---- writer state (all under the lock) ---- */

#define FLUSH_AFTER_NS 1000000000ull /* a block older than 1 s is written */
#define TIME_EVERY_NS 10000000ull    /* a TIME record every 10 ms of activity */

static struct {
    pid_t pid;              /* the process that owns the capture */
    int fd;
    int statm_fd;
    int finished;
    unsigned pystack;
    pthread_t main_thread;
    mp_enc_t enc;
    uint64_t start_ns, block_ns, time_ns;
    uint64_t allocs, frees, blocks;
    uint32_t nthreads;
    uint32_t tick;
    mp_thread_t *free_threads;
    pthread_key_t key;
} W;

static atomic_ulong tracker_allocs;
/* Two block buffers used in turn (blocks are linked: the previous one must
 * stay intact while the next is compressed), kept apart by the output
 * buffer (struct members keep their order) so that LZ4 never sees them as
 * one contiguous stream. */
static struct {
    _Alignas(64) uint8_t a[MEMPROF_BLOCK_MAX];
    _Alignas(64) uint8_t out[8 + LZ4_COMPRESSBOUND(MEMPROF_BLOCK_MAX)];
    _Alignas(64) uint8_t b[MEMPROF_BLOCK_MAX];
} bufs;
static LZ4_stream_t lz4_stream;

static uint64_t now_ns(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void mp_log(const char *msg, const char *detail)
{
    (void)!write(2, msg, strlen(msg));
    if (detail) {
        (void)!write(2, ": ", 2);
        (void)!write(2, detail, strlen(detail));
    }
    (void)!write(2, "\n", 1);
}

void mp_stop_recording(const char *why, int err)
{
    if (atomic_exchange(&mp_active, 0)) {
        mp_log(why, err ? strerrordesc_np(err) : NULL);
    }
}

static int write_all(const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = write(W.fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static MP_COLD MP_NOINLINE void flush_locked(void)
{
    if (W.enc.len == 0)
        return;
    size_t n = mp_lz4f_block(&lz4_stream, W.enc.buf, W.enc.len, bufs.out);
    int err = write_all(bufs.out, n);
    if (err)
        mp_stop_recording("memprof: cannot write the capture, recording stopped", err);
    W.blocks++;
    W.enc.buf = W.enc.buf == bufs.a ? bufs.b : bufs.a;
    mp_enc_reset(&W.enc);
    W.block_ns = now_ns(CLOCK_MONOTONIC);
}

/* Calls `enc` again after a flush when the block is full. */
#define EMIT(call)                                    \
    do {                                              \
        if (MP_UNLIKELY((call) == MEMPROF_ENOSPACE)) { \
            flush_locked();                           \
            (void)(call);                             \
        }                                             \
    } while (0)

static uint64_t rss_kib(void)
{
    char buf[128];
    if (W.statm_fd < 0)
        return 0;
    ssize_t n = pread(W.statm_fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    const char *p = buf;
    while (*p && *p != ' ')
        p++;
    uint64_t pages = 0;
    for (p++; *p >= '0' && *p <= '9'; p++)
        pages = pages * 10 + (uint64_t)(*p - '0');
    return pages * (uint64_t)sysconf(_SC_PAGESIZE) / 1024;
}

/* Every 64 events: a TIME record when 10 ms passed, a flush after 1 s. */
static MP_COLD MP_NOINLINE void clock_tick_locked(void)
{
    uint64_t t = now_ns(CLOCK_MONOTONIC);
    if (t - W.time_ns >= TIME_EVERY_NS) {
        W.time_ns = t;
        EMIT(mp_enc_time(&W.enc, (t - W.start_ns) / 1000, rss_kib()));
    }
    if (t - W.block_ns >= FLUSH_AFTER_NS)
        flush_locked();
}

static inline void after_event_locked(void)
{
    if (MP_UNLIKELY((++W.tick & 63) == 0))
        clock_tick_locked();
}

void mp_emit_string(const void *s, size_t n) { EMIT(mp_enc_string(&W.enc, s, n)); }

void mp_emit_code(unsigned flags, uint32_t filename, uint32_t qualname, uint32_t firstlineno)
{
    EMIT(mp_enc_code(&W.enc, flags, filename, qualname, firstlineno));
}

void mp_emit_node(uint32_t id, uint32_t parent, uint32_t code, int32_t line, uint32_t firstlineno)
{
    EMIT(mp_enc_node(&W.enc, id, parent, code, line, firstlineno));
}

int mp_mem_grow(void **p, uint32_t *cap, uint32_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    uint64_t ncap = *cap ? *cap : 256;
    while (ncap < need)
        ncap *= 2;
    if (ncap > UINT32_MAX / 2)
        return -1;
    size_t old = (size_t)*cap * elem, nsz = (size_t)ncap * elem;
    void *q = *p ? mremap(*p, old, nsz, MREMAP_MAYMOVE)
                 : mmap(NULL, nsz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (q == MAP_FAILED)
        return -1;
    *p = q;
    *cap = (uint32_t)ncap;
    return 0;
}

/* ---- threads ---- */

static void thread_gone(void *arg)
{
    mp_thread_t *t = arg;
    int g = mp_guard;
    mp_guard = MP_GUARD_REC;
    lock();
    t->next_free = W.free_threads;
    W.free_threads = t;
    unlock();
    mp_self = NULL;
    mp_guard = g;
}

/* The calling thread's state, made (and given an index) on first use. */
static MP_COLD MP_NOINLINE mp_thread_t *thread_new_locked(void)
{
    mp_thread_t *t = W.free_threads;
    if (t) {
        W.free_threads = t->next_free;
    } else {
        t = mmap(NULL, sizeof *t, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (t == MAP_FAILED) {
            mp_stop_recording("memprof: out of memory for thread state, recording stopped", 0);
            return NULL;
        }
        memset(t, 0, sizeof *t);
    }
    t->index = ++W.nthreads;
    t->is_main = pthread_equal(pthread_self(), W.main_thread);
    t->prev_depth = 0;
    t->next_free = NULL;
    EMIT(mp_enc_thread_new(&W.enc, t->index, (uint64_t)syscall(SYS_gettid)));
    mp_self = t;
    pthread_setspecific(W.key, t);
    return t;
}

/* ---- events ---- */

void mp_rec_alloc(unsigned allocator, const void *p, size_t size)
{
    mp_guard = MP_GUARD_REC;
    mp_thread_t *t = mp_self;
    uint32_t depth = t ? mp_py_walk(t) : 0;
    lock();
    if (MP_UNLIKELY(!atomic_load_explicit(&mp_active, memory_order_relaxed)))
        goto out;
    if (MP_UNLIKELY(!t)) {
        if (!(t = thread_new_locked()))
            goto out;
        unlock(); /* walk outside the lock (it only reads this thread's frames) */
        depth = mp_py_walk(t);
        lock();
        if (!atomic_load_explicit(&mp_active, memory_order_relaxed))
            goto out;
    }
    uint32_t stack = mp_py_intern(t, depth);
    EMIT(mp_enc_alloc(&W.enc, t->index, allocator, (uint64_t)(uintptr_t)p, size, stack));
    W.allocs++;
    after_event_locked();
out:
    unlock();
    mp_guard = 0;
}

void mp_rec_free(unsigned deallocator, const void *p)
{
    mp_guard = MP_GUARD_REC;
    /* A plain free names no thread (replay does not need one); the free half
     * of a realloc does, so that a failed realloc can be restored. */
    uint32_t thread = 0;
    if (deallocator == MEMPROF_D_REALLOC) {
        mp_thread_t *t = mp_self;
        if (!t) {
            lock();
            t = atomic_load(&mp_active) ? thread_new_locked() : NULL;
            unlock();
        }
        thread = t ? t->index : 0;
    }
    lock();
    if (MP_LIKELY(atomic_load_explicit(&mp_active, memory_order_relaxed)) &&
        (thread || deallocator != MEMPROF_D_REALLOC)) {
        EMIT(mp_enc_free(&W.enc, thread, deallocator, (uint64_t)(uintptr_t)p));
        W.frees++;
        after_event_locked();
    }
    unlock();
    mp_guard = 0;
}

void mp_rec_restore(const void *p)
{
    mp_guard = MP_GUARD_REC;
    mp_thread_t *t = mp_self;
    lock();
    if (t && atomic_load_explicit(&mp_active, memory_order_relaxed))
        EMIT(mp_enc_restore(&W.enc, t->index, (uint64_t)(uintptr_t)p));
    unlock();
    mp_guard = 0;
}

void mp_rec_mark(unsigned kind)
{
    int g = mp_guard;
    mp_guard = MP_GUARD_REC;
    lock();
    if (atomic_load_explicit(&mp_active, memory_order_relaxed)) {
        EMIT(mp_enc_mark(&W.enc, kind, (now_ns(CLOCK_MONOTONIC) - W.start_ns) / 1000));
        flush_locked(); /* the mark matters: get it to disk now */
    }
    unlock();
    mp_guard = g;
}

/* Called from a hook when the recorder allocated on its own: a bug, counted
 * so that tests can prove it never happens. */
void mp_count_tracker_alloc(void) { atomic_fetch_add_explicit(&tracker_allocs, 1, memory_order_relaxed); }

void mp_rec_finish(void)
{
    if (W.pid == 0 || getpid() != W.pid)
        return;
    /* Called from a signal handler that interrupted this thread inside the
     * recorder (which holds the lock): leave the capture truncated rather
     * than wait on ourselves. */
    if (mp_guard == MP_GUARD_REC)
        return;
    int g = mp_guard;
    mp_guard = MP_GUARD_REC;
    lock();
    if (!W.finished && W.fd >= 0) {
        W.finished = 1;
        int was_active = atomic_exchange(&mp_active, 0);
        if (was_active)
            flush_locked();
        uint8_t buf[256];
        size_t n = mp_lz4f_end(buf), t0 = n, k = t0 + MP_TRAILER_FIXED;
        k += mp_tlv_varint(buf + k, MEMPROF_T_END_REALTIME, now_ns(CLOCK_REALTIME));
        k += mp_tlv_varint(buf + k, MEMPROF_T_END_MONOTONIC, now_ns(CLOCK_MONOTONIC));
        k += mp_tlv_varint(buf + k, MEMPROF_T_EVENTS, W.allocs + W.frees);
        k += mp_tlv_varint(buf + k, MEMPROF_T_ALLOCS, W.allocs);
        k += mp_tlv_varint(buf + k, MEMPROF_T_FREES, W.frees);
        k += mp_tlv_varint(buf + k, MEMPROF_T_BLOCKS, W.blocks);
        k += mp_tlv_varint(buf + k, MEMPROF_T_TRACKER_ALLOCS, atomic_load(&tracker_allocs));
        n = t0 + mp_trailer_seal(buf + t0, k - t0 - MP_TRAILER_FIXED);
        if (was_active)
            (void)write_all(buf, n);
        close(W.fd);
        W.fd = -1;
    }
    unlock();
    mp_guard = g;
}

/* ---- fork ---- */

static MP_TLS int fork_saved_guard;

static void fork_prepare(void)
{
    fork_saved_guard = mp_guard;
    mp_guard = MP_GUARD_PYAPI;
    lock();
}

static void fork_parent(void)
{
    unlock();
    mp_guard = fork_saved_guard;
}

static void fork_child(void)
{
    /* The child never writes into the parent's file. */
    atomic_store(&mp_active, 0);
    atomic_store(&wlock, 0);
    if (W.fd >= 0)
        close(W.fd);
    W.fd = -1;
    W.pid = 0;
    mp_guard = fork_saved_guard;
}

/* ---- start ---- */

/* Value of NAME in environ, without getenv (which may not be ready). */
static char *env_get(const char *name)
{
    extern char **environ;
    size_t n = strlen(name);
    for (char **e = environ; e && *e; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
            return *e + n + 1;
    return NULL;
}

/* Takes memprof's variables out of the environment, in place (no
 * allocation), so the program and its children see what they would
 * without memprof: the MEMPROF_* that memprof run set go, and the first
 * entry of LD_PRELOAD (libmemprof.so, put there by memprof run) too. */
static void env_scrub(void)
{
    extern char **environ;
    char **dst = environ;
    for (char **e = environ; e && *e; e++) {
        if (strncmp(*e, "MEMPROF_FD=", 11) == 0 || strncmp(*e, "MEMPROF_EXE=", 12) == 0)
            continue;
        if (strncmp(*e, "LD_PRELOAD=", 11) == 0) {
            char *v = *e + 11, *rest = v + strcspn(v, ": ");
            while (*rest == ':' || *rest == ' ')
                rest++;
            if (!*rest)
                continue;
            memmove(v, rest, strlen(rest) + 1);
        }
        *dst++ = *e;
    }
    if (dst)
        *dst = NULL;
}

static size_t read_small(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    size_t n = 0;
    ssize_t r;
    while (n < cap && (r = read(fd, buf + n, cap - n)) > 0)
        n += (size_t)r;
    close(fd);
    return n;
}

static int write_header(void)
{
    static uint8_t hdr[24576];
    static char argv[8192], exe[4096];
    uint8_t *p = hdr + MEMPROF_HEADER_FIXED;
    size_t na = read_small("/proc/self/cmdline", argv, sizeof argv);
    ssize_t ne = readlink("/proc/self/exe", exe, sizeof exe - 1);
    const char *pyv = mp_py_version();
    p += mp_tlv_varint(p, MEMPROF_H_PID, (uint64_t)W.pid);
    p += mp_tlv_varint(p, MEMPROF_H_PPID, (uint64_t)getppid());
    p += mp_tlv_varint(p, MEMPROF_H_START_REALTIME, now_ns(CLOCK_REALTIME));
    p += mp_tlv_varint(p, MEMPROF_H_START_MONOTONIC, W.start_ns);
    p += mp_tlv_bytes(p, MEMPROF_H_ARGV, argv, na);
    if (pyv) {
        p += mp_tlv_bytes(p, MEMPROF_H_PYTHON_VERSION, pyv, strnlen(pyv, 256));
        p += mp_tlv_varint(p, MEMPROF_H_PYTHON_HEXVERSION, mp_py_hexversion());
    }
    p += mp_tlv_varint(p, MEMPROF_H_OPTIONS, W.pystack == MEMPROF_PYSTACK_WALKER ? MEMPROF_OPT_PYTHON_STACKS : 0);
    p += mp_tlv_bytes(p, MEMPROF_H_EXECUTABLE, exe, ne > 0 ? (size_t)ne : 0);
    p += mp_tlv_varint(p, MEMPROF_H_PAGE_SIZE, (uint64_t)sysconf(_SC_PAGESIZE));
    p += mp_tlv_bytes(p, MEMPROF_H_TOOL_VERSION, MEMPROF_VERSION_STRING, strlen(MEMPROF_VERSION_STRING));
    p += mp_tlv_varint(p, MEMPROF_H_PYSTACK, W.pystack);
    size_t n = mp_header_seal(hdr, (size_t)(p - hdr) - MEMPROF_HEADER_FIXED);
    n += mp_lz4f_header(hdr + n);
    return write_all(hdr, n);
}

__attribute__((constructor)) static void mp_start(void)
{
    mp_hooks_init();
    char *fdv = env_get("MEMPROF_FD");
    if (!fdv)
        return; /* loaded, not asked to record */
    /* Only the program memprof started records: a wrapper in between (a
     * shell script, env, valgrind) passes the variables on untouched. */
    const char *want = env_get("MEMPROF_EXE");
    static char exe[4096];
    ssize_t ne = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (want && (ne <= 0 || (exe[ne] = '\0', strcmp(exe, want) != 0)))
        return;
    int fd = 0;
    for (const char *c = fdv; *c; c++) {
        if (*c < '0' || *c > '9' || fd > 100000) {
            mp_log("memprof: bad MEMPROF_FD, not recording", fdv);
            return;
        }
        fd = fd * 10 + (*c - '0');
    }
    mp_guard = MP_GUARD_REC;
    env_scrub();
    if (!LZ4_initStream(&lz4_stream, sizeof lz4_stream)) {
        mp_log("memprof: cannot set up LZ4, not recording", NULL);
        goto out;
    }
    /* Keep the capture on a high descriptor, closed on exec, out of the way. */
    W.fd = fcntl(fd, F_DUPFD_CLOEXEC, 512);
    if (W.fd < 0)
        W.fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (W.fd < 0) {
        mp_log("memprof: the capture file descriptor is not open, not recording", NULL);
        goto out;
    }
    close(fd);
    W.statm_fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    W.pid = getpid();
    W.main_thread = pthread_self();
    W.start_ns = W.block_ns = W.time_ns = now_ns(CLOCK_MONOTONIC);
    W.pystack = mp_py_init();
    mp_enc_init(&W.enc, bufs.a, sizeof bufs.a);
    if (pthread_key_create(&W.key, thread_gone) != 0 || pthread_atfork(fork_prepare, fork_parent, fork_child)) {
        mp_log("memprof: cannot set up thread hooks, not recording", NULL);
        goto out;
    }
    int err = write_header();
    if (err) {
        mp_log("memprof: cannot write the capture header, not recording", strerrordesc_np(err));
        goto out;
    }
    mp_py_emit_pseudo();
    atomic_store(&mp_active, 1);
out:
    mp_guard = 0;
}

__attribute__((destructor)) static void mp_stop(void) { mp_rec_finish(); }
