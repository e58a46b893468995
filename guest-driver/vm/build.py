"""What a run builds before it boots: the host's dependencies, the daemon,
pinlease.ko for the guest kernel, the static guest tool and the initramfs
base; `--build-only` keeps them for `--reuse` (build.json says which
kernel they are for).

Python 3 standard library only.
"""

import json
import os
import shlex
import shutil
import struct
import subprocess
import time
from pathlib import Path

import hostdeps
import ibdriver
import initramfs
import kernels
import markers
from exitcodes import setup_error
import progress
from procs import fmt_cmd
from progress import say

REPO = Path(__file__).resolve().parents[2]
TOOL_SRC = REPO / "guest-driver" / "tools"
TOOL_TARGET = "x86_64-unknown-linux-gnu"
TOOL_BIN = REPO / "target" / TOOL_TARGET / "release" / "pinlease-guest"
DAEMON_BIN = REPO / "target" / "release" / "pinlease"
# ibv-bench, the rxe side of `run --bench`: plain C against the host's
# libibverbs, dynamically linked (the initramfs gets its libraries).
IBV_BENCH_SRC = REPO / "guest-driver" / "bench" / "ibv_bench.c"
IBV_BENCH_BIN = REPO / "target" / "guest-bench" / "ibv-bench"
# --build-only writes what it built for; --reuse checks it.
BUILD_INFO = "build.json"
# What --build-only leaves in its --out for --reuse, next to BUILD_INFO.
REUSE_DAEMON = "pinlease"
REUSE_BASE = "initramfs-base.cpio.gz"


class Steps:
    """Runs build steps with their output in DIR/build-<name>.log, timing
    each, and records every command in DIR/commands.txt. A step that runs
    longer than heartbeat_secs says so every heartbeat_secs, with the last
    line of its log (cargo's `Compiling foo`)."""

    def __init__(self, out):
        self.out = out
        self.times = []
        self.heartbeat_secs = progress.HEARTBEAT_SECS
        self.cmdlog = open(out / "commands.txt", "a")

    def record(self, cmd, env_extra=None):
        env = "".join(f"{k}={shlex.quote(v)} " for k, v in (env_extra or {}).items())
        self.cmdlog.write(env + fmt_cmd(cmd) + "\n")
        self.cmdlog.flush()

    def run(self, name, cmd, cwd=REPO, env_extra=None):
        log = self.out / f"build-{name}.log"
        say(f"build {name}: {fmt_cmd(cmd)}")
        self.record(cmd, env_extra)
        env = dict(os.environ, **(env_extra or {}))
        t = time.monotonic()
        with open(log, "w") as f, progress.Heartbeat(f"build {name}", log,
                                                     self.heartbeat_secs):
            r = subprocess.run(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
        dt = time.monotonic() - t
        if r.returncode != 0:
            tail = log.read_text(errors="replace").splitlines()[-30:]
            raise setup_error(f"build {name} failed (exit {r.returncode}); last lines of {log}:\n  "
                              + "\n  ".join(tail))
        self.times.append((name, dt))
        say(f"build {name}: done in {dt:.1f} s")

    def timed(self, name, fn, *args, heartbeat=True):
        """FN(*ARGS) timed as step NAME; with a heartbeat unless FN prints
        its own progress (apt's)."""
        t = time.monotonic()
        if heartbeat:
            with progress.Heartbeat(name, interval=self.heartbeat_secs):
                res = fn(*args)
        else:
            res = fn(*args)
        dt = time.monotonic() - t
        self.times.append((name, dt))
        say(f"{name}: done in {dt:.1f} s")
        return res

    def summary(self):
        return ", ".join(f"{n} {t:.1f} s" for n, t in self.times)


def ensure_deps(debian_kernel, own_qemu):
    """What this run needs on the host (hostdeps.py, as scripts/install-host-deps):
    installs as root, or says what is missing."""
    try:
        hostdeps.ensure([debian_kernel] if debian_kernel else [], host_qemu=not own_qemu,
                        check_only=bool(os.environ.get("PINLEASE_SKIP_INSTALL")))
    except hostdeps.DepsError as e:
        hint = "" if os.geteuid() == 0 else " (run as root so it can install them)"
        raise setup_error(f"host dependencies: {e}{hint}") from None
    for tool in ("cargo", "busybox", "mkfs.xfs", "mkfs.ext4", "depmod", "make", "xz", "gcc",
                 "rdma"):
        if not hostdeps.sbin_which(tool):
            raise setup_error(f"'{tool}' not found on PATH after install-host-deps"
                              + (" (Rust: install it with rustup)" if tool == "cargo" else ""))


def elf_is_static(path):
    """True when the ELF file has no PT_INTERP (no dynamic loader needed)."""
    with open(path, "rb") as f:
        hdr = f.read(64)
        if hdr[:4] != b"\x7fELF" or hdr[4] != 2:
            raise setup_error(f"{path} is not a 64-bit ELF file")
        phoff, = struct.unpack_from("<Q", hdr, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", hdr, 0x36)
        f.seek(phoff)
        ph = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", ph, i * phentsize)[0] != 3 for i in range(phnum))


def build_daemon(steps):
    steps.run("daemon", ["cargo", "build", "--release", "--locked", "--bin", "pinlease"])
    if not DAEMON_BIN.is_file():
        raise setup_error(f"{DAEMON_BIN} missing after the build")
    return DAEMON_BIN


def given(path, flag, what, source):
    """A file the user gave with FLAG instead of building WHAT from SOURCE."""
    path = path.resolve()
    if not path.is_file():
        raise setup_error(f"{flag} {path}: no such file")
    say(f"{what}: using {path} (not building {source})")
    return path


def build_module(steps, module_ko, k):
    """pinlease.ko for kernel K: MODULE_KO (--module) as given, else built."""
    if module_ko:
        ko = given(module_ko, "--module", "module", "guest-driver/module")
    else:
        top, cmd = kernels.module_build_command(k)
        steps.run("module", cmd)
        ko = top / "module" / "pinlease.ko"
        if not ko.is_file():
            raise setup_error(f"{ko} missing after `{fmt_cmd(cmd)}`")
    got = kernels.modinfo_vermagic(ko)
    if got is not None and got != k.release:
        raise setup_error(f"{ko} was built for kernel {got}, booting {k.release}: insmod would fail")
    return ko


def build_tool(steps, tool):
    """The static pinlease-guest: TOOL (--tool) as given, else built."""
    if tool:
        tool = given(tool, "--tool", "tool", "guest-driver/tools")
    else:
        if not (TOOL_SRC / "Cargo.toml").is_file():
            raise setup_error(f"{TOOL_SRC}/Cargo.toml not found: the guest tool is not in the "
                              "repo (yet); give a static binary with --tool BINARY")
        flags = (os.environ.get("RUSTFLAGS", "") + " -C target-feature=+crt-static").strip()
        steps.run("tool", ["cargo", "build", "--release", "-p", "pinlease-guest",
                           "--target", TOOL_TARGET], env_extra={"RUSTFLAGS": flags})
        tool = TOOL_BIN
        if not tool.is_file():
            raise setup_error(f"{tool} missing after the build")
    if not elf_is_static(tool):
        raise setup_error(f"{tool} is dynamically linked; the initramfs has no loader for it "
                          "(build with RUSTFLAGS='-C target-feature=+crt-static')")
    return tool


def ibv_bench_command(src=IBV_BENCH_SRC, out=IBV_BENCH_BIN):
    """The gcc command that builds ibv-bench; its marker comes from
    console_markers.sh, like every other program's."""
    return ["gcc", "-O2", "-Wall", "-Wextra", "-Werror",
            f'-DPL_MARK_BENCH="{markers.BENCH}"', "-o", str(out), str(src), "-libverbs"]


def build_ibv_bench(steps):
    IBV_BENCH_BIN.parent.mkdir(parents=True, exist_ok=True)
    steps.run("ibv-bench", ibv_bench_command())
    if not IBV_BENCH_BIN.is_file():
        raise setup_error(f"{IBV_BENCH_BIN} missing after the build")
    return IBV_BENCH_BIN


def build_all(steps, a, k, mod_files, out):
    """Builds what run options A ask for: (daemon binary or None, initramfs base)."""
    daemon_bin = build_daemon(steps) if (not a.no_device or a.build_only) else None
    ko = build_module(steps, a.module_ko, k)
    tool = build_tool(steps, a.tool)
    ibv_bench = build_ibv_bench(steps)
    ibdriver.build(steps)
    base = steps.timed("initramfs base", initramfs.build_base, out, k, mod_files, ko, tool,
                       ibv_bench, say)
    return daemon_bin, base


def reused(reuse, k):
    """What --reuse DIR gives a run booting kernel K: (daemon, initramfs
    base); a setup error when DIR lacks them or was built for another kernel."""
    daemon_bin, base = reuse / REUSE_DAEMON, reuse / REUSE_BASE
    for f in (daemon_bin, base, reuse / BUILD_INFO):
        if not f.is_file():
            raise setup_error(f"--reuse {reuse}: no {f.name} there (make it with "
                              f"`guest-driver/vm/run --build-only --out {reuse}`)")
    built_for = json.loads((reuse / BUILD_INFO).read_text()).get("kernel_release")
    if built_for != k.release:
        raise setup_error(f"--reuse {reuse}: its pinlease.ko is for kernel {built_for}, "
                          f"this run boots {k.release}")
    say(f"reusing the daemon and initramfs base from {reuse} (no builds)")
    return daemon_bin, base


def keep_for_reuse(out, daemon_bin, base, k):
    """--build-only: leaves the daemon and BUILD_INFO next to the initramfs
    base in OUT for --reuse OUT."""
    # A copy: a later `cargo build` in the tree must not change what the
    # runs reusing this directory start.
    shutil.copy2(daemon_bin, out / REUSE_DAEMON)
    (out / BUILD_INFO).write_text(json.dumps({"kernel_release": k.release,
                                              "kernel_image": str(k.image)}) + "\n")
    say(f"--build-only: {out}/{REUSE_DAEMON} and {base} ready for --reuse {out}")
