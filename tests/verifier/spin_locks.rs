//! `bpf_spin_lock`: one lock at a time, on 4 aligned bytes of a map value at a known offset, released
//! by the same lock word before any call, exit or packet load, and on every path.

use crate::harness::{kind, Table, ARRAY8};
use ebpf_vm::Context;

/// Looks up entry 0 of map 0 into r6 (null goes to `out`, which returns 0), then `body`.
/// Slots: 0 stw, 1 mov, 2 add, 3-4 lddw, 5 call, 6 jeq, 7 mov, then `body` from 8.
fn with_value(body: &str) -> String {
    format!(
        "stw [%r10-4], 0
        mov %r2, %r10
        add %r2, -4
        lddw %r1, map_idx(0)
        call 1
        jeq %r0, 0, out
        mov %r6, %r0
        {body}
    out:
        mov %r0, 0
        exit"
    )
}

const LOCK: &str = "mov %r1, %r6\ncall 93";
const UNLOCK: &str = "mov %r1, %r6\ncall 94";

#[test]
fn locks_pair_up() {
    let mut t = Table::new("spin locks");
    t.accept(
        "lock, update, unlock",
        &with_value(&format!("{LOCK}\nldxw %r1, [%r6+4]\nadd %r1, 1\nstxw [%r6+4], %r1\n{UNLOCK}")),
        ARRAY8,
        Context::Buffer,
        &[&[]],
    );
    t.accept(
        "a branch inside the locked region",
        &with_value(&format!("{LOCK}\nldxw %r1, [%r6+4]\njgt %r1, 5, skip\nstw [%r6+4], 9\nskip:\n{UNLOCK}")),
        ARRAY8,
        Context::Buffer,
        &[&[]],
    );
    t.reject(
        "exit while locked",
        &with_value(&format!("{LOCK}\nmov %r0, 0\nexit # <-")),
        ARRAY8,
        Context::Buffer,
        11,
        kind!(SpinLock { .. }),
    );
    t.reject(
        "a helper call while locked",
        &with_value(&format!("{LOCK}\ncall 7 # <-\n{UNLOCK}")),
        ARRAY8,
        Context::Buffer,
        10,
        kind!(SpinLock { .. }),
    );
    t.reject(
        "two locks",
        &with_value(&format!("{LOCK}\n{LOCK} # <-\n{UNLOCK}")),
        ARRAY8,
        Context::Buffer,
        11,
        kind!(SpinLock { .. }),
    );
    t.reject(
        "unlock without a lock",
        &with_value(&format!("{UNLOCK} # <-")),
        ARRAY8,
        Context::Buffer,
        9,
        kind!(SpinLock { reason: "no lock is held" }),
    );
    t.reject(
        "unlock of another word",
        &with_value(&format!("{LOCK}\nmov %r1, %r6\nadd %r1, 4\ncall 94 # <-")),
        ARRAY8,
        Context::Buffer,
        12,
        kind!(SpinLock { reason: "this is not the lock held" }),
    );
    t.reject(
        "locked on one path only",
        &with_value(&format!("ldxw %r1, [%r6+0]\njeq %r1, 0, skip\n{LOCK}\nskip:\n{UNLOCK} # <-")),
        ARRAY8,
        Context::Buffer,
        13,
        kind!(SpinLock { .. }),
    );
    t.reject(
        "a lock word on the stack",
        &with_value("mov %r1, %r10\nadd %r1, -8\ncall 93 # <-"),
        ARRAY8,
        Context::Buffer,
        10,
        kind!(HelperArgument { helper: 93, arg: 1, .. }),
    );
    t.reject(
        "a misaligned lock word",
        &with_value("mov %r1, %r6\nadd %r1, 2\ncall 93 # <-"),
        ARRAY8,
        Context::Buffer,
        10,
        kind!(HelperArgument { helper: 93, arg: 1, .. }),
    );
    t.reject(
        "a lock word past the value",
        &with_value("mov %r1, %r6\nadd %r1, 8\ncall 93 # <-"),
        ARRAY8,
        Context::Buffer,
        10,
        kind!(HelperArgument { helper: 93, arg: 1, .. }),
    );
    t.finish(11);
}
