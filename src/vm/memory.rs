//! The table of memory regions a checked execution may touch: the input buffer, the live stack frames,
//! and regions the host granted (later: map values, global data).

/// A range of host memory the program may access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// First address.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// Whether stores are allowed.
    pub writable: bool,
}

impl Region {
    /// Whether `len` bytes at `addr` lie inside the region.
    #[inline(always)]
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        let off = addr.wrapping_sub(self.start);
        off <= self.len && self.len - off >= len
    }
}

/// The regions of one execution. The stack region grows and shrinks with bpf-to-bpf calls.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MemoryMap<'a> {
    pub(crate) input: Region,
    /// The live frames: `[stack_lo, stack_hi)`.
    pub(crate) stack_lo: u64,
    pub(crate) stack_hi: u64,
    pub(crate) extra: &'a [Region],
}

impl MemoryMap<'_> {
    /// Whether the program may access `len` bytes at `addr`, for writing if `write`.
    #[inline(always)]
    pub(crate) fn allows(&self, addr: u64, len: u64, write: bool) -> bool {
        if self.input.contains(addr, len) {
            return true;
        }
        let off = addr.wrapping_sub(self.stack_lo);
        let size = self.stack_hi - self.stack_lo;
        if off <= size && size - off >= len {
            return true;
        }
        self.allows_extra(addr, len, write)
    }

    #[inline(never)]
    fn allows_extra(&self, addr: u64, len: u64, write: bool) -> bool {
        self.extra.iter().any(|r| r.contains(addr, len) && (r.writable || !write))
    }
}
