//! Why the verifier refused a program: the instruction, the rule it breaks, and the state that broke it.

use alloc::string::String;
use core::fmt;

/// A memory region a pointer can point into, as the verifier names it in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionKind {
    /// The buffer behind `r1` whose length is in `r2` (or the packet of a packet-style context).
    Input,
    /// A fixed-size context.
    Context,
    /// A stack frame.
    Stack,
    /// A map value.
    MapValue,
    /// Read-only data (`.rodata`, a map programs may only read).
    ReadOnlyData,
    /// A reserved ring-buffer record.
    Record,
}

impl fmt::Display for RegionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RegionKind::Input => "the input",
            RegionKind::Context => "the context",
            RegionKind::Stack => "the stack",
            RegionKind::MapValue => "a map value",
            RegionKind::ReadOnlyData => "read-only data",
            RegionKind::Record => "a ring-buffer record",
        })
    }
}

/// The rule an instruction breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyErrorKind {
    /// A register is read before anything was written to it.
    UninitRegister {
        /// The register.
        reg: u8,
    },
    /// Stack bytes are read (or passed to a helper that reads them) before they were written.
    UninitStack {
        /// Offset of the first such byte from the frame's top (negative).
        offset: i64,
    },
    /// An access may fall outside its region.
    OutOfBounds {
        /// The region.
        region: RegionKind,
        /// Lowest offset the access may start at.
        min: i64,
        /// Highest offset the access may end at (exclusive).
        end: i64,
        /// Bytes the region is proven to hold.
        size: u64,
    },
    /// A register that is not a pointer is used as one (dereferenced, or passed where a pointer is due).
    NotAPointer {
        /// The register.
        reg: u8,
    },
    /// A pointer that may be null is used before a null check.
    MaybeNull {
        /// The register.
        reg: u8,
    },
    /// An arithmetic operation a pointer does not allow (multiply, shift, divide, pointer + pointer,
    /// 32-bit arithmetic, arithmetic on a map or end pointer, ...).
    PointerArithmetic {
        /// The register.
        reg: u8,
    },
    /// A pointer's offset would not stay within known bounds (an unbounded scalar added).
    UnboundedOffset {
        /// The register.
        reg: u8,
    },
    /// Pointers into different regions, or a pointer and a non-zero number, are compared.
    PointerComparison {
        /// The register.
        reg: u8,
    },
    /// A pointer would become visible to the host as a number (stored in a map, the context or the
    /// input, passed as a number, or returned), which the options do not allow.
    PointerLeak {
        /// The register holding the pointer.
        reg: u8,
    },
    /// A store, atomic or writing helper targets memory the program may only read.
    ReadOnly {
        /// The region.
        region: RegionKind,
    },
    /// Part of a pointer spilled on the stack is overwritten or read as a number.
    PartialPointerSpill {
        /// Offset of the slot from the frame's top.
        offset: i64,
    },
    /// An atomic operation's address is not proven aligned to its size.
    Misaligned {
        /// The register holding the base address.
        reg: u8,
    },
    /// A helper argument does not have the kind its signature requires.
    HelperArgument {
        /// The helper id.
        helper: u32,
        /// The argument, 1 to 5.
        arg: u8,
        /// What is wrong.
        reason: String,
    },
    /// A ring-buffer record reserved on some path is neither submitted nor discarded before exit.
    UnreleasedRecord {
        /// Slot index of the reserving call.
        reserved_at: usize,
    },
    /// A rule of `bpf_spin_lock` broken: a second lock, a call or an exit while a lock is held, or
    /// a release of a lock that is not the one held.
    SpinLock {
        /// Which rule.
        reason: &'static str,
    },
    /// A register released as a ring-buffer record is not a live reserved record (never reserved,
    /// already released, or maybe null).
    BadRelease {
        /// The register.
        reg: u8,
    },
    /// An instruction no path from the entry reaches.
    Unreachable,
    /// The verifier could not prove that a loop ends.
    UnboundedLoop {
        /// Slot index of the loop's first instruction.
        header: usize,
    },
    /// Verification took more steps than the complexity limit.
    TooComplex {
        /// Instructions processed.
        processed: u64,
        /// Slot index of the loop being analysed, if any.
        header: Option<usize>,
    },
    /// A function calls itself, directly or through others.
    Recursion {
        /// Slot index of the called function.
        callee: usize,
    },
    /// Calls nest deeper than the limit of stack frames.
    CallDepth {
        /// Frames needed.
        depth: usize,
    },
    /// `r0` holds a pointer or an unsuitable value at `exit`, or a callee returns a pointer.
    ExitValue,
    /// The instruction is not supported in verified mode (for example `callx`).
    Unsupported {
        /// What.
        what: &'static str,
    },
}

impl fmt::Display for VerifyErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyErrorKind::UninitRegister { reg } => write!(f, "r{reg} is read before it is written"),
            VerifyErrorKind::UninitStack { offset } => {
                write!(f, "stack byte at fp{offset} is read before it is written")
            }
            VerifyErrorKind::OutOfBounds { region, min, end, size } => {
                write!(f, "access of bytes [{min}, {end}) of {region}, which is proven to hold only {size} bytes")
            }
            VerifyErrorKind::NotAPointer { reg } => write!(f, "r{reg} is used as a pointer but holds a number"),
            VerifyErrorKind::MaybeNull { reg } => write!(f, "r{reg} may be null and is used before a null check"),
            VerifyErrorKind::PointerArithmetic { reg } => {
                write!(f, "arithmetic on pointer r{reg} that pointers do not allow")
            }
            VerifyErrorKind::UnboundedOffset { reg } => {
                write!(f, "pointer r{reg} would get an offset with no proven bounds")
            }
            VerifyErrorKind::PointerComparison { reg } => {
                write!(f, "r{reg} compares pointers into different regions, or a pointer and a number")
            }
            VerifyErrorKind::PointerLeak { reg } => {
                write!(f, "pointer r{reg} would be visible to the host as a number")
            }
            VerifyErrorKind::ReadOnly { region } => write!(f, "write to {region}, which is read-only"),
            VerifyErrorKind::PartialPointerSpill { offset } => {
                write!(f, "part of the pointer spilled at fp{offset} is overwritten or read as a number")
            }
            VerifyErrorKind::Misaligned { reg } => {
                write!(f, "atomic access through r{reg} is not proven aligned to its size")
            }
            VerifyErrorKind::HelperArgument { helper, arg, reason } => {
                write!(f, "helper {helper}, argument r{arg}: {reason}")
            }
            VerifyErrorKind::SpinLock { reason } => write!(f, "bpf_spin_lock: {reason}"),
            VerifyErrorKind::UnreleasedRecord { reserved_at } => write!(
                f,
                "the ring-buffer record reserved at instruction {reserved_at} is neither submitted nor discarded"
            ),
            VerifyErrorKind::BadRelease { reg } => {
                write!(f, "r{reg} is not a reserved ring-buffer record that is still held")
            }
            VerifyErrorKind::Unreachable => f.write_str("no path from the entry reaches this instruction"),
            VerifyErrorKind::UnboundedLoop { header } => {
                write!(f, "the loop at instruction {header} is not proven to end")
            }
            VerifyErrorKind::TooComplex { processed, header: Some(h) } => {
                write!(f, "complexity limit reached after {processed} instructions, analysing the loop at {h}")
            }
            VerifyErrorKind::TooComplex { processed, header: None } => {
                write!(f, "complexity limit reached after {processed} instructions")
            }
            VerifyErrorKind::Recursion { callee } => write!(f, "recursive call of the function at {callee}"),
            VerifyErrorKind::CallDepth { depth } => {
                write!(f, "calls nest {depth} frames deep, more than the limit")
            }
            VerifyErrorKind::ExitValue => f.write_str("r0 must hold a number at exit"),
            VerifyErrorKind::Unsupported { what } => write!(f, "{what} is not supported by the verifier"),
        }
    }
}

/// A program the verifier cannot prove safe: where, why, and the state that broke the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    /// Id of the program in its linked set (0 unless tail calls reach several).
    pub program: usize,
    /// Slot index of the instruction.
    pub pc: usize,
    /// The instruction, disassembled.
    pub insn: String,
    /// The rule broken.
    pub kind: VerifyErrorKind,
    /// The registers involved, as the verifier saw them.
    pub state: String,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "insn {}: {}: {}", self.pc, self.insn, self.kind)?;
        if !self.state.is_empty() {
            write!(f, " ({})", self.state)?;
        }
        Ok(())
    }
}

impl core::error::Error for VerifyError {}
