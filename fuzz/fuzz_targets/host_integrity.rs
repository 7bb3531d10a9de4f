//! Host integrity: generated programs that use maps, the ring buffer, tail calls and bpf-to-bpf calls
//! run eight times in checked mode on both engines (map contents carry over from run to run, so maps
//! fill, and LRU maps evict); after each run the host consumes the ring buffer and dumps every map. Nothing may crash, hang, read out of bounds (AddressSanitizer) or differ between the
//! engines. The generator and oracle are the ones `tests/host_integrity.rs` uses.
#![no_main]

#[path = "../../tests/common/gen.rs"]
mod gen;
#[path = "../../tests/common/oracle.rs"]
mod oracle;

use libfuzzer_sys::fuzz_target;

/// Runs of each scenario on each engine.
const RUNS: usize = 8;

fuzz_target!(|data: &[u8]| {
    let mut src = gen::Source::new(data);
    let (opts, budget) = if src.bool() { (gen::Options::LOOPS, Some(5_000)) } else { (gen::Options::ALL, None) };
    let scenario = gen::scenario(&mut src, opts);
    if let Err(e) = oracle::compare(&scenario, budget, RUNS) {
        panic!("{e}");
    }
});
