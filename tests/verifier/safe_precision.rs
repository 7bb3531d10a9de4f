//! Programs whose proof needs precise bounds, which must be accepted: 32-bit operations on numbers
//! whose upper half is unknown (the accepted twins of the cases in `notes`), masks, shifts, signed
//! comparisons, bit tests, division and modulo by ranges that include zero, and the results the ISA
//! defines for division by zero and `INT_MIN / -1`, which both engines must produce alike.

use ebpf_vm::Context;

use crate::harness::{Table, ARRAY8, NO_MAPS};
use crate::notes::alu32_program;

#[test]
fn alu32_with_an_unknown_high_half() {
    let mut t = Table::new("safe ALU32");
    let cases = [
        ("add32 to 7", "or %r6, 6", "add32 %r6, 1"),
        ("sub32 to 7", "or %r6, 8", "sub32 %r6, 1"),
        ("sub32 of a negative number", "", "sub32 %r6, -7"),
        ("mul32 to 6", "or %r6, 3", "mul32 %r6, 2"),
        ("or32 to 7", "or %r6, 6", "or32 %r6, 1"),
        ("and32 to 7", "or %r6, 0x17", "and32 %r6, 15"),
        ("xor32 to 7", "or %r6, 0x17", "xor32 %r6, 0x10"),
        ("lsh32 to 6", "or %r6, 3", "lsh32 %r6, 1"),
        ("rsh32 to 7", "or %r6, 15", "rsh32 %r6, 1"),
        ("arsh32 to 7", "or %r6, 14", "arsh32 %r6, 1"),
        ("arsh32 sign fill, masked", "mov32 %r5, 0x80000010\nor %r6, %r5", "arsh32 %r6, 31\nand32 %r6, 7"),
        ("neg32 to 7", "mov32 %r5, -7\nor %r6, %r5", "neg32 %r6"),
        ("mov32 keeps 7", "or %r6, 7", "mov32 %r6, %r6"),
        ("div32 to 7", "or %r6, 15", "div32 %r6, 2"),
        ("mod32 to 7", "or %r6, 16", "mod32 %r6, 9"),
        ("movsx832 to 7", "or %r6, 0x107", "movsx832 %r6, %r6"),
        ("movsx832 of 0xff plus one in 32 bits", "or %r6, 0xff", "movsx832 %r6, %r6\nadd32 %r6, 1"),
        ("movsx1632 of 0x8000 shifted in 32 bits", "or %r6, 0x8000", "movsx1632 %r6, %r6\nrsh32 %r6, 29"),
        ("32-bit register source", "or %r6, 4\nmov %r5, 3", "add32 %r6, %r5"),
        ("and32 of an unknown number", "mov %r6, %r0", "and32 %r6, 7"),
        ("mov32, then a shift", "mov %r6, %r0", "mov32 %r6, %r6\nrsh %r6, 29"),
        ("rsh32 of an unknown number", "mov %r6, %r0", "rsh32 %r6, 29"),
        ("mod32 of an unknown number", "mov %r6, %r0", "mod32 %r6, 8"),
        ("jmp32 on a number whose upper half is zero", "mov %r6, %r0\nand %r6, 0xffff", "jgt32 %r6, 7, out"),
        ("jmp32, then zero extension", "mov %r6, %r0", "jgt32 %r6, 7, out\nmov32 %r6, %r6"),
        ("jset32, then zero extension", "mov %r6, %r0", "jset32 %r6, -8, out\nmov32 %r6, %r6"),
    ];
    for (name, setup, op) in cases {
        let (text, _, _) = alu32_program(setup, op);
        t.accept(name, &text, ARRAY8, Context::Buffer, &[&[]]);
    }
    t.finish(26);
}

#[test]
fn bounds_from_masks_shifts_and_comparisons() {
    let mut t = Table::new("safe precise bounds");
    let inputs: &[&[u8]] = &[
        &[0, 0, 0, 0, 0, 0, 0, 0],
        &[0xff; 8],
        &[0x81, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x88],
        &[0x0c, 0, 0, 0, 0, 0, 0, 0, 9],
        &[1, 2],
    ];
    // Reads 8 unknown bytes of the input into r3; `compute` must bring r3 into 0..16 (or leave through
    // `out`) for the byte read of the 16-byte stack array.
    let program = |compute: &str| {
        format!(
            "stdw [%r10-16], 0x0102\nstdw [%r10-8], 0x0304\nmov %r0, 0\njlt %r2, 8, out\nldxdw %r3, [%r1+0]\n{compute}\n\
             mov %r4, %r10\nadd %r4, -16\nadd %r4, %r3\nldxb %r0, [%r4+0]\nout:\nexit"
        )
    };
    let cases = [
        ("and", "and %r3, 15"),
        ("right shift", "rsh %r3, 60"),
        ("left then right shift", "lsh %r3, 60\nrsh %r3, 60"),
        ("arithmetic shift, then an add", "lsh %r3, 56\narsh %r3, 61\nadd %r3, 4"),
        ("unsigned jgt", "jgt %r3, 15, out"),
        ("unsigned jge", "jge %r3, 16, out"),
        ("unsigned jlt into the body", "jlt %r3, 16, body\nmov %r0, 0\nexit\nbody:"),
        ("signed jslt and jsgt", "jslt %r3, 0, out\njsgt %r3, 15, out"),
        ("sign extension, then signed bounds", "movsx864 %r3, %r3\njslt %r3, 0, out\njsgt %r3, 15, out"),
        ("negative range moved up", "jsge %r3, 0, out\njslt %r3, -16, out\nadd %r3, 16"),
        ("bit test", "jset %r3, -16, out"),
        ("modulo", "mod %r3, 16"),
        ("masked, then divided", "and %r3, 255\ndiv %r3, 16"),
        ("masked, then xor", "and %r3, 15\nxor %r3, 15"),
        ("masked, then or", "and %r3, 7\nor %r3, 8"),
        ("masked, negated, moved up", "and %r3, 15\nneg %r3\nadd %r3, 15"),
        ("masked, then multiplied", "and %r3, 3\nmul %r3, 5"),
        ("32-bit copy, then and32", "mov32 %r3, %r3\nand32 %r3, 15"),
        ("bound in a register", "mov %r5, 16\njge %r3, %r5, out"),
        ("divided by a range with zero", "and %r3, 15\nmov %r5, %r2\nand %r5, 3\ndiv %r3, %r5"),
        ("modulo by a range without zero", "mov %r5, %r2\nand %r5, 7\nadd %r5, 1\nmod %r3, %r5"),
        ("modulo by a range with zero", "and %r3, 15\nmov %r5, %r2\nand %r5, 3\nmod %r3, %r5"),
        ("jgt32 after zero extension", "mov32 %r3, %r3\njgt32 %r3, 15, out"),
        ("jsgt32 on a masked number", "and %r3, 0xffff\njsgt32 %r3, 15, out"),
        ("jle with the bound on the left", "mov %r5, 15\njle %r5, %r3, big\nja body\nbig:\nmov %r3, 0\nbody:"),
    ];
    for (name, compute) in cases {
        t.accept(name, &program(compute), NO_MAPS, Context::Buffer, inputs);
    }
    t.finish(25);
}

#[test]
fn division_results_the_isa_defines() {
    let mut t = Table::new("safe division results");
    let cases: [(&str, &str, u64); 16] = [
        ("div by zero", "mov %r0, 5\nmov %r1, 0\ndiv %r0, %r1", 0),
        ("mod by zero", "mov %r0, 5\nmov %r1, 0\nmod %r0, %r1", 5),
        ("div32 by zero", "lddw %r0, 0x100000005\nmov %r1, 0\ndiv32 %r0, %r1", 0),
        ("mod32 by zero", "lddw %r0, 0x100000005\nmov %r1, 0\nmod32 %r0, %r1", 5),
        ("sdiv by zero", "mov %r0, -7\nmov %r1, 0\nsdiv %r0, %r1", 0),
        ("smod by zero", "mov %r0, -7\nmov %r1, 0\nsmod %r0, %r1", -7i64 as u64),
        ("sdiv32 by zero", "mov32 %r0, -7\nmov %r1, 0\nsdiv32 %r0, %r1", 0),
        ("smod32 by zero", "mov32 %r0, -7\nmov %r1, 0\nsmod32 %r0, %r1", 0xffff_fff9),
        ("INT_MIN / -1", "lddw %r0, 0x8000000000000000\nsdiv %r0, -1", 1 << 63),
        ("INT_MIN % -1", "lddw %r0, 0x8000000000000000\nsmod %r0, -1", 0),
        ("INT_MIN / -1 by register", "lddw %r0, 0x8000000000000000\nmov %r1, -1\nsdiv %r0, %r1", 1 << 63),
        ("INT32_MIN / -1", "mov32 %r0, 0x80000000\nsdiv32 %r0, -1", 0x8000_0000),
        ("INT32_MIN % -1", "mov32 %r0, 0x80000000\nsmod32 %r0, -1", 0),
        ("negative sdiv", "mov %r0, -100\nsdiv %r0, 7", -14i64 as u64),
        ("negative smod", "mov %r0, -100\nsmod %r0, 7", -2i64 as u64),
        ("unsigned div of a negative number", "mov %r0, -100\ndiv %r0, 7", (-100i64 as u64) / 7),
    ];
    for (name, body, want) in cases {
        t.accept_returns(name, &format!("{body}\nexit"), &[], want);
    }
    t.accept(
        "divided by the input length",
        "mov %r0, 100\ndiv %r0, %r2\nmov %r3, 100\nmod %r3, %r2\nlsh %r0, 8\nor %r0, %r3\nexit",
        NO_MAPS,
        Context::Buffer,
        &[&[], &[1, 2, 3], &[0; 7]],
    );
    t.finish(17);
}
