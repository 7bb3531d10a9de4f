//! Maps: key/value stores shared between programs and the host.
//!
//! Every kind implements [`Map`]; values live in storage allocated when the map is created, which never
//! moves while the map lives, so a pointer a program got from a lookup stays valid for the whole
//! execution even if the key is deleted meanwhile (the slot may then be reused, as in the kernel).
//! Maps are `Send + Sync` and shared between executions on many threads; a program's atomics on map
//! values are host atomics. Hosts can implement [`Map`] for their own kinds.

mod array;
mod bloom;
mod hash;
mod lpm;
mod of_maps;
mod perf;
mod prog_array;
mod queue;
mod ringbuf;
#[cfg(all(feature = "attach", target_os = "linux"))]
mod shared;
mod storage;
mod typed;
mod unsupported;

#[cfg_attr(not(feature = "jit"), allow(unused_imports))]
pub(crate) use array::ArrayLayout;
pub use array::{ArrayMap, PerCpuArrayMap};
pub use bloom::{BloomFilterMap, BLOOM_HASHES};
pub use hash::{HashKind, HashMap};
pub use lpm::{LpmTrieMap, BPF_F_NO_PREALLOC, LPM_MAX_DATA};
pub use of_maps::MapOfMaps;
pub use perf::{PerfEvent, PerfEventArrayMap, DEFAULT_PERF_BUFFER, MIN_PERF_BUFFER};
pub use prog_array::ProgArrayMap;
pub use queue::{Order, QueueMap};
pub use ringbuf::RingBufMap;
#[cfg(all(feature = "attach", target_os = "linux"))]
pub use shared::SharedMap;
pub use typed::{Array, Pod, TypedHashMap};
pub use unsupported::UnsupportedMap;

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::any::Any;

use crate::memory::Region;

/// Most bytes of value storage one map may have (all CPU slots together); larger definitions are
/// rejected with [`MapError::InvalidDef`].
pub const MAX_MAP_BYTES: usize = 256 << 20;

/// Number of per-CPU slots: at most this many executions that use per-CPU maps run at once; more wait.
pub const MAX_CPUS: usize = 16;

/// Map types, numbered as in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MapType {
    /// `BPF_MAP_TYPE_HASH`
    Hash,
    /// `BPF_MAP_TYPE_ARRAY`
    Array,
    /// `BPF_MAP_TYPE_PROG_ARRAY`: program ids for tail calls.
    ProgArray,
    /// `BPF_MAP_TYPE_PERF_EVENT_ARRAY`: a buffer of samples per CPU.
    PerfEventArray,
    /// `BPF_MAP_TYPE_PERCPU_HASH`
    PerCpuHash,
    /// `BPF_MAP_TYPE_PERCPU_ARRAY`
    PerCpuArray,
    /// `BPF_MAP_TYPE_LRU_HASH`
    LruHash,
    /// `BPF_MAP_TYPE_RINGBUF`
    RingBuf,
    /// `BPF_MAP_TYPE_QUEUE`
    Queue,
    /// `BPF_MAP_TYPE_STACK`
    Stack,
    /// `BPF_MAP_TYPE_BLOOM_FILTER`
    BloomFilter,
    /// `BPF_MAP_TYPE_LPM_TRIE`
    LpmTrie,
    /// `BPF_MAP_TYPE_ARRAY_OF_MAPS`: an array of references to other maps.
    ArrayOfMaps,
    /// `BPF_MAP_TYPE_HASH_OF_MAPS`: a hash map of references to other maps.
    HashOfMaps,
    /// Any other kernel type number, for host-provided kinds.
    Other(u32),
}

impl MapType {
    /// The type for a kernel map type number.
    pub fn from_raw(n: u32) -> MapType {
        match n {
            1 => MapType::Hash,
            2 => MapType::Array,
            3 => MapType::ProgArray,
            4 => MapType::PerfEventArray,
            5 => MapType::PerCpuHash,
            6 => MapType::PerCpuArray,
            9 => MapType::LruHash,
            27 => MapType::RingBuf,
            22 => MapType::Queue,
            23 => MapType::Stack,
            30 => MapType::BloomFilter,
            11 => MapType::LpmTrie,
            12 => MapType::ArrayOfMaps,
            13 => MapType::HashOfMaps,
            n => MapType::Other(n),
        }
    }

    /// The kernel's name for this type, without its `BPF_MAP_TYPE_` prefix, in lower case
    /// (`"perf_event_array"`); `"unknown"` for a number the kernel does not define.
    pub fn name(self) -> &'static str {
        const NAMES: [&str; 34] = [
            "unspec",
            "hash",
            "array",
            "prog_array",
            "perf_event_array",
            "percpu_hash",
            "percpu_array",
            "stack_trace",
            "cgroup_array",
            "lru_hash",
            "lru_percpu_hash",
            "lpm_trie",
            "array_of_maps",
            "hash_of_maps",
            "devmap",
            "sockmap",
            "cpumap",
            "xskmap",
            "sockhash",
            "cgroup_storage",
            "reuseport_sockarray",
            "percpu_cgroup_storage",
            "queue",
            "stack",
            "sk_storage",
            "devmap_hash",
            "struct_ops",
            "ringbuf",
            "inode_storage",
            "task_storage",
            "bloom_filter",
            "user_ringbuf",
            "cgrp_storage",
            "arena",
        ];
        NAMES.get(self.raw() as usize).copied().unwrap_or("unknown")
    }

    /// Whether this runtime has a built-in implementation of the type ([`create`] makes it).
    pub fn implemented(self) -> bool {
        !matches!(self, MapType::Other(_))
    }

    /// The kernel's number for this type.
    pub fn raw(self) -> u32 {
        match self {
            MapType::Hash => 1,
            MapType::Array => 2,
            MapType::ProgArray => 3,
            MapType::PerfEventArray => 4,
            MapType::PerCpuHash => 5,
            MapType::PerCpuArray => 6,
            MapType::LruHash => 9,
            MapType::RingBuf => 27,
            MapType::Queue => 22,
            MapType::Stack => 23,
            MapType::BloomFilter => 30,
            MapType::LpmTrie => 11,
            MapType::ArrayOfMaps => 12,
            MapType::HashOfMaps => 13,
            MapType::Other(n) => n,
        }
    }
}

/// A map's definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MapDef {
    /// The kind.
    pub map_type: MapType,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Capacity (for a ring buffer: its size in bytes).
    pub max_entries: u32,
    /// Creation flags.
    pub flags: u32,
}

/// Map creation flag: programs may read the map's values but not change them (libbpf sets it on
/// `.rodata`).
pub const BPF_F_RDONLY_PROG: u32 = 1 << 7;

impl MapDef {
    /// Whether programs may only read this map's values ([`BPF_F_RDONLY_PROG`]).
    pub const fn read_only_for_programs(&self) -> bool {
        self.flags & BPF_F_RDONLY_PROG != 0
    }
}

/// `update` flag: create or replace.
pub const BPF_ANY: u64 = 0;
/// `update` flag: create only.
pub const BPF_NOEXIST: u64 = 1;
/// `update` flag: replace only.
pub const BPF_EXIST: u64 = 2;

/// Why a map operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    /// The definition cannot be created.
    #[error("invalid map definition: {0}")]
    InvalidDef(&'static str),
    /// A key of the wrong size.
    #[error("key has {got} bytes, the map's keys have {want}")]
    KeySize {
        /// Bytes given.
        got: usize,
        /// The map's key size.
        want: u32,
    },
    /// A value of the wrong size.
    #[error("value has {got} bytes, the map's values have {want}")]
    ValueSize {
        /// Bytes given.
        got: usize,
        /// The map's value size.
        want: u32,
    },
    /// No entry for the key (or, for `next_key`, no key after it).
    #[error("no such entry")]
    NotFound,
    /// `BPF_NOEXIST` for a key that exists.
    #[error("the entry exists")]
    Exists,
    /// The map is full.
    #[error("the map is full")]
    Full,
    /// An index past the end of an array (or a CPU slot past the last one).
    #[error("index {0} is out of range")]
    OutOfRange(u32),
    /// Entries of this kind always exist and cannot be deleted (arrays).
    #[error("entries of this map kind cannot be deleted")]
    CannotDelete,
    /// Unknown update flags.
    #[error("invalid flags {0:#x}")]
    InvalidFlags(u64),
    /// The map kind does not support the operation.
    #[error("operation not supported by this map kind")]
    Unsupported,
    /// The map type has no built-in implementation.
    #[error("map type {0} ({name}) is not supported", name = MapType::from_raw(*.0).name())]
    UnsupportedType(u32),
    /// Creating the map would pass the memory budget of its maps.
    #[error("the map needs up to {need} bytes, and only {remaining} bytes of the map budget remain")]
    OverBudget {
        /// Most bytes the map can take.
        need: u64,
        /// Bytes left in the budget.
        remaining: u64,
    },
    /// The host could not allocate the memory.
    #[error("out of memory allocating {0} bytes")]
    NoMemory(u64),
    /// The map was frozen ([`Map::freeze`]): its values can no longer be changed from the host.
    #[error("the map is frozen")]
    Frozen,
    /// The map's lock stayed taken (a map in shared memory whose holder may have died).
    #[error("the map's lock stayed taken")]
    Busy,
}

impl MapError {
    /// The negative errno a BPF helper returns for this error.
    pub fn errno(&self) -> i64 {
        match self {
            MapError::NotFound => -2,                                   // ENOENT
            MapError::Exists => -17,                                    // EEXIST
            MapError::Full | MapError::OutOfRange(_) => -7,             // E2BIG
            MapError::NoMemory(_) | MapError::OverBudget { .. } => -12, // ENOMEM
            MapError::Unsupported => -95,                               // EOPNOTSUPP
            MapError::Frozen => -1,                                     // EPERM
            MapError::Busy => -16,                                      // EBUSY
            _ => -22,                                                   // EINVAL
        }
    }
}

/// A map, as programs and hosts use it. `cpu` selects the slot of per-CPU kinds (0 for the others).
///
/// # Safety
/// The engines and helpers trust what a map reports, without checking it:
/// - [`def`](Map::def) returns the same definition for the whole life of the map, with a key size of at
///   most [`MAX_KEY_SIZE`].
/// - [`lookup`](Map::lookup) and [`peek`](Map::peek) return `None` or the address of `def().value_size` bytes of storage the map
///   owns, valid for reads and writes for as long as the map lives: value storage never moves or
///   shrinks, not even when its key is deleted. The map's own code accesses that storage only through
///   [`memory::access`](crate::memory::access) with [`Access::Shared`](crate::memory::Access), because
///   programs on other threads may access it at the same time.
/// - [`regions`](Map::regions) returns regions covering value storage of that kind and nothing else
///   (memory the map owns for its whole life), and every range `lookup` returns lies inside one of
///   them; a region is writable only if programs may store into it.
/// - Once [`frozen`](Map::frozen) has returned `true`, it returns `true` for the rest of the map's life
///   and [`update`](Map::update) fails with [`MapError::Frozen`]; if the map is also read-only for
///   programs ([`read_only_for_programs`](MapDef::read_only_for_programs)), its values never change
///   again, because the verifier reads them as constants.
/// - [`as_any`](Map::as_any) returns `self`.
///
/// A host kind promises this with `unsafe impl`:
///
/// ```
/// use ebpf_vm::maps::{Map, MapDef, MapError, MapType};
///
/// /// A map that holds nothing.
/// struct Empty(MapDef);
///
/// // SAFETY: `lookup` never returns an address, and `regions` (the default) is empty.
/// unsafe impl Map for Empty {
///     fn def(&self) -> MapDef { self.0 }
///     fn lookup(&self, _: &[u8], _: usize) -> Option<*mut u8> { None }
///     fn update(&self, _: &[u8], _: &[u8], _: u64, _: usize) -> Result<(), MapError> { Err(MapError::Full) }
///     fn delete(&self, _: &[u8]) -> Result<(), MapError> { Err(MapError::NotFound) }
///     fn next_key(&self, _: Option<&[u8]>, _: &mut [u8]) -> Result<(), MapError> { Err(MapError::NotFound) }
///     fn as_any(&self) -> &dyn core::any::Any { self }
/// }
/// ```
///
/// Safe code cannot make that promise, so it cannot hand programs memory it does not own:
///
/// ```compile_fail,E0200
/// use ebpf_vm::maps::{Map, MapDef, MapError, MapType};
///
/// struct Empty(MapDef);
///
/// impl Map for Empty {
///     fn def(&self) -> MapDef { self.0 }
///     fn lookup(&self, _: &[u8], _: usize) -> Option<*mut u8> { None }
///     fn update(&self, _: &[u8], _: &[u8], _: u64, _: usize) -> Result<(), MapError> { Err(MapError::Full) }
///     fn delete(&self, _: &[u8]) -> Result<(), MapError> { Err(MapError::NotFound) }
///     fn next_key(&self, _: Option<&[u8]>, _: &mut [u8]) -> Result<(), MapError> { Err(MapError::NotFound) }
///     fn as_any(&self) -> &dyn core::any::Any { self }
/// }
/// ```
pub unsafe trait Map: Send + Sync + Any {
    /// The definition.
    fn def(&self) -> MapDef;

    /// Number of per-CPU slots (1 for shared kinds).
    fn cpus(&self) -> usize {
        1
    }

    /// Address of the value for `key` in slot `cpu` (ignored by shared kinds), stable while the map
    /// lives; `None` if absent. For kinds that track use (LRU), this counts as a use.
    fn lookup(&self, key: &[u8], cpu: usize) -> Option<*mut u8>;

    /// As [`lookup`](Map::lookup), for the host: not counted as a use (as the kernel's lookups from user
    /// space). The same contract holds for the address.
    fn peek(&self, key: &[u8], cpu: usize) -> Option<*mut u8> {
        self.lookup(key, cpu)
    }

    /// Creates or replaces the value for `key` (in slot `cpu`; for per-CPU kinds a new key starts
    /// zeroed in the other slots). `flags` is `BPF_ANY`, `BPF_NOEXIST` or `BPF_EXIST`.
    fn update(&self, key: &[u8], value: &[u8], flags: u64, cpu: usize) -> Result<(), MapError>;

    /// Deletes the entry for `key`.
    fn delete(&self, key: &[u8]) -> Result<(), MapError>;

    /// Writes the key after `key` (the first key for `None`) into `out`.
    fn next_key(&self, key: Option<&[u8]>, out: &mut [u8]) -> Result<(), MapError>;

    /// Host memory programs may access through this map's values (for checked mode).
    fn regions(&self) -> Vec<Region> {
        Vec::new()
    }

    /// Makes the map's values immutable from the host from now on, as the kernel's `BPF_MAP_FREEZE`:
    /// later updates fail with [`MapError::Frozen`]. Returns once no update is still in progress. A
    /// loader freezes `.rodata` this way before building programs, so that the verifier can read its
    /// `const volatile` configuration as constants. Kinds that cannot be frozen return
    /// [`MapError::Unsupported`] (the default).
    fn freeze(&self) -> Result<(), MapError> {
        Err(MapError::Unsupported)
    }

    /// Whether [`freeze`](Map::freeze) has made the values immutable.
    fn frozen(&self) -> bool {
        false
    }

    /// For a map of maps, the definition its inner maps have (see [`MapOfMaps`]).
    fn inner_def(&self) -> Option<MapDef> {
        None
    }

    /// The map as `Any`, to reach kind-specific operations.
    fn as_any(&self) -> &dyn Any;
}

impl dyn Map {
    /// A copy of the value for `key` in slot `cpu`.
    pub fn get(&self, key: &[u8], cpu: usize) -> Option<Vec<u8>> {
        let p = self.peek(key, cpu)?;
        let mut out = alloc::vec![0u8; self.def().value_size as usize];
        // SAFETY: `Map`'s contract: `p` addresses `value_size` bytes of live value storage, which everything
        // else accesses atomically.
        unsafe { storage::copy_out(p, &mut out) };
        Some(out)
    }

    /// All keys, in the map's iteration order.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        let mut cur = alloc::vec![0u8; self.def().key_size as usize];
        let mut prev: Option<Vec<u8>> = None;
        while self.next_key(prev.as_deref(), &mut cur).is_ok() {
            if keys.len() >= self.def().max_entries as usize {
                break; // a host map with a broken next_key must not loop forever
            }
            keys.push(cur.clone());
            prev = Some(cur.clone());
        }
        keys
    }

    /// The map as its concrete kind.
    pub fn downcast_ref<T: Map>(&self) -> Option<&T> {
        self.as_any().downcast_ref::<T>()
    }
}

/// A limit on the memory maps take together. Each map created with [`create_within`] is charged the
/// most its kind can ever hold (value storage of every CPU slot, keys and index entries), and creation
/// fails with [`MapError::OverBudget`] once the limit would be passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapBudget {
    limit: u64,
    used: u64,
}

impl Default for MapBudget {
    fn default() -> MapBudget {
        MapBudget::new(MapBudget::DEFAULT)
    }
}

impl MapBudget {
    /// The default limit for the maps of one object: 1 GiB.
    pub const DEFAULT: u64 = 1 << 30;

    /// A budget of `limit` bytes.
    pub const fn new(limit: u64) -> MapBudget {
        MapBudget { limit, used: 0 }
    }

    /// Bytes charged so far.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Bytes still available.
    pub fn remaining(&self) -> u64 {
        self.limit - self.used
    }

    /// Charges `bytes`, or fails without charging anything.
    pub fn charge(&mut self, bytes: u64) -> Result<(), MapError> {
        if bytes > self.remaining() {
            return Err(MapError::OverBudget { need: bytes, remaining: self.remaining() });
        }
        self.used += bytes;
        Ok(())
    }
}

/// Bytes of bookkeeping a hash map keeps per entry besides key and value (index, key copy, use clock).
const HASH_ENTRY_OVERHEAD: u64 = 64;

/// The most memory the built-in kind for `def` can ever take, in bytes.
pub fn footprint(def: &MapDef) -> u64 {
    let stride = (def.value_size as u64).div_ceil(8) * 8;
    let entries = def.max_entries as u64;
    let cpus = MAX_CPUS as u64;
    let key = def.key_size as u64 + HASH_ENTRY_OVERHEAD;
    match def.map_type {
        MapType::Array | MapType::ArrayOfMaps => stride.saturating_mul(entries),
        MapType::PerCpuArray => stride.saturating_mul(entries).saturating_mul(cpus),
        MapType::Hash | MapType::LruHash | MapType::LpmTrie | MapType::HashOfMaps => {
            entries.saturating_mul(stride + key)
        }
        MapType::PerCpuHash => entries.saturating_mul(stride.saturating_mul(cpus) + key),
        // Sparse: entries are set by the host (programs cannot update program arrays).
        MapType::ProgArray => 64,
        MapType::RingBuf => entries,
        MapType::PerfEventArray => {
            let buffers = if entries == 0 { cpus } else { entries.min(cpus) };
            buffers * DEFAULT_PERF_BUFFER as u64
        }
        MapType::Queue | MapType::Stack => (def.value_size as u64).saturating_mul(entries),
        MapType::BloomFilter => (entries.saturating_mul(BLOOM_HASHES as u64 * 10 / 7).max(64) / 8).saturating_mul(2),
        MapType::Other(_) => 0,
    }
}

/// Creates a built-in map for a definition, on its own (see [`create_within`] to share a budget).
pub fn create(def: MapDef) -> Result<Arc<dyn Map>, MapError> {
    create_within(def, &mut MapBudget::default())
}

/// Creates a built-in map for a definition, charging `budget` for the most it can take.
pub fn create_within(def: MapDef, budget: &mut MapBudget) -> Result<Arc<dyn Map>, MapError> {
    if let MapType::Other(n) = def.map_type {
        return Err(MapError::UnsupportedType(n));
    }
    let need = footprint(&def);
    if need > budget.remaining() {
        return Err(MapError::OverBudget { need, remaining: budget.remaining() });
    }
    let map: Arc<dyn Map> = match def.map_type {
        MapType::Array => Arc::new(ArrayMap::new(def)?),
        MapType::PerCpuArray => Arc::new(PerCpuArrayMap::new(def)?),
        MapType::Hash => Arc::new(HashMap::new(def, HashKind::Plain)?),
        MapType::LruHash => Arc::new(HashMap::new(def, HashKind::Lru)?),
        MapType::PerCpuHash => Arc::new(HashMap::new(def, HashKind::PerCpu)?),
        MapType::ProgArray => Arc::new(ProgArrayMap::new(def)?),
        MapType::RingBuf => Arc::new(RingBufMap::new(def)?),
        MapType::PerfEventArray => Arc::new(PerfEventArrayMap::new(def)?),
        MapType::Queue => Arc::new(QueueMap::new(def, Order::Fifo)?),
        MapType::Stack => Arc::new(QueueMap::new(def, Order::Lifo)?),
        MapType::BloomFilter => Arc::new(BloomFilterMap::new(def)?),
        MapType::LpmTrie => Arc::new(LpmTrieMap::new(def)?),
        // Made by `MapOfMaps::new`, which needs the inner maps' definition too.
        MapType::ArrayOfMaps | MapType::HashOfMaps => {
            return Err(MapError::InvalidDef("a map of maps needs the definition of its inner maps"))
        }
        MapType::Other(n) => return Err(MapError::UnsupportedType(n)),
    };
    budget.charge(need)?;
    Ok(map)
}

/// Map references are loaded into registers as `MAP_HANDLE_BASE | index`: a value no program can
/// dereference, which helpers turn back into the map at that index of the environment.
pub const MAP_HANDLE_BASE: u64 = 0xffff_ff00_0000_0000;

/// The handle a program holds for the map at `index` of its environment.
pub const fn handle(index: u32) -> u64 {
    MAP_HANDLE_BASE | index as u64
}

/// The index of the map a handle refers to, if the value is a handle.
pub fn handle_index(handle: u64) -> Option<u32> {
    if handle & MAP_HANDLE_BASE != MAP_HANDLE_BASE {
        return None;
    }
    u32::try_from(handle & !MAP_HANDLE_BASE).ok()
}

/// Largest key a map may have, in bytes.
pub const MAX_KEY_SIZE: u32 = 512;

/// Checks the limits every map kind shares: key size, and total value storage.
fn check_def(def: &MapDef, cpus: usize) -> Result<(), MapError> {
    if def.key_size > MAX_KEY_SIZE {
        return Err(MapError::InvalidDef("keys are larger than 512 bytes"));
    }
    let stride = (def.value_size as usize).div_ceil(8) * 8;
    let bytes = stride.checked_mul(def.max_entries as usize).and_then(|b| b.checked_mul(cpus));
    if bytes.is_none_or(|b| b > MAX_MAP_BYTES) || def.max_entries as usize * 4 > MAX_MAP_BYTES {
        return Err(MapError::InvalidDef("the map is larger than MAX_MAP_BYTES"));
    }
    Ok(())
}

fn check_key(def: &MapDef, key: &[u8]) -> Result<(), MapError> {
    if key.len() != def.key_size as usize {
        return Err(MapError::KeySize { got: key.len(), want: def.key_size });
    }
    Ok(())
}

fn check_value(def: &MapDef, value: &[u8]) -> Result<(), MapError> {
    if value.len() != def.value_size as usize {
        return Err(MapError::ValueSize { got: value.len(), want: def.value_size });
    }
    Ok(())
}

fn check_flags(flags: u64) -> Result<(), MapError> {
    if flags > BPF_EXIST {
        return Err(MapError::InvalidFlags(flags));
    }
    Ok(())
}
