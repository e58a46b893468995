//! pinlease: an RDMA-like vhost-user virtio device for exercising long-term
//! page pins, truncate and layout leases from a guest kernel. This crate is
//! the daemon (`pinlease serve`) and its admin clients; the wire ABI is the
//! `pinlease-abi` crate and the host test kit (a vhost-user frontend, an
//! echo backend, the daemon launcher) is `pinlease-testkit`.
//!
//! How a request travels, and where each step lives:
//!
//! ```text
//!  vhost-user socket ──► server ──► backend ──► protocol ──► model
//!  (QEMU or the test    accept,    virtqueue    bytes to     contexts, MRs,
//!   frontend)           one        chains,      typed calls  leases, events
//!                       frontend   events out   and back     │
//!                       at a time  │                         ▼
//!                                  └── deferred, faults    guest_ram
//!  admin socket ──► admin ──► status_view (`pinlease status`)
//! ```
//!
//! - `abi`: the wire ABI, [`pinlease_abi`] under its old in-crate name so
//!   `crate::abi::X` paths keep working;
//! - [`listen`]: the listening sockets (a path, `--socket-count` paths,
//!   `--fd`, systemd's `LISTEN_FDS`), all opened before the serve loops;
//! - [`server`]: `pinlease serve`: a serve loop per socket, one frontend at
//!   a time each with a fresh device, until SIGINT/SIGTERM;
//! - [`backend`]: the vhost-user glue: virtqueue chains in, model calls,
//!   responses and events out (everything vhost/virtio-specific);
//! - [`protocol`]: request bytes to typed model calls and results back to
//!   bytes; all of it is hostile input;
//! - [`model`]: the device model, free of vhost/virtio types;
//! - [`guest_ram`]: the model's guest-memory interface over vm-memory;
//! - [`faults`]: fault plans and the engine that fires them;
//! - `deferred` (private): completions and events a fault rule holds back;
//! - [`config`]: `pinlease serve`'s command line as a configuration;
//! - [`capabilities`]: `--print-capabilities` (QEMU's backend program
//!   conventions);
//! - [`state`]: what the serve loops, the admin socket and the signal
//!   handler share: a slot per frontend, the fault plan;
//! - [`admin`]: the admin socket (`pinlease status`, `pinlease inject`);
//! - [`status_view`]: the status reply rendered as tables;
//! - `ratelimit` (private): rate-limited logging of bad input;
//! - [`sandbox`]: `--sandbox`: namespaces or chroot, no capabilities, and
//!   the supervisor outside;
//! - [`seccomp`]: `--seccomp`: the system-call allow-list;
//! - [`allocator`]: glibc malloc's arena limit (one arena for all the
//!   daemon's threads: docs/soak.md);
//! - [`error`]: the daemon's and CLI's errors.

pub(crate) use pinlease_abi as abi;

pub mod admin;
pub mod allocator;
pub mod backend;
pub mod capabilities;
pub mod config;
mod deferred;
pub mod error;
pub mod faults;
pub mod guest_ram;
pub mod listen;
pub mod model;
pub mod protocol;
mod ratelimit;
pub mod sandbox;
pub mod seccomp;
pub mod server;
pub mod state;
pub mod status_view;
