//! Programs the verifier once judged wrongly, found by fuzzing and by the soundness generator: each is
//! now refused (or accepted) with the reason named, and runs as the proof says where it is accepted.

use std::sync::Arc;

use ebpf_vm::link::Linked;
use ebpf_vm::verifier::VerifyErrorKind;
use ebpf_vm::{Context, Env, Program, Verifier, VerifyError};

fn verify(text: &str, context: Context) -> Result<(), VerifyError> {
    let program = Program::from_asm(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let mut env = Env::new();
    env.add_standard_helpers();
    env.set_context(context);
    let linked = Linked::new(program, Vec::new(), env).expect("links");
    Verifier::new().verify(&Arc::new(linked)).map(|_| ())
}

/// A cycle entered at two places (here at `a` and at `b`) is no natural loop: its retreating edge
/// goes to a block that is not a loop head. It ran forever once; now it is refused at that edge.
#[test]
fn a_cycle_with_two_entries_is_refused() {
    let text = "
        ldabsb 0
        jge %r0, 0x1000, b
    a:
        jle %r0, 0x2000, b
    b:
        jge %r0, 0x3000, b
        jeq %r0, 0x4000, c
    c:
        ja a
    ";
    let err = verify(text, Context::Buffer).expect_err("never ends");
    // Which edge of the cycle is the retreating one depends on the search order; it is one of them.
    assert!(matches!(err.kind, VerifyErrorKind::UnboundedLoop { header: 2 | 3 }), "{err}");
    assert!([2, 6].contains(&err.pc), "{err}");
}

fn verify_with_map(text: &str) -> Result<(), VerifyError> {
    use ebpf_vm::maps::{self, MapDef, MapType};
    let program = Program::from_asm(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let mut env = Env::new();
    env.add_standard_helpers();
    let def = MapDef { map_type: MapType::Array, key_size: 4, value_size: 8, max_entries: 4, flags: 0 };
    env.add_map(maps::create(def).expect("map"));
    let linked = Linked::new(program, Vec::new(), env).expect("links");
    Verifier::new().verify(&Arc::new(linked)).map(|_| ())
}

/// Two paths meet with r6 and r7 holding lookup results: copies of one result on one path, two
/// independent results on the other. A null check of r6 says nothing about r7 on the second path, so
/// the state of the first may not stand for it (review of state inclusion: identities were ignored).
#[test]
fn a_null_check_does_not_reach_a_pointer_that_is_not_a_copy_on_every_path() {
    let lookup = "
        stw [%r10-4], 0
        mov %r2, %r10
        add %r2, -4
        lddw %r1, map_idx(0)
        call 1
    ";
    // Both paths end with r8 and r0 alike, so that only the identities of r6 and r7 differ.
    let copies = format!("{lookup}\nmov %r6, %r0\nmov %r7, %r0\nmov %r8, 0\nmov %r0, 0\n");
    let apart = format!("{lookup}\nmov %r6, %r0\n{lookup}\nmov %r7, %r0\nmov %r8, 0\nmov %r0, 0\n");
    // Either path may be the one that reaches the join first.
    for (first, second) in [(&copies, &apart), (&apart, &copies)] {
        let text = format!(
            "
            jlt %r2, 1, out
            ldxb %r8, [%r1+0]
            jeq %r8, 0, other
            {first}
            ja join
        other:
            {second}
        join:
            jeq %r6, 0, out
            ldxdw %r0, [%r7+0]
        out:
            mov %r0, 0
            exit
        "
        );
        let err = verify_with_map(&text).expect_err("r7 may be null");
        assert!(matches!(err.kind, VerifyErrorKind::MaybeNull { reg: 7 }), "{err}");
        // With the check on r7 itself it is accepted.
        verify_with_map(&text.replace("jeq %r6, 0, out", "jeq %r7, 0, out")).expect("checked r7");
    }
}

/// A loop that goes on while its counter differs from a bound ends only if the counter meets the bound:
/// from a start a multiple of the step below it. From the bound itself, or off by one, it would wrap
/// round first, so it is refused.
#[test]
fn a_loop_until_equal_ends_only_when_the_counter_meets_the_bound() {
    let looped = |start: i64, step: i64, bound: i64| {
        format!("mov %r0, 0\nmov %r6, {start}\nloop:\nadd %r6, {step}\nadd %r0, 1\njne %r6, {bound}, loop\nexit")
    };
    verify(&looped(0, 2, 100_000), Context::Buffer).expect("meets 100000 after 50000 steps");
    verify(&looped(100_000, -4, 0), Context::Buffer).expect("meets 0 stepping down");
    for (start, step, bound) in [(1, 2, 100_000), (100_000, 2, 100_000), (200_000, 2, 100_000), (0, -2, 100)] {
        let err = verify(&looped(start, step, bound), Context::Buffer).expect_err("wraps first");
        assert!(matches!(err.kind, VerifyErrorKind::UnboundedLoop { .. }), "{start} {step} {bound}: {err}");
    }
}

/// An end pointer made from a copy of the length once joined the length's family of related numbers,
/// as if its offset were the length; a branch on the length then narrowed the family through it and
/// proved `len >= 8` impossible, leaving that path unchecked (found by the soundness generator).
#[test]
fn an_end_pointer_does_not_narrow_the_length_it_was_made_from() {
    let text = "
        mov %r7, %r2
        mov %r3, %r1
        add %r3, %r7
        jlt %r7, 8, +2
        ldxb %r0, [%r10+8192]
        exit
        mov %r0, 0
        exit";
    let err = verify(text, Context::Buffer).expect_err("the stack read is out of bounds");
    assert!(matches!(err.kind, VerifyErrorKind::OutOfBounds { .. }), "{err}");
    assert_eq!(err.pc, 4, "{err}");
}

/// A constant added to a pointer that brings its offset to i64::MIN once overflowed the check of the
/// offset's magnitude (found by the soundness fuzz target): it is refused as an unbounded offset.
#[test]
fn a_pointer_offset_of_i64_min_is_refused() {
    let text = "
        mov %r1, %r10
        lddw %r2, 0x8000000000000000
        add %r1, %r2
        mov %r0, 0
        exit";
    let err = verify(text, Context::Buffer).expect_err("no such offset");
    assert!(matches!(err.kind, VerifyErrorKind::UnboundedOffset { reg: 1 }), "{err}");
}
