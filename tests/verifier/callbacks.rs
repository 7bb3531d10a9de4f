//! `bpf_loop` callbacks: a callback is a function of the program in a frame of its own, with r1 the
//! iteration (fewer than the count asked for) and r2 the caller's argument, whose result must be a
//! number; what it changes through its argument holds for every number of iterations, from none on.

use crate::harness::{kind, Spec, Table, ARRAY8, NO_MAPS};
use ebpf_vm::Context;

/// `bpf_loop(count, cb, r10 - 8, 0)` with the slot at r10 - 8 set to `init` first; then `after`
/// (the loop's result in r0), and the callback `cb` after the caller's `exit`.
fn with_loop(init: i32, count: &str, after: &str, cb: &str) -> String {
    format!(
        "stdw [%r10-8], {init}
        {count}
        lddw %r2, func(cb)
        mov %r3, %r10
        add %r3, -8
        mov %r4, 0
        call 181
        {after}
        exit
    cb:
        {cb}"
    )
}

#[test]
fn callbacks_that_are_safe_run_alike_everywhere() {
    let mut t = Table::new("bpf_loop callbacks, safe");
    // Sum of the iterations into the caller's slot; 10 iterations.
    let sum = "ldxdw %r3, [%r2+0]\nadd %r3, %r1\nstxdw [%r2+0], %r3\nmov %r0, 0\nexit";
    t.accept_returns(
        "sum of the iterations",
        &with_loop(0, "mov %r1, 10", "ldxdw %r1, [%r10-8]\nlsh %r1, 8\nadd %r0, %r1", sum),
        &[],
        10 + (45 << 8),
    );
    t.accept_returns(
        "stops when the callback returns 1",
        &with_loop(0, "mov %r1, 100", "", "mov %r0, 0\njne %r1, 3, out\nmov %r0, 1\nout:\nexit"),
        &[],
        4,
    );
    t.accept_returns("no iteration", &with_loop(0, "mov %r1, 0", "ldxdw %r1, [%r10-8]\nadd %r0, %r1", sum), &[], 0);
    t.accept_returns(
        "the count's upper half is ignored",
        &with_loop(0, "lddw %r1, 0x100000003", "", "mov %r0, 0\nexit"),
        &[],
        3,
    );
    t.accept_returns(
        "flags, and more than 1 << 23 iterations, are refused",
        "mov %r1, 1\nlddw %r2, func(cb)\nmov %r3, 0\nmov %r4, 1\ncall 181\nmov %r6, %r0\nlddw %r1, 0x800001\n\
         lddw %r2, func(cb)\nmov %r3, 0\nmov %r4, 0\ncall 181\nlsh %r6, 8\nsub %r6, %r0\nmov %r0, %r6\nexit\n\
         cb:\nmov %r0, 1\nexit",
        &[],
        (-22i64 << 8).wrapping_add(7) as u64,
    );
    // The iteration indexes an 8-byte array on the callback's own stack: 8 iterations stay inside it.
    t.accept_returns(
        "the iteration bounds an index",
        &with_loop(
            0,
            "mov %r1, 8",
            "ldxdw %r0, [%r10-8]",
            "mov %r3, %r10\nadd %r3, -8\nstdw [%r10-8], 0\nadd %r3, %r1\nstb [%r3+0], 1\n\
             ldxdw %r4, [%r2+0]\nadd %r4, 1\nstxdw [%r2+0], %r4\nmov %r0, 0\nexit",
        ),
        &[],
        8,
    );
    // A counter the callback keeps below 7 through its argument indexes the caller's array after the
    // loop, however many iterations ran.
    t.accept_returns(
        "what the callback changes is bounded after any number of iterations",
        &with_loop(
            0,
            "mov %r1, 20",
            "ldxdw %r1, [%r10-8]\nmov %r2, %r10\nadd %r2, -16\nstdw [%r10-16], 0\nadd %r2, %r1\nstb [%r2+0], 9\n\
             ldxdw %r0, [%r10-16]",
            "ldxdw %r3, [%r2+0]\njge %r3, 7, out\nadd %r3, 1\nstxdw [%r2+0], %r3\nout:\nmov %r0, 0\nexit",
        ),
        &[],
        9 << 56,
    );
    // A map lookup in the callback, with a key on its own stack.
    t.accept(
        "a map lookup in the callback",
        &with_loop(
            0,
            "mov %r1, 5",
            "",
            "stw [%r10-4], 0\nmov %r2, %r10\nadd %r2, -4\nlddw %r1, map_idx(0)\ncall 1\njeq %r0, 0, out\n\
             ldxdw %r1, [%r0+0]\nadd %r1, 3\nstxdw [%r0+0], %r1\nout:\nmov %r0, 0\nexit",
        ),
        ARRAY8,
        Context::Buffer,
        &[&[]],
    );
    // A callback that runs a loop of its own.
    t.accept_returns(
        "nested loops",
        &with_loop(
            0,
            "mov %r1, 3",
            "ldxdw %r0, [%r10-8]",
            "mov %r6, %r2\nmov %r1, 4\nlddw %r2, func(inner)\nmov %r3, %r6\nmov %r4, 0\ncall 181\nmov %r0, 0\nexit\n\
             inner:\nldxdw %r3, [%r2+0]\nadd %r3, 1\nstxdw [%r2+0], %r3\nmov %r0, 0\nexit",
        ),
        &[],
        12,
    );
    t.finish(9);
}

#[test]
fn callbacks_that_break_a_rule_are_refused() {
    let mut t = Table::new("bpf_loop callbacks, refused");
    // Slots: 0 stdw, 1 count, 2-3 lddw, 4 mov, 5 add, 6 mov, 7 call, 8 after / exit.
    t.reject_plain(
        "the callback is not a function",
        "stdw [%r10-8], 0\nmov %r1, 1\nlddw %r2, 0\nmov %r3, 0\nmov %r4, 0\ncall 181 # <-\nexit",
        6,
        kind!(HelperArgument { helper: 181, arg: 2, .. }),
    );
    t.reject_plain(
        "the callback writes past its argument",
        &with_loop(0, "mov %r1, 1", "", "stdw [%r2+8], 1 # <-\nmov %r0, 0\nexit"),
        9,
        kind!(OutOfBounds { region: Stack, .. }),
    );
    t.reject_plain(
        "the callback returns a pointer",
        &with_loop(0, "mov %r1, 1", "", "mov %r0, %r10\nexit # <-"),
        10,
        kind!(ExitValue),
    );
    t.reject_plain("the callback returns nothing", &with_loop(0, "mov %r1, 1", "", "exit # <-"), 9, kind!(ExitValue));
    t.reject_plain(
        "the callback reads r3",
        &with_loop(0, "mov %r1, 1", "", "mov %r0, %r3 # <-\nexit"),
        9,
        kind!(UninitRegister { reg: 3 }),
    );
    // Nine iterations index an 8-byte array: the ninth is out of bounds.
    t.reject_plain(
        "the iteration is not bounded by less than the count",
        &with_loop(
            0,
            "mov %r1, 9",
            "",
            "mov %r3, %r10\nadd %r3, -8\nadd %r3, %r1\nstb [%r3+0], 1 # <-\nmov %r0, 0\nexit",
        ),
        12,
        kind!(OutOfBounds { region: Stack, .. }),
    );
    // The callback adds 1 each time with no bound: after the loop the counter may be anything up to
    // the count, past the caller's 8-byte array.
    t.reject_plain(
        "what the callback changes is not taken from one iteration only",
        &with_loop(
            0,
            "mov %r1, 100",
            "ldxdw %r1, [%r10-8]\nmov %r2, %r10\nadd %r2, -16\nadd %r2, %r1\nstb [%r2+0], 9 # <-",
            "ldxdw %r3, [%r2+0]\nadd %r3, 1\nstxdw [%r2+0], %r3\nmov %r0, 0\nexit",
        ),
        12,
        kind!(OutOfBounds { region: Stack, .. }),
    );
    t.reject_plain(
        "a callback that loops over itself",
        &with_loop(
            0,
            "mov %r1, 2",
            "",
            "mov %r1, 2\nlddw %r2, func(cb)\nmov %r3, 0\nmov %r4, 0\ncall 181 # <-\nmov %r0, 0\nexit",
        ),
        14,
        kind!(Recursion { .. }),
    );
    // A record reserved before the loop may not be held across it.
    t.reject_spec(
        Spec::new(
            "a record held across the loop",
            "lddw %r1, map_idx(0)\nmov %r2, 8\nmov %r3, 0\ncall 131\njeq %r0, 0, out\nmov %r6, %r0\nmov %r1, 1\n\
             lddw %r2, func(cb)\nmov %r3, 0\nmov %r4, 0\ncall 181 # <-\nmov %r1, %r6\nmov %r2, 0\ncall 132\n\
             out:\nmov %r0, 0\nexit\ncb:\nmov %r0, 0\nexit",
        )
        .maps(crate::harness::RINGBUF),
        &[(12, kind!(UnreleasedRecord { reserved_at: 4 }))],
    );
    let _ = NO_MAPS;
    t.finish(9);
}

/// `bpf_for_each_map_elem(map_idx(0), cb, r10 - 8, 0)`, then `after`; the callback `cb` after the
/// caller's `exit`. Slots: 0 stdw, 1-2 lddw map, 3-4 lddw func, 5 mov, 6 add, 7 mov, 8 call, 9 after
/// (or `exit`, with no `after`).
fn with_each(after: &str, cb: &str) -> String {
    format!(
        "stdw [%r10-8], 0
        lddw %r1, map_idx(0)
        lddw %r2, func(cb)
        mov %r3, %r10
        add %r3, -8
        mov %r4, 0
        call 164
        {after}
        exit
    cb:
        {cb}"
    )
}

#[test]
fn map_walks_type_their_callbacks() {
    let mut t = Table::new("bpf_for_each_map_elem callbacks");
    // Key (a u32 copy in the callback's frame), value (the map's 8 bytes) and the caller's slot.
    let sum = "ldxw %r5, [%r2+0]\nldxdw %r6, [%r3+0]\nadd %r6, %r5\nstxdw [%r3+0], %r6\nldxdw %r7, [%r4+0]\n\
               add %r7, 1\nstxdw [%r4+0], %r7\nmov %r0, 0\nexit";
    t.accept(
        "key, value and argument",
        &with_each("ldxdw %r1, [%r10-8]\nlsh %r1, 8\nadd %r0, %r1", sum),
        ARRAY8,
        Context::Buffer,
        &[&[]],
    );
    t.reject(
        "past the key's slot",
        &with_each("", "ldxw %r0, [%r2+8] # <-\nexit"),
        ARRAY8,
        Context::Buffer,
        10,
        kind!(UninitStack { .. }),
    );
    t.reject(
        "past the value",
        &with_each("", "stdw [%r3+8], 1 # <-\nmov %r0, 0\nexit"),
        ARRAY8,
        Context::Buffer,
        10,
        kind!(OutOfBounds { region: MapValue, .. }),
    );
    t.reject(
        "r5 is no argument",
        &with_each("", "mov %r0, %r5 # <-\nexit"),
        ARRAY8,
        Context::Buffer,
        10,
        kind!(UninitRegister { reg: 5 }),
    );
    t.reject(
        "a ring buffer cannot be walked",
        &with_each("", "mov %r0, 0\nexit").replace("call 164", "call 164 # <-"),
        crate::harness::RINGBUF,
        Context::Buffer,
        8,
        kind!(HelperArgument { helper: 164, arg: 1, .. }),
    );
    t.finish(5);
}
