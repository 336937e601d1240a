"""--interval: resident memory is sampled on a clock, also while the program does nothing."""
import pytest


@pytest.mark.parametrize("ms,low,high", [(5, 40, 160), (100, 3, 10)])
def test_interval_sets_the_sampling_clock(memprof, ms, low, high):
    # 0.5 s asleep (plus start-up and exit, which a loaded machine stretches): about 100
    # samples at 5 ms, about 5 at 100 ms; a 1 ms clock would give over 500
    _, cap = memprof.run("quiet_sleep.py", flags=("--interval", str(ms)))
    s = memprof.summary(cap)
    m = s["memory_samples"]
    assert m["interval_ms"] == ms
    assert low <= m["count"] <= high, m
    assert m["rss_peak_bytes"] > 1 << 20  # a Python process holds a few MiB at least


@pytest.mark.parametrize("value", ["0", "abc", "-3", "70000", ""])
def test_bad_interval_is_refused(memprof, value):
    p = memprof.cmd("run", "--interval", value, "-c", "pass")
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "--interval" in lines[0], p.stderr
