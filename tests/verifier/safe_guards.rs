//! Programs that must be accepted: input accesses proven by a length guard in every spelling or by an
//! end pointer, fixed contexts read and written where allowed (read-only ranges only read), and
//! packet-style contexts with `data + N > data_end` guards. Each runs alike verified and checked on
//! both engines.

use ebpf_vm::Context;

use crate::harness::{fixed_read_only, Spec, Table, NO_MAPS};

const EMPTY: &[u8] = &[];
const SHORT: &[u8] = &[1, 2, 3];
const SEVEN: &[u8] = &[1, 2, 3, 4, 5, 6, 7];
const EIGHT: &[u8] = &[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];
const SIXTEEN: &[u8] = &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
const LONG: &[u8] = &[7; 64];

/// Every length below, at and above the guards the cases use.
const INPUTS: &[&[u8]] = &[EMPTY, SHORT, SEVEN, EIGHT, SIXTEEN, LONG];

#[test]
fn input_length_guards() {
    let mut t = Table::new("safe input guards");
    let b = || Context::Buffer;
    let cases = [
        ("jlt to out", "mov %r0, 0\njlt %r2, 8, out\nldxdw %r0, [%r1+0]\nout:\nexit"),
        ("jge into the body", "jge %r2, 8, body\nmov %r0, 0\nexit\nbody:\nldxdw %r0, [%r1+0]\nexit"),
        ("jgt 7 into the body", "jgt %r2, 7, body\nmov %r0, 0\nexit\nbody:\nldxdw %r0, [%r1+0]\nexit"),
        ("jle 7 to out", "mov %r0, 0\njle %r2, 7, out\nldxdw %r0, [%r1+0]\nout:\nexit"),
        ("jne 8 to out", "mov %r0, 0\njne %r2, 8, out\nldxdw %r0, [%r1+0]\nout:\nexit"),
        ("jsgt 7 into the body", "jsgt %r2, 7, body\nmov %r0, 0\nexit\nbody:\nldxdw %r0, [%r1+0]\nexit"),
        ("jslt 8 to out", "mov %r0, 0\njslt %r2, 8, out\nldxdw %r0, [%r1+0]\nout:\nexit"),
        ("jlt32 to out", "mov %r0, 0\njlt32 %r2, 8, out\nldxdw %r0, [%r1+0]\nout:\nexit"),
        ("non-empty, one byte", "mov %r0, 0\njeq %r2, 0, out\nldxb %r0, [%r1+0]\nout:\nexit"),
        ("guard on a copy of the length", "mov %r0, 0\nmov %r3, %r2\njlt %r3, 8, out\nldxdw %r0, [%r1+0]\nout:\nexit"),
        (
            "two guards, two reads",
            "mov %r0, 0\njlt %r2, 4, out\nldxw %r0, [%r1+0]\njlt %r2, 8, out\nldxw %r3, [%r1+4]\nadd %r0, %r3\nout:\nexit",
        ),
        ("pointer advanced, read back", "mov %r0, 0\njlt %r2, 8, out\nadd %r1, 8\nldxdw %r0, [%r1-8]\nout:\nexit"),
        (
            "masked offset inside the guard",
            "mov %r0, 0\njlt %r2, 16, out\nldxb %r3, [%r1+0]\nand %r3, 7\nadd %r1, %r3\nldxdw %r0, [%r1+0]\nout:\nexit",
        ),
        (
            "write, then read back",
            "mov %r0, 0\njlt %r2, 8, out\nstdw [%r1+0], 0x1234\nmov %r3, 0x55\nstxb [%r1+7], %r3\nldxw %r0, [%r1+4]\nout:\nexit",
        ),
        (
            "guard of 64, then a loop over 64 bytes",
            "mov %r0, 0\njlt %r2, 64, done\nmov %r6, 0\nloop:\nmov %r3, %r1\nadd %r3, %r6\nldxb %r4, [%r3+0]\nadd %r0, %r4\nadd %r6, 1\njlt %r6, 64, loop\ndone:\nexit",
        ),
        ("packet load by absolute offset", "ldabsh 2\nexit"),
        ("packet load by register offset", "mov %r6, 1\nldindb %r6, 2\nexit"),
    ];
    for (name, text) in cases {
        let inputs: &[&[u8]] =
            if text.contains("ldabs") || text.contains("ldind") { &[SEVEN, EIGHT, LONG] } else { INPUTS };
        t.accept(name, text, NO_MAPS, b(), inputs);
    }
    t.finish(17);
}

#[test]
fn input_end_pointer_guards() {
    let mut t = Table::new("safe end pointer guards");
    let end = "mov %r3, %r1\nadd %r3, %r2\n";
    let cases = [
        ("jgt to out", "mov %r4, %r1\nadd %r4, 8\njgt %r4, %r3, out\nldxdw %r0, [%r1+0]\nexit\nout:\nmov %r0, 0\nexit"),
        ("jlt with the operands swapped", "mov %r4, %r1\nadd %r4, 8\njlt %r3, %r4, out\nldxdw %r0, [%r1+0]\nexit\nout:\nmov %r0, 0\nexit"),
        ("jle into the body", "mov %r4, %r1\nadd %r4, 8\njle %r4, %r3, body\nmov %r0, 0\nexit\nbody:\nldxdw %r0, [%r1+0]\nexit"),
        ("jge into the body", "mov %r4, %r1\nadd %r4, 8\njge %r3, %r4, body\nmov %r0, 0\nexit\nbody:\nldxdw %r0, [%r1+0]\nexit"),
        (
            "sixteen bytes, two reads",
            "mov %r4, %r1\nadd %r4, 16\njgt %r4, %r3, out\nldxdw %r0, [%r1+0]\nldxdw %r5, [%r1+8]\nxor %r0, %r5\nexit\nout:\nmov %r0, 0\nexit",
        ),
        (
            "guard on an advanced pointer",
            "mov %r4, %r1\nadd %r4, 4\nmov %r5, %r4\nadd %r5, 4\njgt %r5, %r3, out\nldxw %r0, [%r4+0]\nexit\nout:\nmov %r0, 0\nexit",
        ),
        (
            "pointer walk bounded by the end and by 32",
            "mov %r0, 0\nmov %r6, 0\nloop:\nmov %r4, %r1\nadd %r4, 1\njgt %r4, %r3, done\nldxb %r5, [%r1+0]\nadd %r0, %r5\nmov %r1, %r4\nadd %r6, 1\njlt %r6, 32, loop\ndone:\nexit",
        ),
    ];
    for (name, body) in cases {
        let text = format!("{end}{body}");
        t.accept(name, &text, NO_MAPS, Context::Buffer, INPUTS);
    }
    t.finish(7);
}

#[test]
fn fixed_contexts() {
    let mut t = Table::new("safe fixed contexts");
    let ctx16: &[&[u8]] = &[SIXTEEN];
    let ctx32: &[&[u8]] = &[&[3; 32]];
    t.accept(
        "every byte read",
        "ldxdw %r0, [%r1+0]\nldxdw %r3, [%r1+8]\nadd %r0, %r3\nexit",
        NO_MAPS,
        Context::fixed(16),
        ctx16,
    );
    t.accept("size in r2", "mov %r0, %r2\nexit", NO_MAPS, Context::fixed(16), ctx16);
    t.accept(
        "written, then read",
        "stw [%r1+12], 9\nldxw %r0, [%r1+12]\nstb [%r1+0], 1\nexit",
        NO_MAPS,
        Context::fixed(16),
        ctx16,
    );
    t.accept(
        "read-only head read, the rest written",
        "ldxdw %r0, [%r1+0]\nstdw [%r1+8], 5\nstxdw [%r1+24], %r0\nexit",
        NO_MAPS,
        fixed_read_only(32, &[(0, 8)]),
        ctx32,
    );
    t.accept(
        "read-only middle read, written around it",
        "ldxdw %r0, [%r1+8]\nstb [%r1+7], 1\nstb [%r1+16], 2\nexit",
        NO_MAPS,
        fixed_read_only(32, &[(8, 16)]),
        ctx32,
    );
    t.accept(
        "masked offset inside the context",
        "ldxb %r3, [%r1+0]\nand %r3, 15\nadd %r1, %r3\nldxb %r0, [%r1+0]\nexit",
        NO_MAPS,
        Context::fixed(16),
        ctx16,
    );
    t.accept("helper reads the context", "mov %r2, 16\ncall 200\nexit", NO_MAPS, Context::fixed(16), ctx16);
    t.accept(
        "helper writes the writable part",
        "mov %r6, %r1\nadd %r1, 8\nmov %r2, 24\ncall 201\nldxdw %r0, [%r6+8]\nexit",
        NO_MAPS,
        fixed_read_only(32, &[(0, 8)]),
        ctx32,
    );
    t.accept(
        "callee reads the context",
        "call local f\nexit\nf:\nldxw %r0, [%r1+12]\nexit",
        NO_MAPS,
        Context::fixed(16),
        ctx16,
    );
    t.accept(
        "context pointer spilled and filled",
        "stxdw [%r10-8], %r1\nmov %r1, 0\nldxdw %r3, [%r10-8]\nldxh %r0, [%r3+14]\nexit",
        NO_MAPS,
        Context::fixed(16),
        ctx16,
    );
    t.accept("context helper", "call 202\nexit", NO_MAPS, Context::fixed(16), ctx16);
    t.finish(11);
}

#[test]
fn packet_contexts() {
    let mut t = Table::new("safe packet contexts");
    let packet = || Context::Packet { size: 24, data: 0, data_end: 8 };
    let head = "ldxdw %r2, [%r1+0]\nldxdw %r3, [%r1+8]\n";
    let cases: [(&str, &str, &[u8]); 9] = [
        (
            "one byte",
            "mov %r4, %r2\nadd %r4, 1\njgt %r4, %r3, out\nldxb %r0, [%r2+0]\nexit\nout:\nmov %r0, 0\nexit",
            &[9, 8, 7],
        ),
        (
            "eight bytes",
            "mov %r4, %r2\nadd %r4, 8\njgt %r4, %r3, out\nldxdw %r0, [%r2+0]\nexit\nout:\nmov %r0, 0\nexit",
            EIGHT,
        ),
        (
            "eight bytes of a short packet",
            "mov %r4, %r2\nadd %r4, 8\njgt %r4, %r3, out\nldxdw %r0, [%r2+0]\nexit\nout:\nmov %r0, 77\nexit",
            SHORT,
        ),
        (
            "written after the guard",
            "mov %r4, %r2\nadd %r4, 4\njgt %r4, %r3, out\nstw [%r2+0], 0x01020304\nmov %r0, 1\nexit\nout:\nmov %r0, 0\nexit",
            SEVEN,
        ),
        (
            "guard spelled end >= data + N",
            "mov %r4, %r2\nadd %r4, 2\njge %r3, %r4, ok\nmov %r0, 0\nexit\nok:\nldxh %r0, [%r2+0]\nexit",
            SHORT,
        ),
        (
            "context field beside the packet",
            "ldxdw %r5, [%r1+16]\nmov %r4, %r2\nadd %r4, 1\njgt %r4, %r3, out\nldxb %r0, [%r2+0]\nadd %r0, %r5\nexit\nout:\nmov %r0, %r5\nexit",
            SHORT,
        ),
        (
            "masked offset inside a guard of 16",
            "mov %r4, %r2\nadd %r4, 16\njgt %r4, %r3, out\nldxb %r5, [%r2+0]\nand %r5, 7\nadd %r2, %r5\nldxdw %r0, [%r2+0]\nexit\nout:\nmov %r0, 0\nexit",
            SIXTEEN,
        ),
        (
            "loop over at most 16 bytes",
            "mov %r0, 0\nmov %r6, 0\nloop:\nmov %r4, %r2\nadd %r4, 1\njgt %r4, %r3, done\nldxb %r5, [%r2+0]\nadd %r0, %r5\nmov %r2, %r4\nadd %r6, 1\njlt %r6, 16, loop\ndone:\nexit",
            LONG,
        ),
        (
            "two guards, the second larger",
            "mov %r0, 0\nmov %r4, %r2\nadd %r4, 2\njgt %r4, %r3, out\nldxh %r0, [%r2+0]\nmov %r4, %r2\nadd %r4, 6\njgt %r4, %r3, out\nldxw %r5, [%r2+2]\nadd %r0, %r5\nout:\nexit",
            SEVEN,
        ),
    ];
    for (name, body, bytes) in cases {
        let text = format!("{head}{body}");
        t.accept_spec(Spec::new(name, &text).packet(packet(), bytes), &[EMPTY], None);
    }
    t.finish(9);
}
