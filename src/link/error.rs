//! Errors of linking a program to its environment, and of executing a linked program.

use core::fmt;

use crate::helpers::HelperError;
use crate::memory::MAX_FRAMES;

/// Why a program cannot be linked to its environment. Every variant names the slot index `pc` of the
/// instruction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The program calls a helper id the environment does not provide.
    #[error("instruction {pc}: call to unknown helper {id}")]
    UnknownHelper {
        /// Slot index of the call.
        pc: usize,
        /// The helper id.
        id: u32,
    },
    /// The program calls a kernel function by BTF id, which no userspace environment provides.
    #[error("instruction {pc}: call to kernel function by BTF id {id} is not supported")]
    UnsupportedBtfCall {
        /// Slot index of the call.
        pc: usize,
        /// The BTF id.
        id: u32,
    },
    /// An `lddw` refers to a map index the environment does not have.
    #[error("instruction {pc}: lddw refers to map {index}, which the environment does not have")]
    UnknownMap {
        /// Slot index of the `lddw`.
        pc: usize,
        /// The map index.
        index: i32,
    },
    /// An `lddw` takes the address of a value of a map that is not an array.
    #[error("instruction {pc}: lddw takes a value address of map {index}, which is not an array map")]
    NotAnArray {
        /// Slot index of the `lddw`.
        pc: usize,
        /// The map index.
        index: i32,
    },
    /// An `lddw` takes an address outside a map's value.
    #[error("instruction {pc}: offset {offset} is outside the value of map {index}")]
    MapValueOffset {
        /// Slot index of the `lddw`.
        pc: usize,
        /// The map index.
        index: i32,
        /// The offset.
        offset: i32,
    },
    /// An `lddw` refers to a map, variable or function that no loader has resolved.
    #[error("instruction {pc}: lddw pseudo-load (src {kind}) was not resolved by a loader")]
    UnresolvedImm64 {
        /// Slot index of the `lddw`.
        pc: usize,
        /// The `src` field of the `lddw`.
        kind: u8,
    },
}

/// Why an execution stopped before `exit`. Every variant names the slot index `pc` of the instruction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// A load, store or atomic touched memory outside every region the execution owns.
    #[error("instruction {pc}: {} of {len} bytes at {addr:#x} is out of bounds", if *.write { "store" } else { "load" })]
    OutOfBounds {
        /// Slot index.
        pc: usize,
        /// The address.
        addr: u64,
        /// Access size in bytes.
        len: u64,
        /// Whether the access was a store.
        write: bool,
    },
    /// An atomic operation's address is not aligned to its size.
    #[error("instruction {pc}: atomic access at {addr:#x} is not aligned to its size")]
    MisalignedAtomic {
        /// Slot index.
        pc: usize,
        /// The address.
        addr: u64,
    },
    /// The instruction budget ran out before the program exited.
    #[error("instruction {pc}: instruction budget exhausted")]
    BudgetExhausted {
        /// Slot index of the first instruction not executed.
        pc: usize,
    },
    /// A bpf-to-bpf call would exceed the limit of stack frames.
    #[error("instruction {pc}: call exceeds the limit of {MAX_FRAMES} stack frames")]
    CallDepthExceeded {
        /// Slot index of the call.
        pc: usize,
    },
    /// `callx` named a helper id the environment does not provide.
    #[error("instruction {pc}: call to unknown helper {id}")]
    UnknownHelper {
        /// Slot index of the call.
        pc: usize,
        /// The helper id found in the register.
        id: u64,
    },
    /// The memory passed to a program built for a fixed-size context has another length.
    #[error("the memory passed is {len} bytes, which does not match the program's context description")]
    ContextSize {
        /// Bytes passed.
        len: usize,
    },
    /// A helper returned an error.
    #[error("instruction {pc}: helper {id} failed: {source}")]
    Helper {
        /// Slot index of the call.
        pc: usize,
        /// The helper id.
        id: u32,
        /// What the helper reported.
        source: HelperError,
    },
    /// In shadow mode ([`VmBuilder::shadow`](crate::VmBuilder::shadow)): the instruction reads a register
    /// or stack byte that nothing has written since its function (or the program) started.
    #[error("instruction {pc}: reads {what}, which was never written")]
    UninitRead {
        /// Slot index of the instruction.
        pc: usize,
        /// The register or stack byte.
        what: Uninit,
    },
}

/// What an uninitialised read ([`ExecError::UninitRead`]) read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uninit {
    /// A register, by number (0 to 10).
    Register(u8),
    /// A stack byte, by its offset from the frame pointer (`r10`) of the function that read it:
    /// negative in its own frame, positive in a caller's.
    Stack(i64),
}

impl fmt::Display for Uninit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Uninit::Register(r) => write!(f, "register r{r}"),
            Uninit::Stack(off) if off < 0 => write!(f, "stack byte r10{off}"),
            Uninit::Stack(off) => write!(f, "stack byte r10+{off}"),
        }
    }
}

impl ExecError {
    /// Slot index of the instruction that stopped the execution.
    pub fn pc(&self) -> usize {
        match *self {
            ExecError::OutOfBounds { pc, .. }
            | ExecError::MisalignedAtomic { pc, .. }
            | ExecError::BudgetExhausted { pc }
            | ExecError::CallDepthExceeded { pc }
            | ExecError::UnknownHelper { pc, .. }
            | ExecError::Helper { pc, .. }
            | ExecError::UninitRead { pc, .. } => pc,
            ExecError::ContextSize { .. } => 0,
        }
    }
}
