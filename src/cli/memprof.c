/* memprof.c - the `memprof` command: dispatches `memprof SUB args...` to the
 * program memprof-SUB installed next to it (git-style). */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "memprof/format.h"
#include "memprof/memprof.h"
#include "cli_common.h"

static const char usage[] =
    "usage: memprof COMMAND [ARGS...]\n"
    "\n"
    "Memory allocation profiler for CPython: every allocation, with the Python\n"
    "stack that made it.\n"
    "\n"
    "commands:\n"
    "  run         profile a Python program: memprof run [-o FILE] script.py [args]\n"
    "              (--live: watch it in this terminal as it runs)\n"
    "  attach      start profiling a running Python process: memprof attach PID\n"
    "  detach      stop it: memprof detach PID\n"
    "  live        watch a program started with memprof run --live-remote PORT:\n"
    "              memprof live PORT\n"
    "  summary     totals, peak, what was live at the end, top locations\n"
    "  stats       totals, temporary allocations, sizes, allocators, threads,\n"
    "              the locations that allocated the most\n"
    "  flamegraph  an HTML page: memory over time and a flamegraph of the peak\n"
    "  table       every allocation site at the peak (text, JSON or HTML)\n"
    "  tree        the call tree of what was live at the peak, biggest first\n"
    "  leaks       what was still live when the script ended, by stack\n"
    "  check       exit 1 when a capture goes over limits: memprof check FILE\n"
    "              --max-peak SIZE --max-leaked SIZE --max-allocations N\n"
    "  diff        what grew and shrank from one capture to another; exit 1\n"
    "              when the peak or the leaks grew past --threshold\n"
    "  export      the stacks for other tools: --format pprof, folded,\n"
    "              speedscope or csv\n"
    "\n"
    "  memprof COMMAND --help   shows a command's options\n"
    "  memprof --version        shows the version\n";

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        if (!strcmp(cmd, "help") && argc > 2) {
            cmd = argv[2];
            argv[2] = "--help";
            argv++;
            argc--;
        } else {
            fputs(usage, stdout);
            return 0;
        }
    }
    if (!strcmp(cmd, "-V") || !strcmp(cmd, "--version")) {
        printf("memprof %s (capture format %d.%d)\n", MEMPROF_VERSION_STRING, MEMPROF_FORMAT_MAJOR,
               MEMPROF_FORMAT_MINOR);
        return 0;
    }
    if (cmd[0] == '-' || strchr(cmd, '/'))
        mp_cli_die("memprof", "unknown option '%s'; see 'memprof --help'", cmd);
    char dir[PATH_MAX], prog[PATH_MAX + 64];
    if (mp_self_dir(dir, sizeof dir))
        mp_cli_die("memprof", "cannot find the directory of the memprof programs");
    snprintf(prog, sizeof prog, "%s/memprof-%s", dir, cmd);
    if (access(prog, X_OK) != 0)
        mp_cli_die("memprof", "'%s' is not a memprof command; see 'memprof --help'", cmd);
    char name[128];
    snprintf(name, sizeof name, "memprof-%s", cmd);
    argv[1] = name;
    execv(prog, argv + 1);
    fprintf(stderr, "memprof: cannot run %s: %s\n", prog, strerror(errno));
    return 126;
}
