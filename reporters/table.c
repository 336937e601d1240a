/* table.c - `memprof table FILE`: every allocation site (a stack, a
 * thread, an allocator) with what it held at the peak (or when the script
 * ended), as text, JSON, or a self-contained HTML page whose table sorts
 * and filters in the browser. */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis.h"
#include "cli_common.h"
#include "page.h"
#include "report.h"
#include "report_cli.h"

static const char usage[] =
    "usage: memprof table [options] FILE\n"
    "\n"
    "Every allocation site (a stack, in one thread, through one allocator) and\n"
    "what it held at the peak, biggest first: as text, JSON, or an HTML page\n"
    "whose table sorts and filters in the browser.\n"
    "\n"
    "options:\n"
    "  --leaks             what was still live when the script ended\n"
    "  --sort KEY          bytes (default), count, allocator, thread or location\n"
    "  --top N             rows to print (default: all)\n"
    "  --html              write an HTML page (to FILE without .memprof, plus\n"
    "                      .table.html, beside the capture, or to -o)\n"
    "  -o, --output FILE   the page's file (implies --html)\n"
    "  -f, --force         replace the page if it exists\n"
    "  --json              machine-readable output (schema: docs/reports.md)\n"
    "  --from T, --to T    count only allocations made in that window (seconds\n"
    "                      from the start: 1.5, 1.5s, 250ms)\n"
    "  --thread N          count only thread N's allocations\n"
    "  -h, --help          show this help\n";

enum { BY_BYTES, BY_COUNT, BY_ALLOCATOR, BY_THREAD, BY_LOCATION };
static const char *const sort_names[] = {"bytes", "count", "allocator", "thread", "location"};

typedef struct {
    int leaks, html, sort;
    mp_page_out_t out;
} table_opts_t;

static int table_option(mp_report_cli_t *c, int argc, char **argv, int i)
{
    table_opts_t *o = c->ctx;
    const char *a = argv[i];
    int took = mp_page_option(c, &o->out, argc, argv, i);
    if (took) {
        o->html |= o->out.output != NULL; /* -o FILE: a page */
        return took;
    }
    took = 1;
    if (!strcmp(a, "--leaks")) {
        o->leaks = 1;
    } else if (!strcmp(a, "--html")) {
        o->html = 1;
    } else if (mp_report_cli_is(a, "--sort")) {
        const char *v = mp_report_cli_value(c, argc, argv, i, &took);
        int k = 0;
        while (k < 5 && strcmp(v, sort_names[k]))
            k++;
        if (k == 5)
            mp_cli_die(c->prog, "--sort takes bytes, count, allocator, thread or location, not '%s'", v);
        o->sort = k;
    } else {
        return 0;
    }
    return took;
}

typedef struct {
    uint32_t site;
    mp_amount_t v;
    char location[256];
} row_t;

static const mp_analysis_t *g_a;
static int g_sort;

static int row_cmp(const void *x, const void *y)
{
    const row_t *p = x, *q = y;
    const mp_site_t *s = &g_a->sites[p->site], *t = &g_a->sites[q->site];
    int d = 0;
    switch (g_sort) {
    case BY_COUNT: d = (p->v.count < q->v.count) - (p->v.count > q->v.count); break;
    case BY_ALLOCATOR: d = strcmp(mp_allocator_name(s->kind), mp_allocator_name(t->kind)); break;
    case BY_THREAD: d = (s->thread > t->thread) - (s->thread < t->thread); break;
    case BY_LOCATION: d = strcmp(p->location, q->location); break;
    }
    if (!d)
        d = (p->v.bytes < q->v.bytes) - (p->v.bytes > q->v.bytes);
    if (!d)
        d = (p->v.count < q->v.count) - (p->v.count > q->v.count);
    return d ? d : (p->site > q->site) - (p->site < q->site);
}

/* The innermost frame of a stack, as "function (file:line)". */
static void location(const mp_analysis_t *a, uint32_t stack, char *buf, size_t len)
{
    mp_srcframe_t f;
    uint32_t parent;
    if (!stack || mp_node_frame(a, stack, &f, &parent))
        snprintf(buf, len, "[no stack]");
    else
        mp_frame_label(&f, len - 1, buf, len);
}

static row_t *rows_of(const mp_analysis_t *a, int leaks, int sort, size_t *n)
{
    row_t *v = malloc((a->nsites ? a->nsites : 1) * sizeof *v);
    if (!v)
        return NULL;
    *n = 0;
    for (uint32_t i = 0; i < a->nsites; i++) {
        mp_amount_t x = leaks ? a->sites[i].s.at_end : a->sites[i].s.at_peak;
        if (!x.bytes && !x.count)
            continue;
        row_t *r = &v[(*n)++];
        r->site = i;
        r->v = x;
        location(a, a->sites[i].stack, r->location, sizeof r->location);
    }
    g_a = a;
    g_sort = sort;
    qsort(v, *n, sizeof *v, row_cmp);
    return v;
}

static const char *thread_label(const mp_analysis_t *a, uint32_t t, char *buf, size_t len)
{
    const char *name = memprof_reader_thread_name(a->r, t);
    snprintf(buf, len, "%u %s", t, name ? name : t == 1 ? "main" : "");
    return buf;
}

static void print_text(const mp_report_cli_t *c, const table_opts_t *o, const mp_analysis_t *a, const row_t *v,
                       size_t n, mp_amount_t total)
{
    char b1[32], c1[32], fb[128];
    printf("%scapture%s  %s\n", mp_bold(c), mp_reset(c), c->path);
    if (*mp_report_cli_filter_text(c, fb, sizeof fb))
        printf("filter   %s (only allocations made there count)\n", fb);
    printf("%s\n%s in %s allocations at %zu sites, by %s\n\n",
           o->leaks ? (a->has_end ? "leaked (live when the script ended)" : "live at exit (no script end mark)")
                    : "held at the peak",
           mp_human_bytes(total.bytes, b1, sizeof b1), mp_group_digits(total.count, c1, sizeof c1), n,
           sort_names[o->sort]);
    printf("%s%10s %6s %9s %-15s %-6s %s%s\n", mp_bold(c), "bytes", "share", "allocs", "allocator", "thread",
           "location", mp_reset(c));
    size_t shown = n < c->top ? n : c->top;
    for (size_t i = 0; i < shown; i++) {
        const mp_site_t *s = &a->sites[v[i].site];
        char loc[30], th[16];
        double share = total.bytes ? 100.0 * (double)v[i].v.bytes / (double)total.bytes : 0;
        snprintf(th, sizeof th, "%u", s->thread);
        location(a, s->stack, loc, sizeof loc); /* the rest of 80 columns */
        printf("%10s %5.1f%% %9s %-15.15s %-6s %s\n", mp_human_bytes(v[i].v.bytes, b1, sizeof b1), share,
               mp_group_digits(v[i].v.count, c1, sizeof c1), mp_allocator_name(s->kind), th, loc);
    }
    if (shown < n)
        printf("... %zu more sites (--top)\n", n - shown);
    if (!n)
        printf("  (none)\n");
}

static cJSON *row_json(const mp_analysis_t *a, const row_t *r, mp_amount_t total)
{
    const mp_site_t *s = &a->sites[r->site];
    cJSON *o = mp_json_amount(r->v);
    if (!o)
        return NULL;
    cJSON_AddNumberToObject(o, "share", total.bytes ? (double)r->v.bytes / (double)total.bytes : 0);
    cJSON_AddStringToObject(o, "allocator", mp_allocator_name(s->kind));
    cJSON_AddNumberToObject(o, "thread", s->thread);
    const char *name = memprof_reader_thread_name(a->r, s->thread);
    if (name)
        cJSON_AddStringToObject(o, "thread_name", name);
    else
        cJSON_AddNullToObject(o, "thread_name");
    cJSON_AddStringToObject(o, "location", r->location);
    cJSON_AddItemToObject(o, "stack", mp_json_stack(a, s->stack));
    return o;
}

static cJSON *table_json(const mp_report_cli_t *c, const table_opts_t *o, const mp_analysis_t *a, const row_t *v,
                         size_t n, mp_amount_t total, size_t limit)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddItemToObject(root, "capture", mp_json_capture(a->r, c->path));
    cJSON_AddItemToObject(root, "filter", mp_report_cli_filter_json(c));
    cJSON_AddStringToObject(root, "at", o->leaks ? (a->has_end ? "script_end" : "exit") : "peak");
    cJSON_AddItemToObject(root, "total", mp_json_amount(total));
    cJSON_AddNumberToObject(root, "sites", (double)n);
    cJSON_AddStringToObject(root, "sort", sort_names[o->sort]);
    cJSON *rows = cJSON_AddArrayToObject(root, "rows");
    for (size_t i = 0; i < n && i < limit; i++)
        cJSON_AddItemToArray(rows, row_json(a, &v[i], total));
    return root;
}

/* The page's data: the rows with their stacks as lists of labels, strings
 * kept once (a stack's frames are shared by many rows). */
static int page_data(const mp_report_cli_t *c, const table_opts_t *o, const mp_analysis_t *a, const row_t *v,
                     size_t n, mp_amount_t total, mp_buf_t *b)
{
    mp_strtab_t st = {0};
    cJSON *head = cJSON_CreateObject();
    if (!head)
        return -1;
    cJSON_AddItemToObject(head, "capture", mp_json_capture(a->r, c->path));
    cJSON_AddItemToObject(head, "filter", mp_report_cli_filter_json(c));
    cJSON_AddStringToObject(head, "at", o->leaks ? (a->has_end ? "script_end" : "exit") : "peak");
    cJSON_AddItemToObject(head, "total", mp_json_amount(total));
    char *hj = cJSON_PrintUnformatted(head);
    cJSON_Delete(head);
    if (!hj)
        return -1;
    /* {"head": {...}, "rows": [[bytes, count, allocator, thread, location, [frames...]], ...], "strings": [...]} */
    mp_buf_str(b, "{\"head\":");
    mp_buf_json_text(b, hj);
    free(hj);
    mp_buf_str(b, ",\"threads\":{");
    uint32_t nt = memprof_reader_thread_count(a->r);
    for (uint32_t t = 1; t <= nt; t++) {
        char th[64];
        mp_buf_printf(b, "%s\"%u\":", t > 1 ? "," : "", t);
        mp_buf_json_string(b, thread_label(a, t, th, sizeof th));
    }
    mp_buf_str(b, "},\"rows\":[");
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const mp_site_t *s = &a->sites[v[i].site];
        int64_t al = mp_strtab_id(&st, mp_allocator_name(s->kind)), loc = mp_strtab_id(&st, v[i].location);
        if (al < 0 || loc < 0) {
            rc = -1;
            break;
        }
        mp_buf_printf(b, "%s[%llu,%llu,%lld,%u,%lld,[", i ? "," : "", (unsigned long long)v[i].v.bytes,
                      (unsigned long long)v[i].v.count, (long long)al, s->thread, (long long)loc);
        int first = 1;
        for (uint32_t id = s->stack, guard = 0; id && guard < 100000; guard++) {
            mp_srcframe_t f;
            uint32_t parent;
            char label[512];
            if (mp_node_frame(a, id, &f, &parent))
                break;
            if (f.pseudo || !strcmp(f.file, "?"))
                snprintf(label, sizeof label, "%s", f.function);
            else if (f.line >= 0)
                snprintf(label, sizeof label, "%s  %s:%d", f.function, f.file, f.line);
            else
                snprintf(label, sizeof label, "%s  %s", f.function, f.file);
            int64_t k = mp_strtab_id(&st, label);
            if (k < 0) {
                rc = -1;
                break;
            }
            mp_buf_printf(b, "%s%lld", first ? "" : ",", (long long)k);
            first = 0;
            id = parent;
        }
        mp_buf_str(b, "]]");
    }
    mp_buf_str(b, "],\"strings\":[");
    for (uint32_t i = 0; i < st.n; i++) {
        if (i)
            mp_buf_add(b, ",", 1);
        mp_buf_json_string(b, st.v[i]);
    }
    mp_buf_str(b, "]}");
    mp_strtab_free(&st);
    return rc || b->oom ? -1 : 0;
}

int main(int argc, char **argv)
{
    table_opts_t o = {0};
    mp_report_cli_t c = {.prog = "memprof table", .usage = usage, .ctx = &o, .top = SIZE_MAX};
    mp_report_cli_parse(&c, argc, argv, table_option);
    if (o.html && c.json)
        mp_cli_die(c.prog, "--json prints the table, --html writes a page: choose one");
    char *path = NULL;
    if (o.html)
        path = mp_page_target(c.prog, &o.out, c.path, ".table.html");
    mp_analysis_t a;
    memprof_reader_t *r = mp_report_cli_run(&c, &a);
    size_t n;
    row_t *v = rows_of(&a, o.leaks, o.sort, &n);
    if (!v)
        mp_cli_die(c.prog, "out of memory");
    mp_amount_t total = o.leaks ? a.at_end : a.peak;
    if (c.json) {
        cJSON *root = table_json(&c, &o, &a, v, n, total, c.top);
        char *out = root ? cJSON_PrintUnformatted(root) : NULL;
        if (!out)
            mp_cli_die(c.prog, "out of memory");
        puts(out);
        free(out);
        cJSON_Delete(root);
    } else if (o.html) {
        mp_buf_t data = {0}, page = {0};
        if (page_data(&c, &o, &a, v, n < c.top ? n : c.top, total, &data))
            mp_cli_die(c.prog, "out of memory");
        mp_page_part_t parts[] = {{"DATA", data.p, data.n}};
        if (mp_page_fill(&page, "table.html", parts, 1))
            mp_cli_die(c.prog, "out of memory (or a broken build: the page template is not as expected)");
        mp_page_save(c.prog, path, o.out.force, &page);
        printf("wrote %s (%zu KiB)\n", path, (page.n + 1023) / 1024);
        mp_buf_free(&data);
        mp_buf_free(&page);
    } else {
        print_text(&c, &o, &a, v, n, total);
    }
    free(v);
    free(path);
    mp_report_cli_done(&c, &a, r);
    return 0;
}
