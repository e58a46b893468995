// SPDX-License-Identifier: GPL-2.0
/*
 * pinlease_ib: user memory regions. ib_core pins (ib_umem_get(): long
 * term, RLIMIT_MEMLOCK, the kernel's GUP verdicts); the device is told
 * through pinlease.ko's REG_MR with the pinned pages' guest-physical
 * addresses. The pins go back only after the device let go of the MR:
 * DEREG_MR answered, or the device reset (pinlease_kctx_dereg_mr()).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#define PL_IB_MODULE

#include <linux/mm.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>

#include "pinlease_abi.h"
#include "pinlease_compat.h"
#include "pl_ib.h"

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
 * paging), -E2BIG (more pages than one REG_MR carries), ib_umem_get()'s
 * error, or the device's answer.
 */
struct ib_mr *pl_ib_reg_user_mr(struct ib_pd *pd, u64 start, u64 length,
				u64 virt_addr, int access,
				struct ib_udata *udata)
{
	struct pl_ib_dev *d = to_pl_ib_dev(pd->device);
	struct pl_ib_ucontext *uc;
	struct pl_ib_mr *mr;
	u64 npages, *pas;
	u32 index;
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
	mr->umem = pl_ib_umem_get(pd->device, start, length, access);
	if (IS_ERR(mr->umem)) {
		err = PTR_ERR(mr->umem);
		goto err_free_mr;
	}
	pas = kvmalloc_array(npages, sizeof(*pas), GFP_KERNEL);
	if (!pas) {
		err = -ENOMEM;
		goto err_release_umem;
	}
	err = pl_ib_umem_pages(mr->umem, pas, npages);
	if (err) {
		pr_err("%s: MR at %#llx, %llu bytes: the umem does not hold the %llu pages expected\n",
		       dev_name(&pd->device->dev), start, length, npages);
		goto err_free_pas;
	}
	err = pinlease_kctx_reg_mr(uc->kctx, pas, npages, start & ~PAGE_MASK,
				   length, pl_ib_access(access), &mr->key);
	if (err)
		goto err_free_pas;
	kvfree(pas);
	pas = NULL;

	/* work requests name it by lkey/rkey: the table's index and a tag */
	mutex_lock(&d->wr_lock);
	err = xa_alloc_cyclic(&d->mrs, &index, mr,
			      XA_LIMIT(1, PL_IB_MAX_MR_INDEX), &d->next_key,
			      GFP_KERNEL);
	if (err >= 0)
		mr->ibmr.lkey = PL_IB_KEY(index, d->next_key_tag++);
	mutex_unlock(&d->wr_lock);
	if (err < 0)
		goto err_dereg_mr;
	mr->ibmr.rkey = mr->ibmr.lkey;
	return &mr->ibmr;

err_dereg_mr:
	if (pinlease_kctx_dereg_mr(uc->kctx, mr->key)) {
		kfree(mr);	/* the device may still use it: pins stay */
		return ERR_PTR(err);
	}
err_free_pas:
	kvfree(pas);
err_release_umem:
	ib_umem_release(mr->umem);
err_free_mr:
	kfree(mr);
	return ERR_PTR(err);
}

/**
 * pl_ib_dereg_mr() - ibv_dereg_mr(), close, or disassociation
 * @ibmr: the MR
 * @udata: the uverbs call's driver data (unused)
 *
 * DEREG_MR at the device first; the pins go only after its answer. On a
 * device that was reset (or is gone) nothing is sent: the device forgot
 * the MR and stopped touching its pages, so it is only freed and
 * unpinned. Never fails: ib_core's teardown (RDMA_REMOVE_DRIVER_REMOVE,
 * close) must not. When even a device reset could not make the device
 * let go, the pages stay pinned (leaked, logged) rather than reused under
 * a device that may still write them.
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
	xa_erase(&d->mrs, PL_IB_KEY_INDEX(ibmr->lkey));
	mutex_unlock(&d->wr_lock);
	err = pinlease_kctx_dereg_mr(mr->uctx->kctx, mr->key);
	if (err)
		pr_err("%s: MR %#llx: the device may still use it (%d): leaving its %u pages pinned\n",
		       dev_name(&ibmr->device->dev), mr->key, err, mr->npages);
	else
		ib_umem_release(mr->umem);
	kfree(mr);
	return 0;
}
