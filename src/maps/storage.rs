//! Fixed storage for map values: one allocation of `count` slots of `stride` bytes (8-byte aligned),
//! made at creation and never moved or resized.

use alloc::boxed::Box;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU8, Ordering};

use crate::vm::Region;

/// Value slots of one map.
pub(crate) struct Slots {
    words: Box<[UnsafeCell<u64>]>,
    stride: usize,
    count: usize,
}

// SAFETY: the slots are plain bytes. Programs access them through raw pointers (with atomics where
// they use BPF atomics), and the host only through `copy_in`/`copy_out`, which use atomic byte
// accesses; no Rust reference to the contents is ever created.
unsafe impl Sync for Slots {}
// SAFETY: as above; the storage is owned memory.
unsafe impl Send for Slots {}

impl Slots {
    /// `count` zeroed slots of `size` bytes each (rounded up to 8). Fails if the total is above
    /// [`MAX_MAP_BYTES`](super::MAX_MAP_BYTES).
    pub(crate) fn new(size: usize, count: usize) -> Option<Slots> {
        let stride = size.checked_add(7)? & !7;
        let bytes = stride.checked_mul(count)?;
        if bytes > super::MAX_MAP_BYTES {
            return None;
        }
        // Zeroed allocation: the pages of a large, sparsely used map are not touched here.
        let zeroed: Box<[u64]> = alloc::vec![0u64; (bytes / 8).max(1)].into_boxed_slice();
        // SAFETY: `UnsafeCell<u64>` is `repr(transparent)` over `u64`, so the slice has the same layout
        // and the same (initialised) contents; ownership moves from one box to the other.
        let words = unsafe { Box::from_raw(Box::into_raw(zeroed) as *mut [UnsafeCell<u64>]) };
        Some(Slots { words, stride, count })
    }

    /// Address of slot `i` (`i < count`).
    pub(crate) fn ptr(&self, i: usize) -> *mut u8 {
        debug_assert!(i < self.count);
        // `i * stride` is within the allocation: checked at creation.
        self.words.as_ptr().cast::<u8>().cast_mut().wrapping_add(i * self.stride)
    }

    /// The memory of all slots, as a region programs may read and write.
    pub(crate) fn region(&self) -> Region {
        let start = self.words.as_ptr().cast::<u8>().expose_provenance() as u64;
        Region { start, len: (self.stride * self.count) as u64, writable: true }
    }
}

/// Copies bytes from map memory at `src` into `out`.
pub(crate) fn copy_out(src: *const u8, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        // SAFETY: callers pass the address of a value slot of at least `out.len()` bytes, in storage
        // that lives as long as the map; byte atomics make concurrent program writes data-race free.
        *b = unsafe { AtomicU8::from_ptr(src.add(i).cast_mut()) }.load(Ordering::Relaxed);
    }
}

/// Copies `data` into map memory at `dst`.
pub(crate) fn copy_in(dst: *mut u8, data: &[u8]) {
    for (i, &b) in data.iter().enumerate() {
        // SAFETY: as in `copy_out`, for a slot of at least `data.len()` bytes.
        unsafe { AtomicU8::from_ptr(dst.add(i)) }.store(b, Ordering::Relaxed);
    }
}

/// Zeroes `len` bytes of map memory at `dst`.
pub(crate) fn zero(dst: *mut u8, len: usize) {
    for i in 0..len {
        // SAFETY: as in `copy_in`.
        unsafe { AtomicU8::from_ptr(dst.add(i)) }.store(0, Ordering::Relaxed);
    }
}
