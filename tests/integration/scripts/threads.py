"""4 threads allocate at once, each at its own function, N buffers of its own size, held until
all have finished (so all are live at the peak)."""
import threading

N = 200
HDR = 33
start = threading.Barrier(4)
done = threading.Barrier(5)
held = [[None] * N for _ in range(4)]  # pre-sized: filling them allocates nothing more


def worker_0():
    start.wait()
    for i in range(N):
        held[0][i] = bytes((i & 255,)) * (5000 - HDR)  # W0
    done.wait()


def worker_1():
    start.wait()
    for i in range(N):
        held[1][i] = bytes((i & 255,)) * (6000 - HDR)  # W1
    done.wait()


def worker_2():
    start.wait()
    for i in range(N):
        held[2][i] = bytes((i & 255,)) * (7000 - HDR)  # W2
    done.wait()


def worker_3():
    start.wait()
    for i in range(N):
        held[3][i] = bytes((i & 255,)) * (8000 - HDR)  # W3
    done.wait()


def main():
    ts = [threading.Thread(target=f) for f in (worker_0, worker_1, worker_2, worker_3)]
    for t in ts:
        t.start()
    done.wait()
    for t in ts:
        t.join()
    print("threads", sum(len(h) for h in held))
    held.clear()


main()
