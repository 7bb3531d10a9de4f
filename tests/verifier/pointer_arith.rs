//! Arithmetic pointers do not allow: operations other than adding or subtracting a bounded number,
//! 32-bit operations, pointer plus pointer, number minus pointer, arithmetic on map handles, and
//! offsets with no proven bounds.
//!
//! Where an operation has a pointer on both sides, or the pointer is the source operand, the contract
//! does not say which register the error names: the cases accept either.

use ebpf_vm::Context;

use crate::harness::{kind, Spec, Table, ARRAY8, NO_MAPS};

#[test]
fn operations_pointers_do_not_allow() {
    let mut t = Table::new("pointer operations");
    for op in [
        "mul %r1, 2",
        "div %r1, 2",
        "sdiv %r1, 2",
        "mod %r1, 8",
        "smod %r1, 3",
        "lsh %r1, 1",
        "rsh %r1, 1",
        "arsh %r1, 1",
        "and %r1, -8",
        "or %r1, 1",
        "xor %r1, 4",
        "neg %r1",
        "add32 %r1, 4",
        "sub32 %r1, 4",
        "mul32 %r1, 1",
        "lsh32 %r1, 0",
    ] {
        let text = format!("{op} # <-\nmov %r0, 0\nexit");
        t.reject_plain(op, &text, 0, kind!(PointerArithmetic { reg: 1 }));
    }
    t.reject_plain(
        "stack pointer masked",
        "
        mov %r3, %r10
        and %r3, -8 # <-
        mov %r0, 0
        exit",
        1,
        kind!(PointerArithmetic { reg: 3 }),
    );
    t.reject_plain(
        "stack pointer shifted right by a register",
        "
        mov %r3, %r10
        mov %r4, 3
        rsh %r3, %r4 # <-
        mov %r0, 0
        exit",
        2,
        kind!(PointerArithmetic { reg: 3 }),
    );
    t.reject_plain(
        "32-bit subtraction from a stack pointer",
        "
        mov %r3, %r10
        sub32 %r3, 8 # <-
        mov %r0, 0
        exit",
        1,
        kind!(PointerArithmetic { reg: 3 }),
    );
    t.reject(
        "map value pointer multiplied",
        "
        stw [%r10-4], 0
        mov %r2, %r10
        add %r2, -4
        lddw %r1, map_idx(0)
        call 1
        jeq %r0, 0, out
        mul %r0, 8 # <-
    out:
        mov %r0, 0
        exit",
        ARRAY8,
        Context::Buffer,
        7,
        kind!(PointerArithmetic { reg: 0 }),
    );
    t.reject(
        "context pointer divided",
        "
        div %r1, 4 # <-
        mov %r0, 0
        exit",
        NO_MAPS,
        Context::fixed(16),
        0,
        kind!(PointerArithmetic { reg: 1 }),
    );
    t.reject(
        "map handle moved",
        "
        lddw %r1, map_idx(0)
        add %r1, 8 # <-
        mov %r0, 0
        exit",
        ARRAY8,
        Context::Buffer,
        2,
        kind!(PointerArithmetic { reg: 1 }),
    );
    t.reject(
        "map handle minus a register",
        "
        lddw %r3, map_idx(0)
        mov %r4, 1
        sub %r3, %r4 # <-
        mov %r0, 0
        exit",
        ARRAY8,
        Context::Buffer,
        3,
        kind!(PointerArithmetic { reg: 3 }),
    );
    t.reject(
        "map handle dereferenced",
        "
        lddw %r1, map_idx(0)
        ldxdw %r0, [%r1+0] # <-
        exit",
        ARRAY8,
        Context::Buffer,
        2,
        kind!(NotAPointer { reg: 1 }),
    );
    t.reject_plain(
        "number dereferenced",
        "
        mov %r1, 4096
        ldxdw %r0, [%r1+0] # <-
        exit",
        1,
        kind!(NotAPointer { reg: 1 }),
    );
    t.reject_plain(
        "null dereferenced",
        "
        mov %r1, 0
        stb [%r1+0], 1 # <-
        mov %r0, 0
        exit",
        1,
        kind!(NotAPointer { reg: 1 }),
    );
    t.reject_plain("length dereferenced", "ldxb %r0, [%r2+0] # <-\nexit", 0, kind!(NotAPointer { reg: 2 }));
    t.finish(27);
}

#[test]
fn pointers_on_both_sides() {
    let mut t = Table::new("pointer and pointer, number and pointer");
    let with_input = kind!(PointerArithmetic { reg: 3 | 1 });
    let with_stack = kind!(PointerArithmetic { reg: 3 | 10 });
    let cases = [
        ("stack plus input", "mov %r3, %r10\nadd %r3, %r1 # <-", 1, with_input.clone()),
        ("input plus itself", "mov %r3, %r1\nadd %r3, %r1 # <-", 1, with_input.clone()),
        ("number minus input", "mov %r3, 100\nsub %r3, %r1 # <-", 1, with_input.clone()),
        ("stack minus input", "mov %r3, %r10\nsub %r3, %r1 # <-", 1, with_input.clone()),
        ("number times stack", "mov %r3, 2\nmul %r3, %r10 # <-", 1, with_stack.clone()),
        ("number divided by input", "mov %r3, 100\ndiv %r3, %r1 # <-", 1, with_input.clone()),
        ("number modulo stack", "mov %r3, 100\nmod %r3, %r10 # <-", 1, with_stack.clone()),
        ("shift by a pointer", "mov %r3, 1\nlsh %r3, %r10 # <-", 1, with_stack.clone()),
        ("number and pointer", "mov %r3, 7\nand %r3, %r1 # <-", 1, with_input.clone()),
        ("number xor pointer", "mov %r3, 0\nxor %r3, %r10 # <-", 1, with_stack.clone()),
        ("number or pointer", "mov %r3, 0\nor %r3, %r1 # <-", 1, with_input.clone()),
        ("32-bit number plus pointer", "mov %r3, 0\nadd32 %r3, %r1 # <-", 1, with_input.clone()),
        ("32-bit copy of a pointer", "mov32 %r3, %r1 # <-", 0, with_input),
    ];
    for (name, body, pc, expected) in cases {
        let text = format!("{body}\nmov %r0, 0\nexit");
        t.reject_spec(Spec::new(name, &text), &[(pc, expected)]);
    }
    t.reject_spec(
        Spec::new("sign extension of a pointer", "movsx3264 %r3, %r10 # <-\nmov %r0, 0\nexit"),
        &[(0, kind!(PointerArithmetic { reg: 3 | 10 }))],
    );
    t.reject_spec(
        Spec::new("byte swap of a pointer", "mov %r3, %r10\nbe64 %r3 # <-\nmov %r0, 0\nexit"),
        &[(1, kind!(PointerArithmetic { reg: 3 }))],
    );
    t.reject_spec(
        Spec::new(
            "difference of two stack pointers used as a pointer",
            "
            mov %r3, %r10
            add %r3, -8
            mov %r4, %r10
            sub %r4, %r3
            ldxb %r0, [%r4+0] # <-
            exit",
        ),
        &[(4, kind!(NotAPointer { reg: 4 })), (3, kind!(PointerArithmetic { reg: 3 | 4 }))],
    );
    t.finish(16);
}

#[test]
fn offsets_without_bounds() {
    let mut t = Table::new("unbounded offsets");
    t.reject_plain(
        "stack pointer plus a clock value",
        "
        mov %r6, %r10
        call 5
        add %r6, %r0 # <-
        mov %r0, 0
        exit",
        2,
        kind!(UnboundedOffset { reg: 6 }),
    );
    t.reject_plain(
        "stack pointer minus a clock value",
        "
        mov %r6, %r10
        call 5
        sub %r6, %r0 # <-
        mov %r0, 0
        exit",
        2,
        kind!(UnboundedOffset { reg: 6 }),
    );
    t.reject_spec(
        Spec::new(
            "input pointer plus a random 32-bit number",
            "
            mov %r6, %r1
            call 7
            add %r6, %r0 # <-
            ldxb %r0, [%r6+0]
            exit",
        ),
        &[(2, kind!(UnboundedOffset { reg: 6 })), (3, kind!(OutOfBounds { region: Input, .. }))],
    );
    t.reject_spec(
        Spec::new(
            "input pointer plus twice its length",
            "
            mov %r3, %r2
            lsh %r3, 1
            add %r1, %r3 # <-
            ldxb %r0, [%r1-1]
            exit",
        ),
        &[(2, kind!(UnboundedOffset { reg: 1 })), (3, kind!(OutOfBounds { region: Input, .. }))],
    );
    t.reject_spec(
        Spec::new(
            "clock value plus a stack pointer",
            "
            call 5
            mov %r6, %r0
            add %r6, %r10 # <-
            mov %r0, 0
            exit",
        ),
        &[(2, kind!(UnboundedOffset { reg: 6 | 10 })), (2, kind!(PointerArithmetic { reg: 6 | 10 }))],
    );
    t.reject_spec(
        Spec::new(
            "a constant offset of a gigabyte",
            "
            mov %r3, %r10
            add %r3, 0x40000000 # <-
            stb [%r3+0], 0
            mov %r0, 0
            exit",
        ),
        &[(1, kind!(UnboundedOffset { reg: 3 })), (2, kind!(OutOfBounds { region: Stack, .. }))],
    );
    t.reject_spec(
        Spec::new(
            "map value pointer plus a random number",
            "
            stw [%r10-4], 0
            mov %r2, %r10
            add %r2, -4
            lddw %r1, map_idx(0)
            call 1
            jeq %r0, 0, out
            mov %r6, %r0
            call 7
            add %r6, %r0 # <-
            ldxb %r0, [%r6+0]
            exit
        out:
            mov %r0, 0
            exit",
        )
        .maps(ARRAY8),
        &[(9, kind!(UnboundedOffset { reg: 6 })), (10, kind!(OutOfBounds { region: MapValue, .. }))],
    );
    t.reject_spec(
        Spec::new(
            "offset grown without bound in a loop",
            "
        mov %r6, %r10
        add %r6, -8
        mov %r7, 0
    loop:
        call 7
        and %r0, 1
        lsh %r0, 28
        add %r6, %r0
        add %r7, 1
        jlt %r7, 64, loop
        stb [%r6+0], 0 # <-
        mov %r0, 0
        exit",
        ),
        &[(9, kind!(OutOfBounds { region: Stack, .. })), (6, kind!(UnboundedOffset { reg: 6 }))],
    );
    t.finish(8);
}
