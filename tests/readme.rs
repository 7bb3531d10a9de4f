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
fn readme_elf_example() -> Result<(), ebpf_vm::Error> {
    use ebpf_vm::{elf::Object, maps::TypedHashMap, Engine, Instance};
    let bytes = include_bytes!("fixtures/hash_count.o");
    let mut packet = b"abc".to_vec();

    let object = Object::parse(bytes)?; // definitions only: programs, maps, data
    let instance = Instance::new(&object)?; // live maps and globals, within a memory budget
    let vm = instance.vm_builder("count_bytes")?.engine(Engine::Jit).build()?;
    let r0 = vm.execute(&mut packet)?;
    let counts = TypedHashMap::<u32, u64>::new(instance.map("counts").expect("defined").clone())?;
    assert_eq!(r0, 9);
    assert_eq!(counts.get(&(b'a' as u32)), Some(1));
    Ok(())
}
