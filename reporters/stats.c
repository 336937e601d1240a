/* stats.c - `memprof stats FILE`: totals, the peak, temporary allocations,
 * the allocation rate, allocation sizes by power of two, allocators,
 * threads, and the locations that allocated the most bytes and the most
 * times over the whole run. */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis.h"
#include "memprof/format.h"
#include "report.h"
#include "report_cli.h"

static const char usage[] =
    "usage: memprof stats [options] FILE\n"
    "\n"
    "Statistics of a capture: totals, the peak heap, temporary allocations,\n"
    "the allocation rate, allocation sizes, allocators, threads, and the\n"
    "locations that allocated the most bytes and the most times.\n"
    "\n"
    "options:\n"
    "  --json          machine-readable output (schema: docs/reports.md)\n"
    "  --top N         locations to list (default 10)\n"
    "  --from T        count only allocations made from T seconds after the start\n"
    "  --to T          ... and up to T seconds (1.5, 1.5s, 250ms)\n"
    "  --thread N      count only thread N's allocations (numbers as listed here)\n"
    "  --temporary-threshold N\n"
    "                  temporary: freed before its thread made N more allocations\n"
    "                  (default 1: before its next)\n"
    "  -h, --help      show this help\n";

static double run_seconds(const mp_analysis_t *a)
{
    const memprof_info_t *in = memprof_reader_info(a->r);
    if (in->has_trailer && in->end_monotonic_ns > in->start_monotonic_ns)
        return (double)(in->end_monotonic_ns - in->start_monotonic_ns) / 1e9;
    return (double)a->last_time_us / 1e6;
}

/* Sizes of bucket b: [lo, hi]. */
static void bucket_range(unsigned b, uint64_t *lo, uint64_t *hi)
{
    *lo = b ? 1ull << (b - 1) : 0;
    *hi = b == 0 ? 0 : b == 64 ? UINT64_MAX : (1ull << b) - 1;
}

static cJSON *tops(const mp_analysis_t *a, int by_count, size_t top)
{
    cJSON *arr = cJSON_CreateArray();
    mp_location_t *locs;
    size_t n;
    if (mp_top_locations_by(a, MP_TOTAL, by_count, top, &locs, &n) == 0) {
        for (size_t i = 0; i < n; i++)
            cJSON_AddItemToArray(arr, mp_json_location(a, &locs[i]));
        free(locs);
    }
    return arr;
}

static void print_json(const mp_report_cli_t *c, const mp_analysis_t *a)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddItemToObject(root, "capture", mp_json_capture(a->r, c->path));
    cJSON_AddItemToObject(root, "filter", mp_report_cli_filter_json(c));
    cJSON *tot = cJSON_AddObjectToObject(root, "totals");
    cJSON_AddNumberToObject(tot, "allocations", (double)a->allocated.count);
    cJSON_AddNumberToObject(tot, "allocated_bytes", (double)a->allocated.bytes);
    cJSON_AddNumberToObject(tot, "frees", (double)a->frees);
    cJSON_AddNumberToObject(tot, "unmatched_frees", (double)a->unmatched_frees);
    cJSON *peak = mp_json_amount(a->peak);
    cJSON_AddNumberToObject(peak, "time_s", (double)a->peak_time_us / 1e6);
    cJSON_AddItemToObject(root, "peak", peak);
    cJSON *leaked = mp_json_amount(a->at_end);
    cJSON_AddBoolToObject(leaked, "script_end_marked", a->has_end);
    cJSON_AddItemToObject(root, "leaked", leaked);
    cJSON_AddItemToObject(root, "at_exit", mp_json_amount(a->live));
    cJSON *temp = mp_json_amount(a->temporary);
    cJSON_AddNumberToObject(temp, "threshold", a->opts.temp_threshold);
    cJSON_AddItemToObject(root, "temporary", temp);
    cJSON_AddNumberToObject(root, "rss_peak_bytes", (double)a->rss_peak_kib * 1024);
    double secs = run_seconds(a);
    cJSON *rate = cJSON_AddObjectToObject(root, "rate");
    cJSON_AddNumberToObject(rate, "duration_s", secs);
    cJSON_AddNumberToObject(rate, "allocations_per_s", secs > 0 ? (double)a->allocated.count / secs : 0);
    cJSON_AddNumberToObject(rate, "bytes_per_s", secs > 0 ? (double)a->allocated.bytes / secs : 0);
    cJSON *sizes = cJSON_AddArrayToObject(root, "sizes");
    for (unsigned b = 0; b < MP_SIZE_BUCKETS; b++) {
        if (!a->sizes[b].count)
            continue;
        uint64_t lo, hi;
        bucket_range(b, &lo, &hi);
        cJSON *o = mp_json_amount(a->sizes[b]);
        cJSON_AddNumberToObject(o, "min", (double)lo);
        cJSON_AddNumberToObject(o, "max", (double)hi);
        cJSON_AddItemToArray(sizes, o);
    }
    cJSON *alloc = cJSON_AddArrayToObject(root, "allocators");
    for (unsigned k = 0; k < MEMPROF_A_COUNT; k++) {
        if (!a->by_allocator[k].count)
            continue;
        cJSON *o = mp_json_amount(a->by_allocator[k]);
        cJSON_AddStringToObject(o, "allocator", mp_allocator_name(k));
        cJSON_AddItemToArray(alloc, o);
    }
    cJSON *thr = cJSON_AddArrayToObject(root, "threads");
    uint32_t nt = memprof_reader_thread_count(a->r);
    for (uint32_t t = 1; t <= nt && t <= a->nthreads; t++) {
        const mp_stackstat_t *s = &a->thr[t];
        if (!s->total.count)
            continue;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "thread", t);
        cJSON_AddNumberToObject(o, "tid", (double)memprof_reader_thread_tid(a->r, t));
        const char *name = memprof_reader_thread_name(a->r, t);
        if (name)
            cJSON_AddStringToObject(o, "name", name);
        else
            cJSON_AddNullToObject(o, "name");
        cJSON_AddItemToObject(o, "allocated", mp_json_amount(s->total));
        cJSON_AddItemToObject(o, "at_peak", mp_json_amount(s->at_peak));
        cJSON_AddItemToObject(o, "leaked", mp_json_amount(s->at_end));
        cJSON_AddItemToObject(o, "temporary", mp_json_amount(s->temp));
        cJSON_AddItemToArray(thr, o);
    }
    cJSON_AddItemToObject(root, "top_by_bytes", tops(a, 0, c->top));
    cJSON_AddItemToObject(root, "top_by_count", tops(a, 1, c->top));
    char *out = cJSON_PrintUnformatted(root);
    if (out)
        puts(out);
    free(out);
    cJSON_Delete(root);
}

static void print_top(const mp_report_cli_t *c, const mp_analysis_t *a, int by_count)
{
    mp_location_t *locs;
    size_t n;
    if (mp_top_locations_by(a, MP_TOTAL, by_count, c->top, &locs, &n))
        return;
    printf("\n%stop locations by %s%s\n", mp_bold(c), by_count ? "number of allocations" : "bytes allocated",
           mp_reset(c));
    for (size_t i = 0; i < n; i++) {
        char b[32], k[32];
        mp_srcframe_t f;
        uint32_t parent;
        mp_node_frame(a, locs[i].node, &f, &parent);
        printf("%3zu. %10s %14s  ", i + 1, mp_human_bytes(locs[i].amount.bytes, b, sizeof b),
               mp_group_digits(locs[i].amount.count, k, sizeof k));
        char where[512];
        if (f.native || f.line < 0)
            snprintf(where, sizeof where, "%s", f.function);
        else
            snprintf(where, sizeof where, "%s (%s:%d)", f.function,
                     strrchr(f.file, '/') ? strrchr(f.file, '/') + 1 : f.file, f.line);
        if (strlen(where) > 48) /* the line fits 80 columns */
            memcpy(where + 45, "...", 4);
        printf("%s\n", where);
    }
    if (!n)
        printf("  (none)\n");
    free(locs);
}

static void print_text(const mp_report_cli_t *c, const mp_analysis_t *a)
{
    char b1[32], b2[32], c1[32], fb[128];
    const memprof_info_t *in = memprof_reader_info(a->r);
    double secs = run_seconds(a);
    printf("%scapture%s   %s\n", mp_bold(c), mp_reset(c), c->path);
    printf("          pid %" PRIu64 ", ran %.2f s, %" PRIu64 " memory samples\n", in->pid, secs, a->samples);
    if (*mp_report_cli_filter_text(c, fb, sizeof fb))
        printf("filter    %s (only allocations made there count)\n", fb);
    printf("\n%stotals%s\n", mp_bold(c), mp_reset(c));
    printf("  allocations   %14s  %s\n", mp_group_digits(a->allocated.count, c1, sizeof c1),
           mp_human_bytes(a->allocated.bytes, b1, sizeof b1));
    printf("  frees         %14s\n", mp_group_digits(a->frees, c1, sizeof c1));
    printf("  temporary     %14s  %s  (freed within %u allocation%s)\n",
           mp_group_digits(a->temporary.count, c1, sizeof c1), mp_human_bytes(a->temporary.bytes, b1, sizeof b1),
           a->opts.temp_threshold, a->opts.temp_threshold == 1 ? "" : "s");
    printf("  peak heap     %14s  %s at %.3f s\n", mp_group_digits(a->peak.count, c1, sizeof c1),
           mp_human_bytes(a->peak.bytes, b1, sizeof b1), (double)a->peak_time_us / 1e6);
    printf("  leaked        %14s  %s%s\n", mp_group_digits(a->at_end.count, c1, sizeof c1),
           mp_human_bytes(a->at_end.bytes, b1, sizeof b1), a->has_end ? "" : "  (no script end mark: at exit)");
    printf("  at exit       %14s  %s\n", mp_group_digits(a->live.count, c1, sizeof c1),
           mp_human_bytes(a->live.bytes, b1, sizeof b1));
    if (a->rss_peak_kib)
        printf("  peak RSS      %14s  %s\n", "", mp_human_bytes(a->rss_peak_kib * 1024, b1, sizeof b1));
    if (secs > 0)
        printf("  rate          %14s  allocations/s, %s/s\n",
               mp_group_digits((uint64_t)((double)a->allocated.count / secs), c1, sizeof c1),
               mp_human_bytes((uint64_t)((double)a->allocated.bytes / secs), b1, sizeof b1));

    printf("\n%sallocation sizes%s\n", mp_bold(c), mp_reset(c));
    uint64_t most = 1;
    for (unsigned b = 0; b < MP_SIZE_BUCKETS; b++)
        most = a->sizes[b].count > most ? a->sizes[b].count : most;
    for (unsigned b = 0; b < MP_SIZE_BUCKETS; b++) {
        if (!a->sizes[b].count)
            continue;
        uint64_t lo, hi;
        bucket_range(b, &lo, &hi);
        char range[48];
        if (hi == lo)
            snprintf(range, sizeof range, "%s", mp_human_bytes(lo, b1, sizeof b1));
        else if (hi == UINT64_MAX)
            snprintf(range, sizeof range, "[%s, ...)", mp_human_bytes(lo, b1, sizeof b1));
        else
            snprintf(range, sizeof range, "[%s, %s)", mp_human_bytes(lo, b1, sizeof b1),
                     mp_human_bytes(hi + 1, b2, sizeof b2));
        int bar = (int)((a->sizes[b].count * 30 + most - 1) / most);
        printf("  %-21s %14s  %.*s\n", range, mp_group_digits(a->sizes[b].count, c1, sizeof c1), bar,
               "##############################");
    }

    printf("\n%sallocators%s\n", mp_bold(c), mp_reset(c));
    for (unsigned k = 0; k < MEMPROF_A_COUNT; k++)
        if (a->by_allocator[k].count)
            printf("  %-16s %14s  %s\n", mp_allocator_name(k), mp_group_digits(a->by_allocator[k].count, c1, sizeof c1),
                   mp_human_bytes(a->by_allocator[k].bytes, b1, sizeof b1));

    uint32_t nt = memprof_reader_thread_count(a->r), shown = 0;
    for (uint32_t t = 1; t <= nt && t <= a->nthreads; t++) {
        const mp_stackstat_t *s = &a->thr[t];
        if (!s->total.count)
            continue;
        if (!shown++)
            printf("\n%sthreads%s          allocations       bytes  at peak   leaked\n", mp_bold(c), mp_reset(c));
        const char *name = memprof_reader_thread_name(a->r, t);
        char label[32], p1[32], p2[32];
        snprintf(label, sizeof label, "%u %s", t, name ? name : t == 1 ? "(main)" : "");
        printf("  %-16.16s %12s %11s %8s %8s\n", label, mp_group_digits(s->total.count, c1, sizeof c1),
               mp_human_bytes(s->total.bytes, b1, sizeof b1), mp_human_bytes(s->at_peak.bytes, p1, sizeof p1),
               mp_human_bytes(s->at_end.bytes, p2, sizeof p2));
    }
    print_top(c, a, 0);
    print_top(c, a, 1);
}

int main(int argc, char **argv)
{
    mp_report_cli_t c = {.prog = "memprof stats", .usage = usage};
    mp_report_cli_parse(&c, argc, argv, mp_report_cli_temp_threshold);
    mp_analysis_t a;
    memprof_reader_t *r = mp_report_cli_run(&c, &a);
    if (c.json)
        print_json(&c, &a);
    else
        print_text(&c, &a);
    mp_report_cli_done(&c, &a, r);
    return 0;
}
