"""The console markers have one definition (console_markers.sh): this checks
its format, and that no source file of the guest side writes a marker string
by hand instead of taking it from there."""

import re
import subprocess
import sys
import unittest
from pathlib import Path

VM_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(VM_DIR))

import markers  # noqa: E402

GUEST_DRIVER = VM_DIR.parent


class Format(unittest.TestCase):
    def test_every_marker_has_the_prefix_and_is_unique(self):
        values = [v for k, v in markers.ALL.items() if k != "PREFIX"]
        self.assertEqual(len(values), len(set(values)), values)
        for k, v in markers.ALL.items():
            self.assertRegex(v, r"^PINLEASE-[A-Z-]*$", k)
            self.assertTrue(v.startswith(markers.PREFIX), f"PL_MARK_{k}={v}")

    def test_parse_refuses_other_lines(self):
        self.assertEqual(markers.parse("# c\n\nPL_MARK_A=X-Y\n"), {"A": "X-Y"})
        for bad in ('PL_MARK_A="X"', "PL_MARK_A=X Y", "export PL_MARK_A=X", "OTHER=1",
                    "PL_MARK_A=X\nPL_MARK_A=Y"):
            with self.assertRaises(markers.MarkerFileError, msg=bad):
                markers.parse(bad, "t")

    def test_sh_reads_the_same_values(self):
        # init.sh sources the file: what sh sees must be what Python parsed.
        script = f". {markers.FILE}; " + "; ".join(
            f'printf "%s=%s\\n" {k} "$PL_MARK_{k}"' for k in markers.ALL)
        out = subprocess.run(["sh", "-c", script], check=True, capture_output=True,
                             text=True).stdout
        self.assertEqual(dict(line.split("=", 1) for line in out.splitlines()), markers.ALL)


# A marker written as a literal where code prints or matches it: a string
# that starts with it ("PINLEASE-X", b"PINLEASE-X", f"PINLEASE-X {n}"), a
# regex anchored on it ("^PINLEASE-X", "(?:^|\s)PINLEASE-X"), or an echo.
# Prose (comments, docstrings) may name markers.
LITERAL = re.compile(r"""(["'](?:\^|# )?|\(\?:\^\|\\s\)|echo )PINLEASE-[A-Z]""")


def sources():
    tools = GUEST_DRIVER / "tools"
    yield from sorted((tools / "src").rglob("*.rs"))
    yield from sorted((GUEST_DRIVER / "bench").glob("*.c"))
    for name in ("init.sh", "run", "matrix", "campaign"):
        yield VM_DIR / name
    yield from sorted(VM_DIR.glob("*.py"))
    yield from sorted((VM_DIR / "tests").glob("*.py"))


class NoCopies(unittest.TestCase):
    def test_no_marker_literal_outside_console_markers_sh(self):
        found = []
        for path in sources():
            if path == Path(__file__).resolve():
                continue  # this file's own fixtures above
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if LITERAL.search(line):
                    found.append(f"{path.relative_to(GUEST_DRIVER)}:{n}: {line.strip()}")
        self.assertEqual(found, [], "marker strings written by hand; use "
                         "guest-driver/include/console_markers.sh (markers.py, "
                         "$PL_MARK_*, markers::*):\n" + "\n".join(found))


if __name__ == "__main__":
    unittest.main()
