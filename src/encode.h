/* encode.h - record, header and trailer encoders (the writer half of the
 * format). Used inside the profiled process, so: no allocation, no locks,
 * no I/O; every function writes into caller memory and says how much. */
#ifndef MP_ENCODE_H
#define MP_ENCODE_H

#include <stddef.h>
#include <stdint.h>

#include "memprof/format.h"

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
int mp_enc_alloc(mp_enc_t *e, uint32_t thread, unsigned allocator, uint64_t addr, uint64_t size,
                 uint32_t stack);
int mp_enc_free(mp_enc_t *e, uint32_t thread, unsigned deallocator, uint64_t addr);
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
