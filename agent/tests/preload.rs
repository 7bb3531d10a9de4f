//! The agent as processes load it: without an object it does nothing; with an object it cannot load,
//! it says so on standard error and the process runs unchanged. (`tests/trace.rs` of the runtime
//! traces the example through it.)
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::path::PathBuf;
use std::process::Command;

/// The agent's shared library, which cargo builds beside this test (in `deps/`) for it.
fn agent() -> PathBuf {
    let exe = std::env::current_exe().expect("this test");
    let so = exe.with_file_name("libebpf_vm_agent.so");
    assert!(so.exists(), "{} is missing", so.display());
    so
}

#[test]
fn a_process_without_an_object_runs_unchanged() {
    let out = Command::new("sh").args(["-c", "echo hello"]).env("LD_PRELOAD", agent()).output().expect("runs");
    assert!(out.status.success());
    assert_eq!(out.stdout, b"hello\n");
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn an_object_that_cannot_be_read_is_reported_and_the_process_runs_unchanged() {
    let out = Command::new("sh")
        .args(["-c", "echo hello"])
        .env("LD_PRELOAD", agent())
        .env(ebpf_vm_agent::OBJECT, "/nonexistent/probe.o")
        .output()
        .expect("runs");
    assert!(out.status.success());
    assert_eq!(out.stdout, b"hello\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ebpf-vm agent: nothing attached: /nonexistent/probe.o"), "{err}");
}
