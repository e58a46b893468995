"""Host tests of guest-driver/vm/build.py (no builds): what --build-only
leaves for --reuse and how --reuse checks it, the static-ELF check, the
commands record."""

import shutil
import subprocess
import sys
import tempfile
import types
import unittest
from pathlib import Path

VM_DIR = Path(__file__).resolve().parents[1]
sys.dont_write_bytecode = True
sys.path.insert(0, str(VM_DIR))
import build  # noqa: E402
from exitcodes import EXIT_SETUP, Fail  # noqa: E402

K612 = types.SimpleNamespace(release="6.12.95+deb12-amd64", image=Path("/boot/vmlinuz-6.12"))
K61 = types.SimpleNamespace(release="6.1.0-57-amd64", image=Path("/boot/vmlinuz-6.1"))


class Reuse(unittest.TestCase):
    def setUp(self):
        self.dir = Path(tempfile.mkdtemp(prefix="build."))

    def test_build_only_then_reuse(self):
        daemon_bin = self.dir / "built-daemon"
        daemon_bin.write_text("daemon")
        base = self.dir / build.REUSE_BASE
        base.write_text("cpio")
        build.keep_for_reuse(self.dir, daemon_bin, base, K612)
        self.assertEqual(build.reused(self.dir, K612), (self.dir / "pinlease", base))
        self.assertEqual((self.dir / "pinlease").read_text(), "daemon", "a copy")
        with self.assertRaises(Fail) as cm:
            build.reused(self.dir, K61)
        self.assertEqual(cm.exception.code, EXIT_SETUP)
        self.assertIn(f"its pinlease.ko is for kernel {K612.release}, this run boots "
                      f"{K61.release}", str(cm.exception))

    def test_reuse_of_an_empty_dir(self):
        with self.assertRaises(Fail) as cm:
            build.reused(self.dir, K612)
        self.assertIn(f"--reuse {self.dir}: no pinlease there", str(cm.exception))
        self.assertIn(f"--build-only --out {self.dir}", str(cm.exception))


class Binaries(unittest.TestCase):
    def test_static_and_dynamic(self):
        self.assertFalse(build.elf_is_static(sys.executable))
        busybox = shutil.which("busybox")
        if busybox is None:
            self.skipTest("no busybox (busybox-static) on PATH")
        self.assertTrue(build.elf_is_static(busybox))

    def test_not_elf(self):
        f = Path(tempfile.mkdtemp(prefix="build.")) / "script"
        f.write_text("#!/bin/sh\n")
        with self.assertRaises(Fail) as cm:
            build.elf_is_static(f)
        self.assertIn(f"{f} is not a 64-bit ELF file", str(cm.exception))


class IbvBench(unittest.TestCase):
    def test_builds_warning_free_against_the_hosts_libibverbs(self):
        # The real compile, as run --bench does it (-Werror), into a temp dir.
        if not Path("/usr/include/infiniband/verbs.h").is_file() or not shutil.which("gcc"):
            self.skipTest("no libibverbs-dev or gcc (scripts/install-host-deps)")
        exe = Path(tempfile.mkdtemp(prefix="build.")) / "ibv-bench"
        cmd = build.ibv_bench_command(out=exe)
        r = subprocess.run(cmd, capture_output=True, text=True)
        self.assertEqual((r.returncode, r.stderr), (0, ""), cmd)
        self.assertFalse(build.elf_is_static(exe), "dynamic: the initramfs gets its libraries")
        r = subprocess.run([exe, "--seconds", "0"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--seconds: want a positive number, got '0'", r.stderr)


class Record(unittest.TestCase):
    def test_commands_and_times(self):
        out = Path(tempfile.mkdtemp(prefix="build."))
        steps = build.Steps(out)
        steps.record(["cargo", "build", "-p", "x y"], {"RUSTFLAGS": "-C a=b c"})
        self.assertEqual(steps.timed("nothing", lambda v: v, 5), 5)
        steps.cmdlog.close()
        self.assertEqual((out / "commands.txt").read_text(),
                         "RUSTFLAGS='-C a=b c' cargo build -p 'x y'\n")
        self.assertRegex(steps.summary(), r"^nothing \d+\.\d s$")

    def test_failed_step_is_a_setup_error(self):
        out = Path(tempfile.mkdtemp(prefix="build."))
        with self.assertRaises(Fail) as cm:
            build.Steps(out).run("broken", ["sh", "-c", "echo nope; exit 2"])
        self.assertEqual(cm.exception.code, EXIT_SETUP)
        self.assertIn("build broken failed (exit 2)", str(cm.exception))
        self.assertIn("nope", str(cm.exception))


if __name__ == "__main__":
    unittest.main()
