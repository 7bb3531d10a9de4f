//! Fixed storage for map values: one allocation of `count` slots of `stride` bytes (8-byte aligned),
//! made at creation and never moved or resized, and the copies in and out of it.

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use core::ptr::NonNull;

use super::MapError;
use crate::memory::access::{self, Access};
use crate::memory::Region;

/// Value slots of one map.
pub(crate) struct Slots {
    ptr: NonNull<u8>,
    layout: Layout,
    stride: usize,
    count: usize,
}

// SAFETY: the slots are plain bytes that the map owns. Programs access them through raw pointers, and
// Rust code only through `memory::access` with `Access::Shared` (atomically); no Rust reference to the
// contents is ever created, so sharing between threads is sound.
unsafe impl Sync for Slots {}
// SAFETY: as above; the storage is owned memory, freed on drop.
unsafe impl Send for Slots {}

impl Slots {
    /// `count` zeroed slots of `size` bytes each (rounded up to 8). Fails if the total is above
    /// [`MAX_MAP_BYTES`](super::MAX_MAP_BYTES), or if the memory cannot be allocated.
    pub(crate) fn new(size: usize, count: usize) -> Result<Slots, MapError> {
        let too_large = MapError::InvalidDef("the map is larger than MAX_MAP_BYTES");
        let stride = size.checked_add(7).ok_or(too_large.clone())? & !7;
        let bytes = stride.checked_mul(count).ok_or(too_large.clone())?;
        if bytes > super::MAX_MAP_BYTES {
            return Err(too_large);
        }
        let layout = Layout::from_size_align(bytes.max(8), 8).map_err(|_| MapError::NoMemory(bytes as u64))?;
        // Zeroed allocation: the pages of a large, sparsely used map are not touched here, and failure
        // is an error rather than an abort.
        // SAFETY: the layout's size is at least 8, never zero.
        let ptr = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).ok_or(MapError::NoMemory(bytes as u64))?;
        Ok(Slots { ptr, layout, stride, count })
    }

    /// Address of slot `i` (`i < count`).
    pub(crate) fn ptr(&self, i: usize) -> *mut u8 {
        debug_assert!(i < self.count);
        // `i * stride` is within the allocation: `i < count`, and `count * stride` was checked at creation.
        self.ptr.as_ptr().wrapping_add(i * self.stride)
    }

    /// The first slot's address and the distance between slots (slot `i` is at `base + i * stride`).
    #[cfg_attr(not(feature = "jit"), allow(dead_code))]
    pub(crate) fn base_and_stride(&self) -> (*mut u8, usize) {
        (self.ptr.as_ptr(), self.stride)
    }

    /// The memory of all slots, as a region programs may read, and write if `writable`.
    pub(crate) fn region(&self, writable: bool) -> Region {
        let start = self.ptr.as_ptr().expose_provenance() as u64;
        Region { start, len: (self.stride * self.count) as u64, writable }
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, and freed only here.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// Copies bytes from map memory at `src` into `out`.
///
/// # Safety
/// `src` must address at least `out.len()` bytes of value storage of a live map, which everything else
/// accesses only atomically (the [`Map`](super::Map) contract).
pub(crate) unsafe fn copy_out(src: *const u8, out: &mut [u8]) {
    // SAFETY: the caller's contract is `copy_out`'s for shared memory; `out` is a separate buffer.
    unsafe { access::copy_out(src, out, Access::Shared) }
}

/// Copies `data` into map memory at `dst`.
///
/// # Safety
/// As for [`copy_out`], for `data.len()` bytes at `dst`.
pub(crate) unsafe fn copy_in(dst: *mut u8, data: &[u8]) {
    // SAFETY: the caller's contract is `copy_in`'s for shared memory; `data` is a separate buffer.
    unsafe { access::copy_in(dst, data, Access::Shared) }
}

/// Zeroes `len` bytes of map memory at `dst`.
///
/// # Safety
/// As for [`copy_out`], for `len` bytes at `dst`.
pub(crate) unsafe fn zero(dst: *mut u8, len: usize) {
    // SAFETY: the caller's contract is `zero`'s for shared memory.
    unsafe { access::zero(dst, len, Access::Shared) }
}
