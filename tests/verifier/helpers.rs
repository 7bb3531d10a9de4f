//! Helper arguments that do not match the helper's signature: a number or another kind of pointer
//! where a map, key, value or memory pointer is due, a map of the wrong type, key and value regions
//! smaller than the map's, and memory sizes that are unbounded, negative or larger than the memory.
//!
//! Where a bad pointer argument could be reported either as the argument's fault (`HelperArgument`)
//! or as the pointer's (`NotAPointer`, `OutOfBounds`), the contract leaves the choice open and the
//! cases accept both; a key or value region smaller than the map's key or value is either too.

use ebpf_vm::Context;

use crate::harness::{kind, Kind, MapSpec, Spec, Table, ARRAY8, NO_MAPS, RINGBUF};

const HASH8: &[MapSpec] = &[MapSpec::Hash { key: 8, value: 8, entries: 4 }];
const PROG_ARRAY: &[MapSpec] = &[MapSpec::ProgArray { entries: 4, set: &[] }];

/// Calls `sum` (`ReadMem`, `MemSize`) with `r1` and `r2` set by `setup` after an 8-byte stack
/// buffer at -8 is written.
fn sum(setup: &str) -> String {
    format!("stdw [%r10-8], 0\n{setup}\ncall 200 # <-\nexit")
}

#[test]
fn map_arguments() {
    let mut t = Table::new("helper map arguments");
    let cases: [(&str, &str, usize, &[MapSpec], Kind); 14] = [
        (
            "lookup in a number",
            "stw [%r10-4], 0\nmov %r1, 0\nmov %r2, %r10\nadd %r2, -4\ncall 1 # <-",
            4,
            ARRAY8,
            kind!(HelperArgument { helper: 1, arg: 1, .. } | NotAPointer { reg: 1 }),
        ),
        (
            "lookup in the stack",
            "stw [%r10-4], 0\nmov %r1, %r10\nmov %r2, %r10\nadd %r2, -4\ncall 1 # <-",
            4,
            ARRAY8,
            kind!(HelperArgument { helper: 1, arg: 1, .. }),
        ),
        (
            "lookup in the input",
            "stw [%r10-4], 0\nmov %r2, %r10\nadd %r2, -4\ncall 1 # <-",
            3,
            ARRAY8,
            kind!(HelperArgument { helper: 1, arg: 1, .. }),
        ),
        (
            "key is a number",
            "lddw %r1, map_idx(0)\nmov %r2, 0\ncall 1 # <-",
            3,
            ARRAY8,
            kind!(HelperArgument { helper: 1, arg: 2, .. } | NotAPointer { reg: 2 }),
        ),
        (
            "key is the map handle",
            "lddw %r1, map_idx(0)\nmov %r2, %r1\ncall 1 # <-",
            3,
            ARRAY8,
            kind!(HelperArgument { helper: 1, arg: 2, .. } | NotAPointer { reg: 2 }),
        ),
        (
            "key region smaller than the key",
            "stw [%r10-4], 0\nlddw %r1, map_idx(0)\nmov %r2, %r10\nadd %r2, -4\ncall 1 # <-",
            5,
            HASH8,
            kind!(HelperArgument { helper: 1, arg: 2, .. } | OutOfBounds { region: Stack, min: -4, end: 4, .. }),
        ),
        (
            "key in the input without a guard",
            "mov %r6, %r1\nlddw %r1, map_idx(0)\nmov %r2, %r6\ncall 1 # <-",
            4,
            ARRAY8,
            kind!(HelperArgument { helper: 1, arg: 2, .. } | OutOfBounds { region: Input, .. }),
        ),
        (
            "key in the input behind a guard too short",
            "mov %r6, %r1\nmov %r0, 0\njlt %r2, 4, out\nlddw %r1, map_idx(0)\nmov %r2, %r6\ncall 1 # <-\nout:",
            6,
            HASH8,
            kind!(HelperArgument { helper: 1, arg: 2, .. } | OutOfBounds { region: Input, .. }),
        ),
        (
            "value region smaller than the value",
            "stw [%r10-16], 0\nstdw [%r10-8], 0\nlddw %r1, map_idx(0)\nmov %r2, %r10\nadd %r2, -16\n\
             mov %r3, %r10\nadd %r3, -8\nmov %r4, 0\ncall 2 # <-",
            9,
            &[MapSpec::Array { value: 16, entries: 1 }],
            kind!(HelperArgument { helper: 2, arg: 3, .. } | OutOfBounds { region: Stack, min: -8, end: 8, .. }),
        ),
        (
            "value is a number",
            "stw [%r10-4], 0\nlddw %r1, map_idx(0)\nmov %r2, %r10\nadd %r2, -4\nmov %r3, 8\nmov %r4, 0\ncall 2 # <-",
            7,
            ARRAY8,
            kind!(HelperArgument { helper: 2, arg: 3, .. } | NotAPointer { reg: 3 }),
        ),
        (
            "tail call through an array map",
            "lddw %r2, map_idx(0)\nmov %r3, 0\ncall 12 # <-",
            3,
            ARRAY8,
            kind!(HelperArgument { helper: 12, arg: 2, .. }),
        ),
        (
            "ring-buffer reserve in an array map",
            "lddw %r1, map_idx(0)\nmov %r2, 8\nmov %r3, 0\ncall 131 # <-",
            4,
            ARRAY8,
            kind!(HelperArgument { helper: 131, arg: 1, .. }),
        ),
        (
            "ring-buffer output to a hash map",
            "stdw [%r10-8], 0\nlddw %r1, map_idx(0)\nmov %r2, %r10\nadd %r2, -8\nmov %r3, 8\nmov %r4, 0\ncall 130 # <-",
            7,
            HASH8,
            kind!(HelperArgument { helper: 130, arg: 1, .. }),
        ),
        (
            "ring-buffer query of a program array",
            "lddw %r1, map_idx(0)\nmov %r2, 0\ncall 134 # <-",
            3,
            PROG_ARRAY,
            kind!(HelperArgument { helper: 134, arg: 1, .. }),
        ),
    ];
    for (name, body, pc, maps, expected) in cases {
        let text = format!("{body}\nmov %r0, 0\nexit");
        t.reject_spec(Spec::new(name, &text).maps(maps), &[(pc, expected)]);
    }
    t.reject(
        "lookup in a map value",
        "
        stw [%r10-4], 0
        mov %r2, %r10
        add %r2, -4
        lddw %r1, map_idx(0)
        call 1
        jeq %r0, 0, out
        mov %r1, %r0
        mov %r2, %r10
        add %r2, -4
        call 1 # <-
    out:
        mov %r0, 0
        exit",
        ARRAY8,
        Context::Buffer,
        10,
        kind!(HelperArgument { helper: 1, arg: 1, .. }),
    );
    t.reject(
        "update with the value of a smaller map",
        "
        stw [%r10-4], 0
        mov %r2, %r10
        add %r2, -4
        lddw %r1, map_idx(1)
        call 1
        jeq %r0, 0, out
        mov %r3, %r0
        lddw %r1, map_idx(0)
        mov %r2, %r10
        add %r2, -4
        mov %r4, 0
        call 2 # <-
    out:
        mov %r0, 0
        exit",
        &[MapSpec::Array { value: 8, entries: 1 }, MapSpec::Array { value: 4, entries: 1 }],
        Context::Buffer,
        13,
        kind!(HelperArgument { helper: 2, arg: 3, .. } | OutOfBounds { region: MapValue, min: 0, end: 8, size: 4 }),
    );
    t.finish(16);
}

#[test]
fn memory_arguments() {
    let mut t = Table::new("helper memory arguments");
    let too_big = kind!(HelperArgument { helper: 200, arg: 1 | 2, .. } | OutOfBounds { region: Stack, .. });
    let size_arg = kind!(HelperArgument { helper: 200, arg: 2, .. });
    let cases: [(&str, &str, usize, Kind); 11] = [
        ("size from the clock", "call 5\nmov %r2, %r0\nmov %r1, %r10\nadd %r1, -8", 5, size_arg.clone()),
        ("size minus one", "mov %r1, %r10\nadd %r1, -8\nmov %r2, -1", 4, size_arg.clone()),
        ("size u32::MAX", "mov %r1, %r10\nadd %r1, -8\nmov32 %r2, -1", 4, size_arg.clone()),
        ("size 2^32 + 8", "mov %r1, %r10\nadd %r1, -8\nmov %r2, 1\nlsh %r2, 32\nadd %r2, 8", 6, size_arg.clone()),
        ("size maybe negative", "call 7\nmov %r2, %r0\nsub %r2, 4\nmov %r1, %r10\nadd %r1, -8", 6, size_arg.clone()),
        ("size larger than the buffer", "mov %r1, %r10\nadd %r1, -8\nmov %r2, 16", 4, too_big.clone()),
        (
            "masked size larger than the buffer",
            "call 7\nmov %r2, %r0\nand %r2, 15\nmov %r1, %r10\nadd %r1, -8",
            6,
            too_big.clone(),
        ),
        (
            "size a pointer",
            "mov %r1, %r10\nadd %r1, -8\nmov %r2, %r10",
            4,
            kind!(HelperArgument { helper: 200, arg: 2, .. } | PointerLeak { reg: 2 }),
        ),
        (
            "memory a number",
            "mov %r1, 1000\nmov %r2, 8",
            3,
            kind!(HelperArgument { helper: 200, arg: 1, .. } | NotAPointer { reg: 1 }),
        ),
        (
            "memory the input end",
            "mov %r3, %r1\nadd %r3, %r2\nmov %r1, %r3\nmov %r2, 1",
            5,
            kind!(HelperArgument { helper: 200, arg: 1, .. } | NotAPointer { reg: 1 }),
        ),
        (
            "memory the input, no guard",
            "mov %r2, 4",
            2,
            kind!(HelperArgument { helper: 200, arg: 1 | 2, .. } | OutOfBounds { region: Input, .. }),
        ),
    ];
    for (name, setup, pc, expected) in cases {
        t.reject_spec(Spec::new(name, &sum(setup)), &[(pc, expected)]);
    }
    t.reject(
        "map value one byte too small for the size",
        "
        stw [%r10-4], 0
        mov %r2, %r10
        add %r2, -4
        lddw %r1, map_idx(0)
        call 1
        jeq %r0, 0, out
        mov %r1, %r0
        mov %r2, 9
        call 200 # <-
    out:
        mov %r0, 0
        exit",
        ARRAY8,
        Context::Buffer,
        9,
        kind!(HelperArgument { helper: 200, arg: 1 | 2, .. } | OutOfBounds { region: MapValue, .. }),
    );
    t.reject_spec(
        Spec::new(
            "writing helper given a map handle",
            "
            lddw %r1, map_idx(0)
            mov %r2, 8
            call 16 # <-
            mov %r0, 0
            exit",
        )
        .maps(ARRAY8),
        &[(3, kind!(HelperArgument { helper: 16, arg: 1, .. } | NotAPointer { reg: 1 }))],
    );
    t.reject_spec(
        Spec::new(
            "writing helper into the input, no guard",
            "
            mov %r2, 16
            call 16 # <-
            mov %r0, 0
            exit",
        ),
        &[(1, kind!(HelperArgument { helper: 16, arg: 1 | 2, .. } | OutOfBounds { region: Input, .. }))],
    );
    t.reject_spec(
        Spec::new(
            "writing helper with a size that may be zero or huge",
            "
            call 5
            mov %r2, %r0
            mov %r1, %r10
            add %r1, -16
            call 201 # <-
            mov %r0, 0
            exit",
        ),
        &[(4, kind!(HelperArgument { helper: 201, arg: 2, .. }))],
    );
    t.finish(15);
}

#[test]
fn other_arguments() {
    let mut t = Table::new("helper context and record arguments");
    t.reject(
        "tail call with the stack as context",
        "
        mov %r1, %r10
        lddw %r2, map_idx(0)
        mov %r3, 0
        call 12 # <-
        mov %r0, 0
        exit",
        PROG_ARRAY,
        Context::Buffer,
        4,
        kind!(HelperArgument { helper: 12, arg: 1, .. }),
    );
    t.reject(
        "tail call index a pointer",
        "
        lddw %r2, map_idx(0)
        mov %r3, %r10
        call 12 # <-
        mov %r0, 0
        exit",
        PROG_ARRAY,
        Context::Buffer,
        3,
        kind!(PointerLeak { reg: 3 }),
    );
    t.reject(
        "context helper given the stack",
        "
        mov %r1, %r10
        call 202 # <-
        exit",
        NO_MAPS,
        Context::fixed(16),
        1,
        kind!(HelperArgument { helper: 202, arg: 1, .. }),
    );
    t.reject_spec(
        Spec::new("context helper given a number", "mov %r1, 16\ncall 202 # <-\nexit").context(Context::fixed(16)),
        &[(1, kind!(HelperArgument { helper: 202, arg: 1, .. } | NotAPointer { reg: 1 }))],
    );
    t.reject(
        "reserve with a size known only at run time",
        "
        call 7
        mov %r2, %r0
        and %r2, 63
        lddw %r1, map_idx(0)
        mov %r3, 0
        call 131 # <-
        jeq %r0, 0, out
        mov %r1, %r0
        mov %r2, 0
        call 133
    out:
        mov %r0, 0
        exit",
        RINGBUF,
        Context::Buffer,
        6,
        kind!(HelperArgument { helper: 131, arg: 2, .. }),
    );
    t.reject(
        "ring-buffer output of an unbounded size",
        "
        stdw [%r10-8], 0
        call 5
        mov %r3, %r0
        lddw %r1, map_idx(0)
        mov %r2, %r10
        add %r2, -8
        mov %r4, 0
        call 130 # <-
        exit",
        RINGBUF,
        Context::Buffer,
        8,
        kind!(HelperArgument { helper: 130, arg: 3, .. }),
    );
    t.finish(6);
}
