//! Program arrays: indices to program ids, the targets of tail calls.

use alloc::collections::BTreeMap;
use core::any::Any;

use spin::RwLock;

use super::{check_key, Map, MapDef, MapError, BPF_ANY};

/// `BPF_MAP_TYPE_PROG_ARRAY`: 4-byte keys, 4-byte values naming programs of the same object (their
/// position in the program set the `Vm` was built with). Programs cannot read or change it, only
/// tail-call through it. Sparse: it takes memory only for the indices that are set, whatever its
/// capacity.
pub struct ProgArrayMap {
    def: MapDef,
    entries: RwLock<BTreeMap<u32, u32>>,
}

impl ProgArrayMap {
    /// Creates an empty program array.
    pub fn new(def: MapDef) -> Result<ProgArrayMap, MapError> {
        if def.key_size != 4 || def.value_size != 4 || def.max_entries == 0 {
            return Err(MapError::InvalidDef("program arrays have 4-byte keys and values"));
        }
        Ok(ProgArrayMap { def, entries: RwLock::new(BTreeMap::new()) })
    }

    /// Sets `index` to program `id`.
    pub fn set(&self, index: u32, id: u32) -> Result<(), MapError> {
        if index >= self.def.max_entries {
            return Err(MapError::OutOfRange(index));
        }
        self.entries.write().insert(index, id);
        Ok(())
    }

    /// The program id at `index`, if set.
    pub fn get(&self, index: u32) -> Option<u32> {
        self.entries.read().get(&index).copied()
    }

    /// Number of indices set.
    pub fn len(&self) -> usize {
        self.entries.read().len()
    }

    /// Whether no index is set.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn key(&self, key: &[u8]) -> Result<u32, MapError> {
        check_key(&self.def, key)?;
        Ok(u32::from_ne_bytes([key[0], key[1], key[2], key[3]]))
    }
}

// SAFETY: `lookup` never returns a pointer and `regions` is empty: programs reach no memory through it.
unsafe impl Map for ProgArrayMap {
    fn def(&self) -> MapDef {
        self.def
    }

    fn lookup(&self, _key: &[u8], _cpu: usize) -> Option<*mut u8> {
        None
    }

    /// Only `BPF_ANY` is accepted, as in the kernel.
    fn update(&self, key: &[u8], value: &[u8], flags: u64, _cpu: usize) -> Result<(), MapError> {
        if flags != BPF_ANY {
            return Err(MapError::InvalidFlags(flags));
        }
        let index = self.key(key)?;
        let id = self.key(value).map_err(|_| MapError::ValueSize { got: value.len(), want: 4 })?;
        self.set(index, id)
    }

    fn delete(&self, key: &[u8]) -> Result<(), MapError> {
        let index = self.key(key)?;
        if index >= self.def.max_entries {
            return Err(MapError::OutOfRange(index));
        }
        self.entries.write().remove(&index).map(|_| ()).ok_or(MapError::NotFound)
    }

    /// Keys go over the indices that are set, in order (the kernel also lists unset indices; a sparse
    /// array of billions of entries would make that endless).
    fn next_key(&self, key: Option<&[u8]>, out: &mut [u8]) -> Result<(), MapError> {
        if out.len() != 4 {
            return Err(MapError::KeySize { got: out.len(), want: 4 });
        }
        let from = match key.map(|k| self.key(k)) {
            Some(Ok(i)) => i.checked_add(1).ok_or(MapError::NotFound)?,
            _ => 0,
        };
        let entries = self.entries.read();
        let (&next, _) = entries.range(from..).next().ok_or(MapError::NotFound)?;
        out.copy_from_slice(&next.to_ne_bytes());
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
