//! The 14 programs of the comparison benchmark (`bench/benches/programs/`, C compiled by clang-19) in
//! the library's own suite: each verifies for the fixed 4096-byte context the benchmark gives it, and
//! every build (interpreter and JIT, verified and checked) returns the result the same C returns
//! natively (recorded below from `cargo bench -p ebpf-vm-bench --bench compare`, which checks it
//! against the native build on every run), twice in a row (the map programs' maps outlive a run).

#[path = "../bench/src/programs.rs"]
mod programs;

use ebpf_vm::elf::Object;
use ebpf_vm::{Context, Engine, Instance};
use programs::{input, INPUT_LEN, PROGRAMS};

/// What each program returns on its benchmark input.
const EXPECTED: &[(&str, u64)] = &[
    ("fnv1a", 0x560e_2643),
    ("sort", 0xffd1_05ca),
    ("packets", 0xc150),
    ("arith", 0x347e7),
    ("sieve", 0x1f6),
    ("copy", 0xe709_b61d),
    ("compare", 0x4_0000_0bae),
    ("dispatch", 0x54af_6558_a314_3f0e),
    ("crc32", 0xc13a_3255),
    ("muldiv", 0x1318_0811_34fb_36ae),
    ("hashmap", 0xde_0000_040a),
    ("arraymap", 0x24_1813),
    ("calls", 0xd363_3106_8be4_ec59),
    ("trivial", 0),
];

#[test]
fn every_build_of_every_benchmark_program_returns_the_native_result() {
    let engines = [
        Engine::Interpreter,
        #[cfg(feature = "jit")]
        Engine::Jit,
    ];
    let mut ran = 0;
    for &(name, elf) in PROGRAMS {
        let object = Object::parse(elf).unwrap_or_else(|e| panic!("{name}: {e}"));
        let instance = Instance::new(&object).unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = EXPECTED.iter().find(|(n, _)| *n == name).map(|&(_, v)| v);
        for engine in engines {
            for verified in [true, false] {
                let builder = instance.vm_builder(name).expect("program").engine(engine);
                let builder = builder.context(Context::fixed(INPUT_LEN as u32));
                let vm = if verified { builder.verified() } else { builder.checked() }
                    .build()
                    .unwrap_or_else(|e| panic!("{name}: {engine:?}, verified {verified}: {e}"));
                for run in 1..=2 {
                    let got = vm.execute(&mut input(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
                    assert_eq!(Some(got), want, "{name}: {engine:?}, verified {verified}, run {run}");
                    ran += 1;
                }
            }
        }
    }
    println!("{ran} runs");
    assert_eq!(ran, PROGRAMS.len() * engines.len() * 4);
}
