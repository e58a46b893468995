//! The codes a FAULT_INJECTED event carries (docs/faults.md §1.2, §1.3):
//! `args[0]` is the fault point, `class << 16 | sub`, and `args[1]` the
//! action. They are wire values: the guest module counts FAULT_INJECTED
//! events by action, and fault plans, the daemon's status and the campaign
//! runner name classes and actions by the plan spellings here.
//!
//! Each row is `(code, C constant, plan name)`: the constant as in
//! `pinlease_abi.h` (checked by `tests/abi_layout.rs`), the plan name as a
//! fault plan writes it (`revoke-mr`); a unit test keeps the two spellings
//! of a row in step.

/// `class` of a fault point code (`args[0] >> 16`).
pub const PL_FAULT_CLASS_REQUEST: u32 = 1;
pub const PL_FAULT_CLASS_EVENT: u32 = 2;
pub const PL_FAULT_CLASS_MEMORY_MAP: u32 = 3;
pub const PL_FAULT_CLASS_CONTEXT_TEARDOWN: u32 = 4;
pub const PL_FAULT_CLASS_LEASE_BREAK: u32 = 5;
/// `pinlease inject now`: never named by a rule.
pub const PL_FAULT_CLASS_RUNTIME: u32 = 6;

/// Fault actions (`args[1]`).
pub const PL_FAULT_ACTION_FAIL: u32 = 1;
pub const PL_FAULT_ACTION_DELAY: u32 = 2;
pub const PL_FAULT_ACTION_DROP: u32 = 3;
pub const PL_FAULT_ACTION_DUPLICATE: u32 = 4;
pub const PL_FAULT_ACTION_REORDER: u32 = 5;
pub const PL_FAULT_ACTION_REVOKE_MR: u32 = 6;
pub const PL_FAULT_ACTION_SPURIOUS_BREAK: u32 = 7;
pub const PL_FAULT_ACTION_WITHHOLD: u32 = 8;
pub const PL_FAULT_ACTION_NEEDS_RESET: u32 = 9;
pub const PL_FAULT_ACTION_ABORT: u32 = 10;

/// Fault point classes: `(class, C constant, plan name)`.
pub const FAULT_CLASSES: &[(u32, &str, &str)] = named![
    PL_FAULT_CLASS_REQUEST => "request",
    PL_FAULT_CLASS_EVENT => "event",
    PL_FAULT_CLASS_MEMORY_MAP => "memory-map",
    PL_FAULT_CLASS_CONTEXT_TEARDOWN => "context-teardown",
    PL_FAULT_CLASS_LEASE_BREAK => "lease-break",
    PL_FAULT_CLASS_RUNTIME => "runtime",
];

/// Fault actions: `(action, C constant, plan name)`.
pub const FAULT_ACTIONS: &[(u32, &str, &str)] = named![
    PL_FAULT_ACTION_FAIL => "fail",
    PL_FAULT_ACTION_DELAY => "delay",
    PL_FAULT_ACTION_DROP => "drop",
    PL_FAULT_ACTION_DUPLICATE => "duplicate",
    PL_FAULT_ACTION_REORDER => "reorder",
    PL_FAULT_ACTION_REVOKE_MR => "revoke-mr",
    PL_FAULT_ACTION_SPURIOUS_BREAK => "spurious-break",
    PL_FAULT_ACTION_WITHHOLD => "withhold",
    PL_FAULT_ACTION_NEEDS_RESET => "needs-reset",
    PL_FAULT_ACTION_ABORT => "abort",
];

/// `memory-map` for `PL_FAULT_CLASS_MEMORY_MAP`; None for a class the ABI lacks.
pub fn fault_class_name(class: u32) -> Option<&'static str> {
    plan_name(FAULT_CLASSES, class)
}

/// `revoke-mr` for `PL_FAULT_ACTION_REVOKE_MR`; None for an action the ABI lacks.
pub fn fault_action_name(action: u32) -> Option<&'static str> {
    plan_name(FAULT_ACTIONS, action)
}

/// The action a plan names `name`, if any.
pub fn fault_action_by_name(name: &str) -> Option<u32> {
    FAULT_ACTIONS
        .iter()
        .find(|&&(_, _, n)| n == name)
        .map(|&(a, _, _)| a)
}

fn plan_name(
    table: &'static [(u32, &'static str, &'static str)],
    code: u32,
) -> Option<&'static str> {
    table
        .iter()
        .find(|&&(c, _, _)| c == code)
        .map(|&(_, _, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `PL_FAULT_ACTION_REVOKE_MR` <-> `revoke-mr`: one spelling of a row
    /// derives from the other, codes run 1..=N without gaps (the module
    /// sizes its counters by the last one).
    fn check(table: &[(u32, &str, &str)], prefix: &str) {
        for (i, &(code, cname, name)) in table.iter().enumerate() {
            assert_eq!(code as usize, i + 1, "{cname}");
            let suffix = cname.strip_prefix(prefix).expect(cname);
            assert_eq!(
                suffix.to_ascii_lowercase().replace('_', "-"),
                name,
                "{cname}"
            );
        }
    }

    #[test]
    fn both_spellings_of_each_row_agree() {
        check(FAULT_CLASSES, "PL_FAULT_CLASS_");
        check(FAULT_ACTIONS, "PL_FAULT_ACTION_");
    }

    #[test]
    fn lookups() {
        assert_eq!(
            fault_class_name(PL_FAULT_CLASS_LEASE_BREAK),
            Some("lease-break")
        );
        assert_eq!(fault_class_name(0), None);
        assert_eq!(fault_action_name(PL_FAULT_ACTION_ABORT), Some("abort"));
        assert_eq!(fault_action_name(11), None);
        assert_eq!(
            fault_action_by_name("spurious-break"),
            Some(PL_FAULT_ACTION_SPURIOUS_BREAK)
        );
        assert_eq!(fault_action_by_name("spurious_break"), None);
    }
}
