"""Progress lines on stdout, stamped with the seconds since the script
started, so a log shows where a run spent its time.

Python 3 standard library only.
"""

import time

# Imported by the script before it does anything else: close enough to its start.
T0 = time.monotonic()


def elapsed():
    return time.monotonic() - T0


def say(msg):
    print(f"[{elapsed():7.1f}s] {msg}", flush=True)
