//! Shared test support: running assembly text, and proptest strategies for instructions.
#![allow(dead_code)]

pub mod suite;

use ebpf_vm::isa::{
    AluOp, AtomicOp, ByteOrder, Cond, Imm64, Instruction, Operand, PacketMode, Reg, Size, SxWidth, Width,
};
use ebpf_vm::{ExecError, Helper, HelperSig, Program, Vm};
use proptest::prelude::*;

/// Assembles `text`, runs it in checked mode on `mem` with helper 5 (returns r1) and a budget.
pub fn try_run_on(text: &str, mem: &mut [u8]) -> Result<u64, ExecError> {
    let program = Program::from_asm(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let helper = Helper::new(5, "echo", HelperSig::scalars(1), |_, a| Ok(a[0]));
    let vm = Vm::builder(program).helper(helper).checked().budget(1_000_000).build().expect("builds");
    vm.execute(mem)
}

/// Runs `text` on no memory and returns r0, panicking on an execution error.
pub fn run(text: &str) -> u64 {
    try_run_on(text, &mut []).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

pub fn reg() -> impl Strategy<Value = Reg> {
    (0u8..=10).prop_map(|n| Reg::new(n).expect("0..=10 is a register"))
}

pub fn width() -> impl Strategy<Value = Width> {
    prop_oneof![Just(Width::W32), Just(Width::W64)]
}

pub fn size() -> impl Strategy<Value = Size> {
    prop_oneof![Just(Size::B), Just(Size::H), Just(Size::W), Just(Size::DW)]
}

pub fn operand() -> impl Strategy<Value = Operand> {
    prop_oneof![reg().prop_map(Operand::Reg), any::<i32>().prop_map(Operand::Imm)]
}

pub fn alu_op() -> impl Strategy<Value = AluOp> {
    use AluOp::*;
    proptest::sample::select(vec![Add, Sub, Mul, Div, SDiv, Or, And, Lsh, Rsh, Mod, SMod, Xor, Mov, Arsh])
}

pub fn cond() -> impl Strategy<Value = Cond> {
    use Cond::*;
    proptest::sample::select(vec![Eq, Gt, Ge, Set, Ne, Sgt, Sge, Lt, Le, Slt, Sle])
}

pub fn atomic_op() -> impl Strategy<Value = AtomicOp> {
    any::<bool>().prop_flat_map(|fetch| {
        proptest::sample::select(vec![
            AtomicOp::Add { fetch },
            AtomicOp::Or { fetch },
            AtomicOp::And { fetch },
            AtomicOp::Xor { fetch },
            AtomicOp::Xchg,
            AtomicOp::CmpXchg,
        ])
    })
}

pub fn imm64() -> impl Strategy<Value = Imm64> {
    prop_oneof![
        any::<u64>().prop_map(Imm64::Const),
        any::<i32>().prop_map(Imm64::MapFd),
        (any::<i32>(), any::<i32>()).prop_map(|(fd, offset)| Imm64::MapValue { fd, offset }),
        (any::<i32>(), any::<i32>()).prop_map(|(id, obj)| Imm64::BtfVar { id, obj }),
        any::<i32>().prop_map(Imm64::Func),
        any::<i32>().prop_map(Imm64::MapIdx),
        (any::<i32>(), any::<i32>()).prop_map(|(idx, offset)| Imm64::MapIdxValue { idx, offset }),
    ]
}

/// Any valid instruction, with arbitrary offsets (jump targets are not checked here).
pub fn instruction() -> impl Strategy<Value = Instruction> {
    prop_oneof![
        8 => (width(), alu_op(), reg(), operand()).prop_map(|(width, op, dst, src)| Instruction::Alu { width, op, dst, src }),
        1 => (width(), reg()).prop_map(|(width, dst)| Instruction::Neg { width, dst }),
        1 => (reg(), reg(), 0usize..5).prop_map(|(dst, src, k)| {
            let (width, from) = [(Width::W32, SxWidth::B8), (Width::W32, SxWidth::B16), (Width::W64, SxWidth::B8),
                (Width::W64, SxWidth::B16), (Width::W64, SxWidth::B32)][k];
            Instruction::MovSx { width, from, dst, src }
        }),
        1 => (proptest::sample::select(vec![ByteOrder::Le, ByteOrder::Be, ByteOrder::Swap]), proptest::sample::select(vec![16u8, 32, 64]), reg())
            .prop_map(|(order, bits, dst)| Instruction::End { order, bits, dst }),
        1 => (reg(), imm64()).prop_map(|(dst, value)| Instruction::LoadImm64 { dst, value }),
        1 => (proptest::sample::select(vec![Size::B, Size::H, Size::W]), proptest::option::of(reg()), any::<i32>())
            .prop_map(|(size, r, imm)| Instruction::LoadPacket { size, mode: r.map_or(PacketMode::Abs, PacketMode::Ind), imm }),
        2 => (size(), reg(), reg(), any::<i16>()).prop_map(|(size, dst, src, offset)| Instruction::Load { size, dst, src, offset }),
        1 => (proptest::sample::select(vec![Size::B, Size::H, Size::W]), reg(), reg(), any::<i16>())
            .prop_map(|(size, dst, src, offset)| Instruction::LoadSx { size, dst, src, offset }),
        2 => (size(), reg(), any::<i16>(), any::<i32>()).prop_map(|(size, dst, offset, imm)| Instruction::Store { size, dst, offset, imm }),
        2 => (size(), reg(), any::<i16>(), reg()).prop_map(|(size, dst, offset, src)| Instruction::StoreReg { size, dst, offset, src }),
        1 => (width(), atomic_op(), reg(), any::<i16>(), reg())
            .prop_map(|(width, op, dst, offset, src)| Instruction::Atomic { width, op, dst, offset, src }),
        1 => any::<i16>().prop_map(|offset| Instruction::Ja { offset }),
        1 => any::<i32>().prop_map(|offset| Instruction::Ja32 { offset }),
        4 => (width(), cond(), reg(), operand(), any::<i16>())
            .prop_map(|(width, cond, dst, src, offset)| Instruction::Jump { width, cond, dst, src, offset }),
        1 => any::<u32>().prop_map(|id| Instruction::Call { id }),
        1 => reg().prop_map(|reg| Instruction::CallReg { reg }),
        1 => any::<i32>().prop_map(|offset| Instruction::CallLocal { offset }),
        1 => any::<u32>().prop_map(|id| Instruction::CallBtf { id }),
        1 => Just(Instruction::Exit),
    ]
}
pub mod gen;
pub mod objects;
pub mod oracle;

/// `insn` with r10, the read-only frame pointer, kept only as the base of memory accesses: wherever an
/// instruction would write it or read it as a value, r9 takes its place. Generated programs are then
/// valid (nothing writes r10) and comparable between engines (stack addresses differ between them).
pub fn frame_pointer_as_base_only(insn: Instruction) -> Instruction {
    let v = |r: Reg| if r == Reg::R10 { Reg::new(9).expect("r9") } else { r };
    let op = |o: Operand| match o {
        Operand::Reg(r) => Operand::Reg(v(r)),
        imm => imm,
    };
    match insn {
        Instruction::Alu { width, op: o, dst, src } => Instruction::Alu { width, op: o, dst: v(dst), src: op(src) },
        Instruction::Neg { width, dst } => Instruction::Neg { width, dst: v(dst) },
        Instruction::MovSx { width, from, dst, src } => Instruction::MovSx { width, from, dst: v(dst), src: v(src) },
        Instruction::End { order, bits, dst } => Instruction::End { order, bits, dst: v(dst) },
        Instruction::LoadImm64 { dst, value } => Instruction::LoadImm64 { dst: v(dst), value },
        Instruction::LoadPacket { size, mode: PacketMode::Ind(r), imm } => {
            Instruction::LoadPacket { size, mode: PacketMode::Ind(v(r)), imm }
        }
        Instruction::Load { size, dst, src, offset } => Instruction::Load { size, dst: v(dst), src, offset },
        Instruction::LoadSx { size, dst, src, offset } => Instruction::LoadSx { size, dst: v(dst), src, offset },
        Instruction::StoreReg { size, dst, offset, src } => Instruction::StoreReg { size, dst, offset, src: v(src) },
        Instruction::Atomic { width, op, dst, offset, src } => {
            Instruction::Atomic { width, op, dst, offset, src: v(src) }
        }
        Instruction::Jump { width, cond, dst, src, offset } => {
            Instruction::Jump { width, cond, dst: v(dst), src: op(src), offset }
        }
        Instruction::CallReg { reg } => Instruction::CallReg { reg: v(reg) },
        other => other,
    }
}

/// How many cases of a generated-program test were really run (or compared), and why the others were
/// not; reports itself and fails the test when fewer than 90% ran.
pub struct Rate {
    name: &'static str,
    ran: std::sync::atomic::AtomicUsize,
    skipped: std::sync::atomic::AtomicUsize,
}

impl Rate {
    pub const fn new(name: &'static str) -> Rate {
        Rate { name, ran: std::sync::atomic::AtomicUsize::new(0), skipped: std::sync::atomic::AtomicUsize::new(0) }
    }

    pub fn ran(&self) {
        self.ran.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn skipped(&self) {
        self.skipped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Prints the rate and asserts that at least 90% of the cases ran.
    pub fn check(&self) {
        let ran = self.ran.load(std::sync::atomic::Ordering::Relaxed);
        let all = ran + self.skipped.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!("{}: {ran} of {all} generated cases ran ({:.1}%)", self.name, 100.0 * ran as f64 / all.max(1) as f64);
        assert!(ran * 10 >= all * 9, "{}: only {ran} of {all} generated cases ran", self.name);
    }
}

/// Runs a property over `cases` values of `strategy` with a fixed seed, then checks the rate of cases
/// that `property` reports as run.
pub fn run_property<S: Strategy>(
    rate: &Rate,
    cases: u32,
    strategy: S,
    property: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[3; 32]));
    runner.run(&strategy, property).unwrap_or_else(|e| panic!("{e}"));
    rate.check();
}
