//! Any bytes as bytecode and input: the JIT (checked) must give the interpreter's result, error and
//! memory. The interpreter runs first with a budget; programs that run out are left out, the others are
//! known to end on this input, so the JIT runs them without a budget (the code a host gets by default,
//! with branches turned into selects and shared bounds checks). The filter and the comparison of
//! addresses are the tests' own (`tests/common/oracle.rs`).
#![no_main]

#[path = "../../tests/common/gen.rs"]
mod gen;
#[path = "../../tests/common/oracle.rs"]
mod oracle;

use ebpf_vm::{Engine, ExecError, Helper, HelperSig, Program, Vm};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 64 {
        return;
    }
    let (input, code) = data.split_at(64);
    let Ok(program) = Program::from_bytes(code) else { return };
    if oracle::reads_frame_pointer_as_value(&program) {
        return;
    }
    let echo = || Helper::new(gen::ECHO, "echo", HelperSig::scalars(1), |_, a| Ok(a[0].rotate_left(7)));
    let Ok(interpreter) = Vm::builder(program.clone()).helper(echo()).checked().budget(100_000).build() else { return };
    let mut mem = input.to_vec();
    let base = mem.as_ptr() as u64;
    let expected = interpreter.execute(&mut mem);
    if matches!(expected, Err(ExecError::BudgetExhausted { .. })) {
        return;
    }
    let after = mem.clone();
    mem.copy_from_slice(input);
    let jit = Vm::builder(program).helper(echo()).engine(Engine::Jit).checked().build().expect("the JIT compiles it");
    let got = jit.execute(&mut mem);
    assert_eq!(oracle::relative(expected, base), oracle::relative(got, base));
    assert_eq!(after, mem);
});
