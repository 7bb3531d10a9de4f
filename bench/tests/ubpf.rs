//! iovisor/ubpf (built only with `UBPF_DIR` set, see `build.rs`) computes what our checked interpreter
//! computes, on its interpreter and on its JIT, for every benchmark program it loads. It refuses the
//! map programs only (its loader takes no `lddw` with a source register, so no map references).
#![cfg(ubpf)]

use ebpf_vm::elf::Object;
use ebpf_vm::Instance;
use ebpf_vm_bench::programs::{input, PROGRAMS};
use ebpf_vm_bench::ubpf::Ubpf;

/// The programs ubpf cannot load: they use maps.
const REFUSED: &[&str] = &["hashmap", "arraymap"];

/// What ubpf's interpreter and JIT return on `name`'s input, or why it did not run the program.
fn run(code: &[u8], name: &str) -> Result<(u64, u64), String> {
    let mut vm = Ubpf::load(code).map_err(|e| format!("load: {e}"))?;
    let interpreted = vm.interpret(&mut input(name)).map_err(|e| format!("interpreter: {e}"))?;
    vm.compile().map_err(|e| format!("compile: {e}"))?;
    // SAFETY: the benchmark programs are deterministic and ubpf's interpreter, which checks every
    // access and the call depth, ran this one on the same input without an error just above.
    let jitted = unsafe { vm.jit(&mut input(name)) };
    Ok((interpreted, jitted))
}

#[test]
fn ubpf_agrees_with_our_interpreter() {
    let mut failures = Vec::new();
    for &(name, elf) in PROGRAMS {
        let object = Object::parse(elf).expect("benchmark object loads");
        let instance = Instance::new(&object).expect("maps are created");
        let vm = instance.vm_builder(name).expect("program").checked().build().expect("builds");
        let want = vm.execute(&mut input(name)).expect("runs");
        let code = object.program(name).expect("program").program.to_bytes();
        match (run(&code, name), REFUSED.contains(&name)) {
            (Ok((interpreted, jitted)), refused) => {
                println!("{name:<10} ours {want:#018x}, ubpf interpreter {interpreted:#018x}, JIT {jitted:#018x}");
                if interpreted != want || jitted != want {
                    failures.push(format!("{name}: we return {want:#x}, ubpf {interpreted:#x} and {jitted:#x}"));
                }
                if refused {
                    failures.push(format!("{name}: ubpf was expected to refuse it, but ran it"));
                }
            }
            (Err(e), true) => println!("{name:<10} refused by ubpf, as expected: {e}"),
            (Err(e), false) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
