"""Host tests of guest-driver/vm/invariants.py (no QEMU): the invariant
lines /init prints, the console watch, the verdict, the fault counts."""

import re
import sys
import unittest
from pathlib import Path

VM_DIR = Path(__file__).resolve().parents[1]
sys.dont_write_bytecode = True
sys.path.insert(0, str(VM_DIR))
import invariants  # noqa: E402
from invariants import ConsoleWatch, InvariantError  # noqa: E402
import markers  # noqa: E402

INV = markers.INVARIANT
MODFAULT = markers.MODULE_FAULT


def watch(*lines):
    w = ConsoleWatch()
    for line in lines:
        w.feed(line)
    return w


ALL_OK = [f"{INV} {n} ok fine" for n in invariants.GUEST_INVARIANTS]
ALIVE = ("ok", "alive at the end")


class Lines(unittest.TestCase):
    def test_parse(self):
        self.assertEqual(invariants.parse_invariant_line(
            f"{INV} pins violated nr_foll_pin_acquired 10 nr_foll_pin_released 8"),
            ("pins", "violated", "nr_foll_pin_acquired 10 nr_foll_pin_released 8"))
        self.assertEqual(invariants.parse_invariant_line(f"{INV} hung-task ok"),
                         ("hung-task", "ok", ""))
        # After a kernel message glued in front by the console.
        self.assertEqual(invariants.parse_invariant_line(
            f"[  3.1] x {INV} stray-writes unchecked no tool\r"),
            ("stray-writes", "unchecked", "no tool"))
        self.assertIsNone(invariants.parse_invariant_line("ok 1 dma_write"))

    def test_garbled_and_unknown(self):
        for bad in (f"{INV} pins maybe x", f"{INV} daemon ok x",
                    INV, f"{INV} nope ok"):
            with self.assertRaises(InvariantError) as cm:
                invariants.parse_invariant_line(bad)
            self.assertIn(repr(bad), str(cm.exception))

    def test_watch_collects(self):
        w = watch(*ALL_OK, f"{MODFAULT} pin_after 2", f"{MODFAULT} pin_after 1",
                  "[  9.0] INFO: task x:12 blocked for more than 10 seconds.",
                  "[  9.1] WARNING: CPU: 0 PID: 1 at mm/gup.c:1 foo", "ok 1 x")
        self.assertEqual(w.guest["pins"], ("ok", "fine"))
        self.assertEqual(w.module_faults, {"pin_after": 3})
        self.assertEqual(len(w.hung), 1)
        self.assertEqual(len(w.warn), 1)
        self.assertEqual(w.problems, [])

    def test_twice_is_a_problem(self):
        w = watch(f"{INV} pins ok a", f"{INV} pins violated b")
        self.assertIn("reported twice", w.problems[0])


class Verdict(unittest.TestCase):
    def test_all_hold(self):
        inv, verdict, code, _ = invariants.judge(watch(*ALL_OK), ALIVE, True, False)
        self.assertEqual((verdict, code), ("ok", 0))
        self.assertEqual(set(inv), set(invariants.ALL_INVARIANTS))

    def test_guest_violation(self):
        lines = ALL_OK[1:] + [f"{INV} pins violated acquired 5 released 4"]
        inv, verdict, code, reason = invariants.judge(watch(*lines), ALIVE, True, False)
        self.assertEqual((verdict, code), ("violated", 1))
        self.assertIn("pins", reason)

    def test_console_violation_overrides_guest_ok(self):
        w = watch(*ALL_OK, "[ 5.0] BUG: kernel NULL pointer dereference, address: 0")
        inv, verdict, code, _ = invariants.judge(w, ALIVE, True, False)
        self.assertEqual(code, 1)
        self.assertIn("console: ", inv["kernel-warn"]["detail"])

    def test_unchecked_is_not_a_violation(self):
        lines = ALL_OK[:3] + [f"{INV} stray-writes unchecked no stray-scan"]
        _, verdict, code, _ = invariants.judge(watch(*lines), ALIVE, True, False)
        self.assertEqual((verdict, code), ("ok", 0))

    def test_daemon_deaths(self):
        self.assertEqual(invariants.daemon_invariant(None, False)[0], "ok")
        self.assertEqual(invariants.daemon_invariant(-6, True)[0], "ok")
        self.assertEqual(invariants.daemon_invariant(-6, False)[0], "violated")
        state, detail = invariants.daemon_invariant(-11, False)
        self.assertEqual(state, "violated")
        self.assertIn("signal 11", detail)
        _, verdict, code, _ = invariants.judge(watch(*ALL_OK), ("violated", "x"), True, False)
        self.assertEqual(code, 1)

    def test_planned_abort_guest_unfinished(self):
        inv, verdict, code, reason = invariants.judge(
            watch(), invariants.daemon_invariant(-6, True), False, True, "timeout")
        self.assertEqual((verdict, code), ("ok-abort", 0))
        self.assertEqual(inv["pins"]["state"], "unchecked")
        self.assertIn("timeout", reason)
        # ... but a hung task the console showed still counts.
        w = watch("INFO: task a:1 blocked for more than 10 seconds.")
        _, verdict, code, _ = invariants.judge(w, invariants.daemon_invariant(-6, True), False,
                                               True)
        self.assertEqual((verdict, code), ("violated", 1))

    def test_unfinished_without_abort_is_a_run_problem(self):
        _, verdict, code, reason = invariants.judge(watch(), ALIVE, False, False,
                                                    "QEMU exited (exit 1)")
        self.assertEqual((verdict, code), ("run-problem", 3))
        self.assertIn("QEMU exited", reason)

    def test_garbled_marker_is_a_run_problem(self):
        w = watch(*ALL_OK, f"{INV} pins dunno")
        _, verdict, code, _ = invariants.judge(w, ALIVE, True, False)
        self.assertEqual((verdict, code), ("run-problem", 3))


class Counts(unittest.TestCase):
    STATUS = {"ok": True, "status": {"contexts": [1, 2], "mrs": [{"pages": 3}],
                                     "pinned_pages": 3,
                                     "leases": [{"state": "ACTIVE"}, {"state": "LOST"},
                                                {"state": "ACTIVE"}]},
              "faults": {"seed": 1, "rules": [
                  {"id": 1, "point": "request:REG_MR:before", "action": "fail", "hits": 4,
                   "fires": 2},
                  {"id": 2, "point": "event:MR_REVOKED", "action": "drop", "hits": 1,
                   "fires": 0}],
                  "injected": [{"class": "request", "action": "fail", "count": 2},
                               {"class": "runtime", "action": "revoke-mr", "count": 1}]}}

    def test_from_injected(self):
        c = invariants.fault_counts(self.STATUS)
        self.assertEqual(c["fired"], 3)
        self.assertEqual(c["by_class_action"], {"request x fail": 2, "runtime x revoke-mr": 1})
        self.assertEqual([r["fires"] for r in c["rules"]], [2, 0])

    def test_from_rules_without_injected(self):
        st = {"faults": dict(self.STATUS["faults"])}
        del st["faults"]["injected"]
        self.assertEqual(invariants.fault_counts(st)["by_class_action"], {"request x fail": 2})
        self.assertIsNone(invariants.fault_counts({"ok": True}))

    def test_only_the_daemons_fires_key(self):
        # The daemon writes "fires" per rule; a rule with "fired" is not one
        # of its rules' counts and adds nothing.
        st = {"faults": {"rules": [
            {"id": 1, "point": "request:REG_MR:before", "action": "fail", "hits": 4,
             "fired": 2}]}}
        c = invariants.fault_counts(st)
        self.assertEqual((c["fired"], c["rules"][0]["fires"], c["by_class_action"]), (0, 0, {}))

    def test_abort_summary(self):
        r = dict(self.STATUS, aborted_by={"rule": 3, "point": "lease-break"})
        s = invariants.abort_summary(r)
        for want in ("rule 3 at lease-break", "2 contexts", "1 MRs", "3 pinned pages",
                     "3 leases (ACTIVE 2, LOST 1)"):
            self.assertIn(want, s)

    def test_module_fault_counts(self):
        log = {"pin_after": 1, "drop_event": 2}
        dbg = ["/sys/kernel/debug/pinlease/pinlease0/faults: fired pin_after: 3",
               "/sys/kernel/debug/pinlease/pinlease0/faults: fired lease_set: 0",
               "/sys/kernel/debug/pinlease/pinlease0/faults: param fault_pin_after: 2"]
        self.assertEqual(invariants.module_fault_counts(log, dbg),
                         {"pin_after": 3, "drop_event": 2})



class InitShReports(unittest.TestCase):
    """init.sh reports the guest invariants that invariants.py judges: the
    names and states of its `inv NAME STATE ...` lines are the ones this
    module knows, and every guest invariant is reported ok somewhere (a
    renamed invariant on either side fails here, not in a campaign)."""

    def test_init_sh_inv_lines_match_guest_invariants(self):
        text = (Path(__file__).resolve().parents[1] / "init.sh").read_text()
        calls = re.findall(r"^\s*inv ([a-z-]+) ([a-z]+)\b", text, re.M)
        self.assertTrue(calls, "no `inv NAME STATE` lines in init.sh")
        for name, state in calls:
            self.assertIn(name, invariants.GUEST_INVARIANTS, f"init.sh: inv {name} {state}")
            self.assertIn(state, invariants.STATES, f"init.sh: inv {name} {state}")
        self.assertEqual({n for n, s in calls if s == "ok"}, set(invariants.GUEST_INVARIANTS))


if __name__ == "__main__":
    unittest.main()
