"""A memprof.Tracker in a plain python3 (no LD_PRELOAD): allocations with
known sizes inside the block, one before and one after it, and the GOT
entries of libz for malloc and free read before, during and after (they
must point elsewhere during the block and be back as they were after).

argv: capture path, then options: native, trace, twice (a second block into
<path>.2 after the first)."""
import ctypes
import struct
import sys
import zlib

import memprof

HDR = 33  # a bytes of length S - 33 is one malloc(S)


def got_slots(lib_fragment, names):
    """{name: address of its GOT entry} in the loaded object whose path contains lib_fragment,
    from its .rela.plt and .rela.dyn (JUMP_SLOT, GLOB_DAT) and the load address in /proc/self/maps."""
    path = base = None
    for line in open("/proc/self/maps"):
        parts = line.split()
        if len(parts) >= 6 and lib_fragment in parts[5] and int(parts[2], 16) == 0:
            path, base = parts[5], int(parts[0].split("-")[0], 16)
            break
    data = open(path, "rb").read()
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    found = {}
    for sh in sections:
        if sh[1] != 4:  # SHT_RELA
            continue
        symtab = sections[sh[6]]
        strtab = sections[symtab[6]]
        for off in range(sh[4], sh[4] + sh[5], 24):
            r_offset, r_info, _ = struct.unpack_from("<QQq", data, off)
            if r_info & 0xFFFFFFFF not in (6, 7):  # GLOB_DAT, JUMP_SLOT
                continue
            st_name, = struct.unpack_from("<I", data, symtab[4] + (r_info >> 32) * 24)
            end = data.index(b"\0", strtab[4] + st_name)
            name = data[strtab[4] + st_name:end].decode()
            if name in names:
                found[name] = base + r_offset
    return found


def read_slots(slots):
    return {n: ctypes.c_uint64.from_address(a).value for n, a in slots.items()}


path = sys.argv[1]
opts = set(sys.argv[2:])
slots = got_slots("libz.so", {"malloc", "free"})
assert set(slots) == {"malloc", "free"}, slots
before_block = bytes((1,)) * (1_500_007 - HDR)
got_before = read_slots(slots)
kw = dict(native="native" in opts, trace_python_allocators="trace" in opts)
with memprof.Tracker(path, **kw) as tracker:
    kept = bytes((7,)) * (2_000_003 - HDR)  # TRACKED LINE
    comp = zlib.compressobj()  # ZLIB LINE
    got_during = read_slots(slots)
    try:
        memprof.Tracker(path + ".other").start()
    except RuntimeError as e:
        second = str(e)
    else:
        second = "started"
after_block = bytes((7,)) * (3_000_017 - HDR)
got_after = read_slots(slots)
if "twice" in opts:
    with memprof.Tracker(path + ".2", **kw):
        again = bytes((9,)) * (1_234_567 - HDR)  # SECOND BLOCK
print("got_patched", all(got_during[n] != got_before[n] for n in slots))
print("got_restored", got_after == got_before)
print("second_tracker", second)
