/* memprof.h - the installed API's common part: visibility, version, error codes.
 *
 * Every library function of memprof returns 0 (or a positive count) on success
 * and a negative MEMPROF_E* code on failure; memprof_strerror() turns a code
 * into one line of text. The list below is the only place codes are defined.
 */
#ifndef MEMPROF_MEMPROF_H
#define MEMPROF_MEMPROF_H

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define MEMPROF_API __attribute__((visibility("default")))
#else
#define MEMPROF_API
#endif

#define MEMPROF_VERSION_STRING "0.1.0"

/* X-macro: name, value, message. Values are stable; never reuse one. */
#define MEMPROF_ERRNO_MAP(XX)                                                       \
    XX(EIO, -1, "input/output error")                                               \
    XX(ENOMEM, -2, "out of memory")                                                 \
    XX(EINVAL, -3, "invalid argument")                                              \
    XX(ENOENT, -4, "no such file")                                                  \
    XX(EBADMAGIC, -5, "not a memprof capture (bad magic)")                          \
    XX(EVERSION, -6, "capture format version not supported")                        \
    XX(ECORRUPT, -7, "capture is corrupted")                                        \
    XX(ETRUNCATED, -8, "capture is truncated")                                      \
    XX(ENOSPACE, -9, "buffer too small")                                            \
    XX(ELIMIT, -10, "a size or count in the capture is beyond memprof's limits")    \
    XX(EACCES, -11, "permission denied")                                            \
    XX(EAGAIN, -12, "the stream has no more data yet")                              \
    XX(EAGGREGATE, -13, "an aggregated capture holds totals, not events")

typedef enum {
#define MEMPROF_XX_(name, value, msg) MEMPROF_##name = value,
    MEMPROF_ERRNO_MAP(MEMPROF_XX_)
#undef MEMPROF_XX_
} memprof_errno_t;

/* A static string for `code` (never NULL, also for unknown codes). */
MEMPROF_API const char *memprof_strerror(int code);

#ifdef __cplusplus
}
#endif
#endif
