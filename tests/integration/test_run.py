"""`memprof run` end to end: known peaks, leaks, threads, forks, a killed process, deep stacks,
and the program seeing what it would see without memprof."""
import json
import os
import signal

import pytest

from conftest import SCRIPTS, find, script_line

MiB = 1 << 20


def test_peak_is_exact_and_attributed(memprof):
    p, cap = memprof.run("peak_buffers.py")
    assert p.stdout.split()[:2] == ["peak_buffers", str(12 * 8 * MiB)]
    s = memprof.summary(cap)
    top = s["top_at_peak"][0]
    assert (top["function"], top["line"]) == ("hold", script_line("peak_buffers.py", "PEAK-LINE"))
    assert (top["bytes"], top["allocations"]) == (12 * 8 * MiB, 12)
    assert top["file"].endswith("peak_buffers.py")
    assert [f["function"] for f in top["stack"]] == ["hold", "main", "<module>"]
    # the whole heap at the peak: the 96 MiB plus the interpreter's own few MiB (its pymalloc arenas too)
    assert 96 * MiB <= s["peak"]["bytes"] < 104 * MiB
    assert s["capture"]["python_stacks"] and not s["capture"]["truncated"]
    assert s["capture"]["tracker_allocations"] == 0


def test_known_leak_exact_at_its_lines(memprof):
    _, cap = memprof.run("leak.py")
    s = memprof.summary(cap)
    assert s["leaked"]["script_end_marked"] is True
    small = find(s["top_leaked"], "leak_small", script_line("leak.py", "LEAK-SMALL"))
    large = find(s["top_leaked"], "leak_large", script_line("leak.py", "LEAK-LARGE"))
    assert [(l["bytes"], l["allocations"]) for l in small] == [(100 * 4096, 100)]
    assert [(l["bytes"], l["allocations"]) for l in large] == [(3 * MiB, 3)]
    assert not find(s["top_leaked"], "not_leaked")
    # 50,000 same-size buffers were freed at not_leaked: all allocations are counted
    assert s["totals"]["allocations"] >= 100 + 3 + 50000
    assert s["leaked"]["bytes"] >= 100 * 4096 + 3 * MiB


def test_threads_each_at_their_own_function(memprof):
    p, cap = memprof.run("threads.py")
    assert p.stdout.strip() == "threads 800"
    s = memprof.summary(cap)
    for t, size in enumerate((5000, 6000, 7000, 8000)):
        fn = f"worker_{t}"
        got = find(s["top_at_peak"], fn, script_line("threads.py", f"# W{t}"))
        assert [(l["bytes"], l["allocations"]) for l in got] == [(200 * size, 200)], fn
        assert got[0]["stack"][0]["function"] == fn
        assert got[0]["stack"][-1]["function"] == "Thread._bootstrap"


def test_fork_children_do_not_touch_the_parent_capture(memprof):
    p, cap = memprof.run("forks.py")
    assert "child 1 made 20" in p.stdout and "child 2 made 20" in p.stdout
    assert "forks [0, 0]" in p.stdout
    words = p.stdout.split("parent ")[1].split()
    parent, children = int(words[0]), {int(w) for w in words[2:]}
    s = memprof.summary(cap)
    assert s["capture"]["pid"] == parent and parent not in children
    assert not s["capture"]["truncated"]
    leak = find(s["top_leaked"], "parent_leak", script_line("forks.py", "PARENT-LEAK"))
    assert [(l["bytes"], l["allocations"]) for l in leak] == [(3 * MiB, 1)]
    everything = s["top_at_peak"] + s["top_leaked"]
    assert not find(everything, "child_work")
    assert len(list(cap.parent.glob("*.memprof"))) == 1  # the children wrote none


@pytest.mark.parametrize("mode", ["filler", "quiet"])
def test_sigkill_leaves_a_readable_truncated_capture(memprof, mode):
    cap = memprof.tmp / "killed.memprof"
    memprof.run_killed(cap, mode)
    r = memprof.cmd("summary", "--json", "--top", "50", cap)
    assert r.returncode == 0
    assert "truncated" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    s = json.loads(r.stdout)
    assert s["capture"]["truncated"] is True
    known = find(s["top_at_peak"], "known", script_line("killed.py", "KNOWN-LINE"))
    assert [(l["bytes"], l["allocations"]) for l in known] == [(5 * MiB, 5)]


@pytest.mark.parametrize("how,code,marked", [("interrupt", -signal.SIGINT, True), ("term", -signal.SIGTERM, False),
                                             ("_exit", 7, False)])
def test_process_ending_itself_writes_a_whole_capture(memprof, how, code, marked):
    p, cap = memprof.run("self_signal.py", how, check=False)
    assert p.returncode == code
    s = memprof.summary(cap)
    assert s["capture"]["truncated"] is False
    assert s["leaked"]["script_end_marked"] is marked
    got = find(s["top_leaked"], "<module>", script_line("self_signal.py", "SELF-LINE"))
    assert [(l["bytes"], l["allocations"]) for l in got] == [(MiB, 1)]


def test_deep_recursion_stack_is_whole(memprof):
    _, cap = memprof.run("deep.py")
    s = memprof.summary(cap)
    top = find(s["top_at_peak"], "leaf", script_line("deep.py", "LEAF-LINE"))
    assert [(l["bytes"], l["allocations"]) for l in top] == [(MiB, 1)]
    names = [f["function"] for f in top[0]["stack"]]
    assert names[0] == "leaf" and names[-1] == "<module>"
    assert len(names) == 302
    assert names[1:301] == [("c", "b", "a")[i % 3] for i in range(300)]  # a(299) calls b(298)...


def test_program_sees_what_it_would_without_memprof(memprof, tmp_path):
    plain = memprof.plain("invisible.py", "3", "x y", input="hello\n")
    p, cap = memprof.run("invisible.py", "3", "x y", input="hello\n", check=False)
    assert p.returncode == plain.returncode == 3
    assert p.stdout == plain.stdout
    assert p.stderr == plain.stderr == "to stderr\n"
    assert "MEMPROF_FD" not in p.stdout and "LD_PRELOAD" not in p.stdout
    s = memprof.summary(cap)
    assert s["capture"]["argv"][1:] == [str(SCRIPTS / "invisible.py"), "3", "x y"]


def test_module_and_code_forms(memprof, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(SCRIPTS))
    p, cap = memprof.run("-m", "mod_pkg", "a", "b", env=env)
    assert p.stdout == "module main __main__ ['a', 'b']\n"
    assert memprof.summary(cap)["totals"]["allocations"] > 0
    p, cap = memprof.run("-c", "import sys; print(sys.argv)", "z", out="c.memprof")
    assert p.stdout == "['-c', 'z']\n"


def test_default_output_name_and_mode(memprof, tmp_path):
    p = memprof.cmd("run", SCRIPTS / "deep.py")
    assert p.returncode == 0
    files = list(tmp_path.glob("memprof-deep.*.memprof"))
    assert len(files) == 1
    assert files[0].name in p.stderr
    assert (files[0].stat().st_mode & 0o777) == 0o600


def test_exec_that_fails_goes_on_recording(memprof):
    _, cap = memprof.run("execs.py", "fail")
    s = memprof.summary(cap)
    assert s["capture"]["truncated"] is False and s["leaked"]["script_end_marked"]
    got = find(s["top_leaked"], "<module>", script_line("execs.py", "AFTER-LINE"))
    assert [(l["bytes"], l["allocations"]) for l in got if l["file"].endswith("execs.py")] == [(3 * MiB, 1)]


def test_exec_finishes_the_capture(memprof):
    p, cap = memprof.run("execs.py", "replace")
    s = memprof.summary(cap)
    assert s["capture"]["truncated"] is False
    got = find(s["top_at_peak"], "<module>", script_line("execs.py", "BEFORE-LINE"))
    assert [(l["bytes"], l["allocations"]) for l in got if l["file"].endswith("execs.py")] == [(2 * MiB, 1)]
