//! Step selection and field decoding: which step the next input byte
//! picks, and the pickers that turn input bytes into request fields
//! (handles the model knows, numbers near an MR's edges, access bits,
//! guest pages, files and file ranges). `seeds.rs` writes programs in the
//! order these read them, so a change here changes what every committed
//! corpus input means.

use pinlease_abi::*;

use super::{Harness, PAGE, RAM_END, REGION_A, REGION_B};
use crate::input::Input;

/// The step kinds, in the order of the selector byte (`step % STEPS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Step {
    CreateContext = 0,
    CloseContext,
    ReleaseContext,
    CreateChild,
    DestroyChild,
    RegMr,
    DeregMr,
    Write,
    Read,
    CompareSwap,
    FetchAdd,
    Fill,
    Verify,
    LeaseTake,
    LeaseRelease,
    LeaseBreak,
    ExportMr,
    ImportMr,
    NopOrQuery,
    Reset,
    MemoryMap,
    Malformed,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "step {self:?}")
    }
}

const STEPS: [Step; 22] = [
    Step::CreateContext,
    Step::CloseContext,
    Step::ReleaseContext,
    Step::CreateChild,
    Step::DestroyChild,
    Step::RegMr,
    Step::DeregMr,
    Step::Write,
    Step::Read,
    Step::CompareSwap,
    Step::FetchAdd,
    Step::Fill,
    Step::Verify,
    Step::LeaseTake,
    Step::LeaseRelease,
    Step::LeaseBreak,
    Step::ExportMr,
    Step::ImportMr,
    Step::NopOrQuery,
    Step::Reset,
    Step::MemoryMap,
    Step::Malformed,
];

/// The files leases and file-backed MRs name: three, so they meet often.
pub(super) fn file(i: u8) -> PlFileId {
    PlFileId::new(8, u64::from(i % 3) + 1, 1)
}

impl Harness {
    // ---- field pickers -------------------------------------------------------

    /// A handle from `known` (newest first) or, rarely, 0 or any value.
    fn pick(input: &mut Input, known: &[u64]) -> u64 {
        let sel = input.u8();
        if sel < 0xf0 && !known.is_empty() {
            return known[known.len() - 1 - sel as usize % known.len()];
        }
        if sel & 1 == 0 {
            0
        } else {
            input.u64()
        }
    }

    pub(super) fn pick_ctx(&self, input: &mut Input) -> u64 {
        let known: Vec<u64> = self.ctxs.iter().map(|c| c.handle).collect();
        Self::pick(input, &known)
    }

    pub(super) fn pick_mr(&self, input: &mut Input) -> u64 {
        let known: Vec<u64> = self.mrs.iter().map(|m| m.key).collect();
        Self::pick(input, &known)
    }

    pub(super) fn pick_child(&self, input: &mut Input) -> u64 {
        let known: Vec<u64> = self.children.iter().map(|c| c.handle).collect();
        Self::pick(input, &known)
    }

    pub(super) fn pick_lease(&self, input: &mut Input) -> u64 {
        let known: Vec<u64> = self.leases.iter().map(|l| l.handle).collect();
        Self::pick(input, &known)
    }

    /// An offset or length near `size` (an MR's length): 0, small
    /// multiples of 8, `size` and just around it, or anything.
    pub(super) fn pick_num(input: &mut Input, size: u64) -> u64 {
        let sel = input.u8();
        let small = u64::from(sel >> 3);
        match sel & 7 {
            0 => 0,
            1 => small * 8,
            2 => size,
            3 => size.wrapping_sub(small * 8),
            4 => u64::from(input.u16()),
            5 => input.u64(),
            6 => (size / 2) & !7,
            _ => small,
        }
    }

    pub(super) fn pick_access(input: &mut Input) -> u32 {
        match input.u8() % 8 {
            0 => PL_ACCESS_READ,
            1 => PL_ACCESS_WRITE,
            2 => PL_ACCESS_READ | PL_ACCESS_WRITE,
            3 | 4 => PL_ACCESS_ALL,
            5 => PL_ACCESS_ATOMIC,
            6 => 0,
            _ => input.u32(),
        }
    }

    /// A file range start and length, in pages mostly.
    pub(super) fn pick_file_range(input: &mut Input) -> (u64, u64) {
        let sel = input.u8();
        let start = if sel & 0x80 == 0 {
            u64::from(sel & 7) * PAGE
        } else {
            input.u64()
        };
        let sel = input.u8();
        let length = match sel & 3 {
            0 => 0,
            1 | 2 => u64::from(sel >> 2) * PAGE,
            _ => input.u64(),
        };
        (start, length)
    }

    pub(super) fn page(input: &mut Input) -> u64 {
        let p = input.u8();
        if p < 0xf0 {
            let i = u64::from(p % 12);
            return if i < 8 {
                REGION_A.0 + i * PAGE
            } else {
                REGION_B.0 + (i - 8) * PAGE
            };
        }
        match p & 7 {
            0 => REGION_A.0 + REGION_A.1, // the hole
            1 => RAM_END,
            2 => PAGE + 8, // misaligned
            3 => input.u64(),
            4 => !(PAGE - 1),
            _ => REGION_B.0 + REGION_B.1 - PAGE,
        }
    }

    // ---- steps ---------------------------------------------------------------

    pub(super) fn step(&mut self, input: &mut Input) {
        let step = STEPS[input.u8() as usize % STEPS.len()];
        self.step = step;
        match step {
            Step::CreateContext => self.create_context(input),
            Step::CloseContext => self.close_context(input),
            Step::ReleaseContext => self.release_context(input),
            Step::CreateChild => self.create_child(input),
            Step::DestroyChild => self.destroy_child(input),
            Step::RegMr => self.reg_mr(input),
            Step::DeregMr => self.dereg_mr(input),
            Step::Write => self.dma(input, Opcode::Write),
            Step::Read => self.dma(input, Opcode::Read),
            Step::CompareSwap => self.atomic(input, Opcode::CompareSwap),
            Step::FetchAdd => self.atomic(input, Opcode::FetchAdd),
            Step::Fill => self.pattern(input, Opcode::Fill),
            Step::Verify => self.pattern(input, Opcode::Verify),
            Step::LeaseTake => self.lease_take(input),
            Step::LeaseRelease => self.lease_release(input),
            Step::LeaseBreak => self.lease_break(input),
            Step::ExportMr => self.export_mr(input),
            Step::ImportMr => self.import_mr(input),
            Step::NopOrQuery => self.nop_or_query(input),
            Step::Reset => self.reset(),
            Step::MemoryMap => self.memory_map(input),
            Step::Malformed => self.malformed(input),
        }
    }
}
