//! Any bytes as a BPF object: parsing must not panic (the build has overflow checks with `-a`), and
//! what parses must instantiate (within the default map budget), build and run (checked, with a budget)
//! to `Ok` or a typed error. Seed the corpus with `tests/fixtures/*.o`.
#![no_main]

use ebpf_vm::elf::Object;
use ebpf_vm::Instance;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(object) = Object::parse(data) else { return };
    let Ok(instance) = Instance::new(&object) else { return };
    for p in instance.programs() {
        if let Ok(builder) = instance.vm_builder(&p.name) {
            if let Ok(vm) = builder.checked().budget(10_000).build() {
                let _ = vm.execute(&mut [0u8; 64]);
            }
        }
    }
});
