//! An agent for unmodified processes: a process started with this library in `LD_PRELOAD` reads which
//! BPF object to load from its environment, creates the object's maps in shared memory (where other
//! processes, `ebpf-vm trace` and `ebpf-vm maps --attach`, read them), attaches every uprobe,
//! uretprobe and syscall tracepoint program of it, and then runs as it would have.
//!
//! The environment it reads (and removes, so that the process's children run untraced):
//! - [`OBJECT`]: the object's path;
//! - [`OUTPUT`]: a file descriptor that `bpf_printk` lines and the agent's own errors go to (else
//!   standard error).
//!
//! Maps of the kinds [`ebpf_vm::maps::SharedMap`] holds (arrays, per-CPU arrays, hash, per-CPU hash
//! and LRU hash maps, ring buffers) are created as `/ebpf-vm.PID.NAME`
//! ([`ebpf_vm::maps::SharedMap::process_map_name`]); the others, and the object's global data, stay
//! in the process. An object the agent cannot load or attach is reported on [`OUTPUT`] and nothing is
//! attached: the process runs unchanged.

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod agent;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub use agent::{shared_kind, OBJECT, OUTPUT};
