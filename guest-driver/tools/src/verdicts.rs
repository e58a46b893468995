//! The pin-verdict table: for each backing the suite pins, what the running
//! kernel answers to a REG_MR (`pin_user_pages_fast()` with `FOLL_PIN`,
//! `FOLL_LONGTERM` unless short-term, `FOLL_WRITE` unless read-only), as a
//! function of the kernel's version from uname(2), and the kernel rule the
//! answer comes from.
//!
//! The rules, read in the sources of the kernels the runner boots
//! (Debian's linux-source-6.1, -6.12 and -7.3):
//!
//! - `mm/gup.c` `check_vma_flags()`: `FOLL_LONGTERM` on an FS-DAX vma
//!   (`vma_is_fsdax()`) is `-EOPNOTSUPP`, read-only or not, in 6.1, 6.12
//!   and 7.3 alike (device-DAX is allowed).
//! - `mm/gup.c` `writable_file_mapping_allowed()`, called by
//!   `check_vma_flags()` for a `FOLL_WRITE` pin of a non-anonymous vma
//!   (since 6.5, "mm/gup: disallow FOLL_LONGTERM GUP-nonfast writing to
//!   file-backed mappings"; GUP-fast refuses the same pages in
//!   `gup_fast_folio_allowed()` and falls back): `FOLL_PIN | FOLL_LONGTERM`
//!   of a vma that `vma_needs_dirty_tracking()` (`mm/vma.c` in 6.12 and
//!   7.3: shared, writable, and the file system wants write notification
//!   or can write back: ext4, xfs, btrfs page cache) is `-EFAULT`. shmem
//!   (memfd, tmpfs) and hugetlbfs cannot write back, private mappings and
//!   read-only pins are not shared-writable: all allowed. 6.1 has no such
//!   check: the pin is granted, which is where truncate orphans pages the
//!   device keeps writing (docs/scenarios.md, data loss).
//!
//! The kernel's own selftest of these rules is
//! `tools/testing/selftests/mm/gup_longterm.c` (6.12, 7.3; 6.1 predates
//! it): R/W and R/O, shared and private, on memfd, tmpfile, a local
//! tmpfile and memfd hugetlb; it expects R/W shared pins to work only on
//! tmpfs and hugetlbfs. The rows below cover the same matrix on the
//! guest's filesystems.

use crate::sys::errno_name;

/// A kernel version (major, minor), enough for the rules here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Kver {
    pub major: u32,
    pub minor: u32,
}

impl Kver {
    pub const fn new(major: u32, minor: u32) -> Kver {
        Kver { major, minor }
    }

    /// The leading `MAJOR.MINOR` of a release string (`6.1.0-57-amd64`,
    /// `6.12.95+deb12-amd64`, `7.3.4+bpo-amd64`, `6.13-rc1`).
    pub fn parse(release: &str) -> Option<Kver> {
        let mut it = release.split(|c: char| !c.is_ascii_digit());
        let major = it.next()?.parse().ok()?;
        let rest = release.split_once('.')?.1;
        let minor = rest
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()?;
        Some(Kver { major, minor })
    }
}

impl std::fmt::Display for Kver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The running kernel's release string from uname(2).
pub fn uname_release() -> String {
    // SAFETY: uname fills a zeroed utsname.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } < 0 {
        return String::new();
    }
    // SAFETY: release is NUL-terminated by the kernel.
    unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// The running kernel's version; None when uname's release does not parse.
pub fn running() -> Option<Kver> {
    Kver::parse(&uname_release())
}

/// What a REG_MR is expected to return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    Granted,
    Errno(i32),
}

impl Expect {
    /// `granted` or the errno's name (`EFAULT`): the KTAP diagnostic's word.
    pub fn word(self) -> &'static str {
        match self {
            Expect::Granted => "granted",
            Expect::Errno(e) => errno_name(e),
        }
    }

    /// The answer of a REG_MR that returned `r` (Ok or an errno).
    pub fn of(r: Result<(), i32>) -> Expect {
        match r {
            Ok(()) => Expect::Granted,
            Err(e) => Expect::Errno(e),
        }
    }
}

/// What a row maps and pins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mem {
    /// Anonymous private memory.
    Anon,
    /// Anonymous MAP_HUGETLB memory (2 MiB pages).
    AnonHugetlb,
    /// memfd_create() (shmem), MAP_SHARED.
    Memfd,
    /// A file on a tmpfs the case mounts.
    Tmpfs,
    /// memfd_create(MFD_HUGETLB): a hugetlbfs file.
    Hugetlbfs,
    /// A file on /mnt/xfs.
    Xfs,
    /// A file on /mnt/ext4.
    Ext4,
    /// A file on /mnt/dax (XFS -o dax on virtio-pmem).
    FsDax,
}

/// One row of the table.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    /// Stable id, printed in `verdict ROW RESULT expected EXPECTED`.
    pub id: &'static str,
    pub mem: Mem,
    /// MAP_SHARED (else MAP_PRIVATE); anonymous rows are private.
    pub shared: bool,
    /// PROT_READ mapping, PINLEASE_PIN_READONLY (no FOLL_WRITE).
    pub readonly: bool,
    /// PINLEASE_PIN_SHORTTERM (no FOLL_LONGTERM).
    pub shortterm: bool,
    /// The kernel's answer on version `v`.
    pub expect: fn(Kver) -> Expect,
    /// Why: the rule the answer comes from.
    pub rule: &'static str,
    /// Where: the source file and function that decides.
    pub source: &'static str,
}

/// The version that brought `writable_file_mapping_allowed()`.
pub const WRITABLE_FILE_PIN_RULE: Kver = Kver::new(6, 5);

fn granted(_: Kver) -> Expect {
    Expect::Granted
}

fn fsdax(_: Kver) -> Expect {
    Expect::Errno(libc::EOPNOTSUPP)
}

fn writeback_file_shared_rw(v: Kver) -> Expect {
    if v >= WRITABLE_FILE_PIN_RULE {
        Expect::Errno(libc::EFAULT)
    } else {
        Expect::Granted
    }
}

/// Why a row gets its answer: the rule, where the kernel decides, and the
/// answer as a function of the version.
struct Rule {
    why: &'static str,
    source: &'static str,
    expect: fn(Kver) -> Expect,
}

const CHECK_VMA_FLAGS: &str = "mm/gup.c check_vma_flags";
const WRITABLE_FILE_MAPPING_ALLOWED: &str = "mm/gup.c writable_file_mapping_allowed";

const R_ANON: Rule = Rule {
    why: "mm/gup.c check_vma_flags(): anonymous memory passes every check",
    source: CHECK_VMA_FLAGS,
    expect: granted,
};
const R_NOT_SHARED_RW: Rule = Rule {
    why: "mm/gup.c check_vma_flags(): not a shared writable pin, \
     writable_file_mapping_allowed() (>= 6.5) does not apply",
    source: CHECK_VMA_FLAGS,
    expect: granted,
};
const R_SHMEM: Rule = Rule {
    why: "mm/gup.c writable_file_mapping_allowed() (>= 6.5): shmem cannot \
     write back, vma_needs_dirty_tracking() is false",
    source: WRITABLE_FILE_MAPPING_ALLOWED,
    expect: granted,
};
const R_HUGETLBFS: Rule = Rule {
    why: "mm/gup.c writable_file_mapping_allowed() (>= 6.5): hugetlbfs \
     cannot write back, vma_needs_dirty_tracking() is false",
    source: WRITABLE_FILE_MAPPING_ALLOWED,
    expect: granted,
};
const R_WRITEBACK: Rule = Rule {
    why: "mm/gup.c check_vma_flags() -> writable_file_mapping_allowed() \
     (since 6.5): FOLL_LONGTERM|FOLL_WRITE of a shared mapping that needs dirty tracking \
     is EFAULT; before 6.5 no check, granted",
    source: WRITABLE_FILE_MAPPING_ALLOWED,
    expect: writeback_file_shared_rw,
};
const R_FSDAX: Rule = Rule {
    why: "mm/gup.c check_vma_flags(): FOLL_LONGTERM on vma_is_fsdax() is \
     EOPNOTSUPP (6.1, 6.12, 7.3)",
    source: CHECK_VMA_FLAGS,
    expect: fsdax,
};
const R_SHORTTERM: Rule = Rule {
    why: "mm/gup.c check_vma_flags(): no FOLL_LONGTERM, \
     writable_file_mapping_allowed() allows it",
    source: WRITABLE_FILE_MAPPING_ALLOWED,
    expect: granted,
};

/// How a row maps and pins: (MAP_SHARED, read-only, short-term).
type Pin = (bool, bool, bool);
const PRIVATE_RW: Pin = (false, false, false);
const SHARED_RW: Pin = (true, false, false);
const SHARED_RO: Pin = (true, true, false);
const SHARED_RW_SHORTTERM: Pin = (true, false, true);

const fn row_of(id: &'static str, mem: Mem, pin: Pin, rule: Rule) -> Row {
    let (shared, readonly, shortterm) = pin;
    Row {
        id,
        mem,
        shared,
        readonly,
        shortterm,
        expect: rule.expect,
        rule: rule.why,
        source: rule.source,
    }
}

/// Every row, in the order the cases run.
#[rustfmt::skip]
pub const ROWS: &[Row] = &[
    row_of("anon-private-rw",         Mem::Anon,        PRIVATE_RW,          R_ANON),
    row_of("memfd-shared-rw",         Mem::Memfd,       SHARED_RW,           R_SHMEM),
    row_of("tmpfs-shared-rw",         Mem::Tmpfs,       SHARED_RW,           R_SHMEM),
    row_of("tmpfs-private-rw",        Mem::Tmpfs,       PRIVATE_RW,          R_NOT_SHARED_RW),
    row_of("hugetlb-anon-rw",         Mem::AnonHugetlb, PRIVATE_RW,          R_ANON),
    row_of("hugetlbfs-shared-rw",     Mem::Hugetlbfs,   SHARED_RW,           R_HUGETLBFS),
    row_of("hugetlbfs-private-rw",    Mem::Hugetlbfs,   PRIVATE_RW,          R_NOT_SHARED_RW),
    row_of("xfs-private-rw",          Mem::Xfs,         PRIVATE_RW,          R_NOT_SHARED_RW),
    row_of("xfs-shared-ro",           Mem::Xfs,         SHARED_RO,           R_NOT_SHARED_RW),
    row_of("ext4-private-rw",         Mem::Ext4,        PRIVATE_RW,          R_NOT_SHARED_RW),
    row_of("ext4-shared-ro",          Mem::Ext4,        SHARED_RO,           R_NOT_SHARED_RW),
    row_of("ext4-shared-rw",          Mem::Ext4,        SHARED_RW,           R_WRITEBACK),
    row_of("xfs-shared-rw",           Mem::Xfs,         SHARED_RW,           R_WRITEBACK),
    row_of("fsdax-shared-rw",         Mem::FsDax,       SHARED_RW,           R_FSDAX),
    row_of("fsdax-shared-ro",         Mem::FsDax,       SHARED_RO,           R_FSDAX),
    row_of("xfs-shared-rw-shortterm", Mem::Xfs,         SHARED_RW_SHORTTERM, R_SHORTTERM),
];

/// The row with this id (panics on a typo: the ids are the suite's own).
pub fn row(id: &str) -> &'static Row {
    ROWS.iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("no verdict row {id:?}"))
}

impl Row {
    /// The expected answer on `v`.
    pub fn expected(&self, v: Kver) -> Expect {
        (self.expect)(v)
    }
}

/// The machine-readable diagnostic of a verdict case (the matrix command
/// collects these): `verdict ROW RESULT expected EXPECTED`.
pub fn verdict_line(row: &Row, got: Expect, want: Expect) -> String {
    format!("verdict {} {} expected {}", row.id, got.word(), want.word())
}

/// The verbs side: what `ibv_reg_mr` answers through pinlease_ib.ko, whose
/// `reg_user_mr` pins with `ib_umem_get()` (`ib_umem_get_va()` in 7.3),
/// long-term always. Its GUP flags depend on the MR's access and the
/// kernel (`drivers/infiniband/core/umem.c`, read in Debian's
/// linux-source-6.1 6.1.192-3, linux-source-6.12 6.12.118-1~deb12u1 and
/// linux-source-7.3 7.3.4-1~bpo13+1):
///
/// - 6.1 `ib_umem_get()`: `gup_flags = FOLL_WRITE` always, `| FOLL_FORCE`
///   when the MR is not writable (`!umem->writable`), `| FOLL_LONGTERM`.
/// - 6.2 on ("RDMA/umem: remove FOLL_FORCE usage"): 6.12 `ib_umem_get()`
///   and 7.3 `__ib_umem_get_va()`: `gup_flags = FOLL_LONGTERM`,
///   `| FOLL_WRITE` only when `umem->writable`.
///
/// `ib_access_writable()` (`include/rdma/ib_verbs.h`): LOCAL_WRITE,
/// REMOTE_WRITE, REMOTE_ATOMIC or MW_BIND. Then `mm/gup.c`
/// `check_vma_flags()` decides, in 6.1, 6.12 and 7.3 alike for these rows:
/// a `FOLL_WRITE` pin of a vma without `VM_WRITE` is EFAULT unless
/// `FOLL_FORCE` and a private (COW) mapping; from 6.5
/// `writable_file_mapping_allowed()` (6.12, 7.3) refuses (EFAULT) a long-term
/// `FOLL_WRITE` pin of a shared writable mapping that needs dirty tracking
/// (XFS, ext4; not shmem); FS-DAX is EOPNOTSUPP for any long-term pin.
/// A pin without `FOLL_WRITE` only needs `VM_READ`.
pub const UMEM_WRITE_ONLY_WHEN_WRITABLE: Kver = Kver::new(6, 2);

/// The kernels whose `umem.c` the verbs rule was read in: a verbs verdict
/// on another kernel is reported, not judged.
pub const VERBS_RULE_KERNELS: [Kver; 3] = [Kver::new(6, 1), Kver::new(6, 12), Kver::new(7, 3)];

/// `ib_umem_get()`'s (FOLL_WRITE, FOLL_FORCE) on `v` for an MR that is
/// writable (`ib_access_writable()`) or not.
pub fn umem_write_force(v: Kver, mr_writable: bool) -> (bool, bool) {
    if v >= UMEM_WRITE_ONLY_WHEN_WRITABLE {
        (mr_writable, false)
    } else {
        (true, !mr_writable)
    }
}

/// One ibv_reg_mr verdict row: a mapping and an MR access.
#[derive(Clone, Copy, Debug)]
pub struct VerbsRow {
    /// Stable id: `MEM-shared|private-rw|ro-mr-rw|ro` (the mapping's
    /// protection, then the MR's access).
    pub id: &'static str,
    pub mem: Mem,
    /// MAP_SHARED (else MAP_PRIVATE).
    pub shared: bool,
    /// PROT_READ|PROT_WRITE (else PROT_READ).
    pub map_writable: bool,
    /// IBV_ACCESS_LOCAL_WRITE|REMOTE_WRITE|REMOTE_READ (else REMOTE_READ).
    pub mr_writable: bool,
    /// The suite's own REG_MR row for the nearest mapping and pin (ROWS),
    /// shown beside the verbs answer.
    pub reg_mr_row: Option<&'static str>,
}

impl VerbsRow {
    /// What ibv_reg_mr answers on `v` (see UMEM_WRITE_ONLY_WHEN_WRITABLE).
    pub fn expected(&self, v: Kver) -> Expect {
        let (write, force) = umem_write_force(v, self.mr_writable);
        if self.mem == Mem::FsDax {
            return Expect::Errno(libc::EOPNOTSUPP);
        }
        if !write {
            return Expect::Granted;
        }
        let writeback = matches!(self.mem, Mem::Xfs | Mem::Ext4);
        if v >= WRITABLE_FILE_PIN_RULE && writeback && self.shared && self.map_writable {
            return Expect::Errno(libc::EFAULT);
        }
        if !self.map_writable && (!force || self.shared) {
            return Expect::Errno(libc::EFAULT);
        }
        Expect::Granted
    }

    /// The GUP flags ib_umem_get() asks for on `v`, for diagnostics.
    pub fn gup_flags(&self, v: Kver) -> &'static str {
        match umem_write_force(v, self.mr_writable) {
            (true, true) => "FOLL_LONGTERM|FOLL_WRITE|FOLL_FORCE",
            (true, false) => "FOLL_LONGTERM|FOLL_WRITE",
            (false, _) => "FOLL_LONGTERM",
        }
    }
}

const fn verbs_row(
    id: &'static str,
    mem: Mem,
    shared: bool,
    map_writable: bool,
    mr_writable: bool,
    reg_mr_row: Option<&'static str>,
) -> VerbsRow {
    VerbsRow {
        id,
        mem,
        shared,
        map_writable,
        mr_writable,
        reg_mr_row,
    }
}

/// Every verbs row, in the order the verdict case registers them.
#[rustfmt::skip]
pub const VERBS_ROWS: &[VerbsRow] = &[
    verbs_row("anon-private-rw-mr-ro",  Mem::Anon,  false, true,  false, Some("anon-private-rw")),
    verbs_row("anon-private-rw-mr-rw",  Mem::Anon,  false, true,  true,  Some("anon-private-rw")),
    verbs_row("memfd-shared-rw-mr-ro",  Mem::Memfd, true,  true,  false, Some("memfd-shared-rw")),
    verbs_row("memfd-shared-rw-mr-rw",  Mem::Memfd, true,  true,  true,  Some("memfd-shared-rw")),
    verbs_row("tmpfs-shared-rw-mr-ro",  Mem::Tmpfs, true,  true,  false, Some("tmpfs-shared-rw")),
    verbs_row("tmpfs-shared-rw-mr-rw",  Mem::Tmpfs, true,  true,  true,  Some("tmpfs-shared-rw")),
    verbs_row("xfs-shared-rw-mr-ro",    Mem::Xfs,   true,  true,  false, Some("xfs-shared-ro")),
    verbs_row("xfs-shared-rw-mr-rw",    Mem::Xfs,   true,  true,  true,  Some("xfs-shared-rw")),
    verbs_row("xfs-shared-ro-mr-ro",    Mem::Xfs,   true,  false, false, Some("xfs-shared-ro")),
    verbs_row("xfs-shared-ro-mr-rw",    Mem::Xfs,   true,  false, true,  None),
    verbs_row("xfs-private-rw-mr-ro",   Mem::Xfs,   false, true,  false, Some("xfs-private-rw")),
    verbs_row("xfs-private-rw-mr-rw",   Mem::Xfs,   false, true,  true,  Some("xfs-private-rw")),
    verbs_row("xfs-private-ro-mr-ro",   Mem::Xfs,   false, false, false, None),
    verbs_row("xfs-private-ro-mr-rw",   Mem::Xfs,   false, false, true,  None),
    verbs_row("ext4-shared-rw-mr-ro",   Mem::Ext4,  true,  true,  false, Some("ext4-shared-ro")),
    verbs_row("ext4-shared-rw-mr-rw",   Mem::Ext4,  true,  true,  true,  Some("ext4-shared-rw")),
];

/// The verbs row with this id (panics on a typo: the ids are the suite's).
pub fn verbs_row_by_id(id: &str) -> &'static VerbsRow {
    VERBS_ROWS
        .iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("no verbs verdict row {id:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_debian_and_upstream_releases() {
        assert_eq!(Kver::parse("6.1.0-57-amd64"), Some(Kver::new(6, 1)));
        assert_eq!(Kver::parse("6.12.95+deb12-amd64"), Some(Kver::new(6, 12)));
        assert_eq!(Kver::parse("7.3.4+bpo-amd64"), Some(Kver::new(7, 3)));
        assert_eq!(Kver::parse("6.13-rc1"), Some(Kver::new(6, 13)));
        assert_eq!(Kver::parse("6.5.0"), Some(Kver::new(6, 5)));
        assert_eq!(Kver::parse("5.15"), Some(Kver::new(5, 15)));
        assert_eq!(Kver::parse(""), None);
        assert_eq!(Kver::parse("linux"), None);
        assert_eq!(Kver::parse("6"), None);
    }

    #[test]
    fn versions_order_numerically() {
        assert!(Kver::new(6, 12) > Kver::new(6, 5));
        assert!(Kver::new(6, 4) < WRITABLE_FILE_PIN_RULE);
        assert!(Kver::new(7, 0) > Kver::new(6, 12));
    }

    #[test]
    fn shared_writable_writeback_files_follow_the_6_5_rule() {
        for id in ["xfs-shared-rw", "ext4-shared-rw"] {
            let r = row(id);
            assert_eq!(r.expected(Kver::new(6, 1)), Expect::Granted, "{id}");
            assert_eq!(r.expected(Kver::new(6, 4)), Expect::Granted, "{id}");
            assert_eq!(
                r.expected(Kver::new(6, 5)),
                Expect::Errno(libc::EFAULT),
                "{id}"
            );
            assert_eq!(
                r.expected(Kver::new(6, 12)),
                Expect::Errno(libc::EFAULT),
                "{id}"
            );
            assert_eq!(
                r.expected(Kver::new(7, 3)),
                Expect::Errno(libc::EFAULT),
                "{id}"
            );
        }
    }

    #[test]
    fn fsdax_is_eopnotsupp_everywhere_and_the_rest_granted() {
        for v in [Kver::new(6, 1), Kver::new(6, 12), Kver::new(7, 3)] {
            for r in ROWS {
                let e = r.expected(v);
                match r.mem {
                    Mem::FsDax => assert_eq!(e, Expect::Errno(libc::EOPNOTSUPP), "{}", r.id),
                    Mem::Xfs | Mem::Ext4 if r.shared && !r.readonly && !r.shortterm => {}
                    _ => assert_eq!(e, Expect::Granted, "{} on {v}", r.id),
                }
            }
        }
    }

    #[test]
    fn ids_are_unique_and_kebab() {
        let mut ids: Vec<&str> = ROWS.iter().map(|r| r.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), ROWS.len());
        for id in ids {
            assert!(
                id.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{id}"
            );
        }
    }

    #[test]
    fn verdict_line_format() {
        let r = row("xfs-shared-rw");
        assert_eq!(
            verdict_line(r, Expect::Errno(libc::EFAULT), r.expected(Kver::new(6, 12))),
            "verdict xfs-shared-rw EFAULT expected EFAULT"
        );
        assert_eq!(
            verdict_line(r, Expect::Granted, r.expected(Kver::new(6, 1))),
            "verdict xfs-shared-rw granted expected granted"
        );
        assert_eq!(
            verdict_line(
                row("fsdax-shared-rw"),
                Expect::Granted,
                Expect::Errno(libc::EOPNOTSUPP)
            ),
            "verdict fsdax-shared-rw granted expected EOPNOTSUPP"
        );
    }

    #[test]
    fn umem_drops_foll_force_from_6_2() {
        assert_eq!(umem_write_force(Kver::new(6, 1), false), (true, true));
        assert_eq!(umem_write_force(Kver::new(6, 1), true), (true, false));
        assert_eq!(umem_write_force(Kver::new(6, 12), false), (false, false));
        assert_eq!(umem_write_force(Kver::new(7, 3), true), (true, false));
    }

    #[test]
    fn verbs_rows_per_kernel() {
        let efault = Expect::Errno(libc::EFAULT);
        let want: &[(&str, Expect, Expect)] = &[
            // (row, 6.1, 6.12 and 7.3)
            ("anon-private-rw-mr-ro", Expect::Granted, Expect::Granted),
            ("memfd-shared-rw-mr-rw", Expect::Granted, Expect::Granted),
            ("xfs-shared-rw-mr-ro", Expect::Granted, Expect::Granted),
            ("xfs-shared-rw-mr-rw", Expect::Granted, efault),
            ("xfs-shared-ro-mr-ro", efault, Expect::Granted),
            ("xfs-shared-ro-mr-rw", efault, efault),
            ("xfs-private-ro-mr-ro", Expect::Granted, Expect::Granted),
            ("xfs-private-ro-mr-rw", efault, efault),
            ("ext4-shared-rw-mr-rw", Expect::Granted, efault),
        ];
        for &(id, old, new) in want {
            let r = verbs_row_by_id(id);
            assert_eq!(r.expected(Kver::new(6, 1)), old, "{id} on 6.1");
            assert_eq!(r.expected(Kver::new(6, 12)), new, "{id} on 6.12");
            assert_eq!(r.expected(Kver::new(7, 3)), new, "{id} on 7.3");
        }
    }

    #[test]
    fn verbs_rows_name_real_reg_mr_rows() {
        let mut ids: Vec<&str> = VERBS_ROWS.iter().map(|r| r.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), VERBS_ROWS.len());
        for r in VERBS_ROWS {
            if let Some(id) = r.reg_mr_row {
                assert!(ROWS.iter().any(|x| x.id == id), "{}: {id}", r.id);
            }
        }
    }
}
