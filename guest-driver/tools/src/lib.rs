//! Guest-side tool and test suite of pinlease: drives `/dev/pinleaseN`
//! (the guest module's ioctls, `guest-driver/include/pinlease_uapi.h`) and
//! prints KTAP. See `guest-driver/README.md` for the contract.

pub mod campaign;
pub mod cases;
pub mod dataloss;
pub mod dev;
pub mod ktap;
pub mod markers;
pub mod nodevice;
pub mod stray;
pub mod sys;
pub mod uapi;
pub mod verdicts;
