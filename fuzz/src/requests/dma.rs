//! The data steps: WRITE, READ, COMPARE_SWAP, FETCH_ADD, FILL and VERIFY.
//! The model keeps a shadow copy of guest memory and applies each data
//! request to it with its own byte loops (gather, scatter, words); after
//! each one the device's guest memory must equal the shadow.

use pinlease_abi::*;

use super::model::Mr;
use super::{Harness, REGION_A, REGION_B};
use crate::input::Input;

/// The word FILL writes at MR offset `o`.
fn pattern_word(pattern: u64, mode: u32, o: u64) -> u64 {
    if mode == PL_PATTERN_OFFSET_XOR {
        pattern ^ o
    } else {
        pattern
    }
}

impl Harness {
    /// The problems of MR `key` for a device access at `[offset, +len)`
    /// needing `bit`.
    fn access_errs(
        &self,
        key: u64,
        bit: u32,
        offset: u64,
        len: u64,
        errs: &mut Vec<Status>,
    ) -> Option<usize> {
        let i = self.mr(key, errs)?;
        let m = &self.mrs[i];
        if m.access & bit == 0 {
            errs.push(Status::Perm);
        }
        if offset.checked_add(len).is_none_or(|e| e > m.length) {
            errs.push(Status::Range);
        }
        if !m.live {
            errs.push(Status::Canceled);
        }
        Some(i)
    }

    pub(super) fn dma(&mut self, input: &mut Input, op: Opcode) {
        let c = self.pick_ctx(input);
        let lk = self.pick_mr(input);
        let rk = self.pick_mr(input);
        let (ls, rs) = (self.mr_length_or_page(lk), self.mr_length_or_page(rk));
        let lo = Self::pick_num(input, ls);
        let ro = Self::pick_num(input, rs);
        let length = Self::pick_num(input, ls.min(rs));
        let mut errs = Vec::new();
        self.open_ctx(c, &mut errs);
        let ((sk, so), (dk, dst_off)) = if op == Opcode::Write {
            ((lk, lo), (rk, ro))
        } else {
            ((rk, ro), (lk, lo))
        };
        let src = self.access_errs(sk, PL_ACCESS_READ, so, length, &mut errs);
        let dst = self.access_errs(dk, PL_ACCESS_WRITE, dst_off, length, &mut errs);
        if let Some(i) = self.mrs.iter().position(|m| m.key == lk) {
            if !self.mrs[i].gone && self.mrs[i].ctx != c {
                errs.push(Status::Perm);
            }
        }
        let req = PlDmaReq {
            local_key: lk,
            local_offset: lo,
            remote_key: rk,
            remote_offset: ro,
            length,
        };
        if self.expect(op, c, req.as_bytes(), &errs).is_none() {
            return;
        }
        let (src, dst) = (&self.mrs[src.unwrap()], &self.mrs[dst.unwrap()]);
        let from = src.runs(so, length);
        let to = dst.runs(dst_off, length);
        let overlap = from.iter().any(|&(f, n)| {
            to.iter()
                .any(|&(t, m)| f < t.saturating_add(m) && t < f.saturating_add(n))
        });
        if overlap {
            // Overlapping ranges: the destination is unspecified
            // (docs/abi.md 5.11); take the device's bytes there.
            for (g, n) in to {
                let at = g as usize..(g + n) as usize;
                self.ram.read(g, &mut self.shadow[at]).expect("mapped");
            }
        } else {
            let bytes = self.gather(&from);
            self.scatter(&to, &bytes);
        }
        self.check_memory();
    }

    /// The shadow's bytes at `runs`, in order.
    fn gather(&self, runs: &[(u64, u64)]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(g, n) in runs {
            out.extend_from_slice(&self.shadow[g as usize..(g + n) as usize]);
        }
        out
    }

    /// Writes `bytes` over the shadow at `runs`, in order.
    fn scatter(&mut self, runs: &[(u64, u64)], bytes: &[u8]) {
        let mut done = 0;
        for &(g, n) in runs {
            let n = n as usize;
            self.shadow[g as usize..g as usize + n].copy_from_slice(&bytes[done..done + n]);
            done += n;
        }
    }

    fn word(&self, mr: &Mr, o: u64) -> u64 {
        let b = self.gather(&mr.runs(o, 8));
        u64::from_le_bytes(b.try_into().expect("8 bytes"))
    }

    fn set_word(&mut self, mi: usize, o: u64, v: u64) {
        let runs = self.mrs[mi].runs(o, 8);
        self.scatter(&runs, &v.to_le_bytes());
    }

    pub(super) fn atomic(&mut self, input: &mut Input, op: Opcode) {
        let c = self.pick_ctx(input);
        let key = self.pick_mr(input);
        let size = self.mr_length_or_page(key);
        let offset = Self::pick_num(input, size.wrapping_sub(8));
        let operand = if input.bool() { 0 } else { input.u64() };
        let swap = if op == Opcode::CompareSwap || input.u8() >= 0xf0 {
            input.u64()
        } else {
            0
        };
        let mut errs = Vec::new();
        self.open_ctx(c, &mut errs);
        if !offset.is_multiple_of(8) || (op == Opcode::FetchAdd && swap != 0) {
            errs.push(Status::Inval);
        }
        let mi = self.access_errs(key, PL_ACCESS_ATOMIC, offset, 8, &mut errs);
        if let Some(i) = mi {
            let m = &self.mrs[i];
            if offset.checked_add(8).is_some_and(|e| e <= m.length)
                && !m.gpa(offset).is_multiple_of(8)
            {
                errs.push(Status::Inval);
            }
        }
        let req = PlAtomicReq {
            key,
            offset,
            operand,
            swap,
        };
        let Some(resp) = self.expect(op, c, req.as_bytes(), &errs) else {
            return;
        };
        let mi = mi.unwrap();
        let got = PlAtomicResp::read_from(&resp).unwrap().original;
        let before = self.word(&self.mrs[mi], offset);
        assert_eq!(got, before, "{}: original value", self.step);
        if op == Opcode::FetchAdd {
            self.set_word(mi, offset, before.wrapping_add(operand));
        } else if before == operand {
            self.set_word(mi, offset, swap);
        }
        self.check_memory();
    }

    pub(super) fn pattern(&mut self, input: &mut Input, op: Opcode) {
        let c = self.pick_ctx(input);
        let key = self.pick_mr(input);
        let size = self.mr_length_or_page(key);
        let offset = Self::pick_num(input, size);
        let length = Self::pick_num(input, size.wrapping_sub(offset));
        let pattern = if input.bool() { input.u64() } else { 0 };
        let sel = input.u8();
        let mode = match sel {
            0..=0x7f => PL_PATTERN_CONST,
            0x80..=0xef => PL_PATTERN_OFFSET_XOR,
            _ => input.u32(),
        };
        let mut errs = Vec::new();
        self.open_ctx(c, &mut errs);
        if mode > PL_PATTERN_OFFSET_XOR || !offset.is_multiple_of(8) || !length.is_multiple_of(8) {
            errs.push(Status::Inval);
        }
        let bit = if op == Opcode::Fill {
            PL_ACCESS_WRITE
        } else {
            PL_ACCESS_READ
        };
        let mi = self.access_errs(key, bit, offset, length, &mut errs);
        let req = PlPatternReq::new(key, offset, length, pattern, mode);
        let Some(resp) = self.expect(op, c, req.as_bytes(), &errs) else {
            return;
        };
        let mi = mi.unwrap();
        let runs = self.mrs[mi].runs(offset, length);
        let words = (offset..offset + length).step_by(8);
        if op == Opcode::Fill {
            let bytes: Vec<u8> = words
                .flat_map(|o| pattern_word(pattern, mode, o).to_le_bytes())
                .collect();
            self.scatter(&runs, &bytes);
            self.check_memory();
        } else {
            let mut want = PlVerifyResp {
                first_bad_offset: u64::MAX,
                ..Default::default()
            };
            let bytes = self.gather(&runs);
            for (o, w) in words.zip(bytes.chunks_exact(8)) {
                let seen = u64::from_le_bytes(w.try_into().expect("8 bytes"));
                if seen != pattern_word(pattern, mode, o) {
                    if want.mismatches == 0 {
                        want.first_bad_offset = o;
                        want.first_bad_value = seen;
                    }
                    want.mismatches += 1;
                }
            }
            let got = PlVerifyResp::read_from(&resp).unwrap();
            assert_eq!(got, want, "{}: VERIFY answer", self.step);
        }
    }

    /// The device's guest memory equals the model's shadow.
    pub(super) fn check_memory(&self) {
        let mut regions = vec![REGION_A];
        if self.region_b {
            regions.push(REGION_B);
        }
        for (base, len) in regions {
            let mut buf = vec![0u8; len as usize];
            self.ram.read(base, &mut buf).expect("mapped region");
            let want = &self.shadow[base as usize..(base + len) as usize];
            if buf != want {
                let at = buf.iter().zip(want).position(|(a, b)| a != b).unwrap();
                panic!(
                    "{}: guest memory differs from the model at {:#x}: device {:#x}, model {:#x}",
                    self.step,
                    base + at as u64,
                    buf[at],
                    want[at]
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeds;

    #[test]
    fn a_wrong_model_is_caught() {
        // The harness must be able to fail: a model that believes a FILL
        // wrote nothing disagrees with guest memory.
        let mut h = Harness::new();
        let (_, program) = seeds::requests()
            .into_iter()
            .find(|(n, _)| *n == "fill_verify")
            .unwrap();
        let mut input = Input::new(&program);
        while !input.is_empty() {
            h.step(&mut input);
        }
        h.shadow[0x10] ^= 0xff;
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.check_memory()));
        assert!(caught.is_err());
    }
}
