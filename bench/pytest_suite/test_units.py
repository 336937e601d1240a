"""A unit-test suite that does not allocate much, for the pytest plugin's overhead
(bench/plugin_overhead.py): 200 tests of a few milliseconds each of parsing, formatting,
arithmetic and small containers, as application unit tests are."""
import datetime
import decimal
import fractions
import json
import re

import pytest

WORDS = "the quick brown fox jumps over the lazy dog".split()
DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


@pytest.mark.parametrize("n", range(50))
def test_format_and_parse(n):
    lines = [f"{i:05d},{WORDS[i % 9]},{i * n / 7:.3f}" for i in range(2000)]
    rows = [line.split(",") for line in lines]
    assert sum(int(r[0]) for r in rows) == 1999000
    assert all(float(r[2]) >= 0 for r in rows)


@pytest.mark.parametrize("n", range(50))
def test_arithmetic(n):
    f = sum(fractions.Fraction(1, k) for k in range(1, 60))
    d = sum(decimal.Decimal(k) / 7 for k in range(1, 300 + n))
    assert f > 4 and d > 0
    assert sum(i * i % 97 for i in range(80000)) > 0


@pytest.mark.parametrize("n", range(50))
def test_json_roundtrip(n):
    doc = {"id": n, "tags": WORDS, "nested": [{"k": i, "v": str(i)} for i in range(60)]}
    for _ in range(80):
        assert json.loads(json.dumps(doc)) == doc


@pytest.mark.parametrize("n", range(50))
def test_dates_and_regex(n):
    start = datetime.date(2020, 1, 1) + datetime.timedelta(days=n)
    text = " ".join((start + datetime.timedelta(days=i)).isoformat() for i in range(1500))
    found = DATE.findall(text)
    assert len(found) == 1500 and found[0][0] == str(start.year)
    assert sorted(set(WORDS * 500), key=len)[0] in WORDS
