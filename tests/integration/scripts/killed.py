"""Allocates known buffers, then enough records to fill a block, then SIGKILLs itself."""
import os
import signal

HDR = 33
KEEP = []


def known():
    for i in range(5):
        KEEP.append(bytes((i,)) * ((1 << 20) - HDR))  # KNOWN-LINE


def filler():
    # > 64 KiB of records: forces at least one block to disk after known()
    for i in range(30000):
        b = bytearray(600)
        del b


known()
filler()
print("about to die", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
