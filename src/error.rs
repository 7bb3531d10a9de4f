//! The crate-level error: any stage's error, so that one `?` serves a whole embedding.

use crate::isa::{AsmError, DecodeError};
use crate::link::{ExecError, LinkError};
use crate::maps::MapError;
use crate::program::ProgramError;
use crate::vm::BuildError;

/// An error from any stage: assembling, decoding, loading an object, creating maps, building or
/// executing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The program is not valid (including invalid assembly text and bytecode).
    #[error("program: {0}")]
    Program(#[from] ProgramError),
    /// An object file cannot be read.
    #[cfg(feature = "elf")]
    #[error("object: {0}")]
    Elf(#[from] crate::elf::ElfError),
    /// An object's maps cannot be created.
    #[cfg(feature = "elf")]
    #[error("instance: {0}")]
    Instance(#[from] crate::vm::InstanceError),
    /// A map operation failed.
    #[error("map: {0}")]
    Map(#[from] MapError),
    /// The program cannot be built to run in its environment.
    #[error("build: {0}")]
    Build(#[from] BuildError),
    /// The execution failed.
    #[error("execution: {0}")]
    Exec(#[from] ExecError),
}

impl From<AsmError> for Error {
    fn from(e: AsmError) -> Error {
        Error::Program(ProgramError::Asm(e))
    }
}

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Error {
        Error::Program(ProgramError::Decode(e))
    }
}

impl From<LinkError> for Error {
    fn from(e: LinkError) -> Error {
        Error::Build(BuildError::Link(e))
    }
}

#[cfg(feature = "jit")]
impl From<crate::jit::JitError> for Error {
    fn from(e: crate::jit::JitError) -> Error {
        Error::Build(e.into())
    }
}
