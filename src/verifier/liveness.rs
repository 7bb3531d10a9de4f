//! Liveness: which registers and stack slots of the current frame may still be read before they are
//! written, at the start of every instruction. The analysis forgets the others where states are
//! stored and joined, as the kernel's verifier does, so that values nothing reads neither grow the
//! states nor keep a loop's fixpoint from settling.
//!
//! Registers are exact per function (calls read r1 to r5 and clobber r0 to r5, `exit` reads r0). Stack
//! slots are tracked through accesses at constant offsets from r10; in a function where the frame
//! pointer is used any other way (copied, passed, compared or stored), or whose address the program
//! takes (a callback, whose frame may hold a key the engine put there), any access may reach any
//! slot, so all of that function's slots count as live everywhere.

use alloc::vec;
use alloc::vec::Vec;

use crate::isa::{Instruction, Reg, RegSet};
use crate::program::cfg::Cfg;
use crate::program::Program;

/// What is live at one instruction: bit `r` of `regs` for register `r`, bit `i` of `slots` for stack
/// slot `i` (bytes `-8 * (i + 1)..-8 * i` of the frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Live {
    pub(crate) regs: u16,
    pub(crate) slots: u64,
}

impl Live {
    /// Everything (r10 is never forgotten either way).
    const ALL: Live = Live { regs: u16::MAX, slots: u64::MAX };

    fn union(self, o: Live) -> Live {
        Live { regs: self.regs | o.regs, slots: self.slots | o.slots }
    }
}

/// Live sets at the start of every slot of a program.
pub(crate) struct Liveness {
    at: Vec<Live>,
}

fn mask(set: RegSet) -> u16 {
    set.iter().fold(0, |m, r| m | 1 << r.index())
}

/// The slots that bytes `off..off + size` of the frame (relative to r10) touch.
fn slots_of(off: i64, size: u64) -> u64 {
    let frame = crate::memory::FRAME_SIZE as i64;
    let (lo, hi) = (off.max(-frame), (off + size as i64).min(0));
    let mut m = 0u64;
    let mut b = lo;
    while b < hi {
        let slot = (-b - 1) / 8;
        m |= 1 << slot;
        b += 1;
    }
    m
}

/// Whether `insn` uses r10 other than as the base address of a load, store or atomic.
fn frame_pointer_escapes(insn: &Instruction) -> bool {
    let r10 = Reg::R10;
    match *insn {
        Instruction::Load { .. } | Instruction::LoadSx { .. } | Instruction::Store { .. } => false,
        Instruction::StoreReg { src, .. } | Instruction::Atomic { src, .. } => src == r10,
        _ => insn.reads().contains(r10),
    }
}

/// `live` before `insn`, given `live` after it. `exact_stack` says whether r10-relative accesses are
/// the only way the function reaches its frame.
fn transfer(insn: &Instruction, mut live: Live, exact_stack: bool) -> Live {
    let r10 = Reg::R10;
    // Writes first: what an instruction writes is dead before it, unless it also reads it.
    let mut kills = insn.written().map_or(0, |r| 1u16 << r.index());
    if insn.clobbers_arguments() {
        kills |= 0b11_1111; // r0 to r5: the result, and the clobbered argument registers
    }
    live.regs &= !kills;
    live.regs |= mask(insn.reads());
    if exact_stack {
        match *insn {
            Instruction::Load { size, src, offset, .. } | Instruction::LoadSx { size, src, offset, .. }
                if src == r10 =>
            {
                live.slots |= slots_of(offset as i64, size.bytes() as u64);
            }
            Instruction::Store { size, dst, offset, .. } | Instruction::StoreReg { size, dst, offset, .. }
                if dst == r10 && size.bytes() == 8 && offset % 8 == 0 =>
            {
                live.slots &= !slots_of(offset as i64, 8);
            }
            Instruction::Atomic { width, dst, offset, .. } if dst == r10 => {
                let size = if width == crate::isa::Width::W64 { 8 } else { 4 };
                live.slots |= slots_of(offset as i64, size);
            }
            _ => {}
        }
    }
    live
}

impl Liveness {
    /// Computes the live sets of `program` over its control-flow graph.
    pub(crate) fn new(program: &Program, cfg: &Cfg) -> Liveness {
        let insns = program.instructions();
        let pcs: Vec<usize> = program.iter().map(|(pc, _)| pc).collect();
        let mut at = vec![Live::default(); program.slot_count() + 1];
        for f in 0..cfg.function_count() {
            let blocks = cfg.function_blocks(f);
            // A callback's frame starts with what the engine put there (the key of
            // `bpf_for_each_map_elem`), which it reads through an argument, not r10.
            let exact_stack = !cfg.address_taken(f)
                && cfg.function_insns(f).all(|i| insns.get(i).is_none_or(|x| !frame_pointer_escapes(x)));
            let all_slots = if exact_stack { 0 } else { Live::ALL.slots };
            // Live-in of each block of the function, until nothing changes. Blocks are visited last to
            // first, so that straight-line code settles in one pass.
            let mut live_in = vec![Live::default(); blocks.len()];
            let mut changed = true;
            while changed {
                changed = false;
                for b in blocks.clone().rev() {
                    let mut live = Live { regs: 0, slots: all_slots };
                    for s in cfg.successors(b) {
                        if blocks.contains(&s) {
                            live = live.union(live_in[s - blocks.start]);
                        }
                    }
                    for i in cfg.blocks()[b].insns().rev() {
                        if let Some(insn) = insns.get(i) {
                            live = transfer(insn, live, exact_stack);
                            live.slots |= all_slots;
                        }
                    }
                    if live != live_in[b - blocks.start] {
                        live_in[b - blocks.start] = live;
                        changed = true;
                    }
                }
            }
            // The live set at each instruction of the function, from its block's live-out.
            for b in blocks.clone() {
                let mut live = Live { regs: 0, slots: all_slots };
                for s in cfg.successors(b) {
                    if blocks.contains(&s) {
                        live = live.union(live_in[s - blocks.start]);
                    }
                }
                for i in cfg.blocks()[b].insns().rev() {
                    let (Some(insn), Some(&pc)) = (insns.get(i), pcs.get(i)) else { continue };
                    live = transfer(insn, live, exact_stack);
                    live.slots |= all_slots;
                    if let Some(slot) = at.get_mut(pc) {
                        *slot = live;
                    }
                }
            }
        }
        Liveness { at }
    }

    /// What is live at the start of slot `pc` (everything, for a slot outside the program).
    pub(crate) fn at(&self, pc: usize) -> Live {
        self.at.get(pc).copied().unwrap_or(Live::ALL)
    }
}
