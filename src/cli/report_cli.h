/* report_cli.h - what every report program shares: the options they all
 * take (FILE, --json, --top, --from, --to, --thread), opening and replaying
 * the capture with one clear line and exit status 2 on a bad file, and
 * colour only on a terminal. Programs only (it prints and exits). */
#ifndef MP_REPORT_CLI_H
#define MP_REPORT_CLI_H

#include <stddef.h>

#include "analysis.h"
#include "report.h"

typedef struct mp_report_cli_s mp_report_cli_t;

/* A report's own option at argv[i]: returns how many arguments it took
 * (1 or 2), 0 if it is not one of its options. */
typedef int (*mp_report_option_fn)(mp_report_cli_t *c, int argc, char **argv, int i);

struct mp_report_cli_s {
    const char *prog;       /* "memprof stats" */
    const char *usage;      /* printed by --help */
    const char *path;
    int json;
    size_t top;
    mp_analysis_opts_t opts;
    int color;              /* stdout is a terminal and NO_COLOR is not set */
    void *ctx;              /* the report's own */
};

/* Parses argv; exits 0 after --help, 2 on a usage error. */
void mp_report_cli_parse(mp_report_cli_t *c, int argc, char **argv, mp_report_option_fn extra);
/* argv entry `arg` is option `name`, alone or as "name=value". */
int mp_report_cli_is(const char *arg, const char *name);
/* Takes the value of option argv[i] ("--x V" or "--x=V"); exits 2 when it
 * is missing. *took: arguments used (1 or 2). */
const char *mp_report_cli_value(const mp_report_cli_t *c, int argc, char **argv, int i, int *took);
/* --temporary-threshold N at argv[i] (for the reports that count temporary
 * allocations): how many arguments it took, 0 if it is not that option. */
int mp_report_cli_temp_threshold(mp_report_cli_t *c, int argc, char **argv, int i);
/* Opens c->path and replays it with c->opts; exits 2 with one line on a
 * bad or unreadable capture, warns once if it was cut short. */
memprof_reader_t *mp_report_cli_run(mp_report_cli_t *c, mp_analysis_t *a);
/* Symbolization warnings, then frees both. */
void mp_report_cli_done(mp_report_cli_t *c, mp_analysis_t *a, memprof_reader_t *r);
/* A JSON object describing c's filter (NULL fields when unset). */
struct cJSON *mp_report_cli_filter_json(const mp_report_cli_t *c);
/* "  thread 2, from 1.500 s to 3.000 s" or "" when nothing is filtered. */
const char *mp_report_cli_filter_text(const mp_report_cli_t *c, char *buf, size_t len);
/* Prints `root` on stdout (a line at the end) and frees it. */
void mp_report_cli_print_json(struct cJSON *root);
/* A location as summary and check list it: "  1.   7.8 MiB in 2,000 blocks
 * leak_small (file:line)" (by_count: allocations first), then its stack. */
void mp_report_cli_print_location(const mp_analysis_t *a, size_t rank, const mp_location_t *loc, int by_count);
/* Stack `node` on stdout, innermost frame first, one "function  file:line"
 * line per frame after `indent`, at most `max` frames (0: 12, or 24 in a
 * capture with native frames). */
void mp_report_cli_print_stack(const mp_analysis_t *a, uint32_t node, int max, const char *indent);
/* ANSI bold / reset when colour is on, "" otherwise. */
const char *mp_bold(const mp_report_cli_t *c);
const char *mp_reset(const mp_report_cli_t *c);

#endif
