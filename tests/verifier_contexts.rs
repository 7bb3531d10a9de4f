//! The three context descriptions a host can give the verifier: a buffer whose length is in r2, a
//! fixed-size context with read-only ranges, and a packet-style struct holding packet pointers. Each is
//! proven against and run on both engines, verified and checked, with the same results.

use ebpf_vm::verifier::{RegionKind, VerifyErrorKind};
use ebpf_vm::{BuildError, Context, Engine, Error, ExecError, Program, Vm};

fn engines() -> Vec<Engine> {
    vec![Engine::Interpreter, Engine::Jit]
}

fn build(text: &str, context: &Context, engine: Engine, verified: bool) -> Result<Vm, BuildError> {
    let program = Program::from_asm(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let b = Vm::builder(program).standard_helpers().context(context.clone()).engine(engine);
    if verified { b.verified() } else { b.checked() }.build()
}

fn refused(text: &str, context: &Context) -> ebpf_vm::VerifyError {
    match build(text, context, Engine::Interpreter, true) {
        Err(BuildError::Verify(e)) => e,
        other => panic!("expected a verification error, got {:?}\n{text}", other.map(|_| ())),
    }
}

/// Runs `text` verified and checked on both engines on `mem`, and returns the common result.
fn run_both(text: &str, context: &Context, mem: &[u8]) -> Result<u64, ExecError> {
    let mut seen = Vec::new();
    for engine in engines() {
        for verified in [true, false] {
            let vm = build(text, context, engine, verified).unwrap_or_else(|e| panic!("{e}\n{text}"));
            let mut m = mem.to_vec();
            seen.push(vm.execute(&mut m));
        }
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
    seen.remove(0)
}

/// `struct { u64 data; u64 data_end; }`, then the packet.
const PACKET: Context = Context::Packet { size: 16, data: 0, data_end: 8 };

fn packet(bytes: &[u8]) -> Vec<u8> {
    let mut m = vec![0xee; 16];
    m.extend_from_slice(bytes);
    m
}

const ETH_TYPE: &str = "
    ldxdw %r2, [%r1+0]
    ldxdw %r3, [%r1+8]
    mov %r0, 0
    mov %r4, %r2
    add %r4, 14
    jgt %r4, %r3, out
    ldxh %r0, [%r2+12]
out:
    exit
";

#[test]
fn a_packet_guard_proves_the_header_read() {
    let mut frame = vec![0u8; 14];
    frame[12] = 0x08;
    assert_eq!(run_both(ETH_TYPE, &PACKET, &packet(&frame)), Ok(0x08));
    // A runt frame takes the guard's exit.
    assert_eq!(run_both(ETH_TYPE, &PACKET, &packet(&frame[..13])), Ok(0));
    assert_eq!(run_both(ETH_TYPE, &PACKET, &packet(&[])), Ok(0));
}

#[test]
fn packet_reads_past_the_guard_are_refused() {
    let text = ETH_TYPE.replace("ldxh %r0, [%r2+12]", "ldxh %r0, [%r2+13]");
    let err = refused(&text, &PACKET);
    assert_eq!(err.pc, 6, "{err}");
    assert!(
        matches!(err.kind, VerifyErrorKind::OutOfBounds { region: RegionKind::Input, min: 13, end: 15, size: 14 }),
        "{err}"
    );
    // No guard at all.
    let err = refused("ldxdw %r2, [%r1+0]\nldxb %r0, [%r2+0]\nexit", &PACKET);
    assert!(matches!(err.kind, VerifyErrorKind::OutOfBounds { region: RegionKind::Input, .. }), "{err}");
}

#[test]
fn the_packet_struct_is_read_only_and_its_fields_whole() {
    let err = refused("stdw [%r1+0], 0\nmov %r0, 0\nexit", &PACKET);
    assert!(matches!(err.kind, VerifyErrorKind::ReadOnly { region: RegionKind::Context }), "{err}");
    let err = refused("ldxw %r0, [%r1+4]\nexit", &PACKET);
    assert!(matches!(err.kind, VerifyErrorKind::PointerLeak { reg: 1 }), "{err}");
    let err = refused("ldxdw %r0, [%r1+16]\nexit", &PACKET);
    assert!(matches!(err.kind, VerifyErrorKind::OutOfBounds { region: RegionKind::Context, size: 16, .. }), "{err}");
    // A description whose fields overlap is refused as a whole.
    let bad = Context::Packet { size: 16, data: 0, data_end: 4 };
    assert!(matches!(refused("mov %r0, 0\nexit", &bad).kind, VerifyErrorKind::Unsupported { .. }));
}

#[test]
fn verified_runs_refuse_memory_that_does_not_fit_the_context() {
    for engine in engines() {
        let vm = build(ETH_TYPE, &PACKET, engine, true).expect("verifies");
        assert_eq!(vm.execute(&mut [0u8; 15]), Err(ExecError::ContextSize { len: 15 }));
        let fixed = build("ldxb %r0, [%r1+3]\nexit", &Context::fixed(4), engine, true).expect("verifies");
        assert_eq!(fixed.execute(&mut [1, 2, 3, 4]), Ok(4));
        assert_eq!(fixed.execute(&mut [1, 2, 3]), Err(ExecError::ContextSize { len: 3 }));
    }
}

#[test]
fn a_fixed_context_has_its_size_and_read_only_ranges() {
    let ctx = Context::Fixed { size: 16, read_only: std::iter::once(0..8).collect() };
    assert_eq!(run_both("ldxdw %r0, [%r1+0]\nstxdw [%r1+8], %r0\nexit", &ctx, &[7; 16]), Ok(0x0707070707070707));
    let err = refused("stb [%r1+7], 1\nmov %r0, 0\nexit", &ctx);
    assert!(matches!(err.kind, VerifyErrorKind::ReadOnly { region: RegionKind::Context }), "{err}");
    let err = refused("ldxh %r0, [%r1+15]\nexit", &ctx);
    assert!(
        matches!(err.kind, VerifyErrorKind::OutOfBounds { region: RegionKind::Context, min: 15, end: 17, size: 16 }),
        "{err}"
    );
    // r2 is the size.
    assert_eq!(run_both("mov %r0, %r2\nexit", &ctx, &[0; 16]), Ok(16));
}

#[test]
fn a_buffer_is_proven_by_its_length_or_by_an_end_pointer() {
    let by_len = "mov %r0, 0\njlt %r2, 8, out\nldxdw %r0, [%r1+0]\nout:\nexit";
    let by_end = "mov %r0, 0\nmov %r3, %r1\nadd %r3, %r2\nmov %r4, %r1\nadd %r4, 8\njgt %r4, %r3, out\nldxdw %r0, [%r1+0]\nout:\nexit";
    for text in [by_len, by_end] {
        assert_eq!(run_both(text, &Context::Buffer, &[1, 0, 0, 0, 0, 0, 0, 0, 9]), Ok(1));
        assert_eq!(run_both(text, &Context::Buffer, &[1, 0, 0, 0, 0, 0, 0]), Ok(0));
        let short = text.replace("8", "7");
        let err = refused(&short, &Context::Buffer);
        assert!(
            matches!(err.kind, VerifyErrorKind::OutOfBounds { region: RegionKind::Input, min: 0, end: 8, size: 7 }),
            "{err}"
        );
    }
}

#[test]
fn build_errors_name_the_instruction() {
    let err = Error::from(
        build("ldxdw %r0, [%r1+0]\nexit", &Context::Buffer, Engine::Interpreter, true).expect_err("refused"),
    );
    let text = err.to_string();
    assert!(text.contains("insn 0: ldxdw %r0, [%r1+0]: access of bytes [0, 8) of the input"), "{text}");
}
