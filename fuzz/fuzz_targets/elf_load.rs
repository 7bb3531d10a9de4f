//! Any bytes as a BPF object: loading must not panic, and what loads must build and run (checked, with
//! a budget) to `Ok` or a typed error. Seed the corpus with `tests/fixtures/*.o`.
#![no_main]

use ebpf_vm::elf::Object;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(obj) = Object::parse(data) else { return };
    for p in obj.programs() {
        if let Ok(builder) = obj.vm_builder(&p.name) {
            if let Ok(vm) = builder.budget(10_000).build() {
                let _ = vm.execute(&mut [0u8; 64]);
            }
        }
    }
});
