/* cli_common.h - what the memprof programs share: locating the installed
 * pieces, opening a capture with a one-line error, and usage errors. Only
 * programs use this (it prints and exits); libraries never do. */
#ifndef MP_CLI_COMMON_H
#define MP_CLI_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "memprof/reader.h"

/* Directory holding the running executable. 0 or -1. */
int mp_self_dir(char *buf, size_t len);
/* libmemprof.so: $MEMPROF_LIBRARY if set, else where it is installed
 * relative to the programs (the build tree mirrors that). 0 or -1. */
int mp_preload_path(char *buf, size_t len);

/* Creates a capture file for writing: mode 0600, never through a symbolic
 * link, never over an existing file unless `force` (then truncated, and
 * made 0600), a regular file. The descriptor (O_CLOEXEC), or -1 with one
 * line in err saying what is wrong. */
int mp_create_capture(const char *path, int force, char *err, size_t len);
/* "PROG: message" on stderr, exit status 2 (wrong usage). */
void mp_cli_die(const char *prog, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
/* Opens a capture or exits 2 with one line saying what is wrong. */
memprof_reader_t *mp_cli_open(const char *prog, const char *path);
/* After a full read: one warning line if the capture was cut short, or
 * (events_cut: mp_analysis_t.events_cut) aggregates events that were. */
void mp_cli_warn_truncated(const char *prog, const char *path, const memprof_reader_t *r, int events_cut);
/* Exits 2 with one line for a failed read or analysis (rc < 0). */
void mp_cli_fail(const char *prog, const char *path, const memprof_reader_t *r, int rc) __attribute__((noreturn));
/* Writes all n bytes (again after EINTR and short writes). 0 or -1 (errno). */
int mp_write_all(int fd, const void *p, size_t n);
/* One read of what fd has (again after EINTR): the bytes read (> 0), 0 at
 * its end (or on an error), -1 when a non-blocking fd has nothing yet. */
long mp_read_now(int fd, void *buf, size_t len);

/* A count from 1 to 1000. 0 or -1. */
int mp_parse_count(const char *s, size_t *out);

#endif
