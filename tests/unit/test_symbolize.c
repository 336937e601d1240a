/* test_symbolize.c - mp_symbolizer against objects built from
 * symfixture.cpp: the shared object (with debug info), its stripped copy,
 * its copy with debug info apart (.gnu_debuglink) and the non-PIE program.
 * The shared object is dlopen'ed and its probes run, so each check compares
 * with a real return address and the line __LINE__ gave for that call:
 * demangled names, file and line, the line of the returned function when
 * code was inlined, names from .dynsym alone, offsets of an ET_EXEC, and the
 * failures: unknown ids, missing files, files that are not ELF, build ids
 * that differ from the recorded ones. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "memprof/memprof.h"
#include "symbolize.h"

#define BUILD_ID_MAX 64

typedef struct {
    void *handle;
    uint64_t bias;
    uint8_t build_id[BUILD_ID_MAX];
    size_t build_id_len;
} fixture_t;

typedef void (*probe_fn)(void **ra, int *line);
typedef void (*probe_inline_fn)(void **ra, int *line, int *call_line);

/* ---- the fixture, loaded ---- */

static size_t build_id_in_notes(const uint8_t *p, size_t n, uint8_t *out)
{
    size_t at = 0;
    ElfW(Nhdr) h;
    while (n - at >= sizeof h) {
        memcpy(&h, p + at, sizeof h);
        size_t name = (h.n_namesz + 3u) & ~(size_t)3, desc = (h.n_descsz + 3u) & ~(size_t)3;
        const uint8_t *q = p + at + sizeof h;
        if (h.n_type == NT_GNU_BUILD_ID && h.n_namesz == 4 && !memcmp(q, "GNU", 4) && h.n_descsz <= BUILD_ID_MAX) {
            memcpy(out, q + name, h.n_descsz);
            return h.n_descsz;
        }
        if (name + desc > n - at - sizeof h)
            break;
        at += sizeof h + name + desc;
    }
    return 0;
}

/* dl_iterate_phdr callback: the build id of the object loaded at f->bias. */
static int find_build_id(struct dl_phdr_info *info, size_t size, void *arg)
{
    fixture_t *f = arg;
    (void)size;
    if ((uint64_t)info->dlpi_addr != f->bias)
        return 0;
    for (int i = 0; i < info->dlpi_phnum && !f->build_id_len; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_NOTE)
            f->build_id_len =
                build_id_in_notes((const uint8_t *)(info->dlpi_addr + ph->p_vaddr), ph->p_memsz, f->build_id);
    }
    return 1;
}

static fixture_t fixture_open(void)
{
    fixture_t f = {0};
    f.handle = dlopen(MPFIX_LIB, RTLD_NOW | RTLD_LOCAL);
    cr_assert(f.handle, "dlopen: %s", dlerror());
    struct link_map *lm = NULL;
    cr_assert_eq(dlinfo(f.handle, RTLD_DI_LINKMAP, &lm), 0);
    f.bias = lm->l_addr;
    cr_assert_neq(f.bias, 0, "the fixture is ET_DYN, its load bias is not 0");
    dl_iterate_phdr(find_build_id, &f);
    cr_assert_geq(f.build_id_len, 8, "the fixture has a GNU build id");
    return f;
}

static void *fixture_sym(const fixture_t *f, const char *name)
{
    void *p = dlsym(f->handle, name);
    cr_assert(p, "dlsym %s: %s", name, dlerror());
    return p;
}

/* Runs a probe: the offset of its return address, and its line. */
static uint64_t probe(const fixture_t *f, const char *name, int *line)
{
    probe_fn fn = (probe_fn)fixture_sym(f, name);
    void *ra = NULL;
    fn(&ra, line);
    cr_assert_gt(*line, 0);
    return (uint64_t)(uintptr_t)ra - f->bias;
}

/* Offset and size of an exported function. */
static uint64_t function_offset(const fixture_t *f, const char *name, uint64_t *size)
{
    void *addr = fixture_sym(f, name);
    Dl_info info;
    const ElfW(Sym) *sym = NULL;
    cr_assert(dladdr1(addr, &info, (void **)&sym, RTLD_DL_SYMENT) && sym);
    *size = sym->st_size;
    cr_assert_gt(*size, 1);
    return (uint64_t)(uintptr_t)addr - f->bias;
}

/* ---- helpers ---- */

static mp_symbolizer_t *one_module(uint32_t id, const char *path, const uint8_t *build_id, size_t len)
{
    mp_symbolizer_t *s = mp_symbolizer_new();
    cr_assert(s);
    cr_assert_eq(mp_symbolizer_add_module(s, id, path, 0x7f0000000000ull, build_id, len), 0);
    return s;
}

static mp_symbol_t lookup(mp_symbolizer_t *s, uint32_t id, uint64_t offset)
{
    mp_symbol_t sym;
    memset(&sym, 0xa5, sizeof sym);
    int rc = mp_symbolizer_lookup(s, id, offset, &sym);
    cr_assert_eq(rc, 0, "lookup %u+%#llx: %s", id, (unsigned long long)offset, memprof_strerror(rc));
    cr_assert_eq(sym.offset, offset);
    return sym;
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static void expect_function(const mp_symbol_t *sym, const char *function)
{
    cr_assert(sym->function, "no function at %#llx, expected %s", (unsigned long long)sym->offset, function);
    cr_expect_str_eq(sym->function, function);
}

static void expect_source(const mp_symbol_t *sym, int line)
{
    cr_assert(sym->file, "no file for %s", sym->function ? sym->function : "?");
    cr_expect_str_eq(base_name(sym->file), "symfixture.cpp");
    cr_expect_eq(sym->line, line, "%s: line %d, expected %d", sym->function, sym->line, line);
}

static void expect_nothing(const mp_symbol_t *sym)
{
    cr_expect_null(sym->function);
    cr_expect_null(sym->file);
    cr_expect_eq(sym->line, 0);
}

/* ---- names, files, lines ---- */

Test(symbolize, cxx_member_function_demangled_with_its_line)
{
    fixture_t f = fixture_open();
    int line;
    uint64_t off = probe(&f, "mpfix_probe_grow", &line);
    mp_symbolizer_t *s = one_module(3, MPFIX_LIB, f.build_id, f.build_id_len);
    mp_symbol_t sym = lookup(s, 3, off);
    expect_function(&sym, "mpfix::Widget::grow(int)");
    expect_source(&sym, line);
    cr_expect_str_eq(sym.module, MPFIX_LIB);
    cr_expect_null(mp_symbolizer_module_problem(s, 3));
    mp_symbolizer_free(s);
}

Test(symbolize, static_function_from_symtab)
{
    fixture_t f = fixture_open();
    int line;
    uint64_t off = probe(&f, "mpfix_probe_local", &line);
    mp_symbolizer_t *s = one_module(1, MPFIX_LIB, NULL, 0);
    mp_symbol_t sym = lookup(s, 1, off);
    expect_function(&sym, "local_helper(void**, int*)");
    expect_source(&sym, line);
    mp_symbolizer_free(s);
}

Test(symbolize, c_function)
{
    fixture_t f = fixture_open();
    uint64_t size, start = function_offset(&f, "mpfix_plain", &size);
    mp_symbolizer_t *s = one_module(1, MPFIX_LIB, NULL, 0);
    mp_symbol_t sym = lookup(s, 1, start + 1);
    expect_function(&sym, "mpfix_plain");
    cr_assert(sym.file);
    cr_expect_str_eq(base_name(sym.file), "symfixture.cpp");
    cr_expect_gt(sym.line, 0);
    mp_symbolizer_free(s);
}

/* A return address just past a function's last instruction (a call there
 * never returns) belongs to that function; one at a function's first byte
 * belongs to what comes before it. */
Test(symbolize, return_address_looks_up_the_byte_before)
{
    fixture_t f = fixture_open();
    uint64_t size, start = function_offset(&f, "mpfix_plain", &size);
    mp_symbolizer_t *s = one_module(1, MPFIX_LIB, NULL, 0);
    mp_symbol_t end = lookup(s, 1, start + size);
    expect_function(&end, "mpfix_plain");
    mp_symbol_t first = lookup(s, 1, start);
    cr_expect(!first.function || strcmp(first.function, "mpfix_plain") != 0, "got %s", first.function);
    mp_symbol_t zero = lookup(s, 1, 0);
    expect_nothing(&zero);
    mp_symbolizer_free(s);
}

/* Inlined code: the lookup answers with the outer function and its own
 * line (the call site); the chain has the inlined function and its line. */
Test(symbolize, inlined_call_gives_the_outer_function_and_its_line)
{
    fixture_t f = fixture_open();
    probe_inline_fn fn = (probe_inline_fn)fixture_sym(&f, "mpfix_probe_inline");
    void *ra = NULL;
    int line = 0, call_line = 0;
    fn(&ra, &line, &call_line);
    cr_assert(line > 0 && call_line > line);
    uint64_t off = (uint64_t)(uintptr_t)ra - f.bias;
    mp_symbolizer_t *s = one_module(1, MPFIX_LIB, NULL, 0);
    mp_symbol_t sym = lookup(s, 1, off);
    expect_function(&sym, "mpfix_probe_inline");
    expect_source(&sym, call_line);

    const mp_symbol_t *frames = NULL;
    size_t n = 0;
    cr_assert_eq(mp_symbolizer_lookup_inline(s, 1, off, &frames, &n), 0);
    cr_assert_eq(n, 2);
    /* internal linkage: no DW_AT_linkage_name, DWARF has the plain name */
    expect_function(&frames[0], "inlined_probe");
    expect_source(&frames[0], line);
    cr_expect_eq(frames[0].offset, off);
    cr_expect_str_eq(frames[0].module, MPFIX_LIB);
    cr_expect_eq(frames[1].function, sym.function, "the last frame is the lookup's answer");
    cr_expect_eq(frames[1].file, sym.file);
    cr_expect_eq(frames[1].line, sym.line);

    uint64_t size, start = function_offset(&f, "mpfix_plain", &size);
    cr_assert_eq(mp_symbolizer_lookup_inline(s, 1, start + 1, &frames, &n), 0);
    cr_expect_eq(n, 1, "no inlining there");
    expect_function(&frames[0], "mpfix_plain");
    mp_symbolizer_free(s);
}

/* ---- other kinds of files ---- */

Test(symbolize, stripped_copy_has_exported_names_only)
{
    fixture_t f = fixture_open();
    int line, local_line;
    uint64_t grow = probe(&f, "mpfix_probe_grow", &line);
    uint64_t local = probe(&f, "mpfix_probe_local", &local_line);
    uint64_t size, plain = function_offset(&f, "mpfix_plain", &size);
    mp_symbolizer_t *s = one_module(2, MPFIX_STRIPPED, f.build_id, f.build_id_len);
    mp_symbol_t sym = lookup(s, 2, grow);
    expect_function(&sym, "mpfix::Widget::grow(int)");
    cr_expect_null(sym.file);
    cr_expect_eq(sym.line, 0);
    cr_expect_str_eq(sym.module, MPFIX_STRIPPED);
    sym = lookup(s, 2, plain + 1);
    expect_function(&sym, "mpfix_plain");
    cr_expect_null(sym.file);
    sym = lookup(s, 2, local);
    expect_nothing(&sym);
    cr_expect_null(mp_symbolizer_module_problem(s, 2), "same build id as the unstripped object");
    mp_symbolizer_free(s);
}

Test(symbolize, separate_debug_info_through_debuglink)
{
    fixture_t f = fixture_open();
    int line;
    uint64_t off = probe(&f, "mpfix_probe_grow", &line);
    mp_symbolizer_t *s = one_module(1, MPFIX_DEBUGLINK, f.build_id, f.build_id_len);
    mp_symbol_t sym = lookup(s, 1, off);
    expect_function(&sym, "mpfix::Widget::grow(int)");
    expect_source(&sym, line);
    mp_symbolizer_free(s);
}

static int elf_type(const char *path)
{
    Elf64_Ehdr eh;
    FILE *fp = fopen(path, "rb");
    cr_assert(fp);
    cr_assert_eq(fread(&eh, sizeof eh, 1, fp), 1);
    fclose(fp);
    return eh.e_type;
}

/* A non-PIE program: load bias 0, offsets are absolute addresses. */
Test(symbolize, non_pie_executable)
{
    cr_assert_eq(elf_type(MPFIX_EXE), ET_EXEC, "the fixture program must be ET_EXEC for this test");
    FILE *p = popen(MPFIX_EXE, "r");
    cr_assert(p);
    unsigned long long ra = 0;
    int line = 0;
    cr_assert_eq(fscanf(p, "%llx %d", &ra, &line), 2);
    cr_assert_eq(pclose(p), 0);
    mp_symbolizer_t *s = mp_symbolizer_new();
    cr_assert(s);
    cr_assert_eq(mp_symbolizer_add_module(s, 1, MPFIX_EXE, 0, NULL, 0), 0);
    mp_symbol_t sym = lookup(s, 1, ra);
    expect_function(&sym, "mpfix::Widget::grow(int)");
    expect_source(&sym, line);
    mp_symbolizer_free(s);
}

/* The same offsets in two modules: each module is looked up apart. */
Test(symbolize, modules_may_overlap)
{
    fixture_t f = fixture_open();
    int line;
    uint64_t off = probe(&f, "mpfix_probe_grow", &line);
    mp_symbolizer_t *s = mp_symbolizer_new();
    cr_assert(s);
    cr_assert_eq(mp_symbolizer_add_module(s, 7, MPFIX_LIB, f.bias, NULL, 0), 0);
    cr_assert_eq(mp_symbolizer_add_module(s, 8, MPFIX_STRIPPED, f.bias, NULL, 0), 0);
    mp_symbol_t a = lookup(s, 7, off), b = lookup(s, 8, off);
    expect_source(&a, line);
    cr_expect_null(b.file);
    cr_expect_eq(a.function, b.function, "the same name, interned once");
    cr_expect_str_eq(b.module, MPFIX_STRIPPED);
    mp_symbolizer_free(s);
}

/* ---- failures ---- */

Test(symbolize, bad_ids)
{
    mp_symbolizer_t *s = mp_symbolizer_new();
    cr_assert(s);
    uint8_t long_id[MP_SYMBOLIZER_BUILD_ID_MAX + 1] = {1};
    cr_expect_eq(mp_symbolizer_add_module(s, 0, MPFIX_LIB, 0, NULL, 0), MEMPROF_EINVAL);
    cr_expect_eq(mp_symbolizer_add_module(s, 1, NULL, 0, NULL, 0), MEMPROF_EINVAL);
    cr_expect_eq(mp_symbolizer_add_module(s, 1, MPFIX_LIB, 0, long_id, sizeof long_id), MEMPROF_EINVAL);
    cr_expect_eq(mp_symbolizer_add_module(s, 1, MPFIX_LIB, 0, NULL, 0), 0);
    cr_expect_eq(mp_symbolizer_add_module(s, 1, MPFIX_STRIPPED, 0, NULL, 0), MEMPROF_EINVAL, "id 1 twice");
    cr_expect_eq(mp_symbolizer_add_module(s, UINT32_MAX, MPFIX_STRIPPED, 0, NULL, 0), 0);

    mp_symbol_t sym;
    const mp_symbol_t *frames;
    size_t n;
    cr_expect_eq(mp_symbolizer_lookup(s, 2, 0x1000, &sym), MEMPROF_EINVAL);
    cr_expect_eq(mp_symbolizer_lookup(s, 0, 0x1000, &sym), MEMPROF_EINVAL);
    cr_expect_eq(mp_symbolizer_lookup_inline(s, 2, 0x1000, &frames, &n), MEMPROF_EINVAL);
    cr_expect_eq(mp_symbolizer_load(s, 2), MEMPROF_EINVAL);
    cr_expect_null(mp_symbolizer_module_problem(s, 2));
    cr_expect_eq(mp_symbolizer_lookup(s, UINT32_MAX, 0x1000, &sym), 0);
    cr_expect_str_eq(sym.module, MPFIX_STRIPPED);
    mp_symbolizer_free(s);
    mp_symbolizer_free(NULL);
}

Test(symbolize, missing_file)
{
    const char *path = "/nonexistent/memprof/libgone.so";
    mp_symbolizer_t *s = one_module(5, path, NULL, 0);
    cr_expect_null(mp_symbolizer_module_problem(s, 5), "not opened before the first lookup");
    mp_symbol_t sym = lookup(s, 5, 0x1234);
    expect_nothing(&sym);
    cr_expect_str_eq(sym.module, path);
    const char *why = mp_symbolizer_module_problem(s, 5);
    cr_assert(why);
    cr_expect(strstr(why, path) && strstr(why, "No such file"), "problem: %s", why);
    cr_expect_null(strchr(why, '\n'));
    cr_expect_eq(mp_symbolizer_module_problem(s, 5), why, "the same string each time");
    mp_symbolizer_free(s);
}

Test(symbolize, load_opens_before_any_lookup)
{
    mp_symbolizer_t *s = mp_symbolizer_new();
    cr_assert(s);
    cr_assert_eq(mp_symbolizer_add_module(s, 1, "/nonexistent/memprof/a.so", 0, NULL, 0), 0);
    cr_assert_eq(mp_symbolizer_add_module(s, 2, MPFIX_LIB, 0, NULL, 0), 0);
    cr_expect_eq(mp_symbolizer_load(s, 1), 0);
    cr_expect_eq(mp_symbolizer_load(s, 2), 0);
    cr_expect_not_null(mp_symbolizer_module_problem(s, 1));
    cr_expect_null(mp_symbolizer_module_problem(s, 2));
    mp_symbolizer_free(s);
}

Test(symbolize, not_an_elf_file)
{
    mp_symbolizer_t *s = one_module(1, MPFIX_SOURCE, NULL, 0);
    mp_symbol_t sym = lookup(s, 1, 0x40);
    expect_nothing(&sym);
    const char *why = mp_symbolizer_module_problem(s, 1);
    cr_assert(why);
    cr_expect(strstr(why, "symfixture.cpp") && strstr(why, "ELF"), "problem: %s", why);
    mp_symbolizer_free(s);
}

Test(symbolize, build_id_differs)
{
    fixture_t f = fixture_open();
    int line;
    uint64_t off = probe(&f, "mpfix_probe_grow", &line);
    uint8_t other[BUILD_ID_MAX];
    memcpy(other, f.build_id, f.build_id_len);
    other[f.build_id_len - 1] ^= 1;
    mp_symbolizer_t *s = mp_symbolizer_new();
    cr_assert(s);
    cr_assert_eq(mp_symbolizer_add_module(s, 1, MPFIX_LIB, f.bias, other, f.build_id_len), 0);
    cr_assert_eq(mp_symbolizer_add_module(s, 2, MPFIX_LIB, f.bias, f.build_id, f.build_id_len - 1), 0);
    cr_assert_eq(mp_symbolizer_add_module(s, 3, MPFIX_LIB, f.bias, f.build_id, f.build_id_len), 0);
    for (uint32_t id = 1; id <= 2; id++) {
        mp_symbol_t sym = lookup(s, id, off);
        expect_nothing(&sym);
        const char *why = mp_symbolizer_module_problem(s, id);
        cr_assert(why, "module %u", id);
        cr_expect(strstr(why, "build id") && strstr(why, MPFIX_LIB), "problem: %s", why);
    }
    mp_symbol_t sym = lookup(s, 3, off);
    expect_function(&sym, "mpfix::Widget::grow(int)");
    cr_expect_null(mp_symbolizer_module_problem(s, 3));
    mp_symbolizer_free(s);
}

/* ---- the cache ---- */

Test(symbolize, answers_are_cached_and_stay_valid)
{
    fixture_t f = fixture_open();
    int line;
    uint64_t off = probe(&f, "mpfix_probe_grow", &line);
    mp_symbolizer_t *s = one_module(1, MPFIX_LIB, NULL, 0);
    mp_symbol_t first = lookup(s, 1, off);
    mp_symbol_t again = lookup(s, 1, off);
    cr_assert(first.function && first.file);
    cr_expect_eq(again.function, first.function);
    cr_expect_eq(again.file, first.file);
    char *name = strdup(first.function), *file = strdup(first.file);
    cr_assert(name && file);
    /* every offset of the first 64 KiB, and more modules: tables grow */
    size_t named = 0;
    for (uint64_t o = 1; o <= 0x10000; o++)
        named += lookup(s, 1, o).function != NULL;
    cr_expect_gt(named, 100);
    for (uint32_t id = 2; id < 200; id++)
        cr_assert_eq(mp_symbolizer_add_module(s, id, id % 2 ? MPFIX_LIB : "/nonexistent/x.so", 0, NULL, 0), 0);
    for (uint32_t id = 2; id < 200; id += 17)
        cr_expect_eq(lookup(s, id, off).line, id % 2 ? line : 0);
    mp_symbol_t last = lookup(s, 1, off);
    cr_expect_eq(last.function, first.function);
    cr_expect_str_eq(first.function, name);
    cr_expect_str_eq(first.file, file);
    cr_expect_eq(last.line, line);
    free(name);
    free(file);
    mp_symbolizer_free(s);
}
