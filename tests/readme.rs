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

#[test]
fn readme_elf_example() -> Result<(), Box<dyn std::error::Error>> {
    use ebpf_vm::{elf::Object, maps::TypedHashMap};
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/hash_count.o");
    let mut packet = b"abc".to_vec();
    let object = Object::parse(&std::fs::read(path)?)?;
    let vm = object.vm_builder("count_bytes")?.engine(ebpf_vm::Engine::Jit).build()?;
    let r0 = vm.execute(&mut packet)?;
    let counts = TypedHashMap::<u32, u64>::new(object.map("counts").unwrap().clone())?;
    assert_eq!(r0, 9);
    assert_eq!(counts.get(&(b'a' as u32)), Some(1));
    Ok(())
}
