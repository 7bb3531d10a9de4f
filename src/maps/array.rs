//! Array maps: `max_entries` values indexed by a 4-byte key, all present from creation.

use alloc::vec;
use alloc::vec::Vec;
use core::any::Any;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use super::storage::{copy_in, Slots};
use super::{check_flags, check_key, check_value, Map, MapDef, MapError, BPF_NOEXIST, MAX_CPUS};
use crate::memory::Region;

/// `BPF_MAP_TYPE_ARRAY`: one shared value per index.
pub struct ArrayMap {
    def: MapDef,
    slots: Slots,
    cpus: usize,
    /// Set by `freeze`; never cleared.
    frozen: AtomicBool,
    /// Host updates in progress (so that `freeze` can wait for them).
    writers: AtomicU32,
}

/// Where the values of a shared array map are (see `ArrayMap::inline_layout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ArrayLayout {
    /// Address of the value of index 0.
    pub(crate) base: u64,
    /// Bytes from one value to the next.
    pub(crate) stride: u64,
    /// Number of values.
    pub(crate) max_entries: u32,
    /// Bytes of each value.
    pub(crate) value_size: u32,
    /// Whether programs may write the values.
    pub(crate) writable: bool,
}

/// `BPF_MAP_TYPE_PERCPU_ARRAY`: one value per index and per CPU slot.
pub struct PerCpuArrayMap(ArrayMap);

fn index(def: &MapDef, key: &[u8]) -> Result<u32, MapError> {
    check_key(def, key)?;
    let mut b = [0u8; 4];
    b.copy_from_slice(key);
    let i = u32::from_ne_bytes(b);
    if i >= def.max_entries {
        return Err(MapError::OutOfRange(i));
    }
    Ok(i)
}

impl ArrayMap {
    /// Creates a zeroed array map.
    pub fn new(def: MapDef) -> Result<ArrayMap, MapError> {
        ArrayMap::with_cpus(def, 1)
    }

    fn with_cpus(def: MapDef, cpus: usize) -> Result<ArrayMap, MapError> {
        super::check_def(&def, cpus)?;
        if def.key_size != 4 {
            return Err(MapError::InvalidDef("array keys must be 4 bytes"));
        }
        if def.value_size == 0 || def.max_entries == 0 {
            return Err(MapError::InvalidDef("array values and capacity must be non-zero"));
        }
        let count = (def.max_entries as usize).checked_mul(cpus).ok_or(MapError::InvalidDef("array is too large"))?;
        let slots = Slots::new(def.value_size as usize, count)?;
        Ok(ArrayMap { def, slots, cpus, frozen: AtomicBool::new(false), writers: AtomicU32::new(0) })
    }

    /// Where a lookup finds its value without calling the map, for a shared array (`None` for a
    /// per-CPU one): the value of index `i < max_entries` is at `base + i * stride`, for the map's whole
    /// life. The engines use it to carry out `bpf_map_lookup_elem` themselves, as the kernel's JITs do.
    pub(crate) fn inline_layout(&self) -> Option<ArrayLayout> {
        let (base, stride) = self.slots.base_and_stride();
        (self.cpus == 1).then_some(ArrayLayout {
            base: base.expose_provenance() as u64,
            stride: stride as u64,
            max_entries: self.def.max_entries,
            value_size: self.def.value_size,
            writable: !self.def.read_only_for_programs(),
        })
    }

    /// Address of the value at `index` for `cpu`, if in range. Shared arrays have one slot, whatever the CPU.
    /// Once the map is [frozen](Map::freeze), nothing may write through it.
    pub fn value_ptr(&self, index: u32, cpu: usize) -> Option<*mut u8> {
        let cpu = if self.cpus == 1 { 0 } else { cpu };
        (index < self.def.max_entries && cpu < self.cpus)
            .then(|| self.slots.ptr(cpu * self.def.max_entries as usize + index as usize))
    }
}

// SAFETY: `lookup` returns slots of `slots`, which live as long as the map and are accessed only through
// `storage`; `regions` is exactly that storage.
unsafe impl Map for ArrayMap {
    fn def(&self) -> MapDef {
        self.def
    }

    fn cpus(&self) -> usize {
        self.cpus
    }

    fn lookup(&self, key: &[u8], cpu: usize) -> Option<*mut u8> {
        self.value_ptr(index(&self.def, key).ok()?, cpu)
    }

    fn update(&self, key: &[u8], value: &[u8], flags: u64, cpu: usize) -> Result<(), MapError> {
        check_flags(flags)?;
        check_value(&self.def, value)?;
        let i = index(&self.def, key)?;
        if flags == BPF_NOEXIST {
            return Err(MapError::Exists);
        }
        let dst = self.value_ptr(i, cpu).ok_or(MapError::OutOfRange(i))?;
        // Announce the write before checking the flag: `freeze` sets the flag, then waits for announced
        // writes, so a write either sees the flag or finishes before `freeze` returns (sequentially
        // consistent order of the two atomics).
        self.writers.fetch_add(1, Ordering::SeqCst);
        if self.frozen.load(Ordering::SeqCst) {
            self.writers.fetch_sub(1, Ordering::SeqCst);
            return Err(MapError::Frozen);
        }
        // SAFETY: `dst` is the slot of index `i` for `cpu`: `value_size` bytes of this map's storage, and
        // `value` has `value_size` bytes (checked above).
        unsafe { copy_in(dst, value) };
        self.writers.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }

    fn freeze(&self) -> Result<(), MapError> {
        self.frozen.store(true, Ordering::SeqCst);
        while self.writers.load(Ordering::SeqCst) != 0 {
            core::hint::spin_loop();
        }
        Ok(())
    }

    fn frozen(&self) -> bool {
        self.frozen.load(Ordering::SeqCst)
    }

    fn delete(&self, _key: &[u8]) -> Result<(), MapError> {
        Err(MapError::CannotDelete)
    }

    fn next_key(&self, key: Option<&[u8]>, out: &mut [u8]) -> Result<(), MapError> {
        let next = match key.map(|k| index(&self.def, k)) {
            None | Some(Err(_)) => 0,
            Some(Ok(i)) => i + 1,
        };
        if out.len() != 4 {
            return Err(MapError::KeySize { got: out.len(), want: 4 });
        }
        if next >= self.def.max_entries {
            return Err(MapError::NotFound);
        }
        out.copy_from_slice(&next.to_ne_bytes());
        Ok(())
    }

    fn regions(&self) -> Vec<Region> {
        vec![self.slots.region(!self.def.read_only_for_programs())]
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl PerCpuArrayMap {
    /// Creates a zeroed per-CPU array map with [`MAX_CPUS`] slots per index.
    pub fn new(def: MapDef) -> Result<PerCpuArrayMap, MapError> {
        ArrayMap::with_cpus(def, MAX_CPUS).map(PerCpuArrayMap)
    }
}

// SAFETY: every method forwards to the inner `ArrayMap`.
unsafe impl Map for PerCpuArrayMap {
    fn def(&self) -> MapDef {
        self.0.def
    }
    fn cpus(&self) -> usize {
        self.0.cpus
    }
    fn lookup(&self, key: &[u8], cpu: usize) -> Option<*mut u8> {
        self.0.lookup(key, cpu)
    }
    fn update(&self, key: &[u8], value: &[u8], flags: u64, cpu: usize) -> Result<(), MapError> {
        self.0.update(key, value, flags, cpu)
    }
    fn delete(&self, key: &[u8]) -> Result<(), MapError> {
        self.0.delete(key)
    }
    fn next_key(&self, key: Option<&[u8]>, out: &mut [u8]) -> Result<(), MapError> {
        self.0.next_key(key, out)
    }
    fn regions(&self) -> Vec<Region> {
        self.0.regions()
    }
    fn freeze(&self) -> Result<(), MapError> {
        self.0.freeze()
    }
    fn frozen(&self) -> bool {
        self.0.frozen()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}
