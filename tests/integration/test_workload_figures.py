"""The benchmark workloads' known figures in every report (scripts/workloads/ are copies of the
workloads memprof is measured with, run small): big_buffers holds 96 MiB in 12 malloc(8 MiB) at
its peak, at make() called from peak_phase's list comprehension; leaky leaks 2000 x 4096 at
leak_small, 100 x 65536 at leak_medium and 3 x 1 MiB at leak_large, 17,891,328 bytes.

A list that grows as leaky appends to it is also live at the end: its array belongs to whichever
leak_* call made the list grow last, through realloc. Reports by allocator (table) see the
leaks exactly; reports by stack see that array beside them, which the checks allow for."""
import json

import pytest

from conftest import SCRIPTS, source_line

MiB = 1 << 20
BIG = "workloads/big_buffers.py"
LEAKY = "workloads/leaky.py"
LEAKS = {"leak_small": (4096, 2000), "leak_medium": (65536, 100), "leak_large": (MiB, 3)}


def line_of(script, text):
    return source_line(SCRIPTS / script, text)


def report(memprof, *args):
    p = memprof.cmd(*args)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.fixture
def big(memprof):
    _, cap = memprof.run(BIG, "20", out="big.memprof")
    return cap


@pytest.fixture
def leaky(memprof):
    _, cap = memprof.run(LEAKY, "3000", out="leaky.memprof")
    return cap


def make_line():
    return line_of(BIG, "return bytes((fill,)) * (size - HDR)")


def leak_line(fn):
    size = {"leak_small": "(4096 - HDR)", "leak_medium": "(65536 - HDR)", "leak_large": "((1 << 20) - HDR)"}[fn]
    return line_of(LEAKY, f"LEAKED.append(bytes((i & 0xFF,)) * {size})")


def test_big_buffers_peak_everywhere(memprof, big):
    line = make_line()
    where = f"make (big_buffers.py:{line})"
    # table: the site at the peak, one allocator, one thread
    t = report(memprof, "table", "--json", big)
    top = t["rows"][0]
    assert (top["bytes"], top["allocations"], top["allocator"], top["location"]) == (96 * MiB, 12, "malloc", where)
    assert [f["function"] for f in top["stack"][:3]] == ["make", "peak_phase.<locals>.<listcomp>", "peak_phase"]
    # tree: the path down to make holds exactly the 12 buffers
    tree = report(memprof, "tree", "--json", big)
    node = {"children": tree["tree"]}
    for fn in ("<module>", "main", "peak_phase", "peak_phase.<locals>.<listcomp>", "make"):
        (node,) = [c for c in node["children"] if c["function"] == fn]
    assert (node["line"], node["bytes"], node["allocations"]) == (line, 96 * MiB, 12)
    # stats: the peak holds them (and some of the interpreter's own: builds differ in how much)
    s = report(memprof, "stats", "--json", big)
    assert 96 * MiB <= s["peak"]["bytes"] < 128 * MiB and s["peak"]["bytes"] == tree["total"]["bytes"]
    # leaks: the buffers were all freed
    lk = report(memprof, "leaks", "--json", "--top", "1000", big)
    assert not [x for x in lk["stacks"] if x["stack"][0]["function"] == "make"]
    # the flamegraph's data: make's node, and a range over the whole run finding the same peak
    d = report(memprof, "flamegraph", "--json", big)
    fr, st = d["frames"], d["strings"]
    nodes = [n for n, f in enumerate(d["nodes"]["frame"])
             if st[fr["function"][f]] == "make" and fr["line"][f] == line
             and st[fr["function"][d["nodes"]["frame"][d["nodes"]["parent"][n]]]] == "peak_phase.<locals>.<listcomp>"]
    assert len(nodes) == 1
    sites = [i for i, n in enumerate(d["sites"]["node"]) if n == nodes[0]]
    assert [(d["sites"]["bytes"][i], d["sites"]["count"][i]) for i in sites] == [(96 * MiB, 12)]
    iv = d["intervals"]
    live = [0] * len(d["chart"]["heap"])
    for i in range(len(iv["node"])):
        for p in range(iv["a"][i], iv["f"][i] if iv["f"][i] >= 0 else len(live)):
            live[p] += iv["bytes"][i]
    assert max(live) == d["total"]["bytes"] == max(d["chart"]["heap"])


def test_leaky_leaks_everywhere(memprof, leaky):
    # table, by allocator: each leak exactly
    t = report(memprof, "table", "--json", "--leaks", leaky)
    assert t["at"] == "script_end"
    rows = {(r["location"], r["allocator"]): (r["bytes"], r["allocations"]) for r in t["rows"]}
    for fn, (size, n) in LEAKS.items():
        assert rows[(f"{fn} (leaky.py:{leak_line(fn)})", "malloc")] == (size * n, n), fn
    assert sum(size * n for size, n in LEAKS.values()) == 17_891_328

    def close(fn, got_bytes, got_count):
        size, n = LEAKS[fn]
        extra = got_bytes - size * n  # the list's array, if its last growth was here
        assert got_count in (n, n + 1) and 0 <= extra < 32 * 1024 and (extra == 0) == (got_count == n), fn

    # leaks, by stack, biggest first
    lk = report(memprof, "leaks", "--json", "--top", "1000", leaky)
    by_fn = {x["stack"][0]["function"]: x for x in lk["stacks"] if x["stack"][0]["function"] in LEAKS}
    for fn in LEAKS:
        x = by_fn[fn]
        assert x["stack"][0]["line"] == leak_line(fn) and x["stack"][1]["function"] == "main"
        close(fn, x["bytes"], x["allocations"])
    assert [x["stack"][0]["function"] for x in lk["stacks"][:3]] == ["leak_small", "leak_medium", "leak_large"]
    # tree of leaks
    tree = report(memprof, "tree", "--json", "--leaks", "--cut", "0", leaky)
    call = line_of(LEAKY, "funcs[name](i)")  # main's line calling the leak_* functions
    (main,) = [c for m in tree["tree"] if m["function"] == "<module>" and m["file"].endswith("leaky.py")
               for c in m["children"] if c["function"] == "main" and c["line"] == call]
    for fn in LEAKS:
        (node,) = [c for c in main["children"] if c["function"] == fn]
        assert node["line"] == leak_line(fn)
        close(fn, node["bytes"], node["allocations"])
    # stats: every leaked byte was allocated at those lines (their totals include the leaks)
    s = report(memprof, "stats", "--json", "--top", "50", leaky)
    top = {(l["function"], l["line"]): (l["bytes"], l["allocations"]) for l in s["top_by_bytes"]}
    for fn, (size, n) in LEAKS.items():
        b, c = top[(fn, leak_line(fn))]
        assert b >= size * n and c >= n, fn
    assert s["leaked"]["bytes"] >= 17_891_328
    # the flamegraph's leaks data
    d = report(memprof, "flamegraph", "--json", "--leaks", leaky)
    fr, st = d["frames"], d["strings"]
    for fn in LEAKS:
        nodes = [n for n, f in enumerate(d["nodes"]["frame"])
                 if st[fr["function"][f]] == fn and fr["line"][f] == leak_line(fn)]
        keep = [i for i, n in enumerate(d["sites"]["node"]) if n in nodes]
        close(fn, sum(d["sites"]["bytes"][i] for i in keep), sum(d["sites"]["count"][i] for i in keep))
        keep = [i for i, n in enumerate(d["intervals"]["node"]) if n in nodes]
        close(fn, sum(d["intervals"]["bytes"][i] for i in keep), sum(d["intervals"]["count"][i] for i in keep))
