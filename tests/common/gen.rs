//! Valid programs from arbitrary bytes, shared by the property tests (which feed it proptest's bytes)
//! and the fuzz targets (which feed it libFuzzer's): one generator, so both test the same things.
//!
//! Every program built here is structurally valid and links: each register has one role, so that the
//! engines' results can be compared value for value although their stacks and maps lie at different
//! addresses. r0-r5 hold numbers only; r6 a map value (or null), r7 a ring-buffer record (or null),
//! r8 the input, and r10 the frame: pointers are used as bases of loads and stores, moved by constants,
//! tested against zero and passed to helpers, never mixed into numbers. After every call r1-r5 are
//! cleared, as BPF leaves them undefined. Programs may use maps (an array, a hash map, a per-CPU array,
//! an LRU hash, a read-only array), the ring buffer, tail calls, bpf-to-bpf calls, atomics, legacy
//! packet loads and every ALU operation; memory accesses are in bounds most of the time and out of
//! bounds some of the time.
#![allow(dead_code)]

use ebpf_vm::isa::{
    AluOp, AtomicOp, ByteOrder, Cond, Imm64, Instruction, Operand, PacketMode, Reg, Size, SxWidth, Width,
};
use ebpf_vm::maps::{MapDef, MapType, BPF_F_RDONLY_PROG};
use ebpf_vm::Program;

/// Bytes read one decision at a time; zeros once they run out.
pub struct Source<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Source<'a> {
    pub fn new(data: &'a [u8]) -> Source<'a> {
        Source { data, pos: 0 }
    }

    pub fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    pub fn u64(&mut self) -> u64 {
        (self.u32() as u64) << 32 | self.u32() as u64
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        if n <= 256 {
            self.byte() as usize % n
        } else {
            self.u32() as usize % n
        }
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.u32() as i64).rem_euclid(hi - lo + 1)
    }

    pub fn bool(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// True with probability about `percent`%.
    pub fn chance(&mut self, percent: u8) -> bool {
        self.byte() % 100 < percent
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// Whether every byte was used.
    pub fn exhausted(&self) -> bool {
        self.pos >= self.data.len()
    }
}

fn r(n: u8) -> Reg {
    Reg::new(n).expect("a register")
}

const R6: u8 = 6;
const R7: u8 = 7;
const R8: u8 = 8;

/// Indices of the maps every generated program's environment has (see [`maps`]).
pub mod map {
    pub const ARRAY: i32 = 0;
    pub const HASH: i32 = 1;
    pub const PERCPU: i32 = 2;
    pub const LRU: i32 = 3;
    pub const RINGBUF: i32 = 4;
    pub const PROGS: i32 = 5;
    pub const RODATA: i32 = 6;
}

/// The maps of a generated scenario, by the indices of [`map`].
pub fn maps() -> Vec<MapDef> {
    let def = |map_type, key_size, value_size, max_entries, flags| MapDef {
        map_type,
        key_size,
        value_size,
        max_entries,
        flags,
    };
    vec![
        def(MapType::Array, 4, 32, 4, 0),
        def(MapType::Hash, 4, 16, 8, 0),
        def(MapType::PerCpuArray, 4, 16, 2, 0),
        def(MapType::LruHash, 8, 8, 4, 0),
        def(MapType::RingBuf, 0, 0, 512, 0),
        def(MapType::ProgArray, 4, 4, 4, 0),
        def(MapType::Array, 4, 16, 1, BPF_F_RDONLY_PROG),
    ]
}

/// Value size of each map of [`maps`], for offsets near its end.
fn value_size(m: i32) -> i64 {
    match m {
        map::ARRAY => 32,
        map::HASH | map::PERCPU | map::RODATA => 16,
        _ => 8,
    }
}

/// The helper id of a deterministic host helper every environment has: returns its first argument
/// rotated left by 7.
pub const ECHO: u32 = 5;

/// Programs, input and the initial contents of the program array, for one run.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The entry program (id 0) and the other tail-call targets, by id.
    pub programs: Vec<Program>,
    /// Program array entries: (index, program id).
    pub prog_array: Vec<(u32, u32)>,
    /// The input buffer.
    pub input: Vec<u8>,
}

/// What the generator may produce.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Backward jumps and recursive calls (programs may then not terminate: run them with a budget).
    pub loops: bool,
    /// Maps, helpers, the ring buffer and tail calls (otherwise only the echo helper and local calls).
    pub maps: bool,
    /// Most chunks of code per function.
    pub max_chunks: usize,
}

impl Options {
    /// Everything, terminating programs only.
    pub const ALL: Options = Options { loops: false, maps: true, max_chunks: 24 };
    /// Everything, with loops.
    pub const LOOPS: Options = Options { loops: true, maps: true, max_chunks: 24 };
}

/// A generated scenario.
pub fn scenario(src: &mut Source, opts: Options) -> Scenario {
    let input_len = src.pick(&[0usize, 8, 16, 64, 64, 64, 128]);
    let input: Vec<u8> = (0..input_len).map(|_| src.byte()).collect();
    let count = if opts.maps { 1 + src.below(3) } else { 1 };
    let programs = (0..count).map(|_| program(src, opts, input_len, count)).collect();
    let prog_array = (0..src.below(4)).map(|i| (i as u32, src.below(count) as u32)).collect();
    Scenario { programs, prog_array, input }
}

/// An instruction whose jump or call target is fixed when the program is laid out.
#[derive(Debug, Clone, Copy)]
enum Item {
    Insn(Instruction),
    /// A conditional jump to chunk `target` of the same function (`usize::MAX`: its exit).
    Jump {
        width: Width,
        cond: Cond,
        dst: Reg,
        src: Operand,
        target: usize,
    },
    /// A call of function `target`.
    Call {
        target: usize,
    },
}

/// One program of 1 to 3 functions.
fn program(src: &mut Source, opts: Options, input_len: usize, programs: usize) -> Program {
    let functions = 1 + src.below(3);
    // Each function: its chunks (each a list of items), laid out one after the other, then `exit`.
    let mut bodies: Vec<Vec<Vec<Item>>> = Vec::new();
    for f in 0..functions {
        let chunks = 1 + src.below(opts.max_chunks);
        let mut body = Vec::with_capacity(chunks);
        // Prelude: the input (or, for a callee, the pointer its caller passed) into r8.
        body.push(vec![Item::Insn(mov_reg(R8, 1)), Item::Insn(mov_imm(1, 0))]);
        for c in 0..chunks {
            body.push(chunk(src, opts, input_len, f, functions, c, chunks, programs));
        }
        bodies.push(body);
    }
    layout(bodies).unwrap_or_else(|e| panic!("generated an invalid program: {e}"))
}

fn mov_reg(dst: u8, src: u8) -> Instruction {
    Instruction::Alu { width: Width::W64, op: AluOp::Mov, dst: r(dst), src: Operand::Reg(r(src)) }
}

fn mov_imm(dst: u8, imm: i32) -> Instruction {
    Instruction::Alu { width: Width::W64, op: AluOp::Mov, dst: r(dst), src: Operand::Imm(imm) }
}

fn add_imm(dst: u8, imm: i32) -> Instruction {
    Instruction::Alu { width: Width::W64, op: AluOp::Add, dst: r(dst), src: Operand::Imm(imm) }
}

fn lddw_map(dst: u8, index: i32) -> Instruction {
    Instruction::LoadImm64 { dst: r(dst), value: Imm64::MapFd(index) }
}

fn call(id: u32) -> Instruction {
    Instruction::Call { id }
}

/// Clears r1-r5 (after a call, or before leaving a chunk that put pointers there).
fn clear_args(out: &mut Vec<Item>) {
    for n in 1..=5 {
        out.push(Item::Insn(mov_imm(n, 0)));
    }
}

fn scalar(src: &mut Source) -> Reg {
    r(src.below(6) as u8)
}

fn operand(src: &mut Source) -> Operand {
    match src.below(4) {
        0 | 1 => Operand::Reg(scalar(src)),
        2 => Operand::Imm(src.range(-4, 70) as i32),
        _ => Operand::Imm(src.u32() as i32),
    }
}

fn size(src: &mut Source) -> Size {
    src.pick(&[Size::B, Size::H, Size::W, Size::DW])
}

/// A base register for a memory access, and an offset near the memory it points to: inside it most of
/// the time (if it is there at all: r6 and r7 may be null), around it otherwise.
fn base_and_offset(src: &mut Source, input_len: usize, bytes: i64) -> (Reg, i16) {
    let (base, size) = match src.below(20) {
        0..=9 => (R8, input_len as i64),
        10..=16 => (10, 512),
        17 | 18 => (R6, 16),
        _ => (R7, 8),
    };
    let mut off = if src.chance(85) && size >= bytes {
        let lo = if base == 10 { -size } else { 0 };
        src.range(lo, lo + size - bytes)
    } else if base == 10 {
        src.range(-520, 8)
    } else {
        src.range(-8, size + 8)
    };
    if src.chance(70) {
        off -= off.rem_euclid(bytes); // aligned, as compiled code mostly is
    }
    (r(base), off as i16)
}

/// One chunk: straight-line code (calls included), possibly ending in a conditional jump.
#[allow(clippy::too_many_arguments)]
fn chunk(
    src: &mut Source,
    opts: Options,
    input_len: usize,
    f: usize,
    functions: usize,
    c: usize,
    chunks: usize,
    programs: usize,
) -> Vec<Item> {
    let mut out = Vec::new();
    let kinds = if opts.maps { 17 } else { 11 };
    match src.below(kinds) {
        0..=2 => {
            let width = src.pick(&[Width::W32, Width::W64]);
            let op = src.pick(&[
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
                AluOp::Mov,
                AluOp::Arsh,
            ]);
            out.push(Item::Insn(Instruction::Alu { width, op, dst: scalar(src), src: operand(src) }));
        }
        3 => {
            let insn = match src.below(4) {
                0 => Instruction::Neg { width: src.pick(&[Width::W32, Width::W64]), dst: scalar(src) },
                1 => Instruction::End {
                    order: src.pick(&[ByteOrder::Le, ByteOrder::Be, ByteOrder::Swap]),
                    bits: src.pick(&[16, 32, 64]),
                    dst: scalar(src),
                },
                2 => {
                    let (width, from) = src.pick(&[
                        (Width::W32, SxWidth::B8),
                        (Width::W32, SxWidth::B16),
                        (Width::W64, SxWidth::B8),
                        (Width::W64, SxWidth::B16),
                        (Width::W64, SxWidth::B32),
                    ]);
                    Instruction::MovSx { width, from, dst: scalar(src), src: scalar(src) }
                }
                _ => Instruction::LoadImm64 { dst: scalar(src), value: Imm64::Const(src.u64()) },
            };
            out.push(Item::Insn(insn));
        }
        4 | 5 => {
            let size = size(src);
            let (base, offset) = base_and_offset(src, input_len, size.bytes() as i64);
            let insn = if size != Size::DW && src.chance(20) {
                Instruction::LoadSx { size, dst: scalar(src), src: base, offset }
            } else {
                Instruction::Load { size, dst: scalar(src), src: base, offset }
            };
            out.push(Item::Insn(insn));
        }
        6 | 7 => {
            let size = size(src);
            let (base, offset) = base_and_offset(src, input_len, size.bytes() as i64);
            let insn = if src.bool() {
                Instruction::Store { size, dst: base, offset, imm: src.u32() as i32 }
            } else {
                Instruction::StoreReg { size, dst: base, offset, src: scalar(src) }
            };
            out.push(Item::Insn(insn));
        }
        8 => {
            let width = src.pick(&[Width::W32, Width::W64]);
            let bytes = if width == Width::W64 { 8 } else { 4 };
            let (base, mut offset) = base_and_offset(src, input_len, bytes);
            if src.chance(90) {
                offset -= offset.rem_euclid(bytes as i16);
            }
            let fetch = src.bool();
            let op = src.pick(&[
                AtomicOp::Add { fetch },
                AtomicOp::Or { fetch },
                AtomicOp::And { fetch },
                AtomicOp::Xor { fetch },
                AtomicOp::Xchg,
                AtomicOp::CmpXchg,
            ]);
            out.push(Item::Insn(Instruction::Atomic { width, op, dst: base, offset, src: scalar(src) }));
        }
        9 => {
            // A local call: the input pointer and three numbers as arguments. Forward only, unless loops
            // (and so recursion) are allowed.
            let lo = if opts.loops { 0 } else { f + 1 };
            if lo < functions {
                let target = lo + src.below(functions - lo);
                for n in 2..=4 {
                    out.push(Item::Insn(mov_reg(n, src.pick(&[0, 2, 3, 4, 5]))));
                }
                out.push(Item::Insn(mov_reg(1, R8)));
                out.push(Item::Call { target });
                clear_args(&mut out);
            } else {
                out.push(Item::Insn(call(ECHO)));
            }
        }
        10 => {
            // A legacy packet load, or the echo helper.
            if src.bool() {
                let size = src.pick(&[Size::B, Size::H, Size::W]);
                let mode = if src.bool() { PacketMode::Abs } else { PacketMode::Ind(scalar(src)) };
                let imm = src.range(-2, input_len as i64 + 2) as i32;
                out.push(Item::Insn(Instruction::LoadPacket { size, mode, imm }));
            } else {
                out.push(Item::Insn(mov_reg(1, src.below(6) as u8)));
                out.push(Item::Insn(call(ECHO)));
                clear_args(&mut out);
            }
        }
        11 | 12 => map_access(src, &mut out),
        13 => ringbuf(src, &mut out, input_len),
        14 => {
            // A tail call through the program array, with the input as context.
            out.push(Item::Insn(mov_reg(1, R8)));
            out.push(Item::Insn(lddw_map(2, map::PROGS)));
            out.push(Item::Insn(mov_imm(3, src.range(-1, 4) as i32)));
            out.push(Item::Insn(call(ebpf_vm::helpers::standard::TAIL_CALL)));
            clear_args(&mut out);
            let _ = programs;
        }
        15 => {
            // Pointer moves: by a constant, or back to the start of the input.
            let (reg, k) = match src.below(3) {
                0 => (R6, src.range(-8, 24) as i32),
                1 => (R7, src.range(-8, 16) as i32),
                _ => (R8, src.range(-8, 16) as i32),
            };
            out.push(Item::Insn(add_imm(reg, k)));
        }
        _ => {
            let id = src.pick(&[ebpf_vm::helpers::standard::GET_SMP_PROCESSOR_ID, ECHO]);
            out.push(Item::Insn(call(id)));
            clear_args(&mut out);
        }
    }
    // The chunk may end with a conditional jump: between numbers, or a null test of a pointer.
    if src.chance(35) {
        let forward = c + 1 + src.below(chunks - c + 1); // up to the exit
        let target = if opts.loops && src.chance(30) { src.below(chunks) } else { forward };
        let target = if target >= chunks { usize::MAX } else { target + 1 }; // +1: chunk 0 is the prelude
        let (dst, src_op, cond) = if src.chance(25) {
            (r(src.pick(&[R6, R7])), Operand::Imm(0), src.pick(&[Cond::Eq, Cond::Ne]))
        } else {
            let cond = src.pick(&[
                Cond::Eq,
                Cond::Gt,
                Cond::Ge,
                Cond::Set,
                Cond::Ne,
                Cond::Sgt,
                Cond::Sge,
                Cond::Lt,
                Cond::Le,
                Cond::Slt,
                Cond::Sle,
            ]);
            (scalar(src), operand(src), cond)
        };
        let width = src.pick(&[Width::W32, Width::W64]);
        out.push(Item::Jump { width, cond, dst, src: src_op, target });
    }
    out
}

/// A map helper: lookup (result into r6), update or delete, with the key and value on the stack.
fn map_access(src: &mut Source, out: &mut Vec<Item>) {
    let m = src.pick(&[map::ARRAY, map::HASH, map::PERCPU, map::LRU, map::RODATA, map::ARRAY, map::HASH]);
    let key_size: i16 = if m == map::LRU { 8 } else { 4 };
    // The key at r10-8 (a small number, so that lookups hit), the value at r10-56.
    out.push(Item::Insn(Instruction::Store { size: Size::DW, dst: r(10), offset: -8, imm: 0 }));
    out.push(Item::Insn(Instruction::Store {
        size: if key_size == 8 { Size::DW } else { Size::W },
        dst: r(10),
        offset: -8,
        imm: src.range(0, 5) as i32,
    }));
    let value = src.below(6) as u8;
    out.push(Item::Insn(Instruction::StoreReg { size: Size::DW, dst: r(10), offset: -56, src: r(value) }));
    out.push(Item::Insn(lddw_map(1, m)));
    out.push(Item::Insn(mov_reg(2, 10)));
    out.push(Item::Insn(add_imm(2, -8)));
    match src.below(4) {
        0 | 1 => {
            out.push(Item::Insn(call(ebpf_vm::helpers::standard::MAP_LOOKUP_ELEM)));
            out.push(Item::Insn(mov_reg(R6, 0)));
            out.push(Item::Insn(mov_imm(0, 0)));
            let _ = value_size(m);
        }
        2 => {
            out.push(Item::Insn(mov_reg(3, 10)));
            out.push(Item::Insn(add_imm(3, -56)));
            out.push(Item::Insn(mov_imm(4, src.range(0, 3) as i32)));
            out.push(Item::Insn(call(ebpf_vm::helpers::standard::MAP_UPDATE_ELEM)));
        }
        _ => out.push(Item::Insn(call(ebpf_vm::helpers::standard::MAP_DELETE_ELEM))),
    }
    clear_args(out);
}

/// A ring-buffer helper: reserve (result into r7), submit or discard r7, output, or query.
fn ringbuf(src: &mut Source, out: &mut Vec<Item>, input_len: usize) {
    use ebpf_vm::helpers::standard::*;
    out.push(Item::Insn(lddw_map(1, map::RINGBUF)));
    match src.below(5) {
        0 | 1 => {
            out.push(Item::Insn(mov_imm(2, src.range(0, 40) as i32)));
            out.push(Item::Insn(mov_imm(3, if src.chance(90) { 0 } else { 1 })));
            out.push(Item::Insn(call(RINGBUF_RESERVE)));
            out.push(Item::Insn(mov_reg(R7, 0)));
            out.push(Item::Insn(mov_imm(0, 0)));
        }
        2 => {
            out.push(Item::Insn(mov_reg(1, R7)));
            out.push(Item::Insn(mov_imm(2, 0)));
            out.push(Item::Insn(call(if src.bool() { RINGBUF_SUBMIT } else { RINGBUF_DISCARD })));
            // A record is not the program's any more once submitted.
            if src.chance(80) {
                out.push(Item::Insn(mov_imm(R7, 0)));
            }
        }
        3 => {
            let (base, at) = if src.bool() { (R8, src.range(0, input_len as i64)) } else { (10, src.range(-64, -1)) };
            out.push(Item::Insn(mov_reg(2, base)));
            out.push(Item::Insn(add_imm(2, at as i32)));
            out.push(Item::Insn(mov_imm(3, src.range(0, 24) as i32)));
            out.push(Item::Insn(mov_imm(4, 0)));
            out.push(Item::Insn(call(RINGBUF_OUTPUT)));
        }
        _ => {
            out.push(Item::Insn(mov_imm(2, src.range(0, 4) as i32)));
            out.push(Item::Insn(call(RINGBUF_QUERY)));
        }
    }
    clear_args(out);
}

/// Lays the functions out, each ending with `exit` after its chunks, and fixes jump and call targets.
fn layout(bodies: Vec<Vec<Vec<Item>>>) -> Result<Program, ebpf_vm::ProgramError> {
    // Slot of each chunk's first instruction, and of each function's exit stub.
    let mut starts: Vec<Vec<usize>> = Vec::new();
    let mut exits = Vec::new();
    let mut pc = 0;
    for body in &bodies {
        let mut s = Vec::new();
        for chunk in body {
            s.push(pc);
            pc += chunk
                .iter()
                .map(|i| match i {
                    Item::Insn(insn) => insn.slots(),
                    _ => 1,
                })
                .sum::<usize>();
        }
        starts.push(s);
        exits.push(pc);
        pc += 1; // the exit
    }
    let function_start: Vec<usize> = starts.iter().map(|s| s[0]).collect();
    let mut out = Vec::new();
    for (f, body) in bodies.iter().enumerate() {
        for chunk in body {
            for item in chunk {
                let here = out.iter().map(Instruction::slots).sum::<usize>() as i64;
                out.push(match *item {
                    Item::Insn(insn) => insn,
                    Item::Jump { width, cond, dst, src, target } => {
                        let t = if target == usize::MAX { exits[f] } else { starts[f][target] };
                        Instruction::Jump { width, cond, dst, src, offset: (t as i64 - here - 1) as i16 }
                    }
                    Item::Call { target } => {
                        Instruction::CallLocal { offset: (function_start[target] as i64 - here - 1) as i32 }
                    }
                });
            }
        }
        out.push(Instruction::Exit);
    }
    Program::from_instructions(out)
}
