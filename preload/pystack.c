/* pystack.c - Python stacks at allocation time, for the CPython this build
 * was compiled against (3.11: tstate->cframe->current_frame -> previous ...).
 *
 * The walk is read-only: it takes no lock, touches no reference count,
 * allocates nothing and needs no GIL; a thread reads only its own frame
 * chain, which only it changes. Code objects get small ids through a table
 * keyed by address and checked against a fingerprint of the object (a dead
 * code object's address can be reused by a new one); a new code object's
 * file name, qualified name and first line are written once, and a stack
 * node's source line is decoded from the line table when the node is new.
 * A stack is interned by prefix hashes taken from the root: a stack equal to
 * the thread's previous one costs one comparison; otherwise the prefixes it
 * shares with the previous one are known, the longest interned prefix is
 * found by binary search (every prefix of an interned stack is interned),
 * and only the frames below it get new nodes. With --trace-python-allocators
 * the walk stops at the innermost frame on shadow.c's shadow stack, whose
 * outer frames are interned already.
 *
 * CPython is reached through dlsym only: libmemprof.so links no libpython
 * and loads into any program. The one call into the C-API is a pending call
 * that registers an atexit callback marking the end of the script.
 */
#define _GNU_SOURCE
#include "pyframes.h"

#include <internal/pycore_runtime.h>

#include <dlfcn.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>

#include "linetable.h"
#include "memprof/format.h"
#include "recorder.h"

#define MAX_STRING 4096       /* longer names are cut (at a UTF-8 boundary) */

typedef struct {
    PyThreadState *(*this_tstate)(void);
    int (*is_initialized)(void);
    int (*add_pending)(int (*)(void *), void *);
    PyObject *(*import)(const char *);
    PyObject *(*modules)(void);
    PyObject *(*dict_get)(PyObject *, const char *);
    int (*dict_del)(PyObject *, const char *);
    PyObject *(*cfunction_new)(PyMethodDef *, PyObject *, PyObject *);
    PyObject *(*getattr)(PyObject *, const char *);
    PyObject *(*call_args)(PyObject *, ...);
    void (*decref)(PyObject *);
    void (*err_fetch)(PyObject **, PyObject **, PyObject **);
    void (*err_restore)(PyObject *, PyObject *, PyObject *);
    PyObject *(*compile)(const char *, const char *, int);
    PyObject *(*eval_code)(PyObject *, PyObject *, PyObject *);
    PyObject *(*dict_new)(void);
    PyObject *(*builtins)(void);
    int (*dict_set)(PyObject *, const char *, PyObject *);
    int (*add_audit_hook)(Py_AuditHookFunction, void *);
    unsigned long (*as_ulong_mask)(PyObject *);
    PyObject *none;
    const char *version;
    unsigned long hexversion;
} py_api_t;

static py_api_t py;
static int walker_on;
static atomic_int end_requested;
static atomic_int script_ended;
static int tstate_slot_ok; /* 0 not checked yet, 1 agrees, -1 not used */
/* mp_py_leaf may answer: the walker is on, the runtime's "current"
 * slot is trusted, the end mark is requested, the script has not ended */
static atomic_int leaf_ok;
/* thread names wait for `import threading` to finish: walks ask again
 * now and then (so none takes mp_py_leaf's way meanwhile) */
static atomic_int names_retry;

static int leaf_ok_now(void)
{
    return walker_on && tstate_slot_ok > 0 && atomic_load(&end_requested) && !atomic_load(&script_ended) &&
           !atomic_load(&names_retry);
}

/* Any thread may call this as an input changes: one that stores a value
 * gone stale meanwhile looks again after its store, so the last store
 * made is right. */
static void leaf_ok_update(void)
{
    int v;
    do {
        v = leaf_ok_now();
        atomic_store(&leaf_ok, v);
    } while (leaf_ok_now() != v);
}
uint32_t mp_pseudo_node;

/* ---- code objects ---- */

typedef struct {
    const void *ptr;
    const void *filename, *qualname, *linetable;
    Py_ssize_t size;
    int firstlineno;
    uint32_t id;
} code_entry_t;

#define CODE_FIRST 1024
static struct {
    code_entry_t *slots;
    size_t cap, n;
} C;

static inline size_t ptr_hash(const void *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 29;
    x *= 0xbf58476d1ce4e5b9ull;
    return (size_t)(x ^ (x >> 32));
}

static size_t code_hash(const void *e) { return ptr_hash(((const code_entry_t *)e)->ptr); }
static int code_used(const void *e) { return ((const code_entry_t *)e)->ptr != NULL; }

/* UTF-8 of a str, read straight from its storage (PyUnicode_AsUTF8 may
 * allocate). Returns the length written to out (at most MAX_STRING). */
static size_t str_utf8(PyObject *o, char *out)
{
    if (!o || !PyUnicode_Check(o) || !PyUnicode_IS_READY(o))
        return 0;
    Py_ssize_t len = PyUnicode_GET_LENGTH(o);
    int kind = PyUnicode_KIND(o);
    const void *data = PyUnicode_DATA(o);
    size_t n = 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        char b[4];
        size_t k;
        if (c < 0x80) {
            b[0] = (char)c, k = 1;
        } else if (c < 0x800) {
            b[0] = (char)(0xC0 | c >> 6), b[1] = (char)(0x80 | (c & 63)), k = 2;
        } else if (c < 0x10000) {
            b[0] = (char)(0xE0 | c >> 12), b[1] = (char)(0x80 | ((c >> 6) & 63));
            b[2] = (char)(0x80 | (c & 63)), k = 3;
        } else {
            b[0] = (char)(0xF0 | c >> 18), b[1] = (char)(0x80 | ((c >> 12) & 63));
            b[2] = (char)(0x80 | ((c >> 6) & 63)), b[3] = (char)(0x80 | (c & 63)), k = 4;
        }
        if (n + k > MAX_STRING)
            break;
        memcpy(out + n, b, k);
        n += k;
    }
    return n;
}

static uint32_t intern_str(PyObject *o, const char *fallback)
{
    static char buf[MAX_STRING]; /* writer lock held */
    size_t n = str_utf8(o, buf);
    if (n == 0)
        return mp_string_intern(fallback, strlen(fallback));
    return mp_string_intern(buf, n);
}

/* Writes a new code object's record and returns its id. */
static uint32_t code_emit(PyCodeObject *co)
{
    uint32_t fn = intern_str(co->co_filename, "<unknown file>");
    uint32_t qn = intern_str(co->co_qualname, "<unknown>");
    uint32_t id = mp_code_new_id();
    mp_emit_code(0, fn, qn, co->co_firstlineno > 0 ? (uint32_t)co->co_firstlineno : 0);
    return id;
}

static uint32_t code_id(PyCodeObject *co)
{
    if ((C.n + 1) * 2 > C.cap &&
        mp_table_grow((void **)&C.slots, &C.cap, sizeof *C.slots, CODE_FIRST, code_hash, code_used)) {
        mp_stop_recording("memprof: out of memory for the code table, recording stopped", 0);
        return 0;
    }
    size_t j = ptr_hash(co) & (C.cap - 1);
    for (; C.slots[j].ptr; j = (j + 1) & (C.cap - 1))
        if (C.slots[j].ptr == co)
            break;
    code_entry_t *e = &C.slots[j];
    if (e->ptr == co && e->filename == co->co_filename && e->qualname == co->co_qualname &&
        e->linetable == co->co_linetable && e->size == Py_SIZE(co) && e->firstlineno == co->co_firstlineno)
        return e->id;
    if (!e->ptr)
        C.n++;
    *e = (code_entry_t){co, co->co_filename, co->co_qualname, co->co_linetable, Py_SIZE(co), co->co_firstlineno, 0};
    e->id = code_emit(co);
    return e->id;
}

/* ---- the script-end mark ---- */

static PyObject *on_script_end(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    atomic_store(&script_ended, 1);
    leaf_ok_update();
    mp_rec_mark(MEMPROF_M_SCRIPT_END);
    Py_INCREF(py.none);
    return py.none;
}

static PyMethodDef end_def = {"_memprof_script_end", on_script_end, METH_NOARGS, NULL};

/* ---- thread names ----
 * threading.Thread keeps its name and ident in _name and _ident. Data
 * descriptors put on the class for these two (as memray does) see every
 * assignment, from any thread: once a thread has both, its name is recorded
 * under its ident (pthread_self() of the thread). They are put there when
 * the script starts if threading is imported by then, else once a later
 * `import threading` (seen by an audit hook) has run; memprof never
 * imports it. */

static const char names_src[] =
    "def install(threading, record):\n"
    "    class _MemprofThreadName:\n"
    "        __slots__ = ('attr',)\n"
    "        def __init__(self, attr):\n"
    "            self.attr = attr\n"
    "        def __set__(self, obj, value):\n"
    "            d = obj.__dict__\n"
    "            d[self.attr] = value\n"
    "            ident, name = d.get('_ident'), d.get('_name')\n"
    "            if ident is not None and name is not None:\n"
    "                record(ident, str(name))\n"
    "    threading.Thread._name = _MemprofThreadName('_name')\n"
    "    threading.Thread._ident = _MemprofThreadName('_ident')\n"
    "    lock = getattr(threading, '_active_limbo_lock', None)\n"
    "    if lock is not None:\n"
    "        lock.acquire()\n"
    "    try:\n"
    "        ts = list(threading._active.values()) + list(threading._limbo)\n"
    "    finally:\n"
    "        if lock is not None:\n"
    "            lock.release()\n"
    "    for t in ts:\n"
    "        if t.ident is not None:\n"
    "            record(t.ident, str(t.name))\n";

static atomic_int names_installed;

static PyObject *record_name(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    static char buf[MAX_STRING];
    static atomic_int busy; /* the GIL is held; this only guards buf against a nested call */
    if (nargs == 2 && !atomic_exchange(&busy, 1)) {
        unsigned long ident = py.as_ulong_mask(args[0]);
        size_t n = str_utf8(args[1], buf);
        if (n)
            mp_rec_thread_name(ident, buf, n);
        atomic_store(&busy, 0);
    }
    Py_INCREF(py.none);
    return py.none;
}

static PyMethodDef record_def = {"_memprof_thread_name", (PyCFunction)(void (*)(void))record_name, METH_FASTCALL,
                                 NULL};

static PyObject *loaded_threading(void)
{
    PyObject *mods = py.modules();
    return mods ? py.dict_get(mods, "threading") : NULL; /* borrowed */
}

/* With the GIL: runs names_src and calls install(threading, record). */
static void install_names(PyObject *threading)
{
    if (atomic_exchange(&names_installed, 1))
        return;
    PyObject *code = py.compile(names_src, "<memprof>", Py_file_input);
    PyObject *g = py.dict_new();
    PyObject *rec = py.cfunction_new(&record_def, NULL, NULL);
    if (code && g && rec && py.dict_set(g, "__builtins__", py.builtins()) == 0) {
        PyObject *r = py.eval_code(code, g, g);
        PyObject *fn = r ? py.dict_get(g, "install") : NULL; /* borrowed */
        PyObject *res = fn ? py.call_args(fn, threading, rec, NULL) : NULL;
        if (res)
            py.decref(res);
        if (r)
            py.decref(r);
    }
    if (rec)
        py.decref(rec);
    if (g)
        py.decref(g);
    if (code)
        py.decref(code);
}


/* A pending call (main thread, GIL) once `import threading` started: the
 * module runs its own code first, so this waits until its Thread class
 * exists. Not by queueing itself again: the interpreter runs the pending
 * calls queued meanwhile before it goes on, so the import made no progress
 * while every try ran (100,000 of them, each raising AttributeError: a
 * third of a second, and no names in the end). A walk asks again instead:
 * the main thread's once NAMES_EVERY_NS have passed, another thread's at
 * once (names_ask_again). */
#define NAMES_EVERY_NS 2000000ull
#define NAMES_TRIES 20000 /* bounds the wait if the import fails */
static atomic_int names_waiting;
static unsigned names_tries;
static _Atomic uint64_t names_next_ns;

static uint64_t coarse_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int names_when_ready(void *arg)
{
    (void)arg;
    int g = mp_guard;
    mp_guard = MP_GUARD_PYAPI;
    PyObject *et, *ev, *tb;
    py.err_fetch(&et, &ev, &tb);
    PyObject *threading = loaded_threading();
    PyObject *cls = threading ? py.getattr(threading, "Thread") : NULL;
    PyObject *limbo = cls ? py.getattr(threading, "_limbo") : NULL;
    int ready = limbo != NULL;
    if (cls)
        py.decref(cls);
    if (limbo)
        py.decref(limbo);
    if (ready) {
        install_names(threading);
        atomic_store(&names_waiting, 0);
    } else if (++names_tries < NAMES_TRIES) {
        atomic_store(&names_next_ns, coarse_ns() + NAMES_EVERY_NS); /* still importing */
        atomic_store(&names_retry, 1);
        leaf_ok_update();
    } else {
        atomic_store(&names_waiting, 0); /* the import failed: wait for the next one */
    }
    py.err_restore(et, ev, tb);
    mp_guard = g;
    return 0;
}

/* In a walk: time to ask again? At once in a thread other than the main
 * one: a thread that runs means threading is there, and the main thread
 * may soon block in join() (pending calls run only as it runs bytecode;
 * the threads that end before the names are set up go unnamed).
 * Py_AddPendingCall takes any thread; a full queue leaves the retry for
 * the next walk. */
static MP_COLD MP_NOINLINE void names_ask_again(int is_main)
{
    if ((is_main && coarse_ns() < atomic_load(&names_next_ns)) || !atomic_exchange(&names_retry, 0))
        return;
    leaf_ok_update();
    if (py.add_pending(names_when_ready, NULL) != 0) {
        atomic_store(&names_next_ns, coarse_ns() + NAMES_EVERY_NS);
        atomic_store(&names_retry, 1);
        leaf_ok_update();
    }
}

static int audit_hook(const char *event, PyObject *args, void *data)
{
    (void)data;
    if (MP_LIKELY(atomic_load_explicit(&names_installed, memory_order_relaxed)) || strcmp(event, "import") != 0 ||
        !PyTuple_Check(args) || PyTuple_GET_SIZE(args) < 1)
        return 0;
    static char name[MAX_STRING]; /* the GIL is held */
    size_t n = str_utf8(PyTuple_GET_ITEM(args, 0), name);
    if (n == 9 && !memcmp(name, "threading", 9) && !atomic_exchange(&names_waiting, 1)) {
        names_tries = 0;
        py.add_pending(names_when_ready, NULL);
    }
    return 0;
}

/* With the GIL: the PyMem wrappers and the shadow stack (MEMPROF_OPT_PYMEM),
 * and thread names if threading is loaded. */
static void python_hooks(unsigned opts)
{
    if (opts & MEMPROF_OPT_PYMEM) {
        (void)mp_pymem_install();
        mp_shadow_install(py.this_tstate());
    }
    PyObject *threading = loaded_threading();
    if (threading)
        install_names(threading);
}

/* Runs in the main thread, with the GIL, between two bytecodes, once the
 * script runs: registers on_script_end with atexit (it runs after the
 * program's own atexit handlers, registered later and called first, and
 * before the interpreter tears modules down; sys.modules is left as it
 * was), sets up thread names, and wraps the PyMem domains again if
 * start-up replaced them. */
/* atexit.register(on_script_end), sys.modules left as it was. */
static void register_atexit(void)
{
    PyObject *mods = py.modules();
    int had = mods && py.dict_get(mods, "atexit") != NULL;
    PyObject *m = py.import("atexit");
    if (m) {
        PyObject *reg = py.getattr(m, "register");
        PyObject *fn = py.cfunction_new(&end_def, NULL, NULL);
        if (reg && fn) {
            PyObject *r = py.call_args(reg, fn, NULL);
            if (r)
                py.decref(r);
        }
        if (fn)
            py.decref(fn);
        if (reg)
            py.decref(reg);
        py.decref(m);
        if (!had && mods)
            py.dict_del(mods, "atexit");
    }
}

static int register_end(void *arg)
{
    (void)arg;
    int g = mp_guard;
    mp_guard = MP_GUARD_PYAPI;
    PyObject *et, *ev, *tb;
    py.err_fetch(&et, &ev, &tb);
    python_hooks(mp_opts);
    register_atexit();
    if (!loaded_threading())
        py.add_audit_hook(audit_hook, NULL); /* names once it is imported */
    py.err_restore(et, ev, tb); /* drops anything raised above */
    mp_guard = g;
    return 0;
}

void mp_py_attach_end_mark(void)
{
    static int registered; /* once per process, however many attaches */
    if (!walker_on || registered)
        return;
    registered = 1;
    int g = mp_guard;
    mp_guard = MP_GUARD_PYAPI;
    PyObject *et, *ev, *tb;
    py.err_fetch(&et, &ev, &tb);
    register_atexit();
    py.err_restore(et, ev, tb);
    mp_guard = g;
}

static MP_COLD MP_NOINLINE void request_end_mark(void)
{
    if (py.is_initialized() && !atomic_exchange(&end_requested, 1)) {
        leaf_ok_update();
        py.add_pending(register_end, NULL);
    }
}

void mp_py_tracker_begin(unsigned opts)
{
    if (!walker_on)
        return;
    atomic_store(&end_requested, 1);
    leaf_ok_update();
    int g = mp_guard;
    mp_guard = MP_GUARD_PYAPI;
    PyObject *et, *ev, *tb;
    py.err_fetch(&et, &ev, &tb);
    python_hooks(opts);
    py.err_restore(et, ev, tb);
    mp_guard = g;
}

void mp_py_tracker_end(void)
{
    if (!walker_on)
        return;
    mp_pymem_uninstall();
    mp_shadow_uninstall();
}

/* ---- the walk ---- */

/* The calling thread's PyThreadState. A thread that holds the GIL (every
 * MEM and OBJ domain call) finds it in the runtime's "current" slot, which
 * only the GIL holder changes: two loads instead of a TSS look-up. The slot
 * is trusted only if it names this thread, and only once it has been seen
 * to agree with PyGILState_GetThisThreadState (a layout check). */
static PyThreadState **tstate_slot;

static inline PyThreadState *this_tstate(const mp_thread_t *t, int gil)
{
    if (gil && MP_LIKELY(tstate_slot_ok > 0)) {
        PyThreadState *ts = atomic_load_explicit((_Atomic(PyThreadState *) *)tstate_slot, memory_order_relaxed);
        if (MP_LIKELY(ts && ts->thread_id == t->ident))
            return ts;
    }
    PyThreadState *ts = py.this_tstate();
    if (MP_UNLIKELY(!tstate_slot_ok) && gil && ts) {
        PyThreadState *cur = tstate_slot ? *tstate_slot : NULL;
        tstate_slot_ok = cur == ts && ts->thread_id == t->ident ? 1 : -1;
        leaf_ok_update();
    }
    return ts;
}

static MP_NOINLINE uint32_t walk_segments(mp_thread_t *t, _PyInterpreterFrame *f);

/* For mp_py_leaf: the innermost shadow entry when its frame is the
 * thread's current one, else NULL. */
static inline shadow_t *leaf_entry(const mp_thread_t *t)
{
    if (!atomic_load_explicit(&leaf_ok, memory_order_relaxed))
        return NULL;
    PyThreadState *ts = atomic_load_explicit((_Atomic(PyThreadState *) *)tstate_slot, memory_order_relaxed);
    uint32_t n = mp_sh_n;
    if (MP_UNLIKELY(!ts || ts->thread_id != t->ident || !n || !ts->cframe))
        return NULL;
    shadow_t *e = &mp_sh[n - 1];
    return ts->cframe->current_frame == e->frame ? e : NULL;
}

/* The hooked frame's node at instr, found by hash: kept in the entry's sets
 * for this call and in the site table for the next calls under the same
 * frames above. */
static void leaf_found(shadow_t *e, const void *code, uint32_t instr, uint32_t node)
{
    shadow_leaves_mine(e);
    shadow_leaf_put(e, instr, node);
    mp_site_put(e->bucket, e->group, code, instr, node);
}

uint32_t mp_py_leaf(mp_thread_t *t)
{
    shadow_t *e = leaf_entry(t);
    if (!e)
        return 0;
    const _PyInterpreterFrame *f = e->frame;
    PyCodeObject *co = f->f_code;
    uint32_t instr = (uint32_t)(f->prev_instr - _PyCode_CODE(co)), node;
    /* a frame not started yet (instr before _co_firsttraceable) is never
     * remembered in the entry: mp_py_intern remembers started frames only */
    if (leaf_known(e) && (node = shadow_leaf(e, instr)))
        return node;
    if (not_started(f) || (e->depth == SHADOW_NO_DEPTH && mp_shadow_fill(t, mp_sh_n - 1)))
        return 0;
    if ((node = mp_site_find(e->bucket, e->group, co, instr)))
        return node;
    /* not in the site table (first seen, or more sites than a line holds:
     * then the entry's own sets keep them for this call) */
    mp_frame_t fr = {co, code_fp(co), instr};
    if ((node = mp_prefix_find(e->hsum + frame_mix(&fr, e->depth), co, instr)))
        leaf_found(e, co, instr, node);
    return node;
}

/* The calling thread's innermost frame in *f; 0 when its frames cannot
 * be read. */
int mp_py_walk_start(mp_thread_t *t, int gil, _PyInterpreterFrame **f)
{
    t->nseg = 0;
    t->anchor = 0;
    t->leaf_node = 0;
    t->cut = 0;
    t->cut_leaf = NULL;
    if (!walker_on)
        return 0;
    if (MP_UNLIKELY(atomic_load_explicit(&script_ended, memory_order_relaxed)) && !t->is_main)
        return 0; /* other threads' states may be freed under them from here on */
    PyThreadState *ts = this_tstate(t, gil);
    if (!ts || !ts->cframe)
        return 0;
    if (MP_UNLIKELY(!atomic_load_explicit(&end_requested, memory_order_relaxed)) && t->is_main)
        request_end_mark();
    if (MP_UNLIKELY(atomic_load_explicit(&names_retry, memory_order_relaxed)))
        names_ask_again(t->is_main);
    *f = ts->cframe->current_frame;
    return 1;
}

uint32_t mp_py_walk(mp_thread_t *t, int segments, int gil)
{
    _PyInterpreterFrame *f;
    if (!mp_py_walk_start(t, gil, &f))
        return 0;
    if (segments)
        return walk_segments(t, f);
    /* the walk stops at the frame of the innermost hooked call */
    _PyInterpreterFrame *stop = mp_sh_n ? mp_sh[mp_sh_n - 1].frame : NULL;
    if (f && not_started(f)) {
        if (f == stop) {
            t->anchor = mp_sh_n;
            return 0;
        }
        f = f->previous;
    } else if (f && f == stop) { /* the innermost hooked frame allocates */
        PyCodeObject *co = f->f_code;
        uint32_t instr = (uint32_t)(f->prev_instr - _PyCode_CODE(co));
        const shadow_t *e = &mp_sh[mp_sh_n - 1];
        uint32_t node;
        if (leaf_known(e) && (node = shadow_leaf(e, instr))) { /* here before */
            t->anchor = mp_sh_n;
            t->leaf_node = node;
            return 1;
        }
    }
    /* the arrays in locals (stores to cur[] could otherwise be t's fields
     * for all the compiler knows), the position's multiple added up */
    mp_frame_t *cur = t->cur;
    uint32_t n = 0, cap = t->cur_cap;
    uint64_t key = 0, pos = 0;
    for (; f; f = f->previous, n++, pos += POS_MUL) {
        if (MP_UNLIKELY(n == cap)) {
            if (n == MAX_DEPTH || mp_mem_grow((void **)&t->cur, &t->cur_cap, n + 1, sizeof *t->cur))
                break;
            cur = t->cur;
            cap = t->cur_cap;
        }
        PyCodeObject *co = f->f_code;
        uintptr_t fp = code_fp(co);
        uint32_t instr = (uint32_t)(f->prev_instr - _PyCode_CODE(co));
        cur[n] = (mp_frame_t){co, fp, instr};
        key += mix(co, fp, instr, pos);
        if (f == stop) {
            t->anchor = mp_sh_n;
            return n + 1;
        }
    }
    t->key = fmix64(key + n);
    return n;
}

/* The walk for --native: also cuts the frames into t->seg, one count per
 * C call of the evaluation loop (each starts at an is_entry frame). */
static MP_NOINLINE uint32_t walk_segments(mp_thread_t *t, _PyInterpreterFrame *f)
{
    uint32_t n = 0, seg_start = 0;
    uint64_t key = 0;
    for (int leaf = 1; f; f = f->previous, leaf = 0) {
        if (!leaf || !not_started(f)) {
            if (MP_UNLIKELY(n == t->cur_cap) &&
                (n == MAX_DEPTH || mp_mem_grow((void **)&t->cur, &t->cur_cap, n + 1, sizeof *t->cur)))
                break;
            mp_frame_t *fr = &t->cur[n];
            frame_put(fr, f);
            key += frame_mix(fr, n);
            n++;
        }
        if (f->is_entry) { /* the first frame of one C call of the evaluation loop */
            if (t->nseg == t->seg_cap && mp_mem_grow((void **)&t->seg, &t->seg_cap, t->nseg + 1, sizeof *t->seg))
                return t->key = fmix64(key + n), n;
            t->seg[t->nseg++] = n - seg_start;
            seg_start = n;
        }
    }
    if (n > seg_start && !mp_mem_grow((void **)&t->seg, &t->seg_cap, t->nseg + 1, sizeof *t->seg))
        t->seg[t->nseg++] = n - seg_start;
    t->key = fmix64(key + n);
    return n;
}

/* Source line of an instruction, decoded once per new stack node. */
static int32_t frame_line(PyCodeObject *co, uint32_t instr)
{
    if (!co->co_linetable || !PyBytes_Check(co->co_linetable))
        return -1;
    return mp_linetable_line((const uint8_t *)PyBytes_AS_STRING(co->co_linetable),
                             (size_t)PyBytes_GET_SIZE(co->co_linetable), co->co_firstlineno, instr);
}


/* The node of (parent, frame): the thread's cache, else the table of
 * prefixes (keyed by a hash of both), else a new trie node. */
uint32_t mp_py_edge(mp_thread_t *t, uint32_t parent, const mp_frame_t *f)
{
    uint64_t key = fmix64(mix(f->code, f->fp, f->instr, (uint64_t)parent * POS_MUL) + parent);
    __typeof__(t->edges[0]) *c = &t->edges[(key >> 40) & (MP_EDGE_CACHE - 1)];
    if (MP_LIKELY(c->key == key && c->node))
        return c->node;
    uint32_t node = mp_prefix_find(key, f->code, f->instr);
    if (!node) {
        PyCodeObject *co = (PyCodeObject *)f->code;
        uint32_t code = code_id(co);
        if (!code)
            return parent;
        node = mp_node_intern(parent, code, frame_line(co, f->instr),
                              co->co_firstlineno > 0 ? (uint32_t)co->co_firstlineno : 0);
        mp_prefix_add(key, f->code, f->instr, node);
    }
    c->key = key;
    c->node = node;
    return node;
}

/* Key of a whole stack, for the thread's cache of recent stacks. */
static inline uint64_t stack_key(const mp_frame_t *f, uint32_t n)
{
    uint64_t k0 = 0, k1 = 0;
    uint32_t i = 0;
    for (; i + 1 < n; i += 2) {
        k0 += frame_mix(&f[i], i);
        k1 += frame_mix(&f[i + 1], i + 1);
    }
    if (i < n)
        k0 += frame_mix(&f[i], i);
    return fmix64(k0 + k1 + n);
}

static uint32_t intern_walk(mp_thread_t *t, const mp_frame_t *frames, uint32_t n);

uint32_t mp_py_intern(mp_thread_t *t, const mp_frame_t *frames, uint32_t n)
{
    if (t->cut && frames == t->mix)
        return mp_shadow_intern_cut(t, frames, n);
    if (t->anchor && frames == t->cur) {
        if (t->leaf_node)
            return t->leaf_node;
        shadow_t *e = &mp_sh[t->anchor - 1];
        /* The hooked frame allocates (n == 1): its stack by hash first, as
         * mp_py_leaf does; without it the bases of every entry below
         * that has none are interned, one edge per frame (a mapping made
         * by a new 200-frame recursion: the frame stack's next chunk). */
        uint64_t h = 0;
        int hashed = n == 1 && (e->depth != SHADOW_NO_DEPTH || !mp_shadow_fill(t, t->anchor - 1));
        if (hashed) {
            h = e->hsum + frame_mix(&frames[0], e->depth);
            uint32_t node = mp_prefix_find(h, frames[0].code, frames[0].instr);
            if (node) {
                leaf_found(e, frames[0].code, frames[0].instr, node);
                return node;
            }
        }
        uint32_t node = mp_shadow_base(t, t->anchor - 1);
        for (uint32_t i = n; i--;)
            node = mp_py_edge(t, node, &frames[i]);
        if (n == 1 && node) { /* the hooked frame allocated: remember where */
            shadow_leaves_mine(e);
            shadow_leaf_put(e, frames[0].instr, node);
            /* and file the stack by its hash, for the next call with the
             * same frames above (mp_py_leaf) */
            if (hashed) {
                mp_prefix_add(h, frames[0].code, frames[0].instr, node);
                mp_site_put(e->bucket, e->group, frames[0].code, frames[0].instr, node);
            }
        }
        return node ? node : mp_pseudo_node;
    }
    if (n == 0)
        return mp_pseudo_node;
    uint64_t key = frames == t->cur ? t->key : stack_key(frames, n);
    __typeof__(t->recent[0]) *c = &t->recent[(key >> 40) & (MP_RECENT_STACKS - 1)];
    if (MP_LIKELY(c->key == key && c->depth == n && c->node))
        return c->node;
    uint32_t node = intern_walk(t, frames, n);
    if (node != mp_pseudo_node) {
        c->key = key;
        c->depth = n;
        c->node = node;
    }
    return node;
}

/* A stack not seen lately: its prefixes, shared with the previous stack
 * or found in the prefix table, and new nodes for the rest. */
static uint32_t intern_walk(mp_thread_t *t, const mp_frame_t *frames, uint32_t n)
{
    if ((n > t->prefix_cap && mp_mem_grow((void **)&t->prefix, &t->prefix_cap, n, sizeof *t->prefix)) ||
        (n > t->prev_cap && mp_mem_grow((void **)&t->prev, &t->prev_cap, n, sizeof *t->prev))) {
        t->prev_depth = 0;
        return mp_pseudo_node;
    }
    const mp_frame_t *root = frames + n - 1; /* leaf first */
    mp_prefix_t *pre = t->prefix;
    uint64_t sum = PREFIX_SEED;
    for (uint32_t i = 0; i < n; i++) {
        sum += frame_mix(root - i, i);
        pre[i].hash = sum; /* the prefix table mixes it for its buckets */
        pre[i].node = 0;
    }
    uint64_t h = pre[n - 1].hash;
    /* the same stack as this thread's last allocation: the common case */
    if (n == t->prev_depth && t->prev[n - 1].hash == h)
        return t->prev[n - 1].node;
    /* prefixes shared with the last stack are known, with their nodes */
    uint32_t k = 0, m = n < t->prev_depth ? n : t->prev_depth;
    while (k < m && t->prev[k].hash == pre[k].hash) {
        pre[k].node = t->prev[k].node;
        k++;
    }
    /* binary search for the first prefix never interned */
    uint32_t lo = k, hi = n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        uint32_t node = mp_prefix_find(pre[mid].hash, root[-(int64_t)mid].code, root[-(int64_t)mid].instr);
        if (node) {
            pre[mid].node = node;
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    /* intern the rest, each under its parent. Nodes of prefixes the search
     * skipped stay 0 ("known, look up when needed"): only the parent is. */
    if (lo > 0 && !pre[lo - 1].node)
        pre[lo - 1].node = mp_prefix_find(pre[lo - 1].hash, root[-(int64_t)(lo - 1)].code, root[-(int64_t)(lo - 1)].instr);
    for (uint32_t i = lo; i < n; i++) {
        const mp_frame_t *f = root - i;
        uint32_t parent = i ? pre[i - 1].node : 0;
        if (f->fp == MP_FP_NATIVE) {
            pre[i].node = mp_native_node(parent, (uintptr_t)f->code);
            mp_prefix_add(pre[i].hash, f->code, f->instr, pre[i].node);
            continue;
        }
        uint32_t code = code_id((PyCodeObject *)f->code);
        if (!code) {
            pre[i].node = parent;
            continue;
        }
        PyCodeObject *co = (PyCodeObject *)f->code;
        pre[i].node = mp_node_intern(parent, code, frame_line(co, f->instr),
                                     co->co_firstlineno > 0 ? (uint32_t)co->co_firstlineno : 0);
        mp_prefix_add(pre[i].hash, f->code, f->instr, pre[i].node);
    }
    /* this stack becomes the thread's previous one */
    mp_prefix_t *tmp = t->prev;
    uint32_t tcap = t->prev_cap;
    t->prev = t->prefix;
    t->prev_cap = t->prefix_cap;
    t->prefix = tmp;
    t->prefix_cap = tcap;
    t->prev_depth = n;
    return t->prev[n - 1].node;
}

void mp_py_reset(void)
{
    mp_table_clear((void **)&C.slots, &C.cap, sizeof *C.slots, CODE_FIRST);
    C.n = 0;
    mp_shadow_gen++; /* the shadow's nodes were the parent's capture's */
}

void mp_py_emit_pseudo(void)
{
    static const char file[] = "<memprof>";
    uint32_t fn = mp_string_intern(file, sizeof file - 1);
    uint32_t qn = mp_string_intern(MEMPROF_PSEUDO_NO_PYTHON, strlen(MEMPROF_PSEUDO_NO_PYTHON));
    uint32_t id = mp_code_new_id();
    mp_emit_code(MEMPROF_CODE_PSEUDO, fn, qn, 0);
    mp_pseudo_node = mp_node_intern(0, id, -1, 0);
}

/* ---- start ---- */

#define SYM(field, name) (*(void **)&py.field = dlsym(RTLD_DEFAULT, name))

unsigned mp_py_init(void)
{
    const char *(*get_version)(void) = (const char *(*)(void))dlsym(RTLD_DEFAULT, "Py_GetVersion");
    if (!get_version)
        return MEMPROF_PYSTACK_NONE;
    py.version = get_version();
    const unsigned long *hex = dlsym(RTLD_DEFAULT, "Py_Version");
    py.hexversion = hex ? *hex : 0;
    if (!hex || (*hex >> 16) != (PY_VERSION_HEX >> 16)) {
        mp_log("memprof: this build reads the frames of Python " PY_VERSION " only; "
               "allocations will have no Python stack",
               py.version);
        return MEMPROF_PYSTACK_UNSUPPORTED;
    }
    if (dlsym(RTLD_DEFAULT, "_Py_RefTotal")) { /* Py_REF_DEBUG: object layout differs */
        mp_log("memprof: this is a debug build of Python, whose frames memprof cannot read; "
               "allocations will have no Python stack",
               NULL);
        return MEMPROF_PYSTACK_UNSUPPORTED;
    }
    int ok = SYM(this_tstate, "PyGILState_GetThisThreadState") && SYM(is_initialized, "Py_IsInitialized") &&
             SYM(add_pending, "Py_AddPendingCall") && SYM(import, "PyImport_ImportModule") &&
             SYM(modules, "PyImport_GetModuleDict") && SYM(dict_get, "PyDict_GetItemString") &&
             SYM(dict_del, "PyDict_DelItemString") && SYM(cfunction_new, "PyCFunction_NewEx") &&
             SYM(getattr, "PyObject_GetAttrString") && SYM(call_args, "PyObject_CallFunctionObjArgs") &&
             SYM(decref, "Py_DecRef") && SYM(err_fetch, "PyErr_Fetch") && SYM(err_restore, "PyErr_Restore") &&
             SYM(none, "_Py_NoneStruct") && SYM(compile, "Py_CompileString") &&
             SYM(eval_code, "PyEval_EvalCode") && SYM(dict_new, "PyDict_New") &&
             SYM(builtins, "PyEval_GetBuiltins") && SYM(dict_set, "PyDict_SetItemString") &&
             SYM(add_audit_hook, "PySys_AddAuditHook") && SYM(as_ulong_mask, "PyLong_AsUnsignedLongMask");
    if (!ok) {
        mp_log("memprof: this Python lacks a C-API function memprof needs; no Python stacks", NULL);
        return MEMPROF_PYSTACK_UNSUPPORTED;
    }
    _PyRuntimeState *rt = dlsym(RTLD_DEFAULT, "_PyRuntime");
    tstate_slot = rt ? (PyThreadState **)&rt->gilstate.tstate_current : NULL;
    tstate_slot_ok = rt ? 0 : -1;
    walker_on = 1;
    return MEMPROF_PYSTACK_WALKER;
}

const char *mp_py_version(void) { return py.version; }
unsigned long mp_py_hexversion(void) { return py.hexversion; }
