/* attach.c - `memprof attach PID` and `memprof detach PID` (built twice,
 * MP_DETACH set for the second): start and stop a capture in a running
 * CPython process.
 *
 * Attach: the capture file is created here (O_EXCL unless --force, mode
 * 0600, no symbolic link, owned by the target's user). The target's main
 * thread is stopped with ptrace (inject.c); two pages are mapped in it for
 * the request and one for the loader's few instructions; the loader is
 * queued with Py_AddPendingCall, which may be called from any thread
 * without the GIL; the thread gets its registers back and goes on. At its
 * next safe point, the interpreter runs the loader in the main thread with
 * the GIL held: dlopen(libmemprof.so), then memprof_attach_begin(request),
 * which starts a capture as a Tracker does (GOT patching, Python hooks).
 * This program waits for the request's answer, unmaps the pages and says
 * how it went. Detach queues memprof_attach_end the same way.
 *
 * Nothing but system calls and Py_AddPendingCall runs in the stopped
 * thread, whatever it was doing: no malloc, no dlopen there, so no lock it
 * may hold is needed. The loading happens where Python code could run. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "cli_common.h"
#include "inject.h"
#include "memprof/control.h"
#include "memprof/format.h"
#include "report.h"

#ifdef MP_DETACH
static const char *prog = "memprof detach";
static const char usage[] =
    "usage: memprof detach [--wait SECONDS] PID\n"
    "\n"
    "Stops the capture `memprof attach` started in process PID: writes its end\n"
    "and takes memprof's hooks out; the process goes on as before.\n"
    "\n"
    "options:\n"
    "  --wait SECONDS  how long to wait for the process to reach Python code,\n"
    "                  where the capture can stop (default 60)\n"
    "  -h, --help      show this help\n";
#else
static const char *prog = "memprof attach";
static const char usage[] =
    "usage: memprof attach [-o FILE] [--force] [--native] [--trace-python-allocators]\n"
    "                      [--interval MS] [--duration SECONDS] [--wait SECONDS] PID\n"
    "\n"
    "Starts recording the allocations of a running CPython 3.11 process, as\n"
    "memprof run would have, from now on: what it allocated before is not\n"
    "known, and the capture says so. `memprof detach PID`, the end of\n"
    "--duration, or the process's exit ends the capture. Needs the right to\n"
    "trace the process (same user, or root).\n"
    "\n"
    "options:\n"
    "  -o, --output FILE   capture file (default: memprof-attach-<pid>.memprof)\n"
    "  -f, --force         overwrite FILE if it exists\n"
    "  --native            record native (C/C++) stacks too\n"
    "  --trace-python-allocators\n"
    "                      record every Python object allocation\n"
    "  --interval MS       sample resident memory every MS milliseconds (default 10)\n"
    "  --duration SECONDS  record this long, then detach (default: until detach)\n"
    "  --wait SECONDS      how long to wait for the process to reach Python code,\n"
    "                      where recording can start (default 60)\n"
    "  -h, --help          show this help\n";
#endif

static void die_usage(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die_usage(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "; see '%s --help'\n", prog);
    exit(2);
}

/* While the target's thread runs injected code, this program must not be
 * stopped half-way by ^C or a hang-up (the kernel would let the thread go
 * with the injected registers): those signals wait for the release. */
static sigset_t held;

/* An argument that is not one of the options: the PID, once. */
static void other_arg(const char *a, const char **pid_arg)
{
    if (a[0] == '-')
        die_usage("unknown option '%s'", a);
    if (*pid_arg)
        die_usage("one process at a time, not also '%s'", a);
    *pid_arg = a;
}

/* The PID argument (NULL: none was given). */
static pid_t parse_pid(const char *s)
{
    if (!s)
        die_usage("which process? %s", "give its PID");
    char *end;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || !*s || *end || errno || v <= 0 || v > INT32_MAX)
        die_usage("'%s' is not a process id", s ? s : "");
    return (pid_t)v;
}

static double parse_seconds(const char *opt, const char *s)
{
    char *end;
    double v = s ? strtod(s, &end) : -1;
    if (!s || !*s || *end || !(v >= 0 && v <= 86400 * 365))
        mp_cli_die(prog, "%s needs a number of seconds, not '%s'", opt, s ? s : "");
    return v;
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static int alive(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    char buf[512];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* after the name: " S ..." */
    return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

static void comm_of(pid_t pid, char *out, size_t len)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
    FILE *f = fopen(path, "re");
    out[0] = '\0';
    if (f) {
        if (fgets(out, (int)len, f))
            out[strcspn(out, "\n")] = '\0';
        fclose(f);
    }
}

/* What every injection needs: the process exists, is CPython 3.11, and
 * where its Py_AddPendingCall is. Dies with one line otherwise. */
static uint64_t python_of(pid_t pid)
{
    char comm[64], where[PATH_MAX];
    if (kill(pid, 0) && errno == ESRCH)
        mp_cli_die(prog, "no such process: %d", (int)pid);
    if (!alive(pid))
        mp_cli_die(prog, "no such process: %d (it has exited)", (int)pid);
    comm_of(pid, comm, sizeof comm);
    uint64_t pending, version_at;
    if (mp_proc_symbol(pid, NULL, "Py_AddPendingCall", &pending, where, sizeof where)) {
        char maps[64];
        snprintf(maps, sizeof maps, "/proc/%d/maps", (int)pid);
        FILE *f = fopen(maps, "re");
        if (!f)
            mp_cli_die(prog, "not allowed to inspect process %d (%s: %s)%s", (int)pid, maps, strerror(errno),
                       mp_inject_perm_hint());
        fclose(f);
        mp_cli_die(prog, "process %d (%s) is not a CPython process: none of its objects defines Py_AddPendingCall",
                   (int)pid, comm);
    }
    unsigned long version = 0;
    if (mp_proc_symbol(pid, NULL, "Py_Version", &version_at, NULL, 0) ||
        mp_remote_read(pid, version_at, &version, sizeof version))
        mp_cli_die(prog, "process %d (%s) runs a CPython older than 3.11 (no Py_Version in %s); memprof attach "
                   "needs CPython 3.11", (int)pid, comm, where);
    if ((version >> 16) != 0x030b)
        mp_cli_die(prog, "process %d (%s) runs CPython %lu.%lu; memprof attach needs CPython 3.11, the version it "
                   "was built for", (int)pid, comm, version >> 24, (version >> 16) & 0xff);
    return pending;
}

/* Queues fn(arg) as a pending call of process pid's interpreter. Dies with
 * one line when that fails (the process is let go in every case). */
static void queue_call(pid_t pid, uint64_t pending, uint64_t fn, uint64_t arg, mp_inject_t *t)
{
    char err[MP_ERRLEN], err2[MP_ERRLEN];
    uint64_t rc = 0;
    if (mp_inject_call(t, pending, fn, arg, &rc, 5000, err)) {
        mp_inject_release(t, err2);
        sigprocmask(SIG_SETMASK, &held, NULL);
        mp_cli_die(prog, "%s", err);
    }
    if ((int)rc != 0) {
        mp_inject_release(t, err2);
        sigprocmask(SIG_SETMASK, &held, NULL);
        mp_cli_die(prog, "process %d's interpreter refused the call (its queue of pending calls is full); "
                   "try again in a moment", (int)pid);
    }
}

/* Waits for the 32-bit word at addr to differ from `from`; 0 when it did,
 * -1 when the process is gone, 1 on timeout. */
static int wait_word(pid_t pid, uint64_t addr, int32_t from, double wait_s, const char *what, int32_t *now)
{
    double waited = 0;
    int said = 0;
    for (;;) {
        if (mp_remote_read(pid, addr, now, sizeof *now))
            return -1;
        if (*now != from)
            return 0;
        if (!alive(pid))
            return -1;
        if (waited >= wait_s)
            return 1;
        if (!said && waited >= 1.0) {
            fprintf(stderr, "%s: waiting for process %d to run Python code in its main thread, where %s "
                            "(it is in a long C call, or blocked)...\n", prog, (int)pid, what);
            said = 1;
        }
        sleep_s(0.005);
        waited += 0.005;
    }
}

static void seize_or_die(mp_inject_t *t, pid_t pid)
{
    char err[MP_ERRLEN], err2[MP_ERRLEN];
    if (mp_inject_seize(t, pid, err)) { /* nothing changed in it yet: ^C may still end us */
        mp_inject_release(t, err2);
        mp_cli_die(prog, "%s", err);
    }
    sigset_t set; /* from here until the release, every signal that can wait does */
    sigfillset(&set);
    static const int sync[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT, SIGSYS};
    for (size_t i = 0; i < sizeof sync / sizeof *sync; i++)
        sigdelset(&set, sync[i]);
    sigprocmask(SIG_BLOCK, &set, &held);
}

static void release_or_die(mp_inject_t *t)
{
    char err[MP_ERRLEN];
    int rc = mp_inject_release(t, err);
    sigprocmask(SIG_SETMASK, &held, NULL);
    if (rc)
        mp_cli_die(prog, "%s", err);
}

/* ---- detach ---- */

/* 0 detached, 1 nothing attached (said), dies on errors. */
static int detach(pid_t pid, double wait_s, int quiet_if_none)
{
    uint64_t pending = python_of(pid), end, state;
    char lib[PATH_MAX];
    if (!mp_proc_has_object(pid, "libmemprof.so", lib, sizeof lib) ||
        mp_proc_symbol(pid, "libmemprof.so", MEMPROF_ATTACH_END, &end, NULL, 0) ||
        mp_proc_symbol(pid, "libmemprof.so", MEMPROF_ATTACH_STATE, &state, NULL, 0)) {
        if (!quiet_if_none)
            fprintf(stderr, "%s: nothing is attached to process %d (memprof is not loaded in it)\n", prog, (int)pid);
        return 1;
    }
    memprof_attach_state_t st;
    if (mp_remote_read(pid, state, &st, sizeof st))
        mp_cli_die(prog, "cannot read process %d's memory: %s", (int)pid, strerror(errno));
    if (!st.attached) {
        if (!quiet_if_none)
            fprintf(stderr, "%s: nothing is attached to process %d (no capture started by memprof attach is "
                            "being written)\n", prog, (int)pid);
        return 1;
    }
    mp_inject_t t;
    seize_or_die(&t, pid);
    queue_call(pid, pending, end, 0, &t);
    release_or_die(&t);
    int32_t seq;
    int w = wait_word(pid, state + offsetof(memprof_attach_state_t, end_seq), (int32_t)st.end_seq, wait_s,
                      "the capture can stop", &seq);
    if (w < 0) {
        fprintf(stderr, "%s: process %d exited; its capture was finished at its exit\n", prog, (int)pid);
        return 0;
    }
    if (w > 0)
        mp_cli_die(prog, "process %d has not reached Python code in %.0f s; the capture will stop when it does",
                   (int)pid, wait_s);
    int32_t result = 0;
    if (mp_remote_read(pid, state + offsetof(memprof_attach_state_t, end_result), &result, sizeof result) == 0 &&
        result == ENOENT) { /* another detach ended it meanwhile */
        if (!quiet_if_none)
            fprintf(stderr, "%s: nothing is attached to process %d (another detach stopped it)\n", prog, (int)pid);
        return 1;
    }
    return 0;
}

#ifdef MP_DETACH
int main(int argc, char **argv)
{
    double wait_s = 60;
    const char *pid_arg = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage, stdout);
            return 0;
        } else if (!strcmp(a, "--wait")) {
            wait_s = parse_seconds(a, i + 1 < argc ? argv[++i] : NULL);
        } else {
            other_arg(a, &pid_arg);
        }
    }
    pid_t pid = parse_pid(pid_arg);
    if (detach(pid, wait_s, 0))
        return 1;
    printf("memprof: detached from process %d; its capture is complete\n", (int)pid);
    return 0;
}
#else

/* ---- attach ---- */

typedef struct {
    const char *output;
    int force;
    unsigned opts;
    unsigned interval_us;
    double duration, wait_s;
    pid_t pid;
} attach_opts_t;

static void parse(int argc, char **argv, attach_opts_t *o)
{
    *o = (attach_opts_t){NULL, 0, 0, 10000, -1, 60, 0};
    const char *pid_arg = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(usage, stdout);
            exit(0);
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (!next)
                die_usage("%s needs a file name", a);
            o->output = argv[++i];
        } else if (!strcmp(a, "-f") || !strcmp(a, "--force")) {
            o->force = 1;
        } else if (!strcmp(a, "--native")) {
            o->opts |= MEMPROF_OPT_NATIVE;
        } else if (!strcmp(a, "--trace-python-allocators")) {
            o->opts |= MEMPROF_OPT_PYMEM;
        } else if (!strcmp(a, "--interval")) {
            double ms = parse_seconds(a, next);
            i++;
            if (ms < 1 || ms > 60000)
                mp_cli_die(prog, "--interval needs milliseconds from 1 to 60000, not '%s'", next);
            o->interval_us = (unsigned)(ms * 1000);
        } else if (!strcmp(a, "--duration")) {
            o->duration = parse_seconds(a, next);
            i++;
        } else if (!strcmp(a, "--wait")) {
            o->wait_s = parse_seconds(a, next);
            i++;
        } else {
            other_arg(a, &pid_arg);
        }
    }
    o->pid = parse_pid(pid_arg);
}

/* The capture this run created, removed at exit unless it is in use. */
static char created[PATH_MAX];
static int capture_kept;

static void remove_capture(void)
{
    if (created[0] && !capture_kept)
        unlink(created);
}

/* Creates the capture for the target to open: absolute path in *abs. */
static int create_capture(const attach_opts_t *o, char *abs, size_t len)
{
    char def[64];
    const char *out = o->output;
    if (!out) {
        snprintf(def, sizeof def, "memprof-attach-%d.memprof", (int)o->pid);
        out = def;
    }
    char err[PATH_MAX + 128];
    int fd = mp_create_capture(out, o->force, err, sizeof err);
    if (fd < 0)
        mp_cli_die(prog, "%s", err);
    struct stat st;
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/%d", (int)o->pid);
    if (geteuid() == 0 && stat(proc, &st) == 0 && st.st_uid != 0 && fchown(fd, st.st_uid, st.st_gid))
        mp_cli_die(prog, "cannot give the capture %s to process %d's user: %s", out, (int)o->pid, strerror(errno));
    if (!realpath(out, abs) || strlen(abs) >= len) {
        unlink(out);
        mp_cli_die(prog, "cannot resolve the path of %s", out);
    }
    snprintf(created, sizeof created, "%s", abs);
    atexit(remove_capture); /* every error from here on removes it */
    return fd;
}

int main(int argc, char **argv)
{
    attach_opts_t o;
    parse(argc, argv, &o);
    pid_t pid = o.pid;
    uint64_t pending = python_of(pid);
    uint64_t dl_open, dl_sym;
    if (mp_proc_symbol(pid, "/libc.so", "dlopen", &dl_open, NULL, 0) ||
        mp_proc_symbol(pid, "/libc.so", "dlsym", &dl_sym, NULL, 0))
        mp_cli_die(prog, "process %d's C library has no dlopen (glibc 2.34 or later is needed)", (int)pid);
    char lib[PATH_MAX];
    if (mp_preload_path(lib, sizeof lib) || access(lib, R_OK))
        mp_cli_die(prog, "cannot find libmemprof.so next to this program; reinstall memprof or set MEMPROF_LIBRARY");

    static memprof_attach_req_t request;
    memprof_attach_req_t *req = &request;
    char abs[PATH_MAX];
    int fd = create_capture(&o, abs, sizeof req->capture);
    *req = (memprof_attach_req_t){dl_open, dl_sym, 0, 0, o.opts, o.interval_us, MEMPROF_ATTACH_BEGIN, "", "",
                                  MEMPROF_ATTACH_MAGIC, MEMPROF_ATTACH_VERSION};
    snprintf(req->library, sizeof req->library, "%s", lib);
    snprintf(req->capture, sizeof req->capture, "%s", abs);

    /* the pages: the request (read-write), the loader (read-execute) */
    size_t req_len = (sizeof *req + 4095) & ~(size_t)4095, code_len = 4096;
    unsigned char code[128];
    size_t code_n = mp_attach_loader_code(code, sizeof code);
    mp_inject_t t;
    char err[MP_ERRLEN];
    seize_or_die(&t, pid);
    long r1 = 0, r2 = 0, r3 = 0;
    long map_req[6] = {0, (long)(req_len + code_len), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0};
    int failed = mp_inject_syscall(&t, SYS_mmap, map_req, &r1, err);
    if (!failed && (unsigned long)r1 > -4096ul) {
        snprintf(err, sizeof err, "cannot map memory in process %d: %s", (int)pid, strerror((int)-r1));
        failed = 1;
    }
    uint64_t pages = (uint64_t)r1, code_at = pages + req_len;
    if (!failed && (mp_remote_write(pid, pages, req, sizeof *req) || mp_remote_write(pid, code_at, code, code_n))) {
        snprintf(err, sizeof err, "cannot write into process %d: %s", (int)pid, strerror(errno));
        failed = 1;
    }
    long prot[6] = {(long)code_at, (long)code_len, PROT_READ | PROT_EXEC, 0, 0, 0};
    if (!failed && (mp_inject_syscall(&t, SYS_mprotect, prot, &r2, err) || r2 != 0)) {
        if (r2)
            snprintf(err, sizeof err, "cannot make the loader executable in process %d: %s", (int)pid,
                     strerror((int)-r2));
        failed = 1;
    }
    if (failed) {
        char err2[MP_ERRLEN];
        if ((unsigned long)r1 <= -4096ul && r1) {
            long unmap[6] = {r1, (long)(req_len + code_len), 0, 0, 0, 0};
            mp_inject_syscall(&t, SYS_munmap, unmap, &r3, err2);
        }
        mp_inject_release(&t, err2);
        sigprocmask(SIG_SETMASK, &held, NULL);
        close(fd);
        unlink(abs);
        mp_cli_die(prog, "%s", err);
    }
    queue_call(pid, pending, code_at, pages, &t);
    release_or_die(&t);

    int32_t done;
    int w = wait_word(pid, pages + offsetof(memprof_attach_req_t, done), 0, o.wait_s, "recording can start", &done);
    if (w < 0) {
        close(fd);
        unlink(abs);
        mp_cli_die(prog, "process %d exited before recording could start", (int)pid);
    }
    if (w > 0) {
        close(fd);
        capture_kept = 1; /* the process will write it */
        fprintf(stderr, "%s: process %d has not reached Python code in %.0f s; recording into %s will start when "
                        "it does (memprof detach %d stops it then)\n", prog, (int)pid, o.wait_s, abs, (int)pid);
        return 3;
    }
    int32_t result = 0;
    mp_remote_read(pid, pages + offsetof(memprof_attach_req_t, result), &result, sizeof result);
    /* the pages are not needed any more: unmapped in a second short stop,
     * once the thread is out of the loader (its failure path runs three
     * instructions there after saying so) */
    for (int tries = 0;; tries++) {
        seize_or_die(&t, pid);
        if (t.regs.rip < code_at || t.regs.rip >= code_at + code_len || tries == 100)
            break;
        release_or_die(&t);
        sleep_s(0.01);
    }
    long unmap[6] = {(long)pages, (long)(req_len + code_len), 0, 0, 0, 0};
    if (t.regs.rip >= code_at && t.regs.rip < code_at + code_len)
        fprintf(stderr, "%s: warning: process %d's thread stays in the loader; its %zu bytes stay mapped\n", prog,
                (int)pid, req_len + code_len);
    else if (mp_inject_syscall(&t, SYS_munmap, unmap, &r3, err))
        fprintf(stderr, "%s: warning: %s (%zu bytes stay mapped in it)\n", prog, err, req_len + code_len);
    release_or_die(&t);

    if (done == 2 || result) {
        close(fd);
        unlink(abs);
        if (done == 2)
            mp_cli_die(prog, "process %d could not load %s (dlopen or dlsym failed in it: is the file readable by "
                       "the process's user?)", (int)pid, lib);
        if (result == EBUSY)
            mp_cli_die(prog, "process %d is already being recorded (by memprof attach, memprof run or a Tracker); "
                       "memprof detach %d first", (int)pid, (int)pid);
        mp_cli_die(prog, "process %d could not start recording: %s", (int)pid, strerror(result));
    }
    close(fd);
    capture_kept = 1;
    if (o.duration < 0) {
        printf("memprof: recording process %d into %s; stop with: memprof detach %d\n", (int)pid, abs, (int)pid);
        return 0;
    }
    printf("memprof: recording process %d into %s for %g s\n", (int)pid, abs, o.duration);
    fflush(stdout);
    for (double left = o.duration; left > 0 && alive(pid); left -= 0.05)
        sleep_s(left < 0.05 ? left : 0.05);
    if (!alive(pid)) {
        printf("memprof: process %d exited; its capture %s was finished at its exit\n", (int)pid, abs);
        return 0;
    }
    if (detach(pid, o.wait_s, 1) == 0)
        printf("memprof: detached from process %d; capture complete: %s\n", (int)pid, abs);
    else
        printf("memprof: process %d's capture was already stopped (memprof detach); capture: %s\n", (int)pid, abs);
    return 0;
}
#endif
