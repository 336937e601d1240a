"""Allocations made inside Python signal handlers and inside an atexit handler, all kept to
the end. SIGUSR1 is sent once to itself; SIGALRM comes every millisecond from an interval
timer while the main loop allocates and frees (signals land anywhere, inside memprof's hooks
too, and interrupt its writes) until the handler has run TICKS times. memprof's script-end mark
is registered before the program's own atexit handlers, and atexit runs the last registered
first: the atexit handler's allocation is made before the mark."""
import atexit
import os
import signal

HDR = 33
TICKS = 200
KEEP = []
TICKED = [None] * TICKS  # pre-sized: the SIGALRM handler allocates only its block
ticks = 0


def on_usr1(signum, frame):
    KEEP.append(bytes((1,)) * ((2 << 20) - HDR))  # SIGNAL-LINE


def on_alarm(signum, frame):
    global ticks
    if ticks < TICKS:
        TICKED[ticks] = bytes((3,)) * (4096 - HDR)  # ALARM-LINE
        ticks += 1


def at_exit():
    KEEP.append(bytes((2,)) * ((3 << 20) - HDR))  # ATEXIT-LINE


signal.signal(signal.SIGUSR1, on_usr1)
signal.signal(signal.SIGALRM, on_alarm)
atexit.register(at_exit)
os.kill(os.getpid(), signal.SIGUSR1)
signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
while ticks < TICKS:
    junk = [bytearray(600) for _ in range(100)]  # records for the capture to write meanwhile
    del junk
signal.setitimer(signal.ITIMER_REAL, 0)
print("handled", len(KEEP), ticks)
