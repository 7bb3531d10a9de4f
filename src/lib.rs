//! An embeddable userspace eBPF runtime.
//!
//! Programs come as bytecode ([`Program::from_bytes`]) or assembly text ([`Program::from_asm`]); a
//! [`Vm`] prepares one for an engine and runs it on a memory buffer:
//!
//! ```
//! use ebpf_vm::{Program, Vm};
//!
//! // Sum the bytes of the input buffer (r1 = pointer, r2 = length).
//! let program = Program::from_asm("
//!     mov %r0, 0
//!     mov %r3, 0
//! loop:
//!     jge %r3, %r2, exit      # index < length: the byte at r1 + r3 exists
//!     mov %r4, %r1
//!     add %r4, %r3
//!     ldxb %r4, [%r4]
//!     add %r0, %r4
//!     add %r3, 1
//!     ja loop
//! exit:
//!     exit
//! ")?;
//! let vm = Vm::builder(program).build()?;
//! assert_eq!(vm.execute(&mut [1, 2, 3, 4])?, 10);
//! # Ok::<(), ebpf_vm::Error>(())
//! ```
//!
//! Execution is *verified* by default: when the `Vm` is built, the [`Verifier`] proves that every
//! memory access stays inside its region, that nothing uninitialised is read, that helpers get the
//! arguments their signatures name and that every loop ends; the program then runs with no runtime
//! checks. A program it cannot prove safe is refused with a [`VerifyError`] naming the instruction and
//! the rule. Such programs can still run *checked* ([`VmBuilder::checked`]): every load and store is
//! tested against the memory the execution owns, and a miss is [`ExecError::OutOfBounds`] with the
//! instruction index.

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

#[cfg(feature = "std")]
pub mod attach;
#[cfg(feature = "elf")]
pub mod elf;
mod error;
pub mod helpers;
mod host;
mod interpreter;
pub mod isa;
#[cfg(feature = "jit")]
pub mod jit;
pub mod link;
pub mod maps;
pub mod memory;
pub mod program;
pub mod verifier;
pub mod vm;

pub use error::Error;
pub use helpers::{CallContext, Helper, HelperError, HelperSig};
pub use link::{Context, Env, ExecError, LinkError, Uninit};
pub use program::{Program, ProgramError};
pub use verifier::{Verified, Verifier, VerifyError};
#[cfg(feature = "elf")]
pub use vm::Instance;
pub use vm::{BuildError, Engine, Mode, Vm, VmBuilder};
