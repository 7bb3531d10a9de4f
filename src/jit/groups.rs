//! Shared bounds checks in checked mode: accesses at constant distances from the same address, along
//! straight-line code, are tested once as a whole.
//!
//! Parsing code reads many fields at fixed offsets of one pointer (`p[12]`, `p[13]`, `p[23]`), each
//! load usually followed by a conditional jump. Along a *chain* (instructions that fall through into
//! each other, entered only at its start) the translator knows which registers hold the same address
//! up to a constant: it tracks each register as a sum of opaque values plus a constant (a copy keeps
//! the sum, adding a register or a constant adds to it, anything else makes a new opaque value).
//! Accesses whose base has the same opaque part form a group. The group's first access tests the
//! *hull* of all of them (from the lowest to the end of the highest) against the input: if it lies
//! there, every access of the group does, and the others only test a flag. If not (the hull reaches
//! past the input although the accesses that actually run may not), every access makes its own full
//! check in its own place, so results and errors are exactly those of the interpreter: the hull test
//! only ever skips checks that would have passed.

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use crate::isa::{AluOp, Imm64, Instruction, Operand, Reg, Width};
use crate::program::{Cfg, Program};

/// Hulls wider than this are not worth testing (they would rarely fit an input).
const MAX_HULL: i128 = 4096;

/// A sum of more opaque values than this is itself treated as one opaque value, so that a register
/// added to itself over and over (`add r3, r3`) costs constant memory and time per instruction.
const MAX_TERMS: usize = 4;

/// What the check of one access does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// The group's first access: test that `len` bytes from `from` bytes after (usually before) its own
    /// address lie in the input (which is writable), and set the group's flag.
    Leader { group: usize, from: i64, len: u64 },
    /// A later access of the group: a full check only if the flag says the hull test failed.
    Member { group: usize },
}

/// A register's value as the translator knows it: the sum of some opaque values and a constant.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sum {
    terms: Vec<u32>,
    constant: i64,
}

struct Access {
    pc: usize,
    /// Distance of the accessed bytes from the group's opaque part.
    at: i128,
    len: u64,
}

/// The plans of the accesses of `f` that are grouped (at least two accesses per group), and the number
/// of groups. Slots in `skip` (if-converted code, all pure) are not looked at.
pub(crate) fn plan(program: &Program, cfg: &Cfg, fi: usize, skip: &[bool]) -> (BTreeMap<usize, Plan>, usize) {
    let f = program.functions()[fi];
    let len = f.end - f.start;
    // A chain starts with each basic block that is entered other than by falling through from the block
    // before it (a conditional jump's fall-through continues the chain), and after each call: helpers
    // and callees may change what registers hold.
    let mut chain_start = vec![false; len + 1];
    for b in cfg.function_blocks(fi) {
        let only_falls_in = b > cfg.entry(fi)
            && cfg.predecessors(b).len() == 1
            && cfg.predecessors(b).all(|p| p + 1 == b && cfg.fall_through(p) == Some(b) && cfg.taken(p) != Some(b));
        chain_start[cfg.block(b).start() - f.start] = !only_falls_in;
    }
    for (pc, insn) in program.function_iter(f) {
        if matches!(insn, Instruction::Call { .. } | Instruction::CallReg { .. } | Instruction::CallLocal { .. }) {
            chain_start[pc + insn.slots() - f.start] = true;
        }
    }

    let mut plans = BTreeMap::new();
    let mut groups = 0;
    let mut next_id = 0u32;
    let mut fresh = || {
        next_id += 1;
        Sum { terms: vec![next_id], constant: 0 }
    };
    let mut regs: Vec<Sum> = (0..11).map(|_| fresh()).collect();
    let mut accesses: BTreeMap<Vec<u32>, Vec<Access>> = BTreeMap::new();
    let mut close = |accesses: &mut BTreeMap<Vec<u32>, Vec<Access>>, plans: &mut BTreeMap<usize, Plan>| {
        for (_, members) in core::mem::take(accesses) {
            if members.len() < 2 {
                continue;
            }
            let lo = members.iter().map(|a| a.at).min().unwrap_or(0);
            let hi = members.iter().map(|a| a.at + a.len as i128).max().unwrap_or(0);
            if hi - lo > MAX_HULL {
                continue;
            }
            let group = groups;
            groups += 1;
            let leader = &members[0];
            let from = (lo - leader.at) as i64;
            plans.insert(leader.pc, Plan::Leader { group, from, len: (hi - lo) as u64 });
            for m in &members[1..] {
                plans.insert(m.pc, Plan::Member { group });
            }
        }
    };

    for (pc, insn) in program.function_iter(f) {
        if pc < f.start || pc >= f.end || skip[pc - f.start] {
            continue;
        }
        if chain_start[pc - f.start] {
            close(&mut accesses, &mut plans);
            for r in regs.iter_mut() {
                *r = fresh();
            }
        }
        let access = match *insn {
            Instruction::Load { size, src, offset, .. } | Instruction::LoadSx { size, src, offset, .. } => {
                Some((src, offset, size.bytes()))
            }
            Instruction::Store { size, dst, offset, .. } | Instruction::StoreReg { size, dst, offset, .. } => {
                Some((dst, offset, size.bytes()))
            }
            Instruction::Atomic { width, dst, offset, .. } => {
                Some((dst, offset, if width == Width::W64 { 8 } else { 4 }))
            }
            _ => None,
        };
        if let Some((base, offset, size)) = access.filter(|a| a.0 != Reg::R10) {
            let sum = &regs[base.index() as usize];
            let at = sum.constant as i128 + offset as i128;
            accesses.entry(sum.terms.clone()).or_default().push(Access { pc, at, len: size as u64 });
        }
        // What the instruction leaves in registers.
        let idx = |r: Reg| r.index() as usize;
        match *insn {
            Instruction::Alu { width: Width::W64, op: AluOp::Mov, dst, src } => {
                regs[idx(dst)] = match src {
                    Operand::Reg(s) => regs[idx(s)].clone(),
                    Operand::Imm(v) => Sum { terms: Vec::new(), constant: v as i64 },
                };
            }
            Instruction::Alu { width: Width::W64, op: AluOp::Add, dst, src: Operand::Imm(v) } => {
                regs[idx(dst)].constant = regs[idx(dst)].constant.wrapping_add(v as i64);
            }
            Instruction::Alu { width: Width::W64, op: AluOp::Sub, dst, src: Operand::Imm(v) } => {
                regs[idx(dst)].constant = regs[idx(dst)].constant.wrapping_sub(v as i64);
            }
            Instruction::Alu { width: Width::W64, op: AluOp::Add, dst, src: Operand::Reg(s) } => {
                if regs[idx(dst)].terms.len() + regs[idx(s)].terms.len() > MAX_TERMS {
                    regs[idx(dst)] = fresh();
                } else {
                    let add = regs[idx(s)].clone();
                    let d = &mut regs[idx(dst)];
                    d.terms.extend(add.terms);
                    d.terms.sort_unstable();
                    d.constant = d.constant.wrapping_add(add.constant);
                }
            }
            Instruction::LoadImm64 { dst, value: Imm64::Const(v) } => {
                regs[idx(dst)] = Sum { terms: Vec::new(), constant: v as i64 };
            }
            // Anything else that writes a register gives it a value of its own.
            _ => {
                if let Some(r) = insn.written() {
                    regs[idx(r)] = fresh();
                }
            }
        }
    }
    close(&mut accesses, &mut plans);
    (plans, groups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;

    fn plans(asm: &str) -> BTreeMap<usize, Plan> {
        let p = Program::from_asm(asm).expect("assembles");
        let f = p.functions()[0];
        plan(&p, &Cfg::new(&p), 0, &vec![false; f.end - f.start]).0
    }

    #[test]
    fn fields_of_one_pointer_along_a_chain() {
        let p = plans(
            "mov %r3, %r1\nadd %r3, %r2\nldxb %r4, [%r3+12]\njne %r4, 8, +5\n\
             mov %r5, %r1\nadd %r5, %r2\nldxh %r4, [%r5+20]\nstxb [%r3+10], %r4\nexit\nexit",
        );
        assert_eq!(p[&2], Plan::Leader { group: 0, from: -2, len: 12 });
        assert_eq!((p[&6], p[&7]), (Plan::Member { group: 0 }, Plan::Member { group: 0 }));
    }

    /// A register doubled forty times: its sum stays small (it was 2^40 terms).
    #[test]
    fn doubling_a_register_keeps_the_plan_small() {
        let mut asm = String::from("mov %r3, %r1\n");
        for _ in 0..40 {
            asm.push_str("add %r3, %r3\n");
        }
        asm.push_str("ldxb %r0, [%r3+0]\nldxb %r0, [%r3+1]\nexit");
        let p = plans(&asm);
        assert_eq!(p.len(), 2, "the two loads through r3 still share a check: {p:?}");
    }

    #[test]
    fn no_group_across_a_jump_target_or_a_redefinition() {
        // pc 3 is a jump target: a new chain; r1 redefined by a load: a new value.
        let p = plans("ldxb %r2, [%r1+0]\njeq %r2, 0, +1\nldxb %r2, [%r1+1]\nldxb %r3, [%r1+2]\nexit");
        assert_eq!(p.keys().copied().collect::<Vec<_>>(), [0, 2], "{p:?}");
        let p = plans("ldxb %r2, [%r1+0]\nldxdw %r1, [%r1+8]\nldxb %r3, [%r1+2]\nexit");
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(!p.contains_key(&2));
    }
}
