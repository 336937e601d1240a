"""Shared fixtures for the integration tests: they run real programs through the real CLI
(`memprof run`, `memprof summary --json`) from a build tree.

The build tree is $MEMPROF_BUILD (default: build/ at the top of the repository); CMake writes
memprof-test.json there with the paths of the programs and of the Python it was configured for.
"""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SCRIPTS = HERE / "scripts"
TOP = HERE.parent.parent
C_SOURCES = TOP / "tests" / "c"


def _config():
    build = Path(os.environ.get("MEMPROF_BUILD", TOP / "build")).resolve()
    cfg = build / "memprof-test.json"
    if not cfg.exists():
        pytest.exit(f"{cfg} not found: build memprof first (cmake -S . -B build && cmake --build build)", 2)
    return json.loads(cfg.read_text())


CONFIG = _config()


class Memprof:
    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.bin = Path(CONFIG["bindir"])
        self.python = CONFIG["python"]
        self.library = CONFIG["library"]

    def cmd(self, *args, prefix=(), **kw):
        """memprof ARGS (after `prefix`, a command such as setpriv's)."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 120)
        kw.setdefault("cwd", self.tmp)
        return subprocess.run([*prefix, str(self.bin / "memprof"), *map(str, args)], **kw)

    def run(self, script, *args, out="capture.memprof", flags=(), check=True, **kw):
        """memprof run -q -o OUT [flags] script args; returns (completed process, capture path)."""
        path = self.tmp / out
        target = [str(SCRIPTS / script)] if not str(script).startswith("-") else [script]
        p = self.cmd("run", "-q", "-o", path, *flags, *target, *args, **kw)
        if check:
            assert p.returncode == 0, p.stderr
        return p, path

    def run_killed(self, cap, mode, *flags):
        """memprof run [flags] scripts/killed.py MODE, the program SIGKILLed once it is ready (and
        its full blocks had time to reach memprof); asserts memprof died of the same signal."""
        proc = subprocess.Popen([str(self.bin / "memprof"), "run", "-q", *flags, "-o", str(cap),
                                 str(SCRIPTS / "killed.py"), mode], stdout=subprocess.PIPE, text=True, cwd=self.tmp)
        word, pid = proc.stdout.readline().split()
        assert word == "ready"
        time.sleep(1.5)  # full blocks are written by the writer thread, a block in progress after 1 s quiet
        os.kill(int(pid), signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
        proc.stdout.close()

    def summary(self, path, *extra):
        p = self.cmd("summary", "--json", "--top", "50", *extra, path)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)

    def preloaded(self, argv, out, **kw):
        """Runs a program (not Python) under LD_PRELOAD=libmemprof.so with MEMPROF_FD, as a
        library user would; returns (completed process, capture path)."""
        path = self.tmp / out
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            env = dict(os.environ, LD_PRELOAD=self.library, MEMPROF_FD=str(fd))
            kw.setdefault("timeout", 60)
            p = subprocess.run(list(map(str, argv)), env=env, pass_fds=(fd,), cwd=self.tmp, **kw)
        finally:
            os.close(fd)
        return p, path

    def plain(self, script, *args, **kw):
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 120)
        kw.setdefault("cwd", self.tmp)
        return subprocess.run([self.python, str(SCRIPTS / script), *map(str, args)], **kw)


@pytest.fixture
def memprof(tmp_path):
    return Memprof(tmp_path)


def script_line(script, marker):
    """1-based line of the first line of scripts/<script> containing marker."""
    return source_line(SCRIPTS / script, marker)


def source_line(path, marker):
    """1-based line of the first line of the file at path containing marker."""
    for n, text in enumerate(Path(path).read_text().splitlines(), 1):
        if marker in text:
            return n
    raise AssertionError(f"{marker} not in {path}")


def find(locations, function, line=None):
    """The location entries of a summary list for a function (and line)."""
    return [l for l in locations if l["function"] == function and (line is None or l["line"] == line)]
