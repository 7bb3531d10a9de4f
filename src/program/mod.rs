//! A decoded, structurally valid program: instructions plus the boundaries of its functions.

use alloc::string::String;
use alloc::vec::Vec;

use crate::isa::{self, AsmError, DecodeError, Imm64, Instruction, Reg};

pub mod cfg;
pub(crate) mod copy_loop;

pub use cfg::Cfg;

/// Most slots a program may have (the kernel's limit for privileged programs).
pub const MAX_SLOTS: usize = 1 << 20;

/// Why instructions do not form a valid program; every variant names the slot index `pc`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProgramError {
    /// Assembly text is invalid.
    #[error("assembly: {0}")]
    Asm(#[from] AsmError),
    /// An instruction is not validly encoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The program has more than [`MAX_SLOTS`] slots.
    #[error("the program has {slots} slots, more than the limit of {MAX_SLOTS}")]
    TooLarge {
        /// Number of slots.
        slots: usize,
    },
    /// The last instruction of a function can fall through past its end.
    #[error("instruction {pc}: execution can fall off the end of the function at {function}")]
    FallsOffEnd {
        /// Slot index of the last instruction.
        pc: usize,
        /// First slot of the function.
        function: usize,
    },
    /// An instruction writes r10, the frame pointer, which is read-only.
    #[error("instruction {pc}: r10, the frame pointer, is read-only")]
    WritesFramePointer {
        /// Slot index of the instruction.
        pc: usize,
    },
    /// A jump leaves the function it is in.
    #[error("instruction {pc}: jump to {target} leaves the function starting at {function}")]
    JumpAcrossFunction {
        /// Slot index of the jump.
        pc: usize,
        /// The absolute target.
        target: usize,
        /// First slot of the jump's function.
        function: usize,
    },
}

/// One function of a program (the entry function, or a bpf-to-bpf call target): slots `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Function {
    /// First slot.
    pub start: usize,
    /// One past the last slot.
    pub end: usize,
}

/// A structurally valid program: every instruction well encoded, every jump inside its function, every
/// local call to the start of a function, and no function that can run off its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    instructions: Vec<Instruction>,
    /// Slot index of each instruction.
    pcs: Vec<usize>,
    functions: Vec<Function>,
    slots: usize,
    name: String,
    uses_frame_pointer: bool,
}

impl Program {
    /// Decodes and validates raw bytecode (8 bytes per slot, little-endian).
    pub fn from_bytes(bytes: &[u8]) -> Result<Program, ProgramError> {
        if bytes.len() / isa::INSN_SIZE > MAX_SLOTS {
            return Err(ProgramError::TooLarge { slots: bytes.len() / isa::INSN_SIZE });
        }
        Program::from_instructions(isa::decode(bytes)?)
    }

    /// Assembles text (see [`isa::asm`]) and validates the result.
    pub fn from_asm(text: &str) -> Result<Program, ProgramError> {
        Program::from_instructions(isa::assemble(text)?)
    }

    /// Validates decoded instructions. Their encoding is re-checked, so any `Instruction` values can be
    /// passed in.
    pub fn from_instructions(instructions: Vec<Instruction>) -> Result<Program, ProgramError> {
        // Re-decoding the encoding checks targets and field ranges the same way as for bytes.
        let bytes = isa::encode(&instructions);
        if bytes.len() / isa::INSN_SIZE > MAX_SLOTS {
            return Err(ProgramError::TooLarge { slots: bytes.len() / isa::INSN_SIZE });
        }
        let instructions = isa::decode(&bytes)?;
        let mut pcs = Vec::with_capacity(instructions.len());
        let mut pc = 0;
        for insn in &instructions {
            pcs.push(pc);
            pc += insn.slots();
        }
        let slots = pc;

        let mut starts: Vec<usize> = alloc::vec![0];
        for (insn, &pc) in instructions.iter().zip(&pcs) {
            let target = match *insn {
                Instruction::CallLocal { .. } => insn.branch_target(pc),
                Instruction::LoadImm64 { value: Imm64::Func(off), .. } => Some(pc as i64 + 1 + off as i64),
                _ => None,
            };
            if let Some(t) = target {
                if t < 0 || t as usize >= slots || pcs.binary_search(&(t as usize)).is_err() {
                    return Err(DecodeError::CallToNoFunction { pc, target: t }.into());
                }
                starts.push(t as usize);
            }
        }
        starts.sort_unstable();
        starts.dedup();
        let functions: Vec<Function> = starts
            .iter()
            .enumerate()
            .map(|(i, &start)| Function { start, end: starts.get(i + 1).copied().unwrap_or(slots) })
            .collect();

        let mut f = 0;
        for (i, (insn, &pc)) in instructions.iter().zip(&pcs).enumerate() {
            while functions[f].end <= pc {
                f += 1;
            }
            let func = functions[f];
            if let (false, Some(t)) = (matches!(insn, Instruction::CallLocal { .. }), insn.branch_target(pc)) {
                let t = t as usize; // in range: checked by decode
                if t < func.start || t >= func.end {
                    return Err(ProgramError::JumpAcrossFunction { pc, target: t, function: func.start });
                }
            }
            if insn.written() == Some(Reg::R10) {
                return Err(ProgramError::WritesFramePointer { pc });
            }
            let last_of_function = pcs.get(i + 1).is_none_or(|&next| next >= func.end);
            if last_of_function && insn.falls_through() {
                return Err(ProgramError::FallsOffEnd { pc, function: func.start });
            }
        }
        // Register fields of value 10 (r10) in any slot.
        let uses_frame_pointer = bytes.chunks_exact(isa::INSN_SIZE).any(|s| s[1] & 0x0f == 10 || s[1] >> 4 == 10);
        Ok(Program { instructions, pcs, functions, slots, name: String::new(), uses_frame_pointer })
    }

    /// Sets the program's name (an ELF section or symbol name, for messages).
    pub fn with_name(mut self, name: impl Into<String>) -> Program {
        self.name = name.into();
        self
    }

    /// The program's name; empty unless set.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The instructions in order.
    pub fn instructions(&self) -> &[Instruction] {
        &self.instructions
    }

    /// The instructions with their slot indices.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Instruction)> {
        self.pcs.iter().copied().zip(&self.instructions)
    }

    /// The functions, the entry function first, in slot order.
    pub fn functions(&self) -> &[Function] {
        &self.functions
    }

    /// The positions (in [`instructions`](Program::instructions), not slots) of the instructions of
    /// function `f`.
    pub fn instruction_range(&self, f: Function) -> core::ops::Range<usize> {
        self.pcs.partition_point(|&pc| pc < f.start)..self.pcs.partition_point(|&pc| pc < f.end)
    }

    /// The position (in [`instructions`](Program::instructions)) of the instruction at slot `pc`, if an
    /// instruction starts there.
    pub fn index_of(&self, pc: usize) -> Option<usize> {
        self.pcs.binary_search(&pc).ok()
    }

    /// The instructions of function `f` with their slot indices.
    pub fn function_iter(&self, f: Function) -> impl Iterator<Item = (usize, &Instruction)> {
        let range = self.instruction_range(f);
        self.pcs[range.clone()].iter().copied().zip(&self.instructions[range])
    }

    /// Whether any instruction names r10, the frame pointer: the only way a program reaches its stack.
    pub fn uses_frame_pointer(&self) -> bool {
        self.uses_frame_pointer
    }

    /// Number of 8-byte slots.
    pub fn slot_count(&self) -> usize {
        self.slots
    }

    /// The program's bytecode.
    pub fn to_bytes(&self) -> Vec<u8> {
        isa::encode(&self.instructions)
    }

    /// The program as assembly text, one instruction per line.
    pub fn disassemble(&self) -> String {
        isa::disassemble(&self.instructions)
    }
}
