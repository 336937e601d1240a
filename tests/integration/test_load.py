"""memprof.load(): a capture's summary as Python objects, with the same figures as
`memprof summary --json`, on workloads/leaky.py (17,891,328 bytes leaked at three named
functions); and its errors."""
import json
import os
import subprocess

from conftest import CONFIG, SCRIPTS, source_line

PYPATH = os.path.join(os.path.dirname(CONFIG["bindir"]), "python")
LEAKY = SCRIPTS / "workloads" / "leaky.py"


def load(memprof, path, top):
    env = dict(os.environ, PYTHONPATH=PYPATH)
    env.pop("LD_PRELOAD", None)
    p = subprocess.run([memprof.python, str(SCRIPTS / "load_summary.py"), str(path), str(top)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_load_leaky(memprof):
    _, cap = memprof.run("workloads/leaky.py", "3000", env=dict(os.environ, PYTHONHASHSEED="0"))
    cli = memprof.summary(cap)
    d = load(memprof, cap, 3)
    assert d["leaked"] == [cli["leaked"]["bytes"], cli["leaked"]["allocations"]]
    assert d["peak"] == [cli["peak"]["bytes"], cli["peak"]["allocations"]]
    assert d["at_exit"] == [cli["at_exit"]["bytes"], cli["at_exit"]["allocations"]]
    assert (d["allocations"], d["frees"], d["allocated_bytes"]) == (
        cli["totals"]["allocations"], cli["totals"]["frees"], cli["totals"]["allocated_bytes"])
    assert 17_891_328 <= d["leaked"][0] < 17_891_328 + 8 * 2**20
    assert d["argv"][1:] == [str(LEAKY), "3000"] and d["truncated"] is False and d["same_as_cli"]
    assert len(d["threads"]) == 1 and "malloc" in d["allocators"] and d["warnings"] == []
    # the three leak sites, heaviest first, each with its line and stack
    top = [(l["function"], l["bytes"], l["allocations"]) for l in d["top_leaked"]]
    assert top == [("leak_small", 8_192_000, 2000), ("leak_medium", top[1][1], top[1][2]),
                   ("leak_large", 3 * 2**20, 3)], top
    assert 100 * 65536 <= top[1][1] < 100 * 65536 + 65536  # and the array of the list holding them
    small = d["top_leaked"][0]
    line = source_line(LEAKY, "LEAKED.append(bytes((i & 0xFF,)) * (4096 - HDR))")
    assert (small["file"], small["line"], small["stacks"], small["native"]) == (str(LEAKY), line, 1, False)
    assert [f[0] for f in small["stack"]] == ["leak_small", "main", "<module>"]
    assert small["stack"][0] == ["leak_small", str(LEAKY), line]
    assert d["str"] == f"leak_small ({LEAKY}:{line})"
    assert d["sizes"] == [24 << 20, 512 << 10, 3 << 29, 4096]
    missing, not_capture, bad_unit, negative, not_text = d["errors"]
    assert missing == ["FileNotFoundError", f"memprof: cannot open {cap}.missing: No such file or directory"]
    assert not_capture == ["ValueError", f"memprof: {SCRIPTS / 'load_summary.py'}: not a memprof capture (bad magic)"]
    assert bad_unit[0] == "ValueError" and bad_unit[1].startswith("memprof: '12 XB' is not a size")
    assert negative[0] == "ValueError" and not_text[0] == "ValueError"


def test_load_text_that_is_not_utf8(memprof):
    """A capture's text is UTF-8 when Python wrote it, but argv and native paths can hold any
    bytes: load() keeps them as surrogates (as os.fsdecode does) instead of failing."""
    _, cap = memprof.run("sized.py", b"caf\xe9".decode("utf-8", "surrogateescape"))
    d = load(memprof, cap, 1)
    assert d["argv"][-1] == "caf\udce9", d["argv"]
    assert (d["top_leaked"][0]["function"], d["top_leaked"][0]["bytes"]) == ("<module>", 7_000_003)
