"""Known growth for memprof diff and check: K blocks of 64 KiB kept at
hold() (leaked), and K blocks of 1 MiB live at once at spike() (the peak),
each one malloc of exactly that size (a bytes of length S - 33)."""
import sys

HDR = 33
K = int(sys.argv[1])
KEPT = []


def hold(k):
    for i in range(k):
        KEPT.append(bytes((i & 0xFF,)) * (65536 - HDR))


def spike(k):
    blocks = [bytes((i & 0xFF,)) * ((1 << 20) - HDR) for i in range(k)]
    return sum(len(b) + HDR for b in blocks)


hold(K)
print(f"grow: kept={len(KEPT) * 65536} spike={spike(K)}")
