"""A memprof.Tracker in a plain python3 (no LD_PRELOAD): allocations with
known sizes inside the block, one before and one after it, and the GOT
entries of libz for malloc and free read before, during and after (they
must point elsewhere during the block and be back as they were after).

argv: capture path, then options: native, trace, twice (a second block into
<path>.2 after the first)."""
import sys
import zlib

import memprof
from elfgot import got_slots, read_slots

HDR = 33  # a bytes of length S - 33 is one malloc(S)


path = sys.argv[1]
opts = set(sys.argv[2:])
slots = got_slots("libz.so", {"malloc", "free"})
assert set(slots) == {"malloc", "free"}, slots
before_block = bytes((1,)) * (1_500_007 - HDR)
got_before = read_slots(slots)
kw = dict(native="native" in opts, trace_python_allocators="trace" in opts)
with memprof.Tracker(path, **kw) as tracker:
    kept = bytes((7,)) * (2_000_003 - HDR)  # TRACKED LINE
    comp = zlib.compressobj()  # ZLIB LINE
    got_during = read_slots(slots)
    try:
        memprof.Tracker(path + ".other").start()
    except RuntimeError as e:
        second = str(e)
    else:
        second = "started"
after_block = bytes((7,)) * (3_000_017 - HDR)
got_after = read_slots(slots)
if "twice" in opts:
    with memprof.Tracker(path + ".2", **kw):
        again = bytes((9,)) * (1_234_567 - HDR)  # SECOND BLOCK
print("got_patched", all(got_during[n] != got_before[n] for n in slots))
print("got_restored", got_after == got_before)
print("second_tracker", second)
