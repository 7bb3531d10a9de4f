//! Compiled code lives in memory that is given back when a program is dropped and reused for the next
//! (on x86_64 the pages are kept in a pool). A program built after others were dropped must run its own
//! code: these build, run and drop many programs, each returning a value of its own, on one thread and
//! on several at once, with some kept alive while others are dropped, and a program whose code is
//! larger than a pooled chunk.
#![cfg(feature = "jit")]

use ebpf_vm::{Context, Engine, Program, Vm};

/// A program returning `value` after a little work on it (so that the code is not only a constant),
/// built for the JIT.
fn returning(value: u32) -> Vm {
    let text = format!("mov %r0, {value}\nmov %r2, %r0\nxor %r2, 0x5a5a\nxor %r2, 0x5a5a\nmov %r0, %r2\nexit");
    let program = Program::from_asm(&text).expect("assembles");
    Vm::builder(program).engine(Engine::Jit).build().expect("builds")
}

/// A loop adding `0..n` to `value`: a function with branches, compiled the other way.
fn looping(value: u32, n: u32) -> Vm {
    let text = format!("mov %r0, {value}\nmov %r2, 0\nadd %r0, %r2\nadd %r2, 1\njlt %r2, {n}, -3\nexit");
    let program = Program::from_asm(&text).expect("assembles");
    Vm::builder(program).engine(Engine::Jit).build().expect("builds")
}

fn run(vm: &Vm) -> u64 {
    vm.execute(&mut []).expect("runs")
}

#[test]
fn programs_built_after_others_were_dropped_run_their_own_code() {
    let mut ran = 0;
    for i in 0..400u32 {
        let vm = if i % 2 == 0 { returning(i) } else { looping(i, 10) };
        let expected = if i % 2 == 0 { u64::from(i) } else { u64::from(i) + 45 };
        assert_eq!(run(&vm), expected, "program {i}");
        ran += 1;
    }
    assert_eq!(ran, 400);
}

#[test]
fn programs_kept_alive_keep_their_code_while_others_come_and_go() {
    let kept: Vec<(u32, Vm)> = (0..20).map(|i| (1000 + i, returning(1000 + i))).collect();
    for round in 0..10u32 {
        for i in 0..20u32 {
            let value = round * 100 + i;
            assert_eq!(run(&returning(value)), u64::from(value));
        }
        for (value, vm) in &kept {
            assert_eq!(run(vm), u64::from(*value), "kept program {value}, round {round}");
        }
    }
}

#[test]
fn threads_build_run_and_drop_programs_at_once() {
    let runs: u32 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4u32)
            .map(|t| {
                s.spawn(move || {
                    let mut alive = std::collections::VecDeque::new();
                    let mut runs = 0;
                    for i in 0..150u32 {
                        let value = t * 10_000 + i;
                        alive.push_back((value, if i % 3 == 0 { looping(value, 5) } else { returning(value) }, i % 3));
                        if alive.len() > 4 {
                            alive.pop_front();
                        }
                        for (value, vm, kind) in &alive {
                            let expected = u64::from(*value) + if *kind == 0 { 10 } else { 0 };
                            assert_eq!(run(vm), expected, "thread {t}");
                            runs += 1;
                        }
                    }
                    runs
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("no panic")).sum()
    });
    // 150 builds a thread; after each, the (up to) four newest programs run.
    assert_eq!(runs, 4 * (1 + 2 + 3 + 4 * 147));
}

#[test]
fn code_larger_than_a_pooled_chunk_runs_and_is_given_back() {
    // 3,000 loads from the input, each added and multiplied: some 40 KiB of checked code.
    let mut text = String::from("mov %r0, 0\n");
    for i in 0..3000 {
        text.push_str(&format!("ldxb %r2, [%r1+{}]\nadd %r0, %r2\nmul %r0, 3\n", i % 64));
    }
    text.push_str("exit");
    let program = Program::from_asm(&text).expect("assembles");
    let mut input: Vec<u8> = (0..64u8).map(|b| b.wrapping_mul(37)).collect();
    let expected = (0..3000).fold(0u64, |acc, i| acc.wrapping_add(u64::from(input[i % 64])).wrapping_mul(3));
    for _ in 0..3 {
        let vm = Vm::builder(program.clone())
            .engine(Engine::Jit)
            .context(Context::fixed(64))
            .checked()
            .build()
            .expect("builds");
        assert_eq!(vm.execute(&mut input).expect("runs"), expected);
        // A small program after it: its chunk came from the pool or is new, never the large mapping.
        assert_eq!(run(&returning(7)), 7);
    }
}
