"""For the live view: holds known memory until the file named by argv[1] exists, then says so
and exits 0 (argv[2] seconds at most, default 120, then exits 3).

big():  8 x malloc(4 MiB), 32 MiB in 8 blocks        -- the most live bytes
many(): 20,000 x malloc(1000), 19.1 MiB in 20,000 blocks -- the most live blocks
worker thread "worker", hold(): 3 x malloc(1 MiB)     -- the only allocations of that thread
(bytes of length S - 33 are exactly one malloc(S) in CPython 3.11)."""
import os
import sys
import threading
import time

HDR = 33
KEEP = []


def big():
    return [bytes((i,)) * (4 * 1024 * 1024 - HDR) for i in range(8)]  # BIG-LINE


def many():
    return [bytes((i & 0xFF,)) * (1000 - HDR) for i in range(20000)]  # MANY-LINE


def hold(ready):
    mine = [bytes((i,)) * ((1 << 20) - HDR) for i in range(3)]  # HOLD-LINE
    ready.set()
    while not os.path.exists(sys.argv[1]):
        time.sleep(0.05)
    del mine


def main():
    ready = threading.Event()
    t = threading.Thread(target=hold, args=(ready,), name="worker")
    t.start()
    ready.wait()
    KEEP.append(big())
    KEEP.append(many())
    deadline = time.monotonic() + (float(sys.argv[2]) if len(sys.argv) > 2 else 120)
    while not os.path.exists(sys.argv[1]):
        if time.monotonic() > deadline:
            sys.exit(3)
        time.sleep(0.05)
    t.join()
    print("live_target: done", flush=True)


main()
