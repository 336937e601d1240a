"""Ends itself without a normal exit: `interrupt` raises KeyboardInterrupt (Python then re-raises
SIGINT on itself after finalizing), `term` sends itself SIGTERM, `_exit` calls os._exit(7)
(no atexit handlers, no destructors)."""
import os
import signal
import sys

HDR = 33
KEEP = [bytes(1) * ((1 << 20) - HDR)]  # SELF-LINE

if sys.argv[1] == "interrupt":
    raise KeyboardInterrupt
if sys.argv[1] == "_exit":
    os._exit(7)
os.kill(os.getpid(), signal.SIGTERM)
