//! Accesses outside the 512-byte stack frame: below -512, at or above the frame's top, with variable
//! offsets, with sizes that straddle an edge, and through pointers handed to callees.
//!
//! Whether `min` and `end` count from the frame's top or its bottom is the verifier's choice; the
//! cases check the region and that `end - min` is the width of the access.

use crate::harness::{kind, Table};

#[test]
fn stack_out_of_bounds() {
    let mut t = Table::new("stack bounds");
    t.reject_plain(
        "8 bytes below the frame",
        "
        stdw [%r10-520], 0 # <-
        mov %r0, 0
        exit",
        0,
        kind!(OutOfBounds { region: Stack, min, end, .. } if end - min == 8),
    );
    t.reject_plain(
        "8 bytes straddling the bottom",
        "
        stdw [%r10-516], 0 # <-
        mov %r0, 0
        exit",
        0,
        kind!(OutOfBounds { region: Stack, min, end, .. } if end - min == 8),
    );
    t.reject_plain(
        "one byte below the frame",
        "
        stb [%r10-513], 0 # <-
        mov %r0, 0
        exit",
        0,
        kind!(OutOfBounds { region: Stack, min, end, .. } if end - min == 1),
    );
    t.reject_plain(
        "load below the frame",
        "ldxdw %r0, [%r10-513] # <-\nexit",
        0,
        kind!(OutOfBounds { region: Stack, min, end, .. } if end - min == 8),
    );
    t.reject_plain(
        "far below the frame",
        "
        stb [%r10-32768], 0 # <-
        mov %r0, 0
        exit",
        0,
        kind!(OutOfBounds { region: Stack, min, end, .. } if end - min == 1),
    );
    t.reject_plain(
        "byte at the frame's top",
        "
        stb [%r10+0], 0 # <-
        mov %r0, 0
        exit",
        0,
        kind!(OutOfBounds { region: Stack, min, end, .. } if end - min == 1),
    );
    t.reject_plain(
        "word straddling the top",
        "
        stw [%r10-2], 0 # <-
        mov %r0, 0
        exit",
        0,
        kind!(OutOfBounds { region: Stack, min, end, .. } if end - min == 4),
    );
    t.reject_plain(
        "load above the top",
        "ldxdw %r0, [%r10+8] # <-\nexit",
        0,
        kind!(OutOfBounds { region: Stack, min, end, .. } if end - min == 8),
    );
    t.reject_plain(
        "derived pointer below the frame",
        "
        mov %r1, %r10
        add %r1, -600
        stb [%r1+0], 1 # <-
        mov %r0, 0
        exit",
        2,
        kind!(OutOfBounds { region: Stack, min, end, .. } if end - min == 1),
    );
    t.reject_plain(
        "derived pointer at the bottom, negative offset",
        "
        mov %r1, %r10
        add %r1, -512
        ldxb %r0, [%r1-1] # <-
        exit",
        2,
        kind!(OutOfBounds { region: Stack, min, end, .. } if end - min == 1),
    );
    t.reject_plain(
        "derived pointer moved up past the top",
        "
        mov %r1, %r10
        sub %r1, -4
        stb [%r1-2], 1 # <-
        mov %r0, 0
        exit",
        2,
        kind!(OutOfBounds { region: Stack, min, end, .. } if end - min == 1),
    );
    t.reject_plain(
        "variable offset reaching above the top",
        "
        mov %r3, %r2
        and %r3, 255
        mov %r1, %r10
        add %r1, -200
        add %r1, %r3
        stb [%r1+0], 0 # <-
        mov %r0, 0
        exit",
        5,
        kind!(OutOfBounds { region: Stack, .. }),
    );
    t.reject_plain(
        "variable offset reaching below the bottom",
        "
        mov %r3, %r2
        and %r3, 1023
        mov %r1, %r10
        sub %r1, %r3
        stb [%r1-1], 0 # <-
        mov %r0, 0
        exit",
        4,
        kind!(OutOfBounds { region: Stack, .. }),
    );
    t.reject_plain(
        "variable offset whose access size straddles the top",
        "
        mov %r3, %r2
        and %r3, 7
        mov %r1, %r10
        add %r1, -8
        add %r1, %r3
        stdw [%r1+0], 0 # <-
        mov %r0, 0
        exit",
        5,
        kind!(OutOfBounds { region: Stack, .. }),
    );
    t.reject_plain(
        "shifted variable offset reaching below",
        "
        mov %r3, %r2
        and %r3, 63
        lsh %r3, 2
        mov %r1, %r10
        sub %r1, %r3
        add %r1, -300
        stb [%r1+0], 0 # <-
        mov %r0, 0
        exit",
        6,
        kind!(OutOfBounds { region: Stack, .. }),
    );
    t.reject_plain(
        "atomic at the frame's top",
        "
        mov %r1, 1
        lock add [%r10+0], %r1 # <-
        mov %r0, 0
        exit",
        1,
        kind!(OutOfBounds { region: Stack, min, end, .. } if end - min == 8),
    );
    t.reject_plain(
        "callee writes past the caller's top through its argument",
        "
        mov %r1, %r10
        add %r1, -8
        call local f
        exit
    f:
        stdw [%r1+8], 0 # <-
        mov %r0, 0
        exit",
        4,
        kind!(OutOfBounds { region: Stack, min, end, .. } if end - min == 8),
    );
    t.reject_plain(
        "callee reads below its own frame",
        "
        call local f
        exit
    f:
        ldxw %r0, [%r10-516] # <-
        exit",
        2,
        kind!(OutOfBounds { region: Stack, min, end, .. } if end - min == 4),
    );
    t.reject_plain(
        "pointer moved below the bottom in a loop",
        "
        mov %r1, %r10
        mov %r6, 0
    loop:
        add %r1, -64
        add %r6, 1
        jlt %r6, 9, loop
        stb [%r1+0], 0 # <-
        mov %r0, 0
        exit",
        5,
        kind!(OutOfBounds { region: Stack, .. }),
    );
    t.finish(19);
}
