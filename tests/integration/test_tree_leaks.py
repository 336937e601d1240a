"""`memprof tree` and `memprof leaks` on real captures with known answers: the 12 x 8 MiB held
in peak_buffers.py's hold(), the 100 x 4 KiB and 3 x 1 MiB leak.py leaves live."""
import json
import os
import pty
import signal
import subprocess
import time

import pytest

from conftest import SCRIPTS, Memprof, script_line

MiB = 1 << 20
PEAK = 12 * 8 * MiB     # hold(): 12 buffers of 8 MiB
SMALL = 100 * 4096      # leak_small: 100 x 4 KiB
LARGE = 3 * MiB         # leak_large: 3 x 1 MiB
SMALL_LINE, LARGE_LINE = script_line("leak.py", "LEAK-SMALL"), script_line("leak.py", "LEAK-LARGE")


def report(memprof, name, cap, *extra):
    p = memprof.cmd(name, "--json", *extra, cap)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def amount(x):
    """{bytes, allocations} of a report's amount (left out: its other keys)."""
    return {k: x[k] for k in ("bytes", "allocations")}


def text(memprof, name, cap, *extra, **kw):
    p = memprof.cmd(name, *extra, cap, **kw)
    assert p.returncode == 0, p.stderr
    return p.stdout


def human(n):
    """mp_human_bytes: "400.0 KiB"."""
    if n < 1024:
        return f"{n} B"
    v, units = float(n), ["B", "KiB", "MiB", "GiB", "TiB"]
    u = 0
    while v >= 1024 and u < 4:
        v /= 1024
        u += 1
    return f"{v:.1f} {units[u]}"


def nodes(tree, depth=1, path=()):
    """(depth, path of (function, file, line), node) for every node of a tree, depth first."""
    for n in tree:
        p = path + ((n["function"], n["file"], n["line"]),)
        yield depth, p, n
        yield from nodes(n["children"], depth + 1, p)


def names(path):
    return tuple(f for f, _, _ in path)


def fits_80(out):
    assert "\x1b[" not in out  # not a terminal: no colour
    rest = [l for l in out.splitlines() if not l.startswith("capture ")]  # the path is the user's
    assert rest and max(len(l) for l in rest) <= 80, max(rest, key=len)


def one_line_exit_2(p, word):
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and word in lines[0], (p.returncode, p.stderr)


@pytest.fixture(scope="module")
def captures(tmp_path_factory):
    """One capture of each script, shared by the tests (they only read them)."""
    m = Memprof(tmp_path_factory.mktemp("tree_leaks"))
    return {s: m.run(s, out=s.replace(".py", ".memprof"))[1] for s in ("peak_buffers.py", "leak.py", "deep.py")}


# ---- tree ----

def test_tree_known_peak_path(memprof, captures):
    cap = captures["peak_buffers.py"]
    t = report(memprof, "tree", cap)
    stats = report(memprof, "stats", cap)
    assert t["at"] == "peak" and t["total"] == amount(stats["peak"])
    line = script_line("peak_buffers.py", "PEAK-LINE")
    hold = [(d, p, n) for d, p, n in nodes(t["tree"]) if n["function"] == "hold"]
    assert [(names(p), n["line"], n["bytes"], n["allocations"]) for _, p, n in hold] == \
        [(("<module>", "main", "hold"), line, PEAK, 12)]
    _, _, h = hold[0]
    assert h["own"] == {"bytes": PEAK, "allocations": 12} and h["children"] == []
    assert h["file"].endswith("peak_buffers.py") and "native" not in h
    assert h["share"] == pytest.approx(100 * PEAK / t["total"]["bytes"])
    # every frame holds exactly what it holds itself, its callees listed and those folded
    for _, _, n in nodes(t["tree"]):
        assert n["bytes"] == n["own"]["bytes"] + sum(c["bytes"] for c in n["children"]) + n["hidden"]["bytes"]
        assert n["allocations"] == (n["own"]["allocations"] + sum(c["allocations"] for c in n["children"])
                                    + n["hidden"]["allocations"])
        assert [c["bytes"] for c in n["children"]] == sorted((c["bytes"] for c in n["children"]), reverse=True)
    assert t["total"]["bytes"] == sum(n["bytes"] for n in t["tree"]) + t["hidden"]["bytes"] + t["no_stack"]["bytes"]
    # the text: the same frame, its amount, count and share, indented under main
    out = text(memprof, "tree", cap)
    fits_80(out)
    rows = [l for l in out.splitlines() if f"hold (peak_buffers.py:{line})" in l]
    assert len(rows) == 1, out
    assert rows[0].split()[:5] == ["96.0", "MiB", f"{h['share']:.1f}%", "12", "hold"]
    assert rows[0].index("hold") == out.splitlines()[out.splitlines().index(rows[0]) - 1].index("main") + 2


def test_tree_cut_hides_small_callees_and_says_how_much(memprof, captures):
    cap = captures["peak_buffers.py"]
    full = report(memprof, "tree", cap, "--cut", "0")
    assert all(n["hidden"]["callees"] == 0 for _, _, n in nodes(full["tree"])) and full["hidden"]["bytes"] == 0
    for cut in ("1", "0.5", "2%"):
        t = report(memprof, "tree", cap, "--cut", cut)
        pct = float(cut.rstrip("%"))
        assert t["cut_percent"] == pct and t["total"] == full["total"]
        # listed: exactly the frames at or above the cut; folded: the sum of the others
        want = {p: n for _, p, n in nodes(full["tree"]) if n["share"] >= pct}
        got = {p: n for _, p, n in nodes(t["tree"])}
        assert {p: n["bytes"] for p, n in got.items()} == {p: n["bytes"] for p, n in want.items()}
        for p, n in list(got.items()) + [((), t)]:
            small = [c for c in children(full, p) if c["share"] < pct]
            assert n["hidden"] == {"bytes": sum(c["bytes"] for c in small),
                                   "allocations": sum(c["allocations"] for c in small), "callees": len(small)}
    # a cut of 50%: only the hold() path is left, the rest is one line at the top
    t = report(memprof, "tree", cap, "--cut", "50%")
    assert [names(p) for _, p, _ in nodes(t["tree"])] == [("<module>",), ("<module>", "main"),
                                                          ("<module>", "main", "hold")]
    hid = t["hidden"]
    assert hid["callees"] > 0 and hid["bytes"] == t["total"]["bytes"] - PEAK - t["no_stack"]["bytes"]
    out = text(memprof, "tree", cap, "--cut", "50")
    fits_80(out)
    rows = [l for l in out.splitlines() if "smaller" in l]
    assert len(rows) == 1 and rows[0].split("  ")[-1] == f"... {hid['callees']} smaller", out
    assert rows[0].strip().startswith(human(hid["bytes"])), rows[0]
    assert "cut      callees under 50% of it" in out


def children(tree, path):
    """The callees of the node at path (the outermost frames for ())."""
    level = tree["tree"]
    for key in path:
        level = next(n for n in level if (n["function"], n["file"], n["line"]) == key)["children"]
    return level


def test_tree_depth_limit(memprof, captures):
    cap = captures["peak_buffers.py"]
    t = report(memprof, "tree", cap, "--depth", "2", "--cut", "0")
    assert t["max_depth"] == 2 and max(d for d, _, _ in nodes(t["tree"])) == 2
    (main,) = [n for _, p, n in nodes(t["tree"]) if names(p) == ("<module>", "main")]
    assert main["children"] == [] and main["hidden"] == {"bytes": PEAK, "allocations": 12, "callees": 1}
    out = text(memprof, "tree", cap, "--depth", "2")
    fits_80(out)
    lines = out.splitlines()
    i = [k for k, l in enumerate(lines) if "main (peak_buffers.py:" in l][0]
    assert lines[i + 1].split() == ["96.0", "MiB", lines[i].split()[2], "12", "...", "1", "deeper"], lines[i + 1]
    assert "hold" not in out
    # very deep stacks: the indent stops growing, the line says its depth, and it still fits
    deep = text(memprof, "tree", captures["deep.py"], "--cut", "0.5")
    fits_80(deep)
    assert "[depth 11] " in deep and "[depth 300] " in deep
    t = report(memprof, "tree", captures["deep.py"], "--cut", "0.5")
    (leaf,) = [n for _, _, n in nodes(t["tree"]) if n["function"] == "leaf" and n["bytes"] >= MiB]
    assert leaf["line"] == script_line("deep.py", "LEAF-LINE") and (leaf["bytes"], leaf["allocations"]) == (MiB, 1)


def test_tree_of_leaks(memprof, captures):
    cap = captures["leak.py"]
    t = report(memprof, "tree", cap, "--leaks", "--cut", "0")
    stats = report(memprof, "stats", cap)
    assert t["at"] == "script_end" and t["script_end_marked"] is True
    assert t["total"] == amount(stats["leaked"])
    got = {(names(p), n["line"]): (n["bytes"], n["allocations"]) for _, p, n in nodes(t["tree"])
           if n["function"] in ("leak_small", "leak_large")}
    assert got == {(("<module>", "main", "leak_small"), SMALL_LINE): (SMALL, 100),
                   (("<module>", "main", "leak_large"), LARGE_LINE): (LARGE, 3)}
    out = text(memprof, "tree", cap, "--leaks")
    fits_80(out)
    assert "live when the script ended" in out


# ---- leaks ----

def frames_of(stack):
    return [(f["function"], f["line"]) for f in stack["stack"]]


def test_leaks_known_stacks_biggest_first(memprof, captures):
    cap = captures["leak.py"]
    small, large = SMALL_LINE, LARGE_LINE
    lk = report(memprof, "leaks", cap, "--top", "1000")
    stats = report(memprof, "stats", cap)
    assert lk["at"] == "script_end" and lk["script_end_marked"] is True
    assert amount(lk["total"]) == amount(stats["leaked"])
    assert lk["suppressed"] == {"bytes": 0, "allocations": 0, "stacks": 0, "patterns": []}
    assert lk["more"] == {"bytes": 0, "allocations": 0, "stacks": 0} and len(lk["stacks"]) == lk["total"]["stacks"]
    assert sum(s["bytes"] for s in lk["stacks"]) == lk["total"]["bytes"]
    assert [s["bytes"] for s in lk["stacks"]] == sorted((s["bytes"] for s in lk["stacks"]), reverse=True)
    main = script_line("leak.py", "        leak_small(i)")
    module = (SCRIPTS / "leak.py").read_text().splitlines().index("main()") + 1  # the call at the bottom
    idx = {f: i for i, s in enumerate(lk["stacks"]) for f in [frames_of(s)[0]] if f[0].startswith("leak_")}
    assert set(idx) == {("leak_small", small), ("leak_large", large)}
    s, l = lk["stacks"][idx[("leak_small", small)]], lk["stacks"][idx[("leak_large", large)]]
    assert (s["bytes"], s["allocations"]) == (SMALL, 100) and (l["bytes"], l["allocations"]) == (LARGE, 3)
    assert idx[("leak_large", large)] < idx[("leak_small", small)]
    assert frames_of(s) == [("leak_small", small), ("main", main), ("<module>", module)]
    # text: the same two stacks, the large one first, each followed by its innermost frame
    out = text(memprof, "leaks", cap, "--top", "1000")
    fits_80(out)
    lines = out.splitlines()
    at_l = lines.index(next(x for x in lines if x.strip() == f"leak_large (leak.py:{large})"))
    at_s = lines.index(next(x for x in lines if x.strip() == f"leak_small (leak.py:{small})"))
    assert at_l < at_s
    assert lines[at_l - 1].split(". ", 1)[1] == "3.0 MiB in 3 blocks"
    assert lines[at_s - 1].split(". ", 1)[1] == "400.0 KiB in 100 blocks"
    assert lines[at_s + 1].strip() == f"main (leak.py:{main})"
    # --top: fewer stacks, the rest summed up
    lk3 = report(memprof, "leaks", cap, "--top", "3")
    assert lk3["stacks"] == lk["stacks"][:3]
    rest = lk["stacks"][3:]
    assert lk3["more"] == {"bytes": sum(x["bytes"] for x in rest), "allocations": sum(x["allocations"] for x in rest),
                           "stacks": len(rest)}
    out = text(memprof, "leaks", cap, "--top", "3")
    assert f"\n{len(rest)} more stacks: {human(lk3['more']['bytes'])} in " in out


def test_leaks_ignore_patterns(memprof, captures):
    cap = captures["leak.py"]
    small, large = SMALL_LINE, LARGE_LINE
    whole = report(memprof, "leaks", cap, "--top", "1000")
    lk = report(memprof, "leaks", cap, "--top", "1000", "--ignore", "leak_large")
    assert lk["total"] == whole["total"]
    assert lk["suppressed"] == {"bytes": LARGE, "allocations": 3, "stacks": 1, "patterns": ["leak_large"]}
    assert not [s for s in lk["stacks"] if any(f["function"] == "leak_large" for f in s["stack"])]
    assert [(frames_of(s)[0], s["bytes"]) for s in lk["stacks"] if frames_of(s)[0][0] == "leak_small"] == \
        [(("leak_small", small), SMALL)]
    out = text(memprof, "leaks", cap, "--ignore", "leak_large")
    fits_80(out)
    assert "\nignored  3.0 MiB in 3 blocks, 1 stack (leak_large)\n" in out
    assert not [l for l in out.splitlines() if l.strip().startswith("leak_large (")]
    # file:line (base name or a glob on the path) and globs on the function
    for pat in (f"leak.py:{small}", f"*/scripts/leak.py:{small}", "leak_sm*"):
        lk = report(memprof, "leaks", cap, "--top", "1000", "--ignore", pat)
        assert (lk["suppressed"]["bytes"], lk["suppressed"]["stacks"]) == (SMALL, 1), pat
    # a file glob: every stack through leak.py goes, both known leaks among them
    through = [s for s in whole["stacks"] if any(f["file"].endswith("/scripts/leak.py") for f in s["stack"])]
    for pat in ("*/scripts/leak.py", "leak.py"):
        lk = report(memprof, "leaks", cap, "--top", "1000", "--ignore", pat)
        assert lk["suppressed"]["stacks"] == len(through)
        assert lk["suppressed"]["bytes"] == sum(s["bytes"] for s in through)
        assert lk["suppressed"]["bytes"] >= SMALL + LARGE
        assert not [s for s in lk["stacks"] if any(f["file"].endswith("/scripts/leak.py") for f in s["stack"])]
    # several patterns add up; one that matches nothing changes nothing
    lk = report(memprof, "leaks", cap, "--ignore", "leak_large", "--ignore=leak_small", "--ignore", "nothing_here")
    assert lk["suppressed"]["bytes"] == SMALL + LARGE and lk["suppressed"]["stacks"] == 2
    assert lk["suppressed"]["patterns"] == ["leak_large", "leak_small", "nothing_here"]


def test_leaks_at_exit(memprof, captures):
    cap = captures["leak.py"]
    stats = report(memprof, "stats", cap)
    end = report(memprof, "leaks", cap, "--top", "1000")
    ex = report(memprof, "leaks", cap, "--top", "1000", "--at-exit")
    assert ex["at"] == "exit"
    assert amount(ex["total"]) == stats["at_exit"]
    # the interpreter's teardown after the script end frees the module globals holding the
    # known leaks: at exit they are gone, and less is live than when the script ended
    assert ex["total"]["bytes"] < end["total"]["bytes"] - LARGE
    assert not [s for s in ex["stacks"] if any(f["function"].startswith("leak_") for f in s["stack"])]
    out = text(memprof, "leaks", cap, "--at-exit")
    fits_80(out)
    assert out.splitlines()[1].startswith(f"at exit  {human(ex['total']['bytes'])} in ")
    assert "when the process exited" in out


def test_colour_only_on_a_terminal(memprof, captures):
    for name in ("tree", "leaks"):
        for env, want in (({}, True), ({"NO_COLOR": "1"}, False)):
            master, slave = pty.openpty()
            p = subprocess.Popen([str(memprof.bin / "memprof"), name, "--top", "1", str(captures["leak.py"])],
                                 stdout=slave, stderr=subprocess.DEVNULL, env=dict(os.environ, **env))
            os.close(slave)
            out = b""
            try:
                while chunk := os.read(master, 65536):
                    out += chunk
            except OSError:  # EIO: the program closed the terminal
                pass
            finally:
                os.close(master)
            assert p.wait(timeout=60) == 0
            assert (b"\x1b[1m" in out) is want, (name, env, out[:200])


# ---- bad input ----

def test_bad_input_one_line_exit_2(memprof, captures, tmp_path):
    cap = captures["leak.py"]
    for name, args, word in (("tree", ("--cut", "x"), "--cut"), ("tree", ("--cut", "101"), "--cut"),
                             ("tree", ("--cut", "-1"), "--cut"), ("tree", ("--cut=1%%",), "--cut"),
                             ("tree", ("--depth", "0"), "--depth"), ("tree", ("--depth", "deep"), "--depth"),
                             ("tree", ("--at-exit",), "--at-exit"), ("tree", ("--thread", "0"), "--thread"),
                             ("leaks", ("--ignore=",), "--ignore"), ("leaks", ("--top", "0"), "--top"),
                             ("leaks", ("--leaks",), "--leaks"), ("leaks", ("--bogus",), "--bogus")):
        one_line_exit_2(memprof.cmd(name, *args, cap), word)
    for name, opt in (("tree", "--cut"), ("tree", "--depth"), ("leaks", "--ignore")):  # no value at the end
        one_line_exit_2(memprof.cmd(name, cap, opt), opt)
    junk = tmp_path / "junk.memprof"
    junk.write_bytes(b"not a capture at all" * 10)
    for name in ("tree", "leaks"):
        one_line_exit_2(memprof.cmd(name, tmp_path / "nope.memprof"), "nope.memprof")
        one_line_exit_2(memprof.cmd(name, junk), "junk.memprof")
        one_line_exit_2(memprof.cmd(name), "capture")
        p = memprof.cmd(name, "--help")
        assert p.returncode == 0 and f"usage: memprof {name}" in p.stdout


def test_killed_capture_warns_and_reports(memprof):
    """A capture cut short (the process was killed): one warning line, and the reports of what
    was written, the 5 x 1 MiB killed.py made before it was killed among it."""
    cap = memprof.tmp / "killed.memprof"
    proc = subprocess.Popen([str(memprof.bin / "memprof"), "run", "-q", "-o", str(cap), str(SCRIPTS / "killed.py"),
                             "filler"], stdout=subprocess.PIPE, text=True, cwd=memprof.tmp)
    word, pid = proc.stdout.readline().split()
    assert word == "ready"
    time.sleep(1.5)  # full blocks go to disk on the writer thread
    os.kill(int(pid), signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    proc.stdout.close()
    known = script_line("killed.py", "KNOWN-LINE")
    for name in ("tree", "leaks"):
        p = memprof.cmd(name, "--json", cap)
        assert p.returncode == 0, p.stderr
        err = p.stderr.strip().splitlines()
        assert len(err) == 1 and "truncated" in err[0], p.stderr
        r = json.loads(p.stdout)
        assert r["capture"]["truncated"] is True and r["script_end_marked"] is False
        if name == "tree":
            got = [(n["bytes"], n["allocations"]) for _, _, n in nodes(r["tree"])
                   if (n["function"], n["line"]) == ("known", known)]
        else:
            got = [(s["bytes"], s["allocations"]) for s in r["stacks"] if frames_of(s)[0] == ("known", known)]
        assert got == [(5 * MiB, 5)], name
        p = memprof.cmd(name, cap)
        assert p.returncode == 0 and "truncated" in p.stderr and f"known (killed.py:{known})" in p.stdout
    # the table and the flamegraph's data too
    p = memprof.cmd("table", "--json", cap)
    assert p.returncode == 0 and len(p.stderr.strip().splitlines()) == 1 and "truncated" in p.stderr
    t = json.loads(p.stdout)
    assert t["capture"]["truncated"] is True
    assert [(r["bytes"], r["allocations"]) for r in t["rows"] if r["location"] == f"known (killed.py:{known})"] == \
        [(5 * MiB, 5)]
    p = memprof.cmd("flamegraph", "--json", cap)
    assert p.returncode == 0 and len(p.stderr.strip().splitlines()) == 1 and "truncated" in p.stderr
    d = json.loads(p.stdout)
    assert d["capture"]["truncated"] is True and sum(d["sites"]["bytes"]) == d["total"]["bytes"]
    p = memprof.cmd("flamegraph", "-o", "killed.html", cap)
    assert p.returncode == 0 and (memprof.tmp / "killed.html").stat().st_size > 100_000
    out = memprof.cmd("leaks", cap).stdout
    assert out.splitlines()[1].startswith("leaked   ") and out.splitlines()[1].endswith(": live at exit")
    assert "no script-end mark" in out.splitlines()[2]
