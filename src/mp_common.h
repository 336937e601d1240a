/* mp_common.h - the one internal header for branch hints, attributes and the
 * little-endian/varint helpers shared by the writer (inside the profiled
 * process) and the reader. Everything here is inline and allocation-free. */
#ifndef MP_COMMON_H
#define MP_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MP_LIKELY(x) __builtin_expect(!!(x), 1)
#define MP_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define MP_NOINLINE __attribute__((noinline))
#define MP_ALWAYS_INLINE inline __attribute__((always_inline))
#define MP_COLD __attribute__((cold))
#define MP_UNUSED __attribute__((unused))
#define MP_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Longest varint: 10 bytes for a 64-bit value. */
#define MP_VARINT_MAX 10

static inline uint64_t mp_zigzag(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }
static inline int64_t mp_unzigzag(uint64_t v) { return (int64_t)(v >> 1) ^ -(int64_t)(v & 1); }

/* LEB128: 7 bits a byte, low first. Returns the bytes written. */
static inline size_t mp_varint_put(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* Decode from [*p, end). Returns 0, or -1 if the varint is cut or longer
 * than 10 bytes or overflows 64 bits. Advances *p on success. */
static inline int mp_varint_get(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
    const uint8_t *q = *p;
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (q >= end)
            return -1;
        uint8_t b = *q++;
        if (shift == 63 && b > 1)
            return -1;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *p = q;
            *out = v;
            return 0;
        }
    }
    return -1;
}

static inline void mp_put_le16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void mp_put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static inline uint16_t mp_get_le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t mp_get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

#endif
