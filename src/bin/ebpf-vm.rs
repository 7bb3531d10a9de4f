//! `ebpf-vm`: run, verify, inspect and disassemble BPF programs without writing a host.
//!
//! ```text
//! ebpf-vm run FILE [--section NAME] [--engine interpreter|jit] [--mode verified|checked|unchecked]
//!                  [--mem-hex HEX | --mem-file PATH] [--repeat N] [--dump-maps] [--budget N]
//!                  [--map KIND:KEY_SIZE:VALUE_SIZE:MAX_ENTRIES]... [--context CONTEXT]
//! ebpf-vm disasm FILE
//! ebpf-vm verify FILE [--section NAME] [--log] [--map KIND:KEY_SIZE:VALUE_SIZE:MAX_ENTRIES]...
//!                     [--context buffer|fixed:SIZE|packet:SIZE:DATA:DATA_END]
//! ebpf-vm sections FILE
//! ```
//!
//! FILE is an ELF object (clang `-target bpf`), raw bytecode, or assembly text. `run` verifies the
//! program first (`--mode verified`, the default) or checks every access as it runs (`--mode
//! checked`), prints r0 as lowercase hex on the first line, and with `--dump-maps` one JSON object per
//! map entry. `verify` only verifies, and names the instruction and the rule when it refuses.

use std::process::ExitCode;
use std::sync::Arc;

use ebpf_vm::elf::{kernel_version, Kconfig, Object};
use ebpf_vm::link::Linked;
use ebpf_vm::maps::{self, Map, MapDef, MapType, ProgArrayMap};
use ebpf_vm::{Context, Engine, Instance, Mode, Program, Verifier, Vm};

const USAGE: &str = "usage:
  ebpf-vm run FILE [--section NAME] [--engine interpreter|jit] [--mode verified|checked|unchecked]
                   [--mem-hex HEX | --mem-file PATH] [--repeat N] [--dump-maps] [--budget N]
                   [--map KIND:KEY_SIZE:VALUE_SIZE:MAX_ENTRIES]... [--context CONTEXT]
                   [--kconfig KEY=VALUE]... [--kconfig-file PATH]
  ebpf-vm disasm FILE
  ebpf-vm verify FILE [--section NAME] [--log] [--map KIND:KEY_SIZE:VALUE_SIZE:MAX_ENTRIES]...
                      [--context CONTEXT] [--kconfig KEY=VALUE]... [--kconfig-file PATH]
  ebpf-vm sections FILE
run verifies the program first (--mode verified, the default); --mode checked runs it with
every memory access checked instead; --mode unchecked runs it with no checks at all (only for
programs you trust). --map gives assembly text and bytecode their maps: the N-th is what
`lddw rX, map_fd(N)` names; KIND is hash, array, lru_hash, percpu_hash, percpu_array, ringbuf or
prog_array. verify --log prints the verifier's state at each instruction. --context says what
r1 points to: buffer (the default: the memory, its length in r2), fixed:SIZE (exactly SIZE bytes)
or packet:SIZE:DATA:DATA_END (a SIZE-byte struct with 8-byte packet start and end fields at
DATA and DATA_END, then the packet). --kconfig and --kconfig-file (a kernel .config) give an
object's .kconfig externs their values; LINUX_KERNEL_VERSION defaults to this machine's kernel.";

/// A loaded input file.
enum Input {
    Object(Object),
    Program(Program),
}

fn load(path: &str) -> Result<Input, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    if bytes.starts_with(b"\x7fELF") {
        return Object::parse(&bytes).map(Input::Object).map_err(|e| format!("{path}: {e}"));
    }
    let looks_like_text =
        std::str::from_utf8(&bytes).is_ok_and(|t| t.chars().all(|c| !c.is_control() || c.is_whitespace()));
    let is_asm_name = [".s", ".asm", ".txt"].iter().any(|ext| path.ends_with(ext));
    if is_asm_name || (looks_like_text && !bytes.is_empty()) {
        let text = String::from_utf8_lossy(&bytes);
        return Program::from_asm(&text).map(Input::Program).map_err(|e| format!("{path}: {e}"));
    }
    Program::from_bytes(&bytes).map(Input::Program).map_err(|e| format!("{path}: {e}"))
}

fn decode_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let digits = digits.strip_prefix(b"0x").unwrap_or(&digits);
    if digits.len() % 2 != 0 {
        return Err("--mem-hex has an odd number of hex digits".into());
    }
    digits
        .chunks_exact(2)
        .map(|p| {
            let s = std::str::from_utf8(p).map_err(|_| "--mem-hex is not hex".to_string())?;
            u8::from_str_radix(s, 16).map_err(|_| format!("--mem-hex: invalid byte {s:?}"))
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Options after the file name.
#[derive(Default)]
struct Options {
    section: Option<String>,
    engine: Option<String>,
    mode: Option<String>,
    mem: Option<Vec<u8>>,
    repeat: u64,
    dump_maps: bool,
    budget: Option<u64>,
    /// Maps for assembly text and bytecode, in `map_fd(N)` order.
    maps: Vec<MapDef>,
    /// `verify --log`: print the abstract state at each instruction.
    log: bool,
    /// What the program is given, for the verifier.
    context: Context,
    /// Values for an object's `.kconfig` externs.
    kconfig: Kconfig,
}

/// A context description from `--context buffer|fixed:SIZE|packet:SIZE:DATA:DATA_END`.
fn parse_context(spec: &str) -> Result<Context, String> {
    let bad = || format!("--context {spec}: expected buffer, fixed:SIZE or packet:SIZE:DATA:DATA_END");
    let parts: Vec<&str> = spec.split(':').collect();
    let num = |s: &str| s.parse::<u32>().map_err(|_| bad());
    match parts[..] {
        ["buffer"] => Ok(Context::Buffer),
        ["fixed", size] => Ok(Context::fixed(num(size)?)),
        ["packet", size, data, data_end] => {
            Ok(Context::Packet { size: num(size)?, data: num(data)?, data_end: num(data_end)? })
        }
        _ => Err(bad()),
    }
}

/// A map definition from `--map KIND:KEY_SIZE:VALUE_SIZE:MAX_ENTRIES`.
fn parse_map(spec: &str) -> Result<MapDef, String> {
    let bad = || format!("--map {spec}: expected KIND:KEY_SIZE:VALUE_SIZE:MAX_ENTRIES, KIND one of {MAP_KINDS}");
    let parts: Vec<&str> = spec.split(':').collect();
    let [kind, key, value, max] = parts[..] else { return Err(bad()) };
    let map_type = match kind {
        "hash" => MapType::Hash,
        "array" => MapType::Array,
        "lru_hash" => MapType::LruHash,
        "percpu_hash" => MapType::PerCpuHash,
        "percpu_array" => MapType::PerCpuArray,
        "ringbuf" => MapType::RingBuf,
        "prog_array" => MapType::ProgArray,
        _ => return Err(bad()),
    };
    let num = |s: &str| s.parse::<u32>().map_err(|_| bad());
    Ok(MapDef { map_type, key_size: num(key)?, value_size: num(value)?, max_entries: num(max)?, flags: 0 })
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut o = Options { repeat: 1, ..Options::default() };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--section" => o.section = Some(value(a)?),
            "--engine" => o.engine = Some(value(a)?),
            "--mode" => o.mode = Some(value(a)?),
            "--mem-hex" => o.mem = Some(decode_hex(&value(a)?)?),
            "--mem-file" => {
                let path = value(a)?;
                o.mem = Some(std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?);
            }
            "--repeat" => {
                let v = value(a)?;
                o.repeat = v.parse().ok().filter(|&n| n > 0).ok_or(format!("--repeat: not a positive number: {v}"))?;
            }
            "--budget" => {
                let v = value(a)?;
                o.budget = Some(v.parse().map_err(|_| format!("--budget: not a number: {v}"))?);
            }
            "--dump-maps" => o.dump_maps = true,
            "--map" => o.maps.push(parse_map(&value(a)?)?),
            "--log" => o.log = true,
            "--context" => o.context = parse_context(&value(a)?)?,
            "--kconfig" => {
                let v = value(a)?;
                let (key, val) = v.split_once('=').ok_or(format!("--kconfig {v}: expected KEY=VALUE"))?;
                o.kconfig.set(key, val);
            }
            "--kconfig-file" => {
                let path = value(a)?;
                let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
                let file = Kconfig::parse(&text).map_err(|e| format!("{path}: {e}"))?;
                // In command-line order: a later value of the same name wins.
                for (key, val) in file.iter() {
                    o.kconfig.set(key, val);
                }
            }
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    Ok(o)
}

/// Map kinds `--map` knows.
const MAP_KINDS: &str = "hash, array, lru_hash, percpu_hash, percpu_array, ringbuf, prog_array";

fn engine(o: &Options) -> Result<Engine, String> {
    match o.engine.as_deref() {
        Some("interpreter") => Ok(Engine::Interpreter),
        #[cfg(feature = "jit")]
        None | Some("jit") => Ok(Engine::Jit),
        #[cfg(not(feature = "jit"))]
        None => Ok(Engine::Interpreter),
        #[cfg(not(feature = "jit"))]
        Some("jit") => Err("this build has no JIT (feature `jit`); use --engine interpreter".into()),
        Some(e) => Err(format!("unknown engine {e:?} (interpreter, jit)")),
    }
}

/// The mode `--mode` asks for.
fn mode(o: &Options) -> Result<Mode, String> {
    match o.mode.as_deref() {
        None | Some("verified") => Ok(Mode::Verified),
        Some("checked") => Ok(Mode::Checked),
        Some("unchecked") => Ok(Mode::Unchecked),
        Some(m) => Err(format!("unknown mode {m:?} (verified, checked, unchecked)")),
    }
}

/// The verifier's log of the program: the state at each instruction it analysed, up to the first error.
fn verifier_log(input: &Input, o: &Options) -> Result<String, String> {
    let linked = match input {
        Input::Object(obj) => {
            let obj = &configured(obj, o)?;
            let instance = Instance::new(obj).map_err(|e| e.to_string())?;
            let name = match &o.section {
                Some(s) => s.clone(),
                None => obj.programs().first().ok_or("the object has no programs")?.name.clone(),
            };
            let program = instance.program(&name).ok_or(format!("no program {name}"))?.program.clone();
            let targets = instance.programs().iter().map(|p| p.program.clone()).collect();
            let mut env = instance.env();
            env.set_context(o.context.clone());
            Linked::new(program, targets, env).map_err(|e| e.to_string())?
        }
        Input::Program(p) => {
            let mut env = ebpf_vm::Env::new();
            env.add_standard_helpers();
            env.set_context(o.context.clone());
            for def in &o.maps {
                env.add_map(maps::create(*def).map_err(|e| e.to_string())?);
            }
            Linked::new(p.clone(), Vec::new(), env).map_err(|e| e.to_string())?
        }
    };
    let mut log = String::new();
    let _ = Verifier::new().verify_logged(&Arc::new(linked), Some(&mut log));
    Ok(log)
}

/// `obj` with its `.kconfig` externs set from `--kconfig` and `--kconfig-file`, and
/// `LINUX_KERNEL_VERSION` from this machine's kernel release unless given (as libbpf does).
fn configured(obj: &Object, o: &Options) -> Result<Object, String> {
    let mut obj = obj.clone();
    if obj.kconfig_externs().is_empty() {
        return Ok(obj);
    }
    let mut config = o.kconfig.clone();
    if config.get("LINUX_KERNEL_VERSION").is_none() {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        if let Some(v) = kernel_version(release.trim()) {
            config.set("LINUX_KERNEL_VERSION", v.to_string());
        }
    }
    obj.set_kconfig(&config).map_err(|e| format!("{e} (give it with --kconfig KEY=VALUE)"))?;
    Ok(obj)
}

/// Maps by name, for `--dump-maps`.
type NamedMaps = Vec<(String, Arc<dyn Map>)>;

/// The program to run, and the maps to dump.
fn prepare(input: &Input, o: &Options) -> Result<(Vm, NamedMaps), String> {
    let (builder, maps) = match input {
        Input::Object(obj) => {
            let name = match &o.section {
                Some(s) => s.clone(),
                None => obj.programs().first().ok_or("the object has no programs")?.name.clone(),
            };
            let instance = Instance::new(&configured(obj, o)?).map_err(|e| e.to_string())?;
            let maps = instance.maps().iter().map(|m| (m.name.clone(), Arc::clone(&m.map))).collect();
            (instance.vm_builder(&name).map_err(|e| e.to_string())?, maps)
        }
        Input::Program(p) => {
            if o.section.is_some() {
                return Err("--section applies to ELF objects only".into());
            }
            let mut builder = Vm::builder(p.clone()).standard_helpers();
            let mut named = Vec::new();
            for (i, def) in o.maps.iter().enumerate() {
                let map = maps::create(*def).map_err(|e| format!("--map {i}: {e}"))?;
                named.push((format!("map{i}"), Arc::clone(&map)));
                builder = builder.map(map);
            }
            (builder, named)
        }
    };
    if !o.maps.is_empty() && matches!(input, Input::Object(_)) {
        return Err("--map applies to assembly text and bytecode; an object declares its own maps".into());
    }
    let mut builder = builder.engine(engine(o)?).context(o.context.clone());
    builder = match mode(o)? {
        Mode::Verified => builder.verified(),
        Mode::Checked => builder.checked(),
        // SAFETY: whoever runs the command asked for no checks with `--mode unchecked`: the program's
        // accesses are theirs to vouch for, as the usage says.
        _ => unsafe { builder.unchecked() },
    };
    if let Some(n) = o.budget {
        builder = builder.budget(n);
    }
    Ok((builder.build().map_err(|e| e.to_string())?, maps))
}

fn dump_maps(maps: &NamedMaps) {
    for (name, map) in maps {
        let def = map.def();
        if def.map_type == MapType::RingBuf {
            continue;
        }
        if let Some(pa) = map.downcast_ref::<ProgArrayMap>() {
            // Only the indices that are set (the array may be huge and sparse).
            for key in map.keys() {
                let Some(id) = pa.get(u32::from_ne_bytes([key[0], key[1], key[2], key[3]])) else { continue };
                println!("{{\"map\":\"{name}\",\"key\":\"{}\",\"value\":\"{}\"}}", hex(&key), hex(&id.to_ne_bytes()));
            }
            continue;
        }
        for key in map.keys() {
            for cpu in 0..map.cpus() {
                let Some(value) = map.get(&key, cpu) else { continue };
                if map.cpus() > 1 {
                    println!(
                        "{{\"map\":\"{name}\",\"cpu\":{cpu},\"key\":\"{}\",\"value\":\"{}\"}}",
                        hex(&key),
                        hex(&value)
                    );
                } else {
                    println!("{{\"map\":\"{name}\",\"key\":\"{}\",\"value\":\"{}\"}}", hex(&key), hex(&value));
                }
            }
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let (cmd, file, rest) = match args {
        [cmd, file, rest @ ..] => (cmd.as_str(), file.as_str(), rest),
        [cmd] if cmd == "--help" || cmd == "-h" => {
            println!("{USAGE}");
            return Ok(());
        }
        _ => return Err(USAGE.into()),
    };
    let o = parse_options(rest)?;
    let input = load(file)?;
    match cmd {
        "run" => {
            let (vm, maps) = prepare(&input, &o)?;
            let mut mem = o.mem.clone().unwrap_or_default();
            let mut r0 = 0;
            for _ in 0..o.repeat {
                let mut buf = mem.clone();
                r0 = vm.execute(&mut buf).map_err(|e| e.to_string())?;
                mem = buf;
            }
            println!("{r0:#x}");
            if o.dump_maps {
                dump_maps(&maps);
            }
            Ok(())
        }
        "disasm" => {
            match &input {
                Input::Object(obj) => {
                    for p in obj.programs() {
                        println!("# program {} (section {}), {} slots", p.name, p.section, p.program.slot_count());
                        print!("{}", p.program.disassemble());
                    }
                }
                Input::Program(p) => print!("{}", p.disassemble()),
            }
            Ok(())
        }
        "verify" => {
            let mut o = o;
            o.mode = Some("verified".into());
            // Verifying needs no compiled code.
            o.engine = Some("interpreter".into());
            if o.log {
                print!("{}", verifier_log(&input, &o)?);
            }
            let (vm, _) = prepare(&input, &o)?;
            println!(
                "verified: {} ({} slots) is proven safe for a {} context",
                if vm.program().name().is_empty() { file } else { vm.program().name() },
                vm.program().slot_count(),
                match o.context {
                    Context::Buffer => "buffer".to_string(),
                    Context::Fixed { size, .. } => format!("fixed {size}-byte"),
                    Context::Packet { size, .. } => format!("packet-style ({size}-byte struct)"),
                    _ => "custom".to_string(),
                }
            );
            Ok(())
        }
        "sections" => {
            match &input {
                Input::Object(obj) => {
                    println!("license: {}", obj.license());
                    for (id, p) in obj.programs().iter().enumerate() {
                        println!("program {id}: {} section={} slots={}", p.name, p.section, p.program.slot_count());
                    }
                    for (i, m) in obj.maps().iter().enumerate() {
                        let d = m.def;
                        println!(
                            "map {i}: {} type={} key_size={} value_size={} max_entries={} origin={:?}",
                            m.name,
                            d.map_type.name(),
                            d.key_size,
                            d.value_size,
                            d.max_entries,
                            m.origin
                        );
                    }
                }
                Input::Program(p) => println!("program 0: (raw) slots={}", p.slot_count()),
            }
            Ok(())
        }
        other => Err(format!("unknown command {other:?}\n{USAGE}")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ebpf-vm: {e}");
            ExitCode::FAILURE
        }
    }
}
