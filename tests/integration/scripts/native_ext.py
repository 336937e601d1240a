"""Calls the C++ extension mpext (its folder is argv[1]): one Holder grows by a known number of
bytes, allocated with new char[] in mpext::Holder::grow, and lives to the end."""
import sys

sys.path.insert(0, sys.argv[1])
import mpext  # noqa: E402

SIZE = 2 * (1 << 20) + 4321
HOLDER = mpext.Holder()


def grow():
    return HOLDER.grow(SIZE)  # GROW-CALL


print("mpext", grow(), len(HOLDER))  # MODULE-CALL
