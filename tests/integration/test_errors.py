"""Bad input: one clear line, a non-zero exit, no crash, nothing of the user's overwritten."""
import os

from conftest import SCRIPTS


def one_line(p):
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    return lines[0]


def test_summary_missing_file(memprof):
    p = memprof.cmd("summary", "nope.memprof")
    assert p.returncode == 2 and "nope.memprof" in one_line(p)


def test_summary_empty_garbage_and_directory(memprof, tmp_path):
    (tmp_path / "empty.memprof").write_bytes(b"")
    (tmp_path / "junk.memprof").write_bytes(b"hello world, not a capture" * 10)
    for name, word in (("empty.memprof", "empty"), ("junk.memprof", "not a memprof capture"), (".", "not a regular file")):
        p = memprof.cmd("summary", name)
        assert p.returncode == 2 and word in one_line(p), p.stderr


def test_summary_newer_version_names_both(memprof, tmp_path):
    _, cap = memprof.run("deep.py")
    data = bytearray(cap.read_bytes())
    data[8:12] = (2).to_bytes(2, "little") + (3).to_bytes(2, "little")
    cap.write_bytes(bytes(data))
    p = memprof.cmd("summary", cap)
    line = one_line(p)
    assert p.returncode == 2 and "2.3" in line and "1.2" in line


def test_summary_corrupted_body(memprof, tmp_path):
    _, cap = memprof.run("deep.py")
    data = bytearray(cap.read_bytes())
    data[len(data) // 2] ^= 0xFF
    cap.write_bytes(bytes(data))
    p = memprof.cmd("summary", cap)
    assert p.returncode == 2 and "corrupted" in one_line(p)


def test_summary_bad_flags(memprof):
    p = memprof.cmd("summary", "--frobnicate", "x")
    assert p.returncode == 2 and "--frobnicate" in one_line(p)
    p = memprof.cmd("summary", "--top", "zero", "x")
    assert p.returncode == 2 and "--top" in one_line(p)
    p = memprof.cmd("summary")
    assert p.returncode == 2


def test_run_refuses_to_overwrite(memprof, tmp_path):
    out = tmp_path / "mine.memprof"
    out.write_text("precious")
    p = memprof.cmd("run", "-o", out, SCRIPTS / "deep.py")
    assert p.returncode == 2 and "--force" in one_line(p)
    assert out.read_text() == "precious"
    p = memprof.cmd("run", "-q", "--force", "-o", out, SCRIPTS / "deep.py")
    assert p.returncode == 0 and out.read_bytes()[:8] == b"\x89MEMPROF"
    assert (out.stat().st_mode & 0o777) == 0o600


def test_run_refuses_symlinks(memprof, tmp_path):
    target = tmp_path / "target.txt"
    target.write_text("precious")
    link = tmp_path / "link.memprof"
    link.symlink_to(target)
    for extra in ([], ["--force"]):
        p = memprof.cmd("run", *extra, "-o", link, SCRIPTS / "deep.py")
        assert p.returncode == 2 and "symbolic link" in one_line(p)
    assert target.read_text() == "precious"


def test_run_unwritable_and_missing(memprof, tmp_path):
    p = memprof.cmd("run", "-o", tmp_path / "no" / "such" / "dir.memprof", SCRIPTS / "deep.py")
    assert p.returncode == 2 and "cannot create" in one_line(p)
    p = memprof.cmd("run", tmp_path / "missing.py")
    assert p.returncode == 2 and "missing.py" in one_line(p)
    p = memprof.cmd("run", "--python", tmp_path / "nopython", SCRIPTS / "deep.py")
    assert p.returncode == 2 and "nopython" in one_line(p)
    p = memprof.cmd("run")
    assert p.returncode == 2 and "nothing to run" in one_line(p)
    p = memprof.cmd("run", "--bogus", SCRIPTS / "deep.py")
    assert p.returncode == 2 and "--bogus" in one_line(p)


def test_unknown_command_and_help(memprof):
    p = memprof.cmd("frobnicate")
    assert p.returncode == 2 and "frobnicate" in one_line(p)
    for args in (["--help"], ["run", "--help"], ["summary", "--help"]):
        p = memprof.cmd(*args)
        assert p.returncode == 0 and "usage: memprof" in p.stdout
    p = memprof.cmd("--version")
    assert p.returncode == 0 and p.stdout.startswith("memprof ")
