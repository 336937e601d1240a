/* shadow.c - the shadow stack of --trace-python-allocators (and the cut
 * walk it allows with --native, further down).
 *
 * With every object allocation recorded, reading the whole frame chain at
 * each one costs in proportion to its depth (200-frame stacks: hundreds of
 * nanoseconds an allocation). So frames are also seen as they start: a
 * PEP 523 frame-evaluation hook puts each frame it runs on the thread's
 * shadow stack and takes it off when it returns. While a frame is on it,
 * the frames above it cannot change (a caller does not run while its
 * callee does), so the node of those frames is interned once, the first
 * time something is allocated under it, and kept in the entry: a walk
 * stops at the innermost entry's frame and only the frames below it are
 * looked up (usually one, in a per-thread cache).
 *
 * Nothing is trusted that is not checked: a walk that does not meet the
 * innermost entry's frame (a greenlet switched stacks, another frame-
 * evaluation hook took over) goes on to the root as before, and an entry's
 * node is interned from the frames above it up to the next entry's frame,
 * or the root if it is not met. A frame is on the shadow stack only while
 * its hooked call runs, so its address cannot belong to another frame. A
 * returning call removes its entry and anything left above it.
 *
 * The price: CPython 3.11 runs a Python-to-Python call inside the caller's
 * evaluation loop only when no hook is set, so each call now goes through
 * the C-level call path (+20-25% on a benchmark of nothing but deep
 * calls). Hooked calls nest on the C stack: near the end of a thread's
 * stack the hook is taken off until that call returns, and the calls made
 * meanwhile are walked. */
#define _GNU_SOURCE
#include "pyframes.h"

#include <dlfcn.h>
#include <opcode.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>

MP_TLS shadow_t *mp_sh;
MP_TLS uint32_t mp_sh_n;
static MP_TLS uint32_t sh_cap;
static MP_TLS uintptr_t sh_floor; /* C stack below this: calls are not hooked */
static MP_TLS int sh_ready;
static MP_TLS uint64_t sh_stamp;  /* the thread's calls, numbered */
uint32_t mp_shadow_gen = 1;

static _PyFrameEvalFunction next_eval; /* what ran frames before the hook */
static void (*set_eval)(PyInterpreterState *, _PyFrameEvalFunction);
static PyInterpreterState *hooked_interp;
static atomic_int deep_calls;       /* hooked calls past their floor: the hook is off */
static atomic_int shadow_on;        /* set; cleared by mp_shadow_uninstall (a Tracker's end) */

static MP_COLD MP_NOINLINE void shadow_thread_init(void)
{
    sh_ready = 1;
    int g = mp_guard;
    mp_guard = MP_GUARD_PYAPI; /* glibc reads /proc/self/maps for the main thread */
    pthread_attr_t a;
    if (pthread_getattr_np(pthread_self(), &a) == 0) {
        void *lo;
        size_t size;
        if (pthread_attr_getstack(&a, &lo, &size) == 0) {
            size_t keep = size / 8 > (256u << 10) ? size / 8 : (256u << 10);
            sh_floor = (uintptr_t)lo + (keep < size / 2 ? keep : size / 2);
        }
        pthread_attr_destroy(&a);
    }
    mp_guard = g;
}

static MP_COLD MP_NOINLINE int shadow_grow(void)
{
    int g = mp_guard;
    mp_guard = MP_GUARD_PYAPI;
    int r = mp_mem_grow((void **)&mp_sh, &sh_cap, mp_sh_n + 1, sizeof *mp_sh);
    mp_guard = g;
    return r;
}

static PyObject *eval_hook(PyThreadState *ts, _PyInterpreterFrame *f, int exc);

/* A call near the end of the C stack: calls go unhooked (each runs in its
 * caller's evaluation loop, on no more C stack) until this one returns. */
static MP_COLD MP_NOINLINE PyObject *eval_deep(PyThreadState *ts, _PyInterpreterFrame *f, int exc)
{
    if (atomic_fetch_add(&deep_calls, 1) == 0)
        set_eval(hooked_interp, next_eval);
    PyObject *r = next_eval(ts, f, exc);
    if (atomic_fetch_sub(&deep_calls, 1) == 1 && atomic_load(&shadow_on))
        set_eval(hooked_interp, eval_hook);
    return r;
}

/* Called with the GIL held, for every frame the interpreter runs. */
static PyObject *eval_hook(PyThreadState *ts, _PyInterpreterFrame *f, int exc)
{
    if (MP_UNLIKELY(!sh_ready))
        shadow_thread_init();
    if (MP_UNLIKELY((uintptr_t)__builtin_frame_address(0) < sh_floor))
        return eval_deep(ts, f, exc);
    uint32_t n = mp_sh_n;
    if (MP_LIKELY(n < sh_cap) || shadow_grow() == 0) {
        shadow_t *e = &mp_sh[n];
        e->frame = f;
        e->stamp = ++sh_stamp;
        e->cfa = (uintptr_t)__builtin_dwarf_cfa();
        /* the frames above, from the caller's entry: a call's stack is then
         * known by hash before anything is interned for it. The caller is
         * the thread's current frame (f->previous is set only once the
         * evaluation loop takes f). */
        if (shadow_depth_from(e, n ? e - 1 : NULL, ts->cframe ? ts->cframe->current_frame : NULL))
            e->depth = SHADOW_NO_DEPTH;
        mp_sh_n = n + 1;
    }
    PyObject *r = next_eval(ts, f, exc);
    if (mp_sh_n > n)
        mp_sh_n = n;
    return r;
}

/* With the GIL, in the main thread, when the script starts. */
void mp_shadow_install(PyThreadState *ts)
{
    _PyFrameEvalFunction (*get_eval)(PyInterpreterState *);
    *(void **)&get_eval = dlsym(RTLD_DEFAULT, "_PyInterpreterState_GetEvalFrameFunc");
    *(void **)&set_eval = dlsym(RTLD_DEFAULT, "_PyInterpreterState_SetEvalFrameFunc");
    if (!get_eval || !set_eval || !ts || !ts->interp)
        return; /* stacks are walked whole */
    _PyFrameEvalFunction cur = get_eval(ts->interp);
    if (cur == eval_hook)
        return;
    next_eval = cur; /* _PyEval_EvalFrameDefault when there was none */
    hooked_interp = ts->interp;
    atomic_store(&shadow_on, 1);
    set_eval(ts->interp, eval_hook);
}

/* With the GIL: new calls go unhooked (the calls under way still pop
 * their entries as they return). */
void mp_shadow_uninstall(void)
{
    if (!atomic_exchange(&shadow_on, 0) || !hooked_interp)
        return;
    _PyFrameEvalFunction (*get_eval)(PyInterpreterState *);
    *(void **)&get_eval = dlsym(RTLD_DEFAULT, "_PyInterpreterState_GetEvalFrameFunc");
    if (get_eval && get_eval(hooked_interp) == eval_hook)
        set_eval(hooked_interp, next_eval);
}

void mp_py_thread_gone(void)
{
    if (mp_sh)
        munmap(mp_sh, (size_t)sh_cap * sizeof *mp_sh);
    mp_sh = NULL;
    mp_sh_n = sh_cap = 0;
    sh_ready = 0;
}


/* The node of the frames above the i-th shadow entry's frame, interned
 * for entries below it first where they are not known yet. */
uint32_t mp_shadow_base(mp_thread_t *t, uint32_t i)
{
    if (MP_LIKELY(shadow_known(&mp_sh[i])))
        return mp_sh[i].base;
    uint32_t m = i;
    while (m > 0 && !shadow_known(&mp_sh[m - 1]))
        m--;
    for (; m <= i; m++) {
        shadow_t *e = &mp_sh[m];
        _PyInterpreterFrame *stop = m ? mp_sh[m - 1].frame : NULL, *f = e->frame->previous;
        PyCodeObject *co = e->frame->f_code;
        uintptr_t fp = code_fp(co);
        uint32_t below_instr = 0;
        if (f && f == stop) {
            below_instr = (uint32_t)(f->prev_instr - _PyCode_CODE(f->f_code));
            if (e->gen == mp_shadow_gen && e->below_stamp == mp_sh[m - 1].stamp && e->below_instr == below_instr &&
                e->code == co && e->fp == fp) {
                uint64_t last = e->owner;
                e->owner = e->stamp; /* the same call again: its nodes are this one's */
                if (e->leaf_owner == last && e->leaf_gen == mp_shadow_gen)
                    e->leaf_owner = e->stamp;
                else
                    shadow_leaves_mine(e);
                continue;
            }
        }
        uint32_t n = 0;
        for (; f && n < MAX_DEPTH; f = f->previous) { /* none of these is the innermost: all started */
            if (n == t->scr_cap && mp_mem_grow((void **)&t->scr, &t->scr_cap, n + 1, sizeof *t->scr))
                break;
            frame_put(&t->scr[n++], f);
            if (f == stop)
                break;
        }
        /* met: the frames above stop are mp_sh[m - 1]'s base (stop's own frame,
         * at the call it is in, is the last of scr) */
        int met = f && f == stop;
        uint32_t node = met ? mp_sh[m - 1].base : 0;
        while (n--)
            node = mp_py_edge(t, node, &t->scr[n]);
        e->base = node;
        e->owner = e->stamp;
        e->gen = mp_shadow_gen;
        e->below_stamp = met ? mp_sh[m - 1].stamp : 0; /* stamps start at 1 */
        e->below_instr = below_instr;
        e->code = co;
        e->fp = fp;
        shadow_leaves_mine(e);
    }
    return mp_sh[i].base;
}

/* Entries 0..i get their depth and hash where they have none: from the
 * entry below when its frame is the caller, else by walking to the root.
 * Entries pushed later take theirs from these. 0 if the i-th has one. */
int mp_shadow_fill(mp_thread_t *t, uint32_t i)
{
    for (uint32_t j = 0; j <= i; j++) {
        shadow_t *e = &mp_sh[j];
        if (e->depth != SHADOW_NO_DEPTH)
            continue;
        const _PyInterpreterFrame *c = e->frame->previous;
        if (shadow_depth_from(e, j ? e - 1 : NULL, c) == 0)
            continue;
        uint32_t n = 0;
        for (; c; c = c->previous) { /* all started: each has called the next */
            if (n == MAX_DEPTH - 1 ||
                (n == t->scr_cap && mp_mem_grow((void **)&t->scr, &t->scr_cap, n + 1, sizeof *t->scr)))
                break;
            frame_put(&t->scr[n++], c);
        }
        if (c)
            continue; /* too deep, or no memory: left unknown */
        uint64_t sum = PREFIX_SEED;
        for (uint32_t k = 0; k < n; k++)
            sum += frame_mix(&t->scr[n - 1 - k], k);
        e->hsum = sum;
        e->depth = n;
        const PyCodeObject *co = e->frame->f_code;
        e->group = prefix_group(sum, co, code_fp(co), n);
        e->bucket = prefix_bucket(e->group);
    }
    return mp_sh[i].depth == SHADOW_NO_DEPTH ? -1 : 0;
}

/* ---- --native with the shadow stack ----
 * The C stack of a hooked call is fixed while it runs, as its Python frames
 * are: an entry's base is then the node of the whole mixed stack above its
 * hook call (Python frames, and the C frames between them). A walk unwinds
 * only up to the hook call of the innermost entry whose base is known,
 * reads the Python frames up to that entry's frame, merges the two as
 * mp_native_merge does (each evaluation-loop frame gives way to its Python
 * frames), and interns the result on that base; the hook calls it passes
 * (found by their CFA) mark where the entries above begin, whose bases it
 * sets on the way. The hook's own frames are never shown, nor the C path
 * of a Python-to-Python call that exists only because of the hook (a CALL
 * instruction going through PyObject_Vectorcall/_PyFunction_Vectorcall and
 * _PyEval_Vector into a hooked call): without a hook CPython runs that call
 * inside the caller's evaluation loop, and the stack reads as it would. */

/* A cut walk answered by one unwind.c remembered has that walk's native
 * frames; under the same base, with one Python frame of the same code
 * (by address and fingerprint, as code ids are) at the same instruction,
 * its stack is the same, and so is its node, kept
 * with the walk (MP_CUT_LEAVES of them, the newest first). 0: not known. */
static inline uint32_t cut_leaf_find(const mp_cut_leaf_t *l, const mp_frame_t *f, uint32_t base)
{
    uint32_t gen = mp_shadow_gen, mgen = atomic_load_explicit(&mp_modules_gen, memory_order_relaxed);
    for (unsigned i = 0; i < MP_CUT_LEAVES; i++, l++)
        if (l->code == f->code && l->fp == f->fp && l->instr == f->instr && l->base == base && l->gen == gen &&
            l->modules_gen == mgen)
            return l->node;
    return 0;
}

static inline void cut_leaf_put(mp_cut_leaf_t *l, const mp_frame_t *f, uint32_t base, uint32_t node)
{
    memmove(&l[1], &l[0], (MP_CUT_LEAVES - 1) * sizeof *l);
    l[0] = (mp_cut_leaf_t){f->code, f->fp, f->instr, base, node, mp_shadow_gen,
                           atomic_load_explicit(&mp_modules_gen, memory_order_relaxed)};
}

#define MP_FP_HOOK ((uintptr_t)3) /* a mix entry: entry `instr`'s hook call (UINT32_MAX: a hook call with none) */

uint32_t mp_py_native_cut(mp_thread_t *t, int gil)
{
    _PyInterpreterFrame *f;
    int top = (int)mp_sh_n - 1;
    if (top < 0 || !mp_py_walk_start(t, gil, &f) || !f || not_started(f))
        return UINT32_MAX; /* the whole walk: mp_py_walk, mp_native_walk */
    int k = top;
    while (k >= 0 && !shadow_known(&mp_sh[k]))
        k--;
    _PyInterpreterFrame *stop = k >= 0 ? mp_sh[k].frame : NULL;
    /* the Python frames up to stop, in groups by evaluation-loop call; the
     * frames of the entries above k on the way, in order */
    uint32_t n = 0, seg_start = 0;
    int e = top;
    for (; f; f = f->previous) {
        if ((n == t->cur_cap && mp_mem_grow((void **)&t->cur, &t->cur_cap, n + 1, sizeof *t->cur)) ||
            (t->nseg == t->seg_cap && mp_mem_grow((void **)&t->seg, &t->seg_cap, t->nseg + 1, sizeof *t->seg)))
            return UINT32_MAX;
        frame_put(&t->cur[n++], f);
        if (e > k && f == mp_sh[e].frame)
            e--;
        if (f->is_entry) {
            t->seg[t->nseg++] = n - seg_start;
            seg_start = n;
        }
        if (f == stop)
            break;
    }
    if (e != k || f != stop || n != seg_start)
        return UINT32_MAX; /* the shadow stack does not describe this stack */
    mp_cut_t c;
    if (mp_native_walk_cut(t, k >= 0 ? mp_sh[k].cfa : 0, &c) < 0 || (k >= 0 && !c.met))
        return UINT32_MAX;
    if (k == top && n == 1 && c.leaf) { /* the walk was seen before: its node may be known */
        uint32_t node = cut_leaf_find(c.leaf, &t->cur[0], mp_sh[k].base);
        t->cut = 1;
        t->anchor = (uint32_t)(k + 1);
        if (node) {
            t->leaf_node = node;
            return 1;
        }
        t->cut_leaf = c.leaf;
    }
    mp_merge_t mg; /* a hook call's frame takes a native frame's place in mix */
    if (mp_merge_begin(t, &mg, c.ips, (uint32_t)c.n, n))
        return UINT32_MAX;
    int m = top; /* the next hook call to meet */
    for (int i = 0; i < c.n; i++) {
        uintptr_t ip = (uintptr_t)c.ips[i];
        if (m > k && c.cfas[i] == mp_sh[m].cfa)
            t->mix[mg.out++] = (mp_frame_t){NULL, MP_FP_HOOK, (uint32_t)m--};
        else if (mp_native_is_self(ip)) /* the hook's way when the C stack ran short: no entry */
            t->mix[mg.out++] = (mp_frame_t){NULL, MP_FP_HOOK, UINT32_MAX};
        else
            mp_merge_frame(t, &mg, ip);
    }
    if (m != k)
        return UINT32_MAX;
    uint32_t o = mp_merge_end(t, &mg);
    const mp_frame_t *out = t->mix;
    t->cut = 1;
    t->anchor = (uint32_t)(k + 1);
    if (k == top) { /* no base to set on the way: the thread's cache may answer */
        uint64_t key = mp_sh[k].base * POS_MUL, pos = 0;
        for (uint32_t i = 0; i < o; i++, pos += POS_MUL)
            key += mix(out[i].code, out[i].fp, out[i].instr, pos);
        t->key = fmix64(key + o);
    }
    return o;
}

/* A CALL instruction, in any of its forms: a call CPython runs in the
 * caller's evaluation loop when no hook is set. */
static int at_call(const mp_frame_t *f)
{
    const PyCodeObject *co = f->code;
    int op = _Py_OPCODE(_PyCode_CODE(co)[f->instr]);
    return op == CALL || op == CALL_ADAPTIVE || op == CALL_PY_EXACT_ARGS || op == CALL_PY_WITH_DEFAULTS;
}

/* mix[lo..hi] (native frames), root first, under node. */
static uint32_t natives_under(uint32_t node, const mp_frame_t *mix, uint32_t lo, uint32_t hi)
{
    for (uint32_t j = hi + 1; j-- > lo;)
        node = mp_native_node(node, (uintptr_t)mix[j].code);
    return node;
}

/* mix[lo..hi] (innermost first) is the C path of a call from the
 * evaluation loop to a Python function: PyObject_Vectorcall and
 * _PyFunction_Vectorcall (exported, so their ranges are known), then
 * whatever calls the hook, innermost: that is _PyEval_Vector, which a
 * build may inline into _PyFunction_Vectorcall or keep, unexported. A C
 * function in between (sorted() calling a key function) is not this. */
static int call_path_only(const mp_frame_t *mix, uint32_t lo, uint32_t hi)
{
    for (uint32_t j = lo < hi ? lo + 1 : lo; j <= hi; j++)
        if (!mp_native_is_call_path((uintptr_t)mix[j].code))
            return 0;
    return 1;
}

static uint32_t intern_cut(mp_thread_t *t, const mp_frame_t *mix, uint32_t n);

uint32_t mp_shadow_intern_cut(mp_thread_t *t, const mp_frame_t *mix, uint32_t n)
{
    if (t->leaf_node)
        return t->leaf_node;
    uint32_t node = intern_cut(t, mix, n);
    if (t->cut_leaf && node)
        cut_leaf_put(t->cut_leaf, &t->cur[0], mp_sh[t->anchor - 1].base, node);
    return node;
}

static uint32_t intern_cut(mp_thread_t *t, const mp_frame_t *mix, uint32_t n)
{
    int k = (int)t->anchor - 1;
    uint32_t node = k >= 0 ? mp_sh[k].base : 0;
    __typeof__(t->recent[0]) *c = NULL;
    if (k == (int)mp_sh_n - 1) {
        c = &t->recent[(t->key >> 40) & (MP_RECENT_STACKS - 1)];
        if (c->key == t->key && c->depth == n && c->node)
            return c->node;
    }
    const mp_frame_t *caller = NULL; /* the Python frame right above the native frames waiting */
    uint32_t wait = UINT32_MAX;      /* native frames mix[i + 1 .. wait] wait */
    for (uint32_t i = n; i-- > 0;) {
        const mp_frame_t *f = &mix[i];
        if (f->fp == MP_FP_NATIVE) {
            if (wait == UINT32_MAX)
                wait = i;
            continue;
        }
        if (f->fp == MP_FP_HOOK) {
            if (wait != UINT32_MAX && !(caller && at_call(caller) && call_path_only(mix, i + 1, wait)))
                node = natives_under(node, mix, i + 1, wait);
            wait = UINT32_MAX;
            caller = NULL;
            if (f->instr == UINT32_MAX)
                continue;
            shadow_t *e = &mp_sh[f->instr];
            e->base = node;
            e->owner = e->stamp;
            e->gen = mp_shadow_gen;
            continue;
        }
        if (wait != UINT32_MAX)
            node = natives_under(node, mix, i + 1, wait);
        wait = UINT32_MAX;
        node = mp_py_edge(t, node, f);
        caller = f;
    }
    if (wait != UINT32_MAX)
        node = natives_under(node, mix, 0, wait);
    if (!node)
        node = mp_pseudo_node;
    if (c) {
        c->key = t->key;
        c->depth = n;
        c->node = node;
    }
    return node;
}

