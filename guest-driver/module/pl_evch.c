// SPDX-License-Identifier: GPL-2.0
/*
 * pinlease: event-channel fds (PINLEASE_IOC_EVENT_FD): the events of one
 * context in a bounded queue per fd, read(2) and poll(2).
 *
 * The event work routes each event to every event channel of its context
 * under ctx->ev_lock (a spinlock: it never sleeps there). A full queue
 * drops the event and counts it; the next event queued carries the count
 * (PL_EVENT_F_DROPPED). A dead context's channels read EOF and poll
 * EPOLLHUP once their queue is empty.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/anon_inodes.h>
#include <linux/fs.h>
#include <linux/module.h>
#include <linux/poll.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#include "pinlease.h"
#include "pinlease_compat.h"

/* An event-channel fd: events of one context, bounded queue. */
struct pl_evch {
	struct pl_ctx *ctx;		/* holds a ctx reference */
	u64 child;
	struct list_head node;		/* ctx->evchs, under ctx->ev_lock */
	wait_queue_head_t wq;
	unsigned int head, count;	/* under ctx->ev_lock */
	u32 dropped;			/* not yet reported to the reader */
	u64 total_dropped;
	struct pl_event ring[PL_EVCH_DEPTH];
};

/**
 * pl_ctx_route_event() - queue an event on every event channel of a context
 * @ctx: the context (the caller holds a reference)
 * @ev: the event, as the device wrote it
 *
 * Context: Any context that may take a spinlock; never sleeps.
 * Locking: Takes ctx->ev_lock; the caller may hold rcu_read_lock().
 */
void pl_ctx_route_event(struct pl_ctx *ctx, const struct pl_event *ev)
{
	struct pl_evch *evch;
	struct pl_event *slot;
	u32 dropped;

	spin_lock(&ctx->ev_lock);
	list_for_each_entry(evch, &ctx->evchs, node) {
		if (evch->count == PL_EVCH_DEPTH) {
			evch->dropped++;
			evch->total_dropped++;
			continue;
		}
		slot = &evch->ring[(evch->head + evch->count) % PL_EVCH_DEPTH];
		*slot = *ev;
		if (evch->dropped) {
			dropped = le32_to_cpu(slot->dropped) + evch->dropped;
			slot->flags |= cpu_to_le16(PL_EVENT_F_DROPPED);
			slot->dropped = cpu_to_le32(dropped);
			evch->dropped = 0;
		}
		evch->count++;
		wake_up_interruptible_poll(&evch->wq, EPOLLIN | EPOLLRDNORM);
	}
	spin_unlock(&ctx->ev_lock);
}

/**
 * pl_ctx_hangup_evchs() - wake every event channel of a dead context
 * @ctx: the context, already marked dead
 *
 * Readers and pollers wake, see ctx->dead and report EOF / EPOLLHUP.
 *
 * Context: Any context that may take a spinlock; never sleeps.
 * Locking: Takes ctx->ev_lock; the caller may hold dev->lock, not
 * ctx->ev_lock.
 */
void pl_ctx_hangup_evchs(struct pl_ctx *ctx)
{
	struct pl_evch *evch;

	spin_lock(&ctx->ev_lock);
	list_for_each_entry(evch, &ctx->evchs, node)
		wake_up_interruptible_poll(&evch->wq, EPOLLHUP);
	spin_unlock(&ctx->ev_lock);
}

static ssize_t pl_evch_read(struct file *file, char __user *buf,
			    size_t count, loff_t *ppos)
{
	struct pl_evch *evch = file->private_data;
	struct pl_ctx *ctx = evch->ctx;
	struct pl_event ev[8];
	unsigned int n, i;
	int err;

	if (count < sizeof(struct pl_event))
		return -EINVAL;
	for (;;) {
		spin_lock(&ctx->ev_lock);
		if (evch->count)
			break;
		spin_unlock(&ctx->ev_lock);
		if (READ_ONCE(ctx->dead))
			return 0;
		if (file->f_flags & O_NONBLOCK)
			return -EAGAIN;
		err = wait_event_interruptible(evch->wq, READ_ONCE(evch->count) ||
					       READ_ONCE(ctx->dead));
		if (err)
			return err;
	}
	n = min_t(unsigned int, evch->count, ARRAY_SIZE(ev));
	n = min_t(size_t, n, count / sizeof(struct pl_event));
	for (i = 0; i < n; i++) {
		ev[i] = evch->ring[evch->head];
		evch->head = (evch->head + 1) % PL_EVCH_DEPTH;
		evch->count--;
	}
	spin_unlock(&ctx->ev_lock);

	/* a fault loses the events taken: as a reader that stopped reading */
	if (copy_to_user(buf, ev, n * sizeof(struct pl_event)))
		return -EFAULT;
	return n * sizeof(struct pl_event);
}

static __poll_t pl_evch_poll(struct file *file, poll_table *wait)
{
	struct pl_evch *evch = file->private_data;
	__poll_t mask = 0;

	poll_wait(file, &evch->wq, wait);
	if (READ_ONCE(evch->count))
		mask |= EPOLLIN | EPOLLRDNORM;
	if (READ_ONCE(evch->ctx->dead))
		mask |= EPOLLHUP;
	return mask;
}

/* Unlinks, destroys on the device and frees a channel; drops its ref. */
static void pl_evch_destroy(struct pl_evch *evch)
{
	struct pl_ctx *ctx = evch->ctx;

	spin_lock(&ctx->ev_lock);
	list_del(&evch->node);
	spin_unlock(&ctx->ev_lock);
	pl_ctx_destroy_child(ctx, evch->child);
	kvfree(evch);
	pl_ctx_put(ctx);
}

static int pl_evch_release(struct inode *inode, struct file *file)
{
	pl_evch_destroy(file->private_data);
	return 0;
}

static void pl_evch_show_fdinfo(struct seq_file *m, struct file *file)
{
	struct pl_evch *evch = file->private_data;

	seq_printf(m, "device:\t%s\nctx:\t%#llx\nchild:\t%#llx\nqueued:\t%u\ndropped:\t%llu\n",
		   evch->ctx->dev->name, evch->ctx->handle, evch->child,
		   READ_ONCE(evch->count), READ_ONCE(evch->total_dropped));
}

static const struct file_operations pl_evch_fops = {
	.owner = THIS_MODULE,
	.read = pl_evch_read,
	.poll = pl_evch_poll,
	.release = pl_evch_release,
	.show_fdinfo = pl_evch_show_fdinfo,
};

/**
 * pl_ioctl_event_fd() - PINLEASE_IOC_EVENT_FD: a new event-channel fd
 * @ctx: the device fd's context
 *
 * Creates the event-channel child on the device and an fd for it; the fd
 * holds a context reference until it is closed.
 *
 * Context: Process context, the ioctl's caller; sleeps.
 * Locking: The caller holds no lock of the module's. Takes ctx->ev_lock,
 * never across the device request.
 * Return: the new fd (O_RDONLY | O_CLOEXEC), -ENOMEM, the device's answer,
 * or anon_inode_getfd()'s error.
 */
long pl_ioctl_event_fd(struct pl_ctx *ctx)
{
	struct pl_create_child_req req = {
		.kind = cpu_to_le32(PL_CHILD_EVENT_CHANNEL),
	};
	struct pl_handle_resp resp;
	struct pl_evch *evch;
	int err, fd;

	evch = kvzalloc_obj(*evch, GFP_KERNEL);
	if (!evch)
		return -ENOMEM;
	init_waitqueue_head(&evch->wq);
	err = pl_submit(ctx->dev, PL_OP_CREATE_CHILD, ctx->handle, &req,
			sizeof(req), NULL, 0, &resp, sizeof(resp));
	if (err) {
		kvfree(evch);
		return err;
	}
	evch->child = le64_to_cpu(resp.handle);
	kref_get(&ctx->kref);
	evch->ctx = ctx;

	spin_lock(&ctx->ev_lock);
	list_add_tail(&evch->node, &ctx->evchs);
	spin_unlock(&ctx->ev_lock);

	fd = anon_inode_getfd("[pinlease-events]", &pl_evch_fops, evch,
			      O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		pl_evch_destroy(evch);
	return fd;
}
