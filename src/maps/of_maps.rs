//! Maps of maps (`BPF_MAP_TYPE_ARRAY_OF_MAPS`, `BPF_MAP_TYPE_HASH_OF_MAPS`): an array or hash map whose
//! values name other maps of the same environment, all of one kind given by a template (as libbpf
//! declares it with `__array(values, struct { ... })`).
//!
//! The inner maps are maps of the environment, by index: they live as long as it does, so a program
//! that looked one up keeps valid pointers into it whatever the host changes meanwhile, and their
//! memory is part of every execution's regions. A program's lookup gives the inner map's handle, or
//! null when the entry is empty or names a map that does not fit the template; programs cannot change
//! the entries. Values are stored as the index plus one (0: empty); the host sets them with
//! [`set`](MapOfMaps::set).

use core::any::Any;
use core::sync::atomic::{AtomicU32, Ordering};

use alloc::boxed::Box;

use super::{ArrayMap, HashKind, HashMap, Map, MapDef, MapError, MapType, BPF_ANY};

/// A map whose values are maps of the environment, by index.
pub struct MapOfMaps {
    def: MapDef,
    template: MapDef,
    slots: Box<dyn Map>,
}

impl MapOfMaps {
    /// An empty map of maps for `def` (an array or hash of maps with 4-byte values), whose inner maps
    /// have `template`'s kind and sizes.
    pub fn new(def: MapDef, template: MapDef) -> Result<MapOfMaps, MapError> {
        if def.value_size != 4 {
            return Err(MapError::InvalidDef("the values of a map of maps are 4-byte map references"));
        }
        if matches!(template.map_type, MapType::ArrayOfMaps | MapType::HashOfMaps | MapType::Other(_)) {
            return Err(MapError::InvalidDef("inner maps must be of a kind this runtime implements, not maps of maps"));
        }
        let inner = MapDef { map_type: MapType::Array, ..def };
        let slots: Box<dyn Map> = match def.map_type {
            MapType::ArrayOfMaps => Box::new(ArrayMap::new(inner)?),
            MapType::HashOfMaps => Box::new(HashMap::new(MapDef { map_type: MapType::Hash, ..def }, HashKind::Plain)?),
            _ => return Err(MapError::InvalidDef("not a map of maps")),
        };
        Ok(MapOfMaps { def, template, slots })
    }

    /// The definition every inner map must match (kind, key and value sizes, read-only flag).
    pub fn template(&self) -> MapDef {
        self.template
    }

    /// Whether a map with definition `def` may be an inner map here.
    pub fn fits(&self, def: &MapDef) -> bool {
        let t = &self.template;
        (def.map_type, def.key_size, def.value_size, def.read_only_for_programs())
            == (t.map_type, t.key_size, t.value_size, t.read_only_for_programs())
    }

    /// Makes `key` name the map at index `inner` of the environment.
    pub fn set(&self, key: &[u8], inner: u32) -> Result<(), MapError> {
        let stored = inner.checked_add(1).ok_or(MapError::OutOfRange(inner))?;
        self.slots.update(key, &stored.to_ne_bytes(), BPF_ANY, 0)
    }

    /// The index of the map `key` names, if any.
    pub fn get(&self, key: &[u8]) -> Option<u32> {
        let p = self.slots.peek(key, 0)?;
        // SAFETY: `Map`'s contract: `p` addresses the 4-byte value of `key`, 8-byte aligned (value
        // storage is), alive as long as the map, and accessed by everyone atomically.
        let stored = unsafe { AtomicU32::from_ptr(p.cast::<u32>()) }.load(Ordering::Acquire);
        stored.checked_sub(1)
    }

    /// Empties the entry of `key`.
    pub fn clear(&self, key: &[u8]) -> Result<(), MapError> {
        match self.def.map_type {
            MapType::ArrayOfMaps => self.slots.update(key, &0u32.to_ne_bytes(), BPF_ANY, 0),
            _ => self.slots.delete(key),
        }
    }

    /// What a program's lookup of `key` gives: the handle of the inner map, if the entry names a map of
    /// `maps` that fits the template, else 0 (null).
    pub(crate) fn lookup_handle(&self, key: &[u8], maps: &[alloc::sync::Arc<dyn Map>]) -> u64 {
        match self.get(key) {
            Some(i) if maps.get(i as usize).is_some_and(|m| self.fits(&m.def())) => super::handle(i),
            _ => 0,
        }
    }
}

// SAFETY: `lookup` and `peek` never return an address and `regions` is empty: programs reach inner
// maps by handle, never the entries themselves.
unsafe impl Map for MapOfMaps {
    fn def(&self) -> MapDef {
        self.def
    }

    fn lookup(&self, _key: &[u8], _cpu: usize) -> Option<*mut u8> {
        None
    }

    fn peek(&self, _key: &[u8], _cpu: usize) -> Option<*mut u8> {
        None
    }

    /// `value` is the inner map's index in the environment (4 bytes).
    fn update(&self, key: &[u8], value: &[u8], flags: u64, _cpu: usize) -> Result<(), MapError> {
        let index: [u8; 4] = value.try_into().map_err(|_| MapError::ValueSize { got: value.len(), want: 4 })?;
        let stored = u32::from_ne_bytes(index).checked_add(1).ok_or(MapError::OutOfRange(u32::MAX))?;
        self.slots.update(key, &stored.to_ne_bytes(), flags, 0)
    }

    fn delete(&self, key: &[u8]) -> Result<(), MapError> {
        self.clear(key)
    }

    fn next_key(&self, key: Option<&[u8]>, out: &mut [u8]) -> Result<(), MapError> {
        self.slots.next_key(key, out)
    }

    fn inner_def(&self) -> Option<MapDef> {
        Some(self.template)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
