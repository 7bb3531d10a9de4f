//! The embedding API: a [`Vm`] holds a program prepared for an engine in an [`Env`], and
//! [`Vm::execute`] runs it on a memory buffer.
//!
//! At entry `r1` points to the buffer (0 when it is empty), `r2` holds its length, and `r10` points to
//! the top of a fresh 512-byte stack frame. An execution owns its stack, so one `Vm` can run on many
//! threads at once.

mod cpu;
pub mod env;
mod error;
pub(crate) mod interpreter;
pub mod memory;

pub use env::Env;
pub use error::{BuildError, ExecError};
pub use memory::Region;

use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::helpers::Helper;
use crate::maps::Map;
use crate::program::Program;
use interpreter::{Code, Setup};

pub use interpreter::MAX_TAIL_CALLS;

/// Bytes of stack in each frame.
pub const FRAME_SIZE: usize = 512;
/// Most stack frames of one execution (the entry function and nested bpf-to-bpf calls).
pub const MAX_FRAMES: usize = 8;

/// Which engine executes the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Engine {
    /// The portable interpreter.
    #[default]
    Interpreter,
    /// Machine code compiled by Cranelift for the host (feature `jit`).
    #[cfg(feature = "jit")]
    Jit,
}

/// How memory safety is ensured during execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Every load, store and helper pointer argument is checked against the regions the execution owns;
    /// a miss stops the program with [`ExecError::OutOfBounds`].
    #[default]
    Checked,
    /// No checks: the host vouches for the program. Chosen only through the `unsafe`
    /// [`VmBuilder::unchecked`].
    Unchecked,
}

/// Builds a [`Vm`]: the program, its environment, the engine, the mode and an optional budget.
#[derive(Debug, Clone)]
pub struct VmBuilder {
    program: Program,
    tail_targets: Vec<Program>,
    env: Env,
    engine: Engine,
    mode: Mode,
    budget: Option<u64>,
}

impl VmBuilder {
    /// Makes a helper available to the program (replacing one with the same id).
    pub fn helper(mut self, helper: Helper) -> VmBuilder {
        self.env.add_helper(helper);
        self
    }

    /// Adds every standard helper (see [`helpers::standard`](crate::helpers::standard)).
    pub fn standard_helpers(mut self) -> VmBuilder {
        self.env.add_standard_helpers();
        self
    }

    /// Adds a map; `lddw` pseudo-loads refer to it by the returned index.
    pub fn map(mut self, map: Arc<dyn Map>) -> VmBuilder {
        self.env.add_map(map);
        self
    }

    /// The programs tail calls can reach: a program array entry holding `id` runs `programs[id]`.
    pub fn tail_call_targets(mut self, programs: Vec<Program>) -> VmBuilder {
        self.tail_targets = programs;
        self
    }

    /// Uses this environment (replacing the helpers, maps and regions given so far).
    pub fn env(mut self, env: Env) -> VmBuilder {
        self.env = env;
        self
    }

    /// Chooses the engine (default: [`Engine::Interpreter`]).
    pub fn engine(mut self, engine: Engine) -> VmBuilder {
        self.engine = engine;
        self
    }

    /// Limits each execution to `instructions` executed instructions; past that it stops with
    /// [`ExecError::BudgetExhausted`].
    pub fn budget(mut self, instructions: u64) -> VmBuilder {
        self.budget = Some(instructions);
        self
    }

    /// Turns off all runtime memory checks.
    ///
    /// # Safety
    /// Every memory access the program makes, on every input it will be given, must be valid: inside
    /// the input buffer, the live stack frames, or regions granted through [`Env::grant`]. Helpers then
    /// trust pointer arguments too.
    pub unsafe fn unchecked(mut self) -> VmBuilder {
        self.mode = Mode::Unchecked;
        self
    }

    /// Prepares the program for the engine: resolves every helper call against the environment.
    pub fn build(self) -> Result<Vm, BuildError> {
        let mut codes = Vec::with_capacity(self.tail_targets.len() + 1);
        for p in &self.tail_targets {
            codes.push(Code::compile(p, &self.env)?);
        }
        let entry = codes.len();
        codes.push(Code::compile(&self.program, &self.env)?);
        let uses_cpu = self.env.has_per_cpu_maps()
            || self.env.helper(crate::helpers::standard::GET_SMP_PROCESSOR_ID).is_some()
                && core::iter::once(&self.program).chain(&self.tail_targets).any(|p| {
                    p.instructions().iter().any(|i| {
                        matches!(i, crate::isa::Instruction::Call { id } if *id == crate::helpers::standard::GET_SMP_PROCESSOR_ID)
                            || matches!(i, crate::isa::Instruction::CallReg { .. })
                    })
                });
        let regions = self.env.all_regions();
        let uses_stack = core::iter::once(&self.program).chain(&self.tail_targets).any(Program::uses_frame_pointer);
        #[cfg(feature = "jit")]
        let jit = match self.engine {
            Engine::Jit => {
                let programs: Vec<&Program> = self.tail_targets.iter().chain(core::iter::once(&self.program)).collect();
                let checked = self.mode == Mode::Checked;
                Some(Arc::new(
                    crate::jit::JitProgram::compile(&programs, &self.env, checked, self.budget.is_some()).map_err(
                        |e| match e {
                            crate::jit::JitError::Build(b) => b,
                            other => BuildError::Jit(alloc::format!("{other}")),
                        },
                    )?,
                ))
            }
            Engine::Interpreter => None,
        };
        Ok(Vm {
            #[cfg(feature = "jit")]
            jit,
            program: self.program,
            env: self.env,
            engine: self.engine,
            mode: self.mode,
            budget: self.budget,
            codes,
            entry,
            regions,
            uses_cpu,
            uses_stack,
        })
    }
}

/// A program ready to run.
#[derive(Debug, Clone)]
pub struct Vm {
    program: Program,
    env: Env,
    engine: Engine,
    mode: Mode,
    budget: Option<u64>,
    /// Tail-call targets by id, then the entry program.
    codes: Vec<Code>,
    entry: usize,
    /// Granted regions and map memory, for checked mode.
    regions: Vec<Region>,
    /// Whether executions need a CPU slot (per-CPU maps, or the processor id helper).
    uses_cpu: bool,
    /// Whether some program names r10 (else the stack is unreachable and is not zeroed).
    uses_stack: bool,
    /// The compiled code, for [`Engine::Jit`].
    #[cfg(feature = "jit")]
    jit: Option<Arc<crate::jit::JitProgram>>,
}

impl Vm {
    /// Starts building a `Vm` for `program`.
    pub fn builder(program: Program) -> VmBuilder {
        VmBuilder {
            program,
            tail_targets: Vec::new(),
            env: Env::new(),
            engine: Engine::default(),
            mode: Mode::default(),
            budget: None,
        }
    }

    /// Runs the program on `mem` and returns `r0` at `exit`.
    ///
    /// This allocates nothing and takes no lock; the stack lives on the caller's stack.
    #[inline]
    pub fn execute(&self, mem: &mut [u8]) -> Result<u64, ExecError> {
        let slot = self.uses_cpu.then(cpu::CpuSlot::acquire);
        let cpu = slot.as_ref().map_or(0, cpu::CpuSlot::index);
        let budget = self.budget.unwrap_or(0);
        #[cfg(feature = "jit")]
        if let Some(jit) = &self.jit {
            let setup =
                crate::jit::JitSetup { env: &self.env, regions: &self.regions, cpu, zero_stack: self.uses_stack };
            return jit.run(&setup, mem, budget);
        }
        let setup = Setup {
            codes: &self.codes,
            entry: self.entry,
            env: &self.env,
            regions: &self.regions,
            cpu,
            zero_stack: self.uses_stack,
        };
        match (self.mode, self.budget.is_some()) {
            (Mode::Checked, false) => interpreter::run::<true, false>(&setup, mem, 0),
            (Mode::Checked, true) => interpreter::run::<true, true>(&setup, mem, budget),
            (Mode::Unchecked, false) => interpreter::run::<false, false>(&setup, mem, 0),
            (Mode::Unchecked, true) => interpreter::run::<false, true>(&setup, mem, budget),
        }
    }

    /// The program.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// The environment.
    pub fn env(&self) -> &Env {
        &self.env
    }

    /// The engine.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The memory-safety mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }
}
