/* test_unwind.c - the --native unwinder (preload/unwind.c) against known
 * return addresses and against libunwind, through frames with and without
 * a frame pointer, a variable-size frame, a thread's outermost frame and a
 * signal frame (which it must hand to libunwind). */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#define UNW_LOCAL_ONLY
#include <libunwind.h>

#include "recorder.h"

#define MAXF 128

static mp_thread_t self; /* zeroed: no rule cache yet */
static void *ours[MAXF], *theirs[MAXF];
static int n_ours, n_theirs;
static void *ra[3]; /* return addresses into level2, level1 and the test */

static void *cut[MAXF], *whole[MAXF];
static uintptr_t cut_cfas[MAXF], whole_cfas[MAXF];
static int n_cut, n_whole, cut_met, whole_met;
static uintptr_t level1_cfa; /* where a cut walk stops */
static uintptr_t outer_cfa;  /* or here, when set */
static int with_cut;         /* capture() also walks with mp_unwind_cut (whose rules must be sound) */
static int cut_remembered;   /* the cut walk was answered by a remembered one */

/* A cut walk's frames into v and cfas; the count (-1: libunwind's). */
static int cut_walk(void **v, uintptr_t *cfas, uintptr_t stop, int *met, int *remembered)
{
    mp_cut_t c;
    if (mp_unwind_cut(&self, v, cfas, MAXF, stop, &c) < 0)
        return -1;
    *met = c.met;
    *remembered = c.ips != v;
    memmove(v, c.ips, (size_t)c.n * sizeof *v);
    memmove(cfas, c.cfas, (size_t)c.n * sizeof *cfas);
    return c.n;
}

static __attribute__((noinline)) void capture(void)
{
    n_ours = mp_unwind(&self, ours, MAXF);
    n_theirs = unw_backtrace(theirs, MAXF);
    if (with_cut) {
        int r;
        n_cut = cut_walk(cut, cut_cfas, outer_cfa ? outer_cfa : level1_cfa, &cut_met, &cut_remembered);
        n_whole = cut_walk(whole, whole_cfas, 0, &whole_met, &r);
        cr_assert(!r, "a walk to the outermost frame was answered by a remembered one");
    }
}

/* RSP-based CFA: no frame pointer here */
__attribute__((noinline, optimize("omit-frame-pointer"))) static void level3(void)
{
    ra[0] = __builtin_return_address(0);
    capture();
    __asm__ volatile("" ::: "memory"); /* not a tail call */
}

/* RBP-based CFA: a frame whose size is known only at run time */
__attribute__((noinline)) static void level2(int n)
{
    volatile char *buf = __builtin_alloca((size_t)n);
    buf[0] = 1;
    ra[1] = __builtin_return_address(0);
    level3();
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline, optimize("omit-frame-pointer"))) static void level1(int n)
{
    ra[2] = __builtin_return_address(0);
    level1_cfa = (uintptr_t)__builtin_dwarf_cfa();
    level2(n);
    __asm__ volatile("" ::: "memory");
}

static int find(void *const *v, int n, void *ip)
{
    for (int i = 0; i < n; i++)
        if (v[i] == ip)
            return i;
    return -1;
}

/* From level3's caller outwards both unwinders must agree frame for frame. */
static void same_as_libunwind(void)
{
    cr_assert_gt(n_ours, 0, "the unwinder gave up on plain frames");
    int a = find(ours, n_ours, ra[0]), b = find(theirs, n_theirs, ra[0]);
    cr_assert(a >= 0 && b >= 0, "level3's return address is missing");
    cr_assert_eq(ours[a + 1], ra[1], "level2's return address does not follow");
    cr_assert_eq(ours[a + 2], ra[2], "level1's return address does not follow");
    cr_assert_eq(n_ours - a, n_theirs - b, "%d frames from level3 out, libunwind has %d", n_ours - a, n_theirs - b);
    cr_assert(!memcmp(ours + a, theirs + b, (size_t)(n_ours - a) * sizeof *ours));
}

Test(unwind, frames_with_and_without_frame_pointers)
{
    level1(100);
    same_as_libunwind();
    level1(5000); /* the same code again, from the rule cache, with another frame size */
    same_as_libunwind();
}

/* Rules cached before a dlclose are not used after it: here they are made
 * wrong, as if other code now sat at their addresses. */
/* A walk cut at level1's frame (found by its CFA) has the frames inside it
 * and no more: level2's (return address ra[0]) is its last. Uncut, it has
 * what the full walk has. */
Test(unwind, a_cut_walk_stops_at_the_frame_of_a_given_cfa)
{
    with_cut = 1;
    level1(100);
    int a = find(ours, n_ours, ra[0]), c = find(cut, n_cut, ra[0]), w = find(whole, n_whole, ra[0]);
    cr_assert(a >= 0 && c >= 0 && w >= 0, "level3's return address is missing");
    cr_assert(cut_met, "level1's frame was not met");
    cr_assert_eq(n_cut, c + 1, "%d frames, level2's at %d: the walk went on past level1's", n_cut, c);
    cr_assert_lt(cut_cfas[c], level1_cfa);
    cr_assert(!whole_met);
    cr_assert_eq(n_whole - w, n_ours - a, "uncut: %d frames from level3 out, the full walk has %d", n_whole - w,
                 n_ours - a);
    cr_assert(!memcmp(whole + w, ours + a, (size_t)(n_ours - a) * sizeof *ours));
    for (int i = w; i + 1 < n_whole; i++) /* 0: the outermost frame's, not known */
        cr_assert(!whole_cfas[i + 1] || whole_cfas[i] < whole_cfas[i + 1], "CFAs rise outwards");
}

Test(unwind, rules_are_made_again_after_dlclose)
{
    level1(64);
    int before = n_ours, cached = 0;
    for (unsigned i = 0; i < MP_UNWIND_RULES; i++)
        if (self.rules[i].ip) {
            self.rules[i].cfa_off += 8;
            cached++;
        }
    cr_assert_gt(cached, 3, "the walk cached no rules");
    atomic_fetch_add(&mp_code_gen, 1);
    level1(64);
    cr_assert_eq(n_ours, before);
    same_as_libunwind();
}

static void *thread_main(void *arg)
{
    (void)arg;
    memset(&self, 0, sizeof self);
    level1(32);
    return NULL;
}

Test(unwind, a_thread_stack_ends_at_its_outermost_frame)
{
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, thread_main, NULL), 0);
    pthread_join(th, NULL);
    same_as_libunwind();
}

static void on_signal(int sig)
{
    (void)sig;
    level1(16);
}

Test(unwind, a_signal_frame_goes_to_libunwind)
{
    signal(SIGUSR1, on_signal);
    raise(SIGUSR1);
    cr_assert_eq(n_ours, -1, "a signal frame was unwound as a plain one (%d frames)", n_ours);
    cr_assert_gt(n_theirs, 0);
}

/* The same frames entered from two callers of one shape: the walk from
 * the second may match the first's frames up to level1, and must see that
 * level1's return address now leads elsewhere. */
static volatile int marker;

__attribute__((noinline)) static void via_a(int n)
{
    marker = 1;
    level1(n);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) static void via_b(int n)
{
    marker = 2;
    level1(n);
    __asm__ volatile("" ::: "memory");
}

Test(unwind, a_caller_that_changed_is_seen)
{
    for (int i = 0; i < 3; i++) {
        via_a(100);
        same_as_libunwind();
        void *into_a = ra[2];
        via_b(100);
        same_as_libunwind();
        cr_assert_neq(ra[2], into_a, "the two callers share code");
    }
}

/* A cut walk from the same state as one before, up to the same frame,
 * with the same words on the stack, is answered by the one remembered; a
 * caller that changed in between (via_a, via_b: one shape, so the walks
 * start at one SP) is not. */
__attribute__((noinline)) static void outer(int which)
{
    outer_cfa = (uintptr_t)__builtin_dwarf_cfa();
    void (*volatile via)(int) = which ? via_a : via_b; /* one call site: only the frames inside differ */
    via(100);
    __asm__ volatile("" ::: "memory");
}

Test(unwind, a_cut_walk_is_remembered_for_the_same_stack_only)
{
    with_cut = 1;
    void *into[2] = {0};
    for (int i = 0; i < 4; i++)
        for (int w = 0; w < 2; w++) {
            outer(w);
            cr_assert(cut_met, "outer's frame was not met");
            cr_assert_eq(cut_remembered, i > 0, "round %d, caller %d: remembered %d", i, w, cut_remembered);
            int a = find(ours, n_ours, ra[0]), c = find(cut, n_cut, ra[0]);
            cr_assert(a >= 0 && c >= 0, "level3's return address is missing");
            cr_assert_eq(n_cut - c, 3, "%d frames from level2 to outer (not included)", n_cut - c);
            cr_assert(!memcmp(cut + c, ours + a, 3 * sizeof *ours), "the cut walk differs from the full one");
            cr_assert_eq(cut[n_cut - 1], ra[2], "the last frame is not the one level1 returns to");
            if (i == 0)
                into[w] = ra[2];
            cr_assert_eq(ra[2], into[w]);
        }
    cr_assert_neq(into[0], into[1], "the two callers share code");
    outer_cfa = 0;
}

static void corrupt_rules(void *const *ips, int n)
{
    for (unsigned k = 0; k < MP_UNWIND_RULES; k++)
        if (self.rules[k].ip && (!ips || find(ips, n, (void *)self.rules[k].ip) >= 0))
            self.rules[k].cfa_off += 8;
}

/* A walk from where the last one started takes the frames it found: here
 * every cached rule is made wrong (without a dlclose) after the first
 * walk, and the second one's stack still comes out right. */
Test(unwind, a_walk_from_the_same_place_reuses_the_last)
{
    for (volatile int i = 0; i < 2; i++) { /* one call site, no branch before it */
        level1(64);
        same_as_libunwind();
        corrupt_rules(NULL, 0);
    }
}

/* The same inner frames under another caller: they are taken from the
 * last walk (their rules are made wrong here), and the walk goes on where
 * the two stacks part, with RBP as level2 saved it: this caller's CFA is
 * found from it. */
__attribute__((noinline)) static void two_call_sites(int n)
{
    volatile char *buf = __builtin_alloca((size_t)n);
    buf[0] = 1;
    level1(64);
    same_as_libunwind();
    int a = find(ours, n_ours, ra[0]); /* level2's frame */
    cr_assert(a >= 0);
    corrupt_rules(ours, a + 1);
    void *first = ra[2];
    level1(64);
    cr_assert_neq(ra[2], first, "one call site");
    same_as_libunwind();
    __asm__ volatile("" ::: "memory");
}

Test(unwind, frames_up_to_where_two_walks_part_are_reused)
{
    two_call_sites(200);
}
