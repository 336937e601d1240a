"""A C program with exactly known allocations, run under LD_PRELOAD=libmemprof.so: counts and
bytes of every allocator must match to the byte, and the recorder makes no allocation itself."""
import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import CONFIG

PER_ROUND_ALLOCS = 12
PER_ROUND_BYTES = 107705
PER_ROUND_FREES = 12  # including the free half of the failed realloc
PER_ROUND_LEAK = 500


def one_cpu():
    """Runs the child on one CPU: the writer thread then gets a turn only when the program's
    threads are preempted, and the staging ring fills (recorder.c: the thread that finds it
    full encodes it)."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def run_c(memprof, rounds, threads=0, program="alloc_counts", preexec_fn=None):
    cap = memprof.tmp / f"{program}-{rounds}-{threads}.memprof"
    if cap.exists():
        cap = memprof.tmp / f"{program}-{rounds}-{threads}-1cpu.memprof"
    fd = os.open(cap, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    env = dict(os.environ, LD_PRELOAD=CONFIG["library"], MEMPROF_FD=str(fd))
    p = subprocess.run([CONFIG[program], str(rounds), str(threads)], env=env, pass_fds=(fd,), timeout=60,
                       preexec_fn=preexec_fn)
    os.close(fd)
    assert p.returncode == 0
    return memprof.summary(cap)


# 8 threads at the writer lock as fast as they can (see also test_lock_taking_turns)
@pytest.mark.parametrize("threads,n", [(0, 1000), (4, 1000), (8, 20000)])
def test_counts_and_bytes_exact(memprof, threads, n):
    base = run_c(memprof, 0, threads)
    s = run_c(memprof, n, threads)
    k = n * max(threads, 1)
    assert s["totals"]["allocations"] - base["totals"]["allocations"] == k * PER_ROUND_ALLOCS
    assert s["totals"]["allocated_bytes"] - base["totals"]["allocated_bytes"] == k * PER_ROUND_BYTES
    assert s["totals"]["frees"] - base["totals"]["frees"] == k * PER_ROUND_FREES
    assert s["at_exit"]["bytes"] - base["at_exit"]["bytes"] == k * PER_ROUND_LEAK
    assert s["at_exit"]["allocations"] - base["at_exit"]["allocations"] == k
    assert s["capture"]["tracker_allocations"] == 0
    assert not s["capture"]["python_stacks"] and not s["capture"]["truncated"]
    top = s["top_leaked"][0]
    assert top["function"] == "[no Python frame]"


@pytest.mark.parametrize("cpus", ["all", "one"])
def test_lock_taking_turns(memprof, cpus):
    # threads allocating in bursts between pauses: the writer lock's bias (recorder.c) passes
    # from thread to thread hundreds of times, each revocation racing the owner's entries;
    # every one of the 8 x 200 x 5000 malloc/free pairs must be in the capture. On one CPU the
    # staging ring of allocations and frees fills again and again (about 200 times), and the
    # thread that finds it full encodes it while the others wait at the writer lock
    pin = one_cpu if cpus == "one" else None
    base = run_c(memprof, 0, 8, "lock_turns", pin)
    s = run_c(memprof, 200, 8, "lock_turns", pin)
    assert s["totals"]["allocations"] - base["totals"]["allocations"] == 8 * 200 * 5000
    assert s["totals"]["frees"] - base["totals"]["frees"] == 8 * 200 * 5000
    assert s["at_exit"] == base["at_exit"] and not s["capture"]["truncated"]
