"""The GOT entries of a loaded object, read from its ELF relocations: what the
Tracker tests check is patched during a block and restored after it."""
import ctypes
import struct


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
