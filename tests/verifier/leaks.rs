//! Pointers that would become numbers the host can see: returned in `r0`, stored into map values, the
//! input, the context or ring-buffer records, or passed to helpers as numbers.

use ebpf_vm::Context;

use crate::harness::{kind, Spec, Table, ARRAY8, NO_MAPS, RINGBUF};

/// Looks up key 0 of map 0, leaves through `out` when null; `body` starts at slot 7 with the value in
/// `r0`.
fn with_value(body: &str) -> String {
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

#[test]
fn pointers_returned() {
    let mut t = Table::new("pointers returned");
    t.reject_plain("frame pointer", "mov %r0, %r10\nexit # <-", 1, kind!(PointerLeak { reg: 0 }));
    t.reject_plain("stack pointer", "mov %r0, %r10\nadd %r0, -16\nexit # <-", 2, kind!(PointerLeak { reg: 0 }));
    t.reject_plain("input pointer", "mov %r0, %r1\nexit # <-", 1, kind!(PointerLeak { reg: 0 }));
    t.reject_plain("input end", "mov %r0, %r1\nadd %r0, %r2\nexit # <-", 2, kind!(PointerLeak { reg: 0 }));
    t.reject(
        "context pointer",
        "mov %r0, %r1\nadd %r0, 8\nexit # <-",
        NO_MAPS,
        Context::fixed(16),
        2,
        kind!(PointerLeak { reg: 0 }),
    );
    t.reject(
        "map handle",
        "lddw %r0, map_idx(0)\nexit # <-",
        ARRAY8,
        Context::Buffer,
        2,
        kind!(PointerLeak { reg: 0 }),
    );
    t.reject(
        "map value",
        "
        stw [%r10-4], 0
        mov %r2, %r10
        add %r2, -4
        lddw %r1, map_idx(0)
        call 1
        jeq %r0, 0, out
        exit # <-
    out:
        mov %r0, 0
        exit",
        ARRAY8,
        Context::Buffer,
        7,
        kind!(PointerLeak { reg: 0 }),
    );
    t.reject(
        "map value or null",
        "
        stw [%r10-4], 0
        mov %r2, %r10
        add %r2, -4
        lddw %r1, map_idx(0)
        call 1
        exit # <-",
        ARRAY8,
        Context::Buffer,
        6,
        kind!(PointerLeak { reg: 0 }),
    );
    t.reject(
        "direct map value address",
        "lddw %r0, map_idx_value(0, 2)\nexit # <-",
        ARRAY8,
        Context::Buffer,
        2,
        kind!(PointerLeak { reg: 0 }),
    );
    t.reject_plain(
        "pointer on one path only",
        "
        mov %r0, 0
        jeq %r2, 0, out
        mov %r0, %r10
    out:
        exit # <-",
        3,
        kind!(PointerLeak { reg: 0 }),
    );
    t.reject_plain(
        "pointer filled from the stack",
        "
        stxdw [%r10-8], %r1
        ldxdw %r0, [%r10-8]
        exit # <-",
        2,
        kind!(PointerLeak { reg: 0 }),
    );
    t.finish(11);
}

#[test]
fn pointers_stored() {
    let mut t = Table::new("pointers stored");
    let b = Context::Buffer;
    t.reject(
        "frame pointer into a map value",
        &with_value("stxdw [%r0+0], %r10 # <-"),
        ARRAY8,
        b.clone(),
        7,
        kind!(PointerLeak { reg: 10 }),
    );
    t.reject(
        "map value pointer into itself",
        &with_value("stxdw [%r0+0], %r0 # <-"),
        ARRAY8,
        b.clone(),
        7,
        kind!(PointerLeak { reg: 0 }),
    );
    t.reject(
        "map handle into a map value",
        &with_value("lddw %r1, map_idx(0)\nstxdw [%r0+0], %r1 # <-"),
        ARRAY8,
        b.clone(),
        9,
        kind!(PointerLeak { reg: 1 }),
    );
    t.reject(
        "low half of a pointer into a map value",
        &with_value("stxw [%r0+4], %r10 # <-"),
        ARRAY8,
        b.clone(),
        7,
        kind!(PointerLeak { reg: 10 }),
    );
    t.reject(
        "pointer exchanged into a map value",
        &with_value("mov %r3, %r10\nlock xchg [%r0+0], %r3 # <-"),
        ARRAY8,
        b.clone(),
        8,
        kind!(PointerLeak { reg: 3 }),
    );
    t.reject(
        "pointer added atomically to a map value",
        &with_value("mov %r3, %r10\nlock add [%r0+0], %r3 # <-"),
        ARRAY8,
        b.clone(),
        8,
        kind!(PointerLeak { reg: 3 }),
    );
    t.reject_plain(
        "pointer into the input",
        "
        mov %r0, 0
        jlt %r2, 8, out
        stxdw [%r1+0], %r10 # <-
    out:
        exit",
        2,
        kind!(PointerLeak { reg: 10 }),
    );
    t.reject_plain(
        "input pointer into the input behind an end-pointer guard",
        "
        mov %r3, %r1
        add %r3, %r2
        mov %r4, %r1
        add %r4, 16
        jgt %r4, %r3, out
        stxdw [%r1+8], %r1 # <-
    out:
        mov %r0, 0
        exit",
        5,
        kind!(PointerLeak { reg: 1 }),
    );
    t.reject(
        "context pointer into the context",
        "
        stxdw [%r1+0], %r1 # <-
        mov %r0, 0
        exit",
        NO_MAPS,
        Context::fixed(16),
        0,
        kind!(PointerLeak { reg: 1 }),
    );
    t.reject(
        "context pointer into the packet",
        "
        ldxdw %r2, [%r1+0]
        ldxdw %r3, [%r1+8]
        mov %r4, %r2
        add %r4, 8
        jgt %r4, %r3, out
        stxdw [%r2+0], %r1 # <-
    out:
        mov %r0, 0
        exit",
        NO_MAPS,
        Context::Packet { size: 16, data: 0, data_end: 8 },
        5,
        kind!(PointerLeak { reg: 1 }),
    );
    t.reject(
        "frame pointer into a ring-buffer record",
        "
        lddw %r1, map_idx(0)
        mov %r2, 16
        mov %r3, 0
        call 131
        jeq %r0, 0, out
        stxdw [%r0+0], %r10 # <-
        mov %r1, %r0
        mov %r2, 0
        call 132
    out:
        mov %r0, 0
        exit",
        RINGBUF,
        b,
        6,
        kind!(PointerLeak { reg: 10 }),
    );
    t.finish(11);
}

#[test]
fn pointers_passed_as_numbers() {
    let mut t = Table::new("pointers passed as numbers");
    t.reject(
        "flags of a map update",
        "
        stw [%r10-4], 0
        stdw [%r10-16], 0
        lddw %r1, map_idx(0)
        mov %r2, %r10
        add %r2, -4
        mov %r3, %r10
        add %r3, -16
        mov %r4, %r10
        call 2 # <-
        mov %r0, 0
        exit",
        ARRAY8,
        Context::Buffer,
        9,
        kind!(PointerLeak { reg: 4 }),
    );
    t.reject_plain(
        "a number argument of trace_printk",
        "
        stdw [%r10-8], 0
        mov %r1, %r10
        add %r1, -8
        mov %r2, 8
        mov %r3, %r10
        mov %r4, 0
        mov %r5, 0
        call 6 # <-
        exit",
        7,
        kind!(PointerLeak { reg: 3 }),
    );
    t.reject(
        "flags of ringbuf_output",
        "
        stdw [%r10-8], 0
        lddw %r1, map_idx(0)
        mov %r2, %r10
        add %r2, -8
        mov %r3, 8
        mov %r4, %r2
        call 130 # <-
        exit",
        RINGBUF,
        Context::Buffer,
        7,
        kind!(PointerLeak { reg: 4 }),
    );
    t.reject(
        "flags of ringbuf_reserve",
        "
        lddw %r1, map_idx(0)
        mov %r2, 8
        mov %r3, %r10
        call 131 # <-
        mov %r0, 0
        exit",
        RINGBUF,
        Context::Buffer,
        4,
        kind!(PointerLeak { reg: 3 }),
    );
    for (name, setup, call, pc) in [
        (
            "map update reads a spilled pointer",
            "lddw %r1, map_idx(0)\nmov %r2, %r10\nadd %r2, -4\nmov %r3, %r10\nadd %r3, -16\nmov %r4, 0",
            "call 2",
            9,
        ),
        ("helper sums the bytes of a spilled pointer", "mov %r1, %r10\nadd %r1, -16\nmov %r2, 8", "call 200", 5),
    ] {
        let text = format!("stw [%r10-4], 0\nstxdw [%r10-16], %r10\n{setup}\n{call} # <-\nmov %r0, 0\nexit");
        t.reject_spec(
            Spec::new(name, &text).maps(ARRAY8),
            &[(pc, kind!(PointerLeak { .. })), (pc, kind!(PartialPointerSpill { offset: -16 }))],
        );
    }
    t.finish(6);
}
