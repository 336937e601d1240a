/* attach.c - the library's side of `memprof attach` and `memprof detach`
 * (memprof/control.h). Both entries run as Python pending calls: in the
 * main thread, at a safe point between bytecodes, with the GIL held, so the
 * capture starts and stops as a Tracker's does (control.c). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "memprof/control.h"
#include "memprof/format.h"
#include "recorder.h"

MP_EXPORT memprof_attach_state_t memprof_attach_state;

MP_EXPORT int memprof_control_start(int fd, const char *path, unsigned options, unsigned interval_us);
MP_EXPORT int memprof_control_stop(void);

/* The capture was created by the command (mode 0600, never over a file):
 * it is opened here, never created, never through a symbolic link. */
MP_EXPORT int memprof_attach_begin(memprof_attach_req_t *req)
{
    int err = EINVAL;
    if (req->magic == MEMPROF_ATTACH_MAGIC && req->version == MEMPROF_ATTACH_VERSION) {
        int fd = open(req->capture, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0) {
            err = errno;
        } else {
            err = memprof_control_start(fd, req->capture, req->options | MEMPROF_OPT_ATTACHED, req->interval_us);
            close(fd);
        }
        if (!err) {
            mp_py_attach_end_mark();
            __atomic_store_n(&memprof_attach_state.attached, 1, __ATOMIC_RELEASE);
        }
        __atomic_add_fetch(&memprof_attach_state.begin_seq, 1, __ATOMIC_RELEASE);
    }
    req->result = err;
    __atomic_store_n(&req->done, 1, __ATOMIC_RELEASE);
    return 0;
}

MP_EXPORT int memprof_attach_end(void *unused)
{
    (void)unused;
    int err = ENOENT;
    if (__atomic_load_n(&memprof_attach_state.attached, __ATOMIC_ACQUIRE)) {
        err = memprof_control_stop();
        __atomic_store_n(&memprof_attach_state.attached, 0, __ATOMIC_RELEASE);
    }
    memprof_attach_state.end_result = err;
    __atomic_add_fetch(&memprof_attach_state.end_seq, 1, __ATOMIC_RELEASE);
    return 0;
}
