/* encode.h - record, header and trailer encoders (the writer half of the
 * format). Used inside the profiled process, so: no allocation, no locks,
 * no I/O; every function writes into caller memory and says how much. */
#ifndef MP_ENCODE_H
#define MP_ENCODE_H

#include <stddef.h>
#include <stdint.h>

#include "memprof/format.h"
#include "memprof/memprof.h"
#include "mp_common.h"
#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* Largest fixed-shape record (tag + three 10-byte varints + a thread switch). */
#define MP_ENC_FIXED_MAX 48

/* One block's worth of records. Delta state restarts with each block, so
 * every block decodes on its own. */
typedef struct mp_enc_s {
    uint8_t *buf;
    size_t len, cap;
    uint64_t prev_addr;
    uint32_t prev_stack;
    unsigned prev_allocator; /* of the last allocation record: what a REUSE means (1.1) */
    uint32_t thread; /* current thread of this block, 0 = none yet */
    /* recent addresses, the newest in slot -n mod MEMPROF_RING (n: how many
     * so far), and their low halves, which are searched four at a time */
    uint64_t allocated[MEMPROF_RING], freed[MEMPROF_RING];
    uint32_t allocated_lo[MEMPROF_RING], freed_lo[MEMPROF_RING];
    unsigned nalloc, nfree;
} mp_enc_t;

void mp_enc_init(mp_enc_t *e, uint8_t *buf, size_t cap);
void mp_enc_reset(mp_enc_t *e);
static inline size_t mp_enc_room(const mp_enc_t *e) { return e->cap - e->len; }

/* Each returns 0, or MEMPROF_ENOSPACE without writing anything. Events name
 * their thread; a THREAD switch record is written first when it changes. */
static MP_ALWAYS_INLINE int mp_enc_alloc(mp_enc_t *e, uint32_t thread, unsigned allocator, uint64_t addr, uint64_t size,
                               uint32_t stack);
static MP_ALWAYS_INLINE int mp_enc_free(mp_enc_t *e, uint32_t thread, unsigned deallocator, uint64_t addr);
/* munmap (thread 0) and the old range of an mremap (thread named). */
int mp_enc_free_range(mp_enc_t *e, uint32_t thread, unsigned deallocator, uint64_t addr, uint64_t len);
int mp_enc_restore(mp_enc_t *e, uint32_t thread, uint64_t addr);
int mp_enc_thread_new(mp_enc_t *e, uint32_t thread, uint64_t tid); /* thread = next index */
int mp_enc_thread_name(mp_enc_t *e, uint32_t thread, uint32_t name);
int mp_enc_string(mp_enc_t *e, const void *s, size_t n);
int mp_enc_code(mp_enc_t *e, unsigned flags, uint32_t filename, uint32_t qualname, uint32_t firstlineno);
/* line: source line, or -1 when the frame has none; firstlineno: the
 * code object's (lines are written relative to it) */
int mp_enc_node(mp_enc_t *e, uint32_t id, uint32_t parent, uint32_t code, int32_t line, uint32_t firstlineno);
/* A native frame: module id (0: none) and offset from its load bias. */
int mp_enc_node_native(mp_enc_t *e, uint32_t id, uint32_t parent, uint32_t module, uint64_t offset);
/* segs: nseg (vaddr, memsz) pairs, nseg <= MEMPROF_MODULE_SEGMENTS_MAX; build_len <= 255. */
int mp_enc_module(mp_enc_t *e, uint32_t id, uint64_t bias, uint32_t path, const uint8_t *build_id,
                  size_t build_len, const uint64_t *segs, unsigned nseg);
int mp_enc_module_unload(mp_enc_t *e, uint32_t id);
int mp_enc_time(mp_enc_t *e, uint64_t us, uint64_t rss_kib);
int mp_enc_mark(mp_enc_t *e, unsigned kind, uint64_t us);
/* An AGGREGATE record (MEMPROF_AGG_*): n <= MEMPROF_AGG_FIELDS_MAX fields. */
int mp_enc_aggregate(mp_enc_t *e, unsigned kind, const uint64_t *fields, unsigned n);

/* ---- the allocation and free records, inline: they are on every hook's path ---- */

static inline uint8_t mp_enc_tag(unsigned type, unsigned arg) { return (uint8_t)(type | (arg << 4)); }

/* Writes a THREAD switch when `thread` (0: none named) is not the block's current one. */
static inline uint8_t *mp_enc_switch_thread(mp_enc_t *e, uint8_t *p, uint32_t thread)
{
    if (thread && e->thread != thread) {
        *p++ = mp_enc_tag(MEMPROF_R_THREAD, MEMPROF_THREAD_SWITCH);
        p += mp_varint_put(p, thread);
        e->thread = thread;
    }
    return p;
}

/* An address relative to the previous one: 16-byte aligned deltas (nearly
 * all of them) lose their 4 zero bits; a low bit says which form it is. */
static inline uint8_t *mp_enc_put_addr(mp_enc_t *e, uint8_t *p, uint64_t addr)
{
    int64_t d = (int64_t)(addr - e->prev_addr);
    if (((addr | e->prev_addr) & 15) == 0)
        p += mp_varint_put(p, mp_zigzag(d / 16) << 1);
    else
        p += mp_varint_put(p, mp_zigzag(d) << 1 | 1);
    e->prev_addr = addr;
    return p;
}

/* The rings of recent addresses. Slot (-n) mod 16 holds the n-th address
 * put, so the one put k before the newest is k slots after the newest's:
 * the slots that match, rotated to the newest, are in age order. */
_Static_assert(MEMPROF_RING == 16, "the ring search handles 16 slots");

static inline void mp_enc_ring_put(uint64_t *ring, uint32_t *lo, unsigned *n, uint64_t addr)
{
    unsigned s = (0u - ++*n) & (MEMPROF_RING - 1);
    ring[s] = addr;
#ifdef __SSE2__
    /* the low half goes in with a 16-byte store: the search's 16-byte load
     * of it, an event later, is then served from the store (a 4-byte store
     * under a wider load stalls until the store reaches the cache) */
    static const uint32_t lane[4][4] = {{~0u, 0, 0, 0}, {0, ~0u, 0, 0}, {0, 0, ~0u, 0}, {0, 0, 0, ~0u}};
    __m128i *q = (__m128i *)(lo + (s & ~3u));
    __m128i m = _mm_loadu_si128((const __m128i *)lane[s & 3]);
    __m128i v = _mm_set1_epi32((int)(uint32_t)addr);
    _mm_storeu_si128(q, _mm_or_si128(_mm_andnot_si128(m, _mm_loadu_si128(q)), _mm_and_si128(m, v)));
#else
    lo[s] = (uint32_t)addr;
#endif
}

/* Position k (0 = most recent) of addr in a ring, or -1. 0 marks an empty
 * slot (a reader refuses to be pointed at one), so address 0 is never
 * named by position. */
static inline int mp_enc_ring_find(const uint64_t *ring, const uint32_t *lo, unsigned n, uint64_t addr)
{
    if (MP_UNLIKELY(addr == 0))
        return -1;
    unsigned m = 0; /* bit s: slot s has addr's low half */
#ifdef __SSE2__
    __m128i want = _mm_set1_epi32((int)(uint32_t)addr);
    for (unsigned i = 0; i < MEMPROF_RING; i += 4) {
        __m128i eq = _mm_cmpeq_epi32(_mm_loadu_si128((const __m128i *)(lo + i)), want);
        m |= (unsigned)_mm_movemask_ps(_mm_castsi128_ps(eq)) << i;
    }
#else
    for (unsigned s = 0; s < MEMPROF_RING; s++)
        m |= (unsigned)(lo[s] == (uint32_t)addr) << s;
#endif
    if (MP_LIKELY(!m))
        return -1;
    unsigned newest = (0u - n) & (MEMPROF_RING - 1);
    m = ((m >> newest) | (m << (MEMPROF_RING - newest))) & 0xffffu; /* bit k: age k */
    for (; m; m &= m - 1) {
        unsigned k = (unsigned)__builtin_ctz(m);
        if (ring[(newest + k) & (MEMPROF_RING - 1)] == addr)
            return (int)k;
    }
    return -1;
}

/* Mappings always carry their address (docs/format.md §5.2): the kernel
 * places them; no free list hands back the range just unmapped. */
static inline int mp_enc_is_mapping(unsigned allocator)
{
    return allocator == MEMPROF_A_MMAP || allocator == MEMPROF_A_MMAP_FILE || allocator == MEMPROF_A_MREMAP;
}

static MP_ALWAYS_INLINE int mp_enc_alloc(mp_enc_t *e, uint32_t thread, unsigned allocator, uint64_t addr, uint64_t size,
                 uint32_t stack)
{
    if (MP_UNLIKELY(mp_enc_room(e) < MP_ENC_FIXED_MAX))
        return MEMPROF_ENOSPACE;
    uint8_t *p = mp_enc_switch_thread(e, e->buf + e->len, thread);
    int same = stack == e->prev_stack;
    int k = allocator == e->prev_allocator && !mp_enc_is_mapping(allocator) ? mp_enc_ring_find(e->freed, e->freed_lo, e->nfree, addr) : -1;
    if (k >= 0) { /* the allocator handing back a block just freed: name it, not its address */
        *p++ = mp_enc_tag(same ? MEMPROF_R_REUSE_SAME : MEMPROF_R_REUSE, (unsigned)k);
        e->prev_addr = addr;
    } else {
        *p++ = mp_enc_tag(same ? MEMPROF_R_ALLOC_SAME : MEMPROF_R_ALLOC, allocator);
        p = mp_enc_put_addr(e, p, addr);
    }
    p += mp_varint_put(p, size);
    if (!same)
        p += mp_varint_put(p, mp_zigzag((int64_t)stack - (int64_t)e->prev_stack));
    e->prev_stack = stack;
    e->prev_allocator = allocator;
    mp_enc_ring_put(e->allocated, e->allocated_lo, &e->nalloc, addr);
    e->len = (size_t)(p - e->buf);
    return 0;
}

static MP_ALWAYS_INLINE int mp_enc_free(mp_enc_t *e, uint32_t thread, unsigned deallocator, uint64_t addr)
{
    if (MP_UNLIKELY(mp_enc_room(e) < MP_ENC_FIXED_MAX))
        return MEMPROF_ENOSPACE;
    uint8_t *p = mp_enc_switch_thread(e, e->buf + e->len, thread);
    int k = deallocator == MEMPROF_D_FREE ? mp_enc_ring_find(e->allocated, e->allocated_lo, e->nalloc, addr) : -1;
    if (k >= 0) {
        *p++ = mp_enc_tag(MEMPROF_R_FREE_RECENT, (unsigned)k);
        e->prev_addr = addr;
    } else {
        *p++ = mp_enc_tag(MEMPROF_R_FREE, deallocator);
        p = mp_enc_put_addr(e, p, addr);
    }
    mp_enc_ring_put(e->freed, e->freed_lo, &e->nfree, addr);
    e->len = (size_t)(p - e->buf);
    return 0;
}

/* TLV entries for the header and trailer; return bytes written. Callers
 * size `p` for the worst case (1 + 10 + n). */
size_t mp_tlv_varint(uint8_t *p, unsigned tag, uint64_t v);
size_t mp_tlv_bytes(uint8_t *p, unsigned tag, const void *d, size_t n);

/* Header: buf holds MEMPROF_HEADER_FIXED bytes of room, then tlv_len bytes of
 * TLVs already written at buf + MEMPROF_HEADER_FIXED, then 4 bytes of room.
 * Fills the fixed part and the checksum; returns the header's total size. */
size_t mp_header_seal(uint8_t *buf, size_t tlv_len);
#define MP_TRAILER_FIXED 12 /* magic, u32 tlv length */
size_t mp_trailer_seal(uint8_t *buf, size_t tlv_len);

/* LZ4 frame pieces. The frame header is 7 bytes; a block is 4 + data + 4. */
#define MP_LZ4F_HEADER_LEN 7
size_t mp_lz4f_header(uint8_t *out);
size_t mp_lz4f_block_bound(size_t n);
/* Compress n (<= MEMPROF_BLOCK_MAX) bytes into dst (mp_lz4f_block_bound(n)
 * bytes) with an LZ4_stream_t (LZ4_initStream'ed, in caller memory). Blocks
 * are linked: successive blocks must come from two buffers used in turn,
 * not adjacent in memory, so that each block refers to its predecessor only
 * and the previous block stays intact while the next is compressed.
 * stream NULL: the block is stored as is (uncompressed, as the frame format
 * allows), for a reader on the same machine, to which compressing costs
 * more than the bytes it saves. */
size_t mp_lz4f_block(void *stream, const uint8_t *src, size_t n, uint8_t *dst);
size_t mp_lz4f_end(uint8_t *out);

#endif
