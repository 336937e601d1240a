/* run.c - `memprof run`: start a Python program with libmemprof.so preloaded
 * and a capture file open for it, wait for it, and exit as it exited.
 *
 * The capture is created here, before the program starts (O_EXCL unless
 * --force, mode 0600, never through a symlink), so a bad path fails at once
 * with one line instead of after a whole run. The child learns the
 * descriptor from MEMPROF_FD; libmemprof.so takes MEMPROF_* and itself out
 * of the environment before Python reads it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aggregate.h"
#include "cli_common.h"
#include "memprof/format.h"
#include "report.h"

static const char usage[] =
    "usage: memprof run [-o FILE] [--force] [--native] [--trace-python-allocators]\n"
    "                   [--follow-fork | --aggregate] [--interval MS] [--python PATH]\n"
    "                   [-q]\n"
    "                   (script.py [args...] | -m module [args...] | -c code [args...])\n"
    "\n"
    "Runs a Python program and records every allocation it makes, with its\n"
    "Python stack, into a capture file. The program's arguments, input,\n"
    "output and exit status are its own; memprof exits with its status.\n"
    "\n"
    "options:\n"
    "  -o, --output FILE   capture file (default: memprof-<script>.<pid>.memprof)\n"
    "  -f, --force         overwrite FILE if it exists\n"
    "  --native            record native (C/C++) stacks too, merged with the Python\n"
    "                      frames each interpreter frame was running\n"
    "  --trace-python-allocators\n"
    "                      record every Python object allocation (PyMem RAW, MEM\n"
    "                      and OBJ domains) instead of the pymalloc arenas\n"
    "  --follow-fork       profile child processes too: a forked child, and a Python\n"
    "                      program started with exec, writes FILE.<pid>\n"
    "  --aggregate         keep totals per stack instead of every event: the heap at\n"
    "                      its peak, at script end and at exit, allocations in all,\n"
    "                      and memory over time; a small file however long the run\n"
    "                      (reports that need events, or --thread/--from/--to, say so)\n"
    "  --interval MS       sample resident memory every MS milliseconds (default 10)\n"
    "  --python PATH       interpreter to run (default: $MEMPROF_PYTHON, which\n"
    "                      `python -m memprof` and the pip-installed `memprof` set\n"
    "                      to their own interpreter, else " MEMPROF_DEFAULT_PYTHON ")\n"
    "  -q, --quiet         do not print where the capture went\n"
    "  -h, --help          show this help\n";

static const char *prog = "memprof run";

typedef struct {
    const char *output, *python;
    int force, quiet;
    int aggregate;          /* the events come here, through a pipe, and are aggregated */
    unsigned opts;           /* MEMPROF_OPT_* the program records with */
    unsigned long interval_us;
    char **target;  /* what follows the python executable: script args / -m mod args / -c code args */
    int ntarget;
    const char *stem;
} run_opts_t;

static void parse(int argc, char **argv, run_opts_t *o)
{
    const char *env = getenv("MEMPROF_PYTHON");
    o->python = env && *env ? env : MEMPROF_DEFAULT_PYTHON;
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage, stdout);
            exit(0);
        } else if (!strcmp(a, "--native")) {
            o->opts |= MEMPROF_OPT_NATIVE;
        } else if (!strcmp(a, "--trace-python-allocators")) {
            o->opts |= MEMPROF_OPT_PYMEM;
        } else if (!strcmp(a, "--follow-fork")) {
            o->opts |= MEMPROF_OPT_FOLLOW_FORK;
        } else if (!strcmp(a, "--aggregate")) {
            o->aggregate = 1;
        } else if (!strcmp(a, "--interval") || !strncmp(a, "--interval=", 11)) {
            const char *v = a[10] == '=' ? a + 11 : (i + 1 < argc ? argv[++i] : NULL);
            char *end;
            double ms = v ? strtod(v, &end) : 0;
            if (!v || !*v || *end || !(ms >= 0.1 && ms <= 60000))
                mp_cli_die(prog, "--interval needs milliseconds between 0.1 and 60000, e.g. --interval 10");
            o->interval_us = (unsigned long)(ms * 1000 + 0.5);
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output") || !strcmp(a, "--python")) {
            if (i + 1 >= argc)
                mp_cli_die(prog, "%s needs a value; see 'memprof run --help'", a);
            if (!strcmp(a, "--python"))
                o->python = argv[++i];
            else
                o->output = argv[++i];
        } else if (!strncmp(a, "--output=", 9)) {
            o->output = a + 9;
        } else if (!strncmp(a, "--python=", 9)) {
            o->python = a + 9;
        } else if (!strcmp(a, "-f") || !strcmp(a, "--force")) {
            o->force = 1;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            o->quiet = 1;
        } else if (!strcmp(a, "-m") || !strcmp(a, "-c")) {
            if (i + 1 >= argc)
                mp_cli_die(prog, "%s needs a %s", a, a[1] == 'm' ? "module name" : "program string");
            o->stem = a[1] == 'm' ? argv[i + 1] : "c";
            break;
        } else if (!strcmp(a, "--")) {
            i++;
            break;
        } else if (a[0] == '-') {
            mp_cli_die(prog, "unknown option '%s'; see 'memprof run --help'", a);
        } else {
            break;
        }
    }
    if (i >= argc)
        mp_cli_die(prog, "nothing to run: give a script, -m module or -c code; see 'memprof run --help'");
    if (o->aggregate && (o->opts & MEMPROF_OPT_FOLLOW_FORK))
        mp_cli_die(prog, "--aggregate keeps the totals of one process and cannot follow forks: drop one of "
                         "--aggregate and --follow-fork");
    o->target = argv + i;
    o->ntarget = argc - i;
    if (!o->stem) {
        const char *s = strrchr(argv[i], '/');
        o->stem = s ? s + 1 : argv[i];
        struct stat st;
        if (stat(argv[i], &st) != 0)
            mp_cli_die(prog, "cannot run %s: %s", argv[i], strerror(errno));
    }
}

/* The interpreter as an ELF file: a script in its place (pyenv shims, say)
 * would get libmemprof.so instead of Python. */
static void resolve_python(const char *in, char *out, size_t len)
{
    char found[PATH_MAX];
    if (!strchr(in, '/')) {
        const char *path = getenv("PATH");
        int ok = 0;
        for (const char *p = path ? path : "/usr/bin:/bin"; *p && !ok;) {
            size_t n = strcspn(p, ":");
            snprintf(found, sizeof found, "%.*s/%s", (int)n, p, in);
            ok = access(found, X_OK) == 0;
            p += n + (p[n] == ':');
        }
        if (!ok)
            mp_cli_die(prog, "cannot find '%s' on PATH; give --python a path", in);
        in = found;
    }
    if (access(in, X_OK) != 0)
        mp_cli_die(prog, "cannot run Python %s: %s; give --python an interpreter", in, strerror(errno));
    char magic[4] = {0};
    FILE *f = fopen(in, "rb");
    size_t got = f ? fread(magic, 1, 4, f) : 0;
    if (f)
        fclose(f);
    if (got == 4 && !memcmp(magic, "\x7f" "ELF", 4)) {
        snprintf(out, len, "%s", in);
        return;
    }
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "'%s' -c 'import sys; print(sys.executable)' 2>/dev/null", in);
    FILE *p = popen(cmd, "r");
    if (!p || !fgets(out, (int)len, p) || (out[strcspn(out, "\n")] = '\0', out[0] != '/')) {
        if (p)
            pclose(p);
        mp_cli_die(prog, "%s is not a Python interpreter", in);
    }
    pclose(p);
}

static void default_output(const run_opts_t *o, pid_t pid, char *buf, size_t len)
{
    if (o->output) {
        snprintf(buf, len, "%s", o->output);
        return;
    }
    char stem[256];
    snprintf(stem, sizeof stem, "%s", o->stem);
    size_t n = strlen(stem);
    if (n > 3 && !strcmp(stem + n - 3, ".py"))
        stem[n - 3] = '\0';
    snprintf(buf, len, "memprof-%s.%d.memprof", stem, (int)pid);
}

/* In the child: report a failure to the parent through the pipe and stop. */
static void child_fail(int pipefd, int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 3, 4)));

static void child_fail(int pipefd, int code, const char *fmt, ...)
{
    char msg[PATH_MAX * 2];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    (void)!write(pipefd, msg, n > 0 ? (size_t)n : 0);
    _exit(code);
}

/* stream_fd >= 0: the capture goes there (a pipe to memprof), and the
 * program starts once memprof says so on go_fd (it has its output file). */
static void child(const run_opts_t *o, const char *python, const char *lib, int pipefd, int stream_fd, int go_fd)
{
    char out[PATH_MAX];
    default_output(o, getpid(), out, sizeof out);
    char err[PATH_MAX + 128];
    int fd = stream_fd;
    if (fd < 0 && (fd = mp_create_capture(out, o->force, err, sizeof err)) < 0)
        child_fail(pipefd, 2, "%s", err);
    if (go_fd >= 0) {
        char go = 0;
        ssize_t k;
        while ((k = read(go_fd, &go, 1)) < 0 && errno == EINTR)
            ;
        if (k != 1)
            _exit(2); /* memprof said why */
        close(go_fd);
    }
    int keep = fcntl(fd, F_DUPFD, 3); /* without O_CLOEXEC: Python inherits it */
    char fdv[32], *pre;
    snprintf(fdv, sizeof fdv, "%d", keep);
    const char *old = getenv("LD_PRELOAD");
    if (keep < 0 || asprintf(&pre, old && *old ? "%s:%s" : "%s", lib, old) < 0)
        child_fail(pipefd, 2, "cannot set up the capture for %s", out);
    close(fd);
    setenv("MEMPROF_FD", fdv, 1);
    char num[32], abs_out[PATH_MAX];
    snprintf(num, sizeof num, "%u", o->opts);
    setenv("MEMPROF_OPTS", num, 1);
    snprintf(num, sizeof num, "%lu", o->interval_us ? o->interval_us : 10000ul);
    setenv("MEMPROF_INTERVAL_US", num, 1);
    if (o->opts & MEMPROF_OPT_FOLLOW_FORK) { /* children name their captures after this */
        if (out[0] == '/')
            snprintf(abs_out, sizeof abs_out, "%s", out);
        else if (!getcwd(abs_out, sizeof abs_out) || strlen(abs_out) + strlen(out) + 2 > sizeof abs_out)
            child_fail(pipefd, 2, "cannot find the current directory for %s", out);
        else
            strcat(strcat(abs_out, "/"), out);
        setenv("MEMPROF_OUT", abs_out, 1);
    }
    char exe[PATH_MAX];
    if (realpath(python, exe))
        setenv("MEMPROF_EXE", exe, 1);
    setenv("LD_PRELOAD", pre, 1);
    char **av = calloc((size_t)o->ntarget + 2, sizeof *av);
    if (!av)
        child_fail(pipefd, 2, "out of memory");
    av[0] = (char *)python;
    memcpy(av + 1, o->target, (size_t)o->ntarget * sizeof *av);
    execv(python, av);
    child_fail(pipefd, 127, "cannot run %s: %s", python, strerror(errno));
}

static pid_t child_pid;

static void forward(int sig)
{
    if (child_pid > 0)
        kill(child_pid, sig);
}

/* ---- --aggregate: the events come through a pipe and are replayed here ---- */

typedef struct {
    int in;                 /* the read end of the capture's pipe (non-blocking) */
    memprof_reader_t *r;
    mp_analysis_t a;
    int rc;                 /* the analysis' first error */
} stream_t;

/* Reads what the pipe has and replays it; 0 at the end of the stream (the
 * writers closed it), 1 when there may be more, < 0 on a read error. */
static int stream_pump(stream_t *s)
{
    static uint8_t buf[1 << 18];
    for (;;) {
        ssize_t n = read(s->in, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return 1;
        if (n < 0)
            return -errno;
        if (n == 0)
            return 0;
        if (s->rc == 0 && (s->rc = memprof_reader_feed(s->r, buf, (size_t)n)) == 0) {
            int rc = mp_analysis_feed(&s->a);
            if (rc != MEMPROF_EAGAIN && rc != 0)
                s->rc = rc;
        }
    }
}

/* Until the program exits (and the pipe is drained: a process it forked
 * may hold the pipe open long after). Returns its wait status. */
static int stream_run(stream_t *s, pid_t pid)
{
    int status = 0, exited = 0;
    for (;;) {
        struct pollfd p = {s->in, POLLIN, 0};
        int k = poll(&p, 1, exited ? 0 : 100);
        int rc = k > 0 ? stream_pump(s) : 1;
        if (rc <= 0 || (exited && k == 0))
            break;
        if (!exited) {
            pid_t w = waitpid(pid, &status, WNOHANG);
            exited = w == pid;
        }
    }
    while (!exited && waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    memprof_reader_feed_end(s->r);
    if (s->rc == 0) {
        int rc = mp_analysis_feed(&s->a);
        if (rc < 0)
            s->rc = rc;
    }
    return status;
}

static void report(const run_opts_t *o, pid_t pid, int status)
{
    char out[PATH_MAX], size[32], why[64] = "";
    default_output(o, pid, out, sizeof out);
    struct stat st;
    uint64_t bytes = stat(out, &st) == 0 ? (uint64_t)st.st_size : 0;
    if (WIFSIGNALED(status))
        snprintf(why, sizeof why, ", truncated: the program was killed by signal %d", WTERMSIG(status));
    fprintf(stderr, "memprof: wrote %s (%s%s%s); see: memprof summary %s\n", out,
            mp_human_bytes(bytes, size, sizeof size), o->aggregate ? ", aggregated" : "", why, out);
    if (!(o->opts & MEMPROF_OPT_FOLLOW_FORK))
        return;
    /* children's captures: FILE.<pid>[.<n>] */
    char pattern[PATH_MAX + 8];
    snprintf(pattern, sizeof pattern, "%s.*", out);
    glob_t g;
    if (glob(pattern, 0, NULL, &g) == 0) {
        size_t n = 0;
        for (size_t i = 0; i < g.gl_pathc; i++) {
            const char *tail = g.gl_pathv[i] + strlen(out) + 1;
            if (strspn(tail, "0123456789.") == strlen(tail))
                n++;
        }
        if (n)
            fprintf(stderr, "memprof: and %zu child capture%s: %s.<pid>\n", n, n == 1 ? "" : "s", out);
        globfree(&g);
    }
}

int main(int argc, char **argv)
{
    run_opts_t o = {0};
    parse(argc, argv, &o);
    char python[PATH_MAX], lib[PATH_MAX];
    resolve_python(o.python, python, sizeof python);
    if (mp_preload_path(lib, sizeof lib) || access(lib, R_OK) != 0)
        mp_cli_die(prog, "cannot find libmemprof.so (looked for %s); is memprof installed whole?", lib);
    int pfd[2], sfd[2] = {-1, -1}, gfd[2] = {-1, -1};
    if (pipe2(pfd, O_CLOEXEC) != 0)
        mp_cli_die(prog, "cannot create a pipe: %s", strerror(errno));
    if (o.aggregate) {
        if (pipe2(sfd, O_CLOEXEC) != 0 || pipe2(gfd, O_CLOEXEC) != 0)
            mp_cli_die(prog, "cannot create a pipe: %s", strerror(errno));
        (void)fcntl(sfd[0], F_SETPIPE_SZ, 1 << 20); /* fewer wake-ups; the default where refused */
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        mp_cli_die(prog, "cannot fork: %s", strerror(errno));
    if (pid == 0) {
        close(pfd[0]);
        if (o.aggregate) {
            close(sfd[0]);
            close(gfd[1]);
        }
        child(&o, python, lib, pfd[1], sfd[1], gfd[0]);
    }
    child_pid = pid;
    close(pfd[1]);
    int out_fd = -1;
    stream_t st = {.in = -1};
    char out[PATH_MAX];
    if (o.aggregate) {
        close(sfd[1]);
        close(gfd[0]);
        default_output(&o, pid, out, sizeof out);
        char err[PATH_MAX + 128];
        if ((out_fd = mp_create_capture(out, o.force, err, sizeof err)) < 0) {
            close(gfd[1]); /* the program does not start */
            while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
                ;
            mp_cli_die(prog, "%s", err);
        }
        st.in = sfd[0];
        fcntl(st.in, F_SETFL, O_NONBLOCK);
        if (memprof_reader_open_stream(&st.r) != 0 ||
            (st.rc = mp_analysis_begin(&st.a, st.r, NULL)) != 0) {
            unlink(out);
            mp_cli_die(prog, "out of memory");
        }
        (void)!write(gfd[1], "g", 1);
        close(gfd[1]);
    }
    /* The terminal's ^C and ^\ reach the program too; memprof outlives it. */
    signal(SIGINT, SIG_IGN);
    signal(SIGQUIT, SIG_IGN);
    signal(SIGTERM, forward);
    signal(SIGHUP, forward);
    char msg[PATH_MAX * 2];
    ssize_t n = read(pfd[0], msg, sizeof msg - 1);
    close(pfd[0]);
    int status;
    if (o.aggregate) {
        status = stream_run(&st, pid);
    } else {
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
    }
    if (n > 0) {
        msg[n] = '\0';
        fprintf(stderr, "%s: %s\n", prog, msg);
        if (o.aggregate)
            unlink(out);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 2;
    }
    if (o.aggregate) {
        int rc = st.rc ? st.rc : mp_analysis_finish(&st.a);
        int err = 0;
        if (rc == 0 && !memprof_reader_info(st.r)->version_major)
            fprintf(stderr, "%s: the program wrote no capture (it did not start recording); %s is empty\n",
                    prog, out);
        else if (rc != 0)
            fprintf(stderr, "%s: the events could not be aggregated: %s; %s is empty\n", prog,
                    rc == MEMPROF_ENOMEM ? "out of memory" : memprof_reader_error(st.r), out);
        else if ((err = mp_aggregate_write(&st.a, out_fd)) != 0 || fsync(out_fd) != 0)
            fprintf(stderr, "%s: cannot write %s: %s\n", prog, out, strerror(err ? err : errno));
        close(out_fd);
        mp_analysis_free(&st.a);
        memprof_reader_close(st.r);
    }
    if (!o.quiet)
        report(&o, pid, status);
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        signal(sig, SIG_DFL);
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, sig);
        sigprocmask(SIG_UNBLOCK, &set, NULL);
        raise(sig);
        return 128 + sig;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
