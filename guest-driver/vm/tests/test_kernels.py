"""Host tests of guest-driver/vm/kernels.py (no QEMU): releases of bzImages
and build trees, the guest's module plan, the per-kernel module build."""

import struct
import sys
import tempfile
import unittest
from pathlib import Path

VM_DIR = Path(__file__).resolve().parents[1]
sys.dont_write_bytecode = True
sys.path.insert(0, str(VM_DIR))
import hostdeps  # noqa: E402
import kernels  # noqa: E402


def fake_bzimage(path, release):
    """The part of an x86 boot header bzimage_release() reads."""
    head = bytearray(0x1000)
    head[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", head, 0x20E, 0x300)  # version string at 0x300 + 0x200
    text = f"{release} (builder@host) #1 SMP".encode()
    head[0x500:0x500 + len(text)] = text
    path.write_bytes(bytes(head))


class Releases(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp())

    def test_bzimage_release(self):
        fake_bzimage(self.tmp / "bz", "6.1.0-57-amd64")
        self.assertEqual(kernels.bzimage_release(self.tmp / "bz"), "6.1.0-57-amd64")
        (self.tmp / "junk").write_bytes(b"\0" * 4096)
        with self.assertRaises(kernels.KernelError) as cm:
            kernels.bzimage_release(self.tmp / "junk")
        self.assertIn("not an x86 bzImage", str(cm.exception))

    def test_utsrelease_wins_over_kernel_release(self):
        # Debian's 6.1 headers: kernel.release says the upstream version.
        kdir = self.tmp / "hdr"
        (kdir / "include/config").mkdir(parents=True)
        (kdir / "include/generated").mkdir(parents=True)
        (kdir / "include/config/kernel.release").write_text("6.1.192\n")
        self.assertEqual(kernels.kdir_release(kdir)[0], "6.1.192")
        (kdir / "include/generated/utsrelease.h").write_text(
            '#define UTS_RELEASE "6.1.0-57-amd64"\n')
        self.assertEqual(kernels.kdir_release(kdir)[0], "6.1.0-57-amd64")

    def test_own_kernel_refuses_a_mismatched_tree(self):
        fake_bzimage(self.tmp / "bz", "7.4.0-rc1")
        kdir = self.tmp / "tree"
        (kdir / "include/generated").mkdir(parents=True)
        (kdir / "Makefile").write_text("")
        (kdir / "include/generated/utsrelease.h").write_text('#define UTS_RELEASE "7.3.0"\n')
        with self.assertRaises(kernels.KernelError) as cm:
            kernels.own_kernel(self.tmp / "bz", kdir, None, lambda m: None)
        self.assertIn("7.4.0-rc1", str(cm.exception))
        self.assertIn("7.3.0", str(cm.exception))
        (kdir / "include/generated/utsrelease.h").write_text('#define UTS_RELEASE "7.4.0-rc1"\n')
        (kdir / ".config").write_text("CONFIG_XFS_FS=y\n# CONFIG_EXT4_FS is not set\n")
        k = kernels.own_kernel(self.tmp / "bz", kdir, None, lambda m: None)
        self.assertEqual((k.name, k.release, k.series()), ("own", "7.4.0-rc1", (7, 4)))
        self.assertEqual(k.config, {"XFS_FS": "y"})


class ModulePlan(unittest.TestCase):
    def kernel(self, name, release, config, dep, builtin=None):
        """A Kernel whose lib/modules/RELEASE holds modules.dep `dep` (and
        modules.builtin `builtin`) in a fresh directory."""
        tmp = Path(tempfile.mkdtemp())
        mods = tmp / "lib/modules" / release
        mods.mkdir(parents=True)
        (mods / "modules.dep").write_text(dep)
        if builtin is not None:
            (mods / "modules.builtin").write_text(builtin)
        return kernels.Kernel(name, tmp / "bz", release, tmp, mods, config)

    def test_builtin_loaded_and_missing(self):
        k = self.kernel("own", "7.4.0",
                        {"XFS_FS": "y", "CRYPTO_CRC32C": "y", "VIRTIO_PCI": "y"},
                        "kernel/fs/ext4/ext4.ko.xz: kernel/fs/jbd2/jbd2.ko.xz\n"
                        "kernel/fs/jbd2/jbd2.ko.xz:\n",
                        builtin="kernel/drivers/block/virtio_blk.ko\n")
        notes = []
        load, files, lost = kernels.plan_modules(k, notes.append)
        self.assertEqual(load, ["ext4"])
        self.assertEqual(files, ["kernel/fs/ext4/ext4.ko.xz", "kernel/fs/jbd2/jbd2.ko.xz"])
        self.assertEqual(lost, {"dax"}, "virtio_pmem and nd_pmem are neither built in nor there")
        self.assertTrue(any("/mnt/dax" in n and "CONFIG_VIRTIO_PMEM" in n for n in notes), notes)

    def test_virtio_pci_as_a_module_loads_first(self):
        # Debian 6.1: CONFIG_VIRTIO_PCI=m.
        k = self.kernel("6.1", "6.1.0", {},
                        "kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio.ko\n"
                        "kernel/drivers/virtio/virtio.ko:\n"
                        "kernel/fs/xfs/xfs.ko:\n")
        load, files, _ = kernels.plan_modules(k, lambda m: None)
        self.assertEqual(load[0], "virtio_pci")
        self.assertIn("kernel/drivers/virtio/virtio.ko", files)

    def test_no_virtio_pci_at_all_is_an_error(self):
        k = self.kernel("own", "7.4.0", {"XFS_FS": "y"}, "")
        with self.assertRaises(kernels.KernelError) as cm:
            kernels.plan_modules(k, lambda m: None)
        self.assertIn("CONFIG_VIRTIO_PCI", str(cm.exception))

    def test_bench_modules_closure_builtin_and_missing(self):
        k = self.kernel("own", "7.4.0", {"DUMMY": "y"},
                        "kernel/drivers/infiniband/sw/rxe/rdma_rxe.ko.xz: "
                        "kernel/drivers/infiniband/core/ib_core.ko.xz "
                        "kernel/net/ipv4/udp_tunnel.ko.xz\n"
                        "kernel/drivers/infiniband/core/ib_core.ko.xz:\n"
                        "kernel/net/ipv4/udp_tunnel.ko.xz:\n")
        load, files, missing = kernels.plan_bench_modules(k)
        self.assertEqual(load, ["rdma_rxe"], "dummy is built in")
        self.assertEqual(files, ["kernel/drivers/infiniband/core/ib_core.ko.xz",
                                 "kernel/drivers/infiniband/sw/rxe/rdma_rxe.ko.xz",
                                 "kernel/net/ipv4/udp_tunnel.ko.xz"])
        self.assertEqual(missing, ["ib_uverbs (CONFIG_INFINIBAND_USER_ACCESS)"],
                         "crc32_generic is not required")

    def test_the_debian_kernels_have_the_bench_modules(self):
        # `run --bench` on each kernel of the matrix: dummy, rdma_rxe and
        # ib_uverbs as modules (7.3's rdma_rxe no longer depends on ib_uverbs).
        tried = 0
        for name in hostdeps.DEBIAN_KERNELS:
            try:
                k = kernels.debian_kernel(name)
            except kernels.KernelError:
                continue  # not installed here (scripts/install-host-deps --all)
            tried += 1
            load, files, missing = kernels.plan_bench_modules(k)
            self.assertEqual(missing, [], name)
            self.assertEqual([m for m in load if m != "crc32_generic"],
                             ["dummy", "rdma_rxe", "ib_uverbs"], name)
            if k.series() < (6, 15):
                self.assertIn("crc32_generic", load, f"{name}: rxe's ICRC needs crypto crc32")
            self.assertTrue(any("/ib_core.ko" in f for f in files), (name, files))
        if not tried:
            self.skipTest("no Debian guest kernel installed")


class ModuleBuild(unittest.TestCase):
    def test_sync_tree_copies_changes_only(self):
        tmp = Path(tempfile.mkdtemp())
        src, dst = tmp / "src", tmp / "dst"
        src.mkdir()
        (src / "a.c").write_text("int a;\n")
        (src / "a.o").write_text("object")
        kernels.sync_tree(src, dst)
        self.assertEqual((dst / "a.c").read_text(), "int a;\n")
        self.assertFalse((dst / "a.o").exists(), "build products are not copied")
        mtime = (dst / "a.c").stat().st_mtime_ns
        kernels.sync_tree(src, dst)
        self.assertEqual((dst / "a.c").stat().st_mtime_ns, mtime, "unchanged: left alone")
        (src / "a.c").unlink()
        (dst / "stale.o").write_text("x")
        kernels.sync_tree(src, dst)
        self.assertFalse((dst / "a.c").exists(), "a source gone from SRC goes")
        self.assertTrue((dst / "stale.o").exists())

    def test_rootfs_kernel_builds_in_its_rootfs(self):
        root = Path("/var/lib/pinlease/trixie")
        k = kernels.Kernel("newest", root / "boot/vmlinuz-7.3.4+deb13-amd64",
                           "7.3.4+deb13-amd64", root / "usr/src/linux-headers-7.3.4+deb13-amd64",
                           None, {}, root=root)
        top, cmd = kernels.module_build_command(k)
        self.assertEqual(top, kernels.MODULE_BUILD / "7.3.4+deb13-amd64")
        self.assertEqual(cmd[:3], [str(hostdeps.ROOTFS_EXEC), str(root), "--"])
        self.assertEqual(cmd[-1], "KDIR=/usr/src/linux-headers-7.3.4+deb13-amd64")
        self.assertTrue((top / "module" / "Kbuild").is_file())
        self.assertTrue((top / "include" / "pinlease_abi.h").is_file())


if __name__ == "__main__":
    unittest.main()
