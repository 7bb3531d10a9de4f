//! Bytes to typed instructions, rejecting every encoding RFC 9669 does not define.

use alloc::vec::Vec;

use super::opcode::*;
use super::{
    AluOp, AtomicOp, ByteOrder, Cond, Imm64, Insn, Instruction, Operand, PacketMode, Reg, Size, SxWidth, Width,
    INSN_SIZE,
};

/// Why a byte sequence is not a valid program; every variant names the slot index `pc`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The program has no instructions.
    #[error("the program is empty")]
    Empty,
    /// The length is not a multiple of 8 bytes.
    #[error("program length {len} is not a multiple of 8 bytes (trailing bytes after slot {pc})")]
    TrailingBytes {
        /// Index of the incomplete slot.
        pc: usize,
        /// Length of the byte sequence.
        len: usize,
    },
    /// The opcode is not defined.
    #[error("instruction {pc}: unknown opcode {opcode:#04x}")]
    UnknownOpcode {
        /// Slot index.
        pc: usize,
        /// The opcode byte.
        opcode: u8,
    },
    /// A register field names a register above `r10`.
    #[error("instruction {pc}: invalid {field} register r{reg}")]
    BadRegister {
        /// Slot index.
        pc: usize,
        /// `"dst"` or `"src"`.
        field: &'static str,
        /// The register number.
        reg: u8,
    },
    /// A field that must be zero for this opcode is not.
    #[error("instruction {pc} (opcode {opcode:#04x}): reserved field {field} is not zero")]
    ReservedField {
        /// Slot index.
        pc: usize,
        /// The opcode byte.
        opcode: u8,
        /// The field's name.
        field: &'static str,
    },
    /// A field holds a value the opcode does not define.
    #[error("instruction {pc} (opcode {opcode:#04x}): invalid {field} value {value}")]
    InvalidField {
        /// Slot index.
        pc: usize,
        /// The opcode byte.
        opcode: u8,
        /// The field's name.
        field: &'static str,
        /// The value found.
        value: i64,
    },
    /// A 64-bit immediate load is missing its second slot, or the second slot is malformed.
    #[error("instruction {pc}: lddw is cut in half (missing or malformed second slot)")]
    IncompleteLddw {
        /// Slot index of the first half.
        pc: usize,
    },
    /// A jump leads outside the program.
    #[error("instruction {pc}: jump to {target} is outside the program")]
    JumpOutOfRange {
        /// Slot index.
        pc: usize,
        /// The absolute target.
        target: i64,
    },
    /// A jump leads into the second slot of an `lddw`.
    #[error("instruction {pc}: jump to {target} lands inside an lddw")]
    JumpIntoLddw {
        /// Slot index.
        pc: usize,
        /// The absolute target.
        target: i64,
    },
    /// A local call leads outside the program or into the middle of an `lddw`.
    #[error("instruction {pc}: call to {target}, which is no function")]
    CallToNoFunction {
        /// Slot index.
        pc: usize,
        /// The absolute target.
        target: i64,
    },
}

/// Decodes a whole program: every slot, the pairing of `lddw` halves, and the range of every jump and
/// local-call target. Returns the instructions in order (an `lddw` is one entry for two slots).
pub fn decode(bytes: &[u8]) -> Result<Vec<Instruction>, DecodeError> {
    if bytes.len() % INSN_SIZE != 0 {
        return Err(DecodeError::TrailingBytes { pc: bytes.len() / INSN_SIZE, len: bytes.len() });
    }
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let slots: Vec<Insn> = bytes
        .chunks_exact(INSN_SIZE)
        .map(|c| {
            let mut b = [0u8; INSN_SIZE];
            b.copy_from_slice(c);
            Insn::from_bytes(b)
        })
        .collect();

    let mut out = Vec::with_capacity(slots.len());
    // `second_half[i]` is true when slot i is the second half of an lddw.
    let mut second_half = alloc::vec![false; slots.len()];
    let mut pc = 0;
    while pc < slots.len() {
        let insn = decode_one(&slots, pc)?;
        if insn.slots() == 2 {
            second_half[pc + 1] = true;
        }
        pc += insn.slots();
        out.push(insn);
    }

    let mut pc = 0;
    for insn in &out {
        if let Some(target) = insn.branch_target(pc) {
            let is_call = matches!(insn, Instruction::CallLocal { .. });
            let in_range = target >= 0 && (target as usize) < slots.len();
            if !in_range || second_half[target as usize] {
                return Err(match (is_call, in_range) {
                    (true, _) => DecodeError::CallToNoFunction { pc, target },
                    (false, false) => DecodeError::JumpOutOfRange { pc, target },
                    (false, true) => DecodeError::JumpIntoLddw { pc, target },
                });
            }
        }
        pc += insn.slots();
    }
    Ok(out)
}

/// Decodes the instruction at slot `pc` on its own (reading the next slot for an `lddw`), without
/// checking jump targets.
pub fn decode_one(slots: &[Insn], pc: usize) -> Result<Instruction, DecodeError> {
    let Some(&insn) = slots.get(pc) else {
        return Err(DecodeError::Empty);
    };
    let d = Decoder { insn, pc };
    match insn.opcode & CLASS_MASK {
        CLS_ALU => d.alu(Width::W32),
        CLS_ALU64 => d.alu(Width::W64),
        CLS_JMP => d.jmp(Width::W64),
        CLS_JMP32 => d.jmp(Width::W32),
        CLS_LD => d.ld(slots.get(pc + 1).copied()),
        CLS_LDX => d.ldx(),
        CLS_ST => d.st(),
        _ => d.stx(),
    }
}

struct Decoder {
    insn: Insn,
    pc: usize,
}

impl Decoder {
    fn unknown(&self) -> DecodeError {
        DecodeError::UnknownOpcode { pc: self.pc, opcode: self.insn.opcode }
    }

    fn reg(&self, n: u8, field: &'static str) -> Result<Reg, DecodeError> {
        Reg::new(n).ok_or(DecodeError::BadRegister { pc: self.pc, field, reg: n })
    }

    fn dst(&self) -> Result<Reg, DecodeError> {
        self.reg(self.insn.dst, "dst")
    }

    fn src(&self) -> Result<Reg, DecodeError> {
        self.reg(self.insn.src, "src")
    }

    /// Requires the named fields to be zero.
    fn zero(&self, fields: &[&'static str]) -> Result<(), DecodeError> {
        for &field in fields {
            let value = match field {
                "dst" => self.insn.dst as i64,
                "src" => self.insn.src as i64,
                "offset" => self.insn.off as i64,
                _ => self.insn.imm as i64,
            };
            if value != 0 {
                return Err(DecodeError::ReservedField { pc: self.pc, opcode: self.insn.opcode, field });
            }
        }
        Ok(())
    }

    fn invalid(&self, field: &'static str, value: i64) -> DecodeError {
        DecodeError::InvalidField { pc: self.pc, opcode: self.insn.opcode, field, value }
    }

    /// The second operand of an ALU or jump instruction, checking the unused field is zero.
    fn operand(&self) -> Result<Operand, DecodeError> {
        if self.insn.opcode & SRC_X != 0 {
            self.zero(&["imm"])?;
            Ok(Operand::Reg(self.src()?))
        } else {
            self.zero(&["src"])?;
            Ok(Operand::Imm(self.insn.imm))
        }
    }

    fn alu(&self, width: Width) -> Result<Instruction, DecodeError> {
        let i = self.insn;
        let dst = self.dst()?;
        let code = i.opcode & OP_MASK;
        let signed = |this: &Self, unsigned: AluOp, signed: AluOp| match i.off {
            0 => Ok(unsigned),
            1 => Ok(signed),
            v => Err(this.invalid("offset", v as i64)),
        };
        let op = match code {
            ALU_ADD => AluOp::Add,
            ALU_SUB => AluOp::Sub,
            ALU_MUL => AluOp::Mul,
            ALU_DIV => signed(self, AluOp::Div, AluOp::SDiv)?,
            ALU_OR => AluOp::Or,
            ALU_AND => AluOp::And,
            ALU_LSH => AluOp::Lsh,
            ALU_RSH => AluOp::Rsh,
            ALU_MOD => signed(self, AluOp::Mod, AluOp::SMod)?,
            ALU_XOR => AluOp::Xor,
            ALU_ARSH => AluOp::Arsh,
            ALU_MOV => {
                if i.off != 0 {
                    let from = match (i.off, width) {
                        (8, _) => SxWidth::B8,
                        (16, _) => SxWidth::B16,
                        (32, Width::W64) => SxWidth::B32,
                        (v, _) => return Err(self.invalid("offset", v as i64)),
                    };
                    if i.opcode & SRC_X == 0 {
                        return Err(self.invalid("offset", i.off as i64));
                    }
                    self.zero(&["imm"])?;
                    return Ok(Instruction::MovSx { width, from, dst, src: self.src()? });
                }
                AluOp::Mov
            }
            ALU_NEG => {
                if i.opcode & SRC_X != 0 {
                    return Err(self.unknown());
                }
                self.zero(&["src", "offset", "imm"])?;
                return Ok(Instruction::Neg { width, dst });
            }
            ALU_END => {
                let order = match (width, i.opcode & SRC_X != 0) {
                    (Width::W32, false) => ByteOrder::Le,
                    (Width::W32, true) => ByteOrder::Be,
                    (Width::W64, false) => ByteOrder::Swap,
                    (Width::W64, true) => return Err(self.unknown()),
                };
                self.zero(&["src", "offset"])?;
                let bits = match i.imm {
                    16 | 32 | 64 => i.imm as u8,
                    v => return Err(self.invalid("imm", v as i64)),
                };
                return Ok(Instruction::End { order, bits, dst });
            }
            _ => return Err(self.unknown()),
        };
        if !matches!(code, ALU_DIV | ALU_MOD) {
            self.zero(&["offset"])?;
        }
        Ok(Instruction::Alu { width, op, dst, src: self.operand()? })
    }

    fn jmp(&self, width: Width) -> Result<Instruction, DecodeError> {
        let i = self.insn;
        let cond = match i.opcode & OP_MASK {
            JMP_JA => {
                if i.opcode & SRC_X != 0 {
                    return Err(self.unknown());
                }
                return match width {
                    Width::W64 => {
                        self.zero(&["dst", "src", "imm"])?;
                        Ok(Instruction::Ja { offset: i.off })
                    }
                    Width::W32 => {
                        self.zero(&["dst", "src", "offset"])?;
                        Ok(Instruction::Ja32 { offset: i.imm })
                    }
                };
            }
            JMP_CALL if width == Width::W64 => {
                if i.opcode & SRC_X != 0 {
                    self.zero(&["src", "offset", "imm"])?;
                    return Ok(Instruction::CallReg { reg: self.dst()? });
                }
                self.zero(&["dst", "offset"])?;
                return match i.src {
                    CALL_HELPER => Ok(Instruction::Call { id: i.imm as u32 }),
                    CALL_LOCAL => Ok(Instruction::CallLocal { offset: i.imm }),
                    CALL_BTF => Ok(Instruction::CallBtf { id: i.imm as u32 }),
                    v => Err(self.invalid("src", v as i64)),
                };
            }
            JMP_EXIT if width == Width::W64 && i.opcode & SRC_X == 0 => {
                self.zero(&["dst", "src", "offset", "imm"])?;
                return Ok(Instruction::Exit);
            }
            JMP_JEQ => Cond::Eq,
            JMP_JGT => Cond::Gt,
            JMP_JGE => Cond::Ge,
            JMP_JSET => Cond::Set,
            JMP_JNE => Cond::Ne,
            JMP_JSGT => Cond::Sgt,
            JMP_JSGE => Cond::Sge,
            JMP_JLT => Cond::Lt,
            JMP_JLE => Cond::Le,
            JMP_JSLT => Cond::Slt,
            JMP_JSLE => Cond::Sle,
            _ => return Err(self.unknown()),
        };
        let dst = self.dst()?;
        Ok(Instruction::Jump { width, cond, dst, src: self.operand()?, offset: i.off })
    }

    fn size(&self) -> Size {
        match self.insn.opcode & SIZE_MASK {
            SIZE_W => Size::W,
            SIZE_H => Size::H,
            SIZE_B => Size::B,
            _ => Size::DW,
        }
    }

    fn ld(&self, next: Option<Insn>) -> Result<Instruction, DecodeError> {
        let i = self.insn;
        let size = self.size();
        match i.opcode & MODE_MASK {
            MODE_IMM if size == Size::DW => {
                self.zero(&["offset"])?;
                let dst = self.dst()?;
                let Some(next) = next else {
                    return Err(DecodeError::IncompleteLddw { pc: self.pc });
                };
                if next.opcode != 0 || next.dst != 0 || next.src != 0 || next.off != 0 {
                    return Err(DecodeError::IncompleteLddw { pc: self.pc });
                }
                let need_zero_next = || {
                    if next.imm != 0 {
                        Err(DecodeError::ReservedField { pc: self.pc + 1, opcode: 0, field: "imm" })
                    } else {
                        Ok(())
                    }
                };
                let value = match i.src {
                    PSEUDO_CONST => Imm64::Const((i.imm as u32 as u64) | ((next.imm as u32 as u64) << 32)),
                    PSEUDO_MAP_FD => {
                        need_zero_next()?;
                        Imm64::MapFd(i.imm)
                    }
                    PSEUDO_MAP_VALUE => Imm64::MapValue { fd: i.imm, offset: next.imm },
                    PSEUDO_BTF_ID => Imm64::BtfVar { id: i.imm, obj: next.imm },
                    PSEUDO_FUNC => {
                        need_zero_next()?;
                        Imm64::Func(i.imm)
                    }
                    PSEUDO_MAP_IDX => {
                        need_zero_next()?;
                        Imm64::MapIdx(i.imm)
                    }
                    PSEUDO_MAP_IDX_VALUE => Imm64::MapIdxValue { idx: i.imm, offset: next.imm },
                    v => return Err(self.invalid("src", v as i64)),
                };
                Ok(Instruction::LoadImm64 { dst, value })
            }
            MODE_ABS | MODE_IND if size != Size::DW => {
                self.zero(&["dst", "offset"])?;
                let mode = if i.opcode & MODE_MASK == MODE_ABS {
                    self.zero(&["src"])?;
                    PacketMode::Abs
                } else {
                    PacketMode::Ind(self.src()?)
                };
                Ok(Instruction::LoadPacket { size, mode, imm: i.imm })
            }
            _ => Err(self.unknown()),
        }
    }

    fn ldx(&self) -> Result<Instruction, DecodeError> {
        let size = self.size();
        let sx = match self.insn.opcode & MODE_MASK {
            MODE_MEM => false,
            MODE_MEMSX if size != Size::DW => true,
            _ => return Err(self.unknown()),
        };
        self.zero(&["imm"])?;
        let (dst, src, offset) = (self.dst()?, self.src()?, self.insn.off);
        Ok(if sx {
            Instruction::LoadSx { size, dst, src, offset }
        } else {
            Instruction::Load { size, dst, src, offset }
        })
    }

    fn st(&self) -> Result<Instruction, DecodeError> {
        if self.insn.opcode & MODE_MASK != MODE_MEM {
            return Err(self.unknown());
        }
        self.zero(&["src"])?;
        Ok(Instruction::Store { size: self.size(), dst: self.dst()?, offset: self.insn.off, imm: self.insn.imm })
    }

    fn stx(&self) -> Result<Instruction, DecodeError> {
        let i = self.insn;
        let size = self.size();
        let (dst, src, offset) = (self.dst()?, self.src()?, i.off);
        match i.opcode & MODE_MASK {
            MODE_MEM => {
                self.zero(&["imm"])?;
                Ok(Instruction::StoreReg { size, dst, offset, src })
            }
            MODE_ATOMIC if matches!(size, Size::W | Size::DW) => {
                let width = if size == Size::W { Width::W32 } else { Width::W64 };
                let fetch = i.imm & ATOMIC_FETCH != 0;
                let op = match i.imm {
                    ATOMIC_XCHG => AtomicOp::Xchg,
                    ATOMIC_CMPXCHG => AtomicOp::CmpXchg,
                    0x00 | 0x01 => AtomicOp::Add { fetch },
                    0x40 | 0x41 => AtomicOp::Or { fetch },
                    0x50 | 0x51 => AtomicOp::And { fetch },
                    0xa0 | 0xa1 => AtomicOp::Xor { fetch },
                    v => return Err(self.invalid("imm", v as i64)),
                };
                Ok(Instruction::Atomic { width, op, dst, offset, src })
            }
            _ => Err(self.unknown()),
        }
    }
}
