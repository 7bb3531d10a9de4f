//! Runs one benchmark program a given number of times on one of ebpf-vm's engines, for counting
//! instructions where timers are noisy:
//!
//! ```text
//! cargo build --release -p ebpf-vm-bench --example repeat
//! valgrind --tool=callgrind target/release/examples/repeat interp-verified sieve 100
//! ```
//!
//! Engines: `interp-verified`, `interp-checked`, `jit-verified`, `jit-checked`. It prints the result,
//! which must be the same on every engine.

use ebpf_vm::elf::Object;
use ebpf_vm::{Context, Engine, Instance};
use ebpf_vm_bench::programs::{input, INPUT_LEN, PROGRAMS};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage =
        "usage: repeat ENGINE PROGRAM TIMES (ENGINE: interp-verified, interp-checked, jit-verified, jit-checked)";
    let [_, engine, name, times] = args.as_slice() else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let (engine, verified) = match engine.as_str() {
        "interp-verified" => (Engine::Interpreter, true),
        "interp-checked" => (Engine::Interpreter, false),
        "jit-verified" => (Engine::Jit, true),
        "jit-checked" => (Engine::Jit, false),
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    let Some((_, elf)) = PROGRAMS.iter().find(|(n, _)| n == name) else {
        eprintln!("no program `{name}`");
        std::process::exit(2);
    };
    let Ok(times) = times.parse::<u32>() else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let object = Object::parse(elf).expect("benchmark object loads");
    let instance = Instance::new(&object).expect("maps are created");
    let builder = instance.vm_builder(name).expect("program").engine(engine).context(Context::fixed(INPUT_LEN as u32));
    let vm = if verified { builder.verified() } else { builder.checked() }.build().expect("builds");
    let mut mem = input(name);
    let mut result = 0;
    for _ in 0..times {
        result = vm.execute(&mut mem).expect("runs");
    }
    println!("{result:#x}");
}
