"""Golden tests: every report on tests/golden/basic.memprof, a capture made of synthetic
records (tests/unit/test_golden.c says what it holds and checks that it is exactly what the
test kit writes), against the expected output in tests/golden/expected/.

After a deliberate change of a report's output, write the expected files anew and read the
difference before committing it:
    MEMPROF_UPDATE_GOLDEN=1 MEMPROF_BUILD=build python3 -m pytest tests/integration/test_golden.py
"""
import os
import shutil
from pathlib import Path

import pytest

from conftest import TOP

GOLDEN = TOP / "tests" / "golden"
EXPECTED = GOLDEN / "expected"

# (name of the expected file, report arguments); the capture goes last
CASES = [
    ("summary.txt", ["summary"]),
    ("summary.json", ["summary", "--json"]),
    ("stats.txt", ["stats"]),
    ("stats.json", ["stats", "--json"]),
    ("stats-thread2.json", ["stats", "--json", "--thread", "2"]),
    ("table.txt", ["table"]),
    ("table-leaks-count.txt", ["table", "--leaks", "--sort", "count"]),
    ("table-thread.txt", ["table", "--sort", "thread"]),
    ("table.json", ["table", "--json"]),
    ("tree.txt", ["tree"]),
    ("tree-leaks-cut.txt", ["tree", "--leaks", "--cut", "10"]),
    ("tree.json", ["tree", "--json"]),
    ("leaks.txt", ["leaks"]),
    ("leaks-at-exit.txt", ["leaks", "--at-exit"]),
    ("leaks-ignore.json", ["leaks", "--json", "--ignore", "libgold.so", "--ignore", "run"]),
    ("flamegraph.json", ["flamegraph", "--json"]),
    ("flamegraph-leaks.json", ["flamegraph", "--json", "--leaks"]),
    ("flamegraph-temporary.json", ["flamegraph", "--json", "--temporary"]),
    ("flamegraph-window.json", ["flamegraph", "--json", "--from", "10ms", "--to", "30ms"]),
    ("export.folded", ["export", "--format", "folded", "-o", "-"]),
    ("export-leaks.folded", ["export", "--format", "folded", "--leaks", "-o", "-"]),
    ("export.csv", ["export", "--format", "csv", "-o", "-"]),
    ("export.speedscope.json", ["export", "--format", "speedscope", "-o", "-"]),
]


@pytest.mark.parametrize("name,args", CASES, ids=[c[0] for c in CASES])
def test_golden(memprof, name, args):
    # the capture is read from the test's folder under a fixed name: outputs hold its path
    shutil.copy(GOLDEN / "basic.memprof", memprof.tmp / "basic.memprof")
    p = memprof.cmd(*args, "basic.memprof")
    assert p.returncode == 0, p.stderr
    expected = EXPECTED / name
    if os.environ.get("MEMPROF_UPDATE_GOLDEN"):
        expected.write_text(p.stdout)
    assert expected.exists(), f"{expected} is missing: see this file's docstring"
    assert p.stdout == expected.read_text(), f"memprof {' '.join(args)}: output differs from {expected}"
