/* test_format.c - the capture format end to end: captures built with the
 * encoders (as the recorder writes them) read back with the reader. Every
 * record type round-trips with every field, the encoder picks the compact
 * record forms (ALLOC_SAME, FREE_RECENT, REUSE_SAME, REUSE) exactly where
 * the format allows, node lines survive relative to their code's first
 * line; blocks are linked, each decoding given the one before it and
 * nothing more; a capture cut at any byte reads exactly the whole blocks
 * before the cut; any flipped byte is an error (or, for a length field,
 * reads as a cut file); newer and older format versions are refused; the
 * LZ4 frame is one that liblz4's own frame decoder accepts; the worked
 * example of docs/format.md is what the encoders write. */
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

#define NNODES 9

typedef struct {
    uint32_t str[MP_ARRAY_LEN(rich_strings)];
    uint32_t code_pseudo, code_main, code_run, code_far;
    uint32_t node[NNODES + 1]; /* node[0] = 0, the root */
    uint32_t t1, t2, t3;
    uint32_t noise_first, noise_count;
} rich_ids_t;

/* The nodes: parent index (into node[]), code, line (-1: none). */
typedef struct {
    unsigned parent;
    int code; /* 0 pseudo, 1 main (first line 10), 2 run (120), 3 far (INT32_MAX) */
    int32_t line;
} node_spec_t;

static const node_spec_t node_specs[NNODES + 1] = {
    {0, 0, 0},                  /* unused: the root */
    {0, 0, -1},                 /* 1: the pseudo-frame, no line */
    {0, 1, 10},                 /* 2: on the code's first line (line field 1) */
    {2, 2, 117},                /* 3: below it */
    {3, 1, 300},                /* 4: above it */
    {4, 2, -1},                 /* 5: a Python frame with no line */
    {2, 1, 0},                  /* 6: line 0, below the first line */
    {0, 3, 0},                  /* 7: INT32_MAX below */
    {7, 3, INT32_MAX},          /* 8: the largest line, delta 0 */
    {0, 1, INT32_MAX},          /* 9: same parent and code as 2, another line: another node */
};

#define TID_1 1000u
#define TID_2 1001u
#define TID_3 0xfedcba9876543210ull
#define BASE 0x7f3a00001000ull

static uint32_t spec_code(const rich_ids_t *id, int code)
{
    return code == 0 ? id->code_pseudo : code == 1 ? id->code_main : code == 2 ? id->code_run : id->code_far;
}

static void rich_tables(tk_capture_t *c, rich_ids_t *id)
{
    for (size_t i = 0; i < MP_ARRAY_LEN(rich_strings); i++)
        id->str[i] = tk_string(c, rich_strings[i]);
    id->code_pseudo = tk_code(c, MEMPROF_CODE_PSEUDO, id->str[0], id->str[0], 0);
    id->code_main = tk_code(c, 0, id->str[1], id->str[2], 10);
    id->code_run = tk_code(c, 0, id->str[1], id->str[3], 120);
    id->code_far = tk_code(c, 0, id->str[1], id->str[5], INT32_MAX);
    id->node[0] = 0;
    for (unsigned i = 1; i <= NNODES; i++)
        id->node[i] = tk_node(c, id->node[node_specs[i].parent], spec_code(id, node_specs[i].code),
                              node_specs[i].line);
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

/* ---- the compact forms: which record the encoder picks ------------------ */

#define ASSERT_TAG(call, type, arg)                                                                      \
    do {                                                                                                 \
        uint8_t got_ = (call);                                                                           \
        cr_assert_eq(got_, TK_TAG(type, arg), "%s: record %#04x (type %u arg %u), want type %u arg %u", \
                     #call, got_, got_ & 15u, got_ >> 4, (unsigned)(type), (unsigned)(arg));             \
    } while (0)

/* Each sequence starts a block and must fit in it (the rings and the
 * previous address and stack restart with every block). */
static size_t seq_begin(tk_capture_t *c)
{
    tk_flush(c);
    return c->nblocks;
}

static void seq_end(const tk_capture_t *c, size_t nblocks)
{
    cr_assert_eq(c->nblocks, nblocks, "a compact-form sequence did not fit one block");
}

/* ALLOC_SAME, FREE_RECENT at k = 0 and 15, a free fallen out of the ring. */
static void compact_allocs(tk_capture_t *c, const rich_ids_t *id)
{
    const uint64_t a = BASE + 0x200000;
    size_t nb = seq_begin(c);
    /* a block starts at stack 0: an allocation with stack 0 is "the same" */
    ASSERT_TAG(tk_alloc(c, id->t1, MEMPROF_A_MALLOC, a, 8, 0), MEMPROF_R_ALLOC_SAME, MEMPROF_A_MALLOC);
    ASSERT_TAG(tk_free(c, 0, MEMPROF_D_FREE, a), MEMPROF_R_FREE_RECENT, 0);
    ASSERT_TAG(tk_alloc(c, id->t1, MEMPROF_A_CALLOC, a + 0x40, 8, id->node[3]), MEMPROF_R_ALLOC, MEMPROF_A_CALLOC);
    ASSERT_TAG(tk_alloc(c, id->t1, MEMPROF_A_PYMEM_OBJ, a + 0x80, 9, id->node[3]), MEMPROF_R_ALLOC_SAME,
               MEMPROF_A_PYMEM_OBJ);
    seq_end(c, nb);

    /* 17 allocations: the first falls out of the ring, the second is 15 back */
    nb = seq_begin(c);
    for (uint64_t i = 0; i < 17; i++)
        ASSERT_TAG(tk_alloc(c, id->t2, MEMPROF_A_MALLOC, a + i * 0x40, 32 + i, id->node[6]),
                   i ? MEMPROF_R_ALLOC_SAME : MEMPROF_R_ALLOC, MEMPROF_A_MALLOC);
    ASSERT_TAG(tk_free(c, 0, MEMPROF_D_FREE, a), MEMPROF_R_FREE, MEMPROF_D_FREE);
    ASSERT_TAG(tk_free(c, 0, MEMPROF_D_FREE, a + 0x40), MEMPROF_R_FREE_RECENT, 15);
    ASSERT_TAG(tk_free(c, 0, MEMPROF_D_FREE, a + 16 * 0x40), MEMPROF_R_FREE_RECENT, 0);
    /* frees do not move the allocated ring: the third is still 14 back */
    ASSERT_TAG(tk_free(c, 0, MEMPROF_D_FREE, a + 2 * 0x40), MEMPROF_R_FREE_RECENT, 14);
    /* only plain frees are compact */
    ASSERT_TAG(tk_free(c, 0, MEMPROF_D_MUNMAP, a + 3 * 0x40), MEMPROF_R_FREE, MEMPROF_D_MUNMAP);
    ASSERT_TAG(tk_free(c, 0, MEMPROF_D_PYMEM_RAW, a + 4 * 0x40), MEMPROF_R_FREE, MEMPROF_D_PYMEM_RAW);
    seq_end(c, nb);

    /* the rings restart with the block: the same free is plain again */
    nb = seq_begin(c);
    ASSERT_TAG(tk_free(c, 0, MEMPROF_D_FREE, a + 5 * 0x40), MEMPROF_R_FREE, MEMPROF_D_FREE);
    seq_end(c, nb);
}

/* REUSE_SAME, REUSE at k = 0 and 15, a reuse fallen out of the ring. */
static void compact_reuse(tk_capture_t *c, const rich_ids_t *id)
{
    const uint64_t f = BASE + 0x300000;
    size_t nb = seq_begin(c);
    for (uint64_t i = 0; i < 17; i++)
        ASSERT_TAG(tk_free(c, 0, MEMPROF_D_FREE, f + i * 0x30), MEMPROF_R_FREE, MEMPROF_D_FREE);
    ASSERT_TAG(tk_alloc(c, id->t3, MEMPROF_A_MALLOC, f, 48, id->node[2]), MEMPROF_R_ALLOC, MEMPROF_A_MALLOC);
    ASSERT_TAG(tk_alloc(c, id->t3, MEMPROF_A_MALLOC, f + 0x30, 48, id->node[5]), MEMPROF_R_REUSE, 15);
    ASSERT_TAG(tk_alloc(c, id->t3, MEMPROF_A_MALLOC, f + 2 * 0x30, 1ull << 33, id->node[5]),
               MEMPROF_R_REUSE_SAME, 14);
    ASSERT_TAG(tk_alloc(c, id->t3, MEMPROF_A_MALLOC, f + 16 * 0x30, 7, id->node[1]), MEMPROF_R_REUSE, 0);
    ASSERT_TAG(tk_alloc(c, id->t1, MEMPROF_A_MALLOC, f + 15 * 0x30, 6, id->node[1]), MEMPROF_R_REUSE_SAME, 1);
    /* only malloc reuses */
    ASSERT_TAG(tk_alloc(c, id->t1, MEMPROF_A_CALLOC, f + 3 * 0x30, 5, id->node[1]), MEMPROF_R_ALLOC_SAME,
               MEMPROF_A_CALLOC);
    ASSERT_TAG(tk_alloc(c, id->t1, MEMPROF_A_POSIX_MEMALIGN, f + 4 * 0x30, 5, id->node[9]), MEMPROF_R_ALLOC,
               MEMPROF_A_POSIX_MEMALIGN);
    /* a reused address is an allocation: it can be freed by position */
    ASSERT_TAG(tk_free(c, 0, MEMPROF_D_FREE, f + 0x30), MEMPROF_R_FREE_RECENT, 5);
    /* ... and that free pushes it on the freed ring again */
    ASSERT_TAG(tk_alloc(c, id->t2, MEMPROF_A_MALLOC, f + 0x30, 16, id->node[2]), MEMPROF_R_REUSE, 0);
    seq_end(c, nb);
}

/* realloc's two halves, RESTORE, duplicates, address 0. */
static void compact_realloc(tk_capture_t *c, const rich_ids_t *id)
{
    const uint64_t r = BASE + 0x400000, q = BASE + 0x480000;
    size_t nb = seq_begin(c);
    ASSERT_TAG(tk_alloc(c, id->t2, MEMPROF_A_MALLOC, r, 64, id->node[4]), MEMPROF_R_ALLOC, MEMPROF_A_MALLOC);
    /* a realloc's free names its thread and is never compact, even at k = 0 */
    ASSERT_TAG(tk_free(c, id->t2, MEMPROF_D_REALLOC, r), MEMPROF_R_FREE, MEMPROF_D_REALLOC);
    /* the realloc's new block is never a REUSE, even at a freed address */
    ASSERT_TAG(tk_alloc(c, id->t2, MEMPROF_A_REALLOC, r, 128, id->node[4]), MEMPROF_R_ALLOC_SAME,
               MEMPROF_A_REALLOC);
    ASSERT_TAG(tk_free(c, id->t1, MEMPROF_D_REALLOC, r), MEMPROF_R_FREE, MEMPROF_D_REALLOC);
    ASSERT_TAG(tk_alloc(c, id->t1, MEMPROF_A_REALLOCARRAY, r + 0x1000, 256, id->node[3]), MEMPROF_R_ALLOC,
               MEMPROF_A_REALLOCARRAY);
    /* ... but a realloc's free feeds the freed ring: malloc may reuse it */
    ASSERT_TAG(tk_alloc(c, id->t1, MEMPROF_A_MALLOC, r, 32, id->node[3]), MEMPROF_R_REUSE_SAME, 0);
    /* a failed realloc: the RESTORE pushes on no ring */
    ASSERT_TAG(tk_free(c, id->t1, MEMPROF_D_REALLOC, r), MEMPROF_R_FREE, MEMPROF_D_REALLOC);
    ASSERT_TAG(tk_restore(c, id->t1, q), MEMPROF_R_RESTORE, 0);
    ASSERT_TAG(tk_alloc(c, id->t1, MEMPROF_A_MALLOC, q, 8, id->node[3]), MEMPROF_R_ALLOC_SAME, MEMPROF_A_MALLOC);
    ASSERT_TAG(tk_restore(c, id->t1, q + 0x10), MEMPROF_R_RESTORE, 0);
    ASSERT_TAG(tk_free(c, 0, MEMPROF_D_FREE, q + 0x10), MEMPROF_R_FREE, MEMPROF_D_FREE);
    /* the same address twice in the ring: the most recent is named */
    ASSERT_TAG(tk_alloc(c, id->t1, MEMPROF_A_MMAP, q, 4096, id->node[3]), MEMPROF_R_ALLOC_SAME, MEMPROF_A_MMAP);
    ASSERT_TAG(tk_free(c, 0, MEMPROF_D_FREE, q), MEMPROF_R_FREE_RECENT, 0);
    ASSERT_TAG(tk_free(c, 0, MEMPROF_D_FREE, q), MEMPROF_R_FREE_RECENT, 0);
    ASSERT_TAG(tk_alloc(c, id->t1, MEMPROF_A_MALLOC, q, 8, id->node[3]), MEMPROF_R_REUSE_SAME, 0);
    seq_end(c, nb);

    /* address 0 (nobody's block, and what an empty ring slot holds) is
     * never named by position, even where a slot holds it */
    nb = seq_begin(c);
    ASSERT_TAG(tk_free(c, 0, MEMPROF_D_FREE, 0), MEMPROF_R_FREE, MEMPROF_D_FREE);
    ASSERT_TAG(tk_alloc(c, id->t2, MEMPROF_A_MALLOC, 0, 0, id->node[2]), MEMPROF_R_ALLOC, MEMPROF_A_MALLOC);
    ASSERT_TAG(tk_free(c, 0, MEMPROF_D_FREE, 0), MEMPROF_R_FREE, MEMPROF_D_FREE);
    ASSERT_TAG(tk_alloc(c, id->t2, MEMPROF_A_MALLOC, 0, 0, id->node[2]), MEMPROF_R_ALLOC_SAME, MEMPROF_A_MALLOC);
    ASSERT_TAG(tk_restore(c, id->t2, 0), MEMPROF_R_RESTORE, 0);
    seq_end(c, nb);
}

/* Address fields: the aligned form only when both addresses are multiples
 * of 16; compact records set the previous address too. */
static void address_forms(tk_capture_t *c, const rich_ids_t *id)
{
    const uint64_t o = BASE + 0x500000;
    size_t nb = seq_begin(c);
    tk_alloc(c, id->t3, MEMPROF_A_MEMALIGN, o + 8, 1, id->node[8]); /* from 0: odd form */
    cr_assert_eq(tk_last_field(c), mp_zigzag((int64_t)(o + 8)) << 1 | 1);
    tk_alloc(c, id->t3, MEMPROF_A_MEMALIGN, o + 0x100, 1, id->node[8]); /* aligned, but from an odd one */
    cr_assert_eq(tk_last_field(c), mp_zigzag(0xf8) << 1 | 1);
    tk_alloc(c, id->t3, MEMPROF_A_MEMALIGN, o, 1, id->node[8]); /* both aligned */
    cr_assert_eq(tk_last_field(c), mp_zigzag(-0x10) << 1);
    tk_alloc(c, id->t3, MEMPROF_A_VALLOC, o + 0x1001, 1, id->node[8]);
    cr_assert_eq(tk_last_field(c), mp_zigzag(0x1001) << 1 | 1);
    /* a FREE_RECENT moves the previous address to the block it frees */
    ASSERT_TAG(tk_free(c, 0, MEMPROF_D_FREE, o + 8), MEMPROF_R_FREE_RECENT, 3);
    ASSERT_TAG(tk_free(c, 0, MEMPROF_D_MUNMAP, o + 0x18), MEMPROF_R_FREE, MEMPROF_D_MUNMAP);
    cr_assert_eq(tk_last_field(c), mp_zigzag(0x10) << 1 | 1);
    /* and a REUSE: */
    ASSERT_TAG(tk_alloc(c, id->t3, MEMPROF_A_MALLOC, o + 8, 3, id->node[8]), MEMPROF_R_REUSE_SAME, 1);
    ASSERT_TAG(tk_restore(c, id->t3, o + 0x28), MEMPROF_R_RESTORE, 0);
    cr_assert_eq(tk_last_field(c), mp_zigzag(0x20) << 1 | 1);
    ASSERT_TAG(tk_free(c, 0, MEMPROF_D_FREE, o + 0x100), MEMPROF_R_FREE_RECENT, 3);
    ASSERT_TAG(tk_restore(c, id->t3, o + 0x300), MEMPROF_R_RESTORE, 0);
    cr_assert_eq(tk_last_field(c), mp_zigzag(0x20) << 1);
    /* the odd form holds deltas down to -2^62 and up to 2^62 - 1 */
    tk_alloc(c, id->t3, MEMPROF_A_MMAP, 0x12, 1, id->node[8]);
    tk_alloc(c, id->t3, MEMPROF_A_MMAP, 0x12 + (1ull << 62) - 1, 1, id->node[8]);
    cr_assert_eq(tk_last_field(c), UINT64_MAX - 2);
    tk_alloc(c, id->t3, MEMPROF_A_MMAP, 0x11, 1, id->node[8]);
    cr_assert_eq(tk_last_field(c), UINT64_MAX);
    /* the aligned form holds every delta, 2^63 included */
    tk_alloc(c, id->t3, MEMPROF_A_MMAP, 0x0, 1, id->node[8]);
    tk_alloc(c, id->t3, MEMPROF_A_MMAP, 1ull << 63, 1, id->node[8]);
    tk_alloc(c, id->t3, MEMPROF_A_MMAP, 0x10, 1, id->node[8]);
    tk_alloc(c, id->t3, MEMPROF_A_MMAP, UINT64_MAX - 15, 1, id->node[8]);
    cr_assert_eq(tk_last_field(c), mp_zigzag(-2) << 1);
    seq_end(c, nb);
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
 * compressed (runs of similar records, which the next block repeats: the
 * blocks are linked). */
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
    compact_allocs(c, id);
    compact_reuse(c, id);
    compact_realloc(c, id);
    address_forms(c, id);
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
    cr_assert_eq(memprof_reader_node_count(r), NNODES);
    for (uint32_t i = 1; i <= NNODES; i++) {
        cr_assert_eq(id->node[i], i);
        check_node(r, i, id->node[node_specs[i].parent], spec_code(id, node_specs[i].code), node_specs[i].line);
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
    cr_assert_eq(memprof_reader_node(r, NNODES + 1, &a, &b, &d), MEMPROF_EINVAL);
    cr_assert_eq(memprof_reader_thread_count(r), 3);
    cr_assert_eq(memprof_reader_thread_tid(r, id->t1), TID_1);
    cr_assert_eq(memprof_reader_thread_tid(r, id->t2), TID_2);
    cr_assert_eq(memprof_reader_thread_tid(r, id->t3), TID_3);
    cr_assert_eq(memprof_reader_thread_tid(r, 0), 0);
    cr_assert_eq(memprof_reader_thread_tid(r, 4), 0);
}

static uint64_t count_tags(const tk_capture_t *c, unsigned type)
{
    uint64_t n = 0;
    for (unsigned arg = 0; arg < 16; arg++)
        n += c->tags[TK_TAG(type, arg)];
    return n;
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
    cr_assert_eq(count_type(&c, MEMPROF_EV_RESTORE), 6);
    cr_assert_eq(count_type(&c, MEMPROF_EV_MARK), 2);
    cr_assert_eq(count_type(&c, MEMPROF_EV_TIME), 3 + NOISE_ROUNDS / 16);
    /* every event record type, and the ring positions at both ends */
    static const unsigned types[] = {MEMPROF_R_ALLOC,      MEMPROF_R_FREE,       MEMPROF_R_RESTORE,
                                     MEMPROF_R_ALLOC_SAME, MEMPROF_R_FREE_RECENT, MEMPROF_R_REUSE_SAME,
                                     MEMPROF_R_REUSE};
    uint64_t total = 0;
    for (size_t i = 0; i < MP_ARRAY_LEN(types); i++) {
        cr_assert_geq(count_tags(&c, types[i]), 2, "record type %u: %llu", types[i],
                      (unsigned long long)count_tags(&c, types[i]));
        total += count_tags(&c, types[i]);
    }
    cr_assert_eq(total, c.allocs + c.frees + count_type(&c, MEMPROF_EV_RESTORE));
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

Test(format, frame_decodes_with_liblz4)
{
    tk_capture_t c;
    rich_ids_t id = {0};
    build_rich(&c, &id);
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

Test(format, blocks_are_linked)
{
    /* 200-byte blocks from two buffers in turn, as recorder.c writes them */
    tk_capture_t c;
    rich_ids_t id = {0};
    build_rich(&c, &id);
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

Test(format, stored_block_is_the_next_dictionary)
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

Test(format, full_64k_blocks_link)
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
