"""memprof.Tracker: scoped recording from Python, in a plain python3 (the
library loaded late, hooks put in by GOT patching) and under memprof run
(the preloaded library reused). Known answers from scripts/tracker_block.py:
one malloc(2,000,003) at the tracked line, zlib's buffers (deflateInit2_'s
window, prev, head and pending: 4 x 64 KiB) at the compressobj line, nothing
of the allocations made before and after the block."""
import json
import os
import subprocess

import pytest

from conftest import CONFIG, SCRIPTS, source_line

SCRIPT = SCRIPTS / "tracker_block.py"
PYPATH = os.path.join(os.path.dirname(CONFIG["bindir"]), "python")


def plain_python(memprof, *args, **kw):
    env = dict(os.environ, PYTHONPATH=PYPATH)
    env.pop("LD_PRELOAD", None)
    return subprocess.run([memprof.python, str(SCRIPT), *map(str, args)], env=env, cwd=memprof.tmp,
                          capture_output=True, text=True, timeout=120, **kw)


def frames(loc):
    return [(f["function"], f["line"]) for f in loc["stack"]]


@pytest.mark.parametrize("opts", [(), ("trace",), ("native",)], ids=["default", "trace", "native"])
def test_tracker_records_the_block_only(memprof, opts):
    cap = memprof.tmp / "block.memprof"
    p = plain_python(memprof, cap, *opts)
    assert p.returncode == 0, p.stderr
    out = dict(line.split(" ", 1) for line in p.stdout.splitlines())
    assert out["got_patched"] == "True" and out["got_restored"] == "True", p.stdout
    assert "already recording" in out["second_tracker"], p.stdout
    assert not (memprof.tmp / "block.memprof.other").exists()
    s = memprof.summary(cap)
    tracked = source_line(SCRIPT, "# TRACKED LINE")
    zline = source_line(SCRIPT, "# ZLIB LINE")
    leaked = s["top_leaked"]
    big = [l for l in leaked if l["function"] == "<module>" and l["line"] == tracked]
    assert big and big[0]["bytes"] == 2_000_003 and big[0]["allocations"] == 1, leaked
    # zlib's own mallocs, through libz's patched GOT, at the Python line that called it
    z = [l for l in leaked if l["line"] == zline]
    assert z and z[0]["bytes"] >= 4 * 65536, leaked
    if "native" in opts:
        names = [f["function"] for f in z[0]["stack"]]
        assert "deflateInit2_" in names, names
    # nothing from before or after the block
    t = json.loads(memprof.cmd("table", "--json", cap).stdout)
    sizes = {r["bytes"] for r in t["rows"]}
    assert 1_500_007 not in sizes and 3_000_017 not in sizes
    assert s["capture"]["truncated"] is False
    assert s["leaked"]["script_end_marked"] is True


def test_tracker_twice_in_one_process(memprof):
    cap = memprof.tmp / "one.memprof"
    p = plain_python(memprof, cap, "twice", "trace")
    assert p.returncode == 0, p.stderr
    s = memprof.summary(str(cap) + ".2")
    line = source_line(SCRIPT, "# SECOND BLOCK")
    top = [l for l in s["top_leaked"] if l["line"] == line]
    assert top and top[0]["bytes"] == 1_234_567 and top[0]["allocations"] == 1, s["top_leaked"]
    first = memprof.summary(cap)
    assert not [l for l in first["top_leaked"] if l["line"] == line]


def test_tracker_refused_under_memprof_run(memprof):
    """memprof run records the whole process already: a Tracker inside says so and creates nothing."""
    env = dict(os.environ, PYTHONPATH=PYPATH)
    p = memprof.cmd("run", "-q", "-o", "run.memprof", str(SCRIPT), memprof.tmp / "inner.memprof", env=env)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "RuntimeError: memprof: this process is already being recorded" in p.stderr
    assert not (memprof.tmp / "inner.memprof").exists()


def test_tracker_in_an_unrecorded_fork_child(memprof):
    """A child of memprof run (no --follow-fork) reuses the preloaded library for a block of its
    own: a capture with tables of its own (names and lines readable), and forking still works."""
    env = dict(os.environ, PYTHONPATH=PYPATH)
    child = memprof.tmp / "child.memprof"
    p = memprof.cmd("run", "-q", "-o", "run.memprof", str(SCRIPTS / "tracker_fork.py"), child, env=env, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == "child 0", p.stdout + p.stderr
    s = memprof.summary(child)
    line = source_line(SCRIPTS / "tracker_fork.py", "# CHILD BLOCK")
    top = [l for l in s["top_leaked"] if l["line"] == line]
    assert top and (top[0]["function"], top[0]["bytes"], top[0]["allocations"]) == ("<module>", 1_111_111, 1)
    assert s["capture"]["pid"] != memprof.summary(memprof.tmp / "run.memprof")["capture"]["pid"]


def test_tracker_bad_input(memprof):
    existing = memprof.tmp / "exists.memprof"
    existing.write_text("keep me")
    code = ("import memprof, sys\n"
            "for path, kw in ((sys.argv[1], {}), (sys.argv[2], {}), ('x.memprof', {'interval_ms': 0})):\n"
            "    try:\n"
            "        memprof.Tracker(path, **kw).start()\n"
            "    except (OSError, ValueError) as e:\n"
            "        print(type(e).__name__, e)\n")
    env = dict(os.environ, PYTHONPATH=PYPATH)
    p = subprocess.run([memprof.python, "-c", code, str(existing), str(memprof.tmp / "no" / "dir.memprof")],
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("FileExistsError memprof:") and "force=True" in lines[0]
    assert lines[1].startswith("FileNotFoundError") and "cannot create the capture" in lines[1]
    assert lines[2].startswith("ValueError memprof: interval_ms")
    assert existing.read_text() == "keep me"


def test_many_blocks_keep_memory_flat(memprof):
    """300 Tracker blocks (the pytest plugin makes one per test): the recorder's tables of each
    capture are released or reused (they once leaked about 60 KiB a block: 18 MB here), and
    keep_hooks leaves libz's GOT entries patched between blocks, then puts them back."""
    env = dict(os.environ, PYTHONPATH=PYPATH)
    env.pop("LD_PRELOAD", None)
    p = subprocess.run([memprof.python, str(SCRIPTS / "tracker_cycles.py"), str(memprof.tmp)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    out = dict(line.split(" ", 1) for line in p.stdout.splitlines())
    assert int(out["rss_growth"]) < 4 << 20, out
    assert int(out["idle_wakeups"]) <= 3, out  # the writer thread sleeps between captures (50 wake-ups before)
    assert out["kept_patched"] == "True" and out["restored"] == "True", out
    assert not list(memprof.tmp.iterdir())
