//! Every benchmark program computes one result on its input, whatever runs it: verified and checked,
//! on the interpreter and on the JIT, each run twice (the map programs' maps outlive a run, and are
//! shared by all the builds of a program), and with the `native-baseline` feature the same C compiled
//! natively.
//!
//! The programs are built as `benches/modes.rs` builds them: from their object through an
//! [`Instance`] (which gives the map programs their maps), described to the verifier as what they are
//! given, a fixed context of 4096 bytes (they read the input without a length guard, as rbpf passes
//! no length). A verifier refusal of any program fails the test; the other builds still run, and the
//! test prints what each program returned.

use ebpf_vm::elf::Object;
use ebpf_vm::{Context, Engine, Instance};
#[cfg(feature = "native-baseline")]
use ebpf_vm_bench::native;
use ebpf_vm_bench::programs::{input, INPUT_LEN, PROGRAMS};

const ENGINES: &[Engine] = &[Engine::Interpreter, Engine::Jit];

/// What every build of one program returned on each run, and what failed (a build refused, a run
/// stopped).
fn run_all(name: &str, elf: &[u8]) -> (Vec<(String, u64)>, Vec<String>) {
    let (mut results, mut errors) = (Vec::new(), Vec::new());
    let instance = match Object::parse(elf).map(|object| Instance::new(&object)) {
        Ok(Ok(instance)) => instance,
        Ok(Err(e)) => return (results, vec![format!("instance: {e}")]),
        Err(e) => return (results, vec![format!("object: {e}")]),
    };
    for &engine in ENGINES {
        for verified in [true, false] {
            let mode = if verified { "verified" } else { "checked" };
            let builder = match instance.vm_builder(name) {
                Ok(b) => b.engine(engine).context(Context::fixed(INPUT_LEN as u32)),
                Err(e) => return (results, vec![e.to_string()]),
            };
            let vm = match if verified { builder.verified() } else { builder.checked() }.build() {
                Ok(vm) => vm,
                Err(e) => {
                    errors.push(format!("{engine:?}, {mode}: {e}"));
                    continue;
                }
            };
            for run in 1..=2 {
                match vm.execute(&mut input(name)) {
                    Ok(r) => results.push((format!("{engine:?} {mode} run {run}"), r)),
                    Err(e) => errors.push(format!("{engine:?}, {mode}, run {run}: {e}")),
                }
            }
        }
    }
    #[cfg(feature = "native-baseline")]
    for run in 1..=2 {
        results.push((format!("native run {run}"), native::get(name)(&mut input(name))));
    }
    (results, errors)
}

#[test]
fn every_build_of_every_program_agrees() {
    let mut failures = Vec::new();
    let mut ran = 0;
    for &(name, elf) in PROGRAMS {
        let (results, errors) = run_all(name, elf);
        let Some((first, want)) = results.first() else {
            failures.push(format!("{name}: nothing ran: {}", errors.join("; ")));
            continue;
        };
        let differ: Vec<_> = results.iter().filter(|(_, r)| r != want).collect();
        println!(
            "{name:<10} {:>4} instructions, {} runs: {}",
            len(elf, name),
            results.len(),
            if differ.is_empty() { format!("all {want:#x}") } else { "differ".to_string() }
        );
        if !differ.is_empty() {
            failures.push(format!("{name}: {first} returned {want:#x}, but {differ:x?}"));
        }
        failures.extend(errors.iter().map(|e| format!("{name}: {e}")));
        if differ.is_empty() && errors.is_empty() {
            ran += 1;
        }
    }
    println!("{ran} of {} programs ran in every build and agreed", PROGRAMS.len());
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// Instruction slots of a program, its subprograms included.
fn len(elf: &[u8], name: &str) -> usize {
    let object = Object::parse(elf).expect("parsed above");
    object.program(name).expect("built above").program.slot_count()
}
