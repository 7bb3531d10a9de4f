//! The code a probe jumps to, and the Rust functions it calls: the entry trampoline of each site, the
//! one return trampoline, and the per-thread stack of return addresses that return probes swap out.

#[cfg(target_arch = "x86_64")]
use alloc::string::ToString;
#[cfg(target_arch = "x86_64")]
use alloc::vec::Vec;
use core::cell::Cell;
use core::sync::atomic::Ordering;
use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
use iced_x86::code_asm::*;
#[cfg(target_arch = "x86_64")]
use iced_x86::{BlockEncoderOptions, FlowControl, Instruction};

#[cfg(target_arch = "x86_64")]
use super::pt_regs::*;
use super::{readers, AttachError, Site, Slot, PT_REGS_SIZE};

#[cfg(target_arch = "x86_64")]
/// Bytes below the stack pointer that the probed code may be using (the System V red zone).
const RED_ZONE: i32 = 128;
#[cfg(target_arch = "x86_64")]
/// Bytes for the sixteen `xmm` registers.
const VECTORS: i32 = 256;

#[cfg(target_arch = "x86_64")]
/// The general registers a trampoline saves and restores (besides `rax` and `rsp`), with their
/// `pt_regs` offsets.
fn registers() -> [(AsmRegister64, u32); 14] {
    [
        (r15, R15),
        (r14, R14),
        (r13, R13),
        (r12, R12),
        (rbp, RBP),
        (rbx, RBX),
        (r11, R11),
        (r10, R10),
        (r9, R9),
        (r8, R8),
        (rcx, RCX),
        (rdx, RDX),
        (rsi, RSI),
        (rdi, RDI),
    ]
}

#[cfg(target_arch = "x86_64")]
fn xmm(i: usize) -> AsmRegisterXmm {
    [xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8, xmm9, xmm10, xmm11, xmm12, xmm13, xmm14, xmm15][i]
}

#[cfg(target_arch = "x86_64")]
fn asm_error(e: IcedError) -> AttachError {
    AttachError::Assemble(e.to_string())
}

#[cfg(target_arch = "x86_64")]
/// Saves the registers into a `pt_regs` at `rsp` (already reserved; `rsp_at_probe` bytes above it is
/// where the probed code's stack pointer was; `rip` the probed address, if known) and the vector registers below it, then calls
/// `handler(arg0, pt_regs)` (`arg0` unless `None`, then `handler(pt_regs)`) on an aligned stack,
/// leaving `rbx` pointing at the vectors (and the `pt_regs` at `rbx + VECTORS`).
fn save_and_call(
    a: &mut CodeAssembler,
    rsp_at_probe: i32,
    rip: Option<u64>,
    arg0: Option<u64>,
    handler: u64,
) -> Result<(), IcedError> {
    a.mov(qword_ptr(rsp + RAX as i32), rax)?;
    a.pushfq()?;
    a.pop(rax)?;
    a.mov(qword_ptr(rsp + EFLAGS as i32), rax)?;
    for (reg, at) in registers() {
        a.mov(qword_ptr(rsp + at as i32), reg)?;
    }
    a.lea(rax, qword_ptr(rsp + rsp_at_probe))?;
    a.mov(qword_ptr(rsp + RSP as i32), rax)?;
    if let Some(rip) = rip {
        a.mov(rax, rip)?;
        a.mov(qword_ptr(rsp + RIP as i32), rax)?;
    }
    a.mov(qword_ptr(rsp + ORIG_RAX as i32), -1)?;
    a.mov(qword_ptr(rsp + CS as i32), 0)?;
    a.mov(qword_ptr(rsp + SS as i32), 0)?;
    a.lea(rsp, qword_ptr(rsp - VECTORS))?;
    for i in 0..16 {
        a.movdqu(xmmword_ptr(rsp + 16 * i as i32), xmm(i))?;
    }
    a.mov(rbx, rsp)?;
    a.and(rsp, -16)?;
    match arg0 {
        Some(arg) => {
            a.mov(rdi, arg)?;
            a.lea(rsi, qword_ptr(rbx + VECTORS))?;
        }
        None => a.lea(rdi, qword_ptr(rbx + VECTORS))?,
    }
    a.mov(rax, handler)?;
    a.call(rax)
}

#[cfg(target_arch = "x86_64")]
/// Restores what [`save_and_call`] saved, leaving `rsp` at the `pt_regs`.
fn restore(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.mov(rsp, rbx)?;
    for i in 0..16 {
        a.movdqu(xmm(i), xmmword_ptr(rsp + 16 * i as i32))?;
    }
    a.lea(rsp, qword_ptr(rsp + VECTORS))?;
    a.mov(rax, qword_ptr(rsp + EFLAGS as i32))?;
    a.push(rax)?;
    a.popfq()?;
    for (reg, at) in registers() {
        a.mov(reg, qword_ptr(rsp + at as i32))?;
    }
    a.mov(rax, qword_ptr(rsp + RAX as i32))
}

#[cfg(target_arch = "x86_64")]
/// The entry trampoline of `site` (at `probed`), to be placed at `ip`: saves the registers, calls
/// [`on_entry`], restores them, runs the `displaced` instructions re-encoded for their new address
/// and jumps back after them. Also gives where each displaced instruction's copy is.
pub(super) fn entry(
    ip: u64,
    site: u64,
    probed: u64,
    displaced: &[Instruction],
) -> Result<(Vec<u8>, Vec<u64>), AttachError> {
    let build = || -> Result<(Vec<u8>, Vec<u64>), IcedError> {
        let mut a = CodeAssembler::new(64)?;
        let below = RED_ZONE + PT_REGS_SIZE as i32;
        a.lea(rsp, qword_ptr(rsp - below))?;
        save_and_call(&mut a, below, Some(probed), Some(site), on_entry as *const () as u64)?;
        restore(&mut a)?;
        a.lea(rsp, qword_ptr(rsp + below))?;
        let mut labels = Vec::new();
        for i in displaced {
            let mut label = a.create_label();
            a.set_label(&mut label)?;
            a.add_instruction(*i)?;
            labels.push(label);
        }
        if let Some(last) = displaced.last() {
            if !matches!(last.flow_control(), FlowControl::Return | FlowControl::UnconditionalBranch) {
                a.jmp(last.next_ip())?;
            }
        }
        let result = a.assemble_options(ip, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)?;
        let copies = labels.iter().map(|l| result.label_ip(l)).collect::<Result<Vec<u64>, _>>()?;
        Ok((result.inner.code_buffer, copies))
    };
    build().map_err(asm_error)
}

/// The address of the function entry trampolines call.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
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
            #[cfg(target_arch = "x86_64")]
            let page = super::patch::page_near(handler)?;
            #[cfg(target_arch = "x86_64")]
            let code = {
                let build = || -> Result<Vec<u8>, IcedError> {
                    let mut a = CodeAssembler::new(64)?;
                    // A slot for the real return address, then the pt_regs.
                    a.push(rax)?;
                    a.lea(rsp, qword_ptr(rsp - PT_REGS_SIZE as i32))?;
                    save_and_call(&mut a, PT_REGS_SIZE as i32 + 8, None, None, handler)?;
                    a.mov(qword_ptr(rbx + VECTORS + PT_REGS_SIZE as i32), rax)?;
                    restore(&mut a)?;
                    a.lea(rsp, qword_ptr(rsp + PT_REGS_SIZE as i32))?;
                    a.ret()?;
                    a.assemble(page as u64)
                };
                build().map_err(asm_error)?
            };
            #[cfg(target_arch = "aarch64")]
            let page = super::arm64::page_near(handler)?;
            #[cfg(target_arch = "aarch64")]
            let code = super::arm64::return_code(handler);
            // SAFETY: the page is ours, writable and larger than the code; nothing runs it yet.
            unsafe { core::ptr::copy_nonoverlapping(code.as_ptr(), page, code.len()) };
            #[cfg(target_arch = "x86_64")]
            super::patch::seal(page)?;
            #[cfg(target_arch = "aarch64")]
            super::arm64::seal(page)?;
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
