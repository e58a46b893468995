"""Host tests of scripts/fuzz (nothing built or run): its arguments and how
it reads libFuzzer's output."""

import contextlib
import importlib.machinery
import importlib.util
import io
import sys
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.dont_write_bytecode = True


def load():
    path = str(REPO / "scripts" / "fuzz")
    loader = importlib.machinery.SourceFileLoader("fuzz_script", path)
    spec = importlib.util.spec_from_loader("fuzz_script", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


fz = load()

LOG = """\
INFO: Running with entropic power schedule (0xFF, 100).
#2\tINITED cov: 280 ft: 1200 corp: 10/893b exec/s: 0 rss: 26Mb
#4096\tpulse  cov: 290 ft: 1800 corp: 200/9Kb lim: 43 exec/s: 2048 rss: 30Mb
#10000000\tDONE   cov: 292 ft: 1879 corp: 233/12Kb lim: 4096 exec/s: 34602 rss: 40Mb
Done 10000000 runs in 289 second(s)
stat::number_of_executed_units: 10000000
stat::average_exec_per_sec:     34602
stat::new_units_added:          1100
stat::slowest_unit_time_sec:    0
stat::peak_rss_mb:              40
"""


class Summary(unittest.TestCase):
    def test_final_stats_and_last_status_line(self):
        self.assertEqual(fz.summarize(LOG), (10000000, 34602, 292, 1879, 233))

    def test_a_log_cut_short_reads_as_zeros_not_an_error(self):
        self.assertEqual(fz.summarize("INFO: Seed: 1\n"), (0, 0, 0, 0, 0))


class Args(unittest.TestCase):
    def refused(self, argv):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), self.assertRaises(SystemExit) as e:
            fz.parse_args(argv)
        self.assertEqual(e.exception.code, 2)
        return err.getvalue()

    def test_defaults_every_target(self):
        a = fz.parse_args([])
        self.assertEqual((a.targets, a.seconds, a.runs), (list(fz.TARGETS), 60, None))

    def test_runs_alone_is_not_bounded_by_the_default_seconds(self):
        self.assertFalse(fz.parse_args(["--runs", "5"]).seconds_given)
        self.assertTrue(fz.parse_args(["--runs", "5", "--seconds", "9"]).seconds_given)

    def test_bad_values_name_the_flag_and_value(self):
        self.assertIn("unknown target nope", self.refused(["nope"]))
        self.assertIn("--seconds: must be positive, got 0", self.refused(["--seconds", "0"]))
        self.assertIn("--runs: must be positive, got -3", self.refused(["--runs", "-3"]))
        self.assertIn("--seconds", self.refused(["--seconds", "x"]))


if __name__ == "__main__":
    unittest.main()
