//! The agent itself (Linux on x86_64, where uprobes are).

use std::io::Write;
use std::sync::{Arc, Mutex};

use ebpf_vm::elf::Object;
use ebpf_vm::maps::{MapBudget, MapDef, SharedMap};
use ebpf_vm::{Engine, Instance};

/// The environment variable naming the object to load.
pub const OBJECT: &str = "EBPF_VM_AGENT_OBJECT";
/// The environment variable holding the file descriptor output goes to.
pub const OUTPUT: &str = "EBPF_VM_AGENT_OUTPUT";

/// Whether the agent puts a map of this kind in shared memory: the kinds [`SharedMap`] holds.
pub fn shared_kind(def: &MapDef) -> bool {
    SharedMap::can_hold(def.map_type)
}

/// Where output goes: the descriptor [`OUTPUT`] names, else standard error.
fn output() -> Box<dyn Write + Send> {
    #[cfg(unix)]
    if let Some(fd) = std::env::var(OUTPUT).ok().and_then(|v| v.parse::<i32>().ok()) {
        use std::os::fd::FromRawFd;
        // SAFETY: the descriptor the tracer passed for this purpose; the file is never dropped (it is
        // leaked with the sink), so the descriptor is never closed here.
        let file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
        if let Ok(dup) = file.try_clone() {
            return Box::new(dup);
        }
    }
    Box::new(std::io::stderr())
}

/// Loads and attaches the object at `path`; what stays attached is leaked (it lives as long as the
/// process).
fn load(path: &std::ffi::OsStr) -> Result<usize, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.to_string_lossy()))?;
    let object = Object::parse(&bytes).map_err(|e| e.to_string())?;
    // Checked before any map is made: every program must be something the agent can attach.
    for p in object.programs() {
        match ebpf_vm::attach::uprobe::parse_section(&p.section) {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(format!(
                    "program `{}`: section `{}` is no uprobe, uretprobe or syscall tracepoint",
                    p.name, p.section
                ))
            }
            Err(e) => return Err(format!("program `{}`: {e}", p.name)),
        }
    }
    let pid = std::process::id();
    let instance = Instance::with_maps(&object, MapBudget::default(), |name, def| {
        if name.starts_with('.') || !shared_kind(&def) {
            return None;
        }
        // Removed again if loading fails (the instance is dropped); kept once attached (it is leaked).
        Some(SharedMap::create_any(&SharedMap::process_map_name(pid, name), def, true))
    })
    .map_err(|e| e.to_string())?;
    let sink = Mutex::new(output());
    let print: ebpf_vm::helpers::PrintSink = Arc::new(move |line: &str| {
        if let Ok(mut out) = sink.lock() {
            let _ = writeln!(out, "{line}");
        }
    });
    let attached = ebpf_vm::attach::uprobe::attach_object_printing(&instance, Engine::Jit, Some(print))
        .map_err(|e| e.to_string())?;
    let n = attached.len();
    std::mem::forget(attached);
    std::mem::forget(instance);
    Ok(n)
}

/// Runs when the library is loaded, before the process's `main`.
extern "C" fn start() {
    let Some(path) = std::env::var_os(OBJECT) else { return };
    let mut out = output();
    // The process's children run untraced.
    for var in [OBJECT, "LD_PRELOAD"] {
        // SAFETY (of the environment): the process has one thread while libraries load.
        std::env::remove_var(var);
    }
    if let Err(e) = load(&path) {
        let _ = writeln!(out, "ebpf-vm agent: nothing attached: {e}");
    }
}

#[used]
#[link_section = ".init_array"]
static START: extern "C" fn() = start;
