//! Execution speed of verified against checked mode, on the interpreter and on the JIT: the
//! clang-compiled programs of `benches/programs/` on the inputs `benches/jit.rs` uses. A verified
//! program runs with no runtime memory checks; a checked one checks every access.
//!
//! `cargo bench -p ebpf-vm-bench --bench modes -- --warm-up-time 1 --measurement-time 3`
//!
//! Every program is described to the verifier as what it is given: a fixed context of 4096 bytes
//! (`r1` points to exactly the input, whose bytes they read without a length guard). All four
//! builds of a program must compute the same result before anything is timed. A program the
//! verifier refuses is reported with the verifier's error and timed in checked mode only. After the
//! criterion run, a table gives the medians and checked over verified.

use std::fmt::Write as _;
use std::time::SystemTime;

use criterion::{BenchmarkId, Criterion, Throughput};
use ebpf_vm::elf::Object;
use ebpf_vm::{BuildError, Context, Engine, Instance, Vm};
use ebpf_vm_bench::medians;
use ebpf_vm_bench::programs::{input, INPUT_LEN, PROGRAMS};

/// Criterion's group for every program.
const GROUP: &str = "modes";

/// The engines, by the name the benchmark ids use.
const ENGINES: &[(&str, Engine)] = &[("interpreter", Engine::Interpreter), ("jit", Engine::Jit)];

/// The modes, by name: whether the program is verified (else checked).
const MODES: &[(&str, bool)] = &[("verified", true), ("checked", false)];

/// Builds `name`'s program for `engine`, verified or checked, against a fixed 4096-byte context (with
/// the maps of its own instance, for the map programs).
fn build(name: &str, elf: &[u8], engine: Engine, verified: bool) -> Result<Vm, BuildError> {
    let object = Object::parse(elf).expect("benchmark object loads");
    let instance = Instance::new(&object).expect("maps are created");
    let builder = instance.vm_builder(name).expect("program");
    let builder = builder.engine(engine).context(Context::fixed(INPUT_LEN as u32));
    if verified { builder.verified() } else { builder.checked() }.build()
}

/// Times every program that builds in each engine and mode; returns the verifier's refusals.
fn bench(c: &mut Criterion) -> Vec<(String, String)> {
    let mut refused = Vec::new();
    let mut g = c.benchmark_group(GROUP);
    g.throughput(Throughput::Elements(1));
    for &(name, elf) in PROGRAMS {
        // The reference result: the checked interpreter, as `benches/jit.rs` takes it.
        let want = build(name, elf, Engine::Interpreter, false).expect("builds").execute(&mut input(name));
        let want = want.expect("runs");
        let mut vms = Vec::new();
        for &(engine_name, engine) in ENGINES {
            for &(mode, verified) in MODES {
                match build(name, elf, engine, verified) {
                    Ok(vm) => {
                        assert_eq!(vm.execute(&mut input(name)), Ok(want), "{name}: {engine_name}, {mode}");
                        vms.push((format!("{engine_name}-{mode}"), vm));
                    }
                    Err(BuildError::Verify(e)) if verified => {
                        if engine == Engine::Interpreter {
                            refused.push((name.to_string(), e.to_string()));
                        }
                    }
                    Err(e) => panic!("{name}: {engine_name}, {mode}: {e}"),
                }
            }
        }
        // As in `benches/jit.rs`: one buffer, warm in the cache; `sort` gets its unsorted input back
        // before each run, in every engine and mode alike.
        let data = input(name);
        let reset = name == "sort";
        let mut buf = data.clone();
        for (id, vm) in &vms {
            g.bench_function(BenchmarkId::new(id, name), |b| {
                b.iter(|| {
                    if reset {
                        buf.copy_from_slice(&data);
                    }
                    vm.execute(&mut buf).expect("runs")
                })
            });
        }
    }
    g.finish();
    refused
}

/// The table of medians: per program and engine, verified, checked, and checked over verified.
fn summary(medians: &std::collections::BTreeMap<String, f64>, refused: &[(String, String)]) -> String {
    let mut t = String::new();
    writeln!(
        t,
        "{:<10} {:<12} {:>13} {:>13} {:>16}",
        "program", "engine", "verified µs", "checked µs", "checked/verified"
    )
    .unwrap();
    for &(name, _) in PROGRAMS {
        for &(engine, _) in ENGINES {
            let get = |mode: &str| medians.get(&format!("{GROUP}/{engine}-{mode}/{name}")).copied();
            let (verified, checked) = (get("verified"), get("checked"));
            let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
            let ratio = verified.zip(checked).map_or("-".to_string(), |(v, c)| format!("{:.2}x", c / v));
            writeln!(t, "{name:<10} {engine:<12} {:>13} {:>13} {ratio:>16}", fmt(verified), fmt(checked)).unwrap();
        }
    }
    for (name, error) in refused {
        writeln!(t, "{name}: refused by the verifier, timed checked only: {error}").unwrap();
    }
    t
}

fn main() {
    let dir = medians::criterion_dir();
    let since = SystemTime::now();
    let mut c = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3))
        .output_directory(&dir)
        .configure_from_args();
    let refused = bench(&mut c);
    c.final_summary();
    println!();
    print!("{}", summary(&medians::read(&dir, GROUP, since), &refused));
}
