//! With the `native-baseline` feature (the default), compiles the benchmark programs of
//! `benches/programs/` natively at `-O2` (with `$CC`, else clang-19 when it is installed, else the
//! cc crate's default compiler), so that `benches/compare.rs` and `benches/jit.rs` run the same C as
//! native code.
//!
//! With `UBPF_DIR` set to a checkout of iovisor/ubpf built with its own CMake in `$UBPF_DIR/build`,
//! links its static library `libubpf.a` (found anywhere under `$UBPF_DIR/build`) and sets `cfg(ubpf)`,
//! which builds the `ubpf` module of the library. Otherwise nothing.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    #[cfg(feature = "native-baseline")]
    {
        let programs = [
            "fnv1a", "sort", "packets", "arith", "sieve", "copy", "compare", "dispatch", "crc32", "muldiv", "hashmap",
            "arraymap", "calls", "trivial",
        ];
        let mut build = cc::Build::new();
        build.opt_level(2);
        // The same compiler as the BPF objects', where there is one and the host chose none.
        println!("cargo::rerun-if-env-changed=CC");
        if std::env::var_os("CC").is_none() && has_clang_19() {
            build.compiler("clang-19");
        }
        for p in programs {
            let path = format!("benches/programs/{p}.c");
            println!("cargo::rerun-if-changed={path}");
            build.file(path);
        }
        println!("cargo::rerun-if-changed=benches/programs/bench.h");
        build.compile("ebpf_vm_bench_native");
    }
    link_ubpf();
}

/// Whether `clang-19` runs.
#[cfg(feature = "native-baseline")]
fn has_clang_19() -> bool {
    std::process::Command::new("clang-19").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Links iovisor/ubpf's `libubpf.a` and sets `cfg(ubpf)` when `UBPF_DIR` is set (and not empty).
fn link_ubpf() {
    println!("cargo::rustc-check-cfg=cfg(ubpf)");
    println!("cargo::rerun-if-env-changed=UBPF_DIR");
    let Some(dir) = std::env::var_os("UBPF_DIR").filter(|d| !d.is_empty()) else { return };
    let build = Path::new(&dir).join("build");
    let Some(lib) = find(&build, "libubpf.a") else {
        // Fails the build, with this message.
        println!(
            "cargo::error=UBPF_DIR is set, but there is no libubpf.a under {}: build ubpf there first, with \
             `cmake -S $UBPF_DIR -B $UBPF_DIR/build -DCMAKE_BUILD_TYPE=Release -DUBPF_ENABLE_TESTS=OFF \
             -DUBPF_SKIP_EXTERNAL=ON && cmake --build $UBPF_DIR/build`, or unset UBPF_DIR",
            build.display()
        );
        return;
    };
    let lib_dir = lib.parent().expect("a file found in a directory");
    println!("cargo::rerun-if-changed={}", lib.display());
    println!("cargo::rustc-link-search=native={}", lib_dir.display());
    // ubpf needs only the C library, which Rust links anyway.
    println!("cargo::rustc-link-lib=static=ubpf");
    println!("cargo::rustc-cfg=ubpf");
}

/// The first file named `name` under `dir` (breadth first, so `build/lib/` before deeper copies).
fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    let mut queue = std::collections::VecDeque::from([dir.to_path_buf()]);
    while let Some(dir) = queue.pop_front() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut entries: Vec<_> = entries.flatten().filter_map(|e| Some((e.path(), e.file_type().ok()?))).collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (path, kind) in entries {
            // Symbolic links to directories are not followed (no loops); to the library itself, they are.
            if kind.is_dir() {
                queue.push_back(path);
            } else if path.file_name().is_some_and(|n| n == name) {
                return Some(path);
            }
        }
    }
    None
}
