//! Host integrity on generated programs: programs that use maps, the ring buffer, tail calls and
//! bpf-to-bpf calls run twice in checked mode on both engines; after each run the host consumes the ring
//! buffer and dumps every map. Nothing may crash, hang (a budget bounds loops), read out of bounds, or
//! differ between the engines. The fuzz target `host_integrity` runs the same generator and oracle on
//! libFuzzer's inputs.

mod common;

use std::collections::BTreeMap;

use common::gen::{self, Options, Source};
use common::oracle::{self, Failure};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// The tests of this file run one at a time: an execution that uses per-CPU maps holds a CPU slot, and a
/// test running beside it would make the engines get different slots.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `cases` generated scenarios, compares the engines on each, and returns how the runs ended.
fn run(cases: u32, opts: Options, budget: Option<u64>) -> BTreeMap<&'static str, usize> {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // A fixed seed: the same programs on every run (the fuzz target explores further).
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let stats = std::cell::RefCell::new(BTreeMap::new());
    runner
        .run(&proptest::collection::vec(any::<u8>(), 0..1500), |bytes| {
            let scenario = gen::scenario(&mut Source::new(&bytes), opts);
            let seen = oracle::compare(&scenario, budget, 2).map_err(TestCaseError::fail)?;
            let mut stats = stats.borrow_mut();
            *stats.entry("cases compared").or_insert(0) += 1;
            for o in &seen {
                let kind = match &o.result {
                    Ok(_) => "ok",
                    Err(Failure::OutOfBounds { .. }) => "out of bounds",
                    Err(Failure::MisalignedAtomic { .. }) => "misaligned atomic",
                    Err(Failure::Budget { .. }) => "budget exhausted",
                    Err(Failure::CallDepth { .. }) => "call depth",
                    Err(Failure::UnknownHelper { .. }) => "unknown helper",
                    Err(Failure::Helper { .. }) => "helper error",
                    Err(Failure::ContextSize { .. }) => "context size",
                    Err(Failure::UninitRead { .. }) => "uninitialised read",
                };
                *stats.entry(kind).or_insert(0) += 1;
                *stats.entry("ring-buffer records").or_insert(0) += o.records.len();
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    stats.into_inner()
}

/// Every case must really be compared, and enough runs must get past their first instructions.
fn check(stats: &BTreeMap<&'static str, usize>, cases: u32) {
    eprintln!("{stats:?}");
    let compared = stats.get("cases compared").copied().unwrap_or(0);
    assert!(compared * 10 >= cases as usize * 9, "only {compared} of {cases} cases were compared");
    let runs = compared * 2;
    let ok = stats.get("ok").copied().unwrap_or(0);
    assert!(ok * 5 >= runs, "only {ok} of {runs} runs ended normally: the generator rarely gets far");
    assert!(stats.get("ring-buffer records").copied().unwrap_or(0) > 0, "no program ever submitted a record");
}

#[cfg(feature = "jit")]
#[test]
fn generated_programs_with_loops_under_a_budget() {
    let cases = 2000;
    let stats = run(cases, Options::LOOPS, Some(5_000));
    check(&stats, cases);
}

/// Terminating programs without a budget: the JIT then compiles them as a host gets them by default
/// (branches turned into selects, shared bounds checks).
#[cfg(feature = "jit")]
#[test]
fn generated_terminating_programs_without_a_budget() {
    let cases = 1000;
    let stats = run(cases, Options::ALL, None);
    check(&stats, cases);
}
