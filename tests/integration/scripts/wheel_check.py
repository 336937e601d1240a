"""Run by test_install.py in an interpreter where memprof was installed (a wheel
from pip install ., or cmake --install): the package finds its programs and
library inside the install, a Tracker records, load() reads. Prints JSON."""
import json
import os
import sys

import memprof

out = {"package": os.path.dirname(memprof.__file__), "library": memprof.library(),
       "executable": memprof.executable(), "library_exists": os.path.exists(memprof.library())}
path = sys.argv[1]
with memprof.Tracker(path):
    block = bytes(3_000_017 - 33)  # TRACKED LINE
top = memprof.load(path).top_leaked[0]
out["top"] = [top.function, top.line, top.bytes]
print(json.dumps(out))
