//! Maps in shared memory: the same map seen through two mappings and from another process; the hash
//! map answers as the in-process one on random operation sequences; a program updates one through the
//! helpers; and memory another process corrupts gives errors or wrong answers, never a panic or an
//! address outside the map.
#![cfg(all(feature = "attach", target_os = "linux"))]

use std::sync::Arc;

use ebpf_vm::maps::{self, Map, MapDef, MapError, MapType, SharedMap, BPF_ANY, BPF_EXIST, BPF_NOEXIST};
use ebpf_vm::{Context, Env, Program, Vm};

/// A name no other test or run uses.
fn name(tag: &str) -> String {
    format!("/ebpf-vm-test-{}-{tag}", std::process::id())
}

fn def(map_type: MapType, key_size: u32, value_size: u32, max_entries: u32) -> MapDef {
    MapDef { map_type, key_size, value_size, max_entries, flags: 0 }
}

#[test]
fn two_mappings_see_one_map() {
    for (tag, d) in [
        ("array", def(MapType::Array, 4, 8, 4)),
        ("percpu", def(MapType::PerCpuArray, 4, 8, 4)),
        ("hash", def(MapType::Hash, 8, 16, 4)),
        ("percpuhash", def(MapType::PerCpuHash, 8, 16, 4)),
    ] {
        let n = name(tag);
        let (a, b) = (SharedMap::create(&n, d, true).expect("created"), SharedMap::open(&n).expect("opened"));
        let (a, b): (&dyn Map, &dyn Map) = (&a, &b);
        assert_eq!(b.def(), d);
        let hash = matches!(d.map_type, MapType::Hash | MapType::PerCpuHash);
        let key = if hash { vec![1u8; d.key_size as usize] } else { 1u32.to_ne_bytes().to_vec() };
        let value: Vec<u8> = (0..d.value_size as u8).collect();
        a.update(&key, &value, BPF_ANY, 1).expect("update");
        assert_eq!(b.get(&key, 1), Some(value.clone()), "{tag}");
        let pa = a.lookup(&key, 1).expect("present");
        let pb = b.lookup(&key, 1).expect("present");
        assert_ne!(pa, pb, "two mappings at two addresses");
        let in_regions = |m: &dyn Map, p: *mut u8| {
            m.regions().iter().any(|r| r.start <= p as u64 && p as u64 + d.value_size as u64 <= r.start + r.len)
        };
        assert!(in_regions(a, pa) && in_regions(b, pb));
        if d.map_type == MapType::Hash {
            assert_eq!(b.delete(&key), Ok(()));
            assert_eq!(a.get(&key, 0), None);
        }
    }
    // The creator removed the names: they open no more.
    assert!(matches!(SharedMap::open(&name("array")), Err(MapError::NotFound)));
}

#[test]
fn names_and_definitions_are_checked() {
    let d = def(MapType::Hash, 4, 8, 4);
    for bad in ["nodash", "/", "/a/b", &format!("/{}", "x".repeat(201))] {
        assert!(matches!(SharedMap::create(bad, d, true), Err(MapError::InvalidDef(_))), "{bad}");
    }
    let n = name("twice");
    let _first = SharedMap::create(&n, d, true).expect("created");
    assert!(SharedMap::create(&n, d, true).is_err(), "the name exists");
    assert!(matches!(
        SharedMap::create(&name("ring"), def(MapType::RingBuf, 0, 0, 4096), true),
        Err(MapError::InvalidDef(_))
    ));
    assert!(matches!(SharedMap::open(&name("nobody")), Err(MapError::NotFound)));
}

#[test]
fn the_shared_hash_answers_as_the_in_process_one() {
    // Random sequences of updates (with every flag), deletes and lookups over 12 keys in maps of 8.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let d = def(MapType::Hash, 4, 8, 8);
    let mut ops = 0;
    for round in 0..20 {
        let shared = SharedMap::create(&name(&format!("model{round}")), d, true).expect("created");
        let shared: &dyn Map = &shared;
        let local = maps::create(d).expect("created");
        for _ in 0..200 {
            let key = ((next() % 12) as u32).to_ne_bytes();
            let value = next().to_ne_bytes();
            match next() % 4 {
                0 | 1 => {
                    let flags = [BPF_ANY, BPF_NOEXIST, BPF_EXIST][(next() % 3) as usize];
                    assert_eq!(shared.update(&key, &value, flags, 0), local.update(&key, &value, flags, 0));
                }
                2 => assert_eq!(shared.delete(&key), local.delete(&key)),
                _ => assert_eq!(shared.get(&key, 0), local.get(&key, 0)),
            }
            ops += 1;
        }
        let mut a: Vec<Vec<u8>> = shared.keys();
        let mut b: Vec<Vec<u8>> = local.keys();
        a.sort();
        b.sort();
        assert_eq!(a, b, "the same keys");
    }
    assert_eq!(ops, 4000);
}

#[test]
fn a_program_counts_in_a_shared_map() {
    let n = name("program");
    let shared: Arc<dyn Map> = Arc::new(SharedMap::create(&n, def(MapType::Hash, 4, 8, 16), true).expect("created"));
    let reader = SharedMap::open(&n).expect("opened");
    let reader: &dyn Map = &reader;
    // key = the input's first word; counts[key] += 1 (inserting 1 the first time).
    let text = "ldxw %r6, [%r1+0]\nstxw [%r10-4], %r6\nmov %r2, %r10\nadd %r2, -4\nlddw %r1, map_fd(0)\ncall 1\n\
                jeq %r0, 0, insert\nmov %r1, 1\nlock add [%r0+0], %r1\nmov %r0, 0\nexit\n\
                insert:\nstdw [%r10-16], 1\nmov %r2, %r10\nadd %r2, -4\nmov %r3, %r10\nadd %r3, -16\nmov %r4, 0\n\
                lddw %r1, map_fd(0)\ncall 2\nexit";
    let mut env = Env::new();
    env.add_standard_helpers();
    env.add_map(shared);
    env.set_context(Context::fixed(4));
    let vm = Vm::builder(Program::from_asm(text).expect("asm")).env(env).verified().build().expect("verifies");
    for k in [3u32, 5, 3, 3, 9, 5] {
        assert_eq!(vm.execute(&mut k.to_ne_bytes()), Ok(0));
    }
    let count = |k: u32| reader.get(&k.to_ne_bytes(), 0).map(|v| u64::from_ne_bytes(v.try_into().expect("8 bytes")));
    assert_eq!((count(3), count(5), count(9), count(4)), (Some(3), Some(2), Some(1), None));
}

/// Runs in a child process: opens the map `EBPF_VM_SHARED_MAP` names and adds 1 to keys 0..100, 1000
/// times each key, as another process would.
#[test]
fn child_writer() {
    let Ok(n) = std::env::var("EBPF_VM_SHARED_MAP") else { return };
    let map = SharedMap::open(&n).expect("the parent's map");
    for _ in 0..1000 {
        for k in 0..100u32 {
            let p = map.lookup(&k.to_ne_bytes(), 0).expect("array element");
            // SAFETY: an 8-byte, 8-aligned value of the map, accessed atomically by everyone.
            unsafe { std::sync::atomic::AtomicU64::from_ptr(p.cast()) }
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

#[test]
fn another_process_writes_what_this_one_reads() {
    let n = name("processes");
    let map = SharedMap::create(&n, def(MapType::Array, 4, 8, 100), true).expect("created");
    let map: &dyn Map = &map;
    let exe = std::env::current_exe().expect("this test binary");
    let children: Vec<_> = (0..2)
        .map(|_| {
            std::process::Command::new(&exe)
                .args(["--exact", "child_writer", "--test-threads", "1"])
                .env("EBPF_VM_SHARED_MAP", &n)
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("child starts")
        })
        .collect();
    for mut c in children {
        assert!(c.wait().expect("child ends").success());
    }
    for k in 0..100u32 {
        let v = map.get(&k.to_ne_bytes(), 0).expect("element");
        assert_eq!(u64::from_ne_bytes(v.try_into().expect("8 bytes")), 2000, "key {k}: two processes, 1000 each");
    }
}

#[test]
fn corrupted_memory_gives_errors_never_a_stray_address() {
    for kind in [MapType::Hash, MapType::LruHash] {
        corrupted(kind);
    }
}

fn corrupted(kind: MapType) {
    let d = def(kind, 4, 8, 8);
    let n = name(&format!("corrupt-{}", kind.name()));
    let map = SharedMap::create(&n, d, true).expect("created");
    for k in 0..6u32 {
        map.update(&k.to_ne_bytes(), &[k as u8; 8], BPF_ANY, 0).expect("room");
    }
    let path = format!("/dev/shm{n}");
    let mut bytes = std::fs::read(&path).expect("the object's file");
    let regions = map.regions();
    let inside = |p: *mut u8| regions.iter().any(|r| r.start <= p as u64 && p as u64 + 8 <= r.start + r.len);
    // Overwrite everything past the header with patterns another process might leave, one at a time.
    let mut x = 0x1234_5678_9abc_def1u64;
    for round in 0..200 {
        for b in bytes.iter_mut().skip(64) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = match round % 4 {
                0 => x as u8,
                1 => 0xff,
                2 => (x % 3) as u8,
                _ => *b ^ (x as u8 & 1),
            };
        }
        std::fs::write(&path, &bytes).expect("written");
        for k in 0..12u32 {
            let key = k.to_ne_bytes();
            if let Some(p) = map.lookup(&key, 0) {
                assert!(inside(p), "round {round}: an address outside the values");
            }
            let _ = map.update(&key, &[1; 8], [BPF_ANY, BPF_NOEXIST, BPF_EXIST][k as usize % 3], 0);
            let _ = map.delete(&key);
        }
        let mut out = [0u8; 4];
        let _ = map.next_key(None, &mut out);
        let _ = (&map as &dyn Map).keys();
    }
}

fn ring(size: u32) -> MapDef {
    def(MapType::RingBuf, 0, 0, size)
}

/// A record of producer `who`: its number, then its sequence number, then padding of a length that
/// varies with the sequence number (so records of several sizes wrap around the buffer).
fn record(who: u32, seq: u32) -> Vec<u8> {
    let mut r = who.to_ne_bytes().to_vec();
    r.extend_from_slice(&seq.to_ne_bytes());
    r.resize(8 + (seq % 23) as usize, who as u8);
    r
}

#[test]
fn ring_buffers_are_checked_when_created_and_opened() {
    let n = name("ringdefs");
    for bad in [ring(0), ring(24), ring(8), def(MapType::RingBuf, 4, 0, 4096), def(MapType::RingBuf, 0, 8, 4096)] {
        assert!(matches!(SharedMap::create_ring_buffer(&n, bad, true), Err(MapError::InvalidDef(_))), "{bad:?}");
    }
    let _ring = SharedMap::create_ring_buffer(&n, ring(4096), true).expect("created");
    assert!(SharedMap::create_ring_buffer(&n, ring(4096), true).is_err(), "the name exists");
    assert!(matches!(SharedMap::open(&n), Err(MapError::InvalidDef(_))), "not an array or hash map");
    let h = name("ringdefs-hash");
    let _hash = SharedMap::create(&h, def(MapType::Hash, 4, 8, 4), true).expect("created");
    assert!(matches!(SharedMap::open_ring_buffer(&h), Err(MapError::InvalidDef(_))), "not a ring buffer");
    assert!(SharedMap::open_any(&h).expect("opened").downcast_ref::<maps::RingBufMap>().is_none());
    assert!(SharedMap::open_any(&n).expect("opened").downcast_ref::<maps::RingBufMap>().is_some());
    assert!(SharedMap::can_hold(MapType::RingBuf) && SharedMap::can_hold(MapType::LruHash));
    assert!(!SharedMap::can_hold(MapType::LpmTrie) && !SharedMap::can_hold(MapType::Queue));
    // A size in the header that the object does not have.
    let path = format!("/dev/shm{n}");
    let mut bytes = std::fs::read(&path).expect("the object's file");
    bytes[24..28].copy_from_slice(&8192u32.to_ne_bytes());
    std::fs::write(&path, &bytes).expect("written");
    assert!(matches!(SharedMap::open_ring_buffer(&n), Err(MapError::InvalidDef(_))));
}

/// Runs in a child process: writes records 0..2000 of producer `EBPF_VM_RING_WHO` into the ring
/// buffer `EBPF_VM_SHARED_RING` names, waiting whenever it is full.
#[test]
fn child_ring_producer() {
    let (Ok(n), Ok(who)) = (std::env::var("EBPF_VM_SHARED_RING"), std::env::var("EBPF_VM_RING_WHO")) else { return };
    let who: u32 = who.parse().expect("a number");
    let ring = SharedMap::open_ring_buffer(&n).expect("the parent's ring buffer");
    for seq in 0..2000 {
        while !ring.output(&record(who, seq)) {
            assert!(!ring.is_corrupted());
            std::thread::yield_now();
        }
    }
}

#[test]
fn processes_write_records_another_consumes_in_order() {
    let n = name("ring-processes");
    // Small enough to fill up and wrap many times while the producers run.
    let ring = SharedMap::create_ring_buffer(&n, ring(1024), true).expect("created");
    let exe = std::env::current_exe().expect("this test binary");
    let mut children: Vec<_> = (1..=2u32)
        .map(|who| {
            std::process::Command::new(&exe)
                .args(["--exact", "child_ring_producer", "--test-threads", "1"])
                .env("EBPF_VM_SHARED_RING", &n)
                .env("EBPF_VM_RING_WHO", who.to_string())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("child starts")
        })
        .collect();
    // This process writes as a third producer while it consumes.
    let mut next = [0u32; 4];
    let mut mine = 0u32;
    let mut running = children.len();
    while running > 0 || ring.query(0) > 0 || mine < 2000 {
        if mine < 2000 && ring.output(&record(3, mine)) {
            mine += 1;
        }
        ring.consume(|r| {
            let who = u32::from_ne_bytes(r[..4].try_into().expect("4 bytes"));
            let seq = u32::from_ne_bytes(r[4..8].try_into().expect("4 bytes"));
            assert!((1..=3).contains(&who), "a record of no producer: {r:?}");
            assert_eq!(seq, next[who as usize], "producer {who}'s records in order");
            assert_eq!(r, record(who, seq).as_slice());
            next[who as usize] += 1;
        });
        running = 0;
        for c in &mut children {
            match c.try_wait().expect("child state") {
                Some(status) => assert!(status.success()),
                None => running += 1,
            }
        }
    }
    assert_eq!(next, [0, 2000, 2000, 2000], "every record of the three producers, once");
    assert!(!ring.is_corrupted());
}

#[test]
fn a_program_writes_a_shared_ring_buffer_another_handle_reads() {
    let n = name("ring-program");
    let shared: Arc<dyn Map> = Arc::new(SharedMap::create_ring_buffer(&n, ring(4096), true).expect("created"));
    let reader = SharedMap::open_ring_buffer(&n).expect("opened");
    // bpf_ringbuf_output(ring, &input[0], 8, 0); then a reserved record with the input's first byte
    // doubled, submitted.
    let text = "mov %r6, %r1\nlddw %r1, map_fd(0)\nmov %r2, %r6\nmov %r3, 8\nmov %r4, 0\ncall 130\n\
                lddw %r1, map_fd(0)\nmov %r2, 4\nmov %r3, 0\ncall 131\njeq %r0, 0, out\n\
                ldxb %r1, [%r6+0]\nlsh %r1, 1\nstxw [%r0+0], %r1\nmov %r1, %r0\nmov %r2, 0\ncall 132\n\
                out:\nmov %r0, 0\nexit";
    let mut env = Env::new();
    env.add_standard_helpers();
    env.add_map(shared);
    env.set_context(Context::fixed(8));
    let vm = Vm::builder(Program::from_asm(text).expect("asm")).env(env).verified().build().expect("verifies");
    for k in [3u64, 5, 7] {
        assert_eq!(vm.execute(&mut k.to_ne_bytes()), Ok(0));
    }
    let got = reader.drain();
    let want: Vec<Vec<u8>> =
        [3u64, 5, 7].iter().flat_map(|&k| [k.to_ne_bytes().to_vec(), (2 * k as u32).to_ne_bytes().to_vec()]).collect();
    assert_eq!(got, want);
}

#[test]
fn corrupted_ring_buffer_memory_stops_the_buffer_never_a_stray_access() {
    let n = name("ring-corrupt");
    let ring = SharedMap::create_ring_buffer(&n, ring(256), true).expect("created");
    let path = format!("/dev/shm{n}");
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut stopped = 0;
    for round in 0..300 {
        for i in 0..5u32 {
            let _ = ring.output(&record(i, round));
        }
        // Everything from the control words on (the definition stays, or opening would fail).
        let mut bytes = std::fs::read(&path).expect("the object's file");
        for b in bytes.iter_mut().skip(40) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = match round % 3 {
                0 => x as u8,
                1 => *b ^ (x as u8 & 3),
                _ => (x % 5) as u8,
            };
        }
        std::fs::write(&path, &bytes).expect("written");
        let opened = SharedMap::open_ring_buffer(&n).expect("the header still matches");
        for r in [&ring, &opened] {
            r.consume(|rec| assert!(rec.len() <= 128, "a record larger than half the buffer: {}", rec.len()));
            let _ = r.output(b"after");
            let _ = (r.query(0), r.query(2), r.query(3));
            stopped += r.is_corrupted() as u32;
        }
    }
    assert!(stopped > 0, "some corruption was noticed");
}

/// The id of a process that has exited.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().expect("`true` runs");
    let pid = child.id();
    assert!(child.wait().expect("it ends").success());
    pid
}

#[test]
fn a_lock_left_by_a_dead_process_is_taken_over() {
    let (h, r) = (name("dead-hash"), name("dead-ring"));
    let hash = SharedMap::create(&h, def(MapType::Hash, 4, 8, 4), true).expect("created");
    let ring = SharedMap::create_ring_buffer(&r, ring(4096), true).expect("created");
    let dead = dead_pid();
    // The lock word (at offset 40 of both) as a process leaves it that died while writing.
    for n in [&h, &r] {
        let path = format!("/dev/shm{n}");
        let mut bytes = std::fs::read(&path).expect("the object's file");
        bytes[40..44].copy_from_slice(&dead.to_ne_bytes());
        std::fs::write(&path, &bytes).expect("written");
    }
    assert_eq!(hash.update(&1u32.to_ne_bytes(), &[7; 8], BPF_ANY, 0), Ok(()));
    assert_eq!((&hash as &dyn Map).get(&1u32.to_ne_bytes(), 0), Some(vec![7; 8]));
    assert!(ring.output(b"after"), "the ring buffer's lock was taken over");
    assert_eq!(ring.drain(), vec![b"after".to_vec()]);
    // A live holder (this process's parent, which outlives the test) is waited for, not taken over.
    let live = std::os::unix::process::parent_id();
    let path = format!("/dev/shm{h}");
    let mut bytes = std::fs::read(&path).expect("the object's file");
    bytes[40..44].copy_from_slice(&live.to_ne_bytes());
    std::fs::write(&path, &bytes).expect("written");
    assert_eq!(hash.update(&2u32.to_ne_bytes(), &[8; 8], BPF_ANY, 0), Err(MapError::Busy));
}

/// The shared LRU hash evicts as a clock: a full map makes room for a new key by evicting an entry
/// no program has used since the clock hand last passed it, never one used since; host reads are not
/// uses; it is never full.
#[test]
fn the_shared_lru_hash_evicts_what_programs_have_not_used() {
    let n = name("lru");
    let map = SharedMap::create(&n, def(MapType::LruHash, 4, 8, 4), true).expect("created");
    let map: &dyn Map = &map;
    let key = |k: u32| k.to_ne_bytes();
    let present = |m: &dyn Map| {
        let mut keys: Vec<u32> = m.keys().iter().map(|k| u32::from_ne_bytes(k[..].try_into().expect("4"))).collect();
        keys.sort();
        keys
    };
    for k in 0..4 {
        map.update(&key(k), &[k as u8; 8], BPF_NOEXIST, 0).expect("room");
    }
    // Full, everything new: the clock goes round once and evicts the first it passes.
    map.update(&key(4), &[4; 8], BPF_ANY, 0).expect("an eviction makes room");
    assert_eq!(present(map), [1, 2, 3, 4]);
    // A program uses 1 (a lookup); the host reads 2 (not a use): 2 goes next, not 1.
    assert!(map.lookup(&key(1), 0).is_some());
    assert_eq!(map.get(&key(2), 0), Some(vec![2; 8]));
    map.update(&key(5), &[5; 8], BPF_ANY, 0).expect("room");
    assert_eq!(present(map), [1, 3, 4, 5], "the unused 2 was evicted, the used 1 kept");
    // An update of a present key is a use too, and evicts nothing.
    map.update(&key(3), &[33; 8], BPF_EXIST, 0).expect("present");
    assert_eq!(present(map), [1, 3, 4, 5]);
    // Many more keys: never full, the newest always present, and at most 4 entries.
    for k in 6..200u32 {
        map.update(&key(k), &[k as u8; 8], BPF_ANY, 0).expect("never full");
        assert_eq!(map.get(&key(k), 0), Some(vec![k as u8; 8]));
        assert!(present(map).len() <= 4);
        if k % 3 == 0 {
            assert!(map.lookup(&key(k), 0).is_some());
        }
    }
    assert_eq!(present(map).len(), 4);
    // Deleting frees a slot that the next insert takes without evicting.
    let before = present(map);
    map.delete(&key(before[0])).expect("present");
    map.update(&key(1000), &[1; 8], BPF_NOEXIST, 0).expect("a free slot");
    let after = present(map);
    assert_eq!(after.len(), 4);
    assert!(before[1..].iter().all(|k| after.contains(k)), "{before:?} -> {after:?}");
    // Another process's view is the same map.
    let other = SharedMap::open(&n).expect("opened");
    assert_eq!(present(&other), after);
}
