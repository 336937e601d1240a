/* symbolize.c - the offline native symbolizer (see symbolize.h) over
 * elfutils' libdwfl.
 *
 * Each module gets its own Dwfl (modules loaded at different times may
 * overlap in address), reported at base 0 with p_vaddr added: a module
 * address is then the recorded offset (return address - load bias) for
 * ET_DYN and ET_EXEC alike (for ET_EXEC, libdwfl ignores the base, the load
 * bias is 0 and offsets are absolute addresses). A module's file is opened
 * on its first lookup. Names come from the ELF symbol table libdwfl picks
 * (.symtab of the file or of its separate debug file, else .dynsym), sorted
 * once per module for a binary search, without symbol versions; lines from
 * DWARF (in the file or separate); an inline chain is read from the DIEs
 * that contain the address. Answers are cached in an
 * open-addressing table keyed by (module id, offset); every string is
 * interned in an arena the symbolizer owns, so what a lookup returns stays
 * valid until mp_symbolizer_free. Never prints, never exits.
 */
#include "symbolize.h"

#include <dwarf.h>
#include <elfutils/libdw.h>
#include <elfutils/libdwfl.h>
#include <limits.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mp_common.h"

/* The C++ runtime's demangler (libstdc++, <cxxabi.h>); the result is malloc'd. */
char *__cxa_demangle(const char *mangled, char *buf, size_t *len, int *status);

#define ARENA_CHUNK ((size_t)64 << 10)

typedef struct chunk_s {
    struct chunk_s *next;
    size_t used, cap;
    max_align_t data[];
} chunk_t;

typedef enum { MOD_UNOPENED, MOD_OPEN, MOD_BROKEN } mod_state_t;

/* A symbol in an executable section. libdwfl's own address lookup
 * (dwfl_module_addrinfo) scans the whole table for each address: 130 us of
 * the 196 us an uncached libc lookup took with it (46 us now, most of it
 * DWARF scopes; 0.7 us for python3.11 without debug info; cached: 0.04 us). */
typedef struct {
    uint64_t addr, size;
    const char *name;           /* the ELF file's string, valid while its Dwfl lives */
    int rank;                   /* preferred among aliases: global 2, weak 1, local 0 */
} fsym_t;

typedef struct {
    uint32_t id;
    mod_state_t state;
    const char *path;           /* interned */
    const uint8_t *build_id;    /* in the arena; build_id_len bytes */
    size_t build_id_len;
    uint64_t bias;              /* as recorded; lookups do not need it */
    Dwfl *dwfl;                 /* MOD_OPEN only */
    Dwfl_Module *mod;
    const char *problem;        /* MOD_BROKEN only */
    fsym_t *syms;               /* code symbols by address, built on first use */
    uint64_t *maxend;           /* maxend[i]: the highest end of syms[0..i] */
    size_t nsyms;
    int syms_built;
} module_t;

typedef struct {
    uint64_t offset;
    uint32_t id;                /* 0: empty slot */
    uint32_t depth;             /* frames in chain, >= 1 */
    const mp_symbol_t *chain;   /* innermost first; chain[depth - 1] is the answer */
} entry_t;

struct mp_symbolizer_s {
    chunk_t *chunks;            /* the current one first */
    const char **strs;          /* interned strings, open addressing */
    size_t nstr, capstr;
    module_t *mods;
    size_t nmod, capmod;
    uint32_t *modslot;          /* index in mods + 1 by id, open addressing */
    size_t capslot;
    entry_t *cache;             /* open addressing */
    size_t ncache, capcache;
};

static const Dwfl_Callbacks callbacks = {
    .find_elf = dwfl_build_id_find_elf,
    .find_debuginfo = dwfl_standard_find_debuginfo,
    .section_address = dwfl_offline_section_address,
};

/* ---- memory: arena, interned strings ---- */

static void *arena_alloc(mp_symbolizer_t *s, size_t size, size_t align)
{
    chunk_t *c = s->chunks;
    if (c) {
        size_t at = (c->used + align - 1) & ~(align - 1);
        if (at <= c->cap && size <= c->cap - at) {
            c->used = at + size;
            return (char *)c->data + at;
        }
    }
    if (size > SIZE_MAX / 2)
        return NULL;
    size_t cap = size > ARENA_CHUNK / 4 ? size : ARENA_CHUNK;
    chunk_t *n = malloc(sizeof *n + cap);
    if (!n)
        return NULL;
    n->cap = cap;
    n->used = size;
    if (c && cap != ARENA_CHUNK) {  /* a big one: keep filling the current chunk */
        n->next = c->next;
        c->next = n;
    } else {
        n->next = c;
        s->chunks = n;
    }
    return n->data;
}

static uint64_t mix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 33);
}

static uint64_t str_hash(const char *p)
{
    uint64_t h = 0xcbf29ce484222325ULL;  /* FNV-1a */
    while (*p)
        h = (h ^ (unsigned char)*p++) * 0x100000001b3ULL;
    return h;
}

/* The next power of two >= 16 that keeps n + 1 entries under half full, or
 * 0 if the table need not grow (or cannot). */
static size_t grown_cap(size_t n, size_t cap)
{
    if (2 * (n + 1) <= cap)
        return 0;
    size_t c = cap ? cap : 16;
    while (c < 2 * (n + 1) && c < SIZE_MAX / 4)
        c *= 2;
    return c;
}

static int strs_grow(mp_symbolizer_t *s, size_t cap)
{
    const char **t = calloc(cap, sizeof *t);
    if (!t)
        return MEMPROF_ENOMEM;
    for (size_t i = 0; i < s->capstr; i++) {
        if (!s->strs[i])
            continue;
        size_t j = str_hash(s->strs[i]) & (cap - 1);
        while (t[j])
            j = (j + 1) & (cap - 1);
        t[j] = s->strs[i];
    }
    free(s->strs);
    s->strs = t;
    s->capstr = cap;
    return 0;
}

/* The symbolizer's copy of str, one per distinct string; NULL on out of memory. */
static const char *intern(mp_symbolizer_t *s, const char *str)
{
    size_t cap = grown_cap(s->nstr, s->capstr);
    if (cap && strs_grow(s, cap))
        return NULL;
    size_t mask = s->capstr - 1, j = str_hash(str) & mask;
    for (; s->strs[j]; j = (j + 1) & mask)
        if (!strcmp(s->strs[j], str))
            return s->strs[j];
    size_t len = strlen(str) + 1;
    char *copy = arena_alloc(s, len, 1);
    if (!copy)
        return NULL;
    memcpy(copy, str, len);
    s->strs[j] = copy;
    s->nstr++;
    return copy;
}

/* Interned, demangled when it is a C++ (Itanium ABI) name. */
static const char *intern_demangled(mp_symbolizer_t *s, const char *raw)
{
    if (strncmp(raw, "_Z", 2) != 0)
        return intern(s, raw);
    int status = 0;
    char *d = __cxa_demangle(raw, NULL, NULL, &status);
    if (status == -1)
        return NULL;  /* out of memory; other failures keep the raw name */
    const char *r = intern(s, d && status == 0 ? d : raw);
    free(d);
    return r;
}

/* ---- modules ---- */

static module_t *module_find(const mp_symbolizer_t *s, uint32_t id)
{
    if (!s->capslot || !id)
        return NULL;
    size_t mask = s->capslot - 1;
    for (size_t j = mix64(id) & mask; s->modslot[j]; j = (j + 1) & mask)
        if (s->mods[s->modslot[j] - 1].id == id)
            return &s->mods[s->modslot[j] - 1];
    return NULL;
}

static void modslot_put(uint32_t *t, size_t cap, uint32_t id, uint32_t slot)
{
    size_t j = mix64(id) & (cap - 1);
    while (t[j])
        j = (j + 1) & (cap - 1);
    t[j] = slot;
}

/* Room for one more module in mods and modslot. */
static int modules_reserve(mp_symbolizer_t *s)
{
    if (s->nmod >= UINT32_MAX - 1)
        return MEMPROF_ENOMEM;
    if (s->nmod == s->capmod) {
        size_t cap = s->capmod ? 2 * s->capmod : 16;
        module_t *m = realloc(s->mods, cap * sizeof *m);
        if (!m)
            return MEMPROF_ENOMEM;
        s->mods = m;
        s->capmod = cap;
    }
    size_t cap = grown_cap(s->nmod, s->capslot);
    if (!cap)
        return 0;
    uint32_t *t = calloc(cap, sizeof *t);
    if (!t)
        return MEMPROF_ENOMEM;
    for (size_t i = 0; i < s->nmod; i++)
        modslot_put(t, cap, s->mods[i].id, (uint32_t)i + 1);
    free(s->modslot);
    s->modslot = t;
    s->capslot = cap;
    return 0;
}

int mp_symbolizer_add_module(mp_symbolizer_t *s, uint32_t id, const char *path, uint64_t bias,
                             const uint8_t *build_id, size_t build_id_len)
{
    if (!id || !path || build_id_len > MP_SYMBOLIZER_BUILD_ID_MAX || (build_id_len && !build_id) ||
        module_find(s, id))
        return MEMPROF_EINVAL;
    int rc = modules_reserve(s);
    if (rc)
        return rc;
    module_t m = {.id = id, .state = MOD_UNOPENED, .bias = bias, .build_id_len = build_id_len};
    m.path = intern(s, path);
    uint8_t *bid = build_id_len ? arena_alloc(s, build_id_len, 1) : NULL;
    if (!m.path || (build_id_len && !bid))
        return MEMPROF_ENOMEM;
    if (bid)
        memcpy(bid, build_id, build_id_len);
    m.build_id = bid;
    s->mods[s->nmod] = m;
    modslot_put(s->modslot, s->capslot, id, (uint32_t)++s->nmod);
    return 0;
}

static int set_problem(mp_symbolizer_t *s, module_t *m, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Marks m unusable, with a reason; 0, or MEMPROF_ENOMEM. */
static int set_problem(mp_symbolizer_t *s, module_t *m, const char *fmt, ...)
{
    if (m->dwfl)
        dwfl_end(m->dwfl);
    m->dwfl = NULL;
    m->mod = NULL;
    m->state = MOD_BROKEN;
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int len = vsnprintf(NULL, 0, fmt, ap);
    char *msg = len >= 0 ? arena_alloc(s, (size_t)len + 1, 1) : NULL;
    if (msg)
        vsnprintf(msg, (size_t)len + 1, fmt, ap2);
    va_end(ap2);
    va_end(ap);
    m->problem = msg ? msg : "cannot be symbolized (out of memory)";
    return msg ? 0 : MEMPROF_ENOMEM;
}

static void hex(char *out, const uint8_t *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

/* Compares the file's build id with the recorded one, when both exist. */
static int check_build_id(mp_symbolizer_t *s, module_t *m)
{
    const unsigned char *bits;
    GElf_Addr vaddr;
    int n = dwfl_module_build_id(m->mod, &bits, &vaddr);
    if (n <= 0 || !m->build_id_len || n > MP_SYMBOLIZER_BUILD_ID_MAX)
        return 0;
    if ((size_t)n == m->build_id_len && !memcmp(bits, m->build_id, m->build_id_len))
        return 0;
    char file_id[2 * MP_SYMBOLIZER_BUILD_ID_MAX + 1], recorded[2 * MP_SYMBOLIZER_BUILD_ID_MAX + 1];
    hex(file_id, bits, (size_t)n);
    hex(recorded, m->build_id, m->build_id_len);
    return set_problem(s, m, "%s: build id %s differs from the capture's %s (file replaced since the capture?)",
                       m->path, file_id, recorded);
}

/* Opens m's file if not done yet. 0 also when the file is unusable (then
 * m->state is MOD_BROKEN with a problem); MEMPROF_ENOMEM. */
static int module_ready(mp_symbolizer_t *s, module_t *m)
{
    if (m->state != MOD_UNOPENED)
        return 0;
    m->dwfl = dwfl_begin(&callbacks);
    if (!m->dwfl)
        return MEMPROF_ENOMEM;
    dwfl_report_begin(m->dwfl);
    m->mod = dwfl_report_elf(m->dwfl, m->path, m->path, -1, 0, true);
    if (!m->mod)
        return set_problem(s, m, "cannot read %s: %s", m->path, dwfl_errmsg(-1));
    if (dwfl_report_end(m->dwfl, NULL, NULL) != 0)
        return set_problem(s, m, "cannot load %s: %s", m->path, dwfl_errmsg(-1));
    m->state = MOD_OPEN;
    return check_build_id(s, m);
}

int mp_symbolizer_load(mp_symbolizer_t *s, uint32_t id)
{
    module_t *m = module_find(s, id);
    return m ? module_ready(s, m) : MEMPROF_EINVAL;
}

const char *mp_symbolizer_module_problem(const mp_symbolizer_t *s, uint32_t id)
{
    const module_t *m = module_find(s, id);
    return m && m->state == MOD_BROKEN ? m->problem : NULL;
}

/* ---- symbol tables ---- */

static int in_code(Elf *elf, GElf_Word shndx)
{
    GElf_Shdr shdr;
    Elf_Scn *scn = elf && shndx != SHN_UNDEF && shndx < SHN_LORESERVE ? elf_getscn(elf, shndx) : NULL;
    return scn && gelf_getshdr(scn, &shdr) && (shdr.sh_flags & SHF_EXECINSTR);
}

/* The symbol at ndx if it names code: FUNC, IFUNC or NOTYPE in an
 * executable section (not a mapping symbol such as "$x"). */
static int code_symbol(Dwfl_Module *mod, int ndx, fsym_t *out)
{
    GElf_Sym sym;
    GElf_Addr addr;
    GElf_Word shndx;
    Elf *elf = NULL;
    const char *name = dwfl_module_getsym_info(mod, ndx, &sym, &addr, &shndx, &elf, NULL);
    int type = GELF_ST_TYPE(sym.st_info), bind = GELF_ST_BIND(sym.st_info);
    if (!name || !*name || name[0] == '$' || !in_code(elf, shndx) ||
        (type != STT_FUNC && type != STT_GNU_IFUNC && type != STT_NOTYPE))
        return 0;
    *out = (fsym_t){addr, sym.st_size, name, bind == STB_LOCAL ? 0 : bind == STB_WEAK ? 1 : 2};
    return 1;
}

static size_t underscores(const char *p)
{
    size_t n = 0;
    while (p[n] == '_')
        n++;
    return n;
}

/* By address; at one address the preferred alias first: global, shorter
 * without the version ("malloc", not "__libc_malloc"; "__printf_fp_l", not
 * "__GI___printf_fp_l"), fewer leading underscores, then by name. */
static int by_addr(const void *x, const void *y)
{
    const fsym_t *a = x, *b = y;
    if (a->addr != b->addr)
        return a->addr < b->addr ? -1 : 1;
    if (a->rank != b->rank)
        return b->rank - a->rank;
    size_t la = strcspn(a->name, "@"), lb = strcspn(b->name, "@");
    if (la != lb)
        return la < lb ? -1 : 1;
    size_t ua = underscores(a->name), ub = underscores(b->name);
    if (ua != ub)
        return ua < ub ? -1 : 1;
    return strcmp(a->name, b->name);
}

/* Sorts m's code symbols, once (a module without a symbol table has none). */
static int syms_build(module_t *m)
{
    int n = dwfl_module_getsymtab(m->mod);
    if (n > 1) {
        m->syms = malloc((size_t)n * sizeof *m->syms);
        m->maxend = malloc((size_t)n * sizeof *m->maxend);
        if (!m->syms || !m->maxend) {
            free(m->syms);
            free(m->maxend);
            m->syms = NULL;
            m->maxend = NULL;
            return MEMPROF_ENOMEM;
        }
    }
    for (int i = 1; i < n; i++)
        m->nsyms += (size_t)code_symbol(m->mod, i, &m->syms[m->nsyms]);
    if (m->nsyms)
        qsort(m->syms, m->nsyms, sizeof *m->syms, by_addr);
    uint64_t end = 0;
    for (size_t i = 0; i < m->nsyms; i++) {
        uint64_t e = m->syms[i].addr + m->syms[i].size;
        end = e > end ? e : end;
        m->maxend[i] = end;
    }
    m->syms_built = 1;
    return 0;
}

/* The symbol covering pc: the sized one that starts closest before it,
 * else the closest sizeless one if no sized symbol lies between; NULL. */
static const char *symbol_at(const module_t *m, uint64_t pc)
{
    size_t lo = 0, hi = m->nsyms;  /* the first symbol after pc */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->syms[mid].addr <= pc)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (!lo)
        return NULL;
    const fsym_t *sizeless = m->syms[lo - 1].size ? NULL : &m->syms[lo - 1];
    for (size_t j = lo; j-- > 0 && m->maxend[j] > pc;) {
        const fsym_t *f = &m->syms[j];
        if (f->size && pc - f->addr < f->size) {
            while (j > 0 && m->syms[j - 1].addr == f->addr && pc - f->addr < m->syms[j - 1].size)
                f = &m->syms[--j];
            return f->name;
        }
    }
    while (sizeless && sizeless > m->syms && sizeless[-1].addr == sizeless->addr && !sizeless[-1].size)
        sizeless--;
    return sizeless ? sizeless->name : NULL;
}

/* ---- resolving one address ---- */

/* Sets out->function from a symbol or DIE name, without the symbol
 * version ("pthread_create@@GLIBC_2.34" is "pthread_create"). */
static int set_function(mp_symbolizer_t *s, mp_symbol_t *out, const char *raw)
{
    if (!raw)
        return 0;
    size_t len = strcspn(raw, "@");
    char *bare = raw[len] ? strndup(raw, len) : NULL;
    if (raw[len] && !bare)
        return MEMPROF_ENOMEM;
    out->function = intern_demangled(s, bare ? bare : raw);
    free(bare);
    return out->function ? 0 : MEMPROF_ENOMEM;
}

static int set_location(mp_symbolizer_t *s, mp_symbol_t *out, const char *file, uint64_t line)
{
    if (!file)
        return 0;
    out->file = intern(s, file);
    out->line = line <= INT_MAX ? (int)line : 0;
    return out->file ? 0 : MEMPROF_ENOMEM;
}

/* The name a function DIE gives (linkage name first, through its abstract
 * origin or specification), raw; NULL if none. */
static const char *die_name(Dwarf_Die *die)
{
    static const unsigned names[] = {DW_AT_linkage_name, DW_AT_MIPS_linkage_name, DW_AT_name};
    Dwarf_Attribute attr;
    for (size_t i = 0; i < MP_ARRAY_LEN(names); i++) {
        const char *name = dwarf_formstring(dwarf_attr_integrate(die, names[i], &attr));
        if (name)
            return name;
    }
    return NULL;
}

/* Inlined calls around pc: scopes before the first subprogram. */
static size_t count_inlined(Dwarf_Die *scopes, int n)
{
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        int tag = dwarf_tag(&scopes[i]);
        if (tag == DW_TAG_subprogram)
            break;
        k += tag == DW_TAG_inlined_subroutine;
    }
    return k;
}

/* The DIEs that contain pc, innermost first, by nesting. dwarf_getscopes
 * gives that chain when no inlined code is at pc; with inlined code it
 * stops at the innermost inlined call and continues with the scopes of
 * that function's abstract definition, so the chain is read again from the
 * innermost DIE. 0 without DWARF; free *scopes. */
static int scopes_at(Dwfl_Module *mod, Dwarf_Addr pc, Dwarf_Die **scopes)
{
    Dwarf_Addr bias = 0;
    Dwarf_Die *cu = dwfl_module_addrdie(mod, pc, &bias);
    *scopes = NULL;
    int n = cu ? dwarf_getscopes(cu, pc - bias, scopes) : 0;
    if (n <= 0 || !count_inlined(*scopes, n))
        return n > 0 ? n : 0;
    Dwarf_Die *byaddr = *scopes;
    *scopes = NULL;
    n = dwarf_getscopes_die(&byaddr[0], scopes);
    free(byaddr);
    if (n <= 0) {
        free(*scopes);
        *scopes = NULL;
        return 0;
    }
    return n;
}

/* Where an inlined call was made: DW_AT_call_file in its CU's file table. */
static int call_site(mp_symbolizer_t *s, Dwarf_Die *inl, mp_symbol_t *out)
{
    Dwarf_Attribute attr;
    Dwarf_Word file_idx, line;
    Dwarf_Die cu;
    Dwarf_Files *files;
    size_t nfiles;
    const char *file = NULL;
    if (dwarf_formudata(dwarf_attr(inl, DW_AT_call_file, &attr), &file_idx) == 0 &&
        dwarf_diecu(inl, &cu, NULL, NULL) && dwarf_getsrcfiles(&cu, &files, &nfiles) == 0 && file_idx < nfiles)
        file = dwarf_filesrc(files, file_idx, NULL, NULL);
    if (dwarf_formudata(dwarf_attr(inl, DW_AT_call_line, &attr), &line) != 0)
        line = 0;
    return set_location(s, out, file, line);
}

/* Fills chain[0 .. depth-1] (module and offset already set): the line
 * table's location in frame 0, each inlined call's name in its frame and its
 * call site in the next, the symbol covering pc in the last. */
static int fill_chain(mp_symbolizer_t *s, const module_t *m, Dwarf_Addr pc, Dwarf_Die *scopes, int nscopes,
                      mp_symbol_t *chain, size_t depth)
{
    Dwfl_Line *l = dwfl_module_getsrc(m->mod, pc);
    int line = 0;
    const char *file = l ? dwfl_lineinfo(l, NULL, &line, NULL, NULL, NULL) : NULL;
    int rc = set_location(s, &chain[0], file, line > 0 ? (uint64_t)line : 0);
    Dwarf_Die *outer = NULL;
    size_t k = 0;
    for (int i = 0; i < nscopes && !rc; i++) {
        int tag = dwarf_tag(&scopes[i]);
        if (tag == DW_TAG_subprogram) {
            outer = &scopes[i];
            break;
        }
        if (tag != DW_TAG_inlined_subroutine)
            continue;
        rc = set_function(s, &chain[k], die_name(&scopes[i]));
        if (!rc)
            rc = call_site(s, &scopes[i], &chain[++k]);  /* k < depth - 1: count_inlined */
    }
    const char *name = symbol_at(m, pc);
    if (!name && outer)
        name = die_name(outer);
    return rc ? rc : set_function(s, &chain[depth - 1], name);
}

/* Resolves (m, offset) into a new chain in e. */
static int resolve(mp_symbolizer_t *s, module_t *m, uint64_t offset, entry_t *e)
{
    Dwarf_Die *scopes = NULL;
    int nscopes = 0;
    int usable = m->state == MOD_OPEN && offset != 0;
    if (usable && !m->syms_built) {
        int rc = syms_build(m);
        if (rc)
            return rc;
    }
    if (usable)
        nscopes = scopes_at(m->mod, offset - 1, &scopes);
    size_t depth = 1 + count_inlined(scopes, nscopes);
    mp_symbol_t *chain = arena_alloc(s, depth * sizeof *chain, alignof(mp_symbol_t));  /* depth <= INT_MAX */
    int rc = chain ? 0 : MEMPROF_ENOMEM;
    for (size_t i = 0; chain && i < depth; i++)
        chain[i] = (mp_symbol_t){NULL, NULL, 0, m->path, offset};
    if (chain && usable)
        rc = fill_chain(s, m, offset - 1, scopes, nscopes, chain, depth);
    free(scopes);
    e->chain = chain;
    e->depth = (uint32_t)depth;
    return rc;
}

/* ---- the cache ---- */

static size_t entry_hash(uint32_t id, uint64_t offset)
{
    return (size_t)mix64(offset + mix64(id));
}

static entry_t *cache_find(const mp_symbolizer_t *s, uint32_t id, uint64_t offset)
{
    if (!s->capcache)
        return NULL;
    size_t mask = s->capcache - 1;
    for (size_t j = entry_hash(id, offset) & mask; s->cache[j].id; j = (j + 1) & mask)
        if (s->cache[j].id == id && s->cache[j].offset == offset)
            return &s->cache[j];
    return NULL;
}

static entry_t *cache_put(entry_t *t, size_t cap, const entry_t *e)
{
    size_t j = entry_hash(e->id, e->offset) & (cap - 1);
    while (t[j].id)
        j = (j + 1) & (cap - 1);
    t[j] = *e;
    return &t[j];
}

/* Adds e (not in the cache yet); NULL on out of memory. */
static const entry_t *cache_insert(mp_symbolizer_t *s, const entry_t *e)
{
    size_t cap = grown_cap(s->ncache, s->capcache);
    if (cap) {
        entry_t *t = calloc(cap, sizeof *t);
        if (!t)
            return NULL;
        for (size_t i = 0; i < s->capcache; i++)
            if (s->cache[i].id)
                cache_put(t, cap, &s->cache[i]);
        free(s->cache);
        s->cache = t;
        s->capcache = cap;
    }
    s->ncache++;
    return cache_put(s->cache, s->capcache, e);
}

static int lookup_entry(mp_symbolizer_t *s, uint32_t id, uint64_t offset, const entry_t **out)
{
    *out = cache_find(s, id, offset);
    if (*out)
        return 0;
    module_t *m = module_find(s, id);
    if (!m)
        return MEMPROF_EINVAL;
    entry_t e = {.offset = offset, .id = id};
    int rc = module_ready(s, m);
    if (!rc)
        rc = resolve(s, m, offset, &e);
    if (!rc)
        *out = cache_insert(s, &e);
    return rc ? rc : *out ? 0 : MEMPROF_ENOMEM;
}

int mp_symbolizer_lookup(mp_symbolizer_t *s, uint32_t id, uint64_t offset, mp_symbol_t *out)
{
    const entry_t *e;
    int rc = lookup_entry(s, id, offset, &e);
    if (!rc)
        *out = e->chain[e->depth - 1];
    return rc;
}

int mp_symbolizer_lookup_inline(mp_symbolizer_t *s, uint32_t id, uint64_t offset, const mp_symbol_t **frames,
                                size_t *n)
{
    const entry_t *e;
    int rc = lookup_entry(s, id, offset, &e);
    if (!rc) {
        *frames = e->chain;
        *n = e->depth;
    }
    return rc;
}

/* ---- life ---- */

mp_symbolizer_t *mp_symbolizer_new(void)
{
    return calloc(1, sizeof(mp_symbolizer_t));
}

void mp_symbolizer_free(mp_symbolizer_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nmod; i++) {
        if (s->mods[i].dwfl)
            dwfl_end(s->mods[i].dwfl);
        free(s->mods[i].syms);
        free(s->mods[i].maxend);
    }
    while (s->chunks) {
        chunk_t *next = s->chunks->next;
        free(s->chunks);
        s->chunks = next;
    }
    free(s->strs);
    free(s->mods);
    free(s->modslot);
    free(s->cache);
    free(s);
}
