//! The device model: pure logic over a guest-memory interface, with no
//! vhost, virtio or vm-memory types, so it can be unit-tested and fuzzed on
//! its own. The vhost-user glue (`crate::backend`) turns virtqueue chains
//! into calls here (through `crate::protocol`) and events into buffers.
//!
//! Layers, from the bottom up. A module imports only modules listed before
//! it (`layering` holds the test that enforces it), so no two modules
//! import each other:
//!
//! - `table`: handles and the published tables
//! - `memory`: the guest-memory interface
//! - `counters`: device counters
//! - `events`: the event queue
//! - `context`: a context and its hardware state
//! - `lease`: the lease table
//! - `mr`: memory regions, their gate, exports and scrub counters
//! - `child`: a context's children (event channels, exports)
//! - `device`: the device and its operations (`device/`)
//! - `scrub`: the canary scrubber, which runs over the device's MRs
//! - `status`: the status snapshot of a device

pub mod child;
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
mod layering;
#[cfg(test)]
mod scenarios;
#[cfg(test)]
mod test_support;
