/* test_varint.c - LEB128 varints and zigzag (src/mp_common.h): exact byte
 * encodings, round trips at the edges, and the decoder's refusals (cut,
 * longer than 10 bytes, overflowing the 10th byte) without moving *p. */
#include <criterion/criterion.h>
#include <stdint.h>

#include "mp_common.h"

static const uint64_t edge_values[] = {
    0, 1, 63, 64, 127, 128, 129, 255, 256, 16383, 16384, 0x1fffff, 0x200000, UINT32_MAX,
    (uint64_t)UINT32_MAX + 1, (1ull << 56) - 1, 1ull << 56, (1ull << 63) - 1, 1ull << 63, UINT64_MAX - 1, UINT64_MAX,
};

static size_t expected_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

Test(varint, known_encodings)
{
    uint8_t b[MP_VARINT_MAX];
    cr_assert_eq(mp_varint_put(b, 0), 1);
    cr_assert_eq(b[0], 0x00);
    cr_assert_eq(mp_varint_put(b, 127), 1);
    cr_assert_eq(b[0], 0x7f);
    cr_assert_eq(mp_varint_put(b, 128), 2);
    cr_assert(b[0] == 0x80 && b[1] == 0x01);
    cr_assert_eq(mp_varint_put(b, 300), 2);
    cr_assert(b[0] == 0xac && b[1] == 0x02);
    cr_assert_eq(mp_varint_put(b, UINT64_MAX), 10);
    for (int i = 0; i < 9; i++)
        cr_assert_eq(b[i], 0xff, "byte %d", i);
    cr_assert_eq(b[9], 0x01);
}

Test(varint, round_trip_edges)
{
    for (size_t i = 0; i < MP_ARRAY_LEN(edge_values); i++) {
        uint8_t b[MP_VARINT_MAX + 2] = {0};
        uint64_t v = edge_values[i], got = 0xdeadbeef;
        size_t n = mp_varint_put(b, v);
        cr_assert_eq(n, expected_len(v), "length of %llu", (unsigned long long)v);
        const uint8_t *p = b;
        cr_assert_eq(mp_varint_get(&p, b + n, &got), 0, "decode %llu", (unsigned long long)v);
        cr_assert_eq(got, v);
        cr_assert_eq(p, b + n, "decode of %llu must consume exactly %zu bytes", (unsigned long long)v, n);
    }
}

Test(varint, round_trip_every_bit_position)
{
    for (unsigned s = 0; s < 64; s++) {
        uint64_t vs[3] = {1ull << s, (1ull << s) - 1, ~0ull >> s};
        for (int k = 0; k < 3; k++) {
            uint8_t b[MP_VARINT_MAX];
            uint64_t got;
            size_t n = mp_varint_put(b, vs[k]);
            const uint8_t *p = b;
            cr_assert_eq(mp_varint_get(&p, b + n, &got), 0);
            cr_assert_eq(got, vs[k], "value %#llx", (unsigned long long)vs[k]);
        }
    }
}

Test(varint, decodes_in_sequence)
{
    uint8_t b[4 * MP_VARINT_MAX];
    size_t n = 0;
    n += mp_varint_put(b + n, 5);
    n += mp_varint_put(b + n, UINT64_MAX);
    n += mp_varint_put(b + n, 128);
    const uint8_t *p = b, *end = b + n;
    uint64_t x;
    cr_assert(mp_varint_get(&p, end, &x) == 0 && x == 5);
    cr_assert(mp_varint_get(&p, end, &x) == 0 && x == UINT64_MAX);
    cr_assert(mp_varint_get(&p, end, &x) == 0 && x == 128);
    cr_assert_eq(p, end);
    cr_assert_eq(mp_varint_get(&p, end, &x), -1, "nothing left to decode");
}

Test(varint, rejects_every_cut)
{
    for (size_t i = 0; i < MP_ARRAY_LEN(edge_values); i++) {
        uint8_t b[MP_VARINT_MAX];
        size_t n = mp_varint_put(b, edge_values[i]);
        for (size_t cut = 0; cut < n; cut++) {
            const uint8_t *p = b;
            uint64_t x = 77;
            cr_assert_eq(mp_varint_get(&p, b + cut, &x), -1, "%llu cut to %zu bytes",
                         (unsigned long long)edge_values[i], cut);
            cr_assert_eq(p, b, "a failed decode must not advance");
            cr_assert_eq(x, 77, "a failed decode must not write its result");
        }
    }
}

Test(varint, rejects_eleven_bytes)
{
    uint8_t b[11];
    memset(b, 0x80, 10);
    b[10] = 0x00;
    const uint8_t *p = b;
    uint64_t x;
    cr_assert_eq(mp_varint_get(&p, b + sizeof b, &x), -1);
    cr_assert_eq(p, b);
    /* 10 continuation bytes with 1 in the last: still 11 bytes long */
    memset(b, 0xff, 9);
    b[9] = 0x81;
    b[10] = 0x00;
    cr_assert_eq(mp_varint_get(&p, b + sizeof b, &x), -1);
}

Test(varint, rejects_tenth_byte_overflow)
{
    static const uint8_t tenth[] = {0x02, 0x03, 0x7f, 0x40};
    for (size_t i = 0; i < MP_ARRAY_LEN(tenth); i++) {
        uint8_t b[MP_VARINT_MAX];
        memset(b, 0xff, 9);
        b[9] = tenth[i];
        const uint8_t *p = b;
        uint64_t x;
        cr_assert_eq(mp_varint_get(&p, b + sizeof b, &x), -1, "10th byte %#x", tenth[i]);
        cr_assert_eq(p, b);
    }
    /* 10th byte 0 or 1 fits: bit 63 clear or set */
    uint8_t ok[MP_VARINT_MAX];
    memset(ok, 0x80, 9);
    ok[9] = 0x01;
    const uint8_t *p = ok;
    uint64_t x;
    cr_assert_eq(mp_varint_get(&p, ok + sizeof ok, &x), 0);
    cr_assert_eq(x, 1ull << 63);
}

Test(varint, accepts_padded_encoding)
{
    /* Not canonical, but a valid LEB128 value: 0 in two bytes. */
    static const uint8_t b[] = {0x80, 0x00};
    const uint8_t *p = b;
    uint64_t x = 9;
    cr_assert_eq(mp_varint_get(&p, b + 2, &x), 0);
    cr_assert_eq(x, 0);
    cr_assert_eq(p, b + 2);
}

Test(zigzag, known_values)
{
    cr_assert_eq(mp_zigzag(0), 0);
    cr_assert_eq(mp_zigzag(-1), 1);
    cr_assert_eq(mp_zigzag(1), 2);
    cr_assert_eq(mp_zigzag(-2), 3);
    cr_assert_eq(mp_zigzag(2), 4);
    cr_assert_eq(mp_zigzag(INT64_MAX), UINT64_MAX - 1);
    cr_assert_eq(mp_zigzag(INT64_MIN), UINT64_MAX);
    cr_assert_eq(mp_unzigzag(UINT64_MAX), INT64_MIN);
    cr_assert_eq(mp_unzigzag(UINT64_MAX - 1), INT64_MAX);
    cr_assert_eq(mp_unzigzag(3), -2);
}

Test(zigzag, round_trip_through_varint)
{
    static const int64_t vs[] = {0, 1, -1, 63, -64, 64, -65, 127, 128, -128, INT32_MAX, INT32_MIN,
                                 INT64_MAX, INT64_MIN, INT64_MAX - 1, INT64_MIN + 1};
    for (size_t i = 0; i < MP_ARRAY_LEN(vs); i++) {
        uint8_t b[MP_VARINT_MAX];
        size_t n = mp_varint_put(b, mp_zigzag(vs[i]));
        const uint8_t *p = b;
        uint64_t u;
        cr_assert_eq(mp_varint_get(&p, b + n, &u), 0);
        cr_assert_eq(mp_unzigzag(u), vs[i], "value %lld", (long long)vs[i]);
    }
    /* small magnitudes stay small: one byte for -64..63 */
    cr_assert_eq(mp_varint_put((uint8_t[MP_VARINT_MAX]){0}, mp_zigzag(-64)), 1);
    cr_assert_eq(mp_varint_put((uint8_t[MP_VARINT_MAX]){0}, mp_zigzag(64)), 2);
}
