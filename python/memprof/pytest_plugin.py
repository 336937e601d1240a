"""memprof's pytest plugin: memory limits and regressions checked per test.

    pytest --memprof                      # profile each test, report the biggest at the end
    @pytest.mark.limit_memory("24 MB")    # fail a test whose peak heap goes over 24 MiB
    @pytest.mark.limit_leaks("1 MB")      # fail a test that leaks over 1 MiB at one location

The markers are those pytest-memray users write, with the same size strings
(units are powers of 1024). They do nothing unless the plugin is enabled
(--memprof, or `memprof = true` in the ini file), so a suite can carry them
and run fast by default.

Each test's call (not its fixtures) runs inside a memprof.Tracker writing a
capture of its own; the figures are read back in this process
(memprof.load) and the capture is deleted unless --memprof-keep DIR keeps it.

- limit_memory(LIMIT): the test fails when the heap live at its peak, counting
  only what the test allocated, is over LIMIT.
- limit_leaks(LIMIT, filter_fn=None): the test fails when the memory it
  allocated and left live at one location (a source line) is over LIMIT.
  Such tests are recorded with trace_python_allocators (every object
  allocation seen, so pymalloc's arenas, which outlive the objects in them,
  are not mistaken for leaks), after a garbage collection. filter_fn(stack)
  returning False leaves a location out; stack.frames is innermost first,
  each frame with function, filename and lineno as in pytest-memray.
- --memprof-baseline FILE: the test fails when its peak grew more than
  --memprof-max-growth (10% by default) over the peak stored in FILE, and by
  more than --memprof-growth-floor (1 MiB by default, pymalloc's arena size,
  under which a change is noise). --memprof-save-baseline FILE writes this
  run's peaks (it may be the same file).

Registered through the `pytest11` entry point when memprof is installed;
from a build tree, `PYTHONPATH=build/python pytest -p memprof.pytest_plugin`.
"""
from __future__ import annotations

import functools
import gc
import hashlib
import inspect
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from typing import Tuple

import pytest

import memprof

MARKERS = ("limit_memory", "limit_leaks")
BASELINE_FORMAT = 1
_PROPERTY = "memprof"  # report.user_properties memprof_peak_bytes... carry a test's figures (across pytest-xdist too)


def human(n):
    """'12.3 MiB' (as the memprof reports write sizes)."""
    v, unit = float(n), "B"
    for u in ("KiB", "MiB", "GiB", "TiB"):
        if v < 1024:
            break
        v, unit = v / 1024, u
    return f"{int(n)} B" if unit == "B" else f"{v:.1f} {unit}"


@dataclass(frozen=True)
class Stack:
    """A stack given to limit_leaks' filter_fn: frames innermost first, each
    with function, filename and lineno (pytest-memray's names)."""

    frames: Tuple["memprof.Frame", ...]


def pytest_addoption(parser):
    g = parser.getgroup("memprof", "memory profiling (memprof)")
    g.addoption("--memprof", action="store_true", default=None,
                help="profile each test with memprof; enforce the limit_memory and limit_leaks markers")
    g.addoption("--memprof-native", action="store_true", default=None,
                help="record native (C/C++) stacks too")
    g.addoption("--memprof-trace-python-allocators", action="store_true", default=None,
                help="record every Python object allocation (not only pymalloc's arenas)")
    g.addoption("--memprof-keep", metavar="DIR", default=None,
                help="keep each test's capture in DIR (created if needed; a test's old capture is replaced)")
    g.addoption("--memprof-stacks", metavar="N", type=int, default=None,
                help="frames shown per stack in a failure (default 10)")
    g.addoption("--memprof-locations", metavar="N", type=int, default=None,
                help="locations listed in a failure (default 5)")
    g.addoption("--memprof-report", metavar="N", type=int, default=None,
                help="tests listed by peak at the end of the session (default 5; 0: none)")
    g.addoption("--memprof-baseline", metavar="FILE", default=None,
                help="fail a test whose peak grew over the one stored in FILE (see --memprof-max-growth)")
    g.addoption("--memprof-max-growth", metavar="PERCENT", default=None,
                help="growth over the baseline that fails a test (default 10%%)")
    g.addoption("--memprof-growth-floor", metavar="SIZE", default=None,
                help="growth smaller than SIZE never fails (default 1MiB)")
    g.addoption("--memprof-save-baseline", metavar="FILE", default=None,
                help="write each test's peak to FILE at the end of the session")
    parser.addini("memprof", "profile each test with memprof (as --memprof)", type="bool", default=False)


def pytest_configure(config):
    config.addinivalue_line("markers", "limit_memory(limit): fail the test (with --memprof) when its peak heap "
                                       "is over limit, a size such as '24 MB'")
    config.addinivalue_line("markers", "limit_leaks(limit, filter_fn=None): fail the test (with --memprof) when "
                                       "it leaks more than limit at one location")
    opt = config.getoption
    if not (opt("memprof") or config.getini("memprof") or opt("memprof_keep") or opt("memprof_baseline")
            or opt("memprof_save_baseline")):
        return
    config.pluginmanager.register(_Plugin(config), "memprof-plugin")


def _usage(msg):
    raise pytest.UsageError(f"memprof: {msg}")


def _count(config, name, default, low):
    v = config.getoption(name)
    if v is None:
        return default
    if v < low:
        _usage(f"--{name.replace('_', '-')} needs a count of at least {low}, not {v}")
    return v


def _size(text, what, error=_usage):
    try:
        return memprof.parse_size(text)
    except (ValueError, TypeError):
        error(f"{what} {text!r} is not a size; write bytes or a number with a unit, as in '24 MB', '512KiB' "
              f"(units are powers of 1024)")


def _marker_error(msg):
    pytest.fail(f"memprof: {msg}", pytrace=False)


def _read_baseline(path, option, missing_ok=False):
    """{test id: {"peak_bytes": n, "leaked_bytes": n}} from a baseline file; a usage error
    for a file that is not one ({} for a missing one when missing_ok)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        if missing_ok:
            return {}
        _usage(f"{option} {path}: no such file; write one with --memprof-save-baseline {path}")
    except (OSError, ValueError) as e:
        _usage(f"{option} {path}: cannot read it ({e}); remove it or write it again with --memprof-save-baseline")
    if not (isinstance(data, dict) and data.get("memprof_baseline") == BASELINE_FORMAT
            and isinstance(data.get("tests"), dict)):
        _usage(f"{option} {path} is not a memprof baseline (format {BASELINE_FORMAT}); remove it or choose "
               f"another file, and write it with --memprof-save-baseline")
    return {k: v for k, v in data["tests"].items() if isinstance(v, dict) and isinstance(v.get("peak_bytes"), int)}


SHM_ROOM = 1 << 30  # /dev/shm is used when it has this much free (containers often give it 64 MiB)


def _scratch_dir():
    """Where the captures of a run live until read: $MEMPROF_PYTEST_TMPDIR, else /dev/shm
    when it is a writable tmpfs with 1 GiB free (creating and deleting a file there costs
    15 us, on ext4 160 us: a test's capture is both), else the usual temporary directory."""
    env = os.environ.get("MEMPROF_PYTEST_TMPDIR")
    if env:
        return env
    try:
        with open("/proc/self/mounts", encoding="utf-8") as f:
            shm = any(line.split()[1:3] == ["/dev/shm", "tmpfs"] for line in f)
        st = os.statvfs("/dev/shm") if shm else None
    except OSError:
        st = None
    if st and st.f_bavail * st.f_frsize >= SHM_ROOM and os.access("/dev/shm", os.W_OK | os.X_OK):
        return "/dev/shm"
    return None


def _capture_name(nodeid):
    """A file name for a test's capture: its id made safe, cut to 180 bytes, and a hash of the
    whole id (ids that read the same once made safe, `t[a b]` and `t[a-b]`, stay apart)."""
    name = re.sub(r"[^A-Za-z0-9._\[\]=-]+", "-", nodeid.replace("::", "--")).strip("-.")[:180] or "test"
    return f"{name}-{hashlib.sha256(nodeid.encode()).hexdigest()[:8]}.memprof"


_HERE = os.path.realpath(__file__)


def _test_frames(stack):
    """The frames of the test itself: those up to this plugin's wrapper
    (what calls it is pytest)."""
    for i, f in enumerate(stack):
        if f.file == __file__ or (not f.native and f.file.endswith("pytest_plugin.py")
                                  and os.path.realpath(f.file) == _HERE):
            return stack[:i]
    return stack


class _Plugin:
    def __init__(self, config):
        from memprof import _memprof

        if _memprof.active():
            _usage("this process is already being recorded (pytest runs under memprof run, or a Tracker is "
                   "active); run pytest --memprof on its own")
        self.config = config
        opt = config.getoption
        self.native = bool(opt("memprof_native"))
        self.trace = bool(opt("memprof_trace_python_allocators"))
        self.stacks = _count(config, "memprof_stacks", 10, 1)
        self.locations = _count(config, "memprof_locations", 5, 1)
        self.report = _count(config, "memprof_report", 5, 0)
        growth = opt("memprof_max_growth") or "10%"
        m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*%?\s*", growth)
        if not m:
            _usage(f"--memprof-max-growth {growth!r} is not a percentage; write it as in '10%'")
        self.max_growth = float(m.group(1))
        self.floor = _size(opt("memprof_growth_floor") or "1MiB", "--memprof-growth-floor")
        self.baseline_path = opt("memprof_baseline")
        self.baseline = None
        if self.baseline_path:
            self.baseline = {k: v["peak_bytes"]
                             for k, v in _read_baseline(self.baseline_path, "--memprof-baseline").items()}
        self.save_path = opt("memprof_save_baseline")
        if self.save_path:
            d = os.path.dirname(os.path.abspath(self.save_path))
            if not os.path.isdir(d) or not os.access(d, os.W_OK):
                _usage(f"--memprof-save-baseline {self.save_path}: cannot write into {d}")
            # merged into, not replaced: a run of some tests (-k, --lf, a shard) keeps the others
            self.saved = _read_baseline(self.save_path, "--memprof-save-baseline", missing_ok=True)
        self.keep = opt("memprof_keep")
        if self.keep:
            try:
                os.makedirs(self.keep, exist_ok=True)
            except OSError as e:
                _usage(f"--memprof-keep {self.keep}: cannot create the directory ({e.strerror})")
            if not os.access(self.keep, os.W_OK | os.X_OK):
                _usage(f"--memprof-keep {self.keep}: the directory is not writable")
            self.dir = self.keep
        else:
            self.dir = tempfile.mkdtemp(prefix="memprof-pytest-", dir=_scratch_dir())
        if not _memprof.preloaded():
            try:  # the GOT stays patched between the tests' captures: each starts without patching
                _memprof.keep_hooks(True, memprof.library())
            except RuntimeError as e:
                _usage(str(e).removeprefix("memprof: "))
        self.worker = hasattr(config, "workerinput")  # a pytest-xdist worker: the controller reports
        self.results = {}   # nodeid -> (peak, leaked, top location), from the reports
        self.pending = {}   # nodeid -> failure text, from the call to makereport
        self.serial = 0

    # -- recording ---------------------------------------------------------

    @pytest.hookimpl(hookwrapper=True)
    def pytest_pyfunc_call(self, pyfuncitem):
        func = pyfuncitem.obj
        marks = {}
        for m in pyfuncitem.iter_markers():  # the closest marker wins
            if m.name in MARKERS:
                marks.setdefault(m.name, m)
        leaks = marks.get("limit_leaks")
        checks = self._checks(pyfuncitem, marks)
        if self.keep:
            path = os.path.join(self.dir, _capture_name(pyfuncitem.nodeid))
        else:
            self.serial += 1
            path = os.path.join(self.dir, f"{self.serial}.memprof")
        tracker = memprof.Tracker(path, native=self.native, trace_python_allocators=self.trace or bool(leaks),
                                  force=bool(self.keep))
        nodeid = pyfuncitem.nodeid

        def finish(ok):
            try:
                self._measure(nodeid, path, checks)
            except Exception:
                if ok:  # a test that failed already keeps its own error
                    raise
            finally:
                if not self.keep:
                    try:
                        os.unlink(path)
                    except OSError:
                        pass

        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def wrapper(*args, **kwargs):
                pyfuncitem.obj = func
                ok = False
                try:
                    with tracker:
                        result = await func(*args, **kwargs)
                        if leaks:
                            gc.collect()
                    ok = True
                    return result
                finally:
                    finish(ok)
        else:
            @functools.wraps(func)
            def wrapper(*args, **kwargs):
                pyfuncitem.obj = func  # plugins that call the hook again (flaky) must not wrap twice
                ok = False
                try:
                    with tracker:
                        result = func(*args, **kwargs)
                        if leaks:
                            gc.collect()
                    ok = True
                    return result
                finally:
                    finish(ok)
        pyfuncitem.obj = wrapper
        try:
            yield
        finally:
            pyfuncitem.obj = func

    def _checks(self, item, marks):
        """The marker arguments, checked before the test runs (a bad one is the test's error)."""
        checks = {}
        m = marks.get("limit_memory")
        if m:
            if len(m.args) != 1 or m.kwargs:
                _marker_error("write limit_memory('24 MB'): one size, no keywords (current_thread_only is not "
                              "supported)")
            checks["limit_memory"] = _size(m.args[0], "limit_memory", _marker_error)
        m = marks.get("limit_leaks")
        if m:
            extra = set(m.kwargs) - {"filter_fn"}
            if len(m.args) != 1 or extra:
                _marker_error(f"write limit_leaks('1 MB', filter_fn=None): one size"
                              f"{'; ' + ', '.join(sorted(extra)) + ' is not supported' if extra else ''}")
            fn = m.kwargs.get("filter_fn")
            if fn is not None and not callable(fn):
                _marker_error("limit_leaks' filter_fn must be callable")
            checks["limit_leaks"] = (_size(m.args[0], "limit_leaks", _marker_error), fn)
        return checks

    def _measure(self, nodeid, path, checks):
        from memprof import _memprof

        # the figures (0.05 ms); the locations, with stacks, only for a failure
        peak, peak_blocks, leaked, _, biggest, _, biggest_leak, truncated = _memprof.figures(path)
        detail = None

        def locations():
            nonlocal detail
            if detail is None:
                detail = memprof.load(path, top=1000 if "limit_leaks" in checks else self.locations)
            return detail

        figures = {"peak_bytes": peak, "leaked_bytes": leaked, "biggest": biggest}
        failures = []
        if truncated:  # figures that would pass a test on what was not recorded
            failures.append(f"memprof: the capture of this test was cut short (recording stopped: see memprof's "
                            f"line on stderr; is {os.path.dirname(path)} full?), so its figures are incomplete; "
                            f"give the captures room with MEMPROF_PYTEST_TMPDIR or --memprof-keep DIR")
        limit = checks.get("limit_memory")
        if limit is not None and peak > limit:
            failures.append(f"memprof: the test's peak heap was {human(peak)} in {peak_blocks:,} "
                            f"blocks, over its limit_memory of {human(limit)}\n"
                            + self._locations("biggest locations at the peak", locations().top_at_peak))
        if "limit_leaks" in checks and biggest_leak > checks["limit_leaks"][0]:
            limit, fn = checks["limit_leaks"]
            over = [loc for loc in locations().top_leaked
                    if loc.bytes > limit and (fn is None or fn(Stack(loc.stack)))]
            if over:
                failures.append(f"memprof: the test leaked {human(over[0].bytes)} at {over[0]}, over its "
                                f"limit_leaks of {human(limit)} per location ({len(over)} location"
                                f"{'s' if len(over) > 1 else ''} over; {human(leaked)} leaked in all)\n"
                                + self._locations("locations over the limit", over))
        base = self.baseline.get(nodeid) if self.baseline is not None else None
        if base is not None:
            grew = peak - base
            if grew > self.floor and grew * 100 > self.max_growth * base:
                pct = f"+{grew * 100 / base:.1f}%" if base else "from nothing"
                failures.append(f"memprof: the test's peak heap grew from {human(base)} to {human(peak)} "
                                f"({pct}, {human(grew)}), more than --memprof-max-growth {self.max_growth:g}% over "
                                f"{self.baseline_path}\n"
                                + self._locations("biggest locations at the peak", locations().top_at_peak))
        if failures and self.keep:
            failures.append(f"capture: {path}")
        self.pending[nodeid] = (None if truncated else figures, "\n".join(failures))

    def _locations(self, title, locs):
        lines = [f"{title}:"]
        for i, loc in enumerate(locs[:self.locations], 1):
            lines.append(f"  {i}. {human(loc.bytes)} in {loc.allocations:,} block"
                         f"{'s' if loc.allocations != 1 else ''} at {loc}")
            stack = _test_frames(loc.stack)
            for f in stack[:self.stacks]:
                lines.append(f"       {f}")
            if len(stack) > self.stacks:
                lines.append(f"       ... {len(stack) - self.stacks} more frames")
        if len(locs) > self.locations:
            lines.append(f"  ... and {len(locs) - self.locations} more")
        return "\n".join(lines)

    # -- verdicts ----------------------------------------------------------

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        if call.when != "call":
            return
        got = self.pending.pop(item.nodeid, None)
        if got is None:
            return
        figures, failure = got
        report = outcome.get_result()
        if figures:
            report.user_properties.extend((_PROPERTY + "_" + k, v) for k, v in figures.items())
        if failure and report.passed:
            report.outcome = "failed"
            report.longrepr = failure

    def pytest_runtest_logreport(self, report):
        if report.when != "call":
            return
        got = {name[len(_PROPERTY) + 1:]: value for name, value in report.user_properties
               if isinstance(name, str) and name.startswith(_PROPERTY + "_")}
        if {"peak_bytes", "leaked_bytes"} <= got.keys():
            got["passed"] = report.passed
            self.results[report.nodeid] = got

    # -- the end -----------------------------------------------------------

    def pytest_sessionfinish(self, session):
        if self.save_path and not self.worker:
            # a test that failed (over a limit, or grown past the baseline) keeps its old figures:
            # the baseline never learns a regression
            self.updated = {k: {"peak_bytes": v["peak_bytes"], "leaked_bytes": v["leaked_bytes"]}
                            for k, v in self.results.items() if v["passed"]}
            tests = dict(sorted({**self.saved, **self.updated}.items()))
            tmp = f"{self.save_path}.tmp{os.getpid()}"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"memprof_baseline": BASELINE_FORMAT, "tests": tests}, f, indent=1)
                f.write("\n")
            os.replace(tmp, self.save_path)

    def pytest_terminal_summary(self, terminalreporter):
        if self.worker:
            return
        tr = terminalreporter
        if self.report and self.results:
            tr.write_sep("=", "memprof")
            ranked = sorted(self.results.items(), key=lambda kv: (-kv[1]["peak_bytes"], kv[0]))
            tr.write_line(f"tests by peak heap ({min(self.report, len(ranked))} of {len(ranked)} profiled):")
            for nodeid, v in ranked[:self.report]:
                tr.write_line(f"  {human(v['peak_bytes']):>10}  leaked {human(v['leaked_bytes']):>10}  {nodeid}")
                if v.get("biggest"):
                    tr.write_line(f"{'':14}biggest at the peak: {v['biggest']}")
        if self.keep and self.results:
            tr.write_line(f"memprof: captures kept in {self.keep} (memprof summary FILE)")
        if self.save_path:
            kept = len(set(self.saved) - set(self.updated))
            tr.write_line(f"memprof: baseline written to {self.save_path}: {len(self.updated)} tests updated, "
                          f"{kept} kept from before")

    def pytest_unconfigure(self, config):
        from memprof import _memprof

        _memprof.keep_hooks(False, None)
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
