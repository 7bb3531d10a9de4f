//! The JIT against rbpf's JITs (x86_64 template JIT, and its Cranelift JIT), against this crate's
//! interpreter, and against the same C compiled natively, on clang-compiled programs: hashing, sorting,
//! packet parsing, arithmetic. Also: compile time per BPF instruction, and the cost of one `execute`
//! of a trivial program.
//!
//! `CC=clang-19 cargo bench -p ebpf-vm-bench --features native-baseline --bench jit` (without the feature, the native
//! baseline is left out).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ebpf_vm::elf::Object;
use ebpf_vm::{Engine, Program, Vm};

#[cfg(feature = "native-baseline")]
use ebpf_vm_bench::native;
use ebpf_vm_bench::programs::{input, PROGRAMS};

fn bench_programs(c: &mut Criterion) {
    for &(name, elf) in PROGRAMS {
        let object = Object::parse(elf).expect("benchmark object loads");
        let program = object.program(name).expect("program").program.clone();
        let bytes = program.to_bytes();
        let jit = Vm::builder(program.clone()).engine(Engine::Jit).checked().build().expect("JIT compiles");
        // SAFETY: the benchmark programs access only the first 4096 bytes of their 4096-byte input
        // (checked mode runs the same programs on the same input above without an error).
        let jit_unchecked =
            unsafe { Vm::builder(program.clone()).engine(Engine::Jit).unchecked() }.build().expect("JIT");
        let interp = Vm::builder(program.clone()).checked().build().expect("builds");
        let mut rbpf_jit = rbpf::EbpfVmRaw::new(Some(&bytes)).expect("rbpf accepts the program");
        rbpf_jit.jit_compile().expect("rbpf JIT compiles");
        let mut rbpf_cl = rbpf::EbpfVmRaw::new(Some(&bytes)).expect("rbpf accepts the program");
        rbpf_cl.cranelift_compile().expect("rbpf Cranelift compiles");

        // Every engine must compute the same result before anything is timed.
        let want = interp.execute(&mut input(name)).expect("runs");
        assert_eq!(jit.execute(&mut input(name)), Ok(want), "{name}: JIT");
        assert_eq!(jit_unchecked.execute(&mut input(name)), Ok(want), "{name}: unchecked JIT");
        // SAFETY: rbpf's JIT runs the program on a buffer of the size it expects.
        assert_eq!(
            unsafe { rbpf_jit.execute_program_jit(&mut input(name)) }.expect("rbpf JIT runs"),
            want,
            "{name}: rbpf JIT"
        );
        assert_eq!(
            rbpf_cl.execute_program_cranelift(&mut input(name)).expect("rbpf Cranelift runs"),
            want,
            "{name}: rbpf Cranelift"
        );
        #[cfg(feature = "native-baseline")]
        assert_eq!(native::get(name)(&mut input(name)), want, "{name}: native");

        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Elements(1));
        let data = input(name);
        // The input stays in one buffer, warm in the cache, as a host's packet or record would be (a
        // fresh buffer per iteration would time cache misses that every engine pays alike). Only
        // `sort` writes its input: it gets the unsorted data back before each run, for every engine.
        let reset = name == "sort";
        let mut buf = data.clone();
        let mut run = |id: &str, f: &mut dyn FnMut(&mut Vec<u8>) -> u64| {
            g.bench_function(BenchmarkId::from_parameter(id), |b| {
                b.iter(|| {
                    if reset {
                        buf.copy_from_slice(&data);
                    }
                    f(&mut buf)
                })
            });
        };
        run("ebpf-vm-jit-checked", &mut |m| jit.execute(m).expect("runs"));
        run("ebpf-vm-jit-unchecked", &mut |m| jit_unchecked.execute(m).expect("runs"));
        run("ebpf-vm-interpreter", &mut |m| interp.execute(m).expect("runs"));
        // SAFETY: as above.
        run("rbpf-jit", &mut |m| unsafe { rbpf_jit.execute_program_jit(m) }.expect("runs"));
        run("rbpf-cranelift", &mut |m| rbpf_cl.execute_program_cranelift(m).expect("runs"));
        #[cfg(feature = "native-baseline")]
        {
            let f = native::get(name);
            run("native-c", &mut |m| f(m));
        }
        g.finish();
    }
}

fn bench_compile(c: &mut Criterion) {
    let mut g = c.benchmark_group("compile");
    for &(name, elf) in PROGRAMS {
        let object = Object::parse(elf).expect("loads");
        let program = object.program(name).expect("program").program.clone();
        g.throughput(Throughput::Elements(program.slot_count() as u64));
        g.bench_function(BenchmarkId::new("jit", name), |b| {
            b.iter(|| Vm::builder(program.clone()).engine(Engine::Jit).checked().build().expect("compiles"))
        });
    }
    g.finish();
}

fn bench_call(c: &mut Criterion) {
    let trivial = Program::from_asm("mov %r0, 1\nexit").expect("assembles");
    let bytes = trivial.to_bytes();
    let jit = Vm::builder(trivial.clone()).engine(Engine::Jit).checked().build().expect("JIT");
    let interp = Vm::builder(trivial).checked().build().expect("builds");
    let mut rbpf_jit = rbpf::EbpfVmRaw::new(Some(&bytes)).expect("rbpf");
    rbpf_jit.jit_compile().expect("rbpf JIT");
    let mut g = c.benchmark_group("execute-trivial");
    let mut mem = [0u8; 64];
    g.bench_function("ebpf-vm-jit", |b| b.iter(|| jit.execute(std::hint::black_box(&mut mem)).expect("runs")));
    g.bench_function("ebpf-vm-interpreter", |b| {
        b.iter(|| interp.execute(std::hint::black_box(&mut mem)).expect("runs"))
    });
    // SAFETY: the trivial program touches no memory.
    g.bench_function("rbpf-jit", |b| {
        b.iter(|| unsafe { rbpf_jit.execute_program_jit(std::hint::black_box(&mut mem)) }.expect("runs"))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = bench_programs, bench_compile, bench_call
}
criterion_main!(benches);
