"""A 300-deep recursion through three functions in a known order; one 1 MiB buffer at the
bottom, held at the peak."""
HDR = 33
KEEP = []


def a(n):
    return b(n - 1) if n else leaf()


def b(n):
    return c(n - 1) if n else leaf()


def c(n):
    return a(n - 1) if n else leaf()


def leaf():
    KEEP.append(bytes(1) * ((1 << 20) - HDR))  # LEAF-LINE
    return 0


a(299)
KEEP.clear()
print("deep done")
