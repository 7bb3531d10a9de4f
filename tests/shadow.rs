//! Shadow mode (`VmBuilder::shadow`): a read of a register or stack byte never written stops the program
//! with `ExecError::UninitRead` at that instruction; programs that read only what they wrote run as in
//! checked mode.

use ebpf_vm::maps::{self, MapDef, MapType, ProgArrayMap};
use ebpf_vm::{Env, ExecError, Mode, Program, Uninit, Vm};

/// Runs `text` in shadow mode with the standard helpers and a budget on `mem`; checks that a run that
/// passes gives what checked mode gives.
fn run_on(text: &str, mem: &mut [u8]) -> Result<u64, ExecError> {
    let program = Program::from_asm(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let build = |b: ebpf_vm::VmBuilder| b.standard_helpers().budget(1_000_000).build().expect("builds");
    let shadow = build(Vm::builder(program.clone()).shadow());
    assert_eq!(shadow.mode(), Mode::Shadow);
    let mut copy = mem.to_vec();
    let result = shadow.execute(mem);
    if result.is_ok() {
        assert_eq!(build(Vm::builder(program).checked()).execute(&mut copy), result, "checked mode differs\n{text}");
    }
    result
}

fn run(text: &str) -> Result<u64, ExecError> {
    run_on(text, &mut [0u8; 16])
}

fn reg(pc: usize, r: u8) -> Result<u64, ExecError> {
    Err(ExecError::UninitRead { pc, what: Uninit::Register(r) })
}

fn stack(pc: usize, offset: i64) -> Result<u64, ExecError> {
    Err(ExecError::UninitRead { pc, what: Uninit::Stack(offset) })
}

#[test]
fn uninitialised_register_read() {
    assert_eq!(run("mov %r0, %r3\nexit"), reg(0, 3), "a move reads its source");
    assert_eq!(run("mov32 %r0, %r4\nexit"), reg(0, 4));
    assert_eq!(run("add %r0, 1\nexit"), reg(0, 0), "an operation reads its destination");
    assert_eq!(run("mov %r0, 1\nadd %r0, %r7\nexit"), reg(1, 7));
    assert_eq!(run("neg %r6\nmov %r0, 0\nexit"), reg(0, 6));
    assert_eq!(run("be16 %r5\nmov %r0, 0\nexit"), reg(0, 5));
    assert_eq!(run("mov %r0, 0\njeq %r8, 0, +0\nexit"), reg(1, 8));
    assert_eq!(run("mov %r0, 0\njgt %r1, %r9, +0\nexit"), reg(1, 9));
    assert_eq!(run("mov %r0, 0\nmod %r6, 0\nexit"), reg(1, 6), "modulo by zero still reads its destination");
    assert_eq!(run("mov %r0, 0\nldxb %r0, [%r3]\nexit"), reg(1, 3), "a load reads its base");
    assert_eq!(run("stxdw [%r10-8], %r6\nmov %r0, 0\nexit"), reg(0, 6), "a store reads its value");
    assert_eq!(run("exit"), reg(0, 0), "exit reads r0");
    assert_eq!(run("ldabsb 0\nmov %r0, %r1\nexit"), reg(1, 1), "a legacy packet load clobbers r1-r5");
    // What a program starts with, and what writing gives.
    assert_eq!(run_on("mov %r0, %r2\nexit", &mut [0u8; 5]), Ok(5));
    assert_eq!(run("mov %r0, %r10\nmov %r0, 3\nexit"), Ok(3));
    assert_eq!(run("mov %r3, 2\nmov %r0, %r3\nexit"), Ok(2));
    assert_eq!(run("lddw %r6, 0x100000000\nmov %r0, %r6\nrsh %r0, 32\nexit"), Ok(1));
}

#[test]
fn uninitialised_stack_byte_read() {
    assert_eq!(run("ldxdw %r0, [%r10-8]\nexit"), stack(0, -8));
    assert_eq!(run("ldxb %r0, [%r10-512]\nexit"), stack(0, -512));
    assert_eq!(run("mov %r0, 0\nstdw [%r10-8], 1\nldxb %r0, [%r10-9]\nexit"), stack(2, -9));
    assert_eq!(run("stdw [%r10-8], 42\nldxdw %r0, [%r10-8]\nexit"), Ok(42));
    // Atomics read the bytes they change.
    assert_eq!(run("mov %r1, 1\nlock add [%r10-8], %r1\nmov %r0, 0\nexit"), stack(1, -8));
    assert_eq!(run("stdw [%r10-8], 5\nmov %r1, 1\nlock fetch add [%r10-8], %r1\nldxdw %r0, [%r10-8]\nexit"), Ok(6));
    // A pointer moved away from r10 reads the same bytes.
    assert_eq!(run("mov %r6, %r10\nadd %r6, -32\nstw [%r6+4], 1\nldxw %r0, [%r6+8]\nexit"), stack(3, -24));
    // Loads elsewhere are not tracked: the input may be read unwritten.
    assert_eq!(run_on("ldxb %r0, [%r1+3]\nexit", &mut [0, 0, 0, 9]), Ok(9));
}

#[test]
fn partially_written_slot() {
    assert_eq!(run("stw [%r10-8], 1\nldxdw %r0, [%r10-8]\nexit"), stack(1, -4), "the upper half is unwritten");
    assert_eq!(run("stw [%r10-4], 1\nldxdw %r0, [%r10-8]\nexit"), stack(1, -8), "the lower half is unwritten");
    assert_eq!(run("stb [%r10-8], 1\nstb [%r10-6], 1\nldxh %r0, [%r10-7]\nexit"), stack(2, -7));
    assert_eq!(run("sth [%r10-8], 1\nstw [%r10-4], 2\nldxdw %r0, [%r10-8]\nexit"), stack(2, -6));
    assert_eq!(run("stw [%r10-8], 7\nldxw %r0, [%r10-8]\nexit"), Ok(7), "the written half reads");
    assert_eq!(run("stdw [%r10-8], -1\nstb [%r10-5], 0\nldxdw %r0, [%r10-8]\nexit"), Ok(0xffff_ffff_00ff_ffff));
}

#[test]
fn callee_reading_r6() {
    let text = "mov %r6, 1\ncall local f\nexit\nf:\nmov %r0, %r6\nexit";
    assert_eq!(run(text), reg(3, 6), "a callee gets r1-r5 and r10 only");
    assert_eq!(run("mov %r0, 0\ncall local f\nexit\nf:\nmov %r0, %r0\nexit"), reg(3, 0), "nor r0");
    // r6-r9 come back to the caller as they were.
    assert_eq!(run("mov %r6, 40\ncall local f\nadd %r0, %r6\nexit\nf:\nmov %r6, 1\nmov %r0, 2\nexit"), Ok(42));
    assert_eq!(run("call local f\nmov %r0, %r7\nexit\nf:\nmov %r7, 1\nmov %r0, 2\nexit"), reg(1, 7));
}

#[test]
fn r1_to_r5_after_a_call() {
    // ktime_get_ns (5) takes no argument.
    assert_eq!(run("mov %r1, 1\ncall 5\nmov %r0, %r1\nexit"), reg(2, 1));
    assert_eq!(run("mov %r5, 1\ncall 5\nmov %r0, %r5\nexit"), reg(2, 5));
    assert_eq!(run("call 5\nmov %r0, 3\nexit"), Ok(3), "r0 holds the result");
    assert_eq!(run("call 5\ncall 5\nmov %r0, 3\nexit"), Ok(3), "unused arguments are not read");
    assert_eq!(run("mov %r2, 8\ncall 5\ncall 16\nexit"), reg(2, 1), "used ones are");
    assert_eq!(run("mov %r2, 1\ncall local f\nmov %r0, %r2\nexit\nf:\nmov %r0, 0\nexit"), reg(2, 2));
    assert_eq!(run("mov %r0, 5\nmov %r8, 5\ncall %r8\nmov %r0, %r3\nexit"), reg(3, 3));
    // A callee gets what its caller had of r1-r5, and no more.
    assert_eq!(run("mov %r3, 7\ncall local f\nexit\nf:\nmov %r0, %r3\nexit"), Ok(7));
    assert_eq!(run_on("call local f\nexit\nf:\nmov %r0, %r2\nexit", &mut [0u8; 4]), Ok(4));
    assert_eq!(run("call local f\nexit\nf:\nmov %r0, %r4\nexit"), reg(2, 4));
}

#[test]
fn frames_start_unwritten() {
    // Each call's frame is new, even where an earlier call wrote.
    let text = "
        call local f
        call local g
        exit
    f:
        stdw [%r10-8], 1
        mov %r0, 0
        exit
    g:
        ldxdw %r0, [%r10-8]
        exit";
    assert_eq!(run(text), stack(6, -8));
    // A callee reads its caller's frame through a pointer; offsets count from the callee's r10.
    let caller = "stdw [%r10-8], 5\nmov %r1, %r10\nadd %r1, -16\ncall local f\nexit\nf:\n";
    assert_eq!(run(&format!("{caller}ldxdw %r0, [%r1+8]\nexit")), Ok(5));
    assert_eq!(run(&format!("{caller}ldxdw %r0, [%r1]\nexit")), stack(5, 512 - 16));
}

#[test]
fn helper_writing_the_stack_then_reading_it() {
    // get_current_comm (16) writes its whole buffer.
    let comm = "mov %r1, %r10\nadd %r1, -16\nmov %r2, 16\ncall 16\n";
    assert_eq!(run(&format!("{comm}ldxdw %r0, [%r10-16]\nldxdw %r0, [%r10-8]\nmov %r0, 1\nexit")), Ok(1));
    assert_eq!(run(&format!("{comm}ldxb %r0, [%r10-17]\nexit")), stack(4, -17), "and no more");
    // trace_printk (6) reads its format string, and takes up to three numbers, which may be left
    // unwritten (as the kernel's verifier allows): only the format stops the run.
    let print = "mov %r1, %r10\nadd %r1, -8\nmov %r2, 8\nmov %r3, 0\nmov %r4, 0\nmov %r5, 0\ncall 6\nmov %r0, 0\nexit";
    assert_eq!(run(print), stack(6, -8));
    assert_eq!(run(&print.replace("mov %r4, 0\n", "")), stack(5, -8));
    assert_eq!(run(&format!("stw [%r10-8], 0x41\n{print}")), stack(7, -4));
    assert_eq!(run(&format!("stdw [%r10-8], 0x41\n{print}")), Ok(0));
    // map_lookup_elem (1) reads its key (4 bytes for this array).
    let lookup = "lddw %r1, map_fd(0)\nmov %r2, %r10\nadd %r2, -4\ncall 1\nmov %r0, 0\nexit";
    let array = MapDef { map_type: MapType::Array, key_size: 4, value_size: 8, max_entries: 1, flags: 0 };
    for (text, want) in [(lookup.to_string(), stack(4, -4)), (format!("stw [%r10-4], 0\n{lookup}"), Ok(0))] {
        let program = Program::from_asm(&text).expect("assembles");
        let vm = Vm::builder(program)
            .standard_helpers()
            .map(maps::create(array).expect("array"))
            .shadow()
            .build()
            .expect("builds");
        assert_eq!(vm.execute(&mut []), want, "{text}");
    }
}

#[test]
fn var_offset_store_then_read() {
    // The offset is the input's first byte (3): the store writes r10-13, which reads back.
    let store = "ldxb %r3, [%r1]\nand %r3, 7\nmov %r4, %r10\nadd %r4, -16\nadd %r4, %r3\nstb [%r4], 9\n";
    assert_eq!(run_on(&format!("{store}ldxb %r0, [%r4]\nexit"), &mut [3]), Ok(9));
    assert_eq!(run_on(&format!("{store}ldxb %r0, [%r10-13]\nexit"), &mut [3]), Ok(9));
    // A byte the store did not write is unwritten, though the verifier takes every byte the store might
    // have written as written.
    assert_eq!(run_on(&format!("{store}ldxb %r0, [%r10-16]\nexit"), &mut [3]), stack(6, -16));
}

/// A caller that writes r0, r3-r9 and its stack, then tail-calls program array entry 0 of map 0 with
/// r1 its context.
const TAIL_CALLER: &str = "
    mov %r6, 55
    mov %r7, 56
    mov %r8, 57
    mov %r9, 58
    mov %r0, 59
    stdw [%r10-8], 1
    lddw %r2, map_fd(0)
    mov %r3, INDEX
    mov %r4, 60
    mov %r5, 61
    call 12
    mov %r0, %r1
    exit";

fn tail_call(target: &str, index: u32) -> Result<u64, ExecError> {
    let caller = Program::from_asm(&TAIL_CALLER.replace("INDEX", &index.to_string())).expect("assembles");
    let target = Program::from_asm(target).expect("assembles");
    let mut env = Env::new();
    env.add_standard_helpers();
    let def = MapDef { map_type: MapType::ProgArray, key_size: 4, value_size: 4, max_entries: 2, flags: 0 };
    let pa = maps::create(def).expect("program array");
    pa.downcast_ref::<ProgArrayMap>().expect("program array").set(0, 0).expect("set");
    env.add_map(pa);
    let vm = Vm::builder(caller).env(env).tail_call_targets(vec![target]).shadow().build().expect("builds");
    vm.execute(&mut [0u8; 3])
}

#[test]
fn tail_call_target_starts_with_r1_and_r2_only() {
    assert_eq!(tail_call("mov %r0, %r2\nexit", 0), Ok(3), "r2 is the input length");
    assert_eq!(tail_call("mov %r0, %r1\nmov %r0, 1\nexit", 0), Ok(1));
    assert_eq!(tail_call("mov %r0, %r2\nor %r0, %r3\nexit", 0), reg(1, 3));
    assert_eq!(tail_call("mov %r0, %r6\nexit", 0), reg(0, 6));
    assert_eq!(tail_call("exit", 0), reg(0, 0));
    assert_eq!(tail_call("ldxdw %r0, [%r10-8]\nexit", 0), stack(0, -8), "in a fresh frame");
    // A tail call that fails goes on as after any helper call: r0 written, r1-r5 not.
    assert_eq!(tail_call("mov %r0, 0\nexit", 1), reg(12, 1));
}

#[test]
fn budget_and_errors_of_checked_mode() {
    let program = Program::from_asm("ja -1").expect("assembles");
    let vm = Vm::builder(program).shadow().budget(10).build().expect("builds");
    assert_eq!(vm.execute(&mut []), Err(ExecError::BudgetExhausted { pc: 0 }));
    assert!(matches!(run("mov %r1, 0\nldxb %r0, [%r1]\nexit"), Err(ExecError::OutOfBounds { pc: 1, .. })));
    let err = ExecError::UninitRead { pc: 3, what: Uninit::Stack(-8) };
    assert_eq!(err.to_string(), "instruction 3: reads stack byte r10-8, which was never written");
    assert_eq!(err.pc(), 3);
    let err = ExecError::UninitRead { pc: 0, what: Uninit::Register(6) };
    assert_eq!(err.to_string(), "instruction 0: reads register r6, which was never written");
}

#[cfg(feature = "jit")]
#[test]
fn the_jit_refuses_shadow_mode() {
    let program = Program::from_asm("mov %r0, 0\nexit").expect("assembles");
    let err = Vm::builder(program).engine(ebpf_vm::Engine::Jit).shadow().build().unwrap_err();
    assert_eq!(err, ebpf_vm::BuildError::ShadowNeedsInterpreter);
}

/// A `bpf_loop` callback starts each iteration with r1, r2 and r10 only, in a fresh frame; its caller
/// gets back r0 and its own r6-r9, not r1-r5.
#[test]
fn bpf_loop_callbacks() {
    let with = |cb: &str, after: &str| {
        format!(
            "mov %r6, 7\nstdw [%r10-8], 0\nmov %r1, 3\nlddw %r2, func(cb)\nmov %r3, %r10\nadd %r3, -8\nmov %r4, 0\n\
             call 181\n{after}\nexit\ncb:\n{cb}"
        )
    };
    // Slots: 0 mov, 1 stdw, 2 mov, 3-4 lddw, 5 mov, 6 add, 7 mov, 8 call, 9 after; the callback at 10 + .
    let sum = "ldxdw %r3, [%r2+0]\nadd %r3, %r1\nstxdw [%r2+0], %r3\nmov %r0, 0\nexit";
    assert_eq!(run(&with(sum, "ldxdw %r0, [%r10-8]\nadd %r0, %r6")), Ok(3 + 7));
    assert_eq!(run(&with("mov %r0, %r3\nexit", "")), reg(10, 3), "r3 is not an argument");
    assert_eq!(run(&with("mov %r0, %r6\nexit", "")), reg(10, 6), "nor the caller's r6");
    assert_eq!(run(&with("ldxdw %r0, [%r10-8]\nexit", "")), stack(10, -8), "a fresh frame");
    // The second iteration's frame is fresh again, though the first wrote it.
    assert_eq!(
        run(&with("jeq %r1, 1, second\nstdw [%r10-8], 0\nmov %r0, 0\nexit\nsecond:\nldxdw %r0, [%r10-8]\nexit", "")),
        stack(14, -8)
    );
    assert_eq!(run(&with("mov %r0, 0\nexit", "mov %r0, %r1")), reg(9, 1), "r1 after the call");
}

/// A `bpf_for_each_map_elem` callback starts with r1 to r4 and r10, and the key's copy written at
/// the bottom of its otherwise fresh frame.
#[test]
fn map_walk_callbacks() {
    let with = |cb: &str| {
        let text =
            format!("lddw %r1, map_fd(0)\nlddw %r2, func(cb)\nmov %r3, 0\nmov %r4, 0\ncall 164\nexit\ncb:\n{cb}");
        let program = Program::from_asm(&text).unwrap_or_else(|e| panic!("{e}"));
        let map =
            maps::create(MapDef { map_type: MapType::Array, key_size: 4, value_size: 8, max_entries: 2, flags: 0 })
                .expect("array");
        let build =
            |b: ebpf_vm::VmBuilder| b.standard_helpers().map(map.clone()).budget(1_000_000).build().expect("builds");
        let result = build(Vm::builder(program.clone()).shadow()).execute(&mut [0u8; 8]);
        if result.is_ok() {
            assert_eq!(build(Vm::builder(program).checked()).execute(&mut [0u8; 8]), result);
        }
        result
    };
    // Slots: 0-1 lddw, 2-3 lddw, 4 mov, 5 mov, 6 call, 7 exit; the callback at 8.
    assert_eq!(with("ldxw %r0, [%r2+0]\nadd %r0, %r4\nmov %r0, 0\nexit"), Ok(2));
    assert_eq!(with("mov %r0, %r5\nexit"), reg(8, 5));
    assert_eq!(with("ldxdw %r0, [%r10-8]\nexit"), stack(8, -8), "the rest of the frame is fresh");
    assert_eq!(with("ldxw %r0, [%r2+4]\nexit"), Ok(2), "the rest of the key's slot is zeros: read, and 0");
    assert_eq!(with("ldxw %r0, [%r2+8]\nexit"), stack(8, -504), "only the key's slots are written");
}
