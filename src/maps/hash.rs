//! Hash maps: plain, least-recently-used, and per-CPU. Values live in preallocated slots; an index
//! from key to slot sits behind a spin lock.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::any::Any;

use spin::Mutex;

use super::storage::{copy_in, zero, Slots};
use super::{check_flags, check_key, check_value, Map, MapDef, MapError, BPF_EXIST, BPF_NOEXIST, MAX_CPUS};
use crate::vm::Region;

/// Which hash map behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKind {
    /// `BPF_MAP_TYPE_HASH`: inserts fail when full.
    Plain,
    /// `BPF_MAP_TYPE_LRU_HASH`: when full, an insert evicts the least recently used entry.
    Lru,
    /// `BPF_MAP_TYPE_PERCPU_HASH`: one value per CPU slot.
    PerCpu,
}

/// Key to slot. Slots are handed out in order, then reused from the free list; the per-slot vectors
/// grow as slots are first used, so an empty map of large capacity costs little.
struct Index {
    slot_of: hashbrown::HashMap<Box<[u8]>, u32>,
    /// Slots freed by deletions.
    free: Vec<u32>,
    /// Last use of each slot (LRU only).
    used: Vec<u64>,
    key_of: Vec<Option<Box<[u8]>>>,
    clock: u64,
}

impl Index {
    /// A slot for a new key, if there is one.
    fn take_slot(&mut self, capacity: u32) -> Option<u32> {
        if let Some(s) = self.free.pop() {
            return Some(s);
        }
        let next = self.key_of.len() as u32;
        (next < capacity).then(|| {
            self.key_of.push(None);
            self.used.push(0);
            next
        })
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
        let slots = Slots::new(def.value_size as usize, n.checked_mul(cpus).ok_or(MapError::InvalidDef("too large"))?)
            .ok_or(MapError::InvalidDef("hash map is too large"))?;
        let index = Index {
            slot_of: hashbrown::HashMap::new(),
            free: Vec::new(),
            used: Vec::new(),
            key_of: Vec::new(),
            clock: 0,
        };
        Ok(HashMap { def, kind, cpus, slots, index: Mutex::new(index) })
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

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.index.lock().slot_of.len()
    }

    /// Whether the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Map for HashMap {
    fn def(&self) -> MapDef {
        self.def
    }

    fn cpus(&self) -> usize {
        self.cpus
    }

    fn lookup(&self, key: &[u8], cpu: usize) -> Option<*mut u8> {
        let cpu = self.cpu_slot(cpu)?;
        if key.len() != self.def.key_size as usize {
            return None;
        }
        let mut ix = self.index.lock();
        let slot = *ix.slot_of.get(key)?;
        if self.kind == HashKind::Lru {
            ix.clock += 1;
            let now = ix.clock;
            ix.used[slot as usize] = now;
        }
        Some(self.ptr(slot, cpu))
    }

    fn update(&self, key: &[u8], value: &[u8], flags: u64, cpu: usize) -> Result<(), MapError> {
        check_flags(flags)?;
        check_key(&self.def, key)?;
        check_value(&self.def, value)?;
        let cpu = self.cpu_slot(cpu).ok_or(MapError::OutOfRange(cpu as u32))?;
        let mut ix = self.index.lock();
        ix.clock += 1;
        let now = ix.clock;
        let slot = match ix.slot_of.get(key).copied() {
            Some(_) if flags == BPF_NOEXIST => return Err(MapError::Exists),
            Some(slot) => slot,
            None if flags == BPF_EXIST => return Err(MapError::NotFound),
            None => {
                let slot = match ix.take_slot(self.def.max_entries) {
                    Some(s) => s,
                    None if self.kind == HashKind::Lru => {
                        // Evict the least recently used entry.
                        let victim = (0..ix.used.len()).min_by_key(|&i| ix.used[i]).ok_or(MapError::Full)? as u32;
                        if let Some(old) = ix.key_of[victim as usize].take() {
                            ix.slot_of.remove(&old);
                        }
                        victim
                    }
                    None => return Err(MapError::Full),
                };
                ix.slot_of.insert(key.into(), slot);
                ix.key_of[slot as usize] = Some(key.into());
                for c in 0..self.cpus {
                    zero(self.ptr(slot, c), self.def.value_size as usize);
                }
                slot
            }
        };
        if self.kind == HashKind::Lru {
            ix.used[slot as usize] = now;
        }
        copy_in(self.ptr(slot, cpu), value);
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> Result<(), MapError> {
        check_key(&self.def, key)?;
        let mut ix = self.index.lock();
        let slot = ix.slot_of.remove(key).ok_or(MapError::NotFound)?;
        ix.key_of[slot as usize] = None;
        ix.used[slot as usize] = 0;
        ix.free.push(slot);
        Ok(())
    }

    fn next_key(&self, key: Option<&[u8]>, out: &mut [u8]) -> Result<(), MapError> {
        if out.len() != self.def.key_size as usize {
            return Err(MapError::KeySize { got: out.len(), want: self.def.key_size });
        }
        let ix = self.index.lock();
        let mut keys = ix.slot_of.keys();
        let next = match key {
            // A key that is not in the map restarts from the first key, as in the kernel.
            Some(k) if ix.slot_of.contains_key(k) => {
                let mut it = keys.by_ref().skip_while(|x| &***x != k);
                it.next();
                it.next()
            }
            _ => keys.next(),
        };
        out.copy_from_slice(next.ok_or(MapError::NotFound)?);
        Ok(())
    }

    fn regions(&self) -> Vec<Region> {
        alloc::vec![self.slots.region()]
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
