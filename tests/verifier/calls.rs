//! bpf-to-bpf calls: recursion, more than eight frames, callees returning pointers, a callee's stack
//! pointer outliving its frame, and `callx`, which verified mode does not support.

use crate::harness::{kind, Spec, Table};

/// A chain in which function `i` calls function `i + 1` and the last returns 0: `functions` functions
/// after the entry, `functions + 1` frames at the deepest point. Function `i` starts at slot `2 * i`.
fn chain(functions: usize) -> String {
    let mut text = String::from("call local f1\nexit\n");
    for i in 1..functions {
        text.push_str(&format!("f{i}:\ncall local f{}\nexit\n", i + 1));
    }
    text.push_str(&format!("f{functions}:\nmov %r0, 0\nexit"));
    text
}

#[test]
fn recursion_and_depth() {
    let mut t = Table::new("recursion and call depth");
    t.reject_plain(
        "function calls itself",
        "
        call local f
        exit
    f:
        call local f # <-
        exit",
        2,
        kind!(Recursion { callee: 2 }),
    );
    t.reject_plain(
        "entry calls itself",
        "
    main:
        mov %r0, 0
        jeq %r2, 0, done
        call local main # <-
    done:
        exit",
        2,
        kind!(Recursion { callee: 0 }),
    );
    t.reject_spec(
        Spec::new(
            "two functions call each other",
            "
            call local f
            exit
        f:
            call local g
            exit
        g:
            call local f # <-
            exit",
        ),
        &[(4, kind!(Recursion { callee: 2 })), (2, kind!(Recursion { callee: 4 }))],
    );
    t.reject_plain(
        "recursion bounded by an argument",
        "
        mov %r1, 3
        call local f
        exit
    f:
        mov %r0, 0
        jeq %r1, 0, done
        sub %r1, 1
        call local f # <-
    done:
        exit",
        6,
        kind!(Recursion { callee: 3 }),
    );
    t.reject_plain(
        "recursion on a branch the entry rarely takes",
        "
        mov %r0, 0
        jne %r2, 12345, done
        call local f
    done:
        exit
    f:
        mov %r1, 0
        call local g
        exit
    g:
        jeq %r1, 1, stop
        call local f # <-
    stop:
        mov %r0, 0
        exit",
        8,
        kind!(Recursion { callee: 4 }),
    );
    let nine = chain(8);
    t.reject_spec(Spec::new("nine frames", &nine), &[(14, kind!(CallDepth { depth: 9 }))]);
    let twelve = chain(11);
    t.reject_spec(Spec::new("twelve frames", &twelve), &[(14, kind!(CallDepth { depth: 9..=12 }))]);
    t.reject_plain(
        "nine frames on the second call of a function",
        "
        call local a
        exit
    a:
        call local b
        call local c1
        exit
    b:
        mov %r0, 0
        exit
    c1:
        call local c2
        exit
    c2:
        call local c3
        exit
    c3:
        call local c4
        exit
    c4:
        call local c5
        exit
    c5:
        call local c6
        exit
    c6:
        call local c7 # <-
        exit
    c7:
        mov %r0, 0
        exit",
        17,
        kind!(CallDepth { depth: 9 }),
    );
    t.finish(8);
}

#[test]
fn values_across_calls() {
    let mut t = Table::new("values across calls");
    t.reject_plain(
        "callee returns its frame pointer",
        "
        call local f
        mov %r0, 0
        exit
    f:
        mov %r0, %r10
        exit # <-",
        4,
        kind!(ExitValue),
    );
    t.reject_plain(
        "callee returns a pointer into its own frame",
        "
        call local f
        mov %r0, 0
        exit
    f:
        stdw [%r10-8], 1
        mov %r0, %r10
        add %r0, -8
        exit # <-",
        6,
        kind!(ExitValue),
    );
    t.reject_plain(
        "callee returns the caller's stack pointer",
        "
        mov %r1, %r10
        add %r1, -8
        call local f
        mov %r0, 0
        exit
    f:
        mov %r0, %r1
        exit # <-",
        6,
        kind!(ExitValue),
    );
    t.reject_plain(
        "callee returns the input pointer",
        "
        call local f
        mov %r0, 0
        exit
    f:
        mov %r0, %r1
        exit # <-",
        4,
        kind!(ExitValue),
    );
    t.reject_spec(
        Spec::new(
            "callee leaves its frame pointer in the caller's stack",
            "
            mov %r1, %r10
            add %r1, -8
            call local f
            ldxdw %r3, [%r10-8]
            ldxb %r0, [%r3+0]
            exit
        f:
            mov %r2, %r10
            add %r2, -16
            stxdw [%r1+0], %r2 # <-
            mov %r0, 0
            exit",
        ),
        &[
            (8, kind!(PointerLeak { reg: 2 } | Unsupported { .. })),
            (10, kind!(ExitValue)),
            (4, kind!(NotAPointer { reg: 3 } | OutOfBounds { region: Stack, .. } | UninitStack { .. })),
        ],
    );
    t.reject_plain(
        "indirect call",
        "
        mov %r0, 0
        mov %r1, 0
        call %r1 # <-
        exit",
        2,
        kind!(Unsupported { .. }),
    );
    t.finish(6);
}
