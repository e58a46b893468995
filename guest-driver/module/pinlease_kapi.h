/* SPDX-License-Identifier: GPL-2.0 */
/*
 * pinlease.ko's in-kernel API, for pinlease_ib.ko (the ib_device driver
 * bound to the auxiliary device "pinlease.rdma.N" that pinlease.ko adds
 * per virtio device). Both modules include this header; pinlease.ko knows
 * nothing of ib_core.
 *
 * Lifetimes:
 * - struct pinlease_adev lives from pinlease.ko's auxiliary_device_add()
 *   until the last reference to adev.dev is dropped. pinlease.ko deletes
 *   it before removing the virtio device and after every device reset
 *   (then adds a new one): a reset makes every context dead, and
 *   pinlease_ib.ko starts over with a new ib_device.
 * - A kernel context (struct pl_ctx, opaque here) lives from
 *   pinlease_kctx_create() to pinlease_kctx_close(). After a device reset
 *   or removal it is dead: every call answers -EIO or -ENODEV, except
 *   pinlease_kctx_dereg_mr() and pinlease_kctx_close(), which then only
 *   let go (the device has forgotten the context and stopped touching
 *   its pages).
 */
#ifndef _PINLEASE_KAPI_H
#define _PINLEASE_KAPI_H

#include <linux/auxiliary_bus.h>
#include <linux/types.h>

#include "pinlease_ib_abi.h"

struct pl_dev;
struct pl_ctx;

/*
 * The auxiliary device pinlease.ko adds per virtio device, named
 * "pinlease.rdma.N": pinlease.ko's module name, PINLEASE_AUX_DEVICE_NAME
 * (pinlease_ib_abi.h) and the device's index. PINLEASE_AUX_MATCH is the
 * auxiliary_device_id name a driver matches.
 */
#define PINLEASE_AUX_MATCH	"pinlease." PINLEASE_AUX_DEVICE_NAME

struct pinlease_adev {
	struct auxiliary_device adev;
	struct pl_dev *pl;		/* holds a reference while adev lives */
};

/* What the device said in QUERY_DEVICE, and who it is. */
struct pinlease_kdev_info {
	u32 index;			/* N of /dev/pinleaseN */
	u32 virtio_id;
	u32 abi_version;
	u32 page_size;
	u64 features;
	u32 max_contexts;
	u32 max_mrs;
	u32 max_pages_per_mr;
	u32 max_request_bytes;
};

void pinlease_kdev_query(struct pinlease_adev *padev,
			 struct pinlease_kdev_info *info);
u32 pinlease_kdev_max_mr_pages(struct pinlease_adev *padev);

/*
 * A kernel context's callbacks.
 * - mr_revoked: the device revoked a kernel MR (a lease break under the
 *   revoke policy, or its MR_REVOKED event) and no longer touches its
 *   pages: the owner may unpin them now. @mr_priv is what the owner gave
 *   pinlease_kctx_reg_mr(). Called at most once per MR, in process
 *   context with pinlease.ko's ctx->mr_lock held (the MR is still
 *   registered, so @mr_priv is alive): it may sleep but must not call
 *   back into this API.
 */
struct pinlease_kctx_ops {
	void (*mr_revoked)(void *mr_priv);
};

/*
 * Where a kernel MR's pages come from when the range is one file
 * mapping: the device files the MR under the context's lease on the
 * range (as REG_MR of a file mapping does for /dev/pinleaseN).
 */
struct pinlease_kmr_file {
	u64 dev;			/* inode->i_sb->s_dev */
	u64 ino;
	u32 generation;
	u64 offset;			/* file offset of the MR's first byte */
};

struct pl_ctx *pinlease_kctx_create(struct pinlease_adev *padev,
				    const struct pinlease_kctx_ops *ops);
void pinlease_kctx_close(struct pl_ctx *ctx);
int pinlease_kctx_err(struct pl_ctx *ctx);
u64 pinlease_kctx_handle(struct pl_ctx *ctx);

int pinlease_kctx_reg_mr(struct pl_ctx *ctx, const u64 *pas, u32 npages,
			 u32 first_page_offset, u64 length, u32 access,
			 const struct pinlease_kmr_file *file, void *mr_priv,
			 u64 *key);
int pinlease_kctx_dereg_mr(struct pl_ctx *ctx, u64 key);
int pinlease_kctx_dma(struct pl_ctx *ctx, u16 op, u64 local_key,
		      u64 local_offset, u64 remote_key, u64 remote_offset,
		      u64 length);
int pinlease_kctx_atomic(struct pl_ctx *ctx, u16 op, u64 key, u64 offset,
			 u64 operand, u64 swap, u64 *original);

struct file;
int pinlease_kctx_lease_take(struct pl_ctx *ctx, struct file *file,
			     u32 policy, u64 start, u64 length, u64 *handle);
int pinlease_kctx_lease_release(struct pl_ctx *ctx, u64 handle);
bool pinlease_kctx_lease_active(struct pl_ctx *ctx, u64 handle);
const char *pinlease_lease_policy_name(u32 policy);

#endif /* _PINLEASE_KAPI_H */
