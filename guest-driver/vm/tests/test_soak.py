"""vm/soak (no QEMU): the flatness judge, the sample parsing, the plans a
soak rotates, the guest script, and bad options refused before anything
is written. The real soak's figures are in docs/soak.md."""

import subprocess
import sys
import tempfile
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
        with tempfile.TemporaryDirectory() as tmp:
            r = soak.Rounds(Path(tmp), Path("/nonexistent/pinlease"), [])
            r.feed(f"[   1.0s] {soak.DAEMON_PID}999999999), socket /x/vu.sock\n")
            self.assertEqual(r.pid, 999999999)
            r.feed(f"  {markers.SOAK} iter=0 uptime=5.0 slab_kb=1 sunreclaim_kb=2 ok=0 failed=0")
            self.assertEqual(len(r.samples), 1)
            # The pid is gone: the sample says why it has no daemon figures.
            self.assertIn("daemon_error", r.samples[0])
            self.assertEqual(r.samples[0]["plan"], "none")


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

    def test_guest_script_is_valid_sh_and_takes_the_marker_from_its_file(self):
        text = soak.guest_script(300)
        self.assertNotIn(markers.SOAK, text)
        self.assertIn("$PL_MARK_SOAK iter=$i", text)
        self.assertIn("+ 300 ))", text)
        r = subprocess.run(["sh", "-n"], input=text, text=True, capture_output=True)
        self.assertEqual(r.returncode, 0, r.stderr)

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
                               (["--minutes", "1", "--cases", ""], "--cases must name cases"),
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
