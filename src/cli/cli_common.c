/* cli_common.c - shared by the memprof programs: paths, opening captures,
 * one-line errors. */
#define _GNU_SOURCE
#include "cli_common.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "memprof/format.h"

int mp_self_dir(char *buf, size_t len)
{
    ssize_t n = readlink("/proc/self/exe", buf, len - 1);
    if (n <= 0 || (size_t)n >= len - 1)
        return -1;
    buf[n] = '\0';
    char *slash = strrchr(buf, '/');
    if (!slash)
        return -1;
    *slash = '\0';
    return 0;
}

int mp_preload_path(char *buf, size_t len)
{
    const char *env = getenv("MEMPROF_LIBRARY");
    if (env && *env) {
        int n = snprintf(buf, len, "%s", env);
        return n > 0 && (size_t)n < len ? 0 : -1;
    }
    char dir[PATH_MAX];
    if (mp_self_dir(dir, sizeof dir))
        return -1;
    int n = snprintf(buf, len, "%s/../%s/libmemprof.so", dir, MEMPROF_LIBDIR_REL);
    if (n <= 0 || (size_t)n >= len)
        return -1;
    char real[PATH_MAX];
    if (realpath(buf, real) && strlen(real) < len)
        strcpy(buf, real);
    return 0;
}

int mp_create_capture(const char *path, int force, char *err, size_t len)
{
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode)) {
        snprintf(err, len, "%s is a symbolic link; memprof does not write through one", path);
        return -1;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC | (force ? O_TRUNC : O_EXCL), 0600);
    if (fd < 0) {
        int e = errno;
        if (e == EEXIST)
            snprintf(err, len, "%s already exists; use --force to overwrite it or -o to name another file", path);
        else if (e == ELOOP)
            snprintf(err, len, "%s is a symbolic link; memprof does not write through one", path);
        else
            snprintf(err, len, "cannot create %s: %s", path, strerror(e));
        return -1;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, len, "%s is not a regular file", path);
        close(fd);
        return -1;
    }
    if (force)
        (void)fchmod(fd, 0600);
    return fd;
}

void mp_cli_die(const char *prog, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    exit(2);
}

memprof_reader_t *mp_cli_open(const char *prog, const char *path)
{
    memprof_reader_t *r;
    int rc = memprof_reader_open(path, &r);
    if (rc == 0)
        return r;
    const char *why = r ? memprof_reader_error(r) : memprof_strerror(rc);
    const char *hint = "";
    if (rc == MEMPROF_ENOENT)
        hint = "; check the path (memprof run prints where it wrote the capture)";
    else if (rc == MEMPROF_EBADMAGIC)
        hint = "; give a file written by memprof run";
    else if (rc == MEMPROF_ETRUNCATED)
        hint = "; the profiled process ended before anything was recorded";
    fprintf(stderr, "%s: %s: %s%s\n", prog, path, why, hint);
    exit(2);
}

void mp_cli_warn_truncated(const char *prog, const char *path, const memprof_reader_t *r, int events_cut)
{
    const memprof_info_t *in = memprof_reader_info(r);
    if (in->truncated || events_cut)
        fprintf(stderr,
                "%s: warning: %s is truncated (the process was killed or crashed); "
                "this report covers what was written before the cut\n",
                prog, path);
}

void mp_cli_fail(const char *prog, const char *path, const memprof_reader_t *r, int rc)
{
    if (rc == MEMPROF_ENOMEM)
        fprintf(stderr, "%s: %s: out of memory while reading the capture\n", prog, path);
    else if (rc == MEMPROF_EAGGREGATE)
        fprintf(stderr,
                "%s: %s is an aggregated capture (memprof run --aggregate): it holds totals per stack, not "
                "events, so --thread, --from, --to and --temporary-threshold cannot apply; record a full "
                "capture for them\n",
                prog, path);
    else if (!strcmp(memprof_reader_error(r), "no error")) /* the analysis found it, not the reader */
        fprintf(stderr, "%s: %s: %s\n", prog, path, memprof_strerror(rc));
    else
        fprintf(stderr, "%s: %s: %s\n", prog, path, memprof_reader_error(r));
    exit(2);
}

int mp_parse_count(const char *s, size_t *out)
{
    if (!s || !*s)
        return -1;
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v < 1 || v > 1000 || s[0] == '-')
        return -1;
    *out = v;
    return 0;
}

int mp_write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

long mp_read_now(int fd, void *buf, size_t len)
{
    for (;;) {
        ssize_t n = read(fd, buf, len);
        if (n >= 0)
            return (long)n;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return -1;
        if (errno != EINTR)
            return 0;
    }
}
