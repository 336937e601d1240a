/* analysis.c - one ordered replay of a capture.
 *
 * The live heap is a hash of address -> (size, stack); mappings (mmap,
 * mremap), which can be unmapped in part, are a sorted array beside it, and
 * file-backed ones are counted apart from the heap. The peak is found
 * on the way, and what each stack held at the peak is known without a
 * second pass: a stack remembers its value at the latest peak lazily, the
 * first time it changes after that peak ("snap" with the peak's epoch).
 * Never prints, never exits.
 */
#include "analysis.h"

#include <stdlib.h>
#include <string.h>

#include "memprof/format.h"
#include "symbolize.h"

static inline uint64_t addr_hash(uint64_t a)
{
    a ^= a >> 31;
    a *= 0x7fb5d329728ea185ull;
    a ^= a >> 27;
    return a;
}

static int map_grow(mp_analysis_t *a)
{
    uint64_t ncap = a->map_cap ? a->map_cap * 2 : 1 << 16;
    mp_live_t *m = calloc(ncap, sizeof *m);
    if (!m)
        return MEMPROF_ENOMEM;
    for (uint64_t i = 0; i < a->map_cap; i++) {
        if (!a->map[i].addr)
            continue;
        uint64_t j = addr_hash(a->map[i].addr) & (ncap - 1);
        while (m[j].addr)
            j = (j + 1) & (ncap - 1);
        m[j] = a->map[i];
    }
    free(a->map);
    a->map = m;
    a->map_cap = ncap;
    return 0;
}

static mp_live_t *map_find(mp_analysis_t *a, uint64_t addr)
{
    if (!a->map_cap || !addr) /* 0 marks empty slots: never a live block */
        return NULL;
    for (uint64_t j = addr_hash(addr) & (a->map_cap - 1);; j = (j + 1) & (a->map_cap - 1)) {
        if (a->map[j].addr == addr)
            return &a->map[j];
        if (!a->map[j].addr)
            return NULL;
    }
}

/* Linear-probing delete with backward shift: no tombstones. */
static void map_remove(mp_analysis_t *a, mp_live_t *e)
{
    uint64_t mask = a->map_cap - 1, i = (uint64_t)(e - a->map), j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (!a->map[j].addr)
            break;
        uint64_t k = addr_hash(a->map[j].addr) & mask;
        if ((j > i && (k <= i || k > j)) || (j < i && (k <= i && k > j))) {
            a->map[i] = a->map[j];
            i = j;
        }
    }
    a->map[i].addr = 0;
    a->map_n--;
}

static int stats_reserve(mp_analysis_t *a, uint32_t id)
{
    if (id < a->nst)
        return 0;
    uint32_t n = a->nst ? a->nst : 1024;
    while (n <= id)
        n *= 2;
    mp_stackstat_t *s = realloc(a->st, (size_t)n * sizeof *s);
    if (!s)
        return MEMPROF_ENOMEM;
    memset(s + a->nst, 0, (size_t)(n - a->nst) * sizeof *s);
    a->st = s;
    a->nst = n;
    return 0;
}

/* Before a stack's value changes: keep what it held at the latest peak. */
static inline void touch(mp_analysis_t *a, mp_stackstat_t *s)
{
    if (s->snap_epoch != a->peak_epoch) {
        s->snap = s->cur;
        s->snap_epoch = a->peak_epoch;
    }
}

static int on_heap_alloc(mp_analysis_t *a, const memprof_event_t *ev);

static inline void check_peak(mp_analysis_t *a, const memprof_event_t *ev)
{
    if (a->live.bytes > a->peak.bytes) {
        a->peak = a->live;
        a->peak_index = ev->index;
        a->peak_time_us = ev->time_us;
        a->peak_epoch++;
    }
}

/* ---- mappings ---- */

/* A range's length, cut at the end of the address space (a hostile size
 * must not wrap: mappings are kept sorted and disjoint). */
static inline uint64_t range_len(uint64_t addr, uint64_t len)
{
    return len > UINT64_MAX - addr ? UINT64_MAX - addr : len;
}

/* Heap figures move with an anonymous mapping; a file mapping's go apart. */
static void map_account(mp_analysis_t *a, const mp_mapping_t *m, uint64_t bytes, int count, int add)
{
    uint64_t c = count && !m->frag;
    if (m->file) {
        if (add) {
            a->files_live.bytes += bytes, a->files_live.count += c;
            if (a->files_live.bytes > a->files_peak.bytes)
                a->files_peak = a->files_live;
        } else {
            a->files_live.bytes -= bytes, a->files_live.count -= c;
        }
        return;
    }
    mp_stackstat_t *s = &a->st[m->stack];
    touch(a, s);
    if (add) {
        s->cur.bytes += bytes, s->cur.count += c;
        a->live.bytes += bytes, a->live.count += c;
    } else {
        s->cur.bytes -= bytes, s->cur.count -= c;
        a->live.bytes -= bytes, a->live.count -= c;
    }
}

/* Index of the first mapping that ends after addr. */
static uint64_t maps_lower(const mp_analysis_t *a, uint64_t addr)
{
    uint64_t lo = 0, hi = a->nmaps;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (a->maps[mid].addr + a->maps[mid].size <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int maps_insert_at(mp_analysis_t *a, uint64_t i, const mp_mapping_t *m)
{
    if (a->nmaps == a->maps_cap) {
        uint64_t n = a->maps_cap ? a->maps_cap * 2 : 256;
        mp_mapping_t *v = realloc(a->maps, n * sizeof *v);
        if (!v)
            return MEMPROF_ENOMEM;
        a->maps = v;
        a->maps_cap = n;
    }
    memmove(a->maps + i + 1, a->maps + i, (a->nmaps - i) * sizeof *a->maps);
    a->maps[i] = *m;
    a->nmaps++;
    return 0;
}

/* Unmaps [addr, addr + len): whole mappings go, cut ones keep their rest.
 * The first mapping touched is copied to *first (for mremap). */
static int maps_remove(mp_analysis_t *a, uint64_t addr, uint64_t len, mp_mapping_t *first)
{
    if (len == 0) /* munmap(p, 0) fails: it must not split a mapping */
        return 0;
    uint64_t end = addr + range_len(addr, len);
    uint64_t i = maps_lower(a, addr);
    int found = 0;
    while (i < a->nmaps && a->maps[i].addr < end) {
        mp_mapping_t *m = &a->maps[i];
        uint64_t mend = m->addr + m->size;
        uint64_t lo = m->addr > addr ? m->addr : addr, hi = mend < end ? mend : end;
        if (!found && first)
            *first = *m;
        found = 1;
        int keep_left = m->addr < lo, keep_right = hi < mend;
        map_account(a, m, hi - lo, !keep_left && !keep_right, 0);
        if (keep_left && keep_right) { /* a hole in the middle */
            mp_mapping_t right = *m;
            right.addr = hi, right.size = mend - hi, right.frag = 1;
            m->size = lo - m->addr;
            if (maps_insert_at(a, i + 1, &right))
                return MEMPROF_ENOMEM;
            return 1;
        }
        if (keep_left) {
            m->size = lo - m->addr;
            i++;
        } else if (keep_right) {
            m->size = mend - hi;
            m->addr = hi;
            i++;
        } else {
            memmove(m, m + 1, (a->nmaps - i - 1) * sizeof *m);
            a->nmaps--;
        }
    }
    return found;
}

static int on_map(mp_analysis_t *a, const memprof_event_t *ev, int file)
{
    a->allocated.bytes += ev->size;
    a->allocated.count++;
    if (file) {
        a->files_total.bytes += ev->size;
        a->files_total.count++;
    } else {
        a->st[ev->stack].total.bytes += ev->size;
        a->st[ev->stack].total.count++;
    }
    uint64_t size = range_len(ev->addr, ev->size);
    if (size == 0) /* an allocation all the same: it maps nothing */
        return 0;
    /* a new mapping over an old one (MAP_FIXED) replaces that part */
    if (maps_remove(a, ev->addr, size, NULL) < 0)
        return MEMPROF_ENOMEM;
    mp_mapping_t m = {ev->addr, size, ev->stack, (uint16_t)file, 0};
    if (maps_insert_at(a, maps_lower(a, ev->addr), &m))
        return MEMPROF_ENOMEM;
    map_account(a, &m, size, 1, 1);
    check_peak(a, ev);
    return 0;
}

static int thread_slots(mp_analysis_t *a, uint32_t thread)
{
    if (thread <= a->nthreads)
        return 0;
    uint32_t n = thread + 16;
    mp_live_t *t = realloc(a->last_realloc_free, n * sizeof *t);
    if (!t)
        return MEMPROF_ENOMEM;
    memset(t + a->nthreads, 0, (n - a->nthreads) * sizeof *t);
    a->last_realloc_free = t;
    mp_mapping_t *m = realloc(a->last_mremap, n * sizeof *m);
    if (!m)
        return MEMPROF_ENOMEM;
    memset(m + a->nthreads, 0, (n - a->nthreads) * sizeof *m);
    a->last_mremap = m;
    a->nthreads = n;
    return 0;
}

static int on_unmap(mp_analysis_t *a, const memprof_event_t *ev)
{
    a->frees++;
    mp_mapping_t first = {0};
    int rc = maps_remove(a, ev->addr, ev->size, &first);
    if (rc < 0)
        return rc;
    if (rc == 0)
        a->unmatched_frees++;
    if (ev->kind == MEMPROF_D_MREMAP && ev->thread) {
        if (thread_slots(a, ev->thread))
            return MEMPROF_ENOMEM;
        mp_mapping_t *last = &a->last_mremap[ev->thread - 1];
        *last = (mp_mapping_t){0}; /* nothing was mapped there: nothing to restore */
        if (rc > 0) {
            uint64_t len = range_len(ev->addr, ev->size);
            /* a RESTORE gives the allocation back only if this took it */
            int counted = !first.frag && first.addr >= ev->addr && first.addr + first.size <= ev->addr + len;
            *last = (mp_mapping_t){ev->addr, len, first.stack, first.file, (uint16_t)!counted};
        }
    }
    return 0;
}

static int on_alloc(mp_analysis_t *a, const memprof_event_t *ev)
{
    if (stats_reserve(a, ev->stack))
        return MEMPROF_ENOMEM;
    a->by_allocator[ev->kind < MEMPROF_A_COUNT ? ev->kind : 0].bytes += ev->size;
    a->by_allocator[ev->kind < MEMPROF_A_COUNT ? ev->kind : 0].count++;
    if (ev->kind == MEMPROF_A_MMAP || ev->kind == MEMPROF_A_MMAP_FILE)
        return on_map(a, ev, ev->kind == MEMPROF_A_MMAP_FILE);
    if (ev->kind == MEMPROF_A_MREMAP) {
        int file = ev->thread && ev->thread <= a->nthreads && a->last_mremap[ev->thread - 1].addr &&
                   a->last_mremap[ev->thread - 1].file;
        if (ev->thread && ev->thread <= a->nthreads)
            a->last_mremap[ev->thread - 1].addr = 0;
        return on_map(a, ev, file);
    }
    return on_heap_alloc(a, ev);
}

static int on_heap_alloc(mp_analysis_t *a, const memprof_event_t *ev)
{
    if (stats_reserve(a, ev->stack))
        return MEMPROF_ENOMEM;
    mp_live_t *old = map_find(a, ev->addr);
    if (old) { /* its free was never seen: drop the stale block */
        mp_stackstat_t *s = &a->st[old->stack];
        touch(a, s);
        s->cur.bytes -= old->size;
        s->cur.count--;
        a->live.bytes -= old->size;
        a->live.count--;
        map_remove(a, old);
    }
    mp_stackstat_t *s = &a->st[ev->stack];
    s->total.bytes += ev->size;
    s->total.count++;
    a->allocated.bytes += ev->size;
    a->allocated.count++;
    if (!ev->addr) /* nobody's block (and the live map's empty mark): made, never live */
        return 0;
    if ((a->map_n + 1) * 10 > a->map_cap * 7 && map_grow(a))
        return MEMPROF_ENOMEM;
    uint64_t j = addr_hash(ev->addr) & (a->map_cap - 1);
    while (a->map[j].addr)
        j = (j + 1) & (a->map_cap - 1);
    a->map[j] = (mp_live_t){ev->addr, ev->size, ev->stack, 0};
    a->map_n++;
    touch(a, s);
    s->cur.bytes += ev->size;
    s->cur.count++;
    a->live.bytes += ev->size;
    a->live.count++;
    check_peak(a, ev);
    return 0;
}

static int on_free(mp_analysis_t *a, const memprof_event_t *ev)
{
    if (ev->kind == MEMPROF_D_MUNMAP || ev->kind == MEMPROF_D_MREMAP)
        return on_unmap(a, ev);
    a->frees++;
    mp_live_t *e = map_find(a, ev->addr);
    if (!e) {
        a->unmatched_frees++;
        return 0;
    }
    if (ev->kind == MEMPROF_D_REALLOC && ev->thread) {
        if (thread_slots(a, ev->thread))
            return MEMPROF_ENOMEM;
        a->last_realloc_free[ev->thread - 1] = *e;
    }
    mp_stackstat_t *s = &a->st[e->stack];
    touch(a, s);
    s->cur.bytes -= e->size;
    s->cur.count--;
    a->live.bytes -= e->size;
    a->live.count--;
    map_remove(a, e);
    return 0;
}

static int on_restore(mp_analysis_t *a, const memprof_event_t *ev)
{
    if (!ev->thread || ev->thread > a->nthreads)
        return 0;
    mp_mapping_t *mr = &a->last_mremap[ev->thread - 1];
    if (mr->addr && mr->addr == ev->addr) { /* a failed mremap: the range is back */
        mp_mapping_t m = *mr;
        mr->addr = 0;
        /* over anything recorded as mapped there since: mappings stay disjoint */
        if (maps_remove(a, m.addr, m.size, NULL) < 0 || maps_insert_at(a, maps_lower(a, m.addr), &m))
            return MEMPROF_ENOMEM;
        map_account(a, &m, m.size, 1, 1);
        check_peak(a, ev);
        return 0;
    }
    mp_live_t *b = &a->last_realloc_free[ev->thread - 1];
    if (!b->addr || b->addr != ev->addr)
        return 0;
    memprof_event_t again = {MEMPROF_EV_ALLOC, MEMPROF_A_REALLOC, ev->thread, b->stack, b->addr, b->size,
                             ev->index, ev->time_us, 0};
    b->addr = 0;
    int rc = on_heap_alloc(a, &again);
    if (!rc) { /* it was live before: not a new allocation */
        a->allocated.bytes -= again.size;
        a->allocated.count--;
        a->st[again.stack].total.bytes -= again.size;
        a->st[again.stack].total.count--;
    }
    return rc;
}

static void on_script_end(mp_analysis_t *a, const memprof_event_t *ev)
{
    if (a->has_end)
        return;
    a->has_end = 1;
    a->at_end = a->live;
    a->end_index = ev->index;
    a->end_time_us = ev->time_us;
    for (uint32_t i = 0; i < a->nst; i++)
        a->st[i].at_end = a->st[i].cur;
}

int mp_analysis_run(mp_analysis_t *a, memprof_reader_t *r)
{
    memset(a, 0, sizeof *a);
    a->r = r;
    if (stats_reserve(a, 1) || map_grow(a))
        return MEMPROF_ENOMEM;
    memprof_event_t ev;
    int rc;
    while ((rc = memprof_reader_next(r, &ev)) > 0) {
        a->last_time_us = ev.time_us;
        switch (ev.type) {
        case MEMPROF_EV_ALLOC: rc = on_alloc(a, &ev); break;
        case MEMPROF_EV_FREE: rc = on_free(a, &ev); break;
        case MEMPROF_EV_RESTORE: rc = on_restore(a, &ev); break;
        case MEMPROF_EV_MARK:
            if (ev.kind == MEMPROF_M_SCRIPT_END)
                on_script_end(a, &ev);
            break;
        case MEMPROF_EV_TIME:
            a->samples++;
            if (ev.rss_kib > a->rss_peak_kib)
                a->rss_peak_kib = ev.rss_kib;
            break;
        }
        if (rc < 0)
            return rc;
    }
    if (rc < 0)
        return rc;
    /* settle every stack's value at the peak */
    for (uint32_t i = 0; i < a->nst; i++) {
        mp_stackstat_t *s = &a->st[i];
        s->at_peak = s->snap_epoch == a->peak_epoch ? s->snap : s->cur;
        if (!a->has_end)
            s->at_end = s->cur;
    }
    if (!(a->sym = mp_symbolizer_new()))
        return MEMPROF_ENOMEM;
    for (uint32_t id = 1; id <= memprof_reader_module_count(r); id++) {
        memprof_module_t m;
        if (memprof_reader_module(r, id, &m) == 0 &&
            mp_symbolizer_add_module(a->sym, id, m.path, m.bias, m.build_id, m.build_id_len))
            return MEMPROF_ENOMEM;
    }
    if (!a->has_end) {
        a->at_end = a->live;
        a->end_index = a->allocated.count + a->frees;
        a->end_time_us = a->last_time_us;
    }
    return 0;
}

void mp_analysis_free(mp_analysis_t *a)
{
    free(a->st);
    free(a->map);
    free(a->last_realloc_free);
    free(a->last_mremap);
    free(a->maps);
    if (a->sym)
        mp_symbolizer_free(a->sym);
    memset(a, 0, sizeof *a);
}

mp_amount_t mp_analysis_stack_peak(const mp_analysis_t *a, uint32_t id)
{
    return id < a->nst ? a->st[id].at_peak : (mp_amount_t){0, 0};
}
