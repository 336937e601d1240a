/* control.h - libmemprof.so's control API: start and stop a capture from
 * inside the process (the Python package's Tracker; later `attach`).
 *
 * The library may be preloaded (memprof run, or LD_PRELOAD by hand) or
 * loaded late with dlopen(RTLD_LOCAL). Loaded late, its allocator hooks are
 * put in place by patching the GOT entries of every loaded object (and of
 * each one dlopen'ed while recording), and taken out again on stop.
 * Preloaded, they are in place already. Call both with the GIL held when
 * the process runs Python. */
#ifndef MEMPROF_CONTROL_H
#define MEMPROF_CONTROL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Starts writing a capture into `fd` (duplicated: the caller closes its
 * own). `path` names it (children of --follow-fork write `path.<pid>`;
 * may be NULL without that option). `options`: MEMPROF_OPT_NATIVE,
 * MEMPROF_OPT_PYMEM, MEMPROF_OPT_FOLLOW_FORK (memprof/format.h).
 * `interval_us`: memory sampling interval, 0 for 10 ms. Returns 0,
 * EBUSY when a capture is being written already (memprof run, or another
 * start), or an errno. */
typedef int (*memprof_control_start_fn)(int fd, const char *path, unsigned options, unsigned interval_us);
/* Marks the end (what is live now counts as leaked), writes the trailer,
 * closes the capture and takes the hooks out. 0, or ENOENT when no capture
 * was started with memprof_control_start. */
typedef int (*memprof_control_stop_fn)(void);
/* 1 while a capture is being written, 0 otherwise. */
typedef int (*memprof_control_active_fn)(void);
/* For a process that records many short captures (a Tracker per test):
 * with `on` set, stop leaves the GOT entries pointing at the hooks (which
 * pass every call straight through between captures), so the next start
 * does not patch again; with `on` clear, they are put back now if no
 * capture is being written, else at its stop. Loaded late only (preloaded,
 * the hooks are always there). */
typedef void (*memprof_control_keep_hooks_fn)(int on);

#define MEMPROF_CONTROL_START "memprof_control_start"
#define MEMPROF_CONTROL_STOP "memprof_control_stop"
#define MEMPROF_CONTROL_ACTIVE "memprof_control_active"
#define MEMPROF_CONTROL_KEEP_HOOKS "memprof_control_keep_hooks"

/* ---- memprof attach (src/cli/attach.c) -------------------------------------
 *
 * `memprof attach PID` writes a request into pages it maps in the target,
 * and has the target's main thread run, at its next safe point with the GIL
 * held (Py_AddPendingCall), a few instructions that dlopen libmemprof.so and
 * call memprof_attach_begin(request). `memprof detach PID` queues
 * memprof_attach_end the same way and reads memprof_attach_state. A private
 * interface between the command and the library of one version. */
#define MEMPROF_ATTACH_MAGIC 0x48434154544150ull /* "PATTACH" */
#define MEMPROF_ATTACH_VERSION 1u
#define MEMPROF_ATTACH_BEGIN "memprof_attach_begin"
#define MEMPROF_ATTACH_END "memprof_attach_end"
#define MEMPROF_ATTACH_STATE "memprof_attach_state"

typedef struct {
    uint64_t dlopen_fn, dlsym_fn;  /* 0, 8: the target's, for the loader code */
    int32_t done;                  /* 16: 0 queued, 1 ran, 2 the library or its entry could not be loaded */
    int32_t result;                /* 20: 0 recording, else an errno */
    uint32_t options, interval_us; /* 24, 28: MEMPROF_OPT_* of the capture, memory sampling */
    char entry[32];                /* 32: MEMPROF_ATTACH_BEGIN */
    char library[4096];            /* 64: libmemprof.so */
    char capture[4096];            /* the capture, created by the command (the target opens it) */
    uint64_t magic, version;       /* MEMPROF_ATTACH_MAGIC, MEMPROF_ATTACH_VERSION */
} memprof_attach_req_t;

typedef struct {
    int32_t attached;   /* 1 while a capture begun by memprof_attach_begin is being written */
    int32_t end_result; /* of the last memprof_attach_end: 0, or ENOENT when nothing was attached */
    uint32_t end_seq;   /* one more at each memprof_attach_end */
    uint32_t begin_seq; /* one more at each memprof_attach_begin */
} memprof_attach_state_t;

#ifdef __cplusplus
}
#endif
#endif
