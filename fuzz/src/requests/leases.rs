//! The lease steps: LEASE_TAKE, LEASE_RELEASE and LEASE_BREAK, whose
//! totals the model computes by applying each break policy to the
//! overlapping leases and their holders' file-backed MRs.

use pinlease_abi::*;

use super::model::{Lease, LeaseState};
use super::step::file;
use super::{Harness, LIMITS};
use crate::input::Input;

/// Where a request's fields end when `start + length` (0 = to the end).
fn range_end(start: u64, length: u64) -> Option<u64> {
    if length == 0 {
        Some(u64::MAX)
    } else {
        start.checked_add(length)
    }
}

impl Harness {
    pub(super) fn lease_take(&mut self, input: &mut Input) {
        let c = self.pick_ctx(input);
        let f = file(input.u8());
        let (start, length) = Self::pick_file_range(input);
        let sel = input.u8();
        let policy = if sel < 0xf0 {
            u32::from(sel % 3) + 1
        } else {
            input.u32()
        };
        let mut errs = Vec::new();
        self.open_ctx(c, &mut errs);
        if !(PL_POLICY_REVOKE..=PL_POLICY_TIMEOUT).contains(&policy) {
            errs.push(Status::Inval);
        }
        let end = range_end(start, length);
        match end {
            None => errs.push(Status::Range),
            Some(end) => {
                let breaking = self.leases.iter().any(|l| {
                    !l.gone
                        && l.file == f
                        && l.state == LeaseState::Breaking
                        && l.overlaps(start, end)
                });
                if breaking {
                    errs.push(Status::Busy);
                }
            }
        }
        if self.leases.iter().filter(|l| !l.gone).count() >= LIMITS.max_leases as usize {
            errs.push(Status::NoMem);
        }
        let req = PlLeaseTakeReq {
            file: f,
            start,
            length,
            policy,
            owner_pid: 7,
        };
        if let Some(resp) = self.expect(Opcode::LeaseTake, c, req.as_bytes(), &errs) {
            let handle = PlHandleResp::read_from(&resp).unwrap().handle;
            assert!(!self.leases.iter().any(|l| l.handle == handle));
            self.leases.push(Lease {
                handle,
                holder: c,
                file: f,
                start,
                end: end.unwrap(),
                policy,
                state: LeaseState::Active,
                gone: false,
            });
        }
    }

    pub(super) fn lease_release(&mut self, input: &mut Input) {
        let c = self.pick_ctx(input);
        let h = self.pick_lease(input);
        let sel = input.u8();
        let reason = if sel < 0xf0 {
            u32::from(sel & 1)
        } else {
            input.u32()
        };
        let mut errs = Vec::new();
        self.open_ctx(c, &mut errs);
        if reason > PL_RELEASE_LOST {
            errs.push(Status::Inval);
        }
        let li = self.lease(h, &mut errs);
        if let Some(i) = li {
            if self.leases[i].holder != c {
                errs.push(Status::Perm);
            }
            // Undocumented in docs/abi.md 5.15's table but explained by
            // the device: a REVOKED lease's MRs are gone, nothing to lose.
            if reason == PL_RELEASE_LOST && self.leases[i].state == LeaseState::Revoked {
                errs.push(Status::Inval);
            }
        }
        let req = PlLeaseReleaseReq {
            lease: h,
            reason,
            reserved: 0,
        };
        if self
            .expect(Opcode::LeaseRelease, c, req.as_bytes(), &errs)
            .is_some()
        {
            let l = &mut self.leases[li.unwrap()];
            if reason == PL_RELEASE_LOST {
                l.state = LeaseState::Lost;
            } else {
                l.gone = true;
            }
        }
    }

    pub(super) fn lease_break(&mut self, input: &mut Input) {
        let f = file(input.u8());
        let (start, length) = Self::pick_file_range(input);
        let sel = input.u8();
        let reason = if sel < 0xf0 {
            u32::from(sel % 8) + 1
        } else {
            input.u32()
        };
        let mut errs = Vec::new();
        if !(PL_BREAK_TRUNCATE..=PL_BREAK_OTHER).contains(&reason) {
            errs.push(Status::Inval);
        }
        let end = range_end(start, length);
        if end.is_none() {
            errs.push(Status::Range);
        }
        let req = PlLeaseBreakReq {
            file: f,
            start,
            length,
            reason,
            reserved: 0,
        };
        let Some(resp) = self.expect(Opcode::LeaseBreak, 0, req.as_bytes(), &errs) else {
            return;
        };
        let end = end.unwrap();
        let mut want = PlLeaseBreakResp::default();
        for li in 0..self.leases.len() {
            let l = &self.leases[li];
            if l.gone || l.file != f || !l.overlaps(start, end) {
                continue;
            }
            want.leases += 1;
            match l.state {
                LeaseState::Breaking => want.leases_held += 1,
                LeaseState::Revoked | LeaseState::Lost => {}
                LeaseState::Active if l.policy == PL_POLICY_REVOKE => {
                    let in_range: Vec<usize> = (0..self.mrs.len())
                        .filter(|&i| {
                            let m = &self.mrs[i];
                            !m.gone
                                && m.ctx == l.holder
                                && m.file.is_some_and(|(mf, fo)| {
                                    mf == l.file && l.overlaps(fo, fo.saturating_add(m.length))
                                })
                        })
                        .collect();
                    for i in in_range {
                        if self.mrs[i].live {
                            want.pages_unpinned += self.revoke(i);
                            want.mrs_revoked += 1;
                        }
                    }
                    self.leases[li].state = LeaseState::Revoked;
                }
                LeaseState::Active => {
                    self.leases[li].state = LeaseState::Breaking;
                    want.leases_held += 1;
                }
            }
        }
        let got = PlLeaseBreakResp::read_from(&resp).unwrap();
        assert_eq!(got, want, "{}: LEASE_BREAK totals", self.step);
    }
}
