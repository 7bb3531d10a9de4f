//! The ring buffer (`BPF_MAP_TYPE_RINGBUF`): programs reserve, fill and submit (or discard) records;
//! the host consumes them in order.
//!
//! Each record starts with an 8-byte header: its length, a busy bit while reserved, and a discard
//! bit. Records are 8-byte aligned and contiguous; one that would cross the end of the buffer is
//! preceded by a discarded padding record that fills the rest, so every record a program receives is
//! one contiguous range.
//!
//! A program reaches only the records it has reserved and not yet submitted or discarded: the buffer
//! reports no region of its own, and the engines grant each reserved record to the execution that
//! reserved it (see [`Grants`](crate::memory::Grants)), so headers are never program memory. The
//! consumer still checks every header it reads against the positions it knows, and stops for good
//! (see [`RingBufMap::is_corrupted`]) rather than follow one that does not fit.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::any::Any;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use super::storage::{copy_in, copy_out, Slots};
use super::{Map, MapDef, MapError};

const BUSY: u32 = 1 << 31;
const DISCARD: u32 = 1 << 30;
const LEN_MASK: u32 = DISCARD - 1;
const HEADER: u64 = 8;
/// Offsets in the control words: the producers' lock (4 bytes), the producer position and the consumer
/// position (8 bytes each). Together [`CONTROL_BYTES`].
const LOCK: usize = 0;
const PROD: usize = 8;
const CONS: usize = 16;
/// Bytes of the control words.
pub(crate) const CONTROL_BYTES: usize = 24;
// In a buffer of its own, the data starts 64 bytes in.
const _: () = assert!(CONTROL_BYTES <= 64);
/// Most spins a producer waits for the lock before it reports the buffer full.
const LOCK_SPINS: u32 = 1 << 20;
/// Spins between two checks of whether the lock's holder still exists (shared memory: a process may
/// have died holding it).
const CHECK_HOLDER_SPINS: u32 = 1 << 12;

/// A ring buffer of `max_entries` bytes (a power of two, at least 16).
///
/// Its state is a few control words (the producers' lock and the two positions) and the data, both in
/// memory the buffer does not own exclusively when it lives in shared memory
/// ([`SharedMap::create_ring_buffer`](super::SharedMap::create_ring_buffer)): every position read from
/// there is checked before it is used, and a buffer whose positions or headers do not fit stops (see
/// [`is_corrupted`](RingBufMap::is_corrupted)) instead of following them.
pub struct RingBufMap {
    def: MapDef,
    size: u64,
    /// The control words (8-byte aligned, [`CONTROL_BYTES`] long).
    control: *mut u8,
    /// The data (`size` bytes, 8-byte aligned).
    data: *mut u8,
    /// What keeps `control` and `data` alive.
    _memory: Box<dyn Send + Sync>,
    /// A position or header that does not fit was found: nothing more is consumed or reserved.
    corrupted: AtomicBool,
    /// The value this handle stores in the lock word while it holds it (not 0).
    lock_id: u32,
    /// Whether the holder a lock word names is gone (then its lock is taken over), if holders can die.
    holder_gone: Option<fn(u32) -> bool>,
}

// SAFETY: the pointers address memory `_memory` keeps alive, accessed only atomically (control words,
// headers) or through `storage`'s shared-memory copies (data), and by programs only in records granted
// to them.
unsafe impl Send for RingBufMap {}
// SAFETY: as above.
unsafe impl Sync for RingBufMap {}

fn round8(n: u64) -> u64 {
    (n + 7) & !7
}

/// Releases the producers' lock when dropped.
struct Locked<'a>(&'a AtomicU32);

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Release);
    }
}

impl RingBufMap {
    /// Creates an empty ring buffer.
    pub fn new(def: MapDef) -> Result<RingBufMap, MapError> {
        let size = Self::check_def(&def)?;
        let memory = Slots::new(64 + size as usize, 1)?;
        let control = memory.ptr(0);
        let data = control.wrapping_add(64);
        // SAFETY: one zeroed allocation of 64 + size bytes, 8-aligned: the control words at its start,
        // the data 64 bytes in; `memory` keeps it alive and is moved into the buffer.
        Ok(unsafe { RingBufMap::in_memory(def, control, data, Box::new(memory), 1, None) })
    }

    /// The buffer's size in bytes, if `def` describes a ring buffer.
    pub(crate) fn check_def(def: &MapDef) -> Result<u64, MapError> {
        let size = def.max_entries as u64;
        if !size.is_power_of_two() || size < 16 {
            return Err(MapError::InvalidDef("ring buffer size must be a power of two of at least 16 bytes"));
        }
        if def.key_size != 0 || def.value_size != 0 {
            return Err(MapError::InvalidDef("ring buffers have no keys or values"));
        }
        if size as usize > super::MAX_MAP_BYTES {
            return Err(MapError::InvalidDef("the map is larger than MAX_MAP_BYTES"));
        }
        Ok(size)
    }

    /// A ring buffer of `def` (checked by [`check_def`](RingBufMap::check_def)) whose control words
    /// are at `control` and whose data at `data`, kept alive by `memory`. Producers of this handle
    /// mark the lock word with `lock_id` (not 0) while they hold it; a producer that has waited for a
    /// while asks `holder_gone` whether the lock word's holder is gone, and takes the lock over if so.
    ///
    /// # Safety
    /// `control` must address [`CONTROL_BYTES`] and `data` `def.max_entries` bytes, both 8-byte
    /// aligned, that live as long as `memory` and that this process accesses only atomically (other
    /// processes may write anything there: it is checked before use).
    pub(crate) unsafe fn in_memory(
        def: MapDef,
        control: *mut u8,
        data: *mut u8,
        memory: Box<dyn Send + Sync>,
        lock_id: u32,
        holder_gone: Option<fn(u32) -> bool>,
    ) -> RingBufMap {
        RingBufMap {
            def,
            size: def.max_entries as u64,
            control,
            data,
            _memory: memory,
            corrupted: AtomicBool::new(false),
            lock_id: lock_id.max(1),
            holder_gone,
        }
    }

    fn word64(&self, at: usize) -> &AtomicU64 {
        // SAFETY: `at` is PROD or CONS, 8-aligned inside the control words (`in_memory`'s contract).
        unsafe { AtomicU64::from_ptr(self.control.add(at).cast()) }
    }

    /// Takes the producers' lock (over from a holder that is gone, too), or gives up after
    /// [`LOCK_SPINS`].
    fn lock(&self) -> Option<Locked<'_>> {
        // SAFETY: the lock word is the control words' first 4 bytes, aligned (`in_memory`'s contract).
        let word = unsafe { AtomicU32::from_ptr(self.control.add(LOCK).cast()) };
        let mut spins = 0u32;
        while let Err(holder) = word.compare_exchange_weak(0, self.lock_id, Ordering::Acquire, Ordering::Relaxed) {
            spins += 1;
            if spins > LOCK_SPINS {
                return None;
            }
            // A producer that died left the positions consistent (each is published by one store), so
            // its lock can be taken over as it is.
            if holder != 0 && spins % CHECK_HOLDER_SPINS == 0 && self.holder_gone.is_some_and(|gone| gone(holder)) {
                if word.compare_exchange(holder, self.lock_id, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                    break;
                }
                continue;
            }
            #[cfg(feature = "std")]
            if spins % 64 == 0 {
                std::thread::yield_now();
                continue;
            }
            core::hint::spin_loop();
        }
        Some(Locked(word))
    }

    /// The consumer and producer positions, if they fit together (else the buffer is marked corrupted).
    fn positions(&self) -> Option<(u64, u64)> {
        if self.corrupted.load(Ordering::Acquire) {
            return None;
        }
        let cons = self.word64(CONS).load(Ordering::Acquire);
        let prod = self.word64(PROD).load(Ordering::Acquire);
        if cons <= prod && prod - cons <= self.size && cons % 8 == 0 && prod % 8 == 0 {
            Some((cons, prod))
        } else {
            self.corrupted.store(true, Ordering::Release);
            None
        }
    }

    /// The header at position `pos`.
    fn header(&self, pos: u64) -> &AtomicU32 {
        let p = self.data.wrapping_add((pos % self.size) as usize & !7);
        // SAFETY: `pos % size` rounded down to 8 is 8-aligned and at least 8 bytes before the end of
        // the buffer (its size is a multiple of 8); the buffer lives as long as `self`, and headers are
        // only accessed atomically (and never granted to programs).
        unsafe { AtomicU32::from_ptr(p.cast::<u32>()) }
    }

    /// Reserves a record of `len` bytes (possibly 0) and returns the address of its data, or `None` if
    /// the buffer has no room (records take at most half the buffer, their header included, so that
    /// the padding that keeps them contiguous always fits). The record must be passed to
    /// [`commit`](RingBufMap::commit) once.
    pub(crate) fn reserve(&self, len: u64) -> Option<u64> {
        if len > (LEN_MASK as u64) || round8(len) + HEADER > self.size / 2 {
            return None;
        }
        let total = round8(len) + HEADER;
        let _held = self.lock()?;
        let (cons, mut prod) = self.positions()?;
        let offset = prod % self.size;
        let pad = if offset + total > self.size { self.size - offset } else { 0 };
        if (prod - cons) + pad + total > self.size {
            return None;
        }
        if pad > 0 {
            self.header(prod).store(((pad - HEADER) as u32) | DISCARD, Ordering::Release);
            prod += pad;
        }
        let at = prod;
        self.header(at).store(len as u32 | BUSY, Ordering::Release);
        self.word64(PROD).store(prod + total, Ordering::Release);
        Some(self.data.expose_provenance() as u64 + (at % self.size) + HEADER)
    }

    /// The header of the record whose data starts at `addr`, if `addr` is one of this buffer.
    fn header_of(&self, addr: u64) -> Option<&AtomicU32> {
        let base = self.data.expose_provenance() as u64;
        let off = addr.checked_sub(base)?.checked_sub(HEADER)?;
        (off < self.size && off % 8 == 0).then(|| self.header(off))
    }

    /// Publishes (or, if `discard`, drops) a reserved record given by its data address. Returns
    /// `false` if the address is not a reserved record of this buffer.
    pub(crate) fn commit(&self, addr: u64, discard: bool) -> bool {
        let Some(h) = self.header_of(addr) else { return false };
        let v = h.load(Ordering::Acquire);
        if v & BUSY == 0 {
            return false;
        }
        let new = (v & LEN_MASK) | if discard { DISCARD } else { 0 };
        h.store(new, Ordering::Release);
        true
    }

    /// Copies `data` to `offset` bytes into the record at `record`, which the caller reserved with at
    /// least `offset + data.len()` bytes and has not committed. Returns `false` (copying nothing) if
    /// the range does not lie inside this buffer's data.
    pub(crate) fn fill(&self, record: u64, offset: u64, data: &[u8]) -> bool {
        let base = self.data.expose_provenance() as u64;
        let start = record.checked_sub(base).and_then(|o| o.checked_add(offset));
        let end = start.and_then(|s| s.checked_add(data.len() as u64));
        let (Some(start), Some(end)) = (start, end) else { return false };
        if end > self.size {
            return false;
        }
        // SAFETY: `start..end` lies inside the buffer's data (checked above), which lives as long as
        // `self`; the caller holds the record, so no other producer writes there.
        unsafe { copy_in(self.data.wrapping_add(start as usize), data) };
        true
    }

    /// Copies `data` into a new record and submits it. Returns `false` if there is no room.
    pub fn output(&self, data: &[u8]) -> bool {
        let Some(at) = self.reserve(data.len() as u64) else { return false };
        let filled = self.fill(at, 0, data);
        self.commit(at, !filled) && filled
    }

    /// `bpf_ringbuf_query`: 0 = bytes not yet consumed, 1 = size, 2 = consumer position, 3 = producer
    /// position.
    pub fn query(&self, flags: u64) -> u64 {
        let prod = self.word64(PROD).load(Ordering::Acquire);
        let cons = self.word64(CONS).load(Ordering::Acquire);
        match flags {
            0 => prod.saturating_sub(cons),
            1 => self.size,
            2 => cons,
            3 => prod,
            _ => 0,
        }
    }

    /// Consumes submitted records in order, passing each one's bytes to `f`; stops at the first
    /// record still reserved. Returns the number of records passed to `f`.
    ///
    /// A position or header that does not fit the buffer (a length past the producer position or the
    /// end of the buffer) marks the buffer corrupted: it is not followed, and nothing more is consumed.
    /// One consumer at a time: records are consumed once, by whoever reads them first. A record whose
    /// copy cannot be allocated stops the consumer there (it stays, for a later call).
    pub fn consume(&self, mut f: impl FnMut(&[u8])) -> usize {
        let mut count = 0;
        let mut buf = Vec::new();
        loop {
            let Some((cons, prod)) = self.positions() else { return count };
            if cons == prod {
                return count;
            }
            let h = self.header(cons).load(Ordering::Acquire);
            if h & BUSY != 0 {
                return count;
            }
            let len = (h & LEN_MASK) as u64;
            let total = round8(len) + HEADER;
            let fits = total <= prod - cons && cons % self.size + total <= self.size;
            if !fits {
                self.corrupted.store(true, Ordering::Release);
                return count;
            }
            if h & DISCARD == 0 {
                buf.clear();
                // The length is the buffer's memory to say (another process's, when shared): a record
                // that cannot be allocated is left unconsumed rather than abort the consumer.
                if buf.try_reserve_exact(len as usize).is_err() {
                    return count;
                }
                buf.resize(len as usize, 0);
                let start = self.data.wrapping_add((cons % self.size + HEADER) as usize);
                // SAFETY: `start .. start + len` lies inside the buffer (`fits`), in a record that is
                // committed, so no producer writes it until the consumer position passes it.
                unsafe { copy_out(start, &mut buf) };
                f(&buf);
                count += 1;
            }
            self.word64(CONS).store(cons + total, Ordering::Release);
        }
    }

    /// Consumes all submitted records into a vector.
    pub fn drain(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        self.consume(|r| out.push(r.to_vec()));
        out
    }

    /// Whether a position or header that does not fit was found (only possible if something outside
    /// the runtime wrote into the buffer: code the host vouched for in unchecked mode, or another
    /// process sharing it): the buffer then stops producing and consuming.
    pub fn is_corrupted(&self) -> bool {
        self.corrupted.load(Ordering::Acquire)
    }

    /// The data's address and size (tests check records lie inside it).
    #[cfg(test)]
    fn data_range(&self) -> (u64, u64) {
        (self.data.expose_provenance() as u64, self.size)
    }
}

// SAFETY: `lookup` never returns a pointer and `regions` is empty: programs reach only records granted
// to them one by one while reserved.
unsafe impl Map for RingBufMap {
    fn def(&self) -> MapDef {
        self.def
    }

    fn lookup(&self, _key: &[u8], _cpu: usize) -> Option<*mut u8> {
        None
    }

    fn update(&self, _key: &[u8], _value: &[u8], _flags: u64, _cpu: usize) -> Result<(), MapError> {
        Err(MapError::Unsupported)
    }

    fn delete(&self, _key: &[u8]) -> Result<(), MapError> {
        Err(MapError::Unsupported)
    }

    fn next_key(&self, _key: Option<&[u8]>, _out: &mut [u8]) -> Result<(), MapError> {
        Err(MapError::NotFound)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::MapType;
    use alloc::vec;

    fn ring(size: u32) -> RingBufMap {
        RingBufMap::new(MapDef { map_type: MapType::RingBuf, key_size: 0, value_size: 0, max_entries: size, flags: 0 })
            .expect("valid")
    }

    /// A header overwritten with a length past the buffer stops the consumer: nothing is read outside
    /// the buffer, the consumer does not loop, and the queries do not underflow.
    #[test]
    fn a_forged_header_is_not_followed() {
        let rb = ring(4096);
        let at = rb.reserve(16).expect("room");
        // Forge the header the way code with raw access could: 12 KiB, not busy.
        rb.header_of(at).expect("a record").store(12 * 1024, Ordering::Release);
        let mut seen = 0;
        assert_eq!(rb.consume(|_| seen += 1), 0);
        assert_eq!(seen, 0);
        assert!(rb.is_corrupted());
        assert_eq!(rb.query(0), 24);
        assert!(rb.reserve(8).is_none(), "a corrupted buffer reserves nothing more");
        assert_eq!(rb.consume(|_| seen += 1), 0);
    }

    /// Positions overwritten the way another process sharing the buffer could (consumer past the
    /// producer, more produced than fits, unaligned): nothing is reserved or consumed, nothing is
    /// read or written outside the buffer, and the buffer reports itself corrupted.
    #[test]
    fn forged_positions_are_not_followed() {
        let forgeries: [(u64, u64); 5] = [(64, 8), (0, 4096 + 8), (4, 16), (0, 12), (u64::MAX - 7, 0)];
        for (cons, prod) in forgeries {
            let rb = ring(4096);
            assert!(rb.output(b"before"));
            rb.word64(CONS).store(cons, Ordering::Release);
            rb.word64(PROD).store(prod, Ordering::Release);
            assert!(rb.reserve(8).is_none(), "({cons}, {prod}): reserved");
            assert!(rb.is_corrupted(), "({cons}, {prod})");
            assert_eq!(rb.consume(|_| panic!("({cons}, {prod}): consumed")), 0);
            assert_eq!(rb.query(1), 4096);
            let _ = rb.query(0);
        }
        // A consumer that sees consistent positions is unaffected.
        let rb = ring(4096);
        assert!(rb.output(b"kept"));
        assert_eq!(rb.drain(), vec![b"kept".to_vec()]);
        assert!(!rb.is_corrupted());
    }

    /// A lock word left taken (a process that died while reserving) makes reservations fail after a
    /// bounded wait, instead of hanging the program.
    #[test]
    #[cfg_attr(miri, ignore = "a million spins")]
    fn a_lock_left_taken_fails_reservations() {
        let rb = ring(256);
        // SAFETY: the lock word of this buffer's control words.
        unsafe { AtomicU32::from_ptr(rb.control.cast::<u32>()) }.store(1, Ordering::Release);
        assert!(rb.reserve(8).is_none());
        assert!(!rb.output(b"x"));
        // SAFETY: as above.
        unsafe { AtomicU32::from_ptr(rb.control.cast::<u32>()) }.store(0, Ordering::Release);
        assert!(rb.output(b"x"));
        assert_eq!(rb.drain().len(), 1);
    }

    #[test]
    fn records_wrap_and_stay_in_order() {
        let rb = ring(64);
        let mut n = 0u8;
        for round in 0..50u8 {
            let len = 1 + (round as usize * 7) % 20;
            assert!(rb.output(&vec![round; len]), "room in round {round}");
            let got = rb.drain();
            assert_eq!(got, vec![vec![round; len]]);
            n += 1;
        }
        assert_eq!(n, 50);
        assert_eq!(rb.query(0), 0);
        assert!(!rb.is_corrupted());
    }

    /// Bytes of record number `n` with `len` bytes, distinct from its neighbours'.
    fn pattern(n: u64, len: usize) -> Vec<u8> {
        (0..len).map(|i| (n as u8).wrapping_mul(31).wrapping_add(i as u8)).collect()
    }

    #[test]
    fn ringbuf_reserve_commit_and_discard() {
        let r = &ring(1024);
        let (start, size) = r.data_range();
        let a = r.reserve(5).unwrap();
        let b = r.reserve(16).unwrap();
        let c = r.reserve(3).unwrap();
        for (addr, len) in [(a, 5), (b, 16), (c, 3)] {
            assert_eq!(addr % 8, 0, "record data is 8-byte aligned");
            assert!(addr >= start + 8 && addr + len <= start + size);
            assert!(r.header_of(addr).is_some());
        }
        assert!(a < b && b < c, "records are laid out in order");
        assert!(r.fill(a, 0, b"hello"));
        assert!(r.fill(b, 0, &[0xbb; 16]));
        assert!(r.fill(c, 0, b"xyz"));
        assert!(r.commit(c, false));
        assert!(r.commit(b, true));
        assert!(r.commit(a, false));
        assert_eq!(r.drain(), vec![b"hello".to_vec(), b"xyz".to_vec()], "the discarded record is skipped");
        // A committed record cannot be committed again.
        assert!(!r.commit(a, false));
        assert!(!r.commit(b, true));
    }

    #[test]
    fn ringbuf_consumer_stops_at_a_reserved_record() {
        let r = &ring(1024);
        let a = r.reserve(8).unwrap();
        assert!(r.output(b"second"));
        assert!(r.drain().is_empty(), "the first record is still being written");
        assert_eq!(r.query(2), 0, "nothing consumed");
        assert!(r.fill(a, 0, b"first!!!"));
        assert!(r.commit(a, false));
        assert_eq!(r.drain(), vec![b"first!!!".to_vec(), b"second".to_vec()]);
        // A discarded head record lets the consumer through as well.
        let d = r.reserve(4).unwrap();
        assert!(r.output(b"third"));
        assert!(r.drain().is_empty());
        assert!(r.commit(d, true));
        assert_eq!(r.drain(), vec![b"third".to_vec()]);
    }

    #[test]
    fn ringbuf_commit_rejects_foreign_addresses() {
        let r = &ring(256);
        let start = r.data_range().0;
        let a = r.reserve(8).unwrap();
        for bad in [0, 1, start, start + 4, a + 3, a + 8, start + 256 + 8, u64::MAX] {
            assert!(!r.commit(bad, false), "{bad:#x}");
        }
        assert!(r.header_of(0).is_none());
        assert!(r.header_of(start + 256 + 8).is_none());
        assert!(r.drain().is_empty(), "the real record is still reserved");
        assert!(r.commit(a, false));
        assert_eq!(r.drain().len(), 1);
    }

    #[test]
    fn ringbuf_query() {
        let r = &ring(512);
        // BPF_RB_AVAIL_DATA, BPF_RB_RING_SIZE, BPF_RB_CONS_POS, BPF_RB_PROD_POS.
        assert_eq!([r.query(0), r.query(1), r.query(2), r.query(3)], [0, 512, 0, 0]);
        assert_eq!(r.query(4), 0, "unknown flags give 0");
        assert_eq!(r.query(u64::MAX), 0);
        assert!(r.output(&[1; 10])); // 8-byte header + 10 bytes rounded to 16
        assert_eq!([r.query(0), r.query(2), r.query(3)], [24, 0, 24]);
        let a = r.reserve(1).unwrap(); // reserved records count as produced
        assert_eq!([r.query(0), r.query(2), r.query(3)], [40, 0, 40]);
        assert_eq!(r.drain().len(), 1);
        assert_eq!([r.query(0), r.query(2), r.query(3)], [16, 24, 40]);
        assert!(r.commit(a, true));
        assert!(r.drain().is_empty());
        assert_eq!([r.query(0), r.query(2), r.query(3)], [0, 40, 40]);
        assert_eq!(r.query(1), 512);
    }

    #[test]
    fn ringbuf_full_refuses_until_drained() {
        let r = &ring(64);
        let mut accepted = 0;
        while r.output(&[accepted as u8; 8]) {
            accepted += 1;
            assert!(accepted <= 4, "64 bytes hold at most four 16-byte records");
        }
        assert!(accepted >= 3, "refused with {} bytes in use", r.query(0));
        assert!(r.query(0) + 16 > 64, "refused although there was room");
        assert!(r.reserve(1).is_none());
        // Records larger than the buffer are refused outright.
        assert!(!r.output(&[0; 64]));
        assert!(r.reserve(1 << 40).is_none());
        assert!(r.reserve(u64::MAX).is_none());
        let got = r.drain();
        assert_eq!(got.len(), accepted);
        for (i, rec) in got.iter().enumerate() {
            assert_eq!(rec, &vec![i as u8; 8]);
        }
        assert!(r.output(&[9; 8]), "room again after draining");
    }

    #[test]
    fn ringbuf_wraps_around_keeping_records_contiguous_and_in_order() {
        const SIZE: u64 = 256;
        let r = &ring(SIZE as u32);
        let (start, size) = r.data_range();
        assert_eq!(size, SIZE);
        // Lengths that do not divide the buffer, up to the largest record (half the buffer with header).
        let lens = [1u64, 13, 29, 40, 7, 55, 100, 3, 64, 17, 120, 9, 33];
        let mut expected: Vec<Vec<u8>> = Vec::new();
        let mut n = 0u64;
        let mut seed = 7u64;
        let mut refusals = 0;
        for _ in 0..5000 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            if (seed >> 61) == 0 {
                // Drain from time to time, also when there would be room for more.
                let got = r.drain();
                assert_eq!(got, expected);
                expected.clear();
                assert_eq!(r.query(0), 0);
                assert_eq!(r.query(2), r.query(3));
                continue;
            }
            let len = lens[(n % lens.len() as u64) as usize];
            let (prod, avail) = (r.query(3), r.query(0));
            match r.reserve(len) {
                Some(addr) => {
                    assert_eq!(addr % 8, 0);
                    assert!(
                        addr >= start + 8 && addr + len <= start + SIZE,
                        "record of {len} bytes at offset {} crosses the end of the buffer",
                        addr - start
                    );
                    let data = pattern(n, len as usize);
                    assert!(r.fill(addr, 0, &data));
                    let discard = n % 7 == 3;
                    assert!(r.commit(addr, discard));
                    if !discard {
                        expected.push(data);
                    }
                    n += 1;
                }
                None => {
                    // Only refused when the record (with the padding to the end of the buffer it would
                    // need) really does not fit.
                    let off = prod % SIZE;
                    let total = round8(len) + 8;
                    let pad = if off + total > SIZE { SIZE - off } else { 0 };
                    assert!(avail + pad + total > SIZE, "refused {len} bytes with {avail} in use at offset {off}");
                    refusals += 1;
                    let got = r.drain();
                    assert_eq!(got, expected);
                    expected.clear();
                }
            }
        }
        assert_eq!(r.drain(), expected);
        assert!(r.query(3) > 20 * SIZE, "the producer went round the buffer many times");
        assert!(refusals > 10, "the buffer filled up many times");
    }
}
