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
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "aggregate.h"
#include "cli_common.h"
#include "live.h"
#include "memprof/format.h"
#include "report.h"

static const char usage[] =
    "usage: memprof run [-o FILE] [--force] [--native] [--trace-python-allocators]\n"
    "                   [--follow-fork | --aggregate | --live | --live-remote PORT]\n"
    "                   [--interval MS] [--python PATH] [-q]\n"
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
    "  --live              show the heap, RSS, allocation rate and the top locations\n"
    "                      in this terminal while the program runs (q leaves the view,\n"
    "                      not the program; s sorts, t picks a thread). The program's\n"
    "                      output is held until the view is left, its input is empty.\n"
    "                      No capture is written unless -o FILE is given (aggregated)\n"
    "  --live-remote PORT  the same, for 'memprof live PORT' run in another terminal:\n"
    "                      waits for it on 127.0.0.1:PORT before the program starts;\n"
    "                      the program runs on if the viewer leaves\n"
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
    int live;               /* ... and shown on this terminal */
    int port;               /* ... or relayed to memprof live on 127.0.0.1:port */
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
        } else if (!strcmp(a, "--live")) {
            o->live = 1;
        } else if (!strcmp(a, "--live-remote") || !strncmp(a, "--live-remote=", 14)) {
            const char *v = a[13] == '=' ? a + 14 : (i + 1 < argc ? argv[++i] : NULL);
            char *end;
            long port = v ? strtol(v, &end, 10) : 0;
            if (!v || !*v || *end || port < 1 || port > 65535)
                mp_cli_die(prog, "--live-remote needs a TCP port from 1 to 65535, e.g. --live-remote 9001");
            o->port = (int)port;
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
    const char *mode = o->live && o->port ? "--live and --live-remote"
                       : o->aggregate && o->live ? "--aggregate and --live"
                       : o->aggregate && o->port ? "--aggregate and --live-remote" : NULL;
    if (mode)
        mp_cli_die(prog, "%s do not go together: --live and --live-remote write an aggregated capture when "
                         "given -o FILE; pick one", mode);
    mode = o->aggregate ? "--aggregate" : o->live ? "--live" : o->port ? "--live-remote" : NULL;
    if (mode && (o->opts & MEMPROF_OPT_FOLLOW_FORK))
        mp_cli_die(prog, "%s follows one process and cannot follow forks: drop one of %s and --follow-fork", mode,
                   mode);
    if (o->live && (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)))
        mp_cli_die(prog, "--live draws on a terminal, and this one's input or output is not one; use "
                         "--live-remote PORT and 'memprof live PORT' in a terminal");
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

/* The descriptors a child is given (-1: none). */
typedef struct {
    int fail;       /* says why it could not start (closed on exec) */
    int stream;     /* the capture goes there (a pipe to memprof) instead of FILE */
    int go;         /* ... and the program starts once memprof says so on it */
    int in, out, err; /* --live: its stdin, stdout and stderr */
} child_fds_t;

static void child(const run_opts_t *o, const char *python, const char *lib, const child_fds_t *c)
{
    int pipefd = c->fail;
    char out[PATH_MAX];
    default_output(o, getpid(), out, sizeof out);
    char err[PATH_MAX + 128];
    int fd = c->stream;
    if (fd < 0 && (fd = mp_create_capture(out, o->force, err, sizeof err)) < 0)
        child_fail(pipefd, 2, "%s", err);
    if (c->go >= 0) {
        char go = 0;
        ssize_t k;
        while ((k = read(c->go, &go, 1)) < 0 && errno == EINTR)
            ;
        if (k != 1)
            _exit(2); /* memprof said why */
        close(c->go);
    }
    if ((c->in >= 0 && dup2(c->in, STDIN_FILENO) < 0) || (c->out >= 0 && dup2(c->out, STDOUT_FILENO) < 0) ||
        (c->err >= 0 && dup2(c->err, STDERR_FILENO) < 0))
        child_fail(pipefd, 2, "cannot give the program its input and output: %s", strerror(errno));
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

static volatile pid_t child_pid;
static volatile sig_atomic_t stop_sig; /* SIGTERM or SIGHUP once the program was gone */

static void forward(int sig)
{
    if (child_pid > 0)
        kill(child_pid, sig);
    else
        stop_sig = sig;
}

/* ---- --aggregate, --live, --live-remote: the capture comes through a pipe ---- */

#define VIEWER_QUEUE_MAX (64u << 20) /* bytes a slow viewer may be behind before it is let go */
#define VIEWER_GRACE_MS 10000        /* after the end: how long a viewer that reads nothing is waited for */

typedef struct {
    pid_t pid;
    int status, exited;
    int in;                 /* the capture's pipe (non-blocking); -1 once it ended */
    mp_liveview_t *lv;      /* its replay (NULL: nothing needs it) */
    int replay;             /* replay what comes (not once the view is left, without -o) */
    int keep_replaying;     /* an aggregated capture is written at the end */
    int view;               /* --live: the view is on the terminal */
    int sock;               /* --live-remote: the viewer's connection (non-blocking); -1 once it left */
    uint8_t *q;             /* ... the capture's bytes it has not taken yet */
    size_t qlen, qoff, qcap;
    uint64_t stalled_ms;    /* ... when the capture ended with bytes still for it */
    int out[2];             /* --live: the files the program's stdout and stderr go to */
    off_t done[2];          /* ... how much of them has been passed on */
} relay_t;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void drop_viewer(relay_t *s, const char *why)
{
    close(s->sock);
    s->sock = -1;
    free(s->q);
    s->q = NULL;
    s->qlen = s->qoff = s->qcap = 0;
    fprintf(stderr, "%s: %s; the program runs on\n", prog, why);
}

/* Gives the viewer what it takes without waiting. */
static void viewer_flush(relay_t *s)
{
    while (s->sock >= 0 && s->qoff < s->qlen) {
        ssize_t k = send(s->sock, s->q + s->qoff, s->qlen - s->qoff, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (k <= 0) {
            drop_viewer(s, "the viewer left");
            return;
        }
        s->qoff += (size_t)k;
    }
    s->qlen = s->qoff = 0;
}

static void viewer_queue(relay_t *s, const uint8_t *p, size_t n)
{
    if (s->qoff && s->qlen + n > s->qcap) { /* room at the front first */
        memmove(s->q, s->q + s->qoff, s->qlen - s->qoff);
        s->qlen -= s->qoff;
        s->qoff = 0;
    }
    if (s->qlen + n > s->qcap) {
        size_t cap = s->qcap ? s->qcap : 1 << 20;
        while (cap < s->qlen + n)
            cap *= 2;
        uint8_t *q = cap <= VIEWER_QUEUE_MAX ? realloc(s->q, cap) : NULL;
        if (!q) {
            drop_viewer(s, "the viewer fell too far behind (stopped?), so it was let go");
            return;
        }
        s->q = q;
        s->qcap = cap;
    }
    memcpy(s->q + s->qlen, p, n);
    s->qlen += n;
    viewer_flush(s);
}

/* The capture ended: the viewer learns it when its connection closes,
 * once it has taken the rest. */
static void end_capture(relay_t *s)
{
    close(s->in);
    s->in = -1;
    s->stalled_ms = now_ms();
}

/* Replays what the capture's pipe holds (a few MiB at most, so that keys
 * and drawing are not starved) and relays it to the viewer; 0 once the
 * pipe is at its end. */
static int relay_capture(relay_t *s)
{
    static uint8_t buf[1 << 18];
    for (int pass = 0; pass < 16; pass++) {
        long n = mp_read_now(s->in, buf, sizeof buf);
        if (n == -1)
            return 1;
        if (n == 0)
            return 0;
        if (s->replay)
            mp_live_feed(s->lv, buf, (size_t)n);
        if (s->sock >= 0)
            viewer_queue(s, buf, (size_t)n);
    }
    return 1;
}

/* Passes on what the program wrote since last time (not while the view is
 * up: it waits in the file). The files, not pipes: a process the program
 * leaves running may write after memprof is gone, and must not get SIGPIPE. */
static void relay_output(relay_t *s)
{
    char buf[1 << 16];
    for (int i = 0; i < 2 && !s->view; i++) {
        ssize_t n;
        while (s->out[i] >= 0 && (n = pread(s->out[i], buf, sizeof buf, s->done[i])) > 0) {
            (void)mp_write_all(i + 1, buf, (size_t)n);
            s->done[i] += n;
        }
    }
}

static void leave_view(relay_t *s)
{
    mp_live_hide(s->lv);
    s->view = 0;
    s->replay = s->keep_replaying;
    relay_output(s);
}

/* What the view's last line says once the capture ended. */
static void say_ended(relay_t *s)
{
    char why[128];
    if (!s->exited)
        snprintf(why, sizeof why, "the capture ended; the program runs on");
    else if (WIFSIGNALED(s->status))
        snprintf(why, sizeof why, "the program was killed by signal %d (%s)", WTERMSIG(s->status),
                 strsignal(WTERMSIG(s->status)));
    else
        snprintf(why, sizeof why, "the program exited with status %d", WEXITSTATUS(s->status));
    mp_live_ended(s->lv, why);
}

/* Until the program has exited, its capture is drained (a process it
 * started may hold the pipe open long after: what does not come at once
 * after the exit is not waited for), the viewer has the rest and the view
 * is left. */
static void relay_run(relay_t *s)
{
    for (;;) {
        if (!s->exited && waitpid(s->pid, &s->status, WNOHANG) == s->pid) {
            s->exited = 1;
            child_pid = 0;
        }
        if (stop_sig) { /* SIGTERM or SIGHUP after the program ended: memprof ends too */
            if (s->view)
                leave_view(s);
            if (s->in >= 0)
                end_capture(s);
            if (s->sock >= 0)
                drop_viewer(s, "stopped");
        }
        if (s->sock >= 0 && s->in < 0 && s->qoff == s->qlen) { /* the viewer has it all */
            close(s->sock);
            s->sock = -1;
        }
        if (s->sock >= 0 && s->in < 0 && now_ms() - s->stalled_ms > VIEWER_GRACE_MS)
            drop_viewer(s, "the viewer took nothing for 10 s after the end, so it was let go");
        struct pollfd p[3];
        int np = 0, at[3];
        if (s->in >= 0)
            at[np] = 0, p[np++] = (struct pollfd){s->in, POLLIN, 0};
        if (s->sock >= 0 && s->qoff < s->qlen)
            at[np] = 1, p[np++] = (struct pollfd){s->sock, POLLOUT, 0};
        if (s->view)
            at[np] = 2, p[np++] = (struct pollfd){STDIN_FILENO, POLLIN, 0};
        if (np == 0)
            break;
        int timeout = s->exited && s->in >= 0 ? 0 : 100;
        if (s->view && mp_live_wait_ms(s->lv) < timeout)
            timeout = mp_live_wait_ms(s->lv);
        else if (s->view && s->exited && s->in < 0 && s->sock < 0)
            timeout = mp_live_wait_ms(s->lv); /* only the view is left: wait for its keys */
        int k = poll(p, (nfds_t)np, timeout);
        if (k < 0 && errno != EINTR) { /* cannot wait for anything: end here */
            if (s->in >= 0)
                end_capture(s);
            if (s->sock >= 0)
                drop_viewer(s, strerror(errno));
            if (s->view)
                leave_view(s);
            break;
        }
        for (int j = 0; k > 0 && j < np; j++) {
            if (!p[j].revents)
                continue;
            if (at[j] == 0 && !relay_capture(s))
                end_capture(s);
            else if (at[j] == 1)
                viewer_flush(s);
            else if (at[j] == 2 && (p[j].revents & (POLLHUP | POLLERR | POLLNVAL)))
                leave_view(s); /* the terminal went away: no one to show it to */
        }
        if (s->exited && k == 0 && s->in >= 0) /* drained: what holds it open is not the program */
            end_capture(s);
        relay_output(s);
        if (s->lv && s->in < 0)
            say_ended(s);
        if (s->view) {
            if (mp_live_keys(s->lv))
                leave_view(s);
            else
                mp_live_draw(s->lv, 0);
        }
    }
    while (!s->exited && waitpid(s->pid, &s->status, 0) < 0 && errno == EINTR)
        ;
    s->exited = 1;
    child_pid = 0;
    relay_output(s);
}

/* --live-remote: 127.0.0.1:port, listening. Dies with one line. */
static int listen_on(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        mp_cli_die(prog, "cannot create a socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        mp_cli_die(prog, "cannot listen on 127.0.0.1:%d: %s%s", port, strerror(errno),
                   errno == EADDRINUSE ? "; pick another port" : "");
    if (listen(fd, 1) != 0)
        mp_cli_die(prog, "cannot listen on 127.0.0.1:%d: %s", port, strerror(errno));
    return fd;
}

static volatile sig_atomic_t interrupted;
static void on_interrupt(int sig) { interrupted = sig; }

/* The viewer's connection, or -1 when ^C (or a signal) came first. */
static int wait_viewer(int listener, int port)
{
    fprintf(stderr, "memprof: waiting for the viewer: run 'memprof live %d' in another terminal "
                    "(^C gives up)\n", port);
    struct sigaction sa = {.sa_handler = on_interrupt}, old[3];
    static const int sigs[3] = {SIGINT, SIGTERM, SIGHUP};
    for (int i = 0; i < 3; i++)
        sigaction(sigs[i], &sa, &old[i]); /* no SA_RESTART: accept returns */
    int fd;
    while ((fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC)) < 0 && !interrupted &&
           (errno == EINTR || errno == ECONNABORTED))
        ;
    for (int i = 0; i < 3; i++)
        sigaction(sigs[i], &old[i], NULL);
    close(listener);
    return fd;
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
            mp_human_bytes(bytes, size, sizeof size), o->aggregate || o->live || o->port ? ", aggregated" : "",
            why, out);
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

/* --live: a file (unlinked) for the program's stdout or stderr, appended to
 * by it and whatever it starts, read by memprof. -1 on errors. */
static int output_file(void)
{
    const char *dir = getenv("TMPDIR");
    int fd = open(dir && *dir ? dir : "/tmp", O_TMPFILE | O_RDWR | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0 && (fd = memfd_create("memprof-output", MFD_CLOEXEC)) >= 0)
        fcntl(fd, F_SETFL, O_APPEND);
    return fd;
}

/* Stops a program that has not started (its go pipe closes unwritten) and
 * removes the capture made for it; then dies with one line. */
static void give_up(pid_t pid, int go, const char *out, const char *fmt, ...) __attribute__((noreturn, format(printf, 4, 5)));
static void give_up(pid_t pid, int go, const char *out, const char *fmt, ...)
{
    close(go);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
    if (out)
        unlink(out);
    char msg[PATH_MAX * 2];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    mp_cli_die(prog, "%s", msg);
}

int main(int argc, char **argv)
{
    run_opts_t o = {0};
    parse(argc, argv, &o);
    char python[PATH_MAX], lib[PATH_MAX];
    resolve_python(o.python, python, sizeof python);
    if (mp_preload_path(lib, sizeof lib) || access(lib, R_OK) != 0)
        mp_cli_die(prog, "cannot find libmemprof.so (looked for %s); is memprof installed whole?", lib);
    /* the capture comes here through a pipe; a file is written by memprof run
     * (aggregated) with --aggregate, and with --live and --live-remote when -o says where */
    int streamed = o.aggregate || o.live || o.port;
    int file = !streamed || o.aggregate || o.output;
    int listener = o.port ? listen_on(o.port) : -1;
    int pfd[2], sfd[2] = {-1, -1}, gfd[2] = {-1, -1};
    if (pipe2(pfd, O_CLOEXEC) != 0)
        mp_cli_die(prog, "cannot create a pipe: %s", strerror(errno));
    if (streamed) {
        if (pipe2(sfd, O_CLOEXEC) != 0 || pipe2(gfd, O_CLOEXEC) != 0)
            mp_cli_die(prog, "cannot create a pipe: %s", strerror(errno));
        (void)fcntl(sfd[0], F_SETPIPE_SZ, 1 << 20); /* fewer wake-ups; the default where refused */
    }
    child_fds_t cf = {pfd[1], sfd[1], gfd[0], -1, -1, -1};
    if (o.live) {
        if ((cf.out = output_file()) < 0 || (cf.err = output_file()) < 0 ||
            (cf.in = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0)
            mp_cli_die(prog, "cannot set up the program's input and output: %s", strerror(errno));
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        mp_cli_die(prog, "cannot fork: %s", strerror(errno));
    if (pid == 0) {
        close(pfd[0]);
        if (streamed) {
            close(sfd[0]);
            close(gfd[1]);
        }
        if (listener >= 0)
            close(listener);
        child(&o, python, lib, &cf);
    }
    child_pid = pid;
    close(pfd[1]);
    int out_fd = -1;
    char out[PATH_MAX];
    default_output(&o, pid, out, sizeof out);
    relay_t s = {.pid = pid, .in = -1, .sock = -1, .out = {cf.out, cf.err}};
    if (streamed) {
        close(sfd[1]);
        close(gfd[0]);
        if (o.live)
            close(cf.in);
        char err[PATH_MAX + 128];
        if (file && (out_fd = mp_create_capture(out, o.force, err, sizeof err)) < 0)
            give_up(pid, gfd[1], NULL, "%s", err);
        const char *made = file ? out : NULL;
        s.in = sfd[0];
        fcntl(s.in, F_SETFL, O_NONBLOCK);
        s.keep_replaying = file;
        if ((o.live || file) && !(s.lv = mp_live_new()))
            give_up(pid, gfd[1], made, "out of memory");
        s.replay = s.lv != NULL;
        if (listener >= 0 && (s.sock = wait_viewer(listener, o.port)) < 0)
            give_up(pid, gfd[1], made, "%s", interrupted ? "no viewer came; the program did not start" : strerror(errno));
        if (s.sock >= 0)
            fcntl(s.sock, F_SETFL, O_NONBLOCK); /* a stopped viewer must not stop the program */
        if (o.live && mp_live_show(s.lv, err, sizeof err) != 0)
            give_up(pid, gfd[1], made, "%s; try --live-remote PORT and 'memprof live PORT'", err);
        s.view = o.live;
        signal(SIGPIPE, SIG_IGN); /* a program gone before it started: EPIPE here */
        (void)!write(gfd[1], "g", 1);
        close(gfd[1]);
    }
    /* The terminal's ^C and ^\ reach the program too; memprof outlives it. */
    signal(SIGINT, SIG_IGN);
    signal(SIGQUIT, SIG_IGN);
    signal(SIGTERM, forward);
    signal(SIGHUP, forward);
    char msg[PATH_MAX * 2];
    ssize_t n;
    while ((n = read(pfd[0], msg, sizeof msg - 1)) < 0 && errno == EINTR) /* SIGWINCH, with the view */
        ;
    close(pfd[0]);
    if (n > 0 && s.view) {
        mp_live_hide(s.lv);
        s.view = 0;
    }
    int status;
    if (streamed) {
        relay_run(&s);
        status = s.status;
    } else {
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
    }
    if (n > 0) {
        msg[n] = '\0';
        fprintf(stderr, "%s: %s\n", prog, msg);
        if (streamed && file)
            unlink(out);
        mp_live_free(s.lv);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 2;
    }
    int failed = 0; /* no aggregated capture could be written: none is left, and the exit says so */
    if (streamed && file) {
        int rc = mp_live_finish(s.lv), err = 0;
        int recorded = memprof_reader_info(mp_live_analysis(s.lv)->r)->version_major != 0;
        if (!recorded)
            fprintf(stderr, "%s: the program wrote no capture (it did not start recording); nothing written\n",
                    prog);
        else if (rc != 0)
            fprintf(stderr, "%s: the events could not be aggregated (%s); nothing written\n", prog,
                    mp_live_error(s.lv));
        else if ((err = mp_aggregate_write(mp_live_analysis(s.lv), out_fd)) != 0 || (fsync(out_fd) != 0 && (err = errno)))
            fprintf(stderr, "%s: cannot write %s: %s\n", prog, out, strerror(err));
        failed = !recorded || rc != 0 || err != 0;
        close(out_fd);
        if (failed)
            unlink(out);
    }
    mp_live_free(s.lv);
    if (s.out[0] >= 0)
        close(s.out[0]), close(s.out[1]);
    if (!o.quiet && file && !failed)
        report(&o, pid, status);
    if (failed && WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 2;
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
