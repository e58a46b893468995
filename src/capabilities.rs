//! `pinlease --print-capabilities` (also `pinlease serve
//! --print-capabilities`): the JSON object of QEMU's vhost-user "backend
//! program conventions" (docs/interop/vhost-user.rst), `{"type": ...,
//! "features": [...]}`, then exit 0.
//!
//! The type: the schema's `VHostUserBackendType` (docs/interop/vhost-user.json)
//! lists 15 device types (9p, balloon, block, caif, console, crypto, gpu,
//! input, net, rng, rpmsg, rproc-serial, scsi, vsock, fs) and none for an
//! RDMA device. Management layers pick a backend by this type, so naming
//! one of those would offer pinlease in place of, say, a GPU backend;
//! pinlease says `rdma`, the virtio spec's name for device id 42 (the id
//! the device stands for, docs/abi.md §2.1), and is for management layers
//! that know it by that name. The features are `serve`'s optional flags,
//! read from its clap definition (the convention's own `--socket-path`,
//! `--fd` and `--print-capabilities` are not features: every backend has
//! them), so a new flag shows up here without being written twice.

use clap::CommandFactory;
use serde_json::{json, Value};

use crate::config::ServeArgs;

/// The `type` pinlease reports (see the module doc for why not one of
/// the schema's).
pub const BACKEND_TYPE: &str = "rdma";

/// The convention's flags, which every backend has: not features.
pub const CONVENTION_FLAGS: [&str; 3] = ["socket-path", "fd", "print-capabilities"];

/// `serve`'s optional flags (long names), in their definition order.
pub fn features() -> Vec<String> {
    ServeArgs::command()
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| a.get_long())
        .filter(|l| !CONVENTION_FLAGS.contains(l))
        .map(String::from)
        .collect()
}

/// The object `--print-capabilities` prints.
pub fn capabilities() -> Value {
    json!({"type": BACKEND_TYPE, "features": features()})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_features_are_serves_optional_flags() {
        let f = features();
        for flag in ["socket-count", "admin-socket", "faults", "scrub-period-ms"] {
            assert!(f.iter().any(|x| x == flag), "{flag} not in {f:?}");
        }
        for flag in CONVENTION_FLAGS {
            assert!(!f.iter().any(|x| x == flag), "{flag} in {f:?}");
        }
        let c = capabilities();
        assert_eq!(c.as_object().unwrap().len(), 2, "{c}");
        assert_eq!(c["type"], BACKEND_TYPE);
    }
}
