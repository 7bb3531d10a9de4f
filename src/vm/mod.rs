//! The embedding API: a [`VmBuilder`] links a program to its [`Env`] and prepares it for an engine, and
//! [`Vm::execute`] runs it on a memory buffer.
//!
//! At entry `r1` points to the buffer (0 when it is empty), `r2` holds its length, and `r10` points to
//! the top of a fresh 512-byte stack frame. An execution owns its stack, so one `Vm` can run on many
//! threads at once.

mod cpu;
mod error;
#[cfg(feature = "elf")]
mod instance;

pub use error::BuildError;
#[cfg(feature = "elf")]
pub use instance::{Instance, InstanceError, InstanceMap};

use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::helpers::Helper;
use crate::interpreter::{self, Code, Setup};
use crate::link::{Context, Env, ExecError, Linked};
use crate::maps::Map;
use crate::program::Program;
use crate::verifier::{Options, Verifier};

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
#[non_exhaustive]
pub enum Mode {
    /// The verifier proved the program safe before it was prepared; it runs with no runtime checks.
    /// The default.
    #[default]
    Verified,
    /// Every load, store and helper pointer argument is checked against the regions the execution owns;
    /// a miss stops the program with [`ExecError::OutOfBounds`]. For programs the verifier cannot prove
    /// safe.
    Checked,
    /// No checks: the host vouches for the program. Chosen only through the `unsafe`
    /// [`VmBuilder::unchecked`].
    Unchecked,
    /// [`Checked`](Mode::Checked), and a read of a register or stack byte never written stops the program
    /// with [`ExecError::UninitRead`]: a diagnostic mode of the interpreter, chosen through
    /// [`VmBuilder::shadow`].
    Shadow,
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
    options: Options,
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

    /// Describes what the program is given at entry (default: [`Context::Buffer`], a buffer whose
    /// length is in `r2`). The verifier's proof depends on it.
    pub fn context(mut self, context: Context) -> VmBuilder {
        self.env.set_context(context);
        self
    }

    /// Sets the verifier's options (complexity limit, pointer leaks).
    pub fn verifier_options(mut self, options: Options) -> VmBuilder {
        self.options = options;
        self
    }

    /// Verifies the program when it is built, and runs it with no runtime checks.
    pub fn verified(mut self) -> VmBuilder {
        self.mode = Mode::Verified;
        self
    }

    /// Runs the program with runtime checks of every memory access instead of verifying it: for programs
    /// the verifier cannot prove safe.
    pub fn checked(mut self) -> VmBuilder {
        self.mode = Mode::Checked;
        self
    }

    /// Runs the program in shadow mode, a diagnostic mode of the interpreter for testing the verifier:
    /// checked mode (see [`checked`](VmBuilder::checked); the program is not verified) that also tracks
    /// which registers of the running function and which stack bytes hold a written value, and stops the
    /// program with [`ExecError::UninitRead`] at the first read of anything else. The verifier claims
    /// that no program it accepts does that; the engines start every frame and register zeroed, so
    /// otherwise such a read goes unseen.
    ///
    /// What counts as a read or a write follows the verifier's rules (see the interpreter's `shadow`
    /// module): a program starts with r1, r2 and r10, a bpf-to-bpf callee with r10 and what its caller
    /// had of r1-r5, a tail-call target as a program does; calls leave r1-r5 unwritten and r0 written;
    /// helpers read and write the memory of their arguments as their signatures say. Stack bytes are
    /// tracked exactly, so a byte a store at a variable offset skipped counts as unwritten although the
    /// verifier takes it as written.
    ///
    /// It is slow: every instruction is looked up and checked. Only the interpreter has it: building for
    /// another engine fails with [`BuildError::ShadowNeedsInterpreter`].
    pub fn shadow(mut self) -> VmBuilder {
        self.mode = Mode::Shadow;
        self
    }

    /// Turns off all runtime memory checks.
    ///
    /// # Safety
    /// Every memory access the program makes, on every input it will be given, must be valid: inside
    /// the input buffer, the live stack frames, map values, reserved ring-buffer records, or regions
    /// granted through [`Env::grant`]. Helpers then trust pointer arguments too.
    pub unsafe fn unchecked(mut self) -> VmBuilder {
        self.mode = Mode::Unchecked;
        self
    }

    /// Links the program (and the tail-call targets, if it can tail-call) to the environment and
    /// prepares it for the engine.
    pub fn build(self) -> Result<Vm, BuildError> {
        if self.mode == Mode::Shadow && self.engine != Engine::Interpreter {
            return Err(BuildError::ShadowNeedsInterpreter);
        }
        let linked = Arc::new(Linked::new(self.program, self.tail_targets, self.env)?);
        if self.mode == Mode::Verified {
            Verifier::with_options(self.options).verify(&linked)?;
        }
        let prepared = match self.engine {
            Engine::Interpreter => {
                // Superinstructions and threaded jumps run several instructions a dispatch: not when a
                // budget counts instructions or shadow mode watches each one.
                let fuse = self.budget.is_none() && self.mode != Mode::Shadow;
                Prepared::Interpreter(Code::compile_all(&linked, fuse).into())
            }
            #[cfg(feature = "jit")]
            Engine::Jit => Prepared::Jit(Arc::new(crate::jit::JitProgram::compile(
                &linked,
                self.mode == Mode::Checked,
                self.budget.is_some(),
                self.mode == Mode::Verified,
            )?)),
        };
        #[cfg(feature = "jit")]
        let direct = match &prepared {
            Prepared::Jit(jit) if !linked.uses_cpu() => {
                // The lengths `execute` accepts, when the context needs nothing written before a run.
                let lens = match (self.mode, linked.env().context()) {
                    (_, Context::Packet { .. }) => None,
                    (Mode::Checked | Mode::Shadow, _) => Some(0..=usize::MAX),
                    (_, Context::Buffer) => Some(0..=u32::MAX as usize),
                    (_, &Context::Fixed { size, .. }) => Some(size as usize..=size as usize),
                };
                jit.direct(&linked).zip(lens)
            }
            _ => None,
        };
        Ok(Vm {
            linked,
            prepared,
            engine: self.engine,
            mode: self.mode,
            budget: self.budget,
            #[cfg(feature = "jit")]
            direct,
        })
    }
}

/// The program as an engine runs it.
#[derive(Debug, Clone)]
enum Prepared {
    /// The interpreter's form, by program id.
    Interpreter(Arc<[Code]>),
    /// Compiled code.
    #[cfg(feature = "jit")]
    Jit(Arc<crate::jit::JitProgram>),
}

/// A program ready to run.
#[derive(Debug, Clone)]
pub struct Vm {
    linked: Arc<Linked>,
    prepared: Prepared,
    engine: Engine,
    mode: Mode,
    budget: Option<u64>,
    /// Compiled code that reads no context, and the input lengths `execute` accepts for it: called
    /// directly, without the context and checks of a general run (see `jit::DirectRun`).
    #[cfg(feature = "jit")]
    direct: Option<(crate::jit::DirectRun, core::ops::RangeInclusive<usize>)>,
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
            options: Options::default(),
        }
    }

    /// Runs the program on `mem` and returns `r0` at `exit`.
    ///
    /// This allocates nothing and takes no lock; the stack lives on the caller's stack.
    #[inline]
    pub fn execute(&self, mem: &mut [u8]) -> Result<u64, ExecError> {
        #[cfg(feature = "jit")]
        if let Some((direct, lens)) = &self.direct {
            if lens.contains(&mem.len()) {
                return Ok(direct.run(mem));
            }
        }
        self.execute_prepared(mem)
    }

    /// [`execute`](Vm::execute) in general: checks the input's length, prepares the context and runs the
    /// engine. Out of line, so that a direct run does not pay for its frame.
    #[inline(never)]
    fn execute_prepared(&self, mem: &mut [u8]) -> Result<u64, ExecError> {
        let context = self.linked.env().context();
        if !matches!(self.mode, Mode::Checked | Mode::Shadow) && !context.accepts_len(mem.len()) {
            return Err(ExecError::ContextSize { len: mem.len() });
        }
        context.prepare(mem);
        let slot = self.linked.uses_cpu().then(cpu::CpuSlot::acquire);
        let cpu = slot.as_ref().map_or(0, cpu::CpuSlot::index);
        let budget = self.budget.unwrap_or(0);
        match &self.prepared {
            #[cfg(feature = "jit")]
            Prepared::Jit(jit) => jit.run(&crate::jit::JitSetup { linked: &self.linked, cpu }, mem, budget),
            Prepared::Interpreter(codes) => {
                let setup = Setup { linked: &self.linked, codes, cpu, trusted: self.mode == Mode::Unchecked };
                match (self.mode, self.budget.is_some()) {
                    (Mode::Checked, false) => interpreter::run::<true, false, false>(&setup, mem, 0),
                    (Mode::Checked, true) => interpreter::run::<true, true, false>(&setup, mem, budget),
                    (Mode::Shadow, false) => interpreter::run::<true, false, true>(&setup, mem, 0),
                    (Mode::Shadow, true) => interpreter::run::<true, true, true>(&setup, mem, budget),
                    (_, false) => interpreter::run::<false, false, false>(&setup, mem, 0),
                    (_, true) => interpreter::run::<false, true, false>(&setup, mem, budget),
                }
            }
        }
    }

    /// The entry program.
    pub fn program(&self) -> &Program {
        self.linked.entry_program().program()
    }

    /// The programs as linked to the environment.
    pub fn linked(&self) -> &Linked {
        &self.linked
    }

    /// The environment.
    pub fn env(&self) -> &Env {
        self.linked.env()
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

#[cfg(all(test, feature = "jit"))]
mod copy_loop_tests;

#[cfg(all(test, feature = "jit"))]
mod direct_tests {
    use super::*;
    use alloc::format;

    fn build(text: &str, context: Context, configure: impl Fn(VmBuilder) -> VmBuilder) -> Vm {
        let program = Program::from_asm(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        configure(Vm::builder(program).engine(Engine::Jit).standard_helpers().context(context)).build().expect("builds")
    }

    /// Whether `text`, built as `configure` says, runs directly.
    fn direct(text: &str, context: Context, configure: impl Fn(VmBuilder) -> VmBuilder) -> bool {
        build(text, context, configure).direct.is_some()
    }

    #[test]
    fn only_code_that_reads_no_context_runs_directly() {
        let fixed = || Context::Fixed { size: 8, read_only: Vec::new() };
        let verified = |b: VmBuilder| b.verified();
        let checked = |b: VmBuilder| b.checked();
        // Nothing to call, test or count: direct.
        assert!(direct("mov %r0, 0\nexit", Context::Buffer, verified));
        assert!(direct("mov %r0, 7\nexit", Context::Buffer, checked));
        assert!(direct("stdw [%r10-8], 3\nldxdw %r0, [%r10-8]\nexit", fixed(), verified));
        assert!(direct("ldxdw %r0, [%r1+0]\nexit", fixed(), verified));
        // Checked accesses, helpers, budgets, bpf-to-bpf calls and packet contexts: not direct.
        assert!(!direct("ldxdw %r0, [%r1+0]\nexit", fixed(), checked));
        assert!(!direct("call 5\nexit", Context::Buffer, verified));
        assert!(!direct("mov %r0, 0\nexit", Context::Buffer, |b| b.verified().budget(100)));
        assert!(!direct("call local f\nexit\nf:\nmov %r0, 1\nexit", Context::Buffer, verified));
        let packet = Context::Packet { size: 16, data: 0, data_end: 8 };
        assert!(!direct("mov %r0, 0\nexit", packet, verified));
    }

    #[test]
    fn direct_runs_start_with_a_zeroed_frame() {
        let text = "ldxdw %r0, [%r10-8]\nstdw [%r10-8], 5\nexit";
        // SAFETY: the program reads and writes its own frame only.
        let vm = build(text, Context::Buffer, |b| unsafe { b.unchecked() });
        assert!(vm.direct.is_some());
        for _ in 0..3 {
            assert_eq!(vm.execute(&mut []).expect("runs"), 0);
        }
    }

    #[test]
    fn direct_runs_give_the_results_and_errors_of_general_ones() {
        let fixed = || Context::Fixed { size: 8, read_only: Vec::new() };
        let cases = [
            ("mov %r0, 0\nexit", Context::Buffer),
            ("mov %r0, %r2\nexit", Context::Buffer),
            ("ldxdw %r0, [%r1+0]\nadd %r0, %r2\nexit", fixed()),
            // The frame starts zeroed on every run.
            ("ldxdw %r0, [%r10-8]\nstdw [%r10-8], 5\nexit", fixed()),
            ("ldxw %r0, [%r1+4]\nstw [%r1+0], 9\nexit", fixed()),
        ];
        let mut compared = 0;
        let mut direct = 0;
        for ((text, context), verified) in cases.iter().flat_map(|c| [(c, false), (c, true)]) {
            let mode = |b: VmBuilder| if verified { b.verified() } else { b.checked() };
            let program = Program::from_asm(text).expect("assembles");
            let Ok(interp) = mode(Vm::builder(program).context(context.clone())).build() else {
                // Reading the frame before writing it does not verify.
                assert!(verified && text.starts_with("ldxdw %r0, [%r10-8]"), "{text}");
                continue;
            };
            let jit = build(text, context.clone(), mode);
            direct += usize::from(jit.direct.is_some());
            for len in [0usize, 4, 8, 9] {
                let mut a: Vec<u8> = (1..=len as u8).collect();
                let mut b = a.clone();
                for _ in 0..2 {
                    // Errors name addresses in each engine's own input: without them.
                    let shown = |r: Result<u64, ExecError>| {
                        let s = format!("{r:?}");
                        match s.find("addr: ") {
                            Some(at) => {
                                let end = s[at + 6..].find(',').map_or(s.len(), |e| at + 6 + e);
                                format!("{}{}", &s[..at], &s[end..])
                            }
                            None => s,
                        }
                    };
                    let (x, y) = (shown(jit.execute(&mut a)), shown(interp.execute(&mut b)));
                    assert_eq!(x, y, "{text}, {len} bytes");
                    assert_eq!(a, b, "{text}");
                    compared += 1;
                }
            }
        }
        // Nine builds (reading the frame first does not verify), six of them direct.
        assert_eq!((compared, direct), (9 * 4 * 2, 6));
    }
}
