//! Quickstart: load a BPF object compiled by clang, verify it, compile it, run it, and read its maps.
//!
//! `tests/fixtures/hash_count.c` counts the bytes of its input by value in a hash map and keeps running
//! totals in global variables. Run with `cargo run --release --example quickstart`.

use std::sync::Arc;

use ebpf_vm::elf::Object;
use ebpf_vm::maps::TypedHashMap;
use ebpf_vm::{Engine, Instance};

/// The object, as `clang-19 -O2 -g -target bpf` built it from `tests/fixtures/hash_count.c`.
const OBJECT: &[u8] = include_bytes!("../tests/fixtures/hash_count.o");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let object = Object::parse(OBJECT)?;
    println!(
        "loaded {} program(s) and {} map(s), license {:?}",
        object.programs().len(),
        object.maps().len(),
        object.license()
    );

    // The maps and global variables, created within the default memory budget.
    let instance = Instance::new(&object)?;

    // The best engine this build has: the Cranelift JIT. Building verifies the program first (every
    // memory access in bounds, nothing uninitialised read, helpers called with the right arguments,
    // every loop ending), so the compiled code runs with no runtime checks.
    let vm = instance.vm_builder("count_bytes")?.engine(Engine::Jit).build()?;
    println!("count_bytes: verified, {} slots, running as {:?} code", vm.program().slot_count(), vm.mode());
    let mut input = b"hello, eBPF world".to_vec();
    let r0 = vm.execute(&mut input)?;
    println!(
        "count_bytes({:?}) returned {r0} (total bytes seen, times the weight in .rodata)",
        String::from_utf8_lossy(&input)
    );

    let counts = TypedHashMap::<u32, u64>::new(Arc::clone(instance.map("counts").ok_or("no map `counts`")?))?;
    let mut entries = counts.entries();
    entries.sort();
    println!("map `counts` ({} entries):", entries.len());
    for (byte, n) in entries {
        println!("  {:?} => {n}", char::from(byte as u8));
    }
    for name in [".data", ".bss"] {
        let value = instance.map(name).and_then(|m| m.get(&0u32.to_ne_bytes(), 0)).ok_or("no global data")?;
        let bytes: Vec<String> = value.iter().map(|b| format!("{b:#04x}")).collect();
        println!("global data {name} ({} bytes): [{}]", value.len(), bytes.join(", "));
    }
    Ok(())
}
