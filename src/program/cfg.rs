//! The control-flow graph of a program, for the JIT and the verifier: basic blocks and their edges, reverse
//! postorder, dominators, natural loops and the call graph. Every part is exact at any size, takes time and
//! memory (near-)linear in the program, and uses explicit stacks instead of recursion.

use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;

use crate::isa::{Imm64, Instruction};
use crate::program::Program;

/// "No block", "no loop", "not numbered" in the `u32` arrays.
const NONE: u32 = u32::MAX;

/// A basic block: instructions that run one after the other, entered only at the first and left only
/// after the last. It lies inside one function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    function: u32,
    start: u32,
    end: u32,
    first_insn: u32,
    end_insn: u32,
}

impl Block {
    /// Index of the function the block belongs to (into [`Program::functions`]).
    pub fn function(&self) -> usize {
        self.function as usize
    }

    /// Slot index of the first instruction.
    pub fn start(&self) -> usize {
        self.start as usize
    }

    /// One past the last slot.
    pub fn end(&self) -> usize {
        self.end as usize
    }

    /// The slots, `start()..end()`.
    pub fn slots(&self) -> Range<usize> {
        self.start()..self.end()
    }

    /// The instructions, as indices into [`Program::instructions`].
    pub fn insns(&self) -> Range<usize> {
        self.first_insn as usize..self.end_insn as usize
    }
}

/// One natural loop, by its place in the arrays of [`Cfg`].
#[derive(Debug, Clone, Copy)]
struct LoopData {
    header: u32,
    /// The innermost loop around this one, or `NONE`.
    parent: u32,
    /// 1 for an outermost loop.
    depth: u32,
    /// Slot of the last jump instruction that jumps back to the header, or `NONE`.
    latch_slot: u32,
    /// `first..end`: this loop and the loops inside it, in a preorder numbering of the loop forest.
    first: u32,
    end: u32,
}

/// The control-flow graph of a [`Program`]: its basic blocks, the edges between them inside each function,
/// reverse postorder, dominators and natural loops per function, and the call graph between functions.
///
/// Blocks, functions and loops are named by indices: blocks in slot order, functions as in
/// [`Program::functions`], loops in the slot order of their headers. Queries taking such an index panic if it
/// is out of range; queries taking a slot or an instruction index answer `None` for one outside the program.
///
/// Only blocks reachable from their function's entry take part in orders, dominators and loops. A loop is a
/// natural loop: a header that dominates the source of an edge into it (a back edge), with every block that
/// reaches such a source without passing the header. Back edges to one header make one loop. A cycle that can
/// be entered at more than one block (an irreducible one) is not a loop, as none of its entries dominates the
/// others; its blocks belong to the natural loops around them, if any.
#[derive(Debug, Clone)]
pub struct Cfg {
    blocks: Vec<Block>,
    /// `func_blocks[f]..func_blocks[f + 1]`: the blocks of function `f`, the first its entry.
    func_blocks: Vec<u32>,
    /// Per block: the taken successor (of a jump) and the fall-through successor, `NONE` where none.
    succs: Vec<[u32; 2]>,
    /// `preds[pred_start[b]..pred_start[b + 1]]`: the sources of the edges into `b`, ascending.
    pred_start: Vec<u32>,
    preds: Vec<u32>,
    /// `rpo[rpo_start[f]..rpo_start[f + 1]]`: the reachable blocks of function `f` in reverse postorder.
    rpo_start: Vec<u32>,
    rpo: Vec<u32>,
    /// Per block: its position in its function's reverse postorder; `NONE` if unreachable.
    rpo_index: Vec<u32>,
    /// Per block: the immediate dominator; `NONE` for entries and unreachable blocks.
    idom: Vec<u32>,
    /// Per reachable block: `first..end` of its subtree in a preorder numbering of the dominator forest.
    dom_range: Vec<[u32; 2]>,
    /// Sorted by header.
    loops: Vec<LoopData>,
    /// `latches[latch_start[l]..latch_start[l + 1]]`: the sources of the back edges of loop `l`, ascending.
    latch_start: Vec<u32>,
    latches: Vec<u32>,
    /// Per block: the innermost loop it belongs to, or `NONE`.
    innermost: Vec<u32>,
    /// `callees[callee_start[f]..callee_start[f + 1]]`: the functions `f` calls or takes the address of.
    callee_start: Vec<u32>,
    callees: Vec<u32>,
    address_taken: Vec<bool>,
    function_reachable: Vec<bool>,
}

/// The target of a jump (not of a call) at slot `pc`. Valid programs keep it inside the jump's function.
fn jump_target(pc: usize, insn: &Instruction) -> Option<usize> {
    match insn {
        Instruction::Ja { .. } | Instruction::Ja32 { .. } | Instruction::Jump { .. } => {
            insn.branch_target(pc).map(|t| t as usize)
        }
        _ => None,
    }
}

/// The blocks of `program` in slot order, and where each function's blocks begin (with the block count
/// appended).
fn split_blocks(program: &Program) -> (Vec<Block>, Vec<u32>) {
    let functions = program.functions();
    let slots = program.slot_count();
    let insn_count = program.instructions().len();
    let mut leader = vec![false; slots + 1];
    for f in functions {
        leader[f.start] = true;
    }
    for (pc, insn) in program.iter() {
        if let Some(t) = jump_target(pc, insn) {
            leader[t] = true;
            leader[pc + insn.slots()] = true;
        } else if matches!(insn, Instruction::Exit) {
            leader[pc + insn.slots()] = true;
        }
    }
    let mut blocks: Vec<Block> = Vec::new();
    let mut f = 0;
    for (i, (pc, _)) in program.iter().enumerate() {
        if !leader[pc] {
            continue;
        }
        while functions[f].end <= pc {
            f += 1;
        }
        if let Some(last) = blocks.last_mut() {
            last.end = pc as u32;
            last.end_insn = i as u32;
        }
        let block = Block {
            function: f as u32,
            start: pc as u32,
            end: slots as u32,
            first_insn: i as u32,
            end_insn: insn_count as u32,
        };
        blocks.push(block);
    }
    let mut func_blocks: Vec<u32> =
        functions.iter().map(|f| blocks.partition_point(|b| (b.start as usize) < f.start) as u32).collect();
    func_blocks.push(blocks.len() as u32);
    (blocks, func_blocks)
}

/// The index of the block starting at slot `pc`, which must be a block's start.
fn block_at(blocks: &[Block], pc: usize) -> u32 {
    let b = blocks.partition_point(|b| (b.start as usize) <= pc) - 1;
    debug_assert_eq!(blocks[b].start as usize, pc);
    b as u32
}

/// Each block's taken and fall-through successor.
fn successors(program: &Program, blocks: &[Block]) -> Vec<[u32; 2]> {
    let insns = program.instructions();
    let mut succs = Vec::with_capacity(blocks.len());
    for (b, block) in blocks.iter().enumerate() {
        let last = &insns[block.end_insn as usize - 1];
        let pc = block.end as usize - last.slots();
        let taken = jump_target(pc, last).map_or(NONE, |t| block_at(blocks, t));
        // A valid program cannot fall off the end of a function, so the next block is in the same one.
        let fall = if last.falls_through() { b as u32 + 1 } else { NONE };
        debug_assert!(fall == NONE || blocks[fall as usize].function == block.function);
        succs.push([taken, fall]);
    }
    succs
}

/// The predecessor lists (compressed rows): row starts, and sources in ascending order, one per edge.
fn predecessors(succs: &[[u32; 2]]) -> (Vec<u32>, Vec<u32>) {
    let n = succs.len();
    let mut start = vec![0u32; n + 1];
    for &t in succs.iter().flatten() {
        if t != NONE {
            start[t as usize + 1] += 1;
        }
    }
    for i in 0..n {
        start[i + 1] += start[i];
    }
    let mut fill = start.clone();
    let mut preds = vec![0u32; start[n] as usize];
    for (b, s) in succs.iter().enumerate() {
        for &t in s {
            if t != NONE {
                preds[fill[t as usize] as usize] = b as u32;
                fill[t as usize] += 1;
            }
        }
    }
    (start, preds)
}

/// A depth-first search of every function from its entry, taken successors before fall-through ones.
struct Dfs {
    /// Per block: its preorder number, `NONE` if unreachable. Numbers are global, contiguous per function.
    pre: Vec<u32>,
    /// Per preorder number: the block.
    vertex: Vec<u32>,
    /// Per preorder number: the preorder number of the parent in the search tree, `NONE` for entries.
    parent: Vec<u32>,
    rpo_start: Vec<u32>,
    rpo: Vec<u32>,
}

/// Searches each function from its entry with an explicit stack.
fn depth_first(func_blocks: &[u32], succs: &[[u32; 2]]) -> Dfs {
    let n = succs.len();
    let mut pre = vec![NONE; n];
    let mut vertex = Vec::new();
    let mut parent = Vec::new();
    let mut rpo = Vec::new();
    let mut rpo_start = vec![0u32];
    // Each entry: a block and how many of its successors have been looked at.
    let mut stack: Vec<(u32, u8)> = Vec::new();
    for w in func_blocks.windows(2) {
        let first = rpo.len();
        if w[0] < w[1] {
            let entry = w[0];
            vertex.push(entry);
            parent.push(NONE);
            pre[entry as usize] = vertex.len() as u32 - 1;
            stack.push((entry, 0));
            while let Some(top) = stack.last_mut() {
                let (b, i) = *top;
                if let Some(&s) = succs[b as usize].get(i as usize) {
                    top.1 += 1;
                    if s != NONE && pre[s as usize] == NONE {
                        pre[s as usize] = vertex.len() as u32;
                        vertex.push(s);
                        parent.push(pre[b as usize]);
                        stack.push((s, 0));
                    }
                } else {
                    rpo.push(b);
                    stack.pop();
                }
            }
        }
        rpo[first..].reverse();
        rpo_start.push(rpo.len() as u32);
    }
    Dfs { pre, vertex, parent, rpo_start, rpo }
}

/// Immediate dominators by preorder number (`NONE` for entries): Lengauer and Tarjan's algorithm with path
/// compression, O(m log n), on the search forest of all functions at once.
fn dominators(dfs: &Dfs, pred_start: &[u32], preds: &[u32]) -> Vec<u32> {
    let r = dfs.vertex.len();
    let mut semi: Vec<u32> = (0..r as u32).collect();
    // The link-eval forest: `ancestor` is `NONE` at a tree's root; `label` is the vertex of least
    // semidominator on the (compressed) path to it.
    let mut label: Vec<u32> = (0..r as u32).collect();
    let mut ancestor = vec![NONE; r];
    let mut idom = vec![NONE; r];
    // Buckets as linked lists: the vertices whose semidominator is `v` start at `bucket[v]`.
    let mut bucket = vec![NONE; r];
    let mut next = vec![NONE; r];
    let mut path: Vec<u32> = Vec::new();

    // The vertex of least semidominator on the forest path from `v` up to (not including) its tree's root,
    // compressing the path on the way.
    let mut eval = |v: u32, ancestor: &mut [u32], label: &mut [u32], semi: &[u32]| -> u32 {
        if ancestor[v as usize] == NONE {
            return v;
        }
        let mut x = v;
        while ancestor[ancestor[x as usize] as usize] != NONE {
            path.push(x);
            x = ancestor[x as usize];
        }
        while let Some(y) = path.pop() {
            let a = ancestor[y as usize] as usize;
            if semi[label[a] as usize] < semi[label[y as usize] as usize] {
                label[y as usize] = label[a];
            }
            ancestor[y as usize] = ancestor[a];
        }
        label[v as usize]
    };

    for w in (0..r).rev() {
        let p = dfs.parent[w];
        if p == NONE {
            continue;
        }
        let b = dfs.vertex[w] as usize;
        let mut s = semi[w];
        for &q in &preds[pred_start[b] as usize..pred_start[b + 1] as usize] {
            let v = dfs.pre[q as usize];
            if v != NONE {
                let u = eval(v, &mut ancestor, &mut label, &semi);
                s = s.min(semi[u as usize]);
            }
        }
        semi[w] = s;
        next[w] = bucket[s as usize];
        bucket[s as usize] = w as u32;
        ancestor[w] = p;
        let mut v = core::mem::replace(&mut bucket[p as usize], NONE);
        while v != NONE {
            let u = eval(v, &mut ancestor, &mut label, &semi);
            idom[v as usize] = if semi[u as usize] < semi[v as usize] { u } else { p };
            v = next[v as usize];
        }
    }
    for w in 0..r {
        if dfs.parent[w] != NONE && idom[w] != semi[w] {
            idom[w] = idom[idom[w] as usize];
        }
    }
    idom
}

/// Per block, `first..end` of its subtree in a preorder numbering of the dominator forest (`[NONE, NONE]`
/// for unreachable blocks). An immediate dominator precedes in the search's preorder, so one pass down the
/// subtree sizes places every subtree after its parent's earlier children.
fn dominator_ranges(dfs: &Dfs, idom: &[u32], n: usize) -> Vec<[u32; 2]> {
    let r = dfs.vertex.len();
    let mut size = vec![1u32; r];
    for w in (0..r).rev() {
        if idom[w] != NONE {
            size[idom[w] as usize] += size[w];
        }
    }
    let mut ranges = vec![[NONE, NONE]; n];
    // Per vertex: where its next child's subtree goes.
    let mut next_child = vec![0u32; r];
    let mut next_root = 0;
    for w in 0..r {
        let first = match idom[w] {
            NONE => {
                next_root += size[w];
                next_root - size[w]
            }
            d => {
                let first = next_child[d as usize];
                next_child[d as usize] += size[w];
                first
            }
        };
        next_child[w] = first + 1;
        ranges[dfs.vertex[w] as usize] = [first, first + size[w]];
    }
    ranges
}

/// Disjoint sets of blocks (union by rank, path halving), each naming a representative block.
struct Sets {
    parent: Vec<u32>,
    rank: Vec<u8>,
    rep: Vec<u32>,
}

impl Sets {
    fn new(n: usize) -> Sets {
        Sets { parent: (0..n as u32).collect(), rank: vec![0; n], rep: (0..n as u32).collect() }
    }

    fn root(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let up = self.parent[self.parent[x as usize] as usize];
            self.parent[x as usize] = up;
            x = up;
        }
        x
    }

    /// The representative of `x`'s set.
    fn find(&mut self, x: u32) -> u32 {
        let r = self.root(x);
        self.rep[r as usize]
    }

    /// Merges the sets of `a` and `b`; the result is represented by `rep`.
    fn union(&mut self, a: u32, b: u32, rep: u32) {
        let (mut a, mut b) = (self.root(a), self.root(b));
        if a == b {
            self.rep[a as usize] = rep;
            return;
        }
        if self.rank[a as usize] < self.rank[b as usize] {
            core::mem::swap(&mut a, &mut b);
        }
        self.parent[b as usize] = a;
        if self.rank[a as usize] == self.rank[b as usize] {
            self.rank[a as usize] += 1;
        }
        self.rep[a as usize] = rep;
    }
}

impl Cfg {
    /// Builds the graph and all its analyses.
    pub fn new(program: &Program) -> Cfg {
        let (blocks, func_blocks) = split_blocks(program);
        let n = blocks.len();
        let succs = successors(program, &blocks);
        let (pred_start, preds) = predecessors(&succs);

        let dfs = depth_first(&func_blocks, &succs);
        let mut rpo_index = vec![NONE; n];
        for w in dfs.rpo_start.windows(2) {
            for (i, &b) in dfs.rpo[w[0] as usize..w[1] as usize].iter().enumerate() {
                rpo_index[b as usize] = i as u32;
            }
        }
        let idom_pre = dominators(&dfs, &pred_start, &preds);
        let dom_range = dominator_ranges(&dfs, &idom_pre, n);
        let mut idom = vec![NONE; n];
        for (w, &d) in idom_pre.iter().enumerate() {
            if d != NONE {
                idom[dfs.vertex[w] as usize] = dfs.vertex[d as usize];
            }
        }
        drop(idom_pre);

        let mut cfg = Cfg {
            blocks,
            func_blocks,
            succs,
            pred_start,
            preds,
            rpo_start: Vec::new(),
            rpo: Vec::new(),
            rpo_index,
            idom,
            dom_range,
            loops: Vec::new(),
            latch_start: vec![0],
            latches: Vec::new(),
            innermost: vec![NONE; n],
            callee_start: Vec::new(),
            callees: Vec::new(),
            address_taken: Vec::new(),
            function_reachable: Vec::new(),
        };
        cfg.find_loops(program, &dfs);
        cfg.rpo_start = dfs.rpo_start;
        cfg.rpo = dfs.rpo;
        cfg.call_graph(program);
        cfg
    }

    /// The natural loops and their nesting. Headers are taken from the innermost out (descending preorder:
    /// a loop's header strictly dominates the headers of the loops inside it, so comes earlier). Each loop's
    /// body is walked backwards from its latches; a block already in an inner loop stands for that whole
    /// loop through the representative of its set, the inner loop's header, whose predecessors are the only
    /// way into the inner loop from outside it. Every block joins a set once, so each edge is looked at once:
    /// O(m α(n)).
    fn find_loops(&mut self, program: &Program, dfs: &Dfs) {
        let n = self.blocks.len();
        let insns = program.instructions();
        // Headers and their latches, in block order.
        let mut loop_of_header = vec![NONE; n];
        for (h, header_of) in loop_of_header.iter_mut().enumerate() {
            if self.rpo_index[h] == NONE {
                continue;
            }
            let before = self.latches.len();
            let mut latch_slot = NONE;
            for &u in &self.preds[self.pred_start[h] as usize..self.pred_start[h + 1] as usize] {
                if self.latches.len() > before && self.latches.last() == Some(&u) {
                    continue; // both edges of a conditional jump
                }
                if self.dominates(h, u as usize) {
                    self.latches.push(u);
                    if self.succs[u as usize][0] == h as u32 {
                        let block = &self.blocks[u as usize];
                        latch_slot = block.end - insns[block.end_insn as usize - 1].slots() as u32;
                    }
                }
            }
            if self.latches.len() > before {
                *header_of = self.loops.len() as u32;
                self.loops.push(LoopData { header: h as u32, parent: NONE, depth: 0, latch_slot, first: 0, end: 0 });
                self.latch_start.push(self.latches.len() as u32);
            }
        }

        let mut sets = Sets::new(n);
        let mut work: Vec<u32> = Vec::new();
        // The loops in the order their bodies were found: inner ones before the loops around them.
        let mut found: Vec<u32> = Vec::with_capacity(self.loops.len());
        for &h in dfs.vertex.iter().rev() {
            let l = loop_of_header[h as usize];
            if l == NONE {
                continue;
            }
            found.push(l);
            self.innermost[h as usize] = l;
            let absorb = |x: u32, sets: &mut Sets, work: &mut Vec<u32>| {
                let y = sets.find(x);
                if y != h {
                    sets.union(h, y, h);
                    work.push(y);
                }
            };
            for &u in &self.latches[self.latch_start[l as usize] as usize..self.latch_start[l as usize + 1] as usize] {
                absorb(u, &mut sets, &mut work);
            }
            while let Some(y) = work.pop() {
                match self.innermost[y as usize] {
                    NONE => self.innermost[y as usize] = l,
                    inner => self.loops[inner as usize].parent = l,
                }
                let y = y as usize;
                for &p in &self.preds[self.pred_start[y] as usize..self.pred_start[y + 1] as usize] {
                    if self.rpo_index[p as usize] != NONE {
                        absorb(p, &mut sets, &mut work);
                    }
                }
            }
        }

        // Sizes of the loop forest's subtrees (inner loops first), then depths and preorder ranges (outer
        // loops first).
        for &l in &found {
            let l = l as usize;
            self.loops[l].end += 1;
            let parent = self.loops[l].parent;
            if parent != NONE {
                self.loops[parent as usize].end += self.loops[l].end;
            }
        }
        let mut next_child = vec![0u32; self.loops.len()];
        let mut next_root = 0;
        for &l in found.iter().rev() {
            let l = l as usize;
            let size = self.loops[l].end;
            let (first, depth) = match self.loops[l].parent {
                NONE => {
                    next_root += size;
                    (next_root - size, 1)
                }
                p => {
                    let first = next_child[p as usize];
                    next_child[p as usize] += size;
                    (first, self.loops[p as usize].depth + 1)
                }
            };
            next_child[l] = first + 1;
            let data = &mut self.loops[l];
            data.first = first;
            data.end = first + size;
            data.depth = depth;
        }
    }

    /// The call graph: callees per function, sorted and without repeats, and reachability from the entry.
    fn call_graph(&mut self, program: &Program) {
        let functions = program.functions();
        let nf = functions.len();
        let func_at = |t: i64| functions.partition_point(|f| f.start as i64 <= t) as u32 - 1;
        self.callee_start = vec![0];
        self.address_taken = vec![false; nf];
        let mut current: Vec<u32> = Vec::new();
        let flush = |current: &mut Vec<u32>, callees: &mut Vec<u32>, starts: &mut Vec<u32>| {
            current.sort_unstable();
            current.dedup();
            callees.append(current);
            starts.push(callees.len() as u32);
        };
        let mut f = 0;
        for (pc, insn) in program.iter() {
            while functions[f].end <= pc {
                flush(&mut current, &mut self.callees, &mut self.callee_start);
                f += 1;
            }
            match *insn {
                Instruction::CallLocal { .. } => {
                    current.extend(insn.branch_target(pc).map(func_at));
                }
                Instruction::LoadImm64 { value: Imm64::Func(off), .. } => {
                    let g = func_at(pc as i64 + 1 + off as i64);
                    current.push(g);
                    self.address_taken[g as usize] = true;
                }
                _ => {}
            }
        }
        while self.callee_start.len() <= nf {
            flush(&mut current, &mut self.callees, &mut self.callee_start);
        }
        self.function_reachable = vec![false; nf];
        let mut stack = vec![0u32];
        self.function_reachable[0] = true;
        while let Some(f) = stack.pop() {
            let f = f as usize;
            for &g in &self.callees[self.callee_start[f] as usize..self.callee_start[f + 1] as usize] {
                if !self.function_reachable[g as usize] {
                    self.function_reachable[g as usize] = true;
                    stack.push(g);
                }
            }
        }
    }

    // --- Blocks and functions ---

    /// Number of basic blocks.
    pub fn block_count(&self) -> usize {
        self.blocks.len()
    }

    /// All basic blocks, in slot order.
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// Basic block `b`.
    pub fn block(&self, b: usize) -> Block {
        self.blocks[b]
    }

    /// The block holding slot `pc` (either slot of an `lddw`), or `None` past the end of the program.
    pub fn block_of_pc(&self, pc: usize) -> Option<usize> {
        if self.blocks.last().is_none_or(|b| pc >= b.end as usize) {
            return None;
        }
        Some(self.blocks.partition_point(|b| b.start as usize <= pc) - 1)
    }

    /// The block holding the instruction with index `index` (into [`Program::instructions`]), if there is one.
    pub fn block_of_insn(&self, index: usize) -> Option<usize> {
        if self.blocks.last().is_none_or(|b| index >= b.end_insn as usize) {
            return None;
        }
        Some(self.blocks.partition_point(|b| b.first_insn as usize <= index) - 1)
    }

    /// Number of functions, as in [`Program::functions`].
    pub fn function_count(&self) -> usize {
        self.func_blocks.len() - 1
    }

    /// The blocks of function `f`; the first is its entry.
    pub fn function_blocks(&self, f: usize) -> Range<usize> {
        self.func_blocks[f] as usize..self.func_blocks[f + 1] as usize
    }

    /// The entry block of function `f`: the first of its blocks.
    pub fn entry(&self, f: usize) -> usize {
        self.func_blocks[f] as usize
    }

    /// The instructions of function `f`, as indices into [`Program::instructions`].
    pub fn function_insns(&self, f: usize) -> Range<usize> {
        let blocks = self.function_blocks(f);
        if blocks.is_empty() {
            return 0..0;
        }
        self.blocks[blocks.start].first_insn as usize..self.blocks[blocks.end - 1].end_insn as usize
    }

    /// The function holding slot `pc`, or `None` past the end of the program.
    pub fn function_of_pc(&self, pc: usize) -> Option<usize> {
        self.block_of_pc(pc).map(|b| self.blocks[b].function())
    }

    // --- Edges ---

    /// Where the jump ending block `b` goes (the target of `ja`, or of a conditional jump when taken).
    pub fn taken(&self, b: usize) -> Option<usize> {
        let t = self.succs[b][0];
        (t != NONE).then_some(t as usize)
    }

    /// The block after `b` when control runs on past its last instruction (`None` after `exit` and `ja`).
    pub fn fall_through(&self, b: usize) -> Option<usize> {
        let t = self.succs[b][1];
        (t != NONE).then_some(t as usize)
    }

    /// The successors of block `b`: the taken one first, then the fall-through one. A conditional jump to
    /// the next instruction gives the same block twice (two edges).
    pub fn successors(&self, b: usize) -> impl Iterator<Item = usize> {
        self.succs[b].into_iter().filter(|&s| s != NONE).map(|s| s as usize)
    }

    /// The predecessors of block `b`, ascending, one per edge (so a block can appear twice), unreachable ones
    /// included.
    pub fn predecessors(&self, b: usize) -> impl ExactSizeIterator<Item = usize> + '_ {
        self.preds[self.pred_start[b] as usize..self.pred_start[b + 1] as usize].iter().map(|&p| p as usize)
    }

    // --- Order and reachability ---

    /// Whether block `b` can be reached from its function's entry.
    pub fn reachable(&self, b: usize) -> bool {
        self.rpo_index[b] != NONE
    }

    /// The reachable blocks of function `f` in reverse postorder of a depth-first search from its entry that
    /// tries the taken successor first.
    pub fn rpo(&self, f: usize) -> impl ExactSizeIterator<Item = usize> + DoubleEndedIterator + '_ {
        self.rpo[self.rpo_start[f] as usize..self.rpo_start[f + 1] as usize].iter().map(|&b| b as usize)
    }

    /// The position of block `b` in its function's [`rpo`](Cfg::rpo), `None` if it is unreachable.
    pub fn rpo_index(&self, b: usize) -> Option<usize> {
        let i = self.rpo_index[b];
        (i != NONE).then_some(i as usize)
    }

    // --- Dominators ---

    /// The immediate dominator of block `b`; `None` for an entry block and for unreachable blocks.
    pub fn idom(&self, b: usize) -> Option<usize> {
        let d = self.idom[b];
        (d != NONE).then_some(d as usize)
    }

    /// Whether block `a` dominates block `b` (every path from the entry to `b` passes `a`; a block dominates
    /// itself). False if either is unreachable. O(1).
    pub fn dominates(&self, a: usize, b: usize) -> bool {
        let ([first, end], [x, _]) = (self.dom_range[a], self.dom_range[b]);
        first != NONE && x != NONE && first <= x && x < end
    }

    // --- Loops ---

    /// Number of natural loops in the whole program.
    pub fn loop_count(&self) -> usize {
        self.loops.len()
    }

    /// The loops of function `f` (loops are numbered in the slot order of their headers).
    pub fn loops_of(&self, f: usize) -> Range<usize> {
        let blocks = self.function_blocks(f);
        let lo = self.loops.partition_point(|l| (l.header as usize) < blocks.start);
        let hi = self.loops.partition_point(|l| (l.header as usize) < blocks.end);
        lo..hi
    }

    /// The header block of loop `l`.
    pub fn loop_header(&self, l: usize) -> usize {
        self.loops[l].header as usize
    }

    /// The loop whose header is block `b`, if it heads one.
    pub fn loop_of_header(&self, b: usize) -> Option<usize> {
        self.loops.binary_search_by_key(&(b as u32), |l| l.header).ok()
    }

    /// The innermost loop around loop `l`, if any.
    pub fn loop_parent(&self, l: usize) -> Option<usize> {
        let p = self.loops[l].parent;
        (p != NONE).then_some(p as usize)
    }

    /// How many loops contain loop `l`'s header, `l` included: 1 for an outermost loop.
    pub fn loop_depth(&self, l: usize) -> usize {
        self.loops[l].depth as usize
    }

    /// The sources of loop `l`'s back edges (its latches), ascending.
    pub fn latches(&self, l: usize) -> impl ExactSizeIterator<Item = usize> + '_ {
        self.latches[self.latch_start[l] as usize..self.latch_start[l + 1] as usize].iter().map(|&b| b as usize)
    }

    /// The slot of the last jump instruction (highest slot) that jumps back to loop `l`'s header, if a jump
    /// closes the loop (a back edge can also be a fall-through into the header).
    pub fn latch_slot(&self, l: usize) -> Option<usize> {
        let s = self.loops[l].latch_slot;
        (s != NONE).then_some(s as usize)
    }

    /// The innermost loop block `b` belongs to, if any.
    pub fn innermost_loop(&self, b: usize) -> Option<usize> {
        let l = self.innermost[b];
        (l != NONE).then_some(l as usize)
    }

    /// Whether block `b` belongs to loop `l` (directly or through a loop inside it). O(1).
    pub fn loop_contains(&self, l: usize, b: usize) -> bool {
        let m = self.innermost[b];
        m != NONE && {
            let (outer, inner) = (&self.loops[l], &self.loops[m as usize]);
            outer.first <= inner.first && inner.first < outer.end
        }
    }

    /// Whether control going from the instruction at slot `from` to the one at slot `to` stays inside the
    /// innermost loop `from` is in (always, if it is in none, or if either slot is outside the program).
    pub fn stays(&self, from: usize, to: usize) -> bool {
        let (Some(a), Some(b)) = (self.block_of_pc(from), self.block_of_pc(to)) else { return true };
        match self.innermost[a] {
            NONE => true,
            l => self.loop_contains(l as usize, b),
        }
    }

    /// The loop of function `f` nested deepest (with the greatest [`loop_depth`](Cfg::loop_depth)), the one
    /// with the earliest header among equals.
    pub fn deepest_loop(&self, f: usize) -> Option<usize> {
        self.loops_of(f).max_by(|&a, &b| self.loops[a].depth.cmp(&self.loops[b].depth).then(b.cmp(&a)))
    }

    /// [`deepest_loop`](Cfg::deepest_loop) as the slot of its header and its [`latch_slot`](Cfg::latch_slot).
    pub fn deepest(&self, f: usize) -> Option<(usize, Option<usize>)> {
        self.deepest_loop(f).map(|l| (self.blocks[self.loop_header(l)].start(), self.latch_slot(l)))
    }

    // --- Call graph ---

    /// The functions that function `f` calls (`call local`) or takes the address of (`lddw func`), ascending
    /// and without repeats. Every instruction of `f` counts, reachable or not.
    pub fn callees(&self, f: usize) -> impl ExactSizeIterator<Item = usize> + '_ {
        self.callees[self.callee_start[f] as usize..self.callee_start[f + 1] as usize].iter().map(|&g| g as usize)
    }

    /// Whether some instruction takes the address of function `f` (`lddw func`), making it a callback.
    pub fn address_taken(&self, f: usize) -> bool {
        self.address_taken[f]
    }

    /// Whether function `f` is reachable from the entry function through [`callees`](Cfg::callees).
    pub fn function_reachable(&self, f: usize) -> bool {
        self.function_reachable[f]
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use alloc::collections::BTreeSet;
    use alloc::string::String;
    use core::cell::Cell;
    use std::eprintln;

    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    use super::*;
    use crate::isa::{AluOp, Cond, Operand, Reg, Width};
    use crate::program::MAX_SLOTS;

    fn cfg(asm: &str) -> Cfg {
        Cfg::new(&Program::from_asm(asm).unwrap())
    }

    fn starts(c: &Cfg) -> Vec<usize> {
        c.blocks().iter().map(|b| b.start()).collect()
    }

    fn succs(c: &Cfg, b: usize) -> Vec<usize> {
        c.successors(b).collect()
    }

    fn preds(c: &Cfg, b: usize) -> Vec<usize> {
        c.predecessors(b).collect()
    }

    fn reg(r: u8) -> Reg {
        Reg::new(r).unwrap()
    }

    fn mov(r: u8, imm: i32) -> Instruction {
        Instruction::Alu { width: Width::W64, op: AluOp::Mov, dst: reg(r), src: Operand::Imm(imm) }
    }

    fn add(r: u8, imm: i32) -> Instruction {
        Instruction::Alu { width: Width::W64, op: AluOp::Add, dst: reg(r), src: Operand::Imm(imm) }
    }

    /// `if r == 0 goto pc + 1 + offset`.
    fn jeq(r: u8, offset: i16) -> Instruction {
        Instruction::Jump { width: Width::W64, cond: Cond::Eq, dst: reg(r), src: Operand::Imm(0), offset }
    }

    /// The offset of a jump or call at `pc` to `target`.
    fn rel(pc: usize, target: usize) -> i64 {
        target as i64 - pc as i64 - 1
    }

    // --- Hand-written cases ---

    #[test]
    fn straight_code() {
        let c = cfg("mov %r0, 1\ncall 1\nadd %r0, 2\nexit");
        assert_eq!(starts(&c), [0]);
        assert_eq!(c.block(0).insns(), 0..4);
        assert_eq!(succs(&c, 0), [] as [usize; 0]);
        assert!(c.reachable(0) && c.dominates(0, 0) && c.idom(0).is_none());
        assert_eq!(c.loop_count(), 0);
        assert_eq!(c.deepest(0), None);

        // A diamond: the conditional jump's taken successor comes first.
        let c = cfg("mov %r0, 1\njeq %r0, 1, +1\nmov %r0, 2\nexit");
        assert_eq!(starts(&c), [0, 2, 3]);
        assert_eq!((c.taken(0), c.fall_through(0)), (Some(2), Some(1)));
        assert_eq!(succs(&c, 0), [2, 1]);
        assert_eq!(succs(&c, 1), [2]);
        assert_eq!(preds(&c, 2), [0, 1]);
        assert_eq!(c.rpo(0).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!((c.idom(1), c.idom(2)), (Some(0), Some(0)));
        assert!(c.dominates(0, 2) && !c.dominates(1, 2));
        assert!(c.stays(1, 3) && c.stays(1, 2));
        assert_eq!((c.block_of_pc(1), c.block_of_pc(2), c.block_of_pc(4)), (Some(0), Some(1), None));
        assert_eq!((c.block_of_insn(3), c.block_of_insn(4)), (Some(2), None));
    }

    #[test]
    fn lddw_spans_two_slots() {
        let c = cfg("lddw %r0, 0x100000000\njeq %r0, 0, +2\nlddw %r0, 1\nexit");
        assert_eq!(starts(&c), [0, 3, 5]);
        assert_eq!(c.block(0).slots(), 0..3);
        assert_eq!(c.block(0).insns(), 0..2);
        assert_eq!(c.block(1).insns(), 2..3);
        assert_eq!((c.block_of_pc(1), c.block_of_pc(4), c.block_of_insn(2)), (Some(0), Some(1), Some(1)));
        assert_eq!(c.taken(0), Some(2));
    }

    #[test]
    fn a_counting_loop() {
        // 0: r0 = 0; 1: r0 += 1; 2: if r0 < 10 goto 1; 3: exit
        let c = cfg("mov %r0, 0\nadd %r0, 1\njlt %r0, 10, -2\nexit");
        assert_eq!(starts(&c), [0, 1, 3]);
        assert_eq!(succs(&c, 1), [1, 2]);
        assert_eq!(preds(&c, 1), [0, 1]);
        assert_eq!(c.loop_count(), 1);
        assert_eq!((c.loop_header(0), c.loop_parent(0), c.loop_depth(0)), (1, None, 1));
        assert_eq!(c.latches(0).collect::<Vec<_>>(), [1]);
        assert_eq!(c.latch_slot(0), Some(2));
        assert_eq!(c.loop_of_header(1), Some(0));
        assert_eq!(c.loop_of_header(0), None);
        assert_eq!([c.innermost_loop(0), c.innermost_loop(1), c.innermost_loop(2)], [None, Some(0), None]);
        assert_eq!(c.deepest(0), Some((1, Some(2))));
        assert!(c.stays(2, 1));
        assert!(!c.stays(2, 3));
        assert!(c.stays(0, 3));
    }

    #[test]
    fn nested_loops() {
        // 0: r1 = 0
        // 1: r2 = 0              outer header
        // 2: r2 += 1             inner header
        // 3: if r2 < 10 goto 2   inner latch
        // 4: r1 += 1
        // 5: if r1 < 10 goto 1   outer latch
        // 6: exit
        let c = cfg("mov %r1, 0\nmov %r2, 0\nadd %r2, 1\njlt %r2, 10, -2\nadd %r1, 1\njlt %r1, 10, -5\nexit");
        assert_eq!(starts(&c), [0, 1, 2, 4, 6]);
        assert_eq!(c.loop_count(), 2);
        let (outer, inner) = (0, 1);
        assert_eq!((c.loop_header(outer), c.loop_header(inner)), (1, 2));
        assert_eq!((c.loop_parent(inner), c.loop_parent(outer)), (Some(outer), None));
        assert_eq!((c.loop_depth(outer), c.loop_depth(inner)), (1, 2));
        assert_eq!(c.latches(outer).collect::<Vec<_>>(), [3]);
        assert_eq!(c.latches(inner).collect::<Vec<_>>(), [2]);
        let innermost: Vec<_> = (0..5).map(|b| c.innermost_loop(b)).collect();
        assert_eq!(innermost, [None, Some(outer), Some(inner), Some(outer), None]);
        assert!(c.loop_contains(outer, 2) && c.loop_contains(outer, 3) && !c.loop_contains(inner, 3));
        assert!(!c.loop_contains(outer, 0) && !c.loop_contains(outer, 4));
        assert_eq!(c.deepest(0), Some((2, Some(3))));
        assert!(c.stays(3, 2) && !c.stays(3, 4) && c.stays(4, 5));
        assert!(!c.stays(5, 6) && c.stays(5, 1));
        assert!(c.dominates(1, 3) && c.dominates(2, 3) && !c.dominates(3, 2));
    }

    #[test]
    fn a_forward_jump_can_be_the_way_round() {
        // The outer loop's step (4, 5) sits between the inner loop's test (3) and its body (7, 8):
        // 0: r1 = 0
        // 1: r2 = r1              outer header
        // 2: r2 += 1              inner header
        // 3: if r2 != 9 goto 7    stays in the inner loop when taken
        // 4: r1 += 1
        // 5: if r1 != 5 goto 1
        // 6: exit
        // 7: if r2 == 100 goto 6
        // 8: goto 2
        let asm = "mov %r1, 0\nmov %r2, %r1\nadd %r2, 1\njne %r2, 9, +3\nadd %r1, 1\njne %r1, 5, -5\nexit\n\
                   jeq %r2, 100, -2\nja -7";
        let c = cfg(asm);
        assert!(c.stays(3, 7));
        assert!(!c.stays(3, 4));
        assert!(c.stays(5, 1));
        assert!(!c.stays(7, 6));
        assert_eq!(c.deepest(0), Some((2, Some(8))));
        let inner = c.loop_of_header(c.block_of_pc(2).unwrap()).unwrap();
        assert_eq!(c.loop_depth(inner), 2);
    }

    #[test]
    fn several_back_edges_make_one_loop_closed_by_the_last() {
        // 1 is the header; 3 and 5 jump back to it.
        let asm = "mov %r0, 0\nadd %r0, 1\njeq %r0, 50, +3\njgt %r0, 7, -3\nadd %r0, 2\nja -5\nexit";
        let c = cfg(asm);
        assert_eq!(c.loop_count(), 1);
        assert_eq!(c.latches(0).map(|b| c.block(b).start()).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(c.deepest(0), Some((1, Some(5))));
        assert!(c.stays(3, 1) && c.stays(3, 4));
        assert!(!c.stays(2, 6));
    }

    #[test]
    fn a_fall_through_back_edge_has_no_latch_jump() {
        // 0: goto 2; 1: r0 += 1 (falls into the header); 2: if r0 < 9 goto 1; 3: exit
        let c = cfg("ja +1\nadd %r0, 1\njlt %r0, 9, -2\nexit");
        assert_eq!(starts(&c), [0, 1, 2, 3]);
        assert_eq!((c.idom(1), c.idom(2), c.idom(3)), (Some(2), Some(0), Some(2)));
        assert_eq!(c.loop_count(), 1);
        assert_eq!(c.loop_header(0), 2);
        assert_eq!(c.latches(0).collect::<Vec<_>>(), [1]);
        assert_eq!(c.deepest(0), Some((2, None)));
        assert_eq!(c.rpo(0).collect::<Vec<_>>(), [0, 2, 3, 1]);
    }

    #[test]
    fn unreachable_code() {
        // 1 is skipped; 4 loops on itself but nothing reaches it; 5 falls into the loop at 2 from dead code.
        let asm = "ja +1\nmov %r0, 1\nadd %r0, 1\njlt %r0, 9, -2\nexit\nja -1\nja -5";
        let c = cfg(asm);
        assert_eq!(starts(&c), [0, 1, 2, 4, 5, 6]);
        let reachable: Vec<_> = (0..6).map(|b| c.reachable(b)).collect();
        assert_eq!(reachable, [true, false, true, true, false, false]);
        assert_eq!(c.rpo(0).collect::<Vec<_>>(), [0, 2, 3]);
        assert_eq!(c.rpo_index(1), None);
        assert_eq!(c.idom(1), None);
        assert!(!c.dominates(0, 1) && !c.dominates(1, 1) && !c.dominates(1, 2));
        assert_eq!(preds(&c, 2), [0, 1, 2, 5]);
        // One loop, at 2; the dead self-loop at 5 is none, and dead code is in no loop.
        assert_eq!(c.loop_count(), 1);
        assert_eq!(c.latches(0).collect::<Vec<_>>(), [2]);
        assert_eq!(c.innermost_loop(4), None);
        assert_eq!(c.innermost_loop(5), None);
        assert!(!c.loop_contains(0, 5));
    }

    #[test]
    fn an_irreducible_cycle_is_no_loop() {
        // 0: if r1 == 0 goto 3     entry: into the cycle at A or at B
        // 1: r0 += 1               A
        // 2: if r0 > 9 goto 5
        // 3: r0 += 2               B
        // 4: goto 1
        // 5: exit
        let c = cfg("jeq %r1, 0, +2\nadd %r0, 1\njgt %r0, 9, +2\nadd %r0, 2\nja -4\nexit");
        assert_eq!(starts(&c), [0, 1, 3, 5]);
        assert_eq!((c.idom(1), c.idom(2), c.idom(3)), (Some(0), Some(0), Some(1)));
        assert_eq!(c.loop_count(), 0);
        assert!((0..4).all(|b| c.innermost_loop(b).is_none()));
        assert!(c.stays(4, 1));

        // Inside a natural loop (header 1), the cycle between 3 and 5 is entered at 3 and at 5.
        // 0: r0 = 0
        // 1: r0 += 1             header
        // 2: if r0 == 7 goto 5
        // 3: r0 += 2
        // 4: if r0 > 99 goto 8
        // 5: r0 += 3
        // 6: if r0 < 50 goto 3
        // 7: goto 1
        // 8: exit
        let asm = "mov %r0, 0\nadd %r0, 1\njeq %r0, 7, +2\nadd %r0, 2\njgt %r0, 99, +3\nadd %r0, 3\n\
                   jlt %r0, 50, -4\nja -7\nexit";
        let c = cfg(asm);
        assert_eq!(starts(&c), [0, 1, 3, 5, 7, 8]);
        assert_eq!(c.loop_count(), 1);
        assert_eq!(c.loop_header(0), 1);
        let innermost: Vec<_> = (0..6).map(|b| c.innermost_loop(b)).collect();
        assert_eq!(innermost, [None, Some(0), Some(0), Some(0), Some(0), None]);
    }

    #[test]
    fn functions_and_calls() {
        // The entry calls f and takes g's address; f calls g; dead code in the entry calls h, which takes
        // k's address.
        let asm = "call local f\nlddw %r1, func(g)\nexit\ncall local h\nexit\n\
                   f:\nmov %r0, 1\ncall local g\nexit\n\
                   g:\nja +0\nexit\n\
                   h:\nlddw %r2, func(k)\nexit\n\
                   k:\nexit";
        let p = Program::from_asm(asm).unwrap();
        let c = Cfg::new(&p);
        let fs = p.functions();
        assert_eq!(c.function_count(), 5);
        assert_eq!(fs.iter().map(|f| f.start).collect::<Vec<_>>(), [0, 6, 9, 11, 14]);
        // Calls do not end blocks; blocks never cross functions.
        assert_eq!(starts(&c), [0, 4, 6, 9, 10, 11, 14]);
        let funcs: Vec<_> = c.blocks().iter().map(|b| b.function()).collect();
        assert_eq!(funcs, [0, 0, 1, 2, 2, 3, 4]);
        assert_eq!((0..5).map(|f| c.function_blocks(f)).collect::<Vec<_>>(), [0..2, 2..3, 3..5, 5..6, 6..7]);
        assert_eq!((0..5).map(|f| c.entry(f)).collect::<Vec<_>>(), [0, 2, 3, 5, 6]);
        assert_eq!(c.function_insns(2), 8..10);
        assert_eq!(c.function_of_pc(10), Some(2));
        assert_eq!(c.function_of_pc(13), Some(3));
        assert_eq!(c.function_of_pc(15), None);
        // `ja +0` at the end of g's first block: its successor is g's next block, never the next function.
        assert_eq!(succs(&c, 3), [4]);
        assert_eq!(succs(&c, 4), [] as [usize; 0]);
        assert!(!c.reachable(1));
        assert_eq!(c.rpo(2).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(c.idom(4), Some(3));
        assert!(!c.dominates(0, 2));
        let callees: Vec<Vec<usize>> = (0..5).map(|f| c.callees(f).collect()).collect();
        assert_eq!(callees, [vec![1, 2, 3], vec![2], vec![], vec![4], vec![]]);
        let taken: Vec<_> = (0..5).map(|f| c.address_taken(f)).collect();
        assert_eq!(taken, [false, false, true, false, true]);
        assert!((0..5).all(|f| c.function_reachable(f)));

        let asm = "call local f\nexit\nf:\nexit\ng:\ncall local f\nexit\nh:\nlddw %r1, func(g)\nexit";
        // g and h are functions only if something names them: h names g, nothing names h, so h is part of g.
        let p = Program::from_asm(asm).unwrap();
        let c = Cfg::new(&p);
        assert_eq!(c.function_count(), 3);
        assert_eq!(c.callees(2).collect::<Vec<_>>(), [1, 2]);
        let reachable: Vec<_> = (0..3).map(|f| c.function_reachable(f)).collect();
        assert_eq!(reachable, [true, true, false]);
        // Recursion: g calls itself.
        let c = cfg("call local g\nexit\ng:\njeq %r1, 0, +1\ncall local g\nexit");
        assert_eq!(c.callees(1).collect::<Vec<_>>(), [1]);
        assert_eq!(c.loop_count(), 0);
    }

    // --- Random programs against a naive reference ---

    /// One instruction of a generated function; targets are instruction indices in the same function,
    /// callees function indices.
    #[derive(Debug, Clone, Copy)]
    enum Op {
        Mov,
        Lddw,
        Helper,
        Jump(usize),
        Ja(usize),
        Ja32(usize),
        Exit,
        Call(usize),
        Func(usize),
    }

    impl Op {
        fn slots(self) -> usize {
            if matches!(self, Op::Lddw | Op::Func(_)) {
                2
            } else {
                1
            }
        }
    }

    /// Programs of 1 to 5 functions of 1 to 40 instructions; each function ends with `exit` or `ja`, so
    /// the program is valid. A function nothing calls merges into the one before it, which stays valid.
    fn arb_functions() -> impl Strategy<Value = Vec<Vec<Op>>> {
        let op = (0u8..20, any::<u16>(), any::<u16>());
        prop::collection::vec(prop::collection::vec(op, 1..40), 1..6).prop_map(|funcs| {
            let nf = funcs.len();
            funcs
                .iter()
                .map(|ops| {
                    let len = ops.len();
                    ops.iter()
                        .enumerate()
                        .map(|(i, &(kind, a, b))| {
                            let (t, g) = (a as usize % len, b as usize % nf);
                            if i + 1 == len {
                                return if kind % 3 == 0 { Op::Ja(t) } else { Op::Exit };
                            }
                            match kind {
                                0..=5 => Op::Mov,
                                6 => Op::Lddw,
                                7 => Op::Helper,
                                8..=11 => Op::Jump(t),
                                12 | 13 => Op::Ja(t),
                                14 => Op::Ja32(t),
                                15 => Op::Exit,
                                16 | 17 => Op::Call(g),
                                _ => Op::Func(g),
                            }
                        })
                        .collect()
                })
                .collect()
        })
    }

    fn assemble(funcs: &[Vec<Op>]) -> Vec<Instruction> {
        let mut pcs: Vec<Vec<usize>> = Vec::new();
        let mut pc = 0;
        for ops in funcs {
            pcs.push(ops.iter().map(|op| (pc, pc += op.slots()).0).collect());
        }
        let mut out = Vec::new();
        for (f, ops) in funcs.iter().enumerate() {
            for (i, &op) in ops.iter().enumerate() {
                let pc = pcs[f][i];
                out.push(match op {
                    Op::Mov => mov((i % 10) as u8, i as i32),
                    Op::Lddw => Instruction::LoadImm64 { dst: reg(3), value: Imm64::Const(1 << 40) },
                    Op::Helper => Instruction::Call { id: 1 },
                    Op::Jump(t) => jeq((i % 10) as u8, rel(pc, pcs[f][t]) as i16),
                    Op::Ja(t) => Instruction::Ja { offset: rel(pc, pcs[f][t]) as i16 },
                    Op::Ja32(t) => Instruction::Ja32 { offset: rel(pc, pcs[f][t]) as i32 },
                    Op::Exit => Instruction::Exit,
                    Op::Call(g) => Instruction::CallLocal { offset: rel(pc, pcs[g][0]) as i32 },
                    Op::Func(g) => {
                        Instruction::LoadImm64 { dst: reg(1), value: Imm64::Func(rel(pc, pcs[g][0]) as i32) }
                    }
                });
            }
        }
        out
    }

    /// The reference: blocks from sets of leaders, dominator sets by iteration to a fixed point, and each
    /// loop's body by walking back from its latches.
    struct Reference {
        starts: Vec<usize>,
        function: Vec<usize>,
        /// Slot of each block's last instruction.
        last: Vec<usize>,
        succs: Vec<Vec<usize>>,
        preds: Vec<Vec<usize>>,
        reach: Vec<bool>,
        /// `dom[b][a]`: `a` dominates `b`.
        dom: Vec<Vec<bool>>,
        /// Header, latches and body of each loop, in header order.
        loops: Vec<(usize, Vec<usize>, Vec<bool>)>,
    }

    impl Reference {
        fn new(p: &Program) -> Reference {
            let slots = p.slot_count();
            let mut leaders: BTreeSet<usize> = p.functions().iter().map(|f| f.start).collect();
            let mut at: Vec<Option<&Instruction>> = vec![None; slots];
            for (pc, insn) in p.iter() {
                at[pc] = Some(insn);
                let jump = matches!(insn, Instruction::Ja { .. } | Instruction::Ja32 { .. } | Instruction::Jump { .. });
                if jump {
                    leaders.insert(insn.branch_target(pc).unwrap() as usize);
                }
                if jump || *insn == Instruction::Exit {
                    leaders.insert(pc + 1);
                }
            }
            leaders.remove(&slots);
            let starts: Vec<usize> = leaders.into_iter().collect();
            let n = starts.len();
            let block_of = |pc: usize| starts.iter().rposition(|&s| s <= pc).unwrap();
            let function: Vec<usize> =
                starts.iter().map(|&s| p.functions().iter().position(|f| f.start <= s && s < f.end).unwrap()).collect();
            let mut last = Vec::new();
            let mut succs = Vec::new();
            for b in 0..n {
                let end = starts.get(b + 1).copied().unwrap_or(slots);
                let pc = (starts[b]..end).rev().find(|&pc| at[pc].is_some()).unwrap();
                let insn = at[pc].unwrap();
                last.push(pc);
                let target = || block_of(insn.branch_target(pc).unwrap() as usize);
                succs.push(match insn {
                    Instruction::Exit => vec![],
                    Instruction::Ja { .. } | Instruction::Ja32 { .. } => vec![target()],
                    Instruction::Jump { .. } => vec![target(), block_of(pc + 1)],
                    _ => vec![block_of(pc + insn.slots())],
                });
            }
            let mut preds = vec![Vec::new(); n];
            for (b, s) in succs.iter().enumerate() {
                for &t in s {
                    preds[t].push(b);
                }
            }
            let entries: Vec<usize> = p.functions().iter().map(|f| block_of(f.start)).collect();
            let mut reach = vec![false; n];
            let mut work = entries.clone();
            while let Some(b) = work.pop() {
                if !reach[b] {
                    reach[b] = true;
                    work.extend(&succs[b]);
                }
            }
            let mut dom: Vec<Vec<bool>> =
                (0..n).map(|b| (0..n).map(|a| function[a] == function[b] && reach[a]).collect()).collect();
            for &e in &entries {
                dom[e] = (0..n).map(|a| a == e).collect();
            }
            let mut changed = true;
            while changed {
                changed = false;
                for b in (0..n).filter(|&b| reach[b] && !entries.contains(&b)) {
                    let mut new: Vec<bool> = dom[b].clone();
                    for &q in preds[b].iter().filter(|&&q| reach[q]) {
                        for a in 0..n {
                            new[a] &= dom[q][a];
                        }
                    }
                    new[b] = true;
                    if new != dom[b] {
                        dom[b] = new;
                        changed = true;
                    }
                }
            }
            let mut loops = Vec::new();
            for h in (0..n).filter(|&h| reach[h]) {
                let mut latches: Vec<usize> = preds[h].iter().copied().filter(|&u| reach[u] && dom[u][h]).collect();
                latches.sort_unstable();
                latches.dedup();
                if latches.is_empty() {
                    continue;
                }
                let mut body = vec![false; n];
                body[h] = true;
                let mut work = latches.clone();
                while let Some(b) = work.pop() {
                    if !body[b] {
                        body[b] = true;
                        work.extend(preds[b].iter().copied().filter(|&q| reach[q]));
                    }
                }
                loops.push((h, latches, body));
            }
            Reference { starts, function, last, succs, preds, reach, dom, loops }
        }

        fn block_of(&self, pc: usize) -> usize {
            self.starts.iter().rposition(|&s| s <= pc).unwrap()
        }

        fn size(&self, l: usize) -> usize {
            self.loops[l].2.iter().filter(|&&x| x).count()
        }

        /// The smallest loop whose body holds `b` and that is not `except`.
        fn smallest_around(&self, b: usize, except: Option<usize>) -> Option<usize> {
            (0..self.loops.len()).filter(|&l| self.loops[l].2[b] && Some(l) != except).min_by_key(|&l| self.size(l))
        }

        /// Reverse postorder of a depth-first search, taken successors first: entering a block pushes its
        /// leaving and then its successors in reverse, so they are entered in order.
        fn rpo(&self, entry: usize) -> Vec<usize> {
            enum Step {
                Enter(usize),
                Leave(usize),
            }
            let mut seen = vec![false; self.starts.len()];
            let mut post = Vec::new();
            let mut stack = vec![Step::Enter(entry)];
            while let Some(step) = stack.pop() {
                match step {
                    Step::Enter(b) if !seen[b] => {
                        seen[b] = true;
                        stack.push(Step::Leave(b));
                        stack.extend(self.succs[b].iter().rev().map(|&s| Step::Enter(s)));
                    }
                    Step::Enter(_) => {}
                    Step::Leave(b) => post.push(b),
                }
            }
            post.reverse();
            post
        }
    }

    /// What the random programs exercised.
    #[derive(Default)]
    struct Seen {
        functions: Cell<usize>,
        with_calls: Cell<usize>,
        unreachable: Cell<usize>,
        loops: Cell<usize>,
        nested: Cell<usize>,
        irreducible: Cell<usize>,
    }

    fn bump(c: &Cell<usize>, yes: bool) {
        c.set(c.get() + yes as usize);
    }

    fn check_against_reference(p: &Program, seen: &Seen) {
        let c = Cfg::new(p);
        let r = Reference::new(p);
        let n = r.starts.len();
        assert_eq!(starts(&c), r.starts);
        assert_eq!(c.blocks().iter().map(|b| b.function()).collect::<Vec<_>>(), r.function);
        for (b, block) in c.blocks().iter().enumerate() {
            assert_eq!(block.end(), r.starts.get(b + 1).copied().unwrap_or(p.slot_count()));
            for i in block.insns() {
                assert_eq!(c.block_of_insn(i), Some(b));
            }
            for pc in block.slots() {
                assert_eq!(c.block_of_pc(pc), Some(b));
                assert_eq!(c.function_of_pc(pc), Some(block.function()));
            }
        }
        let pcs: Vec<usize> = p.iter().map(|(pc, _)| pc).collect();
        for f in 0..c.function_count() {
            let blocks = c.function_blocks(f);
            assert_eq!(blocks.clone().map(|b| c.block(b).function()).collect::<Vec<_>>(), vec![f; blocks.len()]);
            let insns = c.function_insns(f);
            assert_eq!(pcs[insns.start], p.functions()[f].start);
            assert_eq!(pcs.get(insns.end).copied().unwrap_or(p.slot_count()), p.functions()[f].end);
        }

        // Edges, reachability, order.
        for b in 0..n {
            assert_eq!(succs(&c, b), r.succs[b]);
            let mut expected = r.preds[b].clone();
            expected.sort_unstable();
            assert_eq!(preds(&c, b), expected);
            assert_eq!(c.reachable(b), r.reach[b]);
            assert_eq!(c.rpo_index(b).is_some(), r.reach[b]);
        }
        for f in 0..c.function_count() {
            let rpo: Vec<usize> = c.rpo(f).collect();
            assert_eq!(rpo, r.rpo(c.entry(f)));
            for (i, &b) in rpo.iter().enumerate() {
                assert_eq!(c.rpo_index(b), Some(i));
            }
        }

        // Dominators.
        let dominators: Vec<usize> = r.dom.iter().map(|d| d.iter().filter(|&&x| x).count()).collect();
        for b in 0..n {
            for a in 0..n {
                assert_eq!(c.dominates(a, b), r.reach[a] && r.reach[b] && r.dom[b][a], "{a} dom {b}");
            }
            let strict = (0..n).filter(|&a| a != b && r.reach[b] && r.dom[b][a]);
            let idom = strict.max_by_key(|&a| dominators[a]);
            assert_eq!(c.idom(b), idom, "idom of {b}");
        }

        // Loops.
        assert_eq!(c.loop_count(), r.loops.len());
        for (l, (h, latches, body)) in r.loops.iter().enumerate() {
            assert_eq!(c.loop_header(l), *h);
            assert_eq!(c.loop_of_header(*h), Some(l));
            assert_eq!(c.latches(l).collect::<Vec<_>>(), *latches);
            let start = r.starts[*h] as i64;
            let jumps_back = latches
                .iter()
                .map(|&u| r.last[u])
                .filter(|&pc| {
                    let insn = p.instructions()[pcs.binary_search(&pc).unwrap()];
                    !matches!(insn, Instruction::CallLocal { .. }) && insn.branch_target(pc) == Some(start)
                })
                .max();
            assert_eq!(c.latch_slot(l), jumps_back);
            assert_eq!(c.loop_parent(l), r.smallest_around(*h, Some(l)));
            let depth = r.loops.iter().filter(|o| o.2[*h]).count();
            assert_eq!(c.loop_depth(l), depth);
            for (b, &inside) in body.iter().enumerate() {
                assert_eq!(c.loop_contains(l, b), inside, "loop {l} block {b}");
            }
        }
        let innermost: Vec<Option<usize>> = (0..n).map(|b| r.smallest_around(b, None)).collect();
        for (b, &inner) in innermost.iter().enumerate() {
            assert_eq!(c.innermost_loop(b), inner);
            assert_eq!(c.loop_of_header(b), r.loops.iter().position(|l| l.0 == b));
        }
        for f in 0..c.function_count() {
            let loops = c.loops_of(f);
            assert!(loops.clone().all(|l| r.function[r.loops[l].0] == f));
            let deepest = loops.max_by_key(|&l| (c.loop_depth(l), core::cmp::Reverse(l)));
            assert_eq!(c.deepest_loop(f), deepest);
        }
        let block_of: Vec<usize> = (0..p.slot_count()).map(|pc| r.block_of(pc)).collect();
        for from in 0..p.slot_count() {
            for to in 0..p.slot_count() + 1 {
                let expected = match (innermost[block_of[from]], block_of.get(to)) {
                    (Some(l), Some(&b)) => r.loops[l].2[b],
                    _ => true,
                };
                assert_eq!(c.stays(from, to), expected, "stays({from}, {to})");
            }
        }

        // The call graph.
        let nf = p.functions().len();
        let mut callees = vec![BTreeSet::new(); nf];
        let mut taken = vec![false; nf];
        for (pc, insn) in p.iter() {
            let f = c.function_of_pc(pc).unwrap();
            let target = match *insn {
                Instruction::CallLocal { .. } => insn.branch_target(pc).unwrap() as usize,
                Instruction::LoadImm64 { value: Imm64::Func(off), .. } => (pc as i64 + 1 + off as i64) as usize,
                _ => continue,
            };
            let g = p.functions().iter().position(|g| g.start == target).unwrap();
            callees[f].insert(g);
            taken[g] |= matches!(insn, Instruction::LoadImm64 { .. });
        }
        let mut reach = vec![false; nf];
        let mut work = vec![0];
        while let Some(f) = work.pop() {
            if !reach[f] {
                reach[f] = true;
                work.extend(callees[f].iter().copied());
            }
        }
        for f in 0..nf {
            assert_eq!(c.callees(f).collect::<Vec<_>>(), callees[f].iter().copied().collect::<Vec<_>>());
            assert_eq!(c.address_taken(f), taken[f]);
            assert_eq!(c.function_reachable(f), reach[f]);
        }

        bump(&seen.functions, nf > 1);
        bump(&seen.with_calls, callees.iter().any(|c| !c.is_empty()));
        bump(&seen.unreachable, r.reach.iter().any(|&x| !x));
        bump(&seen.loops, !r.loops.is_empty());
        bump(&seen.nested, (0..r.loops.len()).any(|l| c.loop_depth(l) > 1));
        // A retreating edge of the search whose target does not dominate its source.
        let irreducible =
            (0..n).any(|u| r.succs[u].iter().any(|&v| r.reach[u] && c.rpo_index(v) <= c.rpo_index(u) && !r.dom[u][v]));
        bump(&seen.irreducible, irreducible);
    }

    #[test]
    fn random_programs_match_the_reference() {
        const CASES: u32 = 3000;
        let config = Config { cases: CASES, failure_persistence: None, ..Config::default() };
        let mut runner = TestRunner::new(config);
        let (valid, invalid) = (Cell::new(0usize), Cell::new(0usize));
        let seen = Seen::default();
        runner
            .run(&arb_functions(), |funcs| {
                let program = Program::from_instructions(assemble(&funcs));
                bump(&valid, program.is_ok());
                bump(&invalid, program.is_err());
                prop_assume!(program.is_ok());
                check_against_reference(&program.unwrap(), &seen);
                Ok(())
            })
            .unwrap();
        let (valid, invalid) = (valid.get(), invalid.get());
        let mut report = String::new();
        for (name, c) in [
            ("several functions", &seen.functions),
            ("calls", &seen.with_calls),
            ("unreachable blocks", &seen.unreachable),
            ("loops", &seen.loops),
            ("nested loops", &seen.nested),
            ("irreducible cycles", &seen.irreducible),
        ] {
            report += &alloc::format!(", {} with {name}", c.get());
        }
        eprintln!("cfg: {valid} of {} generated programs valid{report}", valid + invalid);
        assert!(valid >= CASES as usize && invalid * 100 <= valid, "too many invalid programs: {invalid}");
    }

    // --- Programs of a million slots in the worst shapes for each part ---

    #[test]
    fn scale_a_chain() {
        // Every `ja +0` ends a block: a chain of MAX_SLOTS blocks, each dominating the next.
        let mut insns = vec![Instruction::Ja { offset: 0 }; MAX_SLOTS - 1];
        insns.push(Instruction::Exit);
        let c = Cfg::new(&Program::from_instructions(insns).unwrap());
        let n = c.block_count();
        assert_eq!(n, MAX_SLOTS);
        assert_eq!(c.idom(n - 1), Some(n - 2));
        assert!(c.dominates(0, n - 1) && c.dominates(n / 2, n - 1) && !c.dominates(n - 1, n / 2));
        assert!(c.rpo(0).eq(0..n));
        assert_eq!(c.loop_count(), 0);

        // Conditional jumps to the next instruction: two edges each.
        let mut insns = vec![jeq(1, 0); MAX_SLOTS - 1];
        insns.push(Instruction::Exit);
        let c = Cfg::new(&Program::from_instructions(insns).unwrap());
        assert_eq!(c.block_count(), MAX_SLOTS);
        assert_eq!(preds(&c, 7), [6, 6]);
        assert_eq!(c.idom(MAX_SLOTS - 1), Some(MAX_SLOTS - 2));
    }

    #[test]
    fn scale_a_ladder_back_to_the_entry() {
        // Rung i: `if r1 == 0 goto rung i + 1`, else `goto 0`: one loop with a latch per rung.
        let rungs = (MAX_SLOTS - 1) / 2;
        let mut insns = Vec::with_capacity(MAX_SLOTS);
        for i in 0..rungs {
            insns.push(jeq(1, 1));
            insns.push(Instruction::Ja32 { offset: rel(2 * i + 1, 0) as i32 });
        }
        insns.push(Instruction::Exit);
        let c = Cfg::new(&Program::from_instructions(insns).unwrap());
        assert_eq!(c.block_count(), 2 * rungs + 1);
        assert_eq!(c.loop_count(), 1);
        assert_eq!(c.loop_header(0), 0);
        assert_eq!(c.latches(0).len(), rungs);
        assert_eq!(c.latch_slot(0), Some(2 * rungs - 1));
        assert_eq!(c.idom(2 * rungs - 2), Some(2 * rungs - 4));
        assert_eq!(c.idom(2 * rungs - 1), Some(2 * rungs - 2));
        assert!((0..2 * rungs).all(|b| c.innermost_loop(b) == Some(0)));
        assert!(!c.loop_contains(0, 2 * rungs));
        assert!(c.stays(2 * rungs - 2, 2 * rungs - 1) && !c.stays(2 * rungs - 2, 2 * rungs));
    }

    #[test]
    fn scale_crossing_chains() {
        // Two chains of tests from the entry, C and A, where the i-th test of each can exit at x_i. The search
        // goes down C first, so x_i hangs under c_i in its tree, yet its immediate dominator is the entry: the
        // shape that makes a walk up the dominator tree from the search parent (Semi-NCA's last step)
        // quadratic.
        //   0: if r3 == 0 goto c_0     1: goto a_0
        //   c_i: if r1 == 0 goto x_i   c_i + 1: goto c_i+1
        //   a_i: if r2 == 0 goto x_i   a_i + 1: goto a_i+1
        //   x_i: exit
        let groups = (MAX_SLOTS - 3) / 5;
        let end = 2 + 5 * groups;
        let c_at = |i: usize| if i < groups { 2 + 5 * i } else { end };
        let mut insns = vec![jeq(3, 1), Instruction::Ja { offset: 2 }];
        for i in 0..groups {
            let g = c_at(i);
            insns.push(jeq(1, 3));
            insns.push(Instruction::Ja { offset: rel(g + 1, c_at(i + 1)) as i16 });
            insns.push(jeq(2, 1));
            insns.push(Instruction::Ja {
                offset: rel(g + 3, if i + 1 < groups { c_at(i + 1) + 2 } else { end }) as i16,
            });
            insns.push(Instruction::Exit);
        }
        insns.push(Instruction::Exit);
        let p = Program::from_instructions(insns).unwrap();
        let c = Cfg::new(&p);
        assert_eq!(c.block_count(), p.slot_count());
        for i in (0..groups).step_by(997).chain([groups - 1]) {
            let g = c_at(i);
            assert_eq!(c.idom(g + 4), Some(0), "x_{i}");
            assert_eq!(c.idom(g + 1), Some(g));
            assert!(c.dominates(2, g) && !c.dominates(2, g + 2));
        }
        assert_eq!(c.idom(end), Some(0));
        assert_eq!(c.loop_count(), 0);
    }

    #[test]
    fn scale_deep_nesting() {
        // k loops, each inside the one before: headers at 1..=k, the innermost body at k + 1, then for
        // each level from the innermost out `if r1 == 0 goto next level` and `goto its header`.
        let k = (MAX_SLOTS - 3) / 3;
        let mut insns = vec![mov(0, 0)];
        insns.extend((0..k).map(|_| add(0, 1)));
        insns.push(mov(2, 0));
        for level in (1..=k).rev() {
            let pc = insns.len();
            insns.push(jeq(1, 1));
            insns.push(Instruction::Ja32 { offset: rel(pc + 1, level) as i32 });
        }
        insns.push(Instruction::Exit);
        let p = Program::from_instructions(insns).unwrap();
        let c = Cfg::new(&p);
        assert_eq!(c.loop_count(), k);
        let body = c.block_of_pc(k + 1).unwrap();
        assert_eq!(c.innermost_loop(body), Some(k - 1));
        assert_eq!(c.loop_depth(k - 1), k);
        assert_eq!(c.loop_parent(k - 1), Some(k - 2));
        assert_eq!(c.loop_parent(0), None);
        assert!(c.loop_contains(0, body) && c.loop_contains(k / 2, body));
        assert_eq!(c.deepest(0), Some((k, Some(k + 3))));
        // The outermost level's latch pair, just before the exit.
        let last = c.block_of_pc(p.slot_count() - 3).unwrap();
        assert_eq!(c.innermost_loop(last), Some(0));
        assert!(!c.stays(k + 2, k + 4) && c.stays(k + 2, k + 3));
        assert_eq!(c.idom(body), Some(body - 1));
    }

    #[test]
    fn scale_many_functions() {
        // Function j takes the address of j + 1 and calls it: a call chain through every function.
        let nf = MAX_SLOTS / 4;
        let mut insns = Vec::with_capacity(MAX_SLOTS);
        for j in 0..nf - 1 {
            let pc = 4 * j;
            insns.push(Instruction::LoadImm64 { dst: reg(1), value: Imm64::Func(rel(pc, pc + 4) as i32) });
            insns.push(Instruction::CallLocal { offset: rel(pc + 2, pc + 4) as i32 });
            insns.push(Instruction::Exit);
        }
        insns.push(mov(0, 0));
        insns.push(Instruction::Exit);
        let p = Program::from_instructions(insns).unwrap();
        let c = Cfg::new(&p);
        assert_eq!(c.function_count(), nf);
        assert_eq!(c.block_count(), nf);
        assert!((0..nf).all(|f| c.function_reachable(f)));
        assert!((1..nf).all(|f| c.address_taken(f)) && !c.address_taken(0));
        assert_eq!(c.callees(nf / 2).collect::<Vec<_>>(), [nf / 2 + 1]);
        assert_eq!(c.callees(nf - 1).len(), 0);
        assert_eq!(c.function_of_pc(4 * (nf / 3) + 3), Some(nf / 3));
        assert_eq!(c.entry(nf / 3), nf / 3);
        assert!((0..nf).step_by(101).all(|f| c.idom(c.entry(f)).is_none()));
    }

    #[test]
    fn scale_random_jumps() {
        // A million slots of jumps to random places near and far: no reference, but the answers must hang
        // together.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut random = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let slots = MAX_SLOTS;
        let mut insns = Vec::with_capacity(slots);
        for pc in 0..slots - 1 {
            let near = (pc as i64 + random(60_000) as i64 - 30_000).clamp(0, slots as i64 - 1) as usize;
            insns.push(match random(8) {
                0..=3 => add(0, 1),
                4 | 5 => jeq(1, rel(pc, near) as i16),
                6 => Instruction::Ja32 { offset: rel(pc, random(slots)) as i32 },
                _ => Instruction::Ja { offset: rel(pc, near) as i16 },
            });
        }
        insns.push(Instruction::Exit);
        let c = Cfg::new(&Program::from_instructions(insns).unwrap());
        let n = c.block_count();
        let reachable = (0..n).filter(|&b| c.reachable(b)).count();
        assert_eq!(c.rpo(0).len(), reachable);
        for b in (0..n).filter(|&b| c.reachable(b)) {
            if let Some(d) = c.idom(b) {
                assert!(c.dominates(d, b) && !c.dominates(b, d));
                assert!(c.predecessors(b).any(|q| c.reachable(q) && c.dominates(d, q)));
            }
            if let Some(l) = c.innermost_loop(b) {
                assert!(c.loop_contains(l, b) && c.dominates(c.loop_header(l), b));
                assert!(c.loop_parent(l).is_none_or(|p| c.loop_contains(p, b)));
            }
        }
        for l in 0..c.loop_count() {
            let h = c.loop_header(l);
            assert!(c.latches(l).all(|u| c.dominates(h, u) && c.loop_contains(l, u)));
            assert_eq!(c.loop_depth(l), c.loop_parent(l).map_or(1, |p| c.loop_depth(p) + 1));
        }
        eprintln!("cfg: random jumps: {n} blocks, {reachable} reachable, {} loops", c.loop_count());
    }
}
