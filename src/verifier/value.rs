//! What the verifier knows about one register or spilled stack slot: its type (number, pointer into a
//! region, map handle, ...) with the pointer's offset, and the relation to its value at the head of
//! each enclosing loop that proves the loop ends.

use core::fmt;

use super::scalar::{Scalar, Widening};

/// Loops nested deeper than this inside one function get no termination proof from induction variables.
pub(crate) const MAX_LOOP_DEPTH: usize = 4;

/// The region a pointer points into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PtrKind {
    /// The input (buffer behind `r1`, or the packet of a packet-style context).
    Input,
    /// The end of the input.
    InputEnd,
    /// The fixed-size or packet-style context.
    Context,
    /// The stack frame at this depth (0 = the entry function's).
    Stack(u8),
    /// A value of the map at this index.
    MapValue(u32),
    /// A map that a lookup in a map of maps gave: the index (in the checker's maps) of its
    /// definition. Not memory: only helpers take it, as a map.
    InnerMap(u32),
    /// A ring-buffer record of `size` bytes, tracked as reference `ref_id`.
    Record {
        /// Reserved bytes.
        size: u32,
        /// The reservation.
        ref_id: u32,
    },
}

/// A pointer: region, constant offset `off` plus variable offset `var`, identity `id` of the variable part
/// (pointers that share it were derived from one another by constant moves), and for the input the number
/// of bytes `range` proven to exist from `base + var`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ptr {
    pub(crate) kind: PtrKind,
    pub(crate) off: i64,
    pub(crate) var: Scalar,
    pub(crate) id: u32,
    pub(crate) range: i64,
    /// The pointer may be null (a map lookup's or reservation's result before its check).
    pub(crate) nullable: bool,
}

impl Ptr {
    /// A pointer at constant offset `off`.
    pub(crate) fn at(kind: PtrKind, off: i64) -> Ptr {
        Ptr { kind, off, var: Scalar::constant(0), id: 0, range: 0, nullable: false }
    }

    /// Lowest and highest offset the pointer may have.
    pub(crate) fn offsets(&self) -> (i64, i64) {
        (self.off.saturating_add(self.var.smin), self.off.saturating_add(self.var.smax))
    }

    /// The whole offset as one number.
    pub(crate) fn folded(&self) -> Scalar {
        self.var.alu(crate::isa::AluOp::Add, crate::isa::Width::W64, Scalar::constant(self.off as u64))
    }

    /// Whether the variable part is the constant 0.
    pub(crate) fn fixed(&self) -> bool {
        self.var.as_const() == Some(0)
    }
}

/// How a value changed since the head of an enclosing loop: by `lo..=hi` in each of four views (unsigned
/// and signed, 64- and 32-bit), for the views in which no step wrapped around; and (bit 4, `MODULAR`)
/// by `lo..=hi` modulo 2^64 on every path, wrapped or not (64-bit additions only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delta {
    pub(crate) lo: i64,
    pub(crate) hi: i64,
    /// Views without wrap-around: bit 0 u64, 1 s64, 2 u32, 3 s32. 0 means no relation.
    pub(crate) views: u8,
}

impl Delta {
    pub(crate) const NONE: Delta = Delta { lo: 0, hi: 0, views: 0 };
    pub(crate) const ZERO: Delta = Delta { lo: 0, hi: 0, views: 0b1_1111 };
    /// The view bit of a change modulo 2^64.
    pub(crate) const MODULAR: u8 = 0b1_0000;

    fn join(self, o: Delta) -> Delta {
        let views = self.views & o.views;
        if views == 0 {
            return Delta::NONE;
        }
        Delta { lo: self.lo.min(o.lo), hi: self.hi.max(o.hi), views }
    }
}

/// How a number relates to the input's length (a buffer context's `r2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LenRel {
    /// No known relation.
    None,
    /// It equals the length.
    Equal,
    /// It is at most the length minus this: that many bytes of the input exist from it.
    Below(u32),
}

impl LenRel {
    fn join(self, o: LenRel) -> LenRel {
        match (self, o) {
            (LenRel::Equal, LenRel::Equal) => LenRel::Equal,
            (LenRel::Below(a), LenRel::Below(b)) => LenRel::Below(a.min(b)),
            _ => LenRel::None,
        }
    }

    /// As `join`, for a loop head that keeps changing: a distance to the length that keeps shrinking
    /// (an index creeping towards the length one iteration at a time) jumps to 0, its last value
    /// before the relation is lost, instead of taking one iteration per byte.
    fn widen(self, o: LenRel) -> LenRel {
        match (self, o) {
            (LenRel::Below(a), LenRel::Below(b)) if b < a => LenRel::Below(0),
            _ => self.join(o),
        }
    }

    fn includes(self, o: LenRel) -> bool {
        match (self, o) {
            (LenRel::None, _) => true,
            (LenRel::Below(a), LenRel::Below(b)) => b >= a,
            (a, b) => a == b,
        }
    }

    /// The relation after adding `c` to the number.
    pub(crate) fn shifted(self, c: i64) -> LenRel {
        match self {
            LenRel::Below(k) => match (k as i64).checked_sub(c) {
                Some(n) if n >= 0 && n <= u32::MAX as i64 => LenRel::Below(n as u32),
                _ => LenRel::None,
            },
            _ => LenRel::None,
        }
    }
}

/// The abstract value of a register or spilled slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value {
    /// Never written.
    Uninit,
    /// A number; `len` relates it to the input's length.
    Scalar {
        /// Its bounds.
        s: Scalar,
        /// Its relation to the length of the input.
        len: LenRel,
    },
    /// A pointer.
    Ptr(Ptr),
    /// The handle of the map at this index.
    Map(u32),
    /// A ring-buffer record that was released: any use is an error.
    Released,
    /// Written, but of a type that differs between paths: usable only as a whole (spilled, moved).
    Mixed,
}

impl Value {
    /// A number with these bounds.
    pub(crate) fn scalar(s: Scalar) -> Value {
        Value::Scalar { s, len: LenRel::None }
    }

    /// Any number.
    pub(crate) fn unknown() -> Value {
        Value::scalar(Scalar::unknown())
    }

    /// The number, if this is one.
    pub(crate) fn as_scalar(&self) -> Option<&Scalar> {
        match self {
            Value::Scalar { s, .. } => Some(s),
            _ => None,
        }
    }

    /// Whether the value is the number 0.
    pub(crate) fn is_zero(&self) -> bool {
        self.as_scalar().and_then(Scalar::as_const) == Some(0)
    }

    /// Least value containing both (`id` names the join, so that pointer identities stay stable).
    pub(crate) fn join(&self, o: &Value, id: u32) -> Value {
        self.combine(o, id, None)
    }

    /// As [`join`](Value::join), but bounds that grew jump to the next threshold.
    pub(crate) fn widen(&self, newer: &Value, id: u32, widening: Widening<'_>) -> Value {
        self.combine(newer, id, Some(widening))
    }

    fn combine(&self, o: &Value, id: u32, widen: Option<Widening<'_>>) -> Value {
        let num = |a: &Scalar, b: &Scalar| match widen {
            Some(t) => a.widen(b, t),
            None => a.join(b),
        };
        match (self, o) {
            (a, b) if a == b => *a,
            (Value::Uninit, _) | (_, Value::Uninit) => Value::Uninit,
            (Value::Scalar { s: a, len: la }, Value::Scalar { s: b, len: lb }) => {
                let len = if widen.is_some() { la.widen(*lb) } else { la.join(*lb) };
                Value::Scalar { s: num(a, b), len }
            }
            (Value::Ptr(a), Value::Ptr(b)) if a.kind == b.kind => {
                let nullable = a.nullable || b.nullable;
                if a.off == b.off && a.var == b.var && a.id == b.id {
                    // A proven range that keeps shrinking at a loop head is dropped rather than followed
                    // down one byte per iteration.
                    let range = if widen.is_some() && b.range < a.range { 0 } else { a.range.min(b.range) };
                    Value::Ptr(Ptr { range, nullable, ..*a })
                } else {
                    fold_join(a, b, id, nullable, widen)
                }
            }
            (Value::Ptr(p), v) | (v, Value::Ptr(p)) if v.is_zero() => {
                if p.nullable {
                    Value::Ptr(*p)
                } else {
                    Value::Mixed
                }
            }
            _ => Value::Mixed,
        }
    }

    /// Whether every concrete value `o` may stand for is one `self` stands for (ignoring loop deltas).
    pub(crate) fn includes(&self, o: &Value) -> bool {
        match (self, o) {
            (a, b) if a == b => true,
            (Value::Uninit, _) => true,
            (Value::Mixed, v) => !matches!(v, Value::Uninit),
            (Value::Scalar { s: a, len: la }, Value::Scalar { s: b, len: lb }) => a.includes(b) && la.includes(*lb),
            (Value::Ptr(a), Value::Ptr(b)) => {
                // Identities must match: a null check or a bounds proof about one pointer reaches every
                // pointer of its identity, so `self` may not relate pointers that `o` does not.
                a.kind == b.kind
                    && a.id == b.id
                    && (a.nullable || !b.nullable)
                    && (a.range == 0 || (a.id == b.id && a.off == b.off && a.range <= b.range))
                    && a.folded().includes(&b.folded())
            }
            (Value::Ptr(p), v) => p.nullable && v.is_zero(),
            _ => false,
        }
    }
}

/// Two pointers into one region with different offsets: one pointer whose variable part holds both.
fn fold_join(a: &Ptr, b: &Ptr, id: u32, nullable: bool, widen: Option<Widening<'_>>) -> Value {
    let (av, bv) = (a.folded(), b.folded());
    let var = match widen {
        // Known bits of a pointer's offset (its alignment, and often the only bound an offset that
        // a comparison bounds on every path keeps once its interval was widened) are not widened.
        Some(t) => av.widen(&bv, Widening { bits: false, ..t }),
        None => av.join(&bv),
    };
    Value::Ptr(Ptr { kind: a.kind, off: 0, var, id, range: 0, nullable })
}

/// A value with its deltas from the heads of the enclosing loops of its function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tracked {
    pub(crate) v: Value,
    pub(crate) deltas: [Delta; MAX_LOOP_DEPTH],
    /// For a number: how it relates to the origin of the numbers copied from one register at the
    /// instruction that made the link's identity (moves and constant additions keep the link).
    pub(crate) link: Option<Link>,
}

/// A member of a family of related numbers (see `relation`): its value (a number's signed value, or a
/// pointer's whole offset) equals `scale * X + d` as integers for the family's hidden `X`; or, with
/// `w32` (scale 1), its zero-extended low 32 bits equal those of `X + d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Link {
    pub(crate) id: u32,
    pub(crate) scale: i64,
    pub(crate) d: i64,
    pub(crate) w32: bool,
}

impl Link {
    /// The link of the origin itself.
    pub(crate) fn origin(id: u32) -> Link {
        Link { id, scale: 1, d: 0, w32: false }
    }

    /// The link after adding `c` (in 32 bits when `w32`) to a value whose signed range was `before`:
    /// `None` when no link says it (the sum may wrap, or leaves the family's form).
    pub(crate) fn add(self, c: i64, w32: bool, before: (i64, i64)) -> Option<Link> {
        match (self.w32, w32) {
            (false, false) => {
                // An exact integer relation survives only additions that cannot wrap.
                before.0.checked_add(c)?;
                before.1.checked_add(c)?;
                self.d.checked_add(c).map(|d| Link { d, ..self })
            }
            (_, true) if self.scale == 1 => Some(Link { d: self.d.wrapping_add(c) as u32 as i64, w32: true, ..self }),
            // A zero-extended sum plus a 64-bit constant is no sum of the origin.
            _ => None,
        }
    }

    /// The link after multiplying by `k` (at least 1) a value whose signed range was `before`.
    pub(crate) fn scaled(self, k: i64, before: (i64, i64)) -> Option<Link> {
        if self.w32 || k < 1 {
            return None;
        }
        before.0.checked_mul(k)?;
        before.1.checked_mul(k)?;
        Some(Link { scale: self.scale.checked_mul(k)?, d: self.d.checked_mul(k)?, ..self })
    }
}

impl Tracked {
    pub(crate) const UNINIT: Tracked = Tracked { v: Value::Uninit, deltas: [Delta::NONE; MAX_LOOP_DEPTH], link: None };

    /// A value with no loop relation.
    pub(crate) fn new(v: Value) -> Tracked {
        Tracked { v, deltas: [Delta::NONE; MAX_LOOP_DEPTH], link: None }
    }

    pub(crate) fn join(&self, o: &Tracked, id: u32, widen: Option<Widening<'_>>) -> Tracked {
        // Joining (or widening) a value with itself changes nothing; most values of two states met.
        if self == o && !matches!(self.v, Value::Ptr(_)) {
            return *self;
        }
        let v = match widen {
            Some(t) => self.v.widen(&o.v, id, t),
            None => self.v.join(&o.v, id),
        };
        let mut deltas = [Delta::NONE; MAX_LOOP_DEPTH];
        for (d, (a, b)) in deltas.iter_mut().zip(self.deltas.iter().zip(&o.deltas)) {
            *d = match widen {
                Some(_) if b.lo < a.lo || b.hi > a.hi => Delta::NONE,
                _ => a.join(*b),
            };
        }
        let link = if self.link == o.link { self.link } else { None };
        Tracked { v, deltas, link }
    }

    pub(crate) fn includes(&self, o: &Tracked) -> bool {
        (self.link.is_none() || self.link == o.link)
            && self.v.includes(&o.v)
            && self
                .deltas
                .iter()
                .zip(&o.deltas)
                .all(|(a, b)| a.views == 0 || (a.views & b.views == a.views && a.lo <= b.lo && b.hi <= a.hi))
    }

    /// The value changed by adding `c` (`width` bits): the deltas follow where no view wrapped.
    pub(crate) fn shifted(&self, v: Value, c: i64, before: &Scalar, w32: bool) -> Tracked {
        let link = match (self.link, &v) {
            (Some(l), Value::Scalar { .. } | Value::Ptr(_)) => l.add(c, w32, (before.smin, before.smax)),
            _ => None,
        };
        Tracked { link, ..self.shifted_by(v, c, c, before, w32) }
    }

    /// The number changed by adding some `c` in `lo..=hi` (`width` bits; a register, not a constant): the
    /// deltas follow where no view wrapped for either end (so for none between), and no link holds.
    pub(crate) fn shifted_by(&self, v: Value, lo: i64, hi: i64, before: &Scalar, w32: bool) -> Tracked {
        let mut deltas = self.deltas;
        let views =
            no_wrap_views(before, lo, w32) & no_wrap_views(before, hi, w32) | if w32 { 0 } else { Delta::MODULAR };
        for d in &mut deltas {
            let views = d.views & views;
            *d = match (d.lo.checked_add(lo), d.hi.checked_add(hi)) {
                (Some(lo), Some(hi)) if views != 0 => Delta { lo, hi, views },
                _ => Delta::NONE,
            };
        }
        Tracked { v, deltas, link: None }
    }
}

/// The views (see [`Delta::views`]) in which adding `c` to every value of `s` wraps around for none.
fn no_wrap_views(s: &Scalar, c: i64, w32: bool) -> u8 {
    let mut views = 0;
    let c128 = c as i128;
    let in_range = |lo: i128, hi: i128, min: i128, max: i128| lo + c128 >= min && hi + c128 <= max;
    let u32ok = in_range(s.u32min as i128, s.u32max as i128, 0, u32::MAX as i128);
    let s32ok = in_range(s.s32min as i128, s.s32max as i128, i32::MIN as i128, i32::MAX as i128);
    if u32ok {
        views |= 0b0100;
    }
    if s32ok {
        views |= 0b1000;
    }
    if w32 {
        // The result is zero-extended: the 64-bit value follows the low half only if it was zero-extended
        // already and the low half does not wrap.
        if s.umax <= u32::MAX as u64 && u32ok {
            views |= 0b0011;
        }
    } else {
        if in_range(s.umin as i128, s.umax as i128, 0, u64::MAX as i128) {
            views |= 0b0001;
        }
        if in_range(s.smin as i128, s.smax as i128, i64::MIN as i128, i64::MAX as i128) {
            views |= 0b0010;
        }
        // The low half wraps independently of the 64-bit value.
    }
    views
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Uninit => f.write_str("uninit"),
            Value::Scalar { s, len: LenRel::Equal } => write!(f, "input_len {s}"),
            Value::Scalar { s, len: LenRel::Below(k) } => write!(f, "{s} <= input_len-{k}"),
            Value::Scalar { s, len: LenRel::None } => write!(f, "{s}"),
            Value::Map(i) => write!(f, "map({i})"),
            Value::Released => f.write_str("released record"),
            Value::Mixed => f.write_str("mixed"),
            Value::Ptr(p) => {
                let name = match p.kind {
                    PtrKind::Input => "input",
                    PtrKind::InputEnd => "input_end",
                    PtrKind::Context => "ctx",
                    PtrKind::Stack(_) => "fp",
                    PtrKind::MapValue(_) => "map_value",
                    PtrKind::InnerMap(_) => "inner_map",
                    PtrKind::Record { .. } => "record",
                };
                if p.nullable {
                    f.write_str("nullable ")?;
                }
                match p.kind {
                    PtrKind::MapValue(m) | PtrKind::InnerMap(m) => write!(f, "{name}({m})")?,
                    PtrKind::Record { size, .. } => write!(f, "{name}({size})")?,
                    PtrKind::Stack(d) if d > 0 => write!(f, "{name}{d}")?,
                    _ => f.write_str(name)?,
                }
                if p.off != 0 || p.fixed() {
                    write!(f, "{:+}", p.off)?;
                }
                if !p.fixed() {
                    write!(f, "+var{}{}", if p.id != 0 { "#" } else { "" }, p.var)?;
                }
                if p.range > 0 {
                    write!(f, " range={}", p.range)?;
                }
                Ok(())
            }
        }
    }
}
