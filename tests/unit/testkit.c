/* testkit.c - in-memory capture builder for the unit tests (see testkit.h).
 *
 * Mirrors preload/recorder.c: write_header() for the header, EMIT/flush_locked
 * for blocks (a full record buffer is compressed with one LZ4 stream, linked
 * to the block before, and the record retried in a fresh block taken from
 * the other of two buffers that are never adjacent), mp_rec_finish() for
 * the end mark and trailer. The expected events follow the reader's rules
 * (memprof/reader.h), whichever record form the encoder picks: allocations
 * and frees take the next index, RESTORE/TIME/MARK carry the current one;
 * allocations, RESTORE and a realloc's or an mremap's FREE carry the
 * block's current thread, other frees, TIME and MARK thread 0; munmap and
 * mremap frees carry their length as the size; TIME sets the clock and
 * MARK only raises it.
 */
#include "testkit.h"

#include <criterion/criterion.h>
#include <lz4.h>
#include <stdlib.h>
#include <string.h>

#include "memprof/memprof.h"
#include "mp_common.h"

const char tk_argv[] = "python3\0-c\0pass";

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    cr_assert_not_null(q, "out of memory in the test kit");
    return q;
}

static void reserve(tk_capture_t *c, size_t more)
{
    if (c->len + more <= c->cap)
        return;
    while (c->len + more > c->cap)
        c->cap = c->cap ? c->cap * 2 : 4096;
    c->data = xrealloc(c->data, c->cap);
}

void tk_append(tk_capture_t *c, const void *p, size_t n)
{
    reserve(c, n);
    memcpy(c->data + c->len, p, n);
    c->len += n;
}

/* Gap between the two record buffers (recorder.c puts out_buf there). */
#define TK_GAP 64

void tk_begin(tk_capture_t *c, size_t block_cap)
{
    memset(c, 0, sizeof *c);
    c->block_cap = block_cap;
    c->arena = xrealloc(NULL, 2 * block_cap + TK_GAP);
    c->rec_a = c->arena;
    c->rec_b = c->arena + block_cap + TK_GAP;
    cr_assert(c->rec_a + block_cap != c->rec_b && c->rec_b + block_cap != c->rec_a);
    c->lz4 = aligned_alloc(64, (sizeof(LZ4_stream_t) + 63) & ~(size_t)63);
    cr_assert_not_null(c->lz4);
    cr_assert_not_null(LZ4_initStream(c->lz4, sizeof *c->lz4));
    mp_enc_init(&c->enc, c->rec_a, block_cap);

    uint8_t hdr[1024], *p = hdr + MEMPROF_HEADER_FIXED;
    p += mp_tlv_varint(p, MEMPROF_H_PID, TK_PID);
    p += mp_tlv_varint(p, MEMPROF_H_PPID, TK_PPID);
    p += mp_tlv_varint(p, MEMPROF_H_START_REALTIME, TK_START_REALTIME);
    p += mp_tlv_varint(p, MEMPROF_H_START_MONOTONIC, TK_START_MONOTONIC);
    p += mp_tlv_bytes(p, MEMPROF_H_ARGV, tk_argv, TK_ARGV_LEN);
    p += mp_tlv_bytes(p, MEMPROF_H_PYTHON_VERSION, TK_PYVERSION, strlen(TK_PYVERSION));
    p += mp_tlv_varint(p, MEMPROF_H_PYTHON_HEXVERSION, TK_HEXVERSION);
    p += mp_tlv_varint(p, MEMPROF_H_OPTIONS, TK_OPTIONS);
    p += mp_tlv_bytes(p, 99, "future field", 12); /* unknown: skipped */
    p += mp_tlv_bytes(p, MEMPROF_H_EXECUTABLE, TK_EXECUTABLE, strlen(TK_EXECUTABLE));
    p += mp_tlv_varint(p, MEMPROF_H_PAGE_SIZE, TK_PAGE_SIZE);
    p += mp_tlv_bytes(p, MEMPROF_H_TOOL_VERSION, MEMPROF_VERSION_STRING, strlen(MEMPROF_VERSION_STRING));
    p += mp_tlv_varint(p, MEMPROF_H_PYSTACK, MEMPROF_PYSTACK_WALKER);
    p += mp_tlv_varint(p, MEMPROF_H_INTERVAL_US, TK_INTERVAL_US);
    p += mp_tlv_varint(p, MEMPROF_H_PARENT_PID, TK_PARENT_PID);
    size_t n = mp_header_seal(hdr, (size_t)(p - hdr) - MEMPROF_HEADER_FIXED);
    c->header_len = n;
    n += mp_lz4f_header(hdr + n);
    tk_append(c, hdr, n);
}

void tk_close(tk_capture_t *c)
{
    free(c->data);
    free(c->arena);
    free(c->lz4);
    free(c->raw);
    free(c->firstlineno);
    free(c->ev);
    free(c->blocks);
    memset(c, 0, sizeof *c);
}

void tk_flush(tk_capture_t *c)
{
    if (c->enc.len == 0)
        return;
    reserve(c, mp_lz4f_block_bound(c->enc.len));
    uint8_t *dst = c->data + c->len;
    c->len += mp_lz4f_block(c->lz4, c->enc.buf, c->enc.len, dst);
    if (c->nblocks == c->blockcap) {
        c->blockcap = c->blockcap ? c->blockcap * 2 : 64;
        c->blocks = xrealloc(c->blocks, c->blockcap * sizeof *c->blocks);
    }
    if (c->raw_len + c->enc.len > c->raw_cap) {
        while (c->raw_len + c->enc.len > c->raw_cap)
            c->raw_cap = c->raw_cap ? c->raw_cap * 2 : 4096;
        c->raw = xrealloc(c->raw, c->raw_cap);
    }
    memcpy(c->raw + c->raw_len, c->enc.buf, c->enc.len);
    c->blocks[c->nblocks++] = (tk_block_t){c->len, c->nev, (mp_get_le32(dst) & MEMPROF_LZ4F_UNCOMPRESSED) != 0,
                                           c->raw_len, c->enc.len};
    c->raw_len += c->enc.len;
    /* the block just compressed is the next one's dictionary: leave it be */
    c->enc.buf = c->enc.buf == c->rec_a ? c->rec_b : c->rec_a;
    mp_enc_reset(&c->enc);
}

/* preload/recorder.c's EMIT: a full block is flushed and the record retried. */
#define EMIT(c, call)                                                     \
    do {                                                                  \
        int rc_ = (call);                                                 \
        if (rc_ == MEMPROF_ENOSPACE) {                                    \
            tk_flush(c);                                                  \
            rc_ = (call);                                                 \
        }                                                                 \
        cr_assert_eq(rc_, 0, "record does not fit an empty block: %s", #call); \
    } while (0)

static void push(tk_capture_t *c, memprof_event_type_t type, unsigned kind, uint32_t thread, uint32_t stack,
                 uint64_t addr, uint64_t size, uint64_t index, uint64_t us, uint64_t rss)
{
    if (c->nev == c->evcap) {
        c->evcap = c->evcap ? c->evcap * 2 : 256;
        c->ev = xrealloc(c->ev, c->evcap * sizeof *c->ev);
    }
    c->ev[c->nev++] = (memprof_event_t){type, kind, thread, stack, addr, size, index, us, rss};
}

uint32_t tk_thread_new(tk_capture_t *c, uint64_t tid)
{
    uint32_t t = c->nthreads + 1;
    EMIT(c, mp_enc_thread_new(&c->enc, t, tid));
    return c->nthreads = t;
}

uint32_t tk_string_n(tk_capture_t *c, const void *s, size_t n)
{
    EMIT(c, mp_enc_string(&c->enc, s, n));
    return ++c->nstrings;
}

uint32_t tk_string(tk_capture_t *c, const char *s) { return tk_string_n(c, s, strlen(s)); }

uint32_t tk_code(tk_capture_t *c, unsigned flags, uint32_t filename, uint32_t qualname, uint32_t firstlineno)
{
    EMIT(c, mp_enc_code(&c->enc, flags, filename, qualname, firstlineno));
    c->firstlineno = xrealloc(c->firstlineno, ((size_t)c->ncodes + 1) * sizeof *c->firstlineno);
    c->firstlineno[c->ncodes] = firstlineno;
    return ++c->ncodes;
}

uint32_t tk_node(tk_capture_t *c, uint32_t parent, uint32_t code, int32_t line)
{
    uint32_t id = c->nnodes + 1;
    uint32_t first = code >= 1 && code <= c->ncodes ? c->firstlineno[code - 1] : 0;
    EMIT(c, mp_enc_node(&c->enc, id, parent, code, line, first));
    return c->nnodes = id;
}

uint32_t tk_node_native(tk_capture_t *c, uint32_t parent, uint32_t module, uint64_t offset)
{
    uint32_t id = c->nnodes + 1;
    EMIT(c, mp_enc_node_native(&c->enc, id, parent, module, offset));
    return c->nnodes = id;
}

uint32_t tk_module(tk_capture_t *c, uint64_t bias, uint32_t path, const uint8_t *build_id, size_t build_len,
                   const uint64_t *segs, unsigned nseg)
{
    uint32_t id = c->nmodules + 1;
    EMIT(c, mp_enc_module(&c->enc, id, bias, path, build_id, build_len, segs, nseg));
    return c->nmodules = id;
}

void tk_module_unload(tk_capture_t *c, uint32_t id) { EMIT(c, mp_enc_module_unload(&c->enc, id)); }

void tk_thread_name(tk_capture_t *c, uint32_t thread, uint32_t name)
{
    EMIT(c, mp_enc_thread_name(&c->enc, thread, name));
}

/* The tag byte of the event record an EMIT just wrote at `start` of the
 * block in progress (0 if the block was flushed and the record retried),
 * after the THREAD switch that may come first. */
static uint8_t event_tag(tk_capture_t *c, size_t start)
{
    const uint8_t *p = c->enc.buf + start;
    if (*p == TK_TAG(MEMPROF_R_THREAD, MEMPROF_THREAD_SWITCH)) {
        uint64_t v = 0;
        const uint8_t *q = p + 1;
        cr_assert_eq(mp_varint_get(&q, c->enc.buf + c->enc.len, &v), 0);
        p = q;
    }
    cr_assert_lt((size_t)(p - c->enc.buf), c->enc.len);
    c->tags[*p]++;
    c->last_tag = (size_t)(p - c->enc.buf);
    return *p;
}

uint64_t tk_last_field(const tk_capture_t *c)
{
    const uint8_t *p = c->enc.buf + c->last_tag + 1;
    uint64_t v = 0;
    cr_assert_eq(mp_varint_get(&p, c->enc.buf + c->enc.len, &v), 0, "the last event record has no field");
    return v;
}

/* EMIT for events: returns where the record (and its THREAD switch) starts. */
#define EMIT_EVENT(c, start, call)                                        \
    do {                                                                  \
        size_t nb_ = (c)->nblocks;                                        \
        start = (c)->enc.len;                                             \
        EMIT(c, call);                                                    \
        if ((c)->nblocks != nb_)                                          \
            start = 0;                                                    \
    } while (0)

uint8_t tk_alloc(tk_capture_t *c, uint32_t thread, unsigned kind, uint64_t addr, uint64_t size, uint32_t stack)
{
    size_t start;
    EMIT_EVENT(c, start, mp_enc_alloc(&c->enc, thread, kind, addr, size, stack));
    c->allocs++;
    push(c, MEMPROF_EV_ALLOC, kind, c->enc.thread, stack, addr, size, c->index++, c->time_us, 0);
    return event_tag(c, start);
}

uint8_t tk_free(tk_capture_t *c, uint32_t thread, unsigned kind, uint64_t addr)
{
    cr_assert(kind != MEMPROF_D_MUNMAP && kind != MEMPROF_D_MREMAP, "a range free: use tk_free_range");
    size_t start;
    EMIT_EVENT(c, start, mp_enc_free(&c->enc, thread, kind, addr));
    c->frees++;
    uint32_t named = kind == MEMPROF_D_REALLOC ? c->enc.thread : 0; /* plain frees name none */
    push(c, MEMPROF_EV_FREE, kind, named, 0, addr, 0, c->index++, c->time_us, 0);
    return event_tag(c, start);
}

uint8_t tk_free_range(tk_capture_t *c, uint32_t thread, unsigned kind, uint64_t addr, uint64_t len)
{
    cr_assert(kind == MEMPROF_D_MUNMAP || kind == MEMPROF_D_MREMAP, "not a range free: use tk_free");
    size_t start;
    EMIT_EVENT(c, start, mp_enc_free_range(&c->enc, thread, kind, addr, len));
    c->frees++;
    uint32_t named = kind == MEMPROF_D_MREMAP ? c->enc.thread : 0; /* munmap names none */
    push(c, MEMPROF_EV_FREE, kind, named, 0, addr, len, c->index++, c->time_us, 0);
    return event_tag(c, start);
}

uint8_t tk_restore(tk_capture_t *c, uint32_t thread, uint64_t addr)
{
    size_t start;
    EMIT_EVENT(c, start, mp_enc_restore(&c->enc, thread, addr));
    push(c, MEMPROF_EV_RESTORE, 0, c->enc.thread, 0, addr, 0, c->index, c->time_us, 0);
    return event_tag(c, start);
}

void tk_time(tk_capture_t *c, uint64_t us, uint64_t rss_kib)
{
    EMIT(c, mp_enc_time(&c->enc, us, rss_kib));
    c->time_us = us;
    push(c, MEMPROF_EV_TIME, 0, 0, 0, 0, 0, c->index, us, rss_kib);
}

void tk_mark(tk_capture_t *c, unsigned kind, uint64_t us)
{
    EMIT(c, mp_enc_mark(&c->enc, kind, us));
    if (us > c->time_us)
        c->time_us = us;
    push(c, MEMPROF_EV_MARK, kind, 0, 0, 0, 0, c->index, us, 0);
}

void tk_raw(tk_capture_t *c, const void *bytes, size_t n)
{
    if (mp_enc_room(&c->enc) < n)
        tk_flush(c);
    cr_assert_geq(mp_enc_room(&c->enc), n, "raw record larger than a block");
    memcpy(c->enc.buf + c->enc.len, bytes, n);
    c->enc.len += n;
}

void tk_finish_counting(tk_capture_t *c, uint64_t events)
{
    tk_flush(c);
    uint8_t buf[256];
    c->end_mark = c->len;
    size_t n = mp_lz4f_end(buf), t0 = n, k = t0 + MP_TRAILER_FIXED;
    k += mp_tlv_varint(buf + k, MEMPROF_T_END_REALTIME, TK_END_REALTIME);
    k += mp_tlv_varint(buf + k, MEMPROF_T_END_MONOTONIC, TK_END_MONOTONIC);
    k += mp_tlv_varint(buf + k, MEMPROF_T_EVENTS, events);
    k += mp_tlv_varint(buf + k, MEMPROF_T_ALLOCS, c->allocs);
    k += mp_tlv_varint(buf + k, MEMPROF_T_FREES, c->frees);
    k += mp_tlv_bytes(buf + k, 77, "later", 5); /* unknown: skipped */
    k += mp_tlv_varint(buf + k, MEMPROF_T_BLOCKS, c->nblocks);
    k += mp_tlv_varint(buf + k, MEMPROF_T_TRACKER_ALLOCS, TK_TRACKER_ALLOCS);
    n = t0 + mp_trailer_seal(buf + t0, k - t0 - MP_TRAILER_FIXED);
    c->trailer = c->end_mark + t0;
    tk_append(c, buf, n);
}

void tk_finish(tk_capture_t *c) { tk_finish_counting(c, c->allocs + c->frees); }

uint64_t tk_events_before(const tk_capture_t *c, size_t len)
{
    uint64_t n = 0;
    for (size_t i = 0; i < c->nblocks && c->blocks[i].end <= len; i++)
        n = c->blocks[i].events;
    return n;
}

memprof_reader_t *tk_open(const void *data, size_t len)
{
    memprof_reader_t *r = NULL;
    int rc = memprof_reader_open_mem(data, len, &r);
    cr_assert_eq(rc, 0, "open: %d (%s)", rc, r ? memprof_reader_error(r) : "no reader");
    return r;
}

size_t tk_read_all(memprof_reader_t *r, memprof_event_t *out, size_t max, size_t limit, int *rc)
{
    memprof_event_t ev;
    size_t n = 0;
    while ((*rc = memprof_reader_next(r, &ev)) > 0) {
        if (n < max)
            out[n] = ev;
        cr_assert_lt(n, limit, "the reader returned more than %zu events", limit);
        n++;
    }
    return n;
}

void tk_assert_event(const memprof_event_t *got, const memprof_event_t *want, size_t i)
{
    cr_assert_eq(got->type, want->type, "event %zu: type %d, want %d", i, got->type, want->type);
    cr_assert_eq(got->kind, want->kind, "event %zu: kind %u, want %u", i, got->kind, want->kind);
    cr_assert_eq(got->thread, want->thread, "event %zu: thread %u, want %u", i, got->thread, want->thread);
    cr_assert_eq(got->stack, want->stack, "event %zu: stack %u, want %u", i, got->stack, want->stack);
    cr_assert_eq(got->addr, want->addr, "event %zu: addr %#llx, want %#llx", i, (unsigned long long)got->addr,
                 (unsigned long long)want->addr);
    cr_assert_eq(got->size, want->size, "event %zu: size", i);
    cr_assert_eq(got->index, want->index, "event %zu: index %llu, want %llu", i, (unsigned long long)got->index,
                 (unsigned long long)want->index);
    cr_assert_eq(got->time_us, want->time_us, "event %zu: time_us", i);
    cr_assert_eq(got->rss_kib, want->rss_kib, "event %zu: rss_kib", i);
}
