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
    e->prev_allocator = MEMPROF_A_MALLOC;
    e->thread = 0;
    memset(e->allocated, 0, sizeof e->allocated);
    memset(e->freed, 0, sizeof e->freed);
    memset(e->allocated_lo, 0, sizeof e->allocated_lo);
    memset(e->freed_lo, 0, sizeof e->freed_lo);
    e->nalloc = e->nfree = 0;
}

int mp_enc_free_range(mp_enc_t *e, uint32_t thread, unsigned deallocator, uint64_t addr, uint64_t len)
{
    if (MP_UNLIKELY(mp_enc_room(e) < MP_ENC_FIXED_MAX))
        return MEMPROF_ENOSPACE;
    uint8_t *p = mp_enc_switch_thread(e, e->buf + e->len, thread);
    *p++ = mp_enc_tag(MEMPROF_R_FREE, deallocator);
    p = mp_enc_put_addr(e, p, addr);
    p += mp_varint_put(p, len);
    mp_enc_ring_put(e->freed, e->freed_lo, &e->nfree, addr);
    e->len = (size_t)(p - e->buf);
    return 0;
}

int mp_enc_restore(mp_enc_t *e, uint32_t thread, uint64_t addr)
{
    if (MP_UNLIKELY(mp_enc_room(e) < MP_ENC_FIXED_MAX))
        return MEMPROF_ENOSPACE;
    uint8_t *p = mp_enc_switch_thread(e, e->buf + e->len, thread);
    *p++ = mp_enc_tag(MEMPROF_R_RESTORE, 0);
    p = mp_enc_put_addr(e, p, addr);
    e->len = (size_t)(p - e->buf);
    return 0;
}

int mp_enc_thread_new(mp_enc_t *e, uint32_t thread, uint64_t tid)
{
    if (mp_enc_room(e) < MP_ENC_FIXED_MAX)
        return MEMPROF_ENOSPACE;
    uint8_t *p = e->buf + e->len;
    *p++ = mp_enc_tag(MEMPROF_R_THREAD, MEMPROF_THREAD_NEW);
    p += mp_varint_put(p, tid);
    e->thread = thread;
    e->len = (size_t)(p - e->buf);
    return 0;
}

int mp_enc_thread_name(mp_enc_t *e, uint32_t thread, uint32_t name)
{
    if (mp_enc_room(e) < MP_ENC_FIXED_MAX)
        return MEMPROF_ENOSPACE;
    uint8_t *p = e->buf + e->len;
    *p++ = mp_enc_tag(MEMPROF_R_THREAD, MEMPROF_THREAD_NAME);
    p += mp_varint_put(p, thread);
    p += mp_varint_put(p, name);
    e->len = (size_t)(p - e->buf);
    return 0;
}

int mp_enc_string(mp_enc_t *e, const void *s, size_t n)
{
    if (mp_enc_room(e) < 1 + MP_VARINT_MAX + n)
        return MEMPROF_ENOSPACE;
    uint8_t *p = e->buf + e->len;
    *p++ = mp_enc_tag(MEMPROF_R_STRING, 0);
    p += mp_varint_put(p, n);
    memcpy(p, s, n);
    e->len = (size_t)(p + n - e->buf);
    return 0;
}

int mp_enc_code(mp_enc_t *e, unsigned flags, uint32_t filename, uint32_t qualname, uint32_t firstlineno)
{
    if (mp_enc_room(e) < MP_ENC_FIXED_MAX)
        return MEMPROF_ENOSPACE;
    uint8_t *p = e->buf + e->len;
    *p++ = mp_enc_tag(MEMPROF_R_CODE, flags);
    p += mp_varint_put(p, filename);
    p += mp_varint_put(p, qualname);
    p += mp_varint_put(p, firstlineno);
    e->len = (size_t)(p - e->buf);
    return 0;
}

int mp_enc_node(mp_enc_t *e, uint32_t id, uint32_t parent, uint32_t code, int32_t line, uint32_t firstlineno)
{
    if (mp_enc_room(e) < MP_ENC_FIXED_MAX)
        return MEMPROF_ENOSPACE;
    uint8_t *p = e->buf + e->len;
    *p++ = mp_enc_tag(MEMPROF_R_NODE, 0);
    p += mp_varint_put(p, (uint64_t)id - parent); /* parents come before children: >= 1 */
    p += mp_varint_put(p, code);
    p += mp_varint_put(p, line < 0 ? 0 : mp_zigzag((int64_t)line - firstlineno) + 1);
    e->len = (size_t)(p - e->buf);
    return 0;
}

int mp_enc_node_native(mp_enc_t *e, uint32_t id, uint32_t parent, uint32_t module, uint64_t offset)
{
    if (mp_enc_room(e) < MP_ENC_FIXED_MAX)
        return MEMPROF_ENOSPACE;
    uint8_t *p = e->buf + e->len;
    *p++ = mp_enc_tag(MEMPROF_R_NODE, MEMPROF_NODE_NATIVE);
    p += mp_varint_put(p, (uint64_t)id - parent);
    p += mp_varint_put(p, module);
    p += mp_varint_put(p, offset);
    e->len = (size_t)(p - e->buf);
    return 0;
}

int mp_enc_module(mp_enc_t *e, uint32_t id, uint64_t bias, uint32_t path, const uint8_t *build_id,
                  size_t build_len, const uint64_t *segs, unsigned nseg)
{
    if (mp_enc_room(e) < MP_ENC_FIXED_MAX + build_len + (size_t)nseg * 2 * MP_VARINT_MAX)
        return MEMPROF_ENOSPACE;
    uint8_t *p = e->buf + e->len;
    *p++ = mp_enc_tag(MEMPROF_R_MODULE, MEMPROF_MODULE_LOAD);
    p += mp_varint_put(p, id);
    p += mp_varint_put(p, bias);
    p += mp_varint_put(p, path);
    p += mp_varint_put(p, build_len);
    if (build_len) /* build_id may be NULL then */
        memcpy(p, build_id, build_len);
    p += build_len;
    p += mp_varint_put(p, nseg);
    for (unsigned i = 0; i < 2 * nseg; i++)
        p += mp_varint_put(p, segs[i]);
    e->len = (size_t)(p - e->buf);
    return 0;
}

int mp_enc_module_unload(mp_enc_t *e, uint32_t id)
{
    if (mp_enc_room(e) < MP_ENC_FIXED_MAX)
        return MEMPROF_ENOSPACE;
    uint8_t *p = e->buf + e->len;
    *p++ = mp_enc_tag(MEMPROF_R_MODULE, MEMPROF_MODULE_UNLOAD);
    p += mp_varint_put(p, id);
    e->len = (size_t)(p - e->buf);
    return 0;
}

int mp_enc_time(mp_enc_t *e, uint64_t us, uint64_t rss_kib)
{
    if (mp_enc_room(e) < MP_ENC_FIXED_MAX)
        return MEMPROF_ENOSPACE;
    uint8_t *p = e->buf + e->len;
    *p++ = mp_enc_tag(MEMPROF_R_TIME, 0);
    p += mp_varint_put(p, us);
    p += mp_varint_put(p, rss_kib);
    e->len = (size_t)(p - e->buf);
    return 0;
}

int mp_enc_aggregate(mp_enc_t *e, unsigned kind, const uint64_t *fields, unsigned n)
{
    if (kind > 15 || n > MEMPROF_AGG_FIELDS_MAX || mp_enc_room(e) < 1 + (size_t)(n + 1) * MP_VARINT_MAX)
        return MEMPROF_ENOSPACE;
    uint8_t *p = e->buf + e->len;
    *p++ = mp_enc_tag(MEMPROF_R_AGGREGATE, kind);
    p += mp_varint_put(p, n);
    for (unsigned i = 0; i < n; i++)
        p += mp_varint_put(p, fields[i]);
    e->len = (size_t)(p - e->buf);
    return 0;
}

int mp_enc_mark(mp_enc_t *e, unsigned kind, uint64_t us)
{
    if (mp_enc_room(e) < MP_ENC_FIXED_MAX)
        return MEMPROF_ENOSPACE;
    uint8_t *p = e->buf + e->len;
    *p++ = mp_enc_tag(MEMPROF_R_MARK, kind);
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

size_t mp_lz4f_block(void *stream, const uint8_t *src, size_t n, uint8_t *dst)
{
    int c = stream ? LZ4_compress_fast_continue(stream, (const char *)src, (char *)dst + 4, (int)n,
                                                LZ4_COMPRESSBOUND((int)n), 1)
                   : 0;
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
