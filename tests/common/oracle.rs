//! Running a generated [`Scenario`] on an engine, and what the host sees afterwards: each run's result,
//! the input, the ring buffer's records and every map's contents. Two engines must see the same.
//! Shared by the property tests and the fuzz targets.
#![allow(dead_code)]

use std::sync::Arc;

use super::gen::{self, Scenario, ECHO};
use ebpf_vm::maps::{self, MapType, ProgArrayMap, RingBufMap};
use ebpf_vm::{Engine, Env, ExecError, Helper, HelperError, HelperSig, Uninit, Vm};

/// An execution error without the addresses in it (stacks and maps lie elsewhere on each engine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    OutOfBounds { pc: usize, len: u64, write: bool },
    MisalignedAtomic { pc: usize },
    Budget { pc: usize },
    CallDepth { pc: usize },
    UnknownHelper { pc: usize, id: u64 },
    Helper { pc: usize, id: u32, what: String },
    ContextSize { len: usize },
    UninitRead { pc: usize, what: Uninit },
}

impl Failure {
    pub fn of(e: ExecError) -> Failure {
        match e {
            ExecError::OutOfBounds { pc, len, write, .. } => Failure::OutOfBounds { pc, len, write },
            ExecError::MisalignedAtomic { pc, .. } => Failure::MisalignedAtomic { pc },
            ExecError::BudgetExhausted { pc } => Failure::Budget { pc },
            ExecError::CallDepthExceeded { pc } => Failure::CallDepth { pc },
            ExecError::UnknownHelper { pc, id } => Failure::UnknownHelper { pc, id },
            ExecError::Helper { pc, id, source } => {
                let what = match source {
                    HelperError::OutOfBounds { len, .. } => format!("out of bounds, {len} bytes"),
                    other => other.to_string(),
                };
                Failure::Helper { pc, id, what }
            }
            ExecError::ContextSize { len } => Failure::ContextSize { len },
            ExecError::UninitRead { pc, what } => Failure::UninitRead { pc, what },
        }
    }
}

/// What the host sees after each run of a scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub result: Result<u64, Failure>,
    /// The input buffer after the run.
    pub input: Vec<u8>,
    /// The ring buffer's records, consumed after the run.
    pub records: Vec<Vec<u8>>,
    /// Every entry of every map with keys and values, per CPU slot, after the run.
    pub dump: Vec<(usize, usize, Vec<u8>, Vec<u8>)>,
}

/// A fresh environment for generated programs: the maps of [`gen::maps`], the standard helpers, the echo
/// helper, and a print sink that drops its lines.
pub fn env(scenario: &Scenario) -> Env {
    let mut env = Env::new();
    env.add_standard_helpers();
    env.add_helper(Helper::new(ECHO, "echo", HelperSig::scalars(1), |_, a| Ok(a[0].rotate_left(7))));
    env.set_print_sink(Arc::new(|_| {}));
    for def in gen::maps() {
        env.add_map(maps::create(def).expect("the generated maps fit the default budget"));
    }
    let progs = env.map(gen::map::PROGS as u32).and_then(|m| m.downcast_ref::<ProgArrayMap>()).expect("program array");
    for &(index, id) in &scenario.prog_array {
        progs.set(index, id).expect("in range");
    }
    env
}

/// Builds the scenario's entry program for `engine` (checked mode, with `budget` if given).
pub fn vm(scenario: &Scenario, env: &Env, engine: Engine, budget: Option<u64>) -> Vm {
    let mut b = Vm::builder(scenario.programs[0].clone())
        .env(env.clone())
        .tail_call_targets(scenario.programs.clone())
        .engine(engine)
        .checked();
    if let Some(n) = budget {
        b = b.budget(n);
    }
    b.build()
        .unwrap_or_else(|e| panic!("a generated program does not build: {e}\n{}", scenario.programs[0].disassemble()))
}

/// Every entry of every map (but the ring buffer and program array), per CPU slot.
pub fn dump(env: &Env) -> Vec<(usize, usize, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for (i, m) in env.maps().iter().enumerate() {
        if matches!(m.def().map_type, MapType::RingBuf | MapType::ProgArray) {
            continue;
        }
        for key in m.keys() {
            for cpu in 0..m.cpus() {
                if let Some(v) = m.get(&key, cpu) {
                    out.push((i, cpu, key.clone(), v));
                }
            }
        }
    }
    out
}

/// Consumes the ring buffer, checking what the host relies on: records fit the buffer, nothing is left
/// unconsumed behind them, and the buffer is not corrupted.
pub fn consume(env: &Env) -> Vec<Vec<u8>> {
    let rb = env.map(gen::map::RINGBUF as u32).and_then(|m| m.downcast_ref::<RingBufMap>()).expect("ring buffer");
    let records = rb.drain();
    assert!(!rb.is_corrupted(), "a ring buffer header was corrupted");
    assert!(records.iter().all(|r| r.len() <= rb.query(1) as usize / 2), "a record larger than the buffer allows");
    assert_eq!(rb.query(0), 0, "records left behind after draining (a record nobody submitted?)");
    records
}

/// Runs the scenario `runs` times on `engine` in a fresh environment, and what the host sees after each.
pub fn observe(scenario: &Scenario, engine: Engine, budget: Option<u64>, runs: usize) -> Vec<Observed> {
    let env = env(scenario);
    let vm = vm(scenario, &env, engine, budget);
    let mut input = scenario.input.clone();
    (0..runs)
        .map(|_| {
            let result = vm.execute(&mut input).map_err(Failure::of);
            Observed { result, input: input.clone(), records: consume(&env), dump: dump(&env) }
        })
        .collect()
}

/// The interpreter and the JIT see the same, run after run.
#[cfg(feature = "jit")]
pub fn compare(scenario: &Scenario, budget: Option<u64>, runs: usize) -> Result<Vec<Observed>, String> {
    let a = observe(scenario, Engine::Interpreter, budget, runs);
    let b = observe(scenario, Engine::Jit, budget, runs);
    if a == b {
        return Ok(a);
    }
    let run = a.iter().zip(&b).position(|(x, y)| x != y).unwrap_or(0);
    let (x, y) = (&a[run], &b[run]);
    let mut diff = Vec::new();
    if x.result != y.result {
        diff.push(format!("result: interpreter {:?}, jit {:?}", x.result, y.result));
    }
    let bytes: Vec<usize> =
        (0..x.input.len().max(y.input.len())).filter(|&i| x.input.get(i) != y.input.get(i)).collect();
    if !bytes.is_empty() {
        let show = |v: &[u8]| bytes.iter().map(|&i| v.get(i).copied()).collect::<Vec<_>>();
        diff.push(format!("input bytes {bytes:?}: interpreter {:?}, jit {:?}", show(&x.input), show(&y.input)));
    }
    if x.records != y.records {
        diff.push(format!("records: interpreter {:?}, jit {:?}", x.records, y.records));
    }
    for e in x.dump.iter().filter(|e| !y.dump.contains(e)) {
        diff.push(format!("only on the interpreter: map {} cpu {} key {:?} value {:?}", e.0, e.1, e.2, e.3));
    }
    for e in y.dump.iter().filter(|e| !x.dump.contains(e)) {
        diff.push(format!("only on the jit: map {} cpu {} key {:?} value {:?}", e.0, e.1, e.2, e.3));
    }
    let programs: Vec<String> =
        scenario.programs.iter().enumerate().map(|(i, p)| format!("program {i}:\n{}", p.disassemble())).collect();
    Err(format!(
        "the engines differ in run {run}:\n{}\n{}\ninput {:?}, program array {:?}",
        diff.join("\n"),
        programs.join("\n"),
        scenario.input,
        scenario.prog_array
    ))
}

/// Whether `program` reads r10 as a value rather than only as the base of memory accesses: stack
/// addresses differ between the engines, so such programs cannot be compared value for value.
pub fn reads_frame_pointer_as_value(program: &ebpf_vm::Program) -> bool {
    use ebpf_vm::isa::{Instruction as I, Reg};
    program.instructions().iter().any(|i| {
        let base = match *i {
            I::Load { src, .. } | I::LoadSx { src, .. } => Some(src),
            I::Store { dst, .. } => Some(dst),
            I::StoreReg { dst, src, .. } | I::Atomic { dst, src, .. } if src != Reg::R10 => Some(dst),
            _ => None,
        };
        i.reads().contains(Reg::R10) && base != Some(Reg::R10)
    })
}

/// An error with its address made comparable across engines: relative to the input buffer at `base` when
/// near it, else 0 (stacks lie in different places).
pub fn relative(r: Result<u64, ExecError>, base: u64) -> Result<u64, ExecError> {
    let rel = |a: u64| {
        let off = a.wrapping_sub(base) as i64;
        if (-65536..65536).contains(&off) {
            off as u64
        } else {
            0
        }
    };
    r.map_err(|e| match e {
        ExecError::OutOfBounds { pc, addr, len, write } => ExecError::OutOfBounds { pc, addr: rel(addr), len, write },
        ExecError::MisalignedAtomic { pc, addr } => ExecError::MisalignedAtomic { pc, addr: rel(addr) },
        other => other,
    })
}
