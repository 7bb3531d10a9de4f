//! The trampolines' code on x86_64, assembled with iced-x86: the entry trampoline saves the registers
//! into a `struct pt_regs` below the red zone and the `xmm` registers below it, calls the probe on an
//! aligned stack, restores them, and runs the displaced instructions re-encoded for their new address;
//! the return trampoline does the same around the handler that hands back the real return address.

use alloc::string::ToString;
use alloc::vec::Vec;

use iced_x86::code_asm::*;
use iced_x86::{BlockEncoderOptions, FlowControl, Instruction};

use super::pt_regs::*;
use super::{AttachError, PT_REGS_SIZE};

/// Bytes below the stack pointer that the probed code may be using (the System V red zone).
const RED_ZONE: i32 = 128;
/// Bytes for the sixteen `xmm` registers.
const VECTORS: i32 = 256;

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

fn xmm(i: usize) -> AsmRegisterXmm {
    [xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8, xmm9, xmm10, xmm11, xmm12, xmm13, xmm14, xmm15][i]
}

fn asm_error(e: IcedError) -> AttachError {
    AttachError::Assemble(e.to_string())
}

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

/// The entry trampoline of `site` (at `probed`), to be placed at `ip`: saves the registers, calls
/// `handler(site, regs)`, restores them, runs the `displaced` instructions re-encoded for their new
/// address and jumps back after them. Also gives where each displaced instruction's copy is.
pub(crate) fn entry(
    ip: u64,
    site: u64,
    probed: u64,
    displaced: &[Instruction],
    handler: u64,
) -> Result<(Vec<u8>, Vec<u64>), AttachError> {
    let build = || -> Result<(Vec<u8>, Vec<u64>), IcedError> {
        let mut a = CodeAssembler::new(64)?;
        let below = RED_ZONE + PT_REGS_SIZE as i32;
        a.lea(rsp, qword_ptr(rsp - below))?;
        save_and_call(&mut a, below, Some(probed), Some(site), handler)?;
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

/// The return trampoline, to be placed at `ip`: saves the registers, calls `handler(regs)`, which
/// hands back the real return address, restores them and returns there.
pub(crate) fn return_code(ip: u64, handler: u64) -> Result<Vec<u8>, AttachError> {
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
        a.assemble(ip)
    };
    build().map_err(asm_error)
}
