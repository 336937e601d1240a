/* recorder.c - the capture writer inside the profiled process.
 *
 * One writer lock orders every event: whoever holds it appends the record to
 * the one block buffer (allocations and frees through a staging ring that
 * the writer thread encodes, see "staging" below), so the file order is the
 * global order and the reader needs no merge. A full block is handed to the
 * writer thread, compressed (LZ4, caller-provided state) and written, so a
 * killed process loses the events staged, the blocks waiting and the block
 * in progress (a block is also written when it is a second old, so a busy
 * program loses at most about a second). Memory for tables comes from mmap,
 * never from malloc; a failure turns recording off, says so in one line on
 * stderr, and the program goes on. After fork the child stops recording: it
 * never writes to the parent's file.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <lz4.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
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

#include "wlock.h" /* lock(), unlock(): uses mp_self */

void mp_wlock(void) { lock(); }
void mp_wunlock(void) { unlock(); }

/* ---- writer state (all under the lock) ---- */

#define FLUSH_AFTER_NS 1000000000ull /* a block older than 1 s is written */
#define NAMES_PENDING 64             /* names given to threads not seen yet */

unsigned mp_opts;

/* What memprof run asked for (from the environment, which is scrubbed). */
static struct {
    uint64_t interval_ns;
    char out[4096];         /* --follow-fork: children write <out>.<pid> */
    char lib[4096];         /* this library, for children's LD_PRELOAD */
    int follow;
    pid_t parent;           /* the profiled process this one descends from, or 0 */
} CFG;

static struct {
    pid_t pid;              /* the process that owns the capture */
    int fd;
    int statm_fd;
    int finished;
    unsigned pystack;
    pthread_t main_thread;
    /* the encoder's lines apart from the producers' counters after them:
     * the writer thread writes one at each event it encodes while the
     * allocating thread writes the other at each event it stages (sharing
     * a line, by where the linker put W, cost leaky a third) */
    _Alignas(64) mp_enc_t enc;
    _Alignas(64) uint64_t start_ns, block_ns;
    uint64_t allocs, frees;
    uint32_t nthreads;
    mp_thread_t *free_threads, *live_threads;
    pthread_key_t key;
    int lazy;               /* a fork child: the capture is created at its first event */
    int raw_blocks;         /* the capture goes to a pipe, to memprof run --aggregate or --live on
                               this machine: blocks are not compressed (it would cost more CPU
                               than the pipe's copying saves) */
    off_t trailer_at;       /* exec: where the trailer went, to take it back if exec fails */
    struct {
        unsigned long ident;
        uint32_t name;
    } pending[NAMES_PENDING];
    unsigned npending;
    uint32_t gen;           /* captures begun in this process (mp_rec_begin), for thread states */
} W = {.fd = -1, .statm_fd = -1};

static atomic_ulong tracker_allocs;
/* Block buffers, used in turn. A full block is handed to the writer thread,
 * which compresses and writes it while the program goes on; blocks are
 * linked (each is the LZ4 dictionary of the next), so block k's buffer is
 * reused only once block k+1 is compressed: at most NBUF - 2 full blocks
 * wait for the writer. A gap keeps each buffer from following another in
 * memory (LZ4 would take two adjacent blocks for one stream). */
#define NBUF 6
static struct {
    struct {
        _Alignas(64) uint8_t data[MEMPROF_BLOCK_MAX];
        uint8_t gap[64];
    } raw[NBUF];
    uint32_t len[NBUF];
    _Alignas(64) uint8_t out[8 + LZ4_COMPRESSBOUND(MEMPROF_BLOCK_MAX)];
} bufs;
static LZ4_stream_t lz4_stream;
static atomic_uint blocks_full; /* handed over (under the writer lock) */
static atomic_uint blocks_done; /* compressed and written (by one thread at a time) */
static atomic_uint writing;     /* 1 while a thread compresses and writes blocks */
static int writer_on;           /* a writer thread runs in this process */
static MP_TLS int is_writer;
static MP_TLS int fork_holding; /* in fork with both locks held: a signal handler's exit() must not wait on them */

/* ---- staging: allocations and frees, encoded later ----
 * Encoding an event (address deltas, the rings of recent addresses, the
 * stack delta) cost as much as everything else the allocating thread did
 * for it. So the allocation and free records are staged: the thread that
 * holds the writer lock appends the event's fields (24 bytes) to a ring,
 * in lock order, and the writer thread encodes them, in the same order,
 * while the program goes on (its LZ4 work moved there the same way). The
 * encoder (W.enc, the block buffers' filling, the ring's tail) has a lock
 * of its own, taken after the writer lock: every other record is encoded
 * right away by the thread that makes it, under both locks, after the
 * events staged before it (enc_enter), so the file order is still the lock
 * order. A thread that finds the ring full encodes it itself; so does the
 * end of a capture, and a process with no writer thread. The writer thread
 * is woken each STAGE_WAKE events when it sleeps, and drains the ring at
 * least each sampling interval. */
#define STAGE_N (1u << 15)
#define STAGE_WAKE (STAGE_N / 4)
#define STAGE_NAP_NS 100000ull /* the writer thread's pause between drains while events come */
enum { STAGE_ALLOC = 0, STAGE_FREE = 1, STAGE_FREE_RANGE = 2 };
#define STAGE_META(thread, kind, allocator) ((uint32_t)(thread) << 6 | (uint32_t)(kind) << 4 | (allocator))
#define STAGE_PUBLISH 256 /* events written before the head is moved */
typedef struct {
    uint64_t addr, size;
    uint64_t stack_meta; /* stack, and STAGE_META() << 32 */
} stage_t;
static _Alignas(64) stage_t stage[STAGE_N];
/* Each of these in a line of its own, with what the same thread writes:
 * the head and the producers' places by producers, the tail and the
 * encoder lock by the encoder (mostly the writer thread). */
static struct {
    _Alignas(64) atomic_uint head; /* what the encoder may take: moved by producers */
    unsigned next;                 /* producers (under the writer lock): the next entry to write */
    unsigned room_at;              /* producers: the head the ring is known to have room up to */
} stage_pub;
static struct {
    _Alignas(64) atomic_uint tail; /* the encoder: under its mutex */
    atomic_int mutex;              /* 0 free, 1 held, 2 held with sleepers */
} stage_enc;

/* The writer thread's wake-up word: bumped when a capture starts, a block
 * is handed over, or STAGE_WAKE events came while it slept. */
static atomic_uint writer_kick;
static atomic_int writer_sleeping;

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

static void futex_wake_all(atomic_uint *w) { syscall(SYS_futex, w, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0); }

static void futex_wait_ns(atomic_uint *w, unsigned seen, uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};
    syscall(SYS_futex, w, FUTEX_WAIT_PRIVATE, seen, ns ? &ts : NULL, NULL, 0);
}

/* Compresses and writes block k (the oldest not written); `writing` held. */
static void write_block(unsigned k)
{
    unsigned b = k % NBUF;
    size_t n = mp_lz4f_block(W.raw_blocks ? NULL : &lz4_stream, bufs.raw[b].data, bufs.len[b], bufs.out);
    int err = write_all(bufs.out, n);
    if (err)
        mp_stop_recording("memprof: cannot write the capture, recording stopped", err);
    atomic_store_explicit(&blocks_done, k + 1, memory_order_release);
}

/* Writes blocks handed over and not written yet, at most `max`, unless
 * another thread is writing (0 then; 1 when this one wrote). */
static int write_pending(unsigned max)
{
    unsigned z = 0;
    if (!atomic_compare_exchange_strong_explicit(&writing, &z, 1, memory_order_acquire, memory_order_relaxed))
        return 0;
    for (unsigned d; max-- && (d = atomic_load_explicit(&blocks_done, memory_order_acquire)) !=
                              atomic_load_explicit(&blocks_full, memory_order_acquire);)
        write_block(d);
    atomic_store_explicit(&writing, 0, memory_order_release);
    futex_wake_all(&blocks_done);
    return 1;
}

/* Until every block handed over is written: by this thread when the writer
 * thread is not at it (no hand-over and wake-up at the end of a capture:
 * a Tracker per test stops thousands of times). */
static void write_all_pending(void)
{
    for (unsigned d; (d = atomic_load_explicit(&blocks_done, memory_order_acquire)) !=
                     atomic_load_explicit(&blocks_full, memory_order_acquire);)
        if (!write_pending(UINT32_MAX))
            futex_wait_ns(&blocks_done, d, 1000000);
}

/* Hands the block in progress over and starts the next one; `wake`: the
 * writer thread writes it (else the caller will). */
static MP_COLD MP_NOINLINE void hand_over_locked(int wake)
{
    if (W.enc.len == 0)
        return;
    unsigned k = atomic_load_explicit(&blocks_full, memory_order_relaxed);
    bufs.len[k % NBUF] = (uint32_t)W.enc.len;
    atomic_store_explicit(&blocks_full, k + 1, memory_order_release);
    if (!writer_on || is_writer) { /* no writer thread (or this is it): write it now */
        write_all_pending();
    } else if (wake) {
        atomic_fetch_add(&writer_kick, 1);
        futex_wake_all(&writer_kick);
        /* block k+1 reuses the buffer of block k+1-NBUF, free once block k+2-NBUF is written */
        for (unsigned d; (int)((d = atomic_load_explicit(&blocks_done, memory_order_acquire)) - (k + 3 - NBUF)) < 0;)
            futex_wait_ns(&blocks_done, d, 0);
    }
    W.enc.buf = bufs.raw[(k + 1) % NBUF].data;
    mp_enc_reset(&W.enc);
    W.block_ns = now_ns(CLOCK_MONOTONIC);
}

static void enc_enter(void);
static void enc_leave(void);

static void flush_locked(void)
{
    enc_enter();
    hand_over_locked(1);
    enc_leave();
}

/* Everything recorded is in the file once this returns. */
static void drain_locked(void)
{
    enc_enter();
    hand_over_locked(0);
    enc_leave();
    write_all_pending();
}

/* Calls `enc` again after a flush when the block is full (the encoder lock held). */
#define EMIT_RAW(call)                                \
    do {                                              \
        if (MP_UNLIKELY((call) == MEMPROF_ENOSPACE)) { \
            hand_over_locked(1);                      \
            (void)(call);                             \
        }                                             \
    } while (0)

/* ---- the encoder's lock, and the staged events ---- */

static void enc_lock(void)
{
    int c = 0;
    if (atomic_compare_exchange_strong_explicit(&stage_enc.mutex, &c, 1, memory_order_acquire, memory_order_relaxed))
        return;
    for (int spin = 0; spin < 200; spin++) {
        c = 0;
        if (atomic_load_explicit(&stage_enc.mutex, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_weak_explicit(&stage_enc.mutex, &c, 1, memory_order_acquire, memory_order_relaxed))
            return;
        __builtin_ia32_pause();
    }
    while (atomic_exchange_explicit(&stage_enc.mutex, 2, memory_order_acquire) != 0)
        futex_wait_ns((atomic_uint *)&stage_enc.mutex, 2, 1000000);
}

static int enc_trylock(void)
{
    int c = 0;
    return atomic_compare_exchange_strong_explicit(&stage_enc.mutex, &c, 1, memory_order_acquire, memory_order_relaxed);
}

static void enc_unlock(void)
{
    if (atomic_exchange_explicit(&stage_enc.mutex, 0, memory_order_release) == 2)
        syscall(SYS_futex, &stage_enc.mutex, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static inline int stage_pending(void)
{
    return atomic_load_explicit(&stage_pub.head, memory_order_acquire) !=
           atomic_load_explicit(&stage_enc.tail, memory_order_relaxed);
}

/* Encodes the staged events (the encoder lock held), the oldest first. */
static unsigned stage_drain(void)
{
    unsigned t = atomic_load_explicit(&stage_enc.tail, memory_order_relaxed), t0 = t;
    unsigned h = atomic_load_explicit(&stage_pub.head, memory_order_acquire);
    for (; t != h; t++) {
        const stage_t *e = &stage[t & (STAGE_N - 1)];
        uint32_t meta = (uint32_t)(e->stack_meta >> 32), thread = meta >> 6;
        unsigned a = meta & 15;
        switch ((meta >> 4) & 3) {
        case STAGE_ALLOC:
            EMIT_RAW(mp_enc_alloc(&W.enc, thread, a, e->addr, e->size, (uint32_t)e->stack_meta));
            break;
        case STAGE_FREE:
            EMIT_RAW(mp_enc_free(&W.enc, thread, a, e->addr));
            break;
        default:
            EMIT_RAW(mp_enc_free_range(&W.enc, thread, a, e->addr, e->size));
        }
        if ((t & 1023) == 1023) /* room for the producers as it goes */
            atomic_store_explicit(&stage_enc.tail, t + 1, memory_order_release);
    }
    atomic_store_explicit(&stage_enc.tail, t, memory_order_release);
    return t - t0;
}

/* What producers wrote, for the encoder to take (writer lock held). The
 * head moves every STAGE_PUBLISH events, not at each: the writer thread
 * reads it all the time, and a line written at every event would go back
 * and forth between the two cores. (Non-temporal stores of the entries
 * measured faster still, but a thread's are not ordered before its unlock:
 * the next holder of the lock could publish entries not yet visible, and a
 * fence at each event cost ten times what it saved.) */
static inline void stage_publish(void)
{
    atomic_store_explicit(&stage_pub.head, stage_pub.next, memory_order_release);
}

/* The encoder, with what was staged before encoded (writer lock held): for
 * a record encoded now, for the block's hand-over, for the end of a
 * capture. */
static void enc_enter(void)
{
    stage_publish();
    enc_lock();
    stage_drain();
}

static void enc_leave(void) { enc_unlock(); }

/* Every record but the staged ones: encoded now, after those staged. */
#define EMIT(call)           \
    do {                     \
        enc_enter();         \
        EMIT_RAW(call);      \
        enc_leave();         \
    } while (0)

/* The ring is full (writer lock held): this thread encodes it. */
static MP_COLD MP_NOINLINE void stage_full(void)
{
    enc_enter();
    enc_leave();
}

/* The writer thread, asleep, is woken every STAGE_WAKE events. */
static MP_COLD MP_NOINLINE void stage_poke(void)
{
    atomic_thread_fence(memory_order_seq_cst); /* the head's store, then the look at the sleeper */
    if (writer_on && atomic_load_explicit(&writer_sleeping, memory_order_relaxed)) {
        atomic_fetch_add(&writer_kick, 1);
        syscall(SYS_futex, &writer_kick, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    }
}

/* An event (writer lock held), in lock order. */
static MP_ALWAYS_INLINE void stage_put(uint32_t meta, uint64_t addr, uint64_t size, uint32_t stack)
{
    unsigned h = stage_pub.next;
    if (MP_UNLIKELY(h == stage_pub.room_at)) {
        stage_pub.room_at = atomic_load_explicit(&stage_enc.tail, memory_order_acquire) + STAGE_N;
        if (h == stage_pub.room_at) {
            stage_full();
            stage_pub.room_at = atomic_load_explicit(&stage_enc.tail, memory_order_acquire) + STAGE_N;
        }
    }
    stage_t *e = &stage[h & (STAGE_N - 1)];
    e->addr = addr;
    e->size = size;
    e->stack_meta = (uint64_t)meta << 32 | stack;
    stage_pub.next = h + 1;
    if (MP_UNLIKELY(((h + 1) & (STAGE_PUBLISH - 1)) == 0)) {
        stage_publish();
        if (((h + 1) & (STAGE_WAKE - 1)) == 0)
            stage_poke();
    }
}

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

void mp_emit_string(const void *s, size_t n) { EMIT(mp_enc_string(&W.enc, s, n)); }
void mp_emit_thread_name(uint32_t thread, uint32_t name) { EMIT(mp_enc_thread_name(&W.enc, thread, name)); }
void mp_emit_native_node(uint32_t id, uint32_t parent, uint32_t module, uint64_t offset)
{
    EMIT(mp_enc_node_native(&W.enc, id, parent, module, offset));
}
void mp_emit_module(uint32_t id, uint64_t bias, uint32_t path, const uint8_t *build_id, size_t build_len,
                    const uint64_t *segs, unsigned nseg)
{
    EMIT(mp_enc_module(&W.enc, id, bias, path, build_id, build_len, segs, nseg));
}
void mp_emit_module_unload(uint32_t id) { EMIT(mp_enc_module_unload(&W.enc, id)); }

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
    for (mp_thread_t **pp = &W.live_threads; *pp; pp = &(*pp)->next_free) {
        if (*pp == t) {
            *pp = t->next_free;
            break;
        }
    }
    t->next_free = W.free_threads;
    W.free_threads = t;
    unlock();
    mp_self = NULL;
    mp_py_thread_gone();
    mp_guard = g;
}

/* The calling thread's state, made (and given an index) on first use. */
static MP_COLD MP_NOINLINE mp_thread_t *thread_new_locked(void)
{
    mp_thread_t *t = mp_self; /* a state from an earlier capture of this process: given a new index */
    if (!t && (t = W.free_threads)) {
        W.free_threads = t->next_free;
    } else if (!t) {
        t = mmap(NULL, sizeof *t, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (t == MAP_FAILED) {
            mp_stop_recording("memprof: out of memory for thread state, recording stopped", 0);
            return NULL;
        }
        memset(t, 0, sizeof *t);
    }
    if (!mp_self) {
        t->next_free = W.live_threads;
        W.live_threads = t;
    }
    t->gen = W.gen;
    t->index = ++W.nthreads;
    t->ident = (unsigned long)pthread_self();
    t->is_main = pthread_equal(pthread_self(), W.main_thread);
    t->prev_depth = 0;
    memset(t->recent, 0, sizeof t->recent); /* a reused state: its stacks were another capture's */
    memset(t->edges, 0, sizeof t->edges);
    mp_unwind_forget(t);
    EMIT(mp_enc_thread_new(&W.enc, t->index, (uint64_t)syscall(SYS_gettid)));
    for (unsigned i = 0; i < W.npending; i++) {
        if (W.pending[i].ident == t->ident) { /* named before it recorded anything */
            mp_emit_thread_name(t->index, W.pending[i].name);
            W.pending[i] = W.pending[--W.npending];
            break;
        }
    }
    mp_self = t;
    pthread_setspecific(W.key, t);
    return t;
}

/* ---- the capture of a child (--follow-fork) ---- */

static int write_header(void);
static void start_sampler(void);

/* "<out>.<pid>" or "<out>.<pid>.<n>": no snprintf (this runs after fork). */
static void child_path(char *buf, size_t len, int n)
{
    char num[48], *q = num + sizeof num;
    *--q = '\0';
    if (n) {
        for (unsigned v = (unsigned)n; v; v /= 10)
            *--q = (char)('0' + v % 10);
        *--q = '.';
    }
    unsigned v = (unsigned)W.pid;
    do
        *--q = (char)('0' + v % 10);
    while (v /= 10);
    *--q = '.';
    size_t a = strlen(CFG.out); /* < sizeof CFG.out - 64: checked when set */
    (void)len;
    memcpy(buf, CFG.out, a);
    memcpy(buf + a, q, strlen(q) + 1);
}

/* Creates this process's own capture: never over an existing file. */
static MP_COLD MP_NOINLINE int open_child_locked(void)
{
    W.lazy = 0;
    char path[sizeof CFG.out + 64];
    int fd = -1, err = 0;
    for (int n = 0; n < 1000 && fd < 0; n++) {
        child_path(path, sizeof path, n);
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        err = errno;
        if (fd < 0 && err != EEXIST)
            break;
    }
    if (fd < 0) {
        mp_log("memprof: cannot create a capture for this child process, not recording it", path);
        mp_stop_recording("memprof: child not recorded", err);
        return -1;
    }
    W.fd = fcntl(fd, F_DUPFD_CLOEXEC, 512);
    if (W.fd < 0)
        W.fd = fd;
    else
        close(fd);
    W.raw_blocks = 0;
    W.start_ns = W.block_ns = now_ns(CLOCK_MONOTONIC);
    int e = write_header();
    if (e) {
        mp_stop_recording("memprof: cannot write the child's capture header, not recording it", e);
        return -1;
    }
    int g = mp_guard;
    mp_guard = MP_GUARD_PYAPI; /* pthread_create may allocate: not the program's */
    start_sampler();
    mp_guard = g;
    return 0;
}

/* Recording, and the capture exists (a fork child makes its own now). */
static inline int live_locked(void)
{
    if (MP_UNLIKELY(!atomic_load_explicit(&mp_active, memory_order_relaxed)))
        return 0;
    return MP_LIKELY(!W.lazy) || open_child_locked() == 0;
}

int mp_capture_ready_locked(void) { return live_locked(); }

/* ---- events ---- */

static int native_on;

static MP_COLD MP_NOINLINE mp_thread_t *thread_first_event(void)
{
    lock();
    mp_thread_t *t = live_locked() ? thread_new_locked() : NULL;
    unlock();
    return t;
}

void mp_rec_alloc(unsigned allocator, const void *p, size_t size)
{
    mp_guard = MP_GUARD_REC;
    mp_thread_t *t = mp_self;
    if (MP_UNLIKELY(!t || t->gen != W.gen) && !(t = thread_first_event()))
        goto done;
    /* stacks are read outside the lock: a thread only reads its own */
    int gil = allocator == MEMPROF_A_PYMEM_MEM || allocator == MEMPROF_A_PYMEM_OBJ;
    uint32_t depth;
    const mp_frame_t *frames;
    if (native_on) {
        if (MP_UNLIKELY(atomic_load_explicit(&mp_modules_dirty, memory_order_relaxed)))
            mp_modules_refresh();
        if ((depth = mp_py_native_cut(t, gil)) == UINT32_MAX) {
            depth = mp_py_walk(t, 1, gil);
            depth = mp_native_merge(t, mp_native_walk(t), depth);
        }
        frames = t->mix;
    } else {
        depth = mp_py_walk(t, 0, gil);
        frames = t->cur; /* the walk may have moved it */
    }
    lock();
    if (MP_LIKELY(live_locked())) {
        uint32_t stack = mp_py_intern(t, frames, depth);
        stage_put(STAGE_META(t->index, STAGE_ALLOC, allocator), (uint64_t)(uintptr_t)p, size, stack);
        W.allocs++;
    }
    unlock();
done:
    mp_guard = 0;
}

/* The PyMem wrappers' allocation (pymem.c) in the MEM and OBJ domains, the
 * GIL held: the stack is usually known without a walk (mp_py_leaf). */
void mp_rec_pymem_alloc(unsigned allocator, const void *p, size_t size)
{
    mp_thread_t *t = mp_self;
    if (MP_UNLIKELY(!t || t->gen != W.gen || native_on)) {
        mp_rec_alloc(allocator, p, size);
        return;
    }
    mp_guard = MP_GUARD_REC;
    lock();
    if (MP_LIKELY(live_locked())) {
        uint32_t node = mp_py_leaf(t);
        if (MP_UNLIKELY(!node)) {
            unlock();
            mp_guard = 0;
            mp_rec_alloc(allocator, p, size);
            return;
        }
        stage_put(STAGE_META(t->index, STAGE_ALLOC, allocator), (uint64_t)(uintptr_t)p, size, node);
        W.allocs++;
    }
    unlock();
    mp_guard = 0;
}

/* The free record, under the lock (the guard set). */
static MP_ALWAYS_INLINE void emit_free(uint32_t thread, unsigned deallocator, const void *p, size_t len, int range)
{
    lock();
    if (MP_LIKELY(live_locked())) {
        stage_put(STAGE_META(thread, range ? STAGE_FREE_RANGE : STAGE_FREE, deallocator), (uint64_t)(uintptr_t)p, len, 0);
        W.frees++;
    }
    unlock();
}

/* A plain free names no thread (replay does not need one); the free half
 * of a realloc or mremap does, so that a failure can be undone. */
static void rec_free(unsigned deallocator, const void *p, size_t len, int range)
{
    mp_guard = MP_GUARD_REC;
    uint32_t thread = 0;
    if (deallocator == MEMPROF_D_REALLOC || deallocator == MEMPROF_D_MREMAP) {
        mp_thread_t *t = mp_self;
        if ((!t || t->gen != W.gen) && !(t = thread_first_event()))
            goto done;
        thread = t->index;
    }
    emit_free(thread, deallocator, p, len, range);
done:
    mp_guard = 0;
}

void mp_rec_free(unsigned deallocator, const void *p) { rec_free(deallocator, p, 0, 0); }

/* pymem.c's free: a plain one (its deallocator is never REALLOC), which
 * inlines into the wrapper */
void mp_rec_pymem_free(unsigned deallocator, const void *p)
{
    mp_guard = MP_GUARD_REC;
    emit_free(0, deallocator, p, 0, 0);
    mp_guard = 0;
}
void mp_rec_free_range(unsigned deallocator, const void *p, size_t len) { rec_free(deallocator, p, len, 1); }

void mp_rec_restore(const void *p)
{
    mp_guard = MP_GUARD_REC;
    mp_thread_t *t = mp_self;
    lock();
    if (t && t->gen == W.gen && live_locked())
        EMIT(mp_enc_restore(&W.enc, t->index, (uint64_t)(uintptr_t)p));
    unlock();
    mp_guard = 0;
}

void mp_rec_mark(unsigned kind)
{
    int g = mp_guard;
    mp_guard = MP_GUARD_REC;
    lock();
    if (live_locked()) {
        EMIT(mp_enc_mark(&W.enc, kind, (now_ns(CLOCK_MONOTONIC) - W.start_ns) / 1000));
        flush_locked(); /* the mark matters: on its way to disk now */
    }
    unlock();
    mp_guard = g;
}

void mp_rec_thread_name(unsigned long ident, const char *name, size_t n)
{
    int g = mp_guard;
    mp_guard = MP_GUARD_REC;
    lock();
    if (live_locked()) {
        uint32_t sid = mp_string_intern(name, n);
        mp_thread_t *t = W.live_threads;
        while (t && t->ident != ident)
            t = t->next_free;
        if (!t && ident == (unsigned long)pthread_self())
            t = thread_new_locked();
        if (t) {
            mp_emit_thread_name(t->index, sid);
        } else if (sid) { /* a thread that has not recorded anything yet */
            unsigned i = 0;
            while (i < W.npending && W.pending[i].ident != ident)
                i++;
            if (i == NAMES_PENDING)
                i = NAMES_PENDING - 1; /* full: the newest name wins the last slot */
            else if (i == W.npending)
                W.npending++;
            W.pending[i].ident = ident;
            W.pending[i].name = sid;
        }
    }
    unlock();
    mp_guard = g;
}

/* Called from a hook when the recorder allocated on its own: a bug, counted
 * so that tests can prove it never happens. */
void mp_count_tracker_alloc(void) { atomic_fetch_add_explicit(&tracker_allocs, 1, memory_order_relaxed); }

/* The LZ4 end mark and the trailer, after the last block. */
static void write_trailer_locked(void)
{
    uint8_t buf[256];
    size_t n = mp_lz4f_end(buf), t0 = n, k = t0 + MP_TRAILER_FIXED;
    k += mp_tlv_varint(buf + k, MEMPROF_T_END_REALTIME, now_ns(CLOCK_REALTIME));
    k += mp_tlv_varint(buf + k, MEMPROF_T_END_MONOTONIC, now_ns(CLOCK_MONOTONIC));
    k += mp_tlv_varint(buf + k, MEMPROF_T_EVENTS, W.allocs + W.frees);
    k += mp_tlv_varint(buf + k, MEMPROF_T_ALLOCS, W.allocs);
    k += mp_tlv_varint(buf + k, MEMPROF_T_FREES, W.frees);
    k += mp_tlv_varint(buf + k, MEMPROF_T_BLOCKS, atomic_load(&blocks_done));
    k += mp_tlv_varint(buf + k, MEMPROF_T_TRACKER_ALLOCS, atomic_load(&tracker_allocs));
    n = t0 + mp_trailer_seal(buf + t0, k - t0 - MP_TRAILER_FIXED);
    (void)write_all(buf, n);
}

void mp_rec_finish(void)
{
    if (W.pid == 0 || getpid() != W.pid)
        return;
    /* Called from a signal handler that interrupted this thread inside the
     * recorder, or inside fork (which hold the locks): leave the capture
     * truncated rather than wait on ourselves. */
    if (mp_guard == MP_GUARD_REC || fork_holding)
        return;
    int g = mp_guard;
    mp_guard = MP_GUARD_REC;
    lock();
    if (!W.finished && W.fd >= 0) {
        W.finished = 1;
        if (atomic_exchange(&mp_active, 0)) {
            drain_locked();
            write_trailer_locked();
        } else {
            /* stopped by an error: the events staged are dropped, and the blocks
             * waiting written, before the descriptor goes (a new capture may
             * get its number) */
            enc_lock();
            atomic_store(&stage_pub.head, stage_pub.next);
            atomic_store(&stage_enc.tail, stage_pub.next);
            stage_pub.room_at = stage_pub.next;
            enc_unlock();
            write_all_pending();
        }
        close(W.fd);
        W.fd = -1;
    }
    unlock();
    mp_guard = g;
}

/* exec replaces the process image without running destructors: the
 * capture is finished first. If exec fails, the trailer is taken back and
 * recording goes on in the same file (the LZ4 stream state is intact). */
static int exec_pending;

void mp_rec_exec_begin(void)
{
    if (W.pid == 0 || getpid() != W.pid || mp_guard == MP_GUARD_REC || fork_holding)
        return; /* not ours (a vfork child shares our memory), or inside the recorder or fork */
    int g = mp_guard;
    mp_guard = MP_GUARD_REC;
    lock();
    if (!W.finished && W.fd >= 0 && atomic_load(&mp_active)) {
        drain_locked();
        W.trailer_at = lseek(W.fd, 0, SEEK_CUR);
        write_trailer_locked();
        W.finished = 1;
        atomic_store(&mp_active, 0);
        exec_pending = 1;
    }
    unlock();
    mp_guard = g;
}

void mp_rec_exec_failed(void)
{
    if (!exec_pending || W.pid == 0 || getpid() != W.pid)
        return;
    int g = mp_guard;
    mp_guard = MP_GUARD_REC;
    lock();
    exec_pending = 0;
    if (W.trailer_at >= 0 && ftruncate(W.fd, W.trailer_at) == 0 && lseek(W.fd, W.trailer_at, SEEK_SET) >= 0) {
        W.finished = 0;
        atomic_store(&mp_active, 1);
        atomic_fetch_add(&writer_kick, 1); /* the writer thread, idle meanwhile, drains and samples again */
        futex_wake_all(&writer_kick);
    }
    unlock();
    mp_guard = g;
}

/* ---- children's environment (--follow-fork) ---- */

static char *put_str(char **p, char *end, const char *a, const char *b)
{
    char *start = *p;
    size_t na = strlen(a), nb = b ? strlen(b) : 0;
    if (!start || (size_t)(end - start) < na + nb + 1) {
        *p = NULL;
        return NULL;
    }
    memcpy(start, a, na);
    memcpy(start + na, b, nb);
    start[na + nb] = '\0';
    *p = start + na + nb + 1;
    return start;
}

static const char *utoa(unsigned long v, char *buf)
{
    char *q = buf + 23;
    *q = '\0';
    do
        *--q = (char)('0' + v % 10);
    while (v /= 10);
    return q;
}

int mp_following(void) { return CFG.follow; }

char *const *mp_child_env(char *const *envp, char **out, size_t nout, char *buf, size_t len)
{
    if (!CFG.follow)
        return envp;
    char *p = buf, *end = buf + len, num[24];
    const char *old_preload = NULL;
    size_t k = 0;
    for (char *const *e = envp; e && *e; e++) {
        if (!strncmp(*e, "MEMPROF_", 8))
            continue;
        if (!strncmp(*e, "LD_PRELOAD=", 11)) {
            old_preload = *e + 11;
            continue;
        }
        if (k + 7 > nout)
            return envp;
        out[k++] = *e;
    }
    char *pre = put_str(&p, end, "LD_PRELOAD=", CFG.lib);
    if (pre && old_preload && *old_preload) { /* ours first, then the program's own */
        p--;
        if (!put_str(&p, end, ":", old_preload))
            return envp;
    }
    out[k++] = pre;
    out[k++] = put_str(&p, end, "MEMPROF_OUT=", CFG.out);
    out[k++] = put_str(&p, end, "MEMPROF_OPTS=", utoa(mp_opts, num));
    out[k++] = put_str(&p, end, "MEMPROF_INTERVAL_US=", utoa((unsigned long)(CFG.interval_ns / 1000), num));
    /* the profiled process the new program descends from: in a vfork child
     * (our memory, another pid) the parent; in a fork child that recorded
     * nothing (exec right away) its parent; else this process */
    pid_t me = getpid(), from = W.pid && W.pid != me ? W.pid : W.lazy && CFG.parent ? CFG.parent : me;
    out[k++] = put_str(&p, end, "MEMPROF_PARENT=", utoa((unsigned long)from, num));
    out[k] = NULL;
    if (!p)
        return envp;
    return out;
}

/* ---- the writer thread: blocks to disk, memory over time ---- */

static void *writer(void *arg)
{
    (void)arg;
    mp_guard = MP_GUARD_PYAPI; /* nothing this thread does is the program's */
    is_writer = 1;
    prctl(PR_SET_TIMERSLACK, 10000ul); /* its naps (STAGE_NAP_NS) are short */
    prctl(PR_SET_NAME, "memprof-writer"); /* for top -H and the like (not recorded: the guard) */
    /* No wake-up preemption: on a machine whose other CPU is busy, this
     * thread waking every 100 us preempted the program on its CPU (leaky
     * traced, another process using half a CPU: 3.1x, 2.6x with this). An
     * idle CPU still runs it at once. */
    sched_setscheduler(0, SCHED_BATCH, &(struct sched_param){0});
    pid_t me = getpid();
    uint64_t next = now_ns(CLOCK_MONOTONIC) + CFG.interval_ns;
    for (;;) {
        unsigned kick = atomic_load(&writer_kick); /* before anything it is woken for is looked at */
        unsigned drained = 0;
        if (stage_pending() && enc_trylock()) { /* (a thread holding it encodes them anyway) */
            drained = stage_drain();
            enc_unlock();
        }
        unsigned full = atomic_load_explicit(&blocks_full, memory_order_acquire);
        unsigned done = atomic_load(&blocks_done);
        if (done != full) {
            if (!write_pending(1)) /* a capture's end is writing its last blocks */
                futex_wait_ns(&blocks_done, done, 1000000);
            continue;
        }
        if (!atomic_load(&mp_active)) { /* no capture (a Tracker stopped, a detach): sleep until one starts */
            if (!atomic_load(&mp_active) && atomic_load(&blocks_done) == atomic_load(&blocks_full))
                futex_wait_ns(&writer_kick, kick, 1000000000ull);
            next = now_ns(CLOCK_MONOTONIC) + CFG.interval_ns;
            continue;
        }
        uint64_t t = now_ns(CLOCK_MONOTONIC);
        if (t < next) {
            if (drained >= STAGE_N / 16)
                continue; /* they come fast: at it again */
            if (drained || stage_pending()) {
                /* events come, slowly: back in STAGE_NAP_NS, a fraction of
                 * the time the ring takes to fill, without being woken
                 * (waking a thread costs the waker an inter-processor
                 * interrupt) */
                futex_wait_ns(&writer_kick, kick, STAGE_NAP_NS < next - t ? STAGE_NAP_NS : next - t);
                continue;
            }
            /* none: asleep until a hand-over, STAGE_WAKE events or the next
             * sample (Dekker with stage_poke: one of the two sees the other) */
            atomic_store(&writer_sleeping, 1);
            if (!stage_pending())
                futex_wait_ns(&writer_kick, kick, next - t);
            atomic_store(&writer_sleeping, 0);
            continue;
        }
        /* never wait for the lock: its holder may be waiting for this thread
         * to free a block buffer */
        int c = 0;
        if (!atomic_compare_exchange_strong_explicit(&wlock, &c, 1, memory_order_acquire, memory_order_relaxed)) {
            futex_wait_ns(&writer_kick, kick, 1000000);
            continue;
        }
        /* the bias is put aside for the sample (the owner may be inside, waiting
         * for this thread: then the sample waits) and given back after it */
        uintptr_t b = atomic_load_explicit(&bias_owner, memory_order_relaxed);
        if (b && bias_revoke(b, 1, 0)) {
            unlock();
            futex_wait_ns(&writer_kick, kick, 1000000);
            continue;
        }
        next = t + CFG.interval_ns;
        if (W.pid != me) { /* cannot happen: threads do not survive fork */
            unlock();
            return NULL;
        }
        if (atomic_load_explicit(&mp_active, memory_order_relaxed) && !W.lazy && !W.finished) {
            EMIT(mp_enc_time(&W.enc, (t - W.start_ns) / 1000, rss_kib()));
            if (t - W.block_ns >= FLUSH_AFTER_NS) /* a quiet program's records reach the disk too */
                flush_locked();
        }
        if (b) /* the owner sees the sample by its acquire after this release */
            atomic_store_explicit(&bias_owner, b, memory_order_release);
        unlock();
    }
    return NULL;
}

static void start_sampler(void)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* signals stay the program's */
    pthread_attr_t attr;
    pthread_t th;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    if (pthread_create(&th, &attr, writer, NULL) == 0)
        writer_on = 1;
    else
        mp_log("memprof: cannot start the writer thread; writing in the program's threads, "
               "no memory-over-time data", NULL);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* ---- a new capture in this process (a fork child's, a Tracker's) ---- */

/* Empty tables (strings, code ids, stacks, objects), a new LZ4 stream and
 * block count, no thread named yet: the new capture is read on its own.
 * Thread states made for an earlier capture are indexed again (gen). */
static void new_tables(void)
{
    mp_stacks_reset();
    mp_py_reset();
    mp_native_reset();
    enc_lock(); /* the writer thread is not amid a drain; events staged and not written (a capture
                   stopped by an error) are not this one's */
    LZ4_initStream(&lz4_stream, sizeof lz4_stream);
    atomic_store(&blocks_full, 0);
    atomic_store(&blocks_done, 0);
    atomic_store(&stage_pub.head, stage_pub.next);
    atomic_store(&stage_enc.tail, stage_pub.next);
    stage_pub.room_at = stage_pub.next;
    mp_enc_init(&W.enc, bufs.raw[0].data, sizeof bufs.raw[0].data);
    enc_unlock();
    W.allocs = W.frees = 0;
    W.nthreads = 0;
    W.npending = 0;
    W.gen++;
}

/* ---- fork ---- */

static MP_TLS int fork_saved_guard;

static void fork_prepare(void)
{
    fork_saved_guard = mp_guard;
    mp_guard = MP_GUARD_PYAPI;
    lock();
    enc_lock(); /* the writer thread is not amid an encoding */
    fork_holding = 1;
}

static void fork_parent(void)
{
    fork_holding = 0;
    enc_unlock();
    unlock();
    mp_guard = fork_saved_guard;
}

static void fork_child(void)
{
    /* The child never writes into the parent's file. */
    int was = atomic_exchange(&mp_active, 0);
    atomic_store(&wlock, 0);
    /* the events staged are the parent's, written by the parent */
    fork_holding = 0;
    atomic_store(&stage_enc.mutex, 0);
    atomic_store(&stage_pub.head, stage_pub.next);
    atomic_store(&stage_enc.tail, stage_pub.next);
    stage_pub.room_at = stage_pub.next;
    atomic_store(&writer_sleeping, 0);
    atomic_store(&waiters, 0);
    atomic_store(&bias_owner, 0); /* its owner may not be this thread; the next entry settles it */
    if (mp_self)
        atomic_store(&mp_self->bias_busy, 0);
    mp_biased = 0;
    bias_init();            /* (membarrier registration is the parent's process's) */
    atomic_store(&writing, 0); /* the parent's writer thread may have been writing: not here */
    if (W.fd >= 0)
        close(W.fd);
    W.fd = -1;
    pid_t parent = W.pid;
    W.pid = 0;
    mp_self = NULL;
    writer_on = 0; /* the parent's did not come along (a Tracker may start one here) */
    if (was && CFG.follow && !W.finished) {
        /* its own capture, with tables of its own, made at its first event */
        CFG.parent = parent;
        new_tables();
        W.live_threads = NULL;
        W.pid = getpid();
        W.main_thread = pthread_self();
        W.lazy = 1;
        mp_py_emit_pseudo();
        atomic_store(&mp_active, 1);
    }
    mp_guard = fork_saved_guard;
}

/* ---- start ---- */

/* Once per process: the thread-exit key and the fork handlers. 0 or -1. */
static int threads_once(void)
{
    static int done;
    if (!done && (pthread_key_create(&W.key, thread_gone) != 0 || pthread_atfork(fork_prepare, fork_parent, fork_child)))
        return -1;
    if (!done)
        bias_init();
    done = 1;
    return 0;
}

/* Native stacks set up once per process; 1 when they can be had. */
static int native_ready(void)
{
    static int ready; /* 1 set up, -1 cannot be */
    if (!ready)
        ready = mp_native_init() == 0 ? 1 : -1;
    return ready > 0;
}


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

static const char *const our_vars[] = {"MEMPROF_FD=", "MEMPROF_EXE=", "MEMPROF_OPTS=", "MEMPROF_INTERVAL_US=",
                                       "MEMPROF_OUT=", "MEMPROF_PARENT="};

/* Takes memprof's variables out of the environment, in place (no
 * allocation), so the program and its children see what they would
 * without memprof: the MEMPROF_* that memprof run set go, and the first
 * entry of LD_PRELOAD (libmemprof.so, put there by memprof run) too. */
static void env_scrub(void)
{
    extern char **environ;
    char **dst = environ;
    for (char **e = environ; e && *e; e++) {
        int ours = 0;
        for (size_t i = 0; i < sizeof our_vars / sizeof *our_vars; i++)
            ours |= strncmp(*e, our_vars[i], strlen(our_vars[i])) == 0;
        if (ours)
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

static unsigned header_options(void)
{
    unsigned o = 0;
    if (W.pystack == MEMPROF_PYSTACK_WALKER)
        o |= MEMPROF_OPT_PYTHON_STACKS;
    if (native_on)
        o |= MEMPROF_OPT_NATIVE;
    return o | (mp_opts & (MEMPROF_OPT_PYMEM | MEMPROF_OPT_FOLLOW_FORK | MEMPROF_OPT_MID_RUN | MEMPROF_OPT_ATTACHED));
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
    p += mp_tlv_varint(p, MEMPROF_H_OPTIONS, header_options());
    p += mp_tlv_bytes(p, MEMPROF_H_EXECUTABLE, exe, ne > 0 ? (size_t)ne : 0);
    p += mp_tlv_varint(p, MEMPROF_H_PAGE_SIZE, (uint64_t)sysconf(_SC_PAGESIZE));
    p += mp_tlv_bytes(p, MEMPROF_H_TOOL_VERSION, MEMPROF_VERSION_STRING, strlen(MEMPROF_VERSION_STRING));
    p += mp_tlv_varint(p, MEMPROF_H_PYSTACK, W.pystack);
    p += mp_tlv_varint(p, MEMPROF_H_INTERVAL_US, CFG.interval_ns / 1000);
    if (CFG.parent)
        p += mp_tlv_varint(p, MEMPROF_H_PARENT_PID, (uint64_t)CFG.parent);
    size_t n = mp_header_seal(hdr, (size_t)(p - hdr) - MEMPROF_HEADER_FIXED);
    n += mp_lz4f_header(hdr + n);
    return write_all(hdr, n);
}

static unsigned long parse_ulong(const char *s, unsigned long dflt)
{
    if (!s || !*s)
        return dflt;
    unsigned long v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > 1000000000ul)
            return dflt;
        v = v * 10 + (unsigned long)(*s - '0');
    }
    return v;
}

__attribute__((constructor)) static void mp_start(void)
{
    mp_hooks_init();
    char *fdv = env_get("MEMPROF_FD"), *outv = env_get("MEMPROF_OUT");
    if (!fdv && !outv)
        return; /* loaded, not asked to record */
    /* Only the program memprof started records: a wrapper in between (a
     * shell script, env, valgrind) passes the variables on untouched. */
    const char *want = fdv ? env_get("MEMPROF_EXE") : NULL;
    static char exe[4096];
    ssize_t ne = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (want && (ne <= 0 || (exe[ne] = '\0', strcmp(exe, want) != 0)))
        return;
    mp_guard = MP_GUARD_REC;
    mp_opts = (unsigned)parse_ulong(env_get("MEMPROF_OPTS"), 0);
    unsigned long iv = parse_ulong(env_get("MEMPROF_INTERVAL_US"), 10000);
    CFG.interval_ns = (iv ? iv : 10000) * 1000ull;
    CFG.parent = (pid_t)parse_ulong(env_get("MEMPROF_PARENT"), 0);
    if (outv && strlen(outv) < sizeof CFG.out - 64) {
        strcpy(CFG.out, outv);
        Dl_info di;
        if (dladdr((void *)mp_start, &di) && di.dli_fname && strlen(di.dli_fname) < sizeof CFG.lib)
            strcpy(CFG.lib, di.dli_fname);
        CFG.follow = (mp_opts & MEMPROF_OPT_FOLLOW_FORK) && CFG.lib[0];
    }
    int fd = -1;
    if (fdv) {
        fd = (int)parse_ulong(fdv, ~0ul);
        if (fd < 0 || fd > 100000) {
            mp_log("memprof: bad MEMPROF_FD, not recording", fdv);
            goto out;
        }
    }
    env_scrub();
    W.pystack = mp_py_init();
    if (!fdv && W.pystack == MEMPROF_PYSTACK_NONE)
        goto out; /* a child that is not Python: it only passes the profiler on */
    if (!LZ4_initStream(&lz4_stream, sizeof lz4_stream)) {
        mp_log("memprof: cannot set up LZ4, not recording", NULL);
        goto out;
    }
    W.statm_fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    W.pid = getpid();
    W.main_thread = pthread_self();
    W.start_ns = W.block_ns = now_ns(CLOCK_MONOTONIC);
    mp_enc_init(&W.enc, bufs.raw[0].data, sizeof bufs.raw[0].data);
    if (threads_once()) {
        mp_log("memprof: cannot set up thread hooks, not recording", NULL);
        goto out;
    }
    native_on = (mp_opts & MEMPROF_OPT_NATIVE) && native_ready();
    if ((mp_opts & MEMPROF_OPT_PYMEM) && mp_pymem_install() != 0)
        mp_log("memprof: no PyMem_SetAllocator in this process; Python allocators not traced", NULL);
    if (fdv) {
        /* Keep the capture on a high descriptor, closed on exec, out of the way. */
        W.fd = fcntl(fd, F_DUPFD_CLOEXEC, 512);
        if (W.fd < 0)
            W.fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (W.fd < 0) {
            mp_log("memprof: the capture file descriptor is not open, not recording", NULL);
            goto out;
        }
        close(fd);
        struct stat st;
        W.raw_blocks = fstat(W.fd, &st) == 0 && S_ISFIFO(st.st_mode);
        int err = write_header();
        if (err) {
            mp_log("memprof: cannot write the capture header, not recording", strerrordesc_np(err));
            goto out;
        }
        mp_py_emit_pseudo();
        atomic_store(&mp_active, 1);
        int g = mp_guard;
        mp_guard = MP_GUARD_PYAPI;
        start_sampler();
        mp_guard = g;
    } else {
        /* a Python program a profiled one started with exec */
        mp_py_emit_pseudo();
        atomic_store(&mp_active, 1);
        lock();
        if (open_child_locked() != 0)
            atomic_store(&mp_active, 0);
        unlock();
    }
out:
    mp_guard = 0;
}

/* ---- a capture of part of the run (control.c) ---- */

int mp_rec_begin(int fd, const char *path, unsigned opts, uint64_t interval_ns)
{
    int g = mp_guard;
    mp_guard = MP_GUARD_REC;
    int err = 0;
    lock();
    if (atomic_load(&mp_active) || (W.fd >= 0 && !W.finished && W.pid == getpid())) {
        err = EBUSY;
        goto out;
    }
    if (threads_once()) {
        err = EAGAIN;
        goto out;
    }
    if (W.statm_fd < 0)
        W.statm_fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (!W.pystack) /* preloaded, the constructor looked already */
        W.pystack = mp_py_init();
    W.fd = fcntl(fd, F_DUPFD_CLOEXEC, 512);
    if (W.fd < 0)
        W.fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (W.fd < 0) {
        err = errno;
        goto out;
    }
    struct stat st;
    W.raw_blocks = fstat(W.fd, &st) == 0 && S_ISFIFO(st.st_mode);
    mp_opts = opts;
    CFG.interval_ns = interval_ns ? interval_ns : 10000000ull;
    CFG.parent = 0;
    CFG.out[0] = '\0';
    if (path && strlen(path) < sizeof CFG.out - 64)
        strcpy(CFG.out, path);
    Dl_info di;
    if (dladdr((void *)mp_rec_begin, &di) && di.dli_fname && strlen(di.dli_fname) < sizeof CFG.lib)
        strcpy(CFG.lib, di.dli_fname);
    CFG.follow = (opts & MEMPROF_OPT_FOLLOW_FORK) && CFG.lib[0] && CFG.out[0];
    native_on = (opts & MEMPROF_OPT_NATIVE) && native_ready();
    new_tables();
    W.lazy = 0;
    W.finished = 0;
    W.trailer_at = -1;
    W.pid = getpid();
    W.main_thread = pthread_self();
    W.start_ns = W.block_ns = now_ns(CLOCK_MONOTONIC);
    atomic_store(&tracker_allocs, 0);
    if ((err = write_header()) != 0) {
        close(W.fd);
        W.fd = -1;
        W.finished = 1;
        goto out;
    }
    mp_py_emit_pseudo();
    atomic_store(&mp_active, 1);
    atomic_fetch_add(&writer_kick, 1); /* the writer thread, idle since the last capture, samples again */
    futex_wake_all(&writer_kick);
out:
    unlock();
    if (!err && !writer_on) {
        mp_guard = MP_GUARD_PYAPI;
        start_sampler();
    }
    mp_guard = g;
    return err;
}

void mp_rec_end(void)
{
    mp_rec_mark(MEMPROF_M_SCRIPT_END);
    mp_rec_finish();
}

__attribute__((destructor)) static void mp_stop(void) { mp_rec_finish(); }
