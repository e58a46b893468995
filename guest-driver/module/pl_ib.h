/* SPDX-License-Identifier: GPL-2.0 */
/*
 * pinlease_ib.ko: an ib_device per auxiliary device "pinlease.rdma.N"
 * that pinlease.ko adds (docs/rdma.md). Definitions shared by its files.
 *
 * Objects and lifetimes:
 * - struct pl_ib_dev: from the auxiliary driver's probe
 *   (ib_register_device()) to its remove (ib_unregister_device(), which
 *   waits for every uverbs command and disassociates every user context,
 *   then ib_dealloc_device()). The auxiliary device, and so padev, outlives
 *   it.
 * - struct pl_ib_ucontext: one per uverbs fd (alloc_ucontext to
 *   dealloc_ucontext), holding one pinlease.ko kernel context: the
 *   device's context lives exactly as long as the fd's hardware lifetime.
 * - struct pl_ib_pd: bookkeeping only; the device has no protection
 *   domains (every MR belongs to the context).
 * - struct pl_ib_mr: owns its umem (the pins) until the device has
 *   deregistered the MR, forgot it with a reset, or revoked it (a lease
 *   break under the revoke policy: pinlease.ko calls pl_ib_mr_revoked()).
 *   Owns its layout lease, if any, until dereg_mr. In d->mrs under its
 *   lkey (= rkey) from registration until dereg_mr.
 * - struct pl_ib_cq: a ring of work completions in the kernel, read by
 *   poll_cq (through uverbs: the provider maps nothing).
 * - struct pl_ib_qp: RC only; its receive queue, the SENDs waiting for a
 *   receive on it, and what modify_qp set. In d->qps under its number.
 *   Work requests run at once, in post_send (or in the post_recv that
 *   gives a waiting SEND its receive), as the device's WRITE and READ
 *   between the two sides' MRs.
 *
 * Locking:
 * - d->wr_lock (mutex): d->mrs and d->qps membership, every QP's state,
 *   attributes, receive queue and pending SENDs; held across the device
 *   requests a work request makes (so a dereg_mr or destroy_qp waits for
 *   the work requests using them). Taken with none of pinlease.ko's locks.
 * - cq->lock (spinlock, irqsave): a CQ's ring and its notify state;
 *   innermost. The completion handler is called after dropping it.
 * ib_core serialises an object's create and destroy and never destroys a
 * ucontext before its objects; pinlease.ko's calls take its own locks
 * (pinlease_kapi.h) and are called with no lock but d->wr_lock held.
 */
#ifndef _PL_IB_H
#define _PL_IB_H

#include "pinlease_kapi.h"

/* Limits of the kernel-side queues (query_device reports them). */
#define PL_IB_MAX_SGE		4
#define PL_IB_MAX_QP_WR		4096
#define PL_IB_MAX_CQE		65536
#define PL_IB_MAX_QP		1024
#define PL_IB_MAX_CQ		1024
/* QP numbers: 0 and 1 are the special QPs, 24 bits in all. */
#define PL_IB_MIN_QPN		2
#define PL_IB_MAX_QPN		0xffffff

struct pl_ib_dev {
	struct ib_device ibdev;		/* first: ib_alloc_device() */
	struct pinlease_adev *padev;
	struct pinlease_kdev_info info;

	struct mutex wr_lock;		/* see the top of this file */
	struct xarray mrs;		/* lkey (= rkey) -> struct pl_ib_mr */
	u32 next_key;
	struct xarray qps;		/* QP number -> struct pl_ib_qp */
	u32 next_qpn;
};

struct pl_ib_ucontext {
	struct ib_ucontext ibuc;	/* first: INIT_RDMA_OBJ_SIZE() */
	struct pl_ctx *kctx;
};

struct pl_ib_pd {
	struct ib_pd ibpd;		/* first: INIT_RDMA_OBJ_SIZE() */
};

struct pl_ib_mr {
	struct ib_mr ibmr;
	struct ib_umem *umem;		/* NULL once unpinned (xchg) */
	u64 lease;			/* the device's lease handle, or 0 */
	bool revoked;			/* by the device: pins gone */
	struct pl_ib_ucontext *uctx;	/* outlives the MR (ib_core) */
	u64 key;			/* the device's MR key */
	u64 iova;			/* the address work requests use */
	u64 length;
	int access;			/* IB_ACCESS_* */
	u32 npages;
};

struct pl_ib_cq {
	struct ib_cq ibcq;		/* first: INIT_RDMA_OBJ_SIZE() */
	spinlock_t lock;		/* ring, head, count, notify */
	struct ib_wc *ring;
	u32 size, head, count;
	u32 notify;			/* IB_CQ_NEXT_COMP/IB_CQ_SOLICITED armed */
	u64 dropped;			/* completions lost to a full ring */
};

/* A posted receive. */
struct pl_ib_rwqe {
	u64 wr_id;
	u32 num_sge;
	struct ib_sge sge[PL_IB_MAX_SGE];
};

/* A SEND waiting for a receive on its destination QP (dst->pending). */
struct pl_ib_pending {
	struct list_head node;
	struct pl_ib_qp *src;
	u64 wr_id;
	int opcode;			/* IB_WR_SEND or IB_WR_SEND_WITH_IMM */
	int send_flags;
	__be32 imm;
	u32 num_sge;
	struct ib_sge sge[PL_IB_MAX_SGE];
};

struct pl_ib_qp {
	struct ib_qp ibqp;		/* first: INIT_RDMA_OBJ_SIZE() */
	struct pl_ib_ucontext *uctx;
	enum ib_qp_state state;
	struct ib_qp_attr attr;		/* modify_qp's values, no AV */
	u16 dlid;
	struct ib_qp_cap cap;
	enum ib_sig_type sq_sig_type;
	struct pl_ib_rwqe *rq;		/* cap.max_recv_wr entries */
	u32 rq_head, rq_count;
	struct list_head pending;	/* struct pl_ib_pending.node */
};

static inline struct pl_ib_dev *to_pl_ib_dev(struct ib_device *ibdev)
{
	return container_of(ibdev, struct pl_ib_dev, ibdev);
}

static inline struct pl_ib_mr *to_pl_ib_mr(struct ib_mr *ibmr)
{
	return container_of(ibmr, struct pl_ib_mr, ibmr);
}

static inline struct pl_ib_cq *to_pl_ib_cq(struct ib_cq *ibcq)
{
	return container_of(ibcq, struct pl_ib_cq, ibcq);
}

static inline struct pl_ib_qp *to_pl_ib_qp(struct ib_qp *ibqp)
{
	return container_of(ibqp, struct pl_ib_qp, ibqp);
}

/* pl_ib_mr.c */
extern const struct pinlease_kctx_ops pl_ib_kctx_ops;
int pl_ib_dereg_mr(struct ib_mr *ibmr, struct ib_udata *udata);

/* pl_ib_cq.c */
int pl_ib_destroy_cq(struct ib_cq *ibcq, struct ib_udata *udata);
int pl_ib_poll_cq(struct ib_cq *ibcq, int num_entries, struct ib_wc *wc);
int pl_ib_req_notify_cq(struct ib_cq *ibcq, enum ib_cq_notify_flags flags);
void pl_ib_cq_add(struct pl_ib_cq *cq, const struct ib_wc *wc,
		  bool solicited);

/* pl_ib_qp.c */
int pl_ib_create_qp(struct ib_qp *ibqp, struct ib_qp_init_attr *init,
		    struct ib_udata *udata);
int pl_ib_modify_qp(struct ib_qp *ibqp, struct ib_qp_attr *attr,
		    int mask, struct ib_udata *udata);
int pl_ib_query_qp(struct ib_qp *ibqp, struct ib_qp_attr *attr, int mask,
		   struct ib_qp_init_attr *init);
int pl_ib_destroy_qp(struct ib_qp *ibqp, struct ib_udata *udata);
int pl_ib_post_send(struct ib_qp *ibqp, const struct ib_send_wr *wr,
		    const struct ib_send_wr **bad_wr);
int pl_ib_post_recv(struct ib_qp *ibqp, const struct ib_recv_wr *wr,
		    const struct ib_recv_wr **bad_wr);

#endif /* _PL_IB_H */
