"""A process for memprof attach to join mid-run (test_attach.py). Prints its pid on stderr,
then for N rounds allocates one malloc(100,000) at the WORK line, keeps one malloc(50,000) every
10th round at the KEEP line, and with T threads, each thread one malloc(20,000) a round at the
THREAD line; sleeps 5 ms a round (its main thread reaches Python code often). Prints a checksum
that does not depend on timing and exits 3, attached or not.

argv: N [T] [STOPFILE: run until it exists instead of N rounds]"""
import os
import sys
import threading
import time

HDR = 33  # a bytes of length S - 33 is one malloc(S)
sys.stderr.write(f"pid {os.getpid()}\n")
sys.stderr.flush()
n = int(sys.argv[1])
nthreads = int(sys.argv[2]) if len(sys.argv) > 2 else 0
stopfile = sys.argv[3] if len(sys.argv) > 3 else None
kept = []
results = [0] * nthreads
rounds = 0


def work(i):
    b = b"w" * (100_000 - HDR)  # WORK LINE
    if i % 10 == 0:
        kept.append(b"k" * (50_000 - HDR))  # KEEP LINE
    return len(b)


def worker(k):
    s = 0
    while not done:
        s += len(b"t" * (20_000 - HDR))  # THREAD LINE
        time.sleep(0.002)
    results[k] = 1 if s else 0


done = False
threads = [threading.Thread(target=worker, args=(k,), name=f"worker-{k}") for k in range(nthreads)]
for t in threads:
    t.start()
total = 0
while (rounds < n) if stopfile is None else not os.path.exists(stopfile):
    total += work(rounds)
    rounds += 1
    time.sleep(0.005)
done = True
for t in threads:
    t.join()
print("checksum", total // rounds, sum(len(k) for k in kept) // len(kept), sum(results))
sys.exit(3)
