//! Helpers the model's tests share: a device over real guest memory
//! (`crate::guest_ram`), MR page layouts, request builders, event and
//! status readers.

use std::sync::Arc;

use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::abi::*;
use crate::guest_ram::{test_ram, MmapRam};
use crate::model::lease::LeaseState;
use crate::model::memory::GuestRam;
use crate::model::mr::FileRange;
use crate::model::status::{hex, LeaseStatus, MrStatus};
use crate::model::table::Handle;
use crate::model::{Device, DmaDir, Limits, RegMr};

pub const PAGE: u64 = PL_PAGE_SIZE;
pub const MIB: usize = 1 << 20;

// ---- helpers --------------------------------------------------------------------

/// A device with `mib` MiB of guest memory at guest-physical 0.
pub fn device(mib: usize) -> Arc<Device> {
    device_with(Limits::default(), &[(0, mib * MIB)])
}

/// A device with 1 MiB of guest memory at guest-physical 0 and the default
/// limits as changed by `set` (e.g. `|l| l.max_mrs = 2`).
pub fn device_limited(set: impl FnOnce(&mut Limits)) -> Arc<Device> {
    let mut limits = Limits::default();
    set(&mut limits);
    device_with(limits, &[(0, MIB)])
}

pub fn device_with(limits: Limits, regions: &[(u64, usize)]) -> Arc<Device> {
    let dev = Arc::new(Device::new(limits));
    dev.set_memory(Box::new(test_ram(regions)));
    dev
}

pub fn ram(dev: &Device) -> Arc<Box<dyn GuestRam>> {
    dev.memory().expect("memory map set")
}

/// `device_and_ram!(dev, r; a, b)`: `let dev = device(1);`, `let r: &dyn
/// GuestRam` over its guest memory (the `Arc` behind `r` lives as long as
/// the caller's scope) and, in that order, `let a = ctx(&dev);` and
/// `let b = ctx(&dev);` (any number of contexts, none without the `;`).
macro_rules! device_and_ram {
    ($dev:ident, $r:ident $(; $($c:ident),+)?) => {
        let $dev = $crate::model::test_support::device(1);
        let memory = $crate::model::test_support::ram(&$dev);
        let $r: &dyn $crate::model::memory::GuestRam = memory.as_ref().as_ref();
        $($(let $c = $crate::model::test_support::ctx(&$dev);)+)?
    };
}
pub(crate) use device_and_ram;

/// The status of a failed call; panics when it succeeded.
#[track_caller]
pub fn st<T>(r: crate::model::device::Result<T>) -> Status {
    match r {
        Ok(_) => panic!("expected a rejection, got Ok"),
        Err(e) => e.status,
    }
}

pub fn ctx(dev: &Device) -> Handle {
    dev.create_context(42, "test").expect("create context")
}

/// Pages `base, base + 4096, ...` (`n` of them).
pub fn run(base: u64, n: usize) -> Vec<u64> {
    (0..n as u64).map(|i| base + i * PAGE).collect()
}

/// Where an MR's bytes lie in guest memory: the page list and offset the
/// test registered, so it can check the device's bytes itself.
#[derive(Clone, Debug)]
pub struct Layout {
    pub pages: Vec<u64>,
    pub off: u32,
    pub len: u64,
}

impl Layout {
    pub fn new(pages: Vec<u64>, off: u32, len: u64) -> Self {
        Layout { pages, off, len }
    }

    /// A layout over whole pages.
    pub fn pages(pages: Vec<u64>) -> Self {
        let len = pages.len() as u64 * PAGE;
        Layout::new(pages, 0, len)
    }

    pub fn gpa(&self, o: u64) -> u64 {
        let p = u64::from(self.off) + o;
        self.pages[(p / PAGE) as usize] + p % PAGE
    }

    /// Calls `f(gpa, position in the range, n)` over the in-page runs of
    /// `[o, o + len)`.
    pub fn runs(&self, o: u64, len: u64, mut f: impl FnMut(u64, usize, usize)) {
        let mut done = 0;
        while done < len {
            let gpa = self.gpa(o + done);
            let n = (PAGE - gpa % PAGE).min(len - done);
            f(gpa, done as usize, n as usize);
            done += n;
        }
    }

    pub fn write(&self, ram: &dyn GuestRam, o: u64, bytes: &[u8]) {
        self.runs(o, bytes.len() as u64, |gpa, at, n| {
            ram.write(gpa, &bytes[at..at + n]).unwrap()
        });
    }

    pub fn read(&self, ram: &dyn GuestRam, o: u64, len: u64) -> Vec<u8> {
        let mut out = vec![0u8; len as usize];
        self.runs(o, len, |gpa, at, n| {
            ram.read(gpa, &mut out[at..at + n]).unwrap()
        });
        out
    }

    pub fn all(&self, ram: &dyn GuestRam) -> Vec<u8> {
        self.read(ram, 0, self.len)
    }

    pub fn word(&self, ram: &dyn GuestRam, o: u64) -> u64 {
        u64::from_le_bytes(self.read(ram, o, 8).try_into().unwrap())
    }

    pub fn set_word(&self, ram: &dyn GuestRam, o: u64, v: u64) {
        self.write(ram, o, &v.to_le_bytes());
    }

    pub fn req(&self, access: u32) -> RegMr {
        RegMr {
            access,
            flags: 0,
            first_page_offset: self.off,
            length: self.len,
            file: None,
            pages: self.pages.clone(),
        }
    }

    pub fn req_file(&self, access: u32, file: PlFileId, offset: u64) -> RegMr {
        RegMr {
            flags: PL_REG_HAS_FILE,
            file: Some(FileRange { file, offset }),
            ..self.req(access)
        }
    }
}

/// Deterministic, position-dependent bytes (never all equal).
pub fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8 ^ seed)
        .collect()
}

pub fn reg(dev: &Device, ctx: Handle, l: &Layout, access: u32) -> Handle {
    dev.reg_mr(ctx, l.req(access)).expect("reg_mr").key
}

pub fn reg_file(
    dev: &Device,
    ctx: Handle,
    l: &Layout,
    access: u32,
    f: PlFileId,
    off: u64,
) -> PlRegMrResp {
    dev.reg_mr(ctx, l.req_file(access, f, off))
        .expect("reg_mr with file")
}

pub fn file(ino: u64) -> PlFileId {
    PlFileId::new(0x803, ino, 7)
}

pub fn dma_req(lk: Handle, lo: u64, rk: Handle, ro: u64, len: u64) -> PlDmaReq {
    PlDmaReq {
        local_key: lk,
        local_offset: lo,
        remote_key: rk,
        remote_offset: ro,
        length: len,
    }
}

/// `write(dev, ctx, local key, local offset, remote key, remote offset, len)`
/// and `read(...)`: one DMA request in that direction.
macro_rules! dma_fns {
    ($($name:ident => $dir:expr),*) => {$(
        pub fn $name(
            dev: &Device,
            c: Handle,
            lk: Handle,
            lo: u64,
            rk: Handle,
            ro: u64,
            len: u64,
        ) -> crate::model::device::Result<()> {
            dev.dma(c, $dir, &dma_req(lk, lo, rk, ro, len))
        }
    )*};
}
dma_fns!(write => DmaDir::Write, read => DmaDir::Read);

pub fn atomic(key: Handle, offset: u64, operand: u64, swap: u64) -> PlAtomicReq {
    PlAtomicReq {
        key,
        offset,
        operand,
        swap,
    }
}

pub fn pattern(key: Handle, offset: u64, length: u64, pattern: u64, mode: u32) -> PlPatternReq {
    PlPatternReq::new(key, offset, length, pattern, mode)
}

pub fn take_req(f: PlFileId, start: u64, length: u64, policy: u32) -> PlLeaseTakeReq {
    PlLeaseTakeReq {
        file: f,
        start,
        length,
        policy,
        owner_pid: 99,
    }
}

pub fn take(dev: &Device, c: Handle, f: PlFileId, start: u64, length: u64, policy: u32) -> Handle {
    dev.lease_take(c, &take_req(f, start, length, policy))
        .expect("lease_take")
}

pub fn release_req(lease: Handle, reason: u32) -> PlLeaseReleaseReq {
    PlLeaseReleaseReq {
        lease,
        reason,
        reserved: 0,
    }
}

pub fn break_req(f: PlFileId, start: u64, length: u64) -> PlLeaseBreakReq {
    PlLeaseBreakReq {
        file: f,
        start,
        length,
        reason: PL_BREAK_TRUNCATE,
        reserved: 0,
    }
}

pub fn brk(dev: &Device, f: PlFileId, start: u64, length: u64) -> PlLeaseBreakResp {
    dev.lease_break(&break_req(f, start, length))
        .expect("lease_break")
}

pub fn import_req(export: Handle, access: u32) -> PlImportMrReq {
    PlImportMrReq {
        export,
        access,
        reserved: 0,
    }
}

/// All queued events, oldest first.
pub fn events(dev: &Device) -> Vec<PlEvent> {
    std::iter::from_fn(|| dev.events.pop()).collect()
}

/// (kind, ctx, args) of the queued events, oldest first.
pub fn event_summary(dev: &Device) -> Vec<(u16, Handle, [u64; 4])> {
    events(dev)
        .iter()
        .map(|e| (e.kind, e.ctx, e.args))
        .collect()
}

pub fn mr_status(dev: &Device, key: Handle) -> Option<MrStatus> {
    dev.status().mrs.into_iter().find(|m| m.key == hex(key))
}

pub fn lease_status(dev: &Device, h: Handle) -> Option<LeaseStatus> {
    dev.status().leases.into_iter().find(|l| l.handle == hex(h))
}

pub fn lease_state(dev: &Device, h: Handle) -> LeaseState {
    dev.lease(h).expect("lease in table").state()
}

/// A map of two regions sharing their memory with `full`, minus the region
/// at `base` (so the remaining region keeps its bytes across the change).
pub fn without_region(full: &GuestMemoryMmap<()>, base: u64, size: usize) -> MmapRam {
    let (rest, _) = full
        .remove_region(GuestAddress(base), size as u64)
        .expect("region to remove");
    MmapRam::new(rest)
}

pub fn two_region_map(r1: (u64, usize), r2: (u64, usize)) -> GuestMemoryMmap<()> {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(r1.0), r1.1), (GuestAddress(r2.0), r2.1)])
        .expect("anonymous guest memory")
}
