//! What attach points add to a call: an empty `#[inline(never)]` function called directly (the
//! baseline); the same function with a uprobe, then a uretprobe, running a trivial program
//! (`return 0`) on the JIT (Linux on x86_64); a hook point fired with nothing attached, and with a
//! trivial program attached on the JIT and on the interpreter. After the criterion run, a table gives
//! each median and what it adds to the baseline.
//!
//! `cargo bench -p ebpf-vm-bench --bench attach`

use std::hint::black_box;
use std::sync::Arc;
use std::time::SystemTime;

use criterion::Criterion;
use ebpf_vm::attach::HookPoint;
use ebpf_vm::{Context, Engine, Env, Program, Vm};
use ebpf_vm_bench::medians;

/// Criterion's group.
const GROUP: &str = "attach";

/// The function every probe row calls: empty, never inlined, found by its symbol.
#[no_mangle]
#[inline(never)]
pub extern "C" fn ebpf_vm_bench_empty(x: u64) -> u64 {
    black_box(x)
}

fn trivial(engine: Engine) -> Arc<Vm> {
    trivial_on(engine, Context::fixed(8))
}

fn trivial_on(engine: Engine, context: Context) -> Arc<Vm> {
    let mut env = Env::new();
    env.set_context(context);
    let program = Program::from_asm("mov %r0, 0\nexit").expect("assembles");
    Arc::new(Vm::builder(program).env(env).engine(engine).verified().build().expect("builds"))
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group(GROUP);
    let empty = black_box(ebpf_vm_bench_empty as extern "C" fn(u64) -> u64);
    g.bench_function("direct-call", |b| b.iter(|| empty(black_box(1))));
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        use ebpf_vm::attach::uprobe::{self, ProbeKind, Target, Uprobe};
        let target = Target::symbol("ebpf_vm_bench_empty");
        for (name, kind) in [("uprobe-trivial-jit", ProbeKind::Entry), ("uretprobe-trivial-jit", ProbeKind::Return)] {
            let probe = Uprobe::attach(&target, kind, trivial_on(Engine::Jit, uprobe::context())).expect("attaches");
            // SAFETY: the function's first byte is code, readable: it is now the probe's jump.
            assert_eq!(unsafe { *(empty as *const u8) }, 0xe9, "the function jumps to the probe");
            g.bench_function(name, |b| b.iter(|| empty(black_box(1))));
            drop(probe);
        }
    }
    let point = HookPoint::new("bench");
    let mut mem = [0u8; 8];
    g.bench_function("hook-nothing-attached", |b| {
        b.iter(|| black_box(&point).fire(black_box(&mut mem), |_, r| drop(black_box(r))))
    });
    for (name, engine) in [("hook-trivial-jit", Engine::Jit), ("hook-trivial-interpreter", Engine::Interpreter)] {
        let id = point.attach(trivial(engine));
        assert_eq!(point.fire(&mut mem, |_, r| assert_eq!(r, Ok(0))), 1);
        g.bench_function(name, |b| b.iter(|| black_box(&point).fire(black_box(&mut mem), |_, r| drop(black_box(r)))));
        point.detach(id);
    }
    g.finish();
}

fn main() {
    let since = SystemTime::now();
    let mut c = Criterion::default().output_directory(&medians::criterion_dir()).configure_from_args();
    bench(&mut c);
    c.final_summary();
    let m = medians::read(&medians::criterion_dir(), GROUP, since);
    let Some(&base) = m.get(&format!("{GROUP}/direct-call")) else { return };
    println!("\n| row | median | added to the direct call |\n|---|---|---|");
    for (id, &t) in &m {
        let row = id.trim_start_matches(&format!("{GROUP}/"));
        println!("| {row} | {:.1} ns | {:+.1} ns |", t * 1e3, (t - base) * 1e3);
    }
}
