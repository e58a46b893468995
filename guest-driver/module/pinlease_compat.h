/* SPDX-License-Identifier: GPL-2.0 */
/*
 * pinlease: every difference between the kernels the module builds against
 * (Debian 6.1 LTS, 6.12 and 7.3; docs/design.md §4), in one place, so
 * that the other files read the same on every kernel.
 *
 * Each difference is a PL_HAVE_* flag from a feature probe in Kbuild (a
 * look at the kernel tree's headers), and only this header reads them.
 * There is no LINUX_VERSION_CODE test: a probe is also right for a stable
 * kernel that backports an API and for a kernel developer's own -next tree,
 * where a release number says nothing. Each item names the upstream
 * release of the change, for the reader, and what was read in the trees.
 *
 * Same on all three, so not wrapped: pin_user_pages_fast(),
 * unpin_user_pages*() (the module never calls pin_user_pages(), which
 * lost its vmas argument in 6.5), vma_lookup(), virtio_reset_device(),
 * virtio_cread_le().
 */
#ifndef _PINLEASE_COMPAT_H
#define _PINLEASE_COMPAT_H

#include <linux/cred.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/virtio_config.h>
#include <linux/workqueue.h>

/* 6.3 moved the file locking API out of linux/fs.h (6.1: all in fs.h). */
#ifdef PL_HAVE_FILELOCK_H
#include <linux/filelock.h>
#endif

/* ---- virtio ------------------------------------------------------------ */

/*
 * virtio_find_vqs(): callbacks/names arrays up to 6.10, an array of
 * struct virtqueue_info from 6.11 on (PL_HAVE_VIRTQUEUE_INFO).
 */
static inline int pl_find_vqs(struct virtio_device *vdev, unsigned int nvqs,
			      struct virtqueue *vqs[], vq_callback_t *cbs[],
			      const char * const names[])
{
#ifdef PL_HAVE_VIRTQUEUE_INFO
	struct virtqueue_info info[4] = {};
	unsigned int i;

	if (nvqs > ARRAY_SIZE(info))
		return -EINVAL;
	for (i = 0; i < nvqs; i++) {
		info[i].name = names[i];
		info[i].callback = cbs[i];
	}
	return virtio_find_vqs(vdev, nvqs, vqs, info, NULL);
#else
	return virtio_find_vqs(vdev, nvqs, vqs, cbs, names, NULL);
#endif
}

/* ---- workqueues -------------------------------------------------------- */

/*
 * A per-CPU workqueue, as alloc_workqueue(name, 0, 0) made before 7.x
 * began to warn (WARN_ONCE at module load; 7.3's kernel/workqueue.c) about
 * a workqueue with neither WQ_PERCPU nor WQ_UNBOUND. WQ_PERCPU came
 * upstream in 6.17 and is in 6.12.118 as a stable backport, but not in
 * 6.12.95 or 6.1 (PL_HAVE_WQ_PERCPU). Per-CPU it stays: unbound, the
 * suite's truncate-vs-REG_MR race failed 3 runs in 4 (a breaker waits on
 * a lease taken while it waits, which the kernel never breaks), per-CPU
 * 0 in 4.
 */
#ifdef PL_HAVE_WQ_PERCPU
#define PL_WQ_PERCPU	WQ_PERCPU
#else
#define PL_WQ_PERCPU	0
#endif

/* ---- allocation -------------------------------------------------------- */

/*
 * kzalloc_obj(*p, gfp) and kvzalloc_obj() size the allocation from the
 * pointer's type (upstream 7.0, 6.12.118 as a stable backport; not in
 * 6.12.95 or 6.1). Where they are missing, the kzalloc(sizeof(*p)) and
 * kvzalloc() they stand for. Macros, so #ifndef is the probe.
 */
#ifndef kzalloc_obj
#define kzalloc_obj(P, GFP) kzalloc(sizeof(P), GFP)
#endif
#ifndef kvzalloc_obj
#define kvzalloc_obj(P, GFP) kvzalloc(sizeof(P), GFP)
#endif

/* ---- files ------------------------------------------------------------- */

/* struct fd became opaque in 6.12; fd_file() is how to get its file. */
#ifndef fd_file
#define fd_file(f) ((f).file)
#endif

/* ---- leases ------------------------------------------------------------ */

/*
 * The lease itself. Up to 6.8 a lease is a struct file_lock (fl_flags,
 * fl_type, fl_owner, fl_pid, fl_file, linked by fl_list) whose callbacks
 * are a struct lock_manager_operations, allocated with locks_alloc_lock();
 * from 6.9 on it is a struct file_lease, its common fields in struct
 * file_lock_core (fl->c.flc_*), with struct lease_manager_operations and
 * locks_alloc_lease() (PL_HAVE_FILE_LEASE). fl_lmops and fl_break_time
 * keep their names, and lm_break/lm_change take the lease type, so the
 * module writes its callbacks against struct pl_file_lease.
 */
#ifdef PL_HAVE_FILE_LEASE
#define pl_file_lease			file_lease
#define pl_lease_manager_operations	lease_manager_operations

static inline void *pl_lease_owner(const struct pl_file_lease *fl)
{
	return fl->c.flc_owner;
}

static inline struct pl_file_lease *pl_lease_alloc(void)
{
	return locks_alloc_lease();
}

static inline void pl_lease_free(struct pl_file_lease *fl)
{
	locks_free_lease(fl);
}

static inline void pl_lease_init_layout(struct pl_file_lease *fl,
					struct file *file, void *owner)
{
	fl->c.flc_flags = FL_LAYOUT;
	fl->c.flc_type = F_RDLCK;
	fl->c.flc_owner = owner;
	fl->c.flc_pid = current->tgid;
	fl->c.flc_file = file;
}

#define pl_lease_matches(fl, file, owner) \
	((fl)->c.flc_file == (file) && (fl)->c.flc_owner == (owner))
#define pl_lease_list	c.flc_list
#else
#define pl_file_lease			file_lock
#define pl_lease_manager_operations	lock_manager_operations

static inline void *pl_lease_owner(const struct pl_file_lease *fl)
{
	return fl->fl_owner;
}

static inline struct pl_file_lease *pl_lease_alloc(void)
{
	return locks_alloc_lock();
}

static inline void pl_lease_free(struct pl_file_lease *fl)
{
	locks_free_lock(fl);
}

/* As 6.1's nfsd4_layout_setlease() and lease_init() fill one in. */
static inline void pl_lease_init_layout(struct pl_file_lease *fl,
					struct file *file, void *owner)
{
	fl->fl_flags = FL_LAYOUT;
	fl->fl_type = F_RDLCK;
	fl->fl_start = 0;
	fl->fl_end = OFFSET_MAX;
	fl->fl_owner = owner;
	fl->fl_pid = current->tgid;
	fl->fl_file = file;
}

#define pl_lease_matches(fl, file, owner) \
	((fl)->fl_file == (file) && (fl)->fl_owner == (owner))
#define pl_lease_list	fl_list
#endif

/*
 * locks_inode_context(): upstream since 6.2, in Debian's 6.1.192 (linux/fs.h)
 * as a stable backport, so an older 6.1 may lack it
 * (PL_HAVE_LOCKS_INODE_CONTEXT); the fallback is its 6.1.192 body. 7.3's
 * checks IOP_FLCTX first.
 */
static inline struct file_lock_context *pl_inode_flctx(struct inode *inode)
{
#ifdef PL_HAVE_LOCKS_INODE_CONTEXT
	return locks_inode_context(inode);
#else
	/* pairs with the cmpxchg that publishes it in locks_get_lock_context() */
	return smp_load_acquire(&inode->i_flctx);
#endif
}

/*
 * Is @owner's lease on @file still on @inode's lease list? Takes the
 * inode's flc_lock (a spinlock) for the walk: the answer may be stale as
 * soon as it returns, so only a caller that nothing can re-add the lease
 * for may rely on "gone".
 */
static inline bool pl_lease_on_inode(struct inode *inode, struct file *file,
				     void *owner)
{
	struct file_lock_context *flctx = pl_inode_flctx(inode);
	struct pl_file_lease *fl;
	bool found = false;

	if (!flctx)
		return false;
	spin_lock(&flctx->flc_lock);
	list_for_each_entry(fl, &flctx->flc_lease, pl_lease_list) {
		if (pl_lease_matches(fl, file, owner)) {
			found = true;
			break;
		}
	}
	spin_unlock(&flctx->flc_lock);
	return found;
}

/*
 * Removing a lease without checking the caller. 6.12 and 7.3 have
 * kernel_setlease() (no check) beside vfs_setlease() (owner or CAP_LEASE,
 * LSM); 6.1 has only vfs_setlease(), whose generic_setlease() makes those
 * checks for F_UNLCK too, as whoever runs the removal: the last close of
 * the device fd can be another task's. There the removal runs with the
 * credentials of the lease file's opener, the task that took the lease
 * and passed the same checks (PL_HAVE_KERNEL_SETLEASE).
 */
static inline int pl_lease_remove(struct file *file, void *owner)
{
#ifdef PL_HAVE_KERNEL_SETLEASE
	return kernel_setlease(file, F_UNLCK, NULL, &owner);
#else
	const struct cred *old = override_creds(file->f_cred);
	int err;

	err = vfs_setlease(file, F_UNLCK, NULL, &owner);
	revert_creds(old);
	return err;
#endif
}

/*
 * 7.3 (patches of November 2025, merged in 6.19 or 7.0: the release is
 * not certain, hence the probes) gave struct lease_manager_operations two
 * members, read in 7.3's fs/locks.c:
 *
 * - lm_open_conflict, which generic_add_lease() calls without a NULL
 *   check (NULL: an oops at the first LEASE_TAKE). It replaces
 *   check_conflicting_open(), which returned 0 for FL_LAYOUT (6.1, 6.12);
 *   nfsd's layout lm_open_conflict returns 0 too, and so does ours
 *   (PL_HAVE_LM_OPEN_CONFLICT).
 * - lm_breaker_timedout, which time_out_leases() calls under flc_lock when
 *   a lease's break time has passed; true lets the kernel delete the
 *   lease, as it did unasked before (PL_HAVE_LM_BREAKER_TIMEDOUT).
 *   pl_have_breaker_timedout says whether the module's hook is called;
 *   without it, a delayed work looks for the lease after the deadline.
 *
 * PL_LM_OPEN_CONFLICT and PL_LM_BREAKER_TIMEDOUT are the members'
 * initialisers, empty where the members do not exist; the second names
 * pl_lm_breaker_timedout(), which pl_lease.c defines.
 */
#ifdef PL_HAVE_LM_OPEN_CONFLICT
static inline int pl_lm_layout_open_conflict(struct file *filp, int arg)
{
	return 0;
}

#define PL_LM_OPEN_CONFLICT	.lm_open_conflict = pl_lm_layout_open_conflict,
#else
#define PL_LM_OPEN_CONFLICT
#endif

#ifdef PL_HAVE_LM_BREAKER_TIMEDOUT
#define pl_have_breaker_timedout	true
#define PL_LM_BREAKER_TIMEDOUT	.lm_breaker_timedout = pl_lm_breaker_timedout,
#else
#define pl_have_breaker_timedout	false
#define PL_LM_BREAKER_TIMEDOUT
#endif

/*
 * pinlease_ib.ko only (its files define PL_IB_MODULE before including
 * this header): ib_core's differences. Kbuild probes include/rdma/.
 *
 * reg_user_mr (PL_HAVE_IB_DMAH, `struct ib_dmah` in ib_verbs.h; not in
 * 6.12.95, in 7.3.4): gained a `struct ib_dmah *dmah` argument before udata.
 * PL_IB_REG_USER_MR is the member's initialiser; where the argument
 * exists it names a wrapper that refuses a DMA handle (-EOPNOTSUPP, as
 * rxe does) and calls pl_ib_reg_user_mr(), which pl_ib_mr.c defines.
 *
 * ib_umem_get() (PL_HAVE_IB_UMEM_GET_VA, `ib_umem_get_va` in ib_umem.h;
 * not in 6.12.95, in 7.3.4): renamed ib_umem_get_va() when the umem getters were reworked
 * (ib_umem_get_desc/_attr/_cq_buf); same arguments and pinning.
 *
 * create_cq (PL_HAVE_CREATE_CQ_ATTRS, `struct uverbs_attr_bundle` on the
 * line after `(*create_cq)(` in ib_verbs.h; 6.12 and 7.3): its third
 * argument became the attribute bundle instead of the udata.
 * PL_IB_CREATE_CQ names a wrapper of either shape around
 * pl_ib_create_cq() (pl_ib_cq.c), which needs neither: no driver data.
 *
 * resize_cq (PL_HAVE_RESIZE_USER_CQ, `(*resize_user_cq)` in ib_verbs.h;
 * not in 6.12.95, in 7.3.4): renamed resize_user_cq, the size unsigned.
 * PL_IB_RESIZE_CQ names the member for pl_ib_resize_cq() (pl_ib_cq.c).
 *
 * Same on all three, not wrapped: ib_alloc_device(), INIT_RDMA_OBJ_SIZE(),
 * ib_register_device(dev, name, NULL), ib_unregister_device(),
 * ib_umem_release(), umem->sgt_append, the query and ucontext/PD ops,
 * the QP ops, post_send/post_recv, poll_cq, req_notify_cq, destroy_cq.
 */
#ifdef PL_IB_MODULE
#include <rdma/ib_umem.h>
#include <rdma/ib_verbs.h>
#include <rdma/uverbs_ioctl.h>

struct ib_mr *pl_ib_reg_user_mr(struct ib_pd *pd, u64 start, u64 length,
				u64 virt_addr, int access,
				struct ib_udata *udata);

#ifdef PL_HAVE_IB_DMAH
static inline struct ib_mr *pl_ib_reg_user_mr_dmah(struct ib_pd *pd,
						   u64 start, u64 length,
						   u64 virt_addr, int access,
						   struct ib_dmah *dmah,
						   struct ib_udata *udata)
{
	if (dmah)
		return ERR_PTR(-EOPNOTSUPP);
	return pl_ib_reg_user_mr(pd, start, length, virt_addr, access, udata);
}

#define PL_IB_REG_USER_MR	.reg_user_mr = pl_ib_reg_user_mr_dmah,
#else
#define PL_IB_REG_USER_MR	.reg_user_mr = pl_ib_reg_user_mr,
#endif

int pl_ib_create_cq(struct ib_cq *ibcq, const struct ib_cq_init_attr *attr);

#ifdef PL_HAVE_CREATE_CQ_ATTRS
static inline int pl_ib_create_cq_op(struct ib_cq *ibcq,
				     const struct ib_cq_init_attr *attr,
				     struct uverbs_attr_bundle *attrs)
{
	return pl_ib_create_cq(ibcq, attr);
}
#else
static inline int pl_ib_create_cq_op(struct ib_cq *ibcq,
				     const struct ib_cq_init_attr *attr,
				     struct ib_udata *udata)
{
	return pl_ib_create_cq(ibcq, attr);
}
#endif
#define PL_IB_CREATE_CQ	.create_cq = pl_ib_create_cq_op,

int pl_ib_resize_cq(struct ib_cq *ibcq, int cqe, struct ib_udata *udata);

#ifdef PL_HAVE_RESIZE_USER_CQ
static inline int pl_ib_resize_user_cq(struct ib_cq *ibcq, unsigned int cqe,
				       struct ib_udata *udata)
{
	if (cqe > INT_MAX)
		return -EINVAL;
	return pl_ib_resize_cq(ibcq, cqe, udata);
}

#define PL_IB_RESIZE_CQ	.resize_user_cq = pl_ib_resize_user_cq,
#else
#define PL_IB_RESIZE_CQ	.resize_cq = pl_ib_resize_cq,
#endif

static inline struct ib_umem *pl_ib_umem_get(struct ib_device *dev,
					     unsigned long addr, size_t size,
					     int access)
{
#ifdef PL_HAVE_IB_UMEM_GET_VA
	return ib_umem_get_va(dev, addr, size, access);
#else
	return ib_umem_get(dev, addr, size, access);
#endif
}
#endif /* PL_IB_MODULE */

#endif /* _PINLEASE_COMPAT_H */
