/* test_damage.c - the LZ4 frame of a capture, and captures damaged after
 * they were written. Blocks are linked: each decodes given the block before
 * it and nothing more (a stored block is the next one's dictionary, and
 * full 64 KiB blocks refer back almost their whole length), and liblz4's
 * own frame decoder, fed whole or in dribs, returns exactly the records
 * written. A capture cut at any byte reads exactly the whole blocks before
 * the cut, as truncated; any flipped byte is an error or, for a length
 * field pointing past the end, reads as a file cut there. The captures are
 * the rich one of rich_capture.h and a few made here. */
#include <criterion/criterion.h>
#include <lz4.h>
#include <lz4frame.h>
#include <stdlib.h>
#include <string.h>

#include "mp_common.h"
#include "rich_capture.h"
#include "testkit.h"

/* ---- linked blocks, and liblz4 agrees on the frame ---------------------- */

/* The frame (LZ4 magic through end mark) through liblz4's frame decoder,
 * fed at most src_step bytes and given at most dst_step bytes of room per
 * call (small steps make it keep the history in its own buffer). */
static size_t lz4f_decode(const tk_capture_t *c, size_t src_step, size_t dst_step, uint8_t *out, size_t cap)
{
    LZ4F_dctx *dctx;
    cr_assert(!LZ4F_isError(LZ4F_createDecompressionContext(&dctx, LZ4F_VERSION)));
    size_t out_len = 0;
    const uint8_t *src = c->data + c->header_len;
    size_t left = c->trailer - c->header_len, hint = 1;
    while (left && hint) {
        size_t dst_n = cap - out_len, src_n = left;
        if (dst_n > dst_step)
            dst_n = dst_step;
        if (src_n > src_step)
            src_n = src_step;
        hint = LZ4F_decompress(dctx, out + out_len, &dst_n, src, &src_n, NULL);
        cr_assert(!LZ4F_isError(hint), "liblz4: %s", LZ4F_getErrorName(hint));
        out_len += dst_n;
        src += src_n;
        left -= src_n;
    }
    /* what liblz4 still holds when all the input is in */
    while (hint) {
        size_t dst_n = cap - out_len < dst_step ? cap - out_len : dst_step, src_n = 0;
        hint = LZ4F_decompress(dctx, out + out_len, &dst_n, src, &src_n, NULL);
        cr_assert(!LZ4F_isError(hint), "liblz4: %s", LZ4F_getErrorName(hint));
        if (dst_n == 0)
            break;
        out_len += dst_n;
    }
    cr_assert_eq(hint, 0, "liblz4 saw no end of frame");
    cr_assert_eq(left, 0, "the frame ends where the trailer starts");
    LZ4F_freeDecompressionContext(dctx);
    return out_len;
}

/* liblz4 decodes exactly the records the kit wrote, whole or in dribs. */
static void check_lz4f(const tk_capture_t *c)
{
    static const size_t steps[][2] = {{SIZE_MAX, SIZE_MAX}, {13, 7}, {1, 1}, {4096, 100}};
    uint8_t *out = malloc(c->raw_len + 1);
    for (size_t i = 0; i < MP_ARRAY_LEN(steps); i++) {
        size_t n = lz4f_decode(c, steps[i][0], steps[i][1], out, c->raw_len + 1);
        cr_assert_eq(n, c->raw_len, "steps %zu/%zu: liblz4 decoded %zu bytes, the kit wrote %zu", steps[i][0],
                     steps[i][1], n, c->raw_len);
        cr_assert_eq(memcmp(out, c->raw, n), 0, "steps %zu/%zu: liblz4 decoded other bytes", steps[i][0],
                     steps[i][1]);
    }
    free(out);
}

Test(frame, frame_decodes_with_liblz4)
{
    tk_capture_t c;
    rich_ids_t id = {0};
    rich_build(&c, &id);
    cr_assert_gt(c.raw_len, c.nblocks * 100, "%zu record bytes", c.raw_len);
    check_lz4f(&c);
    tk_close(&c);
}

static void *exact_copy(const void *p, size_t n)
{
    void *q = malloc(n ? n : 1); /* exact size: ASan sees any read outside */
    memcpy(q, p, n);
    return q;
}

/* Each block decodes given the block before it, and nothing more; returns
 * how many blocks do not decode without it (they refer to it) and how
 * many of those follow a stored block. */
static size_t check_links(const tk_capture_t *c, size_t *after_stored)
{
    size_t linked = 0, off = c->header_len + MP_LZ4F_HEADER_LEN;
    *after_stored = 0;
    for (size_t i = 0; i < c->nblocks; i++) {
        const tk_block_t *b = &c->blocks[i];
        uint32_t word = mp_get_le32(c->data + off), size = word & ~MEMPROF_LZ4F_UNCOMPRESSED;
        cr_assert_eq(off + 8 + size, b->end, "block %zu", i);
        const uint8_t *raw = c->raw + b->raw_off;
        cr_assert_eq(b->stored, (word & MEMPROF_LZ4F_UNCOMPRESSED) != 0);
        if (b->stored) {
            cr_assert_eq(size, b->raw_len);
            cr_assert_eq(memcmp(c->data + off + 4, raw, size), 0, "stored block %zu", i);
        } else {
            uint8_t *src = exact_copy(c->data + off + 4, size), *dst = malloc(b->raw_len);
            uint8_t *dict = i ? exact_copy(c->raw + c->blocks[i - 1].raw_off, c->blocks[i - 1].raw_len) : NULL;
            int n = LZ4_decompress_safe_usingDict((const char *)src, (char *)dst, (int)size, (int)b->raw_len,
                                                  (const char *)dict, i ? (int)c->blocks[i - 1].raw_len : 0);
            cr_assert_eq(n, (int)b->raw_len, "block %zu with the block before it: %d", i, n);
            cr_assert_eq(memcmp(dst, raw, b->raw_len), 0, "block %zu", i);
            n = LZ4_decompress_safe((const char *)src, (char *)dst, (int)size, (int)b->raw_len);
            if (n != (int)b->raw_len || memcmp(dst, raw, b->raw_len) != 0) {
                cr_assert_gt(i, 0, "the first block refers to something");
                linked++;
                *after_stored += c->blocks[i - 1].stored;
            }
            free(src);
            free(dst);
            free(dict);
        }
        off = b->end;
    }
    cr_assert_eq(off, c->end_mark);
    return linked;
}

Test(frame, blocks_are_linked)
{
    /* 200-byte blocks from two buffers in turn, as recorder.c writes them */
    tk_capture_t c;
    rich_ids_t id = {0};
    rich_build(&c, &id);
    cr_assert_geq(c.nblocks, 20);
    size_t after_stored;
    size_t linked = check_links(&c, &after_stored);
    cr_assert_geq(linked, c.nblocks / 4, "%zu of %zu blocks refer to the block before", linked, c.nblocks);
    cr_assert_geq(after_stored, 1, "no block refers to a stored block");
    /* and the reader, which keeps one previous block, reads every event */
    memprof_reader_t *r = tk_open(c.data, c.len);
    memprof_event_t *ev = calloc(c.nev + 1, sizeof *ev);
    int rc;
    cr_assert_eq(tk_read_all(r, ev, c.nev + 1, c.nev, &rc), c.nev);
    cr_assert_eq(rc, 0, "%s", memprof_reader_error(r));
    for (size_t i = 0; i < c.nev; i++)
        tk_assert_event(&ev[i], &c.ev[i], i);
    cr_assert_eq(memprof_reader_info(r)->blocks, c.nblocks);
    free(ev);
    memprof_reader_close(r);
    tk_close(&c);
}

Test(frame, stored_block_is_the_next_dictionary)
{
    /* an incompressible block is stored as is; the next one, which repeats
     * it, compresses to a few bytes that refer to it */
    tk_capture_t c;
    tk_begin(&c, 256);
    char s[201];
    uint32_t x = 7;
    for (size_t j = 0; j < sizeof s - 1; j++) {
        x = x * 1103515245u + 12345u;
        s[j] = (char)(33 + (x >> 16) % 94);
    }
    s[sizeof s - 1] = '\0';
    uint32_t t = tk_thread_new(&c, 1);
    tk_alloc(&c, t, MEMPROF_A_MALLOC, 0x1000, 1, 0);
    tk_string(&c, s);
    tk_flush(&c);
    tk_alloc(&c, t, MEMPROF_A_MALLOC, 0x1000, 1, 0);
    tk_string(&c, s);
    tk_finish(&c);
    cr_assert_eq(c.nblocks, 2);
    cr_assert(c.blocks[0].stored && !c.blocks[1].stored);
    cr_assert_lt(c.blocks[1].end - c.blocks[0].end, 40, "second block: %zu bytes",
                 c.blocks[1].end - c.blocks[0].end);
    size_t after_stored;
    cr_assert_eq(check_links(&c, &after_stored), 1);
    cr_assert_eq(after_stored, 1);
    memprof_reader_t *r = tk_open(c.data, c.len);
    memprof_event_t ev[3];
    int rc;
    cr_assert_eq(tk_read_all(r, ev, 3, 2, &rc), 2);
    cr_assert_eq(rc, 0, "%s", memprof_reader_error(r));
    for (size_t i = 0; i < 2; i++)
        tk_assert_event(&ev[i], &c.ev[i], i);
    cr_assert_str_eq(memprof_reader_string(r, 1), s);
    cr_assert_str_eq(memprof_reader_string(r, 2), s);
    memprof_reader_close(r);
    check_lz4f(&c);
    tk_close(&c);
}

typedef struct {
    const char *s;
    size_t n;
} piece_t;

/* Fills the rest of the block in progress exactly with STRING records. */
static void fill_block(tk_capture_t *c, const char *text, piece_t *want, uint32_t *strings)
{
    for (size_t room = mp_enc_room(&c->enc); room > 0; room = mp_enc_room(&c->enc)) {
        cr_assert_geq(room, 2);
        size_t n = room - 2 <= 127 ? room - 2 : room == 130 ? 0 : room - 3;
        uint8_t rec[16400];
        size_t k = 0;
        rec[k++] = TK_TAG(MEMPROF_R_STRING, 0);
        k += mp_varint_put(rec + k, n);
        memcpy(rec + k, text, n);
        tk_raw(c, rec, k + n);
        want[(*strings)++] = (piece_t){text, n};
    }
}

Test(frame, full_64k_blocks_link)
{
    /* blocks of exactly 65536 bytes, each repeating most of the one before
     * at a distance of 64521: about the longest references LZ4 makes, with
     * the reader's two block buffers back to back. Block b holds strings
     * b * SHIFT, b * SHIFT + 1, ... (distinct random text), then three
     * allocations, then filler strings up to the last byte. */
    enum { PIECE = 200, SHIFT = 5, NBLOCKS = 5, POOL = (NBLOCKS * SHIFT + MEMPROF_BLOCK_MAX / PIECE + 1) * PIECE };
    char *pool = malloc(POOL);
    uint32_t x = 4242;
    for (size_t j = 0; j < POOL; j++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        pool[j] = (char)(33 + x % 94);
    }
    tk_capture_t c;
    tk_begin(&c, MEMPROF_BLOCK_MAX);
    uint32_t t = tk_thread_new(&c, 31);
    tk_flush(&c);
    uint32_t strings = 0;
    piece_t *want = calloc(NBLOCKS * (MEMPROF_BLOCK_MAX / PIECE + 8), sizeof *want);
    for (unsigned b = 0; b < NBLOCKS; b++) {
        size_t nb = c.nblocks;
        for (size_t j = (size_t)b * SHIFT; mp_enc_room(&c.enc) > 600; j++) {
            tk_string_n(&c, pool + j * PIECE, PIECE);
            want[strings++] = (piece_t){pool + j * PIECE, PIECE};
        }
        for (uint64_t i = 0; i < 3; i++)
            tk_alloc(&c, t, MEMPROF_A_MALLOC, 0x10000 + b * 0x100 + i * 16, b * 3 + i, 0);
        fill_block(&c, pool + (size_t)b * PIECE, want, &strings);
        cr_assert_eq(c.enc.len, MEMPROF_BLOCK_MAX);
        cr_assert_eq(c.nblocks, nb);
        tk_flush(&c);
    }
    tk_finish(&c);
    cr_assert_eq(c.nblocks, NBLOCKS + 1);
    for (unsigned b = 1; b <= NBLOCKS; b++)
        cr_assert_eq(c.blocks[b].raw_len, MEMPROF_BLOCK_MAX);
    for (unsigned b = 2; b <= NBLOCKS; b++) {
        size_t size = c.blocks[b].end - c.blocks[b - 1].end;
        cr_assert(!c.blocks[b].stored && size < 2048, "block %u: %zu bytes", b, size);
    }
    size_t after_stored;
    cr_assert_geq(check_links(&c, &after_stored), NBLOCKS - 1);
    memprof_reader_t *r = tk_open(c.data, c.len);
    memprof_event_t *ev = calloc(c.nev + 1, sizeof *ev);
    int rc;
    cr_assert_eq(tk_read_all(r, ev, c.nev + 1, c.nev, &rc), c.nev);
    cr_assert_eq(rc, 0, "%s", memprof_reader_error(r));
    for (size_t i = 0; i < c.nev; i++)
        tk_assert_event(&ev[i], &c.ev[i], i);
    cr_assert_not_null(memprof_reader_string(r, strings));
    cr_assert_null(memprof_reader_string(r, strings + 1));
    for (uint32_t i = 1; i <= strings; i++) {
        const char *got = memprof_reader_string(r, i);
        cr_assert(strlen(got) == want[i - 1].n && memcmp(got, want[i - 1].s, want[i - 1].n) == 0, "string %u", i);
    }
    free(want);
    free(ev);
    memprof_reader_close(r);
    check_lz4f(&c);
    tk_close(&c);
    free(pool);
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

Test(damage, cut_at_every_byte, .timeout = 120)
{
    tk_capture_t c;
    rich_ids_t id = {0};
    rich_build(&c, &id);
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
    rich_build(&c, &id);
    memprof_event_t *ev = calloc(c.nev, sizeof *ev);
    size_t cut_like = 0;
    for (size_t off = 0; off < c.len; off++)
        cut_like += check_flip(&c, off, mask, ev);
    /* a handful at most: one per block for 0xff (all of this capture is in its last 64 KiB) */
    cr_assert_leq(cut_like, c.nblocks + 8, "%zu flips read as a cut file", cut_like);
    free(ev);
    tk_close(&c);
}

Test(damage, every_byte_flipped_ff, .timeout = 120) { flip_all(0xff); }
Test(damage, every_byte_flipped_01, .timeout = 120) { flip_all(0x01); }
