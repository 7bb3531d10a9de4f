//! Time to verify: this crate's verifier and PREVAIL (the `prevail` crate, the Rust port of the
//! PREVAIL abstract-interpretation verifier) side by side in the same run, on
//!
//! - every program of the clang-compiled objects of `benches/programs/`, `tests/fixtures/` and
//!   `tests/fixtures/verifier/`;
//! - synthetic programs made here: straight-line code of 1k to 32k instructions (ALU, stack stores
//!   and loads, input reads each behind its own length guard), programs of the same sizes made of
//!   N/16 small bounded loops in sequence, and a 2048 x 256 loop nest, whose cost must not depend on
//!   its trip count.
//!
//! After the criterion run it prints a table per program: instructions, each verifier's verdict and
//! median time, microseconds per instruction, and PREVAIL's time over ours. The medians are read
//! back from criterion's `estimates.json` files of this run.
//!
//! `cargo bench -p ebpf-vm-bench --bench verify -- --warm-up-time 1 --measurement-time 3`.
//! `-- --summary [FILTER]` skips criterion and prints the table from medians of a few timed runs of
//! its own, for the programs whose name contains FILTER only (others are not even prepared).
//!
//! What is timed. Ours: [`Verifier::verify`] of a [`Linked`] built once (one program, no tail-call
//! targets: each program of an object is its own case). PREVAIL: from the raw instructions its ELF
//! loader (or, for synthetic programs, this file) produced once, its whole analysis pipeline:
//! `unmarshal` (decoding to its IR), `Program::from_sequence` (CFG, assertions) and
//! `fwd_analyzer::analyze_with_entry` (the fixpoint and checks); as `prevail-fixpoint`, the last
//! step alone, on the program prepared once. The ELF parsing is outside both verifiers' timings, and
//! PREVAIL is run on synthetic programs of at most [`PREVAIL_MAX_INSNS`] instructions only.
//!
//! The same question to both. PREVAIL's default entry state has `r1` point to a kernel context
//! struct (`__sk_buff` for `SEC("socket")`) and `r2` uninitialised, while these programs get what
//! ebpf-vm's contexts describe: `r1` the input and `r2` its length. PREVAIL is therefore given an
//! entry invariant that says so in its own terms: `r1` a packet pointer at offset 0, `r2` a number
//! equal to the packet's size (bounded by PREVAIL's `max_packet_size`, 65535 by default, where
//! ebpf-vm allows up to 2^32 - 1), and for the fixed 4096-byte context of the benchmark programs,
//! a packet size of exactly 4096. For ebpf-vm's packet-style context (`r1` a struct holding the
//! packet's start and end) PREVAIL has a model of its own: a context descriptor with the same
//! size and field offsets. Our verifier always proves termination, so PREVAIL runs with
//! `check_for_termination`; a program it refuses with that but accepts without is timed without,
//! and the table says so. A program PREVAIL refuses or cannot load is recorded and left out of its
//! timings only.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use ebpf_vm::link::Linked;
use ebpf_vm::verifier::Stats;
use ebpf_vm::{elf::Object, Context, Env, Instance, Program, Verifier};
use ebpf_vm_bench::medians;

use prevail::crab::ebpf_domain::DomainContext;
use prevail::crab::string_constraints::StringInvariant;
use prevail::crab::var_registry::VariableRegistry;
use prevail::elf_loader::ElfObject;
use prevail::fwd_analyzer;
use prevail::ir::program::Program as PrevailProgram;
use prevail::ir::unmarshal;
use prevail::linux::linux_platform::LinuxPlatform;
use prevail::platform::EbpfPlatform;
use prevail::spec::config::EbpfVerifierOptions;
use prevail::spec::ebpf_base::EbpfCtxDescriptor;
use prevail::spec::type_descriptors::ProgramInfo;
use prevail::spec::vm_isa::EbpfInst;

/// Sizes of the synthetic programs, in instructions.
const SIZES: &[usize] = &[1 << 10, 2 << 10, 4 << 10, 8 << 10, 16 << 10, 32 << 10];

/// Trip counts of the loop nest: outer, inner.
const NEST: (u64, u64) = (2048, 256);

/// The largest synthetic program PREVAIL is run on. `Program::from_sequence` (in
/// `pass_compute_callback_metadata`) searches the CFG from every instruction, so its preparation
/// grows with the square of the size: about 10 s at 1024 instructions and 40 s at 2048 here, hours
/// at 32k.
const PREVAIL_MAX_INSNS: usize = 1024;

/// Criterion's group for every case.
const GROUP: &str = "verify";

/// One program to verify, with what each verifier needs, prepared once.
struct Case {
    /// `programs/NAME`, `fixtures/OBJECT:NAME`, `straight/N`, `loops/N` or `nest/2048x256`.
    name: String,
    /// Instructions (a 16-byte `lddw` counts once).
    insns: usize,
    /// What our verifier is given.
    linked: Arc<Linked>,
    /// Our verdict and statistics, from one verification before timing.
    ours: Result<Stats, String>,
    /// PREVAIL's job, or why it cannot be run.
    prevail: Result<PrevailJob, String>,
    /// A remark for the table (loop counts of synthetic programs).
    note: String,
}

/// PREVAIL's input for one program: the raw instructions and program description, the platform,
/// the options and the entry invariant; and, once it has accepted the program, the program in its
/// IR with its CFG, for timing the fixpoint alone.
struct PrevailJob {
    insts: Vec<EbpfInst>,
    info: ProgramInfo,
    platform: LinuxPlatform,
    options: EbpfVerifierOptions,
    entry: StringInvariant,
    /// The output of [`PrevailJob::prepare`], kept from the run that accepted the program.
    prepared: Option<(PrevailProgram, ProgramInfo)>,
    /// Why PREVAIL refused the program with the termination check, when it is run without.
    refused_with_termination: Option<String>,
}

impl PrevailJob {
    /// A job for `insts`, whose program description and map descriptors are in `info`, with the
    /// entry state of ebpf-vm's `context`, checking termination or not.
    fn new(insts: Vec<EbpfInst>, mut info: ProgramInfo, context: &Context, termination: bool) -> PrevailJob {
        // Source lines matter only to PREVAIL's printing; dropping them keeps the per-run clone of
        // `info` (which `from_sequence` writes to) small.
        info.line_info.clear();
        let buffer = [
            "r1.type=packet",
            "r1.packet_offset=0",
            "r2.type=number",
            "r2.svalue=packet_size",
            "r2.uvalue=packet_size",
        ];
        let entry: Vec<String> = match *context {
            Context::Buffer => buffer.iter().map(|s| s.to_string()).collect(),
            Context::Fixed { size, .. } => {
                buffer.iter().map(|s| s.to_string()).chain([format!("packet_size={size}")]).collect()
            }
            Context::Packet { size, data, data_end } => {
                // PREVAIL's own model of it: `r1` a context struct whose fields at `data` and
                // `data_end` load as packet pointers (8 bytes wide, as they are 8 bytes apart).
                let descriptor =
                    EbpfCtxDescriptor { size: size as i32, data: data as i32, end: data_end as i32, meta: -1 };
                info.program_type.ctx_descriptor = Some(Box::leak(Box::new(descriptor)));
                ["r1.type=ctx", "r1.ctx_offset=0", "r2.type=number"].iter().map(|s| s.to_string()).collect()
            }
            ref other => panic!("no PREVAIL entry state for {other:?}"),
        };
        let mut platform = LinuxPlatform::new();
        platform.map_descriptors = info.map_descriptors.clone();
        platform.set_program_type(&info.program_type);
        let mut options = EbpfVerifierOptions { mock_map_fds: true, ..EbpfVerifierOptions::default() };
        options.runtime.check_for_termination = termination;
        let entry = StringInvariant::from_set(entry.into_iter().collect());
        PrevailJob { insts, info, platform, options, entry, prepared: None, refused_with_termination: None }
    }

    /// PREVAIL's preparation: decoding to its IR (`unmarshal`), then the CFG, inlined calls, loop
    /// counters and the assertions each instruction must satisfy (`Program::from_sequence`).
    fn prepare(&self) -> Result<(PrevailProgram, ProgramInfo), String> {
        let mut notes = Vec::new();
        let seq = unmarshal::unmarshal(&self.insts, &mut notes, &self.info, &self.platform, &self.options)
            .map_err(|e| format!("unmarshal: {e}"))?;
        let mut info = self.info.clone();
        let program = PrevailProgram::from_sequence(&seq, &mut info, &self.platform, &self.options)
            .map_err(|e| format!("control flow: {e}"))?;
        Ok((program, info))
    }

    /// PREVAIL's fixpoint and checks on a prepared program.
    fn analyze(&self, program: &PrevailProgram, info: &ProgramInfo) -> Result<(), String> {
        let ctx = DomainContext {
            program_info: info,
            program,
            runtime: &self.options.runtime,
            options: &self.options,
            platform: &self.platform,
        };
        let mut registry = VariableRegistry::new();
        let result = fwd_analyzer::analyze_with_entry(program, &self.entry, &ctx, &mut registry);
        match result.failed {
            false => Ok(()),
            true => Err(result.find_first_error().map_or_else(|| "refused".to_string(), |e| e.to_string())),
        }
    }

    /// PREVAIL's whole analysis, from raw instructions to verdict: what `prevail` times.
    fn run(&self) -> Result<(), String> {
        let (program, info) = self.prepare()?;
        self.analyze(&program, &info)
    }

    /// The fixpoint alone, on the program prepared once: what `prevail-fixpoint` times.
    fn run_fixpoint(&self) -> Result<(), String> {
        let (program, info) = self.prepared.as_ref().expect("an accepted job keeps its prepared program");
        self.analyze(program, info)
    }

    /// Whether termination is checked.
    fn termination(&self) -> bool {
        self.options.runtime.check_for_termination
    }
}

/// Runs `job` once, keeping its prepared program when PREVAIL accepts it; a panic is an error.
fn try_prevail(job: &mut PrevailJob) -> Result<(), String> {
    let prepared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let (program, info) = job.prepare()?;
        job.analyze(&program, &info).map(|()| (program, info))
    }))
    .unwrap_or_else(|_| Err("PREVAIL panicked".to_string()))?;
    job.prepared = Some(prepared);
    Ok(())
}

/// The job for a program that PREVAIL accepts with termination checked, or else without; an error
/// saying why when it accepts it neither way.
fn accepted_job(make: impl Fn(bool) -> PrevailJob) -> Result<PrevailJob, String> {
    let mut job = make(true);
    let Err(with) = try_prevail(&mut job) else { return Ok(job) };
    let mut job = make(false);
    match try_prevail(&mut job) {
        Ok(()) => {
            job.refused_with_termination = Some(with);
            Ok(job)
        }
        Err(without) if without == with => Err(with),
        Err(without) => Err(format!("{with} (without the termination check: {without})")),
    }
}

/// PREVAIL's instruction records for our program's bytecode.
fn prevail_insts(program: &Program) -> Vec<EbpfInst> {
    program
        .to_bytes()
        .chunks_exact(8)
        .map(|b| EbpfInst {
            opcode: b[0],
            dst_src: b[1],
            offset: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        })
        .collect()
}

/// Verifies with our verifier once, for the verdict.
fn our_verdict(linked: &Arc<Linked>) -> Result<Stats, String> {
    Verifier::new().verify(linked).map(|v| v.stats()).map_err(|e| e.to_string())
}

/// A case for every program of the objects in `dir` whose name `keep` accepts, verified against
/// `context(file stem)`.
fn object_cases(dir: &Path, label: &str, context: &dyn Fn(&str) -> Context, keep: &dyn Fn(&str) -> bool) -> Vec<Case> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "o"))
        .collect();
    paths.sort();
    let mut cases = Vec::new();
    for path in paths {
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let object = Object::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let instance = Instance::new(&object).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let stem = path.file_stem().expect("file name").to_string_lossy().into_owned();
        let context = &context(&stem);
        let path_str = path.to_string_lossy().into_owned();
        for p in instance.programs() {
            let mut env: Env = instance.env();
            env.set_context(context.clone());
            let linked = Arc::new(Linked::new(p.program.clone(), Vec::new(), env).expect("links"));
            let name = if p.name == stem { format!("{label}/{stem}") } else { format!("{label}/{stem}:{}", p.name) };
            if !keep(&name) {
                continue;
            }
            // PREVAIL loads the same file with its own ELF loader, one program by section and name.
            let raw = ElfObject::new(&path_str, EbpfVerifierOptions { mock_map_fds: true, ..Default::default() })
                .and_then(|mut elf| elf.get_programs(&p.section, &p.name, &mut LinuxPlatform::new()))
                .map_err(|e| format!("load: {e}"))
                .and_then(|mut raw| match raw.len() {
                    1 => Ok(raw.remove(0)),
                    n => Err(format!("load: {n} programs named {}", p.name)),
                });
            let prevail = raw.and_then(|raw| {
                accepted_job(|termination| PrevailJob::new(raw.prog.clone(), raw.info.clone(), context, termination))
            });
            let case = Case {
                name,
                insns: p.program.instructions().len(),
                ours: our_verdict(&linked),
                linked,
                prevail,
                note: String::new(),
            };
            progress(&case);
            cases.push(case);
        }
    }
    cases
}

/// A case for assembly text made here, verified against a buffer context (`r1` the input, `r2`
/// its length), as PREVAIL sees it through a program of type `socket`. With `skip`, PREVAIL is not
/// run, for that reason.
fn synthetic_case(name: String, text: &str, note: String, skip: Option<String>) -> Case {
    let program = Program::from_asm(text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut env = Env::new();
    env.add_standard_helpers();
    let linked = Arc::new(Linked::new(program.clone(), Vec::new(), env).expect("links"));
    let platform = LinuxPlatform::new();
    let info = ProgramInfo { program_type: platform.get_program_type("socket", ""), ..ProgramInfo::default() };
    let insts = prevail_insts(&program);
    let prevail = match skip {
        Some(reason) => Err(reason),
        None => accepted_job(|termination| PrevailJob::new(insts.clone(), info.clone(), &Context::Buffer, termination)),
    };
    Case { name, insns: program.instructions().len(), ours: our_verdict(&linked), linked, prevail, note }
}

/// The cases of one family of synthetic programs, one per size. PREVAIL is run on those of at
/// most [`PREVAIL_MAX_INSNS`] instructions.
fn family(kind: &str, keep: &dyn Fn(&str) -> bool, make: impl Fn(usize) -> (String, String)) -> Vec<Case> {
    let mut out = Vec::new();
    for &n in SIZES {
        let name = format!("{kind}/{n}");
        if !keep(&name) {
            continue;
        }
        let (text, note) = make(n);
        let skip = (n > PREVAIL_MAX_INSNS).then(|| {
            format!("not run above {PREVAIL_MAX_INSNS} instructions (its CFG preparation grows quadratically)")
        });
        let case = synthetic_case(name, &text, note, skip);
        progress(&case);
        out.push(case);
    }
    out
}

/// Prints how a case was prepared to stderr.
fn progress(case: &Case) {
    let ours = match &case.ours {
        Ok(stats) => format!("verified ({} processed)", stats.processed),
        Err(e) => format!("refused: {e}"),
    };
    let theirs = match &case.prevail {
        Ok(job) if job.termination() => "accepted".to_string(),
        Ok(_) => "accepted without the termination check".to_string(),
        Err(e) => e.clone(),
    };
    eprintln!("{}: ebpf-vm {ours}; prevail {theirs}", case.name);
}

/// Instructions before the synthetic programs' bodies: `r6` the input, `r7` its length, `r0` zero,
/// and 16 stack slots written, so that any of them may be read.
fn prologue(out: &mut String) -> usize {
    out.push_str("mov %r6, %r1\nmov %r7, %r2\nmov %r0, 0\n");
    for slot in 1..=16 {
        writeln!(out, "stdw [%r10-{}], 0", slot * 8).unwrap();
    }
    3 + 16
}

/// Stack offset of slot `k` (of 16).
fn slot(k: usize) -> usize {
    8 * (k % 16 + 1)
}

/// Pads `out` to `n` instructions with ALU instructions and an `exit`, `used` being there already.
fn pad_and_exit(out: &mut String, used: usize, n: usize) {
    for k in used..n - 1 {
        writeln!(out, "add %r0, {}", k % 97).unwrap();
    }
    out.push_str("exit\n");
}

/// Straight-line code of `n` instructions: blocks of 16 (ALU, a stack store and a load, and an input
/// byte read behind its own length guard, whose two paths meet after it).
fn straight_line(n: usize) -> (String, usize) {
    let mut s = String::new();
    let mut used = prologue(&mut s);
    let mut blocks = 0;
    while used + 16 < n {
        let k = blocks;
        let off = (k * 37) % 512;
        write!(
            s,
            "mov %r3, %r0
add %r3, {imm}
xor %r0, %r3
lsh %r3, 3
stxdw [%r10-{st}], %r3
ldxdw %r4, [%r10-{ld}]
add %r0, %r4
jle %r7, {off}, g{k}
ldxb %r5, [%r6+{off}]
add %r0, %r5
g{k}:
rsh %r3, 1
sub %r0, %r3
and %r4, 0xffff
or %r0, %r4
mov32 %r8, %r0
add %r0, %r8
",
            imm = k * 7 + 1,
            st = slot(k),
            ld = slot(k + 5),
        )
        .unwrap();
        used += 16;
        blocks += 1;
    }
    pad_and_exit(&mut s, used, n);
    (s, blocks)
}

/// `n` instructions made of small loops in sequence, 16 instructions each (a counter, ALU, a stack
/// store and load, a guarded input read; 8 iterations).
fn loops(n: usize) -> (String, usize) {
    let mut s = String::new();
    let mut used = prologue(&mut s);
    let mut count = 0;
    while used + 16 < n {
        let k = count;
        let off = (k * 53) % 512;
        write!(
            s,
            "mov %r3, 0
l{k}:
mov %r4, %r3
mul %r4, {m}
add %r0, %r4
stxdw [%r10-{st}], %r0
ldxdw %r5, [%r10-{ld}]
xor %r0, %r5
jle %r7, {off}, s{k}
ldxb %r5, [%r6+{off}]
add %r0, %r5
s{k}:
rsh %r4, 1
sub %r0, %r4
add %r3, 1
jlt %r3, 8, l{k}
mov %r8, %r0
and %r8, 0xff
",
            m = k % 13 + 3,
            st = slot(k),
            ld = slot(k + 3),
        )
        .unwrap();
        used += 16;
        count += 1;
    }
    pad_and_exit(&mut s, used, n);
    (s, count)
}

/// A loop nest running its body `outer * inner` times: ALU, a stack round trip and a guarded input
/// read in the inner loop.
fn nest(outer: u64, inner: u64) -> String {
    let mut s = String::new();
    prologue(&mut s);
    write!(
        s,
        "mov %r8, 0
outer:
mov %r9, 0
inner:
mov %r3, %r8
mul %r3, %r9
add %r0, %r3
stxdw [%r10-8], %r0
ldxdw %r4, [%r10-16]
xor %r0, %r4
mov %r5, %r9
jle %r7, %r5, skip
add %r5, %r6
ldxb %r5, [%r5]
add %r0, %r5
skip:
add %r9, 1
jlt %r9, {inner}, inner
add %r8, 1
jlt %r8, {outer}, outer
exit
"
    )
    .unwrap();
    s
}

/// Every case whose name `keep` accepts: objects, then synthetic programs.
fn cases(keep: &dyn Fn(&str) -> bool) -> Vec<Case> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cases = object_cases(&root.join("benches/programs"), "programs", &|_| Context::fixed(4096), keep);
    cases.extend(object_cases(&root.join("../tests/fixtures"), "fixtures", &|_| Context::Buffer, keep));
    // The contexts `tests/verifier_fixtures.rs` gives them: two packet-style programs, buffers else.
    let verifier_context = |stem: &str| match stem {
        "eth_packet" | "tcp_options" => Context::Packet { size: 16, data: 0, data_end: 8 },
        _ => Context::Buffer,
    };
    cases.extend(object_cases(&root.join("../tests/fixtures/verifier"), "verifier", &verifier_context, keep));
    cases.extend(family("straight", keep, |n| {
        let (text, blocks) = straight_line(n);
        (text, format!("{blocks} guarded reads"))
    }));
    cases.extend(family("loops", keep, |n| {
        let (text, count) = loops(n);
        (text, format!("{count} loops"))
    }));
    let (outer, inner) = NEST;
    let name = format!("nest/{outer}x{inner}");
    if keep(&name) {
        let nest = synthetic_case(name, &nest(outer, inner), format!("{} iterations", outer * inner), None);
        progress(&nest);
        cases.push(nest);
    }
    cases
}

/// Sampling for a case whose one run took `once`: fewer, flat samples for slow ones, so that a run
/// stays within a few times the measurement time.
fn sampling(once: Duration) -> (usize, SamplingMode) {
    match once.as_secs_f64() {
        t if t > 0.05 => (10, SamplingMode::Flat),
        t if t > 0.002 => (20, SamplingMode::Auto),
        _ => (50, SamplingMode::Auto),
    }
}

/// Times one run of `f`.
fn time_once<T>(f: impl FnOnce() -> T) -> Duration {
    let start = Instant::now();
    std::hint::black_box(f());
    start.elapsed()
}

fn bench(c: &mut Criterion, cases: &[Case]) {
    let mut g = c.benchmark_group(GROUP);
    let verifier = Verifier::new();
    for case in cases {
        g.throughput(Throughput::Elements(case.insns as u64));
        let (size, mode) = sampling(time_once(|| verifier.verify(&case.linked)));
        g.sample_size(size).sampling_mode(mode);
        g.bench_function(BenchmarkId::new("ebpf-vm", &case.name), |b| b.iter(|| verifier.verify(&case.linked)));
        if let Ok(job) = &case.prevail {
            let (size, mode) = sampling(time_once(|| job.run()));
            g.sample_size(size).sampling_mode(mode);
            g.bench_function(BenchmarkId::new("prevail", &case.name), |b| b.iter(|| job.run()));
            let (size, mode) = sampling(time_once(|| job.run_fixpoint()));
            g.sample_size(size).sampling_mode(mode);
            g.bench_function(BenchmarkId::new("prevail-fixpoint", &case.name), |b| b.iter(|| job.run_fixpoint()));
        }
    }
    g.finish();
}

/// Median of `runs` timed runs of `f`, in microseconds (for `--summary` without criterion).
fn quick_median(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..runs).map(|_| time_once(&mut f).as_secs_f64() * 1e6).collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

/// The summary table, with times from `time(case, id)` (microseconds, if measured; `id` is
/// `ebpf-vm`, `prevail` or `prevail-fixpoint`).
fn summary(cases: &[Case], time: impl Fn(&Case, &str) -> Option<f64>) -> String {
    let mut t = String::new();
    let fmt = |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |v| format!("{v:.prec$}"));
    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map_or("-".to_string(), |(a, b)| format!("{:.0}x", b / a));
    writeln!(
        t,
        "{:<38} {:>6} {:>9} {:>5} {:>10} {:>8} {:>12} {:>9} {:>11} {:>8} {:>8}  notes",
        "program",
        "insns",
        "processed",
        "loops",
        "ebpf-vm µs",
        "µs/insn",
        "prevail µs",
        "µs/insn",
        "fixpoint µs",
        "ratio",
        "ratio fp"
    )
    .unwrap();
    let mut remarks = Vec::new();
    for case in cases {
        let ours = time(case, "ebpf-vm");
        let accepted = case.prevail.is_ok();
        let theirs = time(case, "prevail").filter(|_| accepted);
        let fixpoint = time(case, "prevail-fixpoint").filter(|_| accepted);
        let per = |v: Option<f64>| v.map(|v| v / case.insns as f64);
        let (processed, loops) = match &case.ours {
            Ok(stats) => (stats.processed.to_string(), stats.loops.to_string()),
            Err(e) => {
                remarks.push(format!("{}: ebpf-vm refuses it: {e}", case.name));
                ("refused".to_string(), "-".to_string())
            }
        };
        let mut notes = case.note.clone();
        match &case.prevail {
            Ok(job) if !job.termination() => {
                notes.push_str(" prevail: no termination check");
                let why = job.refused_with_termination.as_deref().unwrap_or("");
                remarks.push(format!("{}: PREVAIL with the termination check: {why}", case.name));
            }
            Ok(_) => {}
            Err(e) => {
                notes.push_str(" prevail: -");
                remarks.push(format!("{}: PREVAIL: {e}", case.name));
            }
        }
        writeln!(
            t,
            "{:<38} {:>6} {:>9} {:>5} {:>10} {:>8} {:>12} {:>9} {:>11} {:>8} {:>8}  {}",
            case.name,
            case.insns,
            processed,
            loops,
            fmt(ours, 1),
            fmt(per(ours), 3),
            fmt(theirs, 0),
            fmt(per(theirs), 1),
            fmt(fixpoint, 0),
            ratio(ours, theirs),
            ratio(ours, fixpoint),
            notes.trim()
        )
        .unwrap();
    }
    t.push_str(
        "\nMedians. prevail = PREVAIL's whole analysis from raw instructions; fixpoint = its fixpoint alone on a \
         program prepared once;\nratio = prevail over ebpf-vm, ratio fp = fixpoint over ebpf-vm. processed and loops \
         are ebpf-vm's statistics (instruction visits, loops proven to end).\n",
    );
    for r in remarks {
        writeln!(t, "{r}").unwrap();
    }
    t
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = args.iter().position(|a| a == "--summary") {
        // `--summary [FILTER]`: only the programs whose name contains FILTER.
        let filter = args.get(at + 1).filter(|f| !f.starts_with('-')).cloned().unwrap_or_default();
        let cases = cases(&|name| name.contains(&filter));
        let verifier = Verifier::new();
        let mut times = BTreeMap::new();
        for case in &cases {
            let runs = if time_once(|| verifier.verify(&case.linked)) > Duration::from_millis(50) { 3 } else { 21 };
            times.insert(
                (case.name.clone(), "ebpf-vm"),
                quick_median(runs, || {
                    let _ = verifier.verify(&case.linked);
                }),
            );
            if let Ok(job) = &case.prevail {
                let runs = if time_once(|| job.run()) > Duration::from_millis(50) { 3 } else { 21 };
                times.insert(
                    (case.name.clone(), "prevail"),
                    quick_median(runs, || {
                        let _ = job.run();
                    }),
                );
                times.insert(
                    (case.name.clone(), "prevail-fixpoint"),
                    quick_median(runs, || {
                        let _ = job.run_fixpoint();
                    }),
                );
            }
        }
        print!("{}", summary(&cases, |case, who| times.get(&(case.name.clone(), who)).copied()));
        return;
    }
    let cases = cases(&|_| true);
    let dir = medians::criterion_dir();
    let since = SystemTime::now();
    let mut c = Criterion::default().output_directory(&dir).configure_from_args();
    bench(&mut c, &cases);
    c.final_summary();
    let medians = medians::read(&dir, GROUP, since);
    println!();
    print!("{}", summary(&cases, |case, who| medians.get(&format!("{GROUP}/{who}/{}", case.name)).copied()));
}
