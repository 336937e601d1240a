/* export.c - `memprof export --format FORMAT FILE [-o OUT]`: a capture's
 * stacks for other tools.
 *
 * - pprof: a gzipped profile.proto (what `go tool pprof`, Pyroscope and
 *   Parca read) with sample types alloc_objects, alloc_space, inuse_objects
 *   and inuse_space; one sample per site (stack, thread, allocator), its
 *   thread and allocator as labels; Python and native frames as functions
 *   with file and line. Encoded by the small writer below (profile.proto
 *   needs varints, length-delimited fields and packed repeats only: a
 *   dependency would outweigh it), compressed with zlib.
 * - folded: "frame;frame;frame bytes" per stack, root first (flamegraph.pl,
 *   speedscope, inferno).
 * - speedscope: speedscope's JSON file format, one sampled profile whose
 *   weights are bytes.
 * - csv: one row per site with its figures and its stack.
 *
 * "In use" is at the peak, or with --leaks when the script ended. */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "analysis.h"
#include "cli_common.h"
#include "memprof/format.h"
#include "page.h"
#include "report.h"
#include "report_cli.h"

static const char usage[] =
    "usage: memprof export --format FORMAT [--leaks] [-o OUT] [--force]\n"
    "                      [--thread N] [--from S] [--to S] FILE\n"
    "\n"
    "Writes the capture's stacks for other tools.\n"
    "\n"
    "formats:\n"
    "  pprof       gzipped profile.proto: go tool pprof, Pyroscope, Parca\n"
    "              (alloc_objects, alloc_space, inuse_objects, inuse_space;\n"
    "              the thread and the allocator as labels)\n"
    "  folded      one line per stack, 'frame;frame;frame bytes' (flamegraph.pl)\n"
    "  speedscope  speedscope's JSON file format\n"
    "  csv         one row per allocation site with its figures and stack\n"
    "\n"
    "options:\n"
    "  --format F          one of the formats above\n"
    "  --leaks             in use means live when the script ended (default: at\n"
    "                      the peak)\n"
    "  -o, --output OUT    where to write (default: FILE without .memprof, plus\n"
    "                      .pb.gz, .folded, .speedscope.json or .csv; - for stdout)\n"
    "  -f, --force         replace OUT if it exists\n"
    "  --thread N, --from S, --to S\n"
    "                      only one thread's allocations, or a time range\n"
    "  -h, --help          show this help\n";

typedef enum { F_NONE, F_PPROF, F_FOLDED, F_SPEEDSCOPE, F_CSV } format_t;

typedef struct {
    format_t format;
    int leaks;
    mp_page_out_t out;
} export_opts_t;

static int export_option(mp_report_cli_t *c, int argc, char **argv, int i)
{
    export_opts_t *o = c->ctx;
    int took = mp_page_option(c, &o->out, argc, argv, i);
    if (took)
        return took;
    if (!strcmp(argv[i], "--leaks")) {
        o->leaks = 1;
        return 1;
    }
    if (!mp_report_cli_is(argv[i], "--format"))
        return 0;
    const char *v = mp_report_cli_value(c, argc, argv, i, &took);
    static const char *names[] = {NULL, "pprof", "folded", "speedscope", "csv"};
    for (int f = F_PPROF; f <= F_CSV; f++)
        if (!strcmp(v, names[f]))
            o->format = (format_t)f;
    if (o->format == F_NONE)
        mp_cli_die(c->prog, "unknown format '%s'; give pprof, folded, speedscope or csv", v);
    return took;
}

/* ---- stacks ---- */

typedef struct {
    const mp_analysis_t *a;
    const export_opts_t *o;
    mp_buf_t out;
} export_t;

static mp_amount_t inuse(const export_t *x, const mp_stackstat_t *s) { return x->o->leaks ? s->at_end : s->at_peak; }

/* "function (file:line)", "function (file)", or the function alone for a
 * pseudo-frame; `bad` characters become spaces (a separator of the format). */
static void frame_name(mp_buf_t *b, const mp_srcframe_t *f, const char *bad)
{
    size_t at = b->n;
    if (f->pseudo || !f->file[0] || !strcmp(f->file, "?"))
        mp_buf_str(b, f->function);
    else if (f->line >= 0)
        mp_buf_printf(b, "%s (%s:%d)", f->function, f->file, f->line);
    else
        mp_buf_printf(b, "%s (%s)", f->function, f->file);
    for (size_t i = at; i < b->n && !b->oom; i++)
        if (strchr(bad, b->p[i]))
            b->p[i] = ' ';
}

/* The frames of stack `node`, leaf first, in *v (grown as needed; room
 * for one at least, which a stack without frames gets filled in by some). */
static size_t frames_of(const mp_analysis_t *a, uint32_t node, mp_srcframe_t **v, size_t *cap)
{
    size_t n = 0;
    if (!*v && !(*v = malloc((*cap = 64) * sizeof **v)))
        mp_cli_die("memprof export", "out of memory");
    for (uint32_t id = node, parent; id; id = parent) {
        if (n == *cap) {
            mp_srcframe_t *g = realloc(*v, (*cap = *cap ? *cap * 2 : 64) * sizeof **v);
            if (!g)
                mp_cli_die("memprof export", "out of memory");
            *v = g;
        }
        if (mp_node_frame(a, id, &(*v)[n], &parent))
            break;
        n++;
    }
    return n;
}

/* In-use amounts summed per stack node (threads and allocators together). */
static mp_amount_t *per_stack(const export_t *x)
{
    mp_amount_t *v = calloc((size_t)x->a->nst + 1, sizeof *v);
    if (!v)
        mp_cli_die("memprof export", "out of memory");
    for (uint32_t i = 0; i < x->a->nsites; i++) {
        const mp_site_t *s = &x->a->sites[i];
        if (s->stack <= x->a->nst)
            mp_amount_add(&v[s->stack], inuse(x, &s->s));
    }
    return v;
}

static void write_folded(export_t *x)
{
    mp_amount_t *by = per_stack(x);
    mp_srcframe_t *f = NULL;
    size_t cap = 0;
    for (uint32_t id = 0; id <= x->a->nst; id++) {
        if (!by[id].bytes)
            continue;
        size_t n = frames_of(x->a, id, &f, &cap);
        if (n == 0)
            mp_buf_str(&x->out, "[no stack]");
        for (size_t k = n; k-- > 0;) {
            frame_name(&x->out, &f[k], ";\n\r");
            if (k)
                mp_buf_add(&x->out, ";", 1);
        }
        mp_buf_printf(&x->out, " %" PRIu64 "\n", by[id].bytes);
    }
    free(f);
    free(by);
}

static void csv_field(mp_buf_t *b, const char *s)
{
    if (!strpbrk(s, ",\"\n\r")) {
        mp_buf_str(b, s);
        return;
    }
    mp_buf_add(b, "\"", 1);
    for (const char *p = s; *p; p++) {
        if (*p == '"')
            mp_buf_add(b, "\"", 1);
        mp_buf_add(b, p, 1);
    }
    mp_buf_add(b, "\"", 1);
}

static void write_csv(export_t *x)
{
    const mp_analysis_t *a = x->a;
    mp_buf_str(&x->out, "bytes_in_use,allocations_in_use,bytes_at_peak,allocations_at_peak,bytes_leaked,"
                        "allocations_leaked,bytes_allocated,allocations,thread,thread_name,allocator,function,"
                        "file,line,stack\n");
    mp_srcframe_t *f = NULL;
    size_t cap = 0;
    mp_buf_t stack = {0};
    for (uint32_t i = 0; i < a->nsites; i++) {
        const mp_site_t *s = &a->sites[i];
        if (!s->s.total.count && !s->s.at_peak.count && !s->s.at_end.count)
            continue;
        mp_amount_t u = inuse(x, &s->s);
        size_t n = frames_of(a, s->stack, &f, &cap);
        stack.n = 0;
        for (size_t k = 0; k < n; k++) {
            if (k)
                mp_buf_str(&stack, " <- ");
            frame_name(&stack, &f[k], "");
        }
        mp_buf_add(&stack, "", 1);
        const char *tname = memprof_reader_thread_name(a->r, s->thread);
        mp_buf_printf(&x->out, "%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64
                               ",%" PRIu64 ",%u,",
                      u.bytes, u.count, s->s.at_peak.bytes, s->s.at_peak.count, s->s.at_end.bytes, s->s.at_end.count,
                      s->s.total.bytes, s->s.total.count, s->thread);
        csv_field(&x->out, tname ? tname : "");
        mp_buf_add(&x->out, ",", 1);
        csv_field(&x->out, mp_allocator_name(s->kind));
        mp_buf_add(&x->out, ",", 1);
        csv_field(&x->out, n ? f[0].function : "[no stack]");
        mp_buf_add(&x->out, ",", 1);
        csv_field(&x->out, n ? f[0].file : "");
        if (n && f[0].line >= 0)
            mp_buf_printf(&x->out, ",%d,", f[0].line);
        else
            mp_buf_str(&x->out, ",,");
        csv_field(&x->out, stack.oom ? "" : stack.p);
        mp_buf_add(&x->out, "\n", 1);
    }
    mp_buf_free(&stack);
    free(f);
}

static void write_speedscope(export_t *x, const char *path)
{
    const mp_analysis_t *a = x->a;
    mp_amount_t *by = per_stack(x);
    mp_strtab_t names = {0};
    mp_buf_t frames = {0}, samples = {0}, weights = {0}, one = {0};
    mp_srcframe_t *f = NULL;
    size_t cap = 0;
    uint64_t total = 0;
    int nframes = 0, nsamples = 0;
    for (uint32_t id = 0; id <= a->nst; id++) {
        if (!by[id].bytes)
            continue;
        size_t n = frames_of(a, id, &f, &cap);
        mp_buf_str(&samples, nsamples++ ? ",[" : "[");
        if (n == 0) {
            f[0] = (mp_srcframe_t){.function = "[no stack]", .file = "", .line = -1, .pseudo = 1};
            n = 1;
        }
        for (size_t k = n; k-- > 0;) { /* root first */
            one.n = 0;
            frame_name(&one, &f[k], "");
            mp_buf_add(&one, "", 1);
            int64_t idx = one.oom ? -1 : mp_strtab_id(&names, one.p);
            if (idx < 0)
                mp_cli_die("memprof export", "out of memory");
            if (idx == nframes) { /* new: its frame entry */
                mp_buf_str(&frames, nframes++ ? ",{\"name\":" : "{\"name\":");
                mp_buf_json_string(&frames, f[k].function);
                if (!f[k].pseudo && f[k].file[0]) {
                    mp_buf_str(&frames, ",\"file\":");
                    mp_buf_json_string(&frames, f[k].file);
                }
                if (f[k].line >= 0)
                    mp_buf_printf(&frames, ",\"line\":%d", f[k].line);
                mp_buf_add(&frames, "}", 1);
            }
            mp_buf_printf(&samples, "%s%" PRId64, k == n - 1 ? "" : ",", idx);
        }
        mp_buf_add(&samples, "]", 1);
        mp_buf_printf(&weights, "%s%" PRIu64, nsamples > 1 ? "," : "", by[id].bytes);
        total += by[id].bytes;
    }
    const memprof_info_t *in = memprof_reader_info(a->r);
    mp_buf_str(&x->out, "{\"$schema\":\"https://www.speedscope.app/file-format-schema.json\",\"shared\":{\"frames\":[");
    mp_buf_add(&x->out, frames.p ? frames.p : "", frames.n);
    mp_buf_str(&x->out, "]},\"profiles\":[{\"type\":\"sampled\",\"name\":");
    char title[512];
    snprintf(title, sizeof title, "memprof: %s of %s (pid %" PRIu64 ")", x->o->leaks ? "leaks" : "heap at the peak",
             path, in->pid);
    mp_buf_json_string(&x->out, title);
    mp_buf_printf(&x->out, ",\"unit\":\"bytes\",\"startValue\":0,\"endValue\":%" PRIu64 ",\"samples\":[", total);
    mp_buf_add(&x->out, samples.p ? samples.p : "", samples.n);
    mp_buf_str(&x->out, "],\"weights\":[");
    mp_buf_add(&x->out, weights.p ? weights.p : "", weights.n);
    mp_buf_str(&x->out, "]}],\"name\":");
    mp_buf_json_string(&x->out, title);
    mp_buf_str(&x->out, ",\"activeProfileIndex\":0,\"exporter\":\"memprof " MEMPROF_VERSION_STRING "\"}\n");
    if (frames.oom || samples.oom || weights.oom || one.oom)
        x->out.oom = 1;
    mp_buf_free(&frames);
    mp_buf_free(&samples);
    mp_buf_free(&weights);
    mp_buf_free(&one);
    mp_strtab_free(&names);
    free(f);
    free(by);
}

/* ---- pprof: profile.proto ---- */

static void pb_varint(mp_buf_t *b, uint64_t v)
{
    unsigned char t[10];
    size_t n = 0;
    do {
        t[n++] = (unsigned char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    mp_buf_add(b, (const char *)t, n);
}

/* field `f` as a varint (wire type 0); zero is the default, left out */
static void pb_uint(mp_buf_t *b, unsigned f, uint64_t v)
{
    if (!v)
        return;
    pb_varint(b, (uint64_t)f << 3);
    pb_varint(b, v);
}

/* field `f` length-delimited (wire type 2): bytes, a message, a packed list */
static void pb_bytes(mp_buf_t *b, unsigned f, const void *p, size_t n)
{
    pb_varint(b, (uint64_t)f << 3 | 2);
    pb_varint(b, n);
    mp_buf_add(b, p, n);
}

static void pb_msg(mp_buf_t *b, unsigned f, mp_buf_t *m)
{
    pb_bytes(b, f, m->p ? m->p : "", m->n);
    if (m->oom)
        b->oom = 1;
    m->n = 0;
}

typedef struct {
    mp_strtab_t str;
    /* functions by "name\x1ffile" and locations by (function, line), ids from 1 */
    mp_strtab_t fn_keys, loc_keys;
    mp_buf_t functions, locations, m;
} pprof_t;

static uint64_t str_id(pprof_t *p, const char *s)
{
    int64_t id = mp_strtab_id(&p->str, s);
    if (id < 0)
        mp_cli_die("memprof export", "out of memory");
    return (uint64_t)id;
}

static uint64_t location_of(pprof_t *p, const mp_srcframe_t *f)
{
    char key[1024];
    snprintf(key, sizeof key, "%s\x1f%s", f->function, f->file);
    int64_t before = p->fn_keys.n, fn = mp_strtab_id(&p->fn_keys, key);
    if (fn < 0)
        mp_cli_die("memprof export", "out of memory");
    if (fn == before) { /* a new function */
        pb_uint(&p->m, 1, (uint64_t)fn + 1);
        pb_uint(&p->m, 2, str_id(p, f->function));
        /* no system_name: pprof takes a name equal to it for one still to
         * demangle, and cuts "<module>" and "(...)" out of it as C++ */
        pb_uint(&p->m, 4, str_id(p, f->pseudo ? "" : f->file));
        pb_msg(&p->functions, 5, &p->m);
    }
    snprintf(key, sizeof key, "%" PRId64 ":%d:%" PRIx64, fn, f->line, f->native ? f->offset : 0);
    before = p->loc_keys.n;
    int64_t loc = mp_strtab_id(&p->loc_keys, key);
    if (loc < 0)
        mp_cli_die("memprof export", "out of memory");
    if (loc == before) { /* a new location: one line of that function */
        mp_buf_t line = {0};
        pb_uint(&line, 1, (uint64_t)fn + 1);
        pb_uint(&line, 2, f->line > 0 ? (uint64_t)f->line : 0);
        pb_uint(&p->m, 1, (uint64_t)loc + 1);
        if (f->native)
            pb_uint(&p->m, 3, f->offset);
        pb_msg(&p->m, 4, &line);
        mp_buf_free(&line);
        pb_msg(&p->locations, 4, &p->m);
    }
    return (uint64_t)loc + 1;
}

static void write_pprof(export_t *x)
{
    const mp_analysis_t *a = x->a;
    const memprof_info_t *in = memprof_reader_info(a->r);
    pprof_t p = {0};
    mp_buf_t prof = {0}, sample = {0}, list = {0}, label = {0};
    str_id(&p, ""); /* string 0 is the empty string */
    static const char *types[4][2] = {
        {"alloc_objects", "count"}, {"alloc_space", "bytes"}, {"inuse_objects", "count"}, {"inuse_space", "bytes"}};
    for (int t = 0; t < 4; t++) {
        pb_uint(&p.m, 1, str_id(&p, types[t][0]));
        pb_uint(&p.m, 2, str_id(&p, types[t][1]));
        pb_msg(&prof, 1, &p.m);
    }
    uint64_t k_thread = str_id(&p, "thread"), k_allocator = str_id(&p, "allocator");
    mp_srcframe_t *f = NULL;
    size_t cap = 0;
    for (uint32_t i = 0; i < a->nsites; i++) {
        const mp_site_t *s = &a->sites[i];
        mp_amount_t u = inuse(x, &s->s);
        if (!s->s.total.count && !u.count)
            continue;
        size_t n = frames_of(a, s->stack, &f, &cap);
        if (n == 0) {
            f[0] = (mp_srcframe_t){.function = "[no stack]", .file = "", .line = -1, .pseudo = 1};
            n = 1;
        }
        for (size_t k = 0; k < n; k++) /* leaf first, as pprof has it */
            pb_varint(&list, location_of(&p, &f[k]));
        pb_msg(&sample, 1, &list);
        pb_varint(&list, s->s.total.count);
        pb_varint(&list, s->s.total.bytes);
        pb_varint(&list, u.count);
        pb_varint(&list, u.bytes);
        pb_msg(&sample, 2, &list);
        const char *tname = memprof_reader_thread_name(a->r, s->thread);
        char tbuf[64];
        if (!tname) {
            snprintf(tbuf, sizeof tbuf, "thread %u", s->thread);
            tname = tbuf;
        }
        pb_uint(&label, 1, k_thread);
        pb_uint(&label, 2, str_id(&p, tname));
        pb_msg(&sample, 3, &label);
        pb_uint(&label, 1, k_allocator);
        pb_uint(&label, 2, str_id(&p, mp_allocator_name(s->kind)));
        pb_msg(&sample, 3, &label);
        pb_msg(&prof, 2, &sample);
    }
    mp_buf_add(&prof, p.locations.p ? p.locations.p : "", p.locations.n);
    mp_buf_add(&prof, p.functions.p ? p.functions.p : "", p.functions.n);
    uint64_t time_ns = in->start_realtime_ns;
    uint64_t dur_ns = in->has_trailer && in->end_monotonic_ns > in->start_monotonic_ns
                          ? in->end_monotonic_ns - in->start_monotonic_ns
                          : 0;
    uint64_t k_space = str_id(&p, "space"), k_bytes = str_id(&p, "bytes"), k_default = str_id(&p, "inuse_space");
    char comment[256];
    snprintf(comment, sizeof comment, "memprof %s: in use %s", MEMPROF_VERSION_STRING,
             x->o->leaks ? "when the script ended" : "at the peak");
    uint64_t k_comment = str_id(&p, comment);
    for (uint32_t i = 0; i < p.str.n; i++) /* the string table, field 6 */
        pb_bytes(&prof, 6, p.str.v[i], strlen(p.str.v[i]));
    pb_uint(&prof, 9, time_ns);
    pb_uint(&prof, 10, dur_ns);
    pb_uint(&p.m, 1, k_space);
    pb_uint(&p.m, 2, k_bytes);
    pb_msg(&prof, 11, &p.m);
    pb_uint(&prof, 12, 1);
    pb_uint(&prof, 13, k_comment);
    pb_uint(&prof, 14, k_default);
    if (prof.oom || p.locations.oom || p.functions.oom || sample.oom)
        mp_cli_die("memprof export", "out of memory");
    /* gzip it */
    z_stream z = {0};
    if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        mp_cli_die("memprof export", "cannot start compressing (zlib)");
    uLong bound = deflateBound(&z, (uLong)prof.n);
    char *gz = malloc(bound);
    if (!gz)
        mp_cli_die("memprof export", "out of memory");
    z.next_in = (Bytef *)(prof.p ? prof.p : "");
    z.avail_in = (uInt)prof.n;
    z.next_out = (Bytef *)gz;
    z.avail_out = (uInt)bound;
    if (deflate(&z, Z_FINISH) != Z_STREAM_END)
        mp_cli_die("memprof export", "cannot compress the profile (zlib)");
    mp_buf_add(&x->out, gz, z.total_out);
    deflateEnd(&z);
    free(gz);
    free(f);
    mp_buf_free(&prof);
    mp_buf_free(&sample);
    mp_buf_free(&list);
    mp_buf_free(&label);
    mp_buf_free(&p.functions);
    mp_buf_free(&p.locations);
    mp_buf_free(&p.m);
    mp_strtab_free(&p.str);
    mp_strtab_free(&p.fn_keys);
    mp_strtab_free(&p.loc_keys);
}

int main(int argc, char **argv)
{
    export_opts_t o = {0};
    mp_report_cli_t c = {.prog = "memprof export", .usage = usage, .ctx = &o};
    mp_report_cli_parse(&c, argc, argv, export_option);
    if (o.format == F_NONE)
        mp_cli_die(c.prog, "which format? give --format pprof, folded, speedscope or csv");
    if (c.json)
        mp_cli_die(c.prog, "--json does not apply: choose the output with --format");
    static const char *suffix[] = {NULL, ".pb.gz", ".folded", ".speedscope.json", ".csv"};
    int to_stdout = o.out.output && !strcmp(o.out.output, "-");
    char *path = to_stdout ? NULL : mp_page_target(c.prog, &o.out, c.path, suffix[o.format]);
    mp_analysis_t a;
    memprof_reader_t *r = mp_report_cli_run(&c, &a);
    export_t x = {&a, &o, {0}};
    switch (o.format) {
    case F_PPROF: write_pprof(&x); break;
    case F_FOLDED: write_folded(&x); break;
    case F_SPEEDSCOPE: write_speedscope(&x, c.path); break;
    case F_CSV: write_csv(&x); break;
    case F_NONE: break;
    }
    if (x.out.oom)
        mp_cli_die(c.prog, "out of memory while writing the export");
    if (to_stdout) {
        if (fwrite(x.out.p ? x.out.p : "", 1, x.out.n, stdout) != x.out.n || fflush(stdout))
            mp_cli_die(c.prog, "cannot write to standard output: %s", strerror(errno));
    } else {
        mp_page_save(c.prog, path, o.out.force, &x.out);
        fprintf(stderr, "%s: wrote %s\n", c.prog, path);
    }
    mp_buf_free(&x.out);
    free(path);
    mp_report_cli_done(&c, &a, r);
    return 0;
}
