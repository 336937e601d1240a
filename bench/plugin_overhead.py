"""What the pytest plugin adds to the wall time of a suite: runs `pytest SUITE` and
`pytest SUITE --memprof` interleaved PAIRS times (after one warm-up pair) and prints the
median of each and the median of the per-pair ratios.

    PYTHONPATH=build/python /usr/bin/python3 bench/plugin_overhead.py [SUITE] [PAIRS]

SUITE defaults to bench/pytest_suite; the plugin is loaded with -p memprof.pytest_plugin
(so PYTHONPATH must reach the package, or memprof be installed)."""
import os
import statistics
import subprocess
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
suite = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "pytest_suite")
pairs = int(sys.argv[2]) if len(sys.argv) > 2 else 7
base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "memprof.pytest_plugin", suite]


def timed(argv):
    """(wall seconds, CPU seconds: user + system of the run)"""
    before = os.times()
    t = time.perf_counter()
    p = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    after = os.times()
    if p.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr}")
    return wall, (after.children_user - before.children_user) + (after.children_system - before.children_system)


plain, prof = [], []
for i in range(pairs + 1):
    a, b = timed(base), timed(base + ["--memprof", "--memprof-report", "0"])
    if i:
        plain.append(a)
        prof.append(b)
for what, k in (("wall", 0), ("cpu", 1)):
    ratios = [b[k] / a[k] for a, b in zip(plain, prof)]
    print(f"{what}: pytest {statistics.median(a[k] for a in plain):.3f} s, with --memprof "
          f"{statistics.median(b[k] for b in prof):.3f} s: x{statistics.median(ratios):.3f} "
          f"(median of {pairs} interleaved pairs; min-max x{min(ratios):.3f}-x{max(ratios):.3f})")
