"""Host tests of guest-driver/vm/ktap.py (no QEMU): collecting the suite's
KTAP, counting it and judging it, on tiny fixtures."""

import sys
import unittest
from pathlib import Path

VM_DIR = Path(__file__).resolve().parents[1]
sys.dont_write_bytecode = True
sys.path.insert(0, str(VM_DIR))
import ktap  # noqa: E402
from exitcodes import EXIT_OK, EXIT_TESTS_FAILED  # noqa: E402
from ktap import Ktap  # noqa: E402

GOOD = """KTAP version 1
1..3
# running 1 a
ok 1 a
# running 2 b
ok 2 b
# running 3 c
ok 3 c
"""
FAILING = """KTAP version 1
1..2
ok 1 a
not ok 2 b # kernel log: WARNING: x
"""
SKIPPED = """KTAP version 1
1..3
ok 1 a
ok 2 b # SKIP no hugepages
ok 3 c #skip scrubber off
"""
TRUNCATED = """KTAP version 1
1..3
ok 1 a
# running 2 b
"""
BAD_PLAN = """KTAP version 1
1..2
1..2
ok 1 a
ok 3 b
"""
GARBAGE = """[    1.0] Linux version 6.12
pinlease-init: mounted /mnt/xfs
ok 1 before the version line
"""
RESULTS = Path("OUT/results.ktap")


class Collect(unittest.TestCase):
    def test_good(self):
        k = ktap.parse(GOOD)
        self.assertTrue(k.started)
        self.assertEqual(k.plan, 3)
        self.assertEqual(k.counts(), (3, 0, []))
        self.assertEqual(k.verdict(), [])
        self.assertEqual(k.tally(), "3 passed, 0 skipped, 0 failed of 3 planned")
        self.assertEqual(len(k.lines), GOOD.count("\n"))

    def test_failing(self):
        k = ktap.parse(FAILING)
        self.assertEqual(k.counts(), (1, 0, ["not ok 2 b # kernel log: WARNING: x"]))
        self.assertEqual(k.verdict(), [])

    def test_skipped(self):
        k = ktap.parse(SKIPPED)
        self.assertEqual(k.counts(), (1, 2, []))
        self.assertEqual(k.skipped(), ["2 b # SKIP no hugepages", "3 c #skip scrubber off"])

    def test_truncated(self):
        k = ktap.parse(TRUNCATED)
        self.assertEqual(k.verdict(), ["plan says 3 cases, 1 results seen"])
        self.assertEqual(k.running_case(), "case 2 of 3: b")

    def test_bad_plan(self):
        k = ktap.parse(BAD_PLAN)
        probs = k.verdict()
        self.assertIn("second plan line: '1..2'", probs)
        self.assertIn("result numbers out of sequence: [1, 3]", probs)

    def test_garbage(self):
        k = ktap.parse(GARBAGE)
        self.assertFalse(k.started)
        self.assertEqual(k.lines, [])
        self.assertEqual(k.verdict(), ["no 'KTAP version' line"])
        self.assertEqual(k.running_case(), "no case (the suite had not started)")

    def test_no_plan_and_subtests(self):
        k = ktap.parse("KTAP version 1\n    ok 1 subtest\nok 1 a\nnoise\n")
        self.assertEqual(k.verdict(), ["no plan line (1..N)"])
        self.assertEqual(k.counts(), (1, 0, []), "indented subtests fold into their parent")
        self.assertEqual(k.lines, ["KTAP version 1", "    ok 1 subtest", "ok 1 a"])
        self.assertEqual(k.tally(), "1 passed, 0 skipped, 0 failed")

    def test_where_the_suite_was(self):
        k = Ktap()
        self.assertEqual(k.running_case(), "no case (the suite had not started)")
        for line in ("KTAP version 1", "1..3", "# running 1 a", "ok 1 a"):
            k.feed(line)
        self.assertEqual(k.running_case(), "between cases (last result: case 1)")
        k.feed("# running 2 b")
        self.assertEqual(k.running_case(), "case 2 of 3: b")

    def test_running_lines_are_ktap_diagnostics(self):
        k = Ktap()
        for line in ("KTAP version 1", "1..1", "# running 1 a", "ok 1 a"):
            self.assertTrue(k.feed(line), line)
        self.assertEqual(k.verdict(), [])
        self.assertIsNone(k.running)


class JudgeSuite(unittest.TestCase):
    def test_good(self):
        code, lines = ktap.judge_suite(ktap.parse(GOOD), 0, RESULTS)
        self.assertEqual(code, EXIT_OK)
        self.assertEqual(lines, ["results: 3 passed, 0 skipped, 0 failed of 3 planned; "
                                 "suite exit 0; OUT/results.ktap"])

    def test_skips_pass(self):
        self.assertEqual(ktap.judge_suite(ktap.parse(SKIPPED), 0, RESULTS)[0], EXIT_OK)

    def test_not_ok_fails(self):
        code, lines = ktap.judge_suite(ktap.parse(FAILING), 1, RESULTS)
        self.assertEqual(code, EXIT_TESTS_FAILED)
        self.assertIn("FAILED: not ok 2 b # kernel log: WARNING: x", lines)

    def test_problems_fail(self):
        for text in (TRUNCATED, BAD_PLAN, GARBAGE):
            code, lines = ktap.judge_suite(ktap.parse(text), 0, RESULTS)
            self.assertEqual(code, EXIT_TESTS_FAILED, text)
            self.assertTrue(any(x.startswith("KTAP problem: ") for x in lines), lines)

    def test_suite_exit_alone_fails(self):
        code, lines = ktap.judge_suite(ktap.parse(GOOD), 2, RESULTS)
        self.assertEqual(code, EXIT_TESTS_FAILED)
        self.assertEqual(lines[-1], "the suite exited 2 although every result was ok")


class JudgeExec(unittest.TestCase):
    def test_script_rc_decides(self):
        self.assertEqual(ktap.judge_exec(Ktap(), 0), (EXIT_OK, ["--exec script exited 0"]))
        self.assertEqual(ktap.judge_exec(Ktap(), 3)[0], EXIT_TESTS_FAILED)

    def test_not_ok_in_its_ktap_fails(self):
        code, lines = ktap.judge_exec(ktap.parse(FAILING), 0)
        self.assertEqual(code, EXIT_TESTS_FAILED)
        self.assertEqual(lines[1], "KTAP from the script: 1 passed, 0 skipped, 1 failed")


if __name__ == "__main__":
    unittest.main()
