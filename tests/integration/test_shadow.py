"""--trace-python-allocators keeps a shadow of each thread's frames (a frame-evaluation hook) so
that a deep stack is not read whole at every allocation. The stacks it records must be the ones
a plain walk records, frame for frame and line for line, however the stack changed in between:
recursion, one callee called from two lines in turn, a generator resumed from two functions, a
closure called back from C, an exception out of a deep call, one call instruction running two functions in turn, and recursion deeper than the C
stack could hold if every call nested on it (in a thread with a 1 MiB stack, and in the main
thread).

With `--native` as well the walk stops at the innermost hooked call's C frame: the mixed stacks
(Python frames with the C frames between them) must read as `--native` alone records them,
where no hook is set: the hook's own frames and the C path it adds to a Python-to-Python call
are not shown."""
import json

import pytest

from conftest import Memprof, script_line

SCRIPT = "shadow_stacks.py"
THREAD_DEPTH, MAIN_DEPTH = 3000, 30000


def line(marker):
    return script_line(SCRIPT, marker)


def leak_rows(memprof, name, *flags):
    """The rows of `table --leaks` for a run of the script with flags."""
    p, cap = memprof.run(SCRIPT, THREAD_DEPTH, MAIN_DEPTH, flags=flags, out=f"{name}{len(flags)}.memprof")
    # the hook is set with --trace-python-allocators only, and is set again after the deep
    # recursions took it off
    hooked = "1 1" if "--trace-python-allocators" in flags else "0 0"
    assert p.stdout == f"shadow 21 hooked {hooked}\n"
    t = memprof.cmd("table", "--leaks", "--json", cap)
    assert t.returncode == 0, t.stderr
    return json.loads(t.stdout)["rows"]


def leaks(memprof, *flags):
    """{stack as ((function, line), ...): (bytes, allocations, thread)} of the leaks made by
    leak() in the script."""
    got = {}
    for r in leak_rows(memprof, "shadow", *flags):
        stack = tuple((f["function"], f["line"]) for f in r["stack"])
        if stack and stack[0] == ("leak", line("LEAK-LINE")) and r["bytes"] >= 1000:
            assert stack not in got
            got[stack] = (r["bytes"], r["allocations"], r["thread"])
    return got


def native_frame(f):
    """A native frame by module and function, or by module alone where it has no name (a call
    through the hook's pointer returns to another place in the same function)."""
    unnamed = "+0x" in f["function"] and f["function"].startswith(f["module"].rsplit("/", 1)[-1])
    return (f["module"], True if unnamed else f["function"])


def mixed(memprof, *flags):
    """{stack from leak() rootward: (bytes, allocations)}, native frames as native_frame()."""
    got = {}
    for r in leak_rows(memprof, "mixed", *flags):
        st = r["stack"]
        first = next((i for i, f in enumerate(st) if not f.get("native")), None)
        if first is None or st[first]["function"] != "leak" or r["bytes"] < 1000:
            continue
        key = tuple(native_frame(f) if f.get("native") else (f["function"], f["line"]) for f in st[first:])
        b, a = got.get(key, (0, 0))
        got[key] = (b + r["bytes"], a + r["allocations"])
    return got


def test_native_shadow_stacks_read_as_without_the_hook(tmp_path):
    m = Memprof(tmp_path)
    alone, both = mixed(m, "--native"), mixed(m, "--native", "--trace-python-allocators")
    assert len(alone) == 11
    assert both == alone
    # the call path a hook adds to a Python-to-Python call is not there, the C frames of a call
    # from C are (sorted() calling the key function)
    key = [s for s in both if s[1][0] == "sorted_by.<locals>.key"][0]
    assert key[2][0] != "sorted_by" and ("sorted_by", line("SORTED-LINE")) in key
    rec = [s for s in both if both[s] == (2000, 1)][0]
    assert [f for f, _ in rec[:61]] == ["leak"] + ["rc", "rb", "ra"] * 20


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    m = Memprof(tmp_path_factory.mktemp("shadow"))
    return leaks(m), leaks(m, "--trace-python-allocators")


def test_shadow_stacks_equal_walked_stacks(both):
    walked, shadowed = both
    assert len(walked) == 11
    assert shadowed == walked


def test_shadow_stacks_known_frames(both):
    _, got = both
    leak = ("leak", line("LEAK-LINE"))
    mod = ("<module>", line("MODULE"))
    main = lambda marker: ("main", line(marker))  # noqa: E731
    # 1. 60 frames of recursion: ra, rb, rc, ra, ... from the root, rc called leak at the bottom
    order = [("ra", line("RA-LINE")), ("rb", line("RB-LINE")), ("rc", line("RC-LINE"))]
    rec = tuple([leak] + [order[i % 3] for i in range(59, -1, -1)] + [main("MAIN-RA"), mod])
    assert got[rec] == (2000, 1, 1)
    # 2. the same callee from two lines: three leaks at each
    assert got[(leak, ("same_callee", line("FIRST-CALL")), main("MAIN-SAME"), mod)] == (1100 + 1102 + 1104, 3, 1)
    assert got[(leak, ("same_callee", line("SECOND-CALL")), main("MAIN-SAME"), mod)] == (1101 + 1103 + 1105, 3, 1)
    # 3. the generator's frame under whichever function resumed it
    g = ("gen", line("GEN-LINE"))
    assert got[(leak, g, ("resume_one", line("RESUME-ONE")), main("MAIN-ONE"), mod)] == (3000 + 3002, 2, 1)
    assert got[(leak, g, ("resume_two", line("RESUME-TWO")), main("MAIN-TWO"), mod)] == (3001 + 3003, 2, 1)
    # 4. a closure called by sorted() (a C function, no frame of its own)
    key = (leak, ("sorted_by.<locals>.key", line("KEY-LINE")), ("sorted_by", line("SORTED-LINE")),
           main("MAIN-SORTED"), mod)
    assert got[key] == (4000 + 4001 + 4002, 3, 1)
    # 5. after a 41-frame exception unwound back to after_raise
    assert got[(leak, ("after_raise", line("AFTER-RAISE")), main("MAIN-RAISE"), mod)] == (5000, 1, 1)
    # 7. one call instruction, two functions in turn
    turn = ("one_call_two_functions", line("TURN-LINE"))
    assert got[(leak, ("alpha", line("ALPHA-LINE")), turn, main("MAIN-TURN"), mod)] == (8000 + 8002, 2, 1)
    assert got[(leak, ("beta", line("BETA-LINE")), turn, main("MAIN-TURN"), mod)] == (8001 + 8003, 2, 1)
    # 6. deeper than the C stack: every frame there, in the thread and in the main thread
    deep = lambda depth: [("plunge", line("PLUNGE-LEAK"))] + [("plunge", line("PLUNGE-LINE"))] * depth  # noqa: E731
    thread = [s for s in got if got[s][:2] == (6000, 1)]
    assert len(thread) == 1 and got[thread[0]][2] == 2
    assert list(thread[0][1:THREAD_DEPTH + 2]) == deep(THREAD_DEPTH)
    assert [f for f, _ in thread[0][THREAD_DEPTH + 2:]] == ["Thread.run", "Thread._bootstrap_inner", "Thread._bootstrap"]
    assert got[tuple([leak] + deep(MAIN_DEPTH) + [main("MAIN-PLUNGE"), mod])] == (7000, 1, 1)


REPEAT = "shadow_repeat.py"
ROUNDS = 50


def repeat_leaks(memprof, *flags):
    """{stack as ((function, line), ...): (bytes, allocations)} of shadow_repeat.py's leaks (the
    bytes objects, zeroed: PyObject_Calloc traced, else the calloc under it; not the list's growth)."""
    p, cap = memprof.run(REPEAT, ROUNDS, flags=flags, out="repeat" + "".join(f.strip("-")[0] for f in flags) + ".memprof")
    t = memprof.cmd("table", "--leaks", "--json", cap)
    assert t.returncode == 0, t.stderr
    got, mixed_stacks = {}, {}
    for r in json.loads(t.stdout)["rows"]:
        py = [f for f in r["stack"] if not f.get("native")]
        stack = tuple((f["function"], f["line"]) for f in py)
        if stack and stack[0] == ("leak", script_line(REPEAT, "LEAK-LINE")) and r["allocator"] in ("PyObject_Malloc", "PyObject_Calloc", "calloc"):
            first = r["stack"].index(py[0])
            mixed_stacks[tuple(native_frame(f) if f.get("native") else (f["function"], f["line"])
                               for f in r["stack"][first:])] = (r["bytes"], r["allocations"])
            got[stack] = tuple(a + b for a, b in zip(got.get(stack, (0, 0)), (r["bytes"], r["allocations"])))
    return (got, mixed_stacks) if "--native" in flags else got


def test_repeated_calls_found_by_hash_read_as_walked(tmp_path):
    """The same frames above a call, under earlier calls, must give the same stack; frames that
    differ in one caller's line, in the depth of a recursion or in who resumed a generator must
    not: the hash of the frames above takes each frame's function and instruction."""
    m = Memprof(tmp_path)
    walked, hashed = repeat_leaks(m), repeat_leaks(m, "--trace-python-allocators")
    assert hashed == walked
    ln = lambda marker: script_line(REPEAT, marker)  # noqa: E731
    leak, mod = ("leak", ln("LEAK-LINE")), ("<module>", ln("MODULE-LINE"))
    main = lambda marker: ("main", ln(marker))  # noqa: E731
    rounds = range(ROUNDS)
    assert hashed[(leak, ("two_lines", ln("FIRST-CALL")), main("MAIN-TWO"), mod)] == (
        sum(1100 + i for i in rounds), ROUNDS)
    assert hashed[(leak, ("two_lines", ln("SECOND-CALL")), main("MAIN-TWO"), mod)] == (
        sum(1300 + i for i in rounds), ROUNDS)
    chain = lambda n: [("ra", ln("RA-LINE")) if k % 2 == 0 else ("rb", ln("RB-LINE"))  # noqa: E731
                       for k in range(n + 1)]
    for depth, size in ((20, 3000), (21, 3001)):
        stack = tuple([leak] + chain(depth)[::-1] + [main("MAIN-RA"), mod])
        assert hashed[stack] == (size * ROUNDS // 2, ROUNDS // 2)
    g = ("gen", ln("GEN-LINE"))
    assert hashed[(leak, g, ("resume_one", ln("RESUME-ONE")), main("MAIN-ONE"), mod)] == (4000 * ROUNDS, ROUNDS)
    assert hashed[(leak, g, ("resume_two", ln("RESUME-TWO")), main("MAIN-RESUME-TWO"), mod)] == (
        4100 * ROUNDS, ROUNDS)
    assert len(hashed) == 6
    # with --native as well, each walk up to the innermost hooked call is remembered (unwind.c)
    # and so is its node for a frame at an instruction under a base: the same stacks, the same
    # C frames between them as --native alone reads
    alone, alone_mixed = repeat_leaks(m, "--native")
    both, both_mixed = repeat_leaks(m, "--native", "--trace-python-allocators")
    assert alone == both == walked
    assert both_mixed == alone_mixed


def collide_script(path, sites, branches):
    """top() calls mid() from `sites` lines, mid() calls leaf() from `branches` lines; leaf()
    keeps bytes(n): one zeroed block of n + 33 bytes, n = 1000 + i * branches + k for call
    line i of top() and k of mid(). Returns {(top line, mid line): n}."""
    lines = ["KEEP = []", "", "", "def leaf(n):", "    KEEP.append(bytes(n))", "", "", "def mid(k, n):"]
    mid = {}
    for k in range(branches):
        lines.append(f"    {'if' if k == 0 else 'elif'} k == {k}:")
        lines.append("        leaf(n)")
        mid[k] = len(lines)
    lines += ["", "", "def top():", f"    for k in range({branches}):"]
    want = {}
    for i in range(sites):
        lines.append(f"        mid(k, 1000 + {i * branches} + k)")
        for k in range(branches):
            want[(len(lines), mid[k])] = 1000 + i * branches + k
    lines += ["", "", "for _ in range(3):", "    top()", ""]
    path.write_text("\n".join(lines))
    return want


@pytest.mark.parametrize("flags", [(), ("--trace-python-allocators",), ("--native", "--trace-python-allocators")])
def test_stacks_differing_only_in_call_lines_stay_apart(tmp_path, flags):
    """Stacks of the same functions at the same depths, differing only in their call lines: a
    stack hash whose frames added up linearly gave two such stacks with the same sum of call
    offsets the same key (most of these 480 stacks were merged or misplaced, with and without
    the shadow stack)."""
    m = Memprof(tmp_path)
    script = tmp_path / "collide.py"
    want = collide_script(script, 12, 40)
    p, cap = m.run(str(script), flags=flags, out="collide.memprof")
    t = m.cmd("table", "--leaks", "--json", cap)
    assert t.returncode == 0, t.stderr
    got = {}
    for r in json.loads(t.stdout)["rows"]:
        st = [(f["function"], f["line"]) for f in r["stack"] if not f.get("native")]
        if st[:1] == [("leaf", 5)] and r["allocator"] in ("PyObject_Malloc", "calloc"):
            assert [f for f, _ in st[:4]] == ["leaf", "mid", "top", "<module>"], st
            key = (st[2][1], st[1][1])
            assert key not in got
            got[key] = (r["bytes"], r["allocations"])
    assert got == {key: (3 * (n + 33), 3) for key, n in want.items()}


@pytest.mark.parametrize("flags", [(), ("--trace-python-allocators",), ("--native", "--trace-python-allocators")])
def test_a_code_object_at_a_dead_ones_address_is_another(tmp_path, flags):
    """code_reuse.py: 300 functions, each made, called once from one call site and dropped.
    Each one's item array must be at its own function: the stacks remembered with a native
    walk (and every other cache of stacks) tell a code object from a dead one at its address
    by its fingerprint (with both flags, 1 to 14 of the 300 were once given to an earlier function)."""
    m = Memprof(tmp_path)
    n = 300
    p, cap = m.run("code_reuse.py", n, flags=flags, out="reuse.memprof")
    t = m.cmd("table", "--leaks", "--json", cap)
    assert t.returncode == 0, t.stderr
    got = {}
    for r in json.loads(t.stdout)["rows"]:
        py = [f for f in r["stack"] if not f.get("native")]
        if py and py[0]["function"].startswith("f") and py[0]["function"][1:].isdigit() and r["bytes"] >= 8000:
            got.setdefault(py[0]["function"], []).append((py[0]["line"], r["bytes"], r["allocations"]))
    want = {f"f{i}": [(4, (1000 + i) * 8, 1)] for i in range(n)}
    assert got == want


SITES = "site_lines.py"
SITE_PATHS, SITE_ROUNDS = 1024, 3


def site_leaks(memprof, *flags):
    """{stack as ((function, line), ...): (bytes, allocations)} of site_lines.py's kept blocks
    (zeroed: PyObject_Calloc traced, else the calloc under it; not the list's growth)."""
    p, cap = memprof.run(SITES, SITE_PATHS, SITE_ROUNDS, flags=flags,
                         out="sites" + "".join(f.strip("-")[0] for f in flags) + ".memprof")
    t = memprof.cmd("table", "--leaks", "--json", cap)
    assert t.returncode == 0, t.stderr
    got = {}
    for r in json.loads(t.stdout)["rows"]:
        stack = tuple((f["function"], f["line"]) for f in r["stack"] if not f.get("native"))
        if stack and stack[0][0] == "sites" and r["allocator"] in ("PyObject_Malloc", "PyObject_Calloc", "calloc"):
            assert stack not in got
            got[stack] = (r["bytes"], r["allocations"])
    return got


def test_sites_of_varying_recursions_read_as_walked(tmp_path):
    """1024 paths of 12 frames down to one function that allocates at 5 of its lines on even
    paths, at 10 on odd ones, 3 rounds: each block at its own line under its own path, with
    the shadow stack as with a walk. The site table (a line per function under its frames
    above, 65,536 lines: some of the 1024 share one) must tell them apart by more than the
    function, and give each line its own node; a line holds 6 sites, the others come from the
    prefix table."""
    m = Memprof(tmp_path)
    ln = lambda marker: script_line(SITES, marker)  # noqa: E731
    names, lines = ("ra", "rb", "rc"), (ln("RA-LINE"), ln("RB-LINE"), ln("RC-LINE"))
    want = {}
    for k in range(SITE_PATHS):
        f, above = 0, [("<module>", ln("MODULE-LINE")), ("main", ln("MAIN-LINE"))]
        for d in range(12, -1, -1):
            above.append((names[f], lines[f]))
            f = ((k >> ((d - 1) % 10)) & 1) + (d & 1)
        for i in range(0, 10, 1 if k & 1 else 2):
            stack = (("sites", ln(f"SITE-{i}")),) + tuple(reversed(above))
            want[stack] = (SITE_ROUNDS * (1000 + 100 * i + k + 33), SITE_ROUNDS)
    assert len(want) == 512 * 5 + 512 * 10
    assert site_leaks(m, "--trace-python-allocators") == want
    assert site_leaks(m) == want
