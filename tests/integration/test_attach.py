"""memprof attach / memprof detach on running Python processes, checked from their captures
and from the processes themselves: they finish with the output and exit status of an untouched
run, are never left stopped, and a capture holds the allocations made while attached, at their
lines (scripts/attach_target.py: malloc(100,000) at WORK, malloc(50,000) kept at KEEP,
malloc(20,000) at THREAD in each thread)."""
import json
import os
import subprocess
import time


from conftest import CONFIG, SCRIPTS, find, source_line

TARGET = SCRIPTS / "attach_target.py"


def line(marker, script=TARGET):
    return source_line(script, marker)


class Proc:
    """A Python process started plainly (no LD_PRELOAD), its pid read from its stderr."""

    def __init__(self, memprof, script, *args, env=None):
        e = dict(os.environ, **(env or {}))
        e.pop("LD_PRELOAD", None)
        self.p = subprocess.Popen([memprof.python, str(script), *map(str, args)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=memprof.tmp, env=e)
        first = self.p.stderr.readline()
        assert first.startswith("pid "), first
        self.pid = self.p.pid

    def state(self):
        with open(f"/proc/{self.pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]

    def finish(self, timeout=120):
        try:
            out, err = self.p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            raise
        return self.p.returncode, out, err


def plain_output(memprof, *args):
    p = subprocess.run([memprof.python, str(TARGET), *map(str, args)], capture_output=True, text=True,
                       timeout=120)
    return p.returncode, p.stdout


def attach(memprof, pid, *args, rc=0, out="attach.memprof"):
    p = memprof.cmd("attach", "-o", memprof.tmp / out, *args, pid)
    assert p.returncode == rc, p.stdout + p.stderr
    return p


def detach(memprof, pid, rc=0):
    p = memprof.cmd("detach", pid)
    assert p.returncode == rc, p.stdout + p.stderr
    return p


def test_attach_then_detach_records_the_middle(memprof):
    proc = Proc(memprof, TARGET, 400)
    time.sleep(0.3)
    p = attach(memprof, proc.pid)
    assert f"recording process {proc.pid} into {memprof.tmp / 'attach.memprof'}" in p.stdout
    time.sleep(0.6)
    assert "detached from process" in detach(memprof, proc.pid).stdout
    rc, out, err = proc.finish()
    assert (rc, out) == plain_output(memprof, 400), err  # as if nothing happened
    s = memprof.summary(memprof.tmp / "attach.memprof")
    assert s["capture"]["attached"] and s["capture"]["began_mid_run"] and not s["capture"]["truncated"]
    kept = find(s["top_leaked"], "work", line("# KEEP LINE"))
    assert kept and kept[0]["bytes"] == 50_000 * kept[0]["allocations"], kept
    assert 2 <= kept[0]["allocations"] < 40  # some rounds of 400, not all: only while attached
    st = json.loads(memprof.cmd("stats", "--json", memprof.tmp / "attach.memprof").stdout)
    work = find(st["top_by_bytes"], "work", line("# WORK LINE"))
    assert work and work[0]["bytes"] == 100_000 * work[0]["allocations"], st["top_by_bytes"]
    assert 20 < work[0]["allocations"] < 400  # about 0.6 s of 5 ms rounds


def test_attach_with_threads_and_duration(memprof):
    proc = Proc(memprof, TARGET, 300, 4)
    time.sleep(0.3)
    p = attach(memprof, proc.pid, "--duration", "0.7")
    assert "detached from process" in p.stdout and "capture complete" in p.stdout
    rc, out, err = proc.finish()
    assert (rc, out) == plain_output(memprof, 300, 4), err
    s = memprof.summary(memprof.tmp / "attach.memprof", "--top", "50")
    names = {t["name"] for t in s["threads"]}
    assert {f"worker-{k}" for k in range(4)} <= names, names
    st = json.loads(memprof.cmd("stats", "--json", memprof.tmp / "attach.memprof").stdout)
    assert sum(1 for t in st["threads"] if t["allocated"]["allocations"] > 0) >= 5, st["threads"]  # main, 4 workers
    thread = find(st["top_by_bytes"], "worker", line("# THREAD LINE"))
    assert thread and thread[0]["bytes"] == 20_000 * thread[0]["allocations"], st["top_by_bytes"]


def test_attach_waits_for_the_gil(memprof):
    """The main thread holds the GIL in a C call for about a second: recording starts after it
    (no deadlock), and catches the malloc(1,000,000) right after."""
    script = SCRIPTS / "attach_gil.py"
    proc = Proc(memprof, script, 120_000_000, 1.0)
    time.sleep(0.5)  # inside the sum
    t0 = time.monotonic()
    p = attach(memprof, proc.pid)
    returned = time.monotonic()
    summed = proc.p.stdout.readline().split()
    assert summed[0] == "summed", summed
    assert returned >= float(summed[2]) > t0, (t0, summed, returned, p.stderr)  # recording began after the sum
    detach(memprof, proc.pid)
    rc, out, _ = proc.finish()
    assert rc == 0 and out.strip() == "bye 999967"
    s = memprof.summary(memprof.tmp / "attach.memprof")
    after = find(s["top_at_peak"] + s["top_leaked"], "<module>", line("# AFTER LINE", script))
    assert after and after[0]["bytes"] == 1_000_000, s["top_at_peak"]


def test_fifty_cycles_leave_the_process_well(memprof):
    stop = memprof.tmp / "stop"
    proc = Proc(memprof, TARGET, 0, 1, stop)
    time.sleep(0.3)

    def rss():
        with open(f"/proc/{proc.pid}/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) * 1024

    try:
        attach(memprof, proc.pid, out="warm.memprof")
        detach(memprof, proc.pid)
        before = rss()
        for i in range(50):
            attach(memprof, proc.pid, out=f"c{i}.memprof")
            detach(memprof, proc.pid)
        grown = rss() - before
    finally:
        stop.touch()  # the process ends whatever happened
    rc, out, err = proc.finish()
    assert rc == 3 and out.split() == ["checksum", "99967", "49967", "1"], (out, err)
    assert grown < 8 << 20, grown
    for i in (0, 49):
        s = memprof.summary(memprof.tmp / f"c{i}.memprof")
        assert s["capture"]["attached"] and not s["capture"]["truncated"]


def test_errors(memprof, tmp_path):
    # a process that is gone
    gone = subprocess.Popen(["true"])
    gone.wait()
    p = memprof.cmd("attach", gone.pid)
    assert p.returncode == 2 and p.stderr.strip() == f"memprof attach: no such process: {gone.pid}", p.stderr
    # not Python
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        p = memprof.cmd("attach", sleeper.pid)
        assert p.returncode == 2 and f"process {sleeper.pid} (sleep) is not a CPython process" in p.stderr
        assert not list(memprof.tmp.glob("*.memprof"))
    finally:
        sleeper.kill()
        sleeper.wait()
    # another CPython version (a program that exports what a libpython 3.12 does)
    fake = subprocess.Popen([CONFIG["fake_python"]], stderr=subprocess.PIPE, text=True)
    try:
        assert fake.stderr.readline().startswith("pid ")
        p = memprof.cmd("attach", fake.pid)
        assert p.returncode == 2 and (f"process {fake.pid} (fake_python) runs CPython 3.12; memprof attach needs "
                                      "CPython 3.11" in p.stderr), p.stderr
        with open(f"/proc/{fake.pid}/stat") as f:
            assert f.read().rsplit(")", 1)[1].split()[0] not in ("t", "T")
    finally:
        fake.kill()
        fake.wait()
    proc = Proc(memprof, TARGET, 0, 0, memprof.tmp / "stop")
    try:
        # nothing attached yet
        p = detach(memprof, proc.pid, rc=1)
        assert p.stderr.strip() == (f"memprof detach: nothing is attached to process {proc.pid} "
                                    "(memprof is not loaded in it)")
        # another user may not trace it
        os.chmod(memprof.tmp, 0o777)
        p = memprof.cmd("attach", "-o", memprof.tmp / "nobody.memprof", proc.pid,
                        prefix=["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        assert p.returncode == 2 and f"not allowed to inspect process {proc.pid}" in p.stderr, p.stderr
        assert "CAP_SYS_PTRACE" in p.stderr and not (memprof.tmp / "nobody.memprof").exists()
        # another tracer holds it: refused, and the capture file it made is removed
        tracer = subprocess.Popen([memprof.python, "-c", "import ctypes, sys, time; libc = ctypes.CDLL(None); "
                                   "assert libc.ptrace(0x4206, int(sys.argv[1]), 0, 0) == 0; print('seized', "
                                   "flush=True); time.sleep(60)", str(proc.pid)], stdout=subprocess.PIPE, text=True)
        try:
            assert tracer.stdout.readline().strip() == "seized"
            p = attach(memprof, proc.pid, rc=2, out="traced.memprof")
            assert f"not allowed to trace process {proc.pid}" in p.stderr, p.stderr
            assert not (memprof.tmp / "traced.memprof").exists()
        finally:
            tracer.kill()
            tracer.wait()
        # attached twice
        attach(memprof, proc.pid)
        p = attach(memprof, proc.pid, rc=2, out="second.memprof")
        assert f"process {proc.pid} is already being recorded" in p.stderr
        assert f"memprof detach {proc.pid} first" in p.stderr and not (memprof.tmp / "second.memprof").exists()
        # the capture exists: not overwritten
        p = attach(memprof, proc.pid, rc=2)
        assert "attach.memprof already exists; use --force" in p.stderr
        detach(memprof, proc.pid)
        p = detach(memprof, proc.pid, rc=1)
        assert "nothing is attached" in p.stderr and "no capture started by memprof attach" in p.stderr
        # bad arguments
        for args, msg in [(["abc"], "'abc' is not a process id"), ([], "which process?"),
                          (["--duration", "x", str(proc.pid)], "--duration needs a number of seconds"),
                          (["--bogus", str(proc.pid)], "unknown option '--bogus'")]:
            p = memprof.cmd("attach", *args)
            assert p.returncode == 2 and msg in p.stderr, (args, p.stderr)
        assert proc.state() not in ("t", "T")  # never left stopped
    finally:
        (memprof.tmp / "stop").touch()
    rc, out, err = proc.finish()
    assert rc == 3 and out.startswith("checksum 99967 49967"), err


def test_attach_refused_under_memprof_run(memprof):
    p = subprocess.Popen([str(memprof.bin / "memprof"), "run", "-q", "-o", str(memprof.tmp / "run.memprof"),
                          str(TARGET), "0", "0", str(memprof.tmp / "stop")], stderr=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, cwd=memprof.tmp)
    pid = int(p.stderr.readline().split()[1])
    try:
        r = attach(memprof, pid, rc=2)
        assert f"process {pid} is already being recorded" in r.stderr
        r = detach(memprof, pid, rc=1)
        assert "nothing is attached" in r.stderr
    finally:
        (memprof.tmp / "stop").touch()
    p.communicate(timeout=60)
    assert p.returncode == 3
    assert memprof.summary(memprof.tmp / "run.memprof")["capture"]["attached"] is False


def test_the_targets_exit_ends_the_capture(memprof):
    """Attached and never detached: the process's exit writes the capture's end."""
    proc = Proc(memprof, TARGET, 150)
    time.sleep(0.2)
    attach(memprof, proc.pid)
    rc, out, err = proc.finish()
    assert (rc, out) == plain_output(memprof, 150), err
    s = memprof.summary(memprof.tmp / "attach.memprof")
    assert not s["capture"]["truncated"] and s["capture"]["attached"]
    kept = find(s["top_leaked"], "work", line("# KEEP LINE"))
    assert kept and kept[0]["bytes"] == 50_000 * kept[0]["allocations"] and kept[0]["allocations"] >= 2, kept
