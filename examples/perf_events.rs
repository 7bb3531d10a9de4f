//! Perf event output and callbacks: programs built by clang against libbpf's headers send samples to a
//! perf event array from several threads while the host consumes them per CPU, and a `bpf_loop`
//! callback sums a map in its caller's stack.
//!
//! Uses `tests/fixtures/perf.c` (each call sends a sample numbered by a per-CPU counter) and
//! `tests/fixtures/loop.c`. Run with `cargo run --release --example perf_events`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ebpf_vm::elf::Object;
use ebpf_vm::maps::{Array, PerfEvent, PerfEventArrayMap};
use ebpf_vm::Instance;

const PERF: &[u8] = include_bytes!("../tests/fixtures/perf.o");
const LOOP: &[u8] = include_bytes!("../tests/fixtures/loop.o");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let perf = Instance::new(&Object::parse(PERF)?)?;
    let emit = Arc::new(perf.vm_builder("emit")?.build()?);
    let events = Arc::clone(perf.map("events").ok_or("no map `events`")?);
    let done = Arc::new(AtomicBool::new(false));

    // The consumer: every sample of each CPU's buffer, in order; losses where the buffer was full.
    let consumer = {
        let (events, done) = (Arc::clone(&events), Arc::clone(&done));
        std::thread::spawn(move || {
            let buffers = events.downcast_ref::<PerfEventArrayMap>().expect("a perf event array");
            let (mut samples, mut lost) = (0u64, 0u64);
            loop {
                let finished = done.load(Ordering::Acquire);
                buffers.consume_all(|_cpu, event| match event {
                    PerfEvent::Sample(_) => samples += 1,
                    PerfEvent::Lost(n) => lost += n,
                });
                if finished {
                    return (samples, lost);
                }
                std::thread::yield_now();
            }
        })
    };
    let producers: Vec<_> = (0..4u32)
        .map(|t| {
            let emit = Arc::clone(&emit);
            std::thread::spawn(move || {
                for _ in 0..10_000 {
                    emit.execute(&mut t.to_ne_bytes()).expect("runs");
                }
            })
        })
        .collect();
    for p in producers {
        p.join().map_err(|_| "a producer panicked")?;
    }
    done.store(true, Ordering::Release);
    let (samples, reported) = consumer.join().map_err(|_| "the consumer panicked")?;
    let buffers = events.downcast_ref::<PerfEventArrayMap>().ok_or("not a perf event array")?;
    // A loss is reported before the next sample that fits: the last ones of a buffer are only counted.
    println!(
        "perf event array: 40000 samples sent by 4 threads, {samples} received, {} lost when a buffer was \
         full ({reported} reported so far)",
        buffers.lost()
    );

    // bpf_loop: the callback reads `weights` and sums into its caller's stack until a limit.
    let looped = Instance::new(&Object::parse(LOOP)?)?;
    let weights = Array::<u64>::new(Arc::clone(looped.map("weights").ok_or("no map `weights`")?))?;
    for i in 0..8 {
        weights.set(i, &(i as u64 + 1))?;
    }
    let vm = looped.vm_builder("loop_sum")?.build()?;
    let mut input: Vec<u8> = [500u32, 100].iter().flat_map(|v| v.to_ne_bytes()).collect();
    let r = vm.execute(&mut input)?;
    println!("bpf_loop: {} iterations before the sum passed 500, sum {}", r & 0xffff_ffff, r >> 32);
    Ok(())
}
