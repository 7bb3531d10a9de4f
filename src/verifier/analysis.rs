//! The fixpoint: abstract states flow along the control-flow graph of one program, joined where paths
//! meet and widened at loop heads, with one copy of each function per call site (calls are analysed in
//! their caller's context). When no state changes any more, every loop is checked for an induction
//! variable that proves it ends.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use super::error::{VerifyError, VerifyErrorKind};
use super::liveness::Liveness;
use super::scalar::{Scalar, Widening};
use super::state::{Frame, Slot, State};
use super::value::{Delta, LenRel, Ptr, PtrKind, Tracked, Value, MAX_LOOP_DEPTH};
use super::Options;
use crate::isa::{Cond, Instruction, Operand};
use crate::link::{Context, Linked, LinkedProgram};
use crate::maps::MapDef;
use crate::program::cfg::Cfg;

/// Most frames of nested bpf-to-bpf calls.
pub(crate) const MAX_FRAMES: usize = crate::memory::MAX_FRAMES;
/// Plain joins of back-edge states at a loop head before widening starts.
const JOINS_BEFORE_WIDENING: u32 = 1;
/// Widenings at a loop head in which a bound passes a threshold, before bounds jump straight to the
/// ends of their ranges.
const THRESHOLD_WIDENINGS: u32 = 12;
/// Widening joins at a loop head that may use thresholds, at most. Passes in which bounds grow only as
/// their known bits let them (a counter gains a bit a pass on its way to the threshold it is heading
/// for) pass no threshold; this ends them too.
const THRESHOLD_PASSES: u32 = 24;
/// Thresholds learnt from the bounds of registers compared with each other, at most.
const LEARNT_THRESHOLDS: usize = 64;
/// Widening joins after those during which known bits may still be lost one at a time (a value bounded
/// only by its bits, such as a mask or a narrow counter, settles); later, every bit above the lowest
/// lost one is given up at once (a counter that only carries grow would take a join per bit).
const BIT_GROWTH_JOINS: u32 = 4;

/// One analysed copy of a function: the call that made it (none for the entry function).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallSite {
    pub(crate) parent: u32,
    /// Slot of the `call` in the parent.
    pub(crate) call_pc: usize,
    /// The function.
    pub(crate) function: usize,
    /// Called back by `bpf_loop` at `call_pc`: its return goes back to the call, which may call it
    /// again, rather than past it.
    pub(crate) callback: bool,
}

/// The state stored at one program point of one context.
struct Node {
    state: State,
    /// Joins of back-edge states since a state last entered the loop (for a loop header).
    visits: u32,
    /// Of those, widenings in which a bound passed a threshold.
    crossings: u32,
    /// Of those, widenings without thresholds.
    late: u32,
}

/// What the analysis of one program needs and builds.
pub(crate) struct Checker<'a> {
    pub(crate) linked: &'a Linked,
    pub(crate) program: usize,
    pub(crate) lp: &'a LinkedProgram,
    pub(crate) cfg: &'a Cfg,
    liveness: Liveness,
    pub(crate) options: &'a Options,
    pub(crate) maps: Vec<MapDef>,
    /// For the map at each index of the environment that is a map of maps, the index in `maps` of its
    /// inner maps' definition.
    pub(crate) inner: Vec<Option<u32>>,
    /// The values of frozen read-only one-entry arrays (`.rodata`), by map index: constants.
    pub(crate) frozen: Vec<Option<Vec<u8>>>,
    pub(crate) contexts: Vec<CallSite>,
    context_ids: BTreeMap<(u32, usize), u32>,
    nodes: BTreeMap<(u32, usize), Node>,
    work: BTreeSet<(u32, usize, usize)>,
    /// States for blocks with one predecessor, run as they arrive.
    direct: Vec<(u32, usize, State)>,
    /// Join of the states arriving over back edges, by context and loop header slot.
    back_edges: BTreeMap<(u32, usize), State>,
    /// Join of the states entering a loop from outside, by context and loop header slot.
    entries: BTreeMap<(u32, usize), State>,
    thresholds: Vec<u64>,
    /// Thresholds for each register (see `Widening::regs`).
    reg_thresholds: [Vec<u64>; 11],
    /// Thresholds added from the bounds of compared registers (see [`Checker::learn_thresholds`]).
    learnt: usize,
    pub(crate) processed: u64,
    pub(crate) loops_proven: u64,
    log: Option<&'a mut String>,
}

/// Where control goes after an instruction.
pub(crate) enum Flow {
    /// To the next instruction.
    Next,
    /// To these slots (jumps), each with its state; an empty list ends the path.
    Jump(Vec<(usize, State)>),
    /// Into a called function: the callee's first slot and the state with the new frame.
    Call(usize, State),
    /// Out of the current function.
    Exit,
    /// A `bpf_loop` call: into its callback (unless it can never run), and past the call.
    Loop {
        /// The callback's first slot and the state with its frame.
        callback: Option<(usize, State)>,
        /// The state after the loop.
        after: State,
    },
}

impl<'a> Checker<'a> {
    pub(crate) fn new(linked: &'a Linked, program: usize, options: &'a Options, log: Option<&'a mut String>) -> Self {
        let lp = &linked.programs()[program];
        let cfg = lp.cfg();
        let liveness = Liveness::new(lp.program(), cfg);
        let mut maps: Vec<MapDef> = linked.env().maps().iter().map(|m| m.def()).collect();
        let frozen: Vec<Option<Vec<u8>>> = linked.env().maps().iter().map(|m| frozen_value(m.as_ref())).collect();
        let (thresholds, reg_thresholds) = thresholds(lp, &maps, &frozen, linked.env().context());
        // The inner maps of each map of maps, as maps of their own past the environment's: a map a
        // lookup gave is known by its definition only.
        let mut inner = Vec::with_capacity(maps.len());
        for m in linked.env().maps() {
            inner.push(m.inner_def().map(|def| {
                maps.push(def);
                (maps.len() - 1) as u32
            }));
        }
        Checker {
            linked,
            program,
            lp,
            cfg,
            liveness,
            options,
            maps,
            inner,
            frozen,
            contexts: Vec::new(),
            context_ids: BTreeMap::new(),
            nodes: BTreeMap::new(),
            work: BTreeSet::new(),
            direct: Vec::new(),
            back_edges: BTreeMap::new(),
            entries: BTreeMap::new(),
            thresholds,
            reg_thresholds,
            learnt: 0,
            processed: 0,
            loops_proven: 0,
            log,
        }
    }

    /// Adds the bounds a comparison with `other` gives register `reg` (`reg < other` bounds it by
    /// `other`'s largest value less one, and so on) to the widening thresholds, so that a loop
    /// counter compared with a bounded register settles at that bound. At most [`LEARNT_THRESHOLDS`].
    pub(crate) fn learn_thresholds(&mut self, reg: usize, other: &Scalar) {
        if other.as_const().is_some() || self.learnt >= LEARNT_THRESHOLDS || reg >= 11 {
            return;
        }
        let candidates = [
            other.umin,
            other.umin.saturating_add(1),
            other.umax,
            other.umax.saturating_sub(1),
            other.smin as u64,
            other.smin.saturating_add(1) as u64,
            other.smax as u64,
            other.smax.saturating_sub(1) as u64,
        ];
        for t in candidates {
            if self.learnt >= LEARNT_THRESHOLDS {
                break;
            }
            let mut added = false;
            for list in [&mut self.reg_thresholds[reg], &mut self.thresholds] {
                if let Err(i) = list.binary_search(&t) {
                    list.insert(i, t);
                    added = true;
                }
            }
            self.learnt += added as usize;
        }
    }

    /// The instruction at slot `pc`.
    pub(crate) fn insn(&self, pc: usize) -> Option<&'a Instruction> {
        let p = self.lp.program();
        p.index_of(pc).and_then(|i| p.instructions().get(i))
    }

    /// An error at `pc` with the state that led to it.
    pub(crate) fn error(&self, pc: usize, kind: VerifyErrorKind, state: &State) -> VerifyError {
        let insn = self.insn(pc).map(crate::isa::disasm::disassemble_one).unwrap_or_default();
        VerifyError { program: self.program, pc, insn, kind, state: describe(state) }
    }

    fn error_nostate(&self, pc: usize, kind: VerifyErrorKind) -> VerifyError {
        let insn = self.insn(pc).map(crate::isa::disasm::disassemble_one).unwrap_or_default();
        VerifyError { program: self.program, pc, insn, kind, state: String::new() }
    }

    /// Runs the analysis to its fixpoint and checks loops and reachability.
    pub(crate) fn run(&mut self) -> Result<(), VerifyError> {
        self.check_structure()?;
        let entry = self.entry_state();
        self.contexts.push(CallSite { parent: u32::MAX, call_pc: usize::MAX, function: 0, callback: false });
        self.arrive(0, None, 0, entry)?;
        loop {
            if let Some((ctx, pc, state)) = self.direct.pop() {
                self.run_segment(ctx, pc, state)?;
            } else if let Some((ctx, _, pc)) = self.work.pop_first() {
                self.segment(ctx, pc)?;
            } else {
                break;
            }
        }
        self.check_loops()
    }

    /// Unreachable instructions and unsupported ones, before any state flows.
    fn check_structure(&self) -> Result<(), VerifyError> {
        let program = self.lp.program();
        for (b, block) in self.cfg.blocks().iter().enumerate() {
            if !self.cfg.reachable(b) || !self.cfg.function_reachable(block.function()) {
                return Err(self.error_nostate(block.start(), VerifyErrorKind::Unreachable));
            }
        }
        for (pc, insn) in program.iter() {
            let what = match insn {
                Instruction::CallBtf { .. } => "a call of a kernel function",
                _ => continue,
            };
            return Err(self.error_nostate(pc, VerifyErrorKind::Unsupported { what }));
        }
        Ok(())
    }

    /// The state at the program's entry, from the context description.
    fn entry_state(&self) -> State {
        let mut frame = Frame::new(0, 0);
        let (r1, r2) = match self.linked.env().context() {
            Context::Buffer => (
                Value::Ptr(Ptr::at(PtrKind::Input, 0)),
                Value::Scalar { s: Scalar::urange(0, u32::MAX as u64), len: LenRel::Equal },
            ),
            Context::Fixed { size, .. } => {
                (Value::Ptr(Ptr::at(PtrKind::Context, 0)), Value::scalar(Scalar::constant(*size as u64)))
            }
            Context::Packet { .. } => (Value::Ptr(Ptr::at(PtrKind::Context, 0)), Value::unknown()),
        };
        frame.regs[1] = Tracked::new(r1);
        frame.regs[2] = Tracked::new(r2);
        State { frames: alloc::vec![frame], input_min: 0, refs: Vec::new(), lock: None }
    }

    /// The context for a call at `call_pc` from context `parent` into `function`.
    pub(crate) fn call_context(&mut self, parent: u32, call_pc: usize, function: usize, callback: bool) -> u32 {
        if let Some(&id) = self.context_ids.get(&(parent, call_pc)) {
            return id;
        }
        let id = self.contexts.len() as u32;
        self.contexts.push(CallSite { parent, call_pc, function, callback });
        self.context_ids.insert((parent, call_pc), id);
        id
    }

    /// Whether `function` is already active in context `ctx` (a call of it would recurse).
    pub(crate) fn active(&self, mut ctx: u32, function: usize) -> bool {
        loop {
            let site = self.contexts[ctx as usize];
            if site.function == function {
                return true;
            }
            if site.parent == u32::MAX {
                return false;
            }
            ctx = site.parent;
        }
    }

    fn order(&self, pc: usize) -> usize {
        self.cfg.block_of_pc(pc).and_then(|b| self.cfg.rpo_index(b)).unwrap_or(usize::MAX)
    }

    /// A state reaches slot `pc` of context `ctx`, from the instruction at `from` (none at the entry).
    pub(crate) fn arrive(
        &mut self,
        ctx: u32,
        from: Option<usize>,
        pc: usize,
        mut state: State,
    ) -> Result<(), VerifyError> {
        state.materialize_len();
        let Some(block) = self.cfg.block_of_pc(pc) else {
            return Err(self.error(
                from.unwrap_or(0),
                VerifyErrorKind::Unsupported { what: "a jump out of the program" },
                &state,
            ));
        };
        self.forget_dead(&mut state, pc);
        let header = self.cfg.block(block).start() == pc && self.cfg.loop_of_header(block).is_some();
        let mut back_edge = false;
        if let Some(from) = from {
            let fb = self.cfg.block_of_pc(from).unwrap_or(block);
            let retreating = self.cfg.block(block).start() == pc && self.cfg.rpo_index(block) <= self.cfg.rpo_index(fb);
            if retreating {
                // Only the back edge of a natural loop may go back; any other retreating edge closes a
                // cycle with more than one entry, which no induction variable is checked for.
                let back = header && self.cfg.loop_of_header(block).is_some_and(|l| self.cfg.loop_contains(l, fb));
                if !back {
                    return Err(self.error(from, VerifyErrorKind::UnboundedLoop { header: pc }, &state));
                }
                join_into(&mut self.back_edges, (ctx, pc), &state);
                back_edge = true;
            } else if header {
                join_into(&mut self.entries, (ctx, pc), &state);
            }
        } else if header {
            join_into(&mut self.entries, (ctx, pc), &state);
        }
        // A block only one edge enters needs no stored state to join into: it runs from each state
        // that arrives (each includes the one before, as its predecessor's states grow).
        if from.is_some() && !header && self.cfg.block(block).start() == pc && self.cfg.predecessors(block).len() == 1 {
            self.direct.push((ctx, pc, state));
            return Ok(());
        }
        self.merge(ctx, pc, state, header, back_edge);
        Ok(())
    }

    /// A callback returns to the `bpf_loop` call at `pc` of context `ctx`, which runs again from the
    /// join of the states that return there (widened, as states over a loop's back edge are).
    fn arrive_again(&mut self, ctx: u32, pc: usize, mut state: State) -> Result<(), VerifyError> {
        state.materialize_len();
        self.forget_dead(&mut state, pc);
        self.merge(ctx, pc, state, true, true);
        Ok(())
    }

    /// Joins `state` into the one stored at slot `pc` of context `ctx`, and queues the slot if that
    /// changed it. `header`: the slot heads a loop; `back_edge`: the state comes round the loop.
    fn merge(&mut self, ctx: u32, pc: usize, mut state: State, header: bool, back_edge: bool) {
        let (thresholds, regs) = (&self.thresholds, &self.reg_thresholds);
        let changed = match self.nodes.get_mut(&(ctx, pc)) {
            None => {
                self.nodes.insert((ctx, pc), Node { state, visits: 0, crossings: 0, late: 0 });
                true
            }
            // Nothing new: the stored state already stands for every state the incoming one does.
            Some(node) if node.state.includes(&state) => false,
            Some(node) => {
                // Relations common to both sides, in the stored side's terms (new ones at loop heads).
                let mut stored = node.state.clone();
                super::relation::relate(&mut stored, &mut state, pc as u32, header);
                if stored.includes(&state) && stored == node.state {
                    false
                } else {
                    // Widening is what makes a loop's own passes end, so only the loop's back edges
                    // count towards it; a state entering the loop anew (the next pass of an enclosing
                    // loop, which that loop's widening bounds) joins plainly and starts the count again.
                    if back_edge {
                        node.visits += 1;
                    } else {
                        (node.visits, node.crossings, node.late) = (0, 0, 0);
                    }
                    let crossed = core::cell::Cell::new(false);
                    let widen: Option<Widening<'_>> = if !back_edge || node.visits <= JOINS_BEFORE_WIDENING {
                        None
                    } else if node.crossings < THRESHOLD_WIDENINGS
                        && node.visits <= JOINS_BEFORE_WIDENING + THRESHOLD_PASSES
                    {
                        Some(Widening { thresholds, regs: Some(regs), bits: false, crossed: &crossed })
                    } else {
                        node.late += 1;
                        Some(Widening {
                            thresholds: &[],
                            regs: None,
                            bits: node.late > BIT_GROWTH_JOINS,
                            crossed: &crossed,
                        })
                    };
                    let joined = stored.join(&state, pc as u32, widen);
                    if crossed.get() {
                        node.crossings += 1;
                    }
                    if joined == node.state {
                        false
                    } else {
                        node.state = joined;
                        true
                    }
                }
            }
        };
        if changed {
            let order = self.order(pc);
            self.work.insert((ctx, order, pc));
        }
    }

    /// Forgets the registers and stack slots of the innermost frame that nothing reads from `pc` on
    /// before writing them.
    fn forget_dead(&self, state: &mut State, pc: usize) {
        let live = self.liveness.at(pc);
        let top = state.top_mut();
        for (r, t) in top.regs.iter_mut().enumerate().take(10) {
            if live.regs & (1 << r) == 0 {
                *t = Tracked::UNINIT;
            }
        }
        if live.slots != u64::MAX {
            top.stack.retain(|(k, _)| *k >= 64 || live.slots & (1u64 << k) != 0);
        }
    }

    /// Runs the instructions from slot `pc` of context `ctx` to the end of their block (or a call).
    fn segment(&mut self, ctx: u32, pc: usize) -> Result<(), VerifyError> {
        let Some(node) = self.nodes.get(&(ctx, pc)) else { return Ok(()) };
        let state = node.state.clone();
        self.run_segment(ctx, pc, state)
    }

    /// As [`segment`](Checker::segment), from `state`.
    fn run_segment(&mut self, ctx: u32, pc: usize, mut state: State) -> Result<(), VerifyError> {
        let Some(block) = self.cfg.block_of_pc(pc) else { return Ok(()) };
        let b = self.cfg.block(block);
        if b.start() == pc {
            if let Some(l) = self.cfg.loop_of_header(block) {
                state.start_loop(self.cfg.loop_depth(l));
            }
        }
        let mut at = pc;
        let mut last = pc;
        while at < b.end() {
            last = at;
            let Some(insn) = self.insn(at) else { break };
            self.processed += 1;
            if self.processed > self.options.max_processed {
                let header = self.cfg.innermost_loop(block).map(|l| self.cfg.block(self.cfg.loop_header(l)).start());
                return Err(self.error(at, VerifyErrorKind::TooComplex { processed: self.processed, header }, &state));
            }
            if let Some(log) = self.log.as_deref_mut() {
                let _ = writeln!(log, "{at}: {} ; {}", crate::isa::disasm::disassemble_one(insn), describe(&state));
            }
            match self.step(ctx, at, insn, &mut state)? {
                Flow::Next => at += insn.slots(),
                Flow::Jump(targets) => {
                    for (to, s) in targets {
                        self.arrive(ctx, Some(at), to, s)?;
                    }
                    return Ok(());
                }
                Flow::Call(target, s) => {
                    let function = self.cfg.function_of_pc(target).unwrap_or(0);
                    let callee = self.call_context(ctx, at, function, false);
                    return self.arrive(callee, None, target, s);
                }
                Flow::Loop { callback, after } => {
                    if let Some((target, s)) = callback {
                        let function = self.cfg.function_of_pc(target).unwrap_or(0);
                        let callee = self.call_context(ctx, at, function, true);
                        self.arrive(callee, None, target, s)?;
                    }
                    return self.arrive(ctx, Some(at), at + insn.slots(), after);
                }
                Flow::Exit => return self.exit(ctx, at, state),
            }
        }
        if at < self.lp.program().slot_count() {
            self.arrive(ctx, Some(last), at, state)?;
        }
        Ok(())
    }

    /// `exit` at `pc`: the end of the program, or a return to the caller.
    fn exit(&mut self, ctx: u32, pc: usize, mut state: State) -> Result<(), VerifyError> {
        let r0 = state.reg(0).v;
        if state.frames.len() == 1 {
            match r0 {
                Value::Uninit => return Err(self.error(pc, VerifyErrorKind::UninitRegister { reg: 0 }, &state)),
                Value::Scalar { .. } => {}
                _ if self.options.allow_pointer_leaks && !matches!(r0, Value::Released) => {}
                _ => return Err(self.error(pc, VerifyErrorKind::PointerLeak { reg: 0 }, &state)),
            }
            if let Some(&(_, at)) = state.refs.first() {
                let kind = VerifyErrorKind::UnreleasedRecord { reserved_at: at as usize };
                return Err(self.error(pc, kind, &state));
            }
            return Ok(());
        }
        let site = self.contexts[ctx as usize];
        // A function that returns nothing leaves r0 unwritten; its caller then cannot read it either.
        // A callback's result tells `bpf_loop` whether to go on: it must be a number.
        if !matches!(r0, Value::Uninit | Value::Scalar { .. }) || site.callback && r0 == Value::Uninit {
            return Err(self.error(pc, VerifyErrorKind::ExitValue, &state));
        }
        let popped = state.frames.len() - 1;
        let callee = state.frames.pop();
        let r0 = callee.map(|f| f.regs[0]).unwrap_or(Tracked::UNINIT);
        // Pointers into the returned function's stack die with it.
        state.for_each_value(|v| {
            if let Value::Ptr(p) = v {
                if p.kind == PtrKind::Stack(popped as u8) {
                    *v = Value::Mixed;
                }
            }
        });
        if site.callback {
            // Back to the `bpf_loop` call, with the caller's registers as they were: the call may run
            // the callback again, with whatever it changed, or end. The states that come back are
            // joined, and widened, as at the head of a loop.
            return self.arrive_again(site.parent, site.call_pc, state);
        }
        let top = state.top_mut();
        top.regs[0] = Tracked::new(r0.v);
        for r in 1..=5 {
            top.regs[r] = Tracked::UNINIT;
        }
        self.arrive(site.parent, None, site.call_pc + 1, state)
    }

    /// After the fixpoint: every loop that was entered again over a back edge must have an induction
    /// variable that bounds its iterations.
    fn check_loops(&mut self) -> Result<(), VerifyError> {
        let edges: Vec<((u32, usize), State)> = core::mem::take(&mut self.back_edges).into_iter().collect();
        for ((ctx, header), latch) in edges {
            let Some(block) = self.cfg.block_of_pc(header) else { continue };
            let Some(l) = self.cfg.loop_of_header(block) else { continue };
            let depth = self.cfg.loop_depth(l);
            let Some(head) = self.nodes.get(&(ctx, header)) else { continue };
            let max = self.options.max_loop_iterations;
            let proven = depth <= MAX_LOOP_DEPTH
                && (proves_end(&head.state, &latch, depth - 1, max)
                    || self.proves_end_at_equality(l, self.entries.get(&(ctx, header)), &latch, depth - 1, max));
            if !proven {
                return Err(self.error(header, VerifyErrorKind::UnboundedLoop { header }, &latch));
            }
            self.loops_proven += 1;
        }
        Ok(())
    }

    /// A loop that goes on while `r != C`, where `r` moves by exactly the same step `s` on every iteration
    /// and starts at most `C` (at least, for a negative step) at a distance that is a multiple of `s`,
    /// reaches `C` and ends after `(C - start) / s` iterations.
    fn proves_end_at_equality(&self, l: usize, entry: Option<&State>, latch: &State, d: usize, max: u64) -> bool {
        let mut latches = self.cfg.latches(l);
        let (Some(lb), None, Some(entry)) = (latches.next(), latches.next(), entry) else { return false };
        let header = self.cfg.block(self.cfg.loop_header(l)).start();
        let block = self.cfg.block(lb);
        let Some(last) = self.lp.program().iter().take_while(|(pc, _)| *pc < block.end()).last() else { return false };
        let (pc, insn) = last;
        let Instruction::Jump { width: crate::isa::Width::W64, cond, dst, src: Operand::Imm(c), offset } = *insn else {
            return false;
        };
        let taken = (pc as i64 + 1 + offset as i64) as usize;
        let continues_while_unequal =
            (cond == Cond::Ne && taken == header) || (cond == Cond::Eq && pc + 1 == header && taken != header);
        let r = dst.index() as usize;
        let (Some(lt), Some(et)) = (latch.frames.last().map(|f| f.regs[r]), entry.frames.last().map(|f| f.regs[r]))
        else {
            return false;
        };
        let delta = lt.deltas[d];
        let (Some(start), true) = (et.v.as_scalar(), continues_while_unequal && delta.lo == delta.hi && delta.lo != 0)
        else {
            return false;
        };
        // Every path adds exactly `step` modulo 2^64; from one start at most C (at least, stepping
        // down) and a multiple of `step` away, the value meets C before it could wrap.
        if delta.views & Delta::MODULAR == 0 || start.umin != start.umax {
            return false;
        }
        let (from, c, step) = (start.umin as i128, c as i64 as u64 as i128, delta.lo as i128);
        let distance = if step > 0 { c - from } else { from - c };
        // At distance 0 the first test comes after a step, past C: it would have to wrap all the way round.
        distance > 0 && distance % step.abs() == 0 && distance / step.abs() < max as i128
    }

    /// The value of a jump or ALU operand.
    pub(crate) fn operand(&self, state: &State, op: Operand, w64: bool) -> Tracked {
        match op {
            Operand::Reg(r) => *state.reg(r.index()),
            Operand::Imm(i) => {
                let c = if w64 { i as i64 as u64 } else { i as u32 as u64 };
                Tracked::new(Value::scalar(Scalar::constant(c)))
            }
        }
    }
}

/// Joins `state` into the map's entry at `key`.
fn join_into(map: &mut BTreeMap<(u32, usize), State>, key: (u32, usize), state: &State) {
    match map.entry(key) {
        alloc::collections::btree_map::Entry::Vacant(v) => {
            v.insert(state.clone());
        }
        alloc::collections::btree_map::Entry::Occupied(mut o) => {
            let j = o.get().join(state, key.1 as u32, None);
            o.insert(j);
        }
    }
}

/// Whether some register or spill of the innermost frame changes by at least 1 in one direction on
/// every iteration (`d` is the loop's delta index) within bounds that cap the iterations at `max`.
fn proves_end(head: &State, latch: &State, d: usize, max: u64) -> bool {
    let (Some(h), Some(l)) = (head.frames.last(), latch.frames.last()) else { return false };
    let mut pairs: Vec<(&Tracked, &Tracked)> = h.regs.iter().zip(l.regs.iter()).collect();
    for (k, slot) in &l.stack {
        match (slot, h.slot(*k as usize)) {
            (Slot::Spill(lt), Some(Slot::Spill(ht))) => pairs.push((ht, lt)),
            (Slot::Halves(lh, _), Some(Slot::Halves(hh, _))) => {
                for i in 0..2 {
                    if let (Some(lt), Some(ht)) = (&lh[i], &hh[i]) {
                        pairs.push((ht, lt));
                    }
                }
            }
            _ => {}
        }
    }
    pairs.into_iter().any(|(ht, lt)| {
        let delta = lt.deltas[d];
        if delta.views == 0 || (delta.lo < 1 && delta.hi > -1) {
            return false;
        }
        let (Some(hs), Some(ls)) = (number(&ht.v), number(&lt.v)) else { return false };
        (0..4).any(|view| {
            if delta.views & (1 << view) == 0 {
                return false;
            }
            let (hmin, hmax) = bounds(&hs, view);
            let (lmin, lmax) = bounds(&ls, view);
            let steps = if delta.lo >= 1 {
                // Rising: at the latch at most lmax, at the head at least hmin.
                (lmax - hmin).max(0) as u128 / delta.lo as u128
            } else {
                (hmax - lmin).max(0) as u128 / (-(delta.hi as i128)) as u128
            };
            steps < max as u128
        })
    })
}

/// The number a value stands for in loop bounds: a scalar, or a pointer's offset.
fn number(v: &Value) -> Option<Scalar> {
    match v {
        Value::Scalar { s, .. } => Some(*s),
        Value::Ptr(p) => Some(p.folded()),
        _ => None,
    }
}

/// Bounds of `s` in one view (0 u64, 1 s64, 2 u32, 3 s32).
fn bounds(s: &Scalar, view: usize) -> (i128, i128) {
    match view {
        0 => (s.umin as i128, s.umax as i128),
        1 => (s.smin as i128, s.smax as i128),
        2 => (s.u32min as i128, s.u32max as i128),
        _ => (s.s32min as i128, s.s32max as i128),
    }
}

/// The value of a map whose contents are constant: frozen, read-only for programs, and an array of one
/// entry (so that every pointer into its values points into that one value).
fn frozen_value(map: &dyn crate::maps::Map) -> Option<Vec<u8>> {
    let def = map.def();
    let one_value = def.map_type == crate::maps::MapType::Array && def.max_entries == 1;
    (one_value && def.read_only_for_programs() && map.frozen()).then(|| map.get(&0u32.to_ne_bytes(), 0)).flatten()
}

/// Numbers at which widened bounds stop: the constants the program compares with (and their
/// neighbours; not the operands of arithmetic, whose masks and shifts would put a threshold at every
/// power of two and make a loop take a pass for each), map sizes, the context size, the aligned words
/// of frozen data (configuration that bounds loops), and the ends of the 32- and 64-bit ranges. For
/// all values (stack slots use these), and for each register: only the constants that register is
/// compared with (a switch on one register puts no steps in the way of a counter in another).
fn thresholds(
    lp: &LinkedProgram,
    maps: &[MapDef],
    frozen: &[Option<Vec<u8>>],
    context: &Context,
) -> (Vec<u64>, [Vec<u64>; 11]) {
    let mut common: Vec<u64> = alloc::vec![0, 1, 512, u32::MAX as u64, i32::MAX as u64, i64::MAX as u64, u64::MAX];
    for m in maps {
        common.push(m.value_size as u64);
        common.push(m.key_size as u64);
    }
    if let Context::Fixed { size, .. } | Context::Packet { size, .. } = context {
        common.push(*size as u64);
    }
    for bytes in frozen.iter().flatten() {
        // Bounded, so that a large `.rodata` cannot make widening slow.
        for word in bytes.chunks_exact(4).take(256) {
            let c = u32::from_ne_bytes([word[0], word[1], word[2], word[3]]) as u64;
            common.extend([c.saturating_sub(1), c, c + 1]);
        }
    }
    let mut regs: [Vec<u64>; 11] = core::array::from_fn(|_| common.clone());
    let mut all = common;
    for (_, insn) in lp.program().iter() {
        let (c, r) = match insn {
            Instruction::Jump { src: Operand::Imm(i), cond, dst, .. } if *cond != Cond::Set => {
                (*i as i64, dst.index() as usize)
            }
            _ => continue,
        };
        for x in [c - 1, c, c + 1] {
            for t in [x as u64, x as u32 as u64] {
                all.push(t);
                regs[r].push(t);
            }
        }
    }
    for t in regs.iter_mut().chain([&mut all]) {
        t.sort_unstable();
        t.dedup();
    }
    (all, regs)
}

/// The registers and stack slots of the innermost frame that hold something, for error messages.
pub(crate) fn describe(state: &State) -> String {
    let mut out = String::new();
    let Some(frame) = state.frames.last() else { return out };
    for (r, t) in frame.regs.iter().enumerate() {
        if t.v != Value::Uninit {
            if !out.is_empty() {
                out.push_str(", ");
            }
            let _ = write!(out, "r{r}={}", t.v);
            if let Some(l) = t.link {
                let _ = write!(out, " [{}x#{:x}{:+}{}]", l.scale, l.id & 0xffff, l.d, if l.w32 { " w32" } else { "" });
            }
        }
    }
    for (k, slot) in &frame.stack {
        let off = -8 * (*k as i64 + 1);
        let _ = match slot {
            Slot::Spill(t) => write!(out, ", fp{off}={}", t.v),
            Slot::Bytes(m) => write!(out, ", fp{off}=bytes({m:#04x})"),
            Slot::Halves(h, m) => {
                let half = |t: &Option<Tracked>| t.as_ref().map_or("?".into(), |t| format!("{}", t.v));
                write!(out, ", fp{off}=halves({}, {}; {m:#04x})", half(&h[0]), half(&h[1]))
            }
        };
    }
    if state.input_min > 0 {
        let _ = write!(out, ", input >= {} bytes", state.input_min);
    }
    if !state.refs.is_empty() {
        let held: Vec<String> = state.refs.iter().map(|(_, pc)| format!("{pc}")).collect();
        let _ = write!(out, ", records held from insn {}", held.join(", "));
    }
    out
}
