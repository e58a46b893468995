// SPDX-License-Identifier: GPL-2.0
/*
 * pinlease_ib: user memory regions. ib_core pins (ib_umem_get(): long
 * term, RLIMIT_MEMLOCK, the kernel's GUP verdicts); the device is told
 * through pinlease.ko's REG_MR with the pinned pages' guest-physical
 * addresses. The pins go back only after the device let go of the MR:
 * DEREG_MR answered, the device reset (pinlease_kctx_dereg_mr()), or the
 * device revoked the MR (pl_ib_mr_revoked()).
 *
 * Layout leases (the mr_lease parameter): with a policy, an MR whose range
 * is one file mapping takes an FL_LAYOUT lease on its file range first,
 * held by the verbs fd's kernel context (the uverbs fd is the device fd's
 * analog), then pins. A truncate, hole punch, ... of the range breaks it
 * as it breaks a /dev/pinleaseN lease (pl_lease.c): revoke (the device
 * revokes the MR, its pins go at once, its work requests fail), wait (the
 * breaker waits for ibv_dereg_mr or the fd's close) or timeout (the kernel
 * drops the lease after lease-break-time, the pins stay and the device
 * counts every access). The lease goes with the MR, after its pins.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#define PL_IB_MODULE

#include <linux/file.h>
#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/moduleparam.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/sysfs.h>

#include "pinlease_abi.h"
#include "pinlease_compat.h"
#include "pl_ib.h"

/*
 * The layout-lease policy of the next registrations: PL_POLICY_*, 0 for
 * none (no lease: MRs of files are pinned as by any RDMA driver). A
 * module parameter rather than driver data in the uverbs call, so that
 * unmodified verbs programs run under each policy.
 */
static u32 pl_ib_mr_lease;

static int pl_ib_mr_lease_set(const char *val, const struct kernel_param *kp)
{
	const char *name;
	u32 p;

	if (sysfs_streq(val, "none")) {
		WRITE_ONCE(pl_ib_mr_lease, 0);
		return 0;
	}
	for (p = 1; (name = pinlease_lease_policy_name(p)); p++) {
		if (sysfs_streq(val, name)) {
			WRITE_ONCE(pl_ib_mr_lease, p);
			return 0;
		}
	}
	return -EINVAL;
}

static int pl_ib_mr_lease_get(char *buf, const struct kernel_param *kp)
{
	u32 p = READ_ONCE(pl_ib_mr_lease);

	return sysfs_emit(buf, "%s\n", p ? pinlease_lease_policy_name(p) :
			  "none");
}

static const struct kernel_param_ops pl_ib_mr_lease_ops = {
	.set = pl_ib_mr_lease_set,
	.get = pl_ib_mr_lease_get,
};
module_param_cb(mr_lease, &pl_ib_mr_lease_ops, NULL, 0644);
MODULE_PARM_DESC(mr_lease,
		 "layout lease of MRs of file mappings: none, revoke, wait or timeout (read at each registration)");

/* What the device may do to the MR's pages, from the IB access flags. */
static u32 pl_ib_access(int access)
{
	u32 pl = PL_ACCESS_READ;

	if (access & (IB_ACCESS_LOCAL_WRITE | IB_ACCESS_REMOTE_WRITE))
		pl |= PL_ACCESS_WRITE;
	if (access & IB_ACCESS_REMOTE_ATOMIC)
		pl |= PL_ACCESS_ATOMIC | PL_ACCESS_WRITE;
	return pl;
}

/* The guest-physical address of each pinned page of @umem, in order. */
static int pl_ib_umem_pages(struct ib_umem *umem, u64 *pas, u32 npages)
{
	struct sg_page_iter iter;
	u32 i = 0;

	for_each_sgtable_page(&umem->sgt_append.sgt, &iter, 0) {
		if (i == npages)
			return -EFAULT;
		pas[i++] = page_to_phys(sg_page_iter_page(&iter));
	}
	return i == npages ? 0 : -EFAULT;
}

/*
 * The file a user range maps, when it is one vma of a regular file: a
 * reference to it and the range's file identity; NULL otherwise.
 */
static struct file *pl_ib_mr_file(u64 start, u64 length,
				  struct pinlease_kmr_file *mf)
{
	struct mm_struct *mm = current->mm;
	struct vm_area_struct *vma;
	struct file *file = NULL;
	struct inode *inode;

	mmap_read_lock(mm);
	vma = vma_lookup(mm, start);
	if (vma && vma->vm_file && start + length <= vma->vm_end &&
	    S_ISREG(file_inode(vma->vm_file)->i_mode)) {
		file = get_file(vma->vm_file);
		inode = file_inode(file);
		mf->dev = inode->i_sb->s_dev;
		mf->ino = inode->i_ino;
		mf->generation = inode->i_generation;
		mf->offset = ((u64)vma->vm_pgoff << PAGE_SHIFT) +
			     (start - vma->vm_start);
	}
	mmap_read_unlock(mm);
	return file;
}

/* The lease of an MR's file range under the current policy, if any. */
static int pl_ib_mr_lease_take(struct pl_ib_mr *mr, struct file *file,
			       const struct pinlease_kmr_file *mf)
{
	u32 policy = READ_ONCE(pl_ib_mr_lease);
	u64 first = mf->offset & PAGE_MASK;

	if (!policy || !file)
		return 0;
	return pinlease_kctx_lease_take(mr->uctx->kctx, file, policy, first,
					PAGE_ALIGN(mf->offset + mr->length) -
					first, &mr->lease);
}

/* The lease goes after the pins: a waiting breaker finds them gone. */
static void pl_ib_mr_lease_release(struct pl_ib_mr *mr)
{
	int err;

	if (!mr->lease)
		return;
	err = pinlease_kctx_lease_release(mr->uctx->kctx, mr->lease);
	if (err && err != -ENODEV && err != -EIO)
		pr_warn("MR %#llx: releasing its lease %#llx: %d\n", mr->key,
			mr->lease, err);
}

/* Unpins, at most once: dereg_mr and pl_ib_mr_revoked() may both come. */
static void pl_ib_mr_unpin(struct pl_ib_mr *mr)
{
	struct ib_umem *umem = xchg(&mr->umem, NULL);

	if (umem)
		ib_umem_release(umem);
}

/* pinlease_kctx_ops.mr_revoked: the device let go of the MR's pages. */
static void pl_ib_mr_revoked(void *mr_priv)
{
	struct pl_ib_mr *mr = mr_priv;

	WRITE_ONCE(mr->revoked, true);
	pl_ib_mr_unpin(mr);
}

const struct pinlease_kctx_ops pl_ib_kctx_ops = {
	.mr_revoked = pl_ib_mr_revoked,
};

/**
 * pl_ib_reg_user_mr() - ibv_reg_mr(): pin, then REG_MR at the device
 * @pd: the protection domain (bookkeeping only)
 * @start: the user address
 * @length: bytes
 * @virt_addr: the IOVA the MR is addressed by (kept by ib_core)
 * @access: IB_ACCESS_* flags
 * @udata: the uverbs call's driver data (none in this ABI)
 *
 * Context: Process context, the registering task; sleeps.
 * Locking: None of its own; pinlease.ko takes its locks.
 * Return: the MR, or ERR_PTR(): -EOPNOTSUPP (kernel caller, on-demand
 * paging), -E2BIG (more pages than one REG_MR carries), the lease's error
 * (-EAGAIN: a conflicting lease, or the lease was broken while the MR was
 * being pinned and registered), ib_umem_get()'s error, or the device's
 * answer.
 */
struct ib_mr *pl_ib_reg_user_mr(struct ib_pd *pd, u64 start, u64 length,
				u64 virt_addr, int access,
				struct ib_udata *udata)
{
	struct pl_ib_dev *d = to_pl_ib_dev(pd->device);
	struct pinlease_kmr_file mf = {};
	struct pl_ib_ucontext *uc;
	struct ib_umem *umem;
	struct file *file;
	bool has_file;
	struct pl_ib_mr *mr;
	u64 npages, *pas = NULL;
	int err;

	if (!udata || (access & IB_ACCESS_ON_DEMAND))
		return ERR_PTR(-EOPNOTSUPP);
	if (!length || start + length < start)
		return ERR_PTR(-EINVAL);
	npages = (PAGE_ALIGN(start + length) - (start & PAGE_MASK)) >>
		 PAGE_SHIFT;
	if (npages > d->info.max_pages_per_mr)
		return ERR_PTR(-E2BIG);
	uc = rdma_udata_to_drv_context(udata, struct pl_ib_ucontext, ibuc);

	mr = kzalloc_obj(*mr, GFP_KERNEL);
	if (!mr)
		return ERR_PTR(-ENOMEM);
	mr->uctx = uc;
	mr->npages = npages;
	mr->iova = virt_addr;
	mr->length = length;
	mr->access = access;
	/* the lease before the pins, so a truncate meanwhile breaks it */
	file = pl_ib_mr_file(start, length, &mf);
	has_file = file;
	err = pl_ib_mr_lease_take(mr, file, &mf);
	if (file)
		fput(file);
	if (err)
		goto err_free_mr;
	umem = pl_ib_umem_get(pd->device, start, length, access);
	if (IS_ERR(umem)) {
		err = PTR_ERR(umem);
		goto err_release_lease;
	}
	mr->umem = umem;
	pas = kvmalloc_array(npages, sizeof(*pas), GFP_KERNEL);
	if (!pas) {
		err = -ENOMEM;
		goto err_unpin;
	}
	err = pl_ib_umem_pages(umem, pas, npages);
	if (err) {
		pr_err("%s: MR at %#llx, %llu bytes: the umem does not hold the %llu pages expected\n",
		       dev_name(&pd->device->dev), start, length, npages);
		goto err_free_pas;
	}
	err = pinlease_kctx_reg_mr(uc->kctx, pas, npages, start & ~PAGE_MASK,
				   length, pl_ib_access(access),
				   has_file ? &mf : NULL, mr, &mr->key);
	if (err == -EREMOTEIO) {
		pr_err("%s: MR at %#llx: the device may still use it: leaving its %llu pages pinned\n",
		       dev_name(&pd->device->dev), start, npages);
		kvfree(pas);
		return ERR_PTR(-EIO);	/* mr, pins, lease leaked on purpose */
	}
	if (err)
		goto err_free_pas;
	kvfree(pas);
	pas = NULL;
	/*
	 * A break between the lease and REG_MR found no MR to revoke (or made
	 * a breaker wait on a lease the device never filed the MR under): the
	 * file range changed under the registration. From REG_MR on, the
	 * device revokes the MR with its lease.
	 */
	if (mr->lease && !pinlease_kctx_lease_active(uc->kctx, mr->lease)) {
		err = -EAGAIN;
		goto err_dereg_mr;
	}

	/* work requests name it by lkey/rkey: the table's index */
	mutex_lock(&d->wr_lock);
	err = xa_alloc_cyclic(&d->mrs, &mr->ibmr.lkey, mr, xa_limit_32b,
			      &d->next_key, GFP_KERNEL);
	mutex_unlock(&d->wr_lock);
	if (err < 0)
		goto err_dereg_mr;
	mr->ibmr.rkey = mr->ibmr.lkey;
	return &mr->ibmr;

err_dereg_mr:
	if (pinlease_kctx_dereg_mr(uc->kctx, mr->key)) {
		/* the device may still use it: pins, lease and MR stay */
		return ERR_PTR(err);
	}
err_free_pas:
	kvfree(pas);
err_unpin:
	pl_ib_mr_unpin(mr);
err_release_lease:
	pl_ib_mr_lease_release(mr);
err_free_mr:
	kfree(mr);
	return ERR_PTR(err);
}

/**
 * pl_ib_dereg_mr() - ibv_dereg_mr(), close, or disassociation
 * @ibmr: the MR
 * @udata: the uverbs call's driver data (unused)
 *
 * DEREG_MR at the device first; the pins go only after its answer, then
 * the lease (a breaker waiting on it goes on). On a device that was reset
 * (or is gone) nothing is sent: the device forgot the MR and stopped
 * touching its pages, so it is only freed and unpinned. Never fails:
 * ib_core's teardown (RDMA_REMOVE_DRIVER_REMOVE, close) must not. When
 * even a device reset could not make the device let go, the pages stay
 * pinned and the MR with its lease is leaked (logged) rather than reused
 * under a device that may still write them: pinlease.ko still has the MR,
 * and its mr_revoked callback may still name it.
 *
 * Context: Process context; sleeps.
 * Locking: None of its own.
 * Return: 0.
 */
int pl_ib_dereg_mr(struct ib_mr *ibmr, struct ib_udata *udata)
{
	struct pl_ib_mr *mr = to_pl_ib_mr(ibmr);
	struct pl_ib_dev *d = to_pl_ib_dev(ibmr->device);
	int err;

	/* no work request finds it after this; none runs meanwhile */
	mutex_lock(&d->wr_lock);
	xa_erase(&d->mrs, ibmr->lkey);
	mutex_unlock(&d->wr_lock);
	err = pinlease_kctx_dereg_mr(mr->uctx->kctx, mr->key);
	if (err) {
		pr_err("%s: MR %#llx: the device may still use it (%d): leaving its %u pages pinned\n",
		       dev_name(&ibmr->device->dev), mr->key, err, mr->npages);
		return 0;
	}
	pl_ib_mr_unpin(mr);
	pl_ib_mr_lease_release(mr);
	kfree(mr);
	return 0;
}
