//! Array-map lookups the engines carry out themselves (the JIT inline where `r1` is an `lddw` of a
//! shared array map in the call's block, in checked code when the key is on the stack; the interpreter
//! on any shared array): they find the same values as the helper (called by the interpreter's shadow
//! mode), return null past the end, use the map's stride for values that are not
//! a multiple of 8 bytes, and give way to the helper wherever the lookup is not the standard one, the
//! map not known, or (checked code) the key elsewhere, with the helper's errors.
#![cfg(feature = "jit")]

use std::sync::Arc;

use ebpf_vm::helpers::{ArgKind, Helper, HelperSig, RetKind};
use ebpf_vm::maps::{self, Map, MapDef, MapType};
use ebpf_vm::{Context, Engine, Env, Program, Vm};

fn array(map_type: MapType, value_size: u32, max_entries: u32) -> Arc<dyn Map> {
    maps::create(MapDef { map_type, key_size: 4, value_size, max_entries, flags: 0 }).expect("array")
}

/// Looks keys 0..=70 up in map 0 (64 entries), adds the key into the first 8 bytes of each value it
/// finds, and returns the number of nulls times 2^32 plus the sum of the values after the additions.
/// Run twice, the values carry over: both runs must agree between engines.
const LOOKUPS: &str = "
    mov %r6, 0
    mov %r7, 0
    mov %r8, 0
loop:
    stxw [%r10-4], %r6
    mov %r2, %r10
    add %r2, -4
    lddw %r1, map_fd(0)
    call 1
    jne %r0, 0, found
    add %r7, 1
    ja next
found:
    ldxdw %r3, [%r0+0]
    add %r3, %r6
    stxdw [%r0+0], %r3
    add %r8, %r3
next:
    add %r6, 1
    jle %r6, 70, loop
    lsh %r7, 32
    add %r7, %r8
    mov %r0, %r7
    exit";

/// What each engine and mode returns on two runs, and map 0's values after them (the first 8 bytes of
/// each), with a fresh map of `kind` and `value_size` for each build.
fn runs(kind: MapType, value_size: u32, text: &str, host_lookup: bool) -> Vec<(String, Vec<u64>, Vec<u64>)> {
    let program = Program::from_asm(text).unwrap_or_else(|e| panic!("{e}"));
    let mut out = Vec::new();
    for (engine, mode) in [
        // The reference: shadow mode calls every helper as written.
        (Engine::Interpreter, "shadow"),
        (Engine::Interpreter, "checked"),
        (Engine::Interpreter, "verified"),
        (Engine::Jit, "verified"),
        (Engine::Jit, "unchecked"),
        (Engine::Jit, "checked"),
    ] {
        let map = array(kind, value_size, 64);
        let mut env = Env::new();
        env.add_standard_helpers();
        if host_lookup {
            // The host's own lookup: it finds nothing.
            let sig = HelperSig {
                args: [ArgKind::MapPtr, ArgKind::MapKey, ArgKind::Unused, ArgKind::Unused, ArgKind::Unused],
                ret: RetKind::MapValueOrNull,
            };
            env.add_helper(Helper::new(1, "lookup_nothing", sig, |_, _| Ok(0)));
        }
        env.add_map(map.clone());
        env.set_context(Context::fixed(8));
        let builder = Vm::builder(program.clone()).env(env).engine(engine);
        let vm = match mode {
            "shadow" => builder.shadow().build(),
            "verified" => builder.verified().build(),
            "checked" => builder.checked().build(),
            // SAFETY: the program accesses its stack and the values the lookups return (the checked
            // interpreter runs it without an error).
            _ => unsafe { builder.unchecked() }.build(),
        }
        .unwrap_or_else(|e| panic!("{engine:?} {mode}: {e}"));
        let results = (0..2).map(|_| vm.execute(&mut [0u8; 8]).expect("runs")).collect();
        let values = (0..64u32)
            .map(|k| {
                let p = map.lookup(&k.to_ne_bytes(), 0).expect("in range");
                // SAFETY: `p` is the value of key `k`, at least 8 bytes, alive with `map`; no execution runs.
                unsafe { p.cast::<u64>().read_unaligned() }
            })
            .collect();
        out.push((format!("{engine:?} {mode}"), results, values));
    }
    out
}

fn assert_all_agree(cases: &[(String, Vec<u64>, Vec<u64>)]) {
    let (first, results, values) = &cases[0];
    for (name, r, v) in &cases[1..] {
        assert_eq!(r, results, "{name} returned other results than {first}");
        assert_eq!(v, values, "{name} left other values than {first}");
    }
}

#[test]
fn inline_lookups_find_what_the_helper_finds() {
    for value_size in [8, 12, 64] {
        let cases = runs(MapType::Array, value_size, LOOKUPS, false);
        assert_all_agree(&cases);
        // 7 keys past the end on each run; the first run adds each key once, the second again.
        let sum_once: u64 = (0..64).sum();
        assert_eq!(cases[0].1, vec![(7 << 32) | sum_once, (7 << 32) | (2 * sum_once)], "value size {value_size}");
        assert_eq!(cases[0].2, (0..64).map(|k| 2 * k).collect::<Vec<u64>>());
    }
}

#[test]
fn per_cpu_arrays_are_looked_up_by_the_helper() {
    let cases = runs(MapType::PerCpuArray, 8, LOOKUPS, false);
    assert_all_agree(&cases);
    assert_eq!(cases[0].1[0] >> 32, 7);
}

#[test]
fn a_host_lookup_helper_is_called_not_inlined() {
    let cases = runs(MapType::Array, 8, LOOKUPS, true);
    assert_all_agree(&cases);
    // Every lookup found nothing: 71 nulls a run, no value changed.
    assert_eq!(cases[0].1, vec![71 << 32, 71 << 32]);
    assert!(cases[0].2.iter().all(|&v| v == 0));
}

#[test]
fn a_map_reference_from_another_block_or_register_is_looked_up_by_the_helper() {
    // `r1` copied from `r9`, and set before the loop's head: neither is an `lddw` in the call's block.
    let text = LOOKUPS
        .replace("    lddw %r1, map_fd(0)\n", "    mov %r1, %r9\n")
        .replace("    mov %r6, 0\n    mov %r7, 0\n", "    lddw %r9, map_fd(0)\n    mov %r6, 0\n    mov %r7, 0\n");
    assert!(text.contains("mov %r1, %r9"));
    let cases = runs(MapType::Array, 8, &text, false);
    assert_all_agree(&cases);
    assert_eq!(cases[0].1[0] >> 32, 7);
}

#[test]
fn checked_code_with_a_key_off_the_stack_calls_the_helper() {
    // The key is the input's first word: 5, then a bad address (the helper's error, on both engines).
    let cases = [
        ("key in the input", "mov %r2, %r1\nlddw %r1, map_fd(0)\ncall 1\njeq %r0, 0, +1\nmov %r0, 1\nexit"),
        ("key at a bad address", "mov %r2, 64\nlddw %r1, map_fd(0)\ncall 1\nexit"),
    ];
    for (name, text) in cases {
        let program = Program::from_asm(text).unwrap_or_else(|e| panic!("{e}"));
        let outcome = |engine| {
            let mut env = Env::new();
            env.add_standard_helpers();
            env.add_map(array(MapType::Array, 8, 64));
            let vm = Vm::builder(program.clone()).env(env).engine(engine).checked().build().expect("builds");
            let mut input = 5u64.to_ne_bytes();
            format!("{:?}", vm.execute(&mut input))
        };
        let (interpreted, compiled) = (outcome(Engine::Interpreter), outcome(Engine::Jit));
        assert_eq!(compiled, interpreted, "{name}");
        if name == "key in the input" {
            assert_eq!(interpreted, "Ok(1)");
        } else {
            assert!(interpreted.starts_with("Err("), "{name}: {interpreted}");
        }
    }
}
