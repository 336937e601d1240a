/* test_reader.c - the reader's refusals: missing files, directories, bad
 * magic, bad headers, and records or blocks that are wrong inside a block
 * whose checksum is right (what a buggy writer, not a damaged disk, makes).
 * Each bad record gives MEMPROF_ECORRUPT with a "corrupted" message naming
 * the fault after exactly the events before it, and the error is sticky.
 * Hand-made good records (the compact forms, both address forms) next to
 * them read as the format says. */
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

/* A capture of many megabytes read from its file, across several points
 * where the reader gives back the pages it has read: every event still
 * comes out right (random addresses and sizes: the blocks do not
 * compress). That the memory is given back is measured, not tested here. */
Test(reader_open, big_file_reads_like_memory, .timeout = 120)
{
    tk_capture_t c;
    tk_begin(&c, MEMPROF_BLOCK_MAX);
    uint32_t t = tk_thread_new(&c, 5);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    const size_t n = 1500000;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        tk_alloc(&c, t, MEMPROF_A_MALLOC, (x & 0xffffffffff0ull) | 0x10, (x >> 40) & 0xfffff, 0);
    }
    tk_finish(&c);
    cr_assert_gt(c.len, (size_t)12 << 20, "only %zu bytes", c.len);
    char *path = temp_file(c.data, c.len);
    memprof_reader_t *r = NULL;
    int rc = memprof_reader_open(path, &r);
    unlink(path);
    cr_assert_eq(rc, 0, "%s", memprof_reader_error(r));
    memprof_event_t ev;
    size_t i = 0;
    while ((rc = memprof_reader_next(r, &ev)) > 0) {
        cr_assert_lt(i, n);
        tk_assert_event(&ev, &c.ev[i], i);
        i++;
    }
    cr_assert_eq(rc, 0, "%s", memprof_reader_error(r));
    cr_assert_eq(i, n);
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
    char name[48];      /* no pointers: parameters are copied into the test process */
    uint8_t bytes[16];  /* raw record (after `extra` good events, if any) */
    size_t n;
    int new_block;      /* write it first in a fresh block (no thread named yet, empty rings) */
    int extra;          /* events the raw bytes deliver before the bad record */
    char why[32];       /* what the reader's message must name */
} bad_record_t;

#define RAW(...) {__VA_ARGS__}, sizeof((uint8_t[]){__VA_ARGS__})

/* Before the bad record the block holds (build_with_bad): one allocation
 * at 0x1000 with stack 1 on thread 1 (allocated ring: 0x1000 at k = 0;
 * freed ring empty; previous address 0x1000, previous stack 1); one code
 * with first line 1 and one node. */
static bad_record_t bad_records[] = {
    {"type 0", RAW(0x00), 0, 0, "unknown record type"},
    {"aggregate in a capture of events", RAW(0x0f, 0x01, 0x00), 0, 0, "aggregate record in a capture"},
    {"alloc kind 0", RAW(0x01, 0x00, 0x08, 0x00), 0, 0, "bad allocation"},
    {"alloc without a thread", RAW(0x11, 0x02, 0x08, 0x00), 1, 0, "before any thread"},
    {"alloc naming stack 2 of 1", RAW(0x11, 0x02, 0x08, 0x02), 0, 0, "unknown stack"},    /* prev 1, +1 */
    {"alloc naming stack -1", RAW(0x11, 0x02, 0x08, 0x03), 0, 0, "unknown stack"},        /* prev 1, -2 */
    /* 10-byte stack deltas: zz UINT64_MAX - 1 and UINT64_MAX, from prev 1 */
    {"alloc stack delta INT64_MAX", RAW(0x11, 0x02, 0x08, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1),
     0, 0, "unknown stack"},
    {"alloc stack delta INT64_MIN", RAW(0x11, 0x02, 0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1),
     0, 0, "unknown stack"},
    {"alloc varint overflow", RAW(0x11, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x08, 0x00), 0, 0,
     "cut record"},
    {"alloc_same kind 0", RAW(0x0a, 0x02, 0x08), 0, 0, "bad allocation"},
    {"alloc_same without a thread", RAW(0x1a, 0x02, 0x08), 1, 0, "before any thread"},
    {"free kind 0", RAW(0x02, 0x00), 0, 0, "bad free"},
    {"free kind 8", RAW(0x82, 0x00), 0, 0, "bad free"},
    {"realloc free without a thread", RAW(0x22, 0x00), 1, 0, "no thread"},
    {"restore without a thread", RAW(0x09, 0x00), 1, 0, "no thread"},
    {"restore with an arg", RAW(0x19, 0x00), 0, 0, "bad free"},
    /* the rings: slot k = 1 was never filled; a new block starts empty */
    {"free_recent of an empty slot", RAW(0x1b), 0, 0, "empty ring slot"},
    {"free_recent of the last slot", RAW(0xfb), 0, 0, "empty ring slot"},
    {"free_recent in a new block", RAW(0x0b), 1, 0, "empty ring slot"},
    {"reuse_same of an empty ring", RAW(0x0c, 0x08), 0, 0, "empty ring slot"},
    {"reuse of an empty ring", RAW(0x0d, 0x08, 0x00), 0, 0, "empty ring slot"},
    /* a plain free at 0x0ff0 (aligned form, delta -1 * 16) fills freed slot 0, not 1 */
    {"reuse of an empty slot", RAW(0x12, 0x02, 0x1d, 0x08, 0x00), 0, 1, "empty ring slot"},
    {"reuse_same of the last slot", RAW(0x12, 0x02, 0xfc, 0x08), 0, 1, "empty ring slot"},
    /* plain frees need no thread: the ring is filled, the reuse has none */
    {"reuse before any thread", RAW(0x12, 0x02, 0x0d, 0x08, 0x00), 1, 1, "before any thread"},
    {"reuse_same before any thread", RAW(0x12, 0x02, 0x0c, 0x08), 1, 1, "before any thread"},
    {"reuse naming stack 2 of 1", RAW(0x12, 0x02, 0x0d, 0x08, 0x02), 0, 1, "unknown stack"},
    {"thread switch to 0", RAW(0x03, 0x00), 0, 0, "bad thread"},
    {"thread switch to 2 of 1", RAW(0x03, 0x02), 0, 0, "bad thread"},
    {"thread kind 3", RAW(0x33, 0x01), 0, 0, "bad thread"},
    {"thread kind 15", RAW(0xf3, 0x01), 0, 0, "bad thread"},
    /* 1.1: THREAD NAME names a thread defined before, and a string */
    {"thread name of thread 0", RAW(0x23, 0x00, 0x01), 0, 0, "bad thread"},
    {"thread name of thread 2 of 1", RAW(0x23, 0x02, 0x01), 0, 0, "bad thread"},
    {"thread name naming string 0", RAW(0x23, 0x01, 0x00), 0, 0, "unknown string"},
    {"thread name naming string 3 of 2", RAW(0x23, 0x01, 0x03), 0, 0, "unknown string"},
    {"thread name cut at the end of the block", RAW(0x23, 0x01), 0, 0, "cut record"},
    {"string past the block", RAW(0x04, 0x7f, 'a'), 0, 0, "bad string"},
    {"string with an arg", RAW(0x14, 0x00), 0, 0, "bad string"},
    {"code naming string 0", RAW(0x05, 0x00, 0x01, 0x01), 0, 0, "unknown string"},
    {"code naming an unknown string", RAW(0x05, 0x01, 0x09, 0x01), 0, 0, "unknown string"},
    {"code line past INT32_MAX", RAW(0x05, 0x01, 0x01, 0x80, 0x80, 0x80, 0x80, 0x08), 0, 0, "code record"},
    {"code with the old LT_CUT flag", RAW(0x25, 0x01, 0x01, 0x01), 0, 0, "bad code"},
    {"code flags 3", RAW(0x35, 0x01, 0x01, 0x01), 0, 0, "bad code"},
    {"code flags 4", RAW(0x45, 0x01, 0x01, 0x01), 0, 0, "bad code"},
    {"code cut at the end of the block", RAW(0x05, 0x01, 0x01), 0, 0, "cut record"},
    {"node with parent in the future", RAW(0x06, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x00), 0, 0, "bad stack node"},
    {"node that is its own parent", RAW(0x06, 0x00, 0x01, 0x00), 0, 0, "bad stack node"},
    {"node naming code 0", RAW(0x06, 0x01, 0x00, 0x00), 0, 0, "bad stack node"},
    {"node naming an unknown code", RAW(0x06, 0x01, 0x02, 0x00), 0, 0, "bad stack node"},
    {"node kind 2", RAW(0x26, 0x01, 0x01, 0x00), 0, 0, "bad node"},
    {"node kind 15", RAW(0xf6, 0x01, 0x01, 0x00), 0, 0, "bad node"},
    /* 1.1: native nodes (no module defined here) */
    {"native node naming module 1 of 0", RAW(0x16, 0x01, 0x01, 0x00), 0, 0, "unknown module"},
    {"native node naming module 2^32", RAW(0x16, 0x01, 0x80, 0x80, 0x80, 0x80, 0x10, 0x00), 0, 0, "unknown module"},
    {"native node that is its own parent", RAW(0x16, 0x00, 0x00, 0x00), 0, 0, "bad stack node"},
    {"native node with parent in the future", RAW(0x16, 0x03, 0x00, 0x00), 0, 0, "bad stack node"},
    {"native node cut at the end of the block", RAW(0x16, 0x01, 0x00), 0, 0, "cut record"},
    /* code 1 starts at line 1: line field zz(d) + 1 gives line 1 + d */
    {"node line -2", RAW(0x06, 0x01, 0x01, 0x06), 0, 0, "node line"},                 /* d = -3 */
    {"node line past INT32_MAX", RAW(0x06, 0x01, 0x01, 0xff, 0xff, 0xff, 0xff, 0x0f), 0, 0, "node line"},
    {"node line delta INT64_MAX", RAW(0x06, 0x01, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1), 0,
     0, "node line"},
    {"node line delta INT64_MIN + 1", RAW(0x06, 0x01, 0x01, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1),
     0, 0, "node line"},
    {"node line varint overflow", RAW(0x06, 0x01, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2), 0,
     0, "cut record"},
    {"time going backwards", RAW(0x07, 0x63, 0x00), 0, 0, "bad time"},
    {"time with an arg", RAW(0x17, 0x70, 0x00), 0, 0, "bad time"},
    {"mark kind 0", RAW(0x08, 0x70), 0, 0, "bad mark"},
    {"mark kind 2", RAW(0x28, 0x70), 0, 0, "bad mark"},
    {"record cut at the end of the block", RAW(0x11, 0x00, 0x80), 0, 0, "cut record"},
    /* 1.1: munmap and mremap frees carry a length; mremap's names a thread */
    {"munmap length cut at the end of the block", RAW(0x32, 0x00), 0, 0, "cut record"},
    {"mremap length cut at the end of the block", RAW(0x42, 0x00), 0, 0, "cut record"},
    {"mremap free without a thread", RAW(0x42, 0x00, 0x10), 1, 0, "no thread"},
    {"munmap length varint overflow", RAW(0x32, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02), 0,
     0, "cut record"},
    /* 1.1: MODULE (strings 1 and 2 exist, no module yet) */
    {"module id 0", RAW(0x0e, 0x00, 0x00, 0x01, 0x00, 0x00), 0, 0, "bad module"},
    {"module id 2 of none", RAW(0x0e, 0x02, 0x00, 0x01, 0x00, 0x00), 0, 0, "bad module"},
    {"module naming string 0", RAW(0x0e, 0x01, 0x00, 0x00, 0x00, 0x00), 0, 0, "bad module"},
    {"module naming string 3 of 2", RAW(0x0e, 0x01, 0x00, 0x03, 0x00, 0x00), 0, 0, "bad module"},
    {"module build id of 256 bytes", RAW(0x0e, 0x01, 0x00, 0x01, 0x80, 0x02), 0, 0, "bad module"},
    {"module build id cut at the end of the block", RAW(0x0e, 0x01, 0x00, 0x01, 0x05, 0xab), 0, 0, "bad module"},
    {"module with 65 segments", RAW(0x0e, 0x01, 0x00, 0x01, 0x00, 0x41), 0, 0, "bad module"},
    {"module with 2^64 - 1 segments",
     RAW(0x0e, 0x01, 0x00, 0x01, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), 0, 0, "bad module"},
    {"module segments cut at the end of the block", RAW(0x0e, 0x01, 0x00, 0x01, 0x00, 0x01, 0x80), 0, 0,
     "cut record"},
    {"module kind 2", RAW(0x2e, 0x01, 0x00, 0x01, 0x00, 0x00), 0, 0, "bad module"},
    {"module kind 15", RAW(0xfe, 0x01), 0, 0, "bad module"},
    {"unload of module 0", RAW(0x1e, 0x00), 0, 0, "unknown module"},
    {"unload of module 1 of none", RAW(0x1e, 0x01), 0, 0, "unknown module"},
};

ParameterizedTestParameters(reader_corrupt, record)
{
    return cr_make_param_array(bad_record_t, bad_records, MP_ARRAY_LEN(bad_records));
}

/* A capture whose block holds: string, string, code (first line 1), node
 * (line 1), thread, alloc (stack 1), time 100 us; then `raw`; then (after
 * a flush, if asked) a good alloc, never reached after a bad record. The
 * trailer counts `extra` events more than the kit made. */
static void build_around(tk_capture_t *c, const uint8_t *raw, size_t n, int new_block, int flush_after,
                         uint64_t extra)
{
    tk_begin(c, 4096);
    uint32_t fn = tk_string(c, "f.py"), qn = tk_string(c, "f");
    uint32_t code = tk_code(c, 0, fn, qn, 1);
    uint32_t node = tk_node(c, 0, code, 1);
    uint32_t t = tk_thread_new(c, 77);
    tk_alloc(c, t, MEMPROF_A_MALLOC, 0x1000, 8, node);
    tk_time(c, 100, 1);
    if (new_block)
        tk_flush(c);
    tk_raw(c, raw, n);
    if (flush_after)
        tk_flush(c);
    tk_alloc(c, t, MEMPROF_A_MALLOC, 0x2000, 8, node);
    tk_finish_counting(c, c->allocs + c->frees + extra);
}

static void build_with_bad(tk_capture_t *c, const bad_record_t *bad)
{
    build_around(c, bad->bytes, bad->n, bad->new_block, strstr(bad->name, "cut at the end") != NULL, 0);
}

/* `good` events as the kit recorded them, then `extra` from raw bytes. */
static void expect_corrupt_after(const tk_capture_t *c, size_t good, size_t extra, const char *what,
                                 const char *why)
{
    memprof_reader_t *r = tk_open(c->data, c->len);
    memprof_event_t ev[8];
    int rc;
    size_t n = tk_read_all(r, ev, 8, c->nev + extra, &rc);
    cr_assert_eq(rc, MEMPROF_ECORRUPT, "%s: %d (%s)", what, rc, memprof_reader_error(r));
    cr_assert_eq(n, good + extra, "%s: %zu events before the error", what, n);
    for (size_t i = 0; i < good && i < 8; i++)
        tk_assert_event(&ev[i], &c->ev[i], i);
    cr_assert(strstr(memprof_reader_error(r), "corrupted"), "%s: %s", what, memprof_reader_error(r));
    cr_assert(strstr(memprof_reader_error(r), why), "%s: %s (want \"%s\")", what, memprof_reader_error(r), why);
    cr_assert_eq(memprof_reader_next(r, ev), MEMPROF_ECORRUPT, "%s: the error is sticky", what);
    memprof_reader_close(r);
}

ParameterizedTest(bad_record_t *bad, reader_corrupt, record)
{
    tk_capture_t c;
    build_with_bad(&c, bad);
    expect_corrupt_after(&c, 2, (size_t)bad->extra, bad->name, bad->why);
    tk_close(&c);
}

Test(reader_corrupt, every_bad_record_is_listed)
{
    cr_assert_eq(MP_ARRAY_LEN(bad_records), 82);
}

Test(reader_corrupt, control_without_a_bad_record)
{
    /* the same capture with a harmless record in its place reads whole */
    bad_record_t ok = {"ok", RAW(0x03, 0x01), 0, 0, ""};
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

/* ---- hand-made records that are right ------------------------------------ */

/* Next to the bad ones: the compact forms and address fields spelled out
 * byte by byte, read as the format says (not only as the encoder writes
 * them). Same surroundings as above: the first raw event takes index 1. */
typedef struct {
    char name[48];
    uint8_t bytes[16];
    size_t n;
    int new_block;
    memprof_event_t ev[3];
    size_t nev;
    uint64_t counted; /* of them, allocations and frees */
} good_record_t;

#define EV_FREE(addr, index) {MEMPROF_EV_FREE, MEMPROF_D_FREE, 0, 0, addr, 0, index, 100, 0}
#define EV_MALLOC(addr, size, stack, index) {MEMPROF_EV_ALLOC, MEMPROF_A_MALLOC, 1, stack, addr, size, index, 100, 0}
#define EV_RANGE(kind, thread, addr, len, index) {MEMPROF_EV_FREE, kind, thread, 0, addr, len, index, 100, 0}
#define EV_ALLOC(kind, addr, size, index) {MEMPROF_EV_ALLOC, kind, 1, 1, addr, size, index, 100, 0}

static good_record_t good_records[] = {
    {"free_recent k=0", RAW(0x0b), 0, {EV_FREE(0x1000, 1)}, 1, 1},
    {"free_recent then reuse_same", RAW(0x0b, 0x0c, 0x10), 0, {EV_FREE(0x1000, 1), EV_MALLOC(0x1000, 16, 1, 2)}, 2,
     2},
    {"odd free then reuse with a stack delta", RAW(0x12, 0x03, 0x0d, 0x10, 0x01), 0,
     {EV_FREE(0x0fff, 1), EV_MALLOC(0x0fff, 16, 0, 2)}, 2, 2},
    {"alloc_same: odd, then aligned from odd", RAW(0xda, 0x05, 0x05, 0xda, 0x3d, 0x06), 0,
     {{MEMPROF_EV_ALLOC, MEMPROF_A_PYMEM_MEM, 1, 1, 0x1001, 5, 1, 100, 0},
      {MEMPROF_EV_ALLOC, MEMPROF_A_PYMEM_MEM, 1, 1, 0x1010, 6, 2, 100, 0}},
     2, 2},
    {"free_recent moves the previous address", RAW(0x12, 0x20, 0x0b, 0x12, 0x04), 0,
     {EV_FREE(0x1080, 1), EV_FREE(0x1000, 2), EV_FREE(0x1010, 3)}, 3, 3},
    {"alloc_same first in a block: stack 0", RAW(0x03, 0x01, 0x1a, 0x80, 0x04, 0x01), 1,
     {EV_MALLOC(0x800, 1, 0, 1)}, 1, 1},
    {"restore pushes on no freed ring", RAW(0x0b, 0x09, 0x04, 0x0c, 0x08), 0,
     {EV_FREE(0x1000, 1), {MEMPROF_EV_RESTORE, 0, 1, 0, 0x1010, 0, 2, 100, 0}, EV_MALLOC(0x1000, 8, 1, 2)}, 3, 2},
    {"restore pushes on no allocated ring", RAW(0x09, 0x04, 0x0b), 0,
     {{MEMPROF_EV_RESTORE, 0, 1, 0, 0x1010, 0, 1, 100, 0}, EV_FREE(0x1000, 1)}, 2, 1},
    /* 1.1 */
    {"allocator 15: a file mapping", RAW(0xf1, 0x00, 0x08, 0x00, 0xfa, 0x02, 0x08), 0,
     {{MEMPROF_EV_ALLOC, MEMPROF_A_MMAP_FILE, 1, 1, 0x1000, 8, 1, 100, 0},
      {MEMPROF_EV_ALLOC, MEMPROF_A_MMAP_FILE, 1, 1, 0x0ff0, 8, 2, 100, 0}},
     2, 2},
    {"munmap: its length is the size", RAW(0x32, 0x40, 0x80, 0x20), 0, {EV_RANGE(3, 0, 0x1100, 0x1000, 1)}, 1, 1},
    {"mremap's free names its thread", RAW(0x42, 0x00, 0x10), 0, {EV_RANGE(4, 1, 0x1000, 16, 1)}, 1, 1},
    {"munmap of lengths 0 and 2^64 - 1",
     RAW(0x32, 0x00, 0x00, 0x32, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), 0,
     {EV_RANGE(3, 0, 0x1000, 0, 1), EV_RANGE(3, 0, 0x1000, UINT64_MAX, 2)}, 2, 2},
    {"a range free feeds the freed ring", RAW(0x32, 0x40, 0x01, 0x0c, 0x08), 0,
     {EV_RANGE(3, 0, 0x1100, 1, 1), EV_MALLOC(0x1100, 8, 1, 2)}, 2, 2},
    /* a reuse is by the allocator of the allocation record before it */
    {"reuse after a calloc is a calloc", RAW(0x2a, 0x04, 0x08, 0x0b, 0x0c, 0x08), 0,
     {EV_ALLOC(MEMPROF_A_CALLOC, 0x1010, 8, 1), EV_FREE(0x1010, 2), EV_ALLOC(MEMPROF_A_CALLOC, 0x1010, 8, 3)}, 3, 3},
    /* never written (mappings carry their address), but a valid form */
    {"reuse after an mmap is an mmap", RAW(0xaa, 0x04, 0x08, 0x0b, 0x0c, 0x08), 0,
     {EV_ALLOC(MEMPROF_A_MMAP, 0x1010, 8, 1), EV_FREE(0x1010, 2), EV_ALLOC(MEMPROF_A_MMAP, 0x1010, 8, 3)}, 3, 3},
    {"module, native node, an alloc on it", RAW(0x0e, 0x01, 0x00, 0x01, 0x00, 0x00, 0x16, 0x01, 0x01, 0x05, 0x11,
                                                0x00, 0x08, 0x02),
     0, {EV_MALLOC(0x1000, 8, 2, 1)}, 1, 1},
    {"thread name and module unload: no event", RAW(0x0e, 0x01, 0x00, 0x02, 0x00, 0x00, 0x23, 0x01, 0x02, 0x1e, 0x01,
                                                     0x1e, 0x01, 0x0b),
     0, {EV_FREE(0x1000, 1)}, 1, 1},
};

ParameterizedTestParameters(reader_records, good)
{
    return cr_make_param_array(good_record_t, good_records, MP_ARRAY_LEN(good_records));
}

ParameterizedTest(good_record_t *good, reader_records, good)
{
    tk_capture_t c;
    build_around(&c, good->bytes, good->n, good->new_block, 1, good->counted);
    memprof_reader_t *r = tk_open(c.data, c.len);
    memprof_event_t ev[8];
    int rc;
    size_t n = tk_read_all(r, ev, 8, 8, &rc);
    cr_assert_eq(rc, 0, "%s: %d (%s)", good->name, rc, memprof_reader_error(r));
    cr_assert_eq(memprof_reader_info(r)->has_trailer, 1);
    cr_assert_eq(n, 3 + good->nev, "%s: %zu events", good->name, n);
    tk_assert_event(&ev[0], &c.ev[0], 0);
    tk_assert_event(&ev[1], &c.ev[1], 1);
    for (size_t i = 0; i < good->nev; i++)
        tk_assert_event(&ev[2 + i], &good->ev[i], 2 + i);
    memprof_event_t last = c.ev[2]; /* the kit's last alloc, after the raw events */
    last.index += good->counted;
    tk_assert_event(&ev[2 + good->nev], &last, 2 + good->nev);
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
    expect_corrupt_after(&c, 40, 0, "block size", "block of");
    tk_close(&c);
}

Test(reader_corrupt, block_that_does_not_decompress)
{
    tk_capture_t c;
    base_capture(&c);
    static const uint8_t junk[] = {0xf0, 0xff, 0xff, 0xff, 0x01};
    append_block(&c, sizeof junk, junk, sizeof junk);
    tk_finish(&c);
    expect_corrupt_after(&c, 40, 0, "junk block", "does not decompress");
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
    expect_corrupt_after(&c, 40, 0, "oversized block", "does not decompress");
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
    expect_corrupt_after(&c, 40, 0, "trailer count", "trailer counts");
    tk_close(&c);
}

Test(reader_corrupt, bytes_after_the_trailer)
{
    tk_capture_t c;
    base_capture(&c);
    tk_finish(&c);
    tk_append(&c, "x", 1);
    expect_corrupt_after(&c, 40, 0, "trailing byte", "after the trailer");
    tk_close(&c);
}
