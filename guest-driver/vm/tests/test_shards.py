"""`vm/campaign --shard K/N` and `vm/campaign merge` (shards.py): the split
of the real plan list covers every run once for several N, bad --shard
values are refused before anything runs, and shards written by the
campaign's own report code from fabricated run results merge into what one
machine writes, or are refused naming the shard at fault."""

import contextlib
import io
import json
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from test_campaign import campaign

shards = campaign.shards
VM_DIR = Path(__file__).resolve().parents[1]


def quiet(fn, *args):
    """FN(*ARGS) with its progress lines (stdout) kept off the test output."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


class Split(unittest.TestCase):
    def test_every_run_in_exactly_one_shard(self):
        runs = campaign.select_runs(campaign.parse_args([]))
        keys = sorted((p.name, s) for p, s in runs)
        for n in (1, 2, 3, 4, 7, 16, len(runs), len(runs) + 5):
            got = [(p.name, s) for k in range(1, n + 1) for p, s in shards.split(runs, k, n)]
            self.assertEqual(sorted(got), keys, f"N={n}")
            self.assertEqual(len(got), len(set(got)), f"N={n}: a run in two shards")
            sizes = [len(shards.split(runs, k, n)) for k in range(1, n + 1)]
            self.assertLessEqual(max(sizes) - min(sizes), 1, f"N={n}: {sizes}")

    def test_split_ignores_input_order(self):
        runs = campaign.select_runs(campaign.parse_args(["--seeds", "2"]))
        backwards = list(reversed(runs))
        for k in (1, 2, 3):
            self.assertEqual([(p.name, s) for p, s in shards.split(runs, k, 3)],
                             [(p.name, s) for p, s in shards.split(backwards, k, 3)])

    def test_shard_of_agrees_with_split(self):
        runs = campaign.select_runs(campaign.parse_args(["--seeds", "3"]))
        ordered = sorted((p.name, s) for p, s in runs)
        for i, key in enumerate(ordered):
            k = shards.shard_of(i, 5)
            self.assertIn(key, [(p.name, s) for p, s in shards.split(runs, k, 5)])

    def test_list_of_a_shard(self):
        r = subprocess.run([sys.executable, str(VM_DIR / "campaign"), "--shard", "2/3",
                            "--seeds", "1", "--list"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        runs = campaign.select_runs(campaign.parse_args(["--seeds", "1"]))
        want = [f"{p.name} {s}" for p, s in shards.split(runs, 2, 3)]
        self.assertEqual(r.stdout.splitlines(), want + [f"{len(want)} runs (shard 2/3)"])

    def test_bad_shard_values(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out"
            for bad in ("0/3", "4/3", "1/0", "a/b", "1", "", "-1/3", "1/3/4"):
                r = subprocess.run([sys.executable, str(VM_DIR / "campaign"), f"--shard={bad}",
                                    "--out", str(out)], capture_output=True, text=True)
                self.assertEqual(r.returncode, campaign.EXIT_SETUP, bad)
                self.assertIn("--shard", r.stderr)
                self.assertIn(repr(bad), r.stderr)
                self.assertFalse(out.exists(), f"--shard {bad!r} created {out}")

    def test_parse_shard(self):
        self.assertEqual(shards.parse_shard("3/8"), (3, 8))
        self.assertEqual(shards.parse_shard("1/1"), (1, 1))


class Merge(unittest.TestCase):
    """Shards written by campaign.report() from fabricated run results (the
    runs' shape is one_attempt's), merged by `campaign merge`."""

    N = 3

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)
        self.runs = campaign.select_runs(campaign.parse_args(["--seeds", "2"]))
        self.ident = shards.identity(self.runs, "c0ffee", "d1ff", None)
        self.rule_keys = [k for p in self.ident["plans"].values() for k in p["rules"]]

    def tearDown(self):
        self.tmp.cleanup()

    @staticmethod
    def result(plan, seed):
        violated = plan.name == "drop-mr" and seed == 1
        return {"plan": plan.name, "plan_path": plan.path, "seed": seed, "exit_code": 0,
                "seconds": 10.0 + seed, "dir": f"/x/{plan.name}/seed-{seed}",
                "verdict": "violated" if violated else "ok", "reason": "r",
                "invariants": {}, "case_counts": {"passed": 6, "failed": 0},
                "daemon_faults": {"fired": seed + 1, "by_class_action": {"request x fail": seed + 1},
                                  "rules": []},
                "module_faults": {"pin_after": seed}, "reproduce": f"run {plan.name} {seed}"}

    def write_shard(self, k, n=None, ident=None, runs=None):
        n = n or self.N
        out = self.dir / f"shard{k}"
        out.mkdir()
        camp = dict(ident or self.ident, shard={"k": k, "n": n})
        mine = shards.split(self.runs, k, n) if runs is None else runs
        quiet(campaign.report, out, camp, [self.result(p, s) for p, s in mine], self.rule_keys,
              100.0 + k)
        return out

    def merge(self, dirs):
        out = self.dir / "merged"
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                return campaign.main(["merge", *map(str, dirs), "--out", str(out)]), out
            except campaign.CampaignError as e:
                return str(e), out

    def test_merge_equals_one_machine(self):
        dirs = [self.write_shard(k) for k in (2, 3, 1)]
        rc, out = self.merge(dirs)
        self.assertEqual(rc, campaign.EXIT_VIOLATION)  # drop-mr seed 1
        single = self.dir / "single"
        single.mkdir()
        all_results = sorted((self.result(p, s) for p, s in self.runs),
                             key=lambda r: (r["plan"], r["seed"]))
        quiet(campaign.report, single, dict(self.ident, shard=None), all_results,
              self.rule_keys, 100.0 + self.N)
        merged, one = (json.loads((d / "campaign.json").read_text()) for d in (out, single))
        self.assertEqual(merged["summary"], one["summary"])
        self.assertEqual(merged["runs"], one["runs"])
        self.assertEqual(merged["wall_seconds"], one["wall_seconds"])
        self.assertEqual(merged["campaign"]["id"], self.ident["id"])
        self.assertEqual(sorted(m["shard"]["k"] for m in merged["campaign"]["merged_from"]),
                         [1, 2, 3])
        self.assertEqual((out / "summary.md").read_text(), (single / "summary.md").read_text())

    def test_missing_shard_and_run(self):
        d1 = self.write_shard(1)
        d2 = self.write_shard(2, runs=shards.split(self.runs, 2, self.N)[1:])
        err, out = self.merge([d1, d2])
        self.assertIn("missing shard(s) 3/3", err)
        lost = shards.split(self.runs, 2, self.N)[0]
        self.assertIn(f"{d2}/campaign.json: run {lost[0].name} {lost[1]} missing (shard 2/3)",
                      err)
        self.assertFalse(out.exists())

    def test_overlap_and_wrong_shard(self):
        d1 = self.write_shard(1)
        d2 = self.write_shard(2, runs=shards.split(self.runs, 2, self.N)
                              + shards.split(self.runs, 1, self.N)[:1])
        d3 = self.write_shard(3)
        err, _ = self.merge([d1, d2, d3])
        p, s = shards.split(self.runs, 1, self.N)[0]
        self.assertIn(f"{d2}/campaign.json: run {p.name} {s} belongs to shard 1/3, not 2/3", err)
        self.assertIn(f"{d2}/campaign.json: run {p.name} {s} also in {d1}/campaign.json "
                      "(overlap)", err)

    def test_same_shard_twice(self):
        d1 = self.write_shard(1)
        twin = self.dir / "twin"
        twin.mkdir()
        (twin / "campaign.json").write_text((d1 / "campaign.json").read_text())
        err, _ = self.merge([d1, twin, self.write_shard(2), self.write_shard(3)])
        self.assertIn(f"{twin}/campaign.json: shard 1/3 given twice", err)

    def test_other_campaign_refused(self):
        other = shards.identity(self.runs, "beef", "d1ff", None)
        d1 = self.write_shard(1)
        d2 = self.write_shard(2, ident=other)
        err, _ = self.merge([d1, d2, self.write_shard(3)])
        self.assertIn(f"{d2}/campaign.json: campaign {other['id']}, not {self.ident['id']}", err)
        self.assertIn("differs in: commit", err)

    def test_other_split_refused(self):
        d1 = self.write_shard(1)
        d2 = self.write_shard(2, n=4, runs=shards.split(self.runs, 2, 4))
        err, _ = self.merge([d1, d2])
        self.assertIn("different splits", err)
        self.assertIn(f"{d2}/campaign.json 4", err)

    def test_not_a_shard(self):
        bad = self.dir / "bad"
        bad.mkdir()
        (bad / "campaign.json").write_text('{"summary": {}, "runs": []}')
        err, _ = self.merge([bad])
        self.assertIn(f"{bad}/campaign.json: no \"campaign\" identity", err)
        err, _ = self.merge([self.dir / "none"])
        self.assertIn("cannot read", err)


if __name__ == "__main__":
    unittest.main()
