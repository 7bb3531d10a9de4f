//! Typed host handles over maps whose keys and values are plain old data.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::marker::PhantomData;

use super::storage::copy_out;
use super::{Map, MapError, BPF_ANY};

/// Plain old data: any bit pattern is a valid value, and there are no padding bytes.
///
/// # Safety
/// Implement only for types without padding, for which every byte pattern is valid.
pub unsafe trait Pod: Copy + 'static {}

// SAFETY: integers have no padding and accept every bit pattern.
unsafe impl Pod for u8 {}
// SAFETY: as above.
unsafe impl Pod for u16 {}
// SAFETY: as above.
unsafe impl Pod for u32 {}
// SAFETY: as above.
unsafe impl Pod for u64 {}
// SAFETY: as above.
unsafe impl Pod for i8 {}
// SAFETY: as above.
unsafe impl Pod for i16 {}
// SAFETY: as above.
unsafe impl Pod for i32 {}
// SAFETY: as above.
unsafe impl Pod for i64 {}
// SAFETY: arrays of Pod types have no padding between elements.
unsafe impl<T: Pod, const N: usize> Pod for [T; N] {}

fn bytes_of<T: Pod>(v: &T) -> &[u8] {
    // SAFETY: `T: Pod` has no padding, so all `size_of::<T>()` bytes are initialised.
    unsafe { core::slice::from_raw_parts((v as *const T).cast::<u8>(), core::mem::size_of::<T>()) }
}

fn from_bytes<T: Pod>(b: &[u8]) -> T {
    debug_assert_eq!(b.len(), core::mem::size_of::<T>());
    // SAFETY: `b` has `size_of::<T>()` bytes (the map checked the sizes) and any bit pattern is a
    // valid `T`; `read_unaligned` has no alignment requirement.
    unsafe { b.as_ptr().cast::<T>().read_unaligned() }
}

fn check_sizes<K, V>(map: &dyn Map) -> Result<(), MapError> {
    let def = map.def();
    if def.key_size as usize != core::mem::size_of::<K>() {
        return Err(MapError::KeySize { got: core::mem::size_of::<K>(), want: def.key_size });
    }
    if def.value_size as usize != core::mem::size_of::<V>() {
        return Err(MapError::ValueSize { got: core::mem::size_of::<V>(), want: def.value_size });
    }
    Ok(())
}

/// A typed view of a hash-like map with keys `K` and values `V`.
pub struct TypedHashMap<K: Pod, V: Pod> {
    map: Arc<dyn Map>,
    _types: PhantomData<(K, V)>,
}

impl<K: Pod, V: Pod> TypedHashMap<K, V> {
    /// Wraps a map whose key and value sizes match `K` and `V`.
    pub fn new(map: Arc<dyn Map>) -> Result<Self, MapError> {
        check_sizes::<K, V>(&*map)?;
        Ok(TypedHashMap { map, _types: PhantomData })
    }

    /// The value for `key` (of CPU slot 0 for per-CPU maps).
    pub fn get(&self, key: &K) -> Option<V> {
        self.map.get(bytes_of(key), 0).map(|b| from_bytes(&b))
    }

    /// The values of every CPU slot for `key`.
    pub fn get_per_cpu(&self, key: &K) -> Option<Vec<V>> {
        (0..self.map.cpus()).map(|c| self.map.get(bytes_of(key), c).map(|b| from_bytes(&b))).collect()
    }

    /// Creates or replaces the value for `key`.
    pub fn insert(&self, key: &K, value: &V) -> Result<(), MapError> {
        self.map.update(bytes_of(key), bytes_of(value), BPF_ANY, 0)
    }

    /// Deletes `key`.
    pub fn remove(&self, key: &K) -> Result<(), MapError> {
        self.map.delete(bytes_of(key))
    }

    /// All entries (values of CPU slot 0).
    pub fn entries(&self) -> Vec<(K, V)> {
        self.map
            .keys()
            .into_iter()
            .filter_map(|k| {
                let p = self.map.peek(&k, 0)?;
                let mut v = alloc::vec![0u8; core::mem::size_of::<V>()];
                // SAFETY: `Map`'s contract: `p` addresses `value_size` (= `size_of::<V>()`, checked in
                // `new`) bytes of live value storage.
                unsafe { copy_out(p, &mut v) };
                Some((from_bytes(&k), from_bytes(&v)))
            })
            .collect()
    }
}

/// A typed view of an array map with values `V`.
pub struct Array<V: Pod> {
    map: Arc<dyn Map>,
    _types: PhantomData<V>,
}

impl<V: Pod> Array<V> {
    /// Wraps an array map whose value size matches `V`.
    pub fn new(map: Arc<dyn Map>) -> Result<Self, MapError> {
        check_sizes::<u32, V>(&*map)?;
        Ok(Array { map, _types: PhantomData })
    }

    /// The value at `index` (CPU slot 0).
    pub fn get(&self, index: u32) -> Option<V> {
        self.map.get(&index.to_ne_bytes(), 0).map(|b| from_bytes(&b))
    }

    /// The values of every CPU slot at `index`.
    pub fn get_per_cpu(&self, index: u32) -> Option<Vec<V>> {
        (0..self.map.cpus()).map(|c| self.map.get(&index.to_ne_bytes(), c).map(|b| from_bytes(&b))).collect()
    }

    /// Sets the value at `index`.
    pub fn set(&self, index: u32, value: &V) -> Result<(), MapError> {
        self.map.update(&index.to_ne_bytes(), bytes_of(value), BPF_ANY, 0)
    }

    /// Number of entries.
    pub fn len(&self) -> u32 {
        self.map.def().max_entries
    }

    /// Whether the array has no entries (never, for a valid array).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
