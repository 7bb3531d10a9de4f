//! Ring-buffer records: each record reserved must be submitted or discarded exactly once on every path
//! to `exit`, only a held record may be released, and accesses stay inside the reserved bytes.

use crate::harness::{kind, MapSpec, Spec, Table, RINGBUF};

/// Reserves `size` bytes in map 0; null goes to `out`. The record is in `r6` from slot 7 on.
fn reserve(size: u32, body: &str) -> String {
    format!(
        "
        lddw %r1, map_idx(0)
        mov %r2, {size}
        mov %r3, 0
        call 131
        jeq %r0, 0, out
        mov %r6, %r0
        {body}
    out:
        mov %r0, 0
        exit"
    )
}

const SUBMIT: &str = "mov %r1, %r6\nmov %r2, 0\ncall 132";

#[test]
fn records_released_once_on_every_path() {
    let mut t = Table::new("ring-buffer release");
    t.reject(
        "never released",
        &reserve(16, "mov %r0, 0\nexit # <-"),
        RINGBUF,
        Default::default(),
        8,
        kind!(UnreleasedRecord { reserved_at: 4 }),
    );
    t.reject(
        "released on one branch only",
        &reserve(16, &format!("call 7\njeq %r0, 0, skip\n{SUBMIT}\nskip:\nmov %r0, 0\nexit # <-")),
        RINGBUF,
        Default::default(),
        13,
        kind!(UnreleasedRecord { reserved_at: 4 }),
    );
    t.reject(
        "every reference overwritten",
        &reserve(16, "mov %r6, 0\nmov %r0, 0\nexit # <-"),
        RINGBUF,
        Default::default(),
        9,
        kind!(UnreleasedRecord { reserved_at: 4 }),
    );
    t.reject(
        "first of two records never released",
        &reserve(
            8,
            "lddw %r1, map_idx(0)
            mov %r2, 8
            mov %r3, 0
            call 131
            jeq %r0, 0, drop
            mov %r1, %r0
            mov %r2, 0
            call 132
        drop:
            mov %r0, 0
            exit # <-",
        ),
        RINGBUF,
        Default::default(),
        17,
        kind!(UnreleasedRecord { reserved_at: 4 }),
    );
    t.reject(
        "second of two records never released",
        &reserve(
            8,
            "lddw %r1, map_idx(0)
            mov %r2, 8
            mov %r3, 0
            call 131
            mov %r7, %r0
            mov %r1, %r6
            mov %r2, 0
            call 133
            mov %r0, 0
            exit # <-",
        ),
        RINGBUF,
        Default::default(),
        17,
        kind!(UnreleasedRecord { reserved_at: 11 }),
    );
    t.reject(
        "released only when a byte of it is zero",
        &reserve(
            16,
            &format!("stdw [%r6+0], 0\nldxb %r1, [%r6+3]\njne %r1, 0, keep\n{SUBMIT}\nkeep:\nmov %r0, 0\nexit # <-"),
        ),
        RINGBUF,
        Default::default(),
        14,
        kind!(UnreleasedRecord { reserved_at: 4 }),
    );
    t.reject(
        "submitted twice",
        &reserve(16, &format!("{SUBMIT}\nmov %r1, %r6\nmov %r2, 0\ncall 132 # <-")),
        RINGBUF,
        Default::default(),
        12,
        kind!(BadRelease { reg: 1 }),
    );
    t.reject(
        "submitted, then discarded",
        &reserve(16, &format!("{SUBMIT}\nmov %r1, %r6\nmov %r2, 0\ncall 133 # <-")),
        RINGBUF,
        Default::default(),
        12,
        kind!(BadRelease { reg: 1 }),
    );
    t.reject(
        "submitted at an offset",
        &reserve(16, "mov %r1, %r6\nadd %r1, 8\nmov %r2, 0\ncall 132 # <-"),
        RINGBUF,
        Default::default(),
        10,
        kind!(BadRelease { reg: 1 }),
    );
    t.reject(
        "submitted before the null check",
        "
        lddw %r1, map_idx(0)
        mov %r2, 16
        mov %r3, 0
        call 131
        mov %r1, %r0
        mov %r2, 0
        call 132 # <-
        mov %r0, 0
        exit",
        RINGBUF,
        Default::default(),
        7,
        kind!(BadRelease { reg: 1 }),
    );
    t.reject(
        "null released in the null branch",
        "
        lddw %r1, map_idx(0)
        mov %r2, 16
        mov %r3, 0
        call 131
        jne %r0, 0, held
        mov %r1, %r0
        mov %r2, 0
        call 133 # <-
        mov %r0, 0
        exit
    held:
        mov %r1, %r0
        mov %r2, 0
        call 133
        mov %r0, 0
        exit",
        RINGBUF,
        Default::default(),
        8,
        kind!(BadRelease { reg: 1 }),
    );
    t.finish(11);
}

#[test]
fn release_of_what_is_not_a_record() {
    let mut t = Table::new("release of non-records");
    for (name, setup, pc) in [
        ("stack pointer", "mov %r1, %r10\nadd %r1, -8", 3),
        ("number", "mov %r1, 0", 2),
        ("input pointer", "", 1),
        ("map handle", "lddw %r1, map_idx(0)", 3),
    ] {
        for (helper, id) in [("submit", 132), ("discard", 133)] {
            let text = format!("{setup}\nmov %r2, 0\ncall {id} # <-\nmov %r0, 0\nexit");
            t.reject_spec(
                Spec::new(&format!("{helper} of a {name}"), &text).maps(RINGBUF),
                &[(pc, kind!(BadRelease { reg: 1 }))],
            );
        }
    }
    t.reject(
        "submit of a map value",
        "
        stw [%r10-4], 0
        mov %r2, %r10
        add %r2, -4
        lddw %r1, map_idx(1)
        call 1
        jeq %r0, 0, out
        mov %r1, %r0
        mov %r2, 0
        call 132 # <-
    out:
        mov %r0, 0
        exit",
        &[MapSpec::RingBuf { size: 4096 }, MapSpec::Array { value: 8, entries: 1 }],
        Default::default(),
        9,
        kind!(BadRelease { reg: 1 }),
    );
    t.finish(9);
}

#[test]
fn record_accesses() {
    let mut t = Table::new("ring-buffer record accesses");
    t.reject(
        "store past the end",
        &reserve(16, &format!("stdw [%r6+16], 0 # <-\n{SUBMIT}")),
        RINGBUF,
        Default::default(),
        7,
        kind!(OutOfBounds { region: Record, min: 16, end: 24, size: 16 }),
    );
    t.reject(
        "store into the header",
        &reserve(16, &format!("stdw [%r6-8], 0 # <-\n{SUBMIT}")),
        RINGBUF,
        Default::default(),
        7,
        kind!(OutOfBounds { region: Record, min: -8, end: 0, size: 16 }),
    );
    t.reject(
        "load past a 12-byte record",
        &reserve(12, &format!("ldxdw %r7, [%r6+8] # <-\n{SUBMIT}")),
        RINGBUF,
        Default::default(),
        7,
        kind!(OutOfBounds { region: Record, min: 8, end: 16, size: 12 }),
    );
    t.reject(
        "store before the null check",
        "
        lddw %r1, map_idx(0)
        mov %r2, 16
        mov %r3, 0
        call 131
        stb [%r0+0], 1 # <-
        mov %r1, %r0
        mov %r2, 0
        call 132
        mov %r0, 0
        exit",
        RINGBUF,
        Default::default(),
        5,
        kind!(MaybeNull { reg: 0 }),
    );
    t.reject_spec(
        Spec::new("store after submit", &reserve(16, &format!("{SUBMIT}\nstb [%r6+0], 1 # <-"))).maps(RINGBUF),
        &[(
            10,
            kind!(
                NotAPointer { reg: 6 }
                    | UninitRegister { reg: 6 }
                    | BadRelease { reg: 6 }
                    | OutOfBounds { region: Record, .. }
            ),
        )],
    );
    t.reject(
        "flags of discard a pointer",
        &reserve(16, "mov %r1, %r6\nmov %r2, %r10\ncall 133 # <-"),
        RINGBUF,
        Default::default(),
        9,
        kind!(PointerLeak { reg: 2 }),
    );
    t.finish(6);
}
