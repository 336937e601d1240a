"""The two ways memprof is installed, checked from their results: `pip install .` (the
scikit-build-core wheel: package, C extension, programs and libmemprof.so inside it, a
`memprof` command, the pytest plugin's entry point) into a fresh virtualenv, and
`cmake --install` into a prefix. Known answers: scripts/sized.py holds 7,000,003 bytes at
its SIZED line, scripts/wheel_check.py tracks 3,000,017 at its TRACKED line.

Built once, in the run without sanitizers (pip fetches scikit-build-core from PyPI)."""
import json
import os
import shutil
import subprocess

import pytest

from conftest import CONFIG, SCRIPTS, TOP, source_line

pytestmark = pytest.mark.skipif(CONFIG.get("sanitized", False),
                                reason="the wheel is built and checked once, in the build without sanitizers")


def env():
    e = dict(os.environ)
    for k in ("PYTHONPATH", "LD_PRELOAD", "MEMPROF_LIBRARY", "MEMPROF_PYTHON", "PYTHONHOME"):
        e.pop(k, None)
    return e


def run(argv, *, timeout=300, check=True, **kw):
    kw.setdefault("env", env())
    p = subprocess.run(list(map(str, argv)), capture_output=True, text=True, timeout=timeout, **kw)
    if check:
        assert p.returncode == 0, f"{argv}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    d = tmp_path_factory.mktemp("wheel") / "venv"
    # system site packages: pytest from the machine, for the plugin's entry point
    run([CONFIG["python"], "-m", "venv", "--system-site-packages", d])
    run([d / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", TOP], timeout=1200)
    return d


def sized_answer(summary):
    top = summary["top_leaked"][0]
    return top["function"], top["line"], top["bytes"]


SIZED = ("<module>", source_line(SCRIPTS / "sized.py", "# SIZED LINE"), 7_000_003)
TRACKED = ["<module>", source_line(SCRIPTS / "wheel_check.py", "# TRACKED LINE"), 3_000_017]


def test_pip_install_gives_a_memprof_command(venv, tmp_path):
    cap = tmp_path / "sized.memprof"
    p = run([venv / "bin" / "memprof", "run", "-q", "-o", cap, SCRIPTS / "sized.py"], cwd=tmp_path)
    assert p.stdout.splitlines()[0] == str(venv / "bin" / "python")  # the command's own interpreter
    s = json.loads(run([venv / "bin" / "memprof", "summary", "--json", cap]).stdout)
    assert sized_answer(s) == SIZED
    # python -m memprof is the same CLI
    s = json.loads(run([venv / "bin" / "python", "-m", "memprof", "summary", "--json", cap]).stdout)
    assert sized_answer(s) == SIZED
    assert "usage: memprof" in run([venv / "bin" / "python", "-m", "memprof", "--help"]).stdout
    assert "usage: memprof live PORT" in run([venv / "bin" / "memprof", "live", "--help"]).stdout


def test_pip_install_package_finds_its_pieces(venv, tmp_path):
    p = run([venv / "bin" / "python", SCRIPTS / "wheel_check.py", tmp_path / "t.memprof"], cwd=tmp_path)
    d = json.loads(p.stdout)
    assert d["package"].startswith(str(venv / "lib")), d
    assert d["library"] == os.path.join(d["package"], "lib", "memprof", "libmemprof.so") and d["library_exists"]
    assert d["executable"] == os.path.join(d["package"], "bin", "memprof")
    assert d["top"] == TRACKED


def test_pip_install_registers_the_pytest_plugin(venv, tmp_path):
    shutil.copy(SCRIPTS / "plugin_suite.py", tmp_path / "test_limits.py")
    argv = [venv / "bin" / "python", "-m", "pytest", "-p", "no:cacheprovider", "test_limits.py"]
    p = run([*argv, "--memprof", "-k", "over_limit"], cwd=tmp_path, check=False)  # no -p: the entry point
    assert p.returncode == 1, p.stdout + p.stderr
    assert "over its limit_memory of 4.0 MiB" in p.stdout
    # -p memprof.pytest_plugin as well (the build tree's way) loads it once, without a clash
    p = run([*argv, "-p", "memprof.pytest_plugin", "--memprof", "-k", "under_limit"], cwd=tmp_path, check=False)
    assert p.returncode == 0, p.stdout + p.stderr


def test_cmake_install_into_a_prefix(tmp_path):
    prefix = tmp_path / "prefix"
    run(["cmake", "--install", CONFIG["build_dir"], "--prefix", prefix])
    cap = tmp_path / "sized.memprof"
    p = run([prefix / "bin" / "memprof", "run", "-q", "-o", cap, SCRIPTS / "sized.py"], cwd=tmp_path)
    assert p.stdout.splitlines()[0] == CONFIG["python"]  # the interpreter it was built for
    assert sized_answer(json.loads(run([prefix / "bin" / "memprof", "summary", "--json", cap]).stdout)) == SIZED
    assert "usage: memprof live PORT" in run([prefix / "bin" / "memprof", "live", "--help"]).stdout
    assert (prefix / "lib" / "memprof" / "libmemprof.so").exists() or list(prefix.glob("lib/*/memprof/libmemprof.so"))
    site = next(prefix.rglob("_memprof*.so")).parent.parent
    p = run([CONFIG["python"], SCRIPTS / "wheel_check.py", tmp_path / "t.memprof"], cwd=tmp_path,
            env=dict(env(), PYTHONPATH=str(site)))
    d = json.loads(p.stdout)
    assert d["library"].startswith(str(prefix)) and d["library_exists"] and d["top"] == TRACKED
