//! Memory for compiled code, with pages kept for reuse (x86_64).
//!
//! `cranelift-jit`'s own provider maps fresh pages for every module and unmaps them when the module
//! is freed: with one module per program, building a small program paid a map, a page fault, a
//! protection change and an unmap, a third of its time in the kernel. [`PooledCode`] takes code pages
//! from a process-wide pool instead and gives them back when the program is dropped, so building costs
//! two protection changes (writable while the code is copied in, then executable).
//!
//! The pool is used on x86_64 only, where instruction fetch is coherent with data writes: the change
//! back to executable (which the kernel makes visible to every thread before it returns) is all a reused
//! page needs. Other architectures need their instruction caches maintained, and use `cranelift-jit`'s
//! provider, which does that.

use std::io;
use std::vec::Vec;

use cranelift_jit::{BranchProtection, JITMemoryKind, JITMemoryProvider};
use cranelift_module::{ModuleError, ModuleResult};
use region::Protection;

/// Bytes of one pooled chunk: code up to this size (the common case) takes one chunk.
const CHUNK: usize = 16 * 1024;
/// Chunks the pool keeps at most (1 MiB); chunks given back beyond that are unmapped.
const POOL_CHUNKS: usize = 64;
/// What fills a reused chunk before new code is copied in: `int3`, so that no byte of a program that
/// was dropped can run.
const FILL: u8 = 0xcc;

/// A mapped range, owned.
struct Chunk {
    alloc: region::Allocation,
}

// SAFETY: a chunk is an owned mapping; nothing in it refers to the thread that mapped it.
unsafe impl Send for Chunk {}

impl Chunk {
    fn ptr(&mut self) -> *mut u8 {
        self.alloc.as_mut_ptr::<u8>()
    }

    fn len(&self) -> usize {
        self.alloc.len()
    }
}

/// Chunks of `CHUNK` bytes no module uses, executable or writable.
static POOL: spin::Mutex<Vec<Chunk>> = spin::Mutex::new(Vec::new());

fn io_error(e: region::Error) -> io::Error {
    io::Error::other(e)
}

/// One kind of memory (code, read-only data or writable data) of a module: chunks allocated in turn.
#[derive(Default)]
struct Arena {
    chunks: Vec<Chunk>,
    /// Chunks before this index are finalised: nothing more is allocated in them.
    finalised: usize,
    /// Bytes used in the last chunk.
    used: usize,
}

impl Arena {
    /// `size` bytes aligned to `align` (a power of two, at most a page), writable until finalised.
    fn allocate(&mut self, size: usize, align: usize, pooled: bool) -> io::Result<*mut u8> {
        let align = align.max(1);
        if self.chunks.len() > self.finalised {
            let start = self.used.checked_next_multiple_of(align).ok_or_else(|| io::Error::other("alignment"))?;
            let last = self.chunks.last_mut().expect("an open chunk");
            if start.checked_add(size).is_some_and(|end| end <= last.len()) {
                self.used = start + size;
                // SAFETY: `start + size` is within the chunk's mapping.
                return Ok(unsafe { last.ptr().add(start) });
            }
        }
        let mut chunk = if pooled && size <= CHUNK { take_chunk()? } else { fresh_chunk(size.max(1))? };
        self.used = size;
        let ptr = chunk.ptr();
        self.chunks.push(chunk);
        Ok(ptr)
    }

    /// Sets the protection of every chunk allocated since the last call; no more is allocated in them.
    fn finalise(&mut self, protection: Protection) -> Result<(), region::Error> {
        for chunk in &mut self.chunks[self.finalised..] {
            let (ptr, len) = (chunk.ptr(), chunk.len());
            // SAFETY: the range is this chunk's own mapping; the module's code and data in it are
            // complete (finalising comes after every definition).
            unsafe { region::protect(ptr, len, protection) }?;
        }
        self.finalised = self.chunks.len();
        self.used = 0;
        Ok(())
    }
}

/// A chunk from the pool, writable and filled with [`FILL`], or a new one.
fn take_chunk() -> io::Result<Chunk> {
    let Some(mut chunk) = POOL.lock().pop() else { return fresh_chunk(CHUNK) };
    let (ptr, len) = (chunk.ptr(), chunk.len());
    // SAFETY: the chunk came back from a module that was freed: no code in it can run any more, and
    // the range is the chunk's own mapping.
    unsafe { region::protect(ptr, len, Protection::READ_WRITE) }.map_err(io_error)?;
    // SAFETY: the chunk is mapped and now writable; nothing else refers to it.
    unsafe { core::ptr::write_bytes(ptr, FILL, len) };
    Ok(chunk)
}

/// A new writable mapping of at least `size` bytes (fresh pages read as zero).
fn fresh_chunk(size: usize) -> io::Result<Chunk> {
    let size = if size <= CHUNK { CHUNK } else { size };
    Ok(Chunk { alloc: region::alloc(size, Protection::READ_WRITE).map_err(io_error)? })
}

/// The memory of one JIT module: code in pooled chunks, data in chunks of its own.
#[derive(Default)]
pub(crate) struct PooledCode {
    code: Arena,
    readonly: Arena,
    writable: Arena,
}

impl JITMemoryProvider for PooledCode {
    fn allocate(&mut self, size: usize, align: u64, kind: JITMemoryKind) -> io::Result<*mut u8> {
        let align = usize::try_from(align).ok().filter(|a| a.is_power_of_two() && *a <= 4096);
        let align = align.ok_or_else(|| io::Error::other("unsupported alignment"))?;
        match kind {
            JITMemoryKind::Executable => self.code.allocate(size, align, true),
            JITMemoryKind::ReadOnly => self.readonly.allocate(size, align, false),
            JITMemoryKind::Writable => self.writable.allocate(size, align, false),
        }
    }

    unsafe fn free_memory(&mut self) {
        let mut pool = POOL.lock();
        for chunk in self.code.chunks.drain(..) {
            if chunk.len() == CHUNK && pool.len() < POOL_CHUNKS {
                pool.push(chunk);
            }
            // Else the chunk is dropped here: unmapped.
        }
        drop(pool);
        self.readonly.chunks.clear();
        self.writable.chunks.clear();
        self.code.finalised = 0;
        self.readonly.finalised = 0;
        self.writable.finalised = 0;
    }

    fn finalize(&mut self, _branch_protection: BranchProtection) -> ModuleResult<()> {
        // Branch target identification is an aarch64 feature; this provider serves x86_64 only.
        let backend = |e: region::Error| ModuleError::Backend(e.into());
        self.readonly.finalise(Protection::READ).map_err(backend)?;
        self.code.finalise(Protection::READ_EXECUTE).map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_aligned_and_share_a_chunk_until_it_is_finalised() {
        let mut mem = PooledCode::default();
        let a = mem.allocate(10, 64, JITMemoryKind::Executable).expect("allocates") as usize;
        let b = mem.allocate(100, 64, JITMemoryKind::Executable).expect("allocates") as usize;
        assert_eq!((a % 64, b % 64), (0, 0));
        assert_eq!(b, a + 64, "the second allocation follows the first in the same chunk");
        mem.finalize(BranchProtection::None).expect("finalises");
        let c = mem.allocate(10, 16, JITMemoryKind::Executable).expect("allocates") as usize;
        assert!(c < a || c >= a + CHUNK, "nothing is allocated in a finalised chunk");
        assert_eq!(mem.code.chunks.len(), 2);
        // SAFETY: nothing runs from this memory.
        unsafe { mem.free_memory() };
        assert!(mem.code.chunks.is_empty());
    }

    #[test]
    fn large_allocations_get_a_mapping_of_their_own() {
        let mut mem = PooledCode::default();
        let ptr = mem.allocate(CHUNK * 3 + 1, 64, JITMemoryKind::Executable).expect("allocates");
        assert_eq!(mem.code.chunks.len(), 1);
        assert!(mem.code.chunks[0].len() > CHUNK * 3);
        // SAFETY: the allocation is writable until finalised, and this long.
        unsafe { core::ptr::write_bytes(ptr, 0x90, CHUNK * 3 + 1) };
        mem.finalize(BranchProtection::None).expect("finalises");
        // SAFETY: nothing runs from this memory.
        unsafe { mem.free_memory() };
    }

    #[test]
    fn alignments_past_a_page_are_refused() {
        let mut mem = PooledCode::default();
        assert!(mem.allocate(8, 8192, JITMemoryKind::Executable).is_err());
        assert!(mem.allocate(8, 24, JITMemoryKind::ReadOnly).is_err());
    }
}
