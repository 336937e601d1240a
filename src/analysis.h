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
    mp_amount_t cur, snap, at_peak, at_end, total;
    uint64_t snap_epoch;
} mp_stackstat_t;

typedef struct {
    uint64_t addr, size;
    uint32_t stack, pad;
} mp_live_t;

/* A live mapping (mmap, mremap). Mappings can be unmapped in part, so
 * they are kept sorted by address, apart from the heap blocks. */
typedef struct {
    uint64_t addr, size;
    uint32_t stack;
    uint16_t file;      /* backed by a file: not heap, counted apart */
    uint16_t frag;      /* the rest of a mapping split by a partial unmap:
                           bytes, but not another allocation */
} mp_mapping_t;

typedef struct mp_analysis_s {
    memprof_reader_t *r;
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
    mp_stackstat_t *st;         /* indexed by node id, 0 = none */
    uint32_t nst;
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
    uint32_t problems_told;     /* modules whose problem was reported */
} mp_analysis_t;

/* Reads every event of r. Returns 0 (also for a truncated capture: see
 * memprof_reader_info(r)->truncated) or a reader error. */
int mp_analysis_run(mp_analysis_t *a, memprof_reader_t *r);
void mp_analysis_free(mp_analysis_t *a);

/* Amount of stack `id` at the peak / at script end (0 for unknown ids). */
mp_amount_t mp_analysis_stack_peak(const mp_analysis_t *a, uint32_t id);

#endif
