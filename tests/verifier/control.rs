//! Control flow: instructions no path reaches, loops that cannot be proven to end (including loops
//! whose bound is known but above the limit), and the complexity limit.
//!
//! The contract names the loop's header in `UnboundedLoop` but not the instruction the error is
//! reported at: the cases accept the header or the back edge.

use ebpf_vm::verifier::Options;

use ebpf_vm::verifier::VerifyErrorKind;

use crate::harness::{kind, Kind, Spec, Table, ARRAY8};

/// `UnboundedLoop` naming the loop at `header`.
fn unbounded(header: usize) -> Kind {
    Kind::new(
        format!("UnboundedLoop {{ header: {header} }}"),
        move |k| matches!(k, VerifyErrorKind::UnboundedLoop { header: h } if *h == header),
    )
}

#[test]
fn unreachable_code() {
    let mut t = Table::new("unreachable code");
    let cases = [
        ("code after exit", "mov %r0, 0\nexit\nmov %r0, 1 # <-\nexit", 2),
        ("code jumped over", "ja +1\nmov %r0, 1 # <-\nmov %r0, 0\nexit", 1),
        ("code jumped over by ja32", "ja32 +1\nmov %r0, 1 # <-\nmov %r0, 0\nexit", 1),
        ("exit jumped over", "mov %r0, 0\nja +1\nexit # <-\nexit", 2),
        ("lddw after exit", "mov %r0, 0\nexit\nlddw %r1, 5 # <-\nmov %r0, %r1\nexit", 2),
        (
            "the first of two dead regions",
            "mov %r0, 0\njeq %r2, 0, b\nexit\nmov %r0, 1 # <-\nb:\nexit\nmov %r0, 2\nexit",
            3,
        ),
        ("dead arm of a diamond", "mov %r0, 0\njeq %r2, 0, a\nja b\nmov %r0, 5 # <-\na:\nmov %r0, 1\nb:\nexit", 3),
        ("call from dead code", "mov %r0, 0\nexit\ncall local f # <-\nexit\nf:\nmov %r0, 1\nexit", 2),
        ("dead code in a callee", "call local f\nexit\nf:\nmov %r0, 0\nexit\nmov %r0, 1 # <-\nexit", 4),
        (
            "dead back edge after the loop's exit",
            "mov %r6, 0\nloop:\nadd %r6, 1\njlt %r6, 4, loop\nmov %r0, %r6\nexit\nja loop # <-",
            5,
        ),
    ];
    for (name, text, pc) in cases {
        t.reject_spec(Spec::new(name, text), &[(pc, kind!(Unreachable))]);
    }
    t.finish(10);
}

#[test]
fn loops_not_proven_to_end() {
    let mut t = Table::new("unbounded loops");
    let cases = [
        ("ja -1", "mov %r0, 0\nja -1 # <-", 1, 1),
        ("ja32 -1", "mov %r0, 0\nja32 -1 # <-", 1, 1),
        ("bound from the clock", "call 5\nmov %r6, 0\nloop:\nadd %r6, 1 # <-\njlt %r6, %r0, loop\nmov %r0, %r6\nexit", 2, 3),
        (
            "bound from the input length times 2^16",
            "mov %r3, %r2\nlsh %r3, 16\nmov %r0, 0\nloop:\nadd %r0, 1 # <-\njlt %r0, %r3, loop\nexit",
            3,
            4,
        ),
        ("counter reset in the body", "mov %r6, 0\nloop:\nmov %r6, 0 # <-\nadd %r6, 1\njlt %r6, 10, loop\nmov %r0, %r6\nexit", 1, 3),
        ("counter moving away from the bound", "mov %r6, 10\nloop:\nadd %r6, 1 # <-\njgt %r6, 5, loop\nmov %r0, %r6\nexit", 1, 2),
        ("step that jumps over the bound", "mov %r6, 10\nloop:\nsub %r6, 2 # <-\njne %r6, 1, loop\nmov %r0, %r6\nexit", 1, 2),
        (
            "counter moved on one path only",
            "mov %r6, 0\nloop:\ncall 7 # <-\njeq %r0, 0, skip\nadd %r6, 1\nskip:\njlt %r6, 10, loop\nmov %r0, %r6\nexit",
            1,
            4,
        ),
        (
            "constant trip count of 2^33",
            "lddw %r6, 0x200000000\nloop:\nsub %r6, 1 # <-\njne %r6, 0, loop\nmov %r0, 0\nexit",
            2,
            3,
        ),
        (
            "inner loop resets the outer counter",
            "mov %r6, 0\nouter:\nmov %r7, 0 # <-\ninner:\nadd %r7, 1\nmov %r6, 0\njlt %r7, 4, inner\nadd %r6, 1\njlt %r6, 3, outer\nmov %r0, 0\nexit",
            1,
            6,
        ),
        (
            "ja32 back edge with the counter reset",
            "mov %r6, 0\nloop:\nmov %r6, 0 # <-\nadd %r6, 1\njge %r6, 10, done\nja32 loop\ndone:\nmov %r0, 0\nexit",
            1,
            4,
        ),
        (
            "32-bit counter that never meets its bound",
            "mov %r6, 0\nloop:\nadd32 %r6, 2 # <-\njne32 %r6, 7, loop\nmov %r0, 0\nexit",
            1,
            2,
        ),
        (
            "signed bound reached only by overflow",
            "mov %r6, 0\nloop:\nadd %r6, 1 # <-\njsgt %r6, -1, loop\nmov %r0, 0\nexit",
            1,
            2,
        ),
        (
            "step read from the input that may be zero",
            "mov %r0, 0\njlt %r2, 1, out\nldxb %r6, [%r1+0]\nand %r6, 7\nmov %r3, 0\nloop:\nadd %r0, 1 # <-\nadd %r3, %r6\njlt %r3, 1000, loop\nout:\nexit",
            5,
            7,
        ),
        (
            "count down by a step that may be zero",
            "mov %r0, 0\njlt %r2, 1, out\nldxb %r6, [%r1+0]\nand %r6, 7\nmov %r3, 1000\nloop:\nadd %r0, 1 # <-\nsub %r3, %r6\njsgt %r3, 0, loop\nout:\nexit",
            5,
            7,
        ),
        (
            "loop in a callee, bound from the clock",
            "call local f\nexit\nf:\ncall 5\nmov %r6, %r0\nloop:\nsub %r6, 1 # <-\njne %r6, 0, loop\nmov %r0, 0\nexit",
            4,
            5,
        ),
    ];
    for (name, text, header, back_edge) in cases {
        t.reject_spec(Spec::new(name, text), &[(header, unbounded(header)), (back_edge, unbounded(header))]);
    }
    t.reject_spec(
        Spec::new(
            "bound read from a map value on every iteration",
            "
            stw [%r10-4], 0
            mov %r2, %r10
            add %r2, -4
            lddw %r1, map_idx(0)
            call 1
            jeq %r0, 0, out
            mov %r7, %r0
            mov %r6, 0
        loop:
            ldxdw %r1, [%r7+0] # <-
            add %r6, 1
            jlt %r6, %r1, loop
        out:
            mov %r0, 0
            exit",
        )
        .maps(ARRAY8),
        &[(9, kind!(UnboundedLoop { header: 9 })), (11, kind!(UnboundedLoop { header: 9 }))],
    );
    let mut small = Options::default();
    small.max_loop_iterations = 100;
    t.reject_spec(
        Spec::new(
            "a thousand iterations against a limit of a hundred",
            "mov %r6, 0\nloop:\nadd %r6, 1 # <-\njlt %r6, 1000, loop\nmov %r0, %r6\nexit",
        )
        .options(small),
        &[(1, kind!(UnboundedLoop { header: 1 })), (2, kind!(UnboundedLoop { header: 1 }))],
    );
    t.finish(18);
}

#[test]
fn complexity_limit() {
    let mut t = Table::new("complexity limit");
    let mut tight = Options::default();
    tight.max_processed = 20;
    let mut text = String::from("mov %r0, 0\n");
    for _ in 0..40 {
        text.push_str("add %r0, 1\n");
    }
    text.push_str("exit");
    let anywhere: Vec<_> = (0..42).map(|pc| (pc, kind!(TooComplex { header: None, .. }))).collect();
    t.reject_spec(Spec::new("straight line longer than the limit", &text).options(tight), &anywhere);
    t.finish(1);
}
