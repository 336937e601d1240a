/* reader.c - decode a capture: header, LZ4 blocks, records, trailer.
 *
 * The file is mapped read-only and decoded one block at a time into a 64 KiB
 * buffer. Every length, id and offset read from the file is checked before
 * use; an inconsistency gives MEMPROF_ECORRUPT with the file offset of the
 * block, a file that stops early is "truncated" (whole blocks before the cut
 * are still returned). Never prints, never exits.
 */
#include "memprof/reader.h"

#include <errno.h>
#include <fcntl.h>
#include <lz4.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "memprof/format.h"
#include "encode.h"
#include "mp_common.h"
#include "xxhash32.h"

typedef struct {
    uint32_t parent, code;  /* code 0: a native frame */
    int32_t line;           /* Python: source line or -1; native: module id */
    uint64_t offset;        /* native: offset from the module's load bias */
} node_t;

typedef struct {
    node_t *v;
    uint32_t n, cap;
} node_table_t;

typedef struct {
    memprof_module_t m;
    uint8_t build_id[255];
    uint64_t segs[2 * MEMPROF_MODULE_SEGMENTS_MAX];
} module_t;

#define DROP_EVERY ((size_t)4 << 20) /* a multiple of the page size */

struct memprof_reader_s {
    const uint8_t *data;
    size_t len;
    int mapped;
    /* a stream (memprof_reader_open_stream): data is sbuf, which holds the
     * bytes fed and not consumed yet; `base` counts the bytes let go before */
    int stream, ended, header_done;
    uint8_t *sbuf;
    size_t scap, base;
    size_t pos;             /* file offset of the next block header */
    size_t dropped;         /* the mapping's pages below this are given back */
    int state;              /* 0 reading blocks, 1 done, < 0 sticky error */
    memprof_info_t info;
    char *strings_mem;      /* header strings, NUL-terminated copies */
    char err[256];

    /* current block; blocks are linked, so the previous one is kept as the
     * dictionary of the next (two buffers used in turn) */
    uint8_t blocks[2][MEMPROF_BLOCK_MAX];
    uint8_t *block;
    size_t blen, bpos;
    size_t block_off;       /* file offset of the current block */
    uint64_t prev_addr;
    uint32_t prev_stack, thread;
    unsigned prev_allocator;  /* of the last allocation record: what a REUSE means (1.1) */
    uint64_t allocated[MEMPROF_RING], freed[MEMPROF_RING];
    unsigned nalloc, nfree;

    uint64_t index, time_us;

    /* tables */
    char **str;
    uint32_t nstr, capstr;
    memprof_code_t *codes;
    uint32_t ncode, capcode;
    node_table_t nodes;
    uint64_t *tids;
    uint32_t *thread_names; /* string id, 0: none */
    uint32_t nthread, capthread;
    module_t *modules;
    uint32_t nmodule, capmodule;

    /* the fields of the last AGGREGATE record */
    uint64_t agg[MEMPROF_AGG_FIELDS_MAX];
    unsigned nagg;
};

static int fail(memprof_reader_t *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(memprof_reader_t *r, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err, sizeof r->err, fmt, ap);
    va_end(ap);
    r->state = code;
    return code;
}

/* Grows *arr (of elem-sized items) so that index `need` fits. */
static int grow(void **arr, uint32_t *cap, uint32_t need, size_t elem)
{
    if (need < *cap)
        return 0;
    uint64_t ncap = *cap ? (uint64_t)*cap * 2 : 64;
    while (ncap <= need)
        ncap *= 2;
    if (ncap > UINT32_MAX)
        return MEMPROF_ELIMIT;
    void *p = realloc(*arr, ncap * elem);
    if (!p)
        return MEMPROF_ENOMEM;
    *arr = p;
    *cap = (uint32_t)ncap;
    return 0;
}

/* ---- header ---------------------------------------------------------------- */

static const char *keep_string(memprof_reader_t *r, const uint8_t *s, size_t n, size_t *used)
{
    char *dst = r->strings_mem + *used;
    memcpy(dst, s, n);
    dst[n] = '\0';
    *used += n + 1;
    return dst;
}

static int parse_tlv_varint(const uint8_t *v, size_t n, uint64_t *out)
{
    const uint8_t *p = v;
    return mp_varint_get(&p, v + n, out) == 0 && p == v + n ? 0 : -1;
}

static int parse_header_tlvs(memprof_reader_t *r, const uint8_t *p, const uint8_t *end)
{
    memprof_info_t *in = &r->info;
    size_t used = 0;
    r->strings_mem = malloc((size_t)(end - p) + 8);
    if (!r->strings_mem)
        return fail(r, MEMPROF_ENOMEM, "out of memory reading the header");
    in->python_version = in->executable = in->tool_version = in->argv = "";
    while (p < end) {
        unsigned tag = *p++;
        uint64_t n;
        if (mp_varint_get(&p, end, &n) || n > (uint64_t)(end - p))
            return fail(r, MEMPROF_ECORRUPT, "corrupted header: bad field length");
        const uint8_t *v = p;
        p += n;
        uint64_t x = 0;
        int is_int = tag != MEMPROF_H_ARGV && tag != MEMPROF_H_PYTHON_VERSION &&
                     tag != MEMPROF_H_EXECUTABLE && tag != MEMPROF_H_TOOL_VERSION;
        if (is_int && tag <= MEMPROF_H_PARENT_PID && parse_tlv_varint(v, n, &x))
            return fail(r, MEMPROF_ECORRUPT, "corrupted header: bad value for field %u", tag);
        switch (tag) {
        case MEMPROF_H_PID: in->pid = x; break;
        case MEMPROF_H_PPID: in->ppid = x; break;
        case MEMPROF_H_START_REALTIME: in->start_realtime_ns = x; break;
        case MEMPROF_H_START_MONOTONIC: in->start_monotonic_ns = x; break;
        case MEMPROF_H_PYTHON_HEXVERSION: in->python_hexversion = x; break;
        case MEMPROF_H_OPTIONS: in->options = x; break;
        case MEMPROF_H_PAGE_SIZE: in->page_size = x; break;
        case MEMPROF_H_PYSTACK: in->pystack_mode = (unsigned)x; break;
        case MEMPROF_H_INTERVAL_US: in->interval_us = x; break;
        case MEMPROF_H_PARENT_PID: in->parent_pid = x; break;
        case MEMPROF_H_ARGV:
            in->argv = keep_string(r, v, n, &used);
            in->argv_len = n;
            break;
        case MEMPROF_H_PYTHON_VERSION: in->python_version = keep_string(r, v, n, &used); break;
        case MEMPROF_H_EXECUTABLE: in->executable = keep_string(r, v, n, &used); break;
        case MEMPROF_H_TOOL_VERSION: in->tool_version = keep_string(r, v, n, &used); break;
        default: break; /* unknown tags of this major version are skipped */
        }
    }
    return 0;
}

static int parse_header(memprof_reader_t *r)
{
    const uint8_t *d = r->data;
    size_t len = r->len;
    if (len == 0)
        return fail(r, MEMPROF_ETRUNCATED, "capture is empty (the process ended before memprof wrote its header)");
    size_t m = len < MEMPROF_MAGIC_LEN ? len : MEMPROF_MAGIC_LEN;
    if (memcmp(d, MEMPROF_MAGIC, m) != 0)
        return fail(r, MEMPROF_EBADMAGIC, "not a memprof capture (bad magic)");
    if (len < MEMPROF_HEADER_FIXED)
        return fail(r, MEMPROF_ETRUNCATED, "capture is truncated inside its header");
    unsigned major = mp_get_le16(d + 8), minor = mp_get_le16(d + 10);
    r->info.version_major = major;
    r->info.version_minor = minor;
    if (major > MEMPROF_FORMAT_MAJOR || (major == MEMPROF_FORMAT_MAJOR && minor > MEMPROF_FORMAT_MINOR))
        return fail(r, MEMPROF_EVERSION,
                    "capture format %u.%u is newer than this memprof reads (%u.%u): upgrade memprof",
                    major, minor, MEMPROF_FORMAT_MAJOR, MEMPROF_FORMAT_MINOR);
    if (major < MEMPROF_FORMAT_MAJOR)
        return fail(r, MEMPROF_EVERSION, "capture format %u.%u is older than this memprof reads (%u.x)",
                    major, minor, MEMPROF_FORMAT_MAJOR);
    uint32_t tlv = mp_get_le32(d + 12);
    if (tlv > MEMPROF_TLV_MAX)
        return fail(r, MEMPROF_ECORRUPT, "corrupted header: length %u", tlv);
    size_t hend = MEMPROF_HEADER_FIXED + (size_t)tlv;
    if (len < hend + 4)
        return fail(r, MEMPROF_ETRUNCATED, "capture is truncated inside its header");
    if (mp_xxh32(d, hend, 0) != mp_get_le32(d + hend))
        return fail(r, MEMPROF_ECORRUPT, "corrupted header: checksum mismatch");
    int rc = parse_header_tlvs(r, d + MEMPROF_HEADER_FIXED, d + hend);
    if (rc)
        return rc;
    r->pos = hend + 4;
    if (len < r->pos + MP_LZ4F_HEADER_LEN) {
        r->info.truncated = 1;
        r->state = 1;
        r->pos = len;
        return 0;
    }
    const uint8_t *f = d + r->pos;
    if (mp_get_le32(f) != MEMPROF_LZ4F_MAGIC || f[4] != MEMPROF_LZ4F_FLG || f[5] != MEMPROF_LZ4F_BD ||
        f[6] != (uint8_t)(mp_xxh32(f + 4, 2, 0) >> 8))
        return fail(r, MEMPROF_ECORRUPT, "corrupted capture: bad LZ4 frame header at offset %zu", r->base + r->pos);
    r->pos += MP_LZ4F_HEADER_LEN;
    return 0;
}

static int open_common(memprof_reader_t *r, memprof_reader_t **out)
{
    *out = r;
    return parse_header(r);
}

int memprof_reader_open_mem(const void *data, size_t len, memprof_reader_t **out)
{
    memprof_reader_t *r = calloc(1, sizeof *r);
    *out = NULL;
    if (!r)
        return MEMPROF_ENOMEM;
    r->data = data;
    r->len = len;
    return open_common(r, out);
}

int memprof_reader_open_stream(memprof_reader_t **out)
{
    memprof_reader_t *r = calloc(1, sizeof *r);
    *out = r;
    if (!r)
        return MEMPROF_ENOMEM;
    r->stream = 1;
    r->data = (const uint8_t *)"";
    return 0;
}

int memprof_reader_feed(memprof_reader_t *r, const void *data, size_t n)
{
    if (r->ended)
        return MEMPROF_EINVAL;
    /* let go of what was read (the block in progress is a copy) */
    if (r->header_done && r->pos > 0 && (r->pos >= r->len / 2 || r->len + n > r->scap)) {
        memmove(r->sbuf, r->sbuf + r->pos, r->len - r->pos);
        r->len -= r->pos;
        r->base += r->pos;
        r->pos = 0;
    }
    if (r->len + n > r->scap) {
        size_t cap = r->scap ? r->scap : 256 * 1024;
        while (cap < r->len + n)
            cap *= 2;
        uint8_t *b = realloc(r->sbuf, cap);
        if (!b)
            return fail(r, MEMPROF_ENOMEM, "out of memory reading the stream");
        r->sbuf = b;
        r->scap = cap;
    }
    memcpy(r->sbuf + r->len, data, n);
    r->len += n;
    r->data = r->sbuf;
    return 0;
}

void memprof_reader_feed_end(memprof_reader_t *r) { r->ended = 1; }

int memprof_reader_open(const char *path, memprof_reader_t **out)
{
    memprof_reader_t *r = calloc(1, sizeof *r);
    *out = NULL;
    if (!r)
        return MEMPROF_ENOMEM;
    *out = r;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return fail(r, e == ENOENT ? MEMPROF_ENOENT : e == EACCES ? MEMPROF_EACCES : MEMPROF_EIO,
                    "cannot open %s: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return fail(r, MEMPROF_EINVAL, "%s is not a regular file", path);
    }
    r->len = (size_t)st.st_size;
    if (r->len > 0) {
        void *m = mmap(NULL, r->len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            close(fd);
            return fail(r, MEMPROF_EIO, "cannot map %s: %s", path, strerror(errno));
        }
        madvise(m, r->len, MADV_SEQUENTIAL);
        r->data = m;
        r->mapped = 1;
    } else {
        r->data = (const uint8_t *)"";
    }
    close(fd);
    return open_common(r, out);
}

void memprof_reader_close(memprof_reader_t *r)
{
    if (!r)
        return;
    if (r->mapped)
        munmap((void *)r->data, r->len);
    free(r->sbuf);
    for (uint32_t i = 0; i < r->nstr; i++)
        free(r->str[i]);
    free(r->str);
    free(r->codes);
    free(r->nodes.v);
    free(r->tids);
    free(r->thread_names);
    free(r->modules);
    free(r->strings_mem);
    free(r);
}

const memprof_info_t *memprof_reader_info(const memprof_reader_t *r) { return &r->info; }

const char *memprof_reader_error(const memprof_reader_t *r)
{
    return r->err[0] ? r->err : "no error";
}

/* ---- trailer and blocks ---------------------------------------------------- */

static int parse_trailer(memprof_reader_t *r)
{
    const uint8_t *d = r->data + r->pos;
    size_t left = r->len - r->pos;
    memprof_info_t *in = &r->info;
    if (left == 0) { /* end mark written, trailer not: cut right there */
        in->truncated = 1;
        return 0;
    }
    size_t m = left < MEMPROF_MAGIC_LEN ? left : MEMPROF_MAGIC_LEN;
    if (memcmp(d, MEMPROF_TRAILER_MAGIC, m) != 0)
        return fail(r, MEMPROF_ECORRUPT, "corrupted capture: bad trailer at offset %zu", r->base + r->pos);
    if (left < MP_TRAILER_FIXED || left < MP_TRAILER_FIXED + (size_t)mp_get_le32(d + 8) + 4) {
        uint32_t tl = left >= MP_TRAILER_FIXED ? mp_get_le32(d + 8) : 0;
        if (tl > MEMPROF_TLV_MAX)
            return fail(r, MEMPROF_ECORRUPT, "corrupted trailer: length %u", tl);
        in->truncated = 1;
        return 0;
    }
    size_t tl = mp_get_le32(d + 8), tend = MP_TRAILER_FIXED + tl;
    if (left != tend + 4)
        return fail(r, MEMPROF_ECORRUPT, "corrupted capture: %zu unexpected bytes after the trailer",
                    left - tend - 4);
    if (mp_xxh32(d, tend, 0) != mp_get_le32(d + tend))
        return fail(r, MEMPROF_ECORRUPT, "corrupted trailer: checksum mismatch");
    const uint8_t *p = d + MP_TRAILER_FIXED, *end = d + tend;
    while (p < end) {
        unsigned tag = *p++;
        uint64_t n, x = 0;
        if (mp_varint_get(&p, end, &n) || n > (uint64_t)(end - p))
            return fail(r, MEMPROF_ECORRUPT, "corrupted trailer: bad field length");
        if (tag <= MEMPROF_T_TRACKER_ALLOCS && parse_tlv_varint(p, n, &x))
            return fail(r, MEMPROF_ECORRUPT, "corrupted trailer: bad value for field %u", tag);
        p += n;
        switch (tag) {
        case MEMPROF_T_END_REALTIME: in->end_realtime_ns = x; break;
        case MEMPROF_T_END_MONOTONIC: in->end_monotonic_ns = x; break;
        case MEMPROF_T_EVENTS: in->events = x; break;
        case MEMPROF_T_ALLOCS: in->allocs = x; break;
        case MEMPROF_T_FREES: in->frees = x; break;
        case MEMPROF_T_BLOCKS: in->blocks = x; break;
        case MEMPROF_T_TRACKER_ALLOCS: in->tracker_allocs = x; break;
        default: break;
        }
    }
    if (in->events != r->index)
        return fail(r, MEMPROF_ECORRUPT, "corrupted capture: trailer counts %llu events, blocks hold %llu",
                    (unsigned long long)in->events, (unsigned long long)r->index);
    in->has_trailer = 1;
    return 0;
}

/* Loads the next block; 1 loaded, 0 end of records (trailer handled). */
static int next_block(memprof_reader_t *r)
{
    size_t left = r->len - r->pos;
    if (r->stream && !r->ended) { /* a block or the trailer not all there yet */
        const uint8_t *d = r->data + r->pos;
        if (left < 4)
            return MEMPROF_EAGAIN;
        uint32_t w = mp_get_le32(d), sz = w & ~MEMPROF_LZ4F_UNCOMPRESSED;
        if (w == 0 ? left < 4 + MP_TRAILER_FIXED ||
                         (mp_get_le32(d + 12) <= MEMPROF_TLV_MAX &&
                          left < 4 + MP_TRAILER_FIXED + (size_t)mp_get_le32(d + 12) + 4)
                   : sz <= MEMPROF_BLOCK_MAX && left < 8 + (size_t)sz)
            return MEMPROF_EAGAIN;
    }
    if (left < 4) {
        r->info.truncated = 1;
        return 0;
    }
    const uint8_t *d = r->data + r->pos;
    uint32_t word = mp_get_le32(d), size = word & ~MEMPROF_LZ4F_UNCOMPRESSED;
    if (word == 0) {
        r->pos += 4;
        int rc = parse_trailer(r);
        return rc < 0 ? rc : 0;
    }
    if (size > MEMPROF_BLOCK_MAX)
        return fail(r, MEMPROF_ECORRUPT, "corrupted capture: block of %u bytes at offset %zu", size, r->base + r->pos);
    if (left < 8 + (size_t)size) {
        r->info.truncated = 1;
        return 0;
    }
    if (mp_xxh32(d + 4, size, 0) != mp_get_le32(d + 4 + size))
        return fail(r, MEMPROF_ECORRUPT, "corrupted capture: checksum mismatch in block at offset %zu", r->base + r->pos);
    uint8_t *prev = r->block, *next = r->block == r->blocks[0] ? r->blocks[1] : r->blocks[0];
    size_t n;
    if (word & MEMPROF_LZ4F_UNCOMPRESSED) {
        memcpy(next, d + 4, size);
        n = size;
    } else {
        int k = LZ4_decompress_safe_usingDict((const char *)d + 4, (char *)next, (int)size, MEMPROF_BLOCK_MAX,
                                              (const char *)prev, prev ? (int)r->blen : 0);
        if (k <= 0)
            return fail(r, MEMPROF_ECORRUPT, "corrupted capture: block at offset %zu does not decompress", r->base + r->pos);
        n = (size_t)k;
    }
    r->block = next;
    r->blen = n;
    r->block_off = r->base + r->pos;
    r->pos += 8 + size;
    /* read blocks are never read again: their pages go, so that the
     * reader's memory does not grow with the file */
    if (r->mapped && r->pos - r->dropped >= DROP_EVERY) {
        size_t upto = r->pos & ~(DROP_EVERY - 1);
        madvise((void *)(r->data + r->dropped), upto - r->dropped, MADV_DONTNEED);
        r->dropped = upto;
    }
    r->bpos = 0;
    r->prev_addr = 0;
    r->prev_stack = 0;
    r->prev_allocator = MEMPROF_A_MALLOC;
    r->thread = 0;
    memset(r->allocated, 0, sizeof r->allocated);
    memset(r->freed, 0, sizeof r->freed);
    r->nalloc = r->nfree = 0;
    return 1;
}

/* ---- records --------------------------------------------------------------- */

static int corrupt_record(memprof_reader_t *r, const char *what)
{
    return fail(r, MEMPROF_ECORRUPT, "corrupted capture: %s in block at offset %zu (record at byte %zu)", what,
                r->block_off, r->bpos);
}

static int add_string(memprof_reader_t *r, const uint8_t *s, size_t n)
{
    int rc = grow((void **)&r->str, &r->capstr, r->nstr, sizeof *r->str);
    if (rc)
        return fail(r, rc, "too many strings in capture");
    char *c = malloc(n + 1);
    if (!c)
        return fail(r, MEMPROF_ENOMEM, "out of memory");
    memcpy(c, s, n);
    c[n] = '\0';
    r->str[r->nstr++] = c;
    return 0;
}

static int add_code(memprof_reader_t *r, unsigned flags, uint64_t fn, uint64_t qn, uint64_t line)
{
    if (fn == 0 || fn > r->nstr || qn == 0 || qn > r->nstr || line > INT32_MAX)
        return corrupt_record(r, "code record names an unknown string");
    int rc = grow((void **)&r->codes, &r->capcode, r->ncode, sizeof *r->codes);
    if (rc)
        return fail(r, rc, "too many code objects in capture");
    r->codes[r->ncode++] = (memprof_code_t){(uint32_t)fn, (uint32_t)qn, (uint32_t)line, flags};
    return 0;
}

static int node_push(memprof_reader_t *r, uint64_t delta, node_t n)
{
    node_table_t *t = &r->nodes;
    uint64_t id = (uint64_t)t->n + 1;
    if (delta == 0 || delta > id)
        return corrupt_record(r, "bad stack node");
    int rc = grow((void **)&t->v, &t->cap, t->n, sizeof *t->v);
    if (rc)
        return fail(r, rc, "too many stack nodes in capture");
    n.parent = (uint32_t)(id - delta);
    t->v[t->n++] = n;
    return 0;
}

static int add_node(memprof_reader_t *r, uint64_t delta, uint64_t code, uint64_t line1)
{
    if (code == 0 || code > r->ncode)
        return corrupt_record(r, "bad stack node");
    int64_t line = -1, d = line1 ? mp_unzigzag(line1 - 1) : 0;
    if (d < INT32_MIN || d > INT32_MAX) /* checked first: firstlineno + d must not overflow */
        return corrupt_record(r, "bad stack node line");
    if (line1)
        line = (int64_t)r->codes[code - 1].firstlineno + d;
    if (line < -1 || line > INT32_MAX)
        return corrupt_record(r, "bad stack node line");
    return node_push(r, delta, (node_t){0, (uint32_t)code, (int32_t)line, 0});
}

static int add_native_node(memprof_reader_t *r, uint64_t delta, uint64_t module, uint64_t offset)
{
    if (module > r->nmodule)
        return corrupt_record(r, "native stack node names an unknown module");
    return node_push(r, delta, (node_t){0, 0, (int32_t)module, offset});
}

static int add_thread(memprof_reader_t *r, uint64_t tid)
{
    uint32_t cap = r->capthread;
    int rc = grow((void **)&r->tids, &cap, r->nthread, sizeof *r->tids);
    if (!rc) {
        cap = r->capthread;
        rc = grow((void **)&r->thread_names, &cap, r->nthread, sizeof *r->thread_names);
    }
    if (rc)
        return fail(r, rc, "too many threads in capture");
    r->capthread = cap;
    r->thread_names[r->nthread] = 0;
    r->tids[r->nthread++] = tid;
    r->thread = r->nthread;
    return 0;
}

#define GET(v)                                     \
    do {                                           \
        if (mp_varint_get(&p, end, &(v)))          \
            return corrupt_record(r, "cut record"); \
    } while (0)

static inline uint64_t next_addr(memprof_reader_t *r, uint64_t v)
{
    int64_t d = mp_unzigzag(v >> 1);
    r->prev_addr += (v & 1) ? (uint64_t)d : (uint64_t)d * 16;
    return r->prev_addr;
}

static inline uint64_t ring_get(const uint64_t *ring, unsigned n, unsigned k)
{
    return ring[(n - 1 - k) & (MEMPROF_RING - 1)];
}

/* MODULE: a loaded object (path, load bias, build id, segments) or an unload. */
static int decode_module(memprof_reader_t *r, unsigned arg, const uint8_t **pp, const uint8_t *end)
{
    const uint8_t *p = *pp;
    uint64_t id, bias, path, blen, nseg;
    GET(id);
    if (arg == MEMPROF_MODULE_UNLOAD) {
        if (id == 0 || id > r->nmodule)
            return corrupt_record(r, "unload of an unknown module");
        r->modules[id - 1].m.unloaded = 1;
        *pp = p;
        return 0;
    }
    if (arg != MEMPROF_MODULE_LOAD || id != (uint64_t)r->nmodule + 1)
        return corrupt_record(r, "bad module record");
    GET(bias);
    GET(path);
    GET(blen);
    if (path == 0 || path > r->nstr || blen > 255 || blen > (uint64_t)(end - p))
        return corrupt_record(r, "bad module record");
    int rc = grow((void **)&r->modules, &r->capmodule, r->nmodule, sizeof *r->modules);
    if (rc)
        return fail(r, rc, "too many modules in capture");
    module_t *m = &r->modules[r->nmodule];
    memcpy(m->build_id, p, (size_t)blen);
    p += blen;
    GET(nseg);
    if (nseg > MEMPROF_MODULE_SEGMENTS_MAX)
        return corrupt_record(r, "bad module record");
    for (uint64_t i = 0; i < 2 * nseg; i++)
        GET(m->segs[i]);
    /* build_id and segs are pointed at when asked for: the table may move */
    m->m = (memprof_module_t){r->str[path - 1], bias, NULL, (size_t)blen, (uint32_t)nseg, NULL, 0};
    r->nmodule++;
    *pp = p;
    return 0;
}

/* ALLOC, ALLOC_SAME, REUSE, REUSE_SAME. */
static int decode_alloc(memprof_reader_t *r, unsigned type, unsigned arg, const uint8_t **pp, const uint8_t *end,
                        memprof_event_t *ev)
{
    const uint8_t *p = *pp;
    uint64_t a = 0, size, c = 0;
    unsigned allocator = arg;
    int reuse = type == MEMPROF_R_REUSE || type == MEMPROF_R_REUSE_SAME;
    if (reuse) {
        /* 1.1: the allocator of the block's previous allocation record (in
         * 1.0 always malloc) */
        allocator = r->info.version_minor >= 1 ? r->prev_allocator : MEMPROF_A_MALLOC;
        a = ring_get(r->freed, r->nfree, arg);
        if (!a)
            return corrupt_record(r, "reuse of an empty ring slot");
        r->prev_addr = a;
    } else {
        GET(a);
        if (arg == 0 || arg >= MEMPROF_A_COUNT)
            return corrupt_record(r, "bad allocation record");
        a = next_addr(r, a);
    }
    GET(size);
    if (type == MEMPROF_R_ALLOC || type == MEMPROF_R_REUSE)
        GET(c);
    if (r->thread == 0)
        return corrupt_record(r, "allocation before any thread");
    /* unsigned: a hostile delta wraps to a huge value and fails the check */
    uint64_t stack = (uint64_t)r->prev_stack + (uint64_t)mp_unzigzag(c);
    if (stack > r->nodes.n)
        return corrupt_record(r, "allocation names an unknown stack");
    r->prev_stack = (uint32_t)stack;
    r->prev_allocator = allocator;
    r->allocated[r->nalloc++ & (MEMPROF_RING - 1)] = a;
    *ev = (memprof_event_t){MEMPROF_EV_ALLOC, allocator, r->thread, (uint32_t)stack, a, size,
                            r->index++, r->time_us, 0};
    *pp = p;
    return 1;
}

/* FREE, FREE_RECENT, RESTORE. A plain free names no thread; a realloc's
 * free and a restore do. */
static int decode_free(memprof_reader_t *r, unsigned type, unsigned arg, const uint8_t **pp, const uint8_t *end,
                       memprof_event_t *ev)
{
    const uint8_t *p = *pp;
    uint64_t a;
    unsigned kind = arg;
    if (type == MEMPROF_R_FREE_RECENT) {
        kind = MEMPROF_D_FREE;
        a = ring_get(r->allocated, r->nalloc, arg);
        if (!a)
            return corrupt_record(r, "free of an empty ring slot");
        r->prev_addr = a;
    } else {
        GET(a);
        if (type == MEMPROF_R_FREE ? arg == 0 || arg > MEMPROF_D_PYMEM_OBJ : arg != 0)
            return corrupt_record(r, "bad free record");
        a = next_addr(r, a);
    }
    /* 1.1: munmap and mremap frees carry the range's length (in 1.0 they
     * had none, and mremap's named no thread) */
    int ranged = type == MEMPROF_R_FREE && (kind == MEMPROF_D_MUNMAP || kind == MEMPROF_D_MREMAP) &&
                 r->info.version_minor >= 1;
    uint64_t len = 0;
    if (ranged)
        GET(len);
    int named = type == MEMPROF_R_RESTORE || kind == MEMPROF_D_REALLOC || (ranged && kind == MEMPROF_D_MREMAP);
    if (named && r->thread == 0)
        return corrupt_record(r, "bad free record: no thread");
    if (type != MEMPROF_R_RESTORE)
        r->freed[r->nfree++ & (MEMPROF_RING - 1)] = a;
    *ev = (memprof_event_t){type == MEMPROF_R_RESTORE ? MEMPROF_EV_RESTORE : MEMPROF_EV_FREE, kind,
                            named ? r->thread : 0, 0, a, len, type == MEMPROF_R_RESTORE ? r->index : r->index++,
                            r->time_us, 0};
    *pp = p;
    return 1;
}

/* THREAD, STRING, CODE, NODE: tables, no event. */
static int decode_table(memprof_reader_t *r, unsigned type, unsigned arg, const uint8_t **pp, const uint8_t *end)
{
    const uint8_t *p = *pp;
    uint64_t a, b, c;
    switch (type) {
    case MEMPROF_R_THREAD:
        GET(a);
        if (arg == MEMPROF_THREAD_NEW) {
            if (add_thread(r, a))
                return r->state;
        } else if (arg == MEMPROF_THREAD_SWITCH && a >= 1 && a <= r->nthread) {
            r->thread = (uint32_t)a;
        } else if (arg == MEMPROF_THREAD_NAME && a >= 1 && a <= r->nthread) {
            GET(b);
            if (b == 0 || b > r->nstr)
                return corrupt_record(r, "thread name names an unknown string");
            r->thread_names[a - 1] = (uint32_t)b;
        } else {
            return corrupt_record(r, "bad thread record");
        }
        break;
    case MEMPROF_R_STRING:
        GET(a);
        if (arg != 0 || a > (uint64_t)(end - p))
            return corrupt_record(r, "bad string record");
        if (add_string(r, p, (size_t)a))
            return r->state;
        p += a;
        break;
    case MEMPROF_R_CODE:
        GET(a); GET(b); GET(c);
        if (arg > MEMPROF_CODE_PSEUDO)
            return corrupt_record(r, "bad code record");
        if (add_code(r, arg, a, b, c))
            return r->state;
        break;
    case MEMPROF_R_MODULE:
        if (decode_module(r, arg, &p, end))
            return r->state;
        break;
    default: /* MEMPROF_R_NODE */
        GET(a); GET(b); GET(c);
        if (arg == MEMPROF_NODE_PYTHON ? add_node(r, a, b, c)
            : arg == MEMPROF_NODE_NATIVE ? add_native_node(r, a, b, c)
                                           : corrupt_record(r, "bad node record"))
            return r->state;
        break;
    }
    *pp = p;
    return 0;
}

/* Decodes one record at r->bpos. Returns 1 with *ev filled for an event,
 * 0 for a table record, < 0 on corruption. */
static int decode_record(memprof_reader_t *r, memprof_event_t *ev)
{
    const uint8_t *p = r->block + r->bpos, *end = r->block + r->blen;
    unsigned type = *p & 15, arg = *p >> 4;
    uint64_t a, b;
    int rc;
    p++;
    switch (type) {
    case MEMPROF_R_ALLOC:
    case MEMPROF_R_ALLOC_SAME:
    case MEMPROF_R_REUSE:
    case MEMPROF_R_REUSE_SAME:
        rc = decode_alloc(r, type, arg, &p, end, ev);
        break;
    case MEMPROF_R_FREE:
    case MEMPROF_R_FREE_RECENT:
    case MEMPROF_R_RESTORE:
        rc = decode_free(r, type, arg, &p, end, ev);
        break;
    case MEMPROF_R_THREAD:
    case MEMPROF_R_STRING:
    case MEMPROF_R_CODE:
    case MEMPROF_R_NODE:
    case MEMPROF_R_MODULE:
        rc = decode_table(r, type, arg, &p, end);
        break;
    case MEMPROF_R_TIME:
        GET(a); GET(b);
        if (arg != 0 || a < r->time_us)
            return corrupt_record(r, "bad time record");
        r->time_us = a;
        *ev = (memprof_event_t){MEMPROF_EV_TIME, 0, 0, 0, 0, 0, r->index, a, b};
        rc = 1;
        break;
    case MEMPROF_R_AGGREGATE:
        if (!(r->info.options & MEMPROF_OPT_AGGREGATE))
            return corrupt_record(r, "aggregate record in a capture of events");
        GET(a);
        if (a > (uint64_t)(end - p))
            return corrupt_record(r, "bad aggregate record");
        r->nagg = 0;
        for (uint64_t i = 0; i < a; i++) {
            GET(b);
            if (r->nagg < MEMPROF_AGG_FIELDS_MAX)
                r->agg[r->nagg++] = b;
        }
        *ev = (memprof_event_t){MEMPROF_EV_AGGREGATE, arg, 0, 0, 0, 0, r->index, r->time_us, 0};
        rc = 1;
        break;
    case MEMPROF_R_MARK:
        GET(a);
        if (arg != MEMPROF_M_SCRIPT_END)
            return corrupt_record(r, "bad mark record");
        if (a > r->time_us)
            r->time_us = a;
        *ev = (memprof_event_t){MEMPROF_EV_MARK, arg, 0, 0, 0, 0, r->index, a, 0};
        rc = 1;
        break;
    default:
        return corrupt_record(r, "unknown record type");
    }
    if (rc >= 0)
        r->bpos = (size_t)(p - r->block);
    return rc;
}
#undef GET

/* A stream's header, once it is all there (or the stream ended). */
static int stream_header(memprof_reader_t *r)
{
    if (!r->ended) {
        if (r->len < MEMPROF_HEADER_FIXED)
            return MEMPROF_EAGAIN;
        if (memcmp(r->data, MEMPROF_MAGIC, MEMPROF_MAGIC_LEN) == 0) {
            uint32_t tlv = mp_get_le32(r->data + 12);
            if (tlv <= MEMPROF_TLV_MAX && r->len < MEMPROF_HEADER_FIXED + (size_t)tlv + 4 + MP_LZ4F_HEADER_LEN)
                return MEMPROF_EAGAIN;
        }
    }
    r->header_done = 1;
    return parse_header(r);
}

int memprof_reader_next(memprof_reader_t *r, memprof_event_t *ev)
{
    if (r->stream && !r->header_done && r->state == 0) {
        int rc = stream_header(r);
        if (rc)
            return rc;
    }
    for (;;) {
        if (r->state != 0)
            return r->state < 0 ? r->state : 0;
        if (r->bpos >= r->blen) {
            int rc = next_block(r);
            if (rc < 0)
                return rc;
            if (rc == 0) {
                r->state = 1;
                return 0;
            }
            continue;
        }
        int rc = decode_record(r, ev);
        if (rc != 0)
            return rc;
    }
}

/* ---- tables ---------------------------------------------------------------- */

uint32_t memprof_reader_node_count(const memprof_reader_t *r) { return r->nodes.n; }

const uint64_t *memprof_reader_fields(const memprof_reader_t *r, unsigned *n)
{
    *n = r->nagg;
    return r->agg;
}
uint32_t memprof_reader_code_count(const memprof_reader_t *r) { return r->ncode; }
uint32_t memprof_reader_thread_count(const memprof_reader_t *r) { return r->nthread; }

int memprof_reader_node(const memprof_reader_t *r, uint32_t id, uint32_t *parent, uint32_t *code,
                        int32_t *line)
{
    if (id == 0 || id > r->nodes.n)
        return MEMPROF_EINVAL;
    const node_t *n = &r->nodes.v[id - 1];
    *parent = n->parent;
    *code = n->code;
    *line = n->code ? n->line : -1;
    return 0;
}

int memprof_reader_node_native(const memprof_reader_t *r, uint32_t id, uint32_t *module, uint64_t *offset)
{
    if (id == 0 || id > r->nodes.n)
        return MEMPROF_EINVAL;
    const node_t *n = &r->nodes.v[id - 1];
    if (n->code)
        return 0;
    *module = (uint32_t)n->line;
    *offset = n->offset;
    return 1;
}

uint32_t memprof_reader_module_count(const memprof_reader_t *r) { return r->nmodule; }

int memprof_reader_module(const memprof_reader_t *r, uint32_t id, memprof_module_t *out)
{
    if (id == 0 || id > r->nmodule)
        return MEMPROF_EINVAL;
    const module_t *m = &r->modules[id - 1];
    *out = m->m;
    out->build_id = m->build_id;
    out->segs = m->segs;
    return 0;
}

const char *memprof_reader_thread_name(const memprof_reader_t *r, uint32_t index)
{
    if (index == 0 || index > r->nthread || !r->thread_names[index - 1])
        return NULL;
    return r->str[r->thread_names[index - 1] - 1];
}

int memprof_reader_code(const memprof_reader_t *r, uint32_t id, memprof_code_t *out)
{
    if (id == 0 || id > r->ncode)
        return MEMPROF_EINVAL;
    *out = r->codes[id - 1];
    return 0;
}

const char *memprof_reader_string(const memprof_reader_t *r, uint32_t id)
{
    return id == 0 || id > r->nstr ? NULL : r->str[id - 1];
}

uint64_t memprof_reader_thread_tid(const memprof_reader_t *r, uint32_t index)
{
    return index == 0 || index > r->nthread ? 0 : r->tids[index - 1];
}
