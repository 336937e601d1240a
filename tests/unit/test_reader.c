/* test_reader.c - the reader's refusals: missing files, directories, bad
 * magic, bad headers, and records or blocks that are wrong inside a block
 * whose checksum is right (what a buggy writer, not a damaged disk, makes).
 * Each bad record gives MEMPROF_ECORRUPT with a "corrupted" message after
 * exactly the events before it, and the error is sticky. */
#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <lz4.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mp_common.h"
#include "testkit.h"
#include "xxhash32.h"

/* ---- opening ------------------------------------------------------------- */

Test(reader_open, missing_path)
{
    const char *path = "/nonexistent-memprof-dir/capture.mprof";
    memprof_reader_t *r = NULL;
    cr_assert_eq(memprof_reader_open(path, &r), MEMPROF_ENOENT);
    cr_assert_not_null(r);
    cr_assert(strstr(memprof_reader_error(r), path), "message: %s", memprof_reader_error(r));
    memprof_reader_close(r);
}

Test(reader_open, directory)
{
    memprof_reader_t *r = NULL;
    int rc = memprof_reader_open("/tmp", &r);
    cr_assert_eq(rc, MEMPROF_EINVAL);
    cr_assert(strstr(memprof_reader_error(r), "/tmp"), "message: %s", memprof_reader_error(r));
    memprof_reader_close(r);
}

static char *temp_file(const void *data, size_t len)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/memprof-test-XXXXXX");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, data, len), (ssize_t)len);
    close(fd);
    return path;
}

Test(reader_open, empty_file)
{
    char *path = temp_file("", 0);
    memprof_reader_t *r = NULL;
    int rc = memprof_reader_open(path, &r);
    unlink(path);
    cr_assert_eq(rc, MEMPROF_ETRUNCATED);
    cr_assert(strstr(memprof_reader_error(r), "empty"), "message: %s", memprof_reader_error(r));
    memprof_reader_close(r);
}

Test(reader_open, file_reads_like_memory)
{
    tk_capture_t c;
    tk_begin(&c, 64);
    uint32_t t = tk_thread_new(&c, 5);
    for (uint64_t i = 1; i <= 50; i++)
        tk_alloc(&c, t, MEMPROF_A_MALLOC, i * 32, i, 0);
    tk_finish(&c);
    char *path = temp_file(c.data, c.len);
    memprof_reader_t *r = NULL;
    int rc = memprof_reader_open(path, &r);
    unlink(path);
    cr_assert_eq(rc, 0, "%s", memprof_reader_error(r));
    memprof_event_t ev[51];
    size_t n = tk_read_all(r, ev, 51, 50, &rc);
    cr_assert_eq(rc, 0);
    cr_assert_eq(n, 50);
    for (size_t i = 0; i < n; i++)
        tk_assert_event(&ev[i], &c.ev[i], i);
    cr_assert_eq(memprof_reader_info(r)->has_trailer, 1);
    memprof_reader_close(r);
    tk_close(&c);
}

static int open_bytes(const void *data, size_t len)
{
    memprof_reader_t *r = NULL;
    int rc = memprof_reader_open_mem(data, len, &r);
    cr_assert_not_null(r);
    if (rc == MEMPROF_EBADMAGIC)
        cr_assert(strstr(memprof_reader_error(r), "magic"), "message: %s", memprof_reader_error(r));
    memprof_reader_close(r);
    return rc;
}

Test(reader_open, bad_magic)
{
    tk_capture_t c;
    tk_begin(&c, 200);
    tk_finish(&c);
    cr_assert_eq(open_bytes("GIF89a", 6), MEMPROF_EBADMAGIC);
    cr_assert_eq(open_bytes("\x89MEMPROX and more", 17), MEMPROF_EBADMAGIC);
    cr_assert_eq(open_bytes("\x89MEM", 4), MEMPROF_ETRUNCATED, "a cut magic is a cut file");
    for (size_t i = 0; i < MEMPROF_MAGIC_LEN; i++) {
        c.data[i] ^= 0x20;
        cr_assert_eq(open_bytes(c.data, c.len), MEMPROF_EBADMAGIC, "magic byte %zu", i);
        c.data[i] ^= 0x20;
    }
    cr_assert_eq(open_bytes(c.data, c.len), 0);
    tk_close(&c);
}

/* A header with the given TLV area, sealed, then an empty frame. */
static int open_header(const uint8_t *tlv, size_t n, char *err, size_t errlen)
{
    uint8_t buf[256];
    memcpy(buf + MEMPROF_HEADER_FIXED, tlv, n);
    size_t len = mp_header_seal(buf, n);
    len += mp_lz4f_header(buf + len);
    len += mp_lz4f_end(buf + len);
    memprof_reader_t *r = NULL;
    int rc = memprof_reader_open_mem(buf, len, &r);
    snprintf(err, errlen, "%s", memprof_reader_error(r));
    memprof_reader_close(r);
    return rc;
}

Test(reader_open, bad_header_fields)
{
    char err[256];
    static const uint8_t empty_pid[] = {MEMPROF_H_PID, 0};
    static const uint8_t long_pid[] = {MEMPROF_H_PID, 2, 0x05, 0x00}; /* one varint plus a stray byte */
    static const uint8_t past_end[] = {MEMPROF_H_ARGV, 9, 'a'};
    static const uint8_t cut_len[] = {MEMPROF_H_ARGV, 0x80};
    static const uint8_t unknown_only[] = {200, 3, 1, 2, 3};
    cr_assert_eq(open_header(empty_pid, sizeof empty_pid, err, sizeof err), MEMPROF_ECORRUPT);
    cr_assert(strstr(err, "corrupted"), "%s", err);
    cr_assert_eq(open_header(long_pid, sizeof long_pid, err, sizeof err), MEMPROF_ECORRUPT);
    cr_assert_eq(open_header(past_end, sizeof past_end, err, sizeof err), MEMPROF_ECORRUPT);
    cr_assert_eq(open_header(cut_len, sizeof cut_len, err, sizeof err), MEMPROF_ECORRUPT);
    cr_assert_eq(open_header(unknown_only, sizeof unknown_only, err, sizeof err), 0, "%s", err);
}

Test(reader_open, header_longer_than_the_limit)
{
    uint8_t buf[MEMPROF_HEADER_FIXED + 8] = {0};
    mp_header_seal(buf, 0);
    mp_put_le32(buf + 12, MEMPROF_TLV_MAX + 1);
    cr_assert_eq(open_bytes(buf, sizeof buf), MEMPROF_ECORRUPT);
}

Test(reader_open, strerror_covers_every_code)
{
    static const int codes[] = {MEMPROF_EIO,       MEMPROF_ENOMEM,     MEMPROF_EINVAL,   MEMPROF_ENOENT,
                                MEMPROF_EBADMAGIC, MEMPROF_EVERSION,   MEMPROF_ECORRUPT, MEMPROF_ETRUNCATED,
                                MEMPROF_ENOSPACE,  MEMPROF_ELIMIT,     MEMPROF_EACCES};
    for (size_t i = 0; i < MP_ARRAY_LEN(codes); i++) {
        const char *m = memprof_strerror(codes[i]);
        cr_assert(m && *m && strcmp(m, "unknown error") != 0, "code %d", codes[i]);
        for (size_t j = 0; j < i; j++)
            cr_assert_str_neq(m, memprof_strerror(codes[j]));
    }
    cr_assert_str_eq(memprof_strerror(0), "success");
    cr_assert_str_eq(memprof_strerror(-999), "unknown error");
    cr_assert_str_eq(memprof_strerror(MEMPROF_ECORRUPT), "capture is corrupted");
}

/* ---- bad records inside a good block ------------------------------------- */

typedef struct {
    char name[40];      /* no pointers: parameters are copied into the test process */
    uint8_t bytes[16];  /* raw record */
    size_t n;
    int new_block;      /* write it first in a fresh block (no thread named yet) */
} bad_record_t;

#define RAW(...) {__VA_ARGS__}, sizeof((uint8_t[]){__VA_ARGS__})

static bad_record_t bad_records[] = {
    {"type 0", RAW(0x00), 0},
    {"type 10", RAW(0x0a, 0x00), 0},
    {"type 14", RAW(0x0e, 0x00), 0},
    {"type 15", RAW(0x0f), 0},
    {"alloc kind 0", RAW(0x01, 0x00, 0x08, 0x00), 0},
    {"alloc kind 15", RAW(0xf1, 0x00, 0x08, 0x00), 0},
    {"alloc without a thread", RAW(0x11, 0x02, 0x08, 0x00), 1},
    {"alloc naming stack 2 of 1", RAW(0x11, 0x02, 0x08, 0x02), 0},    /* prev 1, +1 */
    {"alloc naming stack -1", RAW(0x11, 0x02, 0x08, 0x03), 0},        /* prev 1, -2 */
    /* 10-byte stack deltas: zz UINT64_MAX - 1 and UINT64_MAX, from prev 1 */
    {"alloc stack delta INT64_MAX", RAW(0x11, 0x02, 0x08, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1), 0},
    {"alloc stack delta INT64_MIN", RAW(0x11, 0x02, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1), 0},
    {"alloc varint overflow", RAW(0x11, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x08, 0x00), 0},
    {"free kind 0", RAW(0x02, 0x00), 0},
    {"free kind 8", RAW(0x82, 0x00), 0},
    {"realloc free without a thread", RAW(0x22, 0x00), 1},
    {"restore without a thread", RAW(0x09, 0x00), 1},
    {"restore with an arg", RAW(0x19, 0x00), 0},
    {"thread switch to 0", RAW(0x03, 0x00), 0},
    {"thread switch to 2 of 1", RAW(0x03, 0x02), 0},
    {"thread kind 2", RAW(0x23, 0x01), 0},
    {"string past the block", RAW(0x04, 0x7f, 'a'), 0},
    {"string with an arg", RAW(0x14, 0x00), 0},
    {"code naming string 0", RAW(0x05, 0x00, 0x01, 0x01, 0x00), 0},
    {"code naming an unknown string", RAW(0x05, 0x01, 0x09, 0x01, 0x00), 0},
    {"code line past INT32_MAX", RAW(0x05, 0x01, 0x01, 0x80, 0x80, 0x80, 0x80, 0x08, 0x00), 0},
    {"code flags 4", RAW(0x45, 0x01, 0x01, 0x01, 0x00), 0},
    {"code line table past the block", RAW(0x05, 0x01, 0x01, 0x01, 0x7f, 0x80), 0},
    {"node with parent in the future", RAW(0x06, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x00), 0},
    {"node that is its own parent", RAW(0x06, 0x00, 0x01, 0x00), 0},
    {"node naming code 0", RAW(0x06, 0x01, 0x00, 0x00), 0},
    {"node naming an unknown code", RAW(0x06, 0x01, 0x02, 0x00), 0},
    {"node with an arg", RAW(0x16, 0x01, 0x01, 0x00), 0},
    {"node instruction past UINT32_MAX", RAW(0x06, 0x01, 0x01, 0x80, 0x80, 0x80, 0x80, 0x10), 0},
    {"time going backwards", RAW(0x07, 0x63, 0x00), 0},
    {"time with an arg", RAW(0x17, 0x70, 0x00), 0},
    {"mark kind 0", RAW(0x08, 0x70), 0},
    {"mark kind 2", RAW(0x28, 0x70), 0},
    {"record cut at the end of the block", RAW(0x11, 0x00, 0x80), 0},
};

ParameterizedTestParameters(reader_corrupt, record)
{
    return cr_make_param_array(bad_record_t, bad_records, MP_ARRAY_LEN(bad_records));
}

/* A capture whose block holds: string, string, code, node, thread, alloc
 * (stack 1), time 100 us; then `bad`; then a good alloc never reached. */
static void build_with_bad(tk_capture_t *c, const bad_record_t *bad)
{
    tk_begin(c, 4096);
    uint32_t fn = tk_string(c, "f.py"), qn = tk_string(c, "f");
    uint32_t code = tk_code(c, 0, fn, qn, 1, NULL, 0);
    uint32_t node = tk_node(c, 0, code, 0);
    uint32_t t = tk_thread_new(c, 77);
    tk_alloc(c, t, MEMPROF_A_MALLOC, 0x1000, 8, node);
    tk_time(c, 100, 1);
    if (bad->new_block)
        tk_flush(c);
    tk_raw(c, bad->bytes, bad->n);
    if (strstr(bad->name, "cut at the end"))
        tk_flush(c);
    tk_alloc(c, t, MEMPROF_A_MALLOC, 0x2000, 8, node);
    tk_finish(c);
}

static void expect_corrupt_after(const tk_capture_t *c, size_t good, const char *what)
{
    memprof_reader_t *r = tk_open(c->data, c->len);
    memprof_event_t ev[8];
    int rc;
    size_t n = tk_read_all(r, ev, 8, c->nev, &rc);
    cr_assert_eq(rc, MEMPROF_ECORRUPT, "%s: %d (%s)", what, rc, memprof_reader_error(r));
    cr_assert_eq(n, good, "%s: %zu events before the error", what, n);
    for (size_t i = 0; i < n && i < 8; i++)
        tk_assert_event(&ev[i], &c->ev[i], i);
    cr_assert(strstr(memprof_reader_error(r), "corrupted"), "%s: %s", what, memprof_reader_error(r));
    cr_assert_eq(memprof_reader_next(r, ev), MEMPROF_ECORRUPT, "%s: the error is sticky", what);
    memprof_reader_close(r);
}

ParameterizedTest(bad_record_t *bad, reader_corrupt, record)
{
    tk_capture_t c;
    build_with_bad(&c, bad);
    expect_corrupt_after(&c, 2, bad->name);
    tk_close(&c);
}

Test(reader_corrupt, control_without_a_bad_record)
{
    /* the same capture with a harmless record in its place reads whole */
    bad_record_t ok = {"ok", RAW(0x03, 0x01), 0};
    tk_capture_t c;
    build_with_bad(&c, &ok);
    memprof_reader_t *r = tk_open(c.data, c.len);
    memprof_event_t ev[4];
    int rc;
    cr_assert_eq(tk_read_all(r, ev, 4, 3, &rc), 3);
    cr_assert_eq(rc, 0, "%s", memprof_reader_error(r));
    cr_assert_eq(memprof_reader_info(r)->has_trailer, 1);
    memprof_reader_close(r);
    tk_close(&c);
}

/* ---- bad blocks and trailers with right checksums ------------------------ */

static void base_capture(tk_capture_t *c)
{
    tk_begin(c, 200);
    uint32_t t = tk_thread_new(c, 9);
    for (uint64_t i = 1; i <= 40; i++)
        tk_alloc(c, t, MEMPROF_A_MALLOC, i << 12, i, 0);
    tk_flush(c);
}

static void append_block(tk_capture_t *c, uint32_t word, const void *data, size_t n)
{
    uint8_t w[4];
    mp_put_le32(w, word);
    tk_append(c, w, 4);
    tk_append(c, data, n);
    mp_put_le32(w, mp_xxh32(data, n, 0));
    tk_append(c, w, 4);
}

Test(reader_corrupt, block_larger_than_64k)
{
    tk_capture_t c;
    base_capture(&c);
    uint8_t w[4];
    mp_put_le32(w, MEMPROF_BLOCK_MAX + 1);
    tk_append(&c, w, 4);
    expect_corrupt_after(&c, 40, "block size");
    tk_close(&c);
}

Test(reader_corrupt, block_that_does_not_decompress)
{
    tk_capture_t c;
    base_capture(&c);
    static const uint8_t junk[] = {0xf0, 0xff, 0xff, 0xff, 0x01};
    append_block(&c, sizeof junk, junk, sizeof junk);
    tk_finish(&c);
    expect_corrupt_after(&c, 40, "junk block");
    tk_close(&c);
}

Test(reader_corrupt, block_that_decompresses_past_64k)
{
    tk_capture_t c;
    base_capture(&c);
    size_t big = MEMPROF_BLOCK_MAX + 1000;
    char *src = calloc(1, big), *dst = malloc((size_t)LZ4_compressBound((int)big));
    int n = LZ4_compress_default(src, dst, (int)big, LZ4_compressBound((int)big));
    cr_assert_gt(n, 0);
    append_block(&c, (uint32_t)n, dst, (size_t)n);
    tk_finish(&c);
    expect_corrupt_after(&c, 40, "oversized block");
    free(src);
    free(dst);
    tk_close(&c);
}

Test(reader_corrupt, empty_stored_block_is_fine)
{
    tk_capture_t c;
    base_capture(&c);
    append_block(&c, MEMPROF_LZ4F_UNCOMPRESSED, "", 0);
    tk_finish(&c);
    memprof_reader_t *r = tk_open(c.data, c.len);
    memprof_event_t ev[41];
    int rc;
    cr_assert_eq(tk_read_all(r, ev, 41, 40, &rc), 40);
    cr_assert_eq(rc, 0, "%s", memprof_reader_error(r));
    cr_assert_eq(memprof_reader_info(r)->has_trailer, 1);
    memprof_reader_close(r);
    tk_close(&c);
}

Test(reader_corrupt, trailer_counts_other_events)
{
    tk_capture_t c;
    base_capture(&c);
    tk_finish_counting(&c, 41);
    expect_corrupt_after(&c, 40, "trailer count");
    tk_close(&c);
}

Test(reader_corrupt, bytes_after_the_trailer)
{
    tk_capture_t c;
    base_capture(&c);
    tk_finish(&c);
    tk_append(&c, "x", 1);
    expect_corrupt_after(&c, 40, "trailing byte");
    tk_close(&c);
}
