//! What attach points add to a call: an empty `#[inline(never)]` function called directly (the
//! baseline), a hook point fired with nothing attached, and with a trivial program (`return 0`)
//! attached on the JIT and on the interpreter. After the criterion run, a table gives each median
//! and what it adds to the baseline.
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

/// The function every probe row calls: empty, never inlined.
#[inline(never)]
extern "C" fn empty(x: u64) -> u64 {
    black_box(x)
}

fn trivial(engine: Engine) -> Arc<Vm> {
    let mut env = Env::new();
    env.set_context(Context::fixed(8));
    let program = Program::from_asm("mov %r0, 0\nexit").expect("assembles");
    Arc::new(Vm::builder(program).env(env).engine(engine).verified().build().expect("builds"))
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group(GROUP);
    g.bench_function("direct-call", |b| b.iter(|| black_box(empty as extern "C" fn(u64) -> u64)(black_box(1))));
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
