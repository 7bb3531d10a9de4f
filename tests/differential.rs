//! Interpreter against JIT on generated programs: the same r0, the same memory afterwards, and the same
//! error (kind and instruction index), in checked mode, with and without a budget.

mod common;

use common::{oracle, run_property, Rate};

use ebpf_vm::isa::{Imm64, Instruction, Operand, Reg};
use ebpf_vm::{Engine, Helper, HelperSig, Program, Vm};
use proptest::prelude::*;

/// One generated instruction, before jump and call targets are fixed up.
fn body_instruction() -> impl Strategy<Value = Instruction> {
    let r = |n: u8| Reg::new(n).expect("register");
    prop_oneof![
        // Everything the generic generator makes (ALU of all kinds, jumps, loads, stores, atomics, ...)
        6 => common::instruction().prop_filter("no calls, no BTF, no pseudo loads", |i| !matches!(i,
            Instruction::CallLocal { .. } | Instruction::CallBtf { .. } | Instruction::Call { .. }
            | Instruction::LoadImm64 { value: Imm64::MapFd(_) | Imm64::MapValue { .. } | Imm64::BtfVar { .. }
                | Imm64::Func(_) | Imm64::MapIdx(_) | Imm64::MapIdxValue { .. }, .. }))
            .prop_map(common::frame_pointer_as_base_only),
        // Memory accesses near the stack and the input, in and out of bounds.
        2 => (common::size(), 0u8..10, prop_oneof![Just(1u8), Just(10u8)], -80i16..80)
            .prop_map(move |(size, dst, base, k)| {
                let offset = if base == 10 { -8 * (k.rem_euclid(66)) } else { k };
                Instruction::Load { size, dst: r(dst), src: r(base), offset }
            }),
        2 => (common::size(), 0u8..10, prop_oneof![Just(1u8), Just(10u8)], -80i16..80)
            .prop_map(move |(size, src, base, k)| {
                let offset = if base == 10 { -8 * (k.rem_euclid(66)) } else { k };
                Instruction::StoreReg { size, dst: r(base), offset, src: r(src) }
            }),
        1 => (common::width(), common::atomic_op(), prop_oneof![Just(1u8), Just(10u8)], 0i16..72, 0u8..10)
            .prop_map(move |(width, op, base, k, src)| {
                let offset = if base == 10 { -(k / 8 + 1) * 8 } else { k - k % 4 };
                Instruction::Atomic { width, op, dst: r(base), offset, src: r(src) }
            }),
        1 => Just(Instruction::Call { id: 5 }),
        1 => (0u8..10).prop_map(move |n| Instruction::CallReg { reg: r(n) }),
        1 => (0u8..10, prop_oneof![Just(5i32), Just(6), Just(-1)])
            .prop_map(move |(n, v)| Instruction::Alu { width: ebpf_vm::isa::Width::W64, op: ebpf_vm::isa::AluOp::Mov, dst: r(n), src: Operand::Imm(v) }),
    ]
}

/// A program of 1 to 3 functions. Jumps stay in their function; with `forward_only`, every jump and
/// call goes forward, so the program terminates; otherwise loops and recursion are possible.
fn program(forward_only: bool) -> impl Strategy<Value = Vec<Instruction>> {
    proptest::collection::vec(proptest::collection::vec(body_instruction(), 1..24), 1..4)
        .prop_flat_map(|fs| (Just(fs), proptest::collection::vec(any::<u16>(), 256)))
        .prop_map(move |(functions, picks)| {
            // Lay the functions out, each ending with exit; remember where each starts.
            let mut insns: Vec<Instruction> = Vec::new();
            let mut bounds = Vec::new();
            for (k, mut f) in functions.into_iter().enumerate() {
                if k > 0 && insns.is_empty() {
                    break;
                }
                f.push(Instruction::Exit);
                let start = insns.len();
                insns.extend(f);
                bounds.push((start, insns.len()));
            }
            // Slot positions (lddw takes two).
            let slot: Vec<usize> = insns
                .iter()
                .scan(0, |pc, i| {
                    let at = *pc;
                    *pc += i.slots();
                    Some(at)
                })
                .collect();
            let nfuncs = bounds.len();
            let mut pick = picks.into_iter().cycle();
            for (idx, insn) in insns.iter_mut().enumerate() {
                let (fstart, fend) = *bounds.iter().find(|(s, e)| idx >= *s && idx < *e).expect("in a function");
                let fi = bounds.iter().position(|b| b.0 == fstart).expect("function");
                let here = slot[idx] as i64;
                let choose = |lo: usize, hi: usize, p: u16| lo + (p as usize) % (hi - lo).max(1);
                match insn {
                    Instruction::Ja { offset } | Instruction::Jump { offset, .. } => {
                        let lo = if forward_only { idx + 1 } else { fstart };
                        let t = choose(lo.min(fend - 1), fend, pick.next().unwrap_or(0));
                        *offset = (slot[t] as i64 - here - 1) as i16;
                    }
                    Instruction::Ja32 { offset } => {
                        let lo = if forward_only { idx + 1 } else { fstart };
                        let t = choose(lo.min(fend - 1), fend, pick.next().unwrap_or(0));
                        *offset = (slot[t] as i64 - here - 1) as i32;
                    }
                    _ => {}
                }
                // Now and then, turn an instruction into a call of a (later, if forward-only) function.
                let p = pick.next().unwrap_or(0);
                if nfuncs > 1 && p % 11 == 0 && !matches!(insn, Instruction::Exit | Instruction::LoadImm64 { .. }) {
                    let lo = if forward_only { fi + 1 } else { 1 };
                    if lo < nfuncs {
                        let target = bounds[choose(lo, nfuncs, p / 11)].0;
                        *insn = Instruction::CallLocal { offset: (slot[target] as i64 - here - 1) as i32 };
                    }
                }
            }
            insns
        })
}

/// Two counted loops, one inside the other, around generated code that never writes their counters
/// (r8, r9). Jumps in the code go forward within their stretch, to its end, out of the inner loop,
/// or to the exit: every program ends, so the JIT runs without a budget and lays the loops out as a
/// host gets them (selects, shared checks, exits of loops out of line).
fn nested_loops() -> impl Strategy<Value = Vec<Instruction>> {
    let body = || {
        proptest::collection::vec(
            body_instruction().prop_filter("keeps the counters", |i| {
                !matches!(i.written(), Some(r) if r.index() >= 8) && i.slots() == 1
            }),
            0..8,
        )
    };
    (body(), body(), body(), 1i32..5, 1i32..6, proptest::collection::vec(any::<u16>(), 32)).prop_map(
        |(a, b, c, outer, inner, picks)| {
            use ebpf_vm::isa::{AluOp, Cond, Width};
            let reg = |n: u8| Reg::new(n).expect("register");
            let mov = |r: u8, v: i32| Instruction::Alu {
                width: Width::W64,
                op: AluOp::Mov,
                dst: reg(r),
                src: Operand::Imm(v),
            };
            let dec =
                |r: u8| Instruction::Alu { width: Width::W64, op: AluOp::Add, dst: reg(r), src: Operand::Imm(-1) };
            let again = |r: u8| Instruction::Jump {
                width: Width::W64,
                cond: Cond::Ne,
                dst: reg(r),
                src: Operand::Imm(0),
                offset: 0,
            };
            // 0: r9 = outer; A; r8 = inner; B; r8 -= 1; if r8 != 0 goto B; C; r9 -= 1; if r9 != 0 goto A; exit
            let a_start = 1;
            let b_start = a_start + a.len() + 1;
            let c_start = b_start + b.len() + 2;
            let exit = c_start + c.len() + 2;
            let mut insns = vec![mov(9, outer)];
            insns.extend(a);
            insns.push(mov(8, inner));
            insns.extend(b);
            insns.extend([dec(8), again(8)]);
            insns.extend(c);
            insns.extend([dec(9), again(9), Instruction::Exit]);
            // Where a jump may go from each stretch: forward inside it, to its end, out of the inner
            // loop (from B), or to the exit.
            let stretches = [(a_start, b_start - 1), (b_start, c_start - 2), (c_start, exit - 2)];
            let mut pick = picks.into_iter().cycle();
            for (idx, insn) in insns.iter_mut().enumerate() {
                let Some(&(_, end)) = stretches.iter().find(|(s, e)| idx >= *s && idx < *e) else {
                    continue;
                };
                let mut targets: Vec<usize> = (idx + 1..=end).collect();
                targets.push(exit);
                if end == c_start - 2 {
                    targets.push(c_start);
                }
                let t = targets[pick.next().unwrap_or(0) as usize % targets.len()];
                let rel = t as i64 - idx as i64 - 1;
                match insn {
                    Instruction::Ja { offset } | Instruction::Jump { offset, .. } => *offset = rel as i16,
                    Instruction::Ja32 { offset } => *offset = rel as i32,
                    _ => {}
                }
            }
            let (b_end, c_end) = (c_start - 1, exit - 1);
            if let Instruction::Jump { offset, .. } = &mut insns[b_end] {
                *offset = (b_start as i64 - b_end as i64 - 1) as i16;
            }
            if let Instruction::Jump { offset, .. } = &mut insns[c_end] {
                *offset = (a_start as i64 - c_end as i64 - 1) as i16;
            }
            insns
        },
    )
}

/// An instruction that cannot fail or touch memory, on r0..r5 (what the JIT may turn into selects).
fn pure_instruction() -> impl Strategy<Value = Instruction> {
    use ebpf_vm::isa::{AluOp, ByteOrder, SxWidth};
    let r = |n: u8| Reg::new(n).expect("register");
    let reg = (0u8..6).prop_map(r);
    let ops = proptest::sample::select(vec![
        AluOp::Add,
        AluOp::Sub,
        AluOp::Mul,
        AluOp::Or,
        AluOp::And,
        AluOp::Xor,
        AluOp::Mov,
        AluOp::Lsh,
        AluOp::Rsh,
        AluOp::Arsh,
    ]);
    let operand = prop_oneof![
        reg.clone().prop_map(Operand::Reg),
        any::<i32>().prop_map(Operand::Imm),
        (0i32..5).prop_map(Operand::Imm)
    ];
    prop_oneof![
        6 => (common::width(), ops, reg.clone(), operand).prop_map(|(width, op, dst, src)| Instruction::Alu { width, op, dst, src }),
        1 => (common::width(), reg.clone()).prop_map(|(width, dst)| Instruction::Neg { width, dst }),
        1 => (common::width(), proptest::sample::select(vec![SxWidth::B8, SxWidth::B16, SxWidth::B32]), reg.clone(), reg.clone())
            .prop_map(|(width, from, dst, src)| {
                // 32-bit sign extension from 32 bits is not an instruction.
                let from = if width == ebpf_vm::isa::Width::W32 && from == SxWidth::B32 { SxWidth::B16 } else { from };
                Instruction::MovSx { width, from, dst, src }
            }),
        1 => (proptest::sample::select(vec![ByteOrder::Le, ByteOrder::Be, ByteOrder::Swap]), proptest::sample::select(vec![16u8, 32, 64]), reg.clone())
            .prop_map(|(order, bits, dst)| Instruction::End { order, bits, dst }),
        1 => (reg, any::<u64>()).prop_map(|(dst, v)| Instruction::LoadImm64 { dst, value: Imm64::Const(v) }),
    ]
}

/// Conditional jumps around short pure sides, in the three shapes the JIT turns into selects (a forward
/// skip, an if/else, and a loop whose body jumps back over a pure side), plus longer sides it leaves as
/// branches; the result mixes every register, so a wrong pick shows in r0.
fn diamonds() -> impl Strategy<Value = Vec<Instruction>> {
    let side = || proptest::collection::vec(pure_instruction(), 0..6);
    let part = (
        0u8..3,
        common::cond(),
        common::width(),
        0u8..6,
        prop_oneof![
            (0u8..6).prop_map(|n| Operand::Reg(Reg::new(n).expect("register"))),
            (-3i32..3).prop_map(Operand::Imm)
        ],
        side(),
        side(),
        1i32..6,
    );
    (proptest::collection::vec(any::<u64>(), 6), proptest::collection::vec(part, 1..4)).prop_map(|(init, parts)| {
        use ebpf_vm::isa::{AluOp, Width};
        let r = |n: u8| Reg::new(n).expect("register");
        let slots = |v: &[Instruction]| -> i16 { v.iter().map(|i| i.slots()).sum::<usize>() as i16 };
        let mut out: Vec<Instruction> = init
            .iter()
            .enumerate()
            .map(|(k, &v)| Instruction::LoadImm64 { dst: r(k as u8), value: Imm64::Const(v) })
            .collect();
        for (shape, cond, width, dst, src, fall, taken, count) in parts {
            let jump = |offset: i16| Instruction::Jump { width, cond, dst: r(dst), src, offset };
            match shape {
                0 => {
                    out.push(jump(slots(&fall)));
                    out.extend(fall);
                }
                1 => {
                    out.push(jump(slots(&fall) + 1));
                    out.extend(fall);
                    out.push(Instruction::Ja { offset: slots(&taken) });
                    out.extend(taken);
                }
                _ => {
                    // r6 counts the iterations: `top: taken; r6 -= 1; if r6 == 0 goto out; if c goto top; fall; goto top; out:`
                    out.push(Instruction::Alu {
                        width: Width::W64,
                        op: AluOp::Mov,
                        dst: r(6),
                        src: Operand::Imm(count),
                    });
                    let top = out.len();
                    out.extend(taken);
                    out.push(Instruction::Alu { width: Width::W64, op: AluOp::Add, dst: r(6), src: Operand::Imm(-1) });
                    let exit_jump = out.len();
                    out.push(Instruction::Jump {
                        width: Width::W64,
                        cond: ebpf_vm::isa::Cond::Eq,
                        dst: r(6),
                        src: Operand::Imm(0),
                        offset: 0,
                    });
                    let slot_of = |v: &[Instruction], i: usize| slots(&v[..i]);
                    let back = slot_of(&out, top) - slot_of(&out, out.len()) - 1;
                    out.push(jump(back));
                    out.extend(fall);
                    let back = slot_of(&out, top) - slot_of(&out, out.len()) - 1;
                    out.push(Instruction::Ja { offset: back });
                    let skip = slot_of(&out, out.len()) - slot_of(&out, exit_jump) - 1;
                    out[exit_jump] = Instruction::Jump {
                        width: Width::W64,
                        cond: ebpf_vm::isa::Cond::Eq,
                        dst: r(6),
                        src: Operand::Imm(0),
                        offset: skip,
                    };
                }
            }
        }
        for k in 1..7 {
            out.push(Instruction::Alu { width: Width::W64, op: AluOp::Lsh, dst: r(0), src: Operand::Imm(7) });
            out.push(Instruction::Alu { width: Width::W64, op: AluOp::Xor, dst: r(0), src: Operand::Reg(r(k)) });
        }
        out.push(Instruction::Exit);
        out
    })
}

/// Straight-line field accesses through r1 and copies of it moved by constants, some past the end of
/// the 64-byte input, with conditional exits between them: the JIT tests such accesses together (one
/// test of their hull, then a flag), and must still fail at the same instruction as the interpreter.
fn field_accesses() -> impl Strategy<Value = Vec<Instruction>> {
    use ebpf_vm::isa::{AluOp, Cond, Width};
    let r = |n: u8| Reg::new(n).expect("register");
    let step = prop_oneof![
        4 => (common::size(), 2u8..5, prop_oneof![Just(1u8), Just(3u8)], -8i16..72, any::<bool>()).prop_map(move |(size, v, base, offset, store)| {
            if store {
                vec![Instruction::StoreReg { size, dst: r(base), offset, src: r(v) }]
            } else {
                vec![Instruction::Load { size, dst: r(v), src: r(base), offset }]
            }
        }),
        1 => (-8i32..24).prop_map(move |k| vec![
            Instruction::Alu { width: Width::W64, op: AluOp::Mov, dst: r(3), src: Operand::Reg(r(1)) },
            Instruction::Alu { width: Width::W64, op: AluOp::Add, dst: r(3), src: Operand::Imm(k) },
        ]),
        1 => (2u8..5, 0i32..4).prop_map(move |(v, k)| vec![
            // Leaves the chain when the value is k (a jump over the next instruction).
            Instruction::Jump { width: Width::W64, cond: Cond::Eq, dst: r(v), src: Operand::Imm(k), offset: 1 },
        ]),
    ];
    proptest::collection::vec(step, 1..12).prop_map(move |steps| {
        let mut out = vec![Instruction::Alu { width: Width::W64, op: AluOp::Mov, dst: r(3), src: Operand::Reg(r(1)) }];
        for s in steps {
            out.extend(s);
        }
        out.push(Instruction::Alu { width: Width::W64, op: AluOp::Mov, dst: r(0), src: Operand::Reg(r(2)) });
        out.push(Instruction::Exit);
        out
    })
}

fn run(program: &Program, engine: Engine, budget: Option<u64>, mem: &mut [u8]) -> Result<u64, ebpf_vm::ExecError> {
    let echo = Helper::new(5, "echo", HelperSig::scalars(1), |_, a| Ok(a[0].rotate_left(7)));
    let mut b = Vm::builder(program.clone()).helper(echo).engine(engine).checked();
    if let Some(n) = budget {
        b = b.budget(n);
    }
    b.build().expect("builds").execute(mem)
}

/// Runs `insns` on both engines and compares; counts the case in `rate` if it was compared.
fn compare(rate: &Rate, insns: Vec<Instruction>, mem: Vec<u8>, budget: Option<u64>) -> Result<(), TestCaseError> {
    let Ok(program) = Program::from_instructions(insns) else {
        rate.skipped();
        return Ok(());
    };
    if oracle::reads_frame_pointer_as_value(&program) {
        rate.skipped();
        return Ok(());
    }
    rate.ran();
    // Both engines run on the same buffer, so that addresses derived from r1 agree.
    let mut buf = mem.clone();
    let base = buf.as_ptr() as u64;
    let a = oracle::relative(run(&program, Engine::Interpreter, budget, &mut buf), base);
    let after_interpreter = buf.clone();
    buf.copy_from_slice(&mem);
    let b = oracle::relative(run(&program, Engine::Jit, budget, &mut buf), base);
    prop_assert_eq!(&a, &b, "program:\n{}", program.disassemble());
    prop_assert_eq!(after_interpreter, buf, "memory differs; program:\n{}", program.disassemble());
    Ok(())
}

/// Terminating programs, no budget.
#[test]
fn same_results_without_budget() {
    static RATE: Rate = Rate::new("same_results_without_budget");
    let strategy = (program(true), proptest::collection::vec(any::<u8>(), 64));
    run_property(&RATE, 1500, strategy, |(p, mem)| compare(&RATE, p, mem, None));
}

/// Branches over pure code, which the JIT compiles into conditional moves.
#[test]
fn same_results_across_if_converted_branches() {
    static RATE: Rate = Rate::new("same_results_across_if_converted_branches");
    run_property(&RATE, 1500, diamonds(), |p| {
        let mut buf = vec![0u8; 8];
        let program = Program::from_instructions(p).expect("valid");
        RATE.ran();
        let a = run(&program, Engine::Interpreter, None, &mut buf);
        let b = run(&program, Engine::Jit, None, &mut buf);
        prop_assert_eq!(a, b, "program:\n{}", program.disassemble());
        Ok(())
    });
}

/// Accesses whose checks the JIT shares: the same results, errors and memory.
#[test]
fn same_results_across_shared_checks() {
    static RATE: Rate = Rate::new("same_results_across_shared_checks");
    let strategy = (field_accesses(), proptest::collection::vec(any::<u8>(), 64));
    run_property(&RATE, 1500, strategy, |(p, mem)| compare(&RATE, p, mem, None));
}

/// Nested loops with exits and breaks, no budget.
#[test]
fn same_results_in_nested_loops() {
    static RATE: Rate = Rate::new("same_results_in_nested_loops");
    let strategy = (nested_loops(), proptest::collection::vec(any::<u8>(), 64));
    run_property(&RATE, 1500, strategy, |(p, mem)| compare(&RATE, p, mem, None));
}

/// Loops and recursion, with a budget: also the same instruction where the budget runs out.
#[test]
fn same_results_with_budget() {
    static RATE: Rate = Rate::new("same_results_with_budget");
    let strategy = (program(false), proptest::collection::vec(any::<u8>(), 64), 1u64..3000);
    run_property(&RATE, 1500, strategy, |(p, mem, budget)| compare(&RATE, p, mem, Some(budget)));
}

/// With more host regions than are checked inline, the JIT asks the runtime; both paths agree with
/// the interpreter on in-bounds and out-of-bounds accesses to map values.
#[test]
fn host_regions_inline_and_through_the_runtime() {
    use ebpf_vm::maps::{self, MapDef, MapType};
    for count in [1usize, 12] {
        let mut env = ebpf_vm::Env::new();
        for _ in 0..count {
            let def = MapDef { map_type: MapType::Array, key_size: 4, value_size: 16, max_entries: 1, flags: 0 };
            env.add_map(maps::create(def).expect("map"));
        }
        let last = count - 1;
        for (offset, ok) in [(0, true), (8, true), (9, false)] {
            let text =
                format!("lddw %r1, map_value({last}, 0)\nstdw [%r1+{offset}], 7\nldxdw %r0, [%r1+{offset}]\nexit");
            let program = Program::from_asm(&text).expect("assembles");
            let run = |engine| {
                Vm::builder(program.clone())
                    .env(env.clone())
                    .engine(engine)
                    .checked()
                    .build()
                    .expect("builds")
                    .execute(&mut [])
            };
            let (a, b) = (run(Engine::Interpreter), run(Engine::Jit));
            assert_eq!(a.is_ok(), ok, "{count} maps, offset {offset}: {a:?}");
            assert_eq!(a, b, "{count} maps, offset {offset}");
        }
    }
}

/// Divisors the JIT knows cannot be zero (an `or` with a non-zero constant) skip its zero test; the
/// others keep it: both engines give BPF's results (`x / 0 = 0`, `x % 0 = x`) in 32 and 64 bits.
#[test]
fn divisors_or_ed_with_constants() {
    let mut cases = 0;
    for op in ["div", "mod"] {
        for w in ["", "32"] {
            for (x, c) in [(0u64, 0i32), (5, 0), (0, 1), (0, 0x100), (6, 1), (u64::MAX, -1), (0x1_0000_0000, 0)] {
                let text = format!(
                    "lddw %r0, 0x123456789abcdef\nlddw %r1, {x:#x}\nor{w} %r1, {c}\n{op}{w} %r0, %r1\n\
                     mov %r2, 0\nor{w} %r2, %r2\nlddw %r3, 77\n{op}{w} %r3, %r2\nxor %r0, %r3\nexit"
                );
                let program = Program::from_asm(&text).expect("assembles");
                let a = run(&program, Engine::Interpreter, None, &mut []);
                let b = run(&program, Engine::Jit, None, &mut []);
                assert_eq!(a, b, "{text}");
                assert!(a.is_ok());
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 28);
}
