//! The abstract state at one program point: a frame per active call (registers and stack slots), what
//! is known about the input's length, and the ring-buffer records held.

use alloc::vec::Vec;

use super::relation;
use super::scalar::{Scalar, Widening};
use super::value::{Delta, LenRel, Link, PtrKind, Tracked, Value, MAX_LOOP_DEPTH};

/// Bytes of one stack frame.
pub(crate) const FRAME_BYTES: i64 = crate::memory::FRAME_SIZE as i64;

/// One 8-byte stack slot that has been written.
#[derive(Debug, Clone, PartialEq, Eq)]
// Slots live in sorted vectors of the few slots a program writes; boxing spills would cost an
// allocation per spill for no saving (halves, rarer, are boxed so that every slot is not twice as
// large as a spill).
#[allow(clippy::large_enum_variant)]
pub(crate) enum Slot {
    /// Bytes written with numbers: bit `i` set when byte `i` of the slot was written.
    Bytes(u8),
    /// A register spilled by an aligned 8-byte store.
    Spill(Tracked),
    /// Bytes written as in `Bytes`, of which each aligned 4-byte half written by one 32-bit store of a
    /// number (half 0 at the lower address) keeps that number.
    Halves(alloc::boxed::Box<[Option<Tracked>; 2]>, u8),
}

impl Slot {
    /// The written bytes, and whether they hold (part of) something other than a number.
    pub(crate) fn bytes(&self) -> (u8, bool) {
        match self {
            Slot::Bytes(m) | Slot::Halves(_, m) => (*m, false),
            Slot::Spill(t) => (0xff, !matches!(t.v, Value::Scalar { .. })),
        }
    }

    /// The values it keeps (a spill, or the numbers of its halves), mutably.
    pub(crate) fn tracked_mut(&mut self) -> impl Iterator<Item = &mut Tracked> {
        let (one, two): (Option<&mut Tracked>, [Option<&mut Tracked>; 2]) = match self {
            Slot::Spill(t) => (Some(t), [None, None]),
            Slot::Halves(h, _) => {
                let [a, b] = &mut **h;
                (None, [a.as_mut(), b.as_mut()])
            }
            Slot::Bytes(_) => (None, [None, None]),
        };
        one.into_iter().chain(two.into_iter().flatten())
    }
}

/// The registers and stack of one active function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    /// `r0`..`r10`.
    pub(crate) regs: [Tracked; 11],
    /// Written slots, by slot index (slot `i` holds bytes `-8 * (i + 1)..-8 * i` from the frame's top),
    /// sorted; slots not listed were never written.
    pub(crate) stack: Vec<(u8, Slot)>,
    /// The function (index into the program's functions).
    pub(crate) function: u32,
}

impl Frame {
    /// A new frame for function `function` at depth `depth`: every register uninitialised except r10.
    pub(crate) fn new(function: u32, depth: u8) -> Frame {
        let mut regs = [Tracked::UNINIT; 11];
        regs[10] = Tracked::new(Value::Ptr(super::value::Ptr::at(PtrKind::Stack(depth), 0)));
        Frame { regs, stack: Vec::new(), function }
    }

    /// The slot at index `i`, if written.
    pub(crate) fn slot(&self, i: usize) -> Option<&Slot> {
        self.stack.binary_search_by_key(&(i as u8), |e| e.0).ok().map(|k| &self.stack[k].1)
    }

    /// The slot at index `i`, if written, mutably.
    pub(crate) fn slot_mut(&mut self, i: usize) -> Option<&mut Slot> {
        let k = self.stack.binary_search_by_key(&(i as u8), |e| e.0).ok()?;
        Some(&mut self.stack[k].1)
    }

    /// Sets slot `i`.
    pub(crate) fn set_slot(&mut self, i: usize, slot: Slot) {
        match self.stack.binary_search_by_key(&(i as u8), |e| e.0) {
            Ok(k) => self.stack[k].1 = slot,
            Err(k) => self.stack.insert(k, (i as u8, slot)),
        }
    }
}

/// The state at a program point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct State {
    /// Active frames, the entry function's first.
    pub(crate) frames: Vec<Frame>,
    /// The input is proven to hold at least this many bytes.
    pub(crate) input_min: u64,
    /// Ring-buffer records held: reference id and slot of the reserving call, sorted by id.
    pub(crate) refs: Vec<(u32, u32)>,
    /// The `bpf_spin_lock` held, if any.
    pub(crate) lock: Option<Lock>,
}

/// A lock word taken with `bpf_spin_lock`: in the value of map `map` that the pointer with identity
/// `id` addresses, at offset `off`, taken at slot `at`. `map` is `u32::MAX` where paths that held
/// different locks, or one a lock and the other none, met: no lock can be released there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lock {
    pub(crate) map: u32,
    pub(crate) id: u32,
    pub(crate) off: i64,
    pub(crate) at: u32,
}

impl State {
    /// The innermost frame.
    pub(crate) fn top(&self) -> &Frame {
        &self.frames[self.frames.len() - 1]
    }

    /// The innermost frame, mutably.
    pub(crate) fn top_mut(&mut self) -> &mut Frame {
        let n = self.frames.len() - 1;
        &mut self.frames[n]
    }

    /// Register `r` of the innermost frame.
    pub(crate) fn reg(&self, r: u8) -> &Tracked {
        &self.top().regs[r as usize]
    }

    /// Sets register `r` of the innermost frame to a value with no loop relation.
    pub(crate) fn set(&mut self, r: u8, v: Value) {
        self.top_mut().regs[r as usize] = Tracked::new(v);
    }

    /// Every value in the state (registers and spills of every frame), mutably.
    pub(crate) fn for_each_value(&mut self, mut f: impl FnMut(&mut Value)) {
        for frame in &mut self.frames {
            for r in &mut frame.regs {
                f(&mut r.v);
            }
            for (_, s) in &mut frame.stack {
                for t in s.tracked_mut() {
                    f(&mut t.v);
                }
            }
        }
    }

    /// Every register and spill of every frame, mutably.
    pub(crate) fn for_each_tracked(&mut self, mut f: impl FnMut(&mut Tracked)) {
        for frame in &mut self.frames {
            frame.regs.iter_mut().for_each(&mut f);
            for (_, s) in &mut frame.stack {
                s.tracked_mut().for_each(&mut f);
            }
        }
    }

    /// Drops every link with identity `id` (it is about to name a new origin).
    pub(crate) fn unlink(&mut self, id: u32) {
        self.for_each_tracked(|t| {
            if t.link.is_some_and(|l| l.id == id) {
                t.link = None;
            }
        });
    }

    /// The number linked as `(id, ox)` is at most the input length minus `k`: every number linked to the
    /// same origin learns its own distance to the length.
    pub(crate) fn below_len(&mut self, x: Link, k: u32) {
        if x.w32 || x.scale != 1 {
            return;
        }
        let (id, ox) = (x.id, x.d);
        self.for_each_tracked(|t| {
            let Some(Link { id: l, d: oy, w32: false, scale: 1 }) = t.link else { return };
            let Value::Scalar { s, len } = &mut t.v else { return };
            if l != id || s.umax >= 1 << 33 {
                return;
            }
            let Some(d) = oy.checked_sub(ox).filter(|d| d.unsigned_abs() < 1 << 32) else { return };
            let Ok(ky) = u32::try_from(k as i64 - d) else { return };
            match *len {
                LenRel::None => *len = LenRel::Below(ky),
                LenRel::Below(old) if old < ky => *len = LenRel::Below(ky),
                _ => {}
            }
        });
    }

    /// The number linked as `x` is now known to be in `v`: every number linked to the same origin
    /// narrows to what that implies. `false` when some number then has no possible value (the path
    /// cannot run).
    pub(crate) fn narrow_linked(&mut self, x: Link, v: &Scalar) -> bool {
        let mut feasible = true;
        self.for_each_tracked(|t| {
            let Some(y) = t.link else { return };
            if y.id != x.id {
                return;
            }
            if x.scale != 1 || y.scale != 1 || matches!(t.v, Value::Ptr(_)) {
                // Exact integer relations: bound the hidden X by x, then y by X.
                let Some(range) = relation::implied_range(x, (v.smin, v.smax), y) else { return };
                match &mut t.v {
                    Value::Scalar { s, .. } => match relation::narrow_scalar(s, range) {
                        Some(m) => *s = m,
                        None => feasible = false,
                    },
                    Value::Ptr(p) => {
                        // The whole offset is off + var: narrow var.
                        let lo = range.0.saturating_sub(p.off);
                        let hi = range.1.saturating_sub(p.off);
                        match relation::narrow_scalar(&p.var, (lo, hi)) {
                            Some(m) => p.var = m,
                            None => feasible = false,
                        }
                    }
                    _ => {}
                }
                return;
            }
            let Value::Scalar { s, .. } = &mut t.v else { return };
            let delta = y.d.wrapping_sub(x.d) as u64;
            let implied = if !x.w32 && !y.w32 {
                v.alu(crate::isa::AluOp::Add, crate::isa::Width::W64, Scalar::constant(delta))
            } else if y.w32 || s.umax <= u32::MAX as u64 {
                // Both agree with the origin in their low 32 bits, and `y` has no others.
                v.alu(crate::isa::AluOp::Add, crate::isa::Width::W32, Scalar::constant(delta))
            } else {
                return;
            };
            match s.meet(&implied) {
                Some(m) => *s = m,
                None => feasible = false,
            }
        });
        feasible
    }

    /// Numbers below the proven input length get the relation that says so, so that a number known
    /// small on one path and known below the length on another join into one below the length.
    pub(crate) fn materialize_len(&mut self) {
        let min = self.input_min;
        if min == 0 {
            return;
        }
        self.for_each_value(|v| {
            if let Value::Scalar { s, len } = v {
                if *len == LenRel::None && s.umax < min {
                    *len = LenRel::Below((min - s.umax).min(u32::MAX as u64) as u32);
                }
            }
        });
    }

    /// Starts a loop at depth `depth` (1 = outermost) in the innermost frame: every register's and spill's
    /// delta for that depth becomes zero, and deltas of deeper loops are dropped.
    pub(crate) fn start_loop(&mut self, depth: usize) {
        let Some(d) = depth.checked_sub(1) else { return };
        let frame = self.top_mut();
        let reset = |t: &mut Tracked| {
            for (i, delta) in t.deltas.iter_mut().enumerate() {
                if i == d {
                    *delta = Delta::ZERO;
                } else if i > d {
                    *delta = Delta::NONE;
                }
            }
        };
        if d >= MAX_LOOP_DEPTH {
            return;
        }
        frame.regs.iter_mut().for_each(reset);
        for (_, s) in &mut frame.stack {
            s.tracked_mut().for_each(reset);
        }
    }

    /// The least state containing `self` and `o` (which must have the same frames), or with `widen` the
    /// widened one. `site` makes the identities of joined pointers stable.
    pub(crate) fn join(&self, o: &State, site: u32, widen: Option<Widening<'_>>) -> State {
        let frames = self
            .frames
            .iter()
            .zip(&o.frames)
            .enumerate()
            .map(|(fi, (a, b))| {
                let mut regs = [Tracked::UNINIT; 11];
                for (r, reg) in regs.iter_mut().enumerate() {
                    *reg = a.regs[r].join(&b.regs[r], join_id(site, fi, r), widen.map(|w| w.for_reg(r)));
                }
                let mut stack = Vec::new();
                let (mut i, mut j) = (0, 0);
                while i < a.stack.len() && j < b.stack.len() {
                    let (ka, sa) = &a.stack[i];
                    let (kb, sb) = &b.stack[j];
                    if ka < kb {
                        i += 1;
                    } else if kb < ka {
                        j += 1;
                    } else {
                        if let Some(s) = join_slot(sa, sb, join_id(site, fi, 11 + *ka as usize), widen) {
                            stack.push((*ka, s));
                        }
                        i += 1;
                        j += 1;
                    }
                }
                Frame { regs, stack, function: a.function }
            })
            .collect();
        let mut refs = self.refs.clone();
        for r in &o.refs {
            if let Err(k) = refs.binary_search_by_key(&r.0, |e| e.0) {
                refs.insert(k, *r);
            }
        }
        let lock = match (self.lock, o.lock) {
            (a, b) if a == b => a,
            (Some(l), _) | (None, Some(l)) => Some(Lock { map: u32::MAX, ..l }),
            (None, None) => None,
        };
        let mut joined = State { frames, input_min: self.input_min.min(o.input_min), refs, lock };
        joined.orphan_stale_ids(site);
        joined
    }

    /// After a join at `site`: a pointer that kept the identity the join gave another value (it held it
    /// on both paths) may differ from that value in its variable offset, so it loses the identity.
    fn orphan_stale_ids(&mut self, site: u32) {
        for fi in 0..self.frames.len() {
            let positions = 11 + self.frames[fi].stack.len();
            for k in 0..positions {
                let (at, id) = match k {
                    r if r < 11 => (r, join_id(site, fi, r)),
                    s => {
                        let slot = self.frames[fi].stack[s - 11].0 as usize;
                        (11 + slot, join_id(site, fi, 11 + slot))
                    }
                };
                let owns = |v: &Value| matches!(v, Value::Ptr(p) if p.id == id);
                let owner_here = match at {
                    r if r < 11 => owns(&self.frames[fi].regs[r].v),
                    _ => self.frames[fi]
                        .stack
                        .iter()
                        .any(|(i, s)| 11 + *i as usize == at && matches!(s, Slot::Spill(t) if owns(&t.v))),
                };
                if !owner_here {
                    continue;
                }
                // Every other holder of `id` is stale.
                for (fj, frame) in self.frames.iter_mut().enumerate() {
                    for (r, t) in frame.regs.iter_mut().enumerate() {
                        if (fj, r) != (fi, at) {
                            if let Value::Ptr(p) = &mut t.v {
                                if p.id == id {
                                    p.id = ORPHAN;
                                    p.range = 0;
                                }
                            }
                        }
                    }
                    for (i, s) in frame.stack.iter_mut() {
                        if (fj, 11 + *i as usize) != (fi, at) {
                            if let Slot::Spill(t) = s {
                                if let Value::Ptr(p) = &mut t.v {
                                    if p.id == id {
                                        p.id = ORPHAN;
                                        p.range = 0;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Whether every concrete state `o` stands for is one `self` stands for.
    pub(crate) fn includes(&self, o: &State) -> bool {
        if self.frames.len() != o.frames.len()
            || self.input_min > o.input_min
            || self.refs != o.refs
            || self.lock != o.lock
        {
            return false;
        }
        self.frames.iter().zip(&o.frames).all(|(a, b)| {
            a.regs.iter().zip(&b.regs).all(|(x, y)| x.includes(y))
                && a.stack.iter().all(|(k, sa)| match (sa, b.slot(*k as usize)) {
                    (_, None) => false,
                    (Slot::Spill(x), Some(Slot::Spill(y))) => x.includes(y),
                    (Slot::Spill(_), Some(_)) => false,
                    (Slot::Halves(ha, ma), Some(other)) => {
                        let (mb, pointer) = other.bytes();
                        let halves_ok = (0..2).all(|i| match (&ha[i], other) {
                            (None, _) => true,
                            (Some(x), Slot::Halves(hb, _)) => hb[i].as_ref().is_some_and(|y| x.includes(y)),
                            _ => false,
                        });
                        !pointer && ma & mb == *ma && halves_ok
                    }
                    (Slot::Bytes(ma), Some(other)) => {
                        let (mb, pointer) = other.bytes();
                        (!pointer || *ma == 0) && ma & mb == *ma
                    }
                })
        })
    }
}

/// Joins two written slots; `None` when nothing of them is known written on both paths.
fn join_slot(a: &Slot, b: &Slot, id: u32, widen: Option<Widening<'_>>) -> Option<Slot> {
    let bytes = |s: &Slot| s.bytes();
    match (a, b) {
        (Slot::Halves(ha, ma), Slot::Halves(hb, mb)) => {
            let mut halves = [None, None];
            for (i, h) in halves.iter_mut().enumerate() {
                if let (Some(x), Some(y)) = (&ha[i], &hb[i]) {
                    *h = Some(x.join(y, id ^ (i as u32 + 1) << 20, widen));
                }
            }
            let m = ma & mb;
            (m != 0).then(|| Slot::Halves(alloc::boxed::Box::new(halves), m))
        }
        (Slot::Spill(x), Slot::Spill(y)) => {
            let t = x.join(y, id, widen);
            if t.v == Value::Uninit {
                None
            } else {
                Some(Slot::Spill(t))
            }
        }
        _ => {
            let (ma, pa) = bytes(a);
            let (mb, pb) = bytes(b);
            if pa || pb {
                // A pointer on one path and numbers on the other: keep it unreadable as a number.
                Some(Slot::Spill(Tracked::new(Value::Mixed)))
            } else {
                let m = ma & mb;
                (m != 0).then_some(Slot::Bytes(m))
            }
        }
    }
}

/// Identity of a pointer that no proof about another pointer may reach (as `step::ORPHAN_ID`).
const ORPHAN: u32 = 1;

/// A stable identity for a pointer made by joining at `site`, in frame `frame`, register or slot `at`.
fn join_id(site: u32, frame: usize, at: usize) -> u32 {
    0x8000_0000 | (site.wrapping_mul(1024) ^ (frame as u32) << 7 ^ at as u32)
}
