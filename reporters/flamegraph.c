/* flamegraph.c - `memprof flamegraph FILE`: one self-contained HTML page
 * with the memory-over-time chart and an interactive flamegraph of the
 * peak (or the leaks, or the temporary allocations).
 *
 * The page carries its data as JSON (the contract is at the top of
 * reporters/assets/flamegraph.js): the stacks as a tree of nodes, what each
 * node held per thread for the whole run (exact), and intervals (what each
 * node held per thread from one time bucket to another) from which the
 * page redraws the flamegraph for a selected range. Huge captures stay
 * small: stacks holding less than a share of the total are merged into one
 * "(N smaller)" node under their parent, and intervals are merged into
 * longer buckets until there are at most MAX_INTERVALS of them. */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis.h"
#include "cli_common.h"
#include "memprof/format.h"
#include "page.h"
#include "report.h"
#include "report_cli.h"

static const char usage[] =
    "usage: memprof flamegraph [options] FILE\n"
    "\n"
    "Writes one self-contained HTML page (it opens offline in any browser): the\n"
    "heap and resident memory over time, and a flamegraph of what each stack\n"
    "held at the peak. Select a range on the chart to redraw the flamegraph for\n"
    "it; click to zoom, search, filter by thread, flip to an icicle.\n"
    "\n"
    "options:\n"
    "  -o, --output FILE   the page (default: FILE without .memprof, plus\n"
    "                      .flamegraph.html, beside the capture)\n"
    "  -f, --force         replace the page if it exists\n"
    "  --leaks             what was still live when the script ended\n"
    "  --temporary         temporary allocations (freed right after they were made)\n"
    "  --temporary-threshold N\n"
    "                      temporary: freed before its thread made N more\n"
    "                      allocations (default 1)\n"
    "  --merge-below PCT   merge stacks holding less than PCT % of the total into\n"
    "                      one node (default 0.1; 0 keeps every stack)\n"
    "  --json              print the page's data (JSON) instead of writing a page\n"
    "  --from T, --to T    count only allocations made in that window (seconds\n"
    "                      from the start: 1.5, 1.5s, 250ms)\n"
    "  --thread N          count only thread N's allocations\n"
    "  -h, --help          show this help\n";

enum { PEAK, LEAKS, TEMPORARY };
static const char *const mode_names[] = {"peak", "leaks", "temporary"};

#define MAX_INTERVALS 50000u

typedef struct {
    mp_page_out_t out;
    int mode;
    double merge_below; /* percent */
} fg_opts_t;

static int fg_option(mp_report_cli_t *c, int argc, char **argv, int i)
{
    fg_opts_t *o = c->ctx;
    const char *a = argv[i];
    int took;
    if ((took = mp_page_option(c, &o->out, argc, argv, i)) || (took = mp_report_cli_temp_threshold(c, argc, argv, i)))
        return took;
    took = 1;
    if (!strcmp(a, "--leaks") || !strcmp(a, "--temporary")) {
        int m = a[2] == 'l' ? LEAKS : TEMPORARY;
        if (o->mode != PEAK && o->mode != m)
            mp_cli_die(c->prog, "--leaks and --temporary draw different things: choose one");
        o->mode = m;
    } else if (mp_report_cli_is(a, "--merge-below")) {
        const char *v = mp_report_cli_value(c, argc, argv, i, &took);
        char *end;
        double p = strtod(v, &end);
        if (end == v || (*end && strcmp(end, "%")) || !(p >= 0 && p <= 100))
            mp_cli_die(c->prog, "--merge-below needs a share from 0 to 100 (percent), not '%s'", v);
        o->merge_below = p;
    } else {
        return 0;
    }
    return took;
}

/* ---- what the page shows ---- */

typedef struct {
    uint32_t node, thread;
    int32_t a, f;
    uint64_t bytes, count;
} row_t;

typedef struct {
    mp_analysis_t *a;
    int mode;
    /* output nodes: parent, and the stack node each stands for (0: the
     * root; UINT32_MAX: merged stacks, `merged` of them) */
    uint32_t *parent, *src, *merged;
    uint32_t n, cap;
    uint32_t *out;      /* stack node id -> output node */
    row_t *sites, *ivals;
    size_t nsites, nivals;
    uint32_t nbuckets;
    uint64_t bucket_us;
    uint64_t *heap, *rss_kib;   /* the chart: the analysis' buckets, or series_chart's (owned) */
} fg_t;

static mp_amount_t site_value(const mp_site_t *s, int mode)
{
    return mode == PEAK ? s->s.at_peak : mode == LEAKS ? s->s.at_end : s->s.temp;
}

/* An interval's end in the page's terms, or INT32_MIN if the mode has no
 * use for it. Peak: the first bucket whose snapshot it is not live at (-1:
 * to the end). Leaks: -1 (made in bucket a, live when the script ended).
 * Temporary: made in bucket a, and f = a. */
static int32_t interval_end(const mp_interval_t *iv, int mode)
{
    if (mode == TEMPORARY)
        return iv->f == MP_IVAL_TEMP ? (int32_t)iv->a : INT32_MIN;
    if (mode == LEAKS)
        return iv->f == MP_IVAL_LEAK ? -1 : INT32_MIN;
    if (iv->f & (MP_IVAL_TEMP | MP_IVAL_LEAK))
        return INT32_MIN;
    return iv->f == MP_IVAL_NEVER ? -1 : (int32_t)iv->f;
}

static int64_t add_node(fg_t *g, uint32_t parent, uint32_t src)
{
    if (g->n == g->cap) {
        uint32_t cap = g->cap ? g->cap * 2 : 1024;
        uint32_t *p = realloc(g->parent, cap * sizeof *p), *s = p ? realloc(g->src, cap * sizeof *s) : NULL,
                 *m = s ? realloc(g->merged, cap * sizeof *m) : NULL;
        if (p)
            g->parent = p;
        if (s)
            g->src = s;
        if (!m)
            return -1;
        g->merged = m;
        g->cap = cap;
    }
    g->parent[g->n] = parent;
    g->src[g->n] = src;
    g->merged[g->n] = 0;
    return g->n++;
}

/* Picks the stack nodes to show: a node is kept when its parent is and it
 * holds (with its callees) at least the share of the mode's total, or of
 * what the mode's intervals add up to (what a range could show); the
 * others under a kept parent go into that parent's "(N smaller)" node. */
static int pick_nodes(fg_t *g, double share)
{
    const mp_analysis_t *a = g->a;
    uint32_t nst = a->nst;
    uint64_t *incl = calloc(nst, sizeof *incl), *wincl = calloc(nst, sizeof *wincl);
    uint32_t *parent = calloc(nst, sizeof *parent), *other = NULL;
    uint8_t *kept = calloc(nst, 1);
    g->out = calloc(nst, sizeof *g->out);
    int rc = -1;
    if (!incl || !wincl || !parent || !kept || !g->out)
        goto done;
    for (uint32_t i = 0; i < a->nsites; i++)
        incl[a->sites[i].stack] += site_value(&a->sites[i], g->mode).bytes;
    uint64_t slots, bucket_us;
    uint32_t nb;
    const mp_interval_t *iv = mp_analysis_intervals(a, &slots, &nb, &bucket_us);
    for (uint64_t i = 0; i < slots; i++)
        if (iv[i].site != UINT32_MAX && interval_end(&iv[i], g->mode) != INT32_MIN)
            wincl[a->sites[iv[i].site].stack] += iv[i].amount.bytes;
    for (uint32_t id = nst - 1; id > 0; id--) {
        uint32_t code, p = 0;
        int32_t line;
        if (memprof_reader_node(a->r, id, &p, &code, &line) || p >= id)
            p = 0;
        parent[id] = p;
        incl[p] += incl[id];
        wincl[p] += wincl[id];
    }
    uint64_t min = (uint64_t)((double)incl[0] * share / 100), wmin = (uint64_t)((double)wincl[0] * share / 100);
    min = min ? min : 1;
    wmin = wmin ? wmin : 1;
    if (add_node(g, UINT32_MAX, 0) < 0 || !(other = calloc(nst, sizeof *other)))
        goto done;
    kept[0] = 1;
    for (uint32_t id = 1; id < nst; id++) {
        uint32_t p = parent[id], op = g->out[p];
        if (!kept[p] || (incl[id] == 0 && wincl[id] == 0)) {
            g->out[id] = op;
        } else if (incl[id] >= min || wincl[id] >= wmin) {
            int64_t n = add_node(g, op, id);
            if (n < 0)
                goto done;
            kept[id] = 1;
            g->out[id] = (uint32_t)n;
        } else {
            if (!other[p]) {
                int64_t n = add_node(g, op, UINT32_MAX);
                if (n < 0)
                    goto done;
                other[p] = (uint32_t)n;
            }
            g->merged[other[p]]++;
            g->out[id] = other[p];
        }
    }
    rc = 0;
done:
    free(incl);
    free(wincl);
    free(parent);
    free(kept);
    free(other);
    return rc;
}

static int row_cmp(const void *x, const void *y)
{
    const row_t *p = x, *q = y;
    if (p->node != q->node)
        return p->node < q->node ? -1 : 1;
    if (p->thread != q->thread)
        return p->thread < q->thread ? -1 : 1;
    if (p->a != q->a)
        return p->a < q->a ? -1 : 1;
    return p->f < q->f ? -1 : p->f > q->f;
}

/* Sorts rows and adds up those with the same key; returns how many remain. */
static size_t merge_rows(row_t *v, size_t n)
{
    qsort(v, n, sizeof *v, row_cmp);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (k && !row_cmp(&v[k - 1], &v[i])) {
            v[k - 1].bytes += v[i].bytes;
            v[k - 1].count += v[i].count;
        } else {
            v[k++] = v[i];
        }
    }
    return k;
}

static int collect(fg_t *g)
{
    mp_analysis_t *a = g->a;
    if (!(g->sites = malloc((a->nsites ? a->nsites : 1) * sizeof *g->sites)))
        return -1;
    for (uint32_t i = 0; i < a->nsites; i++) {
        const mp_site_t *s = &a->sites[i];
        mp_amount_t v = site_value(s, g->mode);
        if (v.bytes || v.count)
            g->sites[g->nsites++] = (row_t){g->out[s->stack], s->thread, 0, 0, v.bytes, v.count};
    }
    g->nsites = merge_rows(g->sites, g->nsites);

    /* too many intervals: buckets twice as long, until they fit */
    for (;;) {
        uint64_t slots;
        const mp_interval_t *iv = mp_analysis_intervals(a, &slots, &g->nbuckets, &g->bucket_us);
        size_t n = 0;
        for (uint64_t i = 0; i < slots; i++)
            n += iv[i].site != UINT32_MAX && interval_end(&iv[i], g->mode) != INT32_MIN;
        free(g->ivals);
        g->nivals = 0;
        if (!(g->ivals = malloc((n ? n : 1) * sizeof *g->ivals)))
            return -1;
        for (uint64_t i = 0; i < slots; i++) {
            int32_t f;
            if (iv[i].site == UINT32_MAX || (f = interval_end(&iv[i], g->mode)) == INT32_MIN)
                continue;
            const mp_site_t *s = &a->sites[iv[i].site];
            g->ivals[g->nivals++] = (row_t){g->out[s->stack], s->thread, (int32_t)iv[i].a, f, iv[i].amount.bytes,
                                            iv[i].amount.count};
        }
        g->nivals = merge_rows(g->ivals, g->nivals);
        if (g->nivals <= MAX_INTERVALS || g->nbuckets <= 1)
            return 0;
        if (mp_analysis_halve_buckets(g->a))
            return -1;
    }
}

/* ---- the JSON ---- */

/* An aggregated capture has no intervals, only its memory-over-time series:
 * the chart's buckets are made from it (the highest of the points in each,
 * a bucket without one keeps the heap of the one before). */
static int series_chart(fg_t *g)
{
    const mp_analysis_t *a = g->a;
    uint64_t end = a->last_time_us > a->end_time_us ? a->last_time_us : a->end_time_us;
    for (uint32_t i = 0; i < a->nseries; i++)
        end = a->series[i].time_us > end ? a->series[i].time_us : end;
    uint64_t bucket = memprof_reader_info(a->r)->interval_us * a->series_stride;
    bucket = bucket ? bucket : 10000;
    while (end / bucket >= MP_SERIES_MAX)
        bucket *= 2;
    g->bucket_us = bucket;
    g->nbuckets = (uint32_t)(end / bucket + 1);
    g->heap = calloc(g->nbuckets, sizeof *g->heap);
    g->rss_kib = calloc(g->nbuckets, sizeof *g->rss_kib);
    uint8_t *seen = calloc(g->nbuckets, 1);
    if (!g->heap || !g->rss_kib || !seen) {
        free(seen);
        return -1;
    }
    for (uint32_t i = 0; i < a->nseries; i++) {
        const mp_point_t *p = &a->series[i];
        uint32_t k = (uint32_t)(p->time_us / bucket);
        g->heap[k] = p->heap > g->heap[k] ? p->heap : g->heap[k];
        g->rss_kib[k] = p->rss_kib > g->rss_kib[k] ? p->rss_kib : g->rss_kib[k];
        seen[k] = 1;
    }
    for (uint32_t k = 1; k < g->nbuckets; k++)
        if (!seen[k])
            g->heap[k] = g->heap[k - 1];
    free(seen);
    return 0;
}

static void rows_json(mp_buf_t *b, const row_t *v, size_t n, int with_times)
{
    static const char *const keys[] = {"node", "thread", "a", "f", "bytes", "count"};
    mp_buf_str(b, "{");
    for (int k = 0; k < 6; k++) {
        if (!with_times && (k == 2 || k == 3))
            continue;
        mp_buf_printf(b, "%s\"%s\":[", k ? "," : "", keys[k]);
        for (size_t i = 0; i < n; i++) {
            if (i)
                mp_buf_add(b, ",", 1);
            switch (k) {
            case 0: mp_buf_u64(b, v[i].node); break;
            case 1: mp_buf_u64(b, v[i].thread); break;
            case 2: mp_buf_i64(b, v[i].a); break;
            case 3: mp_buf_i64(b, v[i].f); break;
            case 4: mp_buf_u64(b, v[i].bytes); break;
            default: mp_buf_u64(b, v[i].count); break;
            }
        }
        mp_buf_str(b, "]");
    }
    mp_buf_str(b, "}");
}

/* The script's name, for the title: the first argument after the
 * interpreter's own options, else the program. */
static const char *script_name(const memprof_info_t *in)
{
    const char *prog = in->argv_len ? in->argv : "?";
    for (size_t i = in->argv_len ? strlen(in->argv) + 1 : 0; i < in->argv_len; i += strlen(in->argv + i) + 1) {
        const char *s = in->argv + i;
        if (!strcmp(s, "-m") || !strcmp(s, "-c"))
            return s[1] == 'c' ? "-c" : i + 3 < in->argv_len ? in->argv + i + 3 : s;
        if (s[0] != '-') {
            const char *slash = strrchr(s, '/');
            return slash ? slash + 1 : s;
        }
    }
    const char *slash = strrchr(prog, '/');
    return slash ? slash + 1 : prog;
}

static int write_data(const fg_t *g, const mp_report_cli_t *c, mp_buf_t *b)
{
    const mp_analysis_t *a = g->a;
    const memprof_info_t *in = memprof_reader_info(a->r);
    mp_strtab_t st = {0};
    /* the frames' and nodes' columns */
    enum { FN, FILE_, LINE, KIND, PARENT, FRAME, NCOL };
    static const char *const names[NCOL] = {"function", "file", "line", "kind", "parent", "frame"};
    int64_t *col = malloc((size_t)NCOL * (g->n ? g->n : 1) * sizeof *col);
    int64_t *fn = col, *file = fn + g->n, *line = file + g->n, *kind = line + g->n;
    int rc = -1;
    if (!col)
        goto done;
    for (uint32_t i = 0; i < g->n; i++) {
        col[PARENT * g->n + i] = i ? (int64_t)g->parent[i] : -1;
        col[FRAME * g->n + i] = i;
    }
    for (uint32_t i = 0; i < g->n; i++) {
        char name[64];
        mp_srcframe_t sf; /* f and path may point into it */
        const char *f = "", *path = "";
        line[i] = -1;
        kind[i] = 2;
        if (g->src[i] == UINT32_MAX) {
            snprintf(name, sizeof name, "(%u smaller)", g->merged[i]);
            f = name;
            kind[i] = 3;
        } else if (g->src[i] == 0) {
            f = script_name(in);
        } else {
            uint32_t parent;
            if (mp_node_frame(a, g->src[i], &sf, &parent) == 0) {
                f = sf.function;
                path = sf.native && !strcmp(sf.file, "?") && sf.module ? sf.module : sf.file;
                line[i] = sf.line;
                kind[i] = sf.pseudo ? 2 : sf.native ? 1 : 0;
            } else {
                f = "?";
            }
        }
        int64_t x = mp_strtab_id(&st, f), y = mp_strtab_id(&st, path);
        if (x < 0 || y < 0)
            goto done;
        fn[i] = x;
        file[i] = y;
    }
    mp_amount_t total = g->mode == PEAK ? a->peak : g->mode == LEAKS ? a->at_end : a->temporary;
    static const char *const what[] = {"peak memory", "leaks", "temporary allocations"};
    char title[512];
    snprintf(title, sizeof title, "memprof: %s of %s", what[g->mode], script_name(in));

    mp_buf_printf(b, "{\"version\":1,\"mode\":\"%s\",\"title\":", mode_names[g->mode]);
    mp_buf_json_string(b, title);
    cJSON *cap = mp_json_capture(a->r, c->path);
    if (!cap)
        goto done;
    if (!cJSON_GetObjectItem(cap, "duration_s"))
        cJSON_AddNumberToObject(cap, "duration_s", (double)a->last_time_us / 1e6);
    cJSON_AddBoolToObject(cap, "native", (in->options & MEMPROF_OPT_NATIVE) != 0);
    cJSON_AddItemToObject(cap, "filter", mp_report_cli_filter_json(c));
    char *cj = cJSON_PrintUnformatted(cap);
    cJSON_Delete(cap);
    if (!cj)
        goto done;
    mp_buf_str(b, ",\"capture\":");
    mp_buf_json_text(b, cj);
    free(cj);
    mp_buf_printf(b, ",\"total\":{\"bytes\":%llu,\"allocations\":%llu},\"peak_time_s\":%.6f",
                  (unsigned long long)total.bytes, (unsigned long long)total.count, (double)a->peak_time_us / 1e6);
    mp_buf_str(b, ",\"strings\":[");
    for (uint32_t i = 0; i < st.n; i++) {
        if (i)
            mp_buf_add(b, ",", 1);
        mp_buf_json_string(b, st.v[i]);
    }
    mp_buf_str(b, "]");
    for (int k = 0; k < NCOL; k++) {
        mp_buf_printf(b, k == FN ? ",\"frames\":{" : k == PARENT ? "},\"nodes\":{" : ",");
        mp_buf_printf(b, "\"%s\":[", names[k]);
        for (uint32_t i = 0; i < g->n; i++) {
            if (i)
                mp_buf_add(b, ",", 1);
            mp_buf_i64(b, col[(size_t)k * g->n + i]);
        }
        mp_buf_str(b, "]");
    }
    mp_buf_str(b, "},\"threads\":[");
    uint32_t nt = memprof_reader_thread_count(a->r), shown = 0;
    for (uint32_t t = 1; t <= nt && t <= a->nthreads; t++) {
        if (!a->thr[t].total.count)
            continue;
        const char *name = memprof_reader_thread_name(a->r, t);
        mp_buf_printf(b, "%s{\"id\":%u,\"name\":", shown++ ? "," : "", t);
        if (name)
            mp_buf_json_string(b, name);
        else
            mp_buf_str(b, "null");
        mp_buf_str(b, "}");
    }
    mp_buf_str(b, "],\"sites\":");
    rows_json(b, g->sites, g->nsites, 0);
    mp_buf_printf(b, ",\"chart\":{\"bucket_s\":%.6f,\"heap\":[", (double)g->bucket_us / 1e6);
    for (uint32_t i = 0; i < g->nbuckets; i++)
        mp_buf_printf(b, "%s%llu", i ? "," : "", (unsigned long long)g->heap[i]);
    mp_buf_str(b, "],\"rss\":[");
    for (uint32_t i = 0; i < g->nbuckets; i++) {
        if (g->rss_kib[i])
            mp_buf_printf(b, "%s%llu", i ? "," : "", (unsigned long long)g->rss_kib[i] * 1024);
        else
            mp_buf_str(b, i ? ",null" : "null");
    }
    mp_buf_str(b, "]},\"end_bucket\":");
    if (a->has_end)
        mp_buf_u64(b, a->end_time_us / g->bucket_us);
    else
        mp_buf_str(b, "null");
    mp_buf_str(b, ",\"intervals\":");
    rows_json(b, g->ivals, g->nivals, 1);
    mp_buf_str(b, "}");
    rc = b->oom ? -1 : 0;
done:
    free(col);
    mp_strtab_free(&st);
    return rc;
}

int main(int argc, char **argv)
{
    fg_opts_t o = {.merge_below = 0.1};
    mp_report_cli_t c = {.prog = "memprof flamegraph", .usage = usage, .ctx = &o};
    mp_report_cli_parse(&c, argc, argv, fg_option);
    c.opts.intervals = 1;
    char *path = NULL;
    if (!c.json)
        path = mp_page_target(c.prog, &o.out, c.path, ".flamegraph.html");
    mp_analysis_t a;
    memprof_reader_t *r = mp_report_cli_run(&c, &a);
    fg_t g = {.a = &a, .mode = o.mode};
    mp_buf_t data = {0};
    if (pick_nodes(&g, o.merge_below) || collect(&g) ||
        (!(g.heap = a.ival_heap, g.rss_kib = a.ival_rss_kib) && series_chart(&g)) ||
        write_data(&g, &c, &data))
        mp_cli_die(c.prog, "out of memory");
    if (c.json) {
        fwrite(data.p, 1, data.n, stdout);
        putchar('\n');
    } else {
        static const char *const css[] = {"vendor/d3-flamegraph.css", "flamegraph.css", NULL};
        static const char *const js[] = {"vendor/d3.min.js", "vendor/d3-flamegraph.min.js", "flamegraph.js", NULL};
        mp_buf_t cssb = {0}, jsb = {0}, page = {0};
        mp_page_assets(&cssb, css);
        mp_page_assets(&jsb, js);
        mp_page_part_t parts[] = {{"CSS", cssb.p, cssb.n}, {"JS", jsb.p, jsb.n}, {"DATA", data.p, data.n}};
        if (cssb.oom || jsb.oom || mp_page_fill(&page, "flamegraph.html", parts, 3))
            mp_cli_die(c.prog, "out of memory (or a broken build: the page template is not as expected)");
        mp_page_save(c.prog, path, o.out.force, &page);
        printf("wrote %s (%zu KiB)\n", path, (page.n + 1023) / 1024);
        mp_buf_free(&cssb);
        mp_buf_free(&jsb);
        mp_buf_free(&page);
    }
    mp_buf_free(&data);
    free(g.parent);
    free(g.src);
    free(g.merged);
    free(g.out);
    free(g.sites);
    free(g.ivals);
    if (g.heap != a.ival_heap) {
        free(g.heap);
        free(g.rss_kib);
    }
    free(path);
    mp_report_cli_done(&c, &a, r);
    return 0;
}
