/* testkit.h - builds memprof captures in memory for the unit tests.
 *
 * A capture is written the way preload/recorder.c writes one (header, LZ4
 * frame of linked blocks compressed from two record buffers used in turn,
 * end mark, trailer), with small record buffers so that a few hundred
 * records make many blocks. Alongside the bytes the kit keeps what a
 * correct reader must return: every event with all its fields, the file
 * offset at which each block ends, and every block's records as written
 * (what the frame decompresses to). Test code only: failures are Criterion
 * assertions.
 */
#ifndef MP_TESTKIT_H
#define MP_TESTKIT_H

#include <stddef.h>
#include <stdint.h>

#include <lz4.h>

#include "encode.h"
#include "memprof/format.h"
#include "memprof/reader.h"

/* What the header says (tk_begin) and the trailer's clock fields. */
#define TK_PID 4242u
#define TK_PPID 17u
#define TK_START_REALTIME 1700000000123456789ull
#define TK_START_MONOTONIC 987654321ull
#define TK_PYVERSION "3.11.2 (main, Apr 28 2025, 14:11:48) [GCC 12.2.0]"
#define TK_HEXVERSION 0x030b02f0u
#define TK_EXECUTABLE "/usr/bin/python3.11"
#define TK_PAGE_SIZE 4096u
#define TK_END_REALTIME 1700000009123456789ull
#define TK_END_MONOTONIC 996654321ull
#define TK_TRACKER_ALLOCS 0u
#define TK_OPTIONS (MEMPROF_OPT_PYTHON_STACKS | MEMPROF_OPT_NATIVE | MEMPROF_OPT_PYMEM | MEMPROF_OPT_FOLLOW_FORK)
#define TK_INTERVAL_US 10000u   /* header tag 13 (1.1): written, skipped by the reader */
#define TK_PARENT_PID 4000u     /* header tag 14 (1.1): likewise */
extern const char tk_argv[]; /* "python3\0-c\0pass\0" */
#define TK_ARGV_LEN 16u

typedef struct {
    size_t end;         /* file offset just past the block */
    uint64_t events;    /* events a reader returns up to the end of this block */
    int stored;         /* written uncompressed */
    size_t raw_off, raw_len; /* its records, in tk_capture_t.raw */
} tk_block_t;

/* A record's tag byte: type in the low 4 bits, arg in the high 4. */
#define TK_TAG(type, arg) ((uint8_t)((type) | (unsigned)(arg) << 4))

typedef struct {
    uint8_t *data;
    size_t len, cap;
    size_t header_len;  /* memprof header with its checksum; the LZ4 frame follows */
    size_t end_mark;    /* offset of the frame's end mark (after tk_finish) */
    size_t trailer;     /* offset of the trailer (after tk_finish) */
    mp_enc_t enc;
    /* recorder.c's block_a, out_buf, block_b: two record buffers used in
     * turn, kept apart (never adjacent) so that each block links only to
     * the one before it */
    uint8_t *arena, *rec_a, *rec_b;
    size_t block_cap;
    LZ4_stream_t *lz4;
    uint8_t *raw;       /* every block's records, in file order */
    size_t raw_len, raw_cap;
    uint64_t index, time_us, allocs, frees;
    uint32_t nthreads, nstrings, ncodes, nnodes, nmodules;
    uint32_t *firstlineno; /* per code id (1-based: [id - 1]) */
    uint64_t tags[256];  /* event records written, by tag byte */
    size_t last_tag;     /* offset in enc.buf of the last event record's tag */
    memprof_event_t *ev; /* every event, as a reader must return it */
    size_t nev, evcap;
    tk_block_t *blocks;
    size_t nblocks, blockcap;
} tk_capture_t;

/* Header (with an unknown tag a reader must skip) and LZ4 frame header;
 * records then go into blocks of at most block_cap bytes. */
void tk_begin(tk_capture_t *c, size_t block_cap);
void tk_close(tk_capture_t *c);

/* Records. Table records return the id a reader gives the new entry. */
uint32_t tk_thread_new(tk_capture_t *c, uint64_t tid);
uint32_t tk_string(tk_capture_t *c, const char *s);
uint32_t tk_string_n(tk_capture_t *c, const void *s, size_t n);
uint32_t tk_code(tk_capture_t *c, unsigned flags, uint32_t filename, uint32_t qualname, uint32_t firstlineno);
/* line: -1 for none; written relative to the code's firstlineno (0 for a
 * code id the kit did not define) */
uint32_t tk_node(tk_capture_t *c, uint32_t parent, uint32_t code, int32_t line);
/* A native frame: module id (0: none) and offset from its load bias. */
uint32_t tk_node_native(tk_capture_t *c, uint32_t parent, uint32_t module, uint64_t offset);
/* segs: nseg (vaddr, memsz) pairs. */
uint32_t tk_module(tk_capture_t *c, uint64_t bias, uint32_t path, const uint8_t *build_id, size_t build_len,
                   const uint64_t *segs, unsigned nseg);
void tk_module_unload(tk_capture_t *c, uint32_t id);
void tk_thread_name(tk_capture_t *c, uint32_t thread, uint32_t name);
/* Events return the tag byte of the record the encoder chose (ALLOC,
 * ALLOC_SAME, REUSE_SAME, REUSE; FREE, FREE_RECENT; RESTORE). */
uint8_t tk_alloc(tk_capture_t *c, uint32_t thread, unsigned kind, uint64_t addr, uint64_t size, uint32_t stack);
uint8_t tk_free(tk_capture_t *c, uint32_t thread, unsigned kind, uint64_t addr); /* not munmap, mremap */
/* munmap (names no thread) and mremap's old range (names its thread): a
 * FREE with the range's length, which the reader returns as the size. */
uint8_t tk_free_range(tk_capture_t *c, uint32_t thread, unsigned kind, uint64_t addr, uint64_t len);
uint8_t tk_restore(tk_capture_t *c, uint32_t thread, uint64_t addr);
void tk_time(tk_capture_t *c, uint64_t us, uint64_t rss_kib);
void tk_mark(tk_capture_t *c, unsigned kind, uint64_t us);
/* The first varint field after the last event record's tag (its address
 * field, for ALLOC, ALLOC_SAME, FREE, RESTORE; its size for REUSE*). */
uint64_t tk_last_field(const tk_capture_t *c);
/* Raw bytes into the block in progress (for hand-made bad records). */
void tk_raw(tk_capture_t *c, const void *bytes, size_t n);
/* Raw bytes straight into the file (for hand-made bad blocks). */
void tk_append(tk_capture_t *c, const void *bytes, size_t n);
/* Ends the block in progress (if any). */
void tk_flush(tk_capture_t *c);
/* Last block, end mark and trailer; the trailer counts `events` events. */
void tk_finish_counting(tk_capture_t *c, uint64_t events);
void tk_finish(tk_capture_t *c);

/* Events a reader returns from the first `len` bytes of the capture. */
uint64_t tk_events_before(const tk_capture_t *c, size_t len);

/* Opens c->data[0..len) and asserts success. */
memprof_reader_t *tk_open(const void *data, size_t len);
/* Reads events into out[0..max) until the end or an error; returns the
 * count, *rc the last memprof_reader_next() result. Never reads more than
 * `limit` events (a bound that catches a reader that does not stop). */
size_t tk_read_all(memprof_reader_t *r, memprof_event_t *out, size_t max, size_t limit, int *rc);
/* Asserts that two events are equal field by field (`i` names the event). */
void tk_assert_event(const memprof_event_t *got, const memprof_event_t *want, size_t i);

#endif
