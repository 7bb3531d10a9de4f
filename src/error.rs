//! The crate-level error: any stage's error.

use crate::isa::{AsmError, DecodeError};
use crate::program::ProgramError;
use crate::vm::{BuildError, ExecError};

/// An error from any stage: assembling, decoding, building or executing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Assembly text is invalid.
    #[error("assembly: {0}")]
    Asm(#[from] AsmError),
    /// The program is not valid.
    #[error("program: {0}")]
    Program(#[from] ProgramError),
    /// The program cannot run in its environment.
    #[error("build: {0}")]
    Build(#[from] BuildError),
    /// The execution failed.
    #[error("execution: {0}")]
    Exec(#[from] ExecError),
}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Error {
        Error::Program(ProgramError::Decode(e))
    }
}
