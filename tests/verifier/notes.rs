//! The kinds of bugs that made other verifiers unsound, one family of refused programs each: 32-bit
//! bounds drifting from 64-bit ones, `jmp32` branches that narrow the 64-bit value, pruning that
//! merges paths differing in one relevant fact, joins of disjoint ranges, size arithmetic that wraps,
//! division by zero and `INT_MIN / -1`, loops inside callees, and pointer values that lose their
//! region. The matching programs that must still be accepted are in `safe_precision`.

use ebpf_vm::verifier::VerifyErrorKind;
use ebpf_vm::Context;

use crate::harness::{kind, Kind, Spec, Table, ARRAY8};

/// Slots before `setup` in [`alu32_program`].
const ALU32_PREFIX: usize = 11;

/// A program that puts a map value pointer in `r7` and, in `r6`, a number whose upper 32 bits are
/// unknown (a clock value shifted up) and whose lower 32 bits `setup` sets; then applies `op` to
/// `r6` and reads the byte of the 8-byte value at offset `r6`. Every line of `setup` and `op` is one
/// slot. Returns the text and the slots of the `add` and of the load.
pub fn alu32_program(setup: &str, op: &str) -> (String, usize, usize) {
    let add = ALU32_PREFIX + setup.lines().count() + op.lines().count();
    let text = format!(
        "
        stw [%r10-4], 0
        mov %r2, %r10
        add %r2, -4
        lddw %r1, map_idx(0)
        call 1
        jeq %r0, 0, out
        mov %r7, %r0
        call 5
        mov %r6, %r0
        lsh %r6, 32
        {setup}
        {op}
        add %r7, %r6
        ldxb %r0, [%r7+0] # <-
        exit
    out:
        mov %r0, 0
        exit"
    );
    (text, add, add + 1)
}

/// The value's bounds are wrong if the offset is rejected as unbounded or the access as out of bounds
/// only on the way: either is a refusal at the right place.
fn value_offset_refused(add: usize, load: usize) -> [(usize, Kind); 2] {
    [(load, kind!(OutOfBounds { region: MapValue, size: 8, .. })), (add, kind!(UnboundedOffset { reg: 7 }))]
}

#[test]
fn alu32_with_a_known_low_half() {
    let mut t = Table::new("ALU32 with known low half, unknown high half");
    let cases = [
        ("add32 to 8", "or %r6, 7", "add32 %r6, 1"),
        ("sub32 to 8", "or %r6, 9", "sub32 %r6, 1"),
        ("sub32 below zero", "", "sub32 %r6, 1"),
        ("mul32 to 8", "or %r6, 4", "mul32 %r6, 2"),
        ("or32 to 9", "or %r6, 8", "or32 %r6, 1"),
        ("and32 to 8", "or %r6, 0x18", "and32 %r6, 15"),
        ("xor32 to 8", "or %r6, 0x18", "xor32 %r6, 0x10"),
        ("lsh32 to 8", "or %r6, 4", "lsh32 %r6, 1"),
        ("rsh32 to 8", "or %r6, 16", "rsh32 %r6, 1"),
        ("arsh32 to 8", "or %r6, 16", "arsh32 %r6, 1"),
        ("arsh32 of a negative low half", "mov32 %r5, 0x80000010\nor %r6, %r5", "arsh32 %r6, 4"),
        ("neg32 to 8", "mov32 %r5, -8\nor %r6, %r5", "neg32 %r6"),
        ("mov32 keeps 8", "or %r6, 8", "mov32 %r6, %r6"),
        ("div32 to 8", "or %r6, 16", "div32 %r6, 2"),
        ("mod32 to 8", "or %r6, 17", "mod32 %r6, 9"),
        ("movsx832 to 8", "or %r6, 0x108", "movsx832 %r6, %r6"),
        ("movsx832 of 0xff is zero-extended", "or %r6, 0xff", "movsx832 %r6, %r6\nadd %r6, 1"),
        ("movsx1632 of 0x8000 is zero-extended", "or %r6, 0x8000", "movsx1632 %r6, %r6\nrsh %r6, 16"),
        ("bswap16 to 8", "or %r6, 0x800", "bswap16 %r6"),
        ("bswap32 to 8", "or %r6, 0x8000000", "bswap32 %r6"),
        ("32-bit register source", "or %r6, 5\nmov %r5, 3", "add32 %r6, %r5"),
    ];
    for (name, setup, op) in cases {
        let (text, add, load) = alu32_program(setup, op);
        t.reject_spec(Spec::new(name, &text).maps(ARRAY8), &value_offset_refused(add, load));
    }
    t.finish(21);
}

#[test]
fn jmp32_refines_only_the_low_half() {
    let mut t = Table::new("jmp32 bounds");
    let cases = [
        ("jgt32", "jgt32 %r6, 7, out"),
        ("jge32", "jge32 %r6, 8, out"),
        ("jne32", "jne32 %r6, 3, out"),
        ("jslt32 and jsgt32", "jslt32 %r6, 0, out\njsgt32 %r6, 7, out"),
        ("jlt32 taken", "jlt32 %r6, 8, use\nja out\nuse:"),
        ("jset32 clear", "jset32 %r6, -8, out"),
    ];
    for (name, jumps) in cases {
        // The clock value itself: all 64 bits unknown.
        let slots = jumps.lines().filter(|l| !l.trim_end().ends_with(':')).count();
        let add = 10 + slots;
        let text = format!(
            "
            stw [%r10-4], 0
            mov %r2, %r10
            add %r2, -4
            lddw %r1, map_idx(0)
            call 1
            jeq %r0, 0, out
            mov %r7, %r0
            call 5
            mov %r6, %r0
            {jumps}
            add %r7, %r6
            ldxb %r0, [%r7+0] # <-
            exit
        out:
            mov %r0, 0
            exit"
        );
        t.reject_spec(Spec::new(name, &text).maps(ARRAY8), &value_offset_refused(add, add + 1));
    }
    t.finish(6);
}

#[test]
fn jmp32_does_not_prove_a_live_branch_dead() {
    let mut t = Table::new("jmp32 live branches");
    // (name, constant, jump, whether the jump is taken at run time)
    let cases = [
        ("jeq32 equal in the low half", "0x100000005", "jeq32 %r6, 5", true),
        ("jne32 equal in the low half", "0x100000005", "jne32 %r6, 5", false),
        ("jlt32 smaller in the low half", "0x100000003", "jlt32 %r6, 5", true),
        ("jsgt32 negative in the low half", "0xfffffff0", "jsgt32 %r6, 0", false),
        ("jset32 no low bit set", "0x100000000", "jset32 %r6, -1", false),
        ("jgt32 equal in the low half", "0xffffffff00000001", "jgt32 %r6, 1", false),
        ("jsle32 negative in the low half", "0x80000000", "jsle32 %r6, -1", true),
    ];
    for (name, constant, jump, taken) in cases {
        // The branch taken at run time reads stack nothing wrote.
        let text = if taken {
            format!("lddw %r6, {constant}\n{jump}, bad\nmov %r0, 0\nexit\nbad:\nldxdw %r0, [%r10-8] # <-\nexit")
        } else {
            format!("lddw %r6, {constant}\n{jump}, good\nldxdw %r0, [%r10-8] # <-\nexit\ngood:\nmov %r0, 0\nexit")
        };
        let pc = if taken { 5 } else { 3 };
        t.reject_spec(Spec::new(name, &text), &[(pc, kind!(UninitStack { offset: -8 }))]);
    }
    t.finish(7);
}

/// Two paths that differ in one fact, joined at `join`; `first` runs on the path where the random
/// number is 0, `second` on the other.
fn two_paths(first: &str, second: &str, tail: &str) -> String {
    format!("call 7\njeq %r0, 0, a\n{second}\nja join\na:\n{first}\njoin:\n{tail}")
}

#[test]
fn paths_differing_in_one_fact() {
    let mut t = Table::new("pruning");
    let lookup =
        "stw [%r10-4], 0\nmov %r2, %r10\nadd %r2, -4\nlddw %r1, map_idx(0)\ncall 1\njeq %r0, 0, out\nmov %r7, %r0";
    let offset = |first: &str, second: &str| {
        format!(
            "{lookup}\n{}\nout:\nmov %r0, 0\nexit",
            two_paths(first, second, "add %r7, %r6\nldxb %r0, [%r7+0] # <-\nexit")
        )
    };
    // lookup: 8 slots; two_paths: call, jeq, second (1), ja, first (1), then the tail.
    t.reject_spec(
        Spec::new("offset 8 on the first path", &offset("mov %r6, 8", "mov %r6, 0")).maps(ARRAY8),
        &[(14, kind!(OutOfBounds { region: MapValue, size: 8, .. }))],
    );
    t.reject_spec(
        Spec::new("offset 8 on the second path", &offset("mov %r6, 0", "mov %r6, 8")).maps(ARRAY8),
        &[(14, kind!(OutOfBounds { region: MapValue, size: 8, .. }))],
    );
    t.reject_spec(
        Spec::new("disjoint ranges joined", &offset("ldxb %r6, [%r7+0]\nand %r6, 3", "mov %r6, 10")).maps(ARRAY8),
        &[(15, kind!(OutOfBounds { region: MapValue, size: 8, .. }))],
    );
    for (name, first, second) in [
        ("stack pointer 4 bytes higher on the first path", "add %r6, 4", "add %r6, 0"),
        ("stack pointer 4 bytes higher on the second path", "add %r6, 0", "add %r6, 4"),
    ] {
        let text = format!(
            "stdw [%r10-8], 0\nmov %r6, %r10\nadd %r6, -8\n{}",
            two_paths(first, second, "ldxdw %r0, [%r6+0] # <-\nexit")
        );
        t.reject_spec(Spec::new(name, &text), &[(8, kind!(OutOfBounds { region: Stack, .. }))]);
    }
    for (name, first, second) in [
        ("stack byte written only on the second path", "stdw [%r10-16], 1", "stdw [%r10-8], 1"),
        ("stack byte written only on the first path", "stdw [%r10-8], 1", "stdw [%r10-16], 1"),
    ] {
        let text = two_paths(first, second, "ldxdw %r0, [%r10-8] # <-\nexit");
        t.reject_spec(Spec::new(name, &text), &[(5, kind!(UninitStack { offset: -8 }))]);
    }
    for (name, first, second) in [
        ("pointer on the first path, number on the second", "mov %r6, %r10", "mov %r6, 0"),
        ("number on the first path, pointer on the second", "mov %r6, 0", "mov %r6, %r10"),
    ] {
        let text = two_paths(first, second, "mov %r0, %r6\nexit # <-");
        t.reject_spec(Spec::new(name, &text), &[(6, kind!(PointerLeak { reg: 0 }))]);
    }
    t.reject_spec(
        Spec::new(
            "helper size larger on one path",
            &format!(
                "stdw [%r10-8], 0\n{}",
                two_paths("mov %r2, 16", "mov %r2, 8", "mov %r1, %r10\nadd %r1, -8\ncall 200 # <-\nexit")
            ),
        ),
        &[(8, kind!(HelperArgument { helper: 200, arg: 1 | 2, .. } | OutOfBounds { region: Stack, .. }))],
    );
    t.reject_spec(
        Spec::new(
            "spilled offset differs between paths",
            &format!(
                "{lookup}\n{}\nout:\nmov %r0, 0\nexit",
                two_paths(
                    "stdw [%r10-16], 8",
                    "stdw [%r10-16], 0",
                    "ldxdw %r6, [%r10-16]\nadd %r7, %r6\nldxb %r0, [%r7+0] # <-\nexit"
                )
            ),
        )
        .maps(ARRAY8),
        &[(15, kind!(OutOfBounds { region: MapValue, size: 8, .. })), (14, kind!(UnboundedOffset { reg: 7 }))],
    );
    t.reject_plain(
        "only the tenth loop iteration reads unwritten stack",
        "
        mov %r6, 0
        mov %r0, 0
    loop:
        jne %r6, 9, skip
        ldxdw %r0, [%r10-8] # <-
    skip:
        add %r6, 1
        jlt %r6, 10, loop
        exit",
        3,
        kind!(UninitStack { offset: -8 }),
    );
    t.reject(
        "offset grows by one each iteration",
        "
        stw [%r10-4], 0
        mov %r2, %r10
        add %r2, -4
        lddw %r1, map_idx(0)
        call 1
        jeq %r0, 0, out
        mov %r6, 0
    loop:
        ldxb %r1, [%r0+0] # <-
        add %r0, 1
        add %r6, 1
        jlt %r6, 9, loop
    out:
        mov %r0, 0
        exit",
        ARRAY8,
        Context::Buffer,
        8,
        kind!(OutOfBounds { region: MapValue, size: 8, .. }),
    );
    t.reject_plain(
        "loop in a callee reads unwritten stack on its second iteration",
        "
        call local f
        exit
    f:
        mov %r6, 0
        mov %r0, 0
    loop:
        jne %r6, 1, skip
        ldxdw %r0, [%r10-8] # <-
    skip:
        add %r6, 1
        jlt %r6, 3, loop
        exit",
        5,
        kind!(UninitStack { offset: -8 }),
    );
    t.finish(14);
}

#[test]
fn size_arithmetic_that_wraps() {
    let mut t = Table::new("size arithmetic");
    let stack_or_unbounded = |reg: u8, adds: &[usize], access: usize| -> Vec<(usize, Kind)> {
        let mut v = vec![(access, kind!(OutOfBounds { region: Stack, .. }))];
        for &pc in adds {
            v.push((
                pc,
                Kind::new(
                    format!("UnboundedOffset {{ reg: {reg} }}"),
                    move |k| matches!(k, VerifyErrorKind::UnboundedOffset { reg: r } if *r == reg),
                ),
            ));
        }
        v
    };
    t.reject_spec(
        Spec::new(
            "three constant adds that sum to 2^32",
            "mov %r3, %r10\nadd %r3, 0x7fffffff\nadd %r3, 0x7fffffff\nadd %r3, 2\nstb [%r3-8], 0 # <-\nmov %r0, 0\nexit",
        ),
        &stack_or_unbounded(3, &[1, 2, 3], 4),
    );
    t.reject_spec(
        Spec::new(
            "product that is 0 in 32 bits",
            "mov %r3, %r2\nand %r3, 0x10000\nmul %r3, 0x10000\nmov %r4, %r10\nadd %r4, %r3\nstb [%r4-8], 0 # <-\nmov %r0, 0\nexit",
        ),
        &stack_or_unbounded(4, &[4], 5),
    );
    t.reject_spec(
        Spec::new(
            "shift by 32 of a bit",
            "mov %r3, %r2\nand %r3, 1\nlsh %r3, 32\nmov %r4, %r10\nadd %r4, %r3\nstb [%r4-8], 0 # <-\nmov %r0, 0\nexit",
        ),
        &stack_or_unbounded(4, &[4], 5),
    );
    t.reject_spec(
        Spec::new(
            "map value pointer moved by 2^32 in two steps",
            "
            stw [%r10-4], 0
            mov %r2, %r10
            add %r2, -4
            lddw %r1, map_idx(0)
            call 1
            jeq %r0, 0, out
            mov %r3, 1
            lsh %r3, 31
            add %r0, %r3
            add %r0, %r3
            ldxb %r0, [%r0+0] # <-
            exit
        out:
            mov %r0, 0
            exit",
        )
        .maps(ARRAY8),
        &[
            (11, kind!(OutOfBounds { region: MapValue, .. })),
            (9, kind!(UnboundedOffset { reg: 0 })),
            (10, kind!(UnboundedOffset { reg: 0 })),
        ],
    );
    t.reject_spec(
        Spec::new(
            "ring-buffer output size that truncates to 8",
            "
            stdw [%r10-8], 0
            lddw %r1, map_idx(0)
            mov %r2, %r10
            add %r2, -8
            mov %r3, 1
            lsh %r3, 32
            add %r3, 8
            mov %r4, 0
            call 130 # <-
            exit",
        )
        .maps(crate::harness::RINGBUF),
        &[(9, kind!(HelperArgument { helper: 130, arg: 3, .. }))],
    );
    t.finish(5);
}

#[test]
fn division_and_modulo() {
    let mut t = Table::new("division");
    // Each program reaches the marked unwritten-stack read only if the division's ISA-defined result
    // is what the verifier believes.
    let defined = [
        ("x / 0 is 0", "mov %r4, 5\nmov %r3, 0\ndiv %r4, %r3\njne %r4, 0, ok", 4),
        ("x % 0 is x", "mov %r4, 5\nmov %r3, 0\nmod %r4, %r3\njne %r4, 5, ok", 4),
        ("x / 0 is 0 in 32 bits", "mov %r4, 5\nmov %r3, 0\ndiv32 %r4, %r3\njne %r4, 0, ok", 4),
        ("x % 0 is x in 32 bits", "lddw %r4, 0x100000005\nmov %r3, 0\nmod32 %r4, %r3\njne %r4, 5, ok", 5),
        (
            "INT_MIN / -1 is INT_MIN",
            "lddw %r4, 0x8000000000000000\nsdiv %r4, -1\nlddw %r5, 0x8000000000000000\njne %r4, %r5, ok",
            6,
        ),
        ("INT_MIN % -1 is 0", "lddw %r4, 0x8000000000000000\nsmod %r4, -1\njne %r4, 0, ok", 4),
        (
            "INT32_MIN / -1 is INT32_MIN",
            "mov32 %r4, 0x80000000\nsdiv32 %r4, -1\nmov32 %r5, 0x80000000\njne %r4, %r5, ok",
            4,
        ),
        ("INT32_MIN % -1 is 0", "mov32 %r4, 0x80000000\nsmod32 %r4, -1\njne %r4, 0, ok", 3),
        ("signed x / 0 is 0", "mov %r4, -7\nmov %r3, 0\nsdiv %r4, %r3\njne %r4, 0, ok", 4),
        ("signed x % 0 is x", "mov %r4, -7\nmov %r3, 0\nsmod %r4, %r3\njne %r4, -7, ok", 4),
        (
            "a divisor range with zero gives zero",
            "mov %r3, %r2\nand %r3, 3\nmov %r4, 100\ndiv %r4, %r3\njne %r4, 0, ok",
            5,
        ),
    ];
    for (name, body, pc) in defined {
        let text = format!("mov %r0, 0\n{body}\nldxdw %r0, [%r10-8] # <-\nok:\nexit");
        t.reject_spec(Spec::new(name, &text), &[(pc + 1, kind!(UninitStack { offset: -8 }))]);
    }
    for (name, op, ops) in [
        ("modulo by a divisor that may be 0", "mod %r4, %r3", 1),
        ("mod32 by a divisor that may be 0", "mod32 %r4, %r3", 1),
    ] {
        let (text, add, load) = {
            let setup = "mov %r4, 100\nmov %r3, %r0\nand %r3, 8";
            let prefix = 9 + setup.lines().count() + ops;
            (
                format!(
                    "stw [%r10-4], 0\nmov %r2, %r10\nadd %r2, -4\nlddw %r1, map_idx(0)\ncall 1\njeq %r0, 0, out\n\
                     mov %r7, %r0\ncall 7\n{setup}\n{op}\nadd %r7, %r4\nldxb %r0, [%r7+0] # <-\nexit\nout:\nmov %r0, 0\nexit"
                ),
                prefix,
                prefix + 1,
            )
        };
        t.reject_spec(
            Spec::new(name, &text).maps(ARRAY8),
            &[(load, kind!(OutOfBounds { region: MapValue, size: 8, .. })), (add, kind!(UnboundedOffset { reg: 7 }))],
        );
    }
    t.finish(13);
}

#[test]
fn pointers_that_lose_their_region() {
    let mut t = Table::new("pointers losing their region");
    t.reject_spec(
        Spec::new(
            "shifted left and back",
            "mov %r3, %r10\nlsh %r3, 1 # <-\nrsh %r3, 1\nstb [%r3-8], 0\nmov %r0, 0\nexit",
        ),
        &[(1, kind!(PointerArithmetic { reg: 3 })), (3, kind!(NotAPointer { reg: 3 }))],
    );
    t.reject_spec(
        Spec::new("multiplied by one", "mov %r3, %r10\nmul %r3, 1 # <-\nstb [%r3-8], 0\nmov %r0, 0\nexit"),
        &[(1, kind!(PointerArithmetic { reg: 3 })), (2, kind!(NotAPointer { reg: 3 }))],
    );
    t.reject_spec(
        Spec::new(
            "input and stack pointers added, the stack pointer subtracted again",
            "mov %r3, %r1\nadd %r3, %r10 # <-\nsub %r3, %r10\nldxb %r0, [%r3+0]\nexit",
        ),
        &[(1, kind!(PointerArithmetic { reg: 3 | 10 })), (3, kind!(NotAPointer { reg: 3 }))],
    );
    t.reject_spec(
        Spec::new(
            "32-bit copy of a stack pointer used as a pointer",
            "mov32 %r3, %r10 # <-\nstb [%r3-8], 0\nmov %r0, 0\nexit",
        ),
        &[(0, kind!(PointerArithmetic { reg: 3 | 10 })), (1, kind!(NotAPointer { reg: 3 }))],
    );
    t.finish(4);
}
