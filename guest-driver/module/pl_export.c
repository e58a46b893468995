// SPDX-License-Identifier: GPL-2.0
/*
 * pinlease: MR sharing between contexts of one device. EXPORT_MR gives an
 * export fd holding one reference on the device's export of an MR;
 * IMPORT_MR, given such an fd, registers an MR of the importing context
 * that names the exported one (it holds no pins of its own).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/anon_inodes.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/module.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#include "pinlease.h"
#include "pinlease_compat.h"

/* An export fd: one reference on the device's export of an MR. */
struct pl_export {
	struct pl_ctx *ctx;		/* holds a ctx reference */
	u64 export;
	u64 mr_key;
};

static int pl_export_release(struct inode *inode, struct file *file)
{
	struct pl_export *exp = file->private_data;
	struct pl_ctx *ctx = exp->ctx;

	pl_ctx_destroy_child(ctx, exp->export);
	spin_lock(&ctx->ev_lock);
	ctx->nr_exports--;
	spin_unlock(&ctx->ev_lock);
	kfree(exp);
	pl_ctx_put(ctx);
	return 0;
}

static void pl_export_show_fdinfo(struct seq_file *m, struct file *file)
{
	struct pl_export *exp = file->private_data;

	seq_printf(m, "device:\t%s\nctx:\t%#llx\nexport:\t%#llx\nmr:\t%#llx\n",
		   exp->ctx->dev->name, exp->ctx->handle, exp->export,
		   exp->mr_key);
}

static const struct file_operations pl_export_fops = {
	.owner = THIS_MODULE,
	.release = pl_export_release,
	.show_fdinfo = pl_export_show_fdinfo,
};

/**
 * pl_ioctl_export_mr() - PINLEASE_IOC_EXPORT_MR: an export fd for an MR
 * @ctx: the device fd's context
 * @argp: the MR's key (u64)
 *
 * The fd holds a context reference until it is closed; closing it sends
 * DESTROY_CHILD for the export.
 *
 * Context: Process context, the ioctl's caller; sleeps.
 * Locking: The caller holds no lock of the module's. Takes ctx->ev_lock
 * (nr_exports), never across the device request.
 * Return: the new fd (O_RDWR | O_CLOEXEC), -EFAULT, -ENOMEM, the device's
 * answer, or anon_inode_getfd()'s error.
 */
long pl_ioctl_export_mr(struct pl_ctx *ctx, void __user *argp)
{
	struct pl_export_mr_resp resp;
	struct pl_handle_req h;
	struct pl_export *exp;
	u64 key;
	int err, fd;

	if (get_user(key, (u64 __user *)argp))
		return -EFAULT;
	exp = kzalloc_obj(*exp, GFP_KERNEL);
	if (!exp)
		return -ENOMEM;
	h.handle = cpu_to_le64(key);
	err = pl_submit(ctx->dev, PL_OP_EXPORT_MR, ctx->handle, &h, sizeof(h),
			NULL, 0, &resp, sizeof(resp));
	if (err) {
		kfree(exp);
		return err;
	}
	exp->export = le64_to_cpu(resp.export);
	exp->mr_key = key;
	kref_get(&ctx->kref);
	exp->ctx = ctx;

	fd = anon_inode_getfd("[pinlease-export]", &pl_export_fops, exp,
			      O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		pl_ctx_destroy_child(ctx, exp->export);
		kfree(exp);
		pl_ctx_put(ctx);
		return fd;
	}
	spin_lock(&ctx->ev_lock);
	ctx->nr_exports++;
	spin_unlock(&ctx->ev_lock);
	return fd;
}

/**
 * pl_ioctl_import_mr() - PINLEASE_IOC_IMPORT_MR: an MR from an export fd
 * @ctx: the device fd's (importing) context
 * @argp: struct pinlease_import_mr, in and out
 *
 * The export fd must be one of this module's, of the same device.
 *
 * Context: Process context, the ioctl's caller; sleeps.
 * Locking: The caller holds no lock of the module's. Takes ctx->mr_lock
 * (pl_ctx_add_mr()), never across the device request.
 * Return: 0, -EFAULT, -EBADF (no such fd), -EINVAL (not an export fd),
 * -EXDEV (another device's), -ENOMEM, pl_ctx_add_mr()'s error, or the
 * device's answer.
 */
long pl_ioctl_import_mr(struct pl_ctx *ctx, void __user *argp)
{
	struct pinlease_import_mr a;
	struct pl_import_mr_req req = {};
	struct pl_reg_mr_resp resp;
	struct pl_export *exp;
	struct pl_mr *mr;
	struct fd f;
	int err;

	if (copy_from_user(&a, argp, sizeof(a)))
		return -EFAULT;
	f = fdget(a.export_fd);
	if (!fd_file(f))
		return -EBADF;
	if (fd_file(f)->f_op != &pl_export_fops) {
		err = -EINVAL;
		goto out_fdput;
	}
	exp = fd_file(f)->private_data;
	if (exp->ctx->dev != ctx->dev) {
		err = -EXDEV;
		goto out_fdput;
	}
	mr = kzalloc_obj(*mr, GFP_KERNEL);
	if (!mr) {
		err = -ENOMEM;
		goto out_fdput;
	}
	req.export = cpu_to_le64(exp->export);
	req.access = cpu_to_le32(a.access);
	err = pl_submit(ctx->dev, PL_OP_IMPORT_MR, ctx->handle, &req,
			sizeof(req), NULL, 0, &resp, sizeof(resp));
	if (err)
		goto err_free_mr;
	mr->key = le64_to_cpu(resp.key);
	mr->access = a.access;
	mr->imported = true;
	mr->import_export = exp->export;
	err = pl_ctx_add_mr(ctx, mr);
	if (err)
		goto err_free_mr;
	a.key = mr->key;
	err = copy_to_user(argp, &a, sizeof(a)) ? -EFAULT : 0;
	goto out_fdput;

err_free_mr:
	kfree(mr);
out_fdput:
	fdput(f);
	return err;
}
