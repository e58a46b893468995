import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import moduleparams  # noqa: E402


class ParseFaultParams(unittest.TestCase):
    def test_bounds_are_integers_int_max_or_defines(self):
        text = ("#define PL_X_MAX_MS\t600\n"
                'PL_FAULT_PARAM(pl_a, "a", -1, -1, INT_MAX);\n'
                'PL_FAULT_PARAM(pl_b, "b_ms", 0, 0,\n\t       PL_X_MAX_MS);\n')
        self.assertEqual(moduleparams.parse_fault_params(text),
                         {"a": (int, -1, 2**31 - 1), "b_ms": (int, 0, 600)})

    def test_refusals_name_the_parameter_and_value(self):
        with self.assertRaisesRegex(moduleparams.ModuleSourceError, "b_ms.*PL_NOPE"):
            moduleparams.parse_fault_params('PL_FAULT_PARAM(v, "b_ms", 0, 0, PL_NOPE);')
        with self.assertRaisesRegex(moduleparams.ModuleSourceError, "c has lowest 5 > highest 1"):
            moduleparams.parse_fault_params('PL_FAULT_PARAM(v, "c", 0, 5, 1);')
        with self.assertRaisesRegex(moduleparams.ModuleSourceError, "no PL_FAULT_PARAM"):
            moduleparams.parse_fault_params("int x;")


class TheRealModule(unittest.TestCase):
    """The module's source as it is: what campaign plans may set."""

    def test_params(self):
        p = moduleparams.params()
        # The documented ones (docs/faults.md section 2) are all there.
        for name in ("fault_pin_after", "fault_pin_times", "fault_lease_set",
                     "fault_release_delay_ms", "fault_drop_event", "req_timeout_ms"):
            self.assertIs(p[name][0], int, name)
            self.assertLess(p[name][1], p[name][2], name)
        self.assertEqual(p["require_lease"], (bool, None, None))
        self.assertEqual(p["fault_pin_after"][1], -1)  # -1 = off

    def test_fault_points(self):
        self.assertEqual(set(moduleparams.fault_points()),
                         {"pin_after", "lease_set", "release_delay", "drop_event"})


if __name__ == "__main__":
    unittest.main()
