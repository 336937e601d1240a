"""Tests with known figures for memprof's pytest plugin (run by
test_pytest_plugin.py). Each bytes(MiB) is one block of MiB + 33 bytes
(PyBytesObject's header and trailing NUL), from make_buffers' append line."""
import os

import pytest

MiB = 1 << 20
kept = []


def make_buffers(n):
    out = []
    for _ in range(n):
        out.append(bytes(MiB))  # BUFFERS LINE
    return out


@pytest.mark.limit_memory("4 MB")
def test_over_limit():
    bufs = make_buffers(6)  # OVER LINE
    del bufs


@pytest.mark.limit_memory("8 MB")
def test_under_limit():
    bufs = make_buffers(6)
    del bufs


@pytest.mark.limit_leaks("1 MB")
def test_leaks():
    kept.extend(make_buffers(3))  # LEAK LINE


@pytest.mark.limit_leaks("1 MB")
def test_frees_what_it_makes():
    make_buffers(3)


def _not_known(stack):
    return not any(f.function == "test_known_leak" for f in stack.frames)


@pytest.mark.limit_leaks("1 MB", filter_fn=_not_known)
def test_known_leak():
    kept.extend(make_buffers(2))


def test_growth():
    bufs = make_buffers(int(os.environ.get("GROWTH_MIB", "2")))  # GROWTH LINE
    del bufs


def test_many_allocations():
    """400,000 malloc'ed blocks: a capture of about 200 KiB (the test of a cut-short capture runs
    it with a file size limit)."""
    for i in range(400_000):
        bytes(600 + i % 4000)
