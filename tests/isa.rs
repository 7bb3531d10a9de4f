//! Decoder, encoder, assembler and disassembler: error cases and round trips.

mod common;

use ebpf_vm::isa::{self, DecodeError, Insn, Instruction};
use ebpf_vm::{Program, ProgramError};
use proptest::prelude::*;

fn bytes(slots: &[Insn]) -> Vec<u8> {
    slots.iter().flat_map(|s| s.to_bytes()).collect()
}

fn insn(opcode: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { opcode, dst, src, off, imm }
}

const EXIT: Insn = Insn { opcode: 0x95, dst: 0, src: 0, off: 0, imm: 0 };

fn decode_err(slots: &[Insn]) -> DecodeError {
    isa::decode(&bytes(slots)).expect_err("must be rejected")
}

#[test]
fn empty_and_trailing_bytes() {
    assert_eq!(isa::decode(&[]), Err(DecodeError::Empty));
    assert_eq!(isa::decode(&[0x95, 0, 0]), Err(DecodeError::TrailingBytes { pc: 0, len: 3 }));
    let mut b = bytes(&[EXIT]);
    b.push(0);
    assert_eq!(isa::decode(&b), Err(DecodeError::TrailingBytes { pc: 1, len: 9 }));
}

#[test]
fn unknown_opcodes_name_the_index() {
    for opcode in [0x00u8, 0x0d, 0x8f, 0xdf, 0xe4, 0xf7, 0x9d, 0x96, 0x86, 0x99, 0x38, 0x1a, 0xd3, 0x68] {
        let err = decode_err(&[EXIT, insn(opcode, 0, 0, 0, 0), EXIT]);
        assert!(
            matches!(err, DecodeError::UnknownOpcode { pc: 1, opcode: o } if o == opcode),
            "opcode {opcode:#04x}: {err:?}"
        );
    }
}

#[test]
fn bad_registers() {
    assert_eq!(decode_err(&[insn(0xb7, 11, 0, 0, 0), EXIT]), DecodeError::BadRegister { pc: 0, field: "dst", reg: 11 });
    assert_eq!(
        decode_err(&[EXIT, insn(0xbf, 1, 15, 0, 0), EXIT]),
        DecodeError::BadRegister { pc: 1, field: "src", reg: 15 }
    );
    assert!(matches!(decode_err(&[insn(0x8d, 12, 0, 0, 0), EXIT]), DecodeError::BadRegister { pc: 0, .. }));
}

#[test]
fn reserved_fields() {
    let cases = [
        (insn(0xb7, 0, 1, 0, 5), "src"),     // mov imm with src set
        (insn(0xbf, 0, 1, 0, 5), "imm"),     // mov reg with imm set
        (insn(0x07, 0, 0, 3, 5), "offset"),  // add with offset
        (insn(0x95, 1, 0, 0, 0), "dst"),     // exit with dst
        (insn(0x05, 0, 0, 0, 1), "imm"),     // ja with imm
        (insn(0x61, 0, 1, 0, 7), "imm"),     // ldxw with imm
        (insn(0x62, 0, 1, 0, 7), "src"),     // stw with src
        (insn(0x87, 0, 0, 0, 1), "imm"),     // neg with imm
        (insn(0xd4, 0, 0, 1, 16), "offset"), // le16 with offset
        (insn(0x85, 0, 0, 1, 5), "offset"),  // call with offset
    ];
    for (i, field) in cases {
        let err = decode_err(&[i, EXIT]);
        assert!(matches!(err, DecodeError::ReservedField { pc: 0, field: f, .. } if f == field), "{i:?}: {err:?}");
    }
}

#[test]
fn invalid_field_values() {
    let cases = [
        insn(0xd4, 0, 0, 0, 8),    // le8
        insn(0x3f, 0, 1, 2, 0),    // div with offset 2
        insn(0xbc, 0, 1, 32, 0),   // movsx 32->32
        insn(0xb7, 0, 0, 8, 0),    // movsx with an immediate
        insn(0xdb, 0, 1, 0, 0x02), // atomic op 2
        insn(0xc3, 0, 1, 0, 0xe0), // xchg without fetch
        insn(0x85, 0, 3, 0, 0),    // call with src 3
    ];
    for i in cases {
        let err = decode_err(&[i, EXIT]);
        assert!(matches!(err, DecodeError::InvalidField { pc: 0, .. }), "{i:?}: {err:?}");
    }
}

#[test]
fn lddw_cut_in_half() {
    assert_eq!(decode_err(&[insn(0x18, 0, 0, 0, 1)]), DecodeError::IncompleteLddw { pc: 0 });
    assert_eq!(decode_err(&[insn(0x18, 0, 0, 0, 1), EXIT]), DecodeError::IncompleteLddw { pc: 0 });
    assert_eq!(decode_err(&[insn(0x18, 0, 0, 0, 1), insn(0, 1, 0, 0, 0), EXIT]), DecodeError::IncompleteLddw { pc: 0 });
}

#[test]
fn jumps_outside_the_program() {
    assert_eq!(decode_err(&[insn(0x05, 0, 0, 5, 0), EXIT]), DecodeError::JumpOutOfRange { pc: 0, target: 6 });
    assert_eq!(decode_err(&[EXIT, insn(0x15, 1, 0, -3, 0)]), DecodeError::JumpOutOfRange { pc: 1, target: -1 });
    assert_eq!(decode_err(&[insn(0x06, 0, 0, 0, 100), EXIT]), DecodeError::JumpOutOfRange { pc: 0, target: 101 });
    // Into the second half of an lddw.
    let err = decode_err(&[insn(0x05, 0, 0, 1, 0), insn(0x18, 0, 0, 0, 1), insn(0, 0, 0, 0, 0), EXIT]);
    assert_eq!(err, DecodeError::JumpIntoLddw { pc: 0, target: 2 });
}

#[test]
fn calls_to_no_function() {
    assert_eq!(decode_err(&[insn(0x85, 0, 1, 0, 7), EXIT]), DecodeError::CallToNoFunction { pc: 0, target: 8 });
    assert_eq!(decode_err(&[insn(0x85, 0, 1, 0, -2), EXIT]), DecodeError::CallToNoFunction { pc: 0, target: -1 });
}

#[test]
fn program_structure() {
    // Falls off the end.
    let err = Program::from_bytes(&bytes(&[insn(0xb7, 0, 0, 0, 1)])).unwrap_err();
    assert_eq!(err, ProgramError::FallsOffEnd { pc: 0, function: 0 });
    // A conditional jump as the last instruction also falls off.
    let err = Program::from_bytes(&bytes(&[EXIT, insn(0x15, 0, 0, -2, 0)])).unwrap_err();
    assert_eq!(err, ProgramError::FallsOffEnd { pc: 1, function: 0 });
    // A jump from the entry function into a callee.
    let err = Program::from_asm("call local f\nja f\nexit\nf:\nexit").unwrap_err();
    assert!(matches!(err, ProgramError::JumpAcrossFunction { pc: 1, target: 3, function: 0 }));
    // r10 is read-only: no instruction may write it (as a destination, or as the register an atomic
    // fetches into); reading it is fine.
    for (text, pc) in [
        ("mov %r0, 0\nmov %r10, 1\nexit", 1),
        ("lddw %r10, 16\nexit", 0),
        ("ldxdw %r10, [%r1+0]\nexit", 0),
        ("lock fetch add [%r1+0], %r10\nexit", 0),
        ("lock xchg [%r1+0], %r10\nexit", 0),
    ] {
        let err = Program::from_asm(text).unwrap_err();
        assert!(matches!(err, ProgramError::WritesFramePointer { pc: p } if p == pc), "{text}");
    }
    assert!(Program::from_asm("lock add [%r1+0], %r10\nmov %r1, %r10\nstxdw [%r10-8], %r10\nexit").is_ok());
    // Functions are found from local calls.
    let p = Program::from_asm("call local f\nexit\nf:\nmov %r0, 1\nexit").unwrap();
    assert_eq!(p.functions().len(), 2);
    assert_eq!((p.functions()[1].start, p.functions()[1].end), (2, 4));
}

#[test]
fn assembler_errors_name_the_line() {
    let err = isa::assemble("mov %r0, 1\nfrobnicate %r1\nexit").unwrap_err();
    assert_eq!(err.line, 2);
    assert!(isa::assemble("mov %r11, 1").is_err());
    assert!(isa::assemble("ja nowhere").is_err());
    assert!(isa::assemble("mov %r0, 0x100000000").is_err());
    assert!(isa::assemble("ldxw %r0, [%r1+40000]").is_err());
    assert!(isa::assemble("l:\nl:\nexit").is_err());
    assert!(isa::assemble("add %r1").is_err());
}

#[test]
fn assembler_matches_known_encodings() {
    let cases: &[(&str, [u8; 8])] = &[
        ("mov %r0, 1", [0xb7, 0x00, 0, 0, 1, 0, 0, 0]),
        ("mov32 %r1, -1", [0xb4, 0x01, 0, 0, 0xff, 0xff, 0xff, 0xff]),
        ("add %r1, %r2", [0x0f, 0x21, 0, 0, 0, 0, 0, 0]),
        ("sdiv32 %r1, 3", [0x34, 0x01, 1, 0, 3, 0, 0, 0]),
        ("smod %r1, %r2", [0x9f, 0x21, 1, 0, 0, 0, 0, 0]),
        ("movsx1664 %r1, %r2", [0xbf, 0x21, 16, 0, 0, 0, 0, 0]),
        ("ldxw %r1, [%r2+4]", [0x61, 0x21, 4, 0, 0, 0, 0, 0]),
        ("ldxsh %r1, [%r2-2]", [0x89, 0x21, 0xfe, 0xff, 0, 0, 0, 0]),
        ("stdw [%r10-8], 7", [0x7a, 0x0a, 0xf8, 0xff, 7, 0, 0, 0]),
        ("stxb [%r1], %r2", [0x73, 0x21, 0, 0, 0, 0, 0, 0]),
        ("lock fetch add [%r1+8], %r2", [0xdb, 0x21, 8, 0, 1, 0, 0, 0]),
        ("lock cmpxchg32 [%r1], %r2", [0xc3, 0x21, 0, 0, 0xf1, 0, 0, 0]),
        ("le16 %r3", [0xd4, 0x03, 0, 0, 16, 0, 0, 0]),
        ("be64 %r3", [0xdc, 0x03, 0, 0, 64, 0, 0, 0]),
        ("bswap32 %r3", [0xd7, 0x03, 0, 0, 32, 0, 0, 0]),
        ("jeq %r1, 0, +3", [0x15, 0x01, 3, 0, 0, 0, 0, 0]),
        ("jslt32 %r1, %r2, -1", [0xce, 0x21, 0xff, 0xff, 0, 0, 0, 0]),
        ("ja32 +2", [0x06, 0x00, 0, 0, 2, 0, 0, 0]),
        ("call 5", [0x85, 0x00, 0, 0, 5, 0, 0, 0]),
        ("call %r2", [0x8d, 0x02, 0, 0, 0, 0, 0, 0]),
        ("call local +1", [0x85, 0x10, 0, 0, 1, 0, 0, 0]),
        ("ldabsh 12", [0x28, 0x00, 0, 0, 12, 0, 0, 0]),
        ("ldindb %r3, 2", [0x50, 0x30, 0, 0, 2, 0, 0, 0]),
        ("exit", [0x95, 0, 0, 0, 0, 0, 0, 0]),
    ];
    for (text, want) in cases {
        let got = isa::encode(&isa::assemble(text).unwrap_or_else(|e| panic!("{text}: {e}")));
        assert_eq!(&got[..8], want, "{text}");
    }
}

#[test]
fn disassembler_writes_the_suite_syntax() {
    let p = isa::assemble("mov32 %r0, 0x87654321\nlddw %r1, 0x1122334455667788\nldxw %r2, [%r1-4]\nlock fetch xor32 [%r10-8], %r3\njne %r0, -1, +1\nexit\nexit").unwrap();
    assert_eq!(
        isa::disassemble(&p),
        "mov32 %r0, 0x87654321\nlddw %r1, 0x1122334455667788\nldxw %r2, [%r1-4]\nlock fetch xor32 [%r10-8], %r3\njne %r0, -1, +1\nexit\nexit\n"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// decode(encode(i)) == i for every valid instruction.
    #[test]
    fn encode_then_decode(i in common::instruction()) {
        let (first, second) = isa::encode_one(&i);
        let mut slots = vec![first];
        slots.extend(second);
        prop_assert_eq!(isa::decode_one(&slots, 0), Ok(i));
    }

    /// encode(decode(b)) == b for every slot pair the decoder accepts: nothing is ignored.
    #[test]
    fn decode_then_encode(b in proptest::array::uniform16(any::<u8>())) {
        let slots = [Insn::from_bytes(b[..8].try_into().unwrap()), Insn::from_bytes(b[8..].try_into().unwrap())];
        if let Ok(i) = isa::decode_one(&slots, 0) {
            let (first, second) = isa::encode_one(&i);
            prop_assert_eq!(first.to_bytes(), slots[0].to_bytes());
            if let Some(second) = second {
                prop_assert_eq!(second.to_bytes(), slots[1].to_bytes());
            }
        }
    }

    /// asm(disasm(p)) == p for every sequence of valid instructions.
    #[test]
    fn disassemble_then_assemble(p in proptest::collection::vec(common::instruction(), 1..40)) {
        let text = isa::disassemble(&p);
        let back = isa::assemble(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(back, p);
    }

    /// Decoding arbitrary bytes gives instructions or a typed error, never a panic.
    #[test]
    fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = Program::from_bytes(&b);
    }

    /// Arbitrary sequences of valid slots: a program or a typed error, and a program re-encodes exactly.
    #[test]
    fn random_programs_decode_or_fail_cleanly(p in proptest::collection::vec(common::instruction(), 1..60)) {
        let b = isa::encode(&p);
        if let Ok(program) = Program::from_bytes(&b) {
            prop_assert_eq!(program.to_bytes(), b);
            let _: &[Instruction] = program.instructions();
        }
    }
}

/// `reads` names the registers an instruction reads: operands, bases and values, call arguments, and r0
/// at `exit`; a move does not read its destination.
#[test]
fn registers_read() {
    use ebpf_vm::isa::assemble;
    let reads = |text: &str| -> Vec<u8> {
        let insn = assemble(text).expect("assembles")[0];
        insn.reads().iter().map(|r| r.index()).collect()
    };
    assert_eq!(reads("mov %r1, %r2"), [2]);
    assert_eq!(reads("mov %r1, 5"), [] as [u8; 0]);
    assert_eq!(reads("add %r1, %r2"), [1, 2]);
    assert_eq!(reads("neg %r4"), [4]);
    assert_eq!(reads("ldxdw %r0, [%r10-8]"), [10]);
    assert_eq!(reads("stxdw [%r10-8], %r3"), [3, 10]);
    assert_eq!(reads("stw [%r2+0], 1"), [2]);
    assert_eq!(reads("lock cmpxchg [%r1+0], %r2"), [0, 1, 2]);
    assert_eq!(reads("jgt %r3, %r7, +1"), [3, 7]);
    assert_eq!(reads("call 1"), [1, 2, 3, 4, 5]);
    assert_eq!(reads("call %r8"), [1, 2, 3, 4, 5, 8]);
    assert_eq!(reads("exit"), [0]);
    assert_eq!(reads("lddw %r1, 0x1234"), [] as [u8; 0]);
}
