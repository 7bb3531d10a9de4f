//! Runs one benchmark program a given number of times on one of ebpf-vm's engines, for counting
//! instructions where timers are noisy:
//!
//! ```text
//! cargo build --release -p ebpf-vm-bench --example repeat
//! valgrind --tool=callgrind target/release/examples/repeat interp-verified sieve 100
//! ```
//!
//! Engines: `interp-verified`, `interp-checked`, `jit-verified`, `jit-checked`. It prints the result,
//! which must be the same on every engine. `build-jit-verified` and `build-interp-verified` build
//! (verify and compile) the program that many times instead, and run it once; `build-jit-unchecked`
//! compiles it without verifying.

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
    let (engine, verified, builds) = match engine.as_str() {
        "build-jit-unchecked" => (Engine::Jit, false, true),
        "build-jit-verified" => (Engine::Jit, true, true),
        "build-interp-verified" => (Engine::Interpreter, true, true),
        "interp-verified" => (Engine::Interpreter, true, false),
        "interp-checked" => (Engine::Interpreter, false, false),
        "jit-verified" => (Engine::Jit, true, false),
        "jit-checked" => (Engine::Jit, false, false),
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
    let build = || {
        let builder =
            instance.vm_builder(name).expect("program").engine(engine).context(Context::fixed(INPUT_LEN as u32));
        if builds && !verified {
            // SAFETY: the benchmark programs are verified by the other engines; this compiles them as the prepare benchmark does.
            unsafe { builder.unchecked() }.build().expect("builds")
        } else if verified {
            builder.verified().build().expect("builds")
        } else {
            builder.checked().build().expect("builds")
        }
    };
    let mut vm = build();
    let mut mem = input(name);
    let mut result = 0;
    if builds {
        for _ in 0..times {
            vm = build();
        }
        result = vm.execute(&mut mem).expect("runs");
    } else {
        for _ in 0..times {
            result = vm.execute(&mut mem).expect("runs");
        }
    }
    println!("{result:#x}");
}
