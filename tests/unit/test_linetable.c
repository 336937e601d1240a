/* test_linetable.c - mp_linetable_line (the recorder's line lookup, run
 * once per new stack node) against CPython 3.11 itself: for every code unit
 * of every case in linetable_cases.h (generated from real code objects by
 * gen_linetable_cases.py) the line co_positions() reported. Also: the lines
 * count from the first line the caller gives, a cut or garbage table never
 * reads past its end and answers -1 where it has no entry, and every line
 * of every case survives a capture's NODE record. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "linetable.h"
#include "linetable_cases.h"
#include "memprof/format.h"
#include "memprof/reader.h"
#include "mp_common.h"
#include "testkit.h"

/* A heap copy of exactly n bytes, so that ASan sees a read past the end. */
static uint8_t *exact_copy(const lt_case_t *k, size_t n)
{
    uint8_t *mem = malloc(n ? n : 1);
    memcpy(mem, k->linetable, n);
    return mem;
}

static int line_of(const lt_case_t *k, const uint8_t *table, size_t n, uint32_t unit)
{
    return mp_linetable_line(table, n, (int)k->firstlineno, unit);
}

Test(linetable, every_unit_of_every_case)
{
    size_t checked = 0;
    for (size_t i = 0; i < MP_ARRAY_LEN(lt_cases); i++) {
        const lt_case_t *k = &lt_cases[i];
        uint8_t *mem = exact_copy(k, k->linetable_len);
        for (uint32_t u = 0; u < k->units; u++) {
            int got = line_of(k, mem, k->linetable_len, u);
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

Test(linetable, lines_count_from_the_first_line)
{
    /* the table holds deltas: another first line moves every line by as much */
    for (size_t i = 0; i < MP_ARRAY_LEN(lt_cases); i++) {
        const lt_case_t *k = &lt_cases[i];
        for (uint32_t u = 0; u < k->units; u++) {
            int want = k->lines[u] == -1 ? -1 : k->lines[u] + 1000;
            cr_assert_eq(mp_linetable_line(k->linetable, k->linetable_len, (int)k->firstlineno + 1000, u), want,
                         "%s, unit %u", k->name, u);
        }
    }
}

Test(linetable, past_the_last_unit)
{
    for (size_t i = 0; i < MP_ARRAY_LEN(lt_cases); i++) {
        const lt_case_t *k = &lt_cases[i];
        uint32_t units = (uint32_t)k->units;
        cr_assert_eq(line_of(k, k->linetable, k->linetable_len, units), -1, "%s", k->name);
        cr_assert_eq(line_of(k, k->linetable, k->linetable_len, units + 1000), -1, "%s", k->name);
        cr_assert_eq(line_of(k, k->linetable, k->linetable_len, UINT32_MAX), -1, "%s", k->name);
    }
}

Test(linetable, empty_table)
{
    cr_assert_eq(mp_linetable_line(NULL, 0, 42, 0), -1);
    cr_assert_eq(mp_linetable_line(NULL, 0, 42, 5), -1);
    cr_assert_eq(mp_linetable_line((const uint8_t *)"", 0, 0, 0), -1);
}

/* Cut after `n` bytes: units covered by the entries wholly inside the cut
 * keep CPython's line (a later entry can only add units after them). */
Test(linetable, cut_tables)
{
    for (size_t i = 0; i < MP_ARRAY_LEN(lt_cases); i++) {
        const lt_case_t *k = &lt_cases[i];
        for (size_t n = 0; n < k->linetable_len; n++) {
            uint8_t *mem = exact_copy(k, n);
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
                cr_assert_eq(line_of(k, mem, n, u), k->lines[u], "%s cut to %zu, unit %u", k->name, n, u);
            /* the entry the cut went through may still give its line; nothing after it does */
            for (uint32_t u = whole; u < started; u++) {
                int got = line_of(k, mem, n, u);
                cr_assert(got == -1 || got == k->lines[u], "%s cut to %zu, unit %u: %d", k->name, n, u, got);
            }
            for (uint32_t u = started > whole ? started : whole; u < k->units + 4; u++)
                cr_assert_eq(line_of(k, mem, n, u), -1, "%s cut to %zu, unit %u", k->name, n, u);
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
        int first = (int)(x % 5000);
        /* at most 8 units per entry byte: nothing can be covered past n * 8 */
        for (uint32_t u = 0; u < n * 8 + 4; u++) {
            int got = mp_linetable_line(t, n, first, u);
            cr_assert_geq(got, -1);
        }
        cr_assert_eq(mp_linetable_line(t, n, first, (uint32_t)(n * 8)), -1, "round %d", round);
        free(t);
    }
}

Test(linetable, continuation_bytes_where_an_entry_should_start)
{
    /* a table that starts with an operand byte: no entry, no line */
    static const uint8_t t[] = {0x05, 0x80, 0x00};
    cr_assert_eq(mp_linetable_line(t, sizeof t, 10, 0), -1);
    /* a long-form entry whose varint never ends */
    static const uint8_t u[] = {0xf0, 0x7f, 0x7f, 0x7f};
    cr_assert_eq(mp_linetable_line(u, sizeof u, 10, 0), -1);
    /* one short entry of 8 units: lines for 0..7, none for 8 */
    static const uint8_t v[] = {0x87, 0x01};
    for (uint32_t i = 0; i < 8; i++)
        cr_assert_eq(mp_linetable_line(v, sizeof v, 10, i), 10);
    cr_assert_eq(mp_linetable_line(v, sizeof v, 10, 8), -1);
}

Test(linetable, line_cannot_go_negative)
{
    /* first line 1, then a long-form delta of -5: no such line */
    static const uint8_t t[] = {0x80, 0x00, 0xf0, 0x0b, 0x00, 0x00, 0x00};
    cr_assert_eq(mp_linetable_line(t, sizeof t, 1, 0), 1);
    cr_assert_eq(mp_linetable_line(t, sizeof t, 1, 1), -1);
}

Test(linetable, line_cannot_pass_int32_max)
{
    /* a first line near the top, then a delta of +2 (one-line form, code 12) */
    static const uint8_t t[] = {0x80, 0x00, 0xe0, 0x00, 0x00};
    cr_assert_eq(mp_linetable_line(t, sizeof t, INT32_MAX - 2, 0), INT32_MAX - 2);
    cr_assert_eq(mp_linetable_line(t, sizeof t, INT32_MAX - 2, 1), INT32_MAX);
    cr_assert_eq(mp_linetable_line(t, sizeof t, INT32_MAX - 1, 1), -1);
}

Test(linetable, lines_survive_the_capture)
{
    /* what the recorder does for each new stack node: the line of the
     * frame's instruction, written relative to the code's first line, and
     * what the reader gives back for the node */
    tk_capture_t c;
    tk_begin(&c, 4096);
    uint32_t fn = tk_string(&c, "cases.py");
    uint32_t codes[MP_ARRAY_LEN(lt_cases)], first_node[MP_ARRAY_LEN(lt_cases)];
    for (size_t i = 0; i < MP_ARRAY_LEN(lt_cases); i++) {
        const lt_case_t *k = &lt_cases[i];
        codes[i] = tk_code(&c, 0, fn, tk_string(&c, k->name), k->firstlineno);
        first_node[i] = c.nnodes + 1;
        for (uint32_t u = 0; u < k->units; u++)
            tk_node(&c, u ? c.nnodes : 0, codes[i], line_of(k, k->linetable, k->linetable_len, u));
    }
    tk_finish(&c);
    memprof_reader_t *r = tk_open(c.data, c.len);
    memprof_event_t ev;
    cr_assert_eq(memprof_reader_next(r, &ev), 0, "%s", memprof_reader_error(r));
    cr_assert_eq(memprof_reader_node_count(r), c.nnodes);
    for (size_t i = 0; i < MP_ARRAY_LEN(lt_cases); i++) {
        const lt_case_t *k = &lt_cases[i];
        for (uint32_t u = 0; u < k->units; u++) {
            uint32_t parent, code;
            int32_t line;
            cr_assert_eq(memprof_reader_node(r, first_node[i] + u, &parent, &code, &line), 0);
            cr_assert(parent == (u ? first_node[i] + u - 1 : 0) && code == codes[i], "%s, unit %u", k->name, u);
            cr_assert_eq(line, k->lines[u], "%s, unit %u: line %d, CPython says %d", k->name, u, line, k->lines[u]);
        }
    }
    memprof_reader_close(r);
    tk_close(&c);
}
