#!/bin/busybox sh
# SPDX-License-Identifier: GPL-2.0
# initramfs /init for a hand-run smoke test: busybox-static in /bin,
# pl_smoke in /bin, pinlease.ko in /lib/modules.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t debugfs debugfs /sys/kernel/debug
mount -t tmpfs tmp /tmp
echo 8 > /proc/sys/kernel/printk
echo "=== insmod"
insmod /lib/modules/pinlease.ko
ls -l /dev/pinlease* 2>&1
cat /sys/kernel/debug/pinlease/pinlease0/device 2>&1
MODE=$(sed -n 's/.*plmode=\([a-z]*\).*/\1/p' /proc/cmdline)
if [ -e /dev/pinlease0 ]; then
	PL_HOLD=6 pl_smoke
	pl_smoke stress
	pl_smoke reset
	DEV=$(basename $(readlink /sys/class/misc/pinlease0/device 2>/dev/null) 2>/dev/null)
	[ -z "$DEV" ] && DEV=$(ls /sys/bus/virtio/drivers/pinlease/ | grep virtio)
	echo "device: $DEV"
	pl_smoke unbind $DEV
	cat /sys/kernel/debug/pinlease/pinlease0/device
fi
echo "=== rmmod"
rmmod pinlease && echo "rmmod ok"
lsmod
echo "=== insmod again + rmmod"
insmod /lib/modules/pinlease.ko && ls /dev/pinlease* 2>&1; rmmod pinlease && echo "rmmod ok"
echo "=== dmesg"
dmesg | grep -iE "pinlease|virtio|BUG|WARN|Oops|lock|leak|call trace" | grep -v "Lockdown"
echo "=== done"
poweroff -f
