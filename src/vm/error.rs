//! Why a [`Vm`](super::Vm) cannot be built.

use crate::link::LinkError;
use crate::verifier::VerifyError;

/// Why a program cannot be prepared for execution.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The program does not fit its environment (unknown helper or map, unresolved pseudo-load).
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The verifier could not prove the program safe (build in checked mode to run it anyway).
    #[error("verification failed: {0}")]
    Verify(#[from] VerifyError),
    /// Shadow mode ([`VmBuilder::shadow`](super::VmBuilder::shadow)) was asked of an engine other than the
    /// interpreter, which alone has it.
    #[error("shadow mode runs on the interpreter only")]
    ShadowNeedsInterpreter,
    /// The JIT could not compile the program for this host.
    #[cfg(feature = "jit")]
    #[error("JIT compilation failed: {0}")]
    Jit(crate::jit::JitError),
}

#[cfg(feature = "jit")]
impl From<crate::jit::JitError> for BuildError {
    fn from(e: crate::jit::JitError) -> BuildError {
        match e {
            crate::jit::JitError::Link(l) => BuildError::Link(l),
            other => BuildError::Jit(other),
        }
    }
}
