/* aggregate.c - write an aggregated capture: what a replay found (totals per
 * site, the figures at the peak, at script end and at exit, size and
 * allocator histograms, memory over time) with the tables that name its
 * stacks, and no events. The file is a capture like any other (header,
 * LZ4 blocks, trailer) whose header says MEMPROF_OPT_AGGREGATE; readers
 * load it with the same analysis (analysis.c: on_aggregate).
 */
#include "aggregate.h"

#include <errno.h>
#include <lz4.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "encode.h"
#include "memprof/format.h"
#include "memprof/memprof.h"

typedef struct {
    int fd, err;
    mp_enc_t enc;
    uint8_t *mem, *raw[2];  /* blocks are linked: two buffers in turn, apart in memory */
    unsigned cur;
    uint8_t *out;
    LZ4_stream_t *lz4;
    uint64_t blocks;
} writer_t;

static int write_all(writer_t *w, const uint8_t *p, size_t n)
{
    while (n && !w->err) {
        ssize_t k = write(w->fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            w->err = k < 0 ? errno : EIO;
            break;
        }
        p += k;
        n -= (size_t)k;
    }
    return w->err;
}

static void flush(writer_t *w)
{
    if (!w->enc.len)
        return;
    size_t n = mp_lz4f_block(w->lz4, w->raw[w->cur], w->enc.len, w->out);
    write_all(w, w->out, n);
    w->blocks++;
    w->cur ^= 1;
    w->enc.buf = w->raw[w->cur];
    mp_enc_reset(&w->enc);
}

/* Calls `call` again in a new block when the block is full. */
#define EMIT(w, call)                                  \
    do {                                               \
        if ((call) == MEMPROF_ENOSPACE) {              \
            flush(w);                                  \
            if ((call) != 0 && !(w)->err)              \
                (w)->err = EINVAL;                     \
        }                                              \
    } while (0)

static uint64_t now_ns(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void header(writer_t *w, const memprof_info_t *in)
{
    size_t cap = MEMPROF_HEADER_FIXED + 16 * 11 + in->argv_len + strlen(in->python_version) +
                 strlen(in->executable) + strlen(MEMPROF_VERSION_STRING) + 5 * 11 + 4 + MP_LZ4F_HEADER_LEN;
    uint8_t *hdr = malloc(cap), *p;
    if (!hdr) {
        w->err = ENOMEM;
        return;
    }
    p = hdr + MEMPROF_HEADER_FIXED;
    p += mp_tlv_varint(p, MEMPROF_H_PID, in->pid);
    p += mp_tlv_varint(p, MEMPROF_H_PPID, in->ppid);
    p += mp_tlv_varint(p, MEMPROF_H_START_REALTIME, in->start_realtime_ns);
    p += mp_tlv_varint(p, MEMPROF_H_START_MONOTONIC, in->start_monotonic_ns);
    p += mp_tlv_bytes(p, MEMPROF_H_ARGV, in->argv, in->argv_len);
    if (in->python_version[0]) {
        p += mp_tlv_bytes(p, MEMPROF_H_PYTHON_VERSION, in->python_version, strlen(in->python_version));
        p += mp_tlv_varint(p, MEMPROF_H_PYTHON_HEXVERSION, in->python_hexversion);
    }
    p += mp_tlv_varint(p, MEMPROF_H_OPTIONS, in->options | MEMPROF_OPT_AGGREGATE);
    p += mp_tlv_bytes(p, MEMPROF_H_EXECUTABLE, in->executable, strlen(in->executable));
    p += mp_tlv_varint(p, MEMPROF_H_PAGE_SIZE, in->page_size);
    p += mp_tlv_bytes(p, MEMPROF_H_TOOL_VERSION, MEMPROF_VERSION_STRING, strlen(MEMPROF_VERSION_STRING));
    p += mp_tlv_varint(p, MEMPROF_H_PYSTACK, in->pystack_mode);
    p += mp_tlv_varint(p, MEMPROF_H_INTERVAL_US, in->interval_us);
    if (in->parent_pid)
        p += mp_tlv_varint(p, MEMPROF_H_PARENT_PID, in->parent_pid);
    size_t n = mp_header_seal(hdr, (size_t)(p - hdr) - MEMPROF_HEADER_FIXED);
    n += mp_lz4f_header(hdr + n);
    write_all(w, hdr, n);
    free(hdr);
}

/* Strings, code objects, modules, stack nodes and threads, as the reader
 * has them (ids are kept: each table is written in order). */
static void tables(writer_t *w, const memprof_reader_t *r)
{
    uint32_t nstr = 0;
    for (const char *s; (s = memprof_reader_string(r, nstr + 1)); nstr++)
        EMIT(w, mp_enc_string(&w->enc, s, strlen(s)));
    uint32_t ncode = memprof_reader_code_count(r);
    for (uint32_t id = 1; id <= ncode; id++) {
        memprof_code_t c;
        if (memprof_reader_code(r, id, &c) == 0)
            EMIT(w, mp_enc_code(&w->enc, c.flags, c.filename, c.qualname, c.firstlineno));
    }
    uint32_t nmod = memprof_reader_module_count(r);
    for (uint32_t id = 1; id <= nmod; id++) { /* module paths: strings of their own, after the rest */
        memprof_module_t m;
        if (memprof_reader_module(r, id, &m) == 0)
            EMIT(w, mp_enc_string(&w->enc, m.path, strlen(m.path)));
    }
    for (uint32_t id = 1; id <= nmod; id++) {
        memprof_module_t m;
        if (memprof_reader_module(r, id, &m) != 0)
            continue;
        EMIT(w, mp_enc_module(&w->enc, id, m.bias, nstr + id, m.build_id, m.build_id_len, m.segs, m.nseg));
        if (m.unloaded)
            EMIT(w, mp_enc_module_unload(&w->enc, id));
    }
    uint32_t nnode = memprof_reader_node_count(r);
    for (uint32_t id = 1; id <= nnode; id++) {
        uint32_t parent, code, module;
        int32_t line;
        uint64_t offset;
        if (memprof_reader_node(r, id, &parent, &code, &line) != 0)
            continue;
        if (memprof_reader_node_native(r, id, &module, &offset) == 1) {
            EMIT(w, mp_enc_node_native(&w->enc, id, parent, module, offset));
        } else {
            memprof_code_t c;
            memprof_reader_code(r, code, &c);
            EMIT(w, mp_enc_node(&w->enc, id, parent, code, line, c.firstlineno));
        }
    }
    uint32_t nthr = memprof_reader_thread_count(r);
    for (uint32_t t = 1; t <= nthr; t++)
        EMIT(w, mp_enc_thread_new(&w->enc, t, memprof_reader_thread_tid(r, t)));
    /* names, by string id (a name is one of the strings above) */
    for (uint32_t t = 1; t <= nthr; t++) {
        const char *name = memprof_reader_thread_name(r, t);
        for (uint32_t sid = 1; name && sid <= nstr; sid++)
            if (memprof_reader_string(r, sid) == name) {
                EMIT(w, mp_enc_thread_name(&w->enc, t, sid));
                break;
            }
    }
}

#define AMOUNT(v, at, x) ((v)[(at)] = (x).bytes, (v)[(at) + 1] = (x).count)

static void aggregates(writer_t *w, const mp_analysis_t *a, int events_cut)
{
    uint64_t v[MEMPROF_AGGT_COUNT] = {0};
    AMOUNT(v, MEMPROF_AGGT_ALLOCATED, a->allocated);
    v[MEMPROF_AGGT_FREES] = a->frees;
    v[MEMPROF_AGGT_UNMATCHED_FREES] = a->unmatched_frees;
    AMOUNT(v, MEMPROF_AGGT_AT_EXIT, a->live);
    AMOUNT(v, MEMPROF_AGGT_PEAK, a->peak);
    v[MEMPROF_AGGT_PEAK_INDEX] = a->peak_index;
    v[MEMPROF_AGGT_PEAK_TIME_US] = a->peak_time_us;
    v[MEMPROF_AGGT_HAS_END] = (uint64_t)a->has_end;
    AMOUNT(v, MEMPROF_AGGT_AT_END, a->at_end);
    v[MEMPROF_AGGT_END_INDEX] = a->end_index;
    v[MEMPROF_AGGT_END_TIME_US] = a->end_time_us;
    v[MEMPROF_AGGT_LAST_TIME_US] = a->last_time_us;
    v[MEMPROF_AGGT_SAMPLES] = a->samples;
    v[MEMPROF_AGGT_RSS_PEAK_KIB] = a->rss_peak_kib;
    AMOUNT(v, MEMPROF_AGGT_TEMPORARY, a->temporary);
    AMOUNT(v, MEMPROF_AGGT_FILES_LIVE, a->files_live);
    AMOUNT(v, MEMPROF_AGGT_FILES_PEAK, a->files_peak);
    AMOUNT(v, MEMPROF_AGGT_FILES_TOTAL, a->files_total);
    v[MEMPROF_AGGT_TRUNCATED] = (uint64_t)(events_cut || a->events_cut);
    EMIT(w, mp_enc_aggregate(&w->enc, MEMPROF_AGG_TOTALS, v, MEMPROF_AGGT_COUNT));
    for (uint32_t i = 0; i < a->nsites; i++) {
        const mp_site_t *s = &a->sites[i];
        uint64_t f[13] = {s->stack, s->thread, s->kind};
        AMOUNT(f, 3, s->s.total);
        AMOUNT(f, 5, s->s.at_peak);
        AMOUNT(f, 7, s->s.at_end);
        AMOUNT(f, 9, s->s.cur);
        AMOUNT(f, 11, s->s.temp);
        EMIT(w, mp_enc_aggregate(&w->enc, MEMPROF_AGG_SITE, f, 13));
    }
    uint32_t nthr = memprof_reader_thread_count(a->r);
    for (uint32_t t = 1; t <= nthr && t <= a->nthreads; t++) {
        uint64_t f[3] = {t};
        AMOUNT(f, 1, a->thr[t].total);
        EMIT(w, mp_enc_aggregate(&w->enc, MEMPROF_AGG_THREAD, f, 3));
    }
    for (unsigned b = 0; b < MP_SIZE_BUCKETS; b++)
        if (a->sizes[b].count) {
            uint64_t f[3] = {b};
            AMOUNT(f, 1, a->sizes[b]);
            EMIT(w, mp_enc_aggregate(&w->enc, MEMPROF_AGG_SIZE, f, 3));
        }
    for (unsigned k = 0; k < MEMPROF_A_COUNT; k++)
        if (a->by_allocator[k].count) {
            uint64_t f[3] = {k};
            AMOUNT(f, 1, a->by_allocator[k]);
            EMIT(w, mp_enc_aggregate(&w->enc, MEMPROF_AGG_ALLOCATOR, f, 3));
        }
    for (uint32_t i = 0; i < a->nseries; i++) {
        uint64_t f[3] = {a->series[i].time_us, a->series[i].heap, a->series[i].rss_kib};
        EMIT(w, mp_enc_aggregate(&w->enc, MEMPROF_AGG_POINT, f, 3));
    }
}

static void trailer(writer_t *w, const mp_analysis_t *a)
{
    const memprof_info_t *in = memprof_reader_info(a->r);
    uint8_t buf[256];
    size_t n = mp_lz4f_end(buf), t0 = n, k = t0 + MP_TRAILER_FIXED;
    /* the end of the run: the events' trailer, or now for a run cut short */
    uint64_t end_real = in->has_trailer ? in->end_realtime_ns : now_ns(CLOCK_REALTIME);
    uint64_t end_mono = in->has_trailer ? in->end_monotonic_ns : now_ns(CLOCK_MONOTONIC);
    k += mp_tlv_varint(buf + k, MEMPROF_T_END_REALTIME, end_real);
    k += mp_tlv_varint(buf + k, MEMPROF_T_END_MONOTONIC, end_mono);
    k += mp_tlv_varint(buf + k, MEMPROF_T_EVENTS, 0); /* none in this file */
    k += mp_tlv_varint(buf + k, MEMPROF_T_ALLOCS, a->allocated.count);
    k += mp_tlv_varint(buf + k, MEMPROF_T_FREES, a->frees);
    k += mp_tlv_varint(buf + k, MEMPROF_T_BLOCKS, w->blocks);
    k += mp_tlv_varint(buf + k, MEMPROF_T_TRACKER_ALLOCS, in->tracker_allocs);
    n = t0 + mp_trailer_seal(buf + t0, k - t0 - MP_TRAILER_FIXED);
    write_all(w, buf, n);
}

int mp_aggregate_write(const mp_analysis_t *a, int fd)
{
    writer_t w = {.fd = fd};
    /* a gap between the two: LZ4 would take adjacent blocks for one */
    w.mem = malloc(2 * (size_t)MEMPROF_BLOCK_MAX + 64);
    w.raw[0] = w.mem;
    w.raw[1] = w.mem ? w.mem + MEMPROF_BLOCK_MAX + 64 : NULL;
    w.out = malloc(mp_lz4f_block_bound(MEMPROF_BLOCK_MAX));
    w.lz4 = LZ4_createStream();
    if (!w.mem || !w.out || !w.lz4) {
        w.err = ENOMEM;
    } else {
        mp_enc_init(&w.enc, w.raw[0], MEMPROF_BLOCK_MAX);
        const memprof_info_t *in = memprof_reader_info(a->r);
        header(&w, in);
        tables(&w, a->r);
        aggregates(&w, a, in->truncated);
        flush(&w);
        trailer(&w, a);
    }
    free(w.mem);
    free(w.out);
    if (w.lz4)
        LZ4_freeStream(w.lz4);
    return w.err;
}
