//! Read sections that cost a fire one fence, and writers that wait for the sections under way: how
//! attach points change what they run while other threads run it.
//!
//! A thread entering its outermost section makes the sequence number of its own slot odd, then fences;
//! leaving, it makes the number even again. A writer publishes its change, fences, and waits until
//! every slot that was odd has moved on: a section that began before the change has then ended, and a
//! section that begins after it sees the change. (The two fences order each pair: either the section
//! reads what the writer published, or the writer sees the slot odd and waits.) Threads beyond the
//! slots share a lock instead.

use core::cell::Cell;
use core::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard};

/// Slots for threads that read at the same time; more threads share [`OVERFLOW`].
const SLOTS: usize = 128;

/// One thread's sequence number, alone in its cache line (the thread writes it at every section).
#[repr(align(128))]
struct Slot {
    /// Whether a live thread holds the slot.
    owned: AtomicBool,
    /// Odd while the thread is inside a section. Only the owner writes it.
    seq: AtomicU64,
}

static SLOT_TABLE: [Slot; SLOTS] = [const { Slot { owned: AtomicBool::new(false), seq: AtomicU64::new(0) } }; SLOTS];

/// The sections of threads that found no free slot: they read-lock it, writers write-lock it.
static OVERFLOW: RwLock<()> = RwLock::new(());

/// No slot (not claimed yet, or none was free).
const NONE: usize = usize::MAX;

/// A thread's slot and how deep in sections it is.
struct Mine {
    slot: Cell<usize>,
    depth: Cell<u32>,
}

impl Drop for Mine {
    fn drop(&mut self) {
        if let Some(slot) = SLOT_TABLE.get(self.slot.get()) {
            slot.owned.store(false, Ordering::Release);
        }
    }
}

std::thread_local! {
    static MINE: Mine = const { Mine { slot: Cell::new(NONE), depth: Cell::new(0) } };
}

/// A free slot, claimed for the calling thread.
fn claim() -> Option<usize> {
    SLOT_TABLE.iter().position(|s| {
        !s.owned.load(Ordering::Relaxed)
            && s.owned.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok()
    })
}

/// A read section, ended when dropped.
pub(crate) enum Section {
    /// Inside another section of the same thread, which covers this one.
    Nested,
    /// The thread's slot.
    Slot(usize),
    /// A read lock of [`OVERFLOW`] (no slot was free, or the thread is exiting).
    Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
}

/// Enters a read section: until it is dropped, [`synchronize`] calls that start after this waits.
#[inline]
pub(crate) fn read() -> Section {
    let entered = MINE.try_with(|mine| {
        let depth = mine.depth.get();
        mine.depth.set(depth + 1);
        if depth > 0 {
            return Some(Section::Nested);
        }
        let mut slot = mine.slot.get();
        if slot == NONE {
            slot = claim()?;
            mine.slot.set(slot);
        }
        let s = &SLOT_TABLE[slot];
        // Only this thread writes its slot: no read-modify-write needed.
        s.seq.store(s.seq.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        Some(Section::Slot(slot))
    });
    match entered {
        Ok(Some(section)) => section,
        // No free slot: undo the depth taken above, then share the lock.
        Ok(None) => {
            let _ = MINE.try_with(|mine| mine.depth.set(mine.depth.get() - 1));
            Section::Shared(OVERFLOW.read().unwrap_or_else(PoisonError::into_inner))
        }
        Err(_) => Section::Shared(OVERFLOW.read().unwrap_or_else(PoisonError::into_inner)),
    }
}

impl Drop for Section {
    #[inline]
    fn drop(&mut self) {
        match *self {
            Section::Nested => {
                let _ = MINE.try_with(|mine| mine.depth.set(mine.depth.get() - 1));
            }
            Section::Slot(slot) => {
                let _ = MINE.try_with(|mine| mine.depth.set(0));
                let s = &SLOT_TABLE[slot];
                // Everything the section read happens before a writer that sees the number move.
                s.seq.store(s.seq.load(Ordering::Relaxed) + 1, Ordering::Release);
            }
            Section::Shared(_) => {}
        }
    }
}

/// Waits until every read section that began before this call has ended. Call it after publishing a
/// change and before freeing what the change replaced.
pub(crate) fn synchronize() {
    fence(Ordering::SeqCst);
    for s in &SLOT_TABLE {
        let seq = s.seq.load(Ordering::Acquire);
        if seq % 2 == 1 {
            let mut spins = 0u32;
            while s.seq.load(Ordering::Acquire) == seq {
                spins += 1;
                if spins < 64 {
                    core::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
        }
    }
    drop(OVERFLOW.write().unwrap_or_else(PoisonError::into_inner));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn a_writer_waits_for_the_section_under_way() {
        let inside = Arc::new(AtomicBool::new(false));
        let leave = Arc::new(AtomicBool::new(false));
        let reader = {
            let (inside, leave) = (inside.clone(), leave.clone());
            std::thread::spawn(move || {
                let section = read();
                let nested = read();
                drop(nested);
                inside.store(true, Ordering::SeqCst);
                while !leave.load(Ordering::SeqCst) {
                    std::thread::yield_now();
                }
                drop(section);
            })
        };
        while !inside.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        let done = Arc::new(AtomicUsize::new(0));
        let writer = {
            let done = done.clone();
            std::thread::spawn(move || {
                synchronize();
                done.store(1, Ordering::SeqCst);
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(done.load(Ordering::SeqCst), 0, "the writer returned while a section was under way");
        leave.store(true, Ordering::SeqCst);
        writer.join().expect("writer");
        assert_eq!(done.load(Ordering::SeqCst), 1);
        reader.join().expect("reader");
    }

    #[test]
    fn slots_are_given_back_when_threads_end() {
        // More threads than slots, one after the other: each finds a slot free again.
        for _ in 0..SLOTS * 2 {
            std::thread::spawn(|| {
                let s = read();
                assert!(matches!(s, Section::Slot(_)), "a slot was free");
            })
            .join()
            .expect("thread");
        }
    }
}
