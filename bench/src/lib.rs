//! Benchmarks of `ebpf-vm` side by side with rbpf and native code: see `benches/`. The benchmark
//! programs are in `benches/programs/`; with the `native-baseline` feature, `build.rs` compiles them
//! natively too, and [`native`] calls that build.

/// The benchmark programs compiled natively (feature `native-baseline`).
#[cfg(feature = "native-baseline")]
pub mod native {
    unsafe extern "C" {
        fn native_fnv1a(data: *mut u8, len: u64) -> u64;
        fn native_sort(data: *mut u8, len: u64) -> u64;
        fn native_packets(data: *mut u8, len: u64) -> u64;
        fn native_arith(data: *mut u8, len: u64) -> u64;
    }

    /// Bytes every benchmark input has, and the most the programs read or write.
    pub const INPUT: usize = 4096;

    fn call(f: unsafe extern "C" fn(*mut u8, u64) -> u64, m: &mut [u8]) -> u64 {
        assert!(m.len() >= INPUT, "the benchmark programs read {INPUT} bytes");
        // SAFETY: the C functions read and write only the first 4096 bytes of their input, which `m`
        // has (checked above) and borrows mutably.
        unsafe { f(m.as_mut_ptr(), m.len() as u64) }
    }

    /// The native build of a benchmark program.
    pub fn get(name: &str) -> fn(&mut [u8]) -> u64 {
        match name {
            "fnv1a" => |m| call(native_fnv1a, m),
            "sort" => |m| call(native_sort, m),
            "packets" => |m| call(native_packets, m),
            _ => |m| call(native_arith, m),
        }
    }
}
