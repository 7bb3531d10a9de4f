//! Ahead-of-time compilation tested for real: every conformance program, and byte-copy loops (which
//! call `memmove`), compiled for aarch64 into one object, linked with `tests/aot/harness.c` by Debian's `aarch64-linux-gnu-gcc`, and run under
//! `qemu-aarch64`. riscv64 and s390x objects are produced too (not run).
//!
//! A test that cannot run says so: without the tools (or the suite) it shows as ignored, and where CI
//! requires them (`EBPF_VM_REQUIRE_AARCH64=1`, `BPF_CONFORMANCE_REQUIRED=1`) their absence fails.

mod common;

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use ebpf_vm::jit::aot;
use ebpf_vm::{Env, Helper, HelperSig, Program};

struct Compiled {
    names: Vec<String>,
    programs: Vec<Program>,
    cases: Vec<common::suite::Case>,
}

fn conformance_programs() -> Result<Option<Compiled>, String> {
    let Some(files) = common::suite::files()? else { return Ok(None) };
    let mut out = Compiled { names: Vec::new(), programs: Vec::new(), cases: Vec::new() };
    for (i, f) in files.iter().enumerate() {
        let case = common::suite::parse(&std::fs::read_to_string(f).expect("readable")).expect("parses");
        if case.error.is_some() {
            continue;
        }
        out.programs.push(Program::from_asm(&case.asm).expect("assembles"));
        out.names.push(format!("t{i}_{}", f.file_stem().unwrap().to_string_lossy().replace(['-', '.'], "_")));
        out.cases.push(case);
    }
    copy_loops(&mut out);
    Ok(Some(out))
}

/// Byte-copy loops, which compiled code finishes with a call of `memmove` (imported by the object):
/// forward, overlapping, and with the destination inside the source (copied as written), checked
/// against the interpreter.
fn copy_loops(out: &mut Compiled) {
    let input: Vec<u8> = (0..200u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
    for (name, src, dst) in [("copy_apart", 0, 100), ("copy_back_overlap", 40, 10), ("copy_into_source", 10, 30)] {
        let asm = format!(
            "mov %r2, 0\nloop:\nmov %r3, %r1\nadd %r3, %r2\nldxb %r4, [%r3+{src}]\nstxb [%r3+{dst}], %r4\n\
             add %r2, 1\njeq %r2, 64, out\nja loop\nout:\nmov %r0, 0\nmov %r5, 0\nsum:\nmov %r3, %r1\n\
             add %r3, %r5\nldxb %r4, [%r3+0]\nmul %r0, 31\nadd %r0, %r4\nadd %r5, 1\njlt %r5, 200, sum\nexit"
        );
        let program = Program::from_asm(&asm).expect("assembles");
        let vm = ebpf_vm::Vm::builder(program.clone()).checked().budget(1_000_000).build().expect("builds");
        let result = vm.execute(&mut input.clone()).expect("runs");
        out.names.push(name.to_string());
        out.programs.push(program);
        out.cases.push(common::suite::Case { asm, mem: input.clone(), result: Some(result), ..Default::default() });
    }
}

fn env() -> Env {
    let mut env = Env::new();
    env.add_helper(Helper::new(5, "echo", HelperSig::scalars(1), |_, a| Ok(a[0])));
    env
}

fn object(c: &Compiled, target: &str) -> Vec<u8> {
    let list: Vec<(&str, &Program)> = c.names.iter().map(String::as_str).zip(&c.programs).collect();
    aot::compile_object(&list, &env(), target, true).unwrap_or_else(|e| panic!("{target}: {e}"))
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success())
}

/// The table of tests the harness runs, as C.
fn table(c: &Compiled) -> String {
    let mut s = String::from("#include <stdint.h>\ntypedef struct ctx ctx_t;\n");
    s.push_str("typedef uint64_t (*entry_t)(ctx_t *, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t);\n");
    s.push_str(
        "struct test { const char *name; entry_t entry; const uint8_t *mem; uint64_t mem_len; uint64_t expected; };\n",
    );
    for (i, (name, case)) in c.names.iter().zip(&c.cases).enumerate() {
        writeln!(s, "uint64_t {name}(ctx_t *, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t);").unwrap();
        let bytes: Vec<String> = case.mem.iter().map(|b| format!("{b}")).collect();
        writeln!(
            s,
            "static const uint8_t mem{i}[] = {{ {} }};",
            if bytes.is_empty() { "0".into() } else { bytes.join(",") }
        )
        .unwrap();
    }
    s.push_str("const struct test tests[] = {\n");
    for (i, (name, case)) in c.names.iter().zip(&c.cases).enumerate() {
        let expected = case.result.expect("result");
        writeln!(s, "  {{ \"{name}\", {name}, mem{i}, {}, {expected}ull }},", case.mem.len()).unwrap();
    }
    writeln!(s, "}};\nconst unsigned test_count = {};", c.names.len()).unwrap();
    s
}

const GCC: &str = "aarch64-linux-gnu-gcc";
const QEMU: &str = "qemu-aarch64";

/// Compiles the suite for aarch64, links it with the harness and runs it under qemu.
fn conformance_suite_on_aarch64_under_qemu(c: &Compiled) {
    let obj = object(c, "aarch64-unknown-linux-gnu");
    assert!(obj.starts_with(b"\x7fELF"));
    assert_eq!(u16::from_le_bytes([obj[18], obj[19]]), 183, "EM_AARCH64");
    let dir = std::env::temp_dir().join(format!("ebpf-vm-aot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("programs.o"), &obj).unwrap();
    std::fs::write(dir.join("table.c"), table(c)).unwrap();
    let harness = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/aot/harness.c");
    let out = Command::new(GCC)
        .args(["-O1", "-static", "-o"])
        .arg(dir.join("runner"))
        .arg(&harness)
        .arg(dir.join("table.c"))
        .arg(dir.join("programs.o"))
        .output()
        .expect("runs gcc");
    assert!(out.status.success(), "link failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let run = Command::new(QEMU).arg(dir.join("runner")).output().expect("runs qemu");
    let stdout = String::from_utf8_lossy(&run.stdout);
    std::fs::remove_dir_all(&dir).ok();
    let failures: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(failures.is_empty(), "{} failed on aarch64:\n{}", failures.len(), failures.join("\n"));
    let passed = stdout.lines().filter(|l| l.starts_with("ok ")).count();
    assert_eq!(passed, c.names.len(), "{stdout}");
    assert!(run.status.success());
    eprintln!(
        "aarch64 under qemu: {passed} of {} programs passed (the conformance suite and copy loops)",
        c.names.len()
    );
}

/// Objects for riscv64 and s390x, of the right machine; bad targets are errors.
fn objects_for_riscv64_and_s390x(c: &Compiled) {
    for (target, machine) in [("riscv64gc-unknown-linux-gnu", 243u16), ("s390x-unknown-linux-gnu", 22)] {
        let obj = object(c, target);
        let m = if target.starts_with("s390x") {
            u16::from_be_bytes([obj[18], obj[19]])
        } else {
            u16::from_le_bytes([obj[18], obj[19]])
        };
        assert_eq!(m, machine, "{target}");
    }
    assert!(aot::supported_targets().len() >= 4);
    assert!(aot::compile_object(&[], &env(), "no-such-target", true).is_err());
    assert!(ebpf_vm::jit::JitBuilder::target("aarch64-unknown-linux-gnu").is_ok());
    assert!(ebpf_vm::jit::JitBuilder::target("not a triple").is_err());
    let obj = ebpf_vm::jit::JitBuilder::target("aarch64-unknown-linux-gnu")
        .unwrap()
        .checked(false)
        .compile_object(&[("prog", &c.programs[0])], &env())
        .unwrap();
    assert!(obj.starts_with(b"\x7fELF"));
}

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let mut trials = Vec::new();
    let required = |var: &str| std::env::var_os(var).is_some_and(|v| v == "1");
    match conformance_programs() {
        Ok(Some(c)) => {
            let c = std::sync::Arc::new(c);
            let tools = have(GCC) && have(QEMU);
            if !tools {
                eprintln!("{GCC} or {QEMU} is not installed (Debian: gcc-aarch64-linux-gnu, qemu-user)");
            }
            let run = std::sync::Arc::clone(&c);
            trials.push(
                libtest_mimic::Trial::test("conformance_suite_on_aarch64_under_qemu", move || {
                    if !tools {
                        return Err(format!("{GCC} or {QEMU} is not installed").into());
                    }
                    conformance_suite_on_aarch64_under_qemu(&run);
                    Ok(())
                })
                .with_ignored_flag(!tools && !required("EBPF_VM_REQUIRE_AARCH64")),
            );
            trials.push(libtest_mimic::Trial::test("objects_for_riscv64_and_s390x", move || {
                objects_for_riscv64_and_s390x(&c);
                Ok(())
            }));
        }
        Ok(None) => {
            let ignored = !common::suite::required();
            let absent = || Err("the bpf_conformance suite is not present".into());
            trials.push(libtest_mimic::Trial::test("conformance_suite_present", absent).with_ignored_flag(ignored));
        }
        Err(e) => trials.push(libtest_mimic::Trial::test("conformance_suite_present", move || Err(e.into()))),
    }
    libtest_mimic::run(&args, trials).exit();
}
