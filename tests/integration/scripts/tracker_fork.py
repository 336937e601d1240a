"""Under memprof run (without --follow-fork): a forked child, which is not
recorded, records a block of its own with a Tracker, then forks again (the
fork handlers must not have been set up twice) and exits 0."""
import os
import sys

import memprof

HDR = 33
pid = os.fork()
if pid == 0:
    with memprof.Tracker(sys.argv[1]):
        kept = bytes((3,)) * (1_111_111 - HDR)  # CHILD BLOCK
    grandchild = os.fork()
    if grandchild == 0:
        os._exit(0)
    _, status = os.waitpid(grandchild, 0)
    os._exit(0 if status == 0 else 3)
_, status = os.waitpid(pid, 0)
print("child", status)
