"""Runs a Python script inside a memprof.Tracker, for measuring what a Tracker costs
against `memprof run` on the same workload with ../shared/bench/compare.sh:

    PYTHONPATH=build/python ../shared/bench/compare.sh \\
        "/usr/bin/python3 bench/tracker_run.py {out}" "build/bin/memprof run -q -f -o {out}"

usage: tracker_run.py OUT script.py [args...]   (OUT is overwritten)"""
import os
import runpy
import sys

import memprof

if len(sys.argv) < 3:
    sys.exit(__doc__)
out, script = sys.argv[1], sys.argv[2]
sys.argv = sys.argv[2:]
sys.path[0] = os.path.dirname(os.path.abspath(script))
with memprof.Tracker(out, force=True):
    runpy.run_path(script, run_name="__main__")
