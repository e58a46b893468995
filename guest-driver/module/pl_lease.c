// SPDX-License-Identifier: GPL-2.0
/*
 * pinlease: layout leases held against the device fd.
 *
 * LEASE_TAKE opens the module's own struct file on the data file's inode
 * (as nfsd does for pNFS layouts), sets an FL_LAYOUT read lease on it owned
 * by the struct pl_lease, and reports the lease to the device. Only the
 * device fd (its context) ends the lease: LEASE_RELEASE or the close of the
 * device fd; the data fd may be closed at once.
 *
 * When the kernel breaks the lease (on 6.1, 6.12 and 7.3 only XFS calls
 * break_layout(): truncate, fallocate, reflink, write), lm_break runs with
 * the inode's flc_lock spinlock held: it only queues break_work and returns
 * false, so the breaker waits in __break_lease():
 * - revoke: break time 0; the work sends LEASE_BREAK (the device revokes the
 *   holder's MRs on the lease's range), unpins those MRs, then removes the
 *   kernel lease (the breaker goes on) and releases it on the device;
 * - wait: break time 0; the work sends LEASE_BREAK (the device sends
 *   LEASE_BROKEN to the holder) and the breaker waits, interruptibly, until
 *   the holder releases the lease or closes the device fd;
 * - timeout: the kernel's lease-break-time stays; the breaker's wait times
 *   out and time_out_leases() deletes the lease with lease_modify(). Where
 *   the kernel has lm_breaker_timedout (7.3), time_out_leases() calls it
 *   first, under flc_lock: it queues lost_work at once and returns true,
 *   so the kernel still deletes the lease. Without the hook (6.1, 6.12),
 *   break_work queues lost_work for the break deadline, and lost_work
 *   looks for the lease on the inode until it is gone. Either way
 *   lost_work then tells the device LEASE_RELEASE(LOST): pins remain and
 *   the device counts.
 *
 * Kernel differences (struct file_lock or file_lease, the lease manager
 * hooks, kernel_setlease()) are in pinlease_compat.h.
 *
 * Locking: lease->lock serialises a lease's state, the works and release;
 * it may be held across device requests (reset never takes it). Order:
 * ctx->lease_lock -> lease->lock -> ctx->mr_lock. ctx->lease_lock guards
 * ctx->leases membership only and is never held across a device request.
 * The lease manager callbacks run under the inode's flc_lock (a spinlock)
 * and take none of these: they read the immutable policy, write
 * break_deadline and timed_out with WRITE_ONCE() and queue works. They
 * cannot run once pl_lease_unset() has removed the kernel lease, nor after
 * the kernel deleted it.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/file.h>
#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/sched.h>
#include <linux/seq_file.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#include "pinlease.h"
#include "pinlease_compat.h"

static const char *const pl_lease_state_names[] = {
	[PL_LS_ACTIVE] = "active",
	[PL_LS_BREAKING] = "breaking",
	[PL_LS_REVOKED] = "revoked",
	[PL_LS_LOST] = "lost",
};

static const char *const pl_policy_names[] = {
	[PL_POLICY_REVOKE] = "revoke",
	[PL_POLICY_WAIT] = "wait",
	[PL_POLICY_TIMEOUT] = "timeout",
};

/**
 * pl_lease_state_name() - a lease's state, as debugfs and fdinfo name it
 * @l: the lease
 *
 * Context: Any context.
 * Locking: None; reads the state with READ_ONCE(), so it may be stale.
 * Return: "active", "breaking", "revoked" or "lost".
 */
const char *pl_lease_state_name(const struct pl_lease *l)
{
	return pl_lease_state_names[READ_ONCE(l->state)];
}

/**
 * pl_policy_name() - a PL_POLICY_* value's name
 * @policy: the value
 *
 * Context: Any context.
 * Return: "revoke", "wait", "timeout", or NULL for no policy.
 */
const char *pl_policy_name(u32 policy)
{
	if (policy >= ARRAY_SIZE(pl_policy_names))
		return NULL;
	return pl_policy_names[policy];
}

/**
 * pl_lease_policy_name() - a lease's break policy, by name
 * @l: the lease
 *
 * Context: Any context.
 * Locking: None; the policy never changes after LEASE_TAKE.
 * Return: "revoke", "wait" or "timeout".
 */
const char *pl_lease_policy_name(const struct pl_lease *l)
{
	return pl_policy_names[l->policy];
}

/* lm_break: flc_lock (a spinlock) is held; never sleep. */
static bool pl_lm_break(struct pl_file_lease *fl)
{
	struct pl_lease *l = pl_lease_owner(fl);

	if (l->policy == PL_POLICY_TIMEOUT)
		/* the kernel times the lease out after lease-break-time */
		WRITE_ONCE(l->break_deadline, fl->fl_break_time);
	else
		/* the breaker waits until we remove the lease (nfsd's model) */
		fl->fl_break_time = 0;
	queue_work(pl_wq, &l->break_work);
	return false;
}

static int pl_lm_change(struct pl_file_lease *onlist, int arg,
			struct list_head *dispose)
{
	return lease_modify(onlist, arg, dispose);
}

/*
 * lm_breaker_timedout (7.3): the break time of a timeout-policy lease has
 * passed. flc_lock (a spinlock) is held and the lease is still on the
 * inode; never sleep. lost_work, queued at once, takes the LOST step; true
 * lets time_out_leases() delete the lease, as the kernel did before the
 * hook. Revoke and wait leases have no break time, so never get here.
 */
static bool __maybe_unused pl_lm_breaker_timedout(struct pl_file_lease *fl)
{
	struct pl_lease *l = pl_lease_owner(fl);

	WRITE_ONCE(l->timed_out, true);
	mod_delayed_work(pl_wq, &l->lost_work, 0);
	return true;
}

static const struct pl_lease_manager_operations pl_lm_ops = {
	.lm_break = pl_lm_break,
	.lm_change = pl_lm_change,
	PL_LM_OPEN_CONFLICT
	PL_LM_BREAKER_TIMEDOUT
};

/* Removes the kernel lease (the breaker, if any, goes on). lease->lock held. */
static void pl_lease_unset(struct pl_lease *l)
{
	int err;

	if (!l->kernel_held)
		return;
	l->kernel_held = false;
	err = pl_lease_remove(l->file, l);
	/* -EAGAIN: the kernel timed it out already */
	if (err && err != -EAGAIN)
		pr_warn("%s: lease %#llx: removing the kernel lease: %d\n",
			l->ctx->dev->name, l->handle, err);
}

/* LEASE_RELEASE to the device. lease->lock held. */
static int pl_lease_dev_release(struct pl_lease *l, u32 reason)
{
	struct pl_lease_release_req req = {
		.lease = cpu_to_le64(l->handle),
		.reason = cpu_to_le32(reason),
	};
	struct pl_ctx *ctx = l->ctx;
	int err;

	if (!l->dev_held || READ_ONCE(ctx->dead))
		return 0;
	err = pl_submit(ctx->dev, PL_OP_LEASE_RELEASE, ctx->handle, &req,
			sizeof(req), NULL, 0, NULL, 0);
	if (reason == PL_RELEASE_HOLDER || err)
		l->dev_held = false;
	if (err && err != -ENODEV && !READ_ONCE(ctx->dead))
		pr_warn("%s: LEASE_RELEASE %#llx reason %u: %d\n",
			ctx->dev->name, l->handle, reason, err);
	return err;
}

/*
 * The device revoked the holder's MRs on the lease's range: unpin them
 * before the lease goes (the MR_REVOKED events find them unpinned).
 */
static u32 pl_lease_unpin_range(struct pl_lease *l)
{
	struct pl_ctx *ctx = l->ctx;
	struct pl_mr *mr;
	unsigned long idx;
	u64 lend = l->length ? l->start + l->length : U64_MAX;
	u32 n = 0;

	mutex_lock(&ctx->mr_lock);
	xa_for_each(&ctx->mrs, idx, mr) {
		if (!(mr->reg_flags & PL_REG_HAS_FILE) || mr->imported ||
		    mr->file_dev != l->file_dev || mr->file_ino != l->file_ino ||
		    mr->file_gen != l->file_gen)
			continue;
		if (mr->file_offset >= lend ||
		    mr->file_offset + mr->length <= l->start)
			continue;
		/*
		 * The device's MR_REVOKED event may have been routed first
		 * (pl_ctx_mr_revoked): an MR the device put under this lease
		 * at REG_MR counts as revoked by it all the same.
		 */
		if (!mr->revoked) {
			mr->revoked = true;
			n++;
		} else if (mr->lease == l->handle) {
			n++;
		}
		pl_mr_revoked_unpin(ctx, mr);
	}
	mutex_unlock(&ctx->mr_lock);
	return n;
}

static void pl_lease_break_work(struct work_struct *work)
{
	struct pl_lease *l = container_of(work, struct pl_lease, break_work);
	struct pl_ctx *ctx = l->ctx;
	struct pl_lease_break_req req = {
		.file.dev = cpu_to_le64(l->file_dev),
		.file.ino = cpu_to_le64(l->file_ino),
		.file.generation = cpu_to_le32(l->file_gen),
		/* which range the kernel is changing is not known here */
		.start = 0,
		.length = 0,
		.reason = cpu_to_le32(PL_BREAK_OTHER),
	};
	struct pl_lease_break_resp resp = {};
	unsigned long deadline;
	long delay;
	int err = -ENODEV;

	mutex_lock(&l->lock);
	if (l->closing || !l->kernel_held || l->state != PL_LS_ACTIVE)
		goto out_unlock;
	if (!READ_ONCE(ctx->dead))
		err = pl_submit(ctx->dev, PL_OP_LEASE_BREAK, 0, &req,
				sizeof(req), NULL, 0, &resp, sizeof(resp));
	if (err && err != -ENODEV && !READ_ONCE(ctx->dead))
		pr_warn("%s: LEASE_BREAK for lease %#llx: %d\n",
			ctx->dev->name, l->handle, err);
	l->nr_breaks++;

	switch (l->policy) {
	case PL_POLICY_REVOKE:
		/*
		 * Unpin only what the device stopped using (or forgot: a dead
		 * context has no pins left). On any other failure the pins
		 * stay with their MRs until DEREG_MR or close.
		 */
		if (!err)
			l->mrs_revoked += pl_lease_unpin_range(l);
		/*
		 * State first: removing the kernel lease lets the breaker
		 * return, and whoever watches it must then see "revoked".
		 */
		WRITE_ONCE(l->state, PL_LS_REVOKED);
		pl_lease_unset(l);
		pl_lease_dev_release(l, PL_RELEASE_HOLDER);
		break;
	case PL_POLICY_WAIT:
		WRITE_ONCE(l->state, PL_LS_BREAKING);
		break;
	case PL_POLICY_TIMEOUT:
		WRITE_ONCE(l->state, PL_LS_BREAKING);
		/* with the hook, lm_breaker_timedout queues lost_work */
		if (pl_have_breaker_timedout)
			break;
		deadline = READ_ONCE(l->break_deadline);
		delay = deadline ? (long)(deadline - jiffies) : 0;
		queue_delayed_work(pl_wq, &l->lost_work,
				   max(delay, 0L) + HZ / 10);
		break;
	}
out_unlock:
	mutex_unlock(&l->lock);
}

/*
 * Timeout policy: the kernel deleted the lease after the break time. With
 * lm_breaker_timedout it said so; without, look for the lease on the inode.
 */
static void pl_lease_lost_work(struct work_struct *work)
{
	struct pl_lease *l = container_of(to_delayed_work(work),
					  struct pl_lease, lost_work);

	/*
	 * LEASE_BREAK goes to the device before LEASE_RELEASE(LOST): the hook
	 * may queue this work before break_work has run (break_work queued
	 * the polling one itself). lm_break cannot queue break_work again:
	 * the lease is being broken, then gone.
	 */
	flush_work(&l->break_work);
	mutex_lock(&l->lock);
	if (l->closing || !l->kernel_held)
		goto out_unlock;
	if (!READ_ONCE(l->timed_out) &&
	    pl_lease_on_inode(file_inode(l->file), l->file, l)) {
		/* the breaker has not run time_out_leases() yet */
		queue_delayed_work(pl_wq, &l->lost_work, HZ / 4);
		goto out_unlock;
	}
	l->kernel_held = false;
	WRITE_ONCE(l->state, PL_LS_LOST);
	pr_info("%s: lease %#llx (ino %llu) timed out by the kernel with pins held: LOST\n",
		l->ctx->dev->name, l->handle, l->file_ino);
	pl_lease_dev_release(l, PL_RELEASE_LOST);
out_unlock:
	mutex_unlock(&l->lock);
}

/*
 * Ends a lease taken out of ctx->leases: kernel lease removed, works
 * stopped, device told (@tell_dev: not after CLOSE_CONTEXT, which released
 * every lease), module file put.
 */
static int pl_lease_destroy(struct pl_lease *l, bool tell_dev)
{
	int err = 0;

	mutex_lock(&l->lock);
	l->closing = true;
	pl_lease_unset(l);
	mutex_unlock(&l->lock);
	/* no lm_break can run now: the kernel lease is gone */
	cancel_work_sync(&l->break_work);
	cancel_delayed_work_sync(&l->lost_work);
	mutex_lock(&l->lock);
	if (tell_dev)
		err = pl_lease_dev_release(l, PL_RELEASE_HOLDER);
	mutex_unlock(&l->lock);
	fput(l->file);
	kfree(l);
	return err;
}

/**
 * pl_lease_take() - take a layout lease for a context
 * @ctx: the holder
 * @path: the data file (its inode is leased)
 * @policy: PL_POLICY_*
 * @start: the range's first byte
 * @length: the range's bytes; 0: to the end of the file
 * @handle: the device's lease handle, on success
 *
 * Opens the module's own struct file on @path's inode (the caller's file
 * may be closed at once), sets an FL_LAYOUT lease on it, then reports the
 * lease to the device. The lease is then the context's until
 * pl_lease_release() or the context's close.
 *
 * Context: Process context; sleeps. The lease's pid is the caller's.
 * Locking: The caller holds no lock of the module's. Takes lease->lock
 * (held across LEASE_TAKE to the device, so a break waits for the handle)
 * and then ctx->lease_lock; the inode's flc_lock inside vfs_setlease().
 * Return: 0, -EINVAL (policy, range, not a regular file), -ENOMEM,
 * -EAGAIN (fault_lease_set or a conflicting lease), dentry_open()'s or
 * vfs_setlease()'s error, or the device's answer.
 */
int pl_lease_take(struct pl_ctx *ctx, const struct path *path, u32 policy,
		  u64 start, u64 length, u64 *handle)
{
	struct pl_lease_take_req req = {};
	struct pl_handle_resp resp;
	struct inode *inode = d_inode(path->dentry);
	struct pl_file_lease *fl;
	struct pl_lease *l;
	u64 end;
	u32 id;
	int err;

	if (policy < PL_POLICY_REVOKE || policy > PL_POLICY_TIMEOUT ||
	    check_add_overflow(start, length, &end) || start > LLONG_MAX ||
	    !S_ISREG(inode->i_mode))
		return -EINVAL;

	l = kzalloc_obj(*l, GFP_KERNEL);
	if (!l)
		return -ENOMEM;
	mutex_init(&l->lock);
	INIT_WORK(&l->break_work, pl_lease_break_work);
	INIT_DELAYED_WORK(&l->lost_work, pl_lease_lost_work);
	l->ctx = ctx;
	l->policy = policy;
	l->start = start;
	l->length = length;
	l->pid = task_tgid_vnr(current);
	l->file_dev = inode->i_sb->s_dev;
	l->file_ino = inode->i_ino;
	l->file_gen = inode->i_generation;
	/* our own struct file: the caller's may be closed, the lease stays */
	l->file = dentry_open(path, O_RDONLY | O_LARGEFILE, current_cred());
	if (IS_ERR(l->file)) {
		err = PTR_ERR(l->file);
		kfree(l);
		return err;
	}

	fl = pl_lease_alloc();
	if (!fl) {
		err = -ENOMEM;
		goto err_fput;
	}
	pl_lease_init_layout(fl, l->file, l);
	fl->fl_lmops = &pl_lm_ops;

	/*
	 * A break before the device knows the lease waits for this lock.
	 * The kernel lease comes first, so when it cannot be set (or
	 * fault_lease_set says so) the device has nothing to release.
	 */
	mutex_lock(&l->lock);
	if (pl_fault_lease_set(ctx->dev, l->file_ino))
		err = -EAGAIN;
	else
		err = vfs_setlease(l->file, F_RDLCK, &fl, NULL);
	if (err) {
		mutex_unlock(&l->lock);
		pl_lease_free(fl);
		goto err_fput;
	}
	WARN_ON_ONCE(fl);	/* the kernel took it */
	l->kernel_held = true;

	req.file.dev = cpu_to_le64(l->file_dev);
	req.file.ino = cpu_to_le64(l->file_ino);
	req.file.generation = cpu_to_le32(l->file_gen);
	req.start = cpu_to_le64(start);
	req.length = cpu_to_le64(length);
	req.policy = cpu_to_le32(policy);
	req.owner_pid = cpu_to_le32(l->pid);
	err = pl_submit(ctx->dev, PL_OP_LEASE_TAKE, ctx->handle, &req,
			sizeof(req), NULL, 0, &resp, sizeof(resp));
	if (err) {
		l->closing = true;
		pl_lease_unset(l);
		mutex_unlock(&l->lock);
		goto err_cancel_works;
	}
	l->handle = le64_to_cpu(resp.handle);
	l->dev_held = true;
	mutex_unlock(&l->lock);

	mutex_lock(&ctx->lease_lock);
	err = xa_alloc(&ctx->leases, &id, l, xa_limit_32b, GFP_KERNEL);
	mutex_unlock(&ctx->lease_lock);
	if (err) {
		pl_lease_destroy(l, true);
		return err;
	}
	*handle = l->handle;
	return 0;

err_cancel_works:
	cancel_work_sync(&l->break_work);
	cancel_delayed_work_sync(&l->lost_work);
err_fput:
	fput(l->file);
	kfree(l);
	return err;
}

/**
 * pl_ioctl_lease_take() - PINLEASE_IOC_LEASE_TAKE: take a layout lease
 * @ctx: the device fd's context
 * @argp: struct pinlease_lease_take, in and out
 *
 * pl_lease_take() on the data fd's file. The lease stays taken even when
 * the copy back fails: it goes away at close.
 *
 * Context: Process context, the ioctl's caller; sleeps.
 * Locking: As pl_lease_take().
 * Return: 0, -EFAULT, -EBADF, or as pl_lease_take().
 */
long pl_ioctl_lease_take(struct pl_ctx *ctx, void __user *argp)
{
	struct pinlease_lease_take a;
	struct fd f;
	int err;

	if (copy_from_user(&a, argp, sizeof(a)))
		return -EFAULT;
	f = fdget(a.data_fd);
	if (!fd_file(f))
		return -EBADF;
	err = pl_lease_take(ctx, &fd_file(f)->f_path, a.policy, a.start,
			    a.length, &a.lease);
	fdput(f);
	if (err)
		return err;
	/* taken even if the copy fails: it goes away at close */
	return copy_to_user(argp, &a, sizeof(a)) ? -EFAULT : 0;
}

/**
 * pl_lease_release() - end a context's lease
 * @ctx: the holder, live or dead (a breaker may wait on it)
 * @handle: the device's lease handle
 *
 * Removes the kernel lease (a waiting breaker goes on), stops the lease's
 * works, sends LEASE_RELEASE unless the context is dead, and puts the
 * module's file.
 *
 * Context: Process context; sleeps.
 * Locking: The caller holds no lock of the module's. Takes
 * ctx->lease_lock, then lease->lock (held across LEASE_RELEASE).
 * Return: 0, -ENOENT (no such lease), or the device's answer.
 */
int pl_lease_release(struct pl_ctx *ctx, u64 handle)
{
	struct pl_lease *l, *found = NULL;
	unsigned long idx;

	mutex_lock(&ctx->lease_lock);
	xa_for_each(&ctx->leases, idx, l) {
		if (l->handle == handle) {
			xa_erase(&ctx->leases, idx);
			found = l;
			break;
		}
	}
	mutex_unlock(&ctx->lease_lock);
	if (!found)
		return -ENOENT;
	return pl_lease_destroy(found, true);
}

/**
 * pl_ioctl_lease_release() - PINLEASE_IOC_LEASE_RELEASE: end a lease
 * @ctx: the device fd's context, live or dead
 * @argp: the lease handle (u64)
 *
 * Context: Process context, the ioctl's caller; sleeps.
 * Locking: As pl_lease_release().
 * Return: 0, -EFAULT, or as pl_lease_release().
 */
long pl_ioctl_lease_release(struct pl_ctx *ctx, void __user *argp)
{
	u64 handle;

	if (get_user(handle, (u64 __user *)argp))
		return -EFAULT;
	return pl_lease_release(ctx, handle);
}

/**
 * pl_ctx_release_leases() - end every lease of a closing context
 * @ctx: the context, after CLOSE_CONTEXT and the unpin of its MRs
 *
 * CLOSE_CONTEXT released the leases on the device: only the kernel
 * leases are removed and the module's files put.
 *
 * Context: Process context (the device fd's release); sleeps.
 * Locking: The caller holds no lock of the module's. Takes
 * ctx->lease_lock, then each lease->lock, one lease at a time.
 */
void pl_ctx_release_leases(struct pl_ctx *ctx)
{
	struct pl_lease *l;
	unsigned long idx;

	for (;;) {
		mutex_lock(&ctx->lease_lock);
		l = xa_find(&ctx->leases, &idx, ULONG_MAX, XA_PRESENT);
		if (l)
			xa_erase(&ctx->leases, idx);
		mutex_unlock(&ctx->lease_lock);
		if (!l)
			break;
		/* CLOSE_CONTEXT released them on the device */
		pl_lease_destroy(l, false);
		idx = 0;
	}
}

/**
 * pl_lease_is_active() - whether a context's lease is still unbroken
 * @ctx: the holder
 * @handle: the device's lease handle
 *
 * Context: Process context; sleeps (mutex).
 * Locking: Takes ctx->lease_lock; the caller must not hold it nor any
 * lease->lock.
 * Return: true when @ctx holds the lease and it is ACTIVE (not breaking,
 * revoked or lost).
 */
bool pl_lease_is_active(struct pl_ctx *ctx, u64 handle)
{
	struct pl_lease *l;
	unsigned long idx;
	bool active = false;

	mutex_lock(&ctx->lease_lock);
	xa_for_each(&ctx->leases, idx, l) {
		if (l->handle == handle) {
			active = READ_ONCE(l->state) == PL_LS_ACTIVE;
			break;
		}
	}
	mutex_unlock(&ctx->lease_lock);
	return active;
}

/**
 * pl_lease_covers() - require_lease: is a file range under an active lease?
 * @ctx: the context whose leases count
 * @dev: the file's device (sb->s_dev)
 * @ino: the file's inode number
 * @gen: the file's inode generation
 * @off: the range's first byte in the file
 * @len: the range's length
 *
 * A revoked, breaking or lost lease does not count.
 *
 * Context: Process context; sleeps (mutex).
 * Locking: Takes ctx->lease_lock; the caller must not hold it nor any
 * lease->lock.
 * Return: true when an ACTIVE lease of @ctx covers [@off, @off + @len).
 */
bool pl_lease_covers(struct pl_ctx *ctx, u64 dev, u64 ino, u32 gen, u64 off,
		     u64 len)
{
	struct pl_lease *l;
	unsigned long idx;
	bool ok = false;

	mutex_lock(&ctx->lease_lock);
	xa_for_each(&ctx->leases, idx, l) {
		if (l->file_dev != dev || l->file_ino != ino ||
		    l->file_gen != gen || READ_ONCE(l->state) != PL_LS_ACTIVE)
			continue;
		if (off < l->start)
			continue;
		if (l->length && off + len > l->start + l->length)
			continue;
		ok = true;
		break;
	}
	mutex_unlock(&ctx->lease_lock);
	return ok;
}

/**
 * pl_lease_show() - one "lease:" line of a device fd's fdinfo
 * @m: the fdinfo seq_file
 * @l: the lease
 *
 * Context: Process context (seq_file show).
 * Locking: The caller holds ctx->lease_lock of the lease's context, which
 * keeps @l alive; the state fields are read with READ_ONCE().
 */
void pl_lease_show(struct seq_file *m, const struct pl_lease *l)
{
	seq_printf(m, "lease:\thandle=%#llx dev=%llx ino=%llu gen=%u start=%llu end=",
		   l->handle, l->file_dev, l->file_ino, l->file_gen, l->start);
	if (l->length)
		seq_printf(m, "%llu", l->start + l->length);
	else
		seq_puts(m, "eof");
	seq_printf(m, " policy=%s state=%s kernel=%s pid=%d breaks=%u mrs_revoked=%u\n",
		   pl_lease_policy_name(l), pl_lease_state_name(l),
		   READ_ONCE(l->kernel_held) ? "held" : "gone", l->pid,
		   READ_ONCE(l->nr_breaks), READ_ONCE(l->mrs_revoked));
}
