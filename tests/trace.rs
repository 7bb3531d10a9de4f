//! `ebpf-vm trace` on the example pair of `examples/trace/`: a program whose four threads call malloc
//! a known number of times, traced with a uprobe on libc's malloc counting per thread in a hash map.
//! The counts the command prints match what the program reports itself, and the maps read from
//! another process (`ebpf-vm maps --attach PID`) while it runs match too. An object with a program
//! the agent cannot attach is refused before anything runs.
//!
//! Needs the agent (`libebpf_vm_agent.so`, a member of the workspace that `cargo test` builds for its
//! own tests, in `deps/` beside the command) and a C compiler (`cc`) for the example program.
#![cfg(all(feature = "attach", target_os = "linux", target_arch = "x86_64"))]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

const EBPF_VM: &str = env!("CARGO_BIN_EXE_ebpf-vm");

/// The example program, compiled for the test `tag` (each test its own file: one test must not
/// rewrite a file another is running).
fn malloc_threads(tag: &str) -> PathBuf {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("malloc_threads-{tag}"));
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/trace/malloc_threads.c");
    let status = Command::new("cc").args(["-O1", "-pthread", src, "-o"]).arg(&out).status().expect("cc runs");
    assert!(status.success(), "cc compiles the example");
    out
}

fn object() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/examples/trace/malloc_count.bpf.o")
}

/// A 4-byte little-endian number written as 8 hex digits.
fn hex_word(w: &str) -> u32 {
    u32::from_le_bytes(u32::from_str_radix(w, 16).expect("hex").to_be_bytes())
}

/// The program's own report (`thread TID called malloc N times (largest: L bytes)`: TID -> (N, L)),
/// the `  TID: N` lines of the maps (TID -> N), and the ring-buffer records (`ringbuf large_mallocs:`
/// and the thread id, 4 zero bytes and the size, in hex: TID -> sizes).
#[allow(clippy::type_complexity)]
fn parse_all(lines: &[String]) -> (BTreeMap<u32, (u64, u64)>, BTreeMap<u32, u64>, BTreeMap<u32, Vec<u64>>) {
    let (mut reported, mut counted, mut records) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    for l in lines {
        let words: Vec<&str> = l.split_whitespace().collect();
        if let ["thread", tid, "called", "malloc", n, "times", "(largest:", largest, "bytes)"] = words.as_slice() {
            reported.insert(tid.parse().expect("tid"), (n.parse().expect("count"), largest.parse().expect("size")));
        }
        if let ["ringbuf", "large_mallocs:", tid, zero, low, high] = words.as_slice() {
            assert_eq!(hex_word(zero), 0, "{l}");
            let size = hex_word(low) as u64 | (hex_word(high) as u64) << 32;
            records.entry(hex_word(tid)).or_insert_with(Vec::new).push(size);
        }
        if let [tid, n] = words.as_slice() {
            if let (Some(tid), Ok(n)) = (tid.strip_suffix(':').and_then(|t| t.parse().ok()), n.parse()) {
                counted.insert(tid, n);
            }
        }
    }
    (reported, counted, records)
}

/// The program's report (TID -> number of calls) and the maps' counts.
fn parse(lines: &[String]) -> (BTreeMap<u32, u64>, BTreeMap<u32, u64>) {
    let (reported, counted, _) = parse_all(lines);
    (reported.into_iter().map(|(tid, (n, _))| (tid, n)).collect(), counted)
}

#[test]
fn trace_counts_what_the_program_reports_and_its_maps_read_live() {
    // Where `cargo test` builds the agent (the agent's own tests need it), or `cargo build` puts it.
    let bin = PathBuf::from(EBPF_VM);
    let agent = [bin.with_file_name("deps").join("libebpf_vm_agent.so"), bin.with_file_name("libebpf_vm_agent.so")];
    assert!(agent.iter().any(|a| a.exists()), "the agent is missing: cargo build --release -p ebpf-vm-agent");
    let program = malloc_threads("live");
    let mut trace = Command::new(EBPF_VM)
        .arg("trace")
        .arg(object())
        .arg("--")
        .arg(&program)
        .arg("3000")
        .stdout(Stdio::piped())
        .spawn()
        .expect("ebpf-vm trace starts");
    let mut lines = BufReader::new(trace.stdout.take().expect("stdout")).lines().map(|l| l.expect("a line"));
    let mut seen = Vec::new();
    // The command names the traced process first.
    let first = lines.next().expect("a first line");
    let pid: u32 = first.strip_prefix("ebpf-vm: tracing pid ").and_then(|p| p.parse().ok()).expect("the pid line");
    // Once the program has reported its four threads, it waits: read its maps from here.
    for l in lines.by_ref() {
        seen.push(l);
        if parse(&seen).0.len() == 4 {
            break;
        }
    }
    let live = Command::new(EBPF_VM).args(["maps", "--attach", &pid.to_string()]).output().expect("maps runs");
    assert!(live.status.success(), "{}", String::from_utf8_lossy(&live.stderr));
    let live: Vec<String> = String::from_utf8_lossy(&live.stdout).lines().map(String::from).collect();
    // One map by its shared-memory name.
    let one = Command::new(EBPF_VM)
        .args(["maps", "--attach", &format!("/ebpf-vm.{pid}.malloc_calls")])
        .output()
        .expect("maps runs");
    assert!(one.status.success(), "{}", String::from_utf8_lossy(&one.stderr));
    let one: Vec<String> = String::from_utf8_lossy(&one.stdout).lines().map(String::from).collect();
    assert!(one[0].starts_with("map malloc_calls (hash"), "{one:?}");
    seen.extend(lines);
    assert!(trace.wait().expect("trace ends").success(), "{seen:?}");

    let (reported, counted) = parse(&seen);
    let (_, counted_live) = parse(&live);
    assert_eq!(reported.len(), 4, "{seen:?}");
    for (tid, n) in &reported {
        assert_eq!(counted.get(tid), Some(n), "thread {tid}: the traced count after exit\n{seen:?}");
        assert_eq!(counted_live.get(tid), Some(n), "thread {tid}: the count read while it ran\n{live:?}");
        assert_eq!(parse(&one).1.get(tid), Some(n), "thread {tid}: the count read by the map's name\n{one:?}");
    }
    assert_eq!(reported.values().sum::<u64>(), 10_004);
    assert!(seen.iter().any(|l| l.contains("first malloc")), "bpf_printk lines arrive: {seen:?}");
    // One ring-buffer record for each thread's large allocation, with its size; no others.
    let (reported_sizes, _, records) = parse_all(&seen);
    let largest: BTreeMap<u32, Vec<u64>> = reported_sizes.iter().map(|(tid, (_, l))| (*tid, vec![*l])).collect();
    assert_eq!(records, largest, "the ring buffer's records\n{seen:?}");
    assert!(live.iter().any(|l| l.starts_with("map large_mallocs (ringbuf, 65536 bytes)")), "{live:?}");
    // Printed as they arrived: while the program waited, before it exited.
    let at = |prefix: &str| seen.iter().position(|l| l.starts_with(prefix)).unwrap_or(usize::MAX);
    assert!(at("ringbuf large_mallocs:") < at(&format!("ebpf-vm: pid {pid} exited")), "{seen:?}");
    // The shared maps are removed once printed.
    assert!(!std::fs::read_dir("/dev/shm")
        .expect("/dev/shm")
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with(&format!("ebpf-vm.{pid}."))));
}

#[test]
fn an_object_the_agent_cannot_attach_is_refused_before_anything_runs() {
    let hash_count = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/hash_count.o");
    let out = Command::new(EBPF_VM).args(["trace", hash_count, "--", "true"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is no uprobe, uretprobe or syscall tracepoint"), "{err}");
    assert!(out.stdout.is_empty(), "nothing was started");
    let none = Command::new(EBPF_VM).args(["maps", "--attach", "1"]).output().expect("runs");
    assert_eq!(none.status.code(), Some(1), "pid 1 shares no maps");
    for bad in ["/ebpf-vm.1.nothing", "nothing"] {
        let out = Command::new(EBPF_VM).args(["maps", "--attach", bad]).output().expect("runs");
        assert_eq!(out.status.code(), Some(1), "{bad}");
        assert!(!out.stderr.is_empty(), "{bad}: an error is said");
    }
}

#[test]
fn a_program_that_cannot_attach_leaves_the_traced_process_unchanged() {
    // The object probes a function the example does not have: the agent reports it, attaches nothing,
    // and the program runs and exits as it would have.
    let program = malloc_threads("unchanged");
    let object = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/uprobe_args.o");
    let out = Command::new(EBPF_VM).arg("trace").arg(object).arg("--").arg(&program).output().expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("ebpf-vm agent: nothing attached: no function `ebpf_vm_test_fixture_target`"), "{text}");
    let lines: Vec<String> = text.lines().map(String::from).collect();
    assert_eq!(parse(&lines).0.values().sum::<u64>(), 10_004, "{text}");
    assert!(text.contains("shared no maps"), "the agent removed the maps it made: {text}");
}
