//! The comparison: every benchmark program of `benches/programs/` on every engine, side by side in one
//! run, with the same C compiled natively as the baseline; then a table of medians and ratios to native,
//! and a table of what it costs to get a program ready (load, verify, compile).
//!
//! `cargo bench -p ebpf-vm-bench --bench compare` (criterion's options follow `--`, e.g. a name filter
//! or `--measurement-time 5`). With `UBPF_DIR` naming a ubpf tree built with its own CMake, ubpf's
//! interpreter and JIT are columns too (see the README); without it the bench says they are skipped.
//!
//! Engines, and what each checks at run time:
//! - `native`: the C of each program, compiled into this benchmark by the host's C compiler at -O2
//!   (`$CC`, else clang-19 if installed, else `cc`), called through a function pointer.
//! - ebpf-vm's JIT and interpreter, each **verified** (the verifier proved every access in bounds; no
//!   checks at run time) and **checked** (every access checked against the regions it may reach).
//! - rbpf 0.4.1: its x86_64 JIT (**unchecked**: no memory checks) and its interpreter (**checked**).
//! - ubpf: its JIT (**unchecked**: ubpf's bounds checks apply to its interpreter only) and its
//!   interpreter (**checked**, as it ships).
//!
//! Every engine's result is compared with the native one before anything is timed, and again on every
//! timed call. A program an engine cannot run (rbpf has no maps; ubpf none here) leaves its cell empty,
//! with the reason printed. Every program is described to our verifier as what it is given: a fixed
//! context of 4096 bytes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use criterion::{BenchmarkId, Criterion};
use ebpf_vm::elf::Object;
use ebpf_vm::link::Linked;
use ebpf_vm::{Context, Engine, Instance, Verifier, Vm};
use ebpf_vm_bench::programs::{input, INPUT_LEN, PROGRAMS};
use ebpf_vm_bench::{medians, native};

/// Criterion's group of the run times, and of the preparation times.
const RUN: &str = "compare";
const PREPARE: &str = "prepare";

/// One column of the table: its benchmark id, its header, and what it checks at run time.
struct Column {
    id: &'static str,
    header: &'static str,
    mode: &'static str,
}

/// The columns, in the table's order.
const COLUMNS: &[Column] = &[
    Column { id: "native", header: "native C", mode: "-O2" },
    Column { id: "ebpf-vm-jit-verified", header: "ebpf-vm JIT", mode: "verified" },
    Column { id: "ebpf-vm-jit-checked", header: "ebpf-vm JIT", mode: "checked" },
    Column { id: "rbpf-jit", header: "rbpf JIT", mode: "unchecked" },
    Column { id: "ubpf-jit", header: "ubpf JIT", mode: "unchecked" },
    Column { id: "ebpf-vm-interp-verified", header: "ebpf-vm interp", mode: "verified" },
    Column { id: "ebpf-vm-interp-checked", header: "ebpf-vm interp", mode: "checked" },
    Column { id: "rbpf-interp", header: "rbpf interp", mode: "checked" },
    Column { id: "ubpf-interp", header: "ubpf interp", mode: "checked" },
];

/// Something that runs one program on a 4096-byte input and returns `r0`.
type Runner = Box<dyn FnMut(&mut [u8]) -> Result<u64, String>>;

/// Builds `name` from `object` for our `engine`, verified or checked, against a fixed 4096-byte context.
fn ours(instance: &Instance, name: &str, engine: Engine, verified: bool) -> Result<Vm, String> {
    let builder = instance.vm_builder(name).map_err(|e| e.to_string())?;
    let builder = builder.engine(engine).context(Context::fixed(INPUT_LEN as u32));
    if verified { builder.verified() } else { builder.checked() }.build().map_err(|e| e.to_string())
}

/// Every engine's runner for one program, by column id; or why that engine cannot run it. `want` is the
/// native result on the benchmark input.
fn runners(name: &str, elf: &[u8], want: u64) -> Vec<(&'static str, Result<Runner, String>)> {
    let object = Object::parse(elf).expect("benchmark object loads");
    // One instance: every build of a map program shares its maps (the programs clear what they use).
    let instance = Instance::new(&object).expect("maps are created");
    // rbpf's VMs borrow their bytecode for as long as they live: the benchmark's lifetime.
    let bytes: &'static [u8] = object.program(name).expect("program").program.to_bytes().leak();
    let mut out: Vec<(&'static str, Result<Runner, String>)> = Vec::new();
    let f = native::get(name);
    out.push(("native", Ok(Box::new(move |m: &mut [u8]| Ok(f(m))))));
    for (id, engine, verified) in [
        ("ebpf-vm-jit-verified", Engine::Jit, true),
        ("ebpf-vm-jit-checked", Engine::Jit, false),
        ("ebpf-vm-interp-verified", Engine::Interpreter, true),
        ("ebpf-vm-interp-checked", Engine::Interpreter, false),
    ] {
        let vm = ours(&instance, name, engine, verified);
        out.push((id, vm.map(|vm| Box::new(move |m: &mut [u8]| vm.execute(m).map_err(|e| e.to_string())) as Runner)));
    }
    // rbpf has no maps: it refuses the map programs' `lddw` of a map (or their helper calls). Its JIT
    // checks no access: it runs only what rbpf's interpreter, which checks every access, ran first on
    // the same input with the native result.
    let rbpf_interp = rbpf::EbpfVmRaw::new(Some(bytes)).map_err(|e| e.to_string());
    let rbpf_safe = match &rbpf_interp {
        Ok(vm) => match vm.execute_program(&mut input(name)) {
            Ok(r) if r == want => Ok(()),
            Ok(r) => Err(format!("rbpf's interpreter returned {r:#x}, native C {want:#x}")),
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(e.clone()),
    };
    let rbpf_jit = rbpf_safe.and_then(|()| {
        let mut vm = rbpf::EbpfVmRaw::new(Some(bytes)).map_err(|e| e.to_string())?;
        vm.jit_compile().map_err(|e| e.to_string())?;
        Ok(vm)
    });
    out.push((
        "rbpf-jit",
        rbpf_jit.map(|vm| {
            Box::new(move |m: &mut [u8]| {
                // SAFETY: rbpf's interpreter ran this program on this input (the benchmark input, which
                // is all `m` ever holds) and checked every access: the program reads and writes only
                // its input and its stack.
                unsafe { vm.execute_program_jit(m) }.map_err(|e| e.to_string())
            }) as Runner
        }),
    ));
    out.push((
        "rbpf-interp",
        rbpf_interp.map(|vm| Box::new(move |m: &mut [u8]| vm.execute_program(m).map_err(|e| e.to_string())) as Runner),
    ));
    ubpf_runners(bytes, name, want, &mut out);
    out
}

#[cfg(ubpf)]
fn ubpf_runners(bytes: &[u8], name: &str, want: u64, out: &mut Vec<(&'static str, Result<Runner, String>)>) {
    use ebpf_vm_bench::ubpf::Ubpf;
    // As rbpf's: ubpf's JIT checks no access, so it runs only what ubpf's interpreter, which checks
    // every access, ran first on the same input with the native result.
    let interp = Ubpf::load(bytes);
    let safe = match &interp {
        Ok(vm) => match vm.interpret(&mut input(name)) {
            Ok(r) if r == want => Ok(()),
            Ok(r) => Err(format!("ubpf's interpreter returned {r:#x}, native C {want:#x}")),
            Err(e) => Err(e),
        },
        Err(e) => Err(e.clone()),
    };
    let jit = safe.and_then(|()| Ubpf::load(bytes).and_then(|mut vm| vm.compile().map(|()| vm)));
    out.push((
        "ubpf-jit",
        jit.map(|vm| {
            Box::new(move |m: &mut [u8]| {
                // SAFETY: ubpf's interpreter ran this program on this input (the benchmark input, which
                // is all `m` ever holds) and checked every access: the program reads and writes only
                // its input and its stack.
                Ok(unsafe { vm.jit(m) })
            }) as Runner
        }),
    ));
    out.push(("ubpf-interp", interp.map(|vm| Box::new(move |m: &mut [u8]| vm.interpret(m)) as Runner)));
}

#[cfg(not(ubpf))]
fn ubpf_runners(_: &[u8], _: &str, _: u64, _: &mut Vec<(&'static str, Result<Runner, String>)>) {}

/// Times every program on every engine that runs it; returns the notes on what did not run.
fn bench_runs(c: &mut Criterion) -> Vec<String> {
    let mut notes = Vec::new();
    let mut g = c.benchmark_group(RUN);
    for &(name, elf) in PROGRAMS {
        let data = input(name);
        let want = native::get(name)(&mut data.clone());
        let mut ready = Vec::new();
        for (id, runner) in runners(name, elf, want) {
            let mut run = match runner {
                Ok(run) => run,
                Err(e) => {
                    notes.push(format!("{name}: {id}: {e}"));
                    continue;
                }
            };
            // Twice: the map programs must give the same result on maps a run has used. A peer that
            // stops (rbpf's interpreter meets a helper it lacks only when it calls it) cannot run the
            // program; a wrong result stops the bench.
            let mut failed = None;
            for _ in 0..2 {
                match run(&mut data.clone()) {
                    Ok(r) if r == want => {}
                    Ok(r) => panic!("{name}: {id} returned {r:#x}, native C {want:#x}"),
                    Err(e) if !id.starts_with("ebpf-vm") => failed = Some(e),
                    Err(e) => panic!("{name}: {id} failed: {e}"),
                }
            }
            match failed {
                Some(e) => notes.push(format!("{name}: {id}: {e}")),
                None => ready.push((id, run)),
            }
        }
        // One buffer, warm in the cache, as a host's packet or record would be. Only `sort` and `copy`
        // write their input: `sort` gets the unsorted data back before each run, on every engine
        // (`copy` writes what it writes again: its output is its input's fixed point).
        let reset = name == "sort";
        let mut buf = data.clone();
        for (id, run) in &mut ready {
            g.bench_function(BenchmarkId::new(*id, name), |b| {
                b.iter(|| {
                    if reset {
                        buf.copy_from_slice(&data);
                    }
                    let r = run(&mut buf);
                    assert_eq!(r, Ok(want), "{name}: {id}");
                })
            });
        }
    }
    g.finish();
    notes
}

/// Times what it costs to get each program ready: load (parse the object, create its maps), verify,
/// and compile with our JIT; and rbpf's and ubpf's JIT compiles beside them.
fn bench_prepare(c: &mut Criterion) {
    let mut g = c.benchmark_group(PREPARE);
    for &(name, elf) in PROGRAMS {
        g.bench_function(BenchmarkId::new("load", name), |b| {
            b.iter(|| {
                let object = Object::parse(elf).expect("loads");
                Instance::new(&object).expect("maps")
            })
        });
        let object = Object::parse(elf).expect("loads");
        let instance = Instance::new(&object).expect("maps");
        let mut env = instance.env();
        env.set_context(Context::fixed(INPUT_LEN as u32));
        let program = object.program(name).expect("program").program.clone();
        let linked = Arc::new(Linked::new(program.clone(), Vec::new(), env).expect("links"));
        let verifier = Verifier::new();
        g.bench_function(BenchmarkId::new("verify", name), |b| b.iter(|| verifier.verify(&linked).expect("verifies")));
        g.bench_function(BenchmarkId::new("jit-compile", name), |b| {
            b.iter(|| {
                let builder = instance.vm_builder(name).expect("program").engine(Engine::Jit);
                // SAFETY: the code is compiled and dropped, never run.
                unsafe { builder.unchecked() }.build().expect("compiles")
            })
        });
        g.bench_function(BenchmarkId::new("jit-verified-total", name), |b| {
            b.iter(|| ours(&instance, name, Engine::Jit, true).expect("builds"))
        });
        let bytes = program.to_bytes();
        if rbpf::EbpfVmRaw::new(Some(&bytes)).and_then(|mut vm| vm.jit_compile()).is_ok() {
            g.bench_function(BenchmarkId::new("rbpf-jit-compile", name), |b| {
                b.iter(|| {
                    let mut vm = rbpf::EbpfVmRaw::new(Some(&bytes)).expect("rbpf loads");
                    vm.jit_compile().expect("rbpf compiles");
                    vm
                })
            });
        }
        #[cfg(ubpf)]
        {
            use ebpf_vm_bench::ubpf::Ubpf;
            if Ubpf::load(&bytes).and_then(|mut vm| vm.compile()).is_ok() {
                g.bench_function(BenchmarkId::new("ubpf-jit-compile", name), |b| {
                    b.iter(|| {
                        let mut vm = Ubpf::load(&bytes).expect("ubpf loads");
                        vm.compile().expect("ubpf compiles");
                        vm
                    })
                });
            }
        }
    }
    g.finish();
}

/// Instruction slots of a program (its subprograms included).
fn slots(elf: &[u8], name: &str) -> usize {
    Object::parse(elf).expect("loads").program(name).expect("program").program.slot_count()
}

/// The table of run times: median ns per call and ratio to native, per program and column; a geomean
/// row of the ratios (over the programs the column ran).
fn run_table(medians: &BTreeMap<String, f64>) -> String {
    let ns = |id: &str, name: &str| medians.get(&format!("{RUN}/{id}/{name}")).map(|us| us * 1000.0);
    let columns: Vec<&Column> =
        COLUMNS.iter().filter(|c| PROGRAMS.iter().any(|(n, _)| ns(c.id, n).is_some())).collect();
    let mut t = String::new();
    let _ = write!(t, "| program |");
    for c in &columns {
        let _ = write!(t, " {} ({}) |", c.header, c.mode);
    }
    let _ = write!(t, "\n|---|");
    for _ in &columns {
        let _ = write!(t, "---:|");
    }
    t.push('\n');
    let mut logs: Vec<(f64, usize)> = vec![(0.0, 0); columns.len()];
    for &(name, _) in PROGRAMS {
        let base = ns("native", name);
        let _ = write!(t, "| {name} |");
        for (i, c) in columns.iter().enumerate() {
            match (ns(c.id, name), base) {
                (Some(v), Some(b)) if c.id == "native" => {
                    let _ = write!(t, " {} |", format_ns(v));
                    logs[i].0 += (v / b).ln();
                    logs[i].1 += 1;
                }
                (Some(v), Some(b)) => {
                    let _ = write!(t, " {} ({:.2}x) |", format_ns(v), v / b);
                    logs[i].0 += (v / b).ln();
                    logs[i].1 += 1;
                }
                (Some(v), None) => {
                    let _ = write!(t, " {} |", format_ns(v));
                }
                (None, _) => t.push_str(" — |"),
            }
        }
        t.push('\n');
    }
    let _ = write!(t, "| **geomean** (programs) |");
    for (sum, n) in &logs {
        if *n == 0 {
            t.push_str(" — |");
        } else {
            let _ = write!(t, " **{:.2}x** ({n}) |", (sum / *n as f64).exp());
        }
    }
    t.push('\n');
    t
}

/// `v` nanoseconds, with a unit that keeps three or four digits.
fn format_ns(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} ms", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1} µs", v / 1e3)
    } else if v >= 100.0 {
        format!("{v:.0} ns")
    } else {
        format!("{v:.1} ns")
    }
}

/// The table of preparation times: per program, microseconds for each stage and per instruction.
fn prepare_table(medians: &BTreeMap<String, f64>) -> String {
    let us = |id: &str, name: &str| medians.get(&format!("{PREPARE}/{id}/{name}")).copied();
    let mut t = String::from(
        "| program | slots | load | verify | JIT compile | load + verify + compile | per slot (verify + compile) | rbpf JIT compile | ubpf JIT compile |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let (mut total_slots, mut total_vc) = (0usize, 0.0);
    let cell = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.1} µs"));
    for &(name, elf) in PROGRAMS {
        let n = slots(elf, name);
        let (load, verify, compile) = (us("load", name), us("verify", name), us("jit-compile", name));
        let total = us("jit-verified-total", name).zip(load).map(|(b, l)| b + l);
        let per = verify.zip(compile).map(|(v, c)| (v + c) / n as f64);
        if let (Some(v), Some(c)) = (verify, compile) {
            total_slots += n;
            total_vc += v + c;
        }
        let _ = writeln!(
            t,
            "| {name} | {n} | {} | {} | {} | {} | {} | {} | {} |",
            cell(load),
            cell(verify),
            cell(compile),
            cell(total),
            per.map_or("—".to_string(), |p| format!("{p:.2} µs")),
            cell(us("rbpf-jit-compile", name)),
            cell(us("ubpf-jit-compile", name)),
        );
    }
    if total_slots > 0 {
        let _ = writeln!(t, "| **all** | {total_slots} | | | | | **{:.2} µs** | | |", total_vc / total_slots as f64);
    }
    t
}

fn main() {
    let dir = medians::criterion_dir();
    let since = SystemTime::now();
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(1))
        .output_directory(&dir)
        .configure_from_args();
    let notes = bench_runs(&mut c);
    bench_prepare(&mut c);
    c.final_summary();
    let mut medians = medians::read(&dir, RUN, since);
    medians.extend(medians::read(&dir, PREPARE, since));
    println!("\nRun time: median per call, and ratio to native C (geomean over the programs each ran)\n");
    print!("{}", run_table(&medians));
    println!("\nPreparation: median times\n");
    print!("{}", prepare_table(&medians));
    if cfg!(not(ubpf)) {
        println!("\nubpf: skipped (set UBPF_DIR to a ubpf tree built with its CMake, see the README)");
    }
    if !notes.is_empty() {
        println!("\nNot run:");
        for n in notes {
            println!("- {n}");
        }
    }
}
