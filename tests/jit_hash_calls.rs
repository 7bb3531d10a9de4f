//! Hash-map lookups, updates and deletes that the engines call directly (the JIT where `r1` is an
//! `lddw` of a hash map in the call's block, and in checked code when the key and value are in the
//! stack's frames; the interpreter on any hash map, with checked keys in checked mode): on every kind
//! of hash map, key size and value size, with keys on the stack and in a map value, each engine and
//! mode returns what the helpers return (the interpreter's shadow mode) and leaves the same map
//! contents. The
//! helper is called instead for a host's own map helpers, maps programs may not change, keys off the
//! stack in checked code, and keys and values past the direct calls' sizes, with the helper's errors.
#![cfg(feature = "jit")]

use std::fmt::Write as _;
use std::sync::Arc;

use ebpf_vm::helpers::{ArgKind, Helper, HelperSig, RetKind};
use ebpf_vm::maps::{self, Map, MapDef, MapType, BPF_F_RDONLY_PROG};
use ebpf_vm::{Context, Engine, Env, Program, Vm};

/// Operations a run makes: one 8-byte record each in the input.
const OPS: usize = 64;
/// Key words range over this many values (more than the maps hold, so inserts also fail when full).
const KEYS: u32 = 24;
/// Entries of every hash map.
const MAX_ENTRIES: u32 = 16;
/// Where the key and the value are built, below r10.
const KEY_AT: usize = 128;
const VALUE_AT: usize = 256;
/// Where the unaligned value is, below r10 (odd).
const ODD_VALUE_AT: usize = 399;

/// A program for keys of `key_size` and values of `value_size` bytes (at least 8) in hash map 0, with
/// array map 1 (a value of 64 bytes) to hold keys in shared memory. For each input record
/// `[op, flags, -, -, key: u32]` it builds the key (the record's key word, then the bytes 0x40, 0x41,
/// ...) and the value (`key * 3 + i`, then zeros), and:
/// - op 0: looks the key up (in the stack), adds the value's first 8 bytes to the result and
///   increments them, or adds 1,000,003 when there is none;
/// - op 1: updates with the record's flags (0, 1 or 2); op 2: deletes; the result becomes
///   `result * 31 + r0`;
/// - op 3: as op 0 with the key copied into array map 1's value first, looked up from there;
/// - op 4: looks the key up and, when found, updates it (flags 0) with its own value, from the map's
///   slot (source and destination the same bytes); the result becomes `result * 31 + r0`;
/// - op 5: updates with the record's flags from a value at an odd stack address (`key * 5 + i`, then
///   the bytes 0x11, 0x12, ...), which no word copy may assume aligned.
fn program(key_size: usize, value_size: usize) -> String {
    let mut t = String::new();
    let line = |t: &mut String, s: &str| {
        t.push_str(s);
        t.push('\n');
    };
    line(&mut t, "mov %r6, %r1");
    line(&mut t, "mov %r7, 0");
    line(&mut t, "mov %r9, 7");
    // The key's bytes past the key word, and the value, once.
    for j in 4..key_size {
        writeln!(t, "stb [%r10-{}], {}", KEY_AT - j, 0x40 + j).unwrap();
    }
    for j in (0..value_size).step_by(8) {
        writeln!(t, "stdw [%r10-{}], 0", VALUE_AT - j).unwrap();
    }
    for j in 0..value_size {
        writeln!(t, "stb [%r10-{}], {}", ODD_VALUE_AT - j, 0x11 + j).unwrap();
    }
    // Keys of 2 bytes take the key word's low half.
    let key_store = if key_size < 4 { "stxh" } else { "stxw" };
    // The lookup with `r2` set, twice: the verifier keeps a stack key and a map value key apart.
    let lookup = |label: &str| {
        format!(
            "lddw %r1, map_fd(0)
call 1
jne %r0, 0, found_{label}
add %r9, 1000003
ja next
found_{label}:
ldxdw %r3, [%r0+0]
add %r9, %r3
add %r3, 1
stxdw [%r0+0], %r3
ja next"
        )
    };
    let (shared_lookup, lookup) = (lookup("shared"), lookup("stack"));
    // The value's first 8 bytes at the odd address, one byte at a time: `r4` is the key word (as
    // loaded for the aligned value) times 5 plus the record's number.
    let mut odd_value = String::from("ldxw %r4, [%r3+4]\nmul %r4, 5\nadd %r4, %r7\n");
    for j in 0..8 {
        writeln!(odd_value, "stxb [%r10-{}], %r4\nrsh %r4, 8", ODD_VALUE_AT - j).unwrap();
    }
    write!(
        t,
        "loop:
jge %r7, {OPS}, end
mov %r3, %r7
lsh %r3, 3
add %r3, %r6
ldxb %r8, [%r3+0]
ldxb %r5, [%r3+1]
ldxw %r4, [%r3+4]
{key_store} [%r10-{KEY_AT}], %r4
mul %r4, 3
add %r4, %r7
stxdw [%r10-{VALUE_AT}], %r4
jeq %r8, 1, update
jeq %r8, 2, delete
jeq %r8, 3, shared
jeq %r8, 4, self_update
jeq %r8, 5, odd_update
mov %r2, %r10
add %r2, -{KEY_AT}
{lookup}
update:
mov %r4, %r5
mov %r2, %r10
add %r2, -{KEY_AT}
mov %r3, %r10
add %r3, -{VALUE_AT}
lddw %r1, map_fd(0)
call 2
mul %r9, 31
add %r9, %r0
ja next
delete:
mov %r2, %r10
add %r2, -{KEY_AT}
lddw %r1, map_fd(0)
call 3
mul %r9, 31
add %r9, %r0
ja next
self_update:
mov %r2, %r10
add %r2, -{KEY_AT}
lddw %r1, map_fd(0)
call 1
jeq %r0, 0, next
mov %r3, %r0
mov %r2, %r10
add %r2, -{KEY_AT}
mov %r4, 0
lddw %r1, map_fd(0)
call 2
mul %r9, 31
add %r9, %r0
ja next
odd_update:
{odd_value}mov %r4, %r5
mov %r2, %r10
add %r2, -{KEY_AT}
mov %r3, %r10
add %r3, -{ODD_VALUE_AT}
lddw %r1, map_fd(0)
call 2
mul %r9, 31
add %r9, %r0
ja next
shared:
stw [%r10-4], 0
mov %r2, %r10
add %r2, -4
lddw %r1, map_fd(1)
call 1
jeq %r0, 0, next
"
    )
    .unwrap();
    for j in 0..key_size {
        writeln!(t, "ldxb %r3, [%r10-{}]\nstxb [%r0+{j}], %r3", KEY_AT - j).unwrap();
    }
    write!(
        t,
        "mov %r2, %r0
{shared_lookup}
next:
add %r7, 1
ja loop
end:
mov %r0, %r9
exit"
    )
    .unwrap();
    t
}

/// `OPS` records drawn from `seed`: ops 0 and 1 twice as often as 2 to 5, flags 0-2, keys below `KEYS`.
fn input(seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(OPS * 8);
    for _ in 0..OPS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let op = [0u8, 0, 1, 1, 2, 3, 4, 5][(x % 8) as usize];
        let flags = ((x >> 8) % 3) as u8;
        let key = ((x >> 16) as u32) % KEYS;
        out.extend_from_slice(&[op, flags, 0, 0]);
        out.extend_from_slice(&key.to_ne_bytes());
    }
    out
}

/// How a program is built.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Shadow,
    Verified,
    Checked,
    Unchecked,
}

/// The engines and modes compared, the interpreter's shadow mode first: the reference, which calls
/// every helper as written.
const RUNS: [(Engine, Mode); 6] = [
    (Engine::Interpreter, Mode::Shadow),
    (Engine::Interpreter, Mode::Checked),
    (Engine::Interpreter, Mode::Verified),
    (Engine::Jit, Mode::Verified),
    (Engine::Jit, Mode::Unchecked),
    (Engine::Jit, Mode::Checked),
];

/// Hash map 0 and array map 1, fresh.
fn maps(def: MapDef) -> (Arc<dyn Map>, Arc<dyn Map>) {
    let hash = maps::create(def).expect("hash map");
    let array =
        maps::create(MapDef { map_type: MapType::Array, key_size: 4, value_size: 64, max_entries: 1, flags: 0 })
            .expect("array");
    (hash, array)
}

/// A map's keys and values.
type Contents = Vec<(Vec<u8>, Vec<u8>)>;

/// Every key of `map` with its value in CPU slot 0, sorted.
fn contents(map: &dyn Map) -> Contents {
    let mut all: Vec<_> = map.keys().into_iter().map(|k| (k.clone(), map.get(&k, 0).expect("listed key"))).collect();
    all.sort();
    all
}

/// Builds `text` for `engine` in `mode` with hash map `def`, optionally a host helper `host` in place
/// of a standard one.
fn build(text: &str, def: MapDef, engine: Engine, mode: Mode, host: Option<Helper>) -> (Vm, Arc<dyn Map>) {
    let program = Program::from_asm(text).unwrap_or_else(|e| panic!("{e}"));
    let (hash, array) = maps(def);
    let mut env = Env::new();
    env.add_standard_helpers();
    if let Some(h) = host {
        env.add_helper(h);
    }
    env.add_map(hash.clone());
    env.add_map(array);
    env.set_context(Context::fixed((OPS * 8) as u32));
    let builder = Vm::builder(program).env(env).engine(engine);
    let vm = match mode {
        Mode::Shadow => builder.shadow().build(),
        Mode::Verified => builder.verified().build(),
        Mode::Checked => builder.checked().build(),
        // SAFETY: the program accesses its input, stack and the map values lookups return (the checked
        // interpreter runs the same inputs first without an error).
        Mode::Unchecked => unsafe { builder.unchecked() }.build(),
    }
    .unwrap_or_else(|e| panic!("{engine:?} {mode:?}: {e}"));
    (vm, hash)
}

/// Runs `seeds` inputs one after the other (the map carries over) on every engine and mode, and
/// asserts each returns and leaves what the checked interpreter does. Returns the number of runs
/// compared with the reference.
fn compare(def: MapDef, seeds: std::ops::Range<u64>) -> usize {
    let text = program(def.key_size as usize, def.value_size as usize);
    let mut reference: Option<(Vec<String>, Contents)> = None;
    let mut compared = 0;
    for (engine, mode) in RUNS {
        let (vm, hash) = build(&text, def, engine, mode, None);
        let results: Vec<String> = seeds
            .clone()
            .map(|seed| format!("{:?}", vm.execute(&mut input(seed)).map_err(|e| e.to_string())))
            .collect();
        let after = contents(hash.as_ref());
        match &reference {
            None => {
                assert!(results.iter().all(|r| r.starts_with("Ok(")), "{def:?}: {results:?}");
                reference = Some((results, after));
            }
            Some((want, want_after)) => {
                assert_eq!(&results, want, "{engine:?} {mode:?} returned other results for {def:?}");
                assert_eq!(&after, want_after, "{engine:?} {mode:?} left another map for {def:?}");
                compared += results.len();
            }
        }
    }
    compared
}

fn hash_def(map_type: MapType, key_size: u32, value_size: u32) -> MapDef {
    MapDef { map_type, key_size, value_size, max_entries: MAX_ENTRIES, flags: 0 }
}

#[test]
fn direct_calls_do_what_the_helpers_do_on_every_hash_map() {
    let mut compared = 0;
    let mut configs = 0;
    for map_type in [MapType::Hash, MapType::LruHash, MapType::PerCpuHash] {
        // Key and value sizes the direct calls take (up to 32 and 64 bytes), and past them.
        for (key_size, value_size) in [(4, 8), (2, 16), (8, 8), (12, 64), (32, 24), (40, 8), (4, 72)] {
            compared += compare(hash_def(map_type, key_size, value_size), 0..40);
            configs += 1;
        }
    }
    // 5 engines and modes against the reference, 40 runs each, for every configuration.
    assert_eq!(compared, configs * 5 * 40);
}

#[test]
fn the_inputs_fill_and_empty_the_map() {
    // A map that stayed empty, or full, would test few of the outcomes (inserts that fail because the
    // map is full or the key exists, deletes and lookups that miss): the inputs do both.
    let def = hash_def(MapType::Hash, 4, 8);
    let text = program(4, 8);
    let (vm, hash) = build(&text, def, Engine::Interpreter, Mode::Checked, None);
    let mut sizes = Vec::new();
    for seed in 0..40 {
        vm.execute(&mut input(seed)).expect("runs");
        sizes.push(hash.keys().len());
    }
    assert!(sizes.contains(&(MAX_ENTRIES as usize)), "the map never filled: {sizes:?}");
    assert!(sizes.iter().any(|&n| n < MAX_ENTRIES as usize - 2), "the map never emptied: {sizes:?}");
}

#[test]
fn a_host_map_helper_is_called_not_the_map() {
    // The host's own update (id 2): it stores nothing and returns 77.
    let sig = HelperSig {
        args: [ArgKind::MapPtr, ArgKind::MapKey, ArgKind::MapValue, ArgKind::Scalar, ArgKind::Unused],
        ret: RetKind::Scalar,
    };
    let def = hash_def(MapType::Hash, 4, 8);
    let text = program(4, 8);
    let mut seen = Vec::new();
    for (engine, mode) in RUNS {
        let host = Helper::new(2, "update_nothing", sig, |_, _| Ok(77));
        let (vm, hash) = build(&text, def, engine, mode, Some(host));
        let results: Vec<u64> = (0..10).map(|s| vm.execute(&mut input(s)).expect("runs")).collect();
        assert!(hash.keys().is_empty(), "{engine:?} {mode:?}: the map's own update was called");
        seen.push(results);
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
}

#[test]
fn maps_programs_may_not_change_go_through_the_helper() {
    // Read-only for programs: updates and deletes are the helper's error on both engines (checked
    // code; the verifier refuses the program).
    let def = MapDef { flags: BPF_F_RDONLY_PROG, ..hash_def(MapType::Hash, 4, 8) };
    let text = program(4, 8);
    let mut outcomes = Vec::new();
    for engine in [Engine::Interpreter, Engine::Jit] {
        let (vm, _) = build(&text, def, engine, Mode::Checked, None);
        let r = vm.execute(&mut input(1)).map_err(|e| e.to_string());
        let err = r.expect_err("an update or delete of a read-only map stops the program");
        assert!(err.contains("read-only"), "{engine:?}: {err}");
        outcomes.push(err);
    }
    assert_eq!(outcomes[0], outcomes[1]);
    let program = Program::from_asm(&text).expect("assembles");
    let (hash, array) = maps(def);
    let mut env = Env::new();
    env.add_standard_helpers();
    env.add_map(hash);
    env.add_map(array);
    env.set_context(Context::fixed((OPS * 8) as u32));
    let refused = Vm::builder(program).env(env).engine(Engine::Jit).verified().build();
    assert!(refused.is_err(), "the verifier accepted writes to a read-only map");
}

#[test]
fn checked_code_with_keys_off_the_stack_calls_the_helper() {
    // The key in the input (op 3's path, from the array value, is covered above): found and missing
    // keys, then a key at a bad address, each the same on both engines.
    let def = hash_def(MapType::Hash, 4, 8);
    let cases = [
        ("insert from the input", "mov %r2, %r1\nmov %r3, %r1\nmov %r4, 0\nlddw %r1, map_fd(0)\ncall 2\nexit"),
        ("lookup from the input", "mov %r2, %r1\nlddw %r1, map_fd(0)\ncall 1\nexit"),
        ("delete from the input", "mov %r2, %r1\nlddw %r1, map_fd(0)\ncall 3\nexit"),
        ("key at a bad address", "mov %r2, 64\nlddw %r1, map_fd(0)\ncall 1\nexit"),
        (
            "value at a bad address",
            "stw [%r10-4], 1\nmov %r2, %r10\nadd %r2, -4\nmov %r3, 64\nmov %r4, 0\nlddw %r1, map_fd(0)\ncall 2\nexit",
        ),
    ];
    for (name, text) in cases {
        let outcome = |engine| {
            let (vm, hash) = build(text, def, engine, Mode::Checked, None);
            let mut input = vec![0u8; OPS * 8];
            input[..4].copy_from_slice(&5u32.to_ne_bytes());
            let first = vm.execute(&mut input).map(|r| r != 0).map_err(|e| e.to_string());
            (format!("{first:?}"), contents(hash.as_ref()))
        };
        let (interpreted, compiled) = (outcome(Engine::Interpreter), outcome(Engine::Jit));
        assert_eq!(compiled, interpreted, "{name}");
        match name {
            "insert from the input" => assert_eq!(interpreted.1.len(), 1, "{name}"),
            "key at a bad address" | "value at a bad address" => {
                assert!(interpreted.0.starts_with("Err("), "{name}: {interpreted:?}")
            }
            _ => assert!(interpreted.0.starts_with("Ok("), "{name}: {interpreted:?}"),
        }
    }
}
