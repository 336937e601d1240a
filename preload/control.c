/* control.c - memprof/control.h: a capture started and stopped from inside
 * the process (a Tracker). Loaded late, the hooks go in by GOT patching
 * (got.c) for the time of the capture; preloaded, they are there. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>

#include "memprof/control.h"
#include "memprof/format.h"
#include "recorder.h"

static pthread_mutex_t control_lock = PTHREAD_MUTEX_INITIALIZER;
static int started;         /* by memprof_control_start, not stopped yet */
static int patched;         /* the GOT points at our hooks */
static int keep_hooks;      /* memprof_control_keep_hooks(1): stop leaves them */

static void unpatch_locked(void)
{
    if (patched) {
        int g = mp_guard;
        mp_guard = MP_GUARD_PYAPI;
        mp_got_unpatch();
        mp_guard = g;
        patched = 0;
    }
}

MP_EXPORT int memprof_control_start(int fd, const char *path, unsigned options, unsigned interval_us)
{
    options &= MEMPROF_OPT_NATIVE | MEMPROF_OPT_PYMEM | MEMPROF_OPT_FOLLOW_FORK | MEMPROF_OPT_ATTACHED;
    options |= MEMPROF_OPT_MID_RUN; /* whatever the process allocated before is not known */
    pthread_mutex_lock(&control_lock);
    int err = started || atomic_load(&mp_active) ? EBUSY : 0;
    if (!err)
        err = mp_rec_begin(fd, path, options, (uint64_t)interval_us * 1000);
    if (!err && !mp_preloaded) {
        int g = mp_guard;
        mp_guard = MP_GUARD_PYAPI;
        err = mp_got_patch();
        mp_guard = g;
        if (err)
            mp_rec_end();
        patched = !err;
    }
    if (!err) {
        mp_py_tracker_begin(options);
        started = 1;
    }
    pthread_mutex_unlock(&control_lock);
    return err;
}

MP_EXPORT int memprof_control_stop(void)
{
    pthread_mutex_lock(&control_lock);
    int was = started;
    if (was) {
        mp_py_tracker_end();
        mp_rec_end();
        if (!keep_hooks)
            unpatch_locked();
        started = 0;
    }
    pthread_mutex_unlock(&control_lock);
    return was ? 0 : ENOENT;
}

MP_EXPORT void memprof_control_keep_hooks(int on)
{
    pthread_mutex_lock(&control_lock);
    keep_hooks = on != 0;
    if (!keep_hooks && !started)
        unpatch_locked();
    pthread_mutex_unlock(&control_lock);
}

MP_EXPORT int memprof_control_active(void) { return atomic_load(&mp_active) != 0; }
