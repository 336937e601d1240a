/* report.c - source frames, top locations and JSON pieces for reporters. */
#include "report.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "memprof/format.h"

int mp_node_frame(const memprof_reader_t *r, uint32_t id, mp_srcframe_t *out, uint32_t *parent)
{
    uint32_t code_id;
    int32_t line;
    memprof_code_t code;
    int rc = memprof_reader_node(r, id, parent, &code_id, &line);
    if (rc == 0)
        rc = memprof_reader_code(r, code_id, &code);
    if (rc)
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

static mp_amount_t amount_at(const mp_stackstat_t *s, mp_when_t when)
{
    return when == MP_AT_PEAK ? s->at_peak : when == MP_AT_END ? s->at_end : s->total;
}

static int by_bytes_desc(const void *x, const void *y)
{
    const mp_location_t *a = x, *b = y;
    if (a->amount.bytes != b->amount.bytes)
        return a->amount.bytes < b->amount.bytes ? 1 : -1;
    if (a->amount.count != b->amount.count)
        return a->amount.count < b->amount.count ? 1 : -1;
    return a->code != b->code ? (a->code < b->code ? -1 : 1) : a->line - b->line;
}

int mp_top_locations(const mp_analysis_t *a, mp_when_t when, size_t limit, mp_location_t **out, size_t *n)
{
    /* group stacks by (code, line) of their leaf with a small hash */
    size_t cap = 1024;
    uint32_t nodes = memprof_reader_node_count(a->r);
    while (cap < 2 * (size_t)nodes + 2)
        cap *= 2;
    mp_location_t *t = calloc(cap, sizeof *t);
    if (!t)
        return MEMPROF_ENOMEM;
    for (uint32_t id = 1; id < a->nst && id <= nodes; id++) {
        mp_amount_t am = amount_at(&a->st[id], when);
        if (!am.bytes && !am.count)
            continue;
        uint32_t parent, code;
        int32_t line;
        if (memprof_reader_node(a->r, id, &parent, &code, &line))
            continue;
        size_t j = ((size_t)code * 0x9e3779b1u ^ (size_t)(unsigned)line * 0x85ebca6bu) & (cap - 1);
        while (t[j].code && !(t[j].code == code && t[j].line == line))
            j = (j + 1) & (cap - 1);
        mp_location_t *l = &t[j];
        if (!l->code) {
            l->code = code;
            l->line = line;
        }
        l->amount.bytes += am.bytes;
        l->amount.count += am.count;
        l->nstacks++;
        if (!l->stack || am.bytes > l->stack_bytes) {
            l->stack = id;
            l->stack_bytes = am.bytes;
        }
    }
    size_t k = 0;
    for (size_t j = 0; j < cap; j++)
        if (t[j].code)
            t[k++] = t[j];
    qsort(t, k, sizeof *t, by_bytes_desc);
    *n = k < limit ? k : limit;
    *out = t;
    return 0;
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
    return o;
}

cJSON *mp_json_stack(const memprof_reader_t *r, uint32_t node)
{
    cJSON *arr = cJSON_CreateArray();
    for (uint32_t guard = 0; arr && node && guard < (1u << 20); guard++) {
        mp_srcframe_t f;
        uint32_t parent;
        if (mp_node_frame(r, node, &f, &parent))
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
    if (!o || mp_node_frame(a->r, loc->stack, &f, &parent))
        return o;
    cJSON_AddNumberToObject(o, "bytes", (double)loc->amount.bytes);
    cJSON_AddNumberToObject(o, "allocations", (double)loc->amount.count);
    cJSON_AddStringToObject(o, "function", f.function);
    cJSON_AddStringToObject(o, "file", f.file);
    if (loc->line >= 0)
        cJSON_AddNumberToObject(o, "line", loc->line);
    else
        cJSON_AddNullToObject(o, "line");
    cJSON_AddNumberToObject(o, "stacks", loc->nstacks);
    cJSON_AddItemToObject(o, "stack", mp_json_stack(a->r, loc->stack));
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
    return o;
}
