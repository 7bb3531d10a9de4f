//! Probes on aarch64: the probed instruction (one, 4 bytes) is replaced by a `b` to the site's
//! trampoline, which saves the registers into a `struct user_pt_regs`, calls the probe, restores
//! them, runs the displaced instruction moved to its new address (PC-relative forms rewritten) and
//! branches back after it. The return trampoline is entered by the probed function's `ret` (the entry
//! probe swapped the link register) and returns to the real address.
//!
//! The architecture lets a thread run an instruction that another thread rewrites only between a few
//! kinds (`b`, `nop`, ...), so the other threads are stopped while a probe is written or removed (see
//! `quiesce`), and the caches are cleaned for the new code before they go on.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

use super::pt_regs::{LR, PC, PSTATE, SP};
use super::symbols::Function;
use super::{AttachError, PT_REGS_SIZE};

/// Bytes of the branch written at a probed address.
pub(crate) const JUMP_LEN: u64 = 4;
/// How far a `b` reaches, both ways.
const REACH: u64 = 128 << 20;

/// Bytes a trampoline reserves on the stack: the `user_pt_regs`, the floating-point status, and the
/// 32 vector registers (16-byte aligned throughout).
const FRAME: u32 = 800;
/// Where the floating-point status register is kept in the frame.
const FPSR_AT: u32 = PT_REGS_SIZE;
/// Where the vector registers are kept in the frame.
const VECTORS_AT: u32 = 288;
const _: () = assert!(FPSR_AT + 16 <= VECTORS_AT && VECTORS_AT + 32 * 16 == FRAME && FRAME % 16 == 0);

/// The instruction at `addr` of `f`, if a probe can go there: the address must be an instruction of
/// the function (4-aligned, inside it) and the instruction one that can be moved.
pub(crate) fn plan(f: &Function, addr: u64) -> Result<u32, AttachError> {
    let end = f.start.saturating_add(f.size.max(1));
    if addr < f.start || addr >= end {
        return Err(AttachError::NoFunctionAt(addr));
    }
    if addr % 4 != 0 {
        return Err(AttachError::NotAnInstruction(addr));
    }
    if addr + JUMP_LEN > f.limit {
        return Err(AttachError::TooShort { name: f.name.clone(), size: f.limit - f.start });
    }
    // SAFETY: the function's bytes lie in the file's mapped code (`symbols` cut it to the mapping).
    let insn = u32::from_le_bytes(unsafe { current(addr) });
    // Checked now, with a trampoline address near the code, so that attach fails before anything is
    // written.
    relocate(insn, addr, addr).map_err(|()| AttachError::Undecodable { name: f.name.clone(), at: addr })?;
    Ok(insn)
}

/// Sign-extends the low `bits` bits of `v`.
fn sext(v: u32, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((v as u64) << shift) as i64 >> shift
}

/// `b` (or `bl` if `link`) from `from` to `to`, if in reach.
fn branch(from: u64, to: u64, link: bool) -> Result<u32, ()> {
    let off = to.wrapping_sub(from) as i64;
    if off % 4 != 0 || off.unsigned_abs() >= REACH {
        return Err(());
    }
    Ok(if link { 0x9400_0000 } else { 0x1400_0000 } | ((off >> 2) as u32 & 0x03ff_ffff))
}

/// `movz`/`movk` loading the 64-bit `value` into `x{rd}`.
fn load_constant(out: &mut Vec<u32>, rd: u32, value: u64) {
    out.push(0xd280_0000 | ((value & 0xffff) as u32) << 5 | rd);
    for hw in 1..4u32 {
        let part = (value >> (16 * hw)) as u32 & 0xffff;
        out.push(0xf280_0000 | hw << 21 | part << 5 | rd);
    }
}

/// The instructions that do what `insn` does at `from`, placed at `at`: itself unless it reads the
/// program counter, else its equivalent for the new place. `Err` if it cannot be moved (a literal
/// load into a vector register, a branch out of reach).
fn relocate(insn: u32, from: u64, at: u64) -> Result<Vec<u32>, ()> {
    let target = |offset: i64| from.wrapping_add(offset as u64);
    let mut out = Vec::new();
    if insn & 0xfc00_0000 == 0x1400_0000 {
        // b
        out.push(branch(at, target(sext(insn & 0x03ff_ffff, 26) * 4), false)?);
    } else if insn & 0xfc00_0000 == 0x9400_0000 {
        // bl: the link register set to the original return address (code may read it), then a `b`.
        load_constant(&mut out, 30, from + 4);
        out.push(branch(at + 16, target(sext(insn & 0x03ff_ffff, 26) * 4), false)?);
    } else if insn & 0xffff_fc1f == 0xd63f_0000 {
        // blr xn: likewise, through x16 (which calls may clobber).
        let rn = (insn >> 5) & 0x1f;
        out.push(0xaa00_03f0 | rn << 16); // mov x16, xn
        load_constant(&mut out, 30, from + 4);
        out.push(0xd61f_0200); // br x16
    } else if insn & 0xff00_0000 == 0x5400_0000 {
        // b.cond (and bc.cond): the opposite condition skips a `b` to the target (always / never: a
        // plain `b`).
        let to = target(sext((insn >> 5) & 0x7ffff, 19) * 4);
        let cond = insn & 0xf;
        if cond >= 14 {
            out.push(branch(at, to, false)?);
        } else {
            out.push(0x5400_0000 | 2 << 5 | (cond ^ 1));
            out.push(branch(at + 4, to, false)?);
        }
    } else if insn & 0x7e00_0000 == 0x3400_0000 {
        // cbz, cbnz: the opposite test skips a `b` to the target.
        let to = target(sext((insn >> 5) & 0x7ffff, 19) * 4);
        out.push((insn ^ 0x0100_0000) & !(0x7ffff << 5) | 2 << 5);
        out.push(branch(at + 4, to, false)?);
    } else if insn & 0x7e00_0000 == 0x3600_0000 {
        // tbz, tbnz: likewise.
        let to = target(sext((insn >> 5) & 0x3fff, 14) * 4);
        out.push((insn ^ 0x0100_0000) & !(0x3fff << 5) | 2 << 5);
        out.push(branch(at + 4, to, false)?);
    } else if insn & 0x1f00_0000 == 0x1000_0000 {
        // adr, adrp: the address they compute, as a constant.
        let imm = (insn >> 29) & 3 | ((insn >> 5) & 0x7ffff) << 2;
        let value = if insn & 0x8000_0000 == 0 {
            target(sext(imm, 21))
        } else {
            (from & !0xfff).wrapping_add((sext(imm, 21) << 12) as u64)
        };
        load_constant(&mut out, insn & 0x1f, value);
    } else if insn & 0x3b00_0000 == 0x1800_0000 {
        // A literal load: the address as a constant in the destination, then a load through it.
        let vector = insn & 0x0400_0000 != 0;
        let opc = insn >> 30;
        let rt = insn & 0x1f;
        let addr = target(sext((insn >> 5) & 0x7ffff, 19) * 4);
        match (vector, opc) {
            (false, 0) => {
                load_constant(&mut out, rt, addr);
                out.push(0xb940_0000 | rt << 5 | rt); // ldr wt, [xt]
            }
            (false, 1) => {
                load_constant(&mut out, rt, addr);
                out.push(0xf940_0000 | rt << 5 | rt); // ldr xt, [xt]
            }
            (false, 2) => {
                load_constant(&mut out, rt, addr);
                out.push(0xb980_0000 | rt << 5 | rt); // ldrsw xt, [xt]
            }
            // prfm: a hint, dropped.
            (false, _) => out.push(0xd503_201f),
            (true, _) => return Err(()),
        }
    } else {
        out.push(insn);
    }
    Ok(out)
}

/// `stp`/`ldp` of the 64-bit registers `a` and `b` at `sp + offset`.
fn pair_x(load: bool, a: u32, b: u32, offset: u32) -> u32 {
    (if load { 0xa940_0000 } else { 0xa900_0000 }) | (offset / 8) << 15 | b << 10 | 31 << 5 | a
}

/// `stp`/`ldp` of the vector registers `qa` and `qb` at `sp + offset`.
fn pair_q(load: bool, a: u32, b: u32, offset: u32) -> u32 {
    (if load { 0xad40_0000 } else { 0xad00_0000 }) | (offset / 16) << 15 | b << 10 | 31 << 5 | a
}

/// `str`/`ldr` of `x{rt}` at `sp + offset`.
fn single_x(load: bool, rt: u32, offset: u32) -> u32 {
    (if load { 0xf940_0000 } else { 0xf900_0000 }) | (offset / 8) << 10 | 31 << 5 | rt
}

const SUB_SP: u32 = 0xd100_03ff;
const ADD_SP: u32 = 0x9100_03ff;
/// `add x{rd}, sp, #imm`.
fn add_from_sp(rd: u32, imm: u32) -> u32 {
    0x9100_03e0 | imm << 10 | rd
}
const MRS_NZCV_X9: u32 = 0xd53b_4209;
const MSR_NZCV_X9: u32 = 0xd51b_4209;
const MRS_FPSR_X9: u32 = 0xd53b_4429;
const MSR_FPSR_X9: u32 = 0xd51b_4429;
const BLR_X9: u32 = 0xd63f_0120;
const RET: u32 = 0xd65f_03c0;

/// Saves the registers into the frame (the `user_pt_regs` at `sp`; `pc` = `probed` if given), then
/// calls `handler(arg0, regs)` (or `handler(regs)` without `arg0`).
fn save_and_call(out: &mut Vec<u32>, probed: Option<u64>, arg0: Option<u64>, handler: u64) {
    out.push(SUB_SP | FRAME << 10);
    for r in (0..30).step_by(2) {
        out.push(pair_x(false, r, r + 1, 8 * r));
    }
    out.push(single_x(false, 30, LR));
    out.push(add_from_sp(9, FRAME));
    out.push(single_x(false, 9, SP));
    load_constant(out, 9, probed.unwrap_or(0));
    out.push(single_x(false, 9, PC));
    out.push(MRS_NZCV_X9);
    out.push(single_x(false, 9, PSTATE));
    out.push(MRS_FPSR_X9);
    out.push(single_x(false, 9, FPSR_AT));
    for q in (0..32).step_by(2) {
        out.push(pair_q(false, q, q + 1, VECTORS_AT + 16 * q));
    }
    match arg0 {
        Some(arg) => {
            load_constant(out, 0, arg);
            out.push(add_from_sp(1, 0));
        }
        None => out.push(add_from_sp(0, 0)),
    }
    load_constant(out, 9, handler);
    out.push(BLR_X9);
}

/// Restores what [`save_and_call`] saved (the link register from the frame, where the handler may
/// have changed it) and frees the frame.
fn restore(out: &mut Vec<u32>) {
    for q in (0..32).step_by(2) {
        out.push(pair_q(true, q, q + 1, VECTORS_AT + 16 * q));
    }
    out.push(single_x(true, 9, FPSR_AT));
    out.push(MSR_FPSR_X9);
    out.push(single_x(true, 9, PSTATE));
    out.push(MSR_NZCV_X9);
    for r in (0..30).step_by(2) {
        out.push(pair_x(true, r, r + 1, 8 * r));
    }
    out.push(single_x(true, 30, LR));
    out.push(ADD_SP | FRAME << 10);
}

fn bytes(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// The entry trampoline of `site` (probing `insn` at `probed`), to be placed at `ip`: saves the
/// registers, calls `handler(site, regs)`, restores them, runs `insn` moved, and branches back.
pub(crate) fn entry_code(ip: u64, site: u64, probed: u64, insn: u32, handler: u64) -> Result<Vec<u8>, AttachError> {
    let mut out = Vec::new();
    save_and_call(&mut out, Some(probed), Some(site), handler);
    restore(&mut out);
    let here = ip + 4 * out.len() as u64;
    let moved = relocate(insn, probed, here).map_err(|()| AttachError::NoMemoryNear(probed))?;
    out.extend_from_slice(&moved);
    let back = ip + 4 * out.len() as u64;
    out.push(branch(back, probed + JUMP_LEN, false).map_err(|()| AttachError::NoMemoryNear(probed))?);
    Ok(bytes(&out))
}

/// The return trampoline: saves the registers, calls `handler(regs)` (which puts the real return
/// address in the saved link register), restores them and returns.
pub(crate) fn return_code(handler: u64) -> Vec<u8> {
    let mut out = Vec::new();
    save_and_call(&mut out, None, None, handler);
    restore(&mut out);
    out.push(RET);
    bytes(&out)
}

/// Cleans the data cache and invalidates the instruction cache for `len` bytes at `addr`, so that
/// every core runs the bytes just written there.
fn sync_code(addr: u64, len: u64) {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 (the cache line sizes), which Linux lets user code read.
    unsafe { core::arch::asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack, preserves_flags)) };
    let dline = 4u64 << ((ctr >> 16) & 0xf);
    let iline = 4u64 << (ctr & 0xf);
    let end = addr + len;
    let mut p = addr & !(dline - 1);
    while p < end {
        // SAFETY: cache maintenance by virtual address of mapped code; no memory changes.
        unsafe { core::arch::asm!("dc cvau, {}", in(reg) p, options(nostack, preserves_flags)) };
        p += dline;
    }
    // SAFETY: barriers only.
    unsafe { core::arch::asm!("dsb ish", options(nostack, preserves_flags)) };
    let mut p = addr & !(iline - 1);
    while p < end {
        // SAFETY: as above.
        unsafe { core::arch::asm!("ic ivau, {}", in(reg) p, options(nostack, preserves_flags)) };
        p += iline;
    }
    // SAFETY: barriers only.
    unsafe { core::arch::asm!("dsb ish", "isb", options(nostack, preserves_flags)) };
}

/// A page of memory within a `b` of `near` (both ways), readable and writable; made executable with
/// [`seal`] once written.
pub(crate) fn page_near(near: u64) -> Result<*mut u8, AttachError> {
    super::pages::page_near(near, REACH - 2 * 4096)
}

/// Makes the page at `page` (from [`page_near`]) executable and read-only, its code visible to
/// every core.
pub(crate) fn seal(page: *mut u8) -> Result<(), AttachError> {
    sync_code(page as u64, 4096);
    super::pages::seal(page)
}

/// The `b` at `from` to `to`: its bytes.
pub(crate) fn jump(from: u64, to: u64) -> Option<[u8; JUMP_LEN as usize]> {
    branch(from, to, false).ok().map(u32::to_le_bytes)
}

/// Replaces the instruction at `addr` with `new`, if it still is `old`, in one atomic store (the page
/// made writable meanwhile), and makes the new one visible to every core. Allocates nothing.
///
/// # Safety
/// `addr` is a 4-aligned instruction of a loaded file's code, no other thread writes it meanwhile,
/// and the other threads are stopped (or replacing `old` by `new` keeps every thread correct).
pub(crate) unsafe fn swap(
    addr: u64,
    old: [u8; JUMP_LEN as usize],
    new: [u8; JUMP_LEN as usize],
) -> Result<(), AttachError> {
    if addr % 4 != 0 {
        return Err(AttachError::NotAtomic(addr));
    }
    let page = addr & !4095;
    let rwx = libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC;
    // SAFETY: the code's own page, kept executable throughout.
    if unsafe { libc::mprotect(page as usize as *mut libc::c_void, 4096, rwx) } != 0 {
        return Err(AttachError::Protect(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)));
    }
    // SAFETY: `addr` is 4-aligned, mapped and now writable; code is written only here, atomically.
    let cell = unsafe { AtomicU32::from_ptr(addr as usize as *mut u32) };
    let result = cell
        .compare_exchange(u32::from_le_bytes(old), u32::from_le_bytes(new), Ordering::SeqCst, Ordering::SeqCst)
        .map(|_| ())
        .map_err(|_| AttachError::Changed(addr));
    sync_code(addr, 4);
    // SAFETY: as above; back to read and execute.
    unsafe { libc::mprotect(page as usize as *mut libc::c_void, 4096, libc::PROT_READ | libc::PROT_EXEC) };
    result
}

/// The instruction bytes at `addr`.
///
/// # Safety
/// `addr` must be mapped readable (code of a loaded file), 4-aligned.
pub(crate) unsafe fn current(addr: u64) -> [u8; JUMP_LEN as usize] {
    // SAFETY: the caller's contract; code is written only by `swap`, atomically.
    unsafe { AtomicU32::from_ptr(addr as usize as *mut u32) }.load(Ordering::SeqCst).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// Each PC-relative form, moved 1 MiB away, does what it did: branches reach the same target and
    /// addresses are the same constants.
    #[test]
    fn pc_relative_instructions_are_rewritten_for_their_new_place() {
        let from = 0x40_0000u64;
        let at = from + (1 << 20);
        // b +8: the same target from the new place.
        assert_eq!(relocate(0x1400_0002, from, at), Ok(vec![branch(at, from + 8, false).unwrap()]));
        // bl -16: the link register as the call would set it, then a `b` to the same target.
        let mut want = Vec::new();
        load_constant(&mut want, 30, from + 4);
        want.push(branch(at + 16, from - 16, false).unwrap());
        assert_eq!(relocate(0x97ff_fffc, from, at), Ok(want));
        // blr x3: through x16, with the link register set likewise.
        let mut want = vec![0xaa03_03f0];
        load_constant(&mut want, 30, from + 4);
        want.push(0xd61f_0200);
        assert_eq!(relocate(0xd63f_0060, from, at), Ok(want));
        // b.eq +12: b.ne over a `b` to the target.
        assert_eq!(relocate(0x5400_0060, from, at), Ok(vec![0x5400_0041, branch(at + 4, from + 12, false).unwrap()]));
        // cbz x3, +8 becomes cbnz x3, +8 over a `b`.
        assert_eq!(relocate(0xb400_0043, from, at), Ok(vec![0xb500_0043, branch(at + 4, from + 8, false).unwrap()]));
        // tbnz w1, #3, +16 becomes tbz w1, #3, +8 over a `b`.
        assert_eq!(relocate(0x3718_0081, from, at), Ok(vec![0x3618_0041, branch(at + 4, from + 16, false).unwrap()]));
        // adr x5, +0x100: the address as a constant.
        let mut want = Vec::new();
        load_constant(&mut want, 5, from + 0x100);
        assert_eq!(relocate(0x1000_0805, from, at), Ok(want));
        // adrp x2, +2 pages.
        let mut want = Vec::new();
        load_constant(&mut want, 2, (from & !0xfff) + 0x2000);
        assert_eq!(relocate(0xd000_0002, from, at), Ok(want));
        // ldr x7, +0x40: the address, then a load through it.
        let mut want = Vec::new();
        load_constant(&mut want, 7, from + 0x40);
        want.push(0xf940_00e7);
        assert_eq!(relocate(0x5800_0207, from, at), Ok(want));
        // A literal load into a vector register cannot be moved; a branch out of reach neither.
        assert_eq!(relocate(0x5c00_0200, from, at), Err(()));
        assert_eq!(relocate(0x1400_0002, from, from + REACH + 4096), Err(()));
        // bc.eq +12 (the hinted form) moves as b.eq does.
        assert_eq!(relocate(0x5400_0070, from, at), Ok(vec![0x5400_0041, branch(at + 4, from + 12, false).unwrap()]));
        // Anything else is copied: stp x29, x30, [sp, #-16]!; add x0, x0, #1.
        assert_eq!(relocate(0xa9bf_7bfd, from, at), Ok(vec![0xa9bf_7bfd]));
        assert_eq!(relocate(0x9100_0400, from, at), Ok(vec![0x9100_0400]));
    }

    /// The target of the `b` `word` at `at`.
    fn b_target(word: u32, at: u64) -> u64 {
        assert_eq!(word & 0xfc00_0000, 0x1400_0000, "{word:#010x} is a `b`");
        at.wrapping_add((sext(word & 0x03ff_ffff, 26) * 4) as u64)
    }

    /// Random instruction words moved random distances: never a panic; a word that does not read the
    /// program counter is copied as it is; each branch form ends in a `b` to its original target.
    #[test]
    fn any_instruction_is_moved_or_refused_without_panicking() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let cases = if cfg!(miri) { 500 } else { 200_000 };
        let (mut moved, mut branches) = (0, 0);
        for _ in 0..cases {
            let insn = next() as u32;
            let from = (next() & 0x0000_7fff_ffff_fffc) | 0x1000;
            let at = from.wrapping_add((next() % (2 * REACH)).wrapping_sub(REACH) & !3);
            let Ok(out) = relocate(insn, from, at) else { continue };
            moved += 1;
            assert!(!out.is_empty() && out.len() <= 6, "{insn:#010x}: {} words", out.len());
            let pc_relative = insn & 0x7c00_0000 == 0x1400_0000
                || insn & 0xff00_0000 == 0x5400_0000
                || insn & 0x7c00_0000 == 0x3400_0000
                || insn & 0x1f00_0000 == 0x1000_0000
                || insn & 0x3b00_0000 == 0x1800_0000
                || insn & 0xffff_fc1f == 0xd63f_0000;
            if !pc_relative {
                assert_eq!(out, [insn]);
                continue;
            }
            let last = *out.last().expect("a word");
            let offset_to =
                |bits: u32, shift: u32| from.wrapping_add((sext((insn >> shift) & ((1 << bits) - 1), bits) * 4) as u64);
            let target = if insn & 0x7c00_0000 == 0x1400_0000 {
                Some(offset_to(26, 0))
            } else if insn & 0xff00_0000 == 0x5400_0000 || insn & 0x7e00_0000 == 0x3400_0000 {
                Some(offset_to(19, 5))
            } else if insn & 0x7e00_0000 == 0x3600_0000 {
                Some(offset_to(14, 5))
            } else {
                None
            };
            if let Some(target) = target {
                branches += 1;
                assert_eq!(b_target(last, at + 4 * (out.len() as u64 - 1)), target, "{insn:#010x}");
            }
        }
        std::eprintln!("{moved} of {cases} random words moved, {branches} of them branches");
        assert!(moved > cases / 2 && branches > cases / 100, "{moved} moved, {branches} branches");
    }
}
