/* linetable.c - instruction offset -> source line, from a code object's
 * co_linetable in CPython 3.11's location-table format (Objects/locations.md):
 * entries of one start byte (bit 7 set, bits 3-6 a code, bits 0-2 the length
 * in code units minus one) followed by the code's operands. The table comes
 * from another process's memory, so it is read defensively: a cut entry
 * ends the walk. */
#include "linetable.h"

enum { LT_SHORT_MAX = 9, LT_ONE_LINE0 = 10, LT_ONE_LINE2 = 12, LT_NO_COLUMNS = 13, LT_LONG = 14, LT_NONE = 15 };

/* 6-bit chunk varint, bit 6 = more. Returns -1 if cut or too long. */
static int scan_varint(const uint8_t **p, const uint8_t *end, uint32_t *out)
{
    uint32_t v = 0;
    for (unsigned shift = 0; shift < 32; shift += 6) {
        if (*p >= end)
            return -1;
        uint8_t b = *(*p)++;
        v |= (uint32_t)(b & 63) << shift;
        if (!(b & 64)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

static int scan_svarint(const uint8_t **p, const uint8_t *end, int32_t *out)
{
    uint32_t u;
    if (scan_varint(p, end, &u))
        return -1;
    *out = (u & 1) ? -(int32_t)(u >> 1) : (int32_t)(u >> 1);
    return 0;
}

int mp_linetable_line(const uint8_t *table, size_t len, int firstlineno, uint32_t instr)
{
    const uint8_t *p = table, *end = p + len;
    int64_t line = firstlineno;
    uint64_t start = 0;
    while (p < end) {
        uint8_t first = *p++;
        if (!(first & 0x80))
            return -1;
        unsigned kind = (first >> 3) & 15;
        uint64_t stop = start + (first & 7) + 1;
        int32_t delta = 0;
        int has_line = kind != LT_NONE;
        if (kind == LT_LONG || kind == LT_NO_COLUMNS) {
            if (scan_svarint(&p, end, &delta))
                return -1;
        } else if (kind >= LT_ONE_LINE0 && kind <= LT_ONE_LINE2) {
            delta = (int32_t)(kind - LT_ONE_LINE0);
        }
        line += delta;
        if (instr >= start && instr < stop)
            return has_line && line >= 0 && line <= INT32_MAX ? (int)line : -1;
        /* skip the operands up to the next start byte */
        while (p < end && !(*p & 0x80))
            p++;
        start = stop;
    }
    return -1;
}
