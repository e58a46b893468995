// SPDX-License-Identifier: GPL-2.0
/*
 * pinlease: /sys/kernel/debug/pinlease/bench_pin, the bare pin that the
 * guest benchmark (pinlease-guest bench, side "barepin" of the figures
 * reg_64m and reg_max) compares REG_MR with.
 *
 * Writing "ADDR LEN" pins [ADDR, ADDR + LEN) of the writer's address space
 * as REG_MR pins it: pl_pin_batches() (pin_user_pages_fast() in batches of
 * PL_PIN_BATCH, FOLL_LONGTERM | FOLL_WRITE) into a page array allocated
 * as REG_MR allocates it (kvmalloc_array(), GFP_KERNEL_ACCOUNT). Only the
 * pin is timed (ktime_get_ns() around it); then the pages are unpinned as
 * DEREG_MR unpins them (unpin_user_pages_dirty_lock(), dirty), timed
 * separately. Nothing stays pinned after the write returns.
 *
 * Reading returns "pin_ns=N unpin_ns=N pages=N\n", the result of the last
 * successful write on the same open file (each open has its own; a read
 * before any successful write is -ENODATA). Read from offset 0 (pread)
 * after each write.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/kstrtox.h>
#include <linux/ktime.h>
#include <linux/mm.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>

#include "pinlease.h"
#include "pinlease_compat.h"

/* "ADDR LEN" as two 64-bit numbers in hex fits in 40 bytes; some slack. */
#define PL_BENCH_INPUT_MAX	64

/*
 * The largest range one write pins: the ABI's most pages per MR (4 GiB),
 * the largest REG_MR any device can accept, so a comparison never needs
 * more; it also bounds the page array (8 MiB).
 */
#define PL_BENCH_MAX_PAGES	PL_MAX_PAGES_PER_MR

/* One open of bench_pin: the result of its last successful write. */
struct pl_bench_pin {
	struct mutex lock;	/* serialises writes and reads of this open */
	bool done;		/* a write succeeded: the fields below are set */
	u64 pin_ns;
	u64 unpin_ns;
	u64 pages;
};

static int pl_bench_pin_open(struct inode *inode, struct file *file)
{
	struct pl_bench_pin *b = kzalloc_obj(*b, GFP_KERNEL);

	if (!b)
		return -ENOMEM;
	mutex_init(&b->lock);
	file->private_data = b;
	return 0;
}

static int pl_bench_pin_release(struct inode *inode, struct file *file)
{
	struct pl_bench_pin *b = file->private_data;

	mutex_destroy(&b->lock);
	kfree(b);
	return 0;
}

/*
 * Parses "ADDR LEN" (kstrtou64() base 0: 0x hex, decimal, a leading 0 is
 * octal) in @buf, which is NUL-terminated and modified.
 */
static int pl_bench_parse(char *buf, u64 *addr, u64 *len)
{
	char *rest = strim(buf);
	char *first = strsep(&rest, " \t");

	if (!rest)
		return -EINVAL;
	rest = skip_spaces(rest);
	if (kstrtou64(first, 0, addr) || kstrtou64(rest, 0, len))
		return -EINVAL;
	return 0;
}

/*
 * Pins and unpins [@addr, @addr + @len) of current's address space, both
 * timed; the result goes to @b. All or nothing: a failed pin unpins what
 * it pinned.
 */
static int pl_bench_pin_range(struct pl_bench_pin *b, u64 addr, u64 len)
{
	unsigned long npages = len >> PAGE_SHIFT, pinned = 0;
	struct page **pages;
	u64 t0, t1, t2;
	int err;

	pages = kvmalloc_array(npages, sizeof(*pages), GFP_KERNEL_ACCOUNT);
	if (!pages)
		return -ENOMEM;
	t0 = ktime_get_ns();
	err = pl_pin_batches(addr, &pinned, npages, FOLL_LONGTERM | FOLL_WRITE,
			     pages);
	t1 = ktime_get_ns();
	if (err)
		goto err_unpin;
	unpin_user_pages_dirty_lock(pages, npages, true);
	t2 = ktime_get_ns();
	kvfree(pages);
	b->pin_ns = t1 - t0;
	b->unpin_ns = t2 - t1;
	b->pages = npages;
	b->done = true;
	return 0;

err_unpin:
	if (pinned)
		unpin_user_pages(pages, pinned);
	kvfree(pages);
	return err;
}

/**
 * pl_bench_pin_write() - pin, time and unpin the range the writer names
 * @file: an open of bench_pin
 * @ubuf: "ADDR LEN": page-aligned address and length of the writer's memory
 * @count: bytes at @ubuf
 * @ppos: unused: each write is one whole command
 *
 * Context: Process context, the writing task (whose memory is pinned);
 * sleeps.
 * Locking: Takes the open's lock across the pin, so a read of the same
 * open waits for it; holds no mmap lock (pin_user_pages_fast() takes it
 * itself when it faults pages in).
 * Return: @count, -EINVAL (not two numbers, ADDR or LEN not page aligned,
 * LEN 0 or above PL_BENCH_MAX_PAGES pages, the range wraps), -EFAULT,
 * -ENOMEM, -EINTR or the pin's error.
 */
static ssize_t pl_bench_pin_write(struct file *file, const char __user *ubuf,
				  size_t count, loff_t *ppos)
{
	struct pl_bench_pin *b = file->private_data;
	char buf[PL_BENCH_INPUT_MAX];
	u64 addr, len, end;
	int err;

	if (count >= sizeof(buf))
		return -EINVAL;
	if (copy_from_user(buf, ubuf, count))
		return -EFAULT;
	buf[count] = '\0';
	err = pl_bench_parse(buf, &addr, &len);
	if (err)
		return err;
	if ((addr | len) & ~PAGE_MASK || !len ||
	    len > (u64)PL_BENCH_MAX_PAGES * PAGE_SIZE ||
	    check_add_overflow(addr, len, &end))
		return -EINVAL;

	mutex_lock(&b->lock);
	err = pl_bench_pin_range(b, addr, len);
	mutex_unlock(&b->lock);
	return err ? err : count;
}

/**
 * pl_bench_pin_read() - the last successful write's times
 * @file: an open of bench_pin
 * @ubuf: where "pin_ns=N unpin_ns=N pages=N\n" goes
 * @count: room at @ubuf
 * @ppos: offset in that line
 *
 * Context: Process context; sleeps.
 * Locking: Takes the open's lock.
 * Return: bytes read, 0 at the end of the line, -ENODATA before any
 * successful write on this open, -EFAULT.
 */
static ssize_t pl_bench_pin_read(struct file *file, char __user *ubuf,
				 size_t count, loff_t *ppos)
{
	struct pl_bench_pin *b = file->private_data;
	char out[96];
	int n;

	mutex_lock(&b->lock);
	if (!b->done) {
		mutex_unlock(&b->lock);
		return -ENODATA;
	}
	n = scnprintf(out, sizeof(out), "pin_ns=%llu unpin_ns=%llu pages=%llu\n",
		      b->pin_ns, b->unpin_ns, b->pages);
	mutex_unlock(&b->lock);
	return simple_read_from_buffer(ubuf, count, ppos, out, n);
}

static const struct file_operations pl_bench_pin_fops = {
	.owner = THIS_MODULE,
	.open = pl_bench_pin_open,
	.release = pl_bench_pin_release,
	.read = pl_bench_pin_read,
	.write = pl_bench_pin_write,
	.llseek = default_llseek,
};

/**
 * pl_bench_debugfs_init() - create bench_pin in the module's debugfs root
 * @root: /sys/kernel/debug/pinlease; removed with it (pl_debugfs_exit())
 *
 * Mode 0600: a write pins up to 4 GiB of the writer's memory for a while.
 *
 * Context: Process context (module init); sleeps.
 * Locking: None; runs before any device is bound.
 */
void pl_bench_debugfs_init(struct dentry *root)
{
	debugfs_create_file("bench_pin", 0600, root, NULL, &pl_bench_pin_fops);
}
