//! The JIT against rbpf's JITs (x86_64 template JIT, and its Cranelift JIT), against this crate's
//! interpreter, and against the same C compiled natively, on the clang-compiled programs of
//! `benches/programs/`: hashing, sorting, packet parsing, arithmetic, a sieve, byte copies and
//! compares, a switch, CRC-32, multiplication and division, hash and array maps, bpf-to-bpf calls and
//! an empty program. rbpf is left out of the programs it refuses (maps; calls for its Cranelift JIT).
//! Also: compile time per BPF instruction, and the cost of one `execute` of a trivial program.
//!
//! `cargo bench -p ebpf-vm-bench --bench jit` (the native baseline comes with the default
//! `native-baseline` feature; with `--no-default-features` it is left out). `benches/compare.rs` runs
//! the same programs on every peer in one table.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ebpf_vm::elf::Object;
use ebpf_vm::{Engine, Instance, Program, Vm};

#[cfg(feature = "native-baseline")]
use ebpf_vm_bench::native;
use ebpf_vm_bench::programs::{input, PROGRAMS};

fn bench_programs(c: &mut Criterion) {
    for &(name, elf) in PROGRAMS {
        let object = Object::parse(elf).expect("benchmark object loads");
        // The instance gives the map programs their maps; each build below gets the same ones.
        let instance = Instance::new(&object).expect("maps are created");
        let builder = || instance.vm_builder(name).expect("program");
        let program = object.program(name).expect("program").program.clone();
        let bytes = program.to_bytes();
        let jit = builder().engine(Engine::Jit).checked().build().expect("JIT compiles");
        // SAFETY: the benchmark programs access only the first 4096 bytes of their 4096-byte input, their
        // stack and their map values (checked mode runs the same programs on the same input below
        // without an error).
        let jit_unchecked = unsafe { builder().engine(Engine::Jit).unchecked() }.build().expect("JIT");
        let interp = builder().checked().build().expect("builds");
        // rbpf has no maps and its Cranelift JIT no bpf-to-bpf calls: where it refuses a program, that
        // engine is left out of the program's group.
        let rbpf_jit = rbpf::EbpfVmRaw::new(Some(&bytes)).and_then(|mut vm| vm.jit_compile().map(|()| vm));
        let rbpf_cl = rbpf::EbpfVmRaw::new(Some(&bytes)).and_then(|mut vm| vm.cranelift_compile().map(|()| vm));
        let rbpf_jit = rbpf_jit.map_err(|e| println!("note: {name}: rbpf JIT left out: {e}")).ok();
        let rbpf_cl = rbpf_cl.map_err(|e| println!("note: {name}: rbpf Cranelift left out: {e}")).ok();

        // Every engine must compute the same result before anything is timed.
        let want = interp.execute(&mut input(name)).expect("runs");
        assert_eq!(jit.execute(&mut input(name)), Ok(want), "{name}: JIT");
        assert_eq!(jit_unchecked.execute(&mut input(name)), Ok(want), "{name}: unchecked JIT");
        if let Some(vm) = &rbpf_jit {
            // SAFETY: rbpf's JIT runs the program on a buffer of the size it expects.
            assert_eq!(
                unsafe { vm.execute_program_jit(&mut input(name)) }.expect("rbpf JIT runs"),
                want,
                "{name}: rbpf JIT"
            );
        }
        if let Some(vm) = &rbpf_cl {
            assert_eq!(
                vm.execute_program_cranelift(&mut input(name)).expect("rbpf Cranelift runs"),
                want,
                "{name}: rbpf Cranelift"
            );
        }
        #[cfg(feature = "native-baseline")]
        assert_eq!(native::get(name)(&mut input(name)), want, "{name}: native");

        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Elements(1));
        let data = input(name);
        // The input stays in one buffer, warm in the cache, as a host's packet or record would be (a
        // fresh buffer per iteration would time cache misses that every engine pays alike). Only
        // `sort` and `copy` write their input: `sort` gets the unsorted data back before each run, for
        // every engine (`copy` writes what it writes again: its output is its input's fixed point).
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
        if let Some(vm) = &rbpf_jit {
            // SAFETY: as above.
            run("rbpf-jit", &mut |m| unsafe { vm.execute_program_jit(m) }.expect("runs"));
        }
        if let Some(vm) = &rbpf_cl {
            run("rbpf-cranelift", &mut |m| vm.execute_program_cranelift(m).expect("runs"));
        }
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
        let instance = Instance::new(&object).expect("maps are created");
        let program = object.program(name).expect("program").program.clone();
        g.throughput(Throughput::Elements(program.slot_count() as u64));
        g.bench_function(BenchmarkId::new("jit", name), |b| {
            b.iter(|| {
                instance.vm_builder(name).expect("program").engine(Engine::Jit).checked().build().expect("compiles")
            })
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
