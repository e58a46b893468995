"""Host tests of guest-driver/vm/hostdeps.py (no installs): finding the
kernels a run can boot, naming bookworm's newest 6.1 image."""

import sys
import tempfile
import unittest
from pathlib import Path

VM_DIR = Path(__file__).resolve().parents[1]
sys.dont_write_bytecode = True
sys.path.insert(0, str(VM_DIR))
import hostdeps  # noqa: E402


def install(root, rel, headers=True, modules=True):
    (root / "boot").mkdir(parents=True, exist_ok=True)
    (root / "boot" / f"vmlinuz-{rel}").write_text("")
    if headers:
        (root / "usr/src" / f"linux-headers-{rel}").mkdir(parents=True)
        (root / "usr/src" / f"linux-headers-{rel}" / "Makefile").write_text("")
    if modules:
        (root / "usr/lib/modules" / rel).mkdir(parents=True)
        (root / "usr/lib/modules" / rel / "modules.dep").write_text("")


class Kernels(unittest.TestCase):
    def test_series_and_completeness(self):
        root = Path(tempfile.mkdtemp())
        install(root, "6.1.0-9-amd64")
        install(root, "6.1.0-57-amd64", headers=False)
        install(root, "6.12.95+deb12-amd64")
        self.assertEqual(hostdeps.host_kernels("6.1", root / "boot"),
                         ["6.1.0-9-amd64", "6.1.0-57-amd64"], "6.12 is not 6.1; sorted by number")
        self.assertEqual(hostdeps.newest_complete(hostdeps.host_kernels("6.1", root / "boot"),
                                                  root), "6.1.0-9-amd64",
                         "an image without headers cannot be used")
        self.assertEqual(hostdeps.rootfs_kernels(root)[-1], "6.12.95+deb12-amd64")

    def test_newest_61_package_by_abi(self):
        real = hostdeps.apt_versions
        hostdeps.apt_versions = lambda pkg: [
            ("6.12.95-1~bpo12+1", "linux-image-6.12.95+deb12-amd64 (= 6.12.95-1~bpo12+1)"),
            ("6.1.176-1", "linux-image-6.1.0-51-amd64 (= 6.1.176-1)"),
            ("6.1.192-3", "linux-image-6.1.0-57-amd64 (= 6.1.192-3)"),
            ("6.1.9-1", "linux-image-6.1.0-3-amd64 (= 6.1.9-1)")]
        try:
            self.assertEqual(hostdeps.debian_61_packages(),
                             ["linux-image-6.1.0-57-amd64", "linux-headers-6.1.0-57-amd64"])
            hostdeps.apt_versions = lambda pkg: []
            with self.assertRaises(hostdeps.DepsError) as cm:
                hostdeps.debian_61_packages()
            self.assertIn("bookworm", str(cm.exception))
        finally:
            hostdeps.apt_versions = real

    def test_unknown_kernel_is_refused_before_anything(self):
        with self.assertRaises(hostdeps.DepsError) as cm:
            hostdeps.ensure(["6.2"], check_only=True)
        self.assertIn("6.2", str(cm.exception))


class RxeProvider(unittest.TestCase):
    def test_the_newest_provider_abi(self):
        d = Path(tempfile.mkdtemp())
        self.assertIsNone(hostdeps.rxe_provider(d))
        for name in ("librxe-rdmav9.so", "librxe-rdmav34.so", "libmlx5-rdmav40.so"):
            (d / name).write_text("")
        self.assertEqual(hostdeps.rxe_provider(d).name, "librxe-rdmav34.so")


if __name__ == "__main__":
    unittest.main()
