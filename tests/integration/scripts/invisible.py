"""Prints what a program can see of its surroundings; the test compares a plain run with a
profiled one."""
import os
import sys

line = sys.stdin.readline()
print("argv", sys.argv)
print("name", __name__, "file", os.path.basename(__file__))
print("modules", sorted(m for m in sys.modules))
print("path0", sys.path[0] == os.path.dirname(os.path.abspath(__file__)))
print("env", sorted(k for k in os.environ if k.startswith(("MEMPROF", "LD_PRELOAD"))))
print("stdin", line.strip())
print("to stderr", file=sys.stderr)
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
