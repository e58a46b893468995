#!/bin/sh
# The RDMA checks of docs/rdma.md in a guest: guest-driver/vm/run --exec
# guest-driver/provider/tests/ib-check.sh [--debian-kernel 6.1|6.12|newest].
# /init has loaded pinlease.ko and pinlease_ib.ko (MODE exec, ib.sh).
# Exit 0 only when every step passed; each step says "ib-check: ok|FAIL".
rc=0
step() {
	name=$1
	shift
	if "$@" >/tmp/step.out 2>&1; then
		echo "ib-check: ok $name"
	else
		echo "ib-check: FAIL $name (exit $?)"
		rc=1
	fi
	sed 's/^/    /' /tmp/step.out
}
has() {
	grep -q "$2" "$1" || { echo "    missing: $2"; return 1; }
}

ls /sys/class/infiniband/ >/tmp/ibdevs 2>&1
echo "ib-check: /sys/class/infiniband: $(tr '\n' ' ' </tmp/ibdevs)"
step "ibv_devices lists pinlease_ib0" sh -c 'ibv_devices | tee /tmp/devices.txt && grep -q "pinlease_ib0" /tmp/devices.txt'
step "ibv_devinfo -d pinlease_ib0 -v" sh -c 'ibv_devinfo -d pinlease_ib0 -v >/tmp/devinfo.txt; s=$?; cat /tmp/devinfo.txt; exit $s'
for want in "state:.*PORT_ACTIVE" "port_lid:.*1\$" "link_layer:.*InfiniBand" "phys_state:.*LINK_UP"; do
	step "devinfo shows $want" has /tmp/devinfo.txt "$want"
done
step "pl-verbs-check reg" pl-verbs-check reg pinlease_ib0
step "pl-verbs-check disassociate" pl-verbs-check disassociate pinlease_ib0
step "pl-verbs-check reg after the rebind" pl-verbs-check reg pinlease_ib0
step "pl-verbs-check traffic" pl-verbs-check traffic pinlease_ib0
ip link set lo up
pingpong() {
	ibv_rc_pingpong -d pinlease_ib0 -n 200 "$@" >/tmp/pp-server.txt 2>&1 &
	s=$!
	sleep 1
	ibv_rc_pingpong -d pinlease_ib0 -n 200 "$@" 127.0.0.1 >/tmp/pp-client.txt 2>&1
	c=$?
	wait $s
	sv=$?
	echo "server (exit $sv):"
	cat /tmp/pp-server.txt
	echo "client (exit $c):"
	cat /tmp/pp-client.txt
	[ $c = 0 ] && [ $sv = 0 ]
}
step "ibv_rc_pingpong -n 200 (polling)" pingpong
step "ibv_rc_pingpong -n 200 -e (completion events)" pingpong -e
# last: the device that comes back may have another name
step "pl-verbs-check reset" pl-verbs-check reset pinlease_ib0

dmesg >/tmp/dmesg.txt
grep -v '^#' /etc/pinlease/kernel_warnings.txt >/tmp/kernel_warnings
if grep -qFf /tmp/kernel_warnings /tmp/dmesg.txt; then
	echo "ib-check: FAIL kernel warnings in dmesg:"
	grep -Ff /tmp/kernel_warnings /tmp/dmesg.txt | head -n 20 | sed 's/^/    /'
	rc=1
else
	echo "ib-check: ok no kernel warning in dmesg"
fi
echo "ib-check: kernel log of pinlease and ib:"
grep -iE 'pinlease|infiniband|ib_core|uverbs' /tmp/dmesg.txt | tail -n 30 | sed 's/^/    /'
echo "ib-check: exit $rc"
exit $rc
