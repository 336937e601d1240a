/* report_cli.c - options, replay and output details shared by the reports. */
#define _GNU_SOURCE
#include "report_cli.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_common.h"
#include "report.h"

const char *mp_report_cli_value(const mp_report_cli_t *c, int argc, char **argv, int i, int *took)
{
    const char *eq = strchr(argv[i], '=');
    if (eq) {
        *took = 1;
        return eq + 1;
    }
    if (i + 1 >= argc)
        mp_cli_die(c->prog, "%s needs a value; see '%s --help'", argv[i], c->prog);
    *took = 2;
    return argv[i + 1];
}

/* "1.5", "1.5s", "250ms", "100us": microseconds from the start. */
static int parse_time(const char *s, uint64_t *us)
{
    if (!s || !*s || *s == '-')
        return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    double scale = 1e6;
    if (!strcmp(end, "ms"))
        scale = 1e3;
    else if (!strcmp(end, "us"))
        scale = 1;
    else if (*end && strcmp(end, "s"))
        return -1;
    if (errno || end == s || !isfinite(v) || v < 0 || v * scale > 1e18)
        return -1;
    *us = (uint64_t)llround(v * scale);
    return 0;
}

int mp_report_cli_is(const char *arg, const char *name)
{
    size_t n = strlen(name);
    return !strncmp(arg, name, n) && (arg[n] == '\0' || arg[n] == '=');
}

void mp_report_cli_parse(mp_report_cli_t *c, int argc, char **argv, mp_report_option_fn extra)
{
    if (!c->top)
        c->top = 10;
    const char *nc = getenv("NO_COLOR");
    c->color = isatty(STDOUT_FILENO) && !(nc && *nc);
    int to_set = 0;
    for (int i = 1; i < argc;) {
        const char *a = argv[i];
        int took = 1;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(c->usage, stdout);
            exit(0);
        } else if (!strcmp(a, "--json")) {
            c->json = 1;
        } else if (mp_report_cli_is(a, "--top")) {
            const char *v = mp_report_cli_value(c, argc, argv, i, &took);
            if (mp_parse_count(v, &c->top))
                mp_cli_die(c->prog, "--top needs a number from 1 to 1000, not '%s'", v);
        } else if (mp_report_cli_is(a, "--from") || mp_report_cli_is(a, "--to")) {
            const char *v = mp_report_cli_value(c, argc, argv, i, &took);
            uint64_t us;
            if (parse_time(v, &us))
                mp_cli_die(c->prog, "%.*s needs a time in seconds from the start (1.5, 1.5s, 250ms), not '%s'",
                           (int)strcspn(a, "="), a, v);
            if (a[2] == 'f') {
                c->opts.from_us = us;
            } else {
                c->opts.to_us = us ? us : 1; /* to_us 0 means "no end" */
                to_set = 1;
            }
        } else if (mp_report_cli_is(a, "--thread")) {
            const char *v = mp_report_cli_value(c, argc, argv, i, &took);
            char *end;
            errno = 0;
            unsigned long t = strtoul(v, &end, 10);
            if (errno || *end || !*v || *v == '-' || t < 1 || t > UINT32_MAX)
                mp_cli_die(c->prog, "--thread needs a thread number as the reports list them (1 is the first), not '%s'",
                           v);
            c->opts.thread = (uint32_t)t;
        } else if (extra && a[0] == '-' && a[1] && (took = extra(c, argc, argv, i)) > 0) {
            /* the report's own */
        } else if (a[0] == '-' && a[1]) {
            mp_cli_die(c->prog, "unknown option '%s'; see '%s --help'", a, c->prog);
        } else if (c->path) {
            mp_cli_die(c->prog, "one capture at a time; see '%s --help'", c->prog);
        } else {
            c->path = a;
        }
        i += took;
    }
    if (!c->path)
        mp_cli_die(c->prog, "which capture? see '%s --help'", c->prog);
    if (to_set && c->opts.to_us < c->opts.from_us)
        mp_cli_die(c->prog, "--to is before --from: nothing to report");
}

int mp_report_cli_temp_threshold(mp_report_cli_t *c, int argc, char **argv, int i)
{
    if (!mp_report_cli_is(argv[i], "--temporary-threshold"))
        return 0;
    int took;
    const char *v = mp_report_cli_value(c, argc, argv, i, &took);
    size_t n;
    if (mp_parse_count(v, &n))
        mp_cli_die(c->prog, "--temporary-threshold needs a number from 1 to 1000, not '%s'", v);
    c->opts.temp_threshold = (uint32_t)n;
    return took;
}

memprof_reader_t *mp_report_cli_run(mp_report_cli_t *c, mp_analysis_t *a)
{
    memprof_reader_t *r = mp_cli_open(c->prog, c->path);
    int rc = mp_analysis_run_opts(a, r, &c->opts);
    if (rc < 0)
        mp_cli_fail(c->prog, c->path, r, rc);
    mp_cli_warn_truncated(c->prog, c->path, r, a->events_cut);
    if (c->opts.thread && c->opts.thread > memprof_reader_thread_count(r))
        fprintf(stderr, "%s: warning: the capture has %u threads, none numbered %u: nothing is counted\n", c->prog,
                memprof_reader_thread_count(r), c->opts.thread);
    return r;
}

void mp_report_cli_done(mp_report_cli_t *c, mp_analysis_t *a, memprof_reader_t *r)
{
    for (const char *p; (p = mp_symbol_problem(a));)
        fprintf(stderr, "%s: warning: %s\n", c->prog, p);
    mp_analysis_free(a);
    memprof_reader_close(r);
}

cJSON *mp_report_cli_filter_json(const mp_report_cli_t *c)
{
    cJSON *f = cJSON_CreateObject();
    if (c->opts.thread)
        cJSON_AddNumberToObject(f, "thread", c->opts.thread);
    else
        cJSON_AddNullToObject(f, "thread");
    if (c->opts.from_us)
        cJSON_AddNumberToObject(f, "from_s", (double)c->opts.from_us / 1e6);
    else
        cJSON_AddNullToObject(f, "from_s");
    if (c->opts.to_us)
        cJSON_AddNumberToObject(f, "to_s", (double)c->opts.to_us / 1e6);
    else
        cJSON_AddNullToObject(f, "to_s");
    return f;
}

const char *mp_report_cli_filter_text(const mp_report_cli_t *c, char *buf, size_t len)
{
    size_t n = 0;
    buf[0] = '\0';
    if (c->opts.thread)
        n += (size_t)snprintf(buf + n, len - n, "thread %u", c->opts.thread);
    if (c->opts.from_us && n < len)
        n += (size_t)snprintf(buf + n, len - n, "%sfrom %.3f s", n ? ", " : "", (double)c->opts.from_us / 1e6);
    if (c->opts.to_us && n < len)
        snprintf(buf + n, len - n, "%sto %.3f s", n ? (c->opts.from_us ? " " : ", ") : "", (double)c->opts.to_us / 1e6);
    return buf;
}

const char *mp_bold(const mp_report_cli_t *c) { return c->color ? "\033[1m" : ""; }
const char *mp_reset(const mp_report_cli_t *c) { return c->color ? "\033[0m" : ""; }

void mp_report_cli_print_stack(const mp_analysis_t *a, uint32_t node, int max, const char *indent)
{
    if (!max)
        max = (memprof_reader_info(a->r)->options & MEMPROF_OPT_NATIVE) ? 24 : 12;
    for (int depth = 0; node && depth < max; depth++) {
        mp_srcframe_t f;
        uint32_t parent;
        if (mp_node_frame(a, node, &f, &parent))
            break;
        if (f.line >= 0)
            printf("%s%s  %s:%d\n", indent, f.function, f.file, f.line);
        else
            printf("%s%s  %s\n", indent, f.function, f.file);
        node = parent;
        if (node && depth + 1 == max)
            printf("%s... (deeper frames not shown)\n", indent);
    }
}

void mp_report_cli_print_json(cJSON *root)
{
    char *s = cJSON_Print(root);
    if (s)
        puts(s);
    free(s);
    cJSON_Delete(root);
}

void mp_report_cli_print_location(const mp_analysis_t *a, size_t rank, const mp_location_t *loc, int by_count)
{
    mp_srcframe_t f;
    uint32_t parent;
    char b[32], c[32];
    if (mp_node_frame(a, loc->node, &f, &parent))
        return;
    if (by_count)
        printf("%3zu. %s allocations (%s)  %s", rank, mp_group_digits(loc->amount.count, c, sizeof c),
               mp_human_bytes(loc->amount.bytes, b, sizeof b), f.function);
    else
        printf("%3zu. %10s in %s blocks  %s", rank, mp_human_bytes(loc->amount.bytes, b, sizeof b),
               mp_group_digits(loc->amount.count, c, sizeof c), f.function);
    if (f.line >= 0)
        printf(" (%s:%d)", f.file, f.line);
    if (loc->nstacks > 1)
        printf("  [%u stacks; the largest:]", loc->nstacks);
    printf("\n");
    mp_report_cli_print_stack(a, loc->stack, 0, "         ");
}
