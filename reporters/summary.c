/* summary.c - `memprof summary FILE [--json] [--top N]`: totals, the peak and
 * when it happened, what was live when the script ended and at exit, and the
 * locations holding the most bytes at the peak and at the end. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis.h"
#include "cli_common.h"
#include "memprof/format.h"
#include "report.h"
#include "report_cli.h"

static const char usage[] =
    "usage: memprof summary [--json] [--top N] FILE\n"
    "\n"
    "Totals, the peak heap and when it happened, what was still live when the\n"
    "script ended (leaks) and at exit, and the top locations by bytes live at\n"
    "the peak and at the end, each with its Python stack.\n"
    "\n"
    "options:\n"
    "  --json      machine-readable output on stdout\n"
    "  --top N     locations to list (default 10)\n"
    "  -h, --help  show this help\n";

static const char *prog = "memprof summary";

static void print_json(const mp_analysis_t *a, const char *path, size_t top)
{
    cJSON *root = mp_json_summary(a, path, top);
    if (!root)
        mp_cli_die(prog, "out of memory");
    mp_report_cli_print_json(root);
}

static void print_top(const mp_analysis_t *a, mp_when_t when, size_t top, const char *title)
{
    mp_location_t *locs;
    size_t n;
    if (mp_top_locations(a, when, top, &locs, &n))
        return;
    printf("\n%s:\n", title);
    if (n == 0)
        printf("  (none)\n");
    for (size_t i = 0; i < n; i++)
        mp_report_cli_print_location(a, i + 1, &locs[i], 0);
    free(locs);
}

static void print_text(const mp_analysis_t *a, const char *path, size_t top)
{
    const memprof_info_t *in = memprof_reader_info(a->r);
    char b1[32], b2[32], c1[32], c2[32];
    printf("capture  %s\n", path);
    printf("program ");
    for (size_t i = 0; i < in->argv_len; i += strlen(in->argv + i) + 1)
        printf(" %s", in->argv + i);
    printf("\n         pid %" PRIu64, in->pid);
    if (*in->python_version)
        printf(", Python %.*s", (int)strcspn(in->python_version, " "), in->python_version);
    if (in->has_trailer)
        printf(", ran %.2f s", (double)(in->end_monotonic_ns - in->start_monotonic_ns) / 1e9);
    printf("\n\n");
    printf("allocations      %s (%s), %s frees\n", mp_group_digits(a->allocated.count, c1, sizeof c1),
           mp_human_bytes(a->allocated.bytes, b1, sizeof b1), mp_group_digits(a->frees, c2, sizeof c2));
    printf("peak heap        %s in %s blocks, at %.3f s (event %s)\n", mp_human_bytes(a->peak.bytes, b1, sizeof b1),
           mp_group_digits(a->peak.count, c1, sizeof c1), (double)a->peak_time_us / 1e6,
           mp_group_digits(a->peak_index, c2, sizeof c2));
    printf("leaked           %s in %s blocks %s\n", mp_human_bytes(a->at_end.bytes, b1, sizeof b1),
           mp_group_digits(a->at_end.count, c1, sizeof c1),
           a->has_end ? "(live when the script ended)" : "(live at exit: the script end was not marked)");
    printf("live at exit     %s in %s blocks\n", mp_human_bytes(a->live.bytes, b2, sizeof b2),
           mp_group_digits(a->live.count, c2, sizeof c2));
    if (a->files_total.count)
        printf("mapped files     %s at most, in %s mappings (not heap: not in the figures above)\n",
               mp_human_bytes(a->files_peak.bytes, b1, sizeof b1), mp_group_digits(a->files_total.count, c1, sizeof c1));
    printf("allocators      ");
    for (unsigned k = 1; k < MEMPROF_A_COUNT; k++)
        if (a->by_allocator[k].count)
            printf(" %s %s", mp_allocator_name(k), mp_group_digits(a->by_allocator[k].count, c1, sizeof c1));
    printf("\n");
    if (in->options & MEMPROF_OPT_MID_RUN)
        printf("note             tracking began mid-run (%s): what was allocated before is not known, "
               "and %s frees of it were left out\n",
               in->options & MEMPROF_OPT_ATTACHED ? "memprof attach" : "a Tracker block",
               mp_group_digits(a->unmatched_frees, c1, sizeof c1));
    if (in->options & MEMPROF_OPT_AGGREGATE)
        printf("note             an aggregated capture (memprof run --aggregate): totals per stack, so "
               "no --thread, --from or --to\n");
    if (in->pystack_mode != 1)
        printf("note             no Python stacks in this capture (%s)\n",
               in->pystack_mode == 2 ? "this Python version is not supported" : "not a Python program");
    print_top(a, MP_AT_PEAK, top, "top locations by bytes live at the peak");
    print_top(a, MP_AT_END, top, "top locations by bytes leaked (live when the script ended)");
}

int main(int argc, char **argv)
{
    int json = 0;
    size_t top = 10;
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(usage, stdout);
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else if (!strcmp(argv[i], "--top") || !strncmp(argv[i], "--top=", 6)) {
            const char *v = argv[i][5] == '=' ? argv[i] + 6 : (i + 1 < argc ? argv[++i] : NULL);
            if (mp_parse_count(v, &top))
                mp_cli_die(prog, "--top needs a number from 1 to 1000, not '%s'", v ? v : "");
        } else if (argv[i][0] == '-' && argv[i][1]) {
            mp_cli_die(prog, "unknown option '%s'; see 'memprof summary --help'", argv[i]);
        } else if (path) {
            mp_cli_die(prog, "one capture at a time; see 'memprof summary --help'");
        } else {
            path = argv[i];
        }
    }
    if (!path)
        mp_cli_die(prog, "which capture? usage: memprof summary [--json] FILE");
    mp_analysis_t a;
    memprof_reader_t *r = mp_cli_open(prog, path);
    int rc = mp_analysis_run(&a, r);
    if (rc < 0)
        mp_cli_fail(prog, path, r, rc);
    mp_cli_warn_truncated(prog, path, r, a.events_cut);
    if (json)
        print_json(&a, path, top);
    else
        print_text(&a, path, top);
    for (const char *p; (p = mp_symbol_problem(&a));)
        fprintf(stderr, "%s: warning: %s\n", prog, p);
    mp_analysis_free(&a);
    memprof_reader_close(r);
    return 0;
}
