//! Bad objects: mutations of the real fixtures must load or fail with a typed error, never panic; what
//! loads must build and run (checked, with a budget) to `Ok` or a typed error.

use ebpf_vm::elf::Object;
use proptest::prelude::*;

const FIXTURES: &[&[u8]] = &[
    include_bytes!("fixtures/hash_count.o"),
    include_bytes!("fixtures/subprog.o"),
    include_bytes!("fixtures/tail_init.o"),
    include_bytes!("fixtures/tail_host.o"),
    include_bytes!("fixtures/ringbuf.o"),
    include_bytes!("fixtures/globals.o"),
    include_bytes!("fixtures/legacy_maps.o"),
    include_bytes!("fixtures/packet.o"),
    include_bytes!("fixtures/loop.o"),
    include_bytes!("fixtures/perf.o"),
    include_bytes!("fixtures/printf.o"),
    include_bytes!("fixtures/foreach.o"),
    include_bytes!("fixtures/spinlock.o"),
    include_bytes!("fixtures/map_in_map.o"),
];

fn exercise(bytes: &[u8]) {
    let Ok(obj) = Object::parse(bytes) else { return };
    let Ok(obj) = ebpf_vm::Instance::new(&obj) else { return };
    for p in obj.programs() {
        if let Ok(b) = obj.vm_builder(&p.name) {
            if let Ok(vm) = b.budget(10_000).build() {
                let _ = vm.execute(&mut [7u8; 64]);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Random byte changes anywhere in an object.
    #[test]
    fn mutated_objects_never_panic(
        which in 0..FIXTURES.len(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = FIXTURES[which].to_vec();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        exercise(&bytes);
    }

    /// Objects cut short.
    #[test]
    fn truncated_objects_never_panic(which in 0..FIXTURES.len(), keep in any::<prop::sample::Index>()) {
        let bytes = FIXTURES[which];
        exercise(&bytes[..keep.index(bytes.len())]);
    }

    /// Arbitrary bytes, and bytes behind a valid ELF header.
    #[test]
    fn random_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..512)) {
        exercise(&tail);
        let mut bytes = FIXTURES[0][..64].to_vec();
        bytes.extend_from_slice(&tail);
        exercise(&bytes);
    }
}

#[test]
fn fixtures_load_unmodified() {
    for bytes in FIXTURES {
        Object::parse(bytes).expect("fixture loads");
    }
}

#[test]
fn non_bpf_and_garbage_are_typed_errors() {
    assert!(Object::parse(b"").is_err());
    assert!(Object::parse(b"\x7fELF").is_err());
    let mut other_machine = FIXTURES[0].to_vec();
    other_machine[18] = 62; // EM_X86_64
    assert_eq!(Object::parse(&other_machine).err(), Some(ebpf_vm::elf::ElfError::NotBpf));
}
