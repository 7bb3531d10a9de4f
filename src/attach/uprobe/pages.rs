//! Pages for trampolines: mapped within a branch's reach of the code that jumps to them, written, then
//! made executable and read-only.

use super::AttachError;

const PAGE: u64 = 4096;

/// A page of memory less than `reach` bytes from `near` (both ways), readable and writable.
pub(crate) fn page_near(near: u64, reach: u64) -> Result<*mut u8, AttachError> {
    let base = near & !(PAGE - 1);
    // Hints below and above the code, nearest first, 64 each way across the reach; the kernel takes a
    // free hint as it is.
    let step = (reach / 64) & !(PAGE - 1);
    for n in 1..64u64 {
        for hint in [base.wrapping_sub(n * step), base.wrapping_add(n * step)] {
            // SAFETY: a new private anonymous mapping; the hint is only a hint (no MAP_FIXED).
            let p = unsafe {
                libc::mmap(
                    hint as usize as *mut libc::c_void,
                    PAGE as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                continue;
            }
            if (p as u64).abs_diff(near) < reach {
                return Ok(p.cast());
            }
            // SAFETY: the mapping just made, not used.
            unsafe { libc::munmap(p, PAGE as usize) };
        }
    }
    Err(AttachError::NoMemoryNear(near))
}

/// Makes the page at `page` (from [`page_near`]) executable and read-only.
pub(crate) fn seal(page: *mut u8) -> Result<(), AttachError> {
    // SAFETY: a page this module mapped; nothing runs it before this returns.
    let r = unsafe { libc::mprotect(page.cast(), PAGE as usize, libc::PROT_READ | libc::PROT_EXEC) };
    if r != 0 {
        return Err(AttachError::Protect(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)));
    }
    Ok(())
}
