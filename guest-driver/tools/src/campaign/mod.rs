//! The campaign cases (`campaign_*`): the workload fault-injection runs
//! drive (docs/faults.md section 3). Under a fault plan any request may
//! fail with any status, completions may be dropped (the module then resets
//! the device and later ioctls return -EIO), events may be lost, duplicated
//! or delayed, MRs revoked and leases broken at any time. So these cases do
//! their operations, count the outcomes (one `outcomes:` diagnostic line per
//! case), bound every wait, always tear down, and FAIL only on what no plan
//! allows:
//!
//! - data that a successful device READ/WRITE/FILL/atomic left wrong in a
//!   buffer only the case writes (a failed request proves nothing: a fault
//!   "after" the model acted reports failure with the effect in place);
//! - a canary of another MR in a scrub MR's pages;
//! - the module still listing a context after its fds are closed (or its
//!   process killed), past the bound;
//! - a breaker (truncate, punch) still blocked past its bound after the
//!   lease was released and the device fd closed;
//! - canaries in fresh memory (`campaign_stray_scan`);
//! - a pin leak, a bad kernel log line or a crashed worker after a short
//!   ioctl fuzz run (`campaign_ioctl_fuzz`, docs/guest-fuzz.md);
//! - and, when no fault was in play during the case (no FAULT_INJECTED or
//!   NEEDS_RESET event, no module reset, timeout or fault log line, no
//!   change in debugfs `faults`, module fault parameters at their
//!   defaults), any failed operation: the plain suite run holds them to
//!   full success.

mod churn;
mod helpers;
mod ioctl_fuzz;
mod leases;
mod outcomes;
mod process_death;
mod stray_scan;

use crate::cases::case;
use crate::ktap::Case;
use churn::campaign_mr_churn;
use ioctl_fuzz::campaign_ioctl_fuzz;
use leases::{campaign_lease_revoke, campaign_lease_timeout, campaign_lease_wait};
use process_death::campaign_process_death;
use stray_scan::campaign_stray_scan;

/// The campaign cases, in run order (the stray scan last: it checks what
/// the others may have left behind).
pub fn all() -> Vec<Case> {
    vec![
        case!(campaign_mr_churn),
        case!(campaign_lease_revoke),
        case!(campaign_lease_wait),
        case!(campaign_lease_timeout),
        case!(campaign_process_death),
        case!(campaign_ioctl_fuzz),
        case!(campaign_stray_scan),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn campaign_cases_are_named_for_the_glob() {
        for c in all() {
            assert!(crate::ktap::glob_match("campaign_*", c.name), "{}", c.name);
        }
        assert_eq!(all().last().map(|c| c.name), Some("campaign_stray_scan"));
    }
}
