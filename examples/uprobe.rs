//! A uprobe and a uretprobe on a function of this program, and a syscall tracepoint on `openat`:
//! verified programs count the calls, keep the last arguments and sum the return values, on the
//! kernel's `struct pt_regs` and tracepoint layouts (Linux on x86_64 and aarch64).
//!
//! `cargo run --release --example uprobe`

#[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64")))]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    use std::sync::Arc;

    use ebpf_vm::attach::uprobe::syscalls::{self, SyscallTracepoint, TracepointKind};
    use ebpf_vm::attach::uprobe::{self, pt_regs, ProbeKind, Target, Uprobe};
    use ebpf_vm::maps::{self, MapDef, MapType};
    use ebpf_vm::{Context, Env, Program, Vm};

    /// The traced function.
    #[no_mangle]
    #[inline(never)]
    extern "C" fn area(width: u64, height: u64) -> u64 {
        std::hint::black_box(width) * std::hint::black_box(height)
    }

    // One array map of four counters: calls, last width, returns, sum of the areas.
    let stats =
        maps::create(MapDef { map_type: MapType::Array, key_size: 4, value_size: 32, max_entries: 1, flags: 0 })?;
    let build = |text: &str, context: Context| -> Result<Arc<Vm>, Box<dyn std::error::Error>> {
        let mut env = Env::new();
        env.add_standard_helpers();
        env.add_map(stats.clone());
        env.set_context(context);
        Ok(Arc::new(Vm::builder(Program::from_asm(text)?).env(env).verified().build()?))
    };
    // r6 = the context; r0 = the map's value (the lookup of key 0).
    let lookup =
        "mov %r6, %r1\nstw [%r10-4], 0\nmov %r2, %r10\nadd %r2, -4\nlddw %r1, map_fd(0)\ncall 1\njeq %r0, 0, out\n";
    let on_call = format!(
        "{lookup}mov %r1, 1\nlock add [%r0+0], %r1\nldxdw %r1, [%r6+{}]\nstxdw [%r0+8], %r1\nout:\nmov %r0, 0\nexit",
        pt_regs::PARM[0]
    );
    let on_return = format!(
        "{lookup}mov %r1, 1\nlock add [%r0+16], %r1\nldxdw %r1, [%r6+{}]\nlock add [%r0+24], %r1\nout:\nmov %r0, 0\nexit",
        pt_regs::RC
    );
    let target = Target::symbol("area");
    let entry = Uprobe::attach(&target, ProbeKind::Entry, build(&on_call, uprobe::context())?)?;
    let exit = Uprobe::attach(&target, ProbeKind::Return, build(&on_return, uprobe::context())?)?;
    for (w, h) in [(3, 4), (5, 6), (7, 8)] {
        println!("area({w}, {h}) = {}", area(w, h));
    }
    drop((entry, exit));
    let v = stats.get(&0u32.to_ne_bytes(), 0).ok_or("no value")?;
    let word = |i: usize| u64::from_ne_bytes(v[8 * i..8 * i + 8].try_into().unwrap_or_default());
    println!(
        "uprobe: {} calls, last width {}; uretprobe: {} returns, areas summing to {}",
        word(0),
        word(1),
        word(2),
        word(3)
    );

    // sys_enter_openat: count the calls.
    let openat = format!("{lookup}mov %r1, 1\nlock add [%r0+0], %r1\nout:\nmov %r0, 0\nexit");
    let tracepoint =
        SyscallTracepoint::attach("openat", TracepointKind::Enter, build(&openat, syscalls::enter_context())?)?;
    // (Attaching opened this process's files to read symbols: count from here.)
    let count = || stats.get(&0u32.to_ne_bytes(), 0).and_then(|v| Some(u64::from_ne_bytes(v[..8].try_into().ok()?)));
    let before = count().ok_or("no value")?;
    for _ in 0..5 {
        drop(std::fs::File::open("/dev/null")?);
    }
    let calls = count().ok_or("no value")? - before;
    drop(tracepoint);
    println!("sys_enter_openat: {calls} calls while 5 files were opened");
    Ok(())
}

#[cfg(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))))]
fn main() {
    println!("uprobes run on Linux on x86_64 and aarch64 only");
}
