/* pystack.c - Python stacks at allocation time, for the CPython this build
 * was compiled against (3.11: tstate->cframe->current_frame -> previous ...).
 *
 * The walk is read-only: it takes no lock, touches no reference count,
 * allocates nothing and needs no GIL; a thread reads only its own frame
 * chain, which only it changes. Code objects get small ids through a table
 * keyed by address and checked against a fingerprint of the object (a dead
 * code object's address can be reused by a new one); a new code object's
 * file name, qualified name, first line and line table are written once.
 * Each thread keeps its previous stack with the trie node of every frame,
 * so only the frames below the first difference are interned again.
 *
 * CPython is reached through dlsym only: libmemprof.so links no libpython
 * and loads into any program. The one call into the C-API is a pending call
 * that registers an atexit callback marking the end of the script.
 */
#define _GNU_SOURCE
#define Py_BUILD_CORE 1
#include <Python.h>
#include <internal/pycore_frame.h>

#include <dlfcn.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>

#include "memprof/format.h"
#include "recorder.h"

#define MAX_DEPTH (1u << 16)  /* deeper stacks keep their innermost frames */
#define MAX_STRING 4096       /* longer names are cut (at a UTF-8 boundary) */
#define MAX_LINETABLE (MEMPROF_BLOCK_MAX - 1024)

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
    PyObject *none;
    const char *version;
    unsigned long hexversion;
} py_api_t;

static py_api_t py;
static int walker_on;
static atomic_int end_requested;
static atomic_int script_ended;
static uint32_t pseudo_node;

/* ---- code objects ---- */

typedef struct {
    const void *ptr;
    const void *filename, *qualname, *linetable;
    Py_ssize_t size;
    int firstlineno;
    uint32_t id;
} code_entry_t;

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

static int code_grow(void)
{
    size_t ncap = C.cap ? C.cap * 2 : 1024;
    code_entry_t *t = mmap(NULL, ncap * sizeof *t, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (t == MAP_FAILED)
        return -1;
    for (size_t i = 0; i < C.cap; i++) {
        if (!C.slots[i].ptr)
            continue;
        size_t j = ptr_hash(C.slots[i].ptr) & (ncap - 1);
        while (t[j].ptr)
            j = (j + 1) & (ncap - 1);
        t[j] = C.slots[i];
    }
    if (C.slots)
        munmap(C.slots, C.cap * sizeof *t);
    C.slots = t;
    C.cap = ncap;
    return 0;
}

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
    const void *lt = "";
    size_t ltn = 0;
    unsigned flags = 0;
    if (co->co_linetable && PyBytes_Check(co->co_linetable)) {
        lt = PyBytes_AS_STRING(co->co_linetable);
        ltn = (size_t)PyBytes_GET_SIZE(co->co_linetable);
        if (ltn > MAX_LINETABLE) {
            ltn = MAX_LINETABLE;
            flags |= MEMPROF_CODE_LT_CUT;
        }
    }
    uint32_t id = mp_code_new_id();
    mp_emit_code(flags, fn, qn, co->co_firstlineno > 0 ? (uint32_t)co->co_firstlineno : 0, lt, ltn);
    return id;
}

static uint32_t code_id(PyCodeObject *co)
{
    if ((C.n + 1) * 2 > C.cap && code_grow())
        return 0;
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
    mp_rec_mark(MEMPROF_M_SCRIPT_END);
    Py_INCREF(py.none);
    return py.none;
}

static PyMethodDef end_def = {"_memprof_script_end", on_script_end, METH_NOARGS, NULL};

/* Runs in the main thread, with the GIL, between two bytecodes: registers
 * on_script_end with atexit. It runs after the program's own atexit
 * handlers (registered later, called first) and before the interpreter
 * tears modules down. sys.modules is left as it was. */
static int register_end(void *arg)
{
    (void)arg;
    int g = mp_guard;
    mp_guard = MP_GUARD_PYAPI;
    PyObject *et, *ev, *tb;
    py.err_fetch(&et, &ev, &tb);
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
    py.err_restore(et, ev, tb); /* drops anything raised above */
    mp_guard = g;
    return 0;
}

static MP_COLD MP_NOINLINE void request_end_mark(void)
{
    if (py.is_initialized() && !atomic_exchange(&end_requested, 1))
        py.add_pending(register_end, NULL);
}

/* ---- the walk ---- */

uint32_t mp_py_walk(mp_thread_t *t)
{
    if (!walker_on)
        return 0;
    if (MP_UNLIKELY(atomic_load_explicit(&script_ended, memory_order_relaxed)) && !t->is_main)
        return 0; /* other threads' states may be freed under them from here on */
    PyThreadState *ts = py.this_tstate();
    if (!ts || !ts->cframe)
        return 0;
    if (MP_UNLIKELY(!atomic_load_explicit(&end_requested, memory_order_relaxed)) && t->is_main)
        request_end_mark();
    uint32_t n = 0;
    for (_PyInterpreterFrame *f = ts->cframe->current_frame; f; f = f->previous) {
        PyCodeObject *co = f->f_code;
        _Py_CODEUNIT *first = _PyCode_CODE(co);
        if (f->owner != FRAME_OWNED_BY_GENERATOR && f->prev_instr < first + co->_co_firsttraceable)
            continue; /* not started yet: CPython's tracebacks skip it too */
        if (MP_UNLIKELY(n == t->cur_cap) && (n == MAX_DEPTH || mp_mem_grow((void **)&t->cur, &t->cur_cap, n + 1, sizeof *t->cur)))
            break;
        t->cur[n].code = co;
        t->cur[n].instr = (uint32_t)(f->prev_instr - first);
        n++;
    }
    return n;
}

uint32_t mp_py_intern(mp_thread_t *t, uint32_t depth)
{
    if (depth == 0)
        return pseudo_node;
    if (mp_mem_grow((void **)&t->prev, &t->prev_cap, depth, sizeof *t->prev)) {
        t->prev_depth = 0;
        return pseudo_node;
    }
    uint32_t k = 0, m = depth < t->prev_depth ? depth : t->prev_depth;
    const mp_frame_t *cur = t->cur + depth - 1; /* root of the walk */
    while (k < m && t->prev[k].code == cur[-(int64_t)k].code && t->prev[k].instr == cur[-(int64_t)k].instr)
        k++;
    uint32_t node = k ? t->prev[k - 1].node : 0;
    for (uint32_t i = k; i < depth; i++) {
        const mp_frame_t *f = &cur[-(int64_t)i];
        uint32_t code = code_id((PyCodeObject *)f->code);
        node = code ? mp_node_intern(node, code, f->instr) : node;
        t->prev[i] = (mp_frame_t){f->code, f->instr, node};
    }
    t->prev_depth = depth;
    return node;
}

void mp_py_emit_pseudo(void)
{
    static const char file[] = "<memprof>";
    uint32_t fn = mp_string_intern(file, sizeof file - 1);
    uint32_t qn = mp_string_intern(MEMPROF_PSEUDO_NO_PYTHON, strlen(MEMPROF_PSEUDO_NO_PYTHON));
    uint32_t id = mp_code_new_id();
    mp_emit_code(MEMPROF_CODE_PSEUDO, fn, qn, 0, NULL, 0);
    pseudo_node = mp_node_intern(0, id, 0);
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
    int ok = SYM(this_tstate, "PyGILState_GetThisThreadState") && SYM(is_initialized, "Py_IsInitialized") &&
             SYM(add_pending, "Py_AddPendingCall") && SYM(import, "PyImport_ImportModule") &&
             SYM(modules, "PyImport_GetModuleDict") && SYM(dict_get, "PyDict_GetItemString") &&
             SYM(dict_del, "PyDict_DelItemString") && SYM(cfunction_new, "PyCFunction_NewEx") &&
             SYM(getattr, "PyObject_GetAttrString") && SYM(call_args, "PyObject_CallFunctionObjArgs") &&
             SYM(decref, "Py_DecRef") && SYM(err_fetch, "PyErr_Fetch") && SYM(err_restore, "PyErr_Restore") &&
             SYM(none, "_Py_NoneStruct");
    if (!ok) {
        mp_log("memprof: this Python lacks a C-API function memprof needs; no Python stacks", NULL);
        return MEMPROF_PYSTACK_UNSUPPORTED;
    }
    walker_on = 1;
    return MEMPROF_PYSTACK_WALKER;
}

const char *mp_py_version(void) { return py.version; }
unsigned long mp_py_hexversion(void) { return py.hexversion; }
