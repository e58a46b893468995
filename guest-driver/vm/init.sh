#!/bin/sh
# /init of the pinlease guest initramfs, built by guest-driver/vm/run.
#
# Sets up the guest environment that guest-driver/README.md promises the
# module and the suite (proc, sys, devtmpfs, debugfs; filesystems on
# /mnt/xfs, /mnt/ext4, /mnt/dax; hugepages; pinlease.ko loaded), then runs
# one of: the suite, the no-device checks (--no-device: the module is not
# loaded here), the user's --exec script, or an interactive shell (--keep).
# The runner bakes its choices into /etc/pinlease/run.conf.
#
# Lines starting "pinlease-init:" are this script's progress and problems;
# the runner streams them. "PINLEASE-..." lines are markers the runner
# parses: keep their text in sync with guest-driver/vm/run.

export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root
umask 022

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t debugfs debugfs /sys/kernel/debug
mkdir -p /dev/pts /dev/hugepages /tmp /root
mount -t devpts devpts /dev/pts
mount -t hugetlbfs hugetlbfs /dev/hugepages
# The runner times boot on this line; the probe boot waits for it too.
echo "PINLEASE-INIT uptime=$(cut -d' ' -f1 /proc/uptime)"

# Probe boot (--accel auto checking that KVM works): reaching here is enough.
if grep -q 'pinlease\.probe=1' /proc/cmdline; then
	echo PINLEASE-PROBE-OK
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
	if insmod /lib/pinlease/pinlease.ko; then
		set -- /dev/pinlease*
		if [ -e "$1" ]; then
			say "pinlease.ko loaded; devices: $*"
		else
			say "pinlease.ko loaded but no /dev/pinlease* (did it bind the device?)"
		fi
	else
		say "insmod /lib/pinlease/pinlease.ko FAILED"
	fi
fi

# Kernel messages below KERN_WARNING stay in the log (dmesg, /dev/kmsg, which
# the suite reads) instead of interleaving with KTAP on the console;
# warnings, BUGs and oopses still reach the console.
[ -n "$CONSOLE_LOGLEVEL" ] && echo "$CONSOLE_LOGLEVEL" >/proc/sys/kernel/printk

export CASES
# The runner answers snapshot requests (PINLEASE-SNAPSHOT) on the console;
# its answers must not be echoed into the KTAP stream.
stty -echo 2>/dev/null
case "$MODE" in
suite)
	echo "PINLEASE-RUN-START suite"
	pinlease-guest suite --cases "$CASES"
	rc=$?
	;;
nodevice)
	# No pinlease device in this VM: load/unload checks, KTAP like the suite.
	echo "PINLEASE-RUN-START nodevice"
	pinlease-guest nodevice --module /lib/pinlease/pinlease.ko
	rc=$?
	;;
exec)
	echo "PINLEASE-RUN-START exec"
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

# No echo of the runner's answer (below) on the console.
stty -echo 2>/dev/null
echo "PINLEASE-SUITE-EXIT $rc"
# The runner reads the daemon's status when it sees the line above, while
# the device is still live; it answers on the console when done. Powering off
# before that would reset the device under it. Without a runner (someone
# booting this by hand) give up after a while.
read -t 30 _ack
poweroff -f
sleep 3600
