"""`memprof flamegraph` and `memprof table` on real captures with known answers: the page's
embedded data (exact whole-run figures, and intervals that give the same answers for a range),
the table's rows, and bad input."""
import json
import os
import re

from conftest import script_line

MiB = 1 << 20


def fg_data(memprof, cap, *extra):
    p = memprof.cmd("flamegraph", "--json", *extra, cap)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def node_ids(d, function, line=None):
    """Output nodes whose frame is `function` (at `line`)."""
    fr, st = d["frames"], d["strings"]
    return [n for n, f in enumerate(d["nodes"]["frame"])
            if st[fr["function"][f]] == function and (line is None or fr["line"][f] == line)]


def at_nodes(rows, nodes):
    """(bytes, count) of the rows (sites or intervals) at those nodes."""
    keep = [i for i, n in enumerate(rows["node"]) if n in nodes]
    return sum(rows["bytes"][i] for i in keep), sum(rows["count"][i] for i in keep)


def live_at(d, p, nodes=None):
    """Peak-mode intervals live at the end of bucket p, as the page computes them."""
    iv = d["intervals"]
    b = c = 0
    for i in range(len(iv["node"])):
        if (nodes is None or iv["node"][i] in nodes) and iv["a"][i] <= p and (iv["f"][i] == -1 or iv["f"][i] > p):
            b += iv["bytes"][i]
            c += iv["count"][i]
    return b, c


def check_tree(d):
    """Every node's parent comes before it; frames and strings are in range."""
    par = d["nodes"]["parent"]
    assert par[0] == -1 and all(0 <= p < i for i, p in enumerate(par) if i)
    assert max(d["frames"]["function"]) < len(d["strings"])
    assert all(0 <= n < len(par) for n in d["sites"]["node"] + d["intervals"]["node"])


def test_flamegraph_peak_known_figures(memprof):
    # sampled every millisecond: the 96 MiB phase spans buckets, so a range can see it
    _, cap = memprof.run("peak_buffers.py", flags=("--interval", "1"))
    d = fg_data(memprof, cap)
    check_tree(d)
    assert d["version"] == 1 and d["mode"] == "peak" and "peak_buffers.py" in d["title"]
    assert 96 * MiB <= d["total"]["bytes"] < 104 * MiB
    # the sites add up to the total: what the whole-run flamegraph shows is the peak
    assert sum(d["sites"]["bytes"]) == d["total"]["bytes"]
    assert sum(d["sites"]["count"]) == d["total"]["allocations"]
    hold = node_ids(d, "hold", script_line("peak_buffers.py", "PEAK-LINE"))
    assert len(hold) == 1
    assert at_nodes(d["sites"], hold) == (96 * MiB, 12)
    assert [t["id"] for t in d["threads"]] == [1]
    # the chart: one point per bucket, the highest heap reaching the peak
    ch = d["chart"]
    assert len(ch["heap"]) == len(ch["rss"]) and max(ch["heap"]) == d["total"]["bytes"]
    assert 0.001 <= ch["bucket_s"] < 0.01
    assert any(r for r in ch["rss"])
    # a range: at the end of its highest bucket, hold holds its 12 buffers
    best = max(range(len(ch["heap"])), key=lambda p: (live_at(d, p)[0], -p))
    assert live_at(d, best, set(hold)) == (96 * MiB, 12)
    assert d["end_bucket"] is not None and best <= d["end_bucket"]


def test_flamegraph_leaks_and_temporary(memprof):
    _, cap = memprof.run("leak.py", flags=("--interval", "1"))
    d = fg_data(memprof, cap, "--leaks")
    check_tree(d)
    assert d["mode"] == "leaks" and sum(d["sites"]["bytes"]) == d["total"]["bytes"]
    small = node_ids(d, "leak_small", script_line("leak.py", "LEAK-SMALL"))
    large = node_ids(d, "leak_large", script_line("leak.py", "LEAK-LARGE"))
    assert at_nodes(d["sites"], small) == (100 * 4096, 100)
    assert at_nodes(d["sites"], large) == (3 * MiB, 3)
    # leaks mode keeps only intervals still live at the end; over the whole run they are the leaks
    assert set(d["intervals"]["f"]) == {-1}
    assert at_nodes(d["intervals"], small) == (100 * 4096, 100)
    assert at_nodes(d["intervals"], large) == (3 * MiB, 3)
    # not_leaked's 500 blocks per call are freed: not a leak
    assert at_nodes(d["sites"], node_ids(d, "not_leaked")) == (0, 0)

    _, cap = memprof.run("peak_buffers.py", out="pb.memprof")
    t = fg_data(memprof, cap, "--temporary")
    churn = node_ids(t, "churn")
    # churn's 100 buffers of 2 MiB are each freed before the next allocation
    b, c = at_nodes(t["sites"], churn)
    assert c >= 100 and b >= 100 * 2 * MiB
    # of hold's 12 buffers, only the last can be freed before the thread's next allocation
    assert at_nodes(t["sites"], node_ids(t, "hold")) in ((0, 0), (8 * MiB, 1))
    assert sum(t["intervals"]["bytes"]) == t["total"]["bytes"]
    # a looser threshold counts more, and as stats counts
    wide = fg_data(memprof, cap, "--temporary", "--temporary-threshold", "20")
    st = json.loads(memprof.cmd("stats", "--json", "--temporary-threshold", "20", cap).stdout)
    assert wide["total"]["allocations"] > t["total"]["allocations"]
    assert wide["total"] == {"bytes": st["temporary"]["bytes"], "allocations": st["temporary"]["allocations"]}


def test_flamegraph_merges_small_stacks(memprof):
    _, cap = memprof.run("peak_buffers.py")
    full = fg_data(memprof, cap, "--merge-below", "0")
    small = fg_data(memprof, cap, "--merge-below", "5")
    assert 3 <= len(small["nodes"]["parent"]) < len(full["nodes"]["parent"])
    merged = [i for i, k in enumerate(small["frames"]["kind"]) if k == 3]
    assert merged and all(re.fullmatch(r"\(\d+ smaller\)", small["strings"][small["frames"]["function"][i]])
                          for i in merged)
    assert full["frames"]["kind"].count(3) == 0
    # merging moves bytes, never loses them
    assert sum(small["sites"]["bytes"]) == sum(full["sites"]["bytes"]) == full["total"]["bytes"]
    assert at_nodes(small["sites"], node_ids(small, "hold")) == (96 * MiB, 12)


def test_flamegraph_page_is_self_contained(memprof):
    _, cap = memprof.run("peak_buffers.py")
    p = memprof.cmd("flamegraph", cap)
    assert p.returncode == 0, p.stderr
    page = cap.with_name("capture.flamegraph.html")
    assert f"wrote {page}" in p.stdout
    html = page.read_text()
    assert "/*MEMPROF:" not in html
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=|@import|url\(http", html, re.I)
    assert "default-src 'none'" in html
    m = re.search(r"window\.MEMPROF_DATA = (.*?);</script>", html, re.S)
    d = json.loads(m.group(1))
    assert d == fg_data(memprof, cap)  # the page carries what --json prints
    assert len(html) < 1024 * 1024


def test_table_known_rows(memprof):
    _, cap = memprof.run("peak_buffers.py")
    p = memprof.cmd("table", "--json", cap)
    assert p.returncode == 0, p.stderr
    t = json.loads(p.stdout)
    assert t["at"] == "peak" and sum(r["bytes"] for r in t["rows"]) == t["total"]["bytes"]
    line = script_line("peak_buffers.py", "PEAK-LINE")
    top = t["rows"][0]
    assert (top["bytes"], top["allocations"], top["allocator"], top["thread"]) == (96 * MiB, 12, "malloc", 1)
    assert top["location"] == f"hold (peak_buffers.py:{line})"
    assert top["stack"][0]["function"] == "hold" and top["stack"][1]["function"] == "main"
    assert [r["bytes"] for r in t["rows"]] == sorted((r["bytes"] for r in t["rows"]), reverse=True)
    by_count = json.loads(memprof.cmd("table", "--json", "--sort", "count", cap).stdout)["rows"]
    assert [r["allocations"] for r in by_count] == sorted((r["allocations"] for r in by_count), reverse=True)
    by_alloc = json.loads(memprof.cmd("table", "--json", "--sort", "allocator", cap).stdout)["rows"]
    assert [r["allocator"] for r in by_alloc] == sorted(r["allocator"] for r in by_alloc)

    _, cap = memprof.run("leak.py", out="leak.memprof")
    t = json.loads(memprof.cmd("table", "--json", "--leaks", cap).stdout)
    assert t["at"] == "script_end"
    rows = {r["location"]: (r["bytes"], r["allocations"]) for r in t["rows"]}
    assert rows[f"leak_small (leak.py:{script_line('leak.py', 'LEAK-SMALL')})"] == (100 * 4096, 100)
    assert rows[f"leak_large (leak.py:{script_line('leak.py', 'LEAK-LARGE')})"] == (3 * MiB, 3)

    text = memprof.cmd("table", "--leaks", "--top", "5", cap)
    lines = text.stdout.splitlines()
    assert text.returncode == 0 and "\x1b[" not in text.stdout
    assert max(len(l) for l in lines if not l.startswith("capture ")) <= 80
    assert any("3.0 MiB" in l and "leak_large" in l for l in lines)
    assert lines[-1].startswith("... ") and "more sites" in lines[-1]


def test_table_html_page(memprof):
    _, cap = memprof.run("leak.py")
    p = memprof.cmd("table", "--leaks", "-o", "t.html", cap)
    assert p.returncode == 0, p.stderr
    html = (memprof.tmp / "t.html").read_text()
    m = re.search(r"window\.MEMPROF_TABLE = (.*?);</script>", html, re.S)
    d = json.loads(m.group(1))
    s = d["strings"]
    small = [r for r in d["rows"] if s[r[4]].startswith("leak_small ")]
    assert [(r[0], r[1], s[r[2]], r[3]) for r in small] == [(100 * 4096, 100, "malloc", 1)]
    assert s[small[0][5][0]].startswith("leak_small  ") and s[small[0][5][1]].startswith("main  ")
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=", html, re.I)


def test_pages_bad_input(memprof, tmp_path):
    _, cap = memprof.run("leak.py")
    page = tmp_path / "mine.html"
    page.write_text("the user's own file")
    for args, word in ((("flamegraph", "-o", page), "already exists"),
                       (("table", "-o", page), "already exists"),
                       (("flamegraph", "--leaks", "--temporary"), "choose one"),
                       (("flamegraph", "--merge-below", "200"), "--merge-below"),
                       (("flamegraph", "-o", tmp_path / "no" / "dir" / "x.html"), "cannot create"),
                       (("table", "--sort", "size"), "--sort"),
                       (("table", "--json", "--html"), "choose one")):
        p = memprof.cmd(*args, cap)
        assert p.returncode == 2 and word in p.stderr and len(p.stderr.strip().splitlines()) == 1, (args, p.stderr)
    assert page.read_text() == "the user's own file"
    p = memprof.cmd("flamegraph", "--force", "-o", page, cap)
    assert p.returncode == 0 and page.read_text().startswith("<!DOCTYPE html>")
    mask = os.umask(0)
    os.umask(mask)
    assert page.stat().st_mode & 0o777 == 0o644 & ~mask  # as a new file would be, not the temporary's 0600
    assert not list(tmp_path.glob("mine.html.*"))  # no temporary file left
    for prog in ("flamegraph", "table"):
        p = memprof.cmd(prog, tmp_path / "nope.memprof")
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "nope.memprof" in p.stderr
