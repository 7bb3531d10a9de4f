//! Instructions to text, in the syntax of the conformance suite (`mov %r0, 1`, `ldxw %r1, [%r2+4]`,
//! `jeq %r1, 0, +3`, `lock fetch add [%r1+8], %r2`). Jump and call targets are written as relative
//! slot offsets, so [`assemble`](super::assemble) of the output gives back the same bytes.

use alloc::string::String;
use core::fmt::{self, Write};

use super::{AluOp, AtomicOp, ByteOrder, Cond, Imm64, Instruction, Operand, PacketMode, Reg, Size, SxWidth, Width};

/// Disassembles a program, one instruction per line.
pub fn disassemble(program: &[Instruction]) -> String {
    let mut out = String::new();
    for insn in program {
        // Writing into a String cannot fail.
        let _ = writeln!(out, "{insn}");
    }
    out
}

/// Disassembles one instruction.
pub fn disassemble_one(insn: &Instruction) -> String {
    let mut out = String::new();
    let _ = write!(out, "{insn}");
    out
}

/// Suffix that marks a 32-bit operation.
fn suffix(width: Width) -> &'static str {
    match width {
        Width::W32 => "32",
        Width::W64 => "",
    }
}

/// Name of an ALU operation.
pub(crate) fn alu_name(op: AluOp) -> &'static str {
    match op {
        AluOp::Add => "add",
        AluOp::Sub => "sub",
        AluOp::Mul => "mul",
        AluOp::Div => "div",
        AluOp::SDiv => "sdiv",
        AluOp::Or => "or",
        AluOp::And => "and",
        AluOp::Lsh => "lsh",
        AluOp::Rsh => "rsh",
        AluOp::Mod => "mod",
        AluOp::SMod => "smod",
        AluOp::Xor => "xor",
        AluOp::Mov => "mov",
        AluOp::Arsh => "arsh",
    }
}

/// Name of a jump condition.
pub(crate) fn cond_name(cond: Cond) -> &'static str {
    match cond {
        Cond::Eq => "jeq",
        Cond::Gt => "jgt",
        Cond::Ge => "jge",
        Cond::Set => "jset",
        Cond::Ne => "jne",
        Cond::Sgt => "jsgt",
        Cond::Sge => "jsge",
        Cond::Lt => "jlt",
        Cond::Le => "jle",
        Cond::Slt => "jslt",
        Cond::Sle => "jsle",
    }
}

/// Suffix of a load or store mnemonic for a size.
pub(crate) fn size_name(size: Size) -> &'static str {
    match size {
        Size::B => "b",
        Size::H => "h",
        Size::W => "w",
        Size::DW => "dw",
    }
}

struct Mem(Reg, i16);

impl fmt::Display for Mem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.1 < 0 {
            write!(f, "[{}-{}]", self.0, -(self.1 as i32))
        } else {
            write!(f, "[{}+{}]", self.0, self.1)
        }
    }
}

struct Rel(i64);

impl fmt::Display for Rel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 < 0 {
            write!(f, "{}", self.0)
        } else {
            write!(f, "+{}", self.0)
        }
    }
}

struct Opnd(Operand);

impl fmt::Display for Opnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Operand::Reg(r) => write!(f, "{r}"),
            Operand::Imm(v) => write!(f, "{}", Imm(v)),
        }
    }
}

/// A 32-bit immediate: small values in decimal, others as their 32 bits in hex (as the suite writes
/// them; the assembler reads both back to the same bits).
struct Imm(i32);

impl fmt::Display for Imm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if (-0x10000..=0x10000).contains(&self.0) {
            write!(f, "{}", self.0)
        } else {
            write!(f, "{:#x}", self.0 as u32)
        }
    }
}

/// Writes one instruction in the text syntax.
pub(crate) fn write_instruction(f: &mut fmt::Formatter<'_>, insn: &Instruction) -> fmt::Result {
    match *insn {
        Instruction::Alu { width, op, dst, src } => {
            write!(f, "{}{} {dst}, {}", alu_name(op), suffix(width), Opnd(src))
        }
        Instruction::Neg { width, dst } => write!(f, "neg{} {dst}", suffix(width)),
        Instruction::MovSx { width, from, dst, src } => {
            let from = match from {
                SxWidth::B8 => 8,
                SxWidth::B16 => 16,
                SxWidth::B32 => 32,
            };
            let to = if width == Width::W64 { 64 } else { 32 };
            write!(f, "movsx{from}{to} {dst}, {src}")
        }
        Instruction::End { order, bits, dst } => {
            let name = match order {
                ByteOrder::Le => "le",
                ByteOrder::Be => "be",
                ByteOrder::Swap => "bswap",
            };
            write!(f, "{name}{bits} {dst}")
        }
        Instruction::LoadImm64 { dst, value } => match value {
            Imm64::Const(v) => write!(f, "lddw {dst}, {v:#x}"),
            Imm64::MapFd(fd) => write!(f, "lddw {dst}, map_fd({fd})"),
            Imm64::MapValue { fd, offset } => write!(f, "lddw {dst}, map_value({fd}, {offset})"),
            Imm64::BtfVar { id, obj } => write!(f, "lddw {dst}, btf_var({id}, {obj})"),
            Imm64::Func(off) => write!(f, "lddw {dst}, func({})", Rel(off as i64)),
            Imm64::MapIdx(idx) => write!(f, "lddw {dst}, map_idx({idx})"),
            Imm64::MapIdxValue { idx, offset } => {
                write!(f, "lddw {dst}, map_idx_value({idx}, {offset})")
            }
        },
        Instruction::LoadPacket { size, mode, imm } => match mode {
            PacketMode::Abs => write!(f, "ldabs{} {imm}", size_name(size)),
            PacketMode::Ind(r) => write!(f, "ldind{} {r}, {imm}", size_name(size)),
        },
        Instruction::Load { size, dst, src, offset } => {
            write!(f, "ldx{} {dst}, {}", size_name(size), Mem(src, offset))
        }
        Instruction::LoadSx { size, dst, src, offset } => {
            write!(f, "ldxs{} {dst}, {}", size_name(size), Mem(src, offset))
        }
        Instruction::Store { size, dst, offset, imm } => {
            write!(f, "st{} {}, {}", size_name(size), Mem(dst, offset), Imm(imm))
        }
        Instruction::StoreReg { size, dst, offset, src } => {
            write!(f, "stx{} {}, {src}", size_name(size), Mem(dst, offset))
        }
        Instruction::Atomic { width, op, dst, offset, src } => {
            let (fetch, name) = match op {
                AtomicOp::Add { fetch } => (fetch, "add"),
                AtomicOp::Or { fetch } => (fetch, "or"),
                AtomicOp::And { fetch } => (fetch, "and"),
                AtomicOp::Xor { fetch } => (fetch, "xor"),
                AtomicOp::Xchg => (false, "xchg"),
                AtomicOp::CmpXchg => (false, "cmpxchg"),
            };
            let fetch = if fetch { "fetch " } else { "" };
            write!(f, "lock {fetch}{name}{} {}, {src}", suffix(width), Mem(dst, offset))
        }
        Instruction::Ja { offset } => write!(f, "ja {}", Rel(offset as i64)),
        Instruction::Ja32 { offset } => write!(f, "ja32 {}", Rel(offset as i64)),
        Instruction::Jump { width, cond, dst, src, offset } => {
            write!(f, "{}{} {dst}, {}, {}", cond_name(cond), suffix(width), Opnd(src), Rel(offset as i64))
        }
        Instruction::Call { id } => write!(f, "call {id}"),
        Instruction::CallReg { reg } => write!(f, "call {reg}"),
        Instruction::CallLocal { offset } => write!(f, "call local {}", Rel(offset as i64)),
        Instruction::CallBtf { id } => write!(f, "call runtime {id}"),
        Instruction::Exit => write!(f, "exit"),
    }
}
