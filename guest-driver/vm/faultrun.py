"""What --faults adds to a run (docs/faults.md section 3): the plan, the
seed and the module parameters picked for it, the files handed to the
daemon, the console watch for the guest's invariant lines, and the judging
of the run on its invariants (OUT/invariants.json).

Python 3.11 standard library only.
"""

import json
from pathlib import Path

import faultplan
import invariants
from procs import fmt_cmd
from progress import say

# The guest's hung-task detector reports a task blocked this long (the
# kernel default, 120 s, is longer than a campaign run).
HUNG_TASK_SECS = 10


class FaultRun:
    """What --faults adds to a run: the plan, the seed and the module
    parameters picked for it, the files handed to the daemon, and the
    console watch that collects the guest's invariant lines."""

    def __init__(self, a, out):
        self.plan = faultplan.load_plan(a.faults)
        self.plan_path = a.faults.resolve()
        self.seed = (faultplan.parse_seed(a.seed) if a.seed is not None
                     else self.plan.daemon.get("seed", 0))
        self.params, self.picks = faultplan.pick_guest_params(self.plan.guest, self.seed)
        self.cases = a.cases or self.plan.run.get("cases") or "*"
        self.daemon_plan = out / "faults.toml"
        self.abort_report = out / "abort-report.json"
        self.watch = invariants.ConsoleWatch()
        self.planned_abort = False
        self.daemon_rc = None
        self.guest_finished = False
        self.reached_init = False
        self.run_problem = None
        self.status_taken = False
        self.debugfs = []

    def prepare(self, out):
        for stale in ("abort-report.json", "invariants.json", "status-final.json",
                      "module-faults.txt"):
            (out / stale).unlink(missing_ok=True)
        self.daemon_plan.write_text(faultplan.daemon_toml(self.plan, self.seed))
        (out / "guest-params.json").write_text(json.dumps(
            {"plan": str(self.plan_path), "seed": self.seed, "params": self.params,
             "picks": self.picks}, indent=2) + "\n")
        say(f"faults: plan {self.plan_path} seed {self.seed}: {len(self.plan.rules())} daemon "
            f"rules -> {self.daemon_plan}; module parameters: "
            f"{faultplan.module_args(self.params) or '(none)'}"
            + (" (picked: " + ", ".join(f"{k}={v['value']} of {v['choices']}"
                                       for k, v in self.picks.items()) + ")"
               if self.picks else ""))

    def run_conf(self):
        """What the run adds to /init's run.conf (see guest.run_conf)."""
        # FUZZ_SEED: the run's seed for campaign_ioctl_fuzz (docs/guest-fuzz.md).
        return {"MODULE_PARAMS": faultplan.module_args(self.params), "FAULTS": "1",
                "HUNG_TASK_SECS": str(HUNG_TASK_SECS), "FUZZ_SEED": str(self.seed)}

    def reproduce(self, a):
        cmd = ["guest-driver/vm/run", "--faults", str(self.plan_path), "--seed", str(self.seed),
               "--cases", self.cases]
        if a.scrub_period_ms != 20:
            cmd += ["--scrub-period-ms", str(a.scrub_period_ms)]
        if a.exec_script:
            cmd += ["--exec", str(a.exec_script)]
        return fmt_cmd(cmd)


def finish_fault_run(fr, a, ktap, out, t_run):
    """Judges a --faults run on its invariants: prints them, writes
    OUT/invariants.json, returns the exit code."""
    report = None
    if fr.abort_report.is_file():
        try:
            report = json.loads(fr.abort_report.read_text())
        except ValueError:
            say(f"WARNING: {fr.abort_report} is not valid JSON")
    # A planned abort leaves a report the runner can read; an unreadable one
    # does not count as planned.
    daemon = invariants.daemon_invariant(fr.daemon_rc, report is not None)
    inv, verdict, code, reason = invariants.judge(fr.watch, daemon, fr.guest_finished,
                                                  fr.planned_abort, fr.run_problem)
    try:
        status = json.loads((out / "status-final.json").read_text())
    except (OSError, ValueError):
        status = None
    counts = invariants.fault_counts(status) or invariants.fault_counts(report)
    passed, skip, failed = ktap.counts()
    for name in invariants.ALL_INVARIANTS:
        say(f"invariant {name}: {inv[name]['state']} {inv[name]['detail']}")
    say(f"cases: {ktap.tally()} (under --faults case failures are counted, not judged)")
    if counts is not None:
        say(f"daemon faults fired: {counts['fired']}"
            + (" (" + ", ".join(f"{k} {v}" for k, v in sorted(counts["by_class_action"].items()))
               + ")" if counts["by_class_action"] else ""))
    else:
        say("daemon faults fired: unknown (no \"faults\" section in status-final.json)")
    module_faults = invariants.module_fault_counts(fr.watch.module_faults, fr.debugfs)
    if module_faults:
        say("module faults fired: " + ", ".join(f"{k} {v}" for k, v in
                                                sorted(module_faults.items())))
    if fr.debugfs:
        (out / "module-faults.txt").write_text("".join(x + "\n" for x in fr.debugfs))
    repro = fr.reproduce(a)
    result = {
        "plan": str(fr.plan_path), "plan_name": fr.plan.name, "seed": fr.seed,
        "cases": fr.cases, "guest_params": fr.params, "picks": fr.picks,
        "verdict": verdict, "exit_code": code, "reason": reason,
        "invariants": inv,
        "case_counts": {"passed": passed, "skipped": skip, "failed": len(failed),
                        "planned": ktap.plan},
        "failed_cases": failed,
        "daemon_faults": counts, "module_faults": module_faults,
        "abort_summary": invariants.abort_summary(report) if report is not None else None,
        "guest_finished": fr.guest_finished, "reached_init": fr.reached_init,
        "seconds": round(t_run, 1),
        "reproduce": repro,
    }
    (out / "invariants.json").write_text(json.dumps(result, indent=2) + "\n")
    say(f"verdict: {verdict} ({reason}); {out}/invariants.json")
    if code == invariants.EXIT_VIOLATION:
        say(f"INVARIANT VIOLATED under plan {fr.plan_path} seed {fr.seed}; reproduce with:\n"
            f"  {repro}")
    return code


def say_abort_report(path):
    """Prints the abort report's summary (the daemon aborted as planned)."""
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        say(f"pinlease serve aborted (planned); its report {path} is unreadable: {e}")
        return
    say(f"pinlease serve aborted (planned); report {path}: {invariants.abort_summary(report)}")
