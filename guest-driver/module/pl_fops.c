// SPDX-License-Identifier: GPL-2.0
/*
 * pinlease: /dev/pinleaseN, the device fd: open and release (a device
 * context each), the ioctl dispatch and fdinfo. Each ioctl lives with its
 * concern: MRs in pl_mr.c, MR sharing in pl_export.c, event channels in
 * pl_evch.c, data operations in pl_dma.c, layout leases in pl_lease.c.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/fs.h>
#include <linux/module.h>
#include <linux/seq_file.h>
#include <linux/uaccess.h>

#include "pinlease.h"

static int pl_open(struct inode *inode, struct file *file)
{
	/* misc_open() holds misc_mtx: remove() cannot have deregistered us */
	struct pl_dev *dev = container_of(file->private_data, struct pl_dev,
					  misc);
	struct pl_ctx *ctx;

	ctx = pl_ctx_create(dev);
	if (IS_ERR(ctx))
		return PTR_ERR(ctx);
	file->private_data = ctx;
	stream_open(inode, file);
	return 0;
}

static int pl_release(struct inode *inode, struct file *file)
{
	pl_ctx_close(file->private_data);
	return 0;
}

static long pl_ioctl_query(struct pl_ctx *ctx, void __user *argp)
{
	struct pl_dev *dev = ctx->dev;
	struct pinlease_query q = {
		.abi_version = dev->abi_version,
		.page_size = dev->page_size,
		.features = dev->features,
		.max_contexts = dev->max_contexts,
		.max_mrs = dev->max_mrs,
		.max_pages_per_mr = dev->max_pages_per_mr,
		.max_leases = dev->max_leases,
		.max_children_per_context = dev->max_children_per_context,
		.virtio_id = dev->virtio_id,
		.ctx = ctx->handle,
	};

	return copy_to_user(argp, &q, sizeof(q)) ? -EFAULT : 0;
}

static long pl_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct pl_ctx *ctx = file->private_data;
	void __user *argp = (void __user *)arg;
	int err;

	/* a dead context may still let go of a lease a breaker waits on */
	if (cmd == PINLEASE_IOC_LEASE_RELEASE)
		return pl_ioctl_lease_release(ctx, argp);
	err = pl_ctx_err(ctx);
	if (err)
		return err;

	switch (cmd) {
	case PINLEASE_IOC_QUERY:
		return pl_ioctl_query(ctx, argp);
	case PINLEASE_IOC_REG_MR:
		return pl_ioctl_reg_mr(ctx, argp);
	case PINLEASE_IOC_DEREG_MR:
		return pl_ioctl_dereg_mr(ctx, argp);
	case PINLEASE_IOC_DMA:
		return pl_ioctl_dma(ctx, argp);
	case PINLEASE_IOC_EVENT_FD:
		return pl_ioctl_event_fd(ctx);
	case PINLEASE_IOC_EXPORT_MR:
		return pl_ioctl_export_mr(ctx, argp);
	case PINLEASE_IOC_IMPORT_MR:
		return pl_ioctl_import_mr(ctx, argp);
	case PINLEASE_IOC_LEASE_TAKE:
		return pl_ioctl_lease_take(ctx, argp);
	default:
		return -ENOTTY;
	}
}

static void pl_show_fdinfo(struct seq_file *m, struct file *file)
{
	struct pl_ctx *ctx = file->private_data;
	struct pl_lease *l;
	struct pl_mr *mr;
	unsigned long idx;
	unsigned int n = 0;

	seq_printf(m, "device:\t%s\nctx:\t%#llx\nstate:\t%s\n", ctx->dev->name,
		   ctx->handle, pl_ctx_state(ctx));
	mutex_lock(&ctx->mr_lock);
	xa_for_each(&ctx->mrs, idx, mr)
		n++;
	seq_printf(m, "mrs:\t%u\n", n);
	xa_for_each(&ctx->mrs, idx, mr)
		pl_mr_show(m, mr);
	mutex_unlock(&ctx->mr_lock);

	n = 0;
	mutex_lock(&ctx->lease_lock);
	xa_for_each(&ctx->leases, idx, l)
		n++;
	seq_printf(m, "leases:\t%u\n", n);
	xa_for_each(&ctx->leases, idx, l)
		pl_lease_show(m, l);
	mutex_unlock(&ctx->lease_lock);
}

/*
 * The device fd's operations, for the misc device of each bound device
 * (pl_virtio.c registers it).
 */
const struct file_operations pl_dev_fops = {
	.owner = THIS_MODULE,
	.open = pl_open,
	.release = pl_release,
	.unlocked_ioctl = pl_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.show_fdinfo = pl_show_fdinfo,
};
