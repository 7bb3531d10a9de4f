//! bpf-to-bpf calls in verified code, where the JIT leaves out what the verifier proves: the depth test
//! before a call (verified calls nest at most as deep as the stack has frames) and, after a call of a
//! function that calls nothing, the test of the status (nothing in it can fail). A function that calls
//! a helper still reports the helper's failure, as on the interpreter.
#![cfg(feature = "jit")]

use ebpf_vm::helpers::{Helper, HelperError, HelperSig};
use ebpf_vm::{Context, Engine, Env, Program, Vm};

/// What `text` returns, verified, on each engine, with helper 100 that fails when its argument is 7.
fn outcomes(text: &str) -> Vec<String> {
    let program = Program::from_asm(text).unwrap_or_else(|e| panic!("{e}"));
    [Engine::Interpreter, Engine::Jit]
        .into_iter()
        .map(|engine| {
            let mut env = Env::new();
            env.add_helper(Helper::new(100, "fails_on_7", HelperSig::scalars(1), |_, a| {
                if a[0] == 7 {
                    Err(HelperError::Failed("seven".into()))
                } else {
                    Ok(a[0] * 2)
                }
            }));
            env.set_context(Context::fixed(8));
            let vm = Vm::builder(program.clone()).env(env).engine(engine).verified().build().expect("verifies");
            format!("{:?}", vm.execute(&mut [0u8; 8]))
        })
        .collect()
}

#[test]
fn leaf_calls_return_their_values() {
    let text =
        "mov %r6, 0\nmov %r7, 0\nloop:\nmov %r1, %r6\ncall local sq\nadd %r7, %r0\nadd %r6, 1\njlt %r6, 10, loop\n\
                mov %r0, %r7\nexit\nsq:\nmov %r0, %r1\nmul %r0, %r1\nexit";
    let got = outcomes(text);
    assert_eq!(got, vec!["Ok(285)".to_string(); 2]);
}

#[test]
fn a_called_function_still_reports_its_helpers_failure() {
    for (arg, ok) in [(3, true), (7, false)] {
        let text =
            format!("mov %r1, {arg}\ncall local f\nadd %r0, 1\nexit\nf:\ncall local g\nexit\ng:\ncall 100\nexit");
        let got = outcomes(&text);
        assert_eq!(got[0], got[1], "argument {arg}: the JIT and the interpreter differ");
        assert_eq!(got[0].starts_with("Ok("), ok, "argument {arg}: {}", got[0]);
    }
}

/// What `text` gives in checked mode on each engine, with the standard helpers and a budget.
fn checked_outcomes(text: &str) -> Vec<String> {
    let program = Program::from_asm(text).unwrap_or_else(|e| panic!("{e}"));
    [Engine::Interpreter, Engine::Jit]
        .into_iter()
        .map(|engine| {
            let vm = Vm::builder(program.clone()).standard_helpers().engine(engine).checked().budget(100_000);
            format!("{:?}", vm.build().expect("builds").execute(&mut [0u8; 8]))
        })
        .collect()
}

/// `bpf_loop` in checked mode, where nothing proved the callback: a value that is no function of the
/// program is refused by the helper, a callback that loops over itself runs out of frames, and a
/// callback that fails stops the program; alike on both engines.
#[test]
fn bpf_loop_callbacks_checked_at_run_time() {
    let not_a_function = "mov %r1, 2\nlddw %r2, 0xfffffe0000000003\nmov %r3, 0\nmov %r4, 0\ncall 181\nexit\n\
                          cb:\nmov %r0, 0\nexit\nf:\nlddw %r1, func(cb)\nexit";
    let got = checked_outcomes(not_a_function);
    assert!(got[0].contains("Helper { pc: 5, id: 181") && got[0].contains("not a callback"), "{got:?}");
    assert_eq!(got[0], got[1]);
    let recursive = "mov %r1, 2\nlddw %r2, func(cb)\nmov %r3, 0\nmov %r4, 0\ncall 181\nexit\n\
                     cb:\nmov %r1, 2\nlddw %r2, func(cb)\nmov %r3, 0\nmov %r4, 0\ncall 181\nexit";
    let got = checked_outcomes(recursive);
    assert_eq!(got, vec!["Err(CallDepthExceeded { pc: 12 })".to_string(); 2]);
    let out_of_bounds = "mov %r1, 5\nlddw %r2, func(cb)\nmov %r3, 0\nmov %r4, 0\ncall 181\nexit\n\
                         cb:\nstdw [%r2+0], 1\nmov %r0, 0\nexit";
    let got = checked_outcomes(out_of_bounds);
    assert!(got[0].starts_with("Err(OutOfBounds { pc: 7,"), "{got:?}");
    assert_eq!(got[0], got[1]);
    let budget = "mov %r1, 100000\nlddw %r2, func(cb)\nmov %r3, 0\nmov %r4, 0\ncall 181\nexit\ncb:\nmov %r0, 0\nexit";
    let got = checked_outcomes(budget);
    assert!(got[0].starts_with("Err(BudgetExhausted"), "{got:?}");
    assert_eq!(got[0], got[1]);
}

/// `bpf_for_each_map_elem` in checked mode, alike on both engines: a map that cannot be walked, or a
/// number that is no map, is refused by the helper; a callback that writes past its value stops the
/// program; the walk of a one-entry array calls the callback once. Each engine has a map of its own, so
/// an address in the value is shown relative to it (`value+N`).
#[test]
fn map_walks_checked_at_run_time() {
    use ebpf_vm::maps::{self, MapDef, MapType};
    let outcomes = |text: &str, map: MapDef| -> Vec<String> {
        let program = Program::from_asm(text).unwrap_or_else(|e| panic!("{e}"));
        [Engine::Interpreter, Engine::Jit]
            .into_iter()
            .map(|engine| {
                let m = maps::create(map).expect("map");
                let value = m.lookup(&0u32.to_ne_bytes(), 0).map(|p| p as u64);
                let vm =
                    Vm::builder(program.clone()).standard_helpers().map(m).engine(engine).checked().budget(100_000);
                let outcome = format!("{:?}", vm.build().expect("builds").execute(&mut [0u8; 8]));
                match value {
                    Some(v) => (0..64).fold(outcome, |o, off| {
                        o.replace(&format!("addr: {},", v + off), &format!("addr: value+{off},"))
                    }),
                    None => outcome,
                }
            })
            .collect()
    };
    let array = MapDef { map_type: MapType::Array, key_size: 4, value_size: 8, max_entries: 1, flags: 0 };
    let queue = MapDef { map_type: MapType::Queue, key_size: 0, value_size: 8, max_entries: 4, flags: 0 };
    let walk =
        |r1: &str, cb: &str| format!("{r1}\nlddw %r2, func(cb)\nmov %r3, 0\nmov %r4, 0\ncall 164\nexit\ncb:\n{cb}");
    let ok = walk("lddw %r1, map_idx(0)", "ldxw %r0, [%r2+0]\nldxdw %r0, [%r3+0]\nmov %r0, 0\nexit");
    assert_eq!(outcomes(&ok, array), vec!["Ok(1)".to_string(); 2]);
    let got = outcomes(&ok, queue);
    assert!(got[0].contains("Helper { pc: 6, id: 164") && got[0].contains("can be iterated"), "{got:?}");
    assert_eq!(got[0], got[1]);
    let got = outcomes(&walk("mov %r1, 5", "mov %r0, 0\nexit"), array);
    assert!(got[0].contains("Helper { pc: 5, id: 164"), "{got:?}");
    assert_eq!(got[0], got[1]);
    let got = outcomes(&walk("lddw %r1, map_idx(0)", "stdw [%r3+8], 1\nmov %r0, 0\nexit"), array);
    assert!(got[0].starts_with("Err(OutOfBounds { pc: 8, addr: value+8, len: 8, write: true"), "{got:?}");
    assert_eq!(got[0], got[1]);
}
