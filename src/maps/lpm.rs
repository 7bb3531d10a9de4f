//! Longest-prefix-match tries (`BPF_MAP_TYPE_LPM_TRIE`), as the kernel's: a key is a 4-byte prefix
//! length (host order) and then the data it applies to (an IPv4 or IPv6 address, say, in network
//! order); updates and deletes name one prefix exactly, and a lookup finds the longest stored prefix
//! that matches the key's data within the key's prefix length.
//!
//! Entries are indexed by prefix length, then by their masked data; a lookup tries the stored
//! lengths from the longest down, one hash probe each. Values live in fixed slots, as in every map
//! here, so a pointer a lookup returned stays valid.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::any::Any;

use hashbrown::HashMap as Table;
use spin::Mutex;

use super::storage::{copy_in, zero, Slots};
use super::{check_flags, check_value, Map, MapDef, MapError, BPF_EXIST, BPF_NOEXIST};
use crate::memory::Region;

/// `BPF_F_NO_PREALLOC`: the kernel requires it of LPM tries (entries are made as they are added).
pub const BPF_F_NO_PREALLOC: u32 = 1;

/// The most data bytes a key may have after its prefix length (the kernel's limit).
pub const LPM_MAX_DATA: u32 = 256;

struct Index {
    /// Per prefix length: masked data to slot.
    by_len: BTreeMap<u32, Table<Vec<u8>, u32>>,
    free: Vec<u32>,
    /// Slots handed out so far (`free` holds those given back).
    next: u32,
    len: usize,
}

/// A longest-prefix-match trie.
pub struct LpmTrieMap {
    def: MapDef,
    slots: Slots,
    index: Mutex<Index>,
}

impl LpmTrieMap {
    /// An empty trie. The definition's keys are 4 bytes of prefix length and 1 to 256 bytes of data,
    /// and its flags must hold `BPF_F_NO_PREALLOC`, as the kernel asks.
    pub fn new(def: MapDef) -> Result<LpmTrieMap, MapError> {
        if def.key_size <= 4 || def.key_size > 4 + LPM_MAX_DATA {
            return Err(MapError::InvalidDef("LPM trie keys are a 4-byte prefix length and 1 to 256 bytes of data"));
        }
        if def.value_size == 0 || def.max_entries == 0 {
            return Err(MapError::InvalidDef("LPM tries need a value size and a capacity"));
        }
        if def.flags & BPF_F_NO_PREALLOC == 0 {
            return Err(MapError::InvalidDef("LPM tries must be created with BPF_F_NO_PREALLOC"));
        }
        super::check_def(&def, 1)?;
        let slots = Slots::new(def.value_size as usize, def.max_entries as usize)?;
        let index = Index { by_len: BTreeMap::new(), free: Vec::new(), next: 0, len: 0 };
        Ok(LpmTrieMap { def, slots, index: Mutex::new(index) })
    }

    /// Bits of data a key holds.
    fn max_bits(&self) -> u32 {
        (self.def.key_size - 4) * 8
    }

    /// The number of prefixes stored.
    pub fn len(&self) -> usize {
        self.index.lock().len
    }

    /// Whether no prefix is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A key's prefix length and data, if the key has the map's size.
    fn split<'k>(&self, key: &'k [u8]) -> Option<(u32, &'k [u8])> {
        if key.len() != self.def.key_size as usize {
            return None;
        }
        let len = u32::from_ne_bytes([key[0], key[1], key[2], key[3]]);
        Some((len, &key[4..]))
    }
}

/// The first `bits` bits of `data`, the rest zero.
fn masked(data: &[u8], bits: u32) -> Vec<u8> {
    let mut out = data.to_vec();
    mask_into(data, bits, &mut out);
    out
}

/// Writes the first `bits` bits of `data` into `out` (as long as `data`), the rest zero.
fn mask_into(data: &[u8], bits: u32, out: &mut [u8]) {
    out.copy_from_slice(data);
    let whole = (bits / 8) as usize;
    if whole < out.len() {
        let keep = bits % 8;
        out[whole] &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
        for b in &mut out[whole + 1..] {
            *b = 0;
        }
    }
}

// SAFETY: `lookup` returns only pointers to value slots of `slots`, which never move or shrink while
// the map lives; `regions` covers exactly those slots, writable unless programs may only read the
// map; the map's own code touches them only through `storage` (shared, atomic accesses).
unsafe impl Map for LpmTrieMap {
    fn def(&self) -> MapDef {
        self.def
    }

    fn lookup(&self, key: &[u8], _: usize) -> Option<*mut u8> {
        let (len, data) = self.split(key)?;
        let limit = len.min(self.max_bits());
        let mut buf = [0u8; LPM_MAX_DATA as usize];
        let prefix = &mut buf[..data.len()];
        let ix = self.index.lock();
        for (&bits, table) in ix.by_len.range(..=limit).rev() {
            mask_into(data, bits, prefix);
            if let Some(&slot) = table.get(&prefix[..]) {
                return Some(self.slots.ptr(slot as usize));
            }
        }
        None
    }

    fn update(&self, key: &[u8], value: &[u8], flags: u64, _: usize) -> Result<(), MapError> {
        check_flags(flags)?;
        check_value(&self.def, value)?;
        let (bits, data) = self.split(key).ok_or(MapError::KeySize { got: key.len(), want: self.def.key_size })?;
        if bits > self.max_bits() {
            return Err(MapError::InvalidDef("the prefix is longer than the key's data"));
        }
        let prefix = masked(data, bits);
        let mut ix = self.index.lock();
        let existing = ix.by_len.get(&bits).and_then(|t| t.get(&prefix)).copied();
        let slot = match existing {
            Some(_) if flags == BPF_NOEXIST => return Err(MapError::Exists),
            Some(slot) => slot,
            None if flags == BPF_EXIST => return Err(MapError::NotFound),
            None => {
                let slot = match ix.free.pop() {
                    Some(s) => s,
                    None if ix.next < self.def.max_entries => {
                        ix.next += 1;
                        ix.next - 1
                    }
                    None => return Err(MapError::Full),
                };
                let table = ix.by_len.entry(bits).or_default();
                if table.try_reserve(1).is_err() {
                    ix.free.push(slot);
                    return Err(MapError::NoMemory(key.len() as u64));
                }
                table.insert(prefix, slot);
                ix.len += 1;
                // SAFETY: a slot of this map's storage, `value_size` bytes.
                unsafe { zero(self.slots.ptr(slot as usize), self.def.value_size as usize) };
                slot
            }
        };
        // SAFETY: as above.
        unsafe { copy_in(self.slots.ptr(slot as usize), value) };
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> Result<(), MapError> {
        let (bits, data) = self.split(key).ok_or(MapError::KeySize { got: key.len(), want: self.def.key_size })?;
        if bits > self.max_bits() {
            return Err(MapError::NotFound);
        }
        let mut ix = self.index.lock();
        let table = ix.by_len.get_mut(&bits).ok_or(MapError::NotFound)?;
        let slot = table.remove(&masked(data, bits)).ok_or(MapError::NotFound)?;
        if table.is_empty() {
            ix.by_len.remove(&bits);
        }
        ix.free.push(slot);
        ix.len -= 1;
        Ok(())
    }

    /// Keys from the longest prefixes to the shortest, and within one length by data.
    fn next_key(&self, key: Option<&[u8]>, out: &mut [u8]) -> Result<(), MapError> {
        if out.len() != self.def.key_size as usize {
            return Err(MapError::KeySize { got: out.len(), want: self.def.key_size });
        }
        let ix = self.index.lock();
        let mut all: Vec<(u32, &Vec<u8>)> =
            ix.by_len.iter().flat_map(|(&bits, t)| t.keys().map(move |d| (bits, d))).collect();
        all.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        let current =
            key.and_then(|k| self.split(k)).map(|(bits, data)| (bits, masked(data, bits.min(self.max_bits()))));
        let at = match current.and_then(|(bits, data)| all.iter().position(|&(b, d)| b == bits && *d == data)) {
            Some(i) => i + 1,
            None => 0,
        };
        let &(bits, data) = all.get(at).ok_or(MapError::NotFound)?;
        out[..4].copy_from_slice(&bits.to_ne_bytes());
        out[4..].copy_from_slice(data);
        Ok(())
    }

    fn regions(&self) -> Vec<Region> {
        alloc::vec![self.slots.region(!self.def.read_only_for_programs())]
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
