/* stacks.c - the interning tables of the recorder: strings by content, the
 * stack trie (node = parent node, code id, line), and stack prefixes by hash
 * (root-anchored hash of (code, instruction) frames -> node), which is what
 * the allocation path looks up. A new string or node is written to the
 * capture the first time it is seen, so an allocation names its whole stack
 * with one small integer.
 *
 * Runs inside the profiled process with the writer lock held: memory comes
 * from mmap (open-addressing tables, grown by rehashing into a new mapping),
 * never from malloc.
 */
#define _GNU_SOURCE
#include <string.h>
#include <sys/mman.h>

#include "recorder.h"

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static void *map(size_t n)
{
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

int mp_table_grow(void **slots, size_t *cap, size_t esz, size_t first, size_t (*hash)(const void *),
                  int (*used)(const void *))
{
    size_t ncap = *cap ? *cap * 2 : first;
    unsigned char *t = map(ncap * esz), *old = *slots;
    if (!t)
        return -1;
    for (size_t i = 0; i < *cap; i++) {
        const void *e = old + i * esz;
        if (!used(e))
            continue;
        size_t j = hash(e) & (ncap - 1);
        while (used(t + j * esz))
            j = (j + 1) & (ncap - 1);
        memcpy(t + j * esz, e, esz);
    }
    if (old)
        munmap(old, *cap * esz);
    *slots = t;
    *cap = ncap;
    return 0;
}

/* ---- strings ---- */

void mp_table_clear(void **slots, size_t *cap, size_t esz, size_t first)
{
    if (!*slots)
        return;
    if (*cap == first) {
        memset(*slots, 0, *cap * esz);
        return;
    }
    munmap(*slots, *cap * esz);
    *slots = NULL;
    *cap = 0;
}

typedef struct {
    uint64_t hash;
    const char *data;
    uint32_t len, id;
} str_entry_t;

/* The strings' bytes live in chunks, each with this header, newest first. */
typedef struct chunk {
    struct chunk *prev;
    size_t size;
} chunk_t;

#define CHUNK_SIZE (1u << 20)
#define STR_FIRST 1024
#define NODE_FIRST 4096
#define PREFIX_FIRST 4096

static struct {
    str_entry_t *slots;
    size_t cap, n;
    chunk_t *chunks;
    char *chunk;
    size_t chunk_left;
    uint32_t next_id;
} S;

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a, then mixed */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return mix64(h ^ n);
}

static const char *str_keep(const char *s, size_t n)
{
    if (n > S.chunk_left) {
        size_t sz = n + sizeof(chunk_t) > CHUNK_SIZE ? n + sizeof(chunk_t) : CHUNK_SIZE;
        chunk_t *c = map(sz);
        if (!c)
            return NULL;
        *c = (chunk_t){S.chunks, sz};
        S.chunks = c;
        S.chunk = (char *)(c + 1);
        S.chunk_left = sz - sizeof *c;
    }
    char *d = S.chunk;
    memcpy(d, s, n);
    S.chunk += n;
    S.chunk_left -= n;
    return d;
}

static size_t str_hash(const void *e) { return (size_t)((const str_entry_t *)e)->hash; }
static int str_used(const void *e) { return ((const str_entry_t *)e)->id != 0; }

uint32_t mp_string_intern(const char *s, size_t n)
{
    if ((S.n + 1) * 2 > S.cap &&
        mp_table_grow((void **)&S.slots, &S.cap, sizeof *S.slots, STR_FIRST, str_hash, str_used)) {
        mp_stop_recording("memprof: out of memory for the string table, recording stopped", 0);
        return 0;
    }
    uint64_t h = hash_bytes(s, n);
    size_t j = h & (S.cap - 1);
    for (; S.slots[j].id; j = (j + 1) & (S.cap - 1)) {
        str_entry_t *e = &S.slots[j];
        if (e->hash == h && e->len == n && memcmp(e->data, s, n) == 0)
            return e->id;
    }
    const char *d = str_keep(s, n);
    if (!d) {
        mp_stop_recording("memprof: out of memory for the string table, recording stopped", 0);
        return 0;
    }
    S.slots[j] = (str_entry_t){h, d, (uint32_t)n, ++S.next_id};
    S.n++;
    mp_emit_string(s, n);
    return S.next_id;
}

/* ---- the stack trie: (parent, code id, line) -> node ---- */

typedef struct {
    uint32_t parent, code, node;
    int32_t line;           /* native frames: code 0, line = module id */
    uint64_t offset;        /* native frames: offset in the module */
} node_entry_t;

static struct {
    node_entry_t *slots;
    size_t cap, n;
    uint32_t next_node, next_code;
} N;

static inline size_t node_hash(uint32_t parent, uint32_t code, int32_t line, uint64_t offset)
{
    return (size_t)mix64(((uint64_t)parent << 32 | code) ^ ((uint64_t)(uint32_t)line * 0x9e3779b97f4a7c15ull) ^
                         (offset * 0xc2b2ae3d27d4eb4full));
}

static size_t node_entry_hash(const void *e)
{
    const node_entry_t *n = e;
    return node_hash(n->parent, n->code, n->line, n->offset);
}
static int node_used(const void *e) { return ((const node_entry_t *)e)->node != 0; }

/* The node (parent, code, line, offset), and whether it is new. */
static uint32_t node_get(uint32_t parent, uint32_t code, int32_t line, uint64_t offset, int *is_new)
{
    *is_new = 0;
    if ((N.n + 1) * 2 > N.cap &&
        mp_table_grow((void **)&N.slots, &N.cap, sizeof *N.slots, NODE_FIRST, node_entry_hash, node_used)) {
        mp_stop_recording("memprof: out of memory for the stack table, recording stopped", 0);
        return parent;
    }
    size_t j = node_hash(parent, code, line, offset) & (N.cap - 1);
    for (; N.slots[j].node; j = (j + 1) & (N.cap - 1)) {
        node_entry_t *e = &N.slots[j];
        if (e->parent == parent && e->code == code && e->line == line && e->offset == offset)
            return e->node;
    }
    uint32_t id = ++N.next_node;
    N.slots[j] = (node_entry_t){parent, code, id, line, offset};
    N.n++;
    *is_new = 1;
    return id;
}

uint32_t mp_node_intern(uint32_t parent, uint32_t code, int32_t line, uint32_t firstlineno)
{
    int is_new;
    uint32_t id = node_get(parent, code, line, 0, &is_new);
    if (is_new)
        mp_emit_node(id, parent, code, line, firstlineno);
    return id;
}

uint32_t mp_native_node_intern(uint32_t parent, uint32_t module, uint64_t offset)
{
    int is_new;
    uint32_t id = node_get(parent, 0, (int32_t)module, offset, &is_new);
    if (is_new)
        mp_emit_native_node(id, parent, module, offset);
    return id;
}

uint32_t mp_code_new_id(void) { return ++N.next_code; }

/* ---- stack prefixes: hash of the frames from the root -> node ---- */

typedef struct {
    uint64_t hash;
    const void *code;
    uint32_t instr, node;
} prefix_entry_t;

static struct {
    prefix_entry_t *slots;
    size_t cap, n;
} T;

static size_t prefix_hash(const void *e) { return (size_t)mix64(((const prefix_entry_t *)e)->hash); }
static int prefix_used(const void *e) { return ((const prefix_entry_t *)e)->node != 0; }

uint32_t mp_prefix_find(uint64_t hash, const void *code, uint32_t instr)
{
    if (!T.cap)
        return 0;
    for (size_t j = mix64(hash) & (T.cap - 1); T.slots[j].node; j = (j + 1) & (T.cap - 1)) {
        prefix_entry_t *e = &T.slots[j];
        if (e->hash == hash && e->code == code && e->instr == instr)
            return e->node;
    }
    return 0;
}

void mp_prefix_add(uint64_t hash, const void *code, uint32_t instr, uint32_t node)
{
    if ((T.n + 1) * 2 > T.cap &&
        mp_table_grow((void **)&T.slots, &T.cap, sizeof *T.slots, PREFIX_FIRST, prefix_hash, prefix_used)) {
        mp_stop_recording("memprof: out of memory for the stack table, recording stopped", 0);
        return;
    }
    size_t j = mix64(hash) & (T.cap - 1);
    while (T.slots[j].node)
        j = (j + 1) & (T.cap - 1);
    T.slots[j] = (prefix_entry_t){hash, code, instr, node};
    T.n++;
}

/* ---- sites: the nodes of a frame's allocation sites, by its group ----
 * A call of a function under frames seen before (a recursion whose path
 * varies: every call of deep_stacks is new) finds the nodes of its sites
 * in one cache line, keyed by its group (the hash of the frames above and
 * of the frame's code, prefix_group in pyframes.h): the line is missed
 * once a call, where the prefix table, entry by entry, missed about once
 * an allocation. Direct
 * mapped; a line taken by another group loses its sites, which the prefix
 * table still has. */

#define SITE_WAYS 6
#define SITE_LINES (1u << 16) /* 4 MiB, mapped when first used */

typedef struct {
    uint64_t group;
    const void *code;
    uint32_t instr[SITE_WAYS], node[SITE_WAYS]; /* node 0: a free way */
} site_line_t;

_Static_assert(sizeof(site_line_t) == 64, "a site line is a cache line");

static site_line_t *sites;
static int sites_failed; /* no memory for the table: not asked again this capture */

uint32_t mp_site_find(uint32_t bucket, uint64_t group, const void *code, uint32_t instr)
{
    if (!sites)
        return 0;
    const site_line_t *l = &sites[bucket & (SITE_LINES - 1)];
    if (l->group != group || l->code != code)
        return 0;
    for (unsigned w = 0; w < SITE_WAYS; w++)
        if (l->instr[w] == instr)
            return l->node[w];
    return 0;
}

/* A group's line keeps the sites it has: a function allocating at more
 * sites than a line holds, in the same order at each call, would evict
 * each one just before it is looked up again. A site found full replaces
 * the one at a way of its own instruction's choosing. */
void mp_site_put(uint32_t bucket, uint64_t group, const void *code, uint32_t instr, uint32_t node)
{
    if (!sites && (sites_failed || !(sites = map((size_t)SITE_LINES * sizeof *sites)))) {
        sites_failed = 1;
        return;
    }
    site_line_t *l = &sites[bucket & (SITE_LINES - 1)];
    if (l->group != group || l->code != code)
        *l = (site_line_t){.group = group, .code = code};
    unsigned w = 0;
    while (w < SITE_WAYS && l->node[w] && l->instr[w] != instr)
        w++;
    if (w == SITE_WAYS)
        w = instr % SITE_WAYS;
    l->instr[w] = instr;
    l->node[w] = node;
}

/* A new capture (a fork child's, a Tracker's): every table empty, the
 * memory of the last one released (a process may record thousands of
 * captures, a Tracker per test), small tables and one chunk kept for reuse. */
void mp_stacks_reset(void)
{
    mp_table_clear((void **)&S.slots, &S.cap, sizeof *S.slots, STR_FIRST);
    mp_table_clear((void **)&N.slots, &N.cap, sizeof *N.slots, NODE_FIRST);
    mp_table_clear((void **)&T.slots, &T.cap, sizeof *T.slots, PREFIX_FIRST);
    if (sites)
        munmap(sites, (size_t)SITE_LINES * sizeof *sites);
    sites = NULL;
    sites_failed = 0;
    chunk_t *keep = S.chunks && !S.chunks->prev && S.chunks->size == CHUNK_SIZE ? S.chunks : NULL;
    for (chunk_t *c = keep ? NULL : S.chunks, *prev; c; c = prev) {
        prev = c->prev;
        munmap(c, c->size);
    }
    S.n = N.n = T.n = 0;
    S.chunks = keep;
    S.chunk = keep ? (char *)(keep + 1) : NULL;
    S.chunk_left = keep ? CHUNK_SIZE - sizeof *keep : 0;
    S.next_id = 0;
    N.next_node = N.next_code = 0;
}
