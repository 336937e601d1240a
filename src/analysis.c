/* analysis.c - one ordered replay of a capture.
 *
 * Everything is counted per site (a stack, a thread, an allocator), and
 * summed per stack and per thread at the end.
 * The live heap is a hash of address -> (size, site); mappings (mmap,
 * mremap), which can be unmapped in part, are a sorted array beside it, and
 * file-backed ones are counted apart from the heap. The peak is found
 * on the way, and what each stack held at the peak is known without a
 * second pass: a stack remembers its value at the latest peak lazily, the
 * first time it changes after that peak ("snap" with the peak's epoch).
 * Asked for, intervals keep what each site held over time, by bucket.
 * Never prints, never exits.
 */
#include "analysis.h"

#include <stdlib.h>
#include <string.h>

#include "memprof/format.h"
#include "mp_common.h"
#include "symbolize.h"

/* An address's home slot in a table of cap (a power of 2) slots:
 * Fibonacci hashing, the top bits of one multiplication. */
static inline uint64_t map_home(uint64_t addr, uint64_t cap)
{
    return (addr * 0x9e3779b97f4a7c15ull) >> (64 - __builtin_ctzll(cap));
}

static int map_grow(mp_analysis_t *a)
{
    uint64_t ncap = a->map_cap ? a->map_cap * 2 : 1 << 10; /* small captures are common (a test each) */
    mp_live_t *m = calloc(ncap, sizeof *m);
    if (!m)
        return MEMPROF_ENOMEM;
    for (uint64_t i = 0; i < a->map_cap; i++) {
        if (!a->map[i].addr)
            continue;
        uint64_t j = map_home(a->map[i].addr, ncap);
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
    for (uint64_t j = map_home(addr, a->map_cap);; j = (j + 1) & (a->map_cap - 1)) {
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
        uint64_t k = map_home(a->map[j].addr, a->map_cap);
        if ((j > i && (k <= i || k > j)) || (j < i && (k <= i && k > j))) {
            a->map[i] = a->map[j];
            i = j;
        }
    }
    a->map[i].addr = 0;
    a->map_n--;
}

static inline uint32_t site_hash(uint32_t stack, uint32_t thread, uint32_t kind)
{
    uint64_t h = ((uint64_t)stack << 32 | thread) * 0x9e3779b97f4a7c15ull ^ (uint64_t)kind * 0xc2b2ae3d27d4eb4full;
    return (uint32_t)(h >> 32 ^ h);
}

static int site_rehash(mp_analysis_t *a, uint32_t cap)
{
    uint32_t *h = calloc(cap, sizeof *h);
    if (!h)
        return MEMPROF_ENOMEM;
    for (uint32_t i = 0; i < a->nsites; i++) {
        const mp_site_t *t = &a->sites[i];
        uint32_t j = site_hash(t->stack, t->thread, t->kind) & (cap - 1);
        while (h[j])
            j = (j + 1) & (cap - 1);
        h[j] = i + 1;
    }
    free(a->site_hash);
    a->site_hash = h;
    a->site_hash_cap = cap;
    return 0;
}

/* The site of an allocation (made on first use); -1 when out of memory.
 * The thread's last site is tried first. */
static int64_t site_of(mp_analysis_t *a, uint32_t stack, uint32_t thread, uint32_t kind)
{
    uint32_t last = a->thr_site[thread];
    if (last && a->sites[last - 1].stack == stack && a->sites[last - 1].kind == kind)
        return last - 1;
    uint32_t mask = a->site_hash_cap - 1, j = site_hash(stack, thread, kind) & mask;
    for (; a->site_hash[j]; j = (j + 1) & mask) {
        const mp_site_t *t = &a->sites[a->site_hash[j] - 1];
        if (t->stack == stack && t->thread == thread && t->kind == kind)
            return a->thr_site[thread] = a->site_hash[j], a->site_hash[j] - 1;
    }
    if (a->nsites >= (1u << 31) - 1) /* site numbers take 31 bits in a live block */
        return -1;
    if (a->nsites == a->sites_cap) {
        uint32_t n = a->sites_cap ? a->sites_cap * 2 : 1024;
        mp_site_t *v = realloc(a->sites, (size_t)n * sizeof *v);
        if (!v)
            return -1;
        a->sites = v;
        a->sites_cap = n;
    }
    a->sites[a->nsites] = (mp_site_t){.stack = stack, .thread = thread, .kind = kind};
    a->site_hash[j] = ++a->nsites;
    a->thr_site[thread] = a->nsites;
    if ((uint64_t)a->nsites * 2 > a->site_hash_cap && site_rehash(a, a->site_hash_cap * 2))
        return -1;
    return a->nsites - 1;
}

/* Before a stack's value changes: keep what it held at the latest peak. */
static inline void touch(mp_analysis_t *a, mp_stackstat_t *s)
{
    if (s->snap_epoch != a->peak_epoch) {
        s->snap = s->cur;
        s->snap_epoch = a->peak_epoch;
    }
}

/* bytes (and count blocks) held by a site come (sign > 0) or go. */
static inline void account(mp_analysis_t *a, uint32_t site, uint64_t bytes, uint64_t count, int sign)
{
    mp_stackstat_t *s = &a->sites[site].s;
    touch(a, s);
    if (sign > 0) {
        s->cur.bytes += bytes, s->cur.count += count;
        a->live.bytes += bytes, a->live.count += count;
    } else {
        s->cur.bytes -= bytes, s->cur.count -= count;
        a->live.bytes -= bytes, a->live.count -= count;
    }
}

/* A new allocation that counts, in the totals (a file mapping is not heap:
 * no stack holds it, it is counted apart). */
static inline void count_new(mp_analysis_t *a, const memprof_event_t *ev, uint32_t site, int file)
{
    a->allocated.bytes += ev->size;
    a->allocated.count++;
    a->thr[ev->thread].total.bytes += ev->size;
    a->thr[ev->thread].total.count++;
    unsigned k = ev->kind < MEMPROF_A_COUNT ? ev->kind : 0;
    a->by_allocator[k].bytes += ev->size;
    a->by_allocator[k].count++;
    mp_amount_t *b = &a->sizes[mp_size_bucket(ev->size)];
    b->bytes += ev->size;
    b->count++;
    mp_amount_t *t = file ? &a->files_total : &a->sites[site].s.total;
    t->bytes += ev->size;
    t->count++;
}

unsigned mp_size_bucket(uint64_t size) { return size ? 64u - (unsigned)__builtin_clzll(size) : 0; }

static int on_heap_alloc(mp_analysis_t *a, const memprof_event_t *ev, uint32_t site, int out, uint32_t seq);

/* ---- intervals ----
 *
 * A block is live at a bucket's snapshot when made <= snapshot < gone. With
 * the snapshots in order, that is a <= p < f for a = the first bucket whose
 * snapshot is at or after `made`, f the same for `gone`. A snapshot moves
 * on while its bucket is the current one (each new high), so a free in the
 * current bucket waits in `pend` until the next high (then f is this
 * bucket) or the bucket's end (then f is the next one). */

static inline uint32_t time_unit(uint64_t us)
{
    uint64_t u = us / MP_TIME_UNIT_US;
    return u > UINT32_MAX ? UINT32_MAX : (uint32_t)u;
}

static inline uint64_t ival_hash(uint32_t site, uint32_t ab, uint32_t f)
{
    uint64_t h = ((uint64_t)site << 32 | ab) * 0x9e3779b97f4a7c15ull ^ (uint64_t)f * 0xc2b2ae3d27d4eb4full;
    return h ^ h >> 29;
}

/* The slot of (site, ab, f) in a table never more than 70% full: found, or
 * where it goes (site UINT32_MAX). */
static inline mp_interval_t *ival_slot(mp_interval_t *t, uint64_t cap, uint32_t site, uint32_t ab, uint32_t f)
{
    uint64_t j = ival_hash(site, ab, f) & (cap - 1);
    for (; t[j].site != UINT32_MAX; j = (j + 1) & (cap - 1))
        if (t[j].site == site && t[j].a == ab && t[j].f == f)
            break;
    return &t[j];
}

static mp_interval_t *ival_table(uint64_t cap)
{
    mp_interval_t *t = malloc(cap * sizeof *t);
    if (t)
        memset(t, 0xff, cap * sizeof *t);
    return t;
}

/* The bucket of a halved table that a bucket `b` becomes: buckets 2k and
 * 2k+1 merge into k, whose snapshot is the one of won[k] (2k or 2k+1). A
 * bucket bound b (the first bucket whose snapshot is at or after some
 * moment) becomes the first k whose snapshot is at or after it. */
static inline uint32_t halve_bound(uint32_t b, const uint32_t *won)
{
    if (b == MP_IVAL_NEVER)
        return b;
    uint32_t k = b >> 1;
    return k < MP_IVAL_BUCKETS / 2 && won[k] < b ? k + 1 : k;
}

/* A table of `cap` slots from the old one; with `won`, buckets halved
 * (dropping intervals that then hold at no snapshot). */
static int ival_rebuild(mp_analysis_t *a, uint64_t cap, const uint32_t *won)
{
    mp_interval_t *t = ival_table(cap);
    if (!t)
        return MEMPROF_ENOMEM;
    uint64_t n = 0;
    for (uint64_t i = 0; i < a->ival_cap; i++) {
        mp_interval_t e = a->ival[i];
        if (e.site == UINT32_MAX)
            continue;
        if (won && (e.f & (MP_IVAL_TEMP | MP_IVAL_LEAK))) {
            e.a >>= 1; /* a time bucket */
        } else if (won) {
            e.a = halve_bound(e.a, won);
            e.f = halve_bound(e.f, won);
            if (e.a >= e.f)
                continue;
        }
        mp_interval_t *d = ival_slot(t, cap, e.site, e.a, e.f);
        if (d->site == UINT32_MAX) {
            *d = (mp_interval_t){e.site, e.a, e.f, {0, 0}};
            n++;
        }
        d->amount.bytes += e.amount.bytes;
        d->amount.count += e.amount.count;
    }
    free(a->ival);
    a->ival = t;
    a->ival_cap = cap;
    a->nival = n;
    return 0;
}

static int ival_add(mp_analysis_t *a, uint32_t site, uint32_t ab, uint32_t f, uint64_t bytes, uint64_t count)
{
    if ((a->nival + 1) * 10 > a->ival_cap * 7 && ival_rebuild(a, a->ival_cap * 2, NULL))
        return MEMPROF_ENOMEM;
    mp_interval_t *d = ival_slot(a->ival, a->ival_cap, site, ab, f);
    if (d->site == UINT32_MAX) {
        *d = (mp_interval_t){site, ab, f, {0, 0}};
        a->nival++;
    }
    d->amount.bytes += bytes;
    d->amount.count += count;
    return 0;
}

/* The first bucket (up to the current one) whose snapshot is at or after
 * moment m; the current bucket + 1 when there is none yet. */
static uint32_t snap_bound(const mp_analysis_t *a, uint64_t m)
{
    uint32_t lo = 0, hi = a->ival_bucket + 1;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (a->ival_snap[mid] >= m)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* The time bucket moment m fell in: the last one that began before it. */
static uint32_t made_bucket(const mp_analysis_t *a, uint64_t m)
{
    uint32_t lo = 0, hi = a->ival_bucket + 1;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (a->ival_start[mid] < m)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo ? lo - 1 : 0;
}

/* The frees waiting in `pend` end at bucket f (dropped if made at or after). */
static int pend_flush(mp_analysis_t *a, uint32_t f)
{
    int rc = 0;
    for (uint64_t i = 0; i < a->npend; i++) {
        mp_interval_t *e = &a->pend[a->pend_used[i]];
        if (!rc && e->a < f)
            rc = ival_add(a, e->site, e->a, f, e->amount.bytes, e->amount.count);
        e->site = UINT32_MAX;
    }
    a->npend = 0;
    return rc;
}

static int pend_add(mp_analysis_t *a, uint32_t site, uint32_t ab, uint64_t bytes, uint64_t count)
{
    if ((a->npend + 1) * 10 > a->pend_cap * 7) { /* grow: flush-free rebuild of the used slots */
        uint64_t cap = a->pend_cap * 2;
        mp_interval_t *t = ival_table(cap);
        uint64_t *used = malloc(cap * sizeof *used);
        if (!t || !used) {
            free(t);
            free(used);
            return MEMPROF_ENOMEM;
        }
        for (uint64_t i = 0; i < a->npend; i++) {
            const mp_interval_t *e = &a->pend[a->pend_used[i]];
            mp_interval_t *d = ival_slot(t, cap, e->site, e->a, e->f);
            *d = *e;
            used[i] = (uint64_t)(d - t);
        }
        free(a->pend);
        free(a->pend_used);
        a->pend = t;
        a->pend_used = used;
        a->pend_cap = cap;
    }
    mp_interval_t *d = ival_slot(a->pend, a->pend_cap, site, ab, 0);
    if (d->site == UINT32_MAX) {
        *d = (mp_interval_t){site, ab, 0, {0, 0}};
        a->pend_used[a->npend++] = (uint64_t)(d - a->pend);
    }
    d->amount.bytes += bytes;
    d->amount.count += count;
    return 0;
}

/* A block of `site` live from moment `made` goes now (freed, or unmapped
 * in part: `count` 0). */
static int ival_free(mp_analysis_t *a, uint32_t site, uint64_t made, uint64_t bytes, uint64_t count, int temp)
{
    uint32_t ab = snap_bound(a, made);
    int rc = 0;
    if (temp || (a->has_end && made <= a->end_moment)) {
        uint32_t tb = made_bucket(a, made);
        if (temp)
            rc = ival_add(a, site, tb, MP_IVAL_TEMP, bytes, count);
        if (!rc && a->has_end && made <= a->end_moment)
            rc = ival_add(a, site, tb, MP_IVAL_LEAK, bytes, count);
    }
    if (rc)
        return rc;
    /* made after the current snapshot and gone before the next: live at
     * none; else its end is this bucket (a new high comes) or the next */
    return ab > a->ival_bucket ? 0 : pend_add(a, site, ab, bytes, count);
}

int mp_analysis_halve_buckets(mp_analysis_t *a)
{
    uint32_t won[MP_IVAL_BUCKETS / 2];
    for (uint32_t i = 0; i < MP_IVAL_BUCKETS / 2; i++) {
        uint32_t w = a->ival_heap[2 * i + 1] > a->ival_heap[2 * i] ? 2 * i + 1 : 2 * i;
        uint64_t r0 = a->ival_rss_kib[2 * i], r1 = a->ival_rss_kib[2 * i + 1];
        won[i] = w;
        a->ival_heap[i] = a->ival_heap[w];
        a->ival_snap[i] = a->ival_snap[w];
        a->ival_start[i] = a->ival_start[2 * i];
        a->ival_rss_kib[i] = r0 > r1 ? r0 : r1;
    }
    size_t half = MP_IVAL_BUCKETS / 2;
    memset(a->ival_heap + half, 0, half * sizeof *a->ival_heap);
    memset(a->ival_snap + half, 0, half * sizeof *a->ival_snap);
    memset(a->ival_start + half, 0, half * sizeof *a->ival_start);
    memset(a->ival_rss_kib + half, 0, half * sizeof *a->ival_rss_kib);
    a->ival_bucket >>= 1;
    a->ival_shift++;
    return ival_rebuild(a, a->ival_cap, won);
}

/* Time moves on to the event's bucket: the current bucket ends, buckets
 * passed start (and have their snapshot) at the heap as it was; past the
 * last bucket, buckets double in length. */
static int ival_advance(mp_analysis_t *a, const memprof_event_t *ev)
{
    uint32_t tu = time_unit(ev->time_us);
    uint64_t before = ev->index; /* the moment before this event */
    if ((tu >> a->ival_shift) <= a->ival_bucket)
        return 0;
    if (pend_flush(a, a->ival_bucket + 1))
        return MEMPROF_ENOMEM;
    while ((tu >> a->ival_shift) >= MP_IVAL_BUCKETS)
        if (mp_analysis_halve_buckets(a))
            return MEMPROF_ENOMEM;
    for (uint32_t b = tu >> a->ival_shift; a->ival_bucket < b;) {
        a->ival_bucket++;
        a->ival_heap[a->ival_bucket] = a->live.bytes;
        a->ival_snap[a->ival_bucket] = before;
        a->ival_start[a->ival_bucket] = before;
    }
    return 0;
}

const mp_interval_t *mp_analysis_intervals(const mp_analysis_t *a, uint64_t *slots, uint32_t *nbuckets,
                                           uint64_t *bucket_us)
{
    *slots = a->ival ? a->ival_cap : 0;
    *nbuckets = a->ival ? a->ival_bucket + 1 : 0;
    *bucket_us = (uint64_t)MP_TIME_UNIT_US << a->ival_shift;
    return a->ival;
}

/* A new high of the current bucket: its snapshot moves to now, after
 * every free waiting, which then ends here. */
static inline int ival_high(mp_analysis_t *a)
{
    a->ival_heap[a->ival_bucket] = a->live.bytes;
    a->ival_snap[a->ival_bucket] = a->ival_now;
    return a->npend ? pend_flush(a, a->ival_bucket) : 0;
}

static inline int check_peak(mp_analysis_t *a, const memprof_event_t *ev)
{
    if (a->live.bytes > a->series_high)
        a->series_high = a->live.bytes;
    if (a->live.bytes > a->peak.bytes) {
        a->peak = a->live;
        a->peak_index = ev->index;
        a->peak_time_us = ev->time_us;
        a->peak_epoch++;
    }
    return a->ival && a->live.bytes > a->ival_heap[a->ival_bucket] ? ival_high(a) : 0;
}

/* ---- mappings ---- */

/* A range's length, cut at the end of the address space (a hostile size
 * must not wrap: mappings are kept sorted and disjoint). */
static inline uint64_t range_len(uint64_t addr, uint64_t len)
{
    return len > UINT64_MAX - addr ? UINT64_MAX - addr : len;
}

/* Heap figures move with an anonymous mapping; a file mapping's go apart. */
static int map_account(mp_analysis_t *a, const mp_mapping_t *m, uint64_t bytes, int count, int add)
{
    uint64_t c = count && !m->frag;
    if (m->out)
        return 0;
    if (m->file) {
        if (add) {
            a->files_live.bytes += bytes, a->files_live.count += c;
            if (a->files_live.bytes > a->files_peak.bytes)
                a->files_peak = a->files_live;
        } else {
            a->files_live.bytes -= bytes, a->files_live.count -= c;
        }
        return 0;
    }
    account(a, m->site, bytes, c, add ? 1 : -1);
    return !add && a->ival ? ival_free(a, m->site, m->made, bytes, c, 0) : 0;
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
        if (map_account(a, m, hi - lo, !keep_left && !keep_right, 0))
            return MEMPROF_ENOMEM;
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

static int on_map(mp_analysis_t *a, const memprof_event_t *ev, uint32_t site, int file, int out)
{
    if (!out)
        count_new(a, ev, site, file);
    uint64_t size = range_len(ev->addr, ev->size);
    if (size == 0) /* an allocation all the same: it maps nothing */
        return 0;
    /* a new mapping over an old one (MAP_FIXED) replaces that part */
    if (maps_remove(a, ev->addr, size, NULL) < 0)
        return MEMPROF_ENOMEM;
    mp_mapping_t m = {ev->addr, size, a->ival_now, site, (uint8_t)file, 0, (uint8_t)out};
    if (maps_insert_at(a, maps_lower(a, ev->addr), &m))
        return MEMPROF_ENOMEM;
    map_account(a, &m, size, 1, 1);
    return check_peak(a, ev);
}

/* Room for thread ids up to `thread`: thr and thr_seq by id (0: none),
 * the last realloc and mremap by id - 1. */
static int grow_zeroed(void **p, size_t old, size_t n, size_t elem)
{
    void *q = realloc(*p, n * elem);
    if (!q)
        return MEMPROF_ENOMEM;
    memset((char *)q + old * elem, 0, (n - old) * elem);
    *p = q;
    return 0;
}

static MP_NOINLINE int thread_slots_grow(mp_analysis_t *a, uint32_t thread)
{
    uint32_t old = a->thr ? a->nthreads : 0, n = thread + 16;
    if (grow_zeroed((void **)&a->thr, a->thr ? old + 1 : 0, n + 1, sizeof *a->thr) ||
        grow_zeroed((void **)&a->thr_seq, a->thr_seq ? old + 1 : 0, n + 1, sizeof *a->thr_seq) ||
        grow_zeroed((void **)&a->thr_site, a->thr_site ? old + 1 : 0, n + 1, sizeof *a->thr_site) ||
        grow_zeroed((void **)&a->last_realloc_free, old, n, sizeof *a->last_realloc_free) ||
        grow_zeroed((void **)&a->last_mremap, old, n, sizeof *a->last_mremap))
        return MEMPROF_ENOMEM;
    a->nthreads = n;
    return 0;
}

/* Room for `thread` in the per-thread arrays. 0 or MEMPROF_ENOMEM. */
static inline int thread_slots(mp_analysis_t *a, uint32_t thread)
{
    return a->thr && thread <= a->nthreads ? 0 : thread_slots_grow(a, thread);
}

static int on_unmap(mp_analysis_t *a, const memprof_event_t *ev)
{
    mp_mapping_t first = {0};
    int rc = maps_remove(a, ev->addr, ev->size, &first);
    if (rc < 0)
        return rc;
    if (rc == 0)
        a->unmatched_frees++;
    if (rc == 0 || !first.out) /* every free counts, but those of blocks the filter left out */
        a->frees++;
    if (ev->kind == MEMPROF_D_MREMAP && ev->thread) {
        if (thread_slots(a, ev->thread))
            return MEMPROF_ENOMEM;
        mp_mapping_t *last = &a->last_mremap[ev->thread - 1];
        *last = (mp_mapping_t){0}; /* nothing was mapped there: nothing to restore */
        if (rc > 0) {
            uint64_t len = range_len(ev->addr, ev->size);
            /* a RESTORE gives the allocation back only if this took it */
            int counted = !first.frag && first.addr >= ev->addr && first.addr + first.size <= ev->addr + len;
            *last = (mp_mapping_t){ev->addr, len, first.made, first.site, first.file, (uint8_t)!counted, first.out};
        }
    }
    return 0;
}

/* Made by the thread and in the time the options ask for. */
static inline int wanted(const mp_analysis_t *a, const memprof_event_t *ev)
{
    return (!a->opts.thread || ev->thread == a->opts.thread) && ev->time_us >= a->opts.from_us &&
           (!a->opts.to_us || ev->time_us <= a->opts.to_us);
}

static int on_alloc(mp_analysis_t *a, const memprof_event_t *ev)
{
    if (thread_slots(a, ev->thread))
        return MEMPROF_ENOMEM;
    int64_t site = site_of(a, ev->stack, ev->thread, ev->kind);
    if (site < 0)
        return MEMPROF_ENOMEM;
    uint32_t seq = ++a->thr_seq[ev->thread];
    int out = a->filtered && !wanted(a, ev);
    if (ev->kind == MEMPROF_A_MMAP || ev->kind == MEMPROF_A_MMAP_FILE)
        return on_map(a, ev, (uint32_t)site, ev->kind == MEMPROF_A_MMAP_FILE, out);
    if (ev->kind == MEMPROF_A_MREMAP) {
        int file = ev->thread && a->last_mremap[ev->thread - 1].addr && a->last_mremap[ev->thread - 1].file;
        if (ev->thread)
            a->last_mremap[ev->thread - 1].addr = 0;
        return on_map(a, ev, (uint32_t)site, file, out);
    }
    if (!out)
        count_new(a, ev, (uint32_t)site, 0);
    return on_heap_alloc(a, ev, (uint32_t)site, out, seq);
}

/* A block becomes live (a new one, or one a failed realloc gave back). */
static int on_heap_alloc(mp_analysis_t *a, const memprof_event_t *ev, uint32_t site, int out, uint32_t seq)
{
    if (!ev->addr) /* nobody's block (and the live map's empty mark): made, never live */
        return 0;
    if ((a->map_n + 1) * 2 > a->map_cap && map_grow(a)) /* at most half full: short probes */
        return MEMPROF_ENOMEM;
    /* one probe: the block at this address, or the free slot the new one takes */
    uint64_t j = map_home(ev->addr, a->map_cap);
    while (a->map[j].addr && a->map[j].addr != ev->addr)
        j = (j + 1) & (a->map_cap - 1);
    mp_live_t *e = &a->map[j];
    if (e->addr) { /* its free was never seen: the stale block goes, the new one takes its slot */
        if (!e->out) {
            account(a, e->site, e->size, 1, -1);
            if (a->ival && ival_free(a, e->site, e->made, e->size, 1, 0))
                return MEMPROF_ENOMEM;
        }
    } else {
        a->map_n++;
    }
    *e = (mp_live_t){.addr = ev->addr, .size = ev->size, .made = a->ival_now, .site = site, .out = (uint32_t)out,
                     .seq = seq};
    if (out)
        return 0;
    account(a, site, ev->size, 1, 1);
    return check_peak(a, ev);
}

static int on_free(mp_analysis_t *a, const memprof_event_t *ev)
{
    if (ev->kind == MEMPROF_D_MUNMAP || ev->kind == MEMPROF_D_MREMAP)
        return on_unmap(a, ev);
    mp_live_t *e = map_find(a, ev->addr);
    if (!e) {
        a->frees++;
        a->unmatched_frees++;
        return 0;
    }
    if (ev->kind == MEMPROF_D_REALLOC && ev->thread) {
        if (thread_slots(a, ev->thread))
            return MEMPROF_ENOMEM;
        a->last_realloc_free[ev->thread - 1] = *e;
    }
    if (!e->out) {
        a->frees++;
        mp_stackstat_t *st = &a->sites[e->site].s;
        account(a, e->site, e->size, 1, -1);
        /* temporary: its thread made fewer than the threshold of allocations
         * since (a realloc moving it is not the end of its memory) */
        uint32_t thread = a->sites[e->site].thread;
        int temp = ev->kind != MEMPROF_D_REALLOC && a->thr_seq[thread] - e->seq < a->opts.temp_threshold;
        if (temp) {
            a->temporary.bytes += e->size, a->temporary.count++;
            st->temp.bytes += e->size, st->temp.count++;
        }
        if (a->ival && ival_free(a, e->site, e->made, e->size, 1, temp))
            return MEMPROF_ENOMEM;
    }
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
        m.made = a->ival_now; /* its unmap closed an interval: it is live again from now */
        /* over anything recorded as mapped there since: mappings stay disjoint */
        if (maps_remove(a, m.addr, m.size, NULL) < 0 || maps_insert_at(a, maps_lower(a, m.addr), &m))
            return MEMPROF_ENOMEM;
        map_account(a, &m, m.size, 1, 1);
        return m.out ? 0 : check_peak(a, ev);
    }
    mp_live_t *b = &a->last_realloc_free[ev->thread - 1];
    if (!b->addr || b->addr != ev->addr)
        return 0;
    /* it was live before: not a new allocation, and as much in or out of the filter */
    const mp_site_t *site = &a->sites[b->site];
    memprof_event_t again = {MEMPROF_EV_ALLOC, site->kind, site->thread, site->stack, b->addr, b->size,
                             ev->index, ev->time_us, 0};
    mp_live_t was = *b;
    b->addr = 0;
    return on_heap_alloc(a, &again, was.site, (int)was.out, was.seq);
}

static void on_script_end(mp_analysis_t *a, const memprof_event_t *ev)
{
    if (a->has_end)
        return;
    a->has_end = 1;
    a->end_moment = ev->index;
    a->at_end = a->live;
    a->end_index = ev->index;
    a->end_time_us = ev->time_us;
    for (uint32_t i = 0; i < a->nsites; i++)
        a->sites[i].s.at_end = a->sites[i].s.cur;
}

/* ---- memory over time ---- */

static inline void point_merge(mp_point_t *into, const mp_point_t *p)
{
    into->heap = p->heap > into->heap ? p->heap : into->heap;
    into->rss_kib = p->rss_kib > into->rss_kib ? p->rss_kib : into->rss_kib;
}

/* Adds a sample; once the series is full, neighbours are merged two by
 * two and each later point stands for twice as many samples. */
static int series_add(mp_analysis_t *a, const mp_point_t *p)
{
    if (!a->series && !(a->series = malloc(MP_SERIES_MAX * sizeof *a->series)))
        return MEMPROF_ENOMEM;
    if (a->series_merged == 0)
        a->series_next = *p;
    else
        point_merge(&a->series_next, p);
    if (++a->series_merged < a->series_stride)
        return 0;
    a->series_merged = 0;
    a->series[a->nseries++] = a->series_next;
    if (a->nseries == MP_SERIES_MAX) {
        for (uint32_t i = 0; i < MP_SERIES_MAX / 2; i++) {
            a->series[i] = a->series[2 * i];
            point_merge(&a->series[i], &a->series[2 * i + 1]);
        }
        a->nseries = MP_SERIES_MAX / 2;
        a->series_stride *= 2;
    }
    return 0;
}

static int on_time(mp_analysis_t *a, const memprof_event_t *ev)
{
    a->samples++;
    a->rss_now_kib = ev->rss_kib;
    if (ev->rss_kib > a->rss_peak_kib)
        a->rss_peak_kib = ev->rss_kib;
    if (a->ival_rss_kib && ev->rss_kib > a->ival_rss_kib[a->ival_bucket])
        a->ival_rss_kib[a->ival_bucket] = ev->rss_kib;
    if (ev->time_us < a->opts.from_us || (a->opts.to_us && ev->time_us > a->opts.to_us))
        return 0;
    mp_point_t p = {ev->time_us, a->series_high > a->live.bytes ? a->series_high : a->live.bytes, ev->rss_kib};
    a->series_high = a->live.bytes;
    a->series_last_us = ev->time_us;
    return series_add(a, &p);
}

int mp_analysis_run(mp_analysis_t *a, memprof_reader_t *r) { return mp_analysis_run_opts(a, r, NULL); }

/* What each stack and each thread held: the sums of their sites. */
static int sum_sites(mp_analysis_t *a)
{
    uint32_t nst = memprof_reader_node_count(a->r) + 1;
    for (uint32_t i = 0; i < a->nsites; i++)
        nst = a->sites[i].stack >= nst ? a->sites[i].stack + 1 : nst;
    if (!(a->st = calloc(nst, sizeof *a->st)))
        return MEMPROF_ENOMEM;
    a->nst = nst;
    for (uint32_t i = 0; i < a->nsites; i++) {
        mp_site_t *site = &a->sites[i];
        mp_stackstat_t *s = &site->s;
        s->at_peak = s->snap_epoch == a->peak_epoch ? s->snap : s->cur;
        if (!a->has_end)
            s->at_end = s->cur;
        mp_stackstat_t *to[2] = {&a->st[site->stack], &a->thr[site->thread]};
        for (int k = 0; k < 2; k++) {
            mp_stackstat_t *t = to[k];
            t->cur.bytes += s->cur.bytes, t->cur.count += s->cur.count;
            t->at_peak.bytes += s->at_peak.bytes, t->at_peak.count += s->at_peak.count;
            t->at_end.bytes += s->at_end.bytes, t->at_end.count += s->at_end.count;
            t->temp.bytes += s->temp.bytes, t->temp.count += s->temp.count;
        }
        /* a thread's total counts its file mappings too (count_new) */
        a->st[site->stack].total.bytes += s->total.bytes, a->st[site->stack].total.count += s->total.count;
    }
    return 0;
}

/* At the end of the capture: the last bucket ends, and what is still live
 * is live to the end (and leaked, if made before the script ended). */
static int ival_close(mp_analysis_t *a)
{
    if (pend_flush(a, a->ival_bucket + 1))
        return MEMPROF_ENOMEM;
    for (uint64_t i = 0; i < a->map_cap + a->nmaps; i++) {
        uint64_t made, bytes, count;
        uint32_t site;
        if (i < a->map_cap) {
            const mp_live_t *e = &a->map[i];
            if (!e->addr || e->out)
                continue;
            made = e->made, site = e->site, bytes = e->size, count = 1;
        } else {
            const mp_mapping_t *m = &a->maps[i - a->map_cap];
            if (m->file || m->out)
                continue;
            made = m->made, site = m->site, bytes = m->size, count = !m->frag;
        }
        uint32_t ab = snap_bound(a, made);
        if (ab <= a->ival_bucket && ival_add(a, site, ab, MP_IVAL_NEVER, bytes, count))
            return MEMPROF_ENOMEM;
        if ((!a->has_end || made <= a->end_moment) &&
            ival_add(a, site, made_bucket(a, made), MP_IVAL_LEAK, bytes, count))
            return MEMPROF_ENOMEM;
    }
    return 0;
}

/* ---- an aggregated capture: the replay's results, read back ---- */

static mp_amount_t field_amount(const uint64_t *f, unsigned at) { return (mp_amount_t){f[at], f[at + 1]}; }

static int on_aggregate(mp_analysis_t *a, const memprof_event_t *ev)
{
    unsigned n;
    const uint64_t *f = memprof_reader_fields(a->r, &n);
    uint64_t v[MEMPROF_AGG_FIELDS_MAX] = {0}; /* fields a newer writer left out read as 0 */
    memcpy(v, f, n * sizeof *f);
    switch (ev->kind) {
    case MEMPROF_AGG_TOTALS:
        a->allocated = field_amount(v, MEMPROF_AGGT_ALLOCATED);
        a->frees = v[MEMPROF_AGGT_FREES];
        a->unmatched_frees = v[MEMPROF_AGGT_UNMATCHED_FREES];
        a->live = field_amount(v, MEMPROF_AGGT_AT_EXIT);
        a->peak = field_amount(v, MEMPROF_AGGT_PEAK);
        a->peak_index = v[MEMPROF_AGGT_PEAK_INDEX];
        a->peak_time_us = v[MEMPROF_AGGT_PEAK_TIME_US];
        a->has_end = v[MEMPROF_AGGT_HAS_END] != 0;
        a->at_end = field_amount(v, MEMPROF_AGGT_AT_END);
        a->end_index = v[MEMPROF_AGGT_END_INDEX];
        a->end_time_us = v[MEMPROF_AGGT_END_TIME_US];
        a->last_time_us = v[MEMPROF_AGGT_LAST_TIME_US];
        a->samples = v[MEMPROF_AGGT_SAMPLES];
        a->rss_peak_kib = v[MEMPROF_AGGT_RSS_PEAK_KIB];
        a->temporary = field_amount(v, MEMPROF_AGGT_TEMPORARY);
        a->files_live = field_amount(v, MEMPROF_AGGT_FILES_LIVE);
        a->files_peak = field_amount(v, MEMPROF_AGGT_FILES_PEAK);
        a->files_total = field_amount(v, MEMPROF_AGGT_FILES_TOTAL);
        a->events_cut = v[MEMPROF_AGGT_TRUNCATED] != 0;
        return 0;
    case MEMPROF_AGG_SITE: {
        if (v[0] > memprof_reader_node_count(a->r) || v[1] == 0 || v[1] > memprof_reader_thread_count(a->r) ||
            v[2] >= MEMPROF_A_COUNT)
            return MEMPROF_ECORRUPT;
        if (thread_slots(a, (uint32_t)v[1]))
            return MEMPROF_ENOMEM;
        int64_t i = site_of(a, (uint32_t)v[0], (uint32_t)v[1], (uint32_t)v[2]);
        if (i < 0)
            return MEMPROF_ENOMEM;
        mp_stackstat_t *s = &a->sites[i].s;
        s->total = field_amount(v, 3);
        s->snap = field_amount(v, 5); /* at the peak (the latest peak's snapshot) */
        s->snap_epoch = a->peak_epoch;
        s->at_end = field_amount(v, 7);
        s->cur = field_amount(v, 9);
        s->temp = field_amount(v, 11);
        return 0;
    }
    case MEMPROF_AGG_THREAD:
        if (v[0] == 0 || v[0] > memprof_reader_thread_count(a->r))
            return MEMPROF_ECORRUPT;
        if (thread_slots(a, (uint32_t)v[0]))
            return MEMPROF_ENOMEM;
        a->thr[v[0]].total = field_amount(v, 1);
        return 0;
    case MEMPROF_AGG_SIZE:
        if (v[0] >= MP_SIZE_BUCKETS)
            return MEMPROF_ECORRUPT;
        a->sizes[v[0]] = field_amount(v, 1);
        return 0;
    case MEMPROF_AGG_ALLOCATOR:
        if (v[0] >= MEMPROF_A_COUNT)
            return MEMPROF_ECORRUPT;
        a->by_allocator[v[0]] = field_amount(v, 1);
        return 0;
    case MEMPROF_AGG_POINT: {
        if (a->nseries + 1 >= MP_SERIES_MAX)
            return 0; /* a series this long was not written by memprof: the rest is left out */
        mp_point_t p = {v[0], v[1], v[2]};
        return series_add(a, &p);
    }
    default:
        return 0; /* a kind of a newer minor version */
    }
}

int mp_analysis_is_aggregate(const memprof_reader_t *r)
{
    return (memprof_reader_info(r)->options & MEMPROF_OPT_AGGREGATE) != 0;
}

int mp_analysis_begin(mp_analysis_t *a, memprof_reader_t *r, const mp_analysis_opts_t *opts)
{
    memset(a, 0, sizeof *a);
    a->r = r;
    if (opts)
        a->opts = *opts;
    if (!a->opts.temp_threshold)
        a->opts.temp_threshold = 1;
    a->series_stride = 1;
    if (site_rehash(a, 2048) || map_grow(a) || thread_slots(a, 0))
        return MEMPROF_ENOMEM;
    if (mp_analysis_is_aggregate(r)) {
        /* totals per stack: nothing to count again by thread or time */
        if (a->opts.thread || a->opts.from_us || a->opts.to_us || a->opts.temp_threshold != 1)
            return MEMPROF_EAGGREGATE;
        a->opts.intervals = 0;
    }
    a->filtered = a->opts.thread || a->opts.from_us || a->opts.to_us;
    if (a->opts.intervals) {
        a->ival_heap = calloc(MP_IVAL_BUCKETS, sizeof *a->ival_heap);
        a->ival_snap = calloc(MP_IVAL_BUCKETS, sizeof *a->ival_snap);
        a->ival_start = calloc(MP_IVAL_BUCKETS, sizeof *a->ival_start);
        a->ival_rss_kib = calloc(MP_IVAL_BUCKETS, sizeof *a->ival_rss_kib);
        a->ival_cap = a->pend_cap = 1024;
        a->ival = ival_table(a->ival_cap);
        a->pend = ival_table(a->pend_cap);
        a->pend_used = malloc(a->pend_cap * sizeof *a->pend_used);
        if (!a->ival_heap || !a->ival_snap || !a->ival_start || !a->ival_rss_kib || !a->ival || !a->pend ||
            !a->pend_used)
            return MEMPROF_ENOMEM;
        /* times move on at each memory sample: no use for shorter buckets */
        while (((uint64_t)MP_TIME_UNIT_US << a->ival_shift) < memprof_reader_info(r)->interval_us &&
               a->ival_shift < 20)
            a->ival_shift++;
    }
    return 0;
}

int mp_analysis_feed(mp_analysis_t *a)
{
    memprof_event_t ev;
    int rc;
    while ((rc = memprof_reader_next(a->r, &ev)) > 0) {
        if (ev.type != MEMPROF_EV_AGGREGATE) /* those carry their own times */
            a->last_time_us = ev.time_us;
        a->ival_now = ev.index + (ev.type == MEMPROF_EV_ALLOC || ev.type == MEMPROF_EV_FREE);
        if (a->ival && (rc = ival_advance(a, &ev)) < 0)
            return rc;
        switch (ev.type) {
        case MEMPROF_EV_ALLOC: rc = on_alloc(a, &ev); break;
        case MEMPROF_EV_FREE: rc = on_free(a, &ev); break;
        case MEMPROF_EV_RESTORE: rc = on_restore(a, &ev); break;
        case MEMPROF_EV_MARK:
            if (ev.kind == MEMPROF_M_SCRIPT_END)
                on_script_end(a, &ev);
            break;
        case MEMPROF_EV_TIME: rc = on_time(a, &ev); break;
        case MEMPROF_EV_AGGREGATE: rc = on_aggregate(a, &ev); break;
        }
        if (rc < 0)
            return rc;
    }
    return rc;
}

int mp_analysis_finish(mp_analysis_t *a)
{
    /* the events after the last sample: a point at the end of the run */
    if (!mp_analysis_is_aggregate(a->r) && a->last_time_us > a->series_last_us &&
        !(a->opts.to_us && a->last_time_us > a->opts.to_us)) {
        mp_point_t p = {a->last_time_us, a->series_high > a->live.bytes ? a->series_high : a->live.bytes,
                        a->rss_now_kib};
        if (series_add(a, &p))
            return MEMPROF_ENOMEM;
    }
    if (a->series_merged) /* the last, partial point (there is room: a full series is halved) */
        a->series[a->nseries++] = a->series_next;
    a->series_merged = 0;
    free(a->st);
    a->st = NULL;
    if (sum_sites(a) || (a->ival && ival_close(a)))
        return MEMPROF_ENOMEM;
    if (!a->sym && !(a->sym = mp_symbolizer_new()))
        return MEMPROF_ENOMEM;
    if (mp_analysis_add_modules(a))
        return MEMPROF_ENOMEM;
    if (!a->has_end) {
        a->at_end = a->live;
        a->end_index = a->allocated.count + a->frees;
        a->end_time_us = a->last_time_us;
    }
    return 0;
}

int mp_analysis_add_modules(mp_analysis_t *a)
{
    if (!a->sym && !(a->sym = mp_symbolizer_new()))
        return MEMPROF_ENOMEM;
    for (uint32_t id = a->nmodules_sym + 1; id <= memprof_reader_module_count(a->r); id++) {
        memprof_module_t m;
        if (memprof_reader_module(a->r, id, &m) == 0 &&
            mp_symbolizer_add_module(a->sym, id, m.path, m.bias, m.build_id, m.build_id_len))
            return MEMPROF_ENOMEM;
        a->nmodules_sym = id;
    }
    return 0;
}

int mp_analysis_run_opts(mp_analysis_t *a, memprof_reader_t *r, const mp_analysis_opts_t *opts)
{
    int rc = mp_analysis_begin(a, r, opts);
    if (rc == 0)
        rc = mp_analysis_feed(a);
    return rc < 0 ? rc : mp_analysis_finish(a);
}

int mp_analysis_now(mp_analysis_t *a, uint32_t thread)
{
    uint32_t nst = memprof_reader_node_count(a->r) + 1;
    if (nst > a->nst) {
        free(a->st);
        if (!(a->st = malloc((size_t)nst * sizeof *a->st)))
            return (a->nst = 0), MEMPROF_ENOMEM;
        a->nst = nst;
    }
    memset(a->st, 0, (size_t)a->nst * sizeof *a->st);
    for (uint32_t i = 0; i < a->nsites; i++) {
        const mp_site_t *site = &a->sites[i];
        if ((thread && site->thread != thread) || site->stack >= a->nst)
            continue;
        mp_stackstat_t *t = &a->st[site->stack];
        const mp_stackstat_t *s = &site->s;
        mp_amount_t peak = s->snap_epoch == a->peak_epoch ? s->snap : s->cur;
        t->cur.bytes += s->cur.bytes, t->cur.count += s->cur.count;
        t->total.bytes += s->total.bytes, t->total.count += s->total.count;
        t->at_peak.bytes += peak.bytes, t->at_peak.count += peak.count;
    }
    return 0;
}

void mp_analysis_free(mp_analysis_t *a)
{
    free(a->st);
    free(a->sites);
    free(a->site_hash);
    free(a->thr_site);
    free(a->ival);
    free(a->ival_heap);
    free(a->ival_snap);
    free(a->ival_start);
    free(a->ival_rss_kib);
    free(a->pend);
    free(a->pend_used);
    free(a->map);
    free(a->last_realloc_free);
    free(a->last_mremap);
    free(a->thr);
    free(a->thr_seq);
    free(a->series);
    free(a->maps);
    if (a->sym)
        mp_symbolizer_free(a->sym);
    memset(a, 0, sizeof *a);
}

mp_amount_t mp_analysis_stack_peak(const mp_analysis_t *a, uint32_t id)
{
    return id < a->nst ? a->st[id].at_peak : (mp_amount_t){0, 0};
}
