//! Programs at the edges of what the verifier can prove safe, from arbitrary bytes, and the check that
//! makes its proofs meet reality; shared by `tests/verifier_soundness.rs` (proptest's bytes) and the fuzz
//! target `verifier_soundness` (libFuzzer's), so both test the same things.
//!
//! [`case`] builds one program with its context description (a buffer whose length is in `r2`, or a
//! fixed-size context with read-only ranges), initial map contents and several inputs. Programs are
//! made of snippets: a value computed by ALU operations of every kind and then bounded (by `and`, `mod`,
//! shifts, sign extension, or signed, unsigned, 32- and 64-bit comparisons and `jset`) and used as the
//! offset of an access to the stack, the input, the context, a map value or a ring-buffer record; loops
//! over stack arrays and the input; spills and fills of numbers and pointers with partial overwrites;
//! helper calls; bpf-to-bpf calls passing stack pointers, and call chains; joins of paths that differ in
//! one fact; branches the verifier may prove dead, leading to an access that is always out of bounds.
//! Each access is placed, from what the generator knows of the offset's range, exactly at an edge of
//! its region, one byte past it, or inside it, so that the verifier accepts often and a mistake in its
//! bounds shows as an out-of-bounds access. Input lengths and bytes are drawn from the constants the
//! program compares with, so that runs hit those edges.
//!
//! [`check`] verifies the program; if the verifier accepts, it runs every input in checked mode (with a
//! budget) and verified mode on both engines, and in checked mode a second build of the program that
//! first fills its stack frames and unwritten registers with a pattern (a read of anything never
//! written then changes the outcome). Every run must succeed, and all must agree on the result, the
//! input bytes, the ring-buffer records and the maps; read-only context bytes must stay unchanged.
//! A failure that is an instance of a verifier bug already known, or of what the verifier's rules
//! allow, is told apart (see [`Failure::known_bug`]), so that searches can go on past it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use super::gen::Source;
use ebpf_vm::helpers::standard as std_helpers;
use ebpf_vm::isa::{AluOp, AtomicOp, ByteOrder, Cond, Imm64, Instruction, Operand, Reg, Size, SxWidth, Width};
use ebpf_vm::link::Linked;
use ebpf_vm::maps::{self, MapDef, MapType, RingBufMap, BPF_F_RDONLY_PROG};
use ebpf_vm::{Context, Engine, Env, ExecError, Helper, HelperError, HelperSig, Program, Verifier, VerifyError, Vm};

/// The instruction budget of checked runs: far above what generated loops need (a few hundred thousand
/// instructions at most), far below the verifier's bound on loops.
pub const BUDGET: u64 = 50_000_000;

/// The helper id of a deterministic helper every environment has: returns its argument rotated left
/// by 7 (in place of `ktime_get_ns`, whose results would differ between runs).
pub const ECHO: u32 = 5;

/// Indices of the maps of every generated environment (see [`map_defs`]).
pub mod map {
    /// Array, 4-byte keys, 24-byte values, one entry.
    pub const ARRAY: i32 = 0;
    /// Hash map, 8-byte keys, 16-byte values, one entry (key 0 is there at the start).
    pub const HASH: i32 = 1;
    /// Array, 4-byte keys, 512-byte values (a whole stack frame), one entry.
    pub const BIG: i32 = 2;
    /// Ring buffer of 1 KiB.
    pub const RINGBUF: i32 = 3;
    /// Array read-only for programs, 4-byte keys, 16-byte values, one entry.
    pub const RODATA: i32 = 4;
    /// Array, 4-byte keys, 8-byte values, four entries.
    pub const ARRAY4: i32 = 5;
}

/// The maps of every generated environment, by the indices of [`map`]. Arrays and the hash map have
/// one entry and values of a multiple of 8 bytes, so that their storage ends where the value ends and a
/// checked run catches an access one byte past it.
pub fn map_defs() -> Vec<MapDef> {
    let def = |map_type, key_size, value_size, max_entries, flags| MapDef {
        map_type,
        key_size,
        value_size,
        max_entries,
        flags,
    };
    vec![
        def(MapType::Array, 4, 24, 1, 0),
        def(MapType::Hash, 8, 16, 1, 0),
        def(MapType::Array, 4, 512, 1, 0),
        def(MapType::RingBuf, 0, 0, 1024, 0),
        def(MapType::Array, 4, 16, 1, BPF_F_RDONLY_PROG),
        def(MapType::Array, 4, 8, 4, 0),
    ]
}

/// `(key size, value size, writable)` of each map of [`map_defs`] with keys.
fn map_shape(m: i32) -> (i64, i64, bool) {
    match m {
        map::ARRAY => (4, 24, true),
        map::HASH => (8, 16, true),
        map::BIG => (4, 512, true),
        map::RODATA => (4, 16, false),
        _ => (4, 8, true),
    }
}

/// One generated program with what it runs on.
#[derive(Debug, Clone)]
pub struct Case {
    /// The program (entry function first).
    pub program: Program,
    /// The context description the program is verified against.
    pub context: Context,
    /// Map contents before the first run: (map index, key, value).
    pub map_init: Vec<(u32, Vec<u8>, Vec<u8>)>,
    /// Inputs, run one after the other (maps keep their contents between runs).
    pub inputs: Vec<Vec<u8>>,
}

/// What [`check`] found.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The verifier refused the program.
    Rejected(VerifyError),
    /// The verifier accepted the program, and every run (one per input) succeeded and agreed.
    Accepted { runs: usize },
}

/// An instruction whose jump or call target is fixed when the program is laid out.
#[derive(Debug, Clone, Copy)]
enum Item {
    I(Instruction),
    Label(u32),
    Jump { width: Width, cond: Cond, dst: u8, src: Operand, to: u32 },
    Goto { to: u32, long: bool },
    Call { function: usize },
}

fn r(n: u8) -> Reg {
    Reg::new(n).expect("a register")
}

fn i(insn: Instruction) -> Item {
    Item::I(insn)
}

fn alu(width: Width, op: AluOp, dst: u8, src: Operand) -> Item {
    i(Instruction::Alu { width, op, dst: r(dst), src })
}

fn alu64(op: AluOp, dst: u8, imm: i64) -> Item {
    alu(Width::W64, op, dst, Operand::Imm(imm as i32))
}

fn alu64r(op: AluOp, dst: u8, src: u8) -> Item {
    alu(Width::W64, op, dst, Operand::Reg(r(src)))
}

fn mov(dst: u8, src: u8) -> Item {
    alu64r(AluOp::Mov, dst, src)
}

fn movi(dst: u8, imm: i64) -> Item {
    alu64(AluOp::Mov, dst, imm)
}

fn addi(dst: u8, imm: i64) -> Item {
    alu64(AluOp::Add, dst, imm)
}

fn lddw(dst: u8, value: u64) -> Item {
    i(Instruction::LoadImm64 { dst: r(dst), value: Imm64::Const(value) })
}

fn lddw_map(dst: u8, m: i32) -> Item {
    i(Instruction::LoadImm64 { dst: r(dst), value: Imm64::MapFd(m) })
}

fn ld(size: Size, dst: u8, base: u8, off: i64) -> Item {
    i(Instruction::Load { size, dst: r(dst), src: r(base), offset: off as i16 })
}

fn st(size: Size, base: u8, off: i64, src: u8) -> Item {
    i(Instruction::StoreReg { size, dst: r(base), offset: off as i16, src: r(src) })
}

fn sti(size: Size, base: u8, off: i64, imm: i64) -> Item {
    i(Instruction::Store { size, dst: r(base), offset: off as i16, imm: imm as i32 })
}

fn call(id: u32) -> Item {
    i(Instruction::Call { id })
}

fn exit() -> Item {
    i(Instruction::Exit)
}

fn jmp(width: Width, cond: Cond, dst: u8, src: Operand, to: u32) -> Item {
    Item::Jump { width, cond, dst, src, to }
}

fn jmpi(cond: Cond, dst: u8, imm: i64, to: u32) -> Item {
    jmp(Width::W64, cond, dst, Operand::Imm(imm as i32), to)
}

fn jmpr(cond: Cond, dst: u8, src: u8, to: u32) -> Item {
    jmp(Width::W64, cond, dst, Operand::Reg(r(src)), to)
}

fn goto(to: u32) -> Item {
    Item::Goto { to, long: false }
}

fn size_of(bytes: i64) -> Size {
    match bytes {
        1 => Size::B,
        2 => Size::H,
        4 => Size::W,
        _ => Size::DW,
    }
}

/// The context description being generated for.
#[derive(Debug, Clone)]
enum Ctx {
    /// A buffer of `r2` bytes; `min` bytes are proven by the entry guard.
    Buffer,
    /// Exactly `size` bytes, the ranges read-only.
    Fixed { size: i64, ro: Vec<(i64, i64)> },
}

/// A region an access may reach: offsets `lo..hi` from register `base`.
#[derive(Debug, Clone, Copy)]
struct Region {
    base: u8,
    lo: i64,
    hi: i64,
    /// Stack memory: bytes must be written before they are read.
    stack: bool,
    writable: bool,
}

/// What the generator believes a register holds: a number in `lo..=hi` (signed).
#[derive(Debug, Clone, Copy)]
struct Range {
    lo: i64,
    hi: i64,
}

/// Where a snippet is generated: the entry function, or a callee.
#[derive(Debug, Clone, Copy)]
struct Scope {
    /// Nesting of bpf-to-bpf calls (0 = the entry function).
    depth: usize,
    /// r6 holds the input (or context) and r7 its length, as in the entry function.
    input: bool,
}

/// The state of one generation.
struct Gen<'s, 'd> {
    src: &'s mut Source<'d>,
    ctx: Ctx,
    /// Input bytes proven by the entry guard (buffer context).
    min: i64,
    /// Functions; index 0 is the entry.
    funcs: Vec<Vec<Item>>,
    labels: u32,
    /// Input lengths worth running (the constants length guards compare with, and their neighbours).
    lens: Vec<usize>,
    /// Input byte values worth using (constants the program compares with, and their neighbours).
    bytes: Vec<u8>,
    /// Snippets generated so far (bounds the size of programs with calls).
    snippets: usize,
    /// How often (in percent) the generator takes a step the verifier must refuse: an access one byte
    /// past an edge, a missing null check, a read of an unwritten byte... Chosen per program, so that
    /// some programs have none (and test that the verifier accepts what is safe) and others several.
    risk: u8,
}

/// Comparison constants the generator likes: small numbers, powers of two and their neighbours.
const CONSTS: [i64; 22] = [0, 1, 2, 3, 4, 7, 8, 15, 16, 24, 31, 32, 40, 63, 64, 100, 127, 128, 255, 256, 500, 511];

/// One generated case.
pub fn case(src: &mut Source) -> Case {
    let ctx = if src.chance(70) {
        Ctx::Buffer
    } else {
        // A context of no bytes at times: r1 is then 0, as for an empty buffer.
        let size = if src.chance(3) { 0 } else { src.pick(&[8i64, 16, 24, 32, 40, 64, 100, 128]) };
        let mut ro = Vec::new();
        for _ in 0..if size > 0 { src.pick(&[0usize, 0, 1, 1, 2]) } else { 0 } {
            let a = src.range(0, size - 1);
            let b = src.range(a + 1, size.min(a + 24));
            if !ro.iter().any(|&(x, y)| a < y && x < b) {
                ro.push((a, b));
            }
        }
        ro.sort_unstable();
        Ctx::Fixed { size, ro }
    };
    let risk = src.pick(&[0, 0, 3, 6, 10, 20]);
    let mut g = Gen {
        src,
        ctx,
        min: 0,
        funcs: vec![Vec::new()],
        labels: 0,
        lens: Vec::new(),
        bytes: Vec::new(),
        snippets: 0,
        risk,
    };
    let main = g.entry();
    g.funcs[0] = main;
    let program = layout(&g.funcs, Poison::NONE);
    let context = match &g.ctx {
        Ctx::Buffer => Context::Buffer,
        Ctx::Fixed { size, ro } => {
            Context::Fixed { size: *size as u32, read_only: ro.iter().map(|&(a, b)| a as u32..b as u32).collect() }
        }
    };
    let mut map_init = Vec::new();
    for (m, key_size, size) in [(map::ARRAY, 4, 24), (map::HASH, 8, 16), (map::RODATA, 4, 16), (map::ARRAY4, 4, 8)] {
        if m == map::HASH || g.src.chance(60) {
            let value = (0..size).map(|_| g.input_byte()).collect();
            map_init.push((m as u32, vec![0u8; key_size], value));
        }
    }
    g.lens.push(0);
    let runs = 3 + g.src.below(4);
    let inputs = (0..runs)
        .map(|_| {
            let len = match &g.ctx {
                Ctx::Fixed { size, .. } => *size as usize,
                Ctx::Buffer if !g.lens.is_empty() && g.src.chance(65) => g.src.pick(&g.lens),
                Ctx::Buffer => g.src.below(129),
            };
            (0..len).map(|_| g.input_byte()).collect()
        })
        .collect();
    Case { program, context, map_init, inputs }
}

impl Gen<'_, '_> {
    /// Whether to take a step the verifier must refuse (see [`Gen::risk`]).
    fn risky(&mut self) -> bool {
        self.src.chance(self.risk)
    }

    fn label(&mut self) -> u32 {
        self.labels += 1;
        self.labels
    }

    /// A constant the program will compare with; its neighbours become interesting input bytes.
    fn konst(&mut self) -> i64 {
        let k = if self.src.chance(80) { self.src.pick(&CONSTS) } else { self.src.range(0, 600) };
        self.note_value(k);
        k
    }

    /// A constant for a bound, at most `span` most of the time (so that the bounded number fits the
    /// region it will be an offset into).
    fn konst_within(&mut self, span: i64) -> i64 {
        if self.src.chance(20) {
            return self.konst();
        }
        let fits: Vec<i64> = CONSTS.iter().copied().filter(|&k| k <= span).collect();
        let k = if fits.is_empty() { 0 } else { self.src.pick(&fits) };
        self.note_value(k);
        k
    }

    fn note_value(&mut self, k: i64) {
        for v in [k - 1, k, k + 1] {
            self.bytes.push(v as u8);
        }
    }

    fn note_len(&mut self, e: i64) {
        for l in [e - 1, e, e + 1] {
            if (0..=160).contains(&l) {
                self.lens.push(l as usize);
            }
        }
    }

    fn input_byte(&mut self) -> u8 {
        match self.src.below(10) {
            0..=2 => self.src.byte(),
            3 | 4 => self.src.pick(&[0, 0xff]),
            5 => self.src.pick(&[1, 0x7f, 0x80, 0xfe]),
            _ if self.bytes.is_empty() => 0,
            _ => self.src.pick(&self.bytes),
        }
    }

    /// Bytes of the input every path at this point has (the entry guard's, or the fixed size).
    fn avail(&self) -> i64 {
        match &self.ctx {
            Ctx::Buffer => self.min,
            Ctx::Fixed { size, .. } => *size,
        }
    }

    /// The entry function.
    fn entry(&mut self) -> Vec<Item> {
        let mut out = vec![mov(6, 1), mov(7, 2), movi(9, 0)];
        let fail = self.label();
        let mut failed = false;
        if matches!(self.ctx, Ctx::Buffer) && self.src.chance(75) {
            let m = self.src.pick(&[1i64, 2, 4, 8, 8, 8, 16, 16, 24, 32, 40, 64]);
            out.push(jmpi(Cond::Lt, 7, m, fail));
            self.min = m;
            self.note_len(m);
            failed = true;
        }
        let scope = Scope { depth: 0, input: true };
        for _ in 0..1 + self.src.below(4) {
            self.snippet(&mut out, scope);
        }
        out.push(mov(0, 9));
        out.push(exit());
        if failed {
            out.push(Item::Label(fail));
            out.push(movi(0, 1));
            out.push(exit());
        }
        out
    }

    fn snippet(&mut self, out: &mut Vec<Item>, scope: Scope) {
        self.snippets += 1;
        let k = self.src.below(100);
        let buffer = scope.input && matches!(self.ctx, Ctx::Buffer);
        match k {
            0..=25 => self.region_access(out, scope),
            26..=34 => self.probe(out, scope),
            35..=46 => self.loops(out, scope),
            47..=55 => self.spill_fill(out, scope),
            56..=61 => self.helper_misc(out, scope),
            62..=70 if scope.depth < 3 && self.snippets < 12 => self.calls(out, scope),
            71..=77 => self.join(out, scope),
            78..=82 if buffer => self.len_relation(out),
            83..=85 => self.null_probe(out, scope),
            86..=88 if self.risky() => self.misuse(out, scope),
            _ => self.alu_only(out, scope),
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Numbers

    /// An unknown number in `dst` (r0 may be clobbered); returns whether it is known zero-extended.
    fn source(&mut self, out: &mut Vec<Item>, dst: u8, skip: u32, scope: Scope) -> bool {
        match self.src.below(8) {
            0..=3 if scope.input => {
                let bytes = self.src.pick(&[1i64, 2, 4, 8]);
                let off = self.input_offset(out, bytes, skip);
                let sx = bytes < 8 && self.src.chance(20);
                let size = size_of(bytes);
                if sx {
                    out.push(i(Instruction::LoadSx { size, dst: r(dst), src: r(6), offset: off as i16 }));
                } else {
                    out.push(ld(size, dst, 6, off));
                }
                bytes <= 4 && !sx
            }
            4 if scope.input => {
                out.push(mov(dst, 7));
                true
            }
            5 if scope.input => {
                // High half unknown, low half known.
                let off = self.input_offset(out, 8, skip);
                out.push(ld(Size::DW, dst, 6, off));
                out.push(lddw(0, 0xffff_ffff_0000_0000));
                out.push(alu64r(AluOp::And, dst, 0));
                out.push(alu64(AluOp::Or, dst, self.src.range(0, 300)));
                false
            }
            6 => {
                out.push(i(Instruction::LoadImm64 { dst: r(dst), value: Imm64::Const(self.src.u64()) }));
                false
            }
            _ => {
                out.push(mov(dst, 9));
                false
            }
        }
    }

    /// A constant offset at which `bytes` bytes of the input can be loaded, guarding the length when the
    /// entry guard does not prove enough (jumping to `skip` when the input is shorter).
    fn input_offset(&mut self, out: &mut Vec<Item>, bytes: i64, skip: u32) -> i64 {
        let avail = self.avail();
        if avail >= bytes && self.src.chance(85) {
            return self.src.range(0, avail - bytes);
        }
        let off = self.src.range(0, 8);
        let need = off + bytes;
        if let Ctx::Fixed { size, .. } = self.ctx {
            return off.min(size - bytes);
        }
        out.push(jmpi(Cond::Lt, 7, need, skip));
        self.note_len(need);
        off
    }

    /// An interesting immediate operand.
    fn imm(&mut self) -> i64 {
        match self.src.below(6) {
            0 => self.src.pick(&[0i64, 1, -1, 2, 3, 7, 8]),
            1 => self.src.pick(&[31i64, 32, 33, 63, 64, 65, 16, 48, 56]),
            2 => self.src.pick(&[i32::MIN as i64, i32::MAX as i64, -2, -8, 0xff, 0xffff, 0x8000]),
            3 => self.src.range(-300, 300),
            _ => self.src.u32() as i32 as i64,
        }
    }

    /// One ALU operation of any kind on `dst` (r0 may be clobbered); returns whether the result is
    /// known zero-extended from 32 bits.
    fn chain_op(&mut self, out: &mut Vec<Item>, dst: u8, zx: bool) -> bool {
        let width = if self.src.bool() { Width::W32 } else { Width::W64 };
        let w32 = width == Width::W32;
        match self.src.below(10) {
            0..=5 => {
                let op = self.src.pick(&[
                    AluOp::Add,
                    AluOp::Sub,
                    AluOp::Mul,
                    AluOp::Div,
                    AluOp::SDiv,
                    AluOp::Or,
                    AluOp::And,
                    AluOp::Lsh,
                    AluOp::Rsh,
                    AluOp::Mod,
                    AluOp::SMod,
                    AluOp::Xor,
                    AluOp::Arsh,
                ]);
                let (src, nonneg) = if self.src.chance(60) {
                    let k = self.imm();
                    (Operand::Imm(k as i32), k >= 0)
                } else {
                    match self.src.below(3) {
                        0 => {
                            let k = self.imm();
                            out.push(movi(0, k));
                        }
                        1 => out.push(lddw(
                            0,
                            self.src.pick(&[0u64, 1, u64::MAX, 1 << 63, (1 << 63) - 1, 1 << 32, 0xffff_ffff]),
                        )),
                        _ => out.push(mov(0, 9)),
                    }
                    (Operand::Reg(r(0)), false)
                };
                out.push(alu(width, op, dst, src));
                w32 || (zx && matches!(op, AluOp::And | AluOp::Div | AluOp::Mod | AluOp::Rsh) && nonneg)
                    || (op == AluOp::And && nonneg)
            }
            6 => {
                out.push(i(Instruction::Neg { width, dst: r(dst) }));
                w32
            }
            7 => {
                let (width, from) = self.src.pick(&[
                    (Width::W32, SxWidth::B8),
                    (Width::W32, SxWidth::B16),
                    (Width::W64, SxWidth::B8),
                    (Width::W64, SxWidth::B16),
                    (Width::W64, SxWidth::B32),
                ]);
                out.push(i(Instruction::MovSx { width, from, dst: r(dst), src: r(dst) }));
                width == Width::W32
            }
            8 => {
                let order = self.src.pick(&[ByteOrder::Le, ByteOrder::Be, ByteOrder::Swap]);
                let bits = self.src.pick(&[16u8, 32, 64]);
                out.push(i(Instruction::End { order, bits, dst: r(dst) }));
                bits < 64 || (order == ByteOrder::Le && zx)
            }
            _ => {
                out.push(alu(Width::W32, AluOp::Mov, dst, Operand::Reg(r(dst))));
                true
            }
        }
    }

    /// An unknown number in `dst`, bounded to a range the returned [`Range`] says (r0 may be clobbered;
    /// guards jump to `skip`), of at most about `span` values most of the time. Some bounds are not what
    /// they seem (a 32-bit comparison of a 64-bit number, one side of a signed range): the verifier must
    /// then refuse what relies on them.
    fn bounded(&mut self, out: &mut Vec<Item>, dst: u8, skip: u32, scope: Scope, span: i64) -> Range {
        let mut zx = self.source(out, dst, skip, scope);
        for _ in 0..self.src.pick(&[0usize, 0, 1, 1, 2, 3]) {
            zx = self.chain_op(out, dst, zx);
        }
        self.bound(out, dst, skip, zx, span.max(0))
    }

    fn bound(&mut self, out: &mut Vec<Item>, dst: u8, skip: u32, zx: bool, span: i64) -> Range {
        let w = |w32: bool| if w32 { Width::W32 } else { Width::W64 };
        // Bits of the largest mask of low bits that fits the span.
        let bits = (64 - (span as u64 + 1).leading_zeros() - 1).min(12) as usize;
        // A 32-bit comparison bounds the whole number only if it is zero-extended.
        let w32 = |g: &mut Self| if zx { g.src.chance(35) } else { g.risky() };
        match self.src.below(17) {
            0 | 1 => {
                let k = if self.src.bool() { (1i64 << self.src.below(bits + 1)) - 1 } else { self.konst_within(span) };
                out.push(alu64(AluOp::And, dst, k));
                Range { lo: 0, hi: k }
            }
            2 => {
                let k = self.konst_within(span);
                out.push(alu(Width::W32, AluOp::And, dst, Operand::Imm(k as i32)));
                Range { lo: 0, hi: k }
            }
            3 | 4 => {
                let k = if self.risky() { 0 } else { self.konst_within(span + 1).max(1) };
                let w32 = self.src.bool();
                out.push(alu(w(w32), AluOp::Mod, dst, Operand::Imm(k as i32)));
                Range { lo: 0, hi: (k - 1).max(0) }
            }
            5 => {
                // (A shift by the width itself would shift by 0.)
                let b = self.src.range(1, bits.max(1) as i64);
                if self.src.bool() {
                    out.push(alu64(AluOp::Rsh, dst, 64 - b));
                } else {
                    out.push(alu(Width::W32, AluOp::Rsh, dst, Operand::Imm(32 - b as i32)));
                }
                Range { lo: 0, hi: (1 << b) - 1 }
            }
            6 | 7 => {
                // Unsigned upper bound.
                let k = self.konst_within(span);
                let w32 = w32(self);
                let strict = self.src.bool() && k > 0;
                let cond = if strict { Cond::Ge } else { Cond::Gt };
                let hi = if strict { k - 1 } else { k };
                if self.src.chance(30) {
                    // Refined on the taken branch.
                    let body = self.label();
                    let inv = if strict { Cond::Lt } else { Cond::Le };
                    out.push(jmp(w(w32), inv, dst, Operand::Imm(k as i32), body));
                    out.push(goto(skip));
                    out.push(Item::Label(body));
                } else {
                    out.push(jmp(w(w32), cond, dst, Operand::Imm(k as i32), skip));
                }
                Range { lo: 0, hi }
            }
            8 => {
                // Signed range, both sides (one only, at times).
                let k = self.konst_within(span / 2);
                let lo = self.src.pick(&[0i64, 0, 0, -1, -8, -k]);
                let w32 = w32(self) && (lo >= 0 || self.risky());
                out.push(jmp(w(w32), Cond::Sgt, dst, Operand::Imm(k as i32), skip));
                if !self.risky() {
                    out.push(jmp(w(w32), Cond::Slt, dst, Operand::Imm(lo as i32), skip));
                }
                Range { lo, hi: k }
            }
            9 => {
                let b = self.src.below(bits + 1) as u32;
                let mask = (1i64 << b) - 1;
                out.push(jmp(w(w32(self)), Cond::Set, dst, Operand::Imm(!mask as i32), skip));
                self.note_value(mask);
                Range { lo: 0, hi: mask }
            }
            10 => {
                let k = self.konst_within(span);
                out.push(movi(0, k));
                if self.src.bool() {
                    out.push(jmpr(Cond::Gt, dst, 0, skip));
                } else {
                    out.push(jmpr(Cond::Lt, 0, dst, skip));
                }
                Range { lo: 0, hi: k }
            }
            11 => {
                let a = self.konst();
                let b = self.konst_within(a + span);
                let (lo, hi) = (a.min(b), a.max(b));
                out.push(jmpi(Cond::Lt, dst, lo, skip));
                out.push(jmpi(Cond::Gt, dst, hi, skip));
                Range { lo, hi }
            }
            12 => {
                let small = span < 255 && !self.risky();
                match self.src.below(4) {
                    _ if small => {
                        out.push(alu64(AluOp::And, dst, span.max(0)));
                        Range { lo: 0, hi: span.max(0) }
                    }
                    0 => {
                        out.push(i(Instruction::MovSx {
                            width: Width::W64,
                            from: SxWidth::B8,
                            dst: r(dst),
                            src: r(dst),
                        }));
                        Range { lo: -128, hi: 127 }
                    }
                    1 => {
                        out.push(i(Instruction::MovSx {
                            width: Width::W64,
                            from: SxWidth::B8,
                            dst: r(dst),
                            src: r(dst),
                        }));
                        out.push(addi(dst, 128));
                        Range { lo: 0, hi: 255 }
                    }
                    2 => {
                        out.push(i(Instruction::MovSx {
                            width: Width::W32,
                            from: SxWidth::B8,
                            dst: r(dst),
                            src: r(dst),
                        }));
                        out.push(alu(Width::W32, AluOp::Add, dst, Operand::Imm(128)));
                        Range { lo: 0, hi: 255 }
                    }
                    _ if self.risky() => {
                        // A 32-bit sign extension is zero-extended to 64 bits: not small.
                        out.push(i(Instruction::MovSx {
                            width: Width::W32,
                            from: SxWidth::B8,
                            dst: r(dst),
                            src: r(dst),
                        }));
                        out.push(addi(dst, 128));
                        Range { lo: 0, hi: 255 }
                    }
                    _ => {
                        out.push(i(Instruction::MovSx {
                            width: Width::W64,
                            from: SxWidth::B16,
                            dst: r(dst),
                            src: r(dst),
                        }));
                        out.push(alu64(AluOp::Arsh, dst, 8));
                        Range { lo: -128, hi: 127 }
                    }
                }
            }
            13 => {
                let s = self.src.below(4).min(bits) as i64;
                let k = self.src.below(bits - s as usize + 1) as u32;
                out.push(alu64(AluOp::And, dst, (1 << k) - 1));
                if self.src.bool() {
                    out.push(alu64(AluOp::Lsh, dst, s));
                } else {
                    out.push(alu64(AluOp::Mul, dst, 1 << s));
                }
                Range { lo: 0, hi: ((1 << k) - 1) << s }
            }
            14 => {
                let k = self.konst_within(span);
                if self.src.bool() {
                    out.push(jmpi(Cond::Ne, dst, k, skip));
                } else {
                    let body = self.label();
                    out.push(jmpi(Cond::Eq, dst, k, body));
                    out.push(goto(skip));
                    out.push(Item::Label(body));
                }
                Range { lo: k, hi: k }
            }
            15 => {
                // Division and modulo by a divisor that may be zero.
                let k = (1i64 << bits) - 1;
                out.push(alu64(AluOp::And, dst, k));
                out.push(mov(0, 9));
                out.push(alu64(AluOp::And, 0, self.src.pick(&[1i64, 3, 15, 255])));
                let op = self.src.pick(&[AluOp::Div, AluOp::Mod, AluOp::SDiv, AluOp::SMod]);
                out.push(alu(w(self.src.bool()), op, dst, Operand::Reg(r(0))));
                Range { lo: 0, hi: k }
            }
            _ => {
                // Signed division by -1 of the most negative number, then bounded by a shift.
                out.push(lddw(0, if self.src.bool() { 1 << 63 } else { 0x8000_0000 }));
                out.push(alu64r(AluOp::Or, dst, 0));
                let w32 = self.src.bool();
                out.push(alu(w(w32), self.src.pick(&[AluOp::SDiv, AluOp::SMod]), dst, Operand::Imm(-1)));
                let b = self.src.range(1, bits.max(1) as i64);
                out.push(alu64(AluOp::Rsh, dst, 64 - b));
                Range { lo: 0, hi: (1 << b) - 1 }
            }
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Regions and accesses

    /// Initialises stack bytes `lo..hi` (relative to r10) with 8-byte stores of aligned slots (so bytes
    /// around the range may be written too); one slot may be left out.
    fn init_stack(&mut self, out: &mut Vec<Item>, lo: i64, hi: i64) {
        let lo = lo.clamp(-512, 0);
        let hi = hi.clamp(-512, 0);
        if lo >= hi {
            return;
        }
        let first = lo.div_euclid(8) * 8;
        let slots: Vec<i64> = (first..hi).step_by(8).collect();
        let gap = if self.risky() { Some(self.src.pick(&slots)) } else { None };
        let narrow = self.src.chance(15);
        for s in slots {
            if Some(s) == gap {
                continue;
            }
            if narrow && s == first {
                // The first slot byte by byte and in halves.
                out.push(sti(Size::W, 10, s, self.src.range(0, 255)));
                out.push(sti(Size::H, 10, s + 4, self.src.range(0, 255)));
                out.push(sti(Size::B, 10, s + 6, 7));
                if !self.risky() {
                    out.push(sti(Size::B, 10, s + 7, 9));
                }
            } else if self.src.chance(50) {
                out.push(st(Size::DW, 10, s, 9));
            } else {
                out.push(sti(Size::DW, 10, s, self.src.range(-5, 300)));
            }
        }
    }

    /// Chooses a constant offset for an access of `size` bytes at `reg + x + c` where `x` lies in `x`,
    /// inside `region`: exactly at its upper or lower edge, inside, or one byte beyond an edge.
    fn edge(&mut self, region: &Region, x: Range, size: i64) -> i64 {
        let top = region.hi - size - x.hi; // highest c that fits
        let bottom = region.lo - x.lo; // lowest c that fits
        if self.risky() {
            return match self.src.below(4) {
                0 | 1 => top + 1,
                2 => bottom - 1,
                _ => top + self.src.pick(&[2, 4, 8]),
            };
        }
        match self.src.below(20) {
            0..=10 => top,
            11..=14 => bottom,
            _ if bottom <= top => self.src.range(bottom, top),
            _ => top,
        }
    }

    /// One access of `region`, at a constant offset or at a bounded variable one; loads go into r9.
    fn access(&mut self, out: &mut Vec<Item>, region: &Region, skip: u32, scope: Scope) {
        let size = self.src.pick(&[1i64, 2, 4, 8]);
        let var = self.src.chance(60);
        let span = region.hi - region.lo - size;
        let x = if var { self.bounded(out, 4, skip, scope, span) } else { Range { lo: 0, hi: 0 } };
        let c = self.edge(region, x, size);
        let write = if region.writable { self.src.chance(40) } else { self.risky() };
        let atomic = write && (size == 4 || size == 8) && self.src.chance(25);
        if region.stack && (!write || atomic) {
            self.init_stack(out, region.lo.max(c + x.lo), c + x.hi + size);
        }
        // The address: the base, plus x, plus c (folded in one of several ways).
        let (ptr, off) = if !var {
            (region.base, c)
        } else {
            match self.src.below(3) {
                0 => {
                    out.push(mov(3, region.base));
                    out.push(alu64r(AluOp::Add, 3, 4));
                    (3, c)
                }
                1 => {
                    out.push(mov(3, region.base));
                    out.push(addi(3, c));
                    out.push(alu64r(AluOp::Add, 3, 4));
                    (3, 0)
                }
                _ => {
                    out.push(addi(4, c));
                    out.push(mov(3, region.base));
                    out.push(alu64r(AluOp::Add, 3, 4));
                    (3, 0)
                }
            }
        };
        if off < i16::MIN as i64 || off > i16::MAX as i64 {
            return;
        }
        let sz = size_of(size);
        if atomic {
            let width = if size == 8 { Width::W64 } else { Width::W32 };
            let fetch = self.src.bool();
            let op = self.src.pick(&[
                AtomicOp::Add { fetch },
                AtomicOp::Or { fetch },
                AtomicOp::And { fetch },
                AtomicOp::Xor { fetch },
                AtomicOp::Xchg,
                AtomicOp::CmpXchg,
            ]);
            out.push(mov(5, 9));
            if op == AtomicOp::CmpXchg {
                out.push(mov(0, 9));
            }
            out.push(i(Instruction::Atomic { width, op, dst: r(ptr), offset: off as i16, src: r(5) }));
            out.push(alu64r(AluOp::Add, 9, 5));
        } else if write {
            match self.src.below(3) {
                0 => out.push(sti(sz, ptr, off, self.imm())),
                1 if var => out.push(st(sz, ptr, off, 4)),
                _ => out.push(st(sz, ptr, off, 9)),
            }
        } else {
            if size < 8 && self.src.chance(15) {
                out.push(i(Instruction::LoadSx { size: sz, dst: r(5), src: r(ptr), offset: off as i16 }));
            } else {
                out.push(ld(sz, 5, ptr, off));
            }
            let op = self.src.pick(&[AluOp::Add, AluOp::Xor, AluOp::Sub]);
            out.push(alu64r(op, 9, 5));
        }
    }

    /// A region the snippet can access, set up by code that jumps to `skip` when it is not there (a map
    /// lookup that found nothing, a short input); returns it and what must release it.
    fn region(&mut self, out: &mut Vec<Item>, skip: u32, scope: Scope) -> (Region, Option<u8>) {
        let stack = Region { base: 10, lo: -512, hi: 0, stack: true, writable: true };
        let kind = self.src.below(10);
        match kind {
            0..=2 if scope.input => (self.input_region(out, skip), None),
            3 | 4 => {
                let m = self.src.pick(&[map::ARRAY, map::ARRAY, map::HASH, map::BIG, map::RODATA, map::ARRAY4]);
                self.lookup(out, m, skip);
                out.push(mov(8, 0));
                let (_, value, writable) = map_shape(m);
                (Region { base: 8, lo: 0, hi: value, stack: false, writable }, None)
            }
            5 => {
                let size = self.src.pick(&[1i64, 4, 8, 12, 16, 24, 63, 64, 100, 255, 500]);
                self.reserve(out, size, skip);
                (Region { base: 8, lo: 0, hi: size, stack: false, writable: true }, Some(8))
            }
            _ => (stack, None),
        }
    }

    /// The input (or the fixed context) as a region based at r6, with a length guard for buffers.
    fn input_region(&mut self, out: &mut Vec<Item>, skip: u32) -> Region {
        if let Ctx::Fixed { size, ro } = self.ctx.clone() {
            // Writes may go to a writable gap between read-only ranges, with edges at its ends.
            let mut region = Region { base: 6, lo: 0, hi: size, stack: false, writable: ro.is_empty() };
            if !ro.is_empty() && self.src.bool() {
                let mut gaps = Vec::new();
                let mut at = 0;
                for &(a, b) in &ro {
                    if a > at {
                        gaps.push((at, a));
                    }
                    at = b;
                }
                if at < size {
                    gaps.push((at, size));
                }
                if !gaps.is_empty() {
                    let (a, b) = self.src.pick(&gaps);
                    region = Region { base: 6, lo: a, hi: b, stack: false, writable: true };
                }
            }
            return region;
        }
        let e = if self.src.chance(30) {
            self.min
        } else {
            self.src.pick(&[1i64, 2, 4, 8, 9, 16, 24, 32, 33, 64, 100, 128])
        };
        let proven = match self.src.below(6) {
            0..=2 => {
                if e > self.min || self.src.bool() {
                    out.push(jmpi(Cond::Lt, 7, e, skip));
                }
                e.max(self.min)
            }
            _ => {
                // End pointer against r6 + e, in any of the four orders.
                out.push(mov(0, 6));
                out.push(alu64r(AluOp::Add, 0, 7));
                out.push(mov(3, 6));
                out.push(addi(3, e));
                let (cond, a, b, strict) = self.src.pick(&[
                    (Cond::Gt, 3, 0, false),
                    (Cond::Ge, 3, 0, true),
                    (Cond::Lt, 0, 3, false),
                    (Cond::Le, 0, 3, true),
                ]);
                out.push(jmpr(cond, a, b, skip));
                self.note_len(e + 1);
                (if strict { e + 1 } else { e }).max(self.min)
            }
        };
        self.note_len(e);
        Region { base: 6, lo: 0, hi: proven, stack: false, writable: true }
    }

    /// A key for map `m` on the stack, and `r2` pointing to it (near the top of the frame at times).
    fn key(&mut self, out: &mut Vec<Item>, m: i32) {
        let (key, _, _) = map_shape(m);
        let at = if self.risky() {
            -key + 4
        } else if self.src.chance(30) {
            -key
        } else {
            -8 * self.src.range(1, 60)
        };
        let k = match self.src.below(10) {
            0 => 1,
            1 => 3,
            _ => 0,
        };
        if !self.risky() {
            if key == 8 {
                out.push(sti(Size::DW, 10, at, k));
            } else {
                out.push(sti(Size::W, 10, at, k));
            }
        }
        if m == map::ARRAY4 && self.src.chance(30) {
            // A key read from the accumulator, so possibly out of range.
            out.push(mov(0, 9));
            out.push(alu64(AluOp::And, 0, 7));
            out.push(st(Size::W, 10, at, 0));
        }
        out.push(mov(2, 10));
        out.push(addi(2, at));
    }

    /// A lookup in map `m`; on the path that continues r0 holds the value's address (or, at times, is
    /// not checked for null).
    fn lookup(&mut self, out: &mut Vec<Item>, m: i32, skip: u32) {
        self.key(out, m);
        out.push(lddw_map(1, m));
        out.push(call(std_helpers::MAP_LOOKUP_ELEM));
        self.null_check(out, skip);
    }

    /// Leaves r0 (a map value or a record, or null) non-null on the path that continues.
    fn null_check(&mut self, out: &mut Vec<Item>, skip: u32) {
        if self.risky() {
            if self.src.bool() {
                // Arithmetic before the check.
                out.push(addi(0, 0));
                out.push(jmpi(Cond::Eq, 0, 0, skip));
            }
            return;
        }
        match self.src.below(10) {
            0..=4 => out.push(jmpi(Cond::Eq, 0, 0, skip)),
            5..=7 => {
                let body = self.label();
                out.push(jmpi(Cond::Ne, 0, 0, body));
                out.push(goto(skip));
                out.push(Item::Label(body));
            }
            _ => {
                // Checked through a copy.
                out.push(mov(5, 0));
                out.push(jmpi(Cond::Eq, 5, 0, skip));
            }
        }
    }

    /// A ring-buffer record of `size` bytes in r8 on the path that continues.
    fn reserve(&mut self, out: &mut Vec<Item>, size: i64, skip: u32) {
        out.push(lddw_map(1, map::RINGBUF));
        out.push(movi(2, size));
        out.push(movi(3, 0));
        out.push(call(std_helpers::RINGBUF_RESERVE));
        self.null_check(out, skip);
        out.push(mov(8, 0));
    }

    /// Submits or discards the record in `reg` (on one or two paths, or, at times, not at all).
    fn release(&mut self, out: &mut Vec<Item>, reg: u8) {
        let which =
            |s: &mut Self| if s.src.bool() { std_helpers::RINGBUF_SUBMIT } else { std_helpers::RINGBUF_DISCARD };
        let risky = self.risky();
        match self.src.below(20) {
            _ if !risky && self.src.chance(75) => {
                out.push(mov(1, reg));
                out.push(movi(2, 0));
                out.push(call(which(self)));
            }
            _ if !risky => {
                let other = self.label();
                let done = self.label();
                out.push(jmpi(Cond::Set, 9, 1, other));
                out.push(mov(1, reg));
                out.push(movi(2, 0));
                out.push(call(std_helpers::RINGBUF_SUBMIT));
                out.push(goto(done));
                out.push(Item::Label(other));
                out.push(mov(1, reg));
                out.push(movi(2, 0));
                out.push(call(std_helpers::RINGBUF_DISCARD));
                out.push(Item::Label(done));
            }
            0..=9 => {
                // Released on one path only.
                let done = self.label();
                out.push(jmpi(Cond::Set, 9, 1, done));
                out.push(mov(1, reg));
                out.push(movi(2, 0));
                out.push(call(which(self)));
                out.push(Item::Label(done));
            }
            _ => {
                // Released, then used.
                out.push(mov(1, reg));
                out.push(movi(2, 0));
                out.push(call(which(self)));
                out.push(ld(Size::B, 0, reg, 0));
                out.push(alu64r(AluOp::Add, 9, 0));
            }
        }
    }

    fn region_access(&mut self, out: &mut Vec<Item>, scope: Scope) {
        let skip = self.label();
        let (region, release) = self.region(out, skip, scope);
        for _ in 0..1 + self.src.below(3) {
            self.access(out, &region, skip, scope);
        }
        if let Some(reg) = release {
            self.release(out, reg);
        }
        out.push(Item::Label(skip));
    }

    // ---------------------------------------------------------------------------------------------
    // Branches

    /// A bounded number compared with constants at its bounds: a branch the generator knows dead (or, at
    /// times, one that may run) leads to an access that is out of bounds whatever the state. The verifier
    /// accepts the program only if it proves the branch dead; if it is wrong, a checked run hits the trap.
    fn probe(&mut self, out: &mut Vec<Item>, scope: Scope) {
        let skip = self.label();
        let x = if scope.input && matches!(self.ctx, Ctx::Buffer) && self.src.chance(15) {
            // The length, after the entry guard.
            out.push(mov(4, 7));
            Range { lo: self.min, hi: u32::MAX as i64 }
        } else {
            let span = self.src.pick(&[7, 63, 255, 511, 65535]);
            self.bounded(out, 4, skip, scope, span)
        };
        let (lo, hi) = (x.lo, x.hi);
        for _ in 0..1 + self.src.below(3) {
            let (cond, k) = if self.risky() {
                let cond = self.src.pick(&[
                    Cond::Eq,
                    Cond::Ne,
                    Cond::Gt,
                    Cond::Ge,
                    Cond::Lt,
                    Cond::Le,
                    Cond::Sgt,
                    Cond::Sge,
                    Cond::Slt,
                    Cond::Sle,
                    Cond::Set,
                ]);
                (cond, self.src.pick(&[lo - 1, lo, lo + 1, hi - 1, hi, hi + 1, 0, -1]))
            } else {
                // Conditions that never hold for a number in lo..=hi.
                let mut dead = vec![(Cond::Slt, lo), (Cond::Sle, lo - 1)];
                if hi <= i32::MAX as i64 {
                    dead.extend([(Cond::Sgt, hi), (Cond::Sge, hi + 1), (Cond::Eq, hi + 1)]);
                    if lo >= 0 {
                        let mask = (hi as u64 + 1).next_power_of_two() as i64 - 1;
                        dead.extend([(Cond::Gt, hi), (Cond::Ge, hi + 1), (Cond::Set, !mask)]);
                    }
                }
                if lo >= 0 {
                    dead.push((Cond::Lt, lo));
                }
                if lo >= 1 {
                    dead.extend([(Cond::Le, lo - 1), (Cond::Eq, lo - 1)]);
                }
                self.src.pick(&dead)
            };
            self.note_value(k);
            let small = lo >= i32::MIN as i64 && hi <= i32::MAX as i64;
            let width = if small && self.src.chance(30) { Width::W32 } else { Width::W64 };
            let src = if self.src.chance(20) {
                out.push(movi(5, k));
                Operand::Reg(r(5))
            } else {
                Operand::Imm(k as i32)
            };
            let negated = match cond {
                Cond::Gt => Some(Cond::Le),
                Cond::Ge => Some(Cond::Lt),
                Cond::Lt => Some(Cond::Ge),
                Cond::Le => Some(Cond::Gt),
                Cond::Eq => Some(Cond::Ne),
                Cond::Ne => Some(Cond::Eq),
                Cond::Sgt => Some(Cond::Sle),
                Cond::Sge => Some(Cond::Slt),
                Cond::Slt => Some(Cond::Sge),
                Cond::Sle => Some(Cond::Sgt),
                Cond::Set => None,
            };
            let next = self.label();
            match negated {
                Some(neg) if self.src.bool() => {
                    // The trap on the path that does not jump.
                    out.push(jmp(width, neg, 4, src, next));
                    self.trap(out);
                }
                _ => {
                    let trap = self.label();
                    out.push(jmp(width, cond, 4, src, trap));
                    out.push(goto(next));
                    out.push(Item::Label(trap));
                    self.trap(out);
                }
            }
            out.push(Item::Label(next));
        }
        out.push(Item::Label(skip));
    }

    /// An access out of every region whatever the frame (the stack of all frames is 4 KiB).
    fn trap(&mut self, out: &mut Vec<Item>) {
        out.push(ld(Size::B, 0, 10, 8192));
        out.push(alu64r(AluOp::Add, 9, 0));
    }

    /// Two paths that differ in one fact, joined, then an access that depends on it.
    fn join(&mut self, out: &mut Vec<Item>, scope: Scope) {
        if scope.input && matches!(self.ctx, Ctx::Buffer) && self.src.chance(20) {
            return self.identity_join(out);
        }
        let skip = self.label();
        let other = self.label();
        let joined = self.label();
        let x = self.bounded(out, 5, skip, scope, 512);
        let k = self.src.range(x.lo, x.hi.max(x.lo));
        out.push(jmpi(self.src.pick(&[Cond::Gt, Cond::Le, Cond::Sgt, Cond::Eq, Cond::Set]), 5, k, other));
        match self.src.below(4) {
            0 => {
                // A number from two constants, used as a stack offset.
                let a = self.src.range(0, 64);
                let b = self.src.range(0, 64);
                out.push(movi(4, a));
                out.push(goto(joined));
                out.push(Item::Label(other));
                out.push(movi(4, b));
                out.push(Item::Label(joined));
                let region = Region { base: 10, lo: -512, hi: 0, stack: true, writable: true };
                let range = Range { lo: a.min(b), hi: a.max(b) };
                let size = self.src.pick(&[1i64, 2, 4, 8]);
                let c = self.edge(&region, range, size);
                self.init_stack(out, c + range.lo, c + range.hi + size);
                out.push(mov(3, 10));
                out.push(alu64r(AluOp::Add, 3, 4));
                out.push(ld(size_of(size), 0, 3, c));
                out.push(alu64r(AluOp::Add, 9, 0));
            }
            1 => {
                // Stack pointers with two offsets.
                let a = -8 * self.src.range(1, 8);
                let b = -8 * self.src.range(1, 8);
                out.push(mov(4, 10));
                out.push(addi(4, a));
                out.push(goto(joined));
                out.push(Item::Label(other));
                out.push(mov(4, 10));
                out.push(addi(4, b));
                if self.risky() {
                    out.push(movi(4, 0));
                }
                out.push(Item::Label(joined));
                self.init_stack(out, -64, 0);
                let size = self.src.pick(&[1i64, 2, 4, 8]);
                let top = -a.max(b) - size;
                let c = self.src.pick(&[top, top, top + 1, 0]);
                out.push(ld(size_of(size), 0, 4, c));
                out.push(alu64r(AluOp::Add, 9, 0));
            }
            2 => {
                // A stack slot written on both paths, or on one, or in part.
                let slot = -8 * self.src.range(1, 64);
                out.push(sti(Size::DW, 10, slot, 1));
                out.push(goto(joined));
                out.push(Item::Label(other));
                match self.src.below(4) {
                    0 => out.push(sti(Size::W, 10, slot, 2)),
                    1 => {}
                    _ => out.push(st(Size::DW, 10, slot, 9)),
                }
                out.push(Item::Label(joined));
                out.push(ld(Size::DW, 0, 10, slot));
                out.push(alu64r(AluOp::Add, 9, 0));
            }
            _ if scope.input && matches!(self.ctx, Ctx::Buffer) => {
                // Two length guards: the input holds the smaller number of bytes.
                let a = self.src.pick(&[1i64, 4, 8, 16, 17, 32]);
                let b = self.src.pick(&[1i64, 4, 8, 16, 17, 32]);
                out.push(jmpi(Cond::Lt, 7, a, skip));
                out.push(goto(joined));
                out.push(Item::Label(other));
                out.push(jmpi(Cond::Lt, 7, b, skip));
                out.push(Item::Label(joined));
                self.note_len(a);
                self.note_len(b);
                let region = Region { base: 6, lo: 0, hi: a.min(b).max(self.min), stack: false, writable: true };
                self.access(out, &region, skip, scope);
            }
            _ => {
                out.push(movi(4, 1));
                out.push(goto(joined));
                out.push(Item::Label(other));
                out.push(movi(4, 2));
                out.push(Item::Label(joined));
                out.push(alu64r(AluOp::Add, 9, 4));
            }
        }
        out.push(Item::Label(skip));
    }

    /// Two paths that leave the same state but for one fact: on one, r8 is a copy of r4 (a pointer into
    /// the input at a variable offset), on the other a pointer computed apart with the same range. A
    /// bounds proof for r4 then says nothing about r8 on the second path.
    fn identity_join(&mut self, out: &mut Vec<Item>) {
        let (skip, other, joined) = (self.label(), self.label(), self.label());
        let off = self.input_offset(out, 3, skip);
        let mask = self.src.pick(&[3i64, 15, 63]);
        out.push(ld(Size::B, 2, 6, off));
        out.push(alu64(AluOp::And, 2, mask));
        out.push(ld(Size::B, 3, 6, off + 1));
        out.push(alu64(AluOp::And, 3, mask));
        out.push(ld(Size::B, 5, 6, off + 2));
        out.push(jmpi(Cond::Set, 5, 1, other));
        let shared = |out: &mut Vec<Item>| {
            out.push(mov(4, 6));
            out.push(alu64r(AluOp::Add, 4, 2));
            out.push(mov(8, 4));
            out.push(movi(5, 0));
        };
        let apart = |out: &mut Vec<Item>| {
            out.push(mov(4, 6));
            out.push(alu64r(AluOp::Add, 4, 2));
            out.push(mov(8, 6));
            out.push(alu64r(AluOp::Add, 8, 3));
            out.push(movi(5, 0));
        };
        let first_shared = self.src.bool();
        if first_shared {
            shared(out)
        } else {
            apart(out)
        }
        out.push(goto(joined));
        out.push(Item::Label(other));
        if first_shared {
            apart(out)
        } else {
            shared(out)
        }
        out.push(Item::Label(joined));
        let size = self.src.pick(&[1i64, 2, 4, 8]);
        out.push(mov(5, 4));
        out.push(addi(5, size));
        out.push(mov(0, 6));
        out.push(alu64r(AluOp::Add, 0, 7));
        out.push(jmpr(Cond::Gt, 5, 0, skip));
        let base = if self.src.chance(30) { 4 } else { 8 };
        out.push(ld(size_of(size), 0, base, 0));
        out.push(alu64r(AluOp::Add, 9, 0));
        out.push(Item::Label(skip));
    }

    /// A number from the input compared with the input's length, directly or through a copy moved by
    /// constants in 32 or 64 bits, moved again, and used as an offset into the input: the relation
    /// between a number and the length may survive only arithmetic that cannot wrap.
    fn len_relation(&mut self, out: &mut Vec<Item>) {
        let skip = self.label();
        let bytes = self.src.pick(&[1i64, 2, 4, 4]);
        let off = self.input_offset(out, bytes, skip);
        out.push(ld(size_of(bytes), 4, 6, off));
        let width = |g: &mut Self| if g.src.chance(40) { Width::W32 } else { Width::W64 };
        let cmp = if self.src.bool() {
            out.push(mov(3, 4));
            3
        } else {
            4
        };
        let consts = [1i64, -1, 2, -2, 3, 7, -256, 255, -4096, i32::MAX as i64, i32::MIN as i64];
        for _ in 0..self.src.below(3) {
            let c = self.src.pick(&consts);
            let op = self.src.pick(&[AluOp::Add, AluOp::Sub]);
            out.push(alu(width(self), op, cmp, Operand::Imm(c as i32)));
        }
        let (cond, a, b) =
            self.src.pick(&[(Cond::Ge, cmp, 7), (Cond::Gt, cmp, 7), (Cond::Le, 7, cmp), (Cond::Lt, 7, cmp)]);
        let w = if self.risky() { Width::W32 } else { Width::W64 };
        out.push(jmp(w, cond, a, Operand::Reg(r(b)), skip));
        match self.src.below(4) {
            0 => {}
            1 => {
                let c = self.src.pick(&consts);
                let op = self.src.pick(&[AluOp::Add, AluOp::Sub]);
                out.push(alu(width(self), op, 4, Operand::Imm(c as i32)));
            }
            2 => {
                // Back down from the top of the 32-bit range.
                let d = self.src.pick(&[0xe000_0000u64, 0xffff_0000, 0xffff_ff00, 0x8000_0000, 0x100]);
                out.push(lddw(3, d));
                out.push(jmpr(Cond::Lt, 4, 3, skip));
                out.push(alu64r(AluOp::Sub, 4, 3));
            }
            _ => out.push(alu64(AluOp::And, 4, self.src.pick(&[0xffi64, 0xffff, 0x7fff_ffff]))),
        }
        let size = self.src.pick(&[1i64, 1, 2, 4]);
        out.push(mov(5, 6));
        out.push(alu64r(AluOp::Add, 5, 4));
        let at = if self.risky() { self.src.pick(&[-1, 1, size]) } else { 0 };
        out.push(ld(size_of(size), 0, 5, at));
        out.push(alu64r(AluOp::Add, 9, 0));
        out.push(Item::Label(skip));
    }

    /// A pointer that is never null (the input, the frame, a checked map value) compared with 0: the
    /// branch where it is null leads to an access out of every region.
    fn null_probe(&mut self, out: &mut Vec<Item>, scope: Scope) {
        let skip = self.label();
        let reg = match self.src.below(4) {
            0 | 1 if scope.input => 6,
            2 => {
                let m = self.src.pick(&[map::ARRAY, map::HASH]);
                self.lookup(out, m, skip);
                out.push(mov(8, 0));
                8
            }
            _ => 10,
        };
        let src = if self.src.chance(25) {
            out.push(movi(5, 0));
            Operand::Reg(r(5))
        } else {
            Operand::Imm(0)
        };
        let next = self.label();
        if self.src.bool() {
            let trap = self.label();
            out.push(jmp(Width::W64, Cond::Eq, reg, src, trap));
            out.push(goto(next));
            out.push(Item::Label(trap));
            self.trap(out);
        } else {
            out.push(jmp(Width::W64, Cond::Ne, reg, src, next));
            self.trap(out);
        }
        out.push(Item::Label(next));
        out.push(Item::Label(skip));
    }

    // ---------------------------------------------------------------------------------------------
    // Loops

    fn loops(&mut self, out: &mut Vec<Item>, scope: Scope) {
        match self.src.below(10) {
            0..=4 => self.stack_loop(out, scope),
            5 | 6 if scope.input => self.input_loop(out),
            7 => self.nested_loop(out),
            _ => self.two_variable_loop(out),
        }
    }

    /// A loop bound: small most of the time, up to a few thousand at times.
    fn trips(&mut self) -> i64 {
        match self.src.below(20) {
            0 => self.src.pick(&[500i64, 1000, 4000]),
            1..=3 => self.src.pick(&[16i64, 32, 63, 64]),
            _ => self.src.range(1, 12),
        }
    }

    /// The back edge to `head`: `ja` or, at times, `gotol`.
    fn back(&mut self, out: &mut Vec<Item>, head: u32) {
        out.push(Item::Goto { to: head, long: self.src.chance(25) });
    }

    /// Elements of a stack array, written or read at `r2 * es` from its start: counts up or down, the
    /// bound a constant, a register, or a number from the data.
    fn stack_loop(&mut self, out: &mut Vec<Item>, scope: Scope) {
        let es = self.src.pick(&[1i64, 2, 4, 8, 8]);
        let skip = self.label();
        let n = if self.src.chance(20) {
            let x = self.bounded(out, 5, skip, scope, 512 / es);
            if x.lo < 0 || x.hi > 512 {
                out.push(alu64(AluOp::And, 5, 63));
                64
            } else {
                x.hi + 1
            }
        } else {
            let n = (self.trips()).min(512 / es);
            out.push(movi(5, n));
            n
        };
        let len = n * es + if self.risky() { -es } else { self.src.pick(&[0i64, 0, 0, es]) };
        let start = match self.src.below(4) {
            0 => -512,
            1 | 2 => -len,
            _ => -len - 8 * self.src.range(0, 8),
        };
        let write = self.src.bool();
        if !write {
            self.init_stack(out, start, start + len);
        }
        let head = self.label();
        let end = self.label();
        let step = if self.src.chance(85) { 1 } else { 2 };
        let shift = es.trailing_zeros() as i64;
        let index = |out: &mut Vec<Item>| {
            out.push(mov(3, 2));
            if shift > 0 {
                out.push(alu64(AluOp::Lsh, 3, shift));
            }
            out.push(mov(4, 10));
            out.push(alu64r(AluOp::Add, 4, 3));
        };
        let body = |s: &mut Self, out: &mut Vec<Item>| {
            if write {
                out.push(st(size_of(es), 4, start, 2));
            } else {
                out.push(ld(size_of(es), 0, 4, start));
                out.push(alu64r(AluOp::Add, 9, 0));
            }
            let _ = s;
        };
        match self.src.below(4) {
            0 | 1 => {
                // for (i = 0; i < n; i += step)
                out.push(movi(2, 0));
                out.push(Item::Label(head));
                match self.src.below(5) {
                    0 => out.push(jmpi(Cond::Ge, 2, n, end)),
                    1 => out.push(jmpi(Cond::Gt, 2, n - 1, end)),
                    2 => out.push(jmpr(Cond::Ge, 2, 5, end)),
                    3 => out.push(jmp(Width::W32, Cond::Ge, 2, Operand::Imm(n as i32), end)),
                    _ => out.push(jmpi(Cond::Sge, 2, n, end)),
                }
                index(out);
                body(self, out);
                out.push(addi(2, step));
                self.back(out, head);
                out.push(Item::Label(end));
            }
            2 => {
                // do { } while (++i < n)
                out.push(movi(2, 0));
                out.push(Item::Label(head));
                index(out);
                body(self, out);
                out.push(addi(2, step));
                if self.src.bool() {
                    out.push(jmpr(Cond::Lt, 2, 5, head));
                } else {
                    out.push(jmpi(Cond::Lt, 2, n, head));
                }
            }
            _ => {
                // for (i = n; i != 0; i--) a[i - 1]
                out.push(movi(2, n));
                out.push(Item::Label(head));
                out.push(jmpi(self.src.pick(&[Cond::Eq, Cond::Sle, Cond::Le]), 2, 0, end));
                out.push(alu64(AluOp::Sub, 2, 1));
                index(out);
                body(self, out);
                self.back(out, head);
                out.push(Item::Label(end));
            }
        }
        if write && self.src.bool() {
            // An element read back: written only if the loop got to it.
            let j = self.src.range(0, n - 1);
            out.push(ld(size_of(es), 0, 10, start + j * es));
            out.push(alu64r(AluOp::Add, 9, 0));
        }
        out.push(Item::Label(skip));
    }

    /// The input's bytes up to its length (or the context's), with a constant cap on the count.
    fn input_loop(&mut self, out: &mut Vec<Item>) {
        let head = self.label();
        let end = self.label();
        let cap = self.trips();
        let size = self.src.pick(&[1i64, 1, 2, 4]);
        out.push(movi(2, 0));
        out.push(Item::Label(head));
        match &self.ctx {
            Ctx::Buffer => {
                // i + size <= len, through a copy linked to i.
                if size == 1 && self.src.bool() {
                    out.push(jmpr(Cond::Ge, 2, 7, end));
                } else {
                    out.push(mov(3, 2));
                    let short = if self.risky() { -1 } else { 0 };
                    out.push(addi(3, size - 1 + short));
                    out.push(jmpr(Cond::Ge, 3, 7, end));
                }
            }
            Ctx::Fixed { size: n, .. } => {
                let n = *n;
                let long = if self.risky() { 1 } else { 0 };
                out.push(jmpi(Cond::Gt, 2, n - size + long, end));
            }
        }
        out.push(jmpi(Cond::Ge, 2, cap, end));
        out.push(mov(3, 6));
        out.push(alu64r(AluOp::Add, 3, 2));
        out.push(ld(size_of(size), 0, 3, 0));
        out.push(alu64r(AluOp::Xor, 9, 0));
        out.push(alu64(AluOp::Lsh, 9, 1));
        out.push(addi(2, 1));
        self.back(out, head);
        out.push(Item::Label(end));
    }

    /// Two nested counted loops over a stack array of `n1 * n2` bytes.
    fn nested_loop(&mut self, out: &mut Vec<Item>) {
        let n1 = self.src.range(1, 8);
        let n2 = self.src.range(1, 16);
        let len = n1 * n2 - self.risky() as i64;
        let start = -len.max(1) - 8 * self.src.range(0, 4);
        self.init_stack(out, start, start + len);
        let (h1, e1, h2, e2) = (self.label(), self.label(), self.label(), self.label());
        out.push(movi(1, 0));
        out.push(Item::Label(h1));
        out.push(jmpi(Cond::Ge, 1, n1, e1));
        out.push(movi(2, 0));
        out.push(Item::Label(h2));
        out.push(jmpi(Cond::Ge, 2, n2, e2));
        out.push(mov(3, 1));
        out.push(alu64(AluOp::Mul, 3, n2));
        out.push(alu64r(AluOp::Add, 3, 2));
        out.push(mov(4, 10));
        out.push(alu64r(AluOp::Add, 4, 3));
        if self.src.bool() {
            out.push(ld(Size::B, 0, 4, start));
            out.push(alu64r(AluOp::Add, 9, 0));
        } else {
            out.push(st(Size::B, 4, start, 9));
        }
        out.push(addi(2, 1));
        self.back(out, h2);
        out.push(Item::Label(e2));
        out.push(addi(1, 1));
        self.back(out, h1);
        out.push(Item::Label(e1));
    }

    /// A counter bounds the loop; a second variable, moved by 8 each time, is the offset.
    fn two_variable_loop(&mut self, out: &mut Vec<Item>) {
        let n = self.trips().min(64);
        let len = 8 * n - if self.risky() { self.src.pick(&[1, 8]) } else { 0 };
        let start = -len.max(8);
        let write = self.src.bool();
        if !write {
            self.init_stack(out, start, 0);
        }
        let (head, end) = (self.label(), self.label());
        out.push(movi(2, 0));
        out.push(movi(3, 0));
        out.push(Item::Label(head));
        out.push(jmpi(Cond::Ge, 2, n, end));
        out.push(mov(4, 10));
        out.push(alu64r(AluOp::Add, 4, 3));
        if write {
            out.push(st(Size::DW, 4, start, 2));
        } else {
            out.push(ld(Size::DW, 0, 4, start));
            out.push(alu64r(AluOp::Add, 9, 0));
        }
        out.push(addi(2, 1));
        out.push(addi(3, 8));
        self.back(out, head);
        out.push(Item::Label(end));
    }

    // ---------------------------------------------------------------------------------------------
    // Spills

    fn spill_fill(&mut self, out: &mut Vec<Item>, scope: Scope) {
        let skip = self.label();
        let slot = -8 * self.src.range(1, 64);
        match self.src.below(4) {
            0 => {
                // A bounded number spilled, the register cleared, filled (in whole or in part, after a
                // partial overwrite at times), and used as an offset.
                let x = self.bounded(out, 4, skip, scope, 256);
                out.push(st(Size::DW, 10, slot, 4));
                out.push(movi(4, -1));
                if self.risky() {
                    match self.src.below(3) {
                        0 => out.push(sti(Size::B, 10, slot + self.src.range(0, 7), -1)),
                        1 => out.push(sti(Size::W, 10, slot + 4, -1)),
                        _ => out.push(ld(Size::W, 4, 10, slot)),
                    }
                }
                out.push(ld(Size::DW, 4, 10, slot));
                let region = if scope.input && self.src.bool() {
                    self.input_region(out, skip)
                } else {
                    Region { base: 10, lo: -512, hi: slot.min(-8), stack: true, writable: true }
                };
                let size = self.src.pick(&[1i64, 2, 4, 8]);
                let c = self.edge(&region, x, size);
                if region.stack {
                    self.init_stack(out, c + x.lo, c + x.hi + size);
                }
                out.push(mov(3, region.base));
                out.push(alu64r(AluOp::Add, 3, 4));
                out.push(ld(size_of(size), 0, 3, c));
                out.push(alu64r(AluOp::Add, 9, 0));
            }
            1 => {
                // A pointer spilled and filled, then dereferenced.
                let (region, release) = self.region(out, skip, scope);
                let slot = if region.stack { -8 * self.src.range(1, 4) } else { slot };
                let risky = self.risky();
                let spill_at = if risky && self.src.chance(25) { slot + 4 } else { slot };
                out.push(mov(3, region.base));
                out.push(st(Size::DW, 10, spill_at, 3));
                let (fill, at) = if risky {
                    match self.src.below(5) {
                        0 => out.push(sti(Size::B, 10, slot + self.src.range(0, 7), 0)),
                        1 => out.push(sti(Size::DW, 10, slot, 0)),
                        2 => out.push(st(Size::W, 10, slot + 4, 9)),
                        3 => {
                            // A load straddling the spilled pointer and the numbers above it.
                            out.push(st(Size::DW, 10, slot + 8, 9));
                            out.push(movi(3, 0));
                            out.push(ld(Size::DW, 0, 10, slot + self.src.pick(&[4, 6])));
                            out.push(alu64r(AluOp::Add, 9, 0));
                        }
                        _ => {}
                    }
                    (self.src.pick(&[Size::W, Size::DW]), slot + self.src.pick(&[0, 0, 4]))
                } else {
                    (Size::DW, slot)
                };
                out.push(movi(3, 0));
                out.push(ld(fill, 3, 10, at));
                let spilled = Region { base: 3, ..region };
                let spilled = if region.stack { Region { hi: slot, ..spilled } } else { spilled };
                let size = self.src.pick(&[1i64, 2, 4, 8]);
                let c = self.edge(&spilled, Range { lo: 0, hi: 0 }, size);
                if region.stack {
                    self.init_stack(out, c, c + size);
                }
                if c >= i16::MIN as i64 && c <= i16::MAX as i64 {
                    out.push(ld(size_of(size), 0, 3, c));
                    out.push(alu64r(AluOp::Add, 9, 0));
                }
                if let Some(reg) = release {
                    self.release(out, reg);
                }
            }
            2 => {
                // Bytes written by narrower stores, read wider.
                let mut written = [false; 8];
                for _ in 0..1 + self.src.below(6) {
                    let size = self.src.pick(&[1i64, 2, 4]);
                    let at = self.src.range(0, (8 - size) / size) * size;
                    out.push(sti(size_of(size), 10, slot + at, self.imm()));
                    written[at as usize..(at + size) as usize].iter_mut().for_each(|b| *b = true);
                }
                if !self.risky() {
                    // Fill the holes, but maybe one.
                    let spare = if self.risky() { self.src.below(8) } else { 8 };
                    for (b, &w) in written.iter().enumerate() {
                        if !w && b != spare {
                            out.push(sti(Size::B, 10, slot + b as i64, b as i64));
                        }
                    }
                }
                let size = self.src.pick(&[1i64, 2, 4, 8, 8]);
                let at = self.src.range(0, (8 - size) / size) * size;
                out.push(ld(size_of(size), 0, 10, slot + at));
                out.push(alu64r(AluOp::Add, 9, 0));
            }
            _ => {
                // The accumulator spilled and read back in parts.
                out.push(st(Size::DW, 10, slot, 9));
                let size = self.src.pick(&[1i64, 2, 4]);
                let at = self.src.range(0, 8 - size);
                out.push(ld(size_of(size), 0, 10, slot + at));
                out.push(alu64r(AluOp::Xor, 9, 0));
                out.push(alu64(AluOp::Lsh, 9, 3));
            }
        }
        out.push(Item::Label(skip));
    }

    // ---------------------------------------------------------------------------------------------
    // Helpers and calls

    fn helper_misc(&mut self, out: &mut Vec<Item>, scope: Scope) {
        let skip = self.label();
        match self.src.below(4) {
            3 => {
                // get_current_comm writes `size` bytes (none when the size is 0) of a region, near its
                // end at times, then some are read back.
                let (region, release) = self.region(out, skip, scope);
                let var = self.src.chance(60);
                let x = if var {
                    self.bounded(out, 4, skip, scope, (region.hi - region.lo).min(32))
                } else {
                    let n = self.src.range(0, 24);
                    out.push(movi(4, n));
                    Range { lo: n, hi: n }
                };
                let start = self.edge(&region, Range { lo: 0, hi: 0 }, x.hi.max(1));
                out.push(mov(1, region.base));
                out.push(addi(1, start));
                out.push(mov(2, 4));
                out.push(call(std_helpers::GET_CURRENT_COMM));
                out.push(alu64r(AluOp::Add, 9, 0));
                if x.hi > 0 && start >= i16::MIN as i64 && start <= i16::MAX as i64 {
                    let j = self.src.range(0, x.hi - 1);
                    out.push(ld(Size::B, 0, region.base, start + j));
                    out.push(alu64r(AluOp::Add, 9, 0));
                }
                if let Some(reg) = release {
                    self.release(out, reg);
                }
            }
            0 => {
                // map_update_elem with the value on the stack, near the top of the frame at times.
                let m = self.src.pick(&[map::ARRAY, map::HASH, map::BIG, map::ARRAY4, map::RODATA]);
                let (_, value, _) = map_shape(m);
                let at = match self.src.below(6) {
                    0 => -value + 8,
                    1 | 2 => -value,
                    _ => (-value - 8 * self.src.range(0, 8)).max(-512),
                };
                self.init_stack(out, at, at + value);
                self.key(out, m);
                out.push(mov(3, 10));
                out.push(addi(3, at));
                out.push(lddw_map(1, m));
                out.push(movi(4, 0));
                out.push(call(std_helpers::MAP_UPDATE_ELEM));
                out.push(alu64r(AluOp::Add, 9, 0));
            }
            1 => {
                // map_delete_elem.
                self.key(out, map::HASH);
                out.push(lddw_map(1, map::HASH));
                out.push(call(std_helpers::MAP_DELETE_ELEM));
                out.push(alu64r(AluOp::Add, 9, 0));
            }
            _ => {
                // ringbuf_output of memory from a region, its size a constant or a bounded number.
                let (region, release) = self.region(out, skip, scope);
                let var = self.src.chance(40);
                let x = if var {
                    self.bounded(out, 4, skip, scope, region.hi - region.lo)
                } else if self.risky() {
                    // A size near the ends of the 32- and 64-bit ranges.
                    let n = self.src.pick(&[u32::MAX as u64, 1 << 32, (1 << 31) + 8, u64::MAX, 1 << 29]);
                    out.push(lddw(4, n));
                    Range { lo: 0, hi: 8 }
                } else {
                    let n = self.src.range(0, 40);
                    out.push(movi(4, n));
                    Range { lo: n, hi: n }
                };
                let lo = if region.stack { region.hi - x.hi - 64 } else { region.lo };
                let start = match self.src.below(4) {
                    0 => lo,
                    1 => lo - 1,
                    _ => region.hi - x.hi + self.src.pick(&[0, 0, 1]),
                };
                if region.stack {
                    self.init_stack(out, start, start + x.hi);
                }
                out.push(mov(2, region.base));
                out.push(addi(2, start));
                out.push(mov(3, 4));
                out.push(lddw_map(1, map::RINGBUF));
                out.push(movi(4, 0));
                out.push(call(std_helpers::RINGBUF_OUTPUT));
                out.push(alu64r(AluOp::Add, 9, 0));
                if let Some(reg) = release {
                    self.release(out, reg);
                }
            }
        }
        out.push(Item::Label(skip));
    }

    /// A new function, its body made by `body`; returns its index.
    fn function(&mut self, body: impl FnOnce(&mut Self, &mut Vec<Item>)) -> usize {
        let f = self.funcs.len();
        self.funcs.push(Vec::new());
        let mut out = Vec::new();
        body(self, &mut out);
        self.funcs[f] = out;
        f
    }

    fn calls(&mut self, out: &mut Vec<Item>, scope: Scope) {
        match self.src.below(12) {
            0..=3 if scope.input => {
                // A callee given the input and its length, made of snippets as the caller is.
                let inner = Scope { depth: scope.depth + 1, input: true };
                let n = 1 + self.src.below(2);
                let f = self.function(|g, body| {
                    body.push(mov(6, 1));
                    body.push(mov(7, 2));
                    body.push(movi(9, 0));
                    for _ in 0..n {
                        g.snippet(body, inner);
                    }
                    body.push(mov(0, 9));
                    body.push(exit());
                });
                out.push(mov(1, 6));
                out.push(mov(2, 7));
                out.push(Item::Call { function: f });
                out.push(alu64r(AluOp::Add, 9, 0));
                if self.risky() {
                    // r1-r5 are not the caller's any more.
                    out.push(alu64r(AluOp::Add, 9, self.src.range(1, 5) as u8));
                }
            }
            4..=6 => {
                // A callee given a pointer to `n` bytes of the caller's stack, `b` below its top.
                let b = self.src.pick(&[8i64, 16, 16, 24, 32, 64, 128]);
                let n = b - self.src.pick(&[0i64, 0, 8]);
                self.init_stack(out, -b, 0);
                let inner = Scope { depth: scope.depth + 1, input: false };
                let accesses = 1 + self.src.below(3);
                let f = self.function(|g, body| {
                    body.push(mov(8, 1));
                    body.push(movi(9, 0));
                    if g.risky() {
                        body.push(alu64r(AluOp::Add, 9, 6)); // r6 is not the caller's
                    }
                    let region = Region { base: 8, lo: 0, hi: b, stack: false, writable: true };
                    let skip = g.label();
                    for _ in 0..accesses {
                        g.access(body, &region, skip, inner);
                    }
                    if g.src.chance(30) {
                        g.snippet(body, inner);
                    }
                    body.push(Item::Label(skip));
                    body.push(mov(0, 9));
                    body.push(exit());
                });
                out.push(mov(1, 10));
                out.push(addi(1, -b));
                out.push(movi(2, n));
                out.push(Item::Call { function: f });
                out.push(alu64r(AluOp::Add, 9, 0));
                let at = self.src.range(-b, -1);
                out.push(ld(Size::B, 0, 10, at));
                out.push(alu64r(AluOp::Add, 9, 0));
            }
            7 | 8 if scope.depth == 0 => {
                // A chain of calls, each passing a pointer to its own stack: 8 frames are allowed.
                let d = self.src.pick(&[1usize, 2, 5, 6, 7, 7, 7, 8]);
                let mut next: Option<usize> = None;
                for level in (1..=d).rev() {
                    let callee = next;
                    let f = self.function(|g, body| {
                        body.push(ld(Size::DW, 0, 1, 0));
                        body.push(sti(Size::DW, 10, -8, level as i64));
                        if let Some(c) = callee {
                            body.push(mov(1, 10));
                            body.push(addi(1, -8));
                            body.push(Item::Call { function: c });
                            body.push(ld(Size::DW, 2, 10, -8));
                            body.push(alu64r(AluOp::Add, 0, 2));
                        }
                        let _ = g;
                        body.push(exit());
                    });
                    next = Some(f);
                }
                out.push(st(Size::DW, 10, -8, 9));
                out.push(mov(1, 10));
                out.push(addi(1, -8));
                out.push(Item::Call { function: next.expect("a chain") });
                out.push(alu64r(AluOp::Add, 9, 0));
            }
            9 | 10 if scope.input && matches!(self.ctx, Ctx::Buffer) => self.pointer_factory(out, scope),
            _ => {
                // A callee that loops over its own stack and returns a number (and, at times, calls
                // itself: recursion must be refused).
                let inner = Scope { depth: scope.depth + 1, input: false };
                let recurse = self.risky();
                let f = self.function(|g, body| {
                    body.push(movi(9, 0));
                    g.stack_loop(body, inner);
                    if recurse {
                        let done = g.label();
                        body.push(jmpi(Cond::Gt, 9, 100, done));
                        body.push(Item::Call { function: g.funcs.len() - 1 });
                        body.push(alu64r(AluOp::Add, 9, 0));
                        body.push(Item::Label(done));
                    }
                    body.push(mov(0, 9));
                    body.push(exit());
                });
                out.push(Item::Call { function: f });
                out.push(alu64r(AluOp::Add, 9, 0));
                if self.src.chance(30) {
                    out.push(Item::Call { function: f });
                    out.push(alu64r(AluOp::Xor, 9, 0));
                }
            }
        }
    }

    /// A callee that stores input + x at the stack slot its caller names, called twice: both pointers
    /// are made by one instruction. A bounds proof for one of them says nothing about the other.
    fn pointer_factory(&mut self, out: &mut Vec<Item>, scope: Scope) {
        let skip = self.label();
        let f = self.function(|_, body| {
            body.push(alu64r(AluOp::Add, 1, 2));
            body.push(st(Size::DW, 3, 0, 1));
            body.push(movi(0, 0));
            body.push(exit());
        });
        let mask = self.src.pick(&[3i64, 15, 63]);
        let slots = [-8 * self.src.range(1, 30), -8 * self.src.range(31, 60)];
        for slot in slots {
            if self.src.chance(70) {
                let off = self.input_offset(out, 1, skip);
                out.push(ld(Size::B, 2, 6, off));
                out.push(alu64(AluOp::And, 2, mask));
            } else {
                self.bounded(out, 2, skip, scope, mask);
            }
            out.push(mov(1, 6));
            out.push(mov(3, 10));
            out.push(addi(3, slot));
            out.push(Item::Call { function: f });
        }
        out.push(ld(Size::DW, 8, 10, slots[0]));
        out.push(ld(Size::DW, 4, 10, slots[1]));
        let size = self.src.pick(&[1i64, 2, 4, 8]);
        out.push(mov(5, 4));
        out.push(addi(5, size));
        out.push(mov(0, 6));
        out.push(alu64r(AluOp::Add, 0, 7));
        out.push(jmpr(Cond::Gt, 5, 0, skip));
        let base = if self.src.chance(30) { 4 } else { 8 };
        out.push(ld(size_of(size), 0, base, 0));
        out.push(alu64r(AluOp::Add, 9, 0));
        out.push(Item::Label(skip));
    }

    // ---------------------------------------------------------------------------------------------
    // Refusals and plain arithmetic

    /// Pointer arithmetic that loses the region, and other misuses the verifier must refuse.
    fn misuse(&mut self, out: &mut Vec<Item>, scope: Scope) {
        let skip = self.label();
        match self.src.below(8) {
            0 => {
                out.push(mov(3, 10));
                out.push(alu64(self.src.pick(&[AluOp::Mul, AluOp::Lsh, AluOp::Div, AluOp::Or]), 3, 1));
                out.push(ld(Size::B, 0, 3, -1));
            }
            1 => {
                out.push(mov(3, 10));
                out.push(alu64r(AluOp::Add, 3, if scope.input { 6 } else { 10 }));
                out.push(ld(Size::B, 0, 3, -1));
            }
            2 => {
                out.push(movi(3, 0));
                out.push(alu64r(AluOp::Sub, 3, 10));
                out.push(alu64r(AluOp::Add, 9, 3));
                out.push(movi(0, 0));
            }
            3 => {
                out.push(mov(3, 10));
                out.push(alu(Width::W32, AluOp::Add, 3, Operand::Imm(-8)));
                out.push(ld(Size::B, 0, 3, 0));
            }
            4 => {
                self.key(out, map::ARRAY);
                out.push(lddw_map(1, map::ARRAY));
                out.push(call(std_helpers::MAP_LOOKUP_ELEM));
                out.push(addi(0, 8));
                out.push(jmpi(Cond::Eq, 0, 0, skip));
                out.push(ld(Size::B, 0, 0, 0));
            }
            5 => {
                self.lookup(out, map::ARRAY, skip);
                out.push(st(Size::DW, 0, 0, 10));
                out.push(movi(0, 0));
            }
            6 => {
                let leak = self.label();
                out.push(jmpi(Cond::Ne, 9, 12345, leak));
                out.push(mov(0, 10));
                out.push(exit());
                out.push(Item::Label(leak));
                out.push(movi(0, 0));
            }
            _ => {
                out.push(mov(3, 10));
                out.push(jmpi(Cond::Gt, 3, 4096, skip));
                out.push(movi(0, 0));
            }
        }
        out.push(alu64r(AluOp::Add, 9, 0));
        out.push(Item::Label(skip));
    }

    /// Arithmetic of every kind on numbers from the input, the accumulator and the echo helper, folded
    /// into the accumulator.
    fn alu_only(&mut self, out: &mut Vec<Item>, scope: Scope) {
        let skip = self.label();
        if self.src.chance(30) {
            out.push(mov(1, 9));
            out.push(call(ECHO));
            out.push(alu64r(AluOp::Xor, 9, 0));
        }
        let zx = self.source(out, 4, skip, scope);
        let mut zx = zx;
        for _ in 0..1 + self.src.below(6) {
            zx = self.chain_op(out, 4, zx);
        }
        out.push(alu64r(AluOp::Add, 9, 4));
        out.push(Item::Label(skip));
    }
}

// -------------------------------------------------------------------------------------------------
// Layout

/// The pattern that fills stack frames and unwritten registers in the poisoned build.
const POISON: u64 = 0xa5c3_5a3c_96e1_1e69;

/// What a poisoned build fills with a pattern before the program may read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Poison {
    /// Each function's stack frame, at its entry.
    pub stack: bool,
    /// The registers a function does not receive, at its entry, and r1-r5 after each call.
    pub regs: bool,
}

impl Poison {
    pub const NONE: Poison = Poison { stack: false, regs: false };
    pub const ALL: Poison = Poison { stack: true, regs: true };
}

/// `program` with the poison `poison` (see [`layout`]).
pub fn poisoned(program: &Program, poison: Poison) -> Program {
    rewrite(program, poison, |_, _| Vec::new())
}

/// `program` laid out again with the poison `poison`, and the instructions `before` gives for each
/// instruction (by slot and instruction) inserted before it.
fn rewrite(
    program: &Program,
    poison: Poison,
    mut before: impl FnMut(usize, &Instruction) -> Vec<Instruction>,
) -> Program {
    let functions = program.functions();
    let funcs: Vec<Vec<Item>> = functions
        .iter()
        .map(|f| {
            let mut items = Vec::new();
            for (pc, insn) in program.function_iter(*f) {
                let to = |offset: i64| (pc as i64 + 1 + offset) as u32;
                items.push(Item::Label(pc as u32));
                items.extend(before(pc, insn).into_iter().map(Item::I));
                items.push(match *insn {
                    Instruction::Jump { width, cond, dst, src, offset } => {
                        Item::Jump { width, cond, dst: dst.index(), src, to: to(offset as i64) }
                    }
                    Instruction::Ja { offset } => Item::Goto { to: to(offset as i64), long: false },
                    Instruction::Ja32 { offset } => Item::Goto { to: to(offset as i64), long: true },
                    Instruction::CallLocal { offset } => {
                        let start = to(offset as i64) as usize;
                        let function = functions.iter().position(|g| g.start == start).expect("calls go to functions");
                        Item::Call { function }
                    }
                    other => Item::I(other),
                });
            }
            items
        })
        .collect();
    layout(&funcs, poison)
}

/// Lays the functions out one after the other and fixes jump and call targets. With `poison`, every
/// function first fills its stack frame and the registers it does not receive with a pattern, and
/// after every call r1-r5 get the pattern too (BPF leaves them undefined): a program that reads only
/// what it wrote behaves the same.
fn layout(funcs: &[Vec<Item>], poison: Poison) -> Program {
    let mut expanded: Vec<Vec<Item>> = Vec::new();
    for (f, body) in funcs.iter().enumerate() {
        let mut e = Vec::new();
        if poison.stack {
            e.push(lddw(0, POISON));
            for k in 1..=64 {
                e.push(st(Size::DW, 10, -8 * k, 0));
            }
            e.push(movi(0, 0));
        }
        if poison.regs {
            e.push(lddw(0, POISON.rotate_left(17)));
            let regs: &[u8] = if f == 0 { &[3, 4, 5, 6, 7, 8, 9] } else { &[6, 7, 8, 9] };
            for &reg in regs {
                e.push(lddw(reg, POISON.rotate_left(reg as u32 * 8)));
            }
        }
        for item in body {
            e.push(*item);
            let is_call = matches!(item, Item::Call { .. } | Item::I(Instruction::Call { .. }));
            if poison.regs && is_call {
                for reg in 1..=5u8 {
                    e.push(lddw(reg, POISON.rotate_left(reg as u32 * 5)));
                }
            }
        }
        expanded.push(e);
    }
    let slots = |item: &Item| match item {
        Item::I(insn) => insn.slots(),
        Item::Label(_) => 0,
        _ => 1,
    };
    let mut labels = BTreeMap::new();
    let mut starts = Vec::new();
    let mut pc = 0usize;
    for body in &expanded {
        starts.push(pc);
        for item in body {
            if let Item::Label(l) = item {
                labels.insert(*l, pc);
            }
            pc += slots(item);
        }
    }
    let mut out = Vec::new();
    let mut pc = 0i64;
    for body in &expanded {
        for item in body {
            let rel = |to: usize| to as i64 - pc - 1;
            let target = |l: &u32| *labels.get(l).expect("every label is placed");
            let insn = match *item {
                Item::I(insn) => insn,
                Item::Label(_) => continue,
                Item::Jump { width, cond, dst, src, to } => {
                    Instruction::Jump { width, cond, dst: r(dst), src, offset: rel(target(&to)) as i16 }
                }
                Item::Goto { to, long: false } => Instruction::Ja { offset: rel(target(&to)) as i16 },
                Item::Goto { to, long: true } => Instruction::Ja32 { offset: rel(target(&to)) as i32 },
                Item::Call { function } => Instruction::CallLocal { offset: rel(starts[function]) as i32 },
            };
            pc += insn.slots() as i64;
            out.push(insn);
        }
    }
    Program::from_instructions(out).unwrap_or_else(|e| panic!("generated an invalid program: {e}"))
}

// -------------------------------------------------------------------------------------------------
// The check

/// A fresh environment for a case: the standard helpers, the echo helper, the maps of [`map_defs`]
/// with the case's initial contents, and the context description.
pub fn env(case: &Case) -> Env {
    let mut env = Env::new();
    env.add_standard_helpers();
    env.add_helper(Helper::new(ECHO, "echo", HelperSig::scalars(1), |_, a| Ok(a[0].rotate_left(7))));
    env.set_print_sink(Arc::new(|_| {}));
    for def in map_defs() {
        env.add_map(maps::create(def).expect("the generated maps fit the default budget"));
    }
    for (m, key, value) in &case.map_init {
        env.map(*m).expect("a map").update(key, value, 0, 0).expect("initial contents fit");
    }
    env.set_context(case.context.clone());
    env
}

/// Whether the verifier accepts the case's program (with its log when `log` is given).
pub fn verify(case: &Case, log: Option<&mut String>) -> Result<(), VerifyError> {
    let linked = Arc::new(Linked::new(case.program.clone(), Vec::new(), env(case)).expect("generated programs link"));
    Verifier::new().verify_logged(&linked, log).map(|_| ())
}

/// How one execution ended and what the host sees afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub result: Result<u64, String>,
    pub input: Vec<u8>,
    pub records: Vec<Vec<u8>>,
    pub dump: Vec<Entry>,
}

/// A map entry: map index, key, value.
pub type Entry = (usize, Vec<u8>, Vec<u8>);

/// One of the builds a case runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    Checked(Engine),
    Verified(Engine),
    /// The program poisoned (see [`layout`]), checked, on the interpreter.
    Poisoned(Poison),
}

impl Build {
    fn name(self) -> &'static str {
        match self {
            Build::Checked(Engine::Interpreter) => "checked interpreter",
            Build::Verified(Engine::Interpreter) => "verified interpreter",
            Build::Checked(_) => "checked JIT",
            Build::Verified(_) => "verified JIT",
            Build::Poisoned(Poison { stack: true, regs: true }) => "poisoned checked interpreter",
            Build::Poisoned(Poison { stack: true, .. }) => "stack-poisoned checked interpreter",
            Build::Poisoned(_) => "register-poisoned checked interpreter",
        }
    }
}

/// The builds every accepted case runs on, checked ones before the verified build of their engine.
pub const BUILDS: &[Build] = &[
    Build::Checked(Engine::Interpreter),
    Build::Verified(Engine::Interpreter),
    #[cfg(feature = "jit")]
    Build::Checked(Engine::Jit),
    #[cfg(feature = "jit")]
    Build::Verified(Engine::Jit),
    Build::Poisoned(Poison::ALL),
];

/// Input memory at an 8-byte aligned address (so that atomics on it behave the same in every run).
struct Aligned {
    buf: Vec<u8>,
    at: usize,
    len: usize,
}

impl Aligned {
    fn new(bytes: &[u8]) -> Aligned {
        let mut buf = vec![0u8; bytes.len() + 8];
        let at = buf.as_ptr().align_offset(8);
        buf[at..at + bytes.len()].copy_from_slice(bytes);
        Aligned { buf, at, len: bytes.len() }
    }

    fn bytes(&mut self) -> &mut [u8] {
        &mut self.buf[self.at..self.at + self.len]
    }
}

/// A run's error without its instruction (the poisoned build has more) and addresses (stacks and maps
/// lie elsewhere in each run), and the instruction. No error may end a run of an accepted program.
fn classify(e: &ExecError, input: &[u8]) -> (String, Option<usize>) {
    let base = input.as_ptr() as u64;
    let at = |a: u64| match a.wrapping_sub(base) {
        off if off < 1 << 16 => format!("at input+{off} (input of {} bytes)", input.len()),
        _ => "outside the input".into(),
    };
    let text = match e {
        ExecError::OutOfBounds { len, write, addr, .. } => {
            format!("out of bounds: {} of {len} bytes {}", if *write { "store" } else { "load" }, at(*addr))
        }
        ExecError::MisalignedAtomic { addr, .. } => format!("misaligned atomic, {}", at(*addr)),
        ExecError::BudgetExhausted { .. } => "budget exhausted".into(),
        ExecError::CallDepthExceeded { .. } => "call depth exceeded".into(),
        ExecError::Helper { id, source: HelperError::OutOfBounds { len, .. }, .. } => {
            format!("helper {id}: out of bounds, {len} bytes")
        }
        ExecError::Helper { id, source, .. } => format!("helper {id}: {source}"),
        other => other.to_string(),
    };
    let pc = match e {
        ExecError::OutOfBounds { pc, .. }
        | ExecError::MisalignedAtomic { pc, .. }
        | ExecError::BudgetExhausted { pc }
        | ExecError::CallDepthExceeded { pc }
        | ExecError::UnknownHelper { pc, .. }
        | ExecError::Helper { pc, .. } => Some(*pc),
        _ => None,
    };
    (text, pc)
}

/// Every entry of every keyed map, and the ring buffer's records (consumed).
fn snapshot(env: &Env) -> (Vec<Vec<u8>>, Vec<Entry>) {
    let mut dump = Vec::new();
    for (i, m) in env.maps().iter().enumerate() {
        if m.def().map_type == MapType::RingBuf {
            continue;
        }
        for key in m.keys() {
            if let Some(v) = m.get(&key, 0) {
                dump.push((i, key, v));
            }
        }
    }
    let rb = env.map(map::RINGBUF as u32).and_then(|m| m.downcast_ref::<RingBufMap>()).expect("ring buffer");
    (rb.drain(), dump)
}

/// What went wrong with an accepted program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A build could not be made.
    Build(String),
    /// A run stopped with an error (in a checked build, or a verified one whose checked twin passed).
    Error { build: Build, error: String, pc: Option<usize> },
    /// Two builds disagree.
    Differ { builds: (Build, Build), what: String },
    /// Read-only context bytes changed.
    ReadOnly { range: (usize, usize) },
    /// Only the poisoned build differs: the program read something it never wrote. `stack` and `regs`
    /// say which poison alone shows it; `var_store` that the program stores through a stack pointer
    /// with a variable offset, `var_write` that it passes a helper memory to write of a variable size
    /// (as the verifier's log shows).
    Uninit { stack: bool, regs: bool, var_store: bool, var_write: bool, what: String },
}

impl Failure {
    /// A one-line description.
    pub fn summary(&self) -> String {
        match self {
            Failure::Build(e) => e.clone(),
            Failure::Error { build, error, pc } => format!("{}: {error} at insn {pc:?}", build.name()),
            Failure::Differ { builds: (a, b), what } => format!("{} and {} differ: {what}", a.name(), b.name()),
            Failure::ReadOnly { range: (a, b) } => format!("read-only context bytes {a}..{b} changed"),
            Failure::Uninit { stack, regs, var_store, var_write, what } => format!(
                "the poisoned build differs, so the program read something it never wrote (stack poison alone \
                 shows it: {stack}, register poison alone: {regs}; stores at variable stack offsets: {var_store}, \
                 helper writes of variable size: {var_write}): {what}"
            ),
        }
    }

    /// What this failure is an instance of, if it is one already known: an open verifier bug (none at
    /// the moment; see the reproducers of `tests/verifier_soundness.rs`), or what the verifier's rules
    /// allow.
    pub fn known_bug(&self) -> Option<&'static str> {
        match self {
            // The verifier's documented rule: a store at a variable stack offset makes every byte it may
            // touch readable, and the engines zero every frame, so bytes it skipped read as 0 (poison
            // shows them).
            Failure::Uninit { stack: true, regs: false, var_store: true, .. } => {
                Some("allowed by the rule for stores at variable stack offsets: bytes they skipped read as 0")
            }
            _ => None,
        }
    }
}

/// A soundness failure, and the run (input) that shows it.
#[derive(Debug, Clone)]
pub struct Unsound {
    pub failure: Failure,
    pub run: Option<usize>,
}

/// Runs every input of `case` on `build`; stops at the first run that fails. Returns the observations
/// and the failure.
fn observe(case: &Case, build: Build) -> (Vec<Observed>, Option<Failure>) {
    let env = env(case);
    let program = match build {
        Build::Poisoned(p) => poisoned(&case.program, p),
        _ => case.program.clone(),
    };
    let builder = Vm::builder(program).env(env.clone());
    let builder = match build {
        Build::Checked(e) => builder.engine(e).checked().budget(BUDGET),
        Build::Verified(e) => builder.engine(e).verified(),
        Build::Poisoned(_) => builder.checked().budget(BUDGET),
    };
    let vm = match builder.build() {
        Ok(vm) => vm,
        Err(e) => return (Vec::new(), Some(Failure::Build(format!("{} does not build: {e}", build.name())))),
    };
    let mut seen = Vec::new();
    for input in &case.inputs {
        let mut mem = Aligned::new(input);
        let result = vm.execute(mem.bytes());
        let mut failure = None;
        let result = result.map_err(|e| {
            let (text, pc) = classify(&e, mem.bytes());
            failure = Some(Failure::Error { build, error: text.clone(), pc });
            text
        });
        let (records, dump) = snapshot(&env);
        seen.push(Observed { result, input: mem.bytes().to_vec(), records, dump });
        if failure.is_some() {
            return (seen, failure);
        }
    }
    (seen, None)
}

/// Verifies the case and, if the verifier accepts, runs it on every build: a description of the first
/// disagreement or failure is a soundness failure.
pub fn check(case: &Case) -> Result<Outcome, Unsound> {
    if let Err(e) = verify(case, None) {
        return Ok(Outcome::Rejected(e));
    }
    let mut all: Vec<(Build, Vec<Observed>)> = Vec::new();
    for &build in BUILDS {
        // A verified build runs only once the checked build of its engine ran every input safely.
        let (seen, failure) = observe(case, build);
        if let Some(f) = failure {
            return Err(Unsound { failure: f, run: seen.len().checked_sub(1) });
        }
        all.push((build, seen));
    }
    let (first, reference) = &all[0];
    let differs = |seen: &[Observed]| reference.iter().zip(seen).position(|(a, b)| a != b);
    for (build, seen) in &all[1..] {
        if let Some(run) = differs(seen) {
            let what = difference(&reference[run], &seen[run]);
            let f = match build {
                Build::Poisoned(_) => {
                    // Which poison shows it, and whether the verifier saw a store at a variable stack offset.
                    let shows = |p: Poison| {
                        let (seen, failure) = observe(case, Build::Poisoned(p));
                        failure.is_some() || differs(&seen).is_some()
                    };
                    let stack = shows(Poison { stack: true, regs: false });
                    let regs = shows(Poison { stack: false, regs: true });
                    let (var_store, var_write) = variable_stack_writes(case);
                    Failure::Uninit { stack, regs, var_store, var_write, what }
                }
                _ => Failure::Differ { builds: (*first, *build), what },
            };
            return Err(Unsound { failure: f, run: Some(run) });
        }
    }
    // The interpreter's shadow mode reports any read of a register or stack byte never written; the
    // verifier's rule for stores at a variable stack offset (every byte they may touch is readable,
    // frames start zeroed) is the one case it is allowed to see.
    if let Some(f) = shadow(case) {
        return Err(f);
    }
    if let Context::Fixed { read_only, .. } = &case.context {
        for (run, (input, seen)) in case.inputs.iter().zip(reference).enumerate() {
            for range in read_only {
                let (a, b) = (range.start as usize, range.end as usize);
                if input[a..b] != seen.input[a..b] {
                    return Err(Unsound { failure: Failure::ReadOnly { range: (a, b) }, run: Some(run) });
                }
            }
        }
    }
    Ok(Outcome::Accepted { runs: case.inputs.len() })
}

/// Runs the case in the interpreter's shadow mode: a read of something never written is a failure.
fn shadow(case: &Case) -> Option<Unsound> {
    let vm = match Vm::builder(case.program.clone()).env(env(case)).shadow().budget(BUDGET).build() {
        Ok(vm) => vm,
        Err(e) => {
            return Some(Unsound { failure: Failure::Build(format!("shadow mode does not build: {e}")), run: None })
        }
    };
    for (run, input) in case.inputs.iter().enumerate() {
        let mut mem = Aligned::new(input);
        if let Err(e @ ebpf_vm::ExecError::UninitRead { what, .. }) = vm.execute(mem.bytes()) {
            let (var_store, var_write) = variable_stack_writes(case);
            let stack = matches!(what, ebpf_vm::Uninit::Stack(_));
            let what = format!("shadow mode: {e}");
            let failure = Failure::Uninit { stack, regs: !stack, var_store, var_write, what };
            return Some(Unsound { failure, run: Some(run) });
        }
    }
    None
}

/// Whether the verifier's log shows a store or atomic operation through a stack pointer with a variable
/// offset, and whether it shows a call of `get_current_comm` (the helper that writes memory) with a
/// size that is not a constant.
fn variable_stack_writes(case: &Case) -> (bool, bool) {
    let mut log = String::new();
    let _ = verify(case, Some(&mut log));
    let (mut store, mut write) = (false, false);
    for line in log.lines() {
        let Some((insn, state)) = line.split_once(" ; ") else { continue };
        let insn = insn.split_once(": ").map_or(insn, |(_, i)| i);
        let reg = |name: &str| state.split(", ").find_map(|v| v.strip_prefix(&format!("{name}=")));
        if insn.starts_with("st") || insn.starts_with("lock") {
            let base = insn.split_once("[%").and_then(|(_, rest)| rest.split(['+', '-', ']']).next());
            store |= base.and_then(reg).is_some_and(|p| p.starts_with("fp") && p.contains("+var"));
        }
        if insn == format!("call {}", std_helpers::GET_CURRENT_COMM) {
            write |= reg("r2").is_some_and(|size| size.parse::<i64>().is_err());
        }
    }
    (store, write)
}

fn difference(a: &Observed, b: &Observed) -> String {
    let mut out = Vec::new();
    if a.result != b.result {
        out.push(format!("result {:?} vs {:?}", a.result, b.result));
    }
    let bytes: Vec<usize> = (0..a.input.len()).filter(|&k| a.input.get(k) != b.input.get(k)).collect();
    if !bytes.is_empty() {
        out.push(format!("input bytes {bytes:?}"));
    }
    if a.records != b.records {
        out.push(format!("records {:?} vs {:?}", a.records, b.records));
    }
    if a.dump != b.dump {
        out.push(format!("maps {:?} vs {:?}", a.dump, b.dump));
    }
    out.join("; ")
}

/// The failure with the program, the verifier's log and the input of the run that failed.
pub fn report(case: &Case, unsound: &Unsound) -> String {
    let Unsound { failure, run } = unsound;
    let mut log = String::new();
    let _ = verify(case, Some(&mut log));
    let input = run.and_then(|r| case.inputs.get(r));
    format!(
        "SOUNDNESS FAILURE in run {run:?}: {}\ncontext: {:?}\nmap contents: {:?}\ninput ({} bytes): {:?}\nprogram:\n{}\nverifier log:\n{log}",
        failure.summary(),
        case.context,
        case.map_init,
        input.map_or(0, Vec::len),
        input,
        case.program.disassemble(),
    )
}

/// The name of a rejection's rule (the error kind without its fields).
pub fn reason(e: &VerifyError) -> String {
    let s = format!("{:?}", e.kind);
    s.split([' ', '{', '(']).next().unwrap_or("").to_string()
}
