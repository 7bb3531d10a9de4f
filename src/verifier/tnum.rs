//! Tristate numbers: what is known about each bit of a 64-bit value (0, 1 or unknown).

use core::fmt;

/// A set of 64-bit values described bit by bit: bits set in `mask` are unknown, the others equal the
/// bits of `value` (whose unknown bits are 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Tnum {
    pub(crate) value: u64,
    pub(crate) mask: u64,
}

impl Tnum {
    /// Every value.
    pub(crate) const UNKNOWN: Tnum = Tnum { value: 0, mask: u64::MAX };

    /// Exactly `c`.
    pub(crate) const fn constant(c: u64) -> Tnum {
        Tnum { value: c, mask: 0 }
    }

    /// Values whose bits above bit `bits` are zero.
    pub(crate) fn low_bits(bits: u32) -> Tnum {
        if bits >= 64 {
            Tnum::UNKNOWN
        } else {
            Tnum { value: 0, mask: (1u64 << bits) - 1 }
        }
    }

    /// The least tnum holding every value of `min..=max`.
    pub(crate) fn range(min: u64, max: u64) -> Tnum {
        let chi = min ^ max;
        let bits = 64 - chi.leading_zeros();
        if bits >= 64 {
            return Tnum::UNKNOWN;
        }
        let delta = (1u64 << bits) - 1;
        Tnum { value: min & !delta, mask: delta }
    }

    /// The value if every bit is known.
    pub(crate) fn as_const(self) -> Option<u64> {
        (self.mask == 0).then_some(self.value)
    }

    /// Smallest value as unsigned.
    pub(crate) fn umin(self) -> u64 {
        self.value
    }

    /// Largest value as unsigned.
    pub(crate) fn umax(self) -> u64 {
        self.value | self.mask
    }

    /// Smallest value as signed.
    pub(crate) fn smin(self) -> i64 {
        const SIGN: u64 = 1 << 63;
        if self.mask & SIGN != 0 {
            (self.value | SIGN) as i64
        } else {
            self.value as i64
        }
    }

    /// Largest value as signed.
    pub(crate) fn smax(self) -> i64 {
        const SIGN: u64 = 1 << 63;
        if self.mask & SIGN != 0 {
            ((self.value | self.mask) & !SIGN) as i64
        } else {
            (self.value | self.mask) as i64
        }
    }

    /// Smallest and largest value of the low 32 bits read as a signed 32-bit number.
    pub(crate) fn s32_bounds(self) -> (i32, i32) {
        const SIGN: u64 = 1 << 31;
        let t = self.truncate(32);
        if t.mask & SIGN != 0 {
            ((t.value | SIGN) as u32 as i32, ((t.value | t.mask) & !SIGN) as u32 as i32)
        } else {
            (t.value as u32 as i32, (t.value | t.mask) as u32 as i32)
        }
    }

    /// Whether `x` is one of the values.
    pub(crate) fn contains(self, x: u64) -> bool {
        x & !self.mask == self.value
    }

    /// Whether every value of `o` is one of the values.
    pub(crate) fn includes(self, o: Tnum) -> bool {
        o.mask & !self.mask == 0 && o.value & !self.mask == self.value
    }

    /// The least tnum holding both.
    pub(crate) fn join(self, o: Tnum) -> Tnum {
        let mu = self.mask | o.mask | (self.value ^ o.value);
        Tnum { value: self.value & !mu, mask: mu }
    }

    /// `joined` (a join of `self` with something), where the bits it no longer knows are widened to
    /// every bit from the lowest of them up to the top of its 32-bit half: a counter that gains one
    /// unknown bit per loop pass (through carries) reaches its fixpoint in a step or two, while known
    /// low bits (alignment) and the known-zero upper half of a 32-bit value stay.
    pub(crate) fn widen_to(self, joined: Tnum) -> Tnum {
        let grown = joined.mask & !self.mask;
        if grown == 0 {
            return joined;
        }
        let lowest = grown & grown.wrapping_neg();
        let top = if grown >> 32 == 0 { u32::MAX as u64 } else { u64::MAX };
        let mask = joined.mask | (top & !(lowest - 1));
        Tnum { value: joined.value & !mask, mask }
    }

    /// The values in both, or `None` when no value is.
    pub(crate) fn meet(self, o: Tnum) -> Option<Tnum> {
        if (self.value ^ o.value) & !self.mask & !o.mask != 0 {
            return None;
        }
        let mask = self.mask & o.mask;
        Some(Tnum { value: (self.value | o.value) & !mask, mask })
    }

    /// Wrapping sum.
    pub(crate) fn add(self, o: Tnum) -> Tnum {
        let sm = self.mask.wrapping_add(o.mask);
        let sv = self.value.wrapping_add(o.value);
        let chi = sm.wrapping_add(sv) ^ sv;
        let mu = chi | self.mask | o.mask;
        Tnum { value: sv & !mu, mask: mu }
    }

    /// Wrapping difference.
    pub(crate) fn sub(self, o: Tnum) -> Tnum {
        let dv = self.value.wrapping_sub(o.value);
        let alpha = dv.wrapping_add(self.mask);
        let beta = dv.wrapping_sub(o.mask);
        let mu = (alpha ^ beta) | self.mask | o.mask;
        Tnum { value: dv & !mu, mask: mu }
    }

    /// Wrapping product: the sum of `o` shifted by each bit of `self` that may be set.
    pub(crate) fn mul(self, o: Tnum) -> Tnum {
        if let (Some(a), Some(b)) = (self.as_const(), o.as_const()) {
            return Tnum::constant(a.wrapping_mul(b));
        }
        let mut acc = Tnum::constant(self.value.wrapping_mul(o.value));
        let mut unknown_part = Tnum::constant(0);
        let (mut a, mut b) = (self, o);
        while a.value | a.mask != 0 {
            if a.value & 1 != 0 {
                // Known 1: the unknown bits of `b` add in.
                unknown_part = unknown_part.add(Tnum { value: 0, mask: b.mask });
            } else if a.mask & 1 != 0 {
                // Unknown: all of `b` may add in.
                unknown_part = unknown_part.add(Tnum { value: 0, mask: b.value | b.mask });
            }
            a = a.lshr(1);
            b = b.shl(1);
        }
        acc = acc.add(unknown_part);
        acc
    }

    /// Bitwise and.
    pub(crate) fn and(self, o: Tnum) -> Tnum {
        let alpha = self.value | self.mask;
        let beta = o.value | o.mask;
        let v = self.value & o.value;
        Tnum { value: v, mask: alpha & beta & !v }
    }

    /// Bitwise or.
    pub(crate) fn or(self, o: Tnum) -> Tnum {
        let v = self.value | o.value;
        Tnum { value: v, mask: (self.mask | o.mask) & !v }
    }

    /// Bitwise exclusive or.
    pub(crate) fn xor(self, o: Tnum) -> Tnum {
        let mu = self.mask | o.mask;
        Tnum { value: (self.value ^ o.value) & !mu, mask: mu }
    }

    /// Left shift by `k` (< 64).
    pub(crate) fn shl(self, k: u32) -> Tnum {
        Tnum { value: self.value << k, mask: self.mask << k }
    }

    /// Logical right shift by `k` (< 64).
    pub(crate) fn lshr(self, k: u32) -> Tnum {
        Tnum { value: self.value >> k, mask: self.mask >> k }
    }

    /// Arithmetic right shift by `k` (< 64) of the 64-bit value.
    pub(crate) fn ashr(self, k: u32) -> Tnum {
        Tnum { value: ((self.value as i64) >> k) as u64, mask: ((self.mask as i64) >> k) as u64 }
    }

    /// The low `bits` bits; the others zero.
    pub(crate) fn truncate(self, bits: u32) -> Tnum {
        if bits >= 64 {
            return self;
        }
        let m = (1u64 << bits) - 1;
        Tnum { value: self.value & m, mask: self.mask & m }
    }

    /// The low `bits` bits sign-extended to 64.
    pub(crate) fn sign_extend(self, bits: u32) -> Tnum {
        if bits >= 64 {
            return self;
        }
        let sh = 64 - bits;
        Tnum { value: (((self.value << sh) as i64) >> sh) as u64, mask: (((self.mask << sh) as i64) >> sh) as u64 }
    }
}

impl fmt::Display for Tnum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({:#x}; {:#x})", self.value, self.mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A tnum and one of its members.
    fn member() -> impl Strategy<Value = (Tnum, u64)> {
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(v, m, pick)| {
            // Sparse masks as often as dense ones.
            let m = if pick & 1 == 0 { m & (m >> 7) & (m >> 13) } else { m };
            let t = Tnum { value: v & !m, mask: m };
            (t, t.value | (pick & m))
        })
    }

    proptest! {
        #[test]
        fn operations_hold_their_members(((a, x), (b, y)) in (member(), member()), k in 0u32..64) {
            prop_assert!(a.add(b).contains(x.wrapping_add(y)));
            prop_assert!(a.sub(b).contains(x.wrapping_sub(y)));
            prop_assert!(a.mul(b).contains(x.wrapping_mul(y)));
            prop_assert!(a.and(b).contains(x & y));
            prop_assert!(a.or(b).contains(x | y));
            prop_assert!(a.xor(b).contains(x ^ y));
            prop_assert!(a.shl(k).contains(x << k));
            prop_assert!(a.lshr(k).contains(x >> k));
            prop_assert!(a.ashr(k).contains(((x as i64) >> k) as u64));
            prop_assert!(a.join(b).contains(x) && a.join(b).contains(y));
            prop_assert!(a.join(b).includes(a) && a.join(b).includes(b));
            prop_assert!(a.truncate(32).contains(x & 0xffff_ffff));
            prop_assert!(a.sign_extend(16).contains(x as i16 as i64 as u64));
            prop_assert!(a.smin() <= x as i64 && x as i64 <= a.smax());
            prop_assert!(a.umin() <= x && x <= a.umax());
            let (lo, hi) = a.s32_bounds();
            prop_assert!(lo <= x as i32 && x as i32 <= hi);
            if b.contains(x) {
                prop_assert!(a.meet(b).is_some_and(|m| m.contains(x)));
            }
        }

        #[test]
        fn widening_holds_the_join_and_ends((a, x) in member(), (b, y) in member()) {
            let joined = a.join(b);
            let w = a.widen_to(joined);
            prop_assert!(w.contains(x) && w.contains(y));
            prop_assert!(w.mask & joined.mask == joined.mask);
            let grown = joined.mask & !a.mask;
            if grown != 0 {
                // Every bit from the lowest lost one to the top of its half is unknown: a chain of
                // widenings ends within two losses.
                let lowest = grown.trailing_zeros();
                let top = if grown >> 32 == 0 { 32 } else { 64 };
                prop_assert!((lowest..top).all(|bit| w.mask >> bit & 1 == 1));
                if top == 32 {
                    prop_assert_eq!(w.mask >> 32, joined.mask >> 32, "the upper half is kept");
                }
            } else {
                prop_assert_eq!(w, joined);
            }
        }

        #[test]
        fn ranges_hold_their_members(a in any::<u64>(), b in any::<u64>(), pick in any::<u64>()) {
            let (lo, hi) = (a.min(b), a.max(b));
            let x = lo + pick % (hi - lo).saturating_add(1).max(1);
            prop_assert!(Tnum::range(lo, hi).contains(x.min(hi)));
        }
    }
}
