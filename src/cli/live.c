/* live.c - the live view (live.h): a stream reader and the analysis fed as
 * the capture arrives, and an ncurses screen drawn from them.
 *
 * Each draw asks the analysis for the figures now (mp_analysis_now: what
 * every stack holds and has allocated, for one thread or all) and joins the
 * locations holding the most now with those that allocated the most, so a
 * row shows both whatever the order. O(sites + stack nodes) a second. */
#define _GNU_SOURCE
#include "live.h"

#include <curses.h>
#include <locale.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "memprof/memprof.h"
#include "report.h"

#define DRAW_EVERY_MS 1000

enum { SORT_LIVE, SORT_BLOCKS, SORT_ALLOCATED, SORT_ALLOCATIONS, NSORT };
static const char *const sort_names[NSORT] = {"live bytes", "live blocks", "allocated bytes", "allocations"};

/* A location (code and line, or native module and offset) with what it
 * holds now and what it allocated in all. */
typedef struct {
    uint32_t code;
    int line;
    uint64_t offset;
    uint32_t node;      /* names it (mp_node_frame) */
    mp_amount_t now, total;
} row_t;

struct mp_liveview_s {
    memprof_reader_t *r;
    mp_analysis_t a;
    int begun, rc, ended, on;
    char why[200];
    SCREEN *screen;
    int sort, first;        /* order; first row shown (scrolled down) */
    uint32_t thread;        /* 0: all */
    uint64_t next_draw_ms;
    /* allocation rate: over the capture's time since the last draw */
    uint64_t rate_us, rate_count, rate_bytes;
    double per_s, bytes_per_s;
    row_t *rows;
    size_t nrows;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

mp_liveview_t *mp_live_new(void)
{
    mp_liveview_t *lv = calloc(1, sizeof *lv);
    if (!lv)
        return NULL;
    if (memprof_reader_open_stream(&lv->r) != 0 || mp_analysis_begin(&lv->a, lv->r, NULL) != 0) {
        mp_live_free(lv);
        return NULL;
    }
    lv->begun = 1;
    return lv;
}

void mp_live_free(mp_liveview_t *lv)
{
    if (!lv)
        return;
    mp_live_hide(lv);
    if (lv->begun)
        mp_analysis_free(&lv->a);
    memprof_reader_close(lv->r);
    free(lv->rows);
    free(lv);
}

int mp_live_feed(mp_liveview_t *lv, const void *data, size_t n)
{
    if (lv->rc || lv->ended)
        return lv->rc;
    if ((lv->rc = memprof_reader_feed(lv->r, data, n)) == 0) {
        int rc = mp_analysis_feed(&lv->a);
        if (rc < 0 && rc != MEMPROF_EAGAIN)
            lv->rc = rc;
    }
    return lv->rc;
}

void mp_live_ended(mp_liveview_t *lv, const char *why)
{
    if (!lv->ended) {
        memprof_reader_feed_end(lv->r);
        if (!lv->rc) {
            int rc = mp_analysis_feed(&lv->a);
            if (rc < 0)
                lv->rc = rc;
        }
        lv->ended = 1;
        lv->next_draw_ms = 0;
    }
    if (strncmp(lv->why, why, sizeof lv->why - 1)) { /* news: shown at once */
        snprintf(lv->why, sizeof lv->why, "%s", why);
        lv->next_draw_ms = 0;
    }
}

const char *mp_live_error(const mp_liveview_t *lv)
{
    if (!lv->rc)
        return "";
    const char *e = memprof_reader_error(lv->r);
    return strcmp(e, "no error") ? e : memprof_strerror(lv->rc);
}

mp_analysis_t *mp_live_analysis(mp_liveview_t *lv) { return &lv->a; }

int mp_live_finish(mp_liveview_t *lv) { return lv->rc ? lv->rc : mp_analysis_finish(&lv->a); }

int mp_live_show(mp_liveview_t *lv, char *err, size_t len)
{
    setlocale(LC_ALL, "");
    lv->screen = newterm(NULL, stdout, stdin);
    if (!lv->screen) {
        const char *term = getenv("TERM");
        snprintf(err, len, "cannot use the terminal (TERM=%s) for the live view", term ? term : "");
        return -1;
    }
    set_term(lv->screen);
    cbreak();
    noecho();
    nodelay(stdscr, TRUE);
    keypad(stdscr, TRUE);
    curs_set(0);
    lv->on = 1;
    lv->next_draw_ms = 0;
    return 0;
}

void mp_live_hide(mp_liveview_t *lv)
{
    if (!lv->on)
        return;
    endwin();
    delscreen(lv->screen);
    lv->screen = NULL;
    lv->on = 0;
}

/* The next thread (dir 1) or the one before (-1) that allocated anything,
 * through 0 (all threads). */
static uint32_t next_thread(const mp_liveview_t *lv, int dir)
{
    uint32_t n = lv->a.nthreads, t = lv->thread;
    for (uint32_t k = 0; k <= n; k++) {
        t = dir > 0 ? (t >= n ? 0 : t + 1) : (t == 0 ? n : t - 1);
        if (t == 0 || lv->a.thr[t].total.count)
            return t;
    }
    return 0;
}

int mp_live_keys(mp_liveview_t *lv)
{
    if (!lv->on)
        return 0;
    for (int ch; (ch = getch()) != ERR;) {
        switch (ch) {
        case 'q':
        case 'Q':
            mp_live_hide(lv);
            return 1;
        case 's': lv->sort = (lv->sort + 1) % NSORT, lv->first = 0; break;
        case 'S': lv->sort = (lv->sort + NSORT - 1) % NSORT, lv->first = 0; break;
        case 't': lv->thread = next_thread(lv, 1), lv->first = 0; break;
        case 'T': lv->thread = next_thread(lv, -1), lv->first = 0; break;
        case KEY_DOWN: lv->first++; break;
        case KEY_UP: lv->first -= lv->first > 0; break;
        case KEY_NPAGE: lv->first += LINES / 2; break;
        case KEY_PPAGE: lv->first = lv->first > LINES / 2 ? lv->first - LINES / 2 : 0; break;
        case KEY_HOME: lv->first = 0; break;
        case KEY_RESIZE: break;
        default: continue;
        }
        lv->next_draw_ms = 0;
    }
    return 0;
}

int mp_live_wait_ms(const mp_liveview_t *lv)
{
    if (!lv->on)
        return DRAW_EVERY_MS;
    uint64_t t = now_ms();
    return lv->next_draw_ms <= t ? 0 : (int)(lv->next_draw_ms - t);
}

/* ---- the figures ---- */

static int key_cmp(const row_t *x, const row_t *y)
{
    if (x->code != y->code)
        return x->code < y->code ? -1 : 1;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int by_key(const void *x, const void *y) { return key_cmp(x, y); }

static int sort_order;

static int cmp_u64(uint64_t x, uint64_t y) { return x < y ? 1 : x > y ? -1 : 0; } /* descending */

static int by_order(const void *x, const void *y)
{
    const row_t *a = x, *b = y;
    int c = 0;
    switch (sort_order) {
    case SORT_LIVE: c = cmp_u64(a->now.bytes, b->now.bytes); break;
    case SORT_BLOCKS: c = cmp_u64(a->now.count, b->now.count); break;
    case SORT_ALLOCATED: c = cmp_u64(a->total.bytes, b->total.bytes); break;
    default: c = cmp_u64(a->total.count, b->total.count); break;
    }
    if (!c)
        c = cmp_u64(a->now.bytes, b->now.bytes);
    if (!c)
        c = cmp_u64(a->total.bytes, b->total.bytes);
    return c ? c : key_cmp(a, b);
}

/* rows: every location with something now or in all, in the view's order. */
static int collect(mp_liveview_t *lv)
{
    mp_analysis_t *a = &lv->a;
    mp_location_t *now = NULL, *all = NULL;
    size_t nn = 0, na = 0;
    if (mp_analysis_now(a, lv->thread) || mp_top_locations(a, MP_NOW, SIZE_MAX, &now, &nn) ||
        mp_top_locations(a, MP_TOTAL, SIZE_MAX, &all, &na)) {
        free(now);
        return -1;
    }
    row_t *rows = malloc((nn + na + 1) * sizeof *rows);
    if (!rows) {
        free(now);
        free(all);
        return -1;
    }
    size_t n = 0;
    for (size_t i = 0; i < nn; i++)
        rows[n++] = (row_t){now[i].code, now[i].line, now[i].offset, now[i].node, now[i].amount, {0, 0}};
    for (size_t i = 0; i < na; i++)
        rows[n++] = (row_t){all[i].code, all[i].line, all[i].offset, all[i].node, {0, 0}, all[i].amount};
    free(now);
    free(all);
    /* one row per location: the two lists joined on it */
    qsort(rows, n, sizeof *rows, by_key);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (k && !key_cmp(&rows[k - 1], &rows[i])) {
            rows[k - 1].now.bytes += rows[i].now.bytes, rows[k - 1].now.count += rows[i].now.count;
            rows[k - 1].total.bytes += rows[i].total.bytes, rows[k - 1].total.count += rows[i].total.count;
        } else {
            rows[k++] = rows[i];
        }
    }
    sort_order = lv->sort;
    qsort(rows, k, sizeof *rows, by_order);
    free(lv->rows);
    lv->rows = rows;
    lv->nrows = k;
    return 0;
}

static void rate(mp_liveview_t *lv)
{
    const mp_analysis_t *a = &lv->a;
    uint64_t dt = a->last_time_us - lv->rate_us;
    if (a->last_time_us < lv->rate_us || dt < 200000) /* too short to say */
        return;
    lv->per_s = (double)(a->allocated.count - lv->rate_count) * 1e6 / (double)dt;
    lv->bytes_per_s = (double)(a->allocated.bytes - lv->rate_bytes) * 1e6 / (double)dt;
    lv->rate_us = a->last_time_us;
    lv->rate_count = a->allocated.count;
    lv->rate_bytes = a->allocated.bytes;
}

/* ---- drawing ---- */

/* Text at (y, x), cut at the screen's right edge. */
static void put(int y, int x, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void put(int y, int x, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (y < 0 || y >= LINES || x >= COLS)
        return;
    mvaddnstr(y, x, buf, COLS - x);
}

/* Two columns: the left text, then the right one at column RIGHT (or
 * further, past the left text). */
#define RIGHT 46
static void pair(int y, const char *left, const char *right)
{
    put(y, 1, "%s", left);
    int x = (int)strlen(left) + 3;
    put(y, x > RIGHT ? x : RIGHT, "%s", right);
}

/* A line in reverse video across the screen. */
static void bar(int y, const char *left, const char *right)
{
    attron(A_REVERSE);
    mvhline(y, 0, ' ', COLS);
    int w = (int)strlen(right), room = COLS - 1 - (w ? w + 3 : 0); /* the right part is kept whole */
    if (room > 0)
        mvaddnstr(y, 1, left, room);
    if (w && w + 2 < COLS)
        put(y, COLS - w - 1, "%s", right);
    attroff(A_REVERSE);
}

static const char *location(const mp_analysis_t *a, const row_t *row, char *buf, size_t len)
{
    mp_srcframe_t f;
    uint32_t parent;
    if (mp_node_frame(a, row->node, &f, &parent))
        return "?";
    return mp_frame_label(&f, len - 1, buf, len); /* the reports' "function (file:line)" */
}

static void draw_figures(mp_liveview_t *lv, int *y)
{
    const mp_analysis_t *a = &lv->a;
    char b1[32], b2[32], c1[32], c2[32], l[256], r[256];
    snprintf(l, sizeof l, "heap     now %s in %s blocks", mp_human_bytes(a->live.bytes, b1, sizeof b1),
             mp_group_digits(a->live.count, c1, sizeof c1));
    snprintf(r, sizeof r, "peak %s at %.1f s", mp_human_bytes(a->peak.bytes, b2, sizeof b2),
             (double)a->peak_time_us / 1e6);
    pair((*y)++, l, r);
    snprintf(l, sizeof l, "RSS      now %s", a->samples ? mp_human_bytes(a->rss_now_kib * 1024, b1, sizeof b1) : "-");
    snprintf(r, sizeof r, "peak %s", a->samples ? mp_human_bytes(a->rss_peak_kib * 1024, b2, sizeof b2) : "-");
    pair((*y)++, l, r);
    snprintf(l, sizeof l, "rate     %s allocations/s, %s/s", mp_group_digits((uint64_t)(lv->per_s + 0.5), c1, sizeof c1),
             mp_human_bytes((uint64_t)(lv->bytes_per_s + 0.5), b1, sizeof b1));
    snprintf(r, sizeof r, "in all %s allocations, %s", mp_group_digits(a->allocated.count, c2, sizeof c2),
             mp_human_bytes(a->allocated.bytes, b2, sizeof b2));
    pair((*y)++, l, r);
    if (lv->thread) {
        const char *name = memprof_reader_thread_name(a->r, lv->thread);
        uint64_t tid = memprof_reader_thread_tid(a->r, lv->thread);
        mp_stackstat_t sum = {0}, *t = &sum; /* its sites' (the per-thread sums come at the end) */
        for (uint32_t i = 0; i < a->nsites; i++) {
            if (a->sites[i].thread != lv->thread)
                continue;
            sum.cur.bytes += a->sites[i].s.cur.bytes, sum.cur.count += a->sites[i].s.cur.count;
            sum.total.bytes += a->sites[i].s.total.bytes, sum.total.count += a->sites[i].s.total.count;
        }
        put((*y)++, 1, "thread   %u%s%s%s (tid %llu): now %s in %s blocks, %s allocated", lv->thread,
            name ? " \"" : "", name ? name : (lv->thread == 1 ? " (main)" : ""), name ? "\"" : "",
            (unsigned long long)tid, mp_human_bytes(t->cur.bytes, b1, sizeof b1),
            mp_group_digits(t->cur.count, c1, sizeof c1), mp_human_bytes(t->total.bytes, b2, sizeof b2));
    } else {
        uint32_t n = 0;
        for (uint32_t t = 1; t <= a->nthreads; t++)
            n += a->thr[t].total.count > 0;
        put((*y)++, 1, "thread   all (%u with allocations)", n);
    }
    put((*y)++, 1, "sorted   by %s", sort_names[lv->sort]);
}

static void draw_rows(mp_liveview_t *lv, int y)
{
    static const int col[] = {11, 10, 11, 12}; /* right-aligned widths */
    static const char *const head[] = {"live", "blocks", "allocated", "allocations"};
    int x = 1;
    attron(A_BOLD);
    for (int k = 0; k < 4; k++) {
        if (k == lv->sort)
            attron(A_UNDERLINE);
        put(y, x, "%*s", col[k], head[k]);
        if (k == lv->sort)
            attroff(A_UNDERLINE);
        x += col[k] + 1;
    }
    put(y, x + 1, "location");
    attroff(A_BOLD);
    y++;
    int room = LINES - 1 - y;
    if (room <= 0)
        return;
    if (lv->first > 0 && (size_t)lv->first + (size_t)room > lv->nrows)
        lv->first = lv->nrows > (size_t)room ? (int)(lv->nrows - (size_t)room) : 0;
    char b[4][32], where[512];
    for (int i = 0; i < room && (size_t)(lv->first + i) < lv->nrows; i++) {
        const row_t *r = &lv->rows[lv->first + i];
        put(y + i, 1, "%*s %*s %*s %*s  %s", col[0], mp_human_bytes(r->now.bytes, b[0], sizeof b[0]), col[1],
            mp_group_digits(r->now.count, b[1], sizeof b[1]), col[2], mp_human_bytes(r->total.bytes, b[2], sizeof b[2]),
            col[3], mp_group_digits(r->total.count, b[3], sizeof b[3]), location(&lv->a, r, where, sizeof where));
    }
    if (!lv->nrows)
        put(y, 1, "no allocations yet%s", lv->thread ? " on this thread" : "");
}

void mp_live_draw(mp_liveview_t *lv, int force)
{
    if (!lv->on || (!force && mp_live_wait_ms(lv) > 0))
        return;
    lv->next_draw_ms = now_ms() + DRAW_EVERY_MS;
    const memprof_info_t *in = memprof_reader_info(lv->r);
    erase();
    char title[512] = "memprof live", when[64] = "";
    if (in->version_major) {
        size_t n = (size_t)snprintf(title, sizeof title, "memprof live  pid %llu ", (unsigned long long)in->pid);
        for (size_t i = 0; i < in->argv_len && n < sizeof title; i += strlen(in->argv + i) + 1)
            n += (size_t)snprintf(title + n, sizeof title - n, " %s", in->argv + i);
        snprintf(when, sizeof when, "%s %.1f s", lv->ended ? "ran" : "running", (double)lv->a.last_time_us / 1e6);
    }
    bar(0, title, when);
    int y = 2;
    if (lv->rc) {
        put(y, 1, "the capture cannot be read: %s", mp_live_error(lv));
    } else if (!in->version_major) {
        put(y, 1, lv->ended ? "the program wrote no capture" : "waiting for the program's first events...");
    } else {
        mp_analysis_add_modules(&lv->a);
        rate(lv);
        draw_figures(lv, &y);
        if (collect(lv) == 0)
            draw_rows(lv, y + 1);
        else
            put(y + 1, 1, "out of memory");
    }
    if (lv->ended)
        bar(LINES - 1, lv->why[0] ? lv->why : "the capture ended", "q: leave");
    else
        bar(LINES - 1, "q quit   s/S sort   t/T thread   up/down scroll", "");
    refresh();
}
