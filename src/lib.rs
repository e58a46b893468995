//! pinlease: an RDMA-like vhost-user virtio device for exercising long-term
//! page pins, truncate and layout leases from a guest kernel.
//!
//! - [`abi`]: the wire ABI (mirrored in `guest-driver/include/pinlease_abi.h`);
//! - [`model`]: the device model, free of vhost/virtio types;
//! - [`protocol`]: request bytes to model calls and back;
//! - [`guest_ram`]: the model's guest-memory interface over vm-memory;
//! - [`frontend`]: a vhost-user frontend for host tests and benchmarks.

pub mod abi;
pub mod admin;
pub mod backend;
pub mod c_header;
pub mod config;
pub mod deferred;
pub mod error;
pub mod faults;
pub mod frontend;
pub mod guest_ram;
pub mod model;
pub mod protocol;
pub mod ratelimit;
pub mod server;
pub mod status_view;
