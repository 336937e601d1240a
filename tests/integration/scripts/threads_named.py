"""8 named threads (threading.Thread(name="worker-<i>")) each allocate and free ROUNDS
bytearrays of 2000 bytes at once (one malloc of 2001 bytes each, and a small object from
pymalloc). Prints each thread's name and native id."""
import sys
import threading

THREADS = 8
ROUNDS = int(sys.argv[1])
go = threading.Barrier(THREADS)


def work():
    go.wait()
    for _ in range(ROUNDS):
        b = bytearray(2000)  # WORK-LINE
        del b


ts = [threading.Thread(target=work, name=f"worker-{i}") for i in range(THREADS)]
for t in ts:
    t.start()
for t in ts:
    t.join()
print(*(f"{t.name}={t.native_id}" for t in ts))
