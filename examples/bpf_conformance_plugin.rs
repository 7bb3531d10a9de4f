//! A plugin for the bpf_conformance suite's runner.
//!
//! The runner starts it once per test as `bpf_conformance_plugin [MEMORY_HEX] [OPTIONS...] [--elf]`,
//! with the program on standard input as hex text (two hex digits per byte, separated by whitespace).
//! It prints `r0` in hex and exits 0, or prints the error on stderr and exits 1.
//!
//! Options: `--engine interpreter|jit` (interpreter by default; `--jit` is short for `--engine jit`),
//! `--budget N` (stop after N instructions), `--checked` (check every memory access as the program
//! runs instead of verifying it first against a fixed-size context of the memory's size, the default),
//! `--elf` (the input is an ELF object: not supported yet, reported as an error).

use std::io::Read;
use std::process::ExitCode;

use ebpf_vm::{Context, Engine, Helper, HelperSig, Program, Vm};

/// Decodes hex text, ignoring all whitespace.
fn decode_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if digits.len() % 2 != 0 {
        return Err("hex text has an odd number of digits".into());
    }
    digits
        .chunks_exact(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).map_err(|_| "hex text is not ASCII".to_string())?;
            u8::from_str_radix(s, 16).map_err(|_| format!("invalid hex byte {s:?}"))
        })
        .collect()
}

fn run() -> Result<u64, String> {
    let mut args = std::env::args().skip(1).peekable();
    let mut memory = Vec::new();
    if let Some(first) = args.peek() {
        if !first.starts_with("--") {
            memory = decode_hex(first)?;
            args.next();
        }
    }
    let mut engine = Engine::Interpreter;
    let mut budget = None;
    let mut checked = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--checked" => checked = true,
            "--elf" => return Err("ELF input is not supported by this plugin yet".into()),
            "--jit" => engine = Engine::Jit,
            "--engine" => match args.next().as_deref() {
                Some("interpreter") => engine = Engine::Interpreter,
                Some("jit") => engine = Engine::Jit,
                Some(other) => return Err(format!("unknown engine {other:?} (available: interpreter, jit)")),
                None => return Err("--engine needs a value".into()),
            },
            "--budget" => {
                let n = args.next().ok_or("--budget needs a value")?;
                budget = Some(n.parse::<u64>().map_err(|e| format!("invalid --budget {n:?}: {e}"))?);
            }
            other => return Err(format!("unknown option {other:?}")),
        }
    }

    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).map_err(|e| format!("cannot read the program: {e}"))?;
    let program = Program::from_bytes(&decode_hex(&input)?).map_err(|e| e.to_string())?;
    // The suite expects a helper 5 that returns normally for a non-zero r1.
    let helper = Helper::new(5, "conformance_5", HelperSig::scalars(1), |_, args| Ok(args[0]));
    let size = u32::try_from(memory.len()).map_err(|_| "the memory is larger than 4 GiB".to_string())?;
    let mut builder = Vm::builder(program).helper(helper).engine(engine);
    builder = if checked { builder.checked() } else { builder.context(Context::fixed(size)).verified() };
    if let Some(n) = budget {
        builder = builder.budget(n);
    }
    let vm = builder.build().map_err(|e| e.to_string())?;
    vm.execute(&mut memory).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    match run() {
        Ok(r0) => {
            println!("{r0:x}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
