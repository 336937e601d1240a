/* test_analysis.c - mp_analysis_run over small captures with known answers:
 * totals, the peak and what each stack held at the true peak (not at a
 * later, lower high point), the script-end snapshot against what is live
 * at exit, failed reallocs restored, frees of unknown blocks, and an
 * allocation at an address that is still live (its free was never seen). */
#include <criterion/criterion.h>

#include "analysis.h"
#include "testkit.h"

#define T1 1
#define T2 2

/* Three stack nodes (ids 1..3) and two threads (1, 2). */
static void begin(tk_capture_t *c)
{
    tk_begin(c, 200);
    uint32_t fn = tk_string(c, "app.py"), qn = tk_string(c, "main");
    uint32_t code = tk_code(c, 0, fn, qn, 1);
    uint32_t n1 = tk_node(c, 0, code, 1);
    tk_node(c, n1, code, 2);
    tk_node(c, n1, code, 4);
    tk_thread_new(c, 100);
    tk_thread_new(c, 101);
}

typedef struct {
    tk_capture_t c;
    memprof_reader_t *r;
    mp_analysis_t a;
} run_t;

static void run(run_t *x)
{
    tk_finish(&x->c);
    x->r = tk_open(x->c.data, x->c.len);
    int rc = mp_analysis_run(&x->a, x->r);
    cr_assert_eq(rc, 0, "analysis: %d (%s)", rc, memprof_reader_error(x->r));
}

static void done(run_t *x)
{
    mp_analysis_free(&x->a);
    memprof_reader_close(x->r);
    tk_close(&x->c);
}

#define ASSERT_AMOUNT(got, b, n)                                                                        \
    do {                                                                                                \
        mp_amount_t g_ = (got);                                                                         \
        cr_assert(g_.bytes == (b) && g_.count == (n), "%s = {%llu, %llu}, want {%llu, %llu}", #got,      \
                  (unsigned long long)g_.bytes, (unsigned long long)g_.count, (unsigned long long)(b), \
                  (unsigned long long)(n));                                                             \
    } while (0)

/* Peak at event 2 (600 bytes); then memory moves between stacks and reaches
 * a lower second high point (550). Stacks must report the first peak. */
static void peak_then_lower_high(tk_capture_t *c)
{
    tk_alloc(c, T1, MEMPROF_A_MALLOC, 0x1000, 100, 1);  /* 0: live 100 */
    tk_alloc(c, T1, MEMPROF_A_MALLOC, 0x2000, 300, 2);  /* 1: live 400 */
    tk_time(c, 700, 0);
    tk_alloc(c, T2, MEMPROF_A_CALLOC, 0x3000, 200, 3);  /* 2: live 600 = peak */
    tk_free(c, 0, MEMPROF_D_FREE, 0x2000);               /* 3: live 300 */
    tk_time(c, 800, 0);
    tk_alloc(c, T2, MEMPROF_A_MALLOC, 0x4000, 250, 1);  /* 4: live 550 */
    tk_free(c, 0, MEMPROF_D_FREE, 0x3000);               /* 5: live 350 */
    tk_alloc(c, T1, MEMPROF_A_MALLOC, 0x5000, 150, 2);  /* 6: live 500 */
    tk_free(c, 0, MEMPROF_D_FREE, 0x1000);               /* 7: live 400 */
    tk_time(c, 900, 0);
}

Test(analysis, totals_and_peak)
{
    run_t x;
    begin(&x.c);
    peak_then_lower_high(&x.c);
    run(&x);
    mp_analysis_t *a = &x.a;
    ASSERT_AMOUNT(a->allocated, 1000, 5);
    cr_assert_eq(a->frees, 3);
    cr_assert_eq(a->unmatched_frees, 0);
    ASSERT_AMOUNT(a->live, 400, 2);
    ASSERT_AMOUNT(a->peak, 600, 3);
    cr_assert_eq(a->peak_index, 2);
    cr_assert_eq(a->peak_time_us, 700);
    cr_assert_eq(a->last_time_us, 900);
    done(&x);
}

Test(analysis, stacks_at_the_true_peak)
{
    run_t x;
    begin(&x.c);
    peak_then_lower_high(&x.c);
    run(&x);
    mp_analysis_t *a = &x.a;
    ASSERT_AMOUNT(mp_analysis_stack_peak(a, 0), 0, 0);
    ASSERT_AMOUNT(mp_analysis_stack_peak(a, 1), 100, 1);
    ASSERT_AMOUNT(mp_analysis_stack_peak(a, 2), 300, 1);
    ASSERT_AMOUNT(mp_analysis_stack_peak(a, 3), 200, 1);
    ASSERT_AMOUNT(mp_analysis_stack_peak(a, 1u << 30), 0, 0);
    /* now and in total */
    ASSERT_AMOUNT(a->st[1].cur, 250, 1);
    ASSERT_AMOUNT(a->st[2].cur, 150, 1);
    ASSERT_AMOUNT(a->st[3].cur, 0, 0);
    ASSERT_AMOUNT(a->st[1].total, 350, 2);
    ASSERT_AMOUNT(a->st[2].total, 450, 2);
    ASSERT_AMOUNT(a->st[3].total, 200, 1);
    done(&x);
}

Test(analysis, peak_at_the_last_event)
{
    /* stacks untouched after the peak report their current value */
    run_t x;
    begin(&x.c);
    tk_alloc(&x.c, T1, MEMPROF_A_MALLOC, 0x1000, 10, 1);
    tk_free(&x.c, 0, MEMPROF_D_FREE, 0x1000);
    tk_alloc(&x.c, T1, MEMPROF_A_MALLOC, 0x2000, 7, 2);
    tk_alloc(&x.c, T1, MEMPROF_A_MALLOC, 0x3000, 8, 3);
    run(&x);
    ASSERT_AMOUNT(x.a.peak, 15, 2);
    cr_assert_eq(x.a.peak_index, 3);
    ASSERT_AMOUNT(mp_analysis_stack_peak(&x.a, 1), 0, 0);
    ASSERT_AMOUNT(mp_analysis_stack_peak(&x.a, 2), 7, 1);
    ASSERT_AMOUNT(mp_analysis_stack_peak(&x.a, 3), 8, 1);
    done(&x);
}

Test(analysis, script_end_snapshot)
{
    run_t x;
    begin(&x.c);
    tk_alloc(&x.c, T1, MEMPROF_A_MALLOC, 0x1000, 64, 1);
    tk_alloc(&x.c, T1, MEMPROF_A_MALLOC, 0x2000, 32, 2);
    tk_time(&x.c, 5000, 0);
    tk_mark(&x.c, MEMPROF_M_SCRIPT_END, 6000);           /* at index 2 */
    tk_free(&x.c, 0, MEMPROF_D_FREE, 0x1000);            /* interpreter teardown */
    tk_alloc(&x.c, T1, MEMPROF_A_MALLOC, 0x3000, 8, 3);
    tk_mark(&x.c, MEMPROF_M_SCRIPT_END, 7000);           /* a second mark changes nothing */
    tk_time(&x.c, 8000, 0);
    run(&x);
    mp_analysis_t *a = &x.a;
    cr_assert_eq(a->has_end, 1);
    ASSERT_AMOUNT(a->at_end, 96, 2);
    cr_assert_eq(a->end_index, 2);
    cr_assert_eq(a->end_time_us, 6000);
    ASSERT_AMOUNT(a->live, 40, 2);
    ASSERT_AMOUNT(a->st[1].at_end, 64, 1);
    ASSERT_AMOUNT(a->st[2].at_end, 32, 1);
    ASSERT_AMOUNT(a->st[3].at_end, 0, 0);
    ASSERT_AMOUNT(a->st[1].cur, 0, 0);
    ASSERT_AMOUNT(a->st[3].cur, 8, 1);
    cr_assert_eq(a->last_time_us, 8000);
    done(&x);
}

Test(analysis, no_script_end_means_exit)
{
    run_t x;
    begin(&x.c);
    tk_alloc(&x.c, T1, MEMPROF_A_MALLOC, 0x1000, 64, 1);
    tk_time(&x.c, 10, 0);
    tk_alloc(&x.c, T1, MEMPROF_A_MALLOC, 0x2000, 32, 2);
    tk_free(&x.c, 0, MEMPROF_D_FREE, 0x1000);
    run(&x);
    mp_analysis_t *a = &x.a;
    cr_assert_eq(a->has_end, 0);
    ASSERT_AMOUNT(a->at_end, 32, 1);
    cr_assert_eq(a->end_index, 3);
    cr_assert_eq(a->end_time_us, 10);
    ASSERT_AMOUNT(a->st[1].at_end, 0, 0);
    ASSERT_AMOUNT(a->st[2].at_end, 32, 1);
    done(&x);
}

Test(analysis, failed_realloc_is_restored)
{
    run_t x;
    begin(&x.c);
    tk_alloc(&x.c, T1, MEMPROF_A_MALLOC, 0x1000, 64, 2);
    tk_free(&x.c, T1, MEMPROF_D_REALLOC, 0x1000);        /* realloc(0x1000, huge) ... */
    tk_restore(&x.c, T2, 0x1000);                         /* another thread: not its realloc */
    tk_restore(&x.c, T1, 0x2000);                         /* not the block it freed */
    tk_restore(&x.c, T1, 0x1000);                         /* ... failed: the block is back */
    tk_restore(&x.c, T1, 0x1000);                         /* only once */
    run(&x);
    mp_analysis_t *a = &x.a;
    ASSERT_AMOUNT(a->live, 64, 1);
    ASSERT_AMOUNT(a->allocated, 64, 1);
    cr_assert_eq(a->frees, 1);
    ASSERT_AMOUNT(a->st[2].cur, 64, 1);
    ASSERT_AMOUNT(a->st[2].total, 64, 1);
    ASSERT_AMOUNT(a->peak, 64, 1);
    done(&x);
}

Test(analysis, restored_block_can_be_freed)
{
    run_t x;
    begin(&x.c);
    tk_alloc(&x.c, T2, MEMPROF_A_MALLOC, 0x1000, 64, 3);
    tk_free(&x.c, T2, MEMPROF_D_REALLOC, 0x1000);
    tk_restore(&x.c, T2, 0x1000);
    tk_free(&x.c, 0, MEMPROF_D_FREE, 0x1000);
    tk_free(&x.c, T2, MEMPROF_D_REALLOC, 0x1000);         /* already gone: unmatched */
    tk_restore(&x.c, T2, 0x1000);                         /* nothing to restore */
    run(&x);
    mp_analysis_t *a = &x.a;
    ASSERT_AMOUNT(a->live, 0, 0);
    ASSERT_AMOUNT(a->allocated, 64, 1);
    cr_assert_eq(a->frees, 3);
    cr_assert_eq(a->unmatched_frees, 1);
    ASSERT_AMOUNT(a->st[3].cur, 0, 0);
    done(&x);
}

Test(analysis, successful_realloc)
{
    run_t x;
    begin(&x.c);
    tk_alloc(&x.c, T1, MEMPROF_A_MALLOC, 0x1000, 64, 1);
    tk_free(&x.c, T1, MEMPROF_D_REALLOC, 0x1000);
    tk_alloc(&x.c, T1, MEMPROF_A_REALLOC, 0x9000, 256, 2);
    run(&x);
    ASSERT_AMOUNT(x.a.live, 256, 1);
    ASSERT_AMOUNT(x.a.allocated, 320, 2);
    ASSERT_AMOUNT(x.a.peak, 256, 1);
    cr_assert_eq(x.a.peak_index, 2);
    ASSERT_AMOUNT(mp_analysis_stack_peak(&x.a, 1), 0, 0);
    done(&x);
}

Test(analysis, free_of_unknown_address)
{
    run_t x;
    begin(&x.c);
    tk_alloc(&x.c, T1, MEMPROF_A_MALLOC, 0x1000, 16, 1);
    tk_free(&x.c, 0, MEMPROF_D_FREE, 0xdead0);
    tk_free(&x.c, 0, MEMPROF_D_MUNMAP, 0x1001);
    run(&x);
    cr_assert_eq(x.a.frees, 2);
    cr_assert_eq(x.a.unmatched_frees, 2);
    ASSERT_AMOUNT(x.a.live, 16, 1);
    done(&x);
}

Test(analysis, address_zero_is_no_block)
{
    /* 0 is nobody's block (and the live map's empty mark): frees and
     * restores of it change nothing */
    run_t x;
    begin(&x.c);
    tk_alloc(&x.c, T1, MEMPROF_A_MALLOC, 0x1000, 16, 1);
    tk_free(&x.c, T1, MEMPROF_D_REALLOC, 0x1000);
    tk_restore(&x.c, T1, 0x1000);
    tk_restore(&x.c, T1, 0);                              /* nothing freed by realloc now */
    tk_restore(&x.c, T2, 0);
    for (int i = 0; i < 3; i++)
        tk_free(&x.c, 0, MEMPROF_D_FREE, 0);
    for (uint64_t i = 1; i <= 100; i++)
        tk_alloc(&x.c, T1, MEMPROF_A_MALLOC, 0x100000 + i * 16, 1, 2);
    run(&x);
    cr_assert_eq(x.a.frees, 4);
    cr_assert_eq(x.a.unmatched_frees, 3);
    ASSERT_AMOUNT(x.a.live, 116, 101);
    ASSERT_AMOUNT(x.a.allocated, 116, 101);
    ASSERT_AMOUNT(x.a.st[0].cur, 0, 0);
    cr_assert_eq(x.a.map_n, 101);
    done(&x);
}

Test(analysis, alloc_at_a_live_address_drops_the_stale_block)
{
    run_t x;
    begin(&x.c);
    tk_alloc(&x.c, T1, MEMPROF_A_MALLOC, 0x1000, 100, 1);
    tk_alloc(&x.c, T1, MEMPROF_A_MMAP, 0x1000, 40, 2);   /* free of the first never seen */
    tk_free(&x.c, 0, MEMPROF_D_MUNMAP, 0x1000);
    tk_free(&x.c, 0, MEMPROF_D_FREE, 0x1000);            /* the block is gone: unmatched */
    run(&x);
    mp_analysis_t *a = &x.a;
    ASSERT_AMOUNT(a->allocated, 140, 2);
    ASSERT_AMOUNT(a->live, 0, 0);
    ASSERT_AMOUNT(a->peak, 100, 1);
    cr_assert_eq(a->peak_index, 0);
    cr_assert_eq(a->frees, 2);
    cr_assert_eq(a->unmatched_frees, 1);
    ASSERT_AMOUNT(a->st[1].cur, 0, 0);
    ASSERT_AMOUNT(a->st[2].cur, 0, 0);
    ASSERT_AMOUNT(mp_analysis_stack_peak(a, 1), 100, 1);
    ASSERT_AMOUNT(mp_analysis_stack_peak(a, 2), 0, 0);
    done(&x);
}

Test(analysis, many_blocks_grow_the_map)
{
    /* past the live map's first size (65536 slots at 70 %), then all freed
     * in another order: the backward-shift delete must keep every block */
    run_t x;
    begin(&x.c);
    tk_capture_t *c = &x.c;
    const uint64_t n = 60000;
    for (uint64_t i = 0; i < n; i++)
        tk_alloc(c, T1, MEMPROF_A_MALLOC, 0x10000 + i * 48, 1 + i % 3, (uint32_t)(1 + i % 3));
    for (uint64_t i = 0; i < n; i++)
        tk_free(c, 0, MEMPROF_D_FREE, 0x10000 + ((i * 7919) % n) * 48);
    run(&x);
    cr_assert_eq(x.a.unmatched_frees, 0);
    ASSERT_AMOUNT(x.a.live, 0, 0);
    ASSERT_AMOUNT(x.a.peak, 120000, n);
    cr_assert_eq(x.a.peak_index, n - 1);
    ASSERT_AMOUNT(mp_analysis_stack_peak(&x.a, 1), 20000, 20000);
    ASSERT_AMOUNT(mp_analysis_stack_peak(&x.a, 3), 60000, 20000);
    cr_assert_geq(x.a.map_cap, 131072);
    done(&x);
}

Test(analysis, reader_error_is_returned)
{
    tk_capture_t c;
    begin(&c);
    tk_alloc(&c, T1, MEMPROF_A_MALLOC, 0x1000, 16, 1);
    tk_raw(&c, (uint8_t[]){0x0f}, 1);
    tk_finish(&c);
    memprof_reader_t *r = tk_open(c.data, c.len);
    mp_analysis_t a;
    cr_assert_eq(mp_analysis_run(&a, r), MEMPROF_ECORRUPT);
    ASSERT_AMOUNT(a.allocated, 16, 1);
    mp_analysis_free(&a);
    memprof_reader_close(r);
    tk_close(&c);
}

Test(analysis, truncated_capture_is_not_an_error)
{
    tk_capture_t c;
    begin(&c);
    tk_alloc(&c, T1, MEMPROF_A_MALLOC, 0x1000, 16, 1);
    tk_flush(&c);
    size_t cut = c.len;
    tk_alloc(&c, T1, MEMPROF_A_MALLOC, 0x2000, 32, 1);
    tk_finish(&c);
    memprof_reader_t *r = tk_open(c.data, cut + 3);
    mp_analysis_t a;
    cr_assert_eq(mp_analysis_run(&a, r), 0);
    cr_assert_eq(memprof_reader_info(r)->truncated, 1);
    ASSERT_AMOUNT(a.allocated, 16, 1);
    ASSERT_AMOUNT(a.at_end, 16, 1);
    mp_analysis_free(&a);
    memprof_reader_close(r);
    tk_close(&c);
}
