//! Any bytes as bytecode, verified: the verifier must end (within its complexity limit) with a proof
//! or a typed error, never panic; and what it accepts must run in checked mode without a memory error,
//! with the same result as the unchecked run the proof allows, on every input that fits the context.
#![no_main]

use std::sync::Arc;

use ebpf_vm::link::Linked;
use ebpf_vm::maps::{self, MapDef, MapType, BPF_F_RDONLY_PROG};
use ebpf_vm::verifier::Options;
use ebpf_vm::{Context, Engine, Env, ExecError, Program, Verifier, Vm};
use libfuzzer_sys::fuzz_target;

/// The environment every program links against: the standard helpers and one map of each kind.
fn env(context: Context) -> Env {
    let mut env = Env::new();
    env.add_standard_helpers();
    let defs = [
        MapDef { map_type: MapType::Array, key_size: 4, value_size: 16, max_entries: 4, flags: 0 },
        MapDef { map_type: MapType::Hash, key_size: 4, value_size: 8, max_entries: 8, flags: 0 },
        MapDef { map_type: MapType::RingBuf, key_size: 0, value_size: 0, max_entries: 4096, flags: 0 },
        MapDef { map_type: MapType::Array, key_size: 4, value_size: 8, max_entries: 1, flags: BPF_F_RDONLY_PROG },
    ];
    for def in defs {
        env.add_map(maps::create(def).expect("map"));
    }
    env.set_print_sink(Arc::new(|_| {}));
    env.set_context(context);
    env
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, code)) = data.split_first() else { return };
    let Ok(program) = Program::from_bytes(code) else { return };
    let context = match selector % 3 {
        0 => Context::Buffer,
        1 => Context::fixed(u32::from(selector >> 2)),
        _ => Context::Fixed { size: 32, read_only: std::iter::once(0..8).collect() },
    };
    let Ok(linked) = Linked::new(program.clone(), Vec::new(), env(context.clone())) else { return };
    let mut options = Options::default();
    options.max_processed = 200_000;
    if Verifier::with_options(options).verify(&Arc::new(linked)).is_err() {
        return;
    }
    // Accepted: every input that fits must run without a memory error, verified equal to checked.
    let lens: Vec<usize> = match &context {
        Context::Fixed { size, .. } => vec![*size as usize],
        _ => vec![0, 1, 8, 64],
    };
    for engine in [Engine::Interpreter, Engine::Jit] {
        let build = |verified: bool| {
            // Fresh maps for each, so that both runs start from the same state.
            let b = Vm::builder(program.clone()).env(self::env(context.clone())).engine(engine).verifier_options(options);
            if verified { b.verified() } else { b.checked().budget(1 << 26) }.build()
        };
        let (Ok(checked), Ok(verified)) = (build(false), build(true)) else {
            panic!("an accepted program does not build");
        };
        for &len in &lens {
            let input: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(37) ^ selector).collect();
            let (mut a, mut b) = (input.clone(), input);
            let ra = checked.execute(&mut a);
            match &ra {
                Err(ExecError::OutOfBounds { .. } | ExecError::BudgetExhausted { .. }) => {
                    panic!("verified program failed in checked mode: {ra:?}\n{}", program.disassemble())
                }
                Err(ExecError::Helper { source, .. }) if source.to_string().contains("outside") => {
                    panic!("verified program passed a bad pointer: {ra:?}\n{}", program.disassemble())
                }
                _ => {}
            }
            let rb = verified.execute(&mut b);
            if program.instructions().iter().any(|i| matches!(i, ebpf_vm::isa::Instruction::Call { id: 5 | 7 | 8 | 125 })) {
                continue; // time and random numbers differ between runs
            }
            assert_eq!(format!("{ra:?}"), format!("{rb:?}"), "{}", program.disassemble());
            assert_eq!(a, b);
        }
    }
});
