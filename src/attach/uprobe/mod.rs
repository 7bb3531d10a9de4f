//! Uprobes and uretprobes in the running process (Linux, x86_64 and aarch64): a verified program runs
//! at the entry of a function, or when it returns, of the executable or of a library it has loaded.
//!
//! The function's first instructions are replaced by a jump to a trampoline made for it. The
//! trampoline saves every register into a `struct pt_regs` laid out as the kernel's for the
//! architecture (so libbpf's `BPF_KPROBE`, `BPF_KRETPROBE`, `PT_REGS_PARM1..6` and `PT_REGS_RC` read it
//! unchanged with `-D__TARGET_ARCH_x86` or `-D__TARGET_ARCH_arm64`; [`pt_regs`] names the offsets), the
//! vector registers beside it, and calls the probe; it then restores them, runs the displaced
//! instructions (re-encoded for their new address: PC-relative operands and branches fixed up) and
//! jumps back. A return probe also swaps the return address (x86_64: on the stack; aarch64: in the
//! link register) for a return trampoline's and keeps the real one on a per-thread stack; the return
//! trampoline runs the program with the return value in the `pt_regs` and returns where the function
//! would have.
//!
//! Programs see the registers read-only ([`context`]) and must be verified. The jump is written with
//! one atomic store, and a detach waits for the runs under way, so attaching and detaching are safe
//! while other threads call the function; trampolines are never freed (a thread may be inside one
//! when its probe detaches), and a later attach at the same address reuses them.
//!
//! x86_64: when the jump (5 bytes) replaces more than one instruction, the other threads are stopped
//! while it is written (a real-time signal, `SIGRTMIN + 6`), and one stopped between two of them is
//! moved to the same instruction in the trampoline's copy. aarch64: the branch replaces one
//! instruction; the other threads are stopped while it is written or removed (the architecture lets a
//! thread run an instruction another rewrites only between a few kinds), threads that block the signal
//! excepted, and the caches are cleaned for the new code.
//!
//! Not handled: unwinding (a C++ exception, a Rust panic) out of a function while a return probe
//! holds its return address, whose trampoline has no unwind information (the kernel's uretprobes
//! share this); on x86_64, probes at addresses whose jump would straddle an 8-byte boundary (refused);
//! on aarch64, probed instructions that load a literal into a vector register (refused); return probes
//! deeper than 64 nested calls on one thread (the deeper calls run their return programs not at all);
//! the upper halves of the AVX registers (saved only as far as SSE's 128 bits).

#[cfg(target_arch = "aarch64")]
mod arm64;
mod object;
mod pages;
#[cfg(target_arch = "x86_64")]
mod patch;
mod quiesce;
mod symbols;
pub mod syscalls;
mod trampoline;
#[cfg(target_arch = "x86_64")]
mod x86;

/// Writing and reading the branch at a probed address, on this architecture.
#[cfg(target_arch = "aarch64")]
use arm64 as code;
#[cfg(target_arch = "x86_64")]
use patch as code;

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

pub use object::{attach_object, attach_object_printing, parse_section, AttachPoint, Attachment};

use super::readers;
use crate::link::Context;
use crate::vm::{Mode, Vm};

/// Bytes of the `struct pt_regs` programs get (x86_64: 21 registers of 8 bytes).
#[cfg(target_arch = "x86_64")]
pub const PT_REGS_SIZE: u32 = 168;

/// Bytes of the `struct user_pt_regs` programs get (aarch64: 31 registers, `sp`, `pc` and `pstate`,
/// 8 bytes each).
#[cfg(target_arch = "aarch64")]
pub const PT_REGS_SIZE: u32 = 272;

/// Offsets of the registers in [`PT_REGS_SIZE`] bytes, as the kernel's `struct pt_regs` for x86_64,
/// and the names libbpf's `PT_REGS_PARM1..6`, `PT_REGS_RC`, `PT_REGS_SP` and `PT_REGS_IP` read.
#[cfg(target_arch = "x86_64")]
pub mod pt_regs {
    /// `r15`.
    pub const R15: u32 = 0;
    /// `r14`.
    pub const R14: u32 = 8;
    /// `r13`.
    pub const R13: u32 = 16;
    /// `r12`.
    pub const R12: u32 = 24;
    /// `rbp`.
    pub const RBP: u32 = 32;
    /// `rbx`.
    pub const RBX: u32 = 40;
    /// `r11`.
    pub const R11: u32 = 48;
    /// `r10`.
    pub const R10: u32 = 56;
    /// `r9`: the sixth argument.
    pub const R9: u32 = 64;
    /// `r8`: the fifth argument.
    pub const R8: u32 = 72;
    /// `rax`: the return value, in a return probe.
    pub const RAX: u32 = 80;
    /// `rcx`: the fourth argument.
    pub const RCX: u32 = 88;
    /// `rdx`: the third argument.
    pub const RDX: u32 = 96;
    /// `rsi`: the second argument.
    pub const RSI: u32 = 104;
    /// `rdi`: the first argument.
    pub const RDI: u32 = 112;
    /// `orig_rax`: -1 (no system call).
    pub const ORIG_RAX: u32 = 120;
    /// `rip`: the probed address; in a return probe, the address the function returns to.
    pub const RIP: u32 = 128;
    /// `cs`: 0.
    pub const CS: u32 = 136;
    /// `eflags`.
    pub const EFLAGS: u32 = 144;
    /// `rsp`: at the probed address (at a function's entry, where its return address is).
    pub const RSP: u32 = 152;
    /// `ss`: 0.
    pub const SS: u32 = 160;

    /// The arguments, first to sixth (`PT_REGS_PARM1..6`).
    pub const PARM: [u32; 6] = [RDI, RSI, RDX, RCX, R8, R9];
    /// The return value (`PT_REGS_RC`).
    pub const RC: u32 = RAX;
    /// The stack pointer (`PT_REGS_SP`).
    pub const SP: u32 = RSP;
    /// The instruction pointer (`PT_REGS_IP`).
    pub const IP: u32 = RIP;
}

/// Offsets of the registers in [`PT_REGS_SIZE`] bytes, as the kernel's `struct user_pt_regs` for
/// aarch64 (which libbpf's `PT_REGS_*` read with `-D__TARGET_ARCH_arm64`), and the names libbpf's
/// `PT_REGS_PARM1..6`, `PT_REGS_RC`, `PT_REGS_SP` and `PT_REGS_IP` read.
#[cfg(target_arch = "aarch64")]
pub mod pt_regs {
    /// `x0` .. `x30` (`x30`: the link register, the return address at a function's entry).
    pub const fn x(n: u32) -> u32 {
        8 * n
    }
    /// `sp`: at the probed address.
    pub const SP: u32 = 248;
    /// `pc`: the probed address; in a return probe, the address the function returns to.
    pub const PC: u32 = 256;
    /// `pstate` (the condition flags).
    pub const PSTATE: u32 = 264;

    /// The arguments, first to sixth (`PT_REGS_PARM1..6`: `x0` .. `x5`).
    pub const PARM: [u32; 6] = [0, 8, 16, 24, 32, 40];
    /// The return value (`PT_REGS_RC`: `x0`).
    pub const RC: u32 = 0;
    /// The link register, `x30`.
    pub const LR: u32 = 240;
    /// The instruction pointer (`PT_REGS_IP`).
    pub const IP: u32 = PC;
}

/// The context probe programs are verified against: [`PT_REGS_SIZE`] bytes, all read-only.
pub fn context() -> Context {
    Context::Fixed { size: PT_REGS_SIZE, read_only: core::iter::once(0..PT_REGS_SIZE).collect() }
}

/// Where a probe goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The function `name`, `offset` bytes into it: in the file `path` names when given (a path, the
    /// executable as `/proc/self/exe`, or a library's file name such as `libc.so.6`), else in the
    /// executable, then in the libraries in the order they are mapped.
    Symbol {
        /// The file, if not any.
        path: Option<String>,
        /// The function's name.
        name: String,
        /// Bytes into the function (0: its entry).
        offset: u64,
    },
    /// An address in a function some mapped file's symbol table knows.
    Address(u64),
}

impl Target {
    /// The entry of the function `name` in any mapped file.
    pub fn symbol(name: impl Into<String>) -> Target {
        Target::Symbol { path: None, name: name.into(), offset: 0 }
    }
}

/// When the program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// At the target address, before the instruction there (`SEC("uprobe/...")`).
    Entry,
    /// When the function returns, with its return value in `rax` (`SEC("uretprobe/...")`); the target
    /// must be a function's entry.
    Return,
}

/// Why a probe cannot be attached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttachError {
    /// No mapped file has a function of that name.
    #[error("no function `{0}` in the executable or its loaded libraries")]
    NoSymbol(String),
    /// No mapped file is what the path names.
    #[error("no loaded file matches `{0}`")]
    NoFile(String),
    /// No function known to a symbol table holds the address.
    #[error("no function holds address {0:#x}")]
    NoFunctionAt(u64),
    /// The address is not where an instruction of the function starts.
    #[error("address {0:#x} is not the start of an instruction")]
    NotAnInstruction(u64),
    /// The function (with its padding) is shorter than the jump.
    #[error("function `{name}` is too short to patch ({size} bytes with its padding, 5 needed)")]
    TooShort {
        /// The function.
        name: String,
        /// Its bytes, padding included.
        size: u64,
    },
    /// A branch of the function lands inside the bytes the jump would replace.
    #[error("function `{name}` branches into its first bytes (from {from:#x}): they cannot be replaced")]
    BranchIntoPatch {
        /// The function.
        name: String,
        /// The branch's address.
        from: u64,
    },
    /// The function's code does not decode.
    #[error("function `{name}` does not decode at {at:#x}")]
    Undecodable {
        /// The function.
        name: String,
        /// Where decoding failed.
        at: u64,
    },
    /// The jump at this address would straddle an 8-byte boundary and cannot be written atomically.
    #[error("a jump at {0:#x} cannot be written in one atomic store")]
    NotAtomic(u64),
    /// No memory for the trampoline within a jump's reach of the code.
    #[error("no memory for a trampoline within 2 GiB of {0:#x}")]
    NoMemoryNear(u64),
    /// The code changed under the probe (someone else patched it).
    #[error("the code at {0:#x} changed under the probe")]
    Changed(u64),
    /// A page's protection could not be changed (the error number).
    #[error("mprotect failed: errno {0}")]
    Protect(i32),
    /// Another thread of the process did not stop (it blocks the signal used) while a jump over
    /// several instructions was to be written; nothing was changed.
    #[error("a thread of the process did not stop for the patch (does it block SIGRTMIN+6?)")]
    ThreadsDidNotStop,
    /// The process's maps or files could not be read.
    #[error("reading the process: {0}")]
    Process(String),
    /// A program of this kind is already attached at this address.
    #[error("{what} is already attached at {addr:#x}")]
    AlreadyAttached {
        /// The address.
        addr: u64,
        /// What is attached.
        what: &'static str,
    },
    /// A return probe was asked for inside a function, not at its entry.
    #[error("a return probe must be at a function's entry, not {0} bytes into it")]
    ReturnInside(u64),
    /// The program was not built in verified mode.
    #[error("probe programs must be verified (this one is {0:?})")]
    NotVerified(Mode),
    /// The program was built for another context than [`context`].
    #[error("probe programs must be built with uprobe::context() (pt_regs, 168 read-only bytes)")]
    WrongContext,
    /// No system call of that name is covered (see `syscalls::covered`).
    #[error("no tracepoint for system call `{0}`")]
    NoSyscall(String),
    /// A program's section names a probe this cannot read.
    #[error("section `{0}`: expected uprobe/PATH:FUNCTION[+OFFSET] or uretprobe/PATH:FUNCTION")]
    BadSection(String),
    /// A program of an object is in a section that is no uprobe or uretprobe.
    #[error("program `{program}` (section `{section}`) is not a uprobe or uretprobe")]
    UnsupportedSection {
        /// The program.
        program: String,
        /// Its section.
        section: String,
    },
    /// A program of an object does not build (verified, against the pt_regs context).
    #[error("program `{program}`: {error}")]
    Build {
        /// The program.
        program: String,
        /// Why.
        error: String,
    },
    /// The trampoline could not be assembled.
    #[error("assembling the trampoline: {0}")]
    Assemble(String),
    /// A pattern matches more functions than [`MAX_MATCHES`].
    #[error("pattern `{pattern}` matches {count} functions (at most {MAX_MATCHES} are probed at once)")]
    TooManyMatches {
        /// The pattern.
        pattern: String,
        /// How many functions it matches.
        count: usize,
    },
}

/// The most functions [`Uprobe::attach_matching`] probes with one pattern (each probe takes a page of
/// trampoline code).
pub const MAX_MATCHES: usize = 1024;

/// What runs at a site: a program on the registers at entry or at return, or a syscall tracepoint
/// program at the entry or return of a libc wrapper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Entry = 0,
    Return = 1,
    SysEnter = 2,
    SysExit = 3,
}

impl From<ProbeKind> for Slot {
    fn from(kind: ProbeKind) -> Slot {
        match kind {
            ProbeKind::Entry => Slot::Entry,
            ProbeKind::Return => Slot::Return,
        }
    }
}

/// One patched address: its trampoline and the programs attached there. Never freed.
struct Site {
    addr: u64,
    /// The bytes the jump replaces, and the jump.
    original: [u8; code::JUMP_LEN as usize],
    jump: [u8; code::JUMP_LEN as usize],
    /// For each displaced instruction after the first: its address, and its copy's in the trampoline.
    moves: Vec<(u64, u64)>,
    /// The programs by [`Slot`], or null: `Box<Arc<Vm>>` pointers, freed after a grace period.
    programs: [AtomicPtr<Arc<Vm>>; 4],
    /// The system call the function wraps, once a tracepoint attached here.
    syscall: OnceLock<syscalls::Wrapper>,
    /// Calls whose return could not be followed (the thread's return stack was full).
    missed: AtomicU64,
}

impl Site {
    fn slot(&self, slot: Slot) -> &AtomicPtr<Arc<Vm>> {
        &self.programs[slot as usize]
    }

    /// Whether anything runs when the function returns.
    fn follows_returns(&self) -> bool {
        !self.slot(Slot::Return).load(Ordering::Acquire).is_null()
            || !self.slot(Slot::SysExit).load(Ordering::Acquire).is_null()
    }
}

/// Every site made so far, and the lock attach and detach hold.
static SITES: Mutex<Vec<&'static Site>> = Mutex::new(Vec::new());

/// A program attached at a function's entry or return. Detached when dropped (or by
/// [`detach`](Uprobe::detach)), after the runs under way have finished.
#[derive(Debug)]
pub struct Uprobe {
    addr: u64,
    slot: Slot,
}

impl core::fmt::Debug for Site {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Site").field("addr", &self.addr).finish()
    }
}

/// The function `target` names and the address in it.
fn resolve(target: &Target) -> Result<(symbols::Function, u64), AttachError> {
    Ok(match target {
        Target::Symbol { path, name, offset } => {
            let f = symbols::find(path.as_deref(), name)?;
            let addr = f.start.checked_add(*offset).ok_or(AttachError::NoFunctionAt(f.start))?;
            (f, addr)
        }
        Target::Address(addr) => (symbols::containing(*addr)?, *addr),
    })
}

/// Checks that `vm` is verified and built for `want`.
fn check_program(vm: &Vm, want: &Context) -> Result<(), AttachError> {
    if vm.mode() != Mode::Verified {
        return Err(AttachError::NotVerified(vm.mode()));
    }
    if vm.env().context() != want {
        return Err(AttachError::WrongContext);
    }
    Ok(())
}

/// Attaches `vm` in `slot` at `addr` of `function` (the syscall `wrapper` for tracepoint slots).
fn attach_at(
    function: &symbols::Function,
    addr: u64,
    slot: Slot,
    vm: Arc<Vm>,
    wrapper: Option<syscalls::Wrapper>,
) -> Result<Uprobe, AttachError> {
    if matches!(slot, Slot::Return | Slot::SysExit) {
        if addr != function.start {
            return Err(AttachError::ReturnInside(addr - function.start));
        }
        trampoline::prepare_return()?;
    }
    let mut sites = SITES.lock().unwrap_or_else(PoisonError::into_inner);
    let site = match sites.iter().find(|s| s.addr == addr) {
        Some(site) => *site,
        None => {
            let site = make_site(function, addr)?;
            sites.push(site);
            site
        }
    };
    if let Some(w) = wrapper {
        if *site.syscall.get_or_init(|| w) != w {
            return Err(AttachError::AlreadyAttached { addr, what: "a tracepoint of another system call" });
        }
    }
    let cell = site.slot(slot);
    if !cell.load(Ordering::Acquire).is_null() {
        return Err(AttachError::AlreadyAttached { addr, what: slot.name() });
    }
    cell.store(Box::into_raw(Box::new(vm)), Ordering::Release);
    // SAFETY: the site's code address, written only under `SITES`; the jump goes to the site's
    // trampoline, which is complete and executable.
    match unsafe { code::current(addr) } {
        now if now == site.jump => {}
        // SAFETY: as above. With several instructions replaced, the other threads are stopped first
        // and those stopped between them moved to the trampoline's copies.
        _ => {
            match quiesce::with_threads_stopped(&site.moves, || unsafe { code::swap(addr, site.original, site.jump) }) {
                Ok(()) => {}
                Err(e) => {
                    let vm = cell.swap(core::ptr::null_mut(), Ordering::AcqRel);
                    // SAFETY: from `Box::into_raw` just above; no run could load it (not patched).
                    drop(unsafe { Box::from_raw(vm) });
                    return Err(e);
                }
            }
        }
    }
    Ok(Uprobe { addr, slot })
}

impl Slot {
    fn name(self) -> &'static str {
        match self {
            Slot::Entry => "an entry probe",
            Slot::Return => "a return probe",
            Slot::SysEnter => "a sys_enter tracepoint",
            Slot::SysExit => "a sys_exit tracepoint",
        }
    }
}

impl Uprobe {
    /// Attaches `vm` (verified, built with [`context`]) at `target`, to run at entry or at return.
    pub fn attach(target: &Target, kind: ProbeKind, vm: Arc<Vm>) -> Result<Uprobe, AttachError> {
        check_program(&vm, &context())?;
        let (function, addr) = resolve(target)?;
        attach_at(&function, addr, kind.into(), vm, None)
    }

    /// Attaches `vm` at the entry (or return) of every function of the file `path` names (as in
    /// [`Target::Symbol`]) whose name matches the glob `pattern` (`*` any characters, `?` one), as
    /// libbpf's `uprobe.multi` does: one probe per function, aliases of one function once. Fails,
    /// leaving nothing attached, if no function matches, more than [`MAX_MATCHES`] do, or one of them
    /// cannot be probed.
    pub fn attach_matching(
        path: &str,
        pattern: &str,
        kind: ProbeKind,
        vm: Arc<Vm>,
    ) -> Result<Vec<Uprobe>, AttachError> {
        check_program(&vm, &context())?;
        let functions = symbols::find_matching(path, pattern)?;
        if functions.is_empty() {
            return Err(AttachError::NoSymbol(pattern.into()));
        }
        if functions.len() > MAX_MATCHES {
            return Err(AttachError::TooManyMatches { pattern: pattern.into(), count: functions.len() });
        }
        // An error drops (detaches) the probes attached before it.
        functions.iter().map(|f| attach_at(f, f.start, kind.into(), vm.clone(), None)).collect()
    }

    /// The probed address.
    pub fn address(&self) -> u64 {
        self.addr
    }

    /// Detaches the probe, once the runs under way have finished (as dropping it does).
    pub fn detach(self) {}

    /// Calls at this probe's site whose return could not be followed (return probes), so far.
    pub fn missed(&self) -> u64 {
        let sites = SITES.lock().unwrap_or_else(PoisonError::into_inner);
        sites.iter().find(|s| s.addr == self.addr).map_or(0, |s| s.missed.load(Ordering::Relaxed))
    }
}

impl Drop for Uprobe {
    fn drop(&mut self) {
        let sites = SITES.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(site) = sites.iter().find(|s| s.addr == self.addr) else { return };
        let vm = site.slot(self.slot).swap(core::ptr::null_mut(), Ordering::AcqRel);
        if site.programs.iter().all(|p| p.load(Ordering::Acquire).is_null()) {
            // Nothing left: the original bytes back. (A failure leaves the jump, whose trampoline then
            // runs nothing.)
            // SAFETY: the site's code address, written only under `SITES`. (On aarch64 the other threads
            // are stopped meanwhile: the architecture does not let them run an instruction rewritten
            // into anything but a few kinds.)
            #[cfg(target_arch = "x86_64")]
            let _ = unsafe { code::swap(site.addr, site.jump, site.original) };
            #[cfg(target_arch = "aarch64")]
            let _ = quiesce::with_threads_stopped(&[], || unsafe { code::swap(site.addr, site.jump, site.original) });
        }
        readers::synchronize();
        if !vm.is_null() {
            // SAFETY: from `Box::into_raw` in `attach_at`; unpublished, and every probe run that may
            // have loaded it has ended.
            drop(unsafe { Box::from_raw(vm) });
        }
    }
}

impl Site {
    /// A site at `addr` with nothing attached, never freed (trampolines point at it).
    fn leaked(
        addr: u64,
        original: [u8; code::JUMP_LEN as usize],
        jump: [u8; code::JUMP_LEN as usize],
    ) -> &'static mut Site {
        Box::leak(Box::new(Site {
            addr,
            original,
            jump,
            moves: Vec::new(),
            programs: [const { AtomicPtr::new(core::ptr::null_mut()) }; 4],
            syscall: OnceLock::new(),
            missed: AtomicU64::new(0),
        }))
    }
}

/// Writes a trampoline's `bytes` into its `page` (from `code::page_near`) and makes it executable.
fn install(page: *mut u8, bytes: &[u8]) -> Result<(), AttachError> {
    if bytes.len() > 4096 {
        return Err(AttachError::Assemble("the trampoline does not fit its page".into()));
    }
    // SAFETY: the page is ours, writable, and 4096 bytes long; nothing runs it yet.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), page, bytes.len()) };
    code::seal(page)
}

/// A new site at `addr` in `f`: the displaced instructions checked, the trampoline written.
#[cfg(target_arch = "x86_64")]
fn make_site(f: &symbols::Function, addr: u64) -> Result<&'static Site, AttachError> {
    let displaced = patch::plan(f, addr)?;
    if !patch::atomic_at(addr) {
        return Err(AttachError::NotAtomic(addr));
    }
    // SAFETY: code of a loaded file (`plan` read it).
    let original = unsafe { patch::current(addr) };
    let page = patch::page_near(addr)?;
    let jump = patch::jump(addr, page as u64).ok_or(AttachError::NoMemoryNear(addr))?;
    let site = Site::leaked(addr, original, jump);
    let (code, copies) =
        x86::entry(page as u64, &raw const *site as u64, addr, &displaced.instructions, trampoline::entry_handler())?;
    site.moves = displaced.instructions.iter().map(iced_x86::Instruction::ip).zip(copies).skip(1).collect();
    install(page, &code)?;
    Ok(site)
}

/// A new site at `addr` in `f`: the probed instruction checked, the trampoline written.
#[cfg(target_arch = "aarch64")]
fn make_site(f: &symbols::Function, addr: u64) -> Result<&'static Site, AttachError> {
    let insn = arm64::plan(f, addr)?;
    // SAFETY: code of a loaded file (`plan` read it), 4-aligned.
    let original = unsafe { arm64::current(addr) };
    let page = arm64::page_near(addr)?;
    let jump = arm64::jump(addr, page as u64).ok_or(AttachError::NoMemoryNear(addr))?;
    let site = Site::leaked(addr, original, jump);
    let code = arm64::entry_code(page as u64, &raw const *site as u64, addr, insn, trampoline::entry_handler())?;
    install(page, &code)?;
    Ok(site)
}
