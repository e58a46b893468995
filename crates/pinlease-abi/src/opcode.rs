//! Request opcodes: values, response sizes and names.

use std::mem::size_of;

use crate::{
    PlAtomicResp, PlCloseContextResp, PlExportMrResp, PlHandleResp, PlLeaseBreakResp,
    PlQueryDeviceResp, PlRegMrResp, PlVerifyResp,
};

/// Request opcodes. Values are ABI: never renumber.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Opcode {
    Nop = 0,
    QueryDevice = 1,
    CreateContext = 2,
    CloseContext = 3,
    ReleaseContext = 4,
    CreateChild = 5,
    DestroyChild = 6,
    RegMr = 7,
    DeregMr = 8,
    Write = 9,
    Read = 10,
    CompareSwap = 11,
    FetchAdd = 12,
    Fill = 13,
    Verify = 14,
    LeaseTake = 15,
    LeaseRelease = 16,
    LeaseBreak = 17,
    ExportMr = 18,
    ImportMr = 19,
}

impl Opcode {
    pub const ALL: [Opcode; 20] = [
        Opcode::Nop,
        Opcode::QueryDevice,
        Opcode::CreateContext,
        Opcode::CloseContext,
        Opcode::ReleaseContext,
        Opcode::CreateChild,
        Opcode::DestroyChild,
        Opcode::RegMr,
        Opcode::DeregMr,
        Opcode::Write,
        Opcode::Read,
        Opcode::CompareSwap,
        Opcode::FetchAdd,
        Opcode::Fill,
        Opcode::Verify,
        Opcode::LeaseTake,
        Opcode::LeaseRelease,
        Opcode::LeaseBreak,
        Opcode::ExportMr,
        Opcode::ImportMr,
    ];

    pub fn from_u16(v: u16) -> Option<Opcode> {
        Self::ALL.get(usize::from(v)).copied()
    }

    /// Size of the response body on success: fixed per opcode, so the
    /// device can refuse a too-small response buffer before acting.
    pub fn response_body_len(self) -> usize {
        match self {
            Opcode::Nop
            | Opcode::ReleaseContext
            | Opcode::DestroyChild
            | Opcode::DeregMr
            | Opcode::Write
            | Opcode::Read
            | Opcode::Fill
            | Opcode::LeaseRelease => 0,
            Opcode::QueryDevice => size_of::<PlQueryDeviceResp>(),
            Opcode::CreateContext | Opcode::CreateChild | Opcode::LeaseTake => {
                size_of::<PlHandleResp>()
            }
            Opcode::CloseContext => size_of::<PlCloseContextResp>(),
            Opcode::RegMr | Opcode::ImportMr => size_of::<PlRegMrResp>(),
            Opcode::CompareSwap | Opcode::FetchAdd => size_of::<PlAtomicResp>(),
            Opcode::Verify => size_of::<PlVerifyResp>(),
            Opcode::LeaseBreak => size_of::<PlLeaseBreakResp>(),
            Opcode::ExportMr => size_of::<PlExportMrResp>(),
        }
    }

    /// The name of the C constant (`PL_OP_REG_MR`), as in the header and
    /// docs/abi.md.
    pub fn const_name(self) -> &'static str {
        match self {
            Opcode::Nop => "PL_OP_NOP",
            Opcode::QueryDevice => "PL_OP_QUERY_DEVICE",
            Opcode::CreateContext => "PL_OP_CREATE_CONTEXT",
            Opcode::CloseContext => "PL_OP_CLOSE_CONTEXT",
            Opcode::ReleaseContext => "PL_OP_RELEASE_CONTEXT",
            Opcode::CreateChild => "PL_OP_CREATE_CHILD",
            Opcode::DestroyChild => "PL_OP_DESTROY_CHILD",
            Opcode::RegMr => "PL_OP_REG_MR",
            Opcode::DeregMr => "PL_OP_DEREG_MR",
            Opcode::Write => "PL_OP_WRITE",
            Opcode::Read => "PL_OP_READ",
            Opcode::CompareSwap => "PL_OP_COMPARE_SWAP",
            Opcode::FetchAdd => "PL_OP_FETCH_ADD",
            Opcode::Fill => "PL_OP_FILL",
            Opcode::Verify => "PL_OP_VERIFY",
            Opcode::LeaseTake => "PL_OP_LEASE_TAKE",
            Opcode::LeaseRelease => "PL_OP_LEASE_RELEASE",
            Opcode::LeaseBreak => "PL_OP_LEASE_BREAK",
            Opcode::ExportMr => "PL_OP_EXPORT_MR",
            Opcode::ImportMr => "PL_OP_IMPORT_MR",
        }
    }

    /// The name used in logs, status output and docs: the C constant's
    /// name without `PL_OP_` (`REG_MR`).
    pub fn name(self) -> &'static str {
        crate::names::without_prefix(self.const_name(), "PL_OP_")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcodes_round_trip_and_unknown_is_none() {
        for op in Opcode::ALL {
            assert_eq!(Opcode::from_u16(op as u16), Some(op));
        }
        assert_eq!(Opcode::from_u16(Opcode::ALL.len() as u16), None);
        assert_eq!(Opcode::from_u16(u16::MAX), None);
    }
}
