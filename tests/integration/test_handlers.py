"""Allocations made in Python signal handlers and in an atexit handler are recorded at their
lines, signals arriving all through a busy run lose nothing, and nothing deadlocks (the run
has a time limit)."""
import json

import pytest

from conftest import find, script_line

MiB = 1 << 20
TICKS = 200


def test_signal_and_atexit_handlers_allocations(memprof):
    p, cap = memprof.run("handlers.py", timeout=30)
    assert p.stdout == f"handled 1 {TICKS}\n"
    s = memprof.summary(cap)
    assert s["leaked"]["script_end_marked"] is True and not s["capture"]["truncated"]
    sig = find(s["top_leaked"], "on_usr1", script_line("handlers.py", "SIGNAL-LINE"))
    assert [(l["bytes"], l["allocations"]) for l in sig] == [(2 * MiB, 1)]
    assert [f["function"] for f in sig[0]["stack"]] == ["on_usr1", "<module>"]
    alarm = find(s["top_leaked"], "on_alarm", script_line("handlers.py", "ALARM-LINE"))
    assert [(l["bytes"], l["allocations"]) for l in alarm] == [(TICKS * 4096, TICKS)]
    # the atexit handler ran before memprof's script-end mark: its block is live at the mark
    ex = find(s["top_leaked"], "at_exit", script_line("handlers.py", "ATEXIT-LINE"))
    assert [(l["bytes"], l["allocations"]) for l in ex] == [(3 * MiB, 1)]
    assert [f["function"] for f in ex[0]["stack"]] == ["at_exit"]
    assert s["leaked"]["bytes"] >= 5 * MiB + TICKS * 4096


@pytest.mark.parametrize("mode", [("--trace-python-allocators",), ("--native", "--trace-python-allocators")],
                         ids=["trace", "native-trace"])
def test_handlers_with_the_python_allocators_traced(memprof, mode):
    """The same with every object allocation recorded (and the frame-evaluation hook that keeps
    the shadow stack): each buffer is one PyObject_Malloc at its line, under the handler's
    frame."""
    p, cap = memprof.run("handlers.py", flags=mode, out="traced.memprof", timeout=60)
    assert p.stdout == f"handled 1 {TICKS}\n"
    t = memprof.cmd("table", "--leaks", "--json", cap)
    assert t.returncode == 0, t.stderr
    got = {}
    for r in json.loads(t.stdout)["rows"]:
        py = [(f["function"], f["line"]) for f in r["stack"] if not f.get("native")]
        if r["allocator"] == "PyObject_Malloc" and py and py[0][0] in ("on_usr1", "on_alarm", "at_exit"):
            b, a = got.get(tuple(py), (0, 0))
            got[tuple(py)] = (b + r["bytes"], a + r["allocations"])
    line = lambda marker: script_line("handlers.py", marker)  # noqa: E731
    sig = [s for s in got if s[0] == ("on_usr1", line("SIGNAL-LINE"))]
    assert len(sig) == 1 and got[sig[0]] == (2 * MiB, 1) and [f for f, _ in sig[0]] == ["on_usr1", "<module>"]
    alarm = [s for s in got if s[0] == ("on_alarm", line("ALARM-LINE"))]
    assert sum(got[s][0] for s in alarm) == TICKS * 4096 and sum(got[s][1] for s in alarm) == TICKS
    assert got[(("at_exit", line("ATEXIT-LINE")),)] == (3 * MiB, 1)
