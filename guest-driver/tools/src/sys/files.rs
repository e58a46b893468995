//! Files and mounts: reading and writing /proc and /sys files, the mount
//! table, DAX files, tmpfs mounts a case makes, waiting for a path.

use crate::dev::{SysError, SysResult};
use std::ffi::CString;
use std::time::{Duration, Instant};

/// STATX_ATTR_DAX of a file (None when statx fails).
pub fn file_is_dax(path: &str) -> Option<bool> {
    let c = CString::new(path).ok()?;
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: statx into a zeroed buffer.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            0,
            libc::STATX_BASIC_STATS,
            &mut stx,
        )
    };
    if rc < 0 {
        return None;
    }
    const STATX_ATTR_DAX: u64 = 0x0020_0000;
    if stx.stx_attributes_mask & STATX_ATTR_DAX == 0 {
        return None;
    }
    Some(stx.stx_attributes & STATX_ATTR_DAX != 0)
}

pub fn read_to_string(path: &str) -> SysResult<String> {
    std::fs::read_to_string(path).map_err(|e| {
        SysError::new(
            format!("read {path}"),
            e.raw_os_error().unwrap_or(libc::EIO),
        )
    })
}

pub fn write_str(path: &str, s: &str) -> SysResult<()> {
    std::fs::write(path, s).map_err(|e| {
        SysError::new(
            format!("write {s:?} to {path}"),
            e.raw_os_error().unwrap_or(libc::EIO),
        )
    })
}

/// One line of /proc/mounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub source: String,
    pub target: String,
    pub fstype: String,
    pub options: Vec<String>,
}

pub fn parse_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() >= 4).then(|| Mount {
                source: w[0].to_string(),
                target: w[1].replace("\\040", " "),
                fstype: w[2].to_string(),
                options: w[3].split(',').map(str::to_string).collect(),
            })
        })
        .collect()
}

/// The mount at exactly `target` (the last one, as it hides the others).
pub fn mount_at(target: &str) -> Option<Mount> {
    let text = std::fs::read_to_string("/proc/mounts").ok()?;
    parse_mounts(&text)
        .into_iter()
        .rev()
        .find(|m| m.target == target)
}

impl Mount {
    pub fn has_dax(&self) -> bool {
        self.options.iter().any(|o| o == "dax" || o == "dax=always")
    }
}

/// Waits for a path to exist.
pub fn wait_path(path: &str, timeout: Duration) -> bool {
    wait_path_state(path, true, timeout)
}

/// Waits for a path to disappear (a device node after unbind or rmmod).
pub fn wait_path_gone(path: &str, timeout: Duration) -> bool {
    wait_path_state(path, false, timeout)
}

/// Polls every 20 ms until `path` exists (or not, per `present`); false
/// once `timeout` passed without that.
fn wait_path_state(path: &str, present: bool, timeout: Duration) -> bool {
    let start = Instant::now();
    loop {
        if std::path::Path::new(path).exists() == present {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A tmpfs mounted by a case at `dir` (created if missing); unmounted
/// (lazily, so a leftover mapping cannot keep it) and the directory
/// removed on drop.
#[derive(Debug)]
pub struct TmpfsMount {
    pub dir: String,
}

impl TmpfsMount {
    pub fn new(dir: &str, size: &str) -> SysResult<TmpfsMount> {
        std::fs::create_dir_all(dir)
            .map_err(|e| SysError::new(format!("mkdir {dir}"), e.raw_os_error().unwrap_or(0)))?;
        let c = |s: &str| CString::new(s).unwrap();
        let (src, target, fstype, opts) =
            (c("tmpfs"), c(dir), c("tmpfs"), c(&format!("size={size}")));
        // SAFETY: mount(2) with valid NUL-terminated strings.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                opts.as_ptr() as *const libc::c_void,
            )
        };
        if rc < 0 {
            return Err(SysError::last(format!(
                "mount -t tmpfs -o size={size} tmpfs {dir}"
            )));
        }
        Ok(TmpfsMount {
            dir: dir.to_string(),
        })
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        if let Ok(c) = CString::new(self.dir.as_str()) {
            // SAFETY: umount2 with a valid path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_parse_and_dax() {
        let m = parse_mounts(
            "/dev/vda /mnt/xfs xfs rw,relatime,attr2 0 0\n\
             /dev/pmem0 /mnt/dax xfs rw,relatime,attr2,dax=always 0 0\n",
        );
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].fstype, "xfs");
        assert!(!m[0].has_dax());
        assert!(m[1].has_dax());
        assert_eq!(m[1].target, "/mnt/dax");
    }
}
