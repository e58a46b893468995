//! The seed corpus, generated: each seed is built here from what it means
//! (a request sequence, a documented plan, an admin command, an event), and
//! the test `corpus_is_generated` checks fuzz/corpus/ holds exactly these
//! (`PINLEASE_WRITE_SEEDS=1 cargo test` rewrites them).

use pinlease_abi::*;

use crate::input::Program;
use crate::requests::Step;

/// Writes request-target programs: one method per step, each writing the
/// fields in the order `requests::Harness` reads them.
#[derive(Default)]
struct Steps {
    p: Program,
}

/// Handle picks: `NEW` is the newest handle of its kind, `NEW - k` the
/// k-th before it.
const NEW: u8 = 0;

impl Steps {
    fn step(&mut self, s: Step) -> &mut Self {
        self.p.u8(s as u8);
        self
    }

    /// A number `Harness::pick_num` reads back exactly.
    fn num(&mut self, v: u16) -> &mut Self {
        self.p.u8(4).u16(v);
        self
    }

    fn ctx(&mut self) -> &mut Self {
        self.step(Step::CreateContext);
        self.p.u8(b'f').u8(b'u').u8(b'z').u8(b'z').u32(100);
        self
    }

    fn close(&mut self, ctx: u8) -> &mut Self {
        self.step(Step::CloseContext).p.u8(ctx);
        self
    }

    fn release(&mut self, ctx: u8) -> &mut Self {
        self.step(Step::ReleaseContext).p.u8(ctx);
        self
    }

    /// REG_MR in `ctx` with access all, `flags`, over `pages` (indexes:
    /// 0-7 region A, 8-11 region B) from `off`, `len` bytes; `file`: the
    /// file index and the offset in pages.
    fn reg(
        &mut self,
        ctx: u8,
        flags: u8,
        off: u16,
        len: u16,
        pages: &[u8],
        file: Option<(u8, u8)>,
    ) -> &mut Self {
        self.step(Step::RegMr);
        self.p.u8(ctx).u8(3).u8(flags).u8(1).u16(off);
        self.p.u8(0).u16(len - 1).u8(0);
        for &pg in pages {
            self.p.u8(pg);
        }
        match file {
            Some((f, fo)) => self.p.u8(f).u8(1 | fo << 2),
            None => self.p.u8(0),
        };
        self
    }

    fn dereg(&mut self, ctx: u8, key: u8) -> &mut Self {
        self.step(Step::DeregMr).p.u8(ctx).u8(key);
        self
    }

    /// WRITE (or READ) in `ctx` between MRs `lk` and `rk`: `(local offset,
    /// remote offset, length)`.
    fn dma(&mut self, write: bool, ctx: u8, lk: u8, rk: u8, range: (u16, u16, u16)) -> &mut Self {
        self.step(if write { Step::Write } else { Step::Read });
        self.p.u8(ctx).u8(lk).u8(rk);
        self.num(range.0).num(range.1).num(range.2)
    }

    fn pattern(
        &mut self,
        fill: bool,
        key: u8,
        off: u16,
        len: u16,
        pattern: u64,
        xor: bool,
    ) -> &mut Self {
        self.step(if fill { Step::Fill } else { Step::Verify });
        self.p.u8(NEW).u8(key);
        self.num(off).num(len);
        self.p.u8(1).u64(pattern).u8(if xor { 0x80 } else { 0 });
        self
    }

    fn cas(&mut self, key: u8, off: u16, expected: u64, new: u64) -> &mut Self {
        self.step(Step::CompareSwap).p.u8(NEW).u8(key);
        self.num(off);
        self.p.u8(0).u64(expected).u64(new);
        self
    }

    fn faa(&mut self, key: u8, off: u16, add: u64) -> &mut Self {
        self.step(Step::FetchAdd).p.u8(NEW).u8(key);
        self.num(off);
        self.p.u8(0).u64(add).u8(0);
        self
    }

    /// LEASE_TAKE on file `f`, pages `[start, start + pages)`, `policy`.
    fn take(&mut self, ctx: u8, f: u8, start: u8, pages: u8, policy: u32) -> &mut Self {
        self.step(Step::LeaseTake)
            .p
            .u8(ctx)
            .u8(f)
            .u8(start)
            .u8(1 | pages << 2);
        self.p.u8((policy - 1) as u8);
        self
    }

    fn release_lease(&mut self, ctx: u8, lease: u8, reason: u32) -> &mut Self {
        self.step(Step::LeaseRelease)
            .p
            .u8(ctx)
            .u8(lease)
            .u8(reason as u8);
        self
    }

    fn brk(&mut self, f: u8, start: u8, pages: u8) -> &mut Self {
        self.step(Step::LeaseBreak)
            .p
            .u8(f)
            .u8(start)
            .u8(1 | pages << 2)
            .u8(0);
        self
    }

    fn export(&mut self, ctx: u8, key: u8) -> &mut Self {
        self.step(Step::ExportMr).p.u8(ctx).u8(key);
        self
    }

    fn import(&mut self, ctx: u8, export: u8, access_sel: u8) -> &mut Self {
        self.step(Step::ImportMr)
            .p
            .u8(ctx)
            .u8(export)
            .u8(access_sel);
        self
    }

    fn child(&mut self, ctx: u8) -> &mut Self {
        self.step(Step::CreateChild).p.u8(ctx).u8(0);
        self
    }

    fn destroy_child(&mut self, ctx: u8, child: u8) -> &mut Self {
        self.step(Step::DestroyChild).p.u8(ctx).u8(child);
        self
    }

    fn done(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.p.bytes)
    }
}

const HAS_FILE: u8 = PL_REG_HAS_FILE as u8;

/// The `requests` seeds: (name, program).
pub fn requests() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    let mut s = Steps::default();

    s.ctx().reg(NEW, 0, 0, 8192, &[0, 1], None);
    s.pattern(true, NEW, 0, 8192, 0x1122_3344_5566_7788, false);
    s.pattern(false, NEW, 0, 8192, 0x1122_3344_5566_7788, false);
    s.dma(true, NEW, NEW, NEW, (0, 4096, 4096));
    s.dereg(NEW, NEW).close(NEW).release(NEW);
    out.push(("basic_mr", s.done()));

    s.ctx().reg(NEW, 0, 0, 4096, &[0], None);
    s.pattern(true, NEW, 0, 4096, 0xa5a5, false);
    s.pattern(false, NEW, 0, 4096, 0xa5a5, false);
    s.pattern(true, NEW, 8, 4000, 0xfeed, true);
    s.pattern(false, NEW, 0, 4096, 0xfeed, true);
    out.push(("fill_verify", s.done()));

    // Odd first_page_offset over pages that are not adjacent (issue 12
    // item 0): words straddle page breaks.
    s.ctx().reg(NEW, 0, 1031, 3 * 4096, &[3, 1, 9, 5], None);
    s.reg(NEW, 0, 0, 3 * 4096, &[6, 7, 2], None);
    s.pattern(true, 1, 0, 3 * 4096, 0x0102_0304_0506_0708, true);
    s.dma(true, NEW, 1, NEW, (8, 16, 8000));
    s.dma(false, NEW, 1, NEW, (100, 5, 3000));
    s.pattern(false, NEW, 0, 3 * 4096, 0x0102_0304_0506_0708, true);
    s.pattern(false, 1, 0, 3 * 4096, 0x0102_0304_0506_0708, true);
    out.push(("dma_scattered_odd_offset", s.done()));

    s.ctx().reg(NEW, 0, 0, 4096, &[2], None);
    s.cas(NEW, 8, 0, 42)
        .cas(NEW, 8, 42, 43)
        .faa(NEW, 16, 5)
        .faa(NEW, 16, u64::MAX);
    s.faa(NEW, 12, 1);
    s.reg(NEW, 0, 4, 4096, &[4, 5], None).faa(NEW, 8, 1);
    out.push(("atomics", s.done()));

    s.ctx().take(NEW, 0, 0, 4, PL_POLICY_REVOKE);
    s.reg(NEW, HAS_FILE, 0, 8192, &[0, 1], Some((0, 1)));
    s.brk(0, 2, 1)
        .dereg(NEW, NEW)
        .release_lease(NEW, NEW, PL_RELEASE_HOLDER);
    out.push(("lease_revoke", s.done()));

    s.ctx().take(NEW, 1, 0, 8, PL_POLICY_WAIT);
    s.reg(NEW, HAS_FILE, 0, 4096, &[3], Some((1, 0)));
    s.brk(1, 0, 0).take(NEW, 1, 0, 1, PL_POLICY_TIMEOUT);
    s.release_lease(NEW, NEW, PL_RELEASE_LOST);
    s.pattern(true, NEW, 0, 64, 1, false);
    s.release_lease(NEW, NEW, PL_RELEASE_HOLDER).close(NEW);
    out.push(("lease_wait_lost", s.done()));

    s.ctx().ctx().reg(1, 0, 0, 4096, &[4], None);
    s.export(1, NEW).export(1, NEW).import(NEW, NEW, 2);
    s.dma(true, NEW, NEW, 1, (0, 0, 512));
    s.dereg(1, 1).dma(true, NEW, NEW, NEW, (0, 0, 8));
    s.destroy_child(1, NEW)
        .destroy_child(1, NEW)
        .release(1)
        .release(NEW);
    out.push(("export_import", s.done()));

    s.ctx().child(NEW).child(NEW).child(NEW).child(NEW);
    s.release(NEW).destroy_child(NEW, NEW).destroy_child(NEW, 1);
    s.destroy_child(NEW, 2).release(NEW).release(NEW);
    out.push(("children_limit_release", s.done()));

    s.ctx()
        .reg(NEW, 0, 0, 4096, &[9], None)
        .reg(NEW, 0, 0, 4096, &[1], None);
    s.step(Step::MemoryMap).p.u8(0);
    s.reg(NEW, 0, 0, 4096, &[10], None);
    s.step(Step::MemoryMap).p.u8(1);
    s.reg(NEW, 0, 0, 4096, &[10], None).step(Step::Reset);
    s.dereg(NEW, NEW).ctx();
    out.push(("memory_map_and_reset", s.done()));

    for _ in 0..5 {
        s.ctx();
    }
    for _ in 0..13 {
        s.reg(NEW, 0, 0, 4096, &[0], None);
    }
    out.push(("limits", s.done()));

    s.step(Step::NopOrQuery).p.u8(0);
    s.step(Step::NopOrQuery).p.u8(1).u8(0xf0);
    for kind in 0..7 {
        s.step(Step::Malformed).p.u8(kind).u8(3);
        match kind {
            0 | 1 => s.p.u16(0),
            5 => s.p.u8(0),
            _ => &mut s.p,
        };
    }
    out.push(("malformed_and_query", s.done()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// (target, seed name, bytes) of every seed.
    fn all() -> Vec<(&'static str, String, Vec<u8>)> {
        let mut out = Vec::new();
        for (n, b) in requests() {
            out.push(("requests", n.to_string(), b));
        }
        for (n, b) in crate::fault_plan::seeds() {
            out.push(("fault_plan", n, b));
        }
        for (n, b) in crate::admin::seeds() {
            out.push(("admin", n, b));
        }
        for (n, b) in crate::events::seeds() {
            out.push(("events", n, b));
        }
        out
    }

    #[test]
    fn corpus_is_generated() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
        let write = std::env::var_os("PINLEASE_WRITE_SEEDS").is_some();
        for (target, name, bytes) in all() {
            let path = root.join(target).join(format!("seed-{name}"));
            if write {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            } else {
                let on_disk = std::fs::read(&path).unwrap_or_else(|e| {
                    panic!(
                        "{}: {e} (PINLEASE_WRITE_SEEDS=1 cargo test writes it)",
                        path.display()
                    )
                });
                assert_eq!(on_disk, bytes, "{} is stale", path.display());
            }
        }
    }
}
