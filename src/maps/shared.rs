//! Maps in shared memory (Linux): arrays, per-CPU arrays, hash maps and ring buffers whose whole state
//! (the definition, the hash index or the ring's positions, the lock and the values or records) lives
//! in one POSIX shared-memory object, at offsets from its start, so that every process that maps it
//! (wherever) sees one map.
//!
//! Another process can write anything into that memory at any time. Opening checks the header against
//! the object's size; after that, every index read from the memory is checked before it is used, every
//! probe loop is bounded, and the memory is only ever touched with atomic accesses: a process that
//! corrupts the map gets wrong answers or errors, never memory outside the map. Hash updates and
//! deletes, and ring-buffer reservations, take a spin lock in the shared memory that names the
//! holder's process: a lock whose holder has died is taken over; one held longer than a bounded wait
//! by a live process makes the writer fail ([`MapError::Busy`], or a full ring buffer).

use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::any::Any;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::{
    check_flags, check_key, check_value, Map, MapDef, MapError, MapType, RingBufMap, BPF_EXIST, BPF_NOEXIST, MAX_CPUS,
    MAX_KEY_SIZE,
};
use crate::memory::access::{self, Access};
use crate::memory::Region;

const MAGIC: u64 = u64::from_le_bytes(*b"EBPFVMSM");
const VERSION: u32 = 1;
/// Bytes of the header.
const HEADER: usize = 64;
/// Header fields' offsets.
const H_MAGIC: usize = 0;
const H_VERSION: usize = 8;
const H_TYPE: usize = 12;
const H_KEY: usize = 16;
const H_VALUE: usize = 20;
const H_ENTRIES: usize = 24;
const H_CPUS: usize = 28;
const H_SEED: usize = 32;
const H_LOCK: usize = 40;
const H_FREE_TOP: usize = 44;
/// LRU hash maps: the clock hand, the next slot eviction looks at.
const H_HAND: usize = 48;
// A ring buffer's control words take the header from its lock field on.
const _: () = assert!(H_LOCK % 8 == 0 && H_LOCK + super::ringbuf::CONTROL_BYTES <= HEADER);
/// Bucket states besides `slot + 2`.
const EMPTY: u32 = 0;
const TOMBSTONE: u32 = 1;
/// Most spins a writer waits for the lock.
const LOCK_SPINS: u32 = 1 << 22;

/// Where each part of a map lies in its memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    hash: bool,
    /// Whether a full map evicts (LRU hash): each slot has a referenced flag, set by program lookups
    /// and updates and cleared by the clock hand, which evicts the first slot it finds unreferenced.
    lru: bool,
    cpus: usize,
    key_stride: usize,
    stride: usize,
    entries: usize,
    buckets: usize,
    /// Offsets of the bucket array, the free stack, the used flags, the referenced flags (LRU), the
    /// keys and the values.
    at_buckets: usize,
    at_free: usize,
    at_used: usize,
    at_refs: usize,
    at_keys: usize,
    at_values: usize,
    len: usize,
}

fn round8(n: usize) -> usize {
    (n + 7) & !7
}

impl Layout {
    fn of(def: &MapDef) -> Result<Layout, MapError> {
        let (hash, cpus) = match def.map_type {
            MapType::Array => (false, 1),
            MapType::PerCpuArray => (false, MAX_CPUS),
            MapType::Hash | MapType::LruHash => (true, 1),
            MapType::PerCpuHash => (true, MAX_CPUS),
            _ => return Err(MapError::InvalidDef("shared memory holds arrays, per-CPU arrays and (LRU) hash maps")),
        };
        let lru = def.map_type == MapType::LruHash;
        if def.value_size == 0 || def.max_entries == 0 || (hash && def.key_size == 0) {
            return Err(MapError::InvalidDef("shared maps need values, entries and (hash maps) keys"));
        }
        if (!hash && def.key_size != 4) || def.key_size > MAX_KEY_SIZE {
            return Err(MapError::InvalidDef("array keys are 4 bytes; hash keys at most MAX_KEY_SIZE"));
        }
        let too_large = MapError::InvalidDef("the map is larger than MAX_MAP_BYTES");
        let entries = def.max_entries as usize;
        let stride = round8(def.value_size as usize);
        let key_stride = if hash { round8(def.key_size as usize) } else { 0 };
        let buckets = if hash {
            entries.checked_mul(2).and_then(usize::checked_next_power_of_two).ok_or(too_large.clone())?
        } else {
            0
        };
        let words = |n: usize| round8(n * 4);
        let at_buckets = HEADER;
        let at_free = at_buckets + words(buckets);
        let at_used = at_free + if hash { words(entries) } else { 0 };
        let at_refs = at_used + if hash { words(entries) } else { 0 };
        let at_keys = at_refs + if lru { words(entries) } else { 0 };
        let at_values =
            key_stride.checked_mul(entries).and_then(|k| at_keys.checked_add(k)).ok_or(too_large.clone())?;
        let values = stride.checked_mul(entries).and_then(|v| v.checked_mul(cpus)).ok_or(too_large.clone())?;
        let len = at_values.checked_add(values).ok_or(too_large.clone())?;
        if len > super::MAX_MAP_BYTES {
            return Err(too_large);
        }
        Ok(Layout {
            hash,
            lru,
            cpus,
            key_stride,
            stride,
            entries,
            buckets,
            at_buckets,
            at_free,
            at_used,
            at_refs,
            at_keys,
            at_values,
            len,
        })
    }
}

/// A mapping of a shared-memory object.
struct Mapping {
    base: *mut u8,
    len: usize,
}

// SAFETY: the mapping is shared memory accessed only atomically (see the module's description).
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: mapped by `map_object` with this length, unmapped only here.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// Maps `len` bytes of the object `fd` refers to.
fn map_object(fd: i32, len: usize) -> Result<Mapping, MapError> {
    // SAFETY: a new shared mapping of an open descriptor; the kernel picks the address.
    let p =
        unsafe { libc::mmap(core::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0) };
    if p == libc::MAP_FAILED {
        return Err(MapError::NoMemory(len as u64));
    }
    Ok(Mapping { base: p.cast(), len })
}

/// The object's name as a C string: `/` and then 1 to 200 characters, none of them `/` or NUL.
fn c_name(name: &str) -> Result<Vec<u8>, MapError> {
    let rest = name.strip_prefix('/').ok_or(MapError::InvalidDef("shared map names start with `/`"))?;
    if rest.is_empty() || rest.len() > 200 || rest.bytes().any(|b| b == b'/' || b == 0) {
        return Err(MapError::InvalidDef("shared map names are `/` and 1 to 200 characters without `/`"));
    }
    let mut c = Vec::from(name.as_bytes());
    c.push(0);
    Ok(c)
}

/// Creates the shared-memory object `name`, `len` zeroed bytes, and maps it.
fn create_object(name: &str, len: usize) -> Result<Mapping, MapError> {
    let c = c_name(name)?;
    // SAFETY: a NUL-terminated name; the descriptor is closed below.
    let fd = unsafe {
        libc::shm_open(c.as_ptr().cast(), libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_CLOEXEC, 0o600)
    };
    if fd < 0 {
        return Err(MapError::InvalidDef("the shared map's name cannot be created (does it exist?)"));
    }
    // SAFETY: our descriptor; a new object is zero-filled to this length.
    let sized = unsafe { libc::ftruncate(fd, len as libc::off_t) } == 0;
    let memory = if sized { map_object(fd, len) } else { Err(MapError::NoMemory(len as u64)) };
    // SAFETY: opened above.
    unsafe { libc::close(fd) };
    if memory.is_err() {
        // SAFETY: the name just created.
        unsafe { libc::shm_unlink(c.as_ptr().cast()) };
    }
    memory
}

/// Writes the header of a new map of `def` into `memory`, the magic last: an opener that sees the
/// magic sees the rest.
fn publish(memory: &Mapping, def: &MapDef, cpus: usize) {
    let w32 = |at: usize, v: u32| {
        // SAFETY: a header field: aligned, inside the mapping (at least HEADER bytes long).
        unsafe { AtomicU32::from_ptr(memory.base.add(at).cast()) }.store(v, Ordering::Relaxed)
    };
    w32(H_VERSION, VERSION);
    w32(H_TYPE, def.map_type.raw());
    w32(H_KEY, def.key_size);
    w32(H_VALUE, def.value_size);
    w32(H_ENTRIES, def.max_entries);
    w32(H_CPUS, cpus as u32);
    // SAFETY: as above.
    unsafe { AtomicU64::from_ptr(memory.base.add(H_SEED).cast()) }.store(seed(), Ordering::Relaxed);
    // SAFETY: as above.
    unsafe { AtomicU64::from_ptr(memory.base.add(H_MAGIC).cast()) }.store(MAGIC, Ordering::Release);
}

/// Opens and maps the object `name`, and reads the definition and CPU count its header gives (not yet
/// checked against its size).
fn open_object(name: &str) -> Result<(MapDef, u32, Mapping), MapError> {
    let c = c_name(name)?;
    // SAFETY: a NUL-terminated name; the descriptor is closed below.
    let fd = unsafe { libc::shm_open(c.as_ptr().cast(), libc::O_RDWR | libc::O_CLOEXEC, 0) };
    if fd < 0 {
        return Err(MapError::NotFound);
    }
    // SAFETY: a zeroed stat is valid; our descriptor.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: as above.
    let ok = unsafe { libc::fstat(fd, &mut st) } == 0 && st.st_size >= HEADER as i64;
    let memory = if ok { map_object(fd, st.st_size as usize) } else { Err(MapError::InvalidDef("not a shared map")) };
    // SAFETY: opened above.
    unsafe { libc::close(fd) };
    let memory = memory?;
    let read32 = |at: usize| {
        // SAFETY: inside the mapping (at most 64 bytes in, and it has at least that), aligned.
        unsafe { AtomicU32::from_ptr(memory.base.add(at).cast()) }.load(Ordering::Acquire)
    };
    // SAFETY: as above.
    let magic = unsafe { AtomicU64::from_ptr(memory.base.cast()) }.load(Ordering::Acquire);
    if magic != MAGIC || read32(H_VERSION) != VERSION {
        return Err(MapError::InvalidDef("not a shared map of this version"));
    }
    let def = MapDef {
        map_type: MapType::from_raw(read32(H_TYPE)),
        key_size: read32(H_KEY),
        value_size: read32(H_VALUE),
        max_entries: read32(H_ENTRIES),
        flags: 0,
    };
    Ok((def, read32(H_CPUS), memory))
}

/// A mapping that removes its name when dropped, if asked to.
struct Named {
    _memory: Mapping,
    name: Option<Vec<u8>>,
}

impl Drop for Named {
    fn drop(&mut self) {
        if let Some(c) = &self.name {
            // SAFETY: a NUL-terminated name.
            unsafe { libc::shm_unlink(c.as_ptr().cast()) };
        }
    }
}

/// The ring buffer of `def` in `memory` (its header checked): control words from the header's lock
/// field on, data after the header.
fn ring_buffer(def: MapDef, memory: Mapping, name: &str, remove_on_drop: bool) -> RingBufMap {
    let control = memory.base.wrapping_add(H_LOCK);
    let data = memory.base.wrapping_add(HEADER);
    let name = if remove_on_drop { c_name(name).ok() } else { None };
    // SAFETY: the mapping is HEADER + size bytes (checked by the callers); the control words are
    // `H_LOCK .. H_LOCK + CONTROL_BYTES`, inside the header (8-aligned for the positions), the data the
    // `size` bytes after it; the mapping moves into the buffer, which keeps it. Other processes'
    // writes are checked before use (the buffer's own contract).
    unsafe {
        RingBufMap::in_memory(
            def,
            control,
            data,
            alloc::boxed::Box::new(Named { _memory: memory, name }),
            std::process::id(),
            Some(process_gone),
        )
    }
}

/// Whether the process a lock word names (by its id) no longer exists, or the word names no process.
fn process_gone(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return true;
    }
    // SAFETY: signal 0 sends nothing: it only asks whether the process exists (a positive id, so
    // never a process group).
    let r = unsafe { libc::kill(pid as i32, 0) };
    r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// An array, per-CPU array or (per-CPU, LRU) hash map in a POSIX shared-memory object (`/dev/shm` on Linux), which
/// other processes open by name.
pub struct SharedMap {
    def: MapDef,
    layout: Layout,
    memory: Mapping,
    name: String,
    /// Whether dropping this handle removes the name (the creator's choice).
    unlink: bool,
}

impl SharedMap {
    /// Creates the shared-memory object `name` (`/` and a name without `/`) holding an empty map of
    /// `def` (an array, per-CPU array, hash, per-CPU hash or LRU hash). Fails if the name exists. With
    /// `remove_on_drop`, dropping this handle removes the name (processes that opened it keep it).
    pub fn create(name: &str, def: MapDef, remove_on_drop: bool) -> Result<SharedMap, MapError> {
        super::check_def(
            &def,
            if matches!(def.map_type, MapType::PerCpuArray | MapType::PerCpuHash) { MAX_CPUS } else { 1 },
        )?;
        let layout = Layout::of(&def)?;
        let memory = create_object(name, layout.len)?;
        let map = SharedMap { def, layout, memory, name: name.into(), unlink: remove_on_drop };
        if layout.hash {
            // Every slot free: the stack holds them all, slot 0 on top.
            for i in 0..layout.entries {
                map.free(i).store((layout.entries - 1 - i) as u32, Ordering::Relaxed);
            }
            map.word32(H_FREE_TOP).store(layout.entries as u32, Ordering::Relaxed);
        }
        publish(&map.memory, &def, layout.cpus);
        Ok(map)
    }

    /// Creates the shared-memory object `name` holding an empty ring buffer of `def`: producers in
    /// every process that opens it (with [`open_ring_buffer`](SharedMap::open_ring_buffer)) serialise
    /// on a lock in the object, and one consumer, in any of them, reads the records. Fails if the name
    /// exists. With `remove_on_drop`, dropping the buffer removes the name.
    pub fn create_ring_buffer(name: &str, def: MapDef, remove_on_drop: bool) -> Result<RingBufMap, MapError> {
        let size = RingBufMap::check_def(&def)? as usize;
        let memory = create_object(name, HEADER + size)?;
        publish(&memory, &def, 1);
        Ok(ring_buffer(def, memory, name, remove_on_drop))
    }

    /// Creates a shared map of any kind this module holds ([`create`](SharedMap::create) or
    /// [`create_ring_buffer`](SharedMap::create_ring_buffer)).
    pub fn create_any(name: &str, def: MapDef, remove_on_drop: bool) -> Result<Arc<dyn Map>, MapError> {
        Ok(match def.map_type {
            MapType::RingBuf => Arc::new(SharedMap::create_ring_buffer(name, def, remove_on_drop)?),
            _ => Arc::new(SharedMap::create(name, def, remove_on_drop)?),
        })
    }

    /// Whether shared memory can hold a map of this kind: arrays, per-CPU arrays, hash, per-CPU hash
    /// and LRU hash maps, and ring buffers.
    pub fn can_hold(map_type: MapType) -> bool {
        matches!(
            map_type,
            MapType::Array
                | MapType::PerCpuArray
                | MapType::Hash
                | MapType::PerCpuHash
                | MapType::LruHash
                | MapType::RingBuf
        )
    }

    /// Opens the map (not a ring buffer) another process created as `name`.
    pub fn open(name: &str) -> Result<SharedMap, MapError> {
        let (def, cpus, memory) = open_object(name)?;
        let layout = Layout::of(&def)?;
        if layout.len != memory.len || layout.cpus as u32 != cpus {
            return Err(MapError::InvalidDef("the shared map's header does not match its size"));
        }
        Ok(SharedMap { def, layout, memory, name: name.into(), unlink: false })
    }

    /// Opens the ring buffer another process created as `name`.
    pub fn open_ring_buffer(name: &str) -> Result<RingBufMap, MapError> {
        let (def, cpus, memory) = open_object(name)?;
        if def.map_type != MapType::RingBuf {
            return Err(MapError::InvalidDef("the shared map is not a ring buffer"));
        }
        let size = RingBufMap::check_def(&def)? as usize;
        if memory.len != HEADER + size || cpus != 1 {
            return Err(MapError::InvalidDef("the shared map's header does not match its size"));
        }
        Ok(ring_buffer(def, memory, name, false))
    }

    /// Opens the shared map `name`, whatever its kind.
    pub fn open_any(name: &str) -> Result<Arc<dyn Map>, MapError> {
        let (def, _, _) = open_object(name)?;
        Ok(match def.map_type {
            MapType::RingBuf => Arc::new(SharedMap::open_ring_buffer(name)?),
            _ => Arc::new(SharedMap::open(name)?),
        })
    }

    /// The shared-memory object's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name a map called `map` of process `pid` is given when an agent shares it:
    /// `/ebpf-vm.PID.NAME`, with any `/` in the map's name made `_`.
    pub fn process_map_name(pid: u32, map: &str) -> String {
        alloc::format!("/ebpf-vm.{pid}.{}", map.replace('/', "_"))
    }

    /// The maps of process `pid` shared under [`process_map_name`](SharedMap::process_map_name)s, as
    /// (map name, object name) pairs sorted by map name.
    pub fn of_process(pid: u32) -> Vec<(String, String)> {
        let prefix = alloc::format!("ebpf-vm.{pid}.");
        let mut out: Vec<(String, String)> = std::fs::read_dir("/dev/shm")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let file = e.file_name().into_string().ok()?;
                let map = file.strip_prefix(&prefix)?.to_string();
                Some((map, alloc::format!("/{file}")))
            })
            .collect();
        out.sort();
        out
    }

    /// Removes the name `name` (processes that mapped the object keep it until they unmap it).
    pub fn unlink(name: &str) -> Result<(), MapError> {
        let c = c_name(name)?;
        // SAFETY: a NUL-terminated name.
        match unsafe { libc::shm_unlink(c.as_ptr().cast()) } {
            0 => Ok(()),
            _ => Err(MapError::NotFound),
        }
    }

    fn word32(&self, at: usize) -> &AtomicU32 {
        debug_assert!(at % 4 == 0 && at + 4 <= self.memory.len);
        // SAFETY: callers pass aligned offsets inside the mapping (header fields and the u32 arrays of
        // the layout); shared memory is accessed only atomically.
        unsafe { AtomicU32::from_ptr(self.memory.base.add(at).cast()) }
    }

    fn word64(&self, at: usize) -> &AtomicU64 {
        debug_assert!(at % 8 == 0 && at + 8 <= self.memory.len);
        // SAFETY: as for `word32`.
        unsafe { AtomicU64::from_ptr(self.memory.base.add(at).cast()) }
    }

    fn bucket(&self, i: usize) -> &AtomicU32 {
        self.word32(self.layout.at_buckets + 4 * (i % self.layout.buckets))
    }

    fn free(&self, i: usize) -> &AtomicU32 {
        self.word32(self.layout.at_free + 4 * (i % self.layout.entries))
    }

    fn used(&self, slot: usize) -> &AtomicU32 {
        self.word32(self.layout.at_used + 4 * (slot % self.layout.entries))
    }

    /// Marks `slot` as used lately (LRU maps; nothing for the others).
    fn touch(&self, slot: usize) {
        if self.layout.lru {
            self.word32(self.layout.at_refs + 4 * (slot % self.layout.entries)).store(1, Ordering::Relaxed);
        }
    }

    /// Whether `slot` was used since the clock hand last passed it, clearing the mark (LRU maps).
    fn take_referenced(&self, slot: usize) -> bool {
        self.word32(self.layout.at_refs + 4 * (slot % self.layout.entries)).swap(0, Ordering::Relaxed) != 0
    }

    /// Under the lock, in a full LRU map: the slot of the entry not used for longest as the clock
    /// sees it (two turns at most), its key removed from the index. `None` if no slot is in use (a
    /// corrupted map).
    fn evict(&self) -> Option<usize> {
        let entries = self.layout.entries;
        for _ in 0..2 * entries {
            let hand = self.word32(H_HAND).load(Ordering::Relaxed) as usize % entries;
            self.word32(H_HAND).store(((hand + 1) % entries) as u32, Ordering::Relaxed);
            if self.used(hand).load(Ordering::Acquire) == 0 || self.take_referenced(hand) {
                continue;
            }
            let mut key = [0u8; MAX_KEY_SIZE as usize];
            let key = &mut key[..self.def.key_size as usize];
            // SAFETY: the slot's key bytes lie in the mapping, which is accessed atomically.
            unsafe { access::copy_out(self.key_at(hand), key, Access::Shared) };
            if let (Some((bucket, slot)), _) = self.find(key) {
                if slot == hand {
                    self.bucket(bucket).store(TOMBSTONE, Ordering::Release);
                }
            }
            return Some(hand);
        }
        None
    }

    /// The address of slot `slot`'s key.
    fn key_at(&self, slot: usize) -> *mut u8 {
        self.memory.base.wrapping_add(self.layout.at_keys + self.layout.key_stride * (slot % self.layout.entries))
    }

    /// The address of entry `i`'s value in CPU slot `cpu`.
    fn value_at(&self, i: usize, cpu: usize) -> *mut u8 {
        let i = (cpu % self.layout.cpus) * self.layout.entries + i % self.layout.entries;
        self.memory.base.wrapping_add(self.layout.at_values + self.layout.stride * i)
    }

    fn hash(&self, key: &[u8]) -> usize {
        let mut h = 0xcbf2_9ce4_8422_2325u64 ^ self.word64(H_SEED).load(Ordering::Relaxed);
        for &b in key {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
        (h ^ (h >> 29)) as usize
    }

    /// Whether slot `slot` holds `key`.
    fn holds(&self, slot: usize, key: &[u8]) -> bool {
        let mut stored = [0u8; MAX_KEY_SIZE as usize];
        let stored = &mut stored[..key.len()];
        // SAFETY: the slot's key bytes lie in the mapping (`key_at` keeps the index in range), which is
        // accessed atomically.
        unsafe { access::copy_out(self.key_at(slot), stored, Access::Shared) };
        stored == key
    }

    /// The bucket holding `key` and its slot, or the first reusable bucket on its probe path.
    fn find(&self, key: &[u8]) -> (Option<(usize, usize)>, Option<usize>) {
        let start = self.hash(key);
        let mut reusable = None;
        for step in 0..self.layout.buckets {
            let b = (start + step) % self.layout.buckets;
            match self.bucket(b).load(Ordering::Acquire) {
                EMPTY => return (None, reusable.or(Some(b))),
                TOMBSTONE => reusable = reusable.or(Some(b)),
                s => {
                    let slot = (s - 2) as usize;
                    if slot < self.layout.entries && self.holds(slot, key) {
                        return (Some((b, slot)), reusable);
                    }
                }
            }
        }
        (None, reusable)
    }

    /// Runs `f` with the map's lock held. The lock word holds the holder's process id: a lock whose
    /// holder is gone (it died while writing) is taken over, leaving what it half wrote (at worst a
    /// slot lost, or a key that next_key lists and lookups do not find).
    fn locked<T>(&self, f: impl FnOnce() -> Result<T, MapError>) -> Result<T, MapError> {
        let lock = self.word32(H_LOCK);
        let me = std::process::id();
        let mut spins = 0u32;
        while let Err(holder) = lock.compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed) {
            spins += 1;
            if spins > LOCK_SPINS {
                return Err(MapError::Busy);
            }
            if holder != 0 && spins % 4096 == 0 && process_gone(holder) {
                if lock.compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                    break;
                }
                continue;
            }
            if spins % 64 == 0 {
                std::thread::yield_now();
            } else {
                core::hint::spin_loop();
            }
        }
        let r = f();
        lock.store(0, Ordering::Release);
        r
    }

    /// The slot to use for `cpu`: maps that are not per-CPU have one, whatever the CPU.
    fn cpu(&self, cpu: usize) -> Option<usize> {
        match self.layout.cpus {
            1 => Some(0),
            n => (cpu < n).then_some(cpu),
        }
    }

    /// The address of `key`'s value in CPU slot `cpu`; with `used`, an LRU map counts it as a use.
    fn value_of(&self, key: &[u8], cpu: usize, used: bool) -> Option<*mut u8> {
        let cpu = self.cpu(cpu)?;
        if key.len() != self.def.key_size as usize {
            return None;
        }
        if !self.layout.hash {
            return Some(self.value_at(self.array_index(key)?, cpu));
        }
        // Lookups do not lock: a bucket read is atomic, and a stale answer is a value slot, always
        // inside the map.
        let (found, _) = self.find(key);
        found.map(|(_, slot)| {
            if used {
                self.touch(slot);
            }
            self.value_at(slot, cpu)
        })
    }

    fn array_index(&self, key: &[u8]) -> Option<usize> {
        let k = u32::from_ne_bytes(key.try_into().ok()?) as usize;
        (k < self.layout.entries).then_some(k)
    }
}

/// A seed for the hash, different in each map.
fn seed() -> u64 {
    let mut t: libc::timespec = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is writable.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    let x = (t.tv_sec as u64).wrapping_mul(1_000_000_007) ^ (t.tv_nsec as u64) ^ (std::process::id() as u64) << 32;
    x.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        if self.unlink {
            if let Ok(c) = c_name(&self.name) {
                // SAFETY: a NUL-terminated name.
                unsafe { libc::shm_unlink(c.as_ptr().cast()) };
            }
        }
    }
}

// SAFETY: `lookup` returns addresses of values inside the mapping (indices are reduced modulo the
// layout's counts), which lives as long as the map and never moves; `regions` is exactly the values.
// The map's own code touches the memory only atomically.
unsafe impl Map for SharedMap {
    fn def(&self) -> MapDef {
        self.def
    }

    fn cpus(&self) -> usize {
        self.layout.cpus
    }

    fn lookup(&self, key: &[u8], cpu: usize) -> Option<*mut u8> {
        self.value_of(key, cpu, true)
    }

    fn peek(&self, key: &[u8], cpu: usize) -> Option<*mut u8> {
        // The host's reads: not a use.
        self.value_of(key, cpu, false)
    }

    fn update(&self, key: &[u8], value: &[u8], flags: u64, cpu: usize) -> Result<(), MapError> {
        check_flags(flags)?;
        check_key(&self.def, key)?;
        check_value(&self.def, value)?;
        let cpu = self.cpu(cpu).ok_or(MapError::OutOfRange(cpu as u32))?;
        if !self.layout.hash {
            let i = self
                .array_index(key)
                .ok_or(MapError::OutOfRange(u32::from_ne_bytes(key.try_into().unwrap_or_default())))?;
            if flags == BPF_NOEXIST {
                return Err(MapError::Exists);
            }
            // SAFETY: a value inside the mapping, accessed atomically.
            unsafe { access::copy_in(self.value_at(i, cpu), value, Access::Shared) };
            return Ok(());
        }
        self.locked(|| {
            let (found, reusable) = self.find(key);
            let slot = match found {
                Some(_) if flags == BPF_NOEXIST => return Err(MapError::Exists),
                Some((_, slot)) => {
                    self.touch(slot);
                    slot
                }
                None if flags == BPF_EXIST => return Err(MapError::NotFound),
                None => {
                    let bucket = reusable.ok_or(MapError::Full)?;
                    let top = self.word32(H_FREE_TOP).load(Ordering::Acquire) as usize;
                    let slot = if top == 0 && self.layout.lru {
                        // Full: the clock's choice makes room.
                        self.evict().ok_or(MapError::Full)?
                    } else {
                        if top == 0 || top > self.layout.entries {
                            return Err(MapError::Full);
                        }
                        let slot = self.free(top - 1).load(Ordering::Acquire) as usize;
                        if slot >= self.layout.entries || self.used(slot).load(Ordering::Acquire) != 0 {
                            return Err(MapError::Full);
                        }
                        self.word32(H_FREE_TOP).store((top - 1) as u32, Ordering::Release);
                        slot
                    };
                    self.used(slot).store(1, Ordering::Release);
                    self.touch(slot);
                    // SAFETY: the slot's key and values lie in the mapping, accessed atomically.
                    unsafe {
                        access::copy_in(self.key_at(slot), key, Access::Shared);
                        for c in 0..self.layout.cpus {
                            access::zero(self.value_at(slot, c), self.layout.stride, Access::Shared);
                        }
                    }
                    self.bucket(bucket).store(slot as u32 + 2, Ordering::Release);
                    slot
                }
            };
            // SAFETY: as above.
            unsafe { access::copy_in(self.value_at(slot, cpu), value, Access::Shared) };
            Ok(())
        })
    }

    fn delete(&self, key: &[u8]) -> Result<(), MapError> {
        check_key(&self.def, key)?;
        if !self.layout.hash {
            return Err(MapError::CannotDelete);
        }
        self.locked(|| {
            let (Some((bucket, slot)), _) = self.find(key) else { return Err(MapError::NotFound) };
            self.bucket(bucket).store(TOMBSTONE, Ordering::Release);
            self.used(slot).store(0, Ordering::Release);
            if self.layout.lru {
                self.take_referenced(slot);
            }
            let top = self.word32(H_FREE_TOP).load(Ordering::Acquire) as usize;
            if top < self.layout.entries {
                self.free(top).store(slot as u32, Ordering::Release);
                self.word32(H_FREE_TOP).store(top as u32 + 1, Ordering::Release);
            }
            Ok(())
        })
    }

    fn next_key(&self, key: Option<&[u8]>, out: &mut [u8]) -> Result<(), MapError> {
        if out.len() != self.def.key_size as usize {
            return Err(MapError::KeySize { got: out.len(), want: self.def.key_size });
        }
        if !self.layout.hash {
            let next = match key.and_then(|k| self.array_index(k)) {
                Some(i) => i + 1,
                None => 0,
            };
            if next >= self.layout.entries {
                return Err(MapError::NotFound);
            }
            out.copy_from_slice(&(next as u32).to_ne_bytes());
            return Ok(());
        }
        // In slot order, from the slot after `key`'s (the first if it is absent).
        let from = match key.filter(|k| k.len() == out.len()).map(|k| self.find(k).0) {
            Some(Some((_, slot))) => slot + 1,
            _ => 0,
        };
        let slot = (from..self.layout.entries)
            .find(|&s| self.used(s).load(Ordering::Acquire) != 0)
            .ok_or(MapError::NotFound)?;
        // SAFETY: the slot's key lies in the mapping, accessed atomically.
        unsafe { access::copy_out(self.key_at(slot), out, Access::Shared) };
        Ok(())
    }

    fn regions(&self) -> Vec<Region> {
        let start = self.memory.base.wrapping_add(self.layout.at_values).expose_provenance() as u64;
        let len = (self.layout.stride * self.layout.entries * self.layout.cpus) as u64;
        alloc::vec![Region { start, len, writable: !self.def.read_only_for_programs() }]
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
