/* aggregate.h - write what an analysis found as an aggregated capture
 * (memprof run --aggregate): per-site totals and figures, the tables that
 * name the stacks, memory over time; no events. docs/format.md, 1.2. */
#ifndef MP_AGGREGATE_H
#define MP_AGGREGATE_H

#include "analysis.h"

/* After mp_analysis_finish(a): writes the capture to fd. 0 or an errno. */
int mp_aggregate_write(const mp_analysis_t *a, int fd);

#endif
