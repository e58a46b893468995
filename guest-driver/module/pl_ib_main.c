// SPDX-License-Identifier: GPL-2.0
/*
 * pinlease_ib: the auxiliary driver for "pinlease.rdma.N" and the
 * ib_device it registers: device, port, GID and P_Key queries, user
 * contexts and protection domains. MRs are in pl_ib_mr.c.
 *
 * RC QPs, CQs and work requests are in pl_ib_qp.c and pl_ib_cq.c.
 *
 * An InfiniBand port with a fixed LID and no subnet manager, no network
 * device, GID 0 = fe80::<node GUID>, one P_Key (0xffff). No dma_device:
 * ib_uses_virt_dma() is true, as for rxe and siw, since the device reads
 * guest-physical addresses and bypasses the DMA API (docs/rdma.md). No
 * get_dma_mr: the device serves user verbs only, so no kernel ULP
 * (ib_mad, ib_cm, ipoib) attaches.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#define PL_IB_MODULE

#include <linux/module.h>
#include <linux/string.h>

#include "pinlease_compat.h"
#include "pinlease_ib_abi.h"
#include "pl_ib.h"

/* node GUID: 02:50:4c ("PL", locally administered) + the device index */
#define PL_IB_GUID_BASE	0x02504c0000000000ULL

static int pl_ib_query_device(struct ib_device *ibdev,
			      struct ib_device_attr *attr,
			      struct ib_udata *udata)
{
	struct pl_ib_dev *d = to_pl_ib_dev(ibdev);

	if (udata && (udata->inlen || udata->outlen))
		return -EINVAL;	/* no driver data in this ABI */
	memset(attr, 0, sizeof(*attr));
	attr->fw_ver = d->info.abi_version;
	attr->sys_image_guid = ibdev->node_guid;
	attr->max_mr_size = (u64)d->info.max_pages_per_mr * PAGE_SIZE;
	attr->page_size_cap = PAGE_SIZE;
	attr->vendor_id = PINLEASE_IB_VENDOR_ID;
	attr->vendor_part_id = d->info.virtio_id;
	attr->hw_ver = d->info.abi_version;
	attr->max_mr = d->info.max_mrs;
	attr->max_pd = d->info.max_mrs;
	attr->max_pkeys = 1;
	attr->max_qp = PL_IB_MAX_QP;
	attr->max_qp_wr = PL_IB_MAX_QP_WR;
	attr->max_send_sge = PL_IB_MAX_SGE;
	attr->max_recv_sge = PL_IB_MAX_SGE;
	attr->max_sge_rd = PL_IB_MAX_SGE;
	attr->max_cq = PL_IB_MAX_CQ;
	attr->max_cqe = PL_IB_MAX_CQE;
	attr->max_qp_rd_atom = 16;
	attr->max_qp_init_rd_atom = 16;
	attr->max_res_rd_atom = 16 * PL_IB_MAX_QP;
	attr->atomic_cap = IB_ATOMIC_NONE;
	return 0;
}

static int pl_ib_query_port(struct ib_device *ibdev, u32 port,
			    struct ib_port_attr *attr)
{
	if (port != 1)
		return -EINVAL;
	/* ib_query_port() zeroed *attr and fills subnet_prefix from GID 0 */
	attr->state = IB_PORT_ACTIVE;
	attr->phys_state = IB_PORT_PHYS_STATE_LINK_UP;
	attr->max_mtu = IB_MTU_4096;
	attr->active_mtu = IB_MTU_4096;
	attr->gid_tbl_len = 1;
	attr->pkey_tbl_len = 1;
	attr->max_msg_sz = 1U << 31;
	attr->lid = PINLEASE_IB_PORT_LID;
	attr->sm_lid = PINLEASE_IB_PORT_LID;
	attr->lmc = 0;
	attr->max_vl_num = 1;
	attr->active_width = IB_WIDTH_1X;
	attr->active_speed = IB_SPEED_SDR;
	return 0;
}

static int pl_ib_get_port_immutable(struct ib_device *ibdev, u32 port,
				    struct ib_port_immutable *immutable)
{
	if (port != 1)
		return -EINVAL;
	/* IB transport only: no MAD, SMI, CM or SA, so no QP0/QP1 */
	immutable->core_cap_flags = RDMA_CORE_CAP_PROT_IB;
	immutable->gid_tbl_len = 1;
	immutable->pkey_tbl_len = 1;
	immutable->max_mad_size = 0;	/* verify_immutable(): none without MADs */
	return 0;
}

static int pl_ib_query_gid(struct ib_device *ibdev, u32 port, int index,
			   union ib_gid *gid)
{
	if (port != 1 || index != 0)
		return -EINVAL;
	gid->global.subnet_prefix = cpu_to_be64(0xfe80000000000000ULL);
	gid->global.interface_id = ibdev->node_guid;
	return 0;
}

static int pl_ib_query_pkey(struct ib_device *ibdev, u32 port, u16 index,
			    u16 *pkey)
{
	if (port != 1 || index != 0)
		return -EINVAL;
	*pkey = 0xffff;
	return 0;
}

/*
 * One pinlease.ko device context per uverbs fd: CREATE_CONTEXT now,
 * CLOSE_CONTEXT in dealloc_ucontext (after ib_core destroyed every object
 * of the fd, on close or on disassociation).
 */
static int pl_ib_alloc_ucontext(struct ib_ucontext *ibuc,
				struct ib_udata *udata)
{
	struct pl_ib_ucontext *uc = container_of(ibuc, struct pl_ib_ucontext,
						 ibuc);
	struct pl_ib_dev *d = to_pl_ib_dev(ibuc->device);
	struct pl_ctx *kctx;

	kctx = pinlease_kctx_create(d->padev, &pl_ib_kctx_ops);
	if (IS_ERR(kctx))
		return PTR_ERR(kctx);
	uc->kctx = kctx;
	return 0;
}

static void pl_ib_dealloc_ucontext(struct ib_ucontext *ibuc)
{
	struct pl_ib_ucontext *uc = container_of(ibuc, struct pl_ib_ucontext,
						 ibuc);

	pinlease_kctx_close(uc->kctx);
}

/*
 * Called by ib_uverbs_remove_one() after every object of the fd was
 * destroyed with RDMA_REMOVE_DRIVER_REMOVE (MRs deregistered, pins
 * released) and before dealloc_ucontext. The device hands user space no
 * mappings of its own (no mmap op), so nothing is left to zap; having the
 * op is what lets the unbind go on while verbs fds are open.
 */
static void pl_ib_disassociate_ucontext(struct ib_ucontext *ibuc)
{
}

static int pl_ib_alloc_pd(struct ib_pd *ibpd, struct ib_udata *udata)
{
	return 0;	/* the device has no PDs: MRs belong to the context */
}

static int pl_ib_dealloc_pd(struct ib_pd *ibpd, struct ib_udata *udata)
{
	return 0;
}

static const struct ib_device_ops pl_ib_ops = {
	.owner = THIS_MODULE,
	.driver_id = RDMA_DRIVER_UNKNOWN,
	.uverbs_abi_ver = PINLEASE_IB_UVERBS_ABI_VERSION,

	.alloc_pd = pl_ib_alloc_pd,
	.alloc_ucontext = pl_ib_alloc_ucontext,
	.create_qp = pl_ib_create_qp,
	.dealloc_pd = pl_ib_dealloc_pd,
	.dealloc_ucontext = pl_ib_dealloc_ucontext,
	.dereg_mr = pl_ib_dereg_mr,
	.destroy_cq = pl_ib_destroy_cq,
	.destroy_qp = pl_ib_destroy_qp,
	.disassociate_ucontext = pl_ib_disassociate_ucontext,
	.get_port_immutable = pl_ib_get_port_immutable,
	.modify_qp = pl_ib_modify_qp,
	.poll_cq = pl_ib_poll_cq,
	.post_recv = pl_ib_post_recv,
	.post_send = pl_ib_post_send,
	.query_device = pl_ib_query_device,
	.query_gid = pl_ib_query_gid,
	.query_pkey = pl_ib_query_pkey,
	.query_port = pl_ib_query_port,
	.query_qp = pl_ib_query_qp,
	.req_notify_cq = pl_ib_req_notify_cq,
	PL_IB_CREATE_CQ
	PL_IB_REG_USER_MR

	INIT_RDMA_OBJ_SIZE(ib_cq, pl_ib_cq, ibcq),
	INIT_RDMA_OBJ_SIZE(ib_pd, pl_ib_pd, ibpd),
	INIT_RDMA_OBJ_SIZE(ib_qp, pl_ib_qp, ibqp),
	INIT_RDMA_OBJ_SIZE(ib_ucontext, pl_ib_ucontext, ibuc),
};

static int pl_ib_probe(struct auxiliary_device *adev,
		       const struct auxiliary_device_id *id)
{
	struct pinlease_adev *padev = container_of(adev, struct pinlease_adev,
						   adev);
	struct pl_ib_dev *d;
	int err;

	d = ib_alloc_device(pl_ib_dev, ibdev);
	if (!d)
		return -ENOMEM;
	d->padev = padev;
	pinlease_kdev_query(padev, &d->info);
	mutex_init(&d->wr_lock);
	xa_init_flags(&d->mrs, XA_FLAGS_ALLOC1);
	xa_init_flags(&d->qps, XA_FLAGS_ALLOC);

	strscpy(d->ibdev.node_desc, "pinlease", sizeof(d->ibdev.node_desc));
	d->ibdev.node_type = RDMA_NODE_IB_CA;
	d->ibdev.phys_port_cnt = 1;
	d->ibdev.num_comp_vectors = 1;
	d->ibdev.local_dma_lkey = 0;
	d->ibdev.node_guid = cpu_to_be64(PL_IB_GUID_BASE | d->info.index);
	d->ibdev.dev.parent = &adev->dev;
	/* write commands the core enables only for drivers that ask */
	d->ibdev.uverbs_cmd_mask |= BIT_ULL(IB_USER_VERBS_CMD_POLL_CQ) |
				    BIT_ULL(IB_USER_VERBS_CMD_POST_RECV) |
				    BIT_ULL(IB_USER_VERBS_CMD_POST_SEND) |
				    BIT_ULL(IB_USER_VERBS_CMD_REQ_NOTIFY_CQ);
	ib_set_device_ops(&d->ibdev, &pl_ib_ops);

	/* dma_device NULL: virt DMA (the device takes guest-physical pages) */
	err = ib_register_device(&d->ibdev, PINLEASE_IB_NAME_PATTERN, NULL);
	if (err) {
		dev_err(&adev->dev, "ib_register_device: %d\n", err);
		goto err_dealloc_device;
	}
	auxiliary_set_drvdata(adev, d);
	dev_info(&adev->dev, "%s: node GUID %016llx, LID %u, up to %u MRs of %u pages\n",
		 dev_name(&d->ibdev.dev), be64_to_cpu(d->ibdev.node_guid),
		 PINLEASE_IB_PORT_LID, d->info.max_mrs,
		 d->info.max_pages_per_mr);
	return 0;

err_dealloc_device:
	xa_destroy(&d->qps);
	xa_destroy(&d->mrs);
	ib_dealloc_device(&d->ibdev);
	return err;
}

/*
 * Unbind, rmmod, or pinlease.ko deleting the auxiliary device (before the
 * virtio device's removal, after a reset): ib_unregister_device() waits
 * for the running uverbs commands and disassociates every open fd (its
 * objects destroyed through the ops above), then the fds answer -EIO.
 */
static void pl_ib_remove(struct auxiliary_device *adev)
{
	struct pl_ib_dev *d = auxiliary_get_drvdata(adev);

	ib_unregister_device(&d->ibdev);
	/* every MR and QP was destroyed by the unregistration */
	WARN_ON(!xa_empty(&d->mrs) || !xa_empty(&d->qps));
	xa_destroy(&d->qps);
	xa_destroy(&d->mrs);
	ib_dealloc_device(&d->ibdev);
}

static const struct auxiliary_device_id pl_ib_id_table[] = {
	{ .name = PINLEASE_AUX_MATCH },
	{}
};
MODULE_DEVICE_TABLE(auxiliary, pl_ib_id_table);

static struct auxiliary_driver pl_ib_driver = {
	.name = PINLEASE_AUX_DEVICE_NAME,
	.probe = pl_ib_probe,
	.remove = pl_ib_remove,
	.id_table = pl_ib_id_table,
};
module_auxiliary_driver(pl_ib_driver);

MODULE_DESCRIPTION("pinlease: the pinlease device as an RDMA (ib_device) device");
MODULE_LICENSE("GPL");
