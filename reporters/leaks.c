/* leaks.c - `memprof leaks FILE`: what was still live when the script ended
 * (with --at-exit: when the process exited), by stack, biggest first, each
 * with its whole stack, innermost frame first. Stacks with a frame that
 * matches an --ignore pattern (known leaks) are left out and counted apart.
 * Each stack node is matched at most once: linear in the nodes. */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis.h"
#include "cli_common.h"
#include "report.h"
#include "report_cli.h"

static const char usage[] =
    "usage: memprof leaks [options] FILE\n"
    "\n"
    "What was still live when the script ended, by stack, biggest first, each\n"
    "with its number of blocks and its stack (innermost frame first).\n"
    "\n"
    "options:\n"
    "  --at-exit         what was live when the process exited instead\n"
    "  --ignore PATTERN  leave out the stacks with a frame whose function, file\n"
    "                    (path or base name), file:line or native module\n"
    "                    matches the glob PATTERN (known leaks; repeatable)\n"
    "  --top N           stacks to list (default 10)\n"
    "  --json            machine-readable output (schema: docs/reports.md)\n"
    "  --from T          count only allocations made from T seconds after the start\n"
    "  --to T            ... and up to T seconds (1.5, 1.5s, 250ms)\n"
    "  --thread N        count only thread N's allocations (numbered as in stats)\n"
    "  -h, --help        show this help\n";

#define COLUMNS 80

typedef struct {
    int at_exit;
    const char **ignore;
    size_t nignore;
} leaks_opts_t;

typedef struct {
    const mp_analysis_t *a;
    const mp_report_cli_t *c;
    const leaks_opts_t *o;
    uint8_t *memo;          /* per node: 0 not known yet, 1 no frame of its stack matches, 2 one does */
    uint32_t *path;         /* nodes on the way up to one already known */
    mp_node_amount_t *v;    /* the stacks not ignored (their innermost node), biggest first */
    size_t n;
    mp_amount_t total, suppressed, more;
    size_t nstacks, nsuppressed;
} leaks_t;

static int leaks_option(mp_report_cli_t *c, int argc, char **argv, int i)
{
    leaks_opts_t *o = c->ctx;
    int took = 1;
    if (!strcmp(argv[i], "--at-exit")) {
        o->at_exit = 1;
    } else if (mp_report_cli_is(argv[i], "--ignore")) {
        const char *v = mp_report_cli_value(c, argc, argv, i, &took);
        if (!*v)
            mp_cli_die(c->prog, "--ignore needs a pattern (a function, a file or file:line, * and ? allowed)");
        o->ignore[o->nignore++] = v;
    } else {
        took = 0;
    }
    return took;
}

static mp_amount_t held(const leaks_t *L, uint32_t id)
{
    return L->o->at_exit ? L->a->st[id].cur : L->a->st[id].at_end;
}

static const char *plural(uint64_t n) { return n == 1 ? "" : "s"; }

static int match(const char *pattern, const char *s) { return s && fnmatch(pattern, s, 0) == 0; }

/* Node id's own frame matches a pattern. */
static int frame_ignored(const leaks_t *L, uint32_t id)
{
    mp_srcframe_t f;
    uint32_t parent;
    if (mp_node_frame(L->a, id, &f, &parent))
        return 0;
    const char *base = strrchr(f.file, '/') ? strrchr(f.file, '/') + 1 : f.file;
    char at[4096], base_at[4096];
    snprintf(at, sizeof at, "%s:%d", f.file, f.line);
    snprintf(base_at, sizeof base_at, "%s:%d", base, f.line);
    for (size_t i = 0; i < L->o->nignore; i++) {
        const char *p = L->o->ignore[i];
        if (match(p, f.function) || match(p, f.file) || match(p, base) || match(p, f.module) ||
            (f.line >= 0 && (match(p, at) || match(p, base_at))))
            return 1;
    }
    return 0;
}

/* A frame of the stack ending at node id matches a pattern. Up to the
 * first node already known, then down again, noting each. */
static int stack_ignored(leaks_t *L, uint32_t id)
{
    uint32_t v = id, n = 0, parent, code;
    int32_t line;
    while (v && !L->memo[v]) {
        L->path[n++] = v;
        if (memprof_reader_node(L->a->r, v, &parent, &code, &line) || parent >= v)
            parent = 0;
        v = parent;
    }
    uint8_t s = v ? L->memo[v] : 1;
    while (n--) {
        if (s == 1 && frame_ignored(L, L->path[n]))
            s = 2;
        L->memo[L->path[n]] = s;
    }
    return s == 2;
}

/* Every stack still holding something: the ignored ones counted apart, the
 * others sorted, those past --top summed in `more`. */
static int leaks_collect(leaks_t *L)
{
    const mp_analysis_t *a = L->a;
    uint32_t nodes = memprof_reader_node_count(a->r);
    uint32_t lim = a->nst < nodes + 1 ? a->nst : nodes + 1;
    L->v = malloc(((size_t)lim + 1) * sizeof *L->v);
    if (L->o->nignore) {
        L->memo = calloc((size_t)nodes + 1, 1);
        L->path = malloc(((size_t)nodes + 1) * sizeof *L->path);
    }
    if (!L->v || (L->o->nignore && (!L->memo || !L->path)))
        return -1;
    for (uint32_t id = 0; id < lim; id++) {
        mp_amount_t x = held(L, id);
        if (!x.bytes && !x.count)
            continue;
        mp_amount_add(&L->total, x);
        L->nstacks++;
        if (id && L->o->nignore && stack_ignored(L, id)) {
            mp_amount_add(&L->suppressed, x);
            L->nsuppressed++;
        } else {
            L->v[L->n++] = (mp_node_amount_t){x, id};
        }
    }
    mp_sort_node_amounts(L->v, L->n);
    for (size_t i = L->c->top; i < L->n; i++)
        mp_amount_add(&L->more, L->v[i].amount);
    return 0;
}

/* ---- text ---- */

static void print_stack(const leaks_t *L, uint32_t node)
{
    char label[COLUMNS + 1];
    if (!node)
        printf("      (no stack recorded)\n");
    for (uint32_t guard = 0; node && guard < (1u << 20); guard++) {
        mp_srcframe_t f;
        if (mp_node_frame(L->a, node, &f, &node))
            break;
        printf("      %s\n", mp_frame_label(&f, COLUMNS - 6, label, sizeof label));
    }
}

static void print_ignored(const leaks_t *L)
{
    char b[32], k[32], pats[COLUMNS + 1];
    size_t n = 0;
    pats[0] = '\0';
    for (size_t i = 0; i < L->o->nignore && n < sizeof pats; i++)
        n += (size_t)snprintf(pats + n, sizeof pats - n, "%s%s", i ? " " : "", L->o->ignore[i]);
    int used = printf("ignored  %s in %s block%s, %zu stack%s (", mp_human_bytes(L->suppressed.bytes, b, sizeof b),
                      mp_group_digits(L->suppressed.count, k, sizeof k), plural(L->suppressed.count), L->nsuppressed,
                      plural(L->nsuppressed));
    int room = COLUMNS - used - 1;
    if ((int)strlen(pats) > room && room > 3)
        printf("%.*s...)\n", room - 3, pats);
    else
        printf("%s)\n", pats);
}

static void print_text(const leaks_t *L)
{
    const mp_report_cli_t *c = L->c;
    char b[32], k[32], fb[128];
    printf("%scapture%s  %s\n", mp_bold(c), mp_reset(c), c->path);
    printf("%s %s in %s block%s, %zu stack%s: live %s\n", L->o->at_exit ? "at exit " : "leaked  ",
           mp_human_bytes(L->total.bytes, b, sizeof b), mp_group_digits(L->total.count, k, sizeof k),
           plural(L->total.count), L->nstacks, plural(L->nstacks),
           L->o->at_exit ? "when the process exited" : L->a->has_end ? "when the script ended" : "at exit");
    if (!L->o->at_exit && !L->a->has_end)
        printf("         (the capture has no script-end mark: what was live at its end)\n");
    if (*mp_report_cli_filter_text(c, fb, sizeof fb))
        printf("filter   %s (only allocations made there count)\n", fb);
    if (L->o->nignore)
        print_ignored(L);
    for (size_t i = 0; i < L->n && i < c->top; i++) {
        printf("\n%s%3zu. %s in %s block%s%s\n", mp_bold(c), i + 1, mp_human_bytes(L->v[i].amount.bytes, b, sizeof b),
               mp_group_digits(L->v[i].amount.count, k, sizeof k), plural(L->v[i].amount.count), mp_reset(c));
        print_stack(L, L->v[i].node);
    }
    if (L->n > c->top)
        printf("\n%zu more stack%s: %s in %s block%s\n", L->n - c->top, plural(L->n - c->top),
               mp_human_bytes(L->more.bytes, b, sizeof b), mp_group_digits(L->more.count, k, sizeof k),
               plural(L->more.count));
    if (!L->n)
        printf("\nno leaks%s\n", L->nsuppressed ? " but the ignored ones" : "");
}

/* ---- JSON ---- */

static cJSON *json_stacks(mp_amount_t x, size_t n)
{
    cJSON *o = mp_json_amount(x);
    cJSON_AddNumberToObject(o, "stacks", (double)n);
    return o;
}

static int print_json(const leaks_t *L)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddItemToObject(root, "capture", mp_json_capture(L->a->r, L->c->path));
    cJSON_AddItemToObject(root, "filter", mp_report_cli_filter_json(L->c));
    cJSON_AddStringToObject(root, "at", L->o->at_exit ? "exit" : "script_end");
    cJSON_AddBoolToObject(root, "script_end_marked", L->a->has_end);
    cJSON_AddItemToObject(root, "total", json_stacks(L->total, L->nstacks));
    cJSON *sup = json_stacks(L->suppressed, L->nsuppressed);
    cJSON_AddItemToObject(sup, "patterns", cJSON_CreateStringArray(L->o->ignore, (int)L->o->nignore));
    cJSON_AddItemToObject(root, "suppressed", sup);
    cJSON *arr = cJSON_AddArrayToObject(root, "stacks");
    for (size_t i = 0; i < L->n && i < L->c->top; i++) {
        cJSON *o = mp_json_amount(L->v[i].amount);
        cJSON_AddItemToObject(o, "stack", mp_json_stack(L->a, L->v[i].node));
        cJSON_AddItemToArray(arr, o);
    }
    cJSON_AddItemToObject(root, "more", json_stacks(L->more, L->n > L->c->top ? L->n - L->c->top : 0));
    char *s = cJSON_PrintUnformatted(root);
    int rc = s ? 0 : -1;
    if (s)
        puts(s);
    free(s);
    cJSON_Delete(root);
    return rc;
}

int main(int argc, char **argv)
{
    leaks_opts_t o = {.ignore = calloc((size_t)argc, sizeof *o.ignore)};
    if (!o.ignore)
        mp_cli_die("memprof leaks", "out of memory");
    mp_report_cli_t c = {.prog = "memprof leaks", .usage = usage, .ctx = &o};
    mp_report_cli_parse(&c, argc, argv, leaks_option);
    mp_analysis_t a;
    memprof_reader_t *r = mp_report_cli_run(&c, &a);
    leaks_t L = {.a = &a, .c = &c, .o = &o};
    int rc = leaks_collect(&L);
    if (rc == 0 && c.json)
        rc = print_json(&L);
    else if (rc == 0)
        print_text(&L);
    free(L.v);
    free(L.memo);
    free(L.path);
    free(o.ignore);
    mp_report_cli_done(&c, &a, r);
    if (rc)
        mp_cli_die(c.prog, "%s: out of memory while listing the leaks", c.path);
    return 0;
}
