//! Names of the ABI's enumerated values, for logs, status output and test
//! messages. Each table pairs a value with the name of its C constant (as in
//! `pinlease_abi.h` and docs/abi.md); the `*_name` lookups return that name
//! without its prefix (`PL_EVENT_MR_REVOKED` -> `MR_REVOKED`). Opcodes and
//! statuses have their table in the enum: [`Opcode::ALL`] with
//! [`Opcode::const_name`], [`Status::ALL`] with [`Status::const_name`].

use crate::*;

/// Event kinds (`PlEvent::kind`).
pub const EVENT_KINDS: &[(u16, &str)] = named![
    PL_EVENT_MR_REVOKED,
    PL_EVENT_LEASE_BROKEN,
    PL_EVENT_LEASE_LOST,
    PL_EVENT_CONTEXT_TORN_DOWN,
    PL_EVENT_FAULT_INJECTED,
    PL_EVENT_DEVICE_ERROR,
    PL_EVENT_SCRUB_LOST_ACCESS,
    PL_EVENT_NEEDS_RESET,
];

/// LEASE_BREAK reasons (`PlLeaseBreakReq::reason`, LEASE_BROKEN `args[1]`).
pub const BREAK_REASONS: &[(u32, &str)] = named![
    PL_BREAK_TRUNCATE,
    PL_BREAK_PUNCH_HOLE,
    PL_BREAK_COLLAPSE_RANGE,
    PL_BREAK_INSERT_RANGE,
    PL_BREAK_ZERO_RANGE,
    PL_BREAK_REFLINK,
    PL_BREAK_WRITE,
    PL_BREAK_OTHER,
    PL_BREAK_INJECTED,
];

/// MR_REVOKED reasons (`args[1]` of the event).
pub const REVOKE_REASONS: &[(u64, &str)] = named![
    PL_REVOKE_LEASE_BREAK,
    PL_REVOKE_MEMORY_MAP,
    PL_REVOKE_CONTEXT_CLOSE,
    PL_REVOKE_SOURCE_GONE,
    PL_REVOKE_INJECTED,
];

const EVENT_PREFIX: &str = "PL_EVENT_";
const BREAK_PREFIX: &str = "PL_BREAK_";
const REVOKE_PREFIX: &str = "PL_REVOKE_";

/// `MR_REVOKED` for `PL_EVENT_MR_REVOKED`; None for a kind the ABI lacks.
pub fn event_kind_name(kind: u16) -> Option<&'static str> {
    short_name(EVENT_KINDS, kind, EVENT_PREFIX)
}

/// `TRUNCATE` for `PL_BREAK_TRUNCATE`; None for a reason the ABI lacks.
pub fn break_reason_name(reason: u32) -> Option<&'static str> {
    short_name(BREAK_REASONS, reason, BREAK_PREFIX)
}

/// `LEASE_BREAK` for `PL_REVOKE_LEASE_BREAK`; None for a reason the ABI lacks.
pub fn revoke_reason_name(reason: u64) -> Option<&'static str> {
    short_name(REVOKE_REASONS, reason, REVOKE_PREFIX)
}

/// `REG_MR` for `PL_OP_REG_MR`; None for an opcode the ABI lacks.
pub fn opcode_name(op: u16) -> Option<&'static str> {
    Opcode::from_u16(op).map(Opcode::name)
}

/// `EPERM` for `PL_S_EPERM` (`OK` for 0); None for a status the ABI lacks.
pub fn status_name(status: u32) -> Option<&'static str> {
    Status::from_u32(status).map(Status::name)
}

fn short_name<T: Copy + PartialEq>(
    table: &[(T, &'static str)],
    value: T,
    prefix: &str,
) -> Option<&'static str> {
    table
        .iter()
        .find(|(v, _)| *v == value)
        .map(|&(_, name)| without_prefix(name, prefix))
}

/// `name` without `prefix`; the whole name if it lacks the prefix (the
/// tests below make sure every table entry has it).
pub(crate) fn without_prefix(name: &'static str, prefix: &str) -> &'static str {
    name.strip_prefix(prefix).unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::fmt::Debug;

    use super::*;

    /// Every entry carries the prefix, and values and names are unique.
    fn check_table<T: Copy + Ord + Debug>(what: &str, table: &[(T, &str)], prefix: &str) {
        let values: BTreeSet<T> = table.iter().map(|e| e.0).collect();
        let names: BTreeSet<&str> = table.iter().map(|e| e.1).collect();
        assert_eq!(values.len(), table.len(), "{what}: a value listed twice");
        assert_eq!(names.len(), table.len(), "{what}: a name listed twice");
        for (v, name) in table {
            assert!(
                name.starts_with(prefix) && name.len() > prefix.len(),
                "{what} {v:?}: name {name:?} lacks prefix {prefix}"
            );
        }
    }

    #[test]
    fn every_event_kind_has_one_name() {
        check_table("event kind", EVENT_KINDS, EVENT_PREFIX);
        // The kinds run from MR_REVOKED (1) to NEEDS_RESET without a gap.
        check_range(
            "event kind",
            PL_EVENT_MR_REVOKED,
            PL_EVENT_NEEDS_RESET,
            event_kind_name,
        );
        assert_eq!(event_kind_name(PL_EVENT_MR_REVOKED), Some("MR_REVOKED"));
        assert_eq!(event_kind_name(PL_EVENT_NEEDS_RESET), Some("NEEDS_RESET"));
    }

    /// Every value of `first..=last` has a name; 0 and `last + 1` have none.
    fn check_range<T>(what: &str, first: T, last: T, name: fn(T) -> Option<&'static str>)
    where
        T: Copy + Debug + PartialEq + From<u8> + std::ops::Add<Output = T>,
        std::ops::RangeInclusive<T>: Iterator<Item = T>,
    {
        for v in first..=last {
            assert!(name(v).is_some(), "{what} {v:?} has no name");
        }
        assert_eq!(name(T::from(0)), None);
        assert_eq!(name(last + T::from(1)), None);
    }

    #[test]
    fn every_break_reason_has_one_name() {
        check_table("break reason", BREAK_REASONS, BREAK_PREFIX);
        check_range(
            "break reason",
            PL_BREAK_TRUNCATE,
            PL_BREAK_INJECTED,
            break_reason_name,
        );
        assert_eq!(break_reason_name(PL_BREAK_PUNCH_HOLE), Some("PUNCH_HOLE"));
    }

    #[test]
    fn every_revoke_reason_has_one_name() {
        check_table("revoke reason", REVOKE_REASONS, REVOKE_PREFIX);
        check_range(
            "revoke reason",
            PL_REVOKE_LEASE_BREAK,
            PL_REVOKE_INJECTED,
            revoke_reason_name,
        );
        assert_eq!(
            revoke_reason_name(PL_REVOKE_LEASE_BREAK),
            Some("LEASE_BREAK")
        );
    }

    /// An enum's `all` members, each `(value, C constant, name)` by `entry`:
    /// the constants pass [`check_table`] and `lookup` finds every name.
    fn check_enum<E: Copy, V: Copy + Ord + Debug>(
        what: &str,
        all: &[E],
        prefix: &str,
        entry: fn(E) -> (V, &'static str, &'static str),
        lookup: fn(V) -> Option<&'static str>,
    ) {
        let table: Vec<(V, &str)> = all.iter().map(|&e| (entry(e).0, entry(e).1)).collect();
        check_table(what, &table, prefix);
        for &e in all {
            let (v, _, name) = entry(e);
            assert_eq!(lookup(v), Some(name));
        }
    }

    #[test]
    fn every_opcode_has_one_name() {
        let entry = |op: Opcode| (op as u16, op.const_name(), op.name());
        check_enum("opcode", &Opcode::ALL, "PL_OP_", entry, opcode_name);
        assert_eq!(opcode_name(Opcode::RegMr as u16), Some("REG_MR"));
        assert_eq!(opcode_name(Opcode::ALL.len() as u16), None);
    }

    #[test]
    fn every_status_has_one_name() {
        let entry = |s: Status| (s as u32, s.const_name(), s.name());
        check_enum("status", &Status::ALL, "PL_S_", entry, status_name);
        assert_eq!(status_name(0), Some("OK"));
        assert_eq!(status_name(Status::Perm as u32), Some("EPERM"));
        assert_eq!(status_name(3), None);
    }
}
