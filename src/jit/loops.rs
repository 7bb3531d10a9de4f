//! The loops of a BPF function: natural loops found with dominators on its basic blocks.
//!
//! The translator uses them to lay code out: at a conditional jump with one way inside the loop it
//! is in and one way out, the way that stays falls through; and `placement` aligns the loop nested
//! deepest. Nothing here affects what the code computes, only where it goes.

use alloc::vec;
use alloc::vec::Vec;

use crate::isa::Instruction;
use crate::program::{Function, Program};

/// Functions with more basic blocks than this are not analysed (every jump is then taken to stay
/// in its loop): the analysis takes time and memory proportional to blocks times loops.
const MAX_BLOCKS: usize = 4096;

/// A natural loop: a header and the blocks that reach one of its back edges without passing it.
struct Loop {
    head: usize,
    /// `body[b]`: block `b` belongs to the loop.
    body: Vec<bool>,
    size: usize,
    /// The last backward jump to the header (the slot of the instruction), if a jump closes it.
    latch: Option<usize>,
}

/// The loops of one function.
pub(crate) struct Loops {
    /// First slot of each basic block, ascending.
    starts: Vec<usize>,
    loops: Vec<Loop>,
    /// For each block, the index of the smallest loop it belongs to.
    innermost: Vec<Option<usize>>,
}

impl Loops {
    /// Finds the loops of `f`, whose basic blocks start at `starts` (ascending, the first at `f.start`).
    pub(crate) fn analyse(program: &Program, f: Function, starts: &[usize]) -> Loops {
        let none = Loops { starts: starts.to_vec(), loops: Vec::new(), innermost: vec![None; starts.len()] };
        let n = starts.len();
        if n == 0 || n > MAX_BLOCKS {
            return none;
        }
        let block_of = |pc: usize| block_of(starts, pc);

        // Successors, from each block's last instruction.
        let mut last: Vec<Option<(usize, &Instruction)>> = vec![None; n];
        for (pc, insn) in program.function_iter(f) {
            if let Some(b) = block_of(pc) {
                last[b] = Some((pc, insn));
            }
        }
        let mut succs: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (b, l) in last.iter().enumerate() {
            let Some((pc, insn)) = *l else { continue };
            let next = pc + insn.slots();
            let target = insn.branch_target(pc).and_then(|t| usize::try_from(t).ok());
            let to: Vec<usize> = match insn {
                Instruction::Exit => Vec::new(),
                Instruction::Ja { .. } | Instruction::Ja32 { .. } => target.into_iter().collect(),
                Instruction::Jump { .. } => target.into_iter().chain([next]).collect(),
                _ => vec![next],
            };
            succs[b] = to.into_iter().filter(|&pc| pc >= f.start && pc < f.end).filter_map(block_of).collect();
        }
        let mut preds: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (b, s) in succs.iter().enumerate() {
            for &t in s {
                preds[t].push(b);
            }
        }

        // Reverse postorder from the entry block, and immediate dominators (Cooper, Harvey and
        // Kennedy's iteration over it).
        let mut order = Vec::with_capacity(n);
        let mut seen = vec![false; n];
        let mut stack = vec![(0usize, 0usize)];
        seen[0] = true;
        while let Some(&mut (b, ref mut i)) = stack.last_mut() {
            if let Some(&s) = succs[b].get(*i) {
                *i += 1;
                if !seen[s] {
                    seen[s] = true;
                    stack.push((s, 0));
                }
            } else {
                order.push(b);
                stack.pop();
            }
        }
        order.reverse();
        let mut rank = vec![usize::MAX; n];
        for (i, &b) in order.iter().enumerate() {
            rank[b] = i;
        }
        let mut idom = vec![usize::MAX; n];
        idom[0] = 0;
        let mut changed = true;
        while changed {
            changed = false;
            for &b in order.iter().skip(1) {
                let mut new = usize::MAX;
                for &p in preds[b].iter().filter(|&&p| idom[p] != usize::MAX) {
                    new = if new == usize::MAX { p } else { intersect(&idom, &rank, p, new) };
                }
                if new != usize::MAX && idom[b] != new {
                    idom[b] = new;
                    changed = true;
                }
            }
        }
        let dominates = |a: usize, mut b: usize| loop {
            if a == b {
                return true;
            }
            if b == 0 || idom[b] == usize::MAX {
                return false;
            }
            b = idom[b];
        };

        // One loop per header, its body grown backwards from every back edge.
        let mut loops: Vec<Loop> = Vec::new();
        for u in order.iter().copied() {
            for &h in &succs[u] {
                if !dominates(h, u) {
                    continue;
                }
                let k = match loops.iter().position(|l| l.head == h) {
                    Some(k) => k,
                    None => {
                        let mut body = vec![false; n];
                        body[h] = true;
                        loops.push(Loop { head: h, body, size: 1, latch: None });
                        loops.len() - 1
                    }
                };
                let l = &mut loops[k];
                if let Some((pc, insn)) = last[u] {
                    let jumps_back = insn.branch_target(pc).is_some_and(|t| t == starts[h] as i64);
                    if jumps_back && l.latch.is_none_or(|old| old < pc) {
                        l.latch = Some(pc);
                    }
                }
                let mut work = vec![u];
                while let Some(b) = work.pop() {
                    if !l.body[b] {
                        l.body[b] = true;
                        l.size += 1;
                        work.extend(preds[b].iter().copied().filter(|&p| seen[p]));
                    }
                }
            }
        }
        let mut innermost = vec![None; n];
        for (b, slot) in innermost.iter_mut().enumerate() {
            *slot = (0..loops.len()).filter(|&k| loops[k].body[b]).min_by_key(|&k| loops[k].size);
        }
        Loops { starts: starts.to_vec(), loops, innermost }
    }

    /// Whether control going from the instruction at `from` to the one at `to` stays inside the
    /// innermost loop `from` is in (always, if it is in none).
    pub(crate) fn stays(&self, from: usize, to: usize) -> bool {
        let (Some(a), Some(b)) = (block_of(&self.starts, from), block_of(&self.starts, to)) else { return true };
        match self.innermost.get(a).copied().flatten() {
            Some(k) => self.loops[k].body.get(b).copied().unwrap_or(false),
            None => true,
        }
    }

    /// The loop to place: the one nested deepest (inside the most others), the earliest header
    /// of equals; as its header's slot and its last backward jump, if a jump closes it.
    pub(crate) fn deepest(&self) -> Option<(usize, Option<usize>)> {
        let depth = |l: &Loop| self.loops.iter().filter(|o| o.body[l.head]).count();
        self.loops
            .iter()
            .max_by(|a, b| depth(a).cmp(&depth(b)).then(b.head.cmp(&a.head)))
            .map(|l| (self.starts[l.head], l.latch))
    }
}

/// The basic block (index into `starts`) holding the instruction at `pc`.
fn block_of(starts: &[usize], pc: usize) -> Option<usize> {
    starts.partition_point(|&s| s <= pc).checked_sub(1)
}

/// The nearest common dominator of `a` and `b`, walking up the dominator tree by reverse-postorder
/// rank.
fn intersect(idom: &[usize], rank: &[usize], mut a: usize, mut b: usize) -> usize {
    while a != b {
        while rank[a] > rank[b] {
            a = idom[a];
        }
        while rank[b] > rank[a] {
            b = idom[b];
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loops(asm: &str) -> (Program, Loops) {
        let p = Program::from_asm(asm).unwrap();
        let f = p.functions()[0];
        let starts = super::super::translate::leaders(&p, f);
        let l = Loops::analyse(&p, f, &starts);
        (p, l)
    }

    #[test]
    fn straight_code_has_no_loop() {
        let (_, l) = loops("mov %r0, 1\njeq %r0, 1, +1\nmov %r0, 2\nexit");
        assert!(l.deepest().is_none());
        assert!(l.stays(1, 3) && l.stays(1, 2));
    }

    #[test]
    fn a_counting_loop() {
        // 0: r0 = 0; 1: r0 += 1; 2: if r0 < 10 goto 1; 3: exit
        let (_, l) = loops("mov %r0, 0\nadd %r0, 1\njlt %r0, 10, -2\nexit");
        assert_eq!(l.deepest(), Some((1, Some(2))));
        assert!(l.stays(2, 1));
        assert!(!l.stays(2, 3));
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
        let (_, l) = loops(asm);
        assert!(l.stays(3, 7));
        assert!(!l.stays(3, 4));
        assert!(l.stays(5, 1));
        assert!(!l.stays(7, 6));
        // The inner loop (header 2) is nested deepest.
        assert_eq!(l.deepest(), Some((2, Some(8))));
    }

    #[test]
    fn several_back_edges_make_one_loop_closed_by_the_last() {
        // 1 is the header; 3 and 5 jump back to it.
        let asm = "mov %r0, 0\nadd %r0, 1\njeq %r0, 50, +3\njgt %r0, 7, -3\nadd %r0, 2\nja -5\nexit";
        let (_, l) = loops(asm);
        assert_eq!(l.deepest(), Some((1, Some(5))));
        assert!(l.stays(3, 1) && l.stays(3, 4));
        assert!(!l.stays(2, 6));
    }
}
