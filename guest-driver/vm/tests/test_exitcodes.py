"""Host tests of guest-driver/vm/exitcodes.py: the one definition of the
exit codes, used by run, matrix, campaign and invariants."""

import sys
import unittest
from pathlib import Path

VM_DIR = Path(__file__).resolve().parents[1]
sys.dont_write_bytecode = True
sys.path.insert(0, str(VM_DIR))
import exitcodes  # noqa: E402
import invariants  # noqa: E402
from scripts import load as load_script  # noqa: E402


class Codes(unittest.TestCase):
    def test_values_are_the_documented_ones(self):
        self.assertEqual((exitcodes.EXIT_OK, exitcodes.EXIT_TESTS_FAILED, exitcodes.EXIT_SETUP,
                          exitcodes.EXIT_RUN), (0, 1, 2, 3))
        self.assertEqual(exitcodes.EXIT_VIOLATION, exitcodes.EXIT_TESTS_FAILED)

    def test_help_gives_each_code_its_meaning(self):
        lines = exitcodes.RUN_HELP.splitlines()
        for code in range(4):
            self.assertEqual(sum(1 for x in lines if x.startswith(f"  {code}  ")), 2, code)

    def test_fail_carries_its_code(self):
        e = exitcodes.setup_error("--exec x: no such file")
        self.assertEqual((str(e), e.code), ("--exec x: no such file", exitcodes.EXIT_SETUP))

    def test_no_other_definition(self):
        # Every user takes them from exitcodes, none defines its own.
        for mod in (invariants, load_script("run"), load_script("matrix"),
                    load_script("campaign"), load_script("soak")):
            for name in ("EXIT_OK", "EXIT_SETUP", "EXIT_RUN"):
                if hasattr(mod, name):
                    self.assertIs(getattr(mod, name), getattr(exitcodes, name), (mod, name))
        for path in ("run", "matrix", "campaign", "soak", "invariants.py"):
            text = (VM_DIR / path).read_text()
            self.assertNotRegex(text, r"(?m)^EXIT_\w+(, EXIT_\w+)* = ", path)


if __name__ == "__main__":
    unittest.main()
