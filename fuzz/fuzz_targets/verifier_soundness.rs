//! Verifier soundness: libFuzzer's bytes drive the generator of `tests/verifier_soundness.rs`
//! (`tests/common/vgen.rs`), which makes programs at the edges of what the verifier can prove safe;
//! every program the verifier accepts runs checked and verified on both engines, and in checked mode
//! with its stack and unwritten registers poisoned. A checked run that fails, or builds that disagree,
//! is a verifier bug. Failures already known (open bugs, and what the verifier's rules allow; see
//! `vgen::Failure::known_bug`) are not reported again.
#![no_main]

#[path = "../../tests/common/gen.rs"]
mod gen;
#[path = "../../tests/common/vgen.rs"]
mod vgen;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let case = vgen::case(&mut gen::Source::new(data));
    if let Err(u) = vgen::check(&case) {
        if u.failure.known_bug().is_none() {
            panic!("{}", vgen::report(&case, &u));
        }
    }
});
