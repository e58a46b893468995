/* SPDX-License-Identifier: GPL-2.0 */
/*
 * pinlease: differences between the kernels the module builds against
 * (Debian 6.1 LTS and 6.12), kept in one place (DESIGN.md section 4).
 */
#ifndef _PINLEASE_COMPAT_H
#define _PINLEASE_COMPAT_H

#include <linux/version.h>
#include <linux/file.h>
#include <linux/virtio_config.h>

/*
 * virtio_find_vqs(): callbacks/names arrays up to 6.10, an array of
 * struct virtqueue_info from 6.11 on.
 */
static inline int pl_find_vqs(struct virtio_device *vdev, unsigned int nvqs,
			      struct virtqueue *vqs[], vq_callback_t *cbs[],
			      const char * const names[])
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 11, 0)
	struct virtqueue_info info[4] = {};
	unsigned int i;

	if (nvqs > ARRAY_SIZE(info))
		return -EINVAL;
	for (i = 0; i < nvqs; i++) {
		info[i].name = names[i];
		info[i].callback = cbs[i];
	}
	return virtio_find_vqs(vdev, nvqs, vqs, info, NULL);
#else
	return virtio_find_vqs(vdev, nvqs, vqs, cbs, names, NULL);
#endif
}

/* struct fd became opaque in 6.12; fd_file() is how to get its file. */
#ifndef fd_file
#define fd_file(f) ((f).file)
#endif

#endif /* _PINLEASE_COMPAT_H */
