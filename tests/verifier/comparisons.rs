//! Comparisons that would tell a program something about an address: pointers into different regions,
//! a pointer and a number other than zero, and bit tests or 32-bit comparisons of pointers. The
//! contract does not say which of two pointer operands the error names; the cases accept either.

use ebpf_vm::Context;

use crate::harness::{kind, Kind, Spec, Table, ARRAY8, NO_MAPS, RINGBUF};

/// `mov r0, 0`, then `setup`, then the comparison (marked), then `mov r0, 1`; `out` exits.
fn compare(setup: &str, jump: &str) -> String {
    format!("mov %r0, 0\n{setup}\n{jump} # <-\nmov %r0, 1\nout:\nexit")
}

#[test]
fn pointer_comparisons() {
    let mut t = Table::new("pointer comparisons");
    let cases: [(&str, &str, &str, usize, Kind); 12] = [
        ("stack and input", "mov %r3, %r10", "jeq %r3, %r1, out", 2, kind!(PointerComparison { reg: 3 | 1 })),
        ("input and a constant", "", "jeq %r1, 5, out", 1, kind!(PointerComparison { reg: 1 })),
        ("input and a number register", "mov %r3, 5", "jgt %r1, %r3, out", 2, kind!(PointerComparison { reg: 1 | 3 })),
        ("input and its length", "mov %r3, %r2", "jeq %r1, %r3, out", 2, kind!(PointerComparison { reg: 1 | 3 })),
        ("frame pointer and a constant", "", "jne %r10, 4096, out", 1, kind!(PointerComparison { reg: 10 })),
        ("signed, stack and input", "", "jsgt %r10, %r1, out", 1, kind!(PointerComparison { reg: 10 | 1 })),
        ("bit test of a pointer", "", "jset %r1, 7, out", 1, kind!(PointerComparison { reg: 1 })),
        (
            "bit test of the frame pointer",
            "mov %r3, 4095",
            "jset %r10, %r3, out",
            2,
            kind!(PointerComparison { reg: 10 | 3 }),
        ),
        (
            "input end and stack",
            "mov %r3, %r1\nadd %r3, %r2\nmov %r4, %r10",
            "jgt %r4, %r3, out",
            4,
            kind!(PointerComparison { reg: 4 | 3 }),
        ),
        (
            "input end and a number",
            "mov %r3, %r1\nadd %r3, %r2",
            "jgt %r3, 100, out",
            3,
            kind!(PointerComparison { reg: 3 }),
        ),
        (
            "32-bit comparison of input pointers",
            "mov %r3, %r1\nadd %r3, 4",
            "jgt32 %r3, %r1, out",
            3,
            kind!(PointerComparison { reg: 3 | 1 } | PointerArithmetic { reg: 3 | 1 }),
        ),
        (
            "32-bit comparison of a pointer with zero",
            "",
            "jeq32 %r1, 0, out",
            1,
            kind!(PointerComparison { reg: 1 } | PointerArithmetic { reg: 1 }),
        ),
    ];
    for (name, setup, jump, pc, expected) in cases {
        t.reject_spec(Spec::new(name, &compare(setup, jump)), &[(pc, expected)]);
    }
    t.reject(
        "context and stack",
        &compare("", "jeq %r1, %r10, out"),
        NO_MAPS,
        Context::fixed(16),
        1,
        kind!(PointerComparison { reg: 1 | 10 }),
    );
    t.reject(
        "packet start and context",
        &compare("ldxdw %r2, [%r1+0]", "jeq %r2, %r1, out"),
        NO_MAPS,
        Context::Packet { size: 16, data: 0, data_end: 8 },
        2,
        kind!(PointerComparison { reg: 2 | 1 }),
    );
    t.reject(
        "map handle and stack",
        &compare("lddw %r3, map_idx(0)", "jeq %r3, %r10, out"),
        ARRAY8,
        Context::Buffer,
        3,
        kind!(PointerComparison { reg: 3 | 10 }),
    );
    let lookup = "
        mov %r6, %r1
        stw [%r10-4], 0
        mov %r2, %r10
        add %r2, -4
        lddw %r1, map_idx(0)
        call 1";
    t.reject(
        "map value and input",
        &compare(&format!("{lookup}\njeq %r0, 0, out"), "jgt %r0, %r6, out"),
        ARRAY8,
        Context::Buffer,
        9,
        kind!(PointerComparison { reg: 0 | 6 }),
    );
    t.reject(
        "map value and stack",
        &compare(&format!("{lookup}\njeq %r0, 0, out\nmov %r3, %r10"), "jlt %r0, %r3, out"),
        ARRAY8,
        Context::Buffer,
        10,
        kind!(PointerComparison { reg: 0 | 3 }),
    );
    t.reject(
        "nullable map value and a non-zero number",
        &compare(lookup, "jeq %r0, 1, out"),
        ARRAY8,
        Context::Buffer,
        8,
        kind!(PointerComparison { reg: 0 }),
    );
    t.reject(
        "nullable map value and a number register",
        &compare(&format!("{lookup}\nmov %r3, 8"), "jne %r0, %r3, out"),
        ARRAY8,
        Context::Buffer,
        9,
        kind!(PointerComparison { reg: 0 | 3 }),
    );
    t.reject(
        "ring-buffer record and stack",
        "
        lddw %r1, map_idx(0)
        mov %r2, 8
        mov %r3, 0
        call 131
        jeq %r0, 0, out
        mov %r6, %r0
        jeq %r6, %r10, done # <-
    done:
        mov %r1, %r6
        mov %r2, 0
        call 133
    out:
        mov %r0, 0
        exit",
        RINGBUF,
        Context::Buffer,
        7,
        kind!(PointerComparison { reg: 6 | 10 }),
    );
    t.finish(20);
}
