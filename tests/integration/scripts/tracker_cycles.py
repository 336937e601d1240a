"""Many short Tracker blocks in one process, as the pytest plugin makes (a
capture per test): prints the growth of resident memory over the last 300,
the GOT state (keep_hooks leaves libz's entries patched between blocks,
and puts them back when turned off), and how often memprof's threads wake
in half a second without a capture. argv: directory for the captures."""
import os
import sys
import time
import zlib

import memprof
from elfgot import got_slots, read_slots
from memprof import _memprof

SLOTS = got_slots("libz.so", {"malloc", "free"})


def got_entries():
    return read_slots(SLOTS)


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGESIZE")


def block(i):
    path = os.path.join(sys.argv[1], f"{i}.memprof")
    with memprof.Tracker(path):
        data = [str(n) * 3 for n in range(2000)]  # strings, code, stacks: the recorder's tables fill
        zlib.compress(b"x" * 100_000)
        del data
    os.unlink(path)


before = got_entries()
_memprof.keep_hooks(True, memprof.library())
for i in range(50):
    block(i)
kept = got_entries()
start = rss()
for i in range(300):
    block(i)
grown = rss() - start
_memprof.keep_hooks(False, None)


def other_threads_wakeups():
    total = 0
    for t in os.listdir("/proc/self/task"):
        if int(t) != os.getpid():
            with open(f"/proc/self/task/{t}/status") as f:
                total += sum(int(l.split()[1]) for l in f if l.startswith("voluntary_ctxt_switches"))
    return total


before_idle = other_threads_wakeups()
time.sleep(0.5)  # no capture: memprof's writer thread sleeps (it woke every 10 ms)
print("idle_wakeups", other_threads_wakeups() - before_idle)
print("rss_growth", grown)
print("kept_patched", kept != before)
print("restored", got_entries() == before)
