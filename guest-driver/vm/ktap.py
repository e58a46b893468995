"""The guest suite's KTAP: collecting it from the console, counting its
results and judging it (every case ok, a sane plan, suite exit 0).

Python 3 standard library only.
"""

import re

from exitcodes import EXIT_OK, EXIT_TESTS_FAILED

KTAP_VERSION = re.compile(r"^K?TAP version \d+$")
KTAP_PLAN = re.compile(r"^1\.\.(\d+)$")
KTAP_RESULT = re.compile(r"^(ok|not ok) (\d+)\b(.*)$")
# The suite announces each case before running it (guest-driver/tools
# ktap.rs), so a crash can be pinned on the case that was running.
KTAP_RUNNING = re.compile(r"^# running (\d+) (\S+)$")
SKIP = re.compile(r"#\s*SKIP", re.I)


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
        skip = len(self.skipped())
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


    def skipped(self):
        """The skipped results as "N NAME # SKIP why"."""
        return [f"{n}{rest}" for ok, n, rest in self.results if ok and SKIP.search(rest)]

    def tally(self):
        """"P passed, S skipped, F failed[ of N planned]"."""
        passed, skip, failed = self.counts()
        return (f"{passed} passed, {skip} skipped, {len(failed)} failed"
                + (f" of {self.plan} planned" if self.plan is not None else ""))


def parse(text):
    """A Ktap fed every line of TEXT (a results.ktap, a test's fixture)."""
    k = Ktap()
    for line in text.splitlines():
        k.feed(line)
    return k


def judge_suite(k, rc, results_path):
    """The verdict on a suite (or `nodevice`) run: (exit code, lines to
    report). Any `not ok`, KTAP problem or non-zero suite exit fails it."""
    problems = k.verdict()
    _, _, failed = k.counts()
    lines = [f"results: {k.tally()}; suite exit {rc}; {results_path}"]
    lines += [f"FAILED: {f}" for f in failed]
    lines += [f"KTAP problem: {p}" for p in problems]
    if rc != 0 and not failed and not problems:
        lines.append(f"the suite exited {rc} although every result was ok")
    return (EXIT_TESTS_FAILED if failed or problems or rc != 0 else EXIT_OK), lines


def judge_exec(k, rc):
    """The verdict on an --exec script: its exit code decides, and any
    `not ok` in KTAP it printed fails the run too."""
    lines = [f"--exec script exited {rc}"]
    code = EXIT_OK
    if k.started:
        passed, skip, failed = k.counts()
        lines.append(f"KTAP from the script: {passed} passed, {skip} skipped, "
                     f"{len(failed)} failed")
        if failed:
            code = EXIT_TESTS_FAILED
    return (EXIT_TESTS_FAILED if rc != 0 else code), lines
