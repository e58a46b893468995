// SPDX-License-Identifier: GPL-2.0
/*
 * pinlease: the auxiliary device "pinlease.rdma.N" added per virtio device
 * and the in-kernel API (pinlease_kapi.h) that pinlease_ib.ko, the
 * ib_device driver bound to it, calls. Nothing here knows ib_core: the
 * device contexts and MRs are the ones the ioctls use, except that the
 * caller pins the pages (ib_umem_get()) and hands over their addresses.
 *
 * The auxiliary device is added once the device answered QUERY_DEVICE,
 * deleted before remove() tears the device down (pinlease_ib.ko's remove
 * then still reaches a live device: DEREG_MR before each unpin), and
 * replaced after each device reset by a work item (a reset kills every
 * context, the kernel's ones too; the old ib_device's objects then only
 * let go, and a new ib_device starts on the new device generation). The
 * replacement cannot run inside the reset: deleting the auxiliary device
 * waits for pinlease_ib.ko's uverbs commands, which may wait for the
 * reset (a request timeout) or start one (CLOSE_CONTEXT refused).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/module.h>
#include <linux/slab.h>
#include <linux/virtio.h>

#include "pinlease.h"
#include "pinlease_compat.h"
#include "pinlease_ib_abi.h"
#include "pinlease_kapi.h"

static void pl_adev_release(struct device *d)
{
	struct pinlease_adev *padev = container_of(d, struct pinlease_adev,
						   adev.dev);

	pl_dev_put(padev->pl);
	kfree(padev);
}

/* Caller holds dev->aux_lock. */
static void pl_aux_add_locked(struct pl_dev *dev)
{
	struct pinlease_adev *padev;
	int err;

	if (dev->aux_gone || dev->adev)
		return;
	padev = kzalloc_obj(*padev, GFP_KERNEL);
	if (!padev) {
		pr_err("%s: no memory for the auxiliary device\n", dev->name);
		return;
	}
	kref_get(&dev->kref);
	padev->pl = dev;
	padev->adev.name = PINLEASE_AUX_DEVICE_NAME;
	padev->adev.id = dev->index;
	padev->adev.dev.parent = &dev->vdev->dev;
	padev->adev.dev.release = pl_adev_release;
	err = auxiliary_device_init(&padev->adev);
	if (err) {
		pr_err("%s: auxiliary_device_init: %d\n", dev->name, err);
		pl_adev_release(&padev->adev.dev);
		return;
	}
	err = auxiliary_device_add(&padev->adev);
	if (err) {
		pr_err("%s: auxiliary_device_add %s.%s.%u: %d\n", dev->name,
		       KBUILD_MODNAME, PINLEASE_AUX_DEVICE_NAME, dev->index,
		       err);
		auxiliary_device_uninit(&padev->adev);	/* releases it */
		return;
	}
	dev->adev = padev;
}

/* Caller holds dev->aux_lock. */
static void pl_aux_del_locked(struct pl_dev *dev)
{
	if (!dev->adev)
		return;
	/* unbinds pinlease_ib.ko: ib_unregister_device(), disassociate */
	auxiliary_device_delete(&dev->adev->adev);
	auxiliary_device_uninit(&dev->adev->adev);
	dev->adev = NULL;
}

static void pl_aux_work(struct work_struct *work)
{
	struct pl_dev *dev = container_of(work, struct pl_dev, aux_work);

	bool live;

	mutex_lock(&dev->aux_lock);
	if (!dev->aux_gone) {
		pl_aux_del_locked(dev);
		/* waits for a reset still re-initialising the device */
		mutex_lock(&dev->lock);
		live = dev->vqs_live && !dev->dead;
		mutex_unlock(&dev->lock);
		if (live)
			pl_aux_add_locked(dev);
	}
	mutex_unlock(&dev->aux_lock);
}

/**
 * pl_aux_init() - prepare a device's auxiliary-device state
 * @dev: the device, in probe, before anything can reset it
 *
 * Context: Process context.
 */
void pl_aux_init(struct pl_dev *dev)
{
	mutex_init(&dev->aux_lock);
	INIT_WORK(&dev->aux_work, pl_aux_work);
}

/**
 * pl_aux_add() - add "pinlease.rdma.N" for a device that is ready
 * @dev: the device; probe has registered its misc device
 *
 * A failure is logged and leaves the device without an RDMA side;
 * /dev/pinleaseN works as before.
 *
 * Context: Process context; sleeps (a bound pinlease_ib.ko's probe runs).
 * Locking: Takes dev->aux_lock; the caller holds none of the module's locks.
 */
void pl_aux_add(struct pl_dev *dev)
{
	mutex_lock(&dev->aux_lock);
	pl_aux_add_locked(dev);
	mutex_unlock(&dev->aux_lock);
}

/**
 * pl_aux_remove() - delete the auxiliary device for good (remove())
 * @dev: the device, still live: pinlease_ib.ko's teardown reaches it
 *
 * Context: Process context; sleeps until pinlease_ib.ko's remove has run
 * (every uverbs command of its ib_device finished, every user context
 * disassociated).
 * Locking: Takes dev->aux_lock; the caller holds none of the module's locks.
 */
void pl_aux_remove(struct pl_dev *dev)
{
	mutex_lock(&dev->aux_lock);
	dev->aux_gone = true;
	pl_aux_del_locked(dev);
	mutex_unlock(&dev->aux_lock);
	cancel_work_sync(&dev->aux_work);
}

/**
 * pl_aux_replace() - after a device reset, give pinlease_ib.ko a new device
 * @dev: the device, just reset
 *
 * Context: Any context that may queue work.
 * Locking: None needed (dev->lock may be held: the work runs later and
 * takes dev->aux_lock, then dev->lock to wait for the reset's end).
 */
void pl_aux_replace(struct pl_dev *dev)
{
	queue_work(pl_wq, &dev->aux_work);
}

/**
 * pinlease_kdev_query() - the device's QUERY_DEVICE answer and identity
 * @padev: the auxiliary device
 * @info: filled in
 *
 * Context: Any context.
 */
void pinlease_kdev_query(struct pinlease_adev *padev,
			 struct pinlease_kdev_info *info)
{
	struct pl_dev *dev = padev->pl;

	info->index = dev->index;
	info->virtio_id = dev->virtio_id;
	info->abi_version = dev->abi_version;
	info->page_size = dev->page_size;
	info->features = dev->features;
	info->max_contexts = dev->max_contexts;
	info->max_mrs = dev->max_mrs;
	info->max_pages_per_mr = pinlease_kdev_max_mr_pages(padev);
	info->max_request_bytes = dev->max_request_bytes;
}
EXPORT_SYMBOL_GPL(pinlease_kdev_query);

/**
 * pinlease_kdev_max_mr_pages() - the most pages one MR may have
 * @padev: the auxiliary device
 *
 * The device's max_pages_per_mr, lowered to what fits in one request
 * (max_request_bytes).
 *
 * Context: Any context.
 * Return: the page count.
 */
u32 pinlease_kdev_max_mr_pages(struct pinlease_adev *padev)
{
	struct pl_dev *dev = padev->pl;
	size_t fixed = sizeof(struct pl_req_hdr) +
		       sizeof(struct pl_reg_mr_req);
	u64 room = dev->max_request_bytes > fixed ?
		   (dev->max_request_bytes - fixed) / sizeof(__le64) : 0;

	return min_t(u64, dev->max_pages_per_mr, room);
}
EXPORT_SYMBOL_GPL(pinlease_kdev_max_mr_pages);

/**
 * pinlease_kctx_create() - a device context for a kernel user
 * @padev: the auxiliary device
 * @ops: the owner's callbacks (struct pinlease_kctx_ops), or NULL
 *
 * CREATE_CONTEXT with the calling task's pid and comm, as an open of
 * /dev/pinleaseN. The context appears in debugfs like any other.
 *
 * Context: Process context; sleeps (the device request).
 * Locking: As pl_ctx_create(); the caller holds none of pinlease.ko's
 * locks.
 * Return: the context, or ERR_PTR(): -ENOMEM, -ENODEV, -EIO, or the
 * device's answer.
 */
struct pl_ctx *pinlease_kctx_create(struct pinlease_adev *padev,
				    const struct pinlease_kctx_ops *ops)
{
	struct pl_ctx *ctx = pl_ctx_create(padev->pl);

	if (!IS_ERR(ctx))
		ctx->kops = ops;
	return ctx;
}
EXPORT_SYMBOL_GPL(pinlease_kctx_create);

/**
 * pinlease_kctx_close() - end a kernel user's context
 * @ctx: the context; not to be used afterwards
 *
 * CLOSE_CONTEXT (a device reset first when refused), then the reference
 * is dropped. Deregister the MRs first to unpin them in order; MRs left
 * are forgotten by the device with the context.
 *
 * Context: Process context; sleeps.
 * Locking: As pl_ctx_close().
 */
void pinlease_kctx_close(struct pl_ctx *ctx)
{
	pl_ctx_close(ctx);
}
EXPORT_SYMBOL_GPL(pinlease_kctx_close);

/**
 * pinlease_kctx_err() - whether a context is still usable
 * @ctx: the context
 *
 * Context: Any context.
 * Return: 0, -EIO (the device was reset) or -ENODEV (removed).
 */
int pinlease_kctx_err(struct pl_ctx *ctx)
{
	return pl_ctx_err(ctx);
}
EXPORT_SYMBOL_GPL(pinlease_kctx_err);

/**
 * pinlease_kctx_handle() - the context's handle on the device
 * @ctx: the context
 *
 * Context: Any context.
 * Return: the handle (as debugfs and the daemon's status show it).
 */
u64 pinlease_kctx_handle(struct pl_ctx *ctx)
{
	return ctx->handle;
}
EXPORT_SYMBOL_GPL(pinlease_kctx_handle);

/**
 * pinlease_kctx_reg_mr() - register pages the caller pinned
 * @ctx: the context
 * @pas: the guest-physical address of each page, in order
 * @npages: entries of @pas (at most pinlease_kdev_max_mr_pages())
 * @first_page_offset: where the MR starts in its first page
 * @length: the MR's length in bytes
 * @access: PL_ACCESS_* the device allows
 * @file: the file range the pages map, or NULL (anonymous, several vmas)
 * @mr_priv: the caller's, for its mr_revoked callback
 * @key: the MR's key, on success
 *
 * REG_MR's "tell the device" half (pl_mr_tell_device()) with a
 * long-term registration. The caller keeps the pages pinned until
 * pinlease_kctx_dereg_mr() returns 0, the context is closed, or the
 * mr_revoked callback names @mr_priv.
 *
 * Context: Process context; sleeps.
 * Locking: The caller holds none of pinlease.ko's locks; takes
 * ctx->mr_lock after the device request.
 * Return: 0, -EINVAL, -E2BIG, -ENOMEM, -EIO / -ENODEV (context dead),
 * -EREMOTEIO (the device registered the MR, may still use the pages and
 * could not be made to let go: leave them pinned), or the device's answer.
 */
int pinlease_kctx_reg_mr(struct pl_ctx *ctx, const u64 *pas, u32 npages,
			 u32 first_page_offset, u64 length, u32 access,
			 const struct pinlease_kmr_file *file, void *mr_priv,
			 u64 *key)
{
	struct pl_dev *dev = ctx->dev;
	struct pl_mr *mr;
	int err;

	if (!npages || !length || first_page_offset >= PAGE_SIZE ||
	    !access || (access & ~PL_ACCESS_ALL) ||
	    first_page_offset + length > (u64)npages * PAGE_SIZE)
		return -EINVAL;
	if (npages > dev->max_pages_per_mr ||
	    sizeof(struct pl_req_hdr) + sizeof(struct pl_reg_mr_req) +
	    (u64)npages * sizeof(__le64) > dev->max_request_bytes)
		return -E2BIG;
	err = pl_ctx_err(ctx);
	if (err)
		return err;

	mr = kzalloc_obj(*mr, GFP_KERNEL);
	if (!mr)
		return -ENOMEM;
	mr->kernel = true;
	mr->access = access;
	mr->npages = npages;
	mr->length = length;
	mr->reg_flags = PL_REG_LONGTERM;
	mr->kpriv = mr_priv;
	if (file) {
		mr->reg_flags |= PL_REG_HAS_FILE;
		mr->file_dev = file->dev;
		mr->file_ino = file->ino;
		mr->file_gen = file->generation;
		mr->file_offset = file->offset;
	}
	err = pl_mr_tell_device(ctx, mr, first_page_offset, pas);
	if (err)
		goto err_free_mr;
	err = pl_ctx_add_mr(ctx, mr);
	if (err == -EREMOTEIO)
		return err;	/* mr leaked on purpose: see pl_ctx_add_mr() */
	if (err)
		goto err_free_mr;
	*key = mr->key;
	return 0;

err_free_mr:
	kfree(mr);
	return err;
}
EXPORT_SYMBOL_GPL(pinlease_kctx_reg_mr);

/**
 * pinlease_kctx_dereg_mr() - deregister an MR; its pages may go after 0
 * @ctx: the context
 * @key: the MR's key
 *
 * DEREG_MR at the device. A dead context's device forgot the MR: nothing
 * is sent. When the device refuses (or its answer is lost) it may still
 * use the pages, so the device is reset (as CLOSE_CONTEXT refused does)
 * and the context is dead after it.
 *
 * Context: Process context; sleeps (the device request, maybe a reset).
 * Not interrupted by signals: uverbs' teardown must not fail.
 * Locking: The caller holds none of pinlease.ko's locks. Takes
 * ctx->dereg_lock and ctx->mr_lock (pl_mr_dereg()), dev->lock in a
 * reset.
 * Return: 0 when the device no longer touches the MR's pages (the caller
 * unpins them), else the error of a failed reset: the pages must stay
 * pinned.
 */
int pinlease_kctx_dereg_mr(struct pl_ctx *ctx, u64 key)
{
	int err;

	if (pl_ctx_err(ctx))
		return 0;
	err = pl_mr_dereg(ctx, key, false);
	if (!err || pl_ctx_err(ctx))
		return 0;
	pr_warn("%s: DEREG_MR %#llx of context %#llx: %d: resetting the device before unpinning\n",
		ctx->dev->name, key, ctx->handle, err);
	err = pl_dev_reset_since(ctx->dev, ctx->gen);
	if (pl_ctx_err(ctx))
		return 0;
	return err ? err : -EIO;
}
EXPORT_SYMBOL_GPL(pinlease_kctx_dereg_mr);

/**
 * pinlease_kctx_dma() - WRITE or READ between two MRs, by the device
 * @ctx: the context owning @local_key
 * @op: PL_OP_WRITE (local -> remote) or PL_OP_READ (remote -> local)
 * @local_key: an MR of @ctx
 * @local_offset: byte offset in it
 * @remote_key: any context's MR
 * @remote_offset: byte offset in it
 * @length: bytes
 *
 * The device's own WRITE/READ (docs/abi.md 5.11), as PINLEASE_IOC_DMA
 * sends it: the device checks the keys, the owners and the access flags.
 *
 * Context: Process context; sleeps (the device request).
 * Locking: The caller holds none of pinlease.ko's locks.
 * Return: 0, -EINVAL (@op), -EIO / -ENODEV (context dead), or the
 * device's answer (-ENOENT, -ESTALE, -EPERM, -EACCES, -ERANGE, ...).
 */
int pinlease_kctx_dma(struct pl_ctx *ctx, u16 op, u64 local_key,
		      u64 local_offset, u64 remote_key, u64 remote_offset,
		      u64 length)
{
	struct pl_dma_req req = {
		.local_key = cpu_to_le64(local_key),
		.local_offset = cpu_to_le64(local_offset),
		.remote_key = cpu_to_le64(remote_key),
		.remote_offset = cpu_to_le64(remote_offset),
		.length = cpu_to_le64(length),
	};
	int err;

	if (op != PL_OP_WRITE && op != PL_OP_READ)
		return -EINVAL;
	err = pl_ctx_err(ctx);
	if (err)
		return err;
	return pl_submit(ctx->dev, op, ctx->handle, &req, sizeof(req), NULL,
			 0, NULL, 0);
}
EXPORT_SYMBOL_GPL(pinlease_kctx_dma);

/**
 * pinlease_kctx_atomic() - COMPARE_SWAP or FETCH_ADD on an MR's word
 * @ctx: the context the request goes on
 * @op: PL_OP_COMPARE_SWAP or PL_OP_FETCH_ADD
 * @key: any context's MR with PL_ACCESS_ATOMIC (an rkey's MR)
 * @offset: the 8-byte aligned word's byte offset in it
 * @operand: COMPARE_SWAP: the expected value; FETCH_ADD: the addend
 * @swap: COMPARE_SWAP: the new value; FETCH_ADD: 0
 * @original: the word's value before the operation, on success
 *
 * The device's own atomics (docs/abi.md), as PINLEASE_IOC_DMA sends them:
 * the device checks the key, the access and the alignment.
 *
 * Context: Process context; sleeps (the device request).
 * Locking: The caller holds none of pinlease.ko's locks.
 * Return: 0, -EINVAL (@op), -EIO / -ENODEV (context dead), or the
 * device's answer.
 */
int pinlease_kctx_atomic(struct pl_ctx *ctx, u16 op, u64 key, u64 offset,
			 u64 operand, u64 swap, u64 *original)
{
	struct pl_atomic_req req = {
		.key = cpu_to_le64(key),
		.offset = cpu_to_le64(offset),
		.operand = cpu_to_le64(operand),
		.swap = cpu_to_le64(swap),
	};
	struct pl_atomic_resp resp;
	int err;

	if (op != PL_OP_COMPARE_SWAP && op != PL_OP_FETCH_ADD)
		return -EINVAL;
	err = pl_ctx_err(ctx);
	if (err)
		return err;
	err = pl_submit(ctx->dev, op, ctx->handle, &req, sizeof(req), NULL,
			0, &resp, sizeof(resp));
	if (!err)
		*original = le64_to_cpu(resp.original);
	return err;
}
EXPORT_SYMBOL_GPL(pinlease_kctx_atomic);

/**
 * pinlease_kctx_lease_take() - a layout lease held by a kernel context
 * @ctx: the holder
 * @file: the data file (a reference of the caller's; the lease opens its
 *	own struct file on the inode)
 * @policy: PL_POLICY_*
 * @start: the range's first byte
 * @length: the range's bytes; 0: to the end of the file
 * @handle: the device's lease handle, on success
 *
 * PINLEASE_IOC_LEASE_TAKE for a kernel user: the lease is in the device's
 * table and in debugfs like any other, with the caller's pid. It ends with
 * pinlease_kctx_lease_release() or pinlease_kctx_close().
 *
 * Context: Process context; sleeps.
 * Locking: The caller holds none of pinlease.ko's locks.
 * Return: 0, -EIO / -ENODEV (context dead), or as PINLEASE_IOC_LEASE_TAKE
 * (-EINVAL, -ENOMEM, -EAGAIN, vfs_setlease()'s error, the device's).
 */
int pinlease_kctx_lease_take(struct pl_ctx *ctx, struct file *file,
			     u32 policy, u64 start, u64 length, u64 *handle)
{
	int err = pl_ctx_err(ctx);

	if (err)
		return err;
	return pl_lease_take(ctx, &file->f_path, policy, start, length,
			     handle);
}
EXPORT_SYMBOL_GPL(pinlease_kctx_lease_take);

/**
 * pinlease_kctx_lease_release() - end a kernel context's lease
 * @ctx: the holder, live or dead
 * @handle: the lease's handle
 *
 * A breaker waiting on the lease goes on.
 *
 * Context: Process context; sleeps.
 * Locking: The caller holds none of pinlease.ko's locks.
 * Return: 0, -ENOENT (no such lease), or the device's answer (the kernel
 * lease is gone all the same).
 */
int pinlease_kctx_lease_release(struct pl_ctx *ctx, u64 handle)
{
	return pl_lease_release(ctx, handle);
}
EXPORT_SYMBOL_GPL(pinlease_kctx_lease_release);

/**
 * pinlease_kctx_lease_active() - whether a kernel context's lease is unbroken
 * @ctx: the holder
 * @handle: the lease's handle
 *
 * For a caller that took the lease before pinning and registering: a
 * break meanwhile (state breaking, revoked or lost) means the file range
 * changed under the registration.
 *
 * Context: Process context; sleeps.
 * Locking: The caller holds none of pinlease.ko's locks.
 * Return: true when the lease is held and ACTIVE.
 */
bool pinlease_kctx_lease_active(struct pl_ctx *ctx, u64 handle)
{
	return pl_lease_is_active(ctx, handle);
}
EXPORT_SYMBOL_GPL(pinlease_kctx_lease_active);

/**
 * pinlease_lease_policy_name() - a PL_POLICY_* value's name
 * @policy: the value
 *
 * The names debugfs, fdinfo and the daemon's status use: "revoke",
 * "wait", "timeout".
 *
 * Context: Any context.
 * Return: the name, or NULL for a value that is no policy.
 */
const char *pinlease_lease_policy_name(u32 policy)
{
	return pl_policy_name(policy);
}
EXPORT_SYMBOL_GPL(pinlease_lease_policy_name);
