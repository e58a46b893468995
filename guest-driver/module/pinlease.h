/* SPDX-License-Identifier: GPL-2.0 */
/*
 * pinlease guest module: internal definitions.
 *
 * Objects and their references:
 *
 * - struct pl_dev: one per bound virtio device. Lives from probe until
 *   remove() has run and the last context referring to it is freed
 *   (kref). After remove() (dev->dead) nothing touches the virtio device.
 * - struct pl_ctx: one per open of /dev/pinleaseN, a device context. Its
 *   kref is held by the device fd and by every child fd (event channel,
 *   export). The hardware lifetime ends with the device fd's release
 *   (CLOSE_CONTEXT, MRs unpinned); the object lifetime ends at kref zero
 *   (RELEASE_CONTEXT from a work item, then kfree_rcu). Child fds never
 *   hold pins. dev->ctxs maps the handle's slot to the context; readers
 *   use RCU and kref_get_unless_zero().
 * - struct pl_mr: in ctx->mrs (slot of the key), protected by
 *   ctx->mr_lock. Owns the pinned pages until DEREG_MR, MR_REVOKED,
 *   context close, device reset or remove().
 *
 * - struct pl_lease: a layout lease (pl_lease.c), in ctx->leases (under
 *   ctx->lease_lock) from LEASE_TAKE until LEASE_RELEASE or the device
 *   fd's close; owns the module's struct file the kernel lease sits on.
 *
 * Locks, what each protects, and whether its holder may sleep:
 *
 * - dev->lock (mutex): dev->ctxs writers, dev->dead, dev->gen and
 *   dev->vqs_live transitions; serialises reset, remove and the debugfs
 *   tables. Held across a reset, which kills every context under it.
 * - dev->req_lock, dev->evt_lock (spinlocks, interrupts off): the request
 *   and event virtqueues and req_ok/evt_ok. Innermost; nothing else is
 *   taken under them.
 * - ctx->mr_lock (mutex): ctx->mrs, every field of its pl_mrs, and the
 *   closed/dead transitions of the context (pl_ctx_err() under it cannot
 *   race with pl_ctx_kill()).
 * - ctx->ev_lock (spinlock): ctx->evchs, each event channel's queue, and
 *   ctx->nr_exports. Taken by the event work; never sleep under it.
 * - ctx->lease_lock (mutex): ctx->leases membership only.
 * - ctx->dereg_lock (mutex): one DEREG_MR of the context at a time, held
 *   across its device request (a reset never takes it), so a DEREG_MR of
 *   a key the table does not list cannot reach the device while another
 *   holds that key's MR out of the table.
 * - dev->aux_lock (mutex): dev->adev and dev->aux_gone; held across
 *   auxiliary_device_add() and _delete(), so across pinlease_ib.ko's probe
 *   and remove (ib_register_device(), ib_unregister_device(), which waits
 *   for every uverbs command of the device). Never taken by a path those
 *   may wait for: not under dev->lock, not in a reset, not by pl_submit().
 * - lease->lock (mutex): a lease's state, flags and works; may be held
 *   across a device request (a reset never takes it).
 * - RCU: readers of dev->ctxs (the event path) take a context reference
 *   with kref_get_unless_zero(); contexts are freed with kfree_rcu().
 * - The inode's flc_lock (the kernel's spinlock) is held when the lease
 *   manager callbacks run; they take none of the locks above.
 *
 * Lock order: ctx->dereg_lock -> ctx->mr_lock;
 * dev->lock -> ctx->mr_lock -> ctx->ev_lock;
 * dev->lock -> ctx->lease_lock -> lease->lock -> ctx->mr_lock. No device
 * request is ever sent with dev->lock, ctx->mr_lock, ctx->ev_lock or
 * ctx->lease_lock held (a request that times out waits for the device
 * reset, which takes dev->lock and ctx->mr_lock).
 *
 * Every function below carries its kernel-doc, with its Context and
 * Locking rules, at its definition.
 */
#ifndef _PINLEASE_H
#define _PINLEASE_H

#include <linux/kref.h>
#include <linux/miscdevice.h>
#include <linux/mutex.h>
#include <linux/rcupdate.h>
#include <linux/spinlock.h>
#include <linux/types.h>
#include <linux/wait.h>
#include <linux/workqueue.h>
#include <linux/xarray.h>

#include "pinlease_abi.h"
#include "pinlease_uapi.h"

struct dentry;
struct page;
struct path;
struct pinlease_adev;
struct pinlease_kctx_ops;
struct scatterlist;

/* Event buffers kept posted on the event queue. */
#define PL_EVT_BUFS		64
/* Events queued per event-channel fd before new ones are dropped. */
#define PL_EVCH_DEPTH		256
/* Pages pinned per pin_user_pages_fast() call (signals checked between). */
#define PL_PIN_BATCH		4096
/* Page-list entries per physically contiguous chunk (64 KiB). */
#define PL_LIST_CHUNK		8192

/* Event kinds (0: unknown) and fault action codes (0: unknown) counted. */
#define PL_FAULT_KINDS		(PL_EVENT_NEEDS_RESET + 1)
#define PL_FAULT_ACTIONS	(PL_FAULT_ACTION_ABORT + 1)

/* What the fault points fired and the device's fault events (pl_faults.c). */
struct pl_fault_counters {
	atomic64_t pin_after;
	atomic64_t lease_set;
	atomic64_t release_delay;
	atomic64_t drop_event;
	atomic64_t dropped[PL_FAULT_KINDS];	/* by event kind */
	atomic64_t injected[PL_FAULT_ACTIONS];	/* FAULT_INJECTED by action */
	atomic64_t needs_reset;			/* NEEDS_RESET events */
	atomic64_t broken_vq;			/* a virtqueue found broken */
	atomic64_t bad_tag;			/* a response with a wrong tag */
};

struct pl_dev {
	struct kref kref;
	struct virtio_device *vdev;	/* not to be used once dead */
	u32 virtio_id;
	int index;
	char name[24];		/* "pinlease%d" */

	/* request queue: req_vq, req_ok and req_pollers under req_lock */
	spinlock_t req_lock;
	struct virtqueue *req_vq;
	bool req_ok;
	/* submitters polling the used ring: its interrupt is off while > 0 */
	unsigned int req_pollers;
	wait_queue_head_t req_space;
	atomic64_t next_tag;

	/* event queue: evt_vq and evt_ok under evt_lock */
	spinlock_t evt_lock;
	struct virtqueue *evt_vq;
	bool evt_ok;
	struct pl_event *evt_bufs;
	struct work_struct evt_work;

	struct work_struct reset_work;
	atomic64_t reset_want;	/* reset_work resets while gen < this */

	/* the auxiliary device "pinlease.rdma.N" (pl_kapi.c) */
	struct mutex aux_lock;		/* adev, aux_gone */
	struct pinlease_adev *adev;	/* NULL: none added */
	bool aux_gone;			/* remove() began: add none again */
	struct work_struct aux_work;	/* replaces adev after a reset */

	/* serialises ctxs writers, reset and remove */
	struct mutex lock;
	bool dead;		/* removed; also read locklessly */
	bool vqs_live;		/* vqs exist (false after a failed re-init) */
	u64 gen;		/* device resets so far */
	struct xarray ctxs;	/* slot of the context handle -> pl_ctx */

	/* QUERY_DEVICE answer, CPU byte order */
	u32 abi_version;
	u32 page_size;
	u64 features;
	u32 max_contexts;
	u32 max_mrs;
	u32 max_pages_per_mr;
	u32 max_leases;
	u32 max_children_per_context;
	u32 max_request_bytes;

	struct miscdevice misc;
	struct dentry *dbg;

	/* counters for debugfs */
	atomic64_t nr_requests;
	atomic64_t nr_events;
	atomic64_t nr_events_unrouted;
	atomic64_t nr_events_bad;
	atomic64_t nr_timeouts;
	atomic64_t nr_resets;
	struct pl_fault_counters faults;
};

struct pl_ctx {
	struct kref kref;
	struct pl_dev *dev;		/* holds a dev reference */
	u64 handle;
	pid_t pid;
	char comm[16];
	u64 gen;			/* dev->gen when created */

	struct mutex mr_lock;		/* mrs, closed/dead transitions */
	struct mutex dereg_lock;	/* one DEREG_MR at a time */
	struct xarray mrs;		/* slot of the MR key -> pl_mr */
	bool closed;			/* device fd released */
	bool dead;			/* device reset or removed */

	spinlock_t ev_lock;		/* evchs and their queues, nr_exports */
	struct list_head evchs;		/* struct pl_evch.node */
	u32 nr_exports;

	struct mutex lease_lock;		/* leases membership only */
	struct xarray leases;		/* allocated id -> pl_lease */

	/* kernel context: its owner's callbacks (pinlease_kapi.h), or NULL */
	const struct pinlease_kctx_ops *kops;

	struct work_struct free_work;
	struct rcu_head rcu;
};

enum pl_lease_state {
	PL_LS_ACTIVE,
	PL_LS_BREAKING,		/* wait/timeout: broken, the breaker waits */
	PL_LS_REVOKED,		/* revoke: MRs revoked, kernel lease removed */
	PL_LS_LOST,		/* timeout: the kernel removed it, pins remain */
};

struct pl_lease {
	struct pl_ctx *ctx;		/* no reference: ends before the ctx */
	u64 handle;			/* the device's lease handle */
	struct file *file;		/* the module's own file on the inode */
	struct mutex lock;		/* state, the flags below, the works */
	u32 policy;			/* PL_POLICY_* */
	int state;			/* enum pl_lease_state */
	bool kernel_held;		/* the FL_LAYOUT lease is on the inode */
	bool dev_held;			/* the device has it in its table */
	bool closing;
	u64 start, length;		/* length 0: to EOF */
	u64 file_dev, file_ino;
	u32 file_gen;
	pid_t pid;			/* taker */
	u32 nr_breaks;
	u32 mrs_revoked;
	unsigned long break_deadline;	/* timeout: the kernel's fl_break_time */
	bool timed_out;			/* lm_breaker_timedout: kernel deletes it */
	struct work_struct break_work;
	struct delayed_work lost_work;
};

struct pl_mr {
	u64 key;
	u64 lease;
	u64 addr;
	u64 length;
	u32 access;
	u32 npages;
	u32 reg_flags;			/* PL_REG_* sent to the device */
	u32 pin_flags;			/* PINLEASE_PIN_* */
	bool imported;
	bool revoked;
	bool kernel;			/* pinlease_kctx_reg_mr(): no pins */
	void *kpriv;			/* kernel MR: its owner's, for kops */
	u64 file_dev;
	u64 file_ino;
	u32 file_gen;
	u64 file_offset;
	u64 import_export;		/* export handle it was imported from */
	struct page **pages;		/* NULL: no pins (imported, unpinned) */
};

/* pl_virtio.c: virtio driver, requests, events, device reset */
extern struct workqueue_struct *pl_wq;
int pl_submit(struct pl_dev *dev, u16 op, u64 ctx, const void *body,
	      size_t blen, struct scatterlist *extra, unsigned int nextra,
	      void *rbody, size_t rlen);
void pl_dev_put(struct pl_dev *dev);
int pl_dev_reset(struct pl_dev *dev);
int pl_dev_reset_since(struct pl_dev *dev, u64 gen);

/* pl_fops.c: the device fd */
extern const struct file_operations pl_dev_fops;

/* pl_ctx.c: context lifetimes */
struct pl_ctx *pl_ctx_create(struct pl_dev *dev);
void pl_ctx_close(struct pl_ctx *ctx);
struct pl_ctx *pl_ctx_lookup(struct pl_dev *dev, u64 handle);
void pl_ctx_put(struct pl_ctx *ctx);
void pl_ctx_kill(struct pl_ctx *ctx);
const char *pl_ctx_state(const struct pl_ctx *ctx);
int pl_ctx_err(struct pl_ctx *ctx);
int pl_ctx_destroy_child(struct pl_ctx *ctx, u64 child);

/* pl_mr.c: memory regions */
struct seq_file;
int pl_pin_batches(unsigned long start, unsigned long *pinned,
		   unsigned long want, unsigned int gup_flags,
		   struct page **pages);
void pl_mr_unpin(struct pl_mr *mr);
void pl_ctx_unpin_all(struct pl_ctx *ctx);
void pl_ctx_mr_revoked(struct pl_ctx *ctx, u64 key);
void pl_mr_revoked_unpin(struct pl_ctx *ctx, struct pl_mr *mr);
int pl_ctx_add_mr(struct pl_ctx *ctx, struct pl_mr *mr);
int pl_mr_tell_device(struct pl_ctx *ctx, struct pl_mr *mr, u32 off,
		      const u64 *pas);
int pl_mr_dereg(struct pl_ctx *ctx, u64 key, bool interruptible);
long pl_ioctl_reg_mr(struct pl_ctx *ctx, void __user *argp);
long pl_ioctl_dereg_mr(struct pl_ctx *ctx, void __user *argp);
void pl_mr_show(struct seq_file *m, const struct pl_mr *mr);

/* pl_export.c: MR sharing between contexts */
long pl_ioctl_export_mr(struct pl_ctx *ctx, void __user *argp);
long pl_ioctl_import_mr(struct pl_ctx *ctx, void __user *argp);

/* pl_evch.c: event-channel fds */
void pl_ctx_route_event(struct pl_ctx *ctx, const struct pl_event *ev);
void pl_ctx_hangup_evchs(struct pl_ctx *ctx);
long pl_ioctl_event_fd(struct pl_ctx *ctx);

/* pl_dma.c: data operations */
long pl_ioctl_dma(struct pl_ctx *ctx, void __user *argp);

/* pl_lease.c: layout leases */
int pl_lease_take(struct pl_ctx *ctx, const struct path *path, u32 policy,
		  u64 start, u64 length, u64 *handle);
int pl_lease_release(struct pl_ctx *ctx, u64 handle);
bool pl_lease_is_active(struct pl_ctx *ctx, u64 handle);
long pl_ioctl_lease_take(struct pl_ctx *ctx, void __user *argp);
long pl_ioctl_lease_release(struct pl_ctx *ctx, void __user *argp);
void pl_ctx_release_leases(struct pl_ctx *ctx);
bool pl_lease_covers(struct pl_ctx *ctx, u64 dev, u64 ino, u32 gen, u64 off,
		     u64 len);
void pl_lease_show(struct seq_file *m, const struct pl_lease *l);
const char *pl_lease_state_name(const struct pl_lease *l);
const char *pl_lease_policy_name(const struct pl_lease *l);
const char *pl_policy_name(u32 policy);

/* pl_faults.c: fault points and the request timeout */
unsigned long pl_req_timeout(void);
unsigned int pl_req_timeout_ms(void);
unsigned int pl_req_poll_us(void);
long pl_fault_pin_limit(unsigned long npages);
bool pl_fault_pin_fire(struct pl_dev *dev, unsigned long pinned,
		       unsigned long npages);
bool pl_fault_lease_set(struct pl_dev *dev, u64 ino);
void pl_fault_release_delay(struct pl_dev *dev, u64 handle);
bool pl_fault_drop_event(struct pl_dev *dev, const struct pl_event *ev);
void pl_fault_injected_event(struct pl_dev *dev, const struct pl_event *ev);
void pl_faults_show(struct seq_file *m, struct pl_dev *dev);

/* pl_kapi.c: the auxiliary device and the in-kernel API (pinlease_kapi.h) */
void pl_aux_init(struct pl_dev *dev);
void pl_aux_add(struct pl_dev *dev);
void pl_aux_remove(struct pl_dev *dev);
void pl_aux_replace(struct pl_dev *dev);

/* pl_bench.c: the bench_pin debugfs file (module-wide) */
void pl_bench_debugfs_init(struct dentry *root);

/* pl_debugfs.c: debugfs tables */
void pl_debugfs_init(void);
void pl_debugfs_exit(void);
void pl_debugfs_add(struct pl_dev *dev);
void pl_debugfs_remove(struct pl_dev *dev);

#endif /* _PINLEASE_H */
