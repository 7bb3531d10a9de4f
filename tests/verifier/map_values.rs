//! Map values: accesses outside `value_size`, lookups used before their null check, and stores into
//! maps programs may only read.

use ebpf_vm::Context;

use crate::harness::{kind, MapSpec, Spec, Table, ARRAY8};

/// Looks up key 0 of map 0 into `r0`, jumps to `out` when it is null, then `body`; `out` returns 0.
/// The body starts at slot 7.
fn checked(body: &str) -> String {
    format!(
        "
        stw [%r10-4], 0
        mov %r2, %r10
        add %r2, -4
        lddw %r1, map_idx(0)
        call 1
        jeq %r0, 0, out
        {body}
        mov %r0, 0
        exit
    out:
        mov %r0, 0
        exit"
    )
}

/// As [`checked`] without the null check: the body starts at slot 6; `out` exists only when the
/// body jumps there.
fn unchecked(body: &str) -> String {
    let out = if body.contains("out") { "out:\nmov %r0, 0\nexit" } else { "" };
    format!(
        "
        stw [%r10-4], 0
        mov %r2, %r10
        add %r2, -4
        lddw %r1, map_idx(0)
        call 1
        {body}
        mov %r0, 0
        exit
        {out}"
    )
}

const READ_ONLY: &[MapSpec] = &[MapSpec::ReadOnlyArray { value: 8, entries: 1, init: &[1, 2, 3, 4, 5, 6, 7, 8] }];

#[test]
fn map_value_bounds() {
    let mut t = Table::new("map value bounds");
    let b = Context::Buffer;
    t.reject(
        "one byte past the end",
        &checked("ldxdw %r1, [%r0+1] # <-"),
        ARRAY8,
        b.clone(),
        7,
        kind!(OutOfBounds { region: MapValue, min: 1, end: 9, size: 8 }),
    );
    t.reject(
        "first byte after the value",
        &checked("ldxb %r1, [%r0+8] # <-"),
        ARRAY8,
        b.clone(),
        7,
        kind!(OutOfBounds { region: MapValue, min: 8, end: 9, size: 8 }),
    );
    t.reject(
        "byte before the value",
        &checked("ldxb %r1, [%r0-1] # <-"),
        ARRAY8,
        b.clone(),
        7,
        kind!(OutOfBounds { region: MapValue, min: -1, end: 0, size: 8 }),
    );
    t.reject(
        "store straddling the end",
        &checked("stw [%r0+6], 1 # <-"),
        ARRAY8,
        b.clone(),
        7,
        kind!(OutOfBounds { region: MapValue, min: 6, end: 10, size: 8 }),
    );
    t.reject(
        "offset from the value itself, unbounded",
        &checked("ldxdw %r1, [%r0+0]\nadd %r0, %r1 # <-\nldxb %r1, [%r0+0]"),
        ARRAY8,
        b.clone(),
        8,
        kind!(UnboundedOffset { reg: 0 }),
    );
    t.reject(
        "offset from a byte of the value",
        &checked("ldxb %r1, [%r0+0]\nadd %r0, %r1\nldxb %r1, [%r0+0] # <-"),
        ARRAY8,
        b.clone(),
        9,
        kind!(OutOfBounds { region: MapValue, size: 8, .. }),
    );
    t.reject(
        "masked offset, access one byte too wide",
        &checked("ldxb %r1, [%r0+0]\nand %r1, 7\nadd %r0, %r1\nldxh %r1, [%r0+0] # <-"),
        ARRAY8,
        b.clone(),
        10,
        kind!(OutOfBounds { region: MapValue, size: 8, .. }),
    );
    t.reject(
        "masked offset subtracted",
        &checked("ldxb %r1, [%r0+0]\nand %r1, 3\nsub %r0, %r1\nldxb %r1, [%r0+0] # <-"),
        ARRAY8,
        b.clone(),
        10,
        kind!(OutOfBounds { region: MapValue, size: 8, .. }),
    );
    t.reject(
        "large value, first byte after it",
        &checked("ldxb %r1, [%r0+4096] # <-"),
        &[MapSpec::Array { value: 4096, entries: 4 }],
        b.clone(),
        7,
        kind!(OutOfBounds { region: MapValue, min: 4096, end: 4097, size: 4096 }),
    );
    t.reject(
        "64 KiB value, access straddling its end",
        &checked("mov %r1, %r0\nadd %r1, 65535\nldxh %r2, [%r1+0] # <-"),
        &[MapSpec::Array { value: 65536, entries: 1 }],
        b.clone(),
        9,
        kind!(OutOfBounds { region: MapValue, min: 65535, end: 65537, size: 65536 }),
    );
    t.reject(
        "hash map value",
        &checked("ldxdw %r1, [%r0+16] # <-"),
        &[MapSpec::Hash { key: 4, value: 16, entries: 8 }],
        b.clone(),
        7,
        kind!(OutOfBounds { region: MapValue, min: 16, end: 24, size: 16 }),
    );
    t.reject(
        "per-CPU array value",
        &checked("ldxdw %r1, [%r0+8] # <-"),
        &[MapSpec::PerCpuArray { value: 8, entries: 2 }],
        b.clone(),
        7,
        kind!(OutOfBounds { region: MapValue, min: 8, end: 16, size: 8 }),
    );
    t.reject(
        "value of the smaller of two maps",
        "
        stw [%r10-4], 0
        mov %r2, %r10
        add %r2, -4
        lddw %r1, map_idx(1)
        call 1
        jeq %r0, 0, out
        ldxdw %r0, [%r0+0] # <-
        exit
    out:
        mov %r0, 0
        exit",
        &[MapSpec::Array { value: 8, entries: 1 }, MapSpec::Array { value: 4, entries: 1 }],
        b.clone(),
        7,
        kind!(OutOfBounds { region: MapValue, min: 0, end: 8, size: 4 }),
    );
    t.reject(
        "direct value address, straddling the end",
        "
        lddw %r1, map_idx_value(0, 4)
        ldxdw %r0, [%r1+0] # <-
        exit",
        ARRAY8,
        b.clone(),
        2,
        kind!(OutOfBounds { region: MapValue, min: 4, end: 12, size: 8 }),
    );
    t.reject(
        "direct value address, before the value",
        "
        lddw %r1, map_idx_value(0, 0)
        ldxb %r0, [%r1-1] # <-
        exit",
        ARRAY8,
        b.clone(),
        2,
        kind!(OutOfBounds { region: MapValue, min: -1, end: 0, size: 8 }),
    );
    t.reject(
        "pointer advanced in a loop past the end",
        &checked(
            "mov %r6, 0
        loop:
            add %r0, 1
            add %r6, 1
            jlt %r6, 8, loop
            ldxb %r1, [%r0+0] # <-",
        ),
        ARRAY8,
        b.clone(),
        11,
        kind!(OutOfBounds { region: MapValue, size: 8, .. }),
    );
    t.reject(
        "spilled and filled value pointer",
        &checked("stxdw [%r10-16], %r0\nldxdw %r3, [%r10-16]\nldxw %r1, [%r3+6] # <-"),
        ARRAY8,
        b.clone(),
        9,
        kind!(OutOfBounds { region: MapValue, min: 6, end: 10, size: 8 }),
    );
    t.reject(
        "callee reads past the value it was passed",
        "
        stw [%r10-4], 0
        mov %r2, %r10
        add %r2, -4
        lddw %r1, map_idx(0)
        call 1
        jeq %r0, 0, out
        mov %r1, %r0
        call local f
        exit
    out:
        mov %r0, 0
        exit
    f:
        ldxdw %r0, [%r1+4] # <-
        exit",
        ARRAY8,
        b,
        12,
        kind!(OutOfBounds { region: MapValue, min: 4, end: 12, size: 8 }),
    );
    t.finish(18);
}

#[test]
fn null_checks() {
    let mut t = Table::new("null checks");
    let b = Context::Buffer;
    t.reject(
        "load before the check",
        &unchecked("ldxdw %r1, [%r0+0] # <-"),
        ARRAY8,
        b.clone(),
        6,
        kind!(MaybeNull { reg: 0 }),
    );
    t.reject(
        "store before the check",
        &unchecked("stdw [%r0+0], 1 # <-"),
        ARRAY8,
        b.clone(),
        6,
        kind!(MaybeNull { reg: 0 }),
    );
    t.reject(
        "hash map value before the check",
        &unchecked("ldxw %r1, [%r0+0] # <-"),
        &[MapSpec::Hash { key: 4, value: 8, entries: 8 }],
        b.clone(),
        6,
        kind!(MaybeNull { reg: 0 }),
    );
    t.reject(
        "check on the wrong register",
        "
        mov %r6, 1
        stw [%r10-4], 0
        mov %r2, %r10
        add %r2, -4
        lddw %r1, map_idx(0)
        call 1
        jeq %r6, 0, out
        ldxdw %r1, [%r0+0] # <-
    out:
        mov %r0, 0
        exit",
        ARRAY8,
        b.clone(),
        8,
        kind!(MaybeNull { reg: 0 }),
    );
    t.reject(
        "check after the use",
        &unchecked("ldxdw %r1, [%r0+0] # <-\njeq %r0, 0, out"),
        ARRAY8,
        b.clone(),
        6,
        kind!(MaybeNull { reg: 0 }),
    );
    t.reject(
        "the other lookup's result checked",
        &unchecked(
            "mov %r6, %r0
            mov %r2, %r10
            add %r2, -4
            lddw %r1, map_idx(0)
            call 1
            jeq %r6, 0, out
            ldxdw %r1, [%r0+0] # <-",
        ),
        ARRAY8,
        b.clone(),
        13,
        kind!(MaybeNull { reg: 0 }),
    );
    t.reject_spec(
        Spec::new("check inverted, null dereferenced", &unchecked("jne %r0, 0, out\nldxdw %r1, [%r0+0] # <-"))
            .maps(ARRAY8),
        &[(7, kind!(NotAPointer { reg: 0 })), (7, kind!(MaybeNull { reg: 0 }))],
    );
    t.reject_spec(
        Spec::new(
            "dereference in the null branch",
            &unchecked("jeq %r0, 0, null\nmov %r0, 0\nexit\nnull:\nldxdw %r1, [%r0+0] # <-"),
        )
        .maps(ARRAY8),
        &[(9, kind!(NotAPointer { reg: 0 })), (9, kind!(MaybeNull { reg: 0 }))],
    );
    t.reject_spec(
        Spec::new("arithmetic before the check", &unchecked("add %r0, 8 # <-")).maps(ARRAY8),
        &[(6, kind!(MaybeNull { reg: 0 })), (6, kind!(PointerArithmetic { reg: 0 }))],
    );
    t.reject_spec(
        Spec::new(
            "passed to a helper as a map value before the check",
            &unchecked(
                "mov %r3, %r0
                mov %r2, %r10
                add %r2, -4
                lddw %r1, map_idx(0)
                mov %r4, 0
                call 2 # <-",
            ),
        )
        .maps(ARRAY8),
        &[(12, kind!(MaybeNull { reg: 3 })), (12, kind!(HelperArgument { helper: 2, arg: 3, .. }))],
    );
    t.reject_spec(
        Spec::new(
            "passed to a helper as memory before the check",
            &unchecked("mov %r1, %r0\nmov %r2, 8\ncall 200 # <-"),
        )
        .maps(ARRAY8),
        &[(8, kind!(MaybeNull { reg: 1 })), (8, kind!(HelperArgument { helper: 200, arg: 1, .. }))],
    );
    t.reject(
        "spilled before the check, filled and used",
        &unchecked("stxdw [%r10-16], %r0\nldxdw %r1, [%r10-16]\nldxdw %r2, [%r1+0] # <-"),
        ARRAY8,
        b.clone(),
        8,
        kind!(MaybeNull { reg: 1 }),
    );
    t.reject(
        "checked on one path only",
        &unchecked(
            "mov %r6, %r0
            call 7
            jeq %r0, 0, use
            jeq %r6, 0, out
        use:
            ldxdw %r1, [%r6+0] # <-",
        ),
        ARRAY8,
        b.clone(),
        10,
        kind!(MaybeNull { reg: 6 }),
    );
    t.reject_spec(
        Spec::new("32-bit null check", &unchecked("jeq32 %r0, 0, out\nldxdw %r1, [%r0+0] # <-")).maps(ARRAY8),
        &[(7, kind!(MaybeNull { reg: 0 })), (6, kind!(PointerComparison { reg: 0 }))],
    );
    t.reject(
        "register reused for an unchecked second lookup",
        &checked(
            "mov %r6, %r0
            mov %r2, %r10
            add %r2, -4
            lddw %r1, map_idx(0)
            call 1
            mov %r6, %r0
            ldxdw %r1, [%r6+0] # <-",
        ),
        ARRAY8,
        b,
        14,
        kind!(MaybeNull { reg: 6 }),
    );
    t.finish(15);
}

#[test]
fn read_only_maps() {
    let mut t = Table::new("read-only maps");
    let b = Context::Buffer;
    t.reject(
        "store into a read-only map value",
        &checked("stdw [%r0+0], 1 # <-"),
        READ_ONLY,
        b.clone(),
        7,
        kind!(ReadOnly { region: MapValue | ReadOnlyData }),
    );
    t.reject(
        "register store into a read-only map value",
        &checked("mov %r1, 7\nstxb [%r0+7], %r1 # <-"),
        READ_ONLY,
        b.clone(),
        8,
        kind!(ReadOnly { region: MapValue | ReadOnlyData }),
    );
    t.reject(
        "atomic add on a read-only map value",
        &checked("mov %r1, 1\nlock add [%r0+0], %r1 # <-"),
        READ_ONLY,
        b.clone(),
        8,
        kind!(ReadOnly { region: MapValue | ReadOnlyData }),
    );
    t.reject(
        "compare-and-exchange on a read-only map value",
        &checked("mov %r6, %r0\nmov %r0, 0\nmov %r1, 1\nlock cmpxchg [%r6+0], %r1 # <-"),
        READ_ONLY,
        b.clone(),
        10,
        kind!(ReadOnly { region: MapValue | ReadOnlyData }),
    );
    t.reject(
        "writing helper into a read-only map value",
        &checked("mov %r1, %r0\nmov %r2, 8\ncall 201 # <-"),
        READ_ONLY,
        b.clone(),
        9,
        kind!(ReadOnly { region: MapValue | ReadOnlyData }),
    );
    t.reject(
        "store into read-only data by address",
        "
        lddw %r1, map_idx_value(0, 0)
        stb [%r1+0], 1 # <-
        mov %r0, 0
        exit",
        READ_ONLY,
        b.clone(),
        2,
        kind!(ReadOnly { region: MapValue | ReadOnlyData }),
    );
    t.reject(
        "store into read-only data after pointer arithmetic",
        "
        lddw %r1, map_idx_value(0, 0)
        add %r1, 4
        stw [%r1+0], 1 # <-
        mov %r0, 0
        exit",
        READ_ONLY,
        b.clone(),
        3,
        kind!(ReadOnly { region: MapValue | ReadOnlyData }),
    );
    t.reject(
        "store through a filled read-only pointer",
        "
        lddw %r1, map_idx_value(0, 4)
        stxdw [%r10-8], %r1
        ldxdw %r2, [%r10-8]
        sth [%r2+2], 1 # <-
        mov %r0, 0
        exit",
        READ_ONLY,
        b.clone(),
        4,
        kind!(ReadOnly { region: MapValue | ReadOnlyData }),
    );
    t.reject(
        "callee stores into the read-only value it was passed",
        "
        lddw %r1, map_idx_value(0, 0)
        call local f
        exit
    f:
        stb [%r1+3], 0 # <-
        mov %r0, 0
        exit",
        READ_ONLY,
        b.clone(),
        4,
        kind!(ReadOnly { region: MapValue | ReadOnlyData }),
    );
    t.reject_spec(
        Spec::new(
            "update of a read-only map",
            "
            stw [%r10-4], 0
            stdw [%r10-16], 0
            lddw %r1, map_idx(0)
            mov %r2, %r10
            add %r2, -4
            mov %r3, %r10
            add %r3, -16
            mov %r4, 0
            call 2 # <-
            mov %r0, 0
            exit",
        )
        .maps(READ_ONLY),
        &[
            (9, kind!(ReadOnly { region: MapValue | ReadOnlyData })),
            (9, kind!(HelperArgument { helper: 2, arg: 1, .. })),
        ],
    );
    t.reject_spec(
        Spec::new(
            "delete from a read-only map",
            "
            stw [%r10-4], 0
            lddw %r1, map_idx(0)
            mov %r2, %r10
            add %r2, -4
            call 3 # <-
            mov %r0, 0
            exit",
        )
        .maps(READ_ONLY),
        &[
            (5, kind!(ReadOnly { region: MapValue | ReadOnlyData })),
            (5, kind!(HelperArgument { helper: 3, arg: 1, .. })),
        ],
    );
    t.finish(11);
}

/// Map 0: an array of 4 values of 8 bytes; map 1: an array of maps whose entry 0 names map 0.
const OF_MAPS: &[crate::harness::MapSpec] = &[
    crate::harness::MapSpec::Array { value: 8, entries: 4 },
    crate::harness::MapSpec::ArrayOfArrays { value: 8, inner: 0 },
];

/// Looks up entry 0 of the array of maps (map 1) into r6 (null goes to `out`), then `body`.
/// Slots: 0 stw, 1 mov, 2 add, 3-4 lddw, 5 call, 6 jeq, 7 mov, then `body` from 8.
fn with_inner(body: &str, check: bool) -> String {
    let jeq = if check { "jeq %r0, 0, out" } else { "ja +0" };
    format!(
        "stw [%r10-4], 0\nmov %r2, %r10\nadd %r2, -4\nlddw %r1, map_idx(1)\ncall 1\n{jeq}\nmov %r6, %r0\n{body}\n\
         out:\nmov %r0, 0\nexit"
    )
}

/// An inner map, from a lookup in a map of maps: once checked for null, helpers take it as a map of
/// the inner definition; it is no memory, and programs cannot change the map of maps.
#[test]
fn inner_maps_of_maps_of_maps() {
    use ebpf_vm::Context;
    let mut t = Table::new("inner maps");
    // Slots of the inner lookup: 8 mov, 9 mov, 10 add, 11 call, 12 jeq, then the use from 13.
    let inner_lookup = "mov %r1, %r6\nmov %r2, %r10\nadd %r2, -4\ncall 1\njeq %r0, 0, out\n";
    t.accept(
        "a value of the inner map, read and written",
        &with_inner(&format!("{inner_lookup}ldxdw %r1, [%r0+0]\nadd %r1, 1\nstxdw [%r0+0], %r1"), true),
        OF_MAPS,
        Context::Buffer,
        &[&[]],
    );
    t.reject(
        "past the inner map's value",
        &with_inner(&format!("{inner_lookup}ldxdw %r1, [%r0+8] # <-"), true),
        OF_MAPS,
        Context::Buffer,
        13,
        kind!(OutOfBounds { region: MapValue, .. }),
    );
    t.reject(
        "the inner map before its null check",
        &with_inner(&inner_lookup.replacen("call 1", "call 1 # <-", 1), false),
        OF_MAPS,
        Context::Buffer,
        11,
        kind!(MaybeNull { reg: 1 }),
    );
    t.reject(
        "the inner map read as memory",
        &with_inner("ldxw %r1, [%r6+0] # <-", true),
        OF_MAPS,
        Context::Buffer,
        8,
        kind!(NotAPointer { .. }),
    );
    t.reject(
        "an update of the map of maps",
        "stw [%r10-4], 0\nstw [%r10-8], 0\nmov %r2, %r10\nadd %r2, -4\nmov %r3, %r10\nadd %r3, -8\n\
         lddw %r1, map_idx(1)\nmov %r4, 0\ncall 2 # <-\nexit",
        OF_MAPS,
        Context::Buffer,
        9,
        kind!(HelperArgument { helper: 2, arg: 1, .. }),
    );
    t.finish(5);
}
