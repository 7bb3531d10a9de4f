//! The Cranelift JIT (feature `jit`): programs compiled to host machine code with the interpreter's
//! exact results and errors.
//!
//! A [`Vm`](crate::Vm) built with [`Engine::Jit`](crate::Engine::Jit) compiles its program and the
//! program's tail-call targets for the host with `cranelift-jit`; [`aot`] compiles for another target
//! into an object file. Checked mode accepts and refuses exactly the accesses the interpreter does
//! (some tests are shared between accesses or settled at compile time, see `groups`); unchecked mode
//! tests nothing.

pub mod aot;
#[cfg(target_arch = "x86_64")]
mod code_memory;
mod groups;
mod ifconv;
mod known;
mod placement;
pub(crate) mod runtime;
mod translate;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::mem::MaybeUninit;

use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, Linkage};

use crate::helpers::standard::release_grants;
use crate::link::{Env, ExecError, LinkError, Linked};
use crate::memory::{Grants, FRAME_SIZE, MAX_FRAMES};
use crate::program::Program;
use runtime::{status, EntryFn, Failure, HostState, JitContext};
pub(crate) use translate::Options;

/// Why a program could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JitError {
    /// The program does not fit its environment (unknown helper, unresolved map reference...).
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The target is not supported or not known.
    #[error("unsupported target: {0}")]
    Target(String),
    /// Cranelift failed to compile the program.
    #[error("code generation failed: {0}")]
    Codegen(String),
}

/// Up to this many host regions (map storage, granted memory), checked mode tests them inline.
const MAX_INLINE_REGIONS: usize = 8;

/// What one JIT execution runs with, besides its input.
pub(crate) struct JitSetup<'a> {
    pub(crate) linked: &'a Linked,
    pub(crate) cpu: usize,
}

/// Compiled code for a program and its tail-call targets. The code is immutable once compiled.
pub(crate) struct JitProgram {
    module: Option<JITModule>,
    /// Entry functions, by program id.
    entries: Vec<EntryFn>,
    /// The id of the entry program.
    entry: usize,
    opts: Options,
    /// No program makes bpf-to-bpf calls: one frame of stack is enough.
    single_frame: bool,
    /// No compiled function reads its context argument (see `translate::Compiled`): runs need none.
    context_free: bool,
}

// SAFETY: after `finalize_definitions` the module's code and data are never written again; the module
// is only kept so that its memory is freed on drop. Compiled functions are reentrant: all their state
// lives in registers, in the execution's stack and context.
unsafe impl Send for JitProgram {}
// SAFETY: as above; `&JitProgram` gives access only to immutable code.
unsafe impl Sync for JitProgram {}

impl core::fmt::Debug for JitProgram {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("JitProgram").field("programs", &self.entries.len()).finish()
    }
}

impl Drop for JitProgram {
    fn drop(&mut self) {
        if let Some(module) = self.module.take() {
            // SAFETY: the `JitProgram` is being dropped, so none of its functions can run anymore;
            // nothing else refers to the module's memory.
            unsafe { module.free_memory() };
        }
    }
}

/// The host's ISA, optimising (`speed`) or not (`none`, for very large functions: see
/// `translate::LARGE_FUNCTION`), with the `backtracking` or `single_pass` register allocator (for small
/// straight-line functions: `translate::SMALL_FUNCTION`).
fn host_isa(opt_level: &str, regalloc: &str) -> Result<OwnedTargetIsa, JitError> {
    let mut flags = settings::builder();
    let set = |f: &mut settings::Builder, k: &str, v: &str| f.set(k, v).map_err(|e| JitError::Codegen(format!("{e}")));
    set(&mut flags, "opt_level", opt_level)?;
    set(&mut flags, "regalloc_algorithm", regalloc)?;
    set(&mut flags, "use_colocated_libcalls", "false")?;
    set(&mut flags, "is_pic", "false")?;
    // Cranelift checks its own IR after every pass by default (an internal consistency check, as a debug
    // assertion would be): a quarter to two fifths of the time compiling the benchmark programs took.
    set(&mut flags, "enable_verifier", "false")?;
    let isa = cranelift_native::builder().map_err(|e| JitError::Target(e.into()))?;
    isa.finish(settings::Flags::new(flags)).map_err(|e| JitError::Codegen(format!("{e}")))
}

/// The host's ISAs: the module's (optimising), then the large and small ones of `translate::AltIsas`.
type HostIsas = (OwnedTargetIsa, OwnedTargetIsa, OwnedTargetIsa);

/// The host's ISAs, made once per process: detecting the CPU's features and building an ISA's tables
/// is a good part of compiling a small program.
fn host_isas() -> Result<HostIsas, JitError> {
    static HOST: std::sync::OnceLock<HostIsas> = std::sync::OnceLock::new();
    if let Some(isas) = HOST.get() {
        return Ok(isas.clone());
    }
    let isas =
        (host_isa("speed", "backtracking")?, host_isa("none", "backtracking")?, host_isa("speed", "single_pass")?);
    Ok(HOST.get_or_init(|| isas).clone())
}

impl JitProgram {
    /// Compiles the programs of `linked` for the host.
    pub(crate) fn compile(
        linked: &Linked,
        checked: bool,
        metered: bool,
        verified: bool,
    ) -> Result<JitProgram, JitError> {
        let (isa, large, small) = host_isas()?;
        let big_endian = isa.endianness() == cranelift_codegen::ir::Endianness::Big;
        let mut builder = JITBuilder::with_isa(isa, default_libcall_names());
        builder.symbol(runtime::names::CALL_HELPER, runtime::call_helper as *const u8);
        builder.symbol(runtime::names::REGION_CHECK, runtime::region_check as *const u8);
        builder.symbol(runtime::names::TAIL_CALL, runtime::tail_call as *const u8);
        builder.symbol(runtime::names::PACKET_LOAD, runtime::packet_load as *const u8);
        builder.symbol(runtime::names::HASH_MAP_OP, runtime::hash_map_op as *const u8);
        // The copy loops' libcall, resolved here rather than looked up in the process's symbols.
        builder.symbol("memmove", runtime::memmove as *const u8);
        #[cfg(target_arch = "x86_64")]
        builder.memory_provider(alloc::boxed::Box::new(code_memory::PooledCode::default()));
        let mut module = JITModule::new(builder);
        let opts = Options {
            checked,
            metered,
            big_endian,
            uses_stack: linked.uses_stack(),
            may_grant: linked.may_grant(),
            far_calls: true,
            verified: verified
                && linked.programs().iter().all(|p| {
                    (0..p.program().instructions().len()).all(|i| p.resolved(i) != crate::link::Resolved::TailCall)
                }),
        };
        let mut rt = translate::declare_runtime(&mut module)?;
        rt.inline = translate::InlineLookups::for_env(linked);
        if rt.inline.hashes.iter().any(Option::is_some) {
            rt.inline.hash_map_op = Some(translate::declare_hash_map_op(&mut module)?);
        }
        let regions = linked.regions();
        let mut compiled = Vec::with_capacity(linked.programs().len());
        for (i, p) in linked.programs().iter().enumerate() {
            let name = format!("bpf_prog{i}");
            compiled.push(translate::compile_program(
                &mut module,
                p,
                // Few regions are checked inline; many would bloat every check site: the runtime does those.
                (regions.len() <= MAX_INLINE_REGIONS).then_some(regions),
                &rt,
                opts,
                &name,
                Linkage::Local,
                translate::AltIsas { large: &*large, small: Some(&*small) },
            )?);
        }
        module.finalize_definitions().map_err(|e| JitError::Codegen(format!("{e}")))?;
        let entries = compiled
            .iter()
            .map(|c| {
                let code = module.get_finalized_function(c.entry);
                // SAFETY: `code` is a function compiled above with the signature of `EntryFn`
                // (`translate::bpf_signature`: seven i64 parameters, one i64 result, the default
                // calling convention of the host, which is `extern "C"`).
                unsafe { core::mem::transmute::<*const u8, EntryFn>(code) }
            })
            .collect();
        // One frame is enough only without bpf-to-bpf calls or callbacks (a function may call itself,
        // so counting functions is not enough).
        let single_frame = linked.programs().iter().all(|p| {
            p.callbacks().is_empty()
                && p.program().instructions().iter().all(|i| !matches!(i, crate::isa::Instruction::CallLocal { .. }))
        });
        let context_free = compiled.iter().all(|c| !c.reads_context);
        Ok(JitProgram { module: Some(module), entries, entry: linked.entry(), opts, single_frame, context_free })
    }

    /// Runs the entry program on `mem`.
    #[inline]
    pub(crate) fn run(&self, setup: &JitSetup<'_>, mem: &mut [u8], budget: u64) -> Result<u64, ExecError> {
        if self.context_free {
            return Ok(self.run_without_context(setup, mem));
        }
        if self.single_frame {
            self.run_with_stack::<FRAME_SIZE>(setup, mem, budget)
        } else {
            self.run_with_frames(setup, mem, budget)
        }
    }

    /// Runs code that reads no context (see `context_free`).
    #[inline]
    fn run_without_context(&self, setup: &JitSetup<'_>, mem: &mut [u8]) -> u64 {
        DirectRun { entry: self.entries[self.entry], uses_stack: setup.linked.uses_stack() }.run(mem)
    }

    /// The way to run this code without a context, when it reads none.
    pub(crate) fn direct(&self, linked: &Linked) -> Option<DirectRun> {
        self.context_free.then(|| DirectRun { entry: self.entries[self.entry], uses_stack: linked.uses_stack() })
    }

    /// Runs with a stack of every frame, out of line: its 4 KiB would make every caller's frame
    /// that large (and probed), also for programs with one frame.
    #[inline(never)]
    fn run_with_frames(&self, setup: &JitSetup<'_>, mem: &mut [u8], budget: u64) -> Result<u64, ExecError> {
        self.run_with_stack::<{ FRAME_SIZE * MAX_FRAMES }>(setup, mem, budget)
    }

    /// Runs with a stack of `STACK` bytes (whole frames; the entry frame at the top).
    #[inline]
    fn run_with_stack<const STACK: usize>(
        &self,
        setup: &JitSetup<'_>,
        mem: &mut [u8],
        budget: u64,
    ) -> Result<u64, ExecError> {
        #[repr(C, align(16))]
        struct Stack<const N: usize>([MaybeUninit<u8>; N]);
        let mut stack = Stack::<STACK>([MaybeUninit::uninit(); STACK]);
        let stack_ptr = stack.0.as_mut_ptr().cast::<u8>();
        let stack_base = stack_ptr.expose_provenance() as u64;
        let stack_hi = stack_base + STACK as u64;
        if setup.linked.uses_stack() {
            // SAFETY: the entry frame is the last FRAME_SIZE bytes of the buffer just declared.
            unsafe { core::ptr::write_bytes(stack_ptr.add(STACK - FRAME_SIZE), 0, FRAME_SIZE) };
        }

        let mem_len = mem.len() as u64;
        let mem_base = if mem.is_empty() { 0 } else { mem.as_mut_ptr().expose_provenance() as u64 };
        // A local of its own, never moved: its slots are written only when a helper grants memory.
        let mut grants = Grants::new();
        let mut ctx = JitContext {
            mem_base,
            mem_len,
            stack_base,
            stack_hi,
            budget,
            status: status::OK,
            err_pc: 0,
            err_addr: 0,
            err_len: 0,
            err_write: 0,
            host: HostState {
                setup,
                program: self,
                tail_calls: 0,
                grants: &mut grants,
                failure: None,
                iter_keys: None,
            },
        };
        let entry = self.entries[self.entry];
        // SAFETY: `entry` was compiled for this host with the `EntryFn` signature. Its memory accesses
        // are checked against the context's regions in checked mode, and vouched for by the host (an
        // `unsafe` builder call) in unchecked mode. The context, host state and stack outlive the call.
        let r0 = unsafe { entry(&mut ctx, mem_base, mem_len, 0, 0, 0, stack_hi) };
        if !ctx.host.grants.is_empty() {
            // Records the program still holds are discarded, so that they never block the consumer.
            release_grants(ctx.host.grants, setup.linked.env().maps());
        }
        if ctx.status == status::OK {
            if ctx.host.failure.is_none() && ctx.host.iter_keys.is_none() {
                // Nothing in the context owns anything: leaving it without its drop glue saves an
                // out-of-line call, a sixth of what one run of a trivial program costs.
                core::mem::forget(ctx);
            }
            return Ok(r0);
        }
        let pc = ctx.err_pc as usize;
        match ctx.status {
            status::OK => Ok(r0),
            status::EXIT_ZERO => Ok(0),
            status::OUT_OF_BOUNDS => {
                Err(ExecError::OutOfBounds { pc, addr: ctx.err_addr, len: ctx.err_len, write: ctx.err_write != 0 })
            }
            status::MISALIGNED => Err(ExecError::MisalignedAtomic { pc, addr: ctx.err_addr }),
            status::BUDGET => Err(ExecError::BudgetExhausted { pc }),
            status::CALL_DEPTH => Err(ExecError::CallDepthExceeded { pc }),
            _ => Err(match ctx.host.failure.take() {
                Some(Failure::Error(e)) => e,
                Some(Failure::Panic(panic)) => std::panic::resume_unwind(panic),
                None => ExecError::Helper {
                    pc,
                    id: 0,
                    source: crate::HelperError::Failed("the runtime reported an error without details".into()),
                },
            }),
        }
    }
}

/// Compiled code that reads no context (`JitProgram::direct`): it calls nothing, tests nothing and
/// cannot fail, so it runs without a context, host state or status to look at afterwards. It has one
/// frame (a call to a function passes the context along). Valid while its `JitProgram` lives.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DirectRun {
    entry: EntryFn,
    uses_stack: bool,
}

impl DirectRun {
    /// Runs the code on `mem`.
    #[inline]
    pub(crate) fn run(&self, mem: &mut [u8]) -> u64 {
        #[repr(C, align(16))]
        struct Stack([MaybeUninit<u8>; FRAME_SIZE]);
        let mut stack = Stack([MaybeUninit::uninit(); FRAME_SIZE]);
        let stack_ptr = stack.0.as_mut_ptr().cast::<u8>();
        if self.uses_stack {
            // SAFETY: the frame is the buffer just declared, FRAME_SIZE bytes.
            unsafe { core::ptr::write_bytes(stack_ptr, 0, FRAME_SIZE) };
        }
        let stack_hi = stack_ptr.expose_provenance() as u64 + FRAME_SIZE as u64;
        let mem_len = mem.len() as u64;
        let mem_base = if mem.is_empty() { 0 } else { mem.as_mut_ptr().expose_provenance() as u64 };
        // SAFETY: `entry` was compiled for this host with the `EntryFn` signature, and its module lives
        // as long as the `JitProgram` this came from (the caller keeps it). The code never reads its
        // context argument (checked on its optimised IR when it was compiled), so a null one is never
        // dereferenced; its memory accesses are vouched for as in `JitProgram::run_with_stack`.
        unsafe { (self.entry)(core::ptr::null_mut(), mem_base, mem_len, 0, 0, 0, stack_hi) }
    }
}

/// Compiles programs ahead of time for a chosen target: `JitBuilder::target("aarch64-unknown-linux-gnu")`,
/// or [`JitBuilder::host`] for this machine's triple.
#[derive(Debug, Clone)]
pub struct JitBuilder {
    target: String,
    checked: bool,
}

impl JitBuilder {
    /// Compiles for the machine this runs on.
    pub fn host() -> JitBuilder {
        JitBuilder { target: String::from(host_triple()), checked: true }
    }

    /// Compiles for `triple` (x86_64, aarch64, riscv64gc or s390x Linux triples, for example).
    pub fn target(triple: &str) -> Result<JitBuilder, JitError> {
        let b = JitBuilder { target: String::from(triple), checked: true };
        b.compile_object(&[], &Env::new())?;
        Ok(b)
    }

    /// Whether the code checks memory accesses (the default), or trusts the programs.
    pub fn checked(mut self, checked: bool) -> JitBuilder {
        self.checked = checked;
        self
    }

    /// The target triple.
    pub fn triple(&self) -> &str {
        &self.target
    }

    /// Compiles `programs` (exported as their names) into an object file; see [`aot`].
    pub fn compile_object(&self, programs: &[(&str, &Program)], env: &Env) -> Result<Vec<u8>, JitError> {
        aot::compile_object(programs, env, &self.target, self.checked)
    }
}

/// The triple of the machine this runs on, as far as this build knows it.
fn host_triple() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "aarch64-unknown-linux-gnu"
    } else if cfg!(target_arch = "riscv64") {
        "riscv64gc-unknown-linux-gnu"
    } else if cfg!(target_arch = "s390x") {
        "s390x-unknown-linux-gnu"
    } else {
        "x86_64-unknown-linux-gnu"
    }
}
