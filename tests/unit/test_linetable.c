/* test_linetable.c - memprof_code_line against CPython 3.11 itself: for
 * every code unit of every case in linetable_cases.h (generated from real
 * code objects by gen_linetable_cases.py) the line co_positions() reported.
 * Also: pseudo-frames have no line, and a cut or garbage table never reads
 * past its end and answers -1 where it has no entry. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "linetable_cases.h"
#include "mp_common.h"
#include "memprof/format.h"
#include "memprof/reader.h"

static memprof_code_t code_of(const lt_case_t *k)
{
    return (memprof_code_t){1, 2, k->firstlineno, 0, k->linetable, k->linetable_len};
}

/* A heap copy of exactly n bytes, so that ASan sees a read past the end. */
static memprof_code_t exact_copy(const lt_case_t *k, size_t n, uint8_t **mem)
{
    *mem = malloc(n ? n : 1);
    memcpy(*mem, k->linetable, n);
    memprof_code_t co = code_of(k);
    co.linetable = *mem;
    co.linetable_len = n;
    return co;
}

Test(linetable, every_unit_of_every_case)
{
    size_t checked = 0;
    for (size_t i = 0; i < MP_ARRAY_LEN(lt_cases); i++) {
        const lt_case_t *k = &lt_cases[i];
        uint8_t *mem;
        memprof_code_t co = exact_copy(k, k->linetable_len, &mem);
        for (uint32_t u = 0; u < k->units; u++) {
            int got = memprof_code_line(&co, u);
            cr_assert_eq(got, k->lines[u], "%s, code unit %u: line %d, CPython says %d", k->name, u, got,
                         k->lines[u]);
            checked++;
        }
        free(mem);
    }
    cr_assert_eq(MP_ARRAY_LEN(lt_cases), 7);
    cr_assert_gt(checked, 300, "only %zu code units", checked);
}

Test(linetable, cases_cover_the_interesting_lines)
{
    /* the fixture holds what the tests claim to cover */
    int saw_none = 0, saw_300 = 0, saw_zero = 0;
    for (size_t i = 0; i < MP_ARRAY_LEN(lt_cases); i++) {
        for (size_t u = 0; u < lt_cases[i].units; u++) {
            saw_none |= lt_cases[i].lines[u] == -1;
            saw_300 |= lt_cases[i].lines[u] == 300;
            saw_zero |= lt_cases[i].lines[u] == 0;
        }
    }
    cr_assert(saw_none && saw_300 && saw_zero);
}

Test(linetable, past_the_last_unit)
{
    for (size_t i = 0; i < MP_ARRAY_LEN(lt_cases); i++) {
        memprof_code_t co = code_of(&lt_cases[i]);
        uint32_t units = (uint32_t)lt_cases[i].units;
        cr_assert_eq(memprof_code_line(&co, units), -1, "%s", lt_cases[i].name);
        cr_assert_eq(memprof_code_line(&co, units + 1000), -1, "%s", lt_cases[i].name);
        cr_assert_eq(memprof_code_line(&co, UINT32_MAX), -1, "%s", lt_cases[i].name);
    }
}

Test(linetable, pseudo_code_has_no_line)
{
    for (size_t i = 0; i < MP_ARRAY_LEN(lt_cases); i++) {
        memprof_code_t co = code_of(&lt_cases[i]);
        co.flags = MEMPROF_CODE_PSEUDO;
        for (uint32_t u = 0; u < lt_cases[i].units; u++)
            cr_assert_eq(memprof_code_line(&co, u), -1, "%s, unit %u", lt_cases[i].name, u);
    }
    memprof_code_t empty = {1, 1, 0, MEMPROF_CODE_PSEUDO, NULL, 0};
    cr_assert_eq(memprof_code_line(&empty, 0), -1);
}

Test(linetable, empty_table)
{
    memprof_code_t co = {1, 1, 42, 0, NULL, 0};
    cr_assert_eq(memprof_code_line(&co, 0), -1);
    cr_assert_eq(memprof_code_line(&co, 5), -1);
}

/* Cut after `n` bytes: units covered by the entries wholly inside the cut
 * keep CPython's line (a later entry can only add units after them). */
Test(linetable, cut_tables)
{
    for (size_t i = 0; i < MP_ARRAY_LEN(lt_cases); i++) {
        const lt_case_t *k = &lt_cases[i];
        for (size_t n = 0; n < k->linetable_len; n++) {
            uint8_t *mem;
            memprof_code_t co = exact_copy(k, n, &mem);
            /* units of the entries that end before the cut (the next starts at or before it) */
            uint32_t whole = 0, started = 0, units = 0;
            for (size_t b = 0; b < k->linetable_len; b++) {
                if (!(k->linetable[b] & 0x80))
                    continue;
                if (b <= n)
                    whole = units;
                units += (k->linetable[b] & 7) + 1;
                if (b < n)
                    started = units;
            }
            cr_assert_eq(units, k->units, "%s: entries cover %u units", k->name, units);
            for (uint32_t u = 0; u < whole; u++)
                cr_assert_eq(memprof_code_line(&co, u), k->lines[u], "%s cut to %zu, unit %u", k->name, n, u);
            /* the entry the cut went through may still give its line; nothing after it does */
            for (uint32_t u = whole; u < started; u++) {
                int got = memprof_code_line(&co, u);
                cr_assert(got == -1 || got == k->lines[u], "%s cut to %zu, unit %u: %d", k->name, n, u, got);
            }
            for (uint32_t u = started > whole ? started : whole; u < k->units + 4; u++)
                cr_assert_eq(memprof_code_line(&co, u), -1, "%s cut to %zu, unit %u", k->name, n, u);
            free(mem);
        }
    }
}

Test(linetable, garbage_tables_stay_in_bounds)
{
    uint32_t x = 2463534242u;
    for (int round = 0; round < 2000; round++) {
        size_t n = (size_t)round % 40;
        uint8_t *t = malloc(n ? n : 1);
        for (size_t j = 0; j < n; j++) {
            x ^= x << 13, x ^= x >> 17, x ^= x << 5;
            t[j] = (uint8_t)x;
        }
        memprof_code_t co = {1, 1, x % 5000, 0, t, n};
        /* at most 8 units per entry byte: nothing can be covered past n * 8 */
        for (uint32_t u = 0; u < n * 8 + 4; u++) {
            int got = memprof_code_line(&co, u);
            cr_assert_geq(got, -1);
        }
        cr_assert_eq(memprof_code_line(&co, (uint32_t)(n * 8)), -1, "round %d", round);
        free(t);
    }
}

Test(linetable, continuation_bytes_where_an_entry_should_start)
{
    /* a table that starts with an operand byte: no entry, no line */
    static const uint8_t t[] = {0x05, 0x80, 0x00};
    memprof_code_t co = {1, 1, 10, 0, t, sizeof t};
    cr_assert_eq(memprof_code_line(&co, 0), -1);
    /* a long-form entry whose varint never ends */
    static const uint8_t u[] = {0xf0, 0x7f, 0x7f, 0x7f};
    co.linetable = u;
    co.linetable_len = sizeof u;
    cr_assert_eq(memprof_code_line(&co, 0), -1);
    /* one short entry of 8 units: lines for 0..7, none for 8 */
    static const uint8_t v[] = {0x87, 0x01};
    co.linetable = v;
    co.linetable_len = sizeof v;
    for (uint32_t i = 0; i < 8; i++)
        cr_assert_eq(memprof_code_line(&co, i), 10);
    cr_assert_eq(memprof_code_line(&co, 8), -1);
}

Test(linetable, line_cannot_go_negative)
{
    /* first line 1, then a long-form delta of -5: no such line */
    static const uint8_t t[] = {0x80, 0x00, 0xf0, 0x0b, 0x00, 0x00, 0x00};
    memprof_code_t co = {1, 1, 1, 0, t, sizeof t};
    cr_assert_eq(memprof_code_line(&co, 0), 1);
    cr_assert_eq(memprof_code_line(&co, 1), -1);
}
