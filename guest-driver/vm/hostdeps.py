"""What pinlease needs on its Debian 12 host, where it lives, and installing
it from Debian's packages (scripts/install-host-deps is the command line).

Guest kernels (--debian-kernel NAME of vm/run):

  6.1     bookworm's own LTS kernel, linux-image-6.1.0-N-amd64 + headers, on
          the host (built with bookworm's gcc-12)
  6.12    bookworm-backports, linux-image-amd64 + headers, on the host (the
          default guest kernel)
  newest  trixie-backports' linux-image-amd64 + headers (7.3.4 when this was
          written), in a trixie rootfs: its headers are built with trixie's
          gcc-14, which bookworm does not have, so pinlease.ko is built there

QEMU: 10.0 from bookworm-backports on the host (`qemu-system-x86_64` on
PATH); 11.x from trixie-backports in the same trixie rootfs, run chrooted by
a wrapper (TRIXIE_QEMU) that `--qemu` and PATH accept like any QEMU binary.

The rootfs is made with `debootstrap --variant=minbase trixie` (about 50 s
here) under STATE; commands run in it through ROOTFS_EXEC (scripts/rootfs-exec
installed beside it), which binds the directories a command names into a
private mount namespace, so nothing stays mounted on the host.

Python 3 standard library only.
"""

import fcntl
import os
import re
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Everything pinlease installs outside Debian's package database.
STATE = Path("/var/lib/pinlease")
TRIXIE = STATE / "trixie"
ROOTFS_EXEC = STATE / "bin" / "rootfs-exec"
TRIXIE_QEMU = STATE / "qemu-trixie" / "bin" / "qemu-system-x86_64"
ROOTFS_EXEC_SRC = REPO / "scripts" / "rootfs-exec"

DEBIAN_KERNELS = ("6.1", "6.12", "newest")
# What building pinlease.ko in the rootfs needs beside the headers, which
# pull only gcc-14 for the host triplet: without binutils gcc finds no `as`
# (measured on a fresh machine: "cannot execute 'as'"; the kernel's
# cc-option checks then fail too and drop -fcf-protection).
ROOTFS_BUILD_TOOLS = {"make": "make", "as": "binutils"}
DEFAULT_KERNEL = "6.12"

# Host commands the guest images and the tests need, and the package that has each.
HOST_TOOLS = (("busybox", "busybox-static"), ("mkfs.xfs", "xfsprogs"), ("xfs_io", "xfsprogs"),
              ("xz", "xz-utils"), ("cpio", "cpio"), ("mkfs.ext4", "e2fsprogs"),
              ("depmod", "kmod"), ("modinfo", "kmod"), ("make", "make"),
              ("unshare", "util-linux"), ("gcc", "gcc"), ("rdma", "iproute2"),
              # contrib/ checks: the systemd units run under
              # systemd-socket-activate and systemd-analyze verify
              # (tests/service_units.rs), the libvirt example validated
              # (vm/tests/test_contrib.py).
              ("systemd-socket-activate", "systemd"), ("systemd-analyze", "systemd"),
              ("virt-xml-validate", "libvirt-clients"), ("xmllint", "libxml2-utils"),
              # libfuzzer-sys builds libFuzzer (C++) for scripts/fuzz.
              ("g++", "g++"))
# What `run --bench` builds and copies into every initramfs for its rxe side
# (ibv-bench, guest-driver/bench/): the libibverbs headers to build it, and
# the rxe provider (a .driver file naming it, the library libibverbs loads
# from its directory), each with the package that has it.
VERBS_HEADER = Path("/usr/include/infiniband/verbs.h")
VERBS_DRIVERS = Path("/etc/libibverbs.d")
VERBS_PROVIDERS = Path("/usr/lib/x86_64-linux-gnu/libibverbs")
RXE_DRIVER_FILE = VERBS_DRIVERS / "rxe.driver"
# What `run --rdma-tests` copies into the guest (rdma_userspace.py).
RDMA_USERSPACE_FILES = ((Path("/usr/bin/ibv_rc_pingpong"), "ibverbs-utils"),
                        (Path("/usr/bin/ib_write_bw"), "perftest"),
                        (Path("/usr/share/doc/rdma-core/tests/run_tests.py"), "python3-pyverbs"))
HOST_FILES = ((VERBS_HEADER, "libibverbs-dev"), (RXE_DRIVER_FILE, "ibverbs-providers"),
              *RDMA_USERSPACE_FILES)
# QEMU 10 and its siblings at matching versions, all named from backports
# (naming them /bookworm-backports pins only them; -t would also upgrade
# systemd and friends).
HOST_QEMU = ("qemu-system-x86/bookworm-backports", "qemu-system-common/bookworm-backports",
             "qemu-system-data/bookworm-backports", "seabios/bookworm-backports")
MIN_QEMU_MAJOR = 10


class DepsError(Exception):
    """Something needed is missing and could not be installed; the message
    says what and why."""


def log(msg):
    print(f"install-host-deps: {msg}", flush=True)


def version_key(v):
    return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", v)]


def sbin_which(cmd):
    """CMD on PATH or in the sbin directories (not on a non-root PATH)."""
    return shutil.which(cmd, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def qemu_version(qemu):
    """(major, minor, text) of `QEMU --version`, or None when it does not run."""
    try:
        r = subprocess.run([str(qemu), "--version"], capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"version (\d+)\.(\d+)(\.\d+)?", r.stdout)
    if r.returncode != 0 or not m:
        return None
    return int(m.group(1)), int(m.group(2)), m.group(0).split()[1]


# ---------------------------------------------------------------- kernels


def host_kernels(series, boot=Path("/boot")):
    """Releases of installed /boot/vmlinuz-SERIES.* images, oldest first."""
    pat = re.compile(rf"^vmlinuz-({re.escape(series)}\.\S+)$")
    rels = [m.group(1) for p in boot.glob(f"vmlinuz-{series}.*")
            if (m := pat.match(p.name))]
    return sorted(rels, key=version_key)


def rootfs_kernels(root=TRIXIE):
    rels = [p.name[len("vmlinuz-"):] for p in (root / "boot").glob("vmlinuz-*")]
    return sorted(rels, key=version_key)


def kernel_complete(root, rel):
    """Image, headers and modules of release REL under ROOT (/ or a rootfs)."""
    return ((root / "boot" / f"vmlinuz-{rel}").is_file()
            and (root / "usr/src" / f"linux-headers-{rel}" / "Makefile").is_file()
            and (root / "usr/lib/modules" / rel / "modules.dep").is_file())


def newest_complete(rels, root):
    done = [r for r in rels if kernel_complete(root, r)]
    return done[-1] if done else None


def apt_versions(package):
    """Every version apt knows of PACKAGE with its Depends line."""
    r = subprocess.run(["apt-cache", "show", package], capture_output=True, text=True)
    out, version = [], None
    for line in r.stdout.splitlines():
        if line.startswith("Version: "):
            version = line.split(" ", 1)[1]
        elif line.startswith("Depends: ") and version:
            out.append((version, line.split(" ", 1)[1]))
            version = None
    return out


def debian_61_packages():
    """The newest 6.1 image bookworm (or its security suite) has, named by
    ABI: linux-image-amd64 6.1.x depends on linux-image-6.1.0-N-amd64."""
    best = None
    for version, depends in apt_versions("linux-image-amd64"):
        m = re.search(r"linux-image-(6\.1\.0-\d+-amd64)\b", depends)
        if version.startswith("6.1.") and m and (
                best is None or version_key(version) > version_key(best[0])):
            best = (version, m.group(1))
    if best is None:
        raise DepsError("apt knows no linux-image-amd64 6.1.x (bookworm's LTS kernel); "
                        "is bookworm (or bookworm-security) in apt's sources?")
    return [f"linux-image-{best[1]}", f"linux-headers-{best[1]}"]


# ---------------------------------------------------------------- apt


class Apt:
    def __init__(self):
        self.updated = False

    def add_backports(self):
        if any("bookworm-backports" in p.read_text(errors="replace")
               for p in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]
               if p.is_file()):
            return
        uris, signed = self.mirror(), "/usr/share/keyrings/debian-archive-keyring.gpg"
        src = Path("/etc/apt/sources.list.d/debian.sources")
        if src.is_file():
            m = re.search(r"^Signed-By:\s*(\S+)", src.read_text(), re.M)
            signed = m.group(1) if m else signed
        Path("/etc/apt/sources.list.d/bookworm-backports.sources").write_text(
            f"Types: deb\nURIs: {uris}\nSuites: bookworm-backports\nComponents: main\n"
            f"Signed-By: {signed}\n")
        log(f"added bookworm-backports ({uris})")
        self.updated = False

    def mirror(self):
        src = Path("/etc/apt/sources.list.d/debian.sources")
        if src.is_file():
            m = re.search(r"^URIs:\s*(\S+/debian)/?\s*$", src.read_text(), re.M)
            if m:
                return m.group(1)
        return "http://deb.debian.org/debian"

    def update(self):
        if not self.updated:
            run(["apt-get", "update", "-qq"])
            self.updated = True

    def install(self, pkgs):
        self.update()
        log(f"installing {' '.join(pkgs)}")
        run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *pkgs],
            env={"DEBIAN_FRONTEND": "noninteractive"}, quiet=True)


def run(cmd, env=None, quiet=False):
    e = dict(os.environ, **(env or {}))
    r = subprocess.run([str(c) for c in cmd], env=e, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE if quiet else None,
                       stderr=subprocess.STDOUT if quiet else None, text=True)
    if r.returncode != 0:
        tail = "\n  ".join((r.stdout or "").strip().splitlines()[-15:])
        raise DepsError(f"`{' '.join(map(str, cmd))}` failed with exit {r.returncode}"
                        + (f":\n  {tail}" if tail else ""))


# ---------------------------------------------------------------- the trixie rootfs


def rootfs_exec(root, cmd, env=None, quiet=False):
    run([ROOTFS_EXEC, root, "--", *cmd], env=env, quiet=quiet)


def install_rootfs_exec():
    """scripts/rootfs-exec beside the rootfs, refreshed when the repo's differs
    (the QEMU wrapper calls it, from any clone)."""
    src = ROOTFS_EXEC_SRC.read_bytes()
    if not ROOTFS_EXEC.is_file() or ROOTFS_EXEC.read_bytes() != src:
        ROOTFS_EXEC.parent.mkdir(parents=True, exist_ok=True)
        tmp = ROOTFS_EXEC.with_suffix(".new")
        tmp.write_bytes(src)
        tmp.chmod(0o755)
        tmp.replace(ROOTFS_EXEC)


def install_qemu_wrapper():
    text = (f"#!/bin/sh\n"
            f"# QEMU from trixie-backports in {TRIXIE}, run chrooted by {ROOTFS_EXEC}\n"
            f"# (written by pinlease's scripts/install-host-deps; use it as --qemu, or put\n"
            f"# its directory first in PATH). The QEMU inside is called by its full\n"
            f"# path: a host PATH leaking into the chroot must not find this wrapper.\n"
            f"exec {ROOTFS_EXEC} {TRIXIE} -- /usr/bin/qemu-system-x86_64 \"$@\"\n")
    if not TRIXIE_QEMU.is_file() or TRIXIE_QEMU.read_text() != text:
        TRIXIE_QEMU.parent.mkdir(parents=True, exist_ok=True)
        TRIXIE_QEMU.write_text(text)
        TRIXIE_QEMU.chmod(0o755)


class Rootfs:
    """The trixie rootfs: made on first use, trixie-backports added inside."""

    def __init__(self, apt, root=TRIXIE):
        self.apt, self.root = apt, root
        self.updated = False

    def ensure(self):
        install_rootfs_exec()
        if not (self.root / "usr/bin/apt-get").is_file():
            if not sbin_which("debootstrap"):
                self.apt.install(["debootstrap"])
            mirror = self.apt.mirror()
            log(f"debootstrap --variant=minbase trixie {self.root} {mirror} (about a minute)")
            partial = self.root.with_name(self.root.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            run([sbin_which("debootstrap") or "debootstrap", "--variant=minbase", "trixie",
                 partial, mirror], quiet=True)
            partial.rename(self.root)
        src = self.root / "etc/apt/sources.list.d/trixie-backports.sources"
        if not src.is_file():
            src.write_text(f"Types: deb\nURIs: {self.apt.mirror()}\nSuites: trixie-backports\n"
                           "Components: main\n"
                           "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")

    def install(self, pkgs):
        """Installs PKGS from trixie-backports (this rootfs is pinlease's own:
        -t upgrading its base is fine)."""
        self.ensure()
        shutil.copyfile("/etc/resolv.conf", self.root / "etc/resolv.conf")
        if not self.updated:
            rootfs_exec(self.root, ["apt-get", "update", "-qq"])
            self.updated = True
        log(f"installing {' '.join(pkgs)} from trixie-backports in {self.root}")
        rootfs_exec(self.root, ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                                "-t", "trixie-backports", *pkgs],
                    env={"DEBIAN_FRONTEND": "noninteractive"}, quiet=True)


# ---------------------------------------------------------------- what is missing


def missing_host_packages(kernels, host_qemu=True):
    pkgs = []
    if host_qemu and not (shutil.which("qemu-system-x86_64")
            and (v := qemu_version("qemu-system-x86_64")) and v[0] >= MIN_QEMU_MAJOR):
        pkgs += HOST_QEMU
    for cmd, pkg in HOST_TOOLS:
        if not sbin_which(cmd) and pkg not in pkgs:
            pkgs.append(pkg)
    for path, pkg in HOST_FILES:
        if not path.is_file() and pkg not in pkgs:
            pkgs.append(pkg)
    if rxe_provider() is None and "ibverbs-providers" not in pkgs:
        pkgs.append("ibverbs-providers")
    if "6.12" in kernels and not newest_complete(host_kernels("6.12"), Path("/")):
        rels = host_kernels("6.12")
        if rels and (Path("/boot") / f"vmlinuz-{rels[-1]}").is_file() and not (
                Path("/usr/src") / f"linux-headers-{rels[-1]}").is_dir():
            # An image installed by hand without its headers.
            pkgs.append(f"linux-headers-{rels[-1]}")
        else:
            pkgs += ["linux-image-amd64/bookworm-backports",
                     "linux-headers-amd64/bookworm-backports"]
    return pkgs


def rxe_provider(providers=VERBS_PROVIDERS):
    """The rxe provider library libibverbs loads (librxe-rdmavNN.so, NN its
    provider ABI), or None."""
    found = sorted(providers.glob("librxe-rdmav*.so"), key=lambda p: version_key(p.name))
    return found[-1] if found else None


# Stands for bookworm's newest 6.1 image in what is missing, until apt
# names it (debian_61_packages, after apt-get update).
PKG_61_UNNAMED = "linux-image-6.1.0-N-amd64"


def want_61(kernels):
    return "6.1" in kernels and not newest_complete(host_kernels("6.1"), Path("/"))


def ensure(kernels=(DEFAULT_KERNEL,), trixie_qemu=False, check_only=False, host_qemu=True):
    """Installs the tools, the kernels named, QEMU 10 on the host (host_qemu:
    unless one >= 10 is on PATH) and QEMU 11 in the rootfs (trixie_qemu).
    Returns what was installed (empty when all was there)."""
    kernels = set(kernels)
    bad = kernels - set(DEBIAN_KERNELS)
    if bad:
        raise DepsError(f"unknown kernel(s) {sorted(bad)}; known: {', '.join(DEBIAN_KERNELS)}")
    host = missing_host_packages(kernels, host_qemu)
    need_61 = want_61(kernels)
    if need_61:
        host.append(PKG_61_UNNAMED)
    rootfs_pkgs = []
    if "newest" in kernels and not (newest_complete(rootfs_kernels(), TRIXIE)
                                    and all((TRIXIE / "usr/bin" / t).is_file()
                                            for t in ROOTFS_BUILD_TOOLS)):
        rootfs_pkgs += ["linux-image-amd64", "linux-headers-amd64", *ROOTFS_BUILD_TOOLS.values()]
    if trixie_qemu and not (TRIXIE / "usr/bin/qemu-system-x86_64").is_file():
        rootfs_pkgs.append("qemu-system-x86")
    need_wrapper = trixie_qemu or "newest" in kernels
    if not host and not rootfs_pkgs and not need_wrapper:
        return []
    missing = host + [f"{p} (in {TRIXIE})" for p in rootfs_pkgs]
    if check_only:
        missing += [str(p) for p in (ROOTFS_EXEC, TRIXIE_QEMU)
                    if not p.is_file() and (need_wrapper if p == ROOTFS_EXEC else trixie_qemu)]
        if missing:
            raise DepsError(f"missing: {' '.join(missing)} (PINLEASE_SKIP_INSTALL set)")
        return []
    if os.geteuid() != 0:
        if missing:
            raise DepsError(f"must run as root to install: {' '.join(missing)}")
        return []
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / ".install.lock", "w") as lock:
        # Two runs installing at once would fight over dpkg's lock.
        fcntl.flock(lock, fcntl.LOCK_EX)
        apt = Apt()
        if host:
            apt.add_backports()
            if need_61:
                apt.update()  # first: the 6.1 ABI number moves with updates
                host.remove(PKG_61_UNNAMED)
                host += debian_61_packages()
            apt.install(host)
        if need_wrapper:
            rootfs = Rootfs(apt)
            if rootfs_pkgs:
                rootfs.install(rootfs_pkgs)
            else:
                install_rootfs_exec()
            if trixie_qemu:
                install_qemu_wrapper()
    check(kernels, trixie_qemu, host_qemu)
    return host + rootfs_pkgs


def check(kernels, trixie_qemu, host_qemu):
    """After installing: each thing asked for is there."""
    if host_qemu and (not (v := qemu_version("qemu-system-x86_64")) or v[0] < MIN_QEMU_MAJOR):
        raise DepsError(f"qemu-system-x86_64 >= {MIN_QEMU_MAJOR} still missing")
    for name, series in (("6.12", "6.12"), ("6.1", "6.1")):
        if name in kernels and not newest_complete(host_kernels(series), Path("/")):
            raise DepsError(f"no complete {series} kernel (image, headers, modules) after "
                            "installing it")
    if "newest" in kernels and not newest_complete(rootfs_kernels(), TRIXIE):
        raise DepsError(f"no complete kernel in {TRIXIE} after installing it")
    for tool in ROOTFS_BUILD_TOOLS if "newest" in kernels else ():
        if not (TRIXIE / "usr/bin" / tool).is_file():
            raise DepsError(f"{TRIXIE}/usr/bin/{tool} missing after installing "
                            f"{ROOTFS_BUILD_TOOLS[tool]}")
    if trixie_qemu and not qemu_version(TRIXIE_QEMU):
        raise DepsError(f"{TRIXIE_QEMU} does not run")
