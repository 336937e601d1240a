/* test_format.c - the capture format end to end: captures built with the
 * encoders (as the recorder writes them) read back with the reader. The
 * rich capture (rich_capture.h: every record type, every 1.1 kind, the
 * compact record forms the encoder must pick, node lines relative to their
 * code's first line, many small blocks) has the shape the tests rely on and
 * round-trips with every field, every table entry (modules, native nodes,
 * thread names included) and the header and trailer; modules at the limits
 * (255-byte build id, 64 segments) round-trip; PyObject_Malloc reusing
 * freed blocks is written as REUSE records and reads back as PyObject_Malloc;
 * an empty capture reads as one; newer and older format versions are
 * refused, a 1.0 capture is read by the 1.0 rules (range frees without a
 * length, a REUSE is a malloc); the worked example of docs/format.md and
 * its 1.1 records are what the encoders write. Linked blocks, liblz4's view
 * of the frame, cuts and flipped bytes are in test_damage.c. */
#include <criterion/criterion.h>
#include <lz4.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "analysis.h"
#include "mp_common.h"
#include "rich_capture.h"
#include "testkit.h"
#include "xxhash32.h"

/* ---- round trip ---------------------------------------------------------- */

static void check_info(const memprof_info_t *in, const tk_capture_t *c)
{
    cr_assert_eq(in->version_major, MEMPROF_FORMAT_MAJOR);
    cr_assert_eq(in->version_minor, MEMPROF_FORMAT_MINOR);
    cr_assert_eq(in->pid, TK_PID);
    cr_assert_eq(in->ppid, TK_PPID);
    cr_assert_eq(in->start_realtime_ns, TK_START_REALTIME);
    cr_assert_eq(in->start_monotonic_ns, TK_START_MONOTONIC);
    cr_assert_eq(in->argv_len, TK_ARGV_LEN);
    cr_assert_eq(memcmp(in->argv, tk_argv, TK_ARGV_LEN), 0);
    cr_assert_str_eq(in->python_version, TK_PYVERSION);
    cr_assert_eq(in->python_hexversion, TK_HEXVERSION);
    cr_assert_eq(in->options, TK_OPTIONS);
    cr_assert_eq(in->options, 0xfu);
    cr_assert_eq(in->pystack_mode, MEMPROF_PYSTACK_WALKER);
    cr_assert_str_eq(in->executable, TK_EXECUTABLE);
    cr_assert_eq(in->page_size, TK_PAGE_SIZE);
    cr_assert_str_eq(in->tool_version, MEMPROF_VERSION_STRING);
    cr_assert_eq(in->has_trailer, 1);
    cr_assert_eq(in->truncated, 0);
    cr_assert_eq(in->end_realtime_ns, TK_END_REALTIME);
    cr_assert_eq(in->end_monotonic_ns, TK_END_MONOTONIC);
    cr_assert_eq(in->events, c->allocs + c->frees);
    cr_assert_eq(in->allocs, c->allocs);
    cr_assert_eq(in->frees, c->frees);
    cr_assert_eq(in->blocks, c->nblocks);
    cr_assert_eq(in->tracker_allocs, TK_TRACKER_ALLOCS);
}

static void check_code(memprof_reader_t *r, uint32_t id, unsigned flags, uint32_t fn, uint32_t qn,
                       uint32_t line)
{
    memprof_code_t co;
    cr_assert_eq(memprof_reader_code(r, id, &co), 0, "code %u", id);
    cr_assert_eq(co.flags, flags, "code %u flags", id);
    cr_assert_eq(co.filename, fn, "code %u filename", id);
    cr_assert_eq(co.qualname, qn, "code %u qualname", id);
    cr_assert_eq(co.firstlineno, line, "code %u firstlineno", id);
}

static void check_node(memprof_reader_t *r, uint32_t id, uint32_t parent, uint32_t code, int32_t line)
{
    uint32_t p = 99, co = 99;
    int32_t ln = 99;
    cr_assert_eq(memprof_reader_node(r, id, &p, &co, &ln), 0, "node %u", id);
    cr_assert(p == parent && co == code && ln == line, "node %u: %u %u %d, want %u %u %d", id, p, co, ln, parent,
              code, line);
}

static void check_module(memprof_reader_t *r, uint32_t id, const module_spec_t *want)
{
    memprof_module_t m;
    memset(&m, 0x55, sizeof m);
    cr_assert_eq(memprof_reader_module(r, id, &m), 0, "module %u", id);
    cr_assert_str_eq(m.path, rich_strings[want->path], "module %u path", id);
    cr_assert_eq(m.bias, want->bias, "module %u bias", id);
    cr_assert_eq(m.build_id_len, want->build_len, "module %u build id length", id);
    cr_assert_not_null(m.build_id);
    cr_assert_eq(memcmp(m.build_id, want->build_id, want->build_len), 0, "module %u build id", id);
    cr_assert_eq(m.nseg, want->nseg, "module %u segments", id);
    cr_assert_not_null(m.segs);
    for (unsigned i = 0; i < 2 * want->nseg; i++)
        cr_assert_eq(m.segs[i], want->segs[i], "module %u segs[%u]", id, i);
    cr_assert_eq(m.unloaded, want->unloaded, "module %u unloaded", id);
}

/* Native frames: code 0, no line, and their module and offset; Python
 * frames have no native side. */
static void check_native(memprof_reader_t *r, uint32_t id, const node_spec_t *want, const rich_ids_t *ids)
{
    uint32_t module = 99;
    uint64_t offset = 99;
    int rc = memprof_reader_node_native(r, id, &module, &offset);
    if (want->code >= 0) {
        cr_assert_eq(rc, 0, "node %u is a Python frame", id);
        cr_assert(module == 99 && offset == 99, "node %u: outputs untouched", id);
        return;
    }
    cr_assert_eq(rc, 1, "node %u is native", id);
    cr_assert_eq(module, ids->module[want->module], "node %u module", id);
    cr_assert_eq(offset, want->offset, "node %u offset", id);
}

static void check_tables(memprof_reader_t *r, const tk_capture_t *c, const rich_ids_t *id)
{
    for (size_t i = 0; i < MP_ARRAY_LEN(rich_strings); i++)
        cr_assert_str_eq(memprof_reader_string(r, id->str[i]), rich_strings[i], "string %u", id->str[i]);
    for (uint32_t i = 0; i < id->noise_count; i++)
        cr_assert_eq(strlen(memprof_reader_string(r, id->noise_first + i)), 120);
    cr_assert_eq(id->noise_first + id->noise_count - 1, c->nstrings);
    cr_assert_null(memprof_reader_string(r, 0));
    cr_assert_null(memprof_reader_string(r, c->nstrings + 1));
    cr_assert_eq(memprof_reader_code_count(r), 4);
    check_code(r, id->code_pseudo, MEMPROF_CODE_PSEUDO, id->str[0], id->str[0], 0);
    check_code(r, id->code_main, 0, id->str[1], id->str[2], 10);
    check_code(r, id->code_run, 0, id->str[1], id->str[3], 120);
    check_code(r, id->code_far, 0, id->str[1], id->str[5], INT32_MAX);
    memprof_code_t co;
    cr_assert_eq(memprof_reader_code(r, 0, &co), MEMPROF_EINVAL);
    cr_assert_eq(memprof_reader_code(r, 5, &co), MEMPROF_EINVAL);
    cr_assert_eq(memprof_reader_node_count(r), RICH_NNODES);
    for (uint32_t i = 1; i <= RICH_NNODES; i++) {
        const node_spec_t *n = &rich_node_specs[i];
        cr_assert_eq(id->node[i], i);
        check_node(r, i, id->node[n->parent], rich_spec_code(id, n->code), n->code < 0 ? -1 : n->line);
        check_native(r, i, n, id);
    }
    /* spelled out */
    check_node(r, 1, 0, id->code_pseudo, -1);
    check_node(r, 2, 0, id->code_main, 10);
    check_node(r, 3, 2, id->code_run, 117);
    check_node(r, 4, 3, id->code_main, 300);
    check_node(r, 5, 4, id->code_run, -1);
    check_node(r, 8, 7, id->code_far, INT32_MAX);
    check_node(r, 10, 4, 0, -1);
    check_node(r, 12, 11, id->code_main, 12);
    uint32_t a, b;
    int32_t d;
    uint64_t off;
    cr_assert_eq(memprof_reader_node(r, 0, &a, &b, &d), MEMPROF_EINVAL);
    cr_assert_eq(memprof_reader_node(r, RICH_NNODES + 1, &a, &b, &d), MEMPROF_EINVAL);
    cr_assert_eq(memprof_reader_node_native(r, 0, &a, &off), MEMPROF_EINVAL);
    cr_assert_eq(memprof_reader_node_native(r, RICH_NNODES + 1, &a, &off), MEMPROF_EINVAL);
    cr_assert(memprof_reader_node_native(r, 11, &a, &off) == 1 && a == 0 && off == 0x7ffff7fc1234);
    cr_assert(memprof_reader_node_native(r, 14, &a, &off) == 1 && a == 3 && off == UINT64_MAX);
    /* modules */
    cr_assert_eq(memprof_reader_module_count(r), RICH_NMODULES);
    for (uint32_t i = 1; i <= RICH_NMODULES; i++) {
        cr_assert_eq(id->module[i], i);
        check_module(r, i, &rich_module_specs[i]);
    }
    memprof_module_t m;
    cr_assert_eq(memprof_reader_module(r, 0, &m), MEMPROF_EINVAL);
    cr_assert_eq(memprof_reader_module(r, RICH_NMODULES + 1, &m), MEMPROF_EINVAL);
    cr_assert(memprof_reader_module(r, 2, &m) == 0 && m.unloaded == 1 && m.build_id_len == 0 && m.nseg == 0 &&
              strcmp(m.path, "") == 0);
    /* thread names: the last one wins; none is NULL */
    cr_assert_str_eq(memprof_reader_thread_name(r, id->t1), "MainThread");
    cr_assert_str_eq(memprof_reader_thread_name(r, id->t2), rich_strings[RICH_NAME_T2]);
    cr_assert_str_eq(memprof_reader_thread_name(r, id->t2), "pool-worker-2");
    cr_assert_null(memprof_reader_thread_name(r, id->t3));
    cr_assert_null(memprof_reader_thread_name(r, 0));
    cr_assert_null(memprof_reader_thread_name(r, 4));
    cr_assert_eq(memprof_reader_thread_count(r), 3);
    cr_assert_eq(memprof_reader_thread_tid(r, id->t1), RICH_TID_1);
    cr_assert_eq(memprof_reader_thread_tid(r, id->t2), RICH_TID_2);
    cr_assert_eq(memprof_reader_thread_tid(r, id->t3), RICH_TID_3);
    cr_assert_eq(memprof_reader_thread_tid(r, 0), 0);
    cr_assert_eq(memprof_reader_thread_tid(r, 4), 0);
}

Test(format, rich_capture_shape)
{
    /* the builder must produce what the other tests rely on */
    tk_capture_t c;
    rich_ids_t id = {0};
    rich_build(&c, &id);
    size_t stored = 0;
    for (size_t i = 0; i < c.nblocks; i++)
        stored += c.blocks[i].stored;
    cr_assert_geq(c.nblocks, 20, "only %zu blocks", c.nblocks);
    cr_assert_geq(stored, 3, "stored (uncompressed) blocks: %zu", stored);
    cr_assert_geq(c.nblocks - stored, 10, "compressed blocks: %zu", c.nblocks - stored);
    cr_assert_eq(rich_count_type(&c, MEMPROF_EV_RESTORE), 7);
    cr_assert_eq(rich_count_type(&c, MEMPROF_EV_MARK), 2);
    cr_assert_eq(rich_count_type(&c, MEMPROF_EV_TIME), 3 + RICH_NOISE_ROUNDS / 16);
    /* every event record type, and the ring positions at both ends */
    static const unsigned types[] = {MEMPROF_R_ALLOC,      MEMPROF_R_FREE,       MEMPROF_R_RESTORE,
                                     MEMPROF_R_ALLOC_SAME, MEMPROF_R_FREE_RECENT, MEMPROF_R_REUSE_SAME,
                                     MEMPROF_R_REUSE};
    uint64_t total = 0;
    for (size_t i = 0; i < MP_ARRAY_LEN(types); i++) {
        cr_assert_geq(rich_count_tags(&c, types[i]), 2, "record type %u: %llu", types[i],
                      (unsigned long long)rich_count_tags(&c, types[i]));
        total += rich_count_tags(&c, types[i]);
    }
    cr_assert_eq(total, c.allocs + c.frees + rich_count_type(&c, MEMPROF_EV_RESTORE));
    cr_assert_geq(c.tags[TK_TAG(MEMPROF_R_FREE_RECENT, 0)], 1);
    cr_assert_geq(c.tags[TK_TAG(MEMPROF_R_FREE_RECENT, 15)], 1);
    cr_assert_geq(c.tags[TK_TAG(MEMPROF_R_REUSE, 15)], 1);
    cr_assert_geq(c.tags[TK_TAG(MEMPROF_R_REUSE, 0)], 1);
    cr_assert_geq(c.tags[TK_TAG(MEMPROF_R_REUSE_SAME, 0)], 1);
    /* 1.1: range frees of both kinds, file mappings, a moved mapping */
    cr_assert_geq(c.tags[TK_TAG(MEMPROF_R_FREE, MEMPROF_D_MUNMAP)], 3);
    cr_assert_geq(c.tags[TK_TAG(MEMPROF_R_FREE, MEMPROF_D_MREMAP)], 3);
    cr_assert_geq(c.tags[TK_TAG(MEMPROF_R_ALLOC, MEMPROF_A_MMAP_FILE)] +
                      c.tags[TK_TAG(MEMPROF_R_ALLOC_SAME, MEMPROF_A_MMAP_FILE)], 2);
    cr_assert_geq(c.tags[TK_TAG(MEMPROF_R_ALLOC, MEMPROF_A_MREMAP)] +
                      c.tags[TK_TAG(MEMPROF_R_ALLOC_SAME, MEMPROF_A_MREMAP)], 2);
    uint64_t ranged = 0;
    for (size_t i = 0; i < c.nev; i++)
        ranged += c.ev[i].type == MEMPROF_EV_FREE && c.ev[i].size != 0;
    cr_assert_geq(ranged, 6, "frees with a length: %llu", (unsigned long long)ranged);
    tk_close(&c);
}

Test(format, every_record_round_trips)
{
    tk_capture_t c;
    rich_ids_t id = {0};
    rich_build(&c, &id);
    memprof_reader_t *r = tk_open(c.data, c.len);
    memprof_event_t *ev = calloc(c.nev + 1, sizeof *ev);
    int rc;
    size_t n = tk_read_all(r, ev, c.nev + 1, c.nev, &rc);
    cr_assert_eq(rc, 0, "read: %d (%s)", rc, memprof_reader_error(r));
    cr_assert_eq(n, c.nev);
    for (size_t i = 0; i < n; i++)
        tk_assert_event(&ev[i], &c.ev[i], i);
    check_info(memprof_reader_info(r), &c);
    check_tables(r, &c, &id);
    cr_assert_eq(memprof_reader_next(r, &ev[0]), 0, "the end is sticky");
    cr_assert_str_eq(memprof_reader_error(r), "no error");
    free(ev);
    memprof_reader_close(r);
    tk_close(&c);
}

Test(format, event_fields_spot_check)
{
    /* a few events spelled out, independent of the kit's bookkeeping */
    tk_capture_t c;
    rich_ids_t id = {0};
    rich_build(&c, &id);
    memprof_reader_t *r = tk_open(c.data, c.len);
    memprof_event_t ev;
    cr_assert_eq(memprof_reader_next(r, &ev), 1);
    cr_assert(ev.type == MEMPROF_EV_ALLOC && ev.kind == MEMPROF_A_MALLOC && ev.thread == 2 && ev.stack == 1 &&
              ev.addr == RICH_BASE + 0x100 && ev.size == 16 && ev.index == 0 && ev.time_us == 0);
    cr_assert_eq(memprof_reader_next(r, &ev), 1);
    cr_assert(ev.type == MEMPROF_EV_ALLOC && ev.kind == MEMPROF_A_CALLOC && ev.thread == 3 && ev.stack == 3 &&
              ev.addr == RICH_BASE - 0x20000 && ev.size == 32 && ev.index == 1);
    /* the file mapping, then rich_frees' munmap and mremap: their lengths as sizes */
    while (memprof_reader_next(r, &ev) == 1 && ev.type == MEMPROF_EV_ALLOC && ev.kind != MEMPROF_A_MMAP_FILE)
        ;
    cr_assert(ev.type == MEMPROF_EV_ALLOC && ev.thread == 1 && ev.stack == 0 && ev.addr == RICH_BASE + 0xf00 &&
              ev.size == 240 && ev.index == 14);
    while (memprof_reader_next(r, &ev) == 1 && ev.type != MEMPROF_EV_FREE)
        ;
    cr_assert(ev.kind == MEMPROF_D_FREE);
    cr_assert_eq(memprof_reader_next(r, &ev), 1);
    cr_assert(ev.kind == MEMPROF_D_REALLOC && ev.thread == 2 && ev.size == 0);
    cr_assert_eq(memprof_reader_next(r, &ev), 1);
    cr_assert(ev.type == MEMPROF_EV_FREE && ev.kind == MEMPROF_D_MUNMAP && ev.thread == 0 &&
              ev.addr == RICH_BASE + 0x300 && ev.size == 0x3000);
    cr_assert_eq(memprof_reader_next(r, &ev), 1);
    cr_assert(ev.type == MEMPROF_EV_FREE && ev.kind == MEMPROF_D_MREMAP && ev.thread == 2 &&
              ev.addr == RICH_BASE - 0x40000 && ev.size == 0x4000);
    memprof_reader_close(r);
    tk_close(&c);
}

Test(format, modules_at_the_limits)
{
    /* 255-byte build ids and 64 segments, more modules than the table's
     * first size, unloads in any order */
    enum { NMOD = 70 };
    uint8_t bid[255];
    uint64_t segs[2 * MEMPROF_MODULE_SEGMENTS_MAX];
    for (size_t i = 0; i < sizeof bid; i++)
        bid[i] = (uint8_t)(i * 7 + 3);
    for (size_t i = 0; i < MP_ARRAY_LEN(segs); i++)
        segs[i] = i % 2 ? 0x1000 * i : UINT64_MAX - i;
    tk_capture_t c;
    tk_begin(&c, 4096);
    uint32_t path = tk_string(&c, "/opt/lib/libbig.so");
    for (uint32_t i = 1; i <= NMOD; i++) {
        unsigned nseg = i % 2 ? MEMPROF_MODULE_SEGMENTS_MAX : i % MEMPROF_MODULE_SEGMENTS_MAX;
        cr_assert_eq(tk_module(&c, 0x10000ull * i, path, bid, i % 3 ? 255 : i, segs, nseg), i);
        if (i % 9 == 0)
            tk_module_unload(&c, i / 3);
    }
    tk_module_unload(&c, NMOD);
    tk_finish(&c);
    cr_assert_geq(c.nblocks, 10, "%zu blocks", c.nblocks);
    memprof_reader_t *r = tk_open(c.data, c.len);
    memprof_event_t ev;
    cr_assert_eq(memprof_reader_next(r, &ev), 0, "%s", memprof_reader_error(r));
    cr_assert_eq(memprof_reader_module_count(r), NMOD);
    for (uint32_t i = 1; i <= NMOD; i++) {
        memprof_module_t m;
        cr_assert_eq(memprof_reader_module(r, i, &m), 0);
        unsigned nseg = i % 2 ? MEMPROF_MODULE_SEGMENTS_MAX : i % MEMPROF_MODULE_SEGMENTS_MAX;
        size_t blen = i % 3 ? 255 : i;
        cr_assert_str_eq(m.path, "/opt/lib/libbig.so");
        cr_assert_eq(m.bias, 0x10000ull * i);
        cr_assert(m.build_id_len == blen && memcmp(m.build_id, bid, blen) == 0, "module %u build id", i);
        cr_assert(m.nseg == nseg && memcmp(m.segs, segs, 2 * nseg * sizeof *segs) == 0, "module %u segments", i);
        cr_assert_eq(m.unloaded, i == NMOD || (i * 3 <= NMOD && (i * 3) % 9 == 0), "module %u unloaded", i);
    }
    memprof_reader_close(r);
    tk_close(&c);
}

/* With --trace-python-allocators most allocations are PyObject_Malloc
 * handing back an address it has just freed (1.1): a REUSE, of allocator
 * PYMEM_OBJ, because the allocation before it was one; a malloc in
 * between names its address, and so does the PyObject_Malloc after it. */
Test(format, reuse_after_pyobject_malloc_round_trips)
{
    tk_capture_t c;
    tk_begin(&c, 4096);
    uint32_t fn = tk_string(&c, "obj.py"), qn = tk_string(&c, "make");
    uint32_t node = tk_node(&c, 0, tk_code(&c, 0, fn, qn, 1), 2);
    uint32_t t = tk_thread_new(&c, 5);
    const uint64_t a = 0x7f3a00100000ull;
    for (uint64_t i = 0; i < 8; i++)
        cr_assert_eq(tk_alloc(&c, t, MEMPROF_A_PYMEM_OBJ, a + i * 0x30, 40, node),
                     TK_TAG(i ? MEMPROF_R_ALLOC_SAME : MEMPROF_R_ALLOC, MEMPROF_A_PYMEM_OBJ));
    uint32_t prev = node;
    for (unsigned i = 0; i < 40; i++) {
        uint64_t x = a + (i % 8) * 0x30;
        uint32_t stack = i % 3 ? node : 0;
        /* frees of the PyMem domains always carry their address */
        cr_assert_eq(tk_free(&c, 0, MEMPROF_D_PYMEM_OBJ, x), TK_TAG(MEMPROF_R_FREE, MEMPROF_D_PYMEM_OBJ));
        if (i == 20) { /* same stack as round 19 */
            cr_assert_eq(tk_alloc(&c, t, MEMPROF_A_MALLOC, x, 64, stack),
                         TK_TAG(MEMPROF_R_ALLOC_SAME, MEMPROF_A_MALLOC));
            cr_assert_eq(tk_free(&c, 0, MEMPROF_D_FREE, x), TK_TAG(MEMPROF_R_FREE_RECENT, 0));
            cr_assert_eq(tk_alloc(&c, t, MEMPROF_A_PYMEM_OBJ, x, 40, stack),
                         TK_TAG(MEMPROF_R_ALLOC_SAME, MEMPROF_A_PYMEM_OBJ));
            continue;
        }
        uint8_t want = stack == prev ? TK_TAG(MEMPROF_R_REUSE_SAME, 0) : TK_TAG(MEMPROF_R_REUSE, 0);
        cr_assert_eq(tk_alloc(&c, t, MEMPROF_A_PYMEM_OBJ, x, 40 + i, stack), want, "round %u", i);
        prev = stack;
    }
    tk_finish(&c);
    cr_assert_eq(c.nblocks, 1);
    cr_assert_eq(c.tags[TK_TAG(MEMPROF_R_REUSE, 0)] + c.tags[TK_TAG(MEMPROF_R_REUSE_SAME, 0)], 39);
    memprof_reader_t *r = tk_open(c.data, c.len);
    memprof_event_t ev[100];
    int rc;
    size_t n = tk_read_all(r, ev, MP_ARRAY_LEN(ev), c.nev, &rc);
    cr_assert_eq(rc, 0, "%s", memprof_reader_error(r));
    cr_assert_eq(n, c.nev);
    uint64_t pymem = 0;
    for (size_t i = 0; i < n; i++) {
        tk_assert_event(&ev[i], &c.ev[i], i);
        pymem += ev[i].type == MEMPROF_EV_ALLOC && ev[i].kind == MEMPROF_A_PYMEM_OBJ;
    }
    cr_assert_eq(pymem, 8 + 40);
    memprof_reader_close(r);
    tk_close(&c);
}

Test(format, empty_capture)
{
    tk_capture_t c;
    tk_begin(&c, 200);
    tk_finish(&c);
    memprof_reader_t *r = tk_open(c.data, c.len);
    memprof_event_t ev;
    cr_assert_eq(memprof_reader_next(r, &ev), 0);
    const memprof_info_t *in = memprof_reader_info(r);
    cr_assert(in->has_trailer == 1 && in->truncated == 0 && in->events == 0 && in->blocks == 0);
    memprof_reader_close(r);
    tk_close(&c);
}

/* ---- versions ------------------------------------------------------------ */

/* The capture's header with another version, checksum fixed up: what a
 * newer (or older) memprof would really write. */
static int open_as_version(unsigned major, unsigned minor, int reseal, char *err, size_t errlen)
{
    tk_capture_t c;
    tk_begin(&c, 200);
    tk_finish(&c);
    mp_put_le16(c.data + 8, (uint16_t)major);
    mp_put_le16(c.data + 10, (uint16_t)minor);
    size_t hend = c.header_len - 4;
    if (reseal)
        mp_put_le32(c.data + hend, mp_xxh32(c.data, hend, 0));
    memprof_reader_t *r = NULL;
    int rc = memprof_reader_open_mem(c.data, c.len, &r);
    cr_assert_not_null(r);
    snprintf(err, errlen, "%s", memprof_reader_error(r));
    memprof_reader_close(r);
    tk_close(&c);
    return rc;
}

Test(format, this_is_format_1_2)
{
    /* docs/format.md specifies 1.2: a change of version changes the spec */
    cr_assert_eq(MEMPROF_FORMAT_MAJOR, 1);
    cr_assert_eq(MEMPROF_FORMAT_MINOR, 2);
}

Test(format, newer_minor_refused)
{
    char err[256];
    cr_assert_eq(open_as_version(1, 3, 1, err, sizeof err), MEMPROF_EVERSION);
    cr_assert(strstr(err, "1.3") && strstr(err, "(1.2)"), "message: %s", err);
    cr_assert_eq(open_as_version(1, 65535, 1, err, sizeof err), MEMPROF_EVERSION);
}

Test(format, newer_major_refused)
{
    char err[256];
    cr_assert_eq(open_as_version(2, 0, 1, err, sizeof err), MEMPROF_EVERSION);
    cr_assert(strstr(err, "2.0") && strstr(err, "(1.2)"), "message: %s", err);
    cr_assert_eq(open_as_version(2, 1, 1, err, sizeof err), MEMPROF_EVERSION);
    cr_assert_eq(open_as_version(65535, 65535, 1, err, sizeof err), MEMPROF_EVERSION);
    cr_assert(strstr(err, "65535.65535") && strstr(err, "(1.2)"), "message: %s", err);
}

Test(format, older_minor_accepted)
{
    char err[256];
    cr_assert_eq(open_as_version(1, 0, 1, err, sizeof err), 0, "%s", err);
}

Test(format, older_major_refused)
{
    char err[256];
    cr_assert_eq(open_as_version(0, 9, 1, err, sizeof err), MEMPROF_EVERSION);
    cr_assert(strstr(err, "0.9") && strstr(err, "1."), "message: %s", err);
}

Test(format, version_checked_before_checksum)
{
    /* bytes 8..11 patched, checksum left stale: still a version error */
    char err[256];
    cr_assert_eq(open_as_version(1, 3, 0, err, sizeof err), MEMPROF_EVERSION);
    cr_assert(strstr(err, "1.3") && strstr(err, "(1.2)"), "message: %s", err);
    cr_assert_eq(open_as_version(2, 0, 0, err, sizeof err), MEMPROF_EVERSION);
    cr_assert_eq(open_as_version(1, 0, 0, err, sizeof err), MEMPROF_ECORRUPT, "1.0 over 1.2: the checksum");
    cr_assert_eq(open_as_version(1, 1, 0, err, sizeof err), MEMPROF_ECORRUPT, "1.1 over 1.2: the checksum");
    cr_assert_eq(open_as_version(1, 2, 0, err, sizeof err), 0, "%s", err); /* bytes unchanged */
}

/* A 1.0 capture, as the 1.0 writer made it, but with what a 1.0 writer
 * could write and no 1.0 memprof did: a munmap and an mremap free. In 1.0
 * these have no length, and the mremap's names no thread: a 1.1 reader
 * must read them so, not take the next record's first byte for a length. */
Test(format, range_frees_of_a_1_0_capture)
{
    tk_capture_t c;
    tk_begin(&c, 200);
    mp_put_le16(c.data + 10, 0);
    size_t hend = c.header_len - 4;
    mp_put_le32(c.data + hend, mp_xxh32(c.data, hend, 0));
    tk_raw(&c, (const uint8_t[]){0x32, 0x80, 0x08}, 3); /* FREE munmap 0x1000: zz(0x100) << 1 = 0x400 */
    tk_raw(&c, (const uint8_t[]){0x42, 0x80, 0x01}, 3); /* FREE mremap 0x1200, no thread */
    tk_flush(&c);
    uint32_t t = tk_thread_new(&c, 5);
    tk_alloc(&c, t, MEMPROF_A_MMAP, 0x2000, 0x1000, 0);
    tk_finish_counting(&c, 3);
    memprof_reader_t *r = tk_open(c.data, c.len);
    cr_assert_eq(memprof_reader_info(r)->version_minor, 0);
    memprof_event_t ev[4];
    int rc;
    cr_assert_eq(tk_read_all(r, ev, 4, 3, &rc), 3);
    cr_assert_eq(rc, 0, "%s", memprof_reader_error(r));
    tk_assert_event(&ev[0], &(memprof_event_t){MEMPROF_EV_FREE, MEMPROF_D_MUNMAP, 0, 0, 0x1000, 0, 0, 0, 0}, 0);
    tk_assert_event(&ev[1], &(memprof_event_t){MEMPROF_EV_FREE, MEMPROF_D_MREMAP, 0, 0, 0x1200, 0, 1, 0, 0}, 1);
    tk_assert_event(&ev[2], &(memprof_event_t){MEMPROF_EV_ALLOC, MEMPROF_A_MMAP, 1, 0, 0x2000, 0x1000, 2, 0, 0}, 2);
    memprof_reader_close(r);
    /* the same bytes read as 1.1 would be misread: the munmap takes the
     * mremap's tag for its length, and 0x80 is no record */
    mp_put_le16(c.data + 10, 1);
    mp_put_le32(c.data + hend, mp_xxh32(c.data, hend, 0));
    r = tk_open(c.data, c.len);
    cr_assert_eq(tk_read_all(r, ev, 4, 3, &rc), 1);
    cr_assert(ev[0].kind == MEMPROF_D_MUNMAP && ev[0].size == 0x42);
    cr_assert_eq(rc, MEMPROF_ECORRUPT);
    memprof_reader_close(r);
    tk_close(&c);
}

/* In 1.0 a REUSE is a malloc whatever came before it: these are the bytes
 * a 1.0 writer wrote for calloc, free, malloc at one address, and a 1.1
 * reader must read a malloc there, not the calloc 1.1 would mean. */
Test(format, reuse_of_a_1_0_capture_is_malloc)
{
    static const uint8_t block[] = {
        0x13, 0x05,             /* THREAD NEW, tid 5 */
        0x2a, 0x80, 0x08, 0x20, /* ALLOC_SAME calloc: 0x1000 (zz(0x100) << 1 = 0x400), size 32 */
        0x0b,                   /* FREE_RECENT 0: free of 0x1000 */
        0x0c, 0x30,             /* REUSE_SAME 0: 0x1000, size 48 */
    };
    tk_capture_t c;
    tk_begin(&c, 200);
    mp_put_le16(c.data + 10, 0);
    size_t hend = c.header_len - 4;
    mp_put_le32(c.data + hend, mp_xxh32(c.data, hend, 0));
    tk_raw(&c, block, sizeof block);
    tk_finish_counting(&c, 3);
    memprof_event_t ev[4];
    int rc;
    for (unsigned minor = 0; minor <= 1; minor++) {
        mp_put_le16(c.data + 10, (uint16_t)minor);
        mp_put_le32(c.data + hend, mp_xxh32(c.data, hend, 0));
        memprof_reader_t *r = tk_open(c.data, c.len);
        cr_assert_eq(memprof_reader_info(r)->version_minor, minor);
        cr_assert_eq(tk_read_all(r, ev, 4, 3, &rc), 3);
        cr_assert_eq(rc, 0, "%s", memprof_reader_error(r));
        tk_assert_event(&ev[0], &(memprof_event_t){MEMPROF_EV_ALLOC, MEMPROF_A_CALLOC, 1, 0, 0x1000, 32, 0, 0, 0}, 0);
        tk_assert_event(&ev[1], &(memprof_event_t){MEMPROF_EV_FREE, MEMPROF_D_FREE, 0, 0, 0x1000, 0, 1, 0, 0}, 1);
        /* 1.0: a malloc; the same bytes as 1.1: a calloc, as the allocation before */
        unsigned kind = minor ? MEMPROF_A_CALLOC : MEMPROF_A_MALLOC;
        tk_assert_event(&ev[2], &(memprof_event_t){MEMPROF_EV_ALLOC, kind, 1, 0, 0x1000, 48, 2, 0, 0}, 2);
        memprof_reader_close(r);
        /* and so the totals by allocator */
        r = tk_open(c.data, c.len);
        mp_analysis_t a;
        cr_assert_eq(mp_analysis_run(&a, r), 0, "%s", memprof_reader_error(r));
        cr_assert_eq(a.by_allocator[MEMPROF_A_MALLOC].count, minor ? 0 : 1);
        cr_assert_eq(a.by_allocator[MEMPROF_A_CALLOC].count, minor ? 2 : 1);
        mp_analysis_free(&a);
        memprof_reader_close(r);
    }
    tk_close(&c);
}

Test(format, same_version_accepted)
{
    char err[256];
    cr_assert_eq(open_as_version(MEMPROF_FORMAT_MAJOR, MEMPROF_FORMAT_MINOR, 1, err, sizeof err), 0, "%s", err);
}

/* ---- the worked example of docs/format.md, byte for byte ----------------- */

static const uint8_t example[112] = {
    0x89, 0x4d, 0x45, 0x4d, 0x50, 0x52, 0x4f, 0x46, 0x01, 0x00, 0x02, 0x00, 0x0b, 0x00, 0x00, 0x00,
    0x01, 0x02, 0xd2, 0x09, 0x0b, 0x05, 0x30, 0x2e, 0x31, 0x2e, 0x30, 0x4b, 0x3e, 0xc7, 0xa2, 0x04,
    0x22, 0x4d, 0x18, 0x50, 0x40, 0xc0, 0x22, 0x00, 0x00, 0x80, 0x04, 0x04, 0x61, 0x2e, 0x70, 0x79,
    0x04, 0x01, 0x66, 0x05, 0x01, 0x02, 0x0a, 0x06, 0x01, 0x01, 0x05, 0x13, 0xd2, 0x09, 0x11, 0x80,
    0x08, 0x64, 0x02, 0x1a, 0xa1, 0x03, 0x18, 0x1b, 0x0c, 0x40, 0x22, 0x00, 0x10, 0x61, 0x01, 0xb7,
    0x00, 0x00, 0x00, 0x00, 0x89, 0x4d, 0x50, 0x54, 0x52, 0x41, 0x49, 0x4c, 0x0c, 0x00, 0x00, 0x00,
    0x03, 0x01, 0x05, 0x04, 0x01, 0x03, 0x05, 0x01, 0x02, 0x06, 0x01, 0x01, 0xa4, 0x2f, 0xd9, 0xb2,
};

static size_t write_example(uint8_t *out, LZ4_stream_t *lz4)
{
    uint8_t rec[256]; /* the encoders want room for their largest record */
    mp_enc_t e;
    mp_enc_init(&e, rec, sizeof rec);
    cr_assert(!mp_enc_string(&e, "a.py", 4) && !mp_enc_string(&e, "f", 1));
    cr_assert(!mp_enc_code(&e, 0, 1, 2, 10));
    cr_assert(!mp_enc_node(&e, 1, 0, 1, 12, 10) && !mp_enc_thread_new(&e, 1, 1234));
    cr_assert(!mp_enc_alloc(&e, 1, MEMPROF_A_MALLOC, 0x1000, 100, 1));
    cr_assert(!mp_enc_alloc(&e, 1, MEMPROF_A_MALLOC, 0x1068, 24, 1));  /* ALLOC_SAME, odd form */
    cr_assert(!mp_enc_free(&e, 0, MEMPROF_D_FREE, 0x1000));            /* FREE_RECENT 1 */
    cr_assert(!mp_enc_alloc(&e, 1, MEMPROF_A_MALLOC, 0x1000, 64, 1));  /* REUSE_SAME 0 */
    cr_assert(!mp_enc_free(&e, 1, MEMPROF_D_REALLOC, 0x1000));         /* FREE realloc */
    uint8_t *p = out + MEMPROF_HEADER_FIXED;
    p += mp_tlv_varint(p, MEMPROF_H_PID, 1234);
    p += mp_tlv_bytes(p, MEMPROF_H_TOOL_VERSION, "0.1.0", 5);
    size_t n = mp_header_seal(out, (size_t)(p - out) - MEMPROF_HEADER_FIXED);
    n += mp_lz4f_header(out + n);
    n += mp_lz4f_block(lz4, rec, e.len, out + n);
    n += mp_lz4f_end(out + n);
    size_t t0 = n, k = t0 + MP_TRAILER_FIXED;
    k += mp_tlv_varint(out + k, MEMPROF_T_EVENTS, 5);
    k += mp_tlv_varint(out + k, MEMPROF_T_ALLOCS, 3);
    k += mp_tlv_varint(out + k, MEMPROF_T_FREES, 2);
    k += mp_tlv_varint(out + k, MEMPROF_T_BLOCKS, 1);
    return t0 + mp_trailer_seal(out + t0, k - t0 - MP_TRAILER_FIXED);
}

/* The 1.1 records of docs/format.md §13, byte for byte. */
static const uint8_t example_1_1[77] = {
    0x04, 0x09, 0x6c, 0x69, 0x62, 0x6d, 0x2e, 0x73, 0x6f, 0x2e, 0x36,                         /* STRING */
    0x04, 0x04, 0x6d, 0x61, 0x69, 0x6e,                                                       /* STRING */
    0x0e, 0x01, 0x80, 0x80, 0x80, 0x80, 0x80, 0xe0, 0x1f, 0x01, 0x02, 0xab, 0xcd, 0x01, 0x80, 0x20, 0x80,
    0x40,                                                                                     /* MODULE */
    0x16, 0x01, 0x01, 0xb4, 0x24,                                                             /* NODE */
    0x16, 0x01, 0x00, 0x80, 0xa0, 0x80, 0x02,                                                 /* NODE */
    0x13, 0x4d,                                                                               /* THREAD NEW */
    0x23, 0x01, 0x02,                                                                         /* THREAD NAME */
    0xf1, 0x80, 0x80, 0x10, 0x80, 0x60, 0x04,                                                 /* ALLOC */
    0x32, 0x80, 0x08, 0x80, 0x20,                                                             /* FREE munmap */
    0x42, 0xfe, 0x07, 0x80, 0x20,                                                             /* FREE mremap */
    0xba, 0x80, 0x80, 0x10, 0x80, 0x40,                                                       /* ALLOC_SAME */
    0x1e, 0x01,                                                                               /* MODULE unload */
};

Test(format, records_of_1_1_in_the_spec)
{
    uint8_t rec[256];
    mp_enc_t e;
    mp_enc_init(&e, rec, sizeof rec);
    cr_assert(!mp_enc_string(&e, "libm.so.6", 9) && !mp_enc_string(&e, "main", 4));
    cr_assert(!mp_enc_module(&e, 1, 0x7f0000000000ull, 1, (const uint8_t[]){0xab, 0xcd}, 2,
                             (const uint64_t[]){0x1000, 0x2000}, 1));
    cr_assert(!mp_enc_node_native(&e, 1, 0, 1, 0x1234) && !mp_enc_node_native(&e, 2, 1, 0, 0x401000));
    cr_assert(!mp_enc_thread_new(&e, 1, 77) && !mp_enc_thread_name(&e, 1, 2));
    cr_assert(!mp_enc_alloc(&e, 1, MEMPROF_A_MMAP_FILE, 0x100000, 0x3000, 2));
    cr_assert(!mp_enc_free_range(&e, 0, MEMPROF_D_MUNMAP, 0x101000, 0x1000));
    cr_assert(!mp_enc_free_range(&e, 1, MEMPROF_D_MREMAP, 0x100000, 0x1000));
    cr_assert(!mp_enc_alloc(&e, 1, MEMPROF_A_MREMAP, 0x200000, 0x2000, 2));
    cr_assert(!mp_enc_module_unload(&e, 1));
    cr_assert_eq(e.len, sizeof example_1_1);
    for (size_t i = 0; i < e.len; i++)
        cr_assert_eq(rec[i], example_1_1[i], "byte %zu: %#04x, the spec says %#04x", i, rec[i], example_1_1[i]);

    /* read back as the spec says */
    tk_capture_t c;
    tk_begin(&c, 4096);
    tk_raw(&c, example_1_1, sizeof example_1_1);
    tk_finish_counting(&c, 4);
    memprof_reader_t *r = tk_open(c.data, c.len);
    memprof_event_t ev[5];
    int rc;
    cr_assert_eq(tk_read_all(r, ev, 5, 4, &rc), 4);
    cr_assert_eq(rc, 0, "%s", memprof_reader_error(r));
    tk_assert_event(&ev[0], &(memprof_event_t){MEMPROF_EV_ALLOC, 15, 1, 2, 0x100000, 0x3000, 0, 0, 0}, 0);
    tk_assert_event(&ev[1], &(memprof_event_t){MEMPROF_EV_FREE, 3, 0, 0, 0x101000, 0x1000, 1, 0, 0}, 1);
    tk_assert_event(&ev[2], &(memprof_event_t){MEMPROF_EV_FREE, 4, 1, 0, 0x100000, 0x1000, 2, 0, 0}, 2);
    tk_assert_event(&ev[3], &(memprof_event_t){MEMPROF_EV_ALLOC, 11, 1, 2, 0x200000, 0x2000, 3, 0, 0}, 3);
    memprof_module_t m;
    cr_assert_eq(memprof_reader_module_count(r), 1);
    cr_assert_eq(memprof_reader_module(r, 1, &m), 0);
    cr_assert(!strcmp(m.path, "libm.so.6") && m.bias == 0x7f0000000000ull && m.build_id_len == 2 &&
              m.build_id[0] == 0xab && m.build_id[1] == 0xcd && m.nseg == 1 && m.segs[0] == 0x1000 &&
              m.segs[1] == 0x2000 && m.unloaded == 1);
    uint32_t parent, code, module;
    int32_t line;
    uint64_t offset;
    cr_assert(!memprof_reader_node(r, 1, &parent, &code, &line) && parent == 0 && code == 0 && line == -1);
    cr_assert(memprof_reader_node_native(r, 1, &module, &offset) == 1 && module == 1 && offset == 0x1234);
    cr_assert(!memprof_reader_node(r, 2, &parent, &code, &line) && parent == 1 && code == 0 && line == -1);
    cr_assert(memprof_reader_node_native(r, 2, &module, &offset) == 1 && module == 0 && offset == 0x401000);
    cr_assert_eq(memprof_reader_thread_tid(r, 1), 77);
    cr_assert_str_eq(memprof_reader_thread_name(r, 1), "main");
    memprof_reader_close(r);

    /* and replayed as §8 says: the mapping moved by mremap stays a file */
    r = tk_open(c.data, c.len);
    mp_analysis_t a;
    cr_assert_eq(mp_analysis_run(&a, r), 0);
    cr_assert(a.files_live.bytes == 0x3000 && a.files_live.count == 1);
    cr_assert(a.files_peak.bytes == 0x3000 && a.files_peak.count == 1);
    cr_assert(a.live.bytes == 0 && a.live.count == 0 && a.peak.bytes == 0);
    cr_assert(a.allocated.bytes == 0x5000 && a.allocated.count == 2 && a.frees == 2 && a.unmatched_frees == 0);
    mp_analysis_free(&a);
    memprof_reader_close(r);
    tk_close(&c);
}

Test(format, worked_example_of_the_spec)
{
    uint8_t out[256];
    LZ4_stream_t *lz4 = LZ4_createStream();
    size_t n = write_example(out, lz4);
    LZ4_freeStream(lz4);
    cr_assert_eq(n, sizeof example);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(out[i], example[i], "byte %zu: %#04x, the spec says %#04x", i, out[i], example[i]);
    memprof_event_t ev[6];
    int rc;
    memprof_reader_t *r = tk_open(example, sizeof example);
    cr_assert_eq(tk_read_all(r, ev, 6, 5, &rc), 5);
    cr_assert(rc == 0 && memprof_reader_info(r)->has_trailer == 1);
    tk_assert_event(&ev[0], &(memprof_event_t){MEMPROF_EV_ALLOC, 1, 1, 1, 0x1000, 100, 0, 0, 0}, 0);
    tk_assert_event(&ev[1], &(memprof_event_t){MEMPROF_EV_ALLOC, 1, 1, 1, 0x1068, 24, 1, 0, 0}, 1);
    tk_assert_event(&ev[2], &(memprof_event_t){MEMPROF_EV_FREE, 1, 0, 0, 0x1000, 0, 2, 0, 0}, 2);
    tk_assert_event(&ev[3], &(memprof_event_t){MEMPROF_EV_ALLOC, 1, 1, 1, 0x1000, 64, 3, 0, 0}, 3);
    tk_assert_event(&ev[4], &(memprof_event_t){MEMPROF_EV_FREE, 2, 1, 0, 0x1000, 0, 4, 0, 0}, 4);
    memprof_code_t co;
    cr_assert_eq(memprof_reader_code(r, 1, &co), 0);
    cr_assert(co.flags == 0 && co.filename == 1 && co.qualname == 2 && co.firstlineno == 10);
    uint32_t parent, code;
    int32_t line;
    cr_assert_eq(memprof_reader_node(r, 1, &parent, &code, &line), 0);
    cr_assert(parent == 0 && code == 1 && line == 12, "node 1: %u %u %d", parent, code, line);
    cr_assert_str_eq(memprof_reader_string(r, 1), "a.py");
    cr_assert_str_eq(memprof_reader_string(r, 2), "f");
    cr_assert_eq(memprof_reader_thread_tid(r, 1), 1234);
    memprof_reader_close(r);
    r = tk_open(example, 82); /* cut after the end mark's first two bytes */
    cr_assert_eq(tk_read_all(r, ev, 6, 5, &rc), 5);
    cr_assert(rc == 0 && memprof_reader_info(r)->truncated == 1);
    memprof_reader_close(r);
    /* with byte 10 set to 3 it is refused as format 1.3 (before its checksum) */
    uint8_t newer[sizeof example];
    memcpy(newer, example, sizeof example);
    newer[10] = 3;
    r = NULL;
    cr_assert_eq(memprof_reader_open_mem(newer, sizeof newer, &r), MEMPROF_EVERSION);
    cr_assert(strstr(memprof_reader_error(r), "format 1.3 is newer"), "%s", memprof_reader_error(r));
    memprof_reader_close(r);
    /* the header the spec spells out: 1.2, checksum 0xa2c73e4b */
    cr_assert(example[8] == 1 && example[9] == 0 && example[10] == MEMPROF_FORMAT_MINOR && example[11] == 0);
    cr_assert_eq(mp_xxh32(example, 27, 0), 0xa2c73e4bu);
    /* the frame header the spec spells out: FLG 0x50 (linked blocks), HC 0xc0 */
    cr_assert(example[35] == MEMPROF_LZ4F_FLG && example[35] == 0x50 && example[36] == 0x40 && example[37] == 0xc0);
    cr_assert_eq(mp_xxh32((const uint8_t[]){0x50, 0x40}, 2, 0), 0xc50ac075u);
}
