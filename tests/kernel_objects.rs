//! Objects built for the kernel: map kinds the runtime does not implement, sizes left for the loader,
//! and `.kconfig` externs (fixtures `kernel_maps.c`, `kconfig_struct.c` and `ksym.c`).

use ebpf_vm::elf::{kernel_version, ElfError, Kconfig, KconfigKind, MapOrigin, Object};
use ebpf_vm::maps::{MapError, MapType};
use ebpf_vm::vm::InstanceError;
use ebpf_vm::{Engine, Instance};

fn object(name: &str) -> Result<Object, ElfError> {
    let path = format!("{}/tests/fixtures/{name}.o", env!("CARGO_MANIFEST_DIR"));
    Object::parse(&std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

/// The values the `kconfig` program reads, all given.
fn full_config() -> Kconfig {
    let mut k = Kconfig::new();
    k.set("LINUX_KERNEL_VERSION", "6.1.0")
        .set("CONFIG_HZ", "250")
        .set("CONFIG_PREEMPT", "y")
        .set("CONFIG_EXT4_FS", "m")
        .set("CONFIG_DEFAULT_HOSTNAME", "\"abcdefghijkl\"")
        .set("CONFIG_MISSING_WEAK", "0x10");
    k
}

/// What the `kconfig` program computes from its externs.
fn expected(version: u64, hz: u64, preempt: u64, ext4: u64, host0: u64, weak: u64) -> u64 {
    ((((version * 1000 + hz) * 10 + preempt) * 10 + ext4) * 1000 + host0) + weak
}

#[test]
fn every_map_kind_parses_with_the_defaults_its_kind_implies() {
    let obj = object("kernel_maps").expect("parses");
    let def = |name: &str| obj.map(name).unwrap_or_else(|| panic!("map {name}")).def;
    let events = def("events");
    assert_eq!(
        (events.map_type.name(), events.key_size, events.value_size, events.max_entries),
        ("perf_event_array", 4, 4, 0)
    );
    let stacks = def("stacks");
    assert_eq!((stacks.map_type.name(), stacks.key_size, stacks.value_size), ("stack_trace", 4, 0));
    let cgroups = def("cgroups");
    assert_eq!(
        (cgroups.map_type.name(), cgroups.key_size, cgroups.value_size, cgroups.max_entries),
        ("cgroup_array", 4, 4, 1)
    );
    let sized = def("sized_by_loader");
    assert_eq!((sized.map_type, sized.key_size, sized.value_size, sized.max_entries), (MapType::Hash, 4, 8, 0));
    // Every number of the kernel's UAPI has its name; others are "unknown".
    assert_eq!(MapType::from_raw(11).name(), "lpm_trie");
    assert_eq!(MapType::from_raw(33).name(), "arena");
    assert_eq!(MapType::from_raw(34).name(), "unknown");
    assert!(
        !MapType::from_raw(7).implemented() && MapType::from_raw(4).implemented() && MapType::RingBuf.implemented()
    );
}

#[test]
fn only_programs_that_use_an_unusable_map_are_refused() {
    let mut obj = object("kernel_maps").expect("parses");
    obj.set_kconfig(&full_config()).expect("complete");
    let instance = Instance::new(&obj).expect("an object with unsupported kinds still loads");
    // The hash map's capacity was left to the loader: the program that uses it is refused first.
    let Err(err) = instance.vm_builder("uses_maps") else { panic!("uses_maps built") };
    assert!(
        matches!(&err, InstanceError::Map { name, error: MapError::InvalidDef(_) } if name == "sized_by_loader"),
        "{err}"
    );
    // Sized as libbpf's loaders do, the next map it uses is of a kind with no implementation.
    obj.map_mut("sized_by_loader").expect("map").def.max_entries = 16;
    let instance = Instance::new(&obj).expect("loads");
    let Err(err) = instance.vm_builder("uses_maps") else { panic!("uses_maps built") };
    assert_eq!(
        err,
        InstanceError::UnsupportedMap { program: "uses_maps".into(), map: "stacks".into(), kind: "stack_trace" }
    );
    assert_eq!(
        err.to_string(),
        "program `uses_maps` uses map `stacks`, a stack_trace map, which this runtime does not implement"
    );
    // The stand-in holds nothing and refuses changes.
    let stacks = instance.map("stacks").expect("stand-in");
    assert_eq!(stacks.get(&0u32.to_ne_bytes(), 0), None);
    assert_eq!(stacks.update(&0u32.to_ne_bytes(), &[0; 0], 0, 0), Err(MapError::UnsupportedType(7)));
    // The perf event array, sized by the loader's rule, is a real one.
    assert!(instance.map("events").and_then(|m| m.downcast_ref::<ebpf_vm::maps::PerfEventArrayMap>()).is_some());
    // The other program of the object runs.
    let vm = instance.vm_builder("kconfig").expect("uses no such map").build().expect("builds");
    assert!(vm.execute(&mut []).is_ok());
}

#[test]
fn kconfig_externs_take_the_host_values_on_both_engines() {
    let mut obj = object("kernel_maps").expect("parses");
    let externs: Vec<_> = obj.kconfig_externs().iter().map(|e| (e.name.as_str(), e.kind, e.size, e.weak)).collect();
    assert!(externs.contains(&("LINUX_KERNEL_VERSION", KconfigKind::Int { signed: false }, 4, false)), "{externs:?}");
    assert!(externs.contains(&("CONFIG_HZ", KconfigKind::Int { signed: true }, 4, false)));
    assert!(externs.contains(&("CONFIG_PREEMPT", KconfigKind::Bool, 1, true)));
    assert!(externs.contains(&("CONFIG_EXT4_FS", KconfigKind::Tristate, 4, true)));
    assert!(externs.contains(&("CONFIG_DEFAULT_HOSTNAME", KconfigKind::Str, 8, true)));
    // Each extern lies inside the value, at its alignment, and none overlap.
    let size = obj.map(".kconfig").expect("map").def.value_size;
    let mut spans: Vec<_> = obj.kconfig_externs().iter().map(|e| (e.offset, e.offset + e.size)).collect();
    spans.sort();
    assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0) && spans.last().unwrap().1 <= size, "{spans:?}");
    assert!(obj.kconfig_externs().iter().all(|e| e.kind == KconfigKind::Str || e.offset % e.size == 0));

    // Strong externs need values: the maps cannot be created before.
    let missing = obj.kconfig_complete().expect_err("strong externs have no value");
    assert_eq!(missing.name, "LINUX_KERNEL_VERSION");
    assert!(matches!(Instance::new(&obj), Err(InstanceError::Kconfig(_))));

    obj.set_kconfig(&full_config()).expect("every value fits");
    let instance = Instance::new(&obj).expect("loads");
    let kconfig = instance.maps().iter().find(|m| m.origin == MapOrigin::Kconfig).expect("the .kconfig map");
    assert!(kconfig.map.def().read_only_for_programs());
    let bytes = kconfig.map.get(&0u32.to_ne_bytes(), 0).expect("value");
    let host = obj.kconfig_externs().iter().find(|e| e.name == "CONFIG_DEFAULT_HOSTNAME").expect("extern");
    // Cut to fit, NUL-terminated.
    assert_eq!(&bytes[host.offset as usize..][..8], b"abcdefg\0");
    for engine in [Engine::Interpreter, Engine::Jit] {
        let vm = instance.vm_builder("kconfig").expect("program").engine(engine).build().expect("verifies");
        assert_eq!(vm.execute(&mut []), Ok(expected(0x060100, 250, 1, 2, u64::from(b'a'), 16)), "{engine:?}");
    }

    // Weak externs without a value are zero.
    let mut strong_only = Kconfig::new();
    strong_only.set("LINUX_KERNEL_VERSION", "394240").set("CONFIG_HZ", "-100");
    obj.set_kconfig(&strong_only).expect("weak ones may be missing");
    let instance = Instance::new(&obj).expect("loads");
    let vm = instance.vm_builder("kconfig").expect("program").build().expect("verifies");
    assert_eq!(vm.execute(&mut []), Ok(expected(394_240, 0, 0, 0, 0, 0).wrapping_sub(100 * 10 * 10 * 1000)));
}

#[test]
fn bad_kconfig_values_are_typed_errors_naming_the_extern() {
    let mut obj = object("kernel_maps").expect("parses");
    let cases = [
        ("CONFIG_PREEMPT", "m", "`m` is no value for a bool"),
        ("CONFIG_PREEMPT", "1", "is not y or n"),
        ("CONFIG_EXT4_FS", "maybe", "is not y, n or m"),
        ("CONFIG_HZ", "2147483648", "does not fit in 4 bytes"),
        ("CONFIG_HZ", "ten", "is not a number"),
        ("LINUX_KERNEL_VERSION", "-1", "is not a number"),
        ("LINUX_KERNEL_VERSION", "6.x", "is not a version"),
        ("CONFIG_DEFAULT_HOSTNAME", "abc", "must be in double quotes"),
        ("CONFIG_MISSING_WEAK", "0x1g", "is not a number"),
    ];
    for (name, value, reason) in cases {
        let mut k = full_config();
        k.set(name, value);
        let err = obj.set_kconfig(&k).expect_err(name);
        assert_eq!(err.name, name);
        assert!(err.reason.contains(reason), "{name}={value}: {err}");
    }
    // A failed `set_kconfig` keeps the values before it.
    obj.set_kconfig(&full_config()).expect("valid");
    let mut bad = full_config();
    bad.set("CONFIG_HZ", "x");
    assert!(obj.set_kconfig(&bad).is_err());
    assert!(obj.kconfig_complete().is_ok());
}

#[test]
fn kconfig_text_and_kernel_versions() {
    let k =
        Kconfig::parse("# comment\nCONFIG_HZ=250\n# CONFIG_PREEMPT is not set\n\nCONFIG_S=\"x y\"\n").expect("parses");
    assert_eq!(k.get("CONFIG_HZ"), Some("250"));
    assert_eq!(k.get("CONFIG_PREEMPT"), Some("n"));
    assert_eq!(k.get("CONFIG_S"), Some("\"x y\""));
    assert_eq!(k.iter().count(), 3);
    let err = Kconfig::parse("CONFIG_HZ=1\nnot a line\n").expect_err("no =");
    assert_eq!(err.name, "line 2");
    assert!(Kconfig::parse("=1").is_err());
    assert_eq!(kernel_version("6.1.0-13-amd64"), Some(0x06_01_00));
    assert_eq!(kernel_version("5.15"), Some(0x05_0f_00));
    assert_eq!(kernel_version("4.19.300"), Some(0x04_13_ff));
    assert_eq!(kernel_version("linux"), None);
    assert_eq!(kernel_version("256.1.1"), None);
}

#[test]
fn externs_the_loader_cannot_resolve_are_errors_naming_them() {
    let err = object("kconfig_struct").expect_err("a struct extern");
    assert!(matches!(&err, ElfError::Extern { name, .. } if name == "CONFIG_PAIR"), "{err}");
    let err = object("ksym").expect_err("a __ksym extern");
    assert!(err.to_string().contains("`bpf_prog_active`, an extern that is not in .kconfig"), "{err}");
}

/// `.BTF.ext` line info: each program knows the C source line of its instructions, `.text`
/// functions included where they were appended.
#[test]
fn programs_carry_their_source_lines() {
    let obj = object("subprog").expect("parses");
    let p = obj.program("squares").expect("program");
    let (slot, first) = p.lines.first().expect("line info");
    assert_eq!(*slot, 0);
    assert!(first.file.ends_with("subprog.c"), "{first:?}");
    assert_eq!((first.line, first.text.trim()), (19, "return sum_of_squares(data, len) + square(3);"));
    // A line of `sum_of_squares`, in .text, appended after the program's own 6 slots.
    assert!(
        p.lines.iter().any(|(s, l)| *s >= 6 && l.text.contains("s += square(p[i]);") && l.line == 13),
        "{:?}",
        p.lines
    );
    assert!(p.lines.windows(2).all(|w| w[0].0 <= w[1].0), "in slot order");
    assert!(p.lines.iter().all(|(s, _)| *s < p.program.slot_count()));
}

/// Malformed line info is a typed error, never a panic: the `.BTF.ext` of `subprog.o` (at byte
/// 0x7d4 of the file) with its magic, its line-info length and its record size broken in turn.
#[test]
fn malformed_line_info_is_a_typed_error() {
    let path = format!("{}/tests/fixtures/subprog.o", env!("CARGO_MANIFEST_DIR"));
    let good = std::fs::read(&path).expect("fixture");
    let ext = 0x7d4;
    assert_eq!(u16::from_le_bytes([good[ext], good[ext + 1]]), 0xeb9f, "the fixture's .BTF.ext moved");
    let line_off = u32::from_le_bytes(good[ext + 16..ext + 20].try_into().unwrap()) as usize;
    let func_off = u32::from_le_bytes(good[ext + 8..ext + 12].try_into().unwrap()) as usize;
    let patches: [(usize, &[u8]); 8] = [
        (ext, &[0, 0]),                                      // magic
        (ext + 20, &0x7fff_fff0u32.to_le_bytes()),           // line info length past the section
        (ext + 32 + line_off, &8u32.to_le_bytes()),          // records shorter than 16 bytes
        (ext + 32 + line_off + 8, &u32::MAX.to_le_bytes()),  // a record count past the section
        (ext + 12, &0x7fff_fff0u32.to_le_bytes()),           // func info length past the section
        (ext + 32 + func_off, &4u32.to_le_bytes()),          // func records shorter than 8 bytes
        (ext + 32 + func_off + 8, &u32::MAX.to_le_bytes()),  // a func record count past the section
        (ext + 32 + func_off + 16, &u32::MAX.to_le_bytes()), // a function type that does not exist
    ];
    for (at, bytes) in patches {
        let mut bad = good.clone();
        bad[at..at + bytes.len()].copy_from_slice(bytes);
        match Object::parse(&bad) {
            Err(ElfError::Btf(reason)) => assert!(reason.contains(".BTF.ext"), "{reason}"),
            other => panic!("patch at {at:#x}: {:?}", other.map(|_| ())),
        }
    }
}

/// `ObjectProgram::line_at` finds the C line of any slot, also inside a `.text` function appended to
/// the program, and nothing before the first line.
#[test]
fn slots_map_to_their_source_lines() {
    let obj = object("loop").expect("parses");
    let p = obj.programs().iter().find(|p| p.name == "loop_sum").expect("program");
    let line = |pc| p.line_at(pc).map(|l| (l.line, l.text.trim().to_string()));
    assert_eq!(line(16), Some((38, "long r = bpf_loop(n, add_weight, &c, 0);".to_string())));
    // The callback, appended at slot 28.
    assert_eq!(line(28).map(|l| l.0), Some(19));
    assert!(line(53).is_some_and(|l| l.0 > 19 && l.0 < 30), "{:?}", line(53));
    assert!(p.lines.first().is_some_and(|(at, _)| *at == 0));
    // Function info: the program's own function, then the callback where it was appended.
    let names: Vec<(usize, &str)> = p.functions.iter().map(|(at, n)| (*at, n.as_ref())).collect();
    assert_eq!(names, [(0, "loop_sum"), (28, "add_weight")]);
    assert_eq!(
        (p.function_at(27), p.function_at(28), p.function_at(53)),
        (Some("loop_sum"), Some("add_weight"), Some("add_weight"))
    );
}
