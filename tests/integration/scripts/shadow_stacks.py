"""Stacks that change in the ways a shadow of the frame chain could get wrong. Each case leaks
one bytes object of a size of its own (one allocation of exactly SIZE[case] + n bytes), so the
leak report names its stack; the test compares them with the stacks a plain walk records and
with the frames written here.

It also says whether a frame-evaluation hook is set before and after the deep recursions
(which take it off while they run near the end of the C stack, and must put it back).

Usage: shadow_stacks.py THREAD_DEPTH MAIN_DEPTH"""
import ctypes
import sys
import threading

HDR = 33  # a bytes of length n is one allocation of n + 33 bytes
KEEP = []


def leak(size):
    KEEP.append(bytes(size - HDR))  # LEAK-LINE


# 1. recursion through three functions in a known order
def ra(n, size):
    return rb(n - 1, size) if n else leak(size)  # RA-LINE


def rb(n, size):
    return rc(n - 1, size) if n else leak(size)  # RB-LINE


def rc(n, size):
    return ra(n - 1, size) if n else leak(size)  # RC-LINE


# 2. the same callee, frame for frame, called from two lines of one frame in turn
def same_callee():
    for i in range(3):
        leak(1100 + 2 * i)  # FIRST-CALL
        leak(1101 + 2 * i)  # SECOND-CALL


# 3. a generator resumed from two different functions
def gen():
    while True:
        size = yield
        leak(size)  # GEN-LINE


def resume_one(g, size):
    g.send(size)  # RESUME-ONE


def resume_two(g, size):
    g.send(size)  # RESUME-TWO


# 4. a closure (its cells are made before the frame starts) called back from C
def sorted_by(size):
    base = size

    def key(x):
        leak(base + x)  # KEY-LINE
        return -x

    return sorted([0, 1, 2], key=key)  # SORTED-LINE


# 5. an exception out of a deep call, then an allocation in a frame it unwound to
def raise_deep(n):
    if n == 0:
        raise ValueError("bottom")
    return raise_deep(n - 1)  # RAISE-LINE


def after_raise(size):
    try:
        raise_deep(40)
    except ValueError:
        leak(size)  # AFTER-RAISE


# 6. recursion deeper than the C stack would allow if every call nested on it
def plunge(n, size):
    if n:
        return plunge(n - 1, size)  # PLUNGE-LINE
    leak(size)  # PLUNGE-LEAK


# 7. one call instruction running two functions in turn
def alpha(size):
    leak(size)  # ALPHA-LINE


def beta(size):
    leak(size)  # BETA-LINE


def one_call_two_functions():
    for i, fn in enumerate((alpha, beta, alpha, beta)):
        fn(8000 + i)  # TURN-LINE


def hooked():
    """1 when the interpreter runs frames through a PEP 523 hook, else 0."""
    api = ctypes.pythonapi
    api.PyInterpreterState_Get.restype = ctypes.c_void_p
    api._PyInterpreterState_GetEvalFrameFunc.restype = ctypes.c_void_p
    api._PyInterpreterState_GetEvalFrameFunc.argtypes = [ctypes.c_void_p]
    cur = api._PyInterpreterState_GetEvalFrameFunc(api.PyInterpreterState_Get())
    return int(cur != ctypes.cast(api._PyEval_EvalFrameDefault, ctypes.c_void_p).value)


def main(thread_depth, main_depth):
    before = hooked()
    ra(59, 2000)  # MAIN-RA
    same_callee()  # MAIN-SAME
    g = gen()
    next(g)
    for i in range(2):
        resume_one(g, 3000 + 2 * i)  # MAIN-ONE
        resume_two(g, 3001 + 2 * i)  # MAIN-TWO
    sorted_by(4000)  # MAIN-SORTED
    after_raise(5000)  # MAIN-RAISE
    one_call_two_functions()  # MAIN-TURN
    sys.setrecursionlimit(max(thread_depth, main_depth) + 1000)
    threading.stack_size(1 << 20)
    t = threading.Thread(target=plunge, args=(thread_depth, 6000))
    t.start()
    t.join()
    plunge(main_depth, 7000)  # MAIN-PLUNGE
    print("shadow", len(KEEP), "hooked", before, hooked())


main(int(sys.argv[1]), int(sys.argv[2]))  # MODULE
