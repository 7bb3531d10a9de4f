//! Translation of a [`Program`] into Cranelift IR: one Cranelift function per BPF function, the BPF
//! registers as Cranelift `Variable`s, the semantics of the interpreter instruction by instruction.
//!
//! Every function has the signature `(ctx, r1, r2, r3, r4, r5, fp) -> r0`, where `fp` is the top of its
//! 512-byte frame in the execution's stack. The stack is one contiguous buffer, laid out as the
//! interpreter lays it out, so checked mode tests exactly the same regions (input, live frames, then the
//! host's regions through a runtime call) and leaves through one error block per function that stores
//! the instruction index. Errors raised in callees and runtime functions travel back through the
//! context's status word, which callers test after each call.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::condcodes::{CondCode, IntCC};
use cranelift_codegen::ir::{
    types, AbiParam, AtomicRmwOp, Block, BlockArg, DebugTag, ExtFuncData, ExternalName, FuncRef, InstBuilder,
    MemFlagsData, SigRef, Signature, StackSlot, StackSlotData, StackSlotKind, Type, UserExternalName, UserFuncName,
    Value,
};
use cranelift_codegen::isa::TargetIsa;
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_module::{FuncId, Linkage, Module, ModuleReloc, ModuleRelocTarget};

use super::groups::{self, Plan};
use super::ifconv::{self, Diamond};
use super::known::{Facts, Known};
use super::placement;
use super::runtime::{names, offset, status};
use super::JitError;
use crate::helpers::standard::DirectHash;
use crate::isa::{AluOp, AtomicOp, ByteOrder, Cond, Instruction, Operand, PacketMode, Reg, Size, SxWidth, Width};
use crate::link::{LinkedProgram, Resolved};
use crate::memory::{Region, FRAME_SIZE};
use crate::program::copy_loop::{self, CopyLoop};
use crate::program::{Cfg, Function};

const I64: Type = types::I64;
const I32: Type = types::I32;

/// Set in the `pc` argument of `ebpf_vm_call_helper` for `callx`: `which` is then the register's value.
pub(crate) const CALLX_FLAG: usize = 1 << 63;
/// Set in the `pc` argument of `ebpf_vm_call_helper` for a step of `bpf_for_each_map_elem` (see
/// `runtime::for_each_step`).
pub(crate) const FOR_EACH_STEP_FLAG: usize = 1 << 62;

/// How to compile.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    /// Emit the region checks of checked mode.
    pub(crate) checked: bool,
    /// Count instructions against the budget in the context.
    pub(crate) metered: bool,
    /// The target stores integers big-endian (`le` conversions swap, `be` ones do not).
    pub(crate) big_endian: bool,
    /// Some program names r10: the stack is reachable, and frames are zeroed. Otherwise no access may
    /// go to the stack.
    pub(crate) uses_stack: bool,
    /// Helpers may hand the execution memory (ring-buffer records): checked accesses outside the known
    /// regions ask the runtime before failing.
    pub(crate) may_grant: bool,
    /// Calls between functions go through their absolute address: the in-process JIT's memory may place
    /// two functions further apart than a PC-relative call reaches (±2 GiB on x86_64, ±128 MiB on
    /// aarch64), and its relocations panic then.
    pub(crate) far_calls: bool,
    /// The verifier proved the programs safe and none makes a tail call: calls stay within the frames
    /// the stack has (a tail call in a called function would start its target's calls deeper than the
    /// verifier counted), and a function that calls nothing cannot fail (so its caller need not look at
    /// the status after it).
    pub(crate) verified: bool,
}

/// The runtime functions, declared in a module, and what compiled code may do without them.
pub(crate) struct Runtime {
    /// By [`Rt`]: each function (the hash-map call only where `inline` calls maps) and its signature.
    funcs: [(FuncId, Signature); 4],
    /// The signature of compiled BPF functions.
    bpf_sig: Signature,
    /// Map lookups compiled inline (none for ahead-of-time code, which outlives the maps' addresses).
    pub(crate) inline: InlineLookups,
}

/// Map helpers that compiled code carries out itself or calls directly, as the kernel's JITs do.
/// Where the standard `bpf_map_lookup_elem` is called on a shared array map that `r1` is known to
/// name, the value's address is the key's index times the stride past the map's first value, or null
/// past the end. Where the standard lookup, update or delete is called on a hash map `r1` is known to
/// name, the code calls the map's own function (`runtime::hash_map_op`), not the helper.
#[derive(Debug, Default, Clone)]
pub(crate) struct InlineLookups {
    /// The index of the standard `bpf_map_lookup_elem` in the environment's helpers.
    pub(crate) helper: Option<u32>,
    /// The indexes of the standard `bpf_map_update_elem` and `bpf_map_delete_elem`.
    pub(crate) update: Option<u32>,
    pub(crate) delete: Option<u32>,
    /// By map index: the layout of each shared array map.
    pub(crate) arrays: Vec<Option<crate::maps::ArrayLayout>>,
    /// By map index: each hash map compiled code may call directly.
    pub(crate) hashes: Vec<Option<DirectHash>>,
    /// The runtime function that carries out calls on hash maps (declared for in-process code only).
    pub(crate) hash_map_op: Option<(FuncId, Signature)>,
}

impl InlineLookups {
    /// What code for `linked` may look up inline or call directly: the maps live as long as
    /// `linked`, and array values never move.
    pub(crate) fn for_env(linked: &crate::link::Linked) -> InlineLookups {
        use crate::helpers::MapOp;
        let env = linked.env();
        let find = |op| env.helpers().iter().position(|h| h.map_op == Some(op)).map(|i| i as u32);
        let arrays = env
            .maps()
            .iter()
            .map(|m| m.as_any().downcast_ref::<crate::maps::ArrayMap>().and_then(|a| a.inline_layout()))
            .collect();
        let hashes = env.maps().iter().map(|m| DirectHash::of(m.as_ref())).collect();
        InlineLookups {
            helper: find(MapOp::Lookup),
            update: find(MapOp::Update),
            delete: find(MapOp::Delete),
            arrays,
            hashes,
            hash_map_op: None,
        }
    }
}

fn sig<M: Module>(module: &M, params: usize, ret: bool) -> Signature {
    let mut s = module.make_signature();
    s.params.extend((0..params).map(|_| AbiParam::new(I64)));
    if ret {
        s.returns.push(AbiParam::new(I64));
    }
    s
}

/// The signature of a compiled BPF function.
pub(crate) fn bpf_signature<M: Module>(module: &M) -> Signature {
    sig(module, 7, true)
}

/// Declares the runtime functions as imports.
pub(crate) fn declare_runtime<M: Module>(module: &mut M) -> Result<Runtime, JitError> {
    let mut import = |name: &str, params: usize| {
        let s = sig(module, params, true);
        let id = module.declare_function(name, Linkage::Import, &s).map_err(|e| JitError::Codegen(format!("{e}")))?;
        Ok::<_, JitError>((id, s))
    };
    Ok(Runtime {
        funcs: [
            import(names::CALL_HELPER, 9)?,
            import(names::REGION_CHECK, 4)?,
            import(names::TAIL_CALL, 3)?,
            import(names::PACKET_LOAD, 3)?,
        ],
        bpf_sig: bpf_signature(module),
        inline: InlineLookups::default(),
    })
}

/// The runtime functions compiled code calls.
#[derive(Debug, Clone, Copy)]
enum Rt {
    CallHelper,
    RegionCheck,
    TailCall,
    PacketLoad,
    HashMapOp,
}

/// Declares the runtime function compiled code calls hash maps through (in-process code only: its
/// calls embed the maps' addresses).
pub(crate) fn declare_hash_map_op<M: Module>(module: &mut M) -> Result<(FuncId, Signature), JitError> {
    let s = sig(module, 6, true);
    let id = module
        .declare_function(names::HASH_MAP_OP, Linkage::Import, &s)
        .map_err(|e| JitError::Codegen(format!("{e}")))?;
    Ok((id, s))
}

/// Functions with more instructions than this are compiled without Cranelift's optimisations (with the
/// `quick` ISA): its e-graph pass takes time that grows faster than the function's size (6 s for
/// 300,000 instructions, against 0.9 s unoptimised), and a hostile program must not hold the host.
pub(crate) const LARGE_FUNCTION: usize = 16_384;

/// A program's entry function, when it is straight-line (no jumps) and has at most this many
/// instructions, is compiled with Cranelift's single-pass register allocator (the `small` ISA of
/// [`AltIsas`]): the backtracking allocator's setup is a third of what compiling a trivial program
/// costs. The single-pass allocator spills every value live across a block boundary and reaches for
/// callee-saved registers (which the function then saves and restores), so it gets only code that runs
/// once per execution: loops, branches and subprograms (which calls in loops may run many times) keep
/// the backtracking allocator.
pub(crate) const SMALL_FUNCTION: usize = 64;

/// The ISAs, besides the module's own, that functions of some shapes are compiled for.
#[derive(Clone, Copy)]
pub(crate) struct AltIsas<'a> {
    /// For functions larger than [`LARGE_FUNCTION`]: the same target without optimisation.
    pub(crate) large: &'a dyn TargetIsa,
    /// For straight-line entry functions up to [`SMALL_FUNCTION`] instructions: the same target with
    /// the single-pass register allocator; `None` compiles them for the module's ISA.
    pub(crate) small: Option<&'a dyn TargetIsa>,
}

/// Compiles `program` into `module` as functions named `{prefix}_{start}` (the entry function with
/// `entry_linkage`) and returns the entry function's id. Functions larger than [`LARGE_FUNCTION`], and
/// small straight-line entry functions ([`SMALL_FUNCTION`]), are compiled for one of `alt`.
/// `regions`: the host regions of checked mode, when known at compile time (the JIT; they are then checked
/// inline), or `None` to ask the runtime function (ahead-of-time code).
/// What [`compile_program`] made.
#[derive(Clone, Copy)]
pub(crate) struct Compiled {
    /// The entry function.
    pub(crate) entry: FuncId,
    /// Whether any function of the program, as compiled, reads its context argument. Code that does
    /// not cannot call a helper, test an access, count a budget or report an error: the JIT runs it
    /// without a context.
    pub(crate) reads_context: bool,
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn compile_program<M: Module>(
    module: &mut M,
    linked: &LinkedProgram,
    regions: Option<&[Region]>,
    rt: &Runtime,
    opts: Options,
    prefix: &str,
    entry_linkage: Linkage,
    alt: AltIsas<'_>,
) -> Result<Compiled, JitError> {
    let program = linked.program();
    let signature = bpf_signature(module);
    let mut ids = BTreeMap::new();
    for (i, f) in program.functions().iter().enumerate() {
        let name = if i == 0 { String::from(prefix) } else { format!("{prefix}_{}", f.start) };
        let linkage = if i == 0 { entry_linkage } else { Linkage::Local };
        let id = module.declare_function(&name, linkage, &signature).map_err(|e| JitError::Codegen(format!("{e}")))?;
        ids.insert(f.start, id);
    }
    let cfg = linked.cfg();
    // The contexts of the last compilation on this thread, cleared: their buffers (the register
    // allocator's above all) are reused, not allocated again for every program.
    let (mut ctx, mut fctx) =
        CONTEXTS.with(|c| c.take()).unwrap_or_else(|| (Context::new(), FunctionBuilderContext::new()));
    module.clear_context(&mut ctx);
    let result =
        compile_functions(module, linked, cfg, regions, rt, opts, prefix, alt, &ids, &signature, &mut ctx, &mut fctx);
    module.clear_context(&mut ctx);
    CONTEXTS.with(|c| c.set(Some((ctx, fctx))));
    Ok(Compiled { entry: ids[&0], reads_context: result? })
}

std::thread_local! {
    /// See `compile_program`.
    static CONTEXTS: core::cell::Cell<Option<(Context, FunctionBuilderContext)>> = const { core::cell::Cell::new(None) };
}

/// Translates and compiles every function of `linked` (see `compile_program`); whether any of them
/// reads its context argument.
#[allow(clippy::too_many_arguments)]
fn compile_functions<M: Module>(
    module: &mut M,
    linked: &LinkedProgram,
    cfg: &Cfg,
    regions: Option<&[Region]>,
    rt: &Runtime,
    opts: Options,
    prefix: &str,
    alt: AltIsas<'_>,
    ids: &BTreeMap<usize, FuncId>,
    signature: &Signature,
    ctx: &mut Context,
    fctx: &mut FunctionBuilderContext,
) -> Result<bool, JitError> {
    let program = linked.program();
    let mut reads_context = false;
    // A budget counts every instruction a loop runs: metered code runs its copy loops as written.
    let copies = if opts.metered { Vec::new() } else { copy_loop::find(program) };
    for (fi, f) in program.functions().iter().enumerate() {
        let id = ids[&f.start];
        ctx.func.signature = signature.clone();
        ctx.func.name = UserFuncName::user(0, id.as_u32());
        let unit = Unit { linked, cfg, index: fi, f: *f, copies: &copies };
        translate_function(module, &mut ctx.func, fctx, unit, regions, rt, ids, opts)?;
        // EBPF_VM_JIT_DISASM=1 prints the machine code of every compiled function, `ir` its Cranelift
        // IR before optimisation (for debugging).
        let knob = disasm_knob();
        let disasm = knob == Some("1");
        if knob == Some("ir") {
            std::eprintln!("; {prefix} function at slot {}\n{}", f.start, ctx.func.display());
        }
        ctx.set_disasm(disasm);
        let range = program.instruction_range(*f);
        let isa = if range.len() > LARGE_FUNCTION {
            Some(alt.large)
        } else if fi == 0
            && range.len() <= SMALL_FUNCTION
            && program.instructions()[range.clone()]
                .iter()
                .enumerate()
                .all(|(i, insn)| insn.branch_target(range.start + i).is_none())
        {
            alt.small
        } else {
            None
        };
        define_placed(module, id, ctx, isa)?;
        if let Some(code) = ctx.compiled_code().and_then(|c| c.vcode.as_ref()).filter(|_| disasm) {
            std::eprintln!("; {prefix} function at slot {}\n{code}", f.start);
        }
        // After compiling, `ctx.func` is the function as optimised, its unreachable blocks (the error
        // exit of code that tests nothing) removed.
        reads_context |= reads_first_parameter(&ctx.func);
        module.clear_context(ctx);
    }
    Ok(reads_context)
}

/// Whether any instruction of `func` uses its first parameter.
fn reads_first_parameter(func: &cranelift_codegen::ir::Function) -> bool {
    let Some(entry) = func.layout.entry_block() else { return true };
    let Some(&first) = func.dfg.block_params(entry).first() else { return false };
    func.layout.blocks().any(|block| {
        func.layout
            .block_insts(block)
            .any(|inst| func.dfg.inst_values(inst).any(|v| func.dfg.resolve_aliases(v) == first))
    })
}

/// `EBPF_VM_JIT_DISASM` (`1` or `ir`), read once per process.
fn disasm_knob() -> Option<&'static str> {
    static KNOB: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    KNOB.get_or_init(|| std::env::var("EBPF_VM_JIT_DISASM").ok()).as_deref()
}

/// Compiles `ctx` and defines it as `id`, placed so that its hottest loop touches as few cache lines
/// as it can (see `placement`).
fn define_placed<M: Module>(
    module: &mut M,
    id: FuncId,
    ctx: &mut Context,
    isa: Option<&dyn TargetIsa>,
) -> Result<(), JitError> {
    let arch = module.isa().triple().architecture;
    let isa = isa.unwrap_or(module.isa());
    ctx.compile(isa, &mut ControlPlane::default()).map_err(|e| JitError::Codegen(format!("{}", e.inner)))?;
    let code = ctx.compiled_code().ok_or_else(|| JitError::Codegen("no compiled code".into()))?;
    let mark = |tag| code.buffer.debug_tags().find(|t| t.tags.contains(&DebugTag::User(tag))).map(|t| t.offset);
    let pad = match (mark(placement::HEAD_TAG), mark(placement::END_TAG)) {
        (Some(head), Some(end)) => placement::padding(head, end + placement::JUMP_ALLOWANCE),
        _ => 0,
    };
    // Padding must keep the alignment the code's constants need, and have NOPs of its length.
    let nops = placement::nops(arch, pad).filter(|_| pad % code.buffer.alignment.max(1) == 0);
    let (pad, mut out) = match nops {
        Some(nops) => (pad, nops),
        None => (0, Vec::new()),
    };
    out.extend_from_slice(code.code_buffer());
    let relocs: Vec<ModuleReloc> = code
        .buffer
        .relocs()
        .iter()
        .map(|r| {
            let mut m = ModuleReloc::from_mach_reloc(r, &ctx.func, id);
            m.offset += pad;
            if let ModuleRelocTarget::FunctionOffset(_, off) = &mut m.name {
                *off += pad;
            }
            m
        })
        .collect();
    let align = u64::from(code.buffer.alignment).max(u64::from(placement::LINE));
    module.define_function_bytes(id, align, &out, &relocs).map_err(|e| JitError::Codegen(format!("{e:?}")))
}

/// One BPF function to translate, with the program it belongs to and the program's control-flow graph.
#[derive(Clone, Copy)]
pub(crate) struct Unit<'a> {
    pub(crate) linked: &'a LinkedProgram,
    pub(crate) cfg: &'a Cfg,
    /// The function's index in `Program::functions`.
    pub(crate) index: usize,
    pub(crate) f: Function,
    /// The program's byte-copy loops (see `copy_loop`).
    pub(crate) copies: &'a [CopyLoop],
}

/// The input's and the live frames' bounds, computed once per function for checked mode.
#[derive(Clone, Copy)]
struct Bounds {
    mem_base: Value,
    mem_len: Value,
    /// The context and the frame pointer, saved at entry for cold code (see `stack_bounds`).
    saved: StackSlot,
    /// `in_bound[i]`: an access of `1 << i` bytes at offset `off` of the input is in bounds iff
    /// `off < in_bound[i]` (unsigned).
    in_bound: [Value; 4],
}

struct Fx<'a, 'b> {
    b: FunctionBuilder<'b>,
    cfg: &'a Cfg,
    /// The loop to place (header, last backward jump), if any.
    hot_loop: Option<(usize, Option<usize>)>,
    /// The byte-copy loops of this function, by the slot of their backward jump.
    copies: BTreeMap<usize, &'a CopyLoop>,
    /// The target's calling convention and pointer width, for the `memmove` of copy loops.
    frontend: cranelift_codegen::isa::TargetFrontendConfig,
    opts: Options,
    linked: &'a LinkedProgram,
    /// Host regions known at compile time (checked inline), or `None` (ask the runtime).
    regions: Option<&'a [Region]>,
    regs: [Variable; 11],
    budget: Option<Variable>,
    ctx: Value,
    fp: Value,
    /// What checked mode compares against (`None` in unchecked mode).
    bounds: Option<Bounds>,
    err: Block,
    leave: Block,
    blocks: BTreeMap<usize, Block>,
    /// Conditional jumps translated into selects, by slot.
    diamonds: BTreeMap<usize, Diamond>,
    /// Accesses whose bounds checks are shared (checked mode), by slot.
    plans: BTreeMap<usize, Plan>,
    /// Per group of shared checks: 1 if the hull test passed.
    group_flags: Vec<Variable>,
    funcs: BTreeMap<usize, FuncRef>,
    /// The runtime functions, by [`Rt`], imported at their first call: declaring an import costs
    /// Cranelift the computation of its calling convention, in every function.
    runtime: &'a Runtime,
    imports: [Option<FuncRef>; 5],
    /// The signature of BPF functions called indirectly (tail calls), imported at the first.
    bpf_sig: Option<SigRef>,
    inline: &'a InlineLookups,
    /// What checked code knows of the registers here (see `known`).
    facts: Facts,
    /// What is known on entry to the blocks (by slot) reached only from a block translated already.
    entry_facts: BTreeMap<usize, Facts>,
    /// What the call being translated returns, if it is a map lookup compiled here.
    call_result: Known,
    /// Per register, the last zero-extension `widen` made that was written to it, and the 32-bit value
    /// it extends: a 32-bit read of the register, while it still holds that extension, takes the narrow
    /// value instead of a new truncation (ALU32 code chains them: half its instructions were extensions
    /// and truncations the optimiser then removed). The narrow value is defined just before its
    /// extension, so it is available wherever the extension is.
    narrow: [Option<(Value, Value)>; 11],
    /// The last extension `widen` made, and its narrow value.
    widened: Option<(Value, Value)>,
    terminated: bool,
}

/// Whether a group of shared checks (checked mode) has members both inside `body` and outside it. A
/// copy loop finished at once skips its body's checks after the first iteration: a check after the
/// loop must not rely on a flag its body set.
fn shares_checks_beyond(plans: &BTreeMap<usize, Plan>, body: core::ops::RangeInclusive<usize>) -> bool {
    let group = |p: &Plan| match *p {
        Plan::Leader { group, .. } | Plan::Member { group } => group,
    };
    let inside: Vec<usize> = plans.range(body.clone()).map(|(_, p)| group(p)).collect();
    plans.iter().any(|(pc, p)| !body.contains(pc) && inside.contains(&group(p)))
}

fn size_index(bytes: u32) -> usize {
    bytes.trailing_zeros() as usize
}

#[allow(clippy::too_many_arguments)]
fn translate_function<M: Module>(
    module: &mut M,
    func: &mut cranelift_codegen::ir::Function,
    fctx: &mut FunctionBuilderContext,
    unit: Unit<'_>,
    regions: Option<&[Region]>,
    rt: &Runtime,
    ids: &BTreeMap<usize, FuncId>,
    opts: Options,
) -> Result<(), JitError> {
    let Unit { linked, cfg, index: fi, f, copies } = unit;
    let program = linked.program();
    // Only the functions this one calls are declared in it (declaring all of them in each would take time
    // quadratic in the number of functions).
    let mut funcs = BTreeMap::new();
    // A `bpf_loop` may call back any function whose address the program takes, wherever it took it.
    let loops = linked.iter().any(|(_, _, r)| matches!(r, Resolved::Loop { .. } | Resolved::ForEach { .. }));
    let callbacks = linked
        .callbacks()
        .iter()
        .filter(|_| loops)
        .filter_map(|&s| program.functions().iter().position(|f| f.start == s));
    for callee in cfg.callees(fi).chain(callbacks) {
        let start = program.functions()[callee].start;
        let callee = module.declare_func_in_func(ids[&start], func);
        if opts.far_calls {
            func.dfg.ext_funcs[callee].colocated = false;
        }
        funcs.insert(start, callee);
    }

    let mut b = FunctionBuilder::new(func, fctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let params = b.block_params(entry).to_vec();
    let regs: [Variable; 11] = core::array::from_fn(|_| b.declare_var(I64));
    let zero = b.ins().iconst(I64, 0);
    for (i, r) in regs.iter().enumerate() {
        let v = match i {
            1..=5 => params[i],
            10 => params[6],
            _ => zero,
        };
        b.def_var(*r, v);
    }
    let ctx = params[0];
    let fp = params[6];
    let flags = MemFlagsData::trusted();
    // Only functions that access memory need the bounds (Cranelift keeps loads it does not use).
    let accesses_memory = program.function_iter(f).any(|(_, insn)| {
        matches!(
            insn,
            Instruction::Load { .. }
                | Instruction::LoadSx { .. }
                | Instruction::Store { .. }
                | Instruction::StoreReg { .. }
                | Instruction::Atomic { .. }
        )
    });
    let bounds = (opts.checked && accesses_memory).then(|| {
        let mem_base = b.ins().load(I64, flags, ctx, offset::MEM_BASE);
        let mem_len = b.ins().load(I64, flags, ctx, offset::MEM_LEN);
        let saved = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, 16, 3));
        b.ins().stack_store(I64, ctx, saved, 0);
        b.ins().stack_store(I64, fp, saved, 8);
        let in_bound = core::array::from_fn(|i| {
            let s = 1i64 << i;
            let t = b.ins().iadd_imm_s(mem_len, 1 - s);
            let fits = b.ins().icmp_imm_s(IntCC::UnsignedGreaterThanOrEqual, mem_len, s);
            b.ins().select(fits, t, zero)
        });
        Bounds { mem_base, mem_len, saved, in_bound }
    });
    let budget = opts.metered.then(|| {
        let v = b.declare_var(I64);
        let initial = b.ins().load(I64, flags, ctx, offset::BUDGET);
        b.def_var(v, initial);
        v
    });

    let err = b.create_block();
    b.set_cold_block(err);
    for _ in 0..5 {
        b.append_block_param(err, I64);
    }
    let leave = b.create_block();
    b.set_cold_block(leave);
    // The budget counts the instructions of the path taken, so metered code keeps its branches.
    let diamonds = if opts.metered { BTreeMap::new() } else { ifconv::find(program, cfg, fi) };
    let mut absorbed = alloc::vec![false; f.end - f.start];
    for d in diamonds.values() {
        for pc in d.absorbed.clone().chain(d.absorbed_taken.clone()) {
            absorbed[pc - f.start] = true;
        }
    }
    let (plans, groups) =
        if bounds.is_some() { groups::plan(program, cfg, fi, &absorbed) } else { (BTreeMap::new(), 0) };
    let group_flags = (0..groups).map(|_| b.declare_var(I64)).collect();
    let mut blocks = BTreeMap::new();
    for block in cfg.function_blocks(fi) {
        let pc = cfg.block(block).start();
        // The first block, when no jump leads back to it, is translated into the entry block: a jump
        // between the two would be a block boundary for the register allocator, which may spill there.
        let first_without_jumps = pc == f.start && cfg.predecessors(block).len() == 0;
        if !absorbed[pc - f.start] && !first_without_jumps {
            blocks.insert(pc, b.create_block());
        }
    }

    let hot_loop = cfg.deepest(fi);
    // Copy loops whose slots translate one by one (no shared checks, no if-conversion), with both ways
    // out of the backward jump translated as blocks.
    let copies = copies
        .iter()
        .filter(|l| f.start <= l.head && l.back < f.end && (f.start..f.end).contains(&l.exit))
        .filter(|l| (l.head..=l.back).all(|pc| !absorbed[pc - f.start]))
        .filter(|l| !shares_checks_beyond(&plans, l.head..=l.back))
        .filter(|l| !diamonds.contains_key(&(l.back - 1)) && !diamonds.contains_key(&l.back))
        .filter(|l| blocks.contains_key(&l.head) && blocks.contains_key(&l.exit))
        .map(|l| (l.back, l))
        .collect();
    let mut fx = Fx {
        b,
        cfg,
        hot_loop,
        copies,
        frontend: module.target_config(),
        opts,
        linked,
        regions,
        regs,
        budget,
        ctx,
        fp,
        bounds,
        err,
        leave,
        blocks,
        diamonds,
        plans,
        group_flags,
        funcs,
        runtime: rt,
        imports: [None; 5],
        bpf_sig: None,
        inline: &rt.inline,
        facts: Facts::default(),
        entry_facts: BTreeMap::new(),
        call_result: Known::Nothing,
        narrow: [None; 11],
        widened: None,
        terminated: false,
    };
    if fx.blocks.contains_key(&f.start) {
        fx.jump_to(f.start);
    }

    for (pc, insn, resolved) in linked.function_iter(f) {
        if absorbed[pc - f.start] {
            continue;
        }
        if let Some(&block) = fx.blocks.get(&pc) {
            if !fx.terminated {
                fx.b.ins().jump(block, &[]);
            }
            fx.b.switch_to_block(block);
            fx.terminated = false;
            fx.facts = fx.entry_facts.remove(&pc).unwrap_or_default();
            if fx.hot_loop.map(|l| l.0) == Some(pc) {
                fx.mark(placement::HEAD_TAG);
            }
        } else if fx.terminated {
            // Unreachable code after a jump or exit: give it a block of its own.
            let block = fx.b.create_block();
            fx.b.switch_to_block(block);
            fx.terminated = false;
            fx.facts = Facts::default();
            fx.facts = fx.entry_facts.remove(&pc).unwrap_or_default();
        }
        fx.instruction(pc, insn, resolved)?;
    }

    // The error block: record what went wrong, then leave.
    fx.b.switch_to_block(fx.err);
    let p = fx.b.block_params(fx.err).to_vec();
    let ctx = fx.ctx;
    for (v, off) in p.iter().zip([offset::STATUS, offset::ERR_PC, offset::ERR_ADDR, offset::ERR_LEN, offset::ERR_WRITE])
    {
        fx.b.ins().store(flags, *v, ctx, off);
    }
    fx.b.ins().jump(fx.leave, &[]);
    fx.b.switch_to_block(fx.leave);
    fx.save_budget();
    let zero = fx.b.ins().iconst(I64, 0);
    fx.b.ins().return_(&[zero]);

    fx.b.seal_all_blocks();
    fx.b.finalize(module.target_config());
    Ok(())
}

impl Fx<'_, '_> {
    fn get(&mut self, r: Reg) -> Value {
        self.b.use_var(self.regs[r.index() as usize])
    }

    fn set(&mut self, r: Reg, v: Value) {
        self.narrow[r.index() as usize] = self.widened.filter(|&(wide, _)| wide == v);
        self.b.def_var(self.regs[r.index() as usize], v);
    }

    /// Marks this point of the code for `placement` with `tag`.
    fn mark(&mut self, tag: u32) {
        let mark = self.b.ins().sequence_point();
        self.b.func.debug_tags.set(mark, [DebugTag::User(tag)]);
    }

    /// Marks the way back of the backward jump at `pc` if it closes the loop to place.
    fn mark_loop_end(&mut self, pc: usize) {
        if self.hot_loop.is_some_and(|l| l.1 == Some(pc)) {
            self.mark(placement::END_TAG);
        }
    }

    fn jump_to(&mut self, pc: usize) {
        let block = self.blocks[&pc];
        self.b.ins().jump(block, &[]);
        self.terminated = true;
    }

    fn save_budget(&mut self) {
        if let Some(v) = self.budget {
            let b = self.b.use_var(v);
            self.b.ins().store(MemFlagsData::trusted(), b, self.ctx, offset::BUDGET);
        }
    }

    fn load_budget(&mut self) {
        if let Some(v) = self.budget {
            let b = self.b.ins().load(I64, MemFlagsData::trusted(), self.ctx, offset::BUDGET);
            self.b.def_var(v, b);
        }
    }

    /// Continues if `ok` is true, else leaves through the error block with these details.
    fn guard(&mut self, ok: Value, kind: u64, pc: usize, addr: Value, len: u64, write: bool) {
        let cont = self.b.create_block();
        let args = [kind as i64, pc as i64, 0, len as i64, write as i64].map(|v| self.b.ins().iconst(I64, v));
        let args = [args[0], args[1], addr, args[3], args[4]].map(BlockArg::Value);
        self.b.ins().brif(ok, cont, &[], self.err, &args);
        self.b.switch_to_block(cont);
    }

    /// After a call: leaves if the callee or runtime function set the status.
    fn check_status(&mut self) {
        let s = self.b.ins().load(I64, MemFlagsData::trusted(), self.ctx, offset::STATUS);
        let cont = self.b.create_block();
        self.b.ins().brif(s, self.leave, &[], cont, &[]);
        self.b.switch_to_block(cont);
    }

    /// Checked mode: `len` bytes at `addr` (`base + offset`) must lie in the input, the live frames, or
    /// a host region.
    ///
    /// An access through r10 inside the current frame is in bounds by construction (r10 is read-only
    /// and its frame is live while the function runs), so it is not tested. Other accesses through r10
    /// test the frames first, the rest the input first; the second test and the host regions are out of
    /// line, so the expected case costs one compare and one branch not taken.
    ///
    /// Returns the address as a value and a constant to add to it: `base` and `offset` where nothing is
    /// tested (the memory operation adds the offset itself, which keeps two instructions per access out
    /// of the function Cranelift optimises), else the tested address and 0.
    fn access(&mut self, base: Reg, offset: i16, len: u32, write: bool, pc: usize) -> (Value, i32) {
        let v = self.get(base);
        let Some(bounds) = self.bounds else { return (v, offset as i32) };
        if self.known_in_bounds(base, offset as i64, len, write) {
            // The leader of a group of shared checks tested nothing: the other members test themselves.
            if let Some(&Plan::Leader { group, .. }) = self.plans.get(&pc) {
                let zero = self.b.ins().iconst(I64, 0);
                self.b.def_var(self.group_flags[group], zero);
            }
            return (v, offset as i32);
        }
        let addr = self.b.ins().iadd_imm_s(v, offset as i64);
        self.check(base, addr, len, write, pc, bounds);
        (addr, 0)
    }

    /// The test of an access `access` could not settle at compile time.
    fn check(&mut self, base: Reg, addr: Value, len: u32, write: bool, pc: usize, bounds: Bounds) {
        let plan = self.plans.get(&pc).copied();
        if self.facts.frame_based(base) {
            // A group's test of its hull against the input would fail: each access tests the frames.
            if let Some(Plan::Leader { group, .. }) = plan {
                let zero = self.b.ins().iconst(I64, 0);
                self.b.def_var(self.group_flags[group], zero);
            }
            return self.precise_check(base, addr, len, write, pc, bounds);
        }
        match plan {
            None => self.precise_check(base, addr, len, write, pc, bounds),
            // The hull of the group, against the input; if it is not all there, the full check.
            Some(Plan::Leader { group, from, len: hull }) => {
                let flag = self.group_flags[group];
                let pass = self.b.create_block();
                let fail = self.b.create_block();
                self.b.set_cold_block(fail);
                let cont = self.b.create_block();
                let lo = self.b.ins().iadd_imm_s(addr, from);
                let off = self.b.ins().isub(lo, bounds.mem_base);
                let mem_len = bounds.mem_len;
                // off + hull <= mem_len, without overflow: off < mem_len - hull + 1 if hull <= mem_len.
                let room = self.b.ins().iadd_imm_s(mem_len, 1 - hull as i64);
                let fits = self.b.ins().icmp_imm_u(IntCC::UnsignedGreaterThanOrEqual, mem_len, hull as i64);
                let zero = self.b.ins().iconst(I64, 0);
                let bound = self.b.ins().select(fits, room, zero);
                let ok = self.b.ins().icmp(IntCC::UnsignedLessThan, off, bound);
                self.b.ins().brif(ok, pass, &[], fail, &[]);
                self.b.switch_to_block(pass);
                let one = self.b.ins().iconst(I64, 1);
                self.b.def_var(flag, one);
                self.b.ins().jump(cont, &[]);
                self.b.switch_to_block(fail);
                let zero = self.b.ins().iconst(I64, 0);
                self.b.def_var(flag, zero);
                self.precise_check_out_of_line(base, addr, len, write, pc, bounds, cont);
            }
            Some(Plan::Member { group }) => {
                let flag = self.b.use_var(self.group_flags[group]);
                let full = self.b.create_block();
                self.b.set_cold_block(full);
                let cont = self.b.create_block();
                self.b.ins().brif(flag, cont, &[], full, &[]);
                self.b.switch_to_block(full);
                self.precise_check_out_of_line(base, addr, len, write, pc, bounds, cont);
            }
        }
    }

    /// The full check of one access in a cold block, then on to `cont`, where translation goes on.
    #[allow(clippy::too_many_arguments)]
    fn precise_check_out_of_line(
        &mut self,
        base: Reg,
        addr: Value,
        len: u32,
        write: bool,
        pc: usize,
        bounds: Bounds,
        cont: Block,
    ) {
        self.precise_check(base, addr, len, write, pc, bounds);
        if let Some(block) = self.b.current_block() {
            self.b.set_cold_block(block);
        }
        self.b.ins().jump(cont, &[]);
        self.b.switch_to_block(cont);
    }

    /// The lowest address of the live frames (the current frame's bottom), and the bound an access of
    /// `len` bytes at an offset from it must stay below. Computed where they are tested, from the
    /// context and frame pointer saved on the stack: Cranelift's register allocator weighs a use in a
    /// cold block inside a loop like a use in the loop, so values kept for cold code would take the
    /// hot code's registers.
    fn stack_bounds(&mut self, bounds: Bounds, len: u32) -> (Value, Value) {
        let ctx = self.b.ins().stack_load(I64, I64, bounds.saved, 0);
        let fp = self.b.ins().stack_load(I64, I64, bounds.saved, 8);
        let stack_hi = self.b.ins().load(I64, MemFlagsData::trusted(), ctx, offset::STACK_HI);
        let lo = self.b.ins().iadd_imm_s(fp, -(FRAME_SIZE as i64));
        let size = self.b.ins().isub(stack_hi, lo);
        (lo, self.b.ins().iadd_imm_s(size, 1 - len as i64))
    }

    /// The check of one access: the input, the live frames (when programs use the stack), then the
    /// host's regions, then (when helpers may hand out memory) the runtime.
    fn precise_check(&mut self, base: Reg, addr: Value, len: u32, write: bool, pc: usize, bounds: Bounds) {
        let i = size_index(len);
        let input = (bounds.mem_base, bounds.in_bound[i]);
        let cont = self.b.create_block();
        let slow = self.b.create_block();
        self.b.set_cold_block(slow);
        // Out-of-line successes come back through a cold block of their own, so that the edge split
        // for them is not laid out between the hot check and its continuation.
        let back = self.b.create_block();
        self.b.set_cold_block(back);
        if self.opts.uses_stack {
            let try_second = self.b.create_block();
            self.b.set_cold_block(try_second);
            // Addresses from r10 are tried in the frames first, others in the input.
            let stack_first = self.facts.frame_based(base);
            let first = if stack_first { self.stack_bounds(bounds, len) } else { input };
            let off = self.b.ins().isub(addr, first.0);
            let ok = self.b.ins().icmp(IntCC::UnsignedLessThan, off, first.1);
            self.b.ins().brif(ok, cont, &[], try_second, &[]);
            self.b.switch_to_block(try_second);
            let second = if stack_first { input } else { self.stack_bounds(bounds, len) };
            let off = self.b.ins().isub(addr, second.0);
            let ok = self.b.ins().icmp(IntCC::UnsignedLessThan, off, second.1);
            self.b.ins().brif(ok, back, &[], slow, &[]);
        } else {
            // No program names r10: nothing may reach the stack.
            let off = self.b.ins().isub(addr, input.0);
            let ok = self.b.ins().icmp(IntCC::UnsignedLessThan, off, input.1);
            self.b.ins().brif(ok, cont, &[], slow, &[]);
        }
        self.b.switch_to_block(back);
        self.b.ins().jump(cont, &[]);
        self.b.switch_to_block(slow);
        let ask_runtime = match self.regions {
            Some(regions) => {
                // The regions never move while the Vm lives: compare against constants, with no call (a
                // call here would make every BPF register live across it and spill the hot loop).
                for r in regions.iter().filter(|r| (r.writable || !write) && r.len >= len as u64) {
                    let next = self.b.create_block();
                    self.b.set_cold_block(next);
                    let off = self.b.ins().iadd_imm_s(addr, (r.start as i64).wrapping_neg());
                    let ok = self.b.ins().icmp_imm_u(IntCC::UnsignedLessThan, off, (r.len + 1 - len as u64) as i64);
                    self.b.ins().brif(ok, back, &[], next, &[]);
                    self.b.switch_to_block(next);
                }
                // Memory helpers handed to this execution is known only at run time.
                self.opts.may_grant
            }
            None => true,
        };
        if ask_runtime {
            let l = self.b.ins().iconst(I64, len as i64);
            let w = self.b.ins().iconst(I64, write as i64);
            let ctx = self.b.ins().stack_load(I64, I64, bounds.saved, 0);
            let f = self.import(Rt::RegionCheck);
            let call = self.b.ins().call(f, &[ctx, addr, l, w]);
            let ok = self.b.inst_results(call)[0];
            self.guard(ok, status::OUT_OF_BOUNDS, pc, addr, len as u64, write);
        } else {
            let no = self.b.ins().iconst(I64, 0);
            self.guard(no, status::OUT_OF_BOUNDS, pc, addr, len as u64, write);
        }
        if let Some(block) = self.b.current_block() {
            self.b.set_cold_block(block);
        }
        self.b.ins().jump(back, &[]);
        self.b.switch_to_block(cont);
    }

    fn operand(&mut self, src: Operand, width: Width) -> Value {
        match (src, width) {
            (Operand::Reg(r), Width::W64) => self.get(r),
            (Operand::Reg(r), Width::W32) => {
                let v = self.get(r);
                match self.narrow[r.index() as usize] {
                    Some((wide, narrow)) if wide == v => narrow,
                    _ => self.b.ins().ireduce(I32, v),
                }
            }
            (Operand::Imm(v), Width::W64) => self.b.ins().iconst(I64, v as i64),
            (Operand::Imm(v), Width::W32) => self.b.ins().iconst(I32, v as u32 as i64),
        }
    }

    fn alu(&mut self, width: Width, op: AluOp, a: Value, b: Value) -> Value {
        let ty = if width == Width::W64 { I64 } else { I32 };
        match op {
            AluOp::Add => self.b.ins().iadd(a, b),
            AluOp::Sub => self.b.ins().isub(a, b),
            AluOp::Mul => self.mul(a, b),
            AluOp::Or => self.b.ins().bor(a, b),
            AluOp::And => self.b.ins().band(a, b),
            AluOp::Xor => self.b.ins().bxor(a, b),
            AluOp::Mov => b,
            // Cranelift shifts take the amount modulo the width, as BPF does.
            AluOp::Lsh => self.b.ins().ishl(a, b),
            AluOp::Rsh => self.b.ins().ushr(a, b),
            AluOp::Arsh => self.b.ins().sshr(a, b),
            AluOp::Div | AluOp::Mod if self.known_nonzero(b, 3) => {
                // `x / (y | 1)`: no zero divisor to define the result of.
                if op == AluOp::Div {
                    self.b.ins().udiv(a, b)
                } else {
                    self.b.ins().urem(a, b)
                }
            }
            AluOp::Div | AluOp::Mod => {
                let zero = self.b.ins().iconst(ty, 0);
                let one = self.b.ins().iconst(ty, 1);
                let is0 = self.b.ins().icmp_imm_s(IntCC::Equal, b, 0);
                let safe = self.b.ins().select(is0, one, b);
                if op == AluOp::Div {
                    let q = self.b.ins().udiv(a, safe);
                    self.b.ins().select(is0, zero, q)
                } else {
                    let r = self.b.ins().urem(a, safe);
                    self.b.ins().select(is0, a, r)
                }
            }
            AluOp::SDiv | AluOp::SMod => {
                // Cranelift traps on division by zero and on MIN / -1: both are defined in BPF.
                let zero = self.b.ins().iconst(ty, 0);
                let one = self.b.ins().iconst(ty, 1);
                let is0 = self.b.ins().icmp_imm_s(IntCC::Equal, b, 0);
                let is_m1 = self.b.ins().icmp_imm_s(IntCC::Equal, b, -1);
                let bad = self.b.ins().bor(is0, is_m1);
                let safe = self.b.ins().select(bad, one, b);
                if op == AluOp::SDiv {
                    let q = self.b.ins().sdiv(a, safe);
                    let neg = self.b.ins().ineg(a);
                    let q = self.b.ins().select(is_m1, neg, q);
                    self.b.ins().select(is0, zero, q)
                } else {
                    let r = self.b.ins().srem(a, safe);
                    let r = self.b.ins().select(is_m1, zero, r);
                    self.b.ins().select(is0, a, r)
                }
            }
        }
    }

    /// Whether `v` cannot be zero, as its definition shows: a non-zero constant, or an `or` with an
    /// operand that cannot be zero (looking `depth` definitions deep).
    fn known_nonzero(&self, v: Value, depth: u32) -> bool {
        use cranelift_codegen::ir::{InstructionData, Opcode};
        let dfg = &self.b.func.dfg;
        let Some(inst) = dfg.value_def(v).inst() else { return false };
        match dfg.insts[inst] {
            InstructionData::UnaryImm { opcode: Opcode::Iconst, imm } => {
                let bits = dfg.value_type(v).bits();
                (imm.bits() as u64) << (64 - bits) != 0
            }
            InstructionData::Binary { opcode: Opcode::Bor, args } if depth > 0 => {
                args.iter().any(|&x| self.known_nonzero(x, depth - 1))
            }
            _ => false,
        }
    }

    /// `a * b`; a constant `b` of the form 2^k or 2^k + 1 (clang's `x * 3`, `x * 5`, `x * 9`) becomes a
    /// shift and an add, one cycle where a multiplication takes three and sits on loop-carried chains.
    fn mul(&mut self, a: Value, b: Value) -> Value {
        let ty = self.b.func.dfg.value_type(a);
        let bits = ty.bits();
        let c = self.b.func.dfg.value_def(b).inst().and_then(|i| match self.b.func.dfg.insts[i] {
            cranelift_codegen::ir::InstructionData::UnaryImm { imm, .. } => Some(imm.bits() as u64),
            _ => None,
        });
        let c = c.map(|c| if bits == 32 { c & 0xffff_ffff } else { c });
        match c {
            Some(c) if c.is_power_of_two() => self.b.ins().ishl_imm_u(a, c.trailing_zeros() as i64),
            Some(c) if c > 2 && (c - 1).is_power_of_two() && (c - 1).trailing_zeros() < bits => {
                let s = self.b.ins().ishl_imm_u(a, (c - 1).trailing_zeros() as i64);
                self.b.ins().iadd(a, s)
            }
            _ => self.b.ins().imul(a, b),
        }
    }

    fn widen(&mut self, v: Value, width: Width) -> Value {
        match width {
            Width::W64 => v,
            Width::W32 => {
                let wide = self.b.ins().uextend(I64, v);
                self.widened = Some((wide, v));
                wide
            }
        }
    }

    fn budget_step(&mut self, pc: usize) {
        let Some(v) = self.budget else { return };
        let b = self.b.use_var(v);
        let ok = self.b.ins().icmp_imm_s(IntCC::NotEqual, b, 0);
        self.guard(ok, status::BUDGET, pc, b, 0, false);
        let b = self.b.ins().iadd_imm_s(b, -1);
        self.b.def_var(v, b);
    }

    /// Runtime function `which`, imported into this function at its first use.
    fn import(&mut self, which: Rt) -> FuncRef {
        if let Some(f) = self.imports[which as usize] {
            return f;
        }
        let (id, sig) = match which {
            Rt::HashMapOp => self.runtime.inline.hash_map_op.as_ref(),
            _ => self.runtime.funcs.get(which as usize),
        }
        .expect("declared: only code that may call maps directly asks for the hash-map call");
        let signature = self.b.import_signature(sig.clone());
        let name = self.b.func.declare_imported_user_function(UserExternalName { namespace: 0, index: id.as_u32() });
        // As `Module::declare_func_in_func` does for an import.
        let f = self.b.import_function(ExtFuncData {
            name: ExternalName::user(name),
            signature,
            colocated: false,
            patchable: false,
        });
        self.imports[which as usize] = Some(f);
        f
    }

    fn call_runtime(&mut self, f: FuncRef, args: &[Value]) -> Value {
        let call = self.b.ins().call(f, args);
        self.b.inst_results(call)[0]
    }

    fn instruction(&mut self, pc: usize, insn: &Instruction, resolved: Resolved) -> Result<(), JitError> {
        let result = self.facts.result_of(insn);
        self.call_result = Known::Nothing;
        self.translate_instruction(pc, insn, resolved)?;
        let result = if insn.is_call() { self.call_result } else { result };
        self.facts.apply(insn, result);
        Ok(())
    }

    /// Whether `len` bytes at `base + offset` need no check: inside the current frame (see `known`),
    /// or inside a map value the register is known to point to.
    fn known_in_bounds(&self, base: Reg, offset: i64, len: u32, write: bool) -> bool {
        self.facts.in_frame(base, offset, len) || self.facts.in_value(base, offset, len, write)
    }

    /// Hands what is known at a jump at `pc` (to `to`) to the block at `to` when this is its only way
    /// in, and it is translated later.
    fn pass_facts(&mut self, pc: usize, to: usize, facts: Facts) {
        let (Some(from), Some(block)) = (self.cfg.block_of_pc(pc), self.cfg.block_of_pc(to)) else { return };
        let only_way_in = {
            let mut preds = self.cfg.predecessors(block);
            preds.len() == 1 && preds.next() == Some(from)
        };
        if to > pc && only_way_in && self.cfg.block(block).start() == to {
            self.entry_facts.insert(to, facts);
        }
    }

    fn translate_instruction(&mut self, pc: usize, insn: &Instruction, resolved: Resolved) -> Result<(), JitError> {
        self.budget_step(pc);
        let flags = MemFlagsData::new();
        match *insn {
            Instruction::Alu { width, op, dst, src } => {
                // A move does not read its destination: reading it anyway would keep the register's
                // old value alive, as a block parameter through every loop around the move.
                let b = self.operand(src, width);
                let r = if op == AluOp::Mov {
                    b
                } else {
                    let a = self.operand(Operand::Reg(dst), width);
                    self.alu(width, op, a, b)
                };
                let r = self.widen(r, width);
                self.set(dst, r);
            }
            Instruction::Neg { width, dst } => {
                let a = self.operand(Operand::Reg(dst), width);
                let r = self.b.ins().ineg(a);
                let r = self.widen(r, width);
                self.set(dst, r);
            }
            Instruction::MovSx { width, from, dst, src } => {
                let v = self.get(src);
                let narrow = match from {
                    SxWidth::B8 => types::I8,
                    SxWidth::B16 => types::I16,
                    SxWidth::B32 => I32,
                };
                let n = self.b.ins().ireduce(narrow, v);
                let r = match width {
                    Width::W64 => self.b.ins().sextend(I64, n),
                    Width::W32 => {
                        let w = self.b.ins().sextend(I32, n);
                        self.b.ins().uextend(I64, w)
                    }
                };
                self.set(dst, r);
            }
            Instruction::End { order, bits, dst } => {
                let v = self.get(dst);
                let swap = match order {
                    ByteOrder::Swap => true,
                    ByteOrder::Le => self.opts.big_endian,
                    ByteOrder::Be => !self.opts.big_endian,
                };
                let ty = match bits {
                    16 => types::I16,
                    32 => I32,
                    _ => I64,
                };
                let n = if ty == I64 { v } else { self.b.ins().ireduce(ty, v) };
                let n = if swap { self.b.ins().bswap(n) } else { n };
                let r = if ty == I64 { n } else { self.b.ins().uextend(I64, n) };
                self.set(dst, r);
            }
            Instruction::LoadImm64 { dst, .. } => {
                let v = match resolved {
                    Resolved::Imm64(v) => v.value(),
                    _ => return Err(JitError::Codegen(format!("instruction {pc}: lddw was not linked"))),
                };
                let v = self.b.ins().iconst(I64, v as i64);
                self.set(dst, v);
            }
            Instruction::LoadPacket { size, mode, imm } => {
                let off = match mode {
                    PacketMode::Abs => self.b.ins().iconst(I64, imm as i64),
                    PacketMode::Ind(r) => {
                        let v = self.get(r);
                        let v = self.b.ins().ireduce(I32, v);
                        let v = self.b.ins().iadd_imm_s(v, imm as i64);
                        self.b.ins().sextend(I64, v)
                    }
                };
                let size = self.b.ins().iconst(I64, size.bytes() as i64);
                let f = self.import(Rt::PacketLoad);
                let r0 = self.call_runtime(f, &[self.ctx, off, size]);
                self.check_status();
                self.set(Reg::R0, r0);
            }
            Instruction::Load { size, dst, src, offset } | Instruction::LoadSx { size, dst, src, offset } => {
                let (addr, off) = self.access(src, offset, size.bytes(), false, pc);
                let sx = matches!(insn, Instruction::LoadSx { .. });
                let v = match (size, sx) {
                    (Size::B, false) => self.b.ins().uload8(I64, flags, addr, off),
                    (Size::H, false) => self.b.ins().uload16(I64, flags, addr, off),
                    (Size::W, false) => self.b.ins().uload32(flags, addr, off),
                    (Size::B, true) => self.b.ins().sload8(I64, flags, addr, off),
                    (Size::H, true) => self.b.ins().sload16(I64, flags, addr, off),
                    (Size::W, true) => self.b.ins().sload32(flags, addr, off),
                    (Size::DW, _) => self.b.ins().load(I64, flags, addr, off),
                };
                self.set(dst, v);
            }
            Instruction::Store { size, dst, offset, imm } => {
                let v = self.b.ins().iconst(I64, imm as i64);
                self.store(pc, size, dst, offset, v);
            }
            Instruction::StoreReg { size, dst, offset, src } => {
                let v = self.get(src);
                self.store(pc, size, dst, offset, v);
            }
            Instruction::Atomic { width, op, dst, offset, src } => self.atomic(pc, width, op, dst, offset, src),
            Instruction::Ja { .. } | Instruction::Ja32 { .. } => {
                let t = insn.branch_target(pc).unwrap_or(0) as usize;
                self.mark_loop_end(pc);
                self.pass_facts(pc, t, self.facts);
                if let Some(l) = self.copies.remove(&pc) {
                    self.bulk_copy(l);
                }
                self.jump_to(t);
            }
            Instruction::Jump { width, cond, dst, src, .. } => {
                let a = self.operand(Operand::Reg(dst), width);
                let b = self.operand(src, width);
                let target = insn.branch_target(pc).unwrap_or(0) as usize;
                // Where the jump goes when taken leaves the loop and the next instruction stays (as at
                // the end of a loop): the code tests the opposite condition, so that staying falls
                // through.
                let swap =
                    !self.diamonds.contains_key(&pc) && self.cfg.stays(pc, target) && !self.cfg.stays(pc, pc + 1);
                let c = match cond {
                    Cond::Set => {
                        let m = self.b.ins().band(a, b);
                        let cc = if swap { IntCC::Equal } else { IntCC::NotEqual };
                        self.b.ins().icmp_imm_s(cc, m, 0)
                    }
                    _ => {
                        let cc = match cond {
                            Cond::Eq => IntCC::Equal,
                            Cond::Ne => IntCC::NotEqual,
                            Cond::Gt => IntCC::UnsignedGreaterThan,
                            Cond::Ge => IntCC::UnsignedGreaterThanOrEqual,
                            Cond::Lt => IntCC::UnsignedLessThan,
                            Cond::Le => IntCC::UnsignedLessThanOrEqual,
                            Cond::Sgt => IntCC::SignedGreaterThan,
                            Cond::Sge => IntCC::SignedGreaterThanOrEqual,
                            Cond::Slt => IntCC::SignedLessThan,
                            _ => IntCC::SignedLessThanOrEqual,
                        };
                        self.b.ins().icmp(if swap { cc.complement() } else { cc }, a, b)
                    }
                };
                if let Some(d) = self.diamonds.remove(&pc) {
                    return self.select_sides(c, &d);
                }
                let copy = self.copies.remove(&pc);
                // The way back of a copy loop first tries to finish it (see `bulk_copy`).
                let taken = if copy.is_some() { self.b.create_block() } else { self.blocks[&target] };
                let next = self.blocks[&(pc + 1)];
                if target == pc + 1 {
                    self.pass_facts(pc, target, self.facts);
                } else {
                    let (when_taken, when_not) = self.facts.after_jump(width, cond, dst, src);
                    self.pass_facts(pc, target, when_taken);
                    self.pass_facts(pc, pc + 1, when_not);
                }
                // Both ways out of a conditional jump go through blocks of their own, so that no edge is
                // critical: Cranelift places the block for a critical edge, and the register moves in it,
                // right after the branch, where they would push the other way out of line. Cranelift lays
                // out a branch's second target right after it: the way that stays in the loop.
                let (first, second) = (self.b.create_block(), self.b.create_block());
                self.b.ins().brif(c, first, &[], second, &[]);
                let (to_first, to_second) = if swap { (next, taken) } else { (taken, next) };
                self.b.switch_to_block(first);
                if !swap {
                    self.mark_loop_end(pc);
                }
                self.b.ins().jump(to_first, &[]);
                self.b.switch_to_block(second);
                if swap {
                    self.mark_loop_end(pc);
                }
                self.b.ins().jump(to_second, &[]);
                if let Some(l) = copy {
                    self.b.switch_to_block(taken);
                    self.bulk_copy(l);
                    self.b.ins().jump(self.blocks[&target], &[]);
                }
                self.terminated = true;
            }
            Instruction::Call { id } => match resolved {
                Resolved::TailCall => self.tail_call(),
                Resolved::Loop { index } => self.bpf_loop(pc, index, id),
                Resolved::ForEach { index } => self.for_each(pc, index, id),
                Resolved::Helper { index } => {
                    let which = ((index as u64 + 1) << 32 | id as u64) as i64;
                    if let Some(hash) = self.direct_hash(pc, index, id) {
                        self.hash_call(pc, which, id, hash);
                        return Ok(());
                    }
                    match self.inline_array(pc, index) {
                        Some(layout) if !self.opts.checked => self.inline_lookup(layout),
                        Some(layout) if self.opts.uses_stack => self.checked_lookup(pc, which, layout),
                        _ => {
                            let which = self.b.ins().iconst(I64, which);
                            self.helper_call(pc, which);
                        }
                    }
                }
                _ => return Err(JitError::Codegen(format!("instruction {pc}: call was not linked"))),
            },
            Instruction::CallReg { reg } => {
                // The runtime looks the id up; the flag in the pc marks the full register value as the id.
                let id = self.get(reg);
                self.helper_call(pc | CALLX_FLAG, id);
            }
            Instruction::CallLocal { .. } => {
                let target = insn.branch_target(pc).unwrap_or(0) as usize;
                self.local_call(pc, target);
            }
            Instruction::CallBtf { id } => {
                return Err(JitError::Link(crate::link::LinkError::UnsupportedBtfCall { pc, id }))
            }
            Instruction::Exit => {
                self.save_budget();
                let r0 = self.get(Reg::R0);
                self.b.ins().return_(&[r0]);
                self.terminated = true;
            }
        }
        Ok(())
    }

    /// At the backward jump of byte-copy loop `l`, with one more iteration due: carries out all the
    /// remaining iterations with one `memmove` and continues at the loop's exit when the conditions of
    /// [`copy_loop`] hold; otherwise continues here (the caller then jumps back as written).
    fn bulk_copy(&mut self, l: &CopyLoop) {
        let flags = MemFlagsData::trusted();
        let mut cur = [None; 11];
        let mut get = |fx: &mut Self, r: Reg| *cur[r.index() as usize].get_or_insert_with(|| fx.get(r));
        let x = get(self, l.test.reg);
        let y = match l.test.bound {
            Operand::Reg(r) => get(self, r),
            Operand::Imm(_) => self.b.ins().iconst(I64, l.test.bound_value as i64),
        };
        let m = if l.test.up { self.b.ins().isub(y, x) } else { self.b.ins().isub(x, y) };
        let m = match l.test.width {
            Width::W64 => m,
            Width::W32 => self.b.ins().band_imm_u(m, u32::MAX as i64),
        };
        let sum = |fx: &mut Self, s: &copy_loop::Sum, value: &mut dyn FnMut(&mut Self, Reg) -> Value| {
            let mut v = fx.b.ins().iconst(I64, s.add);
            for r in s.regs.iter() {
                let x = value(fx, r);
                v = fx.b.ins().iadd(v, x);
            }
            if s.narrow {
                v = fx.b.ins().band_imm_u(v, u32::MAX as i64);
            }
            v
        };
        let src = sum(self, &l.src, &mut |fx, r| get(fx, r));
        let dst = sum(self, &l.dst, &mut |fx, r| get(fx, r));

        // Enough iterations left, both ranges private, the destination not inside the source.
        let mut ok = self.b.ins().icmp_imm_u(IntCC::UnsignedGreaterThanOrEqual, m, copy_loop::MIN_BULK as i64);
        let mem_base = self.b.ins().load(I64, flags, self.ctx, offset::MEM_BASE);
        let mem_len = self.b.ins().load(I64, flags, self.ctx, offset::MEM_LEN);
        let stack = self.opts.uses_stack.then(|| {
            let hi = self.b.ins().load(I64, flags, self.ctx, offset::STACK_HI);
            let lo = self.b.ins().iadd_imm_s(self.fp, -(FRAME_SIZE as i64));
            let size = self.b.ins().isub(hi, lo);
            (lo, size)
        });
        for a in [src, dst] {
            let within = |fx: &mut Self, lo: Value, size: Value| {
                let off = fx.b.ins().isub(a, lo);
                let starts = fx.b.ins().icmp(IntCC::UnsignedLessThanOrEqual, off, size);
                let room = fx.b.ins().isub(size, off);
                let fits = fx.b.ins().icmp(IntCC::UnsignedGreaterThanOrEqual, room, m);
                fx.b.ins().band(starts, fits)
            };
            let mut private = within(self, mem_base, mem_len);
            if let Some((lo, size)) = stack {
                let in_stack = within(self, lo, size);
                private = self.b.ins().bor(private, in_stack);
            }
            ok = self.b.ins().band(ok, private);
        }
        let apart = self.b.ins().isub(dst, src);
        let same = self.b.ins().icmp_imm_u(IntCC::Equal, apart, 0);
        let beyond = self.b.ins().icmp(IntCC::UnsignedGreaterThanOrEqual, apart, m);
        let not_inside = self.b.ins().bor(same, beyond);
        ok = self.b.ins().band(ok, not_inside);

        let bulk = self.b.create_block();
        let cont = self.b.create_block();
        self.b.set_cold_block(cont);
        self.b.ins().brif(ok, bulk, &[], cont, &[]);
        self.b.switch_to_block(bulk);
        self.b.call_memmove(self.frontend, dst, src, m);
        let end = self.b.ins().iadd(dst, m);
        let last = self.b.ins().uload8(I64, MemFlagsData::new(), end, -1);
        // Registers as the last iteration starts, then as it leaves them.
        let m1 = self.b.ins().iadd_imm_s(m, -1);
        let after = |fx: &mut Self, st: &copy_loop::Step, v: Value, n: Value| {
            let d = fx.b.ins().imul_imm_s(n, st.step);
            let r = fx.b.ins().iadd(v, d);
            if st.narrow {
                fx.b.ins().band_imm_u(r, u32::MAX as i64)
            } else {
                r
            }
        };
        let mut finals = Vec::new();
        for (reg, s) in &l.derived {
            let v = sum(self, s, &mut |fx, r| {
                let v = get(fx, r);
                match l.steps.iter().find(|st| st.reg == r) {
                    Some(st) => after(fx, st, v, m1),
                    None => v,
                }
            });
            finals.push((*reg, v));
        }
        for st in &l.steps {
            let v = get(self, st.reg);
            let v = after(self, st, v, m);
            finals.push((st.reg, v));
        }
        for reg in l.bytes.iter() {
            finals.push((reg, last));
        }
        for (reg, v) in finals {
            self.set(reg, v);
        }
        self.b.ins().jump(self.blocks[&l.exit], &[]);
        self.b.switch_to_block(cont);
        // The registers are as they were before `bulk`, whose definitions do not reach here.
        self.narrow = [None; 11];
    }

    /// An if-converted jump: both sides run, each register they write takes the value of the side the
    /// condition `c` picks (true: the jump's target side), then execution continues at the join.
    fn select_sides(&mut self, c: Value, d: &Diamond) -> Result<(), JitError> {
        let mut regs: Vec<Reg> = d.fall.iter().chain(&d.taken).filter_map(|(_, i)| i.written()).collect();
        regs.sort_unstable_by_key(|r| r.index());
        regs.dedup();
        let before: Vec<Value> = regs.iter().map(|&r| self.get(r)).collect();
        let facts_before = self.facts;
        for (pc, insn) in &d.fall {
            self.instruction(*pc, insn, self.linked.resolved_at(*pc))?;
        }
        let fall: Vec<Value> = regs.iter().map(|&r| self.get(r)).collect();
        for (&r, &v) in regs.iter().zip(&before) {
            self.set(r, v);
        }
        self.facts = facts_before;
        for (pc, insn) in &d.taken {
            self.instruction(*pc, insn, self.linked.resolved_at(*pc))?;
        }
        // Each register either side writes is a select of the two.
        self.facts = facts_before;
        for &r in &regs {
            self.facts.forget(r);
        }
        for (&r, &f) in regs.iter().zip(&fall) {
            let t = self.get(r);
            let v = self.b.ins().select(c, t, f);
            self.set(r, v);
        }
        self.jump_to(d.join);
        Ok(())
    }

    fn store(&mut self, pc: usize, size: Size, dst: Reg, offset: i16, v: Value) {
        let (addr, off) = self.access(dst, offset, size.bytes(), true, pc);
        let flags = MemFlagsData::new();
        match size {
            Size::B => self.b.ins().istore8(flags, v, addr, off),
            Size::H => self.b.ins().istore16(flags, v, addr, off),
            Size::W => self.b.ins().istore32(flags, v, addr, off),
            Size::DW => self.b.ins().store(flags, v, addr, off),
        };
    }

    fn atomic(&mut self, pc: usize, width: Width, op: AtomicOp, dst: Reg, offset: i16, src: Reg) {
        let (ty, bytes) = if width == Width::W64 { (I64, 8u32) } else { (I32, 4) };
        let (addr, off) = self.access(dst, offset, bytes, true, pc);
        let addr = if off == 0 { addr } else { self.b.ins().iadd_imm_s(addr, off as i64) };
        let low = self.b.ins().band_imm_s(addr, bytes as i64 - 1);
        let aligned = self.b.ins().icmp_imm_s(IntCC::Equal, low, 0);
        self.guard(aligned, status::MISALIGNED, pc, addr, 0, false);
        let flags = MemFlagsData::new();
        let val = self.operand(Operand::Reg(src), width);
        let (rmw, fetch) = match op {
            AtomicOp::Add { fetch } => (AtomicRmwOp::Add, fetch),
            AtomicOp::Or { fetch } => (AtomicRmwOp::Or, fetch),
            AtomicOp::And { fetch } => (AtomicRmwOp::And, fetch),
            AtomicOp::Xor { fetch } => (AtomicRmwOp::Xor, fetch),
            AtomicOp::Xchg => (AtomicRmwOp::Xchg, true),
            AtomicOp::CmpXchg => {
                let expected = self.operand(Operand::Reg(Reg::R0), width);
                let old = self.b.ins().atomic_cas(flags, addr, expected, val);
                let old = self.widen(old, width);
                self.set(Reg::R0, old);
                return;
            }
        };
        let old = self.b.ins().atomic_rmw(ty, flags, rmw, addr, val);
        if fetch {
            let old = self.widen(old, width);
            self.set(src, old);
        }
    }

    fn args(&mut self) -> [Value; 5] {
        core::array::from_fn(|i| self.b.use_var(self.regs[i + 1]))
    }

    fn helper_call(&mut self, pc: usize, which: Value) {
        let pcv = self.b.ins().iconst(I64, pc as i64);
        let [r1, r2, r3, r4, r5] = self.args();
        let f = self.import(Rt::CallHelper);
        let r0 = self.call_runtime(f, &[self.ctx, pcv, which, r1, r2, r3, r4, r5, self.fp]);
        self.check_status();
        self.set(Reg::R0, r0);
    }

    /// The map `r1` holds at a call at `pc`, when it was last set, in the call's block and after any
    /// call, by an `lddw` of a map.
    fn static_map(&self, pc: usize) -> Option<usize> {
        let start = self.cfg.block(self.cfg.block_of_pc(pc)?).start();
        let mut map = None;
        for (at, insn) in self.linked.program().iter() {
            if at < start {
                continue;
            }
            if at >= pc {
                break;
            }
            match insn {
                _ if insn.clobbers_arguments() => map = None,
                _ if insn.written() == Some(Reg::R1) => {
                    map = match (insn, self.linked.resolved_at(at)) {
                        (Instruction::LoadImm64 { .. }, Resolved::Imm64(crate::link::Imm64Value::Map { index })) => {
                            Some(index as usize)
                        }
                        _ => None,
                    }
                }
                _ => {}
            }
        }
        map
    }

    /// The layout of the array map a call at `pc` of helper `index` looks up in, when it is the standard
    /// lookup and `r1` names a shared array map (`static_map`).
    fn inline_array(&self, pc: usize, index: u32) -> Option<crate::maps::ArrayLayout> {
        if self.inline.helper != Some(index) {
            return None;
        }
        self.inline.arrays.get(self.static_map(pc)?).copied().flatten()
    }

    /// The hash map a call at `pc` of helper `index` (id `id`) goes to directly, with the runtime
    /// function that does it: when the helper is the standard lookup, update or delete (the last two
    /// on a map programs may change), and `r1` names a hash map (`static_map`).
    fn direct_hash(&self, pc: usize, index: u32, id: u32) -> Option<DirectHash> {
        self.inline.hash_map_op.as_ref()?;
        if self.opts.checked && !self.opts.uses_stack {
            // Keys can only be in the stack's frames, and there are none.
            return None;
        }
        // The standard helper for the id (a host's own helper with it is called).
        let i = Some(index);
        let standard = match id {
            crate::helpers::standard::MAP_LOOKUP_ELEM => i == self.inline.helper,
            crate::helpers::standard::MAP_UPDATE_ELEM => i == self.inline.update,
            crate::helpers::standard::MAP_DELETE_ELEM => i == self.inline.delete,
            _ => false,
        };
        if !standard {
            return None;
        }
        let hash = self.inline.hashes.get(self.static_map(pc)?).copied().flatten()?;
        hash.takes(id).then_some(hash)
    }

    /// A call of the map helper `id` (`which` for the helper's call) on the hash map `hash`, through
    /// `runtime::hash_map_op`. Checked code calls it when the key (and an update's value) lie in the
    /// current frame or the frames above it (where they are), else calls the helper, which checks them
    /// as always.
    fn hash_call(&mut self, pc: usize, which: i64, id: u32, hash: DirectHash) {
        let update = id == crate::helpers::standard::MAP_UPDATE_ELEM;
        let [_, r2, r3, r4, _] = self.args();
        let direct = |fx: &mut Self| {
            let f = fx.import(Rt::HashMapOp);
            let op = fx.b.ins().iconst(I64, id as i64);
            let map = fx.b.ins().iconst(I64, hash.addr as i64);
            let r0 = fx.call_runtime(f, &[fx.ctx, op, map, r2, r3, r4]);
            fx.check_status();
            fx.set(Reg::R0, r0);
        };
        let result = match id {
            crate::helpers::standard::MAP_LOOKUP_ELEM => {
                Known::Value { size: hash.value_size, offset: 0, writable: hash.writable, non_null: false }
            }
            _ => Known::Nothing,
        };
        let known = self.facts.in_frame(Reg::R2, 0, hash.key_size)
            && (!update || self.facts.in_frame(Reg::R3, 0, hash.value_size));
        // The helper's lookup, where the call is not direct, returns the same.
        self.call_result = result;
        if !self.opts.checked || known {
            direct(self);
            return;
        }
        let mut inside = self.in_frames(r2, hash.key_size);
        if update {
            let value_inside = self.in_frames(r3, hash.value_size);
            inside = self.b.ins().band(inside, value_inside);
        }
        self.fast_or_helper(pc, which, inside, direct);
    }

    /// Where `inside` (1 or 0) holds, `fast`; else the call of helper `which` at `pc`.
    fn fast_or_helper(&mut self, pc: usize, which: i64, inside: Value, fast: impl FnOnce(&mut Self)) {
        let (fast_block, slow, join) = (self.b.create_block(), self.b.create_block(), self.b.create_block());
        self.b.ins().brif(inside, fast_block, &[], slow, &[]);
        self.b.switch_to_block(fast_block);
        fast(self);
        self.b.ins().jump(join, &[]);
        self.b.switch_to_block(slow);
        let which = self.b.ins().iconst(I64, which);
        self.helper_call(pc, which);
        self.b.ins().jump(join, &[]);
        self.b.switch_to_block(join);
    }

    /// Whether the `len` bytes at `addr` lie in the current frame or the frames above it: 1 or 0.
    fn in_frames(&mut self, addr: Value, len: u32) -> Value {
        let lo = self.b.ins().iadd_imm_s(self.fp, -(FRAME_SIZE as i64));
        let hi = self.b.ins().load(I64, MemFlagsData::trusted(), self.ctx, offset::STACK_HI);
        let span = self.b.ins().isub(hi, lo);
        let last = self.b.ins().iadd_imm_s(span, -(len as i64));
        let at = self.b.ins().isub(addr, lo);
        self.b.ins().icmp(IntCC::UnsignedLessThanOrEqual, at, last)
    }

    /// Checked code: the lookup inline when the key lies in the current frame or the frames above it
    /// (where keys are), else the helper's call, which checks the key's address as always.
    fn checked_lookup(&mut self, pc: usize, which: i64, layout: crate::maps::ArrayLayout) {
        if self.facts.in_frame(Reg::R2, 0, 4) {
            self.inline_lookup(layout);
            return;
        }
        let r2 = self.get(Reg::R2);
        let inside = self.in_frames(r2, 4);
        self.fast_or_helper(pc, which, inside, |fx| fx.inline_lookup(layout));
    }

    /// `r0 = key < max_entries ? base + key * stride : 0`, the key the 4 bytes `r2` points to (proven
    /// readable, or checked by `checked_lookup`).
    fn inline_lookup(&mut self, layout: crate::maps::ArrayLayout) {
        let r2 = self.get(Reg::R2);
        let key = self.b.ins().uload32(MemFlagsData::new(), r2, 0);
        let inside = self.b.ins().icmp_imm_u(IntCC::UnsignedLessThan, key, layout.max_entries as i64);
        let offset = self.b.ins().imul_imm_u(key, layout.stride as i64);
        let value = self.b.ins().iadd_imm_u(offset, layout.base as i64);
        let null = self.b.ins().iconst(I64, 0);
        let r0 = self.b.ins().select(inside, value, null);
        self.set(Reg::R0, r0);
        self.call_result =
            Known::Value { size: layout.value_size, offset: 0, writable: layout.writable, non_null: false };
    }

    fn local_call(&mut self, pc: usize, target: usize) {
        let callee_fp = self.callee_frame(pc);
        let [r1, r2, r3, r4, r5] = self.args();
        self.save_budget();
        let f = self.funcs[&target];
        let call = self.b.ins().call(f, &[self.ctx, r1, r2, r3, r4, r5, callee_fp]);
        let r0 = self.b.inst_results(call)[0];
        self.load_budget();
        if !(self.opts.verified && !self.opts.metered && self.calls_nothing(target)) {
            self.check_status();
        }
        self.set(Reg::R0, r0);
    }

    /// The frame pointer of a function this one calls at `pc`, its frame checked to fit the stack
    /// (unless verified) and zeroed (if programs use the stack).
    fn callee_frame(&mut self, pc: usize) -> Value {
        let callee_fp = self.b.ins().iadd_imm_s(self.fp, -(FRAME_SIZE as i64));
        let callee_lo = self.b.ins().iadd_imm_s(self.fp, -2 * FRAME_SIZE as i64);
        if !self.opts.verified {
            // Depth: the callee's frame must still lie inside the stack (the verifier proves it of
            // verified programs, whose calls nest at most `MAX_FRAMES` deep).
            let base = self.b.ins().load(I64, MemFlagsData::trusted(), self.ctx, offset::STACK_BASE);
            let fits = self.b.ins().icmp(IntCC::UnsignedGreaterThanOrEqual, callee_lo, base);
            let zero = self.b.ins().iconst(I64, 0);
            self.guard(fits, status::CALL_DEPTH, pc, zero, 0, false);
        }
        // A fresh frame reads as zeros, as in the interpreter (programs that never name r10 cannot
        // reach it).
        if self.opts.uses_stack {
            self.zero_frame(callee_lo);
        }
        callee_fp
    }

    /// `bpf_loop(nr_loops, callback, callback_ctx, flags)` at `pc`, as the interpreter runs it: `-EINVAL`
    /// for flags, `-E2BIG` past `MAX_LOOPS` (of the low 32 bits of `nr_loops`), else the callback (one
    /// of the functions the program takes the address of, found by comparing handles) called with the
    /// iteration and `callback_ctx` until it returns non-zero (the result is then the iterations made)
    /// or `nr_loops` times (the result is `nr_loops`). Another callback value goes to the helper's
    /// function (`index`, `id`), which refuses it.
    fn bpf_loop(&mut self, pc: usize, index: u32, id: u32) {
        use crate::helpers::standard::MAX_LOOPS;
        let [r1, r2, r3, r4, _] = self.args();
        let done = self.b.create_block();
        self.b.append_block_param(done, I64);
        let n = self.b.ins().band_imm_u(r1, 0xffff_ffff);
        let einval = self.b.ins().iconst(I64, -22);
        let e2big = self.b.ins().iconst(I64, -7);
        let flags_ok = self.b.ins().icmp_imm_s(IntCC::Equal, r4, 0);
        let count = self.b.create_block();
        self.b.ins().brif(flags_ok, count, &[], done, &[BlockArg::Value(einval)]);
        self.b.switch_to_block(count);
        let n_ok = self.b.ins().icmp_imm_s(IntCC::UnsignedLessThanOrEqual, n, MAX_LOOPS as i64);
        let dispatch = self.b.create_block();
        self.b.ins().brif(n_ok, dispatch, &[], done, &[BlockArg::Value(e2big)]);
        self.b.switch_to_block(dispatch);
        for start in self.linked.callbacks().to_vec() {
            let Some(&f) = self.funcs.get(&start) else { continue };
            let is = self.b.ins().icmp_imm_s(IntCC::Equal, r2, crate::link::func_handle(start as u32) as i64);
            let (body, next) = (self.b.create_block(), self.b.create_block());
            self.b.ins().brif(is, body, &[], next, &[]);
            self.b.switch_to_block(body);
            let head = self.b.create_block();
            self.b.append_block_param(head, I64);
            let zero = self.b.ins().iconst(I64, 0);
            self.b.ins().jump(head, &[BlockArg::Value(zero)]);
            self.b.switch_to_block(head);
            let i = self.b.block_params(head)[0];
            let more = self.b.ins().icmp(IntCC::UnsignedLessThan, i, n);
            let call = self.b.create_block();
            self.b.ins().brif(more, call, &[], done, &[BlockArg::Value(n)]);
            self.b.switch_to_block(call);
            let callee_fp = self.callee_frame(pc);
            self.save_budget();
            let call_inst = self.b.ins().call(f, &[self.ctx, i, r3, zero, zero, zero, callee_fp]);
            let ret = self.b.inst_results(call_inst)[0];
            self.load_budget();
            self.check_status();
            let next_i = self.b.ins().iadd_imm_s(i, 1);
            let stop = self.b.ins().icmp_imm_s(IntCC::NotEqual, ret, 0);
            self.b.ins().brif(stop, done, &[BlockArg::Value(next_i)], head, &[BlockArg::Value(next_i)]);
            self.b.switch_to_block(next);
        }
        let which = self.b.ins().iconst(I64, ((index as u64 + 1) << 32 | id as u64) as i64);
        self.helper_call(pc, which);
        let r0 = self.get(Reg::R0);
        self.b.ins().jump(done, &[BlockArg::Value(r0)]);
        self.b.switch_to_block(done);
        let r0 = self.b.block_params(done)[0];
        self.set(Reg::R0, r0);
    }

    /// `bpf_for_each_map_elem(map, callback, callback_ctx, flags)` at `pc`, as the interpreter runs it:
    /// `-EINVAL` for flags; else, for the callback found as in `bpf_loop`, a runtime step per element
    /// (through `ebpf_vm_call_helper` with `FOR_EACH_STEP_FLAG`) copies its key into the callback's
    /// frame and gives its value, and the callback is called with the map, the key, the value and
    /// `callback_ctx` until it returns non-zero or no element is left; the result is the number of
    /// calls. A map that cannot be iterated, or another callback, goes to the helper's function.
    fn for_each(&mut self, pc: usize, index: u32, id: u32) {
        let [r1, r2, r3, r4, _] = self.args();
        let which = self.b.ins().iconst(I64, ((index as u64 + 1) << 32 | id as u64) as i64);
        let done = self.b.create_block();
        self.b.append_block_param(done, I64);
        let einval = self.b.ins().iconst(I64, -22);
        let flags_ok = self.b.ins().icmp_imm_s(IntCC::Equal, r4, 0);
        let dispatch = self.b.create_block();
        self.b.ins().brif(flags_ok, dispatch, &[], done, &[BlockArg::Value(einval)]);
        self.b.switch_to_block(dispatch);
        let step_pc = self.b.ins().iconst(I64, (pc | FOR_EACH_STEP_FLAG) as i64);
        for start in self.linked.callbacks().to_vec() {
            let Some(&f) = self.funcs.get(&start) else { continue };
            let is = self.b.ins().icmp_imm_s(IntCC::Equal, r2, crate::link::func_handle(start as u32) as i64);
            let (body, next) = (self.b.create_block(), self.b.create_block());
            self.b.ins().brif(is, body, &[], next, &[]);
            self.b.switch_to_block(body);
            let head = self.b.create_block();
            self.b.append_block_param(head, I64);
            let zero = self.b.ins().iconst(I64, 0);
            self.b.ins().jump(head, &[BlockArg::Value(zero)]);
            self.b.switch_to_block(head);
            let visited = self.b.block_params(head)[0];
            let callee_fp = self.callee_frame(pc);
            let step = self.import(Rt::CallHelper);
            let value =
                self.call_runtime(step, &[self.ctx, step_pc, which, r1, visited, callee_fp, zero, zero, self.fp]);
            self.check_status();
            let call = self.b.create_block();
            self.b.ins().brif(value, call, &[], done, &[BlockArg::Value(visited)]);
            self.b.switch_to_block(call);
            let key = self.b.ins().iadd_imm_s(callee_fp, -(FRAME_SIZE as i64));
            self.save_budget();
            let call_inst = self.b.ins().call(f, &[self.ctx, r1, key, value, r3, zero, callee_fp]);
            let ret = self.b.inst_results(call_inst)[0];
            self.load_budget();
            self.check_status();
            let next_visited = self.b.ins().iadd_imm_s(visited, 1);
            let stop = self.b.ins().icmp_imm_s(IntCC::NotEqual, ret, 0);
            self.b.ins().brif(stop, done, &[BlockArg::Value(next_visited)], head, &[BlockArg::Value(next_visited)]);
            self.b.switch_to_block(next);
        }
        self.helper_call(pc, which);
        let r0 = self.get(Reg::R0);
        self.b.ins().jump(done, &[BlockArg::Value(r0)]);
        self.b.switch_to_block(done);
        let r0 = self.b.block_params(done)[0];
        self.set(Reg::R0, r0);
    }

    /// Whether the function at slot `start` makes no call of any kind (so, unchecked and unmetered,
    /// nothing in it can set the status).
    fn calls_nothing(&self, start: usize) -> bool {
        let program = self.linked.program();
        let Some(f) = program.functions().iter().position(|f| f.start == start) else { return false };
        let range = program.instruction_range(program.functions()[f]);
        program.instructions()[range].iter().all(|i| !i.clobbers_arguments())
    }

    /// Stores zeros over the 512-byte frame whose lowest address is `lo`.
    fn zero_frame(&mut self, lo: Value) {
        let zero = self.b.ins().iconst(I64, 0);
        for i in 0..(FRAME_SIZE / 8) as i32 {
            self.b.ins().store(MemFlagsData::trusted(), zero, lo, i * 8);
        }
    }

    /// A tail call: the target replaces this function, in its frame (zeroed, when programs use the
    /// stack), and what it returns is what this function returns.
    fn tail_call(&mut self) {
        let r2 = self.get(Reg::R2);
        let r3 = self.get(Reg::new(3).unwrap_or(Reg::R0));
        let f = self.import(Rt::TailCall);
        let target = self.call_runtime(f, &[self.ctx, r2, r3]);
        let go = self.b.create_block();
        let failed = self.b.create_block();
        self.b.ins().brif(target, go, &[], failed, &[]);
        // The target starts as a program does: r1 the context argument, r2 the input's length, the
        // other registers zero.
        self.b.switch_to_block(go);
        let r1 = self.get(Reg::R1);
        self.save_budget();
        if self.opts.uses_stack {
            let lo = self.b.ins().iadd_imm_s(self.fp, -(FRAME_SIZE as i64));
            self.zero_frame(lo);
        }
        let mem_len = self.b.ins().load(I64, MemFlagsData::trusted(), self.ctx, offset::MEM_LEN);
        let zero = self.b.ins().iconst(I64, 0);
        let bpf_sig = match self.bpf_sig {
            Some(sig) => sig,
            None => {
                let sig = self.b.import_signature(self.runtime.bpf_sig.clone());
                *self.bpf_sig.insert(sig)
            }
        };
        let call = self.b.ins().call_indirect(bpf_sig, target, &[self.ctx, r1, mem_len, zero, zero, zero, self.fp]);
        let r0 = self.b.inst_results(call)[0];
        self.b.ins().return_(&[r0]);
        // A failed tail call returns -ENOENT and execution goes on.
        self.b.switch_to_block(failed);
        let e = self.b.ins().iconst(I64, -2);
        self.set(Reg::R0, e);
    }
}
