"""One anonymous 10 MiB mapping (libc's mmap through ctypes), then munmap of its middle 4 MiB:
6 MiB of it, in two pieces, stay live to the end."""
import ctypes
import mmap

MiB = 1 << 20
libc = ctypes.CDLL(None)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
libc.munmap.restype = ctypes.c_int
libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
MAP_FAILED = ctypes.c_void_p(-1).value

addr = libc.mmap(None, 10 * MiB, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)  # MAP-LINE
assert addr not in (None, MAP_FAILED)
rc = libc.munmap(addr + 3 * MiB, 4 * MiB)  # HOLE-LINE
print("munmap", rc)
