//! The harness of the verifier tests: `reject` checks that a program is refused at the expected
//! instruction for the expected rule, `accept` checks that a program is proven safe and then runs it
//! verified and checked, on the interpreter and on the JIT, and compares everything it can observe.
//!
//! Cases are grouped in a [`Table`], which counts them, collects every failure (so one run shows all of
//! them) and asserts at the end that the expected number of cases ran.
//!
//! Before the verifier is asked anything, the harness checks the case itself: the program assembles
//! and links, every expected pc is the first slot of an instruction, the line marked `# <-` in a
//! rejected program is at the first expected pc, and no instruction is unreachable unless the case is
//! about unreachable code. Accepted programs are first run in checked mode on
//! both engines, so a program that is not in fact safe is reported as a bad case, not as a verifier bug.
//! The expected results of accepted programs are checked on those checked runs too.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use ebpf_vm::helpers::{ArgKind, RetKind};
use ebpf_vm::link::Linked;
use ebpf_vm::maps::{self, MapDef, MapType, ProgArrayMap, RingBufMap, BPF_F_RDONLY_PROG};
use ebpf_vm::program::Cfg;
use ebpf_vm::verifier::{Options, VerifyErrorKind};
use ebpf_vm::{BuildError, Context, Engine, Env, ExecError, Helper, HelperError, HelperSig, Program, Verifier, Vm};

/// Builds a [`Kind`] from a pattern over [`VerifyErrorKind`] (its variants and those of `RegionKind`
/// are in scope), with an optional `if` guard: `kind!(UninitRegister { reg: 3 })`,
/// `kind!(OutOfBounds { region: Stack, min, end, .. } if end - min == 8)`.
macro_rules! kind {
    ($($pattern:tt)+) => {
        $crate::harness::Kind::new(stringify!($($pattern)+), |k: &ebpf_vm::verifier::VerifyErrorKind| {
            #[allow(unused_imports)]
            use ebpf_vm::verifier::{RegionKind::*, VerifyErrorKind::*};
            matches!(k, $($pattern)+)
        })
    };
}
pub(crate) use kind;

/// An expected error kind: a predicate and the pattern it was written as.
#[derive(Clone)]
pub struct Kind {
    desc: String,
    test: Arc<dyn Fn(&VerifyErrorKind) -> bool + Send + Sync>,
}

impl Kind {
    /// A kind from its description and predicate (see [`kind!`] for the usual way).
    pub fn new(desc: impl Into<String>, test: impl Fn(&VerifyErrorKind) -> bool + Send + Sync + 'static) -> Kind {
        Kind { desc: desc.into(), test: Arc::new(test) }
    }
}

/// Id of the test helper that returns the sum of the bytes it reads (`ReadMem`, `MemSize`).
pub const HELPER_SUM: u32 = 200;
/// Id of the test helper that fills the memory it is given with `0x5a` (`WriteMem`, `MemSize`).
pub const HELPER_FILL: u32 = 201;
/// Id of the test helper that takes the context (`Context`) and returns 1.
pub const HELPER_CTX: u32 = 202;

/// A map of the environment a case runs in; map `i` of the list is `map_idx(i)`.
#[derive(Debug, Clone, Copy)]
pub enum MapSpec {
    /// An array map with 4-byte keys.
    Array {
        /// Value size.
        value: u32,
        /// Entries.
        entries: u32,
    },
    /// An array map with 4-byte keys that programs may only read (`BPF_F_RDONLY_PROG`), entry 0
    /// holding `init` (zero-padded).
    ReadOnlyArray {
        /// Value size.
        value: u32,
        /// Entries.
        entries: u32,
        /// Contents of entry 0.
        init: &'static [u8],
    },
    /// A per-CPU array map with 4-byte keys.
    PerCpuArray {
        /// Value size.
        value: u32,
        /// Entries.
        entries: u32,
    },
    /// A hash map.
    Hash {
        /// Key size.
        key: u32,
        /// Value size.
        value: u32,
        /// Entries.
        entries: u32,
    },
    /// A ring buffer of `size` bytes.
    RingBuf {
        /// Size in bytes.
        size: u32,
    },
    /// An array of 4 maps whose inner maps are arrays of 4 values of `value` bytes; entry 0 names the
    /// map at index `inner` of the list.
    ArrayOfArrays {
        /// Inner value size.
        value: u32,
        /// The inner map entry 0 names.
        inner: u32,
    },
    /// A program array of `entries` indices, with `set` as (index, program id).
    ProgArray {
        /// Entries.
        entries: u32,
        /// Indices set.
        set: &'static [(u32, u32)],
    },
}

/// No maps.
pub const NO_MAPS: &[MapSpec] = &[];
/// One array map of one 8-byte value.
pub const ARRAY8: &[MapSpec] = &[MapSpec::Array { value: 8, entries: 1 }];
/// One ring buffer of 4096 bytes.
pub const RINGBUF: &[MapSpec] = &[MapSpec::RingBuf { size: 4096 }];

fn def(map_type: MapType, key_size: u32, value_size: u32, max_entries: u32, flags: u32) -> MapDef {
    MapDef { map_type, key_size, value_size, max_entries, flags }
}

/// A fresh environment: the standard helpers, the test helpers, `maps`, and `context`.
pub fn env(maps: &[MapSpec], context: &Context) -> Result<Env, String> {
    let mut env = Env::new();
    env.add_standard_helpers();
    env.add_helper(Helper::new(
        HELPER_SUM,
        "sum",
        HelperSig {
            args: [ArgKind::ReadMem, ArgKind::MemSize, ArgKind::Unused, ArgKind::Unused, ArgKind::Unused],
            ret: RetKind::Scalar,
        },
        |ctx, a| {
            let len = usize::try_from(a[1]).map_err(|_| HelperError::Failed("size".into()))?;
            Ok(ctx.read_vec(a[0], len)?.iter().map(|&b| u64::from(b)).sum())
        },
    ));
    env.add_helper(Helper::new(
        HELPER_FILL,
        "fill",
        HelperSig {
            args: [ArgKind::WriteMem, ArgKind::MemSize, ArgKind::Unused, ArgKind::Unused, ArgKind::Unused],
            ret: RetKind::Scalar,
        },
        |ctx, a| {
            let len = usize::try_from(a[1]).map_err(|_| HelperError::Failed("size".into()))?;
            ctx.write(a[0], &vec![0x5a; len])?;
            Ok(len as u64)
        },
    ));
    env.add_helper(Helper::new(
        HELPER_CTX,
        "ctx",
        HelperSig {
            args: [ArgKind::Context, ArgKind::Unused, ArgKind::Unused, ArgKind::Unused, ArgKind::Unused],
            ret: RetKind::Scalar,
        },
        |_, _| Ok(1),
    ));
    env.set_print_sink(Arc::new(|_| {}));
    for spec in maps {
        let map = match *spec {
            MapSpec::Array { value, entries } => maps::create(def(MapType::Array, 4, value, entries, 0)),
            MapSpec::ReadOnlyArray { value, entries, init } => {
                maps::create(def(MapType::Array, 4, value, entries, BPF_F_RDONLY_PROG)).and_then(|m| {
                    let mut bytes = vec![0u8; value as usize];
                    let n = init.len().min(bytes.len());
                    bytes[..n].copy_from_slice(&init[..n]);
                    m.update(&0u32.to_ne_bytes(), &bytes, 0, 0).map(|()| m)
                })
            }
            MapSpec::PerCpuArray { value, entries } => maps::create(def(MapType::PerCpuArray, 4, value, entries, 0)),
            MapSpec::Hash { key, value, entries } => maps::create(def(MapType::Hash, key, value, entries, 0)),
            MapSpec::RingBuf { size } => maps::create(def(MapType::RingBuf, 0, 0, size, 0)),
            MapSpec::ArrayOfArrays { value, inner } => {
                maps::MapOfMaps::new(def(MapType::ArrayOfMaps, 4, 4, 4, 0), def(MapType::Array, 4, value, 4, 0))
                    .and_then(|m| m.set(&0u32.to_ne_bytes(), inner).map(|()| Arc::new(m) as Arc<dyn maps::Map>))
            }
            MapSpec::ProgArray { entries, set } => {
                maps::create(def(MapType::ProgArray, 4, 4, entries, 0)).and_then(|m| {
                    if let Some(pa) = m.downcast_ref::<ProgArrayMap>() {
                        for &(index, id) in set {
                            pa.set(index, id)?;
                        }
                    }
                    Ok(m)
                })
            }
        }
        .map_err(|e| format!("map {spec:?}: {e}"))?;
        env.add_map(map);
    }
    env.set_context(context.clone());
    Ok(env)
}

/// A fixed context of `size` bytes whose ranges `[start, end)` are read-only.
pub fn fixed_read_only(size: u32, ranges: &[(u32, u32)]) -> Context {
    Context::Fixed { size, read_only: ranges.iter().map(|&(start, end)| start..end).collect() }
}

/// Everything about one case but the expectation.
#[derive(Clone)]
pub struct Spec<'a> {
    /// Name, unique in its table.
    pub name: &'a str,
    /// The entry program.
    pub asm: &'a str,
    /// Tail-call targets (program array entries name them by position).
    pub targets: &'a [&'a str],
    /// Maps of the environment.
    pub maps: &'a [MapSpec],
    /// The context description.
    pub context: Context,
    /// Verifier options.
    pub options: Options,
    /// For [`Context::Packet`]: the packet, which follows the context struct in the memory a run is
    /// given.
    pub packet: Option<&'a [u8]>,
    /// Whether map contents after a run are compared across engines and modes.
    pub compare_maps: bool,
}

impl<'a> Spec<'a> {
    /// A case with default everything: no maps, a buffer context, default options.
    pub fn new(name: &'a str, asm: &'a str) -> Spec<'a> {
        Spec {
            name,
            asm,
            targets: &[],
            maps: NO_MAPS,
            context: Context::Buffer,
            options: Options::default(),
            packet: None,
            compare_maps: true,
        }
    }

    /// With these maps.
    pub fn maps(mut self, maps: &'a [MapSpec]) -> Spec<'a> {
        self.maps = maps;
        self
    }

    /// With this context.
    pub fn context(mut self, context: Context) -> Spec<'a> {
        self.context = context;
        self
    }

    /// With these tail-call targets.
    pub fn targets(mut self, targets: &'a [&'a str]) -> Spec<'a> {
        self.targets = targets;
        self
    }

    /// With these verifier options.
    pub fn options(mut self, options: Options) -> Spec<'a> {
        self.options = options;
        self
    }

    /// With a packet-style context over `packet`.
    pub fn packet(mut self, context: Context, packet: &'a [u8]) -> Spec<'a> {
        self.context = context;
        self.packet = Some(packet);
        self
    }

    /// Without comparing map contents (for programs whose maps hold addresses).
    pub fn without_map_compare(mut self) -> Spec<'a> {
        self.compare_maps = false;
        self
    }

    fn program(&self, text: &str) -> Result<Program, String> {
        Program::from_asm(text).map_err(|e| format!("does not assemble: {e}"))
    }

    fn programs(&self) -> Result<(Program, Vec<Program>), String> {
        let entry = self.program(self.asm)?;
        let targets = self.targets.iter().map(|t| self.program(t)).collect::<Result<Vec<_>, _>>()?;
        Ok((entry, targets))
    }

    fn linked(&self) -> Result<Arc<Linked>, String> {
        let (entry, targets) = self.programs()?;
        let linked = Linked::new(entry, targets, env(self.maps, &self.context)?).map_err(|e| format!("link: {e}"))?;
        Ok(Arc::new(linked))
    }
}

/// The program text with the slot index of each instruction, for failure messages.
pub fn listing(text: &str) -> String {
    let mut out = String::new();
    let mut slot = 0;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        match slots_of(trimmed) {
            0 => out.push_str(&format!("        {trimmed}\n")),
            n => {
                out.push_str(&format!("  {slot:4}  {trimmed}\n"));
                slot += n;
            }
        }
    }
    out
}

/// Slots the instruction on this line of assembly takes (0 for labels, comments and blank lines).
fn slots_of(line: &str) -> usize {
    let mut code = line.split('#').next().unwrap_or("").trim();
    while let Some(colon) = code.find(':') {
        let label = code[..colon].trim();
        if label.is_empty() || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
            break;
        }
        code = code[colon + 1..].trim();
    }
    match code.split_whitespace().next() {
        None => 0,
        Some("lddw") => 2,
        Some(_) => 1,
    }
}

/// Slot index of the instruction on the first line marked `# <-`, if any.
fn marked_slot(text: &str) -> Option<usize> {
    let mut slot = 0;
    for line in text.lines() {
        if line.contains("# <-") {
            return Some(slot);
        }
        slot += slots_of(line);
    }
    None
}

/// Fails when some instruction of `program` cannot be reached from the entry: the verifier may report
/// that first, whatever else a case is about.
fn unreachable_code(program: &Program) -> Result<(), String> {
    let cfg = Cfg::new(program);
    for b in 0..cfg.block_count() {
        let block = cfg.block(b);
        if !cfg.reachable(b) || !cfg.function_reachable(block.function()) {
            return Err(format!("HARNESS: the instruction at slot {} is unreachable", block.start()));
        }
    }
    Ok(())
}

/// Checks that `spec` is refused with one of `expected` (pc and kind). Returns a description of
/// what is wrong.
pub fn check_reject(spec: &Spec<'_>, expected: &[(usize, Kind)]) -> Result<(), String> {
    let linked = spec.linked()?;
    let program = linked.entry_program().program();
    let Some(&(first_pc, _)) = expected.first() else {
        return Err("HARNESS: no expectation".into());
    };
    for &(pc, _) in expected {
        if program.index_of(pc).is_none() {
            return Err(format!("HARNESS: expected pc {pc} is not the first slot of an instruction"));
        }
    }
    match marked_slot(spec.asm) {
        Some(marked) if marked != first_pc => {
            return Err(format!("HARNESS: the line marked `# <-` is at slot {marked}, the case expects {first_pc}"))
        }
        _ => {}
    }
    if !expected.iter().any(|(_, k)| (k.test)(&VerifyErrorKind::Unreachable)) {
        unreachable_code(program)?;
    }
    let want = expected.iter().map(|(pc, k)| format!("pc {pc}: {}", k.desc)).collect::<Vec<_>>().join(" or ");
    let err = match Verifier::with_options(spec.options).verify(&linked) {
        Ok(_) => return Err(format!("accepted; expected {want}")),
        Err(e) => e,
    };
    if !expected.iter().any(|(pc, k)| err.pc == *pc && (k.test)(&err.kind)) {
        return Err(format!("refused with `{err}` [{:?} at pc {}]; expected {want}", err.kind, err.pc));
    }
    if err.program != linked.entry() {
        return Err(format!("refused in program {} (entry is {}): {err}", err.program, linked.entry()));
    }
    // The builder reports the same error.
    let (entry, targets) = spec.programs()?;
    let built = Vm::builder(entry)
        .env(env(spec.maps, &spec.context)?)
        .tail_call_targets(targets)
        .verifier_options(spec.options)
        .verified()
        .build();
    match built {
        Err(BuildError::Verify(e)) if e == err => Ok(()),
        Err(e) => Err(format!("the builder says `{e}`, the verifier `{err}`")),
        Ok(_) => Err(format!("the builder accepts what the verifier refuses with `{err}`")),
    }
}

/// What one execution left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    result: Result<u64, ExecError>,
    memory: Vec<u8>,
    maps: Vec<String>,
    packet: Option<Vec<u8>>,
}

/// The observable contents of the maps of `env`.
fn snapshot(env: &Env, specs: &[MapSpec]) -> Vec<String> {
    env.maps()
        .iter()
        .zip(specs)
        .map(|(m, spec)| match spec {
            MapSpec::Array { entries, .. } | MapSpec::ReadOnlyArray { entries, .. } => {
                format!("{:?}", (0..*entries).map(|i| m.get(&i.to_ne_bytes(), 0)).collect::<Vec<_>>())
            }
            MapSpec::Hash { .. } => {
                let all: BTreeMap<Vec<u8>, Option<Vec<u8>>> =
                    m.keys().into_iter().map(|k| (k.clone(), m.get(&k, 0))).collect();
                format!("{all:?}")
            }
            MapSpec::RingBuf { .. } => {
                format!("{:?}", m.downcast_ref::<RingBufMap>().map(RingBufMap::drain))
            }
            // Per-CPU values depend on the slot the execution ran in; program arrays and maps of maps
            // do not change.
            MapSpec::PerCpuArray { .. } | MapSpec::ProgArray { .. } | MapSpec::ArrayOfArrays { .. } => String::new(),
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Checked,
    Verified,
}

fn engines() -> Vec<Engine> {
    let mut all = vec![Engine::Interpreter];
    #[cfg(feature = "jit")]
    all.push(Engine::Jit);
    all
}

/// Runs `spec` once on `input` with a fresh environment.
fn run_one(spec: &Spec<'_>, engine: Engine, mode: Mode, input: &[u8]) -> Result<Outcome, String> {
    let (entry, targets) = spec.programs()?;
    let env = env(spec.maps, &spec.context)?;
    let mut memory = input.to_vec();
    let mut struct_size = None;
    if let (Context::Packet { size, data, data_end }, Some(bytes)) = (&spec.context, spec.packet) {
        // The memory holds the context struct and then the packet; the struct's data and data_end
        // fields hold the packet's start and end (the runtime may write them too, with the same values).
        let size = *size as usize;
        memory = vec![0u8; size];
        memory.extend_from_slice(bytes);
        let start = memory.as_ptr() as u64 + size as u64;
        let end = memory.as_ptr() as u64 + memory.len() as u64;
        for (field, value) in [(*data as usize, start), (*data_end as usize, end)] {
            if let Some(bytes) = memory.get_mut(field..field + 8) {
                bytes.copy_from_slice(&value.to_ne_bytes());
            }
        }
        struct_size = Some(size);
    }
    let builder = Vm::builder(entry).env(env).tail_call_targets(targets).engine(engine).verifier_options(spec.options);
    let builder = match mode {
        Mode::Checked => builder.checked(),
        Mode::Verified => builder.verified(),
    };
    let vm = builder.build().map_err(|e| format!("{engine:?} {mode:?}: build: {e}"))?;
    let result = vm.execute(&mut memory);
    let maps = if spec.compare_maps { snapshot(vm.env(), spec.maps) } else { Vec::new() };
    // The context struct holds addresses, which differ from run to run: only the packet is compared.
    let packet = struct_size.map(|size| memory.split_off(size));
    if packet.is_some() {
        memory.clear();
    }
    Ok(Outcome { result, memory, maps, packet })
}

/// Checks that `spec` is proven safe and runs alike verified and checked on both engines, on every
/// input, and, with `want`, that the results (r0) on the inputs are those.
pub fn check_accept(spec: &Spec<'_>, inputs: &[&[u8]], want: Option<&[u64]>) -> Result<(), String> {
    let linked = spec.linked()?;
    for program in linked.programs() {
        unreachable_code(program.program())?;
    }
    let mut first: Vec<Outcome> = Vec::new();
    // Checked runs first: they show whether the case itself is safe on these inputs and returns what
    // it should.
    for engine in engines() {
        for (i, input) in inputs.iter().enumerate() {
            let out = run_one(spec, engine, Mode::Checked, input)?;
            if let Err(e) = &out.result {
                return Err(format!("HARNESS: the checked run fails on input {i} ({engine:?}): {e}"));
            }
            match first.get(i) {
                None => first.push(out),
                Some(f) if *f == out => {}
                Some(f) => return Err(format!("HARNESS: checked runs differ on input {i}: {f:?} vs {out:?}")),
            }
        }
    }
    let results: Vec<u64> = first.iter().filter_map(|out| out.result.clone().ok()).collect();
    if let Some(want) = want {
        if results != want {
            return Err(format!("HARNESS: the checked runs return {results:?}, the case expects {want:?}"));
        }
    }
    if let Err(e) = Verifier::with_options(spec.options).verify(&linked) {
        return Err(format!("refused: {e} [{:?} at pc {}]", e.kind, e.pc));
    }
    for engine in engines() {
        for (i, input) in inputs.iter().enumerate() {
            let out = run_one(spec, engine, Mode::Verified, input)?;
            if out != first[i] {
                return Err(format!(
                    "{engine:?} verified differs from checked on input {i}: {out:?} vs {:?}",
                    first[i]
                ));
            }
        }
    }
    Ok(())
}

/// Asserts that the program is refused at `pc` with an error `kind` describes.
pub fn reject(name: &str, asm: &str, maps: &[MapSpec], context: Context, pc: usize, kind: Kind) {
    let spec = Spec::new(name, asm).maps(maps).context(context);
    if let Err(e) = check_reject(&spec, &[(pc, kind)]) {
        panic!("{name}: {e}\n{}", listing(asm));
    }
}

/// Asserts that the program is accepted and runs alike in every engine and mode on `inputs`.
pub fn accept(name: &str, asm: &str, maps: &[MapSpec], context: Context, inputs: &[&[u8]]) {
    let spec = Spec::new(name, asm).maps(maps).context(context);
    if let Err(e) = check_accept(&spec, inputs, None) {
        panic!("{name}: {e}\n{}", listing(asm));
    }
}

/// A table of cases: counts them, collects failures, and checks the count at the end.
pub struct Table {
    name: &'static str,
    cases: usize,
    names: HashSet<String>,
    programs: HashSet<String>,
    failures: Vec<String>,
}

impl Table {
    /// An empty table.
    pub fn new(name: &'static str) -> Table {
        Table { name, cases: 0, names: HashSet::new(), programs: HashSet::new(), failures: Vec::new() }
    }

    fn register(&mut self, spec: &Spec<'_>) {
        self.cases += 1;
        if !self.names.insert(spec.name.to_string()) {
            self.failures.push(format!("HARNESS: case name `{}` is used twice", spec.name));
        }
        let key = format!("{}|{:?}|{:?}|{:?}", normalise(spec.asm), spec.maps, spec.context, spec.targets);
        if !self.programs.insert(key) {
            self.failures.push(format!("HARNESS: case `{}` repeats an earlier program", spec.name));
        }
    }

    fn record(&mut self, spec: &Spec<'_>, outcome: Result<(), String>) {
        if let Err(e) = outcome {
            let mut text = listing(spec.asm);
            for (i, t) in spec.targets.iter().enumerate() {
                text.push_str(&format!("  target {i}:\n{}", listing(t)));
            }
            self.failures.push(format!("{}: {e}\n{text}", spec.name));
        }
    }

    /// A program that must be refused at `pc` with `kind`.
    pub fn reject(&mut self, name: &str, asm: &str, maps: &[MapSpec], context: Context, pc: usize, kind: Kind) {
        self.reject_spec(Spec::new(name, asm).maps(maps).context(context), &[(pc, kind)]);
    }

    /// A program with the buffer context and no maps that must be refused at `pc` with `kind`.
    pub fn reject_plain(&mut self, name: &str, asm: &str, pc: usize, kind: Kind) {
        self.reject(name, asm, NO_MAPS, Context::Buffer, pc, kind);
    }

    /// A case that must be refused with one of `expected`.
    pub fn reject_spec(&mut self, spec: Spec<'_>, expected: &[(usize, Kind)]) {
        self.register(&spec);
        let outcome = check_reject(&spec, expected);
        self.record(&spec, outcome);
    }

    /// A program that must be accepted, and run alike everywhere on `inputs`.
    pub fn accept(&mut self, name: &str, asm: &str, maps: &[MapSpec], context: Context, inputs: &[&[u8]]) {
        self.accept_spec(Spec::new(name, asm).maps(maps).context(context), inputs, None);
    }

    /// A program with the buffer context and no maps that must be accepted and return `want` on
    /// `input`.
    pub fn accept_returns(&mut self, name: &str, asm: &str, input: &[u8], want: u64) {
        self.accept_spec(Spec::new(name, asm), &[input], Some(&[want]));
    }

    /// A case that must be accepted; with `want`, the results on `inputs` must be those.
    pub fn accept_spec(&mut self, spec: Spec<'_>, inputs: &[&[u8]], want: Option<&[u64]>) {
        self.register(&spec);
        let outcome = check_accept(&spec, inputs, want);
        self.record(&spec, outcome);
    }

    /// Asserts that `expected` cases ran and none failed; prints the count.
    pub fn finish(mut self, expected: usize) {
        println!("{}: {} cases", self.name, self.cases);
        if self.cases != expected {
            self.failures.push(format!("HARNESS: {} cases ran, the table expects {expected}", self.cases));
        }
        assert!(
            self.failures.is_empty(),
            "{}: {} of {} cases failed:\n\n{}",
            self.name,
            self.failures.len(),
            self.cases,
            self.failures.join("\n")
        );
    }
}

/// The program text without comments, labels' spacing or blank lines, to spot repeated cases.
fn normalise(text: &str) -> String {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}
