"""memprof export: folded, csv, speedscope and pprof from a capture of workloads/leaky.py
(17,891,328 bytes leaked at leak_small, leak_medium and leak_large), each checked against the
summary's figures: the sums per stack equal the peak (and, with --leaks, what leaked), and
go tool pprof reads the pprof export with the leaking functions' exact bytes."""
import csv
import gzip
import io
import json
import os
import shutil
import subprocess

import pytest

MiB = 1 << 20


@pytest.fixture(scope="module")
def leaky(tmp_path_factory):
    from conftest import CONFIG, SCRIPTS
    d = tmp_path_factory.mktemp("export")
    cap = d / "leaky.memprof"
    p = subprocess.run([os.path.join(CONFIG["bindir"], "memprof"), "run", "-q", "-o", str(cap),
                        str(SCRIPTS / "workloads" / "leaky.py"), "3000"], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, PYTHONHASHSEED="0"))
    assert p.returncode == 0, p.stderr
    return cap


def export(memprof, cap, fmt, *args):
    p = memprof.cmd("export", "--format", fmt, "-o", "-", *args, cap)
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_folded_sums_to_the_peak_and_the_leaks(memprof, leaky):
    s = memprof.summary(leaky)
    for args, want in (((), s["peak"]["bytes"]), (("--leaks",), s["leaked"]["bytes"])):
        lines = export(memprof, leaky, "folded", *args).splitlines()
        assert sum(int(l.rsplit(" ", 1)[1]) for l in lines) == want
    leaks = export(memprof, leaky, "folded", "--leaks").splitlines()
    small = [l for l in leaks if l.rsplit(" ", 1)[0].split(";")[-1].startswith("leak_small (")]  # the leaf
    assert sum(int(l.rsplit(" ", 1)[1]) for l in small) == 2000 * 4096, small
    assert all(l.split(";")[0].startswith("<module> (") for l in small)  # root first


def test_csv_rows_sum_to_the_summary(memprof, leaky):
    s = memprof.summary(leaky)
    rows = list(csv.DictReader(io.StringIO(export(memprof, leaky, "csv"))))
    assert sum(int(r["bytes_at_peak"]) for r in rows) == s["peak"]["bytes"]
    assert sum(int(r["bytes_leaked"]) for r in rows) == s["leaked"]["bytes"]
    assert sum(int(r["allocations"]) for r in rows) == s["totals"]["allocations"]
    large = [r for r in rows if r["function"] == "leak_large"]
    assert sum(int(r["bytes_leaked"]) for r in large) == 3 * MiB
    assert large[0]["stack"].startswith("leak_large (") and " <- main (" in large[0]["stack"]


def test_speedscope_file_format(memprof, leaky):
    s = memprof.summary(leaky)
    d = json.loads(export(memprof, leaky, "speedscope"))
    # the schema's required fields (https://www.speedscope.app/file-format-schema.json)
    assert d["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    assert isinstance(d["shared"]["frames"], list) and all("name" in f for f in d["shared"]["frames"])
    (prof,) = d["profiles"]
    for key in ("type", "name", "unit", "startValue", "endValue", "samples", "weights"):
        assert key in prof
    assert prof["type"] == "sampled" and prof["unit"] == "bytes"
    assert len(prof["samples"]) == len(prof["weights"]) and sum(prof["weights"]) == s["peak"]["bytes"]
    assert prof["endValue"] == sum(prof["weights"])
    nframes = len(d["shared"]["frames"])
    assert all(0 <= i < nframes for sample in prof["samples"] for i in sample)


def test_pprof_read_by_go_tool_pprof(memprof, leaky, tmp_path):
    out = tmp_path / "leaks.pb.gz"
    p = memprof.cmd("export", "--format", "pprof", "--leaks", "-o", out, leaky)
    assert p.returncode == 0, p.stderr
    assert gzip.decompress(out.read_bytes())[:2] == b"\x0a\x04"  # field 1 (sample_type): a 4-byte ValueType
    go = shutil.which("go") or next((g for g in ("/usr/lib/go/bin/go", "/usr/local/go/bin/go")
                                     if os.access(g, os.X_OK)), None)
    if not go:
        pytest.skip("go tool pprof is not installed: apt-get install golang-go (.ci/deps --tests tries to) "
                    "to run this check")
    r = subprocess.run([go, "tool", "pprof", "-top", "-unit=B", "-sample_index=inuse_space", str(out)],
                       capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, HOME=str(tmp_path), GOCACHE=str(tmp_path / "gocache")))
    assert r.returncode == 0, r.stderr
    flat = {l.split()[-1]: l.split()[0] for l in r.stdout.splitlines() if l.strip().endswith(
        ("leak_small", "leak_medium", "leak_large"))}
    assert flat["leak_small"] == "8192000B" and flat["leak_large"] == "3145728B", r.stdout
    assert int(flat["leak_medium"].rstrip("B")) >= 100 * 65536
    assert " <module>\n" in r.stdout  # not cut to "<unknown>" as a C++ template


def test_export_errors(memprof, leaky, tmp_path):
    for args, msg in ((["--format", "svg", leaky], "unknown format 'svg'"),
                      ([leaky], "which format?"),
                      (["--format", "csv", tmp_path / "none.memprof"], "No such file"),
                      (["--format", "csv", "--json", leaky], "--json does not apply")):
        p = memprof.cmd("export", *args)
        assert p.returncode == 2 and msg in p.stderr, (args, p.stderr)
    target = tmp_path / "kept.csv"
    target.write_text("mine")
    p = memprof.cmd("export", "--format", "csv", "-o", target, leaky)
    assert p.returncode == 2 and "already exists" in p.stderr and target.read_text() == "mine"
