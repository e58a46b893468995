"""Progress lines on stdout, stamped with the seconds since the script
started, so a log shows where a run spent its time; and heartbeats, so a
long build or wait is never silent (a cold build of the guest tool took
96 s without a line).

Python 3 standard library only.
"""

import sys
import threading
import time
from pathlib import Path

# Imported by the script before it does anything else: close enough to its start.
T0 = time.monotonic()
# A heartbeat line this often while a long step runs: often enough that a
# watcher sees it move, rarely enough not to drown the log (a cold build
# is 2-4 minutes: 10-16 lines).
HEARTBEAT_SECS = 15.0
# Only the last bytes of a step's log are read for its last line.
TAIL_BYTES = 4096
# A quoted last line is cut to this many characters.
LINE_CHARS = 100

# One line is one write under this lock: a heartbeat thread's line never
# lands inside the main thread's.
_LOCK = threading.Lock()


def elapsed():
    return time.monotonic() - T0


def say(msg):
    line = f"[{elapsed():7.1f}s] {msg}\n"
    with _LOCK:
        sys.stdout.write(line)
        sys.stdout.flush()


def last_line(path):
    """The last non-blank line of the file PATH (cargo's `Compiling foo`,
    make's last command), cut to LINE_CHARS; '' when none or unreadable."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - TAIL_BYTES))
            data = f.read()
    except OSError:
        return ""
    # A progress bar redraws with CR: its last state is after the last CR.
    lines = [x.rsplit("\r", 1)[-1].strip()
             for x in data.decode("utf-8", errors="replace").splitlines()]
    lines = [x for x in lines if x]
    return shorten(lines[-1] if lines else "")


def shorten(text):
    """TEXT cut to LINE_CHARS for a progress line."""
    return text if len(text) <= LINE_CHARS else text[:LINE_CHARS - 3] + "..."


class Heartbeat:
    """`with Heartbeat("build tool", log):` while the block runs, a line
    every INTERVAL seconds: what runs, for how long, and the last line of
    LOG (if given). EMIT prints it (say)."""

    def __init__(self, what, log=None, interval=None, emit=say):
        self.what = what
        self.log = Path(log) if log is not None else None
        self.interval = HEARTBEAT_SECS if interval is None else interval
        self.emit = emit
        self.beats = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat {what}", daemon=True)
        self._t0 = None

    def line(self):
        msg = f"{self.what}: still running, {time.monotonic() - self._t0:.0f} s"
        if self.log is not None:
            last = last_line(self.log)
            msg += f"; last line: {last}" if last else "; no output yet"
        return msg

    def _run(self):
        while not self._stop.wait(self.interval):
            self.beats += 1
            self.emit(self.line())

    def __enter__(self):
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False


class Ticker:
    """For a loop that already wakes up often (the console loop): due()
    is True once every INTERVAL seconds."""

    def __init__(self, interval=None):
        self.interval = HEARTBEAT_SECS if interval is None else interval
        self.next = time.monotonic() + self.interval

    def due(self):
        now = time.monotonic()
        if now < self.next:
            return False
        self.next = now + self.interval
        return True
