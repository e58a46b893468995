//! The ioctls the fuzzer drives: every `PINLEASE_IOC_*` request number of
//! the UAPI, taken from `uapi::constant_table()` (which
//! tests/uapi_layout.rs checks against pinlease_uapi.h), so an ioctl added
//! to the header is fuzzed or fails `args::tests`, never silently skipped.

use crate::uapi::{constant_table, PINLEASE_IOC_MAGIC};
use std::sync::OnceLock;

/// One ioctl of the UAPI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ioctl {
    pub req: u32,
    /// The C name without `PINLEASE_IOC_` (`REG_MR`).
    pub name: &'static str,
}

const PREFIX: &str = "PINLEASE_IOC_";

/// Every ioctl of the UAPI, in the header's order.
pub fn all() -> &'static [Ioctl] {
    static ALL: OnceLock<Vec<Ioctl>> = OnceLock::new();
    ALL.get_or_init(|| {
        constant_table()
            .into_iter()
            .filter_map(|(name, value)| {
                let short = name.strip_prefix(PREFIX)?;
                (short != "MAGIC").then_some(Ioctl {
                    req: value as u32,
                    name: short,
                })
            })
            .collect()
    })
}

/// Counter slots: one per ioctl of [`all`], then [`OTHER`].
pub fn slots() -> usize {
    all().len() + 1
}

/// The name of the slot for request numbers outside the UAPI.
pub const OTHER: &str = "OTHER";

/// The counter slot of a request number.
pub fn slot(req: u32) -> usize {
    all()
        .iter()
        .position(|i| i.req == req)
        .unwrap_or(all().len())
}

pub fn slot_name(slot: usize) -> &'static str {
    all().get(slot).map_or(OTHER, |i| i.name)
}

/// True when `req` carries the pinlease magic (its type byte).
pub fn has_magic(req: u32) -> bool {
    (req >> 8) & 0xff == PINLEASE_IOC_MAGIC
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzz::counts::IOCTL_SLOTS;
    use crate::uapi::*;

    #[test]
    fn the_list_is_the_uapi() {
        let names: Vec<&str> = all().iter().map(|i| i.name).collect();
        assert!(names.contains(&"REG_MR"));
        assert!(names.contains(&"LEASE_RELEASE"));
        assert!(!names.contains(&"MAGIC"));
        for i in all() {
            assert!(has_magic(i.req), "{}", i.name);
            assert_eq!(ioctl_name(i.req), format!("{PREFIX}{}", i.name));
        }
        assert!(
            slots() <= IOCTL_SLOTS,
            "{} ioctls: raise IOCTL_SLOTS",
            slots()
        );
        assert_eq!(slot(PINLEASE_IOC_DMA), 3);
        assert_eq!(slot_name(slot(0xdead)), OTHER);
    }
}
