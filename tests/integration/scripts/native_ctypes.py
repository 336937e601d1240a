"""Opens libmpalloc.so (argv[1]) with ctypes once the program runs, and keeps one block of
known size that its mp_test_alloc allocated; a second block is freed again."""
import ctypes
import sys

SIZE = 3 * (1 << 20) + 12345

lib = ctypes.CDLL(sys.argv[1])
lib.mp_test_alloc.restype = ctypes.c_void_p
lib.mp_test_alloc.argtypes = (ctypes.c_size_t,)
lib.mp_test_free.restype = None
lib.mp_test_free.argtypes = (ctypes.c_void_p,)


def call_lib():
    lib.mp_test_free(lib.mp_test_alloc(SIZE))
    return lib.mp_test_alloc(SIZE)  # CALL-LINE


KEPT = call_lib()
print("mpalloc", KEPT is not None)
