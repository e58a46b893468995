"""Host tests of guest-driver/vm/qemu.py: the device's QEMU arguments come
from the ABI header, --mode auto's choice, and (with the daemon built and
QEMU installed; required when PINLEASE_REQUIRE_QEMU=1, as scripts/test sets
it) real probe starts of QEMU with the pinlease device."""

import os
import shutil
import sys
import tempfile
import unittest
from pathlib import Path

VM_DIR = Path(__file__).resolve().parents[1]
REPO = VM_DIR.parents[1]
sys.dont_write_bytecode = True
sys.path.insert(0, str(VM_DIR))
import hostdeps  # noqa: E402
import qemu  # noqa: E402

DAEMON = REPO / "target" / "release" / "pinlease"
REQUIRE = os.environ.get("PINLEASE_REQUIRE_QEMU") == "1"


class Q:
    path = "/x/qemu"


class K:
    image = "/boot/vmlinuz"


IMGS = {"xfs": "/o/xfs.img", "ext4": "/o/ext4.img", "pmem": "/o/pmem.img"}


class Arguments(unittest.TestCase):
    def test_native_device_from_the_abi_header(self):
        args = qemu.device_args("native")
        want = (f"vhost-user-test-device-pci,chardev=pl,"
                f"virtio-id={qemu.abi_define('PL_VIRTIO_ID_NATIVE')},num_vqs=2,config_size=8")
        self.assertEqual(args, ["-device", want])
        self.assertEqual(qemu.device_args("carrier"), ["-device", "vhost-user-gpio-pci,chardev=pl"])

    def test_missing_define_names_the_header(self):
        with self.assertRaises(qemu.QemuError) as cm:
            qemu.abi_define("PL_NO_SUCH_THING")
        self.assertIn("pinlease_abi.h", str(cm.exception))

    def test_command_has_shared_memory_and_the_device(self):
        cmd = qemu.command(Q, K, "/o/i.cpio.gz", IMGS, "/o/vu.sock", "carrier", "tcg",
                           Path("/o"), keep=False)
        self.assertEqual(cmd[0], "/x/qemu")
        self.assertIn("memory-backend-memfd,id=mem,size=512M,share=on", cmd)
        self.assertIn("vhost-user-gpio-pci,chardev=pl", cmd)
        nodev = qemu.command(Q, K, "/o/i.cpio.gz", IMGS, None, None, "tcg", Path("/o"), False)
        self.assertFalse([c for c in nodev if "chardev=pl" in c])

    def test_bench_memory_keeps_the_device_memory(self):
        cmd = qemu.command(Q, K, "/o/i.cpio.gz", IMGS, "/o/vu.sock", "carrier", "tcg",
                           Path("/o"), False, qemu.BENCH_GUEST_MEM_MIB)
        self.assertIn("2048M,slots=2,maxmem=3584M", cmd, "the 512 MiB pmem still fits above")
        self.assertIn("memory-backend-memfd,id=mem,size=2048M,share=on", cmd)


class AutoMode(unittest.TestCase):
    def pick(self, outcomes, requested="auto"):
        tried = []

        def fake_probe(q, mode, daemon_bin, workdir):
            tried.append(mode)
            return outcomes[mode]
        real, qemu.probe_mode = qemu.probe_mode, fake_probe
        try:
            said = []
            return qemu.pick_mode(requested, "Q", None, None, said.append), tried
        finally:
            qemu.probe_mode = real

    def test_native_when_it_starts(self):
        self.assertEqual(self.pick({"native": (True, ""), "carrier": (True, "")}),
                         ("native", ["native"]))

    def test_carrier_when_native_aborts(self):
        mode, tried = self.pick({"native": (False, "QEMU signal SIGABRT"),
                                 "carrier": (True, "")})
        self.assertEqual((mode, tried), ("carrier", ["native", "carrier"]))

    def test_nothing_works_is_an_error(self):
        class Q:
            def describe(self):
                return "QEMU 9.9"
        real = qemu.probe_mode
        qemu.probe_mode = lambda q, m, d, w: (False, f"no {m}")
        try:
            with self.assertRaises(qemu.QemuError) as cm:
                qemu.pick_mode("auto", Q(), None, None, lambda m: None)
            self.assertIn("no native", str(cm.exception))
            with self.assertRaises(qemu.QemuError) as cm:
                qemu.pick_mode("native", Q(), None, None, lambda m: None)
            self.assertIn("--mode native", str(cm.exception))
        finally:
            qemu.probe_mode = real


def have(path):
    return path and Path(path).is_file() and DAEMON.is_file()


class RealProbe(unittest.TestCase):
    """Starts the real QEMU against the real daemon (no guest)."""

    def probe(self, path, mode):
        if not have(path):
            if REQUIRE:
                self.fail(f"{path} or {DAEMON} missing (PINLEASE_REQUIRE_QEMU=1)")
            self.skipTest(f"{path} or {DAEMON} missing")
        q = qemu.find(path)
        return q, qemu.probe_mode(q, mode, DAEMON, Path(tempfile.mkdtemp(prefix="probe.")))

    def test_host_qemu_carrier_starts(self):
        q, (ok, why) = self.probe(shutil.which("qemu-system-x86_64"), "carrier")
        self.assertTrue(ok, f"{q.describe()}: {why}")

    def test_trixie_qemu_native_starts(self):
        q, (ok, why) = self.probe(hostdeps.TRIXIE_QEMU, "native")
        self.assertGreaterEqual((q.major, q.minor), (10, 2))
        self.assertTrue(ok, f"{q.describe()}: {why}")

    def test_trixie_qemu_cannot_start_an_unnamed_virtio_id(self):
        # What made --mode auto fail before it probed: QEMU 11.1 lists the
        # device but aborts for virtio id 42. A probe must see that.
        real = qemu.device_args
        qemu.device_args = lambda mode, chardev="pl": [
            "-device", f"{qemu.NATIVE_DEVICE},chardev={chardev},virtio-id=42,num_vqs=2,"
            "config_size=8"]
        try:
            q, (ok, why) = self.probe(hostdeps.TRIXIE_QEMU, "native")
        finally:
            qemu.device_args = real
        self.assertFalse(ok)
        self.assertIn("SIGABRT", why)


if __name__ == "__main__":
    unittest.main()
