// SPDX-License-Identifier: GPL-2.0
/*
 * pinlease: the module's own fault points (docs/faults.md section 2), the
 * request timeout and the request poll time, as module parameters, and what
 * the fault points fired.
 *
 * Every parameter is an atomic_t behind its own kernel_param_ops: a
 * countdown (fault_pin_times, fault_lease_set, fault_drop_event) is taken
 * with one atomic operation by whichever request gets there first, so two
 * REG_MRs never both consume the last count, and a sysfs write is range
 * checked (-EINVAL names nothing, so the refused value is logged).
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/atomic.h>
#include <linux/delay.h>
#include <linux/kstrtox.h>
#include <linux/moduleparam.h>
#include <linux/seq_file.h>
#include <linux/string.h>

#include "pinlease.h"

struct pl_fault_param {
	const char *name;
	atomic_t val;
	int min, max;
};

#define PL_FAULT_PARAM(var, pname, def, lo, hi) \
	static struct pl_fault_param var = { \
		.name = pname, .val = ATOMIC_INIT(def), .min = lo, .max = hi, \
	}

/* Upper bounds: large enough for any campaign, small enough to notice a typo. */
#define PL_FAULT_MAX_PAGES	INT_MAX
#define PL_RELEASE_DELAY_MAX_MS	60000
#define PL_REQ_TIMEOUT_MAX_MS	3600000
/*
 * A poll longer than a millisecond burns more CPU than any round trip
 * measured here takes (docs/benchmarks.md, guest benchmark).
 */
#define PL_REQ_POLL_MAX_US	1000

PL_FAULT_PARAM(pl_fp_pin_after, "fault_pin_after", -1, -1, PL_FAULT_MAX_PAGES);
PL_FAULT_PARAM(pl_fp_pin_times, "fault_pin_times", 1, -1, INT_MAX);
PL_FAULT_PARAM(pl_fp_lease_set, "fault_lease_set", 0, 0, INT_MAX);
PL_FAULT_PARAM(pl_fp_release_delay, "fault_release_delay_ms", 0, 0,
	       PL_RELEASE_DELAY_MAX_MS);
PL_FAULT_PARAM(pl_fp_drop_event, "fault_drop_event", 0, 0, INT_MAX);
PL_FAULT_PARAM(pl_fp_req_timeout, "req_timeout_ms", 30000, 1,
	       PL_REQ_TIMEOUT_MAX_MS);
PL_FAULT_PARAM(pl_fp_req_poll, "req_poll_us", 50, 0, PL_REQ_POLL_MAX_US);

static int pl_fault_param_set(const char *val, const struct kernel_param *kp)
{
	struct pl_fault_param *p = kp->arg;
	int v, err;

	err = kstrtoint(val, 0, &v);
	if (err) {
		pr_info("%s: \"%.*s\" is not an integer\n", p->name,
			(int)strcspn(val, "\n"), val);
		return err;
	}
	if (v < p->min || v > p->max) {
		pr_info("%s: %d is out of range [%d, %d]\n", p->name, v, p->min,
			p->max);
		return -EINVAL;
	}
	atomic_set(&p->val, v);
	return 0;
}

static int pl_fault_param_get(char *buf, const struct kernel_param *kp)
{
	struct pl_fault_param *p = kp->arg;

	return sysfs_emit(buf, "%d\n", atomic_read(&p->val));
}

static const struct kernel_param_ops pl_fault_param_ops = {
	.set = pl_fault_param_set,
	.get = pl_fault_param_get,
};

module_param_cb(fault_pin_after, &pl_fault_param_ops, &pl_fp_pin_after, 0644);
MODULE_PARM_DESC(fault_pin_after,
		 "REG_MR pinning fails with -EFAULT once this many pages are pinned (-1: off, the default)");
module_param_cb(fault_pin_times, &pl_fault_param_ops, &pl_fp_pin_times, 0644);
MODULE_PARM_DESC(fault_pin_times,
		 "how many REG_MRs fault_pin_after fails (-1: all; counts down; default 1)");
module_param_cb(fault_lease_set, &pl_fault_param_ops, &pl_fp_lease_set, 0644);
MODULE_PARM_DESC(fault_lease_set,
		 "the next N LEASE_TAKEs fail with -EAGAIN where the kernel lease is set (counts down)");
module_param_cb(fault_release_delay_ms, &pl_fault_param_ops,
		&pl_fp_release_delay, 0644);
MODULE_PARM_DESC(fault_release_delay_ms,
		 "the deferred release of a context sleeps this long first (0..60000 ms)");
module_param_cb(fault_drop_event, &pl_fault_param_ops, &pl_fp_drop_event,
		0644);
MODULE_PARM_DESC(fault_drop_event,
		 "the next N events from the device are dropped before routing (counts down)");
module_param_cb(req_timeout_ms, &pl_fault_param_ops, &pl_fp_req_timeout,
		0644);
MODULE_PARM_DESC(req_timeout_ms,
		 "a request not answered in this time resets the device (1..3600000 ms, default 30000)");
module_param_cb(req_poll_us, &pl_fault_param_ops, &pl_fp_req_poll, 0644);
MODULE_PARM_DESC(req_poll_us,
		 "poll the request queue this long for the answer before sleeping on its interrupt (0..1000 us)");

/* Takes one count of a countdown: true when the fault fires. */
static bool pl_fault_take(atomic_t *count)
{
	return atomic_dec_if_positive(count) >= 0;
}

/* fault_pin_times: -1 always fires, N > 0 fires and counts down, 0 never. */
static bool pl_fault_take_pin_times(void)
{
	int v = atomic_read(&pl_fp_pin_times.val);

	for (;;) {
		if (v < 0)
			return true;
		if (v == 0)
			return false;
		if (atomic_try_cmpxchg(&pl_fp_pin_times.val, &v, v - 1))
			return true;
	}
}

/**
 * pl_req_poll_us() - the request poll time, req_poll_us
 *
 * Context: Any context.
 * Locking: None; the parameter is an atomic_t.
 * Return: how long pl_submit() polls for an answer before it sleeps.
 */
unsigned int pl_req_poll_us(void)
{
	return atomic_read(&pl_fp_req_poll.val);
}

/**
 * pl_req_timeout() - the request timeout, req_timeout_ms, in jiffies
 *
 * Context: Any context.
 * Locking: None; the parameter is an atomic_t.
 * Return: how long pl_submit() waits for an answer before a reset.
 */
unsigned long pl_req_timeout(void)
{
	return msecs_to_jiffies(atomic_read(&pl_fp_req_timeout.val));
}

/**
 * pl_req_timeout_ms() - the request timeout, req_timeout_ms, for messages
 *
 * Context: Any context.
 * Locking: None; the parameter is an atomic_t.
 * Return: the timeout in milliseconds.
 */
unsigned int pl_req_timeout_ms(void)
{
	return atomic_read(&pl_fp_req_timeout.val);
}

/**
 * pl_fault_pin_limit() - where fault_pin_after would stop a REG_MR
 * @npages: the pages the REG_MR pins
 *
 * Only a look: the count is taken when the REG_MR gets there
 * (pl_fault_pin_fire()), so a REG_MR that fails earlier for a real reason
 * does not use it up.
 *
 * Context: Any context.
 * Locking: None; the parameters are atomic_t.
 * Return: how many pages to pin before asking pl_fault_pin_fire(), or -1
 * when the fault point is off or the REG_MR is too small to reach it.
 */
long pl_fault_pin_limit(unsigned long npages)
{
	int after = atomic_read(&pl_fp_pin_after.val);

	/* a REG_MR that pins fewer pages never gets there */
	if (after < 0 || (unsigned long)after >= npages ||
	    !atomic_read(&pl_fp_pin_times.val))
		return -1;
	return after;
}

/**
 * pl_fault_pin_fire() - fault_pin_after reached: does it fire?
 * @dev: the device the REG_MR is for (counted, logged)
 * @pinned: pages pinned so far
 * @npages: pages the REG_MR pins
 *
 * Takes one count of fault_pin_times; when it fires, counts and logs it.
 *
 * Context: Process context (the REG_MR's caller).
 * Locking: None; the count is taken with one atomic operation, so two
 * REG_MRs never both take the last one.
 * Return: true when the REG_MR must fail with -EFAULT.
 */
bool pl_fault_pin_fire(struct pl_dev *dev, unsigned long pinned,
		       unsigned long npages)
{
	if (!pl_fault_take_pin_times())
		return false;
	atomic64_inc(&dev->faults.pin_after);
	pr_info("fault injected: pin_after %lu pages (%s REG_MR of %lu pages, pid %d): -EFAULT\n",
		pinned, dev->name, npages, task_tgid_vnr(current));
	return true;
}

/**
 * pl_fault_lease_set() - does fault_lease_set fail this LEASE_TAKE?
 * @dev: the device (counted, logged)
 * @ino: the data file's inode number, for the message
 *
 * Context: Any context; never sleeps.
 * Locking: None; the count is atomic. The caller may hold lease->lock.
 * Return: true (a count taken) when LEASE_TAKE must fail with -EAGAIN.
 */
bool pl_fault_lease_set(struct pl_dev *dev, u64 ino)
{
	if (!pl_fault_take(&pl_fp_lease_set.val))
		return false;
	atomic64_inc(&dev->faults.lease_set);
	pr_info("fault injected: lease_set (%s LEASE_TAKE of ino %llu, pid %d): -EAGAIN\n",
		dev->name, ino, task_tgid_vnr(current));
	return true;
}

/**
 * pl_fault_release_delay() - fault_release_delay_ms: delay a release
 * @dev: the device (counted, logged)
 * @handle: the context being released, for the message
 *
 * Context: Process context (the context's free work); sleeps, up to 60 s.
 * Locking: The caller holds none of the module's locks.
 */
void pl_fault_release_delay(struct pl_dev *dev, u64 handle)
{
	unsigned int ms = atomic_read(&pl_fp_release_delay.val);

	if (!ms)
		return;
	atomic64_inc(&dev->faults.release_delay);
	pr_info("fault injected: release_delay %u ms (%s context %#llx)\n", ms,
		dev->name, handle);
	/* interruptible: a long delay is not a hung task (workers get no signals) */
	msleep_interruptible(ms);
}

/**
 * pl_fault_drop_event() - does fault_drop_event drop this event?
 * @dev: the device (counted by event kind, logged)
 * @ev: the event, before it is acted on or routed
 *
 * Context: Process context (the event work); never sleeps.
 * Locking: None; the count is atomic.
 * Return: true (a count taken) when the event must be dropped.
 */
bool pl_fault_drop_event(struct pl_dev *dev, const struct pl_event *ev)
{
	u16 kind = le16_to_cpu(ev->kind);

	if (!pl_fault_take(&pl_fp_drop_event.val))
		return false;
	atomic64_inc(&dev->faults.drop_event);
	atomic64_inc(&dev->faults.dropped[min_t(u16, kind, PL_FAULT_KINDS - 1)]);
	pr_info("fault injected: drop_event kind %u ctx %#llx seq %llu (%s)\n",
		kind, le64_to_cpu(ev->ctx), le64_to_cpu(ev->seq), dev->name);
	return true;
}

/*
 * Names of the FAULT_INJECTED action codes (docs/faults.md section 1.3) for
 * debugfs: each the lower-case suffix of its PL_FAULT_ACTION_ constant, and
 * the events' likewise; tests/abi_layout.rs checks both tables against the
 * ABI's.
 */
static const char *const pl_fault_action_names[PL_FAULT_ACTIONS] = {
	[0] = "other",
	[PL_FAULT_ACTION_FAIL] = "fail",
	[PL_FAULT_ACTION_DELAY] = "delay",
	[PL_FAULT_ACTION_DROP] = "drop",
	[PL_FAULT_ACTION_DUPLICATE] = "duplicate",
	[PL_FAULT_ACTION_REORDER] = "reorder",
	[PL_FAULT_ACTION_REVOKE_MR] = "revoke_mr",
	[PL_FAULT_ACTION_SPURIOUS_BREAK] = "spurious_break",
	[PL_FAULT_ACTION_WITHHOLD] = "withhold",
	[PL_FAULT_ACTION_NEEDS_RESET] = "needs_reset",
	[PL_FAULT_ACTION_ABORT] = "abort",
};

static const char *const pl_event_kind_names[PL_FAULT_KINDS] = {
	[0] = "other",
	[PL_EVENT_MR_REVOKED] = "mr_revoked",
	[PL_EVENT_LEASE_BROKEN] = "lease_broken",
	[PL_EVENT_LEASE_LOST] = "lease_lost",
	[PL_EVENT_CONTEXT_TORN_DOWN] = "context_torn_down",
	[PL_EVENT_FAULT_INJECTED] = "fault_injected",
	[PL_EVENT_DEVICE_ERROR] = "device_error",
	[PL_EVENT_SCRUB_LOST_ACCESS] = "scrub_lost_access",
	[PL_EVENT_NEEDS_RESET] = "needs_reset",
};

/**
 * pl_fault_injected_event() - a FAULT_INJECTED event from the device
 * @dev: the device
 * @ev: the event
 *
 * Counted by action and logged (ratelimited); routed by the caller.
 *
 * Context: Process context (the event work); never sleeps.
 * Locking: None; the counters are atomic.
 */
void pl_fault_injected_event(struct pl_dev *dev, const struct pl_event *ev)
{
	u64 action = le64_to_cpu(ev->args[1]);

	atomic64_inc(&dev->faults.injected[action < PL_FAULT_ACTIONS ?
					   action : 0]);
	pr_info_ratelimited("%s: device fault injected: rule %llu point %#llx action %llu ctx %#llx detail %#llx\n",
			    dev->name, le64_to_cpu(ev->args[2]),
			    le64_to_cpu(ev->args[0]), action,
			    le64_to_cpu(ev->ctx), le64_to_cpu(ev->args[3]));
}

/**
 * pl_faults_show() - debugfs "faults": parameters and what fired
 * @m: the seq_file
 * @dev: the device whose counters are shown (the parameters are global)
 *
 * Context: Process context (seq_file show).
 * Locking: None; parameters and counters are atomic.
 */
void pl_faults_show(struct seq_file *m, struct pl_dev *dev)
{
	static const struct pl_fault_param *const params[] = {
		&pl_fp_pin_after, &pl_fp_pin_times, &pl_fp_lease_set,
		&pl_fp_release_delay, &pl_fp_drop_event, &pl_fp_req_timeout,
	};
	struct pl_fault_counters *c = &dev->faults;
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(params); i++)
		seq_printf(m, "param %s: %d\n", params[i]->name,
			   atomic_read(&params[i]->val));
	seq_printf(m, "fired pin_after: %lld\n", atomic64_read(&c->pin_after));
	seq_printf(m, "fired lease_set: %lld\n", atomic64_read(&c->lease_set));
	seq_printf(m, "fired release_delay: %lld\n",
		   atomic64_read(&c->release_delay));
	seq_printf(m, "fired drop_event: %lld\n",
		   atomic64_read(&c->drop_event));
	for (i = 1; i < PL_FAULT_KINDS; i++)
		seq_printf(m, "dropped %s: %lld\n", pl_event_kind_names[i],
			   atomic64_read(&c->dropped[i]));
	seq_printf(m, "dropped other: %lld\n", atomic64_read(&c->dropped[0]));
	for (i = 1; i < PL_FAULT_ACTIONS; i++)
		seq_printf(m, "device fault_injected %s: %lld\n",
			   pl_fault_action_names[i],
			   atomic64_read(&c->injected[i]));
	seq_printf(m, "device fault_injected other: %lld\n",
		   atomic64_read(&c->injected[0]));
	seq_printf(m, "device needs_reset: %lld\n",
		   atomic64_read(&c->needs_reset));
	seq_printf(m, "detected broken_queue: %lld\n",
		   atomic64_read(&c->broken_vq));
	seq_printf(m, "detected bad_tag: %lld\n", atomic64_read(&c->bad_tag));
}
