// SPDX-License-Identifier: GPL-2.0
/*
 * pinlease smoke test: one static binary run inside the guest (see
 * selftest/init.sh). Prints ok/FAIL lines; exit status = failures != 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <signal.h>
#include <sys/wait.h>
#include "pinlease_abi.h"
#include "pinlease_uapi.h"

static int fails;
#define CHECK(c, ...) do { if (c) printf("ok   " __VA_ARGS__); else { fails++; printf("FAIL " __VA_ARGS__); printf("     (%s:%d errno %d %s)\n", __FILE__, __LINE__, errno, strerror(errno)); } printf("\n"); } while (0)

static int reg(int fd, void *p, size_t len, uint32_t access, uint32_t flags, struct pinlease_reg_mr *r)
{
	memset(r, 0, sizeof(*r));
	r->addr = (uintptr_t)p; r->length = len; r->access = access; r->flags = flags;
	return ioctl(fd, PINLEASE_IOC_REG_MR, r);
}

static int dma(int fd, uint32_t op, uint64_t lk, uint64_t lo, uint64_t rk, uint64_t ro, uint64_t len, uint64_t operand, uint64_t swap, uint32_t mode, struct pinlease_dma *d)
{
	memset(d, 0, sizeof(*d));
	d->op = op; d->local_key = lk; d->local_offset = lo; d->remote_key = rk; d->remote_offset = ro;
	d->length = len; d->operand = operand; d->swap = swap; d->mode = mode;
	return ioctl(fd, PINLEASE_IOC_DMA, d);
}

static void cat(const char *path)
{
	char buf[4096]; int fd = open(path, O_RDONLY); ssize_t n;
	printf("--- %s\n", path);
	if (fd < 0) { printf("(open: %s)\n", strerror(errno)); return; }
	while ((n = read(fd, buf, sizeof(buf))) > 0) fwrite(buf, 1, n, stdout);
	close(fd);
}

static void fdinfo(int fd)
{
	char p[64]; snprintf(p, sizeof(p), "/proc/self/fdinfo/%d", fd); cat(p);
}

static int read_events(int efd, int timeout_ms, struct pl_event *out, int max)
{
	struct pollfd pfd = { .fd = efd, .events = POLLIN };
	int n = 0;
	while (n < max && poll(&pfd, 1, timeout_ms) > 0) {
		ssize_t r = read(efd, &out[n], sizeof(out[0]) * (max - n));
		if (r <= 0) break;
		n += r / sizeof(out[0]);
		timeout_ms = 300;
	}
	return n;
}

static int basic(void)
{
	struct pinlease_query q; struct pinlease_reg_mr ra, rb, rf, rbig; struct pinlease_dma d;
	struct pinlease_import_mr im; struct pl_event ev[16];
	size_t len = 64 * 1024; int fd, fd2, efd, efd2, xfd, i, n;
	uint8_t *a, *b;

	fd = open("/dev/pinlease0", O_RDWR);
	CHECK(fd >= 0, "open /dev/pinlease0");
	if (fd < 0) return 1;
	CHECK(ioctl(fd, PINLEASE_IOC_QUERY, &q) == 0, "QUERY abi %u page %u features %#llx virtio_id %u ctx %#llx max_pages %u",
	      q.abi_version, q.page_size, (unsigned long long)q.features, q.virtio_id, (unsigned long long)q.ctx, q.max_pages_per_mr);
	a = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	b = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	for (i = 0; i < (int)len; i++) { a[i] = i * 7 + 3; b[i] = 0; }
	CHECK(reg(fd, a + 100, len - 100, PL_ACCESS_ALL, 0, &ra) == 0, "REG_MR A key %#llx npages %u lease %#llx", (unsigned long long)ra.key, ra.npages, (unsigned long long)ra.lease);
	CHECK(ra.npages == 16, "A npages 16 (offset 100)");
	CHECK(reg(fd, b, len, PL_ACCESS_ALL, 0, &rb) == 0, "REG_MR B key %#llx npages %u", (unsigned long long)rb.key, rb.npages);
	efd = ioctl(fd, PINLEASE_IOC_EVENT_FD);
	CHECK(efd >= 0, "EVENT_FD %d", efd);
	CHECK(fcntl(efd, F_GETFD) & FD_CLOEXEC, "event fd is O_CLOEXEC");

	CHECK(dma(fd, PL_OP_WRITE, ra.key, 0, rb.key, 8, 10000, 0, 0, 0, &d) == 0, "DMA WRITE A->B 10000 bytes");
	CHECK(memcmp(a + 100, b + 8, 10000) == 0 && b[7] == 0 && b[10008] == 0, "B holds A's bytes (unaligned, across pages)");
	memset(a + 100, 0, 8192);
	CHECK(dma(fd, PL_OP_READ, ra.key, 0, rb.key, 8, 8192, 0, 0, 0, &d) == 0, "DMA READ B->A 8192");
	CHECK(memcmp(a + 100, b + 8, 8192) == 0, "A holds B's bytes again");
	CHECK(dma(fd, PL_OP_FILL, 0, 0, rb.key, 0, len, 0x1122334455667788ULL, 0, PL_PATTERN_OFFSET_XOR, &d) == 0, "FILL B offset-xor");
	CHECK(((uint64_t *)b)[5] == (0x1122334455667788ULL ^ 40), "B word 5 = pattern ^ 40 (%#llx)", (unsigned long long)((uint64_t *)b)[5]);
	CHECK(dma(fd, PL_OP_VERIFY, 0, 0, rb.key, 0, len, 0x1122334455667788ULL, 0, PL_PATTERN_OFFSET_XOR, &d) == 0 && d.result[0] == 0, "VERIFY B: %llu mismatches", (unsigned long long)d.result[0]);
	((uint64_t *)b)[100] = 0;
	CHECK(dma(fd, PL_OP_VERIFY, 0, 0, rb.key, 0, len, 0x1122334455667788ULL, 0, PL_PATTERN_OFFSET_XOR, &d) == 0 && d.result[0] == 1 && d.result[1] == 800,
	      "VERIFY after CPU write: %llu mismatch at %llu value %#llx", (unsigned long long)d.result[0], (unsigned long long)d.result[1], (unsigned long long)d.result[2]);
	((uint64_t *)b)[1] = 40;
	CHECK(dma(fd, PL_OP_FETCH_ADD, 0, 0, rb.key, 8, 0, 2, 0, 0, &d) == 0 && d.result[0] == 40 && ((uint64_t *)b)[1] == 42, "FETCH_ADD original %llu now %llu", (unsigned long long)d.result[0], (unsigned long long)((uint64_t *)b)[1]);
	CHECK(dma(fd, PL_OP_COMPARE_SWAP, 0, 0, rb.key, 8, 0, 42, 7, 0, &d) == 0 && d.result[0] == 42 && ((uint64_t *)b)[1] == 7, "COMPARE_SWAP 42->7");
	CHECK(dma(fd, PL_OP_COMPARE_SWAP, 0, 0, rb.key, 12, 0, 42, 7, 0, &d) == -1 && errno == EINVAL, "misaligned atomic -> EINVAL");
	CHECK(dma(fd, PL_OP_NOP, 0, 0, 0, 0, 0, 0, 0, 0, &d) == -1 && errno == EINVAL, "DMA op NOP -> EINVAL");
	CHECK(dma(fd, PL_OP_WRITE, ra.key, 0, rb.key, len - 4, 8, 0, 0, 0, &d) == -1 && errno == ERANGE, "DMA past the MR -> ERANGE");
	CHECK(dma(fd, PL_OP_WRITE, ra.key, 0, 0x12345678ULL, 0, 8, 0, 0, 0, &d) == -1 && errno == ENOENT, "DMA bad key -> ENOENT");

	/* errors of REG_MR */
	CHECK(reg(fd, (void *)0x1000, 4096, PL_ACCESS_READ, 0, &rf) == -1 && errno == EFAULT, "REG_MR unmapped -> EFAULT");
	CHECK(reg(fd, a, 4096, PL_ACCESS_WRITE, PINLEASE_PIN_READONLY, &rf) == -1 && errno == EINVAL, "REG_MR write access with READONLY pin -> EINVAL");
	CHECK(reg(fd, a, 0, PL_ACCESS_READ, 0, &rf) == -1 && errno == EINVAL, "REG_MR length 0 -> EINVAL");

	/* file-backed MR (tmpfs/ramfs file, shared mapping) */
	{
		int ffd = open("/tmp/plfile", O_RDWR | O_CREAT | O_TRUNC, 0600);
		uint8_t *f;
		ftruncate(ffd, 1 << 20);
		f = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, ffd, 0);
		CHECK(reg(fd, f + 8192 + 16, 4096, PL_ACCESS_ALL, 0, &rf) == 0, "REG_MR of a shared file mapping: key %#llx", (unsigned long long)rf.key);
		CHECK(reg(fd, f, 4096, PL_ACCESS_READ, PINLEASE_PIN_READONLY | PINLEASE_PIN_SHORTTERM, &rbig) == 0, "REG_MR read-only short-term pin");
		CHECK(ioctl(fd, PINLEASE_IOC_DEREG_MR, &rbig.key) == 0, "DEREG read-only MR");
		close(ffd);
	}
	/* large MR: batches and several page-list chunks */
	{
		size_t big = 48u << 20;
		uint8_t *g = mmap(NULL, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
		CHECK(reg(fd, g, big, PL_ACCESS_ALL, 0, &rbig) == 0 && rbig.npages == big / 4096, "REG_MR 48 MiB: %u pages", rbig.npages);
		CHECK(dma(fd, PL_OP_FILL, 0, 0, rbig.key, big - 4096, 4096, 0xabcdef, 0, 0, &d) == 0 && ((uint64_t *)(g + big - 8))[0] == 0xabcdef, "FILL last page of 48 MiB MR");
	}
	fdinfo(fd);
	fdinfo(efd);
	cat("/sys/kernel/debug/pinlease/pinlease0/contexts");
	cat("/sys/kernel/debug/pinlease/pinlease0/mrs");

	/* export / import between two contexts */
	xfd = ioctl(fd, PINLEASE_IOC_EXPORT_MR, &ra.key);
	CHECK(xfd >= 0, "EXPORT_MR A -> fd %d", xfd);
	fdinfo(xfd);
	fd2 = open("/dev/pinlease0", O_RDWR);
	efd2 = ioctl(fd2, PINLEASE_IOC_EVENT_FD);
	memset(&im, 0, sizeof(im)); im.export_fd = xfd; im.access = PL_ACCESS_READ;
	CHECK(ioctl(fd2, PINLEASE_IOC_IMPORT_MR, &im) == 0, "IMPORT_MR in ctx2: key %#llx", (unsigned long long)im.key);
	memset(&im, 0, sizeof(im)); im.export_fd = efd; im.access = PL_ACCESS_READ;
	CHECK(ioctl(fd2, PINLEASE_IOC_IMPORT_MR, &im) == -1 && errno == EINVAL, "IMPORT_MR of a non-export fd -> EINVAL");
	memset(&im, 0, sizeof(im)); im.export_fd = xfd; im.access = PL_ACCESS_READ;
	ioctl(fd2, PINLEASE_IOC_IMPORT_MR, &im);
	{
		struct pinlease_reg_mr r2; uint8_t *c = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		CHECK(reg(fd2, c, 8192, PL_ACCESS_ALL, 0, &r2) == 0, "ctx2 REG_MR C");
		CHECK(dma(fd2, PL_OP_READ, r2.key, 0, im.key, 0, 4096, 0, 0, 0, &d) == 0 && memcmp(c, a + 100, 4096) == 0, "ctx2 READ through the imported MR");
	}
	CHECK(ioctl(fd, PINLEASE_IOC_DEREG_MR, &ra.key) == 0, "DEREG A (source of the import)");
	CHECK(ioctl(fd, PINLEASE_IOC_DEREG_MR, &ra.key) == -1 && errno == ESTALE, "DEREG A again -> ESTALE");
	n = read_events(efd2, 3000, ev, 16);
	CHECK(n >= 1, "ctx2 got %d event(s)", n);
	for (i = 0; i < n; i++)
		printf("     event kind %u ctx %#llx seq %llu args %#llx %llu %llu %#llx\n", ev[i].kind, (unsigned long long)ev[i].ctx,
		       (unsigned long long)ev[i].seq, (unsigned long long)ev[i].args[0], (unsigned long long)ev[i].args[1],
		       (unsigned long long)ev[i].args[2], (unsigned long long)ev[i].args[3]);
	CHECK(n >= 1 && ev[0].kind == PL_EVENT_MR_REVOKED && ev[0].args[1] == PL_REVOKE_SOURCE_GONE, "MR_REVOKED SOURCE_GONE for the import");
	fdinfo(fd2);
	CHECK(dma(fd2, PL_OP_VERIFY, 0, 0, im.key, 0, 8, 0, 0, 0, &d) == -1 && errno == ECANCELED, "revoked import -> ECANCELED");

	if (getenv("PL_HOLD")) { printf("holding %s s\n", getenv("PL_HOLD")); fflush(stdout); sleep(atoi(getenv("PL_HOLD"))); }

	/* close the device fd first: children keep the context */
	close(fd);
	n = read_events(efd, 3000, ev, 16);
	CHECK(n >= 1 && ev[n - 1].kind == PL_EVENT_CONTEXT_TORN_DOWN, "ctx1 TORN_DOWN on its event fd after close (%d events, last kind %u, mrs %llu pages %llu)",
	      n, n ? ev[n - 1].kind : 0, n ? (unsigned long long)ev[n - 1].args[0] : 0, n ? (unsigned long long)ev[n - 1].args[2] : 0);
	cat("/sys/kernel/debug/pinlease/pinlease0/contexts");
	close(efd); close(xfd);
	close(fd2); close(efd2);
	usleep(200000);
	cat("/sys/kernel/debug/pinlease/pinlease0/contexts");
	cat("/sys/kernel/debug/pinlease/pinlease0/mrs");
	return 0;
}

static int reset_test(void)
{
	struct pinlease_reg_mr r; struct pinlease_dma d; struct pinlease_query q;
	int fd = open("/dev/pinlease0", O_RDWR), efd, rfd;
	uint8_t *a = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(reg(fd, a, 8192, PL_ACCESS_ALL, 0, &r) == 0, "reset test: REG_MR");
	efd = ioctl(fd, PINLEASE_IOC_EVENT_FD);
	rfd = open("/sys/kernel/debug/pinlease/pinlease0/reset", O_WRONLY);
	CHECK(write(rfd, "1", 1) == 1, "debugfs reset");
	close(rfd);
	CHECK(dma(fd, PL_OP_FILL, 0, 0, r.key, 0, 8, 1, 0, 0, &d) == -1 && errno == ESTALE, "ioctl after reset -> ESTALE");
	{ struct pollfd p = { .fd = efd, .events = POLLIN }; CHECK(poll(&p, 1, 1000) == 1 && (p.revents & POLLHUP), "event fd POLLHUP after reset"); }
	cat("/sys/kernel/debug/pinlease/pinlease0/contexts");
	close(efd);
	close(fd);
	fd = open("/dev/pinlease0", O_RDWR);
	CHECK(fd >= 0 && ioctl(fd, PINLEASE_IOC_QUERY, &q) == 0, "open after reset: ctx %#llx", (unsigned long long)q.ctx);
	CHECK(reg(fd, a, 8192, PL_ACCESS_ALL, 0, &r) == 0 && dma(fd, PL_OP_FILL, 0, 0, r.key, 0, 8, 5, 0, 0, &d) == 0 && ((uint64_t *)a)[0] == 5, "REG_MR + FILL after reset");
	close(fd);
	return 0;
}

/* hold a context with pins open, unbind the driver, expect ENODEV, close */
static int unbind_test(const char *devname)
{
	struct pinlease_reg_mr r; struct pinlease_dma d;
	int fd = open("/dev/pinlease0", O_RDWR), efd, ufd;
	uint8_t *a = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(reg(fd, a, 8192, PL_ACCESS_ALL, 0, &r) == 0, "unbind test: REG_MR");
	efd = ioctl(fd, PINLEASE_IOC_EVENT_FD);
	ufd = open("/sys/bus/virtio/drivers/pinlease/unbind", O_WRONLY);
	CHECK(write(ufd, devname, strlen(devname)) == (ssize_t)strlen(devname), "unbind %s with fds open", devname);
	close(ufd);
	CHECK(dma(fd, PL_OP_FILL, 0, 0, r.key, 0, 8, 1, 0, 0, &d) == -1 && errno == ENODEV, "ioctl after unbind -> ENODEV");
	CHECK(access("/dev/pinlease0", F_OK) != 0, "/dev/pinlease0 gone");
	fdinfo(fd);
	close(fd);
	close(efd);
	ufd = open("/sys/bus/virtio/drivers/pinlease/bind", O_WRONLY);
	CHECK(write(ufd, devname, strlen(devname)) == (ssize_t)strlen(devname), "rebind %s", devname);
	close(ufd);
	fd = open("/dev/pinlease0", O_RDWR);
	CHECK(fd >= 0 && reg(fd, a, 8192, PL_ACCESS_ALL, 0, &r) == 0, "open + REG_MR after rebind");
	close(fd);
	return 0;
}

/* SIGKILL in the middle of a large REG_MR; concurrent DMA from several processes */
static int stress_test(void)
{
	int i, st, ok = 1;
	pid_t pid = fork();
	if (pid == 0) {
		int fd = open("/dev/pinlease0", O_RDWR); struct pinlease_reg_mr r;
		size_t big = 256u << 20;
		uint8_t *g = mmap(NULL, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		printf("     child: REG_MR 256 MiB (faulting in)\n");
		reg(fd, g, big, PL_ACCESS_ALL, 0, &r);
		printf("     child: REG_MR finished before the kill (errno %d)\n", errno);
		pause();
		_exit(0);
	}
	usleep(300000);
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	CHECK(WIFSIGNALED(st), "SIGKILL during a 256 MiB REG_MR");
	for (i = 0; i < 4; i++) {
		if (fork() == 0) {
			struct pinlease_reg_mr r; struct pinlease_dma d; int k, bad = 0;
			int fd = open("/dev/pinlease0", O_RDWR);
			uint8_t *a = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (fd < 0 || reg(fd, a, 65536, PL_ACCESS_ALL, 0, &r)) _exit(2);
			for (k = 0; k < 200; k++) {
				if (dma(fd, PL_OP_FILL, 0, 0, r.key, 0, 65536, k * 1000 + i, 0, 0, &d) ||
				    ((uint64_t *)a)[8191] != (uint64_t)(k * 1000 + i))
					bad++;
				if (k % 50 == 0) { int f2 = open("/dev/pinlease0", O_RDWR); int e = ioctl(f2, PINLEASE_IOC_EVENT_FD); close(f2); close(e); }
			}
			_exit(bad ? 1 : 0);
		}
	}
	for (i = 0; i < 4; i++) { wait(&st); if (!WIFEXITED(st) || WEXITSTATUS(st)) ok = 0; }
	CHECK(ok, "4 processes x 200 FILL + open/close churn");
	usleep(300000);
	cat("/sys/kernel/debug/pinlease/pinlease0/contexts");
	cat("/sys/kernel/debug/pinlease/pinlease0/mrs");
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc > 1 && !strcmp(argv[1], "reset"))
		reset_test();
	else if (argc > 1 && !strcmp(argv[1], "stress"))
		stress_test();
	else if (argc > 2 && !strcmp(argv[1], "unbind"))
		unbind_test(argv[2]);
	else
		basic();
	printf("%s: %d failure(s)\n", argv[0], fails);
	return fails != 0;
}
