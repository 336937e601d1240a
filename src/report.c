/* report.c - source frames, top locations and JSON pieces for reporters. */
#include "report.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "memprof/format.h"
#include "symbolize.h"

/* The module a module-less native frame (its object was not listed yet
 * when the frame was first seen) falls in: the last listed one covering it. */
static uint32_t module_of(const memprof_reader_t *r, uint64_t addr, uint64_t *offset)
{
    for (uint32_t id = memprof_reader_module_count(r); id >= 1; id--) {
        memprof_module_t m;
        if (memprof_reader_module(r, id, &m))
            continue;
        for (uint32_t i = 0; i < m.nseg; i++) {
            uint64_t lo = m.bias + m.segs[2 * i];
            if (addr >= lo && addr - lo < m.segs[2 * i + 1]) {
                *offset = addr - m.bias;
                return id;
            }
        }
    }
    return 0;
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

static void native_frame(const mp_analysis_t *a, uint32_t module, uint64_t offset, mp_srcframe_t *out)
{
    if (!module)
        module = module_of(a->r, offset, &offset);
    out->native = 1;
    out->offset = offset;
    out->line = -1;
    out->function = out->file = NULL;
    mp_symbol_t sym;
    memprof_module_t m;
    if (module && memprof_reader_module(a->r, module, &m) == 0) {
        out->module = m.path;
        if (a->sym && mp_symbolizer_lookup(a->sym, module, offset, &sym) == 0) {
            out->function = sym.function;
            if (sym.file) {
                out->file = sym.file;
                out->line = sym.line > 0 ? sym.line : -1;
            }
        }
        if (!out->function) {
            snprintf(out->buf, sizeof out->buf, "%s+0x%" PRIx64, base_name(m.path), offset);
            out->function = out->buf;
        }
        if (!out->file)
            out->file = m.path;
    } else {
        snprintf(out->buf, sizeof out->buf, "0x%" PRIx64, offset);
        out->function = out->buf;
        out->file = "?";
    }
}

int mp_node_frame(const mp_analysis_t *a, uint32_t id, mp_srcframe_t *out, uint32_t *parent)
{
    const memprof_reader_t *r = a->r;
    uint32_t code_id, module;
    uint64_t offset;
    int32_t line;
    memprof_code_t code;
    int rc = memprof_reader_node(r, id, parent, &code_id, &line);
    if (rc)
        return rc;
    out->native = 0;
    out->module = NULL;
    out->offset = 0;
    out->pseudo = 0;
    if (memprof_reader_node_native(r, id, &module, &offset) == 1) {
        native_frame(a, module, offset, out);
        return 0;
    }
    if ((rc = memprof_reader_code(r, code_id, &code)))
        return rc;
    out->function = memprof_reader_string(r, code.qualname);
    out->file = memprof_reader_string(r, code.filename);
    out->pseudo = (code.flags & MEMPROF_CODE_PSEUDO) != 0;
    out->line = line;
    if (!out->function)
        out->function = "?";
    if (!out->file)
        out->file = "?";
    return 0;
}

const char *mp_symbol_problem(const mp_analysis_t *a)
{
    mp_analysis_t *w = (mp_analysis_t *)a; /* only the count of what was said moves */
    uint32_t n = memprof_reader_module_count(a->r);
    while (a->sym && w->problems_told < n) {
        const char *p = mp_symbolizer_module_problem(a->sym, ++w->problems_told);
        if (p)
            return p;
    }
    return NULL;
}

static mp_amount_t amount_at(const mp_stackstat_t *s, mp_when_t when)
{
    return when == MP_AT_PEAK ? s->at_peak : when == MP_AT_END ? s->at_end : when == MP_NOW ? s->cur : s->total;
}

static int by_bytes_desc(const void *x, const void *y)
{
    const mp_location_t *a = x, *b = y;
    if (a->amount.bytes != b->amount.bytes)
        return a->amount.bytes < b->amount.bytes ? 1 : -1;
    if (a->amount.count != b->amount.count)
        return a->amount.count < b->amount.count ? 1 : -1;
    return a->node != b->node ? (a->node < b->node ? -1 : 1) : 0;
}

static int by_count_desc(const void *x, const void *y)
{
    const mp_location_t *a = x, *b = y;
    if (a->amount.count != b->amount.count)
        return a->amount.count < b->amount.count ? 1 : -1;
    return by_bytes_desc(x, y);
}

int mp_top_locations(const mp_analysis_t *a, mp_when_t when, size_t limit, mp_location_t **out, size_t *n)
{
    return mp_top_locations_by(a, when, 0, limit, out, n);
}

int mp_top_locations_by(const mp_analysis_t *a, mp_when_t when, int by_count, size_t limit, mp_location_t **out,
                        size_t *n)
{
    /* each node's location: its innermost Python frame (parents come
     * before children, so one pass), else the native leaf itself */
    uint32_t nodes = memprof_reader_node_count(a->r);
    uint32_t *py = calloc((size_t)nodes + 1, sizeof *py);
    size_t cap = 1024;
    while (cap < 2 * (size_t)nodes + 2)
        cap *= 2;
    mp_location_t *t = calloc(cap, sizeof *t);
    if (!t || !py) {
        free(t);
        free(py);
        return MEMPROF_ENOMEM;
    }
    for (uint32_t id = 1; id <= nodes; id++) {
        uint32_t parent, code;
        int32_t line;
        if (memprof_reader_node(a->r, id, &parent, &code, &line) == 0)
            py[id] = code ? id : py[parent];
    }
    for (uint32_t id = 1; id < a->nst && id <= nodes; id++) {
        mp_amount_t am = amount_at(&a->st[id], when);
        if (!am.bytes && !am.count)
            continue;
        uint32_t where = py[id] ? py[id] : id, parent, code, module = 0;
        uint64_t offset = 0;
        int32_t line;
        if (memprof_reader_node(a->r, where, &parent, &code, &line))
            continue;
        if (!code) {
            memprof_reader_node_native(a->r, where, &module, &offset);
            line = (int32_t)module;
        }
        size_t j = ((size_t)code * 0x9e3779b1u ^ (size_t)(unsigned)line * 0x85ebca6bu ^
                    (size_t)(offset * 0xc2b2ae3d27d4eb4full)) & (cap - 1);
        while (t[j].node && !(t[j].code == code && t[j].line == line && t[j].offset == offset))
            j = (j + 1) & (cap - 1);
        mp_location_t *l = &t[j];
        if (!l->node) {
            l->code = code;
            l->line = line;
            l->offset = offset;
            l->node = where;
        }
        l->amount.bytes += am.bytes;
        l->amount.count += am.count;
        l->nstacks++;
        if (!l->stack || am.bytes > l->stack_bytes) {
            l->stack = id;
            l->stack_bytes = am.bytes;
        }
    }
    free(py);
    size_t k = 0;
    for (size_t j = 0; j < cap; j++)
        if (t[j].node)
            t[k++] = t[j];
    qsort(t, k, sizeof *t, by_count ? by_count_desc : by_bytes_desc);
    *n = k < limit ? k : limit;
    *out = t;
    return 0;
}

const char *mp_allocator_name(unsigned kind)
{
    static const char *const names[MEMPROF_A_COUNT] = {
        [MEMPROF_A_MALLOC] = "malloc",
        [MEMPROF_A_CALLOC] = "calloc",
        [MEMPROF_A_REALLOC] = "realloc",
        [MEMPROF_A_REALLOCARRAY] = "reallocarray",
        [MEMPROF_A_POSIX_MEMALIGN] = "posix_memalign",
        [MEMPROF_A_ALIGNED_ALLOC] = "aligned_alloc",
        [MEMPROF_A_MEMALIGN] = "memalign",
        [MEMPROF_A_VALLOC] = "valloc",
        [MEMPROF_A_PVALLOC] = "pvalloc",
        [MEMPROF_A_MMAP] = "mmap",
        [MEMPROF_A_MREMAP] = "mremap",
        [MEMPROF_A_PYMEM_RAW] = "PyMem_RawMalloc",
        [MEMPROF_A_PYMEM_MEM] = "PyMem_Malloc",
        [MEMPROF_A_PYMEM_OBJ] = "PyObject_Malloc",
        [MEMPROF_A_MMAP_FILE] = "mmap (file)",
    };
    return kind < MEMPROF_A_COUNT && names[kind] ? names[kind] : "?";
}

const char *mp_human_bytes(uint64_t n, char *buf, size_t len)
{
    static const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)n;
    unsigned u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, len, "%" PRIu64 " B", n);
    else
        snprintf(buf, len, "%.1f %s", v, unit[u]);
    return buf;
}

int mp_parse_size(const char *s, uint64_t *out)
{
    if (!s)
        return -1;
    const char *p = s;
    while (*p >= '0' && *p <= '9')
        p++;
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9'; p++)
            ;
    if (p == s || (p == s + 1 && *s == '.'))
        return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end != p)
        return -1;
    while (*p == ' ')
        p++;
    static const char units[] = "bkmgt";
    const char *u = *p ? strchr(units, *p | 0x20) : units;
    if (!u)
        return -1;
    if (*p && *++p) { /* K then B or iB */
        if (u == units)
            return -1;
        if ((*p | 0x20) == 'i')
            p++;
        if ((*p | 0x20) != 'b' || p[1])
            return -1;
    }
    v = ldexp(v, 10 * (int)(u - units));
    if (!(v < 0x1p63))
        return -1;
    *out = (uint64_t)llround(v);
    return 0;
}

const char *mp_group_digits(uint64_t n, char *buf, size_t len)
{
    char tmp[32];
    int k = snprintf(tmp, sizeof tmp, "%" PRIu64, n), o = 0;
    for (int i = 0; i < k && (size_t)o + 2 < len; i++) {
        if (i && (k - i) % 3 == 0)
            buf[o++] = ',';
        buf[o++] = tmp[i];
    }
    buf[o] = '\0';
    return buf;
}

static cJSON *frame_json(const mp_srcframe_t *f)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "function", f->function);
    cJSON_AddStringToObject(o, "file", f->file);
    if (f->line >= 0)
        cJSON_AddNumberToObject(o, "line", f->line);
    else
        cJSON_AddNullToObject(o, "line");
    if (f->native) {
        cJSON_AddBoolToObject(o, "native", 1);
        if (f->module)
            cJSON_AddStringToObject(o, "module", f->module);
    }
    return o;
}

cJSON *mp_json_stack(const mp_analysis_t *a, uint32_t node)
{
    cJSON *arr = cJSON_CreateArray();
    for (uint32_t guard = 0; arr && node && guard < (1u << 20); guard++) {
        mp_srcframe_t f;
        uint32_t parent;
        if (mp_node_frame(a, node, &f, &parent))
            break;
        cJSON_AddItemToArray(arr, frame_json(&f));
        node = parent;
    }
    return arr;
}

cJSON *mp_json_location(const mp_analysis_t *a, const mp_location_t *loc)
{
    cJSON *o = cJSON_CreateObject();
    mp_srcframe_t f;
    uint32_t parent;
    if (!o || mp_node_frame(a, loc->node, &f, &parent))
        return o;
    cJSON_AddNumberToObject(o, "bytes", (double)loc->amount.bytes);
    cJSON_AddNumberToObject(o, "allocations", (double)loc->amount.count);
    cJSON_AddStringToObject(o, "function", f.function);
    cJSON_AddStringToObject(o, "file", f.file);
    if (f.line >= 0)
        cJSON_AddNumberToObject(o, "line", f.line);
    else
        cJSON_AddNullToObject(o, "line");
    if (f.native)
        cJSON_AddBoolToObject(o, "native", 1);
    cJSON_AddNumberToObject(o, "stacks", loc->nstacks);
    cJSON_AddItemToObject(o, "stack", mp_json_stack(a, loc->stack));
    return o;
}

cJSON *mp_json_capture(const memprof_reader_t *r, const char *path)
{
    const memprof_info_t *in = memprof_reader_info(r);
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    char ver[32];
    snprintf(ver, sizeof ver, "%u.%u", in->version_major, in->version_minor);
    cJSON_AddStringToObject(o, "path", path);
    cJSON_AddStringToObject(o, "format", ver);
    cJSON_AddNumberToObject(o, "pid", (double)in->pid);
    cJSON *argv = cJSON_AddArrayToObject(o, "argv");
    for (size_t i = 0; argv && i < in->argv_len; i += strlen(in->argv + i) + 1)
        cJSON_AddItemToArray(argv, cJSON_CreateString(in->argv + i));
    cJSON_AddStringToObject(o, "python", in->python_version);
    cJSON_AddBoolToObject(o, "python_stacks", in->pystack_mode == MEMPROF_PYSTACK_WALKER);
    cJSON_AddBoolToObject(o, "truncated", in->truncated);
    if (in->has_trailer && in->end_monotonic_ns >= in->start_monotonic_ns)
        cJSON_AddNumberToObject(o, "duration_s", (double)(in->end_monotonic_ns - in->start_monotonic_ns) / 1e9);
    if (in->has_trailer)
        cJSON_AddNumberToObject(o, "tracker_allocations", (double)in->tracker_allocs);
    cJSON_AddBoolToObject(o, "began_mid_run", (in->options & MEMPROF_OPT_MID_RUN) != 0);
    cJSON_AddBoolToObject(o, "attached", (in->options & MEMPROF_OPT_ATTACHED) != 0);
    cJSON_AddBoolToObject(o, "aggregated", (in->options & MEMPROF_OPT_AGGREGATE) != 0);
    return o;
}

static cJSON *top_json(const mp_analysis_t *a, mp_when_t when, size_t top)
{
    mp_location_t *locs;
    size_t n;
    cJSON *arr = cJSON_CreateArray();
    if (mp_top_locations(a, when, top, &locs, &n))
        return arr;
    for (size_t i = 0; i < n; i++)
        cJSON_AddItemToArray(arr, mp_json_location(a, &locs[i]));
    free(locs);
    return arr;
}

cJSON *mp_json_summary(const mp_analysis_t *a, const char *path, size_t top)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *cap = mp_json_capture(a->r, path);
    const memprof_info_t *in = memprof_reader_info(a->r);
    cJSON_AddBoolToObject(cap, "native_stacks", (in->options & MEMPROF_OPT_NATIVE) != 0);
    cJSON_AddBoolToObject(cap, "python_allocators", (in->options & MEMPROF_OPT_PYMEM) != 0);
    if (in->parent_pid)
        cJSON_AddNumberToObject(cap, "parent_pid", (double)in->parent_pid);
    cJSON_AddItemToObject(root, "capture", cap);
    cJSON *tot = cJSON_AddObjectToObject(root, "totals");
    cJSON_AddNumberToObject(tot, "allocations", (double)a->allocated.count);
    cJSON_AddNumberToObject(tot, "allocated_bytes", (double)a->allocated.bytes);
    cJSON_AddNumberToObject(tot, "frees", (double)a->frees);
    cJSON *peak = mp_json_amount(a->peak);
    cJSON_AddNumberToObject(peak, "time_s", (double)a->peak_time_us / 1e6);
    cJSON_AddNumberToObject(peak, "event_index", (double)a->peak_index);
    cJSON_AddItemToObject(root, "peak", peak);
    cJSON *end = mp_json_amount(a->at_end);
    cJSON_AddBoolToObject(end, "script_end_marked", a->has_end);
    cJSON_AddNumberToObject(end, "time_s", (double)a->end_time_us / 1e6);
    cJSON_AddItemToObject(root, "leaked", end);
    cJSON_AddItemToObject(root, "at_exit", mp_json_amount(a->live));
    cJSON *files = cJSON_AddObjectToObject(root, "mapped_files");
    cJSON_AddItemToObject(files, "total", mp_json_amount(a->files_total));
    cJSON_AddItemToObject(files, "peak", mp_json_amount(a->files_peak));
    cJSON_AddItemToObject(files, "at_exit", mp_json_amount(a->files_live));
    cJSON *mem = cJSON_AddObjectToObject(root, "memory_samples");
    cJSON_AddNumberToObject(mem, "count", (double)a->samples);
    cJSON_AddNumberToObject(mem, "interval_ms", (double)in->interval_us / 1e3);
    cJSON_AddNumberToObject(mem, "rss_peak_bytes", (double)a->rss_peak_kib * 1024);
    cJSON *threads = cJSON_AddArrayToObject(root, "threads");
    for (uint32_t i = 1; i <= memprof_reader_thread_count(a->r); i++) {
        cJSON *o = cJSON_CreateObject();
        const char *name = memprof_reader_thread_name(a->r, i);
        cJSON_AddNumberToObject(o, "index", i);
        cJSON_AddNumberToObject(o, "tid", (double)memprof_reader_thread_tid(a->r, i));
        if (name)
            cJSON_AddStringToObject(o, "name", name);
        else
            cJSON_AddNullToObject(o, "name");
        cJSON_AddItemToArray(threads, o);
    }
    cJSON *by = cJSON_AddArrayToObject(root, "allocators");
    for (unsigned k = 1; k < MEMPROF_A_COUNT; k++) {
        if (!a->by_allocator[k].count)
            continue;
        cJSON *o = mp_json_amount(a->by_allocator[k]);
        cJSON_AddStringToObject(o, "allocator", mp_allocator_name(k));
        cJSON_AddBoolToObject(o, "file_backed", k == MEMPROF_A_MMAP_FILE);
        cJSON_AddItemToArray(by, o);
    }
    cJSON_AddItemToObject(root, "top_at_peak", top_json(a, MP_AT_PEAK, top));
    cJSON_AddItemToObject(root, "top_leaked", top_json(a, MP_AT_END, top));
    return root;
}

cJSON *mp_json_amount(mp_amount_t x)
{
    cJSON *o = cJSON_CreateObject();
    if (o) {
        cJSON_AddNumberToObject(o, "bytes", (double)x.bytes);
        cJSON_AddNumberToObject(o, "allocations", (double)x.count);
    }
    return o;
}

const char *mp_frame_label(const mp_srcframe_t *f, size_t width, char *buf, size_t len)
{
    if (width + 1 < len)
        len = width + 1;
    int n;
    size_t bl = strlen(base_name(f->file));
    if (f->pseudo || !strcmp(f->file, "?") ||
        (f->native && !strncmp(f->function, base_name(f->file), bl) && f->function[bl] == '+'))
        n = snprintf(buf, len, "%s", f->function); /* "libz.so.1+0x1f2e" names its file already */
    else if (f->line >= 0)
        n = snprintf(buf, len, "%s (%s:%d)", f->function, base_name(f->file), f->line);
    else
        n = snprintf(buf, len, "%s (%s)", f->function, base_name(f->file));
    if (n >= 0 && (size_t)n >= len && len > 4) { /* cut: end on a whole character, then "..." */
        size_t k = len - 4;
        while (k && ((unsigned char)buf[k] & 0xC0) == 0x80)
            k--;
        memcpy(buf + k, "...", 4);
    }
    return buf;
}

cJSON *mp_json_frame(const mp_srcframe_t *f) { return frame_json(f); }

void mp_amount_add(mp_amount_t *into, mp_amount_t x)
{
    into->bytes += x.bytes;
    into->count += x.count;
}

static int node_amount_desc(const void *x, const void *y)
{
    const mp_node_amount_t *a = x, *b = y;
    if (a->amount.bytes != b->amount.bytes)
        return a->amount.bytes < b->amount.bytes ? 1 : -1;
    if (a->amount.count != b->amount.count)
        return a->amount.count < b->amount.count ? 1 : -1;
    return a->node < b->node ? -1 : a->node > b->node;
}

void mp_sort_node_amounts(mp_node_amount_t *v, size_t n) { qsort(v, n, sizeof *v, node_amount_desc); }
