"""The parent leaks a known buffer; two children (os.fork, one leaving by os._exit, one by
returning normally through sys.exit) allocate at child_work, which must not appear in the
parent's capture. Children print, so a test sees they ran."""
import os
import sys

HDR = 33
KEEP = []


def parent_leak():
    KEEP.append(bytes((7,)) * ((3 << 20) - HDR))  # PARENT-LEAK: 3 MiB live at the end


def child_work(tag):
    junk = [bytes((tag,)) * (100000 - HDR) for _ in range(20)]
    return len(junk)


def main():
    parent_leak()
    pids = []
    for tag, how in ((1, "_exit"), (2, "exit")):
        pid = os.fork()
        if pid == 0:
            n = child_work(tag)
            print(f"child {tag} made {n}", flush=True)
            if how == "_exit":
                os._exit(0)
            sys.exit(0)
        pids.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids]
    print("forks", codes, "parent", os.getpid(), "children", *pids)


main()
