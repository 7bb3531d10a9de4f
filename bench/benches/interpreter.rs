//! Loop-heavy programs on this crate's interpreter (checked mode) and on rbpf's interpreter, side by
//! side in the same run. Both run the very same bytecode on the same input, and must agree on r0.
//!
//! `cargo bench -p ebpf-vm-bench --bench interpreter`; the ratio of the medians is the ratio per executed instruction.
//! rbpf's `EbpfVmRaw` does not pass the buffer's length in r2, so the programs use fixed sizes.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ebpf_vm::{Program, Vm};

/// Sum of 0..10000 with a multiply-accumulate: pure ALU and branches.
const ARITH: &str = "
    mov %r0, 0
    mov %r1, 0
loop:
    mov %r2, %r1
    mul %r2, 3
    xor %r2, 0x55
    add %r0, %r2
    rsh %r2, 2
    sub %r0, %r2
    add %r1, 1
    jlt %r1, 10000, loop
    exit
";

/// FNV-1a over the 1500-byte input: a byte load, xor and 32-bit multiply per byte.
const FNV1A: &str = "
    mov32 %r0, 0x811c9dc5
    mov %r3, %r1
    add %r3, 1500
loop:
    jge %r1, %r3, done
    ldxb %r4, [%r1]
    xor32 %r0, %r4
    mul32 %r0, 0x01000193
    add %r1, 1
    ja loop
done:
    exit
";

/// Ones'-complement (Internet) checksum over the 1500-byte input, 16 bits at a time.
const CHECKSUM: &str = "
    mov %r0, 0
    mov %r3, %r1
    add %r3, 1500
loop:
    mov %r4, %r1
    add %r4, 2
    jgt %r4, %r3, fold
    ldxh %r5, [%r1]
    be16 %r5
    add %r0, %r5
    mov %r1, %r4
    ja loop
fold:
    mov %r5, %r0
    rsh %r5, 16
    and %r0, 0xffff
    add %r0, %r5
    mov %r5, %r0
    rsh %r5, 16
    jne %r5, 0, fold
    xor %r0, 0xffff
    exit
";

/// Bubble sort of the input as 128 64-bit words, in place: loads, stores, compares.
const BUBBLE_SORT: &str = "
    mov %r6, 128
outer:
    jle %r6, 1, done
    mov %r7, %r1
    mov %r8, 1
inner:
    jge %r8, %r6, next
    ldxdw %r3, [%r7]
    ldxdw %r4, [%r7+8]
    jle %r3, %r4, noswap
    stxdw [%r7], %r4
    stxdw [%r7+8], %r3
noswap:
    add %r7, 8
    add %r8, 1
    ja inner
next:
    sub %r6, 1
    ja outer
done:
    ldxdw %r0, [%r1]
    exit
";

/// Counts primes below 2000 by trial division: division and modulo in a nested loop.
const PRIMES: &str = "
    mov %r0, 0
    mov %r1, 2
outer:
    jge %r1, 2000, done
    mov %r2, 2
inner:
    mov %r3, %r2
    mul %r3, %r2
    jgt %r3, %r1, prime
    mov %r4, %r1
    mod %r4, %r2
    jeq %r4, 0, composite
    add %r2, 1
    ja inner
prime:
    add %r0, 1
composite:
    add %r1, 1
    ja outer
done:
    exit
";

fn input(name: &str) -> Vec<u8> {
    match name {
        "bubble_sort" => (0..128u64).rev().flat_map(|v| (v * 2654435761 % 1000).to_le_bytes()).collect(),
        _ => (0..1500u32).map(|i| (i * 31 % 251) as u8).collect(),
    }
}

fn bench(c: &mut Criterion) {
    let programs =
        [("arith", ARITH), ("fnv1a", FNV1A), ("checksum", CHECKSUM), ("bubble_sort", BUBBLE_SORT), ("primes", PRIMES)];
    for (name, text) in programs {
        let program = Program::from_asm(text).expect("benchmark program assembles");
        let bytes = program.to_bytes();
        let vm = Vm::builder(program).checked().build().expect("builds");
        let rbpf_vm = rbpf::EbpfVmRaw::new(Some(&bytes)).expect("rbpf accepts the program");

        let mut ours = input(name);
        let mut theirs = input(name);
        let (a, b) = (vm.execute(&mut ours).expect("runs"), rbpf_vm.execute_program(&mut theirs).expect("rbpf runs"));
        assert_eq!(a, b, "{name}: the two interpreters disagree");

        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("ebpf-vm", "interpreter-checked"), |bench| {
            bench.iter_batched_ref(
                || input(name),
                |mem| vm.execute(mem).expect("runs"),
                criterion::BatchSize::SmallInput,
            )
        });
        group.bench_function(BenchmarkId::new("rbpf", "interpreter"), |bench| {
            bench.iter_batched_ref(
                || input(name),
                |mem| rbpf_vm.execute_program(mem).expect("runs"),
                criterion::BatchSize::SmallInput,
            )
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3)).warm_up_time(std::time::Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
