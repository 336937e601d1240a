/* test_xxhash.c - mp_xxh32 against known XXH32 values. The expected values
 * come from the reference implementation (python-xxhash 3.x, xxh32 with
 * the given seed); the table of prefixes covers every tail length (0..15
 * bytes after the 16-byte stripes) with 0, 1, 2, 3 and 4 stripes. */
#include <criterion/criterion.h>
#include <string.h>

#include "mp_common.h"
#include "xxhash32.h"

typedef struct {
    const char *s;
    uint32_t seed, want;
} vector_t;

static const vector_t vectors[] = {
    {"", 0, 0x02CC5D05u},
    {"a", 0, 0x550D7456u},
    {"abc", 0, 0x32D153FFu},
    {"abc", 1, 0xAA3DA8FFu},
    {"abc", 0xFFFFFFFFu, 0xB22B1420u},
    {"0123456789abcdef", 0, 0xC2C45B69u},
    {"0123456789abcdefg", 0, 0xCC79B217u},
    {"Nobody inspects the spammish repetition", 0, 0xE2293B2Fu},
    {"0123456789abcdef0123456789abcdef", 0, 0xEB888D30u},
    {"0123456789abcdef0123456789abcdef!", 0xFFFFFFFFu, 0x315FF6CEu},
};

Test(xxh32, known_vectors)
{
    for (size_t i = 0; i < MP_ARRAY_LEN(vectors); i++) {
        const vector_t *v = &vectors[i];
        uint32_t got = mp_xxh32(v->s, strlen(v->s), v->seed);
        cr_assert_eq(got, v->want, "xxh32(\"%s\", %#x) = %#x, want %#x", v->s, v->seed, got, v->want);
    }
}

/* pattern[i] = i * 7 + 3 */
static void pattern(uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(i * 7 + 3);
}

Test(xxh32, long_input)
{
    uint8_t b[100];
    pattern(b, sizeof b);
    cr_assert_eq(mp_xxh32(b, sizeof b, 0), 0x73091A4Du);
    cr_assert_eq(mp_xxh32(b, sizeof b, 0x9E3779B1u), 0x037B139Bu);
}

static const uint32_t prefix_seed = 0x12345678u;
static const uint32_t prefix_want[65] = {
    0xBD209070, 0xFE935803, 0xE556CAFF, 0x0F037E5D, 0x48D9327F, 0x8F7B910C, 0xFE4FB852, 0xAB1335E0,
    0x8DB1AB33, 0x1B4FEE75, 0x96B7F2AE, 0x1ABA3E3C, 0xAE3D497D, 0xB4558EFA, 0xBAA77D01, 0x3843AEB1,
    0xAFA7C98A, 0x0DA0568C, 0x8D7B909A, 0xC70E8221, 0x76F35720, 0x5B4F6099, 0x08FC83DC, 0x7CD9AD21,
    0x242D7E28, 0x432B7731, 0x954309DA, 0x0E877F52, 0x4997893F, 0x5885751B, 0xB0B51ABD, 0x1E3F127F,
    0x68C8438C, 0x5B22A35C, 0x595FD56A, 0xC489A4B3, 0xB256C911, 0x5BF70F75, 0xA871DD50, 0x38C2D342,
    0x79BD1FA0, 0x65B2B338, 0x4A25BBAD, 0xA48401F8, 0x1B1BEE52, 0xDC0173EB, 0x071EE0D9, 0x9A906E9E,
    0xAB8E6C38, 0xFCE0F60B, 0xABCB16A0, 0x913984A9, 0x026307C5, 0xB1CA0542, 0x6E43D0C6, 0x97694FC1,
    0xE0E2D5D7, 0x3587B82D, 0x1A655147, 0xD08C766F, 0x7F59461C, 0x7B58D69C, 0x88B827F7, 0x456E5E63,
    0x747DA816,
};

Test(xxh32, every_prefix_length)
{
    uint8_t b[64];
    pattern(b, sizeof b);
    for (size_t n = 0; n <= 64; n++)
        cr_assert_eq(mp_xxh32(b, n, prefix_seed), prefix_want[n], "length %zu", n);
}

Test(xxh32, unaligned_input)
{
    /* the same bytes at every alignment give the same hash */
    uint8_t buf[64 + 8];
    for (size_t off = 0; off < 8; off++) {
        pattern(buf + off, 64);
        cr_assert_eq(mp_xxh32(buf + off, 64, prefix_seed), prefix_want[64], "offset %zu", off);
        cr_assert_eq(mp_xxh32(buf + off, 37, prefix_seed), prefix_want[37], "offset %zu", off);
    }
}

Test(xxh32, single_byte_changes_always_change_the_hash)
{
    /* The reader relies on this: one flipped byte in a block is caught. */
    uint8_t b[40];
    pattern(b, sizeof b);
    uint32_t base = mp_xxh32(b, sizeof b, 0);
    for (size_t i = 0; i < sizeof b; i++) {
        for (unsigned x = 1; x < 256; x++) {
            b[i] ^= (uint8_t)x;
            cr_assert_neq(mp_xxh32(b, sizeof b, 0), base, "byte %zu ^ %#x", i, x);
            b[i] ^= (uint8_t)x;
        }
    }
}
