/* check.c - `memprof check FILE --max-peak SIZE --max-leaked SIZE
 * --max-allocations N`: a pass/fail gate for CI. Exit 0 when the capture
 * is within every limit given, 1 when it goes over one (with the stacks that
 * hold or made the most), 2 when the check could not be made. */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis.h"
#include "cli_common.h"
#include "report.h"
#include "report_cli.h"

static const char usage[] =
    "usage: memprof check [options] FILE\n"
    "\n"
    "Checks a capture against limits: exit status 0 when it is within all of\n"
    "them, 1 when it goes over one (the locations that hold or made the most\n"
    "are printed), 2 when the capture cannot be read or the options are wrong.\n"
    "\n"
    "limits (at least one):\n"
    "  --max-peak SIZE         heap at its high-water mark\n"
    "  --max-leaked SIZE       live when the script ended (as memprof leaks counts)\n"
    "  --max-allocations N     allocations made\n"
    "  SIZE is bytes, or a number with B, KB, MB, GB, KiB, MiB, GiB (every unit\n"
    "  a power of 1024: 1KB = 1KiB = 1024 bytes): 200MB, 1.5GiB, 4096\n"
    "\n"
    "options:\n"
    "  --top N      locations to print for each limit exceeded (default 5)\n"
    "  --json       machine-readable output on stdout (schema: docs/reports.md)\n"
    "  --from T     count only allocations made from T seconds after the start\n"
    "  --to T       ... and up to T seconds (1.5, 1.5s, 250ms)\n"
    "  --thread N   count only thread N's allocations (numbered as in stats)\n"
    "  -h, --help   show this help\n";

enum { PEAK, LEAKED, ALLOCATIONS, NLIMITS };

static const struct {
    const char *option, *name, *title;
    mp_when_t when;
    int by_count;
} limits[NLIMITS] = {
    [PEAK] = {"--max-peak", "peak", "peak heap", MP_AT_PEAK, 0},
    [LEAKED] = {"--max-leaked", "leaked", "leaked", MP_AT_END, 0},
    [ALLOCATIONS] = {"--max-allocations", "allocations", "allocations", MP_TOTAL, 1},
};

typedef struct {
    int set[NLIMITS];
    uint64_t max[NLIMITS];
} check_opts_t;

static int check_option(mp_report_cli_t *c, int argc, char **argv, int i)
{
    check_opts_t *o = c->ctx;
    for (int k = 0; k < NLIMITS; k++) {
        if (!mp_report_cli_is(argv[i], limits[k].option))
            continue;
        int took;
        const char *v = mp_report_cli_value(c, argc, argv, i, &took);
        if (k == ALLOCATIONS) {
            char *end;
            errno = 0;
            unsigned long long n = strtoull(v, &end, 10);
            if (errno || *end || !*v || *v < '0' || *v > '9')
                mp_cli_die(c->prog, "--max-allocations needs a whole number of allocations, not '%s'", v);
            o->max[k] = n;
        } else if (mp_parse_size(v, &o->max[k])) {
            mp_cli_die(c->prog, "%s needs a size (4096, 512KB, 200MB, 1.5GiB), not '%s'", limits[k].option, v);
        }
        o->set[k] = 1;
        return took;
    }
    return 0;
}

static uint64_t value_of(const mp_analysis_t *a, int k)
{
    return k == PEAK ? a->peak.bytes : k == LEAKED ? a->at_end.bytes : a->allocated.count;
}

static const char *show(int k, uint64_t v, char *buf, size_t len)
{
    return k == ALLOCATIONS ? mp_group_digits(v, buf, len) : mp_human_bytes(v, buf, len);
}

static void print_biggest(const mp_analysis_t *a, int k, size_t top)
{
    mp_location_t *locs;
    size_t n;
    if (mp_top_locations_by(a, limits[k].when, limits[k].by_count, top, &locs, &n))
        return;
    printf("\n%s: the locations %s\n", limits[k].title,
           k == PEAK ? "holding the most at the peak"
                     : k == LEAKED ? "holding the most when the script ended" : "that allocated the most often");
    if (n == 0)
        printf("  (none)\n");
    for (size_t i = 0; i < n; i++)
        mp_report_cli_print_location(a, i + 1, &locs[i], limits[k].by_count);
    free(locs);
}

static cJSON *biggest_json(const mp_analysis_t *a, int k, size_t top)
{
    cJSON *arr = cJSON_CreateArray();
    mp_location_t *locs;
    size_t n;
    if (mp_top_locations_by(a, limits[k].when, limits[k].by_count, top, &locs, &n))
        return arr;
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(arr, mp_json_location(a, &locs[i]));
    free(locs);
    return arr;
}

int main(int argc, char **argv)
{
    check_opts_t o = {0};
    mp_report_cli_t c = {.prog = "memprof check", .usage = usage, .top = 5, .ctx = &o};
    mp_report_cli_parse(&c, argc, argv, check_option);
    if (!o.set[PEAK] && !o.set[LEAKED] && !o.set[ALLOCATIONS])
        mp_cli_die(c.prog, "no limit given: add --max-peak SIZE, --max-leaked SIZE or --max-allocations N");
    mp_analysis_t a;
    memprof_reader_t *r = mp_report_cli_run(&c, &a);
    int over[NLIMITS] = {0}, failed = 0;
    for (int k = 0; k < NLIMITS; k++)
        failed += over[k] = o.set[k] && value_of(&a, k) > o.max[k];
    if (c.json) {
        cJSON *root = cJSON_CreateObject();
        cJSON_AddItemToObject(root, "capture", mp_json_capture(r, c.path));
        cJSON_AddItemToObject(root, "filter", mp_report_cli_filter_json(&c));
        cJSON_AddBoolToObject(root, "passed", !failed);
        cJSON *checks = cJSON_AddArrayToObject(root, "checks");
        for (int k = 0; k < NLIMITS; k++) {
            if (!o.set[k])
                continue;
            cJSON *x = cJSON_CreateObject();
            cJSON_AddStringToObject(x, "name", limits[k].name);
            cJSON_AddStringToObject(x, "unit", k == ALLOCATIONS ? "allocations" : "bytes");
            cJSON_AddNumberToObject(x, "value", (double)value_of(&a, k));
            cJSON_AddNumberToObject(x, "limit", (double)o.max[k]);
            cJSON_AddBoolToObject(x, "passed", !over[k]);
            if (over[k])
                cJSON_AddItemToObject(x, "biggest", biggest_json(&a, k, c.top));
            cJSON_AddItemToArray(checks, x);
        }
        mp_report_cli_print_json(root);
    } else {
        char f[64];
        printf("memprof check %s%s\n", c.path, mp_report_cli_filter_text(&c, f, sizeof f));
        for (int k = 0; k < NLIMITS; k++) {
            if (!o.set[k])
                continue;
            char v[32], l[32], d[32];
            uint64_t val = value_of(&a, k);
            printf("  %-12s %12s   limit %12s   ", limits[k].title, show(k, val, v, sizeof v),
                   show(k, o.max[k], l, sizeof l));
            if (over[k])
                printf("%sOVER by %s%s\n", mp_bold(&c), show(k, val - o.max[k], d, sizeof d), mp_reset(&c));
            else
                printf("ok\n");
        }
        if (failed) {
            printf("%sFAILED%s: %d limit%s exceeded\n", mp_bold(&c), mp_reset(&c), failed, failed > 1 ? "s" : "");
            for (int k = 0; k < NLIMITS; k++)
                if (over[k])
                    print_biggest(&a, k, c.top);
        } else {
            printf("passed\n");
        }
    }
    fflush(stdout);
    mp_report_cli_done(&c, &a, r);
    return failed ? 1 : 0;
}
