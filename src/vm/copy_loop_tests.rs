//! Byte-copy loops (see `program::copy_loop`) finished at once give what running them as written
//! gives: the same result, registers, memory and error, on both engines, in checked, verified and
//! unchecked mode. The reference is the interpreter with a budget, which runs every loop as written.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use super::{Engine, Vm};
use crate::link::{Context, ExecError};
use crate::program::copy_loop::{self, BULK_COPIES};
use crate::program::Program;

/// Bytes of input; the stack variant copies within the entry frame.
const INPUT: usize = 256;

/// One generated case: the loop's shape and where it copies.
#[derive(Debug, Clone)]
struct Case {
    form: u8,
    stack: bool,
    src: i16,
    dst: i16,
    n: i64,
    start: i64,
    wide: bool,
    cond: u8,
}

fn case() -> impl Strategy<Value = Case> {
    (
        0u8..6,
        any::<bool>(),
        prop_oneof![3 => 0i16..200, 1 => -8i16..300],
        prop_oneof![3 => 0i16..200, 1 => -8i16..300],
        prop_oneof![Just(0i64), Just(1), Just(15), Just(16), Just(17), 2..300i64, 16..100i64],
        prop_oneof![Just(0i64), Just(-5), Just(0x7fff_fff0), Just(-16), Just(i32::MAX as i64 - 3)],
        any::<bool>(),
        0u8..5,
    )
        .prop_map(|(form, stack, src, dst, n, start, wide, cond)| Case {
            form,
            stack,
            src,
            dst,
            n,
            start,
            wide,
            cond,
        })
}

/// The program of `c`: sets up, runs the loop, then returns a mix of every register the loop touches
/// (pointers relative to the base, so that runs on different buffers agree).
fn text(c: &Case) -> String {
    let base = if c.stack { "%r8" } else { "%r1" };
    let mut t = String::new();
    if c.stack {
        t += "mov %r8, %r10\nadd %r8, -512\n";
        for k in 1..=64 {
            t += &format!("stdw [%r10-{}], {}\n", 8 * k, 0x0102_0304 * k);
        }
    }
    // Registers a form leaves alone still hold an address relative to the base at the end.
    for r in ["%r3", "%r5", "%r6", "%r7"] {
        t += &format!("mov {r}, {base}\n");
    }
    let (a, b) = (c.src, c.dst);
    let alu = if c.wide { "" } else { "32" };
    let pointers = format!("mov %r6, {base}\nadd %r6, {a}\nmov %r7, {base}\nadd %r7, {b}\n");
    let body = "ldxb %r4, [%r6+0]\nstxb [%r7+0], %r4\nadd %r6, 1\nadd %r7, 1\n";
    match c.form {
        // As clang compiles `for (i = 0; i != n; i++) q[i] = p[i]` over one base: the test leaves the
        // loop, a `ja` closes it.
        0 => {
            t += &format!(
                "mov %r2, 0\nloop:\nmov %r3, {base}\nadd %r3, %r2\nldxb %r4, [%r3{a:+}]\nstxb [%r3{b:+}], %r4\n\
                 add %r2, 1\njeq %r2, {}, out\nja loop\nout:\n",
                c.n
            );
        }
        // Two pointers and a counter down to zero, tested on the way back.
        1 => {
            t += &pointers;
            t += &format!("mov{alu} %r2, {}\nloop:\n{body}add{alu} %r2, -1\njne{alu} %r2, 0, loop\n", c.n);
        }
        // Pointers up to an end pointer, compared either way round.
        2 => {
            t += &pointers;
            t += &format!("mov %r5, %r6\nadd %r5, {}\nloop:\n{body}", c.n);
            t += ["jgt %r5, %r6, loop\n", "jlt %r6, %r5, loop\n", "jne %r6, %r5, loop\n", "jsgt %r5, %r6, loop\n"]
                [c.cond as usize % 4];
        }
        // A counter up from `start` to a constant, exclusive or inclusive, signed or not.
        3 => {
            t += &pointers;
            let (cond, last) = [("jlt", 0), ("jle", 1), ("jslt", 0), ("jsle", 1), ("jne", 0)][c.cond as usize];
            let bound = (c.start + c.n - last) as i32;
            t += &format!("mov{alu} %r2, {}\nloop:\n{body}add{alu} %r2, 1\n{cond}{alu} %r2, {bound}, loop\n", c.start);
        }
        // A counter down from `start`.
        4 => {
            t += &pointers;
            let (cond, last) = [("jgt", 0), ("jge", 1), ("jsgt", 0), ("jsge", 1), ("jne", 0)][c.cond as usize];
            let bound = (c.start - c.n + last) as i32;
            t += &format!("mov{alu} %r2, {}\nloop:\n{body}add{alu} %r2, -1\n{cond}{alu} %r2, {bound}, loop\n", c.start);
        }
        // One pointer, both offsets on it, the pointer stepped before the store.
        _ => {
            t += &format!(
                "mov %r6, {base}\nmov %r2, 0\nloop:\nldxb %r4, [%r6{a:+}]\nadd %r6, 1\nstxb [%r6{:+}], %r4\n\
                 add %r2, 1\njlt %r2, {}, loop\n",
                b - 1,
                c.n
            );
        }
    }
    // Everything the loop leaves behind, pointers relative to the base.
    for r in ["%r3", "%r5", "%r6", "%r7"] {
        t += &format!("sub {r}, {base}\n");
    }
    t += "mov %r0, %r2\nlsh %r0, 8\nxor %r0, %r3\nlsh %r0, 8\nxor %r0, %r4\nlsh %r0, 8\nxor %r0, %r5\n\
          lsh %r0, 8\nxor %r0, %r6\nlsh %r0, 8\nxor %r0, %r7\n";
    if c.stack {
        // The frame's bytes, folded in.
        t += "mov %r9, 0\nfold:\nmov %r3, %r8\nadd %r3, %r9\nldxb %r4, [%r3+0]\nmul %r0, 31\nadd %r0, %r4\n\
              add %r9, 1\njlt %r9, 512, fold\n";
    }
    t + "exit\n"
}

/// The result of `vm` on a copy of `input`, with addresses in errors relative to the buffer, the
/// buffer afterwards, and whether a bulk copy was made.
fn run(vm: &Vm, input: &[u8]) -> (Result<u64, ExecError>, Vec<u8>, bool) {
    let mut buf = input.to_vec();
    let base = buf.as_ptr() as u64;
    let before = BULK_COPIES.with(|c| c.get());
    let r = vm.execute(&mut buf).map_err(|e| match e {
        // Stack addresses differ between executions: only the instruction and the kind are compared.
        ExecError::OutOfBounds { pc, addr, len, write } => {
            let off = addr.wrapping_sub(base);
            ExecError::OutOfBounds { pc, addr: if off < 1 << 16 { off } else { 0 }, len, write }
        }
        other => other,
    });
    let bulk = BULK_COPIES.with(|c| c.get()) > before;
    (r, buf, bulk)
}

#[test]
fn copy_loops_finished_at_once_match_the_loop() {
    let config = Config { cases: 1500, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]));
    let counts = core::cell::RefCell::new([0usize; 9]);
    let input: Vec<u8> = (0..INPUT).map(|i| (i * 7 + 3) as u8).collect();
    runner
        .run(&case(), |c| {
            let text = text(&c);
            let program = Program::from_asm(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            // Loops that end only by wrapping around (`>= 0` counting down) are not copy loops.
            let recognised = copy_loop::find(&program).len();
            prop_assert!(recognised <= 1, "{}", text);
            let build = |engine: Engine, configure: &dyn Fn(super::VmBuilder) -> super::VmBuilder| {
                let input = Context::Fixed { size: INPUT as u32, read_only: Vec::new() };
                configure(Vm::builder(program.clone()).engine(engine).context(input)).build()
            };
            let reference = build(Engine::Interpreter, &|b| b.checked().budget(10_000_000)).expect("builds");
            let (want, want_mem, bulk) = run(&reference, &input);
            prop_assert!(!bulk, "a budgeted run copies as written");
            prop_assert!(!matches!(want, Err(ExecError::BudgetExhausted { .. })), "{}", text);
            let mut counts = counts.borrow_mut();
            counts[0] += 1;
            for (k, engine) in [Engine::Interpreter, Engine::Jit].into_iter().enumerate() {
                let checked = build(engine, &|b| b.checked()).expect("builds");
                let (got, mem, bulk) = run(&checked, &input);
                prop_assert_eq!(&got, &want, "{:?} checked\n{}", engine, text);
                prop_assert_eq!(&mem, &want_mem, "{:?} checked: memory\n{}", engine, text);
                counts[1 + k] += bulk as usize;
                if let Ok(verified) = build(engine, &|b| b.verified()) {
                    let (got, mem, bulk) = run(&verified, &input);
                    prop_assert_eq!(&got, &want, "{:?} verified\n{}", engine, text);
                    prop_assert_eq!(&mem, &want_mem, "{:?} verified: memory\n{}", engine, text);
                    counts[3 + k] += 1;
                    counts[5 + k] += bulk as usize;
                }
                if want.is_ok() {
                    // SAFETY: the reference run of this program on this input made only accesses
                    // inside the input and the frame, and this run takes the same path.
                    let unchecked = build(engine, &|b| unsafe { b.unchecked() }).expect("builds");
                    let (got, mem, _) = run(&unchecked, &input);
                    prop_assert_eq!(&got, &want, "{:?} unchecked\n{}", engine, text);
                    prop_assert_eq!(&mem, &want_mem, "{:?} unchecked: memory\n{}", engine, text);
                }
            }
            counts[7] += want.is_err() as usize;
            counts[8] += recognised;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let [ran, bulk_interp, bulk_jit, verified_interp, _, bulk_verified_interp, bulk_verified_jit, errors, recognised] =
        *counts.borrow();
    std::eprintln!(
        "copy loops: {ran} cases, {recognised} recognised; finished at once in checked mode by the interpreter {bulk_interp}, the JIT \
         {bulk_jit}; {verified_interp} verified, finished at once {bulk_verified_interp} / {bulk_verified_jit}; \
         {errors} out of bounds"
    );
    // Every path is exercised: bulk copies and loops run as written, errors, verified programs.
    assert!(ran >= 1500 && recognised >= ran * 3 / 4, "{ran} {recognised}");
    assert!(bulk_interp >= ran / 5 && bulk_jit >= ran / 5, "{bulk_interp} {bulk_jit}");
    assert!(bulk_interp < ran && bulk_jit < ran);
    assert!(errors >= ran / 20, "{errors}");
    assert!(verified_interp >= ran / 20 && bulk_verified_interp > 0 && bulk_verified_jit > 0);
}
