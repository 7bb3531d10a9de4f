//! Tests of the verifier against its contract: programs it must refuse, each at the instruction that
//! breaks a rule and with the error kind of that rule, and programs it must prove safe, which then run
//! alike verified and checked on the interpreter and the JIT.
//!
//! Each file under `tests/verifier/` holds one class of rules; each test in it is a table that counts
//! its cases (see `harness`).

#[path = "verifier/harness.rs"]
mod harness;

#[path = "verifier/callbacks.rs"]
mod callbacks;
#[path = "verifier/calls.rs"]
mod calls;
#[path = "verifier/comparisons.rs"]
mod comparisons;
#[path = "verifier/context_bounds.rs"]
mod context_bounds;
#[path = "verifier/control.rs"]
mod control;
#[path = "verifier/helpers.rs"]
mod helpers;
#[path = "verifier/input_bounds.rs"]
mod input_bounds;
#[path = "verifier/leaks.rs"]
mod leaks;
#[path = "verifier/map_values.rs"]
mod map_values;
#[path = "verifier/notes.rs"]
mod notes;
#[path = "verifier/pointer_arith.rs"]
mod pointer_arith;
#[path = "verifier/ringbuf.rs"]
mod ringbuf;
#[path = "verifier/safe_calls.rs"]
mod safe_calls;
#[path = "verifier/safe_guards.rs"]
mod safe_guards;
#[path = "verifier/safe_loops.rs"]
mod safe_loops;
#[path = "verifier/safe_memory.rs"]
mod safe_memory;
#[path = "verifier/safe_precision.rs"]
mod safe_precision;
#[path = "verifier/spills.rs"]
mod spills;
#[path = "verifier/spin_locks.rs"]
mod spin_locks;
#[path = "verifier/stack_bounds.rs"]
mod stack_bounds;
#[path = "verifier/uninit.rs"]
mod uninit;
