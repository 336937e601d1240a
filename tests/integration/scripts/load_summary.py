"""Prints what memprof.load() returns for a capture, as JSON, for test_load.py;
then the errors of a missing file, a file that is not a capture, and a bad size."""
import dataclasses
import json
import sys

import memprof

s = memprof.load(sys.argv[1], top=int(sys.argv[2]))
assert isinstance(s, memprof.Summary) and isinstance(s.peak, memprof.Amount)
assert all(isinstance(f, memprof.Frame) for loc in s.top_leaked for f in loc.stack)
out = {
    "peak": list(s.peak), "leaked": list(s.leaked), "at_exit": list(s.at_exit), "allocations": s.allocations,
    "frees": s.frees, "allocated_bytes": s.allocated_bytes, "pid": s.capture.pid, "argv": list(s.capture.argv),
    "truncated": s.capture.truncated, "threads": [t.name for t in s.threads],
    "allocators": sorted(s.allocators), "warnings": list(s.warnings),
    "top_leaked": [dict(dataclasses.asdict(l), stack=[[f.function, f.filename, f.lineno] for f in l.stack])
                   for l in s.top_leaked],
    "str": str(s.top_leaked[0]), "same_as_cli": s.data["leaked"]["bytes"] == s.leaked.bytes,
    "sizes": [memprof.parse_size(x) for x in ("24 MB", "512KiB", "1.5GB", "4096")],
}
errors = []
for bad in (sys.argv[1] + ".missing", __file__):
    try:
        memprof.load(bad)
    except (OSError, ValueError) as e:
        errors.append([type(e).__name__, str(e)])
for bad in ("12 XB", "-1MB", 12):
    try:
        memprof.parse_size(bad)
    except (ValueError, TypeError) as e:
        errors.append([type(e).__name__, str(e)])
out["errors"] = errors
print(json.dumps(out))
