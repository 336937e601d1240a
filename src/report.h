/* report.h - what every reporter needs on top of the analysis: source
 * frames for stack nodes, the heaviest locations, human sizes, and the
 * JSON shapes shared by the reports. Never prints, never exits. */
#ifndef MP_REPORT_H
#define MP_REPORT_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "analysis.h"

typedef struct {
    const char *function, *file;    /* never NULL ("?" when unknown) */
    int line;       /* -1 when unknown */
    int pseudo;     /* a memprof pseudo-frame, not Python code */
    int native;     /* a native (C/C++) frame */
    const char *module; /* native: the object's path, NULL when unknown */
    uint64_t offset;    /* native: offset in the module (absolute address without one) */
    char buf[192];      /* room for a made-up name ("libz.so.1+0x1f2e") */
} mp_srcframe_t;

/* Frame of node `id` (1-based) and its parent node (0 at the root). Native
 * frames are symbolized offline (function, file and line from the objects
 * the capture lists), else named module+offset. */
int mp_node_frame(const mp_analysis_t *a, uint32_t id, mp_srcframe_t *out, uint32_t *parent);
/* One line per module that could not be symbolized (missing or changed
 * file), each reported once; NULL when there is none left to say. */
const char *mp_symbol_problem(const mp_analysis_t *a);

typedef enum { MP_AT_PEAK, MP_AT_END, MP_TOTAL, MP_NOW } mp_when_t;

/* A location is the innermost Python frame of a stack (code object and
 * line), or its native leaf when it has no Python frame: several stacks can
 * share it. `node` names it, `stack` is the stack holding the most bytes. */
typedef struct {
    uint32_t code;      /* 0: a native location (module in line, offset) */
    int line;
    uint64_t offset;
    uint32_t node;
    mp_amount_t amount;
    uint32_t stack;
    uint64_t stack_bytes;
    uint32_t nstacks;
} mp_location_t;

/* The `limit` locations holding the most bytes at `when`, heaviest first.
 * *out is malloc'ed; *n may be less than limit. */
int mp_top_locations(const mp_analysis_t *a, mp_when_t when, size_t limit, mp_location_t **out, size_t *n);
/* The same, ordered by number of allocations when by_count is set. */
int mp_top_locations_by(const mp_analysis_t *a, mp_when_t when, int by_count, size_t limit, mp_location_t **out,
                        size_t *n);

/* "malloc", "mmap (file)", "PyObject_Malloc"...; "?" for an unknown kind. */
const char *mp_allocator_name(unsigned kind);

/* "12.3 MiB" style; buf of at least 32 bytes. */
const char *mp_human_bytes(uint64_t n, char *buf, size_t len);
/* A size: a number (a fraction too), then optionally B, K, KB, KiB, M, MB,
 * MiB, G, GB, GiB, T, TB or TiB, any case, spaces allowed before it. Every
 * unit is a power of 1024, KB as KiB (as pytest-memray reads them). 0, or
 * -1 for anything else (negative, too big, no number). */
int mp_parse_size(const char *s, uint64_t *out);
/* "1,234,567"; buf of at least 32 bytes. */
const char *mp_group_digits(uint64_t n, char *buf, size_t len);

/* JSON pieces (NULL on out of memory). */
cJSON *mp_json_amount(mp_amount_t x); /* {bytes, allocations} */
cJSON *mp_json_stack(const mp_analysis_t *a, uint32_t node);
cJSON *mp_json_location(const mp_analysis_t *a, const mp_location_t *loc);
cJSON *mp_json_capture(const memprof_reader_t *r, const char *path);
/* What `memprof summary --json` prints: the capture, totals, the peak, leaks,
 * at exit, mapped files, memory samples, threads, allocators and the `top`
 * heaviest locations at the peak and at the end, each with its stack. */
cJSON *mp_json_summary(const mp_analysis_t *a, const char *path, size_t top);

/* "function (file:line)" with the file's base name ("function (file)"
 * without a line, the function alone for a pseudo-frame), cut to `width`
 * bytes with "..." at the end (never inside a UTF-8 character). */
const char *mp_frame_label(const mp_srcframe_t *f, size_t width, char *buf, size_t len);
/* {function, file, line, native, module}: a frame as in mp_json_stack. */
cJSON *mp_json_frame(const mp_srcframe_t *f);

/* What stack node `node` holds, itself or with its callees. */
typedef struct {
    mp_amount_t amount;
    uint32_t node;
} mp_node_amount_t;

/* *into += x. */
void mp_amount_add(mp_amount_t *into, mp_amount_t x);
/* Biggest first: by bytes, then blocks, then node id (a stable order). */
void mp_sort_node_amounts(mp_node_amount_t *v, size_t n);

#endif
