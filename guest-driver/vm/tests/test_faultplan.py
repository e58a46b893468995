"""Host tests of guest-driver/vm/faultplan.py (no QEMU): plan validation,
seed picks, the daemon's TOML. Run: python3 -m unittest discover -s guest-driver/vm/tests"""

import sys
import tomllib
import unittest
from pathlib import Path

VM_DIR = Path(__file__).resolve().parents[1]
REPO = VM_DIR.parents[1]
sys.dont_write_bytecode = True
sys.path.insert(0, str(VM_DIR))
import faultplan  # noqa: E402
from faultplan import PlanError  # noqa: E402

RULE = '[[rule]]\npoint = "request:DEREG_MR:before"\naction = "drop"\ncount = 1\n'


def plan(text):
    return faultplan.parse_plan(text, "p.toml")


class Validation(unittest.TestCase):
    def assertRefused(self, text, *fragments):
        with self.assertRaises(PlanError) as cm:
            plan(text)
        msg = str(cm.exception)
        self.assertIn("p.toml", msg)
        for f in fragments:
            self.assertIn(f, msg)

    def test_contract_example_is_accepted(self):
        p = plan('seed = 0\n' + RULE + '[guest]\nfault_pin_after = [0, 1, 7]\n'
                 'req_timeout_ms = 4000\n[run]\ncases = "campaign_*"\ndescription = "x"\n')
        self.assertEqual(p.guest, {"fault_pin_after": [0, 1, 7], "req_timeout_ms": 4000})
        self.assertEqual(p.run["cases"], "campaign_*")
        self.assertEqual(p.points(), ["request:DEREG_MR:before"])
        self.assertNotIn("guest", p.daemon)
        self.assertNotIn("run", p.daemon)

    def test_unknown_guest_key_names_key_and_value(self):
        self.assertRefused("[guest]\nfault_pin_aftr = 3\n", "fault_pin_aftr", "3", "fault_pin_after")

    def test_unknown_run_key(self):
        self.assertRefused('[run]\ncase = "x"\n', "[run]", "'case'", "'x'")

    def test_wrong_types(self):
        self.assertRefused('[guest]\nreq_timeout_ms = "4000"\n', "req_timeout_ms", "string",
                           "'4000'")
        # A TOML boolean is not a number, although Python's bool is an int.
        self.assertRefused("[guest]\nfault_lease_set = true\n", "fault_lease_set", "boolean")
        self.assertRefused("[guest]\nrequire_lease = 1\n", "require_lease", "integer")
        self.assertRefused("[run]\ncases = 3\n", "[run] cases", "integer 3")
        self.assertRefused("[guest]\nfault_pin_after = 1.5\n", "float")

    def test_ranges_are_the_modules(self):
        self.assertRefused("[guest]\nfault_pin_after = -2\n", "fault_pin_after", "-1..", "-2")
        self.assertRefused("[guest]\nreq_timeout_ms = 0\n", "req_timeout_ms", "got 0")
        self.assertRefused("[guest]\nfault_release_delay_ms = 60001\n", "0..60000", "60001")
        self.assertRefused("[guest]\nfault_drop_event = [1, -1]\n", "fault_drop_event[1]", "-1")
        plan("[guest]\nfault_pin_after = -1\nfault_release_delay_ms = 60000\n")

    def test_empty_list_and_empty_cases(self):
        self.assertRefused("[guest]\nfault_lease_set = []\n", "fault_lease_set", "empty list")
        self.assertRefused('[run]\ncases = " "\n', "cases is empty")

    def test_tables_must_be_tables(self):
        self.assertRefused("guest = 3\n", "'guest' must be a table", "3")
        self.assertRefused("run = [1]\n", "'run' must be a table")

    def test_bad_toml_and_bad_seed(self):
        self.assertRefused("seed = \n", "not valid TOML")
        self.assertRefused('seed = "7"\n', "seed", "'7'")
        self.assertRefused("seed = -1\n", "seed", "-1")

    def test_parse_seed(self):
        self.assertEqual(faultplan.parse_seed("0x10"), 16)
        for bad in ("x", "-3", str(1 << 63)):
            with self.assertRaises(PlanError) as cm:
                faultplan.parse_seed(bad)
            self.assertIn(bad if bad != "-3" else "-3", str(cm.exception))

    def test_load_plan_missing_file(self):
        with self.assertRaises(PlanError) as cm:
            faultplan.load_plan("/nonexistent/plan.toml")
        self.assertIn("/nonexistent/plan.toml", str(cm.exception))


class Picks(unittest.TestCase):
    GUEST = {"fault_pin_after": [0, 1, 7], "fault_drop_event": [0, 1, 2, 3, 4],
             "req_timeout_ms": 4000}

    def test_deterministic_per_seed(self):
        for seed in range(20):
            a = faultplan.pick_guest_params(self.GUEST, seed)
            b = faultplan.pick_guest_params(dict(reversed(list(self.GUEST.items()))), seed)
            self.assertEqual(a, b)
        params, picks = faultplan.pick_guest_params(self.GUEST, 3)
        self.assertEqual(params["req_timeout_ms"], 4000)
        self.assertNotIn("req_timeout_ms", picks)
        self.assertEqual(picks["fault_pin_after"]["value"],
                         [0, 1, 7][picks["fault_pin_after"]["index"]])

    def test_known_values(self):
        # splitmix64's published first output for state 0 (the generator the
        # daemon uses too): a change here changes every campaign's picks.
        self.assertEqual(faultplan.splitmix64(0)[1], 0xE220A8397B1DCDAF)
        self.assertEqual(faultplan.splitmix64(faultplan.splitmix64(0)[0])[1], 0x6E789E6AA1B965F4)

    def test_seeds_spread_over_the_choices(self):
        seen = {faultplan.pick_guest_params(self.GUEST, s)[0]["fault_drop_event"]
                for s in range(40)}
        self.assertEqual(seen, {0, 1, 2, 3, 4})

    def test_adding_a_parameter_keeps_other_picks(self):
        more = dict(self.GUEST, fault_lease_set=[1, 2])
        for seed in range(10):
            a = faultplan.pick_guest_params(self.GUEST, seed)[0]
            b = faultplan.pick_guest_params(more, seed)[0]
            self.assertEqual(a["fault_pin_after"], b["fault_pin_after"])

    def test_module_args(self):
        self.assertEqual(faultplan.module_args({"req_timeout_ms": 4000, "require_lease": True,
                                                "fault_pin_after": -1}),
                         "fault_pin_after=-1 req_timeout_ms=4000 require_lease=Y")
        self.assertEqual(faultplan.module_args({}), "")


class DaemonToml(unittest.TestCase):
    def test_round_trip_without_runner_tables(self):
        text = ('seed = 5\n' + RULE + '[[rule]]\npoint = "lease-break"\naction = "withhold"\n'
                'ms = 0\nprobability = 0.5\n'
                '[[rule]]\npoint = "request:REG_MR:before"\naction = "fail"\nstatus = "ENOMEM"\n'
                '[guest]\nreq_timeout_ms = 4000\n[run]\ncases = "c_*"\n')
        p = plan(text)
        out = tomllib.loads(faultplan.daemon_toml(p, 9))
        want = tomllib.loads(text)
        del want["guest"], want["run"]
        want["seed"] = 9  # the run's seed replaces the plan's
        self.assertEqual(out, want)

    def test_strings_are_escaped(self):
        p = plan('[[rule]]\npoint = "a\\"b\\\\c\\n"\naction = "x"\n')
        self.assertEqual(tomllib.loads(faultplan.daemon_toml(p, 0))["rule"][0]["point"],
                         'a"b\\c\n')

    def test_unknown_top_level_keys_pass_through_for_the_daemon(self):
        p = plan('colour = "red"\n' + RULE + '[extra]\nx = [1, 2]\n')
        out = tomllib.loads(faultplan.daemon_toml(p, 0))
        self.assertEqual(out["colour"], "red")
        self.assertEqual(out["extra"], {"x": [1, 2]})
        self.assertEqual(len(out["rule"]), 1)


class CampaignPlans(unittest.TestCase):
    """The plans in guest-driver/campaigns all load."""

    def test_every_plan_loads(self):
        plans = sorted((REPO / "guest-driver" / "campaigns").glob("*.toml"))
        self.assertTrue(plans)
        for path in plans:
            p = faultplan.load_plan(path)
            self.assertTrue(p.run.get("description"), f"{path}: no [run] description")
            self.assertTrue(p.run.get("cases"), f"{path}: no [run] cases (the whole suite)")


if __name__ == "__main__":
    unittest.main()


class RunnerRefusesBadPlans(unittest.TestCase):
    """vm/run itself: a bad plan is a setup problem (exit 2) before anything
    is built or booted, and the message names the key and the value."""

    def run_vm(self, *args):
        import subprocess
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            r = subprocess.run([sys.executable, "-B", str(VM_DIR / "run"), "--out", d, *args],
                               capture_output=True, text=True, timeout=60)
        return r.returncode, r.stdout + r.stderr

    def test_bad_guest_value(self):
        import tempfile
        with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
            f.write('[guest]\nreq_timeout_ms = [1000, "2s"]\n')
            f.flush()
            rc, out = self.run_vm("--faults", f.name, "--seed", "1")
        self.assertEqual(rc, 2, out)
        self.assertIn("req_timeout_ms[1] must be an integer, got string '2s'", out)

    def test_bad_seed_and_missing_plan(self):
        rc, out = self.run_vm("--faults", "/nonexistent.toml")
        self.assertEqual(rc, 2, out)
        self.assertIn("/nonexistent.toml", out)
        rc, out = self.run_vm("--faults", str(REPO / "guest-driver" / "campaigns" / "control.toml"),
                              "--seed", "x1")
        self.assertEqual(rc, 2, out)
        self.assertIn("seed must be an integer, got 'x1'", out)
        rc, out = self.run_vm("--seed", "3")
        self.assertEqual(rc, 2, out)
        self.assertIn("--seed is for --faults runs", out)
