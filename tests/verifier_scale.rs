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

/// A loop whose index is related to the input's length (`i <= len - k`, with `k` shrinking by one a
/// pass) settles in a few passes instead of one pass per byte of distance.
#[test]
fn a_distance_to_the_input_length_does_not_creep() {
    // r3 starts 200 bytes below the length and walks up; the loop runs at most 64 times.
    let text = "mov %r0, 0\njlt %r2, 256, out\nmov %r3, 0\nmov %r4, %r2\nsub %r4, 200\n\
                loop:\njge %r3, %r4, out\nadd %r3, 1\nadd %r0, 1\njlt %r0, 64, loop\nout:\nexit";
    let s = stats(text);
    assert!(s.processed < 200, "{s:?}");
}

/// Counters that grow on some paths of a loop (their unknown bits growing through carries, one bit a
/// pass) reach the loop's fixpoint in a bounded number of passes, not one per bit.
#[test]
fn counters_bounded_only_by_their_bits_settle() {
    let text = "mov %r6, 0\nmov %r7, 0\nmov %r8, 0\nmov %r9, 0\n\
                loop:\nldxb %r0, [%r1+0]\njeq %r0, 0, skip\nadd %r7, 1\nskip:\njeq %r0, 1, skip2\nadd %r8, 3\nskip2:\n\
                add %r9, %r7\nadd %r6, 1\njlt %r6, 16, loop\nmov %r0, %r7\nadd %r0, %r8\nadd %r0, %r9\nexit";
    let program = Program::from_asm(text).unwrap();
    let mut env = Env::new();
    env.set_context(ebpf_vm::Context::fixed(8));
    let linked = Linked::new(program, Vec::new(), env).unwrap();
    let s = Verifier::new().verify(&Arc::new(linked)).unwrap_or_else(|e| panic!("{e}")).stats();
    // 9 instructions a pass: at most about 40 passes (64 would be one per bit).
    assert!(s.processed < 400, "{s:?}");
}

/// An inner loop's widening restarts with every pass of the outer loop: values the inner loop does not
/// change keep their bounds (here the outer index bounds the inner loop).
#[test]
fn inner_loops_keep_the_bounds_of_outer_indices() {
    let text = "mov %r0, 0\nmov %r6, 0\nouter:\nmov %r7, 0\ninner:\njge %r7, %r6, next\nadd %r0, 1\nadd %r7, 1\n\
                ja inner\nnext:\nadd %r6, 1\njlt %r6, 100, outer\nexit";
    let s = stats(text);
    assert!(s.loops == 2 && s.processed < 2000, "{s:?}");
}
