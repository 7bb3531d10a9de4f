//! Instruction semantics on the interpreter, class by class, with edge values; calls, helpers,
//! checked memory, budgets; and random programs that must end in `Ok` or a typed error.

mod common;

use common::{run, try_run_on};
use ebpf_vm::isa::{self, Instruction, Reg};
use ebpf_vm::{ExecError, Helper, HelperError, HelperSig, Program, Vm};
use proptest::prelude::*;

/// `lddw` of a 64-bit value into r0 and r1, the operation on r0, exit.
fn binop64(op: &str, a: u64, b: u64) -> u64 {
    run(&format!("lddw %r0, {a:#x}\nlddw %r1, {b:#x}\n{op} %r0, %r1\nexit"))
}

fn binop32(op: &str, a: u64, b: u64) -> u64 {
    run(&format!("lddw %r0, {a:#x}\nlddw %r1, {b:#x}\n{op}32 %r0, %r1\nexit"))
}

const MIN: u64 = i64::MIN as u64;
const M1: u64 = u64::MAX; // -1

#[test]
fn alu64_arithmetic() {
    assert_eq!(binop64("add", M1, 1), 0);
    assert_eq!(binop64("add", i64::MAX as u64, 1), MIN);
    assert_eq!(binop64("sub", 0, 1), M1);
    assert_eq!(binop64("mul", MIN, M1), MIN);
    assert_eq!(binop64("mul", 0x1_0000_0000, 0x1_0000_0000), 0);
    assert_eq!(binop64("div", M1, 2), M1 / 2);
    assert_eq!(binop64("div", 7, 0), 0);
    assert_eq!(binop64("sdiv", MIN, M1), MIN);
    assert_eq!(binop64("sdiv", (-7i64) as u64, 2), (-3i64) as u64);
    assert_eq!(binop64("sdiv", 7, 0), 0);
    assert_eq!(binop64("mod", 7, 0), 7);
    assert_eq!(binop64("mod", M1, 10), M1 % 10);
    assert_eq!(binop64("smod", MIN, M1), 0);
    assert_eq!(binop64("smod", (-7i64) as u64, 2), M1);
    assert_eq!(binop64("smod", 7, (-2i64) as u64), 1);
    assert_eq!(binop64("smod", (-7i64) as u64, 0), (-7i64) as u64);
    assert_eq!(run("mov %r0, 5\nneg %r0\nexit"), (-5i64) as u64);
    assert_eq!(run("lddw %r0, 0x8000000000000000\nneg %r0\nexit"), MIN);
}

#[test]
fn alu64_immediates_are_sign_extended() {
    assert_eq!(run("mov %r0, -1\nexit"), M1);
    assert_eq!(run("mov %r0, 0\nadd %r0, -2\nexit"), (-2i64) as u64);
    assert_eq!(run("mov %r0, 10\ndiv %r0, -1\nexit"), 0, "10 / 0xffff_ffff_ffff_ffff");
    assert_eq!(run("mov %r0, -10\nsdiv %r0, -1\nexit"), 10);
    assert_eq!(run("mov %r0, 10\nmod %r0, 0\nexit"), 10);
    assert_eq!(run("mov %r0, 10\ndiv %r0, 0\nexit"), 0);
    assert_eq!(run("lddw %r0, 0xffffffffffffffff\nand %r0, 0x80000000\nexit"), 0xffff_ffff_8000_0000);
}

#[test]
fn alu32_wraps_and_zero_extends() {
    assert_eq!(binop32("add", 0xffff_ffff, 1), 0);
    assert_eq!(binop32("add", 0x1234_5678_ffff_ffff, 2), 1);
    assert_eq!(binop32("sub", 0, 1), 0xffff_ffff);
    assert_eq!(binop32("mul", 0x8000_0000, 0xffff_ffff), 0x8000_0000);
    assert_eq!(binop32("div", 0xffff_ffff_0000_0010, 0x1_0000_0000), 0, "divisor truncates to 0");
    assert_eq!(binop32("mod", 0xffff_ffff_0000_0010, 0x1_0000_0000), 0x10, "dst kept, upper half cleared");
    assert_eq!(binop32("sdiv", 0x8000_0000, 0xffff_ffff), 0x8000_0000);
    assert_eq!(binop32("smod", 0x8000_0000, 0xffff_ffff), 0);
    assert_eq!(binop32("sdiv", (-9i32) as u32 as u64, 2), (-4i32) as u32 as u64);
    assert_eq!(binop32("smod", (-9i32) as u32 as u64, 2), (-1i32) as u32 as u64);
    assert_eq!(run("lddw %r0, 0xffffffff00000005\nneg32 %r0\nexit"), 0xffff_fffb);
    assert_eq!(run("lddw %r0, 0xffffffff80000000\nneg32 %r0\nexit"), 0x8000_0000);
    assert_eq!(run("lddw %r1, 0xffffffffffffffff\nmov32 %r0, %r1\nexit"), 0xffff_ffff);
    assert_eq!(run("mov32 %r0, -1\nexit"), 0xffff_ffff);
    assert_eq!(run("lddw %r0, 0x1234567800000010\nmod32 %r0, 0\nexit"), 0x10);
    assert_eq!(run("lddw %r0, 0x1234567800000010\ndiv32 %r0, 0\nexit"), 0);
}

#[test]
fn shifts_mask_their_amount() {
    assert_eq!(binop64("lsh", 1, 63), MIN);
    assert_eq!(binop64("lsh", 1, 64), 1);
    assert_eq!(binop64("lsh", 1, 65), 2);
    assert_eq!(binop64("rsh", MIN, 63), 1);
    assert_eq!(binop64("rsh", MIN, 64), MIN);
    assert_eq!(binop64("arsh", MIN, 63), M1);
    assert_eq!(binop64("arsh", MIN, 64), MIN);
    assert_eq!(binop32("lsh", 1, 31), 0x8000_0000);
    assert_eq!(binop32("lsh", 1, 32), 1);
    assert_eq!(binop32("rsh", 0xffff_ffff_8000_0000, 31), 1);
    assert_eq!(binop32("arsh", 0x8000_0000, 31), 0xffff_ffff);
    assert_eq!(binop32("arsh", 0x8000_0000, 32), 0x8000_0000);
    assert_eq!(run("mov %r0, 1\nlsh %r0, 64\nexit"), 1);
    assert_eq!(run("mov32 %r0, 1\nlsh32 %r0, 33\nexit"), 2);
    assert_eq!(run("mov %r0, -1\narsh %r0, 127\nexit"), M1);
}

#[test]
fn bitwise() {
    assert_eq!(binop64("or", 0xf0, 0x0f), 0xff);
    assert_eq!(binop64("and", M1, MIN), MIN);
    assert_eq!(binop64("xor", M1, M1), 0);
    assert_eq!(binop32("xor", M1, 0), 0xffff_ffff);
    assert_eq!(binop32("or", 0xffff_0000_0000_0000, 1), 1);
}

#[test]
fn sign_extending_moves() {
    assert_eq!(run("mov %r1, 0x80\nmovsx864 %r0, %r1\nexit"), 0xffff_ffff_ffff_ff80);
    assert_eq!(run("mov %r1, 0x7f\nmovsx864 %r0, %r1\nexit"), 0x7f);
    assert_eq!(run("mov %r1, 0x8000\nmovsx1664 %r0, %r1\nexit"), 0xffff_ffff_ffff_8000);
    assert_eq!(run("mov32 %r1, 0x80000000\nmovsx3264 %r0, %r1\nexit"), 0xffff_ffff_8000_0000);
    assert_eq!(run("mov %r1, 0x80\nmovsx832 %r0, %r1\nexit"), 0xffff_ff80);
    assert_eq!(run("mov %r1, 0x8000\nmovsx1632 %r0, %r1\nexit"), 0xffff_8000);
}

#[test]
fn byte_order() {
    let v = "lddw %r0, 0x1122334455667788\n";
    assert_eq!(run(&format!("{v}le16 %r0\nexit")), 0x7788);
    assert_eq!(run(&format!("{v}le32 %r0\nexit")), 0x5566_7788);
    assert_eq!(run(&format!("{v}le64 %r0\nexit")), 0x1122_3344_5566_7788);
    assert_eq!(run(&format!("{v}be16 %r0\nexit")), 0x8877);
    assert_eq!(run(&format!("{v}be32 %r0\nexit")), 0x8877_6655);
    assert_eq!(run(&format!("{v}be64 %r0\nexit")), 0x8877_6655_4433_2211);
    assert_eq!(run(&format!("{v}bswap16 %r0\nexit")), 0x8877);
    assert_eq!(run(&format!("{v}bswap32 %r0\nexit")), 0x8877_6655);
    assert_eq!(run(&format!("{v}bswap64 %r0\nexit")), 0x8877_6655_4433_2211);
}

#[test]
fn jumps_64_and_32() {
    let cases: &[(&str, u64, u64, bool)] = &[
        ("jeq", 5, 5, true),
        ("jne", 5, 5, false),
        ("jgt", M1, 0, true),
        ("jsgt", M1, 0, false),
        ("jge", 0, 0, true),
        ("jlt", 0, M1, true),
        ("jslt", MIN, 0, true),
        ("jle", 1, 0, false),
        ("jsle", M1, M1, true),
        ("jsge", 0, MIN, true),
        ("jset", 0b1010, 0b0100, false),
        ("jset", 0b1010, 0b0010, true),
    ];
    for &(op, a, b, taken) in cases {
        let text = format!("lddw %r1, {a:#x}\nlddw %r2, {b:#x}\nmov %r0, 0\n{op} %r1, %r2, +1\nexit\nmov %r0, 1\nexit");
        assert_eq!(run(&text) == 1, taken, "{op} {a:#x} {b:#x}");
    }
    // 32-bit comparisons look at the low halves only.
    let text = "lddw %r1, 0x100000005\nmov %r0, 0\njeq32 %r1, 5, +1\nexit\nmov %r0, 1\nexit";
    assert_eq!(run(text), 1);
    let text = "lddw %r1, 0x1ffffffff\nmov %r0, 0\njslt32 %r1, 0, +1\nexit\nmov %r0, 1\nexit";
    assert_eq!(run(text), 1);
    // The 64-bit immediate is sign-extended: -1 equals 0xffff_ffff_ffff_ffff, not 0xffff_ffff.
    assert_eq!(run("mov32 %r1, -1\nmov %r0, 0\njeq %r1, -1, +1\nexit\nmov %r0, 1\nexit"), 0);
    assert_eq!(run("mov %r1, -1\nmov %r0, 0\njeq %r1, -1, +1\nexit\nmov %r0, 1\nexit"), 1);
    // Backward jumps and the long jump.
    assert_eq!(
        run("mov %r0, 0\nmov %r1, 10\nl:\nadd %r0, 2\nsub %r1, 1\njne %r1, 0, l\nja32 +1\nmov %r0, 0\nexit"),
        20
    );
}

#[test]
fn loads_and_stores() {
    let mut mem = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x80, 0xff];
    assert_eq!(try_run_on("ldxb %r0, [%r1+1]\nexit", &mut mem), Ok(0x22));
    assert_eq!(try_run_on("ldxh %r0, [%r1+2]\nexit", &mut mem), Ok(0x4433));
    assert_eq!(try_run_on("ldxw %r0, [%r1+1]\nexit", &mut mem), Ok(0x5544_3322), "unaligned");
    assert_eq!(try_run_on("ldxdw %r0, [%r1]\nexit", &mut mem), Ok(0x8877_6655_4433_2211));
    assert_eq!(try_run_on("ldxsb %r0, [%r1+8]\nexit", &mut mem), Ok(0xffff_ffff_ffff_ff80));
    assert_eq!(try_run_on("ldxsh %r0, [%r1+8]\nexit", &mut mem), Ok(0xffff_ffff_ffff_ff80));
    assert_eq!(try_run_on("ldxsw %r0, [%r1+6]\nexit", &mut mem), Ok(0xffff_ffff_ff80_8877));
    assert_eq!(try_run_on("mov %r1, %r1\nadd %r1, 9\nldxb %r0, [%r1-9]\nexit", &mut mem), Ok(0x11));

    let mut mem = [0u8; 16];
    try_run_on("stb [%r1], -1\nsth [%r1+2], 0x1234\nstw [%r1+4], -2\nstdw [%r1+8], -3\nexit", &mut mem).unwrap();
    assert_eq!(mem, [0xff, 0, 0x34, 0x12, 0xfe, 0xff, 0xff, 0xff, 0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    let mut mem = [0u8; 15];
    try_run_on(
        "lddw %r2, 0x0807060504030201\nstxb [%r1], %r2\nstxh [%r1+1], %r2\nstxw [%r1+3], %r2\nstxdw [%r1+7], %r2\nexit",
        &mut mem,
    )
    .unwrap();
    assert_eq!(mem, [1, 1, 2, 1, 2, 3, 4, 1, 2, 3, 4, 5, 6, 7, 8]);
    // The stack: r10 points past the end of a zeroed 512-byte frame.
    assert_eq!(run("ldxdw %r0, [%r10-512]\nexit"), 0);
    assert_eq!(run("stdw [%r10-8], 42\nldxdw %r0, [%r10-8]\nexit"), 42);
}

#[test]
fn atomics() {
    let setup = "lddw %r0, 0x1122334455667788\nstxdw [%r10-8], %r0\n";
    let ld = "ldxdw %r0, [%r10-8]\nexit";
    assert_eq!(run(&format!("{setup}mov %r1, 1\nlock add [%r10-8], %r1\n{ld}")), 0x1122_3344_5566_7789);
    assert_eq!(run(&format!("{setup}mov32 %r1, -1\nlock add32 [%r10-8], %r1\n{ld}")), 0x1122_3344_5566_7787);
    assert_eq!(run(&format!("{setup}mov %r1, 0xff\nlock or [%r10-8], %r1\n{ld}")), 0x1122_3344_5566_77ff);
    assert_eq!(run(&format!("{setup}mov %r1, 0xf0\nlock and [%r10-8], %r1\n{ld}")), 0x80);
    assert_eq!(run(&format!("{setup}mov %r1, -1\nlock xor32 [%r10-8], %r1\n{ld}")), 0x1122_3344_aa99_8877);
    assert_eq!(
        run(&format!("{setup}mov %r1, 1\nlock fetch add [%r10-8], %r1\nmov %r0, %r1\nexit")),
        0x1122_3344_5566_7788
    );
    assert_eq!(run(&format!("{setup}mov %r1, 1\nlock fetch add32 [%r10-4], %r1\nmov %r0, %r1\nexit")), 0x1122_3344);
    assert_eq!(run(&format!("{setup}mov %r1, 7\nlock xchg [%r10-8], %r1\n{ld}")), 7);
    assert_eq!(run(&format!("{setup}mov %r1, 7\nlock xchg32 [%r10-8], %r1\nmov %r0, %r1\nexit")), 0x5566_7788);
    // cmpxchg: r0 receives the old value; the store happens only on a match.
    assert_eq!(run(&format!("{setup}mov %r0, 0\nmov %r1, 7\nlock cmpxchg [%r10-8], %r1\n{ld}")), 0x1122_3344_5566_7788);
    assert_eq!(run(&format!("{setup}mov %r1, 7\nlock cmpxchg [%r10-8], %r1\n{ld}")), 7);
    // Misaligned atomics are an error, not undefined behaviour.
    let err = try_run_on("mov %r1, 1\nlock add [%r10-15], %r1\nexit", &mut []).unwrap_err();
    assert!(matches!(err, ExecError::MisalignedAtomic { pc: 1, .. }), "{err:?}");
}

#[test]
fn legacy_packet_loads() {
    let mut pkt = [0x12, 0x34, 0x56, 0x78, 0x9a];
    assert_eq!(try_run_on("ldabsb 1\nexit", &mut pkt), Ok(0x34));
    assert_eq!(try_run_on("ldabsh 1\nexit", &mut pkt), Ok(0x3456));
    assert_eq!(try_run_on("ldabsw 1\nexit", &mut pkt), Ok(0x3456_789a));
    assert_eq!(try_run_on("mov %r3, 2\nldindh %r3, 1\nexit", &mut pkt), Ok(0x789a));
    // Out of bounds ends the program with 0.
    assert_eq!(try_run_on("ldabsw 2\nmov %r0, 9\nexit", &mut pkt), Ok(0));
    assert_eq!(try_run_on("mov %r3, -1\nldindb %r3, 0\nmov %r0, 9\nexit", &mut pkt), Ok(0));
}

#[test]
fn local_calls_have_frames_and_preserve_r6_to_r9() {
    let text = "
        mov %r6, 6
        stdw [%r10-8], 99
        mov %r1, %r10
        call local f
        ldxdw %r1, [%r10-8]
        add %r0, %r1
        add %r0, %r6
        exit
    f:
        mov %r6, 0
        stdw [%r10-8], 1        # the callee's own frame
        ldxdw %r2, [%r1-8]      # the caller's frame, through a pointer
        ldxdw %r0, [%r10-8]
        add %r0, %r2
        exit";
    assert_eq!(run(text), 1 + 99 + 99 + 6);
    // Eight frames are allowed, a ninth is not.
    let mut deep = String::from("call local f1\nexit\n");
    for i in 1..=7 {
        deep.push_str(&format!("f{i}:\ncall local f{}\nexit\n", i + 1));
    }
    deep.push_str("f8:\nmov %r0, 8\nexit\n");
    let err = try_run_on(&deep, &mut []).unwrap_err();
    assert_eq!(err, ExecError::CallDepthExceeded { pc: 14 });
    let ok = deep.replace("f7:\ncall local f8", "f7:\nmov %r0, 7");
    assert_eq!(run(&ok), 7);
    // Recursion ends at the frame limit, as an error.
    let err = try_run_on("call local f\nexit\nf:\ncall local f\nexit", &mut []).unwrap_err();
    assert!(matches!(err, ExecError::CallDepthExceeded { pc: 2 }));
}

#[test]
fn helpers_by_id_and_by_register() {
    assert_eq!(run("mov %r1, 41\ncall 5\nadd %r0, 1\nexit"), 42);
    assert_eq!(run("mov %r1, 41\nmov %r8, 5\ncall %r8\nexit"), 41);
    let err = try_run_on("mov %r8, 6\ncall %r8\nexit", &mut []).unwrap_err();
    assert_eq!(err, ExecError::UnknownHelper { pc: 1, id: 6 });
    // An unknown helper id is found when the Vm is built.
    let err = Vm::builder(Program::from_asm("call 77\nexit").unwrap()).checked().build().unwrap_err();
    assert_eq!(err, ebpf_vm::BuildError::Link(ebpf_vm::LinkError::UnknownHelper { pc: 0, id: 77 }));
}

#[test]
fn helpers_see_memory_through_the_context() {
    // Helper 1 sums `r2` bytes at `r1`; helper 2 writes "ok" at r1.
    let sum = Helper::new(1, "sum", HelperSig::scalars(2), |ctx, a| {
        let mut buf = vec![0u8; a[1] as usize];
        ctx.read(a[0], &mut buf)?;
        Ok(buf.iter().map(|&b| b as u64).sum())
    });
    let write = Helper::new(2, "write", HelperSig::scalars(1), |ctx, a| {
        ctx.write(a[0], b"ok")?;
        Ok(0)
    });
    let fail = Helper::new(3, "fail", HelperSig::scalars(0), |_, _| Err(HelperError::Failed("nope".into())));
    let build = |text: &str| {
        Vm::builder(Program::from_asm(text).unwrap())
            .helper(sum.clone())
            .helper(write.clone())
            .helper(fail.clone())
            .checked()
            .build()
            .unwrap()
    };
    let mut mem = [1, 2, 3, 4];
    assert_eq!(build("call 1\nexit").execute(&mut mem), Ok(10));
    assert_eq!(build("add %r1, 2\ncall 2\nexit").execute(&mut mem), Ok(0));
    assert_eq!(mem, [1, 2, b'o', b'k']);
    let err = build("add %r1, 3\ncall 2\nexit").execute(&mut mem).unwrap_err();
    assert!(matches!(err, ExecError::Helper { pc: 1, id: 2, source: HelperError::OutOfBounds { len: 2, .. } }));
    let err = build("mov %r2, 5\ncall 1\nexit").execute(&mut mem).unwrap_err();
    assert!(matches!(err, ExecError::Helper { pc: 1, id: 1, .. }));
    let err = build("call 3\nexit").execute(&mut mem).unwrap_err();
    assert_eq!(err.to_string(), "instruction 0: helper 3 failed: nope");
}

#[test]
fn checked_mode_stops_out_of_bounds_accesses() {
    let mut mem = [0u8; 8];
    let cases: &[(&str, usize, u64)] = &[
        ("ldxdw %r0, [%r1+1]\nexit", 0, 8),
        ("ldxb %r0, [%r1+8]\nexit", 0, 1),
        ("ldxb %r0, [%r1-1]\nexit", 0, 1),
        ("mov %r0, 0\nstxw [%r10], %r0\nexit", 1, 4),
        ("ldxb %r0, [%r10-513]\nexit", 0, 1),
        ("mov %r1, 0\nldxdw %r0, [%r1]\nexit", 1, 8),
        ("lddw %r1, 0xffffffffffffffff\nldxh %r0, [%r1]\nexit", 2, 2),
        ("mov %r2, 1\nlock add [%r1+8], %r2\nexit", 1, 8),
    ];
    for &(text, pc, len) in cases {
        let err = try_run_on(text, &mut mem).unwrap_err();
        assert!(matches!(err, ExecError::OutOfBounds { pc: p, len: l, .. } if p == pc && l == len), "{text}: {err:?}");
    }
    // A callee cannot reach below its own frame, and the caller's frame is gone after return.
    let err = try_run_on("call local f\nexit\nf:\nldxb %r0, [%r10-513]\nexit", &mut []).unwrap_err();
    assert!(matches!(err, ExecError::OutOfBounds { pc: 2, .. }));
    let err =
        try_run_on("call local f\nldxb %r0, [%r0]\nexit\nf:\nmov %r0, %r10\nsub %r0, 8\nexit", &mut []).unwrap_err();
    assert!(matches!(err, ExecError::OutOfBounds { pc: 1, .. }));
    // No memory: r1 is 0 and r2 is 0.
    assert_eq!(run("mov %r0, %r1\nadd %r0, %r2\nexit"), 0);
}

#[test]
fn budget_stops_runaway_loops() {
    let program = Program::from_asm("mov %r0, 0\nl:\nadd %r0, 1\nja l").unwrap();
    let vm = Vm::builder(program).budget(1001).checked().build().unwrap();
    assert_eq!(vm.execute(&mut []), Err(ExecError::BudgetExhausted { pc: 1 }));
    let program = Program::from_asm("mov %r0, 1\nexit").unwrap();
    assert_eq!(Vm::builder(program.clone()).budget(2).checked().build().unwrap().execute(&mut []), Ok(1));
    assert_eq!(
        Vm::builder(program).budget(1).checked().build().unwrap().execute(&mut []),
        Err(ExecError::BudgetExhausted { pc: 1 })
    );
}

#[test]
fn unchecked_mode_gives_the_same_results() {
    let text = "mov %r0, 0\nl:\njeq %r2, 0, +5\nldxb %r3, [%r1]\nadd %r0, %r3\nadd %r1, 1\nsub %r2, 1\nja l\nexit";
    let program = Program::from_asm(text).unwrap();
    // SAFETY: the program reads only inside its input buffer.
    let vm = unsafe { Vm::builder(program).unchecked() }.checked().build().unwrap();
    assert_eq!(vm.execute(&mut [1, 2, 3]), Ok(6));
}

#[test]
fn unresolved_pseudo_loads_are_build_errors() {
    let err = Vm::builder(Program::from_asm("lddw %r1, map_fd(3)\nexit").unwrap()).checked().build().unwrap_err();
    assert_eq!(err, ebpf_vm::BuildError::Link(ebpf_vm::LinkError::UnknownMap { pc: 0, index: 3 }));
    let err = Vm::builder(Program::from_asm("lddw %r1, btf_var(3, 0)\nexit").unwrap()).checked().build().unwrap_err();
    assert_eq!(err, ebpf_vm::BuildError::Link(ebpf_vm::LinkError::UnresolvedImm64 { pc: 0, kind: 3 }));
    let err = Vm::builder(Program::from_asm("call runtime 9\nexit").unwrap()).checked().build().unwrap_err();
    assert_eq!(err, ebpf_vm::BuildError::Link(ebpf_vm::LinkError::UnsupportedBtfCall { pc: 0, id: 9 }));
}

#[test]
fn one_vm_runs_on_many_threads() {
    let program = Program::from_asm(
        "mov %r0, 0\nl:\njeq %r2, 0, +5\nldxb %r3, [%r1]\nadd %r0, %r3\nadd %r1, 1\nsub %r2, 1\nja l\nexit",
    )
    .unwrap();
    let vm = Vm::builder(program).checked().build().unwrap();
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let vm = &vm;
            s.spawn(move || {
                // Fewer under Miri, which interprets the interpreter (a thousand took a minute there).
                for _ in 0..if cfg!(miri) { 50 } else { 1000 } {
                    let mut mem = [t; 16];
                    assert_eq!(vm.execute(&mut mem), Ok(16 * t as u64));
                }
            });
        }
    });
}

/// A random single-function program whose jumps stay inside it and whose last instruction is `exit`;
/// it names only helper 5 and no map, and uses r10 only as a base, so it always builds.
fn random_program() -> impl Strategy<Value = Vec<Instruction>> {
    proptest::collection::vec(common::instruction(), 1..64).prop_map(|p| {
        let mut p: Vec<Instruction> = p
            .into_iter()
            .filter(|i| !matches!(i, Instruction::CallLocal { .. }))
            .map(|i| match common::frame_pointer_as_base_only(i) {
                Instruction::Call { .. } | Instruction::CallBtf { .. } => Instruction::Call { id: 5 },
                Instruction::LoadImm64 { dst, value: ebpf_vm::isa::Imm64::Const(v) } => {
                    Instruction::LoadImm64 { dst, value: ebpf_vm::isa::Imm64::Const(v) }
                }
                Instruction::LoadImm64 { dst, .. } => {
                    Instruction::LoadImm64 { dst, value: ebpf_vm::isa::Imm64::Const(0x1234) }
                }
                other => other,
            })
            .collect();
        p.push(Instruction::Exit);
        let slots: Vec<usize> = p
            .iter()
            .scan(0, |pc, i| {
                let at = *pc;
                *pc += i.slots();
                Some(at)
            })
            .collect();
        for (k, insn) in p.iter_mut().enumerate() {
            let pc = slots[k] as i64;
            // Any in-range target; `k` picks one deterministically.
            let pick = slots[(k * 7 + 3) % slots.len()] as i64;
            let rel = pick - pc - 1;
            match insn {
                Instruction::Ja { offset } | Instruction::Jump { offset, .. } => *offset = rel as i16,
                Instruction::Ja32 { offset } => *offset = rel as i32,
                // Keep memory offsets small so that stack accesses are often in bounds.
                Instruction::Load { offset, .. }
                | Instruction::LoadSx { offset, .. }
                | Instruction::Store { offset, .. }
                | Instruction::StoreReg { offset, .. }
                | Instruction::Atomic { offset, .. } => *offset = -(offset.rem_euclid(64)) * 8,
                _ => {}
            }
        }
        p
    })
}

/// Random programs in checked mode with a budget end in `Ok` or a typed error, never a panic, and the
/// error names an instruction of the program.
#[test]
#[cfg_attr(miri, ignore = "thousands of programs: too slow to interpret under Miri")]
fn random_programs_never_panic() {
    static RATE: common::Rate = common::Rate::new("random_programs_never_panic");
    let strategy = (random_program(), proptest::collection::vec(any::<u8>(), 0..64));
    common::run_property(&RATE, 3000, strategy, |(p, mut mem)| {
        let Ok(program) = Program::from_instructions(p) else {
            RATE.skipped();
            return Ok(());
        };
        let helper = Helper::new(5, "echo", HelperSig::scalars(1), |_, a| Ok(a[0]));
        let vm = Vm::builder(program.clone()).helper(helper).budget(2000).checked().build().expect("builds");
        RATE.ran();
        if let Err(e) = vm.execute(&mut mem) {
            prop_assert!(e.pc() < program.slot_count(), "{e}");
        }
        Ok(())
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// Random bytes as programs: decoding never panics (most random bytes are not a valid program), and
    /// what decodes runs to `Ok` or a typed error.
    #[test]
    #[cfg_attr(miri, ignore = "thousands of programs: too slow to interpret under Miri")]
    fn random_bytes_decode_or_fail_cleanly(b in proptest::collection::vec(any::<u8>(), 8..256)) {
        let mut b = b;
        b.truncate(b.len() / 8 * 8);
        b.extend_from_slice(&isa::encode(&[Instruction::Exit]));
        if let Ok(program) = Program::from_bytes(&b) {
            if let Ok(vm) = Vm::builder(program).budget(1000).checked().build() {
                let _ = vm.execute(&mut [0u8; 32]);
            }
        }
    }
}

#[test]
fn registers_are_numbered() {
    assert_eq!(Reg::new(10), Some(Reg::R10));
    assert_eq!(Reg::new(11), None);
}

/// A helper that panics stops the program, and the panic reaches the caller of `execute`, on both
/// engines (compiled code cannot be unwound through: the JIT resumes the panic after it returns).
#[test]
#[cfg(all(feature = "jit", not(miri)))]
fn a_panicking_helper_panics_in_the_caller_on_both_engines() {
    for engine in [ebpf_vm::Engine::Interpreter, ebpf_vm::Engine::Jit] {
        let boom = Helper::new(1, "boom", HelperSig::scalars(0), |_, _| panic!("helper bug"));
        let program = Program::from_asm("call 1\nmov %r0, 7\nexit").expect("assembles");
        let vm = Vm::builder(program).helper(boom).engine(engine).checked().build().expect("builds");
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| vm.execute(&mut [])));
        let message = caught.expect_err("the panic propagates");
        assert_eq!(message.downcast_ref::<&str>(), Some(&"helper bug"), "{engine:?}");
        // The Vm stays usable.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| vm.execute(&mut [])));
    }
}

/// The loop step and test the interpreter runs as one superinstruction (`add r, c; jcc r, imm`, with
/// no budget), at each end of each comparison, with the jump plain and threaded over a `ja`.
#[test]
fn add_and_compare_pairs_at_their_boundaries() {
    type Test = fn(u64, u64) -> bool;
    let conds: [(&str, Test); 6] = [
        ("jeq", |a, b| a == b),
        ("jne", |a, b| a != b),
        ("jlt", |a, b| a < b),
        ("jle", |a, b| a <= b),
        ("jgt", |a, b| a > b),
        ("jge", |a, b| a >= b),
    ];
    let mut cases = 0;
    // Under Miri (each build takes it half a second), the starts next to the limit and one step each way.
    let (starts, steps): (&[i64], &[i64]) =
        if cfg!(miri) { (&[4, 5, 6], &[1, -16_383]) } else { (&[-2, 3, 4, 5, 6, 7], &[1, -1, 16_383, -16_383]) };
    for (op, holds) in conds {
        for &start in starts {
            for &step in steps {
                let limit = 5i64.wrapping_add(step - 1);
                let x = start.wrapping_add(step) as u64;
                // r0 = r1 + 100 where the jump is taken, r1 where it is not.
                let expected = if holds(x, limit as u64) { x.wrapping_add(100) } else { x };
                let plain = format!(
                    "mov %r1, {start}\nadd %r1, {step}\n{op} %r1, {limit}, +2\nmov %r0, %r1\nexit\n\
                     mov %r0, %r1\nadd %r0, 100\nexit"
                );
                let threaded = format!(
                    "mov %r1, {start}\nadd %r1, {step}\n{op} %r1, {limit}, +1\nja +3\nmov %r0, %r1\nadd %r0, 100\n\
                     exit\nmov %r0, %r1\nexit"
                );
                for text in [plain, threaded] {
                    let program = Program::from_asm(&text).expect("assembles");
                    let vm = Vm::builder(program).checked().build().expect("builds");
                    assert_eq!(vm.execute(&mut []), Ok(expected), "{text}");
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 6 * starts.len() * steps.len() * 2);
}

/// `random_program` with instruction pairs the interpreter runs as one when no budget counts
/// instructions (`mov r, a; add r, b` and `add r, c; jcc r, imm` as superinstructions, `jcc +1; ja` as
/// one threaded jump), put
/// in place of pairs of one-slot instructions (so that every jump target stays an instruction), and
/// every jump forward (backward ones go to the final `exit`), so that nearly every program ends.
fn fusable_program() -> impl Strategy<Value = Vec<Instruction>> {
    use isa::{AluOp, Cond, Operand, Width};
    random_program().prop_map(|mut p| {
        let last: usize = p.iter().map(|i| i.slots()).sum::<usize>() - 1;
        let mut at = 0usize;
        for insn in p.iter_mut() {
            let here = at;
            at += insn.slots();
            let forward = |offset: i64| if offset < 0 { (last - here - 1) as i64 } else { offset };
            match insn {
                Instruction::Ja { offset } | Instruction::Jump { offset, .. } => {
                    *offset = forward(*offset as i64) as i16
                }
                Instruction::Ja32 { offset } => *offset = forward(*offset as i64) as i32,
                _ => {}
            }
        }
        let conds = [Cond::Eq, Cond::Ne, Cond::Gt, Cond::Ge, Cond::Lt, Cond::Le, Cond::Sgt, Cond::Slt, Cond::Set];
        let reg = |k: usize| Reg::new((k % 10) as u8).expect("r0-r9");
        let mut pc = 0usize;
        // Instructions before this one belong to a pattern already placed.
        let mut free = 0usize;
        for k in 0..p.len().saturating_sub(2) {
            let (here, next) = (p[k].slots(), p[k + 1].slots());
            if k >= free && here == 1 && next == 1 && !matches!(p[k + 1], Instruction::Exit) {
                free = k + 3;
                let third = p.get(k + 2).is_some_and(|i| i.slots() == 1 && !matches!(i, Instruction::Exit));
                match k % 7 {
                    0 => {
                        let (r, a) = (reg(k * 3), reg(k * 5 + 1));
                        let b = if k % 8 == 0 {
                            Operand::Reg(reg(k + if k % 16 == 0 { 0 } else { 7 }))
                        } else {
                            Operand::Imm(k as i32 - 9)
                        };
                        p[k] = Instruction::Alu { width: Width::W64, op: AluOp::Mov, dst: r, src: Operand::Reg(a) };
                        p[k + 1] = Instruction::Alu { width: Width::W64, op: AluOp::Add, dst: r, src: b };
                    }
                    1 => {
                        // A loop's step and test (backward jumps are made forward below).
                        let cond = conds[(k / 4) % conds.len()];
                        let r = reg(k * 3);
                        let step = [1, -1, 8, 16_383, -16_384, 20_000][(k / 4) % 6];
                        p[k] = Instruction::Alu { width: Width::W64, op: AluOp::Add, dst: r, src: Operand::Imm(step) };
                        // Equal to the sum where `r` was still zero, so that equality and the
                        // ends of ranges are met.
                        let imm = if (k / 8) % 2 == 0 { step } else { k as i32 % 7 };
                        let offset = if third && k % 3 != 0 {
                            // `add; jcc +1; ja X`: the jump threaded over the `ja` too.
                            p[k + 2] = Instruction::Ja { offset: (last as i64 - (pc as i64 + 2) - 1) as i16 };
                            1
                        } else {
                            let to = if k % 3 == 0 { last } else { pc + 2 };
                            (to as i64 - (pc as i64 + 1) - 1) as i16
                        };
                        p[k + 1] =
                            Instruction::Jump { width: Width::W64, cond, dst: r, src: Operand::Imm(imm), offset };
                    }
                    2 => {
                        let cond = conds[(k / 4) % conds.len()];
                        let src = if k % 3 == 0 { Operand::Reg(reg(k + 2)) } else { Operand::Imm(k as i32 % 5) };
                        let width = if k % 5 == 0 { Width::W32 } else { Width::W64 };
                        p[k] = Instruction::Jump { width, cond, dst: reg(k), src, offset: 1 };
                        // To the final `exit`, or just past the pair.
                        let to = if k % 3 == 1 { last } else { pc + 2 };
                        p[k + 1] = Instruction::Ja { offset: (to as i64 - (pc as i64 + 1) - 1) as i16 };
                    }
                    3 => {
                        // A copy, then a mask or a shift of it by a constant (64- or 32-bit).
                        // From the input's address half the time: high bits set.
                        let (r, a) = (reg(k * 3), if k % 4 < 2 { Reg::R1 } else { reg(k * 5 + 1) });
                        let width = if k % 2 == 0 { Width::W32 } else { Width::W64 };
                        let (op, imm) =
                            [(AluOp::And, k as i32 * 37 - 500), (AluOp::Lsh, k as i32 % 70), (AluOp::Rsh, 3)]
                                [(k / 7) % 3];
                        p[k] = Instruction::Alu { width, op: AluOp::Mov, dst: r, src: Operand::Reg(a) };
                        p[k + 1] = Instruction::Alu { width, op, dst: r, src: Operand::Imm(imm) };
                    }
                    4 if third => {
                        // An extension of the low 32 bits as two shifts, of a value whose bit 31 is set
                        // half the time.
                        let r = reg(k * 3);
                        let second = if k % 2 == 0 { AluOp::Rsh } else { AluOp::Arsh };
                        let v = if k % 4 < 2 { i32::MIN + k as i32 } else { k as i32 };
                        p[k] = Instruction::Alu { width: Width::W64, op: AluOp::Mov, dst: r, src: Operand::Imm(v) };
                        p[k + 1] =
                            Instruction::Alu { width: Width::W64, op: AluOp::Lsh, dst: r, src: Operand::Imm(32) };
                        p[k + 2] = Instruction::Alu { width: Width::W64, op: second, dst: r, src: Operand::Imm(32) };
                    }
                    5 if third => {
                        // An array element: base plus index, then a load through the sum (in or out of
                        // the input, so that errors name the load).
                        let (d, y) = (reg(k * 3), reg(k * 7 + 2));
                        let (a, b) = if k % 3 == 0 { (Reg::R1, reg(k)) } else { (reg(k + 1), Reg::R1) };
                        let size = [isa::Size::B, isa::Size::H, isa::Size::W, isa::Size::DW][(k / 7) % 4];
                        p[k] = Instruction::Alu { width: Width::W64, op: AluOp::Mov, dst: d, src: Operand::Reg(a) };
                        p[k + 1] = Instruction::Alu { width: Width::W64, op: AluOp::Add, dst: d, src: Operand::Reg(b) };
                        p[k + 2] = Instruction::Load { size, dst: y, src: d, offset: (k % 9) as i16 - 2 };
                    }
                    _ => {}
                }
            }
            pc += here;
        }
        p
    })
}

/// Superinstructions and threaded jumps change nothing but the number of dispatches: a random program
/// that ends within a budget (which turns them off) returns the same without one (which turns them on).
/// The two builds run different instances of the interpreter, whose stacks need not lie in the same
/// place: r10 is kept as the base of accesses only, and addresses in errors are compared relative to
/// the input.
#[test]
#[cfg_attr(miri, ignore = "thousands of programs: too slow to interpret under Miri")]
fn fused_code_runs_as_the_plain_code() {
    static RATE: common::Rate = common::Rate::new("fused_code_runs_as_the_plain_code");
    let strategy = (fusable_program(), proptest::collection::vec(any::<u8>(), 0..64));
    common::run_property(&RATE, 3000, strategy, |(p, mem)| {
        let p = p.into_iter().map(common::frame_pointer_as_base_only).collect();
        let Ok(program) = Program::from_instructions(p) else {
            RATE.skipped();
            return Ok(());
        };
        let helper = || Helper::new(5, "echo", HelperSig::scalars(1), |_, a| Ok(a[0]));
        let plain = Vm::builder(program.clone()).helper(helper()).budget(20_000).checked().build().expect("builds");
        // One buffer for both runs, its contents reset: results may hold its address (r1).
        let mut buf = mem.clone();
        let base = buf.as_ptr() as u64;
        let counted = common::oracle::relative(plain.execute(&mut buf), base);
        if matches!(counted, Err(ExecError::BudgetExhausted { .. })) {
            RATE.skipped();
            return Ok(());
        }
        RATE.ran();
        let after = buf.clone();
        buf.copy_from_slice(&mem);
        let fused = Vm::builder(program).helper(helper()).checked().build().expect("builds");
        prop_assert_eq!(common::oracle::relative(fused.execute(&mut buf), base), counted);
        prop_assert_eq!(buf, after);
        Ok(())
    });
}

/// Byte-copy loops, which the interpreter finishes with one `memmove` when it may (no budget), leave
/// the memory, the registers and the errors the loop leaves when run as written (with a budget): apart,
/// overlapping backwards, copying into their own source (run as written), through the stack, and
/// running out of the input. Under Miri this also checks the bulk copy's own memory accesses.
#[test]
fn copy_loops_finish_as_the_loop_would() {
    let input: Vec<u8> = (0..200u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
    // The loop copies from `src` to `dst` (offsets from the base), `n` bytes; then the program sums
    // the input and the frame, and returns the sum mixed with the loop's registers.
    let cases = [
        ("%r1", 0, 100, 64),
        ("%r1", 40, 10, 64),
        ("%r1", 10, 30, 64),
        ("%r1", 150, 0, 64),
        ("%r8", 0, 256, 200),
        ("%r8", 300, 0, 100),
    ];
    for (base, src, dst, n) in cases {
        let mut text = String::from("mov %r8, %r10\nadd %r8, -512\n");
        if base == "%r8" {
            // Fill the frame's low half from the input, then copy within the frame.
            text += "mov %r2, 0\nfill:\nmov %r3, %r1\nadd %r3, %r2\nldxb %r4, [%r3+0]\nmov %r3, %r8\nadd %r3, %r2\n\
                     stxb [%r3+0], %r4\nadd %r2, 1\njlt %r2, 200, fill\n";
        }
        text += &format!(
            "mov %r2, 0\nloop:\nmov %r3, {base}\nadd %r3, %r2\nldxb %r4, [%r3+{src}]\nstxb [%r3+{dst}], %r4\n\
             add %r2, 1\njeq %r2, {n}, out\nja loop\nout:\nsub %r3, {base}\nmov %r0, %r2\nlsh %r0, 16\n\
             xor %r0, %r3\nlsh %r0, 8\nxor %r0, %r4\nmov %r5, 0\nsum:\nmov %r3, %r1\nadd %r3, %r5\n\
             ldxb %r4, [%r3+0]\nmul %r0, 31\nadd %r0, %r4\nmov %r3, %r8\nadd %r3, %r5\nldxb %r4, [%r3+0]\n\
             mul %r0, 31\nadd %r0, %r4\nadd %r5, 1\njlt %r5, 200, sum\nexit"
        );
        let program = Program::from_asm(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let run = |budget: Option<u64>| {
            let mut b = Vm::builder(program.clone()).checked();
            if let Some(n) = budget {
                b = b.budget(n);
            }
            let mut mem = input.clone();
            let base = mem.as_ptr() as u64;
            let r = b.build().expect("builds").execute(&mut mem).map_err(|e| match e {
                // The input's address differs between the runs: the error's, relative to it.
                ExecError::OutOfBounds { pc, addr, len, write } => {
                    ExecError::OutOfBounds { pc, addr: addr.wrapping_sub(base), len, write }
                }
                other => other,
            });
            (r, mem)
        };
        let (want, want_mem) = run(Some(1_000_000));
        let (got, mem) = run(None);
        assert_eq!(got, want, "{src} -> {dst}, {n} bytes from {base}");
        assert_eq!(mem, want_mem, "{src} -> {dst}, {n} bytes from {base}");
        let out_of_bounds = matches!(want, Err(ExecError::OutOfBounds { .. }));
        assert_eq!(out_of_bounds, src + n > 200 && base == "%r1" || src + n > 512, "{src} -> {dst}");
    }
}

/// Each superinstruction of the interpreter computes what its instructions compute, on edge values:
/// runs with a budget (instruction by instruction) and without (fused) agree.
#[test]
fn superinstructions_compute_what_their_instructions_do() {
    let all_values = [
        0u64,
        1,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_ffff,
        0x1_0000_0000,
        0x1234_5678_9abc_def0,
        0x8000_0000_0000_0000,
        u64::MAX,
    ];
    // Under Miri (each build takes it half a second), two values, and two indices and offsets.
    let values: &[u64] = if cfg!(miri) { &[0x8000_0000, 0x1234_5678_9abc_def0] } else { &all_values };
    let indices: &[u64] = if cfg!(miri) { &[1, 16] } else { &[0, 1, 5, 12, 15, 16, u64::MAX] };
    let offsets: &[i16] = if cfg!(miri) { &[0, 3] } else { &[-1, 0, 3] };
    let run = |text: &str, mem: &mut [u8], budget: bool| {
        let program = Program::from_asm(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let b = Vm::builder(program).checked();
        let b = if budget { b.budget(1_000) } else { b };
        let base = mem.as_ptr() as u64;
        b.build().expect("builds").execute(mem).map_err(|e| match e {
            ExecError::OutOfBounds { pc, addr, len, write } => {
                ExecError::OutOfBounds { pc, addr: addr.wrapping_sub(base), len, write }
            }
            other => other,
        })
    };
    let mut cases = 0;
    for &v in values {
        let pairs = [
            ("mov", "and", "-1"),
            ("mov", "and", "0x7ff0f0f0"),
            ("mov", "and", "-256"),
            ("mov", "lsh", "0"),
            ("mov", "lsh", "31"),
            ("mov", "lsh", "32"),
            ("mov", "lsh", "63"),
            ("mov", "rsh", "1"),
            ("mov", "rsh", "32"),
            ("mov", "rsh", "63"),
            ("mov32", "and32", "-1"),
            ("mov32", "and32", "0x7ff0f0f0"),
            ("mov32", "lsh32", "1"),
            ("mov32", "lsh32", "31"),
            ("mov32", "rsh32", "1"),
            ("mov32", "rsh32", "31"),
            ("lsh", "rsh", "32"),
            ("lsh", "arsh", "32"),
        ];
        for (first, second, imm) in pairs {
            let text = if first == "lsh" {
                format!("lddw %r3, {v:#x}\nlsh %r3, 32\n{second} %r3, {imm}\nmov %r0, %r3\nexit")
            } else {
                format!("lddw %r2, {v:#x}\nmov %r3, -1\n{first} %r3, %r2\n{second} %r3, {imm}\nmov %r0, %r3\nexit")
            };
            assert_eq!(run(&text, &mut [], true), run(&text, &mut [], false), "{text}");
            cases += 1;
        }
    }
    // Array elements of each size, in and out of the input: the same value, or the same error (at the
    // load's instruction).
    for size in ["b", "h", "w", "dw"] {
        for &index in indices {
            for &offset in offsets {
                let text =
                    format!("lddw %r2, {index:#x}\nmov %r4, %r1\nadd %r4, %r2\nldx{size} %r0, [%r4{offset:+}]\nexit");
                let mut mem: Vec<u8> = (0..16u8).map(|i| i.wrapping_mul(29) ^ 0xc3).collect();
                let (a, b) = (run(&text, &mut mem.clone(), true), run(&text, &mut mem, false));
                assert_eq!(a, b, "{text}");
                cases += 1;
            }
        }
    }
    assert_eq!(cases, values.len() * 18 + 4 * indices.len() * offsets.len());
}
