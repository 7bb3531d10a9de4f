//! Abstract numbers: unsigned and signed bounds of the 64-bit value and of its low 32 bits, with known
//! bits, kept consistent with each other after every operation.

use alloc::vec::Vec;
use core::fmt;

use super::tnum::Tnum;
use crate::isa::{AluOp, Cond, Width};

/// A set of 64-bit values: every member lies within all nine descriptions at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Scalar {
    pub(crate) t: Tnum,
    pub(crate) umin: u64,
    pub(crate) umax: u64,
    pub(crate) smin: i64,
    pub(crate) smax: i64,
    pub(crate) u32min: u32,
    pub(crate) u32max: u32,
    pub(crate) s32min: i32,
    pub(crate) s32max: i32,
}

/// Bounds of a value seen at one width (32 or 64 bits), values held in 64-bit integers.
#[derive(Debug, Clone, Copy)]
struct View {
    w: u32,
    umin: u64,
    umax: u64,
    smin: i64,
    smax: i64,
    t: Tnum,
}

impl View {
    fn umax_w(w: u32) -> u64 {
        if w == 64 {
            u64::MAX
        } else {
            u32::MAX as u64
        }
    }

    fn smin_w(w: u32) -> i64 {
        if w == 64 {
            i64::MIN
        } else {
            i32::MIN as i64
        }
    }

    fn smax_w(w: u32) -> i64 {
        if w == 64 {
            i64::MAX
        } else {
            i32::MAX as i64
        }
    }

    fn full(w: u32) -> View {
        View { w, umin: 0, umax: View::umax_w(w), smin: View::smin_w(w), smax: View::smax_w(w), t: Tnum::low_bits(w) }
    }

    fn constant(w: u32, c: u64) -> View {
        let c = c & View::umax_w(w);
        let s = View::signed(w, c);
        View { w, umin: c, umax: c, smin: s, smax: s, t: Tnum::constant(c) }
    }

    /// `x` (below 2^w) read as a signed w-bit number.
    fn signed(w: u32, x: u64) -> i64 {
        if w == 64 {
            x as i64
        } else {
            x as u32 as i32 as i64
        }
    }

    fn as_const(&self) -> Option<u64> {
        if self.umin == self.umax {
            Some(self.umin)
        } else {
            self.t.as_const()
        }
    }

    /// Unsigned bounds from a 128-bit computation, or the full range when they leave the width.
    fn with_u(mut self, lo: u128, hi: u128) -> View {
        if lo <= hi && hi <= View::umax_w(self.w) as u128 {
            self.umin = lo as u64;
            self.umax = hi as u64;
        } else {
            self.umin = 0;
            self.umax = View::umax_w(self.w);
        }
        self
    }

    /// Signed bounds from a 128-bit computation, or the full range when they leave the width.
    fn with_s(mut self, lo: i128, hi: i128) -> View {
        if lo <= hi && lo >= View::smin_w(self.w) as i128 && hi <= View::smax_w(self.w) as i128 {
            self.smin = lo as i64;
            self.smax = hi as i64;
        } else {
            self.smin = View::smin_w(self.w);
            self.smax = View::smax_w(self.w);
        }
        self
    }

    fn with_t(mut self, t: Tnum) -> View {
        self.t = t.truncate(self.w);
        self
    }

    fn shift_amounts(&self) -> (u32, u32) {
        let m = self.w as u64 - 1;
        if self.umax <= m {
            (self.umin as u32, self.umax as u32)
        } else {
            (0, m as u32)
        }
    }

    fn alu(self, op: AluOp, b: View) -> View {
        let w = self.w;
        let full = View::full(w);
        if let (Some(x), Some(y)) = (self.as_const(), b.as_const()) {
            return View::constant(w, concrete_alu(op, w, x, y));
        }
        let a = self;
        match op {
            AluOp::Mov => b,
            AluOp::Add => full
                .with_u(a.umin as u128 + b.umin as u128, a.umax as u128 + b.umax as u128)
                .with_s(a.smin as i128 + b.smin as i128, a.smax as i128 + b.smax as i128)
                .with_t(a.t.add(b.t)),
            AluOp::Sub => {
                let u = if a.umin >= b.umax {
                    full.with_u((a.umin - b.umax) as u128, (a.umax - b.umin) as u128)
                } else {
                    full
                };
                u.with_s(a.smin as i128 - b.smax as i128, a.smax as i128 - b.smin as i128).with_t(a.t.sub(b.t))
            }
            AluOp::Mul => {
                let p = [
                    a.smin as i128 * b.smin as i128,
                    a.smin as i128 * b.smax as i128,
                    a.smax as i128 * b.smin as i128,
                    a.smax as i128 * b.smax as i128,
                ];
                let (lo, hi) = (p.iter().min().copied().unwrap_or(0), p.iter().max().copied().unwrap_or(0));
                full.with_u(a.umin as u128 * b.umin as u128, a.umax as u128 * b.umax as u128)
                    .with_s(lo, hi)
                    .with_t(a.t.mul(b.t))
            }
            AluOp::Div => {
                // Division by zero gives 0; otherwise the quotient falls as the divisor grows.
                let lo = a.umin.checked_div(b.umax).unwrap_or(0);
                match a.umax.checked_div(b.umin) {
                    Some(hi) => full.with_u(lo as u128, hi as u128),
                    None => full.with_u(0, a.umax as u128),
                }
            }
            AluOp::Mod => {
                if b.umin > a.umax {
                    a
                } else if b.umin == 0 {
                    full.with_u(0, a.umax as u128)
                } else {
                    full.with_u(0, a.umax.min(b.umax - 1) as u128)
                }
            }
            AluOp::SDiv => {
                // |a / b| <= |a|; MIN / -1 = MIN; division by zero gives 0.
                let m = (a.smin as i128).abs().max((a.smax as i128).abs());
                full.with_s(-m, m)
            }
            AluOp::SMod => {
                // The result is 0 or has the dividend's sign, and |a % b| <= |a| (a itself when b is 0).
                if a.smin >= 0 {
                    full.with_s(0, a.smax as i128)
                } else if a.smax <= 0 {
                    full.with_s(a.smin as i128, 0)
                } else {
                    full.with_s(a.smin as i128, a.smax as i128)
                }
            }
            AluOp::And => {
                let mut v = full.with_u(0, a.umax.min(b.umax) as u128).with_t(a.t.and(b.t));
                if a.smin >= 0 || b.smin >= 0 {
                    let hi = match (a.smin >= 0, b.smin >= 0) {
                        (true, true) => a.smax.min(b.smax),
                        (true, false) => a.smax,
                        _ => b.smax,
                    };
                    v = v.with_s(0, hi as i128);
                }
                v
            }
            AluOp::Or => {
                let t = a.t.or(b.t).truncate(w);
                full.with_u(a.umin.max(b.umin) as u128, t.umax() as u128).with_t(t)
            }
            AluOp::Xor => full.with_t(a.t.xor(b.t)),
            AluOp::Lsh => {
                let (lo, hi) = b.shift_amounts();
                let mut t = a.t.shl(lo);
                for k in lo + 1..=hi.min(lo + 8) {
                    t = t.join(a.t.shl(k));
                }
                if hi > lo + 8 {
                    t = Tnum::UNKNOWN;
                }
                let u = if (a.umax as u128) << hi <= View::umax_w(w) as u128 {
                    full.with_u((a.umin as u128) << lo, (a.umax as u128) << hi)
                } else {
                    full
                };
                u.with_t(t)
            }
            AluOp::Rsh => {
                let (lo, hi) = b.shift_amounts();
                let mut t = a.t.lshr(lo);
                for k in lo + 1..=hi.min(lo + 8) {
                    t = t.join(a.t.lshr(k));
                }
                if hi > lo + 8 {
                    t = Tnum::low_bits(w - lo);
                }
                full.with_u((a.umin >> hi) as u128, (a.umax >> lo) as u128).with_t(t)
            }
            AluOp::Arsh => {
                let (lo, hi) = b.shift_amounts();
                let smin = (a.smin >> lo).min(a.smin >> hi);
                let smax = (a.smax >> lo).max(a.smax >> hi);
                let mut v = full.with_s(smin as i128, smax as i128);
                if lo == hi {
                    // Shift the w-bit value: sign-extend it to 64 first.
                    let t = a.t.sign_extend(w).ashr(lo);
                    v = v.with_t(t);
                }
                v
            }
        }
    }
}

/// The ISA's result of `op` on the concrete `w`-bit operands `x` and `y`.
pub(crate) fn concrete_alu(op: AluOp, w: u32, x: u64, y: u64) -> u64 {
    let m = View::umax_w(w);
    let (x, y) = (x & m, y & m);
    let sx = View::signed(w, x);
    let sy = View::signed(w, y);
    let r = match op {
        AluOp::Mov => y,
        AluOp::Add => x.wrapping_add(y),
        AluOp::Sub => x.wrapping_sub(y),
        AluOp::Mul => x.wrapping_mul(y),
        AluOp::Div => x.checked_div(y).unwrap_or(0),
        AluOp::Mod => x.checked_rem(y).unwrap_or(x),
        AluOp::SDiv => {
            if sy == 0 {
                0
            } else if w == 64 {
                (sx).wrapping_div(sy) as u64
            } else {
                (sx as i32).wrapping_div(sy as i32) as u32 as u64
            }
        }
        AluOp::SMod => {
            if sy == 0 {
                x
            } else if w == 64 {
                (sx).wrapping_rem(sy) as u64
            } else {
                (sx as i32).wrapping_rem(sy as i32) as u32 as u64
            }
        }
        AluOp::And => x & y,
        AluOp::Or => x | y,
        AluOp::Xor => x ^ y,
        AluOp::Lsh => x << (y & (w as u64 - 1)),
        AluOp::Rsh => x >> (y & (w as u64 - 1)),
        AluOp::Arsh => (sx >> (y & (w as u64 - 1))) as u64,
    };
    r & m
}

/// A comparison between two values, after swapping operands so that every condition is one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rel {
    Eq,
    Ne,
    Ult,
    Ule,
    Slt,
    Sle,
    Set,
    Clear,
}

/// The relation `a cond b` as `(rel, swapped)`: `swapped` means the relation is `b rel a`.
fn rel_of(cond: Cond, taken: bool) -> (Rel, bool) {
    let (rel, swapped) = match cond {
        Cond::Eq => (Rel::Eq, false),
        Cond::Ne => (Rel::Ne, false),
        Cond::Lt => (Rel::Ult, false),
        Cond::Le => (Rel::Ule, false),
        Cond::Gt => (Rel::Ult, true),
        Cond::Ge => (Rel::Ule, true),
        Cond::Slt => (Rel::Slt, false),
        Cond::Sle => (Rel::Sle, false),
        Cond::Sgt => (Rel::Slt, true),
        Cond::Sge => (Rel::Sle, true),
        Cond::Set => (Rel::Set, false),
    };
    if taken {
        return (rel, swapped);
    }
    // Negation: !(a < b) is b <= a.
    match rel {
        Rel::Eq => (Rel::Ne, swapped),
        Rel::Ne => (Rel::Eq, swapped),
        Rel::Ult => (Rel::Ule, !swapped),
        Rel::Ule => (Rel::Ult, !swapped),
        Rel::Slt => (Rel::Sle, !swapped),
        Rel::Sle => (Rel::Slt, !swapped),
        Rel::Set => (Rel::Clear, swapped),
        Rel::Clear => (Rel::Set, swapped),
    }
}

/// Narrows `a` and `b` (views at one width) to the members for which `a rel b` can hold; `None` when none.
fn narrow(rel: Rel, mut a: View, mut b: View) -> Option<(View, View)> {
    match rel {
        Rel::Eq => {
            let t = a.t.meet(b.t)?;
            let (umin, umax) = (a.umin.max(b.umin), a.umax.min(b.umax));
            let (smin, smax) = (a.smin.max(b.smin), a.smax.min(b.smax));
            if umin > umax || smin > smax {
                return None;
            }
            a = View { w: a.w, umin, umax, smin, smax, t };
            b = a;
        }
        Rel::Ne => {
            if let (Some(x), Some(y)) = (a.as_const(), b.as_const()) {
                if x == y {
                    return None;
                }
            }
            let (ca, cb) = (a.as_const(), b.as_const());
            for (v, other) in [(&mut a, cb), (&mut b, ca)] {
                if let Some(c) = other {
                    let sc = View::signed(v.w, c);
                    if v.umin == c {
                        v.umin = v.umin.checked_add(1)?;
                    }
                    if v.umax == c {
                        v.umax = v.umax.checked_sub(1)?;
                    }
                    if v.smin == sc {
                        v.smin = v.smin.checked_add(1)?;
                    }
                    if v.smax == sc {
                        v.smax = v.smax.checked_sub(1)?;
                    }
                }
            }
        }
        Rel::Ult | Rel::Ule => {
            let strict = (rel == Rel::Ult) as u64;
            // a <= b - strict
            let bmax = b.umax.checked_sub(strict)?;
            a.umax = a.umax.min(bmax);
            let amin = a.umin.checked_add(strict)?;
            b.umin = b.umin.max(amin);
        }
        Rel::Slt | Rel::Sle => {
            let strict = (rel == Rel::Slt) as i64;
            let bmax = b.smax.checked_sub(strict)?;
            a.smax = a.smax.min(bmax);
            let amin = a.smin.checked_add(strict)?;
            b.smin = b.smin.max(amin);
        }
        Rel::Set => {
            if let Some(c) = b.as_const() {
                if a.t.and(Tnum::constant(c)).umax() == 0 {
                    return None;
                }
                if c.count_ones() == 1 {
                    a.t = a.t.meet(Tnum { value: c, mask: !c & View::umax_w(a.w) })?;
                }
            }
        }
        Rel::Clear => {
            if let Some(c) = b.as_const() {
                a.t = a.t.meet(Tnum { value: 0, mask: !c & View::umax_w(a.w) })?;
            }
        }
    }
    if a.umin > a.umax || a.smin > a.smax || b.umin > b.umax || b.smin > b.smax {
        return None;
    }
    Some((a, b))
}

/// How a widening join treats bounds that grew: intervals jump to the next of `thresholds` (sorted;
/// none: to the end of the range), and with `bits`, known bits that were lost take every bit above
/// them along (see `Tnum::widen_to`). `crossed` is set when a bound passed a threshold it had not
/// reached before (a bound that grew only as far as its known bits let it, below the threshold it
/// was already heading for, passes none).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Widening<'a> {
    pub(crate) thresholds: &'a [u64],
    /// Thresholds for each register, where they differ from `thresholds` (which stack slots use): the
    /// constants that register is compared with, so that one register's tests do not put steps in
    /// another's way.
    pub(crate) regs: Option<&'a [Vec<u64>; 11]>,
    pub(crate) bits: bool,
    pub(crate) crossed: &'a core::cell::Cell<bool>,
}

impl<'a> Widening<'a> {
    /// The widening of register `r`.
    pub(crate) fn for_reg(self, r: usize) -> Widening<'a> {
        match self.regs.and_then(|regs| regs.get(r)) {
            Some(t) => Widening { thresholds: t, regs: None, ..self },
            None => self,
        }
    }
}

impl Scalar {
    /// Every 64-bit value.
    pub(crate) fn unknown() -> Scalar {
        Scalar {
            t: Tnum::UNKNOWN,
            umin: 0,
            umax: u64::MAX,
            smin: i64::MIN,
            smax: i64::MAX,
            u32min: 0,
            u32max: u32::MAX,
            s32min: i32::MIN,
            s32max: i32::MAX,
        }
    }

    /// Exactly `c`.
    pub(crate) fn constant(c: u64) -> Scalar {
        Scalar {
            t: Tnum::constant(c),
            umin: c,
            umax: c,
            smin: c as i64,
            smax: c as i64,
            u32min: c as u32,
            u32max: c as u32,
            s32min: c as i32,
            s32max: c as i32,
        }
    }

    /// The values `lo..=hi` (unsigned).
    pub(crate) fn urange(lo: u64, hi: u64) -> Scalar {
        Scalar { umin: lo, umax: hi, ..Scalar::unknown() }.normalize().unwrap_or_else(Scalar::unknown)
    }

    /// The values `lo..=hi` (signed).
    pub(crate) fn srange(lo: i64, hi: i64) -> Scalar {
        Scalar { smin: lo, smax: hi, ..Scalar::unknown() }.normalize().unwrap_or_else(Scalar::unknown)
    }

    /// The value if there is only one.
    pub(crate) fn as_const(&self) -> Option<u64> {
        if self.umin == self.umax {
            Some(self.umin)
        } else {
            self.t.as_const()
        }
    }

    /// Whether `x` is a member.
    pub(crate) fn contains(&self, x: u64) -> bool {
        self.t.contains(x)
            && (self.umin..=self.umax).contains(&x)
            && (self.smin..=self.smax).contains(&(x as i64))
            && (self.u32min..=self.u32max).contains(&(x as u32))
            && (self.s32min..=self.s32max).contains(&(x as i32))
    }

    /// Whether every member of `o` is a member.
    pub(crate) fn includes(&self, o: &Scalar) -> bool {
        self.t.includes(o.t)
            && self.umin <= o.umin
            && o.umax <= self.umax
            && self.smin <= o.smin
            && o.smax <= self.smax
            && self.u32min <= o.u32min
            && o.u32max <= self.u32max
            && self.s32min <= o.s32min
            && o.s32max <= self.s32max
    }

    fn view(&self, w: u32) -> View {
        if w == 64 {
            View { w, umin: self.umin, umax: self.umax, smin: self.smin, smax: self.smax, t: self.t }
        } else {
            View {
                w,
                umin: self.u32min as u64,
                umax: self.u32max as u64,
                smin: self.s32min as i64,
                smax: self.s32max as i64,
                t: self.t.truncate(32),
            }
        }
    }

    /// The scalar a view describes: at 64 bits the whole value, at 32 bits a zero-extended one.
    fn from_view(v: View) -> Scalar {
        let s = if v.w == 64 {
            Scalar { t: v.t, umin: v.umin, umax: v.umax, smin: v.smin, smax: v.smax, ..Scalar::unknown() }
        } else {
            Scalar {
                t: v.t.truncate(32),
                umin: v.umin,
                umax: v.umax,
                smin: v.umin as i64,
                smax: v.umax as i64,
                u32min: v.umin as u32,
                u32max: v.umax as u32,
                s32min: v.smin as i32,
                s32max: v.smax as i32,
            }
        };
        s.normalize().unwrap_or_else(|| if v.w == 64 { Scalar::unknown() } else { Scalar::u32_any() })
    }

    /// Every zero-extended 32-bit value.
    fn u32_any() -> Scalar {
        Scalar::urange(0, u32::MAX as u64)
    }

    /// Writes a narrowed view back (the 32-bit view narrows the low half only).
    fn with_view(mut self, v: View) -> Option<Scalar> {
        if v.w == 64 {
            self.umin = v.umin;
            self.umax = v.umax;
            self.smin = v.smin;
            self.smax = v.smax;
            self.t = self.t.meet(v.t)?;
        } else {
            self.u32min = v.umin as u32;
            self.u32max = v.umax as u32;
            self.s32min = v.smin as i32;
            self.s32max = v.smax as i32;
            self.t = self.t.meet(Tnum { value: v.t.value, mask: v.t.mask | !(u32::MAX as u64) })?;
        }
        self.normalize()
    }

    /// Makes the nine descriptions agree (each narrowed by what the others imply); `None` when they
    /// describe no value.
    pub(crate) fn normalize(mut self) -> Option<Scalar> {
        for _ in 0..3 {
            let before = self;
            // Known bits bound the ranges.
            self.umin = self.umin.max(self.t.umin());
            self.umax = self.umax.min(self.t.umax());
            self.smin = self.smin.max(self.t.smin());
            self.smax = self.smax.min(self.t.smax());
            let t32 = self.t.truncate(32);
            self.u32min = self.u32min.max(t32.umin() as u32);
            self.u32max = self.u32max.min(t32.umax() as u32);
            let (lo, hi) = self.t.s32_bounds();
            self.s32min = self.s32min.max(lo);
            self.s32max = self.s32max.min(hi);
            // Unsigned and signed 64-bit ranges agree where they do not cross the sign boundary.
            if (self.umin as i64) <= (self.umax as i64) {
                self.smin = self.smin.max(self.umin as i64);
                self.smax = self.smax.min(self.umax as i64);
            }
            if (self.smin as u64) <= (self.smax as u64) {
                self.umin = self.umin.max(self.smin as u64);
                self.umax = self.umax.min(self.smax as u64);
            }
            // The same for the low halves.
            if (self.u32min as i32) <= (self.u32max as i32) {
                self.s32min = self.s32min.max(self.u32min as i32);
                self.s32max = self.s32max.min(self.u32max as i32);
            }
            if (self.s32min as u32) <= (self.s32max as u32) {
                self.u32min = self.u32min.max(self.s32min as u32);
                self.u32max = self.u32max.min(self.s32max as u32);
            }
            // The low half of a 64-bit range whose high half is fixed.
            if self.umin >> 32 == self.umax >> 32 {
                self.u32min = self.u32min.max(self.umin as u32);
                self.u32max = self.u32max.min(self.umax as u32);
                let hi = self.umin & !(u32::MAX as u64);
                self.umin = self.umin.max(hi | self.u32min as u64);
                self.umax = self.umax.min(hi | self.u32max as u64);
            }
            if self.smin >> 32 == self.smax >> 32 {
                // Same high half: the low halves are ordered as unsigned numbers.
                self.u32min = self.u32min.max(self.smin as u32);
                self.u32max = self.u32max.min(self.smax as u32);
            }
            if self.umin > self.umax || self.smin > self.smax || self.u32min > self.u32max || self.s32min > self.s32max
            {
                return None;
            }
            // Ranges bound the known bits.
            self.t = self.t.meet(Tnum::range(self.umin, self.umax))?;
            let low = Tnum::range(self.u32min as u64, self.u32max as u64);
            self.t = self.t.meet(Tnum { value: low.value, mask: low.mask | !(u32::MAX as u64) })?;
            if self.t.umin() > self.umax || self.t.umax() < self.umin {
                return None;
            }
            if self == before {
                break;
            }
        }
        if let Some(c) = self.t.as_const() {
            if !Scalar::constant(c).within(&self) {
                return None;
            }
            return Some(Scalar::constant(c));
        }
        Some(self)
    }

    fn within(&self, o: &Scalar) -> bool {
        o.contains(self.umin)
    }

    /// `self op rhs` at `width`, as the ISA defines every operation (division by zero included).
    pub(crate) fn alu(&self, op: AluOp, width: Width, rhs: Scalar) -> Scalar {
        let w = match width {
            Width::W64 => 64,
            Width::W32 => 32,
        };
        Scalar::from_view(self.view(w).alu(op, rhs.view(w)))
    }

    /// `-self` at `width`.
    pub(crate) fn neg(&self, width: Width) -> Scalar {
        Scalar::constant(0).alu(AluOp::Sub, width, *self)
    }

    /// The low `bytes` bytes, zero-extended (a load, or `le16`/`le32`).
    pub(crate) fn zero_extend(&self, bytes: u32) -> Scalar {
        if bytes >= 8 {
            return *self;
        }
        let bits = bytes * 8;
        if let Some(c) = self.as_const() {
            return Scalar::constant(c & ((1u64 << bits) - 1));
        }
        let m = (1u64 << bits) - 1;
        if self.umax <= m {
            return *self;
        }
        let t = self.t.truncate(bits);
        Scalar { t, ..Scalar::urange(0, m) }.normalize().unwrap_or_else(|| Scalar::urange(0, m))
    }

    /// The low `bits` bits sign-extended to 64 (`movsx`, sign-extending loads).
    pub(crate) fn sign_extend(&self, bits: u32) -> Scalar {
        if bits >= 64 {
            return *self;
        }
        if let Some(c) = self.as_const() {
            let sh = 64 - bits;
            return Scalar::constant((((c << sh) as i64) >> sh) as u64);
        }
        let half = 1i64 << (bits - 1);
        let low = self.zero_extend(bits / 8);
        if (low.umax as i64) < half {
            return low;
        }
        Scalar { t: self.t.sign_extend(bits), ..Scalar::srange(-half, half - 1) }
            .normalize()
            .unwrap_or_else(|| Scalar::srange(-half, half - 1))
    }

    /// A byte swap of the low `bits` bits (the others zeroed), for `be`/`bswap`.
    pub(crate) fn swap(&self, bits: u32) -> Scalar {
        if let Some(c) = self.as_const() {
            return Scalar::constant(match bits {
                16 => (c as u16).swap_bytes() as u64,
                32 => (c as u32).swap_bytes() as u64,
                _ => c.swap_bytes(),
            });
        }
        if bits >= 64 {
            Scalar::unknown()
        } else {
            Scalar::urange(0, (1u64 << bits) - 1)
        }
    }

    /// The least scalar holding both.
    pub(crate) fn join(&self, o: &Scalar) -> Scalar {
        Scalar {
            t: self.t.join(o.t),
            umin: self.umin.min(o.umin),
            umax: self.umax.max(o.umax),
            smin: self.smin.min(o.smin),
            smax: self.smax.max(o.smax),
            u32min: self.u32min.min(o.u32min),
            u32max: self.u32max.max(o.u32max),
            s32min: self.s32min.min(o.s32min),
            s32max: self.s32max.max(o.s32max),
        }
        .normalize()
        .unwrap_or_else(Scalar::unknown)
    }

    /// The members of both, or `None` when there is none.
    pub(crate) fn meet(&self, o: &Scalar) -> Option<Scalar> {
        Scalar {
            t: self.t.meet(o.t)?,
            umin: self.umin.max(o.umin),
            umax: self.umax.min(o.umax),
            smin: self.smin.max(o.smin),
            smax: self.smax.min(o.smax),
            u32min: self.u32min.max(o.u32min),
            u32max: self.u32max.min(o.u32max),
            s32min: self.s32min.max(o.s32min),
            s32max: self.s32max.min(o.s32max),
        }
        .normalize()
    }

    /// Holds `newer` and `self`; every bound that grew jumps to the next of `thresholds` (or the end of its
    /// range), so that repeated widening ends.
    pub(crate) fn widen(&self, newer: &Scalar, widening: Widening<'_>) -> Scalar {
        let thresholds = widening.thresholds;
        let j = self.join(newer);
        // `thresholds` is sorted (unsigned order).
        debug_assert!(thresholds.is_sorted());
        let crossed = widening.crossed;
        let up_to = |x: u64, max: u64| {
            let i = thresholds.partition_point(|&t| t < x);
            thresholds.get(i).copied().filter(|&t| t <= max).unwrap_or(max)
        };
        let up = |old: u64, new: u64, max: u64| {
            if new <= old {
                old
            } else {
                let to = up_to(new, max);
                if to != up_to(old, max) {
                    crossed.set(true);
                }
                to
            }
        };
        let down_to = |x: u64| {
            let i = thresholds.partition_point(|&t| t <= x);
            if i == 0 {
                0
            } else {
                thresholds[i - 1]
            }
        };
        let down = |old: u64, new: u64| {
            if new >= old {
                old
            } else {
                let to = down_to(new);
                if to != down_to(old) {
                    crossed.set(true);
                }
                to
            }
        };
        let sup_to = |x: i64, min: i64, max: i64| {
            thresholds.iter().map(|&t| t as i64).filter(|&t| t >= x && t <= max && t >= min).min().unwrap_or(max)
        };
        let sup = |old: i64, new: i64, min: i64, max: i64| {
            if new <= old {
                old
            } else {
                let to = sup_to(new, min, max);
                if to != sup_to(old, min, max) {
                    crossed.set(true);
                }
                to
            }
        };
        let sdown_to = |x: i64, min: i64, max: i64| {
            thresholds.iter().map(|&t| t as i64).filter(|&t| t <= x && t >= min && t <= max).max().unwrap_or(min)
        };
        let sdown = |old: i64, new: i64, min: i64, max: i64| {
            if new >= old {
                old
            } else {
                let to = sdown_to(new, min, max);
                if to != sdown_to(old, min, max) {
                    crossed.set(true);
                }
                to
            }
        };
        Scalar {
            t: if widening.bits { self.t.widen_to(j.t) } else { j.t },
            umin: down(self.umin, j.umin),
            umax: up(self.umax, j.umax, u64::MAX),
            smin: sdown(self.smin, j.smin, i64::MIN, i64::MAX),
            smax: sup(self.smax, j.smax, i64::MIN, i64::MAX),
            u32min: down(self.u32min as u64, j.u32min as u64) as u32,
            u32max: up(self.u32max as u64, j.u32max as u64, u32::MAX as u64) as u32,
            s32min: sdown(self.s32min as i64, j.s32min as i64, i32::MIN as i64, i32::MAX as i64) as i32,
            s32max: sup(self.s32max as i64, j.s32max as i64, i32::MIN as i64, i32::MAX as i64) as i32,
        }
        .normalize()
        .unwrap_or_else(Scalar::unknown)
    }

    /// `self` and `rhs` narrowed to the members for which `self cond rhs` is `taken` (at `width`), or `None`
    /// when no member pair satisfies it.
    pub(crate) fn refine(&self, cond: Cond, width: Width, rhs: &Scalar, taken: bool) -> Option<(Scalar, Scalar)> {
        let w = match width {
            Width::W64 => 64,
            Width::W32 => 32,
        };
        let (rel, swapped) = rel_of(cond, taken);
        let (a, b) = (self.view(w), rhs.view(w));
        let (a, b) = if swapped {
            let (nb, na) = narrow(rel, b, a)?;
            (na, nb)
        } else {
            narrow(rel, a, b)?
        };
        Some((self.with_view(a)?, rhs.with_view(b)?))
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(c) = self.as_const() {
            return write!(f, "{}", c as i64);
        }
        f.write_str("scalar(")?;
        let mut sep = "";
        if self.umin != 0 || self.umax != u64::MAX {
            write!(f, "u={}..={}", self.umin, self.umax)?;
            sep = ", ";
        }
        if (self.smin != i64::MIN || self.smax != i64::MAX)
            && (self.smin, self.smax) != (self.umin as i64, self.umax as i64)
        {
            write!(f, "{sep}s={}..={}", self.smin, self.smax)?;
            sep = ", ";
        }
        if self.t.mask != u64::MAX && self.t != Tnum::range(self.umin, self.umax) {
            write!(f, "{sep}bits={}", self.t)?;
        }
        f.write_str(")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    /// A scalar and a member, built from a few constants and operations so that all shapes occur.
    fn member() -> impl Strategy<Value = (Scalar, u64)> {
        let base = prop_oneof![
            any::<u64>().prop_map(|c| (Scalar::constant(c), c)),
            (any::<u64>(), any::<u64>(), any::<u64>(), 0usize..4).prop_map(|(a, b, p, scale)| {
                let m = [16u64, 4096, 1 << 33, u64::MAX][scale];
                let (lo, hi) = (a % m, b % m);
                let (lo, hi) = (lo.min(hi), lo.max(hi));
                (Scalar::urange(lo, hi), lo + p % (hi - lo).saturating_add(1).max(1))
            }),
            (any::<i64>(), any::<i64>(), any::<u64>(), 0u32..3).prop_map(|(a, b, p, scale)| {
                let sh = [59, 40, 20][scale as usize];
                let (lo, hi) = ((a.min(b) >> sh), (a.max(b) >> sh));
                (Scalar::srange(lo, hi), (lo + (p % ((hi - lo) as u64 + 1)) as i64) as u64)
            }),
            any::<u64>().prop_map(|x| (Scalar::unknown(), x)),
        ];
        (base.clone(), base, any::<u8>(), any::<bool>()).prop_map(|((a, x), (b, y), op, w32)| {
            let ops = [AluOp::Add, AluOp::Sub, AluOp::And, AluOp::Or, AluOp::Mul, AluOp::Rsh, AluOp::Xor, AluOp::Mov];
            let op = ops[op as usize % ops.len()];
            let width = if w32 { Width::W32 } else { Width::W64 };
            let wb = if w32 { 32 } else { 64 };
            let y = if matches!(op, AluOp::Rsh) { y % wb as u64 } else { y };
            let b = if matches!(op, AluOp::Rsh) {
                Scalar::urange(0, wb as u64 - 1).alu(AluOp::And, Width::W64, b)
            } else {
                b
            };
            if matches!(op, AluOp::Rsh) && !b.contains(y) {
                return (a, x);
            }
            (a.alu(op, width, b), concrete_alu(op, wb, x, y))
        })
    }

    fn ops() -> impl Strategy<Value = AluOp> {
        prop::sample::select(vec![
            AluOp::Add,
            AluOp::Sub,
            AluOp::Mul,
            AluOp::Div,
            AluOp::SDiv,
            AluOp::Mod,
            AluOp::SMod,
            AluOp::Or,
            AluOp::And,
            AluOp::Lsh,
            AluOp::Rsh,
            AluOp::Xor,
            AluOp::Mov,
            AluOp::Arsh,
        ])
    }

    fn conds() -> impl Strategy<Value = Cond> {
        prop::sample::select(vec![
            Cond::Eq,
            Cond::Gt,
            Cond::Ge,
            Cond::Set,
            Cond::Ne,
            Cond::Sgt,
            Cond::Sge,
            Cond::Lt,
            Cond::Le,
            Cond::Slt,
            Cond::Sle,
        ])
    }

    fn holds(cond: Cond, w32: bool, x: u64, y: u64) -> bool {
        let (x, y) = if w32 { (x as u32 as u64, y as u32 as u64) } else { (x, y) };
        let (sx, sy) = if w32 { (x as u32 as i32 as i64, y as u32 as i32 as i64) } else { (x as i64, y as i64) };
        match cond {
            Cond::Eq => x == y,
            Cond::Ne => x != y,
            Cond::Gt => x > y,
            Cond::Ge => x >= y,
            Cond::Lt => x < y,
            Cond::Le => x <= y,
            Cond::Sgt => sx > sy,
            Cond::Sge => sx >= sy,
            Cond::Slt => sx < sy,
            Cond::Sle => sx <= sy,
            Cond::Set => x & y != 0,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

        #[test]
        fn members_stay_members((a, x) in member(), (b, y) in member(), op in ops(), w32 in any::<bool>()) {
            prop_assert!(a.contains(x), "{a:?} lost {x}");
            prop_assert!(b.contains(y), "{b:?} lost {y}");
            let width = if w32 { Width::W32 } else { Width::W64 };
            let r = a.alu(op, width, b);
            let c = concrete_alu(op, if w32 { 32 } else { 64 }, x, y);
            prop_assert!(r.contains(c), "{op:?} {w32}: {a} op {b} = {r:?} lacks {c:#x} ({x:#x}, {y:#x})");
            let negated = concrete_alu(AluOp::Sub, if w32 { 32 } else { 64 }, 0, x);
            prop_assert!(a.neg(width).contains(negated));
            for bytes in [1, 2, 4, 8] {
                let m = if bytes == 8 { u64::MAX } else { (1u64 << (bytes * 8)) - 1 };
                prop_assert!(a.zero_extend(bytes).contains(x & m));
                let bits = bytes * 8;
                let sx = if bits == 64 { x } else { (((x << (64 - bits)) as i64) >> (64 - bits)) as u64 };
                prop_assert!(a.sign_extend(bits).contains(sx), "{a:?} sx{bits} lacks {sx:#x}");
            }
            let j = a.join(&b);
            prop_assert!(j.contains(x) && j.contains(y) && j.includes(&a) && j.includes(&b));
            let crossed = core::cell::Cell::new(false);
            let wd = a.widen(&b, Widening { thresholds: &[0, 7, 255, 4096, u32::MAX as u64], regs: None, bits: true, crossed: &crossed });
            prop_assert!(wd.contains(x) && wd.contains(y));
        }

        #[test]
        fn refinement_keeps_satisfying_pairs((a, x) in member(), (b, y) in member(), cond in conds(), w32 in any::<bool>()) {
            let width = if w32 { Width::W32 } else { Width::W64 };
            let taken = holds(cond, w32, x, y);
            let r = a.refine(cond, width, &b, taken);
            prop_assert!(r.is_some(), "{cond:?} {w32} {taken}: {a:?} vs {b:?} lost ({x:#x}, {y:#x})");
            let (ra, rb) = r.unwrap_or((a, b));
            prop_assert!(ra.contains(x) && rb.contains(y), "{cond:?} {w32} {taken}: {ra:?} {rb:?} lack ({x:#x}, {y:#x})");
        }
    }

    #[test]
    fn a_length_guard_bounds_the_length() {
        let len = Scalar::urange(0, u32::MAX as u64);
        let (l, _) = len.refine(Cond::Lt, Width::W64, &Scalar::constant(8), false).unwrap_or_default_pair();
        assert_eq!((l.umin, l.umax), (8, u32::MAX as u64));
        assert!(len.refine(Cond::Gt, Width::W64, &Scalar::constant(u32::MAX as u64), true).is_none());
    }

    trait PairDefault {
        fn unwrap_or_default_pair(self) -> (Scalar, Scalar);
    }

    impl PairDefault for Option<(Scalar, Scalar)> {
        fn unwrap_or_default_pair(self) -> (Scalar, Scalar) {
            self.unwrap_or((Scalar::unknown(), Scalar::unknown()))
        }
    }
}
