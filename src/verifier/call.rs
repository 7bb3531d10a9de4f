//! Helper calls: each argument checked against the helper's signature, the result typed from it, and
//! ring-buffer records tracked from reservation to release.

use alloc::format;
use alloc::string::String;

use super::access::Dir;
use super::analysis::Checker;
use super::error::{RegionKind, VerifyError, VerifyErrorKind as K};
use super::scalar::Scalar;
use super::state::{Lock, State};
use super::step::fresh_id;
use super::value::{Ptr, PtrKind, Tracked, Value};
use crate::helpers::{ArgKind, RetKind};
use crate::link::Resolved;
use crate::maps::MapType;

/// Largest size a helper's memory argument may be proven to have.
const MAX_MEM_ARG: u64 = 1 << 29;

impl Checker<'_> {
    /// A call of helper `id` at `pc`.
    pub(crate) fn helper_call(&self, pc: usize, st: &mut State, id: u32) -> Result<(), VerifyError> {
        let Some(helper) = self.linked.env().helper(id) else {
            return Err(self.error(pc, K::Unsupported { what: "a call of an unknown helper" }, st));
        };
        let sig = *helper.sig();
        let bad = |st: &State, arg: usize, reason: String| {
            self.error(pc, K::HelperArgument { helper: id, arg: arg as u8 + 1, reason }, st)
        };
        let mut map: Option<u32> = None;
        let mut release: Option<u32> = None;
        let mut lock: Option<Option<Lock>> = None;
        let lock_err = |st: &State, reason| self.error(pc, K::SpinLock { reason }, st);
        for (i, kind) in sig.args.iter().enumerate() {
            let r = i as u8 + 1;
            let v = st.reg(r).v;
            if !matches!(*kind, ArgKind::Unused | ArgKind::OptionalScalar) && v == Value::Uninit {
                return Err(self.error(pc, K::UninitRegister { reg: r }, st));
            }
            match *kind {
                ArgKind::Unused => {}
                ArgKind::OptionalScalar => match v {
                    Value::Uninit | Value::Scalar { .. } => {}
                    Value::Ptr(_) | Value::Map(_) if self.options.allow_pointer_leaks => {}
                    _ => return Err(self.error(pc, K::PointerLeak { reg: r }, st)),
                },
                ArgKind::Address => {
                    if v == Value::Released {
                        return Err(bad(st, i, "a released record".into()));
                    }
                }
                ArgKind::Scalar | ArgKind::MemSize => match v {
                    Value::Scalar { .. } => {}
                    Value::Ptr(_) | Value::Map(_) if self.options.allow_pointer_leaks => {}
                    _ => return Err(self.error(pc, K::PointerLeak { reg: r }, st)),
                },
                ArgKind::MapPtr | ArgKind::MapMut | ArgKind::MapOf(_) => {
                    let m = match v {
                        Value::Map(m) => m,
                        // A map a lookup in a map of maps gave, checked for null.
                        Value::Ptr(Ptr { kind: PtrKind::InnerMap(m), nullable: false, off: 0, var, .. })
                            if var.as_const() == Some(0) =>
                        {
                            m
                        }
                        Value::Ptr(Ptr { kind: PtrKind::InnerMap(_), nullable: true, .. }) => {
                            return Err(self.error(pc, K::MaybeNull { reg: r }, st))
                        }
                        _ => return Err(bad(st, i, "expects a map".into())),
                    };
                    let def = self.maps.get(m as usize).copied();
                    let ty = def.map(|d| d.map_type);
                    if let ArgKind::MapOf(want) = *kind {
                        if ty != Some(want) {
                            return Err(bad(st, i, format!("expects a map of kind {want:?}, not {ty:?}")));
                        }
                    } else if matches!(ty, Some(MapType::RingBuf | MapType::ProgArray | MapType::PerfEventArray)) {
                        return Err(bad(st, i, format!("a map of kind {ty:?} has no keys or values here")));
                    } else if *kind == ArgKind::MapMut && matches!(ty, Some(MapType::ArrayOfMaps | MapType::HashOfMaps))
                    {
                        return Err(bad(st, i, "programs cannot change a map of maps".into()));
                    }
                    if *kind == ArgKind::MapMut && def.is_some_and(|d| d.read_only_for_programs()) {
                        return Err(self.error(pc, K::ReadOnly { region: RegionKind::ReadOnlyData }, st));
                    }
                    map = Some(m);
                }
                ArgKind::MapKey | ArgKind::MapValue | ArgKind::MapValueOut => {
                    let Some(def) = map.and_then(|m| self.maps.get(m as usize)) else {
                        return Err(bad(st, i, "no map argument before it".into()));
                    };
                    let size = if *kind == ArgKind::MapKey { def.key_size } else { def.value_size };
                    // A Bloom filter's peek reads the value it is given.
                    let out = *kind == ArgKind::MapValueOut && def.map_type != MapType::BloomFilter;
                    let dir = if out { Dir::Write } else { Dir::Read };
                    self.mem_arg(pc, st, r, (size as u64, size as u64), dir, id)?;
                }
                ArgKind::ReadMem | ArgKind::WriteMem => {
                    let size = match st.reg(r + 1).v {
                        Value::Scalar { s, .. } => s,
                        Value::Uninit => return Err(self.error(pc, K::UninitRegister { reg: r + 1 }, st)),
                        _ => return Err(bad(st, i + 1, "the size must be a number".into())),
                    };
                    if size.smin < 0 || size.umax > MAX_MEM_ARG {
                        return Err(bad(st, i + 1, format!("the size {size} is not proven bounded")));
                    }
                    if size.umax > 0 {
                        let dir = if *kind == ArgKind::WriteMem { Dir::Write } else { Dir::Read };
                        self.mem_arg(pc, st, r, (size.umin, size.umax), dir, id)?;
                    }
                }
                ArgKind::Context => match v {
                    Value::Ptr(p)
                        if matches!(p.kind, PtrKind::Input | PtrKind::Context)
                            && p.off == 0
                            && p.fixed()
                            && !p.nullable => {}
                    _ => return Err(bad(st, i, "expects the context pointer".into())),
                },
                ArgKind::SpinLock | ArgKind::SpinUnlock => {
                    let Value::Ptr(p @ Ptr { kind: PtrKind::MapValue(m), nullable: false, .. }) = v else {
                        return Err(bad(st, i, "expects a lock word in a map value".into()));
                    };
                    let def = self.maps.get(m as usize).copied();
                    let fits = def.is_some_and(|d| p.off >= 0 && p.off + 4 <= d.value_size as i64);
                    if !p.fixed() || p.off % 4 != 0 || !fits {
                        return Err(bad(st, i, "the lock word must be 4 aligned bytes at a known offset".into()));
                    }
                    if def.is_some_and(|d| d.read_only_for_programs()) {
                        return Err(self.error(pc, K::ReadOnly { region: RegionKind::ReadOnlyData }, st));
                    }
                    let this = Lock { map: m, id: p.id, off: p.off, at: pc as u32 };
                    if *kind == ArgKind::SpinLock {
                        if st.lock.is_some() {
                            return Err(lock_err(st, "a lock is held already"));
                        }
                        lock = Some(Some(this));
                    } else {
                        match st.lock {
                            Some(l) if l.map == u32::MAX => {
                                return Err(lock_err(st, "the lock is held on some paths here and not on others"))
                            }
                            Some(l) if (l.map, l.id, l.off) == (this.map, this.id, this.off) => lock = Some(None),
                            Some(_) => return Err(lock_err(st, "this is not the lock held")),
                            None => return Err(lock_err(st, "no lock is held")),
                        }
                    }
                }
                ArgKind::Record => match v {
                    Value::Ptr(Ptr { kind: PtrKind::Record { ref_id, .. }, off: 0, nullable: false, var, .. })
                        if var.as_const() == Some(0) && st.refs.iter().any(|x| x.0 == ref_id) =>
                    {
                        release = Some(ref_id);
                    }
                    _ => return Err(self.error(pc, K::BadRelease { reg: r }, st)),
                },
            }
        }
        if self.lp.resolved_at(pc) == Resolved::TailCall {
            if let Some(&(_, at)) = st.refs.first() {
                return Err(self.error(pc, K::UnreleasedRecord { reserved_at: at as usize }, st));
            }
        }
        if let Some(l) = lock {
            st.lock = l;
        }
        if let Some(ref_id) = release {
            st.refs.retain(|x| x.0 != ref_id);
            st.for_each_value(|v| {
                if matches!(v, Value::Ptr(Ptr { kind: PtrKind::Record { ref_id: r, .. }, .. }) if *r == ref_id) {
                    *v = Value::Released;
                }
            });
        }
        let r0 = match sig.ret {
            RetKind::Scalar => Value::unknown(),
            RetKind::MapValueOrNull => {
                let Some(m) = map else {
                    return Err(self.error(pc, K::Unsupported { what: "a map result without a map argument" }, st));
                };
                let id = fresh_id(pc);
                forget_unchecked(st, id);
                // A map of maps gives one of its inner maps, or null.
                let kind = match self.inner.get(m as usize).copied().flatten() {
                    Some(inner) => PtrKind::InnerMap(inner),
                    None => PtrKind::MapValue(m),
                };
                Value::Ptr(Ptr { nullable: true, id, ..Ptr::at(kind, 0) })
            }
            RetKind::RecordOrNull { size_arg } => {
                let r = size_arg.clamp(1, 5);
                let size = st.reg(r).v.as_scalar().and_then(Scalar::as_const);
                let Some(size) = size.filter(|&s| s > 0 && s <= MAX_MEM_ARG) else {
                    return Err(bad(st, r as usize - 1, "the record size must be a constant".into()));
                };
                let ref_id = fresh_id(pc);
                if let Some(&(_, at)) = st.refs.iter().find(|x| x.0 == ref_id) {
                    return Err(self.error(pc, K::UnreleasedRecord { reserved_at: at as usize }, st));
                }
                forget_unchecked(st, ref_id);
                let pos = st.refs.partition_point(|x| x.0 < ref_id);
                st.refs.insert(pos, (ref_id, pc as u32));
                let kind = PtrKind::Record { size: size as u32, ref_id };
                Value::Ptr(Ptr { nullable: true, id: ref_id, ..Ptr::at(kind, 0) })
            }
        };
        st.set(0, r0);
        for r in 1..=5 {
            st.top_mut().regs[r] = Tracked::UNINIT;
        }
        Ok(())
    }

    /// Register `r` as a pointer to `len` bytes a helper reads or writes.
    /// `len` is the least and the most bytes it may be: all of the most must lie in the region, and
    /// only the least are taken as written.
    fn mem_arg(
        &self,
        pc: usize,
        st: &mut State,
        r: u8,
        len: (u64, u64),
        dir: Dir,
        helper: u32,
    ) -> Result<(), VerifyError> {
        let (least, len) = len;
        let p = match st.reg(r).v {
            Value::Ptr(p) if p.nullable => return Err(self.error(pc, K::MaybeNull { reg: r }, st)),
            Value::Ptr(p) if p.kind != PtrKind::InputEnd => p,
            _ => {
                let reason = "expects a pointer to memory".into();
                return Err(self.error(pc, K::HelperArgument { helper, arg: r, reason }, st));
            }
        };
        let (lo, end) = self.region(pc, st, &p, 0, len, dir)?;
        if let PtrKind::Stack(d) = p.kind {
            match dir {
                Dir::Read => {
                    self.stack_read(pc, st, d as usize, lo, end, None)?;
                }
                Dir::Write => {
                    let v = Tracked::new(Value::unknown());
                    // The helper may write fewer bytes than the most (and none when it fails partway it
                    // still fills what its size says, as the kernel's helpers do): the least are written.
                    let written = lo.saturating_add(least as i64).min(end);
                    if written > lo {
                        self.stack_write(pc, st, d as usize, lo, written, None, v)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Values still unchecked from an earlier call at the same instruction can no longer be told apart from
/// the new result: they become unusable.
fn forget_unchecked(st: &mut State, id: u32) {
    st.for_each_value(|v| {
        if let Value::Ptr(p) = v {
            if p.nullable && p.id == id {
                *v = Value::Mixed;
            }
        }
    });
}
