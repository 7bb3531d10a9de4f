//! The clang-compiled fixtures of `tests/fixtures/` (rebuilt by `tests/fixtures/build.sh`): each one
//! loaded, run, and checked for r0 and map contents, on every engine.

use std::sync::{Arc, Mutex};

use ebpf_vm::elf::{MapOrigin, Object};
use ebpf_vm::maps::{Array, RingBufMap, TypedHashMap};
use ebpf_vm::Instance;
use ebpf_vm::{Engine, Env, ExecError, Vm};

/// Every engine the crate has.
const ENGINES: &[Engine] = &[Engine::Interpreter, Engine::Jit];

fn load(name: &str) -> Instance {
    let path = format!("{}/tests/fixtures/{name}.o", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let object = Object::parse(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"));
    Instance::new(&object).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn vm(obj: &Instance, program: &str, engine: Engine) -> Vm {
    obj.vm_builder(program).expect("program exists").engine(engine).budget(10_000_000).build().expect("builds")
}

fn u64_at(map: &Arc<dyn ebpf_vm::maps::Map>) -> u64 {
    u64::from_le_bytes(map.get(&0u32.to_ne_bytes(), 0).expect("value")[..8].try_into().unwrap())
}

#[test]
fn hash_map_and_global_data() {
    for &engine in ENGINES {
        let obj = load("hash_count");
        assert_eq!(obj.license(), "GPL");
        let origins: Vec<_> = obj.maps().iter().map(|m| (m.name.as_str(), m.origin)).collect();
        assert!(origins.contains(&("counts", MapOrigin::Btf)));
        assert!(origins.contains(&(".bss", MapOrigin::GlobalData)));
        assert!(origins.contains(&(".data", MapOrigin::GlobalData)));
        assert!(origins.contains(&(".rodata", MapOrigin::GlobalData)));
        let vm = vm(&obj, "count_bytes", engine);
        assert_eq!(vm.execute(&mut b"abca".to_vec()), Ok(12)); // total_bytes = 4 * weight 3
        assert_eq!(vm.execute(&mut b"zz".to_vec()), Ok(18));
        let counts = TypedHashMap::<u32, u64>::new(Arc::clone(obj.map("counts").unwrap())).unwrap();
        let mut entries = counts.entries();
        entries.sort();
        assert_eq!(entries, vec![(b'a' as u32, 2), (b'b' as u32, 1), (b'c' as u32, 1), (b'z' as u32, 2)]);
        assert_eq!(u64_at(obj.map(".data").unwrap()), 102, "runs started at 100");
        assert_eq!(u64_at(obj.map(".bss").unwrap()), 18);
        // map_delete_elem, from a second program sharing the map.
        let forget = self::vm(&obj, "forget", engine);
        assert_eq!(forget.execute(&mut [b'a']), Ok(0));
        assert_eq!(forget.execute(&mut [b'a']).map(|r| r as i64), Ok(-2), "-ENOENT the second time");
        assert_eq!(counts.get(&(b'a' as u32)), None);
        assert_eq!(counts.entries().len(), 3);
    }
}

#[test]
fn subprograms_in_text() {
    for &engine in ENGINES {
        let obj = load("subprog");
        let p = obj.program("squares").unwrap();
        assert!(p.program.functions().len() >= 3, "entry, sum_of_squares and square are linked in");
        assert_eq!(vm(&obj, "squares", engine).execute(&mut [1, 2, 3]), Ok(1 + 4 + 9 + 9));
    }
}

#[test]
fn tail_calls_through_an_initialised_program_array() {
    for &engine in ENGINES {
        let obj = load("tail_init");
        assert_eq!(vm(&obj, "first", engine).execute(&mut [0; 5]), Ok(2005));
    }
}

#[test]
fn tail_calls_through_a_host_filled_program_array() {
    for &engine in ENGINES {
        let obj = load("tail_host");
        let handlers = obj.map("handlers").unwrap();
        let pa = handlers.downcast_ref::<ebpf_vm::maps::ProgArrayMap>().unwrap();
        let vm = vm(&obj, "dispatch", engine);
        assert_eq!(vm.execute(&mut [0, 6, 7]), Ok(999), "empty slot: the tail call fails");
        pa.set(0, obj.program_id("handler_add").unwrap()).unwrap();
        pa.set(1, obj.program_id("handler_mul").unwrap()).unwrap();
        assert_eq!(vm.execute(&mut [0, 6, 7]), Ok(13));
        assert_eq!(vm.execute(&mut [1, 6, 7]), Ok(42));
        assert_eq!(vm.execute(&mut [5, 6, 7]), Ok(999));
        // A program that tail-calls itself: 33 tail calls succeed, the 34th fails.
        pa.set(7, obj.program_id("chain").unwrap()).unwrap();
        assert_eq!(self::vm(&obj, "chain", engine).execute(&mut [0]), Ok(34));
    }
}

#[test]
fn lru_hash_evicts_the_least_recently_used() {
    for &engine in ENGINES {
        let obj = load("lru");
        let vm = vm(&obj, "touch", engine);
        assert_eq!(vm.execute(&mut [1, 2, 3, 4, 1, 1]), Ok(4));
        // 5 evicts 2 (1 was touched after 2), then 2 evicts 3.
        assert_eq!(vm.execute(&mut [5, 2]), Ok(2));
        let recent = TypedHashMap::<u32, u32>::new(Arc::clone(obj.map("recent").unwrap())).unwrap();
        let mut keys: Vec<u32> = recent.entries().into_iter().map(|(k, _)| k).collect();
        keys.sort();
        assert_eq!(keys, vec![1, 2, 4, 5]);
        assert_eq!(recent.get(&1), Some(3));
    }
}

#[test]
fn per_cpu_maps_count_exactly_on_four_threads() {
    for &engine in ENGINES {
        let obj = load("percpu");
        let shared = obj.map("shared_by_len").unwrap();
        for key in 0u32..16 {
            shared.update(&key.to_ne_bytes(), &0u64.to_ne_bytes(), 0, 0).unwrap();
        }
        let vm = vm(&obj, "count", engine);
        const RUNS: usize = 2000;
        std::thread::scope(|s| {
            for t in 0..4usize {
                let vm = &vm;
                s.spawn(move || {
                    for i in 0..RUNS {
                        let mut mem = vec![0u8; (t * 3 + i) % 16];
                        let cpu = vm.execute(&mut mem).unwrap();
                        assert!(cpu < ebpf_vm::maps::MAX_CPUS as u64);
                    }
                });
            }
        });
        let total = Array::<u64>::new(Arc::clone(obj.map("per_cpu_total").unwrap())).unwrap();
        assert_eq!(total.get_per_cpu(0).unwrap().iter().sum::<u64>(), 4 * RUNS as u64);
        let by_len = TypedHashMap::<u32, u64>::new(Arc::clone(obj.map("per_cpu_by_len").unwrap())).unwrap();
        let shared = TypedHashMap::<u32, u64>::new(Arc::clone(shared)).unwrap();
        let mut sum_per_cpu = 0;
        let mut sum_shared = 0;
        for key in 0u32..16 {
            let expected = (0..4usize)
                .flat_map(|t| (0..RUNS).map(move |i| (t * 3 + i) % 16))
                .filter(|&l| l == key as usize)
                .count() as u64;
            let per_cpu: u64 = by_len.get_per_cpu(&key).map_or(0, |v| v.iter().sum());
            assert_eq!(per_cpu, expected, "per-CPU hash, key {key}");
            assert_eq!(shared.get(&key), Some(expected), "shared hash, key {key}");
            sum_per_cpu += per_cpu;
            sum_shared += shared.get(&key).unwrap();
        }
        assert_eq!((sum_per_cpu, sum_shared), (4 * RUNS as u64, 4 * RUNS as u64));
    }
}

fn event(kind: u8, value: u64) -> Vec<u8> {
    let mut v = vec![kind];
    v.extend_from_slice(&value.to_le_bytes());
    v
}

#[test]
fn ring_buffer_records_arrive_in_order_across_wrap_around() {
    for &engine in ENGINES {
        let obj = load("ringbuf");
        let rb_map = Arc::clone(obj.map("events").unwrap());
        let rb = rb_map.downcast_ref::<RingBufMap>().unwrap();
        let vm = vm(&obj, "produce", engine);
        let mut expected_seq = 0u32;
        let mut produced = 0u64;
        let mut consumed = Vec::new();
        // 4096-byte buffer, 24 bytes per record: 1000 records wrap around it several times.
        for round in 0..50u64 {
            for i in 0..20u64 {
                let value = round * 100 + i;
                let kind = (i % 3) as u8;
                let r0 = vm.execute(&mut event(kind, value)).unwrap();
                assert!((r0 as i64) >= 0, "produce failed: {}", r0 as i64);
                produced += 1;
            }
            rb.consume(|rec| consumed.push(rec.to_vec()));
        }
        assert_eq!(produced, 1000);
        // Discarded records (kind 2) are skipped; the others arrive in order, none lost.
        let mut want = Vec::new();
        for round in 0..50u64 {
            for i in 0..20u64 {
                if i % 3 != 2 {
                    want.push((expected_seq, (i % 3) as u32, round * 100 + i));
                }
                expected_seq += 1;
            }
        }
        let got: Vec<(u32, u32, u64)> = consumed
            .iter()
            .map(|r| {
                assert_eq!(r.len(), 16);
                (
                    u32::from_le_bytes(r[0..4].try_into().unwrap()),
                    u32::from_le_bytes(r[4..8].try_into().unwrap()),
                    u64::from_le_bytes(r[8..16].try_into().unwrap()),
                )
            })
            .collect();
        assert_eq!(got, want);
        assert!(rb.query(3) > 4096 * 3, "the producer wrapped around the buffer");
        assert_eq!(rb.query(0), 0, "everything was consumed");
    }
}

#[test]
fn ring_buffer_full_then_drained() {
    let obj = load("ringbuf");
    let rb_map = Arc::clone(obj.map("events").unwrap());
    let rb = rb_map.downcast_ref::<RingBufMap>().unwrap();
    let vm = vm(&obj, "produce", Engine::Interpreter);
    let mut accepted = 0;
    for i in 0..400 {
        match vm.execute(&mut event(0, i)).unwrap() as i64 {
            -3 => break,
            n => {
                assert!(n > 0);
                accepted += 1;
            }
        }
    }
    assert_eq!(accepted, 4096 / 24, "full after as many 24-byte records as fit");
    assert_eq!(rb.drain().len(), accepted);
    assert!((vm.execute(&mut event(1, 7)).unwrap() as i64) > 0, "room again after draining");
}

#[test]
fn global_data_in_all_three_sections() {
    for &engine in ENGINES {
        let obj = load("globals");
        let vm = vm(&obj, "globals", engine);
        // counter * multiplier + previous length + 'h'
        assert_eq!(vm.execute(&mut b"abc".to_vec()), Ok(5 + 7 + 104));
        assert_eq!(vm.execute(&mut b"hello".to_vec()), Ok(10 + 3 + 104));
        let bss = obj.map(".bss").unwrap().get(&0u32.to_ne_bytes(), 0).unwrap();
        assert!(bss.windows(5).any(|w| w == b"hello"), "scratch holds the last input");
        let rodata = obj.map(".rodata").unwrap().get(&0u32.to_ne_bytes(), 0).unwrap();
        assert!(rodata.windows(4).any(|w| w == b"hi!\0"));
    }
}

#[test]
fn cpu_v4_instructions() {
    use ebpf_vm::isa::{AluOp, Instruction};
    for &engine in ENGINES {
        let obj = load("v4_ops");
        let insns = obj.program("v4_ops").unwrap().program.instructions().to_vec();
        assert!(insns.iter().any(|i| matches!(i, Instruction::MovSx { .. })));
        assert!(insns.iter().any(|i| matches!(i, Instruction::Alu { op: AluOp::SDiv, .. })));
        assert!(insns.iter().any(|i| matches!(i, Instruction::End { .. })));
        let mut mem = *b"\x01hello w";
        // The same computation in Rust.
        let a = mem[0] as i8 as i64;
        let b = i16::from_le_bytes([mem[2], mem[3]]) as i64;
        let c = i32::from_le_bytes([mem[4], mem[5], mem[6], mem[7]]);
        let expect = ((c as i64 / a) + (b % 7) + ((c >> 3) as i8 as i64)) as u64 ^ (c as u32).swap_bytes() as u64;
        assert_eq!(vm(&obj, "v4_ops", engine).execute(&mut mem), Ok(expect));
        let mut mem = *b"\xfd\x00\x85\xff\xf0\xff\xff\xff";
        let (a, b, c) = (-3i64, -123i64, -16i32);
        let expect = ((c as i64 / a) + (b % 7) + ((c >> 3) as i8 as i64)) as u64 ^ (c as u32).swap_bytes() as u64;
        assert_eq!(vm(&obj, "v4_ops", engine).execute(&mut mem), Ok(expect));
    }
}

fn udp_packet(dport: u16, ihl: u8) -> Vec<u8> {
    let mut p = vec![0u8; 12];
    p.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![0x40 | ihl, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2];
    ip.resize(ihl as usize * 4, 0);
    p.extend_from_slice(&ip);
    p.extend_from_slice(&1234u16.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&[0, 8, 0, 0]);
    p
}

#[test]
fn packet_parsing() {
    for &engine in ENGINES {
        let obj = load("packet");
        let vm = vm(&obj, "parse_udp", engine);
        assert_eq!(vm.execute(&mut udp_packet(53, 5)), Ok(53));
        assert_eq!(vm.execute(&mut udp_packet(53, 6)), Ok(53), "IP options");
        assert_eq!(vm.execute(&mut udp_packet(8080, 5)), Ok(8080));
        let mut tcp = udp_packet(80, 5);
        tcp[14 + 9] = 6;
        assert_eq!(vm.execute(&mut tcp), Ok(0));
        let mut short = udp_packet(53, 15);
        short.truncate(14 + 60 + 4);
        assert_eq!(vm.execute(&mut short), Ok(0), "header longer than the packet");
        assert_eq!(vm.execute(&mut [0u8; 10]), Ok(0));
        let ports = TypedHashMap::<u16, u64>::new(Arc::clone(obj.map("udp_ports").unwrap())).unwrap();
        assert_eq!(ports.get(&53), Some(2));
        assert_eq!(ports.get(&8080), Some(1));
        assert_eq!(ports.get(&80), None);
    }
}

#[test]
fn time_random_identity_and_printk() {
    for &engine in ENGINES {
        let obj = load("helpers");
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = Arc::clone(&lines);
        let mut env: Env = obj.env();
        env.set_print_sink(Arc::new(move |l: &str| sink.lock().unwrap().push(l.to_string())));
        let p = obj.program("helpers").unwrap().program.clone();
        let vm = Vm::builder(p).env(env).engine(engine).build().unwrap();
        assert_eq!(vm.execute(&mut b"xyz".to_vec()), Ok(0));
        let results = Array::<u64>::new(Arc::clone(obj.map("results").unwrap())).unwrap();
        assert!(results.get(0).unwrap() > 0, "ktime_get_ns");
        assert_eq!(results.get(1), Some(1), "boot time is not before monotonic time");
        assert_eq!(results.get(2), Some(1), "two random numbers differ");
        let pid = std::process::id() as u64;
        let pid_tgid = results.get(3).expect("pid_tgid");
        assert_eq!(pid_tgid >> 32, pid, "the process id above");
        assert!(pid_tgid as u32 != 0, "the thread's id below");
        assert_eq!(results.get(4), Some(0), "get_current_comm succeeds");
        assert_ne!(results.get(5), Some(0), "comm is not empty");
        assert_eq!(lines.lock().unwrap().as_slice(), ["len=3 first=x hex=beef"]);
    }
}

#[test]
fn legacy_map_section() {
    for &engine in ENGINES {
        let obj = load("legacy_maps");
        assert_eq!(obj.maps()[0].origin, MapOrigin::Legacy);
        let vm = vm(&obj, "legacy", engine);
        assert_eq!(vm.execute(&mut [0; 5]), Ok(5));
        assert_eq!(vm.execute(&mut [0; 9]), Ok(14));
        assert_eq!(vm.execute(&mut [0; 2]), Ok(2));
        let counts = Array::<u64>::new(Arc::clone(obj.map("legacy_counts").unwrap())).unwrap();
        assert_eq!((0..4).map(|i| counts.get(i).unwrap()).collect::<Vec<_>>(), vec![0, 14, 2, 0]);
    }
}

#[test]
fn atomics_on_map_values() {
    for &engine in ENGINES {
        let obj = load("map_atomics");
        let cells = Array::<u64>::new(Arc::clone(obj.map("cells").unwrap())).unwrap();
        for (i, v) in [5u64, 0x01, 0xff, 0x0f, 77, 0].iter().enumerate() {
            cells.set(i as u32, v).unwrap();
        }
        let vm = vm(&obj, "atomics", engine);
        // old or + old xor + old xchg + old cmpxchg
        assert_eq!(vm.execute(&mut [0; 9]), Ok(0x01 + 0x0f + 77));
        let got: Vec<u64> = (0..6).map(|i| cells.get(i).unwrap()).collect();
        assert_eq!(got, vec![6, 0x11, 0xf0, 0xf0, 9, 42]);
    }
}

#[test]
fn atomics_on_map_values_from_many_threads() {
    let obj = load("map_atomics");
    let vm = vm(&obj, "atomics", Engine::Interpreter);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..1000 {
                    vm.execute(&mut [0; 3]).unwrap();
                }
            });
        }
    });
    let cells = Array::<u64>::new(Arc::clone(obj.map("cells").unwrap())).unwrap();
    assert_eq!(cells.get(0), Some(4000));
}

#[test]
fn checked_mode_still_applies_to_loaded_programs() {
    // A program that reads past its input gets an error, not host memory.
    let obj = load("packet");
    let err = vm(&obj, "parse_udp", Engine::Interpreter).execute(&mut udp_packet(53, 5)[..]).err();
    assert_eq!(err, None);
    let asm = ebpf_vm::Program::from_asm("ldxdw %r0, [%r1+4096]\nexit").unwrap();
    let vm = Vm::builder(asm).env(obj.env()).checked().build().unwrap();
    assert!(matches!(vm.execute(&mut [0; 8]), Err(ExecError::OutOfBounds { pc: 0, .. })));
}

/// `bpf_probe_read_*` copy memory the execution may read and fail like the kernel's elsewhere
/// (-EFAULT, destination zeroed), strings cut to fit and NUL-terminated; the coarse clocks advance.
/// Every engine, verified and checked (fixture `probe_read.c`).
#[test]
fn probe_read_helpers_and_coarse_clocks() {
    let obj = load("probe_read");
    let efault = 14u64;
    for &engine in ENGINES {
        for verified in [true, false] {
            let build = |name: &str| {
                let b = obj.vm_builder(name).expect("program").engine(engine);
                if verified { b.verified() } else { b.checked() }.build().expect("builds")
            };
            let mut mem = b"hello\0\x01\x02\x03".to_vec();
            let sum: u64 = mem[..8].iter().map(|&b| b as u64).sum();
            assert_eq!(build("probe_bytes").execute(&mut mem), Ok(sum * 1000 + efault * 10 + 1), "{engine:?}");
            let want = 6 << 48 | 4 << 32 | (b'h' as u64) << 16 | efault;
            assert_eq!(build("probe_string").execute(&mut mem), Ok(want), "{engine:?}");
            // No NUL before the input ends: the full read faults (and zeroes its buffer), the cut one
            // stops in time.
            let mut short = b"abc".to_vec();
            let want = (-(efault as i64) as u64 & 0xffff) << 48 | 4 << 32 | efault;
            assert_eq!(build("probe_string").execute(&mut short), Ok(want), "{engine:?}");
            assert_eq!(build("clocks").execute(&mut []), Ok(7), "{engine:?}");
        }
    }
}

/// Queue and stack maps with `bpf_map_push_elem`, `_pop_elem` and `_peek_elem`: FIFO and LIFO
/// order, a full queue making room with `BPF_EXIST`, a full stack refusing, and empty maps found
/// empty; every engine, verified and checked (fixture `queue_stack.c`).
#[test]
fn queue_and_stack_maps() {
    use ebpf_vm::maps::QueueMap;
    for &engine in ENGINES {
        for verified in [true, false] {
            let obj = load("queue_stack");
            let b = obj.vm_builder("queue_stack").expect("program").engine(engine);
            let vm = if verified { b.verified() } else { b.checked() }.build().expect("builds");
            assert_eq!(vm.execute(&mut (1..=8).collect::<Vec<u8>>()), Ok(0x05_06_07_04_03_02), "{engine:?}");
            let fifo = obj.map("fifo").and_then(|m| m.downcast_ref::<QueueMap>()).expect("queue");
            let lifo = obj.map("lifo").and_then(|m| m.downcast_ref::<QueueMap>()).expect("stack");
            assert_eq!(fifo.values(), vec![7u64.to_ne_bytes().to_vec(), 8u64.to_ne_bytes().to_vec()]);
            assert_eq!(lifo.values(), vec![2u64.to_ne_bytes().to_vec(), 1u64.to_ne_bytes().to_vec()]);
            // Two bytes: each map gets two values, and the third pop or peek finds them empty.
            let obj = load("queue_stack");
            let b = obj.vm_builder("queue_stack").expect("program").engine(engine);
            let vm = if verified { b.verified() } else { b.checked() }.build().expect("builds");
            assert_eq!(vm.execute(&mut [9, 10]), Ok(0x09_0a_ff_0a_09_ff), "{engine:?}");
        }
    }
}

/// A Bloom filter with `bpf_map_push_elem` (add) and `bpf_map_peek_elem` (may it be there?): every
/// added value is found, and pop is not supported; every engine, verified and checked (fixture
/// `bloom.c`).
#[test]
fn bloom_filter_map() {
    for &engine in ENGINES {
        for verified in [true, false] {
            let obj = load("bloom");
            let b = obj.vm_builder("bloom").expect("program").engine(engine);
            let vm = if verified { b.verified() } else { b.checked() }.build().expect("builds");
            let mut mem: Vec<u8> = (0..16u32).flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes()).collect();
            let r = vm.execute(&mut mem).expect("runs");
            assert_eq!(r / 100, 16, "every added value found ({engine:?})");
            assert!(r % 100 <= 2, "few false positives among 16: {} ({engine:?})", r % 100);
        }
    }
}

/// An LPM trie of IPv4 routes, filled and matched by the program: the longest matching prefix wins,
/// and an address no prefix covers finds nothing; every engine, verified and checked (fixture
/// `lpm.c`).
#[test]
fn lpm_trie_routes() {
    for &engine in ENGINES {
        for verified in [true, false] {
            let obj = load("lpm");
            let b = obj.vm_builder("route").expect("program").engine(engine);
            let vm = if verified { b.verified() } else { b.checked() }.build().expect("builds");
            for (addr, want) in [
                ([10, 1, 2, 3], 3),
                ([10, 1, 255, 0], 2),
                ([10, 255, 0, 0], 1),
                ([11, 0, 0, 0], 0),
                ([192, 168, 0, 1], 4),
            ] {
                assert_eq!(vm.execute(&mut addr.to_vec()), Ok(want), "{addr:?} {engine:?}");
            }
        }
    }
}

/// `bpf_strncmp` against constant strings (-1, 0 or 1, stopping at a NUL or after `s1_sz` bytes),
/// every engine, verified and checked (fixture `strncmp.c`); a second string that runs out of
/// readable memory before its NUL stops the program with an error naming the argument.
#[test]
fn strncmp_helper() {
    let obj = load("strncmp");
    for &engine in ENGINES {
        for verified in [true, false] {
            let b = obj.vm_builder("compare").expect("program").engine(engine);
            let vm = if verified { b.verified() } else { b.checked() }.build().expect("builds");
            for (input, want) in [(&b"hello"[..], 110), (b"hell", 10), (b"help", 210), (b"z", 221), (b"{", 222)] {
                assert_eq!(vm.execute(&mut input.to_vec()), Ok(want), "{input:?} {engine:?}");
            }
        }
    }
    let text = "mov %r3, %r1\nstdw [%r10-8], 0x61616161\nmov %r1, %r10\nadd %r1, -8\nmov %r2, 8\ncall 182\nexit";
    for &engine in ENGINES {
        let program = ebpf_vm::Program::from_asm(text).expect("assembles");
        let vm = Vm::builder(program).standard_helpers().engine(engine).verified().build().expect("verifies");
        let err = vm.execute(&mut b"aaaa".to_vec()).expect_err("s2 has no NUL in the input");
        assert!(matches!(err, ExecError::Helper { id: 182, .. }), "{err}");
        assert!(err.to_string().contains("NUL-terminated"), "{err}");
    }
}

/// `bpf_map_lookup_percpu_elem` reads any CPU slot of a per-CPU map, and finds nothing past the
/// slots or in a map that is not per-CPU; every engine, verified and checked (fixture
/// `percpu_lookup.c`).
#[test]
fn lookup_percpu_elem_reads_every_cpu_slot() {
    for &engine in ENGINES {
        for verified in [true, false] {
            let obj = load("percpu_lookup");
            let map = obj.map("per_cpu").expect("map");
            for cpu in 0..16u64 {
                map.update(&0u32.to_ne_bytes(), &((cpu + 1) * 100).to_ne_bytes(), 0, cpu as usize).expect("slot");
            }
            let b = obj.vm_builder("sum_cpus").expect("program").engine(engine);
            let vm = if verified { b.verified() } else { b.checked() }.build().expect("builds");
            assert_eq!(vm.execute(&mut [5]), Ok(13_600 + 5), "{engine:?}");
        }
    }
}

/// `bpf_loop` with a callback that reads a map and its caller's stack and writes the caller's stack;
/// it stops the loop once the sum passes a limit. Every engine, verified and checked, against the same
/// loop in Rust (fixture `loop.c`).
#[test]
fn bpf_loop_with_a_callback() {
    use ebpf_vm::maps::Array;
    // The loop in Rust: (sum, iterations made), as the callback and bpf_loop compute them.
    let model = |limit: u64, n: u32| {
        let (mut sum, mut made) = (0u64, 0u32);
        for i in 0..n as u64 {
            sum += (i % 8 + 10) * (i + 1);
            made += 1;
            if sum > limit {
                break;
            }
        }
        (sum, made)
    };
    let mut ran = 0;
    for &engine in ENGINES {
        for verified in [true, false] {
            let obj = load("loop");
            let weights = Array::<u64>::new(Arc::clone(obj.map("weights").expect("weights"))).expect("u64 array");
            for i in 0..8u32 {
                weights.set(i, &(i as u64 + 10)).expect("set");
            }
            let b = obj.vm_builder("loop_sum").expect("program").engine(engine);
            let vm = if verified { b.verified() } else { b.checked() }.build().expect("builds");
            for (limit, n) in [(1000u32, 16u32), (10, 16), (u32::MAX, 100), (5, 0), (0, 1), (100_000, 1000)] {
                let mut input: Vec<u8> = limit.to_ne_bytes().into_iter().chain(n.to_ne_bytes()).collect();
                let (sum, made) = model(limit as u64, n);
                assert_eq!(vm.execute(&mut input), Ok(sum << 32 | made as u64), "{engine:?} {limit} {n}");
                ran += 1;
            }
            let b = obj.vm_builder("loop_errors").expect("program").engine(engine);
            let vm = if verified { b.verified() } else { b.checked() }.build().expect("builds");
            assert_eq!(vm.execute(&mut []), Ok(22 << 16 | 7 << 8), "EINVAL, E2BIG, and 0 iterations");
        }
    }
    assert_eq!(ran, 24);
}

/// `bpf_snprintf` and `bpf_trace_vprintk` (through libbpf's `BPF_SNPRINTF` and a five-argument
/// `bpf_printk`): the buffer holds the formatted text, the line is printed, a small buffer gets a cut,
/// NUL-terminated text and the full size. A `%s` argument is a pointer in the argument array, which
/// the verifier lets a helper read only where pointers may leak (as the kernel, for privileged
/// programs). Every engine, verified and checked (fixture `printf.c`).
#[test]
fn snprintf_and_trace_vprintk() {
    use ebpf_vm::verifier::{Options, VerifyErrorKind};
    for &engine in ENGINES {
        for verified in [true, false] {
            let obj = load("printf");
            let lines = Arc::new(Mutex::new(Vec::new()));
            let sink = Arc::clone(&lines);
            let mut env = obj.env();
            env.set_print_sink(Arc::new(move |l: &str| sink.lock().expect("sink").push(l.to_string())));
            let b = obj.vm_builder("format").expect("program").env(env.clone()).engine(engine);
            let vm = if verified {
                let strict = b.clone().verified().build();
                assert!(
                    matches!(&strict, Err(ebpf_vm::BuildError::Verify(e)) if matches!(e.kind, VerifyErrorKind::PartialPointerSpill { .. })),
                    "{strict:?}"
                );
                let mut leaks = Options::default();
                leaks.allow_pointer_leaks = true;
                b.verifier_options(leaks).verified()
            } else {
                b.checked()
            }
            .build()
            .expect("builds");
            let mut input: Vec<u8> = [12u32, 255].iter().flat_map(|v| v.to_ne_bytes()).collect();
            let text = "a=12 b=ff sum=267";
            assert_eq!(vm.execute(&mut input), Ok(text.len() as u64 + 1), "{engine:?}");
            let line = obj.map(".bss").and_then(|m| m.get(&0u32.to_ne_bytes(), 0)).expect(".bss");
            assert_eq!(&line[..text.len() + 1], format!("{text}\0").as_bytes());
            assert_eq!(lines.lock().expect("sink").as_slice(), [format!("five: 12 255 3060 18 {text}")]);
            let b = obj.vm_builder("truncated").expect("program").engine(engine);
            let vm = if verified { b.verified() } else { b.checked() }.build().expect("builds");
            // "123-456-789" takes 12 bytes with its NUL; 6 hold "123-4" and the NUL.
            assert_eq!(vm.execute(&mut []), Ok(12 << 32 | (b'1' as u64) << 24 | (b'4' as u64) << 16), "{engine:?}");
        }
    }
}

/// `bpf_for_each_map_elem` over an array and a hash map: the callback reads each key and value,
/// sums them in its caller's stack, increments the value in the map, and stops at the key the input
/// names; the result is the number of elements visited. Every engine, verified and checked, against
/// the same walk in Rust (fixture `foreach.c`).
#[test]
fn for_each_map_elem_over_arrays_and_hashes() {
    use ebpf_vm::maps::{Array, TypedHashMap};
    let pack = |sum: u64, keys: u64, n: u64| sum << 32 | (keys & 0xffff) << 16 | n;
    let mut ran = 0;
    for &engine in ENGINES {
        for verified in [true, false] {
            let obj = load("foreach");
            let build = |name: &str| {
                let b = obj.vm_builder(name).expect("program").engine(engine);
                if verified { b.verified() } else { b.checked() }.build().expect("builds")
            };
            let arr = Array::<u64>::new(Arc::clone(obj.map("arr").expect("arr"))).expect("array");
            for i in 0..8u32 {
                arr.set(i, &(i as u64 * 100)).expect("set");
            }
            let walk_array = build("walk_array");
            // All eight: values 0..700, keys 0..7.
            assert_eq!(walk_array.execute(&mut 0u32.to_ne_bytes()), Ok(pack(2800, 28, 8)), "{engine:?}");
            // The values went up by one; stop at key 3, which is visited and counted.
            assert_eq!(walk_array.execute(&mut 3u32.to_ne_bytes()), Ok(pack(600 + 4, 6, 4)), "{engine:?}");
            let values: Vec<u64> = (0..8).map(|i| arr.get(i).expect("value")).collect();
            assert_eq!(values, [2, 102, 202, 302, 401, 501, 601, 701]);
            let counts = TypedHashMap::<u32, u64>::new(Arc::clone(obj.map("counts").expect("counts"))).expect("hash");
            let walk_hash = build("walk_hash");
            assert_eq!(walk_hash.execute(&mut 0u32.to_ne_bytes()), Ok(0), "{engine:?}: an empty map");
            for k in [5u32, 9, 1000, 7] {
                counts.insert(&k, &(k as u64 * 2)).expect("insert");
            }
            assert_eq!(walk_hash.execute(&mut 0u32.to_ne_bytes()), Ok(pack(2042, 1021, 4)), "{engine:?}");
            for k in [5u32, 9, 1000, 7] {
                assert_eq!(counts.get(&k), Some(k as u64 * 2 + 1));
            }
            ran += 1;
        }
    }
    assert_eq!(ran, 4);
}

/// `bpf_spin_lock` around a read-modify-write of a map value: four threads, 5,000 calls each, lose no
/// update. Every engine, verified and checked (fixture `spinlock.c`).
#[test]
fn spin_locks_keep_updates_whole() {
    const THREADS: u64 = 4;
    const CALLS: u64 = 5_000;
    for &engine in ENGINES {
        for verified in [true, false] {
            let obj = load("spinlock");
            let b = obj.vm_builder("locked_add").expect("program").engine(engine);
            let vm = if verified { b.verified() } else { b.checked() }.build().expect("builds");
            std::thread::scope(|s| {
                for t in 0..THREADS {
                    let vm = &vm;
                    s.spawn(move || {
                        for _ in 0..CALLS {
                            let r = vm.execute(&mut (t + 1).to_ne_bytes()).expect("runs");
                            assert!((1..=THREADS * CALLS).contains(&r));
                        }
                    });
                }
            });
            let value = obj.map("counters").and_then(|m| m.get(&0u32.to_ne_bytes(), 0)).expect("value");
            let field = |i: usize| u64::from_ne_bytes(value[i..i + 8].try_into().expect("8 bytes"));
            assert_eq!(u32::from_ne_bytes(value[..4].try_into().expect("4 bytes")), 0, "the lock is free");
            assert_eq!(field(8), THREADS * CALLS, "{engine:?} verified={verified}: count");
            assert_eq!(field(16), CALLS * (1..=THREADS).sum::<u64>(), "{engine:?} verified={verified}: sum");
        }
    }
}

/// `bpf_get_current_uid_gid` gives the ids the host process runs as, `bpf_get_current_pid_tgid` its
/// process id above and the calling thread's id below, as the kernel's; every engine, verified and
/// checked (fixture `ident.c`), on this thread and on another.
#[cfg(unix)]
#[test]
fn process_identity_helpers() {
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata("/proc/self").expect("/proc/self");
    let pid = std::process::id() as u64;
    let tid = || -> u64 {
        let link = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
        link.file_name().and_then(|n| n.to_str()?.parse().ok()).expect("a thread id")
    };
    for &engine in ENGINES {
        for verified in [true, false] {
            let obj = load("ident");
            let b = obj.vm_builder("ident").expect("program").engine(engine);
            let vm = if verified { b.verified() } else { b.checked() }.build().expect("builds");
            let run = |vm: &ebpf_vm::Vm| {
                let mut mem = [0u8; 16];
                assert_eq!(vm.execute(&mut mem), Ok(0));
                let word = |i: usize| u64::from_ne_bytes(mem[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
                (word(0), word(1))
            };
            let (ids, pid_tgid) = run(&vm);
            assert_eq!(ids, (me.gid() as u64) << 32 | me.uid() as u64, "{engine:?}");
            assert_eq!(pid_tgid, pid << 32 | tid(), "{engine:?}");
            let (other, other_tid) = std::thread::scope(|s| s.spawn(|| (run(&vm).1, tid())).join().expect("thread"));
            assert_eq!(other, pid << 32 | other_tid, "{engine:?}: another thread");
            assert_ne!(other_tid, tid());
        }
    }
}

/// Maps of maps: an array of maps with inner maps set by the object, a hash of maps the host fills;
/// the program looks up an inner map, then a counter in it. An empty entry, or one naming a map that
/// does not match the inner definition, gives null. Every engine, verified and checked (fixture
/// `map_in_map.c`).
#[test]
fn maps_of_maps() {
    use ebpf_vm::maps::{Array, MapOfMaps, MapType};
    for &engine in ENGINES {
        for verified in [true, false] {
            let obj = load("map_in_map");
            let build = |name: &str| {
                let b = obj.vm_builder(name).expect("program").engine(engine);
                if verified { b.verified() } else { b.checked() }.build().expect("builds")
            };
            let input =
                |which: u32, slot: u32| which.to_ne_bytes().into_iter().chain(slot.to_ne_bytes()).collect::<Vec<u8>>();
            let outer = obj.map("outer").and_then(|m| m.downcast_ref::<MapOfMaps>()).expect("array of maps");
            assert_eq!(outer.template().map_type, MapType::Array);
            assert_eq!(outer.get(&0u32.to_ne_bytes()), obj.map_index("inner_a"), "set by the object");
            assert_eq!(outer.get(&2u32.to_ne_bytes()), obj.map_index("inner_b"));
            let bump = build("bump_array");
            assert_eq!(bump.execute(&mut input(2, 3)), Ok(1), "{engine:?}");
            assert_eq!(bump.execute(&mut input(2, 3)), Ok(2));
            assert_eq!(bump.execute(&mut input(0, 0)), Ok(1));
            assert_eq!(bump.execute(&mut input(1, 0)), Ok(-1i64 as u64), "an empty entry");
            assert_eq!(bump.execute(&mut input(9, 0)), Ok(-1i64 as u64), "past the array");
            assert_eq!(bump.execute(&mut input(0, 4)), Ok(-2i64 as u64), "past the inner array");
            let b = Array::<u64>::new(Arc::clone(obj.map("inner_b").expect("inner_b"))).expect("u64 array");
            assert_eq!(b.get(3), Some(2), "the program changed the inner map the host sees");
            // The hash of maps, filled by the host.
            let by_id = obj.map("by_id").and_then(|m| m.downcast_ref::<MapOfMaps>()).expect("hash of maps");
            let bump = build("bump_hash");
            assert_eq!(bump.execute(&mut input(77, 1)), Ok(-1i64 as u64), "{engine:?}: empty");
            by_id.set(&77u32.to_ne_bytes(), obj.map_index("inner_c").expect("inner_c")).expect("set");
            assert_eq!(bump.execute(&mut input(77, 1)), Ok(1));
            assert_eq!(bump.execute(&mut input(77, 1)), Ok(2));
            // A map that does not match the inner definition (the hash of maps itself) gives null.
            by_id.set(&5u32.to_ne_bytes(), obj.map_index("by_id").expect("by_id")).expect("set");
            assert_eq!(bump.execute(&mut input(5, 0)), Ok(-1i64 as u64));
            by_id.clear(&77u32.to_ne_bytes()).expect("clear");
            assert_eq!(bump.execute(&mut input(77, 1)), Ok(-1i64 as u64), "cleared");
        }
    }
}
