//! What one instruction does to the abstract state: arithmetic on numbers and pointers, conditional
//! jumps that narrow both branches, loads and stores, and calls.

use alloc::vec;
use alloc::vec::Vec;

use super::analysis::{Checker, Flow, MAX_FRAMES};
use super::error::{VerifyError, VerifyErrorKind as K};
use super::scalar::Scalar;
use super::state::{Frame, State};
use super::value::{LenRel, Link, Ptr, PtrKind, Tracked, Value};
use crate::isa::{AluOp, ByteOrder, Cond, Imm64, Instruction, Operand, PacketMode, SxWidth, Width};
use crate::link::{Context, Imm64Value, Resolved};

/// Largest magnitude a pointer's offset may reach: beyond every region (inputs reach 4 GiB), far from
/// overflow.
const MAX_OFFSET: i64 = 1 << 34;

/// Identity of a value made at slot `pc` (a lookup's result, a pointer with a new variable offset).
pub(crate) fn fresh_id(pc: usize) -> u32 {
    0x4000_0000 | (pc as u32 & 0x3fff_ffff)
}

/// The identity of pointers whose variable offset may differ from every other pointer's: no proof
/// about one reaches another.
pub(crate) const ORPHAN_ID: u32 = 1;

/// Pointers still carrying identity `id` (made by an earlier run of the same instruction, or kept by a
/// join beside a new one) get their own, so that a proof about the new pointer does not reach them.
pub(crate) fn orphan(st: &mut State, id: u32) {
    st.for_each_value(|v| {
        if let Value::Ptr(p) = v {
            if p.id == id && !p.nullable {
                p.id = ORPHAN_ID;
            }
        }
    });
}

impl Checker<'_> {
    /// The effect of `insn` at slot `pc` of context `ctx` on `st`.
    pub(crate) fn step(
        &mut self,
        ctx: u32,
        pc: usize,
        insn: &Instruction,
        st: &mut State,
    ) -> Result<Flow, VerifyError> {
        if let Some(lock) = st.lock {
            // While a lock is held: no call but the release, no exit, no legacy packet load (which may
            // end the program).
            let releases = |id: u32| {
                self.lp.resolved_at(pc) != Resolved::TailCall
                    && self
                        .linked
                        .env()
                        .helper(id)
                        .is_some_and(|h| h.sig().args[0] == crate::helpers::ArgKind::SpinUnlock)
            };
            let refused = match *insn {
                Instruction::Call { id } => !releases(id),
                Instruction::CallLocal { .. }
                | Instruction::CallReg { .. }
                | Instruction::CallBtf { .. }
                | Instruction::Exit
                | Instruction::LoadPacket { .. } => true,
                _ => false,
            };
            if refused {
                let reason = if lock.map == u32::MAX {
                    "a lock may be held here (on some paths), and this instruction is refused while one is"
                } else {
                    "a call, an exit or a packet load while a lock is held"
                };
                return Err(self.error(pc, K::SpinLock { reason }, st));
            }
        }
        match *insn {
            Instruction::Alu { width, op, dst, src } => self.alu(pc, st, width, op, dst.index(), src)?,
            Instruction::Neg { width, dst } => {
                let d = dst.index();
                let v = self.scalar_of(pc, st, d, true)?;
                st.set(d, Value::scalar(v.neg(width)));
            }
            Instruction::MovSx { width, from, dst, src } => {
                let v = self.scalar_of(pc, st, src.index(), true)?;
                let bits = match from {
                    SxWidth::B8 => 8,
                    SxWidth::B16 => 16,
                    SxWidth::B32 => 32,
                };
                let r = match width {
                    Width::W64 => v.sign_extend(bits),
                    Width::W32 => v.sign_extend(bits).zero_extend(4),
                };
                st.set(dst.index(), Value::scalar(r));
            }
            Instruction::End { order, bits, dst } => {
                let d = dst.index();
                let v = self.scalar_of(pc, st, d, true)?;
                let r = match order {
                    ByteOrder::Le if bits >= 64 => v,
                    ByteOrder::Le => v.zero_extend(bits as u32 / 8),
                    ByteOrder::Be | ByteOrder::Swap => v.swap(bits as u32),
                };
                st.set(d, Value::scalar(r));
            }
            Instruction::LoadImm64 { dst, value } => {
                let v = match (self.lp.resolved_at(pc), value) {
                    (Resolved::Imm64(Imm64Value::Const(c)), _) | (_, Imm64::Const(c)) => {
                        Value::scalar(Scalar::constant(c))
                    }
                    (Resolved::Imm64(Imm64Value::Map { index }), _) => Value::Map(index),
                    (Resolved::Imm64(Imm64Value::MapValue { index, offset, .. }), _) => {
                        Value::Ptr(Ptr::at(PtrKind::MapValue(index), offset as i64))
                    }
                    _ => return Err(self.error(pc, K::Unsupported { what: "this 64-bit load" }, st)),
                };
                st.set(dst.index(), v);
            }
            Instruction::LoadPacket { size, mode, .. } => {
                if let PacketMode::Ind(r) = mode {
                    self.scalar_of(pc, st, r.index(), true)?;
                }
                st.set(0, Value::scalar(Scalar::unknown().zero_extend(size.bytes())));
                for r in 1..=5 {
                    st.top_mut().regs[r] = Tracked::UNINIT;
                }
            }
            Instruction::Load { size, dst, src, offset } => {
                let mut v = self.load(pc, st, src.index(), offset as i64, size.bytes())?;
                if let (Value::Scalar { .. }, None, Some((depth, slot))) =
                    (v.v, v.link, spill_slot(st, src.index(), offset, size.bytes()))
                {
                    // A number filled from the stack stays linked to the slot (or the 32-bit half of
                    // one) it came from, so that a branch on the register bounds the slot too (a loop
                    // counter kept on the stack, as one whose address a helper is given).
                    let id = fresh_id(pc);
                    st.unlink(id);
                    let kept = match st.frames.get_mut(depth).and_then(|f| f.slot_mut(slot.0)) {
                        Some(super::state::Slot::Spill(t)) if slot.1.is_none() => Some(t),
                        Some(super::state::Slot::Halves(h, _)) => slot.1.and_then(|i| h[i].as_mut()),
                        _ => None,
                    };
                    if let Some(t) = kept {
                        t.link = Some(Link::origin(id));
                        v.link = Some(Link::origin(id));
                    }
                }
                st.top_mut().regs[dst.index() as usize] = v;
            }
            Instruction::LoadSx { size, dst, src, offset } => {
                let v = self.load(pc, st, src.index(), offset as i64, size.bytes())?;
                let s = v.v.as_scalar().copied().unwrap_or_else(Scalar::unknown);
                st.set(dst.index(), Value::scalar(s.sign_extend(size.bytes() * 8)));
            }
            Instruction::Store { size, dst, offset, imm } => {
                let c = imm as i64 as u64;
                let bytes = size.bytes();
                let c = if bytes == 8 { c } else { c & ((1u64 << (bytes * 8)) - 1) };
                let v = Tracked::new(Value::scalar(Scalar::constant(c)));
                self.store(pc, st, dst.index(), offset as i64, bytes, v, None)?;
            }
            Instruction::StoreReg { size, dst, offset, src } => {
                let v = *st.reg(src.index());
                if v.v == Value::Uninit {
                    return Err(self.error(pc, K::UninitRegister { reg: src.index() }, st));
                }
                self.store(pc, st, dst.index(), offset as i64, size.bytes(), v, Some(src.index()))?;
            }
            Instruction::Atomic { width, op, dst, offset, src } => {
                self.atomic(pc, st, width, op, dst.index(), offset as i64, src.index())?;
            }
            Instruction::Ja { offset } => return Ok(Flow::Jump(vec![(target(pc, offset as i64), st.clone())])),
            Instruction::Ja32 { offset } => return Ok(Flow::Jump(vec![(target(pc, offset as i64), st.clone())])),
            Instruction::Jump { width, cond, dst, src, offset } => {
                let to = target(pc, offset as i64);
                let depth =
                    self.cfg.block_of_pc(pc).and_then(|b| self.cfg.innermost_loop(b)).map(|l| self.cfg.loop_depth(l));
                if let (Operand::Reg(r), Some(depth)) = (src, depth) {
                    if cond != Cond::Set && depth <= super::value::MAX_LOOP_DEPTH {
                        // Two registers compared in a loop: the bounds of one that the loop does not
                        // change may be where the other settles.
                        for (x, y) in [(dst.index(), r.index()), (r.index(), dst.index())] {
                            let (tx, ty) = (st.reg(x), st.reg(y));
                            let invariant = ty.deltas[depth - 1] == super::value::Delta::ZERO;
                            if let (Value::Scalar { .. }, Value::Scalar { s, .. }, true) = (tx.v, ty.v, invariant) {
                                self.learn_thresholds(x as usize, &s);
                            }
                        }
                    }
                }
                let [not_taken, taken] = self.branch(pc, st, width, cond, dst.index(), src)?;
                let mut out = Vec::new();
                if let Some(s) = not_taken {
                    out.push((pc + 1, s));
                }
                if let Some(s) = taken {
                    out.push((to, s));
                }
                return Ok(Flow::Jump(out));
            }
            Instruction::Call { .. } if matches!(self.lp.resolved_at(pc), Resolved::Loop { .. }) => {
                return self.loop_call(ctx, pc, st, false)
            }
            Instruction::Call { .. } if matches!(self.lp.resolved_at(pc), Resolved::ForEach { .. }) => {
                return self.loop_call(ctx, pc, st, true)
            }
            Instruction::Call { id } => self.helper_call(pc, st, id)?,
            Instruction::CallLocal { offset } => return self.local_call(ctx, pc, st, target(pc, offset as i64)),
            Instruction::CallReg { reg } => {
                // A helper whose id the register is proven to hold.
                match self.scalar_of(pc, st, reg.index(), false)?.as_const() {
                    Some(id) if id <= u32::MAX as u64 => self.helper_call(pc, st, id as u32)?,
                    _ => {
                        return Err(self.error(
                            pc,
                            K::Unsupported { what: "callx through a register that is not a known helper id" },
                            st,
                        ))
                    }
                }
            }
            Instruction::CallBtf { .. } => {
                return Err(self.error(pc, K::Unsupported { what: "a call of a kernel function" }, st))
            }
            Instruction::Exit => return Ok(Flow::Exit),
        }
        Ok(Flow::Next)
    }

    /// Register `r` as a number: an error if it is unwritten or holds anything else.
    pub(crate) fn scalar_of(&self, pc: usize, st: &State, r: u8, arith: bool) -> Result<Scalar, VerifyError> {
        match st.reg(r).v {
            Value::Scalar { s, .. } => Ok(s),
            Value::Uninit => Err(self.error(pc, K::UninitRegister { reg: r }, st)),
            _ if arith => Err(self.error(pc, K::PointerArithmetic { reg: r }, st)),
            _ => Err(self.error(pc, K::PointerLeak { reg: r }, st)),
        }
    }

    fn alu(
        &self,
        pc: usize,
        st: &mut State,
        width: Width,
        op: AluOp,
        dst: u8,
        src: Operand,
    ) -> Result<(), VerifyError> {
        let w64 = width == Width::W64;
        let s = self.operand(st, src, w64);
        let src_reg = match src {
            Operand::Reg(r) => r.index(),
            Operand::Imm(_) => dst,
        };
        if s.v == Value::Uninit {
            return Err(self.error(pc, K::UninitRegister { reg: src_reg }, st));
        }
        if op == AluOp::Mov {
            // Copies of one number stay linked to it, so that what a branch learns about one reaches all.
            let mut link = s.link;
            let linkable = match s.v {
                Value::Scalar { .. } => true,
                Value::Ptr(p) => w64 && !p.nullable && matches!(p.kind, PtrKind::Input),
                _ => false,
            };
            if let (true, None, Operand::Reg(r)) = (linkable, s.link, src) {
                let id = fresh_id(pc);
                st.unlink(id);
                st.top_mut().regs[r.index() as usize].link = Some(Link::origin(id));
                link = Some(Link::origin(id));
            }
            let v = if w64 {
                Tracked { link, ..s }
            } else {
                match s.v {
                    Value::Scalar { s: x, len } => Tracked {
                        link: link.and_then(|l| l.add(0, true, (x.smin, x.smax))),
                        ..Tracked::new(Value::Scalar { s: x.zero_extend(4), len })
                    },
                    _ => return Err(self.error(pc, K::PointerArithmetic { reg: src_reg }, st)),
                }
            };
            st.top_mut().regs[dst as usize] = v;
            return Ok(());
        }
        let d = *st.reg(dst);
        let result = match (d.v, s.v) {
            (Value::Uninit, _) => return Err(self.error(pc, K::UninitRegister { reg: dst }, st)),
            (Value::Scalar { s: a, .. }, Value::Scalar { s: b, .. }) => {
                let r = a.alu(op, width, b);
                match (op, b.as_const()) {
                    (AluOp::Add | AluOp::Sub, Some(c)) => {
                        let c = if w64 { c as i64 } else { c as u32 as i32 as i64 };
                        let c = if op == AluOp::Sub { c.wrapping_neg() } else { c };
                        let rel = match d.v {
                            // The relation to the length survives a sum that wraps in neither width.
                            Value::Scalar { len, .. }
                                if a.umin as i128 + c as i128 >= 0
                                    && a.umax as i128 + c as i128 <= u32::MAX as i128 =>
                            {
                                len.shifted(c)
                            }
                            _ => LenRel::None,
                        };
                        d.shifted(Value::Scalar { s: r, len: rel }, c, &a, !w64)
                    }
                    (AluOp::Add | AluOp::Sub, None) => {
                        // A register added: the loop deltas move by its range (signed, at the width).
                        let (lo, hi) = if w64 { (b.smin, b.smax) } else { (b.s32min as i64, b.s32max as i64) };
                        let (lo, hi) = match op {
                            AluOp::Add => (Some(lo), Some(hi)),
                            _ => (hi.checked_neg(), lo.checked_neg()),
                        };
                        match (lo, hi) {
                            (Some(lo), Some(hi)) => d.shifted_by(Value::scalar(r), lo, hi, &a, !w64),
                            _ => Tracked::new(Value::scalar(r)),
                        }
                    }
                    (AluOp::Lsh, Some(k)) if w64 && k < 63 => Tracked {
                        link: d.link.and_then(|l| l.scaled(1 << k, (a.smin, a.smax))),
                        ..Tracked::new(Value::scalar(r))
                    },
                    (AluOp::Mul, Some(k)) if w64 && (1..=1 << 16).contains(&k) => Tracked {
                        link: d.link.and_then(|l| l.scaled(k as i64, (a.smin, a.smax))),
                        ..Tracked::new(Value::scalar(r))
                    },
                    _ => Tracked::new(Value::scalar(r)),
                }
            }
            (Value::Ptr(p), Value::Scalar { s: b, len }) if w64 && matches!(op, AluOp::Add | AluOp::Sub) => {
                let v = self.ptr_offset(pc, st, dst, p, op, b, len)?;
                if matches!(v, Value::Ptr(q) if q.id == fresh_id(pc)) {
                    orphan(st, fresh_id(pc));
                }
                match (b.as_const(), v) {
                    (Some(c), Value::Ptr(_)) => {
                        let c = if op == AluOp::Sub { (c as i64).wrapping_neg() } else { c as i64 };
                        d.shifted(v, c, &p.folded(), false)
                    }
                    // A fixed pointer plus a member of a family is a member: offset = scale * X + d + off.
                    // (Not an end pointer made from the length: its offset is 0, not the sum.)
                    (None, Value::Ptr(q)) if op == AluOp::Add && p.fixed() && q.kind == p.kind => {
                        Tracked { link: s.link.and_then(|l| l.add(p.off, false, (b.smin, b.smax))), ..Tracked::new(v) }
                    }
                    _ => Tracked::new(v),
                }
            }
            (Value::Scalar { s: a, len }, Value::Ptr(p)) if w64 && op == AluOp::Add => {
                let v = self.ptr_offset(pc, st, src_reg, p, op, a, len)?;
                if matches!(v, Value::Ptr(q) if q.id == fresh_id(pc)) {
                    orphan(st, fresh_id(pc));
                }
                match v {
                    Value::Ptr(q) if p.fixed() && a.as_const().is_none() && q.kind == p.kind => {
                        Tracked { link: d.link.and_then(|l| l.add(p.off, false, (a.smin, a.smax))), ..Tracked::new(v) }
                    }
                    _ => Tracked::new(v),
                }
            }
            (Value::Ptr(a), Value::Ptr(b))
                if w64 && op == AluOp::Sub && a.kind == b.kind && !a.nullable && !b.nullable =>
            {
                let diff = if a.id == b.id && a.var == b.var {
                    Scalar::constant(a.off.wrapping_sub(b.off) as u64)
                } else {
                    Scalar::unknown()
                };
                Tracked::new(Value::scalar(diff))
            }
            (Value::Scalar { .. }, _) => return Err(self.error(pc, K::PointerArithmetic { reg: src_reg }, st)),
            _ => return Err(self.error(pc, K::PointerArithmetic { reg: dst }, st)),
        };
        st.top_mut().regs[dst as usize] = result;
        Ok(())
    }

    /// Pointer `p` (in register `reg`) plus or minus the number `n`.
    #[allow(clippy::too_many_arguments)]
    fn ptr_offset(
        &self,
        pc: usize,
        st: &State,
        reg: u8,
        p: Ptr,
        op: AluOp,
        n: Scalar,
        len: LenRel,
    ) -> Result<Value, VerifyError> {
        if p.nullable || matches!(p.kind, PtrKind::InputEnd) {
            return Err(self.error(pc, K::PointerArithmetic { reg }, st));
        }
        let at_input = op == AluOp::Add && p.kind == PtrKind::Input && p.fixed() && p.id == 0;
        if len == LenRel::Equal && at_input && p.off == 0 {
            return Ok(Value::Ptr(Ptr::at(PtrKind::InputEnd, 0)));
        }
        let mut q = p;
        if let Some(c) = n.as_const() {
            let c = c as i64;
            let off = if op == AluOp::Add { p.off.checked_add(c) } else { p.off.checked_sub(c) };
            match off {
                Some(off) if off.unsigned_abs() <= MAX_OFFSET as u64 => q.off = off,
                _ => return Err(self.error(pc, K::UnboundedOffset { reg }, st)),
            }
            return Ok(Value::Ptr(q));
        }
        if n.smin < -MAX_OFFSET || n.smax > MAX_OFFSET {
            return Err(self.error(pc, K::UnboundedOffset { reg }, st));
        }
        let var = p.var.alu(op, Width::W64, n);
        if var.smin < -MAX_OFFSET || var.smax > MAX_OFFSET {
            return Err(self.error(pc, K::UnboundedOffset { reg }, st));
        }
        q.var = var;
        q.id = fresh_id(pc);
        q.range = 0;
        if let (true, LenRel::Below(k)) = (at_input, len) {
            // input + x with x + k <= length: k bytes exist from input + x.
            if n.smin >= 0 {
                q.range = k as i64;
            }
        }
        Ok(Value::Ptr(q))
    }

    /// The states after a conditional jump: `[not taken, taken]`, `None` where the branch cannot run.
    fn branch(
        &self,
        pc: usize,
        st: &State,
        width: Width,
        cond: Cond,
        dst: u8,
        src: Operand,
    ) -> Result<[Option<State>; 2], VerifyError> {
        let w64 = width == Width::W64;
        let a = *st.reg(dst);
        let b = self.operand(st, src, w64);
        let src_reg = match src {
            Operand::Reg(r) => Some(r.index()),
            Operand::Imm(_) => None,
        };
        if a.v == Value::Uninit {
            return Err(self.error(pc, K::UninitRegister { reg: dst }, st));
        }
        if b.v == Value::Uninit {
            return Err(self.error(pc, K::UninitRegister { reg: src_reg.unwrap_or(dst) }, st));
        }
        let mut out = [None, None];
        match (a.v, b.v) {
            (Value::Scalar { s: x, len: xl }, Value::Scalar { s: y, len: yl }) => {
                for (i, taken) in [false, true].into_iter().enumerate() {
                    let Some((nx, ny)) = x.refine(cond, width, &y, taken) else { continue };
                    let mut s = st.clone();
                    s.top_mut().regs[dst as usize].v = Value::Scalar { s: nx, len: xl };
                    if let Some(r) = src_reg {
                        if r != dst {
                            s.top_mut().regs[r as usize].v = Value::Scalar { s: ny, len: yl };
                        }
                    }
                    // What the branch says about a register holds for the numbers linked to it.
                    let mut feasible = a.link.is_none_or(|l| s.narrow_linked(l, &nx));
                    if let (Some(l), Some(_)) = (b.link, src_reg) {
                        feasible &= s.narrow_linked(l, &ny);
                    }
                    if !feasible {
                        continue;
                    }
                    if xl == LenRel::Equal {
                        s.input_min = s.input_min.max(nx.umin);
                    }
                    if yl == LenRel::Equal {
                        s.input_min = s.input_min.max(ny.umin);
                    }
                    // `x < len` or `x <= len` (either way round): bytes of the input exist from x.
                    let below = |first_is_len: bool| match (cond, taken, first_is_len) {
                        (Cond::Lt, true, false) | (Cond::Ge, false, false) => Some(1),
                        (Cond::Gt, true, true) | (Cond::Le, false, true) => Some(1),
                        (Cond::Le, true, false) | (Cond::Gt, false, false) => Some(0),
                        (Cond::Ge, true, true) | (Cond::Lt, false, true) => Some(0),
                        _ => None,
                    };
                    let learn = |s: &mut State, r: u8, v: Scalar, k: u32| {
                        let t = &mut s.top_mut().regs[r as usize];
                        t.v = Value::Scalar { s: v, len: LenRel::Below(k) };
                        if let Some(link) = t.link {
                            s.below_len(link, k);
                        }
                    };
                    if let (true, LenRel::Equal, Some(k), LenRel::None | LenRel::Below(_)) = (w64, yl, below(false), xl)
                    {
                        if !matches!(xl, LenRel::Below(old) if old >= k) {
                            learn(&mut s, dst, nx, k);
                        }
                    }
                    if let (true, LenRel::Equal, Some(k), Some(r)) = (w64, xl, below(true), src_reg) {
                        if !matches!(yl, LenRel::Below(old) if old >= k) && yl != LenRel::Equal {
                            learn(&mut s, r, ny, k);
                        }
                    }
                    out[i] = Some(s);
                }
            }
            (Value::Ptr(p), z) | (z, Value::Ptr(p)) if z.is_zero() => {
                if !w64 || !matches!(cond, Cond::Eq | Cond::Ne) {
                    return Err(self.error(pc, K::PointerComparison { reg: dst }, st));
                }
                // Which branch has the pointer null.
                let null_branch = if cond == Cond::Eq { 1 } else { 0 };
                if p.nullable {
                    let mut null = st.clone();
                    null.for_each_value(|v| {
                        if let Value::Ptr(q) = v {
                            if q.nullable && q.id == p.id && q.kind == p.kind {
                                *v = Value::scalar(Scalar::constant(0));
                            }
                        }
                    });
                    if let PtrKind::Record { ref_id, .. } = p.kind {
                        null.refs.retain(|r| r.0 != ref_id);
                    }
                    let mut live = st.clone();
                    live.for_each_value(|v| {
                        if let Value::Ptr(q) = v {
                            if q.nullable && q.id == p.id && q.kind == p.kind {
                                q.nullable = false;
                            }
                        }
                    });
                    out[null_branch] = Some(null);
                    out[1 - null_branch] = Some(live);
                } else {
                    out[1 - null_branch] = Some(st.clone());
                    // The engines pass 0 for an empty input (and an empty fixed context).
                    let may_be_empty = match (p.kind, self.linked.env().context()) {
                        (PtrKind::Input | PtrKind::InputEnd, Context::Buffer) => st.input_min == 0,
                        (PtrKind::Context, Context::Fixed { size: 0, .. }) => true,
                        _ => false,
                    };
                    if may_be_empty {
                        out[null_branch] = Some(st.clone());
                    }
                }
            }
            (Value::Ptr(p), Value::Ptr(q)) if w64 => {
                if p.nullable || q.nullable {
                    return Err(self.error(
                        pc,
                        K::MaybeNull { reg: if p.nullable { dst } else { src_reg.unwrap_or(dst) } },
                        st,
                    ));
                }
                let input = |k: PtrKind| matches!(k, PtrKind::Input | PtrKind::InputEnd);
                if input(p.kind) && input(q.kind) {
                    out = [Some(st.clone()), Some(st.clone())];
                    // Which branch proves `data <= end` (or `data < end`), for which pointer.
                    let proof = match (p.kind, q.kind) {
                        (PtrKind::Input, PtrKind::InputEnd) => match cond {
                            Cond::Le => Some((1, p, a.link, 0)),
                            Cond::Gt => Some((0, p, a.link, 0)),
                            Cond::Lt => Some((1, p, a.link, 1)),
                            Cond::Ge => Some((0, p, a.link, 1)),
                            _ => None,
                        },
                        (PtrKind::InputEnd, PtrKind::Input) => match cond {
                            Cond::Ge => Some((1, q, b.link, 0)),
                            Cond::Lt => Some((0, q, b.link, 0)),
                            Cond::Gt => Some((1, q, b.link, 1)),
                            Cond::Le => Some((0, q, b.link, 1)),
                            _ => None,
                        },
                        _ => None,
                    };
                    if let Some((branch, ptr, link, extra)) = proof {
                        let mut infeasible = false;
                        if let Some(s) = out[branch].as_mut() {
                            prove_input(s, &ptr, extra);
                            // No input is longer than 2^32 - 1 bytes: the pointer's offset is bounded
                            // too, which keeps widened offsets from growing past every limit.
                            let reg = if ptr == p { dst } else { src_reg.unwrap_or(dst) };
                            let mut folded = None;
                            if let Value::Ptr(q) = &mut s.top_mut().regs[reg as usize].v {
                                let cap = u32::MAX as i64 - q.off.saturating_add(extra);
                                if let Some(var) = q.var.meet(&Scalar::srange(i64::MIN, cap)) {
                                    q.var = var;
                                }
                                folded = Some(q.folded());
                            }
                            // And so are the offsets of the pointers and numbers related to it.
                            if let (Some(l), Some(f)) = (link, folded) {
                                infeasible = !s.narrow_linked(l, &f);
                            }
                            // The pointer's whole offset is X + d in a family: its numbers learn their
                            // distance to the length (an index recomputed into a new pointer keeps it),
                            // and its other input pointers the bytes that exist from them.
                            if let Some(l) = link.filter(|l| l.scale == 1 && !l.w32) {
                                if let Some(k) = l.d.checked_add(extra).and_then(|k| u32::try_from(k).ok()) {
                                    s.below_len(Link { d: 0, ..l }, k);
                                    prove_family(s, l.id, k as i64);
                                }
                            }
                        }
                        if infeasible {
                            out[branch] = None;
                        }
                    }
                } else if p.kind == q.kind {
                    out = [Some(st.clone()), Some(st.clone())];
                } else {
                    return Err(self.error(pc, K::PointerComparison { reg: dst }, st));
                }
            }
            (Value::Ptr(_) | Value::Map(_) | Value::Mixed | Value::Released, _) => {
                return Err(self.error(pc, K::PointerComparison { reg: dst }, st))
            }
            _ => return Err(self.error(pc, K::PointerComparison { reg: src_reg.unwrap_or(dst) }, st)),
        }
        Ok(out)
    }

    /// A bpf-to-bpf call at `pc` to the function starting at slot `to`.
    /// `bpf_loop(nr_loops, callback, callback_ctx, flags)` or, with `each`,
    /// `bpf_for_each_map_elem(map, callback, callback_ctx, flags)`: the callback is a function of the
    /// program (a constant handle from `lddw rX, func`), called in a frame of its own as often as it
    /// returns 0 and at most `nr_loops` times (for each element of the map), with r1 the iteration
    /// (0 to `nr_loops - 1`) and r2 `callback_ctx`; or with r1 the map, r2 the element's key (a copy
    /// at the bottom of the callback's frame), r3 its value and r4 `callback_ctx`. Its return comes
    /// back to the call (see `Checker::exit`), and the call's result is a number.
    fn loop_call(&mut self, ctx: u32, pc: usize, st: &State, each: bool) -> Result<Flow, VerifyError> {
        use crate::helpers::standard::{iterable, FOR_EACH_MAP_ELEM, LOOP, MAX_LOOPS};
        let helper = if each { FOR_EACH_MAP_ELEM } else { LOOP };
        let bad = |st: &State, arg: u8, reason: &str| {
            self.error(pc, K::HelperArgument { helper, arg, reason: reason.into() }, st)
        };
        let (most, map) = if each {
            let m = match st.reg(1).v {
                Value::Uninit => return Err(self.error(pc, K::UninitRegister { reg: 1 }, st)),
                Value::Map(m) => m,
                _ => return Err(bad(st, 1, "expects a map")),
            };
            let Some(def) = self.maps.get(m as usize).copied().filter(|d| iterable(d.map_type)) else {
                return Err(bad(st, 1, "only array and hash maps can be iterated"));
            };
            (def.max_entries as u64, Some((m, def)))
        } else {
            let n = self.scalar_of(pc, st, 1, false)?;
            // The count is a u32: the upper half of r1 is ignored, as by the kernel.
            ((n.u32max as u64).min(MAX_LOOPS), None)
        };
        self.scalar_of(pc, st, 4, false)?;
        let arg = st.reg(3).v;
        match arg {
            Value::Uninit => return Err(self.error(pc, K::UninitRegister { reg: 3 }, st)),
            Value::Released => return Err(bad(st, 3, "a released record")),
            _ => {}
        }
        let handle = self.scalar_of(pc, st, 2, false)?.as_const();
        let Some(to) = handle.and_then(|h| self.lp.callback(h)) else {
            return Err(bad(st, 2, "must be a function of the program, loaded with `lddw rX, func`"));
        };
        if let Some(&(_, at)) = st.refs.first() {
            return Err(self.error(pc, K::UnreleasedRecord { reserved_at: at as usize }, st));
        }
        let mut after = st.clone();
        after.set(0, Value::unknown());
        for r in 1..=5 {
            after.top_mut().regs[r] = Tracked::UNINIT;
        }
        if most == 0 {
            return Ok(Flow::Loop { callback: None, after });
        }
        let mut callee = self.callee_frame(ctx, pc, st, to)?;
        match map {
            None => {
                callee.regs[1] = Tracked::new(Value::scalar(Scalar::urange(0, most - 1)));
                callee.regs[2] = Tracked::new(arg);
            }
            Some((m, def)) => {
                // The key's copy: the lowest bytes of the frame, the rest of their slots zero.
                let frame = super::state::FRAME_BYTES;
                let key = Ptr::at(PtrKind::Stack(st.frames.len() as u8), -frame);
                let slots = (def.key_size as usize).div_ceil(8).min(frame as usize / 8);
                let top = frame as usize / 8;
                for i in top - slots..top {
                    callee.set_slot(i, super::state::Slot::Bytes(0xff));
                }
                callee.regs[1] = Tracked::new(Value::Map(m));
                callee.regs[2] = Tracked::new(Value::Ptr(key));
                callee.regs[3] = Tracked::new(Value::Ptr(Ptr::at(PtrKind::MapValue(m), 0)));
                callee.regs[4] = Tracked::new(arg);
            }
        }
        let mut into = st.clone();
        into.frames.push(callee);
        Ok(Flow::Loop { callback: Some((to, into)), after })
    }

    /// The frame of a function called at `pc` (by `call local` or as a callback) that starts at slot
    /// `to`: refused if the function is already running (recursion) or the frames would be too many.
    fn callee_frame(&self, ctx: u32, pc: usize, st: &State, to: usize) -> Result<Frame, VerifyError> {
        let function = self.cfg.function_of_pc(to).unwrap_or(0);
        if self.active(ctx, function) {
            return Err(self.error(pc, K::Recursion { callee: to }, st));
        }
        let depth = st.frames.len() + 1;
        if depth > MAX_FRAMES {
            return Err(self.error(pc, K::CallDepth { depth }, st));
        }
        Ok(Frame::new(function as u32, (depth - 1) as u8))
    }

    fn local_call(&mut self, ctx: u32, pc: usize, st: &State, to: usize) -> Result<Flow, VerifyError> {
        let mut callee = self.callee_frame(ctx, pc, st, to)?;
        for r in 1..=5 {
            callee.regs[r] = Tracked::new(st.top().regs[r].v);
        }
        let mut next = st.clone();
        next.frames.push(callee);
        Ok(Flow::Call(to, next))
    }
}

/// The frame and slot an aligned 8-byte access through `r + offset` reaches, when `r` is a stack
/// pointer at a known offset; for an aligned 4-byte access, also the half of the slot (0 at the lower
/// address).
fn spill_slot(st: &State, r: u8, offset: i16, size: u32) -> Option<(usize, (usize, Option<usize>))> {
    let Value::Ptr(p) = st.reg(r).v else { return None };
    let PtrKind::Stack(depth) = p.kind else { return None };
    let at = p.off.checked_add(offset as i64)?;
    if !p.fixed() || !(-super::state::FRAME_BYTES..0).contains(&at) {
        return None;
    }
    let slot = ((-at - 1) / 8) as usize;
    match size {
        8 if at % 8 == 0 => Some((depth as usize, (slot, None))),
        4 if at % 4 == 0 => Some((depth as usize, (slot, Some(((at + 8 * (slot as i64 + 1)) / 4) as usize)))),
        _ => None,
    }
}

/// The slot a jump at `pc` by `offset` reaches.
fn target(pc: usize, offset: i64) -> usize {
    (pc as i64 + 1 + offset).max(0) as usize
}

/// `X + k <= end` holds for family `id`: each input pointer `X + d` in it has `k - d` bytes after it.
fn prove_family(s: &mut State, id: u32, k: i64) {
    s.for_each_tracked(|t| {
        let Some(l) = t.link.filter(|l| l.id == id && l.scale == 1 && !l.w32) else { return };
        let Value::Ptr(q) = &mut t.v else { return };
        if q.kind != PtrKind::Input || q.nullable || q.id == ORPHAN_ID {
            return;
        }
        // Bytes from base + var: the constant part of the offset, plus what lies beyond the pointer.
        if let Some(bytes) = k.checked_sub(l.d).and_then(|b| b.checked_add(q.off)) {
            if bytes > q.off.max(0) {
                q.range = q.range.max(bytes);
            }
        }
    });
}

/// `ptr + extra <= end` holds: the input holds the bytes up to there.
fn prove_input(s: &mut State, ptr: &Ptr, extra: i64) {
    let Some(bytes) = ptr.off.checked_add(extra) else { return };
    if ptr.id == ORPHAN_ID {
        return;
    }
    if bytes <= 0 {
        return;
    }
    if ptr.fixed() && ptr.id == 0 {
        s.input_min = s.input_min.max(bytes as u64);
        return;
    }
    if ptr.var.smin < 0 {
        return;
    }
    let (id, var) = (ptr.id, ptr.var);
    s.for_each_value(|v| {
        if let Value::Ptr(q) = v {
            if q.kind == PtrKind::Input && q.id == id && q.var == var {
                q.range = q.range.max(bytes);
            }
        }
    });
}
