//! Checked code skips the bounds checks of accesses it knows to be in bounds: through a register set to
//! r10 plus a constant inside the current frame, or through the non-null result of an array lookup or
//! hash lookup inside the value. Each case here is an access that looks like one of those but is not
//! (past the frame or the value, a null result, a register changed on another way into the block, a
//! value programs may not write): the JIT must stop it with the interpreter's error. The cases that
//! are in bounds must return the interpreter's result.
#![cfg(feature = "jit")]

use ebpf_vm::maps::{self, MapDef, MapType, BPF_F_RDONLY_PROG};
use ebpf_vm::{Context, Engine, Env, Program, Vm};

/// Runs `text` checked on both engines with array map 0 (4 entries of 8 bytes, `flags`) and hash map 1
/// (4-byte keys, 8-byte values, key 1 present); both outcomes, as text.
fn outcomes(text: &str, flags: u32) -> (String, String) {
    let program = Program::from_asm(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let run = |engine| {
        let array =
            maps::create(MapDef { map_type: MapType::Array, key_size: 4, value_size: 8, max_entries: 4, flags })
                .expect("array");
        let hash = maps::create(MapDef { map_type: MapType::Hash, key_size: 4, value_size: 8, max_entries: 4, flags })
            .expect("hash");
        hash.update(&1u32.to_ne_bytes(), &7u64.to_ne_bytes(), 0, 0).expect("insert");
        let mut env = Env::new();
        env.add_standard_helpers();
        env.add_map(array);
        env.add_map(hash);
        env.set_context(Context::fixed(16));
        let vm = Vm::builder(program.clone()).env(env).engine(engine).checked().build().expect("builds");
        // Addresses differ between engines (each has its own stack): the error without them.
        // On the heap: an address computed from the input must not reach one engine's stack and not the
        // other's (both are on the host's stack, in different places).
        let mut input = vec![0u8; 16];
        let outcome = format!("{:?}", vm.execute(&mut input).map_err(|e| e.to_string()));
        match outcome.find(" at 0x") {
            Some(at) => {
                let end = outcome[at + 6..].find(' ').map_or(outcome.len(), |e| at + 6 + e);
                format!("{}{}", &outcome[..at], &outcome[end..])
            }
            None => outcome,
        }
    };
    (run(Engine::Interpreter), run(Engine::Jit))
}

/// A lookup of key `key` in map `map`, the result in r0.
fn lookup(map: u32, key: i32) -> String {
    format!("stw [%r10-4], {key}\nmov %r2, %r10\nadd %r2, -4\nlddw %r1, map_fd({map})\ncall 1\n")
}

#[test]
fn accesses_that_only_look_known_are_checked() {
    let bad = [
        // Frame addresses: past the frame's top and below its bottom.
        ("past the frame", "mov %r1, %r10\nadd %r1, -4\nldxdw %r0, [%r1+0]\nexit".to_string()),
        ("below the frame", "mov %r1, %r10\nadd %r1, -520\nstdw [%r1+0], 1\nmov %r0, 0\nexit".to_string()),
        // A register that is a frame address on one way into a block and past the input on the other
        // (a store on that way keeps the jump a jump).
        (
            "two ways in",
            "mov %r2, %r10\nadd %r2, -8\njeq %r1, 0, +3\nmov %r2, %r1\nadd %r2, 4096\nstdw [%r10-16], 1\nldxdw %r0, [%r2+0]\nexit"
                .to_string(),
        ),
        // Lookup results: past the value, before it, null, and a write to a read-only value (the first
        // and last values of the map, so that the bytes past them are outside it).
        ("past an array value", format!("{}jeq %r0, 0, +1\nldxdw %r0, [%r0+4]\nexit", lookup(0, 3))),
        ("before an array value", format!("{}jne %r0, 0, +1\nexit\nldxw %r0, [%r0-4]\nexit", lookup(0, 0))),
        ("a null array result", format!("{}ldxdw %r0, [%r0+0]\nexit", lookup(0, 9))),
        ("an untested array result", format!("{}jeq %r0, 0, +0\nldxdw %r0, [%r0+0]\nexit", lookup(0, 9))),
        ("past a hash value", format!("{}jeq %r0, 0, +1\nldxdw %r0, [%r0+4096]\nexit", lookup(1, 1))),
        ("a null hash result", format!("{}ldxdw %r0, [%r0+0]\nexit", lookup(1, 2))),
    ];
    for (name, text) in &bad {
        let (interpreted, compiled) = outcomes(text, 0);
        assert!(interpreted.starts_with("Err("), "{name}: the interpreter ran it: {interpreted}");
        assert_eq!(compiled, interpreted, "{name}");
    }
    let read_only = format!("{}jeq %r0, 0, +1\nstdw [%r0+0], 1\nmov %r0, 0\nexit", lookup(0, 1));
    let (interpreted, compiled) = outcomes(&read_only, BPF_F_RDONLY_PROG);
    assert!(interpreted.starts_with("Err("), "a write to a read-only value: {interpreted}");
    assert_eq!(compiled, interpreted, "a write to a read-only value");
}

#[test]
fn accesses_known_in_bounds_do_what_the_interpreter_does() {
    let good = [
        ("the frame's top", "mov %r1, %r10\nadd %r1, -8\nstdw [%r1+0], 5\nldxdw %r0, [%r1+0]\nexit".to_string()),
        ("the frame's bottom", "mov %r1, %r10\nsub %r1, 512\nstdw [%r1+0], 6\nldxdw %r0, [%r1+0]\nexit".to_string()),
        (
            "an array value",
            format!("{}jeq %r0, 0, +3\nstdw [%r0+0], 3\nldxdw %r1, [%r0+0]\nmov %r0, %r1\nexit", lookup(0, 3)),
        ),
        (
            "a hash value",
            format!("{}jne %r0, 0, +1\nexit\nmov %r1, %r0\nadd %r1, 4\nldxw %r0, [%r1-4]\nexit", lookup(1, 1)),
        ),
        ("a missing hash key", format!("{}jne %r0, 0, +2\nmov %r0, 99\nexit\nldxdw %r0, [%r0+0]\nexit", lookup(1, 2))),
    ];
    let want = ["Ok(5)", "Ok(6)", "Ok(3)", "Ok(7)", "Ok(99)"];
    for ((name, text), want) in good.iter().zip(want) {
        let (interpreted, compiled) = outcomes(text, 0);
        assert_eq!(interpreted, want, "{name}");
        assert_eq!(compiled, interpreted, "{name}");
    }
}

/// A small generator of programs that move r10 around: address registers r1-r5 take r10, each other,
/// constants and constant adds (some past the frame), data registers r6-r9 take loads through them and
/// constants; stores of constants go through the address registers, forward jumps on data skip parts.
/// The checked JIT must stop each program where the checked interpreter does (same instruction, same
/// access) or return what it returns.
#[test]
fn generated_frame_address_programs_run_as_interpreted() {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let (mut ran, mut stopped, mut returned) = (0, 0, 0);
    for _ in 0..3_000 {
        let len = 4 + next(24) as usize;
        let mut lines = Vec::new();
        for i in 0..len {
            let a = 1 + next(5);
            let b = 1 + next(5);
            let d = 6 + next(4);
            let size = ["b", "h", "w", "dw"][next(4) as usize];
            // Mostly inside the frame, sometimes past its top (adds and subtractions take it past the
            // bottom).
            let off = next(72) as i64 - 64;
            let line = match next(24) {
                0..=3 => format!("mov %r{a}, %r10"),
                4..=6 => format!("add %r{a}, {}", next(48) as i64 - 40),
                7 => format!("sub %r{a}, {}", next(48) as i64 - 8),
                8..=9 => format!("mov %r{a}, %r{b}"),
                10..=15 => format!("ldx{size} %r{d}, [%r{a}{off:+}]"),
                16..=19 => format!("st{size} [%r{a}{off:+}], {}", next(1000)),
                20..=22 if i + 2 < len => format!("jeq %r{d}, {}, +{}", next(3), 1 + next((len - i - 2) as u64)),
                _ => format!("mov %r{a}, {}", next(4096)),
            };
            lines.push(line);
        }
        lines.push("mov %r0, %r6\nadd %r0, %r7\nadd %r0, %r8\nadd %r0, %r9\nexit".to_string());
        // Data registers start at 0, address registers at the frame's top.
        let start = "mov %r6, 0\nmov %r7, 0\nmov %r8, 0\nmov %r9, 0\nmov %r1, %r10\nmov %r2, %r10\nmov %r3, %r10
            mov %r4, %r10\nmov %r5, %r10";
        let text = format!("{start}\n{}", lines.join("\n"));
        let (interpreted, compiled) = outcomes(&text, 0);
        assert_eq!(compiled, interpreted, "\n{text}");
        ran += 1;
        if interpreted.starts_with("Err(") {
            stopped += 1;
        } else {
            returned += 1;
        }
    }
    assert_eq!(ran, 3_000);
    // Both outcomes often enough for the comparison to mean something.
    assert!(stopped > 300 && returned > 300, "stopped {stopped}, returned {returned}");
}
