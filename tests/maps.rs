//! The semantics of every built-in map kind, through the public API, compared with what the Linux kernel
//! does for the same map type (kernel/bpf/{arraymap,hashtab,ringbuf}.c and Documentation/bpf/map_*.rst).
//! Where a kind deliberately differs from the kernel, the test says so.

use std::collections::BTreeSet;
use std::sync::Arc;

use ebpf_vm::maps::{
    self, Array, ArrayMap, HashMap, Map, MapDef, MapError, MapType, PerCpuArrayMap, ProgArrayMap, RingBufMap,
    TypedHashMap, BPF_ANY, BPF_EXIST, BPF_NOEXIST, MAX_CPUS, MAX_KEY_SIZE, MAX_MAP_BYTES,
};

const ENOENT: i64 = -2;
const E2BIG: i64 = -7;
const EEXIST: i64 = -17;
const EINVAL: i64 = -22;
const EOPNOTSUPP: i64 = -95;
/// `BPF_F_LOCK`: valid in the kernel only for values with a `bpf_spin_lock`, which no map here has.
const BPF_F_LOCK: u64 = 4;

const HASH_KINDS: [MapType; 3] = [MapType::Hash, MapType::LruHash, MapType::PerCpuHash];

fn def(map_type: MapType, key_size: u32, value_size: u32, max_entries: u32) -> MapDef {
    MapDef { map_type, key_size, value_size, max_entries, flags: 0 }
}

fn new_map(map_type: MapType, key_size: u32, value_size: u32, max_entries: u32) -> Arc<dyn Map> {
    maps::create(def(map_type, key_size, value_size, max_entries)).expect("valid definition")
}

fn k(i: u32) -> [u8; 4] {
    i.to_ne_bytes()
}

fn v(x: u64) -> [u8; 8] {
    x.to_ne_bytes()
}

/// The 8-byte value of `key` in slot `cpu`, through the host copy.
fn val(map: &Arc<dyn Map>, key: &[u8], cpu: usize) -> Option<u64> {
    map.get(key, cpu).map(|b| u64::from_ne_bytes(b[..8].try_into().unwrap()))
}

/// Whether `ptr` lies, with `len` bytes after it, inside one of the map's regions.
fn in_regions(map: &Arc<dyn Map>, ptr: *mut u8, len: u64) -> bool {
    let a = ptr as u64;
    map.regions().iter().any(|r| a >= r.start && a + len <= r.start + r.len)
}

fn ringbuf(size: u32) -> Arc<dyn Map> {
    new_map(MapType::RingBuf, 0, 0, size)
}

fn rb(map: &Arc<dyn Map>) -> &RingBufMap {
    map.downcast_ref::<RingBufMap>().expect("a ring buffer")
}

/// Bytes of record number `n` with `len` bytes, distinct from its neighbours'.
fn pattern(n: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (n as u8).wrapping_mul(31).wrapping_add(i as u8)).collect()
}

// ---------------------------------------------------------------------------------------------------
// Types, errors and definitions

#[test]
fn map_type_numbers_are_the_kernels() {
    let known = [
        (MapType::Hash, 1),
        (MapType::Array, 2),
        (MapType::ProgArray, 3),
        (MapType::PerfEventArray, 4),
        (MapType::PerCpuHash, 5),
        (MapType::PerCpuArray, 6),
        (MapType::LruHash, 9),
        (MapType::RingBuf, 27),
    ];
    for (t, n) in known {
        assert_eq!(t.raw(), n);
        assert_eq!(MapType::from_raw(n), t);
    }
    for n in [0, 7, 8, 10, 26, 28, 1000, u32::MAX] {
        assert_eq!(MapType::from_raw(n), MapType::Other(n));
        assert_eq!(MapType::from_raw(n).raw(), n);
    }
}

#[test]
fn errno_values_are_linuxs() {
    assert_eq!(MapError::NotFound.errno(), ENOENT);
    assert_eq!(MapError::Exists.errno(), EEXIST);
    assert_eq!(MapError::Full.errno(), E2BIG);
    assert_eq!(MapError::InvalidFlags(3).errno(), EINVAL);
    assert_eq!(MapError::KeySize { got: 3, want: 4 }.errno(), EINVAL);
    assert_eq!(MapError::ValueSize { got: 3, want: 4 }.errno(), EINVAL);
    assert_eq!(MapError::InvalidDef("x").errno(), EINVAL);
    assert_eq!(MapError::Unsupported.errno(), EOPNOTSUPP);
}

#[test]
fn invalid_definitions_are_rejected_without_panicking() {
    use MapType::*;
    let huge = u32::MAX;
    let bad = [
        // Arrays: 4-byte keys, non-zero values and capacity, bounded storage.
        def(Array, 0, 8, 4),
        def(Array, 8, 8, 4),
        def(Array, 4, 0, 4),
        def(Array, 4, 8, 0),
        def(Array, 4, huge, 4),
        def(Array, 4, 8, huge),
        def(Array, 4, 1 << 20, 1 << 10), // 1 GiB
        def(PerCpuArray, 4, 0, 4),
        def(PerCpuArray, 4, 8, 0),
        def(PerCpuArray, 4, 1 << 20, 32), // 32 MiB per CPU slot, 512 MiB in all
        def(PerCpuArray, 4, huge, huge),
        // Hashes: non-zero sizes and capacity, keys of at most 512 bytes, bounded storage.
        def(Hash, 0, 8, 4),
        def(Hash, 4, 0, 4),
        def(Hash, 4, 8, 0),
        def(Hash, MAX_KEY_SIZE + 1, 8, 4),
        def(Hash, huge, 8, 4),
        def(Hash, 4, huge, 4),
        def(Hash, 4, 8, huge),
        def(Hash, huge, huge, huge),
        def(LruHash, 0, 8, 4),
        def(LruHash, 4, 0, 4),
        def(LruHash, 4, 8, 0),
        def(LruHash, MAX_KEY_SIZE + 1, 8, 4),
        def(LruHash, 4, 8, huge),
        def(PerCpuHash, 0, 8, 4),
        def(PerCpuHash, 4, 0, 4),
        def(PerCpuHash, 4, 8, 0),
        def(PerCpuHash, MAX_KEY_SIZE + 1, 8, 4),
        def(PerCpuHash, 4, 1 << 20, 32),
        // Program arrays: 4-byte keys and values.
        def(ProgArray, 4, 8, 4),
        def(ProgArray, 8, 4, 4),
        def(ProgArray, 4, 4, 0),
        // Ring buffers: a power of two of at least 16 bytes, no keys or values, bounded storage.
        def(RingBuf, 0, 0, 0),
        def(RingBuf, 0, 0, 8),
        def(RingBuf, 0, 0, 100),
        def(RingBuf, 0, 0, 4097),
        def(RingBuf, 4, 0, 4096),
        def(RingBuf, 0, 4, 4096),
        def(RingBuf, 0, 0, 1 << 29),
        def(RingBuf, 0, 0, 1 << 31),
        def(RingBuf, 0, 0, huge),
        // Kinds this crate does not build.
        def(Other(4), 4, 4, 4),
        def(Other(99), 4, 8, 4),
    ];
    for d in bad {
        // Malformed, larger than a map may be, or larger than the default budget of 1 GiB.
        match maps::create(d) {
            Err(MapError::InvalidDef(_) | MapError::OverBudget { .. } | MapError::UnsupportedType(_)) => {}
            Err(e) => panic!("{d:?}: {e:?}, expected InvalidDef, OverBudget or UnsupportedType"),
            Ok(_) => panic!("{d:?} was accepted"),
        }
    }
    // A sparse program array of any capacity costs nothing until it holds something.
    assert!(maps::create(def(ProgArray, 4, 4, huge)).is_ok());
    // The concrete constructors agree.
    assert!(matches!(ArrayMap::new(def(Array, 4, 0, 1)), Err(MapError::InvalidDef(_))));
    assert!(matches!(PerCpuArrayMap::new(def(PerCpuArray, 3, 8, 1)), Err(MapError::InvalidDef(_))));
    assert!(matches!(HashMap::new(def(Hash, 0, 8, 1), maps::HashKind::Plain), Err(MapError::InvalidDef(_))));
    assert!(matches!(ProgArrayMap::new(def(ProgArray, 4, 4, 0)), Err(MapError::InvalidDef(_))));
    assert!(matches!(RingBufMap::new(def(RingBuf, 0, 0, 24)), Err(MapError::InvalidDef(_))));
}

#[test]
fn edge_definitions_are_accepted() {
    use MapType::*;
    for d in [
        def(Array, 4, 1, 1),
        def(PerCpuArray, 4, 1, 1),
        def(Hash, MAX_KEY_SIZE, 1, 1),
        def(LruHash, 1, 1, 1),
        def(PerCpuHash, MAX_KEY_SIZE, 1, 1),
        def(ProgArray, 4, 4, 1),
        def(RingBuf, 0, 0, 16),
        def(RingBuf, 0, 0, 4096),
        // Large capacities cost nothing until used.
        def(Hash, 8, 8, 1 << 20),
        def(Array, 4, 8, (MAX_MAP_BYTES / 8 / 4) as u32),
    ] {
        let m = maps::create(d).unwrap_or_else(|e| panic!("{d:?}: {e}"));
        assert_eq!(m.def(), d);
    }
    // A maximal key works end to end.
    let m = new_map(Hash, MAX_KEY_SIZE, 8, 2);
    let key = [0xabu8; MAX_KEY_SIZE as usize];
    m.update(&key, &v(5), BPF_ANY, 0).unwrap();
    assert_eq!(val(&m, &key, 0), Some(5));
}

#[test]
fn concrete_kinds_and_cpu_counts() {
    let cases: [(MapType, u32, u32, u32, usize); 7] = [
        (MapType::Array, 4, 8, 4, 1),
        (MapType::PerCpuArray, 4, 8, 4, MAX_CPUS),
        (MapType::Hash, 4, 8, 4, 1),
        (MapType::LruHash, 4, 8, 4, 1),
        (MapType::PerCpuHash, 4, 8, 4, MAX_CPUS),
        (MapType::ProgArray, 4, 4, 4, 1),
        (MapType::RingBuf, 0, 0, 64, 1),
    ];
    for (t, ks, vs, n, cpus) in cases {
        let m = new_map(t, ks, vs, n);
        assert_eq!(m.cpus(), cpus, "{t:?}");
        assert_eq!(m.def(), def(t, ks, vs, n));
        assert_eq!(m.downcast_ref::<ArrayMap>().is_some(), t == MapType::Array, "{t:?}");
        assert_eq!(m.downcast_ref::<PerCpuArrayMap>().is_some(), t == MapType::PerCpuArray, "{t:?}");
        assert_eq!(m.downcast_ref::<HashMap>().is_some(), HASH_KINDS.contains(&t), "{t:?}");
        assert_eq!(m.downcast_ref::<ProgArrayMap>().is_some(), t == MapType::ProgArray, "{t:?}");
        assert_eq!(m.downcast_ref::<RingBufMap>().is_some(), t == MapType::RingBuf, "{t:?}");
    }
}

// ---------------------------------------------------------------------------------------------------
// Arrays

#[test]
fn array_starts_zeroed_and_obeys_update_flags() {
    for t in [MapType::Array, MapType::PerCpuArray] {
        let m = new_map(t, 4, 8, 4);
        for i in 0..4 {
            for cpu in 0..m.cpus() {
                assert_eq!(val(&m, &k(i), cpu), Some(0), "{t:?} [{i}] cpu {cpu}");
            }
        }
        // BPF_ANY and BPF_EXIST replace: every index exists.
        m.update(&k(0), &v(10), BPF_ANY, 0).unwrap();
        assert_eq!(val(&m, &k(0), 0), Some(10));
        m.update(&k(1), &v(11), BPF_EXIST, 0).unwrap();
        assert_eq!(val(&m, &k(1), 0), Some(11));
        m.update(&k(0), &v(20), BPF_EXIST, 0).unwrap();
        assert_eq!(val(&m, &k(0), 0), Some(20));
        // BPF_NOEXIST fails on any index, written or not, and changes nothing.
        for i in 0..4 {
            let e = m.update(&k(i), &v(99), BPF_NOEXIST, 0).unwrap_err();
            assert_eq!(e, MapError::Exists, "{t:?} [{i}]");
            assert_eq!(e.errno(), EEXIST);
        }
        assert_eq!(val(&m, &k(0), 0), Some(20));
        assert_eq!(val(&m, &k(2), 0), Some(0));
        // Unknown flags, BPF_F_LOCK without a spin lock included, are EINVAL and change nothing.
        for flags in [3, BPF_F_LOCK, BPF_F_LOCK | BPF_EXIST, 8, u64::MAX] {
            let e = m.update(&k(0), &v(99), flags, 0).unwrap_err();
            assert_eq!(e, MapError::InvalidFlags(flags));
            assert_eq!(e.errno(), EINVAL);
        }
        assert_eq!(val(&m, &k(0), 0), Some(20));
        // The kernel checks the flags before the index.
        assert_eq!(m.update(&k(9), &v(1), 3, 0), Err(MapError::InvalidFlags(3)));
    }
}

#[test]
fn array_index_and_size_errors() {
    for t in [MapType::Array, MapType::PerCpuArray] {
        let m = new_map(t, 4, 8, 4);
        for i in [4, 5, u32::MAX] {
            assert_eq!(m.lookup(&k(i), 0), None, "{t:?} [{i}]");
            assert_eq!(m.get(&k(i), 0), None);
            assert_eq!(m.update(&k(i), &v(1), BPF_ANY, 0), Err(MapError::OutOfRange(i)));
            assert_eq!(m.update(&k(i), &v(1), BPF_EXIST, 0), Err(MapError::OutOfRange(i)));
            // The kernel checks the index before BPF_NOEXIST.
            assert_eq!(m.update(&k(i), &v(1), BPF_NOEXIST, 0), Err(MapError::OutOfRange(i)));
        }
        assert_eq!(m.update(&[0u8; 3], &v(1), BPF_ANY, 0), Err(MapError::KeySize { got: 3, want: 4 }));
        assert_eq!(m.update(&[0u8; 8], &v(1), BPF_ANY, 0), Err(MapError::KeySize { got: 8, want: 4 }));
        assert_eq!(m.update(&k(0), &[1u8; 7], BPF_ANY, 0), Err(MapError::ValueSize { got: 7, want: 8 }));
        assert_eq!(m.update(&k(0), &[1u8; 9], BPF_ANY, 0), Err(MapError::ValueSize { got: 9, want: 8 }));
        assert_eq!(m.update(&k(0), &[], BPF_ANY, 0), Err(MapError::ValueSize { got: 0, want: 8 }));
        assert_eq!(m.lookup(&[0u8; 3], 0), None);
        assert_eq!(m.lookup(&[], 0), None);
        assert_eq!(val(&m, &k(0), 0), Some(0), "failed updates wrote nothing");
    }
}

#[test]
fn array_update_out_of_range_is_e2big() {
    for t in [MapType::Array, MapType::PerCpuArray] {
        let m = new_map(t, 4, 8, 4);
        for flags in [BPF_ANY, BPF_NOEXIST, BPF_EXIST] {
            assert_eq!(m.update(&k(4), &v(1), flags, 0).unwrap_err().errno(), E2BIG, "{t:?} flags {flags}");
        }
    }
}

#[test]
fn array_elements_cannot_be_deleted() {
    for t in [MapType::Array, MapType::PerCpuArray] {
        let m = new_map(t, 4, 8, 4);
        m.update(&k(1), &v(7), BPF_ANY, 0).unwrap();
        assert!(m.delete(&k(1)).is_err(), "{t:?}");
        assert!(m.delete(&k(9)).is_err());
        assert!(m.delete(&[0u8; 2]).is_err());
        assert_eq!(val(&m, &k(1), 0), Some(7), "a refused delete keeps the value");
    }
}

#[test]
fn array_delete_errno_is_einval() {
    for t in [MapType::Array, MapType::PerCpuArray] {
        let m = new_map(t, 4, 8, 4);
        assert_eq!(m.delete(&k(0)).unwrap_err().errno(), EINVAL, "{t:?}");
    }
}

#[test]
fn array_next_key_walks_every_index() {
    for t in [MapType::Array, MapType::PerCpuArray] {
        let m = new_map(t, 4, 8, 5);
        let mut out = [0u8; 4];
        m.next_key(None, &mut out).unwrap();
        assert_eq!(u32::from_ne_bytes(out), 0);
        for i in 0..4 {
            m.next_key(Some(&k(i)), &mut out).unwrap();
            assert_eq!(u32::from_ne_bytes(out), i + 1);
        }
        assert_eq!(m.next_key(Some(&k(4)), &mut out), Err(MapError::NotFound));
        // An index out of range restarts from 0, as in array_map_get_next_key.
        for i in [5, 6, u32::MAX] {
            out = [0xff; 4];
            m.next_key(Some(&k(i)), &mut out).unwrap();
            assert_eq!(u32::from_ne_bytes(out), 0, "after {i}");
        }
        let keys: Vec<u32> = m.keys().iter().map(|b| u32::from_ne_bytes(b[..].try_into().unwrap())).collect();
        assert_eq!(keys, [0, 1, 2, 3, 4]);
    }
    let one = new_map(MapType::Array, 4, 8, 1);
    let mut out = [0u8; 4];
    assert_eq!(one.next_key(Some(&k(0)), &mut out), Err(MapError::NotFound));
    assert_eq!(one.keys().len(), 1);
}

#[test]
fn array_value_pointers_are_stable_and_shared() {
    let m = new_map(MapType::Array, 4, 12, 3);
    let p: Vec<*mut u8> = (0..3).map(|i| m.lookup(&k(i), 0).unwrap()).collect();
    for (i, &pi) in p.iter().enumerate() {
        assert!(in_regions(&m, pi, 12), "[{i}] is inside the map's region");
        assert_eq!(pi as usize % 8, 0, "values are 8-byte aligned");
        // A shared array has one slot whatever the CPU.
        assert_eq!(m.lookup(&k(i as u32), 5), Some(pi));
        assert_eq!(m.lookup(&k(i as u32), usize::MAX), Some(pi));
    }
    assert!(p[1] as usize - p[0] as usize >= 12 && p[2] as usize - p[1] as usize >= 12, "values do not overlap");
    // A write through the pointer is what the host reads, and an update lands where the pointer is.
    // SAFETY: `p[1]` addresses 12 bytes of value storage that live as long as `m`.
    unsafe { p[1].cast::<u64>().write_unaligned(0x1122_3344_5566_7788) };
    assert_eq!(val(&m, &k(1), 0), Some(0x1122_3344_5566_7788));
    m.update(&k(1), &[9u8; 12], BPF_ANY, 0).unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { p[1].cast::<[u8; 12]>().read_unaligned() }, [9u8; 12]);
    assert_eq!(m.lookup(&k(1), 0), Some(p[1]));
}

#[test]
fn per_cpu_array_slots_are_isolated() {
    let m = new_map(MapType::PerCpuArray, 4, 8, 3);
    assert_eq!(m.cpus(), MAX_CPUS);
    for cpu in 0..MAX_CPUS {
        m.update(&k(1), &v(100 + cpu as u64), BPF_ANY, cpu).unwrap();
    }
    let mut ptrs = BTreeSet::new();
    for cpu in 0..MAX_CPUS {
        assert_eq!(val(&m, &k(1), cpu), Some(100 + cpu as u64), "cpu {cpu}");
        assert_eq!(val(&m, &k(0), cpu), Some(0), "other indices untouched");
        assert_eq!(val(&m, &k(2), cpu), Some(0));
        let p = m.lookup(&k(1), cpu).unwrap();
        assert!(in_regions(&m, p, 8));
        ptrs.insert(p as usize);
    }
    assert_eq!(ptrs.len(), MAX_CPUS, "each CPU slot has its own value");
    // One slot's update leaves the others alone.
    m.update(&k(1), &v(7), BPF_EXIST, 3).unwrap();
    assert_eq!(val(&m, &k(1), 3), Some(7));
    assert_eq!(val(&m, &k(1), 2), Some(102));
    assert_eq!(val(&m, &k(1), 4), Some(104));
    // There is no slot past the last CPU.
    assert_eq!(m.lookup(&k(1), MAX_CPUS), None);
    assert!(m.update(&k(1), &v(1), BPF_ANY, MAX_CPUS).is_err());
    assert!(m.update(&k(1), &v(1), BPF_ANY, usize::MAX).is_err());
}

// ---------------------------------------------------------------------------------------------------
// Hashes

#[test]
fn hash_update_flags() {
    for t in HASH_KINDS {
        let m = new_map(t, 4, 8, 8);
        // BPF_EXIST on a missing key: ENOENT, nothing created.
        let e = m.update(&k(1), &v(1), BPF_EXIST, 0).unwrap_err();
        assert_eq!(e, MapError::NotFound, "{t:?}");
        assert_eq!(e.errno(), ENOENT);
        assert_eq!(m.lookup(&k(1), 0), None);
        // BPF_NOEXIST creates.
        m.update(&k(1), &v(10), BPF_NOEXIST, 0).unwrap();
        assert_eq!(val(&m, &k(1), 0), Some(10));
        // BPF_NOEXIST on an existing key: EEXIST, value kept.
        let e = m.update(&k(1), &v(11), BPF_NOEXIST, 0).unwrap_err();
        assert_eq!(e, MapError::Exists);
        assert_eq!(e.errno(), EEXIST);
        assert_eq!(val(&m, &k(1), 0), Some(10));
        // BPF_EXIST replaces.
        m.update(&k(1), &v(12), BPF_EXIST, 0).unwrap();
        assert_eq!(val(&m, &k(1), 0), Some(12));
        // BPF_ANY creates and replaces.
        m.update(&k(2), &v(20), BPF_ANY, 0).unwrap();
        assert_eq!(val(&m, &k(2), 0), Some(20));
        m.update(&k(2), &v(21), BPF_ANY, 0).unwrap();
        assert_eq!(val(&m, &k(2), 0), Some(21));
        assert_eq!(m.downcast_ref::<HashMap>().unwrap().len(), 2);
        // Unknown flags (BPF_F_LOCK too: no value has a spin lock) are EINVAL and change nothing.
        for flags in [3, BPF_F_LOCK, BPF_F_LOCK | BPF_NOEXIST, 1 << 40, u64::MAX] {
            let e = m.update(&k(1), &v(99), flags, 0).unwrap_err();
            assert_eq!(e, MapError::InvalidFlags(flags));
            assert_eq!(e.errno(), EINVAL);
            assert_eq!(m.update(&k(3), &v(99), flags, 0), Err(MapError::InvalidFlags(flags)));
        }
        assert_eq!(val(&m, &k(1), 0), Some(12));
        assert_eq!(m.lookup(&k(3), 0), None);
        assert_eq!(m.downcast_ref::<HashMap>().unwrap().len(), 2);
    }
}

#[test]
fn hash_delete() {
    for t in HASH_KINDS {
        let m = new_map(t, 4, 8, 4);
        let e = m.delete(&k(1)).unwrap_err();
        assert_eq!(e, MapError::NotFound, "{t:?}");
        assert_eq!(e.errno(), ENOENT);
        m.update(&k(1), &v(1), BPF_ANY, 0).unwrap();
        m.update(&k(2), &v(2), BPF_ANY, 0).unwrap();
        m.delete(&k(1)).unwrap();
        assert_eq!(m.lookup(&k(1), 0), None);
        assert_eq!(val(&m, &k(2), 0), Some(2), "other keys stay");
        assert_eq!(m.delete(&k(1)), Err(MapError::NotFound), "a second delete finds nothing");
        assert_eq!(m.update(&k(1), &v(3), BPF_EXIST, 0), Err(MapError::NotFound));
        m.update(&k(1), &v(3), BPF_NOEXIST, 0).unwrap();
        assert_eq!(val(&m, &k(1), 0), Some(3));
        let h = m.downcast_ref::<HashMap>().unwrap();
        assert_eq!(h.len(), 2);
        m.delete(&k(1)).unwrap();
        m.delete(&k(2)).unwrap();
        assert!(h.is_empty());
    }
}

#[test]
fn hash_key_and_value_size_errors() {
    for t in HASH_KINDS {
        let m = new_map(t, 6, 8, 4);
        let key = [1u8; 6];
        assert_eq!(m.update(&[1u8; 5], &v(1), BPF_ANY, 0), Err(MapError::KeySize { got: 5, want: 6 }), "{t:?}");
        assert_eq!(m.update(&[1u8; 7], &v(1), BPF_ANY, 0), Err(MapError::KeySize { got: 7, want: 6 }));
        assert_eq!(m.update(&[], &v(1), BPF_ANY, 0), Err(MapError::KeySize { got: 0, want: 6 }));
        assert_eq!(m.update(&key, &[0u8; 4], BPF_ANY, 0), Err(MapError::ValueSize { got: 4, want: 8 }));
        assert_eq!(m.update(&key, &[0u8; 16], BPF_ANY, 0), Err(MapError::ValueSize { got: 16, want: 8 }));
        assert_eq!(m.delete(&[1u8; 5]), Err(MapError::KeySize { got: 5, want: 6 }));
        assert!(m.keys().is_empty(), "failed updates created nothing");
        m.update(&key, &v(4), BPF_ANY, 0).unwrap();
        // A key that is a prefix or extension of a stored key is not that key.
        assert_eq!(m.lookup(&key[..5], 0), None);
        assert_eq!(m.lookup(&[1u8; 7], 0), None);
        let mut short = [0u8; 5];
        assert_eq!(m.next_key(None, &mut short), Err(MapError::KeySize { got: 5, want: 6 }));
        assert_eq!(val(&m, &key, 0), Some(4));
    }
}

#[test]
fn full_hash_refuses_new_keys_but_replaces_existing_ones() {
    for t in [MapType::Hash, MapType::PerCpuHash] {
        let m = new_map(t, 4, 8, 4);
        for i in 0..4 {
            m.update(&k(i), &v(i as u64), BPF_NOEXIST, 0).unwrap();
        }
        for flags in [BPF_ANY, BPF_NOEXIST] {
            let e = m.update(&k(4), &v(4), flags, 0).unwrap_err();
            assert_eq!(e, MapError::Full, "{t:?} flags {flags}");
            assert_eq!(e.errno(), E2BIG);
        }
        assert_eq!(m.lookup(&k(4), 0), None);
        // The kernel checks the flags against the existing entry before looking for room.
        assert_eq!(m.update(&k(4), &v(4), BPF_EXIST, 0), Err(MapError::NotFound));
        assert_eq!(m.update(&k(0), &v(4), BPF_NOEXIST, 0), Err(MapError::Exists));
        // Replacing still works when full.
        m.update(&k(0), &v(100), BPF_ANY, 0).unwrap();
        m.update(&k(1), &v(101), BPF_EXIST, 0).unwrap();
        assert_eq!(val(&m, &k(0), 0), Some(100));
        assert_eq!(val(&m, &k(1), 0), Some(101));
        assert_eq!(m.downcast_ref::<HashMap>().unwrap().len(), 4);
        // No entry was lost.
        assert_eq!(val(&m, &k(2), 0), Some(2));
        assert_eq!(val(&m, &k(3), 0), Some(3));
    }
}

#[test]
fn hash_delete_then_insert_reuses_the_freed_slot() {
    for t in HASH_KINDS {
        let m = new_map(t, 4, 8, 3);
        for i in 0..3 {
            m.update(&k(i), &v(i as u64 + 1), BPF_ANY, 0).unwrap();
        }
        let freed = m.lookup(&k(1), 0).unwrap();
        m.delete(&k(1)).unwrap();
        m.update(&k(7), &v(70), BPF_NOEXIST, 0).unwrap();
        assert_eq!(m.lookup(&k(7), 0), Some(freed), "{t:?}: the new key takes the freed slot");
        assert_eq!(val(&m, &k(7), 0), Some(70));
        assert_eq!(val(&m, &k(0), 0), Some(1));
        assert_eq!(val(&m, &k(2), 0), Some(3));
        if t == MapType::Hash {
            assert_eq!(m.update(&k(8), &v(80), BPF_ANY, 0), Err(MapError::Full), "full again");
        }
        // Many cycles of delete and insert never run out of slots.
        for round in 0..100u32 {
            let old = if round == 0 { 7 } else { 1000 + round - 1 };
            m.delete(&k(old)).unwrap();
            m.update(&k(1000 + round), &v(round as u64), BPF_NOEXIST, 0).unwrap();
            assert_eq!(m.lookup(&k(1000 + round), 0), Some(freed));
        }
        assert_eq!(m.keys().len(), 3);
    }
}

#[test]
fn hash_value_pointers_are_stable() {
    for t in HASH_KINDS {
        let m = new_map(t, 8, 16, 512);
        let key = 42u64.to_ne_bytes();
        m.update(&key, &[1u8; 16], BPF_ANY, 0).unwrap();
        let p = m.lookup(&key, 0).unwrap();
        assert!(in_regions(&m, p, 16), "{t:?}");
        assert_eq!(p as usize % 8, 0, "values are 8-byte aligned");
        // Many other keys (the index grows and rehashes) do not move it.
        for i in 0..400u64 {
            m.update(&(1000 + i).to_ne_bytes(), &[2u8; 16], BPF_ANY, 0).unwrap();
        }
        assert_eq!(m.lookup(&key, 0), Some(p));
        // Replacing the value keeps the address (stronger than the kernel, whose plain hash update
        // swaps in another element).
        m.update(&key, &[3u8; 16], BPF_EXIST, 0).unwrap();
        assert_eq!(m.lookup(&key, 0), Some(p));
        // The pointer is the value: writes through it are what the host reads.
        // SAFETY: `p` addresses 16 bytes of value storage that live as long as `m`.
        unsafe { p.write_bytes(0x5a, 16) };
        assert_eq!(m.get(&key, 0).unwrap(), vec![0x5a; 16]);
        // Every live key has its own value.
        let mut seen = BTreeSet::new();
        for key in m.keys() {
            let q = m.lookup(&key, 0).unwrap();
            assert!(in_regions(&m, q, 16));
            assert!(seen.insert(q as usize), "two keys share a value");
        }
        assert_eq!(seen.len(), 401);
        // After a delete the old pointer still addresses map memory (programs may hold it).
        m.delete(&key).unwrap();
        assert!(in_regions(&m, p, 16));
    }
}

#[test]
fn hash_next_key_visits_every_key_once() {
    for t in HASH_KINDS {
        let m = new_map(t, 4, 8, 64);
        let mut out = [0u8; 4];
        assert_eq!(m.next_key(None, &mut out), Err(MapError::NotFound), "{t:?}: empty map");
        let inserted: BTreeSet<u32> = (0..50).map(|i| i * 7 + 3).collect();
        for &i in &inserted {
            m.update(&k(i), &v(i as u64), BPF_ANY, 0).unwrap();
        }
        let mut visited = Vec::new();
        let mut prev: Option<[u8; 4]> = None;
        loop {
            match m.next_key(prev.as_ref().map(|p| &p[..]), &mut out) {
                Ok(()) => {
                    visited.push(u32::from_ne_bytes(out));
                    prev = Some(out);
                }
                Err(e) => {
                    assert_eq!(e, MapError::NotFound);
                    assert_eq!(e.errno(), ENOENT);
                    break;
                }
            }
            assert!(visited.len() <= inserted.len(), "iteration does not end");
        }
        assert_eq!(visited.len(), inserted.len(), "each key once");
        assert_eq!(visited.iter().copied().collect::<BTreeSet<_>>(), inserted);
        // next_key(None) is the first key of that order; `keys()` follows the same order.
        m.next_key(None, &mut out).unwrap();
        assert_eq!(u32::from_ne_bytes(out), visited[0]);
        let keys: Vec<u32> = m.keys().iter().map(|b| u32::from_ne_bytes(b[..].try_into().unwrap())).collect();
        assert_eq!(keys, visited);
        // After the last key: ENOENT.
        assert_eq!(m.next_key(Some(&k(*visited.last().unwrap())), &mut out), Err(MapError::NotFound));
    }
}

#[test]
fn hash_next_key_of_a_missing_key_restarts() {
    for t in HASH_KINDS {
        let m = new_map(t, 4, 8, 16);
        for i in 0..10 {
            m.update(&k(i), &v(0), BPF_ANY, 0).unwrap();
        }
        let mut first = [0u8; 4];
        m.next_key(None, &mut first).unwrap();
        let mut out = [0u8; 4];
        for missing in [10, 999, u32::MAX] {
            out = [0xee; 4];
            m.next_key(Some(&k(missing)), &mut out).unwrap();
            assert_eq!(out, first, "{t:?}: a key not in the map restarts from the first key");
        }
        // A key of the wrong length is not in the map either.
        m.next_key(Some(&[1u8; 3]), &mut out).unwrap();
        assert_eq!(out, first);
    }
}

#[test]
fn hash_can_be_drained_while_iterating() {
    // A common way to empty a map from user space: delete the current key, then ask for the key after
    // it. The deleted key is no longer in the map, so next_key restarts from the first remaining key.
    for t in HASH_KINDS {
        let m = new_map(t, 4, 8, 32);
        for i in 0..20 {
            m.update(&k(i), &v(0), BPF_ANY, 0).unwrap();
        }
        let mut deleted = BTreeSet::new();
        let mut cur = [0u8; 4];
        let mut prev: Option<[u8; 4]> = None;
        while m.next_key(prev.as_ref().map(|p| &p[..]), &mut cur).is_ok() {
            m.delete(&cur).unwrap();
            assert!(deleted.insert(u32::from_ne_bytes(cur)), "{t:?}: a deleted key came back");
            prev = Some(cur);
        }
        assert_eq!(deleted, (0..20).collect(), "{t:?}");
        assert!(m.downcast_ref::<HashMap>().unwrap().is_empty());
    }
}

#[test]
fn lru_evicts_the_least_recently_used_entry() {
    let m = new_map(MapType::LruHash, 4, 8, 3);
    let present = |m: &Arc<dyn Map>| -> BTreeSet<u32> {
        m.keys().iter().map(|b| u32::from_ne_bytes(b[..].try_into().unwrap())).collect()
    };
    for i in 1..=3 {
        m.update(&k(i), &v(i as u64), BPF_NOEXIST, 0).unwrap();
    }
    // Use order, oldest first: 1 2 3. A lookup is a use: 2 3 1.
    assert!(m.lookup(&k(1), 0).is_some());
    // An update of an existing key is a use: 3 1 2.
    m.update(&k(2), &v(22), BPF_EXIST, 0).unwrap();
    // A full LRU map never refuses: inserting 4 evicts 3 -> 1 2 4.
    m.update(&k(4), &v(4), BPF_NOEXIST, 0).unwrap();
    assert_eq!(present(&m), BTreeSet::from([1, 2, 4]));
    assert_eq!(m.lookup(&k(3), 0), None);
    // Inserting 5 evicts 1 -> 2 4 5.
    m.update(&k(5), &v(5), BPF_ANY, 0).unwrap();
    assert_eq!(present(&m), BTreeSet::from([2, 4, 5]));
    // Look up 2 -> 4 5 2; inserting 6 evicts 4 -> 5 2 6.
    assert!(m.lookup(&k(2), 0).is_some());
    m.update(&k(6), &v(6), BPF_ANY, 0).unwrap();
    assert_eq!(present(&m), BTreeSet::from([2, 5, 6]));
    // A freed slot is used before anything is evicted: delete 5 -> 2 6; insert 7 -> 2 6 7.
    m.delete(&k(5)).unwrap();
    m.update(&k(7), &v(7), BPF_ANY, 0).unwrap();
    assert_eq!(present(&m), BTreeSet::from([2, 6, 7]));
    // Insert 8 evicts 2, then 9 evicts 6.
    m.update(&k(8), &v(8), BPF_ANY, 0).unwrap();
    assert_eq!(present(&m), BTreeSet::from([6, 7, 8]));
    m.update(&k(9), &v(9), BPF_ANY, 0).unwrap();
    assert_eq!(present(&m), BTreeSet::from([7, 8, 9]));
    // Surviving values are intact, and a new key starts from its own value, not the victim's.
    assert_eq!(val(&m, &k(7), 0), Some(7));
    assert_eq!(val(&m, &k(8), 0), Some(8));
    assert_eq!(val(&m, &k(9), 0), Some(9));
    assert_eq!(m.downcast_ref::<HashMap>().unwrap().len(), 3);
}

#[test]
fn lru_eviction_over_a_long_sequence_matches_a_model() {
    // A reference LRU (a list, oldest first) driven by the same pseudo-random operations.
    let cap = 8usize;
    let m = new_map(MapType::LruHash, 4, 8, cap as u32);
    let mut model: Vec<u32> = Vec::new();
    let mut seed = 0x2545_f491u64;
    for step in 0..3000 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let key = ((seed >> 33) % 20) as u32;
        match (seed >> 60) % 4 {
            0 | 1 => {
                m.update(&k(key), &v(step), BPF_ANY, 0).unwrap();
                if let Some(pos) = model.iter().position(|&x| x == key) {
                    model.remove(pos);
                } else if model.len() == cap {
                    model.remove(0);
                }
                model.push(key);
            }
            2 => {
                let found = m.lookup(&k(key), 0).is_some();
                let pos = model.iter().position(|&x| x == key);
                assert_eq!(found, pos.is_some(), "step {step}: lookup {key}");
                if let Some(pos) = pos {
                    model.remove(pos);
                    model.push(key);
                }
            }
            _ => {
                let r = m.delete(&k(key));
                match model.iter().position(|&x| x == key) {
                    Some(pos) => {
                        assert_eq!(r, Ok(()), "step {step}");
                        model.remove(pos);
                    }
                    None => assert_eq!(r, Err(MapError::NotFound), "step {step}"),
                }
            }
        }
    }
    let keys: BTreeSet<u32> = m.keys().iter().map(|b| u32::from_ne_bytes(b[..].try_into().unwrap())).collect();
    assert_eq!(keys, model.iter().copied().collect());
}

#[test]
fn lru_failed_operations_are_not_uses_and_evict_nothing() {
    let m = new_map(MapType::LruHash, 4, 8, 2);
    m.update(&k(1), &v(1), BPF_ANY, 0).unwrap();
    m.update(&k(2), &v(2), BPF_ANY, 0).unwrap();
    // A refused BPF_NOEXIST on 1 does not make 1 recent; a BPF_EXIST on a missing key evicts nothing.
    assert_eq!(m.update(&k(1), &v(9), BPF_NOEXIST, 0), Err(MapError::Exists));
    assert_eq!(m.update(&k(3), &v(3), BPF_EXIST, 0), Err(MapError::NotFound));
    assert_eq!(m.update(&k(3), &v(3), 7, 0), Err(MapError::InvalidFlags(7)));
    assert_eq!(m.lookup(&k(3), 0), None);
    assert_eq!(m.keys().len(), 2);
    // A lookup of a missing key changes nothing either.
    assert_eq!(m.lookup(&k(9), 0), None);
    // So 1 is still the oldest.
    m.update(&k(4), &v(4), BPF_ANY, 0).unwrap();
    assert_eq!(m.lookup(&k(1), 0), None);
    assert_eq!(val(&m, &k(2), 0), Some(2));
    assert_eq!(val(&m, &k(4), 0), Some(4));
}

#[test]
fn lru_host_reads_do_not_refresh_entries() {
    let m = new_map(MapType::LruHash, 4, 8, 2);
    m.update(&k(1), &v(1), BPF_ANY, 0).unwrap();
    m.update(&k(2), &v(2), BPF_ANY, 0).unwrap();
    // The host dumps the map and reads 1 (as user space would with bpf_map_lookup_elem), then a program
    // inserts 3.
    let typed = TypedHashMap::<u32, u64>::new(Arc::clone(&m)).unwrap();
    assert_eq!(typed.entries().len(), 2);
    assert_eq!(typed.get(&1), Some(1));
    assert_eq!(val(&m, &k(1), 0), Some(1));
    m.update(&k(3), &v(3), BPF_ANY, 0).unwrap();
    assert_eq!(m.lookup(&k(1), 0), None, "1 was the least recently used by programs");
}

#[test]
fn per_cpu_hash_slots_are_isolated_and_new_keys_start_zeroed() {
    let m = new_map(MapType::PerCpuHash, 4, 8, 4);
    assert_eq!(m.cpus(), MAX_CPUS);
    // A new key written from CPU 3: its value there, zero in every other slot (pcpu_init_value).
    m.update(&k(1), &v(33), BPF_NOEXIST, 3).unwrap();
    for cpu in 0..MAX_CPUS {
        assert_eq!(val(&m, &k(1), cpu), Some(if cpu == 3 { 33 } else { 0 }), "cpu {cpu}");
    }
    // Another CPU's update of the existing key touches only its slot.
    m.update(&k(1), &v(55), BPF_EXIST, 5).unwrap();
    assert_eq!(val(&m, &k(1), 3), Some(33));
    assert_eq!(val(&m, &k(1), 5), Some(55));
    assert_eq!(val(&m, &k(1), 4), Some(0));
    // The flags are about the key, not the slot: slot 7 was never written but the key exists.
    assert_eq!(m.update(&k(1), &v(1), BPF_NOEXIST, 7), Err(MapError::Exists));
    m.update(&k(1), &v(77), BPF_EXIST, 7).unwrap();
    // Each slot has its own address.
    let ptrs: BTreeSet<usize> = (0..MAX_CPUS).map(|c| m.lookup(&k(1), c).unwrap() as usize).collect();
    assert_eq!(ptrs.len(), MAX_CPUS);
    for &p in &ptrs {
        assert!(in_regions(&m, p as *mut u8, 8));
    }
    // There is no slot past the last CPU.
    assert_eq!(m.lookup(&k(1), MAX_CPUS), None);
    assert!(m.update(&k(1), &v(1), BPF_ANY, MAX_CPUS).is_err());
    assert!(m.update(&k(2), &v(1), BPF_ANY, usize::MAX).is_err());
    assert_eq!(m.lookup(&k(2), 0), None, "a refused update creates nothing");
    // Delete removes the key from every slot.
    m.delete(&k(1)).unwrap();
    for cpu in 0..MAX_CPUS {
        assert_eq!(m.lookup(&k(1), cpu), None);
    }
}

#[test]
fn per_cpu_hash_reused_slots_carry_no_stale_values() {
    let m = new_map(MapType::PerCpuHash, 4, 8, 1);
    m.update(&k(1), &v(1), BPF_ANY, 0).unwrap();
    for cpu in 1..MAX_CPUS {
        m.update(&k(1), &v(100 + cpu as u64), BPF_ANY, cpu).unwrap();
    }
    m.delete(&k(1)).unwrap();
    // The only slot is reused by another key, written from CPU 2: the other CPUs read zero.
    m.update(&k(2), &v(2), BPF_ANY, 2).unwrap();
    for cpu in 0..MAX_CPUS {
        assert_eq!(val(&m, &k(2), cpu), Some(if cpu == 2 { 2 } else { 0 }), "cpu {cpu}");
    }
    // Same for an evicted LRU slot.
    let lru = new_map(MapType::LruHash, 4, 16, 1);
    lru.update(&k(1), &[0xffu8; 16], BPF_ANY, 0).unwrap();
    lru.update(&k(2), &[0x01u8; 16], BPF_ANY, 0).unwrap();
    assert_eq!(lru.get(&k(2), 0).unwrap(), vec![1u8; 16]);
    assert_eq!(lru.get(&k(1), 0), None);
}

#[test]
fn shared_hashes_ignore_the_cpu() {
    for t in [MapType::Hash, MapType::LruHash] {
        let m = new_map(t, 4, 8, 4);
        m.update(&k(1), &v(1), BPF_ANY, 9).unwrap();
        let p = m.lookup(&k(1), 0).unwrap();
        assert_eq!(m.lookup(&k(1), 9), Some(p), "{t:?}");
        assert_eq!(m.lookup(&k(1), usize::MAX), Some(p));
        m.update(&k(1), &v(2), BPF_ANY, usize::MAX).unwrap();
        assert_eq!(val(&m, &k(1), 0), Some(2));
    }
}

#[test]
fn concurrent_inserts_never_exceed_the_capacity() {
    let m = new_map(MapType::Hash, 4, 8, 256);
    let ok: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4u32)
            .map(|t| {
                let m = &m;
                s.spawn(move || {
                    let mut ok = 0;
                    for i in 0..100 {
                        match m.update(&k(t * 1000 + i), &v((t * 1000 + i) as u64), BPF_NOEXIST, 0) {
                            Ok(()) => ok += 1,
                            Err(e) => assert_eq!(e, MapError::Full),
                        }
                    }
                    ok
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(ok, 256);
    let keys = m.keys();
    assert_eq!(keys.len(), 256);
    for key in keys {
        let i = u32::from_ne_bytes(key[..].try_into().unwrap());
        assert_eq!(val(&m, &key, 0), Some(i as u64), "each value is its own key's");
    }
}

// ---------------------------------------------------------------------------------------------------
// Program arrays

fn prog_array(n: u32) -> Arc<dyn Map> {
    new_map(MapType::ProgArray, 4, 4, n)
}

#[test]
fn prog_array_set_get_delete() {
    let m = prog_array(4);
    let pa = m.downcast_ref::<ProgArrayMap>().unwrap();
    for i in 0..4 {
        assert_eq!(pa.get(i), None, "starts empty");
    }
    pa.set(0, 7).unwrap();
    pa.set(3, 0).unwrap();
    assert_eq!(pa.get(0), Some(7));
    assert_eq!(pa.get(3), Some(0), "program 0 is a program");
    assert_eq!(pa.get(1), None);
    assert_eq!(pa.set(4, 1), Err(MapError::OutOfRange(4)));
    assert_eq!(pa.get(4), None);
    assert_eq!(pa.get(u32::MAX), None);
    // Through the Map trait: index keys and program-id values.
    m.update(&k(1), &5u32.to_ne_bytes(), BPF_ANY, 0).unwrap();
    assert_eq!(pa.get(1), Some(5));
    m.update(&k(1), &6u32.to_ne_bytes(), BPF_ANY, 0).unwrap();
    assert_eq!(pa.get(1), Some(6), "BPF_ANY replaces");
    // Programs cannot read a program array (the kernel's lookup is EOPNOTSUPP for them).
    assert_eq!(m.lookup(&k(1), 0), None);
    assert_eq!(m.get(&k(1), 0), None);
    // Delete clears; deleting an empty index is ENOENT.
    m.delete(&k(1)).unwrap();
    assert_eq!(pa.get(1), None);
    let e = m.delete(&k(1)).unwrap_err();
    assert_eq!(e, MapError::NotFound);
    assert_eq!(e.errno(), ENOENT);
    assert!(m.delete(&k(4)).is_err());
    assert_eq!(pa.get(0), Some(7), "other indices untouched");
}

#[test]
fn prog_array_flags_and_sizes() {
    let m = prog_array(4);
    let pa = m.downcast_ref::<ProgArrayMap>().unwrap();
    for flags in [3, BPF_F_LOCK, u64::MAX] {
        assert_eq!(m.update(&k(0), &1u32.to_ne_bytes(), flags, 0), Err(MapError::InvalidFlags(flags)));
    }
    assert_eq!(m.update(&[0u8; 3], &1u32.to_ne_bytes(), BPF_ANY, 0), Err(MapError::KeySize { got: 3, want: 4 }));
    assert_eq!(m.update(&k(0), &[1u8; 8], BPF_ANY, 0), Err(MapError::ValueSize { got: 8, want: 4 }));
    assert_eq!(m.update(&k(0), &[1u8; 2], BPF_ANY, 0), Err(MapError::ValueSize { got: 2, want: 4 }));
    assert_eq!(m.delete(&[0u8; 5]), Err(MapError::KeySize { got: 5, want: 4 }));
    assert!(m.update(&k(4), &1u32.to_ne_bytes(), BPF_ANY, 0).is_err());
    assert_eq!(pa.get(0), None, "failed updates set nothing");
}

#[test]
fn prog_array_accepts_only_bpf_any() {
    let m = prog_array(4);
    for flags in [BPF_NOEXIST, BPF_EXIST] {
        let e = m.update(&k(0), &1u32.to_ne_bytes(), flags, 0).unwrap_err();
        assert_eq!(e.errno(), EINVAL, "flags {flags}");
    }
}

#[test]
fn prog_array_out_of_range_is_e2big() {
    let m = prog_array(4);
    assert_eq!(m.update(&k(4), &1u32.to_ne_bytes(), BPF_ANY, 0).unwrap_err().errno(), E2BIG);
    assert_eq!(m.delete(&k(4)).unwrap_err().errno(), E2BIG);
}

#[test]
fn prog_array_keeps_every_id_it_accepts() {
    let m = prog_array(2);
    let pa = m.downcast_ref::<ProgArrayMap>().unwrap();
    let r = pa.set(0, u32::MAX);
    assert!(r.is_err() || pa.get(0) == Some(u32::MAX), "set returned {r:?} but get is {:?}", pa.get(0));
}

#[test]
/// Unlike the kernel, which lists every index, keys are the indices that are set: a sparse array of
/// billions of entries must not make a dump endless.
fn prog_array_next_key_walks_the_indices_that_are_set() {
    let m = prog_array(u32::MAX);
    let pa = m.downcast_ref::<ProgArrayMap>().unwrap();
    for i in [7, 1, u32::MAX - 1] {
        pa.set(i, 9).unwrap();
    }
    let mut out = [0u8; 4];
    m.next_key(None, &mut out).unwrap();
    assert_eq!(u32::from_ne_bytes(out), 1);
    m.next_key(Some(&k(1)), &mut out).unwrap();
    assert_eq!(u32::from_ne_bytes(out), 7);
    m.next_key(Some(&k(3)), &mut out).unwrap();
    assert_eq!(u32::from_ne_bytes(out), 7, "from any index, set or not");
    m.next_key(Some(&k(7)), &mut out).unwrap();
    assert_eq!(u32::from_ne_bytes(out), u32::MAX - 1);
    assert_eq!(m.next_key(Some(&k(u32::MAX - 1)), &mut out), Err(MapError::NotFound));
    assert_eq!(m.next_key(Some(&k(u32::MAX)), &mut out), Err(MapError::NotFound));
    assert_eq!(m.keys().len(), 3);
    assert_eq!(pa.len(), 3);
}

// ---------------------------------------------------------------------------------------------------
// Ring buffers

#[test]
fn ringbuf_output_then_consume_in_order() {
    let m = ringbuf(4096);
    let r = rb(&m);
    let records: Vec<Vec<u8>> = (0..20).map(|n| pattern(n, 1 + (n as usize * 37) % 200)).collect();
    for rec in &records {
        assert!(r.output(rec));
    }
    let mut got = Vec::new();
    assert_eq!(r.consume(|b| got.push(b.to_vec())), records.len());
    assert_eq!(got, records);
    assert_eq!(r.consume(|_| panic!("nothing left")), 0);
    assert!(r.drain().is_empty());
    // And again after the first batch.
    assert!(r.output(b"again"));
    assert_eq!(r.drain(), vec![b"again".to_vec()]);
}

#[test]
fn ringbuf_has_no_keys_or_values() {
    let m = ringbuf(64);
    assert_eq!(m.lookup(&[], 0), None);
    assert_eq!(m.update(&[], &[], BPF_ANY, 0), Err(MapError::Unsupported));
    assert_eq!(m.delete(&[]), Err(MapError::Unsupported));
    assert!(m.next_key(None, &mut []).is_err());
    assert!(m.keys().is_empty());
}

#[test]
fn ringbuf_empty_records() {
    let m = ringbuf(64);
    let r = rb(&m);
    assert!(r.output(&[]));
    assert_eq!(r.drain(), vec![Vec::<u8>::new()]);
}

// ---------------------------------------------------------------------------------------------------
// Typed handles

#[test]
fn typed_hash_map_round_trip() {
    let m = new_map(MapType::Hash, 4, 8, 8);
    let t = TypedHashMap::<u32, u64>::new(Arc::clone(&m)).unwrap();
    assert_eq!(t.get(&1), None);
    t.insert(&1, &100).unwrap();
    t.insert(&2, &200).unwrap();
    t.insert(&1, &101).unwrap();
    assert_eq!(t.get(&1), Some(101));
    assert_eq!(t.get(&2), Some(200));
    // Same bytes as the untyped view.
    assert_eq!(val(&m, &k(1), 0), Some(101));
    m.update(&k(3), &v(300), BPF_ANY, 0).unwrap();
    assert_eq!(t.get(&3), Some(300));
    let mut entries = t.entries();
    entries.sort();
    assert_eq!(entries, [(1, 101), (2, 200), (3, 300)]);
    t.remove(&2).unwrap();
    assert_eq!(t.remove(&2), Err(MapError::NotFound));
    assert_eq!(t.get(&2), None);
    assert_eq!(t.get_per_cpu(&1), Some(vec![101]), "one slot for a shared map");
    assert_eq!(t.get_per_cpu(&2), None);
    // Capacity errors come through.
    for i in 10..16 {
        t.insert(&i, &0).unwrap();
    }
    assert_eq!(t.insert(&99, &0), Err(MapError::Full));
    // Arrays of Pod types work as keys and values.
    let m = new_map(MapType::LruHash, 3, 4, 2);
    let t = TypedHashMap::<[u8; 3], [u16; 2]>::new(m).unwrap();
    t.insert(&[1, 2, 3], &[7, 8]).unwrap();
    assert_eq!(t.get(&[1, 2, 3]), Some([7, 8]));
    assert_eq!(t.get(&[1, 2, 4]), None);
}

#[test]
fn typed_array_round_trip() {
    let m = new_map(MapType::Array, 4, 8, 3);
    let a = Array::<i64>::new(Arc::clone(&m)).unwrap();
    assert_eq!(a.len(), 3);
    assert!(!a.is_empty());
    assert_eq!(a.get(0), Some(0));
    a.set(2, &-5).unwrap();
    assert_eq!(a.get(2), Some(-5));
    assert_eq!(m.get(&k(2), 0).unwrap(), (-5i64).to_ne_bytes());
    assert_eq!(a.get(3), None);
    assert_eq!(a.set(3, &1), Err(MapError::OutOfRange(3)));
    assert_eq!(a.get_per_cpu(2), Some(vec![-5]));
    assert_eq!(a.get_per_cpu(3), None);
    // A typed array also views a hash map with 4-byte keys.
    let h = new_map(MapType::Hash, 4, 8, 2);
    let ah = Array::<u64>::new(Arc::clone(&h)).unwrap();
    ah.set(7, &70).unwrap();
    assert_eq!(ah.get(7), Some(70));
}

#[test]
fn typed_per_cpu_views() {
    let m = new_map(MapType::PerCpuArray, 4, 4, 2);
    let a = Array::<u32>::new(Arc::clone(&m)).unwrap();
    m.update(&k(1), &5u32.to_ne_bytes(), BPF_ANY, 4).unwrap();
    a.set(1, &9).unwrap(); // slot 0
    let per_cpu = a.get_per_cpu(1).unwrap();
    assert_eq!(per_cpu.len(), MAX_CPUS);
    assert_eq!(per_cpu[0], 9);
    assert_eq!(per_cpu[4], 5);
    assert_eq!(per_cpu.iter().filter(|&&x| x != 0).count(), 2);
    assert_eq!(a.get(1), Some(9), "get reads slot 0");

    let m = new_map(MapType::PerCpuHash, 2, 8, 4);
    let t = TypedHashMap::<u16, u64>::new(Arc::clone(&m)).unwrap();
    m.update(&3u16.to_ne_bytes(), &v(33), BPF_ANY, 6).unwrap();
    assert_eq!(t.get(&3), Some(0), "slot 0 of a key created from CPU 6 is zero");
    let per_cpu = t.get_per_cpu(&3).unwrap();
    assert_eq!(per_cpu.len(), MAX_CPUS);
    assert_eq!(per_cpu[6], 33);
    assert_eq!(per_cpu.iter().sum::<u64>(), 33);
    assert_eq!(t.get_per_cpu(&4), None);
}

#[test]
fn typed_handles_check_sizes() {
    let h = new_map(MapType::Hash, 4, 8, 2);
    assert!(TypedHashMap::<u32, u64>::new(Arc::clone(&h)).is_ok());
    assert_eq!(TypedHashMap::<u64, u64>::new(Arc::clone(&h)).err(), Some(MapError::KeySize { got: 8, want: 4 }));
    assert_eq!(TypedHashMap::<u16, u64>::new(Arc::clone(&h)).err(), Some(MapError::KeySize { got: 2, want: 4 }));
    assert_eq!(TypedHashMap::<u32, u32>::new(Arc::clone(&h)).err(), Some(MapError::ValueSize { got: 4, want: 8 }));
    assert_eq!(
        TypedHashMap::<u32, [u64; 2]>::new(Arc::clone(&h)).err(),
        Some(MapError::ValueSize { got: 16, want: 8 })
    );
    let a = new_map(MapType::Array, 4, 2, 2);
    assert!(Array::<u16>::new(Arc::clone(&a)).is_ok());
    assert_eq!(Array::<u32>::new(Arc::clone(&a)).err(), Some(MapError::ValueSize { got: 4, want: 2 }));
    assert_eq!(Array::<u8>::new(Arc::clone(&a)).err(), Some(MapError::ValueSize { got: 1, want: 2 }));
    let h8 = new_map(MapType::Hash, 8, 2, 2);
    assert_eq!(Array::<u16>::new(h8).err(), Some(MapError::KeySize { got: 4, want: 8 }));
    // A ring buffer has no keys or values to type.
    assert!(Array::<u32>::new(ringbuf(64)).is_err());
    assert!(TypedHashMap::<u32, u32>::new(ringbuf(64)).is_err());
}

/// A design limit, unlike the kernel (which maps its buffer twice so that records may wrap): records
/// stay contiguous through a padding record at the end of the buffer, so a record with its header
/// takes at most half the buffer; larger ones are refused.
#[test]
fn ringbuf_records_take_at_most_half_the_buffer() {
    let m = ringbuf(4096);
    let r = rb(&m);
    let largest = pattern(1, 2048 - 8);
    assert!(r.output(&largest));
    assert!(!r.output(&pattern(2, 2048 - 7)));
    assert_eq!(r.drain(), vec![largest]);
}

#[test]
fn frozen_arrays_refuse_updates_and_other_kinds_cannot_be_frozen() {
    for kind in [MapType::Array, MapType::PerCpuArray] {
        let m = new_map(kind, 4, 8, 2);
        m.update(&k(1), &v(7), BPF_ANY, 0).unwrap();
        assert!(!m.frozen());
        m.freeze().unwrap();
        assert!(m.frozen(), "{kind:?}");
        assert_eq!(m.update(&k(1), &v(8), BPF_ANY, 0), Err(MapError::Frozen), "{kind:?}");
        assert_eq!(MapError::Frozen.errno(), -1);
        assert_eq!(val(&m, &k(1), 0), Some(7));
        m.freeze().unwrap(); // freezing twice is harmless
    }
    for m in [new_map(MapType::Hash, 4, 8, 2), ringbuf(4096)] {
        assert_eq!(m.freeze(), Err(MapError::Unsupported));
        assert!(!m.frozen());
    }
}

/// `freeze` returns only when no update is in progress, and no update lands after it: the value seen
/// right after freezing stays, however many threads were writing. (Concurrent updates of one array
/// value may interleave, as the kernel's do without a lock; what freezing promises is that none is
/// still landing.)
#[test]
fn freezing_while_threads_update_leaves_one_final_value() {
    let word_value = |w: u64| -> Vec<u8> { (0..8).flat_map(|_| w.to_le_bytes()).collect() };
    for round in 0..20u64 {
        let m = new_map(MapType::Array, 4, 64, 1);
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let writers: Vec<_> = (1..=3u64)
            .map(|t| {
                let (m, running) = (m.clone(), running.clone());
                std::thread::spawn(move || {
                    for n in 0.. {
                        match m.update(&k(0), &word_value(t << 32 | n), BPF_ANY, 0) {
                            Ok(()) if n == 0 => {
                                running.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            }
                            Ok(()) => {}
                            Err(MapError::Frozen) => return n,
                            Err(e) => panic!("{e}"),
                        }
                    }
                    unreachable!()
                })
            })
            .collect();
        // Freeze while every writer is in its loop.
        while running.load(std::sync::atomic::Ordering::SeqCst) < 3 {
            std::thread::yield_now();
        }
        m.freeze().unwrap();
        let at_freeze = m.get(&k(0), 0).unwrap();
        let updates: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
        assert!(updates >= 3, "round {round}: every writer ran");
        assert_eq!(m.get(&k(0), 0).unwrap(), at_freeze, "round {round}: an update landed after freeze returned");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// A plain hash map against a model (a `BTreeMap` with the map's capacity): random updates with each
    /// flag, deletions, lookups and walks over a small key space, so that keys are deleted, their slots
    /// reused by other keys, and the map filled. Every case runs (none is skipped).
    #[test]
    #[cfg_attr(miri, ignore = "256 random sequences: too slow under Miri")]
    fn hash_map_matches_a_model(ops in proptest::collection::vec((0u8..4, 0u32..24, 0u64..1000, 0u64..3), 1..200)) {
        let m = new_map(MapType::Hash, 4, 8, 16);
        let mut model = std::collections::BTreeMap::new();
        for (op, key, value, flags) in ops {
            match op {
                0 => {
                    let got = m.update(&k(key), &v(value), flags, 0).map_err(|e| e.errno());
                    let present = model.contains_key(&key);
                    let want = match flags {
                        BPF_NOEXIST if present => Err(EEXIST),
                        BPF_EXIST if !present => Err(ENOENT),
                        _ if !present && model.len() == 16 => Err(E2BIG),
                        _ => Ok(()),
                    };
                    proptest::prop_assert_eq!(got, want, "update {} {}", key, flags);
                    if want.is_ok() {
                        model.insert(key, value);
                    }
                }
                1 => {
                    let got = m.delete(&k(key)).map_err(|e| e.errno());
                    let want = model.remove(&key).map(|_| ()).ok_or(ENOENT);
                    proptest::prop_assert_eq!(got, want, "delete {}", key);
                }
                2 => proptest::prop_assert_eq!(val(&m, &k(key), 0), model.get(&key).copied(), "lookup {}", key),
                _ => {
                    let mut seen = BTreeSet::new();
                    let mut out = [0u8; 4];
                    let mut prev: Option<[u8; 4]> = None;
                    while m.next_key(prev.as_ref().map(|p| &p[..]), &mut out).is_ok() {
                        proptest::prop_assert!(seen.insert(u32::from_ne_bytes(out)), "a key twice");
                        prev = Some(out);
                    }
                    proptest::prop_assert_eq!(seen, model.keys().copied().collect::<BTreeSet<u32>>());
                }
            }
        }
    }
}

/// Queues and stacks from the host: order, capacity, `BPF_EXIST`, sizes and flags.
#[test]
fn queues_and_stacks_from_the_host() {
    use ebpf_vm::maps::{Order, QueueMap};
    let def = |ty| MapDef { map_type: ty, key_size: 0, value_size: 2, max_entries: 3, flags: 0 };
    let q = QueueMap::new(def(MapType::Queue), Order::Fifo).expect("queue");
    let s = QueueMap::new(def(MapType::Stack), Order::Lifo).expect("stack");
    for m in [&q, &s] {
        for v in [[1, 0], [2, 0], [3, 0]] {
            m.push(&v, BPF_ANY).expect("room");
        }
        assert_eq!(m.push(&[4, 0], BPF_ANY), Err(MapError::Full));
        assert_eq!(m.push(&[4, 0], 4), Err(MapError::InvalidFlags(4)));
        assert_eq!(m.push(&[4], BPF_ANY), Err(MapError::ValueSize { got: 1, want: 2 }));
        m.push(&[4, 0], BPF_EXIST).expect("the oldest makes room");
        assert_eq!(m.len(), 3);
    }
    let mut out = [0u8; 2];
    let drain = |m: &QueueMap, out: &mut [u8; 2]| {
        let mut got = Vec::new();
        while m.pop(out).is_ok() {
            got.push(out[0]);
        }
        got
    };
    q.peek(&mut out).expect("not empty");
    assert_eq!(out, [2, 0]);
    assert_eq!(drain(&q, &mut out), vec![2, 3, 4]);
    assert_eq!(drain(&s, &mut out), vec![4, 3, 2]);
    assert_eq!(q.pop(&mut out), Err(MapError::NotFound));
    assert_eq!(s.peek(&mut out), Err(MapError::NotFound));
    // Through the Map trait: update pushes, lookups find nothing, keys do not exist.
    let m = maps::create(def(MapType::Queue)).expect("created");
    m.update(&[], &[7, 0], BPF_ANY, 0).expect("pushed");
    assert_eq!(m.update(&[0], &[7, 0], BPF_ANY, 0), Err(MapError::KeySize { got: 1, want: 0 }));
    assert_eq!(m.lookup(&[], 0), None);
    assert!(m.keys().is_empty());
    assert_eq!(m.delete(&[]), Err(MapError::Unsupported));
    // Definitions: no key, a value, a capacity.
    for bad in [
        MapDef { key_size: 4, ..def(MapType::Queue) },
        MapDef { value_size: 0, ..def(MapType::Stack) },
        MapDef { max_entries: 0, ..def(MapType::Queue) },
    ] {
        assert!(matches!(maps::create(bad), Err(MapError::InvalidDef(_))), "{bad:?}");
    }
}

/// The verifier checks that `bpf_map_pop_elem` writes a whole value into memory the program owns.
#[test]
fn popping_into_too_small_a_buffer_is_refused() {
    let queue =
        || maps::create(MapDef { map_type: MapType::Queue, key_size: 0, value_size: 8, max_entries: 2, flags: 0 });
    let pop = |off: i32| format!("mov %r2, %r10\nadd %r2, {off}\nlddw %r1, map_fd(0)\ncall 88\nmov %r0, 0\nexit");
    let build = |text: &str| {
        let program = ebpf_vm::Program::from_asm(text).expect("assembles");
        ebpf_vm::Vm::builder(program).standard_helpers().map(queue().expect("queue")).verified().build()
    };
    assert!(build(&pop(-8)).is_ok());
    let err = build(&pop(-4)).expect_err("4 bytes of stack for an 8-byte value");
    assert!(err.to_string().contains("insn 4"), "{err}");
}

/// Bloom filters from the host: no false negatives, few false positives at capacity, and the
/// operations a filter does not have.
#[test]
fn bloom_filters_have_no_false_negatives() {
    use ebpf_vm::maps::BloomFilterMap;
    // Smaller under Miri, which runs this too (the filter's atomics).
    let n: u32 = if cfg!(miri) { 40 } else { 1000 };
    let def = MapDef { map_type: MapType::BloomFilter, key_size: 0, value_size: 8, max_entries: n, flags: 0 };
    let f = BloomFilterMap::new(def).expect("created");
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let added: Vec<u64> = (0..n).map(|_| next()).collect();
    for v in &added {
        f.add(&v.to_ne_bytes(), BPF_ANY).expect("added");
    }
    assert!(added.iter().all(|v| f.may_contain(&v.to_ne_bytes()) == Ok(true)));
    let queries = n as usize * 10;
    let others = (0..queries).filter(|_| f.may_contain(&next().to_ne_bytes()) == Ok(true)).count();
    assert!(others * 20 < queries, "{others} false positives in {queries} at capacity");
    assert_eq!(f.add(&[0; 8], BPF_EXIST), Err(MapError::InvalidFlags(BPF_EXIST)));
    assert_eq!(f.add(&[0; 4], BPF_ANY), Err(MapError::ValueSize { got: 4, want: 8 }));
    let m = maps::create(def).expect("created");
    m.update(&[], &[1; 8], BPF_ANY, 0).expect("added through the Map trait");
    assert_eq!(m.lookup(&[], 0), None);
    assert_eq!(m.delete(&[]), Err(MapError::Unsupported));
    assert!(matches!(maps::create(MapDef { key_size: 4, ..def }), Err(MapError::InvalidDef(_))));
}

/// An LPM trie key: prefix length, then 2 bytes of data.
fn lpm_key(len: u32, data: u16) -> Vec<u8> {
    let mut k = len.to_ne_bytes().to_vec();
    k.extend_from_slice(&data.to_be_bytes());
    k
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// An LPM trie with 16-bit data against a reference that scans every stored prefix for the
    /// longest match: random inserts with each flag, deletes, lookups at random lengths, and walks.
    /// Every case runs (none is skipped).
    #[test]
    #[cfg_attr(miri, ignore = "256 random sequences: too slow under Miri")]
    fn lpm_trie_matches_a_reference(ops in proptest::collection::vec((0u8..4, 0u32..=18, proptest::prelude::any::<u16>(), 0u64..3), 1..150)) {
        use ebpf_vm::maps::BPF_F_NO_PREALLOC;
        let d = MapDef { map_type: MapType::LpmTrie, key_size: 6, value_size: 8, max_entries: 12, flags: BPF_F_NO_PREALLOC };
        let m = maps::create(d).expect("trie");
        let mask = |data: u16, len: u32| if len == 0 { 0 } else { data & (u16::MAX << (16 - len.min(16))) };
        // (prefix length, masked data) -> value
        let mut reference: std::collections::BTreeMap<(u32, u16), u64> = std::collections::BTreeMap::new();
        for (op, len, data, flags) in ops {
            let key = lpm_key(len, data);
            match op {
                0 => {
                    let value = u64::from(data) << 8 | u64::from(len);
                    let got = m.update(&key, &v(value), flags, 0).map_err(|e| e.errno());
                    let entry = (len, mask(data, len));
                    let present = reference.contains_key(&entry);
                    let want = match flags {
                        _ if len > 16 => Err(-22),
                        BPF_NOEXIST if present => Err(EEXIST),
                        BPF_EXIST if !present => Err(ENOENT),
                        _ if !present && reference.len() == 12 => Err(E2BIG),
                        _ => Ok(()),
                    };
                    proptest::prop_assert_eq!(got, want, "update /{} {:#x} {}", len, data, flags);
                    if want.is_ok() {
                        reference.insert(entry, value);
                    }
                }
                1 => {
                    let got = m.delete(&key).map_err(|e| e.errno());
                    let want = if len > 16 { Err(ENOENT) } else { reference.remove(&(len, mask(data, len))).map(|_| ()).ok_or(ENOENT) };
                    proptest::prop_assert_eq!(got, want, "delete /{} {:#x}", len, data);
                }
                2 => {
                    let limit = len.min(16);
                    let want = reference
                        .iter()
                        .filter(|(&(l, p), _)| l <= limit && mask(data, l) == p)
                        .max_by_key(|(&(l, _), _)| l)
                        .map(|(_, &value)| value);
                    proptest::prop_assert_eq!(val(&m, &key, 0), want, "lookup /{} {:#x}", len, data);
                }
                _ => {
                    let mut seen = BTreeSet::new();
                    let mut out = [0u8; 6];
                    let mut prev: Option<[u8; 6]> = None;
                    while m.next_key(prev.as_ref().map(|p| &p[..]), &mut out).is_ok() {
                        let entry = (u32::from_ne_bytes(out[..4].try_into().unwrap()), u16::from_be_bytes([out[4], out[5]]));
                        proptest::prop_assert!(seen.insert(entry), "a key twice");
                        prev = Some(out);
                    }
                    proptest::prop_assert_eq!(seen, reference.keys().copied().collect::<BTreeSet<_>>());
                }
            }
        }
    }
}

/// LPM trie definitions: the kernel's rules (a prefix length and 1 to 256 data bytes, a value,
/// `BPF_F_NO_PREALLOC`); a prefix longer than the data is refused; a lookup pointer stays in the map's
/// region.
#[test]
fn lpm_trie_definitions_and_regions() {
    use ebpf_vm::maps::BPF_F_NO_PREALLOC;
    let d = MapDef { map_type: MapType::LpmTrie, key_size: 8, value_size: 4, max_entries: 4, flags: BPF_F_NO_PREALLOC };
    for bad in [
        MapDef { key_size: 4, ..d },
        MapDef { key_size: 4 + 257, ..d },
        MapDef { value_size: 0, ..d },
        MapDef { flags: 0, ..d },
    ] {
        assert!(matches!(maps::create(bad), Err(MapError::InvalidDef(_))), "{bad:?}");
    }
    let m = maps::create(d).expect("trie");
    let key = |len: u32, addr: [u8; 4]| [&len.to_ne_bytes()[..], &addr].concat();
    assert_eq!(m.update(&key(33, [10, 0, 0, 0]), &[1; 4], BPF_ANY, 0).map_err(|e| e.errno()), Err(-22));
    m.update(&key(8, [10, 9, 9, 9]), &[1, 0, 0, 0], BPF_ANY, 0).expect("stored masked");
    let p = m.lookup(&key(32, [10, 1, 2, 3]), 0).expect("10/8 matches");
    assert!(in_regions(&m, p, 4));
    assert_eq!(m.lookup(&key(7, [10, 1, 2, 3]), 0), None, "a lookup looks no further than its own length");
    m.delete(&key(8, [10, 0, 0, 0])).expect("the same prefix, written masked");
    assert!(m.lookup(&key(32, [10, 1, 2, 3]), 0).is_none());
}
