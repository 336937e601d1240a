/* test_stream.c - a capture read as it arrives (memprof_reader_feed: what
 * memprof run --aggregate and the live view read from their pipe) gives
 * exactly the events of the same bytes read from memory, however it is cut
 * into pieces; and an aggregated capture (aggregate.c), read back, gives
 * the figures of the replay it was written from.
 */
#define _GNU_SOURCE /* memfd_create */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "aggregate.h"
#include "analysis.h"
#include "memprof/memprof.h"
#include "report.h"
#include "rich_capture.h"
#include "testkit.h"

/* Feeds c's first `len` bytes in pieces of `piece` bytes (the last smaller),
 * reading every event the reader can give after each; then ends the stream
 * when `end`. Returns the events read; *rc the last next() result. */
static size_t feed_in_pieces(memprof_reader_t *r, const tk_capture_t *c, size_t len, size_t piece, int end,
                             memprof_event_t *out, size_t max, int *rc)
{
    size_t n = 0;
    *rc = MEMPROF_EAGAIN;
    for (size_t at = 0; at < len || end;) {
        if (at < len) {
            size_t k = len - at < piece ? len - at : piece;
            cr_assert_eq(memprof_reader_feed(r, c->data + at, k), 0);
            at += k;
        } else {
            memprof_reader_feed_end(r);
            end = 0;
        }
        memprof_event_t ev;
        while ((*rc = memprof_reader_next(r, &ev)) > 0) {
            cr_assert_lt(n, max, "more events than the capture holds");
            out[n++] = ev;
        }
        if (*rc != MEMPROF_EAGAIN)
            break;
    }
    return n;
}

static void rich_in_pieces(size_t piece)
{
    tk_capture_t c;
    rich_ids_t id;
    memset(&id, 0, sizeof id);
    rich_build(&c, &id);
    memprof_reader_t *r = NULL;
    cr_assert_eq(memprof_reader_open_stream(&r), 0);
    memprof_event_t *ev = calloc(c.nev + 1, sizeof *ev);
    int rc;
    size_t n = feed_in_pieces(r, &c, c.len, piece, 1, ev, c.nev + 1, &rc);
    cr_assert_eq(rc, 0, "pieces of %zu: %d (%s)", piece, rc, memprof_reader_error(r));
    cr_assert_eq(n, c.nev, "pieces of %zu: %zu events of %zu", piece, n, c.nev);
    for (size_t i = 0; i < n; i++)
        tk_assert_event(&ev[i], &c.ev[i], i);
    const memprof_info_t *in = memprof_reader_info(r);
    cr_assert(in->has_trailer && !in->truncated);
    cr_assert_eq(in->pid, TK_PID);
    cr_assert_eq(in->version_minor, MEMPROF_FORMAT_MINOR);
    /* the tables read as the rich capture defines them */
    cr_assert_str_eq(memprof_reader_thread_name(r, id.t1), rich_strings[RICH_NAME_T1]);
    cr_assert_str_eq(memprof_reader_thread_name(r, id.t2), rich_strings[RICH_NAME_T2]);
    cr_assert_eq(memprof_reader_next(r, &ev[0]), 0, "the end stays the end");
    free(ev);
    memprof_reader_close(r);
    tk_close(&c);
}

Test(stream, rich_capture_byte_by_byte) { rich_in_pieces(1); }
Test(stream, rich_capture_in_odd_pieces) { rich_in_pieces(7); }
Test(stream, rich_capture_in_pipe_reads) { rich_in_pieces(4096); }
Test(stream, rich_capture_at_once) { rich_in_pieces(1 << 30); }

Test(stream, nothing_until_the_header_is_there)
{
    tk_capture_t c;
    tk_begin(&c, 256);
    uint32_t t = tk_thread_new(&c, 5);
    tk_alloc(&c, t, MEMPROF_A_MALLOC, 0x1000, 10, 0);
    tk_finish(&c);
    memprof_reader_t *r = NULL;
    cr_assert_eq(memprof_reader_open_stream(&r), 0);
    memprof_event_t ev;
    cr_assert_eq(memprof_reader_next(r, &ev), MEMPROF_EAGAIN);
    cr_assert_eq(memprof_reader_feed(r, c.data, c.header_len - 1), 0);
    cr_assert_eq(memprof_reader_next(r, &ev), MEMPROF_EAGAIN);
    cr_assert_eq(memprof_reader_info(r)->version_major, 0, "no header yet");
    cr_assert_eq(memprof_reader_feed(r, c.data + c.header_len - 1, c.len - c.header_len + 1), 0);
    cr_assert_eq(memprof_reader_next(r, &ev), 1);
    cr_assert_eq(memprof_reader_info(r)->pid, TK_PID);
    tk_assert_event(&ev, &c.ev[0], 0);
    memprof_reader_close(r);
    tk_close(&c);
}

/* A stream that ends early reads as the file cut at the same byte would. */
Test(stream, ended_early_is_truncated)
{
    tk_capture_t c;
    rich_ids_t id;
    memset(&id, 0, sizeof id);
    rich_build(&c, &id);
    size_t cuts[] = {c.header_len + 10, c.len / 3, c.len / 2 + 5, c.end_mark + 2, c.len - 1};
    memprof_event_t *ev = calloc(c.nev + 1, sizeof *ev);
    for (size_t k = 0; k < sizeof cuts / sizeof *cuts; k++) {
        memprof_reader_t *r = NULL;
        cr_assert_eq(memprof_reader_open_stream(&r), 0);
        int rc;
        size_t n = feed_in_pieces(r, &c, cuts[k], 333, 1, ev, c.nev + 1, &rc);
        uint64_t want = tk_events_before(&c, cuts[k]);
        cr_assert_eq(rc, 0, "cut at %zu: %d (%s)", cuts[k], rc, memprof_reader_error(r));
        cr_assert_eq(n, want, "cut at %zu: %zu events, a file cut there gives %llu", cuts[k], n,
                     (unsigned long long)want);
        cr_assert_eq(memprof_reader_info(r)->truncated, 1, "cut at %zu", cuts[k]);
        memprof_reader_close(r);
    }
    free(ev);
    tk_close(&c);
}

Test(stream, not_a_capture)
{
    static const char junk[] = "#!/usr/bin/env python3\nprint('hello')\n";
    memprof_reader_t *r = NULL;
    cr_assert_eq(memprof_reader_open_stream(&r), 0);
    cr_assert_eq(memprof_reader_feed(r, junk, sizeof junk - 1), 0);
    memprof_event_t ev;
    int rc = memprof_reader_next(r, &ev);
    cr_assert(rc < 0 && rc != MEMPROF_EAGAIN, "%d", rc);
    cr_assert(strstr(memprof_reader_error(r), "not a memprof capture"), "%s", memprof_reader_error(r));
    cr_assert_eq(memprof_reader_next(r, &ev), rc, "the error is sticky");
    memprof_reader_close(r);
}

/* ---- aggregated captures ---- */

/* Writes a's aggregate to memory and opens it. */
static memprof_reader_t *aggregate_of(const mp_analysis_t *a, uint8_t **data, size_t *len)
{
    int fd = memfd_create("aggregate", 0);
    cr_assert_geq(fd, 0);
    cr_assert_eq(mp_aggregate_write(a, fd), 0);
    off_t n = lseek(fd, 0, SEEK_END);
    cr_assert_gt(n, 0);
    *len = (size_t)n;
    *data = malloc(*len);
    cr_assert_eq(pread(fd, *data, *len, 0), (ssize_t)*len);
    close(fd);
    memprof_reader_t *r = tk_open(*data, *len);
    cr_assert(memprof_reader_info(r)->options & MEMPROF_OPT_AGGREGATE);
    return r;
}

#define ASSERT_SAME(x, y, what)                                                                           \
    cr_assert((x).bytes == (y).bytes && (x).count == (y).count, "%s: %llu B in %llu, want %llu B in %llu", \
              what, (unsigned long long)(x).bytes, (unsigned long long)(x).count,                         \
              (unsigned long long)(y).bytes, (unsigned long long)(y).count)

/* Every figure a report reads, the same in both replays. */
static void assert_same_figures(const mp_analysis_t *g, const mp_analysis_t *w)
{
    ASSERT_SAME(g->allocated, w->allocated, "allocated");
    cr_assert_eq(g->frees, w->frees);
    cr_assert_eq(g->unmatched_frees, w->unmatched_frees);
    ASSERT_SAME(g->live, w->live, "at exit");
    ASSERT_SAME(g->peak, w->peak, "peak");
    cr_assert_eq(g->peak_index, w->peak_index);
    cr_assert_eq(g->peak_time_us, w->peak_time_us);
    cr_assert_eq(g->has_end, w->has_end);
    ASSERT_SAME(g->at_end, w->at_end, "at script end");
    cr_assert_eq(g->end_index, w->end_index);
    cr_assert_eq(g->end_time_us, w->end_time_us);
    cr_assert_eq(g->last_time_us, w->last_time_us, "last time %llu, want %llu", (unsigned long long)g->last_time_us,
                 (unsigned long long)w->last_time_us);
    cr_assert_eq(g->samples, w->samples);
    cr_assert_eq(g->rss_peak_kib, w->rss_peak_kib);
    ASSERT_SAME(g->temporary, w->temporary, "temporary");
    ASSERT_SAME(g->files_live, w->files_live, "files live");
    ASSERT_SAME(g->files_peak, w->files_peak, "files peak");
    ASSERT_SAME(g->files_total, w->files_total, "files total");
    for (unsigned k = 0; k < MEMPROF_A_COUNT; k++)
        ASSERT_SAME(g->by_allocator[k], w->by_allocator[k], "by allocator");
    for (unsigned b = 0; b < MP_SIZE_BUCKETS; b++)
        ASSERT_SAME(g->sizes[b], w->sizes[b], "size bucket");
    for (uint32_t t = 0; t <= w->nthreads; t++) {
        mp_stackstat_t z = {0}, *gt = t <= g->nthreads ? &g->thr[t] : &z;
        ASSERT_SAME(gt->total, w->thr[t].total, "thread total");
        ASSERT_SAME(gt->at_peak, w->thr[t].at_peak, "thread at peak");
        ASSERT_SAME(gt->at_end, w->thr[t].at_end, "thread at end");
        ASSERT_SAME(gt->temp, w->thr[t].temp, "thread temporary");
    }
    cr_assert_eq(g->nst, w->nst);
    for (uint32_t i = 0; i < w->nst; i++) {
        ASSERT_SAME(g->st[i].total, w->st[i].total, "stack total");
        ASSERT_SAME(g->st[i].at_peak, w->st[i].at_peak, "stack at peak");
        ASSERT_SAME(g->st[i].at_end, w->st[i].at_end, "stack at end");
        ASSERT_SAME(g->st[i].cur, w->st[i].cur, "stack at exit");
        ASSERT_SAME(g->st[i].temp, w->st[i].temp, "stack temporary");
    }
    /* the sites, as (stack, thread, allocator), with every figure */
    for (uint32_t i = 0; i < w->nsites; i++) {
        const mp_site_t *s = &w->sites[i];
        uint32_t j = 0;
        while (j < g->nsites && (g->sites[j].stack != s->stack || g->sites[j].thread != s->thread ||
                                 g->sites[j].kind != s->kind))
            j++;
        cr_assert_lt(j, g->nsites, "site %u: not in the aggregate", i);
        ASSERT_SAME(g->sites[j].s.total, s->s.total, "site total");
        ASSERT_SAME(g->sites[j].s.at_peak, s->s.at_peak, "site at peak");
        ASSERT_SAME(g->sites[j].s.at_end, s->s.at_end, "site at end");
        ASSERT_SAME(g->sites[j].s.cur, s->s.cur, "site at exit");
        ASSERT_SAME(g->sites[j].s.temp, s->s.temp, "site temporary");
    }
    cr_assert_eq(g->nseries, w->nseries);
    for (uint32_t i = 0; i < w->nseries; i++)
        cr_assert(g->series[i].time_us == w->series[i].time_us && g->series[i].heap == w->series[i].heap &&
                      g->series[i].rss_kib == w->series[i].rss_kib,
                  "point %u", i);
    for (mp_when_t when = MP_AT_PEAK; when <= MP_TOTAL; when++) {
        mp_location_t *lw, *lg;
        size_t nw, ng;
        cr_assert_eq(mp_top_locations(w, when, 1000, &lw, &nw), 0);
        cr_assert_eq(mp_top_locations(g, when, 1000, &lg, &ng), 0);
        cr_assert_eq(ng, nw, "locations at %d", (int)when);
        for (size_t i = 0; i < nw; i++) {
            cr_assert_eq(lg[i].node, lw[i].node, "location %zu at %d", i, (int)when);
            ASSERT_SAME(lg[i].amount, lw[i].amount, "location");
        }
        free(lw);
        free(lg);
    }
}

static void round_trip(tk_capture_t *c)
{
    memprof_reader_t *r = tk_open(c->data, c->len);
    mp_analysis_t whole, agg;
    cr_assert_eq(mp_analysis_run(&whole, r), 0, "%s", memprof_reader_error(r));
    uint8_t *data;
    size_t len;
    memprof_reader_t *ra = aggregate_of(&whole, &data, &len);
    cr_assert_eq(mp_analysis_run(&agg, ra), 0, "%s", memprof_reader_error(ra));
    cr_assert(mp_analysis_is_aggregate(ra));
    assert_same_figures(&agg, &whole);
    /* the header is the program's; the trailer counts what it did */
    const memprof_info_t *iw = memprof_reader_info(r), *ia = memprof_reader_info(ra);
    cr_assert_eq(ia->pid, iw->pid);
    cr_assert_str_eq(ia->python_version, iw->python_version);
    cr_assert_eq(ia->argv_len, iw->argv_len);
    cr_assert(!memcmp(ia->argv, iw->argv, iw->argv_len));
    cr_assert_eq(ia->start_realtime_ns, iw->start_realtime_ns);
    cr_assert_eq(ia->options & ~(uint64_t)MEMPROF_OPT_AGGREGATE, iw->options);
    cr_assert_eq(ia->allocs, iw->allocs);
    cr_assert_eq(ia->frees, iw->frees);
    cr_assert(ia->has_trailer && !ia->truncated && !agg.events_cut);
    /* the tables name the same frames */
    cr_assert_eq(memprof_reader_node_count(ra), memprof_reader_node_count(r));
    for (uint32_t id = 1; id < memprof_reader_node_count(r); id++) {
        mp_srcframe_t fw, fa;
        uint32_t pw, pa;
        cr_assert_eq(mp_node_frame(&agg, id, &fa, &pa), mp_node_frame(&whole, id, &fw, &pw));
        cr_assert_eq(pa, pw, "node %u", id);
        cr_assert_str_eq(fa.function, fw.function, "node %u", id);
        cr_assert_str_eq(fa.file, fw.file, "node %u", id);
        cr_assert_eq(fa.line, fw.line, "node %u", id);
    }
    for (uint32_t t = 1; t <= memprof_reader_thread_count(r); t++) {
        const char *nw = memprof_reader_thread_name(r, t), *na = memprof_reader_thread_name(ra, t);
        cr_assert((!nw && !na) || (nw && na && !strcmp(nw, na)), "thread %u", t);
    }
    cr_assert_lt(len, c->len, "smaller than the events");
    /* filters by thread and time need the events */
    mp_analysis_t f;
    mp_analysis_opts_t by_thread = {.thread = 1};
    memprof_reader_t *r2 = tk_open(data, len);
    cr_assert_eq(mp_analysis_run_opts(&f, r2, &by_thread), MEMPROF_EAGGREGATE);
    mp_analysis_free(&f);
    memprof_reader_close(r2);
    mp_analysis_opts_t later = {.from_us = 1};
    r2 = tk_open(data, len);
    cr_assert_eq(mp_analysis_run_opts(&f, r2, &later), MEMPROF_EAGGREGATE);
    mp_analysis_free(&f);
    memprof_reader_close(r2);
    /* and one written again from itself is the same file */
    uint8_t *data2;
    size_t len2;
    memprof_reader_t *ra2 = aggregate_of(&agg, &data2, &len2);
    mp_analysis_t agg2;
    cr_assert_eq(mp_analysis_run(&agg2, ra2), 0, "%s", memprof_reader_error(ra2));
    assert_same_figures(&agg2, &whole);
    mp_analysis_free(&agg2);
    memprof_reader_close(ra2);
    free(data2);
    mp_analysis_free(&agg);
    mp_analysis_free(&whole);
    memprof_reader_close(ra);
    memprof_reader_close(r);
    free(data);
}

Test(aggregate, rich_capture_round_trip)
{
    tk_capture_t c;
    rich_ids_t id;
    memset(&id, 0, sizeof id);
    rich_build(&c, &id);
    round_trip(&c);
    tk_close(&c);
}

/* Known figures: the golden capture's story (test_golden.c), told again. */
Test(aggregate, known_figures)
{
    tk_capture_t c;
    tk_begin(&c, 256);
    uint32_t t1 = tk_thread_new(&c, 100), t2 = tk_thread_new(&c, 101);
    uint32_t app = tk_string(&c, "app.py");
    uint32_t cmain = tk_code(&c, 0, app, tk_string(&c, "main"), 1);
    uint32_t cload = tk_code(&c, 0, app, tk_string(&c, "load"), 10);
    uint32_t nmain = tk_node(&c, 0, cmain, 5), nload = tk_node(&c, nmain, cload, 12);
    tk_time(&c, 0, 1000);
    tk_alloc(&c, t1, MEMPROF_A_MALLOC, 0x1000, 1000, nload);
    tk_alloc(&c, t2, MEMPROF_A_MALLOC, 0x2000, 4096, nmain);
    tk_alloc(&c, t1, MEMPROF_A_CALLOC, 0x3000, 64, nload);
    tk_free(&c, t1, MEMPROF_D_FREE, 0x3000);
    tk_time(&c, 20000, 3000);
    tk_free(&c, t1, MEMPROF_D_FREE, 0x1000); /* peak was 5,160 in 3 */
    tk_mark(&c, MEMPROF_M_SCRIPT_END, 30000);
    tk_free(&c, t2, MEMPROF_D_FREE, 0x2000);
    tk_time(&c, 40000, 2000);
    tk_finish(&c);
    memprof_reader_t *r = tk_open(c.data, c.len);
    mp_analysis_t whole, agg;
    cr_assert_eq(mp_analysis_run(&whole, r), 0);
    uint8_t *data;
    size_t len;
    memprof_reader_t *ra = aggregate_of(&whole, &data, &len);
    cr_assert_eq(mp_analysis_run(&agg, ra), 0, "%s", memprof_reader_error(ra));
    ASSERT_SAME(agg.peak, ((mp_amount_t){5160, 3}), "peak");
    ASSERT_SAME(agg.at_end, ((mp_amount_t){4096, 1}), "at end");
    ASSERT_SAME(agg.live, ((mp_amount_t){0, 0}), "at exit");
    ASSERT_SAME(agg.allocated, ((mp_amount_t){5160, 3}), "allocated");
    /* freed before their thread's next allocation: the calloc, and thread 2's only block */
    ASSERT_SAME(agg.temporary, ((mp_amount_t){4160, 2}), "temporary");
    ASSERT_SAME(mp_analysis_stack_peak(&agg, nload), ((mp_amount_t){1064, 2}), "load at the peak");
    ASSERT_SAME(agg.thr[t2].at_end, ((mp_amount_t){4096, 1}), "thread 2 at end");
    cr_assert_eq(agg.rss_peak_kib, 3000);
    /* memory over time: at each sample, the highest heap since the one before (5,160 between
     * the first two, though the calloc was freed before the second), the last sample at the end */
    cr_assert_eq(agg.nseries, 3);
    static const uint64_t want_heap[3] = {0, 5160, 5096}, want_us[3] = {0, 20000, 40000};
    for (unsigned i = 0; i < 3; i++)
        cr_assert(agg.series[i].heap == want_heap[i] && agg.series[i].time_us == want_us[i], "point %u: %llu at %llu",
                  i, (unsigned long long)agg.series[i].heap, (unsigned long long)agg.series[i].time_us);
    cr_assert_eq(agg.end_time_us, 30000);
    assert_same_figures(&agg, &whole);
    mp_analysis_free(&agg);
    mp_analysis_free(&whole);
    memprof_reader_close(ra);
    memprof_reader_close(r);
    free(data);
    tk_close(&c);
}

/* An aggregated capture read as a stream, as memprof live reads one. */
Test(aggregate, read_as_a_stream)
{
    tk_capture_t c;
    rich_ids_t id;
    memset(&id, 0, sizeof id);
    rich_build(&c, &id);
    memprof_reader_t *r = tk_open(c.data, c.len);
    mp_analysis_t whole, agg;
    cr_assert_eq(mp_analysis_run(&whole, r), 0);
    uint8_t *data;
    size_t len;
    memprof_reader_close(aggregate_of(&whole, &data, &len));
    memprof_reader_t *rs = NULL;
    cr_assert_eq(memprof_reader_open_stream(&rs), 0);
    cr_assert_eq(mp_analysis_begin(&agg, rs, NULL), 0);
    for (size_t at = 0; at < len; at += 100) {
        cr_assert_eq(memprof_reader_feed(rs, data + at, len - at < 100 ? len - at : 100), 0);
        int rc = mp_analysis_feed(&agg);
        cr_assert(rc == MEMPROF_EAGAIN || rc == 0, "%d: %s", rc, memprof_reader_error(rs));
    }
    memprof_reader_feed_end(rs);
    cr_assert_eq(mp_analysis_feed(&agg), 0);
    cr_assert_eq(mp_analysis_finish(&agg), 0);
    assert_same_figures(&agg, &whole);
    mp_analysis_free(&agg);
    mp_analysis_free(&whole);
    memprof_reader_close(rs);
    memprof_reader_close(r);
    free(data);
    tk_close(&c);
}
