"""The guest's initramfs and disks: a cpio archive built in memory (busybox,
xfsprogs, the kernel modules the guest environment loads, pinlease-guest,
pinlease.ko and /init), the run's settings appended as a second archive,
and fresh filesystem images.

Python 3 standard library only.
"""

import gzip
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import console
import hostdeps
import ibdriver
import markers
from hostdeps import sbin_which as sbin
from procs import fmt_cmd
from qemu import DISK_MIB, PMEM_MIB

VM_DIR = Path(__file__).resolve().parent


class ImageError(Exception):
    """An image could not be made; the message names the tool and its output."""


class Cpio:
    """A cpio "newc" archive built in memory: root-owned entries, device nodes
    included, so no root or fakeroot is needed to make the initramfs."""

    def __init__(self):
        self.entries = {}  # path -> (mode, data bytes, rdev (major, minor))

    def _parents(self, path):
        parts = path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.entries:
                self.entries[d] = (0o040755, b"", (0, 0))

    def dir(self, path, mode=0o755):
        self._parents(path)
        self.entries[path.strip("/")] = (0o040000 | mode, b"", (0, 0))

    def file(self, path, data, mode=0o644):
        self._parents(path)
        self.entries[path.strip("/")] = (0o100000 | mode, data, (0, 0))

    def copy(self, path, src, mode=None):
        src = Path(src)
        st = src.stat()
        self.file(path, src.read_bytes(), mode if mode is not None else (st.st_mode & 0o777))

    def symlink(self, path, target):
        self._parents(path)
        self.entries[path.strip("/")] = (0o120777, target.encode(), (0, 0))

    def chardev(self, path, major, minor, mode=0o600):
        self._parents(path)
        self.entries[path.strip("/")] = (0o020000 | mode, b"", (major, minor))

    def has(self, path):
        return path.strip("/") in self.entries

    def bytes(self):
        out = bytearray()

        def pad4():
            out.extend(b"\0" * (-len(out) % 4))

        def entry(ino, name, mode, data, rdev):
            nameb = name.encode() + b"\0"
            fields = (ino, mode, 0, 0, 2 if mode & 0o040000 else 1, 0, len(data),
                      0, 0, rdev[0], rdev[1], len(nameb), 0)
            out.extend(b"070701" + b"".join(b"%08X" % v for v in fields))
            out.extend(nameb)
            pad4()
            out.extend(data)
            pad4()

        # Sorted: a directory precedes what it contains.
        for ino, name in enumerate(sorted(self.entries), start=1):
            mode, data, rdev = self.entries[name]
            entry(ino, name, mode, data, rdev)
        entry(0, "TRAILER!!!", 0, b"", (0, 0))
        return bytes(out)


def shared_libs(binary):
    """The absolute paths of the libraries and loader a dynamic binary needs."""
    r = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
    if r.returncode != 0:
        raise ImageError(f"ldd {binary} failed: {r.stderr.strip()}")
    libs = []
    for line in r.stdout.splitlines():
        m = re.search(r"(/\S+) \(0x", line)
        if m:
            libs.append(m.group(1))
    return libs


def copy_dynamic(c, path, src):
    """A dynamic binary or library at PATH with the libraries and loader it
    needs, each at its host path (the guest's loader finds them there)."""
    c.copy(path, src, 0o755)
    for lib in shared_libs(src):
        if not c.has(lib):
            c.copy(lib, os.path.realpath(lib), 0o755)


def add_rxe_userspace(c, ibv_bench):
    """What the rxe side of `run --bench` runs: ibv-bench, libibverbs with
    the rxe provider (found through /etc/libibverbs.d/rxe.driver, loaded from
    the providers directory), and iproute2's `rdma` for `rdma link add`."""
    provider = hostdeps.rxe_provider()
    rdma = sbin("rdma")
    for what, path in (("the rxe provider (ibverbs-providers)", provider),
                       ("rdma (iproute2)", rdma),
                       ("rxe.driver (ibverbs-providers)", hostdeps.RXE_DRIVER_FILE)):
        if path is None or not Path(path).is_file():
            raise ImageError(f"{what} not found on the host (scripts/install-host-deps)")
    copy_dynamic(c, "bin/ibv-bench", ibv_bench)
    copy_dynamic(c, "usr/bin/rdma", rdma)
    copy_dynamic(c, str(provider), provider)
    c.copy(str(hostdeps.RXE_DRIVER_FILE), hostdeps.RXE_DRIVER_FILE, 0o644)


def build_base(out, k, mod_files, ko, tool, ibv_bench, say):
    """The initramfs without the run's settings: busybox, xfsprogs, kernel
    modules, the tool, pinlease.ko, the rxe side of the bench and /init.
    Written once to OUT/initramfs-base.cpio.gz; write() appends each run's
    settings."""
    c = Cpio()
    for d in ("proc", "sys", "dev", "tmp", "root", "mnt", "run", "etc", "lib/pinlease"):
        c.dir(d)
    c.dir("tmp", 0o1777)
    # The kernel opens /dev/console for init's stdio before /init can mount
    # devtmpfs: without this node /init runs with no output at all.
    c.chardev("dev/console", 5, 1)

    busybox = shutil.which("busybox")
    c.copy("bin/busybox", busybox, 0o755)
    applets = subprocess.run([busybox, "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    for path in applets:
        if path not in ("bin/busybox", "init", "linuxrc"):
            c.symlink(path, "/bin/busybox")

    # xfs_io and mkfs.xfs (dynamic) with their libraries at the same paths.
    for tool_name in ("xfs_io", "mkfs.xfs"):
        path = sbin(tool_name)
        if not path:
            raise ImageError(f"{tool_name} not found (xfsprogs)")
        copy_dynamic(c, f"usr/sbin/{tool_name}", path)
        if c.has(f"sbin/{tool_name}"):
            del c.entries[f"sbin/{tool_name}"]

    c.copy("bin/pinlease-guest", tool, 0o755)
    add_rxe_userspace(c, ibv_bench)
    c.copy("lib/pinlease/pinlease.ko", ko, 0o644)
    ibdriver.install(c, ko, copy_dynamic, say)

    # Kernel modules: the closure over modules.dep, then depmod in a staging
    # root so the guest's busybox modprobe finds them (it reads modules.dep
    # and modules.alias; it loads .ko.xz itself: busybox has seamless xz).
    if mod_files:
        stage = Path(tempfile.mkdtemp(prefix="modroot.", dir=out))
        try:
            mroot = stage / "lib" / "modules" / k.release
            for rel in mod_files:
                dst = mroot / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                src = k.moddir / rel
                if rel.endswith(".zst") or rel.endswith(".gz"):
                    # busybox 1.35 reads neither: store them decompressed.
                    tool_cmd = ["zstd", "-dcq"] if rel.endswith(".zst") else ["gzip", "-dc"]
                    dst = dst.with_suffix("")
                    with open(dst, "wb") as f:
                        subprocess.run(tool_cmd + [str(src)], stdout=f, check=True)
                else:
                    shutil.copyfile(src, dst)
            for extra in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
                if (k.moddir / extra).is_file():
                    shutil.copyfile(k.moddir / extra, mroot / extra)
            r = subprocess.run([sbin("depmod"), "-b", str(stage), k.release],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise ImageError(f"depmod -b {stage} {k.release} failed: {r.stderr.strip()}")
            for f in sorted(mroot.rglob("*")):
                if f.is_file():
                    c.copy(str(f.relative_to(stage)), f, 0o644)
        finally:
            shutil.rmtree(stage, ignore_errors=True)

    c.copy("init", VM_DIR / "init.sh", 0o755)
    # What init.sh sources and greps with: the definitions the runner and
    # the suite read too (guest-driver/include/).
    c.copy("etc/pinlease/console_markers.sh", markers.FILE, 0o644)
    c.copy("etc/pinlease/kernel_warnings.txt", console.KERNEL_WARNINGS_FILE, 0o644)

    data = c.bytes()
    path = out / "initramfs-base.cpio.gz"
    with open(path, "wb") as f:
        f.write(gzip.compress(data, compresslevel=6, mtime=0))
    say(f"initramfs base: {path} ({len(data) >> 20} MiB cpio, {path.stat().st_size >> 20} MiB "
        f"gzipped, {len(mod_files)} kernel modules)")
    return path


def write(out, base, conf, exec_script):
    """OUT/initramfs.cpio.gz: the base, then a second (gzipped) cpio with the
    run's settings; the kernel unpacks concatenated archives in order."""
    c = Cpio()
    c.file("etc/pinlease/run.conf",
           "".join(f"{key}={shlex.quote(v)}\n" for key, v in conf.items()).encode())
    if exec_script:
        c.copy("pinlease/exec", exec_script, 0o755)
    path = out / "initramfs.cpio.gz"
    with open(path, "wb") as f:
        f.write(Path(base).read_bytes())
        f.write(gzip.compress(c.bytes(), compresslevel=6, mtime=0))
    return path


def make_images(out):
    """Fresh filesystems each run: XFS (reflink) for vda, ext4 for vdb, and an
    XFS for the virtio-pmem device (DAX: block size = page size, no reflink,
    which older kernels refuse with DAX)."""
    imgs = {}
    for name, mib, mkfs in (
        ("xfs", DISK_MIB, [sbin("mkfs.xfs"), "-q", "-f", "-m", "reflink=1"]),
        ("ext4", DISK_MIB, [sbin("mkfs.ext4"), "-q", "-F"]),
        ("pmem", PMEM_MIB, [sbin("mkfs.xfs"), "-q", "-f", "-b", "size=4096", "-m", "reflink=0"]),
    ):
        img = out / f"{name}.img"
        if img.exists():
            img.unlink()
        with open(img, "wb") as f:
            f.truncate(mib << 20)
        r = subprocess.run(mkfs + [str(img)], capture_output=True, text=True)
        if r.returncode != 0:
            first = "\n  ".join(r.stderr.strip().splitlines()[:3])
            raise ImageError(f"{fmt_cmd(mkfs + [img])} failed:\n  {first}")
        imgs[name] = img
    return imgs
