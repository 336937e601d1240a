"""memprof's pytest plugin, driven with pytest's own pytester: the markers
(limit_memory, limit_leaks) fail exactly the tests over their limits with
the expected messages and stacks, are inert without --memprof, captures are
kept on request with known figures, and a baseline catches a grown peak.
The suite under test is scripts/plugin_suite.py (sizes known to the
byte); it runs in a subprocess of the interpreter memprof was built for."""
import json
import os

import pytest

from conftest import CONFIG, SCRIPTS, source_line

pytest_plugins = ["pytester"]

SUITE = SCRIPTS / "plugin_suite.py"  # written as test_limits.py into the pytester directory
PYPATH = os.path.join(os.path.dirname(CONFIG["bindir"]), "python")
MiB = 1 << 20
BLOCK = MiB + 33  # bytes(MiB)


@pytest.fixture
def suite(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", PYPATH)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    pytester.makepyfile(test_limits=SUITE.read_text())

    def run(*args, env=None, shell_prefix=None):
        if env:
            for k, v in env.items():
                monkeypatch.setenv(k, v)
        argv = [CONFIG["python"], "-m", "pytest", "-p", "memprof.pytest_plugin", "-p", "no:cacheprovider", "-rA",
                *map(str, args)]
        if shell_prefix:  # limits set by the shell for the run (ulimit)
            argv = ["bash", "-c", shell_prefix + 'exec "$@"', "bash", *argv]
        return pytester.run(*argv, timeout=300)
    run.path = pytester.path
    return run


def line(marker):
    return source_line(SUITE, marker)


def outcomes(result):
    """test name -> PASSED / FAILED, from -rA's short summary."""
    got = {}
    for text in result.outlines:
        for word in ("PASSED", "FAILED", "ERROR"):
            if text.startswith(word + " ") and "::" in text:
                got[text.split("::", 1)[1].split(" ", 1)[0]] = word
    return got


def test_markers_fail_the_tests_over_their_limits(suite):
    r = suite("--memprof", "-k", "not growth and not many")
    assert r.ret == 1, r.stdout.str()
    assert outcomes(r) == {"test_over_limit": "FAILED", "test_under_limit": "PASSED", "test_leaks": "FAILED",
                           "test_frees_what_it_makes": "PASSED", "test_known_leak": "PASSED"}, r.stdout.str()
    out = r.stdout.str()
    # limit_memory: the verdict, then the biggest location with its stack, ending at the test
    r.stdout.fnmatch_lines([
        "memprof: the test's peak heap was 6.0 MiB in * blocks, over its limit_memory of 4.0 MiB",
        "biggest locations at the peak:",
        f"  1. 6.0 MiB in 6 blocks at make_buffers (*test_limits.py:{line('# BUFFERS LINE')})",
        f"       make_buffers (*test_limits.py:{line('# BUFFERS LINE')})",
        f"       test_over_limit (*test_limits.py:{line('# OVER LINE')})",
    ])
    # limit_leaks: the location over the limit, with its stack
    r.stdout.fnmatch_lines([
        f"memprof: the test leaked 3.0 MiB at make_buffers (*test_limits.py:{line('# BUFFERS LINE')}), "
        "over its limit_leaks of 1.0 MiB per location (1 location over; * leaked in all)",
        "locations over the limit:",
        f"  1. 3.0 MiB in 3 blocks at make_buffers (*test_limits.py:{line('# BUFFERS LINE')})",
        "       make_buffers (*",
        f"       test_leaks (*test_limits.py:{line('# LEAK LINE')})",
    ])
    assert "pytest_plugin.py" not in out  # stacks stop at the test: what calls it is pytest
    # the end-of-session report ranks the tests by peak
    r.stdout.fnmatch_lines(["*= memprof =*", "tests by peak heap (5 of 5 profiled):",
                            "     6.0 MiB  leaked * test_limits.py::test_*_limit"])


def test_markers_do_nothing_without_memprof(suite):
    r = suite("-k", "not growth and not many")
    assert r.ret == 0, r.stdout.str()
    assert set(outcomes(r).values()) == {"PASSED"} and len(outcomes(r)) == 5, r.stdout.str()
    assert "= memprof =" not in r.stdout.str()


def test_ini_option_enables_it(suite):
    (suite.path / "pytest.ini").write_text("[pytest]\nmemprof = true\n")
    r = suite("-k", "over_limit")
    assert r.ret == 1 and outcomes(r) == {"test_over_limit": "FAILED"}, r.stdout.str()


def test_kept_captures_hold_each_tests_figures(suite, memprof):
    keep = suite.path / "captures"
    r = suite("--memprof", "--memprof-keep", keep, "test_limits.py::test_under_limit", "test_limits.py::test_leaks")
    assert r.ret == 1, r.stdout.str()
    names = {p.name.rsplit("-", 1)[0]: p.name for p in keep.iterdir()}  # the id made safe, then a hash of it
    assert sorted(names) == ["test_limits.py--test_leaks", "test_limits.py--test_under_limit"], names
    s = memprof.summary(keep / names["test_limits.py--test_under_limit"])
    top = s["top_at_peak"][0]
    assert (top["function"], top["line"], top["bytes"], top["allocations"]) == (
        "make_buffers", line("# BUFFERS LINE"), 6 * BLOCK, 6)
    assert 6 * BLOCK <= s["peak"]["bytes"] < 6 * BLOCK + MiB + 4096  # a pymalloc arena at most besides
    assert [f["function"] for f in top["stack"][:2]] == ["make_buffers", "test_under_limit"]
    assert s["leaked"]["bytes"] < 64 * 1024  # the buffers were freed in the test
    leaks = memprof.summary(keep / names["test_limits.py--test_leaks"])
    assert leaks["capture"]["python_allocators"]  # limit_leaks records every object
    lk = leaks["top_leaked"][0]
    assert (lk["function"], lk["line"], lk["bytes"], lk["allocations"]) == (
        "make_buffers", line("# BUFFERS LINE"), 3 * BLOCK, 3)
    r.stdout.fnmatch_lines([f"capture: {keep}/{names['test_limits.py--test_leaks']}"])


def test_baseline_catches_a_grown_peak(suite):
    base = suite.path / "baseline.json"
    r = suite("--memprof", "-k", "growth", "--memprof-save-baseline", base, env={"GROWTH_MIB": "2"})
    assert r.ret == 0, r.stdout.str()
    saved = json.loads(base.read_text())
    peak = saved["tests"]["test_limits.py::test_growth"]["peak_bytes"]
    assert saved["memprof_baseline"] == 1 and 2 * BLOCK <= peak < 2 * BLOCK + MiB + 4096, saved
    r.stdout.fnmatch_lines([f"memprof: baseline written to {base}: 1 tests updated, 0 kept from before"])
    # the same peak passes; 4 MiB instead of 2 is +100%: over the default 10%
    assert suite("--memprof", "-k", "growth", "--memprof-baseline", base).ret == 0
    r = suite("--memprof", "-k", "growth", "--memprof-baseline", base, env={"GROWTH_MIB": "4"})
    assert r.ret == 1 and outcomes(r) == {"test_growth": "FAILED"}, r.stdout.str()
    r.stdout.fnmatch_lines([
        f"memprof: the test's peak heap grew from * to * (+*%, *), more than --memprof-max-growth 10% over {base}",
        "biggest locations at the peak:",
        f"  1. 4.0 MiB in 4 blocks at make_buffers (*test_limits.py:{line('# BUFFERS LINE')})",
    ])
    # a test that fails keeps its old figures in a baseline saved to the same file (no ratchet
    # on a regression); one that passes updates its own and keeps the others'
    r = suite("--memprof", "-k", "growth", "--memprof-baseline", base, "--memprof-save-baseline", base,
              env={"GROWTH_MIB": "4"})
    assert r.ret == 1 and json.loads(base.read_text()) == saved, r.stdout.str()
    r.stdout.fnmatch_lines([f"memprof: baseline written to {base}: 0 tests updated, 1 kept from before"])
    r = suite("--memprof", "test_limits.py::test_under_limit", "--memprof-save-baseline", base)
    assert r.ret == 0, r.stdout.str()
    merged = json.loads(base.read_text())["tests"]
    assert merged["test_limits.py::test_growth"] == saved["tests"]["test_limits.py::test_growth"]
    assert merged["test_limits.py::test_under_limit"]["peak_bytes"] >= 6 * BLOCK
    # a looser threshold, or a floor above the growth, lets it pass
    assert suite("--memprof", "-k", "growth", "--memprof-baseline", base, "--memprof-max-growth", "150%",
                 env={"GROWTH_MIB": "4"}).ret == 0
    assert suite("--memprof", "-k", "growth", "--memprof-baseline", base, "--memprof-growth-floor", "3MiB",
                 env={"GROWTH_MIB": "4"}).ret == 0


@pytest.mark.parametrize("args, message", [
    (("--memprof-baseline", "missing.json"), "memprof: --memprof-baseline missing.json: no such file; write one "
                                             "with --memprof-save-baseline missing.json"),
    (("--memprof-baseline", "test_limits.py"), "memprof: --memprof-baseline test_limits.py: cannot read it *"),
    (("--memprof", "--memprof-max-growth", "lots"), "memprof: --memprof-max-growth 'lots' is not a percentage*"),
    (("--memprof", "--memprof-growth-floor", "12 XB"), "memprof: --memprof-growth-floor '12 XB' is not a size*"),
    (("--memprof", "--memprof-keep", "test_limits.py"), "memprof: --memprof-keep test_limits.py: cannot create*"),
    (("--memprof", "--memprof-report", "-1"), "memprof: --memprof-report needs a count of at least 0, not -1"),
    (("--memprof-save-baseline", "test_limits.py"), "memprof: --memprof-save-baseline test_limits.py: cannot read "
                                                    "it *; remove it or write it again*"),
], ids=["missing-baseline", "bad-baseline", "bad-growth", "bad-floor", "keep-not-a-dir", "bad-count",
        "save-over-another-file"])
def test_bad_options_are_usage_errors(suite, args, message):
    r = suite(*args, "-k", "under_limit")
    assert r.ret == 4, r.stdout.str() + r.stderr.str()  # pytest's usage error
    r.stderr.fnmatch_lines(["*" + message])
    assert "Traceback" not in r.stderr.str()


def test_a_cut_short_capture_fails_the_test(suite):
    """A capture that could not be written whole (here a 64 KiB file size limit; in life a full
    disk or /dev/shm) must not pass a test on what was not recorded."""
    r = suite("--memprof", "-k", "many", shell_prefix="ulimit -f 64; ")
    assert r.ret == 1 and outcomes(r) == {"test_many_allocations": "FAILED"}, r.stdout.str() + r.stderr.str()
    r.stdout.fnmatch_lines(["memprof: the capture of this test was cut short (recording stopped*), so its "
                            "figures are incomplete; give the captures room with MEMPROF_PYTEST_TMPDIR*"])
    r.stdout.fnmatch_lines(["memprof: cannot write the capture, recording stopped: File too large"])  # why
    assert "tests by peak heap" not in r.stdout.str()  # its figures are in no report


def test_a_bad_marker_fails_its_test_only(suite):
    (suite.path / "test_bad.py").write_text(
        "import pytest\n\n@pytest.mark.limit_memory('12 XB')\ndef test_bad():\n    pass\n\n"
        "@pytest.mark.limit_leaks('1 MB', warmups=2)\ndef test_unknown_keyword():\n    pass\n\n"
        "def test_fine():\n    pass\n")
    r = suite("--memprof", "test_bad.py")
    assert r.ret == 1 and outcomes(r) == {"test_bad": "FAILED", "test_unknown_keyword": "FAILED",
                                          "test_fine": "PASSED"}, r.stdout.str()
    r.stdout.fnmatch_lines(["*memprof: limit_memory '12 XB' is not a size*"])
    r.stdout.fnmatch_lines(["*memprof: write limit_leaks('1 MB', filter_fn=None): one size; warmups is not supported"])


def test_refused_under_memprof_run(suite, memprof):
    p = memprof.cmd("run", "-q", "-o", suite.path / "run.memprof", "-m", "pytest", "-p", "memprof.pytest_plugin",
                    "--memprof", "-k", "under_limit", cwd=suite.path)
    assert p.returncode == 4, p.stdout + p.stderr
    assert "memprof: this process is already being recorded (pytest runs under memprof run" in p.stderr
