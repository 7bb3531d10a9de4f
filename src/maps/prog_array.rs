//! Program arrays: indices to program ids, the targets of tail calls.

use alloc::vec::Vec;
use core::any::Any;
use core::sync::atomic::{AtomicU32, Ordering};

use super::{check_flags, check_key, Map, MapDef, MapError, BPF_EXIST, BPF_NOEXIST};

const EMPTY: u32 = u32::MAX;

/// `BPF_MAP_TYPE_PROG_ARRAY`: 4-byte keys, 4-byte values naming programs of the same object (their
/// position in the program set the `Vm` was built with). Programs cannot read it, only tail-call.
pub struct ProgArrayMap {
    def: MapDef,
    entries: Vec<AtomicU32>,
}

impl ProgArrayMap {
    /// Creates an empty program array.
    pub fn new(def: MapDef) -> Result<ProgArrayMap, MapError> {
        super::check_def(&def, 1)?;
        if def.key_size != 4 || def.value_size != 4 || def.max_entries == 0 {
            return Err(MapError::InvalidDef("program arrays have 4-byte keys and values"));
        }
        Ok(ProgArrayMap { def, entries: (0..def.max_entries).map(|_| AtomicU32::new(EMPTY)).collect() })
    }

    /// Sets `index` to program `id`.
    pub fn set(&self, index: u32, id: u32) -> Result<(), MapError> {
        let e = self.entries.get(index as usize).ok_or(MapError::OutOfRange(index))?;
        e.store(id, Ordering::Release);
        Ok(())
    }

    /// The program id at `index`, if set.
    pub fn get(&self, index: u32) -> Option<u32> {
        let id = self.entries.get(index as usize)?.load(Ordering::Acquire);
        (id != EMPTY).then_some(id)
    }

    fn key(&self, key: &[u8]) -> Result<u32, MapError> {
        check_key(&self.def, key)?;
        Ok(u32::from_ne_bytes([key[0], key[1], key[2], key[3]]))
    }
}

impl Map for ProgArrayMap {
    fn def(&self) -> MapDef {
        self.def
    }

    fn lookup(&self, _key: &[u8], _cpu: usize) -> Option<*mut u8> {
        None
    }

    fn update(&self, key: &[u8], value: &[u8], flags: u64, _cpu: usize) -> Result<(), MapError> {
        check_flags(flags)?;
        let index = self.key(key)?;
        let id = self.key(value).map_err(|_| MapError::ValueSize { got: value.len(), want: 4 })?;
        match (self.get(index), flags) {
            (Some(_), BPF_NOEXIST) => Err(MapError::Exists),
            (None, BPF_EXIST) => Err(MapError::NotFound),
            _ => self.set(index, id),
        }
    }

    fn delete(&self, key: &[u8]) -> Result<(), MapError> {
        let index = self.key(key)?;
        let e = self.entries.get(index as usize).ok_or(MapError::OutOfRange(index))?;
        if e.swap(EMPTY, Ordering::AcqRel) == EMPTY {
            return Err(MapError::NotFound);
        }
        Ok(())
    }

    fn next_key(&self, key: Option<&[u8]>, out: &mut [u8]) -> Result<(), MapError> {
        let next = match key.map(|k| self.key(k)) {
            Some(Ok(i)) => i + 1,
            _ => 0,
        };
        if next >= self.def.max_entries || out.len() != 4 {
            return Err(MapError::NotFound);
        }
        out.copy_from_slice(&next.to_ne_bytes());
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
