//! The buffer context: `r1` points to `r2` bytes whose number is known only at run time. Every access
//! needs a guard on `r2` or on an end pointer `r1 + r2`; these cases have none, a guard the wrong way
//! round, one byte short, on another register, or one that no longer says anything about the buffer.

use crate::harness::{kind, Table};

#[test]
fn input_without_a_proof() {
    let mut t = Table::new("input bounds");
    t.reject_plain(
        "no guard, load",
        "ldxb %r0, [%r1+0] # <-\nexit",
        0,
        kind!(OutOfBounds { region: Input, min: 0, end: 1, size: 0 }),
    );
    t.reject_plain(
        "no guard, store",
        "
        stb [%r1+0], 1 # <-
        mov %r0, 0
        exit",
        0,
        kind!(OutOfBounds { region: Input, min: 0, end: 1, size: 0 }),
    );
    t.reject_plain(
        "guard the wrong way round (jgt)",
        "
        mov %r0, 0
        jgt %r2, 8, out
        ldxdw %r0, [%r1+0] # <-
    out:
        exit",
        2,
        kind!(OutOfBounds { region: Input, min: 0, end: 8, size: 0 }),
    );
    t.reject_plain(
        "guard the wrong way round (jlt into the body)",
        "
        jlt %r2, 8, body
        mov %r0, 0
        exit
    body:
        ldxdw %r0, [%r1+0] # <-
        exit",
        3,
        kind!(OutOfBounds { region: Input, min: 0, end: 8, size: 0 }),
    );
    t.reject_plain(
        "guard one byte short (jlt)",
        "
        mov %r0, 0
        jlt %r2, 7, out
        ldxdw %r0, [%r1+0] # <-
    out:
        exit",
        2,
        kind!(OutOfBounds { region: Input, min: 0, end: 8, size: 7 }),
    );
    t.reject_plain(
        "guard one byte short (jle)",
        "
        mov %r0, 0
        jle %r2, 7, out
        ldxdw %r0, [%r1+1] # <-
    out:
        exit",
        2,
        kind!(OutOfBounds { region: Input, min: 1, end: 9, size: 8 }),
    );
    t.reject_plain(
        "guard one byte short (jge into the body)",
        "
        jge %r2, 3, body
        mov %r0, 0
        exit
    body:
        ldxw %r0, [%r1+0] # <-
        exit",
        3,
        kind!(OutOfBounds { region: Input, min: 0, end: 4, size: 3 }),
    );
    t.reject_plain(
        "exact length, one byte past it",
        "
        mov %r0, 0
        jne %r2, 8, out
        ldxb %r0, [%r1+8] # <-
    out:
        exit",
        2,
        kind!(OutOfBounds { region: Input, min: 8, end: 9, size: 8 }),
    );
    t.reject_plain(
        "non-empty is not four bytes",
        "
        mov %r0, 0
        jeq %r2, 0, out
        ldxw %r0, [%r1+0] # <-
    out:
        exit",
        2,
        kind!(OutOfBounds { region: Input, min: 0, end: 4, size: 0..=1 }),
    );
    t.reject_plain(
        "guard on another register",
        "
        mov %r0, 0
        mov %r3, 100
        jlt %r3, 8, out
        ldxdw %r0, [%r1+0] # <-
    out:
        exit",
        3,
        kind!(OutOfBounds { region: Input, size: 0, .. }),
    );
    t.reject_plain(
        "length overwritten before the guard",
        "
        mov %r0, 0
        mov %r2, 64
        jlt %r2, 8, out
        ldxdw %r0, [%r1+0] # <-
    out:
        exit",
        3,
        kind!(OutOfBounds { region: Input, size: 0, .. }),
    );
    t.reject_plain(
        "pointer advanced after the guard",
        "
        mov %r0, 0
        jlt %r2, 8, out
        add %r1, 1
        ldxdw %r0, [%r1+0] # <-
    out:
        exit",
        3,
        kind!(OutOfBounds { region: Input, min: 1, end: 9, size: 8 }),
    );
    t.reject_plain(
        "guard, then a negative offset",
        "
        mov %r0, 0
        jlt %r2, 8, out
        ldxb %r0, [%r1-1] # <-
    out:
        exit",
        2,
        kind!(OutOfBounds { region: Input, min: -1, end: 0, size: 8 }),
    );
    t.reject_plain(
        "pointer moved back after the guard",
        "
        mov %r0, 0
        jlt %r2, 8, out
        mov %r3, %r1
        sub %r3, 1
        ldxb %r0, [%r3+0] # <-
    out:
        exit",
        4,
        kind!(OutOfBounds { region: Input, min: -1, end: 0, size: 8 }),
    );
    t.reject_plain(
        "guard on one path only",
        "
        mov %r6, %r1
        mov %r7, %r2
        call 7
        jeq %r0, 0, skip
        jlt %r7, 8, out
    skip:
        ldxdw %r0, [%r6+0] # <-
        exit
    out:
        mov %r0, 0
        exit",
        5,
        kind!(OutOfBounds { region: Input, size: 0, .. }),
    );
    t.reject_plain(
        "offset from an input byte",
        "
        mov %r0, 0
        jlt %r2, 16, out
        ldxb %r3, [%r1+0]
        mov %r4, %r1
        add %r4, %r3
        ldxb %r0, [%r4+0] # <-
    out:
        exit",
        5,
        kind!(OutOfBounds { region: Input, size: 16, .. }),
    );
    t.reject_plain(
        "masked offset with an access one byte too wide",
        "
        mov %r0, 0
        jlt %r2, 16, out
        ldxb %r3, [%r1+0]
        and %r3, 15
        mov %r4, %r1
        add %r4, %r3
        ldxh %r0, [%r4+0] # <-
    out:
        exit",
        6,
        kind!(OutOfBounds { region: Input, size: 16, .. }),
    );
    t.reject_plain(
        "length overwritten between two guards",
        "
        mov %r0, 0
        jlt %r2, 4, out
        ldxw %r0, [%r1+0]
        mov %r2, 100
        jlt %r2, 8, out
        ldxdw %r0, [%r1+0] # <-
    out:
        exit",
        5,
        kind!(OutOfBounds { region: Input, min: 0, end: 8, size: 4 }),
    );
    t.finish(18);
}

#[test]
fn input_end_pointer_guards() {
    let mut t = Table::new("input end pointer guards");
    t.reject_plain(
        "end pointer guard the wrong way round",
        "
        mov %r3, %r1
        add %r3, %r2
        mov %r4, %r1
        add %r4, 8
        jle %r4, %r3, out
        ldxdw %r0, [%r1+0] # <-
        exit
    out:
        mov %r0, 0
        exit",
        5,
        kind!(OutOfBounds { region: Input, min: 0, end: 8, .. }),
    );
    t.reject_plain(
        "end pointer guard one byte short",
        "
        mov %r3, %r1
        add %r3, %r2
        mov %r4, %r1
        add %r4, 7
        jgt %r4, %r3, out
        ldxdw %r0, [%r1+0] # <-
        exit
    out:
        mov %r0, 0
        exit",
        5,
        kind!(OutOfBounds { region: Input, min: 0, end: 8, size: 7 }),
    );
    t.reject_plain(
        "end pointer guard, access at a higher offset",
        "
        mov %r3, %r1
        add %r3, %r2
        mov %r4, %r1
        add %r4, 8
        jgt %r4, %r3, out
        ldxdw %r0, [%r1+4] # <-
        exit
    out:
        mov %r0, 0
        exit",
        5,
        kind!(OutOfBounds { region: Input, min: 4, end: 12, size: 8 }),
    );
    t.reject_plain(
        "end pointer overwritten before the guard",
        "
        mov %r3, %r1
        add %r3, %r2
        mov %r3, %r1
        add %r3, 64
        mov %r4, %r1
        add %r4, 8
        jgt %r4, %r3, out
        ldxdw %r0, [%r1+0] # <-
        exit
    out:
        mov %r0, 0
        exit",
        7,
        kind!(OutOfBounds { region: Input, size: 0, .. }),
    );
    t.reject_plain(
        "guarded pointer is not the one read",
        "
        mov %r3, %r1
        add %r3, %r2
        mov %r4, %r1
        add %r4, 8
        jgt %r4, %r3, out
        ldxdw %r0, [%r4+0] # <-
        exit
    out:
        mov %r0, 0
        exit",
        5,
        kind!(OutOfBounds { region: Input, min: 8, end: 16, size: 8 }),
    );
    t.reject_plain(
        "equality with the end proves nothing for a later byte",
        "
        mov %r3, %r1
        add %r3, %r2
        mov %r4, %r1
        add %r4, 4
        jne %r4, %r3, out
        ldxb %r0, [%r1+4] # <-
        exit
    out:
        mov %r0, 0
        exit",
        5,
        kind!(OutOfBounds { region: Input, min: 4, end: 5, size: 0..=4 }),
    );
    t.reject_plain(
        "end pointer dereferenced",
        "
        mov %r3, %r1
        add %r3, %r2
        ldxb %r0, [%r3-1] # <-
        exit",
        2,
        kind!(NotAPointer { reg: 3 }),
    );
    t.reject_plain(
        "end pointer moved",
        "
        mov %r3, %r1
        add %r3, %r2
        add %r3, -1 # <-
        mov %r0, 0
        exit",
        2,
        kind!(PointerArithmetic { reg: 3 }),
    );
    t.reject_plain(
        "end pointer moved by a register",
        "
        mov %r3, %r1
        add %r3, %r2
        mov %r4, 8
        sub %r3, %r4 # <-
        mov %r0, 0
        exit",
        3,
        kind!(PointerArithmetic { reg: 3 }),
    );
    t.finish(9);
}
