//! Queues and stacks (`BPF_MAP_TYPE_QUEUE`, `BPF_MAP_TYPE_STACK`): values without keys, pushed and
//! popped or peeked in FIFO or LIFO order (`bpf_map_push_elem`, `bpf_map_pop_elem`,
//! `bpf_map_peek_elem`). Values are copied in and out: programs never hold a pointer into them.

use alloc::vec::Vec;
use core::any::Any;

use spin::Mutex;

use super::{check_value, Map, MapDef, MapError, BPF_EXIST};

/// Which end `pop` and `peek` take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// First in, first out (a queue).
    Fifo,
    /// Last in, first out (a stack).
    Lifo,
}

/// The values, oldest first: `len` of them in a ring of `max_entries` slots from `head`.
struct Ring {
    bytes: Vec<u8>,
    head: usize,
    len: usize,
}

/// A queue or a stack of `max_entries` values of `value_size` bytes; keys are 0 bytes.
pub struct QueueMap {
    def: MapDef,
    order: Order,
    ring: Mutex<Ring>,
}

impl QueueMap {
    /// An empty queue (`Order::Fifo`) or stack (`Order::Lifo`). The definition needs no key, a value
    /// size and a capacity; the flags may only be 0.
    pub fn new(def: MapDef, order: Order) -> Result<QueueMap, MapError> {
        if def.key_size != 0 || def.value_size == 0 || def.max_entries == 0 {
            return Err(MapError::InvalidDef("queues and stacks have no key, and a value size and capacity"));
        }
        super::check_def(&def, 1)?;
        let size = (def.value_size as usize)
            .checked_mul(def.max_entries as usize)
            .ok_or(MapError::InvalidDef("the map is larger than MAX_MAP_BYTES"))?;
        let mut bytes = Vec::new();
        bytes.try_reserve_exact(size).map_err(|_| MapError::NoMemory(size as u64))?;
        bytes.resize(size, 0);
        Ok(QueueMap { def, order, ring: Mutex::new(Ring { bytes, head: 0, len: 0 }) })
    }

    /// Whether this is a queue or a stack.
    pub fn order(&self) -> Order {
        self.order
    }

    /// Adds `value`. When the map is full: with `BPF_EXIST` the oldest value makes room (as the
    /// kernel's), else [`MapError::Full`].
    pub fn push(&self, value: &[u8], flags: u64) -> Result<(), MapError> {
        check_value(&self.def, value)?;
        if flags & !BPF_EXIST != 0 {
            return Err(MapError::InvalidFlags(flags));
        }
        let cap = self.def.max_entries as usize;
        let size = value.len();
        let mut r = self.ring.lock();
        if r.len == cap {
            if flags & BPF_EXIST == 0 {
                return Err(MapError::Full);
            }
            r.head = (r.head + 1) % cap;
            r.len -= 1;
        }
        let at = (r.head + r.len) % cap * size;
        r.bytes[at..at + size].copy_from_slice(value);
        r.len += 1;
        Ok(())
    }

    /// Takes the next value (the oldest of a queue, the newest of a stack) into `out`.
    pub fn pop(&self, out: &mut [u8]) -> Result<(), MapError> {
        self.take(out, true)
    }

    /// Copies the next value into `out` and leaves it there.
    pub fn peek(&self, out: &mut [u8]) -> Result<(), MapError> {
        self.take(out, false)
    }

    /// Copies of the values held, in the order `pop` would take them.
    pub fn values(&self) -> Vec<Vec<u8>> {
        let cap = self.def.max_entries as usize;
        let size = self.def.value_size as usize;
        let r = self.ring.lock();
        let slot = |k: usize| (r.head + k) % cap;
        let at = |s: usize| r.bytes[s * size..(s + 1) * size].to_vec();
        match self.order {
            Order::Fifo => (0..r.len).map(|k| at(slot(k))).collect(),
            Order::Lifo => (0..r.len).rev().map(|k| at(slot(k))).collect(),
        }
    }

    /// The number of values held.
    pub fn len(&self) -> usize {
        self.ring.lock().len
    }

    /// Whether no value is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn take(&self, out: &mut [u8], remove: bool) -> Result<(), MapError> {
        check_value(&self.def, out)?;
        let cap = self.def.max_entries as usize;
        let size = out.len();
        let mut r = self.ring.lock();
        if r.len == 0 {
            return Err(MapError::NotFound);
        }
        let slot = match self.order {
            Order::Fifo => r.head,
            Order::Lifo => (r.head + r.len - 1) % cap,
        };
        out.copy_from_slice(&r.bytes[slot * size..(slot + 1) * size]);
        if remove {
            if self.order == Order::Fifo {
                r.head = (r.head + 1) % cap;
            }
            r.len -= 1;
        }
        Ok(())
    }
}

// SAFETY: `lookup` never returns a pointer and `regions` is empty: values are only copied.
unsafe impl Map for QueueMap {
    fn def(&self) -> MapDef {
        self.def
    }

    fn lookup(&self, _: &[u8], _: usize) -> Option<*mut u8> {
        None
    }

    /// Pushes (the key is empty), as `bpf_map_update_elem` on a queue does in the kernel.
    fn update(&self, key: &[u8], value: &[u8], flags: u64, _: usize) -> Result<(), MapError> {
        if !key.is_empty() {
            return Err(MapError::KeySize { got: key.len(), want: 0 });
        }
        self.push(value, flags)
    }

    fn delete(&self, _: &[u8]) -> Result<(), MapError> {
        Err(MapError::Unsupported)
    }

    fn next_key(&self, _: Option<&[u8]>, _: &mut [u8]) -> Result<(), MapError> {
        Err(MapError::Unsupported)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
