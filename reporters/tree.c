/* tree.c - `memprof tree FILE`: the call tree of what was live at the peak
 * (with --leaks: when the script ended), outermost frames first, each frame
 * with the bytes held at and below it, their share and the number of
 * blocks, callees biggest first; callees under a share the user sets are
 * folded into one line under their caller. Linear in the number of stack
 * nodes (the reader guarantees that a node's parent has a smaller id) and
 * without recursion: a hostile capture's depth cannot overflow the stack. */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis.h"
#include "cli_common.h"
#include "report.h"
#include "report_cli.h"

static const char usage[] =
    "usage: memprof tree [options] FILE\n"
    "\n"
    "The call tree of what was live at the peak: from the outermost frames\n"
    "down, each frame with the bytes live at and below it, their share of the\n"
    "peak and the number of blocks, callees biggest first.\n"
    "\n"
    "options:\n"
    "  --cut PERCENT   fold callees holding less than PERCENT of the total into\n"
    "                  one line under their caller (default 1; 0.5, 2%)\n"
    "  --depth N       frames shown below the outermost, at most (1 to 1000,\n"
    "                  default 1000)\n"
    "  --leaks         the tree of what was live when the script ended\n"
    "  --top N         callees listed under each frame, at most (default: all\n"
    "                  above the cut)\n"
    "  --json          machine-readable output (schema: docs/reports.md)\n"
    "  --from T        count only allocations made from T seconds after the start\n"
    "  --to T          ... and up to T seconds (1.5, 1.5s, 250ms)\n"
    "  --thread N      count only thread N's allocations (numbered as in stats)\n"
    "  -h, --help      show this help\n";

#define TREE_DEPTH_MAX 1000u /* keeps cJSON's recursive printer and freeing safe */
#define INDENT_MAX 10u       /* levels indented, 2 columns each; deeper lines say their depth */
#define COLUMNS 80

typedef struct {
    double cut;         /* percent of the total */
    size_t depth;
    int leaks;
} tree_opts_t;

typedef struct tree_s {
    const mp_analysis_t *a;
    const mp_report_cli_t *c;
    const tree_opts_t *o;
    uint32_t n;         /* stack nodes */
    mp_amount_t *inc;   /* per node: what it and its callees hold ([0]: everything) */
    uint32_t *first;    /* callees of node v: kids[first[v] .. first[v + 1]) */
    mp_node_amount_t *kids; /* the nodes holding anything, and what they hold */
    cJSON *json;        /* the JSON document, when asked for */
} tree_t;

/* A node to show (id 0: the root), or, `hidden` set, the line after its
 * listed callees that sums up the others. */
typedef struct {
    uint32_t id, depth;
    int hidden;
    uint32_t nhidden;
    mp_amount_t amount; /* hidden: what the callees not listed hold */
    cJSON *into;        /* JSON: the array the node goes in */
} item_t;

typedef cJSON *(*tree_node_fn)(tree_t *t, const item_t *it);
typedef void (*tree_hidden_fn)(tree_t *t, const item_t *it);

static int tree_option(mp_report_cli_t *c, int argc, char **argv, int i)
{
    tree_opts_t *o = c->ctx;
    int took = 1;
    if (!strcmp(argv[i], "--leaks")) {
        o->leaks = 1;
    } else if (mp_report_cli_is(argv[i], "--cut")) {
        const char *v = mp_report_cli_value(c, argc, argv, i, &took);
        char *end;
        errno = 0;
        double x = strtod(v, &end);
        if (*end == '%')
            end++;
        if (errno || end == v || *end || !isfinite(x) || x < 0 || x > 100)
            mp_cli_die(c->prog, "--cut needs a percentage from 0 to 100 (1, 0.5, 2%%), not '%s'", v);
        o->cut = x;
    } else if (mp_report_cli_is(argv[i], "--depth")) {
        const char *v = mp_report_cli_value(c, argc, argv, i, &took);
        if (mp_parse_count(v, &o->depth))
            mp_cli_die(c->prog, "--depth needs a number from 1 to %u, not '%s'", TREE_DEPTH_MAX, v);
    } else {
        took = 0;
    }
    return took;
}

/* What stack `id` itself holds (0: the blocks without a stack). */
static mp_amount_t own(const tree_t *t, uint32_t id)
{
    if (id >= t->a->nst)
        return (mp_amount_t){0, 0};
    return t->o->leaks ? t->a->st[id].at_end : t->a->st[id].at_peak;
}

static double share(const tree_t *t, uint64_t bytes)
{
    return t->inc[0].bytes ? 100.0 * (double)bytes / (double)t->inc[0].bytes : 0;
}

static uint32_t parent_of(const tree_t *t, uint32_t id)
{
    uint32_t parent, code;
    int32_t line;
    if (memprof_reader_node(t->a->r, id, &parent, &code, &line) || parent >= id)
        return 0;
    return parent;
}

/* Sums every node's callees into it, and lists the callees holding
 * anything. Callees come after their callers: one pass from the end. */
static int tree_build(tree_t *t)
{
    uint32_t n = t->n = memprof_reader_node_count(t->a->r);
    t->inc = calloc((size_t)n + 1, sizeof *t->inc);
    t->first = calloc((size_t)n + 2, sizeof *t->first);
    if (!t->inc || !t->first)
        return -1;
    for (uint32_t id = 0; id <= n; id++)
        t->inc[id] = own(t, id);
    for (uint32_t id = n; id >= 1; id--) {
        uint32_t parent = parent_of(t, id);
        mp_amount_add(&t->inc[parent], t->inc[id]);
        t->first[parent] += t->inc[id].bytes || t->inc[id].count;
    }
    for (uint32_t v = 1; v <= n + 1; v++) /* first[v]: where v's callees end */
        t->first[v] += t->first[v - 1];
    if (!(t->kids = malloc(((size_t)t->first[n + 1] + 1) * sizeof *t->kids)))
        return -1;
    for (uint32_t id = n; id >= 1; id--) /* ... and, moved down, where they start */
        if (t->inc[id].bytes || t->inc[id].count)
            t->kids[--t->first[parent_of(t, id)]] = (mp_node_amount_t){t->inc[id], id};
    return 0;
}

/* Sorts node v's callees, biggest first, and returns how many are listed:
 * those above the cut, at most --top of them, none past --depth. The rest
 * go in *hidden. */
static uint32_t list_callees(const tree_t *t, uint32_t v, uint32_t depth, item_t *hidden)
{
    mp_node_amount_t *k = t->kids + t->first[v];
    uint32_t nk = t->first[v + 1] - t->first[v], shown = 0;
    mp_sort_node_amounts(k, nk);
    if (depth < t->o->depth)
        while (shown < nk && shown < t->c->top && share(t, k[shown].amount.bytes) >= t->o->cut)
            shown++;
    *hidden = (item_t){.id = v, .depth = depth, .hidden = 1, .nhidden = nk - shown};
    for (uint32_t i = shown; i < nk; i++)
        mp_amount_add(&hidden->amount, k[i].amount);
    return shown;
}

static int push(item_t **st, size_t *n, size_t *cap, item_t it)
{
    if (*n == *cap) {
        size_t c = *cap ? 2 * *cap : 256;
        item_t *s = realloc(*st, c * sizeof *s);
        if (!s)
            return -1;
        *st = s;
        *cap = c;
    }
    (*st)[(*n)++] = it;
    return 0;
}

/* Depth first from the root, biggest callees first: `node` for each node
 * shown (it returns where the node's callees go, for JSON), `hidden` after
 * a node's callees when some are not listed. */
static int tree_walk(tree_t *t, cJSON *into, tree_node_fn node, tree_hidden_fn hidden)
{
    item_t *st = NULL;
    size_t n = 0, cap = 0;
    int rc = push(&st, &n, &cap, (item_t){.into = into});
    while (rc == 0 && n) {
        item_t it = st[--n], rest;
        if (it.hidden) {
            if (hidden)
                hidden(t, &it);
            continue;
        }
        uint32_t shown = list_callees(t, it.id, it.depth, &rest);
        it.nhidden = rest.nhidden;
        it.amount = rest.amount;
        cJSON *kids = node(t, &it);
        if (rest.nhidden)
            rc = push(&st, &n, &cap, rest);
        for (uint32_t i = shown; rc == 0 && i-- > 0;)
            rc = push(&st, &n, &cap,
                      (item_t){.id = t->kids[t->first[it.id] + i].node, .depth = it.depth + 1, .into = kids});
    }
    free(st);
    return rc;
}

/* ---- text ---- */

/* One line: the amount's columns, then the label indented to `depth`. */
static void text_line(const tree_t *t, mp_amount_t x, uint32_t depth, const mp_srcframe_t *f, const char *text)
{
    char b[32], k[32], lead[48], label[COLUMNS + 1];
    int used = printf("%10s %5.1f%% %9s  ", mp_human_bytes(x.bytes, b, sizeof b), share(t, x.bytes),
                      mp_group_digits(x.count, k, sizeof k));
    if (depth > INDENT_MAX) { /* the deepest indent, the depth written in it */
        char mark[24];
        snprintf(mark, sizeof mark, "[depth %u] ", depth);
        snprintf(lead, sizeof lead, "%*s", (int)(2 * INDENT_MAX), mark);
    } else {
        snprintf(lead, sizeof lead, "%*s", (int)(2 * (depth ? depth - 1 : 0)), "");
    }
    int room = COLUMNS - used - (int)strlen(lead);
    if (room < 12)
        room = 12;
    if (f)
        mp_frame_label(f, (size_t)room, label, sizeof label);
    else
        snprintf(label, sizeof label, "%.*s", room, text);
    printf("%s%s\n", lead, label);
}

/* Node id's frame; "?" when the capture cannot say (a node is never left out). */
static void node_frame(const tree_t *t, uint32_t id, mp_srcframe_t *f)
{
    uint32_t parent;
    if (mp_node_frame(t->a, id, f, &parent))
        *f = (mp_srcframe_t){.function = "?", .file = "?", .line = -1};
}

static cJSON *text_node(tree_t *t, const item_t *it)
{
    mp_srcframe_t f;
    if (it->id) {
        node_frame(t, it->id, &f);
        text_line(t, t->inc[it->id], it->depth, &f, NULL);
    }
    return NULL;
}

static void text_hidden(tree_t *t, const item_t *it)
{
    char what[64];
    snprintf(what, sizeof what, "... %u %s", it->nhidden, it->depth >= t->o->depth ? "deeper" : "smaller");
    text_line(t, it->amount, it->depth + 1, NULL, what);
}

static int print_text(tree_t *t)
{
    const mp_report_cli_t *c = t->c;
    const mp_analysis_t *a = t->a;
    char b[32], k[32], fb[128];
    printf("%scapture%s  %s\n", mp_bold(c), mp_reset(c), c->path);
    if (!t->o->leaks)
        printf("peak     %s in %s blocks, %.3f s after the start\n", mp_human_bytes(t->inc[0].bytes, b, sizeof b),
               mp_group_digits(t->inc[0].count, k, sizeof k), (double)a->peak_time_us / 1e6);
    else
        printf("leaked   %s in %s blocks, %s\n", mp_human_bytes(t->inc[0].bytes, b, sizeof b),
               mp_group_digits(t->inc[0].count, k, sizeof k),
               a->has_end ? "live when the script ended" : "live at exit (the capture has no script-end mark)");
    if (*mp_report_cli_filter_text(c, fb, sizeof fb))
        printf("filter   %s (only allocations made there count)\n", fb);
    printf("cut      callees under %g%% of it (%s) folded into one line\n", t->o->cut,
           mp_human_bytes((uint64_t)((double)t->inc[0].bytes * t->o->cut / 100), b, sizeof b));
    if (!t->inc[0].bytes && !t->inc[0].count) {
        printf("\nnothing was live %s\n",
               !t->o->leaks ? "at the peak" : a->has_end ? "when the script ended" : "at exit");
        return 0;
    }
    printf("\n%s%10s %6s %9s  %s%s\n", mp_bold(c), "bytes", "share", "blocks", "frame (callers above callees)",
           mp_reset(c));
    int rc = tree_walk(t, NULL, text_node, text_hidden);
    mp_amount_t none = own(t, 0);
    if (rc == 0 && (none.bytes || none.count))
        text_line(t, none, 1, NULL, "(no stack)");
    return rc;
}

/* ---- JSON ---- */

static cJSON *json_hidden(mp_amount_t x, uint32_t n)
{
    cJSON *o = mp_json_amount(x);
    cJSON_AddNumberToObject(o, "callees", n);
    return o;
}

static cJSON *json_node(tree_t *t, const item_t *it)
{
    mp_srcframe_t f;
    if (!it->id) { /* the root: the document's top */
        cJSON_AddItemToObject(t->json, "hidden", json_hidden(it->amount, it->nhidden));
        return it->into;
    }
    node_frame(t, it->id, &f);
    mp_amount_t x = t->inc[it->id];
    cJSON *o = mp_json_frame(&f);
    cJSON_AddNumberToObject(o, "bytes", (double)x.bytes);
    cJSON_AddNumberToObject(o, "allocations", (double)x.count);
    cJSON_AddNumberToObject(o, "share", share(t, x.bytes));
    cJSON_AddItemToObject(o, "own", mp_json_amount(own(t, it->id)));
    cJSON_AddItemToObject(o, "hidden", json_hidden(it->amount, it->nhidden));
    if (!cJSON_AddItemToArray(it->into, o)) {
        cJSON_Delete(o);
        return NULL;
    }
    return cJSON_AddArrayToObject(o, "children");
}

static int print_json(tree_t *t)
{
    cJSON *root = t->json = cJSON_CreateObject();
    cJSON_AddItemToObject(root, "capture", mp_json_capture(t->a->r, t->c->path));
    cJSON_AddItemToObject(root, "filter", mp_report_cli_filter_json(t->c));
    cJSON_AddStringToObject(root, "at", t->o->leaks ? "script_end" : "peak");
    cJSON_AddBoolToObject(root, "script_end_marked", t->a->has_end);
    cJSON_AddNumberToObject(root, "cut_percent", t->o->cut);
    cJSON_AddNumberToObject(root, "max_depth", (double)t->o->depth);
    cJSON_AddItemToObject(root, "total", mp_json_amount(t->inc[0]));
    cJSON_AddItemToObject(root, "no_stack", mp_json_amount(own(t, 0)));
    int rc = tree_walk(t, cJSON_AddArrayToObject(root, "tree"), json_node, NULL);
    char *s = rc ? NULL : cJSON_PrintUnformatted(root);
    if (s)
        puts(s);
    else
        rc = -1;
    free(s);
    cJSON_Delete(root);
    return rc;
}

int main(int argc, char **argv)
{
    tree_opts_t o = {.cut = 1, .depth = TREE_DEPTH_MAX};
    mp_report_cli_t c = {.prog = "memprof tree", .usage = usage, .top = 1000, .ctx = &o};
    mp_report_cli_parse(&c, argc, argv, tree_option);
    mp_analysis_t a;
    memprof_reader_t *r = mp_report_cli_run(&c, &a);
    tree_t t = {.a = &a, .c = &c, .o = &o};
    int rc = tree_build(&t);
    if (rc == 0 && c.json)
        rc = print_json(&t);
    else if (rc == 0)
        rc = print_text(&t);
    free(t.inc);
    free(t.first);
    free(t.kids);
    mp_report_cli_done(&c, &a, r);
    if (rc)
        mp_cli_die(c.prog, "%s: out of memory while building the tree", c.path);
    return 0;
}
