//! Section 3: WRITE bandwidth against memcpy.

use std::collections::HashMap;
use std::hint::black_box;

use pinlease::guest_ram::MmapRam;
use pinlease::model::{Device, DmaDir, Limits, RegMr};
use pinlease_abi::*;
use pinlease_testkit::frontend::client::{encode_request, Client, RegMrArgs};
use vm_memory::{GuestAddress, GuestMemoryBackend};

use crate::machine::Mode;
use crate::measure::{cpu_ns, measure, PerOp};
use crate::prebuilt::{interleaved_with_nop, nop_request, Pipeline, Prebuilt};
use crate::report::{fmt_gbs, fmt_us, Report};
use crate::{KIB, MIB, PAGE, REPS_MICRO, REPS_RT};

/// A page-aligned heap buffer (a plain `Vec` of 1 MiB comes from mmap at
/// 16 bytes past a page boundary, which slows memcpy down).
pub(crate) struct Aligned {
    pub(crate) buf: Vec<u8>,
    pub(crate) off: usize,
}

impl Aligned {
    pub(crate) fn new(len: usize, fill: u8) -> Aligned {
        let buf = vec![fill; len + PAGE as usize];
        let off = buf.as_ptr().align_offset(PAGE as usize);
        Aligned { buf, off }
    }

    pub(crate) fn ptr(&mut self) -> *mut u8 {
        self.buf[self.off..].as_mut_ptr()
    }
}

/// memcpy rates of the default pass, bytes/s, by length: the faster of
/// heap and memfd memcpy.
pub(crate) type Memcpy = HashMap<u64, f64>;

pub(crate) fn bench_write(
    rep: &mut Report,
    c: &mut Client,
    daemon_pid: u32,
    ctx: u64,
    mode: Mode,
    memcpy: &mut Memcpy,
) {
    eprintln!("3. WRITE bandwidth and memcpy{}", mode.name(""));
    let mr_len = MIB;
    let npages = (mr_len / PAGE) as usize;
    let src_pages = c.alloc_pages(npages).expect("guest pages");
    let dst_pages = c.alloc_pages(npages).expect("guest pages");
    let src = c
        .reg_mr(ctx, &RegMrArgs::pages(PL_ACCESS_READ, &src_pages))
        .expect("source MR")
        .key;
    let dst = c
        .reg_mr(ctx, &RegMrArgs::pages(PL_ACCESS_WRITE, &dst_pages))
        .expect("destination MR")
        .key;
    let fe = c.frontend_mut();
    // Touch both MRs so no page fault is timed.
    fe.write_mem(src_pages[0], &vec![0x5a; mr_len as usize])
        .expect("fill source");
    fe.write_mem(dst_pages[0], &vec![0; mr_len as usize])
        .expect("fill destination");
    let host = |gpa: u64| {
        fe.memory()
            .get_host_address(GuestAddress(gpa))
            .expect("host address of guest memory")
    };
    let (gsrc, gdst) = (host(src_pages[0]), host(dst_pages[0]));
    let mut heap_src = Aligned::new(mr_len as usize, 0x5a);
    let mut heap_dst = Aligned::new(mr_len as usize, 0);

    // The daemon's WRITE code (Device::dma) called directly in this
    // process, on the same guest pages: the copy without the transport.
    let model = Device::new(Limits::default());
    model.set_memory(Box::new(MmapRam::new(fe.memory().clone())));
    let mctx = model.create_context(1, "bench").expect("model context");
    let mr = |access, pages: &[u64]| {
        model
            .reg_mr(
                mctx,
                RegMr {
                    access,
                    flags: 0,
                    first_page_offset: 0,
                    length: mr_len,
                    file: None,
                    pages: pages.to_vec(),
                },
            )
            .expect("model REG_MR")
            .key
    };
    let (msrc, mdst) = (
        mr(PL_ACCESS_READ, &src_pages),
        mr(PL_ACCESS_WRITE, &dst_pages),
    );
    let nop = Prebuilt::new(fe, &nop_request(), 16);

    for len in [4 * KIB, MIB] {
        let req = PlDmaReq {
            local_key: src,
            local_offset: 0,
            remote_key: dst,
            remote_offset: 0,
            length: len,
        };
        let w = Prebuilt::new(
            fe,
            &encode_request(Opcode::Write as u16, ctx, 1, req.as_bytes()),
            16,
        );
        // WRITEs and NOPs take turns.
        let rates = interleaved_with_nop(fe, &nop, |fe| {
            w.ok(fe, 16);
            len
        });
        let (n, write) = (&rates[0], &rates[1]);
        let nop_cpu = PerOp::measure(daemon_pid, 2000, || nop.ok(fe, 16));
        let cpu = PerOp::measure(daemon_pid, 2000, || w.ok(fe, 16));
        // memcpy of the same size, batched to about 1 MiB per call so the
        // clock is not read every 4 KiB.
        let batch = (MIB / len).max(1);
        let copy = |s: *const u8, d: *mut u8, piece: u64| {
            measure(REPS_MICRO, || {
                for _ in 0..batch {
                    let mut off = 0;
                    while off < len {
                        let n = piece.min(len - off) as usize;
                        // SAFETY: s and d point at mr_len >= len valid
                        // bytes each (heap buffers alive for the whole
                        // function, or guest memory mapped while the
                        // frontend lives), and the two ranges do not
                        // overlap.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                black_box(s.add(off as usize)),
                                black_box(d.add(off as usize)),
                                n,
                            )
                        };
                        off += n as u64;
                    }
                }
                black_box(d);
                batch * len
            })
        };
        if mode.full {
            let heap = copy(heap_src.ptr(), heap_dst.ptr(), len);
            let guest = copy(gsrc as *const u8, gdst, len);
            memcpy.insert(len, heap.median.max(guest.median));
            rep.row(
                "3",
                format!("memcpy {} heap -> heap (page aligned)", human(len)),
                fmt_gbs(heap.median),
                "",
                format!("spread {}", heap.spread()),
            );
            rep.row(
                "3",
                format!(
                    "memcpy {} guest memfd -> guest memfd (the MRs' pages)",
                    human(len)
                ),
                fmt_gbs(guest.median),
                "",
                format!("spread {}", guest.spread()),
            );
        }
        let best = memcpy.get(&len).copied().unwrap_or(f64::NAN);
        let ratio = write.median / best;
        rep.row(
            "3",
            mode.name(format!(
                "WRITE {} MR->MR, QD1 (1 in flight, latency-bound)",
                human(len)
            )),
            fmt_gbs(write.median),
            format!("{ratio:.3} x memcpy"),
            format!(
                "{} per WRITE; NOP taking turns with it {}; spread {}",
                fmt_us(len as f64 / write.median),
                fmt_us(1.0 / n.median),
                write.spread()
            ),
        );
        rep.row(
            "3",
            mode.name(format!(
                "  WRITE {}, where the time goes (2000 runs)",
                human(len)
            )),
            fmt_us(cpu.wall),
            "",
            format!(
                "{}; daemon on-CPU beyond a NOP's ({}): {}; memcpy of {} takes {}",
                cpu.describe(),
                fmt_us(nop_cpu.daemon),
                fmt_us(cpu.daemon - nop_cpu.daemon),
                human(len),
                fmt_us(len as f64 / best)
            ),
        );
        if mode.full {
            let mreq = PlDmaReq {
                local_key: msrc,
                remote_key: mdst,
                ..req
            };
            let direct = measure(REPS_MICRO, || {
                for _ in 0..batch {
                    model
                        .dma(mctx, DmaDir::Write, black_box(&mreq))
                        .expect("model WRITE");
                }
                batch * len
            });
            rep.row(
                "3",
                format!(
                    "  model only: Device::dma {} in this process, no transport",
                    human(len)
                ),
                fmt_gbs(direct.median),
                format!("{:.3} x memcpy", direct.median / best),
                format!(
                    "the daemon's copy code on the same guest pages; spread {}",
                    direct.spread()
                ),
            );
            if len == MIB {
                // DMA_CHUNK in src/model/device.rs (private there).
                let pieces = copy(gsrc as *const u8, gdst, 256 * KIB);
                rep.row(
                    "3",
                    "  memcpy 1 MiB in 256 KiB pieces, guest memfd (as Device::dma splits it)",
                    fmt_gbs(pieces.median),
                    format!("{:.3} x memcpy", pieces.median / best),
                    format!("spread {}", pieces.spread()),
                );
            }
        }
        // Bandwidth: `depth` WRITEs in flight (as ib_write_bw's tx depth);
        // 2 descriptors each, the queue has 256.
        let wreq = encode_request(Opcode::Write as u16, ctx, 1, req.as_bytes());
        let mut best_qd = (1, write.median);
        for depth in [8usize, 32] {
            let mut pipe = Pipeline::new(fe, &wreq, 16, depth);
            let cpu0 = cpu_ns(daemon_pid);
            let piped = measure(REPS_RT, || {
                pipe.complete_one(fe, 16);
                len
            });
            let daemon_us = (cpu_ns(daemon_pid) - cpu0) as f64 / 1e3 / pipe.completed as f64;
            let kicks = pipe.kicks as f64 / pipe.completed as f64;
            pipe.drain(fe);
            if piped.median > best_qd.1 {
                best_qd = (depth, piped.median);
            }
            rep.row(
                "3",
                mode.name(format!("WRITE {} MR->MR, QD{depth}", human(len))),
                fmt_gbs(piped.median),
                format!("{:.3} x memcpy", piped.median / best),
                format!(
                    "{depth} in flight (bandwidth); daemon on-CPU {daemon_us:.2} us per WRITE; {kicks:.3} kicks per WRITE; spread {}",
                    piped.spread()
                ),
            );
        }
        if len == MIB {
            rep.target(
                mode.target("1 MiB WRITE >= 0.9 x memcpy (the faster of heap and memfd memcpy), judged on the best queue depth of 1, 8, 32"),
                format!(
                    "{:.3} x at QD{} ({} vs {}); QD1 {ratio:.3} x",
                    best_qd.1 / best,
                    best_qd.0,
                    fmt_gbs(best_qd.1),
                    fmt_gbs(best)
                ),
                best_qd.1 / best >= 0.9,
            );
        }
    }
    c.dereg_mr(ctx, src).expect("DEREG_MR");
    c.dereg_mr(ctx, dst).expect("DEREG_MR");
}

pub(crate) fn human(len: u64) -> String {
    if len >= MIB {
        format!("{} MiB", len / MIB)
    } else {
        format!("{} KiB", len / KIB)
    }
}
