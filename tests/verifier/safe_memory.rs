//! Memory uses that must be accepted: map lookups with a null check then reads and writes, hash maps,
//! read-only data read, spills and fills of every kind of pointer, atomics on the stack and on map
//! values, ring-buffer records released on every path, tail calls, and stack use up to the frame's
//! bottom. Map contents and ring-buffer records after each run are compared across engines and modes.

use ebpf_vm::verifier::Options;
use ebpf_vm::Context;

use crate::harness::{MapSpec, Spec, Table, ARRAY8, NO_MAPS, RINGBUF};

const INPUT: &[u8] = &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
const HASH: &[MapSpec] = &[MapSpec::Hash { key: 4, value: 8, entries: 16 }];
const RODATA: &[MapSpec] = &[MapSpec::ReadOnlyArray { value: 16, entries: 1, init: b"read-only bytes!" }];

/// Looks up key `key` of map 0 into `r0`; `out` returns 0. The body follows the null check.
fn lookup(key: u32, body: &str) -> String {
    format!(
        "stw [%r10-4], {key}\nmov %r2, %r10\nadd %r2, -4\nlddw %r1, map_idx(0)\ncall 1\njeq %r0, 0, out\n{body}\nout:\nmov %r0, 0\nexit"
    )
}

#[test]
fn maps() {
    let mut t = Table::new("safe maps");
    let b = || Context::Buffer;
    let none: &[&[u8]] = &[&[]];
    t.accept("lookup, check, read", &lookup(0, "ldxdw %r0, [%r0+0]\nexit"), ARRAY8, b(), none);
    t.accept(
        "lookup, check, write, read back",
        &lookup(0, "stdw [%r0+0], 41\nldxdw %r1, [%r0+0]\nadd %r1, 1\nstxdw [%r0+0], %r1\nmov %r0, %r1\nexit"),
        ARRAY8,
        b(),
        none,
    );
    t.accept(
        "check spelled jne into the body",
        "stw [%r10-4], 0\nmov %r2, %r10\nadd %r2, -4\nlddw %r1, map_idx(0)\ncall 1\njne %r0, 0, body\nexit\nbody:\nstw [%r0+4], 3\nmov %r0, 1\nexit",
        ARRAY8,
        b(),
        none,
    );
    t.accept(
        "copy checked, original used",
        &lookup(0, "mov %r6, %r0\njeq %r6, 0, out\nstw [%r0+0], 5\nmov %r0, 2\nexit"),
        ARRAY8,
        b(),
        none,
    );
    t.accept(
        "checked after a spill and fill",
        "stw [%r10-4], 0\nmov %r2, %r10\nadd %r2, -4\nlddw %r1, map_idx(0)\ncall 1\nstxdw [%r10-16], %r0\n\
         ldxdw %r6, [%r10-16]\njeq %r6, 0, out\nstdw [%r6+0], 9\nmov %r0, 3\nexit\nout:\nmov %r0, 0\nexit",
        ARRAY8,
        b(),
        none,
    );
    t.accept(
        "value pointer spilled, filled, written",
        &lookup(0, "stxdw [%r10-16], %r0\nmov %r0, 0\nldxdw %r3, [%r10-16]\nstw [%r3+4], 7\nldxw %r0, [%r3+4]\nexit"),
        ARRAY8,
        b(),
        none,
    );
    t.accept(
        "masked offset into the value",
        &lookup(0, "ldxb %r1, [%r0+0]\nand %r1, 7\nadd %r0, %r1\nldxb %r0, [%r0+0]\nexit"),
        ARRAY8,
        b(),
        none,
    );
    t.accept(
        "last word of a 64 KiB value",
        &lookup(0, "mov %r1, %r0\nadd %r1, 65528\nstdw [%r1+0], 5\nldxdw %r0, [%r1+0]\nexit"),
        &[MapSpec::Array { value: 65536, entries: 2 }],
        b(),
        none,
    );
    t.accept(
        "key past the end of a large-value array",
        "stw [%r10-4], -1\nmov %r2, %r10\nadd %r2, -4\nlddw %r1, map_idx(0)\ncall 1\njeq %r0, 0, none\nldxdw %r0, [%r0+0]\nexit\nnone:\nmov %r0, 1\nexit",
        &[MapSpec::Array { value: 0x10000, entries: 16 }],
        b(),
        none,
    );
    t.accept(
        "last entry of a 256-entry array",
        &lookup(255, "stdw [%r0+0], 255\nmov %r0, 1\nexit"),
        &[MapSpec::Array { value: 8, entries: 256 }],
        b(),
        none,
    );
    t.accept(
        "key taken from the input",
        "mov %r6, %r1\nmov %r0, 0\njlt %r2, 4, out\nmov %r2, %r6\nlddw %r1, map_idx(0)\ncall 1\njeq %r0, 0, out\nldxdw %r0, [%r0+0]\nout:\nexit",
        &[MapSpec::Array { value: 8, entries: 4 }],
        b(),
        &[&[1, 0, 0, 0], &[9, 0, 0, 0], &[]],
    );
    t.accept(
        "hash update, then lookup",
        "stw [%r10-4], 7\nstdw [%r10-16], 1234\nlddw %r1, map_idx(0)\nmov %r2, %r10\nadd %r2, -4\nmov %r3, %r10\nadd %r3, -16\n\
         mov %r4, 0\ncall 2\nmov %r2, %r10\nadd %r2, -4\nlddw %r1, map_idx(0)\ncall 1\njeq %r0, 0, out\nldxdw %r0, [%r0+0]\nexit\n\
         out:\nmov %r0, 0\nexit",
        HASH,
        b(),
        none,
    );
    t.accept("hash lookup of a missing key", &lookup(3, "mov %r0, 5\nexit"), HASH, b(), none);
    t.accept(
        "hash update, then delete",
        "stw [%r10-4], 2\nstdw [%r10-16], 1\nlddw %r1, map_idx(0)\nmov %r2, %r10\nadd %r2, -4\nmov %r3, %r10\nadd %r3, -16\n\
         mov %r4, 0\ncall 2\nlddw %r1, map_idx(0)\nmov %r2, %r10\nadd %r2, -4\ncall 3\nexit",
        HASH,
        b(),
        none,
    );
    t.accept(
        "update with the value of another map",
        "stw [%r10-4], 0\nmov %r2, %r10\nadd %r2, -4\nlddw %r1, map_idx(1)\ncall 1\njeq %r0, 0, out\nmov %r3, %r0\n\
         lddw %r1, map_idx(0)\nmov %r2, %r10\nadd %r2, -4\nmov %r4, 0\ncall 2\nexit\nout:\nmov %r0, 0\nexit",
        &[MapSpec::Array { value: 8, entries: 1 }, MapSpec::ReadOnlyArray { value: 8, entries: 1, init: &[9; 8] }],
        b(),
        none,
    );
    t.accept(
        "read-only data read by address",
        "lddw %r1, map_idx_value(0, 8)\nldxdw %r0, [%r1+0]\nldxb %r2, [%r1-8]\nadd %r0, %r2\nexit",
        RODATA,
        b(),
        none,
    );
    t.accept("read-only map value read", &lookup(0, "ldxdw %r0, [%r0+4]\nexit"), RODATA, b(), none);
    t.accept(
        "direct value address written",
        "lddw %r1, map_idx_value(0, 4)\nstw [%r1+0], 99\nldxw %r0, [%r1+0]\nexit",
        ARRAY8,
        b(),
        none,
    );
    t.accept(
        "per-CPU value written",
        &lookup(1, "stdw [%r0+0], 3\nldxdw %r0, [%r0+0]\nexit"),
        &[MapSpec::PerCpuArray { value: 8, entries: 2 }],
        b(),
        none,
    );
    t.accept_spec(
        Spec::new(
            "pointer stored in a map when leaks are allowed",
            &lookup(0, "stxdw [%r0+0], %r10\nmov %r0, 0\nexit"),
        )
        .maps(ARRAY8)
        .options({
            let mut o = Options::default();
            o.allow_pointer_leaks = true;
            o
        })
        .without_map_compare(),
        none,
        Some(&[0]),
    );
    t.finish(20);
}

#[test]
fn atomics() {
    let mut t = Table::new("safe atomics");
    let none: &[&[u8]] = &[&[]];
    t.accept_returns(
        "every 64-bit operation on the stack",
        "stdw [%r10-8], 10\nmov %r1, 5\nlock add [%r10-8], %r1\nmov %r1, 3\nlock fetch add [%r10-8], %r1\nmov %r6, %r1\n\
         mov %r1, 0x100\nlock or [%r10-8], %r1\nmov %r1, 0x1ff\nlock fetch and [%r10-8], %r1\nmov %r1, 1\nlock xor [%r10-8], %r1\n\
         mov %r1, 77\nlock xchg [%r10-8], %r1\nmov %r0, 77\nmov %r2, 88\nlock cmpxchg [%r10-8], %r2\nldxdw %r3, [%r10-8]\n\
         add %r0, %r3\nadd %r0, %r6\nexit",
        &[],
        77 + 88 + 15,
    );
    t.accept_returns(
        "every 32-bit operation on the stack",
        "stw [%r10-4], 10\nmov %r1, 5\nlock add32 [%r10-4], %r1\nmov %r1, 1\nlock fetch or32 [%r10-4], %r1\nmov %r6, %r1\n\
         mov %r1, 6\nlock xor32 [%r10-4], %r1\nmov %r1, 12\nlock xchg32 [%r10-4], %r1\nmov %r0, 12\nmov %r2, 2\n\
         lock cmpxchg32 [%r10-4], %r2\nldxw %r3, [%r10-4]\nlsh %r3, 8\nor %r3, %r6\nmov %r0, %r3\nexit",
        &[],
        2 << 8 | 15,
    );
    t.accept(
        "counter in a map value",
        &lookup(0, "mov %r1, 1\nlock add [%r0+0], %r1\nmov %r1, 2\nlock fetch add [%r0+0], %r1\nmov %r0, %r1\nexit"),
        ARRAY8,
        Context::Buffer,
        none,
    );
    t.accept(
        "exchange and compare-exchange in a map value",
        &lookup(
            0,
            "mov %r6, %r0\nmov %r1, 5\nlock xchg [%r6+0], %r1\nmov %r0, 5\nmov %r2, 6\nlock cmpxchg [%r6+0], %r2\nldxdw %r0, [%r6+0]\nexit",
        ),
        ARRAY8,
        Context::Buffer,
        none,
    );
    t.accept(
        "32-bit operations at an aligned offset of a map value",
        &lookup(
            0,
            "mov %r1, 3\nlock add32 [%r0+4], %r1\nmov %r1, 8\nlock fetch or32 [%r0+12], %r1\nldxw %r0, [%r0+4]\nexit",
        ),
        &[MapSpec::Array { value: 16, entries: 1 }],
        Context::Buffer,
        none,
    );
    t.accept(
        "atomic on a ring-buffer record",
        "lddw %r1, map_idx(0)\nmov %r2, 8\nmov %r3, 0\ncall 131\njeq %r0, 0, out\nstdw [%r0+0], 1\nmov %r1, 4\n\
         lock add [%r0+0], %r1\nmov %r1, %r0\nmov %r2, 0\ncall 132\nout:\nmov %r0, 0\nexit",
        RINGBUF,
        Context::Buffer,
        none,
    );
    t.finish(6);
}

#[test]
fn ring_buffer_records() {
    let mut t = Table::new("safe ring-buffer records");
    let reserve = |size: u32, body: &str| {
        format!(
            "mov %r9, %r2\nlddw %r1, map_idx(0)\nmov %r2, {size}\nmov %r3, 0\ncall 131\njeq %r0, 0, out\nmov %r6, %r0\n{body}\n\
             out:\nmov %r0, 0\nexit"
        )
    };
    let cases = [
        ("reserve, write, submit", reserve(16, "stdw [%r6+0], 1\nstdw [%r6+8], 2\nmov %r1, %r6\nmov %r2, 0\ncall 132")),
        ("reserve, discard", reserve(16, "mov %r1, %r6\nmov %r2, 0\ncall 133")),
        (
            "submit on one path, discard on the other",
            reserve(12, "stw [%r6+8], 5\nmov %r1, %r6\nmov %r2, 0\njset %r9, 1, drop\ncall 132\nja out\ndrop:\ncall 133"),
        ),
        (
            "two records, both submitted",
            reserve(
                8,
                "lddw %r1, map_idx(0)\nmov %r2, 8\nmov %r3, 0\ncall 131\njeq %r0, 0, first\nstdw [%r0+0], 2\nmov %r1, %r0\nmov %r2, 0\n\
                 call 132\nfirst:\nstdw [%r6+0], 1\nmov %r1, %r6\nmov %r2, 0\ncall 132",
            ),
        ),
        (
            "record read by a helper, then submitted",
            reserve(8, "stdw [%r6+0], 0x0102\nmov %r1, %r6\nmov %r2, 8\ncall 200\nmov %r1, %r6\nmov %r2, 0\ncall 132"),
        ),
        (
            "record spilled and filled, then submitted",
            reserve(8, "stxdw [%r10-8], %r6\nmov %r6, 0\nldxdw %r1, [%r10-8]\nstw [%r1+0], 3\nmov %r2, 0\ncall 132"),
        ),
        (
            "record written through a masked offset",
            reserve(16, "mov %r0, %r9\nand %r0, 7\nmov %r1, %r6\nadd %r1, %r0\nstdw [%r1+0], 4\nmov %r1, %r6\nmov %r2, 0\ncall 132"),
        ),
        ("output from the stack", "stdw [%r10-8], 42\nlddw %r1, map_idx(0)\nmov %r2, %r10\nadd %r2, -8\nmov %r3, 8\nmov %r4, 0\ncall 130\nout:\nmov %r0, 0\nexit".to_string()),
        ("query", "lddw %r1, map_idx(0)\nmov %r2, 0\ncall 134\nmov %r0, 0\nexit".to_string()),
        (
            "a record per iteration",
            "mov %r6, 0\nloop:\nlddw %r1, map_idx(0)\nmov %r2, 8\nmov %r3, 0\ncall 131\njeq %r0, 0, next\nstxdw [%r0+0], %r6\nmov %r1, %r0\n\
             mov %r2, 0\ncall 132\nnext:\nadd %r6, 1\njlt %r6, 3, loop\nmov %r0, %r6\nexit"
                .to_string(),
        ),
    ];
    for (name, text) in cases {
        t.accept(name, &text, RINGBUF, Context::Buffer, &[&[], &[1], &[1, 2, 3]]);
    }
    t.finish(10);
}

#[test]
fn tail_calls() {
    let mut t = Table::new("safe tail calls");
    let input: &[&[u8]] = &[&[5, 6, 7, 8], &[]];
    let targets: &[&str] = &["mov %r0, 7\nexit", "mov %r0, 0\njlt %r2, 4, out\nldxw %r0, [%r1+0]\nout:\nexit"];
    let tail = |index: u32| format!("lddw %r2, map_idx(0)\nmov %r3, {index}\ncall 12\nmov %r0, 1\nexit");
    let prog_array: &[MapSpec] = &[MapSpec::ProgArray { entries: 4, set: &[(0, 0), (1, 1)] }];
    for (name, index) in
        [("into a target returning a constant", 0), ("into a target reading the input", 1), ("into an empty slot", 2)]
    {
        let text = tail(index);
        t.accept_spec(Spec::new(name, &text).maps(prog_array).targets(targets), input, None);
    }
    t.finish(3);
}

#[test]
fn stack_and_spills() {
    let mut t = Table::new("safe stack use");
    let inputs: &[&[u8]] = &[INPUT, &[]];
    let cases = [
        ("frame bottom and top", "stdw [%r10-512], 3\nstb [%r10-1], 4\nldxdw %r0, [%r10-512]\nldxb %r1, [%r10-1]\nadd %r0, %r1\nexit"),
        (
            "stack pointer spilled, filled, written through",
            "mov %r3, %r10\nadd %r3, -32\nstxdw [%r10-8], %r3\nmov %r3, 0\nldxdw %r4, [%r10-8]\nstdw [%r4+0], 6\nldxdw %r0, [%r10-32]\nexit",
        ),
        (
            "input pointer spilled and filled, then guarded",
            "stxdw [%r10-8], %r1\nmov %r1, 0\nmov %r0, 0\njlt %r2, 2, out\nldxdw %r3, [%r10-8]\nldxh %r0, [%r3+0]\nout:\nexit",
        ),
        (
            "spilled pointer fully overwritten by a number",
            "stxdw [%r10-8], %r10\nstdw [%r10-8], 12\nldxdw %r0, [%r10-8]\nexit",
        ),
        (
            "spilled number overwritten in part",
            "lddw %r3, 0x1122334455667788\nstxdw [%r10-8], %r3\nstb [%r10-8], 0\nldxdw %r0, [%r10-8]\nexit",
        ),
        (
            "spill of the length, fill, guard",
            "stxdw [%r10-16], %r2\nmov %r0, 0\nldxdw %r4, [%r10-16]\njlt %r4, 4, out\nldxw %r0, [%r1+0]\nout:\nexit",
        ),
        (
            "variable offset read inside a written area",
            "stdw [%r10-16], 1\nstdw [%r10-8], 2\nmov %r3, %r2\nand %r3, 8\nmov %r4, %r10\nadd %r4, -16\nadd %r4, %r3\nldxdw %r0, [%r4+0]\nexit",
        ),
        ("helper fills the stack, then it is read", "mov %r1, %r10\nadd %r1, -16\nmov %r2, 16\ncall 201\nldxdw %r0, [%r10-16]\nexit"),
        ("comm written to the stack", "mov %r1, %r10\nadd %r1, -16\nmov %r2, 16\ncall 16\nldxb %r0, [%r10-1]\nexit"),
        (
            "narrow stores and sign-extending loads",
            "sth [%r10-2], -2\nstb [%r10-3], -3\nstb [%r10-4], 1\nldxsh %r0, [%r10-2]\nldxsb %r1, [%r10-3]\nadd %r0, %r1\nldxsw %r1, [%r10-4]\nadd %r0, %r1\nexit",
        ),
        ("sum of stack bytes by a helper", "stdw [%r10-8], 0x0101\nmov %r1, %r10\nadd %r1, -8\nmov %r2, 8\ncall 200\nexit"),
        ("32-bit spill of a number", "mov %r3, 5\nstxw [%r10-4], %r3\nldxw %r0, [%r10-4]\nexit"),
    ];
    for (name, text) in cases {
        t.accept(name, text, NO_MAPS, Context::Buffer, inputs);
    }
    t.finish(12);
}
