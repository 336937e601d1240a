/* live_main.c - `memprof live PORT`: the live view of a program started
 * with `memprof run --live-remote PORT`, which listens on 127.0.0.1:PORT
 * and, once this connects, starts the program and relays its capture here
 * as it is written. Leaving the view (q) closes the connection; the program
 * runs on. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli_common.h"
#include "live.h"
#include "memprof/memprof.h"

static const char usage[] =
    "usage: memprof live PORT\n"
    "\n"
    "Shows, in this terminal, the heap and resident memory now and at their\n"
    "peak, the allocation rate and the locations holding the most, about every\n"
    "second, for a program started in another terminal with\n"
    "  memprof run --live-remote PORT script.py [args...]\n"
    "which waits on 127.0.0.1:PORT for this to connect before the program starts.\n"
    "\n"
    "keys:\n"
    "  s, S        sort by live bytes, live blocks, allocated bytes, allocations\n"
    "  t, T        one thread after another, or all\n"
    "  up, down    scroll the locations (page up, page down, home)\n"
    "  q           leave the view; the program runs on\n"
    "\n"
    "options:\n"
    "  -h, --help  show this help\n";

static const char *prog = "memprof live";

int main(int argc, char **argv)
{
    const char *port_arg = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(usage, stdout);
            return 0;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            mp_cli_die(prog, "unknown option '%s'; see 'memprof live --help'", argv[i]);
        } else if (port_arg) {
            mp_cli_die(prog, "one port only; see 'memprof live --help'");
        } else {
            port_arg = argv[i];
        }
    }
    if (!port_arg)
        mp_cli_die(prog, "give the port the program listens on: memprof live PORT; see 'memprof live --help'");
    char *end;
    long port = strtol(port_arg, &end, 10);
    if (!*port_arg || *end || port < 1 || port > 65535)
        mp_cli_die(prog, "'%s' is not a TCP port (1 to 65535)", port_arg);
    if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO))
        mp_cli_die(prog, "the live view draws on a terminal, and this one's input or output is not one");

    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        mp_cli_die(prog, "cannot create a socket: %s", strerror(errno));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (errno == ECONNREFUSED)
            mp_cli_die(prog,
                       "nothing listens on 127.0.0.1:%ld; start the program with 'memprof run --live-remote %ld "
                       "script.py'",
                       port, port);
        mp_cli_die(prog, "cannot connect to 127.0.0.1:%ld: %s", port, strerror(errno));
    }
    mp_liveview_t *lv = mp_live_new();
    if (!lv)
        mp_cli_die(prog, "out of memory");
    char err[256];
    if (mp_live_show(lv, err, sizeof err) != 0)
        mp_cli_die(prog, "%s", err);
    signal(SIGPIPE, SIG_IGN);
    static char buf[1 << 18];
    int open = 1;
    for (;;) {
        struct pollfd p[2] = {{STDIN_FILENO, POLLIN, 0}, {open ? fd : -1, POLLIN, 0}};
        int k = poll(p, 2, mp_live_wait_ms(lv));
        if ((k < 0 && errno != EINTR) || (p[0].revents & (POLLHUP | POLLERR | POLLNVAL)))
            break; /* the terminal went away */
        if (open && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            long n = mp_read_now(fd, buf, sizeof buf);
            if (n > 0) {
                mp_live_feed(lv, buf, (size_t)n);
            } else if (n == 0) {
                open = 0;
                close(fd);
                mp_live_ended(lv, "");
                const memprof_info_t *in = memprof_reader_info(mp_live_analysis(lv)->r);
                mp_live_ended(lv, in->has_trailer ? "the program ended"
                                                  : "the connection closed before the capture ended");
            }
        }
        if (mp_live_keys(lv))
            break;
        mp_live_draw(lv, 0);
    }
    mp_live_free(lv);
    if (open)
        close(fd);
    return 0;
}
