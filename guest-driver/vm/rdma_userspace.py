"""`vm/run --rdma-tests [DEVICE,...]`: real RDMA programs in the guest, on
any ib device by name (rxe0, made by the guest on a dummy netdev, or one a
driver registers, e.g. pinlease_ib.ko's, which /init loads when the
initramfs has it; the script waits 10 s for each device to appear).

The guest runs the host's bookworm user space, so this module copies from
the host, as a third archive appended to the run's initramfs (no disk: the
payload is small enough for the 512 MiB guest, docs/rdma-userspace.md has
the sizes):
  - ibverbs-utils: ibv_devices, ibv_devinfo, ibv_rc_pingpong;
  - perftest: ib_write_bw, ib_read_lat, ib_send_bw;
  - python3.11 (its standard library less test, idlelib, tkinter, ...),
    pyverbs (python3-pyverbs) and rdma-core's tests, which that package
    ships partly gzipped in /usr/share/doc/rdma-core/tests: gunzipped here;
  - iproute2's `ip` (the tests run `ip -j`, which busybox's ip lacks);
  - the guest script (guest_script()), run as the --exec script.
Each program's output is framed on the console by BEGIN/END marker lines;
after the run finish() parses the console into OUT/rdma/<device>.json and
OUT/rdma/summary.md (each test passed/failed/skipped with the reason,
perftest's figures, pingpong's).

Python 3 standard library only.
"""

import gzip
import json
import os
import re
import shlex
import lzma
import shutil
import subprocess
import time
from pathlib import Path

import hostdeps
import initramfs
import kernels
import markers

# The devices --rdma-tests takes without a value.
DEFAULT_DEVICES = ("rxe0",)
# An ib device name as the kernel takes it (IB_DEVICE_NAME_MAX is 64 with
# the NUL); the guest script uses it unquoted.
DEVICE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,63}$")
# The guest makes an rxe device of this name on dummy0 (as init.sh's
# rxe_setup does for --bench); any other name must be registered by a driver.
RXE_NAME = re.compile(r"rxe\d+$")
RXE_ADDR = "192.0.2.1/24"  # TEST-NET-1 (RFC 5737), as init.sh's RXE_ADDR

# Console framing of each step's output: PL_MARK_RDMA of
# guest-driver/include/console_markers.sh (the guest script is generated
# with it, the parser reads it).
MARK = markers.ALL["RDMA"]
BEGIN_RE = re.compile(rf"^{MARK} BEGIN (\S+) (\S+)\s*$")
END_RE = re.compile(rf"^{MARK} END (\S+) (\S+) rc=(\S+) seconds=(\S+)\s*$")
INFO_RE = re.compile(rf"^{MARK} INFO (\S+) (\S+)=(.*?)\s*$")

# Host paths (hostdeps.RDMA_USERSPACE_FILES names the packages).
PYTHON = Path("/usr/bin/python3.11")
PYLIB = Path("/usr/lib/python3.11")
PYLIB_SKIP = {"test", "idlelib", "tkinter", "ensurepip", "lib2to3", "pydoc_data",
              "turtledemo", "venv", "config-3.11-x86_64-linux-gnu", "site-packages",
              "dist-packages"}
PYVERBS = Path("/usr/lib/python3/dist-packages/pyverbs")
TESTS = Path("/usr/share/doc/rdma-core/tests")
# In the guest: rdma-core's tests (gunzipped) and iproute2's ip.
GUEST_TESTS = "opt/rdma/tests"
GUEST_BIN = "opt/rdma/bin"
PROGRAMS = ("ibv_devices", "ibv_devinfo", "ibv_rc_pingpong",
            "ib_write_bw", "ib_read_lat", "ib_send_bw")
# rdma-core's test modules run (run_tests.py names): the device and verbs
# objects, RC/UD/UC QP creation and traffic, MRs, CQs, atomics, rdma_cm,
# and the other generic ones (AH, extended CQ/QP, ODP, shared and parent
# PDs, relaxed ordering, fork); the vendor ones (mlx5, efa) and the GPU
# one (cuda) are left out.
PYVERBS_TESTS = ("test_device", "test_pd", "test_mr", "test_qp", "test_cq",
                 "test_cq_events", "test_atomic", "test_rdmacm", "test_addr", "test_cqex",
                 "test_qpex", "test_odp", "test_shared_pd", "test_parent_domain",
                 "test_relaxed_ordering", "test_fork")
# perftest loopback runs: (step, program, extra arguments).
PERFTEST = (("ib_write_bw", "ib_write_bw", ("-n", "1000")),
            ("ib_read_lat", "ib_read_lat", ("-n", "1000")),
            ("ib_send_bw", "ib_send_bw", ("-n", "1000")))
# Seconds a step may take in the guest before `timeout` kills it (TCG).
STEP_TIMEOUT = {"pyverbs": 1500}
DEFAULT_STEP_TIMEOUT = 300
# The kernel modules beyond the bench's (kernels.BENCH_MODULES): rdma_cm's
# user access, for librdmacm (test_rdmacm).
GUEST_MODULES = (("rdma_ucm", "INFINIBAND_USER_ACCESS"),)
GUEST_MODULES_DIR = "opt/rdma/modules"


IB_ABI_HEADER = Path(__file__).resolve().parents[1] / "include" / "pinlease_ib_abi.h"


def pinlease_ib_device():
    """The first pinlease ib device's name, from PINLEASE_IB_NAME_PREFIX of
    guest-driver/include/pinlease_ib_abi.h (its one definition)."""
    m = re.search(r'^#define\s+PINLEASE_IB_NAME_PREFIX\s+"([^"]+)"', IB_ABI_HEADER.read_text(),
                  re.M)
    if not m:
        raise ArgError(f"{IB_ABI_HEADER} has no #define PINLEASE_IB_NAME_PREFIX \"...\"")
    return f"{m.group(1)}0"


class ArgError(Exception):
    """A bad --rdma-tests value: the message names the flag and the value."""


def parse_devices(value):
    """--rdma-tests DEVICE,...: the device names, in order."""
    names = [n for n in value.split(",")]
    if not value or any(not n for n in names):
        raise ArgError(f"--rdma-tests: empty device name in {value!r} (a comma-separated "
                       f"list of ib device names, e.g. rxe0,{pinlease_ib_device()})")
    for n in names:
        if not DEVICE_NAME.match(n):
            raise ArgError(f"--rdma-tests: bad device name {n!r} in {value!r} (1 to 63 of "
                           "A-Z a-z 0-9 _ . -)")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ArgError(f"--rdma-tests: device {dup[0]!r} named twice in {value!r}")
    rxe = [n for n in names if RXE_NAME.match(n)]
    if len(rxe) > 1:
        raise ArgError(f"--rdma-tests: {value!r} names {len(rxe)} rxe devices; the guest "
                       f"makes one (on dummy0): {rxe[0]}")
    return names


# ---------------------------------------------------------------- the guest


def guest_script(devices):
    """The busybox sh script the guest runs (as --exec): load the RDMA
    modules, make the rxe device if one is named, then each device's steps.
    Exit 0 when every step ran (the verdicts are the host's, finish())."""
    q = shlex.quote
    lines = [
        "#!/bin/sh",
        "# Generated by guest-driver/vm/rdma_userspace.py (vm/run --rdma-tests).",
        f"export PATH=/{GUEST_BIN}:$PATH PYTHONDONTWRITEBYTECODE=1",
        "say() { echo \"pinlease-init: rdma: $*\"; }",
        f"info() {{ echo \"{MARK} INFO $1 $2=$3\"; }}",
        "# step DEV NAME TIMEOUT CMD...: CMD's output framed by BEGIN/END.",
        "step() {",
        "\tlocal dev=$1 name=$2 limit=$3 t0 t1 rc; shift 3",
        f"\techo \"{MARK} BEGIN $dev $name\"",
        "\tt0=$(cut -d' ' -f1 /proc/uptime)",
        "\ttimeout -s KILL \"$limit\" \"$@\" 2>&1",
        "\trc=$?",
        "\tt1=$(cut -d' ' -f1 /proc/uptime)",
        f"\techo \"{MARK} END $dev $name rc=$rc seconds=$(echo \"$t1 $t0\" | "
        "awk '{printf \"%.2f\", $1 - $2}')\"",
        "}",
        "# wait_port PORT: until a TCP server listens on PORT (30 s at most).",
        "wait_port() {",
        "\tlocal n=0",
        "\twhile ! netstat -ltn 2>/dev/null | grep -q \":$1 \"; do",
        "\t\tn=$((n + 1)); [ $n -gt 300 ] && return 1; sleep 0.1",
        "\tdone",
        "}",
        "# pair DEV NAME LIMIT CMD...: CMD as server (background) and client",
        "# (to 127.0.0.1) on the same device: the server's output framed as",
        "# NAME-server after the client's (NAME-client).",
        "pair() {",
        "\tlocal dev=$1 name=$2 limit=$3 spid src; shift 3",
        "\ttimeout -s KILL \"$limit\" \"$@\" >/tmp/server.out 2>&1 &",
        "\tspid=$!",
        "\twait_port 18515 || say \"$name: no server listening on 18515 after 30 s\"",
        "\tstep \"$dev\" \"$name-client\" \"$limit\" \"$@\" 127.0.0.1",
        "\twait $spid; src=$?",
        f"\techo \"{MARK} BEGIN $dev $name-server\"",
        "\tcat /tmp/server.out",
        f"\techo \"{MARK} END $dev $name-server rc=$src seconds=0\"",
        "}",
        "# gid_index DEV: the RoCE v2 GID of an IPv4 address (Ethernet link",
        "# layer, as rxe), empty for an InfiniBand port (LID addressing).",
        "gid_index() {",
        "\tp=/sys/class/infiniband/$1/ports/1",
        "\t[ \"$(cat $p/link_layer 2>/dev/null)\" = Ethernet ] || return 0",
        "\tfor g in $p/gids/*; do",
        "\t\ti=${g##*/}",
        "\t\tcase \"$(cat $g 2>/dev/null)\" in",
        "\t\t0000:0000:0000:0000:0000:ffff:*)",
        "\t\t\t[ \"$(cat $p/gid_attrs/types/$i 2>/dev/null)\" = \"RoCE v2\" ] &&",
        "\t\t\t\t{ echo \"$i\"; return 0; } ;;",
        "\t\tesac",
        "\tdone",
        "}",
        "ip link set lo up",
        "# The bench's modules are in every base (kernels.BENCH_MODULES);",
        "# crc32_generic: 6.1/6.12 rxe needs it, 7.3 has none (lib/crc32).",
        "for m in dummy crc32_generic rdma_rxe ib_uverbs; do",
        "\tmodprobe \"$m\" 2>/dev/null || say \"modprobe $m failed (or not in this kernel)\"",
        "done",
        "# rdma_ucm (librdmacm) from this payload, dependencies first.",
        f"if ! grep -q '^rdma_ucm ' /proc/modules && [ -f /{GUEST_MODULES_DIR}/order ]; then",
        f"\tfor ko in $(cat /{GUEST_MODULES_DIR}/order); do",
        "\t\tgrep -q \"^${ko%.ko} \" /proc/modules ||",
        f"\t\t\tinsmod /{GUEST_MODULES_DIR}/$ko || say \"insmod $ko FAILED\"",
        "\tdone",
        "fi",
    ]
    for dev in devices:
        if RXE_NAME.match(dev):
            lines += [
                "[ -d /sys/class/net/dummy0 ] || ip link add dummy0 type dummy",
                f"ip addr add {RXE_ADDR} dev dummy0 && ip link set dummy0 up",
                f"rdma link add {dev} type rxe netdev dummy0 || "
                f"say 'rdma link add {dev} type rxe netdev dummy0 FAILED'",
            ]
    lines += ["failed=0"]
    for dev in devices:
        d = q(dev)
        lim = DEFAULT_STEP_TIMEOUT
        lines += [
            f"# ---- {dev}",
            "n=0",
            f"while [ ! -d /sys/class/infiniband/{d} ] && [ $n -lt 50 ]; do "
            "n=$((n + 1)); sleep 0.2; done",
            f"if [ ! -d /sys/class/infiniband/{d} ]; then",
            f"\tinfo {d} missing \"no /sys/class/infiniband/{dev} (devices: "
            "$(ls /sys/class/infiniband 2>/dev/null | tr '\\n' ' '))\"",
            "\tfailed=1",
            "else",
            f"\tgid=$(gid_index {d})",
            f"\tinfo {d} gid_index \"$gid\"",
            f"\tinfo {d} link_layer \"$(cat /sys/class/infiniband/{d}/ports/1/link_layer)\"",
            f"\tinfo {d} kernel \"$(uname -r)\"",
            f"\tstep {d} ibv_devices {lim} ibv_devices",
            f"\tstep {d} ibv_devinfo {lim} ibv_devinfo -v -d {d}",
            "\tg=; x=",
            "\t[ -n \"$gid\" ] && g=\"-g $gid\" && x=\"-x $gid\"",
            f"\tpair {d} rc_pingpong {lim} ibv_rc_pingpong -d {d} $g",
        ]
        for name, prog, extra in PERFTEST:
            lines.append(f"\tpair {d} {name} {lim} {prog} -d {d} $x -F "
                         + " ".join(q(e) for e in extra))
        lines += [
            f"\tcd /{GUEST_TESTS} && step {d} pyverbs {STEP_TIMEOUT['pyverbs']} "
            f"python3 run_tests.py --dev {d} -v " + " ".join(PYVERBS_TESTS),
            "\tcd /",
            "fi",
        ]
    lines += ["exit $failed", ""]
    return "\n".join(lines)


def write_guest_script(out, devices):
    """OUT/rdma-tests.sh, the run's --exec script."""
    path = out / "rdma-tests.sh"
    path.write_text(guest_script(devices))
    return path


def module_order(deps, names):
    """The module files NAMES need, each after the files it depends on.
    DEPS: modules.dep as {file: [files it needs]}; NAMES: files."""
    order, seen = [], set()

    def visit(f, path):
        if f in path:
            raise initramfs.ImageError(f"modules.dep: dependency loop through {f}")
        if f in seen:
            return
        for d in deps.get(f, []):
            visit(d, path | {f})
        seen.add(f)
        order.append(f)

    for n in names:
        visit(n, frozenset())
    return order


def read_module(path):
    """A module file's bytes, decompressed (.xz, .gz, .zst): the guest's
    busybox insmod takes a plain .ko."""
    name = str(path)
    if name.endswith(".xz"):
        return lzma.decompress(Path(path).read_bytes())
    if name.endswith(".gz"):
        return gzip.decompress(Path(path).read_bytes())
    if name.endswith(".zst"):
        r = subprocess.run(["zstd", "-dcq", name], capture_output=True)
        if r.returncode != 0:
            raise initramfs.ImageError(f"zstd -dcq {name} failed: {r.stderr.decode().strip()}")
        return r.stdout
    return Path(path).read_bytes()


def add_modules(c, k):
    """GUEST_MODULES of kernel K with what they need, decompressed into
    GUEST_MODULES_DIR, and GUEST_MODULES_DIR/order (one file a line, loading
    order) for the guest script's insmod when the base's modprobe lacks them
    (a --reuse base, or any base: the runner's module list is not ours).
    Returns the names K has neither as a file nor built in."""
    index = kernels.ModuleIndex(k, list(GUEST_MODULES))
    wanted = [name for name, _ in GUEST_MODULES]
    _, _, missing = index.plan(wanted)
    order = module_order(index.by_path, [index.deps[n][0] for n in wanted if n in index.deps])
    for rel in order:
        c.file(f"{GUEST_MODULES_DIR}/{module_base(rel)}.ko", read_module(k.moddir / rel))
    c.file(f"{GUEST_MODULES_DIR}/order",
           "".join(f"{module_base(rel)}.ko\n" for rel in order).encode())
    return missing


def module_base(rel):
    """kernel/drivers/infiniband/core/ib_core.ko.xz -> ib_core."""
    return Path(rel).name.split(".ko")[0]


def payload(k):
    """The cpio (uncompressed bytes) with the programs, Python, pyverbs and
    the tests; raises initramfs.ImageError naming what is missing."""
    missing = [f"{p} ({pkg})" for p, pkg in hostdeps.RDMA_USERSPACE_FILES if not p.exists()]
    missing += [f"{p}" for p in (PYTHON, PYLIB, PYVERBS, TESTS) if not p.exists()]
    if missing:
        raise initramfs.ImageError(f"--rdma-tests: not on the host: {', '.join(missing)} "
                                   "(scripts/install-host-deps)")
    c = initramfs.Cpio()
    if k.moddir:
        add_modules(c, k)
    for prog in PROGRAMS:
        path = shutil.which(prog, path="/usr/bin:/usr/sbin:/bin:/sbin")
        if path is None:
            raise initramfs.ImageError(f"--rdma-tests: {prog} not found on the host")
        initramfs.copy_dynamic(c, f"usr/bin/{prog}", path)
    ip = hostdeps.sbin_which("ip")
    initramfs.copy_dynamic(c, f"{GUEST_BIN}/ip", os.path.realpath(ip))
    initramfs.copy_dynamic(c, "usr/bin/python3.11", PYTHON)
    c.symlink(f"{GUEST_BIN}/python3", "/usr/bin/python3.11")
    for root, dirs, files in os.walk(PYLIB):
        rel = Path(root).relative_to(PYLIB)
        if rel == Path("."):
            dirs[:] = sorted(d for d in dirs if d not in PYLIB_SKIP)
        else:
            dirs[:] = sorted(d for d in dirs if d not in ("test", "tests", "idle_test"))
        for f in sorted(files):
            src = Path(root) / f
            dst = str(PYLIB / rel / f)
            if src.is_symlink():
                c.symlink(dst, os.readlink(src))
            elif f.endswith(".so"):
                initramfs.copy_dynamic(c, dst, src)
            else:
                c.copy(dst, src)
    for src in sorted(PYVERBS.rglob("*")):
        if src.is_file():
            if src.suffix == ".so":
                initramfs.copy_dynamic(c, str(src), src)
            else:
                c.copy(str(src), src)
    for src in sorted(TESTS.iterdir()):
        if src.name.endswith(".py.gz"):
            c.file(f"{GUEST_TESTS}/{src.name[:-3]}", gzip.decompress(src.read_bytes()))
        elif src.name.endswith(".py"):
            c.copy(f"{GUEST_TESTS}/{src.name}", src, 0o644)
    return c.bytes()


def append_payload(initramfs_path, k, say):
    """Appends the payload, gzipped, to the run's initramfs (the kernel
    unpacks concatenated archives in order). Returns (cpio bytes, gzipped
    bytes)."""
    t0 = time.monotonic()
    data = payload(k)
    gz = gzip.compress(data, compresslevel=6, mtime=0)
    with open(initramfs_path, "ab") as f:
        f.write(gz)
    say(f"--rdma-tests payload: {len(data) >> 20} MiB cpio, {len(gz) >> 20} MiB gzipped, "
        f"appended to {initramfs_path} in {time.monotonic() - t0:.1f} s")
    return len(data), len(gz)


# ---------------------------------------------------------------- the host's verdicts


class Step:
    """One framed step of the console: its output lines, rc and seconds
    (rc None: no END line, the guest stopped during it)."""

    def __init__(self, name):
        self.name, self.lines, self.rc, self.seconds = name, [], None, None


def parse_console(text):
    """{device: {"info": {key: value}, "steps": {name: Step}}} from the
    console's BEGIN/INFO/END lines; lines outside a step are ignored."""
    devs, cur = {}, None
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        if m := BEGIN_RE.match(line):
            d = devs.setdefault(m.group(1), {"info": {}, "steps": {}})
            cur = d["steps"][m.group(2)] = Step(m.group(2))
        elif m := END_RE.match(line):
            d = devs.setdefault(m.group(1), {"info": {}, "steps": {}})
            step = d["steps"].setdefault(m.group(2), Step(m.group(2)))
            step.rc = int(m.group(3)) if m.group(3).lstrip("-").isdigit() else m.group(3)
            try:
                step.seconds = float(m.group(4))
            except ValueError:
                step.seconds = None
            cur = None
        elif m := INFO_RE.match(line):
            devs.setdefault(m.group(1), {"info": {}, "steps": {}})["info"][m.group(2)] = \
                m.group(3)
        elif cur is not None:
            cur.lines.append(line)
    return devs


KMSG = re.compile(r"\[\s*\d+\.\d{6}\] .*$")
UT_START = re.compile(r"^(\w+) \(([\w.]+)\)(.*)$")
UT_RESULT = re.compile(r"(?:^|\.\.\. )(ok|FAIL|ERROR|skipped (['\"])(.*)\2|expected failure|"
                       r"unexpected success)$")
UT_DETAIL = re.compile(r"^(ERROR|FAIL): (\w+) \(([\w.]+)\)")
UT_RAN = re.compile(r"^Ran (\d+) tests? in ([\d.]+)s$")
UT_VERDICT = re.compile(r"^(OK|FAILED)(?: \((.*)\))?$")
UT_WORDS = {"ok": "passed", "FAIL": "failed", "ERROR": "error",
            "expected failure": "passed", "unexpected success": "failed"}


def test_id(name, where):
    """unittest's id: Python 3.11 prints (module.Class.method), a class
    fixture (setUpClass) prints (module.Class)."""
    return where if where.endswith("." + name) else f"{where}.{name}"


def parse_unittest(lines):
    """unittest -v output: ([{"test", "result", "reason"}], summary dict).
    result: passed, failed, error or skipped; reason: the skip reason, or
    the last line of a failure's traceback."""
    tests, pending, summary = [], None, {}
    by_id = {}
    detail, detail_lines = None, []

    def close_detail():
        if detail is not None and detail in by_id:
            body = [x for x in detail_lines if x.strip() and not x.startswith("---")]
            if body and not by_id[detail]["reason"]:
                by_id[detail]["reason"] = body[-1].strip()

    for line in lines:
        # A kernel message can land in the middle of unittest's line on
        # the console: "... skipped 'x'[   39.37] dummy0 speed is unknown".
        line = KMSG.sub("", line)
        if m := UT_DETAIL.match(line):
            close_detail()
            detail, detail_lines = test_id(m.group(2), m.group(3)), []
            continue
        if line.startswith("=" * 20):
            close_detail()
            detail = None
            continue
        if m := UT_RAN.match(line):
            close_detail()
            detail = None
            summary.update(ran=int(m.group(1)), seconds=float(m.group(2)))
            continue
        if (m := UT_VERDICT.match(line)) and "ran" in summary:
            summary["verdict"] = m.group(1)
            for part in (m.group(2) or "").split(","):
                if "=" in part:
                    k, v = part.strip().split("=", 1)
                    summary[k] = int(v)
            continue
        if detail is not None:
            detail_lines.append(line)
            continue
        if m := UT_START.match(line):
            pending = test_id(m.group(1), m.group(2))
            rest = m.group(3)
        elif pending is not None:
            rest = line
        else:
            continue
        if r := UT_RESULT.search(rest.rstrip()):
            word = r.group(1)
            if word.startswith("skipped"):
                entry = {"test": pending, "result": "skipped", "reason": r.group(3)}
            else:
                entry = {"test": pending, "result": UT_WORDS[word], "reason": ""}
            tests.append(entry)
            by_id[pending] = entry
            pending = None
    close_detail()
    return tests, summary


PERF_COLUMN = re.compile(r"#\S+|[^\s#][^\[\]#]*?\[[^\]]*\]")


def parse_perftest(lines):
    """perftest's result table: {column: float} of the first row under
    the '#bytes' header; {} when there is none. Kernel messages on the
    console between the header and the row (a 6.12 rxe run had six
    clocksource lines there) are not rows: they are dropped first."""
    lines = [kept for kept in (KMSG.sub("", line) for line in lines) if kept.strip()]
    for i, line in enumerate(lines):
        if "#bytes" not in line:
            continue
        cols = PERF_COLUMN.findall(line)
        for row in lines[i + 1:i + 4]:
            vals = row.split()
            if len(vals) == len(cols) and re.fullmatch(r"\d+", vals[0]):
                try:
                    return {c: float(v) for c, v in zip(cols, vals)}
                except ValueError:
                    return {}
    return {}


PP_BYTES = re.compile(r"^(\d+) bytes in ([\d.]+) seconds = ([\d.]+) Mbit/sec$")
PP_ITERS = re.compile(r"^(\d+) iters in ([\d.]+) seconds = ([\d.]+) usec/iter$")


def parse_pingpong(lines):
    """ibv_rc_pingpong's two figure lines: {"bytes", "Mbit/sec", "iters",
    "usec/iter"}; keys absent when a line is."""
    out = {}
    for line in lines:
        if m := PP_BYTES.match(line.strip()):
            out.update({"bytes": int(m.group(1)), "Mbit/sec": float(m.group(3))})
        elif m := PP_ITERS.match(line.strip()):
            out.update({"iters": int(m.group(1)), "usec/iter": float(m.group(3))})
    return out


DEVINFO_FIELDS = ("transport", "fw_ver", "node_guid", "vendor_id", "vendor_part_id",
                  "phys_port_cnt", "max_mr_size", "max_qp", "max_qp_wr", "max_cq",
                  "max_mr", "max_pd", "atomic_cap", "state", "max_mtu", "active_mtu",
                  "sm_lid", "port_lid", "link_layer", "gid_tbl_len")


def parse_devinfo(lines):
    """The first value of each DEVINFO_FIELDS line of `ibv_devinfo -v`."""
    out = {}
    for line in lines:
        m = re.match(r"^\s*(\w+):\s*(.+?)\s*$", line)
        if m and m.group(1) in DEVINFO_FIELDS and m.group(1) not in out:
            out[m.group(1)] = m.group(2)
    return out


def _ran(step):
    """Why STEP did not run to its end, or None."""
    if step is None:
        return "not run"
    if step.rc is None:
        return "no END line: the guest stopped during it"
    if step.rc == 137:  # SIGKILL: the step's timeout, or the OOM killer
        oom = [ln for ln in step.lines if "Out of memory: Killed process" in ln]
        if oom:
            return "killed by the kernel's OOM killer: " + oom[0].split("] ", 1)[-1][:120]
        limit = STEP_TIMEOUT.get(step.name, DEFAULT_STEP_TIMEOUT)
        if step.seconds is not None and step.seconds >= limit:
            return f"killed by the step's timeout ({limit} s)"
        return f"killed (SIGKILL) after {step.seconds} s"
    return None


def judge_device(dev, d):
    """One device's results: {"device", "info", "steps": [...], "pyverbs"}."""
    info, steps = d["info"], d["steps"]
    res = {"device": dev, "info": info, "steps": [], "pyverbs": None}

    def add(name, verdict, reason="", figures=None, *parts):
        rcs = {p.name: p.rc for p in parts if p is not None}
        secs = sum(p.seconds or 0 for p in parts if p is not None)
        res["steps"].append({"step": name, "result": verdict, "reason": reason,
                             "rc": rcs, "seconds": round(secs, 2), "figures": figures or {}})

    if "missing" in info:
        add("device", "failed", info["missing"])
        return res
    s = steps.get("ibv_devices")
    why = _ran(s)
    add("ibv_devices", "failed" if why or s.rc != 0 or not any(
        ln.split()[:1] == [dev] for ln in s.lines) else "passed",
        why or (f"exit {s.rc}" if s.rc != 0 else "" if any(
            ln.split()[:1] == [dev] for ln in s.lines) else f"{dev} not listed"), None, s)
    s = steps.get("ibv_devinfo")
    why = _ran(s)
    fields = parse_devinfo(s.lines) if s else {}
    state = fields.get("state", "")
    reason = why or (f"exit {s.rc}" if s.rc != 0 else
                     "" if state.startswith("PORT_ACTIVE") else f"port state {state or 'absent'}")
    add("ibv_devinfo", "failed" if reason else "passed", reason, fields, s)
    for name, parse in (("rc_pingpong", parse_pingpong),) + tuple(
            (n, parse_perftest) for n, _, _ in PERFTEST):
        cl, sv = steps.get(f"{name}-client"), steps.get(f"{name}-server")
        why = _ran(cl) or _ran(sv)
        figs = parse(cl.lines) if cl else {}
        if not why:
            bad = [f"{p.name} exit {p.rc}" for p in (cl, sv) if p.rc != 0]
            why = ", ".join(bad) if bad else "" if figs else "no figures in the client's output"
        if why and cl is not None:
            last = [ln.strip() for ln in cl.lines + (sv.lines if sv else []) if ln.strip()
                    and not ln.lstrip().startswith(("-", "*"))]
            errs = [ln for ln in last if re.search(r"(?i)couldn't|failed|error|unable", ln)]
            if errs:
                why += f": {errs[0]}"
        add(name, "failed" if why else "passed", why, figs, cl, sv)
    s = steps.get("pyverbs")
    why = _ran(s)
    tests, summary = parse_unittest(s.lines) if s else ([], {})
    counts = {k: sum(t["result"] == k for t in tests)
              for k in ("passed", "failed", "error", "skipped")}
    if not why and "verdict" not in summary:
        why = "no unittest summary line (Ran N tests / OK or FAILED)"
    elif not why and summary.get("ran") != len(tests):
        why = f"unittest ran {summary.get('ran')} tests, {len(tests)} result lines parsed"
    bad = counts["failed"] + counts["error"]
    add("pyverbs", "failed" if why or bad else "passed",
        why or (f"{bad} of {len(tests)} tests failed" if bad else ""), counts, s)
    res["pyverbs"] = {"modules": list(PYVERBS_TESTS), "summary": summary, "counts": counts,
                      "tests": tests}
    return res


def markdown(results, meta):
    """The summary table of every device."""
    out = [f"# RDMA user space in the guest ({meta.get('kernel', '?')}, "
           f"{meta.get('accel', '?')})", ""]
    for r in results:
        out += [f"## {r['device']}", ""]
        info = r["info"]
        if info:
            out += ["  ".join(f"{k}: {v}" for k, v in sorted(info.items())), ""]
        out += ["| step | result | seconds | figures / reason |", "|---|---|---|---|"]
        for s in r["steps"]:
            figs = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                             for k, v in s["figures"].items()
                             if s["step"] != "ibv_devinfo" or k in ("state", "link_layer",
                                                                    "active_mtu"))
            text = "; ".join(x for x in (figs, s["reason"]) if x)
            out.append(f"| {s['step']} | {s['result']} | {s['seconds']:g} | {text} |")
        if r["pyverbs"]:
            out += ["", "| pyverbs test | result | reason |", "|---|---|---|"]
            for t in r["pyverbs"]["tests"]:
                out.append(f"| {t['test'].removeprefix('tests.')} | {t['result']} | "
                           f"{t['reason'].replace('|', '/')} |")
        out.append("")
    return "\n".join(out)


def finish(out, code, devices, meta, say):
    """Parses OUT/console.log into OUT/rdma/<device>.json and
    OUT/rdma/summary.md; returns the run's exit code: CODE if the run
    itself failed (> 1), else 1 when a device is missing or a step or test
    failed, else 0."""
    from exitcodes import EXIT_OK, EXIT_TESTS_FAILED
    log = out / "console.log"
    text = log.read_text(errors="replace") if log.is_file() else ""
    parsed = parse_console(text)
    rdir = out / "rdma"
    rdir.mkdir(exist_ok=True)
    results = []
    for dev in devices:
        r = judge_device(dev, parsed.get(dev, {"info": {}, "steps": {}}))
        r["meta"] = meta
        results.append(r)
        (rdir / f"{dev}.json").write_text(json.dumps(r, indent=1) + "\n")
    (rdir / "summary.md").write_text(markdown(results, meta))
    failed = []
    for r in results:
        for s in r["steps"]:
            say(f"rdma {r['device']} {s['step']}: {s['result']}"
                + (f" ({s['reason']})" if s["reason"] else ""))
            if s["result"] != "passed":
                failed.append(f"{r['device']} {s['step']}")
        if r["pyverbs"]:
            c = r["pyverbs"]["counts"]
            say(f"rdma {r['device']} pyverbs: {c['passed']} passed, {c['failed']} failed, "
                f"{c['error']} errors, {c['skipped']} skipped")
    say(f"rdma results: {rdir}/summary.md")
    if code > EXIT_TESTS_FAILED:
        return code
    return EXIT_TESTS_FAILED if failed or code != EXIT_OK else EXIT_OK
