//! What compiled code reads and calls at run time: the [`JitContext`] it receives, and the runtime
//! functions for what is not emitted inline (helper calls, regions beyond input and stack, tail calls,
//! legacy packet loads). The ahead-of-time harness provides functions of the same names and ABI.

use alloc::boxed::Box;
use core::mem::offset_of;

use crate::helpers::standard::DirectHash;
use crate::helpers::CallContext;
use crate::link::{ExecError, MAX_TAIL_CALLS};
use crate::maps::{self, ProgArrayMap};
use crate::memory::access::Access;
use crate::memory::{Grants, MemoryMap, Region, FRAME_SIZE};

/// Status codes compiled code and runtime functions leave in [`JitContext::status`].
pub(crate) mod status {
    /// Running, or finished normally.
    pub const OK: u64 = 0;
    /// A memory access outside every region (`err_pc`, `err_addr`, `err_len`, `err_write`).
    pub const OUT_OF_BOUNDS: u64 = 1;
    /// A misaligned atomic (`err_pc`, `err_addr`).
    pub const MISALIGNED: u64 = 2;
    /// The budget ran out (`err_pc`).
    pub const BUDGET: u64 = 3;
    /// Too many nested calls (`err_pc`).
    pub const CALL_DEPTH: u64 = 4;
    /// An error the runtime stored in the host state (helpers).
    pub const HOST_ERROR: u64 = 5;
    /// A legacy packet load out of bounds: the program ends with r0 = 0.
    pub const EXIT_ZERO: u64 = 6;
}

/// The context compiled code receives as its first argument. The field offsets are part of the ABI
/// between the translator, this module and the ahead-of-time harness.
#[repr(C)]
pub(crate) struct JitContext<'a> {
    pub(crate) mem_base: u64,
    pub(crate) mem_len: u64,
    pub(crate) stack_base: u64,
    pub(crate) stack_hi: u64,
    pub(crate) budget: u64,
    pub(crate) status: u64,
    pub(crate) err_pc: u64,
    pub(crate) err_addr: u64,
    pub(crate) err_len: u64,
    pub(crate) err_write: u64,
    /// What only the runtime functions read; compiled code never looks past `err_write`.
    pub(crate) host: HostState<'a>,
}

/// Field offsets of [`JitContext`], as compiled code addresses them.
pub(crate) mod offset {
    use super::{offset_of, JitContext};

    pub const MEM_BASE: i32 = offset_of!(JitContext<'static>, mem_base) as i32;
    pub const MEM_LEN: i32 = offset_of!(JitContext<'static>, mem_len) as i32;
    pub const STACK_BASE: i32 = offset_of!(JitContext<'static>, stack_base) as i32;
    pub const STACK_HI: i32 = offset_of!(JitContext<'static>, stack_hi) as i32;
    pub const BUDGET: i32 = offset_of!(JitContext<'static>, budget) as i32;
    pub const STATUS: i32 = offset_of!(JitContext<'static>, status) as i32;
    pub const ERR_PC: i32 = offset_of!(JitContext<'static>, err_pc) as i32;
    pub const ERR_ADDR: i32 = offset_of!(JitContext<'static>, err_addr) as i32;
    pub const ERR_LEN: i32 = offset_of!(JitContext<'static>, err_len) as i32;
    pub const ERR_WRITE: i32 = offset_of!(JitContext<'static>, err_write) as i32;

    // The ahead-of-time harness (C) relies on these ten `uint64_t` fields, in this order.
    const _: () = assert!(MEM_BASE == 0 && MEM_LEN == 8 && STACK_BASE == 16 && STACK_HI == 24 && BUDGET == 32);
    const _: () = assert!(STATUS == 40 && ERR_PC == 48 && ERR_ADDR == 56 && ERR_LEN == 64 && ERR_WRITE == 72);
}

/// The signature every compiled BPF function has: `(ctx, r1, r2, r3, r4, r5, frame pointer) -> r0`.
pub(crate) type EntryFn = unsafe extern "C" fn(*mut JitContext<'_>, u64, u64, u64, u64, u64, u64) -> u64;

/// What the runtime functions need beyond the context: the environment, the host's regions, the CPU
/// slot, and the execution's state.
pub(crate) struct HostState<'a> {
    /// The linked programs and CPU slot of this execution.
    pub(crate) setup: &'a super::JitSetup<'a>,
    /// The compiled code: the mode, and the entry functions of the tail-call targets by program id.
    pub(crate) program: &'a super::JitProgram,
    pub(crate) tail_calls: u32,
    /// Memory helpers handed to this execution (reserved ring-buffer records).
    pub(crate) grants: &'a mut Grants,
    /// Why a runtime function stopped the program (with status `HOST_ERROR`).
    pub(crate) failure: Option<Failure>,
    /// The keys of the `bpf_for_each_map_elem` calls in progress, by callee depth (allocated at the
    /// first).
    pub(crate) iter_keys: Option<alloc::vec::Vec<u8>>,
}

/// What a runtime function leaves behind when it stops the program.
pub(crate) enum Failure {
    /// An error to return from `execute`.
    Error(ExecError),
    /// A panic caught in a helper, resumed once compiled code has returned (unwinding through compiled
    /// code and `extern "C"` functions is not possible).
    Panic(Box<dyn core::any::Any + Send + 'static>),
}

/// Names of the runtime functions, as compiled code imports them.
pub(crate) mod names {
    pub const CALL_HELPER: &str = "ebpf_vm_call_helper";
    pub const REGION_CHECK: &str = "ebpf_vm_region_check";
    pub const TAIL_CALL: &str = "ebpf_vm_tail_call";
    pub const PACKET_LOAD: &str = "ebpf_vm_packet_load";
    pub const HASH_MAP_OP: &str = "ebpf_vm_hash_map_op";
}

/// `memmove`, for the byte-copy loops compiled code finishes at once (see `copy_loop`).
///
/// # Safety
/// `n` bytes at `src` must be valid for reads and `n` bytes at `dst` for writes, neither accessed by
/// anything else during the call; they may overlap.
pub(crate) unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract; compiled code calls this only for ranges in the execution's
    // input or live frames, which it has checked.
    unsafe { core::ptr::copy(src, dst, n) };
    crate::program::copy_loop::count_bulk_copy();
    dst
}

/// # Safety
/// `ctx` must be the context of a running execution.
unsafe fn context<'c, 'a>(ctx: *mut JitContext<'a>) -> &'c mut JitContext<'a> {
    // SAFETY: compiled code passes the context it was given, which `JitProgram::run` keeps alive (and
    // does not otherwise touch) for the whole call.
    unsafe { &mut *ctx }
}

/// The execution's memory map as seen from the function whose frame pointer is `fp`.
fn memory_map<'a>(ctx: &JitContext<'_>, regions: &'a [Region], uses_stack: bool, fp: u64) -> MemoryMap<'a> {
    // Without r10 no program can reach the stack: the stack region is then empty.
    let stack_lo = if uses_stack { fp - FRAME_SIZE as u64 } else { ctx.stack_hi };
    MemoryMap {
        input: Region { start: ctx.mem_base, len: ctx.mem_len, writable: true },
        stack_lo,
        stack_hi: ctx.stack_hi,
        shared: regions,
    }
}

/// Calls a helper. For a call resolved when the program was built, `which` holds the helper id in its
/// low 32 bits and its index + 1 in the high 32 bits; for `callx` (`pc` has `CALLX_FLAG` set), `which`
/// is the register's value, looked up as an id.
///
/// # Safety
/// Called only by compiled code, with the context it was given.
pub(crate) unsafe extern "C" fn call_helper(
    ctx: *mut JitContext<'_>,
    pc: u64,
    which: u64,
    r1: u64,
    r2: u64,
    r3: u64,
    r4: u64,
    r5: u64,
    fp: u64,
) -> u64 {
    // SAFETY: compiled code passes its own, live context.
    let ctx = unsafe { context(ctx) };
    let linked = ctx.host.setup.linked;
    let env = linked.env();
    let callx = pc as usize & super::translate::CALLX_FLAG != 0;
    let step = pc as usize & super::translate::FOR_EACH_STEP_FLAG != 0;
    let pc = pc as usize & !(super::translate::CALLX_FLAG | super::translate::FOR_EACH_STEP_FLAG);
    if step {
        if let Some(value) = for_each_step(ctx, r1, r2, r3) {
            return value;
        }
        // Not a map that can be iterated: the helper's own function says so.
    }
    let index = if callx {
        match u32::try_from(which).ok().and_then(|id| env.helper_index(id)) {
            Some(i) => i,
            None => {
                ctx.host.failure = Some(Failure::Error(ExecError::UnknownHelper { pc, id: which }));
                ctx.status = status::HOST_ERROR;
                return 0;
            }
        }
    } else {
        ((which >> 32) as usize).wrapping_sub(1)
    };
    let Some(helper) = env.helpers().get(index) else {
        ctx.host.failure = Some(Failure::Error(ExecError::UnknownHelper { pc, id: which & 0xffff_ffff }));
        ctx.status = status::HOST_ERROR;
        return 0;
    };
    let mm = memory_map(ctx, linked.regions(), linked.uses_stack(), fp);
    // Helpers check the memory they are given unless the host vouched for every address (unchecked
    // mode): in verified mode too, as an argument the verifier knows only as a number may be an
    // address to a helper (see `interpreter::Setup::trusted`).
    let checked = ctx.host.program.opts.checked || ctx.host.program.opts.verified;
    let mut call = CallContext {
        memory: &mm,
        grants: ctx.host.grants,
        checked,
        pc,
        maps: env.maps(),
        print: env.print_sink(),
        cpu: ctx.host.setup.cpu,
    };
    // A panicking helper (or a map it calls) must not unwind into compiled code: the panic is kept,
    // the program stops, and the panic goes on in the caller of `execute`, as with the interpreter.
    let result =
        std::panic::catch_unwind(core::panic::AssertUnwindSafe(|| helper.call(&mut call, [r1, r2, r3, r4, r5])));
    match result {
        Ok(Ok(r0)) => r0,
        Ok(Err(source)) => {
            ctx.host.failure = Some(Failure::Error(ExecError::Helper { pc, id: helper.id(), source }));
            ctx.status = status::HOST_ERROR;
            0
        }
        Err(panic) => {
            ctx.host.failure = Some(Failure::Panic(panic));
            ctx.status = status::HOST_ERROR;
            0
        }
    }
}

/// The standard `bpf_map_lookup_elem`, `bpf_map_update_elem` or `bpf_map_delete_elem` (`op`, the
/// helper's id) on the hash map `map` describes, called straight from compiled code, as the kernel's
/// JITs call a map's own lookup: no helper dispatch, no argument checks. The result is the helper's.
///
/// # Safety
/// `ctx` is the context of a running execution of code built for an environment holding the map at
/// `map`, which [`DirectHash::of`] accepted and which [takes](DirectHash::takes) `op`; the map's key size of
/// bytes at `key` and, for an update, its value size at `value`, are memory the execution may read
/// (proven by the verifier, vouched for by the host in unchecked mode, or tested by the caller).
pub(crate) unsafe extern "C" fn hash_map_op(
    ctx: *mut JitContext<'_>,
    op: u64,
    map: u64,
    key: u64,
    value: u64,
    flags: u64,
) -> u64 {
    #[cfg(test)]
    tests::DIRECT_HASH_CALLS.with(|c| c.set(c.get() + 1));
    // SAFETY: compiled code passes its own, live context.
    let ctx = unsafe { context(ctx) };
    let cpu = ctx.host.setup.cpu;
    // The key and value may be in memory other executions share: read as shared memory is.
    // SAFETY: the map is alive and takes `op`; the bytes may be read (the contract).
    let run = || unsafe { DirectHash::call(map, op as u32, key, Access::Shared, value, Access::Shared, flags, cpu) };
    // A panic must not unwind into compiled code (see `call_helper`).
    match std::panic::catch_unwind(core::panic::AssertUnwindSafe(run)) {
        Ok(r0) => r0,
        Err(panic) => {
            ctx.host.failure = Some(Failure::Panic(panic));
            ctx.status = status::HOST_ERROR;
            0
        }
    }
}

/// One step of a `bpf_for_each_map_elem` over the map with handle `map`, after `visited` elements,
/// for the callback whose frame pointer is `callee_fp` (its frame zeroed): the next element's key is
/// copied to the bottom of that frame and its value's address returned; 0 when there is none left.
/// `None` if `map` is no map that can be iterated, or the frame is not in the stack.
fn for_each_step(ctx: &mut JitContext<'_>, map: u64, visited: u64, callee_fp: u64) -> Option<u64> {
    const MAX_KEY: usize = crate::maps::MAX_KEY_SIZE as usize;
    let env = ctx.host.setup.linked.env();
    let map = maps::handle_index(map).and_then(|i| env.map(i))?;
    if !crate::helpers::standard::iterable(map.def().map_type) {
        return None;
    }
    let lo = callee_fp.checked_sub(FRAME_SIZE as u64)?;
    if lo < ctx.stack_base || callee_fp > ctx.stack_hi {
        return None;
    }
    let depth = ((ctx.stack_hi - callee_fp) / FRAME_SIZE as u64) as usize;
    let keys = ctx.host.iter_keys.get_or_insert_with(|| alloc::vec![0u8; crate::memory::MAX_FRAMES * MAX_KEY]);
    let size = map.def().key_size as usize;
    let key = keys.get_mut(depth * MAX_KEY..depth * MAX_KEY + size)?;
    let Some(value) = crate::helpers::standard::for_each_step(&**map, visited as u32, key, ctx.host.setup.cpu) else {
        return Some(0);
    };
    let n = size.min(FRAME_SIZE);
    // SAFETY: `lo .. lo + FRAME_SIZE` is a frame of the execution's stack (checked above), which no Rust
    // reference covers; the key is host memory.
    unsafe { core::ptr::copy_nonoverlapping(key.as_ptr(), core::ptr::with_exposed_provenance_mut(lo as usize), n) };
    Some(value.expose_provenance() as u64)
}

/// Whether `len` bytes at `addr` lie in a region other than the input and the stack (those are
/// checked inline): a host region, or memory a helper handed to this execution. 1 if so, else 0.
///
/// # Safety
/// Called only by compiled code, with the context it was given.
pub(crate) unsafe extern "C" fn region_check(ctx: *mut JitContext<'_>, addr: u64, len: u64, write: u64) -> u64 {
    // SAFETY: compiled code passes its own, live context.
    let host = &unsafe { context(ctx) }.host;
    let write = write != 0;
    (host.setup.linked.regions().iter().any(|r| r.allows(addr, len, write)) || host.grants.allows(addr, len, write))
        as u64
}

/// Finds the target of a tail call: the entry of the program at `index` of the program array
/// `map`, or null when there is none or the tail-call limit is reached.
///
/// # Safety
/// Called only by compiled code, with the context it was given.
pub(crate) unsafe extern "C" fn tail_call(ctx: *mut JitContext<'_>, map: u64, index: u64) -> usize {
    // SAFETY: compiled code passes its own, live context.
    let host = &mut unsafe { context(ctx) }.host;
    let target = maps::handle_index(map)
        .and_then(|i| host.setup.linked.env().map(i))
        .and_then(|m| m.downcast_ref::<ProgArrayMap>())
        .and_then(|pa| pa.get(u32::try_from(index).ok()?))
        .and_then(|id| host.program.entries.get(id as usize));
    match target {
        Some(&f) if host.tail_calls < MAX_TAIL_CALLS => {
            host.tail_calls += 1;
            f as usize
        }
        _ => 0,
    }
}

/// A legacy packet load of `size` bytes at `offset` of the input, big-endian; out of bounds, it
/// ends the program with r0 = 0.
///
/// # Safety
/// Called only by compiled code, with the context it was given.
pub(crate) unsafe extern "C" fn packet_load(ctx: *mut JitContext<'_>, offset: i64, size: u64) -> u64 {
    // SAFETY: compiled code passes its own, live context.
    let ctx = unsafe { context(ctx) };
    if offset < 0 || (offset as u64).saturating_add(size) > ctx.mem_len {
        ctx.status = status::EXIT_ZERO;
        return 0;
    }
    let p = core::ptr::with_exposed_provenance::<u8>((ctx.mem_base + offset as u64) as usize);
    let mut v = 0u64;
    for i in 0..size as usize {
        // SAFETY: `offset + size <= mem_len` was checked above, and the input buffer is borrowed for
        // the whole execution.
        v = (v << 8) | unsafe { p.add(i).read() } as u64;
    }
    v
}

#[cfg(test)]
mod tests {
    use core::cell::Cell;

    use crate::maps::{self, MapDef, MapType};
    use crate::{Context, Engine, Env, Program, Vm};

    std::thread_local! {
        /// Calls of `hash_map_op` on this thread.
        pub(super) static DIRECT_HASH_CALLS: Cell<u64> = const { Cell::new(0) };
    }

    #[test]
    fn hash_map_helpers_on_a_known_map_are_called_directly() {
        // A lookup, an update and a delete of a key on the stack: three direct calls, in verified and
        // checked code; none where `r1` comes from another register.
        let text = "stw [%r10-4], 9\nstdw [%r10-16], 5\nmov %r2, %r10\nadd %r2, -4\nmov %r3, %r10\nadd %r3, -16
            mov %r4, 0\nlddw %r1, map_fd(0)\ncall 2\nmov %r2, %r10\nadd %r2, -4\nlddw %r1, map_fd(0)\ncall 1
            mov %r2, %r10\nadd %r2, -4\nlddw %r1, map_fd(0)\ncall 3\nexit";
        for (text, want) in [
            (alloc::string::String::from(text), 3),
            (text.replace("lddw %r1, map_fd(0)", "lddw %r6, map_fd(0)\nmov %r1, %r6"), 0),
        ] {
            for checked in [false, true] {
                let program = Program::from_asm(&text).expect("assembles");
                let def = MapDef { map_type: MapType::Hash, key_size: 4, value_size: 8, max_entries: 4, flags: 0 };
                let mut env = Env::new();
                env.add_standard_helpers();
                env.add_map(maps::create(def).expect("map"));
                env.set_context(Context::fixed(0));
                let builder = Vm::builder(program).env(env).engine(Engine::Jit);
                let vm = if checked { builder.checked() } else { builder.verified() }.build().expect("builds");
                let before = DIRECT_HASH_CALLS.with(Cell::get);
                assert_eq!(vm.execute(&mut []).expect("runs"), 0, "the delete found the key");
                assert_eq!(DIRECT_HASH_CALLS.with(Cell::get) - before, want, "checked: {checked}\n{text}");
            }
        }
    }
}
