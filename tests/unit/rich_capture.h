/* rich_capture.h - the "rich" capture the format tests share: built with the
 * test kit over many small (200-byte) blocks, it holds every record type
 * (every allocator and deallocator, RESTORE, TIME, MARK, strings, codes,
 * nodes, threads) and every kind of 1.1 (modules loaded with and without a
 * build id and segments, one unloaded; native nodes with and without a
 * module, a Python node under a native one; thread names, one renamed;
 * munmap and mremap frees with their lengths, a failed mremap, file
 * mappings), the compact record forms at both ends of the rings (each
 * asserted as it is written: the encoder must pick exactly the form the
 * format allows), both address forms at their limits, node lines above,
 * below and on their code's first line, and enough noise for many blocks,
 * some stored and most compressed and linked to the block before. The ids
 * a reader must give its table entries come back in a rich_ids_t; the spec
 * tables below say what each string and node must read as. Test code only:
 * failures are Criterion assertions.
 */
#ifndef MP_RICH_CAPTURE_H
#define MP_RICH_CAPTURE_H

#include <stdint.h>

#include "testkit.h"

/* The strings, in the order they are defined (ids id->str[0..]). */
#define RICH_NSTRINGS 11
extern const char *const rich_strings[RICH_NSTRINGS];
/* Thread names (indexes into rich_strings): t1 keeps its name, t2 is
 * renamed (the last name wins), t3 has none. */
#define RICH_NAME_T1 8
#define RICH_NAME_T2_FIRST 9
#define RICH_NAME_T2 10

#define RICH_NNODES 14
#define RICH_NMODULES 3

typedef struct {
    uint32_t str[RICH_NSTRINGS];
    uint32_t code_pseudo, code_main, code_run, code_far;
    uint32_t node[RICH_NNODES + 1];     /* node[0] = 0, the root */
    uint32_t module[RICH_NMODULES + 1]; /* module[0] = 0, none */
    uint32_t t1, t2, t3;
    uint32_t noise_first, noise_count;
} rich_ids_t;

/* The nodes, in the order they are defined: parent index (into node[]),
 * then a Python frame's code and line (-1: none), or a native frame's
 * module (index into module[], 0: none) and offset. */
typedef struct {
    unsigned parent;
    int code; /* 0 pseudo, 1 main (first line 10), 2 run (120), 3 far (INT32_MAX); -1 native */
    int32_t line;
    unsigned module;
    uint64_t offset;
} node_spec_t;

extern const node_spec_t rich_node_specs[RICH_NNODES + 1];
/* Module 2 is unloaded, and module 3 loaded, just before this node. */
#define RICH_NODE_AFTER_RELOAD 14

/* The modules, in the order they are loaded ([0] unused). */
typedef struct {
    unsigned path; /* index into rich_strings */
    uint64_t bias;
    uint8_t build_id[20];
    size_t build_len;
    uint64_t segs[6];
    unsigned nseg;
    int unloaded;  /* by the end of the capture */
} module_spec_t;

extern const module_spec_t rich_module_specs[RICH_NMODULES + 1];

/* The threads' tids (ids id->t1, t2, t3) and the address most blocks are
 * allocated around. */
#define RICH_TID_1 1000u
#define RICH_TID_2 1001u
#define RICH_TID_3 0xfedcba9876543210ull
#define RICH_BASE 0x7f3a00001000ull

/* Rounds of noise at the end (one TIME every 16, a random string every 10). */
#define RICH_NOISE_ROUNDS 150

/* The code id of a node_spec_t's code (0..3; 0 for a native frame). */
uint32_t rich_spec_code(const rich_ids_t *id, int code);

/* Builds the capture (tk_begin through tk_finish) into c; *id must start
 * zeroed. Close it with tk_close(). */
void rich_build(tk_capture_t *c, rich_ids_t *id);

/* Events of one type the kit expects a reader to return. */
uint64_t rich_count_type(const tk_capture_t *c, memprof_event_type_t type);
/* Event records of one record type (any arg) the encoder wrote. */
uint64_t rich_count_tags(const tk_capture_t *c, unsigned type);

#endif
