/* encode.c - record, header, trailer and LZ4-block encoders.
 *
 * Runs inside the profiled process on the allocation path: no malloc, no
 * locks, no I/O, no libc call that could allocate. The layout written here is
 * docs/format.md; the reader (reader.c) is its other half.
 */
#include "encode.h"

#include <lz4.h>

#include "memprof/memprof.h"
#include "mp_common.h"
#include "xxhash32.h"

void mp_enc_init(mp_enc_t *e, uint8_t *buf, size_t cap)
{
    e->buf = buf;
    e->cap = cap;
    mp_enc_reset(e);
}

void mp_enc_reset(mp_enc_t *e)
{
    e->len = 0;
    e->prev_addr = 0;
    e->prev_stack = 0;
    e->thread = 0;
}

static inline uint8_t tag(unsigned type, unsigned arg) { return (uint8_t)(type | (arg << 4)); }

/* Writes a THREAD switch when `thread` (0: none named) is not the block's current one. */
static inline uint8_t *switch_thread(mp_enc_t *e, uint8_t *p, uint32_t thread)
{
    if (thread && e->thread != thread) {
        *p++ = tag(MEMPROF_R_THREAD, MEMPROF_THREAD_SWITCH);
        p += mp_varint_put(p, thread);
        e->thread = thread;
    }
    return p;
}

static inline uint8_t *put_addr(mp_enc_t *e, uint8_t *p, uint64_t addr)
{
    p += mp_varint_put(p, mp_zigzag((int64_t)(addr - e->prev_addr)));
    e->prev_addr = addr;
    return p;
}

int mp_enc_alloc(mp_enc_t *e, uint32_t thread, unsigned allocator, uint64_t addr, uint64_t size,
                 uint32_t stack)
{
    if (MP_UNLIKELY(mp_enc_room(e) < MP_ENC_FIXED_MAX))
        return MEMPROF_ENOSPACE;
    uint8_t *p = switch_thread(e, e->buf + e->len, thread);
    *p++ = tag(MEMPROF_R_ALLOC, allocator);
    p = put_addr(e, p, addr);
    p += mp_varint_put(p, size);
    p += mp_varint_put(p, mp_zigzag((int64_t)stack - (int64_t)e->prev_stack));
    e->prev_stack = stack;
    e->len = (size_t)(p - e->buf);
    return 0;
}

static int addr_record(mp_enc_t *e, uint32_t thread, unsigned type, unsigned arg, uint64_t addr)
{
    if (MP_UNLIKELY(mp_enc_room(e) < MP_ENC_FIXED_MAX))
        return MEMPROF_ENOSPACE;
    uint8_t *p = switch_thread(e, e->buf + e->len, thread);
    *p++ = tag(type, arg);
    p = put_addr(e, p, addr);
    e->len = (size_t)(p - e->buf);
    return 0;
}

int mp_enc_free(mp_enc_t *e, uint32_t thread, unsigned deallocator, uint64_t addr)
{
    return addr_record(e, thread, MEMPROF_R_FREE, deallocator, addr);
}

int mp_enc_restore(mp_enc_t *e, uint32_t thread, uint64_t addr)
{
    return addr_record(e, thread, MEMPROF_R_RESTORE, 0, addr);
}

int mp_enc_thread_new(mp_enc_t *e, uint32_t thread, uint64_t tid)
{
    if (mp_enc_room(e) < MP_ENC_FIXED_MAX)
        return MEMPROF_ENOSPACE;
    uint8_t *p = e->buf + e->len;
    *p++ = tag(MEMPROF_R_THREAD, MEMPROF_THREAD_NEW);
    p += mp_varint_put(p, tid);
    e->thread = thread;
    e->len = (size_t)(p - e->buf);
    return 0;
}

int mp_enc_string(mp_enc_t *e, const void *s, size_t n)
{
    if (mp_enc_room(e) < 1 + MP_VARINT_MAX + n)
        return MEMPROF_ENOSPACE;
    uint8_t *p = e->buf + e->len;
    *p++ = tag(MEMPROF_R_STRING, 0);
    p += mp_varint_put(p, n);
    memcpy(p, s, n);
    e->len = (size_t)(p + n - e->buf);
    return 0;
}

int mp_enc_code(mp_enc_t *e, unsigned flags, uint32_t filename, uint32_t qualname,
                uint32_t firstlineno, const void *linetable, size_t lt_len)
{
    if (mp_enc_room(e) < 1 + 4 * MP_VARINT_MAX + lt_len)
        return MEMPROF_ENOSPACE;
    uint8_t *p = e->buf + e->len;
    *p++ = tag(MEMPROF_R_CODE, flags);
    p += mp_varint_put(p, filename);
    p += mp_varint_put(p, qualname);
    p += mp_varint_put(p, firstlineno);
    p += mp_varint_put(p, lt_len);
    if (lt_len)
        memcpy(p, linetable, lt_len);
    e->len = (size_t)(p + lt_len - e->buf);
    return 0;
}

int mp_enc_node(mp_enc_t *e, uint32_t id, uint32_t parent, uint32_t code, uint32_t instr)
{
    if (mp_enc_room(e) < MP_ENC_FIXED_MAX)
        return MEMPROF_ENOSPACE;
    uint8_t *p = e->buf + e->len;
    *p++ = tag(MEMPROF_R_NODE, 0);
    p += mp_varint_put(p, (uint64_t)id - parent); /* parents come before children: >= 1 */
    p += mp_varint_put(p, code);
    p += mp_varint_put(p, instr);
    e->len = (size_t)(p - e->buf);
    return 0;
}

int mp_enc_time(mp_enc_t *e, uint64_t us, uint64_t rss_kib)
{
    if (mp_enc_room(e) < MP_ENC_FIXED_MAX)
        return MEMPROF_ENOSPACE;
    uint8_t *p = e->buf + e->len;
    *p++ = tag(MEMPROF_R_TIME, 0);
    p += mp_varint_put(p, us);
    p += mp_varint_put(p, rss_kib);
    e->len = (size_t)(p - e->buf);
    return 0;
}

int mp_enc_mark(mp_enc_t *e, unsigned kind, uint64_t us)
{
    if (mp_enc_room(e) < MP_ENC_FIXED_MAX)
        return MEMPROF_ENOSPACE;
    uint8_t *p = e->buf + e->len;
    *p++ = tag(MEMPROF_R_MARK, kind);
    p += mp_varint_put(p, us);
    e->len = (size_t)(p - e->buf);
    return 0;
}

size_t mp_tlv_varint(uint8_t *p, unsigned tag_, uint64_t v)
{
    uint8_t tmp[MP_VARINT_MAX];
    size_t n = mp_varint_put(tmp, v);
    return mp_tlv_bytes(p, tag_, tmp, n);
}

size_t mp_tlv_bytes(uint8_t *p, unsigned tag_, const void *d, size_t n)
{
    size_t k = 0;
    p[k++] = (uint8_t)tag_;
    k += mp_varint_put(p + k, n);
    if (n)
        memcpy(p + k, d, n);
    return k + n;
}

size_t mp_header_seal(uint8_t *buf, size_t tlv_len)
{
    memcpy(buf, MEMPROF_MAGIC, MEMPROF_MAGIC_LEN);
    mp_put_le16(buf + 8, MEMPROF_FORMAT_MAJOR);
    mp_put_le16(buf + 10, MEMPROF_FORMAT_MINOR);
    mp_put_le32(buf + 12, (uint32_t)tlv_len);
    size_t n = MEMPROF_HEADER_FIXED + tlv_len;
    mp_put_le32(buf + n, mp_xxh32(buf, n, 0));
    return n + 4;
}

size_t mp_trailer_seal(uint8_t *buf, size_t tlv_len)
{
    memcpy(buf, MEMPROF_TRAILER_MAGIC, MEMPROF_MAGIC_LEN);
    mp_put_le32(buf + 8, (uint32_t)tlv_len);
    size_t n = MP_TRAILER_FIXED + tlv_len;
    mp_put_le32(buf + n, mp_xxh32(buf, n, 0));
    return n + 4;
}

size_t mp_lz4f_header(uint8_t *out)
{
    mp_put_le32(out, MEMPROF_LZ4F_MAGIC);
    out[4] = MEMPROF_LZ4F_FLG;
    out[5] = MEMPROF_LZ4F_BD;
    out[6] = (uint8_t)(mp_xxh32(out + 4, 2, 0) >> 8);
    return MP_LZ4F_HEADER_LEN;
}

size_t mp_lz4f_block_bound(size_t n) { return 8 + (size_t)LZ4_COMPRESSBOUND(n); }

size_t mp_lz4f_block(void *state, const uint8_t *src, size_t n, uint8_t *dst)
{
    int c = LZ4_compress_fast_extState(state, (const char *)src, (char *)dst + 4, (int)n,
                                       LZ4_COMPRESSBOUND((int)n), 1);
    uint32_t size;
    if (c > 0 && (size_t)c < n) {
        size = (uint32_t)c;
        mp_put_le32(dst, size);
    } else { /* incompressible: store as is, as the frame format allows */
        size = (uint32_t)n;
        memcpy(dst + 4, src, n);
        mp_put_le32(dst, size | MEMPROF_LZ4F_UNCOMPRESSED);
    }
    mp_put_le32(dst + 4 + size, mp_xxh32(dst + 4, size, 0));
    return 8 + size;
}

size_t mp_lz4f_end(uint8_t *out)
{
    mp_put_le32(out, 0);
    return 4;
}
