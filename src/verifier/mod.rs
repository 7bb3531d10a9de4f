//! The verifier: abstract interpretation of a linked program set over its control-flow graph, proving
//! before the first execution that every memory access stays inside its region, that no register or
//! stack byte is read before it is written, that helpers get arguments of the kinds their signatures
//! name, that every ring-buffer record is released, and that every loop ends.
//!
//! Its output, [`Verified`], is a proof token bound to the programs, environment and context it was
//! made for; with it the engines run without runtime memory checks.
//!
//! Two rules are worth knowing. A store at a *variable* stack offset makes every byte it may touch
//! readable, as the kernel's verifier does for privileged programs: the engines start every frame
//! zeroed, so a byte such a store skipped reads as 0 (a stack array filled in a loop can then be read
//! at any index). Helpers that write memory count as writing the least number of bytes their size
//! argument may be. Atomics need an address proven aligned: on the stack, map values and ring-buffer
//! records at an offset known modulo the size, never on the input or the context, whose alignment is
//! the host's. Frozen read-only data (`.rodata` after [`Map::freeze`](crate::maps::Map::freeze), which
//! building from an [`Instance`](crate::Instance) does) is read as constants, so configuration set
//! before loading can bound loops.

mod access;
mod analysis;
mod call;
mod error;
mod liveness;
mod relation;
mod scalar;
mod state;
mod step;
mod tnum;
mod value;

pub use error::{RegionKind, VerifyError, VerifyErrorKind};

use alloc::sync::Arc;

use crate::link::Linked;

/// Default for [`Options::max_processed`].
pub const DEFAULT_MAX_PROCESSED: u64 = 1_000_000;
/// Default for [`Options::max_loop_iterations`].
pub const DEFAULT_MAX_LOOP_ITERATIONS: u64 = 1 << 32;

/// What the verifier allows and how much work it may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// Most instructions the analysis may process (each visit of an instruction counts) before it gives
    /// up with [`VerifyErrorKind::TooComplex`].
    pub max_processed: u64,
    /// Most iterations a loop may be proven to run; a loop whose proven bound is larger is refused as
    /// [`VerifyErrorKind::UnboundedLoop`]. The default, 2^32, admits a loop over every byte of the
    /// largest input a buffer context takes.
    pub max_loop_iterations: u64,
    /// Lets pointers become visible to the host as numbers (stored in maps, the context or the input,
    /// passed to helpers as numbers, returned), as the kernel's privileged mode does. Default: refused.
    pub allow_pointer_leaks: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_processed: DEFAULT_MAX_PROCESSED,
            max_loop_iterations: DEFAULT_MAX_LOOP_ITERATIONS,
            allow_pointer_leaks: false,
        }
    }
}

/// Statistics of one verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Instructions processed (each visit counts).
    pub processed: u64,
    /// Loops proven to end.
    pub loops: u64,
}

/// Proof that a linked program set is safe to run without runtime checks. Only [`Verifier::verify`]
/// makes one; it holds the programs it was made for, so it cannot vouch for others.
#[derive(Debug, Clone)]
pub struct Verified {
    linked: Arc<Linked>,
    stats: Stats,
}

impl Verified {
    /// The programs, environment and context that were proven safe.
    pub fn linked(&self) -> &Arc<Linked> {
        &self.linked
    }

    /// What the verification took.
    pub fn stats(&self) -> Stats {
        self.stats
    }
}

/// The verifier, configured by [`Options`].
#[derive(Debug, Clone, Default)]
pub struct Verifier {
    options: Options,
}

impl Verifier {
    /// A verifier with the default options.
    pub fn new() -> Verifier {
        Verifier::default()
    }

    /// A verifier with these options.
    pub fn with_options(options: Options) -> Verifier {
        Verifier { options }
    }

    /// The options.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Proves `linked` (the entry program and every tail-call target) safe against its environment
    /// and context description, or says which instruction breaks which rule.
    pub fn verify(&self, linked: &Arc<Linked>) -> Result<Verified, VerifyError> {
        self.verify_logged(linked, None)
    }

    /// As [`verify`](Verifier::verify), and writes the abstract state at each instruction to `log`, as
    /// the kernel's verifier log does.
    pub fn verify_logged(
        &self,
        linked: &Arc<Linked>,
        mut log: Option<&mut alloc::string::String>,
    ) -> Result<Verified, VerifyError> {
        if !linked.env().context().fields_fit() {
            return Err(VerifyError {
                program: linked.entry(),
                pc: 0,
                insn: alloc::string::String::new(),
                kind: VerifyErrorKind::Unsupported {
                    what: "a packet context whose fields overlap or leave the struct",
                },
                state: alloc::string::String::new(),
            });
        }
        let mut stats = Stats::default();
        for program in 0..linked.programs().len() {
            let mut checker = analysis::Checker::new(linked, program, &self.options, log.as_deref_mut());
            checker.run()?;
            stats.processed += checker.processed;
            stats.loops += checker.loops_proven;
        }
        Ok(Verified { linked: linked.clone(), stats })
    }
}
