/* wlock.h - the writer lock of recorder.c, and its bias: every record is
 * written under it (docs/design.md, "One writer lock"). Included by
 * recorder.c alone, after its mp_self, so that lock() and unlock() inline
 * into the allocation hooks' path. */
#ifndef MP_WLOCK_H
#define MP_WLOCK_H

#include <linux/futex.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "recorder.h"

/* ---- the writer lock ----
 * A futex mutex (0 free, 1 held) whose unlock is a plain store: the lock
 * is taken twice an event, and an atomic read-modify-write to release it
 * cost as much as the one that takes it. A thread that has spun in vain
 * counts itself in `waiters` and sleeps while the word is 1; an unlock
 * that sees a waiter wakes one. The store and the load of `waiters` may
 * pass each other (x86 orders a store before a later load only with a
 * fence), so a wake could in theory be missed: sleeps are bounded (1 ms)
 * and the sleeper then looks again. In practice the kernel's own check of
 * the word, long after the store is visible, refuses the sleep. */

static atomic_int wlock;
static atomic_int waiters;

static MP_COLD MP_NOINLINE void lock_slow(void)
{
    for (int spin = 0; spin < 100; spin++) {
        int c = 0;
        if (atomic_load_explicit(&wlock, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_weak_explicit(&wlock, &c, 1, memory_order_acquire, memory_order_relaxed))
            return;
        __builtin_ia32_pause();
    }
    atomic_fetch_add_explicit(&waiters, 1, memory_order_seq_cst);
    for (;;) {
        int c = 0;
        if (atomic_compare_exchange_strong_explicit(&wlock, &c, 1, memory_order_acquire, memory_order_relaxed))
            break;
        static const struct timespec bound = {0, 1000000};
        syscall(SYS_futex, &wlock, FUTEX_WAIT_PRIVATE, 1, &bound, NULL, 0);
    }
    atomic_fetch_sub_explicit(&waiters, 1, memory_order_relaxed);
}

/* ---- a bias on top of it ----
 * The lock's compare-and-swap drains the store buffer: taken twice an event
 * it was a fifth of the time of a --trace-python-allocators run. Most of
 * the time one thread takes the lock again and again (the GIL holder), so
 * the lock is biased to that thread: the owner enters with a plain store
 * to its own `bias_busy` flag (in its mp_thread_t, whose address names the
 * owner) and a load of `bias_owner` (no atomic read-modify-write, no
 * fence), and leaves with a plain store. Another thread takes the futex
 * lock, then revokes the bias: it marks `bias_owner` REVOKING, forces a
 * memory barrier on every thread of the process (membarrier), and waits
 * for the owner's flag to fall. The owner stores its flag before it loads
 * `bias_owner`: either the revoker sees the store (and waits) or the owner
 * sees REVOKING (and takes the futex lock instead), the asymmetric form of
 * Dekker's algorithm. A thread only ever writes its own flag, so one that
 * lost the bias while it was looking cannot clear the new owner's. The
 * futex lock's holder takes the bias for its next entries, unless biases
 * have been revoked soon after they were given (threads taking turns):
 * then it waits longer each time. Without membarrier (old kernels,
 * seccomp) there is no bias. */

#define BIAS_REVOKING ((uintptr_t)1)
static atomic_uintptr_t bias_owner;  /* &owner->bias_busy, REVOKING, or 0 */
static int bias_ok;                  /* membarrier works here */
static uint64_t bias_uses;           /* entries of the present bias (its owner's count) */
static uint32_t bias_wait = 64, bias_skip; /* futex entries before the next bias is given */
static MP_TLS int mp_biased;         /* this thread's entries through the bias, still open */

static int membarrier_call(int cmd) { return (int)syscall(SYS_membarrier, cmd, 0, 0); }

static void bias_init(void)
{
    /* QUERY (0): GLOBAL (1) and PRIVATE_EXPEDITED (8) supported; REGISTER_PRIVATE_EXPEDITED (16) */
    int q = membarrier_call(0);
    bias_ok = q > 0 && (q & 1) && (q & 8) && membarrier_call(16) == 0 && membarrier_call(8) == 0;
}

/* A full barrier on every thread of the process. */
static void barrier_all(void)
{
    for (int i = 0; i < 100; i++) {
        if (membarrier_call(8) == 0)
            return;
        sched_yield();
    }
    bias_ok = 0; /* no more biases; this one is revoked the slow way */
    while (membarrier_call(1) != 0)
        sched_yield();
}

/* With the futex lock held: the bias revoked (0); or, `nowait`, 1 when
 * the owner is inside, the bias left to it. `count`: a short bias makes the
 * next wait longer (not for the writer thread's samples, which give the
 * bias back). */
static MP_COLD MP_NOINLINE int bias_revoke(uintptr_t owner, int nowait, int count)
{
    atomic_store_explicit(&bias_owner, BIAS_REVOKING, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
    barrier_all();
    _Atomic int *busy = (_Atomic int *)owner;
    for (int spin = 0; atomic_load_explicit(busy, memory_order_acquire); spin++) {
        if (nowait) {
            atomic_store_explicit(&bias_owner, owner, memory_order_release);
            return 1;
        }
        if (spin < 100) {
            __builtin_ia32_pause();
        } else { /* an owner inside for long (waiting for the writer, preempted): sleep */
            static const struct timespec bound = {0, 1000000};
            syscall(SYS_futex, busy, FUTEX_WAIT_PRIVATE, 1, &bound, NULL, 0);
        }
    }
    atomic_store_explicit(&bias_owner, 0, memory_order_relaxed);
    if (count) { /* a bias that served few entries was not worth its revocation */
        bias_wait = bias_uses < 4096 ? (bias_wait < (1u << 20) ? bias_wait * 2 : bias_wait) : 64;
        bias_skip = bias_wait;
    }
    return 0;
}

/* With the futex lock held, after it was taken: the bias is the caller's
 * to keep for its next entries, or nobody's. */
static inline void bias_settle(void)
{
    mp_thread_t *t = mp_self;
    uintptr_t b = atomic_load_explicit(&bias_owner, memory_order_relaxed), me = t ? (uintptr_t)&t->bias_busy : 0;
    if (b && b != me)
        bias_revoke(b, 0, 1);
    else if (!b && me && bias_ok && (!bias_skip || !--bias_skip)) {
        bias_uses = 0;
        atomic_store_explicit(&bias_owner, me, memory_order_relaxed); /* seen at the owner's next entry */
    }
}

static inline void lock(void)
{
    mp_thread_t *t = mp_self;
    if (MP_LIKELY(t != NULL)) {
        uintptr_t me = (uintptr_t)&t->bias_busy;
        if (MP_LIKELY(atomic_load_explicit(&bias_owner, memory_order_relaxed) == me)) {
            if (MP_UNLIKELY(mp_biased)) { /* entered again from inside (a signal handler's exit) */
                mp_biased++;
                return;
            }
            atomic_store_explicit(&t->bias_busy, 1, memory_order_relaxed);
            atomic_signal_fence(memory_order_seq_cst); /* the store, then the load (membarrier orders them) */
            if (MP_LIKELY(atomic_load_explicit(&bias_owner, memory_order_relaxed) == me)) {
                atomic_thread_fence(memory_order_acquire); /* a compiler barrier on x86 */
                mp_biased = 1;
                bias_uses++;
                return;
            }
            atomic_store_explicit(&t->bias_busy, 0, memory_order_release);
        }
    }
    int c = 0;
    if (!atomic_compare_exchange_strong_explicit(&wlock, &c, 1, memory_order_acquire, memory_order_relaxed))
        lock_slow();
    bias_settle();
}

static inline void unlock(void)
{
    if (MP_LIKELY(mp_biased)) {
        if (--mp_biased == 0)
            atomic_store_explicit(&mp_self->bias_busy, 0, memory_order_release);
        return;
    }
    atomic_store_explicit(&wlock, 0, memory_order_release);
    if (MP_UNLIKELY(atomic_load_explicit(&waiters, memory_order_relaxed)))
        syscall(SYS_futex, &wlock, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

#endif
