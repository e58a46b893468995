// SPDX-License-Identifier: GPL-2.0
/*
 * ibv-bench: the rxe side of the guest benchmark (guest-driver/vm/run
 * --bench). The same workloads as `pinlease-guest bench`, through
 * libibverbs on an rdma_rxe device in the same guest:
 *
 *   regdereg_{1,256,65536}p  ibv_reg_mr + ibv_dereg_mr of the same range,
 *                            in a loop (pairs/s)
 *   reg_1p, dereg_1p         K one-page MRs registered, each REG timed,
 *                            then deregistered, each DEREG timed (us/op)
 *   reg_64m, reg_max         ONE registration of 64 MiB / --max-mib MiB,
 *                            median of a few (ms)
 *   write_4k_qd1, write_1m_qd1
 *                            RDMA WRITE from one MR to another over two RC
 *                            QPs of the device connected to each other,
 *                            signaled, one in flight, busy-polling the CQ
 *                            (MiB/s)
 *
 * Every buffer is an anonymous mmap, touched before timing. A rate is
 * counted over a loop of --seconds S after an untimed warm-up of 0.2 * S.
 * Each figure prints one line on stdout,
 *
 *   PINLEASE-BENCH rxe ID VALUE [KEY=VALUE ...]
 *
 * with the ids of guest-driver/include/bench_figures.txt (a runner test
 * checks that the ids here and the rxe figures there agree). The marker
 * comes from console_markers.sh: the runner passes it as -DPL_MARK_BENCH.
 * Progress goes to stderr. Exit 0 when every figure printed, 1 when one
 * failed (the reason, naming the call and errno, on stderr; the others
 * still run), 2 on bad usage or when there is no device to measure.
 *
 * Built by guest-driver/vm/build.py: gcc -O2 -Wall -Wextra -Werror, linked
 * dynamically against the host's libibverbs (the runner copies it, its
 * libraries and the rxe provider into the initramfs).
 */

#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <infiniband/verbs.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef PL_MARK_BENCH
#error "build with -DPL_MARK_BENCH='\"...\"' (guest-driver/include/console_markers.sh)"
#endif

#define SIDE		"rxe"
#define PAGE_SIZE	4096UL
#define MIB		(1UL << 20)
/* reg_1p/dereg_1p: MRs registered per round before they are deregistered. */
#define LAT_BATCH	64
/* reg_64m/reg_max: at least this many timed registrations, at most MAX. */
#define BIG_MIN_SAMPLES	3
#define BIG_MAX_SAMPLES	15
/* Every MR can be written locally and by the peer QP (the WRITE target). */
#define MR_ACCESS	(IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE)
#define QP_DEPTH	16

struct bench {
	double seconds;		/* timed loop length (S) */
	unsigned long max_mib;	/* reg_max size (M) */
	struct ibv_context *ctx;
	struct ibv_pd *pd;
	const char *dev_name;
};

static void progress(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "ibv-bench: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* A failed call: its name and what it was doing, errno's name and number. */
static int fail(const char *call, int err, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "ibv-bench: ERROR: %s(", call);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, ") failed: %s (errno %d)\n", strerror(err), err);
	return -1;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/*
 * A timed loop: `while (loop_more(&l)) { op; l.n++; }` runs the op for
 * 0.2 * S seconds untimed, then counts it for S seconds from t0 to t1.
 */
struct timed_loop {
	double seconds, t0, t1, end;
	unsigned long n;	/* ops counted; reset to 0 when timing starts */
	bool timed;
};

static void loop_start(struct timed_loop *l, double seconds)
{
	l->seconds = seconds;
	l->timed = false;
	l->n = 0;
	l->t0 = now();
	l->t1 = l->t0;
	l->end = l->t0 + 0.2 * seconds;
}

static bool loop_more(struct timed_loop *l)
{
	double t = now();

	if (t < l->end)
		return true;
	if (l->timed) {
		l->t1 = t;
		return false;
	}
	l->timed = true;
	l->t0 = t;
	l->end = t + l->seconds;
	l->n = 0;
	return true;
}

/* An anonymous private mapping of LEN bytes, every page written once. */
static void *touched_buffer(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		fail("mmap", errno, "%zu bytes", len);
		return NULL;
	}
	memset(p, 0x5a, len);
	return p;
}

static int reg(struct bench *b, void *addr, size_t len, struct ibv_mr **mr)
{
	*mr = ibv_reg_mr(b->pd, addr, len, MR_ACCESS);
	if (!*mr)
		return fail("ibv_reg_mr", errno, "%zu bytes", len);
	return 0;
}

static int dereg(struct ibv_mr *mr)
{
	size_t len = mr->length;
	int err = ibv_dereg_mr(mr);

	if (err)
		return fail("ibv_dereg_mr", err, "%zu bytes", len);
	return 0;
}

/*
 * regdereg_Np: REG + DEREG of the same N pages, as many pairs as fit in
 * S seconds after the warm-up; prints pairs/s.
 */
static int bench_regdereg(struct bench *b, const char *id, size_t pages)
{
	size_t len = pages * PAGE_SIZE;
	struct timed_loop l;
	struct ibv_mr *mr;
	int ret = -1;
	void *buf;

	buf = touched_buffer(len);
	if (!buf)
		return -1;
	for (loop_start(&l, b->seconds); loop_more(&l); l.n++)
		if (reg(b, buf, len, &mr) || dereg(mr))
			goto unmap;
	printf("%s %s %s %.1f n=%lu secs=%.3f pages=%zu\n", PL_MARK_BENCH,
	       SIDE, id, l.n / (l.t1 - l.t0), l.n, l.t1 - l.t0, pages);
	ret = 0;
unmap:
	munmap(buf, len);
	return ret;
}

/*
 * reg_1p and dereg_1p: rounds of LAT_BATCH one-page MRs (page i of a
 * buffer each): every REG timed alone, then every DEREG timed alone.
 * Rounds run for 0.2 * S untimed, then S timed; prints the mean of each.
 */
static int bench_reg_dereg_latency(struct bench *b)
{
	size_t len = LAT_BATCH * PAGE_SIZE;
	struct ibv_mr *mrs[LAT_BATCH];
	double reg_sum = 0, dereg_sum = 0, t;
	int i, got = 0, first = 0;
	struct timed_loop l;
	int ret = -1;
	void *buf;

	buf = touched_buffer(len);
	if (!buf)
		return -1;
	for (loop_start(&l, b->seconds); loop_more(&l); l.n += LAT_BATCH) {
		if (!l.n)	/* the warm-up's sums go */
			reg_sum = dereg_sum = 0;
		for (got = 0; got < LAT_BATCH; got++) {
			t = now();
			if (reg(b, (char *)buf + got * PAGE_SIZE, PAGE_SIZE,
				&mrs[got]))
				goto dereg_rest;
			reg_sum += now() - t;
		}
		for (first = 0; first < LAT_BATCH; first++) {
			t = now();
			if (dereg(mrs[first])) {
				first++;	/* the rest still go */
				goto dereg_rest;
			}
			dereg_sum += now() - t;
		}
		first = got = 0;
	}
	printf("%s %s %s %.2f n=%lu batch=%d\n", PL_MARK_BENCH, SIDE,
	       "reg_1p", reg_sum / l.n * 1e6, l.n, LAT_BATCH);
	printf("%s %s %s %.2f n=%lu batch=%d\n", PL_MARK_BENCH, SIDE,
	       "dereg_1p", dereg_sum / l.n * 1e6, l.n, LAT_BATCH);
	ret = 0;
dereg_rest:
	for (i = first; i < got; i++)
		ibv_dereg_mr(mrs[i]);
	munmap(buf, len);
	return ret;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/*
 * reg_64m and reg_max: the time of ONE registration of MIB MiB (the
 * DEREG after it untimed). One untimed pair warms up, then at least
 * BIG_MIN_SAMPLES timed ones, more while the S seconds last; prints the
 * median in ms.
 */
static int bench_big_reg(struct bench *b, const char *id, unsigned long mib)
{
	double samples[BIG_MAX_SAMPLES], t, end;
	size_t len = mib * MIB;
	struct ibv_mr *mr;
	int ret = -1, n;
	void *buf;

	progress("%s: touching %lu MiB", id, mib);
	buf = touched_buffer(len);
	if (!buf)
		return -1;
	if (reg(b, buf, len, &mr) || dereg(mr))
		goto unmap;
	end = now() + b->seconds;
	for (n = 0; n < BIG_MAX_SAMPLES &&
	     (n < BIG_MIN_SAMPLES || now() < end); n++) {
		t = now();
		if (reg(b, buf, len, &mr))
			goto unmap;
		samples[n] = now() - t;
		if (dereg(mr))
			goto unmap;
	}
	qsort(samples, n, sizeof(samples[0]), cmp_double);
	printf("%s %s %s %.3f n=%d bytes=%zu min_ms=%.3f max_ms=%.3f\n",
	       PL_MARK_BENCH, SIDE, id, samples[n / 2] * 1e3, n, len,
	       samples[0] * 1e3, samples[n - 1] * 1e3);
	ret = 0;
unmap:
	munmap(buf, len);
	return ret;
}

/* Two RC QPs of the device connected to each other, and their CQs. */
struct loopback {
	struct ibv_cq *cq[2];
	struct ibv_qp *qp[2];
};

/*
 * The GID the QPs address each other by: the port's RoCEv2 GID that maps
 * an IPv4 address (::ffff:a.b.c.d), i.e. the address the runner gave the
 * netdev under rxe. rxe speaks RoCEv2 only (UDP/IP); the IPv4 GID is the
 * one whose route is certain in the guest (a local address, so rxe loops
 * the packets back to itself), while the IPv6 link-local GID depends on
 * addrconf having finished on the netdev. Returns the index, or -1.
 */
static int roce_v2_ipv4_gid(struct bench *b, const struct ibv_port_attr *port,
			    union ibv_gid *gid)
{
	static const uint8_t v4_mapped[12] = { [10] = 0xff, [11] = 0xff };
	struct ibv_gid_entry e;
	int i, err;

	for (i = 0; i < port->gid_tbl_len; i++) {
		err = ibv_query_gid_ex(b->ctx, 1, i, &e, 0);
		if (err == ENODATA)
			continue;	/* an empty slot */
		if (err)
			return fail("ibv_query_gid_ex", err, "port 1, index %d",
				    i);
		if (e.gid_type == IBV_GID_TYPE_ROCE_V2 &&
		    !memcmp(e.gid.raw, v4_mapped, sizeof(v4_mapped))) {
			*gid = e.gid;
			return i;
		}
	}
	fprintf(stderr,
		"ibv-bench: ERROR: %s port 1 has no RoCEv2 GID of an IPv4 address among %d entries (does its netdev have an IPv4 address?)\n",
		b->dev_name, port->gid_tbl_len);
	return -1;
}

static int qp_to_rts(struct ibv_qp *qp, uint32_t peer_qpn,
		     const struct ibv_port_attr *port, int gid_index,
		     const union ibv_gid *gid)
{
	struct ibv_qp_attr a;
	int err;

	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_INIT;
	a.pkey_index = 0;
	a.port_num = 1;
	a.qp_access_flags = IBV_ACCESS_REMOTE_WRITE;
	err = ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX |
			    IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
	if (err)
		return fail("ibv_modify_qp", err, "QP %u to INIT", qp->qp_num);

	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTR;
	a.path_mtu = port->active_mtu;
	a.dest_qp_num = peer_qpn;
	a.rq_psn = 0;
	a.max_dest_rd_atomic = 1;
	a.min_rnr_timer = 12;
	a.ah_attr.is_global = 1;
	a.ah_attr.grh.dgid = *gid;
	a.ah_attr.grh.sgid_index = gid_index;
	a.ah_attr.grh.hop_limit = 1;
	a.ah_attr.port_num = 1;
	err = ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV |
			    IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
			    IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC |
			    IBV_QP_MIN_RNR_TIMER);
	if (err)
		return fail("ibv_modify_qp", err, "QP %u to RTR, peer QP %u, GID index %d",
			    qp->qp_num, peer_qpn, gid_index);

	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTS;
	a.timeout = 14;
	a.retry_cnt = 7;
	a.rnr_retry = 7;
	a.sq_psn = 0;
	a.max_rd_atomic = 1;
	err = ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_TIMEOUT |
			    IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
			    IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC);
	if (err)
		return fail("ibv_modify_qp", err, "QP %u to RTS", qp->qp_num);
	return 0;
}

static void loopback_destroy(struct loopback *lb)
{
	int i;

	for (i = 0; i < 2; i++) {
		if (lb->qp[i])
			ibv_destroy_qp(lb->qp[i]);
		if (lb->cq[i])
			ibv_destroy_cq(lb->cq[i]);
	}
}

static int loopback_create(struct bench *b, struct loopback *lb)
{
	struct ibv_qp_init_attr init;
	struct ibv_port_attr port;
	union ibv_gid gid;
	int err, i, gid_index;

	memset(lb, 0, sizeof(*lb));
	err = ibv_query_port(b->ctx, 1, &port);
	if (err)
		return fail("ibv_query_port", err, "%s port 1", b->dev_name);
	if (port.state != IBV_PORT_ACTIVE) {
		fprintf(stderr, "ibv-bench: ERROR: %s port 1 is %s, not ACTIVE (is its netdev up?)\n",
			b->dev_name, ibv_port_state_str(port.state));
		return -1;
	}
	gid_index = roce_v2_ipv4_gid(b, &port, &gid);
	if (gid_index < 0)
		return -1;
	progress("QPs on %s port 1: RoCEv2 IPv4 GID index %d, MTU %d",
		 b->dev_name, gid_index, 128 << port.active_mtu);

	for (i = 0; i < 2; i++) {
		lb->cq[i] = ibv_create_cq(b->ctx, QP_DEPTH, NULL, NULL, 0);
		if (!lb->cq[i]) {
			fail("ibv_create_cq", errno, "%d entries", QP_DEPTH);
			goto destroy;
		}
		memset(&init, 0, sizeof(init));
		init.send_cq = lb->cq[i];
		init.recv_cq = lb->cq[i];
		init.qp_type = IBV_QPT_RC;
		init.sq_sig_all = 0;
		init.cap.max_send_wr = QP_DEPTH;
		init.cap.max_recv_wr = 1;
		init.cap.max_send_sge = 1;
		init.cap.max_recv_sge = 1;
		lb->qp[i] = ibv_create_qp(b->pd, &init);
		if (!lb->qp[i]) {
			fail("ibv_create_qp", errno, "RC, %d send WRs", QP_DEPTH);
			goto destroy;
		}
	}
	for (i = 0; i < 2; i++)
		if (qp_to_rts(lb->qp[i], lb->qp[!i]->qp_num, &port, gid_index,
			      &gid))
			goto destroy;
	return 0;
destroy:
	loopback_destroy(lb);
	return -1;
}

/* One signaled RDMA WRITE of LEN bytes from SRC to DST; waits for it. */
static int write_once(struct loopback *lb, struct ibv_mr *src,
		      struct ibv_mr *dst, size_t len)
{
	struct ibv_sge sge = {
		.addr = (uintptr_t)src->addr,
		.length = len,
		.lkey = src->lkey,
	};
	struct ibv_send_wr wr = {
		.wr_id = 1,
		.sg_list = &sge,
		.num_sge = 1,
		.opcode = IBV_WR_RDMA_WRITE,
		.send_flags = IBV_SEND_SIGNALED,
		.wr.rdma.remote_addr = (uintptr_t)dst->addr,
		.wr.rdma.rkey = dst->rkey,
	};
	struct ibv_send_wr *bad;
	struct ibv_wc wc;
	int err, got;

	err = ibv_post_send(lb->qp[0], &wr, &bad);
	if (err)
		return fail("ibv_post_send", err, "RDMA WRITE of %zu bytes", len);
	do
		got = ibv_poll_cq(lb->cq[0], 1, &wc);
	while (got == 0);
	if (got < 0)
		return fail("ibv_poll_cq", -got, "send CQ");
	if (wc.status != IBV_WC_SUCCESS) {
		fprintf(stderr, "ibv-bench: ERROR: RDMA WRITE of %zu bytes completed with %s (status %d, vendor_err %u)\n",
			len, ibv_wc_status_str(wc.status), wc.status, wc.vendor_err);
		return -1;
	}
	return 0;
}

/*
 * write_4k_qd1 and write_1m_qd1: WRITEs of LEN bytes from one MR to
 * another through the loopback QPs, one in flight; prints MiB/s. The
 * first WRITE's data is checked, so a loop that moves nothing cannot pass
 * for a fast one.
 */
static int bench_write(struct bench *b, struct loopback *lb, const char *id,
		       size_t len)
{
	struct ibv_mr *src, *dst;
	struct timed_loop l;
	char *sbuf, *dbuf;
	int ret = -1;

	sbuf = touched_buffer(len);
	if (!sbuf)
		return -1;
	dbuf = touched_buffer(len);
	if (!dbuf)
		goto unmap_src;
	memset(dbuf, 0, len);
	if (reg(b, sbuf, len, &src))
		goto unmap_dst;
	if (reg(b, dbuf, len, &dst))
		goto dereg_src;
	if (write_once(lb, src, dst, len))
		goto dereg_dst;
	if (memcmp(sbuf, dbuf, len)) {
		fprintf(stderr, "ibv-bench: ERROR: %s: the RDMA WRITE's target differs from its source after completion\n",
			id);
		goto dereg_dst;
	}
	for (loop_start(&l, b->seconds); loop_more(&l); l.n++)
		if (write_once(lb, src, dst, len))
			goto dereg_dst;
	printf("%s %s %s %.1f n=%lu secs=%.3f bytes=%zu\n", PL_MARK_BENCH,
	       SIDE, id, (double)l.n * len / MIB / (l.t1 - l.t0), l.n,
	       l.t1 - l.t0, len);
	ret = 0;
dereg_dst:
	ibv_dereg_mr(dst);
dereg_src:
	ibv_dereg_mr(src);
unmap_dst:
	munmap(dbuf, len);
unmap_src:
	munmap(sbuf, len);
	return ret;
}

static int bench_writes(struct bench *b)
{
	struct loopback lb;
	int failed = 0;

	if (loopback_create(b, &lb))
		return 2;	/* both WRITE figures are missing */
	failed += !!bench_write(b, &lb, "write_4k_qd1", 4096);
	failed += !!bench_write(b, &lb, "write_1m_qd1", MIB);
	loopback_destroy(&lb);
	return failed;
}

/* The first device, or the one named NAME; opened, with a PD. */
static int open_device(struct bench *b, const char *name)
{
	struct ibv_device **list, *dev = NULL;
	int i, n;

	list = ibv_get_device_list(&n);
	if (!list)
		return fail("ibv_get_device_list", errno, "");
	for (i = 0; i < n && !dev; i++)
		if (!name || !strcmp(ibv_get_device_name(list[i]), name))
			dev = list[i];
	if (!dev) {
		fprintf(stderr, "ibv-bench: ERROR: %s among the %d RDMA devices libibverbs found (is the provider in /etc/libibverbs.d and is /sys/class/infiniband_verbs populated?)\n",
			name ? name : "no device", n);
		ibv_free_device_list(list);
		return -1;
	}
	b->dev_name = strdup(ibv_get_device_name(dev));
	b->ctx = ibv_open_device(dev);
	ibv_free_device_list(list);
	if (!b->ctx)
		return fail("ibv_open_device", errno, "%s", b->dev_name);
	b->pd = ibv_alloc_pd(b->ctx);
	if (!b->pd) {
		fail("ibv_alloc_pd", errno, "%s", b->dev_name);
		ibv_close_device(b->ctx);
		return -1;
	}
	return 0;
}

static void bad_usage(void)
{
	fprintf(stderr, "usage: ibv-bench --seconds S --max-mib M [--dev NAME]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "seconds", required_argument, NULL, 's' },
		{ "max-mib", required_argument, NULL, 'm' },
		{ "dev", required_argument, NULL, 'd' },
		{ NULL, 0, NULL, 0 },
	};
	struct bench b = { .seconds = 0 };
	const char *dev = NULL;
	char *end;
	int c, failed = 0;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			b.seconds = strtod(optarg, &end);
			if (*end || !(b.seconds > 0)) {
				fprintf(stderr, "ibv-bench: --seconds: want a positive number, got '%s'\n",
					optarg);
				return 2;
			}
			break;
		case 'm':
			b.max_mib = strtoul(optarg, &end, 10);
			if (*end || !b.max_mib) {
				fprintf(stderr, "ibv-bench: --max-mib: want a positive integer, got '%s'\n",
					optarg);
				return 2;
			}
			break;
		case 'd':
			dev = optarg;
			break;
		default:
			bad_usage();
		}
	}
	if (optind != argc || !b.seconds || !b.max_mib)
		bad_usage();
	/* One line per figure, in order with the progress on stderr. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (open_device(&b, dev))
		return 2;
	progress("device %s, %.2f s loops, reg_max %lu MiB", b.dev_name,
		 b.seconds, b.max_mib);

	failed += !!bench_regdereg(&b, "regdereg_1p", 1);
	failed += !!bench_regdereg(&b, "regdereg_256p", 256);
	failed += !!bench_regdereg(&b, "regdereg_65536p", 65536);
	failed += bench_reg_dereg_latency(&b) ? 2 : 0;
	failed += bench_writes(&b);
	failed += !!bench_big_reg(&b, "reg_64m", 64);
	failed += !!bench_big_reg(&b, "reg_max", b.max_mib);

	ibv_dealloc_pd(b.pd);
	ibv_close_device(b.ctx);
	if (failed) {
		progress("%d figure(s) not measured (see the errors above)", failed);
		return 1;
	}
	return 0;
}
