//! Reads of registers and stack bytes nothing has written: `UninitRegister` and `UninitStack`, at every
//! kind of instruction that reads a register or the stack, after helper and bpf-to-bpf calls, and on
//! only one of several paths.

use ebpf_vm::Context;

use crate::harness::{kind, MapSpec, Table, ARRAY8, NO_MAPS};

#[test]
fn registers_read_before_written() {
    let mut t = Table::new("uninitialised registers");
    t.reject_plain("exit without r0", "exit # <-", 0, kind!(UninitRegister { reg: 0 }));
    t.reject_plain("add to r0", "add %r0, 1 # <-\nexit", 0, kind!(UninitRegister { reg: 0 }));
    t.reject_plain("add32 to r0", "add32 %r0, 1 # <-\nexit", 0, kind!(UninitRegister { reg: 0 }));
    t.reject_plain("mov from r3", "mov %r0, %r3 # <-\nexit", 0, kind!(UninitRegister { reg: 3 }));
    t.reject_plain("mov32 from r9", "mov32 %r0, %r9 # <-\nexit", 0, kind!(UninitRegister { reg: 9 }));
    t.reject_plain(
        "alu source",
        "
        mov %r0, 0
        add %r0, %r4 # <-
        exit",
        1,
        kind!(UninitRegister { reg: 4 }),
    );
    t.reject_plain(
        "alu destination with a register source",
        "
        mov %r0, 0
        sub %r6, %r0 # <-
        exit",
        1,
        kind!(UninitRegister { reg: 6 }),
    );
    t.reject_plain("neg", "neg %r0 # <-\nexit", 0, kind!(UninitRegister { reg: 0 }));
    t.reject_plain("byte swap", "mov %r0, 0\nbe32 %r3 # <-\nexit", 1, kind!(UninitRegister { reg: 3 }));
    t.reject_plain("sign extension", "movsx3264 %r0, %r9 # <-\nexit", 0, kind!(UninitRegister { reg: 9 }));
    t.reject_plain(
        "jump destination operand",
        "
        mov %r0, 0
        jeq %r5, 0, out # <-
        mov %r0, 1
    out:
        exit",
        1,
        kind!(UninitRegister { reg: 5 }),
    );
    t.reject_plain(
        "jump source operand",
        "
        mov %r0, 0
        jgt %r2, %r7, out # <-
        mov %r0, 1
    out:
        exit",
        1,
        kind!(UninitRegister { reg: 7 }),
    );
    t.reject_plain(
        "jmp32 operand",
        "
        mov %r0, 0
        jset32 %r8, 1, out # <-
        mov %r0, 1
    out:
        exit",
        1,
        kind!(UninitRegister { reg: 8 }),
    );
    t.reject_plain(
        "store value",
        "
        stxdw [%r10-8], %r8 # <-
        mov %r0, 0
        exit",
        0,
        kind!(UninitRegister { reg: 8 }),
    );
    t.reject_plain("load base", "ldxdw %r0, [%r3+0] # <-\nexit", 0, kind!(UninitRegister { reg: 3 }));
    t.reject_plain(
        "store base",
        "
        stdw [%r4+0], 1 # <-
        mov %r0, 0
        exit",
        0,
        kind!(UninitRegister { reg: 4 }),
    );
    t.reject_plain(
        "atomic value",
        "
        stdw [%r10-8], 0
        lock add [%r10-8], %r3 # <-
        mov %r0, 0
        exit",
        1,
        kind!(UninitRegister { reg: 3 }),
    );
    t.reject_plain(
        "cmpxchg reads r0",
        "
        stdw [%r10-8], 0
        mov %r1, 1
        lock cmpxchg [%r10-8], %r1 # <-
        mov %r0, 0
        exit",
        2,
        kind!(UninitRegister { reg: 0 }),
    );
    t.reject_plain(
        "r1 after a helper call",
        "
        call 5
        mov %r0, %r1 # <-
        exit",
        1,
        kind!(UninitRegister { reg: 1 }),
    );
    t.reject_plain(
        "r5 after a helper call",
        "
        mov %r5, 3
        call 7
        add %r0, %r5 # <-
        exit",
        2,
        kind!(UninitRegister { reg: 5 }),
    );
    t.reject(
        "helper argument r1 clobbered by an earlier call",
        "
        stw [%r10-4], 0
        call 5
        mov %r2, %r10
        add %r2, -4
        call 1 # <-
        mov %r0, 0
        exit",
        ARRAY8,
        Context::Buffer,
        4,
        kind!(UninitRegister { reg: 1 }),
    );
    // (bpf_trace_printk's values may be left unset, as in the kernel; bpf_probe_read's source may not.)
    t.reject_plain(
        "helper argument never set",
        "
        mov %r1, %r10
        add %r1, -8
        mov %r2, 8
        call 4 # <-
        exit",
        3,
        kind!(UninitRegister { reg: 3 }),
    );
    t.reject_plain(
        "callee reads the caller's r6",
        "
        mov %r6, 1
        call local f
        exit
    f:
        mov %r0, %r6 # <-
        exit",
        3,
        kind!(UninitRegister { reg: 6 }),
    );
    t.reject_plain(
        "caller reads r1 after a bpf-to-bpf call",
        "
        mov %r1, 1
        call local f
        mov %r0, %r1 # <-
        exit
    f:
        mov %r0, 0
        exit",
        2,
        kind!(UninitRegister { reg: 1 }),
    );
    t.reject_plain(
        // A function may return nothing (clang's void functions do); its caller may not read r0 then.
        "callee exits without r0, caller returns it",
        "
        call local f
        exit # <-
    f:
        exit",
        1,
        kind!(UninitRegister { reg: 0 }),
    );
    t.reject_plain(
        "r0 set on one path only",
        "
        jeq %r2, 0, skip
        mov %r0, 1
    skip:
        exit # <-",
        2,
        kind!(UninitRegister { reg: 0 }),
    );
    t.reject_plain(
        "register set on the taken branch only",
        "
        mov %r0, 0
        jgt %r2, 4, set
        ja use
    set:
        mov %r6, 1
    use:
        add %r0, %r6 # <-
        exit",
        4,
        kind!(UninitRegister { reg: 6 }),
    );
    t.reject_plain(
        "r2 after a packet load",
        "
        ldabsb 0
        mov %r0, %r2 # <-
        exit",
        1,
        kind!(UninitRegister { reg: 2 }),
    );
    t.reject_plain(
        "register set only inside a loop that may not run",
        "
        mov %r6, 0
        mov %r0, 0
    loop:
        jge %r6, %r2, done
        mov %r7, %r6
        add %r6, 1
        jlt %r6, 4, loop
    done:
        add %r0, %r7 # <-
        exit",
        6,
        kind!(UninitRegister { reg: 7 }),
    );
    t.finish(29);
}

#[test]
fn stack_read_before_written() {
    let mut t = Table::new("uninitialised stack");
    t.reject_plain("nothing written", "ldxdw %r0, [%r10-8] # <-\nexit", 0, kind!(UninitStack { offset: -8 }));
    t.reject_plain(
        "upper half not written",
        "
        stw [%r10-8], 1
        ldxdw %r0, [%r10-8] # <-
        exit",
        1,
        kind!(UninitStack { offset: -4 }),
    );
    t.reject_plain(
        "lower half not written",
        "
        stw [%r10-4], 1
        ldxdw %r0, [%r10-8] # <-
        exit",
        1,
        kind!(UninitStack { offset: -8 }),
    );
    t.reject_plain(
        "gap between written bytes",
        "
        stw [%r10-16], 1
        stw [%r10-8], 2
        ldxdw %r0, [%r10-16] # <-
        exit",
        2,
        kind!(UninitStack { offset: -12 }),
    );
    t.reject_plain(
        "one byte short",
        "
        stb [%r10-1], 1
        ldxh %r0, [%r10-2] # <-
        exit",
        1,
        kind!(UninitStack { offset: -2 }),
    );
    t.reject_plain(
        "written on one path only",
        "
        jeq %r2, 0, skip
        stdw [%r10-8], 1
    skip:
        ldxdw %r0, [%r10-8] # <-
        exit",
        2,
        kind!(UninitStack { offset: -8 }),
    );
    t.reject_plain(
        "through a derived pointer",
        "
        mov %r1, %r10
        add %r1, -16
        stdw [%r1+0], 3
        ldxdw %r0, [%r1+8] # <-
        exit",
        3,
        kind!(UninitStack { offset: -8 }),
    );
    t.reject_plain(
        "sign-extending load",
        "
        stw [%r10-8], 1
        ldxsw %r0, [%r10-4] # <-
        exit",
        1,
        kind!(UninitStack { offset: -4 }),
    );
    t.reject_plain(
        "atomic add reads the old value",
        "
        mov %r1, 1
        lock add [%r10-8], %r1 # <-
        mov %r0, 0
        exit",
        1,
        kind!(UninitStack { offset: -8 }),
    );
    t.reject(
        "map key never written",
        "
        lddw %r1, map_idx(0)
        mov %r2, %r10
        add %r2, -4
        call 1 # <-
        mov %r0, 0
        exit",
        ARRAY8,
        Context::Buffer,
        4,
        kind!(UninitStack { offset: -4 }),
    );
    t.reject(
        "hash key half written",
        "
        stw [%r10-8], 7
        lddw %r1, map_idx(0)
        mov %r2, %r10
        add %r2, -8
        call 1 # <-
        mov %r0, 0
        exit",
        &[MapSpec::Hash { key: 8, value: 8, entries: 4 }],
        Context::Buffer,
        5,
        kind!(UninitStack { offset: -4 }),
    );
    t.reject(
        "map value argument never written",
        "
        stw [%r10-4], 0
        lddw %r1, map_idx(0)
        mov %r2, %r10
        add %r2, -4
        mov %r3, %r10
        add %r3, -16
        mov %r4, 0
        call 2 # <-
        mov %r0, 0
        exit",
        ARRAY8,
        Context::Buffer,
        8,
        kind!(UninitStack { offset: -16 }),
    );
    t.reject_plain(
        "helper reads memory half written",
        "
        stw [%r10-8], 0
        mov %r1, %r10
        add %r1, -8
        mov %r2, 8
        call 200 # <-
        exit",
        4,
        kind!(UninitStack { offset: -4 }),
    );
    t.reject_plain(
        "callee reads the caller's unwritten stack",
        "
        mov %r1, %r10
        add %r1, -8
        call local f
        exit
    f:
        ldxdw %r0, [%r1+0] # <-
        exit",
        4,
        kind!(UninitStack { offset: -8 }),
    );
    t.reject_plain(
        "callee's frame is not the caller's",
        "
        stdw [%r10-8], 5
        call local f
        exit
    f:
        ldxdw %r0, [%r10-8] # <-
        exit",
        3,
        kind!(UninitStack { offset: -8 }),
    );
    t.reject_plain(
        "written in the callee's frame, read in the caller's",
        "
        call local f
        ldxdw %r0, [%r10-8] # <-
        exit
    f:
        stdw [%r10-8], 5
        mov %r0, 0
        exit",
        1,
        kind!(UninitStack { offset: -8 }),
    );
    t.reject_plain(
        "variable offset over a partly written area",
        "
        stdw [%r10-16], 0
        mov %r3, %r2
        and %r3, 8
        mov %r4, %r10
        add %r4, -16
        add %r4, %r3
        ldxdw %r0, [%r4+0] # <-
        exit",
        6,
        kind!(UninitStack { offset: -8 }),
    );
    t.reject_plain(
        "the bottom of the frame",
        "
        stdw [%r10-504], 0
        ldxdw %r0, [%r10-512] # <-
        exit",
        1,
        kind!(UninitStack { offset: -512 }),
    );
    t.finish(18);
}

#[test]
fn registers_and_stack_in_loops() {
    let mut t = Table::new("uninitialised values in loops");
    t.reject_plain(
        "the second iteration reads what the first did not write",
        "
        mov %r6, 0
        mov %r0, 0
    loop:
        jeq %r6, 0, first
        ldxdw %r3, [%r10-16] # <-
        add %r0, %r3
    first:
        stdw [%r10-8], 1
        add %r6, 1
        jlt %r6, 3, loop
        exit",
        3,
        kind!(UninitStack { offset: -16 }),
    );
    t.reject_plain(
        "a register the first iteration reads",
        "
        mov %r6, 0
    loop:
        add %r7, 1 # <-
        add %r6, 1
        jlt %r6, 3, loop
        mov %r0, %r7
        exit",
        1,
        kind!(UninitRegister { reg: 7 }),
    );
    t.finish(2);
}

/// No map is needed for a read of a register the entry state leaves unset, whatever the context.
#[test]
fn entry_state_of_every_context() {
    let mut t = Table::new("entry state");
    for (name, context) in [
        ("buffer", Context::Buffer),
        ("fixed", Context::fixed(16)),
        ("packet", Context::Packet { size: 16, data: 0, data_end: 8 }),
    ] {
        t.reject(name, "mov %r0, %r3 # <-\nexit", NO_MAPS, context, 0, kind!(UninitRegister { reg: 3 }));
    }
    t.finish(3);
}
