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
