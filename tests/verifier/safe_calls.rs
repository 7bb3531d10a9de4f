//! bpf-to-bpf calls that must be accepted: stack pointers passed down and written through, callee-saved
//! registers kept, eight frames deep, loops and helpers inside callees, calls inside loops, and a
//! diamond-shaped call graph.

use ebpf_vm::Context;

use crate::harness::{accept, Table, ARRAY8, NO_MAPS, RINGBUF};

#[test]
fn calls() {
    let mut t = Table::new("safe calls");
    let inputs: &[&[u8]] = &[&[1, 2, 3, 4, 5, 6, 7, 8], &[]];
    let cases = [
        (
            "callee reads the caller's stack",
            "stdw [%r10-8], 40\nmov %r1, %r10\nadd %r1, -8\ncall local f\nadd %r0, 2\nexit\nf:\nldxdw %r0, [%r1+0]\nexit",
        ),
        (
            "callee writes the caller's stack",
            "mov %r1, %r10\nadd %r1, -16\ncall local f\nldxdw %r0, [%r10-16]\nldxdw %r1, [%r10-8]\nadd %r0, %r1\nexit\n\
             f:\nstdw [%r1+0], 3\nstdw [%r1+8], 4\nmov %r0, 0\nexit",
        ),
        (
            "callee-saved registers survive",
            "mov %r6, 1\nmov %r7, 2\nmov %r8, 3\nmov %r9, 4\ncall local f\nadd %r0, %r6\nadd %r0, %r7\nadd %r0, %r8\nadd %r0, %r9\nexit\n\
             f:\nmov %r6, 100\nmov %r7, 100\nmov %r8, 100\nmov %r9, 100\nmov %r0, %r6\nexit",
        ),
        (
            "five arguments",
            "mov %r1, 1\nmov %r2, 2\nmov %r3, 3\nmov %r4, 4\nmov %r5, 5\ncall local f\nexit\n\
             f:\nmov %r0, %r1\nadd %r0, %r2\nadd %r0, %r3\nadd %r0, %r4\nadd %r0, %r5\nexit",
        ),
        (
            "caller's stack pointer passed on to a deeper callee",
            "stdw [%r10-8], 0\nmov %r1, %r10\nadd %r1, -8\ncall local f\nldxdw %r0, [%r10-8]\nexit\n\
             f:\ncall local g\nexit\ng:\nstdw [%r1+0], 11\nmov %r0, 0\nexit",
        ),
        ("input guarded in the callee", "call local f\nexit\nf:\nmov %r0, 0\njlt %r2, 8, out\nldxdw %r0, [%r1+0]\nout:\nexit"),
        (
            "callee uses its own stack",
            "stdw [%r10-8], 1\ncall local f\nldxdw %r1, [%r10-8]\nadd %r0, %r1\nexit\nf:\nstdw [%r10-8], 50\nldxdw %r0, [%r10-8]\nexit",
        ),
        (
            "diamond call graph",
            "call local f\nmov %r6, %r0\ncall local g\nadd %r0, %r6\nexit\nf:\nmov %r1, 1\ncall local h\nexit\n\
             g:\nmov %r1, 2\ncall local h\nexit\nh:\nmov %r0, %r1\nmul %r0, 10\nexit",
        ),
        (
            "callee with a loop",
            "mov %r1, 30\ncall local f\nexit\nf:\nmov %r0, 0\nmov %r2, 0\nloop:\nadd %r0, %r2\nadd %r2, 1\njlt %r2, %r1, loop\nexit",
        ),
        ("callee calls a helper", "call local f\nmov %r0, 1\nexit\nf:\ncall 5\nmov %r0, 0\nexit"),
        (
            "call inside a loop",
            "mov %r6, 0\nmov %r7, 0\nloop:\nmov %r1, %r6\ncall local f\nadd %r7, %r0\nadd %r6, 1\njlt %r6, 100, loop\nmov %r0, %r7\nexit\n\
             f:\nmov %r0, %r1\nand %r0, 1\nexit",
        ),
        (
            "every frame uses the bottom of its stack",
            "stdw [%r10-512], 1\ncall local f\nldxdw %r1, [%r10-512]\nadd %r0, %r1\nexit\n\
             f:\nstdw [%r10-512], 2\ncall local g\nldxdw %r1, [%r10-512]\nadd %r0, %r1\nexit\n\
             g:\nstdw [%r10-512], 3\nldxdw %r0, [%r10-512]\nexit",
        ),
    ];
    for (name, text) in cases {
        t.accept(name, text, NO_MAPS, Context::Buffer, inputs);
    }
    let mut eight = String::from("call local f1\nadd %r0, 1\nexit\n");
    for i in 1..7 {
        eight.push_str(&format!("f{i}:\ncall local f{}\nadd %r0, 1\nexit\n", i + 1));
    }
    eight.push_str("f7:\nmov %r0, 35\nexit");
    t.accept_returns("eight frames", &eight, &[], 42);
    t.accept(
        "map value pointer written by the callee",
        "stw [%r10-4], 0\nmov %r2, %r10\nadd %r2, -4\nlddw %r1, map_idx(0)\ncall 1\njeq %r0, 0, out\nmov %r1, %r0\n\
         call local f\nexit\nout:\nmov %r0, 0\nexit\nf:\nstdw [%r1+0], 8\nldxdw %r0, [%r1+0]\nexit",
        ARRAY8,
        Context::Buffer,
        &[&[]],
    );
    t.accept(
        "record reserved and submitted in a callee",
        "call local f\nexit\nf:\nlddw %r1, map_idx(0)\nmov %r2, 8\nmov %r3, 0\ncall 131\njeq %r0, 0, out\nstdw [%r0+0], 1\n\
         mov %r1, %r0\nmov %r2, 0\ncall 132\nout:\nmov %r0, 0\nexit",
        RINGBUF,
        Context::Buffer,
        &[&[]],
    );
    t.accept(
        "lookup in a callee, value read there",
        "call local f\nexit\nf:\nstw [%r10-4], 0\nmov %r2, %r10\nadd %r2, -4\nlddw %r1, map_idx(0)\ncall 1\njeq %r0, 0, out\n\
         ldxdw %r0, [%r0+0]\nexit\nout:\nmov %r0, 0\nexit",
        ARRAY8,
        Context::Buffer,
        &[&[]],
    );
    t.finish(16);
}

/// The single-case entry points of the harness, as a host's own test would use them.
#[test]
fn single_cases() {
    accept(
        "a callee's result checked by the caller",
        "call local f\njgt %r0, 7, big\nexit\nbig:\nmov %r0, 7\nexit\nf:\nmov %r0, 9\nexit",
        NO_MAPS,
        Context::Buffer,
        &[&[]],
    );
    crate::harness::reject(
        "a callee's number used as a pointer by the caller",
        "call local f\nldxb %r0, [%r0+0] # <-\nexit\nf:\nmov %r0, 9\nexit",
        NO_MAPS,
        Context::Buffer,
        1,
        crate::harness::kind!(NotAPointer { reg: 0 }),
    );
}
