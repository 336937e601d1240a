"""memprof check and memprof diff: exit codes and figures against known answers.

- workloads/leaky.py (a copy of the benchmark workload) leaks 2000 x 4096 at leak_small,
  100 x 65536 at leak_medium and 3 x 1 MiB at leak_large, whatever its churn argument.
- grow.py K keeps K x 64 KiB at hold() (leaked) and holds K x 1 MiB at once at spike() (the
  peak): from K = 10 to K = 12 the peak grows by 2 MiB at spike and 128 KiB at hold, the leaks
  by 128 KiB at hold, each block one malloc.
The interpreter's own allocations (pymalloc's 1 MiB arenas, whose first user can change between
runs) come on top, so totals are checked with room for them and locations exactly."""
import json
import os

import pytest

from conftest import SCRIPTS, source_line

MiB = 1 << 20
KiB = 1 << 10
LEAKY = "workloads/leaky.py"
LEAKS = {"leak_small": (4096, 2000), "leak_large": (MiB, 3)}  # leak_medium also holds the list's array
ENV = dict(os.environ, PYTHONHASHSEED="0")


@pytest.fixture
def leaky_pair(memprof):
    _, a = memprof.run(LEAKY, "3000", out="leaky-a.memprof", env=ENV)
    _, b = memprof.run(LEAKY, "9000", out="leaky-b.memprof", env=ENV)
    return a, b


@pytest.fixture
def grow_pair(memprof):
    _, a = memprof.run("grow.py", "10", out="grow10.memprof", env=ENV)
    _, b = memprof.run("grow.py", "12", out="grow12.memprof", env=ENV)
    return a, b


def run_json(memprof, *args, rc):
    p = memprof.cmd(*args, "--json")
    assert p.returncode == rc, p.stdout + p.stderr
    return json.loads(p.stdout)


def by_function(rows):
    return {r["function"]: r for r in rows}


def test_check_leaky_limits(memprof, leaky_pair):
    cap, _ = leaky_pair
    intended = 2000 * 4096 + 100 * 65536 + 3 * MiB  # 17,891,328
    # 17 MiB (17,825,792) is under what leaky leaks by itself: over
    d = run_json(memprof, "check", cap, "--max-leaked", "17MiB", "--max-peak", "1GB", rc=1)
    assert d["passed"] is False
    peak, leaked = d["checks"]  # in the order peak, leaked, allocations
    assert (leaked["name"], leaked["limit"], leaked["passed"]) == ("leaked", 17 * MiB, False)
    assert intended <= leaked["value"] < intended + 8 * MiB
    assert (peak["name"], peak["limit"], peak["passed"]) == ("peak", 1 << 30, True)
    assert "biggest" not in peak
    big = by_function(leaked["biggest"])
    line = source_line(SCRIPTS / LEAKY, "LEAKED.append(bytes((i & 0xFF,)) * (4096 - HDR))")
    assert (big["leak_small"]["bytes"], big["leak_small"]["allocations"], big["leak_small"]["line"]) == (
        4096 * 2000, 2000, line)
    assert (big["leak_large"]["bytes"], big["leak_large"]["allocations"]) == (3 * MiB, 3)
    assert [f["function"] for f in big["leak_small"]["stack"][:3]] == ["leak_small", "main", "<module>"]
    # a limit the capture keeps: exit 0, nothing listed
    d = run_json(memprof, "check", cap, "--max-leaked", f"{intended + 8 * MiB}", rc=0)
    assert d["passed"] is True and "biggest" not in d["checks"][0]
    # allocations: a limit of one is passed, with the most frequent locations listed
    d = run_json(memprof, "check", cap, "--max-allocations", "1", "--top", "2", rc=1)
    a = d["checks"][0]
    assert a["name"] == "allocations" and a["value"] > 2103 and len(a["biggest"]) == 2
    # text: the verdict and the stacks
    p = memprof.cmd("check", cap, "--max-leaked", "17MB", "--top", "3")
    assert p.returncode == 1, p.stderr
    assert "OVER by" in p.stdout and "FAILED: 1 limit exceeded" in p.stdout
    assert f"7.8 MiB in 2,000 blocks  leak_small ({SCRIPTS / LEAKY}:{line})" in p.stdout
    p = memprof.cmd("check", cap, "--max-leaked", "64 MB")
    assert p.returncode == 0 and p.stdout.rstrip().endswith("passed"), p.stdout + p.stderr


def test_diff_leaky_same_leaks(memprof, leaky_pair):
    a, b = leaky_pair
    d = run_json(memprof, "diff", a, b, rc=0)
    assert d["passed"] is True
    assert d["threshold"] == {"percent": 5}
    # more churn, the same leaks: none of the leak sites moved
    for side in ("grew", "shrank"):
        names = {r["function"] for r in d["in_leaks"][side]} | {r["function"] for r in d["at_peak"][side]}
        assert not names & {"leak_small", "leak_medium", "leak_large"}, names
    assert d["allocations"]["new"] > d["allocations"]["base"]
    intended = 2000 * 4096 + 100 * 65536 + 3 * MiB
    assert d["leaked"]["base_bytes"] >= intended and d["leaked"]["new_bytes"] >= intended
    assert abs(d["leaked"]["change_bytes"]) <= 2 * MiB


def test_diff_grow(memprof, grow_pair):
    a, b = grow_pair
    hold = source_line(SCRIPTS / "grow.py", "KEPT.append(")
    spike = source_line(SCRIPTS / "grow.py", "blocks = [")
    d = run_json(memprof, "diff", a, b, rc=1)
    assert d["passed"] is False and d["peak"]["passed"] is False
    peak = d["peak"]
    assert 1 * MiB < peak["change_bytes"] < 4 * MiB and peak["change_percent"] > 5
    grew = by_function(d["at_peak"]["grew"])
    s = grew["spike.<locals>.<listcomp>"]
    assert (s["line"], s["change_bytes"], s["change_allocations"]) == (spike, 2 * MiB, 2)
    assert (s["base"], s["new"]) == ({"bytes": 10 * MiB, "allocations": 10}, {"bytes": 12 * MiB, "allocations": 12})
    assert [f["function"] for f in s["stack"]] == ["spike.<locals>.<listcomp>", "spike", "<module>"]
    h = grew["hold"]
    assert (h["line"], h["change_bytes"], h["change_allocations"]) == (hold, 128 * KiB, 2)
    h = by_function(d["in_leaks"]["grew"])["hold"]
    assert (h["change_bytes"], h["new"]["bytes"]) == (128 * KiB, 12 * 64 * KiB)
    # the other way round: the same locations shrank, and nothing grew past the threshold
    d = run_json(memprof, "diff", b, a, rc=0)
    s = by_function(d["at_peak"]["shrank"])["spike.<locals>.<listcomp>"]
    assert (s["change_bytes"], s["change_allocations"]) == (-2 * MiB, -2)
    assert d["peak"]["change_bytes"] < 0
    # thresholds: a percentage, or a size
    assert run_json(memprof, "diff", a, b, "--threshold", "50%", rc=0)["threshold"] == {"percent": 50}
    assert run_json(memprof, "diff", a, b, "--threshold", "4MiB", rc=0)["threshold"] == {"bytes": 4 * MiB}
    run_json(memprof, "diff", a, b, "--threshold", "512KB", rc=1)
    # text
    p = memprof.cmd("diff", a, b, "--top", "3")
    assert p.returncode == 1
    assert "FAILED: the peak grew by more than 5%" in p.stdout
    assert f"+2.0 MiB  +2 blocks  spike.<locals>.<listcomp> ({SCRIPTS / 'grow.py'}:{spike})  10.0 MiB -> 12.0 MiB" in p.stdout


@pytest.mark.parametrize("args, message", [
    (("check", "CAP"), "no limit given"),
    (("check", "CAP", "--max-peak", "12XB"), "--max-peak needs a size"),
    (("check", "CAP", "--max-peak", "-5MB"), "--max-peak needs a size"),
    (("check", "CAP", "--max-leaked"), "--max-leaked needs a value"),
    (("check", "CAP", "--max-allocations", "1e6"), "--max-allocations needs a whole number"),
    (("check", "missing.memprof", "--max-peak", "1MB"), "missing.memprof"),
    (("diff", "CAP"), "which captures?"),
    (("diff", "CAP", "CAP", "CAP"), "two captures"),
    (("diff", "CAP", "CAP", "--threshold", "abc%"), "--threshold needs a percentage"),
    (("diff", "CAP", "missing.memprof"), "missing.memprof"),
    (("diff", "CAP", "notacapture.txt"), "notacapture.txt"),
])
def test_bad_input(memprof, args, message):
    _, cap = memprof.run("grow.py", "1", out="cap.memprof")
    (memprof.tmp / "notacapture.txt").write_text("hello\n")
    p = memprof.cmd(*[str(cap) if a == "CAP" else a for a in args])
    assert p.returncode == 2, p.stdout + p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], p.stderr
    assert p.stdout == ""
