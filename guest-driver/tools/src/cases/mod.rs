//! The guest test cases, in the order they run. Each returns Ok, Skip or
//! Fail with the values involved; the runner (ktap.rs) adds the pin balance
//! and kernel-log checks of the contract after every case.
//!
//! This file holds the ordered case list (the KTAP order and case names the
//! runner, docs/scenarios.md and campaign plans refer to) and the
//! contract's per-case checks; the cases live in one module per concern,
//! the helpers they share in `helpers` (also what the campaign and
//! data-loss cases use).

mod bad_input;
mod dax;
mod dereg_race;
mod dma;
mod events;
mod faults;
pub mod helpers;
mod introspection;
mod leases;
mod lifetimes;
mod pin_verdicts;
mod processes;
mod reset;
mod scrubber;
mod verbs;

use crate::cases::bad_input::{
    bad_dma_unknown_op_einval, bad_out_of_range_erange, bad_reg_args_einval, bad_stale_key_estale,
};
use crate::cases::dax::{
    fsdax_shortterm_pin_under_lease, fsdax_truncate_vs_pin_under_revoke_lease,
};
use crate::cases::dereg_race::dereg_mr_twice_at_once;
use crate::cases::dma::{
    dma_compare_swap_both_outcomes, dma_fetch_add, dma_fill_verify_const,
    dma_fill_verify_xor_detects_corruption, dma_odd_offset_over_scattered_pages, dma_read,
    dma_unaligned_mr_start_and_length, dma_write, query_device,
};
use crate::cases::events::{
    events_mr_revoked_import_source_gone, events_whole_records_poll_empty_no_lease_revokes_yet,
};
use crate::cases::faults::{
    fault_debugfs_file_lists_params_and_counts, fault_drop_event_discards_next_events,
    fault_lease_set_fails_lease_take, fault_params_refuse_bad_values,
    fault_pin_after_fails_reg_mr_and_unpins, fault_pin_times_counts_down,
    fault_release_delay_ms_defers_context_release,
};
use crate::cases::introspection::{
    debugfs_bench_pin_refuses_bad_input, debugfs_tables_list_contexts_and_mrs, fdinfo_lists_mrs,
};
use crate::cases::leases::basic::{
    ext4_never_breaks_layout_leases, holder_killed_while_breaker_waits,
    lease_survives_data_fd_close, lease_take_release_basic,
};
use crate::cases::leases::killed_breaker::killed_breaker_holding_the_lease_fd;
use crate::cases::leases::require_lease::reg_mr_require_lease_param;
use crate::cases::leases::revoke::{
    revoke_policy_collapse_range, revoke_policy_insert_range, revoke_policy_punch_hole,
    revoke_policy_reflink_onto_leased_file, revoke_policy_truncate, revoke_policy_write,
    revoke_policy_xfs_io_fcollapse, revoke_policy_xfs_io_finsert, revoke_policy_xfs_io_fpunch,
    revoke_policy_xfs_io_fzero, revoke_policy_xfs_io_pwrite, revoke_policy_xfs_io_reflink,
    revoke_policy_xfs_io_truncate, revoke_policy_zero_range,
};
use crate::cases::leases::timeout::{
    timeout_policy_collapse_range_lease_lost, timeout_policy_insert_range_lease_lost,
    timeout_policy_lease_lost, timeout_policy_punch_hole_lease_lost,
    timeout_policy_reflink_lease_lost, timeout_policy_write_lease_lost,
    timeout_policy_xfs_io_fcollapse, timeout_policy_xfs_io_fpunch, timeout_policy_xfs_io_reflink,
    timeout_policy_xfs_io_truncate, timeout_policy_zero_range_lease_lost,
};
use crate::cases::leases::truncate_race::concurrent_truncate_vs_reg_mr;
use crate::cases::leases::wait::{
    wait_policy_collapse_range_waits_for_release, wait_policy_insert_range_waits_for_release,
    wait_policy_punch_hole_waits_for_release, wait_policy_reflink_waits_for_release,
    wait_policy_truncate_waits_for_release, wait_policy_write_waits_for_release,
    wait_policy_xfs_io_fcollapse, wait_policy_xfs_io_fpunch, wait_policy_xfs_io_reflink,
    wait_policy_xfs_io_truncate, wait_policy_zero_range_waits_for_release,
};
use crate::cases::lifetimes::{
    lifetime_event_fd_outlives_device_fd, lifetime_export_fd_outlives_device_fd,
    lifetime_import_aliases_source,
};
use crate::cases::pin_verdicts::{
    pin_anon_ok, pin_fsdax_eopnotsupp, pin_hugetlb_ok, pin_memfd_ok, pin_private_file_ext4,
    pin_private_file_xfs_ok, pin_private_hugetlbfs, pin_private_tmpfs, pin_readonly_fsdax,
    pin_readonly_shared_file_ext4, pin_readonly_shared_file_xfs_ok, pin_shared_writable_ext4,
    pin_shared_writable_hugetlbfs, pin_shared_writable_tmpfs, pin_shared_writable_xfs,
    pin_shortterm_shared_writable_xfs_ok,
};
use crate::cases::processes::{
    exit_with_mrs_registered, fork_child_holds_fd_and_writes, scm_rights_sender_exits,
    sigkill_during_large_reg_mr, stress_many_contexts_all_cpus,
};
use crate::cases::reset::{
    device_reset_with_live_mrs, module_unload_reload, unbind_with_live_mrs_then_rebind,
};
use crate::cases::scrubber::{
    revoke_then_no_canary_in_fresh_memory, scrub_canaries_appear_in_registered_pages,
    timeout_lost_lease_scrub_reports_loss,
};
use crate::cases::verbs::truncate::{
    verbs_no_lease_truncate_keeps_pins, verbs_revoke_policy_truncate,
    verbs_timeout_policy_truncate_lease_lost, verbs_wait_policy_truncate_waits_for_dereg,
};
use crate::cases::verbs::verdicts::verbs_reg_mr_file_verdicts;
use crate::dataloss::{
    dataloss_ext4_writeback_truncate, dataloss_hugetlbfs_punch_hole, dataloss_hugetlbfs_truncate,
    dataloss_memfd_punch_hole, dataloss_memfd_truncate, dataloss_xfs_punch_hole_no_lease,
    dataloss_xfs_truncate_no_lease, dataloss_xfs_truncate_revoke_lease,
    dataloss_xfs_truncate_timeout_lease,
};
use crate::ktap::{Case, Checks};
use crate::sys::{self};
use std::time::Duration;

macro_rules! case {
    ($f:ident) => {
        Case {
            name: stringify!($f),
            run: $f,
        }
    };
}

pub(crate) use case;

/// Every case, in run order.
pub fn all() -> Vec<Case> {
    vec![
        case!(query_device),
        case!(pin_anon_ok),
        case!(pin_memfd_ok),
        case!(pin_shared_writable_tmpfs),
        case!(pin_private_tmpfs),
        case!(pin_hugetlb_ok),
        case!(pin_shared_writable_hugetlbfs),
        case!(pin_private_hugetlbfs),
        case!(pin_private_file_xfs_ok),
        case!(pin_readonly_shared_file_xfs_ok),
        case!(pin_private_file_ext4),
        case!(pin_readonly_shared_file_ext4),
        case!(pin_shared_writable_ext4),
        case!(pin_shared_writable_xfs),
        case!(pin_fsdax_eopnotsupp),
        case!(pin_readonly_fsdax),
        case!(pin_shortterm_shared_writable_xfs_ok),
        case!(dereg_mr_twice_at_once),
        case!(dma_write),
        case!(dma_read),
        case!(dma_compare_swap_both_outcomes),
        case!(dma_fetch_add),
        case!(dma_fill_verify_const),
        case!(dma_fill_verify_xor_detects_corruption),
        case!(dma_unaligned_mr_start_and_length),
        case!(dma_odd_offset_over_scattered_pages),
        case!(bad_dma_unknown_op_einval),
        case!(bad_stale_key_estale),
        case!(bad_out_of_range_erange),
        case!(bad_reg_args_einval),
        case!(fdinfo_lists_mrs),
        case!(debugfs_tables_list_contexts_and_mrs),
        case!(debugfs_bench_pin_refuses_bad_input),
        case!(events_whole_records_poll_empty_no_lease_revokes_yet),
        case!(events_mr_revoked_import_source_gone),
        case!(lifetime_event_fd_outlives_device_fd),
        case!(lifetime_export_fd_outlives_device_fd),
        case!(lifetime_import_aliases_source),
        case!(fork_child_holds_fd_and_writes),
        case!(scm_rights_sender_exits),
        case!(exit_with_mrs_registered),
        case!(sigkill_during_large_reg_mr),
        case!(lease_take_release_basic),
        case!(lease_survives_data_fd_close),
        case!(revoke_policy_truncate),
        case!(revoke_policy_punch_hole),
        case!(revoke_policy_xfs_io_truncate),
        case!(revoke_policy_collapse_range),
        case!(revoke_policy_insert_range),
        case!(revoke_policy_zero_range),
        case!(revoke_policy_reflink_onto_leased_file),
        case!(revoke_policy_xfs_io_fpunch),
        case!(revoke_policy_xfs_io_fcollapse),
        case!(revoke_policy_xfs_io_finsert),
        case!(revoke_policy_xfs_io_fzero),
        case!(revoke_policy_xfs_io_reflink),
        case!(revoke_policy_write),
        case!(revoke_policy_xfs_io_pwrite),
        case!(wait_policy_truncate_waits_for_release),
        case!(wait_policy_punch_hole_waits_for_release),
        case!(wait_policy_collapse_range_waits_for_release),
        case!(wait_policy_insert_range_waits_for_release),
        case!(wait_policy_zero_range_waits_for_release),
        case!(wait_policy_reflink_waits_for_release),
        case!(wait_policy_write_waits_for_release),
        case!(wait_policy_xfs_io_truncate),
        case!(wait_policy_xfs_io_fpunch),
        case!(wait_policy_xfs_io_fcollapse),
        case!(wait_policy_xfs_io_reflink),
        case!(timeout_policy_lease_lost),
        case!(timeout_policy_punch_hole_lease_lost),
        case!(timeout_policy_collapse_range_lease_lost),
        case!(timeout_policy_insert_range_lease_lost),
        case!(timeout_policy_zero_range_lease_lost),
        case!(timeout_policy_reflink_lease_lost),
        case!(timeout_policy_write_lease_lost),
        case!(timeout_policy_xfs_io_truncate),
        case!(timeout_policy_xfs_io_fpunch),
        case!(timeout_policy_xfs_io_fcollapse),
        case!(timeout_policy_xfs_io_reflink),
        case!(scrub_canaries_appear_in_registered_pages),
        case!(revoke_then_no_canary_in_fresh_memory),
        case!(timeout_lost_lease_scrub_reports_loss),
        case!(dataloss_memfd_truncate),
        case!(dataloss_memfd_punch_hole),
        case!(dataloss_hugetlbfs_truncate),
        case!(dataloss_hugetlbfs_punch_hole),
        case!(dataloss_xfs_truncate_no_lease),
        case!(dataloss_xfs_punch_hole_no_lease),
        case!(dataloss_xfs_truncate_timeout_lease),
        case!(dataloss_xfs_truncate_revoke_lease),
        case!(dataloss_ext4_writeback_truncate),
        case!(ext4_never_breaks_layout_leases),
        case!(holder_killed_while_breaker_waits),
        case!(killed_breaker_holding_the_lease_fd),
        case!(concurrent_truncate_vs_reg_mr),
        case!(reg_mr_require_lease_param),
        case!(fault_pin_after_fails_reg_mr_and_unpins),
        case!(fault_pin_times_counts_down),
        case!(fault_lease_set_fails_lease_take),
        case!(fault_release_delay_ms_defers_context_release),
        case!(fault_drop_event_discards_next_events),
        case!(fault_params_refuse_bad_values),
        case!(fault_debugfs_file_lists_params_and_counts),
        case!(fsdax_shortterm_pin_under_lease),
        case!(fsdax_truncate_vs_pin_under_revoke_lease),
        case!(stress_many_contexts_all_cpus),
        case!(device_reset_with_live_mrs),
        case!(unbind_with_live_mrs_then_rebind),
        case!(module_unload_reload),
        case!(verbs_reg_mr_file_verdicts),
        case!(verbs_no_lease_truncate_keeps_pins),
        case!(verbs_revoke_policy_truncate),
        case!(verbs_wait_policy_truncate_waits_for_dereg),
        case!(verbs_timeout_policy_truncate_lease_lost),
    ]
}

/// Pin balance and kernel-log checks of guest-driver/README.md.
pub struct GuestChecks {
    kmsg: Option<sys::Kmsg>,
}

impl GuestChecks {
    pub fn new() -> GuestChecks {
        GuestChecks { kmsg: None }
    }
}

impl Default for GuestChecks {
    fn default() -> Self {
        GuestChecks::new()
    }
}

impl Checks for GuestChecks {
    fn before(&mut self, name: &str) {
        self.kmsg = Some(sys::Kmsg::open_at_end());
        sys::kmsg_write(&format!("pinlease-guest: case {name} start\n"));
    }

    fn after(&mut self, name: &str) -> Vec<String> {
        let mut problems = Vec::new();
        match sys::wait_pin_balance(Duration::from_secs(2)) {
            Ok(Ok(_)) => {}
            Ok(Err((a, r))) => problems.push(format!(
                "pin balance: nr_foll_pin_acquired {a} != nr_foll_pin_released {r} \
                 ({} pins outstanding) 2 s after the case",
                a as i64 - r as i64
            )),
            Err(e) => problems.push(format!("pin balance: {e}")),
        }
        match self.kmsg.as_mut() {
            Some(k) if k.available() => {
                let bad = sys::kmsg_bad_lines(&k.read_new());
                for l in bad.iter().take(20) {
                    problems.push(format!("kernel log: {l}"));
                }
                if bad.len() > 20 {
                    problems.push(format!("kernel log: ... {} more bad lines", bad.len() - 20));
                }
            }
            _ => problems.push("kernel log: /dev/kmsg could not be opened".to_string()),
        }
        sys::kmsg_write(&format!("pinlease-guest: case {name} end\n"));
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_names_are_unique_and_plain() {
        let cases = all();
        assert!(cases.len() >= 25, "only {} cases", cases.len());
        let mut names: Vec<&str> = cases.iter().map(|c| c.name).collect();
        for n in &names {
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "case name {n:?}"
            );
            for bad in sys::KMSG_BAD {
                assert!(
                    !n.contains(bad),
                    "case name {n:?} would trip the kernel-log check"
                );
            }
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), cases.len(), "duplicate case names");
    }
}
