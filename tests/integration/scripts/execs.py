"""exec from the profiled process: "fail" tries a program that does not exist, then allocates
(the capture must go on); "replace" allocates, then becomes /bin/true (the capture must be
finished, not cut)."""
import os
import sys

HDR = 33
KEEP = []

if sys.argv[1] == "fail":
    try:
        os.execv("/nonexistent/memprof-test", ["x"])
    except OSError:
        pass
    KEEP.append(b"a" * ((3 << 20) - HDR))  # AFTER-LINE
else:
    KEEP.append(b"b" * ((2 << 20) - HDR))  # BEFORE-LINE
    sys.stdout.flush()
    os.execv("/bin/true", ["true"])
