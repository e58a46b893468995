"""Host tests of guest-driver/vm/matrix.py (no QEMU): cells, reading a
cell's results and the verdicts, the tables."""

import sys
import tempfile
import unittest
from pathlib import Path

VM_DIR = Path(__file__).resolve().parents[1]
sys.dont_write_bytecode = True
sys.path.insert(0, str(VM_DIR))
import matrix  # noqa: E402
import qemu  # noqa: E402

Q10 = matrix.QemuChoice("host", None, "10.0.2", {"vhost-user-gpio-pci"})
Q11 = matrix.QemuChoice("trixie", "/q11", "11.1.3", {"vhost-user-gpio-pci", qemu.NATIVE_DEVICE})

KTAP = """KTAP version 1
1..4
# running 1 pin_shared_writable_xfs
# pin_shared_writable_xfs: verdict xfs-shared-rw granted expected granted
ok 1 pin_shared_writable_xfs
# running 2 pin_fsdax
# pin_fsdax: verdict fsdax-shared-rw EOPNOTSUPP expected EOPNOTSUPP
ok 2 pin_fsdax
# running 3 dataloss_memfd_truncate
ok 3 dataloss_memfd_truncate # SKIP no hugepages
not ok 4 other # boom
"""


def cell_dir(ktap, release):
    d = Path(tempfile.mkdtemp())
    (d / "results.ktap").write_text(ktap)
    (d / "console.log").write_text(f"[    0.000000] Linux version {release} (gcc) #1\n")
    return d


class Cells(unittest.TestCase):
    def test_native_needs_the_device(self):
        cells = matrix.cells(["6.1"], [Q10, Q11], matrix.MODES)
        na = {c.name(): c.na for c in cells}
        self.assertIn("no vhost-user-test-device-pci", na["6.1-host-native"])
        self.assertIsNone(na["6.1-trixie-native"])
        self.assertIsNone(na["6.1-host-carrier"])

    def test_lists(self):
        self.assertEqual(matrix.parse_list("6.1, 6.12,6.1", ("6.1", "6.12"), "kernels"),
                         ["6.1", "6.12"])
        with self.assertRaises(matrix.MatrixError) as cm:
            matrix.parse_list("6.1,7.0", ("6.1", "6.12"), "kernels")
        self.assertIn("unknown 7.0", str(cm.exception))
        with self.assertRaises(matrix.MatrixError):
            matrix.parse_list(" ", None, "qemus")


class Results(unittest.TestCase):
    def test_read_and_tables(self):
        a = matrix.Cell("6.1", Q10, "carrier")
        a.exit_code = 1
        matrix.read_results(a, cell_dir(KTAP, "6.1.0-57-amd64"))
        self.assertEqual(a.counts, (2, 1, 1))
        self.assertEqual(a.release, "6.1.0-57-amd64")
        self.assertEqual(a.verdicts[0], ("xfs-shared-rw", "granted", "granted",
                                         "pin_shared_writable_xfs"))
        b = matrix.Cell("6.12", Q10, "carrier")
        b.exit_code = 0
        matrix.read_results(b, cell_dir(KTAP.replace("xfs-shared-rw granted expected granted",
                                                     "xfs-shared-rw EFAULT expected granted"),
                                         "6.12.95+deb12-amd64"))
        t = matrix.table([a, b])
        self.assertIn("| 6.1 (6.1.0-57-amd64) | FAIL 2/1/1 |", t)
        self.assertIn("| 6.12 (6.12.95+deb12-amd64) | PASS 2/1/1 |", t)
        vt = matrix.verdict_table([a, b])
        self.assertIn("| xfs-shared-rw | pin_shared_writable_xfs | granted | "
                      "EFAULT (expected granted) |", vt)
        self.assertIn("| fsdax-shared-rw | pin_fsdax | EOPNOTSUPP | EOPNOTSUPP |", vt)

    def test_cells_of_one_kernel_that_disagree_say_so(self):
        a, b = matrix.Cell("6.1", Q10, "carrier"), matrix.Cell("6.1", Q11, "native")
        a.verdicts = [("r", "granted", "granted", "c")]
        b.verdicts = [("r", "EFAULT", "granted", "c")]
        self.assertIn("EFAULT/granted (expected granted) (cells disagree)",
                      matrix.verdict_table([a, b]))

    def test_reports(self):
        out = Path(tempfile.mkdtemp())
        c = matrix.Cell("6.12", Q11, "native")
        c.exit_code, c.problem = 3, "guest kernel crash during case 2 of 2: x"
        matrix.write_reports(out, [c], 12.0)
        self.assertIn("RUN-PROBLEM", (out / "matrix.md").read_text())
        self.assertIn('"state": "RUN-PROBLEM"', (out / "matrix.json").read_text())
        self.assertIn("guest kernel crash", (out / "matrix.md").read_text())


if __name__ == "__main__":
    unittest.main()
