// SPDX-License-Identifier: GPL-2.0
/*
 * pl-verbs-check: an unmodified-verbs program against a pinlease_ib
 * device, for the guest (guest-driver/vm/ibdriver.py puts it in the
 * initramfs as /bin/pl-verbs-check).
 *
 *   pl-verbs-check reg [DEV]
 *	opens DEV (default: the first device named PINLEASE_IB_NAME_PREFIX*),
 *	allocates a PD, registers an anonymous buffer and a MAP_SHARED
 *	memfd mapping with ibv_reg_mr, checks that the kernel's pin counters
 *	(/proc/vmstat nr_foll_pin_acquired/released) moved by the MRs' pages,
 *	deregisters, and checks every pin was released.
 *   pl-verbs-check disassociate [DEV]
 *	opens DEV, registers an MR, then unbinds the auxiliary device from
 *	pinlease_ib.ko with the verbs fd still open: the pins must be
 *	released, the fd's next verb must fail with EIO, closing must work;
 *	then binds it again and waits for DEV to come back.
 *   pl-verbs-check reset [DEV]
 *	opens DEV, registers an MR, then resets the pinlease device
 *	(debugfs pinlease/pinlease0/reset) with the verbs fd open: the fd's
 *	next verb must fail with EIO, the pins must be released once
 *	pinlease.ko replaced the auxiliary device, and a new pinlease_ib
 *	device must come and register memory.
 *   pl-verbs-check traffic [DEV]
 *	two RC QPs of one context connected to each other: SEND/RECV, RDMA
 *	WRITE and RDMA READ between two MRs, each completion polled and the
 *	bytes compared; then an RDMA WRITE to an MR without remote write
 *	access must complete with a remote access error.
 *
 * Every check prints one "pl-verbs-check: ok|FAIL ..." line; the exit
 * code is 0 only when all passed.
 *
 * Two more are tools of the guest suite's verbs cases
 * (guest-driver/tools/src/cases/verbs/), which judge what they print:
 *   pl-verbs-check verdict WHAT shared|private ro|rw ro|rw [DEV]
 *	the kernel's answer to one ibv_reg_mr (see cmd_verdict()).
 *   pl-verbs-check hold DEV PATH shared|private ro|rw ro|rw
 *	holds an MR of a file mapping and does RDMA on it on command (a
 *	line protocol on stdin/stdout, see cmd_hold()).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <infiniband/verbs.h>

#include "pinlease_ib_abi.h"

#define AUX_DRIVER_DIR "/sys/bus/auxiliary/drivers/pinlease_ib." \
	PINLEASE_AUX_DEVICE_NAME
#define MR_BYTES (1UL << 20)

static int failures;

static void check(int ok, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void check(int ok, const char *fmt, ...)
{
	va_list ap;

	printf("pl-verbs-check: %s ", ok ? "ok" : "FAIL");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
	if (!ok)
		failures++;
}

static void die(const char *what)
{
	printf("pl-verbs-check: FAIL %s: %s\n", what, strerror(errno));
	exit(1);
}

/* nr_foll_pin_acquired and _released, after folding per-CPU deltas. */
static void pins(long long *acq, long long *rel)
{
	char line[256];
	FILE *f;
	int fd;

	fd = open("/proc/sys/vm/stat_refresh", O_WRONLY);
	if (fd >= 0) {
		if (write(fd, "1", 1) < 0)
			perror("stat_refresh");
		close(fd);
	}
	*acq = *rel = -1;
	f = fopen("/proc/vmstat", "r");
	if (!f)
		die("/proc/vmstat");
	while (fgets(line, sizeof(line), f)) {
		sscanf(line, "nr_foll_pin_acquired %lld", acq);
		sscanf(line, "nr_foll_pin_released %lld", rel);
	}
	fclose(f);
	if (*acq < 0 || *rel < 0) {
		printf("pl-verbs-check: FAIL no nr_foll_pin_* in /proc/vmstat\n");
		exit(1);
	}
}

static struct ibv_context *open_dev(const char *want, char *name, size_t len)
{
	struct ibv_device **list;
	struct ibv_context *ctx = NULL;
	int i, n;

	list = ibv_get_device_list(&n);
	if (!list)
		die("ibv_get_device_list");
	for (i = 0; i < n; i++) {
		const char *dn = ibv_get_device_name(list[i]);

		if (want ? strcmp(dn, want) :
		    strncmp(dn, PINLEASE_IB_NAME_PREFIX,
			    strlen(PINLEASE_IB_NAME_PREFIX)))
			continue;
		snprintf(name, len, "%s", dn);
		ctx = ibv_open_device(list[i]);
		if (!ctx)
			die("ibv_open_device");
		break;
	}
	ibv_free_device_list(list);
	if (!ctx) {
		printf("pl-verbs-check: FAIL no device %s among %d\n",
		       want ? want : PINLEASE_IB_NAME_PREFIX "*", n);
		exit(1);
	}
	return ctx;
}

static void *anon_buffer(void)
{
	char *p = mmap(NULL, MR_BYTES, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		die("mmap anonymous");
	memset(p, 0x5a, MR_BYTES);
	return p;
}

static void *shared_file_buffer(void)
{
	int fd = memfd_create("pl-verbs-check", 0);
	char *p;

	if (fd < 0)
		die("memfd_create");
	if (ftruncate(fd, MR_BYTES))
		die("ftruncate");
	p = mmap(NULL, MR_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		die("mmap MAP_SHARED memfd");
	close(fd);
	memset(p, 0xa5, MR_BYTES);
	return p;
}

static int cmd_reg(const char *want)
{
	long long pages = MR_BYTES / sysconf(_SC_PAGESIZE);
	long long a0, r0, a1, r1, a2, r2;
	struct ibv_context *ctx;
	struct ibv_mr *anon, *shared;
	struct ibv_pd *pd;
	char name[64];
	void *buf;

	ctx = open_dev(want, name, sizeof(name));
	check(1, "ibv_open_device %s", name);
	pd = ibv_alloc_pd(ctx);
	check(pd != NULL, "ibv_alloc_pd%s%s", pd ? "" : ": ",
	      pd ? "" : strerror(errno));
	if (!pd)
		return 1;

	pins(&a0, &r0);
	buf = anon_buffer();
	anon = ibv_reg_mr(pd, buf, MR_BYTES, IBV_ACCESS_LOCAL_WRITE |
			  IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ);
	check(anon != NULL, "ibv_reg_mr anonymous %lu bytes%s%s", MR_BYTES,
	      anon ? "" : ": ", anon ? "" : strerror(errno));
	buf = shared_file_buffer();
	shared = ibv_reg_mr(pd, buf, MR_BYTES, IBV_ACCESS_LOCAL_WRITE);
	check(shared != NULL, "ibv_reg_mr MAP_SHARED memfd %lu bytes%s%s",
	      MR_BYTES, shared ? "" : ": ", shared ? "" : strerror(errno));
	pins(&a1, &r1);
	check(a1 - a0 >= pages * (!!anon + !!shared),
	      "nr_foll_pin_acquired +%lld (released +%lld) for %lld pages in %d MRs",
	      a1 - a0, r1 - r0, pages * (!!anon + !!shared),
	      !!anon + !!shared);
	if (anon)
		printf("pl-verbs-check: anonymous MR lkey %#x rkey %#x\n",
		       anon->lkey, anon->rkey);

	if (anon) {
		errno = ibv_dereg_mr(anon);
		check(!errno, "ibv_dereg_mr anonymous%s%s", errno ? ": " : "",
		      errno ? strerror(errno) : "");
	}
	if (shared) {
		errno = ibv_dereg_mr(shared);
		check(!errno, "ibv_dereg_mr MAP_SHARED memfd%s%s",
		      errno ? ": " : "", errno ? strerror(errno) : "");
	}
	pins(&a2, &r2);
	check(a2 - r2 == a0 - r0,
	      "pins balanced after dereg: acquired-released %lld before, %lld after (released +%lld)",
	      a0 - r0, a2 - r2, r2 - r1);
	errno = ibv_dealloc_pd(pd);
	check(!errno, "ibv_dealloc_pd");
	errno = ibv_close_device(ctx);
	check(!errno, "ibv_close_device");
	return failures ? 1 : 0;
}

static int write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY);
	int ret = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, s, strlen(s)) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

/* The auxiliary device under /sys/class/infiniband/NAME/device. */
static int aux_device_of(const char *name, char *aux, size_t len)
{
	char path[256], target[256];
	const char *base;
	ssize_t n;

	snprintf(path, sizeof(path), "/sys/class/infiniband/%s/device", name);
	n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return -errno;
	target[n] = 0;
	base = strrchr(target, '/');
	snprintf(aux, len, "%s", base ? base + 1 : target);
	return 0;
}

/*
 * A verbs fd holding one pinned anonymous MR: how the checks that take the
 * device away under a live MR (disassociate, reset) begin.
 */
struct live_mr {
	struct ibv_context *ctx;
	struct ibv_pd *pd;
	struct ibv_mr *mr;
	char name[64];
	long long held_before;	/* pins held (acquired - released) before */
};

static void open_with_live_mr(const char *want, struct live_mr *l)
{
	long long acq, rel;

	pins(&acq, &rel);
	l->held_before = acq - rel;
	l->ctx = open_dev(want, l->name, sizeof(l->name));
	l->pd = ibv_alloc_pd(l->ctx);
	if (!l->pd)
		die("ibv_alloc_pd");
	l->mr = ibv_reg_mr(l->pd, anon_buffer(), MR_BYTES,
			   IBV_ACCESS_LOCAL_WRITE);
	check(l->mr != NULL, "ibv_reg_mr anonymous %lu bytes", MR_BYTES);
	pins(&acq, &rel);
	check(acq - rel > l->held_before,
	      "MR pinned: acquired-released %lld -> %lld", l->held_before,
	      acq - rel);
}

static int cmd_disassociate(const char *want)
{
	long long a2, r2;
	struct live_mr l;
	struct ibv_pd *pd2;
	char aux[256];
	int err, i, back = 0;

	open_with_live_mr(want, &l);
	err = aux_device_of(l.name, aux, sizeof(aux));
	check(!err, "%s sits on auxiliary device %s", l.name, err ? "?" : aux);
	if (err)
		return 1;

	err = write_file(AUX_DRIVER_DIR "/unbind", aux);
	check(!err, "unbind %s from %s with the verbs fd open%s%s", aux,
	      AUX_DRIVER_DIR, err ? ": " : "", err ? strerror(-err) : "");
	pins(&a2, &r2);
	check(a2 - r2 == l.held_before,
	      "pins released by the unbind: acquired-released %lld before the MR, %lld after the unbind",
	      l.held_before, a2 - r2);
	errno = 0;
	pd2 = ibv_alloc_pd(l.ctx);
	check(!pd2 && errno == EIO,
	      "ibv_alloc_pd on the disassociated fd fails with EIO (got %s, errno %d %s)",
	      pd2 ? "a PD" : "NULL", errno, strerror(errno));
	err = ibv_close_device(l.ctx);
	check(!err, "ibv_close_device after disassociation (%d)", err);

	err = write_file(AUX_DRIVER_DIR "/bind", aux);
	check(!err, "bind %s again%s%s", aux, err ? ": " : "",
	      err ? strerror(-err) : "");
	for (i = 0; i < 100 && !back; i++) {
		char path[128];

		snprintf(path, sizeof(path), "/sys/class/infiniband/%s",
			 l.name);
		back = access(path, F_OK) == 0;
		if (!back)
			usleep(50000);
	}
	check(back, "%s is back after the bind", l.name);
	return failures ? 1 : 0;
}

#define DEBUGFS_RESET "/sys/kernel/debug/pinlease/pinlease0/reset"

static int cmd_reset(const char *want)
{
	struct ibv_context *ctx2;
	struct ibv_pd *pd2;
	struct ibv_mr *mr;
	long long a2, r2;
	struct live_mr l;
	char name[64];
	int err, i;

	open_with_live_mr(want, &l);
	err = write_file(DEBUGFS_RESET, "1");
	check(!err, "device reset through %s%s%s", DEBUGFS_RESET,
	      err ? ": " : "", err ? strerror(-err) : "");
	/* the auxiliary device is replaced by a work item after the reset */
	for (i = 0; i < 200; i++) {
		pins(&a2, &r2);
		if (a2 - r2 == l.held_before)
			break;
		usleep(50000);
	}
	check(a2 - r2 == l.held_before,
	      "pins released after the reset: acquired-released %lld before the MR, %lld %d ms after the reset",
	      l.held_before, a2 - r2, i * 50);
	errno = 0;
	pd2 = ibv_alloc_pd(l.ctx);
	check(!pd2 && errno == EIO,
	      "ibv_alloc_pd on the fd of the replaced device fails with EIO (got %s, errno %d %s)",
	      pd2 ? "a PD" : "NULL", errno, strerror(errno));
	err = ibv_close_device(l.ctx);
	check(!err, "ibv_close_device after the reset (%d)", err);

	/*
	 * A new ib_device: the old one's name may still be held by the fd
	 * just closed, so any PINLEASE_IB_NAME_PREFIX device will do.
	 */
	ctx2 = NULL;
	for (i = 0; i < 100 && !ctx2; i++) {
		struct ibv_device **list;
		int n, j;

		list = ibv_get_device_list(&n);
		for (j = 0; list && j < n && !ctx2; j++) {
			const char *dn = ibv_get_device_name(list[j]);

			if (!strncmp(dn, PINLEASE_IB_NAME_PREFIX,
				     strlen(PINLEASE_IB_NAME_PREFIX))) {
				snprintf(name, sizeof(name), "%s", dn);
				ctx2 = ibv_open_device(list[j]);
			}
		}
		if (list)
			ibv_free_device_list(list);
		if (!ctx2)
			usleep(50000);
	}
	check(ctx2 != NULL, "a new device (%s) is there after the reset and opens",
	      ctx2 ? name : "none");
	if (ctx2) {
		pd2 = ibv_alloc_pd(ctx2);
		mr = pd2 ? ibv_reg_mr(pd2, anon_buffer(), MR_BYTES,
				      IBV_ACCESS_LOCAL_WRITE) : NULL;
		check(mr && !ibv_dereg_mr(mr) && !ibv_dealloc_pd(pd2),
		      "ibv_reg_mr/ibv_dereg_mr on the new device");
		check(!ibv_close_device(ctx2), "ibv_close_device");
	}
	return failures ? 1 : 0;
}

static struct ibv_qp *rc_qp(struct ibv_pd *pd, struct ibv_cq *cq)
{
	struct ibv_qp_init_attr init = {
		.send_cq = cq,
		.recv_cq = cq,
		.cap = { .max_send_wr = 4, .max_recv_wr = 4,
			 .max_send_sge = 1, .max_recv_sge = 1 },
		.qp_type = IBV_QPT_RC,
	};
	struct ibv_qp *qp = ibv_create_qp(pd, &init);

	if (!qp)
		die("ibv_create_qp");
	return qp;
}

static void connect_qp(struct ibv_qp *qp, uint32_t dest, uint16_t lid)
{
	struct ibv_qp_attr a = {
		.qp_state = IBV_QPS_INIT,
		.port_num = 1,
		.qp_access_flags = IBV_ACCESS_REMOTE_WRITE |
				   IBV_ACCESS_REMOTE_READ,
	};

	if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX |
			  IBV_QP_PORT | IBV_QP_ACCESS_FLAGS))
		die("modify_qp INIT");
	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTR;
	a.path_mtu = IBV_MTU_1024;
	a.dest_qp_num = dest;
	a.max_dest_rd_atomic = 1;
	a.min_rnr_timer = 12;
	a.ah_attr.dlid = lid;
	a.ah_attr.port_num = 1;
	if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU |
			  IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
			  IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER))
		die("modify_qp RTR");
	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTS;
	a.timeout = 14;
	a.retry_cnt = 7;
	a.rnr_retry = 7;
	a.max_rd_atomic = 1;
	if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_TIMEOUT |
			  IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
			  IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC))
		die("modify_qp RTS");
}

/* Two RC QPs of one context on one CQ, connected to each other. */
struct qp_pair {
	struct ibv_cq *cq;
	struct ibv_qp *qa, *qb;
	uint16_t lid;
};

static void qp_pair_connect(struct qp_pair *p)
{
	connect_qp(p->qa, p->qb->qp_num, p->lid);
	connect_qp(p->qb, p->qa->qp_num, p->lid);
}

static void qp_pair_create(struct ibv_context *ctx, struct ibv_pd *pd,
			   struct qp_pair *p)
{
	struct ibv_port_attr port;

	if (ibv_query_port(ctx, 1, &port))
		die("ibv_query_port");
	p->lid = port.lid;
	p->cq = ibv_create_cq(ctx, 16, NULL, NULL, 0);
	if (!p->cq)
		die("ibv_create_cq(16)");
	p->qa = rc_qp(pd, p->cq);
	p->qb = rc_qp(pd, p->cq);
	qp_pair_connect(p);
}

/* An error completion moved a QP to ERR: both back through RESET to RTS. */
static void qp_pair_recover(struct qp_pair *p)
{
	struct ibv_qp_attr a = { .qp_state = IBV_QPS_RESET };

	if (ibv_modify_qp(p->qa, &a, IBV_QP_STATE) ||
	    ibv_modify_qp(p->qb, &a, IBV_QP_STATE))
		die("modify_qp RESET");
	qp_pair_connect(p);
}

static int qp_pair_destroy(struct qp_pair *p)
{
	int err = ibv_destroy_qp(p->qa);

	err = ibv_destroy_qp(p->qb) ?: err;
	return ibv_destroy_cq(p->cq) ?: err;
}

/* Polls @cq for one completion: 1 when it came, 0 when none did. */
static int poll_wc(struct ibv_cq *cq, struct ibv_wc *wc)
{
	int spins, r;

	for (spins = 0; spins < 1000000; spins++) {
		r = ibv_poll_cq(cq, 1, wc);
		if (r < 0)
			die("ibv_poll_cq");
		if (r)
			return 1;
	}
	return 0;
}

/* Polls @cq until @n completions came; 0 when all are IBV_WC_SUCCESS. */
static int poll_n(struct ibv_cq *cq, int n, const char *what,
		  enum ibv_wc_status *last)
{
	struct ibv_wc wc;
	int got = 0, bad = 0;

	while (got < n && poll_wc(cq, &wc)) {
		got++;
		*last = wc.status;
		if (wc.status != IBV_WC_SUCCESS) {
			printf("pl-verbs-check: %s: completion wr_id %llu status %s\n",
			       what, (unsigned long long)wc.wr_id,
			       ibv_wc_status_str(wc.status));
			bad++;
		}
	}
	if (got < n)
		printf("pl-verbs-check: %s: %d of %d completions\n", what, got,
		       n);
	return got < n || bad;
}

static int post_one(struct ibv_qp *qp, enum ibv_wr_opcode op,
		    struct ibv_mr *mr, size_t off, size_t len,
		    struct ibv_mr *remote, size_t roff)
{
	struct ibv_sge sge = {
		.addr = (uintptr_t)mr->addr + off,
		.length = len,
		.lkey = mr->lkey,
	};
	struct ibv_send_wr wr = {
		.wr_id = op,
		.sg_list = &sge,
		.num_sge = 1,
		.opcode = op,
		.send_flags = IBV_SEND_SIGNALED,
	}, *bad;

	if (remote) {
		wr.wr.rdma.remote_addr = (uintptr_t)remote->addr + roff;
		wr.wr.rdma.rkey = remote->rkey;
	}
	return ibv_post_send(qp, &wr, &bad);
}

static int cmd_traffic(const char *want)
{
	struct ibv_context *ctx;
	struct ibv_mr *ma, *mb, *mro;
	struct ibv_qp *qa, *qb;
	enum ibv_wc_status st;
	struct qp_pair qps;
	struct ibv_cq *cq;
	struct ibv_pd *pd;
	char name[64], *a, *b, *ro;
	int err;

	ctx = open_dev(want, name, sizeof(name));
	pd = ibv_alloc_pd(ctx);
	check(pd != NULL, "ibv_alloc_pd%s%s", pd ? "" : ": ",
	      pd ? "" : strerror(errno));
	if (!pd)
		return 1;
	a = anon_buffer();
	b = anon_buffer();
	ro = anon_buffer();
	ma = ibv_reg_mr(pd, a, MR_BYTES, IBV_ACCESS_LOCAL_WRITE |
			IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ);
	mb = ibv_reg_mr(pd, b, MR_BYTES, IBV_ACCESS_LOCAL_WRITE |
			IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ);
	mro = ibv_reg_mr(pd, ro, MR_BYTES, IBV_ACCESS_LOCAL_WRITE);
	if (!ma || !mb || !mro)
		die("ibv_reg_mr");
	qp_pair_create(ctx, pd, &qps);
	qa = qps.qa;
	qb = qps.qb;
	cq = qps.cq;
	check(1, "QPs %#x and %#x connected (LID %u)", qa->qp_num, qb->qp_num,
	      qps.lid);

	/* SEND a[0..4096) -> b[8192..) */
	{
		struct ibv_sge sge = {
			.addr = (uintptr_t)b + 8192, .length = 4096,
			.lkey = mb->lkey,
		};
		struct ibv_recv_wr rwr = {
			.wr_id = 77, .sg_list = &sge, .num_sge = 1,
		}, *bad;

		memset(a, 'S', 4096);
		err = ibv_post_recv(qb, &rwr, &bad);
		check(!err, "ibv_post_recv (%d)", err);
	}
	err = post_one(qa, IBV_WR_SEND, ma, 0, 4096, NULL, 0);
	check(!err && !poll_n(cq, 2, "SEND", &st) &&
	      !memcmp(b + 8192, a, 4096),
	      "SEND/RECV of 4096 bytes: completions and bytes (post %d)", err);

	/* RDMA WRITE a[4096..12288) -> b[65536..) */
	memset(a + 4096, 'W', 8192);
	err = post_one(qa, IBV_WR_RDMA_WRITE, ma, 4096, 8192, mb, 65536);
	check(!err && !poll_n(cq, 1, "RDMA WRITE", &st) &&
	      !memcmp(b + 65536, a + 4096, 8192),
	      "RDMA WRITE of 8192 bytes across a page boundary (post %d)", err);

	/* RDMA READ b[131072..+5000) -> a[200000..) */
	memset(b + 131072, 'R', 5000);
	err = post_one(qa, IBV_WR_RDMA_READ, ma, 200000, 5000, mb, 131072);
	check(!err && !poll_n(cq, 1, "RDMA READ", &st) &&
	      !memcmp(a + 200000, b + 131072, 5000),
	      "RDMA READ of 5000 bytes (post %d)", err);

	/* RDMA WRITE into an MR without IBV_ACCESS_REMOTE_WRITE */
	err = post_one(qa, IBV_WR_RDMA_WRITE, ma, 0, 64, mro, 0);
	st = IBV_WC_SUCCESS;
	poll_n(cq, 1, "RDMA WRITE without access", &st);
	check(!err && st == IBV_WC_REM_ACCESS_ERR,
	      "RDMA WRITE to an MR without remote write: %s",
	      ibv_wc_status_str(st));

	check(!qp_pair_destroy(&qps), "ibv_destroy_qp x2, ibv_destroy_cq");
	check(!ibv_dereg_mr(ma) && !ibv_dereg_mr(mb) && !ibv_dereg_mr(mro),
	      "ibv_dereg_mr x3");
	check(!ibv_dealloc_pd(pd), "ibv_dealloc_pd");
	check(!ibv_close_device(ctx), "ibv_close_device");
	return failures ? 1 : 0;
}

/* The access flags of the verdict and hold subcommands' "ro" and "rw". */
#define ACCESS_RO IBV_ACCESS_REMOTE_READ
#define ACCESS_RW (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | \
		   IBV_ACCESS_REMOTE_READ)

/* "ro" -> 0, "rw" -> 1, anything else -> -1. */
static int ro_rw(const char *word)
{
	if (!strcmp(word, "ro"))
		return 0;
	if (!strcmp(word, "rw"))
		return 1;
	return -1;
}

/* The errno's name (EFAULT) for parseable lines. */
static const char *errno_name(int err)
{
	const char *n = strerrorname_np(err);

	return n ? n : "E?";
}

/*
 * Maps @len bytes of what @what names: "anon" (private anonymous),
 * "memfd" (a memfd of @len bytes) or the path of a file, extended to @len
 * bytes if shorter; MAP_SHARED when @shared, PROT_WRITE when @writable.
 * Nothing is touched: the pin faults the pages in as it needs them.
 * Returns MAP_FAILED with errno set; *@how says what failed.
 */
static void *map_memory(const char *what, size_t len, int shared,
			int writable, const char **how)
{
	int prot = PROT_READ | (writable ? PROT_WRITE : 0);
	int flags = shared ? MAP_SHARED : MAP_PRIVATE;
	struct stat st;
	void *p;
	int fd;

	if (!strcmp(what, "anon")) {
		*how = "mmap anonymous";
		return mmap(NULL, len, prot, flags | MAP_ANONYMOUS, -1, 0);
	}
	if (!strcmp(what, "memfd")) {
		*how = "memfd_create";
		fd = memfd_create("pl-verbs-check", 0);
	} else {
		*how = "open";
		fd = open(what, (writable || !shared ? O_RDWR : O_RDONLY) |
			  O_CREAT, 0644);
	}
	if (fd < 0)
		return MAP_FAILED;
	*how = "fstat/ftruncate";
	if (fstat(fd, &st) || ((size_t)st.st_size < len && ftruncate(fd, len))) {
		int e = errno;

		close(fd);
		errno = e;
		return MAP_FAILED;
	}
	*how = "mmap";
	p = mmap(NULL, len, prot, flags, fd, 0);
	close(fd);
	return p;
}

/*
 *   pl-verbs-check verdict WHAT shared|private ro|rw ro|rw [DEV]
 * maps WHAT ("anon", "memfd" or a file; 64 KiB) shared or private,
 * PROT_READ (ro) or PROT_READ|PROT_WRITE (rw), registers it with access
 * ro (IBV_ACCESS_REMOTE_READ) or rw (LOCAL_WRITE|REMOTE_WRITE|REMOTE_READ)
 * and prints the kernel's answer as one line:
 *   pl-verbs-check: verdict ok|ERRNO pins_acquired=N pins_released=N
 * then deregisters. Exit 0 whatever the answer (it is the measurement),
 * 1 when something else failed.
 */
static int cmd_verdict(int argc, char **argv)
{
	const size_t len = 64 * 1024;
	int shared, map_rw, access_rw, err;
	long long a0, r0, a1, r1;
	struct ibv_context *ctx;
	struct ibv_pd *pd;
	struct ibv_mr *mr;
	const char *how;
	char name[64];
	void *p;

	if (argc < 6 || (strcmp(argv[3], "shared") &&
			 strcmp(argv[3], "private")) ||
	    ro_rw(argv[4]) < 0 || ro_rw(argv[5]) < 0) {
		fprintf(stderr, "usage: %s verdict anon|memfd|PATH shared|private ro|rw ro|rw [DEVICE]\n",
			argv[0]);
		return 2;
	}
	shared = !strcmp(argv[3], "shared");
	map_rw = ro_rw(argv[4]);
	access_rw = ro_rw(argv[5]);
	ctx = open_dev(argc > 6 ? argv[6] : NULL, name, sizeof(name));
	pd = ibv_alloc_pd(ctx);
	if (!pd)
		die("ibv_alloc_pd");
	p = map_memory(argv[2], len, shared, map_rw, &how);
	if (p == MAP_FAILED) {
		printf("pl-verbs-check: FAIL %s %s: %s\n", how, argv[2],
		       strerror(errno));
		return 1;
	}
	pins(&a0, &r0);
	mr = ibv_reg_mr(pd, p, len, access_rw ? ACCESS_RW : ACCESS_RO);
	err = mr ? 0 : errno;
	pins(&a1, &r1);
	printf("pl-verbs-check: verdict %s pins_acquired=%lld pins_released=%lld\n",
	       mr ? "ok" : errno_name(err), a1 - a0, r1 - r0);
	if (mr && ibv_dereg_mr(mr))
		die("ibv_dereg_mr");
	munmap(p, len);
	if (ibv_dealloc_pd(pd) || ibv_close_device(ctx))
		die("ibv_dealloc_pd/ibv_close_device");
	return 0;
}

/* The enum's name of a completion status (IBV_WC_REM_ACCESS_ERR). */
static const char *wc_status_name(enum ibv_wc_status st)
{
	static char other[32];

	switch (st) {
	case IBV_WC_SUCCESS:
		return "IBV_WC_SUCCESS";
	case IBV_WC_LOC_LEN_ERR:
		return "IBV_WC_LOC_LEN_ERR";
	case IBV_WC_LOC_PROT_ERR:
		return "IBV_WC_LOC_PROT_ERR";
	case IBV_WC_WR_FLUSH_ERR:
		return "IBV_WC_WR_FLUSH_ERR";
	case IBV_WC_REM_INV_REQ_ERR:
		return "IBV_WC_REM_INV_REQ_ERR";
	case IBV_WC_REM_ACCESS_ERR:
		return "IBV_WC_REM_ACCESS_ERR";
	case IBV_WC_REM_OP_ERR:
		return "IBV_WC_REM_OP_ERR";
	case IBV_WC_RETRY_EXC_ERR:
		return "IBV_WC_RETRY_EXC_ERR";
	case IBV_WC_GENERAL_ERR:
		return "IBV_WC_GENERAL_ERR";
	default:
		snprintf(other, sizeof(other), "IBV_WC_%d", st);
		return other;
	}
}

/* 64-bit FNV-1a of @len bytes: the holder's answers name data by it. */
static uint64_t fnv1a(const unsigned char *p, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	size_t i;

	for (i = 0; i < len; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

/* What a holder has: the file MR (NULL once deregistered) and the rest. */
struct holder {
	struct ibv_context *ctx;
	struct ibv_pd *pd;
	struct qp_pair qps;
	struct ibv_mr *file_mr, *local_mr;
	unsigned char *file, *local;
	size_t len;
};

/*
 * One RDMA work request on the holder's first QP, polled: @op with the
 * local MR @lmr as the scatter/gather side and @rmr as the remote one.
 * Returns the completion's status name, "post-ERRNO" when ibv_post_send
 * refused it or "no-completion"; after anything but success the QPs are
 * recovered for the next command.
 */
static const char *holder_rdma(struct holder *h, enum ibv_wr_opcode op,
			       struct ibv_mr *lmr, struct ibv_mr *rmr)
{
	static char refused[48];
	const char *st;
	struct ibv_wc wc;
	int err;

	err = post_one(h->qps.qa, op, lmr, 0, h->len, rmr, 0);
	if (err) {
		snprintf(refused, sizeof(refused), "post-%s", errno_name(err));
		return refused;
	}
	if (!poll_wc(h->qps.cq, &wc))
		st = "no-completion";
	else
		st = wc_status_name(wc.status);
	if (strcmp(st, "IBV_WC_SUCCESS"))
		qp_pair_recover(&h->qps);
	return st;
}

/* One command line of the holder's protocol; 0 when it said "exit". */
static int holder_command(struct holder *h, char *line)
{
	struct timespec t0, t1;
	const char *st;
	unsigned int byte;
	int err;

	line[strcspn(line, "\r\n")] = 0;
	if (!strcmp(line, "exit"))
		return 0;
	if (!strcmp(line, "dereg")) {
		if (!h->file_mr) {
			printf("dereg error=no-mr\n");
			return 1;
		}
		clock_gettime(CLOCK_MONOTONIC, &t0);
		err = ibv_dereg_mr(h->file_mr);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		if (!err)
			h->file_mr = NULL;
		printf("dereg %s ms=%ld\n", err ? errno_name(err) : "ok",
		       (t1.tv_sec - t0.tv_sec) * 1000 +
		       (t1.tv_nsec - t0.tv_nsec) / 1000000);
		return 1;
	}
	if (strncmp(line, "read", 4) && strncmp(line, "write", 5)) {
		printf("error unknown-command \"%s\"\n", line);
		return 1;
	}
	if (!h->file_mr) {
		printf("%s error=no-mr\n", line);
		return 1;
	}
	if (!strcmp(line, "read")) {
		/* RDMA READ of the file MR (the remote side, its rkey) */
		memset(h->local, 0, h->len);
		st = holder_rdma(h, IBV_WR_RDMA_READ, h->local_mr, h->file_mr);
		printf("read status=%s len=%zu fnv1a=%#llx\n", st, h->len,
		       (unsigned long long)fnv1a(h->local, h->len));
	} else if (!strcmp(line, "write-out")) {
		/* RDMA WRITE out of the file MR (the local side, its lkey) */
		memset(h->local, 0, h->len);
		st = holder_rdma(h, IBV_WR_RDMA_WRITE, h->file_mr, h->local_mr);
		printf("write-out status=%s len=%zu fnv1a=%#llx\n", st, h->len,
		       (unsigned long long)fnv1a(h->local, h->len));
	} else if (sscanf(line, "write %x", &byte) == 1 && byte < 256) {
		/* RDMA WRITE into the file MR (the remote side) */
		memset(h->local, byte, h->len);
		st = holder_rdma(h, IBV_WR_RDMA_WRITE, h->local_mr, h->file_mr);
		printf("write status=%s len=%zu\n", st, h->len);
	} else {
		printf("error unknown-command \"%s\"\n", line);
	}
	return 1;
}

/*
 *   pl-verbs-check hold DEV PATH shared|private ro|rw ro|rw
 * The verbs side of the guest suite's lease cases
 * (guest-driver/tools/src/cases/verbs/): opens DEV, sets up two RC QPs
 * connected to each other and a local anonymous MR of the file's size,
 * maps the file PATH (its whole length) shared or private, PROT_READ (ro)
 * or read-write, and registers the mapping with access ro or rw (as
 * verdict). Then it answers one line per command read on stdin:
 *   ready lkey=K rkey=K len=N pins_acquired=N pins_released=N
 *   error STEP ERRNO             (registration failed; exit 1)
 *   read       -> read status=IBV_WC_... len=N fnv1a=X
 *                 (RDMA READ of the file MR into the local MR)
 *   write XX   -> write status=IBV_WC_... len=N
 *                 (RDMA WRITE of bytes XX (hex) into the file MR)
 *   write-out  -> write-out status=IBV_WC_... len=N fnv1a=X
 *                 (RDMA WRITE of the file MR into the local MR)
 *   dereg      -> dereg ok|ERRNO ms=N (ibv_dereg_mr of the file MR)
 *   exit, EOF  -> exit ok (everything closed)
 */
static int cmd_hold(int argc, char **argv)
{
	int shared, map_rw, access_rw, fd;
	struct holder h = { 0 };
	long long a0, r0, a1, r1;
	const char *how;
	char name[64], line[256];
	struct stat st;

	if (argc < 7 || (strcmp(argv[4], "shared") &&
			 strcmp(argv[4], "private")) ||
	    ro_rw(argv[5]) < 0 || ro_rw(argv[6]) < 0) {
		fprintf(stderr, "usage: %s hold DEVICE PATH shared|private ro|rw ro|rw\n",
			argv[0]);
		return 2;
	}
	shared = !strcmp(argv[4], "shared");
	map_rw = ro_rw(argv[5]);
	access_rw = ro_rw(argv[6]);
	fd = open(argv[3], O_RDONLY);
	if (fd < 0 || fstat(fd, &st)) {
		printf("error open/fstat %s\n", errno_name(errno));
		return 1;
	}
	close(fd);
	if (st.st_size <= 0) {
		printf("error size %lld\n", (long long)st.st_size);
		return 1;
	}
	h.len = st.st_size;
	h.ctx = open_dev(argv[2], name, sizeof(name));
	h.pd = ibv_alloc_pd(h.ctx);
	if (!h.pd)
		die("ibv_alloc_pd");
	qp_pair_create(h.ctx, h.pd, &h.qps);
	h.local = mmap(NULL, h.len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (h.local == MAP_FAILED)
		die("mmap anonymous");
	h.local_mr = ibv_reg_mr(h.pd, h.local, h.len, ACCESS_RW);
	if (!h.local_mr)
		die("ibv_reg_mr of the local MR");
	h.file = map_memory(argv[3], h.len, shared, map_rw, &how);
	if (h.file == MAP_FAILED) {
		printf("error %s %s\n", how, errno_name(errno));
		return 1;
	}
	pins(&a0, &r0);
	h.file_mr = ibv_reg_mr(h.pd, h.file, h.len,
			       access_rw ? ACCESS_RW : ACCESS_RO);
	if (!h.file_mr) {
		printf("error ibv_reg_mr %s\n", errno_name(errno));
		return 1;
	}
	pins(&a1, &r1);
	printf("ready lkey=%#x rkey=%#x len=%zu pins_acquired=%lld pins_released=%lld\n",
	       h.file_mr->lkey, h.file_mr->rkey, h.len, a1 - a0, r1 - r0);
	while (fgets(line, sizeof(line), stdin) && holder_command(&h, line))
		;
	if (h.file_mr && ibv_dereg_mr(h.file_mr))
		die("ibv_dereg_mr of the file MR");
	if (ibv_dereg_mr(h.local_mr) || qp_pair_destroy(&h.qps) ||
	    ibv_dealloc_pd(h.pd) || ibv_close_device(h.ctx))
		die("closing");
	printf("exit ok\n");
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 2 && !strcmp(argv[1], "reg"))
		return cmd_reg(argc > 2 ? argv[2] : NULL);
	if (argc >= 2 && !strcmp(argv[1], "disassociate"))
		return cmd_disassociate(argc > 2 ? argv[2] : NULL);
	if (argc >= 2 && !strcmp(argv[1], "reset"))
		return cmd_reset(argc > 2 ? argv[2] : NULL);
	if (argc >= 2 && !strcmp(argv[1], "traffic"))
		return cmd_traffic(argc > 2 ? argv[2] : NULL);
	if (argc >= 2 && !strcmp(argv[1], "verdict"))
		return cmd_verdict(argc, argv);
	if (argc >= 2 && !strcmp(argv[1], "hold"))
		return cmd_hold(argc, argv);
	fprintf(stderr, "usage: %s reg|disassociate|reset|traffic [DEVICE]\n"
		"       %s verdict anon|memfd|PATH shared|private ro|rw ro|rw [DEVICE]\n"
		"       %s hold DEVICE PATH shared|private ro|rw ro|rw\n",
		argv[0], argv[0], argv[0]);
	return 2;
}
