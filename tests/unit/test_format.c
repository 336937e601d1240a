/* test_format.c - the capture format end to end: captures built with the
 * encoders (as the recorder writes them) read back with the reader. Every
 * record type round-trips with every field; a capture cut at any byte reads
 * exactly the whole blocks before the cut; any flipped byte is an error;
 * newer and older format versions are refused; the LZ4 frame is one that
 * liblz4's own frame decoder accepts. */
#include <criterion/criterion.h>
#include <lz4.h>
#include <lz4frame.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_common.h"
#include "testkit.h"
#include "xxhash32.h"

/* ---- a capture with every record type, over many small blocks ----------- */

static const char *const rich_strings[] = {
    MEMPROF_PSEUDO_NO_PYTHON, "/srv/app/main.py", "main", "Worker.run", "h\xc3\xa9llo \xe2\x9c\x93", "",
};
static const uint8_t lt_main[] = {0x80, 0x00, 0xd8, 0x08, 0x09, 0xf0, 0x52, 0x09, 0x00, 0x09, 0x0a};
static const uint8_t lt_run[] = {0xe8, 0x02, 0xe8, 0x03};

typedef struct {
    uint32_t str[MP_ARRAY_LEN(rich_strings)];
    uint32_t code_pseudo, code_main, code_run;
    uint32_t node[5];
    uint32_t t1, t2, t3;
    uint32_t noise_first, noise_count;
} rich_ids_t;

#define TID_1 1000u
#define TID_2 1001u
#define TID_3 0xfedcba9876543210ull
#define BASE 0x7f3a00001000ull

static void rich_tables(tk_capture_t *c, rich_ids_t *id)
{
    for (size_t i = 0; i < MP_ARRAY_LEN(rich_strings); i++)
        id->str[i] = tk_string(c, rich_strings[i]);
    id->code_pseudo = tk_code(c, MEMPROF_CODE_PSEUDO, id->str[0], id->str[0], 0, NULL, 0);
    id->code_main = tk_code(c, 0, id->str[1], id->str[2], 10, lt_main, sizeof lt_main);
    id->code_run = tk_code(c, MEMPROF_CODE_LT_CUT, id->str[1], id->str[3], 120, lt_run, sizeof lt_run);
    id->node[0] = 0;
    id->node[1] = tk_node(c, 0, id->code_pseudo, 0);
    id->node[2] = tk_node(c, 0, id->code_main, 4);
    id->node[3] = tk_node(c, id->node[2], id->code_run, 17);
    id->node[4] = tk_node(c, id->node[3], id->code_main, UINT32_MAX);
    id->t1 = tk_thread_new(c, TID_1);
    id->t2 = tk_thread_new(c, TID_2);
    id->t3 = tk_thread_new(c, TID_3);
}

/* Every allocator with the address and the stack going up and down. */
static void rich_allocs(tk_capture_t *c, const rich_ids_t *id)
{
    static const unsigned stacks[] = {4, 1, 3, 0, 2, 4, 0};
    for (unsigned k = MEMPROF_A_MALLOC; k <= MEMPROF_A_PYMEM_OBJ; k++) {
        uint64_t addr = k % 2 ? BASE + k * 0x100 : BASE - k * 0x10000;
        uint32_t t = k % 3 == 0 ? id->t1 : k % 3 == 1 ? id->t2 : id->t3;
        tk_alloc(c, t, k, addr, 16ull * k + (k == 5 ? 1ull << 40 : 0), id->node[stacks[k % 7]]);
    }
    tk_alloc(c, id->t1, MEMPROF_A_MALLOC, 0x10, 0, id->node[4]);
    tk_alloc(c, id->t1, MEMPROF_A_MMAP, UINT64_MAX - 4095, UINT64_MAX, id->node[1]); /* delta wraps */
    tk_alloc(c, id->t1, MEMPROF_A_MALLOC, 0x20, 1, id->node[1]);
}

/* Every deallocator: plain ones without a thread, realloc's with one. */
static void rich_frees(tk_capture_t *c, const rich_ids_t *id)
{
    for (unsigned k = MEMPROF_D_FREE; k <= MEMPROF_D_PYMEM_OBJ; k++) {
        uint64_t addr = k % 2 ? BASE + k * 0x100 : BASE - k * 0x10000;
        tk_free(c, k == MEMPROF_D_REALLOC ? id->t2 : 0, k, addr);
    }
    tk_flush(c);
    tk_free(c, 0, MEMPROF_D_FREE, BASE); /* first in a block: no thread known yet */
    tk_free(c, id->t3, MEMPROF_D_FREE, BASE + 8); /* a thread may be named */
    tk_free(c, id->t1, MEMPROF_D_REALLOC, 0x20);
    tk_restore(c, id->t1, 0x20);
    tk_free(c, 0, MEMPROF_D_MUNMAP, UINT64_MAX - 4095);
}

static void rich_clock(tk_capture_t *c, const rich_ids_t *id)
{
    tk_time(c, 1500, 20480);
    tk_alloc(c, id->t2, MEMPROF_A_CALLOC, BASE + 0x5000, 48, id->node[2]);
    tk_mark(c, MEMPROF_M_SCRIPT_END, 2000);
    tk_free(c, 0, MEMPROF_D_FREE, BASE + 0x5000);
    tk_time(c, 2500, 30000);
    tk_mark(c, MEMPROF_M_SCRIPT_END, 2400); /* earlier than the clock: the clock stays */
    tk_time(c, 2500, 0);
}

/* Enough records for many blocks, some stored (random strings), most
 * compressed (runs of similar records). */
#define NOISE_ROUNDS 150

static void rich_noise(tk_capture_t *c, rich_ids_t *id)
{
    uint32_t x = 12345;
    id->noise_first = c->nstrings + 1;
    for (int i = 0; i < NOISE_ROUNDS; i++) {
        if (i % 10 == 0) {
            char s[121];
            for (size_t j = 0; j < sizeof s - 1; j++) {
                x = x * 1103515245u + 12345u;
                s[j] = (char)(33 + (x >> 16) % 94);
            }
            s[sizeof s - 1] = '\0';
            tk_string(c, s);
            id->noise_count++;
        }
        uint64_t a = BASE + 0x100000 + (uint64_t)(i % 7) * 64;
        tk_alloc(c, i % 4 ? id->t1 : id->t2, MEMPROF_A_MALLOC, a, 64, id->node[i % 5]);
        tk_free(c, 0, MEMPROF_D_FREE, a);
        if (i % 16 == 15)
            tk_time(c, 3000 + (uint64_t)i, 40000 + (uint64_t)i);
    }
}

static void build_rich(tk_capture_t *c, rich_ids_t *id)
{
    tk_begin(c, 200);
    rich_tables(c, id);
    rich_allocs(c, id);
    rich_frees(c, id);
    rich_clock(c, id);
    rich_noise(c, id);
    tk_finish(c);
}

static uint64_t count_type(const tk_capture_t *c, memprof_event_type_t type)
{
    uint64_t n = 0;
    for (size_t i = 0; i < c->nev; i++)
        n += c->ev[i].type == type;
    return n;
}

/* ---- round trip ---------------------------------------------------------- */

static void check_info(const memprof_info_t *in, const tk_capture_t *c)
{
    cr_assert_eq(in->version_major, MEMPROF_FORMAT_MAJOR);
    cr_assert_eq(in->version_minor, MEMPROF_FORMAT_MINOR);
    cr_assert_eq(in->pid, TK_PID);
    cr_assert_eq(in->ppid, TK_PPID);
    cr_assert_eq(in->start_realtime_ns, TK_START_REALTIME);
    cr_assert_eq(in->start_monotonic_ns, TK_START_MONOTONIC);
    cr_assert_eq(in->argv_len, TK_ARGV_LEN);
    cr_assert_eq(memcmp(in->argv, tk_argv, TK_ARGV_LEN), 0);
    cr_assert_str_eq(in->python_version, TK_PYVERSION);
    cr_assert_eq(in->python_hexversion, TK_HEXVERSION);
    cr_assert_eq(in->options, MEMPROF_OPT_PYTHON_STACKS);
    cr_assert_eq(in->pystack_mode, MEMPROF_PYSTACK_WALKER);
    cr_assert_str_eq(in->executable, TK_EXECUTABLE);
    cr_assert_eq(in->page_size, TK_PAGE_SIZE);
    cr_assert_str_eq(in->tool_version, MEMPROF_VERSION_STRING);
    cr_assert_eq(in->has_trailer, 1);
    cr_assert_eq(in->truncated, 0);
    cr_assert_eq(in->end_realtime_ns, TK_END_REALTIME);
    cr_assert_eq(in->end_monotonic_ns, TK_END_MONOTONIC);
    cr_assert_eq(in->events, c->allocs + c->frees);
    cr_assert_eq(in->allocs, c->allocs);
    cr_assert_eq(in->frees, c->frees);
    cr_assert_eq(in->blocks, c->nblocks);
    cr_assert_eq(in->tracker_allocs, TK_TRACKER_ALLOCS);
}

static void check_code(memprof_reader_t *r, uint32_t id, unsigned flags, uint32_t fn, uint32_t qn,
                       uint32_t line, const uint8_t *lt, size_t lt_len)
{
    memprof_code_t co;
    cr_assert_eq(memprof_reader_code(r, id, &co), 0, "code %u", id);
    cr_assert_eq(co.flags, flags, "code %u flags", id);
    cr_assert_eq(co.filename, fn, "code %u filename", id);
    cr_assert_eq(co.qualname, qn, "code %u qualname", id);
    cr_assert_eq(co.firstlineno, line, "code %u firstlineno", id);
    cr_assert_eq(co.linetable_len, lt_len, "code %u line table length", id);
    cr_assert(lt_len == 0 || memcmp(co.linetable, lt, lt_len) == 0, "code %u line table", id);
}

static void check_node(memprof_reader_t *r, uint32_t id, uint32_t parent, uint32_t code, uint32_t instr)
{
    uint32_t p = 99, co = 99, in = 99;
    cr_assert_eq(memprof_reader_node(r, id, &p, &co, &in), 0, "node %u", id);
    cr_assert(p == parent && co == code && in == instr, "node %u: %u %u %u, want %u %u %u", id, p, co, in, parent,
              code, instr);
}

static void check_tables(memprof_reader_t *r, const tk_capture_t *c, const rich_ids_t *id)
{
    for (size_t i = 0; i < MP_ARRAY_LEN(rich_strings); i++)
        cr_assert_str_eq(memprof_reader_string(r, id->str[i]), rich_strings[i], "string %u", id->str[i]);
    for (uint32_t i = 0; i < id->noise_count; i++)
        cr_assert_eq(strlen(memprof_reader_string(r, id->noise_first + i)), 120);
    cr_assert_eq(id->noise_first + id->noise_count - 1, c->nstrings);
    cr_assert_null(memprof_reader_string(r, 0));
    cr_assert_null(memprof_reader_string(r, c->nstrings + 1));
    cr_assert_eq(memprof_reader_code_count(r), 3);
    check_code(r, id->code_pseudo, MEMPROF_CODE_PSEUDO, id->str[0], id->str[0], 0, NULL, 0);
    check_code(r, id->code_main, 0, id->str[1], id->str[2], 10, lt_main, sizeof lt_main);
    check_code(r, id->code_run, MEMPROF_CODE_LT_CUT, id->str[1], id->str[3], 120, lt_run, sizeof lt_run);
    memprof_code_t co;
    cr_assert_eq(memprof_reader_code(r, 0, &co), MEMPROF_EINVAL);
    cr_assert_eq(memprof_reader_code(r, 4, &co), MEMPROF_EINVAL);
    cr_assert_eq(memprof_reader_node_count(r), 4);
    check_node(r, 1, 0, id->code_pseudo, 0);
    check_node(r, 2, 0, id->code_main, 4);
    check_node(r, 3, 2, id->code_run, 17);
    check_node(r, 4, 3, id->code_main, UINT32_MAX);
    uint32_t a, b, d;
    cr_assert_eq(memprof_reader_node(r, 0, &a, &b, &d), MEMPROF_EINVAL);
    cr_assert_eq(memprof_reader_node(r, 5, &a, &b, &d), MEMPROF_EINVAL);
    cr_assert_eq(memprof_reader_thread_count(r), 3);
    cr_assert_eq(memprof_reader_thread_tid(r, id->t1), TID_1);
    cr_assert_eq(memprof_reader_thread_tid(r, id->t2), TID_2);
    cr_assert_eq(memprof_reader_thread_tid(r, id->t3), TID_3);
    cr_assert_eq(memprof_reader_thread_tid(r, 0), 0);
    cr_assert_eq(memprof_reader_thread_tid(r, 4), 0);
}

Test(format, rich_capture_shape)
{
    /* the builder must produce what the other tests rely on */
    tk_capture_t c;
    rich_ids_t id = {0};
    build_rich(&c, &id);
    size_t stored = 0;
    for (size_t i = 0; i < c.nblocks; i++)
        stored += c.blocks[i].stored;
    cr_assert_geq(c.nblocks, 20, "only %zu blocks", c.nblocks);
    cr_assert_geq(stored, 3, "stored (uncompressed) blocks: %zu", stored);
    cr_assert_geq(c.nblocks - stored, 10, "compressed blocks: %zu", c.nblocks - stored);
    cr_assert_eq(count_type(&c, MEMPROF_EV_RESTORE), 1);
    cr_assert_eq(count_type(&c, MEMPROF_EV_MARK), 2);
    cr_assert_eq(count_type(&c, MEMPROF_EV_TIME), 3 + NOISE_ROUNDS / 16);
    tk_close(&c);
}

Test(format, every_record_round_trips)
{
    tk_capture_t c;
    rich_ids_t id = {0};
    build_rich(&c, &id);
    memprof_reader_t *r = tk_open(c.data, c.len);
    memprof_event_t *ev = calloc(c.nev + 1, sizeof *ev);
    int rc;
    size_t n = tk_read_all(r, ev, c.nev + 1, c.nev, &rc);
    cr_assert_eq(rc, 0, "read: %d (%s)", rc, memprof_reader_error(r));
    cr_assert_eq(n, c.nev);
    for (size_t i = 0; i < n; i++)
        tk_assert_event(&ev[i], &c.ev[i], i);
    check_info(memprof_reader_info(r), &c);
    check_tables(r, &c, &id);
    cr_assert_eq(memprof_reader_next(r, &ev[0]), 0, "the end is sticky");
    cr_assert_str_eq(memprof_reader_error(r), "no error");
    free(ev);
    memprof_reader_close(r);
    tk_close(&c);
}

Test(format, event_fields_spot_check)
{
    /* a few events spelled out, independent of the kit's bookkeeping */
    tk_capture_t c;
    rich_ids_t id = {0};
    build_rich(&c, &id);
    memprof_reader_t *r = tk_open(c.data, c.len);
    memprof_event_t ev;
    cr_assert_eq(memprof_reader_next(r, &ev), 1);
    cr_assert(ev.type == MEMPROF_EV_ALLOC && ev.kind == MEMPROF_A_MALLOC && ev.thread == 2 && ev.stack == 1 &&
              ev.addr == BASE + 0x100 && ev.size == 16 && ev.index == 0 && ev.time_us == 0);
    cr_assert_eq(memprof_reader_next(r, &ev), 1);
    cr_assert(ev.type == MEMPROF_EV_ALLOC && ev.kind == MEMPROF_A_CALLOC && ev.thread == 3 && ev.stack == 3 &&
              ev.addr == BASE - 0x20000 && ev.size == 32 && ev.index == 1);
    memprof_reader_close(r);
    tk_close(&c);
}

Test(format, empty_capture)
{
    tk_capture_t c;
    tk_begin(&c, 200);
    tk_finish(&c);
    memprof_reader_t *r = tk_open(c.data, c.len);
    memprof_event_t ev;
    cr_assert_eq(memprof_reader_next(r, &ev), 0);
    const memprof_info_t *in = memprof_reader_info(r);
    cr_assert(in->has_trailer == 1 && in->truncated == 0 && in->events == 0 && in->blocks == 0);
    memprof_reader_close(r);
    tk_close(&c);
}

/* ---- liblz4 agrees on the frame ----------------------------------------- */

Test(format, frame_decodes_with_liblz4)
{
    tk_capture_t c;
    rich_ids_t id = {0};
    build_rich(&c, &id);
    LZ4F_dctx *dctx;
    cr_assert(!LZ4F_isError(LZ4F_createDecompressionContext(&dctx, LZ4F_VERSION)));
    size_t cap = c.nblocks * 200, out_len = 0;
    uint8_t *out = malloc(cap);
    const uint8_t *src = c.data + c.header_len;
    size_t left = c.trailer - c.header_len, hint = 1;
    while (left && hint) {
        size_t dst_n = cap - out_len, src_n = left;
        hint = LZ4F_decompress(dctx, out + out_len, &dst_n, src, &src_n, NULL);
        cr_assert(!LZ4F_isError(hint), "liblz4: %s", LZ4F_getErrorName(hint));
        out_len += dst_n;
        src += src_n;
        left -= src_n;
    }
    cr_assert_eq(hint, 0, "liblz4 saw no end of frame");
    cr_assert_eq(left, 0, "the frame ends where the trailer starts");
    cr_assert_gt(out_len, c.nblocks * 100, "decoded %zu record bytes", out_len);
    LZ4F_freeDecompressionContext(dctx);
    free(out);
    tk_close(&c);
}

/* ---- cut at every byte --------------------------------------------------- */

static void check_cut(const tk_capture_t *c, size_t cut, memprof_event_t *ev)
{
    uint8_t *copy = malloc(cut ? cut : 1); /* exact size: ASan sees any overread */
    memcpy(copy, c->data, cut);
    memprof_reader_t *r = NULL;
    int rc = memprof_reader_open_mem(copy, cut, &r);
    if (cut < c->header_len) {
        cr_assert_eq(rc, MEMPROF_ETRUNCATED, "cut at %zu (in the header): open gives %d", cut, rc);
        cr_assert_not_null(r);
    } else {
        cr_assert_eq(rc, 0, "cut at %zu: open gives %d (%s)", cut, rc, memprof_reader_error(r));
        size_t n = tk_read_all(r, ev, c->nev, c->nev, &rc);
        const memprof_info_t *in = memprof_reader_info(r);
        cr_assert_eq(rc, 0, "cut at %zu: %d (%s)", cut, rc, memprof_reader_error(r));
        cr_assert_eq(in->truncated, 1, "cut at %zu", cut);
        cr_assert_eq(in->has_trailer, 0, "cut at %zu", cut);
        cr_assert_eq(n, tk_events_before(c, cut), "cut at %zu: %zu events", cut, n);
        for (size_t i = 0; i < n; i++)
            tk_assert_event(&ev[i], &c->ev[i], i);
    }
    memprof_reader_close(r);
    free(copy);
}

Test(format, cut_at_every_byte, .timeout = 120)
{
    tk_capture_t c;
    rich_ids_t id = {0};
    build_rich(&c, &id);
    memprof_event_t *ev = calloc(c.nev, sizeof *ev);
    for (size_t cut = 0; cut < c.len; cut++)
        check_cut(&c, cut, ev);
    /* the expectation is not trivially 0 or everything */
    cr_assert_eq(tk_events_before(&c, c.end_mark), c.nev);
    cr_assert_lt(tk_events_before(&c, c.blocks[c.nblocks / 2].end - 1), c.nev);
    free(ev);
    tk_close(&c);
}

/* ---- flipped bytes ------------------------------------------------------- */

/* Flips no reader can detect: a length field (a block's size word, the end
 * mark, the trailer's length) changed to a value within the reader's
 * limits that points past the end of the file. The file then looks exactly
 * like one cut inside that block or trailer (and only the last 64 KiB of a
 * capture can be read that way). The reader must say "truncated" and
 * deliver the blocks before the field; it never calls the capture whole. */
static int length_field_at(const tk_capture_t *c, size_t off, size_t *field, uint32_t *limit)
{
    size_t w = c->header_len + MP_LZ4F_HEADER_LEN;
    *limit = MEMPROF_BLOCK_MAX;
    for (size_t i = 0; i <= c->nblocks; i++) {
        if (off >= w && off < w + 4) {
            *field = w;
            return 1;
        }
        w = i < c->nblocks ? c->blocks[i].end : w;
    }
    *field = c->trailer + 8;
    *limit = MEMPROF_TLV_MAX;
    return off >= *field && off < *field + 4;
}

static int reads_as_cut(const tk_capture_t *c, const uint8_t *flipped, size_t off, size_t *field)
{
    uint32_t limit;
    if (!length_field_at(c, off, field, &limit))
        return 0;
    uint32_t v = mp_get_le32(flipped + *field);
    if (limit == MEMPROF_BLOCK_MAX)
        v &= ~MEMPROF_LZ4F_UNCOMPRESSED;
    /* block: word, data, checksum; trailer: length, TLVs, checksum */
    return v != 0 && v <= limit && *field + 4 + (size_t)v + 4 > c->len;
}

static size_t check_flip(const tk_capture_t *c, size_t off, uint8_t mask, memprof_event_t *ev)
{
    uint8_t *copy = malloc(c->len);
    memcpy(copy, c->data, c->len);
    copy[off] ^= mask;
    memprof_reader_t *r = NULL;
    int rc = memprof_reader_open_mem(copy, c->len, &r);
    size_t n = 0, field;
    if (rc == 0)
        n = tk_read_all(r, ev, c->nev, c->nev, &rc);
    int cut = reads_as_cut(c, copy, off, &field);
    if (!cut) {
        cr_assert_lt(rc, 0, "byte %zu ^ %#x: read without an error (%zu events, truncated %d)", off, mask, n,
                     memprof_reader_info(r)->truncated);
    } else {
        const memprof_info_t *in = memprof_reader_info(r);
        cr_assert_eq(rc, 0, "byte %zu ^ %#x: %d (%s)", off, mask, rc, memprof_reader_error(r));
        cr_assert(in->truncated == 1 && in->has_trailer == 0, "byte %zu ^ %#x: not reported as cut", off, mask);
        cr_assert_eq(n, tk_events_before(c, field), "byte %zu ^ %#x: %zu events", off, mask, n);
        cr_log_info("byte %zu ^ %#x (length field at %zu): reads as a capture cut there", off, mask, field);
    }
    memprof_reader_close(r);
    free(copy);
    return (size_t)cut;
}

static void flip_all(uint8_t mask)
{
    tk_capture_t c;
    rich_ids_t id = {0};
    build_rich(&c, &id);
    memprof_event_t *ev = calloc(c.nev, sizeof *ev);
    size_t cut_like = 0;
    for (size_t off = 0; off < c.len; off++)
        cut_like += check_flip(&c, off, mask, ev);
    /* a handful at most: one per block for 0xff (all of this capture is in its last 64 KiB) */
    cr_assert_leq(cut_like, c.nblocks + 8, "%zu flips read as a cut file", cut_like);
    free(ev);
    tk_close(&c);
}

Test(format, every_byte_flipped_ff, .timeout = 120) { flip_all(0xff); }
Test(format, every_byte_flipped_01, .timeout = 120) { flip_all(0x01); }

/* ---- versions ------------------------------------------------------------ */

/* The capture's header with another version, checksum fixed up: what a
 * newer (or older) memprof would really write. */
static int open_as_version(unsigned major, unsigned minor, int reseal, char *err, size_t errlen)
{
    tk_capture_t c;
    tk_begin(&c, 200);
    tk_finish(&c);
    mp_put_le16(c.data + 8, (uint16_t)major);
    mp_put_le16(c.data + 10, (uint16_t)minor);
    size_t hend = c.header_len - 4;
    if (reseal)
        mp_put_le32(c.data + hend, mp_xxh32(c.data, hend, 0));
    memprof_reader_t *r = NULL;
    int rc = memprof_reader_open_mem(c.data, c.len, &r);
    cr_assert_not_null(r);
    snprintf(err, errlen, "%s", memprof_reader_error(r));
    memprof_reader_close(r);
    tk_close(&c);
    return rc;
}

Test(format, newer_minor_refused)
{
    char err[256];
    cr_assert_eq(open_as_version(1, 1, 1, err, sizeof err), MEMPROF_EVERSION);
    cr_assert(strstr(err, "1.1") && strstr(err, "1.0"), "message: %s", err);
}

Test(format, newer_major_refused)
{
    char err[256];
    cr_assert_eq(open_as_version(2, 0, 1, err, sizeof err), MEMPROF_EVERSION);
    cr_assert(strstr(err, "2.0") && strstr(err, "1.0"), "message: %s", err);
    cr_assert_eq(open_as_version(65535, 65535, 1, err, sizeof err), MEMPROF_EVERSION);
    cr_assert(strstr(err, "65535.65535") && strstr(err, "1.0"), "message: %s", err);
}

Test(format, older_major_refused)
{
    char err[256];
    cr_assert_eq(open_as_version(0, 9, 1, err, sizeof err), MEMPROF_EVERSION);
    cr_assert(strstr(err, "0.9") && strstr(err, "1."), "message: %s", err);
}

Test(format, version_checked_before_checksum)
{
    /* bytes 8..11 patched, checksum left stale: still a version error */
    char err[256];
    cr_assert_eq(open_as_version(1, 1, 0, err, sizeof err), MEMPROF_EVERSION);
    cr_assert(strstr(err, "1.1") && strstr(err, "1.0"), "message: %s", err);
    cr_assert_eq(open_as_version(2, 0, 0, err, sizeof err), MEMPROF_EVERSION);
    cr_assert_eq(open_as_version(1, 0, 0, err, sizeof err), 0, "%s", err);
}

Test(format, same_version_accepted)
{
    char err[256];
    cr_assert_eq(open_as_version(MEMPROF_FORMAT_MAJOR, MEMPROF_FORMAT_MINOR, 1, err, sizeof err), 0, "%s", err);
}

/* ---- the worked example of docs/format.md, byte for byte ----------------- */

static const uint8_t example[108] = {
    0x89, 0x4d, 0x45, 0x4d, 0x50, 0x52, 0x4f, 0x46, 0x01, 0x00, 0x00, 0x00, 0x0b, 0x00, 0x00, 0x00,
    0x01, 0x02, 0xd2, 0x09, 0x0b, 0x05, 0x30, 0x2e, 0x31, 0x2e, 0x30, 0xb1, 0xcc, 0x47, 0xc7, 0x04,
    0x22, 0x4d, 0x18, 0x70, 0x40, 0xad, 0x1e, 0x00, 0x00, 0x80, 0x04, 0x04, 0x61, 0x2e, 0x70, 0x79,
    0x04, 0x01, 0x66, 0x05, 0x01, 0x02, 0x0a, 0x02, 0xe8, 0x02, 0x06, 0x01, 0x01, 0x00, 0x13, 0xd2,
    0x09, 0x11, 0x80, 0x40, 0x64, 0x02, 0x12, 0x00, 0x94, 0xf9, 0xd7, 0xe3, 0x00, 0x00, 0x00, 0x00,
    0x89, 0x4d, 0x50, 0x54, 0x52, 0x41, 0x49, 0x4c, 0x0c, 0x00, 0x00, 0x00, 0x03, 0x01, 0x02, 0x04,
    0x01, 0x01, 0x05, 0x01, 0x01, 0x06, 0x01, 0x01, 0x3a, 0xd5, 0x59, 0xb6,
};

static size_t write_example(uint8_t *out, void *lz4)
{
    uint8_t rec[256]; /* the encoders want room for their largest record */
    mp_enc_t e;
    mp_enc_init(&e, rec, sizeof rec);
    cr_assert(!mp_enc_string(&e, "a.py", 4) && !mp_enc_string(&e, "f", 1));
    cr_assert(!mp_enc_code(&e, 0, 1, 2, 10, (const uint8_t[]){0xe8, 0x02}, 2));
    cr_assert(!mp_enc_node(&e, 1, 0, 1, 0) && !mp_enc_thread_new(&e, 1, 1234));
    cr_assert(!mp_enc_alloc(&e, 1, MEMPROF_A_MALLOC, 0x1000, 100, 1));
    cr_assert(!mp_enc_free(&e, 0, MEMPROF_D_FREE, 0x1000));
    uint8_t *p = out + MEMPROF_HEADER_FIXED;
    p += mp_tlv_varint(p, MEMPROF_H_PID, 1234);
    p += mp_tlv_bytes(p, MEMPROF_H_TOOL_VERSION, "0.1.0", 5);
    size_t n = mp_header_seal(out, (size_t)(p - out) - MEMPROF_HEADER_FIXED);
    n += mp_lz4f_header(out + n);
    n += mp_lz4f_block(lz4, rec, e.len, out + n);
    n += mp_lz4f_end(out + n);
    size_t t0 = n, k = t0 + MP_TRAILER_FIXED;
    k += mp_tlv_varint(out + k, MEMPROF_T_EVENTS, 2);
    k += mp_tlv_varint(out + k, MEMPROF_T_ALLOCS, 1);
    k += mp_tlv_varint(out + k, MEMPROF_T_FREES, 1);
    k += mp_tlv_varint(out + k, MEMPROF_T_BLOCKS, 1);
    return t0 + mp_trailer_seal(out + t0, k - t0 - MP_TRAILER_FIXED);
}

Test(format, worked_example_of_the_spec)
{
    uint8_t out[256];
    void *lz4 = aligned_alloc(64, ((size_t)LZ4_sizeofState() + 63) & ~(size_t)63);
    size_t n = write_example(out, lz4);
    free(lz4);
    cr_assert_eq(n, sizeof example);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(out[i], example[i], "byte %zu: %#04x, the spec says %#04x", i, out[i], example[i]);
    memprof_event_t ev[3];
    int rc;
    memprof_reader_t *r = tk_open(example, sizeof example);
    cr_assert_eq(tk_read_all(r, ev, 3, 2, &rc), 2);
    cr_assert(rc == 0 && memprof_reader_info(r)->has_trailer == 1);
    tk_assert_event(&ev[0], &(memprof_event_t){MEMPROF_EV_ALLOC, 1, 1, 1, 0x1000, 100, 0, 0, 0}, 0);
    tk_assert_event(&ev[1], &(memprof_event_t){MEMPROF_EV_FREE, 1, 0, 0, 0x1000, 0, 1, 0, 0}, 1);
    memprof_code_t co;
    cr_assert_eq(memprof_reader_code(r, 1, &co), 0);
    cr_assert(memprof_code_line(&co, 0) == 11 && memprof_code_line(&co, 1) == -1);
    memprof_reader_close(r);
    r = tk_open(example, 78); /* cut after the end mark's first two bytes */
    cr_assert_eq(tk_read_all(r, ev, 3, 2, &rc), 2);
    cr_assert(rc == 0 && memprof_reader_info(r)->truncated == 1);
    memprof_reader_close(r);
}
