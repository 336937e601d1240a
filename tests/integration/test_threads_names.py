"""Many threads allocating at once: exact counts, no deadlock, and every thread's name in the
capture ("threads" in summary --json), however it was named: pthread_setname_np on itself or
from another thread, prctl(PR_SET_NAME), or threading.Thread(name=...)."""
from conftest import CONFIG

THREADS = 8
ROUNDS = 100_000
C_BYTES_PER_ROUND = 8224  # thread i's blocks are 1000 + 8 i bytes: 8 * 1000 + 8 * 28
C_NAMES = {"mp-main", *(f"mp-setname-{i}" for i in range(4)), *(f"mp-prctl-{i}" for i in range(4, 8))}


def named_threads(memprof, rounds):
    p, cap = memprof.preloaded([CONFIG["named_threads"], rounds], f"named-{rounds}.memprof", timeout=60)
    assert p.returncode == 0
    s = memprof.summary(cap)
    assert not s["capture"]["truncated"] and s["capture"]["tracker_allocations"] == 0
    return s


def test_c_threads_exact_counts_and_names(memprof):
    base = named_threads(memprof, 0)
    s = named_threads(memprof, ROUNDS)
    k = THREADS * ROUNDS
    assert s["totals"]["allocations"] - base["totals"]["allocations"] == k
    assert s["totals"]["frees"] - base["totals"]["frees"] == k
    assert s["totals"]["allocated_bytes"] - base["totals"]["allocated_bytes"] == ROUNDS * C_BYTES_PER_ROUND
    assert s["at_exit"] == base["at_exit"]
    threads = s["threads"]
    assert sorted(t["name"] for t in threads) == sorted(C_NAMES)
    assert [t["index"] for t in threads] == list(range(1, THREADS + 2))
    assert len({t["tid"] for t in threads}) == THREADS + 1
    main = [t for t in threads if t["name"] == "mp-main"]
    assert len(main) == 1 and main[0]["tid"] == s["capture"]["pid"]
    # threads 2 and 3, named by the main thread before they recorded anything, appear only
    # once they allocate: in the 0-round run they never do
    assert sorted(t["name"] for t in base["threads"]) == sorted(C_NAMES - {"mp-setname-2", "mp-setname-3"})


def python_threads(memprof, rounds, flags=()):
    p, cap = memprof.run("threads_named.py", rounds, out=f"pythreads-{rounds}-{len(flags)}.memprof", flags=flags,
                         timeout=60)
    ids = dict(w.split("=") for w in p.stdout.split())
    assert sorted(ids) == [f"worker-{i}" for i in range(THREADS)]
    s = memprof.summary(cap)
    assert not s["capture"]["truncated"]
    return {name: int(tid) for name, tid in ids.items()}, s


def test_python_threads_finish_and_are_named(memprof):
    _, base = python_threads(memprof, 0)
    ids, s = python_threads(memprof, ROUNDS)
    by_name = {t["name"]: t["tid"] for t in s["threads"]}
    assert by_name["MainThread"] == s["capture"]["pid"]
    assert {n: by_name.get(n) for n in ids} == ids  # each worker's name on its own thread id
    # each round is one malloc(2001) and its free. The interpreter's own few allocations differ
    # a little from run to run (thread start and exit, switches), so the difference from the
    # 0-round run is that within a few: losing any thread's events would miss it by 100,000
    k = THREADS * ROUNDS
    assert abs(s["totals"]["allocations"] - base["totals"]["allocations"] - k) <= 64
    assert abs(s["totals"]["frees"] - base["totals"]["frees"] - k) <= 64
    assert abs(s["totals"]["allocated_bytes"] - base["totals"]["allocated_bytes"] - k * 2001) <= 64 * 4096


def test_python_threads_are_named_when_every_allocation_is_traced(memprof):
    """The names wait for `import threading` (at the script's top) to finish. Every object
    allocation traced once starved that wait: each retry was queued as a pending call, the
    interpreter ran those before going on with the import, and the retries ran out first."""
    ids, s = python_threads(memprof, 1000, flags=("--trace-python-allocators",))
    by_name = {t["name"]: t["tid"] for t in s["threads"]}
    assert by_name["MainThread"] == s["capture"]["pid"]
    assert {n: by_name.get(n) for n in ids} == ids


def test_the_writer_thread_is_named_and_yields_to_the_program(memprof):
    """memprof's own thread shows as memprof-writer (top -H), under SCHED_BATCH (it does not
    preempt the program when it wakes), and is not one of the program's threads in the capture."""
    p, cap = memprof.run("writer_thread.py", out="writer.memprof")
    assert p.stdout == "memprof-writer 3\n"
    s = memprof.summary(cap)
    assert [(t["index"], t["tid"]) for t in s["threads"]] == [(1, s["capture"]["pid"])]
