//! The perf event array and `bpf_perf_event_output` (fixture `perf.c`): samples reach the host per
//! CPU, in order, with every loss counted, on both engines, verified and checked, also with four
//! threads producing while the host consumes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ebpf_vm::elf::Object;
use ebpf_vm::maps::{Map, PerfEvent, PerfEventArrayMap, DEFAULT_PERF_BUFFER, MAX_CPUS};
use ebpf_vm::{Engine, Instance, Vm};

const ENGINES: &[Engine] = &[Engine::Interpreter, Engine::Jit];

fn load() -> Instance {
    let path = format!("{}/tests/fixtures/perf.o", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let object = Object::parse(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"));
    Instance::new(&object).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn vm(obj: &Instance, name: &str, engine: Engine, verified: bool) -> Vm {
    let b = obj.vm_builder(name).expect("program").engine(engine);
    if verified { b.verified() } else { b.checked() }.build().expect("builds")
}

fn events(obj: &Instance) -> &PerfEventArrayMap {
    obj.map("events").and_then(|m| m.downcast_ref::<PerfEventArrayMap>()).expect("a perf event array")
}

/// The fixture's `struct event`: sequence number, CPU, tag.
fn decode(sample: &[u8]) -> (u64, u32, u32) {
    assert_eq!(sample.len(), 16, "a sample is exactly the bytes the program passed");
    let u32_at = |i: usize| u32::from_ne_bytes(sample[i..i + 4].try_into().expect("4 bytes"));
    (u64::from_ne_bytes(sample[..8].try_into().expect("8 bytes")), u32_at(8), u32_at(12))
}

/// What one CPU's buffer held, checked against its per-CPU counter: samples numbered from `from`
/// without a gap that no `Lost` event explains. Returns (samples, lost, next number).
fn check_cpu(perf: &PerfEventArrayMap, cpu: usize, from: u64) -> (u64, u64, u64) {
    let (mut samples, mut lost, mut next) = (0, 0, from);
    perf.consume(cpu, |e| match e {
        PerfEvent::Sample(s) => {
            let (seq, on, _) = decode(s);
            assert_eq!(seq, next, "CPU {cpu}: sample {seq} where {next} was due");
            assert_eq!(on as usize, cpu, "a sample lands in the buffer of the CPU that sent it");
            samples += 1;
            next += 1;
        }
        PerfEvent::Lost(n) => {
            assert!(n > 0);
            lost += n;
            next += n;
        }
    });
    (samples, lost, next)
}

fn counter(obj: &Instance, cpu: usize) -> u64 {
    let v = obj.map("seq").expect("seq").get(&0u32.to_ne_bytes(), cpu).expect("per-CPU value");
    u64::from_ne_bytes(v.try_into().expect("8 bytes"))
}

#[test]
fn the_map_is_sized_to_the_cpu_slots() {
    let obj = load();
    let perf = events(&obj);
    assert_eq!(perf.def().max_entries as usize, MAX_CPUS, "no max_entries: one per CPU, as libbpf");
    assert_eq!((perf.buffer_count(), perf.buffer_size()), (MAX_CPUS, DEFAULT_PERF_BUFFER));
}

#[test]
fn samples_reach_the_host_on_every_engine() {
    for &engine in ENGINES {
        for verified in [true, false] {
            let obj = load();
            let emit = vm(&obj, "emit", engine, verified);
            for tag in 0..10u32 {
                assert_eq!(emit.execute(&mut tag.to_ne_bytes()), Ok(0), "{engine:?}");
            }
            let mut got = Vec::new();
            let n = events(&obj).consume_all(|cpu, e| match e {
                PerfEvent::Sample(s) => got.push((cpu, decode(s))),
                PerfEvent::Lost(n) => panic!("{n} lost with room to spare"),
            });
            assert_eq!(n, 10);
            // Each call took the first free CPU slot: 0, unless another test of this file held it then.
            // Every sample is in its CPU's buffer, each CPU's numbered from 0 without a gap, and every
            // tag arrived once.
            let mut tags: Vec<u32> = got.iter().map(|&(_, (_, _, tag))| tag).collect();
            tags.sort_unstable();
            assert_eq!(tags, (0..10).collect::<Vec<u32>>(), "{engine:?} verified={verified}: {got:?}");
            for cpu in 0..MAX_CPUS {
                let mine: Vec<_> = got.iter().filter(|&&(c, _)| c == cpu).map(|&(_, d)| d).collect();
                let want: Vec<u64> = (0..mine.len() as u64).collect();
                assert_eq!(mine.iter().map(|d| d.0).collect::<Vec<_>>(), want, "CPU {cpu}: {got:?}");
                assert!(mine.iter().all(|d| d.1 as usize == cpu), "CPU {cpu}: {got:?}");
            }
            assert_eq!(events(&obj).lost(), 0);
        }
    }
}

/// Another CPU's buffer, an index past the map, and flags with context bytes are refused as the kernel
/// refuses them, and nothing is written.
#[test]
fn misuse_gets_the_kernels_errors() {
    for &engine in ENGINES {
        for verified in [true, false] {
            let obj = load();
            let misuse = vm(&obj, "misuse", engine, verified);
            // EOPNOTSUPP (95), E2BIG (7), EINVAL (22).
            assert_eq!(misuse.execute(&mut [0; 8]), Ok((95 << 16) | (7 << 8) | 22), "{engine:?}");
            assert_eq!(events(&obj).consume_all(|_, _| {}), 0);
        }
    }
}

/// Four threads send samples while the host consumes: every sample arrives, in order per CPU.
#[test]
fn four_threads_producing_while_the_host_consumes_lose_nothing() {
    const THREADS: usize = 4;
    const CALLS: usize = 500; // 500 * 4 samples of 24 bytes fit one buffer: nothing may be lost
    for &engine in ENGINES {
        let obj = Arc::new(load());
        let emit = Arc::new(vm(&obj, "emit", engine, true));
        let done = AtomicBool::new(false);
        let mut next = [0u64; MAX_CPUS];
        let mut samples = 0;
        std::thread::scope(|s| {
            let producers: Vec<_> = (0..THREADS)
                .map(|t| {
                    let emit = Arc::clone(&emit);
                    s.spawn(move || {
                        for _ in 0..CALLS {
                            assert_eq!(emit.execute(&mut (t as u32).to_ne_bytes()), Ok(0));
                        }
                    })
                })
                .collect();
            let consumer = s.spawn(|| {
                let perf = events(&obj);
                loop {
                    let finished = done.load(Ordering::Acquire);
                    for (cpu, next) in next.iter_mut().enumerate() {
                        let (n, lost, after) = check_cpu(perf, cpu, *next);
                        assert_eq!(lost, 0, "CPU {cpu} lost samples although the buffer had room");
                        samples += n;
                        *next = after;
                    }
                    if finished {
                        return;
                    }
                    std::thread::yield_now();
                }
            });
            for p in producers {
                p.join().expect("producer");
            }
            done.store(true, Ordering::Release);
            consumer.join().expect("consumer");
        });
        assert_eq!(samples, (THREADS * CALLS) as u64, "{engine:?}");
        for (cpu, &n) in next.iter().enumerate() {
            assert_eq!(n, counter(&obj, cpu), "{engine:?}: CPU {cpu} sent {} samples", counter(&obj, cpu));
        }
        assert_eq!(events(&obj).lost(), 0);
    }
}

/// Four threads send more than the buffers hold with no one consuming: the program sees `-ENOSPC`,
/// and the consumer gets every sample that fitted, in order, with each gap reported as lost.
#[test]
fn four_threads_filling_the_buffers_have_their_losses_counted() {
    const THREADS: usize = 4;
    const CALLS: usize = 4000;
    for &engine in ENGINES {
        let obj = load();
        let emit = vm(&obj, "emit", engine, true);
        let refused: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let emit = &emit;
                    s.spawn(move || {
                        let mut refused = 0;
                        for _ in 0..CALLS {
                            match emit.execute(&mut (t as u32).to_ne_bytes()) {
                                Ok(0) => {}
                                Ok(r) => {
                                    assert_eq!(r as i64, -28, "ENOSPC");
                                    refused += 1;
                                }
                                Err(e) => panic!("{e}"),
                            }
                        }
                        refused
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("producer")).sum()
        });
        let perf = events(&obj);
        assert!(refused > 0, "{} calls fitted in the buffers", THREADS * CALLS);
        assert_eq!(perf.lost(), refused, "every refused sample is counted");
        // Losses are reported before the next sample that fits: send one more per CPU that lost some.
        let (mut samples, mut lost) = (0, 0);
        for cpu in 0..MAX_CPUS {
            let (n, l, next) = check_cpu(perf, cpu, 0);
            samples += n;
            lost += l;
            let pending = counter(&obj, cpu) - next;
            if pending > 0 {
                // Losses after the last sample that fitted come out before the next one.
                perf.output(cpu, &[0; 16]).expect("room after consuming");
                let mut tail = Vec::new();
                perf.consume(cpu, |e| tail.push(matches!(e, PerfEvent::Lost(n) if n == pending)));
                assert_eq!(tail, vec![true, false], "CPU {cpu}: the loss of {pending}, then the sample");
                lost += pending;
            }
        }
        assert_eq!(samples + lost, (THREADS * CALLS) as u64, "{engine:?}");
        assert_eq!(lost, refused, "{engine:?}");
    }
}
