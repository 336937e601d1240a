/* diff.c - `memprof diff BASE NEW [--threshold 5%]`: two captures of the
 * same program lined up by location (the innermost Python frame, as the
 * other reports count them: file, function and line; the native leaf for
 * a stack without Python frames), at the peak and in what was leaked.
 * Prints what grew and what shrank; exit status 1 when the peak or the
 * leaks grew past the threshold, 0 otherwise, 2 when the diff could not be
 * made. Locations are matched by name, not by id: ids are per capture. */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis.h"
#include "cli_common.h"
#include "report.h"
#include "report_cli.h"

static const char usage[] =
    "usage: memprof diff [options] BASE NEW\n"
    "\n"
    "Compares two captures of the same program (say, before and after a\n"
    "change): the peak heap and what was leaked, in total and by location,\n"
    "what grew and what shrank. Exit status 1 when the peak or the leaks grew\n"
    "by more than the threshold, 0 when not, 2 when a capture cannot be read\n"
    "or the options are wrong.\n"
    "\n"
    "options:\n"
    "  --threshold T  how much growth is allowed: a percentage of BASE's figure\n"
    "                 (5%, 0.5%) or a size (1MB, 512KiB, 4096); default 5%\n"
    "  --top N        locations to list for each of grew and shrank (default 10)\n"
    "  --json         machine-readable output on stdout (schema: docs/reports.md)\n"
    "  -h, --help     show this help\n";

static const char *prog = "memprof diff";

typedef struct {
    int percent;        /* the threshold is a percentage (else bytes) */
    double pct;
    uint64_t bytes;
} threshold_t;

/* One location in one capture, or after the join in both. */
typedef struct {
    char *key;          /* native, file, function, line: what matches across captures */
    mp_srcframe_t f;    /* its frame, names pointing into key */
    mp_amount_t base, new;
    uint32_t stack[2];  /* the heaviest stack in base / new (0: not there) */
    uint64_t stack_bytes[2];
} row_t;

typedef struct {
    row_t *v;
    size_t n;
} rows_t;

static int parse_threshold(const char *s, threshold_t *t)
{
    size_t n = s ? strlen(s) : 0;
    if (n > 1 && s[n - 1] == '%') {
        char *end;
        double v = strtod(s, &end);
        if (end != s + n - 1 || !isfinite(v) || v < 0 || *s < '0' || *s > '9')
            return -1;
        t->percent = 1;
        t->pct = v;
        return 0;
    }
    t->percent = 0;
    return mp_parse_size(s, &t->bytes);
}

static int cmp_key(const void *x, const void *y)
{
    return strcmp(((const row_t *)x)->key, ((const row_t *)y)->key);
}

static void oom(void)
{
    fprintf(stderr, "%s: out of memory\n", prog);
    exit(2);
}

/* Every location of `a` at `when`, as rows of side `side`, sorted by key
 * with the locations of the same name (two lambdas on one line) summed. */
static rows_t side_rows(const mp_analysis_t *a, mp_when_t when, int side)
{
    mp_location_t *locs;
    size_t n;
    if (mp_top_locations(a, when, SIZE_MAX, &locs, &n))
        oom();
    rows_t r = {calloc(n ? n : 1, sizeof(row_t)), 0};
    if (!r.v)
        oom();
    for (size_t i = 0; i < n; i++) {
        mp_srcframe_t f;
        uint32_t parent;
        if (mp_node_frame(a, locs[i].node, &f, &parent))
            continue;
        row_t *x = &r.v[r.n++];
        /* one buffer: the key ("N" or "P", file, function, line, split by
         * 0x1f), then the file and the function for f to point at */
        char line[16];
        snprintf(line, sizeof line, "%d", f.line);
        size_t lfile = strlen(f.file), lfn = strlen(f.function), lkey = 2 + lfile + 1 + lfn + 1 + strlen(line);
        if (!(x->key = malloc(lkey + 1 + lfile + 1 + lfn + 1)))
            oom();
        char *k = x->key;
        sprintf(k, "%c\x1f%s\x1f%s\x1f%s", f.native ? 'N' : 'P', f.file, f.function, line);
        memcpy(k + lkey + 1, f.file, lfile + 1);
        memcpy(k + lkey + 1 + lfile + 1, f.function, lfn + 1);
        x->f = f;
        x->f.file = k + lkey + 1;
        x->f.function = k + lkey + 1 + lfile + 1;
        x->f.module = NULL;
        if (side)
            x->new = locs[i].amount;
        else
            x->base = locs[i].amount;
        x->stack[side] = locs[i].stack;
        x->stack_bytes[side] = locs[i].stack_bytes;
    }
    free(locs);
    qsort(r.v, r.n, sizeof *r.v, cmp_key);
    size_t k = 0;
    for (size_t i = 0; i < r.n; i++) {
        if (k && !strcmp(r.v[k - 1].key, r.v[i].key)) {
            row_t *y = &r.v[k - 1];
            mp_amount_add(side ? &y->new : &y->base, side ? r.v[i].new : r.v[i].base);
            if (r.v[i].stack_bytes[side] > y->stack_bytes[side]) {
                y->stack[side] = r.v[i].stack[side];
                y->stack_bytes[side] = r.v[i].stack_bytes[side];
            }
            free(r.v[i].key);
        } else {
            r.v[k++] = r.v[i];
        }
    }
    r.n = k;
    return r;
}

/* Both sides joined by key: a row per location in either capture. */
static rows_t join(const mp_analysis_t *base, const mp_analysis_t *new, mp_when_t when)
{
    rows_t b = side_rows(base, when, 0), n = side_rows(new, when, 1);
    rows_t r = {calloc(b.n + n.n + 1, sizeof(row_t)), 0};
    if (!r.v)
        oom();
    size_t i = 0, j = 0;
    while (i < b.n || j < n.n) {
        int c = i == b.n ? 1 : j == n.n ? -1 : strcmp(b.v[i].key, n.v[j].key);
        if (c < 0) {
            r.v[r.n++] = b.v[i++];
        } else if (c > 0) {
            r.v[r.n++] = n.v[j++];
        } else {
            row_t x = n.v[j++];
            x.base = b.v[i].base;
            x.stack[0] = b.v[i].stack[0];
            x.stack_bytes[0] = b.v[i].stack_bytes[0];
            free(b.v[i++].key);
            r.v[r.n++] = x;
        }
    }
    free(b.v);
    free(n.v);
    return r;
}

static int64_t change(const row_t *x) { return (int64_t)(x->new.bytes - x->base.bytes); }

static int grew_first(const void *p, const void *q)
{
    int64_t a = change(p), b = change(q);
    return a < b ? 1 : a > b ? -1 : cmp_key(p, q);
}

static void free_rows(rows_t *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->v[i].key);
    free(r->v);
}

/* "+1.2 MiB" / "-512 B" / "0 B" */
static const char *signed_bytes(int64_t d, char *buf, size_t len)
{
    char h[32];
    mp_human_bytes(d < 0 ? (uint64_t)0 - (uint64_t)d : (uint64_t)d, h, sizeof h);
    snprintf(buf, len, "%s%s", d > 0 ? "+" : d < 0 ? "-" : "", h);
    return buf;
}

typedef struct {
    uint64_t base, new;
    int has_pct;
    double pct;
    int over;
} verdict_t;

static verdict_t judge(uint64_t base, uint64_t new, const threshold_t *t)
{
    verdict_t v = {base, new, base > 0, 0, 0};
    int64_t d = (int64_t)(new - base);
    if (v.has_pct)
        v.pct = (double)d * 100.0 / (double)base;
    if (t->percent)
        v.over = d > 0 && (!base || v.pct > t->pct);
    else
        v.over = d > 0 && (uint64_t)d > t->bytes;
    return v;
}

static void print_figure(const char *title, verdict_t v)
{
    char b[32], n[32], d[40];
    printf("  %-10s %12s %12s   %12s", title, mp_human_bytes(v.base, b, sizeof b), mp_human_bytes(v.new, n, sizeof n),
           signed_bytes((int64_t)(v.new - v.base), d, sizeof d));
    if (v.has_pct)
        printf(" (%+.1f%%)", v.pct);
    else if (v.new)
        printf(" (new)");
    printf("%s\n", v.over ? "   OVER" : "");
}

static void print_rows(const mp_analysis_t *an[2], const rows_t *r, int grew, size_t top, const char *title)
{
    printf("\n%s:\n", title);
    size_t shown = 0;
    for (size_t k = 0; k < r->n && shown < top; k++) {
        const row_t *x = grew ? &r->v[k] : &r->v[r->n - 1 - k];
        int64_t d = change(x);
        if (grew ? d <= 0 : d >= 0)
            break;
        char s[40], b[32], n[32];
        long long dc = (long long)(x->new.count - x->base.count);
        printf("%3zu. %11s  %+lld blocks  %s", ++shown, signed_bytes(d, s, sizeof s), dc, x->f.function);
        if (x->f.line >= 0)
            printf(" (%s:%d)", x->f.file, x->f.line);
        else if (!x->f.native || strcmp(x->f.file, "?"))
            printf(" (%s)", x->f.file);
        printf("  %s -> %s\n", mp_human_bytes(x->base.bytes, b, sizeof b), mp_human_bytes(x->new.bytes, n, sizeof n));
        int side = grew ? (x->stack[1] ? 1 : 0) : (x->stack[0] ? 0 : 1);
        mp_report_cli_print_stack(an[side], x->stack[side], 0, "         ");
    }
    if (!shown)
        printf("  (nothing)\n");
}

static cJSON *figure_json(verdict_t v)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "base_bytes", (double)v.base);
    cJSON_AddNumberToObject(o, "new_bytes", (double)v.new);
    cJSON_AddNumberToObject(o, "change_bytes", (double)(int64_t)(v.new - v.base));
    if (v.has_pct)
        cJSON_AddNumberToObject(o, "change_percent", v.pct);
    else
        cJSON_AddNullToObject(o, "change_percent");
    cJSON_AddBoolToObject(o, "passed", !v.over);
    return o;
}

static cJSON *rows_json(const mp_analysis_t *an[2], const rows_t *r, int grew, size_t top)
{
    cJSON *arr = cJSON_CreateArray();
    size_t shown = 0;
    for (size_t k = 0; k < r->n && shown < top; k++, shown++) {
        const row_t *x = grew ? &r->v[k] : &r->v[r->n - 1 - k];
        int64_t d = change(x);
        if (grew ? d <= 0 : d >= 0)
            break;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "function", x->f.function);
        cJSON_AddStringToObject(o, "file", x->f.file);
        if (x->f.line >= 0)
            cJSON_AddNumberToObject(o, "line", x->f.line);
        else
            cJSON_AddNullToObject(o, "line");
        cJSON_AddBoolToObject(o, "native", x->f.native);
        cJSON_AddItemToObject(o, "base", mp_json_amount(x->base));
        cJSON_AddItemToObject(o, "new", mp_json_amount(x->new));
        cJSON_AddNumberToObject(o, "change_bytes", (double)d);
        cJSON_AddNumberToObject(o, "change_allocations", (double)(int64_t)(x->new.count - x->base.count));
        int side = grew ? (x->stack[1] ? 1 : 0) : (x->stack[0] ? 0 : 1);
        cJSON_AddStringToObject(o, "stack_from", side ? "new" : "base");
        cJSON_AddItemToObject(o, "stack", mp_json_stack(an[side], x->stack[side]));
        cJSON_AddItemToArray(arr, o);
    }
    return arr;
}

int main(int argc, char **argv)
{
    threshold_t t = {1, 5.0, 0};
    const char *thr_text = "5%";
    const char *path[2] = {NULL, NULL};
    int json = 0, npath = 0;
    size_t top = 10;
    mp_report_cli_t c = {.prog = prog, .usage = usage};
    for (int i = 1; i < argc;) {
        const char *a = argv[i];
        int took = 1;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage, stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (mp_report_cli_is(a, "--threshold")) {
            thr_text = mp_report_cli_value(&c, argc, argv, i, &took);
            if (parse_threshold(thr_text, &t))
                mp_cli_die(prog, "--threshold needs a percentage (5%%) or a size (1MB), not '%s'", thr_text);
        } else if (mp_report_cli_is(a, "--top")) {
            const char *v = mp_report_cli_value(&c, argc, argv, i, &took);
            if (mp_parse_count(v, &top))
                mp_cli_die(prog, "--top needs a number from 1 to 1000, not '%s'", v);
        } else if (a[0] == '-' && a[1]) {
            mp_cli_die(prog, "unknown option '%s'; see 'memprof diff --help'", a);
        } else if (npath == 2) {
            mp_cli_die(prog, "two captures, BASE and NEW; see 'memprof diff --help'");
        } else {
            path[npath++] = a;
        }
        i += took;
    }
    if (npath < 2)
        mp_cli_die(prog, "which captures? usage: memprof diff [--threshold 5%%] BASE NEW");
    mp_analysis_t an[2];
    memprof_reader_t *r[2];
    for (int s = 0; s < 2; s++) {
        r[s] = mp_cli_open(prog, path[s]);
        int rc = mp_analysis_run(&an[s], r[s]);
        if (rc < 0)
            mp_cli_fail(prog, path[s], r[s], rc);
        mp_cli_warn_truncated(prog, path[s], r[s], an[s].events_cut);
    }
    const mp_analysis_t *ap[2] = {&an[0], &an[1]};
    verdict_t peak = judge(an[0].peak.bytes, an[1].peak.bytes, &t);
    verdict_t leaked = judge(an[0].at_end.bytes, an[1].at_end.bytes, &t);
    rows_t at_peak = join(&an[0], &an[1], MP_AT_PEAK), at_end = join(&an[0], &an[1], MP_AT_END);
    qsort(at_peak.v, at_peak.n, sizeof(row_t), grew_first);
    qsort(at_end.v, at_end.n, sizeof(row_t), grew_first);
    int failed = peak.over || leaked.over;
    if (json) {
        cJSON *root = cJSON_CreateObject();
        cJSON_AddItemToObject(root, "base", mp_json_capture(r[0], path[0]));
        cJSON_AddItemToObject(root, "new", mp_json_capture(r[1], path[1]));
        cJSON *th = cJSON_AddObjectToObject(root, "threshold");
        if (t.percent)
            cJSON_AddNumberToObject(th, "percent", t.pct);
        else
            cJSON_AddNumberToObject(th, "bytes", (double)t.bytes);
        cJSON_AddBoolToObject(root, "passed", !failed);
        cJSON_AddItemToObject(root, "peak", figure_json(peak));
        cJSON_AddItemToObject(root, "leaked", figure_json(leaked));
        cJSON *al = cJSON_AddObjectToObject(root, "allocations");
        cJSON_AddNumberToObject(al, "base", (double)an[0].allocated.count);
        cJSON_AddNumberToObject(al, "new", (double)an[1].allocated.count);
        cJSON *p = cJSON_AddObjectToObject(root, "at_peak");
        cJSON_AddItemToObject(p, "grew", rows_json(ap, &at_peak, 1, top));
        cJSON_AddItemToObject(p, "shrank", rows_json(ap, &at_peak, 0, top));
        cJSON *e = cJSON_AddObjectToObject(root, "in_leaks");
        cJSON_AddItemToObject(e, "grew", rows_json(ap, &at_end, 1, top));
        cJSON_AddItemToObject(e, "shrank", rows_json(ap, &at_end, 0, top));
        mp_report_cli_print_json(root);
    } else {
        char b[32], n[32];
        printf("memprof diff %s -> %s (threshold %s)\n", path[0], path[1], thr_text);
        printf("  %-10s %12s %12s   %12s\n", "", "base", "new", "change");
        print_figure("peak heap", peak);
        print_figure("leaked", leaked);
        printf("  %-10s %12s %12s\n", "allocs", mp_group_digits(an[0].allocated.count, b, sizeof b),
               mp_group_digits(an[1].allocated.count, n, sizeof n));
        if (failed)
            printf("FAILED: %s%s%s grew by more than %s\n", peak.over ? "the peak" : "",
                   peak.over && leaked.over ? " and " : "", leaked.over ? "the leaks" : "", thr_text);
        else
            printf("passed: neither the peak nor the leaks grew by more than %s\n", thr_text);
        print_rows(ap, &at_peak, 1, top, "grew at the peak");
        print_rows(ap, &at_peak, 0, top, "shrank at the peak");
        print_rows(ap, &at_end, 1, top, "grew in leaks");
        print_rows(ap, &at_end, 0, top, "shrank in leaks");
    }
    fflush(stdout);
    free_rows(&at_peak);
    free_rows(&at_end);
    for (int s = 0; s < 2; s++) {
        for (const char *p; (p = mp_symbol_problem(&an[s]));)
            fprintf(stderr, "%s: warning: %s\n", prog, p);
        mp_analysis_free(&an[s]);
        memprof_reader_close(r[s]);
    }
    return failed ? 1 : 0;
}
