"""Allocations made in Python signal handlers and in an atexit handler are recorded at their
lines, signals arriving all through a busy run lose nothing, and nothing deadlocks (the run
has a time limit)."""
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
