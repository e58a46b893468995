"""pinlease as an RDMA device in the guest (docs/rdma.md): the build and
install hooks for pinlease_ib.ko, the rdma-core provider and their checks.

- pinlease_ib.ko is built by the module build itself (a second obj-m in
  guest-driver/module/Kbuild, when the kernel has CONFIG_INFINIBAND_USER_MEM)
  next to pinlease.ko; install() copies it when it is there.
- build() compiles the provider (guest-driver/provider/pinlease.c) with the
  host's gcc against the vendored rdma-core 44.0 private headers and the
  host's libibverbs into libpinlease-rdmavNN.so, and pl-verbs-check
  (guest-driver/provider/tests/) against the public verbs API.
- install() puts into the initramfs: pinlease_ib.ko, the provider where
  libibverbs looks (VERBS_PROVIDERS, with /etc/libibverbs.d/pinlease.driver
  naming it), ibv_devices, ibv_devinfo and ibv_rc_pingpong (ibverbs-utils), pl-verbs-check,
  and /etc/pinlease/ib.sh, which init.sh sources after loading pinlease.ko.

Python standard library only.
"""

import re
from pathlib import Path

import hostdeps
from exitcodes import setup_error
from hostdeps import sbin_which

REPO = Path(__file__).resolve().parents[2]
PROVIDER_SRC = REPO / "guest-driver" / "provider"
PROVIDER_HEADERS = PROVIDER_SRC / "rdma-core-44.0" / "include"
CHECK_SRC = PROVIDER_SRC / "tests" / "pl_verbs_check.c"
INCLUDE = REPO / "guest-driver" / "include"
ABI_HEADER = INCLUDE / "pinlease_ib_abi.h"
OUT = REPO / "target" / "ib-provider"
# The provider ABI of the vendored headers (their config.h's
# IBVERBS_PABI_VERSION): libibverbs loads lib<name>-rdmav<PABI>.so only.
PABI = 34
PROVIDER_NAME = "pinlease"
PROVIDER_LIB = f"lib{PROVIDER_NAME}-rdmav{PABI}.so"
DRIVER_FILE = hostdeps.VERBS_DRIVERS / f"{PROVIDER_NAME}.driver"
CHECK_BIN = OUT / "pl-verbs-check"
IB_KO = "pinlease_ib.ko"
# ibverbs-utils' programs copied into the guest.
UTILS = ("ibv_devices", "ibv_devinfo", "ibv_rc_pingpong")
UTILS_PACKAGE = "ibverbs-utils"

# Sourced by init.sh right after pinlease.ko is loaded (say() and MODE are
# init.sh's). pinlease_ib.ko holds pinlease.ko (it uses its exported
# symbols), so `rmmod pinlease` fails while it is loaded: the suite's
# reload cases and a fault run's unload check rmmod pinlease.ko, so it is
# loaded for --exec and --keep only; a script may call pl_ib_load itself.
IB_SH = """# pinlease_ib.ko: written by guest-driver/vm/ibdriver.py, sourced by /init.
pl_ib_load() {
	if [ ! -f /lib/pinlease/pinlease_ib.ko ]; then
		say "pinlease_ib.ko not in the initramfs (kernel without CONFIG_INFINIBAND_USER_MEM?)"
		return 1
	fi
	if grep -q '^pinlease_ib ' /proc/modules; then
		return 0
	fi
	if ! grep -q '^pinlease ' /proc/modules; then
		say "pinlease_ib.ko not loaded: pinlease.ko is not loaded"
		return 1
	fi
	if ! modprobe ib_uverbs; then
		say "pinlease_ib.ko not loaded: modprobe ib_uverbs FAILED (kernel without CONFIG_INFINIBAND_USER_ACCESS?)"
		return 1
	fi
	if ! insmod /lib/pinlease/pinlease_ib.ko; then
		say "insmod /lib/pinlease/pinlease_ib.ko FAILED: $(dmesg | grep -i pinlease_ib | tail -n 1)"
		return 1
	fi
	set -- /sys/class/infiniband/*
	say "pinlease_ib.ko loaded; ib devices: $*"
}
case "$MODE" in
exec|keep)
	pl_ib_load
	;;
*)
	say "pinlease_ib.ko not loaded in MODE $MODE (the suite rmmods pinlease.ko, which pinlease_ib.ko would hold)"
	;;
esac
"""


def provider_command(out=OUT):
    """The gcc command for the provider: the vendored private headers first,
    then guest-driver/include (pinlease_ib_abi.h), then the host's public
    verbs headers (libibverbs-dev, the same 44.0)."""
    return ["gcc", "-O2", "-g", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter",
            "-fPIC", "-shared", f"-I{PROVIDER_HEADERS}", f"-I{INCLUDE}",
            "-o", str(out / PROVIDER_LIB), str(PROVIDER_SRC / "pinlease.c"),
            "-libverbs", "-Wl,-z,defs"]


def check_command(out=OUT):
    return ["gcc", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{INCLUDE}", "-o",
            str(out / CHECK_BIN.name), str(CHECK_SRC), "-libverbs"]


def vendored_pabi(config=PROVIDER_HEADERS / "config.h"):
    m = re.search(r"^#define IBVERBS_PABI_VERSION (\d+)$", config.read_text(), re.M)
    return int(m.group(1)) if m else None


def host_pabi():
    """The provider ABI of the host's libibverbs, from its rxe provider's
    file name (librxe-rdmavNN.so), or None."""
    rxe = hostdeps.rxe_provider()
    m = re.search(r"-rdmav(\d+)\.so$", rxe.name) if rxe else None
    return int(m.group(1)) if m else None


def build(steps):
    """Builds the provider and pl-verbs-check into OUT (a setup error when
    the host's libibverbs takes another provider ABI than the vendored
    headers')."""
    got = vendored_pabi()
    if got != PABI:
        raise setup_error(f"{PROVIDER_HEADERS}/config.h: IBVERBS_PABI_VERSION {got}, expected {PABI}")
    host = host_pabi()
    if host != PABI:
        raise setup_error(f"the host's libibverbs loads -rdmav{host}.so providers; the vendored "
                      f"rdma-core 44.0 headers build -rdmav{PABI}.so (guest-driver/provider/README.md)")
    OUT.mkdir(parents=True, exist_ok=True)
    steps.run("ib-provider", provider_command())
    steps.run("pl-verbs-check", check_command())
    for f in (OUT / PROVIDER_LIB, CHECK_BIN):
        if not f.is_file():
            raise setup_error(f"{f} missing after the build")


def install(c, ko, copy_dynamic, say):
    """Adds the RDMA side to initramfs C (a Cpio): pinlease_ib.ko from next
    to KO, the provider and its .driver file, ibverbs-utils' UTILS,
    pl-verbs-check and /etc/pinlease/ib.sh. COPY_DYNAMIC(c, path, src)
    copies a binary with its libraries."""
    ib_ko = Path(ko).parent / IB_KO
    if ib_ko.is_file():
        c.copy(f"lib/pinlease/{IB_KO}", ib_ko, 0o644)
    else:
        say(f"note: no {ib_ko} (kernel without CONFIG_INFINIBAND_USER_MEM, or --module given): "
            "the guest gets no pinlease_ib device")
    for f in (OUT / PROVIDER_LIB, CHECK_BIN):
        if not f.is_file():
            raise setup_error(f"{f} not built (ibdriver.build)")
    copy_dynamic(c, str(hostdeps.VERBS_PROVIDERS / PROVIDER_LIB), OUT / PROVIDER_LIB)
    c.file(str(DRIVER_FILE).lstrip("/"), f"driver {PROVIDER_NAME}\n".encode())
    copy_dynamic(c, f"bin/{CHECK_BIN.name}", CHECK_BIN)
    missing = []
    for util in UTILS:
        path = sbin_which(util)
        if path:
            copy_dynamic(c, f"usr/bin/{util}", path)
        else:
            missing.append(util)
    if missing:
        # Only the RDMA checks use them: the suite must not need them.
        say(f"note: {', '.join(missing)} not on the host (apt-get install {UTILS_PACKAGE}): "
            "not in the guest")
    c.file("etc/pinlease/ib.sh", IB_SH.encode())


def abi_value(name, header=ABI_HEADER):
    """A #define of pinlease_ib_abi.h: an int, or a string literal's text."""
    m = re.search(rf"^#define {name}\s+(.+)$", header.read_text(), re.M)
    if not m:
        raise setup_error(f"{header}: no #define {name}")
    v = m.group(1).strip()
    if v.startswith('"'):
        return v.strip('"')
    return int(v, 0)

