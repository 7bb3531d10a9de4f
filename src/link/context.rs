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
    /// Packet style, as XDP's `xdp_md` (with 64-bit fields): the memory a host passes holds a context
    /// struct of `size` bytes followed by the packet. Before each run the runtime writes the packet's
    /// start and end addresses into the struct's 8-byte fields at `data` and `data_end`; `r1` points to
    /// the struct, which programs may only read, and `r2` holds the whole memory's length. The packet
    /// may be read and written between those pointers once a guard such as `if (data + N > data_end)`
    /// proves it.
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
            Context::Fixed { size, .. } => len == *size as usize,
            Context::Packet { size, .. } => len >= *size as usize && len - *size as usize <= u32::MAX as usize,
        }
    }

    /// Writes what the description promises into `mem` before a run: for [`Context::Packet`], the
    /// packet's start and end addresses into the struct's `data` and `data_end` fields (when the memory
    /// holds them).
    #[inline]
    pub(crate) fn prepare(&self, mem: &mut [u8]) {
        if let Context::Packet { size, data, data_end } = *self {
            Context::prepare_packet(mem, size, data, data_end);
        }
    }

    /// [`prepare`](Context::prepare) for a packet context (out of line: most runs need none of it).
    #[cold]
    #[inline(never)]
    fn prepare_packet(mem: &mut [u8], size: u32, data: u32, data_end: u32) {
        let size = size as usize;
        if mem.len() < size {
            return;
        }
        let start = mem.as_ptr() as u64 + size as u64;
        let end = mem.as_ptr() as u64 + mem.len() as u64;
        for (field, value) in [(data, start), (data_end, end)] {
            let at = field as usize;
            if let Some(bytes) = mem.get_mut(at..at + 8).filter(|_| at + 8 <= size) {
                bytes.copy_from_slice(&value.to_ne_bytes());
            }
        }
    }

    /// Whether a packet-style description is well formed: both fields inside the struct, apart.
    pub(crate) fn fields_fit(&self) -> bool {
        match *self {
            Context::Packet { size, data, data_end } => {
                let fits = |f: u32| f.checked_add(8).is_some_and(|e| e <= size);
                fits(data) && fits(data_end) && data.abs_diff(data_end) >= 8
            }
            _ => true,
        }
    }
}
