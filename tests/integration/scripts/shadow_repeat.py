"""Calls whose frames above were all seen before, under earlier calls: the stack of each is
found by the hash of those frames taken as the call begins, not walked. ROUNDS rounds of: one
callee called from two lines in turn, a recursion whose depth (and so its bottom function)
alternates, and a generator resumed from two functions in turn. Each leak() allocates one
block of exactly `size` bytes and keeps it. No threading import (its set-up would delay the
hashed path)."""
import sys

HDR = 33  # bytes of length n take one PyObject_Malloc(n + 33)
ROUNDS = int(sys.argv[1])
KEEP = []


def leak(size):
    KEEP.append(bytes(size - HDR))  # LEAK-LINE


def two_lines(i):
    leak(1100 + i)  # FIRST-CALL
    leak(1300 + i)  # SECOND-CALL


def ra(n, size):
    return rb(n - 1, size) if n else leak(size)  # RA-LINE


def rb(n, size):
    return ra(n - 1, size) if n else leak(size)  # RB-LINE


def gen():
    while True:
        size = yield
        leak(size)  # GEN-LINE


def resume_one(g, size):
    g.send(size)  # RESUME-ONE


def resume_two(g, size):
    g.send(size)  # RESUME-TWO


def main():
    g = gen()
    next(g)
    for i in range(ROUNDS):
        two_lines(i)  # MAIN-TWO
        ra(20 + i % 2, 3000 + i % 2)  # MAIN-RA
        resume_one(g, 4000)  # MAIN-ONE
        resume_two(g, 4100)  # MAIN-RESUME-TWO


main()  # MODULE-LINE
