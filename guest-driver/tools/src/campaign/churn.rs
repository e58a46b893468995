//! `campaign_mr_churn`: MRs registered, used by every data operation and
//! deregistered in rounds over several contexts.

use super::helpers::{
    check_bytes, check_own_canaries, drain, module_bound, open_ctx, pat, wait_contexts_gone, Ctx,
};
use super::outcomes::{FaultWatch, Outcomes};
use crate::cases::helpers::KIB;
use crate::fail;
use crate::ktap::{CaseCtx, CaseErr, CaseResult};
use crate::sys::{self, Backing, Mapping};
use crate::uapi::*;
use pinlease_abi::{self as abi, PL_ACCESS_ALL};
use std::os::fd::AsRawFd;

const CHURN_LEN: usize = 64 * KIB;

const CHURN_CTXS: usize = 3;

const CHURN_ROUNDS: usize = 3;

/// The buffers of one context in one round.
struct ChurnBufs {
    a: Mapping,
    b: Mapping,
    ka: Option<u64>,
    kb: Option<u64>,
    scrub: Option<(Mapping, u64)>,
}

fn churn_bufs(c: &Ctx, round: usize, i: usize, o: &mut Outcomes) -> Result<ChurnBufs, CaseErr> {
    let a = Mapping::anon(CHURN_LEN)?;
    let b = Mapping::new(&Backing::Memfd, CHURN_LEN, false)?;
    let seed = (round * 16 + i) as u64;
    a.fill_with(0, CHURN_LEN, |x| pat(seed, x));
    b.fill_with(0, CHURN_LEN, |_| 0);
    let ka = o.rec(
        "REG_MR",
        c.dev.reg_mr(a.addr(), CHURN_LEN as u64, PL_ACCESS_ALL, 0),
    );
    let kb = o.rec(
        "REG_MR",
        c.dev.reg_mr(b.addr(), CHURN_LEN as u64, PL_ACCESS_ALL, 0),
    );
    // The scrubber's MR: hugetlb on the first round when there are huge
    // pages, else 16 KiB of anonymous memory; never written by the CPU.
    let huge = if round == 0 && i == 0 {
        Mapping::new(&Backing::Hugetlb, sys::HUGE_2M, false).ok()
    } else {
        None
    };
    let sm = match huge {
        Some(h) => h,
        None => Mapping::anon(16 * KIB)?,
    };
    sm.touch();
    let scrub = o
        .rec(
            "REG_MR_SCRUB",
            c.dev.reg_mr(
                sm.addr(),
                sm.len() as u64,
                PL_ACCESS_ALL,
                PINLEASE_REG_SCRUB,
            ),
        )
        .map(|r| (sm, r.key));
    Ok(ChurnBufs {
        a,
        b,
        ka: ka.map(|r| r.key),
        kb: kb.map(|r| r.key),
        scrub,
    })
}

/// WRITE, READ, atomics, FILL and VERIFY within one context, each result
/// checked when the device said it succeeded.
fn churn_dma(c: &Ctx, bufs: &ChurnBufs, round: usize, o: &mut Outcomes) -> CaseResult {
    let (Some(ka), Some(kb)) = (bufs.ka, bufs.kb) else {
        return Ok(());
    };
    let seed = (round * 16) as u64 + 7;
    let len = CHURN_LEN as u64;
    if o.rec("DMA_WRITE", c.dev.write(ka, 0, kb, 0, len)).is_some() {
        let a = bufs.a.bytes(0, CHURN_LEN);
        check_bytes(&bufs.b, CHURN_LEN, "WRITE a -> b", |x| a[x])?;
    }
    bufs.b.fill_with(0, CHURN_LEN, |x| pat(seed, x));
    if o.rec("DMA_READ", c.dev.read(ka, 0, kb, 0, len)).is_some() {
        check_bytes(&bufs.a, CHURN_LEN, "READ b -> a", |x| pat(seed, x))?;
    }
    // Atomics on words only this case writes: the expected original is
    // what the CPU reads now (a failed "after" fault may have applied one).
    let before = bufs.b.get_u64(64);
    if let Some(orig) = o.rec("FETCH_ADD", c.dev.fetch_add(kb, 64, 5)) {
        if orig != before || bufs.b.get_u64(64) != before.wrapping_add(5) {
            fail!(
                "FETCH_ADD succeeded: returned {orig:#x}, word now {:#x}; the word held {before:#x}",
                bufs.b.get_u64(64)
            );
        }
    }
    let before = bufs.b.get_u64(128);
    if let Some(orig) = o.rec(
        "COMPARE_SWAP",
        c.dev.compare_swap(kb, 128, before, 0x1111_2222),
    ) {
        if orig != before || bufs.b.get_u64(128) != 0x1111_2222 {
            fail!(
                "COMPARE_SWAP succeeded: returned {orig:#x}, word now {:#x}; the word held {before:#x}",
                bufs.b.get_u64(128)
            );
        }
    }
    let p = 0x0123_4567_89ab_cdef ^ seed;
    if o.rec(
        "FILL",
        c.dev.fill(kb, 0, len, p, abi::PL_PATTERN_OFFSET_XOR),
    )
    .is_some()
    {
        for off in (0..CHURN_LEN).step_by(8) {
            let w = bufs.b.get_u64(off);
            if w != p ^ off as u64 {
                fail!(
                    "FILL succeeded but the word at {off} is {w:#x}, expected {:#x}",
                    p ^ off as u64
                );
            }
        }
        if let Some(v) = o.rec(
            "VERIFY",
            c.dev.verify(kb, 0, len, p, abi::PL_PATTERN_OFFSET_XOR),
        ) {
            if v.mismatches != 0 {
                fail!("VERIFY after a successful FILL of the same pattern: {v}");
            }
        }
    }
    Ok(())
}

pub(super) fn campaign_mr_churn(t: &mut CaseCtx) -> CaseResult {
    let mut w = FaultWatch::start();
    let mut o = Outcomes::default();
    let mut ctxs: Vec<Option<Ctx>> = (0..CHURN_CTXS).map(|_| open_ctx(&mut o)).collect();
    let mut handles: Vec<u64> = ctxs.iter().flatten().filter_map(|c| c.handle).collect();
    let res = (|| -> CaseResult {
        for round in 0..CHURN_ROUNDS {
            let mut bufs = Vec::new();
            for (i, c) in ctxs.iter().enumerate() {
                bufs.push(match c {
                    Some(c) => Some(churn_bufs(c, round, i, &mut o)?),
                    None => None,
                });
            }
            for (c, b) in ctxs.iter().zip(&bufs) {
                if let (Some(c), Some(b)) = (c, b) {
                    churn_dma(c, b, round, &mut o)?;
                }
            }
            // Export each context's b to the next context, which WRITEs its
            // own a into it through the import.
            for i in 0..CHURN_CTXS {
                let j = (i + 1) % CHURN_CTXS;
                let (Some(ci), Some(cj), Some(bi), Some(bj)) =
                    (&ctxs[i], &ctxs[j], &bufs[i], &bufs[j])
                else {
                    continue;
                };
                let (Some(kb), Some(ka_j)) = (bi.kb, bj.ka) else {
                    continue;
                };
                let Some(exp) = o.rec("EXPORT_MR", ci.dev.export_mr(kb)) else {
                    continue;
                };
                let imp = o.rec(
                    "IMPORT_MR",
                    cj.dev.import_mr(exp.as_raw_fd(), PL_ACCESS_ALL),
                );
                drop(exp);
                let Some(ki) = imp else { continue };
                if o.rec(
                    "DMA_WRITE_IMPORTED",
                    cj.dev.write(ka_j, 0, ki, 0, CHURN_LEN as u64),
                )
                .is_some()
                {
                    let a = bj.a.bytes(0, CHURN_LEN);
                    check_bytes(&bi.b, CHURN_LEN, "WRITE through an import", |x| a[x])?;
                }
                o.rec("DEREG_MR", cj.dev.dereg_mr(ki));
            }
            for (c, b) in ctxs.iter().zip(&bufs) {
                let (Some(c), Some(b)) = (c, b) else { continue };
                if let Some((m, key)) = &b.scrub {
                    check_own_canaries(m, *key)?;
                }
                drain(c.ev.as_ref(), &mut o, &mut w);
            }
            // Deregister in an order that changes every round; the scrub MR
            // of every other context stays for its context's close.
            for (i, (c, b)) in ctxs.iter().zip(&bufs).enumerate() {
                let (Some(c), Some(b)) = (c, b) else { continue };
                let mut keys = vec![b.ka, b.kb];
                if (i + round) % 2 == 0 {
                    keys.push(b.scrub.as_ref().map(|s| s.1));
                }
                let n = keys.len();
                keys.rotate_left(round % n);
                for k in keys.into_iter().flatten() {
                    o.rec("DEREG_MR", c.dev.dereg_mr(k));
                }
            }
            // Close one context (its remaining MRs die with it) and open a
            // fresh one; the buffers outlive the close.
            let victim = round % CHURN_CTXS;
            ctxs[victim] = None;
            drop(bufs);
            ctxs[victim] = open_ctx(&mut o);
            if let Some(h) = ctxs[victim].as_ref().and_then(|c| c.handle) {
                handles.push(h);
            }
        }
        Ok(())
    })();
    // Close the rest back to front.
    while let Some(c) = ctxs.pop() {
        drop(c);
    }
    res?;
    wait_contexts_gone(&handles, None, module_bound())?;
    w.finish(t, &o)
}
