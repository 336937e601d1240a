"""A zlib compressor kept alive to the end: its deflate state (window, hash chains and pending
buffer, 256 KiB for windowBits 15 and memLevel 8) is allocated by libz's deflateInit2_, called
by the zlib module for the line in make()."""
import zlib

KEEP = []


def make():
    KEEP.append(zlib.compressobj(9, zlib.DEFLATED, 15, 8))  # ZLIB-LINE


make()  # MAKE-CALL
print("zlib", len(KEEP))
