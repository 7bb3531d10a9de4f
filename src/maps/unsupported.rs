//! A stand-in for a map whose kind the runtime does not implement: an object that declares one still
//! loads, and only a program that uses it is refused (see `vm::Instance`).

use core::any::Any;

use super::{Map, MapDef, MapError};

/// The definition of a map of a kind with no implementation. It holds nothing: lookups find
/// nothing and every change fails with [`MapError::UnsupportedType`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnsupportedMap {
    def: MapDef,
}

impl UnsupportedMap {
    /// A stand-in for a map of definition `def`.
    pub fn new(def: MapDef) -> UnsupportedMap {
        UnsupportedMap { def }
    }
}

// SAFETY: `lookup` never returns an address, `regions` (the default) is empty, and the map is never
// frozen.
unsafe impl Map for UnsupportedMap {
    fn def(&self) -> MapDef {
        self.def
    }

    fn lookup(&self, _: &[u8], _: usize) -> Option<*mut u8> {
        None
    }

    fn update(&self, _: &[u8], _: &[u8], _: u64, _: usize) -> Result<(), MapError> {
        Err(MapError::UnsupportedType(self.def.map_type.raw()))
    }

    fn delete(&self, _: &[u8]) -> Result<(), MapError> {
        Err(MapError::UnsupportedType(self.def.map_type.raw()))
    }

    fn next_key(&self, _: Option<&[u8]>, _: &mut [u8]) -> Result<(), MapError> {
        Err(MapError::UnsupportedType(self.def.map_type.raw()))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
