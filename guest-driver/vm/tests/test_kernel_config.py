"""guest-driver/vm/kernel.config, the fragment for a kernel developer's own
tree, against what the runner needs: every kernel module the guest
environment loads (kernels.MODULES) is built in by the fragment, and the
fragment is well formed (one CONFIG_X=y per line, no symbol twice)."""

import re
import sys
import unittest
from pathlib import Path

VM_DIR = Path(__file__).resolve().parents[1]
sys.dont_write_bytecode = True
sys.path.insert(0, str(VM_DIR))
import kernels  # noqa: E402

FRAGMENT = VM_DIR / "kernel.config"


def fragment():
    syms = []
    for n, line in enumerate(FRAGMENT.read_text().splitlines(), 1):
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"CONFIG_([A-Z0-9_]+)=y", line)
        if not m:
            raise AssertionError(f"{FRAGMENT}:{n}: not CONFIG_X=y: {line!r}")
        syms.append(m.group(1))
    return syms


class Fragment(unittest.TestCase):
    def test_well_formed_and_unique(self):
        syms = fragment()
        self.assertEqual(len(syms), len(set(syms)), "a symbol twice")

    def test_builds_in_every_module_the_guest_loads(self):
        syms = set(fragment())
        for name, needed_for, sym in kernels.MODULES:
            self.assertIn(sym, syms, f"{name} (for {needed_for}) is CONFIG_{sym}")

    def test_what_the_suite_relies_on(self):
        syms = set(fragment())
        for sym in ("MODULE_UNLOAD", "VIRTIO_PCI", "EXPORTFS_BLOCK_OPS", "FS_DAX", "HUGETLBFS",
                    "DEBUG_FS", "FILE_LOCKING", "DETECT_HUNG_TASK"):
            self.assertIn(sym, syms)


if __name__ == "__main__":
    unittest.main()
