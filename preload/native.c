/* native.c - native stacks (--native): unwinding, merging with the Python
 * frames, and the table of loaded objects the reporters symbolize with.
 *
 * A native stack comes from unwind.c's cached .eh_frame rules, or from
 * libunwind's unw_backtrace for the stacks those cannot follow (signal
 * frames, unusual call-frame information), without the frames of
 * libmemprof.so itself. CPython 3.11 runs nested Python calls in
 * one C call of _PyEval_EvalFrameDefault, so each such native frame is
 * replaced by the Python frames it was running: the walker cuts the Python
 * stack at every entry frame (is_entry), and the k-th evaluation-loop frame
 * from the leaf takes the k-th group. Python frames left over (the native
 * unwind stopped early, or an evaluation frame was not recognized) stay at
 * the root end, so the Python stack is never lost.
 *
 * A native frame is recorded as (module id, offset from the module's load
 * bias): the capture lists each loaded object (path, bias, build id,
 * PT_LOAD segments) once, and again after dlopen/dlclose, so reporters can
 * symbolize offline. The list is re-read with dl_iterate_phdr outside the
 * writer lock (the loader's lock is taken in there, and a thread inside
 * dlclose may be waiting for ours) when a frame falls in no known object
 * or dlclose ran; such a frame is written with its absolute address and
 * module 0, and readers place it in the object recorded next that covers it.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <elf.h>
#define UNW_LOCAL_ONLY
#include <libunwind.h>
#include <link.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "memprof/format.h"
#include "recorder.h"

#define MAX_MODULES 8192
#define PATH_ROOM (1u << 20)

typedef struct {
    uintptr_t lo, hi;       /* lowest and highest address of its PT_LOAD segments */
    uint64_t bias;
    uint32_t id;            /* in the capture; 0 until recorded */
    uint32_t path_off;      /* into the path arena */
    uint8_t build_id[64];
    uint8_t build_len;
    uint8_t nseg, seen, pad;
    uint64_t segs[2 * 16];
} module_t;

/* Modules are kept sorted by lo. `cur` is what lookups use (writer lock);
 * a refresh builds `next` and swaps them under the writer lock. */
static struct {
    module_t *cur, *next;
    uint32_t ncur, nnext;
    char *paths;            /* path arena (never shrinks; a fork child restarts it) */
    uint32_t paths_used;
    uint32_t next_id;
    atomic_int busy;        /* one refresh at a time; others skip */
    int emitted;            /* cur is in the capture */
} M;

atomic_int mp_modules_dirty;
atomic_uint mp_modules_gen;
static uintptr_t self_lo, self_hi, eval_lo, eval_hi;
/* the C path of a Python-to-Python call when a frame-evaluation hook is set */
static uintptr_t call_lo[2], call_hi[2];
static int native_on;

static void *map_zero(size_t n)
{
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* ---- reading the loaded objects ---- */

static void read_build_id(const struct dl_phdr_info *info, module_t *m)
{
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_NOTE)
            continue;
        const uint8_t *p = (const uint8_t *)(info->dlpi_addr + ph->p_vaddr), *end = p + ph->p_memsz;
        while (p + sizeof(ElfW(Nhdr)) <= end) {
            const ElfW(Nhdr) *nh = (const ElfW(Nhdr) *)p;
            const uint8_t *name = p + sizeof *nh;
            const uint8_t *desc = name + ((nh->n_namesz + 3) & ~3u);
            if (desc + nh->n_descsz > end)
                break;
            if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 && !memcmp(name, "GNU", 4)) {
                size_t n = nh->n_descsz < sizeof m->build_id ? nh->n_descsz : sizeof m->build_id;
                memcpy(m->build_id, desc, n);
                m->build_len = (uint8_t)n;
                return;
            }
            p = desc + ((nh->n_descsz + 3) & ~3u);
        }
    }
}

static uint32_t keep_path(const char *s)
{
    size_t n = strnlen(s, 4095);
    if (!M.paths && !(M.paths = map_zero(PATH_ROOM)))
        return UINT32_MAX;
    if (M.paths_used + n + 1 > PATH_ROOM)
        return UINT32_MAX;
    uint32_t off = M.paths_used;
    memcpy(M.paths + off, s, n);
    M.paths[off + n] = '\0';
    M.paths_used += (uint32_t)n + 1;
    return off;
}

static const module_t *find_in(const module_t *v, uint32_t n, uintptr_t ip)
{
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (v[mid].hi <= ip)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && v[lo].lo <= ip ? &v[lo] : NULL;
}

static int same_module(const module_t *a, const module_t *b)
{
    return a->lo == b->lo && a->hi == b->hi && a->bias == b->bias && a->build_len == b->build_len &&
           !memcmp(a->build_id, b->build_id, a->build_len) &&
           !strcmp(M.paths + a->path_off, M.paths + b->path_off);
}

static int scan_one(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    (void)arg;
    if (M.nnext >= MAX_MODULES)
        return 1;
    const char *name = info->dlpi_name;
    if (name && !strncmp(name, "linux-vdso", 10))
        return 0; /* no file to read it from */
    module_t m;
    memset(&m, 0, sizeof m);
    m.bias = info->dlpi_addr;
    m.lo = UINTPTR_MAX;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD)
            continue;
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
        m.lo = lo < m.lo ? lo : m.lo;
        m.hi = hi > m.hi ? hi : m.hi;
        if (m.nseg < 16) {
            m.segs[2 * m.nseg] = ph->p_vaddr;
            m.segs[2 * m.nseg + 1] = ph->p_memsz;
            m.nseg++;
        }
    }
    if (m.lo >= m.hi)
        return 0;
    char exe[4096];
    if (!name || !*name) { /* the main program */
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        exe[n > 0 ? n : 0] = '\0';
        name = exe;
    }
    read_build_id(info, &m);
    /* the same object as before keeps its id and its path */
    const module_t *old = find_in(M.cur, M.ncur, m.lo);
    if (old && old->lo == m.lo && old->hi == m.hi && old->bias == m.bias && old->build_len == m.build_len &&
        !memcmp(old->build_id, m.build_id, m.build_len) && !strcmp(M.paths + old->path_off, name)) {
        m.id = old->id;
        m.path_off = old->path_off;
    } else if ((m.path_off = keep_path(name)) == UINT32_MAX) {
        return 1;
    }
    /* insertion in lo order (the loader lists objects in load order) */
    uint32_t i = M.nnext;
    while (i > 0 && M.next[i - 1].lo > m.lo) {
        M.next[i] = M.next[i - 1];
        i--;
    }
    M.next[i] = m;
    M.nnext++;
    return 0;
}

void mp_modules_refresh(void)
{
    if (!native_on || atomic_exchange(&M.busy, 1))
        return;
    atomic_store(&mp_modules_dirty, 0);
    M.nnext = 0;
    dl_iterate_phdr(scan_one, NULL);
    mp_wlock();
    if (mp_capture_ready_locked()) {
        /* what went away, then what is new */
        for (uint32_t i = 0; i < M.ncur; i++) {
            const module_t *o = &M.cur[i];
            const module_t *n = find_in(M.next, M.nnext, o->lo);
            if (o->id && M.emitted && !(n && same_module(n, o)))
                mp_emit_module_unload(o->id);
        }
        for (uint32_t i = 0; i < M.nnext; i++) {
            module_t *n = &M.next[i];
            if (n->id && M.emitted)
                continue;
            n->id = ++M.next_id;
            uint32_t sid = mp_string_intern(M.paths + n->path_off, strlen(M.paths + n->path_off));
            mp_emit_module(n->id, n->bias, sid, n->build_id, n->build_len, n->segs, n->nseg);
        }
        module_t *t = M.cur;
        M.cur = M.next;
        M.ncur = M.nnext;
        M.next = t;
        M.emitted = 1;
        atomic_fetch_add(&mp_modules_gen, 1); /* frames may fall in other modules now */
    }
    mp_wunlock();
    atomic_store(&M.busy, 0);
}

uint32_t mp_native_node(uint32_t parent, uintptr_t ip)
{
    const module_t *m = find_in(M.cur, M.ncur, ip);
    if (m && m->id)
        return mp_native_node_intern(parent, m->id, ip - m->bias);
    atomic_store_explicit(&mp_modules_dirty, 1, memory_order_relaxed);
    return mp_native_node_intern(parent, 0, ip);
}

/* ---- unwinding and merging ---- */

uint32_t mp_native_walk(mp_thread_t *t)
{
    int n = mp_unwind(t, t->ips, MP_NATIVE_MAX);
    if (n < 0)
        n = unw_backtrace(t->ips, MP_NATIVE_MAX);
    /* memprof's own frames: the recorder's, innermost, and with the shadow
     * stack of shadow.c the frame-evaluation hook's, between Python calls */
    int k = 0;
    for (int i = 0; i < n; i++)
        if (!mp_native_is_self((uintptr_t)t->ips[i]))
            t->ips[k++] = t->ips[i];
    return (uint32_t)k;
}

static inline int is_eval(uintptr_t ip) { return ip > eval_lo && ip <= eval_hi; }

int mp_native_is_self(uintptr_t ip) { return ip >= self_lo && ip < self_hi; }
int mp_native_is_call_path(uintptr_t ip)
{
    return (ip > call_lo[0] && ip <= call_hi[0]) || (ip > call_lo[1] && ip <= call_hi[1]);
}

int mp_native_walk_cut(mp_thread_t *t, uintptr_t stop, mp_cut_t *c)
{
    if (mp_unwind_cut(t, t->ips, t->cfas, MP_NATIVE_MAX, stop, c) < 0)
        return -1;
    int skip = 0;
    while (skip < c->n && mp_native_is_self((uintptr_t)c->ips[skip]))
        skip++;
    c->ips += skip;
    c->cfas += skip;
    c->n -= skip;
    return 0;
}

/* A merge in steps (mp_native_merge and shadow.c's cut walk): t->mix
 * grown for nn native and npy Python frames. 0, or -1 without memory. */
int mp_merge_begin(mp_thread_t *t, mp_merge_t *m, void *const *ips, uint32_t nn, uint32_t npy)
{
    uint32_t need = nn + npy;
    if (need > t->mix_cap && mp_mem_grow((void **)&t->mix, &t->mix_cap, need, sizeof *t->mix))
        return -1;
    *m = (mp_merge_t){0, 0, 0, npy, 0};
    for (uint32_t i = 0; i < nn; i++)
        m->evals += is_eval((uintptr_t)ips[i]);
    return 0;
}

/* The next native frame: an evaluation-loop frame gives way to its call's
 * Python frames (the last one takes every group left), another is kept. */
void mp_merge_frame(mp_thread_t *t, mp_merge_t *m, uintptr_t ip)
{
    if (is_eval(ip) && m->seg < t->nseg) {
        m->evals--;
        uint32_t upto = m->evals == 0 ? m->npy : m->py + t->seg[m->seg];
        m->seg = m->evals == 0 ? t->nseg : m->seg + 1;
        while (m->py < upto && m->py < m->npy)
            t->mix[m->out++] = t->cur[m->py++];
        return;
    }
    t->mix[m->out++] = (mp_frame_t){(const void *)ip, MP_FP_NATIVE, 0};
}

/* Python frames no evaluation frame took stay outermost; the depth. */
uint32_t mp_merge_end(mp_thread_t *t, mp_merge_t *m)
{
    while (m->py < m->npy)
        t->mix[m->out++] = t->cur[m->py++];
    return m->out;
}

uint32_t mp_native_merge(mp_thread_t *t, uint32_t nn, uint32_t npy)
{
    mp_merge_t m;
    if (mp_merge_begin(t, &m, t->ips, nn, npy))
        return 0;
    for (uint32_t i = 0; i < nn; i++)
        mp_merge_frame(t, &m, (uintptr_t)t->ips[i]);
    return mp_merge_end(t, &m);
}

static int find_self(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    uintptr_t here = (uintptr_t)arg, lo = UINTPTR_MAX, hi = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD)
            continue;
        uintptr_t a = info->dlpi_addr + ph->p_vaddr;
        lo = a < lo ? a : lo;
        hi = a + ph->p_memsz > hi ? a + ph->p_memsz : hi;
    }
    if (here < lo || here >= hi)
        return 0;
    self_lo = lo;
    self_hi = hi;
    return 1;
}

int mp_native_init(void)
{
    M.cur = map_zero(MAX_MODULES * sizeof(module_t));
    M.next = map_zero(MAX_MODULES * sizeof(module_t));
    if (!M.cur || !M.next)
        return -1;
    dl_iterate_phdr(find_self, (void *)(uintptr_t)mp_native_init);
    unw_set_caching_policy(unw_local_addr_space, UNW_CACHE_PER_THREAD);
    void *eval = dlsym(RTLD_DEFAULT, "_PyEval_EvalFrameDefault");
    Dl_info di;
    const ElfW(Sym) *sym = NULL;
    if (eval && dladdr1(eval, &di, (void **)&sym, RTLD_DL_SYMENT) && sym && sym->st_size) {
        /* a return address is past its call: (lo, hi] */
        eval_lo = (uintptr_t)eval;
        eval_hi = eval_lo + sym->st_size;
    }
    static const char *const call_path[2] = {"_PyFunction_Vectorcall", "PyObject_Vectorcall"};
    for (int i = 0; i < 2; i++) {
        void *f = dlsym(RTLD_DEFAULT, call_path[i]);
        sym = NULL;
        if (f && dladdr1(f, &di, (void **)&sym, RTLD_DL_SYMENT) && sym && sym->st_size) {
            call_lo[i] = (uintptr_t)f;
            call_hi[i] = call_lo[i] + sym->st_size;
        }
    }
    native_on = 1;
    atomic_store(&mp_modules_dirty, 1);
    return 0;
}

void mp_native_reset(void)
{
    /* the new capture lists every object again, with ids of its own */
    for (uint32_t i = 0; i < M.ncur; i++)
        M.cur[i].id = 0;
    M.next_id = 0;
    M.emitted = 0;
    atomic_fetch_add(&mp_modules_gen, 1);
    atomic_store(&M.busy, 0);
    atomic_store(&mp_modules_dirty, 1);
}
