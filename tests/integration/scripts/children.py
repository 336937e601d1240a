"""Starts every kind of child a Python program has: multiprocessing with the fork and spawn
contexts (spawn also starts multiprocessing's resource tracker), subprocess running Python,
os.fork followed by os.execv of Python, and subprocess running a program that is not Python
(/bin/sh -c true). Each Python child keeps a buffer of its own known size to its end and waits
for nothing. Children print what they did without pids, so that runs can be compared; the pids
go to the JSON file argv[1]."""
import json
import multiprocessing
import multiprocessing.resource_tracker
import os
import subprocess
import sys

HDR = 33
MiB = 1 << 20
KEEP = []
EXEC_CODE = "import sys; b = bytes(1) * ({} * (1 << 20) - 33); print('{}', len(b), flush=True)"  # EXEC-LINE


def child(tag, size):
    KEEP.append(bytes((1,)) * (size - HDR))  # CHILD-LINE
    print("child", tag, len(KEEP[0]), flush=True)


def forked():
    KEEP.append(bytes((1,)) * (3 * MiB - HDR))  # FORKED-LINE
    os.execv(sys.executable, [sys.executable, "-c", EXEC_CODE.format(4, "execd"), "execd"])


def main():
    pids = {}
    for method, size in (("fork", 5 * MiB), ("spawn", 6 * MiB)):
        p = multiprocessing.get_context(method).Process(target=child, args=(method, size))
        p.start()
        p.join()
        pids[method] = p.pid
        print("joined", method, p.exitcode, flush=True)
    # the tracker outlives the parent unless stopped: stop it, so that its capture is whole
    tracker = multiprocessing.resource_tracker._resource_tracker
    pids["tracker"] = tracker._pid
    tracker._stop()
    p = subprocess.Popen([sys.executable, "-c", EXEC_CODE.format(7, "subprocess"), "subprocess"])
    pids["subprocess"] = p.pid
    print("subprocess", p.wait(), flush=True)
    pid = os.fork()
    if pid == 0:
        forked()
    pids["forkexec"] = pid
    print("forkexec", os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
    p = subprocess.Popen(["/bin/sh", "-c", "true"])
    pids["sh"] = p.pid
    print("sh", p.wait(), flush=True)
    pids["parent"] = os.getpid()
    with open(sys.argv[1], "w") as f:
        json.dump(pids, f)


if __name__ == "__main__":
    main()
