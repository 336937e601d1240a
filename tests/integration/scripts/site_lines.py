"""Allocation sites of one function under recursions whose path varies, so that every call is
new to the shadow stack and its stack is found by the hash of the frames above it: PATHS
paths of 13 frames from ra(12, k) down to depth 0 (bit (d - 1) % 10 of k, plus d & 1, picks
the function called at depth d), ROUNDS rounds of all of them. At the bottom, sites(k) allocates at 5 of its 10 lines on an
even path (a line of the site table holds them) and at all 10 on an odd one (more than a line
holds). The block at site i on path k is bytes of 1000 + 100 * i + k (made before): one block of
that plus 33, zeroed, kept. No threading import (its set-up would delay the hashed path)."""
import sys

PATHS, ROUNDS = int(sys.argv[1]), int(sys.argv[2])
KEEP = []
SIZES = [tuple(1000 + 100 * i + k for i in range(10)) for k in range(PATHS)]


def sites(k):
    s = SIZES[k]  # no int is made here: the bytes objects are all sites() allocates
    KEEP.append(bytes(s[0]))  # SITE-0
    if k & 1:
        KEEP.append(bytes(s[1]))  # SITE-1
    KEEP.append(bytes(s[2]))  # SITE-2
    if k & 1:
        KEEP.append(bytes(s[3]))  # SITE-3
    KEEP.append(bytes(s[4]))  # SITE-4
    if k & 1:
        KEEP.append(bytes(s[5]))  # SITE-5
    KEEP.append(bytes(s[6]))  # SITE-6
    if k & 1:
        KEEP.append(bytes(s[7]))  # SITE-7
    KEEP.append(bytes(s[8]))  # SITE-8
    if k & 1:
        KEEP.append(bytes(s[9]))  # SITE-9


def NEXT(d, k):
    return ((k >> ((d - 1) % 10)) & 1) + (d & 1)


def ra(d, k):
    return sites(k) if d == 0 else STEP[NEXT(d, k)](d - 1, k)  # RA-LINE


def rb(d, k):
    return sites(k) if d == 0 else STEP[NEXT(d, k)](d - 1, k)  # RB-LINE


def rc(d, k):
    return sites(k) if d == 0 else STEP[NEXT(d, k)](d - 1, k)  # RC-LINE


STEP = (ra, rb, rc)


def main():
    for _ in range(ROUNDS):
        for k in range(PATHS):
            ra(12, k)  # MAIN-LINE


main()  # MODULE-LINE
