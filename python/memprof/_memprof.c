/* _memprof.c - the C extension of the memprof package.
 *
 * Recording: finds libmemprof.so (already in the process when it was
 * preloaded, else loaded with dlopen(RTLD_LOCAL)) and calls its control API
 * (memprof/control.h) with the GIL held. The Tracker class is built on it.
 *
 * Reading: summary() runs the reporters' analysis in this process (the
 * reader library is linked in), without the GIL, and returns what
 * `memprof summary --json` prints; memprof.load() and the pytest plugin use
 * it, so a test's figures cost no extra process. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <errno.h>
#include <string.h>

#include "analysis.h"
#include "memprof/control.h"
#include "memprof/format.h"
#include "memprof/reader.h"
#include "report.h"

static memprof_control_start_fn c_start;
static memprof_control_stop_fn c_stop;
static memprof_control_active_fn c_active;
static memprof_control_keep_hooks_fn c_keep_hooks;
static int preloaded;

/* 0, or -1 with an exception set. */
static int find_library(const char *library)
{
    if (c_start)
        return 0;
    void *h = RTLD_DEFAULT;
    void *f = dlsym(h, MEMPROF_CONTROL_START); /* preloaded (memprof run, LD_PRELOAD) */
    preloaded = f != NULL;
    if (!f) {
        if (!library || !*library) {
            PyErr_SetString(PyExc_RuntimeError, "memprof: cannot find libmemprof.so; reinstall memprof "
                                                "or set MEMPROF_LIBRARY to its path");
            return -1;
        }
        h = dlopen(library, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
        if (!h) {
            const char *why = dlerror();
            PyErr_Format(PyExc_RuntimeError, "memprof: cannot load %s: %s; reinstall memprof or set "
                         "MEMPROF_LIBRARY to the path of libmemprof.so", library, why ? why : "unknown error");
            return -1;
        }
        f = dlsym(h, MEMPROF_CONTROL_START);
    }
    *(void **)&c_stop = dlsym(h, MEMPROF_CONTROL_STOP);
    *(void **)&c_active = dlsym(h, MEMPROF_CONTROL_ACTIVE);
    *(void **)&c_keep_hooks = dlsym(h, MEMPROF_CONTROL_KEEP_HOOKS);
    if (!f || !c_stop || !c_active || !c_keep_hooks) {
        PyErr_Format(PyExc_RuntimeError, "memprof: %s is not a libmemprof.so of this version (no control API)",
                     library ? library : "the preloaded library");
        c_stop = NULL;
        c_active = NULL;
        c_keep_hooks = NULL;
        return -1;
    }
    *(void **)&c_start = f;
    return 0;
}

static PyObject *start(PyObject *self, PyObject *args)
{
    (void)self;
    int fd;
    const char *path, *library;
    unsigned options, interval_us;
    if (!PyArg_ParseTuple(args, "isIIz", &fd, &path, &options, &interval_us, &library))
        return NULL;
    if (find_library(library))
        return NULL;
    int err = c_start(fd, path, options, interval_us);
    if (err == EBUSY) {
        PyErr_SetString(PyExc_RuntimeError,
                        c_active() && !preloaded ? "memprof: a Tracker is already recording in this process; "
                                                   "stop it before starting another"
                        : c_active() ? "memprof: this process is already being recorded (by memprof run, or "
                                       "another Tracker); only one capture at a time"
                                     : "memprof: a capture is already being written in this process");
        return NULL;
    }
    if (err) {
        errno = err;
        return PyErr_SetFromErrnoWithFilename(PyExc_OSError, path);
    }
    Py_RETURN_NONE;
}

static PyObject *stop(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    if (!c_stop)
        Py_RETURN_FALSE;
    return PyBool_FromLong(c_stop() == 0);
}

static PyObject *active(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    void *f = c_active ? (void *)c_active : dlsym(RTLD_DEFAULT, MEMPROF_CONTROL_ACTIVE);
    return PyBool_FromLong(f && ((memprof_control_active_fn)f)());
}

static PyObject *keep_hooks(PyObject *self, PyObject *args)
{
    (void)self;
    int on;
    const char *library;
    if (!PyArg_ParseTuple(args, "pz", &on, &library))
        return NULL;
    if (!on && !c_keep_hooks)
        Py_RETURN_NONE; /* never loaded: nothing patched */
    if (find_library(library))
        return NULL;
    c_keep_hooks(on);
    Py_RETURN_NONE;
}

static PyObject *is_preloaded(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyBool_FromLong(dlsym(RTLD_DEFAULT, MEMPROF_CONTROL_START) != NULL);
}


/* A capture read and analysed without the GIL; NULL with an exception set
 * (OSError for a file that cannot be read, ValueError for one that is not
 * a readable capture, each saying what is wrong with which path). */
typedef struct {
    memprof_reader_t *r;
    mp_analysis_t a;
} analysed_t;

static void analysed_free(analysed_t *x)
{
    mp_analysis_free(&x->a);
    memprof_reader_close(x->r);
    free(x);
}

static analysed_t *analyse(const char *path)
{
    analysed_t *x = calloc(1, sizeof *x);
    if (!x)
        return (analysed_t *)PyErr_NoMemory();
    int rc, analysed = 0;
    Py_BEGIN_ALLOW_THREADS
    rc = memprof_reader_open(path, &x->r);
    if (rc == 0) {
        rc = mp_analysis_run(&x->a, x->r);
        analysed = 1; /* mp_analysis_free is safe after a failed run */
    }
    Py_END_ALLOW_THREADS
    if (rc >= 0)
        return x;
    const char *why = rc == MEMPROF_ENOMEM || !x->r ? memprof_strerror(rc) : memprof_reader_error(x->r);
    if (!strcmp(why, "no error")) /* the analysis found it, not the reader */
        why = memprof_strerror(rc);
    PyObject *type = rc == MEMPROF_ENOENT ? PyExc_FileNotFoundError
                     : rc == MEMPROF_EACCES ? PyExc_PermissionError
                     : rc == MEMPROF_EIO ? PyExc_OSError
                     : rc == MEMPROF_ENOMEM ? PyExc_MemoryError : PyExc_ValueError;
    if (strstr(why, path)) /* "cannot open PATH: ..." */
        PyErr_Format(type, "memprof: %s", why);
    else
        PyErr_Format(type, "memprof: %s: %s", path, why);
    if (analysed)
        mp_analysis_free(&x->a);
    if (x->r)
        memprof_reader_close(x->r);
    free(x);
    return NULL;
}

/* Text from a capture (file names, function names: UTF-8 when Python wrote
 * them, anything for a native module's path): undecodable bytes are kept
 * as surrogates, as os.fsdecode does, instead of failing the read. */
static PyObject *capture_text(const char *s)
{
    return PyUnicode_DecodeUTF8(s, (Py_ssize_t)strlen(s), "surrogateescape");
}

/* summary(path, top) -> (json text, [warning lines]): what `memprof summary
 * --json --top top` prints. */
static PyObject *summary(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *pathobj;
    unsigned top;
    if (!PyArg_ParseTuple(args, "O&I", PyUnicode_FSConverter, &pathobj, &top))
        return NULL;
    const char *path = PyBytes_AS_STRING(pathobj);
    analysed_t *x = analyse(path);
    PyObject *ret = NULL;
    if (x) {
        char *text = NULL;
        Py_BEGIN_ALLOW_THREADS
        cJSON *root = mp_json_summary(&x->a, path, top ? top : 1);
        text = root ? cJSON_PrintUnformatted(root) : NULL;
        cJSON_Delete(root);
        Py_END_ALLOW_THREADS
        PyObject *json = text ? capture_text(text) : PyErr_NoMemory();
        PyObject *warnings = json ? PyList_New(0) : NULL;
        for (const char *w; warnings && (w = mp_symbol_problem(&x->a));) {
            PyObject *line = capture_text(w);
            if (!line || PyList_Append(warnings, line))
                Py_CLEAR(warnings);
            Py_XDECREF(line);
        }
        if (warnings)
            ret = Py_BuildValue("(NN)", json, warnings);
        else
            Py_XDECREF(json);
        free(text);
        analysed_free(x);
    }
    Py_DECREF(pathobj);
    return ret;
}

/* "function (file:line)" of the heaviest location at `when` into buf ("" for
 * none), and its bytes. -1 when out of memory. Without the GIL (native
 * frames are symbolized here). */
static int heaviest(const mp_analysis_t *a, mp_when_t when, char *buf, size_t len, uint64_t *bytes)
{
    mp_location_t *loc;
    size_t n;
    mp_srcframe_t f;
    uint32_t parent;
    *bytes = 0;
    buf[0] = '\0';
    if (mp_top_locations(a, when, 1, &loc, &n))
        return -1;
    if (n && !mp_node_frame(a, loc[0].node, &f, &parent)) {
        if (f.line >= 0)
            snprintf(buf, len, "%s (%s:%d)", f.function, f.file, f.line);
        else
            snprintf(buf, len, "%s (%s)", f.function, f.file);
    }
    if (n)
        *bytes = loc[0].amount.bytes;
    free(loc);
    return 0;
}

/* figures(path) -> (peak bytes, peak blocks, leaked bytes, leaked blocks,
 * heaviest location at the peak, heaviest leak location, its bytes,
 * truncated): what the pytest plugin needs of every test's capture, without
 * the JSON. */
static PyObject *figures(PyObject *self, PyObject *arg)
{
    (void)self;
    PyObject *pathobj;
    if (!PyUnicode_FSConverter(arg, &pathobj))
        return NULL;
    analysed_t *x = analyse(PyBytes_AS_STRING(pathobj));
    Py_DECREF(pathobj);
    if (!x)
        return NULL;
    char at_peak[4096 + 512], in_leaks[sizeof at_peak];
    uint64_t peak_top, leak_top;
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = heaviest(&x->a, MP_AT_PEAK, at_peak, sizeof at_peak, &peak_top) ||
          heaviest(&x->a, MP_AT_END, in_leaks, sizeof in_leaks, &leak_top);
    Py_END_ALLOW_THREADS
    PyObject *ret = NULL;
    if (err) {
        PyErr_NoMemory();
    } else {
        PyObject *p = capture_text(at_peak), *l = p ? capture_text(in_leaks) : NULL;
        if (l)
            ret = Py_BuildValue("(KKKKNNKN)", (unsigned long long)x->a.peak.bytes,
                                (unsigned long long)x->a.peak.count, (unsigned long long)x->a.at_end.bytes,
                                (unsigned long long)x->a.at_end.count, p, l, (unsigned long long)leak_top,
                                PyBool_FromLong(memprof_reader_info(x->r)->truncated));
        else
            Py_XDECREF(p); /* Py_BuildValue's N took both, even when it failed */
    }
    analysed_free(x);
    return ret;
}

/* parse_size(text) -> bytes, as the CLI reads --max-peak (ValueError else). */
static PyObject *parse_size(PyObject *self, PyObject *arg)
{
    (void)self;
    const char *s = PyUnicode_Check(arg) ? PyUnicode_AsUTF8(arg) : NULL;
    uint64_t v;
    if (!s || mp_parse_size(s, &v)) {
        if (!PyErr_Occurred())
            PyErr_Format(PyExc_ValueError, "memprof: %R is not a size; write bytes or a number with a unit, "
                         "as in '24 MB', '512KiB', '1.5GB' (units are powers of 1024)", arg);
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(v);
}

static PyMethodDef methods[] = {
    {"start", start, METH_VARARGS,
     "start(fd, path, options, interval_us, library): start a capture into fd (the library found or loaded)"},
    {"stop", stop, METH_NOARGS, "stop(): end the capture started here; False when there was none"},
    {"active", active, METH_NOARGS, "active(): a capture is being written in this process"},
    {"keep_hooks", keep_hooks, METH_VARARGS,
     "keep_hooks(on, library): leave the GOT patched between captures (many short ones), or not"},
    {"preloaded", is_preloaded, METH_NOARGS, "preloaded(): libmemprof.so was preloaded (memprof run)"},
    {"summary", summary, METH_VARARGS,
     "summary(path, top): (what `memprof summary --json --top top` prints, [warning lines])"},
    {"figures", figures, METH_O,
     "figures(path): (peak bytes, peak blocks, leaked bytes, leaked blocks, heaviest location at the peak, "
     "heaviest in leaks, its bytes, truncated)"},
    {"parse_size", parse_size, METH_O, "parse_size(text): a size such as '24 MB' in bytes"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "memprof._memprof", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__memprof(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m && (PyModule_AddIntConstant(m, "OPT_NATIVE", MEMPROF_OPT_NATIVE) ||
              PyModule_AddIntConstant(m, "OPT_PYMEM", MEMPROF_OPT_PYMEM) ||
              PyModule_AddIntConstant(m, "OPT_FOLLOW_FORK", MEMPROF_OPT_FOLLOW_FORK))) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
