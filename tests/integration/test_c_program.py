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


def run_c(memprof, rounds, threads=0, program="alloc_counts"):
    cap = memprof.tmp / f"{program}-{rounds}-{threads}.memprof"
    fd = os.open(cap, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    env = dict(os.environ, LD_PRELOAD=CONFIG["library"], MEMPROF_FD=str(fd))
    p = subprocess.run([CONFIG[program], str(rounds), str(threads)], env=env, pass_fds=(fd,), timeout=60)
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


def test_lock_taking_turns(memprof):
    # threads allocating in bursts between pauses: the writer lock's bias (recorder.c) passes
    # from thread to thread hundreds of times, each revocation racing the owner's entries;
    # every one of the 8 x 200 x 5000 malloc/free pairs must be in the capture
    base = run_c(memprof, 0, 8, "lock_turns")
    s = run_c(memprof, 200, 8, "lock_turns")
    assert s["totals"]["allocations"] - base["totals"]["allocations"] == 8 * 200 * 5000
    assert s["totals"]["frees"] - base["totals"]["frees"] == 8 * 200 * 5000
    assert s["at_exit"] == base["at_exit"] and not s["capture"]["truncated"]
