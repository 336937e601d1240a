/* test_analysis.c - mp_analysis_run over small captures with known answers:
 * totals, the peak and what each stack held at the true peak (not at a
 * later, lower high point), the script-end snapshot against what is live
 * at exit, failed reallocs restored, frees of unknown blocks, and an
 * allocation at an address that is still live (its free was never seen).
 * Mappings (1.1): munmap of part of a mapping, of several at once, of
 * length 0; a mapping over part of another; file mappings kept out of the
 * heap; mremap keeping a mapping's file-ness; a failed mremap restored;
 * mappings in the peak; counts per allocator; sizes that would wrap; and
 * the rich capture's replay keeps its books balanced. Filters (one thread,
 * a time range), temporary allocations by threshold, per-thread figures,
 * the size histogram, and the memory-over-time series halved as it grows. */
#include <criterion/criterion.h>
#include <string.h>

#include "analysis.h"
#include "mp_common.h"
#include "rich_capture.h"
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
    tk_free_range(&x.c, 0, MEMPROF_D_MUNMAP, 0x1001, 0x1000); /* heap blocks are not mappings */
    run(&x);
    cr_assert_eq(x.a.frees, 2);
    cr_assert_eq(x.a.unmatched_frees, 2);
    ASSERT_AMOUNT(x.a.live, 16, 1);
    done(&x);
}

Test(analysis, address_zero_is_no_block)
{
    /* 0 is nobody's block (and the live map's empty mark): frees and
     * restores of it change nothing, an allocation there is never live */
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
    tk_alloc(&x.c, T2, MEMPROF_A_MALLOC, 0, 5, 3);        /* made, but never live */
    run(&x);
    cr_assert_eq(x.a.frees, 4);
    cr_assert_eq(x.a.unmatched_frees, 3);
    ASSERT_AMOUNT(x.a.live, 116, 101);
    ASSERT_AMOUNT(x.a.allocated, 121, 102);
    ASSERT_AMOUNT(x.a.st[3].total, 5, 1);
    ASSERT_AMOUNT(x.a.st[3].cur, 0, 0);
    ASSERT_AMOUNT(x.a.st[0].cur, 0, 0);
    cr_assert_eq(x.a.map_n, 101);
    done(&x);
}

Test(analysis, alloc_at_a_live_address_drops_the_stale_block)
{
    run_t x;
    begin(&x.c);
    tk_alloc(&x.c, T1, MEMPROF_A_MALLOC, 0x1000, 100, 1);
    tk_alloc(&x.c, T1, MEMPROF_A_CALLOC, 0x1000, 40, 2); /* free of the first never seen */
    tk_free(&x.c, 0, MEMPROF_D_FREE, 0x1000);
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

/* ---- mappings (1.1) ------------------------------------------------------ */

#define MiB (1ull << 20)
#define M 0x7f0000000000ull /* where the test mappings go */

/* The capture of begin() plus the first `steps` steps of a script. */
typedef void (*script_t)(tk_capture_t *c, int step);

static void run_steps(run_t *x, script_t script, int steps)
{
    begin(&x->c);
    for (int i = 0; i < steps; i++)
        script(&x->c, i);
    run(x);
}

static void partial_unmaps(tk_capture_t *c, int step)
{
    switch (step) {
    case 0: tk_alloc(c, T1, MEMPROF_A_MMAP, M, 10 * MiB, 1); break;
    case 1: tk_free_range(c, 0, MEMPROF_D_MUNMAP, M + 3 * MiB, 4 * MiB); break; /* the middle */
    case 2: tk_free_range(c, 0, MEMPROF_D_MUNMAP, M, 3 * MiB); break;           /* the left piece */
    case 3: tk_free_range(c, 0, MEMPROF_D_MUNMAP, M + 7 * MiB, 3 * MiB); break; /* the right one */
    }
}

Test(mappings, munmap_of_part_of_a_mapping)
{
    /* live after each step: the mapping stays one allocation while the part
     * left of the hole lives; the part right of it keeps its bytes only */
    static const struct {
        uint64_t bytes, count, nmaps;
    } want[] = {{10 * MiB, 1, 1}, {6 * MiB, 1, 2}, {3 * MiB, 0, 1}, {0, 0, 0}};
    for (int steps = 1; steps <= 4; steps++) {
        run_t x;
        run_steps(&x, partial_unmaps, steps);
        mp_analysis_t *a = &x.a;
        cr_assert(a->live.bytes == want[steps - 1].bytes && a->live.count == want[steps - 1].count,
                  "after %d steps: live {%llu, %llu}", steps, (unsigned long long)a->live.bytes,
                  (unsigned long long)a->live.count);
        cr_assert_eq(a->nmaps, want[steps - 1].nmaps, "after %d steps", steps);
        ASSERT_AMOUNT(a->st[1].cur, want[steps - 1].bytes, want[steps - 1].count);
        ASSERT_AMOUNT(a->allocated, 10 * MiB, 1);
        ASSERT_AMOUNT(a->peak, 10 * MiB, 1);
        cr_assert_eq(a->peak_index, 0);
        cr_assert_eq(a->frees, (uint64_t)steps - 1);
        cr_assert_eq(a->unmatched_frees, 0);
        ASSERT_AMOUNT(a->files_live, 0, 0);
        done(&x);
    }
}

static void spanning_unmaps(tk_capture_t *c, int step)
{
    switch (step) {
    case 0:
        tk_alloc(c, T1, MEMPROF_A_MMAP, M, 4 * MiB, 1);
        tk_alloc(c, T1, MEMPROF_A_MMAP, M + 4 * MiB, 4 * MiB, 2); /* right after the first */
        tk_alloc(c, T2, MEMPROF_A_MMAP, M + 9 * MiB, 1 * MiB, 3);
        break;
    case 1: tk_free_range(c, 0, MEMPROF_D_MUNMAP, M + 3 * MiB, 6 * MiB + MiB / 2); break;
    case 2: tk_free_range(c, 0, MEMPROF_D_MUNMAP, M + 20 * MiB, MiB); break; /* nothing there */
    case 3: tk_free_range(c, 0, MEMPROF_D_MUNMAP, M - MiB, 16 * MiB); break;
    }
}

Test(mappings, munmap_spanning_mappings)
{
    run_t x;
    run_steps(&x, spanning_unmaps, 2);
    /* [M+3, M+9.5) takes the first one's last MiB, all of the second, half of the third */
    ASSERT_AMOUNT(x.a.live, 3 * MiB + MiB / 2, 2);
    ASSERT_AMOUNT(x.a.st[1].cur, 3 * MiB, 1);
    ASSERT_AMOUNT(x.a.st[2].cur, 0, 0);
    ASSERT_AMOUNT(x.a.st[3].cur, MiB / 2, 1);
    cr_assert_eq(x.a.nmaps, 2);
    cr_assert(x.a.maps[0].addr == M && x.a.maps[0].size == 3 * MiB);
    cr_assert(x.a.maps[1].addr == M + 9 * MiB + MiB / 2 && x.a.maps[1].size == MiB / 2);
    cr_assert_eq(x.a.unmatched_frees, 0);
    ASSERT_AMOUNT(x.a.peak, 9 * MiB, 3);
    done(&x);

    run_steps(&x, spanning_unmaps, 4);
    ASSERT_AMOUNT(x.a.live, 0, 0);
    cr_assert_eq(x.a.nmaps, 0);
    cr_assert_eq(x.a.frees, 3);
    cr_assert_eq(x.a.unmatched_frees, 1);
    for (uint32_t s = 1; s <= 3; s++)
        ASSERT_AMOUNT(x.a.st[s].cur, 0, 0);
    done(&x);
}

static void fixed_maps(tk_capture_t *c, int step)
{
    switch (step) {
    case 0: tk_alloc(c, T1, MEMPROF_A_MMAP, M, 8 * MiB, 1); break;
    case 1: tk_alloc(c, T1, MEMPROF_A_MMAP, M + 2 * MiB, MiB, 2); break;     /* MAP_FIXED inside it */
    case 2: tk_alloc(c, T2, MEMPROF_A_MMAP_FILE, M + 4 * MiB, MiB, 3); break; /* a file over its rest */
    case 3: tk_free_range(c, 0, MEMPROF_D_MUNMAP, M, 8 * MiB); break;
    }
}

Test(mappings, mapping_over_part_of_another)
{
    run_t x;
    run_steps(&x, fixed_maps, 2);
    ASSERT_AMOUNT(x.a.live, 8 * MiB, 2); /* the replaced MiB went with the new mapping's arrival */
    ASSERT_AMOUNT(x.a.st[1].cur, 7 * MiB, 1);
    ASSERT_AMOUNT(x.a.st[2].cur, MiB, 1);
    ASSERT_AMOUNT(x.a.allocated, 9 * MiB, 2);
    ASSERT_AMOUNT(x.a.peak, 8 * MiB, 1); /* not higher: first reached at the first mapping */
    cr_assert_eq(x.a.peak_index, 0);
    cr_assert_eq(x.a.nmaps, 3);
    done(&x);

    run_steps(&x, fixed_maps, 3);
    ASSERT_AMOUNT(x.a.live, 7 * MiB, 2);
    ASSERT_AMOUNT(x.a.st[1].cur, 6 * MiB, 1);
    ASSERT_AMOUNT(x.a.st[3].cur, 0, 0);
    ASSERT_AMOUNT(x.a.files_live, MiB, 1);
    cr_assert_eq(x.a.nmaps, 5);
    for (uint64_t i = 0; i + 1 < x.a.nmaps; i++)
        cr_assert_leq(x.a.maps[i].addr + x.a.maps[i].size, x.a.maps[i + 1].addr, "mapping %llu overlaps",
                      (unsigned long long)i);
    done(&x);

    run_steps(&x, fixed_maps, 4);
    ASSERT_AMOUNT(x.a.live, 0, 0);
    ASSERT_AMOUNT(x.a.files_live, 0, 0);
    ASSERT_AMOUNT(x.a.files_peak, MiB, 1);
    ASSERT_AMOUNT(x.a.files_total, MiB, 1);
    ASSERT_AMOUNT(x.a.st[1].cur, 0, 0);
    ASSERT_AMOUNT(x.a.st[2].cur, 0, 0);
    cr_assert_eq(x.a.nmaps, 0);
    cr_assert_eq(x.a.unmatched_frees, 0);
    done(&x);
}

Test(mappings, file_mapping_is_not_heap)
{
    run_t x;
    begin(&x.c);
    tk_alloc(&x.c, T1, MEMPROF_A_MALLOC, 0x1000, 100, 1);
    tk_alloc(&x.c, T1, MEMPROF_A_MMAP_FILE, M, 16 * MiB, 2);
    tk_alloc(&x.c, T2, MEMPROF_A_MMAP, M + 32 * MiB, MiB, 3);
    tk_free_range(&x.c, 0, MEMPROF_D_MUNMAP, M, 8 * MiB); /* half the file */
    run(&x);
    mp_analysis_t *a = &x.a;
    ASSERT_AMOUNT(a->live, MiB + 100, 2);
    ASSERT_AMOUNT(a->peak, MiB + 100, 2);
    cr_assert_eq(a->peak_index, 2);
    ASSERT_AMOUNT(a->files_live, 8 * MiB, 1);
    ASSERT_AMOUNT(a->files_peak, 16 * MiB, 1);
    ASSERT_AMOUNT(a->files_total, 16 * MiB, 1);
    ASSERT_AMOUNT(a->st[2].cur, 0, 0);
    ASSERT_AMOUNT(a->st[2].total, 0, 0);
    ASSERT_AMOUNT(mp_analysis_stack_peak(a, 2), 0, 0);
    ASSERT_AMOUNT(mp_analysis_stack_peak(a, 3), MiB, 1);
    ASSERT_AMOUNT(a->at_end, MiB + 100, 2);
    ASSERT_AMOUNT(a->allocated, 17 * MiB + 100, 3); /* every allocation event */
    done(&x);
}

Test(mappings, mremap_keeps_file_ness)
{
    run_t x;
    begin(&x.c);
    tk_capture_t *c = &x.c;
    tk_alloc(c, T1, MEMPROF_A_MMAP_FILE, M, 2 * MiB, 1);
    tk_alloc(c, T2, MEMPROF_A_MMAP, M + 16 * MiB, MiB, 2);
    /* two mremaps at once: each thread's result follows its own free half */
    tk_free_range(c, T1, MEMPROF_D_MREMAP, M, 2 * MiB);
    tk_free_range(c, T2, MEMPROF_D_MREMAP, M + 16 * MiB, MiB);
    tk_alloc(c, T2, MEMPROF_A_MREMAP, M + 32 * MiB, 3 * MiB, 2);
    tk_alloc(c, T1, MEMPROF_A_MREMAP, M + 64 * MiB, 4 * MiB, 1);
    /* an mremap that frees nothing (old length 0, MREMAP_DONTUNMAP): anonymous */
    tk_alloc(c, T1, MEMPROF_A_MREMAP, M + 128 * MiB, MiB, 3);
    /* one of a range nobody mapped: anonymous */
    tk_free_range(c, T1, MEMPROF_D_MREMAP, M + 256 * MiB, MiB);
    tk_alloc(c, T1, MEMPROF_A_MREMAP, M + 512 * MiB, MiB, 1);
    run(&x);
    mp_analysis_t *a = &x.a;
    ASSERT_AMOUNT(a->files_live, 4 * MiB, 1);
    ASSERT_AMOUNT(a->files_peak, 4 * MiB, 1);
    ASSERT_AMOUNT(a->files_total, 6 * MiB, 2);
    ASSERT_AMOUNT(a->live, 5 * MiB, 3);
    ASSERT_AMOUNT(a->st[1].cur, MiB, 1);
    ASSERT_AMOUNT(a->st[2].cur, 3 * MiB, 1);
    ASSERT_AMOUNT(a->st[3].cur, MiB, 1);
    ASSERT_AMOUNT(a->peak, 5 * MiB, 3);
    cr_assert_eq(a->frees, 3);
    cr_assert_eq(a->unmatched_frees, 1);
    cr_assert_eq(a->nmaps, 4);
    done(&x);
}

Test(mappings, failed_mremap_restores_the_range)
{
    run_t x;
    begin(&x.c);
    tk_capture_t *c = &x.c;
    tk_alloc(c, T1, MEMPROF_A_MMAP, M, 2 * MiB, 2);           /* 0 */
    tk_free_range(c, T1, MEMPROF_D_MREMAP, M, 2 * MiB);       /* 1: mremap(M, 2 MiB, ...) */
    tk_restore(c, T2, M);                                     /* not this thread's */
    tk_alloc(c, T2, MEMPROF_A_MMAP, M + 16 * MiB, 3 * MiB, 3); /* 2: live 3 MiB */
    tk_restore(c, T1, M);                                     /* ... failed: live 5 MiB, a new peak */
    tk_restore(c, T1, M);                                     /* only once */
    tk_free_range(c, 0, MEMPROF_D_MUNMAP, M, 2 * MiB);        /* 3: a mapping again */
    run(&x);
    mp_analysis_t *a = &x.a;
    ASSERT_AMOUNT(a->live, 3 * MiB, 1);
    ASSERT_AMOUNT(a->peak, 5 * MiB, 2);
    cr_assert_eq(a->peak_index, 3);
    ASSERT_AMOUNT(mp_analysis_stack_peak(a, 2), 2 * MiB, 1);
    ASSERT_AMOUNT(mp_analysis_stack_peak(a, 3), 3 * MiB, 1);
    ASSERT_AMOUNT(a->allocated, 5 * MiB, 2); /* a restore is no new allocation */
    ASSERT_AMOUNT(a->st[2].total, 2 * MiB, 1);
    ASSERT_AMOUNT(a->st[2].cur, 0, 0);
    cr_assert_eq(a->frees, 2);
    cr_assert_eq(a->unmatched_frees, 0);
    done(&x);
}

Test(mappings, failed_mremap_of_a_file_part_or_nothing)
{
    run_t x;
    begin(&x.c);
    tk_capture_t *c = &x.c;
    tk_alloc(c, T1, MEMPROF_A_MMAP_FILE, M, MiB, 1);
    tk_free_range(c, T1, MEMPROF_D_MREMAP, M, MiB);
    tk_restore(c, T1, M);                                    /* a file again */
    tk_alloc(c, T2, MEMPROF_A_MMAP, M + 16 * MiB, 4 * MiB, 2);
    tk_free_range(c, T2, MEMPROF_D_MREMAP, M + 18 * MiB, 2 * MiB); /* its right half */
    tk_restore(c, T2, M + 18 * MiB);                        /* bytes back, no second allocation */
    tk_free_range(c, T1, MEMPROF_D_MREMAP, M + 64 * MiB, MiB); /* nothing mapped there */
    tk_restore(c, T1, M + 64 * MiB);                        /* nothing to restore */
    run(&x);
    mp_analysis_t *a = &x.a;
    ASSERT_AMOUNT(a->files_live, MiB, 1);
    ASSERT_AMOUNT(a->files_peak, MiB, 1);
    ASSERT_AMOUNT(a->live, 4 * MiB, 1);
    ASSERT_AMOUNT(a->st[2].cur, 4 * MiB, 1);
    cr_assert_eq(a->nmaps, 3);
    cr_assert_eq(a->unmatched_frees, 1);
    done(&x);
}

Test(mappings, restore_over_a_later_mapping)
{
    /* what a capture says was mapped in the range since its failed mremap
     * cannot be there: the restored range replaces it, and mappings stay
     * disjoint */
    run_t x;
    begin(&x.c);
    tk_alloc(&x.c, T1, MEMPROF_A_MMAP, M, 2 * MiB, 1);
    tk_free_range(&x.c, T1, MEMPROF_D_MREMAP, M, 2 * MiB);
    tk_alloc(&x.c, T2, MEMPROF_A_MMAP, M + MiB, MiB, 2);
    tk_restore(&x.c, T1, M);
    run(&x);
    ASSERT_AMOUNT(x.a.live, 2 * MiB, 1);
    ASSERT_AMOUNT(x.a.st[1].cur, 2 * MiB, 1);
    ASSERT_AMOUNT(x.a.st[2].cur, 0, 0);
    cr_assert_eq(x.a.nmaps, 1);
    cr_assert(x.a.maps[0].addr == M && x.a.maps[0].size == 2 * MiB);
    done(&x);
}

Test(mappings, peak_includes_anonymous_mappings)
{
    run_t x;
    begin(&x.c);
    tk_alloc(&x.c, T1, MEMPROF_A_MALLOC, 0x1000, 100, 1);
    tk_alloc(&x.c, T1, MEMPROF_A_MMAP, M, MiB, 2);           /* 1: the peak */
    tk_free(&x.c, 0, MEMPROF_D_FREE, 0x1000);
    tk_free_range(&x.c, 0, MEMPROF_D_MUNMAP, M, MiB);
    tk_alloc(&x.c, T2, MEMPROF_A_MMAP_FILE, M, 8 * MiB, 3);  /* bigger, but not heap */
    tk_alloc(&x.c, T1, MEMPROF_A_MALLOC, 0x2000, 200, 1);
    run(&x);
    mp_analysis_t *a = &x.a;
    ASSERT_AMOUNT(a->peak, MiB + 100, 2);
    cr_assert_eq(a->peak_index, 1);
    ASSERT_AMOUNT(mp_analysis_stack_peak(a, 1), 100, 1);
    ASSERT_AMOUNT(mp_analysis_stack_peak(a, 2), MiB, 1);
    ASSERT_AMOUNT(mp_analysis_stack_peak(a, 3), 0, 0);
    ASSERT_AMOUNT(a->live, 200, 1);
    ASSERT_AMOUNT(a->files_peak, 8 * MiB, 1);
    done(&x);
}

Test(mappings, counts_by_allocator)
{
    run_t x;
    begin(&x.c);
    tk_capture_t *c = &x.c;
    tk_alloc(c, T1, MEMPROF_A_MALLOC, 0x1000, 100, 1);
    tk_alloc(c, T1, MEMPROF_A_MALLOC, 0x2000, 50, 1);
    tk_alloc(c, T2, MEMPROF_A_CALLOC, 0x3000, 30, 2);
    tk_free(c, T1, MEMPROF_D_REALLOC, 0x1000);
    tk_alloc(c, T1, MEMPROF_A_REALLOC, 0x4000, 300, 1);
    tk_free(c, T1, MEMPROF_D_REALLOC, 0x2000);
    tk_restore(c, T1, 0x2000);                              /* no allocation */
    tk_alloc(c, T1, MEMPROF_A_MMAP, M, 4096, 3);
    tk_alloc(c, T1, MEMPROF_A_MMAP_FILE, M + MiB, 8192, 3);
    tk_free_range(c, T1, MEMPROF_D_MREMAP, M, 4096);
    tk_alloc(c, T1, MEMPROF_A_MREMAP, M + 2 * MiB, 16384, 3);
    tk_alloc(c, T2, MEMPROF_A_PYMEM_OBJ, 0x5000, 7, 2);
    run(&x);
    static const struct {
        unsigned kind;
        uint64_t bytes, count;
    } want[] = {{MEMPROF_A_MALLOC, 150, 2},    {MEMPROF_A_CALLOC, 30, 1},       {MEMPROF_A_REALLOC, 300, 1},
                {MEMPROF_A_MMAP, 4096, 1},     {MEMPROF_A_MMAP_FILE, 8192, 1},  {MEMPROF_A_MREMAP, 16384, 1},
                {MEMPROF_A_PYMEM_OBJ, 7, 1}};
    uint64_t count = 0;
    for (unsigned k = 0; k < MEMPROF_A_COUNT; k++) {
        mp_amount_t w = {0, 0};
        for (size_t i = 0; i < MP_ARRAY_LEN(want); i++)
            if (want[i].kind == k)
                w = (mp_amount_t){want[i].bytes, want[i].count};
        cr_assert(x.a.by_allocator[k].bytes == w.bytes && x.a.by_allocator[k].count == w.count,
                  "allocator %u: {%llu, %llu}", k, (unsigned long long)x.a.by_allocator[k].bytes,
                  (unsigned long long)x.a.by_allocator[k].count);
        count += x.a.by_allocator[k].count;
    }
    cr_assert_eq(count, x.a.allocated.count);
    ASSERT_AMOUNT(x.a.allocated, 29159, 8);
    ASSERT_AMOUNT(x.a.files_live, 8192, 1);
    ASSERT_AMOUNT(x.a.live, 50 + 30 + 300 + 16384 + 7, 5);
    done(&x);
}

Test(mappings, munmap_of_length_zero_changes_nothing)
{
    /* munmap(p, 0) fails, but is recorded before the call */
    run_t x;
    begin(&x.c);
    tk_alloc(&x.c, T1, MEMPROF_A_MMAP, M, 4 * MiB, 1);
    tk_free_range(&x.c, 0, MEMPROF_D_MUNMAP, M + MiB, 0);
    tk_free_range(&x.c, 0, MEMPROF_D_MUNMAP, M, MiB);
    run(&x);
    ASSERT_AMOUNT(x.a.live, 3 * MiB, 1); /* not split by the empty unmap: still one allocation */
    cr_assert_eq(x.a.nmaps, 1);
    cr_assert_eq(x.a.frees, 2);
    cr_assert_eq(x.a.unmatched_frees, 1);
    done(&x);
}

Test(mappings, mmap_of_size_zero_maps_nothing)
{
    run_t x;
    begin(&x.c);
    tk_alloc(&x.c, T1, MEMPROF_A_MMAP, M, 0, 1);
    tk_alloc(&x.c, T1, MEMPROF_A_MALLOC, 0x1000, 8, 1);
    run(&x);
    ASSERT_AMOUNT(x.a.allocated, 8, 2);
    ASSERT_AMOUNT(x.a.live, 8, 1);
    cr_assert_eq(x.a.nmaps, 0);
    cr_assert_eq(x.a.end_index, 2); /* = events */
    done(&x);
}

Test(mappings, sizes_that_would_wrap)
{
    /* a mapping can reach the end of the address space, not past it */
    const uint64_t e = UINT64_MAX - 0xfff;
    run_t x;
    begin(&x.c);
    tk_alloc(&x.c, T1, MEMPROF_A_MMAP, e, UINT64_MAX, 1);
    tk_alloc(&x.c, T1, MEMPROF_A_MMAP, 0x10000, 0x1000, 2);
    tk_free_range(&x.c, 0, MEMPROF_D_MUNMAP, 0x10000, 0x1000);
    tk_free_range(&x.c, 0, MEMPROF_D_MUNMAP, e, 0x1000); /* addr + length wraps to 0 */
    run(&x);
    ASSERT_AMOUNT(x.a.peak, 0xfff + 0x1000, 2);
    ASSERT_AMOUNT(x.a.live, 0, 0);
    ASSERT_AMOUNT(x.a.st[1].cur, 0, 0);
    cr_assert_eq(x.a.nmaps, 0);
    cr_assert_eq(x.a.unmatched_frees, 0);
    done(&x);
}

/* The rich capture (every record kind, hostile values) replays with its
 * books balanced: mappings sorted and disjoint, live = the stacks' sum =
 * the heap blocks' and anonymous mappings' sum, the file figures = the
 * file mappings', every allocation counted once by allocator. */
Test(mappings, rich_capture_books_balance)
{
    tk_capture_t c;
    rich_ids_t id;
    memset(&id, 0, sizeof id);
    rich_build(&c, &id);
    memprof_reader_t *r = tk_open(c.data, c.len);
    mp_analysis_t a;
    cr_assert_eq(mp_analysis_run(&a, r), 0, "%s", memprof_reader_error(r));
    cr_assert_gt(a.nmaps, 2);
    mp_amount_t anon = {0, 0}, files = {0, 0}, stacks = {0, 0}, heap = {0, 0};
    for (uint64_t i = 0; i < a.nmaps; i++) {
        const mp_mapping_t *m = &a.maps[i];
        cr_assert(m->size > 0 && m->size <= UINT64_MAX - m->addr, "mapping %llu", (unsigned long long)i);
        if (i + 1 < a.nmaps)
            cr_assert_leq(m->addr + m->size, a.maps[i + 1].addr, "mapping %llu overlaps", (unsigned long long)i);
        mp_amount_t *t = m->file ? &files : &anon;
        t->bytes += m->size;
        t->count += !m->frag;
    }
    for (uint64_t i = 0; i < a.map_cap; i++)
        if (a.map[i].addr)
            heap.bytes += a.map[i].size, heap.count++;
    for (uint32_t i = 0; i < a.nst; i++)
        stacks.bytes += a.st[i].cur.bytes, stacks.count += a.st[i].cur.count;
    ASSERT_AMOUNT(a.live, stacks.bytes, stacks.count);
    ASSERT_AMOUNT(a.live, heap.bytes + anon.bytes, heap.count + anon.count);
    ASSERT_AMOUNT(a.files_live, files.bytes, files.count);
    cr_assert_gt(files.bytes, 0);
    uint64_t count = 0;
    for (unsigned k = 0; k < MEMPROF_A_COUNT; k++)
        count += a.by_allocator[k].count;
    cr_assert_eq(count, a.allocated.count);
    cr_assert_eq(a.allocated.count, c.allocs);
    cr_assert_eq(a.frees, c.frees);
    /* sizes and threads see every allocation too, file mappings included */
    mp_amount_t sizes = {0, 0}, threads = {0, 0}, by_stack = {0, 0};
    for (unsigned b = 0; b < MP_SIZE_BUCKETS; b++)
        sizes.bytes += a.sizes[b].bytes, sizes.count += a.sizes[b].count;
    for (uint32_t t = 0; t <= a.nthreads; t++)
        threads.bytes += a.thr[t].total.bytes, threads.count += a.thr[t].total.count;
    for (uint32_t i = 0; i < a.nst; i++)
        by_stack.bytes += a.st[i].total.bytes, by_stack.count += a.st[i].total.count;
    ASSERT_AMOUNT(sizes, a.allocated.bytes, a.allocated.count);
    ASSERT_AMOUNT(threads, a.allocated.bytes, a.allocated.count);
    ASSERT_AMOUNT(by_stack, a.allocated.bytes - a.files_total.bytes, a.allocated.count - a.files_total.count);
    mp_analysis_free(&a);
    memprof_reader_close(r);
    tk_close(&c);
}

/* ---- filters, temporary allocations, sizes, threads, memory over time ---- */

static void run_opts(run_t *x, const mp_analysis_opts_t *o)
{
    tk_finish(&x->c);
    x->r = tk_open(x->c.data, x->c.len);
    int rc = mp_analysis_run_opts(&x->a, x->r, o);
    cr_assert_eq(rc, 0, "analysis: %d (%s)", rc, memprof_reader_error(x->r));
}

Test(filters, per_thread_figures_unfiltered)
{
    run_t x;
    begin(&x.c);
    peak_then_lower_high(&x.c);
    run(&x);
    ASSERT_AMOUNT(x.a.thr[T1].at_peak, 400, 2); /* peak 600 at event 2: T1 holds 100 + 300 */
    ASSERT_AMOUNT(x.a.thr[T2].at_peak, 200, 1);
    ASSERT_AMOUNT(x.a.thr[T1].at_end, 150, 1);
    ASSERT_AMOUNT(x.a.thr[T2].at_end, 250, 1);
    ASSERT_AMOUNT(x.a.thr[T1].total, 550, 3);
    ASSERT_AMOUNT(x.a.thr[T2].total, 450, 2);
    done(&x);
}

Test(filters, one_thread)
{
    run_t x;
    begin(&x.c);
    peak_then_lower_high(&x.c);
    mp_analysis_opts_t o = {.thread = T1};
    run_opts(&x, &o);
    mp_analysis_t *a = &x.a;
    ASSERT_AMOUNT(a->allocated, 550, 3);
    ASSERT_AMOUNT(a->peak, 400, 2);
    cr_assert_eq(a->peak_index, 1);
    ASSERT_AMOUNT(a->live, 150, 1);
    cr_assert_eq(a->frees, 2, "T2's block freed is not counted: %llu", (unsigned long long)a->frees);
    ASSERT_AMOUNT(mp_analysis_stack_peak(a, 1), 100, 1);
    ASSERT_AMOUNT(mp_analysis_stack_peak(a, 2), 300, 1);
    ASSERT_AMOUNT(mp_analysis_stack_peak(a, 3), 0, 0);
    ASSERT_AMOUNT(a->by_allocator[MEMPROF_A_CALLOC], 0, 0);
    ASSERT_AMOUNT(a->thr[T2].total, 0, 0);
    done(&x);
}

Test(filters, time_range)
{
    run_t x;
    begin(&x.c);
    peak_then_lower_high(&x.c);
    mp_analysis_opts_t o = {.from_us = 700, .to_us = 800};
    run_opts(&x, &o);
    mp_analysis_t *a = &x.a;
    ASSERT_AMOUNT(a->allocated, 600, 3); /* 200 at 700, 250 and 150 at 800 */
    ASSERT_AMOUNT(a->peak, 450, 2);
    ASSERT_AMOUNT(a->live, 400, 2);
    cr_assert_eq(a->frees, 1);
    cr_assert_eq(a->unmatched_frees, 0, "frees of blocks made before the range are known");
    ASSERT_AMOUNT(mp_analysis_stack_peak(a, 1), 250, 1);
    ASSERT_AMOUNT(mp_analysis_stack_peak(a, 3), 200, 1);
    done(&x);
    /* up to a time only */
    begin(&x.c);
    peak_then_lower_high(&x.c);
    o = (mp_analysis_opts_t){.to_us = 699};
    run_opts(&x, &o);
    ASSERT_AMOUNT(x.a.allocated, 400, 2);
    ASSERT_AMOUNT(x.a.peak, 400, 2);
    ASSERT_AMOUNT(x.a.live, 0, 0); /* both freed later, out of the range: still their frees */
    cr_assert_eq(x.a.frees, 2);
    done(&x);
}

static void temporaries(tk_capture_t *c)
{
    tk_alloc(c, T1, MEMPROF_A_MALLOC, 0x1000, 16, 1);
    tk_free(c, 0, MEMPROF_D_FREE, 0x1000);             /* freed before T1's next: temporary */
    tk_alloc(c, T1, MEMPROF_A_MALLOC, 0x2000, 32, 2);
    tk_alloc(c, T1, MEMPROF_A_MALLOC, 0x3000, 64, 3);
    tk_free(c, 0, MEMPROF_D_FREE, 0x2000);             /* one T1 allocation since: temporary at 2 */
    tk_alloc(c, T2, MEMPROF_A_MALLOC, 0x4000, 8, 1);
    tk_free(c, 0, MEMPROF_D_FREE, 0x3000);             /* only T2 allocated since: temporary */
    tk_alloc(c, T1, MEMPROF_A_MALLOC, 0x5000, 10, 1);
    tk_free(c, T1, MEMPROF_D_REALLOC, 0x5000);         /* moved by realloc: not the end of it */
    tk_alloc(c, T1, MEMPROF_A_REALLOC, 0x6000, 20, 1);
    tk_free(c, 0, MEMPROF_D_FREE, 0x6000);             /* temporary */
}

Test(filters, temporary_allocations)
{
    run_t x;
    begin(&x.c);
    temporaries(&x.c);
    run(&x);
    ASSERT_AMOUNT(x.a.temporary, 100, 3);
    ASSERT_AMOUNT(x.a.st[1].temp, 36, 2);
    ASSERT_AMOUNT(x.a.st[2].temp, 0, 0);
    ASSERT_AMOUNT(x.a.st[3].temp, 64, 1);
    ASSERT_AMOUNT(x.a.thr[T1].temp, 100, 3);
    done(&x);
    begin(&x.c);
    temporaries(&x.c);
    mp_analysis_opts_t o = {.temp_threshold = 2};
    run_opts(&x, &o);
    ASSERT_AMOUNT(x.a.temporary, 132, 4);
    ASSERT_AMOUNT(x.a.st[2].temp, 32, 1);
    done(&x);
}

Test(filters, sizes_by_power_of_two)
{
    cr_assert_eq(mp_size_bucket(0), 0);
    cr_assert_eq(mp_size_bucket(1), 1);
    cr_assert_eq(mp_size_bucket(3), 2);
    cr_assert_eq(mp_size_bucket(4), 3);
    cr_assert_eq(mp_size_bucket(1024), 11);
    cr_assert_eq(mp_size_bucket(UINT64_MAX), 64);
    run_t x;
    begin(&x.c);
    temporaries(&x.c);
    run(&x);
    ASSERT_AMOUNT(x.a.sizes[4], 18, 2); /* 8, 10 */
    ASSERT_AMOUNT(x.a.sizes[5], 36, 2); /* 16, 20 */
    ASSERT_AMOUNT(x.a.sizes[6], 32, 1);
    ASSERT_AMOUNT(x.a.sizes[7], 64, 1);
    uint64_t n = 0;
    for (unsigned b = 0; b < MP_SIZE_BUCKETS; b++)
        n += x.a.sizes[b].count;
    cr_assert_eq(n, x.a.allocated.count);
    done(&x);
}

/* 20,000 samples: the series is halved twice (8192 points of 1 sample,
 * then of 2, then of 4) and ends with 5,000 points, each the largest of
 * its samples. */
Test(filters, memory_over_time_stays_bounded, .timeout = 60)
{
    run_t x;
    tk_begin(&x.c, 4096);
    tk_thread_new(&x.c, 100);
    const uint64_t k = 20000;
    for (uint64_t i = 0; i < k; i++) {
        tk_alloc(&x.c, T1, MEMPROF_A_MALLOC, 0x1000 + i * 16, 1, 0);
        tk_time(&x.c, (i + 1) * 10, i);
    }
    run(&x);
    mp_analysis_t *a = &x.a;
    cr_assert_eq(a->nseries, 5000);
    cr_assert_eq(a->series_stride, 4);
    cr_assert(a->series[0].time_us == 10 && a->series[0].heap == 4 && a->series[0].rss_kib == 3);
    mp_point_t last = a->series[a->nseries - 1];
    cr_assert(last.time_us == 199970 && last.heap == 20000 && last.rss_kib == 19999, "last {%llu, %llu, %llu}",
              (unsigned long long)last.time_us, (unsigned long long)last.heap, (unsigned long long)last.rss_kib);
    for (uint32_t i = 1; i < a->nseries; i++)
        cr_assert_lt(a->series[i - 1].time_us, a->series[i].time_us);
    done(&x);
}

/* ---- sites and intervals ---- */

/* Buckets start as long as the capture's sampling interval allows: the
 * test kit's 10 ms make them 128 us << 7. */
#define BK (128 * 128)

/* The amount of interval (stack, thread, a, f), or {0, 0}. */
static mp_amount_t interval(const mp_analysis_t *a, uint32_t stack, uint32_t thread, uint32_t ab, uint32_t f)
{
    uint64_t slots, us;
    uint32_t nb;
    const mp_interval_t *t = mp_analysis_intervals(a, &slots, &nb, &us);
    mp_amount_t sum = {0, 0};
    for (uint64_t i = 0; i < slots; i++) {
        if (t[i].site == UINT32_MAX)
            continue;
        const mp_site_t *s = &a->sites[t[i].site];
        if (s->stack == stack && s->thread == thread && t[i].a == ab && t[i].f == f)
            sum.bytes += t[i].amount.bytes, sum.count += t[i].amount.count;
    }
    return sum;
}

static uint64_t interval_count(const mp_analysis_t *a)
{
    uint64_t slots, us, n = 0;
    uint32_t nb;
    const mp_interval_t *t = mp_analysis_intervals(a, &slots, &nb, &us);
    for (uint64_t i = 0; i < slots; i++) {
        if (t[i].site == UINT32_MAX)
            continue;
        n++;
        const mp_site_t *s = &a->sites[t[i].site];
        cr_log_info("interval: stack %u thread %u a %u f %#x: %llu bytes in %llu", s->stack, s->thread, t[i].a,
                    t[i].f, (unsigned long long)t[i].amount.bytes, (unsigned long long)t[i].amount.count);
    }
    return n;
}

Test(sites, one_per_stack_thread_and_allocator)
{
    run_t x;
    begin(&x.c);
    tk_alloc(&x.c, T1, MEMPROF_A_MALLOC, 0x1000, 10, 1);
    tk_alloc(&x.c, T1, MEMPROF_A_MALLOC, 0x2000, 20, 1);
    tk_alloc(&x.c, T2, MEMPROF_A_MALLOC, 0x3000, 40, 1);
    tk_alloc(&x.c, T1, MEMPROF_A_CALLOC, 0x4000, 80, 1);
    tk_alloc(&x.c, T1, MEMPROF_A_MALLOC, 0x5000, 160, 2);
    tk_free(&x.c, 0, MEMPROF_D_FREE, 0x2000);
    run(&x);
    cr_assert_eq(x.a.nsites, 4);
    uint64_t want[4][5] = {{1, T1, MEMPROF_A_MALLOC, 10, 1},
                           {1, T2, MEMPROF_A_MALLOC, 40, 1},
                           {1, T1, MEMPROF_A_CALLOC, 80, 1},
                           {2, T1, MEMPROF_A_MALLOC, 160, 1}};
    for (int i = 0; i < 4; i++) {
        const mp_site_t *s = &x.a.sites[i];
        cr_assert(s->stack == want[i][0] && s->thread == want[i][1] && s->kind == want[i][2], "site %d", i);
        ASSERT_AMOUNT(s->s.cur, want[i][3], want[i][4]);
    }
    ASSERT_AMOUNT(x.a.sites[0].s.total, 30, 2);
    ASSERT_AMOUNT(x.a.st[1].cur, 130, 3);
    ASSERT_AMOUNT(x.a.thr[T1].cur, 250, 3);
    ASSERT_AMOUNT(x.a.thr[T2].at_peak, 40, 1);
    done(&x);
}

/* Buckets of BK us, each with a snapshot at its highest heap. A (stack 1)
 * lives from bucket 0 to 10; B (stack 2) is made and freed in bucket 0,
 * but after the bucket's highest point: live at its snapshot, and
 * temporary; C (stack 3, thread 2) is made in 10 (after its snapshot) and
 * freed in 20, after the script ended (temporary too, its thread making
 * nothing else, and leaked); D (stack 1) is made in 20, after the end and
 * after the last snapshot: live at none, and not leaked. */
static void lifetimes(tk_capture_t *c)
{
    tk_time(c, 0, 1000);
    tk_alloc(c, T1, MEMPROF_A_MALLOC, 0x1000, 100, 1);
    tk_alloc(c, T1, MEMPROF_A_MALLOC, 0x2000, 50, 2);
    tk_free(c, T1, MEMPROF_D_FREE, 0x2000);
    tk_time(c, 10 * BK, 3000);
    tk_free(c, T1, MEMPROF_D_FREE, 0x1000);
    tk_alloc(c, T2, MEMPROF_A_MALLOC, 0x3000, 30, 3);
    tk_mark(c, MEMPROF_M_SCRIPT_END, 10 * BK + 5);
    tk_time(c, 20 * BK + 100, 2000);
    tk_free(c, T2, MEMPROF_D_FREE, 0x3000);
    tk_alloc(c, T1, MEMPROF_A_MALLOC, 0x4000, 7, 1);
}

Test(sites, intervals_by_bucket)
{
    run_t x;
    begin(&x.c);
    lifetimes(&x.c);
    mp_analysis_opts_t o = {.intervals = 1};
    run_opts(&x, &o);
    uint64_t slots, us;
    uint32_t nb;
    mp_analysis_intervals(&x.a, &slots, &nb, &us);
    cr_assert_eq(nb, 21);
    cr_assert_eq(us, BK);
    /* live at the snapshots of buckets [a, f) */
    ASSERT_AMOUNT(interval(&x.a, 1, T1, 0, 11), 100, 1); /* bucket 10's snapshot is its start */
    ASSERT_AMOUNT(interval(&x.a, 2, T1, 0, 1), 50, 1);
    ASSERT_AMOUNT(interval(&x.a, 3, T2, 11, 21), 30, 1); /* 11..20 start with it live */
    /* by the bucket they were made in */
    ASSERT_AMOUNT(interval(&x.a, 2, T1, 0, MP_IVAL_TEMP), 50, 1);
    ASSERT_AMOUNT(interval(&x.a, 3, T2, 10, MP_IVAL_TEMP), 30, 1);
    ASSERT_AMOUNT(interval(&x.a, 3, T2, 10, MP_IVAL_LEAK), 30, 1);
    cr_assert_eq(interval_count(&x.a), 6);
    /* the highest heap in each bucket; buckets with no event start where the last ended */
    uint64_t heap[21] = {150, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100,
                         30, 30, 30, 30, 30, 30, 30, 30, 30, 30};
    for (int b = 0; b < 21; b++)
        cr_assert_eq(x.a.ival_heap[b], heap[b], "bucket %d: %llu", b, (unsigned long long)x.a.ival_heap[b]);
    cr_assert_eq(x.a.ival_snap[0], 2); /* after B was made */
    cr_assert_eq(x.a.ival_rss_kib[0], 1000);
    cr_assert_eq(x.a.ival_rss_kib[10], 3000);
    cr_assert_eq(x.a.ival_rss_kib[5], 0);
    done(&x);
}

/* The snapshot of a range is its highest point, even inside a bucket: a
 * block made and freed within one bucket, at its high, is seen there. */
Test(sites, a_high_inside_a_bucket_is_its_snapshot)
{
    run_t x;
    begin(&x.c);
    tk_time(&x.c, 0, 0);
    tk_alloc(&x.c, T1, MEMPROF_A_MALLOC, 0x1000, 10, 1);
    tk_time(&x.c, 5 * BK, 0);
    tk_alloc(&x.c, T1, MEMPROF_A_MALLOC, 0x2000, 1000, 2); /* the high of bucket 5 */
    tk_free(&x.c, T1, MEMPROF_D_FREE, 0x2000);
    tk_alloc(&x.c, T1, MEMPROF_A_MALLOC, 0x3000, 500, 3);  /* lower than 1010: not seen in 5 */
    tk_free(&x.c, T1, MEMPROF_D_FREE, 0x3000);
    tk_time(&x.c, 6 * BK, 0);
    mp_analysis_opts_t o = {.intervals = 1};
    run_opts(&x, &o);
    cr_assert_eq(x.a.ival_heap[5], 1010);
    ASSERT_AMOUNT(interval(&x.a, 2, T1, 5, 6), 1000, 1);
    ASSERT_AMOUNT(interval(&x.a, 1, T1, 0, MP_IVAL_NEVER), 10, 1);
    ASSERT_AMOUNT(interval(&x.a, 1, T1, 0, MP_IVAL_LEAK), 10, 1); /* no script end: at exit */
    ASSERT_AMOUNT(interval(&x.a, 2, T1, 5, MP_IVAL_TEMP), 1000, 1);
    ASSERT_AMOUNT(interval(&x.a, 3, T1, 5, MP_IVAL_TEMP), 500, 1);
    cr_assert_eq(interval_count(&x.a), 5);
    done(&x);
}

/* Past MP_IVAL_BUCKETS buckets, buckets double: two merge into one whose
 * snapshot is the higher of theirs, and intervals follow. */
Test(sites, intervals_when_buckets_double)
{
    run_t x;
    begin(&x.c);
    tk_time(&x.c, 0, 0);
    tk_alloc(&x.c, T1, MEMPROF_A_MALLOC, 0x1000, 100, 1);
    tk_time(&x.c, 4 * BK, 0);
    tk_alloc(&x.c, T1, MEMPROF_A_MALLOC, 0x2000, 8, 2);  /* the high of bucket 4 */
    tk_time(&x.c, 5 * BK, 0);
    tk_free(&x.c, T1, MEMPROF_D_FREE, 0x2000);           /* live at 4 and 5: (4, 6), then (2, 3) */
    tk_time(&x.c, 10 * BK, 0);
    tk_free(&x.c, T1, MEMPROF_D_FREE, 0x1000);           /* (0, 11), then (0, 6) */
    tk_time(&x.c, 600 * BK, 0);                          /* bucket 600: buckets twice as long */
    tk_alloc(&x.c, T1, MEMPROF_A_MALLOC, 0x3000, 1, 3);
    mp_analysis_opts_t o = {.intervals = 1};
    run_opts(&x, &o);
    uint64_t slots, us;
    uint32_t nb;
    mp_analysis_intervals(&x.a, &slots, &nb, &us);
    cr_assert_eq(us, 2 * BK);
    cr_assert_eq(nb, 301);
    ASSERT_AMOUNT(interval(&x.a, 1, T1, 0, 6), 100, 1);
    ASSERT_AMOUNT(interval(&x.a, 2, T1, 2, 3), 8, 1);
    ASSERT_AMOUNT(interval(&x.a, 2, T1, 2, MP_IVAL_TEMP), 8, 1);
    ASSERT_AMOUNT(interval(&x.a, 3, T1, 300, MP_IVAL_NEVER), 1, 1);
    ASSERT_AMOUNT(interval(&x.a, 3, T1, 300, MP_IVAL_LEAK), 1, 1);
    cr_assert_eq(interval_count(&x.a), 5);
    cr_assert_eq(x.a.ival_heap[2], 108); /* buckets 4 and 5 merged */
    cr_assert_eq(x.a.ival_heap[299], 0);
    cr_assert_eq(x.a.ival_heap[300], 1);
    done(&x);
}

/* A failed realloc gives the block back: its life goes on from then, in a
 * second interval that does not overlap the first. */
Test(sites, restored_block_continues_its_life)
{
    run_t x;
    begin(&x.c);
    tk_time(&x.c, 0, 0);
    tk_alloc(&x.c, T1, MEMPROF_A_MALLOC, 0x1000, 64, 1);
    tk_time(&x.c, 3 * BK, 0);
    tk_free(&x.c, T1, MEMPROF_D_REALLOC, 0x1000);
    tk_restore(&x.c, T1, 0x1000);
    tk_time(&x.c, 7 * BK, 0);
    tk_free(&x.c, T1, MEMPROF_D_FREE, 0x1000);
    mp_analysis_opts_t o = {.intervals = 1};
    run_opts(&x, &o);
    ASSERT_AMOUNT(interval(&x.a, 1, T1, 0, 4), 64, 1);
    ASSERT_AMOUNT(interval(&x.a, 1, T1, 4, 8), 64, 1);
    ASSERT_AMOUNT(interval(&x.a, 1, T1, 3, MP_IVAL_TEMP), 64, 1); /* freed before its thread's next */
    cr_assert_eq(interval_count(&x.a), 3);
    done(&x);
}
