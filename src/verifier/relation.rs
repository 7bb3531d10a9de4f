//! Affine relations between numbers and pointer offsets: members of one family satisfy
//! `value = scale * X + d` for one hidden integer `X` (or, for 32-bit links, agree with `X + d` in their
//! zero-extended low 32 bits). A loop's index and the pointer it walks form such a family, so a branch
//! that bounds the index bounds the pointer too.
//!
//! Families come from copies (`mov`), constant additions, shifts and multiplications by constants, a
//! fixed pointer plus a linked number, and, at a loop head, from numbers that change in step on the
//! paths that meet there. Where two paths meet, a family whose members all moved by the same multiple
//! of their scales is the same family with another `X`; members that moved differently are split off.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::scalar::Scalar;
use super::state::{Slot, State};
use super::value::{Link, Tracked, Value};

/// A place in a state: frame, and register (0..11) or 11 + stack slot.
type Pos = (usize, usize);

/// A family of one state, the family of the other it matches, and the shift between their `X`s.
type ShiftKey = (u32, u32, i64);

/// The constant a value stands for, if it is one, with a key saying what kind of value it is (numbers
/// relate only to numbers, pointer offsets only to pointers into the same region).
fn constant(v: &Value) -> Option<(u8, u32, i64)> {
    match v {
        Value::Scalar { s, .. } => s.as_const().map(|c| (0, 0, c as i64)),
        Value::Ptr(p) if p.fixed() && !p.nullable => Some((1, region_key(p), p.off)),
        _ => None,
    }
}

fn region_key(p: &super::value::Ptr) -> u32 {
    use super::value::PtrKind;
    match p.kind {
        PtrKind::Input => 1,
        PtrKind::InputEnd => 2,
        PtrKind::Context => 3,
        PtrKind::Stack(d) => 16 + d as u32,
        PtrKind::MapValue(m) => 0x1000 + m,
        PtrKind::InnerMap(m) => 0x10_0000 + m,
        PtrKind::Record { ref_id, .. } => 0x8000_0000 | ref_id,
    }
}

fn tracked_at(s: &State, (f, k): Pos) -> Option<&Tracked> {
    let frame = s.frames.get(f)?;
    if k < 11 {
        return frame.regs.get(k);
    }
    match frame.slot(k - 11) {
        Some(Slot::Spill(t)) => Some(t),
        _ => None,
    }
}

fn tracked_at_mut(s: &mut State, (f, k): Pos) -> Option<&mut Tracked> {
    let frame = s.frames.get_mut(f)?;
    if k < 11 {
        return frame.regs.get_mut(k);
    }
    let i = frame.stack.binary_search_by_key(&((k - 11) as u8), |e| e.0).ok()?;
    match &mut frame.stack[i].1 {
        Slot::Spill(t) => Some(t),
        Slot::Bytes(_) | Slot::Halves(..) => None,
    }
}

fn positions(s: &State) -> Vec<Pos> {
    let mut out = Vec::new();
    for (f, frame) in s.frames.iter().enumerate() {
        out.extend((0..11).map(|r| (f, r)));
        out.extend(frame.stack.iter().filter(|(_, s)| matches!(s, Slot::Spill(_))).map(|(k, _)| (f, 11 + *k as usize)));
    }
    out
}

/// An identity for a family made or split at `site`.
fn derived_id(site: u32, salt: u64) -> u32 {
    let h = (site as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ salt.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    0x2000_0000 | ((h >> 35) as u32 & 0x1fff_ffff)
}

/// Prepares two states for a join at `site`: families in `b` that are families of `a` with another
/// hidden `X` are rewritten in `a`'s terms, members that moved differently are split into families of
/// their own (on both sides), and at a loop head (`discover`) numbers that are constants on both sides
/// and change in step become a new family.
pub(crate) fn relate(a: &mut State, b: &mut State, site: u32, discover: bool) {
    if a.frames.len() != b.frames.len() {
        return;
    }
    let linked = |s: &State| {
        s.frames.iter().any(|f| f.regs.iter().any(|t| t.link.is_some()))
            || s.frames.iter().any(|f| f.stack.iter().any(|(_, s)| matches!(s, Slot::Spill(t) if t.link.is_some())))
    };
    if !discover && !linked(a) && !linked(b) {
        return;
    }
    if discover {
        discover_families(a, b, site);
    }
    // By pair of families (a's, b's) and shift t (b's d = a's d + scale * t): the positions where both
    // sides have a link of the same form.
    let pos_b = positions(b);
    let mut grouped = alloc::vec![false; pos_b.len()];
    let mut shifts: Vec<(ShiftKey, usize)> = Vec::new();
    for (i, &pos) in pos_b.iter().enumerate() {
        let (Some(tb), Some(ta)) = (tracked_at(b, pos), tracked_at(a, pos)) else { continue };
        let (Some(lb), Some(la)) = (tb.link, ta.link) else { continue };
        if la.scale != lb.scale || la.w32 != lb.w32 {
            continue;
        }
        let t = if la.w32 {
            Some(lb.d.wrapping_sub(la.d) as u32 as i64)
        } else {
            lb.d.checked_sub(la.d).filter(|diff| diff % la.scale == 0).map(|diff| diff / la.scale)
        };
        match t {
            Some(t) => {
                shifts.push(((la.id, lb.id, t), i));
                grouped[i] = true;
            }
            // No common X: the member leaves the family on the incoming side.
            None => {
                if let Some(t) = tracked_at_mut(b, pos) {
                    t.link = None;
                }
            }
        }
    }
    // Groups of positions with the same (a's family, b's family, shift).
    shifts.sort_unstable();
    let mut groups: Vec<(ShiftKey, &[(ShiftKey, usize)])> =
        shifts.chunk_by(|x, y| x.0 == y.0).map(|g| (g[0].0, g)).collect();
    // The largest group of each of a's families keeps its identity (renamed in b, moved to a's X); the
    // others become families of their own on both sides.
    groups.sort_by_key(|(key, members)| (core::cmp::Reverse(members.len()), key.2 != 0, *key));
    let mut claimed = alloc::collections::BTreeSet::new();
    // b's families, and the identity and shift their ungrouped members take.
    let mut renamed_b: BTreeMap<u32, (u32, i64)> = BTreeMap::new();
    for &((ida, idb, t), members) in &groups {
        let new_id = if claimed.insert(ida) {
            ida
        } else {
            derived_id(site, (ida as u64) << 32 ^ (idb as u64).rotate_left(17) ^ t as u64)
        };
        renamed_b.entry(idb).or_insert((new_id, t));
        for &(_, i) in members {
            let pos = pos_b[i];
            let da = tracked_at_mut(a, pos).and_then(|ta| ta.link.as_mut()).map(|l| {
                l.id = new_id;
                l.d
            });
            if let (Some(l), Some(da)) = (tracked_at_mut(b, pos).and_then(|tb| tb.link.as_mut()), da) {
                l.id = new_id;
                l.d = da;
            }
        }
    }
    // b's other members of a family that was matched follow it into a's terms (X + t), so that they can
    // still match constants in a. Each member moves once, by its own family's shift.
    for (i, &pos) in pos_b.iter().enumerate() {
        if grouped[i] {
            continue;
        }
        let Some(l) = tracked_at_mut(b, pos).and_then(|tb| tb.link.as_mut()) else { continue };
        let Some(&(new_id, t)) = renamed_b.get(&l.id) else { continue };
        let shifted = if l.w32 {
            Some(l.d.wrapping_sub(t) as u32 as i64)
        } else {
            l.scale.checked_mul(t).and_then(|st| l.d.checked_sub(st))
        };
        match shifted {
            Some(d) => {
                l.id = new_id;
                l.d = d;
            }
            None => l.id = derived_id(site, 0xdead ^ l.id as u64),
        }
    }
    adopt_constants(a, b);
    adopt_constants(b, a);
}

/// The hidden `X` of each family in `s` that has a member of known constant value.
fn hidden_values(s: &State) -> BTreeMap<u32, i128> {
    let mut out = BTreeMap::new();
    for pos in positions(s) {
        let Some(t) = tracked_at(s, pos) else { continue };
        let Some(l) = t.link.filter(|l| !l.w32) else { continue };
        let Some((_, _, c)) = constant(&t.v) else { continue };
        let n = c as i128 - l.d as i128;
        if n % l.scale as i128 == 0 {
            out.entry(l.id).or_insert(n / l.scale as i128);
        }
    }
    out
}

/// Where `from` has a member of a family and `to` has a constant instead, and the constant satisfies
/// the family's relation for `to`'s own `X`, `to` gets the link too (a loop's first pass, where
/// everything is constant, then joins later passes without losing the relation).
fn adopt_constants(to: &mut State, from: &State) {
    let mut adopted = Vec::new();
    let mut hidden: Option<BTreeMap<u32, i128>> = None;
    let mut families: Option<alloc::collections::BTreeSet<u32>> = None;
    for pos in positions(from) {
        let (Some(tf), Some(tt)) = (tracked_at(from, pos), tracked_at(to, pos)) else { continue };
        let Some(l) = tf.link.filter(|l| !l.w32) else { continue };
        if tt.link.is_some() {
            continue;
        }
        let (Some((kf, rf, _)), Some((kt, rt, c))) = (value_key(&tf.v), constant(&tt.v)) else { continue };
        if (kf, rf) != (kt, rt) {
            continue;
        }
        let known = hidden.get_or_insert_with(|| hidden_values(to));
        let x = match known.get(&l.id) {
            Some(&x) => x,
            // A family `to` has no member of at all: its X is free, and this constant fixes it.
            None if !families.get_or_insert_with(|| family_ids(to)).contains(&l.id)
                && (c as i128 - l.d as i128) % l.scale as i128 == 0 =>
            {
                let x = (c as i128 - l.d as i128) / l.scale as i128;
                known.insert(l.id, x);
                x
            }
            None => continue,
        };
        if l.scale as i128 * x + l.d as i128 == c as i128 {
            adopted.push((pos, l));
        }
    }
    for (pos, l) in adopted {
        if let Some(t) = tracked_at_mut(to, pos) {
            t.link = Some(l);
        }
    }
}

/// The families some value of `s` belongs to.
fn family_ids(s: &State) -> alloc::collections::BTreeSet<u32> {
    positions(s).into_iter().filter_map(|pos| tracked_at(s, pos).and_then(|t| t.link).map(|l| l.id)).collect()
}

/// What kind of value this is, for matching members: (number or pointer, region), and a placeholder.
fn value_key(v: &Value) -> Option<(u8, u32, i64)> {
    match v {
        Value::Scalar { .. } => Some((0, 0, 0)),
        Value::Ptr(p) if !p.nullable => Some((1, region_key(p), 0)),
        _ => None,
    }
}

/// Numbers (or pointer offsets) that are constants on both sides, differ, and change in proportion
/// become one family: `value = k * X + d` with `X` the first one's value.
fn discover_families(a: &mut State, b: &mut State, site: u32) {
    let f = a.frames.len() - 1;
    let mut cands: Vec<(Pos, (u8, u32), i64, i64)> = Vec::new();
    for pos in positions(a).into_iter().filter(|p| p.0 == f) {
        let (Some(ta), Some(tb)) = (tracked_at(a, pos), tracked_at(b, pos)) else { continue };
        let (Some((ka, ra, va)), Some((kb, rb, vb))) = (constant(&ta.v), constant(&tb.v)) else { continue };
        if (ka, ra) != (kb, rb) || va == vb {
            continue;
        }
        cands.push((pos, (ka, ra), va, vb));
    }
    // The smallest steps first: they are the bases the others are multiples of.
    cands.sort_by_key(|c| ((c.3 as i128 - c.2 as i128).unsigned_abs(), c.0));
    let linked_in_both = |pos: Pos, a: &State, b: &State| {
        let la = tracked_at(a, pos).and_then(|t| t.link).map(|l| l.id);
        la.is_some() && la == tracked_at(b, pos).and_then(|t| t.link).map(|l| l.id)
    };
    let mut used = alloc::vec![false; cands.len()];
    for i in 0..cands.len() {
        if used[i] {
            continue;
        }
        let (base_pos, _, va, vb) = cands[i];
        let step = vb as i128 - va as i128;
        let mut family = alloc::vec![(base_pos, 1i64, 0i64)];
        for j in i + 1..cands.len() {
            if used[j] {
                continue;
            }
            let (pos, _, wa, wb) = cands[j];
            let dw = wb as i128 - wa as i128;
            if dw % step != 0 {
                continue;
            }
            let k = dw / step;
            let d = wa as i128 - k * va as i128;
            if !(1..=1 << 16).contains(&k) || d.unsigned_abs() > i64::MAX as u128 {
                continue;
            }
            family.push((pos, k as i64, d as i64));
            used[j] = true;
        }
        // A family of one still relates the copies and pointers made from it later, but does not replace
        // a family the value already has on both sides.
        if family.len() < 2 && linked_in_both(base_pos, a, b) {
            continue;
        }
        used[i] = true;
        let id = derived_id(site, 0x5eed_0000 ^ base_pos.1 as u64);
        for (pos, scale, d) in family {
            // In `a`, X is the base's value there; in `b`, the base's value there.
            for s in [&mut *a, &mut *b] {
                if let Some(t) = tracked_at_mut(s, pos) {
                    t.link = Some(Link { id, scale, d, w32: false });
                }
            }
        }
    }
}

/// Integer division rounding down.
fn div_floor(n: i128, d: i128) -> i128 {
    let q = n / d;
    if (n % d != 0) && ((n < 0) != (d < 0)) {
        q - 1
    } else {
        q
    }
}

/// Integer division rounding up.
fn div_ceil(n: i128, d: i128) -> i128 {
    -div_floor(-n, d)
}

/// The bounds a member with link `y` gets from member `x`'s signed range `[lo, hi]` (both exact integer
/// relations, scales positive).
pub(crate) fn implied_range(x: Link, (lo, hi): (i64, i64), y: Link) -> Option<(i64, i64)> {
    if x.w32 || y.w32 || x.scale < 1 || y.scale < 1 {
        return None;
    }
    let xl = div_ceil(lo as i128 - x.d as i128, x.scale as i128);
    let xh = div_floor(hi as i128 - x.d as i128, x.scale as i128);
    if xl > xh {
        return Some((1, 0));
    }
    let yl = y.scale as i128 * xl + y.d as i128;
    let yh = y.scale as i128 * xh + y.d as i128;
    (yl >= i64::MIN as i128 && yh <= i64::MAX as i128).then_some((yl as i64, yh as i64))
}

/// Narrows the number `s` to the signed range `[lo, hi]`; `None` when nothing is left.
pub(crate) fn narrow_scalar(s: &Scalar, (lo, hi): (i64, i64)) -> Option<Scalar> {
    if lo > hi {
        return None;
    }
    s.meet(&Scalar::srange(lo, hi))
}
