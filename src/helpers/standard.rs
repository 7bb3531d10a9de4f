//! The standard helpers, by their kernel ids: maps, time, randomness, printing, process identity,
//! tail calls and the ring buffer. [`all`] lists them (what `Env::add_standard_helpers` adds).

use alloc::borrow::Cow;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};

use alloc::sync::Arc;

use super::{ArgKind as A, CallContext, Helper, HelperError, HelperSig, MapOp, RetKind};
use crate::maps::{
    BloomFilterMap, HashMap, Map, MapError, MapOfMaps, MapType, PerfEventArrayMap, QueueMap, RingBufMap, MAX_KEY_SIZE,
};
use crate::memory::access::{copy_out, Access};
use crate::memory::{Grants, Region};

/// `bpf_map_lookup_elem`
pub const MAP_LOOKUP_ELEM: u32 = 1;
/// `bpf_map_update_elem`
pub const MAP_UPDATE_ELEM: u32 = 2;
/// `bpf_map_delete_elem`
pub const MAP_DELETE_ELEM: u32 = 3;
/// `bpf_ktime_get_ns`
pub const KTIME_GET_NS: u32 = 5;
/// `bpf_trace_printk`
pub const TRACE_PRINTK: u32 = 6;
/// `bpf_get_prandom_u32`
pub const GET_PRANDOM_U32: u32 = 7;
/// `bpf_get_smp_processor_id`
pub const GET_SMP_PROCESSOR_ID: u32 = 8;
/// `bpf_tail_call`
pub const TAIL_CALL: u32 = 12;
/// `bpf_get_current_pid_tgid`
pub const GET_CURRENT_PID_TGID: u32 = 14;
/// `bpf_get_current_uid_gid`
pub const GET_CURRENT_UID_GID: u32 = 15;
/// `bpf_get_current_comm`
pub const GET_CURRENT_COMM: u32 = 16;
/// `bpf_perf_event_output`
pub const PERF_EVENT_OUTPUT: u32 = 25;
/// `bpf_spin_lock`
pub const SPIN_LOCK: u32 = 93;
/// `bpf_spin_unlock`
pub const SPIN_UNLOCK: u32 = 94;
/// `bpf_map_push_elem`
pub const MAP_PUSH_ELEM: u32 = 87;
/// `bpf_map_pop_elem`
pub const MAP_POP_ELEM: u32 = 88;
/// `bpf_map_peek_elem`
pub const MAP_PEEK_ELEM: u32 = 89;
/// `bpf_loop`: calls a function of the program up to a given number of times.
pub const LOOP: u32 = 181;
/// Most iterations `bpf_loop` makes (the kernel's limit); asking for more fails with `-E2BIG`.
pub const MAX_LOOPS: u64 = 1 << 23;
/// `bpf_for_each_map_elem`: calls a function of the program for each element of a map.
pub const FOR_EACH_MAP_ELEM: u32 = 164;
/// `bpf_snprintf`
pub const SNPRINTF: u32 = 165;
/// `bpf_trace_vprintk`
pub const TRACE_VPRINTK: u32 = 177;
/// `bpf_strncmp`
pub const STRNCMP: u32 = 182;
/// `bpf_map_lookup_percpu_elem`
pub const MAP_LOOKUP_PERCPU_ELEM: u32 = 195;
/// `bpf_probe_read` (the kernel's older name of `bpf_probe_read_kernel`)
pub const PROBE_READ: u32 = 4;
/// `bpf_probe_read_str`
pub const PROBE_READ_STR: u32 = 45;
/// `bpf_probe_read_user`
pub const PROBE_READ_USER: u32 = 112;
/// `bpf_probe_read_kernel`
pub const PROBE_READ_KERNEL: u32 = 113;
/// `bpf_probe_read_user_str`
pub const PROBE_READ_USER_STR: u32 = 114;
/// `bpf_probe_read_kernel_str`
pub const PROBE_READ_KERNEL_STR: u32 = 115;
/// `bpf_jiffies64`: milliseconds of the monotonic clock (this runtime's jiffies tick at 1000 Hz).
pub const JIFFIES64: u32 = 118;
/// `bpf_ktime_get_coarse_ns`: the monotonic clock (here as fine as `bpf_ktime_get_ns`).
pub const KTIME_GET_COARSE_NS: u32 = 160;
/// `bpf_ktime_get_boot_ns`
pub const KTIME_GET_BOOT_NS: u32 = 125;
/// `bpf_ringbuf_output`
pub const RINGBUF_OUTPUT: u32 = 130;
/// `bpf_ringbuf_reserve`
pub const RINGBUF_RESERVE: u32 = 131;
/// `bpf_ringbuf_submit`
pub const RINGBUF_SUBMIT: u32 = 132;
/// `bpf_ringbuf_discard`
pub const RINGBUF_DISCARD: u32 = 133;
/// `bpf_ringbuf_query`
pub const RINGBUF_QUERY: u32 = 134;

const EINVAL: u64 = -22i64 as u64;
/// `-EFAULT`, what the `bpf_probe_read_*` helpers return for memory the execution may not read.
const EFAULT: u64 = -14i64 as u64;
const EAGAIN: u64 = -11i64 as u64;

fn sig(args: &[A], ret: RetKind) -> HelperSig {
    let mut all = [A::Unused; 5];
    all[..args.len()].copy_from_slice(args);
    HelperSig { args: all, ret }
}

fn invalid(arg: u8, reason: &'static str) -> HelperError {
    HelperError::InvalidArgument { arg, reason: Cow::Borrowed(reason) }
}

/// Every standard helper.
pub fn all() -> Vec<Helper> {
    alloc::vec![
        {
            let mut h = Helper::new(
                MAP_LOOKUP_ELEM,
                "map_lookup_elem",
                sig(&[A::MapPtr, A::MapKey], RetKind::MapValueOrNull),
                |ctx, a| {
                    let map = ctx.map(a[0], 1)?;
                    with_key(ctx, map.as_ref(), a[1], |key| {
                        // A map of maps gives the inner map's handle.
                        if let Some(outer) = map.downcast_ref::<MapOfMaps>() {
                            return Ok(outer.lookup_handle(key, ctx.maps()));
                        }
                        Ok(map.lookup(key, ctx.cpu()).map_or(0, |p| p.expose_provenance() as u64))
                    })
                },
            );
            h.map_op = Some(MapOp::Lookup);
            h
        },
        {
            let mut h = Helper::new(
                MAP_UPDATE_ELEM,
                "map_update_elem",
                sig(&[A::MapMut, A::MapKey, A::MapValue, A::Scalar], RetKind::Scalar),
                |ctx, a| {
                    let map = writable_map(ctx, a[0])?;
                    with_key(ctx, map.as_ref(), a[1], |key| {
                        with_value(ctx, a[2], map.def().value_size as usize, |ctx, value| {
                            Ok(match map.update(key, value, a[3], ctx.cpu()) {
                                Ok(()) => 0,
                                Err(e) => e.errno() as u64,
                            })
                        })
                    })
                },
            );
            h.map_op = Some(MapOp::Update);
            h
        },
        {
            let mut h = Helper::new(
                MAP_DELETE_ELEM,
                "map_delete_elem",
                sig(&[A::MapMut, A::MapKey], RetKind::Scalar),
                |ctx, a| {
                    let map = writable_map(ctx, a[0])?;
                    with_key(ctx, map.as_ref(), a[1], |key| {
                        Ok(match map.delete(key) {
                            Ok(()) => 0,
                            Err(e) => e.errno() as u64,
                        })
                    })
                },
            );
            h.map_op = Some(MapOp::Delete);
            h
        },
        Helper::new(KTIME_GET_NS, "ktime_get_ns", HelperSig::scalars(0), |_, _| Ok(crate::host::monotonic_ns())),
        Helper::new(
            TRACE_PRINTK,
            "trace_printk",
            sig(&[A::ReadMem, A::MemSize, A::OptionalScalar, A::OptionalScalar, A::OptionalScalar], RetKind::Scalar),
            trace_printk
        ),
        Helper::new(GET_PRANDOM_U32, "get_prandom_u32", HelperSig::scalars(0), |_, _| Ok(prandom() as u64)),
        Helper::new(GET_SMP_PROCESSOR_ID, "get_smp_processor_id", HelperSig::scalars(0), |ctx, _| Ok(ctx.cpu() as u64)),
        {
            let mut h = Helper::new(
                TAIL_CALL,
                "tail_call",
                sig(&[A::Context, A::MapOf(MapType::ProgArray), A::Scalar], RetKind::Scalar),
                |_, _| Err(HelperError::Failed(Cow::Borrowed("tail_call is carried out by the engine"))),
            );
            h.tail_call = true;
            h
        },
        {
            // The engines run the loop, calling the callback as a bpf-to-bpf function in a frame of its
            // own; this function only answers the calls they cannot make (see `bpf_loop`).
            let mut h = Helper::new(
                LOOP,
                "loop",
                sig(&[A::Scalar, A::Scalar, A::Address, A::Scalar], RetKind::Scalar),
                |_, _| {
                    Err(invalid(
                        2,
                        "not a callback function of the program (a `lddw rX, func` of it, in a direct call)",
                    ))
                },
            );
            h.bpf_loop = true;
            h
        },
        {
            // As `bpf_loop`: the engines iterate (see `for_each_step`) and call the callback.
            let mut h = Helper::new(
                FOR_EACH_MAP_ELEM,
                "for_each_map_elem",
                sig(&[A::MapPtr, A::Scalar, A::Address, A::Scalar], RetKind::Scalar),
                |ctx, a| {
                    let map = ctx.map(a[0], 1)?;
                    if !iterable(map.def().map_type) {
                        return Err(invalid(1, "only array and hash maps can be iterated"));
                    }
                    Err(invalid(
                        2,
                        "not a callback function of the program (a `lddw rX, func` of it, in a direct call)",
                    ))
                },
            );
            h.for_each = true;
            h
        },
        Helper::new(SPIN_LOCK, "spin_lock", sig(&[A::SpinLock], RetKind::Scalar), spin_lock),
        Helper::new(SPIN_UNLOCK, "spin_unlock", sig(&[A::SpinUnlock], RetKind::Scalar), spin_unlock),
        // As the kernel's: the process id (its tgid) above, the thread's id (its pid) below.
        Helper::new(GET_CURRENT_PID_TGID, "get_current_pid_tgid", HelperSig::scalars(0), |_, _| {
            Ok((crate::host::pid() as u64) << 32 | crate::host::tid() as u64)
        }),
        Helper::new(GET_CURRENT_UID_GID, "get_current_uid_gid", HelperSig::scalars(0), |_, _| {
            let (uid, gid) = crate::host::uid_gid();
            Ok((gid as u64) << 32 | uid as u64)
        }),
        Helper::new(
            GET_CURRENT_COMM,
            "get_current_comm",
            sig(&[A::WriteMem, A::MemSize], RetKind::Scalar),
            |ctx, a| {
                let size = usize::try_from(a[1]).map_err(|_| invalid(2, "size too large"))?;
                if size == 0 {
                    return Ok(EINVAL);
                }
                if size > 4096 {
                    return Err(invalid(2, "size above 4096"));
                }
                let mut buf = alloc::vec![0u8; size];
                let comm = crate::host::comm();
                let n = comm.len().min(size - 1);
                buf[..n].copy_from_slice(&comm.as_bytes()[..n]);
                ctx.write(a[0], &buf)?;
                Ok(0)
            }
        ),
        Helper::new(KTIME_GET_BOOT_NS, "ktime_get_boot_ns", HelperSig::scalars(0), |_, _| Ok(
            crate::host::monotonic_ns()
        )),
        Helper::new(
            MAP_PUSH_ELEM,
            "map_push_elem",
            sig(&[A::MapMut, A::MapValue, A::Scalar], RetKind::Scalar),
            |ctx, a| {
                let map = ctx.map(a[0], 1)?;
                with_value(ctx, a[1], map.def().value_size as usize, |ctx, value| {
                    let pushed = if let Some(bloom) = map.downcast_ref::<BloomFilterMap>() {
                        bloom.add(value, a[2])
                    } else {
                        queue_of(ctx, a[0])?.push(value, a[2])
                    };
                    Ok(pushed.map_or_else(|e| e.errno() as u64, |()| 0))
                })
            }
        ),
        Helper::new(MAP_POP_ELEM, "map_pop_elem", sig(&[A::MapMut, A::MapValueOut], RetKind::Scalar), |ctx, a| {
            take(ctx, a, true)
        }),
        Helper::new(MAP_PEEK_ELEM, "map_peek_elem", sig(&[A::MapPtr, A::MapValueOut], RetKind::Scalar), |ctx, a| {
            take(ctx, a, false)
        }),
        Helper::new(
            MAP_LOOKUP_PERCPU_ELEM,
            "map_lookup_percpu_elem",
            sig(&[A::MapPtr, A::MapKey, A::Scalar], RetKind::MapValueOrNull),
            |ctx, a| {
                // The value of another CPU's slot; null past the map's slots (as the kernel's past
                // its CPUs), and for maps that are not per-CPU.
                let map = ctx.map(a[0], 1)?;
                if map.cpus() <= 1 || a[2] >= map.cpus() as u64 {
                    return Ok(0);
                }
                with_key(ctx, map.as_ref(), a[1], |key| {
                    Ok(map.lookup(key, a[2] as usize).map_or(0, |p| p.expose_provenance() as u64))
                })
            }
        ),
        Helper::new(
            TRACE_VPRINTK,
            "trace_vprintk",
            sig(&[A::ReadMem, A::MemSize, A::ReadMem, A::MemSize], RetKind::Scalar),
            trace_vprintk
        ),
        Helper::new(
            SNPRINTF,
            "snprintf",
            sig(&[A::WriteMem, A::MemSize, A::Address, A::ReadMem, A::MemSize], RetKind::Scalar),
            snprintf
        ),
        Helper::new(STRNCMP, "strncmp", sig(&[A::ReadMem, A::MemSize, A::Address], RetKind::Scalar), strncmp),
        Helper::new(PROBE_READ, "probe_read", probe_sig(), probe_read),
        Helper::new(PROBE_READ_USER, "probe_read_user", probe_sig(), probe_read),
        Helper::new(PROBE_READ_KERNEL, "probe_read_kernel", probe_sig(), probe_read),
        Helper::new(PROBE_READ_STR, "probe_read_str", probe_sig(), probe_read_str),
        Helper::new(PROBE_READ_USER_STR, "probe_read_user_str", probe_sig(), probe_read_str),
        Helper::new(PROBE_READ_KERNEL_STR, "probe_read_kernel_str", probe_sig(), probe_read_str),
        Helper::new(JIFFIES64, "jiffies64", HelperSig::scalars(0), |_, _| Ok(crate::host::monotonic_ns() / 1_000_000)),
        Helper::new(KTIME_GET_COARSE_NS, "ktime_get_coarse_ns", HelperSig::scalars(0), |_, _| Ok(
            crate::host::monotonic_ns()
        )),
        Helper::new(
            PERF_EVENT_OUTPUT,
            "perf_event_output",
            sig(&[A::Context, A::MapOf(MapType::PerfEventArray), A::Scalar, A::ReadMem, A::MemSize], RetKind::Scalar),
            perf_event_output
        ),
        Helper::new(
            RINGBUF_OUTPUT,
            "ringbuf_output",
            sig(&[A::MapOf(MapType::RingBuf), A::ReadMem, A::MemSize, A::Scalar], RetKind::Scalar),
            ringbuf_output
        ),
        Helper::new(
            RINGBUF_RESERVE,
            "ringbuf_reserve",
            sig(&[A::MapOf(MapType::RingBuf), A::Scalar, A::Scalar], RetKind::RecordOrNull { size_arg: 2 }),
            ringbuf_reserve
        ),
        Helper::new(RINGBUF_SUBMIT, "ringbuf_submit", sig(&[A::Record, A::Scalar], RetKind::Scalar), |ctx, a| {
            commit(ctx, a[0], false)
        }),
        Helper::new(RINGBUF_DISCARD, "ringbuf_discard", sig(&[A::Record, A::Scalar], RetKind::Scalar), |ctx, a| {
            commit(ctx, a[0], true)
        }),
        Helper::new(
            RINGBUF_QUERY,
            "ringbuf_query",
            sig(&[A::MapOf(MapType::RingBuf), A::Scalar], RetKind::Scalar),
            |ctx, a| { Ok(ringbuf(ctx, a[0])?.query(a[1])) }
        ),
    ]
}

/// Reads a value of `size` bytes of program memory at `addr` and passes it to `f`: values up to 256
/// bytes (most) through a buffer on the stack, larger ones through a new vector.
fn with_value<'a>(
    ctx: &CallContext<'a>,
    addr: u64,
    size: usize,
    f: impl FnOnce(&CallContext<'a>, &[u8]) -> Result<u64, HelperError>,
) -> Result<u64, HelperError> {
    // Two sizes of buffer: clearing costs as much as the rest of a small update.
    let mut small = [0u8; 32];
    if let Some(buf) = small.get_mut(..size) {
        ctx.read(addr, buf)?;
        return f(ctx, buf);
    }
    let mut medium = [0u8; 256];
    match medium.get_mut(..size) {
        Some(buf) => {
            ctx.read(addr, buf)?;
            f(ctx, buf)
        }
        None => f(ctx, &ctx.read_vec(addr, size)?),
    }
}

/// The queue or stack a handle refers to.
fn queue_of<'a>(ctx: &CallContext<'a>, handle: u64) -> Result<&'a QueueMap, HelperError> {
    ctx.map(handle, 1)?.downcast_ref::<QueueMap>().ok_or(invalid(1, "not a queue or stack"))
}

/// `bpf_map_pop_elem` (`remove`) and `bpf_map_peek_elem`: the next value into the program's memory,
/// 0; or `-ENOENT` when the map is empty (the destination is left as it was). On a Bloom filter,
/// peek reads the value and answers 0 (may be there) or `-ENOENT`; pop is `-EOPNOTSUPP`.
fn take(ctx: &mut CallContext<'_>, a: [u64; 5], remove: bool) -> Result<u64, HelperError> {
    // A Bloom filter's peek reads the value and says whether it may be there; it has no pop.
    if let Some(bloom) = ctx.map(a[0], 1)?.downcast_ref::<BloomFilterMap>() {
        if remove {
            return Ok(MapError::Unsupported.errno() as u64);
        }
        let value = ctx.read_vec(a[1], bloom.def().value_size as usize)?;
        return Ok(match bloom.may_contain(&value) {
            Ok(true) => 0,
            Ok(false) => MapError::NotFound.errno() as u64,
            Err(e) => e.errno() as u64,
        });
    }
    let queue = queue_of(ctx, a[0])?;
    let mut value = alloc::vec![0u8; queue.def().value_size as usize];
    let got = if remove { queue.pop(&mut value) } else { queue.peek(&mut value) };
    match got {
        Ok(()) => {
            ctx.write(a[1], &value)?;
            Ok(0)
        }
        Err(e) => Ok(e.errno() as u64),
    }
}

/// `bpf_strncmp(s1, s1_sz, s2)`: compares at most `s1_sz` bytes of `s1` with the NUL-terminated
/// `s2`, stopping at a NUL, and returns -1, 0 or 1, as the kernel's. The kernel's verifier asks `s2`
/// to be a constant string; here it may be any string the execution may read, and one that is not
/// NUL-terminated inside such memory (read as far as `s1_sz` needs) stops the program.
fn strncmp(ctx: &mut CallContext<'_>, a: [u64; 5]) -> Result<u64, HelperError> {
    let (s1, n, s2) = (a[0], a[1], a[2]);
    let mut c1 = [0u8; 1];
    let mut c2 = [0u8; 1];
    for i in 0..n {
        ctx.read(s1 + i, &mut c1)?;
        if !probe_readable(ctx, s2.wrapping_add(i), 1) {
            return Err(invalid(3, "s2 is not a NUL-terminated string the program may read"));
        }
        ctx.read(s2 + i, &mut c2)?;
        if c1[0] != c2[0] {
            return Ok(if c1[0] < c2[0] { -1i64 as u64 } else { 1 });
        }
        if c1[0] == 0 {
            break;
        }
    }
    Ok(0)
}

/// `(void *dst, u32 size, const void *src)`: `dst` is written, `src` any address.
fn probe_sig() -> HelperSig {
    sig(&[A::WriteMem, A::MemSize, A::Address], RetKind::Scalar)
}

/// Whether the execution may read `len` bytes at `addr` (input, stack, map values, granted
/// records), whatever the mode: `bpf_probe_read_*` read any address they are given, and only memory
/// the host gave the execution is theirs to read.
fn probe_readable(ctx: &CallContext<'_>, addr: u64, len: u64) -> bool {
    ctx.memory.classify(addr, len, false, ctx.grants).is_some()
}

/// Writes `len` zero bytes at `dst`.
fn zero_fill(ctx: &CallContext<'_>, dst: u64, len: u64) -> Result<(), HelperError> {
    let zeros = [0u8; 256];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(256);
        ctx.write(dst + done, &zeros[..n as usize])?;
        done += n;
    }
    Ok(())
}

/// `bpf_probe_read_{user,kernel}`: copies `size` bytes at `src` into `dst` and returns 0; where the
/// execution may not read them, zeroes `dst` and returns `-EFAULT`, as the kernel's do on a fault.
fn probe_read(ctx: &mut CallContext<'_>, a: [u64; 5]) -> Result<u64, HelperError> {
    let (dst, size, src) = (a[0], a[1], a[2]);
    ctx.check(dst, size, true)?;
    if size == 0 {
        return Ok(0);
    }
    if !probe_readable(ctx, src, size) {
        zero_fill(ctx, dst, size)?;
        return Ok(EFAULT);
    }
    let mut chunk = [0u8; 256];
    let mut done = 0;
    while done < size {
        let n = (size - done).min(256);
        ctx.read(src + done, &mut chunk[..n as usize])?;
        ctx.write(dst + done, &chunk[..n as usize])?;
        done += n;
    }
    Ok(0)
}

/// `bpf_probe_read_{user,kernel}_str`: copies the NUL-terminated string at `src` into `dst`, at most
/// `size - 1` bytes and then a NUL, and returns the bytes written with the NUL; where the execution
/// may not read a byte before the string ends, zeroes `dst` and returns `-EFAULT`.
fn probe_read_str(ctx: &mut CallContext<'_>, a: [u64; 5]) -> Result<u64, HelperError> {
    let (dst, size, src) = (a[0], a[1], a[2]);
    ctx.check(dst, size, true)?;
    if size == 0 {
        return Ok(0);
    }
    let mut chunk = [0u8; 256];
    let mut written = 0u64;
    loop {
        // Whole chunks where the string's next bytes may all be read; byte by byte near the end of
        // what may be read.
        let room = size - 1 - written;
        let mut n = room.min(256);
        while n > 0 && !probe_readable(ctx, src + written, n) {
            n = if n > 1 { 1 } else { 0 };
        }
        if n == 0 && room > 0 {
            zero_fill(ctx, dst, size)?;
            return Ok(EFAULT);
        }
        let buf = &mut chunk[..n as usize];
        ctx.read(src + written, buf)?;
        let end = buf.iter().position(|&b| b == 0);
        let take = end.map_or(n, |e| e as u64);
        ctx.write(dst + written, &buf[..take as usize])?;
        written += take;
        if end.is_some() || written == size - 1 {
            ctx.write(dst + written, &[0])?;
            return Ok(written + 1);
        }
    }
}

fn ringbuf<'a>(ctx: &CallContext<'a>, handle: u64) -> Result<&'a RingBufMap, HelperError> {
    ctx.map(handle, 1)?.downcast_ref::<RingBufMap>().ok_or(invalid(1, "not a ring buffer"))
}

/// Reads a key of `map` from program memory at `addr` (argument 2) and passes it to `f`: keys up to
/// 32 bytes (most) through a small buffer, which costs less to clear than one of `MAX_KEY_SIZE`.
fn with_key<R>(
    ctx: &CallContext<'_>,
    map: &dyn Map,
    addr: u64,
    f: impl FnOnce(&[u8]) -> Result<R, HelperError>,
) -> Result<R, HelperError> {
    let size = map.def().key_size as usize;
    let mut small = [0u8; 32];
    if let Some(key) = small.get_mut(..size) {
        ctx.read(addr, key)?;
        return f(key);
    }
    let mut large = [0u8; MAX_KEY_SIZE as usize];
    let key = large.get_mut(..size).ok_or(invalid(1, "the map's keys are larger than MAX_KEY_SIZE"))?;
    ctx.read(addr, key)?;
    f(key)
}

/// The map a handle refers to, if programs may change it: not a program array or ring buffer (which
/// programs only tail-call through or reserve in), and not read-only for programs.
fn writable_map<'a>(ctx: &CallContext<'a>, handle: u64) -> Result<&'a Arc<dyn Map>, HelperError> {
    let map = ctx.map(handle, 1)?;
    let def = map.def();
    if matches!(
        def.map_type,
        MapType::ProgArray | MapType::RingBuf | MapType::PerfEventArray | MapType::ArrayOfMaps | MapType::HashOfMaps
    ) {
        return Err(invalid(
            1,
            "programs cannot change program arrays, ring buffers, perf event arrays or maps of maps through map helpers",
        ));
    }
    if def.read_only_for_programs() {
        return Err(invalid(1, "the map is read-only for programs"));
    }
    Ok(map)
}

/// `bpf_perf_event_output`'s flags: the index of the CPU's buffer, or this value for the current CPU.
const BPF_F_CURRENT_CPU: u64 = 0xffff_ffff;

/// `bpf_perf_event_output(ctx, map, flags, data, size)`: copies `size` bytes of program memory as a
/// sample into the buffer of the CPU slot the execution holds, as the kernel's: the index in `flags`
/// must be that CPU's (or `BPF_F_CURRENT_CPU`); `-E2BIG` past the map's entries, `-ENOENT` for an
/// entry with no buffer, `-EOPNOTSUPP` for another CPU's, `-EINVAL` for other flags (the context
/// bytes a socket program may append), `-ENOSPC` when the buffer is full (the sample is counted lost).
fn perf_event_output(ctx: &mut CallContext<'_>, a: [u64; 5]) -> Result<u64, HelperError> {
    let perf = ctx.map(a[1], 2)?.downcast_ref::<PerfEventArrayMap>().ok_or(invalid(2, "not a perf event array"))?;
    let (flags, data, size) = (a[2], a[3], a[4]);
    if flags > BPF_F_CURRENT_CPU {
        return Ok(EINVAL);
    }
    let cpu = if flags == BPF_F_CURRENT_CPU { ctx.cpu() } else { flags as usize };
    if cpu >= perf.def().max_entries as usize {
        return Ok(-7i64 as u64); // E2BIG
    }
    if cpu >= perf.buffer_count() {
        return Ok(-2i64 as u64); // ENOENT
    }
    if cpu != ctx.cpu() {
        return Ok(-95i64 as u64); // EOPNOTSUPP
    }
    ctx.check(data, size, false)?;
    let len = usize::try_from(size).map_err(|_| invalid(5, "the size is too large"))?;
    let ctx = &*ctx;
    let written = perf.output_with(cpu, len, |piece, offset| ctx.read(data.wrapping_add(offset as u64), piece))?;
    Ok(match written {
        Ok(()) => 0,
        Err(_) => -28i64 as u64, // ENOSPC
    })
}

/// `bpf_ringbuf_output` flags that only concern wake-ups (there is nothing to wake here).
const BPF_RB_NO_WAKEUP: u64 = 1;
/// See [`BPF_RB_NO_WAKEUP`].
const BPF_RB_FORCE_WAKEUP: u64 = 2;

/// `bpf_ringbuf_output(map, data, size, flags)`: copies `size` bytes of program memory into a new
/// record, through a small buffer (nothing is allocated, whatever the size).
fn ringbuf_output(ctx: &mut CallContext<'_>, a: [u64; 5]) -> Result<u64, HelperError> {
    let rb = ringbuf(ctx, a[0])?;
    if a[3] & !(BPF_RB_NO_WAKEUP | BPF_RB_FORCE_WAKEUP) != 0 {
        return Ok(EINVAL);
    }
    ctx.check(a[1], a[2], false)?;
    let Some(record) = rb.reserve(a[2]) else { return Ok(EAGAIN) };
    let mut chunk = [0u8; 256];
    let mut done = 0u64;
    while done < a[2] {
        let n = (a[2] - done).min(chunk.len() as u64) as usize;
        let copied = ctx.read(a[1].wrapping_add(done), &mut chunk[..n]).map(|()| rb.fill(record, done, &chunk[..n]));
        if copied != Ok(true) {
            rb.commit(record, true);
            copied?;
            return Err(invalid(2, "the record cannot hold the data"));
        }
        done += n as u64;
    }
    rb.commit(record, false);
    Ok(0)
}

/// `bpf_ringbuf_reserve(map, size, flags)`: a record of `size` bytes, which only this execution may
/// access until it submits or discards it (or ends: records left reserved are discarded).
fn ringbuf_reserve(ctx: &mut CallContext<'_>, a: [u64; 5]) -> Result<u64, HelperError> {
    let index = crate::maps::handle_index(a[0]).ok_or(invalid(1, "not a map reference"))?;
    let rb = ringbuf(ctx, a[0])?;
    if a[2] != 0 {
        return Ok(0); // no flags are defined: the kernel returns NULL
    }
    let Some(addr) = rb.reserve(a[1]) else { return Ok(0) };
    let region = Region { start: addr, len: a[1], writable: true };
    if ctx.grant(region, index) {
        Ok(addr)
    } else {
        // Too many records held at once: give this one back, and fail as when the buffer is full.
        rb.commit(addr, true);
        Ok(0)
    }
}

/// `bpf_ringbuf_submit` / `_discard`: the record must be one this execution reserved and still holds.
fn commit(ctx: &mut CallContext<'_>, addr: u64, discard: bool) -> Result<u64, HelperError> {
    // Only a record: the grant that records a held lock stays.
    if !ctx.grants().as_slice().iter().any(|g| g.region.start == addr && g.owner != LOCK_OWNER) {
        return Err(invalid(1, "not a ring buffer record this program holds"));
    }
    let grant = ctx.revoke(addr).ok_or(invalid(1, "not a ring buffer record this program holds"))?;
    let rb = ctx
        .maps()
        .get(grant.owner as usize)
        .and_then(|m| m.downcast_ref::<RingBufMap>())
        .ok_or(invalid(1, "not a ring buffer record"))?;
    if rb.commit(addr, discard) {
        Ok(0)
    } else {
        Err(invalid(1, "record is not reserved"))
    }
}

/// The owner of the grant that records a lock an execution holds (an empty region at the lock word).
const LOCK_OWNER: u32 = u32::MAX;

/// `bpf_spin_lock(lock)`: takes the lock word at `lock` (4 aligned bytes of a map value programs may
/// change), waiting while another execution holds it. An execution holds one lock at a time (a second
/// would wait for itself forever); a lock still held when it ends is released.
fn spin_lock(ctx: &mut CallContext<'_>, a: [u64; 5]) -> Result<u64, HelperError> {
    let addr = a[0];
    if addr % 4 != 0 || ctx.check(addr, 4, true)? != crate::memory::Access::Shared {
        return Err(invalid(1, "not an aligned lock word in a map value"));
    }
    if ctx.grants().as_slice().iter().any(|g| g.owner == LOCK_OWNER) {
        return Err(invalid(1, "this execution holds a lock already"));
    }
    // SAFETY: 4 aligned bytes of memory the execution may write that is not its own (`check`): map
    // storage, which lives as long as the environment, and which everything accesses atomically.
    let word = unsafe { crate::memory::access::atomic_u32(addr) };
    while word.compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed).is_err() {
        core::hint::spin_loop();
    }
    if !ctx.grant(Region { start: addr, len: 0, writable: false }, LOCK_OWNER) {
        word.store(0, Ordering::Release);
        return Err(invalid(1, "the execution holds too many regions"));
    }
    Ok(0)
}

/// `bpf_spin_unlock(lock)`: releases the lock the execution holds at `lock`.
fn spin_unlock(ctx: &mut CallContext<'_>, a: [u64; 5]) -> Result<u64, HelperError> {
    let addr = a[0];
    let held = ctx.grants().as_slice().iter().any(|g| g.owner == LOCK_OWNER && g.region.start == addr);
    if !held || ctx.revoke(addr).is_none() {
        return Err(invalid(1, "not the lock this execution holds"));
    }
    // SAFETY: the address of a lock word `spin_lock` checked and took for this execution.
    unsafe { crate::memory::access::atomic_u32(addr) }.store(0, Ordering::Release);
    Ok(0)
}

/// Discards every record an execution still holds when it ends, so that the consumer is never blocked
/// by a record nobody will submit, and releases the lock it holds.
pub(crate) fn release_grants(grants: &mut Grants, maps: &[Arc<dyn Map>]) {
    while let Some(g) = grants.pop() {
        if g.owner == LOCK_OWNER {
            // SAFETY: the lock word `spin_lock` checked (map storage, alive as long as `maps`) and took.
            unsafe { crate::memory::access::atomic_u32(g.region.start) }.store(0, Ordering::Release);
        } else if let Some(rb) = maps.get(g.owner as usize).and_then(|m| m.downcast_ref::<RingBufMap>()) {
            rb.commit(g.region.start, true);
        }
    }
}

/// A xorshift64* generator shared by all executions.
fn prandom() -> u32 {
    static STATE: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let mut x = STATE.load(Ordering::Relaxed);
    loop {
        let mut n = x;
        n ^= n >> 12;
        n ^= n << 25;
        n ^= n >> 27;
        match STATE.compare_exchange_weak(x, n, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return (n.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32,
            Err(cur) => x = cur,
        }
    }
}

/// `bpf_trace_printk(fmt, fmt_size, a, b, c)`: `%d %i %u %x %X %c %s %p %%` with `l`/`ll` length
/// modifiers; `%s` reads a NUL-terminated string (at most 256 bytes) from program memory.
fn trace_printk(ctx: &mut CallContext<'_>, a: [u64; 5]) -> Result<u64, HelperError> {
    let size =
        usize::try_from(a[1]).ok().filter(|&s| s > 0 && s <= 1024).ok_or(invalid(2, "format size must be 1..=1024"))?;
    let fmt = ctx.read_vec(a[0], size)?;
    let out = format(ctx, &fmt, &a[2..]).map_err(|e| match e {
        FormatError::Invalid(reason) => invalid(1, reason),
        FormatError::Memory(e) => e,
    })?;
    let len = out.len() as u64;
    ctx.print(out.trim_end_matches('\n'));
    Ok(len)
}

/// Why a format could not be applied.
enum FormatError {
    /// The format itself: unterminated conversion, unsupported conversion, too few arguments.
    Invalid(&'static str),
    /// A `%s` argument the program may not read.
    Memory(HelperError),
}

/// Most arguments `bpf_trace_vprintk` and `bpf_snprintf` take (the kernel's `MAX_BPRINTF_VARARGS`).
const MAX_FORMAT_ARGS: u64 = 12;

/// Applies a `printf` format (up to its first NUL) to `args`, as the kernel's BPF formatter does:
/// `%d %i %u %x %X` with `l`/`ll`, `%c`, `%p`, `%s` (a string of at most 256 bytes of program
/// memory, each byte checked) and `%%`.
fn format(ctx: &CallContext<'_>, fmt: &[u8], args: &[u64]) -> Result<String, FormatError> {
    let fmt = &fmt[..fmt.iter().position(|&b| b == 0).unwrap_or(fmt.len())];
    let mut out = String::new();
    let mut args = args.iter().copied();
    let mut i = 0;
    while i < fmt.len() {
        let c = fmt[i];
        i += 1;
        if c != b'%' {
            out.push(c as char);
            continue;
        }
        let mut long = 0;
        while i < fmt.len() && fmt[i] == b'l' {
            long += 1;
            i += 1;
        }
        let Some(&conv) = fmt.get(i) else { return Err(FormatError::Invalid("format ends inside a conversion")) };
        i += 1;
        if conv == b'%' {
            out.push('%');
            continue;
        }
        let v = args.next().ok_or(FormatError::Invalid("more conversions than arguments"))?;
        let _ = match (conv, long) {
            (b'd' | b'i', 0) => write!(out, "{}", v as i32),
            (b'd' | b'i', _) => write!(out, "{}", v as i64),
            (b'u', 0) => write!(out, "{}", v as u32),
            (b'u', _) => write!(out, "{v}"),
            (b'x', 0) => write!(out, "{:x}", v as u32),
            (b'x', _) => write!(out, "{v:x}"),
            (b'X', 0) => write!(out, "{:X}", v as u32),
            (b'X', _) => write!(out, "{v:X}"),
            (b'c', _) => write!(out, "{}", v as u8 as char),
            (b'p', _) => write!(out, "{v:#x}"),
            (b's', _) => {
                let mut s = Vec::new();
                for k in 0..256u64 {
                    let mut b = [0u8];
                    ctx.read(v.wrapping_add(k), &mut b).map_err(FormatError::Memory)?;
                    if b[0] == 0 {
                        break;
                    }
                    s.push(b[0]);
                }
                write!(out, "{}", String::from_utf8_lossy(&s))
            }
            _ => return Err(FormatError::Invalid("unsupported conversion")),
        };
    }
    Ok(out)
}

/// The arguments of `bpf_trace_vprintk` and `bpf_snprintf`: `len` bytes of u64s at `data`, or `None`
/// if `len` is not a multiple of 8 or holds more than [`MAX_FORMAT_ARGS`].
fn format_args(ctx: &CallContext<'_>, data: u64, len: u64) -> Result<Option<Vec<u64>>, HelperError> {
    if len % 8 != 0 || len / 8 > MAX_FORMAT_ARGS {
        return Ok(None);
    }
    let mut args = Vec::new();
    for k in 0..len / 8 {
        let mut b = [0u8; 8];
        ctx.read(data.wrapping_add(k * 8), &mut b)?;
        args.push(u64::from_ne_bytes(b));
    }
    Ok(Some(args))
}

/// `bpf_trace_vprintk(fmt, fmt_size, data, data_len)`: as `bpf_trace_printk`, with the arguments in
/// an array of u64s; returns the length printed, or `-EINVAL` for a format or array it refuses.
fn trace_vprintk(ctx: &mut CallContext<'_>, a: [u64; 5]) -> Result<u64, HelperError> {
    let size =
        usize::try_from(a[1]).ok().filter(|&s| s > 0 && s <= 1024).ok_or(invalid(2, "format size must be 1..=1024"))?;
    let fmt = ctx.read_vec(a[0], size)?;
    let Some(args) = format_args(ctx, a[2], a[3])? else { return Ok(EINVAL) };
    let out = match format(ctx, &fmt, &args) {
        Ok(out) => out,
        Err(FormatError::Invalid(_)) => return Ok(EINVAL),
        Err(FormatError::Memory(e)) => return Err(e),
    };
    let len = out.len() as u64;
    ctx.print(out.trim_end_matches('\n'));
    Ok(len)
}

/// Whether `bpf_for_each_map_elem` iterates maps of this kind (the kernel's: arrays and hash maps).
pub(crate) fn iterable(kind: MapType) -> bool {
    matches!(kind, MapType::Array | MapType::PerCpuArray | MapType::Hash | MapType::PerCpuHash | MapType::LruHash)
}

/// The largest keys and values of the hash maps the engines call directly ([`hash_map_call`]): larger
/// ones go through the helper.
pub(crate) const DIRECT_KEY_MAX: u32 = 32;
/// See [`DIRECT_KEY_MAX`].
pub(crate) const DIRECT_VALUE_MAX: u32 = 64;

/// A hash map the engines may call directly for the standard `bpf_map_lookup_elem` (and, if programs
/// may change it, `bpf_map_update_elem` and `bpf_map_delete_elem`), as the kernel's JITs call a map's
/// own functions: a [`HashMap`] of keys and values within [`DIRECT_KEY_MAX`] and [`DIRECT_VALUE_MAX`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct DirectHash {
    /// The map's address (the map lives as long as the environment that holds it).
    pub(crate) addr: u64,
    pub(crate) key_size: u32,
    pub(crate) value_size: u32,
    /// Whether programs may update it and delete from it.
    pub(crate) writable: bool,
}

impl DirectHash {
    /// `map`, if the engines may call it directly.
    pub(crate) fn of(map: &dyn Map) -> Option<DirectHash> {
        let hash = map.downcast_ref::<HashMap>()?;
        let def = hash.def();
        (def.key_size <= DIRECT_KEY_MAX && def.value_size <= DIRECT_VALUE_MAX).then_some(DirectHash {
            addr: core::ptr::from_ref(hash).expose_provenance() as u64,
            key_size: def.key_size,
            value_size: def.value_size,
            writable: !def.read_only_for_programs(),
        })
    }

    /// Whether the standard map helper `id` may be called directly on this map.
    pub(crate) fn takes(&self, id: u32) -> bool {
        match id {
            MAP_LOOKUP_ELEM => true,
            MAP_UPDATE_ELEM | MAP_DELETE_ELEM => self.writable,
            _ => false,
        }
    }

    /// Carries out the standard map helper `id` (lookup, update or delete) on the hash map at `addr`
    /// (a [`DirectHash`]'s), the key read at `key` (with the rules of `key_access`) and an update's
    /// value at `value` (`value_access`); the helper's result.
    ///
    /// # Safety
    /// `addr` is the address of a live map [`DirectHash::of`] accepted, which [takes](DirectHash::takes)
    /// `id`; the map's key size of bytes at `key` and, for an update, its value size at `value` may be
    /// read with the rules of their access kinds (see [`copy_out`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn call(
        addr: u64,
        id: u32,
        key: u64,
        key_access: Access,
        value: u64,
        value_access: Access,
        flags: u64,
        cpu: usize,
    ) -> u64 {
        // SAFETY: alive and a hash map (the contract).
        let map = unsafe { &*core::ptr::with_exposed_provenance::<HashMap>(addr as usize) };
        let def = map.def();
        let size = def.key_size as usize;
        let at = core::ptr::with_exposed_provenance::<u8>(key as usize);
        // Keys of 4 and 8 bytes (most) are read with one load (see `copy_out`) into a word.
        let mut word = [0u8; 8];
        let mut long = [0u8; DIRECT_KEY_MAX as usize];
        let key_buf = match (word.get_mut(..size), long.get_mut(..size)) {
            (Some(buf), _) | (None, Some(buf)) => buf,
            (None, None) => return MapError::Unsupported.errno() as u64,
        };
        // SAFETY: the key's bytes may be read with these rules (the contract); `key_buf` is local.
        unsafe { copy_out(at, key_buf, key_access) };
        match id {
            MAP_LOOKUP_ELEM => map.find_value(key_buf, cpu).map_or(0, |p| p.expose_provenance() as u64),
            MAP_UPDATE_ELEM => {
                let len = def.value_size as usize;
                let from = core::ptr::with_exposed_provenance::<u8>(value as usize);
                let write = |slot: *mut u8| {
                    // The value goes straight from program memory into the map's slot, a word at a
                    // time where both are aligned. (Both may be the same slot: each word is read
                    // before it is written.)
                    let mut i = 0;
                    while i < len {
                        let n = if len - i >= 8 && (from.addr() + i) % 8 == 0 && (slot.addr() + i) % 8 == 0 {
                            8
                        } else {
                            1
                        };
                        let mut w = [0u8; 8];
                        // SAFETY: bytes `i..i + n` of the value may be read with its rules (the
                        // contract) and of the slot written as map memory is (`put`'s promise); `w` is
                        // local.
                        unsafe {
                            copy_out(from.wrapping_add(i), &mut w[..n], value_access);
                            crate::memory::access::copy_in(slot.wrapping_add(i), &w[..n], Access::Shared);
                        }
                        i += n;
                    }
                };
                map.put(key_buf, flags, cpu, write).map_or_else(|e| e.errno() as u64, |()| 0)
            }
            MAP_DELETE_ELEM => map.delete(key_buf).map_or_else(|e| e.errno() as u64, |()| 0),
            _ => MapError::Unsupported.errno() as u64,
        }
    }
}

/// One step of `bpf_for_each_map_elem` over `map`: after `visited` elements (0 to start) whose last key
/// is in `key`, the next element's key goes into `key` and its value's address (in slot `cpu`) is
/// returned; `None` once the map has no more elements, or `max_entries` were visited (a map that keeps
/// changing cannot make the loop go on forever). A key whose value is deleted meanwhile is skipped.
pub(crate) fn for_each_step(map: &dyn Map, visited: u32, key: &mut [u8], cpu: usize) -> Option<*mut u8> {
    let def = map.def();
    if visited >= def.max_entries || key.len() != def.key_size as usize {
        return None;
    }
    let mut prev = [0u8; MAX_KEY_SIZE as usize];
    let prev = prev.get_mut(..key.len())?;
    let mut first = visited == 0;
    for _ in 0..def.max_entries {
        prev.copy_from_slice(key);
        map.next_key(if first { None } else { Some(prev) }, key).ok()?;
        first = false;
        // Not counted as a use (an LRU map's order stays), as the kernel's walk of the elements.
        if let Some(value) = map.peek(key, cpu) {
            return Some(value);
        }
    }
    None
}

/// Longest format `bpf_snprintf` reads, with its NUL.
const MAX_SNPRINTF_FORMAT: u64 = 1024;

/// `bpf_snprintf(str, str_size, fmt, data, data_len)`: formats into `str` as `snprintf` does (at most
/// `str_size - 1` bytes and a NUL), and returns the bytes the whole result takes with its NUL;
/// `-EINVAL` for a format or array it refuses. `fmt` is a NUL-terminated string of program memory (a
/// constant in `.rodata`, as libbpf's `BPF_SNPRINTF` makes it), read byte by byte with checks.
fn snprintf(ctx: &mut CallContext<'_>, a: [u64; 5]) -> Result<u64, HelperError> {
    let (dst, size, fmt_at) = (a[0], a[1], a[2]);
    ctx.check(dst, size, true)?;
    let mut fmt = Vec::new();
    loop {
        if fmt.len() as u64 == MAX_SNPRINTF_FORMAT {
            return Ok(EINVAL);
        }
        let mut b = [0u8];
        ctx.read(fmt_at.wrapping_add(fmt.len() as u64), &mut b)?;
        if b[0] == 0 {
            break;
        }
        fmt.push(b[0]);
    }
    let Some(args) = format_args(ctx, a[3], a[4])? else { return Ok(EINVAL) };
    let out = match format(ctx, &fmt, &args) {
        Ok(out) => out,
        Err(FormatError::Invalid(_)) => return Ok(EINVAL),
        Err(FormatError::Memory(e)) => return Err(e),
    };
    if size > 0 {
        let n = (out.len() as u64).min(size - 1) as usize;
        ctx.write(dst, &out.as_bytes()[..n])?;
        ctx.write(dst + n as u64, &[0])?;
    }
    Ok(out.len() as u64 + 1)
}
