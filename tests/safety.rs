//! What a hostile program, object or host map must never do to the host: one test for each hole found
//! by trying the runtime as an attacker would, on both engines where an engine is involved, and tests
//! for the rest of each hole's class.
//!
//! The tests that need no JIT also run under Miri (`.ci/miri`), which checks them for undefined
//! behaviour and data races.

mod common;

use std::sync::Arc;

use common::objects::ObjectBuilder;
use ebpf_vm::elf::{ElfError, Object};
use ebpf_vm::isa::{Imm64, Instruction, Reg, Size};
use ebpf_vm::maps::{self, Map, MapBudget, MapDef, MapError, MapType, RingBufMap, BPF_F_RDONLY_PROG};
use ebpf_vm::{Engine, Env, ExecError, Instance, Program, Vm};

/// The engines to test: under Miri only the interpreter (compiled code cannot be interpreted).
fn engines() -> Vec<Engine> {
    let mut all = vec![Engine::Interpreter];
    if cfg!(all(feature = "jit", not(miri))) {
        #[cfg(feature = "jit")]
        all.push(Engine::Jit);
    }
    all
}

fn vm(text: &str, env: &Env, engine: Engine) -> Vm {
    let program = Program::from_asm(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    Vm::builder(program).env(env.clone()).engine(engine).checked().build().expect("builds")
}

fn ringbuf(size: u32) -> Arc<dyn Map> {
    maps::create(MapDef { map_type: MapType::RingBuf, key_size: 0, value_size: 0, max_entries: size, flags: 0 })
        .expect("ring buffer")
}

fn array(value_size: u32, flags: u32) -> Arc<dyn Map> {
    maps::create(MapDef { map_type: MapType::Array, key_size: 4, value_size, max_entries: 1, flags }).expect("array")
}

/// Hole 1: a program overwrote the header of the record it reserved, and the consumer then copied a
/// 12 KiB "record" out of a 4 KiB buffer, crashed on a 1 GiB length, and looped forever. Programs now
/// reach only the bytes of the records they hold: the header store is out of bounds.
#[test]
fn a_program_cannot_write_the_header_of_its_ring_buffer_record() {
    for engine in engines() {
        let mut env = Env::new();
        env.add_standard_helpers();
        env.add_map(ringbuf(4096));
        let program = "
            lddw %r1, map_fd(0)
            mov %r2, 16
            mov %r3, 0
            call 131
            jeq %r0, 0, +4
            mov %r6, %r0
            stdw [%r6+0], 7
            lddw %r7, 0x7fffffff
            stxdw [%r6-8], %r7
            mov %r0, 0
            exit";
        let vm = vm(program, &env, engine);
        let err = vm.execute(&mut []).expect_err("the header store is refused");
        assert!(matches!(err, ExecError::OutOfBounds { pc: 10, len: 8, write: true, .. }), "{engine:?}: {err}");
        let rb = env.map(0).and_then(|m| m.downcast_ref::<RingBufMap>()).expect("ring buffer");
        // The record the failed execution held was discarded: nothing to consume, nothing blocks, and
        // the queries are sane.
        assert_eq!(rb.consume(|r| panic!("unexpected record {r:?}")), 0);
        assert_eq!(rb.query(0), 0, "{engine:?}");
        assert!(rb.output(b"next"));
        assert_eq!(rb.drain(), vec![b"next".to_vec()]);
        assert!(!rb.is_corrupted());
    }
}

/// The rest of the class: the bytes past a record's length, a record after it was submitted, and a
/// record another execution holds are not the program's either; submitting an address that is not a
/// held record is an error, not a write into the buffer.
#[test]
fn programs_reach_only_the_records_they_hold() {
    for engine in engines() {
        let mut env = Env::new();
        env.add_standard_helpers();
        env.add_map(ringbuf(4096));
        let reserve = "lddw %r1, map_fd(0)\nmov %r2, 12\nmov %r3, 0\ncall 131\njeq %r0, 0, fail\nmov %r6, %r0\n";
        // In the record: fine. Past its 12 bytes (inside the 8-byte rounding): out of bounds.
        let ok =
            vm(&format!("{reserve}stw [%r6+8], 1\nmov %r1, %r6\nmov %r2, 0\ncall 132\nmov %r0, 5\nexit\nfail:\nmov %r0, 99\nexit"), &env, engine);
        assert_eq!(ok.execute(&mut []), Ok(5));
        let past = vm(&format!("{reserve}stw [%r6+12], 1\nexit\nfail:\nmov %r0, 99\nexit"), &env, engine);
        assert!(matches!(past.execute(&mut []), Err(ExecError::OutOfBounds { pc: 7, .. })), "{engine:?}");
        // After submit, the record is the consumer's.
        let after = vm(
            &format!("{reserve}mov %r1, %r6\nmov %r2, 0\ncall 132\nstb [%r6+0], 1\nexit\nfail:\nmov %r0, 99\nexit"),
            &env,
            engine,
        );
        assert!(matches!(after.execute(&mut []), Err(ExecError::OutOfBounds { pc: 10, .. })), "{engine:?}");
        // Submitting an address inside the buffer that is not a held record.
        let forged = vm(
            &format!("{reserve}mov %r1, %r6\nadd %r1, 16\nmov %r2, 0\ncall 132\nexit\nfail:\nmov %r0, 99\nexit"),
            &env,
            engine,
        );
        assert!(matches!(forged.execute(&mut []), Err(ExecError::Helper { pc: 10, id: 132, .. })), "{engine:?}");
        let rb = env.map(0).and_then(|m| m.downcast_ref::<RingBufMap>()).expect("ring buffer");
        let records = rb.drain();
        assert_eq!(records.len(), 2, "{engine:?}: the two submitted records");
        assert_eq!(records[0], [0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(rb.query(0), 0);
    }
}

/// A program that keeps reserving without submitting runs out of records (the execution holds at most
/// `memory::MAX_GRANTS`), and everything it held is discarded when it ends: the consumer is never
/// blocked by a record nobody will submit.
#[test]
fn records_left_reserved_are_discarded_when_the_execution_ends() {
    for engine in engines() {
        let mut env = Env::new();
        env.add_standard_helpers();
        env.add_map(ringbuf(1 << 16));
        let program = "
            mov %r6, 0
        again:
            lddw %r1, map_fd(0)
            mov %r2, 8
            mov %r3, 0
            call 131
            jeq %r0, 0, done
            add %r6, 1
            ja again
        done:
            mov %r0, %r6
            exit";
        let vm = vm(program, &env, engine);
        assert_eq!(vm.execute(&mut []), Ok(ebpf_vm::memory::MAX_GRANTS as u64), "{engine:?}");
        let rb = env.map(0).and_then(|m| m.downcast_ref::<RingBufMap>()).expect("ring buffer");
        assert_eq!(rb.consume(|_| panic!("discarded records are not passed on")), 0);
        assert_eq!(rb.query(0), 0, "{engine:?}: everything consumed");
    }
}

/// Hole 2: a tail call from a bpf-to-bpf callee panicked the interpreter (the old program's frames
/// survived the switch) and returned elsewhere on the JIT. Now, on both engines, the target replaces
/// the callee, and its result is what the callee returns to its caller.
#[test]
fn a_tail_call_from_a_callee_returns_to_the_callee_s_caller() {
    let caller = Program::from_asm(
        "
        mov %r6, 100
        call local sub
        add %r0, %r6
        exit
    sub:
        mov %r7, %r1
        lddw %r2, map_fd(0)
        mov %r3, 0
        call 12
        mov %r0, 1
        exit",
    )
    .expect("assembles");
    let target = Program::from_asm("mov %r0, 7\nexit").expect("assembles");
    for engine in engines() {
        let mut env = Env::new();
        env.add_standard_helpers();
        let pa =
            maps::create(MapDef { map_type: MapType::ProgArray, key_size: 4, value_size: 4, max_entries: 4, flags: 0 })
                .expect("program array");
        pa.downcast_ref::<maps::ProgArrayMap>().expect("program array").set(0, 0).expect("set");
        env.add_map(pa);
        let vm = Vm::builder(caller.clone())
            .env(env)
            .tail_call_targets(vec![target.clone()])
            .engine(engine)
            .checked()
            .build()
            .expect("builds");
        assert_eq!(vm.execute(&mut [0u8; 4]), Ok(107), "{engine:?}");
    }
}

/// Hole 3: after a tail call the interpreter kept r0 and r3-r9 and the JIT zeroed them. Now both start
/// the target as a program starts: r1 the context argument, r2 the input length, the rest zero.
#[test]
fn a_tail_call_target_starts_with_the_registers_of_a_program() {
    let caller = Program::from_asm(
        "mov %r6, 55\nmov %r7, 56\nmov %r8, 57\nmov %r9, 58\nmov %r0, 59\nlddw %r2, map_fd(0)\nmov %r3, 0\nmov %r4, 60\nmov %r5, 61\ncall 12\nexit",
    )
    .expect("assembles");
    let target = Program::from_asm(
        "mov %r0, %r2\nor %r0, %r3\nor %r0, %r4\nor %r0, %r5\nor %r0, %r6\nor %r0, %r7\nor %r0, %r8\nor %r0, %r9\nexit",
    )
    .expect("assembles");
    for engine in engines() {
        let mut env = Env::new();
        env.add_standard_helpers();
        let pa =
            maps::create(MapDef { map_type: MapType::ProgArray, key_size: 4, value_size: 4, max_entries: 1, flags: 0 })
                .expect("program array");
        pa.downcast_ref::<maps::ProgArrayMap>().expect("program array").set(0, 0).expect("set");
        env.add_map(pa);
        let vm = Vm::builder(caller.clone())
            .env(env)
            .tail_call_targets(vec![target.clone()])
            .engine(engine)
            .checked()
            .build()
            .expect("builds");
        assert_eq!(vm.execute(&mut [0u8; 3]), Ok(3), "{engine:?}: only r2 (the length, 3) is set");
    }
}

/// Hole 4: the entry frame was not zeroed when no instruction names r10, yet a program could reach it
/// through r1 plus a fixed distance and read the host's old stack contents. Now the stack is not
/// addressable at all by such programs: every address near the input but outside it is refused.
#[test]
fn a_program_without_r10_cannot_reach_the_stack() {
    // Reads 8 bytes at r1 + (the first 8 bytes of the input, as a signed distance).
    let program = Program::from_asm("ldxdw %r2, [%r1+0]\nadd %r2, %r1\nldxdw %r0, [%r2+0]\nexit").expect("assembles");
    assert!(!program.uses_frame_pointer());
    let span: i64 = if cfg!(miri) { 1 << 10 } else { 1 << 16 };
    for engine in engines() {
        let vm = Vm::builder(program.clone()).engine(engine).checked().build().expect("builds");
        let mut reached = Vec::new();
        let mut d = -span;
        while d < span {
            // The input lives on this test's stack, near the engine's stack frame.
            let mut input = [0u8; 16];
            input[..8].copy_from_slice(&d.to_le_bytes());
            match vm.execute(&mut input) {
                Ok(_) if (0..=8).contains(&d) => {}
                Ok(v) => reached.push((d, v)),
                Err(ExecError::OutOfBounds { .. }) => {}
                Err(e) => panic!("{engine:?}: {e}"),
            }
            d += 8;
        }
        assert!(
            reached.is_empty(),
            "{engine:?}: reached memory outside the input at {:?}",
            &reached[..reached.len().min(4)]
        );
    }
}

/// Hole 5: the JIT's shared-check planner appended a register's terms to themselves on `add r3, r3`,
/// so forty doublings asked for 2 GiB and aborted the host. Building takes linear time and memory now.
#[cfg(all(feature = "jit", not(miri)))]
#[test]
fn doubling_a_register_forty_times_builds_at_once() {
    let mut text = String::from("mov %r3, %r1\n");
    for _ in 0..40 {
        text.push_str("add %r3, %r3\n");
    }
    text.push_str("ldxb %r0, [%r3+0]\nexit");
    let program = Program::from_asm(&text).expect("assembles");
    let vm = Vm::builder(program).engine(Engine::Jit).checked().build().expect("builds");
    assert!(matches!(vm.execute(&mut [1u8; 8]), Err(ExecError::OutOfBounds { pc: 41, .. })));
}

/// Hole 6: two threads running one `Vm` with plain stores into one array value were a data race
/// under Rust's memory model. Shared memory is now only ever accessed atomically, which Miri checks:
/// two executions store into the same 8-byte words of one value while the host reads it.
#[test]
fn concurrent_executions_storing_into_one_map_value() {
    let mut env = Env::new();
    env.add_standard_helpers();
    env.add_map(array(16, 0));
    let program = "
        lddw %r6, map_value(0, 0)
        mov %r7, 0
    again:
        ldxdw %r8, [%r6+0]
        add %r8, 1
        stxdw [%r6+0], %r8
        stxdw [%r6+8], %r7
        add %r7, 1
        jlt %r7, 20, again
        mov %r0, %r7
        exit";
    for engine in engines() {
        let vm = vm(program, &env, engine);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| assert_eq!(vm.execute(&mut []), Ok(20)));
            }
            // The host reads the value while the programs write it.
            let map = env.map(0).expect("map");
            for _ in 0..5 {
                assert_eq!(map.get(&0u32.to_ne_bytes(), 0).map(|v| v.len()), Some(16));
            }
        });
        let value = env.map(0).and_then(|m| m.get(&0u32.to_ne_bytes(), 0)).expect("value");
        assert_eq!(u64::from_ne_bytes(value[8..].try_into().expect("8 bytes")), 19);
    }
}

/// Accesses of different sizes to the same bytes (a 4-byte store across two words, byte loads, the
/// host copying 8 bytes at a time): every Rust access is atomic, and the results are those of some
/// interleaving. Not run under Miri: Rust's memory model leaves racing atomic accesses of different
/// sizes undefined, although x86_64 and aarch64 define them, and a BPF program may use any size.
#[cfg(not(miri))]
#[test]
fn concurrent_accesses_of_different_sizes() {
    let mut env = Env::new();
    env.add_standard_helpers();
    env.add_map(array(16, 0));
    let program = "
        lddw %r6, map_value(0, 0)
        mov %r7, 0
    again:
        stxw [%r6+6], %r7
        ldxb %r8, [%r6+7]
        stxh [%r6+13], %r8
        add %r7, 1
        jlt %r7, 200, again
        mov %r0, %r7
        exit";
    for engine in engines() {
        let vm = vm(program, &env, engine);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| assert_eq!(vm.execute(&mut []), Ok(200)));
            }
            let map = env.map(0).expect("map");
            for _ in 0..50 {
                assert_eq!(map.get(&0u32.to_ne_bytes(), 0).map(|v| v.len()), Some(16));
            }
        });
    }
}

/// Hole 7: the loader panicked ("attempt to add with overflow", in debug builds) on a legacy map
/// symbol whose value is near `u64::MAX`. Every offset read from a file is checked.
#[test]
fn a_legacy_map_symbol_past_the_end_of_everything_is_an_error() {
    for value in [u64::MAX, u64::MAX - 3, u64::MAX - 16, 1 << 62, 21] {
        let mut b = ObjectBuilder::new();
        b.legacy_map_symbol_at("evil", value);
        b.program("socket", "prog", &[Instruction::Exit], &[]);
        match Object::parse(&b.build()) {
            Err(ElfError::Map { name, reason }) => {
                assert_eq!((name.as_str(), reason.as_str()), ("evil", "definition is truncated"))
            }
            other => panic!("{value:#x}: {other:?}"),
        }
    }
}

/// Hole 8: `.rodata` became an ordinary array map that programs could change. It is read-only for
/// programs now (as libbpf freezes it), in checked mode; the host may still set it before running.
#[test]
fn rodata_is_read_only_for_programs() {
    let mut b = ObjectBuilder::new();
    let rodata = b.data(".rodata", &7u64.to_le_bytes());
    let code = [
        Instruction::LoadImm64 { dst: Reg::R1, value: Imm64::Const(0) },
        Instruction::Load { size: Size::DW, dst: Reg::R0, src: Reg::R1, offset: 0 },
        Instruction::Store { size: Size::DW, dst: Reg::R1, offset: 0, imm: 9 },
        Instruction::Exit,
    ];
    b.program("socket", "write_rodata", &code, &[(0, rodata)]);
    let object = Object::parse(&b.build()).expect("parses");
    let spec = object.map(".rodata").expect("rodata");
    assert_eq!(spec.def.flags & BPF_F_RDONLY_PROG, BPF_F_RDONLY_PROG);
    let instance = Instance::new(&object).expect("instantiates");
    for engine in engines() {
        let vm =
            instance.vm_builder("write_rodata").expect("program").engine(engine).checked().build().expect("builds");
        assert!(matches!(vm.execute(&mut []), Err(ExecError::OutOfBounds { pc: 3, write: true, .. })), "{engine:?}");
        let value = instance.map(".rodata").and_then(|m| m.get(&0u32.to_ne_bytes(), 0)).expect("value");
        assert_eq!(value, 7u64.to_le_bytes());
    }
}

/// The rest of the class: read-only maps cannot be changed through helpers or atomics either, and
/// programs cannot change program arrays or ring buffers through map helpers.
#[test]
fn read_only_maps_refuse_helpers_and_atomics() {
    for engine in engines() {
        let mut env = Env::new();
        env.add_standard_helpers();
        env.add_map(array(8, BPF_F_RDONLY_PROG));
        env.add_map(
            maps::create(MapDef { map_type: MapType::ProgArray, key_size: 4, value_size: 4, max_entries: 4, flags: 0 })
                .expect("program array"),
        );
        let atomic = vm("lddw %r1, map_value(0, 0)\nmov %r2, 1\nlock add [%r1+0], %r2\nexit", &env, engine);
        assert!(matches!(atomic.execute(&mut []), Err(ExecError::OutOfBounds { pc: 3, .. })), "{engine:?}");
        for map in [0, 1] {
            let update = format!(
                "stw [%r10-4], 0\nstw [%r10-8], 0\nlddw %r1, map_fd({map})\nmov %r2, %r10\nadd %r2, -4\nmov %r3, %r10\nadd %r3, -8\nmov %r4, 0\ncall 2\nexit"
            );
            let update = vm(&update, &env, engine);
            assert!(matches!(update.execute(&mut []), Err(ExecError::Helper { id: 2, .. })), "{engine:?}, map {map}");
        }
    }
}

/// Hole 10: map sizes came only with a per-map limit and program arrays were filled eagerly, so a
/// 1.2 KB object took 2 GiB while it was parsed and a 20 KB one aborted on allocation failure. Now
/// parsing creates nothing, program arrays take memory only for what they hold, and the maps of an
/// object share a budget that the host sets.
#[test]
fn the_memory_an_object_may_ask_for_is_bounded() {
    let mut b = ObjectBuilder::new();
    for i in 0..16 {
        b.legacy_map(&format!("progs{i}"), [3, 4, 4, u32::MAX, 0]);
    }
    for i in 0..80 {
        b.legacy_map(&format!("big{i}"), [2, 4, 4096, 50_000, 0]);
    }
    b.program("socket", "prog", &[Instruction::Exit], &[]);
    let bytes = b.build();
    assert!(bytes.len() < 20_000);
    let object = Object::parse(&bytes).expect("parses without creating anything");
    assert_eq!(object.maps().len(), 96);
    match Instance::new(&object) {
        Err(ebpf_vm::vm::InstanceError::Map { name, error: MapError::OverBudget { .. } }) => {
            assert!(name.starts_with("big"), "{name}: the program arrays cost almost nothing");
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    // A smaller budget refuses sooner; a larger one (the host's choice) lets the maps be created.
    let small = MapBudget::new(1 << 20);
    assert!(Instance::with_budget(&object, small).is_err());
    let mut budget = MapBudget::new(64 << 20);
    let array = maps::create_within(
        MapDef { map_type: MapType::Array, key_size: 4, value_size: 8, max_entries: 4, flags: 0 },
        &mut budget,
    )
    .expect("fits");
    assert_eq!(budget.used(), 32);
    drop(array);
}

/// A per-map request past every limit, and kinds without a built-in implementation, are typed errors.
#[test]
fn impossible_maps_are_typed_errors() {
    let huge =
        MapDef { map_type: MapType::PerCpuHash, key_size: 512, value_size: u32::MAX, max_entries: u32::MAX, flags: 0 };
    assert!(matches!(maps::create(huge), Err(MapError::OverBudget { .. })));
    let other = MapDef { map_type: MapType::from_raw(8), key_size: 4, value_size: 4, max_entries: 4, flags: 0 };
    assert_eq!(maps::create(other).err(), Some(MapError::UnsupportedType(8)));
    let mut b = ObjectBuilder::new();
    b.legacy_map("cgroups", [8, 4, 4, 4, 0]);
    b.program("socket", "prog", &[Instruction::Exit], &[]);
    let object = Object::parse(&b.build()).expect("parses");
    // The object loads with a stand-in for the map; only programs that use it are refused (see
    // tests/kernel_objects.rs), and this one does not.
    let instance = Instance::new(&object).expect("loads");
    assert_eq!(
        instance.map("cgroups").expect("stand-in").update(&[0; 4], &[0; 4], 0, 0),
        Err(MapError::UnsupportedType(8))
    );
    assert!(instance.vm_builder("prog").is_ok());
}

/// `bpf_trace_printk` reads a format and strings from program memory: sizes are bounded, every byte is
/// checked, an unterminated format or one with more conversions than arguments is an error, and a `%s`
/// pointing outside the program's memory stops at the check, not in the host.
#[test]
fn trace_printk_reads_only_what_the_program_may_read() {
    for engine in engines() {
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let mut env = Env::new();
        env.add_standard_helpers();
        env.set_print_sink(Arc::new(move |l: &str| sink.lock().expect("sink").push(l.to_string())));
        let run = |fmt: &[u8], size: i64, arg: &str| {
            let mut input = vec![0u8; 64];
            input[..fmt.len()].copy_from_slice(fmt);
            let text = format!("mov %r6, %r1\nlddw %r2, {size}\n{arg}\nmov %r4, 0\nmov %r5, 0\ncall 6\nexit");
            vm(&text, &env, engine).execute(&mut input)
        };
        // A string in the input (at offset 8), printed.
        let mut fmt = b"<%s>\0\0\0\0hello\0".to_vec();
        fmt.resize(16, 0);
        assert_eq!(run(&fmt, 8, "mov %r3, %r6\nadd %r3, 8"), Ok(7), "{engine:?}");
        // A string pointer outside every region: refused by the check.
        let far = run(&fmt, 8, "lddw %r3, 0x7fff00001000");
        assert!(matches!(far, Err(ExecError::Helper { id: 6, .. })), "{engine:?}: {far:?}");
        // A string running off the end of the input (no terminator within it).
        let mut open = b"%s\0\0\0\0\0\0".to_vec();
        open.resize(64, b'x');
        let off_end = run(&open, 3, "mov %r3, %r6\nadd %r3, 8");
        assert!(matches!(off_end, Err(ExecError::Helper { id: 6, .. })), "{engine:?}: {off_end:?}");
        // A format size past the input, a size of zero, a huge size, more conversions than arguments.
        for (fmt, size) in [(&b"%d"[..], 65i64), (b"%d", 0), (b"%d", 1 << 40), (b"%d %d %d %d\0", 12)] {
            let r = run(fmt, size, "mov %r3, 1");
            assert!(matches!(r, Err(ExecError::Helper { id: 6, .. })), "{engine:?} {fmt:?} {size}: {r:?}");
        }
        assert_eq!(lines.lock().expect("sink").as_slice(), ["<hello>"]);
    }
}

/// `bpf_printk` with fewer values than three leaves the other registers unwritten, as clang's code
/// does: the program verifies (as in the kernel, whose verifier does not check them), runs verified,
/// checked and in shadow mode, and prints; a pointer in one of them is still refused as a leak.
#[test]
fn trace_printk_values_the_format_does_not_name_may_be_unwritten() {
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    let mut env = Env::new();
    env.add_standard_helpers();
    env.set_context(ebpf_vm::Context::fixed(0));
    env.set_print_sink(Arc::new(move |l: &str| sink.lock().expect("sink").push(l.to_string())));
    // "%d\0" on the stack, one value in r3; r4 and r5 never written.
    let text = "stw [%r10-8], 0x6425\nmov %r1, %r10\nadd %r1, -8\nmov %r2, 3\nmov %r3, 42\ncall 6\nmov %r0, 0\nexit";
    let mut runs = 0;
    for engine in engines() {
        for mode in ["verified", "checked", "shadow"] {
            let b = Vm::builder(Program::from_asm(text).expect("asm")).env(env.clone()).engine(engine);
            let b = match mode {
                "verified" => b.verified(),
                "checked" => b.checked(),
                _ if engine == Engine::Interpreter => b.shadow(),
                _ => continue,
            };
            let vm = b.build().unwrap_or_else(|e| panic!("{engine:?} {mode}: {e}"));
            assert_eq!(vm.execute(&mut []), Ok(0), "{engine:?} {mode}");
            runs += 1;
        }
    }
    assert_eq!(lines.lock().expect("sink").len(), runs);
    assert!(lines.lock().expect("sink").iter().all(|l| l == "42"));
    let leak = "stw [%r10-8], 0x6425\nmov %r1, %r10\nadd %r1, -8\nmov %r2, 3\nmov %r3, 42\nmov %r4, %r10\ncall 6\nmov %r0, 0\nexit";
    let refused = Vm::builder(Program::from_asm(leak).expect("asm")).env(env).verified().build();
    assert!(matches!(refused, Err(ebpf_vm::BuildError::Verify(_))), "{refused:?}");
}

/// A function too large for Cranelift's optimisations (whose time grows faster than the function) is
/// compiled without them, so a hostile program cannot hold the host; it computes the same.
#[cfg(all(feature = "jit", not(miri)))]
#[test]
fn a_function_too_large_to_optimise_compiles_and_runs() {
    let mut text = String::from("mov %r0, 0\n");
    for i in 0..20_000 {
        text.push_str(if i % 3 == 0 { "jgt %r0, 5, +1\nadd %r0, %r2\n" } else { "xor %r0, 3\n" });
    }
    text.push_str("exit");
    let program = Program::from_asm(&text).expect("assembles");
    let run =
        |engine| Vm::builder(program.clone()).engine(engine).checked().build().expect("builds").execute(&mut [0u8; 9]);
    assert_eq!(run(Engine::Jit), run(Engine::Interpreter));
}

/// A `lddw` of a `.text` function (a `bpf_loop` callback) takes its addend from the object: one that
/// is not an instruction's start, or lies past `.text`, is a typed error, never a reference into the
/// middle of code or past it.
#[test]
fn function_references_from_an_object_are_checked() {
    let build = |addend: i32| {
        let mut b = ObjectBuilder::new();
        let cb = b.text_function(
            "cb",
            &[
                Instruction::Alu {
                    width: ebpf_vm::isa::Width::W64,
                    op: ebpf_vm::isa::AluOp::Mov,
                    dst: Reg::R0,
                    src: ebpf_vm::isa::Operand::Imm(0),
                },
                Instruction::Exit,
            ],
        );
        let code = [Instruction::LoadImm64 { dst: Reg::R2, value: Imm64::Const(addend as u64) }, Instruction::Exit];
        b.program("socket", "prog", &code, &[(0, cb)]);
        Object::parse(&b.build())
    };
    let object = build(0).expect("a reference to the function's start");
    let program = &object.programs()[0].program;
    assert!(matches!(program.instructions()[0], Instruction::LoadImm64 { value: Imm64::Func(2), .. }));
    for addend in [3, -8, 16, 1 << 20] {
        assert!(
            matches!(build(addend), Err(ElfError::Relocation { .. } | ElfError::Program { .. })),
            "{addend}: {:?}",
            build(addend)
        );
    }
}

/// Found while adding helpers: in verified mode helpers read their memory without checks, trusting
/// the verifier, but a helper may read through an argument the verifier knows only as a number: the
/// `%s` of `bpf_trace_printk`, or an address a host's own (safe) helper reads with `CallContext::read`.
/// A verified program passing `0x1000` crashed the host. Helpers now check the memory they are given
/// in every mode but unchecked (where the host vouched for every address).
#[test]
fn helpers_check_addresses_the_verifier_knows_only_as_numbers() {
    use ebpf_vm::helpers::{ArgKind, CallContext, Helper, HelperSig, RetKind};
    let mut env = Env::new();
    env.add_standard_helpers();
    env.set_print_sink(Arc::new(|_: &str| {}));
    env.add_helper(Helper::new(300, "read_at", HelperSig::scalars(1), |ctx: &mut CallContext<'_>, a| {
        let mut b = [0u8; 8];
        ctx.read(a[0], &mut b)?;
        Ok(u64::from_ne_bytes(b))
    }));
    let mem = HelperSig {
        args: [ArgKind::ReadMem, ArgKind::MemSize, ArgKind::Unused, ArgKind::Unused, ArgKind::Unused],
        ret: RetKind::Scalar,
    };
    env.add_helper(Helper::new(301, "read_mem", mem, |ctx: &mut CallContext<'_>, a| {
        let mut b = [0u8; 8];
        ctx.read(a[0], &mut b)?;
        Ok(u64::from_ne_bytes(b))
    }));
    let printk = "stdw [%r10-8], 0x7325\nmov %r1, %r10\nadd %r1, -8\nmov %r2, 3\nlddw %r3, 0x1000\nmov %r4, 0\n\
                  mov %r5, 0\ncall 6\nexit";
    let host = "lddw %r1, 0x1000\ncall 300\nexit";
    let own_stack = "stdw [%r10-8], 42\nmov %r1, %r10\nadd %r1, -8\nmov %r2, 8\ncall 301\nexit";
    for engine in engines() {
        let verified = |text: &str| {
            let program = Program::from_asm(text).unwrap_or_else(|e| panic!("{e}"));
            Vm::builder(program).env(env.clone()).engine(engine).verified().build().expect("verifies").execute(&mut [])
        };
        let r = verified(printk);
        assert!(matches!(r, Err(ExecError::Helper { id: 6, .. })), "{engine:?}: {r:?}");
        let r = verified(host);
        assert!(matches!(r, Err(ExecError::Helper { id: 300, .. })), "{engine:?}: {r:?}");
        assert_eq!(verified(own_stack), Ok(42), "{engine:?}: memory the program has is read as before");
    }
}

/// `bpf_snprintf` reads a format from program memory byte by byte up to its NUL and an argument
/// array whose size must be whole u64s (at most 12): a format that runs off the program's memory is
/// an error, a bad array or format is `-EINVAL`, and the output never passes its size.
#[test]
fn snprintf_reads_and_writes_only_what_it_may() {
    for engine in engines() {
        let mut env = Env::new();
        env.add_standard_helpers();
        // Input: format at 0, arguments at 32, output at 64 (size in r2), 8 bytes of canary after it.
        let run = |fmt: &[u8], args: &[u64], out: i64, data_len: i64| {
            let mut input = vec![0u8; 96];
            input[..fmt.len()].copy_from_slice(fmt);
            for (i, a) in args.iter().enumerate() {
                input[32 + 8 * i..40 + 8 * i].copy_from_slice(&a.to_ne_bytes());
            }
            input[64 + out as usize..].fill(0xcc);
            let text = format!(
                "mov %r6, %r1\nadd %r1, 64\nmov %r2, {out}\nmov %r3, %r6\nmov %r4, %r6\nadd %r4, 32\nmov %r5, {data_len}\n\
                 call 165\nexit"
            );
            let r = vm(&text, &env, engine).execute(&mut input);
            (r, input[64..].to_vec())
        };
        let (r, out) = run(b"x=%d y=%u\0", &[5, 6], 8, 16);
        assert_eq!((r, &out[..9]), (Ok(8), &b"x=5 y=6\0\xcc"[..]), "{engine:?}");
        let (r, out) = run(b"x=%d y=%u\0", &[5, 6], 6, 16);
        assert_eq!(r, Ok(8), "{engine:?}: the whole result's size, with its NUL");
        assert_eq!(&out[..7], b"x=5 y\0\xcc", "{engine:?}: cut at 5 bytes and a NUL, nothing after");
        assert_eq!(run(b"%d\0", &[1], 8, 12).0, Ok(-22i64 as u64), "not whole u64s");
        assert_eq!(run(b"%d\0", &[1], 8, 13 * 8).0, Ok(-22i64 as u64), "more than 12 arguments");
        assert_eq!(run(b"%d %d\0", &[1], 8, 8).0, Ok(-22i64 as u64), "more conversions than arguments");
        assert_eq!(run(b"%q\0", &[1], 8, 8).0, Ok(-22i64 as u64), "an unknown conversion");
        let (r, out) = run(b"abc\0", &[], 0, 0);
        assert_eq!((r, out[0]), (Ok(4), 0xcc), "{engine:?}: size 0 writes nothing");
        // No NUL in the whole input: the format runs off the program's memory.
        let r = run(&[b'a'; 96], &[], 8, 0).0;
        assert!(matches!(r, Err(ExecError::Helper { id: 165, .. })), "{engine:?}: {r:?}");
    }
}

/// `bpf_spin_lock` in checked mode, where nothing proved the pairing: a lock still held when the
/// program ends is released (the next execution does not wait forever), a second lock is an error
/// instead of waiting for itself, a lock word outside a map value or misaligned is refused, and a
/// release of the lock through the ring-buffer helpers does not drop it.
#[test]
fn spin_locks_cannot_hang_the_host() {
    let lookup =
        "stw [%r10-4], 0\nmov %r2, %r10\nadd %r2, -4\nlddw %r1, map_idx(0)\ncall 1\njeq %r0, 0, out\nmov %r6, %r0\n";
    for engine in engines() {
        let mut env = Env::new();
        env.add_standard_helpers();
        env.add_map(array(8, 0));
        env.add_map(ringbuf(4096));
        let run = |body: &str| {
            let text = format!("{lookup}{body}\nout:\nmov %r0, 0\nexit");
            vm(&text, &env, engine).execute(&mut [])
        };
        let helper_error =
            |r: Result<u64, ExecError>, id: u32| matches!(r, Err(ExecError::Helper { id: i, .. }) if i == id);
        for _ in 0..3 {
            assert_eq!(
                run("mov %r1, %r6\ncall 93\nmov %r0, 0\nexit"),
                Ok(0),
                "{engine:?}: held at exit, then released"
            );
        }
        assert!(helper_error(run("mov %r1, %r6\ncall 93\nmov %r1, %r6\ncall 93"), 93), "{engine:?}: a second lock");
        assert!(helper_error(run("mov %r1, %r10\nadd %r1, -8\ncall 93"), 93), "{engine:?}: on the stack");
        assert!(helper_error(run("mov %r1, %r6\nadd %r1, 2\ncall 93"), 93), "{engine:?}: misaligned");
        assert!(helper_error(run("mov %r1, %r6\ncall 94"), 94), "{engine:?}: not held");
        let submit = run("mov %r1, %r6\ncall 93\nmov %r1, %r6\nmov %r2, 0\ncall 132");
        assert!(helper_error(submit, 132), "{engine:?}: a lock is no record");
        assert_eq!(
            run("mov %r1, %r6\ncall 93\nmov %r1, %r6\ncall 94\nmov %r0, 7\nexit"),
            Ok(7),
            "{engine:?}: still free"
        );
    }
}
