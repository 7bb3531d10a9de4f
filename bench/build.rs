//! With the `native-baseline` feature, compiles the benchmark programs of `benches/programs/` natively
//! (with `$CC`, `-O2`), so that `benches/jit.rs` can run the same C as native code. Otherwise nothing.

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
        for p in programs {
            let path = format!("benches/programs/{p}.c");
            println!("cargo::rerun-if-changed={path}");
            build.file(path);
        }
        println!("cargo::rerun-if-changed=benches/programs/bench.h");
        build.compile("ebpf_vm_bench_native");
    }
}
