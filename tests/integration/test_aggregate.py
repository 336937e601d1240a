"""`memprof run --aggregate`: memprof replays the program's events as they come and writes totals
per stack (at the peak, at script end, at exit) and the memory samples instead of the events.
The figures must be those of a full capture of the same run: the workloads are run both ways with
the same hash seed (so the interpreter allocates the same), and every report compared."""
import json
import os
import subprocess

import pytest

from conftest import SCRIPTS, find, script_line, source_line

MiB = 1 << 20
SAME = dict(os.environ, PYTHONHASHSEED="0")
LEAKS = {"leak_small": (4096, 2000), "leak_medium": (65536, 100), "leak_large": (MiB, 3)}


def report(memprof, *args):
    p = memprof.cmd(*args)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def both(memprof, script, *args, flags=()):
    """(aggregated capture, full capture) of the same program."""
    p, agg = memprof.run(script, *args, out="agg.memprof", flags=("--aggregate", *flags), env=SAME)
    _, full = memprof.run(script, *args, out="full.memprof", flags=flags, env=SAME)
    return agg, full


def ours(stacks, script):
    """The entries whose innermost frame is in the workload. (The interpreter's pymalloc arenas,
    1 MiB each, are made by whichever line needs one and are not the same from run to run, with
    or without --aggregate: compare the known leaks, not everything under the script.)"""
    return sorted((x for x in stacks if x["stack"][0]["file"].endswith(script)), key=lambda x: -x["bytes"])


def subtree(tree, script, fn):
    for node in tree:
        if node["function"] == fn and node["file"].endswith(script):
            return node
        found = subtree(node["children"], script, fn)
        if found:
            return found
    return None


def same_figures(a, b):
    """The totals of two runs of one program: equal but for the interpreter's own pymalloc arenas
    (1 MiB each), of which a run may map one more than another (seen under ASan's build, and
    without --aggregate too). The workload's own figures are compared exactly by each test."""
    for key in ("peak", "leaked", "at_exit"):
        assert abs(a[key]["bytes"] - b[key]["bytes"]) in (0, 1 << 20, 2 << 20), (key, a[key], b[key])
        assert abs(a[key]["allocations"] - b[key]["allocations"]) <= 2, (key, a[key], b[key])
    assert abs(a["totals"]["allocations"] - b["totals"]["allocations"]) <= 2, (a["totals"], b["totals"])


def test_big_buffers_same_peak_as_a_full_capture(memprof):
    agg, full = both(memprof, "workloads/big_buffers.py", "20")
    sa, sf = report(memprof, "stats", "--json", agg), report(memprof, "stats", "--json", full)
    assert sa["capture"]["aggregated"] is True and sf["capture"]["aggregated"] is False
    same_figures(sa, sf)
    assert 96 * MiB <= sa["peak"]["bytes"] < 128 * MiB
    # the peak's heaviest site: make(), 12 x 8 MiB, in both
    line = source_line(SCRIPTS / "workloads/big_buffers.py", "return bytes((fill,)) * (size - HDR)")
    for cap in (agg, full):
        top = report(memprof, "table", "--json", cap)["rows"][0]
        assert (top["bytes"], top["allocations"], top["location"]) == (96 * MiB, 12, f"make (big_buffers.py:{line})")
    # the tree at the peak is the same tree under main
    ta, tf = report(memprof, "tree", "--json", agg), report(memprof, "tree", "--json", full)
    main = subtree(ta["tree"], "big_buffers.py", "main")
    assert main and main == subtree(tf["tree"], "big_buffers.py", "main")
    assert main["bytes"] >= 96 * MiB


def test_leaky_same_leaks_as_a_full_capture(memprof):
    agg, full = both(memprof, "workloads/leaky.py", "3000")
    sa, sf = report(memprof, "stats", "--json", agg), report(memprof, "stats", "--json", full)
    same_figures(sa, sf)
    assert sa["leaked"]["bytes"] >= 17_891_328
    # each leak exactly, by allocator and line
    for cap in (agg, full):
        t = report(memprof, "table", "--json", "--leaks", cap)
        rows = {(r["location"], r["allocator"]): (r["bytes"], r["allocations"]) for r in t["rows"]}
        for fn, (size, n) in LEAKS.items():
            line = script_line("workloads/leaky.py", f"LEAKED.append(bytes((i & 0xFF,)) * ")
            got = [v for (loc, alloc), v in rows.items() if loc.startswith(f"{fn} (leaky.py:") and alloc == "malloc"]
            assert got == [(size * n, n)], (fn, line)
    la = report(memprof, "leaks", "--json", "--top", "1000", agg)
    lf = report(memprof, "leaks", "--json", "--top", "1000", full)
    known = lambda stacks: [x for x in ours(stacks, "leaky.py") if x["stack"][0]["function"] in LEAKS]
    assert len(known(la["stacks"])) == 3 and known(la["stacks"]) == known(lf["stacks"])
    assert sum(x["bytes"] for x in ours(la["stacks"], "leaky.py")) >= 17_891_328
    # flamegraph data: the same sites in every mode; no intervals, a chart from the samples
    for mode in ((), ("--leaks",), ("--temporary",)):
        da = report(memprof, "flamegraph", "--json", *mode, agg)
        df = report(memprof, "flamegraph", "--json", *mode, full)
        assert sum(da["sites"]["bytes"]) == da["total"]["bytes"]  # the sites add up, as in a full capture's
        assert abs(da["total"]["bytes"] - df["total"]["bytes"]) in (0, 1 << 20, 2 << 20)
        assert da["intervals"]["node"] == [] and da["capture"]["aggregated"] is True
        heap = da["chart"]["heap"]  # from the memory samples: the leaks held to the end are seen
        assert len(heap) > 1 and 17_891_328 <= max(heap) <= sa["peak"]["bytes"]
        assert da["end_bucket"] is not None and da["end_bucket"] < len(heap)
    # exports and checks read it too
    fa = memprof.cmd("export", "--format", "folded", "--leaks", "-o", "-", agg)
    ff = memprof.cmd("export", "--format", "folded", "--leaks", "-o", "-", full)
    assert fa.returncode == 0 and ff.returncode == 0
    mine = lambda text: sorted(l for l in text.splitlines() if l.rsplit(";", 1)[-1].startswith(tuple(LEAKS)))
    assert len(mine(fa.stdout)) == 3 and mine(fa.stdout) == mine(ff.stdout)
    assert sum(int(l.rsplit(" ", 1)[1]) for l in fa.stdout.splitlines()) == la["total"]["bytes"]
    c = memprof.cmd("check", "--max-leaked", "1MiB", agg)
    assert c.returncode == 1 and "leaked" in c.stdout
    d = report(memprof, "diff", "--json", full, agg)
    assert abs(d["peak"]["change_bytes"]) in (0, 1 << 20, 2 << 20)
    assert d["peak"]["change_bytes"] == sa["peak"]["bytes"] - sf["peak"]["bytes"]
    assert d["leaked"]["change_bytes"] == sa["leaked"]["bytes"] - sf["leaked"]["bytes"]


def test_file_is_small_on_a_long_run(memprof):
    flags = ("--trace-python-allocators",)
    agg, full = both(memprof, "workloads/small_objects.py", "400000", flags=flags)
    sa, sf = report(memprof, "stats", "--json", agg), report(memprof, "stats", "--json", full)
    assert sa["totals"]["allocations"] > 2_000_000
    # the interpreter's share differs by a few blocks between runs (full ones too): close, not equal
    assert abs(sa["totals"]["allocations"] - sf["totals"]["allocations"]) < 100
    assert abs(sa["peak"]["bytes"] - sf["peak"]["bytes"]) < 16 * 1024
    ratio = full.stat().st_size / agg.stat().st_size
    assert ratio >= 20, f"{full.stat().st_size} / {agg.stat().st_size} = {ratio:.1f}"


def test_filters_that_need_events_are_refused(memprof):
    _, cap = memprof.run("workloads/big_buffers.py", "5", flags=("--aggregate",))
    for args in (("stats", "--thread", "1"), ("table", "--from", "0.1s"), ("flamegraph", "--json", "--to", "1s"),
                 ("stats", "--temporary-threshold", "5")):
        p = memprof.cmd(*args, cap)
        assert p.returncode == 2 and p.stdout == "", args
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and "aggregated capture" in lines[0] and "full capture" in lines[0], args


def test_refused_with_follow_fork(memprof):
    marker = memprof.tmp / "ran"
    p = memprof.cmd("run", "--aggregate", "--follow-fork", "-c", f"open({str(marker)!r}, 'w')")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "--follow-fork" in p.stderr and "--aggregate" in p.stderr
    assert not marker.exists()


@pytest.mark.parametrize("why", ["exists", "unwritable"])
def test_bad_output_does_not_start_the_program(memprof, why):
    marker = memprof.tmp / "ran"
    if why == "exists":
        out = memprof.tmp / "keep.memprof"
        out.write_text("mine")
    else:
        out = memprof.tmp / "no" / "such" / "dir" / "x.memprof"
    p = memprof.cmd("run", "--aggregate", "-o", out, "-c", f"open({str(marker)!r}, 'w')")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert str(out) in p.stderr
    assert not marker.exists()
    if why == "exists":
        assert out.read_text() == "mine"


def test_killed_program_still_leaves_its_aggregate(memprof):
    cap = memprof.tmp / "killed.memprof"
    memprof.run_killed(cap, "filler", "--aggregate")
    r = memprof.cmd("summary", "--json", "--top", "50", cap)
    assert r.returncode == 0, r.stderr
    assert "truncated" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    s = json.loads(r.stdout)
    assert s["capture"]["aggregated"] is True
    known = find(s["top_at_peak"], "known", script_line("killed.py", "KNOWN-LINE"))
    assert [(l["bytes"], l["allocations"]) for l in known] == [(5 * MiB, 5)]


def test_exit_status_and_output_are_the_programs(memprof):
    p, cap = memprof.run("-c", "print('out'); import sys; sys.exit(3)", flags=("--aggregate",), check=False)
    assert p.returncode == 3 and p.stdout == "out\n"
    assert report(memprof, "summary", "--json", cap)["capture"]["aggregated"] is True


def test_a_program_that_records_nothing_leaves_no_file(memprof, tmp_path):
    # a static program: LD_PRELOAD cannot load libmemprof.so into it, so no capture comes
    src = tmp_path / "static.c"
    src.write_text("int main(void) { return 0; }\n")
    exe = tmp_path / "static"
    if subprocess.run(["cc", "-static", "-o", exe, src], capture_output=True).returncode != 0:
        pytest.skip("cannot link a static program here (libc.a missing)")
    out = tmp_path / "none.memprof"
    p = memprof.cmd("run", "--aggregate", "-o", out, "--python", exe, "-c", "pass")
    assert p.returncode == 2 and "wrote no capture" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not out.exists()
