"""Known peak: 12 buffers of exactly 8 MiB (one malloc each) live at once in hold()."""
import sys

HDR = 33  # CPython 3.11 bytes object: 32-byte header + NUL, so length S-33 is one malloc(S)
SIZE = 8 << 20
COUNT = 12


def churn():
    for i in range(50):
        b = bytes((i & 255,)) * (SIZE // 4 - HDR)  # 2 MiB, freed at once
        del b


def hold():
    held = [None] * COUNT
    for i in range(COUNT):
        held[i] = bytes((i,)) * (SIZE - HDR)  # PEAK-LINE
    return sum(b[0] for b in held)


def main():
    churn()
    s = hold()
    churn()
    print("peak_buffers", COUNT * SIZE, s)


if __name__ == "__main__":
    main()
    sys.exit(0)
