//! Kernel modules: load (finit_module), unload (delete_module), is it
//! loaded.

use crate::dev::{SysError, SysResult};
use std::ffi::CString;
use std::os::fd::AsRawFd;

pub fn delete_module(name: &str) -> SysResult<()> {
    let c = CString::new(name).unwrap();
    // SAFETY: delete_module with a valid name.
    if unsafe { libc::syscall(libc::SYS_delete_module, c.as_ptr(), libc::O_NONBLOCK) } < 0 {
        return Err(SysError::last(format!("delete_module({name}, O_NONBLOCK)")));
    }
    Ok(())
}

pub fn finit_module(path: &str) -> SysResult<()> {
    let f = std::fs::File::open(path).map_err(|e| {
        SysError::new(
            format!("open {path}"),
            e.raw_os_error().unwrap_or(libc::EIO),
        )
    })?;
    let params = CString::new("").unwrap();
    // SAFETY: finit_module on an open file with empty params.
    if unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), params.as_ptr(), 0) } < 0 {
        return Err(SysError::last(format!("finit_module({path})")));
    }
    Ok(())
}

pub fn module_loaded(name: &str) -> bool {
    std::path::Path::new(&format!("/sys/module/{name}")).exists()
}
