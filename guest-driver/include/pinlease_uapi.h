/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR BSD-3-Clause */
/*
 * pinlease user-space API: the ioctls of /dev/pinleaseN and of the child
 * fds they create. Shared by the guest module (pinlease.ko) and the guest
 * tools. guest-driver/README.md holds the contract between the module, the
 * guest tools and the VM runner (paths, debugfs files, suite output): read
 * it before changing either side. Every struct is naturally aligned with explicit padding, the same
 * on 32- and 64-bit user space; reserved fields must be 0 (-EINVAL).
 *
 * Each open() of /dev/pinleaseN is one device context. Closing it ends the
 * context's hardware lifetime (MRs destroyed, pins dropped, leases
 * released); child fds (event channel, MR export) keep the context struct,
 * never its pins.
 *
 * ioctl magic 0xB9: not registered in
 * Documentation/userspace-api/ioctl/ioctl-number.rst (out-of-tree module);
 * it sits between mshv (0xB8) and liveupdate (0xBA).
 */
#ifndef _PINLEASE_UAPI_H
#define _PINLEASE_UAPI_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define PINLEASE_IOC_MAGIC 0xB9

/* PINLEASE_IOC_QUERY: the device's limits and this fd's context. */
struct pinlease_query {
	__u32 abi_version;
	__u32 page_size;
	__u64 features;			/* PL_FEATURE_* of pinlease_abi.h */
	__u32 max_contexts;
	__u32 max_mrs;
	__u32 max_pages_per_mr;
	__u32 max_leases;
	__u32 max_children_per_context;
	__u32 virtio_id;		/* PL_VIRTIO_ID_NATIVE or _CARRIER */
	__u64 ctx;			/* this fd's device context handle */
};

/* pinlease_reg_mr.flags: how the module pins the pages. */
/* Short-term pin (no FOLL_LONGTERM); default is a long-term pin. */
#define PINLEASE_PIN_SHORTTERM	(1U << 0)
/* Pin without FOLL_WRITE (the device then may only read the MR). */
#define PINLEASE_PIN_READONLY	(1U << 1)
#define PINLEASE_PIN_FLAGS_ALL	(PINLEASE_PIN_SHORTTERM | PINLEASE_PIN_READONLY)
/*
 * Let the device's canary scrubber write this MR (PL_REG_SCRUB, docs/abi.md
 * 5.9.1; the daemon runs it with `pinlease serve --scrub-period-ms N`): every
 * period it checks and rewrites canary words pl_scrub_seed(key) ^ offset in
 * the whole MR. Needs PL_ACCESS_WRITE (the device's -EINVAL otherwise).
 */
#define PINLEASE_REG_SCRUB	(1U << 2)
/* Every pinlease_reg_mr.flags bit. */
#define PINLEASE_REG_FLAGS_ALL	(PINLEASE_PIN_FLAGS_ALL | PINLEASE_REG_SCRUB)

/*
 * PINLEASE_IOC_REG_MR: pin [addr, addr + length) of the caller's memory
 * and register it with the device. For a file mapping the module records
 * the file identity and offset. Errors are the pin's own (-EFAULT for a
 * writable long-term pin of a shared file mapping that needs dirty
 * tracking, -EOPNOTSUPP for FS-DAX) or the device's status, negated.
 * With the module parameter require_lease set
 * (/sys/module/pinlease/parameters/require_lease, default N), REG_MR of a
 * file mapping (memfd/shmem included; anonymous memory is not affected)
 * fails with -EPERM unless an active layout lease taken on the same device
 * fd covers [file offset, + length).
 */
struct pinlease_reg_mr {
	__u64 addr;
	__u64 length;
	__u32 access;			/* PL_ACCESS_* of pinlease_abi.h */
	__u32 flags;			/* PINLEASE_PIN_*, PINLEASE_REG_SCRUB */
	__u64 key;			/* out: MR key */
	__u64 lease;			/* out: covering lease, or 0 */
	__u32 npages;			/* out: pages pinned */
	__u32 reserved;
};

/*
 * Errors of every ioctl on a dead context: -EIO after a device reset,
 * -ENODEV once the device is removed.
 *
 * PINLEASE_IOC_DMA: one device operation between MRs, by key and offset.
 * An op outside the list below is -EINVAL (the module never forwards it).
 * op is the device opcode: PL_OP_WRITE, PL_OP_READ (local <-> remote),
 * PL_OP_COMPARE_SWAP, PL_OP_FETCH_ADD (remote_key/remote_offset; operand,
 * swap), PL_OP_FILL, PL_OP_VERIFY (remote_key/remote_offset, length,
 * operand = pattern, mode).
 */
struct pinlease_dma {
	__u32 op;
	__u32 mode;			/* PL_PATTERN_* for FILL/VERIFY */
	__u64 local_key;
	__u64 local_offset;
	__u64 remote_key;
	__u64 remote_offset;
	__u64 length;
	__u64 operand;
	__u64 swap;
	/*
	 * out: COMPARE_SWAP/FETCH_ADD: result[0] = original value;
	 * VERIFY: mismatches, first bad offset, first bad value.
	 */
	__u64 result[3];
};

/* PINLEASE_IOC_IMPORT_MR: an MR of this context aliasing an export fd. */
struct pinlease_import_mr {
	__s32 export_fd;
	__u32 access;
	__u64 key;			/* out */
};

/*
 * PINLEASE_IOC_LEASE_TAKE: an FL_LAYOUT lease on the file of data_fd, held
 * by this device fd (the module opens its own struct file on the inode:
 * closing data_fd does not end the lease; LEASE_RELEASE or closing the
 * device fd does). The kernel lease covers the whole file; [start, start +
 * length) (length 0: to EOF) is the range the device applies policy
 * (PL_POLICY_* of pinlease_abi.h) to when the kernel breaks the lease:
 * - PL_POLICY_REVOKE: the device revokes this context's MRs on the range
 *   (PL_EVENT_MR_REVOKED), the module unpins them and removes the lease;
 *   the breaker (truncate, punch hole...) then goes on;
 * - PL_POLICY_WAIT: PL_EVENT_LEASE_BROKEN; the breaker waits
 *   (interruptibly) until LEASE_RELEASE or the device fd's close;
 * - PL_POLICY_TIMEOUT: PL_EVENT_LEASE_BROKEN; after lease-break-time
 *   (/proc/sys/fs/lease-break-time) the kernel removes the lease; pins
 *   remain and the device marks the lease LOST (PL_EVENT_LEASE_LOST).
 * Errors: -EBADF (data_fd), -EINVAL (not a regular file, bad policy or
 * range), the kernel's vfs_setlease() error, the device's status, negated.
 */
struct pinlease_lease_take {
	__s32 data_fd;
	__u32 policy;			/* PL_POLICY_* */
	__u64 start;
	__u64 length;			/* 0: to EOF */
	__u64 lease;			/* out: the lease handle */
};

#define PINLEASE_IOC_QUERY	_IOR(PINLEASE_IOC_MAGIC, 0x00, struct pinlease_query)
#define PINLEASE_IOC_REG_MR	_IOWR(PINLEASE_IOC_MAGIC, 0x01, struct pinlease_reg_mr)
/* Argument: pointer to the __u64 MR key. */
#define PINLEASE_IOC_DEREG_MR	_IOW(PINLEASE_IOC_MAGIC, 0x02, __u64)
#define PINLEASE_IOC_DMA	_IOWR(PINLEASE_IOC_MAGIC, 0x03, struct pinlease_dma)
/*
 * Returns a new event-channel fd (O_CLOEXEC): read() gives whole
 * struct pl_event records (pinlease_abi.h) for this context (a buffer
 * shorter than one record: -EINVAL); poll() says when one is waiting.
 * Once the context is dead (device reset or removed) an empty channel
 * reads 0 (EOF) and polls POLLHUP. It keeps the context struct, not its
 * pins.
 */
#define PINLEASE_IOC_EVENT_FD	_IO(PINLEASE_IOC_MAGIC, 0x04)
/*
 * Argument: pointer to the __u64 MR key. Returns an export fd (O_CLOEXEC);
 * exporting the same MR again while an export fd lives returns another fd
 * for the same export (the device's export is unique).
 */
#define PINLEASE_IOC_EXPORT_MR	_IOW(PINLEASE_IOC_MAGIC, 0x05, __u64)
#define PINLEASE_IOC_IMPORT_MR	_IOWR(PINLEASE_IOC_MAGIC, 0x06, struct pinlease_import_mr)
#define PINLEASE_IOC_LEASE_TAKE	_IOWR(PINLEASE_IOC_MAGIC, 0x07, struct pinlease_lease_take)
/*
 * Argument: pointer to the __u64 lease handle. Removes the kernel lease (a
 * waiting breaker goes on) and releases it on the device, in any state
 * (active, breaking, revoked, lost); also on a dead context (after a
 * device reset), so a waiting breaker can be let go. -ENOENT: not a lease
 * of this fd.
 */
#define PINLEASE_IOC_LEASE_RELEASE _IOW(PINLEASE_IOC_MAGIC, 0x08, __u64)

#endif /* _PINLEASE_UAPI_H */
