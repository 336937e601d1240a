"""Prints the name and scheduling policy of each thread of this process but the main one,
from /proc (policy 3: SCHED_BATCH)."""
import os

for tid in sorted(os.listdir("/proc/self/task"), key=int):
    if int(tid) == os.getpid():
        continue
    with open(f"/proc/self/task/{tid}/comm") as f:
        name = f.read().strip()
    with open(f"/proc/self/task/{tid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()  # field 3 (state) onwards
    print(name, fields[41 - 3])  # field 41: policy
