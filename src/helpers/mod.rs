//! Helper functions: what a BPF `call` reaches. A helper takes `r1`..`r5`, returns `r0`, and reaches
//! the program's memory only through its [`CallContext`], which applies the execution's memory rules.
//!
//! Every helper carries a [`HelperSig`] that tells the verifier the kind of each argument and of the
//! result. The interpreter and the JIT call the very same function.

pub mod standard;

use alloc::borrow::Cow;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;

use crate::maps::Map;
use crate::memory::access::{self, Access};
use crate::memory::{Grant, Grants, MemoryMap, Region};

/// The kind of one helper argument, as the verifier will check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgKind {
    /// The argument is not used.
    Unused,
    /// Any number.
    Scalar,
    /// A number the helper may read, or nothing: an unwritten register is allowed (the helper then
    /// reads an unspecified number), a pointer is not. `bpf_trace_printk`'s values, of which a format
    /// uses as many as it names, as the kernel's verifier leaves them unchecked.
    OptionalScalar,
    /// Pointer to a map.
    MapPtr,
    /// Pointer to a map whose entries the helper changes (refused for maps programs may only read).
    MapMut,
    /// Pointer to a key of the map in the previous map argument.
    MapKey,
    /// Pointer to a value of the map in the previous map argument.
    MapValue,
    /// Pointer to memory for a value of the map in the previous map argument, which the helper
    /// writes (`bpf_map_pop_elem`'s destination).
    MapValueOut,
    /// Pointer to memory the helper reads; its size is the next argument.
    ReadMem,
    /// Pointer to memory the helper writes; its size is the next argument.
    WriteMem,
    /// The size of the memory in the previous argument.
    MemSize,
    /// Pointer to the program's context.
    Context,
    /// Pointer to a map of this kind.
    MapOf(crate::maps::MapType),
    /// A ring-buffer record the program reserved and still holds, at its start; the call releases it.
    Record,
    /// Any value, pointer or number: an address the helper reads through its own checks
    /// (`bpf_probe_read_*`'s source), so the verifier asks nothing of it.
    Address,
    /// A lock word (4 bytes, aligned) in a value of a map programs may change, which the call takes:
    /// the program holds no lock yet, and then holds this one (`bpf_spin_lock`).
    SpinLock,
    /// The lock word the program holds, which the call releases (`bpf_spin_unlock`).
    SpinUnlock,
}

/// The kind of a helper's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetKind {
    /// A number.
    Scalar,
    /// Pointer to a map value, or null.
    MapValueOrNull,
    /// A reserved ring-buffer record, or null; its size is the constant in argument `size_arg` (1 to 5).
    /// The program must release it (an argument of kind [`ArgKind::Record`]) on every path.
    RecordOrNull {
        /// The argument holding the record's size.
        size_arg: u8,
    },
}

/// What the verifier knows about a helper: its argument and result kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelperSig {
    /// Kinds of `r1`..`r5`.
    pub args: [ArgKind; 5],
    /// Kind of `r0` after the call.
    pub ret: RetKind,
}

impl HelperSig {
    /// A helper taking `n` scalar arguments (at most 5) and returning a scalar.
    pub const fn scalars(n: usize) -> HelperSig {
        let mut args = [ArgKind::Unused; 5];
        let mut i = 0;
        while i < n && i < 5 {
            args[i] = ArgKind::Scalar;
            i += 1;
        }
        HelperSig { args, ret: RetKind::Scalar }
    }
}

/// Why a helper call failed; the engine reports it as [`ExecError::Helper`](crate::ExecError::Helper).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelperError {
    /// A pointer argument names memory the program may not access.
    #[error("memory at {addr:#x} ({len} bytes) is outside the program's memory")]
    OutOfBounds {
        /// The address.
        addr: u64,
        /// Bytes requested.
        len: u64,
    },
    /// An argument has a value the helper does not accept.
    #[error("argument r{arg} is invalid: {reason}")]
    InvalidArgument {
        /// 1 to 5.
        arg: u8,
        /// Why.
        reason: Cow<'static, str>,
    },
    /// The helper failed for another reason.
    #[error("{0}")]
    Failed(Cow<'static, str>),
}

/// The signature of a helper's function.
pub type HelperFn = dyn Fn(&mut CallContext<'_>, [u64; 5]) -> Result<u64, HelperError> + Send + Sync;

/// Which standard map helper a [`Helper`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MapOp {
    /// `bpf_map_lookup_elem`.
    Lookup,
    /// `bpf_map_update_elem`.
    Update,
    /// `bpf_map_delete_elem`.
    Delete,
}

/// A helper: id, name, signature, and the function.
#[derive(Clone)]
pub struct Helper {
    id: u32,
    name: Cow<'static, str>,
    sig: HelperSig,
    func: Arc<HelperFn>,
    /// The engines implement this helper themselves (`bpf_tail_call`).
    pub(crate) tail_call: bool,
    /// The standard `bpf_map_lookup_elem`, `_update_elem` or `_delete_elem`, which the JIT may carry
    /// out inline (array lookups) or call directly (hash maps); a host's own helper with that id is
    /// always called.
    pub(crate) map_op: Option<MapOp>,
    /// The standard `bpf_loop`, whose callback the engines call themselves; the function runs only
    /// for a callback that is not one of the program's functions.
    pub(crate) bpf_loop: bool,
    /// The standard `bpf_for_each_map_elem`, whose callback the engines call themselves (as for
    /// `bpf_loop`).
    pub(crate) for_each: bool,
}

impl Helper {
    /// Creates a helper from a function or closure.
    pub fn new<F>(id: u32, name: impl Into<Cow<'static, str>>, sig: HelperSig, func: F) -> Helper
    where
        F: Fn(&mut CallContext<'_>, [u64; 5]) -> Result<u64, HelperError> + Send + Sync + 'static,
    {
        Helper {
            id,
            name: name.into(),
            sig,
            func: Arc::new(func),
            tail_call: false,
            map_op: None,
            bpf_loop: false,
            for_each: false,
        }
    }

    /// The id programs call it by.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The helper's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The helper's signature.
    pub fn sig(&self) -> &HelperSig {
        &self.sig
    }

    /// Calls the helper.
    #[inline]
    pub fn call(&self, ctx: &mut CallContext<'_>, args: [u64; 5]) -> Result<u64, HelperError> {
        (self.func)(ctx, args)
    }
}

impl fmt::Debug for Helper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Helper").field("id", &self.id).field("name", &self.name).field("sig", &self.sig).finish()
    }
}

/// A sink for `bpf_trace_printk` output.
pub type PrintSink = Arc<dyn Fn(&str) + Send + Sync>;

/// What a helper sees of the running program: its memory, under the execution's rules, the maps of its
/// environment, and where it prints.
pub struct CallContext<'a> {
    pub(crate) memory: &'a MemoryMap<'a>,
    pub(crate) grants: &'a mut Grants,
    pub(crate) checked: bool,
    pub(crate) pc: usize,
    pub(crate) maps: &'a [Arc<dyn Map>],
    pub(crate) print: Option<&'a PrintSink>,
    pub(crate) cpu: usize,
}

impl<'a> CallContext<'a> {
    /// Slot index of the calling instruction.
    pub fn pc(&self) -> usize {
        self.pc
    }

    /// The CPU slot this execution holds (0 unless it uses per-CPU maps or asks for it).
    pub fn cpu(&self) -> usize {
        self.cpu
    }

    /// The maps of the environment, by index.
    pub fn maps(&self) -> &'a [Arc<dyn Map>] {
        self.maps
    }

    /// The map a register value (from a map pseudo-load) refers to; `arg` (1 to 5) names the argument
    /// in the error.
    pub fn map(&self, handle: u64, arg: u8) -> Result<&'a Arc<dyn Map>, HelperError> {
        crate::maps::handle_index(handle)
            .and_then(|i| self.maps.get(i as usize))
            .ok_or(HelperError::InvalidArgument { arg, reason: Cow::Borrowed("not a map reference") })
    }

    /// Writes a `bpf_trace_printk` line to the environment's sink (by default standard error with
    /// `std`, nowhere without).
    pub fn print(&self, line: &str) {
        match self.print {
            Some(sink) => sink(line),
            None => crate::host::print_line(line),
        }
    }

    /// Checks that the program may access `len` bytes at `addr` (for writing if `write`), and says
    /// whether they are private to the execution or shared. An empty range is always allowed.
    pub fn check(&self, addr: u64, len: u64, write: bool) -> Result<Access, HelperError> {
        if !self.checked {
            return Ok(self.memory.classify_unchecked(addr, len));
        }
        if len == 0 {
            return Ok(Access::Private);
        }
        self.memory.classify(addr, len, write, self.grants).ok_or(HelperError::OutOfBounds { addr, len })
    }

    /// Reads `len` bytes of program memory at `addr` into a new vector.
    pub fn read_vec(&self, addr: u64, len: usize) -> Result<Vec<u8>, HelperError> {
        self.check(addr, len as u64, false)?;
        let mut buf = alloc::vec![0u8; len];
        self.read(addr, &mut buf)?;
        Ok(buf)
    }

    /// Copies program memory at `addr` into `buf`.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), HelperError> {
        let access = self.check(addr, buf.len() as u64, false)?;
        if buf.is_empty() {
            return Ok(());
        }
        // SAFETY: in checked mode `check` found the range inside memory the execution may read, with
        // its kind; in unchecked mode the host vouched (an `unsafe` call) for every address the program
        // computes. `buf` is a host buffer, so the ranges do not overlap.
        unsafe { access::copy_out(core::ptr::with_exposed_provenance::<u8>(addr as usize), buf, access) };
        Ok(())
    }

    /// Copies `data` into program memory at `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), HelperError> {
        let access = self.check(addr, data.len() as u64, true)?;
        if data.is_empty() {
            return Ok(());
        }
        // SAFETY: as in `read`, with the range checked (or vouched for) as writable.
        unsafe { access::copy_in(core::ptr::with_exposed_provenance_mut::<u8>(addr as usize), data, access) };
        Ok(())
    }

    /// Hands `region` to the running execution until it is revoked or the execution ends; `false` if
    /// the execution holds too many regions already.
    pub(crate) fn grant(&mut self, region: Region, owner: u32) -> bool {
        self.grants.push(Grant { region, owner })
    }

    /// Takes back the region granted at `start`.
    pub(crate) fn revoke(&mut self, start: u64) -> Option<Grant> {
        self.grants.remove(start)
    }

    /// The grants of this execution.
    pub(crate) fn grants(&self) -> &Grants {
        self.grants
    }
}
