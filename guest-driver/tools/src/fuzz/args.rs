//! Building one ioctl: which fd, which request number, which argument and
//! where its bytes are. Pure: a [`Call`] is a function of the PRNG state,
//! the [`Handles`] and the [`MemView`] (no syscall, no allocation, so a
//! forked child of a multithreaded worker can build calls too).
//!
//! Addresses registered are the arena's (any slot, any offset, across
//! slots) or addresses no user mapping can have (0, the guard page, kernel
//! and non-canonical ones): never a random user address, which could be
//! the fuzzer's own heap that a DMA would then overwrite.

use super::counts::Target;
use super::handles::Handles;
use super::ioctls;
use super::memory::{MemView, SLOTS, SLOT_LEN};
use super::prng::Prng;
use super::values::{self, edge_u64, flags, length, offset, FD_EDGES, PAGE};
use crate::uapi::*;
use pinlease_abi as abi;
use std::os::fd::RawFd;

/// Where the argument's bytes are put.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// A naturally aligned buffer of the caller.
    Aligned,
    /// 1..7 bytes past alignment.
    Unaligned(u8),
    /// NULL.
    Null,
    /// The PROT_NONE guard page.
    Guard,
    /// The end of the scratch page: the struct runs into the guard page.
    Straddle,
    /// A kernel address.
    Kernel,
}

/// An ioctl's argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arg {
    /// The argument is this number itself (EVENT_FD takes none).
    Value(u64),
    /// A pointer to a u64 (an MR key or lease handle).
    U64(u64),
    Query(PinleaseQuery),
    RegMr(PinleaseRegMr),
    Dma(PinleaseDma),
    Import(PinleaseImportMr),
    LeaseTake(PinleaseLeaseTake),
    /// A request number outside the UAPI: 64 bytes from this seed.
    Bytes(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    pub fd: RawFd,
    pub target: Target,
    pub req: u32,
    pub arg: Arg,
    pub place: Place,
}

/// Addresses no user mapping has (x86-64 and arm64 user space ends at
/// 2^47 or 2^48; below 64 KiB is mmap_min_addr).
const BAD_ADDRS: [u64; 8] = [
    0,
    1,
    PAGE - 1,
    PAGE,
    1 << 47,
    0xffff_8880_0000_0000,
    u64::MAX - PAGE + 1,
    u64::MAX,
];

fn pick_or<T: Copy>(p: &mut Prng, from: &[T], or: T) -> T {
    if from.is_empty() {
        or
    } else {
        *p.pick(from)
    }
}

/// An MR key: a live one mostly (of any fd of the process: keys of other
/// fds are "handles of other fds"), a stale one, a live one with its slot
/// or generation changed, or an edge value.
fn key(p: &mut Prng, h: &Handles) -> u64 {
    let live = h.keys.as_slice();
    match p.below(10) {
        0..=5 => pick_or(p, live, 0),
        6 => pick_or(p, h.stale_keys.as_slice(), 1),
        7 => pick_or(p, live, 0) ^ (1 << p.below(64)),
        8 => pick_or(p, live, 0).wrapping_add(1 << 32),
        _ => edge_u64(p),
    }
}

fn lease(p: &mut Prng, h: &Handles) -> u64 {
    match p.below(10) {
        0..=5 => pick_or(p, h.leases.as_slice(), 0),
        6 | 7 => pick_or(p, h.stale_leases.as_slice(), 1),
        8 => pick_or(p, h.keys.as_slice(), 2),
        _ => edge_u64(p),
    }
}

fn access(p: &mut Prng) -> u32 {
    if p.chance(3, 4) {
        1 + p.below(abi::PL_ACCESS_ALL as u64) as u32
    } else {
        flags(p, abi::PL_ACCESS_ALL)
    }
}

/// Something the kernel must ignore or refuse in an out or reserved field.
fn junk(p: &mut Prng) -> u64 {
    if p.chance(3, 4) {
        0
    } else {
        edge_u64(p)
    }
}

fn reg_mr(p: &mut Prng, h: &Handles, m: &MemView) -> PinleaseRegMr {
    let arena = m.arena_len();
    let addr = match p.below(10) {
        0..=5 => m.slot(p.below(SLOTS)) + p.below(SLOT_LEN / PAGE) * PAGE,
        6 | 7 => m.base + p.below(arena),
        8 => m.scratch + p.below(2 * PAGE),
        _ => *p.pick(&BAD_ADDRS),
    };
    let len = match p.below(10) {
        0..=5 => (1 + p.below(2 * SLOT_LEN / PAGE)) * PAGE,
        6 | 7 => 1 + p.below(SLOT_LEN),
        8 => arena,
        _ => length(p, arena),
    };
    PinleaseRegMr {
        addr,
        length: len,
        access: access(p),
        flags: flags(p, PINLEASE_REG_FLAGS_ALL),
        key: junk(p),
        lease: if p.chance(1, 8) { lease(p, h) } else { 0 },
        npages: junk(p) as u32,
        reserved: if p.chance(7, 8) { 0 } else { 1 << p.below(32) },
    }
}

const DMA_OPS: [u32; 6] = [
    abi::Opcode::Write as u32,
    abi::Opcode::Read as u32,
    abi::Opcode::CompareSwap as u32,
    abi::Opcode::FetchAdd as u32,
    abi::Opcode::Fill as u32,
    abi::Opcode::Verify as u32,
];

fn dma(p: &mut Prng, h: &Handles) -> PinleaseDma {
    if p.chance(1, 3) {
        return plausible_dma(p, h);
    }
    let op = match p.below(10) {
        0..=7 => *p.pick(&DMA_OPS),
        8 => p.below(24) as u32,
        _ => values::edge_u32(p),
    };
    let span = 2 * SLOT_LEN;
    PinleaseDma {
        op,
        mode: if p.chance(7, 8) {
            p.below(2) as u32
        } else {
            values::edge_u32(p)
        },
        local_key: key(p, h),
        local_offset: offset(p, span),
        remote_key: key(p, h),
        remote_offset: offset(p, span),
        length: length(p, span),
        operand: p.next_u64(),
        swap: p.next_u64(),
        result: [junk(p), junk(p), junk(p)],
    }
}

/// A DMA that can succeed: live keys, small 8-aligned offsets and
/// lengths, a valid opcode and mode (the device's deep paths).
fn plausible_dma(p: &mut Prng, h: &Handles) -> PinleaseDma {
    let keys = h.keys.as_slice();
    let op = *p.pick(&DMA_OPS);
    let atomic = op == abi::Opcode::CompareSwap as u32 || op == abi::Opcode::FetchAdd as u32;
    PinleaseDma {
        op,
        mode: p.below(2) as u32,
        local_key: pick_or(p, keys, 0),
        local_offset: p.below(PAGE) & !7,
        remote_key: pick_or(p, keys, 0),
        remote_offset: p.below(PAGE) & !7,
        length: if atomic {
            8
        } else {
            8 * (1 + p.below(PAGE / 8))
        },
        operand: p.next_u64(),
        swap: p.next_u64(),
        result: [0; 3],
    }
}

/// An fd for a field (export_fd, data_fd): mostly of `kind`.
fn fd_field(p: &mut Prng, h: &Handles, m: &MemView, preferred: &[RawFd]) -> i32 {
    match p.below(10) {
        0..=5 => pick_or(p, preferred, -1),
        6 => pick_or(p, h.dev_fds.as_slice(), -1),
        7 => pick_or(p, h.event_fds.as_slice(), m.null_fd),
        8 => pick_or(p, h.closed_fds.as_slice(), -1),
        _ => *p.pick(&FD_EDGES),
    }
}

fn lease_take(p: &mut Prng, h: &Handles, m: &MemView) -> PinleaseLeaseTake {
    let data = if p.chance(1, 10) {
        m.null_fd
    } else {
        fd_field(p, h, m, &m.data_fds)
    };
    let arena = m.arena_len();
    PinleaseLeaseTake {
        data_fd: data,
        policy: if p.chance(7, 8) {
            1 + p.below(3) as u32
        } else {
            values::edge_u32(p)
        },
        start: if p.chance(1, 2) { 0 } else { offset(p, arena) },
        length: if p.chance(1, 3) { 0 } else { length(p, arena) },
        lease: junk(p),
    }
}

/// The argument of `req`; None for a request number this builder does not
/// know (`tests::every_uapi_ioctl_has_a_builder` keeps that from being
/// one of the UAPI's).
pub fn arg_for(req: u32, p: &mut Prng, h: &Handles, m: &MemView) -> Option<Arg> {
    Some(match req {
        PINLEASE_IOC_QUERY => Arg::Query(PinleaseQuery {
            ctx: junk(p),
            ..Default::default()
        }),
        PINLEASE_IOC_REG_MR => Arg::RegMr(reg_mr(p, h, m)),
        PINLEASE_IOC_DEREG_MR | PINLEASE_IOC_EXPORT_MR => Arg::U64(key(p, h)),
        PINLEASE_IOC_DMA => Arg::Dma(dma(p, h)),
        PINLEASE_IOC_EVENT_FD => Arg::Value(junk(p)),
        PINLEASE_IOC_IMPORT_MR => Arg::Import(PinleaseImportMr {
            export_fd: fd_field(p, h, m, h.export_fds.as_slice()),
            access: access(p),
            key: junk(p),
        }),
        PINLEASE_IOC_LEASE_TAKE => Arg::LeaseTake(lease_take(p, h, m)),
        PINLEASE_IOC_LEASE_RELEASE => Arg::U64(lease(p, h)),
        _ => return None,
    })
}

/// A request number near the UAPI's: one with its direction, size or
/// number changed, another magic, or any number.
fn other_req(p: &mut Prng) -> u32 {
    let base = p.pick(ioctls::all()).req;
    match p.below(5) {
        0 => base ^ (1 << (30 + p.below(2))),
        1 => base ^ ((1 + p.below(0x3fff) as u32) << 16),
        2 => (base & !0xff) | (ioctls::all().len() as u32 + p.below(256) as u32) & 0xff,
        3 => base ^ (1 << (8 + p.below(8))),
        _ => p.next_u64() as u32,
    }
}

fn target_fd(p: &mut Prng, h: &Handles, m: &MemView) -> (RawFd, Target) {
    let r = p.below(100);
    let pick = |p: &mut Prng, from: &[RawFd]| (!from.is_empty()).then(|| *p.pick(from));
    let chosen = match r {
        0..=71 => pick(p, h.dev_fds.as_slice()).map(|f| (f, Target::DevFd)),
        72..=79 => pick(p, h.event_fds.as_slice()).map(|f| (f, Target::EventFd)),
        80..=87 => pick(p, h.export_fds.as_slice()).map(|f| (f, Target::ExportFd)),
        88..=91 => Some((
            *p.pick(&[m.data_fds[0], m.data_fds[1], m.null_fd]),
            Target::OtherFd,
        )),
        92..=95 => pick(p, h.closed_fds.as_slice()).map(|f| (f, Target::BadFd)),
        _ => Some((*p.pick(&FD_EDGES), Target::BadFd)),
    };
    chosen
        .or_else(|| pick(p, h.dev_fds.as_slice()).map(|f| (f, Target::DevFd)))
        .unwrap_or((-1, Target::BadFd))
}

fn place(p: &mut Prng) -> Place {
    match p.below(40) {
        0 => Place::Null,
        1 => Place::Guard,
        2 => Place::Straddle,
        3 => Place::Kernel,
        4..=6 => Place::Unaligned(1 + p.below(7) as u8),
        _ => Place::Aligned,
    }
}

/// One random call: an ioctl of the UAPI (19 in 20) or a request number
/// near them, at a random fd, its argument placed well or badly.
pub fn build(p: &mut Prng, h: &Handles, m: &MemView) -> Call {
    let (fd, target) = target_fd(p, h, m);
    let place = place(p);
    if p.chance(1, 20) {
        let req = other_req(p);
        // A mutated number may land on a real one: then build its argument.
        let arg = arg_for(req, p, h, m).unwrap_or(Arg::Bytes(p.next_u64()));
        return Call {
            fd,
            target,
            req,
            arg,
            place,
        };
    }
    let io = *p.pick(ioctls::all());
    let arg = arg_for(io.req, p, h, m).unwrap_or(Arg::Bytes(p.next_u64()));
    Call {
        fd,
        target,
        req: io.req,
        arg,
        place,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzz::handles::{Few, Handles};

    fn view() -> MemView {
        MemView {
            base: 0x7f00_0000_0000,
            scratch: 0x7f00_0000_0000 + SLOTS * SLOT_LEN,
            guard: 0x7f00_0000_0000 + SLOTS * SLOT_LEN + PAGE,
            data_fds: [5, 6],
            null_fd: 7,
        }
    }

    fn handles() -> Handles {
        Handles {
            dev_fds: Few::newest(&[3, 4]),
            event_fds: Few::newest(&[8]),
            export_fds: Few::newest(&[9]),
            closed_fds: Few::newest(&[12]),
            keys: Few::newest(&[0x1_0000_0001, 0x2_0000_0002]),
            stale_keys: Few::newest(&[0x1_0000_0003]),
            leases: Few::newest(&[0x77]),
            stale_leases: Few::newest(&[0x78]),
        }
    }

    #[test]
    fn every_uapi_ioctl_has_a_builder() {
        let mut p = Prng::new(1);
        for io in ioctls::all() {
            assert!(
                arg_for(io.req, &mut p, &handles(), &view()).is_some(),
                "PINLEASE_IOC_{} is in the UAPI but the fuzzer cannot build its argument: \
                 add it to fuzz/args.rs arg_for()",
                io.name
            );
        }
        assert_eq!(arg_for(0xdead_beef, &mut p, &handles(), &view()), None);
    }

    #[test]
    fn the_same_seed_builds_the_same_calls() {
        let run = |seed| {
            let mut p = Prng::new(seed);
            (0..500)
                .map(|_| build(&mut p, &handles(), &view()))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9), run(10));
    }

    #[test]
    fn calls_cover_every_ioctl_target_and_place() {
        let mut p = Prng::new(2);
        let calls: Vec<Call> = (0..20_000)
            .map(|_| build(&mut p, &handles(), &view()))
            .collect();
        for io in ioctls::all() {
            let n = calls.iter().filter(|c| c.req == io.req).count();
            assert!(n > 500, "{}: {n} calls", io.name);
        }
        assert!(calls
            .iter()
            .any(|c| ioctls::slot(c.req) == ioctls::all().len()));
        for t in Target::ALL {
            assert!(calls.iter().any(|c| c.target == t), "{t:?}");
        }
        for pl in [Place::Null, Place::Guard, Place::Straddle, Place::Kernel] {
            assert!(calls.iter().any(|c| c.place == pl), "{pl:?}");
        }
        assert!(calls
            .iter()
            .any(|c| matches!(c.place, Place::Unaligned(n) if (1..8).contains(&n))));
    }

    #[test]
    fn registered_addresses_are_the_arenas_or_impossible_ones() {
        let m = view();
        let mut p = Prng::new(3);
        let mut in_arena = 0;
        for _ in 0..20_000 {
            let r = reg_mr(&mut p, &handles(), &m);
            let arena_end = m.guard + PAGE;
            if (m.base..arena_end).contains(&r.addr) {
                in_arena += 1;
            } else {
                assert!(BAD_ADDRS.contains(&r.addr), "{:#x}", r.addr);
            }
        }
        assert!(in_arena > 15_000);
    }

    #[test]
    fn keys_are_live_stale_mangled_and_edges() {
        let mut p = Prng::new(4);
        let h = handles();
        let ks: Vec<u64> = (0..5000).map(|_| key(&mut p, &h)).collect();
        assert!(ks.contains(&0x1_0000_0001));
        assert!(ks.contains(&0x1_0000_0003), "stale");
        assert!(ks.contains(&0x2_0000_0001), "another generation");
        assert!(ks.contains(&u64::MAX));
    }
}
