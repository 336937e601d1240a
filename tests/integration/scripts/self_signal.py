"""Ends itself by a signal: `interrupt` raises KeyboardInterrupt (Python then re-raises SIGINT
on itself after finalizing), `term` sends itself SIGTERM."""
import os
import signal
import sys

HDR = 33
KEEP = [bytes(1) * ((1 << 20) - HDR)]  # SELF-LINE

if sys.argv[1] == "interrupt":
    raise KeyboardInterrupt
os.kill(os.getpid(), signal.SIGTERM)
