// SPDX-License-Identifier: GPL-2.0
/*
 * pinlease: memory regions: REG_MR (pin, file identity, page list),
 * DEREG_MR, the require_lease rule, and the unpin paths (MR_REVOKED,
 * context close, device reset).
 *
 * An MR owns its pinned pages until the device no longer touches them:
 * DEREG_MR answered, an MR_REVOKED event, CLOSE_CONTEXT answered, a device
 * reset or removal. Until then the pages must not go back to the allocator
 * (docs/faults.md section 3.6).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/overflow.h>
#include <linux/sched/signal.h>
#include <linux/scatterlist.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#include "pinlease.h"
#include "pinlease_kapi.h"
#include "pinlease_compat.h"

/*
 * require_lease (Ira Weiny's RFC rule): REG_MR of a file-backed range fails
 * with -EPERM unless an ACTIVE layout lease of the same context covers it.
 * Anonymous memory is not affected; any file vma (memfd/shmem too) is.
 * Writable at runtime: /sys/module/pinlease/parameters/require_lease.
 */
static bool pl_require_lease;
module_param_named(require_lease, pl_require_lease, bool, 0644);
MODULE_PARM_DESC(require_lease,
		 "REG_MR of a file range needs an active layout lease of the same context covering it (default N)");

/**
 * pl_mr_unpin() - unpin an MR's pages and forget them
 * @mr: the MR; a no-op when it holds no pins (imported, or unpinned)
 *
 * Pages pinned writable are marked dirty. Only for pages the device no
 * longer touches.
 *
 * Context: Process context; may sleep (unpin_user_pages_dirty_lock()).
 * Locking: The caller holds ctx->mr_lock of the MR's context, or owns an
 * MR that is in no context's table.
 */
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

/**
 * pl_ctx_unpin_all() - unpin and free every MR of a context
 * @ctx: the context, whose MRs the device no longer touches
 *
 * Context: Process context; sleeps.
 * Locking: Takes ctx->mr_lock; the caller holds no MR or lease lock of
 * @ctx (dev->lock may be held: reset and remove come through
 * pl_ctx_kill()).
 */
void pl_ctx_unpin_all(struct pl_ctx *ctx)
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

/**
 * pl_mr_revoked_unpin() - the device revoked an MR: its pages may go
 * @ctx: the MR's context
 * @mr: the MR, just marked revoked
 *
 * The module's own MRs are unpinned here. A kernel MR's pages are its
 * owner's (pinlease_ib.ko's umem): the owner's mr_revoked callback lets
 * them go, at most once per MR (the device's MR_REVOKED event and a lease
 * break may both report it).
 *
 * Context: Process context; may sleep.
 * Locking: The caller holds ctx->mr_lock, which keeps @mr in the table
 * (and its owner's object alive: pinlease_kctx_dereg_mr() takes the MR
 * out under it first).
 */
void pl_mr_revoked_unpin(struct pl_ctx *ctx, struct pl_mr *mr)
{
	lockdep_assert_held(&ctx->mr_lock);
	if (!mr->kernel) {
		pl_mr_unpin(mr);
		return;
	}
	if (ctx->kops && ctx->kops->mr_revoked && mr->kpriv) {
		ctx->kops->mr_revoked(mr->kpriv);
		mr->kpriv = NULL;
	}
}

/**
 * pl_ctx_mr_revoked() - PL_EVENT_MR_REVOKED: unpin the MR at once
 * @ctx: the context the event names
 * @key: the MR's key
 *
 * The device no longer touches the MR's pages. The MR stays in the table,
 * marked revoked, until DEREG_MR (which then only frees it) or close.
 *
 * Context: Process context (the event work); sleeps.
 * Locking: Takes ctx->mr_lock; the caller holds none of the module's locks.
 */
void pl_ctx_mr_revoked(struct pl_ctx *ctx, u64 key)
{
	struct pl_mr *mr;

	mutex_lock(&ctx->mr_lock);
	mr = xa_load(&ctx->mrs, (u32)key);
	if (mr && mr->key == key && !mr->revoked) {
		mr->revoked = true;
		pl_mr_revoked_unpin(ctx, mr);
	}
	mutex_unlock(&ctx->mr_lock);
}

/**
 * pl_pin_batches() - pin user pages in batches of PL_PIN_BATCH
 * @start: page-aligned user address of page 0 of @pages
 * @pinned: in: pages of @pages already pinned; out: pages pinned now
 * @want: pin until this many pages of @pages are pinned
 * @gup_flags: FOLL_* flags for pin_user_pages_fast()
 * @pages: the page array, at least @want long
 *
 * The pin of REG_MR, shared with the bench_pin debugfs file (pl_bench.c)
 * so that the bare pin it times is the same calls in the same batches.
 * pin_user_pages_fast() takes the mmap lock itself when it has to fault
 * pages in (the callers hold none; pin_user_pages() would need it held).
 * On error the pages pinned so far stay pinned: the caller unpins
 * *@pinned pages.
 *
 * Context: Process context, the pinning task; sleeps.
 * Locking: The caller holds no mmap lock and none of the module's locks.
 * Return: 0, -EINTR (fatal signal), or the pin's error (-EFAULT for a
 * short count that pins nothing).
 */
int pl_pin_batches(unsigned long start, unsigned long *pinned,
		   unsigned long want, unsigned int gup_flags,
		   struct page **pages)
{
	int ret;

	while (*pinned < want) {
		if (fatal_signal_pending(current))
			return -EINTR;
		ret = pin_user_pages_fast(start + *pinned * PAGE_SIZE,
					  min_t(unsigned long, want - *pinned,
						PL_PIN_BATCH),
					  gup_flags, pages + *pinned);
		/* short count: the next call reports the failing page's error */
		if (ret <= 0)
			return ret ? ret : -EFAULT;
		*pinned += ret;
		cond_resched();
	}
	return 0;
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

	for (;;) {
		ret = pl_pin_batches(start, &pinned, want, gup_flags, pages);
		if (ret)
			goto err_unpin;
		if (pinned == npages)
			return 0;
		/* a racing REG_MR may have taken the last fault_pin_times */
		if (pl_fault_pin_fire(dev, pinned, npages)) {
			ret = -EFAULT;
			goto err_unpin;
		}
		want = npages;
	}

err_unpin:
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

/*
 * Readable sg list of the page list, in physically contiguous chunks: the
 * guest-physical addresses of mr->pages, or @pas when the caller pinned
 * the pages itself (pinlease_kctx_reg_mr()).
 */
static struct scatterlist *pl_page_list(struct pl_mr *mr, const u64 *pas,
					unsigned int *nsg)
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
			goto err_free_chunks;
		for (j = 0; j < cnt; j++, k++)
			buf[j] = cpu_to_le64(pas ? pas[k] :
					     page_to_phys(mr->pages[k]));
		sg_set_buf(&sg[i], buf, cnt * sizeof(*buf));
	}
	*nsg = n;
	return sg;

err_free_chunks:
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

/**
 * pl_mr_tell_device() - REG_MR at the device for pages already pinned
 * @ctx: the context
 * @mr: the MR: npages, access, length, reg_flags and (PL_REG_HAS_FILE)
 *	the file identity set; pages set unless @pas is given
 * @off: offset of the MR's start in its first page
 * @pas: the guest-physical address of each page, or NULL for mr->pages
 *
 * The half of REG_MR that the ioctl and pinlease_kctx_reg_mr() share:
 * the page list and the request. Sets mr->key and mr->lease.
 *
 * Context: Process context; sleeps (allocation, the device request).
 * Locking: The caller holds none of the module's locks.
 * Return: 0, -ENOMEM, or the device's answer.
 */
int pl_mr_tell_device(struct pl_ctx *ctx, struct pl_mr *mr, u32 off,
		      const u64 *pas)
{
	struct pl_reg_mr_req req = {};
	struct pl_reg_mr_resp resp;
	struct scatterlist *sg;
	unsigned int nsg;
	int err;

	sg = pl_page_list(mr, pas, &nsg);
	if (!sg)
		return -ENOMEM;
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
	err = pl_submit(ctx->dev, PL_OP_REG_MR, ctx->handle, &req, sizeof(req),
			sg, nsg, &resp, sizeof(resp));
	pl_page_list_free(sg, nsg);
	if (err)
		return err;
	mr->key = le64_to_cpu(resp.key);
	mr->lease = le64_to_cpu(resp.lease);
	return 0;
}

/**
 * pl_ctx_add_mr() - publish an MR the device registered
 * @ctx: the context
 * @mr: the MR, with the key the device gave it
 *
 * When the context died meanwhile, the device forgot the MR: the caller
 * frees it. An MR the table still holds in the new key's slot (under an
 * older key) is one the device has freed: it hands a slot out again only
 * after freeing its occupant (handles carry the slot's generation,
 * src/model/table.rs), so that MR's DEREG_MR answer was lost after the
 * device acted. It is dropped for the new one, its pages unpinned. When
 * the table refuses the MR all the same (no memory), the MR is
 * deregistered on the device again; if the device refuses that too, it is
 * reset, as a refused DEREG_MR is.
 *
 * Context: Process context; sleeps.
 * Locking: Takes ctx->mr_lock, and sends DEREG_MR after dropping it; the
 * caller holds none of the module's locks.
 * Return: 0, or -EIO / -ENODEV (context dead), -ENOMEM (table): the MR is
 * not in the table, the device no longer has it and it is still the
 * caller's; -EREMOTEIO: the device may still use its pages (it kept the
 * MR and could not be reset): the caller must leave them pinned.
 */
int pl_ctx_add_mr(struct pl_ctx *ctx, struct pl_mr *mr)
{
	struct pl_handle_req h = { .handle = cpu_to_le64(mr->key) };
	struct pl_mr *old = NULL;
	void *prev;
	int err;

	mutex_lock(&ctx->mr_lock);
	err = pl_ctx_err(ctx);
	if (!err) {
		prev = xa_store(&ctx->mrs, (u32)mr->key, mr, GFP_KERNEL);
		if (xa_is_err(prev))
			err = xa_err(prev);
		else
			old = prev;
	}
	if (old) {
		pr_warn("%s: MR %#llx: the device gave its slot to MR %#llx, so it had freed it (a lost DEREG_MR answer): unpinning it\n",
			ctx->dev->name, old->key, mr->key);
		pl_mr_revoked_unpin(ctx, old);
		pl_mr_free(old);
	}
	mutex_unlock(&ctx->mr_lock);
	if (!err || READ_ONCE(ctx->dead))
		return err;

	pr_err("%s: MR %#llx: cannot track it (%d)\n", ctx->dev->name, mr->key,
	       err);
	if (!pl_submit(ctx->dev, PL_OP_DEREG_MR, ctx->handle, &h, sizeof(h),
		       NULL, 0, NULL, 0) || READ_ONCE(ctx->dead))
		return err;
	pr_warn("%s: DEREG_MR %#llx of an MR the module cannot track refused: resetting the device before unpinning\n",
		ctx->dev->name, mr->key);
	if (pl_dev_reset_since(ctx->dev, ctx->gen) && !READ_ONCE(ctx->dead))
		return -EREMOTEIO;
	return err;
}

/**
 * pl_ioctl_reg_mr() - PINLEASE_IOC_REG_MR: pin a user range, register it
 * @ctx: the device fd's context
 * @argp: struct pinlease_reg_mr, in and out
 *
 * Pins the range (FOLL_LONGTERM unless PINLEASE_PIN_SHORTTERM), records
 * the file identity when it is one file vma, applies require_lease, and
 * sends REG_MR with the page list. The MR stays registered even when the
 * copy back fails: it goes away at close.
 *
 * Context: Process context, the ioctl's caller; sleeps.
 * Locking: The caller holds no lock of the module's. Takes the mmap lock
 * (read), ctx->lease_lock (require_lease) and ctx->mr_lock, one after the
 * other, none across the device request.
 * Return: 0, -EINVAL / -E2BIG (arguments), -ENOMEM, -EINTR, the pin's
 * error, -EPERM (require_lease), -EFAULT, or the device's answer.
 */
long pl_ioctl_reg_mr(struct pl_ctx *ctx, void __user *argp)
{
	struct pl_dev *dev = ctx->dev;
	struct pinlease_reg_mr a;
	unsigned int gup_flags = 0;
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
	    sizeof(struct pl_req_hdr) + sizeof(struct pl_reg_mr_req) + npages * 8 >
	    dev->max_request_bytes)
		return -E2BIG;

	mr = kzalloc_obj(*mr, GFP_KERNEL);
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
		goto err_free_mr;
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
	if (err)
		goto err_free_pages;
	pl_mr_file(mr);
	if (READ_ONCE(pl_require_lease) && (mr->reg_flags & PL_REG_HAS_FILE) &&
	    !pl_lease_covers(ctx, mr->file_dev, mr->file_ino, mr->file_gen,
			     mr->file_offset, mr->length)) {
		err = -EPERM;
		goto err_unpin;
	}

	err = pl_mr_tell_device(ctx, mr, off, NULL);
	if (err)
		goto err_unpin;

	err = pl_ctx_add_mr(ctx, mr);
	if (err == -EREMOTEIO) {
		pr_err("%s: MR %#llx: the device may still use it: leaving its %u pages pinned\n",
		       dev->name, mr->key, mr->npages);
		return -EIO;	/* mr and its pins leaked on purpose */
	}
	if (err)
		goto err_unpin;

	/* registered even if the copy fails: it goes away at close */
	a.key = mr->key;
	a.lease = mr->lease;
	a.npages = mr->npages;
	return copy_to_user(argp, &a, sizeof(a)) ? -EFAULT : 0;

err_unpin:
	/* unpins and frees the page array: nothing left to free below */
	pl_mr_unpin(mr);
err_free_pages:
	kvfree(mr->pages);
err_free_mr:
	kfree(mr);
	return err;
}

/**
 * pl_mr_dereg() - deregister an MR at the device and unpin it
 * @ctx: the context
 * @key: the MR's key
 * @interruptible: whether a signal may end the wait for ctx->dereg_lock
 *
 * The MR leaves the table before DEREG_MR is sent, so no other path
 * unpins it meanwhile. When the device refuses, the MR goes back into the
 * table with its pins (the device may still use them); a dead context's
 * device forgot it, so it is freed all the same. A key the module does not
 * know still goes to the device, which says why (-ENOENT, -ESTALE,
 * -EPERM).
 *
 * Context: Process context; sleeps.
 * Locking: The caller holds no lock of the module's. Takes
 * ctx->dereg_lock for the whole call (across the device request: DEREG_MRs
 * of one context go one at a time) and ctx->mr_lock, never across the
 * device request.
 * Return: 0, -EINTR (@interruptible: a signal while waiting for another
 * DEREG_MR of the context), or the device's answer.
 */
int pl_mr_dereg(struct pl_ctx *ctx, u64 key, bool interruptible)
{
	struct pl_handle_req h;
	struct pl_mr *mr;
	int err;

	/*
	 * Without it, a second DEREG_MR of the key, finding no MR in the
	 * table while this one holds it out, destroyed the MR on the device
	 * first; this one then got ESTALE and put back an MR the device had
	 * forgotten: its pins held until close, its slot refusing the next
	 * REG_MR that the device gave it (found by pinlease-guest fuzz).
	 * Interruptible for the ioctl: the holder may wait up to a request
	 * timeout (and a reset) for the device, and a waiter has done nothing
	 * yet, so a signal may end its wait (and no hung-task report names
	 * it). pinlease_ib.ko's dereg_mr must not fail: not interruptible.
	 */
	if (interruptible) {
		err = mutex_lock_interruptible(&ctx->dereg_lock);
		if (err)
			return err;
	} else {
		mutex_lock(&ctx->dereg_lock);
	}
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
	if (mr && err) {
		mutex_lock(&ctx->mr_lock);
		/* a dead context's device forgot the MR: free it anyway */
		if (!ctx->dead && !xa_insert(&ctx->mrs, (u32)key, mr,
					     GFP_KERNEL))
			mr = NULL;
		mutex_unlock(&ctx->mr_lock);
	}
	mutex_unlock(&ctx->dereg_lock);
	if (mr)
		pl_mr_free(mr);
	return err;
}

/**
 * pl_ioctl_dereg_mr() - PINLEASE_IOC_DEREG_MR: deregister and unpin an MR
 * @ctx: the device fd's context
 * @argp: the MR's key (u64)
 *
 * Context: Process context, the ioctl's caller; sleeps.
 * Locking: As pl_mr_dereg(), interruptible.
 * Return: 0, -EFAULT, or as pl_mr_dereg().
 */
long pl_ioctl_dereg_mr(struct pl_ctx *ctx, void __user *argp)
{
	u64 key;

	if (get_user(key, (u64 __user *)argp))
		return -EFAULT;
	return pl_mr_dereg(ctx, key, true);
}

/**
 * pl_mr_show() - one "mr:" line of a device fd's fdinfo
 * @m: the fdinfo seq_file
 * @mr: the MR
 *
 * Context: Process context (seq_file show).
 * Locking: The caller holds ctx->mr_lock of the MR's context.
 */
void pl_mr_show(struct seq_file *m, const struct pl_mr *mr)
{
	seq_printf(m, "mr:\tkey=%#llx addr=%#llx length=%llu npages=%u access=%#x flags=%#x pin=%#x state=%s%s lease=%#llx",
		   mr->key, mr->addr, mr->length, mr->npages, mr->access,
		   mr->reg_flags, mr->pin_flags,
		   mr->revoked ? "revoked" : "active",
		   mr->imported ? ",imported" : mr->kernel ? ",kernel" : "",
		   mr->lease);
	if (mr->reg_flags & PL_REG_HAS_FILE)
		seq_printf(m, " file=%llx:%llu:%u offset=%llu", mr->file_dev,
			   mr->file_ino, mr->file_gen, mr->file_offset);
	seq_putc(m, '\n');
}
