//! Byte-copy loops: loops whose straight-line body loads one byte and stores it, with both addresses
//! one byte further on each iteration (`dst[i] = src[i]`, `i` counting to a bound).
//!
//! Such a loop copies forward one byte at a time, which is what `memmove` does unless the destination
//! starts inside the source (`0 < dst - src < count`, where the byte loop repeats a pattern instead).
//! An engine that reaches the loop's backward jump (one iteration done, another due) may therefore
//! carry out all the remaining iterations at once, when
//!
//! 1. [`CopyLoop::remaining`] iterations are due (the test's bound is reached without wrapping), at
//!    least [`MIN_BULK`] of them,
//! 2. both byte ranges lie in memory private to the execution (the input, the live stack frames), so
//!    the copy touches exactly the bytes the loop would, and nothing else can see them meanwhile,
//! 3. the destination does not start inside the source,
//!
//! and then leave every register as the loop would have ([`CopyLoop::finish`]) and continue at
//! [`CopyLoop::exit`]. When a condition fails the loop runs as written, so its errors (an access out
//! of bounds, in checked mode) stay where they were.
//!
//! Recognition is symbolic: each register is tracked through one iteration as a sum of registers'
//! values at the iteration's start plus a constant, the loaded byte, or anything else.

use alloc::vec::Vec;

use super::Program;
use crate::isa::{AluOp, Cond, Instruction, Operand, Reg, RegSet, Size, Width};

/// The fewest remaining iterations worth a bulk copy: below, calling `memmove` costs more than the
/// iterations it saves.
pub(crate) const MIN_BULK: u64 = 16;

#[cfg(test)]
std::thread_local! {
    /// Bulk copies made on this thread (tests count them to know which path a run took).
    pub(crate) static BULK_COPIES: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
}

/// Counts a bulk copy (in tests).
#[inline(always)]
pub(crate) fn count_bulk_copy() {
    #[cfg(test)]
    BULK_COPIES.with(|c| c.set(c.get() + 1));
}

/// Most instructions in a loop body considered.
const MAX_BODY: usize = 24;

/// A sum of the registers in `regs` (each once), as they are at the start of an iteration, plus
/// `add`; zero-extended from 32 bits if `narrow`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sum {
    /// The registers added.
    pub(crate) regs: RegSet,
    /// The constant added.
    pub(crate) add: i64,
    /// Whether the result is truncated to 32 bits and zero-extended.
    pub(crate) narrow: bool,
}

impl Sum {
    /// The value with the registers' values given by `value`.
    pub(crate) fn eval(&self, mut value: impl FnMut(Reg) -> u64) -> u64 {
        let v = self.regs.iter().fold(self.add as u64, |acc, r| acc.wrapping_add(value(r)));
        if self.narrow {
            v as u32 as u64
        } else {
            v
        }
    }
}

/// A register each iteration adds `step` to (zero-extending the result if `narrow`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Step {
    /// The register.
    pub(crate) reg: Reg,
    /// What an iteration adds.
    pub(crate) step: i64,
    /// Whether the register holds the sum's low 32 bits, zero-extended.
    pub(crate) narrow: bool,
}

impl Step {
    /// The register's value `n` iterations after it held `v`.
    pub(crate) fn after(&self, v: u64, n: u64) -> u64 {
        let r = v.wrapping_add(n.wrapping_mul(self.step as u64));
        if self.narrow {
            r as u32 as u64
        } else {
            r
        }
    }
}

/// What the loop compares to decide on another iteration, normalised: it goes on while `reg`, stepping
/// by one towards `bound` (up when `up`), has not reached it, compared in `width` bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Test {
    /// The counting register (one of the loop's steps, by ±1).
    pub(crate) reg: Reg,
    /// What it counts to: an invariant register or a constant (already extended as the width says).
    pub(crate) bound: Operand,
    /// The constant bound as compared (for an immediate `bound`; inclusive tests are made exclusive).
    pub(crate) bound_value: u64,
    /// 32 or 64-bit comparison.
    pub(crate) width: Width,
    /// Whether the register counts up.
    pub(crate) up: bool,
}

/// A recognised byte-copy loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CopyLoop {
    /// The slot of the loop's first instruction.
    pub(crate) head: usize,
    /// The slot of the backward jump to `head`: a conditional jump (another iteration when it holds)
    /// or a `ja` right after the conditional jump that leaves the loop.
    pub(crate) back: usize,
    /// Where execution continues when the loop ends.
    pub(crate) exit: usize,
    /// The loaded byte's address at the start of an iteration.
    pub(crate) src: Sum,
    /// The stored byte's address at the start of an iteration.
    pub(crate) dst: Sum,
    /// Registers the loop steps (not those it leaves alone).
    pub(crate) steps: Vec<Step>,
    /// Registers each iteration sets to a sum of registers (as at the iteration's start).
    pub(crate) derived: Vec<(Reg, Sum)>,
    /// Registers left holding the last byte copied.
    pub(crate) bytes: RegSet,
    /// The loop's test.
    pub(crate) test: Test,
}

impl CopyLoop {
    /// How many more iterations the loop makes when its backward jump is reached with registers `r`
    /// and another iteration is due (the jump's condition held). Loops that end only by wrapping around
    /// are not recognised.
    pub(crate) fn remaining(&self, r: impl Fn(Reg) -> u64) -> u64 {
        let x = r(self.test.reg);
        let y = match self.test.bound {
            Operand::Reg(b) => r(b),
            Operand::Imm(_) => self.test.bound_value,
        };
        let m = if self.test.up { y.wrapping_sub(x) } else { x.wrapping_sub(y) };
        match self.test.width {
            Width::W64 => m,
            Width::W32 => m as u32 as u64,
        }
    }

    /// The step of register `reg`, if the loop steps it.
    fn step_of(&self, reg: Reg) -> Option<&Step> {
        self.steps.iter().find(|s| s.reg == reg)
    }

    /// A register's value at the start of iteration `n` (0: the next) from its value `v` now.
    fn at_iteration(&self, reg: Reg, v: u64, n: u64) -> u64 {
        self.step_of(reg).map_or(v, |s| s.after(v, n))
    }

    /// The source and destination addresses of the next iteration, from the registers now.
    pub(crate) fn addresses(&self, r: impl Fn(Reg) -> u64) -> (u64, u64) {
        (self.src.eval(&r), self.dst.eval(&r))
    }

    /// Sets the registers `r` as `m` (at least one) more iterations leave them, the last byte copied
    /// being `last`.
    pub(crate) fn finish(&self, m: u64, last: u64, r: &mut [u64; 16]) {
        let start = *r;
        let before_last = |reg: Reg| self.at_iteration(reg, start[reg.index() as usize], m - 1);
        for (reg, sum) in &self.derived {
            r[reg.index() as usize] = sum.eval(before_last);
        }
        for s in &self.steps {
            r[s.reg.index() as usize] = s.after(start[s.reg.index() as usize], m);
        }
        for reg in self.bytes.iter() {
            r[reg.index() as usize] = last;
        }
    }
}

/// What a register holds during the symbolic run of one iteration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sym {
    Sum(Sum),
    /// The byte the iteration loaded, zero-extended.
    Byte,
    Other,
}

/// The byte-copy loops of `program`, by the slot of their backward jump.
pub(crate) fn find(program: &Program) -> Vec<CopyLoop> {
    let insns = program.instructions();
    let mut found = Vec::new();
    // Slots some jump goes to.
    let mut targeted = alloc::vec![false; program.slot_count() + 1];
    for (pc, insn) in program.iter() {
        if let Some(t) = insn.branch_target(pc).and_then(|t| usize::try_from(t).ok()) {
            if let Some(flag) = targeted.get_mut(t) {
                *flag = true;
            }
        }
    }
    for (i, (back, insn)) in program.iter().enumerate() {
        let Some(head) = insn.branch_target(back).and_then(|t| usize::try_from(t).ok()) else { continue };
        if head >= back || insn.is_call() {
            continue;
        }
        let Some(first) = program.index_of(head) else { continue };
        let recognised = match *insn {
            // Another iteration when the condition holds; the loop ends by falling through.
            Instruction::Jump { width, cond, dst, src, .. } => {
                analyse(&insns[first..i], (width, cond, dst, src)).map(|(l, test)| (l, test, back + 1))
            }
            // `jcc out; ja head`: another iteration when the condition does not hold. The `ja` must be
            // reached only past that condition: not by a jump.
            Instruction::Ja { .. } | Instruction::Ja32 { .. } if i > first && !targeted[back] => match insns[i - 1] {
                Instruction::Jump { width, cond, dst, src, .. } => {
                    let out = insns[i - 1].branch_target(back - 1).unwrap_or(0) as usize;
                    let Some(cond) = inverse(cond) else { continue };
                    if (head..=back).contains(&out) {
                        continue;
                    }
                    analyse(&insns[first..i - 1], (width, cond, dst, src)).map(|(l, test)| (l, test, out))
                }
                _ => None,
            },
            _ => None,
        };
        if let Some((body, test, exit)) = recognised {
            found.push(CopyLoop { head, back, exit, test, ..body });
        }
    }
    found
}

/// The condition that holds where `c` does not (`None` for `jset`).
fn inverse(c: Cond) -> Option<Cond> {
    Some(match c {
        Cond::Eq => Cond::Ne,
        Cond::Ne => Cond::Eq,
        Cond::Gt => Cond::Le,
        Cond::Le => Cond::Gt,
        Cond::Ge => Cond::Lt,
        Cond::Lt => Cond::Ge,
        Cond::Sgt => Cond::Sle,
        Cond::Sle => Cond::Sgt,
        Cond::Sge => Cond::Slt,
        Cond::Slt => Cond::Sge,
        Cond::Set => return None,
    })
}

/// The condition with its operands exchanged (`a < b` is `b > a`).
fn swapped(c: Cond) -> Cond {
    match c {
        Cond::Gt => Cond::Lt,
        Cond::Lt => Cond::Gt,
        Cond::Ge => Cond::Le,
        Cond::Le => Cond::Ge,
        Cond::Sgt => Cond::Slt,
        Cond::Slt => Cond::Sgt,
        Cond::Sge => Cond::Sle,
        Cond::Sle => Cond::Sge,
        other => other,
    }
}

/// Runs one iteration of `body` symbolically and, if it is a byte copy whose loop goes on while
/// `test` (width, condition, operands) holds, describes it (with placeholder slots).
fn analyse(body: &[Instruction], test: (Width, Cond, Reg, Operand)) -> Option<(CopyLoop, Test)> {
    if body.is_empty() || body.len() > MAX_BODY {
        return None;
    }
    let mut sym: [Sym; Reg::COUNT] = core::array::from_fn(|i| {
        let r = Reg::new(i as u8).unwrap_or(Reg::R0);
        Sym::Sum(Sum { regs: RegSet::EMPTY.with(r), add: 0, narrow: false })
    });
    let mut src = None;
    let mut dst = None;
    // A 64-bit address: a sum that is not truncated.
    let address = |s: Sym, offset: i16| match s {
        Sym::Sum(s) if !s.narrow => Some(Sum { add: s.add.wrapping_add(offset as i64), ..s }),
        _ => None,
    };
    for insn in body {
        match *insn {
            Instruction::Alu { width, op, dst: d, src: operand } => {
                let a = sym[d.index() as usize];
                let b = match operand {
                    Operand::Reg(r) => sym[r.index() as usize],
                    Operand::Imm(v) => {
                        Sym::Sum(Sum { regs: RegSet::EMPTY, add: imm_value(width, v) as i64, narrow: false })
                    }
                };
                sym[d.index() as usize] = alu(width, op, a, b, matches!(operand, Operand::Imm(_)));
            }
            Instruction::Load { size: Size::B, dst: d, src: base, offset } => {
                if src.is_some() {
                    return None;
                }
                src = Some(address(sym[base.index() as usize], offset)?);
                sym[d.index() as usize] = Sym::Byte;
            }
            Instruction::StoreReg { size: Size::B, dst: base, offset, src: v } => {
                if dst.is_some() || sym[v.index() as usize] != Sym::Byte {
                    return None;
                }
                dst = Some(address(sym[base.index() as usize], offset)?);
            }
            Instruction::Neg { dst: d, .. }
            | Instruction::MovSx { dst: d, .. }
            | Instruction::End { dst: d, .. }
            | Instruction::LoadImm64 { dst: d, .. } => sym[d.index() as usize] = Sym::Other,
            _ => return None,
        }
    }
    let (src, dst) = (src?, dst?);

    // Each register ends as it started plus a step, as a sum of registers that did, or as the byte.
    let mut steps = Vec::new();
    let mut derived = Vec::new();
    let mut bytes = RegSet::EMPTY;
    let mut stepped = RegSet::EMPTY; // registers that are their own start plus a step (0 included)
    for (i, s) in sym.iter().enumerate() {
        let r = Reg::new(i as u8)?;
        match *s {
            Sym::Sum(sum) if sum.regs == RegSet::EMPTY.with(r) => {
                stepped = stepped.with(r);
                // A 32-bit step is its low 32 bits, sign-extended: counting down by one is -1.
                let step = if sum.narrow { sum.add as i32 as i64 } else { sum.add };
                if step != 0 || sum.narrow {
                    steps.push(Step { reg: r, step, narrow: sum.narrow });
                }
            }
            Sym::Sum(sum) => derived.push((r, sum)),
            Sym::Byte => bytes = bytes.with(r),
            Sym::Other => return None,
        }
    }
    // Sums read registers as they were at the iteration's start: only those the loop steps (by
    // themselves) have a value known at each iteration.
    let over_stepped = |s: &Sum| s.regs.iter().all(|r| stepped.contains(r));
    if !derived.iter().all(|(_, s)| over_stepped(s)) || !over_stepped(&src) || !over_stepped(&dst) {
        return None;
    }
    let step_of = |r: Reg| steps.iter().find(|s| s.reg == r).copied();
    // Both addresses advance by one byte an iteration.
    let advance = |s: &Sum| {
        s.regs.iter().try_fold(0i64, |acc, r| {
            let st = step_of(r).map_or(Some(0), |st| (!st.narrow).then_some(st.step))?;
            acc.checked_add(st)
        })
    };
    if advance(&src) != Some(1) || advance(&dst) != Some(1) {
        return None;
    }

    let test = normalise_test(test, &steps, stepped)?;
    let l = CopyLoop { head: 0, back: 0, exit: 0, src, dst, steps, derived, bytes, test };
    Some((l, test))
}

/// An immediate operand's value in an operation of `width` bits.
fn imm_value(width: Width, v: i32) -> u64 {
    match width {
        Width::W64 => v as i64 as u64,
        Width::W32 => v as u32 as u64,
    }
}

/// The symbolic result of an ALU operation.
fn alu(width: Width, op: AluOp, a: Sym, b: Sym, imm: bool) -> Sym {
    let (Sym::Sum(x), Sym::Sum(y)) = (a, b) else {
        // A move of the byte keeps it (its 32-bit move too: it is zero-extended already).
        return if op == AluOp::Mov && b == Sym::Byte { Sym::Byte } else { Sym::Other };
    };
    let narrow = width == Width::W32;
    match op {
        AluOp::Mov => Sym::Sum(Sum { narrow: narrow || y.narrow, ..y }),
        // A 64-bit sum of a truncated value would need the truncation kept apart: not tracked.
        AluOp::Add | AluOp::Sub if !narrow && (x.narrow || y.narrow) => Sym::Other,
        AluOp::Add if !x.regs.intersects(y.regs) => {
            Sym::Sum(Sum { regs: x.regs.union(y.regs), add: x.add.wrapping_add(y.add), narrow })
        }
        AluOp::Sub if imm => Sym::Sum(Sum { add: x.add.wrapping_sub(y.add), narrow, ..x }),
        _ => Sym::Other,
    }
}

/// The loop's test in normal form, if the loop ends by it: the register counts by one towards the
/// bound and stops there.
fn normalise_test(
    (width, cond, dst, src): (Width, Cond, Reg, Operand),
    steps: &[Step],
    stepped: RegSet,
) -> Option<Test> {
    let step_of = |r: Reg| steps.iter().find(|s| s.reg == r).copied();
    let invariant = |r: Reg| stepped.contains(r) && step_of(r).is_none();
    let (cond, reg, bound) = match src {
        Operand::Reg(s) if step_of(dst).is_none() && step_of(s).is_some() && invariant(dst) => {
            (swapped(cond), s, Operand::Reg(dst))
        }
        Operand::Reg(s) if invariant(s) => (cond, dst, src),
        Operand::Imm(_) => (cond, dst, src),
        Operand::Reg(_) => return None,
    };
    let step = step_of(reg)?;
    // A 64-bit comparison of a register holding 32 bits would wrap where the comparison does not.
    if step.narrow && width == Width::W64 {
        return None;
    }
    let up = match step.step {
        1 => true,
        -1 => false,
        _ => return None,
    };
    let mask = |v: u64| if width == Width::W32 { v as u32 as u64 } else { v };
    let imm = match bound {
        Operand::Imm(v) if width == Width::W64 => v as i64 as u64,
        Operand::Imm(v) => v as u32 as u64,
        Operand::Reg(_) => 0,
    };
    // The extreme values, in the comparison's width: inclusive bounds there never stop the loop.
    let (umax, smax, smin) = match width {
        Width::W64 => (u64::MAX, i64::MAX as u64, i64::MIN as u64),
        Width::W32 => (u32::MAX as u64, i32::MAX as u64, i32::MIN as u32 as u64),
    };
    let is_imm = matches!(bound, Operand::Imm(_));
    let bound_value = match (cond, up) {
        (Cond::Ne, _) | (Cond::Lt | Cond::Slt, true) | (Cond::Gt | Cond::Sgt, false) => imm,
        // `<=` a constant is `<` the next one, unless no value is beyond it.
        (Cond::Le, true) if is_imm && imm != umax => mask(imm + 1),
        (Cond::Sle, true) if is_imm && imm != smax => mask(imm.wrapping_add(1)),
        (Cond::Ge, false) if is_imm && imm != 0 => imm - 1,
        (Cond::Sge, false) if is_imm && imm != smin => mask(imm.wrapping_sub(1)),
        _ => return None,
    };
    Some(Test { reg, bound, bound_value, width, up })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loops(asm: &str) -> Vec<CopyLoop> {
        find(&Program::from_asm(asm).expect("assembles"))
    }

    #[test]
    fn clang_index_loop_is_found() {
        // As clang -O2 compiles `for (i = 0; i < 2048; i++) p[2048 + i] = p[i];`.
        let l = loops(
            "mov r2, 0\n mov r3, r1\n add r3, r2\n ldxb r4, [r3+0]\n stxb [r3+2048], r4\n add r2, 1\n \
             jeq r2, 2048, +1\n ja -7\n mov r0, 0\n exit",
        );
        assert_eq!(l.len(), 1);
        let l = &l[0];
        assert_eq!((l.head, l.back, l.exit), (1, 7, 8));
        assert_eq!(
            l.test,
            Test { reg: Reg::R2, bound: Operand::Imm(2048), bound_value: 2048, width: Width::W64, up: true }
        );
        let r1r2 = RegSet::EMPTY.with(Reg::R1).with(Reg::R2);
        assert_eq!(l.src, Sum { regs: r1r2, add: 0, narrow: false });
        assert_eq!(l.dst, Sum { regs: r1r2, add: 2048, narrow: false });
        assert_eq!(l.derived, [(Reg::R3, Sum { regs: r1r2, add: 0, narrow: false })]);
        assert_eq!(l.steps, [Step { reg: Reg::R2, step: 1, narrow: false }]);
        assert!(l.bytes.contains(Reg::new(4).unwrap()));
        let mut r = [0u64; 16];
        r[1] = 1000;
        r[2] = 1;
        assert_eq!(l.remaining(|x| r[x.index() as usize]), 2047);
        assert_eq!(l.addresses(|x| r[x.index() as usize]), (1001, 3049));
        l.finish(2047, 0xab, &mut r);
        assert_eq!((r[1], r[2], r[3], r[4]), (1000, 2048, 1000 + 2047, 0xab));
    }

    #[test]
    fn pointer_loops_and_conditional_back_edges_are_found() {
        // Two pointers, a down-counting 32-bit counter, the test on the backward jump.
        let l =
            loops("ldxb r4, [r1+0]\n stxb [r2+0], r4\n add r1, 1\n add r2, 1\n add32 r3, -1\n jne32 r3, 0, -6\n exit");
        assert_eq!(l.len(), 1);
        assert_eq!((l[0].head, l[0].back, l[0].exit), (0, 5, 6));
        assert!(!l[0].test.up);
        let mut r = [0u64; 16];
        r[3] = 100;
        assert_eq!(l[0].remaining(|x| r[x.index() as usize]), 100);
        // A register bound compared from the other side: `end > p` counts p up to end.
        let l = loops("ldxb r4, [r1+0]\n stxb [r1+64], r4\n add r1, 1\n jgt r5, r1, -4\n exit");
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].test.bound, Operand::Reg(Reg::new(5).unwrap()));
        assert!(l[0].test.up);
        // An inclusive constant bound becomes exclusive.
        let l = loops("ldxb r4, [r1+0]\n stxb [r1+64], r4\n add r1, 1\n add r3, 1\n jle r3, 99, -5\n exit");
        assert_eq!(l[0].test.bound_value, 100);
    }

    #[test]
    fn other_loops_are_not() {
        for asm in [
            // Copies two bytes a time.
            "ldxh r4, [r1+0]\n stxh [r1+64], r4\n add r1, 2\n add r3, 1\n jne r3, 9, -5\n exit",
            // Pointers step by two.
            "ldxb r4, [r1+0]\n stxb [r1+64], r4\n add r1, 2\n add r3, 1\n jne r3, 9, -5\n exit",
            // Source up, destination down.
            "ldxb r4, [r1+0]\n stxb [r2+0], r4\n add r1, 1\n add r2, -1\n add r3, 1\n jne r3, 9, -6\n exit",
            // The stored value is not the loaded byte.
            "ldxb r4, [r1+0]\n add r4, 1\n stxb [r1+64], r4\n add r1, 1\n add r3, 1\n jne r3, 9, -6\n exit",
            // Counts by two towards the bound (may step over it).
            "ldxb r4, [r1+0]\n stxb [r1+64], r4\n add r1, 1\n add r3, 2\n jne r3, 9, -5\n exit",
            // The bound changes in the loop.
            "ldxb r4, [r1+0]\n stxb [r1+64], r4\n add r1, 1\n add r5, 1\n jne r1, r5, -5\n exit",
            // Counts down to `<` a bound: ends only by wrapping.
            "ldxb r4, [r1+0]\n stxb [r1+64], r4\n add r1, 1\n add r3, -1\n jlt r3, 9, -5\n exit",
            // `<=` the largest value never ends.
            "ldxb r4, [r1+0]\n stxb [r1+64], r4\n add r1, 1\n add r3, 1\n jle r3, -1, -5\n exit",
            // A register the loop computes from itself in another way.
            "ldxb r4, [r1+0]\n stxb [r1+64], r4\n add r1, 1\n mul r6, 3\n add r3, 1\n jne r3, 9, -6\n exit",
            // A call in the body.
            "ldxb r4, [r1+0]\n stxb [r1+64], r4\n call 5\n add r1, 1\n add r3, 1\n jne r3, 9, -6\n exit",
            // The `ja` closing the loop is also reached by a jump from before the loop, where the test
            // did not run.
            "ja +5\n ldxb r4, [r1+0]\n stxb [r1+64], r4\n add r1, 1\n add r3, 1\n jeq r3, 9, +1\n ja -6\n exit",
            // A 64-bit test of a 32-bit counter.
            "ldxb r4, [r1+0]\n stxb [r1+64], r4\n add r1, 1\n add32 r3, 1\n jne r3, 9, -5\n exit",
        ] {
            assert_eq!(loops(asm), [], "{asm}");
        }
    }
}
