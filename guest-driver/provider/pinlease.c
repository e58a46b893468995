// SPDX-License-Identifier: GPL-2.0 OR Linux-OpenIB
/*
 * libpinlease-rdmav34.so: the rdma-core provider for pinlease_ib.ko's
 * devices (pinlease_ib0, ...). Built out of rdma-core's tree against the
 * vendored private headers of rdma-core 44.0 (rdma-core-44.0/, README.md)
 * and the host's libibverbs1 (IBVERBS_PRIVATE_34).
 *
 * Every verb goes through the kernel's uverbs commands (ibv_cmd_*) with
 * no driver data: the provider maps nothing and keeps no state beyond
 * what libibverbs needs, so a device the kernel disassociates leaves
 * nothing behind in user space but the fd (whose verbs then fail with
 * EIO). Devices are matched by name (PINLEASE_IB_NAME_PREFIX) and the
 * kernel's uverbs ABI version; both come from pinlease_ib_abi.h, which
 * pinlease_ib.ko includes too.
 *
 * The extended QP API (ibv_create_qp_ex with send_ops_flags, ibv_wr_*) is
 * the provider's only state of its own: the work requests of one
 * ibv_wr_start()..ibv_wr_complete() batch are collected as struct
 * ibv_send_wr and posted by one ibv_cmd_post_send(), as ibv_post_send()
 * would. The extended CQ API (ibv_create_cq_ex, ibv_start_poll and the
 * ibv_wc_read_* calls) reads one struct ibv_wc at a time through
 * ibv_cmd_poll_cq().
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <infiniband/driver.h>
#include <infiniband/verbs.h>

#include "pinlease_ib_abi.h"

struct pl_device {
	struct verbs_device vdev;
};

struct pl_context {
	struct verbs_context ibv_ctx;
};

/* One work request of an ibv_wr_*() batch, with its gather list. */
struct pl_wr {
	struct ibv_send_wr wr;
	struct ibv_sge sge[];		/* max_send_sge */
};

struct pl_qp {
	struct verbs_qp vqp;
	/* the batch of the extended API (ibv_wr_start to ibv_wr_complete) */
	uint32_t max_wr, max_sge;	/* the QP's capabilities */
	uint32_t nwr;			/* work requests in the batch */
	int err;			/* the batch's first error, for wr_complete */
	char *wrs;			/* max_wr entries of wr_size bytes */
	size_t wr_size;
};

/* ibv_wr_*() ops of the extended QP API this device carries out. */
#define PL_SEND_OPS (IBV_QP_EX_WITH_SEND | IBV_QP_EX_WITH_SEND_WITH_IMM | \
		     IBV_QP_EX_WITH_RDMA_WRITE | IBV_QP_EX_WITH_RDMA_READ | \
		     IBV_QP_EX_WITH_ATOMIC_CMP_AND_SWP | \
		     IBV_QP_EX_WITH_ATOMIC_FETCH_AND_ADD)

/* A CQ; @cur is the extended API's current completion. */
struct pl_cq {
	struct verbs_cq vcq;
	struct ibv_wc cur;
};

static struct pl_cq *to_pl_cq(struct ibv_cq_ex *cqx)
{
	return container_of(cqx, struct pl_cq, vcq.cq_ex);
}

static struct pl_qp *to_pl_qp(struct ibv_qp *ibqp)
{
	return container_of(ibqp, struct pl_qp, vqp.qp);
}

static int pl_query_device_ex(struct ibv_context *ctx,
			      const struct ibv_query_device_ex_input *input,
			      struct ibv_device_attr_ex *attr, size_t attr_size)
{
	struct ib_uverbs_ex_query_device_resp resp;
	size_t resp_size = sizeof(resp);

	return ibv_cmd_query_device_any(ctx, input, attr, attr_size, &resp,
					&resp_size);
}

static int pl_query_port(struct ibv_context *ctx, uint8_t port,
			 struct ibv_port_attr *attr)
{
	struct ibv_query_port cmd;

	return ibv_cmd_query_port(ctx, port, attr, &cmd, sizeof(cmd));
}

static struct ibv_pd *pl_alloc_pd(struct ibv_context *ctx)
{
	struct ib_uverbs_alloc_pd_resp resp;
	struct ibv_alloc_pd cmd;
	struct ibv_pd *pd;
	int ret;

	pd = calloc(1, sizeof(*pd));
	if (!pd)
		return NULL;
	ret = ibv_cmd_alloc_pd(ctx, pd, &cmd, sizeof(cmd), &resp,
			       sizeof(resp));
	if (ret) {
		free(pd);
		errno = ret;
		return NULL;
	}
	return pd;
}

static int pl_dealloc_pd(struct ibv_pd *pd)
{
	int ret = ibv_cmd_dealloc_pd(pd);

	if (!ret)
		free(pd);
	return ret;
}

static struct ibv_mr *pl_reg_mr(struct ibv_pd *pd, void *addr, size_t length,
				uint64_t hca_va, int access)
{
	struct ib_uverbs_reg_mr_resp resp;
	struct ibv_reg_mr cmd;
	struct verbs_mr *vmr;
	int ret;

	vmr = calloc(1, sizeof(*vmr));
	if (!vmr)
		return NULL;
	ret = ibv_cmd_reg_mr(pd, addr, length, hca_va, access, vmr, &cmd,
			     sizeof(cmd), &resp, sizeof(resp));
	if (ret) {
		free(vmr);
		errno = ret;
		return NULL;
	}
	return &vmr->ibv_mr;
}

static int pl_dereg_mr(struct verbs_mr *vmr)
{
	int ret = ibv_cmd_dereg_mr(vmr);

	if (!ret)
		free(vmr);
	return ret;
}

static struct ibv_cq *pl_create_cq(struct ibv_context *ctx, int cqe,
				   struct ibv_comp_channel *channel,
				   int comp_vector)
{
	struct ib_uverbs_create_cq_resp resp;
	struct ibv_create_cq cmd;
	struct pl_cq *cq;
	int ret;

	cq = calloc(1, sizeof(*cq));
	if (!cq)
		return NULL;
	ret = ibv_cmd_create_cq(ctx, cqe, channel, comp_vector, &cq->vcq.cq,
				&cmd, sizeof(cmd), &resp, sizeof(resp));
	if (ret) {
		free(cq);
		errno = ret;
		return NULL;
	}
	return &cq->vcq.cq;
}

static int pl_resize_cq(struct ibv_cq *cq, int cqe)
{
	struct ib_uverbs_resize_cq_resp resp;
	struct ibv_resize_cq cmd;

	return ibv_cmd_resize_cq(cq, cqe, &cmd, sizeof(cmd), &resp,
				 sizeof(resp));
}

/* The next completion into cq->cur: 0, ENOENT (none), or the error. */
static int pl_cq_next(struct ibv_cq_ex *cqx)
{
	struct pl_cq *cq = to_pl_cq(cqx);
	int n = ibv_cmd_poll_cq(ibv_cq_ex_to_cq(cqx), 1, &cq->cur);

	if (n < 0)	/* ibv_cmd_poll_cq(): -1, the write's errno */
		return errno ? errno : EIO;
	if (!n)
		return ENOENT;
	cqx->wr_id = cq->cur.wr_id;
	cqx->status = cq->cur.status;
	return 0;
}

static int pl_cq_start_poll(struct ibv_cq_ex *cqx,
			    struct ibv_poll_cq_attr *attr)
{
	if (attr->comp_mask)
		return EINVAL;
	return pl_cq_next(cqx);
}

static void pl_cq_end_poll(struct ibv_cq_ex *cqx)
{
}

static enum ibv_wc_opcode pl_cq_read_opcode(struct ibv_cq_ex *cqx)
{
	return to_pl_cq(cqx)->cur.opcode;
}

static uint32_t pl_cq_read_vendor_err(struct ibv_cq_ex *cqx)
{
	return to_pl_cq(cqx)->cur.vendor_err;
}

static uint32_t pl_cq_read_byte_len(struct ibv_cq_ex *cqx)
{
	return to_pl_cq(cqx)->cur.byte_len;
}

static __be32 pl_cq_read_imm_data(struct ibv_cq_ex *cqx)
{
	return to_pl_cq(cqx)->cur.imm_data;
}

static uint32_t pl_cq_read_qp_num(struct ibv_cq_ex *cqx)
{
	return to_pl_cq(cqx)->cur.qp_num;
}

static uint32_t pl_cq_read_src_qp(struct ibv_cq_ex *cqx)
{
	return to_pl_cq(cqx)->cur.src_qp;
}

static unsigned int pl_cq_read_wc_flags(struct ibv_cq_ex *cqx)
{
	return to_pl_cq(cqx)->cur.wc_flags;
}

static uint32_t pl_cq_read_slid(struct ibv_cq_ex *cqx)
{
	return to_pl_cq(cqx)->cur.slid;
}

static uint8_t pl_cq_read_sl(struct ibv_cq_ex *cqx)
{
	return to_pl_cq(cqx)->cur.sl;
}

static uint8_t pl_cq_read_dlid_path_bits(struct ibv_cq_ex *cqx)
{
	return to_pl_cq(cqx)->cur.dlid_path_bits;
}

/*
 * ibv_create_cq_ex(): the fields of struct ibv_wc only
 * (IBV_WC_STANDARD_FLAGS); timestamps, VLANs, flow tags and tag matching
 * are EOPNOTSUPP, as the API expects of a device without them.
 */
static struct ibv_cq_ex *pl_create_cq_ex(struct ibv_context *ctx,
					 struct ibv_cq_init_attr_ex *attr)
{
	struct ib_uverbs_ex_create_cq_resp resp;
	struct ibv_create_cq_ex cmd;
	struct ibv_cq_ex *cqx;
	struct pl_cq *cq;
	int ret;

	if (attr->wc_flags & ~(uint64_t)IBV_WC_STANDARD_FLAGS) {
		errno = EOPNOTSUPP;
		return NULL;
	}
	cq = calloc(1, sizeof(*cq));
	if (!cq)
		return NULL;
	ret = ibv_cmd_create_cq_ex(ctx, attr, &cq->vcq, &cmd, sizeof(cmd),
				   &resp, sizeof(resp), 0);
	if (ret) {
		free(cq);
		errno = ret;
		return NULL;
	}
	cqx = &cq->vcq.cq_ex;
	cqx->start_poll = pl_cq_start_poll;
	cqx->next_poll = pl_cq_next;
	cqx->end_poll = pl_cq_end_poll;
	cqx->read_opcode = pl_cq_read_opcode;
	cqx->read_vendor_err = pl_cq_read_vendor_err;
	cqx->read_wc_flags = pl_cq_read_wc_flags;
	cqx->read_byte_len = pl_cq_read_byte_len;
	cqx->read_imm_data = pl_cq_read_imm_data;
	cqx->read_qp_num = pl_cq_read_qp_num;
	cqx->read_src_qp = pl_cq_read_src_qp;
	cqx->read_slid = pl_cq_read_slid;
	cqx->read_sl = pl_cq_read_sl;
	cqx->read_dlid_path_bits = pl_cq_read_dlid_path_bits;
	return cqx;
}

static int pl_destroy_cq(struct ibv_cq *ibcq)
{
	struct pl_cq *cq = container_of(ibcq, struct pl_cq, vcq.cq);
	int ret = ibv_cmd_destroy_cq(ibcq);

	if (!ret)
		free(cq);
	return ret;
}

static struct ibv_qp *pl_create_qp(struct ibv_pd *pd,
				   struct ibv_qp_init_attr *attr)
{
	struct ib_uverbs_create_qp_resp resp;
	struct ibv_create_qp cmd;
	struct pl_qp *qp;
	int ret;

	qp = calloc(1, sizeof(*qp));
	if (!qp)
		return NULL;
	ret = ibv_cmd_create_qp(pd, &qp->vqp.qp, attr, &cmd, sizeof(cmd), &resp,
				sizeof(resp));
	if (ret) {
		free(qp);
		errno = ret;
		return NULL;
	}
	return &qp->vqp.qp;
}

/* The current (last started) work request of @qpx's batch, or NULL. */
static struct pl_wr *pl_wr_cur(struct ibv_qp_ex *qpx)
{
	struct pl_qp *qp = to_pl_qp(&qpx->qp_base);

	if (!qp->nwr)
		return NULL;
	return (struct pl_wr *)(qp->wrs + (qp->nwr - 1) * qp->wr_size);
}

/* Starts a work request of @opcode; its fields come with the op's call. */
static struct ibv_send_wr *pl_wr_new(struct ibv_qp_ex *qpx,
				     enum ibv_wr_opcode opcode)
{
	struct pl_qp *qp = to_pl_qp(&qpx->qp_base);
	struct pl_wr *w;

	if (qp->err)
		return NULL;
	if (qp->nwr == qp->max_wr) {
		qp->err = ENOMEM;	/* more than max_send_wr in one batch */
		return NULL;
	}
	w = (struct pl_wr *)(qp->wrs + qp->nwr++ * qp->wr_size);
	memset(w, 0, qp->wr_size);
	w->wr.wr_id = qpx->wr_id;
	w->wr.send_flags = qpx->wr_flags;
	w->wr.opcode = opcode;
	w->wr.sg_list = w->sge;
	return &w->wr;
}

static void pl_wr_start(struct ibv_qp_ex *qpx)
{
	struct pl_qp *qp = to_pl_qp(&qpx->qp_base);

	qp->nwr = 0;
	qp->err = 0;
}

static void pl_wr_abort(struct ibv_qp_ex *qpx)
{
	pl_wr_start(qpx);
}

static int pl_wr_complete(struct ibv_qp_ex *qpx)
{
	struct pl_qp *qp = to_pl_qp(&qpx->qp_base);
	struct ibv_send_wr *bad;
	struct pl_wr *w, *next;
	uint32_t i;
	int ret = qp->err;

	if (!ret && qp->nwr) {
		for (i = 0; i + 1 < qp->nwr; i++) {
			w = (struct pl_wr *)(qp->wrs + i * qp->wr_size);
			next = (struct pl_wr *)(qp->wrs + (i + 1) * qp->wr_size);
			w->wr.next = &next->wr;
		}
		w = (struct pl_wr *)qp->wrs;
		ret = ibv_cmd_post_send(&qp->vqp.qp, &w->wr, &bad);
	}
	pl_wr_start(qpx);
	return ret;
}

static void pl_wr_send(struct ibv_qp_ex *qpx)
{
	pl_wr_new(qpx, IBV_WR_SEND);
}

static void pl_wr_send_imm(struct ibv_qp_ex *qpx, __be32 imm_data)
{
	struct ibv_send_wr *wr = pl_wr_new(qpx, IBV_WR_SEND_WITH_IMM);

	if (wr)
		wr->imm_data = imm_data;
}

static void pl_wr_rdma(struct ibv_qp_ex *qpx, enum ibv_wr_opcode opcode,
		       uint32_t rkey, uint64_t remote_addr)
{
	struct ibv_send_wr *wr = pl_wr_new(qpx, opcode);

	if (wr) {
		wr->wr.rdma.rkey = rkey;
		wr->wr.rdma.remote_addr = remote_addr;
	}
}

static void pl_wr_rdma_write(struct ibv_qp_ex *qpx, uint32_t rkey,
			     uint64_t remote_addr)
{
	pl_wr_rdma(qpx, IBV_WR_RDMA_WRITE, rkey, remote_addr);
}

static void pl_wr_rdma_read(struct ibv_qp_ex *qpx, uint32_t rkey,
			    uint64_t remote_addr)
{
	pl_wr_rdma(qpx, IBV_WR_RDMA_READ, rkey, remote_addr);
}

static void pl_wr_atomic(struct ibv_qp_ex *qpx, enum ibv_wr_opcode opcode,
			 uint32_t rkey, uint64_t remote_addr,
			 uint64_t compare_add, uint64_t swap)
{
	struct ibv_send_wr *wr = pl_wr_new(qpx, opcode);

	if (wr) {
		wr->wr.atomic.rkey = rkey;
		wr->wr.atomic.remote_addr = remote_addr;
		wr->wr.atomic.compare_add = compare_add;
		wr->wr.atomic.swap = swap;
	}
}

static void pl_wr_atomic_cmp_swp(struct ibv_qp_ex *qpx, uint32_t rkey,
				 uint64_t remote_addr, uint64_t compare,
				 uint64_t swap)
{
	pl_wr_atomic(qpx, IBV_WR_ATOMIC_CMP_AND_SWP, rkey, remote_addr,
		     compare, swap);
}

static void pl_wr_atomic_fetch_add(struct ibv_qp_ex *qpx, uint32_t rkey,
				   uint64_t remote_addr, uint64_t add)
{
	pl_wr_atomic(qpx, IBV_WR_ATOMIC_FETCH_AND_ADD, rkey, remote_addr, add,
		     0);
}

static void pl_wr_set_sge(struct ibv_qp_ex *qpx, uint32_t lkey,
			  uint64_t addr, uint32_t length)
{
	struct pl_wr *w = pl_wr_cur(qpx);

	if (!w)
		return;
	w->sge[0] = (struct ibv_sge){ .addr = addr, .length = length,
				      .lkey = lkey };
	w->wr.num_sge = 1;
}

static void pl_wr_set_sge_list(struct ibv_qp_ex *qpx, size_t num_sge,
			       const struct ibv_sge *sg_list)
{
	struct pl_qp *qp = to_pl_qp(&qpx->qp_base);
	struct pl_wr *w = pl_wr_cur(qpx);

	if (!w)
		return;
	if (num_sge > qp->max_sge) {
		qp->err = EINVAL;	/* more than max_send_sge */
		return;
	}
	memcpy(w->sge, sg_list, num_sge * sizeof(*sg_list));
	w->wr.num_sge = num_sge;
}

/*
 * The kernel copies no inline data (every SGE is an MR's): a batch using
 * it fails at wr_complete.
 */
static void pl_wr_set_inline_data(struct ibv_qp_ex *qpx, void *addr,
				  size_t length)
{
	to_pl_qp(&qpx->qp_base)->err = EOPNOTSUPP;
}

static void pl_wr_set_inline_data_list(struct ibv_qp_ex *qpx, size_t num_buf,
				       const struct ibv_data_buf *buf_list)
{
	to_pl_qp(&qpx->qp_base)->err = EOPNOTSUPP;
}

static void pl_wr_set_ud_addr(struct ibv_qp_ex *qpx, struct ibv_ah *ah,
			      uint32_t remote_qpn, uint32_t remote_qkey)
{
	struct pl_wr *w = pl_wr_cur(qpx);

	if (!w)
		return;
	w->wr.wr.ud.ah = ah;
	w->wr.wr.ud.remote_qpn = remote_qpn;
	w->wr.wr.ud.remote_qkey = remote_qkey;
}

/*
 * ibv_create_qp_ex(): a QP as pl_create_qp() makes it, plus the ibv_wr_*
 * ops when send_ops_flags asks for them (only PL_SEND_OPS: the others
 * are EOPNOTSUPP, which is how a program learns they are missing).
 */
static struct ibv_qp *pl_create_qp_ex(struct ibv_context *ctx,
				      struct ibv_qp_init_attr_ex *attr)
{
	struct ibv_qp_init_attr_ex a = *attr;
	struct ib_uverbs_create_qp_resp resp;
	struct ibv_create_qp cmd;
	struct ibv_qp_ex *qpx;
	struct pl_qp *qp;
	int ret;

	/*
	 * ibv_cmd_create_qp_ex() takes PD and SEND_OPS_FLAGS only (EINVAL for
	 * the rest); no create flags is the same as none asked for, and what
	 * else the device lacks (create flags, TSO, RSS, XRC) is EOPNOTSUPP.
	 */
	if ((a.comp_mask & IBV_QP_INIT_ATTR_CREATE_FLAGS) && !a.create_flags)
		a.comp_mask &= ~IBV_QP_INIT_ATTR_CREATE_FLAGS;
	if ((a.comp_mask & ~(IBV_QP_INIT_ATTR_PD |
			     IBV_QP_INIT_ATTR_SEND_OPS_FLAGS)) ||
	    ((a.comp_mask & IBV_QP_INIT_ATTR_SEND_OPS_FLAGS) &&
	     (a.send_ops_flags & ~(uint64_t)PL_SEND_OPS))) {
		errno = EOPNOTSUPP;
		return NULL;
	}
	qp = calloc(1, sizeof(*qp));
	if (!qp)
		return NULL;
	ret = ibv_cmd_create_qp_ex(ctx, &qp->vqp, &a, &cmd, sizeof(cmd),
				   &resp, sizeof(resp));
	if (ret) {
		free(qp);
		errno = ret;
		return NULL;
	}
	attr->cap = a.cap;	/* what the kernel granted */
	if (!(a.comp_mask & IBV_QP_INIT_ATTR_SEND_OPS_FLAGS))
		return &qp->vqp.qp;

	qp->max_wr = a.cap.max_send_wr ? a.cap.max_send_wr : 1;
	qp->max_sge = a.cap.max_send_sge ? a.cap.max_send_sge : 1;
	qp->wr_size = sizeof(struct pl_wr) + qp->max_sge * sizeof(struct ibv_sge);
	qp->wr_size = (qp->wr_size + 7) & ~(size_t)7;
	qp->wrs = calloc(qp->max_wr, qp->wr_size);
	if (!qp->wrs) {
		ibv_cmd_destroy_qp(&qp->vqp.qp);
		free(qp);
		errno = ENOMEM;
		return NULL;
	}
	qpx = &qp->vqp.qp_ex;
	qpx->wr_start = pl_wr_start;
	qpx->wr_complete = pl_wr_complete;
	qpx->wr_abort = pl_wr_abort;
	qpx->wr_send = pl_wr_send;
	qpx->wr_send_imm = pl_wr_send_imm;
	qpx->wr_rdma_write = pl_wr_rdma_write;
	qpx->wr_rdma_read = pl_wr_rdma_read;
	qpx->wr_atomic_cmp_swp = pl_wr_atomic_cmp_swp;
	qpx->wr_atomic_fetch_add = pl_wr_atomic_fetch_add;
	qpx->wr_set_sge = pl_wr_set_sge;
	qpx->wr_set_sge_list = pl_wr_set_sge_list;
	qpx->wr_set_inline_data = pl_wr_set_inline_data;
	qpx->wr_set_inline_data_list = pl_wr_set_inline_data_list;
	qpx->wr_set_ud_addr = pl_wr_set_ud_addr;
	qp->vqp.comp_mask |= VERBS_QP_EX;
	return &qp->vqp.qp;
}

static int pl_query_qp(struct ibv_qp *qp, struct ibv_qp_attr *attr,
		       int attr_mask, struct ibv_qp_init_attr *init_attr)
{
	struct ibv_query_qp cmd;

	return ibv_cmd_query_qp(qp, attr, attr_mask, init_attr, &cmd,
				sizeof(cmd));
}

static int pl_modify_qp(struct ibv_qp *qp, struct ibv_qp_attr *attr,
			int attr_mask)
{
	struct ibv_modify_qp cmd;

	return ibv_cmd_modify_qp(qp, attr, attr_mask, &cmd, sizeof(cmd));
}

static int pl_destroy_qp(struct ibv_qp *ibqp)
{
	struct pl_qp *qp = to_pl_qp(ibqp);
	int ret = ibv_cmd_destroy_qp(ibqp);

	if (!ret) {
		free(qp->wrs);
		free(qp);
	}
	return ret;
}

static struct ibv_ah *pl_create_ah(struct ibv_pd *pd, struct ibv_ah_attr *attr)
{
	struct ib_uverbs_create_ah_resp resp;
	struct ibv_ah *ah;
	int ret;

	ah = calloc(1, sizeof(*ah));
	if (!ah)
		return NULL;
	ret = ibv_cmd_create_ah(pd, ah, attr, &resp, sizeof(resp));
	if (ret) {
		free(ah);
		errno = ret;
		return NULL;
	}
	return ah;
}

static int pl_destroy_ah(struct ibv_ah *ah)
{
	int ret = ibv_cmd_destroy_ah(ah);

	if (!ret)
		free(ah);
	return ret;
}

static void pl_free_context(struct ibv_context *ibctx);

static const struct verbs_context_ops pl_ctx_ops = {
	.query_device_ex = pl_query_device_ex,
	.query_port = pl_query_port,
	.alloc_pd = pl_alloc_pd,
	.dealloc_pd = pl_dealloc_pd,
	.reg_mr = pl_reg_mr,
	.dereg_mr = pl_dereg_mr,
	.create_cq = pl_create_cq,
	.create_cq_ex = pl_create_cq_ex,
	.poll_cq = ibv_cmd_poll_cq,
	.req_notify_cq = ibv_cmd_req_notify_cq,
	.resize_cq = pl_resize_cq,
	.destroy_cq = pl_destroy_cq,
	.create_ah = pl_create_ah,
	.destroy_ah = pl_destroy_ah,
	.create_qp = pl_create_qp,
	.create_qp_ex = pl_create_qp_ex,
	.query_qp = pl_query_qp,
	.modify_qp = pl_modify_qp,
	.destroy_qp = pl_destroy_qp,
	.post_send = ibv_cmd_post_send,
	.post_recv = ibv_cmd_post_recv,
	.free_context = pl_free_context,
};

static struct verbs_context *pl_alloc_context(struct ibv_device *ibdev,
					      int cmd_fd, void *private_data)
{
	struct ib_uverbs_get_context_resp resp;
	struct ibv_get_context cmd;
	struct pl_context *c;

	c = verbs_init_and_alloc_context(ibdev, cmd_fd, c, ibv_ctx,
					 RDMA_DRIVER_UNKNOWN);
	if (!c)
		return NULL;
	if (ibv_cmd_get_context(&c->ibv_ctx, &cmd, sizeof(cmd), &resp,
				sizeof(resp))) {
		verbs_uninit_context(&c->ibv_ctx);
		free(c);
		return NULL;
	}
	verbs_set_ops(&c->ibv_ctx, &pl_ctx_ops);
	return &c->ibv_ctx;
}

static void pl_free_context(struct ibv_context *ibctx)
{
	struct pl_context *c = container_of(ibctx, struct pl_context,
					    ibv_ctx.context);

	verbs_uninit_context(&c->ibv_ctx);
	free(c);
}

static struct verbs_device *pl_alloc_device(struct verbs_sysfs_dev *sysfs_dev)
{
	struct pl_device *d = calloc(1, sizeof(*d));

	return d ? &d->vdev : NULL;
}

static void pl_uninit_device(struct verbs_device *vdev)
{
	free(container_of(vdev, struct pl_device, vdev));
}

static const struct verbs_match_ent pl_match_table[] = {
	VERBS_NAME_MATCH(PINLEASE_IB_NAME_PREFIX, NULL),
	{},
};

static const struct verbs_device_ops pl_dev_ops = {
	.name = "pinlease",
	.match_min_abi_version = PINLEASE_IB_UVERBS_ABI_VERSION,
	.match_max_abi_version = PINLEASE_IB_UVERBS_ABI_VERSION,
	.match_table = pl_match_table,
	.alloc_device = pl_alloc_device,
	.uninit_device = pl_uninit_device,
	.alloc_context = pl_alloc_context,
};
PROVIDER_DRIVER(pinlease, pl_dev_ops);
