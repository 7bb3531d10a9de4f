//! The README's API example, kept compiling and correct.

use ebpf_vm::{Helper, HelperSig, Program, Vm};

#[test]
fn readme_api_example() -> Result<(), ebpf_vm::Error> {
    let program = Program::from_asm("mov %r1, %r2\ncall 1\nexit")?;
    let double = Helper::new(1, "double", HelperSig::scalars(1), |_ctx, args| Ok(args[0] * 2));
    let vm = Vm::builder(program).helper(double).budget(1_000_000).build()?;
    let r0 = vm.execute(&mut [0u8; 21])?;
    assert_eq!(r0, 42);
    Ok(())
}
