/* stacks.c - the interning tables of the recorder: strings by content, and
 * stack prefixes by hash (a prefix is a path in the capture's stack trie:
 * node = (parent node, code id, instruction)). A new entry is written to the
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

/* ---- strings ---- */

typedef struct {
    uint64_t hash;
    const char *data;
    uint32_t len, id;
} str_entry_t;

static struct {
    str_entry_t *slots;
    size_t cap, n;
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
        size_t sz = n > (1u << 20) ? n : (1u << 20);
        char *c = map(sz);
        if (!c)
            return NULL;
        S.chunk = c;
        S.chunk_left = sz;
    }
    char *d = S.chunk;
    memcpy(d, s, n);
    S.chunk += n;
    S.chunk_left -= n;
    return d;
}

static int str_grow(void)
{
    size_t ncap = S.cap ? S.cap * 2 : 1024;
    str_entry_t *t = map(ncap * sizeof *t);
    if (!t)
        return -1;
    for (size_t i = 0; i < S.cap; i++) {
        str_entry_t *e = &S.slots[i];
        if (!e->id)
            continue;
        size_t j = e->hash & (ncap - 1);
        while (t[j].id)
            j = (j + 1) & (ncap - 1);
        t[j] = *e;
    }
    if (S.slots)
        munmap(S.slots, S.cap * sizeof *t);
    S.slots = t;
    S.cap = ncap;
    return 0;
}

uint32_t mp_string_intern(const char *s, size_t n)
{
    if ((S.n + 1) * 2 > S.cap && str_grow()) {
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

/* ---- stack prefixes ---- */

typedef struct {
    uint64_t hash;
    const void *code;
    uint32_t instr, node;
} prefix_entry_t;

static struct {
    prefix_entry_t *slots;
    size_t cap, n;
    uint32_t next_node;
    uint32_t next_code;
} T;

static int prefix_grow(void)
{
    size_t ncap = T.cap ? T.cap * 2 : 4096;
    prefix_entry_t *t = map(ncap * sizeof *t);
    if (!t)
        return -1;
    for (size_t i = 0; i < T.cap; i++) {
        prefix_entry_t *e = &T.slots[i];
        if (!e->node)
            continue;
        size_t j = e->hash & (ncap - 1);
        while (t[j].node)
            j = (j + 1) & (ncap - 1);
        t[j] = *e;
    }
    if (T.slots)
        munmap(T.slots, T.cap * sizeof *t);
    T.slots = t;
    T.cap = ncap;
    return 0;
}

uint32_t mp_prefix_find(uint64_t hash, const void *code, uint32_t instr)
{
    if (!T.cap)
        return 0;
    for (size_t j = hash & (T.cap - 1); T.slots[j].node; j = (j + 1) & (T.cap - 1)) {
        prefix_entry_t *e = &T.slots[j];
        if (e->hash == hash && e->code == code && e->instr == instr)
            return e->node;
    }
    return 0;
}

uint32_t mp_prefix_add(uint64_t hash, const void *code, uint32_t instr, uint32_t parent, uint32_t code_id)
{
    if ((T.n + 1) * 2 > T.cap && prefix_grow()) {
        mp_stop_recording("memprof: out of memory for the stack table, recording stopped", 0);
        return parent;
    }
    size_t j = hash & (T.cap - 1);
    while (T.slots[j].node)
        j = (j + 1) & (T.cap - 1);
    uint32_t id = ++T.next_node;
    T.slots[j] = (prefix_entry_t){hash, code, instr, id};
    T.n++;
    mp_emit_node(id, parent, code_id, instr);
    return id;
}

uint32_t mp_code_new_id(void) { return ++T.next_code; }
