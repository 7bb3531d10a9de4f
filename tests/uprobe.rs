//! Uprobes and uretprobes on functions of this test binary: entry programs see the arguments and
//! return programs the return value, on both engines; four threads calling the function are counted
//! exactly; a detach while threads call crashes nothing and loses no call that finished before it
//! began; and each kind of bad attach is a clear error that leaves the function working. On x86_64
//! and aarch64 (where the suite runs under qemu-user), with the instruction-set's own cases of each
//! (x86_64: several instructions displaced, the red zone; aarch64: PC-relative first instructions).
#![cfg(all(feature = "attach", target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};

use ebpf_vm::attach::uprobe::pt_regs::{PARM, RC};
use ebpf_vm::attach::uprobe::syscalls::{self, SyscallTracepoint, TracepointKind};
use ebpf_vm::attach::uprobe::{self, attach_object, AttachError, ProbeKind, Target, Uprobe};
use ebpf_vm::elf::Object;
use ebpf_vm::maps::{self, Map, MapDef, MapType};
use ebpf_vm::Instance;
use ebpf_vm::{BuildError, Context, Engine, Env, Program, Vm};

/// Probes patch shared code: the tests take turns.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[no_mangle]
#[inline(never)]
pub extern "C" fn ebpf_vm_test_mul_add(a: u64, b: u64, c: u64) -> u64 {
    black_box(a).wrapping_mul(black_box(b)).wrapping_add(black_box(c))
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn ebpf_vm_test_fixture_target(a: u64, b: u64, c: u64) -> u64 {
    black_box(a).wrapping_add(black_box(b)).wrapping_mul(black_box(c))
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn ebpf_vm_test_threads(a: u64, b: u64) -> u64 {
    black_box(a).wrapping_mul(3).wrapping_add(black_box(b))
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn ebpf_vm_test_multi_one(a: u64) -> u64 {
    black_box(a) + 1
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn ebpf_vm_test_multi_two(a: u64) -> u64 {
    black_box(a) * 2
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn ebpf_vm_test_multi_three(a: u64) -> u64 {
    black_box(a).wrapping_mul(3)
}

/// Sums 1..=n recursively (a call per level).
#[no_mangle]
#[inline(never)]
pub extern "C" fn ebpf_vm_test_recursive(n: u64) -> u64 {
    if black_box(n) == 0 {
        0
    } else {
        n + black_box(ebpf_vm_test_recursive as extern "C" fn(u64) -> u64)(n - 1)
    }
}

#[no_mangle]
#[inline(never)]
pub extern "C" fn ebpf_vm_test_bad_input(a: u64) -> u64 {
    black_box(a).wrapping_mul(7).wrapping_add(1)
}

// Two one-byte functions side by side (no padding between them), and one whose loop branches back
// into its first five bytes.
#[cfg(target_arch = "x86_64")]
std::arch::global_asm!(
    ".text",
    ".globl ebpf_vm_test_tiny",
    ".type ebpf_vm_test_tiny, @function",
    "ebpf_vm_test_tiny:",
    "ret",
    ".size ebpf_vm_test_tiny, 1",
    ".globl ebpf_vm_test_tiny_next",
    ".type ebpf_vm_test_tiny_next, @function",
    "ebpf_vm_test_tiny_next:",
    "ret",
    ".size ebpf_vm_test_tiny_next, 1",
    ".p2align 4",
    ".globl ebpf_vm_test_branchy",
    ".type ebpf_vm_test_branchy, @function",
    "ebpf_vm_test_branchy:",
    "xor eax, eax",
    "2:",
    "add eax, 1",
    "cmp eax, edi",
    "jb 2b",
    "ret",
    ".size ebpf_vm_test_branchy, .-ebpf_vm_test_branchy",
    // Keeps its argument in the red zone across a probe 8 bytes in, then returns it plus 1.
    ".p2align 4",
    ".globl ebpf_vm_test_red_zone",
    ".type ebpf_vm_test_red_zone, @function",
    "ebpf_vm_test_red_zone:",
    "mov [rsp - 8], rdi",
    "nop dword ptr [rax]",
    "mov rax, [rsp - 8]",
    "add rax, 1",
    "ret",
    ".size ebpf_vm_test_red_zone, .-ebpf_vm_test_red_zone",
    // The system call numbered by its fourth argument, on the first three: the `syscall` is the second
    // of the three instructions a probe displaces, so a thread blocked in it is stopped inside them.
    ".p2align 4",
    ".globl ebpf_vm_test_blocking",
    ".type ebpf_vm_test_blocking, @function",
    "ebpf_vm_test_blocking:",
    "mov eax, ecx",
    "syscall",
    "nop",
    "ret",
    ".size ebpf_vm_test_blocking, .-ebpf_vm_test_blocking",
    // Its argument plus 1, in steps of 1, 3 and 4 bytes: a probe displaces three instructions.
    ".p2align 4",
    ".globl ebpf_vm_test_short_steps",
    ".type ebpf_vm_test_short_steps, @function",
    "ebpf_vm_test_short_steps:",
    "push rbx",
    "mov rbx, rdi",
    "lea rax, [rbx + 1]",
    "pop rbx",
    "ret",
    ".size ebpf_vm_test_short_steps, .-ebpf_vm_test_short_steps",
);

#[cfg(target_arch = "x86_64")]
extern "C" {
    fn ebpf_vm_test_short_steps(a: u64) -> u64;
    fn ebpf_vm_test_blocking(fd: i32, buf: *mut u8, len: usize, nr: i64) -> i64;
    fn ebpf_vm_test_red_zone(a: u64) -> u64;
    fn ebpf_vm_test_tiny();
    fn ebpf_vm_test_branchy(n: u32) -> u32;
}

// aarch64: functions whose probed instruction reads the program counter (a probe moves it into the
// trampoline, rewritten for its new place), each with what it returns.
#[cfg(target_arch = "aarch64")]
std::arch::global_asm!(
    ".text",
    // x0 + 0x1234, loaded through an address `adr` computes.
    ".p2align 3",
    ".globl ebpf_vm_test_arm_adr",
    ".type ebpf_vm_test_arm_adr, %function",
    "ebpf_vm_test_arm_adr:",
    "adr x1, 1f",
    "ldr x1, [x1]",
    "add x0, x0, x1",
    "ret",
    ".p2align 3",
    "1: .quad 0x1234",
    ".size ebpf_vm_test_arm_adr, .-ebpf_vm_test_arm_adr",
    // x0 + 0x55, from a literal.
    ".p2align 3",
    ".globl ebpf_vm_test_arm_literal",
    ".type ebpf_vm_test_arm_literal, %function",
    "ebpf_vm_test_arm_literal:",
    "ldr x1, 2f",
    "add x0, x0, x1",
    "ret",
    ".p2align 3",
    "2: .quad 0x55",
    ".size ebpf_vm_test_arm_literal, .-ebpf_vm_test_arm_literal",
    // 7 if x0 is 0, else x0 + 1.
    ".globl ebpf_vm_test_arm_cbz",
    ".type ebpf_vm_test_arm_cbz, %function",
    "ebpf_vm_test_arm_cbz:",
    "cbz x0, 3f",
    "add x0, x0, #1",
    "ret",
    "3: mov x0, #7",
    "ret",
    ".size ebpf_vm_test_arm_cbz, .-ebpf_vm_test_arm_cbz",
    // 100 if bit 3 of x0 is set, else 200.
    ".globl ebpf_vm_test_arm_tbnz",
    ".type ebpf_vm_test_arm_tbnz, %function",
    "ebpf_vm_test_arm_tbnz:",
    "tbnz x0, #3, 4f",
    "mov x0, #200",
    "ret",
    "4: mov x0, #100",
    "ret",
    ".size ebpf_vm_test_arm_tbnz, .-ebpf_vm_test_arm_tbnz",
    // 1 if x0 < 10, else 2: the `b.lo` is the second instruction (probed 4 bytes in).
    ".globl ebpf_vm_test_arm_bcond",
    ".type ebpf_vm_test_arm_bcond, %function",
    "ebpf_vm_test_arm_bcond:",
    "cmp x0, #10",
    "b.lo 5f",
    "mov x0, #2",
    "ret",
    "5: mov x0, #1",
    "ret",
    ".size ebpf_vm_test_arm_bcond, .-ebpf_vm_test_arm_bcond",
    // 2 * x0 through a call (`bl`, probed 4 bytes in), plus the callee's link register minus the
    // call's own address (4 exactly when the link register is what the call itself would set),
    // returning to the caller through x9.
    ".globl ebpf_vm_test_arm_bl",
    ".type ebpf_vm_test_arm_bl, %function",
    "ebpf_vm_test_arm_bl:",
    "mov x9, x30",
    "6: bl ebpf_vm_test_arm_double",
    "adr x3, 6b",
    "sub x2, x2, x3",
    "add x0, x0, x2",
    "ret x9",
    ".size ebpf_vm_test_arm_bl, .-ebpf_vm_test_arm_bl",
    ".type ebpf_vm_test_arm_double, %function",
    "ebpf_vm_test_arm_double:",
    "add x0, x0, x0",
    "mov x2, x30",
    "ret",
    ".size ebpf_vm_test_arm_double, .-ebpf_vm_test_arm_double",
    // The address of the page that holds EBPF_VM_TEST_ARM_DATA.
    ".globl ebpf_vm_test_arm_adrp",
    ".type ebpf_vm_test_arm_adrp, %function",
    "ebpf_vm_test_arm_adrp:",
    "adrp x0, EBPF_VM_TEST_ARM_DATA",
    "ret",
    ".size ebpf_vm_test_arm_adrp, .-ebpf_vm_test_arm_adrp",
);

#[cfg(target_arch = "aarch64")]
#[no_mangle]
pub static EBPF_VM_TEST_ARM_DATA: u64 = 0;

#[cfg(target_arch = "aarch64")]
extern "C" {
    fn ebpf_vm_test_arm_adr(a: u64) -> u64;
    fn ebpf_vm_test_arm_literal(a: u64) -> u64;
    fn ebpf_vm_test_arm_cbz(a: u64) -> u64;
    fn ebpf_vm_test_arm_tbnz(a: u64) -> u64;
    fn ebpf_vm_test_arm_bcond(a: u64) -> u64;
    fn ebpf_vm_test_arm_bl(a: u64) -> u64;
    fn ebpf_vm_test_arm_adrp() -> u64;
}

/// An array map of one value of `words` 8-byte words.
fn record(words: u32) -> Arc<dyn Map> {
    maps::create(MapDef { map_type: MapType::Array, key_size: 4, value_size: 8 * words, max_entries: 1, flags: 0 })
        .expect("array")
}

fn words(map: &Arc<dyn Map>) -> Vec<u64> {
    words_of(map.as_ref())
}

fn words_of(map: &dyn Map) -> Vec<u64> {
    let v = map.get(&0u32.to_ne_bytes(), 0).expect("element 0");
    v.chunks(8).map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes"))).collect()
}

/// A probe program for `engine` with map 0: adds 1 to word 0 and, for each `(pt_regs offset, word)`,
/// stores the register into the word (`add` instead of storing when the word is 3: a sum).
fn probe(engine: Engine, map: &Arc<dyn Map>, regs: &[(u32, u32)]) -> Arc<Vm> {
    let mut text = String::from(
        "mov %r6, %r1\nstw [%r10-4], 0\nmov %r2, %r10\nadd %r2, -4\nlddw %r1, map_fd(0)\ncall 1\njeq %r0, 0, out\n\
         mov %r1, 1\nlock add [%r0+0], %r1\n",
    );
    for &(reg, word) in regs {
        text.push_str(&format!("ldxdw %r1, [%r6+{reg}]\n"));
        if word == 3 {
            text.push_str(&format!("lock add [%r0+{}], %r1\n", word * 8));
        } else {
            text.push_str(&format!("stxdw [%r0+{}], %r1\n", word * 8));
        }
    }
    text.push_str("out:\nmov %r0, 0\nexit");
    let mut env = Env::new();
    env.add_standard_helpers();
    env.add_map(map.clone());
    env.set_context(uprobe::context());
    let program = Program::from_asm(&text).unwrap_or_else(|e| panic!("{e}"));
    Arc::new(Vm::builder(program).env(env).engine(engine).verified().build().unwrap_or_else(|e| panic!("{e}")))
}

#[test]
fn entry_and_return_programs_see_arguments_and_the_return_value() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for engine in [Engine::Interpreter, Engine::Jit] {
        let (args, ret) = (record(4), record(4));
        let target = Target::symbol("ebpf_vm_test_mul_add");
        let on_entry = probe(engine, &args, &[(PARM[0], 1), (PARM[1], 2), (PARM[2], 3)]);
        let on_return = probe(engine, &ret, &[(RC, 1), (RC, 3)]);
        let entry = Uprobe::attach(&target, ProbeKind::Entry, on_entry).expect("entry probe");
        let exit = Uprobe::attach(&target, ProbeKind::Return, on_return).expect("return probe");
        assert_eq!(ebpf_vm_test_mul_add(6, 7, 8), 50);
        assert_eq!(ebpf_vm_test_mul_add(2, 3, 4), 10);
        assert_eq!(words(&args), [2, 2, 3, 8 + 4], "{engine:?}: calls, last a, last b, sum of c");
        assert_eq!(words(&ret), [2, 10, 0, 60], "{engine:?}: returns, last value, -, sum of values");
        drop(entry);
        assert_eq!(ebpf_vm_test_mul_add(1, 1, 1), 2);
        assert_eq!(words(&args)[0], 2, "detached");
        assert_eq!(words(&ret)[0], 3, "the return probe is still attached");
        exit.detach();
        assert_eq!(ebpf_vm_test_mul_add(1, 1, 1), 2);
        assert_eq!(words(&ret)[0], 3, "detached");
    }
}

#[test]
fn four_threads_are_counted_exactly_and_a_detach_under_load_is_safe() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const THREADS: u64 = 4;
    const CALLS: u64 = 20_000;
    for engine in [Engine::Jit, Engine::Interpreter] {
        let (args, ret) = (record(4), record(4));
        let target = Target::symbol("ebpf_vm_test_threads");
        let entry =
            Uprobe::attach(&target, ProbeKind::Entry, probe(engine, &args, &[(PARM[1], 3)])).expect("entry probe");
        let exit = Uprobe::attach(&target, ProbeKind::Return, probe(engine, &ret, &[(RC, 3)])).expect("return probe");
        // Exact counts: every call probed at entry and at return.
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                std::thread::spawn(move || {
                    let mut sum = 0u64;
                    for i in 0..CALLS {
                        sum = sum.wrapping_add(ebpf_vm_test_threads(t, i));
                    }
                    sum
                })
            })
            .collect();
        let returned: u64 = threads.into_iter().map(|t| t.join().expect("thread")).fold(0, u64::wrapping_add);
        let b_sum: u64 = THREADS * (CALLS * (CALLS - 1) / 2);
        assert_eq!(words(&args)[0], THREADS * CALLS, "{engine:?}: entries");
        assert_eq!(words(&args)[3], b_sum, "{engine:?}: sum of the second arguments");
        assert_eq!(words(&ret)[0], THREADS * CALLS, "{engine:?}: returns");
        assert_eq!(words(&ret)[3], returned, "{engine:?}: sum of the return values");

        // Detach while the threads call: nothing crashes, and every call finished before the detach
        // began was counted; none is counted after it returned.
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let start = Arc::new(Barrier::new(THREADS as usize + 1));
        let before = words(&args)[0];
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let (stop, done, start) = (stop.clone(), done.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        assert_eq!(ebpf_vm_test_threads(t, i), t * 3 + i);
                        done.fetch_add(1, Ordering::SeqCst);
                        i += 1;
                    }
                })
            })
            .collect();
        start.wait();
        while done.load(Ordering::SeqCst) < 1000 {
            std::thread::yield_now();
        }
        let finished = done.load(Ordering::SeqCst);
        entry.detach();
        exit.detach();
        let counted = words(&args)[0] - before;
        assert!(counted >= finished, "{engine:?}: {finished} calls finished before the detach, {counted} counted");
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(words(&args)[0] - before, counted, "{engine:?}: a call was counted after the detach");
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().expect("no thread crashed");
        }
    }
}

#[test]
fn bad_attaches_are_clear_errors_and_leave_the_function_working() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let map = record(4);
    let good = probe(Engine::Jit, &map, &[]);
    let target = Target::symbol("ebpf_vm_test_bad_input");

    let missing = Uprobe::attach(&Target::symbol("ebpf_vm_no_such_function"), ProbeKind::Entry, good.clone());
    assert_eq!(missing.unwrap_err(), AttachError::NoSymbol("ebpf_vm_no_such_function".into()));

    // x86_64: a function shorter than the jump, and one that branches into the bytes it would replace
    // (aarch64 replaces one instruction: every function holds it, and no branch lands inside it).
    #[cfg(target_arch = "x86_64")]
    {
        let tiny = Uprobe::attach(&Target::symbol("ebpf_vm_test_tiny"), ProbeKind::Entry, good.clone());
        assert!(
            matches!(tiny, Err(AttachError::TooShort { ref name, size: 1 }) if name == "ebpf_vm_test_tiny"),
            "{tiny:?}"
        );
        // SAFETY: the function only returns.
        unsafe { ebpf_vm_test_tiny() };

        let branchy = Uprobe::attach(&Target::symbol("ebpf_vm_test_branchy"), ProbeKind::Entry, good.clone());
        assert!(matches!(branchy, Err(AttachError::BranchIntoPatch { .. })), "{branchy:?}");
        // SAFETY: the function counts up to its argument.
        assert_eq!(unsafe { ebpf_vm_test_branchy(5) }, 5);
    }
    // aarch64: an address that is not an instruction's start.
    #[cfg(target_arch = "aarch64")]
    {
        let odd = Target::Symbol { path: None, name: "ebpf_vm_test_bad_input".into(), offset: 2 };
        let odd = Uprobe::attach(&odd, ProbeKind::Entry, good.clone());
        assert!(matches!(odd, Err(AttachError::NotAnInstruction(_))), "{odd:?}");
    }

    // A program that writes the registers does not verify against the pt_regs context.
    let mut env = Env::new();
    env.set_context(uprobe::context());
    let writes = Program::from_asm(&format!("mov %r0, 0\nstxdw [%r1+{}], %r0\nexit", PARM[0])).expect("assembles");
    let refused = Vm::builder(writes).env(env).verified().build();
    assert!(matches!(refused, Err(BuildError::Verify(_))), "{refused:?}");
    // Programs built for another context, or checked, are refused by attach.
    let mut env = Env::new();
    env.set_context(Context::fixed(uprobe::PT_REGS_SIZE));
    let other =
        Arc::new(Vm::builder(Program::from_asm("mov %r0, 0\nexit").expect("asm")).env(env).build().expect("builds"));
    assert_eq!(Uprobe::attach(&target, ProbeKind::Entry, other).unwrap_err(), AttachError::WrongContext);
    let mut env = Env::new();
    env.set_context(uprobe::context());
    let checked = Arc::new(
        Vm::builder(Program::from_asm("mov %r0, 0\nexit").expect("asm")).env(env).checked().build().expect("builds"),
    );
    assert!(matches!(Uprobe::attach(&target, ProbeKind::Entry, checked), Err(AttachError::NotVerified(_))));

    // A second program of the same kind at the same function.
    let first = Uprobe::attach(&target, ProbeKind::Entry, good.clone()).expect("first");
    let second = Uprobe::attach(&target, ProbeKind::Entry, good.clone());
    assert!(matches!(second, Err(AttachError::AlreadyAttached { what: "an entry probe", .. })), "{second:?}");
    // A return probe inside the function.
    let inside = Target::Symbol { path: None, name: "ebpf_vm_test_bad_input".into(), offset: 1 };
    assert!(matches!(Uprobe::attach(&inside, ProbeKind::Return, good.clone()), Err(AttachError::ReturnInside(1))));
    assert_eq!(ebpf_vm_test_bad_input(6), 43);
    assert_eq!(words(&map)[0], 1, "the first probe runs, once");
    drop(first);
    assert_eq!(ebpf_vm_test_bad_input(6), 43);
    assert_eq!(words(&map)[0], 1);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn a_probe_inside_a_function_keeps_its_red_zone() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let map = record(4);
    // 8 bytes in, `rdi` is also below the stack pointer, where the function reads it back.
    let target = Target::Symbol { path: None, name: "ebpf_vm_test_red_zone".into(), offset: 8 };
    let probe = Uprobe::attach(&target, ProbeKind::Entry, probe(Engine::Jit, &map, &[(PARM[0], 1)]))
        .expect("probe inside the function");
    // SAFETY: the function returns its argument plus 1.
    assert_eq!(unsafe { ebpf_vm_test_red_zone(41) }, 42);
    assert_eq!(words(&map)[..2], [1, 41]);
    drop(probe);
}

#[test]
fn a_library_function_is_probed_by_its_file_name() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let map = record(4);
    let target = Target::Symbol { path: Some("libc.so.6".into()), name: "getpid".into(), offset: 0 };
    let entry = Uprobe::attach(&target, ProbeKind::Entry, probe(Engine::Jit, &map, &[])).expect("entry probe");
    let exit = Uprobe::attach(&target, ProbeKind::Return, probe(Engine::Jit, &map, &[(RC, 1)])).expect("return probe");
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    drop((entry, exit));
    assert_eq!(pid as u32, std::process::id());
    // Other threads of the test binary may call getpid too: at least this call, entry and return.
    let w = words(&map);
    assert!(w[0] >= 2, "{w:?}");
    assert_eq!(w[1], std::process::id() as u64, "the return probe saw the process id");
}

#[cfg(target_arch = "x86_64")]
#[test]
fn a_thread_blocked_inside_the_replaced_instructions_resumes_in_the_trampoline() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (read_end, write_end) = (fds[0], fds[1]);
    // A thread blocks reading the empty pipe in the `syscall` between the first and the third
    // instruction the jump will replace.
    let reader = std::thread::spawn(move || {
        let mut byte = 0u8;
        // SAFETY: a pipe's read end and a one-byte buffer.
        let n = unsafe { ebpf_vm_test_blocking(read_end, &mut byte, 1, libc::SYS_read) };
        (n, byte)
    });
    std::thread::sleep(std::time::Duration::from_millis(100));
    let map = record(4);
    let probe =
        Uprobe::attach(&Target::symbol("ebpf_vm_test_blocking"), ProbeKind::Entry, probe(Engine::Jit, &map, &[]))
            .expect("probe over three instructions");
    // The blocked thread was moved to the trampoline's copy of the `syscall`: it reads once woken.
    // SAFETY: the pipe's write end and one byte.
    assert_eq!(unsafe { libc::write(write_end, [42u8].as_ptr().cast(), 1) }, 1);
    assert_eq!(reader.join().expect("the blocked thread resumed"), (1, 42));
    assert_eq!(words(&map)[0], 0, "its call began before the probe");
    // A call made now is probed.
    // SAFETY: as above.
    assert_eq!(unsafe { libc::write(write_end, [7u8].as_ptr().cast(), 1) }, 1);
    let mut byte = 0u8;
    // SAFETY: the pipe's read end, with a byte waiting.
    assert_eq!(unsafe { ebpf_vm_test_blocking(read_end, &mut byte, 1, libc::SYS_read) }, 1);
    assert_eq!((byte, words(&map)[0]), (7, 1));
    drop(probe);
    // SAFETY: the pipe's descriptors, closed once.
    unsafe {
        libc::close(read_end);
        libc::close(write_end);
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn attach_and_detach_cycles_while_threads_run_the_replaced_instructions() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let (stop, calls) = (stop.clone(), calls.clone());
            std::thread::spawn(move || {
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: the function returns its argument plus 1.
                    assert_eq!(unsafe { ebpf_vm_test_short_steps(i) }, i + 1);
                    calls.fetch_add(1, Ordering::Relaxed);
                    i += 4;
                }
            })
        })
        .collect();
    let map = record(4);
    let program = probe(Engine::Jit, &map, &[(PARM[0], 1)]);
    let target = Target::symbol("ebpf_vm_test_short_steps");
    for kind in [ProbeKind::Entry, ProbeKind::Return].into_iter().cycle().take(40) {
        let before = words(&map)[0];
        let probe = Uprobe::attach(&target, kind, program.clone()).unwrap_or_else(|e| panic!("{kind:?}: {e:?}"));
        while words(&map)[0] == before {
            std::thread::yield_now();
        }
        drop(probe);
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("no thread crashed or saw a wrong result");
    }
    assert!(words(&map)[0] >= 40, "each attachment ran");
    assert!(calls.load(Ordering::Relaxed) >= words(&map)[0] / 2);
}

#[test]
fn an_object_built_by_clang_attaches_by_its_section_names() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Built with libbpf's macros for this architecture's pt_regs.
    #[cfg(target_arch = "x86_64")]
    let object = Object::parse(include_bytes!("fixtures/uprobe_args.o")).expect("the fixture parses");
    #[cfg(target_arch = "aarch64")]
    let object = Object::parse(include_bytes!("fixtures/arm64/uprobe_args.o")).expect("the fixture parses");
    for engine in [Engine::Jit, Engine::Interpreter] {
        let instance = Instance::new(&object).expect("maps");
        // A `const volatile` set before load, as a libbpf loader does.
        let rodata = instance.map(".rodata").expect(".rodata");
        rodata.update(&0u32.to_ne_bytes(), &3u64.to_ne_bytes(), 0, 0).expect("scale = 3");
        let probes = attach_object(&instance, engine).expect("both programs attach");
        assert!(probes.iter().all(|a| matches!(a, uprobe::Attachment::Probe(_))));
        assert_eq!(probes.len(), 2);
        assert_eq!(ebpf_vm_test_fixture_target(5, 6, 7), 77);
        assert_eq!(ebpf_vm_test_fixture_target(1, 2, 3), 9);
        drop(probes);
        assert_eq!(ebpf_vm_test_fixture_target(1, 1, 1), 2);
        let stats = words(instance.map("stats").expect("stats"));
        assert_eq!(stats, [2, 3, 2, 3, 2, 86], "{engine:?}: calls, a * scale, b, c, returns, sum of returns");
    }
    // An object with a program in a section that is no probe: nothing attaches.
    let hooks = Object::parse(include_bytes!("fixtures/hash_count.o")).expect("parses");
    let refused = attach_object(&Instance::new(&hooks).expect("maps"), Engine::Jit);
    assert!(matches!(refused, Err(AttachError::UnsupportedSection { .. })), "{refused:?}");
}

/// A tracepoint program for `engine` on `context` with map 0: for this thread's calls only (the
/// context's thread id at offset 4 is `tid`), adds 1 to word 0, stores the word at `at` into word 1
/// and adds it to word 3.
fn tracepoint(engine: Engine, map: &Arc<dyn Map>, context: Context, tid: u32, at: u32) -> Arc<Vm> {
    let text = format!(
        "mov %r6, %r1\nldxw %r1, [%r6+4]\njne %r1, {tid}, out\nstw [%r10-4], 0\nmov %r2, %r10\nadd %r2, -4\n\
         lddw %r1, map_fd(0)\ncall 1\njeq %r0, 0, out\nmov %r1, 1\nlock add [%r0+0], %r1\n\
         ldxdw %r1, [%r6+{at}]\nstxdw [%r0+8], %r1\nlock add [%r0+24], %r1\nout:\nmov %r0, 0\nexit"
    );
    let mut env = Env::new();
    env.add_standard_helpers();
    env.add_map(map.clone());
    env.set_context(context);
    let program = Program::from_asm(&text).unwrap_or_else(|e| panic!("{e}"));
    Arc::new(Vm::builder(program).env(env).engine(engine).verified().build().unwrap_or_else(|e| panic!("{e}")))
}

#[test]
fn syscall_tracepoints_count_openat_calls_exactly() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    for engine in [Engine::Jit, Engine::Interpreter] {
        let (enter, exit) = (record(4), record(4));
        // sys_enter_openat: args[2] (the flags) at 32; sys_exit_openat: the return value at 16.
        let on_enter = tracepoint(engine, &enter, syscalls::enter_context(), tid, 32);
        let on_exit = tracepoint(engine, &exit, syscalls::exit_context(), tid, 16);
        let entering = SyscallTracepoint::attach("openat", TracepointKind::Enter, on_enter).expect("sys_enter_openat");
        let exiting = SyscallTracepoint::attach("openat", TracepointKind::Exit, on_exit).expect("sys_exit_openat");
        // Attaching read this process's maps and files: count from here.
        let (e0, x0) = (words(&enter)[0], words(&exit)[0]);
        let file = std::fs::File::open("/dev/null").expect("std opens through libc");
        let (null, missing) = (c"/dev/null", c"/nonexistent/ebpf-vm");
        let mut fds = Vec::new();
        // SAFETY: NUL-terminated paths; descriptors closed below.
        unsafe {
            for _ in 0..3 {
                fds.push(libc::openat(libc::AT_FDCWD, null.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC));
            }
            for _ in 0..2 {
                fds.push(libc::open(null.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC));
            }
            assert_eq!(libc::open(missing.as_ptr(), libc::O_RDONLY | libc::O_NOFOLLOW), -1);
        }
        let (e, x) = (words(&enter), words(&exit));
        drop((entering, exiting));
        drop(file);
        for fd in fds {
            assert!(fd >= 0);
            // SAFETY: opened above.
            unsafe { libc::close(fd) };
        }
        assert_eq!(
            e[0] - e0,
            7,
            "{engine:?}: 1 from std, 3 openat, 3 open, as the kernel's sys_enter_openat counts them"
        );
        assert_eq!(e[1] as i32, libc::O_RDONLY | libc::O_NOFOLLOW, "{engine:?}: the last call's flags (args[2])");
        assert_eq!(x[0] - x0, 7, "{engine:?}: every call returned");
        assert_eq!(x[1] as i64, -(libc::ENOENT as i64), "{engine:?}: the last call failed with -ENOENT");
        assert!(syscalls::covered().any(|(name, functions)| name == "openat" && functions.contains(&"open")));
    }
    let mut env = Env::new();
    env.set_context(uprobe::context());
    let regs =
        Arc::new(Vm::builder(Program::from_asm("mov %r0, 0\nexit").expect("asm")).env(env).build().expect("builds"));
    assert_eq!(
        SyscallTracepoint::attach("openat", TracepointKind::Enter, regs.clone()).unwrap_err(),
        AttachError::WrongContext
    );
    assert_eq!(
        SyscallTracepoint::attach("no_such_call", TracepointKind::Enter, regs).unwrap_err(),
        AttachError::NoSyscall("no_such_call".into())
    );
}

#[test]
fn syscall_tracepoints_of_an_object_built_by_clang() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    let object = Object::parse(include_bytes!("fixtures/uprobe_syscalls.o")).expect("the fixture parses");
    for engine in [Engine::Jit, Engine::Interpreter] {
        let instance = Instance::new(&object).expect("maps");
        let rodata = instance.map(".rodata").expect(".rodata");
        rodata.update(&0u32.to_ne_bytes(), &tid.to_ne_bytes(), 0, 0).expect("target_tid");
        let attached = attach_object(&instance, engine).expect("both tracepoints attach");
        let stats = instance.map("openat_stats").expect("stats").clone();
        let before = words(&stats);
        // SAFETY: NUL-terminated paths; the descriptor is closed.
        unsafe {
            let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            assert!(fd >= 0);
            libc::close(fd);
            assert_eq!(libc::openat(libc::AT_FDCWD, c"/nonexistent/x".as_ptr(), libc::O_RDONLY), -1);
        }
        let after = words(&stats);
        drop(attached);
        assert_eq!(after[0] - before[0], 2, "{engine:?}: entered");
        assert_eq!(after[1] - before[1], 2, "{engine:?}: exited");
        assert_eq!(after[2], libc::O_RDONLY as u64, "{engine:?}: the last call's flags");
        assert_eq!(after[3] as i64, -(libc::ENOENT as i64), "{engine:?}: the last call's result");
    }
}

#[test]
fn return_probes_deeper_than_the_return_stack_are_missed_and_every_call_returns() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let map = record(4);
    let exit = Uprobe::attach(
        &Target::symbol("ebpf_vm_test_recursive"),
        ProbeKind::Return,
        probe(Engine::Jit, &map, &[(RC, 3)]),
    )
    .expect("return probe");
    // 101 nested calls: the innermost 37 find the thread's stack of 64 returns full.
    assert_eq!(ebpf_vm_test_recursive(100), 5050);
    assert_eq!(exit.missed(), 37);
    let w = words(&map);
    assert_eq!(w[0], 64, "the outer 64 calls' returns ran");
    // The outer 64 levels return n * (n + 1) / 2 for n = 37..=100.
    assert_eq!(w[3], (37..=100u64).map(|n| n * (n + 1) / 2).sum::<u64>());
    // And again: the stack was emptied by the returns.
    assert_eq!(ebpf_vm_test_recursive(10), 55);
    assert_eq!(words(&map)[0], 75);
    drop(exit);
}

/// aarch64: a probe on each PC-relative form (address computations, a literal load, conditional
/// branches, a call) runs, sees the argument, and the function returns what it did unprobed, on both
/// engines; with a return probe too where the probe is at the entry.
#[cfg(target_arch = "aarch64")]
#[test]
fn pc_relative_instructions_run_moved_into_the_trampoline() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let page = (&raw const EBPF_VM_TEST_ARM_DATA) as u64 & !0xfff;
    // SAFETY (for the calls below): the functions take and return integers.
    type Case = (&'static str, u64, &'static [(u64, u64)], unsafe extern "C" fn(u64) -> u64);
    let cases: [Case; 6] = [
        ("ebpf_vm_test_arm_adr", 0, &[(1, 0x1235), (0x10, 0x1244)], ebpf_vm_test_arm_adr),
        ("ebpf_vm_test_arm_literal", 0, &[(1, 0x56), (0x100, 0x155)], ebpf_vm_test_arm_literal),
        ("ebpf_vm_test_arm_cbz", 0, &[(0, 7), (4, 5)], ebpf_vm_test_arm_cbz),
        ("ebpf_vm_test_arm_tbnz", 0, &[(8, 100), (7, 200)], ebpf_vm_test_arm_tbnz),
        ("ebpf_vm_test_arm_bcond", 4, &[(3, 1), (10, 2), (99, 2)], ebpf_vm_test_arm_bcond),
        ("ebpf_vm_test_arm_bl", 4, &[(5, 14), (20, 44)], ebpf_vm_test_arm_bl),
    ];
    let mut ran = 0;
    for engine in [Engine::Jit, Engine::Interpreter] {
        for (name, offset, calls, f) in cases {
            for &(arg, want) in calls {
                // SAFETY: as above.
                assert_eq!(unsafe { f(arg) }, want, "{name}({arg}) unprobed");
            }
            let (args, ret) = (record(4), record(4));
            let target = Target::Symbol { path: None, name: name.into(), offset };
            let entry = Uprobe::attach(&target, ProbeKind::Entry, probe(engine, &args, &[(PARM[0], 1)]))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let exit = (offset == 0).then(|| {
                Uprobe::attach(&target, ProbeKind::Return, probe(engine, &ret, &[(RC, 3)])).expect("return probe")
            });
            for &(arg, want) in calls {
                // SAFETY: as above.
                assert_eq!(unsafe { f(arg) }, want, "{engine:?}: {name}({arg}) probed");
                assert_eq!(words(&args)[1], arg, "{engine:?}: {name}: the probe saw the argument");
                ran += 1;
            }
            assert_eq!(words(&args)[0], calls.len() as u64, "{engine:?}: {name}: every call probed");
            if exit.is_some() {
                let sum: u64 = calls.iter().map(|c| c.1).sum();
                assert_eq!(words(&ret)[..1], [calls.len() as u64], "{engine:?}: {name}: every return");
                assert_eq!(words(&ret)[3], sum, "{engine:?}: {name}: the return values");
            }
            drop((entry, exit));
        }
        let target = Target::symbol("ebpf_vm_test_arm_adrp");
        let map = record(4);
        let entry = Uprobe::attach(&target, ProbeKind::Entry, probe(engine, &map, &[])).expect("adrp probe");
        // SAFETY: the function returns an address.
        assert_eq!(unsafe { ebpf_vm_test_arm_adrp() }, page, "{engine:?}: adrp moved");
        assert_eq!(words(&map)[0], 1);
        drop(entry);
    }
    assert_eq!(ran, 2 * 13, "every probed call ran");
}

#[test]
fn a_multi_probe_attaches_to_every_function_its_pattern_matches() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    #[cfg(target_arch = "x86_64")]
    let object = Object::parse(include_bytes!("fixtures/uprobe_multi.o")).expect("the fixture parses");
    #[cfg(target_arch = "aarch64")]
    let object = Object::parse(include_bytes!("fixtures/arm64/uprobe_multi.o")).expect("the fixture parses");
    for engine in [Engine::Jit, Engine::Interpreter] {
        let instance = Instance::new(&object).expect("maps");
        let attached = attach_object(&instance, engine).expect("both sections attach");
        let counts: Vec<usize> = attached
            .iter()
            .map(|a| match a {
                uprobe::Attachment::Probes(p) => p.len(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(counts, [3, 3], "{engine:?}: three functions match, at entry and at return");
        assert_eq!((ebpf_vm_test_multi_one(1), ebpf_vm_test_multi_two(2), ebpf_vm_test_multi_three(3)), (2, 4, 9));
        drop(attached);
        assert_eq!(ebpf_vm_test_multi_one(10), 11);
        let stats = words(instance.map("multi_stats").expect("stats"));
        assert_eq!(stats, [3, 6, 3, 15], "{engine:?}: calls, sum of arguments, returns, sum of results");
    }
    // No function matches; too many match (libc has thousands of functions): nothing attached.
    let program = probe(Engine::Jit, &record(4), &[]);
    assert_eq!(
        Uprobe::attach_matching("/proc/self/exe", "ebpf_vm_no_such_*", ProbeKind::Entry, program.clone()).unwrap_err(),
        AttachError::NoSymbol("ebpf_vm_no_such_*".into())
    );
    let all = Uprobe::attach_matching("libc.so.6", "*", ProbeKind::Entry, program);
    assert!(matches!(all, Err(AttachError::TooManyMatches { count, .. }) if count > uprobe::MAX_MATCHES), "{all:?}");
}

/// A thread that blocks every signal (as glibc does in a thread's last steps) cannot be stopped while
/// a probe is written: on x86_64 the attach waits for it to end instead of failing; on aarch64 (one
/// instruction replaced, no thread can be caught inside the patch) it is not waited for.
#[test]
fn a_thread_ending_with_signals_blocked_is_waited_for() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let blocked = Arc::new(Barrier::new(2));
    let ending = {
        let blocked = blocked.clone();
        std::thread::spawn(move || {
            // SAFETY: a signal set filled, and this thread's own mask set to it.
            unsafe {
                let mut all: libc::sigset_t = std::mem::zeroed();
                libc::sigfillset(&mut all);
                libc::pthread_sigmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
            }
            blocked.wait();
            std::thread::sleep(std::time::Duration::from_millis(300));
        })
    };
    blocked.wait();
    let map = record(4);
    let probe =
        Uprobe::attach(&Target::symbol("ebpf_vm_test_mul_add"), ProbeKind::Entry, probe(Engine::Jit, &map, &[]))
            .expect("attached once the thread ended");
    #[cfg(target_arch = "x86_64")]
    assert!(ending.is_finished(), "the attach waited for the thread");
    assert_eq!(ebpf_vm_test_mul_add(2, 3, 4), 10);
    assert_eq!(words(&map)[0], 1);
    drop(probe);
    ending.join().expect("the thread ended");
}
