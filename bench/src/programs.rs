//! The clang-compiled benchmark programs of `benches/programs/` and the input they run on, shared by the
//! benches (`compare`, `jit`, `modes`).
//!
//! Also compiled into the library's own tests (`tests/bench_programs.rs`), so keep it free of this
//! crate's dependencies.

/// Bytes every benchmark input has; the programs read (and `sort` and `copy` write) at most these.
pub const INPUT_LEN: usize = 4096;

/// Each program's name (its function and its object's name) and its BPF object. `hashmap` and
/// `arraymap` use maps (build them through an [`ebpf_vm::Instance`]); `calls` makes bpf-to-bpf calls.
pub const PROGRAMS: &[(&str, &[u8])] = &[
    ("fnv1a", include_bytes!("../benches/programs/fnv1a.o")),
    ("sort", include_bytes!("../benches/programs/sort.o")),
    ("packets", include_bytes!("../benches/programs/packets.o")),
    ("arith", include_bytes!("../benches/programs/arith.o")),
    ("sieve", include_bytes!("../benches/programs/sieve.o")),
    ("copy", include_bytes!("../benches/programs/copy.o")),
    ("compare", include_bytes!("../benches/programs/compare.o")),
    ("dispatch", include_bytes!("../benches/programs/dispatch.o")),
    ("crc32", include_bytes!("../benches/programs/crc32.o")),
    ("muldiv", include_bytes!("../benches/programs/muldiv.o")),
    ("hashmap", include_bytes!("../benches/programs/hashmap.o")),
    ("arraymap", include_bytes!("../benches/programs/arraymap.o")),
    ("calls", include_bytes!("../benches/programs/calls.o")),
    ("trivial", include_bytes!("../benches/programs/trivial.o")),
];

/// 4096 bytes of input: pseudo-random numbers, and 64 frames of Ethernet/IPv4/UDP for `packets`.
pub fn input(name: &str) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut v: Vec<u8> = (0..INPUT_LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    if name == "packets" {
        for (k, frame) in v.chunks_mut(64).enumerate() {
            frame[12..14].copy_from_slice(&[0x08, 0x00]);
            frame[14] = 0x45;
            frame[23] = if k % 4 == 3 { 6 } else { 17 };
            frame[36..38].copy_from_slice(&(1000 + k as u16).to_be_bytes());
        }
    }
    v
}
