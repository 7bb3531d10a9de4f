//! Quickstart: assemble a small real program, build a `Vm`, and run it on a buffer.
//!
//! The program computes the 32-bit FNV-1a hash of its input and, through a host helper, reports how
//! many bytes it read. Run with `cargo run --release --example quickstart`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ebpf_vm::{Helper, HelperSig, Program, Vm};

const FNV1A: &str = "
    # r1 = input, r2 = length
    mov %r6, %r1              # cursor
    mov %r7, %r2              # bytes left
    mov32 %r0, 0x811c9dc5     # FNV offset basis
loop:
    jeq %r7, 0, done
    ldxb %r3, [%r6+0]
    xor32 %r0, %r3
    mul32 %r0, 0x01000193     # FNV prime
    add %r6, 1
    sub %r7, 1
    ja loop
done:
    mov %r6, %r0              # keep the hash across the helper call
    mov %r1, %r2              # report the length to the host
    call 0x1000
    mov %r0, %r6
    exit
";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let program = Program::from_asm(FNV1A)?;
    println!("program ({} instructions):\n{}", program.instructions().len(), program.disassemble());

    // A host helper, id 0x1000: the program reports the length it hashed.
    let seen = Arc::new(AtomicU64::new(0));
    let seen_in_helper = Arc::clone(&seen);
    let report = Helper::new(0x1000, "report_len", HelperSig::scalars(1), move |_, args| {
        seen_in_helper.store(args[0], Ordering::Relaxed);
        Ok(0)
    });

    let vm = Vm::builder(program).helper(report).budget(1_000_000).build()?;
    let mut input = *b"hello, eBPF";
    let hash = vm.execute(&mut input)?;

    println!("input:        {:?}", std::str::from_utf8(&input)?);
    println!("fnv1a-32:     {hash:#010x}");
    println!("bytes hashed: {}", seen.load(Ordering::Relaxed));
    assert_eq!(hash, fnv1a(&input) as u64, "the program agrees with a Rust FNV-1a");
    Ok(())
}

/// The same hash in Rust, to check the program's answer.
fn fnv1a(data: &[u8]) -> u32 {
    data.iter().fold(0x811c9dc5u32, |h, &b| (h ^ b as u32).wrapping_mul(0x01000193))
}
