// SPDX-License-Identifier: GPL-2.0
/*
 * pinlease: debugfs tables of each device.
 *
 * /sys/kernel/debug/pinlease/
 *   bench_pin the bare pin the guest benchmark times (pl_bench.c)
 * /sys/kernel/debug/pinlease/pinleaseN/
 *   device    limits, state and counters
 *   contexts  one line per context the module tracks
 *   mrs       one line per MR
 *   leases    one line per layout lease
 *   reset     write 1: reset the device (it forgets everything)
 *   faults    the fault parameters (module-wide), what the module's fault
 *             points fired and the device's fault events (this device)
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/debugfs.h>
#include <linux/kstrtox.h>
#include <linux/seq_file.h>

#include "pinlease.h"

static struct dentry *pl_dbg_root;

static int pl_dbg_device_show(struct seq_file *m, void *unused)
{
	struct pl_dev *dev = m->private;

	seq_printf(m, "name: %s\nvirtio_id: %u\nmode: %s\n", dev->name,
		   dev->virtio_id,
		   dev->virtio_id == PL_VIRTIO_ID_NATIVE ? "native" : "carrier");
	seq_printf(m, "abi_version: %u\npage_size: %u\nfeatures: %#llx\n",
		   dev->abi_version, dev->page_size, dev->features);
	seq_printf(m, "max_contexts: %u\nmax_mrs: %u\nmax_pages_per_mr: %u\n",
		   dev->max_contexts, dev->max_mrs, dev->max_pages_per_mr);
	seq_printf(m, "max_leases: %u\nmax_children_per_context: %u\nmax_request_bytes: %u\n",
		   dev->max_leases, dev->max_children_per_context,
		   dev->max_request_bytes);
	seq_printf(m, "requests: %lld\nevents: %lld\nevents_unrouted: %lld\nevents_bad: %lld\n",
		   atomic64_read(&dev->nr_requests),
		   atomic64_read(&dev->nr_events),
		   atomic64_read(&dev->nr_events_unrouted),
		   atomic64_read(&dev->nr_events_bad));
	seq_printf(m, "timeouts: %lld\nresets: %lld\n",
		   atomic64_read(&dev->nr_timeouts),
		   atomic64_read(&dev->nr_resets));
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(pl_dbg_device);

static int pl_dbg_contexts_show(struct seq_file *m, void *unused)
{
	struct pl_dev *dev = m->private;
	struct pl_ctx *ctx;
	struct pl_mr *mr;
	unsigned long idx, j;
	unsigned int nmrs, nevch;
	struct list_head *pos;

	seq_puts(m, "ctx                 pid     comm             state    refs mrs  evchs exports\n");
	mutex_lock(&dev->lock);
	xa_for_each(&dev->ctxs, idx, ctx) {
		nmrs = 0;
		nevch = 0;
		mutex_lock(&ctx->mr_lock);
		xa_for_each(&ctx->mrs, j, mr)
			nmrs++;
		mutex_unlock(&ctx->mr_lock);
		spin_lock(&ctx->ev_lock);
		list_for_each(pos, &ctx->evchs)
			nevch++;
		spin_unlock(&ctx->ev_lock);
		seq_printf(m, "%#-18llx  %-7d %-16.16s %-8s %-4u %-4u %-5u %u\n",
			   ctx->handle, ctx->pid, ctx->comm, pl_ctx_state(ctx),
			   kref_read(&ctx->kref), nmrs, nevch,
			   READ_ONCE(ctx->nr_exports));
	}
	mutex_unlock(&dev->lock);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(pl_dbg_contexts);

static int pl_dbg_mrs_show(struct seq_file *m, void *unused)
{
	struct pl_dev *dev = m->private;
	struct pl_ctx *ctx;
	struct pl_mr *mr;
	unsigned long idx, j;

	seq_puts(m, "ctx                 key                 addr               length       pages    access flags pin state    lease              file\n");
	mutex_lock(&dev->lock);
	xa_for_each(&dev->ctxs, idx, ctx) {
		mutex_lock(&ctx->mr_lock);
		xa_for_each(&ctx->mrs, j, mr) {
			seq_printf(m, "%#-18llx  %#-18llx  %#-18llx %-12llu %-8u %-6x %-5x %-3x %-8s %#-18llx ",
				   ctx->handle, mr->key, mr->addr, mr->length,
				   mr->npages, mr->access, mr->reg_flags,
				   mr->pin_flags,
				   mr->revoked ? "revoked" :
				   mr->imported ? "imported" : "active",
				   mr->lease);
			if (mr->reg_flags & PL_REG_HAS_FILE)
				seq_printf(m, "%llx:%llu:%u@%llu\n",
					   mr->file_dev, mr->file_ino,
					   mr->file_gen, mr->file_offset);
			else
				seq_puts(m, "-\n");
		}
		mutex_unlock(&ctx->mr_lock);
	}
	mutex_unlock(&dev->lock);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(pl_dbg_mrs);

static int pl_dbg_leases_show(struct seq_file *m, void *unused)
{
	struct pl_dev *dev = m->private;
	struct pl_ctx *ctx;
	struct pl_lease *l;
	unsigned long idx, j;

	seq_puts(m, "ctx                 lease               pid     policy  state    kernel file                  start        end\n");
	mutex_lock(&dev->lock);
	xa_for_each(&dev->ctxs, idx, ctx) {
		mutex_lock(&ctx->lease_lock);
		xa_for_each(&ctx->leases, j, l) {
			seq_printf(m, "%#-18llx  %#-18llx  %-7d %-7s %-8s %-6s %llx:%llu:%u %-12llu ",
				   ctx->handle, l->handle, l->pid,
				   pl_lease_policy_name(l),
				   pl_lease_state_name(l),
				   READ_ONCE(l->kernel_held) ? "held" : "gone",
				   l->file_dev, l->file_ino, l->file_gen,
				   l->start);
			if (l->length)
				seq_printf(m, "%llu\n", l->start + l->length);
			else
				seq_puts(m, "eof\n");
		}
		mutex_unlock(&ctx->lease_lock);
	}
	mutex_unlock(&dev->lock);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(pl_dbg_leases);

static int pl_dbg_faults_show(struct seq_file *m, void *unused)
{
	pl_faults_show(m, m->private);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(pl_dbg_faults);

static ssize_t pl_dbg_reset_write(struct file *file, const char __user *ubuf,
				  size_t count, loff_t *ppos)
{
	struct pl_dev *dev = file->private_data;
	bool on;
	int err;

	err = kstrtobool_from_user(ubuf, count, &on);
	if (err)
		return err;
	if (!on)
		return count;
	err = pl_dev_reset(dev);
	return err ? err : count;
}

static const struct file_operations pl_dbg_reset_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.write = pl_dbg_reset_write,
};

/**
 * pl_debugfs_add() - the debugfs directory of a device
 * @dev: the device, named and queried (its tables are read from here on)
 *
 * Nothing is created when the root directory is missing (debugfs off).
 *
 * Context: Process context (probe); sleeps.
 * Locking: The caller holds none of the module's locks; the tables take
 * dev->lock and the context locks when read.
 */
void pl_debugfs_add(struct pl_dev *dev)
{
	if (!pl_dbg_root)
		return;
	dev->dbg = debugfs_create_dir(dev->name, pl_dbg_root);
	debugfs_create_file("device", 0400, dev->dbg, dev,
			    &pl_dbg_device_fops);
	debugfs_create_file("contexts", 0400, dev->dbg, dev,
			    &pl_dbg_contexts_fops);
	debugfs_create_file("mrs", 0400, dev->dbg, dev, &pl_dbg_mrs_fops);
	debugfs_create_file("leases", 0400, dev->dbg, dev,
			    &pl_dbg_leases_fops);
	debugfs_create_file("reset", 0200, dev->dbg, dev, &pl_dbg_reset_fops);
	debugfs_create_file("faults", 0400, dev->dbg, dev,
			    &pl_dbg_faults_fops);
}

/**
 * pl_debugfs_remove() - remove the debugfs directory of a device
 * @dev: the device
 *
 * Waits for readers of its files to leave (debugfs_remove_recursive()).
 *
 * Context: Process context (remove); sleeps.
 * Locking: The caller must not hold dev->lock: a reader of a table holds
 * it, and the removal waits for that reader.
 */
void pl_debugfs_remove(struct pl_dev *dev)
{
	debugfs_remove_recursive(dev->dbg);
	dev->dbg = NULL;
}

/**
 * pl_debugfs_init() - create /sys/kernel/debug/pinlease and its bench_pin
 *
 * A failure leaves debugfs out; the module works without it.
 *
 * Context: Process context (module init); sleeps.
 * Locking: None; runs before any device is bound.
 */
void pl_debugfs_init(void)
{
	pl_dbg_root = debugfs_create_dir(KBUILD_MODNAME, NULL);
	if (IS_ERR(pl_dbg_root)) {
		pl_dbg_root = NULL;
		return;
	}
	pl_bench_debugfs_init(pl_dbg_root);
}

/**
 * pl_debugfs_exit() - remove /sys/kernel/debug/pinlease
 *
 * Context: Process context (module exit); sleeps.
 * Locking: None; runs after every device is removed.
 */
void pl_debugfs_exit(void)
{
	debugfs_remove_recursive(pl_dbg_root);
}
