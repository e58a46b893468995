"""The guest kernel of a run: which one, where its image, headers and modules
are, which kernel modules the guest environment loads from it, and building
pinlease.ko for it.

A run boots either a Debian kernel by name (--debian-kernel 6.1|6.12|newest,
see hostdeps.py for where each comes from) or a kernel developer's own
(--kernel BZIMAGE --kdir BUILD_TREE [--modules LIB_MODULES_DIR]).

Python 3 standard library only.
"""

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import hostdeps

REPO = Path(__file__).resolve().parents[2]
MODULE_SRC = REPO / "guest-driver" / "module"
INCLUDE_SRC = REPO / "guest-driver" / "include"
# pinlease.ko is built in a copy per kernel release (guest-driver/module's
# Kbuild finds the ABI headers at ../include), never in the source tree:
# runs for different kernels may build side by side.
MODULE_BUILD = REPO / "target" / "guest-module"

# Kernel modules the guest environment needs, what they are for, and the
# kernel config symbol that builds each in. Soft dependencies that busybox
# modprobe does not follow (modules.softdep: xfs/ext4 need a crc32c
# implementation through the crypto API) are listed explicitly.
MODULES = [
    # name, needed for, config symbol. virtio_pci comes first: every virtio
    # device (disks, pmem, pinlease's) appears only once it binds the PCI
    # functions; Debian's 6.1 builds it as a module, 6.12 and 7.3 build it in.
    ("virtio_pci", ("device",), "VIRTIO_PCI"),
    ("crc32c_generic", ("xfs", "ext4", "dax"), "CRYPTO_CRC32C"),
    ("virtio_blk", ("xfs", "ext4"), "VIRTIO_BLK"),
    ("xfs", ("xfs", "dax"), "XFS_FS"),
    ("ext4", ("ext4",), "EXT4_FS"),
    ("virtio_pmem", ("dax",), "VIRTIO_PMEM"),
    ("nd_pmem", ("dax",), "BLK_DEV_PMEM"),
]
# What `run --bench` loads for its rxe side (init.sh's MODE=bench): a dummy
# netdev (dummy0) for rxe to sit on, soft-RoCE itself, and the verbs device
# files libibverbs opens. Their files go into every initramfs the kernel has
# them for (so --build-only's base serves --bench too); only --bench needs
# them. name, config symbol, required: rdma_rxe of 6.1 and 6.12 takes its
# ICRC from the crypto API's "crc32" when a link is added (without one
# loaded: `rxe_newlink: failed to add dummy0`, ENOENT; modules.dep does not
# say so), 7.3's from lib/crc32, and 7.3 has no crc32_generic module.
BENCH_MODULES = [
    ("dummy", "DUMMY", True),
    ("crc32_generic", "CRYPTO_CRC32", False),
    ("rdma_rxe", "RDMA_RXE", True),
    ("ib_uverbs", "INFINIBAND_USER_ACCESS", True),
]
MOUNTS = {
    "xfs": "/mnt/xfs (XFS on /dev/vda)",
    "ext4": "/mnt/ext4 (ext4 on /dev/vdb)",
    "dax": "/mnt/dax (XFS -o dax on /dev/pmem0)",
}


class KernelError(Exception):
    """A kernel that cannot be used as asked; the message names what and why."""


class Kernel:
    """One guest kernel. kdir is the build tree as the host sees it; root is
    where the module is built: None on the host, else the rootfs whose
    compiler built the kernel (kdir then lies inside it)."""

    def __init__(self, name, image, release, kdir, moddir, config, root=None):
        self.name = name  # "6.1", "6.12", "newest" or "own"
        self.image, self.release, self.kdir, self.moddir = image, release, kdir, moddir
        self.config = config  # dict CONFIG symbol -> value, may be empty
        self.root = root

    def series(self):
        """(major, minor) of the release, e.g. (6, 1) for 6.1.0-57-amd64."""
        m = re.match(r"(\d+)\.(\d+)", self.release)
        return (int(m.group(1)), int(m.group(2))) if m else None

    def describe(self):
        where = f" (in {self.root})" if self.root else ""
        return f"{self.release} ({self.name}){where}"


def read_config(path):
    cfg = {}
    if path and path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            m = re.match(r"^CONFIG_(\w+)=(.*)$", line)
            if m:
                cfg[m.group(1)] = m.group(2)
    return cfg


def bzimage_release(path):
    """The kernel release string embedded in a bzImage's setup header."""
    with open(path, "rb") as f:
        head = f.read(0x8000)
    if len(head) < 0x210 or head[0x202:0x206] != b"HdrS":
        raise KernelError(f"{path} is not an x86 bzImage (no HdrS setup header)")
    off = struct.unpack_from("<H", head, 0x20E)[0] + 0x200
    with open(path, "rb") as f:
        f.seek(off)
        s = f.read(256)
    return s.split(b"\0")[0].split(b" ")[0].decode(errors="replace")


def kdir_release(kdir):
    """The release a module built in KDIR is for (its vermagic), and the file
    it came from. UTS_RELEASE first: Debian's 6.1 headers say 6.1.192 in
    include/config/kernel.release but 6.1.0-57-amd64 in utsrelease.h, the
    release the bzImage and the module's vermagic carry."""
    uts = kdir / "include" / "generated" / "utsrelease.h"
    if uts.is_file():
        m = re.search(r'#define\s+UTS_RELEASE\s+"([^"]*)"', uts.read_text(errors="replace"))
        if m:
            return m.group(1), uts
    rel_file = kdir / "include" / "config" / "kernel.release"
    if rel_file.is_file():
        return rel_file.read_text().strip(), rel_file
    return None, uts


def debian_kernel(name):
    """A Debian kernel by name, as installed by hostdeps (newest release of
    that series whose image, headers and modules are all there)."""
    if name == "newest":
        root = hostdeps.TRIXIE
        rel = hostdeps.newest_complete(hostdeps.rootfs_kernels(root), root)
        if rel is None:
            raise KernelError(f"no complete kernel in {root} (scripts/install-host-deps "
                              "--kernels newest installs trixie-backports' linux-image-amd64)")
    else:
        root = Path("/")
        rel = hostdeps.newest_complete(hostdeps.host_kernels(name), root)
        if rel is None:
            found = hostdeps.host_kernels(name)
            raise KernelError(
                f"no complete {name} kernel: " + (f"{', '.join(found)} lack headers or modules"
                                                  if found else f"no /boot/vmlinuz-{name}.*")
                + f" (scripts/install-host-deps --kernels {name} installs it)")
    image = root / "boot" / f"vmlinuz-{rel}"
    kdir = root / "usr/src" / f"linux-headers-{rel}"
    moddir = root / "usr/lib/modules" / rel
    config = read_config(root / "boot" / f"config-{rel}")
    return Kernel(name, image, rel, kdir, moddir, config,
                  root=None if root == Path("/") else root)


def own_kernel(image, kdir, modules, say):
    """A kernel developer's own: bzImage, build tree, modules (optional)."""
    image, kdir = Path(image).resolve(), Path(kdir).resolve()
    if not image.is_file():
        raise KernelError(f"--kernel {image}: no such file")
    if not (kdir / "Makefile").is_file():
        raise KernelError(f"--kdir {kdir}: no Makefile there (not a kernel build tree or "
                          "headers dir)")
    release = bzimage_release(image)
    krel, rel_file = kdir_release(kdir)
    if krel is None:
        say(f"warning: {rel_file} missing; cannot check that --kdir matches {release}")
    elif krel != release:
        raise KernelError(f"--kernel {image} is release {release} but --kdir {kdir} builds "
                          f"modules for {krel} ({rel_file}): pinlease.ko built there "
                          "would not load")
    moddir = Path(modules) if modules else None
    if moddir is None and (kdir / "lib" / "modules" / release / "modules.dep").is_file():
        moddir = kdir / "lib" / "modules" / release
    return Kernel("own", image, release, kdir, moddir, read_config(kdir / ".config"))


def resolve(name, image, kdir, modules, say):
    """The run's kernel: --debian-kernel NAME, or --kernel/--kdir/--modules."""
    k = own_kernel(image, kdir, modules, say) if image else debian_kernel(name)
    if modules and k.name != "own":
        k.moddir = Path(modules)
    if not os.access(k.image, os.R_OK):
        raise KernelError(f"kernel image {k.image} is not readable by uid {os.geteuid()}")
    if k.moddir is not None:
        k.moddir = k.moddir.resolve()
        if not (k.moddir / "modules.dep").is_file():
            raise KernelError(f"modules dir {k.moddir} has no modules.dep "
                              "(want a lib/modules/<ver> tree; run depmod on it)")
        if k.moddir.name != k.release:
            say(f"warning: modules dir {k.moddir} is named for '{k.moddir.name}', "
                f"kernel is '{k.release}'")
    return k


def module_name(relpath):
    base = Path(relpath).name
    base = re.sub(r"\.ko(\.(xz|gz|zst))?$", "", base)
    return base.replace("-", "_")


class ModuleIndex:
    """Kernel K's modules: modules.dep (name -> file and the files it needs)
    and what is built in (modules.builtin, and =y in its config)."""

    def __init__(self, k, wanted):
        self.deps, self.builtin = {}, set()
        if k.moddir:
            for line in (k.moddir / "modules.dep").read_text().splitlines():
                if ":" not in line:
                    continue
                mod, rest = line.split(":", 1)
                self.deps[module_name(mod)] = (mod, rest.split())
            bfile = k.moddir / "modules.builtin"
            if bfile.is_file():
                self.builtin = {module_name(x) for x in bfile.read_text().split()}
        self.builtin |= {name for name, sym in wanted if k.config.get(sym) == "y"}
        self.by_path = {mod: rest for mod, rest in self.deps.values()}

    def plan(self, names):
        """(the NAMES to load from files, the files with their dependency
        closure, the NAMES neither in files nor built in)."""
        load, files, missing = [], set(), []
        for name in names:
            if name in self.deps:
                load.append(name)
                todo = [self.deps[name][0]]
                while todo:
                    mod = todo.pop()
                    if mod not in files:
                        files.add(mod)
                        todo.extend(self.by_path.get(mod, []))
            elif name not in self.builtin:
                missing.append(name)
        return load, files, missing


def plan_bench_modules(k):
    """BENCH_MODULES for kernel K: (names to load, files with their
    dependency closure, "name (CONFIG_SYM)" of the required ones K has in
    no form)."""
    index = ModuleIndex(k, [(name, sym) for name, sym, _ in BENCH_MODULES])
    load, files, missing = index.plan([name for name, _, _ in BENCH_MODULES])
    return load, sorted(files), [f"{name} (CONFIG_{sym})" for name, sym, required
                                 in BENCH_MODULES if required and name in missing]


def plan_modules(k, say):
    """Which wanted modules load from files, which are built in, which are
    missing; the files to copy (closure over modules.dep); what is lost."""
    index = ModuleIndex(k, [(name, sym) for name, _, sym in MODULES])
    load, files, missing_names = index.plan([name for name, _, _ in MODULES])
    missing = [(name, needed_for, sym) for name, needed_for, sym in MODULES
               if name in missing_names]
    lost = {}
    for name, needed_for, sym in missing:
        if "device" in needed_for:
            raise KernelError(f"{name} (CONFIG_{sym}) is neither built into {k.release} nor in "
                              f"{k.moddir or 'a modules dir (--modules)'}: the guest would see "
                              "no virtio device at all")
        if name == "crc32c_generic":
            # Another crc32c (e.g. crc32c-intel, or the library of 6.15+) may
            # serve; say so but do not drop the filesystems for it.
            say(f"note: module crc32c_generic not available (CONFIG_{sym}); "
                "XFS/ext4 mounts need some crc32c implementation")
            continue
        for fs in needed_for:
            lost.setdefault(fs, []).append(f"{name} (CONFIG_{sym})")
    if k.moddir:
        where = f"neither built into {k.release} nor in {k.moddir}"
    else:
        where = f"not built into {k.release}, and no modules dir (--modules)"
        guess = Path(f"/lib/modules/{k.release}")
        if lost and (guess / "modules.dep").is_file():
            say(f"hint: {guess} exists; if it holds this kernel's modules, add --modules {guess}")
    for fs, why in sorted(lost.items()):
        say(f"NOTE: {MOUNTS[fs]} will not be mounted: {', '.join(why)} {where}; "
            "the suite's cases that need it will SKIP")
    return load, sorted(files), set(lost)


def sync_tree(src, dst):
    """Copies SRC's files to DST, leaving files whose bytes are the same
    alone (make then rebuilds only what changed); drops files SRC no longer
    has, except build products."""
    dst.mkdir(parents=True, exist_ok=True)
    seen = set()
    for f in src.rglob("*"):
        rel = f.relative_to(src)
        if f.is_dir() or any(p.startswith(".") for p in rel.parts) or f.suffix in (
                ".o", ".ko", ".mod", ".cmd") or f.name.endswith(".mod.c"):
            continue
        seen.add(rel)
        d = dst / rel
        if not d.is_file() or d.read_bytes() != f.read_bytes():
            d.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, d)
    for d in dst.rglob("*"):
        rel = d.relative_to(dst)
        if d.is_file() and rel.suffix in (".c", ".h") and rel not in seen:
            d.unlink()


def module_build_command(k):
    """(build dir, make command) for pinlease.ko against kernel K."""
    top = MODULE_BUILD / k.release
    sync_tree(MODULE_SRC, top / "module")
    sync_tree(INCLUDE_SRC, top / "include")
    if k.root is None:
        return top, ["make", "-C", str(top / "module"), f"KDIR={k.kdir}"]
    # Headers built by the rootfs's compiler: make runs there (rootfs-exec
    # binds the build dir; KDIR is the path inside the rootfs).
    inside = "/" + str(k.kdir.relative_to(k.root))
    return top, [str(hostdeps.ROOTFS_EXEC), str(k.root), "--", "make", "-C",
                 str(top / "module"), f"KDIR={inside}"]


def modinfo_vermagic(ko):
    modinfo = hostdeps.sbin_which("modinfo")
    if not modinfo:
        return None
    r = subprocess.run([modinfo, "-F", "vermagic", str(ko)], capture_output=True, text=True)
    words = r.stdout.split()
    return words[0] if r.returncode == 0 and words else None
