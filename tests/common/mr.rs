//! MR contents straight in guest memory, and request builders, for the
//! `daemon_ops_*` tests.

use pinlease_abi::*;
use pinlease_testkit::frontend::TestFrontend;

pub const P: u64 = PL_PAGE_SIZE;

/// Guest address of MR offset `off` for an MR over `pages` starting `fpo`
/// bytes into its first page (docs/abi.md §5.9).
pub fn mr_gpa(pages: &[u64], fpo: u32, off: u64) -> u64 {
    let pos = u64::from(fpo) + off;
    pages[(pos / P) as usize] + pos % P
}

/// Writes `data` at MR offset `off`, page by page, straight into guest memory.
pub fn write_mr(fe: &TestFrontend, pages: &[u64], fpo: u32, off: u64, data: &[u8]) {
    let mut done = 0usize;
    while done < data.len() {
        let gpa = mr_gpa(pages, fpo, off + done as u64);
        let n = ((P - gpa % P) as usize).min(data.len() - done);
        fe.write_mem(gpa, &data[done..done + n]).unwrap();
        done += n;
    }
}

/// Reads `len` bytes at MR offset `off` straight from guest memory.
pub fn read_mr(fe: &TestFrontend, pages: &[u64], fpo: u32, off: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let gpa = mr_gpa(pages, fpo, off + out.len() as u64);
        let n = ((P - gpa % P) as usize).min(len - out.len());
        out.extend(fe.read_mem(gpa, n).unwrap());
    }
    out
}

pub fn word_at(fe: &TestFrontend, gpa: u64) -> u64 {
    u64::from_le_bytes(fe.read_mem(gpa, 8).unwrap().try_into().unwrap())
}

pub fn dma(
    local: u64,
    local_offset: u64,
    remote: u64,
    remote_offset: u64,
    length: u64,
) -> PlDmaReq {
    PlDmaReq {
        local_key: local,
        local_offset,
        remote_key: remote,
        remote_offset,
        length,
    }
}

pub fn pat(key: u64, offset: u64, length: u64, pattern: u64, mode: u32) -> PlPatternReq {
    PlPatternReq::new(key, offset, length, pattern, mode)
}
