"""Which allocator made what: file-backed and anonymous mmap (a file mapping is not heap),
munmap of part of a mapping, and --trace-python-allocators (each Python object one
PyObject_Malloc, recorded once)."""
from conftest import find, script_line

MiB = 1 << 20
N = 10000
PY_ALLOCATORS = {"PyMem_RawMalloc", "PyMem_Malloc", "PyObject_Malloc"}


def at(locations, script, marker, function="<module>"):
    return [(l["bytes"], l["allocations"]) for l in find(locations, function, script_line(script, marker))]


def test_file_mapping_is_not_heap_anonymous_mapping_is(memprof, tmp_path):
    p, cap = memprof.run("mmaps.py", tmp_path / "mapped.dat")
    assert p.stdout == f"mmaps {8 * MiB} {8 * MiB}\n"
    s = memprof.summary(cap)
    files = [a for a in s["allocators"] if a["file_backed"]]
    assert files == [{"allocator": "mmap (file)", "file_backed": True, "bytes": 8 * MiB, "allocations": 1}]
    anon = [a for a in s["allocators"] if a["allocator"] == "mmap"]
    assert len(anon) == 1 and anon[0]["file_backed"] is False
    assert anon[0]["bytes"] >= 8 * MiB  # pymalloc's arenas are anonymous mappings too
    assert s["mapped_files"]["total"] == s["mapped_files"]["peak"] == {"bytes": 8 * MiB, "allocations": 1}
    # the interpreter unmaps both when it tears the module down, after the script-end mark
    assert s["mapped_files"]["at_exit"] == {"bytes": 0, "allocations": 0}
    assert at(s["top_leaked"], "mmaps.py", "ANON-MAP") == [(8 * MiB, 1)]
    assert at(s["top_at_peak"], "mmaps.py", "ANON-MAP") == [(8 * MiB, 1)]
    assert at(s["top_leaked"], "mmaps.py", "FILE-MAP") == at(s["top_at_peak"], "mmaps.py", "FILE-MAP") == []
    assert s["leaked"]["bytes"] >= 8 * MiB


def test_munmap_of_the_middle_frees_just_that_range(memprof):
    p, cap = memprof.run("munmap_middle.py")
    assert p.stdout == "munmap 0\n"
    s = memprof.summary(cap)
    assert at(s["top_at_peak"], "munmap_middle.py", "MAP-LINE") == [(10 * MiB, 1)]
    assert at(s["top_leaked"], "munmap_middle.py", "MAP-LINE") == [(6 * MiB, 1)]  # two pieces, one allocation
    assert at(s["top_leaked"], "munmap_middle.py", "HOLE-LINE") == []
    assert s["at_exit"]["bytes"] >= 6 * MiB  # nothing unmaps the rest
    assert s["mapped_files"]["total"] == {"bytes": 0, "allocations": 0}


def slotted(memprof, *flags):
    p, cap = memprof.run("slotted.py", flags=flags, out=f"slotted{len(flags)}.memprof")
    word, n, getsizeof, basicsize = p.stdout.split()
    assert (word, int(n)) == ("slotted", N)
    return int(getsizeof), int(basicsize), memprof.summary(cap)


def test_trace_python_allocators_one_allocation_per_object(memprof):
    getsizeof, basicsize, s = slotted(memprof, "--trace-python-allocators")
    # CPython 3.11 makes a Slotted instance with one PyObject_Malloc of its basic size
    # (ob_refcnt, ob_type and the slot `a`: 24 bytes) plus the 16-byte GC header that comes
    # before every object the cycle collector tracks: 40 bytes. sys.getsizeof already counts
    # the GC header, so the allocation is sys.getsizeof(Slotted()) itself, not 16 bytes more.
    size = basicsize + 16
    assert (basicsize, getsizeof, size) == (24, 40, 40)
    assert at(s["top_leaked"], "slotted.py", "OBJ-LINE") == [(N * size, N)]
    assert at(s["top_at_peak"], "slotted.py", "OBJ-LINE") == [(N * size, N)]
    # recorded once: PyObject_Malloc hands a large block to malloc, which is not counted again
    assert at(s["top_leaked"], "slotted.py", "BIG-LINE") == [(MiB, 1)]
    by = {a["allocator"]: a for a in s["allocators"]}
    assert PY_ALLOCATORS <= by.keys()
    assert by["PyObject_Malloc"]["allocations"] >= N + 1 and by["PyObject_Malloc"]["bytes"] >= N * size + MiB
    assert not any(by[k]["file_backed"] for k in PY_ALLOCATORS)


def test_without_the_flag_objects_come_from_pymalloc_arenas(memprof):
    _, _, s = slotted(memprof)
    got = at(s["top_leaked"], "slotted.py", "OBJ-LINE")
    # at most the 1 MiB arenas the 400 KB of objects were carved from, never one per object
    assert got == [] or (len(got) == 1 and got[0][1] <= 2 and got[0][0] == got[0][1] * MiB), got
    assert at(s["top_leaked"], "slotted.py", "BIG-LINE") == [(MiB, 1)]  # a plain malloc
    assert not PY_ALLOCATORS & {a["allocator"] for a in s["allocators"]}
