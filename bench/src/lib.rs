//! Benchmarks of `ebpf-vm` side by side with rbpf, ubpf and native code: see `benches/`. The
//! benchmark programs are in `benches/programs/`; with the `native-baseline` feature (the default),
//! `build.rs` compiles them natively too, and [`native`] calls that build. [`programs`] holds what the benches share: the
//! compiled benchmark programs and their input; [`medians`] reads back what criterion measured, for
//! the summary tables some benches print after their run. With `UBPF_DIR` set to a built checkout of
//! iovisor/ubpf, `build.rs` links it and the `ubpf` module wraps its interpreter and JIT.

/// The benchmark programs compiled natively (feature `native-baseline`).
#[cfg(feature = "native-baseline")]
pub mod native {
    unsafe extern "C" {
        fn native_fnv1a(data: *mut u8, len: u64) -> u64;
        fn native_sort(data: *mut u8, len: u64) -> u64;
        fn native_packets(data: *mut u8, len: u64) -> u64;
        fn native_arith(data: *mut u8, len: u64) -> u64;
        fn native_sieve(data: *mut u8, len: u64) -> u64;
        fn native_copy(data: *mut u8, len: u64) -> u64;
        fn native_compare(data: *mut u8, len: u64) -> u64;
        fn native_dispatch(data: *mut u8, len: u64) -> u64;
        fn native_crc32(data: *mut u8, len: u64) -> u64;
        fn native_muldiv(data: *mut u8, len: u64) -> u64;
        fn native_hashmap(data: *mut u8, len: u64) -> u64;
        fn native_arraymap(data: *mut u8, len: u64) -> u64;
        fn native_calls(data: *mut u8, len: u64) -> u64;
        fn native_trivial(data: *mut u8, len: u64) -> u64;
    }

    /// Bytes every benchmark input has, and the most the programs read or write.
    pub const INPUT: usize = 4096;

    fn call(f: unsafe extern "C" fn(*mut u8, u64) -> u64, m: &mut [u8]) -> u64 {
        assert!(m.len() >= INPUT, "the benchmark programs read {INPUT} bytes");
        // SAFETY: the C functions read and write only the first 4096 bytes of their input, which `m`
        // has (checked above) and borrows mutably.
        unsafe { f(m.as_mut_ptr(), m.len() as u64) }
    }

    /// The native build of a benchmark program (one of [`PROGRAMS`](crate::programs::PROGRAMS)).
    ///
    /// # Panics
    /// On a name that is not a benchmark program.
    pub fn get(name: &str) -> fn(&mut [u8]) -> u64 {
        match name {
            "fnv1a" => |m| call(native_fnv1a, m),
            "sort" => |m| call(native_sort, m),
            "packets" => |m| call(native_packets, m),
            "arith" => |m| call(native_arith, m),
            "sieve" => |m| call(native_sieve, m),
            "copy" => |m| call(native_copy, m),
            "compare" => |m| call(native_compare, m),
            "dispatch" => |m| call(native_dispatch, m),
            "crc32" => |m| call(native_crc32, m),
            "muldiv" => |m| call(native_muldiv, m),
            "hashmap" => |m| call(native_hashmap, m),
            "arraymap" => |m| call(native_arraymap, m),
            "calls" => |m| call(native_calls, m),
            "trivial" => |m| call(native_trivial, m),
            _ => panic!("no benchmark program named `{name}`"),
        }
    }
}

/// The iovisor/ubpf runtime: its interpreter and JIT (`UBPF_DIR` set at build time).
#[cfg(ubpf)]
pub mod ubpf;

/// The clang-compiled benchmark programs of `benches/programs/` and the input they run on, shared by
/// `benches/jit.rs` and `benches/modes.rs`.
pub mod programs;

/// The medians criterion wrote, read back after a run.
pub mod medians {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::time::SystemTime;

    /// Where criterion writes its results by default (`$CRITERION_HOME`, else
    /// `$CARGO_TARGET_DIR/criterion`, else the workspace's `target/criterion`). A bench passes it to
    /// `Criterion::output_directory`, so that [`read`] finds what criterion wrote.
    pub fn criterion_dir() -> PathBuf {
        if let Some(home) = std::env::var_os("CRITERION_HOME") {
            return PathBuf::from(home);
        }
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
        target.join("criterion")
    }

    /// Median times in microseconds by criterion's full id (`GROUP/FUNCTION/PARAMETER`), of the
    /// benchmarks of `group` in `dir` that were measured since `since`.
    pub fn read(dir: &Path, group: &str, since: SystemTime) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        walk(&dir.join(sanitize(group)), since, &mut out);
        out
    }

    /// Criterion's directory name for a group.
    fn sanitize(name: &str) -> String {
        name.replace(['?', '"', '/', '\\', '*', '<', '>', ':', '|', '^'], "_")
    }

    fn walk(dir: &Path, since: SystemTime, out: &mut BTreeMap<String, f64>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, since, out);
                continue;
            }
            let in_new = path.parent().and_then(Path::file_name).is_some_and(|n| n == "new");
            if !in_new || path.file_name().is_none_or(|n| n != "estimates.json") {
                continue;
            }
            if !entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| t >= since) {
                continue;
            }
            let json = |p: &Path| -> Option<serde_json::Value> {
                serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()
            };
            let (Some(estimates), Some(benchmark)) = (json(&path), json(&path.with_file_name("benchmark.json"))) else {
                continue;
            };
            if let (Some(id), Some(ns)) =
                (benchmark["full_id"].as_str(), estimates["median"]["point_estimate"].as_f64())
            {
                out.insert(id.to_string(), ns / 1000.0);
            }
        }
    }
}
