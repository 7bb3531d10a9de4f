//! Bloom filters (`BPF_MAP_TYPE_BLOOM_FILTER`): `bpf_map_push_elem` adds a value, and
//! `bpf_map_peek_elem` says whether it may have been added (0) or surely was not (`-ENOENT`). No
//! false negatives; false positives at the rate the size implies. Values cannot be listed or removed.

use alloc::vec::Vec;
use core::any::Any;
use core::sync::atomic::{AtomicU64, Ordering};

use super::{check_value, Map, MapDef, MapError, BPF_ANY};

/// Hash functions per value (the kernel's default when the definition's `map_extra` is 0).
pub const BLOOM_HASHES: u32 = 5;

/// A Bloom filter of `max_entries` expected values of `value_size` bytes; keys are 0 bytes.
pub struct BloomFilterMap {
    def: MapDef,
    /// A power of two of bits, at least 64.
    bits: Vec<AtomicU64>,
}

impl BloomFilterMap {
    /// An empty filter sized for `max_entries` values at about a 1% false-positive rate.
    pub fn new(def: MapDef) -> Result<BloomFilterMap, MapError> {
        if def.key_size != 0 || def.value_size == 0 || def.max_entries == 0 {
            return Err(MapError::InvalidDef("Bloom filters have no key, and a value size and capacity"));
        }
        super::check_def(&def, 1)?;
        // About 1.44 bits per entry per hash function, rounded up to a power of two.
        let want = (def.max_entries as u64 * BLOOM_HASHES as u64 * 10 / 7).max(64);
        let nbits = want.checked_next_power_of_two().ok_or(MapError::InvalidDef("the filter is too large"))?;
        if nbits / 8 > super::MAX_MAP_BYTES as u64 {
            return Err(MapError::InvalidDef("the map is larger than MAX_MAP_BYTES"));
        }
        let words = (nbits / 64) as usize;
        let mut bits = Vec::new();
        bits.try_reserve_exact(words).map_err(|_| MapError::NoMemory(nbits / 8))?;
        bits.resize_with(words, || AtomicU64::new(0));
        Ok(BloomFilterMap { def, bits })
    }

    /// The bit positions of `value`: `BLOOM_HASHES` hashes of it.
    fn positions(&self, value: &[u8]) -> impl Iterator<Item = u64> + '_ {
        let mask = self.bits.len() as u64 * 64 - 1;
        // Two independent 64-bit hashes, combined as h1 + i * h2 (Kirsch and Mitzenmacher).
        let (h1, h2) = (hash(value, 0x9e37_79b9_7f4a_7c15), hash(value, 0xc2b2_ae3d_27d4_eb4f) | 1);
        (0..BLOOM_HASHES as u64).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) & mask)
    }

    /// Adds `value` (flags must be `BPF_ANY`).
    pub fn add(&self, value: &[u8], flags: u64) -> Result<(), MapError> {
        check_value(&self.def, value)?;
        if flags != BPF_ANY {
            return Err(MapError::InvalidFlags(flags));
        }
        for bit in self.positions(value) {
            self.bits[(bit / 64) as usize].fetch_or(1 << (bit % 64), Ordering::Relaxed);
        }
        Ok(())
    }

    /// The filter's bits that are set, and how many it has: how full it is (values cannot be listed).
    pub fn bits_set(&self) -> (u64, u64) {
        let set = self.bits.iter().map(|w| w.load(Ordering::Relaxed).count_ones() as u64).sum();
        (set, self.bits.len() as u64 * 64)
    }

    /// Whether `value` may have been added (`false`: it surely was not).
    pub fn may_contain(&self, value: &[u8]) -> Result<bool, MapError> {
        check_value(&self.def, value)?;
        Ok(self
            .positions(value)
            .all(|bit| self.bits[(bit / 64) as usize].load(Ordering::Relaxed) & (1 << (bit % 64)) != 0))
    }
}

/// A 64-bit hash of `bytes` with `seed`: FNV-1a over the bytes, then a finalising mix.
fn hash(bytes: &[u8], seed: u64) -> u64 {
    let mut h = seed ^ 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

// SAFETY: `lookup` never returns a pointer and `regions` is empty: values are only hashed.
unsafe impl Map for BloomFilterMap {
    fn def(&self) -> MapDef {
        self.def
    }

    fn lookup(&self, _: &[u8], _: usize) -> Option<*mut u8> {
        None
    }

    /// Adds the value (the key is empty).
    fn update(&self, key: &[u8], value: &[u8], flags: u64, _: usize) -> Result<(), MapError> {
        if !key.is_empty() {
            return Err(MapError::KeySize { got: key.len(), want: 0 });
        }
        self.add(value, flags)
    }

    fn delete(&self, _: &[u8]) -> Result<(), MapError> {
        Err(MapError::Unsupported)
    }

    fn next_key(&self, _: Option<&[u8]>, _: &mut [u8]) -> Result<(), MapError> {
        Err(MapError::Unsupported)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
