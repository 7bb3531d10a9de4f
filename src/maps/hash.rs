//! Hash maps: plain, least-recently-used, and per-CPU. Values live in preallocated slots; an index
//! from key to slot sits behind a spin lock. Every operation takes constant time (amortised), whatever
//! the map's size: LRU order is a linked list through the slots, and iteration goes in slot order.

use alloc::vec::Vec;
use core::any::Any;
use core::hash::BuildHasher;

use spin::Mutex;

use super::storage::{copy_in, zero, Slots};
use super::{check_flags, check_key, check_value, Map, MapDef, MapError, BPF_EXIST, BPF_NOEXIST, MAX_CPUS};
use crate::memory::Region;

/// Which hash map behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKind {
    /// `BPF_MAP_TYPE_HASH`: inserts fail when full.
    Plain,
    /// `BPF_MAP_TYPE_LRU_HASH`: when full, an insert evicts the least recently used entry (lookups and
    /// updates count as uses).
    Lru,
    /// `BPF_MAP_TYPE_PERCPU_HASH`: one value per CPU slot.
    PerCpu,
}

/// No slot (end of a list).
const NIL: u32 = u32::MAX;

/// Key to slot. Slots are handed out in order, then reused from the free list; the per-slot vectors
/// grow as slots are first used, so an empty map of large capacity costs little. Keys are kept in one
/// flat vector (a slot's key at `slot * key_size`), and the table holds slots: adding or removing a key
/// allocates nothing once its slot has been used.
struct Index {
    /// The slots that hold a key, found by the key's hash.
    table: hashbrown::HashTable<u32>,
    hasher: hashbrown::DefaultHashBuilder,
    key_size: usize,
    /// The key of each slot used so far, `key_size` bytes each.
    keys: Vec<u8>,
    /// Whether each slot used so far holds a key now.
    used: Vec<bool>,
    /// Slots freed by deletions.
    free: Vec<u32>,
    /// Occupied slots from most to least recently used (LRU maps only): links by slot.
    newer: Vec<u32>,
    older: Vec<u32>,
    newest: u32,
    oldest: u32,
}

impl Index {
    fn new(key_size: usize) -> Index {
        Index {
            table: hashbrown::HashTable::new(),
            hasher: hashbrown::DefaultHashBuilder::default(),
            key_size,
            keys: Vec::new(),
            used: Vec::new(),
            free: Vec::new(),
            newer: Vec::new(),
            older: Vec::new(),
            newest: NIL,
            oldest: NIL,
        }
    }

    /// The key slot `slot` holds (or last held).
    fn key(&self, slot: u32) -> &[u8] {
        let at = slot as usize * self.key_size;
        &self.keys[at..at + self.key_size]
    }

    /// Number of keys.
    fn len(&self) -> usize {
        self.table.len()
    }

    /// The hash of `key`. Keys of up to 8 bytes (most) are hashed as one integer: cheaper than a
    /// slice's hash, which hashes its length too.
    #[inline]
    fn hash(hasher: &hashbrown::DefaultHashBuilder, key: &[u8]) -> u64 {
        match key.len() {
            4 => hasher.hash_one(u32::from_ne_bytes([key[0], key[1], key[2], key[3]])),
            n @ 0..=8 => {
                let mut word = [0u8; 8];
                word[..n].copy_from_slice(key);
                hasher.hash_one(u64::from_ne_bytes(word))
            }
            _ => hasher.hash_one(key),
        }
    }

    /// Whether `a` and `b` are the same key, compared without a call for the usual sizes (4 and 8
    /// bytes).
    #[inline(always)]
    fn same(a: &[u8], b: &[u8]) -> bool {
        if let (Ok(a), Ok(b)) = (<&[u8; 4]>::try_from(a), <&[u8; 4]>::try_from(b)) {
            return u32::from_ne_bytes(*a) == u32::from_ne_bytes(*b);
        }
        if let (Ok(a), Ok(b)) = (<&[u8; 8]>::try_from(a), <&[u8; 8]>::try_from(b)) {
            return u64::from_ne_bytes(*a) == u64::from_ne_bytes(*b);
        }
        a == b
    }

    /// The slot holding `key` (of `key_size` bytes), if any.
    #[inline]
    fn find(&self, key: &[u8]) -> Option<u32> {
        self.find_hashed(Index::hash(&self.hasher, key), key)
    }

    /// As [`find`](Index::find), given the key's hash.
    #[inline]
    fn find_hashed(&self, hash: u64, key: &[u8]) -> Option<u32> {
        // One probe loop per usual key size, each comparing integers.
        if let Ok(k) = <&[u8; 4]>::try_from(key) {
            let k = u32::from_ne_bytes(*k);
            let key_at = |s: u32| self.keys.get(s as usize * 4..s as usize * 4 + 4);
            return self.table.find(hash, |&s| key_at(s).is_some_and(|b| Index::same(b, &k.to_ne_bytes()))).copied();
        }
        self.table.find(hash, |&s| Index::same(self.key(s), key)).copied()
    }

    /// Records that `slot` (free, from `take_slot`) holds `key`, whose hash is `hash`.
    fn insert(&mut self, slot: u32, key: &[u8], hash: u64) -> Result<(), MapError> {
        let Index { table, hasher, keys, key_size, .. } = self;
        let ks = *key_size;
        let rehash = |&s: &u32| Index::hash(hasher, &keys[s as usize * ks..(s as usize + 1) * ks]);
        table.try_reserve(1, rehash).map_err(|_| MapError::NoMemory(key.len() as u64))?;
        let at = slot as usize * ks;
        match (self.keys.get_mut(at..at + ks), key.len()) {
            // The usual sizes as one move each, not a call of `memcpy`.
            (Some(dst), 4) => dst.copy_from_slice(&key[..4]),
            (Some(dst), 8) => dst.copy_from_slice(&key[..8]),
            (Some(dst), _) => dst.copy_from_slice(key),
            (None, _) => return Err(MapError::Unsupported),
        }
        self.used[slot as usize] = true;
        let Index { table, hasher, keys, .. } = self;
        table.insert_unique(hash, slot, |&s| Index::hash(hasher, &keys[s as usize * ks..(s as usize + 1) * ks]));
        Ok(())
    }

    /// Takes `key` out of the index: the slot that held it, now free to reuse (once unlinked from the
    /// use list of an LRU map).
    fn remove(&mut self, key: &[u8]) -> Option<u32> {
        let hash = Index::hash(&self.hasher, key);
        let Index { table, keys, key_size, .. } = self;
        let ks = *key_size;
        let entry =
            table.find_entry(hash, |&s| Index::same(&keys[s as usize * ks..(s as usize + 1) * ks], key)).ok()?;
        let (slot, _) = entry.remove();
        self.used[slot as usize] = false;
        Some(slot)
    }

    /// A slot for a new key, if there is one.
    fn take_slot(&mut self, capacity: u32) -> Result<Option<u32>, MapError> {
        if let Some(s) = self.free.pop() {
            return Ok(Some(s));
        }
        let next = self.used.len() as u32;
        if next >= capacity {
            return Ok(None);
        }
        let grow = |v: &mut Vec<u32>| v.try_reserve(1).map_err(|_| MapError::NoMemory(4));
        self.keys.try_reserve(self.key_size).map_err(|_| MapError::NoMemory(self.key_size as u64))?;
        self.used.try_reserve(1).map_err(|_| MapError::NoMemory(1))?;
        grow(&mut self.newer)?;
        grow(&mut self.older)?;
        self.keys.resize(self.keys.len() + self.key_size, 0);
        self.used.push(false);
        self.newer.push(NIL);
        self.older.push(NIL);
        Ok(Some(next))
    }

    /// Takes `slot` out of the use list.
    fn unlink(&mut self, slot: u32) {
        let (newer, older) = (self.newer[slot as usize], self.older[slot as usize]);
        match newer {
            NIL => self.newest = older,
            n => self.older[n as usize] = older,
        }
        match older {
            NIL => self.oldest = newer,
            o => self.newer[o as usize] = newer,
        }
        self.newer[slot as usize] = NIL;
        self.older[slot as usize] = NIL;
    }

    /// Puts `slot` (not in the list) at the most recently used end.
    fn push_newest(&mut self, slot: u32) {
        self.older[slot as usize] = self.newest;
        self.newer[slot as usize] = NIL;
        match self.newest {
            NIL => self.oldest = slot,
            n => self.newer[n as usize] = slot,
        }
        self.newest = slot;
    }

    /// Marks `slot` (in the list) as just used.
    fn touch(&mut self, slot: u32) {
        if self.newest != slot {
            self.unlink(slot);
            self.push_newest(slot);
        }
    }

    /// Removes the key of `slot` from the index; the slot is then free to reuse.
    fn forget(&mut self, slot: u32, lru: bool) {
        if self.used[slot as usize] {
            let hash = Index::hash(&self.hasher, self.key(slot));
            if let Ok(entry) = self.table.find_entry(hash, |&s| s == slot) {
                entry.remove();
            }
            self.used[slot as usize] = false;
        }
        if lru {
            self.unlink(slot);
        }
    }
}

/// A hash map (`BPF_MAP_TYPE_HASH`, `_LRU_HASH` or `_PERCPU_HASH`).
pub struct HashMap {
    def: MapDef,
    kind: HashKind,
    cpus: usize,
    slots: Slots,
    index: Mutex<Index>,
}

impl HashMap {
    /// Creates an empty hash map.
    pub fn new(def: MapDef, kind: HashKind) -> Result<HashMap, MapError> {
        if def.key_size == 0 || def.value_size == 0 || def.max_entries == 0 {
            return Err(MapError::InvalidDef("hash keys, values and capacity must be non-zero"));
        }
        let cpus = if kind == HashKind::PerCpu { MAX_CPUS } else { 1 };
        super::check_def(&def, cpus)?;
        let n = def.max_entries as usize;
        let slots = Slots::new(def.value_size as usize, n.checked_mul(cpus).ok_or(MapError::InvalidDef("too large"))?)?;
        Ok(HashMap { def, kind, cpus, slots, index: Mutex::new(Index::new(def.key_size as usize)) })
    }

    fn ptr(&self, slot: u32, cpu: usize) -> *mut u8 {
        self.slots.ptr(cpu * self.def.max_entries as usize + slot as usize)
    }

    /// The slot to use for `cpu`: shared maps have one, whatever the CPU.
    fn cpu_slot(&self, cpu: usize) -> Option<usize> {
        match self.kind {
            HashKind::PerCpu => (cpu < self.cpus).then_some(cpu),
            _ => Some(0),
        }
    }

    fn lru(&self) -> bool {
        self.kind == HashKind::Lru
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.index.lock().len()
    }

    /// Whether the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of `key` in CPU slot `cpu` (0 for maps that are not per-CPU), as a lookup finds it: an
    /// LRU map counts it as a use. `None` if the key is absent, has the wrong size, or `cpu` is out of
    /// range.
    #[inline]
    pub(crate) fn find_value(&self, key: &[u8], cpu: usize) -> Option<*mut u8> {
        let cpu = self.cpu_slot(cpu)?;
        if key.len() != self.def.key_size as usize {
            return None;
        }
        let mut ix = self.index.lock();
        let slot = ix.find(key)?;
        if self.lru() {
            ix.touch(slot);
        }
        Some(self.ptr(slot, cpu))
    }

    /// An update of `key` (with `flags`) in CPU slot `cpu`, whose new value `write` stores into the
    /// slot it is given, with the map locked: `write` must store all `value_size` bytes. A new key's
    /// other CPU slots (per-CPU maps) are zeroed.
    #[inline]
    pub(crate) fn put(&self, key: &[u8], flags: u64, cpu: usize, write: impl FnOnce(*mut u8)) -> Result<(), MapError> {
        check_flags(flags)?;
        check_key(&self.def, key)?;
        let cpu = self.cpu_slot(cpu).ok_or(MapError::OutOfRange(cpu as u32))?;
        let mut ix = self.index.lock();
        let hash = Index::hash(&ix.hasher, key);
        let slot = match ix.find_hashed(hash, key) {
            Some(_) if flags == BPF_NOEXIST => return Err(MapError::Exists),
            Some(slot) => {
                if self.lru() {
                    ix.touch(slot);
                }
                slot
            }
            None if flags == BPF_EXIST => return Err(MapError::NotFound),
            None => {
                let slot = match ix.take_slot(self.def.max_entries)? {
                    Some(s) => s,
                    None if self.lru() && ix.oldest != NIL => {
                        // Evict the least recently used entry.
                        let victim = ix.oldest;
                        ix.forget(victim, true);
                        victim
                    }
                    None => return Err(MapError::Full),
                };
                if let Err(e) = ix.insert(slot, key, hash) {
                    ix.free.push(slot);
                    return Err(e);
                }
                if self.lru() {
                    ix.push_newest(slot);
                }
                if self.cpus > 1 {
                    for c in 0..self.cpus {
                        // SAFETY: `ptr(slot, c)` is a slot of this map's storage of `value_size` bytes.
                        unsafe { zero(self.ptr(slot, c), self.def.value_size as usize) };
                    }
                }
                slot
            }
        };
        write(self.ptr(slot, cpu));
        Ok(())
    }
}

// SAFETY: `lookup` returns slots of `slots`, which live as long as the map (deleted keys free their slot
// for reuse but never the memory) and are accessed only through `storage`; `regions` is exactly that
// storage.
unsafe impl Map for HashMap {
    fn def(&self) -> MapDef {
        self.def
    }

    fn cpus(&self) -> usize {
        self.cpus
    }

    fn lookup(&self, key: &[u8], cpu: usize) -> Option<*mut u8> {
        self.find_value(key, cpu)
    }

    fn peek(&self, key: &[u8], cpu: usize) -> Option<*mut u8> {
        let cpu = self.cpu_slot(cpu)?;
        if key.len() != self.def.key_size as usize {
            return None;
        }
        let slot = self.index.lock().find(key)?;
        Some(self.ptr(slot, cpu))
    }

    fn update(&self, key: &[u8], value: &[u8], flags: u64, cpu: usize) -> Result<(), MapError> {
        check_value(&self.def, value)?;
        // SAFETY: `put` passes a slot of this map's storage of `value_size` bytes, which `value` has.
        self.put(key, flags, cpu, |slot| unsafe { copy_in(slot, value) })
    }

    fn delete(&self, key: &[u8]) -> Result<(), MapError> {
        check_key(&self.def, key)?;
        let mut ix = self.index.lock();
        let slot = ix.remove(key).ok_or(MapError::NotFound)?;
        if self.lru() {
            ix.unlink(slot);
        }
        ix.free.push(slot);
        Ok(())
    }

    fn next_key(&self, key: Option<&[u8]>, out: &mut [u8]) -> Result<(), MapError> {
        if out.len() != self.def.key_size as usize {
            return Err(MapError::KeySize { got: out.len(), want: self.def.key_size });
        }
        let ix = self.index.lock();
        // Keys go in slot order. A key that is not in the map restarts from the first key, as in the
        // kernel.
        let from = match key.filter(|k| k.len() == ix.key_size).and_then(|k| ix.find(k)) {
            Some(slot) => slot as usize + 1,
            None => 0,
        };
        let next = (from..ix.used.len()).find(|&s| ix.used[s]).ok_or(MapError::NotFound)?;
        out.copy_from_slice(ix.key(next as u32));
        Ok(())
    }

    fn regions(&self) -> Vec<Region> {
        alloc::vec![self.slots.region(!self.def.read_only_for_programs())]
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::MapType;

    fn lru(max: u32) -> HashMap {
        let def = MapDef { map_type: MapType::LruHash, key_size: 4, value_size: 8, max_entries: max, flags: 0 };
        HashMap::new(def, HashKind::Lru).expect("valid")
    }

    fn keys(m: &HashMap) -> Vec<u32> {
        let mut out = Vec::new();
        for k in (m as &dyn Map).keys() {
            out.push(u32::from_ne_bytes([k[0], k[1], k[2], k[3]]));
        }
        out.sort_unstable();
        out
    }

    #[test]
    fn lru_evicts_the_least_recently_used_key() {
        let m = lru(3);
        for k in 1u32..=3 {
            m.update(&k.to_ne_bytes(), &[0; 8], 0, 0).expect("room");
        }
        m.lookup(&1u32.to_ne_bytes(), 0).expect("present"); // 2 is now the oldest
        m.update(&4u32.to_ne_bytes(), &[0; 8], 0, 0).expect("evicts");
        assert_eq!(keys(&m), [1, 3, 4]);
        m.update(&3u32.to_ne_bytes(), &[1; 8], 0, 0).expect("replace"); // 1 is now the oldest
        m.update(&5u32.to_ne_bytes(), &[0; 8], 0, 0).expect("evicts");
        assert_eq!(keys(&m), [3, 4, 5]);
        m.delete(&4u32.to_ne_bytes()).expect("present");
        m.update(&6u32.to_ne_bytes(), &[0; 8], 0, 0).expect("free slot, no eviction");
        assert_eq!(keys(&m), [3, 5, 6]);
    }

    #[test]
    fn iteration_visits_every_key_once_in_linear_time() {
        // Quadratic iteration would take minutes at this size (seconds under Miri at the smaller one).
        let n: u32 = if cfg!(miri) { 300 } else { 50_000 };
        let def = MapDef { map_type: MapType::Hash, key_size: 4, value_size: 8, max_entries: n, flags: 0 };
        let m = HashMap::new(def, HashKind::Plain).expect("valid");
        for k in 0..n {
            m.update(&k.to_ne_bytes(), &[0; 8], 0, 0).expect("room");
        }
        for k in (0..n).step_by(3) {
            m.delete(&k.to_ne_bytes()).expect("present");
        }
        let all = keys(&m);
        assert_eq!(all.len(), (n - n.div_ceil(3)) as usize);
        assert!(all.iter().all(|k| k % 3 != 0));
    }
}
