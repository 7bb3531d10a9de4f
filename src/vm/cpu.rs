//! CPU slots: an execution that uses per-CPU maps (or asks for its processor id) holds one of
//! [`MAX_CPUS`] slots for its whole run, so no two running executions share a per-CPU value.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::maps::MAX_CPUS;

static IN_USE: AtomicU32 = AtomicU32::new(0);

/// A held CPU slot, released on drop.
pub(crate) struct CpuSlot(usize);

impl CpuSlot {
    /// Takes a free slot, waiting while all are taken.
    pub(crate) fn acquire() -> CpuSlot {
        let all = if MAX_CPUS >= 32 { u32::MAX } else { (1u32 << MAX_CPUS) - 1 };
        loop {
            let cur = IN_USE.load(Ordering::Relaxed);
            let free = !cur & all;
            if free == 0 {
                core::hint::spin_loop();
                continue;
            }
            let bit = free.trailing_zeros();
            if IN_USE.compare_exchange_weak(cur, cur | (1 << bit), Ordering::Acquire, Ordering::Relaxed).is_ok() {
                return CpuSlot(bit as usize);
            }
        }
    }

    /// The slot number.
    pub(crate) fn index(&self) -> usize {
        self.0
    }
}

impl Drop for CpuSlot {
    fn drop(&mut self) {
        IN_USE.fetch_and(!(1 << self.0), Ordering::Release);
    }
}
