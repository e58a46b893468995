// SPDX-License-Identifier: GPL-2.0
/*
 * pinlease_ib: RC, UC and UD queue pairs and their work requests.
 *
 * The device has no queue pairs: a QP lives in this module (its state,
 * attributes and receive queue), and every work request is carried out at
 * once by the device's WRITE and READ between MRs (docs/abi.md 5.11),
 * which may name another context's MR as the remote side. SEND is a
 * WRITE of the sender's gather list into the buffers of the destination
 * QP's oldest receive; when it has none the SEND waits on the destination
 * (its pending list) for the next post_recv, which then carries it out
 * (an RNR retry that never runs out). RDMA WRITE and READ go straight to
 * the remote MR, which must belong to the destination QP's context and
 * allow the access. Atomics are the device's COMPARE_SWAP and FETCH_ADD
 * on the remote MR (pl_ib_atomic()). QPs connect by number on the same
 * ib_device (the LID of an address vector must be the port's own).
 *
 * A UC QP is the same minus what needs the responder's answer: SEND and
 * RDMA WRITE only, a SEND with no receive waiting is dropped, and remote
 * errors never reach the sender (pl_ib_unacked_status()). A UD QP SENDs
 * only, to the QP number and Q_Key of each work request (the address
 * handle must name this port: pl_ib_create_ah()), at most one MTU.
 *
 * Everything here runs under d->wr_lock (pl_ib.h), device requests
 * included: one work request of the device at a time.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#define PL_IB_MODULE

#include <linux/highmem.h>
#include <linux/list.h>
#include <linux/overflow.h>
#include <linux/slab.h>

#include "pinlease_abi.h"
#include "pinlease_compat.h"
#include "pinlease_ib_abi.h"
#include "pl_ib.h"

static struct pl_ib_dev *qp_dev(struct pl_ib_qp *qp)
{
	return to_pl_ib_dev(qp->ibqp.device);
}

/*
 * A UC or UD requester learns nothing of the responder: no ACK, no NAK,
 * no RNR. What would be a remote error (or a retry running out) on RC is
 * a message the responder dropped, and the sender's work request
 * succeeds.
 */
static enum ib_wc_status pl_ib_unacked_status(struct pl_ib_qp *qp,
					      enum ib_wc_status st)
{
	if (qp->ibqp.qp_type == IB_QPT_RC)
		return st;
	switch (st) {
	case IB_WC_REM_INV_REQ_ERR:
	case IB_WC_REM_ACCESS_ERR:
	case IB_WC_REM_OP_ERR:
	case IB_WC_RETRY_EXC_ERR:
		return IB_WC_SUCCESS;
	default:
		return st;
	}
}

static bool pl_ib_signaled(struct pl_ib_qp *qp, int send_flags)
{
	return (send_flags & IB_SEND_SIGNALED) ||
	       qp->sq_sig_type == IB_SIGNAL_ALL_WR;
}

/* One completion on @ibcq for a work request of @qp. */
static void pl_ib_complete(struct ib_cq *ibcq, struct pl_ib_qp *qp,
			   u64 wr_id, enum ib_wc_opcode opcode,
			   enum ib_wc_status status, u32 byte_len,
			   const struct pl_ib_pending *from, bool solicited)
{
	struct ib_wc wc = {
		.wr_id = wr_id,
		.status = status,
		.opcode = opcode,
		.byte_len = byte_len,
		.qp = &qp->ibqp,
		.port_num = 1,
	};

	if (from) {
		wc.src_qp = from->src->ibqp.qp_num;
		wc.slid = PINLEASE_IB_PORT_LID;
		if (from->opcode == IB_WR_SEND_WITH_IMM) {
			wc.wc_flags |= IB_WC_WITH_IMM;
			wc.ex.imm_data = from->imm;
		}
	}
	pl_ib_cq_add(to_pl_ib_cq(ibcq), &wc, solicited);
}

/*
 * The MR @key names when [addr, addr + len) lies in it and @owner (NULL:
 * anyone) registered it; else NULL. Caller holds d->wr_lock.
 */
static struct pl_ib_mr *pl_ib_mr_range(struct pl_ib_dev *d, u32 key,
				       u64 addr, u64 len,
				       struct pl_ib_ucontext *owner)
{
	struct pl_ib_mr *mr = xa_load(&d->mrs, PL_IB_KEY_INDEX(key));
	u64 end;

	/* the index finds it, the tag must be this registration's */
	if (!mr || mr->ibmr.lkey != key || (owner && mr->uctx != owner))
		return NULL;
	if (check_add_overflow(addr, len, &end) || addr < mr->iova ||
	    end > mr->iova + mr->length)
		return NULL;
	return mr;
}

/*
 * The completion status of a failed device WRITE/READ/atomic whose local
 * MR is @lmr. -ECANCELED: the device revoked one of the MRs (a lease
 * break under the revoke policy, pl_ib_mr.c). Its answer does not say
 * which: @lmr's revoked flag does once pinlease.ko's mr_revoked callback
 * ran; before it did (the callback follows the device's revoke), the
 * remote MR is assumed.
 */
static enum ib_wc_status pl_ib_dma_status(int err, const struct pl_ib_mr *lmr)
{
	switch (err) {
	case -ECANCELED:
		if (lmr && READ_ONCE(lmr->revoked))
			return IB_WC_LOC_PROT_ERR;
		return IB_WC_REM_ACCESS_ERR;
	case -EPERM:
	case -EACCES:
		return IB_WC_REM_ACCESS_ERR;
	case -ERANGE:
	case -EINVAL:
		return IB_WC_REM_INV_REQ_ERR;
	default:
		return IB_WC_GENERAL_ERR;
	}
}

/* The QP (under d->wr_lock) that @qp is connected to, if it can receive. */
static struct pl_ib_qp *pl_ib_dest(struct pl_ib_dev *d, struct pl_ib_qp *qp)
{
	struct pl_ib_qp *dst = xa_load(&d->qps, qp->attr.dest_qp_num);

	if (!dst || (dst->state != IB_QPS_RTR && dst->state != IB_QPS_RTS))
		return NULL;
	return dst;
}

static void pl_ib_qp_error(struct pl_ib_dev *d, struct pl_ib_qp *qp);

/* A SEND's completion on its sender; an error moves the sender to ERR. */
static void pl_ib_send_done(struct pl_ib_dev *d, struct pl_ib_pending *p,
			    enum ib_wc_status status)
{
	status = pl_ib_unacked_status(p->src, status);
	if (status != IB_WC_SUCCESS || pl_ib_signaled(p->src, p->send_flags))
		pl_ib_complete(p->src->ibqp.send_cq, p->src, p->wr_id,
			       IB_WC_SEND, status, 0, NULL, false);
	if (status != IB_WC_SUCCESS && p->src->state != IB_QPS_ERR)
		pl_ib_qp_error(d, p->src);
}

/*
 * Carries out SEND @p into the oldest receive of @dst (which has one):
 * the device WRITEs each piece of the sender's gather list into the
 * receive's scatter list. Completes both sides. Frees nothing.
 */
static void pl_ib_deliver(struct pl_ib_dev *d, struct pl_ib_pending *p,
			  struct pl_ib_qp *dst)
{
	struct pl_ib_rwqe *r = &dst->rq[dst->rq_head];
	enum ib_wc_status sst = IB_WC_SUCCESS, rst = IB_WC_SUCCESS;
	u32 si = 0, di = 0, soff = 0, doff = 0, total = 0, chunk;
	/*
	 * A UD receive starts with the 40 bytes of a GRH. No GRH travels
	 * here (one port, no routing): they are left as they are and the
	 * completion has no IB_WC_GRH, as for an IB packet without one.
	 */
	u32 grh = dst->ibqp.qp_type == IB_QPT_UD ? sizeof(struct ib_grh) : 0;
	struct pl_ib_mr *smr, *tmr;
	const struct ib_sge *s, *t;
	int err;

	dst->rq_head = (dst->rq_head + 1) % dst->cap.max_recv_wr;
	dst->rq_count--;
	for (chunk = grh; chunk && di < r->num_sge; ) {
		u32 n = min(chunk, r->sge[di].length - doff);

		chunk -= n;
		doff += n;
		if (doff == r->sge[di].length) {
			di++;
			doff = 0;
		}
	}
	if (chunk) {		/* the receive cannot hold a GRH */
		rst = IB_WC_LOC_LEN_ERR;
		si = p->num_sge;
	}
	while (si < p->num_sge) {
		s = &p->sge[si];
		if (soff == s->length) {
			si++;
			soff = 0;
			continue;
		}
		if (di == r->num_sge) {
			/* the message is longer than the receive */
			rst = IB_WC_LOC_LEN_ERR;
			sst = IB_WC_REM_INV_REQ_ERR;
			break;
		}
		t = &r->sge[di];
		if (doff == t->length) {
			di++;
			doff = 0;
			continue;
		}
		smr = pl_ib_mr_range(d, s->lkey, s->addr, s->length,
				     p->src->uctx);
		if (!smr) {
			sst = IB_WC_LOC_PROT_ERR;
			rst = IB_WC_REM_ABORT_ERR;
			break;
		}
		tmr = pl_ib_mr_range(d, t->lkey, t->addr, t->length,
				     dst->uctx);
		if (!tmr || !(tmr->access & IB_ACCESS_LOCAL_WRITE)) {
			rst = IB_WC_LOC_PROT_ERR;
			sst = IB_WC_REM_OP_ERR;
			break;
		}
		chunk = min(s->length - soff, t->length - doff);
		err = pinlease_kctx_dma(p->src->uctx->kctx, PL_OP_WRITE,
					smr->key, s->addr - smr->iova + soff,
					tmr->key, t->addr - tmr->iova + doff,
					chunk);
		if (err) {
			sst = pl_ib_dma_status(err, smr);
			/* the receive buffer was revoked: the responder's fault */
			rst = err == -ECANCELED && READ_ONCE(tmr->revoked) ?
			      IB_WC_LOC_PROT_ERR : IB_WC_GENERAL_ERR;
			break;
		}
		soff += chunk;
		doff += chunk;
		total += chunk;
	}
	pl_ib_complete(dst->ibqp.recv_cq, dst, r->wr_id, IB_WC_RECV, rst,
		       total + grh, p, p->send_flags & IB_SEND_SOLICITED);
	if (rst != IB_WC_SUCCESS)
		pl_ib_qp_error(d, dst);
	pl_ib_send_done(d, p, sst);
}

/*
 * @qp goes to ERR: its receives complete with WR_FLUSH_ERR, the SENDs
 * waiting on it fail on their senders (as a retry count running out), and
 * its own waiting SENDs are flushed.
 */
static void pl_ib_qp_error(struct pl_ib_dev *d, struct pl_ib_qp *qp)
{
	struct pl_ib_pending *p, *tmp;
	struct pl_ib_qp *other;
	LIST_HEAD(waiting);
	unsigned long idx;

	qp->state = IB_QPS_ERR;
	while (qp->rq_count) {
		pl_ib_complete(qp->ibqp.recv_cq, qp, qp->rq[qp->rq_head].wr_id,
			       IB_WC_RECV, IB_WC_WR_FLUSH_ERR, 0, NULL, false);
		qp->rq_head = (qp->rq_head + 1) % qp->cap.max_recv_wr;
		qp->rq_count--;
	}
	/*
	 * Off the QP first: a failing sender goes to ERR too, and that walks
	 * every QP's pending list (this one included).
	 */
	list_splice_init(&qp->pending, &waiting);
	list_for_each_entry_safe(p, tmp, &waiting, node) {
		list_del(&p->node);
		pl_ib_send_done(d, p, IB_WC_RETRY_EXC_ERR);
		kfree(p);
	}
	xa_for_each(&d->qps, idx, other) {
		list_for_each_entry_safe(p, tmp, &other->pending, node) {
			if (p->src != qp)
				continue;
			list_del(&p->node);
			pl_ib_complete(qp->ibqp.send_cq, qp, p->wr_id,
				       IB_WC_SEND, IB_WC_WR_FLUSH_ERR, 0, NULL,
				       false);
			kfree(p);
		}
	}
}

/* RDMA WRITE or READ between the local gather list and the remote MR. */
static enum ib_wc_status pl_ib_rdma(struct pl_ib_dev *d, struct pl_ib_qp *qp,
				    const struct ib_send_wr *wr)
{
	const struct ib_rdma_wr *rw = rdma_wr(wr);
	bool read = wr->opcode == IB_WR_RDMA_READ;
	struct pl_ib_mr *rmr, *lmr;
	struct pl_ib_qp *dst;
	int remote = read ? IB_ACCESS_REMOTE_READ : IB_ACCESS_REMOTE_WRITE;
	u64 total = 0, roff;
	int i, err;

	dst = pl_ib_dest(d, qp);
	if (!dst)
		return IB_WC_RETRY_EXC_ERR;
	for (i = 0; i < wr->num_sge; i++)
		total += wr->sg_list[i].length;
	/* a responder checks its QP's access flags, then the MR's */
	if (!(dst->attr.qp_access_flags & remote))
		return IB_WC_REM_ACCESS_ERR;
	rmr = pl_ib_mr_range(d, rw->rkey, rw->remote_addr, total, dst->uctx);
	if (!rmr || !(rmr->access & remote))
		return IB_WC_REM_ACCESS_ERR;
	roff = rw->remote_addr - rmr->iova;
	for (i = 0; i < wr->num_sge; i++) {
		const struct ib_sge *s = &wr->sg_list[i];

		lmr = pl_ib_mr_range(d, s->lkey, s->addr, s->length, qp->uctx);
		if (!lmr || (read && !(lmr->access & IB_ACCESS_LOCAL_WRITE)))
			return IB_WC_LOC_PROT_ERR;
		if (s->length) {
			err = pinlease_kctx_dma(qp->uctx->kctx,
						read ? PL_OP_READ : PL_OP_WRITE,
						lmr->key, s->addr - lmr->iova,
						rmr->key, roff, s->length);
			if (err)
				return pl_ib_dma_status(err, lmr);
		}
		roff += s->length;
	}
	return IB_WC_SUCCESS;
}

/*
 * The bounce MR of @uc (pl_ib.h), registered at the first call: one page
 * the device may READ. Caller holds d->wr_lock. Return: 0 or the error.
 */
static int pl_ib_bounce(struct pl_ib_ucontext *uc)
{
	u64 pa;
	int err;

	if (uc->bounce_key)
		return 0;
	if (!uc->bounce) {
		uc->bounce = alloc_page(GFP_KERNEL | __GFP_ZERO);
		if (!uc->bounce)
			return -ENOMEM;
	}
	pa = page_to_phys(uc->bounce);
	/* no file, no lease; no mr_priv: nothing to unpin if it is revoked */
	err = pinlease_kctx_reg_mr(uc->kctx, &pa, 1, 0, PAGE_SIZE,
				   PL_ACCESS_READ, NULL, NULL, &uc->bounce_key);
	if (err)
		uc->bounce_key = 0;
	/* the device may still read the page: it is leaked, not freed */
	if (err == -EREMOTEIO)
		uc->bounce = NULL;
	return err;
}

/*
 * ATOMIC CMP_AND_SWP or FETCH_AND_ADD: the device's COMPARE_SWAP or
 * FETCH_ADD on the remote MR's 8-byte word (pinlease_kctx_atomic()), then
 * the word's original value into the local 8-byte scatter entry.
 *
 * Those 8 bytes go into the local MR by the device's WRITE from the
 * context's bounce MR (pl_ib_bounce()), not by the driver writing the
 * MR's pinned page: only the device knows whether the MR's pages are
 * still the MR's at that moment. A layout lease break can revoke the MR
 * and unpin its pages without d->wr_lock, and the device then refuses
 * the WRITE (a local protection error here) where a CPU write would land
 * in a page that is no longer the MR's. The cost is one more device
 * round trip per atomic, and one MR per context that uses atomics.
 */
static enum ib_wc_status pl_ib_atomic(struct pl_ib_dev *d,
				      struct pl_ib_qp *qp,
				      const struct ib_send_wr *wr)
{
	const struct ib_atomic_wr *aw = atomic_wr(wr);
	const struct ib_sge *s = &wr->sg_list[0];
	bool cas = wr->opcode == IB_WR_ATOMIC_CMP_AND_SWP;
	struct pl_ib_mr *rmr, *lmr;
	struct pl_ib_qp *dst;
	u64 original;
	void *va;
	int err;

	if (wr->num_sge != 1 || s->length != sizeof(original))
		return IB_WC_LOC_LEN_ERR;
	lmr = pl_ib_mr_range(d, s->lkey, s->addr, s->length, qp->uctx);
	if (!lmr || !(lmr->access & IB_ACCESS_LOCAL_WRITE))
		return IB_WC_LOC_PROT_ERR;
	dst = pl_ib_dest(d, qp);
	if (!dst)
		return IB_WC_RETRY_EXC_ERR;
	if (!(dst->attr.qp_access_flags & IB_ACCESS_REMOTE_ATOMIC))
		return IB_WC_REM_ACCESS_ERR;
	if (aw->remote_addr & (sizeof(original) - 1))
		return IB_WC_REM_INV_REQ_ERR;	/* as a responder: misaligned */
	rmr = pl_ib_mr_range(d, aw->rkey, aw->remote_addr, sizeof(original),
			     dst->uctx);
	if (!rmr || !(rmr->access & IB_ACCESS_REMOTE_ATOMIC))
		return IB_WC_REM_ACCESS_ERR;
	/* before the atomic: a result with nowhere to go would be lost */
	err = pl_ib_bounce(qp->uctx);
	if (err) {
		pr_warn_ratelimited("%s: QP %u: no bounce MR for an atomic's result (%d)\n",
				    dev_name(&d->ibdev.dev), qp->ibqp.qp_num, err);
		return IB_WC_LOC_QP_OP_ERR;
	}
	err = pinlease_kctx_atomic(qp->uctx->kctx,
				   cas ? PL_OP_COMPARE_SWAP : PL_OP_FETCH_ADD,
				   rmr->key, aw->remote_addr - rmr->iova,
				   aw->compare_add, cas ? aw->swap : 0,
				   &original);
	if (err)
		return pl_ib_dma_status(err, NULL);

	va = kmap_local_page(qp->uctx->bounce);
	memcpy(va, &original, sizeof(original));
	kunmap_local(va);
	err = pinlease_kctx_dma(qp->uctx->kctx, PL_OP_WRITE,
				qp->uctx->bounce_key, 0, lmr->key,
				s->addr - lmr->iova, sizeof(original));
	return err ? IB_WC_LOC_PROT_ERR : IB_WC_SUCCESS;
}

/*
 * A UD SEND's destination: the UD QP @wr names, ready to receive, whose
 * Q_Key matches (a remote_qkey with the high bit set means the sender's
 * own), or NULL (the message is dropped). A message longer than the MTU
 * is the sender's local length error.
 */
static enum ib_wc_status pl_ib_ud_check(struct pl_ib_dev *d,
					struct pl_ib_qp *qp,
					const struct ib_send_wr *wr,
					struct pl_ib_qp **dstp)
{
	const struct ib_ud_wr *uw = ud_wr(wr);
	u32 qkey = uw->remote_qkey;
	struct pl_ib_qp *dst;
	u64 total = 0;
	int i;

	*dstp = NULL;
	for (i = 0; i < wr->num_sge; i++)
		total += wr->sg_list[i].length;
	if (total > ib_mtu_enum_to_int(IB_MTU_4096))
		return IB_WC_LOC_LEN_ERR;
	if (qkey & 0x80000000)
		qkey = qp->attr.qkey;
	dst = xa_load(&d->qps, uw->remote_qpn);
	if (dst && dst->ibqp.qp_type == IB_QPT_UD &&
	    (dst->state == IB_QPS_RTR || dst->state == IB_QPS_RTS) &&
	    dst->attr.qkey == qkey)
		*dstp = dst;
	return IB_WC_SUCCESS;
}

/* One send work request; an error return makes post_send fail at @wr. */
static int pl_ib_send_one(struct pl_ib_dev *d, struct pl_ib_qp *qp,
			  const struct ib_send_wr *wr)
{
	enum ib_wc_opcode wc_op;
	enum ib_wc_status st;
	struct pl_ib_pending *p;
	struct pl_ib_qp *dst;
	bool atomic;
	int i;

	if (wr->num_sge > qp->cap.max_send_sge ||
	    (wr->send_flags & IB_SEND_INLINE))
		return -EINVAL;
	/* UC carries SENDs and RDMA WRITEs only, UD SENDs only */
	if (qp->ibqp.qp_type != IB_QPT_RC && wr->opcode != IB_WR_SEND &&
	    wr->opcode != IB_WR_SEND_WITH_IMM &&
	    (qp->ibqp.qp_type == IB_QPT_UD || wr->opcode != IB_WR_RDMA_WRITE))
		return -EINVAL;
	switch (wr->opcode) {
	case IB_WR_SEND:
	case IB_WR_SEND_WITH_IMM:
		wc_op = IB_WC_SEND;
		break;
	case IB_WR_RDMA_WRITE:
		wc_op = IB_WC_RDMA_WRITE;
		break;
	case IB_WR_RDMA_READ:
		wc_op = IB_WC_RDMA_READ;
		break;
	case IB_WR_ATOMIC_CMP_AND_SWP:
		wc_op = IB_WC_COMP_SWAP;
		break;
	case IB_WR_ATOMIC_FETCH_AND_ADD:
		wc_op = IB_WC_FETCH_ADD;
		break;
	default:
		return -EOPNOTSUPP;
	}
	if (qp->state == IB_QPS_ERR) {
		pl_ib_complete(qp->ibqp.send_cq, qp, wr->wr_id, wc_op,
			       IB_WC_WR_FLUSH_ERR, 0, NULL, false);
		return 0;
	}
	if (qp->state != IB_QPS_RTS)
		return -EINVAL;

	if (wc_op != IB_WC_SEND) {
		atomic = wc_op == IB_WC_COMP_SWAP || wc_op == IB_WC_FETCH_ADD;
		st = atomic ? pl_ib_atomic(d, qp, wr) : pl_ib_rdma(d, qp, wr);
		st = pl_ib_unacked_status(qp, st);
		if (st != IB_WC_SUCCESS || pl_ib_signaled(qp, wr->send_flags))
			pl_ib_complete(qp->ibqp.send_cq, qp, wr->wr_id, wc_op,
				       st, atomic ? sizeof(u64) : 0, NULL,
				       false);
		if (st != IB_WC_SUCCESS)
			pl_ib_qp_error(d, qp);
		return 0;
	}

	p = kzalloc_obj(*p, GFP_KERNEL);
	if (!p)
		return -ENOMEM;
	p->src = qp;
	p->wr_id = wr->wr_id;
	p->opcode = wr->opcode;
	p->send_flags = wr->send_flags;
	p->imm = wr->ex.imm_data;
	p->num_sge = wr->num_sge;
	for (i = 0; i < wr->num_sge; i++)
		p->sge[i] = wr->sg_list[i];
	if (qp->ibqp.qp_type == IB_QPT_UD) {
		st = pl_ib_ud_check(d, qp, wr, &dst);
		if (st != IB_WC_SUCCESS || !dst) {
			pl_ib_send_done(d, p, st);	/* dropped, or too long */
			kfree(p);
			return 0;
		}
	} else {
		dst = pl_ib_dest(d, qp);
	}
	if (!dst) {
		pl_ib_send_done(d, p, IB_WC_RETRY_EXC_ERR);
		kfree(p);
		return 0;
	}
	if (!dst->rq_count && qp->ibqp.qp_type != IB_QPT_RC) {
		pl_ib_send_done(d, p, IB_WC_SUCCESS);	/* dropped: no RNR */
		kfree(p);
		return 0;
	}
	if (!dst->rq_count) {
		list_add_tail(&p->node, &dst->pending);	/* until a receive */
		return 0;
	}
	pl_ib_deliver(d, p, dst);
	kfree(p);
	return 0;
}

/**
 * pl_ib_post_send() - carry out send work requests
 * @ibqp: the QP
 * @wr: the first of a list
 * @bad_wr: set to the request that failed
 *
 * Context: Process context (uverbs' POST_SEND); sleeps (device requests).
 * Locking: Takes d->wr_lock.
 * Return: 0, or -EINVAL / -EOPNOTSUPP / -ENOMEM for *@bad_wr.
 */
int pl_ib_post_send(struct ib_qp *ibqp, const struct ib_send_wr *wr,
		    const struct ib_send_wr **bad_wr)
{
	struct pl_ib_qp *qp = to_pl_ib_qp(ibqp);
	struct pl_ib_dev *d = qp_dev(qp);
	int err = 0;

	mutex_lock(&d->wr_lock);
	for (; wr; wr = wr->next) {
		err = pl_ib_send_one(d, qp, wr);
		if (err) {
			*bad_wr = wr;
			break;
		}
	}
	mutex_unlock(&d->wr_lock);
	return err;
}

/**
 * pl_ib_post_recv() - post receives; carry out SENDs waiting for them
 * @ibqp: the QP
 * @wr: the first of a list
 * @bad_wr: set to the request that failed
 *
 * Context: Process context (uverbs' POST_RECV); sleeps (device requests).
 * Locking: Takes d->wr_lock.
 * Return: 0, or -EINVAL (state, SGEs) / -ENOMEM (queue full) for *@bad_wr.
 */
int pl_ib_post_recv(struct ib_qp *ibqp, const struct ib_recv_wr *wr,
		    const struct ib_recv_wr **bad_wr)
{
	struct pl_ib_qp *qp = to_pl_ib_qp(ibqp);
	struct pl_ib_dev *d = qp_dev(qp);
	struct pl_ib_pending *p;
	struct pl_ib_rwqe *r;
	int err = 0, i;

	mutex_lock(&d->wr_lock);
	for (; wr; wr = wr->next) {
		if (qp->state == IB_QPS_RESET ||
		    wr->num_sge > qp->cap.max_recv_sge)
			err = -EINVAL;
		else if (qp->rq_count == qp->cap.max_recv_wr)
			err = -ENOMEM;
		if (err) {
			*bad_wr = wr;
			break;
		}
		if (qp->state == IB_QPS_ERR) {
			pl_ib_complete(qp->ibqp.recv_cq, qp, wr->wr_id,
				       IB_WC_RECV, IB_WC_WR_FLUSH_ERR, 0, NULL,
				       false);
			continue;
		}
		r = &qp->rq[(qp->rq_head + qp->rq_count) % qp->cap.max_recv_wr];
		r->wr_id = wr->wr_id;
		r->num_sge = wr->num_sge;
		for (i = 0; i < wr->num_sge; i++)
			r->sge[i] = wr->sg_list[i];
		qp->rq_count++;
	}
	while (qp->rq_count && !list_empty(&qp->pending)) {
		p = list_first_entry(&qp->pending, struct pl_ib_pending, node);
		list_del(&p->node);
		pl_ib_deliver(d, p, qp);
		kfree(p);
	}
	mutex_unlock(&d->wr_lock);
	return err;
}

/**
 * pl_ib_create_qp() - an RC, UC or UD QP of a user context
 * @ibqp: the QP ib_core allocated (struct pl_ib_qp), CQs set
 * @init: type, capabilities (written back), signalling
 * @udata: the uverbs call's (no driver data); NULL: a kernel caller
 *
 * Context: Process context; sleeps.
 * Locking: Takes d->wr_lock to enter the QP in d->qps.
 * Return: 0, -EOPNOTSUPP (not RC/UC/UD, SRQ, flags, kernel caller), -EINVAL
 * (capabilities), -ENOMEM, -EBUSY (no QP number left).
 */
int pl_ib_create_qp(struct ib_qp *ibqp, struct ib_qp_init_attr *init,
		    struct ib_udata *udata)
{
	struct pl_ib_qp *qp = to_pl_ib_qp(ibqp);
	struct pl_ib_dev *d = qp_dev(qp);
	struct ib_qp_cap *cap = &init->cap;
	u32 qpn;
	int err;

	if (!udata ||
	    (init->qp_type != IB_QPT_RC && init->qp_type != IB_QPT_UC &&
	     init->qp_type != IB_QPT_UD) ||
	    init->srq ||
	    init->create_flags)
		return -EOPNOTSUPP;
	if (cap->max_send_wr > PL_IB_MAX_QP_WR ||
	    cap->max_recv_wr > PL_IB_MAX_QP_WR ||
	    cap->max_send_sge > PL_IB_MAX_SGE ||
	    cap->max_recv_sge > PL_IB_MAX_SGE || cap->max_inline_data)
		return -EINVAL;
	qp->uctx = rdma_udata_to_drv_context(udata, struct pl_ib_ucontext,
					     ibuc);
	qp->cap = *cap;
	qp->cap.max_recv_wr = max_t(u32, cap->max_recv_wr, 1);
	qp->sq_sig_type = init->sq_sig_type;
	qp->state = IB_QPS_RESET;
	INIT_LIST_HEAD(&qp->pending);
	qp->rq = kvcalloc(qp->cap.max_recv_wr, sizeof(*qp->rq), GFP_KERNEL);
	if (!qp->rq)
		return -ENOMEM;

	mutex_lock(&d->wr_lock);
	err = xa_alloc_cyclic(&d->qps, &qpn, qp,
			      XA_LIMIT(PL_IB_MIN_QPN, PL_IB_MAX_QPN),
			      &d->next_qpn, GFP_KERNEL);
	mutex_unlock(&d->wr_lock);
	if (err < 0) {
		kvfree(qp->rq);
		return err;
	}
	ibqp->qp_num = qpn;
	*cap = qp->cap;
	return 0;
}

/* Checks and keeps what modify_qp sets (address vectors: the DLID). */
static int pl_ib_qp_store(struct pl_ib_qp *qp, const struct ib_qp_attr *a,
			  int mask)
{
	if ((mask & IB_QP_PORT) && a->port_num != 1)
		return -EINVAL;
	if ((mask & IB_QP_PKEY_INDEX) && a->pkey_index)
		return -EINVAL;
	if ((mask & IB_QP_PATH_MTU) && a->path_mtu > IB_MTU_4096)
		return -EINVAL;
	if ((mask & IB_QP_AV) &&
	    rdma_ah_get_dlid(&a->ah_attr) != PINLEASE_IB_PORT_LID)
		return -EINVAL;	/* QPs connect on this device only */
	if ((mask & IB_QP_DEST_QPN) && a->dest_qp_num > PL_IB_MAX_QPN)
		return -EINVAL;

	if (mask & IB_QP_ACCESS_FLAGS)
		qp->attr.qp_access_flags = a->qp_access_flags;
	if (mask & IB_QP_PORT)
		qp->attr.port_num = a->port_num;
	if (mask & IB_QP_PATH_MTU)
		qp->attr.path_mtu = a->path_mtu;
	if (mask & IB_QP_DEST_QPN)
		qp->attr.dest_qp_num = a->dest_qp_num;
	if (mask & IB_QP_RQ_PSN)
		qp->attr.rq_psn = a->rq_psn;
	if (mask & IB_QP_SQ_PSN)
		qp->attr.sq_psn = a->sq_psn;
	if (mask & IB_QP_MAX_QP_RD_ATOMIC)
		qp->attr.max_rd_atomic = a->max_rd_atomic;
	if (mask & IB_QP_MAX_DEST_RD_ATOMIC)
		qp->attr.max_dest_rd_atomic = a->max_dest_rd_atomic;
	if (mask & IB_QP_MIN_RNR_TIMER)
		qp->attr.min_rnr_timer = a->min_rnr_timer;
	if (mask & IB_QP_TIMEOUT)
		qp->attr.timeout = a->timeout;
	if (mask & IB_QP_RETRY_CNT)
		qp->attr.retry_cnt = a->retry_cnt;
	if (mask & IB_QP_RNR_RETRY)
		qp->attr.rnr_retry = a->rnr_retry;
	if (mask & IB_QP_QKEY)
		qp->attr.qkey = a->qkey;
	if (mask & IB_QP_AV)
		qp->dlid = rdma_ah_get_dlid(&a->ah_attr);
	return 0;
}

/* RESET: the queues are emptied without completions. */
static void pl_ib_qp_reset(struct pl_ib_dev *d, struct pl_ib_qp *qp)
{
	struct pl_ib_pending *p, *tmp;
	LIST_HEAD(waiting);

	qp->rq_head = 0;
	qp->rq_count = 0;
	list_splice_init(&qp->pending, &waiting);	/* as in pl_ib_qp_error() */
	list_for_each_entry_safe(p, tmp, &waiting, node) {
		list_del(&p->node);
		pl_ib_send_done(d, p, IB_WC_RETRY_EXC_ERR);
		kfree(p);
	}
}

/**
 * pl_ib_modify_qp() - a state transition and the attributes it carries
 * @ibqp: the QP
 * @attr: the new values
 * @mask: IB_QP_* of the values given
 * @udata: unused (no driver data)
 *
 * Context: Process context; may sleep (a move to ERR completes work).
 * Locking: Takes d->wr_lock.
 * Return: 0, or -EINVAL (transition, mask or value).
 */
int pl_ib_modify_qp(struct ib_qp *ibqp, struct ib_qp_attr *attr, int mask,
		    struct ib_udata *udata)
{
	struct pl_ib_qp *qp = to_pl_ib_qp(ibqp);
	struct pl_ib_dev *d = qp_dev(qp);
	enum ib_qp_state cur, next;
	int err;

	mutex_lock(&d->wr_lock);
	cur = (mask & IB_QP_CUR_STATE) ? attr->cur_qp_state : qp->state;
	next = (mask & IB_QP_STATE) ? attr->qp_state : cur;
	err = -EINVAL;
	if (cur != qp->state ||
	    !ib_modify_qp_is_ok(cur, next, ibqp->qp_type, mask))
		goto out_unlock;
	err = pl_ib_qp_store(qp, attr, mask);
	if (err)
		goto out_unlock;
	if (next == IB_QPS_ERR && qp->state != IB_QPS_ERR)
		pl_ib_qp_error(d, qp);
	else if (next == IB_QPS_RESET)
		pl_ib_qp_reset(d, qp);
	qp->state = next;
out_unlock:
	mutex_unlock(&d->wr_lock);
	return err;
}

/**
 * pl_ib_query_qp() - the QP's state, attributes and capabilities
 * @ibqp: the QP
 * @attr: filled in (ib_core does not zero it)
 * @mask: what the caller wants (everything is filled)
 * @init: filled in
 *
 * Context: Process context.
 * Locking: Takes d->wr_lock.
 * Return: 0.
 */
int pl_ib_query_qp(struct ib_qp *ibqp, struct ib_qp_attr *attr, int mask,
		   struct ib_qp_init_attr *init)
{
	struct pl_ib_qp *qp = to_pl_ib_qp(ibqp);
	struct pl_ib_dev *d = qp_dev(qp);

	memset(attr, 0, sizeof(*attr));
	memset(init, 0, sizeof(*init));
	mutex_lock(&d->wr_lock);
	*attr = qp->attr;
	attr->qp_state = qp->state;
	attr->cur_qp_state = qp->state;
	attr->cap = qp->cap;
	attr->ah_attr.type = RDMA_AH_ATTR_TYPE_IB;
	rdma_ah_set_dlid(&attr->ah_attr, qp->dlid);
	rdma_ah_set_port_num(&attr->ah_attr, 1);
	init->send_cq = ibqp->send_cq;
	init->recv_cq = ibqp->recv_cq;
	init->cap = qp->cap;
	init->qp_type = ibqp->qp_type;
	init->sq_sig_type = qp->sq_sig_type;
	mutex_unlock(&d->wr_lock);
	return 0;
}

/**
 * pl_ib_destroy_qp() - forget a QP
 * @ibqp: the QP
 * @udata: unused
 *
 * SENDs waiting on it fail on their senders; its own waiting SENDs are
 * dropped with it (its CQs are being released). Never fails.
 *
 * Context: Process context.
 * Locking: Takes d->wr_lock.
 * Return: 0.
 */
int pl_ib_destroy_qp(struct ib_qp *ibqp, struct ib_udata *udata)
{
	struct pl_ib_qp *qp = to_pl_ib_qp(ibqp);
	struct pl_ib_dev *d = qp_dev(qp);
	struct pl_ib_pending *p, *tmp;
	struct pl_ib_qp *other;
	unsigned long idx;

	mutex_lock(&d->wr_lock);
	xa_erase(&d->qps, ibqp->qp_num);
	pl_ib_qp_reset(d, qp);
	xa_for_each(&d->qps, idx, other) {
		list_for_each_entry_safe(p, tmp, &other->pending, node) {
			if (p->src == qp) {
				list_del(&p->node);
				kfree(p);
			}
		}
	}
	mutex_unlock(&d->wr_lock);
	kvfree(qp->rq);
	return 0;
}
