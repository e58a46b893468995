/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR BSD-3-Clause */
/*
 * pinlease as an RDMA device: what the guest ib_device driver
 * (pinlease_ib.ko) and the rdma-core provider (libpinlease-rdmav34.so)
 * must agree on. The only place these facts are written; both include it.
 *
 * The provider carries no driver-private data: every verb goes through the
 * kernel's uverbs write/ioctl commands with empty driver udata, so there is
 * no command or response struct here (yet). The link layer is InfiniBand
 * with a fixed LID; there is no network device (docs/rdma.md).
 */
#ifndef _PINLEASE_IB_ABI_H
#define _PINLEASE_IB_ABI_H

/*
 * ib_device_ops.uverbs_abi_ver of pinlease_ib.ko; the provider's
 * match_min_abi_version and match_max_abi_version.
 */
#define PINLEASE_IB_UVERBS_ABI_VERSION 1

/*
 * The ib_device name pattern (ib_register_device()); the provider matches
 * devices whose name starts with PINLEASE_IB_NAME_PREFIX.
 */
#define PINLEASE_IB_NAME_PREFIX "pinlease_ib"
#define PINLEASE_IB_NAME_PATTERN PINLEASE_IB_NAME_PREFIX "%d"

/* The auxiliary device pinlease.ko adds per virtio device: "pinlease.rdma.N". */
#define PINLEASE_AUX_DEVICE_NAME "rdma"

/* query_device: vendor_id (0xFFFFFF: no IEEE OUI, as soft devices report). */
#define PINLEASE_IB_VENDOR_ID 0xFFFFFF
/* query_port: the port's LID (IB link layer, no subnet manager). */
#define PINLEASE_IB_PORT_LID 1

#endif /* _PINLEASE_IB_ABI_H */
