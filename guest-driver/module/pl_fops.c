// SPDX-License-Identifier: GPL-2.0
/*
 * pinlease: /dev/pinleaseN, its ioctls, the child fds (event channel, MR
 * export) and the two lifetimes of a device context.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/anon_inodes.h>
#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/overflow.h>
#include <linux/poll.h>
#include <linux/sched/signal.h>
#include <linux/scatterlist.h>
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

/* An export fd: one reference on the device's export of an MR. */
struct pl_export {
	struct pl_ctx *ctx;		/* holds a ctx reference */
	u64 export;
	u64 mr_key;
};

static const struct file_operations pl_evch_fops;
static const struct file_operations pl_export_fops;

/* ---- context lifetime ---------------------------------------------------- */

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

void pl_ctx_put(struct pl_ctx *ctx)
{
	kref_put(&ctx->kref, pl_ctx_release);
}

/* A reference to the live context @handle of @dev, or NULL. */
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

const char *pl_ctx_state(const struct pl_ctx *ctx)
{
	if (READ_ONCE(ctx->dead))
		return READ_ONCE(ctx->dev->dead) ? "removed" : "reset";
	return READ_ONCE(ctx->closed) ? "closed" : "open";
}

static int pl_ctx_err(struct pl_ctx *ctx)
{
	if (!READ_ONCE(ctx->dead))
		return 0;
	/*
	 * The context died with a device reset (-EIO, as uverbs answers for a
	 * disassociated context) or with the device's removal (-ENODEV).
	 * -ESTALE stays the device's word for one destroyed object.
	 */
	return READ_ONCE(ctx->dev->dead) ? -ENODEV : -EIO;
}

void pl_mr_unpin(struct pl_mr *mr)
{
	if (!mr->pages)
		return;
	unpin_user_pages_dirty_lock(mr->pages, mr->npages,
				    !(mr->pin_flags & PINLEASE_PIN_READONLY));
	kvfree(mr->pages);
	mr->pages = NULL;
}

static void pl_mr_free(struct pl_mr *mr)
{
	pl_mr_unpin(mr);
	kfree(mr);
}

/* The device no longer touches any MR of @ctx: unpin and forget them all. */
static void pl_ctx_unpin_all(struct pl_ctx *ctx)
{
	struct pl_mr *mr;
	unsigned long idx;

	mutex_lock(&ctx->mr_lock);
	xa_for_each(&ctx->mrs, idx, mr) {
		xa_erase(&ctx->mrs, idx);
		pl_mr_free(mr);
	}
	mutex_unlock(&ctx->mr_lock);
}

/*
 * Device reset or remove: the device forgot the context. Called with
 * dev->lock held, after the device was reset.
 */
void pl_ctx_kill(struct pl_ctx *ctx)
{
	struct pl_evch *evch;

	mutex_lock(&ctx->mr_lock);
	WRITE_ONCE(ctx->dead, true);
	mutex_unlock(&ctx->mr_lock);
	pl_ctx_unpin_all(ctx);

	spin_lock(&ctx->ev_lock);
	list_for_each_entry(evch, &ctx->evchs, node)
		wake_up_interruptible_poll(&evch->wq, EPOLLHUP);
	spin_unlock(&ctx->ev_lock);
}

/* PL_EVENT_MR_REVOKED: the device no longer touches the MR's pages. */
void pl_ctx_mr_revoked(struct pl_ctx *ctx, u64 key)
{
	struct pl_mr *mr;

	mutex_lock(&ctx->mr_lock);
	mr = xa_load(&ctx->mrs, (u32)key);
	if (mr && mr->key == key && !mr->revoked) {
		mr->revoked = true;
		pl_mr_unpin(mr);
	}
	mutex_unlock(&ctx->mr_lock);
}

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

/* ---- the device fd ---------------------------------------------------- */

static int pl_open(struct inode *inode, struct file *file)
{
	/* misc_open() holds misc_mtx: remove() cannot have deregistered us */
	struct pl_dev *dev = container_of(file->private_data, struct pl_dev,
					  misc);
	struct pl_create_context_req req = {};
	struct pl_handle_resp resp;
	struct pl_ctx *ctx;
	int err;

	ctx = kzalloc(sizeof(*ctx), GFP_KERNEL);
	if (!ctx)
		return -ENOMEM;
	kref_init(&ctx->kref);
	mutex_init(&ctx->mr_lock);
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
		return -ENODEV;
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
		goto err_put;
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
		goto err_put;

	file->private_data = ctx;
	stream_open(inode, file);
	return 0;

err_put:
	kfree(ctx);
	pl_dev_put(dev);
	return err;
}

static int pl_release(struct inode *inode, struct file *file)
{
	struct pl_ctx *ctx = file->private_data;
	struct pl_close_context_resp resp;
	int err;

	WRITE_ONCE(ctx->closed, true);
	if (!READ_ONCE(ctx->dead)) {
		/* waits for the device only, never for another fd */
		err = pl_submit(ctx->dev, PL_OP_CLOSE_CONTEXT, ctx->handle,
				NULL, 0, NULL, 0, &resp, sizeof(resp));
		if (err && err != -ENODEV && !READ_ONCE(ctx->dead))
			pr_warn("%s: CLOSE_CONTEXT %#llx: %d\n", ctx->dev->name,
				ctx->handle, err);
	}
	/* the hardware lifetime is over: no MR is in use any more */
	pl_ctx_unpin_all(ctx);
	/* unpinned first: a breaker waiting on a lease goes on after this */
	pl_ctx_release_leases(ctx);
	pl_ctx_put(ctx);
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

/*
 * Pins @npages pages from @start into @pages, in batches; all or nothing.
 * fault_pin_after stops it after that many pages, through the same unpin.
 */
static int pl_pin(struct pl_dev *dev, unsigned long start,
		  unsigned long npages, unsigned int gup_flags,
		  struct page **pages)
{
	long fail_at = pl_fault_pin_limit(npages);
	unsigned long pinned = 0, want = fail_at < 0 ? npages : fail_at;
	int ret;

	while (pinned < want) {
		if (fatal_signal_pending(current)) {
			ret = -EINTR;
			goto unpin;
		}
		ret = pin_user_pages_fast(start + pinned * PAGE_SIZE,
					  min_t(unsigned long, want - pinned,
						PL_PIN_BATCH),
					  gup_flags, pages + pinned);
		/* short count: the next call reports the failing page's error */
		if (ret <= 0) {
			ret = ret ? ret : -EFAULT;
			goto unpin;
		}
		pinned += ret;
		cond_resched();
	}
	if (pinned < npages) {
		pl_fault_pin_fired(dev, pinned, npages);
		ret = -EFAULT;
		goto unpin;
	}
	return 0;
unpin:
	if (pinned)
		unpin_user_pages(pages, pinned);
	return ret;
}

/* File identity of the mapping [addr, addr + len) when it is one file vma. */
static void pl_mr_file(struct pl_mr *mr)
{
	struct mm_struct *mm = current->mm;
	struct vm_area_struct *vma;
	struct inode *inode;

	mmap_read_lock(mm);
	vma = vma_lookup(mm, mr->addr);
	if (vma && vma->vm_file && mr->addr + mr->length <= vma->vm_end) {
		inode = file_inode(vma->vm_file);
		mr->file_dev = inode->i_sb->s_dev;
		mr->file_ino = inode->i_ino;
		mr->file_gen = inode->i_generation;
		mr->file_offset = ((u64)vma->vm_pgoff << PAGE_SHIFT) +
				  (mr->addr - vma->vm_start);
		mr->reg_flags |= PL_REG_HAS_FILE;
	}
	mmap_read_unlock(mm);
}

/* Readable sg list of the page list, in physically contiguous chunks. */
static struct scatterlist *pl_page_list(struct pl_mr *mr, unsigned int *nsg)
{
	unsigned int n = DIV_ROUND_UP(mr->npages, PL_LIST_CHUNK);
	unsigned int i, j, k = 0, cnt;
	struct scatterlist *sg;
	__le64 *buf;

	sg = kmalloc_array(n, sizeof(*sg), GFP_KERNEL);
	if (!sg)
		return NULL;
	sg_init_table(sg, n);
	for (i = 0; i < n; i++) {
		cnt = min_t(unsigned int, mr->npages - k, PL_LIST_CHUNK);
		buf = kmalloc_array(cnt, sizeof(*buf), GFP_KERNEL);
		if (!buf)
			goto err;
		for (j = 0; j < cnt; j++, k++)
			buf[j] = cpu_to_le64(page_to_phys(mr->pages[k]));
		sg_set_buf(&sg[i], buf, cnt * sizeof(*buf));
	}
	*nsg = n;
	return sg;
err:
	while (i--)
		kfree(sg_virt(&sg[i]));
	kfree(sg);
	return NULL;
}

static void pl_page_list_free(struct scatterlist *sg, unsigned int n)
{
	unsigned int i;

	for (i = 0; i < n; i++)
		kfree(sg_virt(&sg[i]));
	kfree(sg);
}

/* Publishes a registered MR, or undoes it when the context died meanwhile. */
static int pl_ctx_add_mr(struct pl_ctx *ctx, struct pl_mr *mr)
{
	int err;

	mutex_lock(&ctx->mr_lock);
	err = pl_ctx_err(ctx);
	if (!err)
		err = xa_insert(&ctx->mrs, (u32)mr->key, mr, GFP_KERNEL);
	mutex_unlock(&ctx->mr_lock);
	if (err && !READ_ONCE(ctx->dead)) {
		struct pl_handle_req h = { .handle = cpu_to_le64(mr->key) };

		pr_err("%s: MR %#llx: cannot track it (%d)\n", ctx->dev->name,
		       mr->key, err);
		pl_submit(ctx->dev, PL_OP_DEREG_MR, ctx->handle, &h, sizeof(h),
			  NULL, 0, NULL, 0);
	}
	return err;
}

/*
 * require_lease (Ira Weiny's RFC rule): REG_MR of a file-backed range fails
 * with -EPERM unless an ACTIVE layout lease of the same context covers it.
 * Anonymous memory is not affected; any file vma (memfd/shmem too) is.
 * Writable at runtime: /sys/module/pinlease/parameters/require_lease.
 */
bool pl_require_lease;
module_param_named(require_lease, pl_require_lease, bool, 0644);
MODULE_PARM_DESC(require_lease,
		 "REG_MR of a file range needs an active layout lease of the same context covering it (default N)");

static long pl_ioctl_reg_mr(struct pl_ctx *ctx, void __user *argp)
{
	struct pl_dev *dev = ctx->dev;
	struct pinlease_reg_mr a;
	struct pl_reg_mr_req req = {};
	struct pl_reg_mr_resp resp;
	struct scatterlist *sg;
	unsigned int gup_flags = 0, nsg;
	unsigned long start, off;
	struct pl_mr *mr;
	u64 end, npages;
	int err;

	if (copy_from_user(&a, argp, sizeof(a)))
		return -EFAULT;
	if (a.reserved || (a.flags & ~PINLEASE_REG_FLAGS_ALL) || !a.access ||
	    (a.access & ~PL_ACCESS_ALL) || !a.length ||
	    check_add_overflow(a.addr, a.length, &end))
		return -EINVAL;
	/* the device would write pages pinned read-only */
	if ((a.flags & PINLEASE_PIN_READONLY) &&
	    (a.access & (PL_ACCESS_WRITE | PL_ACCESS_ATOMIC)))
		return -EINVAL;
	off = a.addr & ~PAGE_MASK;
	start = a.addr & PAGE_MASK;
	if (a.length > (u64)dev->max_pages_per_mr * PAGE_SIZE)
		return -E2BIG;
	npages = DIV_ROUND_UP(off + a.length, PAGE_SIZE);
	if (npages > dev->max_pages_per_mr ||
	    sizeof(struct pl_req_hdr) + sizeof(req) + npages * 8 >
	    dev->max_request_bytes)
		return -E2BIG;

	mr = kzalloc(sizeof(*mr), GFP_KERNEL);
	if (!mr)
		return -ENOMEM;
	mr->addr = a.addr;
	mr->length = a.length;
	mr->access = a.access;
	mr->npages = npages;
	mr->pin_flags = a.flags;
	mr->pages = kvmalloc_array(npages, sizeof(*mr->pages),
				   GFP_KERNEL_ACCOUNT);
	if (!mr->pages) {
		err = -ENOMEM;
		goto err_free;
	}

	if (!(a.flags & PINLEASE_PIN_READONLY))
		gup_flags |= FOLL_WRITE;
	if (!(a.flags & PINLEASE_PIN_SHORTTERM)) {
		gup_flags |= FOLL_LONGTERM;
		mr->reg_flags |= PL_REG_LONGTERM;
	}
	/* the device checks PL_ACCESS_WRITE: its -EINVAL is the answer */
	if (a.flags & PINLEASE_REG_SCRUB)
		mr->reg_flags |= PL_REG_SCRUB;
	err = pl_pin(dev, start, npages, gup_flags, mr->pages);
	if (err) {
		kvfree(mr->pages);
		mr->pages = NULL;
		goto err_free;
	}
	pl_mr_file(mr);
	if (READ_ONCE(pl_require_lease) && (mr->reg_flags & PL_REG_HAS_FILE) &&
	    !pl_lease_covers(ctx, mr->file_dev, mr->file_ino, mr->file_gen,
			     mr->file_offset, mr->length)) {
		err = -EPERM;
		goto err_unpin;
	}

	sg = pl_page_list(mr, &nsg);
	if (!sg) {
		err = -ENOMEM;
		goto err_unpin;
	}
	req.access = cpu_to_le32(mr->access);
	req.flags = cpu_to_le32(mr->reg_flags);
	req.npages = cpu_to_le32(mr->npages);
	req.first_page_offset = cpu_to_le32(off);
	req.length = cpu_to_le64(mr->length);
	if (mr->reg_flags & PL_REG_HAS_FILE) {
		req.file.dev = cpu_to_le64(mr->file_dev);
		req.file.ino = cpu_to_le64(mr->file_ino);
		req.file.generation = cpu_to_le32(mr->file_gen);
		req.file_offset = cpu_to_le64(mr->file_offset);
	}
	err = pl_submit(dev, PL_OP_REG_MR, ctx->handle, &req, sizeof(req),
			sg, nsg, &resp, sizeof(resp));
	pl_page_list_free(sg, nsg);
	if (err)
		goto err_unpin;
	mr->key = le64_to_cpu(resp.key);
	mr->lease = le64_to_cpu(resp.lease);

	err = pl_ctx_add_mr(ctx, mr);
	if (err)
		goto err_unpin;

	/* registered even if the copy fails: it goes away at close */
	a.key = mr->key;
	a.lease = mr->lease;
	a.npages = mr->npages;
	return copy_to_user(argp, &a, sizeof(a)) ? -EFAULT : 0;

err_unpin:
	pl_mr_unpin(mr);
err_free:
	kfree(mr);
	return err;
}

static long pl_ioctl_dereg_mr(struct pl_ctx *ctx, void __user *argp)
{
	struct pl_handle_req h;
	struct pl_mr *mr;
	u64 key;
	int err;

	if (get_user(key, (u64 __user *)argp))
		return -EFAULT;

	mutex_lock(&ctx->mr_lock);
	mr = xa_load(&ctx->mrs, (u32)key);
	if (mr && mr->key == key)
		xa_erase(&ctx->mrs, (u32)key);
	else
		mr = NULL;	/* the device says why: ENOENT, ESTALE, EPERM */
	mutex_unlock(&ctx->mr_lock);

	h.handle = cpu_to_le64(key);
	err = pl_submit(ctx->dev, PL_OP_DEREG_MR, ctx->handle, &h, sizeof(h),
			NULL, 0, NULL, 0);
	if (!mr)
		return err;
	if (err) {
		mutex_lock(&ctx->mr_lock);
		/* a dead context's device forgot the MR: free it anyway */
		if (!ctx->dead && !xa_insert(&ctx->mrs, (u32)key, mr,
					     GFP_KERNEL))
			mr = NULL;
		mutex_unlock(&ctx->mr_lock);
	}
	if (mr)
		pl_mr_free(mr);
	return err;
}

static long pl_ioctl_dma(struct pl_ctx *ctx, void __user *argp)
{
	struct pinlease_dma a;
	union {
		struct pl_dma_req dma;
		struct pl_atomic_req atomic;
		struct pl_pattern_req pattern;
	} req = {};
	union {
		struct pl_atomic_resp atomic;
		struct pl_verify_resp verify;
	} resp;
	size_t blen, rlen = 0;
	int err;

	if (copy_from_user(&a, argp, sizeof(a)))
		return -EFAULT;

	switch (a.op) {
	case PL_OP_WRITE:
	case PL_OP_READ:
		req.dma.local_key = cpu_to_le64(a.local_key);
		req.dma.local_offset = cpu_to_le64(a.local_offset);
		req.dma.remote_key = cpu_to_le64(a.remote_key);
		req.dma.remote_offset = cpu_to_le64(a.remote_offset);
		req.dma.length = cpu_to_le64(a.length);
		blen = sizeof(req.dma);
		break;
	case PL_OP_COMPARE_SWAP:
	case PL_OP_FETCH_ADD:
		req.atomic.key = cpu_to_le64(a.remote_key);
		req.atomic.offset = cpu_to_le64(a.remote_offset);
		req.atomic.operand = cpu_to_le64(a.operand);
		req.atomic.swap = cpu_to_le64(a.swap);
		blen = sizeof(req.atomic);
		rlen = sizeof(resp.atomic);
		break;
	case PL_OP_FILL:
	case PL_OP_VERIFY:
		req.pattern.key = cpu_to_le64(a.remote_key);
		req.pattern.offset = cpu_to_le64(a.remote_offset);
		req.pattern.length = cpu_to_le64(a.length);
		req.pattern.pattern = cpu_to_le64(a.operand);
		req.pattern.mode = cpu_to_le32(a.mode);
		blen = sizeof(req.pattern);
		if (a.op == PL_OP_VERIFY)
			rlen = sizeof(resp.verify);
		break;
	default:
		return -EINVAL;
	}

	err = pl_submit(ctx->dev, a.op, ctx->handle, &req, blen, NULL, 0,
			&resp, rlen);
	if (err)
		return err;

	memset(a.result, 0, sizeof(a.result));
	if (a.op == PL_OP_COMPARE_SWAP || a.op == PL_OP_FETCH_ADD) {
		a.result[0] = le64_to_cpu(resp.atomic.original);
	} else if (a.op == PL_OP_VERIFY) {
		a.result[0] = le64_to_cpu(resp.verify.mismatches);
		a.result[1] = le64_to_cpu(resp.verify.first_bad_offset);
		a.result[2] = le64_to_cpu(resp.verify.first_bad_value);
	}
	return copy_to_user(argp, &a, sizeof(a)) ? -EFAULT : 0;
}

static int pl_destroy_child(struct pl_ctx *ctx, u64 child)
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

static long pl_ioctl_event_fd(struct pl_ctx *ctx)
{
	struct pl_create_child_req req = {
		.kind = cpu_to_le32(PL_CHILD_EVENT_CHANNEL),
	};
	struct pl_handle_resp resp;
	struct pl_evch *evch;
	int err, fd;

	evch = kvzalloc(sizeof(*evch), GFP_KERNEL);
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
	if (fd < 0) {
		spin_lock(&ctx->ev_lock);
		list_del(&evch->node);
		spin_unlock(&ctx->ev_lock);
		pl_destroy_child(ctx, evch->child);
		kvfree(evch);
		pl_ctx_put(ctx);
	}
	return fd;
}

static long pl_ioctl_export_mr(struct pl_ctx *ctx, void __user *argp)
{
	struct pl_export_mr_resp resp;
	struct pl_handle_req h;
	struct pl_export *exp;
	u64 key;
	int err, fd;

	if (get_user(key, (u64 __user *)argp))
		return -EFAULT;
	exp = kzalloc(sizeof(*exp), GFP_KERNEL);
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
		pl_destroy_child(ctx, exp->export);
		kfree(exp);
		pl_ctx_put(ctx);
		return fd;
	}
	spin_lock(&ctx->ev_lock);
	ctx->nr_exports++;
	spin_unlock(&ctx->ev_lock);
	return fd;
}

static long pl_ioctl_import_mr(struct pl_ctx *ctx, void __user *argp)
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
		goto out;
	}
	exp = fd_file(f)->private_data;
	if (exp->ctx->dev != ctx->dev) {
		err = -EXDEV;
		goto out;
	}
	mr = kzalloc(sizeof(*mr), GFP_KERNEL);
	if (!mr) {
		err = -ENOMEM;
		goto out;
	}
	req.export = cpu_to_le64(exp->export);
	req.access = cpu_to_le32(a.access);
	err = pl_submit(ctx->dev, PL_OP_IMPORT_MR, ctx->handle, &req,
			sizeof(req), NULL, 0, &resp, sizeof(resp));
	if (err) {
		kfree(mr);
		goto out;
	}
	mr->key = le64_to_cpu(resp.key);
	mr->access = a.access;
	mr->imported = true;
	mr->import_export = exp->export;
	err = pl_ctx_add_mr(ctx, mr);
	if (err) {
		kfree(mr);
		goto out;
	}
	a.key = mr->key;
	err = copy_to_user(argp, &a, sizeof(a)) ? -EFAULT : 0;
out:
	fdput(f);
	return err;
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

static void pl_show_mr(struct seq_file *m, const struct pl_mr *mr)
{
	seq_printf(m, "mr:\tkey=%#llx addr=%#llx length=%llu npages=%u access=%#x flags=%#x pin=%#x state=%s%s lease=%#llx",
		   mr->key, mr->addr, mr->length, mr->npages, mr->access,
		   mr->reg_flags, mr->pin_flags,
		   mr->revoked ? "revoked" : "active",
		   mr->imported ? ",imported" : "", mr->lease);
	if (mr->reg_flags & PL_REG_HAS_FILE)
		seq_printf(m, " file=%llx:%llu:%u offset=%llu", mr->file_dev,
			   mr->file_ino, mr->file_gen, mr->file_offset);
	seq_putc(m, '\n');
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
		pl_show_mr(m, mr);
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

const struct file_operations pl_dev_fops = {
	.owner = THIS_MODULE,
	.open = pl_open,
	.release = pl_release,
	.unlocked_ioctl = pl_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.show_fdinfo = pl_show_fdinfo,
};

/* ---- event-channel fd ------------------------------------------------- */

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

static int pl_evch_release(struct inode *inode, struct file *file)
{
	struct pl_evch *evch = file->private_data;
	struct pl_ctx *ctx = evch->ctx;

	spin_lock(&ctx->ev_lock);
	list_del(&evch->node);
	spin_unlock(&ctx->ev_lock);
	pl_destroy_child(ctx, evch->child);
	kvfree(evch);
	pl_ctx_put(ctx);
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

/* ---- export fd -------------------------------------------------------- */

static int pl_export_release(struct inode *inode, struct file *file)
{
	struct pl_export *exp = file->private_data;
	struct pl_ctx *ctx = exp->ctx;

	pl_destroy_child(ctx, exp->export);
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
