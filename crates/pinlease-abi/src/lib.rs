//! The pinlease wire ABI, Rust mirror.
//!
//! `docs/abi.md` is the written spec; `guest-driver/include/pinlease_abi.h`
//! is the C mirror the guest module includes. `tests/abi_layout.rs` compiles
//! the header with gcc and fails when any size or field offset differs from
//! the types here. Change all three together.
//!
//! Every multi-byte field is little-endian (virtio 1.x devices are LE; the
//! daemon only runs on x86_64/aarch64 hosts, both LE, so the `#[repr(C)]`
//! structs are read and written as they lie in memory). Every struct is
//! naturally aligned with explicit padding, so the C and Rust layouts cannot
//! drift through implicit padding.
//!
//! Modules, all re-exported here so every item is `pinlease_abi::NAME`:
//! - `device`: config space, virtio ids, queues, page size, limits;
//! - `opcode` / `status`: the request opcodes and response statuses;
//! - `flags`: flags and enumerations carried in fields (access, policies,
//!   break and revoke reasons, event kinds, features);
//! - `wire`: the request/response/event structs and the [`Wire`] trait;
//! - `faults`: FAULT_INJECTED's point classes and action codes, with their
//!   plan names;
//! - `names`: the name tables of event kinds, break and revoke reasons, and
//!   the `*_name` lookups;
//! - `tables`: [`layout_table`] and [`constant_table`], checked against the
//!   C header.
//!
//! This crate has no dependencies, so the guest tool (a static binary built
//! for each guest) compiles only the ABI, not the daemon.

/// A table of constants with the names of their C twins, written once:
/// `named![A, B]` is `&[(A, "A"), (B, "B")]`, and `named![A => "a"]` is
/// `&[(A, "A", "a")]` (with a plan name).
macro_rules! named {
    ($($c:ident),* $(,)?) => {
        &[$(($c, stringify!($c))),*]
    };
    ($($c:ident => $plan:literal),* $(,)?) => {
        &[$(($c, stringify!($c), $plan)),*]
    };
}

mod device;
mod faults;
mod flags;
mod names;
mod opcode;
mod status;
mod tables;
mod wire;

pub use device::*;
pub use faults::*;
pub use flags::*;
pub use names::*;
pub use opcode::*;
pub use status::*;
pub use tables::*;
pub use wire::*;
