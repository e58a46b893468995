"""The QEMU of a run: which binary, what it can do, how the pinlease device
attaches to it, and the command line.

Attachment modes (docs/abi.md section 1):
  native   vhost-user-test-device-pci (QEMU >= 10.2) with pinlease's own
           virtio id (PL_VIRTIO_ID_NATIVE), queue count and config size;
  carrier  vhost-user-gpio-pci (any QEMU >= 10.0): virtio id 41, 2 queues,
           8 bytes of config; the module binds it only with pinlease's magic.
`--mode auto` takes native only when a probe start of this very QEMU with
the native device succeeds (QEMU 11.1 lists the device but aborts at realize
for an id it cannot name), else carrier, also probed.

Python 3 standard library only.
"""

import os
import re
import selectors
import shutil
import subprocess
import time
from pathlib import Path

import hostdeps
import markers
from daemon import launch, serve_command, wait_listening
from procs import describe_exit, stop

REPO = Path(__file__).resolve().parents[2]
ABI_HEADER = REPO / "guest-driver" / "include" / "pinlease_abi.h"
NATIVE_DEVICE = "vhost-user-test-device-pci"
CARRIER_DEVICE = "vhost-user-gpio-pci"
DEVICES = {"native": NATIVE_DEVICE, "carrier": CARRIER_DEVICE}
# A probe start: QEMU realizes the device (vhost-user handshake and
# GET_CONFIG with a throwaway daemon) and quits at the monitor's prompt.
# Measured here: 0.3 s (QEMU 10.0), 0.6 s (11.1 chrooted); the limit is for
# a loaded host.
PROBE_TIMEOUT = 30.0
KVM_PROBE_TIMEOUT = 20.0  # seconds for a KVM probe boot to reach /init

# mkfs.xfs (xfsprogs 6.x) refuses filesystems under 300 MB. The files are
# sparse; the pmem file is mapped into guest physical memory, in the device
# memory above the RAM (maxmem = RAM + DEVICE_MEM_MIB).
DISK_MIB = 512
PMEM_MIB = 512
DEVICE_MEM_MIB = 1536
GUEST_MEM_MIB = 512
# run --bench: room to pin its reg_max buffer (up to half of it, 1 GiB)
# while the guest's own memory (initramfs, page tables, hugepages) stays.
BENCH_GUEST_MEM_MIB = 2048


class QemuError(Exception):
    """This QEMU cannot run what was asked; the message says what and why."""


def abi_define(name):
    """An integer #define of guest-driver/include/pinlease_abi.h (the C
    mirror of the wire ABI, checked against src/abi.rs by tests/abi_layout.rs)."""
    m = re.search(rf"^#define\s+{name}\s+(\d+)", ABI_HEADER.read_text(), re.M)
    if not m:
        raise QemuError(f"{ABI_HEADER} has no integer #define {name}")
    return int(m.group(1))


def abi_struct_size(name):
    """The size pinlease_abi.h asserts for struct NAME (PL_ABI_CHECK_SIZE)."""
    m = re.search(rf"^PL_ABI_CHECK_SIZE\(struct {name},\s*(\d+)\)", ABI_HEADER.read_text(), re.M)
    if not m:
        raise QemuError(f"{ABI_HEADER} has no PL_ABI_CHECK_SIZE(struct {name}, ...)")
    return int(m.group(1))


class Qemu:
    """One qemu-system-x86_64 (a binary or a wrapper such as the trixie
    rootfs's): its version and the devices it lists."""

    def __init__(self, path):
        self.path = path
        v = hostdeps.qemu_version(path)
        if v is None:
            raise QemuError(f"{path} --version did not print a QEMU version")
        self.major, self.minor, self.version = v
        r = subprocess.run([str(path), "-device", "help"], capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=60)
        self.devices = set(re.findall(r'^name "([^"]+)"', r.stdout, re.M))

    def has(self, device):
        return device in self.devices

    def describe(self):
        return f"QEMU {self.version} ({self.path})"


def find(requested):
    """The QEMU to run: --qemu PATH, else qemu-system-x86_64 on PATH."""
    if requested:
        p = Path(requested)
        if not p.is_file() or not os.access(p, os.X_OK):
            raise QemuError(f"--qemu {p}: not an executable file")
        path = str(p.resolve())
    else:
        path = shutil.which("qemu-system-x86_64")
        if not path:
            raise QemuError("qemu-system-x86_64 is not on PATH (scripts/install-host-deps "
                            "installs QEMU 10 from bookworm-backports; or give --qemu PATH)")
    q = Qemu(path)
    if q.major < hostdeps.MIN_QEMU_MAJOR:
        raise QemuError(f"{q.describe()} is too old: pinlease needs QEMU >= "
                        f"{hostdeps.MIN_QEMU_MAJOR} (vhost-user-gpio-pci with config space)")
    return q


def device_args(mode, chardev="pl"):
    if mode == "native":
        return ["-device", f"{NATIVE_DEVICE},chardev={chardev},"
                f"virtio-id={abi_define('PL_VIRTIO_ID_NATIVE')},"
                f"num_vqs={abi_define('PL_NUM_QUEUES')},config_size={abi_struct_size('pl_config')}"]
    return ["-device", f"{CARRIER_DEVICE},chardev={chardev}"]


def probe_mode(q, mode, daemon_bin, workdir):
    """Starts this QEMU with the pinlease device in MODE against a throwaway
    daemon (no guest: -S) and quits at once. Returns (ok, why not)."""
    if not q.has(DEVICES[mode]):
        return False, f"{q.describe()} has no {DEVICES[mode]}"
    workdir.mkdir(parents=True, exist_ok=True)
    sock, admin = workdir / f"probe-{mode}.sock", workdir / f"probe-{mode}-admin.sock"
    for s in (sock, admin):
        s.unlink(missing_ok=True)
    log = workdir / f"probe-{mode}.log"
    with open(log, "wb") as f:
        daemon = launch(serve_command(daemon_bin, sock, admin, "warn", "--max-connections", 1), f)
        try:
            if wait_listening(daemon, (sock,), poll=0.02) != "listening":
                return False, f"the probe daemon did not listen on {sock} (see {log})"
            cmd = [q.path, "-machine", "q35", "-accel", "tcg", "-display", "none",
                   "-nodefaults", "-S", "-m", "128M",
                   "-object", "memory-backend-memfd,id=mem,size=128M,share=on",
                   "-numa", "node,memdev=mem",
                   "-chardev", f"socket,id=pl,path={sock}", *device_args(mode),
                   "-monitor", "stdio"]
            try:
                r = subprocess.run(cmd, input=b"quit\n", stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, timeout=PROBE_TIMEOUT,
                                   start_new_session=True)
            except subprocess.TimeoutExpired:
                return False, f"QEMU did not quit within {PROBE_TIMEOUT:.0f} s"
            f.write(r.stdout)
            if r.returncode != 0:
                said = [ln for ln in r.stdout.decode(errors="replace").splitlines()
                        if ln.strip() and not ln.startswith(("QEMU ", "(qemu)"))]
                return False, (f"QEMU {describe_exit(r.returncode)}"
                               + (f": {said[-1].strip()}" if said else ""))
            return True, ""
        finally:
            stop(daemon, "probe daemon")


def pick_mode(requested, q, daemon_bin, workdir, say):
    """The attachment mode a run uses; probes before choosing (see above)."""
    if requested in ("native", "carrier"):
        ok, why = probe_mode(q, requested, daemon_bin, workdir)
        if not ok:
            other = "carrier" if requested == "native" else "native"
            raise QemuError(f"--mode {requested}: {q.describe()} cannot attach the device this "
                            f"way: {why}; try --mode {other} or --mode auto")
        say(f"mode: {requested} (probe start of {DEVICES[requested]} ok)")
        return requested
    notes = []
    for mode in ("native", "carrier"):
        ok, why = probe_mode(q, mode, daemon_bin, workdir)
        if ok:
            say(f"mode: {mode} (auto: probe start of {DEVICES[mode]} ok"
                + (f"; native: {notes[0]}" if notes else "") + ")")
            return mode
        notes.append(why)
    raise QemuError(f"{q.describe()} can attach the device neither natively ({notes[0]}) nor "
                    f"as carrier ({notes[1]})")


def probe_kvm(q, k, initramfs, out):
    """A short boot with -accel kvm: True if it reaches /init in time. On our
    nested-KVM machines QEMU aborts or hangs in the decompressor instead."""
    cmd = [q.path, "-machine", "q35", "-accel", "kvm", "-cpu", "max", "-m", "256M",
           "-nographic", "-no-reboot", "-kernel", str(k.image), "-initrd", str(initramfs),
           "-append", "console=ttyS0 panic=-1 pinlease.probe=1"]
    log = out / "kvm-probe.log"
    with open(log, "wb") as f:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=f,
                             start_new_session=True)
        seen = b""
        ok = False
        deadline = time.monotonic() + KVM_PROBE_TIMEOUT
        sel = selectors.DefaultSelector()
        sel.register(p.stdout, selectors.EVENT_READ)
        try:
            while time.monotonic() < deadline:
                if sel.select(timeout=0.5):
                    chunk = os.read(p.stdout.fileno(), 65536)
                    if not chunk:
                        break
                    f.write(chunk)
                    seen = (seen + chunk)[-4096:]
                    if markers.PROBE_OK.encode() in seen:
                        ok = True
                        break
        finally:
            sel.close()
            stop(p, "KVM probe QEMU", grace=2.0)
            p.stdout.close()
    why = "" if ok else (f"QEMU exit {p.returncode}" if p.returncode not in (None, -15, -9)
                         else f"no /init within {KVM_PROBE_TIMEOUT:.0f} s")
    return ok, why, log


def command(q, k, initramfs, imgs, sock, mode, accel, out, keep, mem_mib=GUEST_MEM_MIB):
    """The QEMU command of a run, with MEM_MIB of guest RAM. mode None: no
    pinlease device (--no-device)."""
    append = "console=ttyS0 panic=-1"
    cmd = [q.path, "-machine", "q35", "-accel", accel, "-cpu", "max", "-smp", "2",
           "-m", f"{mem_mib}M,slots=2,maxmem={mem_mib + DEVICE_MEM_MIB}M",
           "-object", f"memory-backend-memfd,id=mem,size={mem_mib}M,share=on",
           "-numa", "node,memdev=mem", "-no-reboot",
           "-kernel", str(k.image), "-initrd", str(initramfs), "-append", append,
           # vda then vdb: virtio-blk names follow PCI order, fixed by addr.
           "-drive", f"file={imgs['xfs']},format=raw,if=none,id=dxfs",
           "-device", "virtio-blk-pci,drive=dxfs,serial=pinlease-xfs,addr=0x10",
           "-drive", f"file={imgs['ext4']},format=raw,if=none,id=dext4",
           "-device", "virtio-blk-pci,drive=dext4,serial=pinlease-ext4,addr=0x11",
           "-object", f"memory-backend-file,id=pmem0,share=on,mem-path={imgs['pmem']},"
           f"size={PMEM_MIB}M",
           "-device", "virtio-pmem-pci,memdev=pmem0,id=vpmem0"]
    # --no-device: no pinlease device at all (mode None, no daemon socket);
    # the other virtio devices stay, so the driver sees devices not its own.
    if mode is not None:
        cmd += ["-chardev", f"socket,id=pl,path={sock}", *device_args(mode)]
    if keep:
        # Console and monitor on this terminal (Ctrl-A c / Ctrl-A x), and a
        # copy of the console in console.log.
        cmd += ["-display", "none", "-chardev",
                f"stdio,id=con,mux=on,signal=off,logfile={out / 'console.log'}",
                "-serial", "chardev:con", "-mon", "chardev=con,mode=readline"]
    else:
        cmd += ["-nographic"]
    return cmd
