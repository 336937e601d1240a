"""The report programs on real captures with known answers: `memprof stats`."""
import json

from conftest import find, script_line

MiB = 1 << 20


def stats(memprof, cap, *extra):
    p = memprof.cmd("stats", "--json", "--top", "50", *extra, cap)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout), p.stderr


def test_stats_known_peak_sizes_and_temporaries(memprof):
    _, cap = memprof.run("peak_buffers.py")
    s, _ = stats(memprof, cap)
    assert 96 * MiB <= s["peak"]["bytes"] < 104 * MiB
    # the 12 held buffers: 96 MiB allocated at hold's line, 12 times
    hold = find(s["top_by_bytes"], "hold", script_line("peak_buffers.py", "PEAK-LINE"))
    assert [(l["bytes"], l["allocations"]) for l in hold] == [(96 * MiB, 12)]
    # sizes: exactly 8 MiB falls in [8 MiB, 16 MiB)
    big = [b for b in s["sizes"] if b["min"] == 8 * MiB]
    assert big and big[0]["max"] == 16 * MiB - 1 and big[0]["allocations"] >= 12
    assert sum(b["allocations"] for b in s["sizes"]) == s["totals"]["allocations"]
    assert sum(a["allocations"] for a in s["allocators"]) == s["totals"]["allocations"]
    # churn's 50 buffers of 2 MiB are each freed before the next allocation
    assert s["temporary"]["threshold"] == 1
    assert s["temporary"]["allocations"] >= 50 and s["temporary"]["bytes"] >= 50 * 2 * MiB
    (t,) = s["threads"]
    assert t["thread"] == 1 and t["allocated"]["allocations"] == s["totals"]["allocations"]
    assert t["at_peak"]["bytes"] == s["peak"]["bytes"]
    assert s["rate"]["duration_s"] > 0 and s["rate"]["allocations_per_s"] > 0


def test_stats_known_leak_and_thread_filter(memprof):
    _, cap = memprof.run("leak.py")
    s, _ = stats(memprof, cap, "--thread", "1")
    assert s["filter"] == {"thread": 1, "from_s": None, "to_s": None}
    assert s["leaked"]["bytes"] >= 100 * 4096 + 3 * MiB
    small = find(s["top_by_bytes"], "leak_small", script_line("leak.py", "LEAK-SMALL"))
    assert [(l["bytes"], l["allocations"]) for l in small] == [(100 * 4096, 100)]
    # a thread the capture does not have: nothing counted, and a warning
    s, err = stats(memprof, cap, "--thread", "7")
    assert s["totals"]["allocations"] == 0 and s["peak"]["bytes"] == 0
    assert "none numbered 7" in err
    # a window holding the whole run counts everything; one after it, nothing
    whole, _ = stats(memprof, cap)
    s2, _ = stats(memprof, cap, "--from", "0", "--to", "1000")
    assert s2["totals"] == whole["totals"] and s2["peak"] == whole["peak"]
    assert s2["filter"] == {"thread": None, "from_s": None, "to_s": 1000}  # from 0 is no bound
    s3, _ = stats(memprof, cap, "--from", "900s")
    assert s3["totals"]["allocations"] == 0 and s3["leaked"]["bytes"] == 0


def test_stats_text_fits_80_columns_without_colour(memprof):
    _, cap = memprof.run("leak.py")
    p = memprof.cmd("stats", cap)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert "\x1b[" not in p.stdout  # not a terminal: no colour
    rest = [l for l in lines if not l.startswith("capture ")]  # the path is the user's
    assert max(len(l) for l in rest) <= 80, max(rest, key=len)
    assert any(l.startswith("top locations by bytes allocated") for l in lines)
    assert any("leak_small" in l for l in lines)


def test_stats_bad_input(memprof, tmp_path):
    p = memprof.cmd("stats", tmp_path / "nope.memprof")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "nope.memprof" in p.stderr
    junk = tmp_path / "junk.memprof"
    junk.write_bytes(b"not a capture at all" * 10)
    p = memprof.cmd("stats", junk)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    _, cap = memprof.run("leak.py")
    for args, word in ((("--from", "soon"), "--from"), (("--thread", "0"), "--thread"),
                       (("--to", "1", "--from", "2"), "before"), (("--temporary-threshold", "x"), "threshold"),
                       (("--bogus",), "--bogus")):
        p = memprof.cmd("stats", *args, cap)
        assert p.returncode == 2 and word in p.stderr and len(p.stderr.strip().splitlines()) == 1, (args, p.stderr)
