//! Runs every file of the bpf_conformance suite on every engine, one test case per file and engine,
//! and once more through `examples/bpf_conformance_plugin` driven as the suite's runner drives it
//! (memory as one hex argument, the program as hex text on stdin, r0 in hex on stdout).
//!
//! The suite is read from `$BPF_CONFORMANCE_DIR`, or else from `../shared/conformance/tests` beside the
//! checkout. When it is absent, one ignored test says so; with `BPF_CONFORMANCE_REQUIRED=1` (set by
//! CI) its absence is a failure instead.

use std::path::{Path, PathBuf};

use ebpf_vm::{Context, Engine, Helper, HelperSig, Program, Vm};
use libtest_mimic::{Arguments, Failed, Trial};

mod common;
use common::suite::parse;

/// The helper the suite expects at id 5: returns normally when `r1 != 0`.
fn helper5() -> Helper {
    Helper::new(5, "conformance_5", HelperSig::scalars(1), |_, args| Ok(args[0]))
}

fn run_case(path: &Path, engine: Engine) -> Result<(), Failed> {
    run_mode(path, engine, false)
}

/// Runs one file on `engine`; with `verified`, the program is first proven safe against a fixed-size
/// context of the test's memory size and then runs with no runtime checks.
fn run_mode(path: &Path, engine: Engine, verified: bool) -> Result<(), Failed> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut case = parse(&text)?;
    let outcome = Program::from_asm(&case.asm).map_err(ebpf_vm::Error::from).and_then(|program| {
        if !case.raw.is_empty() {
            let words: Vec<u64> = program
                .to_bytes()
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8-byte chunk")))
                .collect();
            assert_eq!(words, case.raw, "assembler output differs from the file's raw section");
        }
        // The interpreter runs metered (a budget), the JIT unmetered: both code paths are covered.
        let mut builder = Vm::builder(program).helper(helper5()).engine(engine);
        builder = if verified {
            builder.context(Context::fixed(case.mem.len() as u32)).verified()
        } else {
            builder.checked()
        };
        if engine == Engine::Interpreter && !verified {
            builder = builder.budget(10_000_000);
        }
        let vm = builder.build()?;
        Ok(vm.execute(&mut case.mem)?)
    });
    match (outcome, case.result, &case.error) {
        (Err(e), _, Some(_)) => {
            eprintln!("expected error, got: {e}");
            Ok(())
        }
        (Ok(r0), _, Some(expected)) => Err(format!("expected error {expected:?}, got r0 = {r0:#x}").into()),
        (Ok(r0), Some(expected), None) if r0 == expected => Ok(()),
        (Ok(r0), Some(expected), None) => Err(format!("r0 = {r0:#x}, expected {expected:#x}").into()),
        (Ok(_), None, None) => Err("the file has neither a result nor an error".into()),
        (Err(e), _, None) => Err(format!("unexpected error: {e}").into()),
    }
}

/// Formats bytes as the suite's runner does: two hex digits and two spaces each.
fn runner_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}  ")).collect()
}

/// The plugin example, built by `cargo test` next to this test's binary.
fn plugin_path() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.parent()?.join("examples");
    let path = dir.join(format!("bpf_conformance_plugin{}", std::env::consts::EXE_SUFFIX));
    path.is_file().then_some(path)
}

fn run_plugin_case(path: &Path, plugin: &Path, options: &[&str]) -> Result<(), Failed> {
    use std::io::Write;
    use std::process::{Command, Stdio};

    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let case = parse(&text)?;
    let program = Program::from_asm(&case.asm).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(plugin);
    if !case.mem.is_empty() {
        cmd.arg(runner_hex(&case.mem));
    }
    cmd.args(options);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", plugin.display()))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    stdin.write_all(runner_hex(&program.to_bytes()).as_bytes()).map_err(|e| e.to_string())?;
    drop(stdin);
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match (out.status.success(), case.result, &case.error) {
        (false, _, Some(_)) => Ok(()),
        (true, Some(expected), None) => {
            let got = u64::from_str_radix(stdout.trim().trim_start_matches("0x"), 16)
                .map_err(|e| format!("plugin printed {stdout:?}: {e}"))?;
            if got == expected {
                Ok(())
            } else {
                Err(format!("plugin printed {got:#x}, expected {expected:#x}").into())
            }
        }
        (ok, _, _) => Err(format!(
            "plugin exit success={ok}, stdout {stdout:?}, stderr {:?}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into()),
    }
}

fn main() {
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    match common::suite::files() {
        Ok(Some(files)) => {
            let plugin = plugin_path();
            if plugin.is_none() {
                eprintln!("warning: examples/bpf_conformance_plugin is not built; its cases are ignored");
            }
            for path in files {
                let name = path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
                let p = path.clone();
                trials.push(Trial::test(format!("interpreter::{name}"), move || run_case(&p, Engine::Interpreter)));
                let p = path.clone();
                trials.push(Trial::test(format!("jit::{name}"), move || run_case(&p, Engine::Jit)));
                for engine in [Engine::Interpreter, Engine::Jit] {
                    let p = path.clone();
                    let label = if engine == Engine::Jit { "verified-jit" } else { "verified-interpreter" };
                    trials.push(Trial::test(format!("{label}::{name}"), move || run_mode(&p, engine, true)));
                }
                for (label, options) in [("plugin", &[][..]), ("plugin-jit", &["--jit"][..])] {
                    let plugin = plugin.clone();
                    let ignored = plugin.is_none();
                    let path = path.clone();
                    trials.push(
                        Trial::test(format!("{label}::{name}"), move || match &plugin {
                            Some(plugin) => run_plugin_case(&path, plugin, options),
                            None => Err("the plugin is not built".into()),
                        })
                        .with_ignored_flag(ignored),
                    );
                }
            }
        }
        Ok(None) => {
            let msg =
                "bpf_conformance suite not found: set BPF_CONFORMANCE_DIR or place it at ../shared/conformance/tests";
            eprintln!("warning: {msg}");
            // Where CI requires the suite its absence fails; elsewhere the test shows as ignored.
            let required = common::suite::required();
            trials.push(Trial::test("conformance_suite_present", move || Err(msg.into())).with_ignored_flag(!required));
        }
        Err(e) => trials.push(Trial::test("conformance_suite_present", move || Err(e.into()))),
    }
    libtest_mimic::run(&args, trials).exit();
}
