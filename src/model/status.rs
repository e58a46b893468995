//! A point-in-time view of the device for `pinlease status`: contexts with
//! their children, MRs, the lease table and counters. Built from the
//! published tables without taking the writer lock.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::abi::PlFileId;
use crate::model::child::ChildKind;
use crate::model::device::Device;
use crate::model::events::EventStats;
use crate::model::lease::LeaseState;

/// A state, kind, policy or reason name: the daemon writes its fixed
/// names (borrowed), a reader of the JSON gets owned copies.
pub type Name = Cow<'static, str>;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusSnapshot {
    pub taken_at_unix_ms: u64,
    pub uptime_ms: u64,
    pub memory_regions: Vec<MemoryRegionStatus>,
    pub contexts: Vec<ContextStatus>,
    pub mrs: Vec<MrStatus>,
    pub leases: Vec<LeaseStatus>,
    pub pinned_pages: u64,
    pub pins: u64,
    /// A fault plan's needs-reset put the device in NEEDS_RESET.
    pub needs_reset: bool,
    pub counters: CounterStatus,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemoryRegionStatus {
    pub gpa: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContextStatus {
    pub handle: String,
    pub pid: u32,
    pub comm: String,
    pub state: Name,
    pub mrs: usize,
    pub leases: usize,
    pub children: Vec<ChildStatus>,
    pub age_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildStatus {
    pub handle: String,
    pub kind: Name,
    /// For an export: the exported MR key and its reference count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refs: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileStatus {
    pub dev: u64,
    pub ino: u64,
    pub generation: u32,
}

impl From<&PlFileId> for FileStatus {
    fn from(f: &PlFileId) -> Self {
        FileStatus {
            dev: f.dev,
            ino: f.ino,
            generation: f.generation,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MrStatus {
    pub key: String,
    pub context: String,
    pub pages: usize,
    pub length: u64,
    pub access: String,
    pub longterm: bool,
    pub state: Name,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(default)]
    pub revoke_reason: Option<Name>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imported_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<FileStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Scrubber counters, for `PL_REG_SCRUB` MRs only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scrub: Option<MrScrubStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MrScrubStatus {
    /// The canary seed (`pl_scrub_seed(key)`, docs/abi.md §5.9.1).
    pub seed: String,
    pub rounds: u64,
    pub canaries_written: u64,
    pub mismatches: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_mismatch_offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_round_unix_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScrubCounterStatus {
    /// Period in force; 0: the scrubber is off.
    pub period_ms: u64,
    pub rounds: u64,
    pub mr_passes: u64,
    pub canaries_written: u64,
    pub mismatches: u64,
    /// Scrub passes into MRs under a LOST lease (also in `lost_accesses`).
    pub lost_accesses: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseStatus {
    pub handle: String,
    pub file: FileStatus,
    pub start: u64,
    /// None: to the end of the file.
    pub end: Option<u64>,
    pub holder: String,
    pub owner_pid: u32,
    pub policy: Name,
    pub state: Name,
    pub since_unix_ms: u64,
    pub mrs: usize,
    pub pinned_pages: u64,
    pub lost_accesses: u64,
    /// Of `lost_accesses`, the scrubber's.
    pub scrub_lost_accesses: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CounterStatus {
    pub requests: BTreeMap<String, BTreeMap<String, u64>>,
    pub bad_input: BTreeMap<String, u64>,
    pub bad_input_total: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub revokes: u64,
    pub lost_accesses: u64,
    pub memory_map_updates: u64,
    pub device_resets: u64,
    pub scrub: ScrubCounterStatus,
    pub events: EventStats,
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn age_ms(t: SystemTime) -> u64 {
    SystemTime::now()
        .duration_since(t)
        .map_or(0, |d| d.as_millis() as u64)
}

pub fn hex(h: u64) -> String {
    format!("{h:#x}")
}

fn access_str(a: u32) -> String {
    let mut s = String::new();
    for (bit, c) in [(1, 'r'), (2, 'w'), (4, 'a')] {
        s.push(if a & bit != 0 { c } else { '-' });
    }
    s
}

impl Device {
    pub fn status(&self) -> StatusSnapshot {
        let now = SystemTime::now();
        let mut contexts: Vec<ContextStatus> = self
            .contexts
            .snapshot()
            .values()
            .map(|c| {
                let hw = c.hw();
                let children = hw
                    .children
                    .iter()
                    .filter_map(|h| self.children.get(*h))
                    .map(|ch| {
                        let (mr, refs) = match &ch.kind {
                            ChildKind::Export(e) => (Some(hex(e.mr.key)), Some(e.refs())),
                            ChildKind::EventChannel => (None, None),
                        };
                        ChildStatus {
                            handle: hex(ch.handle),
                            kind: ch.kind.name().into(),
                            mr,
                            refs,
                        }
                    })
                    .collect();
                ContextStatus {
                    handle: hex(c.handle),
                    pid: c.pid,
                    comm: c.comm.clone(),
                    state: if hw.closed { "closed" } else { "open" }.into(),
                    mrs: hw.mrs.len(),
                    leases: hw.leases.len(),
                    children,
                    age_ms: age_ms(c.created),
                }
            })
            .collect();
        contexts.sort_by(|a, b| a.handle.cmp(&b.handle));

        let mr_snapshot = self.mrs.snapshot();
        let mut lease_usage: BTreeMap<u64, (usize, u64)> = BTreeMap::new();
        let mut mrs: Vec<MrStatus> = mr_snapshot
            .values()
            .map(|m| {
                let lease = m
                    .lease
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .map(|l| l.handle);
                if let Some(l) = lease {
                    if m.is_live() {
                        let u = lease_usage.entry(l).or_default();
                        u.0 += 1;
                        u.1 += m.npages() as u64;
                    }
                }
                let reason = *m.revoke_reason.lock().unwrap_or_else(|e| e.into_inner());
                MrStatus {
                    key: hex(m.key),
                    context: hex(m.ctx),
                    pages: m.page_list().len(),
                    length: m.length,
                    access: access_str(m.access),
                    longterm: m.flags & crate::abi::PL_REG_LONGTERM != 0,
                    state: if m.is_live() { "live" } else { "revoked" }.into(),
                    revoke_reason: reason.map(|r| r.name().into()),
                    imported_from: match &m.pages {
                        crate::model::mr::Pages::Imported(src) => Some(hex(src.key)),
                        _ => None,
                    },
                    file: m.file.as_ref().map(|f| FileStatus::from(&f.file)),
                    file_offset: m.file.as_ref().map(|f| f.offset),
                    lease: lease.map(hex),
                    bytes_read: m.bytes_read.load(std::sync::atomic::Ordering::Relaxed),
                    bytes_written: m.bytes_written.load(std::sync::atomic::Ordering::Relaxed),
                    scrub: (m.flags & crate::abi::PL_REG_SCRUB != 0).then(|| {
                        let ld = |a: &std::sync::atomic::AtomicU64| {
                            a.load(std::sync::atomic::Ordering::Relaxed)
                        };
                        let last = ld(&m.scrub.last_round_unix_ms);
                        MrScrubStatus {
                            seed: hex(crate::abi::pl_scrub_seed(m.key)),
                            rounds: ld(&m.scrub.rounds),
                            canaries_written: ld(&m.scrub.canaries_written),
                            mismatches: ld(&m.scrub.mismatches),
                            last_mismatch_offset: m.scrub.last_mismatch(),
                            last_round_unix_ms: (last != 0).then_some(last),
                        }
                    }),
                }
            })
            .collect();
        mrs.sort_by(|a, b| a.key.cmp(&b.key));

        let leases = self
            .leases
            .all()
            .iter()
            .map(|l| {
                let (n, pages) = lease_usage.get(&l.handle).copied().unwrap_or((0, 0));
                LeaseStatus {
                    handle: hex(l.handle),
                    file: FileStatus::from(&l.file),
                    start: l.start,
                    end: (l.end != u64::MAX).then_some(l.end),
                    holder: hex(l.holder),
                    owner_pid: l.owner_pid,
                    policy: l.policy.name().into(),
                    state: l.state().name().into(),
                    since_unix_ms: ms(*l.since.lock().unwrap_or_else(|e| e.into_inner())),
                    mrs: n,
                    pinned_pages: pages,
                    lost_accesses: if l.state() == LeaseState::Lost
                        || l.lost_accesses.load(std::sync::atomic::Ordering::Relaxed) > 0
                    {
                        l.lost_accesses.load(std::sync::atomic::Ordering::Relaxed)
                    } else {
                        0
                    },
                    scrub_lost_accesses: l
                        .scrub_lost_accesses
                        .load(std::sync::atomic::Ordering::Relaxed),
                }
            })
            .collect();

        let c = &self.counters;
        let ld = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        let (pinned_pages, pins) = self.pin_totals();
        StatusSnapshot {
            taken_at_unix_ms: ms(now),
            uptime_ms: age_ms(self.started),
            memory_regions: self
                .memory()
                .map(|m| {
                    m.regions()
                        .into_iter()
                        .map(|(gpa, size)| MemoryRegionStatus {
                            gpa: hex(gpa),
                            size,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            contexts,
            mrs,
            leases,
            pinned_pages,
            needs_reset: self.needs_reset(),
            pins,
            counters: CounterStatus {
                requests: c.requests_by_opcode(),
                bad_input: c.bad_input_by_kind(),
                bad_input_total: c.bad_input_total(),
                bytes_read: ld(&c.bytes_read),
                bytes_written: ld(&c.bytes_written),
                revokes: ld(&c.revokes),
                lost_accesses: ld(&c.lost_accesses),
                memory_map_updates: ld(&c.memory_map_updates),
                device_resets: ld(&c.device_resets),
                scrub: ScrubCounterStatus {
                    period_ms: ld(&c.scrub_period_ms),
                    rounds: ld(&c.scrub_rounds),
                    mr_passes: ld(&c.scrub_mr_passes),
                    canaries_written: ld(&c.scrub_canaries_written),
                    mismatches: ld(&c.scrub_mismatches),
                    lost_accesses: ld(&c.scrub_lost_accesses),
                },
                events: self.events.stats(),
            },
        }
    }
}
