//! Any bytes as bytecode and input: the JIT (checked) must give the interpreter's result, error and
//! memory. The interpreter runs first with a budget; programs that run out are skipped, the others
//! are known to end on this input, so the JIT runs them without a budget (the code a host gets by
//! default, with branches turned into selects and shared bounds checks).
#![no_main]

use ebpf_vm::isa::{Instruction, Operand, Reg};
use ebpf_vm::{Engine, ExecError, Helper, HelperSig, Program, Vm};
use libfuzzer_sys::fuzz_target;

/// Whether the program reads r10 as a value: stack addresses differ between the engines.
fn reads_frame_pointer(program: &Program) -> bool {
    program.iter().any(|(_, insn)| match *insn {
        Instruction::Alu { src: Operand::Reg(r), .. } | Instruction::Jump { src: Operand::Reg(r), .. } => {
            r == Reg::R10
        }
        Instruction::Alu { dst, .. } | Instruction::Jump { dst, .. } => dst == Reg::R10,
        Instruction::MovSx { src, .. } | Instruction::StoreReg { src, .. } | Instruction::Atomic { src, .. } => {
            src == Reg::R10
        }
        Instruction::CallReg { reg } => reg == Reg::R10,
        _ => false,
    })
}

/// Addresses in errors, relative to the input when near it; others (the engines' stacks lie in
/// different places) as 0.
fn relative(r: Result<u64, ExecError>, base: u64) -> Result<u64, ExecError> {
    let rel = |a: u64| {
        let off = a.wrapping_sub(base) as i64;
        if (-65536..65536).contains(&off) { off as u64 } else { 0 }
    };
    r.map_err(|e| match e {
        ExecError::OutOfBounds { pc, addr, len, write } => ExecError::OutOfBounds { pc, addr: rel(addr), len, write },
        ExecError::MisalignedAtomic { pc, addr } => ExecError::MisalignedAtomic { pc, addr: rel(addr) },
        other => other,
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 64 {
        return;
    }
    let (input, code) = data.split_at(64);
    let Ok(program) = Program::from_bytes(code) else { return };
    if reads_frame_pointer(&program) {
        return;
    }
    let echo = || Helper::new(5, "echo", HelperSig::scalars(1), |_, a| Ok(a[0].rotate_left(3)));
    let Ok(interpreter) = Vm::builder(program.clone()).helper(echo()).budget(100_000).build() else { return };
    let mut mem = input.to_vec();
    let base = mem.as_ptr() as u64;
    let expected = interpreter.execute(&mut mem);
    if matches!(expected, Err(ExecError::BudgetExhausted { .. })) {
        return;
    }
    let after = mem.clone();
    mem.copy_from_slice(input);
    let jit = Vm::builder(program).helper(echo()).engine(Engine::Jit).build().expect("the JIT compiles it");
    let got = jit.execute(&mut mem);
    assert_eq!(relative(expected, base), relative(got, base));
    assert_eq!(after, mem);
});
