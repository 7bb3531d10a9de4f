//! How much work verification takes, counted in instructions processed (`Stats::processed`), which the
//! complexity limit bounds: linear in the program's size on straight-line code and on chains of
//! if/else joins, and independent of how often a loop runs.

use std::sync::Arc;

use ebpf_vm::link::Linked;
use ebpf_vm::verifier::Stats;
use ebpf_vm::{Env, Program, Verifier};

fn stats(text: &str) -> Stats {
    let program = Program::from_asm(text).unwrap_or_else(|e| panic!("{e}"));
    let mut env = Env::new();
    env.add_standard_helpers();
    let linked = Linked::new(program, Vec::new(), env).expect("links");
    match Verifier::new().verify(&Arc::new(linked)) {
        Ok(v) => v.stats(),
        Err(e) => panic!("refused: {e}"),
    }
}

/// `n` diamonds one after the other, each joining two paths that set r3 differently.
fn diamonds(n: usize) -> String {
    let mut text = String::from("mov %r0, 0\njlt %r2, 64, out\n");
    for i in 0..n {
        text += &format!(
            "ldxb %r3, [%r1+{}]\njgt %r3, 100, big{i}\nadd %r0, 1\nja join{i}\nbig{i}:\nadd %r0, 2\njoin{i}:\n",
            i % 64
        );
    }
    text + "out:\nexit\n"
}

#[test]
fn chains_of_joins_are_linear_not_exponential() {
    let small = stats(&diamonds(64));
    let large = stats(&diamonds(1024));
    // 64 diamonds would be 2^64 paths one path at a time; each instruction is processed about once.
    let insns_small = 2 + 64 * 5 + 1;
    assert!(small.processed < 3 * insns_small as u64, "{small:?}");
    let insns_large = 2 + 1024 * 5 + 1;
    assert!(large.processed < 3 * insns_large as u64, "{large:?}");
    println!("64 diamonds: {small:?}; 1024 diamonds: {large:?}");
}

#[test]
fn straight_line_code_is_processed_once() {
    let mut text = String::from("mov %r0, 0\njge %r2, 8, go\nexit\ngo:\n");
    for i in 0..100_000 {
        text += match i % 4 {
            0 => "ldxb %r3, [%r1+3]\n",
            1 => "add %r0, %r3\n",
            2 => "stxdw [%r10-8], %r0\n",
            _ => "ldxdw %r0, [%r10-8]\n",
        };
    }
    text += "exit\n";
    let s = stats(&text);
    assert!(s.processed <= 100_010, "{s:?}");
}

#[test]
fn a_loop_costs_the_same_whatever_its_trip_count() {
    let nest = |outer: u32, inner: u32| {
        format!(
            "mov %r0, 0\nmov %r6, 0\nouter:\nmov %r7, 0\ninner:\nadd %r0, %r7\nadd %r7, 1\n\
             jlt %r7, {inner}, inner\nadd %r6, 1\njlt %r6, {outer}, outer\nexit"
        )
    };
    let few = stats(&nest(4, 4));
    let many = stats(&nest(2048, 256));
    let million = stats(&nest(1024, 1024));
    assert_eq!(few.loops, 2);
    assert_eq!(many.loops, 2);
    // A few dozen passes over the nine instructions, not 524,288 iterations.
    assert!(many.processed < 1000, "{many:?}");
    assert!(million.processed < 1000, "{million:?}");
    println!("4x4: {few:?}; 2048x256: {many:?}; 1024x1024: {million:?}");
}
