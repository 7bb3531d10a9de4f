//! Benchmarks of `ebpf-vm` side by side with rbpf and native code: see `benches/`. The library itself
//! is empty; the benchmark programs are in `benches/programs/`.
