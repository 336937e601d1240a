"""Sleeps half a second: the memory samples come from memprof's writer thread alone."""
import time

time.sleep(0.5)
