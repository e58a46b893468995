"""Reading the guest's serial console: lines as the programs wrote them, the
markers /init prints, kernel warnings, and the kernel crashes that end a run
(the suite's KTAP is ktap.py's).

Python 3 standard library only.
"""

import re
from pathlib import Path

import markers

SENTINEL = re.compile(rf"(?:^|\s){re.escape(markers.SUITE_EXIT)} (-?\d+)$")
# A guest asking for a status snapshot mid-run (pinlease-guest snapshot, or a
# suite case); it waits for the runner's answer, so the snapshot shows the
# device as the case has it at that moment.
SNAPSHOT = re.compile(rf"(?:^|\s){re.escape(markers.SNAPSHOT)} ([A-Za-z0-9_.-]{{1,64}})$")
# A kernel console message ("[   12.345678] ...") after text that is not one.
EMBEDDED_PRINTK = re.compile(r"^(?!\s*\[\s*\d+\.\d+\])(.+?)(\[\s*\d+\.\d{6}\] .*)$")
# Kernel trouble short of a crash: a WARNING and worse. The list is
# guest-driver/include/kernel_warnings.txt, which the guest's init.sh and the
# suite read too. Here it serves two users: the runner shows such console
# lines even when not streaming the console, and under --faults any of them
# violates the kernel-warn invariant (invariants.py).
KERNEL_WARNINGS_FILE = Path(__file__).resolve().parents[1] / "include" / "kernel_warnings.txt"


def read_kernel_warnings(text):
    """The substrings of kernel_warnings.txt (comment and blank lines out)."""
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


KERNEL_WARNING = re.compile("|".join(
    re.escape(w) for w in read_kernel_warnings(KERNEL_WARNINGS_FILE.read_text())))
# A kernel crash: an oops (NULL dereference, page fault, GPF, BUG()), any
# "BUG: " report (incl. soft lockups, sleeping in atomic context) or a panic.
# A WARNING is not one: the kernel goes on and the case's own kernel-log
# check fails it.
KERNEL_CRASH = re.compile(r"\bOops\b|\bBUG: |kernel BUG at|general protection fault|"
                          r"Kernel panic - not syncing|Unable to handle kernel")
# Where the kernel says its report is complete.
CRASH_END = re.compile(r"---\[ end (trace|Kernel panic)")
# A call trace frame the kernel is sure of ("? frame" lines are guesses).
FRAME = re.compile(r"^[\w.]+\+0x[0-9a-f]+/0x[0-9a-f]+")
PRINTK_PREFIX = re.compile(r"^\s*\[\s*\d+\.\d+\]\s?")
# Lines user space prints (KTAP, /init's markers and progress): never a
# kernel report, even when they quote one (`kernel log: ... Oops`).
USER_LINE = re.compile(rf"^(ok |not ok |#|{re.escape(markers.PREFIX)}|pinlease-init:|\s)")


def is_kernel_line(line):
    """A kernel message: printk's timestamp, or at least not a line of the
    suite's or /init's (kernels without CONFIG_PRINTK_TIME print none)."""
    return bool(PRINTK_PREFIX.match(line)) or not USER_LINE.match(line)


class Unsplice:
    """Console lines as the programs wrote them. printk writes the UART
    directly while a user line may still sit in the tty's buffer, so a kernel
    message can land in the middle of a KTAP line: "not ok 3 na[  7.36] msg"
    then "me # reason" on the next line. feed() splits the message out and
    glues the two halves back together (unless what follows looks like a line
    of its own: then the cut line was already complete)."""

    LINE_START = re.compile(rf"^(ok |not ok |#|1\.\.\d|K?TAP version|{re.escape(markers.PREFIX)}|"
                            r"pinlease-init:|\s*\[\s*\d+\.\d+\])")

    def __init__(self):
        self.pending = None

    def feed(self, line):
        out = []
        if self.pending is not None:
            if self.LINE_START.match(line):
                out.append(self.pending)
            else:
                line = self.pending + line
            self.pending = None
        m = EMBEDDED_PRINTK.match(line)
        if m:
            self.pending = m.group(1)
            out.append(m.group(2))
        else:
            out.append(line)
        return out

    def flush(self):
        rest, self.pending = self.pending, None
        return [rest] if rest is not None else []


class LineReader:
    """The console's bytes as logical lines: split at newlines, decoded,
    without the tty's CR, unspliced (Unsplice)."""

    def __init__(self):
        self.buf = b""
        self.unsplice = Unsplice()

    def feed(self, chunk):
        """The lines CHUNK completes; an empty CHUNK is the end of the
        console, which completes the rest."""
        self.buf += chunk
        *raw, self.buf = self.buf.split(b"\n")
        if not chunk and self.buf:
            raw.append(self.buf)
            self.buf = b""
        lines = [x for r in raw for x in
                 self.unsplice.feed(r.decode("utf-8", errors="replace").rstrip("\r"))]
        return lines + (self.unsplice.flush() if not chunk else [])


class CrashWatch:
    """Watches the console for the first kernel crash (KERNEL_CRASH) and
    keeps its report: the lines from the crash on, until the kernel's end
    marker or CRASH_LINES lines. The runner ends the run CRASH_GRACE seconds
    after the first line at the latest."""

    CRASH_LINES = 120

    def __init__(self):
        self.first = None  # the first crash line
        self.lines = []
        self.complete = False
        self.case = None  # Ktap.running_case() when the crash was seen

    def feed(self, line, ktap):
        """Returns True when the line belongs to a crash report."""
        if self.first is None:
            if not (is_kernel_line(line) and KERNEL_CRASH.search(line)):
                return False
            self.first = line
            self.case = ktap.running_case()
        if self.complete or len(self.lines) >= self.CRASH_LINES:
            return False
        self.lines.append(line)
        if CRASH_END.search(line):
            self.complete = True
        return True

    def seen(self):
        return self.first is not None

    def title(self):
        return PRINTK_PREFIX.sub("", self.first or "").strip()

    def summary(self, frames=8):
        """The report's gist: where it happened (RIP) and the first frames
        of the call trace, without printk timestamps."""
        text = [PRINTK_PREFIX.sub("", x).rstrip() for x in self.lines]
        out = [x.strip() for x in text if x.lstrip().startswith("RIP:")][:1]
        if "Call Trace:" in " ".join(text):
            start = next(i for i, x in enumerate(text) if "Call Trace:" in x)
            calls = []
            for x in text[start + 1:]:
                if "</TASK>" in x:
                    break
                if FRAME.match(x.strip()):
                    calls.append(x.split()[0])
            out += ["Call Trace: " + " <- ".join(calls[:frames])]
        return out
