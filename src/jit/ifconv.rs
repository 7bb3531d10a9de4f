//! If-conversion: a conditional jump around a few pure instructions becomes straight-line code that
//! computes both sides and picks each written register with a `select` (a conditional move).
//!
//! BPF has no conditional move, so clang turns `x = c ? a : b` into branches; natively the same source
//! becomes a `cmov`. When the condition is unpredictable (hashes, Collatz steps, comparisons of data),
//! the branch costs far more than the few instructions it skips. Only instructions that cannot fail or
//! touch memory qualify (ALU operations other than division and modulo, negation, sign-extending moves,
//! byte swaps, 64-bit immediates), so running both sides is invisible: the registers after the join are
//! exactly those of the path the interpreter takes. Metered code is left alone, because the budget
//! counts the instructions of the path taken.

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;

use crate::isa::{AluOp, Instruction};
use crate::program::{Cfg, Program};

/// At most this many instructions on each side.
const MAX_SIDE: usize = 4;

/// A conditional jump whose two sides are short and pure, and meet again at `join`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Diamond {
    /// The side that runs when the condition is false (the slots after the jump), in order.
    pub(crate) fall: Vec<(usize, Instruction)>,
    /// The side that runs when the condition is true (from the jump's target), in order.
    pub(crate) taken: Vec<(usize, Instruction)>,
    /// Where both sides continue.
    pub(crate) join: usize,
    /// The slots after the jump no longer translated on their own: the false side and the
    /// unconditional jump that ends it, if any.
    pub(crate) absorbed: Range<usize>,
    /// The slots of the true side.
    pub(crate) absorbed_taken: Range<usize>,
}

/// Whether `insn` has no effect but writing its destination register, and cannot fail.
fn is_pure(insn: &Instruction) -> bool {
    match insn {
        Instruction::Alu { op, .. } => !matches!(op, AluOp::Div | AluOp::Mod | AluOp::SDiv | AluOp::SMod),
        Instruction::Neg { .. } | Instruction::MovSx { .. } | Instruction::End { .. } => true,
        Instruction::LoadImm64 { .. } => true,
        _ => false,
    }
}

/// The diamonds of function `f`, by the slot of their conditional jump.
pub(crate) fn find(program: &Program, cfg: &Cfg, fi: usize) -> BTreeMap<usize, Diamond> {
    let f = program.functions()[fi];
    let len = f.end - f.start;
    let mut at: Vec<Option<Instruction>> = vec![None; len];
    for (pc, insn) in program.function_iter(f) {
        at[pc - f.start] = Some(*insn);
    }
    // How many jumps (not fall-throughs) enter each block.
    let mut incoming = vec![0u32; len];
    for b in cfg.function_blocks(fi) {
        // One edge per jump: a jump to the next instruction is also its fall-through edge (listed
        // twice, next to each other).
        let mut last = None;
        let jumps_in = cfg.predecessors(b).filter(|&p| cfg.taken(p) == Some(b) && last.replace(p) != Some(p)).count();
        incoming[cfg.block(b).start() - f.start] = jumps_in as u32;
    }
    let insn = |pc: usize| at.get(pc.wrapping_sub(f.start)).copied().flatten();
    let targeted = |pc: usize| incoming.get(pc.wrapping_sub(f.start)).copied().unwrap_or(0);
    // The pure run from `pc` up to `stop` (at most MAX_SIDE instructions), and the slot after it.
    let pure_run = |mut pc: usize, stop: usize| {
        let mut side = Vec::new();
        while pc < stop {
            match insn(pc) {
                Some(i) if is_pure(&i) && side.len() < MAX_SIDE => {
                    side.push((pc, i));
                    pc += i.slots();
                }
                _ => break,
            }
        }
        (side, pc)
    };
    // No jump may enter a side other than at its start, which `first` jumps may target.
    let untargeted = |side: &[(usize, Instruction)], first: u32| {
        side.iter().enumerate().all(|(k, &(pc, _))| targeted(pc) <= if k == 0 { first } else { 0 })
    };

    let mut out = BTreeMap::new();
    for (pc, i) in program.function_iter(f) {
        if pc < f.start || pc >= f.end || !matches!(i, Instruction::Jump { .. }) {
            continue;
        }
        let Some(t) = i.branch_target(pc).and_then(|t| usize::try_from(t).ok()) else { continue };
        // `if (c) goto t; <fall>; t:`
        if t > pc + 1 {
            let (fall, e) = pure_run(pc + 1, t);
            if e == t && untargeted(&fall, 0) {
                let d = Diamond { fall, taken: Vec::new(), join: t, absorbed: pc + 1..t, absorbed_taken: t..t };
                out.insert(pc, d);
                continue;
            }
        }
        let (fall, e) = pure_run(pc + 1, f.end);
        if !untargeted(&fall, 0) {
            continue;
        }
        let Some(ja @ (Instruction::Ja { .. } | Instruction::Ja32 { .. })) = insn(e) else { continue };
        if targeted(e) != 0 {
            continue;
        }
        let Some(join) = ja.branch_target(e).and_then(|j| usize::try_from(j).ok()) else { continue };
        if join == t {
            // `if (c) goto t; <fall>; goto t;`
            let d = Diamond { fall, taken: Vec::new(), join, absorbed: pc + 1..e + 1, absorbed_taken: t..t };
            out.insert(pc, d);
        } else if t == e + 1 && join > t {
            // `if (c) goto t; <fall>; goto join; t: <taken>; join:`
            let (taken, end) = pure_run(t, join);
            if end == join && !taken.is_empty() && targeted(t) == 1 && untargeted(&taken, 1) {
                let d = Diamond { fall, taken, join, absorbed: pc + 1..e + 1, absorbed_taken: t..join };
                out.insert(pc, d);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diamonds(asm: &str) -> BTreeMap<usize, Diamond> {
        let p = Program::from_asm(asm).expect("assembles");
        find(&p, &Cfg::new(&p), 0)
    }

    #[test]
    fn forward_triangle() {
        let d = diamonds("mov %r0, 1\njgt %r1, 5, +2\nmov %r0, 2\nadd %r0, %r1\nexit");
        assert_eq!(d.len(), 1);
        let d = &d[&1];
        assert_eq!((d.fall.len(), d.taken.len(), d.join, d.absorbed.clone()), (2, 0, 4, 2..4));
    }

    #[test]
    fn side_ending_in_a_jump_back() {
        let d = diamonds("mov %r0, 9\nrsh %r0, 1\njeq %r0, 0, -2\nmul %r0, 3\nja -4\nexit");
        let d = &d[&2];
        assert_eq!((d.fall.len(), d.join, d.absorbed.clone()), (1, 1, 3..5));
    }

    #[test]
    fn full_diamond() {
        let d = diamonds("jgt %r1, 5, +2\nmov %r0, 1\nja +1\nmov %r0, 2\nexit");
        let d = &d[&0];
        assert_eq!((d.fall.len(), d.taken.len(), d.join), (1, 1, 4));
        assert_eq!((d.absorbed.clone(), d.absorbed_taken.clone()), (1..3, 3..4));
    }

    #[test]
    fn left_alone() {
        // A load, a division, a side entered from elsewhere, a side too long.
        assert!(diamonds("jgt %r1, 5, +1\nldxb %r0, [%r1+0]\nexit").is_empty());
        assert!(diamonds("mov %r0, 0\njgt %r1, 5, +1\ndiv %r0, %r1\nexit").is_empty());
        assert!(diamonds("jeq %r2, 1, +2\njgt %r1, 5, +2\nmov %r0, 1\nmov %r0, 2\nexit").is_empty());
        let long = "jgt %r1, 5, +5\nmov %r0, 1\nmov %r0, 1\nmov %r0, 1\nmov %r0, 1\nmov %r0, 1\nexit";
        assert!(diamonds(long).is_empty());
    }
}
