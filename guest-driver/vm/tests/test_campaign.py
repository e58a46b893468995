"""Host tests of guest-driver/vm/campaign (no QEMU): run selection, the
ci subset, the summary's sums and never-fired points."""

import unittest

from scripts import VM_DIR, load

campaign = load("campaign")
faultplan = campaign.faultplan


class Selection(unittest.TestCase):
    def test_full_campaign_is_at_least_200_runs(self):
        runs = campaign.select_runs(campaign.parse_args([]))
        self.assertGreaterEqual(len(runs), 200)
        self.assertEqual(len(runs), len({(p.name, s) for p, s in runs}))

    def test_ci_subset_names_real_plans(self):
        runs = campaign.select_runs(campaign.parse_args(["--subset", "ci"]))
        self.assertTrue(1 <= len(runs) <= 8, len(runs))

    def test_seed_list(self):
        a = campaign.parse_args(["--seed-list", "3,0x10"])
        self.assertEqual(sorted({s for _, s in campaign.select_runs(a)}), [3, 16])
        with self.assertRaises(campaign.CampaignError) as cm:
            campaign.select_runs(campaign.parse_args(["--seed-list", "3,x"]))
        self.assertIn("'x'", str(cm.exception))

    def test_plans_glob_must_match(self):
        with self.assertRaises(campaign.CampaignError) as cm:
            campaign.select_runs(campaign.parse_args(["--plans", "/nonexistent/*.toml"]))
        self.assertIn("/nonexistent/*.toml", str(cm.exception))

    def test_subset_file_errors(self):
        plan = faultplan.parse_plan('[run]\ncases = "x"\n', "a.toml")
        known = {"a": plan}
        self.assertEqual([s for _, s in campaign.parse_subset("a 1\n# c\n\na 2 # two\n", "f",
                                                               known)], [1, 2])
        for text, want in (("b 1\n", "no plan 'b'"), ("a\n", "want 'PLAN SEED'"),
                           ("a x\n", "'x'"), ("# none\n", "lists no runs")):
            with self.assertRaises(campaign.CampaignError) as cm:
                campaign.parse_subset(text, "f", known)
            self.assertIn(want, str(cm.exception))

    def test_bad_options(self):
        import contextlib
        import io
        for argv, want in ((["--seeds", "0"], "--seeds must be >= 1, got 0"),
                           (["--jobs", "0"], "--jobs must be >= 1, got 0"),
                           (["--subset", "ci", "--seeds", "2"], "--subset lists its own seeds")):
            err = io.StringIO()
            with self.assertRaises(SystemExit), contextlib.redirect_stderr(err):
                campaign.parse_args(argv)
            self.assertIn(want, err.getvalue())


class Summary(unittest.TestCase):
    def test_sums_and_never_fired(self):
        p = faultplan.parse_plan('[[rule]]\npoint = "lease-break"\naction = "withhold"\nms = 0\n'
                                 '[[rule]]\npoint = "memory-map"\naction = "delay"\nms = 5\n',
                                 "p.toml")

        def run(seed, fires, verdict="ok"):
            return {"plan": "p", "seed": seed, "verdict": verdict, "seconds": 10.0, "dir": "d",
                    "reason": "r", "reproduce": "cmd",
                    "daemon_faults": {"fired": fires, "by_class_action":
                                      {"lease-break x withhold": fires} if fires else {},
                                      "rules": [{"point": "lease-break", "action": "withhold",
                                                 "fires": fires},
                                                {"point": "memory-map", "action": "delay",
                                                 "fires": 0}]},
                    "module_faults": {"pin_after": seed}}

        agg = campaign.aggregate([run(0, 2), run(1, 3, "violated")], campaign.shards.rule_keys(p))
        self.assertEqual(agg["faults_by_class_action"], {"lease-break x withhold": 5})
        self.assertEqual(agg["never_fired"], ["memory-map delay"])
        self.assertEqual(agg["module_faults"], {"pin_after": 1})
        self.assertIn("lease_set", agg["module_points_never_fired"])
        self.assertNotIn("pin_after", agg["module_points_never_fired"])
        self.assertEqual([(v["plan"], v["seed"]) for v in agg["violations"]], [("p", 1)])
        md = campaign.summary_md(agg, [run(0, 2), run(1, 3, "violated")], 20.0)
        self.assertIn("`cmd`", md)
        self.assertIn("memory-map delay", md)


if __name__ == "__main__":
    unittest.main()


class Coverage(unittest.TestCase):
    """The plans in guest-driver/campaigns together name every daemon fault
    point and action and set every module fault parameter (docs/faults.md
    sections 1.2, 1.3, 2)."""

    # Every fault_* parameter of the module (its source is the list:
    # moduleparams.py).
    MODULE_PARAMS = {p for p in faultplan.GUEST_PARAMS if p.startswith("fault_")}

    def abi_names(self, prefix):
        """Names of the C header's PL_<prefix>* constants (the header is
        checked against the Rust ABI by tests/abi_layout.rs)."""
        import re
        header = (VM_DIR.parents[0] / "include" / "pinlease_abi.h").read_text()
        return set(re.findall(rf"#define {prefix}([A-Z_]+)\s+\d+\s*$", header, re.M))

    def actions(self):
        """Fault actions by their plan names: PL_FAULT_ACTION_REVOKE_MR -> revoke-mr."""
        return {n.lower().replace("_", "-") for n in self.abi_names("PL_FAULT_ACTION_")}

    def test_every_point_action_and_module_parameter(self):
        plans = campaign.find_plans(str(campaign.CAMPAIGNS / "*.toml"))
        rules = [r for p in plans for r in p.rules()]
        points = {r["point"] for r in rules}
        ops = self.abi_names("PL_OP_")
        self.assertIn("REG_MR", ops)
        kinds = self.abi_names("PL_EVENT_") - {"FAULT_INJECTED", "NEEDS_RESET"}
        self.assertIn("SCRUB_LOST_ACCESS", kinds)
        want = ({f"request:{op}:{w}" for op in ops for w in ("before", "after")}
                | {f"event:{k}" for k in kinds} | {"memory-map", "context-teardown", "lease-break"})
        self.assertEqual(want - points, set())
        self.assertIn("revoke-mr", self.actions())
        self.assertEqual(self.actions() - {r["action"] for r in rules}, set())
        self.assertEqual(self.MODULE_PARAMS - {k for p in plans for k in p.guest}, set())
