# Negative control for the fault runs' hung-task invariant (busybox sh, run
# in the guest by `guest-driver/vm/run --faults
# guest-driver/campaigns/control.toml --exec guest-driver/vm/tests/hung-task.sh`):
# a writer blocked (uninterruptibly) on a frozen XFS for longer than the
# runner's 10 s hung-task limit. The run MUST end with hung-task violated
# (exit 1): it shows the check can fail.
xfs_io -x -c freeze /mnt/xfs || exit 1
echo "frozen /mnt/xfs; a writer blocks on it for 16 s"
(echo x >/mnt/xfs/blocked-writer) &
sleep 16
xfs_io -x -c thaw /mnt/xfs
wait
echo "thawed; the writer finished"
