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
	struct ibv_cq *cq;
	int ret;

	cq = calloc(1, sizeof(*cq));
	if (!cq)
		return NULL;
	ret = ibv_cmd_create_cq(ctx, cqe, channel, comp_vector, cq, &cmd,
				sizeof(cmd), &resp, sizeof(resp));
	if (ret) {
		free(cq);
		errno = ret;
		return NULL;
	}
	return cq;
}

static int pl_destroy_cq(struct ibv_cq *cq)
{
	int ret = ibv_cmd_destroy_cq(cq);

	if (!ret)
		free(cq);
	return ret;
}

static struct ibv_qp *pl_create_qp(struct ibv_pd *pd,
				   struct ibv_qp_init_attr *attr)
{
	struct ib_uverbs_create_qp_resp resp;
	struct ibv_create_qp cmd;
	struct ibv_qp *qp;
	int ret;

	qp = calloc(1, sizeof(*qp));
	if (!qp)
		return NULL;
	ret = ibv_cmd_create_qp(pd, qp, attr, &cmd, sizeof(cmd), &resp,
				sizeof(resp));
	if (ret) {
		free(qp);
		errno = ret;
		return NULL;
	}
	return qp;
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

static int pl_destroy_qp(struct ibv_qp *qp)
{
	int ret = ibv_cmd_destroy_qp(qp);

	if (!ret)
		free(qp);
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
	.poll_cq = ibv_cmd_poll_cq,
	.req_notify_cq = ibv_cmd_req_notify_cq,
	.destroy_cq = pl_destroy_cq,
	.create_qp = pl_create_qp,
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
