/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR BSD-3-Clause */
/*
 * pinlease wire ABI: the C mirror.
 *
 * docs/abi.md is the written spec; src/abi.rs is the Rust mirror used by the
 * device (the vhost-user daemon); this header is the mirror used by the guest
 * kernel module and by user-space C tools. tests/abi_layout.rs compiles this
 * header and fails when any struct size, field offset, field size or constant
 * differs from the Rust side, or when this header defines a struct pl_* or a
 * PL_* macro the Rust side lacks. Change all three together.
 *
 * Byte order: every multi-byte field is little-endian on the wire, whatever
 * the guest's byte order (use cpu_to_le*() and le*_to_cpu()). Every struct is
 * naturally aligned with explicit padding: the compiler adds none, on 32-bit
 * and 64-bit ABIs alike. Reserved fields must be written as 0.
 */
#ifndef _PINLEASE_ABI_H
#define _PINLEASE_ABI_H

#include <linux/types.h>

/* ---- transport ---------------------------------------------------------- */

/* Config space magic: the bytes 'P' 'I' 'N' 'L' read as a LE u32. */
#define PL_MAGIC		0x4c4e4950U
/* Version of this ABI; bumped on any incompatible change. */
#define PL_ABI_VERSION		1
/*
 * Virtio device id of native mode: 6 (VIRTIO_ID_IOMEM, "ioMemory"), an id
 * with no device type specified, no QEMU device and no Linux driver; 42,
 * which the spec reserves for RDMA, makes QEMU abort (docs/abi.md 2.1).
 * Bind it only when the config space holds PL_MAGIC.
 */
#define PL_VIRTIO_ID_NATIVE	6
/*
 * Virtio id of vhost-user-gpio-pci, the carrier on QEMU <= 10.1. Bind it
 * only when the config space holds PL_MAGIC.
 */
#define PL_VIRTIO_ID_CARRIER	41

/* Queue 0: requests (readable request, then writable response, one chain). */
#define PL_QUEUE_REQUEST	0
/* Queue 1: device-to-driver events (the driver posts writable buffers). */
#define PL_QUEUE_EVENT		1
#define PL_NUM_QUEUES		2
#define PL_QUEUE_SIZE		256

/* Page size the device uses for page lists and pin accounting. */
#define PL_PAGE_SIZE		4096ULL

/* ---- opcodes (values are ABI: never renumber) --------------------------- */

#define PL_OP_NOP		0
#define PL_OP_QUERY_DEVICE	1
#define PL_OP_CREATE_CONTEXT	2
#define PL_OP_CLOSE_CONTEXT	3
#define PL_OP_RELEASE_CONTEXT	4
#define PL_OP_CREATE_CHILD	5
#define PL_OP_DESTROY_CHILD	6
#define PL_OP_REG_MR		7
#define PL_OP_DEREG_MR		8
#define PL_OP_WRITE		9
#define PL_OP_READ		10
#define PL_OP_COMPARE_SWAP	11
#define PL_OP_FETCH_ADD		12
#define PL_OP_FILL		13
#define PL_OP_VERIFY		14
#define PL_OP_LEASE_TAKE	15
#define PL_OP_LEASE_RELEASE	16
#define PL_OP_LEASE_BREAK	17
#define PL_OP_EXPORT_MR		18
#define PL_OP_IMPORT_MR		19

/*
 * ---- status codes ----------------------------------------------------------
 * 0 or a Linux errno value, so the module can return -status to user space
 * unchanged. Values are ABI.
 */
#define PL_S_OK			0
/* Access flags of the MR forbid the operation. */
#define PL_S_EPERM		1
/* No such handle, key, lease or export (never existed). */
#define PL_S_ENOENT		2
/* Guest memory could not be read or written (region gone mid-copy). */
#define PL_S_EIO		5
/* Request too large (page count or length over a limit). */
#define PL_S_E2BIG		7
/* Context handle unknown or stale. */
#define PL_S_EBADF		9
/* A table is full. */
#define PL_S_ENOMEM		12
/* Address outside guest memory, or outside the MR. */
#define PL_S_EFAULT		14
/* Object in use (children alive, lease being broken, wait-policy refusal). */
#define PL_S_EBUSY		16
/* Malformed request: wrong size, bad flags, misaligned atomic. */
#define PL_S_EINVAL		22
/* Offset + length overflows or exceeds the MR. */
#define PL_S_ERANGE		34
/* Unknown opcode. */
#define PL_S_ENOSYS		38
/* The context is closing or closed (hardware lifetime over). */
#define PL_S_ESHUTDOWN		108
/* Handle or key was valid once; the object is gone (generation mismatch). */
#define PL_S_ESTALE		116
/* The MR was revoked before or during the operation. */
#define PL_S_ECANCELED		125

/* ---- flags and enumerations --------------------------------------------- */

/* MR access: the device may read the MR (source of WRITE, READ's copy-out). */
#define PL_ACCESS_READ		(1U << 0)
/* MR access: the device may write the MR. */
#define PL_ACCESS_WRITE		(1U << 1)
/* MR access: the device may do atomics (COMPARE_SWAP, FETCH_ADD) on it. */
#define PL_ACCESS_ATOMIC	(1U << 2)
#define PL_ACCESS_ALL		(PL_ACCESS_READ | PL_ACCESS_WRITE | \
				 PL_ACCESS_ATOMIC)

/* REG_MR: the file identity fields are valid (the MR maps a file range). */
#define PL_REG_HAS_FILE		(1U << 0)
/* REG_MR: the driver pinned with FOLL_LONGTERM (informational). */
#define PL_REG_LONGTERM		(1U << 1)
/*
 * REG_MR: the device's scrubber may write canaries into the MR on its own
 * (daemon option --scrub-period-ms); needs PL_ACCESS_WRITE.
 */
#define PL_REG_SCRUB		(1U << 2)
#define PL_REG_FLAGS_ALL	(PL_REG_HAS_FILE | PL_REG_LONGTERM | \
				 PL_REG_SCRUB)

/*
 * Scrub canaries (docs/abi.md 5.9.1): the word at MR offset o of a
 * PL_REG_SCRUB MR is pl_scrub_seed(key) ^ o, where
 * pl_scrub_seed(key) = PL_SCRUB_SEED_MAGIC ^ rotl64(key, 32): the high half
 * is 0x53435242 ^ the key's slot, the low half the key's generation ^ o.
 */
#define PL_SCRUB_SEED_MAGIC	0x5343524200000000ULL

static inline __u64 pl_scrub_seed(__u64 key)
{
	return PL_SCRUB_SEED_MAGIC ^ ((key << 32) | (key >> 32));
}

/* CREATE_CHILD kinds. */
#define PL_CHILD_EVENT_CHANNEL	1
/*
 * Export handles are made by EXPORT_MR, never by CREATE_CHILD, but share the
 * child handle space and are destroyed with DESTROY_CHILD.
 */
#define PL_CHILD_MR_EXPORT	2

/* Lease policies, applied when the lease is broken. */
#define PL_POLICY_REVOKE	1
#define PL_POLICY_WAIT		2
#define PL_POLICY_TIMEOUT	3

/* LEASE_RELEASE reasons. */
#define PL_RELEASE_HOLDER	0
/* The kernel removed the lease (lease-break-time ran out) while pins remain. */
#define PL_RELEASE_LOST		1

/* LEASE_BREAK reasons (what the guest kernel was doing). */
#define PL_BREAK_TRUNCATE	1
#define PL_BREAK_PUNCH_HOLE	2
#define PL_BREAK_COLLAPSE_RANGE	3
#define PL_BREAK_INSERT_RANGE	4
#define PL_BREAK_ZERO_RANGE	5
#define PL_BREAK_REFLINK	6
#define PL_BREAK_WRITE		7
#define PL_BREAK_OTHER		8
#define PL_BREAK_INJECTED	9	/* spurious break from the fault plan */

/* FILL / VERIFY pattern modes: every 8-byte word holds pattern. */
#define PL_PATTERN_CONST	0
/*
 * The word at MR offset o (o a multiple of 8) holds pattern ^ o: catches
 * data landing in the wrong page, not only wrong bytes.
 */
#define PL_PATTERN_OFFSET_XOR	1

/* Device feature bits reported by QUERY_DEVICE. */
#define PL_FEATURE_EXPORT	(1ULL << 0)
#define PL_FEATURE_LEASES	(1ULL << 1)
#define PL_FEATURE_ATOMICS	(1ULL << 2)
#define PL_FEATURE_PATTERN	(1ULL << 3)
#define PL_FEATURES_ALL	(PL_FEATURE_EXPORT | PL_FEATURE_LEASES | \
			 PL_FEATURE_ATOMICS | PL_FEATURE_PATTERN)

/* Event kinds (queue 1). */
#define PL_EVENT_MR_REVOKED		1
#define PL_EVENT_LEASE_BROKEN		2
#define PL_EVENT_LEASE_LOST		3
#define PL_EVENT_CONTEXT_TORN_DOWN	4
#define PL_EVENT_FAULT_INJECTED		5
#define PL_EVENT_DEVICE_ERROR		6
/* The scrubber wrote into an MR under a LOST lease (once per lease). */
#define PL_EVENT_SCRUB_LOST_ACCESS	7
/* the device needs a reset: every request answers EIO until it is reset */
#define PL_EVENT_NEEDS_RESET		8

/*
 * FAULT_INJECTED (docs/faults.md 1.2, 1.3): args[0] is the fault point,
 * class << 16 | sub; args[1] the action.
 */
#define PL_FAULT_CLASS_REQUEST		1
#define PL_FAULT_CLASS_EVENT		2
#define PL_FAULT_CLASS_MEMORY_MAP	3
#define PL_FAULT_CLASS_CONTEXT_TEARDOWN	4
#define PL_FAULT_CLASS_LEASE_BREAK	5
#define PL_FAULT_CLASS_RUNTIME		6
#define PL_FAULT_ACTION_FAIL		1
#define PL_FAULT_ACTION_DELAY		2
#define PL_FAULT_ACTION_DROP		3
#define PL_FAULT_ACTION_DUPLICATE	4
#define PL_FAULT_ACTION_REORDER		5
#define PL_FAULT_ACTION_REVOKE_MR	6
#define PL_FAULT_ACTION_SPURIOUS_BREAK	7
#define PL_FAULT_ACTION_WITHHOLD	8
#define PL_FAULT_ACTION_NEEDS_RESET	9
#define PL_FAULT_ACTION_ABORT		10

/*
 * Event flag: events were dropped before this one (no buffer was posted and
 * the device's backlog was full); pl_event.dropped counts them.
 */
#define PL_EVENT_F_DROPPED	(1U << 0)

/* MR_REVOKED reasons (pl_event.args[1]). */
#define PL_REVOKE_LEASE_BREAK	1
#define PL_REVOKE_MEMORY_MAP	2
#define PL_REVOKE_CONTEXT_CLOSE	3
#define PL_REVOKE_SOURCE_GONE	4
#define PL_REVOKE_INJECTED	5	/* revoked by the fault plan */

/* ---- limits ------------------------------------------------------------- */

#define PL_MAX_CONTEXTS			1024U
#define PL_MAX_MRS			(1U << 16)
#define PL_MAX_PAGES_PER_MR		(1U << 20)
#define PL_MAX_LEASES			(1U << 21)
#define PL_MAX_CHILDREN_PER_CONTEXT	256U
/* Largest request: a REG_MR with the maximum page list. */
#define PL_MAX_REQUEST_BYTES		(sizeof(struct pl_req_hdr) + \
					 sizeof(struct pl_reg_mr_req) + \
					 8U * PL_MAX_PAGES_PER_MR)

/* ---- config space ------------------------------------------------------- */

/* The 8-byte device config space (fits the GPIO carrier's config size). */
struct pl_config {
	__le32 magic;		/* PL_MAGIC */
	__le16 abi_version;	/* PL_ABI_VERSION */
	__le16 reserved;
};

/* ---- request and response layouts --------------------------------------- */

/* Every request starts with this header, in the readable part of a chain. */
struct pl_req_hdr {
	__le16 opcode;		/* PL_OP_* */
	__le16 flags;
	__le32 reserved;	/* must be 0: the device rejects non-zero */
	__le64 ctx;		/* context handle, 0 where none applies */
	__le64 tag;		/* driver's cookie, echoed in the response */
};

/* Every response starts with this header, in the writable part of a chain. */
struct pl_resp_hdr {
	__le32 status;		/* PL_S_* */
	__le32 len;		/* bytes of body after this header */
	__le64 tag;		/* pl_req_hdr.tag of the request */
};

/*
 * Identity of a file in the guest: enough to tell two files apart and to tell
 * a recycled inode number from the old file.
 */
struct pl_file_id {
	__le64 dev;
	__le64 ino;
	__le32 generation;
	__le32 reserved;
};

/* QUERY_DEVICE response body. */
struct pl_query_device_resp {
	__le32 abi_version;
	__le32 page_size;
	__le64 features;	/* PL_FEATURE_* */
	__le32 max_contexts;
	__le32 max_mrs;
	__le32 max_pages_per_mr;
	__le32 max_leases;
	__le32 max_children_per_context;
	__le32 max_request_bytes;
};

/* CREATE_CONTEXT request body. pid and comm are for display only. */
struct pl_create_context_req {
	__le32 pid;		/* guest pid of the opener */
	__le32 reserved;
	__u8 comm[16];		/* guest comm of the opener, NUL-padded */
};

/* Response body carrying one new handle (context, child, lease). */
struct pl_handle_resp {
	__le64 handle;
};

/* CLOSE_CONTEXT response body: what closing the context tore down. */
struct pl_close_context_resp {
	__le32 mrs_destroyed;
	__le32 leases_released;
	__le64 pages_unpinned;
};

/* CREATE_CHILD request body. */
struct pl_create_child_req {
	__le32 kind;		/* PL_CHILD_EVENT_CHANNEL */
	__le32 reserved;
};

/* Body naming one handle or key: DESTROY_CHILD, DEREG_MR, EXPORT_MR. */
struct pl_handle_req {
	__le64 handle;
};

/*
 * REG_MR request body: followed by npages __le64 guest-physical page
 * addresses, each page-aligned. The MR covers length bytes starting
 * first_page_offset bytes into the first page.
 */
struct pl_reg_mr_req {
	__le32 access;		/* PL_ACCESS_* */
	__le32 flags;		/* PL_REG_* */
	__le32 npages;
	__le32 first_page_offset;
	__le64 length;
	struct pl_file_id file;	/* valid with PL_REG_HAS_FILE */
	__le64 file_offset;	/* file offset of MR offset 0 */
};

/* REG_MR and IMPORT_MR response body. */
struct pl_reg_mr_resp {
	__le64 key;		/* the new MR's key */
	__le64 lease;		/* holder's lease over the range, or 0 */
};

/* WRITE moves length bytes local -> remote; READ moves remote -> local. */
struct pl_dma_req {
	__le64 local_key;
	__le64 local_offset;
	__le64 remote_key;
	__le64 remote_offset;
	__le64 length;
};

/* COMPARE_SWAP / FETCH_ADD request body. */
struct pl_atomic_req {
	__le64 key;
	__le64 offset;		/* 8-byte aligned offset in the MR */
	__le64 operand;		/* CAS: expected; FETCH_ADD: addend */
	__le64 swap;		/* COMPARE_SWAP: new value; FETCH_ADD: 0 */
};

/* COMPARE_SWAP / FETCH_ADD response body. */
struct pl_atomic_resp {
	__le64 original;	/* the word's value before the operation */
};

/* FILL / VERIFY request body: offset and length are multiples of 8. */
struct pl_pattern_req {
	__le64 key;
	__le64 offset;
	__le64 length;
	__le64 pattern;
	__le32 mode;		/* PL_PATTERN_* */
	__le32 reserved;
};

/* VERIFY response body. */
struct pl_verify_resp {
	__le64 mismatches;
	__le64 first_bad_offset; /* MR offset of first bad word, or ~0ULL */
	__le64 first_bad_value;
};

/* LEASE_TAKE request body. */
struct pl_lease_take_req {
	struct pl_file_id file;
	__le64 start;
	__le64 length;		/* 0: to the end of the file */
	__le32 policy;		/* PL_POLICY_* */
	__le32 owner_pid;	/* guest pid of the taker, for display */
};

/* LEASE_RELEASE request body. */
struct pl_lease_release_req {
	__le64 lease;
	__le32 reason;		/* PL_RELEASE_* */
	__le32 reserved;
};

/* LEASE_BREAK request body. */
struct pl_lease_break_req {
	struct pl_file_id file;
	__le64 start;
	__le64 length;		/* 0: to the end of the file */
	__le32 reason;		/* PL_BREAK_* */
	__le32 reserved;
};

/*
 * LEASE_BREAK response body. leases_held counts overlapping leases still held
 * (wait/timeout policy): non-zero tells the module to let the breaker wait.
 * The status is PL_S_OK either way.
 */
struct pl_lease_break_resp {
	__le32 leases;		/* leases that overlapped the range */
	__le32 leases_held;
	__le32 mrs_revoked;
	__le32 reserved;
	__le64 pages_unpinned;
};

/* EXPORT_MR response body. */
struct pl_export_mr_resp {
	__le64 export;
	__le32 refs;		/* references now held (1 when new) */
	__le32 reserved;
};

/* IMPORT_MR request body. */
struct pl_import_mr_req {
	__le64 export;
	__le32 access;		/* PL_ACCESS_* of the new, aliasing MR */
	__le32 reserved;
};

/*
 * One event, written by the device into a buffer the driver posted on queue 1.
 * Fixed size; the meaning of args depends on kind:
 * - MR_REVOKED: [mr key, reason (PL_REVOKE_*), pages, lease or 0]
 * - LEASE_BROKEN: [lease, break reason (PL_BREAK_*), policy, MRs in range]
 * - LEASE_LOST: [lease, MRs still pinned, pages still pinned, 0]
 * - CONTEXT_TORN_DOWN: [MRs destroyed, leases released, pages unpinned, 0]
 * - FAULT_INJECTED: [fault point, action, rule id, 0]
 * - DEVICE_ERROR: [status, opcode, 0, 0]
 */
struct pl_event {
	__le16 kind;		/* PL_EVENT_* */
	__le16 flags;		/* PL_EVENT_F_* */
	__le32 dropped;		/* events dropped before this one */
	__le64 ctx;		/* context concerned, 0: device-wide */
	__le64 seq;		/* device-wide sequence number, from 1 */
	__le64 args[4];
};

/* ---- size checks -------------------------------------------------------- */

/*
 * C11 _Static_assert: the kernel builds with -std=gnu11, and gcc and clang
 * accept it in older C modes too. This header is C only (a field is named
 * "export", a C++ keyword).
 */
#define PL_ABI_CHECK_SIZE(type, size) \
	_Static_assert(sizeof(type) == (size), #type " has the wrong size")

PL_ABI_CHECK_SIZE(struct pl_config, 8);
PL_ABI_CHECK_SIZE(struct pl_req_hdr, 24);
PL_ABI_CHECK_SIZE(struct pl_resp_hdr, 16);
PL_ABI_CHECK_SIZE(struct pl_file_id, 24);
PL_ABI_CHECK_SIZE(struct pl_query_device_resp, 40);
PL_ABI_CHECK_SIZE(struct pl_create_context_req, 24);
PL_ABI_CHECK_SIZE(struct pl_handle_resp, 8);
PL_ABI_CHECK_SIZE(struct pl_close_context_resp, 16);
PL_ABI_CHECK_SIZE(struct pl_create_child_req, 8);
PL_ABI_CHECK_SIZE(struct pl_handle_req, 8);
PL_ABI_CHECK_SIZE(struct pl_reg_mr_req, 56);
PL_ABI_CHECK_SIZE(struct pl_reg_mr_resp, 16);
PL_ABI_CHECK_SIZE(struct pl_dma_req, 40);
PL_ABI_CHECK_SIZE(struct pl_atomic_req, 32);
PL_ABI_CHECK_SIZE(struct pl_atomic_resp, 8);
PL_ABI_CHECK_SIZE(struct pl_pattern_req, 40);
PL_ABI_CHECK_SIZE(struct pl_verify_resp, 24);
PL_ABI_CHECK_SIZE(struct pl_lease_take_req, 48);
PL_ABI_CHECK_SIZE(struct pl_lease_release_req, 16);
PL_ABI_CHECK_SIZE(struct pl_lease_break_req, 48);
PL_ABI_CHECK_SIZE(struct pl_lease_break_resp, 24);
PL_ABI_CHECK_SIZE(struct pl_export_mr_resp, 16);
PL_ABI_CHECK_SIZE(struct pl_import_mr_req, 16);
PL_ABI_CHECK_SIZE(struct pl_event, 56);

#endif /* _PINLEASE_ABI_H */
