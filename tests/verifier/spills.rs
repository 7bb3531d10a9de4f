//! Stack slots holding spilled pointers: overwriting part of one, reading part of one as a number, and
//! slots reused with another type (a scalar where a pointer was, a filled number used as a pointer).

use ebpf_vm::Context;

use crate::harness::{kind, MapSpec, Spec, Table, ARRAY8};

#[test]
fn partial_pointer_spills() {
    let mut t = Table::new("partial pointer spills");
    t.reject_plain(
        "byte stored into a spilled pointer",
        "
        stxdw [%r10-8], %r1
        stb [%r10-5], 0 # <-
        mov %r0, 0
        exit",
        1,
        kind!(PartialPointerSpill { offset: -8 }),
    );
    t.reject_plain(
        "upper half of a spilled pointer overwritten",
        "
        stxdw [%r10-8], %r1
        stw [%r10-4], 0 # <-
        mov %r0, 0
        exit",
        1,
        kind!(PartialPointerSpill { offset: -8 }),
    );
    t.reject_plain(
        "lower half of a spilled pointer read",
        "
        stxdw [%r10-8], %r1
        ldxw %r0, [%r10-8] # <-
        exit",
        1,
        kind!(PartialPointerSpill { offset: -8 }),
    );
    t.reject_plain(
        "top byte of a spilled pointer read",
        "
        stxdw [%r10-8], %r1
        ldxb %r0, [%r10-1] # <-
        exit",
        1,
        kind!(PartialPointerSpill { offset: -8 }),
    );
    t.reject_plain(
        "sign-extending read of half a spilled pointer",
        "
        stxdw [%r10-8], %r10
        ldxsw %r0, [%r10-8] # <-
        exit",
        1,
        kind!(PartialPointerSpill { offset: -8 }),
    );
    t.reject_plain(
        "8-byte store straddling a spilled pointer",
        "
        stxdw [%r10-16], %r1
        stdw [%r10-12], 0 # <-
        mov %r0, 0
        exit",
        1,
        kind!(PartialPointerSpill { offset: -16 }),
    );
    t.reject_plain(
        "8-byte read straddling a spilled pointer and a number",
        "
        stxdw [%r10-16], %r1
        stdw [%r10-8], 0
        ldxdw %r0, [%r10-12] # <-
        exit",
        2,
        kind!(PartialPointerSpill { offset: -16 }),
    );
    t.reject_plain(
        "8-byte read straddling two spilled pointers",
        "
        stxdw [%r10-16], %r1
        stxdw [%r10-8], %r10
        ldxdw %r0, [%r10-12] # <-
        exit",
        2,
        kind!(PartialPointerSpill { offset: -16 | -8 }),
    );
    t.reject_plain(
        "number stored into the middle of a spilled stack pointer",
        "
        mov %r3, %r10
        stxdw [%r10-8], %r3
        stxh [%r10-6], %r2 # <-
        mov %r0, 0
        exit",
        2,
        kind!(PartialPointerSpill { offset: -8 }),
    );
    t.reject_plain(
        "pointer spilled over half of another",
        "
        stxdw [%r10-16], %r1
        stxdw [%r10-12], %r10 # <-
        mov %r0, 0
        exit",
        1,
        kind!(PartialPointerSpill { offset: -16 | -12 }),
    );
    t.reject(
        "map value pointer spilled, first byte overwritten",
        "
        stw [%r10-4], 0
        mov %r2, %r10
        add %r2, -4
        lddw %r1, map_idx(0)
        call 1
        jeq %r0, 0, out
        stxdw [%r10-16], %r0
        stb [%r10-16], 0 # <-
    out:
        mov %r0, 0
        exit",
        ARRAY8,
        Context::Buffer,
        8,
        kind!(PartialPointerSpill { offset: -16 }),
    );
    t.reject_spec(
        Spec::new(
            "helper writes half of a spilled pointer, the slot is read back",
            "
            stxdw [%r10-16], %r1
            mov %r1, %r10
            add %r1, -12
            mov %r2, 4
            call 201 # <-
            ldxdw %r0, [%r10-16]
            exit",
        ),
        &[
            (4, kind!(PartialPointerSpill { offset: -16 })),
            (5, kind!(PartialPointerSpill { offset: -16 } | PointerLeak { .. })),
            (6, kind!(PointerLeak { reg: 0 })),
        ],
    );
    t.reject_plain(
        "callee stores into the pointer its caller spilled",
        "
        stxdw [%r10-8], %r1
        mov %r1, %r10
        add %r1, -8
        call local f
        exit
    f:
        stb [%r1+2], 0 # <-
        mov %r0, 0
        exit",
        5,
        kind!(PartialPointerSpill { offset: -8 }),
    );
    t.reject_spec(
        Spec::new(
            "32-bit spill of a pointer",
            "
            stxw [%r10-8], %r1 # <-
            mov %r0, 0
            exit",
        ),
        &[(0, kind!(PartialPointerSpill { offset: -8 })), (0, kind!(PointerLeak { reg: 1 }))],
    );
    t.reject_spec(
        Spec::new(
            "atomic add on a spilled pointer",
            "
            stxdw [%r10-8], %r1
            mov %r3, 1
            lock add [%r10-8], %r3 # <-
            mov %r0, 0
            exit",
        ),
        &[(2, kind!(PartialPointerSpill { offset: -8 })), (2, kind!(PointerArithmetic { .. }))],
    );
    t.finish(15);
}

#[test]
fn slots_reused_with_another_type() {
    let mut t = Table::new("stack slots reused");
    t.reject_plain(
        "spilled pointer overwritten by a number, filled and dereferenced",
        "
        stxdw [%r10-8], %r10
        stdw [%r10-8], 0
        ldxdw %r3, [%r10-8]
        ldxb %r0, [%r3+0] # <-
        exit",
        3,
        kind!(NotAPointer { reg: 3 }),
    );
    t.reject_plain(
        "spilled number filled and dereferenced",
        "
        mov %r3, 4096
        stxdw [%r10-8], %r3
        ldxdw %r4, [%r10-8]
        ldxb %r0, [%r4+0] # <-
        exit",
        3,
        kind!(NotAPointer { reg: 4 }),
    );
    t.reject_plain(
        "spilled pointer overwritten on one path only",
        "
        stxdw [%r10-8], %r10
        jeq %r2, 0, keep
        stdw [%r10-8], 64
    keep:
        ldxdw %r3, [%r10-8]
        stb [%r3-1], 0 # <-
        mov %r0, 0
        exit",
        4,
        kind!(NotAPointer { reg: 3 }),
    );
    t.reject(
        "map value pointer replaced by another map's, then the old size used",
        "
        stw [%r10-4], 0
        mov %r2, %r10
        add %r2, -4
        lddw %r1, map_idx(0)
        call 1
        jeq %r0, 0, out
        stxdw [%r10-16], %r0
        mov %r2, %r10
        add %r2, -4
        lddw %r1, map_idx(1)
        call 1
        jeq %r0, 0, out
        stxdw [%r10-16], %r0
        ldxdw %r3, [%r10-16]
        ldxdw %r0, [%r3+8] # <-
        exit
    out:
        mov %r0, 0
        exit",
        &[MapSpec::Array { value: 16, entries: 1 }, MapSpec::Array { value: 8, entries: 1 }],
        Context::Buffer,
        16,
        kind!(OutOfBounds { region: MapValue, min: 8, end: 16, size: 8 }),
    );
    t.finish(4);
}

#[test]
fn misaligned_atomics() {
    let mut t = Table::new("misaligned atomics");
    let value16 = &[MapSpec::Array { value: 16, entries: 1 }];
    let lookup = "
        stw [%r10-4], 0
        mov %r2, %r10
        add %r2, -4
        lddw %r1, map_idx(0)
        call 1
        jeq %r0, 0, out";
    t.reject_plain(
        "64-bit add at a 4-byte boundary of the stack",
        "
        stdw [%r10-16], 0
        stdw [%r10-8], 0
        mov %r1, 1
        lock add [%r10-12], %r1 # <-
        mov %r0, 0
        exit",
        3,
        kind!(Misaligned { reg: 10 }),
    );
    t.reject_plain(
        "32-bit add at a 2-byte boundary of the stack",
        "
        stdw [%r10-8], 0
        mov %r1, 1
        lock add32 [%r10-6], %r1 # <-
        mov %r0, 0
        exit",
        2,
        kind!(Misaligned { reg: 10 }),
    );
    t.reject_plain(
        "32-bit compare-and-exchange at an odd place",
        "
        stdw [%r10-8], 0
        mov %r0, 0
        mov %r1, 1
        lock cmpxchg32 [%r10-7], %r1 # <-
        mov %r0, 0
        exit",
        3,
        kind!(Misaligned { reg: 10 }),
    );
    t.reject_plain(
        "64-bit exchange at a 4-byte boundary",
        "
        stdw [%r10-24], 0
        stdw [%r10-16], 0
        mov %r1, 1
        lock xchg [%r10-20], %r1 # <-
        mov %r0, 0
        exit",
        3,
        kind!(Misaligned { reg: 10 }),
    );
    t.reject_plain(
        "fetch-or one byte off",
        "
        stdw [%r10-16], 0
        stdw [%r10-8], 0
        mov %r1, 1
        lock fetch or [%r10-9], %r1 # <-
        mov %r0, 0
        exit",
        3,
        kind!(Misaligned { reg: 10 }),
    );
    t.reject_plain(
        "variable offset that may be misaligned",
        "
        stdw [%r10-16], 0
        stdw [%r10-8], 0
        mov %r3, %r2
        and %r3, 4
        mov %r4, %r10
        add %r4, -16
        add %r4, %r3
        mov %r1, 1
        lock add [%r4+0], %r1 # <-
        mov %r0, 0
        exit",
        8,
        kind!(Misaligned { reg: 4 }),
    );
    t.reject(
        "64-bit add in the middle of a map value",
        &format!("{lookup}\nmov %r1, 1\nlock add [%r0+4], %r1 # <-\nout:\nmov %r0, 0\nexit"),
        value16,
        Context::Buffer,
        8,
        kind!(Misaligned { reg: 0 }),
    );
    t.reject(
        "32-bit fetch-add at a 2-byte boundary of a map value",
        &format!("{lookup}\nmov %r1, 1\nlock fetch add32 [%r0+2], %r1 # <-\nout:\nmov %r0, 0\nexit"),
        value16,
        Context::Buffer,
        8,
        kind!(Misaligned { reg: 0 }),
    );
    t.reject(
        "map value pointer moved by an odd amount",
        &format!("{lookup}\nadd %r0, 3\nmov %r1, 1\nlock xor32 [%r0+2], %r1 # <-\nout:\nmov %r0, 0\nexit"),
        value16,
        Context::Buffer,
        9,
        kind!(Misaligned { reg: 0 }),
    );
    t.reject_plain(
        "input buffer, whose address may be anything",
        "
        mov %r0, 0
        jlt %r2, 8, out
        mov %r3, 1
        lock add [%r1+0], %r3 # <-
    out:
        exit",
        3,
        kind!(Misaligned { reg: 1 }),
    );
    t.reject_plain(
        "callee's atomic on the caller's stack at a 4-byte boundary",
        "
        stdw [%r10-16], 0
        stdw [%r10-8], 0
        mov %r1, %r10
        add %r1, -12
        call local f
        exit
    f:
        mov %r2, 1
        lock add [%r1+0], %r2 # <-
        mov %r0, 0
        exit",
        7,
        kind!(Misaligned { reg: 1 }),
    );
    t.finish(11);
}

/// A 32-bit store keeps the low half of a register; what a branch learns about the whole register says
/// nothing more about the half than about its low 32 bits.
#[test]
fn halves_of_wider_numbers() {
    let mut t = Table::new("32-bit spills of 64-bit numbers");
    t.reject_spec(
        Spec::new(
            "a branch that bounds the register above 2^32 does not make its stored half impossible",
            "
            mov %r0, 0
            jlt %r2, 8, out
            ldxdw %r6, [%r1+0]
            mov %r7, %r6
            stxw [%r10-8], %r7
            lddw %r3, 0xffffffff
            jle %r6, %r3, out
            ldxdw %r0, [%r10+8] # <-
        out:
            exit",
        ),
        &[(8, kind!(OutOfBounds { region: Stack, .. }))],
    );
    t.reject_spec(
        Spec::new(
            "nor does one on a copy filled from the half",
            "
            mov %r0, 0
            jlt %r2, 8, out
            ldxdw %r6, [%r1+0]
            stxw [%r10-8], %r6
            ldxw %r7, [%r10-8]
            jgt %r7, 10, out
            jle %r6, 10, out
            ldxdw %r0, [%r10+8] # <-
        out:
            exit",
        ),
        &[(7, kind!(OutOfBounds { region: Stack, .. }))],
    );
    t.finish(2);
}
