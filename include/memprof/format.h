/* format.h - constants of the capture file format, version 1.1.
 *
 * These numbers are the format: they match docs/format.md exactly and are
 * defined nowhere else. A change that an older reader could misread bumps
 * MEMPROF_FORMAT_MAJOR; an addition an older reader must refuse bumps MINOR.
 */
#ifndef MEMPROF_FORMAT_H
#define MEMPROF_FORMAT_H

#define MEMPROF_FORMAT_MAJOR 1
#define MEMPROF_FORMAT_MINOR 2

/* File = header, one LZ4 frame of records, trailer. */
#define MEMPROF_MAGIC "\x89MEMPROF"   /* 8 bytes, at offset 0 */
#define MEMPROF_MAGIC_LEN 8
#define MEMPROF_TRAILER_MAGIC "\x89MPTRAIL" /* 8 bytes, after the LZ4 end mark */
#define MEMPROF_HEADER_FIXED 16       /* magic, u16 major, u16 minor, u32 tlv length */
#define MEMPROF_TLV_MAX (1u << 20)    /* longest TLV area a reader accepts */

/* LZ4 frame as memprof writes it: linked blocks (each block may refer to
 * the one before it, and only to that one), block checksums, 64 KiB blocks,
 * no content size, no content checksum, no dictionary. */
#define MEMPROF_LZ4F_MAGIC 0x184D2204u
#define MEMPROF_LZ4F_FLG 0x50u        /* version 01, B.Checksum (blocks linked) */
#define MEMPROF_LZ4F_BD 0x40u         /* block max size 64 KiB */
#define MEMPROF_BLOCK_MAX 65536u      /* largest decompressed block */
#define MEMPROF_LZ4F_UNCOMPRESSED 0x80000000u

/* Header TLV tags: u8 tag, varint length, bytes. Unknown tags are skipped. */
enum memprof_header_tag {
    MEMPROF_H_PID = 1,          /* varint */
    MEMPROF_H_PPID = 2,         /* varint */
    MEMPROF_H_START_REALTIME = 3, /* varint, ns since the Unix epoch */
    MEMPROF_H_START_MONOTONIC = 4, /* varint, CLOCK_MONOTONIC ns */
    MEMPROF_H_ARGV = 5,         /* NUL-terminated strings, one per argument */
    MEMPROF_H_PYTHON_VERSION = 6, /* string, sys.version; absent without Python */
    MEMPROF_H_PYTHON_HEXVERSION = 7, /* varint, sys.hexversion */
    MEMPROF_H_OPTIONS = 8,      /* varint, MEMPROF_OPT_* bits */
    MEMPROF_H_EXECUTABLE = 9,   /* string, /proc/self/exe */
    MEMPROF_H_PAGE_SIZE = 10,   /* varint */
    MEMPROF_H_TOOL_VERSION = 11, /* string, memprof's version */
    MEMPROF_H_PYSTACK = 12,     /* varint, memprof_pystack_mode */
    MEMPROF_H_INTERVAL_US = 13, /* varint: memory sampling interval (1.1) */
    MEMPROF_H_PARENT_PID = 14,  /* varint: the profiled parent this process descends from (1.1) */
};

enum memprof_pystack_mode {
    MEMPROF_PYSTACK_NONE = 0,        /* no Python in the process */
    MEMPROF_PYSTACK_WALKER = 1,      /* frames read at allocation time */
    MEMPROF_PYSTACK_UNSUPPORTED = 2, /* Python of a version this build cannot walk */
};

/* Option bits recorded in MEMPROF_H_OPTIONS. */
#define MEMPROF_OPT_PYTHON_STACKS 0x1u
#define MEMPROF_OPT_NATIVE 0x2u          /* native stacks, merged with Python's (1.1) */
#define MEMPROF_OPT_PYMEM 0x4u           /* PyMem RAW/MEM/OBJ domains traced (1.1) */
#define MEMPROF_OPT_FOLLOW_FORK 0x8u     /* children write captures of their own (1.1) */
#define MEMPROF_OPT_MID_RUN 0x10u        /* began mid-run (a Tracker, an attach): blocks made before are
                                            not known, and frees of them are ignored (1.1) */
#define MEMPROF_OPT_ATTACHED 0x20u       /* started by memprof attach in a running process (1.1) */
#define MEMPROF_OPT_AGGREGATE 0x40u      /* an aggregated capture (memprof run --aggregate): AGGREGATE
                                            records instead of events (1.2) */

/* Trailer TLV tags (after the trailer magic: u32 length, TLVs, u32 xxh32). */
enum memprof_trailer_tag {
    MEMPROF_T_END_REALTIME = 1,  /* varint ns */
    MEMPROF_T_END_MONOTONIC = 2, /* varint ns */
    MEMPROF_T_EVENTS = 3,        /* varint: allocation + free records */
    MEMPROF_T_ALLOCS = 4,        /* varint */
    MEMPROF_T_FREES = 5,         /* varint */
    MEMPROF_T_BLOCKS = 6,        /* varint: LZ4 blocks in the frame */
    MEMPROF_T_TRACKER_ALLOCS = 7, /* varint: allocator calls the recorder itself made (must be 0) */
};

/* Record types: the low 4 bits of a record's first byte; the high 4 bits
 * carry a small type-specific field ("arg"). 0 is invalid on purpose. */
enum memprof_record_type {
    MEMPROF_R_ALLOC = 1,   /* arg=allocator; addr, size, zz stack delta */
    MEMPROF_R_FREE = 2,    /* arg=deallocator; addr; munmap/mremap: then varint length (1.1) */
    MEMPROF_R_THREAD = 3,  /* arg=0: varint thread index (switch); arg=1: new thread, varint tid;
                              arg=2: name, varint thread index, name sid (1.1) */
    MEMPROF_R_STRING = 4,  /* varint length, bytes (UTF-8) */
    MEMPROF_R_CODE = 5,    /* arg=flags; filename sid, qualname sid, firstlineno */
    MEMPROF_R_NODE = 6,    /* arg=0: varint (new id - parent), code id, zz(line - firstlineno) + 1 (0: no line);
                              arg=1 native (1.1): varint (new id - parent), module id (0: none),
                              offset from the module's load bias (absolute address without module) */
    MEMPROF_R_TIME = 7,    /* varint us since start, varint rss KiB */
    MEMPROF_R_MARK = 8,    /* arg=mark kind; varint us since start */
    MEMPROF_R_RESTORE = 9, /* addr: undo this thread's last FREE at addr */
    MEMPROF_R_ALLOC_SAME = 10,  /* arg=allocator; addr, size; stack = the previous ALLOC's */
    MEMPROF_R_FREE_RECENT = 11, /* arg=k: plain free of the k-th most recent allocation's address */
    MEMPROF_R_REUSE_SAME = 12,  /* arg=k: an allocation at the k-th most recently freed address
                                   by the previous allocation's allocator (1.1; 1.0: malloc);
                                   size; stack = the previous ALLOC's */
    MEMPROF_R_REUSE = 13,       /* arg=k: as REUSE_SAME, then zz stack delta */
    MEMPROF_R_MODULE = 14,      /* (1.1) arg=0 loaded: varint id (next), varint load bias, path sid,
                                   varint build-id length, build id, varint segments,
                                   per segment varint vaddr, varint memsz; arg=1 unloaded: varint id */
    MEMPROF_R_AGGREGATE = 15,   /* (1.2) arg=MEMPROF_AGG_*; varint n, then n varints (readers
                                   take the fields they know and skip the rest) */
};

/* AGGREGATE records: what a replay of the events found, for a capture that
 * keeps no events. Fields in order; amounts are two fields, bytes then
 * allocations. See docs/format.md. */
enum memprof_aggregate_kind {
    MEMPROF_AGG_TOTALS = 0,   /* the MEMPROF_AGGT_* fields */
    MEMPROF_AGG_SITE = 1,     /* stack node, thread index, allocator, then amounts: allocated in all,
                                 live at the peak, live at script end, live at exit, temporary */
    MEMPROF_AGG_THREAD = 2,   /* thread index, amount allocated (file mappings too) */
    MEMPROF_AGG_SIZE = 3,     /* size bucket (0: size 0, b: [2^(b-1), 2^b)), amount */
    MEMPROF_AGG_ALLOCATOR = 4, /* allocator, amount allocated */
    MEMPROF_AGG_POINT = 5,    /* memory over time: us since start, heap bytes, RSS KiB */
};
#define MEMPROF_AGG_FIELDS_MAX 64   /* most fields a reader keeps of one record */

/* MEMPROF_AGG_TOTALS fields (indexes). */
enum memprof_aggregate_totals {
    MEMPROF_AGGT_ALLOCATED = 0,   /* amount (2 fields) */
    MEMPROF_AGGT_FREES = 2,
    MEMPROF_AGGT_UNMATCHED_FREES = 3,
    MEMPROF_AGGT_AT_EXIT = 4,     /* amount */
    MEMPROF_AGGT_PEAK = 6,        /* amount */
    MEMPROF_AGGT_PEAK_INDEX = 8,  /* allocations and frees before the peak */
    MEMPROF_AGGT_PEAK_TIME_US = 9,
    MEMPROF_AGGT_HAS_END = 10,    /* 1: the script-end mark was seen */
    MEMPROF_AGGT_AT_END = 11,     /* amount */
    MEMPROF_AGGT_END_INDEX = 13,
    MEMPROF_AGGT_END_TIME_US = 14,
    MEMPROF_AGGT_LAST_TIME_US = 15,
    MEMPROF_AGGT_SAMPLES = 16,
    MEMPROF_AGGT_RSS_PEAK_KIB = 17,
    MEMPROF_AGGT_TEMPORARY = 18,  /* amount */
    MEMPROF_AGGT_FILES_LIVE = 20, /* amount */
    MEMPROF_AGGT_FILES_PEAK = 22, /* amount */
    MEMPROF_AGGT_FILES_TOTAL = 24, /* amount */
    MEMPROF_AGGT_TRUNCATED = 26,  /* 1: the events ended early (the program was killed) */
    MEMPROF_AGGT_COUNT = 27,
};

/* "addr" fields: v = zigzag(delta) << 1 | 1, or, when both the address and
 * the block's previous address are multiples of 16, zigzag(delta / 16) << 1.
 * Records that name an address by k use the block's rings of the 16 most
 * recent allocated and freed addresses (see docs/format.md). */
#define MEMPROF_RING 16

#define MEMPROF_THREAD_SWITCH 0
#define MEMPROF_THREAD_NEW 1
#define MEMPROF_THREAD_NAME 2

#define MEMPROF_NODE_PYTHON 0
#define MEMPROF_NODE_NATIVE 1
#define MEMPROF_MODULE_LOAD 0
#define MEMPROF_MODULE_UNLOAD 1
#define MEMPROF_MODULE_SEGMENTS_MAX 64 /* PT_LOAD segments a module record may list */

/* Allocators (ALLOC arg). MREMAP's result is file-backed when the range it
 * moved was (a reader carries that over from the FREE half). */
enum memprof_allocator {
    MEMPROF_A_MALLOC = 1,
    MEMPROF_A_CALLOC = 2,
    MEMPROF_A_REALLOC = 3,
    MEMPROF_A_REALLOCARRAY = 4,
    MEMPROF_A_POSIX_MEMALIGN = 5,
    MEMPROF_A_ALIGNED_ALLOC = 6,
    MEMPROF_A_MEMALIGN = 7,
    MEMPROF_A_VALLOC = 8,
    MEMPROF_A_PVALLOC = 9,
    MEMPROF_A_MMAP = 10,
    MEMPROF_A_MREMAP = 11,
    MEMPROF_A_PYMEM_RAW = 12,
    MEMPROF_A_PYMEM_MEM = 13,
    MEMPROF_A_PYMEM_OBJ = 14,
    MEMPROF_A_MMAP_FILE = 15,   /* mmap of a file (not heap) (1.1) */
    MEMPROF_A_COUNT = 16,
};

/* Deallocators (FREE arg). */
enum memprof_deallocator {
    MEMPROF_D_FREE = 1,
    MEMPROF_D_REALLOC = 2, /* the old block of a realloc, recorded before the call */
    MEMPROF_D_MUNMAP = 3,  /* frees [addr, addr + length): maybe part of a mapping */
    MEMPROF_D_MREMAP = 4,  /* the old range of an mremap, recorded before the call */
    MEMPROF_D_PYMEM_RAW = 5,
    MEMPROF_D_PYMEM_MEM = 6,
    MEMPROF_D_PYMEM_OBJ = 7,
};

/* Mark kinds (MARK arg). */
enum memprof_mark {
    MEMPROF_M_SCRIPT_END = 1, /* the script's own code finished (atexit time) */
};

/* CODE flags (CODE arg). */
#define MEMPROF_CODE_PSEUDO 0x1u    /* not a Python code object: a named pseudo-frame */

/* Pseudo-frames the recorder defines (their CODE records come first). */
#define MEMPROF_PSEUDO_NO_PYTHON "[no Python frame]"

#endif
