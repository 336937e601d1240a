"""One allocation of a known size at a known line; prints the interpreter running it."""
import sys

print(sys.executable)
held = bytes(7_000_003 - 33)  # SIZED LINE
