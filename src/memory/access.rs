//! Loads, stores, atomics and copies on program memory: the only Rust code that reads or writes memory a
//! program can reach.
//!
//! Private memory (an execution's input and stack) is accessed with plain unaligned loads and stores.
//! Shared memory (map values, ring-buffer records, granted host memory) may be accessed at the same time
//! by other executions and by host threads, so Rust touches it only atomically: a relaxed atomic load or
//! store of the access's own size when the address is aligned to it (a plain move on x86_64 and
//! aarch64, so it costs nothing there), byte by byte otherwise; copies go word by word. BPF atomic
//! instructions are sequentially consistent host atomics.
//!
//! Compiled code emits plain machine loads and stores for both kinds. On the targets the JIT supports,
//! an aligned access of up to 8 bytes is single-copy atomic, which is exactly what a relaxed atomic
//! access compiles to. Accesses of different sizes to the same bytes (a program storing 8 bytes where
//! the host reads them byte by byte) are well defined on that hardware, though outside what Rust's
//! memory model describes.

use core::ptr;
use core::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};

/// Whether memory is private to one execution or shared with other executions and the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The execution's input buffer or stack: nothing else touches it while the execution runs.
    Private,
    /// Map values, ring-buffer records and granted memory: accessed atomically.
    Shared,
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for u16 {}
    impl Sealed for u32 {}
    impl Sealed for u64 {}
}

/// The integers a program loads and stores: 1, 2, 4 or 8 bytes.
pub trait Word: Copy + sealed::Sealed {
    /// Size in bytes.
    const SIZE: usize;

    /// A relaxed atomic load.
    ///
    /// # Safety
    /// `p` is aligned to `SIZE` and valid for reads of `SIZE` bytes, which are accessed only atomically
    /// during the call.
    unsafe fn load_atomic(p: *const u8) -> Self;

    /// A relaxed atomic store.
    ///
    /// # Safety
    /// As for [`load_atomic`](Word::load_atomic), for writes.
    unsafe fn store_atomic(p: *mut u8, v: Self);

    /// The value of the first `SIZE` bytes, in native byte order.
    fn from_ne(bytes: [u8; 8]) -> Self;

    /// The value's bytes in native byte order, in the first `SIZE` bytes.
    fn to_ne(self) -> [u8; 8];
}

macro_rules! word {
    ($t:ty, $atomic:ty) => {
        impl Word for $t {
            const SIZE: usize = core::mem::size_of::<$t>();

            #[inline(always)]
            unsafe fn load_atomic(p: *const u8) -> $t {
                // SAFETY: the caller guarantees alignment, validity and atomic-only access.
                unsafe { <$atomic>::from_ptr(p.cast::<$t>().cast_mut()) }.load(Ordering::Relaxed)
            }

            #[inline(always)]
            unsafe fn store_atomic(p: *mut u8, v: $t) {
                // SAFETY: the caller guarantees alignment, validity and atomic-only access.
                unsafe { <$atomic>::from_ptr(p.cast::<$t>()) }.store(v, Ordering::Relaxed)
            }

            #[inline(always)]
            fn from_ne(bytes: [u8; 8]) -> $t {
                let mut b = [0u8; core::mem::size_of::<$t>()];
                b.copy_from_slice(&bytes[..core::mem::size_of::<$t>()]);
                <$t>::from_ne_bytes(b)
            }

            #[inline(always)]
            fn to_ne(self) -> [u8; 8] {
                let mut out = [0u8; 8];
                out[..core::mem::size_of::<$t>()].copy_from_slice(&self.to_ne_bytes());
                out
            }
        }
    };
}

word!(u8, AtomicU8);
word!(u16, AtomicU16);
word!(u32, AtomicU32);
word!(u64, AtomicU64);

/// Reads a `T` at `addr`.
///
/// # Safety
/// `T::SIZE` bytes at `addr` must be valid for reads during the call; if `access` is `Private`, nothing
/// else may write them during the call, and if it is `Shared`, everything else must access them
/// atomically.
#[inline(always)]
pub unsafe fn load<T: Word>(addr: u64, access: Access) -> T {
    let p = ptr::with_exposed_provenance::<u8>(addr as usize);
    match access {
        // SAFETY: valid and not written concurrently (the caller's contract); no alignment needed.
        Access::Private => unsafe { p.cast::<T>().read_unaligned() },
        Access::Shared if addr % T::SIZE as u64 == 0 => {
            // SAFETY: aligned (just tested), valid, and accessed atomically (the caller's contract).
            unsafe { T::load_atomic(p) }
        }
        Access::Shared => {
            let mut b = [0u8; 8];
            for (i, byte) in b.iter_mut().take(T::SIZE).enumerate() {
                // SAFETY: byte `i < SIZE` of the valid range; bytes are always aligned.
                *byte = unsafe { u8::load_atomic(p.add(i)) };
            }
            T::from_ne(b)
        }
    }
}

/// Writes a `T` at `addr`.
///
/// # Safety
/// `T::SIZE` bytes at `addr` must be valid for writes during the call; if `access` is `Private`,
/// nothing else may access them during the call, and if it is `Shared`, everything else must access
/// them atomically.
#[inline(always)]
pub unsafe fn store<T: Word>(addr: u64, value: T, access: Access) {
    let p = ptr::with_exposed_provenance_mut::<u8>(addr as usize);
    match access {
        // SAFETY: valid and not accessed concurrently (the caller's contract); no alignment needed.
        Access::Private => unsafe { p.cast::<T>().write_unaligned(value) },
        Access::Shared if addr % T::SIZE as u64 == 0 => {
            // SAFETY: aligned (just tested), valid, and accessed atomically (the caller's contract).
            unsafe { T::store_atomic(p, value) }
        }
        Access::Shared => {
            for (i, &byte) in value.to_ne().iter().take(T::SIZE).enumerate() {
                // SAFETY: byte `i < SIZE` of the valid range; bytes are always aligned.
                unsafe { u8::store_atomic(p.add(i), byte) };
            }
        }
    }
}

/// The 8-byte atomic at `addr`.
///
/// # Safety
/// `addr` must be 8-byte aligned, the 8 bytes valid for reads and writes for `'a`, and accessed only
/// atomically by everything else during `'a`.
#[inline(always)]
pub unsafe fn atomic_u64<'a>(addr: u64) -> &'a AtomicU64 {
    // SAFETY: the caller's contract is `AtomicU64::from_ptr`'s.
    unsafe { AtomicU64::from_ptr(ptr::with_exposed_provenance_mut::<u64>(addr as usize)) }
}

/// The 4-byte atomic at `addr`.
///
/// # Safety
/// As for [`atomic_u64`], with 4 bytes and 4-byte alignment.
#[inline(always)]
pub unsafe fn atomic_u32<'a>(addr: u64) -> &'a AtomicU32 {
    // SAFETY: the caller's contract is `AtomicU32::from_ptr`'s.
    unsafe { AtomicU32::from_ptr(ptr::with_exposed_provenance_mut::<u32>(addr as usize)) }
}

/// Copies `out.len()` bytes at `src` into `out`.
///
/// # Safety
/// `out.len()` bytes at `src` must be valid for reads during the call, with the access rules of
/// [`load`]; they must not overlap `out`.
pub unsafe fn copy_out(src: *const u8, out: &mut [u8], access: Access) {
    match access {
        // Map keys and values are mostly 4 or 8 bytes: one load, not a call of `memcpy`.
        // SAFETY (all three): valid, not written concurrently, and disjoint from `out` (the caller's
        // contract); `out` has exactly the bytes read.
        Access::Private if out.len() == 4 => unsafe {
            out.copy_from_slice(&src.cast::<[u8; 4]>().read_unaligned());
        },
        Access::Private if out.len() == 8 => unsafe {
            out.copy_from_slice(&src.cast::<[u8; 8]>().read_unaligned());
        },
        Access::Private => unsafe { ptr::copy_nonoverlapping(src, out.as_mut_ptr(), out.len()) },
        Access::Shared => {
            let mut i = 0;
            while i < out.len() {
                // SAFETY: `src + i` lies in the valid range; words are read only where aligned and whole.
                let at = unsafe { src.add(i) };
                if at.addr() % 8 == 0 && out.len() - i >= 8 {
                    // SAFETY: aligned, inside the range, accessed atomically by everything else.
                    let w = unsafe { u64::load_atomic(at) };
                    out[i..i + 8].copy_from_slice(&w.to_ne_bytes());
                    i += 8;
                } else if at.addr() % 4 == 0 && out.len() - i >= 4 {
                    // SAFETY: as for 8 bytes (map keys are often 4 bytes: one load, not four).
                    let w = unsafe { u32::load_atomic(at) };
                    out[i..i + 4].copy_from_slice(&w.to_ne_bytes());
                    i += 4;
                } else {
                    // SAFETY: a byte of the range.
                    out[i] = unsafe { u8::load_atomic(at) };
                    i += 1;
                }
            }
        }
    }
}

/// Copies `data` to `dst`.
///
/// # Safety
/// `data.len()` bytes at `dst` must be valid for writes during the call, with the access rules of
/// [`store`]; they must not overlap `data`.
pub unsafe fn copy_in(dst: *mut u8, data: &[u8], access: Access) {
    match access {
        // SAFETY: valid, not accessed concurrently, and disjoint from `data` (the caller's contract).
        Access::Private => unsafe { ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) },
        Access::Shared => {
            let mut i = 0;
            while i < data.len() {
                // SAFETY: `dst + i` lies in the valid range.
                let at = unsafe { dst.add(i) };
                if at.addr() % 8 == 0 && data.len() - i >= 8 {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(&data[i..i + 8]);
                    // SAFETY: aligned, inside the range, accessed atomically by everything else.
                    unsafe { u64::store_atomic(at, u64::from_ne_bytes(w)) };
                    i += 8;
                } else {
                    // SAFETY: a byte of the range.
                    unsafe { u8::store_atomic(at, data[i]) };
                    i += 1;
                }
            }
        }
    }
}

/// Sets `len` bytes at `dst` to zero.
///
/// # Safety
/// As for [`copy_in`] with `len` bytes.
pub unsafe fn zero(dst: *mut u8, len: usize, access: Access) {
    match access {
        // SAFETY: valid and not accessed concurrently (the caller's contract).
        Access::Private => unsafe { ptr::write_bytes(dst, 0, len) },
        Access::Shared => {
            let mut i = 0;
            while i < len {
                // SAFETY: `dst + i` lies in the valid range.
                let at = unsafe { dst.add(i) };
                if at.addr() % 8 == 0 && len - i >= 8 {
                    // SAFETY: aligned, inside the range, accessed atomically by everything else.
                    unsafe { u64::store_atomic(at, 0) };
                    i += 8;
                } else {
                    // SAFETY: a byte of the range.
                    unsafe { u8::store_atomic(at, 0) };
                    i += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn shared_and_private_accesses_agree() {
        let mut buf = [0u64; 4];
        let base = buf.as_mut_ptr().cast::<u8>().expose_provenance() as u64;
        for access in [Access::Private, Access::Shared] {
            for at in 0..24u64 {
                // SAFETY: `at + 8 <= 32`, inside `buf`, which only this thread uses.
                unsafe {
                    store::<u64>(base + at, 0x0102_0304_0506_0708 ^ at, access);
                    assert_eq!(load::<u64>(base + at, access), 0x0102_0304_0506_0708 ^ at);
                    store::<u16>(base + at, 0xbeef, access);
                    assert_eq!(load::<u16>(base + at, access), 0xbeef);
                }
            }
            let data: Vec<u8> = (0..29u8).collect();
            let mut out = [0u8; 29];
            // SAFETY: 3 + 29 <= 32 bytes, inside `buf`; `data` and `out` are separate buffers.
            unsafe {
                copy_in(buf.as_mut_ptr().cast::<u8>().add(3), &data, access);
                copy_out(buf.as_mut_ptr().cast::<u8>().add(3), &mut out, access);
                assert_eq!(&out[..], &data[..]);
                zero(buf.as_mut_ptr().cast::<u8>().add(1), 30, access);
                copy_out(buf.as_mut_ptr().cast::<u8>().add(1), &mut out, access);
            }
            assert!(out.iter().all(|&b| b == 0));
        }
    }
}
