/* symfixture.cpp - the code test_symbolize.c symbolizes: a C++ shared
 * object built with -g -O0 (and copies of it: stripped, with separate debug
 * info), and the same source as a non-PIE program (MPFIX_MAIN) for ET_EXEC.
 * Each probe calls mpfix_here() on a known line and hands back that call's
 * return address and the line (__LINE__ on the same line as the call), so
 * the test knows exactly what the symbolizer must answer. */
#include <cstdint>
#include <cstdio>

#define MPFIX_API extern "C" __attribute__((visibility("default")))
#define MPFIX_NOINLINE __attribute__((noinline))

/* The return address of the call to it. */
MPFIX_API MPFIX_NOINLINE void *mpfix_here(void)
{
    return __builtin_return_address(0);
}

namespace mpfix {

struct __attribute__((visibility("default"))) Widget {
    int size;
    void *ra;
    int line;
    int grow(int by);
};

MPFIX_NOINLINE int Widget::grow(int by)
{
    size += by;
    ra = mpfix_here(); line = __LINE__;
    return size;
}

}  // namespace mpfix

/* Internal linkage: only in .symtab, so the stripped copy has no name for it. */
static MPFIX_NOINLINE void local_helper(void **ra, int *line)
{
    *ra = mpfix_here(); *line = __LINE__;
}

/* Inlined even at -O0: DWARF has an inlined_subroutine for it. */
static inline __attribute__((always_inline)) void inlined_probe(void **ra, int *line)
{
    *ra = mpfix_here(); *line = __LINE__;
}

MPFIX_API MPFIX_NOINLINE int mpfix_plain(void)
{
    return 42;
}

MPFIX_API MPFIX_NOINLINE void mpfix_probe_grow(void **ra, int *line)
{
    mpfix::Widget w = {1, nullptr, 0};
    w.grow(2);
    *ra = w.ra;
    *line = w.line;
}

MPFIX_API MPFIX_NOINLINE void mpfix_probe_local(void **ra, int *line)
{
    local_helper(ra, line);
}

/* *line: the line in inlined_probe; *call_line: where it is called, here. */
MPFIX_API MPFIX_NOINLINE void mpfix_probe_inline(void **ra, int *line, int *call_line)
{
    inlined_probe(ra, line); *call_line = __LINE__;
}

#ifdef MPFIX_MAIN
/* Prints the grow probe: "<return address in hex> <line>". */
int main(void)
{
    void *ra;
    int line;
    mpfix_probe_grow(&ra, &line);
    std::printf("%jx %d\n", (uintmax_t)(uintptr_t)ra, line);
    return 0;
}
#endif
