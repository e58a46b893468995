#!/bin/sh
# /init of the pinlease guest initramfs, built by guest-driver/vm/run.
#
# Sets up the guest environment that guest-driver/README.md promises the
# module and the suite (proc, sys, devtmpfs, debugfs; filesystems on
# /mnt/xfs, /mnt/ext4, /mnt/dax; hugepages; pinlease.ko loaded), then runs
# one of: the suite, the no-device checks (--no-device: the module is not
# loaded here), the benchmark (--bench: `pinlease-guest bench`, then
# ibv-bench on soft-RoCE), the user's --exec script, or an interactive
# shell (--keep).
# The runner bakes its choices into /etc/pinlease/run.conf.
#
# Lines starting "pinlease-init:" are this script's progress and problems;
# the runner streams them. Marker lines ($PL_MARK_*) are what the runner
# acts on; their text is defined once, in console_markers.sh
# (guest-driver/include/), which the runner copies into the initramfs.

export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root
umask 022
. /etc/pinlease/console_markers.sh

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t debugfs debugfs /sys/kernel/debug
mkdir -p /dev/pts /dev/hugepages /tmp /root
mount -t devpts devpts /dev/pts
mount -t hugetlbfs hugetlbfs /dev/hugepages
# The runner times boot on this line; the probe boot waits for it too.
echo "$PL_MARK_INIT uptime=$(cut -d' ' -f1 /proc/uptime)"

# Probe boot (--accel auto checking that KVM works): reaching here is enough.
if grep -q 'pinlease\.probe=1' /proc/cmdline; then
	echo "$PL_MARK_PROBE_OK"
	poweroff -f
fi

. /etc/pinlease/run.conf

say() { echo "pinlease-init: $*"; }

# Kernel modules the runner found for this kernel (dependencies first is not
# needed: modprobe resolves them from the modules.dep the runner generated).
for m in $MODULES; do
	modprobe "$m" || say "modprobe $m FAILED"
done

# mount_fs DEV DIR TYPE [OPTS]: mount when DEV exists, say why not otherwise.
mount_fs() {
	if [ ! -b "$1" ]; then
		say "$1 absent: $2 not mounted"
		return 1
	fi
	mkdir -p "$2"
	if ! mount -t "$3" ${4:+-o "$4"} "$1" "$2"; then
		say "mount -t $3 ${4:+-o $4} $1 $2 FAILED"
		rmdir "$2"
		return 1
	fi
	say "mounted $1 on $2 ($3${4:+, $4})"
}

[ "$MOUNT_XFS" = 1 ] && mount_fs /dev/vda /mnt/xfs xfs
[ "$MOUNT_EXT4" = 1 ] && mount_fs /dev/vdb /mnt/ext4 ext4
if [ "$MOUNT_DAX" = 1 ]; then
	# The nvdimm bus probes the pmem namespace asynchronously.
	i=0
	while [ ! -b /dev/pmem0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
	if mount_fs /dev/pmem0 /mnt/dax xfs dax=always; then
		# XFS turns DAX off (and still mounts) when the block device cannot
		# do it; a /mnt/dax without DAX would make the DAX cases lie.
		if ! grep -q ' /mnt/dax .*dax' /proc/mounts; then
			say "/mnt/dax mounted WITHOUT dax ($(grep ' /mnt/dax ' /proc/mounts)): unmounted"
			umount /mnt/dax && rmdir /mnt/dax
		fi
	fi
fi

echo 16 >/proc/sys/vm/nr_hugepages
hp=$(cat /proc/sys/vm/nr_hugepages)
[ "$hp" -ge 16 ] || say "only $hp of 16 hugepages allocated"

mkdir -p /lib/pinlease
# MODE nodevice (vm/run --no-device) loads and unloads the module itself.
if [ "$MODE" = nodevice ]; then
	say "pinlease.ko not loaded: pinlease-guest nodevice loads it"
elif [ -f /lib/pinlease/pinlease.ko ]; then
	# MODULE_PARAMS: a --faults plan's [guest] values (NAME=VALUE ...).
	# shellcheck disable=SC2086 # one word per parameter
	if insmod /lib/pinlease/pinlease.ko $MODULE_PARAMS; then
		set -- /dev/pinlease*
		if [ -e "$1" ]; then
			say "pinlease.ko loaded${MODULE_PARAMS:+ ($MODULE_PARAMS)}; devices: $*"
		else
			say "pinlease.ko loaded but no /dev/pinlease* (did it bind the device?)"
		fi
	else
		say "insmod /lib/pinlease/pinlease.ko $MODULE_PARAMS FAILED"
	fi
fi
# pinlease_ib.ko (guest-driver/vm/ibdriver.py writes ib.sh; docs/rdma.md)
[ -f /etc/pinlease/ib.sh ] && . /etc/pinlease/ib.sh

# A fault run (vm/run --faults) wants a task stuck by a fault reported
# within the run, not after the kernel's default 120 s.
if [ "$FAULTS" = 1 ]; then
	hung=/proc/sys/kernel/hung_task_timeout_secs
	if [ -w "$hung" ]; then
		echo "$HUNG_TASK_SECS" >"$hung"
		# Check often enough to see a task blocked for HUNG_TASK_SECS soon after.
		[ -w /proc/sys/kernel/hung_task_check_interval_secs ] &&
			echo 2 >/proc/sys/kernel/hung_task_check_interval_secs
		say "hung_task_timeout_secs $(cat $hung)"
	else
		say "no $hung (kernel without DETECT_HUNG_TASK): hung tasks only show as a timeout"
	fi
fi

# Kernel messages below KERN_WARNING stay in the log (dmesg, /dev/kmsg, which
# the suite reads) instead of interleaving with KTAP on the console;
# warnings, BUGs and oopses still reach the console.
[ -n "$CONSOLE_LOGLEVEL" ] && echo "$CONSOLE_LOGLEVEL" >/proc/sys/kernel/printk

# inv NAME ok|violated|unchecked DETAIL: one invariant's result, for the
# runner (guest-driver/vm/invariants.py parses these lines).
inv() {
	echo "$PL_MARK_INVARIANT $*"
}

# The invariants of a fault run (docs/faults.md section 3.2), after the
# suite: every device fd is closed by now.
fault_checks() {
	# What the module's own fault points did (its "fault injected: NAME"
	# log lines, and its debugfs faults file when it has one).
	dmesg | sed -n 's/.*pinlease: fault injected: \([a-z_]*\).*/\1/p' | sort | uniq -c |
		while read -r n name; do echo "$PL_MARK_MODULE_FAULT $name $n"; done
	for f in /sys/kernel/debug/pinlease/faults /sys/kernel/debug/pinlease/*/faults; do
		[ -f "$f" ] && sed "s|^|$PL_MARK_DEBUGFS $f: |" "$f"
	done

	# stray-writes: needs the module loaded and the device's scrubber on.
	pinlease-guest stray-scan >/tmp/stray.out 2>&1
	s=$?
	line=$(grep "^$PL_MARK_STRAY " /tmp/stray.out | tail -n 1)
	canaries=$(echo "$line" | sed -n 's/.*canaries=\([0-9]*\).*/\1/p')
	if [ -z "$canaries" ]; then
		inv stray-writes unchecked "stray-scan exit $s, no $PL_MARK_STRAY line: $(head -n 1 /tmp/stray.out)"
	elif [ "$canaries" -gt 0 ]; then
		inv stray-writes violated "$line"
	elif [ $s -eq 0 ]; then
		inv stray-writes ok "$line"
	else
		inv stray-writes unchecked "stray-scan exit $s: $line"
	fi

	# pins: unload the module (bounded: a stuck rmmod is a finding, not a
	# hang of the run), then the pin counters must balance.
	unload="not loaded"
	if grep -q '^pinlease ' /proc/modules; then
		rmmod pinlease >/tmp/rmmod.out 2>&1 &
		pid=$!
		i=0
		while kill -0 $pid 2>/dev/null && [ $i -lt 200 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		if kill -0 $pid 2>/dev/null; then
			unload="rmmod still running after 20 s"
		elif wait $pid; then
			unload=ok
		else
			unload="rmmod failed: $(head -n 1 /tmp/rmmod.out)"
		fi
	fi
	i=0
	while :; do
		echo 1 >/proc/sys/vm/stat_refresh 2>/dev/null
		acq=$(sed -n 's/^nr_foll_pin_acquired //p' /proc/vmstat)
		rel=$(sed -n 's/^nr_foll_pin_released //p' /proc/vmstat)
		[ "$acq" = "$rel" ] || [ $i -ge 20 ] && break
		sleep 0.1
		i=$((i + 1))
	done
	pins="nr_foll_pin_acquired $acq nr_foll_pin_released $rel; module unload: $unload"
	if [ -z "$acq" ]; then
		inv pins unchecked "no nr_foll_pin_* in /proc/vmstat; module unload: $unload"
	elif [ "$acq" != "$rel" ] || { [ "$unload" != ok ] && [ "$unload" != "not loaded" ]; }; then
		inv pins violated "$pins"
	else
		inv pins ok "$pins"
	fi

	# The kernel log since boot, rmmod included.
	dmesg >/tmp/dmesg.txt
	hung=$(grep -c 'blocked for more than' /tmp/dmesg.txt)
	if [ "$hung" -gt 0 ]; then
		inv hung-task violated "$hung reports, first: $(grep 'blocked for more than' /tmp/dmesg.txt | head -n 1)"
	else
		inv hung-task ok "no 'blocked for more than' in the kernel log"
	fi
	# The list is guest-driver/include/kernel_warnings.txt (literal
	# substrings; its comment lines are no patterns).
	grep -v '^#' /etc/pinlease/kernel_warnings.txt >/tmp/kernel_warnings
	warn=$(grep -cFf /tmp/kernel_warnings /tmp/dmesg.txt)
	if [ "$warn" -gt 0 ]; then
		inv kernel-warn violated "$warn lines, first: $(grep -Ff /tmp/kernel_warnings /tmp/dmesg.txt | head -n 1)"
	else
		inv kernel-warn ok "none of $(tr '\n' / </tmp/kernel_warnings) in the kernel log"
	fi
}

# The rxe side of the bench (MODE bench): soft-RoCE on a dummy netdev.
# dummy0 gets an address of TEST-NET-1 (RFC 5737, never routed anywhere):
# rxe derives its RoCEv2 GIDs from the netdev's addresses, and ibv-bench's
# two QPs address each other by the IPv4 one, a local address, so rxe loops
# the packets back to itself.
RXE_ADDR=192.0.2.1/24
rxe_setup() {
	for m in $BENCH_MODULES; do
		modprobe "$m" || { say "modprobe $m FAILED"; return 1; }
	done
	# The dummy module makes dummy0 itself (numdummies=1).
	[ -d /sys/class/net/dummy0 ] || ip link add dummy0 type dummy ||
		{ say "no dummy0 and 'ip link add dummy0 type dummy' FAILED"; return 1; }
	ip link set lo up
	ip addr add "$RXE_ADDR" dev dummy0 && ip link set dummy0 up ||
		{ say "dummy0: address $RXE_ADDR or link up FAILED"; return 1; }
	rdma link add rxe0 type rxe netdev dummy0 ||
		{ say "rdma link add rxe0 type rxe netdev dummy0 FAILED"; return 1; }
	say "rxe: $(rdma link show rxe0/1)"
}

export CASES
# A fault run's seed, for the campaign_ioctl_fuzz case (unset otherwise).
[ -n "${FUZZ_SEED:-}" ] && export FUZZ_SEED
# The runner answers snapshot requests ($PL_MARK_SNAPSHOT) on the console;
# its answers must not be echoed into the KTAP stream.
stty -echo 2>/dev/null
case "$MODE" in
suite)
	echo "$PL_MARK_RUN_START suite"
	pinlease-guest suite --cases "$CASES"
	rc=$?
	;;
nodevice)
	# No pinlease device in this VM: load/unload checks, KTAP like the suite.
	echo "$PL_MARK_RUN_START nodevice"
	pinlease-guest nodevice --module /lib/pinlease/pinlease.ko
	rc=$?
	;;
bench)
	# Both sides print their figures ($PL_MARK_BENCH lines) on the console;
	# the runner pairs them (guest-driver/vm/bench.py). rc 0 only when both
	# programs exited 0; which did not is said here.
	echo "$PL_MARK_RUN_START bench"
	pinlease-guest bench --seconds "$BENCH_SECONDS" --max-mib "$BENCH_MAX_MIB"
	prc=$?
	if rxe_setup; then
		ibv-bench --seconds "$BENCH_SECONDS" --max-mib "$BENCH_MAX_MIB"
		irc=$?
	else
		irc="not run (rxe setup failed)"
	fi
	say "bench: pinlease-guest bench exit $prc, ibv-bench exit $irc"
	rc=0
	[ "$prc" = 0 ] && [ "$irc" = 0 ] || rc=1
	;;
exec)
	echo "$PL_MARK_RUN_START exec"
	sh /pinlease/exec
	rc=$?
	;;
keep)
	say "interactive shell: 'poweroff -f' ends the VM (or Ctrl-A x in QEMU)"
	setsid cttyhack sh -l
	poweroff -f
	;;
*)
	say "unknown MODE '$MODE' in /etc/pinlease/run.conf"
	rc=125
	;;
esac

[ "$FAULTS" = 1 ] && fault_checks

# No echo of the runner's answer (below) on the console.
stty -echo 2>/dev/null
echo "$PL_MARK_SUITE_EXIT $rc"
# The runner reads the daemon's status when it sees the line above, while
# the device is still live; it answers on the console when done. Powering off
# before that would reset the device under it. Without a runner (someone
# booting this by hand) give up after a while.
read -t 30 _ack
poweroff -f
sleep 3600
