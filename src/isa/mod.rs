//! The eBPF instruction set of RFC 9669 (ISA v1 to v4) and nothing else.
//!
//! [`Insn`] is the raw 8-byte encoding, [`Instruction`] the decoded, typed form (a 64-bit immediate load
//! is one `Instruction` that spans two slots). [`decode`] and [`encode`] convert between bytes and
//! instructions; [`asm`] and [`disasm`] between instructions and the text syntax of the conformance suite.

pub mod asm;
mod decode;
pub mod disasm;
mod encode;
pub mod opcode;

pub use asm::{assemble, AsmError};
pub use decode::{decode, decode_one, DecodeError};
pub use disasm::{disassemble, disassemble_one};
pub use encode::{encode, encode_one};

use core::fmt;

/// Size in bytes of one instruction slot.
pub const INSN_SIZE: usize = 8;

/// One raw 8-byte instruction slot, field by field, as laid out in memory (little-endian).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Insn {
    /// The opcode byte: class, and operation or size and mode.
    pub opcode: u8,
    /// Destination register number (low nibble of byte 1).
    pub dst: u8,
    /// Source register number (high nibble of byte 1).
    pub src: u8,
    /// Signed 16-bit offset.
    pub off: i16,
    /// Signed 32-bit immediate.
    pub imm: i32,
}

impl Insn {
    /// Reads one slot from 8 bytes.
    pub fn from_bytes(b: [u8; INSN_SIZE]) -> Insn {
        Insn {
            opcode: b[0],
            dst: b[1] & 0x0f,
            src: b[1] >> 4,
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    /// Writes the slot as 8 bytes. Register numbers above 15 are truncated to their low nibble.
    pub fn to_bytes(self) -> [u8; INSN_SIZE] {
        let off = self.off.to_le_bytes();
        let imm = self.imm.to_le_bytes();
        [self.opcode, (self.dst & 0x0f) | (self.src << 4), off[0], off[1], imm[0], imm[1], imm[2], imm[3]]
    }
}

/// A register, `r0` to `r10` (`r10` is the read-only frame pointer by convention).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reg(u8);

impl Reg {
    /// The return-value register.
    pub const R0: Reg = Reg(0);
    /// First argument register; the context pointer at entry.
    pub const R1: Reg = Reg(1);
    /// Second argument register; the context length at entry.
    pub const R2: Reg = Reg(2);
    /// Third argument register.
    pub const R3: Reg = Reg(3);
    /// The frame pointer.
    pub const R10: Reg = Reg(10);
    /// Number of registers.
    pub const COUNT: usize = 11;

    /// The register with this number, if it is one of `r0`..`r10`.
    pub const fn new(n: u8) -> Option<Reg> {
        if n <= 10 {
            Some(Reg(n))
        } else {
            None
        }
    }

    /// The register's number, 0 to 10.
    pub const fn index(self) -> u8 {
        self.0
    }
}

impl fmt::Display for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%r{}", self.0)
    }
}

/// A set of registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct RegSet(u16);

impl RegSet {
    /// No register.
    pub const EMPTY: RegSet = RegSet(0);

    /// The set with `r` added.
    pub const fn with(self, r: Reg) -> RegSet {
        RegSet(self.0 | 1 << r.0)
    }

    /// Whether `r` is in the set.
    pub const fn contains(self, r: Reg) -> bool {
        self.0 & (1 << r.0) != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The registers in either set.
    pub const fn union(self, other: RegSet) -> RegSet {
        RegSet(self.0 | other.0)
    }

    /// Whether the sets have a register in common.
    pub const fn intersects(self, other: RegSet) -> bool {
        self.0 & other.0 != 0
    }

    /// The registers, lowest first.
    pub fn iter(self) -> impl Iterator<Item = Reg> {
        (0..Reg::COUNT as u8).filter(move |&n| self.0 & (1 << n) != 0).map(Reg)
    }
}

/// Operand width of an ALU or jump instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Width {
    /// 32-bit operation (`BPF_ALU` / `BPF_JMP32`): operands truncated, results zero-extended.
    W32,
    /// 64-bit operation (`BPF_ALU64` / `BPF_JMP`).
    W64,
}

/// The second operand of an ALU or conditional jump instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operand {
    /// A register (`BPF_X`).
    Reg(Reg),
    /// A 32-bit immediate (`BPF_K`), sign-extended for 64-bit operations.
    Imm(i32),
}

/// Binary ALU operations (everything but negation, byte swaps and sign-extending moves).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AluOp {
    /// `dst += src`
    Add,
    /// `dst -= src`
    Sub,
    /// `dst *= src`
    Mul,
    /// Unsigned division; division by zero gives 0.
    Div,
    /// Signed division (`offset = 1`); division by zero gives 0, `MIN / -1` gives `MIN`.
    SDiv,
    /// `dst |= src`
    Or,
    /// `dst &= src`
    And,
    /// Left shift, the amount masked to the width.
    Lsh,
    /// Logical right shift, the amount masked to the width.
    Rsh,
    /// Unsigned modulo; modulo by zero leaves `dst` unchanged (zero-extended for 32 bits).
    Mod,
    /// Signed modulo (`offset = 1`); the result takes the dividend's sign; by zero leaves `dst` unchanged.
    SMod,
    /// `dst ^= src`
    Xor,
    /// `dst = src`
    Mov,
    /// Arithmetic right shift, the amount masked to the width.
    Arsh,
}

/// The byte-order operations (`BPF_END`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ByteOrder {
    /// Convert to little-endian (`le16/32/64`): truncation to the width on a little-endian host.
    Le,
    /// Convert to big-endian (`be16/32/64`).
    Be,
    /// Unconditional byte swap (`bswap16/32/64`, ALU64 class, ISA v4).
    Swap,
}

/// Source width of a sign-extending move (`movsx`, ISA v4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SxWidth {
    /// From 8 bits.
    B8,
    /// From 16 bits.
    B16,
    /// From 32 bits (64-bit destination only).
    B32,
}

/// Jump conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cond {
    /// `==`
    Eq,
    /// unsigned `>`
    Gt,
    /// unsigned `>=`
    Ge,
    /// `dst & src != 0`
    Set,
    /// `!=`
    Ne,
    /// signed `>`
    Sgt,
    /// signed `>=`
    Sge,
    /// unsigned `<`
    Lt,
    /// unsigned `<=`
    Le,
    /// signed `<`
    Slt,
    /// signed `<=`
    Sle,
}

/// Memory access sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Size {
    /// 1 byte.
    B,
    /// 2 bytes.
    H,
    /// 4 bytes.
    W,
    /// 8 bytes.
    DW,
}

impl Size {
    /// The size in bytes.
    pub const fn bytes(self) -> u32 {
        match self {
            Size::B => 1,
            Size::H => 2,
            Size::W => 4,
            Size::DW => 8,
        }
    }
}

/// Atomic read-modify-write operations (`BPF_ATOMIC` mode of `BPF_STX`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AtomicOp {
    /// `*addr += src`; with `fetch`, `src` receives the old value.
    Add {
        /// Whether the old value is returned in `src`.
        fetch: bool,
    },
    /// `*addr |= src`.
    Or {
        /// Whether the old value is returned in `src`.
        fetch: bool,
    },
    /// `*addr &= src`.
    And {
        /// Whether the old value is returned in `src`.
        fetch: bool,
    },
    /// `*addr ^= src`.
    Xor {
        /// Whether the old value is returned in `src`.
        fetch: bool,
    },
    /// Exchange `*addr` and `src`.
    Xchg,
    /// If `*addr == r0` then `*addr = src`; `r0` receives the old value either way.
    CmpXchg,
}

/// How a legacy packet load finds its offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PacketMode {
    /// `BPF_ABS`: the offset is the immediate.
    Abs,
    /// `BPF_IND`: the offset is the register plus the immediate.
    Ind(Reg),
}

/// What a 64-bit immediate load (`lddw`, opcode 0x18) loads, by its `src` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Imm64 {
    /// `src = 0`: the 64-bit constant.
    Const(u64),
    /// `src = 1`: the map with this file descriptor (resolved by a loader).
    MapFd(i32),
    /// `src = 2`: the address of a map's value plus an offset.
    MapValue {
        /// The map's file descriptor.
        fd: i32,
        /// Offset into the value.
        offset: i32,
    },
    /// `src = 3`: the address of a kernel variable by BTF id.
    BtfVar {
        /// The BTF id.
        id: i32,
        /// The BTF object's file descriptor (second slot's immediate).
        obj: i32,
    },
    /// `src = 4`: the address of a program function, as an instruction offset.
    Func(i32),
    /// `src = 5`: the map with this index in the program's map table.
    MapIdx(i32),
    /// `src = 6`: the address of the value of the map with this index, plus an offset.
    MapIdxValue {
        /// The map's index.
        idx: i32,
        /// Offset into the value.
        offset: i32,
    },
}

/// A decoded instruction. Offsets of jumps and local calls are in slots, relative to the next slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Instruction {
    /// Binary ALU operation.
    Alu {
        /// 32 or 64 bits.
        width: Width,
        /// The operation.
        op: AluOp,
        /// Destination (and first operand).
        dst: Reg,
        /// Second operand.
        src: Operand,
    },
    /// `dst = -dst`.
    Neg {
        /// 32 or 64 bits.
        width: Width,
        /// The register.
        dst: Reg,
    },
    /// Sign-extending move (ISA v4): `dst = (sign-extended from `from` bits) src`.
    MovSx {
        /// Destination width.
        width: Width,
        /// Source width.
        from: SxWidth,
        /// Destination.
        dst: Reg,
        /// Source.
        src: Reg,
    },
    /// Byte-order conversion or swap of the low `bits` bits; the rest is cleared.
    End {
        /// The conversion.
        order: ByteOrder,
        /// 16, 32 or 64.
        bits: u8,
        /// The register.
        dst: Reg,
    },
    /// 64-bit immediate load; occupies two slots.
    LoadImm64 {
        /// Destination.
        dst: Reg,
        /// What is loaded.
        value: Imm64,
    },
    /// Legacy packet load into `r0` (`BPF_LD | BPF_ABS/BPF_IND`), big-endian.
    LoadPacket {
        /// 1, 2 or 4 bytes.
        size: Size,
        /// Absolute or indirect.
        mode: PacketMode,
        /// Offset.
        imm: i32,
    },
    /// `dst = *(size *)(src + offset)`, zero-extended.
    Load {
        /// Access size.
        size: Size,
        /// Destination.
        dst: Reg,
        /// Base address register.
        src: Reg,
        /// Offset from the base.
        offset: i16,
    },
    /// `dst = *(size *)(src + offset)`, sign-extended (ISA v4; 1, 2 or 4 bytes).
    LoadSx {
        /// Access size.
        size: Size,
        /// Destination.
        dst: Reg,
        /// Base address register.
        src: Reg,
        /// Offset from the base.
        offset: i16,
    },
    /// `*(size *)(dst + offset) = imm`.
    Store {
        /// Access size.
        size: Size,
        /// Base address register.
        dst: Reg,
        /// Offset from the base.
        offset: i16,
        /// The value (sign-extended for 8 bytes).
        imm: i32,
    },
    /// `*(size *)(dst + offset) = src`.
    StoreReg {
        /// Access size.
        size: Size,
        /// Base address register.
        dst: Reg,
        /// Offset from the base.
        offset: i16,
        /// The value.
        src: Reg,
    },
    /// Atomic read-modify-write of 4 or 8 bytes at `dst + offset`.
    Atomic {
        /// 32 or 64 bits.
        width: Width,
        /// The operation.
        op: AtomicOp,
        /// Base address register.
        dst: Reg,
        /// Offset from the base.
        offset: i16,
        /// Operand register (receives the old value for fetching operations).
        src: Reg,
    },
    /// Unconditional jump by a 16-bit offset (`ja`).
    Ja {
        /// Slots to skip.
        offset: i16,
    },
    /// Unconditional jump by a 32-bit offset (`gotol` / `ja32`, ISA v4).
    Ja32 {
        /// Slots to skip.
        offset: i32,
    },
    /// Conditional jump.
    Jump {
        /// 32 or 64-bit comparison.
        width: Width,
        /// The condition.
        cond: Cond,
        /// First operand.
        dst: Reg,
        /// Second operand.
        src: Operand,
        /// Slots to skip when the condition holds.
        offset: i16,
    },
    /// Call of a helper function by its id.
    Call {
        /// The helper id.
        id: u32,
    },
    /// Call of a helper whose id is in a register (`callx`).
    CallReg {
        /// The register holding the helper id.
        reg: Reg,
    },
    /// Call of a local (bpf-to-bpf) function.
    CallLocal {
        /// Slots from the next slot to the callee's first instruction.
        offset: i32,
    },
    /// Call of a kernel function by BTF id (`src = 2`); no userspace runtime provides these.
    CallBtf {
        /// The BTF id.
        id: u32,
    },
    /// Return from the current function; from the entry function, end the program with `r0`.
    Exit,
}

impl Instruction {
    /// Number of 8-byte slots the instruction occupies (2 for `lddw`, else 1).
    pub const fn slots(&self) -> usize {
        match self {
            Instruction::LoadImm64 { .. } => 2,
            _ => 1,
        }
    }

    /// Absolute slot index of the jump or local-call target, for an instruction at slot `pc`.
    pub fn branch_target(&self, pc: usize) -> Option<i64> {
        let rel = match *self {
            Instruction::Ja { offset } => offset as i64,
            Instruction::Ja32 { offset } => offset as i64,
            Instruction::Jump { offset, .. } => offset as i64,
            Instruction::CallLocal { offset } => offset as i64,
            _ => return None,
        };
        Some(pc as i64 + 1 + rel)
    }

    /// Whether this is a call: of a helper (by id or register), a bpf-to-bpf call, or a call by BTF id.
    pub const fn is_call(&self) -> bool {
        matches!(
            self,
            Instruction::Call { .. }
                | Instruction::CallReg { .. }
                | Instruction::CallLocal { .. }
                | Instruction::CallBtf { .. }
        )
    }

    /// Whether this instruction leaves the argument registers r1-r5 unknown: calls, and legacy packet
    /// loads (which the kernel implements as calls).
    pub const fn clobbers_arguments(&self) -> bool {
        self.is_call() || matches!(self, Instruction::LoadPacket { .. })
    }

    /// The register this instruction writes, if any: the destination of ALU operations, moves, byte
    /// swaps and loads; the register an atomic fetches into (r0 for compare-and-exchange); r0 for calls
    /// and legacy packet loads.
    pub const fn written(&self) -> Option<Reg> {
        match *self {
            Instruction::Alu { dst, .. }
            | Instruction::Neg { dst, .. }
            | Instruction::MovSx { dst, .. }
            | Instruction::End { dst, .. }
            | Instruction::LoadImm64 { dst, .. }
            | Instruction::Load { dst, .. }
            | Instruction::LoadSx { dst, .. } => Some(dst),
            Instruction::Atomic { op: AtomicOp::CmpXchg, .. } => Some(Reg::R0),
            Instruction::Atomic { op: AtomicOp::Xchg, src, .. } => Some(src),
            Instruction::Atomic {
                op: AtomicOp::Add { fetch } | AtomicOp::Or { fetch } | AtomicOp::And { fetch } | AtomicOp::Xor { fetch },
                src,
                ..
            } => {
                if fetch {
                    Some(src)
                } else {
                    None
                }
            }
            Instruction::LoadPacket { .. }
            | Instruction::Call { .. }
            | Instruction::CallReg { .. }
            | Instruction::CallLocal { .. }
            | Instruction::CallBtf { .. } => Some(Reg::R0),
            Instruction::Store { .. }
            | Instruction::StoreReg { .. }
            | Instruction::Ja { .. }
            | Instruction::Ja32 { .. }
            | Instruction::Jump { .. }
            | Instruction::Exit => None,
        }
    }

    /// The registers this instruction reads, as values or as addresses: the operands of ALU operations
    /// (not the destination of a move), the base and value of loads, stores and atomics (and r0 for
    /// compare-and-exchange), the operands of conditional jumps, the register of `callx` and of indirect
    /// packet loads, r1 to r5 for calls (their arguments), and r0 for `exit`.
    pub const fn reads(&self) -> RegSet {
        let none = RegSet::EMPTY;
        match *self {
            Instruction::Alu { op: AluOp::Mov, src: Operand::Reg(s), .. } => none.with(s),
            Instruction::Alu { op: AluOp::Mov, src: Operand::Imm(_), .. } => none,
            Instruction::Alu { dst, src: Operand::Reg(s), .. } => none.with(dst).with(s),
            Instruction::Alu { dst, src: Operand::Imm(_), .. } => none.with(dst),
            Instruction::Neg { dst, .. } | Instruction::End { dst, .. } => none.with(dst),
            Instruction::MovSx { src, .. } => none.with(src),
            Instruction::LoadImm64 { .. } | Instruction::Ja { .. } | Instruction::Ja32 { .. } => none,
            Instruction::LoadPacket { mode: PacketMode::Ind(r), .. } => none.with(r),
            Instruction::LoadPacket { mode: PacketMode::Abs, .. } => none,
            Instruction::Load { src, .. } | Instruction::LoadSx { src, .. } => none.with(src),
            Instruction::Store { dst, .. } => none.with(dst),
            Instruction::StoreReg { dst, src, .. } => none.with(dst).with(src),
            Instruction::Atomic { op: AtomicOp::CmpXchg, dst, src, .. } => none.with(dst).with(src).with(Reg::R0),
            Instruction::Atomic { dst, src, .. } => none.with(dst).with(src),
            Instruction::Jump { dst, src: Operand::Reg(s), .. } => none.with(dst).with(s),
            Instruction::Jump { dst, src: Operand::Imm(_), .. } => none.with(dst),
            Instruction::CallReg { reg } => RegSet(0b11_1110).with(reg),
            Instruction::Call { .. } | Instruction::CallLocal { .. } | Instruction::CallBtf { .. } => RegSet(0b11_1110),
            Instruction::Exit => none.with(Reg::R0),
        }
    }

    /// Whether execution can continue with the next slot.
    pub const fn falls_through(&self) -> bool {
        !matches!(self, Instruction::Exit | Instruction::Ja { .. } | Instruction::Ja32 { .. })
    }
}

impl fmt::Display for Instruction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        disasm::write_instruction(f, self)
    }
}
