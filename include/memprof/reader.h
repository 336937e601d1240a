/* reader.h - decode a memprof capture, one event at a time, in global order.
 *
 * The reader maps the file, checks the header, and decodes LZ4 blocks lazily.
 * Strings, code objects, stack nodes and threads are kept inside the reader
 * as their records go by; events that refer to them (allocations, frees,
 * marks, time samples) are returned by memprof_reader_next(). Every length,
 * offset and id in the file is treated as hostile: a bad file gives an error
 * code, never a crash. A file cut short (no trailer) reads up to the last
 * whole block and then reports the cut through memprof_reader_info().
 */
#ifndef MEMPROF_READER_H
#define MEMPROF_READER_H

#include <stddef.h>
#include <stdint.h>

#include "memprof.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct memprof_reader_s memprof_reader_t;

typedef enum {
    MEMPROF_EV_ALLOC = 1,
    MEMPROF_EV_FREE = 2,
    MEMPROF_EV_RESTORE = 3, /* a realloc failed: the block freed before it is live again */
    MEMPROF_EV_MARK = 4,
    MEMPROF_EV_TIME = 5,
    MEMPROF_EV_AGGREGATE = 6, /* an aggregated capture's record: kind MEMPROF_AGG_*, fields
                                 from memprof_reader_fields() */
} memprof_event_type_t;

typedef struct {
    memprof_event_type_t type;
    unsigned kind;      /* allocator, deallocator or mark kind */
    uint32_t thread;    /* thread index (1-based); 0 for plain frees, marks, time */
    uint32_t stack;     /* ALLOC: stack node id (0: no stack) */
    uint64_t addr;      /* ALLOC/FREE/RESTORE */
    uint64_t size;      /* ALLOC; FREE by munmap/mremap: the length of the range */
    uint64_t index;     /* number of ALLOC/FREE events before this one */
    uint64_t time_us;   /* MARK/TIME: us since start; others: last known time */
    uint64_t rss_kib;   /* TIME */
} memprof_event_t;

/* What the header and trailer say. Strings point into reader memory. */
typedef struct {
    unsigned version_major, version_minor;
    uint64_t pid, ppid;
    uint64_t start_realtime_ns, start_monotonic_ns;
    const char *argv;       /* NUL-separated */
    size_t argv_len;
    const char *python_version; /* "" when absent */
    uint64_t python_hexversion;
    uint64_t options;
    unsigned pystack_mode;
    const char *executable;
    uint64_t page_size;
    const char *tool_version;
    uint64_t interval_us;   /* memory sampling interval (0: not recorded) */
    uint64_t parent_pid;    /* the profiled process this one descends from (0: none) */
    /* trailer; all zero while has_trailer is 0 */
    int has_trailer;        /* 1 once the trailer was read and checked */
    int truncated;          /* 1 when the file ended before its trailer */
    uint64_t end_realtime_ns, end_monotonic_ns;
    uint64_t events, allocs, frees, blocks, tracker_allocs;
} memprof_info_t;

typedef struct {
    uint32_t filename;      /* string id */
    uint32_t qualname;      /* string id */
    uint32_t firstlineno;
    unsigned flags;         /* MEMPROF_CODE_* */
} memprof_code_t;

/* A loaded ELF object of the profiled process, as recorded. */
typedef struct {
    const char *path;
    uint64_t bias;              /* load bias: runtime address - ELF virtual address */
    const uint8_t *build_id;    /* GNU build id, build_id_len bytes (0: none) */
    size_t build_id_len;
    uint32_t nseg;              /* PT_LOAD segments: segs[2i] vaddr, segs[2i+1] memsz */
    const uint64_t *segs;
    int unloaded;               /* dlclose'd since (by the end of what was read) */
} memprof_module_t;

/* Open `path` and check its header. On failure *out is still set (NULL only
 * for MEMPROF_ENOMEM) so that memprof_reader_error() can say what is wrong,
 * naming both versions for a refused one; close it either way. */
MEMPROF_API int memprof_reader_open(const char *path, memprof_reader_t **out);
/* Same, over caller memory that must outlive the reader (tests, fuzzing). */
MEMPROF_API int memprof_reader_open_mem(const void *data, size_t len, memprof_reader_t **out);
MEMPROF_API void memprof_reader_close(memprof_reader_t *r);

/* A capture that arrives in pieces (a pipe, a socket): open it empty, feed
 * it what comes, and say when it ends. memprof_reader_next() returns
 * MEMPROF_EAGAIN (not an error: call it again after more is fed) while the
 * next record, or the header, is not all there; until the header is,
 * memprof_reader_info() is all zero. A stream that ends early is truncated,
 * as a file would be. */
MEMPROF_API int memprof_reader_open_stream(memprof_reader_t **out);
MEMPROF_API int memprof_reader_feed(memprof_reader_t *r, const void *data, size_t n);
MEMPROF_API void memprof_reader_feed_end(memprof_reader_t *r);

/* 1 and *ev filled; 0 at the end (see info->truncated); < 0 on an error,
 * after which the reader returns that error again. */
MEMPROF_API int memprof_reader_next(memprof_reader_t *r, memprof_event_t *ev);
MEMPROF_API const memprof_info_t *memprof_reader_info(const memprof_reader_t *r);
/* One line that says what went wrong and where (valid after an error). */
MEMPROF_API const char *memprof_reader_error(const memprof_reader_t *r);

/* The fields of the AGGREGATE record just returned (at most
 * MEMPROF_AGG_FIELDS_MAX; *n says how many), valid until the next call. */
MEMPROF_API const uint64_t *memprof_reader_fields(const memprof_reader_t *r, unsigned *n);

/* Tables built so far. Ids are 1-based; 0 or an unknown id gives an error. */
MEMPROF_API uint32_t memprof_reader_node_count(const memprof_reader_t *r);
/* A stack node: its parent node (0 at the root), code object and source
 * line (-1 when the frame has no line). A native frame has code 0. */
MEMPROF_API int memprof_reader_node(const memprof_reader_t *r, uint32_t id, uint32_t *parent,
                                    uint32_t *code, int32_t *line);
/* 1 for a native frame, with its module (0: in no known module) and the
 * offset of its return address from the module's load bias (the absolute
 * address without a module); 0 for a Python frame; < 0 for a bad id. */
MEMPROF_API int memprof_reader_node_native(const memprof_reader_t *r, uint32_t id, uint32_t *module,
                                           uint64_t *offset);
MEMPROF_API uint32_t memprof_reader_module_count(const memprof_reader_t *r);
/* out->build_id and out->segs point into the reader's table: valid until the
 * next memprof_reader_next() (which may grow it) or memprof_reader_close(). */
MEMPROF_API int memprof_reader_module(const memprof_reader_t *r, uint32_t id, memprof_module_t *out);
/* The thread's last recorded name, or NULL. */
MEMPROF_API const char *memprof_reader_thread_name(const memprof_reader_t *r, uint32_t index);
MEMPROF_API int memprof_reader_code(const memprof_reader_t *r, uint32_t id, memprof_code_t *out);
MEMPROF_API uint32_t memprof_reader_code_count(const memprof_reader_t *r);
MEMPROF_API const char *memprof_reader_string(const memprof_reader_t *r, uint32_t id);
MEMPROF_API uint32_t memprof_reader_thread_count(const memprof_reader_t *r);
MEMPROF_API uint64_t memprof_reader_thread_tid(const memprof_reader_t *r, uint32_t index);

#ifdef __cplusplus
}
#endif
#endif
