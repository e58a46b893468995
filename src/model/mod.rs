//! The device model: pure logic over a guest-memory interface, with no
//! vhost, virtio or vm-memory types, so it can be unit-tested and fuzzed on
//! its own. The vhost-user glue (`crate::backend`) turns virtqueue chains
//! into calls here (through `crate::protocol`) and events into buffers.

pub mod context;
pub mod counters;
pub mod device;
pub mod events;
pub mod lease;
pub mod memory;
pub mod mr;
pub mod scrub;
pub mod status;
pub mod table;

pub use device::{AtomicOp, Device, DmaDir, Limits, RegMr, Reject};

#[cfg(test)]
mod tests;
