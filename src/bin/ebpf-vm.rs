//! `ebpf-vm`: run, verify, inspect and disassemble BPF programs without writing a host.
//!
//! ```text
//! ebpf-vm run FILE [--section NAME] [--engine jit|interpreter] [--mode verified|checked|unchecked] ...
//! ebpf-vm verify FILE [--section NAME] [--log] ...
//! ebpf-vm disasm FILE [--section NAME]
//! ebpf-vm sections FILE
//! ebpf-vm maps FILE
//! ebpf-vm help [COMMAND]
//! ```
//!
//! FILE is an ELF object (clang `-target bpf`), raw bytecode, or assembly text. `ebpf-vm COMMAND
//! --help` says what each option does and its default. `run` prints r0 in hex and as a signed number
//! on the first line, and with `--dump-maps` one JSON object per map entry (and per pending ring-buffer
//! record). Errors go to standard error: exit status 1 for a failure, 2 for a wrong command line.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{value_parser, Arg, ArgAction, ArgMatches, Command};
use ebpf_vm::elf::{kernel_version, Kconfig, Object, ObjectProgram, SourceLine};
use ebpf_vm::link::Linked;
use ebpf_vm::maps::{
    self, BloomFilterMap, Map, MapDef, MapOfMaps, MapType, PerfEvent, PerfEventArrayMap, ProgArrayMap, QueueMap,
    RingBufMap,
};
use ebpf_vm::{Context, Engine, ExecError, Instance, Mode, Program, Verifier, Vm};

/// Instructions `run` allows by default before it stops a program (checked and unchecked programs
/// are not proven to end).
const DEFAULT_BUDGET: u64 = 1_000_000_000;

/// Writes a line to standard output; a closed output (`ebpf-vm disasm X | head`) ends the command
/// quietly, as the shell's tools do, rather than with a panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout().lock(), $($arg)*).is_err() {
            std::process::exit(141);
        }
    }};
}

/// As `out!`, without the newline.
macro_rules! out_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if write!(std::io::stdout().lock(), $($arg)*).is_err() {
            std::process::exit(141);
        }
    }};
}

/// Map kinds `--map` knows.
const MAP_KINDS: &str =
    "hash, array, lru_hash, percpu_hash, percpu_array, ringbuf, perf_event_array, prog_array, queue, stack, bloom_filter";

fn file_arg() -> Arg {
    Arg::new("FILE").required(true).help("An ELF object (clang -target bpf), raw bytecode, or assembly text")
}

fn section_arg() -> Arg {
    Arg::new("section").long("section").value_name("NAME").help(
        "The program, by function or section name; required when the object has more than one \
         program, and a section name must name only one",
    )
}

/// What `run` and `verify` share: what the program is given.
fn program_args() -> [Arg; 5] {
    [
        section_arg(),
        Arg::new("context").long("context").value_name("CONTEXT").default_value("buffer").help(
            "What r1 points to: buffer (the memory, its length in r2), fixed:SIZE (exactly SIZE \
             bytes) or packet:SIZE:DATA:DATA_END (a SIZE-byte struct with 8-byte packet start and end \
             fields at DATA and DATA_END, then the packet)",
        ),
        Arg::new("map").long("map").value_name("KIND:KEY_SIZE:VALUE_SIZE:MAX_ENTRIES").action(ArgAction::Append).help(
            format!(
                "A map for assembly text or bytecode: the N-th is what `lddw rX, map_fd(N)` names. \
                 KIND: {MAP_KINDS}"
            ),
        ),
        Arg::new("kconfig").long("kconfig").value_name("KEY=VALUE").action(ArgAction::Append).help(
            "A value for an object's .kconfig extern (y, n, m, a number, or a quoted string); \
             LINUX_KERNEL_VERSION defaults to this machine's kernel, LINUX_HAS_BPF_COOKIE to n",
        ),
        Arg::new("kconfig-file")
            .long("kconfig-file")
            .value_name("PATH")
            .help("A kernel .config whose values the .kconfig externs take (--kconfig values win)"),
    ]
}

fn cli() -> Command {
    Command::new("ebpf-vm")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Run, verify, inspect and disassemble BPF programs")
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(
            Command::new("run")
                .about("Verify (by default) and run a program; print r0, then the maps with --dump-maps")
                .arg(file_arg())
                .args(program_args())
                .arg(
                    Arg::new("engine")
                        .long("engine")
                        .value_parser(["jit", "interpreter"])
                        .default_value(if cfg!(feature = "jit") { "jit" } else { "interpreter" })
                        .help("Which engine runs the program"),
                )
                .arg(
                    Arg::new("mode")
                        .long("mode")
                        .value_parser(["verified", "checked", "unchecked"])
                        .default_value("verified")
                        .help(
                            "verified: proven safe before it runs, then run with no checks; checked: every \
                     access checked as it runs; unchecked: no checks at all (only for programs you trust)",
                        ),
                )
                .arg(
                    Arg::new("mem-hex")
                        .long("mem-hex")
                        .value_name("HEX")
                        .conflicts_with("mem-file")
                        .help("The program's memory, as hex bytes (default: none)"),
                )
                .arg(Arg::new("mem-file").long("mem-file").value_name("PATH").help("The program's memory, from a file"))
                .arg(
                    Arg::new("repeat")
                        .long("repeat")
                        .value_name("N")
                        .default_value("1")
                        .value_parser(value_parser!(u64).range(1..))
                        .help("Runs N times on the same memory and maps; prints the last r0"),
                )
                .arg(Arg::new("budget").long("budget").value_name("N").value_parser(value_parser!(u64)).help(format!(
                    "Stops the program after N instructions, 0 for no limit (default: {DEFAULT_BUDGET} \
                             in checked and unchecked modes, none for verified programs, which end)"
                )))
                .arg(Arg::new("dump-maps").long("dump-maps").action(ArgAction::SetTrue).help(
                    "Prints every map entry, pending ring-buffer record and perf sample (or loss), as JSON lines",
                )),
        )
        .subcommand(
            Command::new("verify")
                .about("Verify a program: say it is proven safe, or name the instruction and the rule it breaks")
                .arg(file_arg())
                .args(program_args())
                .arg(
                    Arg::new("log")
                        .long("log")
                        .action(ArgAction::SetTrue)
                        .help("Prints the verifier's state at each instruction it analysed"),
                ),
        )
        .subcommand(
            Command::new("disasm")
                .about("Print a program's instructions, each with its slot index and jump targets")
                .arg(file_arg())
                .arg(section_arg().help("Only this program (by function or section name; default: every program)")),
        )
        .subcommand(Command::new("sections").about("List an object's programs and maps").arg(file_arg()))
        .subcommand(
            Command::new("maps")
                .about(
                    "List an object's maps: name, kind, key and value sizes, capacity, flags, origin; or, with \
                     --attach, print the live contents of the maps a traced process shares",
                )
                .arg(file_arg().required_unless_present("attach"))
                .arg(Arg::new("attach").long("attach").value_name("PID|/NAME").conflicts_with("FILE").help(
                    "Print the maps process PID shares (traced with `ebpf-vm trace`), or the one shared map \
                             /NAME (as /dev/shm lists it, with a leading /)",
                )),
        )
        .subcommand(
            Command::new("trace")
                .about(
                    "Run COMMAND with the object's uprobes, uretprobes and syscall tracepoints attached (Linux, \
                     x86_64), printing its bpf_printk output as it arrives and its maps when COMMAND ends",
                )
                .arg(Arg::new("OBJECT").required(true).help("An ELF object whose programs are all probes"))
                .arg(Arg::new("COMMAND").required(true).num_args(1..).last(true).help("The command to run, after --")),
        )
}

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
        return Program::from_asm(&text).map(Input::Program).map_err(|e| {
            // Text whose first instruction is not one is no assembly at all.
            let first = text.lines().position(|l| !l.trim().is_empty() && !l.trim_start().starts_with(['#', ';']));
            let at_first = first.is_some_and(|n| e.to_string().starts_with(&format!("assembly: line {}:", n + 1)));
            if at_first && !is_asm_name {
                format!("{path}: not an ELF object, BPF bytecode or assembly text (read as {e})")
            } else {
                format!("{path}: {e}")
            }
        });
    }
    if bytes.len() % 8 != 0 {
        return Err(format!(
            "{path}: not an ELF object, BPF bytecode or assembly text ({} bytes, not a whole number of 8-byte instructions)",
            bytes.len()
        ));
    }
    Program::from_bytes(&bytes).map(Input::Program).map_err(|e| format!("{path}: {e}"))
}

/// The FILE argument (clap requires it; a missing one is still an error, not a panic).
fn file(m: &ArgMatches) -> Result<&String, String> {
    m.get_one::<String>("FILE").ok_or_else(|| "a FILE is required".to_string())
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
        "perf_event_array" => MapType::PerfEventArray,
        "prog_array" => MapType::ProgArray,
        "queue" => MapType::Queue,
        "stack" => MapType::Stack,
        "bloom_filter" => MapType::BloomFilter,
        _ => return Err(bad()),
    };
    let num = |s: &str| s.parse::<u32>().map_err(|_| bad());
    Ok(MapDef { map_type, key_size: num(key)?, value_size: num(value)?, max_entries: num(max)?, flags: 0 })
}

/// What `run` and `verify` read from their options.
struct Options {
    section: Option<String>,
    context: Context,
    maps: Vec<MapDef>,
    kconfig: Kconfig,
    engine: Engine,
    mode: Mode,
    budget: Option<u64>,
}

fn options(m: &ArgMatches, run: bool) -> Result<Options, String> {
    let strings = |id: &str| m.get_many::<String>(id).into_iter().flatten().cloned().collect::<Vec<_>>();
    let mut kconfig = Kconfig::new();
    if let Some(path) = m.get_one::<String>("kconfig-file") {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        for (key, value) in Kconfig::parse(&text).map_err(|e| format!("{path}: {e}"))?.iter() {
            kconfig.set(key, value);
        }
    }
    for kv in strings("kconfig") {
        let (key, value) = kv.split_once('=').ok_or(format!("--kconfig {kv}: expected KEY=VALUE"))?;
        kconfig.set(key, value);
    }
    let context = parse_context(m.get_one::<String>("context").map_or("buffer", String::as_str))?;
    let maps = strings("map").iter().map(|s| parse_map(s)).collect::<Result<Vec<_>, _>>()?;
    let (engine, mode, budget) = if run {
        let engine = match m.get_one::<String>("engine").map(String::as_str) {
            Some("interpreter") => Engine::Interpreter,
            #[cfg(feature = "jit")]
            _ => Engine::Jit,
            #[cfg(not(feature = "jit"))]
            _ => return Err("this build has no JIT (feature `jit`); use --engine interpreter".into()),
        };
        let mode = match m.get_one::<String>("mode").map(String::as_str) {
            Some("checked") => Mode::Checked,
            Some("unchecked") => Mode::Unchecked,
            _ => Mode::Verified,
        };
        let budget = match m.get_one::<u64>("budget") {
            Some(0) => None,
            Some(&n) => Some(n),
            None if mode == Mode::Verified => None,
            None => Some(DEFAULT_BUDGET),
        };
        (engine, mode, budget)
    } else {
        // Verifying needs no compiled code.
        (Engine::Interpreter, Mode::Verified, None)
    };
    Ok(Options { section: m.get_one::<String>("section").cloned(), context, maps, kconfig, engine, mode, budget })
}

/// The program of `obj` that `section` names: by function name, or else the only program of that
/// section; with no `section`, the only program of the object.
fn pick<'o>(obj: &'o Object, section: Option<&str>) -> Result<&'o ObjectProgram, String> {
    let list = |ps: &[&ObjectProgram]| {
        ps.iter().map(|p| format!("{} (section {})", p.name, p.section)).collect::<Vec<_>>().join(", ")
    };
    let all: Vec<&ObjectProgram> = obj.programs().iter().collect();
    let Some(name) = section else {
        return match all[..] {
            [] => Err("the object has no programs".into()),
            [only] => Ok(only),
            _ => Err(format!("the object has {} programs: say which with --section ({})", all.len(), list(&all))),
        };
    };
    if let Some(p) = all.iter().find(|p| p.name == name) {
        return Ok(p);
    }
    let in_section: Vec<&ObjectProgram> = all.iter().copied().filter(|p| p.section == name).collect();
    match in_section[..] {
        [] => Err(format!("no program named `{name}` (by function or section name); the programs: {}", list(&all))),
        [only] => Ok(only),
        _ => Err(format!(
            "section `{name}` holds {} programs: name one by its function ({})",
            in_section.len(),
            list(&in_section)
        )),
    }
}

/// `obj` with its `.kconfig` externs set from `--kconfig` and `--kconfig-file`, and
/// `LINUX_KERNEL_VERSION` from this machine's kernel release unless given (as libbpf does), and
/// `LINUX_HAS_BPF_COOKIE` false (there are no attach cookies here).
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
    // libbpf answers this one from what the kernel supports: this runtime has no attach cookies.
    if config.get("LINUX_HAS_BPF_COOKIE").is_none() {
        config.set("LINUX_HAS_BPF_COOKIE", "n".to_string());
    }
    obj.set_kconfig(&config).map_err(|e| format!("{e} (give it with --kconfig KEY=VALUE)"))?;
    Ok(obj)
}

/// The verifier's log of the program: the state at each instruction it analysed, up to the first error.
fn verifier_log(input: &Input, o: &Options) -> Result<String, String> {
    let linked = match input {
        Input::Object(obj) => {
            let name = pick(obj, o.section.as_deref())?.name.clone();
            let instance = Instance::new(&configured(obj, o)?).map_err(|e| e.to_string())?;
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

/// Maps by name, for `--dump-maps`.
type NamedMaps = Vec<(String, Arc<dyn Map>)>;

/// Where errors of the program that runs come from in C: the object and the program's name.
struct Source {
    object: Object,
    entry: String,
}

impl Source {
    /// `at FILE:LINE: TEXT` for slot `pc` of program `program` of the linked set (as a verifier error
    /// names it; `None` for an execution error, which does not), when the object has line info and
    /// the program is known: with tail calls, the set holds every program of the object by id.
    fn line(&self, program: Option<usize>, pc: usize) -> Option<String> {
        let programs = self.object.programs();
        let tail_calls = programs
            .iter()
            .any(|p| p.program.instructions().iter().any(|i| matches!(i, ebpf_vm::isa::Instruction::Call { id: 12 })));
        let p = match (tail_calls, program) {
            (false, _) => programs.iter().find(|p| p.name == self.entry)?,
            (true, Some(id)) => programs.get(id)?,
            (true, None) => return None,
        };
        let l = p.line_at(pc)?;
        let file = l.file.rsplit('/').next().unwrap_or(&l.file);
        let function = p.function_at(pc).map(|f| format!(" in {f}()")).unwrap_or_default();
        Some(format!("\n  at {file}:{}{function}: {}", l.line, l.text.trim()))
    }
}

/// The program to run, and the maps to dump.
fn prepare(input: &Input, o: &Options) -> Result<(Vm, NamedMaps, Option<Source>), String> {
    let mut source = None;
    let (builder, maps) = match input {
        Input::Object(obj) => {
            if !o.maps.is_empty() {
                return Err("--map applies to assembly text and bytecode; an object declares its own maps".into());
            }
            let name = pick(obj, o.section.as_deref())?.name.clone();
            let instance = Instance::new(&configured(obj, o)?).map_err(|e| e.to_string())?;
            let maps = instance.maps().iter().map(|m| (m.name.clone(), Arc::clone(&m.map))).collect();
            let builder = instance.vm_builder(&name).map_err(|e| e.to_string())?;
            source = Some(Source { object: obj.clone(), entry: name });
            (builder, maps)
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
    let mut builder = builder.engine(o.engine).context(o.context.clone());
    builder = match o.mode {
        Mode::Verified => builder.verified(),
        Mode::Checked => builder.checked(),
        // SAFETY: whoever runs the command asked for no checks with `--mode unchecked`: the program's
        // accesses are theirs to vouch for, as the help says.
        _ => unsafe { builder.unchecked() },
    };
    if let Some(n) = o.budget {
        builder = builder.budget(n);
    }
    let vm = builder.build().map_err(|e| {
        let at = match (&e, &source) {
            (ebpf_vm::BuildError::Verify(v), Some(s)) => s.line(Some(v.program), v.pc),
            _ => None,
        };
        format!("{e}{}", at.unwrap_or_default())
    })?;
    Ok((vm, maps, source))
}

/// Per-CPU slots worth printing: those of the CPUs this machine has.
fn cpus_here(map: &dyn Map) -> usize {
    let here = std::thread::available_parallelism().map_or(1, usize::from);
    map.cpus().min(here).max(1)
}

fn dump_maps(maps: &NamedMaps) {
    for (name, map) in maps {
        if let Some(rb) = map.downcast_ref::<RingBufMap>() {
            // Pending records, oldest first (consumed: a second dump shows only newer ones).
            rb.consume(|record| out!("{{\"map\":\"{name}\",\"record\":\"{}\"}}", hex(record)));
            continue;
        }
        if let Some(perf) = map.downcast_ref::<PerfEventArrayMap>() {
            // Pending samples per CPU, oldest first, and losses where they happened (consumed).
            perf.consume_all(|cpu, event| match event {
                PerfEvent::Sample(s) => out!("{{\"map\":\"{name}\",\"cpu\":{cpu},\"sample\":\"{}\"}}", hex(s)),
                PerfEvent::Lost(n) => out!("{{\"map\":\"{name}\",\"cpu\":{cpu},\"lost\":{n}}}"),
            });
            continue;
        }
        if let Some(bloom) = map.downcast_ref::<BloomFilterMap>() {
            // Values cannot be listed: how full the filter is.
            let (set, bits) = bloom.bits_set();
            out!("{{\"map\":\"{name}\",\"bits_set\":{set},\"bits\":{bits}}}");
            continue;
        }
        if let Some(outer) = map.downcast_ref::<MapOfMaps>() {
            // The index of the inner map each entry names.
            for key in map.keys() {
                let Some(inner) = outer.get(&key) else { continue };
                out!("{{\"map\":\"{name}\",\"key\":\"{}\",\"inner_map\":{inner}}}", hex(&key));
            }
            continue;
        }
        if let Some(q) = map.downcast_ref::<QueueMap>() {
            // In the order a pop would take them.
            for value in q.values() {
                out!("{{\"map\":\"{name}\",\"value\":\"{}\"}}", hex(&value));
            }
            continue;
        }
        if let Some(pa) = map.downcast_ref::<ProgArrayMap>() {
            // Only the indices that are set (the array may be huge and sparse).
            for key in map.keys() {
                let Some(id) = pa.get(u32::from_ne_bytes([key[0], key[1], key[2], key[3]])) else { continue };
                out!("{{\"map\":\"{name}\",\"key\":\"{}\",\"value\":\"{}\"}}", hex(&key), hex(&id.to_ne_bytes()));
            }
            continue;
        }
        let per_cpu = map.cpus() > 1;
        for key in map.keys() {
            for cpu in 0..cpus_here(map.as_ref()) {
                let Some(value) = map.get(&key, cpu) else { continue };
                if per_cpu {
                    out!(
                        "{{\"map\":\"{name}\",\"cpu\":{cpu},\"key\":\"{}\",\"value\":\"{}\"}}",
                        hex(&key),
                        hex(&value)
                    );
                } else {
                    out!("{{\"map\":\"{name}\",\"key\":\"{}\",\"value\":\"{}\"}}", hex(&key), hex(&value));
                }
            }
        }
    }
}

/// An execution error, with an out-of-bounds address told relative to the input when it is near it.
fn describe(e: &ExecError, mem: &[u8]) -> String {
    let ExecError::OutOfBounds { pc, addr, len, write } = *e else { return e.to_string() };
    let base = mem.as_ptr() as u64;
    let what = if write { "store" } else { "load" };
    let size = mem.len() as u64;
    let near = 1 << 20;
    let place = if !mem.is_empty() && addr >= base && addr - base < size + near {
        format!("input+{} (the input is {size} bytes)", addr - base)
    } else if !mem.is_empty() && addr < base && base - addr < near {
        format!("input-{} (before the input, which is {size} bytes)", base - addr)
    } else if addr < 4096 {
        format!("address {addr:#x} (a null or small pointer)")
    } else {
        format!("address {addr:#x}, in no memory the program was given (the input is {size} bytes)")
    };
    format!("instruction {pc}: {what} of {len} bytes at {place} is out of bounds")
}

fn run(m: &ArgMatches) -> Result<(), String> {
    let path = file(m)?;
    let o = options(m, true)?;
    let input = load(path)?;
    let (vm, maps, source) = prepare(&input, &o)?;
    let mut mem = match (m.get_one::<String>("mem-hex"), m.get_one::<String>("mem-file")) {
        (Some(h), _) => decode_hex(h)?,
        (_, Some(f)) => std::fs::read(f).map_err(|e| format!("{f}: {e}"))?,
        _ => Vec::new(),
    };
    let mut r0 = 0;
    for _ in 0..*m.get_one::<u64>("repeat").unwrap_or(&1) {
        r0 = vm.execute(&mut mem).map_err(|e| {
            let at = source.as_ref().and_then(|s| s.line(None, e.pc()));
            format!("{}{}", describe(&e, &mem), at.unwrap_or_default())
        })?;
    }
    out!("{r0:#x} ({})", r0 as i64);
    if m.get_flag("dump-maps") {
        dump_maps(&maps);
    }
    Ok(())
}

fn verify(m: &ArgMatches) -> Result<(), String> {
    let path = file(m)?;
    let o = options(m, false)?;
    let input = load(path)?;
    if m.get_flag("log") {
        out_raw!("{}", verifier_log(&input, &o)?);
    }
    let (vm, _, _) = prepare(&input, &o)?;
    out!(
        "verified: {} ({} slots) is proven safe for a {} context",
        if vm.program().name().is_empty() { path } else { vm.program().name() },
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

/// A program's instructions, one a line: slot index, instruction, and for jumps and calls the slot
/// they go to; before the first instruction of each C source line (`lines`, from the object's line
/// info), that line and where it is.
fn listing(program: &Program, lines: &[(usize, SourceLine)], functions: &[(usize, Arc<str>)]) -> String {
    let mut out = String::new();
    let mut slot = 0usize;
    let width = program.slot_count().max(1).to_string().len();
    let mut next_line = lines.iter().peekable();
    let mut last: Option<&SourceLine> = None;
    let mut next_function = functions.iter().peekable();
    for insn in program.instructions() {
        while let Some((_, name)) = next_function.next_if(|(at, _)| *at <= slot) {
            out.push_str(&format!("<{name}>:\n"));
        }
        while let Some((_, l)) = next_line.next_if(|(at, _)| *at <= slot) {
            // One comment per line of source, whatever the column.
            if last.is_none_or(|p| (&p.file, p.line) != (&l.file, l.line)) {
                let file = l.file.rsplit('/').next().unwrap_or(&l.file);
                out.push_str(&format!("; {}  // {file}:{}\n", l.text.trim(), l.line));
                last = Some(l);
            }
        }
        let text = ebpf_vm::isa::disassemble_one(insn);
        let func = match *insn {
            ebpf_vm::isa::Instruction::LoadImm64 { value: ebpf_vm::isa::Imm64::Func(off), .. } => {
                Some(slot as i64 + 1 + off as i64)
            }
            _ => None,
        };
        match (insn.branch_target(slot), func) {
            (Some(to), _) => out.push_str(&format!("{slot:>width$}: {text:<32} ; to {to}\n")),
            (None, Some(f)) => out.push_str(&format!("{slot:>width$}: {text:<32} ; the function at {f}\n")),
            (None, None) => out.push_str(&format!("{slot:>width$}: {text}\n")),
        }
        slot += insn.slots();
    }
    out
}

fn disasm(m: &ArgMatches) -> Result<(), String> {
    let path = file(m)?;
    match load(path)? {
        Input::Object(obj) => {
            let chosen: Vec<&ObjectProgram> = match m.get_one::<String>("section") {
                Some(name) => vec![pick(&obj, Some(name))?],
                None => obj.programs().iter().collect(),
            };
            for p in chosen {
                out!("# program {} (section {}), {} slots", p.name, p.section, p.program.slot_count());
                out_raw!("{}", listing(&p.program, &p.lines, &p.functions));
            }
        }
        Input::Program(p) => {
            if m.get_one::<String>("section").is_some() {
                return Err("--section applies to ELF objects only".into());
            }
            out_raw!("{}", listing(&p, &[], &[]));
        }
    }
    Ok(())
}

fn sections(m: &ArgMatches) -> Result<(), String> {
    let path = file(m)?;
    match load(path)? {
        Input::Object(obj) => {
            out!("license: {}", obj.license());
            for (id, p) in obj.programs().iter().enumerate() {
                out!("program {id}: {} section={} slots={}", p.name, p.section, p.program.slot_count());
            }
            for (i, m) in obj.maps().iter().enumerate() {
                let d = m.def;
                out!(
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
        Input::Program(p) => out!("program 0: (raw) slots={}", p.slot_count()),
    }
    Ok(())
}

fn maps_of(m: &ArgMatches) -> Result<(), String> {
    if let Some(which) = m.get_one::<String>("attach") {
        if which.starts_with('/') {
            return trace::print_shared_map(which);
        }
        let pid = which.parse::<u32>().map_err(|_| format!("--attach {which}: neither a process id nor a /NAME"))?;
        return trace::print_process_maps(pid);
    }
    let path = file(m)?;
    let Input::Object(obj) = load(path)? else {
        return Err(format!("{path}: not an ELF object (assembly and bytecode declare no maps)"));
    };
    out!("{:<24} {:<32} {:>8} {:>10} {:>11} {:>10}  origin", "name", "kind", "key", "value", "max_entries", "flags");
    for spec in obj.maps() {
        let d = spec.def;
        let kind = if d.map_type.implemented() {
            d.map_type.name().to_string()
        } else {
            format!("{} (unsupported)", d.map_type.name())
        };
        out!(
            "{:<24} {:<32} {:>8} {:>10} {:>11} {:>#10x}  {:?}",
            spec.name,
            kind,
            d.key_size,
            d.value_size,
            d.max_entries,
            d.flags,
            spec.origin
        );
    }
    Ok(())
}

/// `ebpf-vm trace` and `ebpf-vm maps --attach`: processes traced through the agent, and the maps they
/// share.
#[cfg(all(feature = "attach", target_os = "linux", target_arch = "x86_64"))]
mod trace {
    use std::collections::HashSet;
    use std::io::BufRead as _;
    use std::os::unix::process::CommandExt as _;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use clap::ArgMatches;
    use ebpf_vm::attach::uprobe::parse_section;
    use ebpf_vm::elf::Object;
    use ebpf_vm::maps::{Map, RingBufMap, SharedMap};

    /// The descriptor the agent writes its output to, in the traced process.
    const OUTPUT_FD: i32 = 200;
    /// The longest output line printed whole.
    const MAX_LINE: u64 = 64 * 1024;

    /// The agent's shared library: `$EBPF_VM_AGENT`, else beside this command (where `cargo build`
    /// puts it), else in `deps/` beside it (where `cargo test` leaves it).
    fn agent() -> Result<PathBuf, String> {
        if let Some(p) = std::env::var_os("EBPF_VM_AGENT") {
            return Ok(PathBuf::from(p));
        }
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let beside = exe.with_file_name("libebpf_vm_agent.so");
        let in_deps = exe.with_file_name("deps").join("libebpf_vm_agent.so");
        if let Some(found) = [&beside, &in_deps].into_iter().find(|p| p.exists()) {
            return Ok(found.clone());
        }
        Err(format!(
            "the agent is not at {} (build it: cargo build --release -p ebpf-vm-agent; or set EBPF_VM_AGENT)",
            beside.display()
        ))
    }

    /// A key or value: as a number when it has 4 or 8 bytes, else in hex.
    fn show(bytes: &[u8]) -> String {
        match bytes.len() {
            4 => u32::from_ne_bytes(bytes.try_into().unwrap_or_default()).to_string(),
            8 => u64::from_ne_bytes(bytes.try_into().unwrap_or_default()).to_string(),
            _ => bytes.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// Prints every map process `pid` shares, key by key (the first CPU slot of per-CPU maps... every
    /// slot with a value, for those).
    pub(crate) fn print_process_maps(pid: u32) -> Result<(), String> {
        let maps = SharedMap::of_process(pid);
        if maps.is_empty() {
            return Err(format!("process {pid} shares no maps"));
        }
        for (name, object) in maps {
            print_map(&name, &object)?;
        }
        Ok(())
    }

    /// Prints the shared map `object` (a shared-memory name), whichever process shares it.
    pub(crate) fn print_shared_map(object: &str) -> Result<(), String> {
        // An agent's `/ebpf-vm.PID.NAME` is shown as NAME.
        let name = object
            .strip_prefix("/ebpf-vm.")
            .and_then(|rest| rest.split_once('.'))
            .map_or(object.trim_start_matches('/'), |(_, name)| name);
        print_map(name, object)
    }

    /// Prints the shared map `object` as `name`: key by key (each CPU slot with a value, for per-CPU
    /// maps), or a ring buffer's unread bytes.
    fn print_map(name: &str, object: &str) -> Result<(), String> {
        let map = SharedMap::open_any(object).map_err(|e| format!("{object}: {e}"))?;
        let d = map.def();
        if let Some(ring) = map.downcast_ref::<RingBufMap>() {
            // Not consumed here: the records are the tracer's.
            out!("map {name} (ringbuf, {} bytes): {} bytes not yet read", d.max_entries, ring.query(0));
            return Ok(());
        }
        out!("map {name} ({}, key {} bytes, value {} bytes):", d.map_type.name(), d.key_size, d.value_size);
        for key in map.keys() {
            let values: Vec<String> = (0..map.cpus()).filter_map(|c| map.get(&key, c)).map(|v| show(&v)).collect();
            let values = match values.as_slice() {
                [one] => one.clone(),
                all => format!("[{}]", all.join(", ")),
            };
            out!("  {}: {values}", show(&key));
        }
        Ok(())
    }

    /// A ring-buffer record: as a number when it has 4 or 8 bytes, else in hex, 4 bytes to a group;
    /// past [`MAX_LINE`] / 2 bytes, cut (with the record's length said).
    fn show_record(bytes: &[u8]) -> String {
        if matches!(bytes.len(), 4 | 8) {
            return show(bytes);
        }
        let shown = &bytes[..bytes.len().min(MAX_LINE as usize / 2)];
        let groups: Vec<String> = shown.chunks(4).map(|c| c.iter().map(|b| format!("{b:02x}")).collect()).collect();
        let mut line = groups.join(" ");
        if shown.len() < bytes.len() {
            line.push_str(&format!(" ... ({} bytes)", bytes.len()));
        }
        line
    }

    /// Prints the records of process `pid`'s shared ring buffers as they arrive, until `done` is set
    /// (then once more, for the last ones).
    fn print_records(pid: u32, done: &AtomicBool) {
        let mut rings: Vec<(String, Arc<dyn Map>)> = Vec::new();
        let mut other: HashSet<String> = HashSet::new();
        loop {
            let last = done.load(Ordering::Acquire);
            for (name, object) in SharedMap::of_process(pid) {
                if other.contains(&object) || rings.iter().any(|(n, _)| *n == name) {
                    continue;
                }
                // A map not yet published fails to open: tried again next round.
                match SharedMap::open_any(&object) {
                    Ok(map) if map.downcast_ref::<RingBufMap>().is_some() => rings.push((name, map)),
                    Ok(_) => {
                        other.insert(object);
                    }
                    Err(_) => {}
                }
            }
            for (name, map) in &rings {
                if let Some(ring) = map.downcast_ref::<RingBufMap>() {
                    ring.consume(|record| out!("ringbuf {name}: {}", show_record(record)));
                }
            }
            if last {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Runs the command with the agent, printing the agent's output as it comes, then the maps.
    pub(crate) fn trace(m: &ArgMatches) -> Result<(), String> {
        let path = m.get_one::<String>("OBJECT").ok_or("an OBJECT is required")?;
        let command: Vec<&String> = m.get_many::<String>("COMMAND").ok_or("a COMMAND is required")?.collect();
        let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
        let object = Object::parse(&bytes).map_err(|e| format!("{path}: {e}"))?;
        // Refused before anything runs: programs the agent cannot attach.
        for p in object.programs() {
            match parse_section(&p.section) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(format!(
                        "{path}: program `{}` (section `{}`) is no uprobe, uretprobe or syscall tracepoint",
                        p.name, p.section
                    ))
                }
                Err(e) => return Err(format!("{path}: program `{}`: {e}", p.name)),
            }
        }
        let agent = agent()?;
        let object_path = std::fs::canonicalize(path).map_err(|e| format!("{path}: {e}"))?;
        let preload = match std::env::var("LD_PRELOAD") {
            Ok(other) if !other.is_empty() => format!("{}:{other}", agent.display()),
            _ => agent.display().to_string(),
        };
        let mut fds = [0i32; 2];
        // SAFETY: `fds` has room for the two descriptors, which the files below then own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(format!("pipe: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: descriptors just made, owned by nothing else.
        let (reader, writer) = unsafe {
            use std::os::fd::FromRawFd as _;
            (std::fs::File::from_raw_fd(fds[0]), std::fs::File::from_raw_fd(fds[1]))
        };
        let writer_fd = fds[1];
        let mut child = std::process::Command::new(command[0]);
        child
            .args(&command[1..])
            .env("LD_PRELOAD", preload)
            .env("EBPF_VM_AGENT_OBJECT", &object_path)
            .env("EBPF_VM_AGENT_OUTPUT", OUTPUT_FD.to_string());
        // SAFETY: `dup2` is async-signal-safe; it gives the child the pipe's write end at OUTPUT_FD,
        // without close-on-exec.
        unsafe {
            child.pre_exec(move || match libc::dup2(writer_fd, OUTPUT_FD) {
                -1 => Err(std::io::Error::last_os_error()),
                _ => Ok(()),
            });
        }
        let mut child = child.spawn().map_err(|e| format!("{}: {e}", command[0]))?;
        drop(writer);
        let pid = child.id();
        out!("ebpf-vm: tracing pid {pid}");
        // Lines are the traced process's to write: each is cut at MAX_LINE bytes, so that one without
        // an end cannot fill this process's memory.
        let printer = std::thread::spawn(move || {
            let mut input = std::io::BufReader::new(reader);
            let mut line = Vec::new();
            loop {
                line.clear();
                match std::io::Read::take(&mut input, MAX_LINE).read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => out!("{}", String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(&line))),
                }
            }
        });
        let done = Arc::new(AtomicBool::new(false));
        let records = {
            let done = done.clone();
            std::thread::spawn(move || print_records(pid, &done))
        };
        let status = child.wait().map_err(|e| e.to_string())?;
        let _ = printer.join();
        done.store(true, Ordering::Release);
        let _ = records.join();
        out!("ebpf-vm: pid {pid} exited ({status})");
        let printed = if SharedMap::of_process(pid).is_empty() {
            out!("ebpf-vm: pid {pid} shared no maps");
            Ok(())
        } else {
            print_process_maps(pid)
        };
        for (_, object) in SharedMap::of_process(pid) {
            let _ = SharedMap::unlink(&object);
        }
        printed?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("the traced command failed ({status})"))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn records_are_shown_as_numbers_hex_or_cut() {
            assert_eq!(show_record(&7u32.to_ne_bytes()), "7");
            assert_eq!(show_record(&9u64.to_ne_bytes()), "9");
            assert_eq!(show_record(&[1, 2, 3, 4, 5, 6]), "01020304 0506");
            assert_eq!(show_record(&[]), "");
            let long = vec![0xabu8; 100_000];
            let line = show_record(&long);
            assert!(line.ends_with(" ... (100000 bytes)"), "{}", &line[line.len() - 40..]);
            assert!(line.len() < 2 * MAX_LINE as usize, "{} characters", line.len());
        }
    }
}

#[cfg(not(all(feature = "attach", target_os = "linux", target_arch = "x86_64")))]
mod trace {
    use clap::ArgMatches;

    pub(crate) fn print_process_maps(_pid: u32) -> Result<(), String> {
        Err("tracing needs Linux on x86_64 and the `attach` feature".into())
    }

    pub(crate) fn print_shared_map(_object: &str) -> Result<(), String> {
        Err("tracing needs Linux on x86_64 and the `attach` feature".into())
    }

    pub(crate) fn trace(_m: &ArgMatches) -> Result<(), String> {
        Err("tracing needs Linux on x86_64 and the `attach` feature".into())
    }
}

fn main() -> ExitCode {
    let matches = match cli().try_get_matches() {
        Ok(m) => m,
        Err(e) => {
            // Help and version go to standard output with status 0; a wrong command line is 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let result = match matches.subcommand() {
        Some(("run", m)) => run(m),
        Some(("verify", m)) => verify(m),
        Some(("disasm", m)) => disasm(m),
        Some(("sections", m)) => sections(m),
        Some(("maps", m)) => maps_of(m),
        Some(("trace", m)) => trace::trace(m),
        _ => Err("a command is required (see ebpf-vm --help)".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ebpf-vm: {e}");
            ExitCode::FAILURE
        }
    }
}
