//! Rewriting the first bytes of a function into a jump, and putting them back: which instructions the
//! jump displaces (and whether that is safe), executable memory within a jump's reach, and writing
//! the jump in one atomic store.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, Instruction};

use super::symbols::Function;
use super::AttachError;

/// Bytes of the jump written at a probed address (`jmp rel32`).
pub(crate) const JUMP_LEN: u64 = 5;

/// The instructions a probe at `addr` displaces, decoded at their addresses: they cover at least
/// [`JUMP_LEN`] bytes, or end with an instruction that never falls through (`ret`, `jmp`) followed by
/// padding up to there.
#[derive(Debug, Clone)]
pub(crate) struct Displaced {
    pub(crate) instructions: Vec<Instruction>,
}

/// The bytes of `len` at `addr`, copied.
///
/// # Safety
/// The bytes must be mapped readable (code of a loaded file).
unsafe fn bytes(addr: u64, len: u64) -> Vec<u8> {
    // SAFETY: readable (the caller's contract); code is not written while it is read here but by this
    // module, under the probes' lock.
    unsafe { core::slice::from_raw_parts(addr as usize as *const u8, len as usize) }.to_vec()
}

/// Whether `i` is padding that no code runs: `int3` or a `nop` of any length.
fn padding(i: &Instruction) -> bool {
    matches!(
        i.code(),
        Code::Int3 | Code::Nopd | Code::Nopq | Code::Nopw | Code::Nop_rm16 | Code::Nop_rm32 | Code::Nop_rm64
    )
}

/// What a probe at `addr` (in `f`) would displace, if that can be done safely: the function (as far
/// as the symbol table knows it) must decode, the jump must fit before the next symbol, and no branch
/// of the function may land inside the jump's bytes.
pub(crate) fn plan(f: &Function, addr: u64) -> Result<Displaced, AttachError> {
    let end = f.start.saturating_add(f.size.max(1));
    if addr < f.start || addr >= end {
        return Err(AttachError::NoFunctionAt(addr));
    }
    if addr + JUMP_LEN > f.limit {
        return Err(AttachError::TooShort { name: f.name.clone(), size: f.limit - f.start });
    }
    // SAFETY: the function's bytes and its padding up to `limit` lie in the file's mapped code.
    let code = unsafe { bytes(f.start, f.limit - f.start) };
    let mut decoder = Decoder::with_ip(64, &code, f.start, DecoderOptions::NONE);
    let mut all = Vec::new();
    while decoder.can_decode() {
        let i = decoder.decode();
        if i.ip() >= end {
            break;
        }
        if i.is_invalid() {
            return Err(AttachError::Undecodable { name: f.name.clone(), at: i.ip() });
        }
        all.push(i);
    }
    if !all.iter().any(|i| i.ip() == addr) {
        return Err(AttachError::NotAnInstruction(addr));
    }
    // The displaced instructions.
    let mut displaced = Vec::new();
    let mut covered = addr;
    let mut stopped = false;
    for i in all.iter().skip_while(|i| i.ip() < addr) {
        if covered >= addr + JUMP_LEN {
            break;
        }
        displaced.push(*i);
        covered = i.next_ip();
        if matches!(i.flow_control(), FlowControl::Return | FlowControl::UnconditionalBranch | FlowControl::Interrupt)
            || i.code() == Code::Ud2
        {
            stopped = true;
            break;
        }
    }
    if covered < addr + JUMP_LEN {
        // What follows the last displaced instruction up to the jump's end must be padding.
        if !stopped {
            return Err(AttachError::TooShort { name: f.name.clone(), size: f.limit - f.start });
        }
        let mut pad = Decoder::with_ip(64, &code[(covered - f.start) as usize..], covered, DecoderOptions::NONE);
        while pad.can_decode() && pad.ip() < addr + JUMP_LEN {
            if !padding(&pad.decode()) {
                return Err(AttachError::TooShort { name: f.name.clone(), size: f.limit - f.start });
            }
        }
    }
    // No branch may land strictly inside the bytes the jump replaces (it would run half an instruction).
    let inside = |t: u64| t > addr && t < addr + JUMP_LEN;
    for i in &all {
        let direct = matches!(
            i.flow_control(),
            FlowControl::ConditionalBranch | FlowControl::UnconditionalBranch | FlowControl::Call
        );
        if direct && inside(i.near_branch_target()) {
            return Err(AttachError::BranchIntoPatch { name: f.name.clone(), from: i.ip() });
        }
    }
    Ok(Displaced { instructions: displaced })
}

/// A page of memory within a `rel32` jump of `near` (both ways), readable and writable; made
/// executable with [`seal`] once written.
pub(crate) fn page_near(near: u64) -> Result<*mut u8, AttachError> {
    super::pages::page_near(near, (1 << 31) - 2 * 4096)
}

/// Makes the page at `page` (from [`page_near`]) executable and read-only.
pub(crate) fn seal(page: *mut u8) -> Result<(), AttachError> {
    super::pages::seal(page)
}

/// The aligned 8-byte word that holds the `JUMP_LEN` bytes at `addr`, if one does.
fn word_of(addr: u64) -> Option<u64> {
    (addr % 8 + JUMP_LEN <= 8).then_some(addr & !7)
}

/// Whether a jump at `addr` can be written in one atomic store.
pub(crate) fn atomic_at(addr: u64) -> bool {
    word_of(addr).is_some()
}

/// The `jmp rel32` at `from` to `to`: its bytes.
pub(crate) fn jump(from: u64, to: u64) -> Option<[u8; JUMP_LEN as usize]> {
    let rel = i32::try_from(to.wrapping_sub(from + JUMP_LEN) as i64).ok()?;
    let r = rel.to_le_bytes();
    Some([0xe9, r[0], r[1], r[2], r[3]])
}

/// Replaces the `JUMP_LEN` bytes at `addr` with `new`, if they still are `old`, in one atomic store
/// (the page made writable meanwhile): a thread that runs them sees either all old or all new bytes.
/// Allocates nothing (it runs while other threads are stopped).
///
/// # Safety
/// `addr` is code of a loaded file that [`atomic_at`] accepts, and no other thread writes it
/// meanwhile; replacing `old` by `new` there keeps every thread that may run it correct.
pub(crate) unsafe fn swap(
    addr: u64,
    old: [u8; JUMP_LEN as usize],
    new: [u8; JUMP_LEN as usize],
) -> Result<(), AttachError> {
    let word = word_of(addr).ok_or(AttachError::NotAtomic(addr))?;
    let page = word & !4095;
    let span = if (word + 8) > page + 4096 { 8192 } else { 4096 };
    let rwx = libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC;
    // SAFETY: the code's own pages, kept executable throughout.
    if unsafe { libc::mprotect(page as usize as *mut libc::c_void, span, rwx) } != 0 {
        return Err(AttachError::Protect(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)));
    }
    // SAFETY: `word` is 8-byte aligned, mapped and now writable; code bytes are accessed only with this
    // atomic here (the processor reads them as instructions, which an aligned store updates at once).
    let cell = unsafe { AtomicU64::from_ptr(word as usize as *mut u64) };
    let current = cell.load(Ordering::SeqCst).to_le_bytes();
    let at = (addr - word) as usize;
    let result = if current[at..at + JUMP_LEN as usize] == old {
        let mut next = current;
        next[at..at + JUMP_LEN as usize].copy_from_slice(&new);
        cell.compare_exchange(u64::from_le_bytes(current), u64::from_le_bytes(next), Ordering::SeqCst, Ordering::SeqCst)
            .map(|_| ())
            .map_err(|_| AttachError::Changed(addr))
    } else {
        Err(AttachError::Changed(addr))
    };
    // SAFETY: as above; back to read and execute.
    unsafe { libc::mprotect(page as usize as *mut libc::c_void, span, libc::PROT_READ | libc::PROT_EXEC) };
    result
}

/// The `JUMP_LEN` bytes at `addr`.
///
/// # Safety
/// As for [`bytes`].
pub(crate) unsafe fn current(addr: u64) -> [u8; JUMP_LEN as usize] {
    let mut out = [0u8; JUMP_LEN as usize];
    // SAFETY: the caller's contract.
    out.copy_from_slice(&unsafe { bytes(addr, JUMP_LEN) });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    /// A function over `code` (which `plan` reads in place).
    fn over(code: &[u8]) -> Function {
        let start = code.as_ptr() as u64;
        let end = start + code.len() as u64;
        Function { name: "f".to_string(), path: "-".to_string(), start, size: code.len() as u64, limit: end }
    }

    #[test]
    fn prologues_are_planned_as_far_as_the_jump_reaches() {
        // push rbx; mov rbx, rdi; lea rax, [rbx+1]; pop rbx; ret
        let code = [0x53, 0x48, 0x89, 0xfb, 0x48, 0x8d, 0x43, 0x01, 0x5b, 0xc3];
        let f = over(&code);
        let d = plan(&f, f.start).expect("plans");
        assert_eq!(d.instructions.len(), 3, "1 + 3 + 4 bytes cover the jump's 5");
        // A jump back to byte 1 (inside the jump): refused.
        let code = [0x53, 0x48, 0x89, 0xfb, 0x90, 0x75, 0xfa, 0xc3];
        assert!(matches!(plan(&over(&code), code.as_ptr() as u64), Err(AttachError::BranchIntoPatch { .. })));
        // `ret` then padding to 5 bytes: planned; `ret` then code: too short.
        let code = [0xc3, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc];
        let f = Function { size: 1, ..over(&code) };
        assert_eq!(plan(&f, f.start).expect("padding").instructions.len(), 1);
        let code = [0xc3, 0x53, 0xcc, 0xcc, 0xcc, 0xcc];
        let f = Function { size: 1, ..over(&code) };
        assert!(matches!(plan(&f, f.start), Err(AttachError::TooShort { .. })));
    }

    /// Random bytes at random offsets: a plan or an error, never a panic; a plan covers the jump (or
    /// ends in an instruction that never falls through), and its trampoline assembles or is an error.
    #[test]
    fn any_code_is_planned_or_refused_without_panicking() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut planned, mut assembled) = (0, 0);
        let cases = if cfg!(miri) { 50 } else { 5000 };
        for _ in 0..cases {
            let len = 1 + (next() % 40) as usize;
            let code: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let f = over(&code);
            let addr = f.start + (next() % 8).min(len as u64 - 1);
            let Ok(d) = plan(&f, addr) else { continue };
            planned += 1;
            let last = d.instructions.last().expect("at least one instruction");
            let stops = matches!(
                last.flow_control(),
                FlowControl::Return | FlowControl::UnconditionalBranch | FlowControl::Interrupt
            ) || last.code() == Code::Ud2;
            assert!(last.next_ip() >= addr + JUMP_LEN || stops, "{code:02x?} at {}", addr - f.start);
            if super::super::x86::entry(f.start & !0xfff, 0, addr, &d.instructions, 0).is_ok() {
                assembled += 1;
            }
        }
        // Random functions mostly hold an invalid instruction somewhere (refused whole); of the rest, a
        // fraction of the offsets land on an instruction's start. Last run: 180 planned, 174 assembled.
        std::eprintln!("{planned} of {cases} random functions planned, {assembled} trampolines assembled");
        assert!(
            planned >= cases / 50 && assembled > planned / 2,
            "{planned} planned, {assembled} assembled of {cases}"
        );
    }
}
