/* _memprof.c - the C extension of the memprof package: finds libmemprof.so
 * (already in the process when it was preloaded, else loaded with
 * dlopen(RTLD_LOCAL)) and calls its control API (memprof/control.h) with the
 * GIL held. The Tracker class (memprof/__init__.py) is built on it. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <errno.h>
#include <string.h>

#include "memprof/control.h"
#include "memprof/format.h"

static memprof_control_start_fn c_start;
static memprof_control_stop_fn c_stop;
static memprof_control_active_fn c_active;
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
    if (!f || !c_stop || !c_active) {
        PyErr_Format(PyExc_RuntimeError, "memprof: %s is not a libmemprof.so of this version (no control API)",
                     library ? library : "the preloaded library");
        c_stop = NULL;
        c_active = NULL;
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

static PyObject *is_preloaded(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyBool_FromLong(dlsym(RTLD_DEFAULT, MEMPROF_CONTROL_START) != NULL);
}

static PyMethodDef methods[] = {
    {"start", start, METH_VARARGS,
     "start(fd, path, options, interval_us, library): start a capture into fd (the library found or loaded)"},
    {"stop", stop, METH_NOARGS, "stop(): end the capture started here; False when there was none"},
    {"active", active, METH_NOARGS, "active(): a capture is being written in this process"},
    {"preloaded", is_preloaded, METH_NOARGS, "preloaded(): libmemprof.so was preloaded (memprof run)"},
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
