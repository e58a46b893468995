"""vm/soak (no QEMU): the flatness judge, the sample parsing, the plans a
soak rotates, the guest script, and bad options refused before anything
is written. The real soak's figures are in docs/soak.md."""

import contextlib
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

VM_DIR = Path(__file__).resolve().parents[1]
sys.dont_write_bytecode = True
sys.path.insert(0, str(VM_DIR))
import markers  # noqa: E402
import soakjudge  # noqa: E402
import scripts  # noqa: E402
from exitcodes import EXIT_SETUP  # noqa: E402


soak = scripts.load("soak")

STATUS = """Name:\tpinlease
VmPeak:\t  100000 kB
VmHWM:\t    9000 kB
VmRSS:\t    8000 kB
RssAnon:\t    3000 kB
RssFile:\t    4000 kB
RssShmem:\t    1000 kB
Threads:\t4
"""


class Flatness(unittest.TestCase):
    def test_flat_within_tolerance(self):
        # warm-up climbs, then +4 % between the second and the last quarter
        v = [50, 80, 100, 100, 100, 100, 102, 102, 104, 104, 104, 104]
        got = soakjudge.flatness(v)
        self.assertEqual(got["state"], "flat")
        self.assertEqual((got["q2_mean"], got["q4_mean"]), (100.0, 104.0))
        self.assertAlmostEqual(got["change"], 0.04)

    def test_growth_past_tolerance(self):
        v = [100 + 2 * i for i in range(16)]  # a steady leak
        got = soakjudge.flatness(v)
        self.assertEqual(got["state"], "not-flat")
        self.assertIn("+", got["detail"])

    def test_shrink_past_tolerance_is_not_flat_either(self):
        self.assertEqual(soakjudge.flatness([100] * 4 + [100] * 2 + [90] * 2)["state"],
                         "not-flat")

    def test_warm_up_is_not_judged(self):
        # A big first quarter (and the n % 4 rest, here 3) does not count.
        v = [10, 500, 900, 20, 20, 100, 100, 100, 100, 100, 100, 101, 101, 101, 101]
        self.assertEqual(soakjudge.flatness(v)["state"], "flat")

    def test_too_few_samples(self):
        got = soakjudge.flatness([1] * (soakjudge.MIN_SAMPLES - 1))
        self.assertEqual(got["state"], "not-judged")
        self.assertIn(f"need {soakjudge.MIN_SAMPLES}", got["detail"])

    def test_zero_series(self):
        self.assertEqual(soakjudge.flatness([0] * 8)["state"], "flat")
        self.assertEqual(soakjudge.flatness([0] * 6 + [5, 5])["state"], "not-flat")

    def test_verdict_over_series(self):
        flat = {"state": "flat"}
        self.assertEqual(soakjudge.verdict({"a": flat, "b": flat}), "flat")
        self.assertEqual(soakjudge.verdict({"a": flat, "b": {"state": "not-flat"}}), "not-flat")
        self.assertEqual(soakjudge.verdict({"a": flat, "b": {"state": "not-judged"}}),
                         "not-judged")

    def test_judge_reads_the_judged_series(self):
        samples = [{"daemon_rss_anon_kb": 1000, "guest_slab_kb": 2000 + (i > 8) * 500,
                    "guest_sunreclaim_kb": 900} for i in range(12)]
        got = soakjudge.judge(samples)
        self.assertEqual(got["daemon_rss_anon_kb"]["state"], "flat")
        self.assertEqual(got["guest_slab_kb"]["state"], "not-flat")


class Parsing(unittest.TestCase):
    def test_proc_status(self):
        self.assertEqual(soakjudge.parse_proc_status(STATUS),
                         {"daemon_vm_rss_kb": 8000, "daemon_rss_anon_kb": 3000,
                          "daemon_rss_shmem_kb": 1000, "daemon_vm_hwm_kb": 9000})
        with self.assertRaises(soakjudge.SampleError) as cm:
            soakjudge.parse_proc_status("VmRSS:\t 1 kB\n")
        self.assertIn("RssAnon", str(cm.exception))

    def test_proc_status_of_this_process(self):
        got = soakjudge.parse_proc_status(Path("/proc/self/status").read_text())
        self.assertGreater(got["daemon_vm_rss_kb"], 0)

    def test_serving_pid_follows_a_supervisor_to_its_one_same_named_child(self):
        # A real parent and child of the same name, like the sandbox's
        # supervisor and daemon; a lone process is its own serving pid.
        child_code = "import time; time.sleep(30)"
        parent = subprocess.Popen([sys.executable, "-c",
                                   "import subprocess, sys; "
                                   f"subprocess.run([sys.executable, '-c', {child_code!r}])"])
        try:
            kids_file = Path(f"/proc/{parent.pid}/task/{parent.pid}/children")
            for _ in range(200):
                kids = kids_file.read_text().split()
                if kids:
                    break
                time.sleep(0.05)
            self.assertEqual(len(kids), 1)
            self.assertEqual(soakjudge.serving_pid(parent.pid), int(kids[0]))
            self.assertEqual(soakjudge.serving_pid(int(kids[0])), int(kids[0]))
        finally:
            parent.kill()
            parent.wait()
            for k in kids:
                try:
                    os.kill(int(k), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.assertEqual(soakjudge.serving_pid(parent.pid), parent.pid, "gone: itself")

    def test_guest_sample(self):
        line = (f"  {markers.SOAK} iter=3 uptime=123.45 slab_kb=20480 sunreclaim_kb=9000 "
                "ok=6 failed=1")
        self.assertEqual(soakjudge.parse_guest_sample(line, markers.SOAK),
                         {"iter": 3, "guest_uptime_s": 123.45, "guest_slab_kb": 20480,
                          "guest_sunreclaim_kb": 9000, "cases_ok": 6, "cases_failed": 1})
        self.assertIsNone(soakjudge.parse_guest_sample("ok 1 case", markers.SOAK))
        for bad, want in ((f"{markers.SOAK} iter=1 uptime=1", "without slab_kb="),
                          (f"{markers.SOAK} iter=x uptime=1 slab_kb=1 sunreclaim_kb=1 ok=1 "
                           "failed=0", "iter='x' is not a number"),
                          (f"{markers.SOAK} iter=1 junk", "'junk' is not KEY=VALUE")):
            with self.assertRaises(soakjudge.SampleError) as cm:
                soakjudge.parse_guest_sample(bad, markers.SOAK)
            self.assertIn(want, str(cm.exception))

    def test_rounds_follow_vm_run_output(self):
        plans = soak.soak_plans(str(soak.CAMPAIGNS / "*.toml"))
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "plans").mkdir()
            r = soak.Rounds(Path(tmp), Path("/nonexistent/pinlease"), soak.schedule(plans, 4))
            r.feed(f"[   1.0s] {soak.DAEMON_PID}999999999), socket /x/vu.sock\n")
            self.assertEqual(r.pid, 999999999)
            with contextlib.redirect_stdout(io.StringIO()) as said:
                r.feed(f"  {markers.SOAK} iter=0 uptime=5.0 slab_kb=1 sunreclaim_kb=2 ok=0 "
                       "failed=0")
                r.feed(f"  {markers.SOAK} iter=1 uptime=9.0 slab_kb=1 sunreclaim_kb=2 ok=6 "
                       "failed=0")
            self.assertEqual(len(r.samples), 2)
            # The pid is gone: the sample says why it has no daemon figures.
            self.assertIn("daemon_error", r.samples[0])
            self.assertEqual(r.samples[0]["plan"], "none (before the first round)")
            # Round 1 is the first plan, seed 1; its daemon plan could not be
            # loaded (no daemon binary), which the label and a warning say.
            self.assertEqual(r.samples[1]["plan"],
                             f"{plans[0].name}/1 {r.entry(1)['module_args']} "
                             "(daemon plan NOT loaded)")
            self.assertIn(f"round 1: inject load {tmp}/plans/{plans[0].name}-1.toml failed",
                          said.getvalue())
            self.assertTrue((Path(tmp) / "plans" / f"{plans[1].name}-2.toml").is_file())


class Setup(unittest.TestCase):
    def test_plans_leave_out_aborts(self):
        plans = soak.soak_plans(str(soak.CAMPAIGNS / "*.toml"))
        names = [p.name for p in plans]
        self.assertNotIn("abort", names)
        self.assertIn("drop-mr", names)
        self.assertEqual(names, sorted(names))
        with self.assertRaises(soak.SoakError) as cm:
            soak.soak_plans(str(soak.CAMPAIGNS / "abort.toml"))
        self.assertIn("every plan has an abort rule", str(cm.exception))

    def test_schedule_is_the_campaigns_workload(self):
        plans = soak.soak_plans(str(soak.CAMPAIGNS / "*.toml"))
        rounds = soak.schedule(plans, len(plans) + 1)
        self.assertEqual([r["plan"].name for r in rounds],
                         [p.name for p in plans] + [plans[0].name])
        self.assertEqual([r["seed"] for r in rounds], list(range(1, len(plans) + 2)))
        for r in rounds:
            self.assertEqual(r["cases"], r["plan"].run.get("cases") or soak.DEFAULT_CASES)
            params, _ = soak.faultplan.pick_guest_params(r["plan"].guest, r["seed"])
            self.assertEqual(r["module_args"], soak.faultplan.module_args(params))
            self.assertNotIn(" ", r["cases"])
        self.assertTrue(any(r["module_args"] for r in rounds))
        self.assertEqual(soak.schedule([], 2, "x*")[1]["cases"], "x*")
        self.assertEqual(soak.schedule(plans, 1, "x*")[0]["cases"], "x*")

    def test_guest_script_runs_the_schedule(self):
        """The script itself, under sh with /sys, /proc and the tool swapped
        for files in a temporary directory: each round sets its module
        parameters (the others back to their defaults) and runs its cases."""
        plans = soak.soak_plans(str(soak.CAMPAIGNS / "*.toml"))
        rounds = soak.schedule(plans, 3)
        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            text = soak.guest_script(10, rounds, marker_file=t / "MARKERS")
            self.assertNotIn(markers.SOAK, text)
            self.assertIn("$PL_MARK_SOAK iter=$i", text)
            (t / "MARKERS").write_text(markers.FILE.read_text())
            params = t / "params"
            params.mkdir()
            names = {kv.split("=")[0] for r in rounds for kv in r["module_args"].split()}
            for n in names:
                (params / n).write_text("7\n")
            (t / "meminfo").write_text("Slab:  100 kB\nSUnreclaim:  40 kB\n")
            (t / "bin").mkdir()
            tool = t / "bin" / "pinlease-guest"
            # The fake suite records the cases and the parameters it ran with.
            tool.write_text("#!/bin/sh\necho \"$3 $(cd PARAMS && grep -H . * | tr '\\n' ' ')\" "
                            ">> RAN\necho 'ok 1 a'\necho 'not ok 2 b'\n")
            tool.chmod(0o755)
            # 3 rounds: the uptime passes the end only on the 4th look.
            fake = (text.replace("/sys/module/pinlease/parameters", str(params))
                    .replace("/proc/meminfo", str(t / "meminfo"))
                    .replace("/proc/sys/vm/drop_caches", str(t / "drop"))
                    .replace("/tmp/soak-", f"{t}/soak-")
                    .replace(f"sleep {soak.PLAN_LOAD_WAIT_S}", "true")
                    .replace("cut -d. -f1 /proc/uptime", "cat UP")
                    .replace("cut -d' ' -f1 /proc/uptime", "cat UP"))
            fake = fake.replace("while [", "echo 0 > UP\nwhile [").replace(
                "\tsample\ndone", "\tsample\n\techo $(( $(cat UP) + 1 )) > UP\n"
                "\t[ $i -ge 3 ] && echo 1000 > UP\ndone")
            fake = fake.replace("PARAMS &&", f"{params} &&")
            tool.write_text(tool.read_text().replace("PARAMS", str(params))
                            .replace("RAN", str(t / "ran")))
            (t / "UP").write_text("0\n")
            r = subprocess.run(["sh", "-c", fake], cwd=t, capture_output=True, text=True,
                               env={"PATH": f"{t / 'bin'}:/usr/bin:/bin"})
            self.assertEqual(r.returncode, 0, r.stderr)
            got = [soakjudge.parse_guest_sample(x, markers.SOAK) for x in r.stdout.splitlines()
                   if markers.SOAK in x]
            self.assertEqual([g["iter"] for g in got], [0, 1, 2, 3])
            self.assertEqual(got[2]["guest_slab_kb"], 100)
            self.assertEqual((got[2]["cases_ok"], got[2]["cases_failed"]), (1, 1))
            ran = (t / "ran").read_text().splitlines()
            self.assertEqual(len(ran), 3)
            for line, want in zip(ran, rounds):
                cases, *set_params = line.split()
                self.assertEqual(cases, want["cases"])
                mine = dict(kv.split("=") for kv in want["module_args"].split())
                for item in set_params:
                    path, value = item.split(":")
                    name = Path(path).name
                    self.assertEqual(value, mine.get(name, "7"), (want["plan"].name, name))

    def test_bad_options(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out"
            for argv, want in ((["--minutes", "0"], "--minutes must be positive, got 0"),
                               (["--minutes", "-3"], "--minutes must be positive, got -3"),
                               (["--minutes", "x"], "--minutes: invalid float value: 'x'"),
                               ([], "the following arguments are required: --minutes"),
                               (["--minutes", "1", "--tolerance", "0"],
                                "--tolerance must be between 0 and 100 (percent), got 0"),
                               (["--minutes", "1", "--tolerance", "100"], "got 100"),
                               (["--minutes", "1", "--cases", ""], "--cases must be one glob"),
                               (["--minutes", "1", "--cases", "a b"], "got 'a b'"),
                               (["--minutes", "1", "--reuse", tmp],
                                f"--reuse {tmp}: no pinlease there"),
                               (["--minutes", "1", "--no-faults", "--plans", "x"],
                                "not allowed with argument"),
                               (["--minutes", "1", "--plans", "/nonexistent/*.toml"],
                                "--plans '/nonexistent/*.toml' matches no file")):
                r = subprocess.run([sys.executable, str(VM_DIR / "soak"), *argv, "--out",
                                    str(out)], capture_output=True, text=True)
                self.assertEqual(r.returncode, EXIT_SETUP, argv)
                self.assertIn(want, r.stderr + r.stdout, argv)
                self.assertFalse(out.exists(), f"{argv} created {out}")


if __name__ == "__main__":
    unittest.main()
