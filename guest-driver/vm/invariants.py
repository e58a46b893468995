"""Invariants of a fault run (docs/faults.md section 3.2) and its verdict.

The guest's /init checks four invariants after the suite and prints one
machine-readable line each:

    PINLEASE-INVARIANT <name> ok|violated|unchecked <detail>

(`unchecked`: the check could not run, e.g. a tool without stray-scan; it is
reported, never a violation). The runner adds `daemon` from what it saw of
the daemon, scans the console itself for hung tasks and kernel trouble (so a
guest that never finishes is still judged on what it printed), and decides
the run's verdict and exit code here.

Python 3.11 standard library only.
"""

import re

import markers
from console import KERNEL_WARNING
from exitcodes import EXIT_OK, EXIT_RUN, EXIT_VIOLATION

GUEST_INVARIANTS = ("pins", "hung-task", "kernel-warn", "stray-writes")
ALL_INVARIANTS = GUEST_INVARIANTS + ("daemon",)
STATES = ("ok", "violated", "unchecked")

INVARIANT_LINE = re.compile(
    rf"(?:^|\s){re.escape(markers.INVARIANT)} ([a-z-]+) (ok|violated|unchecked)(?: (.*))?$")
MODULE_FAULT_LINE = re.compile(rf"(?:^|\s){re.escape(markers.MODULE_FAULT)} ([a-z_]+) (\d+)$")

# Console lines that violate an invariant whatever the guest reports later:
# a hung task (KERN_ERR) and console.KERNEL_WARNING (the console carries
# KERN_WARNING and worse at the runner's loglevel 5).
HUNG_TASK = re.compile(r"blocked for more than \d+ seconds")


class InvariantError(ValueError):
    pass


def parse_invariant_line(line):
    """(name, state, detail) for a PINLEASE-INVARIANT line, None for other
    lines; InvariantError for a marker with an unknown name or state."""
    s = line.rstrip()
    if markers.INVARIANT not in s:
        return None
    m = INVARIANT_LINE.search(s)
    if not m:
        raise InvariantError(f"garbled invariant line {s!r} (want '{markers.INVARIANT} NAME "
                             f"{'|'.join(STATES)} DETAIL')")
    name, state, detail = m.group(1), m.group(2), (m.group(3) or "").strip()
    if name not in GUEST_INVARIANTS:
        raise InvariantError(f"invariant line names unknown invariant {name!r} (known: "
                             + ", ".join(GUEST_INVARIANTS) + f"): {s!r}")
    return name, state, detail


class ConsoleWatch:
    """Collects, from console lines: the guest's invariant lines, module fault
    counts, and the kernel-log trouble the console shows."""

    def __init__(self):
        self.guest = {}  # name -> (state, detail)
        self.problems = []  # garbled or repeated invariant lines
        self.hung = []
        self.warn = []
        self.module_faults = {}

    def feed(self, line):
        try:
            inv = parse_invariant_line(line)
        except InvariantError as e:
            self.problems.append(str(e))
            return True
        if inv:
            name, state, detail = inv
            if name in self.guest:
                self.problems.append(f"invariant {name} reported twice: "
                                     f"{self.guest[name]} then {(state, detail)}")
            self.guest[name] = (state, detail)
            return True
        m = MODULE_FAULT_LINE.search(line.rstrip())
        if m:
            self.module_faults[m.group(1)] = self.module_faults.get(m.group(1), 0) + int(m.group(2))
            return True
        if HUNG_TASK.search(line) and len(self.hung) < 20:
            self.hung.append(line.strip())
        elif KERNEL_WARNING.search(line) and len(self.warn) < 20:
            self.warn.append(line.strip())
        return False


def daemon_invariant(returncode, report_present, abort_signal=6):
    """The `daemon` invariant from how the daemon ended: (state, detail).
    returncode None = still running at the end of the run."""
    if returncode is None:
        return "ok", "alive at the end"
    if returncode == -abort_signal and report_present:
        return "ok", "planned abort (SIGABRT, abort report written)"
    if returncode == -abort_signal:
        return "violated", "died of SIGABRT without an abort report (not a planned abort)"
    how = f"signal {-returncode}" if returncode < 0 else f"exit {returncode}"
    return "violated", f"died ({how}) during the run"


def judge(watch, daemon, guest_finished, planned_abort, run_problem=None):
    """The run's invariants, verdict and exit code.

    watch: ConsoleWatch of the run; daemon: (state, detail) of daemon_invariant;
    guest_finished: the exit sentinel was seen (the guest ran its checks);
    planned_abort: the daemon died by a planned abort; run_problem: why the
    guest did not finish (timeout, QEMU exit), or None.

    Decisions (docs/faults.md section 3.2): any violation -> 1. A guest that
    did not finish after a planned abort leaves its invariants unchecked and
    the run is judged on the rest (0 if nothing was violated): the plan asked
    for the device to die. A guest that did not finish otherwise (including
    after a planned needs-reset, which the module must survive) is a run
    problem (3), unless the console already shows a violation (1).
    """
    inv = {}
    for name in GUEST_INVARIANTS:
        if name in watch.guest:
            state, detail = watch.guest[name]
        else:
            state, detail = "unchecked", "the guest did not report it" + (
                "" if guest_finished else " (it did not finish)")
        inv[name] = {"state": state, "detail": detail}
    # The console is the host's own view: a hung task or a WARNING it shows
    # is a violation even when the guest never got to its checks.
    for name, seen in (("hung-task", watch.hung), ("kernel-warn", watch.warn)):
        if seen and inv[name]["state"] != "violated":
            inv[name] = {"state": "violated", "detail": f"console: {seen[0]}"
                         + (f" (+{len(seen) - 1} more)" if len(seen) > 1 else "")}
    inv["daemon"] = {"state": daemon[0], "detail": daemon[1]}
    violated = [n for n in ALL_INVARIANTS if inv[n]["state"] == "violated"]
    if watch.problems and guest_finished:
        # Garbled markers mean the checks' results cannot be trusted.
        return inv, "run-problem", EXIT_RUN, "; ".join(watch.problems)
    if violated:
        return inv, "violated", EXIT_VIOLATION, "violated: " + ", ".join(violated)
    if not guest_finished:
        if planned_abort:
            return inv, "ok-abort", EXIT_OK, ("planned abort; the guest did not finish"
                                              + (f" ({run_problem})" if run_problem else "")
                                              + ": its invariants unchecked")
        return inv, "run-problem", EXIT_RUN, run_problem or "the guest did not finish"
    if planned_abort:
        return inv, "ok-abort", EXIT_OK, "planned abort; every checked invariant holds"
    return inv, "ok", EXIT_OK, "every invariant holds"


# ---------------------------------------------------------------- fault counts


def point_class(point):
    """The class of a daemon fault point: 'request:REG_MR:before' -> 'request'."""
    return str(point).split(":", 1)[0]


def fault_counts(status):
    """From a `pinlease status --json` object (or an abort report, which has
    the same shape): per-rule hits and fires, and the fires by point class x
    action: the daemon's "injected" counts ({class, action, count} each, which
    include `pinlease inject now`), else summed from the rules (one point and
    one action each). Returns None when the status has no "faults" section."""
    if not isinstance(status, dict) or not isinstance(status.get("faults"), dict):
        return None
    faults = status["faults"]
    rules = []
    by = {}
    for r in faults.get("rules") or []:
        if not isinstance(r, dict):
            continue
        # The daemon names a rule's count "fires" in its status JSON;
        # "fired" is this runner's own total below, never a rule's.
        fires = _int(r.get("fires", 0))
        rule = {"id": r.get("id"), "point": r.get("point"), "action": r.get("action"),
                "hits": _int(r.get("hits", 0)), "fires": fires}
        rules.append(rule)
        if fires:
            key = f"{point_class(rule['point'])} x {rule['action']}"
            by[key] = by.get(key, 0) + fires
    injected = faults.get("injected")
    if isinstance(injected, list):
        by = {}
        for item in injected:
            if isinstance(item, dict) and _int(item.get("count")):
                key = f"{item.get('class')} x {item.get('action')}"
                by[key] = by.get(key, 0) + item["count"]
    total = sum(by.values())
    return {"rules": rules, "by_class_action": by, "fired": total}


DEBUGFS_FIRED = re.compile(r"(?:^|\s)fired ([a-z_]+): (\d+)$")


def module_fault_counts(from_log, debugfs_lines):
    """Module faults fired, by point: the larger of the count of its "fault
    injected: NAME" log lines and the "fired NAME: N" lines of the debugfs
    faults files (summed over devices). The log can miss lines (ring buffer)
    and a device reset can restart a device's debugfs counts; neither
    over-counts."""
    fired = {}
    for line in debugfs_lines:
        m = DEBUGFS_FIRED.search(line.rstrip())
        if m:
            fired[m.group(1)] = fired.get(m.group(1), 0) + int(m.group(2))
    out = {}
    for name in set(from_log) | set(fired):
        n = max(from_log.get(name, 0), fired.get(name, 0))
        if n:
            out[name] = n
    return out


def _int(v):
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def abort_summary(report):
    """A one-line summary of an abort report (status JSON): contexts, MRs,
    pinned pages, leases by state."""
    if not isinstance(report, dict):
        return "abort report is not a JSON object"
    parts = []
    by = report.get("aborted_by")
    if isinstance(by, dict):
        parts.append(f"aborted by rule {by.get('rule')} at {by.get('point')}")
    pinned = None
    if isinstance(report.get("status"), dict):  # `status --json`: the model under "status"
        pinned = report["status"].get("pinned_pages")
        report = report["status"]
    ctxs = report.get("contexts")
    if isinstance(ctxs, list):
        parts.append(f"{len(ctxs)} contexts")
    mrs = report.get("mrs")
    if isinstance(mrs, list):
        pages = sum(_int(m.get("pages", m.get("npages", 0))) for m in mrs if isinstance(m, dict))
        pages = pinned if _int(pinned) else pages
        parts.append(f"{len(mrs)} MRs")
        parts.append(f"{pages} pinned pages")
    leases = report.get("leases")
    if isinstance(leases, list):
        states = {}
        for lease in leases:
            st = lease.get("state", "?") if isinstance(lease, dict) else "?"
            states[str(st)] = states.get(str(st), 0) + 1
        parts.append(f"{len(leases)} leases"
                     + (" (" + ", ".join(f"{k} {v}" for k, v in sorted(states.items())) + ")"
                        if states else ""))
    return ", ".join(parts) or "no contexts/mrs/leases tables in the report"
