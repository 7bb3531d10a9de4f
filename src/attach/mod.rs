//! Attach points: places in a host's code, or in the code of the running process, where attached
//! programs run.
//!
//! - [`HookPoint`]: a named point a host declares in its own code and fires with a context; programs
//!   attach and detach at run time from any thread.

mod hook;
pub(crate) mod readers;

pub use hook::{HookId, HookPoint};
#[cfg(all(feature = "attach", target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
pub mod uprobe;
