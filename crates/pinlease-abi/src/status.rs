//! Response statuses: values and names.

/// Response status: 0 or a Linux errno value, so the module can return
/// `-status` to user space unchanged. Values are ABI.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    Ok = 0,
    /// Access flags of the MR forbid the operation, or the object belongs
    /// to another context.
    Perm = 1,
    /// No such handle, key, lease or export (never existed).
    NoEnt = 2,
    /// Guest memory could not be read or written (region gone mid-copy).
    Io = 5,
    /// Request too large (page count or length over a limit).
    TooBig = 7,
    /// Context handle never issued (a stale one gets ESTALE).
    BadF = 9,
    /// A table is full.
    NoMem = 12,
    /// Address outside guest memory, or outside the MR.
    Fault = 14,
    /// Object in use (children alive, lease being broken, wait-policy refusal).
    Busy = 16,
    /// Malformed request: wrong size, bad flags, misaligned atomic.
    Inval = 22,
    /// Offset + length overflows or exceeds the MR.
    Range = 34,
    /// Unknown opcode.
    NoSys = 38,
    /// The context is closing or closed (hardware lifetime over).
    Shutdown = 108,
    /// Handle or key was valid once; the object is gone (generation mismatch).
    Stale = 116,
    /// The MR was revoked before or during the operation.
    Canceled = 125,
}

impl Status {
    pub const ALL: [Status; 15] = [
        Status::Ok,
        Status::Perm,
        Status::NoEnt,
        Status::Io,
        Status::TooBig,
        Status::BadF,
        Status::NoMem,
        Status::Fault,
        Status::Busy,
        Status::Inval,
        Status::Range,
        Status::NoSys,
        Status::Shutdown,
        Status::Stale,
        Status::Canceled,
    ];

    /// The name of the C constant (`PL_S_EPERM`), as in the header and
    /// docs/abi.md.
    pub fn const_name(self) -> &'static str {
        match self {
            Status::Ok => "PL_S_OK",
            Status::Perm => "PL_S_EPERM",
            Status::NoEnt => "PL_S_ENOENT",
            Status::Io => "PL_S_EIO",
            Status::TooBig => "PL_S_E2BIG",
            Status::BadF => "PL_S_EBADF",
            Status::NoMem => "PL_S_ENOMEM",
            Status::Fault => "PL_S_EFAULT",
            Status::Busy => "PL_S_EBUSY",
            Status::Inval => "PL_S_EINVAL",
            Status::Range => "PL_S_ERANGE",
            Status::NoSys => "PL_S_ENOSYS",
            Status::Shutdown => "PL_S_ESHUTDOWN",
            Status::Stale => "PL_S_ESTALE",
            Status::Canceled => "PL_S_ECANCELED",
        }
    }

    /// The name used in logs and status output: the errno name (`EPERM`,
    /// or `OK`), the C constant's name without `PL_S_`.
    pub fn name(self) -> &'static str {
        crate::names::without_prefix(self.const_name(), "PL_S_")
    }

    pub fn from_u32(v: u32) -> Option<Status> {
        Self::ALL.iter().copied().find(|s| *s as u32 == v)
    }
}
