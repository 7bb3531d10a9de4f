//! Soundness of the verifier: generated programs that sit at the edges of what is safe (accesses exactly
//! at the end of their region or one byte past it, bounds that hold only thanks to a comparison,
//! loops, spills, helper and bpf-to-bpf calls; see `tests/common/vgen.rs`) are verified, and every
//! program the verifier accepts is run on several inputs in checked mode (every access checked, with a
//! budget) and in verified mode (no checks), on the interpreter and the JIT. No checked run may fail,
//! and every build must give the same result and leave the same input, maps and ring-buffer records;
//! a build that first fills stack frames and unwritten registers with a pattern must too (else a
//! program read something it never wrote). The fuzz target `verifier_soundness` runs the same
//! generator and check on libFuzzer's inputs.
//!
//! The test also measures the generator: it prints how many programs were accepted and the most
//! frequent reasons for rejection, and fails if fewer than 30% were accepted (a generator the verifier
//! mostly refuses tests little). Each soundness bug found is kept below as a test with its minimal
//! program (to be ignored while such a bug is open): it passes once the verifier refuses the program
//! or runs it safely. All those found so far are fixed. Failures that are instances of an open bug, or of a rule the verifier documents (a store at
//! a variable stack offset makes every byte it may touch readable, as 0), are told apart by
//! `vgen::Failure::known_bug` and counted and printed rather than failed on, so that the search goes
//! on past them.

#[path = "common/gen.rs"]
mod gen;
#[path = "common/vgen.rs"]
mod vgen;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Instant;

use ebpf_vm::{Context, Program};
use gen::Source;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use vgen::{Case, Outcome};

/// Programs generated per run; `VERIFIER_SOUNDNESS_CASES` overrides it (for longer searches).
const CASES: u32 = 12_000;

#[derive(Default)]
struct Stats {
    accepted: usize,
    rejected: usize,
    runs: usize,
    reasons: BTreeMap<String, usize>,
    known: BTreeMap<&'static str, usize>,
}

#[test]
fn accepted_programs_run_safely_and_alike_in_every_mode() {
    let cases = std::env::var("VERIFIER_SOUNDNESS_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(CASES);
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    // A fixed seed: the same programs on every run (the fuzz target explores further).
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[11; 32]));
    // `VERIFIER_SOUNDNESS_SHOW=<reason>` prints the programs rejected for that reason,
    // `VERIFIER_SOUNDNESS_SHOW=accepted` the accepted ones (to tune the generator), and
    // `VERIFIER_SOUNDNESS_SHOW=known` the reports of failures of known bugs.
    let show = std::env::var("VERIFIER_SOUNDNESS_SHOW").ok();
    let stats = RefCell::new(Stats::default());
    let start = Instant::now();
    runner
        .run(&proptest::collection::vec(any::<u8>(), 16..1200), |bytes| {
            let case = vgen::case(&mut Source::new(&bytes));
            let outcome = vgen::check(&case);
            let mut s = stats.borrow_mut();
            match outcome {
                Err(u) => match u.failure.known_bug() {
                    // Open bugs (each a reproducer below) and what the verifier's rules allow are
                    // counted, not failed on, so that the search goes on for others.
                    Some(what) => {
                        if show.as_deref() == Some("known") {
                            eprintln!("known ({what}):\n{}", vgen::report(&case, &u));
                        }
                        *s.known.entry(what).or_insert(0) += 1;
                    }
                    None => return Err(TestCaseError::fail(vgen::report(&case, &u))),
                },
                Ok(o) => match o {
                    Outcome::Rejected(e) => {
                        if show.as_deref() == Some(vgen::reason(&e).as_str()) {
                            eprintln!("rejected: {e}\n{}", case.program.disassemble());
                        }
                        s.rejected += 1;
                        *s.reasons.entry(vgen::reason(&e)).or_insert(0) += 1;
                    }
                    Outcome::Accepted { runs } => {
                        if show.as_deref() == Some("accepted") {
                            eprintln!("accepted, inputs {:?}:\n{}", case.inputs, case.program.disassemble());
                        }
                        s.accepted += 1;
                        s.runs += runs;
                    }
                },
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let s = stats.into_inner();
    let known: usize = s.known.values().sum();
    let accepted = s.accepted + known;
    let total = accepted + s.rejected;
    let mut reasons: Vec<(&String, &usize)> = s.reasons.iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(a.1));
    eprintln!(
        "verifier soundness: {total} programs in {:.1} s, {accepted} accepted by the verifier ({:.1}%; {known} of \
         them failed as known, below), {} rejected; {} runs of accepted programs on 5 builds each",
        start.elapsed().as_secs_f64(),
        100.0 * accepted as f64 / total.max(1) as f64,
        s.rejected,
        s.runs,
    );
    for (reason, n) in reasons.iter().take(10) {
        eprintln!("  rejected: {reason}: {n}");
    }
    for (bug, n) in &s.known {
        eprintln!("  accepted, and failed as known ({bug}): {n}");
    }
    assert!(total >= cases as usize, "only {total} of {cases} programs were checked");
    assert!(accepted * 100 >= total * 30, "only {accepted} of {total} generated programs were accepted");
}

/// Verifies `text` against `context` and, if the verifier accepts it, runs it on `inputs` in every build
/// (with the maps of `vgen::map_defs`); panics with the report of the first soundness failure. A
/// program the verifier refuses passes: each reproducer below holds once its bug is fixed.
fn sound(text: &str, context: Context, inputs: &[&[u8]]) {
    let program = Program::from_asm(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let inputs = inputs.iter().map(|i| i.to_vec()).collect();
    let case = Case { program, context, map_init: Vec::new(), inputs };
    if let Err(u) = vgen::check(&case) {
        panic!("{}", vgen::report(&case, &u));
    }
}

/// The verifier checks the alignment of atomic accesses at constant offsets, not at variable ones:
/// this program is accepted, and every build stops at the atomic add with `MisalignedAtomic` when the
/// input is 4 bytes long (r3 = 4, so the address is r10 - 12).
#[test]
fn a_variable_offset_atomic_access_is_aligned() {
    let text = "
        stdw [%r10-16], 0
        stdw [%r10-8], 0
        mov %r3, %r2
        and %r3, 4
        mov %r4, %r10
        add %r4, %r3
        mov %r5, 1
        lock add [%r4-16], %r5
        mov %r0, 0
        exit";
    sound(text, Context::Buffer, &[&[0; 4]]);
}

/// Stores into a value of a map read-only for programs are refused, but `map_update_elem` (and
/// `map_delete_elem`) on such a map is accepted, and then always fails at run time with
/// `InvalidArgument` ("the map is read-only for programs"). Not a memory error: the helper refuses.
#[test]
fn helpers_that_change_a_read_only_map_are_refused() {
    let text = "
        stdw [%r10-8], 0
        stdw [%r10-24], 0
        stdw [%r10-16], 0
        lddw %r1, map_fd(4)
        mov %r2, %r10
        add %r2, -8
        mov %r3, %r10
        add %r3, -24
        mov %r4, 0
        call 2
        exit";
    sound(text, Context::Buffer, &[&[]]);
}

/// A pointer moved by a variable gets an identity made from the instruction's position, and a bounds
/// proof for it holds for every pointer with that identity and the same variable range. A function
/// called from two places makes two pointers at one instruction: here `f` stores input + (len & 15) at
/// fp-8 and input + ((len >> 4) & 15) at fp-16; proving that the second plus 4 is within the input
/// then lets the program load 4 bytes through the first. With 4 bytes of input the first is input + 4:
/// the checked run stops out of bounds (a verified one reads past the input). Found by the generator;
/// now refused.
#[test]
fn a_bounds_proof_covers_only_the_pointer_it_was_made_for() {
    let text = "
        mov %r6, %r1
        mov %r7, %r2
        mov %r2, %r7
        and %r2, 15
        mov %r1, %r6
        mov %r3, %r10
        add %r3, -8
        call local +17
        mov %r2, %r7
        rsh %r2, 4
        and %r2, 15
        mov %r1, %r6
        mov %r3, %r10
        add %r3, -16
        call local +10
        ldxdw %r8, [%r10-8]
        ldxdw %r4, [%r10-16]
        add %r4, 4
        mov %r0, %r6
        add %r0, %r7
        jgt %r4, %r0, +2
        ldxw %r0, [%r8+0]
        exit
        mov %r0, 0
        exit
        add %r1, %r2
        stxdw [%r3+0], %r1
        mov %r0, 0
        exit";
    sound(text, Context::Buffer, &[&[0; 4]]);
}

/// A number below the input's length stays related to it after a 32-bit addition of a constant even
/// when the addition wraps: r4 (a byte, below the length) plus -256 in 32 bits is 0xffffff00 or more,
/// but the verifier records "r4 <= length - 257"; a 64-bit subtraction brings r4 down to below 2^29
/// and the relation along (length - 0xe0000101), so the input is believed to hold 3.7 GB from
/// input + r4. With r4 = 0, the load is 512 MiB past a 1-byte input.
#[test]
fn a_wrapping_32_bit_addition_drops_the_relation_to_the_length() {
    let text = "
        mov %r6, %r1
        mov %r7, %r2
        jlt %r7, 1, +10
        ldxb %r4, [%r6+0]
        jge %r4, %r7, +8
        add32 %r4, -256
        lddw %r3, 0xe0000000
        sub %r4, %r3
        mov %r5, %r6
        add %r5, %r4
        ldxb %r0, [%r5+0]
        exit
        mov %r0, 0
        exit";
    sound(text, Context::Buffer, &[&[0]]);
}

/// The same through a copy: r3 = r4 + 1 in 32 bits is linked to r4 as "r4 + 1" even when it wraps to
/// 0, so `r3 < length` makes the verifier believe r4 <= length - 2, and r4 is 0xffffffff. As above, a
/// 64-bit subtraction brings it below 2^29 with the relation. Now refused.
#[test]
fn a_wrapping_32_bit_addition_unlinks_a_copy() {
    let text = "
        mov %r6, %r1
        mov %r7, %r2
        jlt %r7, 4, +12
        ldxw %r4, [%r6+0]
        mov %r3, %r4
        add32 %r3, 1
        jge %r3, %r7, +8
        lddw %r3, 0xe0000000
        jlt %r4, %r3, +5
        sub %r4, %r3
        mov %r5, %r6
        add %r5, %r4
        ldxb %r0, [%r5+0]
        exit
        mov %r0, 0
        exit";
    sound(text, Context::Buffer, &[&[0xff; 4]]);
}

/// The input pointer is typed as never null, but with an empty input it is 0 (as the engines pass it):
/// the verifier proves the branch of `if r1 == 0` dead and never checks it, and it runs.
#[test]
fn a_null_test_of_the_input_pointer_is_not_proven_false() {
    let text = "
        jeq %r1, 0, +2
        mov %r0, 0
        exit
        ldxb %r0, [%r10+8192]
        exit";
    sound(text, Context::Buffer, &[&[]]);
}

/// A state is taken as covering another when each register's value covers the other's, with the
/// identities of pointers ignored when no bytes are proven from them. But identities carry a fact: a
/// bounds proof for one pointer holds for all that share its identity. Here the path that falls through
/// makes r8 a copy of r4, the other makes them unrelated; the state of the first is stored at the join,
/// the second is taken as covered, and the proof for r4 then lets the program load through r8. On the
/// second path (third input byte odd) r8 is input + 15 with 4 bytes of input. Now refused.
#[test]
fn a_joined_state_keeps_pointers_with_one_identity_only_if_both_paths_do() {
    let text = "
        mov %r6, %r1
        mov %r7, %r2
        jlt %r7, 3, +23
        ldxb %r2, [%r6+0]
        and %r2, 15
        ldxb %r3, [%r6+1]
        and %r3, 15
        ldxb %r5, [%r6+2]
        jset %r5, 1, +5
        mov %r4, %r6
        add %r4, %r2
        mov %r8, %r4
        mov %r5, 0
        ja +5
        mov %r4, %r6
        add %r4, %r2
        mov %r8, %r6
        add %r8, %r3
        mov %r5, 0
        mov %r5, %r4
        add %r5, 4
        mov %r0, %r6
        add %r0, %r7
        jgt %r5, %r0, +2
        ldxw %r0, [%r8+0]
        exit
        mov %r0, 0
        exit";
    sound(text, Context::Buffer, &[&[0, 15, 1, 0]]);
}

/// A helper's memory argument of variable size is taken as written in full, to the largest size it may
/// have: here `get_current_comm(fp-16, len & 15)` writes `len & 15` bytes (none at all for an empty
/// input, where the helper returns an error), and the verifier then lets the program read all 16.
#[test]
fn a_helper_writes_only_the_bytes_its_size_says() {
    let text = "
        mov %r1, %r10
        add %r1, -16
        and %r2, 15
        call 16
        ldxdw %r0, [%r10-16]
        exit";
    sound(text, Context::Buffer, &[&[], &[0; 3]]);
}

/// An end pointer made from a copy of the length joins the length's family of related numbers
/// (`r3 = input_end [1x#1+0]`), and a branch on the length then narrows the family through it as if
/// the pointer's offset (0) were the length: `len >= 8` is found infeasible and that path is never
/// checked. Any input of 8 bytes or more runs the unchecked load. Found by the generator; now refused.
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
    sound(text, Context::Buffer, &[&[0; 8]]);
}
