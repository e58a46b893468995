// SPDX-License-Identifier: GPL-2.0
/*
 * pinlease: PINLEASE_IOC_DMA, the device's data operations on registered
 * MRs: WRITE and READ between two MRs, the atomics COMPARE_SWAP and
 * FETCH_ADD, and FILL and VERIFY of a pattern (docs/abi.md).
 */
#include <linux/string.h>
#include <linux/uaccess.h>

#include "pinlease.h"

/**
 * pl_ioctl_dma() - PINLEASE_IOC_DMA: one data operation by the device
 * @ctx: the device fd's context
 * @argp: struct pinlease_dma, in and out (result[] on success)
 *
 * Translates the ioctl's arguments into the opcode's request body and
 * copies the answer (atomic original value, VERIFY counts) back.
 *
 * Context: Process context, the ioctl's caller; sleeps (device request).
 * Locking: The caller holds no lock of the module's; takes none.
 * Return: 0, -EFAULT, -EINVAL (unknown op), or the device's answer.
 */
long pl_ioctl_dma(struct pl_ctx *ctx, void __user *argp)
{
	struct pinlease_dma a;
	union {
		struct pl_dma_req dma;
		struct pl_atomic_req atomic;
		struct pl_pattern_req pattern;
	} req = {};
	union {
		struct pl_atomic_resp atomic;
		struct pl_verify_resp verify;
	} resp;
	size_t blen, rlen = 0;
	int err;

	if (copy_from_user(&a, argp, sizeof(a)))
		return -EFAULT;

	switch (a.op) {
	case PL_OP_WRITE:
	case PL_OP_READ:
		req.dma.local_key = cpu_to_le64(a.local_key);
		req.dma.local_offset = cpu_to_le64(a.local_offset);
		req.dma.remote_key = cpu_to_le64(a.remote_key);
		req.dma.remote_offset = cpu_to_le64(a.remote_offset);
		req.dma.length = cpu_to_le64(a.length);
		blen = sizeof(req.dma);
		break;
	case PL_OP_COMPARE_SWAP:
	case PL_OP_FETCH_ADD:
		req.atomic.key = cpu_to_le64(a.remote_key);
		req.atomic.offset = cpu_to_le64(a.remote_offset);
		req.atomic.operand = cpu_to_le64(a.operand);
		req.atomic.swap = cpu_to_le64(a.swap);
		blen = sizeof(req.atomic);
		rlen = sizeof(resp.atomic);
		break;
	case PL_OP_FILL:
	case PL_OP_VERIFY:
		req.pattern.key = cpu_to_le64(a.remote_key);
		req.pattern.offset = cpu_to_le64(a.remote_offset);
		req.pattern.length = cpu_to_le64(a.length);
		req.pattern.pattern = cpu_to_le64(a.operand);
		req.pattern.mode = cpu_to_le32(a.mode);
		blen = sizeof(req.pattern);
		if (a.op == PL_OP_VERIFY)
			rlen = sizeof(resp.verify);
		break;
	default:
		return -EINVAL;
	}

	err = pl_submit(ctx->dev, a.op, ctx->handle, &req, blen, NULL, 0,
			&resp, rlen);
	if (err)
		return err;

	memset(a.result, 0, sizeof(a.result));
	if (a.op == PL_OP_COMPARE_SWAP || a.op == PL_OP_FETCH_ADD) {
		a.result[0] = le64_to_cpu(resp.atomic.original);
	} else if (a.op == PL_OP_VERIFY) {
		a.result[0] = le64_to_cpu(resp.verify.mismatches);
		a.result[1] = le64_to_cpu(resp.verify.first_bad_offset);
		a.result[2] = le64_to_cpu(resp.verify.first_bad_value);
	}
	return copy_to_user(argp, &a, sizeof(a)) ? -EFAULT : 0;
}
