//! Shadow state of a checked execution in shadow mode ([`VmBuilder::shadow`](crate::VmBuilder::shadow)):
//! which registers of the running function hold a value, and which bytes of the stack were written, so
//! that a read of anything else stops the program with [`ExecError::UninitRead`] instead of reading the
//! zero the engines put there.
//!
//! The rules are the verifier's. A program starts with r1, r2 and r10; a bpf-to-bpf callee with r10 and
//! whatever of r1-r5 its caller had, and a fresh frame; a tail-call target as a program does, in a fresh
//! frame. After a helper call, a legacy packet load or a return from a callee, r0 holds a value and
//! r1-r5 do not. Otherwise an instruction reads the registers [`Instruction::reads`] names and writes
//! the one [`Instruction::written`] names, except that a helper call reads only the arguments its
//! signature uses, and a local call none. Loads and atomics read the stack bytes they touch, stores and
//! atomics write them; helpers read the memory of their [`ReadMem`](ArgKind::ReadMem),
//! [`MapKey`](ArgKind::MapKey) and [`MapValue`](ArgKind::MapValue) arguments and write that of their
//! [`WriteMem`](ArgKind::WriteMem) arguments, all of it, as their signatures say. Only accesses that lie
//! wholly in the live frames are tracked: any other is out of bounds (checked mode stops it) or reaches
//! memory that is not the stack.
//!
//! Bytes are tracked exactly: a store at a variable offset writes the bytes it writes, not every byte
//! it might have written, as the verifier takes it to (see [`verifier`](crate::verifier)).

use crate::helpers::{ArgKind, Helper};
use crate::isa::Instruction;
use crate::link::{Env, ExecError, LinkedProgram, Uninit};
use crate::maps;
use crate::memory::{MemoryMap, FRAME_SIZE, MAX_FRAMES, STACK_SIZE};

/// r1 to r5, the argument registers.
const ARGS: u16 = 0b11_1110;
/// r0.
const R0: u16 = 1;
/// r10, the frame pointer.
const FP: u16 = 1 << 10;
/// What a program starts with: r1 (the context), r2 (its length) and r10.
const ENTRY: u16 = 1 << 1 | 1 << 2 | FP;

/// The shadow state of one execution.
pub(super) struct Shadow {
    /// The registers of the running function that hold a value: bit n for rn.
    regs: u16,
    /// The registers of each calling function, by its depth, while its callee runs.
    saved: [u16; MAX_FRAMES],
    /// One bit per byte of the stack buffer, lowest address first: set when written.
    written: [u64; STACK_SIZE / 64],
    /// Address of the lowest byte of the stack buffer.
    base: u64,
    /// One past the highest byte of the stack buffer: the entry function's frame pointer.
    top: u64,
}

impl Shadow {
    /// The state at a program's entry, for the stack buffer that ends at `stack_hi`.
    pub(super) fn new(stack_hi: u64) -> Shadow {
        Shadow {
            regs: ENTRY,
            saved: [0; MAX_FRAMES],
            written: [0; STACK_SIZE / 64],
            base: stack_hi - STACK_SIZE as u64,
            top: stack_hi,
        }
    }

    /// Checks what the instruction at slot `pc` of `program` reads, before it runs on registers `r` in
    /// the function at depth `depth`, and records what it writes. If the instruction then fails, the
    /// execution ends anyway; only a tail call's outcome needs telling afterwards
    /// ([`tail_call`](Shadow::tail_call)).
    #[inline(never)]
    pub(super) fn before(
        &mut self,
        program: &LinkedProgram,
        pc: usize,
        r: &[u64; 16],
        depth: usize,
        mm: &MemoryMap<'_>,
        env: &Env,
    ) -> Result<(), ExecError> {
        let p = program.program();
        // The second slot of an `lddw` is never reached.
        let Some(insn) = p.index_of(pc).map(|i| p.instructions()[i]) else { return Ok(()) };
        let at = Access { pc, mm, fp: self.top - (FRAME_SIZE * depth) as u64 };
        match insn {
            Instruction::Call { id } => {
                if let Some(helper) = env.helper(id) {
                    self.helper(&at, helper, r, env)?;
                }
                self.regs = (self.regs & !ARGS) | R0;
            }
            Instruction::CallReg { reg } => {
                self.reg(pc, reg.index())?;
                // An unknown id stops the engine with `UnknownHelper`.
                if let Some(helper) = u32::try_from(r[reg.index() as usize]).ok().and_then(|id| env.helper(id)) {
                    self.helper(&at, helper, r, env)?;
                }
                self.regs = (self.regs & !ARGS) | R0;
            }
            Instruction::CallLocal { .. } => {
                // Past the depth limit the engine stops the execution.
                if depth + 1 < MAX_FRAMES {
                    self.saved[depth] = self.regs;
                    self.regs = (self.regs & ARGS) | FP;
                    self.clear_frame(depth + 1);
                }
            }
            Instruction::Exit => {
                self.reg(pc, 0)?;
                if depth > 0 {
                    self.regs = (self.saved[depth - 1] & !ARGS) | R0;
                }
            }
            _ => {
                for reg in insn.reads().iter() {
                    self.reg(pc, reg.index())?;
                }
                let addr = |base: crate::isa::Reg, off: i16| r[base.index() as usize].wrapping_add(off as i64 as u64);
                match insn {
                    Instruction::Load { size, src, offset, .. } | Instruction::LoadSx { size, src, offset, .. } => {
                        self.read(&at, addr(src, offset), size.bytes() as u64)?;
                    }
                    Instruction::Store { size, dst, offset, .. } | Instruction::StoreReg { size, dst, offset, .. } => {
                        self.write(&at, addr(dst, offset), size.bytes() as u64);
                    }
                    Instruction::Atomic { width, dst, offset, .. } => {
                        let len = if width == crate::isa::Width::W64 { 8 } else { 4 };
                        // Read and written back: the bytes were written already if the read passes.
                        self.read(&at, addr(dst, offset), len)?;
                    }
                    _ => {}
                }
                if let Some(w) = insn.written() {
                    self.regs |= 1 << w.index();
                }
                if let Instruction::LoadPacket { .. } = insn {
                    self.regs &= !ARGS;
                }
            }
        }
        Ok(())
    }

    /// A `bpf_loop` at depth `depth` starts an iteration of its callback: r1, r2 and r10 hold values, in
    /// a fresh frame. `first`: the loop's first call (its caller's registers are saved then; later
    /// iterations follow the callback's `exit`, which restored them).
    /// For `bpf_for_each_map_elem` (`key` > 0), r1 to r4 hold values and the first `key` bytes of the
    /// frame (the key's copy), rounded up to whole 8-byte slots, are written.
    pub(super) fn callback(&mut self, depth: usize, first: bool, key: usize) {
        if depth + 1 < MAX_FRAMES {
            if first {
                self.saved[depth] = self.regs;
            }
            self.regs = if key > 0 { 0b1_1110 | FP } else { 1 << 1 | 1 << 2 | FP };
            self.clear_frame(depth + 1);
            let lo = STACK_SIZE - FRAME_SIZE * (depth + 2);
            // Its slots, as the verifier takes them: the bytes after the key are zeros.
            for i in lo..lo + key.div_ceil(8).saturating_mul(8).min(FRAME_SIZE) {
                self.written[i / 64] |= 1 << (i % 64);
            }
        }
    }

    /// A tail call at depth `depth` went to its target: it starts as a program does, in a fresh frame.
    pub(super) fn tail_call(&mut self, depth: usize) {
        self.regs = ENTRY;
        self.clear_frame(depth);
    }

    /// Register `reg` must hold a value.
    #[inline]
    fn reg(&self, pc: usize, reg: u8) -> Result<(), ExecError> {
        if self.regs & (1 << reg) == 0 {
            return Err(ExecError::UninitRead { pc, what: Uninit::Register(reg) });
        }
        Ok(())
    }

    /// A call of `helper` with registers `r`: the arguments its signature uses must hold values, the
    /// memory it reads must have been written, and the memory it writes is written.
    fn helper(&mut self, at: &Access<'_>, helper: &Helper, r: &[u64; 16], env: &Env) -> Result<(), ExecError> {
        let args = helper.sig().args;
        for (i, kind) in args.iter().enumerate() {
            if !matches!(*kind, ArgKind::Unused | ArgKind::OptionalScalar) {
                self.reg(at.pc, i as u8 + 1)?;
            }
        }
        let mut map = None;
        for (i, kind) in args.iter().enumerate() {
            let (ptr, next) = (r[i + 1], r[i + 2]);
            match *kind {
                ArgKind::MapPtr | ArgKind::MapMut | ArgKind::MapOf(_) => {
                    map = maps::handle_index(ptr).and_then(|m| env.map(m)).map(|m| m.def());
                }
                ArgKind::MapKey => {
                    if let Some(def) = map {
                        self.read(at, ptr, def.key_size as u64)?;
                    }
                }
                ArgKind::MapValue => {
                    if let Some(def) = map {
                        self.read(at, ptr, def.value_size as u64)?;
                    }
                }
                ArgKind::ReadMem => self.read(at, ptr, next)?,
                // A Bloom filter's peek reads the value (see `verifier::call`).
                ArgKind::MapValueOut => {
                    if let Some(def) = map.filter(|d| d.map_type == maps::MapType::BloomFilter) {
                        self.read(at, ptr, def.value_size as u64)?;
                    }
                }
                _ => {}
            }
        }
        let mut map = None;
        for (i, kind) in args.iter().enumerate() {
            match *kind {
                ArgKind::MapPtr | ArgKind::MapMut | ArgKind::MapOf(_) => {
                    map = maps::handle_index(r[i + 1]).and_then(|m| env.map(m)).map(|m| m.def());
                }
                ArgKind::WriteMem => self.write(at, r[i + 1], r[i + 2]),
                ArgKind::MapValueOut => match map {
                    Some(def) if def.map_type == maps::MapType::BloomFilter => {}
                    Some(def) => self.write(at, r[i + 1], def.value_size as u64),
                    None => {}
                },
                _ => {}
            }
        }
        Ok(())
    }

    /// The bit of the stack byte at `addr`, if `len` bytes from there lie in the live frames.
    fn range(&self, at: &Access<'_>, addr: u64, len: u64) -> Option<core::ops::Range<usize>> {
        let (lo, hi) = (at.mm.stack_lo, at.mm.stack_hi);
        let off = addr.wrapping_sub(lo);
        if len == 0 || off > hi - lo || hi - lo - off < len {
            return None;
        }
        let start = (addr - self.base) as usize;
        Some(start..start + len as usize)
    }

    /// `len` bytes at `addr` are read: if they lie in the live frames, each must have been written.
    fn read(&self, at: &Access<'_>, addr: u64, len: u64) -> Result<(), ExecError> {
        let Some(bytes) = self.range(at, addr, len) else { return Ok(()) };
        for i in bytes {
            if self.written[i / 64] & (1 << (i % 64)) == 0 {
                let byte = self.base + i as u64;
                return Err(ExecError::UninitRead { pc: at.pc, what: Uninit::Stack(byte.wrapping_sub(at.fp) as i64) });
            }
        }
        Ok(())
    }

    /// `len` bytes at `addr` are written.
    fn write(&mut self, at: &Access<'_>, addr: u64, len: u64) {
        let Some(bytes) = self.range(at, addr, len) else { return };
        for i in bytes {
            self.written[i / 64] |= 1 << (i % 64);
        }
    }

    /// Frame `depth` (0 = the entry function's, at the top) starts again: nothing in it is written.
    fn clear_frame(&mut self, depth: usize) {
        let end = (STACK_SIZE - FRAME_SIZE * depth) / 64;
        self.written[end - FRAME_SIZE / 64..end].fill(0);
    }
}

/// Where an instruction's accesses happen.
struct Access<'a> {
    /// Its slot.
    pc: usize,
    /// The execution's memory: the live frames.
    mm: &'a MemoryMap<'a>,
    /// The running function's frame pointer.
    fp: u64,
}
