//! What the trampolines call (the programs run, returns followed with a per-thread stack of the return
//! addresses that return probes swap out) and the one return trampoline; the machine code itself is
//! the architecture's (`x86`, `arm64`).

use core::cell::Cell;
use core::sync::atomic::Ordering;
use std::sync::OnceLock;

use super::{readers, AttachError, Site, Slot, PT_REGS_SIZE};

/// The address of the function entry trampolines call.
pub(super) fn entry_handler() -> u64 {
    on_entry as *const () as u64
}

/// The return trampoline, where probed functions with a return probe return: calls [`on_return`],
/// which hands back the real return address, and returns there.
fn return_trampoline() -> Result<u64, AttachError> {
    static TRAMPOLINE: OnceLock<Result<u64, AttachError>> = OnceLock::new();
    TRAMPOLINE
        .get_or_init(|| {
            let handler = on_return as *const () as u64;
            let page = super::code::page_near(handler)?;
            #[cfg(target_arch = "x86_64")]
            let code = super::x86::return_code(page as u64, handler)?;
            #[cfg(target_arch = "aarch64")]
            let code = super::arm64::return_code(handler);
            super::install(page, &code)?;
            Ok(page as u64)
        })
        .clone()
}

/// Makes the return trampoline now (attach calls it, so that no probe makes it on a hot path).
pub(super) fn prepare_return() -> Result<(), AttachError> {
    return_trampoline().map(|_| ())
}

/// Calls followed by a return probe on one thread, innermost last.
const RETURNS: usize = 64;

/// A call whose return address a return probe swapped out.
#[derive(Clone, Copy)]
struct Pending {
    site: *const Site,
    /// The real return address.
    to: u64,
    /// The stack pointer at the function's entry.
    slot: u64,
}

const NO_CALL: Pending = Pending { site: core::ptr::null(), to: 0, slot: 0 };

std::thread_local! {
    /// Whether this thread is running a probe (a probed function called from a program is not probed).
    static BUSY: Cell<bool> = const { Cell::new(false) };
    static PENDING: [Cell<Pending>; RETURNS] = const { [const { Cell::new(NO_CALL) }; RETURNS] };
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Runs `vm` on the `pt_regs` at `regs`.
///
/// # Safety
/// `regs` points to `PT_REGS_SIZE` bytes that nothing else uses meanwhile.
unsafe fn run(vm: &crate::vm::Vm, regs: *mut u8) {
    // SAFETY: the caller's contract.
    let mem = unsafe { core::slice::from_raw_parts_mut(regs, PT_REGS_SIZE as usize) };
    run_on(vm, mem)
}

/// Runs `vm` on `mem`.
fn run_on(vm: &crate::vm::Vm, mem: &mut [u8]) {
    // A probe has no caller to report to: its result and errors are dropped, as the kernel's are.
    let _ = std::panic::catch_unwind(core::panic::AssertUnwindSafe(|| vm.execute(mem)));
}

/// What the entry trampoline of `site` calls, with the saved registers.
extern "C" fn on_entry(site: &Site, regs: *mut u8) {
    let Ok(false) = BUSY.try_with(|b| b.replace(true)) else { return };
    {
        let _section = readers::read();
        let entry = site.slot(Slot::Entry).load(Ordering::Acquire);
        if !entry.is_null() {
            // SAFETY: published by attach and freed only after the read sections under way end;
            // `regs` is the trampoline's own copy of the registers.
            unsafe { run(&*entry, regs) };
        }
        let enter = site.slot(Slot::SysEnter).load(Ordering::Acquire);
        if let (false, Some(wrapper)) = (enter.is_null(), site.syscall.get()) {
            // SAFETY: as above.
            let mut ctx = wrapper.enter_context(unsafe { &*regs.cast::<[u8; PT_REGS_SIZE as usize]>() });
            // SAFETY: as above.
            run_on(unsafe { &*enter }, &mut ctx);
        }
        if site.follows_returns() {
            follow_return(site, regs);
        }
    }
    BUSY.with(|b| b.set(false));
}

/// The 8-byte word at `at` in the saved registers at `regs`.
///
/// # Safety
/// `regs` holds [`PT_REGS_SIZE`] bytes of saved registers (8-byte aligned) and `at + 8` is at most that.
unsafe fn reg(regs: *mut u8, at: u32) -> *mut u64 {
    // SAFETY: the caller's contract.
    unsafe { regs.add(at as usize).cast::<u64>() }
}

/// Swaps the return address of the call at `site` (the registers at `regs`) for the return
/// trampoline's, keeping the real one. (x86_64: on the stack, where the stack pointer points at a
/// function's entry; aarch64: in the link register, which the trampoline restores from `regs`.)
fn follow_return(site: &Site, regs: *mut u8) {
    let Ok(trampoline) = return_trampoline() else { return };
    // SAFETY: `regs` holds the saved registers.
    let stack = unsafe { reg(regs, super::pt_regs::SP).read() };
    let depth = DEPTH.with(Cell::get);
    if depth >= RETURNS {
        site.missed.fetch_add(1, Ordering::Relaxed);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    let place = stack as usize as *mut u64;
    // SAFETY: as above.
    #[cfg(target_arch = "aarch64")]
    let place = unsafe { reg(regs, super::pt_regs::LR) };
    // SAFETY: x86_64: at a function's entry the stack pointer points to its return address, on this
    // thread's stack; aarch64: the saved link register.
    let to = unsafe { place.read() };
    PENDING.with(|p| p[depth].set(Pending { site, to, slot: stack }));
    DEPTH.with(|d| d.set(depth + 1));
    // SAFETY: as above; the function returns through it to the return trampoline.
    unsafe { place.write(trampoline) };
}

/// What the return trampoline calls, with the saved registers: runs the return program of the call
/// returning and hands back where it returns to.
extern "C" fn on_return(regs: *mut u8) -> u64 {
    // SAFETY: `regs` holds the saved registers.
    let sp_now = unsafe { reg(regs, super::pt_regs::SP).read() };
    // The stack pointer the call returning had at its entry: x86_64, 8 bytes below the one now (the
    // return address was popped); aarch64, the same. Calls deeper in the stack that never returned (a
    // `longjmp` over them) are dropped.
    #[cfg(target_arch = "x86_64")]
    let slot = sp_now - 8;
    #[cfg(target_arch = "aarch64")]
    let slot = sp_now;
    let mut depth = DEPTH.with(Cell::get);
    let call = loop {
        if depth == 0 {
            // Unreachable while only probes return here; without the address there is nowhere to go.
            std::eprintln!("ebpf-vm: a return probe lost its return address");
            std::process::abort();
        }
        depth -= 1;
        let call = PENDING.with(|p| p[depth].get());
        if call.slot >= slot {
            break call;
        }
    };
    DEPTH.with(|d| d.set(depth));
    // SAFETY: `regs` holds the saved registers; the instruction pointer is the real return address,
    // as in the kernel (aarch64: the link register too, which the trampoline returns through).
    unsafe { reg(regs, super::pt_regs::IP).write(call.to) };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as above.
    unsafe {
        reg(regs, super::pt_regs::LR).write(call.to)
    };
    if let Ok(false) = BUSY.try_with(|b| b.replace(true)) {
        let _section = readers::read();
        // SAFETY: sites are never freed.
        let site = unsafe { &*call.site };
        let ret = site.slot(Slot::Return).load(Ordering::Acquire);
        if !ret.is_null() {
            // SAFETY: as in `on_entry`.
            unsafe { run(&*ret, regs) };
        }
        let exit = site.slot(Slot::SysExit).load(Ordering::Acquire);
        if let (false, Some(wrapper)) = (exit.is_null(), site.syscall.get()) {
            // SAFETY: as in `on_entry`.
            let mut ctx = wrapper.exit_context(unsafe { &*regs.cast::<[u8; PT_REGS_SIZE as usize]>() });
            // SAFETY: as in `on_entry`.
            run_on(unsafe { &*exit }, &mut ctx);
        }
        drop(_section);
        BUSY.with(|b| b.set(false));
    }
    call.to
}
