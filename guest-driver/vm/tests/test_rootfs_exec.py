"""Host tests of scripts/rootfs-exec (no root needed): which host
directories a command in the rootfs sees, and the script that mounts them."""

import importlib.machinery
import importlib.util
import sys
import tempfile
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.dont_write_bytecode = True


def load():
    path = str(REPO / "scripts" / "rootfs-exec")
    loader = importlib.machinery.SourceFileLoader("rootfs_exec", path)
    spec = importlib.util.spec_from_loader("rootfs_exec", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


rx = load()


class Binds(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(dir="/var/tmp"))
        (self.tmp / "out").mkdir()
        (self.tmp / "out" / "x.img").write_text("")

    def test_qemu_style_arguments(self):
        out = self.tmp / "out"
        binds = rx.binds_for("/var/lib/pinlease/trixie", [], "/", [
            "-drive", f"file={out}/x.img,format=raw,if=none,id=d",
            "-chardev", f"socket,id=pl,path={out}/vu.sock",  # not there yet: its directory
            "-kernel", "/var/lib/pinlease/trixie/boot/vmlinuz-7",
            "KDIR=/usr/src/linux-headers-7", "-L", "/usr/share/qemu"])
        self.assertIn(str(out), binds)
        self.assertIn("/tmp", binds)
        self.assertIn("/var/lib/pinlease/trixie/boot", binds)
        self.assertFalse([b for b in binds if b.startswith("/usr")], binds)
        self.assertNotIn("/", binds)

    def test_nested_and_system_dirs_collapse(self):
        binds = rx.binds_for("/srv/r", [str(self.tmp), str(self.tmp / "out")], "/etc",
                             ["/tmp/a/b", "/etc/passwd", "/srv"])
        self.assertEqual(binds, sorted(binds, key=lambda d: (d.count("/"), d)))
        self.assertIn(str(self.tmp), binds)
        self.assertNotIn(str(self.tmp / "out"), binds, "inside a bound directory")
        self.assertNotIn("/etc", binds)
        self.assertNotIn("/srv", binds, "holds the rootfs")

    def test_script_mounts_then_chroots_keeping_the_pid(self):
        s = rx.script("/r", ["/tmp", "/work/x y"], "/work/x y")
        self.assertIn("mount --rbind /dev /r/dev", s)
        self.assertIn("mount -t proc proc /r/proc", s)
        self.assertIn("mount --bind '/work/x y' '/r/work/x y'", s)
        self.assertTrue(s.splitlines()[-1].startswith("exec chroot /r /usr/bin/env -C '/work/x y'"))
        self.assertIn("PATH=/usr/local/sbin", s.splitlines()[-1])

    def test_bad_usage_exits_125(self):
        for argv in ([], ["/r"], ["/r", "--"], ["/r", "--bogus", "--", "true"]):
            with self.assertRaises(SystemExit) as cm:
                rx.parse(argv)
            self.assertEqual(cm.exception.code, 125, argv)


if __name__ == "__main__":
    unittest.main()
