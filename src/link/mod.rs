//! The link step: programs and the [`Env`] they run in become a [`Linked`] set, with every helper
//! call, map reference and `lddw` value resolved once. The interpreter and the JIT both run what this
//! produces, and neither resolves anything on its own.
//!
//! A linked set holds the entry program and the programs tail calls can reach (a program array entry
//! holding `id` runs program `id`), plus what executions need to know about them as a whole: whether
//! any names the stack, whether they need a CPU slot, and the host regions of checked mode.

mod context;
mod env;
mod error;

pub use context::Context;
pub use env::Env;
pub use error::{ExecError, LinkError, Uninit};

use alloc::vec::Vec;

use crate::helpers::standard::{GET_SMP_PROCESSOR_ID, RINGBUF_RESERVE};
use crate::isa::{self, Imm64, Instruction};
use crate::maps::{self, MapType, RingBufMap};
use crate::memory::Region;
use crate::program::{Cfg, Program};

/// Most tail calls one execution may make (the kernel's limit).
pub const MAX_TAIL_CALLS: u32 = 33;

/// The value an `lddw` loads, as the link step resolved it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imm64Value {
    /// A constant.
    Const(u64),
    /// A reference to the map at this index of the environment (a handle, see [`maps::handle`]).
    Map {
        /// The map's index.
        index: u32,
    },
    /// The address of a byte of an array map's first value.
    MapValue {
        /// The map's index.
        index: u32,
        /// Offset of the byte in the value.
        offset: u32,
        /// The address.
        addr: u64,
    },
}

impl Imm64Value {
    /// The 64-bit value the instruction loads.
    pub fn value(self) -> u64 {
        match self {
            Imm64Value::Const(v) => v,
            Imm64Value::Map { index } => maps::handle(index),
            Imm64Value::MapValue { addr, .. } => addr,
        }
    }
}

/// What the link step resolved for one instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// Nothing: the instruction needs nothing from the environment.
    None,
    /// A helper call: the helper's position in [`Env::helpers`].
    Helper {
        /// Index into `Env::helpers()`.
        index: u32,
    },
    /// A call of `bpf_tail_call`, which the engines carry out themselves.
    TailCall,
    /// A call of `bpf_loop`, whose callback the engines call themselves; `index` is the helper's
    /// position in [`Env::helpers`], called for a callback argument that is not one of the program's
    /// functions.
    Loop {
        /// Index into `Env::helpers()`.
        index: u32,
    },
    /// A call of `bpf_for_each_map_elem`, whose callback the engines call themselves (as for
    /// [`Loop`](Resolved::Loop)).
    ForEach {
        /// Index into `Env::helpers()`.
        index: u32,
    },
    /// The value of an `lddw`.
    Imm64(Imm64Value),
}

/// Function references (`lddw rX, func`) are loaded into registers as `FUNC_HANDLE_BASE | slot`: a
/// number no program can dereference, which `bpf_loop` turns back into the function starting at that
/// slot of the running program.
pub const FUNC_HANDLE_BASE: u64 = 0xffff_fe00_0000_0000;

/// The handle of the function starting at slot `start`.
pub const fn func_handle(start: u32) -> u64 {
    FUNC_HANDLE_BASE | start as u64
}

/// One program with what the link step resolved for each of its instructions.
#[derive(Debug, Clone)]
pub struct LinkedProgram {
    program: Program,
    /// By instruction index (not slot).
    resolved: Vec<Resolved>,
    /// First slots of the functions `lddw rX, func` names, sorted.
    callbacks: Vec<usize>,
    /// The control-flow graph, built at the first use: the verifier and the JIT share it.
    cfg: CfgCell,
}

impl PartialEq for LinkedProgram {
    fn eq(&self, other: &LinkedProgram) -> bool {
        // The graph follows from the program.
        (&self.program, &self.resolved, &self.callbacks) == (&other.program, &other.resolved, &other.callbacks)
    }
}

impl Eq for LinkedProgram {}

/// A control-flow graph built once, at the first use.
#[derive(Default)]
struct CfgCell(spin::Once<Cfg>);

impl Clone for CfgCell {
    fn clone(&self) -> CfgCell {
        let cell = CfgCell::default();
        if let Some(cfg) = self.0.get() {
            cell.0.call_once(|| cfg.clone());
        }
        cell
    }
}

impl core::fmt::Debug for CfgCell {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(if self.0.is_completed() { "CfgCell(built)" } else { "CfgCell(not built)" })
    }
}

impl LinkedProgram {
    /// The program's control-flow graph (built at the first call).
    pub fn cfg(&self) -> &Cfg {
        self.cfg.0.call_once(|| Cfg::new(&self.program))
    }

    /// The program.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// The slot a function handle names, if it is the handle of a function of this program that the
    /// program takes the address of (`lddw rX, func`): what `bpf_loop` may call back.
    pub fn callback(&self, handle: u64) -> Option<usize> {
        if handle & !0xffff_ffff != FUNC_HANDLE_BASE {
            return None;
        }
        let start = (handle & 0xffff_ffff) as usize;
        self.callbacks.binary_search(&start).ok().map(|_| start)
    }

    /// The functions the program takes the address of, by first slot, in order.
    pub fn callbacks(&self) -> &[usize] {
        &self.callbacks
    }

    /// Each instruction with its slot index and what was resolved for it.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Instruction, Resolved)> {
        self.program.iter().zip(&self.resolved).map(|((pc, insn), &r)| (pc, insn, r))
    }

    /// The instructions of function `f` with their slot indices and what was resolved for them.
    pub fn function_iter(&self, f: crate::program::Function) -> impl Iterator<Item = (usize, &Instruction, Resolved)> {
        let range = self.program.instruction_range(f);
        self.program.function_iter(f).zip(&self.resolved[range]).map(|((pc, insn), &r)| (pc, insn, r))
    }

    /// What was resolved for the instruction at slot `pc`.
    pub fn resolved_at(&self, pc: usize) -> Resolved {
        self.program.index_of(pc).map_or(Resolved::None, |i| self.resolved(i))
    }

    /// What was resolved for the instruction at position `index` (not slot).
    pub fn resolved(&self, index: usize) -> Resolved {
        self.resolved.get(index).copied().unwrap_or(Resolved::None)
    }
}

/// Programs linked against one environment: the entry program and the programs tail calls can reach.
#[derive(Debug, Clone)]
pub struct Linked {
    env: Env,
    /// By program id.
    programs: Vec<LinkedProgram>,
    entry: usize,
    regions: Vec<Region>,
    uses_stack: bool,
    uses_cpu: bool,
    may_grant: bool,
}

impl Linked {
    /// Links `entry` and the programs tail calls may reach (`targets[id]` for a program array entry
    /// holding `id`) against `env`. When no program of the set can tail-call, the targets are left out.
    pub fn new(entry: Program, targets: Vec<Program>, env: Env) -> Result<Linked, LinkError> {
        let can_tail_call = |p: &Program| {
            p.instructions()
                .iter()
                .any(|i| matches!(i, Instruction::Call { id } if env.helper(*id).is_some_and(|h| h.tail_call)))
        };
        let (programs, entry) = if can_tail_call(&entry) || targets.iter().any(can_tail_call) {
            match targets.iter().position(|t| *t == entry) {
                Some(id) => (targets, id),
                None => {
                    let id = targets.len();
                    let mut all = targets;
                    all.push(entry);
                    (all, id)
                }
            }
        } else {
            (alloc::vec![entry], 0)
        };
        let programs = programs.into_iter().map(|p| link_program(p, &env)).collect::<Result<Vec<_>, _>>()?;
        let calls = |id: u32| {
            programs.iter().any(|p| {
                p.program.instructions().iter().any(|i| match *i {
                    Instruction::Call { id: called } => called == id,
                    Instruction::CallReg { .. } => true,
                    _ => false,
                })
            })
        };
        let uses_cpu = env.maps().iter().any(|m| m.cpus() > 1)
            || env.helper(GET_SMP_PROCESSOR_ID).is_some() && calls(GET_SMP_PROCESSOR_ID);
        let may_grant = env.maps().iter().any(|m| m.downcast_ref::<RingBufMap>().is_some())
            && env.helper(RINGBUF_RESERVE).is_some()
            && calls(RINGBUF_RESERVE);
        // A `bpf_for_each_map_elem` callback finds its key in its frame.
        let uses_stack = programs.iter().any(|p| {
            p.program.uses_frame_pointer() || p.resolved.iter().any(|r| matches!(r, Resolved::ForEach { .. }))
        });
        let regions = env.all_regions();
        Ok(Linked { env, programs, entry, regions, uses_stack, uses_cpu, may_grant })
    }

    /// The environment.
    pub fn env(&self) -> &Env {
        &self.env
    }

    /// The programs, by id.
    pub fn programs(&self) -> &[LinkedProgram] {
        &self.programs
    }

    /// The id of the entry program.
    pub fn entry(&self) -> usize {
        self.entry
    }

    /// The entry program.
    pub fn entry_program(&self) -> &LinkedProgram {
        &self.programs[self.entry]
    }

    /// Host memory a checked execution may access besides its input and stack: granted regions and
    /// map storage.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// Whether some program names r10, the frame pointer: otherwise no program can reach the stack,
    /// which is then neither initialised nor accessible.
    pub fn uses_stack(&self) -> bool {
        self.uses_stack
    }

    /// Whether executions need a CPU slot (per-CPU maps, or the processor id helper).
    pub fn uses_cpu(&self) -> bool {
        self.uses_cpu
    }

    /// Whether helpers may hand executions memory of their own while they run (ring-buffer records):
    /// checked accesses outside the static regions must then ask the execution's grants.
    pub fn may_grant(&self) -> bool {
        self.may_grant
    }
}

fn link_program(program: Program, env: &Env) -> Result<LinkedProgram, LinkError> {
    let mut resolved = Vec::with_capacity(program.instructions().len());
    for (pc, insn) in program.iter() {
        resolved.push(match *insn {
            Instruction::Call { id } => {
                let index = env.helper_index(id).ok_or(LinkError::UnknownHelper { pc, id })?;
                if env.helpers()[index].tail_call {
                    Resolved::TailCall
                } else if env.helpers()[index].bpf_loop {
                    Resolved::Loop { index: index as u32 }
                } else if env.helpers()[index].for_each {
                    Resolved::ForEach { index: index as u32 }
                } else {
                    Resolved::Helper { index: index as u32 }
                }
            }
            Instruction::CallBtf { id } => return Err(LinkError::UnsupportedBtfCall { pc, id }),
            Instruction::LoadImm64 { value, .. } => Resolved::Imm64(resolve_imm64(pc, insn, value, env)?),
            _ => Resolved::None,
        });
    }
    // `Program::new` checked that each names the first slot of a function.
    let mut callbacks: Vec<usize> = program
        .iter()
        .filter_map(|(pc, i)| match *i {
            Instruction::LoadImm64 { value: Imm64::Func(off), .. } => usize::try_from(pc as i64 + 1 + off as i64).ok(),
            _ => None,
        })
        .collect();
    callbacks.sort_unstable();
    callbacks.dedup();
    Ok(LinkedProgram { program, resolved, callbacks, cfg: CfgCell::default() })
}

/// The value an `lddw` loads: its constant, a map handle, or the address inside a map's value.
fn resolve_imm64(pc: usize, insn: &Instruction, value: Imm64, env: &Env) -> Result<Imm64Value, LinkError> {
    let map = |index: i32| {
        u32::try_from(index).ok().and_then(|i| env.map(i).map(|m| (i, m))).ok_or(LinkError::UnknownMap { pc, index })
    };
    match value {
        Imm64::Const(v) => Ok(Imm64Value::Const(v)),
        Imm64::MapFd(index) | Imm64::MapIdx(index) => Ok(Imm64Value::Map { index: map(index)?.0 }),
        Imm64::MapValue { fd: index, offset } | Imm64::MapIdxValue { idx: index, offset } => {
            let (i, m) = map(index)?;
            let def = m.def();
            if def.map_type != MapType::Array {
                return Err(LinkError::NotAnArray { pc, index });
            }
            if offset < 0 || offset as u32 >= def.value_size {
                return Err(LinkError::MapValueOffset { pc, index, offset });
            }
            let base = m.lookup(&0u32.to_ne_bytes(), 0).ok_or(LinkError::NotAnArray { pc, index })?;
            let addr = base.expose_provenance() as u64 + offset as u64;
            Ok(Imm64Value::MapValue { index: i, offset: offset as u32, addr })
        }
        Imm64::Func(off) => {
            let target = (pc as i64 + 1).checked_add(off as i64).and_then(|t| u32::try_from(t).ok());
            Ok(Imm64Value::Const(func_handle(
                target.ok_or(LinkError::UnresolvedImm64 { pc, kind: isa::encode_one(insn).0.src })?,
            )))
        }
        Imm64::BtfVar { .. } => Err(LinkError::UnresolvedImm64 { pc, kind: isa::encode_one(insn).0.src }),
    }
}
