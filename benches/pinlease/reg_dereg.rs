//! Section 2: REG_MR + DEREG_MR pairs, and the model alone.

use pinlease::guest_ram::MmapRam;
use pinlease::model::{Device, Limits, RegMr};
use pinlease_abi::*;
use pinlease_testkit::frontend::client::{encode_request, Client, RegMrArgs};
use vm_memory::{Bytes, GuestAddress};

use crate::machine::Mode;
use crate::measure::{measure, PerOp};
use crate::prebuilt::{interleaved_with_nop, nop_request, Prebuilt};
use crate::report::{fmt_rate, fmt_us, Report};
use crate::{PAGE, REPS};

pub(crate) fn bench_reg_dereg(
    rep: &mut Report,
    c: &mut Client,
    daemon_pid: u32,
    ctx: u64,
    mode: Mode,
) {
    eprintln!("2. REG_MR + DEREG_MR pairs{}", mode.name(""));
    let nop = Prebuilt::new(c.frontend_mut(), &nop_request(), 16);
    let nop_cpu = PerOp::measure(daemon_pid, 3000, || nop.ok(c.frontend_mut(), 16));
    for npages in [1usize, 256, 65_536] {
        let pages = c.alloc_pages(npages).expect("guest pages");
        let body = RegMrArgs::pages(PL_ACCESS_ALL, &pages).body();
        let fe = c.frontend_mut();
        let reg = Prebuilt::new(fe, &encode_request(Opcode::RegMr as u16, ctx, 1, &body), 32);
        let dereg = Prebuilt::new(
            fe,
            &encode_request(
                Opcode::DeregMr as u16,
                ctx,
                2,
                PlHandleReq { handle: 0 }.as_bytes(),
            ),
            16,
        );
        let key_at = GuestAddress(reg.resp + 16);
        // Pairs and NOPs take turns, so the ratio compares like with like.
        let rates = interleaved_with_nop(fe, &nop, |fe| {
            reg.ok(fe, 32);
            let key: u64 = fe.memory().read_obj(key_at).expect("key");
            fe.write_mem(dereg.req + 24, &key.to_le_bytes())
                .expect("key into DEREG_MR");
            dereg.ok(fe, 16);
            1
        });
        let (n, r) = (&rates[0], &rates[1]);
        // The two halves apart: REG_MR alone (the MRs pile up), then
        // DEREG_MR of all of them, with the daemon's CPU time.
        let mut keys = Vec::new();
        let n_reg = if npages > 1000 { 100 } else { 2000 };
        let reg_op = PerOp::measure(daemon_pid, n_reg, || {
            reg.ok(fe, 32);
            keys.push(fe.memory().read_obj::<u64>(key_at).expect("key"));
        });
        let mut it = keys.iter();
        let dereg_op = PerOp::measure(daemon_pid, n_reg, || {
            let k = it.next().expect("a key per DEREG_MR");
            fe.write_mem(dereg.req + 24, &k.to_le_bytes())
                .expect("key into DEREG_MR");
            dereg.ok(fe, 16);
        });
        // A pair is two requests: the target compares the per-request rate,
        // pairs/s / (NOP/s / 2); pairs/s / NOP/s is printed beside it.
        let raw = r.median / n.median;
        let ratio = 2.0 * raw;
        let beyond = |op: &PerOp| {
            let extra = op.daemon - nop_cpu.daemon;
            if npages > 1 {
                format!(
                    "; daemon on-CPU beyond a NOP's: {} = {:.1} ns/page",
                    fmt_us(extra),
                    extra * 1e9 / npages as f64
                )
            } else {
                format!("; daemon on-CPU beyond a NOP's: {}", fmt_us(extra))
            }
        };
        rep.row(
            "2",
            mode.name(format!("REG_MR+DEREG_MR pair, {npages} page(s)")),
            format!("{} pairs", fmt_rate(r.median)),
            format!(
                "{ratio:.3} x NOP per request (pairs/s / (NOP/s / 2)); pairs/s / NOP/s {raw:.3}"
            ),
            format!(
                "pair {}; NOP taking turns with it {} ({}); spread {}",
                fmt_us(1.0 / r.median),
                fmt_rate(n.median),
                fmt_us(1.0 / n.median),
                r.spread()
            ),
        );
        for (op, cost) in [("REG_MR", &reg_op), ("DEREG_MR", &dereg_op)] {
            rep.row(
                "2",
                mode.name(format!("  {op} alone, {npages} page(s) ({n_reg} runs)")),
                fmt_us(cost.wall),
                "",
                format!("{}{}", cost.describe(), beyond(cost)),
            );
        }
        if npages == 1 {
            rep.target(
                mode.target("REG_MR+DEREG_MR (1 page) >= 0.8 x NOP, judged per request: pairs/s / (NOP/s / 2)"),
                format!("{ratio:.3} x (pairs/s / NOP/s = {raw:.3}, not the judged ratio)"),
                ratio >= 0.8,
            );
        }
    }
    if mode.full {
        // The model alone (Device::reg_mr + dereg_mr in this process, no
        // transport), for the per-page cost without any round trip.
        let model = Device::new(Limits::default());
        model.set_memory(Box::new(MmapRam::new(c.frontend().memory().clone())));
        let mctx = model.create_context(1, "bench").expect("model context");
        for npages in [1u64, 256, 65_536] {
            let pages: Vec<u64> = (0..npages).map(|i| (16 + i) * PAGE).collect();
            let r = measure(REPS, || {
                let key = model
                    .reg_mr(
                        mctx,
                        RegMr {
                            access: PL_ACCESS_ALL,
                            flags: 0,
                            first_page_offset: 0,
                            length: npages * PAGE,
                            file: None,
                            pages: pages.clone(),
                        },
                    )
                    .expect("model REG_MR")
                    .key;
                model.dereg_mr(mctx, key).expect("model DEREG_MR");
                1
            });
            rep.row(
                "2",
                format!("  model only: Device::reg_mr+dereg_mr, {npages} page(s), no transport"),
                format!("{} pairs", fmt_rate(r.median)),
                "",
                format!(
                    "{} per pair = {:.1} ns/page; spread {}",
                    fmt_us(1.0 / r.median),
                    1e9 / r.median / npages as f64,
                    r.spread()
                ),
            );
        }
    }
}
