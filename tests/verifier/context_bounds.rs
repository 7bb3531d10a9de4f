//! Fixed-size contexts and packet-style contexts: accesses outside the context, stores into its
//! read-only ranges, and packet accesses without a proof against `data_end`.

use ebpf_vm::Context;

use crate::harness::{fixed_read_only, kind, Spec, Table, NO_MAPS};

fn fixed16() -> Context {
    Context::fixed(16)
}

/// 32 bytes, the first 8 read-only.
fn ro_head() -> Context {
    fixed_read_only(32, &[(0, 8)])
}

/// A 24-byte context struct: packet start at 0, packet end at 8.
fn packet() -> Context {
    Context::Packet { size: 24, data: 0, data_end: 8 }
}

#[test]
fn fixed_context_bounds() {
    let mut t = Table::new("fixed context bounds");
    t.reject(
        "load just past the end",
        "ldxdw %r0, [%r1+16] # <-\nexit",
        NO_MAPS,
        fixed16(),
        0,
        kind!(OutOfBounds { region: Context, min: 16, end: 24, size: 16 }),
    );
    t.reject(
        "load straddling the end",
        "ldxdw %r0, [%r1+12] # <-\nexit",
        NO_MAPS,
        fixed16(),
        0,
        kind!(OutOfBounds { region: Context, min: 12, end: 20, size: 16 }),
    );
    t.reject(
        "load before the start",
        "ldxb %r0, [%r1-1] # <-\nexit",
        NO_MAPS,
        fixed16(),
        0,
        kind!(OutOfBounds { region: Context, min: -1, end: 0, size: 16 }),
    );
    t.reject(
        "store straddling the end",
        "
        stw [%r1+14], 0 # <-
        mov %r0, 0
        exit",
        NO_MAPS,
        fixed16(),
        0,
        kind!(OutOfBounds { region: Context, min: 14, end: 18, size: 16 }),
    );
    t.reject(
        "offset from a byte of the context",
        "
        ldxb %r3, [%r1+0]
        mov %r4, %r1
        add %r4, %r3
        ldxb %r0, [%r4+0] # <-
        exit",
        NO_MAPS,
        fixed16(),
        3,
        kind!(OutOfBounds { region: Context, size: 16, .. }),
    );
    t.reject(
        "masked offset with a two-byte access",
        "
        ldxb %r3, [%r1+0]
        and %r3, 15
        mov %r4, %r1
        add %r4, %r3
        ldxh %r0, [%r4+0] # <-
        exit",
        NO_MAPS,
        fixed16(),
        4,
        kind!(OutOfBounds { region: Context, size: 16, .. }),
    );
    t.reject(
        "callee reads past the context it was passed",
        "
        call local f
        exit
    f:
        ldxdw %r0, [%r1+16] # <-
        exit",
        NO_MAPS,
        fixed16(),
        2,
        kind!(OutOfBounds { region: Context, min: 16, end: 24, size: 16 }),
    );
    t.reject(
        "spilled and filled context pointer",
        "
        stxdw [%r10-8], %r1
        ldxdw %r3, [%r10-8]
        ldxw %r0, [%r3+16] # <-
        exit",
        NO_MAPS,
        fixed16(),
        2,
        kind!(OutOfBounds { region: Context, min: 16, end: 20, size: 16 }),
    );
    t.reject(
        "a guard on r2 does not grow a fixed context",
        "
        mov %r0, 0
        jlt %r2, 16, out
        ldxb %r0, [%r1+16] # <-
    out:
        exit",
        NO_MAPS,
        fixed16(),
        2,
        kind!(OutOfBounds { region: Context, min: 16, end: 17, size: 16 }),
    );
    t.reject_spec(
        Spec::new(
            "the context plus its size",
            "
            mov %r3, %r1
            add %r3, %r2
            ldxb %r0, [%r3+0] # <-
            exit",
        )
        .context(fixed16()),
        &[(2, kind!(OutOfBounds { region: Context, min: 16, end: 17, size: 16 })), (2, kind!(NotAPointer { reg: 3 }))],
    );
    t.finish(10);
}

#[test]
fn read_only_context_ranges() {
    let mut t = Table::new("read-only context ranges");
    t.reject(
        "word store inside the range",
        "
        stw [%r1+4], 0 # <-
        mov %r0, 0
        exit",
        NO_MAPS,
        ro_head(),
        0,
        kind!(ReadOnly { region: Context }),
    );
    t.reject(
        "store overlapping the range's end",
        "
        stdw [%r1+4], 0 # <-
        mov %r0, 0
        exit",
        NO_MAPS,
        ro_head(),
        0,
        kind!(ReadOnly { region: Context }),
    );
    t.reject(
        "register store to the range's last byte",
        "
        mov %r3, 1
        stxb [%r1+7], %r3 # <-
        mov %r0, 0
        exit",
        NO_MAPS,
        ro_head(),
        1,
        kind!(ReadOnly { region: Context }),
    );
    t.reject(
        "writing helper over the range",
        "
        mov %r2, 8
        call 201 # <-
        mov %r0, 0
        exit",
        NO_MAPS,
        ro_head(),
        1,
        kind!(ReadOnly { region: Context }),
    );
    t.reject(
        "range in the middle",
        "
        stb [%r1+15], 0 # <-
        mov %r0, 0
        exit",
        NO_MAPS,
        fixed_read_only(32, &[(8, 16)]),
        0,
        kind!(ReadOnly { region: Context }),
    );
    t.reject(
        "second of two ranges",
        "
        stb [%r1+5], 0
        stw [%r1+24], 0 # <-
        mov %r0, 0
        exit",
        NO_MAPS,
        fixed_read_only(32, &[(0, 4), (24, 32)]),
        1,
        kind!(ReadOnly { region: Context }),
    );
    t.reject(
        "variable offset that may land in the range",
        "
        ldxb %r3, [%r1+16]
        and %r3, 15
        mov %r4, %r1
        add %r4, %r3
        stb [%r4+0], 0 # <-
        mov %r0, 0
        exit",
        NO_MAPS,
        ro_head(),
        4,
        kind!(ReadOnly { region: Context }),
    );
    t.reject(
        "store through a filled context pointer",
        "
        stxdw [%r10-8], %r1
        ldxdw %r6, [%r10-8]
        sth [%r6+6], 0 # <-
        mov %r0, 0
        exit",
        NO_MAPS,
        ro_head(),
        2,
        kind!(ReadOnly { region: Context }),
    );
    t.reject(
        "callee stores into the range",
        "
        call local f
        exit
    f:
        stb [%r1+0], 1 # <-
        mov %r0, 0
        exit",
        NO_MAPS,
        ro_head(),
        2,
        kind!(ReadOnly { region: Context }),
    );
    t.finish(9);
}

#[test]
fn packet_context() {
    let mut t = Table::new("packet context");
    t.reject(
        "store into the context struct",
        "
        stdw [%r1+16], 0 # <-
        mov %r0, 0
        exit",
        NO_MAPS,
        packet(),
        0,
        kind!(ReadOnly { region: Context }),
    );
    t.reject(
        "overwriting the data field",
        "
        mov %r3, 0
        stxdw [%r1+0], %r3 # <-
        mov %r0, 0
        exit",
        NO_MAPS,
        packet(),
        1,
        kind!(ReadOnly { region: Context }),
    );
    t.reject(
        "load past the context struct",
        "ldxdw %r0, [%r1+24] # <-\nexit",
        NO_MAPS,
        packet(),
        0,
        kind!(OutOfBounds { region: Context, min: 24, end: 32, size: 24 }),
    );
    t.reject(
        "packet read without a guard",
        "
        ldxdw %r2, [%r1+0]
        ldxb %r0, [%r2+0] # <-
        exit",
        NO_MAPS,
        packet(),
        1,
        kind!(OutOfBounds { region: Input, .. }),
    );
    t.reject(
        "packet write without a guard",
        "
        ldxdw %r2, [%r1+0]
        stb [%r2+0], 1 # <-
        mov %r0, 0
        exit",
        NO_MAPS,
        packet(),
        1,
        kind!(OutOfBounds { region: Input, .. }),
    );
    t.reject(
        "guard one byte short",
        "
        ldxdw %r2, [%r1+0]
        ldxdw %r3, [%r1+8]
        mov %r4, %r2
        add %r4, 4
        jgt %r4, %r3, out
        ldxw %r0, [%r2+1] # <-
        exit
    out:
        mov %r0, 0
        exit",
        NO_MAPS,
        packet(),
        5,
        kind!(OutOfBounds { region: Input, min: 1, end: 5, size: 4 }),
    );
    t.reject(
        "guard the wrong way round",
        "
        ldxdw %r2, [%r1+0]
        ldxdw %r3, [%r1+8]
        mov %r4, %r2
        add %r4, 8
        jle %r4, %r3, out
        ldxdw %r0, [%r2+0] # <-
        exit
    out:
        mov %r0, 0
        exit",
        NO_MAPS,
        packet(),
        5,
        kind!(OutOfBounds { region: Input, .. }),
    );
    t.reject(
        "access past the guarded length",
        "
        ldxdw %r2, [%r1+0]
        ldxdw %r3, [%r1+8]
        mov %r4, %r2
        add %r4, 8
        jgt %r4, %r3, out
        ldxb %r0, [%r2+8] # <-
        exit
    out:
        mov %r0, 0
        exit",
        NO_MAPS,
        packet(),
        5,
        kind!(OutOfBounds { region: Input, min: 8, end: 9, size: 8 }),
    );
    t.reject(
        "packet end dereferenced",
        "
        ldxdw %r3, [%r1+8]
        ldxb %r0, [%r3-1] # <-
        exit",
        NO_MAPS,
        packet(),
        1,
        kind!(NotAPointer { reg: 3 }),
    );
    t.reject(
        "arithmetic on the packet end",
        "
        ldxdw %r3, [%r1+8]
        add %r3, -4 # <-
        mov %r0, 0
        exit",
        NO_MAPS,
        packet(),
        1,
        kind!(PointerArithmetic { reg: 3 }),
    );
    t.reject(
        "guard in the wrong order of data and end fields",
        "
        ldxdw %r2, [%r1+8]
        ldxdw %r3, [%r1+0]
        mov %r4, %r3
        add %r4, 2
        jgt %r4, %r2, out
        ldxh %r0, [%r2+0] # <-
        exit
    out:
        mov %r0, 0
        exit",
        NO_MAPS,
        packet(),
        5,
        kind!(NotAPointer { reg: 2 }),
    );
    t.reject(
        "packet start returned",
        "
        ldxdw %r0, [%r1+0]
        exit # <-",
        NO_MAPS,
        packet(),
        1,
        kind!(PointerLeak { reg: 0 }),
    );
    t.finish(12);
}
