//! The `ebpf-vm` command, run as a user would.

use std::process::{Command, Output};

fn ebpf_vm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ebpf-vm")).args(args).output().expect("runs")
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}.o", env!("CARGO_MANIFEST_DIR"))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn run_prints_r0_then_the_maps() {
    let out = ebpf_vm(&[
        "run",
        &fixture("hash_count"),
        "--section",
        "count_bytes",
        "--mem-hex",
        "61 62 63 61",
        "--repeat",
        "2",
        "--dump-maps",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = stdout(&out);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("0x18 (24)"), "8 bytes hashed in all, times weight 3");
    let rest: Vec<&str> = lines.collect();
    assert!(rest.contains(&r#"{"map":"counts","key":"61000000","value":"0400000000000000"}"#), "{text}");
    assert!(rest.contains(&r#"{"map":".data","key":"00000000","value":"6600000000000000"}"#), "{text}");
    assert!(rest.iter().all(|l| l.starts_with("{\"map\":")));
}

#[test]
fn run_selects_a_program_and_reads_memory_from_a_file() {
    let mem = std::env::temp_dir().join(format!("ebpf-vm-cli-mem-{}.bin", std::process::id()));
    std::fs::write(&mem, [1u8, 6, 7]).unwrap();
    let out = ebpf_vm(&["run", &fixture("tail_init"), "--section", "first", "--mem-file", mem.to_str().unwrap()]);
    std::fs::remove_file(&mem).ok();
    assert!(out.status.success());
    assert_eq!(stdout(&out), "0x7d3 (2003)\n"); // 2000 + 3
}

#[test]
fn run_assembly_text_and_raw_bytecode() {
    let dir = std::env::temp_dir();
    let asm = dir.join(format!("ebpf-vm-cli-{}.s", std::process::id()));
    std::fs::write(&asm, "mov %r0, %r2\nadd %r0, 40\nexit\n").unwrap();
    let out = ebpf_vm(&["run", asm.to_str().unwrap(), "--mem-hex", "0102"]);
    assert_eq!(stdout(&out), "0x2a (42)\n");
    let raw = dir.join(format!("ebpf-vm-cli-raw-{}.bin", std::process::id()));
    let program = ebpf_vm::Program::from_asm("mov %r0, 7\nexit").unwrap();
    std::fs::write(&raw, program.to_bytes()).unwrap();
    let out = ebpf_vm(&["run", raw.to_str().unwrap()]);
    assert_eq!(stdout(&out), "0x7 (7)\n");
    std::fs::remove_file(&asm).ok();
    std::fs::remove_file(&raw).ok();
}

#[test]
fn disasm_verify_and_sections() {
    let out = ebpf_vm(&["disasm", &fixture("subprog")]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("call local"));
    let out = ebpf_vm(&["verify", &fixture("packet")]);
    assert!(out.status.success());
    assert!(stdout(&out).starts_with("verified: parse_udp"), "{}", stdout(&out));
    // A read with no length guard is refused, naming the instruction and the region.
    let dir = std::env::temp_dir();
    let asm = dir.join(format!("ebpf-vm-cli-unsafe-{}.s", std::process::id()));
    std::fs::write(&asm, "ldxdw %r0, [%r1+0]\nexit\n").unwrap();
    let out = ebpf_vm(&["verify", asm.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("insn 0: ldxdw %r0, [%r1+0]: access of bytes [0, 8) of the input"), "{err}");
    let out = ebpf_vm(&["run", asm.to_str().unwrap(), "--mode", "verified", "--mem-hex", "0102030405060708"]);
    assert!(!out.status.success());
    std::fs::remove_file(&asm).ok();
    let out = ebpf_vm(&["sections", &fixture("tail_host")]);
    let text = stdout(&out);
    assert!(text.contains("program 1: handler_add section=socket"), "{text}");
    assert!(text.contains("map 0: handlers type=prog_array"), "{text}");
}

#[test]
fn errors_exit_1_with_a_message() {
    for args in [
        vec!["run", "/nonexistent/file.o"],
        vec!["run", &fixture("hash_count"), "--section", "nope"],
        vec!["run", &fixture("hash_count"), "--section", "count_bytes", "--mem-hex", "abc"],
    ] {
        let out = ebpf_vm(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // A wrong command line is status 2, and the message names what is wrong.
    for (args, says) in [
        (vec!["frobnicate", &fixture("hash_count")], "unrecognized subcommand 'frobnicate'"),
        (vec!["run"], "<FILE>"),
        (vec!["run", &fixture("hash_count"), "--mode", "fast"], "invalid value 'fast' for '--mode <mode>'"),
        (vec!["run", &fixture("hash_count"), "--repeat", "0"], "--repeat"),
    ] {
        let out = ebpf_vm(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // An out-of-bounds access is an error with the instruction index.
    let dir = std::env::temp_dir().join(format!("ebpf-vm-cli-oob-{}.s", std::process::id()));
    std::fs::write(&dir, "ldxdw %r0, [%r1+8]\nexit\n").unwrap();
    let out = ebpf_vm(&["run", dir.to_str().unwrap(), "--mem-hex", "00", "--mode", "checked"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("instruction 0"));
    // By default the program is verified first, and refused before it runs.
    let out = ebpf_vm(&["run", dir.to_str().unwrap(), "--mem-hex", "00"]);
    std::fs::remove_file(&dir).ok();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("verification failed: insn 0"), "{err}");
}

#[test]
fn maps_for_assembly_the_verifier_log_and_the_three_modes() {
    let dir = std::env::temp_dir();
    let asm = dir.join(format!("ebpf-vm-cli-map-{}.s", std::process::id()));
    let text = "stw [%r10-4], 0\nmov %r2, %r10\nadd %r2, -4\nlddw %r1, map_fd(0)\ncall 1\nmov %r6, %r0\n\
                mov %r0, 0\njeq %r6, 0, out\nldxdw %r0, [%r6+0]\nadd %r0, 1\nstxdw [%r6+0], %r0\nout:\nexit\n";
    std::fs::write(&asm, text).unwrap();
    let path = asm.to_str().unwrap();
    // The map the program names, from the command line; three runs count to three.
    let out = ebpf_vm(&["run", path, "--map", "array:4:8:1", "--repeat", "3", "--dump-maps"]);
    assert_eq!(stdout(&out), "0x3 (3)\n{\"map\":\"map0\",\"key\":\"00000000\",\"value\":\"0300000000000000\"}\n");
    for mode in ["verified", "checked", "unchecked"] {
        let out = ebpf_vm(&["run", path, "--map", "array:4:8:1", "--mode", mode]);
        assert_eq!(stdout(&out), "0x1 (1)\n", "{mode}");
    }
    // A value too small for the 8-byte read is refused, naming the region and its size.
    let out = ebpf_vm(&["run", path, "--map", "array:4:4:1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("insn 9: ldxdw %r0, [%r6+0]: access of bytes [0, 8) of a map value"), "{err}");
    // The log shows the state at each instruction; the null check leaves r6 a map value (and r0, which
    // the load overwrites, is dead there and not shown).
    let out = ebpf_vm(&["verify", path, "--map", "array:4:8:1", "--log"]);
    assert!(out.status.success());
    let log = stdout(&out);
    assert!(
        log.contains("8: ldxdw %r0, [%r6+0] ; r6=map_value(0)+0")
            || log.contains("9: ldxdw %r0, [%r6+0] ; r6=map_value(0)+0"),
        "{log}"
    );
    assert!(log.lines().last().unwrap_or("").starts_with("verified: "), "{log}");
    let out = ebpf_vm(&["verify", path, "--map", "tree:4:8:1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("KIND one of hash"));
    std::fs::remove_file(&asm).ok();
}

/// `.kconfig` externs get their values from `--kconfig` and `--kconfig-file`; a strong one without
/// a value is an error naming it; `sections` names every map kind.
#[test]
fn kconfig_values_from_the_command_line() {
    let obj = fixture("kernel_maps");
    let out = ebpf_vm(&["sections", &obj]);
    let text = stdout(&out);
    assert!(text.contains("map 1: events type=perf_event_array key_size=4 value_size=4 max_entries=0"), "{text}");
    assert!(text.contains("origin=Kconfig"), "{text}");

    let out = ebpf_vm(&["run", &obj, "--section", "kconfig"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("kconfig `CONFIG_HZ`: no value given, and the extern is not __weak"), "{err}");

    let config = std::env::temp_dir().join(format!("ebpf-vm-cli-kconfig-{}", std::process::id()));
    std::fs::write(&config, "CONFIG_HZ=100\n# CONFIG_PREEMPT is not set\nCONFIG_EXT4_FS=y\n").expect("writes");
    let args = ["run", &obj, "--section", "kconfig", "--kconfig-file", config.to_str().unwrap()];
    let out =
        ebpf_vm(&[&args[..], &["--kconfig", "LINUX_KERNEL_VERSION=5.10.0", "--kconfig", "CONFIG_HZ=300"]].concat());
    std::fs::remove_file(&config).ok();
    // (0x050a00 * 1000 + 300) * 10 + 0) * 10 + 1) * 1000: the later CONFIG_HZ wins.
    let want = (((0x050a00u64 * 1000 + 300) * 10) * 10 + 1) * 1000;
    assert!(stdout(&out).contains(&format!("{want:#x}")), "{}", stdout(&out));
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn temp(name: &str, contents: &[u8]) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("ebpf-vm-cli-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).expect("writes");
    path
}

/// Help for the command and each subcommand, with what each does and its defaults; `help` and
/// `--version` succeed.
#[test]
fn help_version_and_subcommand_help() {
    let out = ebpf_vm(&["run", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for says in
        ["Usage: ebpf-vm run [OPTIONS] <FILE>", "--mode <mode>", "[default: verified]", "[default: jit]", "--budget"]
    {
        assert!(text.contains(says), "{says}: {text}");
    }
    let out = ebpf_vm(&["help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for says in ["run", "verify", "disasm", "sections", "maps", "Verify (by default) and run a program"] {
        assert!(text.contains(says), "{says}: {text}");
    }
    let out = ebpf_vm(&["--version"]);
    assert_eq!((out.status.code(), stdout(&out)), (Some(0), format!("ebpf-vm {}\n", env!("CARGO_PKG_VERSION"))));
    let out = ebpf_vm(&["disasm", "--help"]);
    assert!(stdout(&out).contains("--section <NAME>"), "{}", stdout(&out));
}

/// A file that is no program says so, rather than what the assembler made of it.
#[test]
fn a_file_that_is_no_program_says_so() {
    let text = temp("passwd", b"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n");
    let out = ebpf_vm(&["run", text.to_str().unwrap()]);
    std::fs::remove_file(&text).ok();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not an ELF object, BPF bytecode or assembly text"), "{}", stderr(&out));
    let binary = temp("odd", &[0xff, 0xfe, 0x00, 0x01, 0x02]);
    let out = ebpf_vm(&["run", binary.to_str().unwrap()]);
    std::fs::remove_file(&binary).ok();
    assert!(stderr(&out).contains("not a whole number of 8-byte instructions"), "{}", stderr(&out));
    // Assembly with a mistake past its first instruction is still read as assembly.
    let asm = temp("typo.s", b"mov %r0, 1\nmvo %r0, 2\nexit\n");
    let out = ebpf_vm(&["run", asm.to_str().unwrap()]);
    std::fs::remove_file(&asm).ok();
    assert!(stderr(&out).contains("line 2"), "{}", stderr(&out));
}

/// With several programs, `run` and `verify` need `--section`, and a section name that holds more
/// than one program is refused; the errors list the programs.
#[test]
fn programs_are_chosen_explicitly() {
    let obj = fixture("tail_init");
    for cmd in ["run", "verify"] {
        let out = ebpf_vm(&[cmd, &obj]);
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        assert!(stderr(&out).contains("say which with --section"), "{cmd}: {}", stderr(&out));
        assert!(stderr(&out).contains("first (section socket)"), "{cmd}: {}", stderr(&out));
        let out = ebpf_vm(&[cmd, &obj, "--section", "socket"]);
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        assert!(stderr(&out).contains("section `socket` holds"), "{cmd}: {}", stderr(&out));
    }
    // One program: no --section needed.
    let out = ebpf_vm(&["run", &fixture("globals"), "--mem-hex", "00"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// `disasm` numbers every slot, writes where jumps go, and shows only the program `--section` names.
#[test]
fn disasm_numbers_slots_and_honours_section() {
    let out = ebpf_vm(&["disasm", &fixture("tail_init"), "--section", "first"]);
    let text = stdout(&out);
    assert!(text.starts_with("# program first (section socket)"), "{text}");
    assert!(!text.contains("# program second"), "{text}");
    let first = text.lines().skip(1).find(|l| !l.starts_with(';') && !l.starts_with('<'));
    assert!(first.is_some_and(|l| l.trim_start().starts_with("0: ")), "{text}");
    let out = ebpf_vm(&["disasm", &fixture("subprog")]);
    let text = stdout(&out);
    assert!(text.contains(" 0: call local +5") && text.contains("; to 6"), "{text}");
    // A function reference says where the function starts; `.text` functions the program does not
    // use are left out (the object's `never` is only used by the other program).
    let text = stdout(&ebpf_vm(&["disasm", &fixture("loop"), "--section", "loop_sum"]));
    assert!(text.contains("13: lddw %r2, func(+14)") && text.contains("; the function at 28"), "{text}");
    assert!(text.contains("# program loop_sum (section socket), 54 slots"), "{text}");
    assert!(text.contains("\n<loop_sum>:\n") && text.contains("\n<add_weight>:\n"), "function names: {text}");
    // lddw takes two slots: the next instruction is numbered after both.
    let asm = temp("lddw.s", b"lddw %r0, 0x100000000\nja -3\nexit\n");
    let text = stdout(&ebpf_vm(&["disasm", asm.to_str().unwrap()]));
    std::fs::remove_file(&asm).ok();
    assert!(text.contains("2: ja -3") && text.contains("; to 0"), "{text}");
    assert!(text.contains("3: exit"), "{text}");
}

/// r0 in hex and signed; an out-of-bounds access told against the input; a checked program that
/// never ends stopped by the default budget.
#[test]
fn run_output_and_errors_as_a_user_reads_them() {
    let neg = temp("neg.s", b"mov %r0, -2\nexit\n");
    assert_eq!(stdout(&ebpf_vm(&["run", neg.to_str().unwrap()])), "0xfffffffffffffffe (-2)\n");
    std::fs::remove_file(&neg).ok();
    let oob = temp("oob.s", b"ldxdw %r0, [%r1+100]\nexit\n");
    let out = ebpf_vm(&["run", oob.to_str().unwrap(), "--mode", "checked", "--mem-hex", "00112233"]);
    std::fs::remove_file(&oob).ok();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("instruction 0: load of 8 bytes at input+100 (the input is 4 bytes)"),
        "{}",
        stderr(&out)
    );
    let spin = temp("spin.s", b"ja -1\nexit\n");
    let out = ebpf_vm(&["run", spin.to_str().unwrap(), "--mode", "checked", "--budget", "1000"]);
    assert!(stderr(&out).contains("budget exhausted"), "{}", stderr(&out));
    // Without --budget, the default stops it too (a billion instructions).
    let out = ebpf_vm(&["run", spin.to_str().unwrap(), "--mode", "checked"]);
    std::fs::remove_file(&spin).ok();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("budget exhausted"), "{}", stderr(&out));
}

/// `--dump-maps` shows pending ring-buffer records, perf samples and per-CPU values of this machine's CPUs only;
/// `maps` lists an object's maps.
#[test]
fn dump_maps_and_the_maps_command() {
    let out = ebpf_vm(&["run", &fixture("ringbuf"), "--mem-hex", "000102030405060708", "--repeat", "2", "--dump-maps"]);
    let text = stdout(&out);
    assert!(text.contains(r#"{"map":"events","record":"00000000000000000102030405060708"}"#), "{text}");
    assert!(text.contains(r#"{"map":"events","record":"01000000000000000102030405060708"}"#), "{text}");
    let out = ebpf_vm(&["run", &fixture("percpu"), "--dump-maps"]);
    let here = std::thread::available_parallelism().map_or(1, usize::from).min(16);
    let cpus = stdout(&out).lines().filter(|l| l.starts_with(r#"{"map":"per_cpu_total","cpu":"#)).count();
    assert_eq!(cpus, here, "{}", stdout(&out));
    let out = ebpf_vm(&["maps", &fixture("kernel_maps")]);
    let text = stdout(&out);
    assert!(text.lines().next().is_some_and(|l| l.starts_with("name") && l.contains("max_entries")), "{text}");
    assert!(text.contains("stack_trace (unsupported)"), "{text}");
    assert!(text.contains("perf_event_array ") && !text.contains("perf_event_array (unsupported)"), "{text}");
    assert!(text.lines().any(|l| l.starts_with(".kconfig") && l.contains("0x80") && l.ends_with("Kconfig")), "{text}");
    // A Bloom filter cannot list its values: how full it is.
    let text = stdout(&ebpf_vm(&["run", &fixture("bloom"), "--mem-hex", "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f40", "--dump-maps"]));
    assert!(
        text.lines().any(|l| l.starts_with(r#"{"map":"seen","bits_set":"#) && !l.contains(r#""bits_set":0,"#)),
        "{text}"
    );
    // Maps of maps: the inner map each entry names.
    let out = ebpf_vm(&[
        "run",
        &fixture("map_in_map"),
        "--section",
        "bump_array",
        "--mem-hex",
        "0000000001000000",
        "--dump-maps",
    ]);
    let text = stdout(&out);
    assert!(text.contains(r#"{"map":"outer","key":"02000000","inner_map":1}"#), "{text}");
    assert!(text.contains(r#"{"map":"inner_a","key":"01000000","value":"0100000000000000"}"#), "{text}");
    // Perf samples, per CPU.
    let out = ebpf_vm(&["run", &fixture("perf"), "--section", "emit", "--mem-hex", "2a000000", "--dump-maps"]);
    let text = stdout(&out);
    assert!(text.contains(r#"{"map":"events","cpu":0,"sample":"0000000000000000000000002a000000"}"#), "{text}");
}

/// `disasm` shows each C function's name and the C source line before the instructions compiled from
/// it.
#[test]
fn disasm_interleaves_source_lines() {
    let text = stdout(&ebpf_vm(&["disasm", &fixture("subprog")]));
    let lines: Vec<&str> = text.lines().collect();
    let at =
        lines.iter().position(|l| l.starts_with("; return sum_of_squares(data, len) + square(3);  // subprog.c:19"));
    assert_eq!((lines[1], at), ("<squares>:", Some(2)), "the function's name, then its first line: {text}");
    assert!(lines[3].trim_start().starts_with("0: call local"), "{text}");
    assert!(text.contains("; s += square(p[i]);  // subprog.c:13"), "{text}");
}

/// Verifier and execution errors of an object's program name the C source line they come from.
#[test]
fn errors_name_the_source_line() {
    let out = ebpf_vm(&["run", &fixture("printf"), "--section", "format"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("verification failed: insn 35") && text.contains("\n  at printf.c:16 in format(): bpf_printk("),
        "{text}"
    );
    let out = ebpf_vm(&["run", &fixture("loop"), "--section", "loop_sum", "--mode", "checked", "--budget", "20"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("budget exhausted\n  at loop.c:22 in add_weight(): __u64 *w = bpf_map_lookup_elem"),
        "{text}"
    );
}

/// Output into a pipe that closes early (`ebpf-vm disasm X | head -1`) ends the command quietly, as
/// the shell's tools do, not with a panic.
#[test]
fn a_closed_output_ends_the_command_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ebpf-vm"))
        .args(["disasm", &fixture("loop")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut first).expect("a line");
    assert!(first.starts_with("# program"), "{first}");
    // The reader is gone: the rest of the listing has nowhere to go.
    let out = child.wait_with_output().expect("ends");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(matches!(out.status.code(), Some(0 | 141)), "{:?}", out.status);
}

/// `LINUX_HAS_BPF_COOKIE`, which libbpf answers itself, is false unless given (this runtime has no
/// attach cookies).
#[test]
fn libbpf_answers_its_own_externs() {
    let out = ebpf_vm(&["run", &fixture("kconfig_cookie")]);
    assert_eq!(stdout(&out).trim(), "0x0 (0)", "{}", String::from_utf8_lossy(&out.stderr));
    let out = ebpf_vm(&["run", &fixture("kconfig_cookie"), "--kconfig", "LINUX_HAS_BPF_COOKIE=y"]);
    assert_eq!(stdout(&out).trim(), "0x1 (1)");
}
