"""`memprof run --native`: native C/C++ frames merged with the Python frames they ran under,
symbolized offline. A zlib compressor (libz's deflateInit2_, a system library without debug
info), a library opened with ctypes after start (libmpalloc.so, with debug info) and a C++
extension built with pybind11 (mpext, demangled names): each allocation's stack names the native
function, leaf first, then the Python line that called it; the location is that Python line."""
from pathlib import Path

from conftest import C_SOURCES, CONFIG, find, script_line, source_line

# zlib's documented memory use for deflate (zconf.h): (1 << (windowBits + 2)) + (1 << (memLevel + 9))
# = 256 KiB for windowBits 15 and memLevel 8, in four 64 KiB buffers, "plus a few kilobytes for
# small objects" (the deflate_state, and the zlib module's lock for the compressor).
DEFLATE_BUFFERS = (1 << (15 + 2)) + (1 << (8 + 9))
ZLIB_LINE = script_line("native_zlib.py", "ZLIB-LINE")
ZLIB_CALLER = script_line("native_zlib.py", "MAKE-CALL")


def python_frame(stack, function, script, line):
    """Index of the frame of script's function at line; it is a Python frame."""
    at = [i for i, f in enumerate(stack)
          if f["function"] == function and f["file"].endswith(script) and f["line"] == line]
    assert len(at) == 1, stack
    assert "native" not in stack[at[0]] and "module" not in stack[at[0]]
    return at[0]


def native_frame(stack, function):
    """Index of the one native frame named function."""
    at = [i for i, f in enumerate(stack) if f["function"] == function]
    assert len(at) == 1, [f["function"] for f in stack]
    assert stack[at[0]]["native"] is True
    return at[0]


def zlib_location(memprof, *flags):
    _, cap = memprof.run("native_zlib.py", flags=flags, out=f"zlib{len(flags)}.memprof")
    s = memprof.summary(cap)
    assert not s["capture"]["truncated"]
    loc = find(s["top_leaked"], "make", ZLIB_LINE)
    assert len(loc) == 1
    return s, loc[0]


def test_zlib_deflate_state_under_its_python_line(memprof):
    _, loc = zlib_location(memprof, "--native")
    # the location is the innermost Python frame, not the native leaf
    assert loc["file"].endswith("native_zlib.py") and "native" not in loc
    assert DEFLATE_BUFFERS <= loc["bytes"] < DEFLATE_BUFFERS + 8192
    assert loc["allocations"] >= 5  # the deflate_state and its four buffers
    stack = loc["stack"]
    deflate = native_frame(stack, "deflateInit2_")
    assert Path(stack[deflate]["module"]).name.startswith("libz.so")
    make = python_frame(stack, "make", "native_zlib.py", ZLIB_LINE)
    module = python_frame(stack, "<module>", "native_zlib.py", ZLIB_CALLER)
    assert deflate < make < module  # leaf first
    # everything nearer the leaf than the innermost Python frame is native code
    assert all(f.get("native") is True for f in stack[:make])
    # merged, not appended: the evaluation loop's frames gave way to the Python frames they ran,
    # and the interpreter's own C frames (Py_RunMain, main) stay beyond the outermost one
    names = [f["function"] for f in stack]
    assert not [n for n in names if n.startswith("_PyEval_EvalFrameDefault")], names
    assert "Py_RunMain" in names[module + 1:] and all(f.get("native") is True for f in stack[module + 1:]), names


def test_without_native_no_frame_is_native(memprof):
    s, loc = zlib_location(memprof)
    assert [(f["function"], f["line"]) for f in loc["stack"]] == [("make", ZLIB_LINE), ("<module>", ZLIB_CALLER)]
    for l in s["top_at_peak"] + s["top_leaked"]:
        assert "native" not in l
        assert not [f for f in l["stack"] if "native" in f or "module" in f], l
    # the same allocations at the same line as with --native
    _, native = zlib_location(memprof, "--native")
    assert (loc["bytes"], loc["allocations"]) == (native["bytes"], native["allocations"])


def test_library_opened_by_ctypes_is_named(memprof):
    _, cap = memprof.run("native_ctypes.py", CONFIG["mpalloc"], flags=["--native"])
    s = memprof.summary(cap)
    line = script_line("native_ctypes.py", "CALL-LINE")
    loc = find(s["top_leaked"], "call_lib", line)
    assert [(l["bytes"], l["allocations"]) for l in loc] == [(3 * (1 << 20) + 12345, 1)]  # the freed twin is not
    stack = loc[0]["stack"]
    # the leaf is the library's function (memprof's own frames are not shown), with its source line
    leaf = stack[0]
    assert (leaf["function"], leaf["native"], leaf["module"]) == ("mp_test_alloc", True, CONFIG["mpalloc"])
    assert leaf["file"].endswith("tests/c/mpalloc.c")
    assert leaf["line"] == source_line(C_SOURCES / "mpalloc.c", "MPALLOC-LINE")
    assert 0 < python_frame(stack, "call_lib", "native_ctypes.py", line)


def test_cpp_extension_frames_are_demangled(memprof):
    _, cap = memprof.run("native_ext.py", CONFIG["mpext_dir"], flags=["--native"])
    s = memprof.summary(cap)
    line = script_line("native_ext.py", "GROW-CALL")
    loc = find(s["top_leaked"], "grow", line)
    assert [(l["bytes"], l["allocations"]) for l in loc] == [(2 * (1 << 20) + 4321, 1)]
    stack = loc[0]["stack"]
    grow = native_frame(stack, "mpext::Holder::grow(int)")
    frame = stack[grow]
    assert Path(frame["module"]).parent == Path(CONFIG["mpext_dir"])
    assert Path(frame["module"]).name.startswith("mpext.")
    assert frame["file"].endswith("tests/c/mpext.cpp")
    assert frame["line"] == source_line(C_SOURCES / "mpext.cpp", "GROW-LINE")
    # new char[] reached malloc through libstdc++'s operator new, named as C++ too
    assert any(f["function"].startswith("operator new") for f in stack[:grow])
    assert grow < python_frame(stack, "grow", "native_ext.py", line) < \
        python_frame(stack, "<module>", "native_ext.py", script_line("native_ext.py", "MODULE-CALL"))
