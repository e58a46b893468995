//! System helpers for the guest tool, one module per concern; all
//! re-exported here, so callers write `sys::X`.

mod errno;
mod fds;
mod files;
mod kmsg;
mod mapping;
mod memstat;
mod modules;
mod process;
mod snapshot;

pub use errno::*;
pub use fds::*;
pub use files::*;
pub use kmsg::*;
pub use mapping::*;
pub use memstat::*;
pub use modules::*;
pub use process::*;
pub use snapshot::*;
