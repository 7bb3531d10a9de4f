//! Typed instructions to bytes: the exact inverse of [`decode`](super::decode).

use alloc::vec::Vec;

use super::opcode::*;
use super::{AluOp, AtomicOp, ByteOrder, Cond, Imm64, Insn, Instruction, Operand, PacketMode, Size, SxWidth, Width};

/// Encodes a sequence of instructions as bytes (8 per slot, 16 for `lddw`).
pub fn encode(program: &[Instruction]) -> Vec<u8> {
    let mut out = Vec::with_capacity(program.len() * 8);
    for insn in program {
        let (first, second) = encode_one(insn);
        out.extend_from_slice(&first.to_bytes());
        if let Some(second) = second {
            out.extend_from_slice(&second.to_bytes());
        }
    }
    out
}

fn size_bits(size: Size) -> u8 {
    match size {
        Size::W => SIZE_W,
        Size::H => SIZE_H,
        Size::B => SIZE_B,
        Size::DW => SIZE_DW,
    }
}

fn cond_code(cond: Cond) -> u8 {
    match cond {
        Cond::Eq => JMP_JEQ,
        Cond::Gt => JMP_JGT,
        Cond::Ge => JMP_JGE,
        Cond::Set => JMP_JSET,
        Cond::Ne => JMP_JNE,
        Cond::Sgt => JMP_JSGT,
        Cond::Sge => JMP_JSGE,
        Cond::Lt => JMP_JLT,
        Cond::Le => JMP_JLE,
        Cond::Slt => JMP_JSLT,
        Cond::Sle => JMP_JSLE,
    }
}

/// Encodes one instruction: its slot, and the second slot of an `lddw`.
pub fn encode_one(insn: &Instruction) -> (Insn, Option<Insn>) {
    let mut i = Insn::default();
    let alu_class = |w: Width| if w == Width::W64 { CLS_ALU64 } else { CLS_ALU };
    let jmp_class = |w: Width| if w == Width::W64 { CLS_JMP } else { CLS_JMP32 };
    let operand = |i: &mut Insn, src: Operand| match src {
        Operand::Reg(r) => {
            i.opcode |= SRC_X;
            i.src = r.index();
        }
        Operand::Imm(v) => i.imm = v,
    };
    match *insn {
        Instruction::Alu { width, op, dst, src } => {
            let (code, off) = match op {
                AluOp::Add => (ALU_ADD, 0),
                AluOp::Sub => (ALU_SUB, 0),
                AluOp::Mul => (ALU_MUL, 0),
                AluOp::Div => (ALU_DIV, 0),
                AluOp::SDiv => (ALU_DIV, 1),
                AluOp::Or => (ALU_OR, 0),
                AluOp::And => (ALU_AND, 0),
                AluOp::Lsh => (ALU_LSH, 0),
                AluOp::Rsh => (ALU_RSH, 0),
                AluOp::Mod => (ALU_MOD, 0),
                AluOp::SMod => (ALU_MOD, 1),
                AluOp::Xor => (ALU_XOR, 0),
                AluOp::Mov => (ALU_MOV, 0),
                AluOp::Arsh => (ALU_ARSH, 0),
            };
            i.opcode = alu_class(width) | code;
            i.dst = dst.index();
            i.off = off;
            operand(&mut i, src);
        }
        Instruction::Neg { width, dst } => {
            i.opcode = alu_class(width) | ALU_NEG;
            i.dst = dst.index();
        }
        Instruction::MovSx { width, from, dst, src } => {
            i.opcode = alu_class(width) | ALU_MOV | SRC_X;
            i.dst = dst.index();
            i.src = src.index();
            i.off = match from {
                SxWidth::B8 => 8,
                SxWidth::B16 => 16,
                SxWidth::B32 => 32,
            };
        }
        Instruction::End { order, bits, dst } => {
            i.opcode = match order {
                ByteOrder::Le => CLS_ALU | ALU_END | SRC_K,
                ByteOrder::Be => CLS_ALU | ALU_END | SRC_X,
                ByteOrder::Swap => CLS_ALU64 | ALU_END | SRC_K,
            };
            i.dst = dst.index();
            i.imm = bits as i32;
        }
        Instruction::LoadImm64 { dst, value } => {
            i.opcode = LDDW;
            i.dst = dst.index();
            let mut next = Insn::default();
            let (src, lo, hi) = match value {
                Imm64::Const(v) => (PSEUDO_CONST, v as u32 as i32, (v >> 32) as u32 as i32),
                Imm64::MapFd(fd) => (PSEUDO_MAP_FD, fd, 0),
                Imm64::MapValue { fd, offset } => (PSEUDO_MAP_VALUE, fd, offset),
                Imm64::BtfVar { id, obj } => (PSEUDO_BTF_ID, id, obj),
                Imm64::Func(off) => (PSEUDO_FUNC, off, 0),
                Imm64::MapIdx(idx) => (PSEUDO_MAP_IDX, idx, 0),
                Imm64::MapIdxValue { idx, offset } => (PSEUDO_MAP_IDX_VALUE, idx, offset),
            };
            i.src = src;
            i.imm = lo;
            next.imm = hi;
            return (i, Some(next));
        }
        Instruction::LoadPacket { size, mode, imm } => {
            i.imm = imm;
            i.opcode = CLS_LD | size_bits(size);
            match mode {
                PacketMode::Abs => i.opcode |= MODE_ABS,
                PacketMode::Ind(r) => {
                    i.opcode |= MODE_IND;
                    i.src = r.index();
                }
            }
        }
        Instruction::Load { size, dst, src, offset } | Instruction::LoadSx { size, dst, src, offset } => {
            let mode = if matches!(insn, Instruction::Load { .. }) { MODE_MEM } else { MODE_MEMSX };
            i.opcode = CLS_LDX | mode | size_bits(size);
            i.dst = dst.index();
            i.src = src.index();
            i.off = offset;
        }
        Instruction::Store { size, dst, offset, imm } => {
            i.opcode = CLS_ST | MODE_MEM | size_bits(size);
            i.dst = dst.index();
            i.off = offset;
            i.imm = imm;
        }
        Instruction::StoreReg { size, dst, offset, src } => {
            i.opcode = CLS_STX | MODE_MEM | size_bits(size);
            i.dst = dst.index();
            i.src = src.index();
            i.off = offset;
        }
        Instruction::Atomic { width, op, dst, offset, src } => {
            i.opcode = CLS_STX | MODE_ATOMIC | if width == Width::W64 { SIZE_DW } else { SIZE_W };
            i.dst = dst.index();
            i.src = src.index();
            i.off = offset;
            let fetch = |f: bool| if f { ATOMIC_FETCH } else { 0 };
            i.imm = match op {
                AtomicOp::Add { fetch: f } => fetch(f),
                AtomicOp::Or { fetch: f } => 0x40 | fetch(f),
                AtomicOp::And { fetch: f } => 0x50 | fetch(f),
                AtomicOp::Xor { fetch: f } => 0xa0 | fetch(f),
                AtomicOp::Xchg => ATOMIC_XCHG,
                AtomicOp::CmpXchg => ATOMIC_CMPXCHG,
            };
        }
        Instruction::Ja { offset } => {
            i.opcode = CLS_JMP | JMP_JA;
            i.off = offset;
        }
        Instruction::Ja32 { offset } => {
            i.opcode = CLS_JMP32 | JMP_JA;
            i.imm = offset;
        }
        Instruction::Jump { width, cond, dst, src, offset } => {
            i.opcode = jmp_class(width) | cond_code(cond);
            i.dst = dst.index();
            i.off = offset;
            operand(&mut i, src);
        }
        Instruction::Call { id } => {
            i.opcode = CALL;
            i.imm = id as i32;
        }
        Instruction::CallReg { reg } => {
            i.opcode = CALLX;
            i.dst = reg.index();
        }
        Instruction::CallLocal { offset } => {
            i.opcode = CALL;
            i.src = CALL_LOCAL;
            i.imm = offset;
        }
        Instruction::CallBtf { id } => {
            i.opcode = CALL;
            i.src = CALL_BTF;
            i.imm = id as i32;
        }
        Instruction::Exit => i.opcode = EXIT,
    }
    (i, None)
}
