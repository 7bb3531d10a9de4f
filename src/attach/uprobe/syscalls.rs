//! Syscall tracepoints in the running process: `tracepoint/syscalls/sys_enter_NAME` and
//! `sys_exit_NAME` programs, run at the entry and return of the libc functions that make the system
//! call (hooked as uprobes are), with the kernel's tracepoint context layouts:
//!
//! - `sys_enter_*`: the common fields (8 bytes: type, flags, preempt count, and the thread id at
//!   offset 4), the system call's number at 8, and its six arguments as 8-byte words from 16;
//! - `sys_exit_*`: the common fields, the number at 8, and the return value at 16 (`-errno` on
//!   failure, as the kernel reports it, where the libc function returned -1).
//!
//! A wrapper whose arguments differ from the system call's is translated: `open(path, flags, mode)`
//! makes `openat(AT_FDCWD, path, flags, mode)`, as glibc's does. Calls glibc makes internally through
//! its own non-cancellable variants (`fopen`, `opendir`, ...), and system calls made without the libc
//! function (inline `syscall` instructions, other libcs), are not seen; [`covered`] lists the system
//! calls and the functions hooked for each.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cell::Cell;

use super::{attach_at, check_program, symbols, AttachError, Slot, Uprobe, PT_REGS_SIZE};
use crate::link::Context;
use crate::vm::Vm;

/// Bytes of a `sys_enter_*` context.
pub const ENTER_SIZE: u32 = 64;
/// Bytes of a `sys_exit_*` context.
pub const EXIT_SIZE: u32 = 24;

/// The context `sys_enter_*` programs are verified against: [`ENTER_SIZE`] read-only bytes.
pub fn enter_context() -> Context {
    Context::Fixed { size: ENTER_SIZE, read_only: core::iter::once(0..ENTER_SIZE).collect() }
}

/// The context `sys_exit_*` programs are verified against: [`EXIT_SIZE`] read-only bytes.
pub fn exit_context() -> Context {
    Context::Fixed { size: EXIT_SIZE, read_only: core::iter::once(0..EXIT_SIZE).collect() }
}

/// Where a system call's argument comes from in its libc function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arg {
    /// The function's parameter of this number (0: the first).
    Param(u8),
    /// A constant (`AT_FDCWD` for `open`).
    Const(i64),
}

/// A libc function that makes a system call: the call's number and its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wrapper {
    nr: i64,
    args: [Arg; 6],
    /// Whether the function returns an `int` (in `eax`; else a 64-bit `ssize_t` or `off_t`).
    int: bool,
}

/// A system call, with the libc functions that make it.
struct Syscall {
    name: &'static str,
    nr: i64,
    /// Whether its libc functions return an `int`.
    int: bool,
    functions: &'static [(&'static str, [Arg; 6])],
}

const AT_FDCWD: i64 = -100;
use Arg::{Const as C, Param as P};
/// The function's parameters as the call's arguments, in order.
const SAME: [Arg; 6] = [P(0), P(1), P(2), P(3), P(4), P(5)];
/// `f(path, ...)` making `g(AT_FDCWD, path, ...)`.
const AT_CWD: [Arg; 6] = [C(AT_FDCWD), P(0), P(1), P(2), P(3), P(4)];

/// The system calls covered (numbered as on this architecture) and the glibc functions hooked for each.
const SYSCALLS: &[Syscall] = &[
    Syscall { name: "read", nr: libc::SYS_read, int: false, functions: &[("read", SAME)] },
    Syscall { name: "write", nr: libc::SYS_write, int: false, functions: &[("write", SAME)] },
    Syscall { name: "close", nr: libc::SYS_close, int: true, functions: &[("close", SAME)] },
    Syscall { name: "lseek", nr: libc::SYS_lseek, int: false, functions: &[("lseek", SAME), ("lseek64", SAME)] },
    Syscall { name: "pread64", nr: libc::SYS_pread64, int: false, functions: &[("pread", SAME), ("pread64", SAME)] },
    Syscall {
        name: "pwrite64",
        nr: libc::SYS_pwrite64,
        int: false,
        functions: &[("pwrite", SAME), ("pwrite64", SAME)],
    },
    Syscall { name: "getpid", nr: libc::SYS_getpid, int: true, functions: &[("getpid", SAME)] },
    Syscall { name: "socket", nr: libc::SYS_socket, int: true, functions: &[("socket", SAME)] },
    Syscall { name: "connect", nr: libc::SYS_connect, int: true, functions: &[("connect", SAME)] },
    Syscall { name: "accept", nr: libc::SYS_accept, int: true, functions: &[("accept", SAME)] },
    Syscall { name: "fsync", nr: libc::SYS_fsync, int: true, functions: &[("fsync", SAME)] },
    Syscall {
        name: "openat",
        nr: libc::SYS_openat,
        int: true,
        functions: &[("openat", SAME), ("openat64", SAME), ("open", AT_CWD), ("open64", AT_CWD)],
    },
    Syscall {
        name: "mkdirat",
        nr: libc::SYS_mkdirat,
        int: true,
        functions: &[("mkdirat", SAME), ("mkdir", [C(AT_FDCWD), P(0), P(1), C(0), C(0), C(0)])],
    },
    Syscall {
        name: "unlinkat",
        nr: libc::SYS_unlinkat,
        int: true,
        functions: &[("unlinkat", SAME), ("unlink", [C(AT_FDCWD), P(0), C(0), C(0), C(0), C(0)])],
    },
    Syscall { name: "accept4", nr: libc::SYS_accept4, int: true, functions: &[("accept4", SAME)] },
];

/// The system calls covered, each with the libc functions hooked for it.
pub fn covered() -> impl Iterator<Item = (&'static str, Vec<&'static str>)> {
    SYSCALLS.iter().map(|s| (s.name, s.functions.iter().map(|f| f.0).collect()))
}

std::thread_local! {
    /// This thread's id, once read.
    static TID: Cell<u32> = const { Cell::new(0) };
}

/// The common fields: type, flags and preempt count 0, the thread id.
fn common() -> [u8; 8] {
    let tid = TID.try_with(|t| {
        if t.get() == 0 {
            // SAFETY: no preconditions.
            t.set(unsafe { libc::gettid() } as u32);
        }
        t.get()
    });
    let mut out = [0u8; 8];
    out[4..].copy_from_slice(&tid.unwrap_or(0).to_ne_bytes());
    out
}

fn word(regs: &[u8; PT_REGS_SIZE as usize], at: usize) -> u64 {
    u64::from_ne_bytes(regs[at..at + 8].try_into().expect("8 bytes"))
}

impl Wrapper {
    /// The `sys_enter_*` context of a call with registers `regs`.
    pub(crate) fn enter_context(&self, regs: &[u8; PT_REGS_SIZE as usize]) -> [u8; ENTER_SIZE as usize] {
        let mut ctx = [0u8; ENTER_SIZE as usize];
        ctx[..8].copy_from_slice(&common());
        ctx[8..16].copy_from_slice(&self.nr.to_ne_bytes());
        for (i, arg) in self.args.iter().enumerate() {
            let v = match *arg {
                Arg::Param(p) => word(regs, super::pt_regs::PARM[p as usize] as usize),
                Arg::Const(c) => c as u64,
            };
            ctx[16 + 8 * i..24 + 8 * i].copy_from_slice(&v.to_ne_bytes());
        }
        ctx
    }

    /// The `sys_exit_*` context of a return with registers `regs` (`rax`: what the function returned,
    /// sign-extended from `eax` for an `int`; `errno` read when it is -1).
    pub(crate) fn exit_context(&self, regs: &[u8; PT_REGS_SIZE as usize]) -> [u8; EXIT_SIZE as usize] {
        let rax = word(regs, super::pt_regs::RC as usize);
        let mut ret = if self.int { i64::from(rax as u32 as i32) } else { rax as i64 };
        if ret == -1 {
            // SAFETY: this thread's errno, set by the function that just returned.
            ret = -i64::from(unsafe { *libc::__errno_location() });
        }
        let mut ctx = [0u8; EXIT_SIZE as usize];
        ctx[..8].copy_from_slice(&common());
        ctx[8..16].copy_from_slice(&self.nr.to_ne_bytes());
        ctx[16..].copy_from_slice(&ret.to_ne_bytes());
        ctx
    }
}

/// Entry or return of a system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TracepointKind {
    /// `sys_enter_NAME`, with [`enter_context`].
    Enter,
    /// `sys_exit_NAME`, with [`exit_context`].
    Exit,
}

/// A program attached to a system call's tracepoint: hooks on each libc function that makes the call.
/// Detached when dropped.
#[derive(Debug)]
pub struct SyscallTracepoint {
    _hooks: Vec<Uprobe>,
}

impl SyscallTracepoint {
    /// Attaches `vm` (verified, built with [`enter_context`] or [`exit_context`]) to the system call
    /// `name` (`openat`, as in `sys_enter_openat`) at entry or exit, in the libc the process loaded.
    pub fn attach(name: &str, kind: TracepointKind, vm: Arc<Vm>) -> Result<SyscallTracepoint, AttachError> {
        let syscall = SYSCALLS.iter().find(|s| s.name == name).ok_or_else(|| AttachError::NoSyscall(name.into()))?;
        let (want, slot) = match kind {
            TracepointKind::Enter => (enter_context(), Slot::SysEnter),
            TracepointKind::Exit => (exit_context(), Slot::SysExit),
        };
        check_program(&vm, &want)?;
        let mut hooks: Vec<Uprobe> = Vec::new();
        let mut seen = Vec::new();
        for &(function, args) in syscall.functions {
            let f = match symbols::find(Some("libc.so.6"), function) {
                Ok(f) => f,
                Err(AttachError::NoSymbol(_)) => continue,
                Err(e) => return Err(e),
            };
            // Aliases (`open` and `open64`) are one function.
            if seen.contains(&f.start) {
                continue;
            }
            seen.push(f.start);
            hooks.push(attach_at(
                &f,
                f.start,
                slot,
                vm.clone(),
                Some(Wrapper { nr: syscall.nr, args, int: syscall.int }),
            )?);
        }
        if hooks.is_empty() {
            return Err(AttachError::NoSymbol(syscall.functions[0].0.into()));
        }
        Ok(SyscallTracepoint { _hooks: hooks })
    }

    /// Detaches, once the runs under way have finished (as dropping it does).
    pub fn detach(self) {}
}
