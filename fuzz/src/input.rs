//! A fuzz input read as a stream of little-endian integers: the targets
//! draw their decisions from it, and an exhausted input reads as zeros, so
//! every byte string is a valid program.

pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next `n` bytes (fewer at the end), consumed.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    fn uint(&mut self, n: usize) -> u64 {
        let mut b = [0u8; 8];
        let head = self.bytes(n);
        b[..head.len()].copy_from_slice(head);
        u64::from_le_bytes(b)
    }

    pub fn u8(&mut self) -> u8 {
        self.uint(1) as u8
    }

    pub fn u16(&mut self) -> u16 {
        self.uint(2) as u16
    }

    pub fn u32(&mut self) -> u32 {
        self.uint(4) as u32
    }

    pub fn u64(&mut self) -> u64 {
        self.uint(8)
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 != 0
    }
}

/// Writes what `Input` reads: the seed generator builds inputs with it.
#[derive(Default)]
pub struct Program {
    pub bytes: Vec<u8>,
}

impl Program {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes.push(v);
        self
    }

    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes.extend(v.to_le_bytes());
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes.extend(v.to_le_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes.extend(v.to_le_bytes());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_program_writes_then_zeros() {
        let mut p = Program::default();
        p.u8(7).u16(0x1234).u32(0xdead_beef).u64(u64::MAX - 1);
        let mut i = Input::new(&p.bytes);
        assert_eq!(i.u8(), 7);
        assert_eq!(i.u16(), 0x1234);
        assert_eq!(i.u32(), 0xdead_beef);
        assert_eq!(i.u64(), u64::MAX - 1);
        assert!(i.is_empty());
        assert_eq!(i.u64(), 0);
    }

    #[test]
    fn a_short_tail_is_zero_extended() {
        let mut i = Input::new(&[0x01, 0x02]);
        assert_eq!(i.u32(), 0x0201);
    }
}
