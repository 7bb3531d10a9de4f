//! Memory accesses: which region a pointer reaches, whether every byte an access may touch lies inside
//! it (and may be written), and what the stack holds byte by byte.

use super::analysis::Checker;
use super::error::{RegionKind, VerifyError, VerifyErrorKind as K};
use super::scalar::Scalar;
use super::state::{Slot, State, FRAME_BYTES};
use super::value::{Ptr, PtrKind, Tracked, Value};
use crate::isa::{AtomicOp, Width};
use crate::link::Context;

/// Whether an access reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    Read,
    Write,
}

impl Checker<'_> {
    /// The pointer in register `r`, usable for an access.
    pub(crate) fn base(&self, pc: usize, st: &State, r: u8) -> Result<Ptr, VerifyError> {
        match st.reg(r).v {
            Value::Ptr(p) if p.nullable => Err(self.error(pc, K::MaybeNull { reg: r }, st)),
            Value::Ptr(p) if p.kind != PtrKind::InputEnd => Ok(p),
            Value::Uninit => Err(self.error(pc, K::UninitRegister { reg: r }, st)),
            Value::Released => Err(self.error(pc, K::BadRelease { reg: r }, st)),
            _ => Err(self.error(pc, K::NotAPointer { reg: r }, st)),
        }
    }

    /// Checks that `len` bytes at `p + off` lie inside `p`'s region for every offset `p` may have, and may
    /// be written if `dir` is a write. Returns the lowest start and the highest end.
    pub(crate) fn region(
        &self,
        pc: usize,
        st: &State,
        p: &Ptr,
        off: i64,
        len: u64,
        dir: Dir,
    ) -> Result<(i64, i64), VerifyError> {
        let (plo, phi) = p.offsets();
        let lo = plo.saturating_add(off);
        let end = phi.saturating_add(off).saturating_add(len as i64);
        let out =
            |region: RegionKind, size: u64| Err(self.error(pc, K::OutOfBounds { region, min: lo, end, size }, st));
        match p.kind {
            PtrKind::Stack(_) => {
                if lo < -FRAME_BYTES || end > 0 {
                    return out(RegionKind::Stack, FRAME_BYTES as u64);
                }
            }
            PtrKind::Input => {
                let fixed_ok = lo >= 0 && end <= st.input_min as i64;
                let rel = p.off.saturating_add(off);
                let ranged_ok =
                    p.range > 0 && p.var.smin >= 0 && rel >= 0 && rel.saturating_add(len as i64) <= p.range && lo >= 0;
                if !fixed_ok && !ranged_ok {
                    return out(RegionKind::Input, st.input_min);
                }
            }
            // A map reference is no memory either.
            PtrKind::InputEnd | PtrKind::InnerMap(_) => return Err(self.error(pc, K::NotAPointer { reg: 0 }, st)),
            PtrKind::Context => match self.linked.env().context() {
                Context::Fixed { size, read_only } => {
                    if lo < 0 || end > *size as i64 {
                        return out(RegionKind::Context, *size as u64);
                    }
                    if dir == Dir::Write && read_only.iter().any(|r| (r.start as i64) < end && lo < r.end as i64) {
                        return Err(self.error(pc, K::ReadOnly { region: RegionKind::Context }, st));
                    }
                }
                Context::Packet { size, .. } => {
                    if lo < 0 || end > *size as i64 {
                        return out(RegionKind::Context, *size as u64);
                    }
                    if dir == Dir::Write {
                        return Err(self.error(pc, K::ReadOnly { region: RegionKind::Context }, st));
                    }
                }
                Context::Buffer => return out(RegionKind::Context, 0),
            },
            PtrKind::MapValue(m) => {
                let def = self.maps.get(m as usize).copied();
                let size = def.map_or(0, |d| d.value_size as i64);
                if lo < 0 || end > size {
                    return out(RegionKind::MapValue, size as u64);
                }
                if dir == Dir::Write && def.is_some_and(|d| d.read_only_for_programs()) {
                    return Err(self.error(pc, K::ReadOnly { region: RegionKind::ReadOnlyData }, st));
                }
            }
            PtrKind::Record { size, .. } => {
                if lo < 0 || end > size as i64 {
                    return out(RegionKind::Record, size as u64);
                }
            }
        }
        Ok((lo, end))
    }

    /// A load of `size` bytes at `r + off`.
    pub(crate) fn load(&self, pc: usize, st: &State, r: u8, off: i64, size: u32) -> Result<Tracked, VerifyError> {
        let p = self.base(pc, st, r)?;
        let (lo, end) = self.region(pc, st, &p, off, size as u64, Dir::Read)?;
        let exact = lo + size as i64 == end;
        if let PtrKind::Stack(d) = p.kind {
            return self.stack_read(pc, st, d as usize, lo, end, exact.then_some(size));
        }
        if let (PtrKind::Context, Context::Packet { data, data_end, .. }) = (p.kind, self.linked.env().context()) {
            if exact && size == 8 && lo == *data as i64 {
                return Ok(Tracked::new(Value::Ptr(Ptr::at(PtrKind::Input, 0))));
            }
            if exact && size == 8 && lo == *data_end as i64 {
                return Ok(Tracked::new(Value::Ptr(Ptr::at(PtrKind::InputEnd, 0))));
            }
            // Part of a field, or a field at an unknown offset, would show an address as a number.
            let overlaps = |f: u32| (f as i64) < end && lo < f as i64 + 8;
            if overlaps(*data) || overlaps(*data_end) {
                return Err(self.error(pc, K::PointerLeak { reg: r }, st));
            }
        }
        if let (PtrKind::MapValue(m), true) = (p.kind, exact) {
            if let Some(c) = self.frozen_read(m, lo, size) {
                return Ok(Tracked::new(Value::scalar(Scalar::constant(c))));
            }
        }
        Ok(Tracked::new(Value::scalar(Scalar::unknown().zero_extend(size))))
    }

    /// The `size` bytes at offset `off` of map `m`'s value, if that value is frozen (see
    /// [`Checker::frozen`]): what every execution will load there.
    fn frozen_read(&self, m: u32, off: i64, size: u32) -> Option<u64> {
        let bytes = self.frozen.get(m as usize)?.as_ref()?;
        let at = usize::try_from(off).ok()?;
        let b = bytes.get(at..at.checked_add(size as usize)?)?;
        Some(match *b {
            [a] => a as u64,
            [a, b] => u16::from_ne_bytes([a, b]) as u64,
            [a, b, c, d] => u32::from_ne_bytes([a, b, c, d]) as u64,
            [a, b, c, d, e, f, g, h] => u64::from_ne_bytes([a, b, c, d, e, f, g, h]),
            _ => return None,
        })
    }

    /// A store of `value` (from register `src`, or an immediate) in `size` bytes at `r + off`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn store(
        &self,
        pc: usize,
        st: &mut State,
        r: u8,
        off: i64,
        size: u32,
        value: Tracked,
        src: Option<u8>,
    ) -> Result<(), VerifyError> {
        let p = self.base(pc, st, r)?;
        let (lo, end) = self.region(pc, st, &p, off, size as u64, Dir::Write)?;
        let exact = lo + size as i64 == end;
        if let PtrKind::Stack(d) = p.kind {
            return self.stack_write(pc, st, d as usize, lo, end, exact.then_some(size), value);
        }
        let leak_allowed = self.options.allow_pointer_leaks && matches!(value.v, Value::Ptr(_) | Value::Map(_));
        if !(matches!(value.v, Value::Scalar { .. }) || leak_allowed) {
            return Err(self.error(pc, K::PointerLeak { reg: src.unwrap_or(r) }, st));
        }
        Ok(())
    }

    /// An atomic read-modify-write at `dst + off` with operand `src`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn atomic(
        &self,
        pc: usize,
        st: &mut State,
        width: Width,
        op: AtomicOp,
        dst: u8,
        off: i64,
        src: u8,
    ) -> Result<(), VerifyError> {
        let size: u32 = if width == Width::W64 { 8 } else { 4 };
        self.scalar_of(pc, st, src, false)?;
        if op == AtomicOp::CmpXchg {
            self.scalar_of(pc, st, 0, false)?;
        }
        let p = self.base(pc, st, dst)?;
        let (lo, end) = self.region(pc, st, &p, off, size as u64, Dir::Write)?;
        let exact = lo + size as i64 == end;
        // Stack frames, map values and records start 8-byte aligned, so the offset decides; the input and
        // the context lie wherever the host's buffer does.
        let offset = p.folded().alu(crate::isa::AluOp::Add, Width::W64, Scalar::constant(off as u64));
        let low_bits_zero = offset.t.mask & (size as u64 - 1) == 0 && offset.t.value & (size as u64 - 1) == 0;
        if matches!(p.kind, PtrKind::Input | PtrKind::Context) || !low_bits_zero {
            return Err(self.error(pc, K::Misaligned { reg: dst }, st));
        }
        if let PtrKind::Stack(d) = p.kind {
            self.stack_read(pc, st, d as usize, lo, end, None)?;
            let v = Tracked::new(Value::scalar(Scalar::unknown().zero_extend(size)));
            self.stack_write(pc, st, d as usize, lo, end, exact.then_some(size), v)?;
        }
        let old = Value::scalar(Scalar::unknown().zero_extend(size));
        match op {
            AtomicOp::CmpXchg => st.set(0, old),
            AtomicOp::Xchg => st.set(src, old),
            AtomicOp::Add { fetch: true }
            | AtomicOp::Or { fetch: true }
            | AtomicOp::And { fetch: true }
            | AtomicOp::Xor { fetch: true } => st.set(src, old),
            _ => {}
        }
        Ok(())
    }

    /// Reads bytes `lo..end` of the stack frame at `depth`; `exact` is the access size when the offset is
    /// known.
    pub(crate) fn stack_read(
        &self,
        pc: usize,
        st: &State,
        depth: usize,
        lo: i64,
        end: i64,
        exact: Option<u32>,
    ) -> Result<Tracked, VerifyError> {
        let Some(frame) = st.frames.get(depth) else {
            return Err(self.error(pc, K::OutOfBounds { region: RegionKind::Stack, min: lo, end, size: 0 }, st));
        };
        if exact == Some(8) && lo % 8 == 0 {
            if let Some(Slot::Spill(t)) = frame.slot(slot_of(lo)) {
                return Ok(*t);
            }
        }
        if exact == Some(4) && lo % 4 == 0 {
            if let Some(Slot::Halves(h, _)) = frame.slot(slot_of(lo)) {
                if let Some(t) = &h[byte_in_slot(lo) as usize / 4] {
                    return Ok(*t);
                }
            }
        }
        for b in lo..end {
            let i = slot_of(b);
            let bit = 1u8 << byte_in_slot(b);
            match frame.slot(i) {
                None => return Err(self.error(pc, K::UninitStack { offset: b }, st)),
                Some(Slot::Bytes(m) | Slot::Halves(_, m)) if m & bit == 0 => {
                    return Err(self.error(pc, K::UninitStack { offset: b }, st))
                }
                // A helper reading a spilled pointer sees its address: allowed only where pointers may
                // leak (`bpf_trace_vprintk`'s arguments for `%s`, as the kernel allows privileged
                // programs).
                Some(Slot::Spill(t))
                    if !(matches!(t.v, Value::Scalar { .. })
                        || exact.is_none() && self.options.allow_pointer_leaks) =>
                {
                    return Err(self.error(pc, K::PartialPointerSpill { offset: -8 * (i as i64 + 1) }, st));
                }
                _ => {}
            }
        }
        let size = exact.unwrap_or(8);
        Ok(Tracked::new(Value::scalar(Scalar::unknown().zero_extend(size))))
    }

    /// Writes `value` to bytes `lo..end` of the stack frame at `depth`; `exact` as for
    /// [`stack_read`](Checker::stack_read). A write at an unknown offset may touch every byte of the range.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn stack_write(
        &self,
        pc: usize,
        st: &mut State,
        depth: usize,
        lo: i64,
        end: i64,
        exact: Option<u32>,
        value: Tracked,
    ) -> Result<(), VerifyError> {
        let pointer = !matches!(value.v, Value::Scalar { .. });
        if depth >= st.frames.len() {
            return Err(self.error(pc, K::OutOfBounds { region: RegionKind::Stack, min: lo, end, size: 0 }, st));
        }
        if exact == Some(8) && lo % 8 == 0 {
            st.frames[depth].set_slot(slot_of(lo), Slot::Spill(value));
            return Ok(());
        }
        if exact == Some(4) && lo % 4 == 0 && !pointer {
            // A 32-bit spill of a number keeps the number (the register's low half, zero-extended).
            let i = slot_of(lo);
            let half = byte_in_slot(lo) as usize / 4;
            let bits = 0x0fu8 << (half * 4);
            let kept = match st.frames[depth].slot(i) {
                None => Some(([None, None], 0)),
                Some(Slot::Bytes(m)) => Some(([None, None], *m)),
                Some(Slot::Halves(h, m)) => Some((**h, *m)),
                Some(Slot::Spill(t)) if matches!(t.v, Value::Scalar { .. }) => Some(([None, None], 0xff)),
                Some(Slot::Spill(_)) => None,
            };
            if let Some((mut h, m)) = kept {
                let full = value.v.as_scalar().copied().unwrap_or_else(Scalar::unknown);
                let mut kept = Tracked { v: Value::scalar(full.zero_extend(4)), ..value };
                if full.umax > u32::MAX as u64 {
                    // Only the low half is kept: the 64-bit relations of the register do not hold for it,
                    // its 32-bit ones do (a family member's low 32 bits are those of `X + d`).
                    for d in &mut kept.deltas {
                        d.views &= 0b1100;
                        if d.views == 0 {
                            *d = super::value::Delta::NONE;
                        }
                    }
                    kept.link = kept.link.filter(|l| l.scale == 1).map(|l| super::value::Link {
                        d: l.d as u32 as i64,
                        w32: true,
                        ..l
                    });
                }
                h[half] = Some(kept);
                st.frames[depth].set_slot(i, Slot::Halves(alloc::boxed::Box::new(h), m | bits));
                return Ok(());
            }
        }
        if pointer {
            return Err(self.error(pc, K::PartialPointerSpill { offset: lo }, st));
        }
        let mut b = lo;
        while b < end {
            let i = slot_of(b);
            let slot_end = -8 * i as i64;
            let mut mask = 0u8;
            while b < end && b < slot_end {
                mask |= 1 << byte_in_slot(b);
                b += 1;
            }
            let frame = &mut st.frames[depth];
            let next = match frame.slot(i) {
                None => Slot::Bytes(mask),
                Some(Slot::Bytes(m) | Slot::Halves(_, m)) => Slot::Bytes(m | mask),
                Some(Slot::Spill(t)) if matches!(t.v, Value::Scalar { .. }) => Slot::Bytes(0xff),
                Some(Slot::Spill(_)) if exact.is_none() => Slot::Spill(Tracked::new(Value::Mixed)),
                Some(Slot::Spill(_)) => {
                    return Err(self.error(pc, K::PartialPointerSpill { offset: -8 * (i as i64 + 1) }, st));
                }
            };
            st.frames[depth].set_slot(i, next);
        }
        Ok(())
    }
}

/// The 8-byte slot holding stack byte `b` (negative offset from the frame's top).
fn slot_of(b: i64) -> usize {
    ((-b - 1) / 8) as usize
}

/// Position of stack byte `b` inside its slot (0 = lowest address).
fn byte_in_slot(b: i64) -> u32 {
    (b + 8 * (slot_of(b) as i64 + 1)) as u32
}
