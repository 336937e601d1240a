"""Functions made one at a time with exec, each called once from one call site and dropped
before the next is made: a new code object often takes a dead one's address. f{i} keeps one
list of 1000 + i items (an item array of (1000 + i) * 8 bytes) at its line 4; its qualname
object is kept alive, so only the code object's address can be reused. `keep` is made with N
slots and f{i} takes one off its front before it appends: it never grows inside f{i}."""
import sys

N = int(sys.argv[1])
keep = [None] * N
names = []
for i in range(N):
    src = f"def f{i}(keep):\n    a = [None] * 3\n    keep.pop(0)\n    keep.append([None] * {1000 + i})\n"
    ns = {}
    exec(src, ns)
    names.append(ns[f"f{i}"].__code__.co_qualname)
    ns[f"f{i}"](keep)
    ns.clear()
    del ns
