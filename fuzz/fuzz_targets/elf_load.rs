//! Any bytes as a BPF object: parsing must not panic (the build has overflow checks with `-a`), and
//! what parses must instantiate (within the default map budget), build and run (checked, with a budget)
//! to `Ok` or a typed error. `.kconfig` externs get a value of their kind (and, every other input, a
//! value the input picks, right or wrong). Seed the corpus with `tests/fixtures/*.o`.
#![no_main]

use ebpf_vm::elf::{Kconfig, KconfigKind, Object};
use ebpf_vm::Instance;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut object) = Object::parse(data) else { return };
    let mut config = Kconfig::new();
    let pick = data.last().copied().unwrap_or(0);
    for e in object.kconfig_externs() {
        let value = match (e.kind, pick % 4) {
            (_, 3) => ["m", "-1", "0x", "\"", "99999999999999999999", "y"][(pick as usize / 4) % 6].to_string(),
            (KconfigKind::Bool | KconfigKind::Char, _) => "y".into(),
            (KconfigKind::Tristate, _) => "m".into(),
            (KconfigKind::Int { .. }, _) => pick.to_string(),
            (KconfigKind::Str, _) => "\"a long host name\"".into(),
        };
        config.set(e.name.clone(), value);
    }
    let _ = object.set_kconfig(&config);
    let Ok(instance) = Instance::new(&object) else { return };
    for p in instance.programs() {
        if let Ok(builder) = instance.vm_builder(&p.name) {
            if let Ok(vm) = builder.checked().budget(10_000).build() {
                let _ = vm.execute(&mut [0u8; 64]);
            }
        }
    }
});
