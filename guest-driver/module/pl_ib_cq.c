// SPDX-License-Identifier: GPL-2.0
/*
 * pinlease_ib: completion queues. A CQ is a ring of struct ib_wc in the
 * kernel: the work-request code (pl_ib_qp.c) adds completions, poll_cq
 * (uverbs' POLL_CQ; the provider maps nothing) takes them, req_notify_cq
 * arms the completion handler (uverbs' completion channel).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#define PL_IB_MODULE

#include <linux/slab.h>
#include <linux/spinlock.h>

#include "pinlease_compat.h"
#include "pl_ib.h"

/**
 * pl_ib_create_cq() - a CQ of at least attr->cqe entries
 * @ibcq: the CQ ib_core allocated (struct pl_ib_cq)
 * @attr: the requested size, vector and flags
 *
 * Context: Process context; sleeps (allocation).
 * Return: 0, -EINVAL (size), -EOPNOTSUPP (flags), -ENOMEM.
 */
int pl_ib_create_cq(struct ib_cq *ibcq, const struct ib_cq_init_attr *attr)
{
	struct pl_ib_cq *cq = to_pl_ib_cq(ibcq);

	if (attr->flags)
		return -EOPNOTSUPP;
	if (attr->cqe < 1 || attr->cqe > PL_IB_MAX_CQE)
		return -EINVAL;
	cq->ring = kvcalloc(attr->cqe, sizeof(*cq->ring), GFP_KERNEL);
	if (!cq->ring)
		return -ENOMEM;
	spin_lock_init(&cq->lock);
	cq->size = attr->cqe;
	ibcq->cqe = attr->cqe;
	return 0;
}

/**
 * pl_ib_destroy_cq() - free a CQ (ib_core checked no QP uses it)
 * @ibcq: the CQ
 * @udata: unused
 *
 * Context: Process context.
 * Return: 0.
 */
int pl_ib_destroy_cq(struct ib_cq *ibcq, struct ib_udata *udata)
{
	struct pl_ib_cq *cq = to_pl_ib_cq(ibcq);

	if (cq->dropped)
		pr_info("%s: CQ %p dropped %llu completions (ring of %u full)\n",
			dev_name(&ibcq->device->dev), cq, cq->dropped,
			cq->size);
	kvfree(cq->ring);
	return 0;
}

/**
 * pl_ib_resize_cq() - ibv_resize_cq(): a ring of @cqe entries
 * @ibcq: the CQ
 * @cqe: the new size
 * @udata: unused (no driver data)
 *
 * The waiting completions move to the new ring, oldest first; a ring
 * smaller than what waits is refused, as the verb requires.
 *
 * Context: Process context; sleeps (allocation).
 * Locking: Takes cq->lock.
 * Return: 0, -EINVAL (size, or fewer entries than completions waiting),
 * -ENOMEM.
 */
int pl_ib_resize_cq(struct ib_cq *ibcq, int cqe, struct ib_udata *udata)
{
	struct pl_ib_cq *cq = to_pl_ib_cq(ibcq);
	struct ib_wc *ring, *old;
	unsigned long flags;
	u32 i;

	if (cqe < 1 || cqe > PL_IB_MAX_CQE)
		return -EINVAL;
	ring = kvcalloc(cqe, sizeof(*ring), GFP_KERNEL);
	if (!ring)
		return -ENOMEM;
	spin_lock_irqsave(&cq->lock, flags);
	if (cq->count > cqe) {
		spin_unlock_irqrestore(&cq->lock, flags);
		kvfree(ring);
		return -EINVAL;
	}
	for (i = 0; i < cq->count; i++)
		ring[i] = cq->ring[(cq->head + i) % cq->size];
	old = cq->ring;
	cq->ring = ring;
	cq->size = cqe;
	cq->head = 0;
	ibcq->cqe = cqe;
	spin_unlock_irqrestore(&cq->lock, flags);
	kvfree(old);
	return 0;
}

/**
 * pl_ib_cq_add() - add a completion; call the handler if armed
 * @cq: the CQ
 * @wc: the completion
 * @solicited: the sender asked for a solicited event (IB_SEND_SOLICITED)
 *
 * A full ring drops the completion and counts it (destroy_cq logs it).
 *
 * Context: Process context (the work-request code).
 * Locking: Takes cq->lock; the caller may hold d->wr_lock.
 */
void pl_ib_cq_add(struct pl_ib_cq *cq, const struct ib_wc *wc,
		  bool solicited)
{
	unsigned long flags;
	bool fire = false;

	spin_lock_irqsave(&cq->lock, flags);
	if (cq->count == cq->size) {
		cq->dropped++;
	} else {
		cq->ring[(cq->head + cq->count) % cq->size] = *wc;
		cq->count++;
		if (cq->notify == IB_CQ_NEXT_COMP ||
		    (cq->notify == IB_CQ_SOLICITED &&
		     (solicited || wc->status != IB_WC_SUCCESS))) {
			cq->notify = 0;
			fire = true;
		}
	}
	spin_unlock_irqrestore(&cq->lock, flags);
	if (fire && cq->ibcq.comp_handler)
		cq->ibcq.comp_handler(&cq->ibcq, cq->ibcq.cq_context);
}

/**
 * pl_ib_poll_cq() - take up to @num_entries completions
 * @ibcq: the CQ
 * @num_entries: room in @wc
 * @wc: filled with the oldest completions
 *
 * Context: Any context.
 * Locking: Takes cq->lock.
 * Return: the number taken.
 */
int pl_ib_poll_cq(struct ib_cq *ibcq, int num_entries, struct ib_wc *wc)
{
	struct pl_ib_cq *cq = to_pl_ib_cq(ibcq);
	unsigned long flags;
	int n = 0;

	spin_lock_irqsave(&cq->lock, flags);
	while (n < num_entries && cq->count) {
		wc[n++] = cq->ring[cq->head];
		cq->head = (cq->head + 1) % cq->size;
		cq->count--;
	}
	spin_unlock_irqrestore(&cq->lock, flags);
	return n;
}

/**
 * pl_ib_req_notify_cq() - arm the completion handler
 * @ibcq: the CQ
 * @flags: IB_CQ_NEXT_COMP or IB_CQ_SOLICITED, maybe
 *	   IB_CQ_REPORT_MISSED_EVENTS
 *
 * Context: Any context.
 * Locking: Takes cq->lock.
 * Return: 1 when missed events are asked for and completions wait, else 0.
 */
int pl_ib_req_notify_cq(struct ib_cq *ibcq, enum ib_cq_notify_flags flags)
{
	struct pl_ib_cq *cq = to_pl_ib_cq(ibcq);
	unsigned long irqflags;
	int ret = 0;

	spin_lock_irqsave(&cq->lock, irqflags);
	cq->notify = flags & IB_CQ_SOLICITED_MASK;
	if ((flags & IB_CQ_REPORT_MISSED_EVENTS) && cq->count)
		ret = 1;
	spin_unlock_irqrestore(&cq->lock, irqflags);
	return ret;
}
