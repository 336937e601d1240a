/* rich_capture.c - builds the rich capture of rich_capture.h: the tables
 * (modules and native nodes among them), every allocator and deallocator,
 * the mappings of 1.1, the compact record forms and the address
 * forms (asserting, record by record, the form the encoder picks), the
 * clock, and noise enough for many blocks. The builders run in this order
 * on one capture; each compact-form sequence starts a block of its own and
 * must fit in it, since the rings and the previous address and stack
 * restart with every block.
 */
#include "rich_capture.h"

#include <criterion/criterion.h>

#include "mp_common.h"

/* ---- the tables, every allocator and deallocator ------------------------ */

const char *const rich_strings[RICH_NSTRINGS] = {
    MEMPROF_PSEUDO_NO_PYTHON, "/srv/app/main.py", "main", "Worker.run", "h\xc3\xa9llo \xe2\x9c\x93", "",
    "/usr/lib/x86_64-linux-gnu/libc.so.6", "/srv/app/_speedups.cpython-311-x86_64-linux-gnu.so",
    "MainThread", "worker-1", "pool-worker-2",
};

const node_spec_t rich_node_specs[RICH_NNODES + 1] = {
    {0, 0, 0, 0, 0},                   /* unused: the root */
    {0, 0, -1, 0, 0},                  /* 1: the pseudo-frame, no line */
    {0, 1, 10, 0, 0},                  /* 2: on the code's first line (line field 1) */
    {2, 2, 117, 0, 0},                 /* 3: below it */
    {3, 1, 300, 0, 0},                 /* 4: above it */
    {4, 2, -1, 0, 0},                  /* 5: a Python frame with no line */
    {2, 1, 0, 0, 0},                   /* 6: line 0, below the first line */
    {0, 3, 0, 0, 0},                   /* 7: INT32_MAX below */
    {7, 3, INT32_MAX, 0, 0},           /* 8: the largest line, delta 0 */
    {0, 1, INT32_MAX, 0, 0},           /* 9: same parent and code as 2, another line: another node */
    {4, -1, -1, 1, 0x9a0f4},           /* 10: native, called from Python frame 4, in module 1 */
    {10, -1, -1, 0, 0x7ffff7fc1234},   /* 11: native in no known module: the absolute address */
    {11, 1, 12, 0, 0},                 /* 12: a Python frame under a native one */
    {0, -1, -1, 2, 0},                 /* 13: native at the root, offset 0 */
    {13, -1, -1, 3, UINT64_MAX},       /* 14: in module 3, loaded after module 2 went */
};

const module_spec_t rich_module_specs[RICH_NMODULES + 1] = {
    {0},
    /* 1: a shared library with a 20-byte GNU build id and three PT_LOADs */
    {6,
     0x7f3a12340000ull,
     {0x8b, 0x1d, 0x00, 0xff, 0x42, 0x10, 0x9c, 0x7e, 0x01, 0x80, 0x3f, 0xa5, 0x5a, 0x00, 0x00, 0x13, 0x37, 0xc0,
      0xde, 0x99},
     20,
     {0x0, 0x28000, 0x28000, 0x195000, 0x1bd000, 0x5a000},
     3,
     0},
    /* 2: the main program (empty path, no bias), no build id, no segment; unloaded */
    {5, 0, {0}, 0, {0}, 0, 1},
    /* 3: a one-byte build id (a 0), the largest values */
    {7, UINT64_MAX, {0x00}, 1, {UINT64_MAX, UINT64_MAX}, 1, 0},
};

static uint32_t rich_module(tk_capture_t *c, const rich_ids_t *id, unsigned i)
{
    const module_spec_t *m = &rich_module_specs[i];
    return tk_module(c, m->bias, id->str[m->path], m->build_id, m->build_len, m->segs, m->nseg);
}

uint32_t rich_spec_code(const rich_ids_t *id, int code)
{
    if (code < 0) /* a native frame */
        return 0;
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
    id->module[0] = 0;
    id->module[1] = rich_module(c, id, 1);
    id->module[2] = rich_module(c, id, 2);
    id->node[0] = 0;
    for (unsigned i = 1; i <= RICH_NNODES; i++) {
        const node_spec_t *n = &rich_node_specs[i];
        if (i == RICH_NODE_AFTER_RELOAD) {
            tk_module_unload(c, id->module[2]);
            id->module[3] = rich_module(c, id, 3);
        }
        if (n->code < 0)
            id->node[i] = tk_node_native(c, id->node[n->parent], id->module[n->module], n->offset);
        else
            id->node[i] = tk_node(c, id->node[n->parent], rich_spec_code(id, n->code), n->line);
    }
    id->t1 = tk_thread_new(c, RICH_TID_1);
    id->t2 = tk_thread_new(c, RICH_TID_2);
    id->t3 = tk_thread_new(c, RICH_TID_3);
    tk_thread_name(c, id->t1, id->str[RICH_NAME_T1]);
    tk_thread_name(c, id->t2, id->str[RICH_NAME_T2_FIRST]); /* renamed later */
}

/* Every allocator with the address and the stack going up and down. */
static void rich_allocs(tk_capture_t *c, const rich_ids_t *id)
{
    static const unsigned stacks[] = {4, 1, 3, 0, 2, 4, 0, 10, 12, 11, 14, 13};
    for (unsigned k = MEMPROF_A_MALLOC; k < MEMPROF_A_COUNT; k++) {
        uint64_t addr = k % 2 ? RICH_BASE + k * 0x100 : RICH_BASE - k * 0x10000;
        uint32_t t = k % 3 == 0 ? id->t1 : k % 3 == 1 ? id->t2 : id->t3;
        tk_alloc(c, t, k, addr, 16ull * k + (k == 5 ? 1ull << 40 : 0), id->node[stacks[k % MP_ARRAY_LEN(stacks)]]);
    }
    tk_alloc(c, id->t1, MEMPROF_A_MALLOC, 0x10, 0, id->node[4]);
    tk_alloc(c, id->t1, MEMPROF_A_MMAP, UINT64_MAX - 4095, UINT64_MAX, id->node[1]); /* delta wraps */
    tk_alloc(c, id->t1, MEMPROF_A_MALLOC, 0x20, 1, id->node[1]);
}

/* Every deallocator: plain ones without a thread, realloc's and mremap's
 * with one; munmap's and mremap's with a length. */
static void rich_frees(tk_capture_t *c, const rich_ids_t *id)
{
    for (unsigned k = MEMPROF_D_FREE; k <= MEMPROF_D_PYMEM_OBJ; k++) {
        uint64_t addr = k % 2 ? RICH_BASE + k * 0x100 : RICH_BASE - k * 0x10000;
        if (k == MEMPROF_D_MUNMAP || k == MEMPROF_D_MREMAP)
            tk_free_range(c, k == MEMPROF_D_MREMAP ? id->t2 : 0, k, addr, 0x1000ull * k);
        else
            tk_free(c, k == MEMPROF_D_REALLOC ? id->t2 : 0, k, addr);
    }
    tk_flush(c);
    tk_free(c, 0, MEMPROF_D_FREE, RICH_BASE); /* first in a block: no thread known yet */
    tk_free(c, id->t3, MEMPROF_D_FREE, RICH_BASE + 8); /* a thread may be named */
    tk_free(c, id->t1, MEMPROF_D_REALLOC, 0x20);
    tk_restore(c, id->t1, 0x20);
    tk_free_range(c, 0, MEMPROF_D_MUNMAP, UINT64_MAX - 4095, UINT64_MAX); /* a 10-byte length */
}

/* 1.1's mappings: a file mapping cut in the middle, an mremap that moves
 * and one that fails, a length of 0; then a thread renamed. */
static void rich_mappings(tk_capture_t *c, const rich_ids_t *id)
{
    const uint64_t m = RICH_BASE + 0x10000000;
    tk_alloc(c, id->t1, MEMPROF_A_MMAP_FILE, m, 0x3000, id->node[10]);
    tk_free_range(c, 0, MEMPROF_D_MUNMAP, m + 0x1000, 0x1000);
    tk_free_range(c, id->t3, MEMPROF_D_MREMAP, m, 0x1000);
    tk_alloc(c, id->t3, MEMPROF_A_MREMAP, m + 0x100000, 0x2000, id->node[10]);
    tk_alloc(c, id->t2, MEMPROF_A_MMAP, m + 0x200000, 0x10000, id->node[14]);
    tk_free_range(c, id->t2, MEMPROF_D_MREMAP, m + 0x200000, 0x10000);
    tk_restore(c, id->t2, m + 0x200000);
    tk_free_range(c, 0, MEMPROF_D_MUNMAP, m + 0x2000, 0);
    tk_thread_name(c, id->t2, id->str[RICH_NAME_T2]);
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
    const uint64_t a = RICH_BASE + 0x200000;
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
    ASSERT_TAG(tk_free_range(c, 0, MEMPROF_D_MUNMAP, a + 3 * 0x40, 0x40), MEMPROF_R_FREE, MEMPROF_D_MUNMAP);
    ASSERT_TAG(tk_free(c, 0, MEMPROF_D_PYMEM_RAW, a + 4 * 0x40), MEMPROF_R_FREE, MEMPROF_D_PYMEM_RAW);
    ASSERT_TAG(tk_free_range(c, id->t1, MEMPROF_D_MREMAP, a + 5 * 0x40, 0x40), MEMPROF_R_FREE, MEMPROF_D_MREMAP);
    /* range frees feed the freed ring too: malloc may reuse their address */
    ASSERT_TAG(tk_alloc(c, id->t2, MEMPROF_A_MALLOC, a + 3 * 0x40, 1, id->node[6]), MEMPROF_R_REUSE_SAME, 2);
    seq_end(c, nb);

    /* the rings restart with the block: the same free is plain again */
    nb = seq_begin(c);
    ASSERT_TAG(tk_free(c, 0, MEMPROF_D_FREE, a + 5 * 0x40), MEMPROF_R_FREE, MEMPROF_D_FREE);
    seq_end(c, nb);
}

/* REUSE_SAME, REUSE at k = 0 and 15, a reuse fallen out of the ring; a
 * REUSE by the allocator of the allocation before it, whichever (1.1),
 * never by another one, never by a mapping. */
static void compact_reuse(tk_capture_t *c, const rich_ids_t *id)
{
    const uint64_t f = RICH_BASE + 0x300000;
    size_t nb = seq_begin(c);
    for (uint64_t i = 0; i < 17; i++)
        ASSERT_TAG(tk_free(c, 0, MEMPROF_D_FREE, f + i * 0x30), MEMPROF_R_FREE, MEMPROF_D_FREE);
    /* a block starts as if after a malloc */
    ASSERT_TAG(tk_alloc(c, id->t3, MEMPROF_A_MALLOC, f + 0x30, 48, id->node[5]), MEMPROF_R_REUSE, 15);
    ASSERT_TAG(tk_alloc(c, id->t3, MEMPROF_A_MALLOC, f, 48, id->node[2]), MEMPROF_R_ALLOC, MEMPROF_A_MALLOC);
    ASSERT_TAG(tk_alloc(c, id->t3, MEMPROF_A_MALLOC, f + 2 * 0x30, 1ull << 33, id->node[2]),
               MEMPROF_R_REUSE_SAME, 14);
    ASSERT_TAG(tk_alloc(c, id->t3, MEMPROF_A_MALLOC, f + 16 * 0x30, 7, id->node[1]), MEMPROF_R_REUSE, 0);
    ASSERT_TAG(tk_alloc(c, id->t1, MEMPROF_A_MALLOC, f + 15 * 0x30, 6, id->node[1]), MEMPROF_R_REUSE_SAME, 1);
    /* another allocator than the last one names its address; then it reuses */
    ASSERT_TAG(tk_alloc(c, id->t1, MEMPROF_A_CALLOC, f + 3 * 0x30, 5, id->node[1]), MEMPROF_R_ALLOC_SAME,
               MEMPROF_A_CALLOC);
    ASSERT_TAG(tk_alloc(c, id->t1, MEMPROF_A_CALLOC, f + 4 * 0x30, 5, id->node[9]), MEMPROF_R_REUSE, 12);
    ASSERT_TAG(tk_alloc(c, id->t1, MEMPROF_A_POSIX_MEMALIGN, f + 5 * 0x30, 5, id->node[9]), MEMPROF_R_ALLOC_SAME,
               MEMPROF_A_POSIX_MEMALIGN);
    ASSERT_TAG(tk_alloc(c, id->t2, MEMPROF_A_PYMEM_OBJ, f + 6 * 0x30, 5, id->node[9]), MEMPROF_R_ALLOC_SAME,
               MEMPROF_A_PYMEM_OBJ);
    ASSERT_TAG(tk_alloc(c, id->t2, MEMPROF_A_PYMEM_OBJ, f + 7 * 0x30, 5, id->node[9]), MEMPROF_R_REUSE_SAME, 9);
    ASSERT_TAG(tk_alloc(c, id->t2, MEMPROF_A_MALLOC, f + 8 * 0x30, 5, id->node[9]), MEMPROF_R_ALLOC_SAME,
               MEMPROF_A_MALLOC);
    /* a reused address is an allocation: it can be freed by position */
    ASSERT_TAG(tk_free(c, 0, MEMPROF_D_FREE, f + 0x30), MEMPROF_R_FREE_RECENT, 10);
    /* ... and that free pushes it on the freed ring again */
    ASSERT_TAG(tk_alloc(c, id->t2, MEMPROF_A_MALLOC, f + 0x30, 16, id->node[2]), MEMPROF_R_REUSE, 0);
    /* mappings never reuse, not even after a mapping of their own kind */
    static const unsigned maps[] = {MEMPROF_A_MMAP, MEMPROF_A_MMAP_FILE, MEMPROF_A_MREMAP};
    for (unsigned i = 0; i < MP_ARRAY_LEN(maps); i++)
        for (unsigned j = 0; j < 2; j++)
            ASSERT_TAG(tk_alloc(c, id->t2, maps[i], f + (9 + 2 * i + j) * 0x30, 0x30, id->node[2]),
                       MEMPROF_R_ALLOC_SAME, maps[i]);
    /* and after one, malloc names its address */
    ASSERT_TAG(tk_alloc(c, id->t2, MEMPROF_A_MALLOC, f + 15 * 0x30, 16, id->node[2]), MEMPROF_R_ALLOC_SAME,
               MEMPROF_A_MALLOC);
    seq_end(c, nb);

    /* the allocator restarts with the block: after a calloc in the block
     * before, a calloc at a freed address names it */
    const uint64_t g = f + 0x1000;
    nb = seq_begin(c);
    ASSERT_TAG(tk_alloc(c, id->t1, MEMPROF_A_CALLOC, g, 32, id->node[3]), MEMPROF_R_ALLOC, MEMPROF_A_CALLOC);
    ASSERT_TAG(tk_free(c, 0, MEMPROF_D_FREE, g), MEMPROF_R_FREE_RECENT, 0);
    ASSERT_TAG(tk_alloc(c, id->t1, MEMPROF_A_CALLOC, g, 32, id->node[3]), MEMPROF_R_REUSE_SAME, 0);
    seq_end(c, nb);
    nb = seq_begin(c);
    ASSERT_TAG(tk_free(c, 0, MEMPROF_D_FREE, g), MEMPROF_R_FREE, MEMPROF_D_FREE);
    ASSERT_TAG(tk_alloc(c, id->t1, MEMPROF_A_CALLOC, g, 32, id->node[3]), MEMPROF_R_ALLOC, MEMPROF_A_CALLOC);
    ASSERT_TAG(tk_free(c, 0, MEMPROF_D_FREE, g), MEMPROF_R_FREE_RECENT, 0);
    ASSERT_TAG(tk_alloc(c, id->t1, MEMPROF_A_CALLOC, g, 32, id->node[3]), MEMPROF_R_REUSE_SAME, 0);
    seq_end(c, nb);
}

/* realloc's two halves, RESTORE, duplicates, address 0. */
static void compact_realloc(tk_capture_t *c, const rich_ids_t *id)
{
    const uint64_t r = RICH_BASE + 0x400000, q = RICH_BASE + 0x480000;
    size_t nb = seq_begin(c);
    ASSERT_TAG(tk_alloc(c, id->t2, MEMPROF_A_MALLOC, r, 64, id->node[4]), MEMPROF_R_ALLOC, MEMPROF_A_MALLOC);
    /* a realloc's free names its thread and is never compact, even at k = 0 */
    ASSERT_TAG(tk_free(c, id->t2, MEMPROF_D_REALLOC, r), MEMPROF_R_FREE, MEMPROF_D_REALLOC);
    /* after a malloc, the realloc's new block names its address, even a freed one */
    ASSERT_TAG(tk_alloc(c, id->t2, MEMPROF_A_REALLOC, r, 128, id->node[4]), MEMPROF_R_ALLOC_SAME,
               MEMPROF_A_REALLOC);
    ASSERT_TAG(tk_free(c, id->t1, MEMPROF_D_REALLOC, r), MEMPROF_R_FREE, MEMPROF_D_REALLOC);
    ASSERT_TAG(tk_alloc(c, id->t1, MEMPROF_A_REALLOCARRAY, r + 0x1000, 256, id->node[3]), MEMPROF_R_ALLOC,
               MEMPROF_A_REALLOCARRAY);
    /* a realloc's free feeds the freed ring: a block grown in place after
     * another realloc is a REUSE */
    ASSERT_TAG(tk_alloc(c, id->t1, MEMPROF_A_REALLOCARRAY, r, 32, id->node[3]), MEMPROF_R_REUSE_SAME, 0);
    /* a failed realloc: the RESTORE pushes on no ring */
    ASSERT_TAG(tk_free(c, id->t1, MEMPROF_D_REALLOC, r), MEMPROF_R_FREE, MEMPROF_D_REALLOC);
    ASSERT_TAG(tk_restore(c, id->t1, q), MEMPROF_R_RESTORE, 0);
    ASSERT_TAG(tk_alloc(c, id->t1, MEMPROF_A_MALLOC, q, 8, id->node[3]), MEMPROF_R_ALLOC_SAME, MEMPROF_A_MALLOC);
    ASSERT_TAG(tk_restore(c, id->t1, q + 0x10), MEMPROF_R_RESTORE, 0);
    ASSERT_TAG(tk_free(c, 0, MEMPROF_D_FREE, q + 0x10), MEMPROF_R_FREE, MEMPROF_D_FREE);
    /* the same address twice in the ring: the most recent is named */
    ASSERT_TAG(tk_alloc(c, id->t1, MEMPROF_A_MALLOC, q, 8, id->node[3]), MEMPROF_R_ALLOC_SAME, MEMPROF_A_MALLOC);
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
    const uint64_t o = RICH_BASE + 0x500000;
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
    ASSERT_TAG(tk_free_range(c, 0, MEMPROF_D_MUNMAP, o + 0x18, 0x18), MEMPROF_R_FREE, MEMPROF_D_MUNMAP);
    cr_assert_eq(tk_last_field(c), mp_zigzag(0x10) << 1 | 1);
    /* and a REUSE (a valloc, as the allocation before it): */
    ASSERT_TAG(tk_alloc(c, id->t3, MEMPROF_A_VALLOC, o + 8, 3, id->node[8]), MEMPROF_R_REUSE_SAME, 1);
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

/* ---- the clock, the noise, the whole capture ---------------------------- */

static void rich_clock(tk_capture_t *c, const rich_ids_t *id)
{
    tk_time(c, 1500, 20480);
    tk_alloc(c, id->t2, MEMPROF_A_CALLOC, RICH_BASE + 0x5000, 48, id->node[2]);
    tk_mark(c, MEMPROF_M_SCRIPT_END, 2000);
    tk_free(c, 0, MEMPROF_D_FREE, RICH_BASE + 0x5000);
    tk_time(c, 2500, 30000);
    tk_mark(c, MEMPROF_M_SCRIPT_END, 2400); /* earlier than the clock: the clock stays */
    tk_time(c, 2500, 0);
}

/* Enough records for many blocks, some stored (random strings), most
 * compressed (runs of similar records, which the next block repeats: the
 * blocks are linked). */
static void rich_noise(tk_capture_t *c, rich_ids_t *id)
{
    uint32_t x = 12345;
    id->noise_first = c->nstrings + 1;
    for (int i = 0; i < RICH_NOISE_ROUNDS; i++) {
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
        uint64_t a = RICH_BASE + 0x100000 + (uint64_t)(i % 7) * 64;
        tk_alloc(c, i % 4 ? id->t1 : id->t2, MEMPROF_A_MALLOC, a, 64, id->node[i % 5]);
        tk_free(c, 0, MEMPROF_D_FREE, a);
        if (i % 16 == 15)
            tk_time(c, 3000 + (uint64_t)i, 40000 + (uint64_t)i);
    }
}

void rich_build(tk_capture_t *c, rich_ids_t *id)
{
    tk_begin(c, 200);
    rich_tables(c, id);
    rich_allocs(c, id);
    rich_frees(c, id);
    rich_mappings(c, id);
    compact_allocs(c, id);
    compact_reuse(c, id);
    compact_realloc(c, id);
    address_forms(c, id);
    rich_clock(c, id);
    rich_noise(c, id);
    tk_finish(c);
}

/* ---- what the kit wrote ------------------------------------------------- */

uint64_t rich_count_type(const tk_capture_t *c, memprof_event_type_t type)
{
    uint64_t n = 0;
    for (size_t i = 0; i < c->nev; i++)
        n += c->ev[i].type == type;
    return n;
}

uint64_t rich_count_tags(const tk_capture_t *c, unsigned type)
{
    uint64_t n = 0;
    for (unsigned arg = 0; arg < 16; arg++)
        n += c->tags[TK_TAG(type, arg)];
    return n;
}
