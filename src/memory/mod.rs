//! The memory a program can touch, and the only code that touches it.
//!
//! A [`Region`] is a range of host memory; a [`MemoryMap`] is the table of regions one checked execution
//! may access (its input, its live stack frames, and the host's regions), and [`Grants`] holds what
//! helpers handed to the execution while it runs (reserved ring-buffer records). The primitives in
//! [`access`] are how both engines and the helpers read and write that memory.
//!
//! Memory is *private* to one execution (its input buffer and its stack) or *shared* (map values,
//! ring-buffer records, memory the host granted), which other executions and host threads may access
//! at the same time. Rust code touches shared memory only with atomic accesses (see [`access`]).

pub mod access;

use core::mem::MaybeUninit;

pub use access::Access;

/// Bytes of stack in each frame.
pub const FRAME_SIZE: usize = 512;
/// Most stack frames of one execution (the entry function and nested bpf-to-bpf calls).
pub const MAX_FRAMES: usize = 8;
/// Bytes of stack for all frames together.
pub const STACK_SIZE: usize = FRAME_SIZE * MAX_FRAMES;

/// A range of host memory the program may access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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

    /// Whether an access of `len` bytes at `addr` (a store if `write`) is allowed in this region.
    #[inline(always)]
    pub fn allows(&self, addr: u64, len: u64, write: bool) -> bool {
        self.contains(addr, len) && (self.writable || !write)
    }
}

/// The regions of one execution. The stack region grows and shrinks with bpf-to-bpf calls; it is empty
/// when no program of the execution names r10 (then nothing can reach the stack legitimately, and its
/// frames are not initialised).
#[derive(Debug, Clone, Copy)]
pub struct MemoryMap<'a> {
    /// The input buffer (private to the execution, writable).
    pub input: Region,
    /// The lowest address of the live frames.
    pub stack_lo: u64,
    /// One past the highest address of the stack.
    pub stack_hi: u64,
    /// Shared host memory: regions the host granted, and map storage.
    pub shared: &'a [Region],
}

impl MemoryMap<'_> {
    /// Whether the program may access `len` bytes at `addr` (a store if `write`), and if so whether the
    /// bytes are private to the execution or shared.
    #[inline(always)]
    pub fn classify(&self, addr: u64, len: u64, write: bool, grants: &Grants) -> Option<Access> {
        if self.input.contains(addr, len) {
            return Some(Access::Private);
        }
        let off = addr.wrapping_sub(self.stack_lo);
        let size = self.stack_hi - self.stack_lo;
        if off <= size && size - off >= len {
            return Some(Access::Private);
        }
        self.classify_shared(addr, len, write, grants)
    }

    #[inline(never)]
    fn classify_shared(&self, addr: u64, len: u64, write: bool, grants: &Grants) -> Option<Access> {
        let allowed = self.shared.iter().any(|r| r.allows(addr, len, write)) || grants.allows(addr, len, write);
        allowed.then_some(Access::Shared)
    }

    /// Whether `len` bytes at `addr` lie in memory private to the execution (the input or the live
    /// frames) that it may access (a store if `write`).
    #[inline(always)]
    pub fn private(&self, addr: u64, len: u64, write: bool) -> bool {
        let stack = Region { start: self.stack_lo, len: self.stack_hi - self.stack_lo, writable: true };
        self.input.allows(addr, len, write) || stack.contains(addr, len)
    }

    /// Whether the program may access `len` bytes at `addr` (a store if `write`).
    #[inline(always)]
    pub fn allows(&self, addr: u64, len: u64, write: bool, grants: &Grants) -> bool {
        self.classify(addr, len, write, grants).is_some()
    }

    /// For unchecked executions, which do not test accesses: private if the bytes lie in the input or
    /// the live frames, shared otherwise (an atomic access is correct for private memory too).
    #[inline(always)]
    pub fn classify_unchecked(&self, addr: u64, len: u64) -> Access {
        let stack = Region { start: self.stack_lo, len: self.stack_hi - self.stack_lo, writable: true };
        if self.input.contains(addr, len) || stack.contains(addr, len) {
            Access::Private
        } else {
            Access::Shared
        }
    }
}

/// A region a helper handed to one execution, with a tag saying what it belongs to (for a ring-buffer
/// record: the index of its map in the environment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Grant {
    /// The memory granted.
    pub region: Region,
    /// What the memory belongs to.
    pub owner: u32,
}

/// Most regions one execution may hold at once (ring-buffer records reserved and not yet submitted or
/// discarded); a helper asked for more fails as when its memory is exhausted.
pub const MAX_GRANTS: usize = 16;

/// The regions helpers handed to one execution. It lives in the execution's own state, allocates
/// nothing (and costs nothing to create: its slots are written only when used), and is empty again
/// when the execution ends.
pub struct Grants {
    /// `items[..len]` are initialised.
    items: [MaybeUninit<Grant>; MAX_GRANTS],
    len: usize,
}

impl Default for Grants {
    fn default() -> Grants {
        Grants::new()
    }
}

impl core::fmt::Debug for Grants {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl Grants {
    /// No grants. Not a `const fn`: a constant would be copied in whole (its unwritten bytes as zeros),
    /// where this leaves the slots unwritten.
    #[inline(always)]
    pub fn new() -> Grants {
        // SAFETY: an array of `MaybeUninit` needs no initialisation.
        let items = unsafe { MaybeUninit::<[MaybeUninit<Grant>; MAX_GRANTS]>::uninit().assume_init() };
        Grants { items, len: 0 }
    }

    /// Adds a grant; `false` if the table is full.
    pub fn push(&mut self, grant: Grant) -> bool {
        match self.items.get_mut(self.len) {
            Some(slot) => {
                slot.write(grant);
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// Removes and returns the grant whose region starts at `start`.
    pub fn remove(&mut self, start: u64) -> Option<Grant> {
        let i = self.as_slice().iter().position(|g| g.region.start == start)?;
        let g = self.as_slice()[i];
        let last = self.as_slice()[self.len - 1];
        self.items[i].write(last);
        self.len -= 1;
        Some(g)
    }

    /// Removes and returns the most recent grant.
    pub fn pop(&mut self) -> Option<Grant> {
        let g = *self.as_slice().last()?;
        self.len -= 1;
        Some(g)
    }

    /// Whether some grant allows an access of `len` bytes at `addr` (a store if `write`).
    #[inline]
    pub fn allows(&self, addr: u64, len: u64, write: bool) -> bool {
        self.as_slice().iter().any(|g| g.region.allows(addr, len, write))
    }

    /// The grants held.
    #[inline]
    pub fn as_slice(&self) -> &[Grant] {
        // SAFETY: `items[..len]` are initialised (`push` writes a slot before counting it, `remove`
        // moves an initialised one down), and `MaybeUninit<Grant>` has `Grant`'s layout.
        unsafe { core::slice::from_raw_parts(self.items.as_ptr().cast::<Grant>(), self.len) }
    }

    /// Whether no grant is held.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_contain_exactly_their_bytes() {
        let r = Region { start: 100, len: 8, writable: false };
        assert!(r.contains(100, 8) && r.contains(107, 1) && r.contains(108, 0));
        assert!(!r.contains(99, 1) && !r.contains(101, 8) && !r.contains(u64::MAX, 2));
        assert!(r.allows(100, 1, false) && !r.allows(100, 1, true));
    }

    #[test]
    fn grants_are_added_found_and_removed() {
        let mut g = Grants::new();
        for i in 0..MAX_GRANTS as u64 {
            assert!(g.push(Grant { region: Region { start: i * 100, len: 10, writable: true }, owner: i as u32 }));
        }
        assert!(!g.push(Grant::default()), "the table is full");
        assert!(g.allows(305, 5, true) && !g.allows(305, 6, true));
        assert_eq!(g.remove(300).map(|g| g.owner), Some(3));
        assert!(!g.allows(305, 1, false));
        assert_eq!(g.remove(300), None);
        assert_eq!(g.as_slice().len(), MAX_GRANTS - 1);
    }

    #[test]
    fn an_empty_stack_region_admits_nothing() {
        let grants = Grants::new();
        let mm = MemoryMap {
            input: Region { start: 0x1000, len: 16, writable: true },
            stack_lo: 0x9000,
            stack_hi: 0x9000,
            shared: &[Region { start: 0x5000, len: 8, writable: false }],
        };
        assert_eq!(mm.classify(0x1008, 8, true, &grants), Some(Access::Private));
        assert_eq!(mm.classify(0x8ff8, 8, false, &grants), None);
        assert_eq!(mm.classify(0x5000, 8, false, &grants), Some(Access::Shared));
        assert_eq!(mm.classify(0x5000, 8, true, &grants), None);
    }
}
