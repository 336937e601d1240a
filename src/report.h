/* report.h - what every reporter needs on top of the analysis: source
 * frames for stack nodes, the heaviest locations, human sizes, and the
 * JSON shapes shared by the reports. Never prints, never exits. */
#ifndef MP_REPORT_H
#define MP_REPORT_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "analysis.h"

typedef struct {
    const char *function, *file;
    int line;       /* -1 when unknown */
    int pseudo;     /* a memprof pseudo-frame, not Python code */
} mp_srcframe_t;

/* Frame of node `id` (1-based) and its parent node (0 at the root). */
int mp_node_frame(const memprof_reader_t *r, uint32_t id, mp_srcframe_t *out, uint32_t *parent);

typedef enum { MP_AT_PEAK, MP_AT_END, MP_TOTAL } mp_when_t;

/* A location is a leaf frame (code object and line): several stacks can
 * end there. `stack` is the one that holds the most bytes. */
typedef struct {
    uint32_t code;
    int line;
    mp_amount_t amount;
    uint32_t stack;
    uint64_t stack_bytes;
    uint32_t nstacks;
} mp_location_t;

/* The `limit` locations holding the most bytes at `when`, heaviest first.
 * *out is malloc'ed; *n may be less than limit. */
int mp_top_locations(const mp_analysis_t *a, mp_when_t when, size_t limit, mp_location_t **out, size_t *n);

/* "12.3 MiB" style; buf of at least 32 bytes. */
const char *mp_human_bytes(uint64_t n, char *buf, size_t len);
/* "1,234,567"; buf of at least 32 bytes. */
const char *mp_group_digits(uint64_t n, char *buf, size_t len);

/* JSON pieces (NULL on out of memory). */
cJSON *mp_json_stack(const memprof_reader_t *r, uint32_t node);
cJSON *mp_json_location(const mp_analysis_t *a, const mp_location_t *loc);
cJSON *mp_json_capture(const memprof_reader_t *r, const char *path);

#endif
