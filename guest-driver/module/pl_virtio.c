// SPDX-License-Identifier: GPL-2.0
/*
 * pinlease: virtio driver, request submission, event queue, device reset.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/cache.h>
#include <linux/completion.h>
#include <linux/idr.h>
#include <linux/module.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>

#include "pinlease.h"
#include "pinlease_compat.h"

/*
 * The module's per-CPU workqueue: event routing, device resets, context
 * releases and the lease works all run on it (pl_exit() drains it).
 */
struct workqueue_struct *pl_wq;
static DEFINE_IDA(pl_ida);

/* The largest request and response bodies (REG_MR, QUERY_DEVICE). */
#define PL_MAX_BODY		sizeof(struct pl_reg_mr_req)
#define PL_MAX_RESP_BODY	sizeof(struct pl_query_device_resp)

/* One request in flight: the buffers the device reads and writes. */
struct pl_req {
	struct pl_req_hdr hdr;
	u8 body[PL_MAX_BODY];
	struct pl_resp_hdr resp ____cacheline_aligned;
	u8 resp_body[PL_MAX_RESP_BODY];
	struct completion done;
	u32 used_len;
	int err;		/* set when the driver took the buffer back */
};

static bool pl_req_room(struct pl_dev *dev, unsigned int ndesc)
{
	bool room;

	spin_lock_irq(&dev->req_lock);
	room = !dev->req_ok || dev->req_vq->num_free >= ndesc;
	spin_unlock_irq(&dev->req_lock);
	return room;
}

/*
 * Resets the device unless it has been reset since generation @gen, the
 * one the trigger saw: two triggers of one dead device (two timeouts, a
 * broken queue and a NEEDS_RESET) reset it once, and a late trigger never
 * kills the contexts opened after the reset it asked for.
 */
static void pl_schedule_reset(struct pl_dev *dev, u64 gen)
{
	s64 want = gen + 1, cur = atomic64_read(&dev->reset_want);

	while (cur < want &&
	       !atomic64_try_cmpxchg(&dev->reset_want, &cur, want))
		;
	queue_work(pl_wq, &dev->reset_work);
}

/*
 * A used entry naming no buffer in flight broke queue @which: count it and
 * reset the device of generation @gen. Called without the queue's lock.
 */
static void pl_queue_broken(struct pl_dev *dev, const char *which, u64 gen)
{
	atomic64_inc(&dev->faults.broken_vq);
	pr_err("%s: %s queue broken: resetting the device\n", dev->name,
	       which);
	pl_schedule_reset(dev, gen);
}

/* Hands the answers in the request queue to their waiters. */
static void pl_complete_used(struct virtqueue *vq)
{
	struct pl_req *r;
	unsigned int len;

	while ((r = virtqueue_get_buf(vq, &len))) {
		r->used_len = len;
		complete(&r->done);
	}
}

/**
 * pl_answers_reaped() - what follows handing out answers from the used ring
 * @dev: the device
 * @broken: the queue was found broken while req_ok
 * @gen: dev->gen read under req_lock with @broken
 *
 * Wakes submitters waiting for ring space (the answers freed descriptors),
 * and resets a broken queue: a used entry naming no request in flight ("id
 * N is not a head") breaks it, get_buf returns nothing from then on and the
 * interrupt is ignored, so the requests in flight would wait for the
 * timeout.
 *
 * Context: Any context, req_lock not held.
 */
static void pl_answers_reaped(struct pl_dev *dev, bool broken, u64 gen)
{
	wake_up(&dev->req_space);
	if (broken)
		pl_queue_broken(dev, "request", gen);
}

/**
 * pl_poll_answer() - look for @r's answer in the used ring for up to @us
 * @dev: the device
 * @r: the request just submitted
 * @us: req_poll_us; 0 polls not at all
 *
 * Why: an answer's interrupt travels from the daemon through QEMU to a vCPU
 * and the ISR (legacy INTx: the device has one MSI-X vector and virtio_pci
 * wants two), and then the sleeping submitter must be woken and scheduled.
 * A device that answers within @us is seen here without that trip, and the
 * queue's interrupt is off while anyone polls (the device skips it, the
 * daemon honours VRING_AVAIL_F_NO_INTERRUPT). Stops early when the
 * scheduler wants the CPU; whatever is not found here is found by the
 * interrupt, which the last poller to leave turns back on after a last
 * look (virtqueue_enable_cb() says when answers came meanwhile).
 *
 * Context: Process context, no locks held.
 * Locking: Takes dev->req_lock (irqsave) around each look, and only looks
 * while req_ok: a reset may delete the queue once req_ok is false. A
 * poller counted in req_pollers before a reset leaves the count right
 * after it; the new queue starts with its interrupt on.
 */
static void pl_poll_answer(struct pl_dev *dev, struct pl_req *r,
			   unsigned int us)
{
	u64 end = ktime_get_ns() + (u64)us * NSEC_PER_USEC;
	bool counted = false, broken = false;
	unsigned long flags;
	u64 gen = 0;

	if (!us)
		return;
	spin_lock_irqsave(&dev->req_lock, flags);
	if (dev->req_ok) {
		if (!dev->req_pollers++)
			virtqueue_disable_cb(dev->req_vq);
		counted = true;
	}
	spin_unlock_irqrestore(&dev->req_lock, flags);
	if (!counted)
		return;
	while (!completion_done(&r->done) && !need_resched()) {
		spin_lock_irqsave(&dev->req_lock, flags);
		if (dev->req_ok) {
			pl_complete_used(dev->req_vq);
			broken = virtqueue_is_broken(dev->req_vq);
		}
		spin_unlock_irqrestore(&dev->req_lock, flags);
		if (broken || completion_done(&r->done) ||
		    ktime_get_ns() > end)
			break;
		cpu_relax();
	}
	spin_lock_irqsave(&dev->req_lock, flags);
	if (!--dev->req_pollers && dev->req_ok) {
		while (!virtqueue_enable_cb(dev->req_vq)) {
			virtqueue_disable_cb(dev->req_vq);
			pl_complete_used(dev->req_vq);
		}
	}
	broken = dev->req_ok && virtqueue_is_broken(dev->req_vq);
	gen = READ_ONCE(dev->gen);
	spin_unlock_irqrestore(&dev->req_lock, flags);
	pl_answers_reaped(dev, broken, gen);
}

/**
 * pl_submit() - send one request and wait for its response
 * @dev: the device
 * @op: PL_OP_*
 * @ctx: context handle, 0 for device-wide opcodes
 * @body: request body (copied), @blen bytes
 * @blen: body length
 * @extra: more readable bytes after the body (REG_MR page list), or NULL
 * @nextra: number of entries in @extra
 * @rbody: where the response body goes, @rlen bytes
 * @rlen: expected response body length (exact on success)
 *
 * The wait is uninterruptible: the device may already have acted on the
 * request. A request not answered within req_timeout_ms means a dead
 * device: the device is reset (which hands every request in flight back
 * with -EIO), and only then does this return, so a buffer is never freed
 * while the device may still write it. A broken request queue (the device
 * completed a buffer twice) and a response carrying another request's tag
 * reset the device the same way.
 *
 * Context: Process context; sleeps, uninterruptibly, up to req_timeout_ms
 * and then for the reset.
 * Locking: The caller must not hold dev->lock or ctx->mr_lock (the reset a
 * timeout triggers takes both), nor any spinlock. Takes dev->req_lock.
 * A caller may hold lease->lock, which no reset takes.
 * Return: 0, -status of the device's answer, or -EIO / -ENODEV / -ENOMEM /
 * -E2BIG (more descriptors than the queue has).
 */
int pl_submit(struct pl_dev *dev, u16 op, u64 ctx, const void *body,
	      size_t blen, struct scatterlist *extra, unsigned int nextra,
	      void *rbody, size_t rlen)
{
	struct scatterlist out, in, *sgs[3];
	unsigned int n = 0, nout, ndesc = 2 + nextra;
	struct pl_req *r;
	u32 status, len;
	u64 tag, gen = 0;
	int err;

	if (WARN_ON(blen > PL_MAX_BODY || rlen > PL_MAX_RESP_BODY))
		return -EINVAL;
	if (READ_ONCE(dev->dead))
		return -ENODEV;

	r = kzalloc_obj(*r, GFP_KERNEL);
	if (!r)
		return -ENOMEM;
	tag = atomic64_inc_return(&dev->next_tag);
	r->hdr.opcode = cpu_to_le16(op);
	r->hdr.ctx = cpu_to_le64(ctx);
	r->hdr.tag = cpu_to_le64(tag);
	if (blen)
		memcpy(r->body, body, blen);
	init_completion(&r->done);

	sg_init_one(&out, &r->hdr, sizeof(r->hdr) + blen);
	sg_init_one(&in, &r->resp, sizeof(r->resp) + rlen);
	sgs[n++] = &out;
	if (extra)
		sgs[n++] = extra;
	nout = n;
	sgs[n++] = &in;

	for (;;) {
		spin_lock_irq(&dev->req_lock);
		if (!dev->req_ok) {
			err = READ_ONCE(dev->dead) ? -ENODEV : -EIO;
			spin_unlock_irq(&dev->req_lock);
			goto out_free_req;
		}
		if (ndesc > virtqueue_get_vring_size(dev->req_vq)) {
			spin_unlock_irq(&dev->req_lock);
			err = -E2BIG;
			goto out_free_req;
		}
		/* req_ok: no reset is between its stop and its restart */
		gen = READ_ONCE(dev->gen);
		err = virtqueue_add_sgs(dev->req_vq, sgs, nout, 1, r,
					GFP_ATOMIC);
		if (!err) {
			/* kicked under the lock: a reset may delete the vq */
			virtqueue_kick(dev->req_vq);
			spin_unlock_irq(&dev->req_lock);
			break;
		}
		if (err == -EIO && virtqueue_is_broken(dev->req_vq)) {
			spin_unlock_irq(&dev->req_lock);
			pr_err_ratelimited("%s: opcode %u: request queue broken: resetting the device\n",
					   dev->name, op);
			pl_schedule_reset(dev, gen);
			goto out_free_req;
		}
		spin_unlock_irq(&dev->req_lock);
		if (err != -ENOSPC)
			goto out_free_req;
		wait_event_timeout(dev->req_space, pl_req_room(dev, ndesc),
				   HZ / 10);
	}
	atomic64_inc(&dev->nr_requests);

	pl_poll_answer(dev, r, pl_req_poll_us());
	if (!wait_for_completion_timeout(&r->done, pl_req_timeout())) {
		atomic64_inc(&dev->nr_timeouts);
		pr_err("%s: opcode %u tag %llu not answered in %u ms: resetting the device\n",
		       dev->name, op, tag, pl_req_timeout_ms());
		pl_schedule_reset(dev, gen);
		wait_for_completion(&r->done);
	}

	if (r->err) {
		err = r->err;
		goto out_free_req;
	}
	if (r->used_len < sizeof(r->resp)) {
		pr_warn_ratelimited("%s: opcode %u: no response (used length %u)\n",
				    dev->name, op, r->used_len);
		err = -EIO;
		goto out_free_req;
	}
	if (le64_to_cpu(r->resp.tag) != tag) {
		/*
		 * Another request's answer in our buffer (a duplicated used
		 * entry after the head was reused): the device may still
		 * write this buffer for the real one. Reset it before the
		 * buffer is freed.
		 */
		atomic64_inc(&dev->faults.bad_tag);
		pr_err_ratelimited("%s: opcode %u: response tag %llu, expected %llu: resetting the device\n",
				   dev->name, op, le64_to_cpu(r->resp.tag), tag);
		pl_schedule_reset(dev, gen);
		flush_work(&dev->reset_work);
		err = -EIO;
		goto out_free_req;
	}
	status = le32_to_cpu(r->resp.status);
	if (status) {
		err = status < MAX_ERRNO ? -(int)status : -EIO;
		goto out_free_req;
	}
	len = le32_to_cpu(r->resp.len);
	if (len != rlen || r->used_len < sizeof(r->resp) + rlen) {
		pr_err_ratelimited("%s: opcode %u: response body %u bytes (used %u), expected %zu\n",
				   dev->name, op, len, r->used_len, rlen);
		err = -EIO;
		goto out_free_req;
	}
	if (rlen)
		memcpy(rbody, r->resp_body, rlen);
	err = 0;
out_free_req:
	kfree(r);
	return err;
}

static void pl_req_done(struct virtqueue *vq)
{
	struct pl_dev *dev = vq->vdev->priv;
	unsigned long flags;
	bool broken;
	u64 gen;

	spin_lock_irqsave(&dev->req_lock, flags);
	/* while a submitter polls, the last poller turns the interrupt on */
	do {
		virtqueue_disable_cb(vq);
		pl_complete_used(vq);
	} while (!dev->req_pollers && !virtqueue_enable_cb(vq));
	broken = dev->req_ok && virtqueue_is_broken(vq);
	gen = READ_ONCE(dev->gen);
	spin_unlock_irqrestore(&dev->req_lock, flags);
	pl_answers_reaped(dev, broken, gen);
}

static void pl_evt_done(struct virtqueue *vq)
{
	struct pl_dev *dev = vq->vdev->priv;

	queue_work(pl_wq, &dev->evt_work);
}

static void pl_route_event(struct pl_dev *dev, const struct pl_event *ev)
{
	u64 handle = le64_to_cpu(ev->ctx);
	struct pl_ctx *ctx;
	unsigned long idx;

	atomic64_inc(&dev->nr_events);
	if (!handle) {
		/* device-wide: every context's event channels see it */
		rcu_read_lock();
		xa_for_each(&dev->ctxs, idx, ctx) {
			if (!kref_get_unless_zero(&ctx->kref))
				continue;
			pl_ctx_route_event(ctx, ev);
			pl_ctx_put(ctx);
		}
		rcu_read_unlock();
		return;
	}

	ctx = pl_ctx_lookup(dev, handle);
	if (!ctx) {
		atomic64_inc(&dev->nr_events_unrouted);
		return;
	}
	/* routed like any event: to the context, or to all when ctx is 0 */
	if (le16_to_cpu(ev->kind) == PL_EVENT_MR_REVOKED)
		pl_ctx_mr_revoked(ctx, le64_to_cpu(ev->args[0]));
	pl_ctx_route_event(ctx, ev);
	pl_ctx_put(ctx);
}

/* Events the module acts on itself, before they are routed. */
static void pl_event_action(struct pl_dev *dev, const struct pl_event *ev,
			    u64 gen)
{
	switch (le16_to_cpu(ev->kind)) {
	case PL_EVENT_FAULT_INJECTED:
		pl_fault_injected_event(dev, ev);
		break;
	case PL_EVENT_NEEDS_RESET:
		/* virtio's DEVICE_NEEDS_RESET, as an event (docs/abi.md 6) */
		atomic64_inc(&dev->faults.needs_reset);
		pr_warn("%s: device needs a reset (NEEDS_RESET, rule %llu): resetting the device\n",
			dev->name, le64_to_cpu(ev->args[0]));
		pl_schedule_reset(dev, gen);
		break;
	}
}

static void pl_evt_work(struct work_struct *work)
{
	struct pl_dev *dev = container_of(work, struct pl_dev, evt_work);
	struct scatterlist sg;
	struct pl_event ev, *buf;
	unsigned int len;
	u64 gen;

	for (;;) {
		spin_lock_irq(&dev->evt_lock);
		if (!dev->evt_ok) {
			spin_unlock_irq(&dev->evt_lock);
			return;
		}
		gen = READ_ONCE(dev->gen);
		buf = virtqueue_get_buf(dev->evt_vq, &len);
		if (!buf) {
			bool broken = virtqueue_is_broken(dev->evt_vq);

			spin_unlock_irq(&dev->evt_lock);
			if (broken)
				pl_queue_broken(dev, "event", gen);
			return;
		}
		ev = *buf;
		sg_init_one(&sg, buf, sizeof(*buf));
		if (virtqueue_add_inbuf(dev->evt_vq, &sg, 1, buf, GFP_ATOMIC))
			pr_warn_ratelimited("%s: cannot repost an event buffer\n",
					    dev->name);
		virtqueue_kick(dev->evt_vq);
		spin_unlock_irq(&dev->evt_lock);

		if (len < sizeof(ev)) {
			atomic64_inc(&dev->nr_events_bad);
			continue;
		}
		/* the buffer is reposted already: a dropped event costs nothing */
		if (pl_fault_drop_event(dev, &ev))
			continue;
		pl_event_action(dev, &ev, gen);
		pl_route_event(dev, &ev);
		cond_resched();
	}
}

/* Finds the queues and posts the event buffers; caller marks them ok. */
static int pl_init_vqs(struct pl_dev *dev)
{
	static const char * const names[PL_NUM_QUEUES] = {
		"requests", "events"
	};
	vq_callback_t *cbs[PL_NUM_QUEUES] = { pl_req_done, pl_evt_done };
	struct virtqueue *vqs[PL_NUM_QUEUES];
	struct scatterlist sg;
	unsigned int i, nbufs;
	int err;

	err = pl_find_vqs(dev->vdev, PL_NUM_QUEUES, vqs, cbs, names);
	if (err)
		return err;
	dev->req_vq = vqs[PL_QUEUE_REQUEST];
	dev->evt_vq = vqs[PL_QUEUE_EVENT];

	nbufs = min_t(unsigned int, PL_EVT_BUFS,
		      virtqueue_get_vring_size(dev->evt_vq));
	for (i = 0; i < nbufs; i++) {
		sg_init_one(&sg, &dev->evt_bufs[i], sizeof(struct pl_event));
		err = virtqueue_add_inbuf(dev->evt_vq, &sg, 1,
					  &dev->evt_bufs[i], GFP_KERNEL);
		if (err) {
			dev->vdev->config->del_vqs(dev->vdev);
			return err;
		}
	}
	dev->vqs_live = true;
	return 0;
}

/* After virtio_device_ready(): let requests and events flow. */
static void pl_start_vqs(struct pl_dev *dev)
{
	spin_lock_irq(&dev->req_lock);
	dev->req_ok = true;
	spin_unlock_irq(&dev->req_lock);
	spin_lock_irq(&dev->evt_lock);
	dev->evt_ok = true;
	virtqueue_kick(dev->evt_vq);
	spin_unlock_irq(&dev->evt_lock);
	/* events the device wrote before evt_ok */
	queue_work(pl_wq, &dev->evt_work);
}

/*
 * Resets the device and hands every request in flight back with @err.
 * Caller holds dev->lock. The device forgets everything (docs/abi.md 7.5).
 */
static void pl_stop_vqs(struct pl_dev *dev, int err)
{
	struct pl_req *r;
	unsigned int len;

	spin_lock_irq(&dev->req_lock);
	dev->req_ok = false;
	spin_unlock_irq(&dev->req_lock);
	spin_lock_irq(&dev->evt_lock);
	dev->evt_ok = false;
	spin_unlock_irq(&dev->evt_lock);

	if (!dev->vqs_live)
		return;

	virtio_reset_device(dev->vdev);
	cancel_work_sync(&dev->evt_work);

	spin_lock_irq(&dev->req_lock);
	while ((r = virtqueue_get_buf(dev->req_vq, &len))) {
		r->used_len = len;
		complete(&r->done);
	}
	while ((r = virtqueue_detach_unused_buf(dev->req_vq))) {
		r->err = err;
		complete(&r->done);
	}
	spin_unlock_irq(&dev->req_lock);
	wake_up_all(&dev->req_space);

	dev->vdev->config->del_vqs(dev->vdev);
	dev->vqs_live = false;
}

/* Caller holds dev->lock: every context forgets its device side. */
static void pl_kill_contexts(struct pl_dev *dev)
{
	struct pl_ctx *ctx;
	unsigned long idx;

	xa_for_each(&dev->ctxs, idx, ctx) {
		xa_erase(&dev->ctxs, idx);
		pl_ctx_kill(ctx);
	}
}

/* Device status as probe leaves it, after virtio_reset_device(). */
static int pl_renegotiate(struct virtio_device *vdev)
{
	int err;

	virtio_add_status(vdev, VIRTIO_CONFIG_S_ACKNOWLEDGE);
	virtio_add_status(vdev, VIRTIO_CONFIG_S_DRIVER);
	err = vdev->config->finalize_features(vdev);
	if (err)
		return err;
	virtio_add_status(vdev, VIRTIO_CONFIG_S_FEATURES_OK);
	if (!(vdev->config->get_status(vdev) & VIRTIO_CONFIG_S_FEATURES_OK))
		return -ENODEV;
	return 0;
}

/* Resets unless the device is at generation @want or later (0: always). */
static int pl_dev_reset_before(struct pl_dev *dev, u64 want)
{
	int err;

	mutex_lock(&dev->lock);
	if (dev->dead) {
		mutex_unlock(&dev->lock);
		return -ENODEV;
	}
	if (want && dev->gen >= want) {
		/* reset since the trigger saw it: the trigger's device is gone */
		mutex_unlock(&dev->lock);
		return 0;
	}
	pr_info("%s: resetting the device\n", dev->name);
	atomic64_inc(&dev->nr_resets);
	pl_stop_vqs(dev, -EIO);
	pl_kill_contexts(dev);
	WRITE_ONCE(dev->gen, dev->gen + 1);	/* read under req_lock/evt_lock */
	/* a new ib_device for the new generation, once this one is done */
	pl_aux_replace(dev);

	err = pl_renegotiate(dev->vdev);
	if (!err)
		err = pl_init_vqs(dev);
	if (err) {
		virtio_add_status(dev->vdev, VIRTIO_CONFIG_S_FAILED);
		pr_err("%s: re-initialising after reset failed: %d\n",
		       dev->name, err);
		mutex_unlock(&dev->lock);
		return err;
	}
	virtio_device_ready(dev->vdev);
	pl_start_vqs(dev);
	mutex_unlock(&dev->lock);
	return 0;
}

/**
 * pl_dev_reset() - reset the device and start over
 * @dev: the device
 *
 * Every context of the device is marked dead and its MRs unpinned (the
 * device has forgotten them); open fds keep working for close only.
 * Requests in flight fail with -EIO.
 *
 * Context: Process context; sleeps.
 * Locking: Takes dev->lock, then (pl_ctx_kill()) each context's
 * ctx->mr_lock and ctx->ev_lock. The caller holds none of the module's
 * locks.
 * Return: 0, or -errno when the device is gone or could not be restarted.
 */
int pl_dev_reset(struct pl_dev *dev)
{
	return pl_dev_reset_before(dev, 0);
}

/**
 * pl_dev_reset_since() - reset the device unless it was reset after @gen
 * @dev: the device
 * @gen: the device generation the caller's context was created in
 *
 * For a caller that cannot trust the device any more (it refused to tear a
 * context down) and must not go on until the device has forgotten it.
 *
 * Context: Process context; sleeps.
 * Locking: As pl_dev_reset().
 * Return: as pl_dev_reset(); 0 also when the device was reset since.
 */
int pl_dev_reset_since(struct pl_dev *dev, u64 gen)
{
	return pl_dev_reset_before(dev, gen + 1);
}

static void pl_reset_work(struct work_struct *work)
{
	struct pl_dev *dev = container_of(work, struct pl_dev, reset_work);

	pl_dev_reset_before(dev, atomic64_read(&dev->reset_want));
}

static void pl_dev_free(struct kref *kref)
{
	struct pl_dev *dev = container_of(kref, struct pl_dev, kref);

	WARN_ON(!xa_empty(&dev->ctxs));
	xa_destroy(&dev->ctxs);
	kfree(dev->evt_bufs);
	kfree(dev);
}

/**
 * pl_dev_put() - drop a reference to a device
 * @dev: the device
 *
 * The last reference (remove() has run and every context is freed) frees
 * the device.
 *
 * Context: Any context that may kfree(); never sleeps.
 * Locking: The caller must not hold dev->lock (the last put frees it).
 */
void pl_dev_put(struct pl_dev *dev)
{
	kref_put(&dev->kref, pl_dev_free);
}

static int pl_query(struct pl_dev *dev)
{
	struct pl_query_device_resp q;
	int err;

	err = pl_submit(dev, PL_OP_QUERY_DEVICE, 0, NULL, 0, NULL, 0,
			&q, sizeof(q));
	if (err)
		return err;
	dev->abi_version = le32_to_cpu(q.abi_version);
	dev->page_size = le32_to_cpu(q.page_size);
	dev->features = le64_to_cpu(q.features);
	dev->max_contexts = le32_to_cpu(q.max_contexts);
	dev->max_mrs = le32_to_cpu(q.max_mrs);
	dev->max_pages_per_mr = le32_to_cpu(q.max_pages_per_mr);
	dev->max_leases = le32_to_cpu(q.max_leases);
	dev->max_children_per_context = le32_to_cpu(q.max_children_per_context);
	dev->max_request_bytes = le32_to_cpu(q.max_request_bytes);
	if (dev->abi_version != PL_ABI_VERSION ||
	    dev->page_size != PL_PAGE_SIZE) {
		pr_err("%s: QUERY_DEVICE: abi_version %u page_size %u, expected %u and %llu\n",
		       dev->name, dev->abi_version, dev->page_size,
		       PL_ABI_VERSION, PL_PAGE_SIZE);
		return -ENODEV;
	}
	return 0;
}

static int pl_probe(struct virtio_device *vdev)
{
	struct pl_dev *dev;
	u32 magic;
	u16 abi;
	int err;

	/* The page list and pin accounting use the device's 4 KiB pages. */
	BUILD_BUG_ON(PAGE_SIZE != PL_PAGE_SIZE);

	if (!vdev->config->get)
		return -ENODEV;
	virtio_cread_le(vdev, struct pl_config, magic, &magic);
	virtio_cread_le(vdev, struct pl_config, abi_version, &abi);
	if (magic != PL_MAGIC || abi != PL_ABI_VERSION) {
		dev_info(&vdev->dev,
			 "not binding virtio id %u: magic %#x abi_version %u (want %#x and %u)\n",
			 vdev->id.device, magic, abi, PL_MAGIC,
			 PL_ABI_VERSION);
		return -ENODEV;
	}
	if (!virtio_has_feature(vdev, VIRTIO_F_VERSION_1)) {
		dev_err(&vdev->dev, "VIRTIO_F_VERSION_1 not negotiated\n");
		return -ENODEV;
	}

	dev = kzalloc_obj(*dev, GFP_KERNEL);
	if (!dev)
		return -ENOMEM;
	dev->evt_bufs = kcalloc(PL_EVT_BUFS, sizeof(*dev->evt_bufs),
				GFP_KERNEL);
	if (!dev->evt_bufs) {
		kfree(dev);
		return -ENOMEM;
	}
	kref_init(&dev->kref);
	dev->vdev = vdev;
	dev->virtio_id = vdev->id.device;
	spin_lock_init(&dev->req_lock);
	init_waitqueue_head(&dev->req_space);
	atomic64_set(&dev->next_tag, 0);
	spin_lock_init(&dev->evt_lock);
	INIT_WORK(&dev->evt_work, pl_evt_work);
	INIT_WORK(&dev->reset_work, pl_reset_work);
	mutex_init(&dev->lock);
	xa_init(&dev->ctxs);
	pl_aux_init(dev);

	err = ida_alloc(&pl_ida, GFP_KERNEL);
	if (err < 0)
		goto err_put_dev;
	dev->index = err;
	snprintf(dev->name, sizeof(dev->name), "pinlease%d", dev->index);
	vdev->priv = dev;

	err = pl_init_vqs(dev);
	if (err)
		goto err_free_index;
	virtio_device_ready(vdev);
	pl_start_vqs(dev);

	err = pl_query(dev);
	if (err)
		goto err_stop_vqs;

	dev->misc.minor = MISC_DYNAMIC_MINOR;
	dev->misc.name = dev->name;
	dev->misc.fops = &pl_dev_fops;
	dev->misc.mode = 0600;
	err = misc_register(&dev->misc);
	if (err)
		goto err_stop_vqs;
	pl_debugfs_add(dev);
	pl_aux_add(dev);

	dev_info(&vdev->dev,
		 "%s: %s mode (virtio id %u), abi %u, features %#llx, max %u contexts, %u MRs, %u pages per MR\n",
		 dev->name,
		 dev->virtio_id == PL_VIRTIO_ID_NATIVE ? "native" : "carrier",
		 dev->virtio_id, dev->abi_version, dev->features,
		 dev->max_contexts, dev->max_mrs, dev->max_pages_per_mr);
	return 0;

err_stop_vqs:
	mutex_lock(&dev->lock);
	dev->dead = true;
	pl_stop_vqs(dev, -ENODEV);
	mutex_unlock(&dev->lock);
	cancel_work_sync(&dev->reset_work);
err_free_index:
	ida_free(&pl_ida, dev->index);
err_put_dev:
	vdev->priv = NULL;
	pl_dev_put(dev);
	return err;
}

static void pl_remove(struct virtio_device *vdev)
{
	struct pl_dev *dev = vdev->priv;

	/* pinlease_ib.ko's teardown first, while the device answers */
	pl_aux_remove(dev);
	pl_debugfs_remove(dev);

	mutex_lock(&dev->lock);
	WRITE_ONCE(dev->dead, true);
	/* requests in flight (opens included) fail with -ENODEV */
	pl_stop_vqs(dev, -ENODEV);
	pl_kill_contexts(dev);
	mutex_unlock(&dev->lock);

	misc_deregister(&dev->misc);
	cancel_work_sync(&dev->reset_work);
	ida_free(&pl_ida, dev->index);
	dev_info(&vdev->dev, "%s removed\n", dev->name);
	vdev->priv = NULL;
	pl_dev_put(dev);
}

static const struct virtio_device_id pl_id_table[] = {
	{ PL_VIRTIO_ID_NATIVE, VIRTIO_DEV_ANY_ID },
	{ PL_VIRTIO_ID_CARRIER, VIRTIO_DEV_ANY_ID },
	{ 0 },
};
MODULE_DEVICE_TABLE(virtio, pl_id_table);

static struct virtio_driver pl_driver = {
	.driver.name = KBUILD_MODNAME,
	.id_table = pl_id_table,
	.probe = pl_probe,
	.remove = pl_remove,
};

static int __init pl_init(void)
{
	int err;

	pl_wq = alloc_workqueue("pinlease", PL_WQ_PERCPU, 0);
	if (!pl_wq)
		return -ENOMEM;
	pl_debugfs_init();
	err = register_virtio_driver(&pl_driver);
	if (err) {
		pl_debugfs_exit();
		destroy_workqueue(pl_wq);
	}
	return err;
}

static void __exit pl_exit(void)
{
	unregister_virtio_driver(&pl_driver);
	/* context free works still queued put the last device references */
	destroy_workqueue(pl_wq);
	pl_debugfs_exit();
	ida_destroy(&pl_ida);
}

module_init(pl_init);
module_exit(pl_exit);

MODULE_DESCRIPTION("pinlease: long-term page pin and layout lease test device");
MODULE_LICENSE("GPL");
