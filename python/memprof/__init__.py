"""memprof: a memory allocation profiler for CPython.

Every allocation a program makes, with the Python stack that made it:

    python -m memprof run script.py      # or: memprof run script.py
    python -m memprof summary memprof-script.<pid>.memprof

or only what a block of code does, in a process started as usual:

    with memprof.Tracker("out.memprof"):
        work()

and read a capture's figures back as Python objects:

    summary = memprof.load("out.memprof")
    print(summary.peak.bytes, summary.top_at_peak[0].stack)

`pytest --memprof` (the pytest plugin in memprof.pytest_plugin) profiles
each test and enforces @pytest.mark.limit_memory / limit_leaks.

This package finds the memprof programs and libmemprof.so installed beside it.
"""
import os
import sys

from ._summary import Amount, Capture, Frame, Location, Summary, Thread, load, parse_size

__version__ = "0.1.0"
__all__ = ["Tracker", "load", "parse_size", "Summary", "Amount", "Capture", "Frame", "Location", "Thread",
           "executable", "library", "main"]


def executable():
    """Absolute path of the installed `memprof` program."""
    from ._paths import BINDIR

    return os.path.join(BINDIR, "memprof")


def library():
    """Absolute path of libmemprof.so: $MEMPROF_LIBRARY, else the one installed with this package."""
    env = os.environ.get("MEMPROF_LIBRARY")
    if env:
        return env
    from ._paths import LIBRARY

    return LIBRARY


class Tracker:
    """Records the allocations made while it is active into a capture file,
    in a process that was not started by `memprof run`:

        with memprof.Tracker("out.memprof", native=False, trace_python_allocators=False):
            work()

    or `tracker.start()` ... `tracker.stop()`. What is still live at the end
    of the block is what the reports call leaked. The allocator hooks are
    put in place for the block (the GOT entries of every loaded object, and
    of each one loaded meanwhile, point at them) and taken out after it.
    One capture at a time per process: starting a second one, or one under
    `memprof run` (which records the whole process already), raises
    RuntimeError. The file is created with mode 0600, never over an existing
    one unless force=True, never through a symbolic link.
    """

    def __init__(self, path, *, native=False, trace_python_allocators=False, follow_fork=False, force=False,
                 interval_ms=10):
        self.path = os.fspath(path)
        self.native = bool(native)
        self.trace_python_allocators = bool(trace_python_allocators)
        self.follow_fork = bool(follow_fork)
        self.force = bool(force)
        if not (isinstance(interval_ms, (int, float)) and 0 < interval_ms <= 60_000):
            raise ValueError(f"memprof: interval_ms must be a number of milliseconds from 1 to 60000, not {interval_ms!r}")
        self.interval_ms = interval_ms
        self._running = False

    def start(self):
        """Starts recording; returns self."""
        from . import _memprof

        if self._running:
            raise RuntimeError("memprof: this Tracker is recording already")
        options = ((_memprof.OPT_NATIVE if self.native else 0) | (_memprof.OPT_PYMEM if self.trace_python_allocators else 0)
                   | (_memprof.OPT_FOLLOW_FORK if self.follow_fork else 0))
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | (os.O_TRUNC if self.force else os.O_EXCL)
        if _memprof.active():
            _memprof.start(-1, self.path, options, 0, None)  # raises the "one at a time" error
        try:
            fd = os.open(self.path, flags, 0o600)
        except FileExistsError:
            raise FileExistsError(f"memprof: {self.path} exists; remove it, choose another path, "
                                  f"or pass force=True to overwrite it") from None
        except OSError as e:
            raise OSError(e.errno, f"memprof: cannot create the capture {self.path}: {e.strerror}") from None
        try:
            _memprof.start(fd, os.path.abspath(self.path), options, int(self.interval_ms * 1000),
                           None if _memprof.preloaded() else library())
        except BaseException:
            os.close(fd)
            os.unlink(self.path)
            raise
        os.close(fd)
        self._running = True
        return self

    def stop(self):
        """Stops recording and finishes the capture (idempotent)."""
        if self._running:
            from . import _memprof

            self._running = False
            _memprof.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


def main(argv=None):
    """Run `memprof ARGS...` in place of this process (`python -m memprof`, and the
    `memprof` command pip installs). `memprof run` then starts this interpreter
    (the one whose packages the program imports) unless --python or
    $MEMPROF_PYTHON says otherwise."""
    argv = sys.argv[1:] if argv is None else list(argv)
    exe = executable()
    if not os.access(exe, os.X_OK):
        sys.exit(f"memprof: {exe} is missing; reinstall memprof (pip install, or cmake --install)")
    if sys.executable and not os.environ.get("MEMPROF_PYTHON"):
        os.environ["MEMPROF_PYTHON"] = sys.executable
    os.execv(exe, ["memprof", *argv])
