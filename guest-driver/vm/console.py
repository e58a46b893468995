"""Reading the guest's serial console: lines as the programs wrote them, the
suite's KTAP, the markers /init prints, and the kernel crashes that end a run.

Python 3 standard library only.
"""

import re

KTAP_VERSION = re.compile(r"^K?TAP version \d+$")
KTAP_PLAN = re.compile(r"^1\.\.(\d+)$")
KTAP_RESULT = re.compile(r"^(ok|not ok) (\d+)\b(.*)$")
# The suite announces each case before running it (guest-driver/tools
# ktap.rs), so a crash can be pinned on the case that was running.
KTAP_RUNNING = re.compile(r"^# running (\d+) (\S+)$")
SENTINEL = re.compile(r"(?:^|\s)PINLEASE-SUITE-EXIT (-?\d+)$")
# A guest asking for a status snapshot mid-run (pinlease-guest snapshot, or a
# suite case); it waits for the runner's answer, so the snapshot shows the
# device as the case has it at that moment.
SNAPSHOT = re.compile(r"(?:^|\s)PINLEASE-SNAPSHOT ([A-Za-z0-9_.-]{1,64})$")
# A kernel console message ("[   12.345678] ...") after text that is not one.
EMBEDDED_PRINTK = re.compile(r"^(?!\s*\[\s*\d+\.\d+\])(.+?)(\[\s*\d+\.\d{6}\] .*)$")
# Kernel lines worth showing even when not streaming the console.
KERNEL_TROUBLE = re.compile(r"WARNING:|BUG:|Oops|general protection|refcount_t|Kernel panic")
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
USER_LINE = re.compile(r"^(ok |not ok |#|PINLEASE-|pinlease-init:|\s)")


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

    LINE_START = re.compile(r"^(ok |not ok |#|1\.\.\d|K?TAP version|PINLEASE-|pinlease-init:|"
                            r"\s*\[\s*\d+\.\d+\])")

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


class Ktap:
    """Collects the KTAP lines between the first "KTAP version" and the exit
    sentinel, checks the plan, counts results (top level only: indented
    lines are subtests, which KTAP folds into their parent's result), and
    knows which case is running."""

    def __init__(self):
        self.started = False
        self.lines = []
        self.plan = None
        self.results = []  # (ok: bool, number, rest)
        self.problems = []
        self.running = None  # (number, name) announced and not yet reported

    def feed(self, line):
        """Returns True when the line is KTAP (and was recorded)."""
        s = line.rstrip()
        if not self.started:
            if KTAP_VERSION.match(s):
                self.started = True
                self.lines.append(s)
                return True
            return False
        if KTAP_VERSION.match(s):
            self.problems.append(f"second version line: {s!r}")
            self.lines.append(s)
            return True
        m = KTAP_PLAN.match(s)
        if m:
            if self.plan is not None:
                self.problems.append(f"second plan line: {s!r}")
            self.plan = int(m.group(1))
            self.lines.append(s)
            return True
        m = KTAP_RESULT.match(s)
        if m:
            self.results.append((m.group(1) == "ok", int(m.group(2)), m.group(3)))
            self.running = None
            self.lines.append(s)
            return True
        m = KTAP_RUNNING.match(s)
        if m:
            self.running = (int(m.group(1)), m.group(2))
            self.lines.append(s)
            return True
        if s.startswith("#") or (s.startswith(" ") and s.strip()):
            self.lines.append(s)  # diagnostics and indented subtests
            return True
        return False

    def verdict(self):
        probs = list(self.problems)
        if not self.started:
            return ["no 'KTAP version' line"]
        if self.plan is None:
            probs.append("no plan line (1..N)")
        elif len(self.results) != self.plan:
            probs.append(f"plan says {self.plan} cases, {len(self.results)} results seen")
        nums = [n for _, n, _ in self.results]
        if nums != list(range(1, len(nums) + 1)):
            probs.append(f"result numbers out of sequence: {nums}")
        return probs

    def counts(self):
        skip = sum(1 for ok, _, rest in self.results if ok and re.search(r"#\s*SKIP", rest, re.I))
        passed = sum(1 for ok, _, _ in self.results if ok) - skip
        failed = [f"not ok {n}{rest}" for ok, n, rest in self.results if not ok]
        return passed, skip, failed

    def running_case(self):
        """What was running: "case N NAME", or where the suite was."""
        if self.running:
            n, name = self.running
            return f"case {n}" + (f" of {self.plan}" if self.plan else "") + f": {name}"
        if not self.started:
            return "no case (the suite had not started)"
        if self.results:
            return f"between cases (last result: case {self.results[-1][1]})"
        return "no case (before the first one)"


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
