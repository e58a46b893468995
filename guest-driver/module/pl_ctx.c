// SPDX-License-Identifier: GPL-2.0
/*
 * pinlease: the two lifetimes of a device context.
 *
 * The hardware lifetime runs from CREATE_CONTEXT (pl_ctx_create(), the
 * device fd's open) to CLOSE_CONTEXT and the unpin of every MR
 * (pl_ctx_close(), the device fd's release), or to a device reset or
 * removal (pl_ctx_kill()). The object lifetime ends when the last fd
 * holding a reference (device fd, event channels, exports) is gone: a work
 * item then sends RELEASE_CONTEXT and frees the context after an RCU grace
 * period, since the event path finds contexts under rcu_read_lock().
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/string.h>

#include "pinlease.h"
#include "pinlease_compat.h"

static void pl_ctx_free_work(struct work_struct *work)
{
	struct pl_ctx *ctx = container_of(work, struct pl_ctx, free_work);
	struct pl_dev *dev = ctx->dev;
	int err;

	/* still in the table meanwhile: debugfs shows it closed, 0 refs */
	pl_fault_release_delay(dev, ctx->handle);

	/* out of the table first: the device may reuse the slot at once */
	mutex_lock(&dev->lock);
	xa_cmpxchg(&dev->ctxs, (u32)ctx->handle, ctx, NULL, 0);
	mutex_unlock(&dev->lock);

	if (!READ_ONCE(ctx->dead)) {
		err = pl_submit(dev, PL_OP_RELEASE_CONTEXT, ctx->handle,
				NULL, 0, NULL, 0, NULL, 0);
		if (err && err != -ENODEV)
			pr_warn("%s: RELEASE_CONTEXT %#llx: %d\n", dev->name,
				ctx->handle, err);
	}
	WARN_ON(!xa_empty(&ctx->mrs));
	xa_destroy(&ctx->mrs);
	WARN_ON(!xa_empty(&ctx->leases));
	xa_destroy(&ctx->leases);
	kfree_rcu(ctx, rcu);
	pl_dev_put(dev);
}

static void pl_ctx_release(struct kref *kref)
{
	struct pl_ctx *ctx = container_of(kref, struct pl_ctx, kref);

	/* may be the event work or any fd's release: never block here */
	queue_work(pl_wq, &ctx->free_work);
}

/**
 * pl_ctx_put() - drop a reference to a context
 * @ctx: the context
 *
 * The last reference queues the context's release on pl_wq:
 * RELEASE_CONTEXT to the device (unless the context is dead), then the
 * context is freed after an RCU grace period and its device reference
 * dropped.
 *
 * Context: Any context that may queue work, atomic included.
 * Locking: None needed; takes none and never sleeps (the release is a
 * work item, which takes dev->lock).
 */
void pl_ctx_put(struct pl_ctx *ctx)
{
	kref_put(&ctx->kref, pl_ctx_release);
}

/**
 * pl_ctx_lookup() - find a live context of a device by its handle
 * @dev: the device
 * @handle: the context handle the device gave out
 *
 * Context: Any context.
 * Locking: Takes rcu_read_lock() around the lookup; the caller holds no
 * lock of the module's. Never sleeps.
 * Return: a reference to the context (drop it with pl_ctx_put()), or NULL
 * when @dev has no context @handle or its last reference is going.
 */
struct pl_ctx *pl_ctx_lookup(struct pl_dev *dev, u64 handle)
{
	struct pl_ctx *ctx;

	rcu_read_lock();
	ctx = xa_load(&dev->ctxs, (u32)handle);
	if (ctx && (ctx->handle != handle || !kref_get_unless_zero(&ctx->kref)))
		ctx = NULL;
	rcu_read_unlock();
	return ctx;
}

/**
 * pl_ctx_state() - the context's state, as debugfs and fdinfo name it
 * @ctx: the context
 *
 * Context: Any context.
 * Locking: None; reads the flags with READ_ONCE(), so the answer may be
 * stale by the time it is printed.
 * Return: "removed", "reset", "closed" or "open".
 */
const char *pl_ctx_state(const struct pl_ctx *ctx)
{
	if (READ_ONCE(ctx->dead))
		return READ_ONCE(ctx->dev->dead) ? "removed" : "reset";
	return READ_ONCE(ctx->closed) ? "closed" : "open";
}

/**
 * pl_ctx_err() - the error an ioctl of a dead context answers
 * @ctx: the context
 *
 * The context died with a device reset (-EIO, as uverbs answers for a
 * disassociated context) or with the device's removal (-ENODEV). -ESTALE
 * stays the device's word for one destroyed object.
 *
 * Context: Any context.
 * Locking: None needed; a caller that must not race with pl_ctx_kill()
 * holds ctx->mr_lock, under which ctx->dead is set.
 * Return: 0 while the context lives, else -EIO or -ENODEV.
 */
int pl_ctx_err(struct pl_ctx *ctx)
{
	if (!READ_ONCE(ctx->dead))
		return 0;
	return READ_ONCE(ctx->dev->dead) ? -ENODEV : -EIO;
}

/**
 * pl_ctx_create() - a new context of a device, created on the device
 * @dev: the device (misc_open() keeps it registered meanwhile)
 *
 * Sends CREATE_CONTEXT with the caller's pid and comm and enters the
 * context in dev->ctxs. The context starts with one reference, the
 * device fd's, and holds one on @dev.
 *
 * Context: Process context; sleeps (allocation, the device request).
 * Locking: The caller holds no lock of the module's. Takes dev->lock
 * twice, never across the device request.
 * Return: the context, or ERR_PTR(): -ENOMEM, -ENODEV (device removed),
 * -EIO (device reset while creating), or the device's answer.
 */
struct pl_ctx *pl_ctx_create(struct pl_dev *dev)
{
	struct pl_create_context_req req = {};
	struct pl_handle_resp resp;
	struct pl_ctx *ctx;
	int err;

	ctx = kzalloc_obj(*ctx, GFP_KERNEL);
	if (!ctx)
		return ERR_PTR(-ENOMEM);
	kref_init(&ctx->kref);
	mutex_init(&ctx->mr_lock);
	mutex_init(&ctx->dereg_lock);
	xa_init(&ctx->mrs);
	spin_lock_init(&ctx->ev_lock);
	INIT_LIST_HEAD(&ctx->evchs);
	mutex_init(&ctx->lease_lock);
	xa_init_flags(&ctx->leases, XA_FLAGS_ALLOC);
	INIT_WORK(&ctx->free_work, pl_ctx_free_work);
	ctx->pid = task_tgid_vnr(current);
	get_task_comm(ctx->comm, current);

	mutex_lock(&dev->lock);
	if (dev->dead) {
		mutex_unlock(&dev->lock);
		kfree(ctx);
		return ERR_PTR(-ENODEV);
	}
	kref_get(&dev->kref);
	ctx->dev = dev;
	ctx->gen = dev->gen;
	mutex_unlock(&dev->lock);

	req.pid = cpu_to_le32(ctx->pid);
	memcpy(req.comm, ctx->comm, sizeof(req.comm));
	err = pl_submit(dev, PL_OP_CREATE_CONTEXT, 0, &req, sizeof(req), NULL,
			0, &resp, sizeof(resp));
	if (err)
		goto err_free_ctx;
	ctx->handle = le64_to_cpu(resp.handle);

	mutex_lock(&dev->lock);
	if (dev->dead)
		err = -ENODEV;
	else if (dev->gen != ctx->gen)
		err = -EIO;	/* reset in between: the device forgot it */
	else
		err = xa_insert(&dev->ctxs, (u32)ctx->handle, ctx, GFP_KERNEL);
	mutex_unlock(&dev->lock);
	if (err == -EBUSY || err == -ENOMEM) {
		pr_err("%s: context %#llx: cannot track it (%d)\n", dev->name,
		       ctx->handle, err);
		pl_submit(dev, PL_OP_RELEASE_CONTEXT, ctx->handle, NULL, 0,
			  NULL, 0, NULL, 0);
	}
	if (err)
		goto err_free_ctx;
	return ctx;

err_free_ctx:
	kfree(ctx);
	pl_dev_put(dev);
	return ERR_PTR(err);
}

/**
 * pl_ctx_close() - end the hardware lifetime of a context
 * @ctx: the context, whose device fd is being released
 *
 * Sends CLOSE_CONTEXT. When the device refuses it (or its answer is lost)
 * it may still use the MRs, so their pages must not go back to the
 * allocator yet: the device is reset first (it forgets every context,
 * this one included). Then every MR is unpinned and every layout lease
 * removed, and the device fd's reference is dropped; child fds keep the
 * object until they close.
 *
 * Context: Process context; sleeps (device request, reset, unpin).
 * Locking: The caller holds no lock of the module's. Takes dev->lock (in
 * a reset), ctx->mr_lock, ctx->lease_lock and each lease->lock, one after
 * the other.
 */
void pl_ctx_close(struct pl_ctx *ctx)
{
	struct pl_close_context_resp resp;
	int err;

	WRITE_ONCE(ctx->closed, true);
	if (!READ_ONCE(ctx->dead)) {
		/* waits for the device only, never for another fd */
		err = pl_submit(ctx->dev, PL_OP_CLOSE_CONTEXT, ctx->handle,
				NULL, 0, NULL, 0, &resp, sizeof(resp));
		if (err && err != -ENODEV && !READ_ONCE(ctx->dead)) {
			pr_warn("%s: CLOSE_CONTEXT %#llx: %d: resetting the device before unpinning\n",
				ctx->dev->name, ctx->handle, err);
			pl_dev_reset_since(ctx->dev, ctx->gen);
		}
	}
	/* the hardware lifetime is over: no MR is in use any more */
	pl_ctx_unpin_all(ctx);
	/* unpinned first: a breaker waiting on a lease goes on after this */
	pl_ctx_release_leases(ctx);
	pl_ctx_put(ctx);
}

/**
 * pl_ctx_kill() - a device reset or removal ended the context
 * @ctx: the context, which the device has forgotten
 *
 * Marks the context dead, unpins all its MRs and wakes its event channels
 * with EPOLLHUP. Its fds then answer -EIO or -ENODEV (close always works).
 *
 * Context: Process context; sleeps (ctx->mr_lock, unpin).
 * Locking: The caller holds dev->lock and has reset the device (or it
 * is being removed). Takes ctx->mr_lock, then ctx->ev_lock.
 */
void pl_ctx_kill(struct pl_ctx *ctx)
{
	mutex_lock(&ctx->mr_lock);
	WRITE_ONCE(ctx->dead, true);
	mutex_unlock(&ctx->mr_lock);
	pl_ctx_unpin_all(ctx);
	pl_ctx_hangup_evchs(ctx);
}

/**
 * pl_ctx_destroy_child() - DESTROY_CHILD for an event channel or export
 * @ctx: the context owning the child
 * @child: the child's handle (event channel or export)
 *
 * A dead context's device forgot its children: nothing is sent. A failure
 * of a live device is logged.
 *
 * Context: Process context; sleeps (device request).
 * Locking: The caller holds no lock of the module's.
 * Return: 0, or the error of the request.
 */
int pl_ctx_destroy_child(struct pl_ctx *ctx, u64 child)
{
	struct pl_handle_req h = { .handle = cpu_to_le64(child) };
	int err;

	if (READ_ONCE(ctx->dead))
		return 0;
	err = pl_submit(ctx->dev, PL_OP_DESTROY_CHILD, ctx->handle, &h,
			sizeof(h), NULL, 0, NULL, 0);
	if (err && err != -ENODEV && !READ_ONCE(ctx->dead))
		pr_warn("%s: DESTROY_CHILD %#llx of context %#llx: %d\n",
			ctx->dev->name, child, ctx->handle, err);
	return err;
}
