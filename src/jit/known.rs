//! What checked code knows about the pointers in registers, without the verifier: a register set in
//! the current block (or on the only way into it) to r10 plus a constant, or to what an inline map
//! lookup returned. Accesses through such a register need no bounds check when they stay inside the
//! current frame or the map value: r10 is read-only and its frame lives while the function runs, and
//! map values live as long as the compiled code.

use crate::isa::{AluOp, Cond, Instruction, Operand, Reg, Width};
use crate::memory::FRAME_SIZE;

/// What a register is known to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Known {
    /// Nothing.
    Nothing,
    /// r10 plus this offset.
    Frame(i64),
    /// r10 plus an offset not known here (an index added to a frame address): most likely in the
    /// frames, so checked there first.
    FrameBased,
    /// A map value of `size` bytes (writable by programs if `writable`) plus `offset`, or (unless
    /// `non_null`) 0 plus `offset`: what a map lookup returns.
    Value { size: u32, offset: i64, writable: bool, non_null: bool },
}

/// What each register is known to hold at a point of a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Facts([Known; 11]);

impl Default for Facts {
    /// Nothing known but r10.
    fn default() -> Facts {
        let mut k = [Known::Nothing; 11];
        k[Reg::R10.index() as usize] = Known::Frame(0);
        Facts(k)
    }
}

impl Facts {
    /// What `r` holds.
    pub(crate) fn get(&self, r: Reg) -> Known {
        self.0[r.index() as usize]
    }

    /// Forgets what `r` holds.
    pub(crate) fn forget(&mut self, r: Reg) {
        if r != Reg::R10 {
            self.0[r.index() as usize] = Known::Nothing;
        }
    }

    /// What `insn` leaves in the register it writes: `mov rX, rY`, `add rX, imm` and `sub rX, imm`
    /// (64-bit) carry what is known of the source.
    pub(crate) fn result_of(&self, insn: &Instruction) -> Known {
        let moved = |k: Known, by: i64| match k {
            Known::Frame(o) => o.checked_add(by).map_or(Known::Nothing, Known::Frame),
            Known::Value { size, offset, writable, non_null } => offset
                .checked_add(by)
                .map_or(Known::Nothing, |offset| Known::Value { size, offset, writable, non_null }),
            other => other,
        };
        let frame_based = |k: Known| matches!(k, Known::Frame(_) | Known::FrameBased);
        match *insn {
            Instruction::Alu { width: Width::W64, op: AluOp::Mov, src: Operand::Reg(src), .. } => self.get(src),
            Instruction::Alu { width: Width::W64, op: AluOp::Add, dst, src: Operand::Reg(src) }
                if frame_based(self.get(dst)) || frame_based(self.get(src)) =>
            {
                Known::FrameBased
            }
            Instruction::Alu { width: Width::W64, op: AluOp::Sub, dst, src: Operand::Reg(_) }
                if frame_based(self.get(dst)) =>
            {
                Known::FrameBased
            }
            Instruction::Alu { width: Width::W64, op: AluOp::Add, dst, src: Operand::Imm(v) } => {
                moved(self.get(dst), v as i64)
            }
            Instruction::Alu { width: Width::W64, op: AluOp::Sub, dst, src: Operand::Imm(v) } => {
                (v as i64).checked_neg().map_or(Known::Nothing, |by| moved(self.get(dst), by))
            }
            _ => Known::Nothing,
        }
    }

    /// Records what `insn` (just translated) left: `result` (from `result_of`, or what a call
    /// returned) in the register it writes; calls and legacy packet loads clobber r1-r5 as well.
    pub(crate) fn apply(&mut self, insn: &Instruction, result: Known) {
        if insn.clobbers_arguments() {
            for r in 1..=5 {
                self.0[r] = Known::Nothing;
            }
        }
        if let Some(r) = insn.written() {
            if r != Reg::R10 {
                self.0[r.index() as usize] = result;
            }
        }
    }

    /// Whether `len` bytes at `base + offset` are inside the current frame.
    pub(crate) fn in_frame(&self, base: Reg, offset: i64, len: u32) -> bool {
        match self.get(base) {
            Known::Frame(k) => {
                k.checked_add(offset).is_some_and(|at| (-(FRAME_SIZE as i64)..=-(len as i64)).contains(&at))
            }
            _ => false,
        }
    }

    /// Whether `r` is an address in the frames, or most likely one.
    pub(crate) fn frame_based(&self, r: Reg) -> bool {
        matches!(self.get(r), Known::Frame(_) | Known::FrameBased)
    }

    /// Whether an access of `len` bytes at `base + offset` (a store if `write`) is inside a map value
    /// it may access, `base` known not to be null.
    pub(crate) fn in_value(&self, base: Reg, offset: i64, len: u32, write: bool) -> bool {
        match self.get(base) {
            Known::Value { size, offset: k, writable, non_null: true } => {
                (writable || !write)
                    && k.checked_add(offset).is_some_and(|at| at >= 0 && at + len as i64 <= size as i64)
            }
            _ => false,
        }
    }

    /// What holds on each way out of `jcc dst, src` when `dst` is a lookup's result tested against 0
    /// (64-bit `==` or `!=`): `(taken, fall-through)`, the way where it is not 0 knowing so.
    pub(crate) fn after_jump(&self, width: Width, cond: Cond, dst: Reg, src: Operand) -> (Facts, Facts) {
        let mut non_null = *self;
        if let Known::Value { size, offset: 0, writable, .. } = self.get(dst) {
            non_null.0[dst.index() as usize] = Known::Value { size, offset: 0, writable, non_null: true };
        }
        match (width, cond, src) {
            (Width::W64, Cond::Eq, Operand::Imm(0)) => (*self, non_null),
            (Width::W64, Cond::Ne, Operand::Imm(0)) => (non_null, *self),
            _ => (*self, *self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(n: u8) -> Reg {
        Reg::new(n).expect("a register")
    }

    fn insns(text: &str) -> alloc::vec::Vec<Instruction> {
        let program = crate::Program::from_asm(text).expect("assembles");
        program.iter().map(|(_, i)| *i).collect()
    }

    fn run(facts: &mut Facts, text: &str) {
        for insn in insns(text) {
            let r = facts.result_of(&insn);
            facts.apply(&insn, r);
        }
    }

    #[test]
    fn frame_offsets_follow_moves_and_constant_adds_only() {
        let mut f = Facts::default();
        run(
            &mut f,
            "mov %r2, %r10\nadd %r2, -8\nmov %r3, %r2\nsub %r3, 8\nmov %r4, %r10\nadd32 %r4, -8\nmov %r5, %r10
            add %r5, %r1\nmov %r1, %r5\nadd %r1, 8\nexit",
        );
        assert_eq!(f.get(Reg::R1), Known::FrameBased);
        assert_eq!(f.get(Reg::R2), Known::Frame(-8));
        assert_eq!(f.get(reg(3)), Known::Frame(-16));
        assert_eq!(f.get(reg(4)), Known::Nothing, "a 32-bit add");
        assert_eq!(f.get(reg(5)), Known::FrameBased, "an add of a register");
        assert!(f.frame_based(reg(5)) && !f.in_frame(reg(5), -8, 8));
        assert!(f.in_frame(Reg::R2, 0, 8));
        assert!(!f.in_frame(Reg::R2, 1, 8), "past the frame's top");
        assert!(f.in_frame(reg(3), -(FRAME_SIZE as i64) + 16, 8));
        assert!(!f.in_frame(reg(3), -(FRAME_SIZE as i64) + 15, 8), "below the frame");
        run(&mut f, "call 1\nexit");
        assert_eq!(f.get(Reg::R2), Known::Nothing, "a call clobbers r1-r5");
        assert_eq!(f.get(Reg::R10), Known::Frame(0));
    }

    #[test]
    fn a_lookup_result_is_a_value_only_where_it_is_not_null() {
        let mut f = Facts::default();
        let value = Known::Value { size: 8, offset: 0, writable: false, non_null: false };
        f.0[0] = value;
        assert!(!f.in_value(Reg::R0, 0, 8, false), "may be null");
        let (taken, fall) = f.after_jump(Width::W64, Cond::Eq, Reg::R0, Operand::Imm(0));
        assert!(fall.in_value(Reg::R0, 0, 8, false) && !taken.in_value(Reg::R0, 0, 8, false));
        let (taken, fall) = f.after_jump(Width::W64, Cond::Ne, Reg::R0, Operand::Imm(0));
        assert!(taken.in_value(Reg::R0, 0, 8, false) && !fall.in_value(Reg::R0, 0, 8, false));
        let (taken, fall) = f.after_jump(Width::W32, Cond::Ne, Reg::R0, Operand::Imm(0));
        assert!(!taken.in_value(Reg::R0, 0, 8, false) && !fall.in_value(Reg::R0, 0, 8, false), "32-bit test");
        assert!(!fall.in_value(Reg::R0, 0, 8, true) && !taken.in_value(Reg::R0, 0, 8, true), "read-only value");
        let (mut g, _) = f.after_jump(Width::W64, Cond::Ne, Reg::R0, Operand::Imm(0));
        run(&mut g, "mov %r1, %r0\nadd %r1, 4\nexit");
        assert!(g.in_value(Reg::R1, 0, 4, false));
        assert!(!g.in_value(Reg::R1, 0, 8, false), "past the value's end");
        assert!(!g.in_value(Reg::R1, -5, 1, false), "before the value");
    }
}
