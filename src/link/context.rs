//! What a program is given when it starts: how `r1` and `r2` are set up, and which bytes behind `r1`
//! it may read or write. The verifier's proof depends on it, and verified executions check that the
//! memory a host passes matches it.

use alloc::vec::Vec;
use core::ops::Range;

/// The description of a program's context: what `r1` points to and what `r2` holds at entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Context {
    /// `r1` points to a buffer of `r2` bytes that the program may read and write; its length is known
    /// only at run time (what `Vm::execute` passes). A guard such as
    /// `if (len < 8) return 0;`, or an end pointer `r1 + r2` compared with `r1 + 8`, proves accesses.
    #[default]
    Buffer,
    /// `r1` points to exactly `size` bytes (and `r2` holds `size`); the bytes in `read_only` may be read
    /// but not written. Executions are refused memory of another length.
    Fixed {
        /// Bytes behind `r1`.
        size: u32,
        /// Ranges of bytes the program may only read.
        read_only: Vec<Range<u32>>,
    },
    /// `r1` points to a read-only context struct of `size` bytes whose 8-byte fields at `data` and
    /// `data_end` hold the start and the end of a packet (as XDP's `xdp_md`, with 64-bit fields); `r2`
    /// holds `size`. The packet may be read and written between those pointers once a guard such as
    /// `if (data + N > data_end)` proves it.
    Packet {
        /// Bytes of the context struct.
        size: u32,
        /// Offset of the field holding the packet's start.
        data: u32,
        /// Offset of the field holding the packet's end.
        data_end: u32,
    },
}

impl Context {
    /// A fixed-size context of `size` bytes, all of them writable.
    pub fn fixed(size: u32) -> Context {
        Context::Fixed { size, read_only: Vec::new() }
    }

    /// Whether `len` bytes of memory behind `r1` fit this description (for [`Context::Buffer`], any length
    /// up to `u32::MAX`: the verifier proves accesses against lengths of that range).
    pub fn accepts_len(&self, len: usize) -> bool {
        match self {
            Context::Buffer => len <= u32::MAX as usize,
            Context::Fixed { size, .. } | Context::Packet { size, .. } => len == *size as usize,
        }
    }
}
