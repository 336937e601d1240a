/* analysis.c - one ordered replay of a capture.
 *
 * The live heap is a hash of address -> (size, stack). The peak is found
 * on the way, and what each stack held at the peak is known without a
 * second pass: a stack remembers its value at the latest peak lazily, the
 * first time it changes after that peak ("snap" with the peak's epoch).
 * Never prints, never exits.
 */
#include "analysis.h"

#include <stdlib.h>
#include <string.h>

#include "memprof/format.h"

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

static int on_alloc(mp_analysis_t *a, const memprof_event_t *ev)
{
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
    if ((a->map_n + 1) * 10 > a->map_cap * 7 && map_grow(a))
        return MEMPROF_ENOMEM;
    if (stats_reserve(a, ev->stack))
        return MEMPROF_ENOMEM;
    uint64_t j = addr_hash(ev->addr) & (a->map_cap - 1);
    while (a->map[j].addr)
        j = (j + 1) & (a->map_cap - 1);
    a->map[j] = (mp_live_t){ev->addr, ev->size, ev->stack, 0};
    a->map_n++;
    mp_stackstat_t *s = &a->st[ev->stack];
    touch(a, s);
    s->cur.bytes += ev->size;
    s->cur.count++;
    s->total.bytes += ev->size;
    s->total.count++;
    a->allocated.bytes += ev->size;
    a->allocated.count++;
    a->live.bytes += ev->size;
    a->live.count++;
    if (a->live.bytes > a->peak.bytes) {
        a->peak = a->live;
        a->peak_index = ev->index;
        a->peak_time_us = ev->time_us;
        a->peak_epoch++;
    }
    return 0;
}

static int on_free(mp_analysis_t *a, const memprof_event_t *ev)
{
    a->frees++;
    mp_live_t *e = map_find(a, ev->addr);
    if (!e) {
        a->unmatched_frees++;
        return 0;
    }
    if (ev->kind == MEMPROF_D_REALLOC && ev->thread) {
        if (ev->thread > a->nthreads) {
            uint32_t n = ev->thread + 16;
            mp_live_t *t = realloc(a->last_realloc_free, n * sizeof *t);
            if (!t)
                return MEMPROF_ENOMEM;
            memset(t + a->nthreads, 0, (n - a->nthreads) * sizeof *t);
            a->last_realloc_free = t;
            a->nthreads = n;
        }
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
    mp_live_t *b = &a->last_realloc_free[ev->thread - 1];
    if (!b->addr || b->addr != ev->addr)
        return 0;
    memprof_event_t again = {MEMPROF_EV_ALLOC, MEMPROF_A_REALLOC, ev->thread, b->stack, b->addr, b->size,
                             ev->index, ev->time_us, 0};
    b->addr = 0;
    int rc = on_alloc(a, &again);
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
        case MEMPROF_EV_TIME: break;
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
    memset(a, 0, sizeof *a);
}

mp_amount_t mp_analysis_stack_peak(const mp_analysis_t *a, uint32_t id)
{
    return id < a->nst ? a->st[id].at_peak : (mp_amount_t){0, 0};
}
