//! The interpreter: each program of a [`Linked`] set is translated once into fixed-size [`Slot`]s (jump
//! targets resolved, immediates pre-extended, helpers looked up), and [`run`] executes them in one
//! `match` loop with the registers in a local array. Checked mode tests every access against the
//! [`MemoryMap`]; shared memory is accessed atomically (see [`memory::access`](crate::memory::access)).
//! Shadow mode is checked mode that also tracks what was written, and stops at a read of anything that
//! was not (see [`shadow`]).

mod shadow;

use alloc::vec::Vec;
use core::mem::MaybeUninit;
use core::ptr;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::helpers::standard::{
    for_each_step, iterable, release_grants, DirectHash, MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAX_LOOPS,
};
use crate::helpers::CallContext;
use crate::isa::{AluOp, AtomicOp, ByteOrder, Cond, Instruction, Operand, PacketMode, Size, SxWidth, Width};
use crate::link::{ExecError, Linked, LinkedProgram, Resolved, MAX_TAIL_CALLS};
use crate::maps::{self, ProgArrayMap};
use crate::memory::access::{self, Access, Word};
use crate::memory::{Grants, MemoryMap, Region, FRAME_SIZE, MAX_FRAMES, STACK_SIZE};
use crate::program::copy_loop::{self, CopyLoop};

/// Pre-decoded operations. `I` = immediate operand (in `Slot::imm`), `R` = register operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
#[rustfmt::skip]
pub(crate) enum Op {
    Add64I, Sub64I, Mul64I, Div64I, SDiv64I, Or64I, And64I, Lsh64I, Rsh64I, Mod64I, SMod64I, Xor64I, Mov64I, Arsh64I,
    Add64R, Sub64R, Mul64R, Div64R, SDiv64R, Or64R, And64R, Lsh64R, Rsh64R, Mod64R, SMod64R, Xor64R, Mov64R, Arsh64R,
    Add32I, Sub32I, Mul32I, Div32I, SDiv32I, Or32I, And32I, Lsh32I, Rsh32I, Mod32I, SMod32I, Xor32I, Mov32I, Arsh32I,
    Add32R, Sub32R, Mul32R, Div32R, SDiv32R, Or32R, And32R, Lsh32R, Rsh32R, Mod32R, SMod32R, Xor32R, Mov32R, Arsh32R,
    Neg64, Neg32, Zext32, Nop,
    MovSx8To64, MovSx16To64, MovSx32To64, MovSx8To32, MovSx16To32,
    Le16, Le32, Le64, Be16, Be32, Be64, Swap16, Swap32, Swap64,
    LdDw,
    LdxB, LdxH, LdxW, LdxDw, LdxSB, LdxSH, LdxSW,
    StB, StH, StW, StDw, StxB, StxH, StxW, StxDw,
    Add32A, Or32A, And32A, Xor32A, FetchAdd32, FetchOr32, FetchAnd32, FetchXor32, Xchg32, CmpXchg32,
    Add64A, Or64A, And64A, Xor64A, FetchAdd64, FetchOr64, FetchAnd64, FetchXor64, Xchg64, CmpXchg64,
    LdAbsB, LdAbsH, LdAbsW, LdIndB, LdIndH, LdIndW,
    Ja,
    Jeq64I, Jgt64I, Jge64I, Jset64I, Jne64I, Jsgt64I, Jsge64I, Jlt64I, Jle64I, Jslt64I, Jsle64I,
    Jeq64R, Jgt64R, Jge64R, Jset64R, Jne64R, Jsgt64R, Jsge64R, Jlt64R, Jle64R, Jslt64R, Jsle64R,
    Jeq32I, Jgt32I, Jge32I, Jset32I, Jne32I, Jsgt32I, Jsge32I, Jlt32I, Jle32I, Jslt32I, Jsle32I,
    Jeq32R, Jgt32R, Jge32R, Jset32R, Jne32R, Jsgt32R, Jsge32R, Jlt32R, Jle32R, Jslt32R, Jsle32R,
    Call, CallX, CallLocal, Exit, TailCall,
    /// The standard `bpf_map_lookup_elem`, `_update_elem` or `_delete_elem` (the helper's index in
    /// `target`, its id in `imm`): carried out here on array and hash maps (see [`MapAccess`]), else
    /// called.
    MapCall,
    /// `bpf_loop`: the helper's index in `target`.
    Loop,
    /// `bpf_for_each_map_elem`: the helper's index in `target`.
    ForEach,
    /// Superinstructions (see [`fuse`]): `mov dst, src; add dst, reg` (the register in `target`), and
    /// `mov dst, src; add dst, imm`, 64-bit; each stands for its slot and the next.
    MovAdd64R, MovAdd64I,
    /// `mov d, a; add d, b; ldx y, [d+off]` (a zero-extending load of 1, 2, 4 or 8 bytes: an array
    /// element): the `mov`/`add` as in `MovAdd64R`, `imm` holding `y` (low 8 bits) and `off` (the 16
    /// bits above); each stands for its slot and the next two.
    MovAddLdxB, MovAddLdxH, MovAddLdxW, MovAddLdxDw,
    /// `lsh r, 32; rsh r, 32` (zero-extends the low 32 bits) and `lsh r, 32; arsh r, 32` (sign-extends
    /// them); each stands for its slot and the next.
    ZextPair, SextPair,
    /// `mov d, a; and d, imm` and the like, 64-bit (`mov`) and 32-bit (`mov32` then the 32-bit
    /// operation): `imm` the second instruction's; each stands for its slot and the next.
    MovAnd64I, MovLsh64I, MovRsh64I, MovAnd32I, MovLsh32I, MovRsh32I,
    /// `add dst, c; jcc dst, imm` (64-bit, unsigned or equality tests): `off` holds `c << 1` and the
    /// jump's fall-through skip (see [`fuse`]), `imm` and `target` the jump's.
    AddJeq64I, AddJne64I, AddJlt64I, AddJle64I, AddJgt64I, AddJge64I,
    /// The backward jump of a byte-copy loop ([`copy_loop`]): the jump as written (its operation in
    /// `Code::copies`, indexed by `off`), and when it goes back, first an attempt to finish the loop
    /// with one `memmove`.
    CopyLoop,
}

/// One pre-decoded instruction: 16 bytes, one per program slot (the second slot of an `lddw` is never
/// reached).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot {
    op: Op,
    /// The destination register in the low 4 bits, the source register in the high 4.
    regs: u8,
    off: i16,
    /// Jump target slot, helper index, or helper id.
    target: u32,
    /// Immediate: sign-extended to 64 bits for 64-bit operations, zero-extended 32 bits otherwise;
    /// shift amounts already masked.
    imm: u64,
}

// Four slots to a 64-byte cache line.
const _: () = assert!(core::mem::size_of::<Slot>() == 16);

impl Slot {
    /// The destination register's number.
    #[inline(always)]
    fn dst(&self) -> u8 {
        self.regs & 15
    }

    /// The source register's number.
    #[inline(always)]
    fn src(&self) -> u8 {
        self.regs >> 4
    }

    fn set_dst(&mut self, r: u8) {
        self.regs = (self.regs & 0xf0) | (r & 15);
    }

    fn set_src(&mut self, r: u8) {
        self.regs = (self.regs & 0x0f) | (r & 15) << 4;
    }

    fn new(op: Op) -> Slot {
        Slot { op, regs: 0, off: 0, target: 0, imm: 0 }
    }
}

/// The interpreter's form of a program.
#[derive(Debug, Clone)]
pub(crate) struct Code {
    slots: Vec<Slot>,
    /// By map index, how `MapCall` reaches each map of the environment (the same in every program).
    maps: Vec<MapAccess>,
    /// The byte-copy loops whose backward jumps are `CopyLoop` slots, with the jumps' operations.
    copies: Vec<(CopyLoop, Op)>,
}

/// How the interpreter carries out a standard map helper on a map, as the kernel's JITs do: an array
/// lookup is an address computed here, a hash map's lookup, update and delete call the map itself.
/// Other maps, and keys or values that fail the checks of checked mode, go through the helper.
#[derive(Debug, Clone, Copy)]
enum MapAccess {
    Helper,
    Array(maps::ArrayLayout),
    Hash(DirectHash),
}

impl MapAccess {
    /// How to reach each map of `linked`'s environment.
    fn of_env(linked: &Linked) -> Vec<MapAccess> {
        linked
            .env()
            .maps()
            .iter()
            .map(|m| {
                if let Some(layout) = m.downcast_ref::<maps::ArrayMap>().and_then(|a| a.inline_layout()) {
                    MapAccess::Array(layout)
                } else if let Some(hash) = DirectHash::of(m.as_ref()) {
                    MapAccess::Hash(hash)
                } else {
                    MapAccess::Helper
                }
            })
            .collect()
    }
}

/// The operation for an ALU instruction of this width, operation and operand kind.
#[rustfmt::skip]
fn alu_op(width: Width, op: AluOp, imm: bool) -> Op {
    use AluOp::*;
    let idx = match op {
        Add => 0, Sub => 1, Mul => 2, Div => 3, SDiv => 4, Or => 5, And => 6,
        Lsh => 7, Rsh => 8, Mod => 9, SMod => 10, Xor => 11, Mov => 12, Arsh => 13,
    };
    const TABLE: [[Op; 14]; 4] = [
        [Op::Add64I, Op::Sub64I, Op::Mul64I, Op::Div64I, Op::SDiv64I, Op::Or64I, Op::And64I, Op::Lsh64I, Op::Rsh64I, Op::Mod64I, Op::SMod64I, Op::Xor64I, Op::Mov64I, Op::Arsh64I],
        [Op::Add64R, Op::Sub64R, Op::Mul64R, Op::Div64R, Op::SDiv64R, Op::Or64R, Op::And64R, Op::Lsh64R, Op::Rsh64R, Op::Mod64R, Op::SMod64R, Op::Xor64R, Op::Mov64R, Op::Arsh64R],
        [Op::Add32I, Op::Sub32I, Op::Mul32I, Op::Div32I, Op::SDiv32I, Op::Or32I, Op::And32I, Op::Lsh32I, Op::Rsh32I, Op::Mod32I, Op::SMod32I, Op::Xor32I, Op::Mov32I, Op::Arsh32I],
        [Op::Add32R, Op::Sub32R, Op::Mul32R, Op::Div32R, Op::SDiv32R, Op::Or32R, Op::And32R, Op::Lsh32R, Op::Rsh32R, Op::Mod32R, Op::SMod32R, Op::Xor32R, Op::Mov32R, Op::Arsh32R],
    ];
    TABLE[row(width, imm)][idx]
}

/// The operation for a conditional jump of this width, condition and operand kind.
#[rustfmt::skip]
fn jump_op(width: Width, cond: Cond, imm: bool) -> Op {
    use Cond::*;
    let idx = match cond {
        Eq => 0, Gt => 1, Ge => 2, Set => 3, Ne => 4, Sgt => 5, Sge => 6, Lt => 7, Le => 8, Slt => 9, Sle => 10,
    };
    const TABLE: [[Op; 11]; 4] = [
        [Op::Jeq64I, Op::Jgt64I, Op::Jge64I, Op::Jset64I, Op::Jne64I, Op::Jsgt64I, Op::Jsge64I, Op::Jlt64I, Op::Jle64I, Op::Jslt64I, Op::Jsle64I],
        [Op::Jeq64R, Op::Jgt64R, Op::Jge64R, Op::Jset64R, Op::Jne64R, Op::Jsgt64R, Op::Jsge64R, Op::Jlt64R, Op::Jle64R, Op::Jslt64R, Op::Jsle64R],
        [Op::Jeq32I, Op::Jgt32I, Op::Jge32I, Op::Jset32I, Op::Jne32I, Op::Jsgt32I, Op::Jsge32I, Op::Jlt32I, Op::Jle32I, Op::Jslt32I, Op::Jsle32I],
        [Op::Jeq32R, Op::Jgt32R, Op::Jge32R, Op::Jset32R, Op::Jne32R, Op::Jsgt32R, Op::Jsge32R, Op::Jlt32R, Op::Jle32R, Op::Jslt32R, Op::Jsle32R],
    ];
    TABLE[row(width, imm)][idx]
}

/// Row of the operation tables: 64-bit immediate, 64-bit register, 32-bit immediate, 32-bit register.
fn row(width: Width, imm: bool) -> usize {
    match (width, imm) {
        (Width::W64, true) => 0,
        (Width::W64, false) => 1,
        (Width::W32, true) => 2,
        (Width::W32, false) => 3,
    }
}

fn imm_for(width: Width, v: i32) -> u64 {
    match width {
        Width::W64 => v as i64 as u64,
        Width::W32 => v as u32 as u64,
    }
}

impl Code {
    /// Translates a linked program for the interpreter.
    /// With `fuse`, also threads jumps and forms superinstructions ([`fuse`]): for runs that count no
    /// instructions (a budget counts what runs) and watch no single instruction (shadow mode).
    /// With `fuse`, calls of the standard map helpers also become `MapCall`s, reaching the maps as
    /// `maps` says.
    fn compile(program: &LinkedProgram, fuse: bool, helpers: &[crate::helpers::Helper], maps: &[MapAccess]) -> Code {
        let mut slots = alloc::vec![Slot::new(Op::Nop); program.program().slot_count()];
        for (pc, insn, resolved) in program.iter() {
            slots[pc] = translate(pc, insn, resolved);
        }
        // Not in shadow mode (no fusing), which runs every instruction as written: the reference.
        if fuse && maps.iter().any(|m| !matches!(m, MapAccess::Helper)) {
            for s in slots.iter_mut().filter(|s| s.op == Op::Call) {
                if helpers.get(s.target as usize).is_some_and(|h| h.map_op.is_some()) {
                    s.op = Op::MapCall;
                }
            }
        }
        // Before `fuse`, which would thread jumps through the `ja` closing a loop.
        let copies = if fuse { copy_loops(program, &mut slots) } else { Vec::new() };
        if fuse {
            self::fuse(&mut slots);
        }
        Code { slots, maps: maps.to_vec(), copies }
    }

    /// Translates every program of a linked set, by program id.
    pub(crate) fn compile_all(linked: &Linked, fuse: bool) -> Vec<Code> {
        let maps = MapAccess::of_env(linked);
        let helpers = linked.env().helpers();
        linked.programs().iter().map(|p| Code::compile(p, fuse, helpers, &maps)).collect()
    }
}

/// Turns the backward jumps of the byte-copy loops of `program` into `CopyLoop` slots.
fn copy_loops(program: &LinkedProgram, slots: &mut [Slot]) -> Vec<(CopyLoop, Op)> {
    let mut copies = Vec::new();
    for l in copy_loop::find(program.program()) {
        let Ok(index) = i16::try_from(copies.len()) else { break };
        let slot = &mut slots[l.back];
        copies.push((l, slot.op));
        slot.op = Op::CopyLoop;
        slot.off = index;
    }
    copies
}

/// Whether the conditional jump `op` holds for `a` and `b` (its operand, register or immediate).
fn holds(op: Op, a: u64, b: u64) -> bool {
    use Op::*;
    let (a32, b32) = (a as u32, b as u32);
    match op {
        Jeq64I | Jeq64R => a == b,
        Jgt64I | Jgt64R => a > b,
        Jge64I | Jge64R => a >= b,
        Jset64I | Jset64R => a & b != 0,
        Jne64I | Jne64R => a != b,
        Jsgt64I | Jsgt64R => (a as i64) > (b as i64),
        Jsge64I | Jsge64R => (a as i64) >= (b as i64),
        Jlt64I | Jlt64R => a < b,
        Jle64I | Jle64R => a <= b,
        Jslt64I | Jslt64R => (a as i64) < (b as i64),
        Jsle64I | Jsle64R => (a as i64) <= (b as i64),
        Jeq32I | Jeq32R => a32 == b32,
        Jgt32I | Jgt32R => a32 > b32,
        Jge32I | Jge32R => a32 >= b32,
        Jset32I | Jset32R => a32 & b32 != 0,
        Jne32I | Jne32R => a32 != b32,
        Jsgt32I | Jsgt32R => (a32 as i32) > (b32 as i32),
        Jsge32I | Jsge32R => (a32 as i32) >= (b32 as i32),
        Jlt32I | Jlt32R => a32 < b32,
        Jle32I | Jle32R => a32 <= b32,
        Jslt32I | Jslt32R => (a32 as i32) < (b32 as i32),
        Jsle32I | Jsle32R => (a32 as i32) <= (b32 as i32),
        // `ja`.
        _ => true,
    }
}

/// Whether `op` takes its operand from the immediate.
fn immediate_operand(op: Op) -> bool {
    let i = op as u8;
    let row = |first: Op| (first as u8..first as u8 + 11).contains(&i);
    row(Op::Jeq64I) || row(Op::Jeq32I)
}

/// Finishes a byte-copy loop with one `memmove` (see [`copy_loop`]) if the conditions hold at its
/// backward jump, with the registers `r`: returns whether it did.
#[inline(never)]
fn bulk_copy(l: &CopyLoop, r: &mut [u64; 16], mm: &MemoryMap<'_>) -> bool {
    let get = |x: crate::isa::Reg| r[x.index() as usize];
    let m = l.remaining(get);
    let (src, dst) = l.addresses(get);
    let apart = dst.wrapping_sub(src);
    if m < copy_loop::MIN_BULK || !mm.private(src, m, false) || !mm.private(dst, m, true) || (apart != 0 && apart < m) {
        return false;
    }
    let from = ptr::with_exposed_provenance::<u8>(src as usize);
    let to = ptr::with_exposed_provenance_mut::<u8>(dst as usize);
    // SAFETY: both ranges of `m` bytes lie in memory private to this execution (its input, borrowed
    // mutably for the whole run, or its live stack frames), the destination in writable memory;
    // `ptr::copy` allows them to overlap. The loop would have read and written exactly these bytes.
    let last = unsafe {
        ptr::copy(from, to, m as usize);
        *to.add(m as usize - 1)
    };
    l.finish(m, last as u64, r);
    copy_loop::count_bulk_copy();
    true
}

/// The condition that holds where `op`'s does not (`None` for `jset`, which has none).
fn inverse(op: Op) -> Option<Op> {
    use Op::*;
    Some(match op {
        Jeq64I => Jne64I,
        Jne64I => Jeq64I,
        Jgt64I => Jle64I,
        Jle64I => Jgt64I,
        Jge64I => Jlt64I,
        Jlt64I => Jge64I,
        Jsgt64I => Jsle64I,
        Jsle64I => Jsgt64I,
        Jsge64I => Jslt64I,
        Jslt64I => Jsge64I,
        Jeq64R => Jne64R,
        Jne64R => Jeq64R,
        Jgt64R => Jle64R,
        Jle64R => Jgt64R,
        Jge64R => Jlt64R,
        Jlt64R => Jge64R,
        Jsgt64R => Jsle64R,
        Jsle64R => Jsgt64R,
        Jsge64R => Jslt64R,
        Jslt64R => Jsge64R,
        Jeq32I => Jne32I,
        Jne32I => Jeq32I,
        Jgt32I => Jle32I,
        Jle32I => Jgt32I,
        Jge32I => Jlt32I,
        Jlt32I => Jge32I,
        Jsgt32I => Jsle32I,
        Jsle32I => Jsgt32I,
        Jsge32I => Jslt32I,
        Jslt32I => Jsge32I,
        Jeq32R => Jne32R,
        Jne32R => Jeq32R,
        Jgt32R => Jle32R,
        Jle32R => Jgt32R,
        Jge32R => Jlt32R,
        Jlt32R => Jge32R,
        Jsgt32R => Jsle32R,
        Jsle32R => Jsgt32R,
        Jsge32R => Jslt32R,
        Jslt32R => Jsge32R,
        _ => return None,
    })
}

/// Whether `op` is a conditional jump.
fn conditional(op: Op) -> bool {
    (Op::Jeq64I as u8..=Op::Jsle32R as u8).contains(&(op as u8))
}

/// Fewer dispatches for the same instructions, every slot still runnable on its own (a jump may land on
/// any of them):
/// - a jump to a `ja` goes straight to where the `ja` goes (up to 8 `ja`s, so a cycle of them stays);
/// - `jcc X, +1; ja Y` becomes, in the first slot, the opposite jump to Y whose fall-through skips the
///   `ja` (its `off` is the slots it skips);
/// - `mov r, a; add r, b` (64-bit, `b` a register or an immediate) becomes one superinstruction;
/// - so does `add r, c; jcc r, imm` (a loop's step and test: 64-bit, `c` within ±16,383);
/// - so do `mov r, a; and r, imm` and the shifts by constants (64-bit, and `mov32` with 32-bit ones);
/// - `mov d, a; add d, b; ldx y, [d+off]` (an array element) becomes one;
/// - so do `lsh r, 32; rsh r, 32` and `lsh r, 32; arsh r, 32` (32-bit extensions).
fn fuse(slots: &mut [Slot]) {
    let n = slots.len();
    let final_target = |slots: &[Slot], mut t: usize| {
        for _ in 0..8 {
            match slots.get(t) {
                Some(s) if s.op == Op::Ja && s.target as usize != t => t = s.target as usize,
                _ => break,
            }
        }
        t
    };
    for i in 0..n {
        let op = slots[i].op;
        if op == Op::Ja || conditional(op) {
            slots[i].target = final_target(slots, slots[i].target as usize) as u32;
        }
        if conditional(op) && slots[i].target as usize == i + 2 && slots.get(i + 1).is_some_and(|s| s.op == Op::Ja) {
            if let Some(inv) = inverse(op) {
                let to = final_target(slots, slots[i + 1].target as usize);
                slots[i] = Slot { op: inv, target: to as u32, off: 1, ..slots[i] };
            }
        }
    }
    for i in 0..n.saturating_sub(1) {
        let (a, b) = (slots[i], slots[i + 1]);
        if b.dst() != a.dst() {
            continue;
        }
        // A copy, then a mask or shift of it by a constant.
        let op = match (a.op, b.op) {
            (Op::Mov64R, Op::And64I) => Op::MovAnd64I,
            (Op::Mov64R, Op::Lsh64I) => Op::MovLsh64I,
            (Op::Mov64R, Op::Rsh64I) => Op::MovRsh64I,
            (Op::Mov32R, Op::And32I) => Op::MovAnd32I,
            (Op::Mov32R, Op::Lsh32I) => Op::MovLsh32I,
            (Op::Mov32R, Op::Rsh32I) => Op::MovRsh32I,
            _ => Op::Nop,
        };
        if op != Op::Nop {
            slots[i] = Slot { op, imm: b.imm, ..a };
            continue;
        }
        if a.op != Op::Mov64R {
            continue;
        }
        match b.op {
            // `mov r, a; add r, r` adds `a` twice.
            Op::Add64R => {
                let second = if b.src() == a.dst() { a.src() } else { b.src() };
                slots[i] = Slot { op: Op::MovAdd64R, target: second as u32, ..a };
            }
            Op::Add64I => slots[i] = Slot { op: Op::MovAdd64I, imm: b.imm, ..a },
            _ => {}
        }
    }
    // Array elements: a `mov`/`add` pair just fused, then a load through its result.
    for i in 0..n.saturating_sub(2) {
        let (a, c) = (slots[i], slots[i + 2]);
        if a.op != Op::MovAdd64R || c.src() != a.dst() {
            continue;
        }
        let op = match c.op {
            Op::LdxB => Op::MovAddLdxB,
            Op::LdxH => Op::MovAddLdxH,
            Op::LdxW => Op::MovAddLdxW,
            Op::LdxDw => Op::MovAddLdxDw,
            _ => continue,
        };
        slots[i] = Slot { op, imm: c.dst() as u64 | (c.off as u16 as u64) << 8, ..a };
    }
    // Extensions of the low 32 bits written as two shifts.
    for i in 0..n.saturating_sub(1) {
        let (a, b) = (slots[i], slots[i + 1]);
        if a.op != Op::Lsh64I || a.imm != 32 || b.dst() != a.dst() || b.imm != 32 {
            continue;
        }
        match b.op {
            Op::Rsh64I => slots[i].op = Op::ZextPair,
            Op::Arsh64I => slots[i].op = Op::SextPair,
            _ => {}
        }
    }
    // After the pass above, which reads the `add`s as they were.
    for i in 0..n.saturating_sub(1) {
        let (a, b) = (slots[i], slots[i + 1]);
        let step = a.imm as i64;
        if a.op != Op::Add64I || b.dst() != a.dst() || !(-16_383..=16_383).contains(&step) || !(0..=1).contains(&b.off)
        {
            continue;
        }
        let op = match b.op {
            Op::Jeq64I => Op::AddJeq64I,
            Op::Jne64I => Op::AddJne64I,
            Op::Jlt64I => Op::AddJlt64I,
            Op::Jle64I => Op::AddJle64I,
            Op::Jgt64I => Op::AddJgt64I,
            Op::Jge64I => Op::AddJge64I,
            _ => continue,
        };
        slots[i] = Slot { op, off: (step as i16) << 1 | b.off, ..b };
    }
}

fn translate(pc: usize, insn: &Instruction, resolved: Resolved) -> Slot {
    let target = |t: Option<i64>| t.unwrap_or(0) as u32; // in range: checked when the program was built
    let mut s = Slot::new(Op::Nop);
    match *insn {
        Instruction::Alu { width, op, dst, src } => {
            s.set_dst(dst.index());
            match src {
                Operand::Reg(r) => {
                    s.set_src(r.index());
                    s.op = alu_op(width, op, false);
                }
                Operand::Imm(v) => {
                    s.imm = imm_for(width, v);
                    let mask = if width == Width::W64 { 63 } else { 31 };
                    s.op = match op {
                        AluOp::Lsh | AluOp::Rsh | AluOp::Arsh => {
                            s.imm &= mask;
                            alu_op(width, op, true)
                        }
                        // Division by a zero immediate gives 0; modulo leaves dst (zero-extended).
                        AluOp::Div | AluOp::SDiv if v == 0 => alu_op(width, AluOp::Mov, true),
                        AluOp::Mod | AluOp::SMod if v == 0 => {
                            if width == Width::W64 {
                                Op::Nop
                            } else {
                                Op::Zext32
                            }
                        }
                        _ => alu_op(width, op, true),
                    };
                }
            }
        }
        Instruction::Neg { width, dst } => {
            s.set_dst(dst.index());
            s.op = if width == Width::W64 { Op::Neg64 } else { Op::Neg32 };
        }
        Instruction::MovSx { width, from, dst, src } => {
            s.set_dst(dst.index());
            s.set_src(src.index());
            s.op = match (width, from) {
                (Width::W64, SxWidth::B8) => Op::MovSx8To64,
                (Width::W64, SxWidth::B16) => Op::MovSx16To64,
                (Width::W64, SxWidth::B32) => Op::MovSx32To64,
                (Width::W32, SxWidth::B8) => Op::MovSx8To32,
                // A 32-bit destination cannot take 32 bits sign-extended; the decoder rejects it.
                (Width::W32, _) => Op::MovSx16To32,
            };
        }
        Instruction::End { order, bits, dst } => {
            s.set_dst(dst.index());
            s.op = match (order, bits) {
                (ByteOrder::Le, 16) => Op::Le16,
                (ByteOrder::Le, 32) => Op::Le32,
                (ByteOrder::Le, _) => Op::Le64,
                (ByteOrder::Be, 16) => Op::Be16,
                (ByteOrder::Be, 32) => Op::Be32,
                (ByteOrder::Be, _) => Op::Be64,
                (ByteOrder::Swap, 16) => Op::Swap16,
                (ByteOrder::Swap, 32) => Op::Swap32,
                (ByteOrder::Swap, _) => Op::Swap64,
            };
        }
        Instruction::LoadImm64 { dst, .. } => {
            s.op = Op::LdDw;
            s.set_dst(dst.index());
            s.imm = match resolved {
                Resolved::Imm64(v) => v.value(),
                _ => 0, // linking resolves every lddw
            };
        }
        Instruction::LoadPacket { size, mode, imm } => {
            s.imm = imm as u32 as u64;
            s.op = match (mode, size) {
                (PacketMode::Abs, Size::B) => Op::LdAbsB,
                (PacketMode::Abs, Size::H) => Op::LdAbsH,
                (PacketMode::Abs, _) => Op::LdAbsW,
                (PacketMode::Ind(r), sz) => {
                    s.set_src(r.index());
                    match sz {
                        Size::B => Op::LdIndB,
                        Size::H => Op::LdIndH,
                        _ => Op::LdIndW,
                    }
                }
            };
        }
        Instruction::Load { size, dst, src, offset } => {
            s.set_dst(dst.index());
            s.set_src(src.index());
            s.off = offset;
            s.op = match size {
                Size::B => Op::LdxB,
                Size::H => Op::LdxH,
                Size::W => Op::LdxW,
                Size::DW => Op::LdxDw,
            };
        }
        Instruction::LoadSx { size, dst, src, offset } => {
            s.set_dst(dst.index());
            s.set_src(src.index());
            s.off = offset;
            s.op = match size {
                Size::B => Op::LdxSB,
                Size::H => Op::LdxSH,
                _ => Op::LdxSW,
            };
        }
        Instruction::Store { size, dst, offset, imm } => {
            s.set_dst(dst.index());
            s.off = offset;
            s.imm = imm as i64 as u64;
            s.op = match size {
                Size::B => Op::StB,
                Size::H => Op::StH,
                Size::W => Op::StW,
                Size::DW => Op::StDw,
            };
        }
        Instruction::StoreReg { size, dst, offset, src } => {
            s.set_dst(dst.index());
            s.set_src(src.index());
            s.off = offset;
            s.op = match size {
                Size::B => Op::StxB,
                Size::H => Op::StxH,
                Size::W => Op::StxW,
                Size::DW => Op::StxDw,
            };
        }
        Instruction::Atomic { width, op, dst, offset, src } => {
            s.set_dst(dst.index());
            s.set_src(src.index());
            s.off = offset;
            let w64 = width == Width::W64;
            s.op = match op {
                AtomicOp::Add { fetch: false } => {
                    if w64 {
                        Op::Add64A
                    } else {
                        Op::Add32A
                    }
                }
                AtomicOp::Or { fetch: false } => {
                    if w64 {
                        Op::Or64A
                    } else {
                        Op::Or32A
                    }
                }
                AtomicOp::And { fetch: false } => {
                    if w64 {
                        Op::And64A
                    } else {
                        Op::And32A
                    }
                }
                AtomicOp::Xor { fetch: false } => {
                    if w64 {
                        Op::Xor64A
                    } else {
                        Op::Xor32A
                    }
                }
                AtomicOp::Add { fetch: true } => {
                    if w64 {
                        Op::FetchAdd64
                    } else {
                        Op::FetchAdd32
                    }
                }
                AtomicOp::Or { fetch: true } => {
                    if w64 {
                        Op::FetchOr64
                    } else {
                        Op::FetchOr32
                    }
                }
                AtomicOp::And { fetch: true } => {
                    if w64 {
                        Op::FetchAnd64
                    } else {
                        Op::FetchAnd32
                    }
                }
                AtomicOp::Xor { fetch: true } => {
                    if w64 {
                        Op::FetchXor64
                    } else {
                        Op::FetchXor32
                    }
                }
                AtomicOp::Xchg => {
                    if w64 {
                        Op::Xchg64
                    } else {
                        Op::Xchg32
                    }
                }
                AtomicOp::CmpXchg => {
                    if w64 {
                        Op::CmpXchg64
                    } else {
                        Op::CmpXchg32
                    }
                }
            };
        }
        Instruction::Ja { .. } | Instruction::Ja32 { .. } => {
            s.op = Op::Ja;
            s.target = target(insn.branch_target(pc));
        }
        Instruction::Jump { width, cond, dst, src, offset: _ } => {
            s.set_dst(dst.index());
            s.target = target(insn.branch_target(pc));
            match src {
                Operand::Reg(r) => {
                    s.set_src(r.index());
                    s.op = jump_op(width, cond, false);
                }
                Operand::Imm(v) => {
                    s.imm = imm_for(width, v);
                    s.op = jump_op(width, cond, true);
                }
            }
        }
        Instruction::Call { id } => {
            match resolved {
                Resolved::TailCall => s.op = Op::TailCall,
                Resolved::Loop { index } => {
                    s.op = Op::Loop;
                    s.target = index;
                }
                Resolved::ForEach { index } => {
                    s.op = Op::ForEach;
                    s.target = index;
                }
                Resolved::Helper { index } => {
                    s.op = Op::Call;
                    s.target = index;
                }
                _ => {} // linking resolves every call
            }
            s.imm = id as u64;
        }
        Instruction::CallReg { reg } => {
            s.op = Op::CallX;
            s.set_dst(reg.index());
        }
        Instruction::CallLocal { .. } => {
            s.op = Op::CallLocal;
            s.target = target(insn.branch_target(pc));
        }
        // Linking refuses calls by BTF id.
        Instruction::CallBtf { .. } => {}
        Instruction::Exit => s.op = Op::Exit,
    }
    s
}

#[cold]
#[inline(never)]
fn out_of_bounds(pc: usize, addr: u64, len: u64, write: bool) -> ExecError {
    ExecError::OutOfBounds { pc, addr, len, write }
}

/// Where an access of `len` bytes at `addr` may go: refused (checked mode), or private or shared memory.
#[inline(always)]
fn access<const CHECKED: bool>(
    mm: &MemoryMap<'_>,
    grants: &Grants,
    addr: u64,
    len: u64,
    write: bool,
    pc: usize,
) -> Result<Access, ExecError> {
    if CHECKED {
        mm.classify(addr, len, write, grants).ok_or_else(|| out_of_bounds(pc, addr, len, write))
    } else {
        Ok(mm.classify_unchecked(addr, len))
    }
}

/// How `len` bytes at `addr` may be read: checked in checked mode (`None` if they may not), else
/// vouched for.
#[inline(always)]
fn readable<const CHECKED: bool>(mm: &MemoryMap<'_>, grants: &Grants, addr: u64, len: u64) -> Option<Access> {
    if CHECKED {
        mm.classify(addr, len, false, grants)
    } else {
        Some(mm.classify_unchecked(addr, len))
    }
}

/// Reads a `T` at `addr`, checking the access in checked mode.
#[inline(always)]
fn load<T: Word, const CHECKED: bool>(mm: &MemoryMap<'_>, g: &Grants, addr: u64, pc: usize) -> Result<T, ExecError> {
    let kind = access::<CHECKED>(mm, g, addr, T::SIZE as u64, false, pc)?;
    // SAFETY: in checked mode the range was just found inside a region this execution may read: its
    // input (mutably borrowed for the whole execution), a live, zeroed stack frame, a map's value
    // storage (the `Map` contract), a record granted to it, or host memory under `Env::grant`'s
    // contract; shared memory is read atomically. In unchecked mode the host promised, by an `unsafe`
    // call, that every access of the program is valid.
    Ok(unsafe { access::load::<T>(addr, kind) })
}

/// Writes a `T` at `addr`, checking the access in checked mode.
#[inline(always)]
fn store<T: Word, const CHECKED: bool>(
    mm: &MemoryMap<'_>,
    g: &Grants,
    addr: u64,
    value: T,
    pc: usize,
) -> Result<(), ExecError> {
    let kind = access::<CHECKED>(mm, g, addr, T::SIZE as u64, true, pc)?;
    // SAFETY: as in `load`, for a writable region.
    unsafe { access::store::<T>(addr, value, kind) };
    Ok(())
}

/// The location of an atomic operation, checked for bounds (checked mode) and alignment (always).
#[inline(always)]
fn atomic_addr<const CHECKED: bool>(
    mm: &MemoryMap<'_>,
    g: &Grants,
    addr: u64,
    len: u64,
    pc: usize,
) -> Result<u64, ExecError> {
    access::<CHECKED>(mm, g, addr, len, true, pc)?;
    if addr % len != 0 {
        return Err(ExecError::MisalignedAtomic { pc, addr });
    }
    Ok(addr)
}

#[inline(always)]
fn atomic64<'m, const CHECKED: bool>(
    mm: &MemoryMap<'_>,
    g: &Grants,
    addr: u64,
    pc: usize,
) -> Result<&'m AtomicU64, ExecError> {
    let a = atomic_addr::<CHECKED>(mm, g, addr, 8, pc)?;
    // SAFETY: the address is 8-byte aligned (checked above) and inside memory this execution may write
    // (see `load`). Nothing accesses that memory non-atomically during the operation: the input and
    // stack belong to this execution alone, and shared memory is only ever accessed atomically.
    Ok(unsafe { access::atomic_u64(a) })
}

#[inline(always)]
fn atomic32<'m, const CHECKED: bool>(
    mm: &MemoryMap<'_>,
    g: &Grants,
    addr: u64,
    pc: usize,
) -> Result<&'m AtomicU32, ExecError> {
    let a = atomic_addr::<CHECKED>(mm, g, addr, 4, pc)?;
    // SAFETY: as in `atomic64`, with 4-byte alignment.
    Ok(unsafe { access::atomic_u32(a) })
}

/// Bytes of key kept for each frame's `bpf_for_each_map_elem`.
const MAX_KEY: usize = crate::maps::MAX_KEY_SIZE as usize;

/// The stack of all frames, aligned so that aligned atomics on it are possible.
#[repr(C, align(16))]
struct Stack([MaybeUninit<u8>; STACK_SIZE]);

/// The state a bpf-to-bpf call saves: the caller's program, its return slot and its r1 to r9. BPF
/// leaves r1-r5 undefined after a call; both engines give the caller back its own values. A call
/// `bpf_loop` makes of its callback saves the loop as well.
#[derive(Clone, Copy)]
struct Frame {
    program: usize,
    ret: usize,
    saved: [u64; 9],
    looping: Loop,
}

/// A `bpf_loop` or `bpf_for_each_map_elem` in progress: the callback's first slot (`NO_LOOP` for a
/// plain call), the iteration that runs, the number of iterations (of `bpf_loop`), the argument the
/// callback gets, and for `bpf_for_each_map_elem` the map's index and the size of its keys (0 for
/// `bpf_loop`).
#[derive(Clone, Copy)]
struct Loop {
    callback: usize,
    i: u32,
    n: u32,
    arg: u64,
    map: u32,
    key: usize,
}

/// `Loop::callback` of a frame that a plain bpf-to-bpf call made.
const NO_LOOP: usize = usize::MAX;

/// Starts iteration `looping.i` of a `bpf_loop` callback in a fresh frame at `depth`: r1 the iteration,
/// r2 the callback's argument, the other registers zero, r10 the frame.
#[inline(always)]
fn enter_callback(r: &mut [u64; 16], looping: Loop, stack: *mut u8, uses_stack: bool, depth: usize, stack_hi: u64) {
    r[..10].fill(0);
    r[1] = looping.i as u64;
    r[2] = looping.arg;
    if uses_stack {
        zero_frame(stack, depth);
    }
    r[10] = stack_hi - (FRAME_SIZE * depth) as u64;
}

/// Starts the callback of a `bpf_for_each_map_elem` for one element in a fresh frame at `depth`: r1
/// the map, r2 the key's copy at the bottom of the frame, r3 the value, r4 the callback's argument,
/// the other registers zero, r10 the frame. Programs that iterate maps always have a stack.
#[inline(always)]
fn enter_each(
    r: &mut [u64; 16],
    looping: Loop,
    stack: *mut u8,
    depth: usize,
    stack_hi: u64,
    key: &[u8],
    value: *mut u8,
) {
    r[..10].fill(0);
    r[1] = maps::handle(looping.map);
    zero_frame(stack, depth);
    let lo = STACK_SIZE - FRAME_SIZE * (depth + 1);
    let n = key.len().min(FRAME_SIZE);
    // SAFETY: `depth < MAX_FRAMES`, so the frame's `FRAME_SIZE` bytes from `lo` lie inside the stack
    // buffer `stack` points to, and the key is at most that long; `key` is host memory, elsewhere.
    unsafe { ptr::copy_nonoverlapping(key.as_ptr(), stack.add(lo), n) };
    r[2] = stack_hi - (FRAME_SIZE * (depth + 1)) as u64;
    r[3] = value.expose_provenance() as u64;
    r[4] = looping.arg;
    r[10] = stack_hi - (FRAME_SIZE * depth) as u64;
}

/// Zeroes frame `index` (0 = the entry frame, at the top) of the stack.
#[inline(always)]
fn zero_frame(stack: *mut u8, index: usize) {
    debug_assert!(index < MAX_FRAMES);
    // SAFETY: `index < MAX_FRAMES` (callers check the depth first), so the range lies inside the
    // stack buffer, which `stack` points to with write permission.
    unsafe { ptr::write_bytes(stack.add(STACK_SIZE - FRAME_SIZE * (index + 1)), 0, FRAME_SIZE) };
}

/// What one execution runs with: the linked programs, their code by program id, and the CPU slot.
pub(crate) struct Setup<'a> {
    pub(crate) linked: &'a Linked,
    pub(crate) codes: &'a [Code],
    pub(crate) cpu: usize,
    /// Unchecked mode: the host vouched for every address the program computes, also those it hands
    /// helpers. Otherwise helpers check the memory they are given even when the program's own
    /// accesses are not (verified mode): a helper may read through an argument the verifier knows only
    /// as a number (a `%s` of `bpf_trace_printk`, a host helper's address).
    pub(crate) trusted: bool,
}

/// The regions helpers handed to one execution; whatever is still held when the execution ends (or
/// unwinds from a panicking helper) is given back.
struct Held<'a> {
    grants: Grants,
    maps: &'a [alloc::sync::Arc<dyn crate::maps::Map>],
}

impl Drop for Held<'_> {
    #[inline]
    fn drop(&mut self) {
        if !self.grants.is_empty() {
            release_grants(&mut self.grants, self.maps);
        }
    }
}

/// Runs the entry program on `mem`. `budget` is the number of instructions allowed when `METERED`.
/// `SHADOW` (with `CHECKED`) stops the program with [`ExecError::UninitRead`] where it reads a register or
/// stack byte that was never written; it costs nothing when off.
///
/// Tail calls: the target replaces the program running in the current frame, which it reuses (zeroed,
/// if programs use the stack); it starts as a program does, with r1 the context argument of the call,
/// r2 the input's length and the other registers zero, and its `exit` returns to whoever called the
/// function that made the tail call (the host, or a bpf-to-bpf caller), as in the kernel.
pub(crate) fn run<const CHECKED: bool, const METERED: bool, const SHADOW: bool>(
    setup: &Setup<'_>,
    mem: &mut [u8],
    mut budget: u64,
) -> Result<u64, ExecError> {
    let linked = setup.linked;
    let env = linked.env();
    let uses_stack = linked.uses_stack();
    let mut stack = Stack([MaybeUninit::uninit(); STACK_SIZE]);
    let stack_ptr = stack.0.as_mut_ptr().cast::<u8>();
    let stack_hi = stack_ptr.expose_provenance() as u64 + STACK_SIZE as u64;
    if uses_stack {
        zero_frame(stack_ptr, 0);
    }

    let mem_len = mem.len() as u64;
    let mem_addr = if mem.is_empty() { 0 } else { mem.as_mut_ptr().expose_provenance() as u64 };
    // Without r10 no program can reach the stack: the stack region is then empty.
    let frame = if uses_stack { FRAME_SIZE as u64 } else { 0 };
    let mut mm = MemoryMap {
        input: Region { start: mem_addr, len: mem_len, writable: true },
        stack_lo: stack_hi - frame,
        stack_hi,
        shared: linked.regions(),
    };
    let mut held = Held { grants: Grants::new(), maps: env.maps() };

    let mut r = [0u64; 16];
    r[1] = mem_addr;
    r[2] = mem_len;
    r[10] = stack_hi;
    // Written by each call before its return reads it: not initialised here (704 bytes a run).
    let mut frames = [const { MaybeUninit::<Frame>::uninit() }; MAX_FRAMES];
    let mut depth = 0usize;
    let mut program = linked.entry();
    let mut slots = &setup.codes[program].slots[..];
    let mut tail_calls = 0u32;
    let helpers = env.helpers();
    let map_access = &setup.codes[program].maps[..];
    let mut pc = 0usize;
    let mut shadow = if SHADOW { Some(shadow::Shadow::new(stack_hi)) } else { None };
    // The keys of the `bpf_for_each_map_elem` calls in progress, by depth (allocated at the first).
    let mut iter_keys: Option<alloc::vec::Vec<u8>> = None;

    loop {
        // A reference, not a copy: each operation reads only the fields it needs. Copying the 24-byte
        // slot made the compiler load every field and spill the program counter at every dispatch
        // (about 22 host instructions a dispatch against 11; half the interpreter's time on loops).
        let s = &slots[pc];
        let at = pc;
        if METERED {
            if budget == 0 {
                return Err(ExecError::BudgetExhausted { pc: at });
            }
            budget -= 1;
        }
        if SHADOW {
            if let Some(sh) = shadow.as_mut() {
                sh.before(&linked.programs()[program], at, &r, depth, &mm, env)?;
            }
        }
        pc += 1;
        let d = s.dst() as usize;
        let sr = s.src() as usize;

        macro_rules! bin64 {
            ($b:expr, |$x:ident, $y:ident| $e:expr) => {{
                let $x = r[d];
                let $y: u64 = $b;
                r[d] = $e;
            }};
        }
        macro_rules! bin32 {
            ($b:expr, |$x:ident, $y:ident| $e:expr) => {{
                let $x = r[d] as u32;
                let $y = $b as u32;
                r[d] = ($e) as u32 as u64;
            }};
        }
        macro_rules! jump {
            ($c:expr) => {
                if $c {
                    pc = s.target as usize;
                } else {
                    // 0, or the slots a threaded jump's fall-through skips (see `fuse`).
                    pc += s.off as u16 as usize;
                }
            };
        }
        // Calls `helper` with r1-r5 under this execution's memory rules; its failure ends the run.
        macro_rules! call_helper {
            ($helper:expr) => {{
                let helper = $helper;
                let mut ctx = CallContext {
                    memory: &mm,
                    grants: &mut held.grants,
                    checked: CHECKED || !setup.trusted,
                    pc: at,
                    maps: env.maps(),
                    print: env.print_sink(),
                    cpu: setup.cpu,
                };
                helper.call(&mut ctx, [r[1], r[2], r[3], r[4], r[5]]).map_err(|source| ExecError::Helper {
                    pc: at,
                    id: helper.id(),
                    source,
                })?
            }};
        }
        // `add dst, c; jcc dst, imm` (see `fuse`): `off` is `c << 1 | skip`.
        macro_rules! add_jump {
            (|$x:ident| $c:expr) => {{
                let $x = r[d].wrapping_add((s.off >> 1) as i64 as u64);
                r[d] = $x;
                if $c {
                    pc = s.target as usize;
                } else {
                    pc += 1 + (s.off & 1) as usize;
                }
            }};
        }
        // `mov d, a; add d, b; ldx y, [d+off]` (see `fuse`): the load is the third slot's.
        macro_rules! mov_add_load {
            ($t:ty) => {{
                let a = r[sr].wrapping_add(r[s.target as usize & 15]);
                r[d] = a;
                let off = (s.imm >> 8) as u16 as i16 as i64 as u64;
                r[s.imm as usize & 15] = load::<$t, CHECKED>(&mm, &held.grants, a.wrapping_add(off), at + 2)? as u64;
                pc += 2;
            }};
        }
        macro_rules! addr {
            ($base:expr) => {
                r[$base].wrapping_add(s.off as i64 as u64)
            };
        }
        macro_rules! packet {
            ($t:ty, $off:expr) => {{
                let off = $off;
                let size = core::mem::size_of::<$t>() as i64;
                if off < 0 || off + size > mem_len as i64 {
                    // Legacy packet loads end the program with 0 when out of bounds.
                    return Ok(0);
                }
                // SAFETY: the bytes lie in the input (tested above), which this execution borrows
                // mutably for its whole run.
                let v: $t = unsafe { access::load::<$t>(mem_addr + off as u64, Access::Private) };
                r[0] = <$t>::from_be(v) as u64;
            }};
        }

        match s.op {
            Op::Add64I => bin64!(s.imm, |a, b| a.wrapping_add(b)),
            Op::Sub64I => bin64!(s.imm, |a, b| a.wrapping_sub(b)),
            Op::Mul64I => bin64!(s.imm, |a, b| a.wrapping_mul(b)),
            Op::Div64I => bin64!(s.imm, |a, b| a / b),
            Op::SDiv64I => bin64!(s.imm, |a, b| (a as i64).wrapping_div(b as i64) as u64),
            Op::Or64I => bin64!(s.imm, |a, b| a | b),
            Op::And64I => bin64!(s.imm, |a, b| a & b),
            Op::Lsh64I => bin64!(s.imm, |a, b| a << b),
            Op::Rsh64I => bin64!(s.imm, |a, b| a >> b),
            Op::Mod64I => bin64!(s.imm, |a, b| a % b),
            Op::SMod64I => bin64!(s.imm, |a, b| (a as i64).wrapping_rem(b as i64) as u64),
            Op::Xor64I => bin64!(s.imm, |a, b| a ^ b),
            Op::Mov64I => r[d] = s.imm,
            Op::Arsh64I => bin64!(s.imm, |a, b| ((a as i64) >> b) as u64),

            Op::Add64R => bin64!(r[sr], |a, b| a.wrapping_add(b)),
            Op::Sub64R => bin64!(r[sr], |a, b| a.wrapping_sub(b)),
            Op::Mul64R => bin64!(r[sr], |a, b| a.wrapping_mul(b)),
            Op::Div64R => bin64!(r[sr], |a, b| a.checked_div(b).unwrap_or(0)),
            Op::SDiv64R => bin64!(r[sr], |a, b| if b == 0 { 0 } else { (a as i64).wrapping_div(b as i64) as u64 }),
            Op::Or64R => bin64!(r[sr], |a, b| a | b),
            Op::And64R => bin64!(r[sr], |a, b| a & b),
            Op::Lsh64R => bin64!(r[sr], |a, b| a << (b & 63)),
            Op::Rsh64R => bin64!(r[sr], |a, b| a >> (b & 63)),
            Op::Mod64R => bin64!(r[sr], |a, b| if b == 0 { a } else { a % b }),
            Op::SMod64R => bin64!(r[sr], |a, b| if b == 0 { a } else { (a as i64).wrapping_rem(b as i64) as u64 }),
            Op::Xor64R => bin64!(r[sr], |a, b| a ^ b),
            Op::Mov64R => r[d] = r[sr],
            Op::Arsh64R => bin64!(r[sr], |a, b| ((a as i64) >> (b & 63)) as u64),

            Op::Add32I => bin32!(s.imm, |a, b| a.wrapping_add(b)),
            Op::Sub32I => bin32!(s.imm, |a, b| a.wrapping_sub(b)),
            Op::Mul32I => bin32!(s.imm, |a, b| a.wrapping_mul(b)),
            Op::Div32I => bin32!(s.imm, |a, b| a / b),
            Op::SDiv32I => bin32!(s.imm, |a, b| (a as i32).wrapping_div(b as i32)),
            Op::Or32I => bin32!(s.imm, |a, b| a | b),
            Op::And32I => bin32!(s.imm, |a, b| a & b),
            Op::Lsh32I => bin32!(s.imm, |a, b| a << b),
            Op::Rsh32I => bin32!(s.imm, |a, b| a >> b),
            Op::Mod32I => bin32!(s.imm, |a, b| a % b),
            Op::SMod32I => bin32!(s.imm, |a, b| (a as i32).wrapping_rem(b as i32)),
            Op::Xor32I => bin32!(s.imm, |a, b| a ^ b),
            Op::Mov32I => r[d] = s.imm,
            Op::Arsh32I => bin32!(s.imm, |a, b| (a as i32) >> b),

            Op::Add32R => bin32!(r[sr], |a, b| a.wrapping_add(b)),
            Op::Sub32R => bin32!(r[sr], |a, b| a.wrapping_sub(b)),
            Op::Mul32R => bin32!(r[sr], |a, b| a.wrapping_mul(b)),
            Op::Div32R => bin32!(r[sr], |a, b| a.checked_div(b).unwrap_or(0)),
            Op::SDiv32R => bin32!(r[sr], |a, b| if b == 0 { 0 } else { (a as i32).wrapping_div(b as i32) as u32 }),
            Op::Or32R => bin32!(r[sr], |a, b| a | b),
            Op::And32R => bin32!(r[sr], |a, b| a & b),
            Op::Lsh32R => bin32!(r[sr], |a, b| a << (b & 31)),
            Op::Rsh32R => bin32!(r[sr], |a, b| a >> (b & 31)),
            Op::Mod32R => bin32!(r[sr], |a, b| if b == 0 { a } else { a % b }),
            Op::SMod32R => bin32!(r[sr], |a, b| if b == 0 { a } else { (a as i32).wrapping_rem(b as i32) as u32 }),
            Op::Xor32R => bin32!(r[sr], |a, b| a ^ b),
            Op::Mov32R => r[d] = r[sr] as u32 as u64,
            Op::Arsh32R => bin32!(r[sr], |a, b| (a as i32) >> (b & 31)),

            Op::AddJeq64I => add_jump!(|x| x == s.imm),
            Op::AddJne64I => add_jump!(|x| x != s.imm),
            Op::AddJlt64I => add_jump!(|x| x < s.imm),
            Op::AddJle64I => add_jump!(|x| x <= s.imm),
            Op::AddJgt64I => add_jump!(|x| x > s.imm),
            Op::AddJge64I => add_jump!(|x| x >= s.imm),
            Op::MovAddLdxB => mov_add_load!(u8),
            Op::MovAddLdxH => mov_add_load!(u16),
            Op::MovAddLdxW => mov_add_load!(u32),
            Op::MovAddLdxDw => mov_add_load!(u64),
            Op::MovAnd64I => {
                r[d] = r[sr] & s.imm;
                pc += 1;
            }
            Op::MovLsh64I => {
                r[d] = r[sr] << s.imm;
                pc += 1;
            }
            Op::MovRsh64I => {
                r[d] = r[sr] >> s.imm;
                pc += 1;
            }
            Op::MovAnd32I => {
                r[d] = (r[sr] as u32 & s.imm as u32) as u64;
                pc += 1;
            }
            Op::MovLsh32I => {
                r[d] = ((r[sr] as u32) << s.imm) as u64;
                pc += 1;
            }
            Op::MovRsh32I => {
                r[d] = ((r[sr] as u32) >> s.imm) as u64;
                pc += 1;
            }
            Op::ZextPair => {
                r[d] = r[d] as u32 as u64;
                pc += 1;
            }
            Op::SextPair => {
                r[d] = r[d] as i32 as i64 as u64;
                pc += 1;
            }
            Op::MovAdd64R => {
                r[d] = r[sr].wrapping_add(r[s.target as usize & 15]);
                pc += 1;
            }
            Op::MovAdd64I => {
                r[d] = r[sr].wrapping_add(s.imm);
                pc += 1;
            }
            Op::Neg64 => r[d] = r[d].wrapping_neg(),
            Op::Neg32 => r[d] = (r[d] as u32).wrapping_neg() as u64,
            Op::Zext32 => r[d] = r[d] as u32 as u64,
            Op::Nop => {}
            Op::MovSx8To64 => r[d] = r[sr] as i8 as i64 as u64,
            Op::MovSx16To64 => r[d] = r[sr] as i16 as i64 as u64,
            Op::MovSx32To64 => r[d] = r[sr] as i32 as i64 as u64,
            Op::MovSx8To32 => r[d] = r[sr] as i8 as i32 as u32 as u64,
            Op::MovSx16To32 => r[d] = r[sr] as i16 as i32 as u32 as u64,

            Op::Le16 => r[d] = (r[d] as u16).to_le() as u64,
            Op::Le32 => r[d] = (r[d] as u32).to_le() as u64,
            Op::Le64 => r[d] = r[d].to_le(),
            Op::Be16 => r[d] = (r[d] as u16).to_be() as u64,
            Op::Be32 => r[d] = (r[d] as u32).to_be() as u64,
            Op::Be64 => r[d] = r[d].to_be(),
            Op::Swap16 => r[d] = (r[d] as u16).swap_bytes() as u64,
            Op::Swap32 => r[d] = (r[d] as u32).swap_bytes() as u64,
            Op::Swap64 => r[d] = r[d].swap_bytes(),

            Op::LdDw => {
                r[d] = s.imm;
                pc += 1;
            }

            Op::LdxB => r[d] = load::<u8, CHECKED>(&mm, &held.grants, addr!(sr), at)? as u64,
            Op::LdxH => r[d] = load::<u16, CHECKED>(&mm, &held.grants, addr!(sr), at)? as u64,
            Op::LdxW => r[d] = load::<u32, CHECKED>(&mm, &held.grants, addr!(sr), at)? as u64,
            Op::LdxDw => r[d] = load::<u64, CHECKED>(&mm, &held.grants, addr!(sr), at)?,
            Op::LdxSB => r[d] = load::<u8, CHECKED>(&mm, &held.grants, addr!(sr), at)? as i8 as i64 as u64,
            Op::LdxSH => r[d] = load::<u16, CHECKED>(&mm, &held.grants, addr!(sr), at)? as i16 as i64 as u64,
            Op::LdxSW => r[d] = load::<u32, CHECKED>(&mm, &held.grants, addr!(sr), at)? as i32 as i64 as u64,

            Op::StB => store::<u8, CHECKED>(&mm, &held.grants, addr!(d), s.imm as u8, at)?,
            Op::StH => store::<u16, CHECKED>(&mm, &held.grants, addr!(d), s.imm as u16, at)?,
            Op::StW => store::<u32, CHECKED>(&mm, &held.grants, addr!(d), s.imm as u32, at)?,
            Op::StDw => store::<u64, CHECKED>(&mm, &held.grants, addr!(d), s.imm, at)?,
            Op::StxB => store::<u8, CHECKED>(&mm, &held.grants, addr!(d), r[sr] as u8, at)?,
            Op::StxH => store::<u16, CHECKED>(&mm, &held.grants, addr!(d), r[sr] as u16, at)?,
            Op::StxW => store::<u32, CHECKED>(&mm, &held.grants, addr!(d), r[sr] as u32, at)?,
            Op::StxDw => store::<u64, CHECKED>(&mm, &held.grants, addr!(d), r[sr], at)?,

            Op::Add32A => {
                _ = atomic32::<CHECKED>(&mm, &held.grants, addr!(d), at)?.fetch_add(r[sr] as u32, Ordering::SeqCst)
            }
            Op::Or32A => {
                _ = atomic32::<CHECKED>(&mm, &held.grants, addr!(d), at)?.fetch_or(r[sr] as u32, Ordering::SeqCst)
            }
            Op::And32A => {
                _ = atomic32::<CHECKED>(&mm, &held.grants, addr!(d), at)?.fetch_and(r[sr] as u32, Ordering::SeqCst)
            }
            Op::Xor32A => {
                _ = atomic32::<CHECKED>(&mm, &held.grants, addr!(d), at)?.fetch_xor(r[sr] as u32, Ordering::SeqCst)
            }
            Op::FetchAdd32 => {
                r[sr] = atomic32::<CHECKED>(&mm, &held.grants, addr!(d), at)?.fetch_add(r[sr] as u32, Ordering::SeqCst)
                    as u64
            }
            Op::FetchOr32 => {
                r[sr] = atomic32::<CHECKED>(&mm, &held.grants, addr!(d), at)?.fetch_or(r[sr] as u32, Ordering::SeqCst)
                    as u64
            }
            Op::FetchAnd32 => {
                r[sr] = atomic32::<CHECKED>(&mm, &held.grants, addr!(d), at)?.fetch_and(r[sr] as u32, Ordering::SeqCst)
                    as u64
            }
            Op::FetchXor32 => {
                r[sr] = atomic32::<CHECKED>(&mm, &held.grants, addr!(d), at)?.fetch_xor(r[sr] as u32, Ordering::SeqCst)
                    as u64
            }
            Op::Xchg32 => {
                r[sr] =
                    atomic32::<CHECKED>(&mm, &held.grants, addr!(d), at)?.swap(r[sr] as u32, Ordering::SeqCst) as u64
            }
            Op::CmpXchg32 => {
                let cell = atomic32::<CHECKED>(&mm, &held.grants, addr!(d), at)?;
                let old = match cell.compare_exchange(r[0] as u32, r[sr] as u32, Ordering::SeqCst, Ordering::SeqCst) {
                    Ok(v) | Err(v) => v,
                };
                r[0] = old as u64;
            }
            Op::Add64A => _ = atomic64::<CHECKED>(&mm, &held.grants, addr!(d), at)?.fetch_add(r[sr], Ordering::SeqCst),
            Op::Or64A => _ = atomic64::<CHECKED>(&mm, &held.grants, addr!(d), at)?.fetch_or(r[sr], Ordering::SeqCst),
            Op::And64A => _ = atomic64::<CHECKED>(&mm, &held.grants, addr!(d), at)?.fetch_and(r[sr], Ordering::SeqCst),
            Op::Xor64A => _ = atomic64::<CHECKED>(&mm, &held.grants, addr!(d), at)?.fetch_xor(r[sr], Ordering::SeqCst),
            Op::FetchAdd64 => {
                r[sr] = atomic64::<CHECKED>(&mm, &held.grants, addr!(d), at)?.fetch_add(r[sr], Ordering::SeqCst)
            }
            Op::FetchOr64 => {
                r[sr] = atomic64::<CHECKED>(&mm, &held.grants, addr!(d), at)?.fetch_or(r[sr], Ordering::SeqCst)
            }
            Op::FetchAnd64 => {
                r[sr] = atomic64::<CHECKED>(&mm, &held.grants, addr!(d), at)?.fetch_and(r[sr], Ordering::SeqCst)
            }
            Op::FetchXor64 => {
                r[sr] = atomic64::<CHECKED>(&mm, &held.grants, addr!(d), at)?.fetch_xor(r[sr], Ordering::SeqCst)
            }
            Op::Xchg64 => r[sr] = atomic64::<CHECKED>(&mm, &held.grants, addr!(d), at)?.swap(r[sr], Ordering::SeqCst),
            Op::CmpXchg64 => {
                let cell = atomic64::<CHECKED>(&mm, &held.grants, addr!(d), at)?;
                r[0] = match cell.compare_exchange(r[0], r[sr], Ordering::SeqCst, Ordering::SeqCst) {
                    Ok(v) | Err(v) => v,
                };
            }

            Op::LdAbsB => packet!(u8, s.imm as u32 as i32 as i64),
            Op::LdAbsH => packet!(u16, s.imm as u32 as i32 as i64),
            Op::LdAbsW => packet!(u32, s.imm as u32 as i32 as i64),
            Op::LdIndB => packet!(u8, (r[sr] as u32).wrapping_add(s.imm as u32) as i32 as i64),
            Op::LdIndH => packet!(u16, (r[sr] as u32).wrapping_add(s.imm as u32) as i32 as i64),
            Op::LdIndW => packet!(u32, (r[sr] as u32).wrapping_add(s.imm as u32) as i32 as i64),

            Op::Ja => pc = s.target as usize,
            Op::CopyLoop => {
                let (l, op) = &setup.codes[program].copies[s.off as usize];
                let b = if immediate_operand(*op) { s.imm } else { r[sr] };
                if holds(*op, r[d], b) {
                    pc = if bulk_copy(l, &mut r, &mm) { l.exit } else { s.target as usize };
                }
            }
            Op::Jeq64I => jump!(r[d] == s.imm),
            Op::Jgt64I => jump!(r[d] > s.imm),
            Op::Jge64I => jump!(r[d] >= s.imm),
            Op::Jset64I => jump!(r[d] & s.imm != 0),
            Op::Jne64I => jump!(r[d] != s.imm),
            Op::Jsgt64I => jump!((r[d] as i64) > (s.imm as i64)),
            Op::Jsge64I => jump!((r[d] as i64) >= (s.imm as i64)),
            Op::Jlt64I => jump!(r[d] < s.imm),
            Op::Jle64I => jump!(r[d] <= s.imm),
            Op::Jslt64I => jump!((r[d] as i64) < (s.imm as i64)),
            Op::Jsle64I => jump!((r[d] as i64) <= (s.imm as i64)),
            Op::Jeq64R => jump!(r[d] == r[sr]),
            Op::Jgt64R => jump!(r[d] > r[sr]),
            Op::Jge64R => jump!(r[d] >= r[sr]),
            Op::Jset64R => jump!(r[d] & r[sr] != 0),
            Op::Jne64R => jump!(r[d] != r[sr]),
            Op::Jsgt64R => jump!((r[d] as i64) > (r[sr] as i64)),
            Op::Jsge64R => jump!((r[d] as i64) >= (r[sr] as i64)),
            Op::Jlt64R => jump!(r[d] < r[sr]),
            Op::Jle64R => jump!(r[d] <= r[sr]),
            Op::Jslt64R => jump!((r[d] as i64) < (r[sr] as i64)),
            Op::Jsle64R => jump!((r[d] as i64) <= (r[sr] as i64)),
            Op::Jeq32I => jump!(r[d] as u32 == s.imm as u32),
            Op::Jgt32I => jump!(r[d] as u32 > s.imm as u32),
            Op::Jge32I => jump!(r[d] as u32 >= s.imm as u32),
            Op::Jset32I => jump!(r[d] as u32 & s.imm as u32 != 0),
            Op::Jne32I => jump!(r[d] as u32 != s.imm as u32),
            Op::Jsgt32I => jump!((r[d] as i32) > (s.imm as i32)),
            Op::Jsge32I => jump!((r[d] as i32) >= (s.imm as i32)),
            Op::Jlt32I => jump!((r[d] as u32) < s.imm as u32),
            Op::Jle32I => jump!(r[d] as u32 <= s.imm as u32),
            Op::Jslt32I => jump!((r[d] as i32) < (s.imm as i32)),
            Op::Jsle32I => jump!((r[d] as i32) <= (s.imm as i32)),
            Op::Jeq32R => jump!(r[d] as u32 == r[sr] as u32),
            Op::Jgt32R => jump!(r[d] as u32 > r[sr] as u32),
            Op::Jge32R => jump!(r[d] as u32 >= r[sr] as u32),
            Op::Jset32R => jump!(r[d] as u32 & r[sr] as u32 != 0),
            Op::Jne32R => jump!(r[d] as u32 != r[sr] as u32),
            Op::Jsgt32R => jump!((r[d] as i32) > (r[sr] as i32)),
            Op::Jsge32R => jump!((r[d] as i32) >= (r[sr] as i32)),
            Op::Jlt32R => jump!((r[d] as u32) < r[sr] as u32),
            Op::Jle32R => jump!(r[d] as u32 <= r[sr] as u32),
            Op::Jslt32R => jump!((r[d] as i32) < (r[sr] as i32)),
            Op::Jsle32R => jump!((r[d] as i32) <= (r[sr] as i32)),

            Op::Call | Op::CallX => {
                let helper = if s.op == Op::Call {
                    &helpers[s.target as usize]
                } else {
                    let id = r[d];
                    match u32::try_from(id).ok().and_then(|id| env.helper_index(id)) {
                        Some(i) => &helpers[i],
                        None => return Err(ExecError::UnknownHelper { pc: at, id }),
                    }
                };
                r[0] = call_helper!(helper);
            }
            Op::MapCall => {
                let helper = &helpers[s.target as usize];
                let id = s.imm as u32;
                let how = maps::handle_index(r[1]).and_then(|i| map_access.get(i as usize)).copied();
                r[0] = match how {
                    Some(MapAccess::Array(layout)) if id == MAP_LOOKUP_ELEM => {
                        match readable::<CHECKED>(&mm, &held.grants, r[2], 4) {
                            // SAFETY: the key's 4 bytes may be read with this access kind (checked just now,
                            // proven by the verifier, or vouched for by the host).
                            Some(kind) => match unsafe { access::load::<u32>(r[2], kind) } {
                                key if key < layout.max_entries => layout.base + key as u64 * layout.stride,
                                _ => 0,
                            },
                            None => call_helper!(helper),
                        }
                    }
                    Some(MapAccess::Hash(hash)) if hash.takes(id) => {
                        let key = readable::<CHECKED>(&mm, &held.grants, r[2], hash.key_size as u64);
                        let value = match id {
                            MAP_UPDATE_ELEM => readable::<CHECKED>(&mm, &held.grants, r[3], hash.value_size as u64),
                            _ => Some(Access::Private), // not read
                        };
                        match (key, value) {
                            // SAFETY: the environment holds the map, which takes `id`; the key (and value)
                            // may be read with these access kinds (as above).
                            (Some(k), Some(v)) => unsafe {
                                DirectHash::call(hash.addr, id, r[2], k, r[3], v, r[4], setup.cpu)
                            },
                            _ => call_helper!(helper),
                        }
                    }
                    _ => call_helper!(helper),
                };
            }
            Op::TailCall => {
                let target = maps::handle_index(r[2])
                    .and_then(|i| env.map(i))
                    .and_then(|m| m.downcast_ref::<ProgArrayMap>())
                    .and_then(|pa| pa.get(u32::try_from(r[3]).ok()?))
                    .filter(|&id| (id as usize) < setup.codes.len());
                match target {
                    Some(id) if tail_calls < MAX_TAIL_CALLS => {
                        tail_calls += 1;
                        program = id as usize;
                        slots = &setup.codes[program].slots[..];
                        let ctx_arg = r[1];
                        r[..10].fill(0);
                        r[1] = ctx_arg;
                        r[2] = mem_len;
                        if uses_stack {
                            zero_frame(stack_ptr, depth);
                        }
                        if SHADOW {
                            if let Some(sh) = shadow.as_mut() {
                                sh.tail_call(depth);
                            }
                        }
                        pc = 0;
                    }
                    // A failed tail call returns an error and execution goes on.
                    _ => r[0] = -2i64 as u64,
                }
            }
            Op::CallLocal => {
                if depth + 1 >= MAX_FRAMES {
                    return Err(ExecError::CallDepthExceeded { pc: at });
                }
                let mut saved = [0u64; 9];
                saved.copy_from_slice(&r[1..10]);
                frames[depth].write(Frame {
                    program,
                    ret: pc,
                    saved,
                    looping: Loop { callback: NO_LOOP, i: 0, n: 0, arg: 0, map: 0, key: 0 },
                });
                // The callee starts with its arguments r1-r5; r0 and r6-r9 read as zero.
                r[0] = 0;
                r[6..10].fill(0);
                depth += 1;
                if uses_stack {
                    zero_frame(stack_ptr, depth);
                    mm.stack_lo -= FRAME_SIZE as u64;
                }
                r[10] = stack_hi - (FRAME_SIZE * depth) as u64;
                pc = s.target as usize;
            }
            Op::Loop => {
                // `bpf_loop(nr_loops, callback, callback_ctx, flags)`, checked in the kernel's order.
                let n = r[1] as u32;
                if r[4] != 0 {
                    r[0] = -22i64 as u64; // EINVAL
                    continue;
                }
                if n as u64 > MAX_LOOPS {
                    r[0] = -7i64 as u64; // E2BIG
                    continue;
                }
                let Some(callback) = linked.programs()[program].callback(r[2]) else {
                    // Not a function of the program: the helper's own function says so.
                    let helper = &helpers[s.target as usize];
                    r[0] = call_helper!(helper);
                    continue;
                };
                if n == 0 {
                    r[0] = 0;
                    continue;
                }
                if depth + 1 >= MAX_FRAMES {
                    return Err(ExecError::CallDepthExceeded { pc: at });
                }
                let mut saved = [0u64; 9];
                saved.copy_from_slice(&r[1..10]);
                let looping = Loop { callback, i: 0, n, arg: r[3], map: 0, key: 0 };
                frames[depth].write(Frame { program, ret: pc, saved, looping });
                depth += 1;
                if uses_stack {
                    mm.stack_lo -= FRAME_SIZE as u64;
                }
                enter_callback(&mut r, looping, stack_ptr, uses_stack, depth, stack_hi);
                if SHADOW {
                    if let Some(sh) = shadow.as_mut() {
                        sh.callback(depth - 1, true, 0);
                    }
                }
                pc = callback;
            }
            Op::ForEach => {
                // `bpf_for_each_map_elem(map, callback, callback_ctx, flags)`.
                if r[4] != 0 {
                    r[0] = -22i64 as u64; // EINVAL
                    continue;
                }
                let map = maps::handle_index(r[1]).and_then(|i| env.map(i).map(|m| (i, m)));
                let callback = linked.programs()[program].callback(r[2]);
                let iterated = map.filter(|(_, m)| iterable(m.def().map_type));
                let (Some((index, map)), Some(callback)) = (iterated, callback) else {
                    // Not a map that can be iterated, or not a function of the program: the helper's
                    // own function says so.
                    let helper = &helpers[s.target as usize];
                    r[0] = call_helper!(helper);
                    continue;
                };
                if depth + 1 >= MAX_FRAMES {
                    return Err(ExecError::CallDepthExceeded { pc: at });
                }
                let key_size = map.def().key_size as usize;
                let keys = iter_keys.get_or_insert_with(|| alloc::vec![0u8; MAX_FRAMES * MAX_KEY]);
                let key = &mut keys[depth * MAX_KEY..depth * MAX_KEY + key_size];
                let Some(value) = for_each_step(&**map, 0, key, setup.cpu) else {
                    r[0] = 0;
                    continue;
                };
                let mut saved = [0u64; 9];
                saved.copy_from_slice(&r[1..10]);
                let looping = Loop { callback, i: 0, n: u32::MAX, arg: r[3], map: index, key: key_size };
                frames[depth].write(Frame { program, ret: pc, saved, looping });
                depth += 1;
                mm.stack_lo -= FRAME_SIZE as u64;
                enter_each(&mut r, looping, stack_ptr, depth, stack_hi, key, value);
                if SHADOW {
                    if let Some(sh) = shadow.as_mut() {
                        sh.callback(depth - 1, true, key_size);
                    }
                }
                pc = callback;
            }
            Op::Exit => {
                if depth == 0 {
                    return Ok(r[0]);
                }
                depth -= 1;
                // SAFETY: `depth` was raised past this index by a call, which wrote the frame first.
                let mut f = unsafe { frames[depth].assume_init() };
                if f.looping.callback != NO_LOOP && f.looping.key > 0 {
                    // A `bpf_for_each_map_elem` callback returned: 0 goes on to the next element.
                    let visited = f.looping.i + 1;
                    let map = env.map(f.looping.map);
                    if let (0, Some(map), Some(keys)) = (r[0], map, iter_keys.as_mut()) {
                        let key = &mut keys[depth * MAX_KEY..depth * MAX_KEY + f.looping.key];
                        if let Some(value) = for_each_step(&**map, visited, key, setup.cpu) {
                            f.looping.i = visited;
                            frames[depth].write(f);
                            depth += 1;
                            enter_each(&mut r, f.looping, stack_ptr, depth, stack_hi, key, value);
                            if SHADOW {
                                if let Some(sh) = shadow.as_mut() {
                                    sh.callback(depth - 1, false, f.looping.key);
                                }
                            }
                            program = f.program;
                            slots = &setup.codes[program].slots[..];
                            pc = f.looping.callback;
                            continue;
                        }
                    }
                    r[0] = visited as u64;
                } else if f.looping.callback != NO_LOOP {
                    // The callback returned: 0 goes on to the next iteration, anything else stops.
                    let next = f.looping.i + 1;
                    if r[0] == 0 && next < f.looping.n {
                        f.looping.i = next;
                        frames[depth].write(f);
                        depth += 1;
                        enter_callback(&mut r, f.looping, stack_ptr, uses_stack, depth, stack_hi);
                        if SHADOW {
                            if let Some(sh) = shadow.as_mut() {
                                sh.callback(depth - 1, false, f.looping.key);
                            }
                        }
                        program = f.program;
                        slots = &setup.codes[program].slots[..];
                        pc = f.looping.callback;
                        continue;
                    }
                    r[0] = if r[0] != 0 { next as u64 } else { f.looping.n as u64 };
                }
                r[1..10].copy_from_slice(&f.saved);
                r[10] = stack_hi - (FRAME_SIZE * depth) as u64;
                if uses_stack {
                    mm.stack_lo += FRAME_SIZE as u64;
                }
                program = f.program;
                slots = &setup.codes[program].slots[..];
                pc = f.ret;
            }
        }
    }
}
