"""memprof: a memory allocation profiler for CPython.

Every allocation a program makes, with the Python stack that made it:

    python -m memprof run script.py      # or: memprof run script.py
    python -m memprof summary memprof-script.<pid>.memprof

This package finds the memprof programs installed beside it (by `cmake --install`).
"""
import os
import sys

__version__ = "0.1.0"


def executable():
    """Absolute path of the installed `memprof` program."""
    from ._paths import BINDIR

    return os.path.join(BINDIR, "memprof")


def main(argv=None):
    """Run `memprof ARGS...` in place of this process (as `python -m memprof` does)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    exe = executable()
    if not os.access(exe, os.X_OK):
        sys.exit(f"memprof: {exe} is missing; reinstall memprof (cmake --install)")
    os.execv(exe, ["memprof", *argv])
