//! Any bytes as bytecode: decoding must not panic, encoding what decodes must give the bytes back, and
//! running it (checked, with a budget) must end in `Ok` or a typed error.
#![no_main]

use ebpf_vm::{Helper, HelperSig, Program, Vm};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(program) = Program::from_bytes(data) else { return };
    assert_eq!(program.to_bytes(), data, "encode is the inverse of decode");
    let echo = Helper::new(5, "echo", HelperSig::scalars(1), |_, a| Ok(a[0]));
    if let Ok(vm) = Vm::builder(program).helper(echo).checked().budget(10_000).build() {
        let _ = vm.execute(&mut [0u8; 64]);
    }
});
