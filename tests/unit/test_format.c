/* test_format.c - the capture format end to end: captures built with the
 * encoders (as the recorder writes them) read back with the reader. The
 * rich capture (rich_capture.h: every record type, the compact record forms
 * the encoder must pick, node lines relative to their code's first line,
 * many small blocks) has the shape the tests rely on and round-trips with
 * every field, every table entry and the header and trailer; an empty
 * capture reads as one; newer and older format versions are refused; the
 * worked example of docs/format.md is what the encoders write. Linked
 * blocks, liblz4's view of the frame, cuts and flipped bytes are in
 * test_damage.c. */
#include <criterion/criterion.h>
#include <lz4.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_common.h"
#include "rich_capture.h"
#include "testkit.h"
#include "xxhash32.h"

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
                       uint32_t line)
{
    memprof_code_t co;
    cr_assert_eq(memprof_reader_code(r, id, &co), 0, "code %u", id);
    cr_assert_eq(co.flags, flags, "code %u flags", id);
    cr_assert_eq(co.filename, fn, "code %u filename", id);
    cr_assert_eq(co.qualname, qn, "code %u qualname", id);
    cr_assert_eq(co.firstlineno, line, "code %u firstlineno", id);
}

static void check_node(memprof_reader_t *r, uint32_t id, uint32_t parent, uint32_t code, int32_t line)
{
    uint32_t p = 99, co = 99;
    int32_t ln = 99;
    cr_assert_eq(memprof_reader_node(r, id, &p, &co, &ln), 0, "node %u", id);
    cr_assert(p == parent && co == code && ln == line, "node %u: %u %u %d, want %u %u %d", id, p, co, ln, parent,
              code, line);
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
    cr_assert_eq(memprof_reader_code_count(r), 4);
    check_code(r, id->code_pseudo, MEMPROF_CODE_PSEUDO, id->str[0], id->str[0], 0);
    check_code(r, id->code_main, 0, id->str[1], id->str[2], 10);
    check_code(r, id->code_run, 0, id->str[1], id->str[3], 120);
    check_code(r, id->code_far, 0, id->str[1], id->str[5], INT32_MAX);
    memprof_code_t co;
    cr_assert_eq(memprof_reader_code(r, 0, &co), MEMPROF_EINVAL);
    cr_assert_eq(memprof_reader_code(r, 5, &co), MEMPROF_EINVAL);
    cr_assert_eq(memprof_reader_node_count(r), RICH_NNODES);
    for (uint32_t i = 1; i <= RICH_NNODES; i++) {
        cr_assert_eq(id->node[i], i);
        check_node(r, i, id->node[rich_node_specs[i].parent], rich_spec_code(id, rich_node_specs[i].code),
                   rich_node_specs[i].line);
    }
    /* spelled out */
    check_node(r, 1, 0, id->code_pseudo, -1);
    check_node(r, 2, 0, id->code_main, 10);
    check_node(r, 3, 2, id->code_run, 117);
    check_node(r, 4, 3, id->code_main, 300);
    check_node(r, 5, 4, id->code_run, -1);
    check_node(r, 8, 7, id->code_far, INT32_MAX);
    uint32_t a, b;
    int32_t d;
    cr_assert_eq(memprof_reader_node(r, 0, &a, &b, &d), MEMPROF_EINVAL);
    cr_assert_eq(memprof_reader_node(r, RICH_NNODES + 1, &a, &b, &d), MEMPROF_EINVAL);
    cr_assert_eq(memprof_reader_thread_count(r), 3);
    cr_assert_eq(memprof_reader_thread_tid(r, id->t1), RICH_TID_1);
    cr_assert_eq(memprof_reader_thread_tid(r, id->t2), RICH_TID_2);
    cr_assert_eq(memprof_reader_thread_tid(r, id->t3), RICH_TID_3);
    cr_assert_eq(memprof_reader_thread_tid(r, 0), 0);
    cr_assert_eq(memprof_reader_thread_tid(r, 4), 0);
}

Test(format, rich_capture_shape)
{
    /* the builder must produce what the other tests rely on */
    tk_capture_t c;
    rich_ids_t id = {0};
    rich_build(&c, &id);
    size_t stored = 0;
    for (size_t i = 0; i < c.nblocks; i++)
        stored += c.blocks[i].stored;
    cr_assert_geq(c.nblocks, 20, "only %zu blocks", c.nblocks);
    cr_assert_geq(stored, 3, "stored (uncompressed) blocks: %zu", stored);
    cr_assert_geq(c.nblocks - stored, 10, "compressed blocks: %zu", c.nblocks - stored);
    cr_assert_eq(rich_count_type(&c, MEMPROF_EV_RESTORE), 6);
    cr_assert_eq(rich_count_type(&c, MEMPROF_EV_MARK), 2);
    cr_assert_eq(rich_count_type(&c, MEMPROF_EV_TIME), 3 + RICH_NOISE_ROUNDS / 16);
    /* every event record type, and the ring positions at both ends */
    static const unsigned types[] = {MEMPROF_R_ALLOC,      MEMPROF_R_FREE,       MEMPROF_R_RESTORE,
                                     MEMPROF_R_ALLOC_SAME, MEMPROF_R_FREE_RECENT, MEMPROF_R_REUSE_SAME,
                                     MEMPROF_R_REUSE};
    uint64_t total = 0;
    for (size_t i = 0; i < MP_ARRAY_LEN(types); i++) {
        cr_assert_geq(rich_count_tags(&c, types[i]), 2, "record type %u: %llu", types[i],
                      (unsigned long long)rich_count_tags(&c, types[i]));
        total += rich_count_tags(&c, types[i]);
    }
    cr_assert_eq(total, c.allocs + c.frees + rich_count_type(&c, MEMPROF_EV_RESTORE));
    cr_assert_geq(c.tags[TK_TAG(MEMPROF_R_FREE_RECENT, 0)], 1);
    cr_assert_geq(c.tags[TK_TAG(MEMPROF_R_FREE_RECENT, 15)], 1);
    cr_assert_geq(c.tags[TK_TAG(MEMPROF_R_REUSE, 15)], 1);
    cr_assert_geq(c.tags[TK_TAG(MEMPROF_R_REUSE, 0)], 1);
    cr_assert_geq(c.tags[TK_TAG(MEMPROF_R_REUSE_SAME, 0)], 1);
    tk_close(&c);
}

Test(format, every_record_round_trips)
{
    tk_capture_t c;
    rich_ids_t id = {0};
    rich_build(&c, &id);
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
    rich_build(&c, &id);
    memprof_reader_t *r = tk_open(c.data, c.len);
    memprof_event_t ev;
    cr_assert_eq(memprof_reader_next(r, &ev), 1);
    cr_assert(ev.type == MEMPROF_EV_ALLOC && ev.kind == MEMPROF_A_MALLOC && ev.thread == 2 && ev.stack == 1 &&
              ev.addr == RICH_BASE + 0x100 && ev.size == 16 && ev.index == 0 && ev.time_us == 0);
    cr_assert_eq(memprof_reader_next(r, &ev), 1);
    cr_assert(ev.type == MEMPROF_EV_ALLOC && ev.kind == MEMPROF_A_CALLOC && ev.thread == 3 && ev.stack == 3 &&
              ev.addr == RICH_BASE - 0x20000 && ev.size == 32 && ev.index == 1);
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

static const uint8_t example[112] = {
    0x89, 0x4d, 0x45, 0x4d, 0x50, 0x52, 0x4f, 0x46, 0x01, 0x00, 0x00, 0x00, 0x0b, 0x00, 0x00, 0x00,
    0x01, 0x02, 0xd2, 0x09, 0x0b, 0x05, 0x30, 0x2e, 0x31, 0x2e, 0x30, 0xb1, 0xcc, 0x47, 0xc7, 0x04,
    0x22, 0x4d, 0x18, 0x50, 0x40, 0xc0, 0x22, 0x00, 0x00, 0x80, 0x04, 0x04, 0x61, 0x2e, 0x70, 0x79,
    0x04, 0x01, 0x66, 0x05, 0x01, 0x02, 0x0a, 0x06, 0x01, 0x01, 0x05, 0x13, 0xd2, 0x09, 0x11, 0x80,
    0x08, 0x64, 0x02, 0x1a, 0xa1, 0x03, 0x18, 0x1b, 0x0c, 0x40, 0x22, 0x00, 0x10, 0x61, 0x01, 0xb7,
    0x00, 0x00, 0x00, 0x00, 0x89, 0x4d, 0x50, 0x54, 0x52, 0x41, 0x49, 0x4c, 0x0c, 0x00, 0x00, 0x00,
    0x03, 0x01, 0x05, 0x04, 0x01, 0x03, 0x05, 0x01, 0x02, 0x06, 0x01, 0x01, 0xa4, 0x2f, 0xd9, 0xb2,
};

static size_t write_example(uint8_t *out, LZ4_stream_t *lz4)
{
    uint8_t rec[256]; /* the encoders want room for their largest record */
    mp_enc_t e;
    mp_enc_init(&e, rec, sizeof rec);
    cr_assert(!mp_enc_string(&e, "a.py", 4) && !mp_enc_string(&e, "f", 1));
    cr_assert(!mp_enc_code(&e, 0, 1, 2, 10));
    cr_assert(!mp_enc_node(&e, 1, 0, 1, 12, 10) && !mp_enc_thread_new(&e, 1, 1234));
    cr_assert(!mp_enc_alloc(&e, 1, MEMPROF_A_MALLOC, 0x1000, 100, 1));
    cr_assert(!mp_enc_alloc(&e, 1, MEMPROF_A_MALLOC, 0x1068, 24, 1));  /* ALLOC_SAME, odd form */
    cr_assert(!mp_enc_free(&e, 0, MEMPROF_D_FREE, 0x1000));            /* FREE_RECENT 1 */
    cr_assert(!mp_enc_alloc(&e, 1, MEMPROF_A_MALLOC, 0x1000, 64, 1));  /* REUSE_SAME 0 */
    cr_assert(!mp_enc_free(&e, 1, MEMPROF_D_REALLOC, 0x1000));         /* FREE realloc */
    uint8_t *p = out + MEMPROF_HEADER_FIXED;
    p += mp_tlv_varint(p, MEMPROF_H_PID, 1234);
    p += mp_tlv_bytes(p, MEMPROF_H_TOOL_VERSION, "0.1.0", 5);
    size_t n = mp_header_seal(out, (size_t)(p - out) - MEMPROF_HEADER_FIXED);
    n += mp_lz4f_header(out + n);
    n += mp_lz4f_block(lz4, rec, e.len, out + n);
    n += mp_lz4f_end(out + n);
    size_t t0 = n, k = t0 + MP_TRAILER_FIXED;
    k += mp_tlv_varint(out + k, MEMPROF_T_EVENTS, 5);
    k += mp_tlv_varint(out + k, MEMPROF_T_ALLOCS, 3);
    k += mp_tlv_varint(out + k, MEMPROF_T_FREES, 2);
    k += mp_tlv_varint(out + k, MEMPROF_T_BLOCKS, 1);
    return t0 + mp_trailer_seal(out + t0, k - t0 - MP_TRAILER_FIXED);
}

Test(format, worked_example_of_the_spec)
{
    uint8_t out[256];
    LZ4_stream_t *lz4 = LZ4_createStream();
    size_t n = write_example(out, lz4);
    LZ4_freeStream(lz4);
    cr_assert_eq(n, sizeof example);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(out[i], example[i], "byte %zu: %#04x, the spec says %#04x", i, out[i], example[i]);
    memprof_event_t ev[6];
    int rc;
    memprof_reader_t *r = tk_open(example, sizeof example);
    cr_assert_eq(tk_read_all(r, ev, 6, 5, &rc), 5);
    cr_assert(rc == 0 && memprof_reader_info(r)->has_trailer == 1);
    tk_assert_event(&ev[0], &(memprof_event_t){MEMPROF_EV_ALLOC, 1, 1, 1, 0x1000, 100, 0, 0, 0}, 0);
    tk_assert_event(&ev[1], &(memprof_event_t){MEMPROF_EV_ALLOC, 1, 1, 1, 0x1068, 24, 1, 0, 0}, 1);
    tk_assert_event(&ev[2], &(memprof_event_t){MEMPROF_EV_FREE, 1, 0, 0, 0x1000, 0, 2, 0, 0}, 2);
    tk_assert_event(&ev[3], &(memprof_event_t){MEMPROF_EV_ALLOC, 1, 1, 1, 0x1000, 64, 3, 0, 0}, 3);
    tk_assert_event(&ev[4], &(memprof_event_t){MEMPROF_EV_FREE, 2, 1, 0, 0x1000, 0, 4, 0, 0}, 4);
    memprof_code_t co;
    cr_assert_eq(memprof_reader_code(r, 1, &co), 0);
    cr_assert(co.flags == 0 && co.filename == 1 && co.qualname == 2 && co.firstlineno == 10);
    uint32_t parent, code;
    int32_t line;
    cr_assert_eq(memprof_reader_node(r, 1, &parent, &code, &line), 0);
    cr_assert(parent == 0 && code == 1 && line == 12, "node 1: %u %u %d", parent, code, line);
    cr_assert_str_eq(memprof_reader_string(r, 1), "a.py");
    cr_assert_str_eq(memprof_reader_string(r, 2), "f");
    cr_assert_eq(memprof_reader_thread_tid(r, 1), 1234);
    memprof_reader_close(r);
    r = tk_open(example, 82); /* cut after the end mark's first two bytes */
    cr_assert_eq(tk_read_all(r, ev, 6, 5, &rc), 5);
    cr_assert(rc == 0 && memprof_reader_info(r)->truncated == 1);
    memprof_reader_close(r);
    /* the frame header the spec spells out: FLG 0x50 (linked blocks), HC 0xc0 */
    cr_assert(example[35] == MEMPROF_LZ4F_FLG && example[35] == 0x50 && example[36] == 0x40 && example[37] == 0xc0);
    cr_assert_eq(mp_xxh32((const uint8_t[]){0x50, 0x40}, 2, 0), 0xc50ac075u);
}
