/* test_golden.c - the golden capture, tests/golden/basic.memprof: a small
 * capture made of synthetic records (so that it does not depend on the
 * host's libraries or Python), on which tests/integration/test_golden.py
 * checks every report's text and JSON against files of expected output.
 *
 * This test builds the capture again and checks that the checked-in file
 * is exactly what the kit writes. To make it anew (after a format change):
 *   MEMPROF_WRITE_GOLDEN=tests/golden/basic.memprof build/tests/unit/test_golden
 *
 * What it holds, with times in ms and heap bytes live after each step:
 *   threads 1 (tid 100) and 2 (tid 101, named "worker")
 *   stacks  main (app.py:5) > load (:12) > parse (:22) > libgold.so+0x1234
 *           run (worker.py:3)
 *   0   1000 B at load; 4096 B at parse; 64 B at parse (calloc) freed at once
 *  20   2048 B at run and a 64 KiB mmap at run, on thread 2; 300 B at the
 *       native frame; load's block realloc'ed to 2000 B
 *  40   peak: 4096 + 2048 + 65536 + 300 + 2000 = 73,980 B in 5 blocks;
 *       the mapping unmapped, load's block freed; 128 B at main
 *  50   the script ends: leaked 4096 + 2048 + 300 + 128 = 6,572 B in 4
 *  55   main's 128 B freed: at exit 6,444 B in 3 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testkit.h"

#ifndef MP_GOLDEN_DIR
#error "MP_GOLDEN_DIR: the folder of the golden files"
#endif

static void build(tk_capture_t *c)
{
    tk_begin(c, 256);
    uint32_t app = tk_string(c, "app.py"), wrk = tk_string(c, "worker.py");
    uint32_t cmain = tk_code(c, 0, app, tk_string(c, "main"), 1);
    uint32_t cload = tk_code(c, 0, app, tk_string(c, "load"), 10);
    uint32_t cparse = tk_code(c, 0, app, tk_string(c, "parse"), 20);
    uint32_t crun = tk_code(c, 0, wrk, tk_string(c, "run"), 1);
    static const uint64_t segs[] = {0, 0x10000};
    uint32_t lib = tk_module(c, 0x7f0000000000ull, tk_string(c, "/nonexistent/libgold.so"), NULL, 0, segs, 1);
    uint32_t nmain = tk_node(c, 0, cmain, 5);
    uint32_t nload = tk_node(c, nmain, cload, 12);
    uint32_t nparse = tk_node(c, nload, cparse, 22);
    uint32_t nnat = tk_node_native(c, nparse, lib, 0x1234);
    uint32_t nrun = tk_node(c, 0, crun, 3);
    uint32_t t1 = tk_thread_new(c, 100), t2 = tk_thread_new(c, 101);
    tk_thread_name(c, t2, tk_string(c, "worker"));

    tk_time(c, 0, 1000);
    tk_alloc(c, t1, MEMPROF_A_MALLOC, 0x1000, 1000, nload);
    tk_alloc(c, t1, MEMPROF_A_MALLOC, 0x2000, 4096, nparse);
    tk_alloc(c, t1, MEMPROF_A_CALLOC, 0x3000, 64, nparse);
    tk_free(c, t1, MEMPROF_D_FREE, 0x3000);
    tk_time(c, 20000, 2000);
    tk_alloc(c, t2, MEMPROF_A_MALLOC, 0x4000, 2048, nrun);
    tk_alloc(c, t2, MEMPROF_A_MMAP, 0x100000, 65536, nrun);
    tk_alloc(c, t1, MEMPROF_A_MALLOC, 0x5000, 300, nnat);
    tk_free(c, t1, MEMPROF_D_REALLOC, 0x1000);
    tk_alloc(c, t1, MEMPROF_A_REALLOC, 0x6000, 2000, nload);
    tk_time(c, 40000, 3000);
    tk_free_range(c, 0, MEMPROF_D_MUNMAP, 0x100000, 65536);
    tk_free(c, t1, MEMPROF_D_FREE, 0x6000);
    tk_alloc(c, t1, MEMPROF_A_MALLOC, 0x7000, 128, nmain);
    tk_mark(c, MEMPROF_M_SCRIPT_END, 50000);
    tk_time(c, 55000, 2500);
    tk_free(c, t1, MEMPROF_D_FREE, 0x7000);
    tk_finish(c);
}

Test(golden, checked_in_capture_is_what_the_kit_writes)
{
    tk_capture_t c;
    build(&c);
    const char *write = getenv("MEMPROF_WRITE_GOLDEN");
    const char *path = write && *write ? write : MP_GOLDEN_DIR "/basic.memprof";
    if (write && *write) {
        FILE *f = fopen(path, "wb");
        cr_assert_not_null(f, "cannot write %s", path);
        cr_assert_eq(fwrite(c.data, 1, c.len, f), c.len);
        cr_assert_eq(fclose(f), 0);
    }
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s is missing", path);
    uint8_t *got = malloc(c.len + 1);
    size_t n = fread(got, 1, c.len + 1, f);
    fclose(f);
    cr_assert(n == c.len && !memcmp(got, c.data, c.len),
              "%s is not what the kit writes now: make it anew (see test_golden.c) and check the expected outputs",
              path);
    free(got);
    tk_close(&c);
}
