"""Holds the GIL in one long C call (sum over a range: no bytecode runs, so no pending call),
then allocates one malloc(1,000,000) at the AFTER line and sleeps: memprof attach started during
the sum can only begin recording after it. Prints its pid on stderr, 'summed' and the monotonic
time when the sum was done."""
import os
import sys
import time

sys.stderr.write(f"pid {os.getpid()}\n")
sys.stderr.flush()
time.sleep(0.3)
s = sum(range(int(sys.argv[1])))
t_end = time.monotonic()
after = b"a" * (1_000_000 - 33)  # AFTER LINE
print("summed", s % 1000, t_end, flush=True)  # when the GIL was let go (CLOCK_MONOTONIC, as the test's)
time.sleep(float(sys.argv[2]))
print("bye", len(after))
