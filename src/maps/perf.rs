//! The perf event array (`BPF_MAP_TYPE_PERF_EVENT_ARRAY`): `bpf_perf_event_output` copies a sample
//! into the buffer of the CPU slot the running execution holds, and the host consumes each CPU's
//! buffer in order, as libbpf's `perf_buffer` does.
//!
//! A sample that does not fit is lost: the helper fails with `-ENOSPC`, the loss is counted, and the
//! consumer meets a [`PerfEvent::Lost`] with the number of samples lost just before the next sample
//! that fits (the kernel's `PERF_RECORD_LOST`). Programs never address the buffers (samples are
//! copied in), so no byte a program writes is ever read as a record header.

use alloc::vec::Vec;
use core::any::Any;
use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;

use super::{Map, MapDef, MapError, MAX_CPUS};

/// Bytes of each CPU's buffer unless the host chooses (libbpf's tools commonly ask for 16 pages).
pub const DEFAULT_PERF_BUFFER: usize = 64 << 10;

/// Smallest buffer [`PerfEventArrayMap::with_buffer_size`] accepts.
pub const MIN_PERF_BUFFER: usize = 64;

/// Bytes of a record's header in a buffer: its payload length and kind.
const HEADER: usize = 8;
/// A lost-samples record: header and a count.
const LOST_RECORD: usize = HEADER + 8;
const KIND_SAMPLE: u32 = 0;
const KIND_LOST: u32 = 1;

/// What a consumer receives from one CPU's buffer, in the order it was produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerfEvent<'a> {
    /// A sample's bytes, exactly as the program passed them.
    Sample(&'a [u8]),
    /// This many samples were lost here because the buffer was full.
    Lost(u64),
}

/// One CPU's buffer: records from `tail` (next to consume) to `head` (next to write), positions
/// counted from creation and taken modulo the buffer's size.
struct Buffer {
    bytes: Vec<u8>,
    head: u64,
    tail: u64,
    /// Samples lost since the last record written.
    lost: u64,
}

impl Buffer {
    /// Writes `data` at position `pos` (wrapping around the end).
    fn put(&mut self, pos: u64, data: &[u8]) {
        let size = self.bytes.len();
        let at = (pos % size as u64) as usize;
        let first = data.len().min(size - at);
        self.bytes[at..at + first].copy_from_slice(&data[..first]);
        self.bytes[..data.len() - first].copy_from_slice(&data[first..]);
    }

    /// The pieces of the buffer (at most two) that hold `len` bytes from position `pos`.
    fn pieces(&mut self, pos: u64, len: usize) -> [&mut [u8]; 2] {
        let size = self.bytes.len();
        let at = (pos % size as u64) as usize;
        let first = len.min(size - at);
        let (low, high) = self.bytes.split_at_mut(at);
        [&mut high[..first], &mut low[..len - first]]
    }
}

/// A perf event array: one buffer of samples per CPU slot, indexed by CPU as the kernel's (keys and
/// values are the 4-byte CPU index and event of the kernel's maps; programs do not look them up).
pub struct PerfEventArrayMap {
    def: MapDef,
    buffers: Vec<Mutex<Buffer>>,
    size: usize,
    lost: AtomicU64,
}

impl PerfEventArrayMap {
    /// A perf event array with buffers of [`DEFAULT_PERF_BUFFER`] bytes. `max_entries` 0 means one
    /// entry per CPU slot ([`MAX_CPUS`]), as libbpf sizes the map to the CPU count; entries past the
    /// last CPU slot have no buffer.
    pub fn new(def: MapDef) -> Result<PerfEventArrayMap, MapError> {
        PerfEventArrayMap::with_buffer_size(def, DEFAULT_PERF_BUFFER)
    }

    /// As [`new`](PerfEventArrayMap::new), with buffers of `bytes` bytes each (a multiple of 8, at least
    /// [`MIN_PERF_BUFFER`]); the largest sample a buffer takes is 16 bytes smaller.
    pub fn with_buffer_size(mut def: MapDef, bytes: usize) -> Result<PerfEventArrayMap, MapError> {
        if def.key_size != 4 || def.value_size != 4 {
            return Err(MapError::InvalidDef("perf event arrays have 4-byte keys and values"));
        }
        if bytes < MIN_PERF_BUFFER || bytes % 8 != 0 {
            return Err(MapError::InvalidDef("perf buffers are a multiple of 8 bytes, at least 64"));
        }
        if def.max_entries == 0 {
            def.max_entries = MAX_CPUS as u32;
        }
        let count = (def.max_entries as usize).min(MAX_CPUS);
        if bytes.checked_mul(count).is_none_or(|total| total > super::MAX_MAP_BYTES) {
            return Err(MapError::InvalidDef("the map is larger than MAX_MAP_BYTES"));
        }
        let mut buffers = Vec::with_capacity(count);
        for _ in 0..count {
            let mut v = Vec::new();
            v.try_reserve_exact(bytes).map_err(|_| MapError::NoMemory(bytes as u64))?;
            v.resize(bytes, 0);
            buffers.push(Mutex::new(Buffer { bytes: v, head: 0, tail: 0, lost: 0 }));
        }
        Ok(PerfEventArrayMap { def, buffers, size: bytes, lost: AtomicU64::new(0) })
    }

    /// Number of CPU buffers.
    pub fn buffer_count(&self) -> usize {
        self.buffers.len()
    }

    /// Bytes of each buffer.
    pub fn buffer_size(&self) -> usize {
        self.size
    }

    /// Samples lost so far, on all CPUs together.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Bytes written to `cpu`'s buffer and not yet consumed (0 for a CPU with no buffer).
    pub fn pending(&self, cpu: usize) -> usize {
        self.buffers.get(cpu).map_or(0, |b| {
            let b = b.lock();
            (b.head - b.tail) as usize
        })
    }

    /// Adds a sample of `len` bytes to `cpu`'s buffer, its bytes written by `fill` (called with each
    /// contiguous piece of the sample and the piece's offset in it). Returns [`MapError::Full`] (the
    /// sample is lost and counted) if the buffer has no room, [`MapError::OutOfRange`] for a CPU with
    /// no buffer, and `fill`'s error as it is, with nothing written.
    pub fn output_with<E>(
        &self,
        cpu: usize,
        len: usize,
        mut fill: impl FnMut(&mut [u8], usize) -> Result<(), E>,
    ) -> Result<Result<(), MapError>, E> {
        let Some(buffer) = self.buffers.get(cpu) else { return Ok(Err(MapError::OutOfRange(cpu as u32))) };
        let mut b = buffer.lock();
        let lost_record = if b.lost > 0 { LOST_RECORD } else { 0 };
        let padded = len.checked_add(7).map(|n| n & !7);
        let need = padded.and_then(|p| p.checked_add(HEADER + lost_record));
        let used = (b.head - b.tail) as usize;
        let fits = len <= u32::MAX as usize && need.is_some_and(|n| n <= self.size - used);
        let (Some(padded), true) = (padded, fits) else {
            b.lost += 1;
            self.lost.fetch_add(1, Ordering::Relaxed);
            return Ok(Err(MapError::Full));
        };
        let mut pos = b.head;
        if b.lost > 0 {
            let mut record = [0u8; LOST_RECORD];
            record[..4].copy_from_slice(&8u32.to_ne_bytes());
            record[4..8].copy_from_slice(&KIND_LOST.to_ne_bytes());
            record[8..].copy_from_slice(&b.lost.to_ne_bytes());
            b.put(pos, &record);
            pos += LOST_RECORD as u64;
        }
        let mut header = [0u8; HEADER];
        header[..4].copy_from_slice(&(len as u32).to_ne_bytes());
        header[4..].copy_from_slice(&KIND_SAMPLE.to_ne_bytes());
        b.put(pos, &header);
        pos += HEADER as u64;
        let [first, second] = b.pieces(pos, padded);
        let split = first.len();
        // Only the sample's own bytes come from `fill`; the padding is zeroed.
        for (piece, offset) in [(first, 0), (second, split)] {
            let own = len.saturating_sub(offset).min(piece.len());
            let (data, pad) = piece.split_at_mut(own);
            if !data.is_empty() {
                // On error nothing is published: `head` has not moved.
                fill(data, offset)?;
            }
            pad.fill(0);
        }
        b.head = pos + padded as u64;
        b.lost = 0;
        Ok(Ok(()))
    }

    /// Adds a copy of `data` as a sample to `cpu`'s buffer (see [`output_with`](Self::output_with)).
    pub fn output(&self, cpu: usize, data: &[u8]) -> Result<(), MapError> {
        let copied: Result<_, core::convert::Infallible> = self.output_with(cpu, data.len(), |piece, offset| {
            piece.copy_from_slice(&data[offset..offset + piece.len()]);
            Ok(())
        });
        match copied {
            Ok(result) => result,
            Err(never) => match never {},
        }
    }

    /// Consumes everything in `cpu`'s buffer, passing each event to `f` in the order it was produced.
    /// Returns the number of events passed. Producers wait only while the bytes are copied out, not
    /// while `f` runs.
    pub fn consume(&self, cpu: usize, mut f: impl FnMut(PerfEvent<'_>)) -> usize {
        let Some(buffer) = self.buffers.get(cpu) else { return 0 };
        let mut taken = Vec::new();
        {
            let mut b = buffer.lock();
            let used = (b.head - b.tail) as usize;
            if used == 0 {
                return 0;
            }
            if taken.try_reserve_exact(used).is_err() {
                return 0; // the host is out of memory: the records stay for a later call
            }
            let tail = b.tail;
            let [first, second] = b.pieces(tail, used);
            taken.extend_from_slice(first);
            taken.extend_from_slice(second);
            b.tail = b.head;
        }
        let mut count = 0;
        let mut at = 0;
        // Records are written by this module alone; the checks only keep a bug from reading past them.
        while let Some(header) = taken.get(at..at + HEADER) {
            let len = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let kind = u32::from_ne_bytes([header[4], header[5], header[6], header[7]]);
            let start = at + HEADER;
            let Some(payload) = taken.get(start..start + len) else { break };
            match kind {
                KIND_LOST => {
                    let mut n = [0u8; 8];
                    n.copy_from_slice(&payload[..8]);
                    f(PerfEvent::Lost(u64::from_ne_bytes(n)));
                }
                _ => f(PerfEvent::Sample(payload)),
            }
            count += 1;
            at = start + ((len + 7) & !7);
        }
        count
    }

    /// Consumes every CPU's buffer in turn (see [`consume`](Self::consume)); `f` gets the CPU index too.
    pub fn consume_all(&self, mut f: impl FnMut(usize, PerfEvent<'_>)) -> usize {
        (0..self.buffers.len()).map(|cpu| self.consume(cpu, |e| f(cpu, e))).sum()
    }
}

// SAFETY: `lookup` never returns an address and `regions` is empty: programs reach the buffers only
// through `bpf_perf_event_output`, which copies.
unsafe impl Map for PerfEventArrayMap {
    fn def(&self) -> MapDef {
        self.def
    }

    fn cpus(&self) -> usize {
        self.buffers.len()
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

    fn def(max_entries: u32) -> MapDef {
        MapDef { map_type: MapType::PerfEventArray, key_size: 4, value_size: 4, max_entries, flags: 0 }
    }

    fn events(m: &PerfEventArrayMap, cpu: usize) -> Vec<Result<Vec<u8>, u64>> {
        let mut out = Vec::new();
        m.consume(cpu, |e| {
            out.push(match e {
                PerfEvent::Sample(s) => Ok(s.to_vec()),
                PerfEvent::Lost(n) => Err(n),
            })
        });
        out
    }

    #[test]
    #[cfg_attr(miri, ignore = "allocates 3 MiB of buffers: minutes under Miri; the other tests cover the code")]
    fn sizes_and_defaults() {
        let m = PerfEventArrayMap::new(def(0)).expect("valid");
        assert_eq!(m.def().max_entries, MAX_CPUS as u32, "0 entries means one per CPU slot");
        assert_eq!((m.buffer_count(), m.buffer_size()), (MAX_CPUS, DEFAULT_PERF_BUFFER));
        assert_eq!(PerfEventArrayMap::new(def(1000)).expect("valid").buffer_count(), MAX_CPUS);
        assert_eq!(PerfEventArrayMap::new(def(2)).expect("valid").cpus(), 2);
        for bad in [0, 8, 63, 100] {
            assert!(PerfEventArrayMap::with_buffer_size(def(1), bad).is_err(), "{bad}");
        }
        let mut wrong = def(1);
        wrong.value_size = 8;
        assert!(PerfEventArrayMap::new(wrong).is_err());
        assert!(PerfEventArrayMap::with_buffer_size(def(16), super::super::MAX_MAP_BYTES).is_err());
    }

    #[test]
    fn samples_come_out_in_order_per_cpu_and_wrap() {
        let m = PerfEventArrayMap::with_buffer_size(def(2), 128).expect("valid");
        let mut expected = Vec::new();
        for n in 0..500u32 {
            let len = (n as usize * 5) % 37;
            let sample: Vec<u8> = (0..len).map(|i| (n as u8).wrapping_add(i as u8)).collect();
            m.output(1, &sample).expect("room");
            expected.push(Ok(sample));
            if n % 3 == 2 {
                assert_eq!(events(&m, 1), expected);
                expected.clear();
            }
        }
        assert_eq!(events(&m, 1), expected);
        assert!(events(&m, 0).is_empty(), "nothing on the other CPU");
        assert_eq!(m.lost(), 0);
        assert_eq!(m.output(2, b"x"), Err(MapError::OutOfRange(2)));
    }

    #[test]
    fn a_full_buffer_loses_samples_and_says_how_many() {
        let m = PerfEventArrayMap::with_buffer_size(def(1), 64).expect("valid");
        // 64 bytes hold four 8-byte samples with their headers.
        for n in 0..4u8 {
            m.output(0, &[n; 8]).expect("room");
        }
        for _ in 0..3 {
            assert_eq!(m.output(0, &[9; 8]), Err(MapError::Full));
        }
        assert_eq!(m.lost(), 3);
        assert_eq!(m.pending(0), 64);
        let got = events(&m, 0);
        assert_eq!(got, (0..4u8).map(|n| Ok(vec![n; 8])).collect::<Vec<_>>());
        // The loss is reported before the next sample that fits.
        m.output(0, b"after").expect("room");
        assert_eq!(events(&m, 0), vec![Err(3), Ok(b"after".to_vec())]);
        // A sample too large for the buffer is lost outright.
        assert_eq!(m.output(0, &[0; 57]), Err(MapError::Full));
        m.output(0, &[]).expect("an empty sample fits");
        assert_eq!(events(&m, 0), vec![Err(1), Ok(Vec::new())]);
        assert_eq!(m.lost(), 4);
    }

    #[test]
    fn a_failed_fill_publishes_nothing() {
        let m = PerfEventArrayMap::with_buffer_size(def(1), 64).expect("valid");
        let r: Result<Result<(), MapError>, &str> = m.output_with(0, 8, |_, _| Err("fault"));
        assert_eq!(r, Err("fault"));
        assert_eq!(m.pending(0), 0);
        assert!(events(&m, 0).is_empty());
    }
}
