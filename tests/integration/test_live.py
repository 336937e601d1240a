"""The live view, driven in tmux as a user would: `memprof run --live` and `memprof run
--live-remote PORT` with `memprof live PORT`. scripts/live_target.py holds known memory until a
file exists: 32 MiB in 8 blocks at big (the most live bytes), 20,000 blocks of 1000 bytes at
many (the most live blocks), 3 MiB at hold on a thread named "worker", then prints
"live_target: done". The screen is read with capture-pane; keys go in with send-keys."""
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import SCRIPTS, script_line

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux is not installed (Debian's tmux package; .ci/deps --tests installs it)")

TARGET = SCRIPTS / "live_target.py"


class Tmux:
    """A tmux server of its own (-L), one window per session, a known size and terminal."""

    def __init__(self, tmp):
        self.sock = f"memprof-test-{os.getpid()}-{id(self)}"
        self.tmp = tmp

    def tmux(self, *args, check=True):
        return subprocess.run(["tmux", "-L", self.sock, "-f", "/dev/null", *args], capture_output=True, text=True,
                              check=check, timeout=30)

    def start(self, name, command):
        # the command's exit status, then a pause so that its last screen can be read
        shell = f"{command}; echo EXIT=$?; sleep 120"
        self.tmux("new-session", "-d", "-s", name, "-x", "132", "-y", "40",
                  "env", "-u", "COLUMNS", "-u", "LINES", "TERM=screen", "sh", "-c", shell)

    def screen(self, name):
        return self.tmux("capture-pane", "-p", "-t", name).stdout

    def keys(self, name, *keys):
        self.tmux("send-keys", "-t", name, *keys)

    def wait(self, name, pred, what, timeout=30):
        end = time.monotonic() + timeout
        while True:
            text = self.screen(name)
            if pred(text):
                return text
            if time.monotonic() > end:
                raise AssertionError(f"timed out waiting for {what}; the screen:\n{text}")
            time.sleep(0.2)

    def close(self):
        self.tmux("kill-server", check=False)


@pytest.fixture
def tmux(tmp_path):
    t = Tmux(tmp_path)
    yield t
    t.close()


def rows(text):
    """The table's rows: (live, blocks, allocated, allocations, location) under its header."""
    lines = text.splitlines()
    head = next(i for i, l in enumerate(lines) if re.search(r"live\s+blocks\s+allocated\s+allocations\s+location", l))
    out = []
    for l in lines[head + 1:]:
        m = re.match(r"\s*(\S+ \S+)\s+([\d,]+)\s+(\S+ \S+)\s+([\d,]+)\s+(.*\S)", l)
        if not m:
            break
        out.append(m.groups())
    return out


def where(fn, marker):
    return f"{fn} (live_target.py:{script_line('live_target.py', marker)})"


BIG = where("big.<locals>.<listcomp>", "BIG-LINE")
MANY = where("many.<locals>.<listcomp>", "MANY-LINE")
HOLD = where("hold.<locals>.<listcomp>", "HOLD-LINE")


def top_is(location):
    def pred(text):
        try:
            r = rows(text)
        except StopIteration:
            return False
        return bool(r) and r[0][4] == location
    return pred


def settled(text):
    """live_target holds all it will: many's 20,000 blocks and its list's array, hold's 3."""
    try:
        r = {x[4]: x for x in rows(text)}
    except StopIteration:
        return False
    return MANY in r and r[MANY][1] == "20,001" and HOLD in r and r[HOLD][1] == "3"


def check_view(tmux, name):
    """The known figures, the sort keys and the thread keys on a view showing live_target."""
    text = tmux.wait(name, lambda t: settled(t) and top_is(BIG)(t), "big at the top, by live bytes")
    r = rows(text)
    assert r[0][:2] == ("32.0 MiB", "8") and "sorted   by live bytes" in text
    assert [x[4] for x in r[:2]] == [BIG, MANY]
    tmux.keys(name, "s")  # by live blocks

    def by_blocks(t):  # (a screen caught while the view redraws can mix two frames: wait for a whole one)
        blocks = [int(x[1].replace(",", "")) for x in rows(t)] if top_is(MANY)(t) else []
        return "sorted   by live blocks" in t and blocks and blocks == sorted(blocks, reverse=True)
    text = tmux.wait(name, by_blocks, "many at the top, the rows by live blocks")
    assert rows(text)[0][1] == "20,001"
    tmux.keys(name, "S")  # back to live bytes
    tmux.wait(name, top_is(BIG), "big at the top again")
    # threads: all, the main thread (big and many), the worker (hold only)
    locations = lambda t: [x[4] for x in rows(t)]
    tmux.keys(name, "t")
    tmux.wait(name, lambda t: 'thread   1 "MainThread"' in t and top_is(BIG)(t) and HOLD not in locations(t),
              "the main thread: big and many, not hold")
    tmux.keys(name, "t")
    text = tmux.wait(name, lambda t: 'thread   2 "worker"' in t and top_is(HOLD)(t) and BIG not in locations(t),
                     "the worker thread: hold only")
    assert rows(text)[0][:2] == ("3.0 MiB", "3")
    tmux.keys(name, "t")
    tmux.wait(name, lambda t: "thread   all" in t and top_is(BIG)(t), "all threads again")


def test_live_view_keys_and_quit_leaves_the_program_running(memprof, tmux):
    stop = memprof.tmp / "stop"
    cmd = f"{shlex.quote(str(memprof.bin / 'memprof'))} run --live {shlex.quote(str(TARGET))} {shlex.quote(str(stop))} 60"
    tmux.start("run", f"cd {shlex.quote(str(memprof.tmp))} && {cmd}")
    check_view(tmux, "run")
    text = tmux.screen("run")
    assert re.search(r"heap     now \d", text) and "RSS      now" in text and "allocations/s" in text
    tmux.keys("run", "q")
    time.sleep(1)
    text = tmux.screen("run")
    assert "EXIT=" not in text and "sorted" not in text  # the view is gone, the program runs on
    stop.touch()
    text = tmux.wait("run", lambda t: "EXIT=" in t, "the program's end")
    assert "live_target: done" in text and "EXIT=0" in text  # its output, held while the view was up
    assert not list(memprof.tmp.glob("*.memprof"))  # no capture without -o


def test_live_view_stays_after_the_program_ends(memprof, tmux):
    out = memprof.tmp / "live.memprof"
    cmd = (f"{shlex.quote(str(memprof.bin / 'memprof'))} run --live -o {shlex.quote(str(out))} "
           f"{shlex.quote(str(SCRIPTS / 'workloads/leaky.py'))} 3000")
    tmux.start("run", cmd)
    text = tmux.wait("run", lambda t: "the program exited with status 0" in t, "the end, on the view")
    assert "ran " in text and "EXIT=" not in text
    # waiting for q is waiting: memprof does not spin meanwhile
    sh = tmux.tmux("display", "-p", "-t", "run", "#{pane_pid}").stdout.strip()
    (pid,) = subprocess.run(["pgrep", "-P", sh], capture_output=True, text=True).stdout.split()
    before = cpu_ticks(pid)
    time.sleep(2)
    assert cpu_ticks(pid) - before < 40, "memprof used the CPU while the view waited"
    tmux.keys("run", "q")
    text = tmux.wait("run", lambda t: "EXIT=" in t, "memprof's exit")
    assert "EXIT=0" in text and "leaky: intended_leaked_bytes=17891328" in text
    s = memprof.summary(out)
    assert s["capture"]["aggregated"] is True and s["leaked"]["bytes"] >= 17_891_328


def cpu_ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks (1/100 s)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_remote_viewer(memprof, tmux):
    stop = memprof.tmp / "stop"
    port = free_port()
    out = memprof.tmp / "remote.memprof"
    exe = shlex.quote(str(memprof.bin / "memprof"))
    tmux.start("prog", f"{exe} run --live-remote {port} -o {shlex.quote(str(out))} {shlex.quote(str(TARGET))} "
                       f"{shlex.quote(str(stop))} 60")
    tmux.wait("prog", lambda t: f"memprof live {port}" in t, "the program waiting for its viewer")
    # listening on the loopback only, and the program not started yet
    assert not stop.exists() and "EXIT=" not in tmux.screen("prog")
    tmux.start("view", f"{exe} live {port}")
    check_view(tmux, "view")
    tmux.keys("view", "q")
    text = tmux.wait("view", lambda t: "EXIT=" in t, "the viewer's exit")
    assert "EXIT=0" in text
    assert "EXIT=" not in tmux.screen("prog")  # the program runs on
    stop.touch()
    text = tmux.wait("prog", lambda t: "EXIT=" in t, "the program's end")
    assert "live_target: done" in text and "EXIT=0" in text
    s = memprof.summary(out)
    assert s["capture"]["aggregated"] is True
    assert max(l["bytes"] for l in s["top_at_peak"] if l["function"] == "big.<locals>.<listcomp>") == 32 << 20


def test_remote_listens_on_loopback_only(memprof, tmux):
    port = free_port()
    exe = shlex.quote(str(memprof.bin / "memprof"))
    tmux.start("prog", f"{exe} run --live-remote {port} -c pass")
    tmux.wait("prog", lambda t: f"memprof live {port}" in t, "the program waiting for its viewer")
    # /proc/net/tcp: local address and port in hex, state 0A is LISTEN
    listen = [l.split()[1] for l in open("/proc/net/tcp").read().splitlines()[1:]
              if l.split()[3] == "0A" and l.split()[1].endswith(f":{port:04X}")]
    assert listen == [f"0100007F:{port:04X}"]
    assert not [l for l in open("/proc/net/tcp6").read().splitlines()[1:]
                if l.split()[3] == "0A" and l.split()[1].endswith(f":{port:04X}")]
    # nobody came: ^C gives up, the program never ran, nothing is left behind
    sh = tmux.tmux("display", "-p", "-t", "prog", "#{pane_pid}").stdout.strip()
    (pid,) = subprocess.run(["pgrep", "-P", sh], capture_output=True, text=True).stdout.split()
    os.kill(int(pid), signal.SIGINT)  # as ^C would (^C in the pane would stop its shell too)
    text = tmux.wait("prog", lambda t: "EXIT=" in t, "memprof's exit")
    assert "no viewer came" in text and "EXIT=2" in text


def test_errors_in_one_line(memprof):
    # no terminal (pytest's input and output are not one)
    p = memprof.cmd("run", "--live", "-c", "pass", stdin=subprocess.DEVNULL)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "terminal" in p.stderr
    # nothing listens
    port = free_port()
    p = memprof.cmd("live", str(port))
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    # (stdin is not a terminal here either: whichever is found first, one line)
    assert "terminal" in p.stderr or "nothing listens" in p.stderr
    for args in (("live",), ("live", "0"), ("live", "65536"), ("live", "x"), ("live", "1", "2"),
                 ("run", "--live-remote", "0", "-c", "pass"), ("run", "--live-remote", "-c", "pass"),
                 ("run", "--live", "--aggregate", "-c", "pass"), ("run", "--live", "--follow-fork", "-c", "pass"),
                 ("run", "--live-remote", "9", "--live", "-c", "pass")):
        p = memprof.cmd(*args, stdin=subprocess.DEVNULL)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, (args, p.stderr)
    # a port taken: one line, the program never runs
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        marker = memprof.tmp / "ran"
        p = memprof.cmd("run", "--live-remote", str(taken), "-c", f"open({str(marker)!r}, 'w')")
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and str(taken) in p.stderr
        assert not marker.exists()


def test_nothing_listens_says_how_to_start_one(memprof, tmux):
    port = free_port()
    tmux.start("view", f"{shlex.quote(str(memprof.bin / 'memprof'))} live {port}")
    text = tmux.wait("view", lambda t: "EXIT=" in t, "the viewer's exit")
    assert f"nothing listens on 127.0.0.1:{port}" in text and f"--live-remote {port}" in text and "EXIT=2" in text


def test_terminal_closing_ends_the_view_and_the_program(memprof, tmux):
    # the terminal hangs up under the view: memprof does not spin on it, the program gets SIGHUP
    stop = memprof.tmp / "stop"
    cmd = f"{shlex.quote(str(memprof.bin / 'memprof'))} run --live {shlex.quote(str(TARGET))} {shlex.quote(str(stop))} 60"
    tmux.start("run", cmd)
    tmux.wait("run", settled, "the view")
    tmux.close()
    end = time.monotonic() + 15
    while time.monotonic() < end:
        left = [p for p in os.listdir("/proc") if p.isdigit() and str(stop).encode() in _cmdline(p)]
        if not left:
            return
        time.sleep(0.2)
    raise AssertionError(f"still running after the terminal closed: {left}")


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def test_a_viewer_that_reads_nothing_does_not_stop_the_program(memprof):
    # a viewer stopped with ^Z: it connects, then takes nothing; the program runs to its end anyway
    port = free_port()
    proc = subprocess.Popen([str(memprof.bin / "memprof"), "run", "--live-remote", str(port),
                             "--trace-python-allocators", str(SCRIPTS / "workloads/small_objects.py"), "300000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=memprof.tmp)
    try:
        sock = None
        end = time.monotonic() + 30
        while sock is None:
            try:
                sock = socket.create_connection(("127.0.0.1", port))
            except ConnectionRefusedError:
                assert time.monotonic() < end, "memprof run never listened"
                time.sleep(0.1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    sock.close()
    assert proc.returncode == 0, err
    assert "small_objects: N=300000" in out
    assert "the viewer fell too far behind" in err or "the viewer took nothing" in err, err
