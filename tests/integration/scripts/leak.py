"""Known leak: 100 x 4096 at leak_small, 3 x 1 MiB at leak_large, still referenced at the end."""
HDR = 33
KEEP = [None] * 103  # pre-sized: appending would allocate at the leak lines
FREED = []


def leak_small(i):
    KEEP[i] = bytes((i & 255,)) * (4096 - HDR)  # LEAK-SMALL


def leak_large(i):
    KEEP[100 + i] = bytes((i,)) * ((1 << 20) - HDR)  # LEAK-LARGE


def not_leaked():
    for i in range(500):
        b = bytes((i & 255,)) * (4096 - HDR)  # same size as leak_small, freed
        del b


def main():
    for i in range(100):
        leak_small(i)
        not_leaked()
    for i in range(3):
        leak_large(i)
    print("leak", 100 * 4096 + 3 * (1 << 20))


main()
