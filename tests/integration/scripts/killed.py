"""Allocates known buffers, then (unless told "quiet") enough records to fill a block, says it
is ready, and waits to be killed (the test sends SIGKILL from outside). Quiet, the known
buffers' records are in a block that only the writer's idle flush gets to disk."""
import os
import sys
import time

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
if sys.argv[1:] != ["quiet"]:
    filler()
print("ready", os.getpid(), flush=True)
time.sleep(60)
sys.exit(1)
