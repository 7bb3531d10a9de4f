//! Hook points: programs run in attach order on the memory a fire passes, with their results (errors
//! included) handed back; attach and detach from other threads while threads fire, where a detach
//! returns only after the runs under way have finished.
#![cfg(feature = "std")]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

use ebpf_vm::attach::HookPoint;
use ebpf_vm::maps::{self, Map, MapDef, MapType};
use ebpf_vm::{Context, Engine, Env, ExecError, Program, Vm};

/// A verified program on an 8-byte context for `engine`, with array map 0 (one 8-byte counter) when
/// `counter` is given.
fn vm(text: &str, engine: Engine, counter: Option<Arc<dyn Map>>) -> Arc<Vm> {
    let mut env = Env::new();
    env.add_standard_helpers();
    if let Some(map) = counter {
        env.add_map(map);
    }
    env.set_context(Context::fixed(8));
    let program = Program::from_asm(text).unwrap_or_else(|e| panic!("{e}"));
    Arc::new(Vm::builder(program).env(env).engine(engine).verified().build().unwrap_or_else(|e| panic!("{e}")))
}

fn counter() -> Arc<dyn Map> {
    maps::create(MapDef { map_type: MapType::Array, key_size: 4, value_size: 8, max_entries: 1, flags: 0 })
        .expect("array")
}

fn count(map: &Arc<dyn Map>) -> u64 {
    let v = map.get(&0u32.to_ne_bytes(), 0).expect("element 0");
    u64::from_ne_bytes(v[..8].try_into().expect("8 bytes"))
}

/// Adds 1 to the counter in map 0 (atomically) and returns the context's word.
const COUNT: &str = "stw [%r10-4], 0
ldxdw %r6, [%r1+0]
mov %r2, %r10
add %r2, -4
lddw %r1, map_fd(0)
call 1
jeq %r0, 0, out
mov %r1, 1
lock add [%r0+0], %r1
out:
mov %r0, %r6
exit";

#[test]
fn programs_run_in_attach_order_and_detach_by_id() {
    for engine in [Engine::Interpreter, Engine::Jit] {
        let point = HookPoint::new("p");
        assert_eq!(point.name(), "p");
        let mut seen = Vec::new();
        assert_eq!(point.fire(&mut [0; 8], |_, r| seen.push(r)), 0);
        assert!(seen.is_empty() && point.is_empty());
        let a = point.attach(vm("ldxdw %r0, [%r1+0]\nadd %r0, 1\nexit", engine, None));
        let b = point.attach(vm("ldxdw %r0, [%r1+0]\nmul %r0, 10\nexit", engine, None));
        let c = point.attach(vm("ldxdw %r0, [%r1+0]\nadd %r0, 1\nexit", engine, None));
        assert_eq!(point.len(), 3);
        let mut seen = Vec::new();
        let mut mem = 5u64.to_ne_bytes();
        assert_eq!(point.fire(&mut mem, |id, r| seen.push((id, r.expect("runs")))), 3);
        assert_eq!(seen, [(a, 6), (b, 50), (c, 6)], "{engine:?}");
        assert!(point.detach(b).is_some());
        assert!(point.detach(b).is_none(), "detached twice");
        let mut seen = Vec::new();
        point.fire(&mut mem, |id, r| seen.push((id, r.expect("runs"))));
        assert_eq!(seen, [(a, 6), (c, 6)], "{engine:?}");
        point.detach(a);
        point.detach(c);
        assert_eq!(point.fire(&mut mem, |_, _| panic!("nothing is attached")), 0);
    }
}

#[test]
fn an_error_is_handed_back_and_the_other_programs_still_run() {
    let point = HookPoint::new("errors");
    // An 8-byte context: a 4-byte input is refused by the verified program, the next one runs.
    point.attach(vm("mov %r0, 1\nexit", Engine::Jit, None));
    point.attach(vm("mov %r0, 2\nexit", Engine::Interpreter, None));
    let mut results = Vec::new();
    point.fire(&mut [0; 4], |_, r| results.push(r));
    assert!(matches!(results[0], Err(ExecError::ContextSize { len: 4 })), "{results:?}");
    assert!(matches!(results[1], Err(ExecError::ContextSize { len: 4 })), "{results:?}");
    let mut results = Vec::new();
    point.fire(&mut [0; 8], |_, r| results.push(r.expect("runs")));
    assert_eq!(results, [1, 2]);
}

#[test]
fn threads_fire_while_others_attach_and_detach() {
    // Four threads fire without pause; a fifth attaches and detaches a counting program 200 times.
    // Each detach returns only after the runs under way finished, so the counter read right after it
    // never moves again until the next attach; and every fire that saw the program counted.
    const THREADS: usize = 4;
    let point = Arc::new(HookPoint::new("busy"));
    let map = counter();
    let program = vm(COUNT, Engine::Jit, Some(map.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let ran = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(THREADS + 1));
    let firing: Vec<_> = (0..THREADS)
        .map(|t| {
            let (point, stop, ran, start) = (point.clone(), stop.clone(), ran.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let mut mem = (t as u64).to_ne_bytes();
                while !stop.load(Ordering::Relaxed) {
                    let n = point.fire(&mut mem, |_, r| assert_eq!(r.expect("runs"), t as u64));
                    ran.fetch_add(n as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    start.wait();
    for _ in 0..200 {
        let before = count(&map);
        let id = point.attach(program.clone());
        // Detach only once a fire has run the program: detaches then meet fires under way.
        while count(&map) == before {
            std::thread::yield_now();
        }
        assert!(point.detach(id).is_some());
        let after = count(&map);
        std::thread::yield_now();
        assert_eq!(count(&map), after, "a run went on after its detach returned");
    }
    stop.store(true, Ordering::Relaxed);
    for t in firing {
        t.join().expect("no thread panicked");
    }
    assert_eq!(count(&map), ran.load(Ordering::Relaxed), "every run counted once");
    assert!(count(&map) >= 200, "each attachment ran at least once");
    assert!(point.is_empty());
}
