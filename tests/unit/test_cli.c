/* test_cli.c - what the programs parse: sizes (check's limits, diff's
 * threshold; pytest-memray's spellings). */
#include <criterion/criterion.h>
#include <stdint.h>

#include "report.h"

Test(parse_size, units_are_powers_of_1024)
{
    static const struct {
        const char *s;
        uint64_t v;
    } ok[] = {
        {"0", 0},          {"4096", 4096},           {"4096B", 4096},
        {"1K", 1024},      {"1KB", 1024},            {"1kib", 1024},
        {"24 MB", 24ull << 20}, {"24MiB", 24ull << 20}, {"1.5GB", 3ull << 29},
        {"2gib", 2ull << 30}, {"1TB", 1ull << 40},   {".5KB", 512},
        {"17MiB", 17825792}, {"0.1KB", 102},         {"3.", 3},
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        uint64_t v = 1;
        cr_expect_eq(mp_parse_size(ok[i].s, &v), 0, "'%s' refused", ok[i].s);
        cr_expect_eq(v, ok[i].v, "'%s' read as %llu", ok[i].s, (unsigned long long)v);
    }
}

Test(parse_size, refuses_what_is_not_a_size)
{
    static const char *bad[] = {"", "MB", "-1", "-1MB", "+1MB", " 1MB", "1MBB", "1 XB", "1iB", "1KiBs", "1e6",
                                "0x10", "1.2.3", ".", "9999999PB", "99999999999TB", "nan", "inf", "1 M B"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        uint64_t v = 7;
        cr_expect_eq(mp_parse_size(bad[i], &v), -1, "'%s' accepted", bad[i]);
        cr_expect_eq(v, 7, "'%s' wrote a value", bad[i]);
    }
    cr_expect_eq(mp_parse_size(NULL, NULL), -1);
}
