"""memprof.load(): a capture's summary as Python objects.

The figures are those `memprof summary --json` prints, computed in this
process by the reporters' own analysis (the C extension links it), so a test
or a notebook can assert on them:

    s = memprof.load("out.memprof")
    assert s.peak.bytes < 100 * 2**20
    assert s.top_leaked[0].function == "load_cache"
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import NamedTuple, Optional, Tuple


class Amount(NamedTuple):
    """A number of bytes in a number of blocks (allocations)."""

    bytes: int
    allocations: int


class Frame(NamedTuple):
    """One frame of a stack. Python frames have a file and a line; native
    ones (captures made with native=True) have `native` set, the object they
    belong to in `module`, and a line only where debug information says."""

    function: str
    file: str
    line: Optional[int]
    native: bool = False
    module: Optional[str] = None

    def __str__(self):
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{self.function} ({where})"

    @property
    def filename(self):  # pytest-memray's StackFrame names, for limit_leaks' filter_fn
        return self.file

    @property
    def lineno(self):
        return self.line


@dataclass(frozen=True)
class Location:
    """A source line (the innermost Python frame of the stacks that allocate
    there, or the native leaf of a stack without Python frames) and what it
    holds. `stack` is the heaviest of its `stacks` stacks, innermost first."""

    function: str
    file: str
    line: Optional[int]
    bytes: int
    allocations: int
    stacks: int
    stack: Tuple[Frame, ...]
    native: bool = False

    def __str__(self):
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{self.function} ({where})"


class Thread(NamedTuple):
    index: int
    tid: int
    name: Optional[str]


@dataclass(frozen=True)
class Capture:
    """What the capture says about the recorded process."""

    path: str
    format: str
    pid: int
    argv: Tuple[str, ...]
    python: str
    python_stacks: bool
    native_stacks: bool
    python_allocators: bool
    truncated: bool
    duration_s: Optional[float]
    parent_pid: Optional[int] = None


@dataclass(frozen=True)
class Summary:
    """A capture's summary (see memprof.load)."""

    capture: Capture
    allocations: int
    """Allocations made, all of them."""
    allocated_bytes: int
    """Bytes allocated in all, freed or not."""
    frees: int
    peak: Amount
    """Heap live at the peak (file mappings are not heap)."""
    peak_time_s: float
    leaked: Amount
    """Live when the script ended (or when the Tracker's block ended)."""
    at_exit: Amount
    """Live when the process exited."""
    rss_peak_bytes: int
    mapped_files: Amount
    """File mappings (Python's mmap module) at their own peak, kept apart from heap."""
    threads: Tuple[Thread, ...]
    allocators: dict
    """Allocator name ("malloc", "mmap (file)", "PyObject_Malloc"...) -> Amount made through it."""
    top_at_peak: Tuple[Location, ...]
    """Heaviest locations at the peak, heaviest first."""
    top_leaked: Tuple[Location, ...]
    """Heaviest locations in what leaked, heaviest first."""
    warnings: Tuple[str, ...] = ()
    """Native objects that could not be symbolized, one line each."""
    data: dict = field(default=None, repr=False, compare=False)
    """The same summary as the dict `memprof summary --json` prints."""


def _frame(d):
    return Frame(d["function"], d["file"], d.get("line"), d.get("native", False), d.get("module"))


def _location(d):
    return Location(d["function"], d["file"], d.get("line"), int(d["bytes"]), int(d["allocations"]),
                    int(d["stacks"]), tuple(_frame(f) for f in d["stack"]), bool(d.get("native", False)))


def _amount(d):
    return Amount(int(d["bytes"]), int(d["allocations"]))


def load(path, *, top=10):
    """Reads the capture at `path` and returns its Summary: totals, the peak,
    what leaked, and the `top` heaviest locations at the peak and in leaks,
    each with its stack. Raises FileNotFoundError / OSError when the file
    cannot be read, ValueError when it is not a readable memprof capture."""
    from . import _memprof

    if not (isinstance(top, int) and 1 <= top <= 100_000):
        raise ValueError(f"memprof: top must be a count from 1 to 100000, not {top!r}")
    text, warnings = _memprof.summary(os.fspath(path), top)
    d = json.loads(text)
    c = d["capture"]
    capture = Capture(c["path"], c["format"], int(c["pid"]), tuple(c["argv"]), c["python"], c["python_stacks"],
                      c["native_stacks"], c["python_allocators"], c["truncated"], c.get("duration_s"),
                      c.get("parent_pid"))
    t = d["totals"]
    return Summary(
        capture=capture,
        allocations=int(t["allocations"]),
        allocated_bytes=int(t["allocated_bytes"]),
        frees=int(t["frees"]),
        peak=_amount(d["peak"]),
        peak_time_s=d["peak"]["time_s"],
        leaked=_amount(d["leaked"]),
        at_exit=_amount(d["at_exit"]),
        rss_peak_bytes=int(d["memory_samples"]["rss_peak_bytes"]),
        mapped_files=_amount(d["mapped_files"]["peak"]),
        threads=tuple(Thread(int(x["index"]), int(x["tid"]), x["name"]) for x in d["threads"]),
        allocators={x["allocator"]: _amount(x) for x in d["allocators"]},
        top_at_peak=tuple(_location(x) for x in d["top_at_peak"]),
        top_leaked=tuple(_location(x) for x in d["top_leaked"]),
        warnings=tuple(warnings),
        data=d,
    )


def parse_size(text):
    """Bytes in a size string: '24 MB', '512KiB', '1.5GB', '4096' (units are
    powers of 1024, as pytest-memray reads them); ValueError otherwise."""
    from . import _memprof

    return _memprof.parse_size(text)
