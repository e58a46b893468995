# Console markers: the lines the guest prints on its serial console for the
# host runner to act on. This file is their one definition:
#   - guest-driver/vm/init.sh sources it (the runner copies it into the
#     initramfs as /etc/pinlease/console_markers.sh);
#   - the runner reads it (guest-driver/vm/markers.py);
#   - the guest tool gets Rust constants from it at build time
#     (guest-driver/tools/build.rs), e.g. PL_MARK_STRAY -> markers::STRAY.
# Format, so that sh, Python and Rust can all read it without a parser of
# their own: comment lines, blank lines, and NAME=VALUE lines where NAME is
# PL_MARK_[A-Z_]+ and VALUE is the marker itself (no quotes, no spaces).
# Every marker starts with PL_MARK_PREFIX, which lets the console filter
# tell marker lines from a user's output.

PL_MARK_PREFIX=PINLEASE-

# init.sh, once /proc is up: the runner times the boot on it.
PL_MARK_INIT=PINLEASE-INIT
# init.sh on a probe boot (--accel auto checks that KVM works).
PL_MARK_PROBE_OK=PINLEASE-PROBE-OK
# init.sh before the suite, the no-device checks or the --exec script:
# "PINLEASE-RUN-START suite|nodevice|bench|exec".
PL_MARK_RUN_START=PINLEASE-RUN-START
# init.sh at the end, "PINLEASE-SUITE-EXIT RC": the runner's sentinel.
PL_MARK_SUITE_EXIT=PINLEASE-SUITE-EXIT
# init.sh after a fault run: "PINLEASE-INVARIANT NAME ok|violated|unchecked DETAIL".
PL_MARK_INVARIANT=PINLEASE-INVARIANT
# init.sh after a fault run: "PINLEASE-MODULE-FAULT NAME COUNT".
PL_MARK_MODULE_FAULT=PINLEASE-MODULE-FAULT
# init.sh after a fault run: the module's debugfs files, one line each.
PL_MARK_DEBUGFS=PINLEASE-DEBUGFS
# pinlease-guest stray-scan: "PINLEASE-STRAY words=N canaries=C" ...
PL_MARK_STRAY=PINLEASE-STRAY
# ... and up to 10 "PINLEASE-STRAY-HIT addr=... word=... slot=... gen^off=...".
PL_MARK_STRAY_HIT=PINLEASE-STRAY-HIT
# The suite asks the host for a daemon status snapshot: "# PINLEASE-SNAPSHOT NAME" ...
PL_MARK_SNAPSHOT=PINLEASE-SNAPSHOT
# ... and the runner answers on the console with this line.
PL_MARK_HOST_ACK=PINLEASE-HOST-ACK
# pinlease-guest bench and ibv-bench: "PINLEASE-BENCH SIDE ID VALUE [KEY=VALUE ...]"
# (the figures are defined in bench_figures.txt).
PL_MARK_BENCH=PINLEASE-BENCH

# vm/soak's guest script, after each round of the suite (docs/soak.md):
# "PINLEASE-SOAK iter=N uptime=S slab_kb=K sunreclaim_kb=K ok=N failed=N"
PL_MARK_SOAK=PINLEASE-SOAK

# pinlease-guest fuzz (and the campaign_ioctl_fuzz case's diagnostics):
# "PINLEASE-FUZZ-IOCTL name=REG_MR calls=N ok=N EINVAL=N ..." per ioctl,
# "PINLEASE-FUZZ-CHECK name=pins|kernel-log|device|workers verdict=ok|failed detail=..."
# per check, then "PINLEASE-FUZZ seed=S ... ioctls=N ioctls_per_s=R ... verdict=ok|failed".
PL_MARK_FUZZ=PINLEASE-FUZZ
PL_MARK_FUZZ_IOCTL=PINLEASE-FUZZ-IOCTL
PL_MARK_FUZZ_CHECK=PINLEASE-FUZZ-CHECK
# vm/run --rdma-tests' guest script (guest-driver/vm/rdma_userspace.py):
# "PINLEASE-RDMA BEGIN DEV STEP", the step's output, "PINLEASE-RDMA END DEV
# STEP rc=N seconds=S"; "PINLEASE-RDMA INFO DEV KEY=VALUE".
PL_MARK_RDMA=PINLEASE-RDMA
