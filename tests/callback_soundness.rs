//! Soundness of the verifier's callbacks, generated: a `bpf_loop` callback changes a counter in its
//! caller's stack through its argument (adds, subtracts, masks, sets, guards, stops early), and after
//! the loop the caller indexes a 32-byte stack array with the counter, guarded or not. Whatever the
//! verifier accepts must then run in checked mode (every access checked) on every iteration count
//! without an error, on both engines; and it must accept some of them (a generator it always refuses
//! tests nothing). The test prints how many cases ran, were accepted and were run.

use ebpf_vm::{Context, Engine, ExecError, Program, Vm};

/// A xorshift generator, so that every run tests the same programs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One operation of the callback on the counter in r3 (r1 is the iteration).
fn op(rng: &mut Rng, label: &mut u32) -> String {
    let k = rng.below(40) as i64 - 8;
    match rng.below(8) {
        0 | 1 => format!("add %r3, {k}"),
        2 => format!("sub %r3, {}", rng.below(5)),
        3 => format!("and %r3, {}", rng.below(64)),
        4 => format!("mov %r3, {}", rng.below(40)),
        5 => "add %r3, %r1".to_string(),
        6 => {
            *label += 1;
            format!("jgt %r3, {}, g{label}\nadd %r3, {}\ng{label}:", rng.below(40), rng.below(4))
        }
        _ => {
            *label += 1;
            format!("jlt %r3, {}, g{label}\nmov %r3, 0\ng{label}:", rng.below(40))
        }
    }
}

/// A program: the count from the input's first byte, the callback's operations, and the use of the
/// counter after the loop.
fn program(rng: &mut Rng) -> String {
    let mut label = 0;
    let ops: Vec<String> = (0..1 + rng.below(4)).map(|_| op(rng, &mut label)).collect();
    let ret = match rng.below(3) {
        0 => "mov %r0, 0".to_string(),
        1 => format!("mov %r0, 0\njne %r1, {}, keep\nmov %r0, 1\nkeep:", rng.below(6)),
        _ => "mov %r0, %r3\nand %r0, 1".to_string(),
    };
    let guard = match rng.below(3) {
        0 => String::new(),
        1 => format!("jgt %r1, {}, done", 28 + rng.below(8)),
        _ => format!("and %r1, {}", [7, 15, 31, 63][rng.below(4) as usize]),
    };
    format!(
        "stdw [%r10-8], {init}
        stdw [%r10-16], 0
        stdw [%r10-24], 0
        stdw [%r10-32], 0
        stdw [%r10-40], 0
        ldxb %r1, [%r1+0]
        lddw %r2, func(cb)
        mov %r3, %r10
        add %r3, -8
        mov %r4, 0
        call 181
        ldxdw %r1, [%r10-8]
        {guard}
        mov %r2, %r10
        add %r2, -40
        add %r2, %r1
        stb [%r2+0], 1
    done:
        mov %r0, 0
        exit
    cb:
        ldxdw %r3, [%r2+0]
        {ops}
        stxdw [%r2+0], %r3
        {ret}
        exit",
        init = rng.below(10),
        ops = ops.join("\n"),
    )
}

#[test]
fn what_callbacks_change_is_bounded_soundly() {
    const CASES: usize = 1500;
    let mut rng = Rng(0x5eed_cafe_f00d_1234);
    let (mut accepted, mut runs) = (0, 0);
    for case in 0..CASES {
        let text = program(&mut rng);
        let program = Program::from_asm(&text).unwrap_or_else(|e| panic!("case {case}: {e}\n{text}"));
        let build = |engine: Engine, verified: bool| {
            let b = Vm::builder(program.clone()).standard_helpers().context(Context::fixed(8)).engine(engine);
            if verified {
                b.verified().build()
            } else {
                b.checked().budget(10_000_000).build()
            }
        };
        if build(Engine::Interpreter, true).is_err() {
            continue;
        }
        accepted += 1;
        for engine in [Engine::Interpreter, Engine::Jit] {
            let vm = build(engine, false).expect("checked build");
            for count in [0u8, 1, 2, 3, 5, 8, 13, 31, 32, 33, 40, 64, 100, 255] {
                let r = vm.execute(&mut [count, 0, 0, 0, 0, 0, 0, 0]);
                runs += 1;
                assert!(
                    !matches!(r, Err(ExecError::OutOfBounds { .. })) && r.is_ok(),
                    "case {case}, {engine:?}, count {count}: verified, but the checked run gives {r:?}\n{text}"
                );
            }
        }
    }
    println!("callback soundness: {CASES} cases, {accepted} accepted, {runs} checked runs");
    assert!(accepted * 10 >= CASES, "only {accepted} of {CASES} accepted");
    assert!(accepted < CASES, "every case accepted: the generator makes no unsafe program");
}
