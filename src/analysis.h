/* analysis.h - replay a capture in order and aggregate it: totals, the heap's
 * high-water mark and what was live then (per stack), what was live when
 * the script ended and at exit. One pass, O(1) work per event. */
#ifndef MP_ANALYSIS_H
#define MP_ANALYSIS_H

#include <stdint.h>

#include "memprof/format.h"
#include "memprof/reader.h"

typedef struct {
    uint64_t bytes, count;
} mp_amount_t;

/* Per stack node. `at_peak` is valid after mp_analysis_run() returns. */
typedef struct {
    mp_amount_t cur, snap, at_peak, at_end, total, temp;
    uint64_t snap_epoch;
} mp_stackstat_t;

/* A site: one stack, in one thread, through one allocator (MEMPROF_A_*).
 * The replay counts per site; per stack and per thread figures are sums. */
typedef struct {
    uint32_t stack, thread, kind;
    mp_stackstat_t s;
} mp_site_t;

/* A live heap block. `out`: made outside the filter (another thread, another
 * time): kept only so that its free is known. `made`: the moment it became
 * live (moments count the allocations and frees applied: the state after
 * event index i is moment i + 1). */
typedef struct {
    uint64_t addr, size, made;
    uint32_t site : 31, out : 1;
    uint32_t seq;       /* its thread's allocation count when it was made */
} mp_live_t;

/* A live mapping (mmap, mremap). Mappings can be unmapped in part, so
 * they are kept sorted by address, apart from the heap blocks. */
typedef struct {
    uint64_t addr, size, made;
    uint32_t site;
    uint8_t file;       /* backed by a file: not heap, counted apart */
    uint8_t frag;       /* the rest of a mapping split by a partial unmap:
                           bytes, but not another allocation */
    uint8_t out;        /* outside the filter, as for heap blocks */
} mp_mapping_t;

/* Intervals (mp_analysis_opts_t.intervals): what each site held over time,
 * in at most MP_IVAL_BUCKETS buckets of time (each MP_TIME_UNIT_US << shift
 * long, the shift growing with the run; never shorter than the capture's
 * memory sampling interval, at which times move on). Each bucket has a
 * snapshot: the moment its heap was highest. Three kinds, by `f`:
 * - the heap at the snapshots: the blocks of a site live at the snapshot of
 *   every bucket p with a <= p < f (f MP_IVAL_NEVER: to the end). Blocks
 *   live at no snapshot are left out.
 * - MP_IVAL_TEMP: temporary blocks of a site made in bucket a.
 * - MP_IVAL_LEAK: blocks of a site made in bucket a and still live when the
 *   script ended (at exit without a script-end mark). */
typedef struct {
    uint32_t site, a, f;
    mp_amount_t amount;
} mp_interval_t;
#define MP_TIME_UNIT_US 128u
#define MP_IVAL_BUCKETS 512u
#define MP_IVAL_NEVER 0x3fffffffu
#define MP_IVAL_LEAK 0x40000000u
#define MP_IVAL_TEMP 0x80000000u

/* What a replay counts: allocations made by `thread` (0: any) between
 * from_us and to_us (microseconds from the start; to_us 0: the end). A
 * heap block is temporary when it is freed before its thread has made
 * temp_threshold more allocations (0: 1, freed before the next). */
typedef struct {
    uint64_t from_us, to_us;
    uint32_t thread;
    uint32_t temp_threshold;
    int intervals;      /* keep intervals and per-bucket memory (flamegraph ranges) */
} mp_analysis_opts_t;

/* One point of the memory-over-time series, at each memory sample and at
 * the end of the run: the highest heap counted (filtered) since the point
 * before, and the process's resident set (long runs merge neighbours,
 * keeping the highest: the series stays under MP_SERIES_MAX). */
typedef struct {
    uint64_t time_us, heap, rss_kib;
} mp_point_t;
#define MP_SERIES_MAX 8192u

/* Allocation sizes by power of two: bucket b holds sizes in [2^(b-1), 2^b)
 * (bucket 0: size 0). */
#define MP_SIZE_BUCKETS 65

typedef struct mp_analysis_s {
    memprof_reader_t *r;
    mp_analysis_opts_t opts;
    int filtered;               /* opts let some allocations out (by thread or time) */
    mp_amount_t temporary;      /* heap blocks freed right after they were made */
    mp_amount_t sizes[MP_SIZE_BUCKETS];
    /* per thread (indexed by thread id, [0] for none): what st[] holds per stack */
    mp_stackstat_t *thr;
    uint32_t *thr_seq;          /* allocations each thread has made */
    mp_point_t *series;
    uint32_t nseries, series_stride, series_merged;
    mp_point_t series_next;     /* samples being merged into the next point */
    uint64_t series_high, series_last_us; /* the highest heap since the last point, and its time */
    mp_amount_t allocated;      /* every allocation made */
    uint64_t frees, unmatched_frees;
    mp_amount_t live;           /* now (at the end of the replay: at exit) */
    mp_amount_t peak;           /* heap bytes at the high-water mark, and blocks live then */
    uint64_t peak_index, peak_time_us, peak_epoch;
    int has_end;                /* the script-end mark was seen */
    mp_amount_t at_end;         /* live at the mark (or at exit without one) */
    uint64_t end_index, end_time_us;
    uint64_t last_time_us;
    uint64_t samples, rss_peak_kib;     /* memory samples (TIME records) and their largest RSS */
    uint64_t rss_now_kib;       /* the last sample's RSS (events only: not in an aggregate) */
    mp_stackstat_t *st;         /* indexed by node id, 0 = none (sums of the sites, after the replay) */
    uint32_t nst;
    mp_site_t *sites;
    uint32_t nsites, sites_cap;
    uint32_t *site_hash;        /* open addressing: site index + 1, 0 empty */
    uint32_t site_hash_cap;
    uint32_t *thr_site;         /* per thread: its last site + 1 (most allocations repeat one) */
    /* intervals, when asked for: a hash on (site, a, f) (site UINT32_MAX: empty) */
    mp_interval_t *ival;
    uint64_t nival, ival_cap;
    uint32_t ival_shift;        /* buckets are MP_TIME_UNIT_US << ival_shift long */
    uint32_t ival_bucket;       /* the bucket of the last event */
    uint64_t ival_now;          /* the moment of the event being applied */
    uint64_t end_moment;        /* the moment of the script-end mark */
    uint64_t *ival_heap;        /* per bucket: the highest heap in it */
    uint64_t *ival_snap;        /* per bucket: the moment it was first that high */
    uint64_t *ival_start;       /* per bucket: the moment it began */
    /* frees since the current bucket's snapshot, whose end is not known
     * yet (at the next high in the bucket, or the bucket's end); a hash on
     * (site, a, f: 1 when a is not known yet either), and its used slots */
    mp_interval_t *pend;
    uint64_t npend, pend_cap;
    uint64_t *pend_used;
    uint64_t *ival_rss_kib;     /* per bucket: the highest RSS sampled in it (0: none) */
    /* live blocks: open addressing on the address */
    mp_live_t *map;
    uint64_t map_cap, map_n;
    /* per thread: the block freed by its last realloc (for RESTORE), and
     * the first range its last mremap moved (for its file flag) */
    mp_live_t *last_realloc_free;
    mp_mapping_t *last_mremap;
    uint32_t nthreads;
    /* mappings, sorted by address */
    mp_mapping_t *maps;
    uint64_t nmaps, maps_cap;
    /* file-backed mappings: not in any heap figure */
    mp_amount_t files_live, files_peak, files_total;
    /* every allocation by allocator (MEMPROF_A_*), and mapped-file ones apart */
    mp_amount_t by_allocator[MEMPROF_A_COUNT];
    /* native frames' names, from the objects the capture lists (made by
     * mp_analysis_run, files opened on first use) */
    struct mp_symbolizer_s *sym;
    uint32_t nmodules_sym;      /* modules given to sym so far */
    uint32_t problems_told;     /* modules whose problem was reported */
    int events_cut;             /* an aggregated capture of events that ended early */
} mp_analysis_t;

/* Reads every event of r. Returns 0 (also for a truncated capture: see
 * memprof_reader_info(r)->truncated) or a reader error. */
int mp_analysis_run(mp_analysis_t *a, memprof_reader_t *r);
/* The same, counting only what opts lets through (NULL: everything). */
int mp_analysis_run_opts(mp_analysis_t *a, memprof_reader_t *r, const mp_analysis_opts_t *opts);
/* The same in steps, for a capture read as it arrives (a stream): begin,
 * then feed whenever the reader has more (MEMPROF_EAGAIN: it needs more
 * input; 0: the capture ended), then finish once. In between, `live`,
 * `peak`, `allocated` and each site's `cur` are the figures so far. An
 * aggregated capture (memprof run --aggregate) is read back the same way;
 * begin refuses it MEMPROF_EAGGREGATE when opts filter by thread or time
 * or count temporary allocations other than by 1, and drops intervals. */
int mp_analysis_begin(mp_analysis_t *a, memprof_reader_t *r, const mp_analysis_opts_t *opts);
int mp_analysis_feed(mp_analysis_t *a);
int mp_analysis_finish(mp_analysis_t *a);
/* 1 for a capture of AGGREGATE records instead of events. */
int mp_analysis_is_aggregate(const memprof_reader_t *r);
/* While a capture is read: st[] per stack now (cur), allocated in all
 * (total) and at the peak so far (at_peak), counting the sites of `thread`
 * only (0: all). */
int mp_analysis_now(mp_analysis_t *a, uint32_t thread);
/* Gives the symbolizer the modules the capture listed since last time. */
int mp_analysis_add_modules(mp_analysis_t *a);
/* The size bucket (of MP_SIZE_BUCKETS) of an allocation size. */
unsigned mp_size_bucket(uint64_t size);
void mp_analysis_free(mp_analysis_t *a);

/* The interval table's slots (site UINT32_MAX: empty) and the number of
 * buckets used, each `*bucket_us` long. */
const mp_interval_t *mp_analysis_intervals(const mp_analysis_t *a, uint64_t *slots, uint32_t *nbuckets,
                                           uint64_t *bucket_us);

/* Buckets twice as long (after the replay, or while the buckets are full):
 * two become one, whose snapshot is the higher of theirs. 0 or
 * MEMPROF_ENOMEM. */
int mp_analysis_halve_buckets(mp_analysis_t *a);

/* Amount of stack `id` at the peak / at script end (0 for unknown ids). */
mp_amount_t mp_analysis_stack_peak(const mp_analysis_t *a, uint32_t id);

#endif
