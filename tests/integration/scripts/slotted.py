"""N objects of one small type, all alive at the end, made at one line. Without
--trace-python-allocators pymalloc serves them from its arenas; with it, each is one
PyObject_Malloc. One large bytes object too, which pymalloc passes on to malloc."""
import sys

N = 10000
HDR = 33


class Slotted:
    __slots__ = ("a",)


lst = [None] * N  # pre-sized: filling it allocates nothing more
for i in range(N):
    lst[i] = Slotted()  # OBJ-LINE
BIG = bytes((1,)) * ((1 << 20) - HDR)  # BIG-LINE
print("slotted", N, sys.getsizeof(lst[0]), Slotted.__basicsize__)
