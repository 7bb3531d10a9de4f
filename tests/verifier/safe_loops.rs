//! Loops that must be accepted: constant trip counts up to a million, nested loops, loops over a
//! 256-byte stack array, loops bounded by a byte or a half-word of the input, counters in 32-bit
//! subregisters and on the stack, and `ja32` back edges. The contract asks that verification cost not
//! grow with the trip count, so these also run the verifier on large counts.

use ebpf_vm::verifier::Options;
use ebpf_vm::Context;

use crate::harness::{MapSpec, Spec, Table, NO_MAPS};

/// Writes bytes 0..256 to the stack array at -256: unrolled, or with a loop.
fn stack_array(unrolled: bool) -> String {
    if unrolled {
        (0..32)
            .map(|i| {
                let word = (0..8u64).fold(0u64, |w, b| w | (8 * i + b) << (8 * b));
                format!("lddw %r3, {word:#x}\nstxdw [%r10-{}], %r3\n", 256 - 8 * i)
            })
            .collect()
    } else {
        "mov %r6, 0\ninit:\nmov %r3, %r10\nadd %r3, -256\nadd %r3, %r6\nstxb [%r3+0], %r6\nadd %r6, 1\njlt %r6, 256, init\n"
            .to_string()
    }
}

/// Sums the 256 bytes of the stack array `rounds` times, byte by byte.
fn sum_array(rounds: u32) -> String {
    format!(
        "mov %r0, 0\nmov %r7, 0\nouter:\nmov %r6, 0\ninner:\nmov %r3, %r10\nadd %r3, -256\nadd %r3, %r6\n\
         ldxb %r4, [%r3+0]\nadd %r0, %r4\nadd %r6, 1\njlt %r6, 256, inner\nadd %r7, 1\njlt %r7, {rounds}, outer\nexit"
    )
}

#[test]
fn bounded_loops() {
    let mut t = Table::new("safe loops");
    t.accept_returns(
        "sum of 0..100000 in a register",
        "mov %r0, 0\nmov %r6, 0\nloop:\nadd %r0, %r6\nadd %r6, 1\njlt %r6, 100000, loop\nexit",
        &[],
        4_999_950_000,
    );
    t.accept_returns(
        "count down from 100000",
        "mov %r0, 0\nmov %r6, 100000\nloop:\nadd %r0, 1\nsub %r6, 1\njne %r6, 0, loop\nexit",
        &[],
        100_000,
    );
    t.accept_returns(
        "count down from 2^20",
        "mov %r0, 0\nmov %r6, 0x100000\nloop:\nadd %r0, 3\nsub %r6, 1\njne %r6, 0, loop\nexit",
        &[],
        3 << 20,
    );
    t.accept_returns(
        "256-byte stack array summed ten times",
        &format!("{}{}", stack_array(true), sum_array(10)),
        &[],
        10 * 32_640,
    );
    t.accept_returns(
        "256-byte stack array written by a loop, summed four times",
        &format!("{}{}", stack_array(false), sum_array(4)),
        &[],
        4 * 32_640,
    );
    t.accept_returns(
        "nested 100 by 100",
        "mov %r0, 0\nmov %r6, 0\nouter:\nmov %r7, 0\ninner:\nadd %r0, 1\nadd %r7, 1\njlt %r7, 100, inner\nadd %r6, 1\njlt %r6, 100, outer\nexit",
        &[],
        10_000,
    );
    t.accept_returns(
        "triangular nest",
        "mov %r0, 0\nmov %r6, 0\nouter:\nmov %r7, 0\ninner:\njge %r7, %r6, next\nadd %r0, 1\nadd %r7, 1\nja inner\nnext:\nadd %r6, 1\njlt %r6, 100, outer\nexit",
        &[],
        4950,
    );
    t.accept_returns(
        "three deep",
        "mov %r0, 0\nmov %r6, 0\na:\nmov %r7, 0\nb:\nmov %r8, 0\nc:\nadd %r0, 1\nadd %r8, 1\njlt %r8, 20, c\nadd %r7, 1\njlt %r7, 20, b\nadd %r6, 1\njlt %r6, 20, a\nexit",
        &[],
        8000,
    );
    t.accept_returns(
        "signed counter down to zero",
        "mov %r0, 0\nmov %r6, 1000\nloop:\nadd %r0, %r6\nsub %r6, 1\njsgt %r6, 0, loop\nexit",
        &[],
        500_500,
    );
    t.accept_returns(
        "signed counter down past zero",
        "mov %r0, 0\nmov %r6, 99\nloop:\nadd %r0, %r6\nsub %r6, 1\njsge %r6, 0, loop\nexit",
        &[],
        4950,
    );
    t.accept_returns(
        "32-bit counter",
        "mov %r0, 0\nmov32 %r6, 0\nloop:\nadd32 %r6, 1\nadd %r0, 2\njlt32 %r6, 5000, loop\nexit",
        &[],
        10_000,
    );
    t.accept_returns(
        "step of three",
        "mov %r0, 0\nmov %r6, 0\nloop:\nadd %r0, 1\nadd %r6, 3\njlt %r6, 30000, loop\nexit",
        &[],
        10_000,
    );
    t.accept_returns(
        "even counter meets its bound exactly",
        "mov %r0, 0\nmov %r6, 0\nloop:\nadd %r6, 2\nadd %r0, 1\njne %r6, 100000, loop\nexit",
        &[],
        50_000,
    );
    t.accept_returns(
        "bound in a register",
        "lddw %r7, 100000\nmov %r0, 0\nmov %r6, 0\nloop:\nadd %r0, 1\nadd %r6, 1\njlt %r6, %r7, loop\nexit",
        &[],
        100_000,
    );
    t.accept_returns(
        "break at 50 from an unconditional back edge",
        "mov %r6, 0\nloop:\nadd %r6, 1\njeq %r6, 50, done\nja loop\ndone:\nmov %r0, %r6\nexit",
        &[],
        50,
    );
    t.accept_returns(
        "ja32 back edge",
        "mov %r6, 0\nloop:\nadd %r6, 1\njge %r6, 1000, done\nja32 loop\ndone:\nmov %r0, %r6\nexit",
        &[],
        1000,
    );
    t.accept_returns(
        "counter kept on the stack",
        "stdw [%r10-8], 0\nloop:\nldxdw %r6, [%r10-8]\nadd %r6, 1\nstxdw [%r10-8], %r6\njlt %r6, 1000, loop\nmov %r0, %r6\nexit",
        &[],
        1000,
    );
    t.accept_returns(
        "both arms of the body move the counter",
        "mov %r0, 0\nmov %r6, 0\nloop:\njset %r6, 1, odd\nadd %r0, 10\nja next\nodd:\nadd %r0, 1\nnext:\nadd %r6, 1\njlt %r6, 1000, loop\nexit",
        &[],
        5500,
    );
    t.accept_returns(
        "two loops one after the other",
        "mov %r0, 0\nmov %r6, 0\na:\nadd %r0, 1\nadd %r6, 1\njlt %r6, 300, a\nmov %r6, 0\nb:\nadd %r0, 2\nadd %r6, 1\njlt %r6, 300, b\nexit",
        &[],
        900,
    );
    t.accept_returns(
        "helper called on every iteration",
        "mov %r6, 0\nmov %r7, 0\nloop:\ncall 5\nadd %r7, 1\nadd %r6, 1\njlt %r6, 100, loop\nmov %r0, %r7\nexit",
        &[],
        100,
    );
    t.accept_returns(
        "stack array indexed by a masked counter",
        &format!(
            "{}mov %r0, 0\nmov %r6, 0\nloop:\nmov %r3, %r6\nand %r3, 63\nmov %r4, %r10\nadd %r4, -64\nadd %r4, %r3\n\
             stxb [%r4+0], %r6\nldxb %r5, [%r4+0]\nadd %r0, %r5\nadd %r6, 1\njlt %r6, 200, loop\nexit",
            (1..=8).map(|i| format!("stdw [%r10-{}], 0\n", 8 * i)).collect::<String>()
        ),
        &[],
        19_900,
    );
    t.finish(21);
}

#[test]
fn loops_bounded_by_data() {
    let mut t = Table::new("safe loops bounded by data");
    let bytes: &[&[u8]] = &[&[0, 1, 2], &[5, 0], &[255, 255, 9], &[0x34, 0x12, 0]];
    t.accept(
        "bounded by an input byte",
        "mov %r0, 0\njlt %r2, 1, done\nldxb %r6, [%r1+0]\nloop:\njeq %r6, 0, done\nsub %r6, 1\nadd %r0, 1\nja loop\ndone:\nexit",
        NO_MAPS,
        Context::Buffer,
        bytes,
    );
    t.accept(
        "bounded by an input half-word",
        "mov %r0, 0\njlt %r2, 2, done\nldxh %r6, [%r1+0]\nloop:\njeq %r6, 0, done\nsub %r6, 1\nadd %r0, 1\nja loop\ndone:\nexit",
        NO_MAPS,
        Context::Buffer,
        bytes,
    );
    t.accept(
        "up to 16 bytes until a zero",
        "mov %r0, 0\njlt %r2, 16, done\nmov %r6, 0\nloop:\nmov %r3, %r1\nadd %r3, %r6\nldxb %r4, [%r3+0]\njeq %r4, 0, done\nadd %r0, %r4\nadd %r6, 1\njlt %r6, 16, loop\ndone:\nexit",
        NO_MAPS,
        Context::Buffer,
        &[&[1; 16], &[3, 4, 0, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9], &[]],
    );
    t.accept_spec(
        Spec::new(
            "every byte of a 64-byte map value",
            "stw [%r10-4], 0\nmov %r2, %r10\nadd %r2, -4\nlddw %r1, map_idx(0)\ncall 1\njeq %r0, 0, out\n\
             mov %r6, 0\nloop:\nmov %r3, %r0\nadd %r3, %r6\nstxb [%r3+0], %r6\nadd %r6, 1\njlt %r6, 64, loop\n\
             ldxdw %r0, [%r0+56]\nexit\nout:\nmov %r0, 0\nexit",
        )
        .maps(&[MapSpec::Array { value: 64, entries: 1 }]),
        &[&[]],
        Some(&[0x3f3e_3d3c_3b3a_3938]),
    );
    t.accept(
        "lookup on every iteration, leaving on null",
        "mov %r6, 0\nloop:\nstxw [%r10-4], %r6\nmov %r2, %r10\nadd %r2, -4\nlddw %r1, map_idx(0)\ncall 1\njeq %r0, 0, done\n\
         ldxdw %r3, [%r0+0]\nadd %r3, 1\nstxdw [%r0+0], %r3\nadd %r6, 1\njlt %r6, 100, loop\ndone:\nmov %r0, %r6\nexit",
        &[MapSpec::Array { value: 8, entries: 10 }],
        Context::Buffer,
        &[&[]],
    );
    t.accept(
        "loop in a function called in a loop",
        "mov %r6, 0\nmov %r7, 0\nloop:\nmov %r1, %r6\ncall local f\nadd %r7, %r0\nadd %r6, 1\njlt %r6, 50, loop\nmov %r0, %r7\nexit\n\
         f:\nmov %r0, 0\nmov %r2, 0\nin:\nadd %r0, %r1\nadd %r2, 1\njlt %r2, 20, in\nexit",
        NO_MAPS,
        Context::Buffer,
        &[&[]],
    );
    let mut lowered = Options::default();
    lowered.max_loop_iterations = 1000;
    t.accept_spec(
        Spec::new(
            "five hundred iterations under a limit of a thousand",
            "mov %r0, 0\nloop:\nadd %r0, 1\njlt %r0, 500, loop\nexit",
        )
        .options(lowered),
        &[&[]],
        Some(&[500]),
    );
    t.finish(7);
}

/// The `case N:` arms of a twelve-way switch on `%r7`, each adding to `%r0` and going to `next`.
fn switch_arms() -> String {
    let mut s = String::new();
    for c in 0..11 {
        s.push_str(&format!("jeq %r7, {c}, c{c}\n"));
    }
    s.push_str("add %r0, 1\nja next\n");
    for c in 0..11 {
        s.push_str(&format!("c{c}:\nadd %r0, {}\nja next\n", c + 2));
    }
    s
}

#[test]
fn loops_that_take_precision() {
    let mut t = Table::new("safe loops that take precision");
    let inputs: &[&[u8]] = &[&[0], &[5], &[63], &[200], &[255]];
    t.accept_spec(
        Spec::new(
            "a 32-bit counter on the stack whose address a helper is given",
            "mov32 %r1, 0\nstxw [%r10-4], %r1\nloop:\nmov %r2, %r10\nadd %r2, -4\nlddw %r1, map_idx(0)\ncall 3\n\
             ldxw %r1, [%r10-4]\nadd32 %r1, 1\nstxw [%r10-4], %r1\njlt32 %r1, 256, loop\nldxw %r0, [%r10-4]\nexit",
        )
        .maps(&[MapSpec::Hash { key: 4, value: 8, entries: 256 }]),
        &[&[]],
        Some(&[256]),
    );
    t.accept_spec(
        Spec::new(
            "the same in the lower half of a slot, with a lookup",
            "mov %r6, 0\nmov32 %r1, 0\nstxw [%r10-8], %r1\nloop:\nmov %r2, %r10\nadd %r2, -8\nlddw %r1, map_idx(0)\n\
             call 1\njeq %r0, 0, skip\nldxdw %r3, [%r0+0]\nadd %r6, %r3\nskip:\nldxw %r1, [%r10-8]\nadd32 %r1, 1\n\
             stxw [%r10-8], %r1\njlt32 %r1, 10, loop\nmov %r0, %r6\nexit",
        )
        .maps(&[MapSpec::Array { value: 8, entries: 10 }]),
        &[&[]],
        Some(&[0]),
    );
    // The word index `j >> 6` stays below 3 only if the counter settles at the bound of the register
    // it is compared with (at most 190), not at what its known bits allow (254).
    t.accept(
        "an access before the test of a counter bounded by a register",
        "stdw [%r10-8], 0\nstdw [%r10-16], 0\nstdw [%r10-24], 0\nmov %r6, 0\njlt %r2, 1, skip\nldxb %r6, [%r1+0]\n\
         skip:\nand %r6, 63\nadd %r6, 128\nmov %r3, 4\nloop:\nmov %r4, %r3\nrsh %r4, 6\nlsh %r4, 3\nmov %r5, %r10\n\
         add %r5, -24\nadd %r5, %r4\nldxdw %r7, [%r5+0]\nadd %r7, 1\nstxdw [%r5+0], %r7\nadd %r3, 2\n\
         jlt %r3, %r6, loop\nldxdw %r0, [%r10-24]\nexit",
        NO_MAPS,
        Context::Buffer,
        inputs,
    );
    t.accept_returns(
        "a counter ended by equality beside a twelve-way switch on another register",
        &format!(
            "{}mov %r0, 0\nmov %r6, 0\nloop:\nmov %r3, %r10\nadd %r3, -256\nadd %r3, %r6\nldxb %r7, [%r3+0]\n\
             and %r7, 15\n{}next:\nadd %r6, 1\njne %r6, 256, loop\nexit",
            stack_array(false),
            switch_arms()
        ),
        &[],
        (0..256u64).map(|b| if b % 16 <= 10 { b % 16 + 2 } else { 1 }).sum(),
    );
    t.accept(
        "a step from 1 to 8 read from the input",
        "mov %r0, 0\njlt %r2, 1, out\nldxb %r6, [%r1+0]\nand %r6, 7\nadd %r6, 1\nmov %r3, 0\nloop:\nadd %r0, 1\n\
         add %r3, %r6\njlt %r3, 1000, loop\nout:\nexit",
        NO_MAPS,
        Context::Buffer,
        inputs,
    );
    t.accept(
        "a count down by a step from 1 to 8",
        "mov %r0, 0\njlt %r2, 1, out\nldxb %r6, [%r1+0]\nand %r6, 7\nadd %r6, 1\nmov %r3, 1000\nloop:\nadd %r0, 1\n\
         sub %r3, %r6\njsgt %r3, 0, loop\nout:\nexit",
        NO_MAPS,
        Context::Buffer,
        inputs,
    );
    t.finish(6);
}
