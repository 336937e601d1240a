"""Two 8 MiB mappings live at the end: one of a file (argv[1], made here), which is not heap,
and one anonymous, which is."""
import mmap
import os
import sys

SIZE = 8 << 20

with open(sys.argv[1], "wb") as f:
    f.truncate(SIZE)
fd = os.open(sys.argv[1], os.O_RDWR)
FILE_MAP = mmap.mmap(fd, SIZE)  # FILE-MAP
os.close(fd)
ANON_MAP = mmap.mmap(-1, SIZE)  # ANON-MAP
FILE_MAP[0] = ANON_MAP[0] = 1
print("mmaps", len(FILE_MAP), len(ANON_MAP))
