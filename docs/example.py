"""A small program to profile: it builds an index of records (the peak), keeps a cache that is
never cleared (a leak), and churns through temporary buffers (allocated, then freed).

    memprof run docs/example.py && memprof summary memprof-example.<pid>.memprof
"""
import json

CACHE = {}


def load_records(n):
    return [{"id": i, "name": f"item-{i}", "payload": "x" * 2000} for i in range(n)]


def build_index(records):
    return {r["name"]: json.dumps(r) for r in records}


def remember(key, value):
    CACHE[key] = value  # never cleared: still live when the script ends


def churn(rounds):
    total = 0
    for i in range(rounds):
        buf = bytearray(64 * 1024)
        total += len(buf)
    return total


def main():
    records = load_records(20000)
    index = build_index(records)
    for name in list(index)[:500]:
        remember(name, index[name] * 2)
    del records, index
    print("churned", churn(2000), "bytes; cached", len(CACHE), "entries")


if __name__ == "__main__":
    main()
