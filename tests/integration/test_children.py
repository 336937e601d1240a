"""`memprof run --follow-fork`: every forked child and every Python program started by exec
writes a capture of its own, <output>.<pid> (or <output>.<pid>.<n> when that exists: a forked
child that then execs Python), each whole and holding that process's known allocation; a
program that is not Python writes none. Without the flag no child writes anything, and the
children behave the same either way."""
import json

import pytest

from conftest import SCRIPTS, find, script_line

MiB = 1 << 20
OUTPUT = """child fork 5242847
joined fork 0
child spawn 6291423
joined spawn 0
subprocess 7339999
subprocess 0
execd 4194271
forkexec 0
sh 0
"""


def run_children(memprof, *flags):
    pids_file = memprof.tmp / "pids.json"
    p = memprof.cmd("run", "-o", "capture.memprof", *flags, SCRIPTS / "children.py", pids_file, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout == OUTPUT
    return p, json.loads(pids_file.read_text())


def at_peak(s, function, line, file_end):
    got = [l for l in find(s["top_at_peak"], function, line) if l["file"].endswith(file_end)]
    return [(l["bytes"], l["allocations"]) for l in got]


def one_buffer(got, size, mode):
    """at_peak() is one allocation of size; with the Python allocators traced, the objects made
    on the same line (the list the buffer is appended to, a -c program's one line) are there
    too, a few, under 4 KiB."""
    if not mode:
        return got == [(size, 1)]
    return len(got) == 1 and size <= got[0][0] < size + 4096 and 1 <= got[0][1] <= 8


# The Python allocators traced (alone and with native stacks) too: a forked child keeps the
# shadow stack of the thread that forked, with the nodes of its parent's capture forgotten.
@pytest.mark.parametrize("mode", [(), ("--trace-python-allocators",), ("--native", "--trace-python-allocators")],
                         ids=["default", "trace", "native-trace"])
def test_follow_fork_one_whole_capture_per_python_process(memprof, mode):
    p, pids = run_children(memprof, "--follow-fork", *mode)
    assert "and 6 child captures" in p.stderr
    cap = memprof.tmp / "capture.memprof"
    names = {f.name for f in memprof.tmp.glob("capture.memprof*")}
    want = {cap.name} | {f"{cap.name}.{pids[k]}" for k in ("fork", "spawn", "tracker", "subprocess", "forkexec")}
    want.add(f"{cap.name}.{pids['forkexec']}.1")  # the Python it exec'd: the forked part's file exists
    assert names == want
    assert not list(memprof.tmp.glob(f"capture.memprof.{pids['sh']}*"))  # /bin/sh is not Python
    s = {name: memprof.summary(memprof.tmp / name) for name in names}
    for name, summary in s.items():
        assert summary["capture"]["truncated"] is False, name
        pid = pids["parent"] if name == cap.name else int(name.split(".")[2])
        assert summary["capture"]["pid"] == pid, name

    parent = s[cap.name]
    argv = parent["capture"]["argv"]
    assert argv[1:] == [str(SCRIPTS / "children.py"), str(memprof.tmp / "pids.json")]
    child_line, forked_line = script_line("children.py", "CHILD-LINE"), script_line("children.py", "FORKED-LINE")
    everything = parent["top_at_peak"] + parent["top_leaked"]
    assert not find(everything, "child") and not find(everything, "forked")

    fork = s[f"{cap.name}.{pids['fork']}"]
    assert fork["capture"]["argv"] == argv  # a fork runs the parent's program
    assert fork["peak"]["bytes"] >= 5 * MiB
    assert one_buffer(at_peak(fork, "child", child_line, "children.py"), 5 * MiB, mode)

    spawn = s[f"{cap.name}.{pids['spawn']}"]
    assert spawn["capture"]["argv"][-1] == "--multiprocessing-fork"
    assert spawn["peak"]["bytes"] >= 6 * MiB
    assert one_buffer(at_peak(spawn, "child", child_line, "children.py"), 6 * MiB, mode)

    tracker = s[f"{cap.name}.{pids['tracker']}"]
    assert "multiprocessing.resource_tracker" in " ".join(tracker["capture"]["argv"])

    sub = s[f"{cap.name}.{pids['subprocess']}"]
    assert sub["capture"]["argv"][-1] == "subprocess" and sub["capture"]["argv"][-3] == "-c"
    assert sub["peak"]["bytes"] >= 7 * MiB
    assert one_buffer(at_peak(sub, "<module>", 1, "<string>"), 7 * MiB, mode)

    forked = s[f"{cap.name}.{pids['forkexec']}"]
    assert forked["capture"]["argv"] == argv
    assert one_buffer(at_peak(forked, "forked", forked_line, "children.py"), 3 * MiB, mode)
    execd = s[f"{cap.name}.{pids['forkexec']}.1"]
    assert execd["capture"]["argv"][-1] == "execd" and execd["capture"]["argv"][-3] == "-c"
    assert one_buffer(at_peak(execd, "<module>", 1, "<string>"), 4 * MiB, mode)
    assert not find(execd["top_at_peak"], "forked")  # the new program's capture starts afresh


def test_without_follow_fork_children_write_nothing_and_run_the_same(memprof):
    p, pids = run_children(memprof)
    assert "child capture" not in p.stderr
    assert [f.name for f in memprof.tmp.glob("capture.memprof*")] == ["capture.memprof"]
    s = memprof.summary(memprof.tmp / "capture.memprof")
    assert s["capture"]["pid"] == pids["parent"] and not s["capture"]["truncated"]
    everything = s["top_at_peak"] + s["top_leaked"]
    assert not find(everything, "child") and not find(everything, "forked")
    plain = memprof.plain("children.py", memprof.tmp / "plain-pids.json", timeout=60)
    assert plain.returncode == 0 and plain.stdout == OUTPUT
