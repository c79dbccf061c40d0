//! Forests whose branches are all plain BRANCH_LEQ (every scikit-learn tree), laid out for a
//! branch-free walk.
//!
//! Each tree is stored breadth-first with the two children of a node side by side, so a node
//! is 12 bytes: threshold, feature and the index of its first child; the comparison picks the
//! child by adding 0 or 1. A leaf points at its own slot minus one with a NaN threshold:
//! `x <= NaN` is false for every x, so the walk adds 1 and stays on the leaf. Every walk can
//! then run a fixed number of steps (the tree's depth) without testing for leaves, and several
//! walks go in lockstep so their memory loads overlap instead of waiting on mispredicted
//! branches.

use std::collections::VecDeque;
use std::ops::Range;

/// Rows walked together through one tree, or two trees for forests past `CACHED_BYTES`.
const ROW_LANES: usize = 8;
/// Past about the size of a core's L2 cache, walks wait on memory: more of them in flight pay.
/// Below it they wait on instructions, and more lanes only spill registers.
const CACHED_BYTES: usize = 1 << 20;
/// Trees walked together for one row (a row left over from the groups of rows).
const TREE_LANES: usize = 16;

#[derive(Clone, Copy, Debug)]
struct Step {
    threshold: f32,
    feature: u32,
    first_child: u32,
}

/// A tree node as the forest's loader sees it.
pub(super) enum Shape {
    Branch { threshold: f32, feature: u32, if_true: u32, if_false: u32 },
    Leaf { weights: Range<usize> },
}

#[derive(Clone, Debug)]
pub(super) struct LeqTrees {
    steps: Vec<Step>,
    roots: Vec<u32>,
    depths: Vec<u32>,
    /// Deepest tree of each group of `TREE_LANES` consecutive trees.
    group_depths: Vec<u32>,
    /// Slot `s` owns weights `leaf_start[s]..leaf_start[s + 1]` (empty for branches).
    leaf_start: Vec<u32>,
    leaf_ids: Vec<u32>,
    leaf_weights: Vec<f32>,
}

impl LeqTrees {
    /// `shape(i)` describes node `i`; `roots` index those nodes. Weight ranges index
    /// `ids`/`weights`. The trees must already be checked (children exist, no node shared).
    pub(super) fn new(
        roots: &[u32],
        shape: impl Fn(u32) -> Shape,
        ids: &[u32],
        weights: &[f32],
    ) -> Self {
        let mut trees = Self {
            steps: Vec::new(),
            roots: Vec::with_capacity(roots.len()),
            depths: Vec::with_capacity(roots.len()),
            group_depths: Vec::new(),
            leaf_start: Vec::new(),
            leaf_ids: Vec::new(),
            leaf_weights: Vec::new(),
        };
        let mut leaves: Vec<(u32, Range<usize>)> = Vec::new();
        for &root in roots {
            let depth = trees.lay_out(root, &shape, &mut leaves);
            trees.depths.push(depth);
        }
        trees.group_depths =
            trees.depths.chunks(TREE_LANES).map(|g| g.iter().copied().max().unwrap_or(0)).collect();
        trees.collect_leaf_weights(&mut leaves, ids, weights);
        trees
    }

    /// Breadth-first placement of one tree; returns its depth.
    fn lay_out(
        &mut self,
        root: u32,
        shape: &impl Fn(u32) -> Shape,
        leaves: &mut Vec<(u32, Range<usize>)>,
    ) -> u32 {
        let root_slot = slot_index(self.steps.len());
        self.roots.push(root_slot);
        self.steps.push(Step { threshold: 0.0, feature: 0, first_child: 0 });
        let mut queue = VecDeque::from([(root, root_slot, 0)]);
        let mut depth = 0;
        while let Some((node, slot, level)) = queue.pop_front() {
            depth = depth.max(level);
            self.steps[slot as usize] = match shape(node) {
                Shape::Leaf { weights } => {
                    leaves.push((slot, weights));
                    Step { threshold: f32::NAN, feature: 0, first_child: slot.wrapping_sub(1) }
                }
                Shape::Branch { threshold, feature, if_true, if_false } => {
                    let first_child = slot_index(self.steps.len());
                    let blank = Step { threshold: 0.0, feature: 0, first_child: 0 };
                    self.steps.extend([blank, blank]);
                    queue.push_back((if_true, first_child, level + 1));
                    queue.push_back((if_false, first_child + 1, level + 1));
                    Step { threshold, feature, first_child }
                }
            };
        }
        depth
    }

    fn collect_leaf_weights(
        &mut self,
        leaves: &mut [(u32, Range<usize>)],
        ids: &[u32],
        weights: &[f32],
    ) {
        leaves.sort_by_key(|l| l.0);
        self.leaf_start = Vec::with_capacity(self.steps.len() + 1);
        let mut next = leaves.iter().peekable();
        for slot in 0..slot_index(self.steps.len()) {
            self.leaf_start.push(slot_index(self.leaf_ids.len()));
            if let Some((_, range)) = next.next_if(|l| l.0 == slot) {
                self.leaf_ids.extend_from_slice(&ids[range.clone()]);
                self.leaf_weights.extend_from_slice(&weights[range.clone()]);
            }
        }
        self.leaf_start.push(slot_index(self.leaf_ids.len()));
    }

    pub(super) fn trees(&self) -> usize {
        self.roots.len()
    }

    /// Calls `f(row, id, weight)` for every leaf weight each row reaches, trees in order for
    /// each row. Full groups of rows go through one tree together (the tree stays in cache);
    /// the rows left over go through groups of trees together.
    #[inline]
    pub(super) fn for_each_weight(
        &self,
        x: &[f32],
        rows: usize,
        features: usize,
        mut f: impl FnMut(usize, usize, f32),
    ) {
        let grouped = rows - rows % ROW_LANES;
        if self.steps.len() * size_of::<Step>() > CACHED_BYTES {
            self.row_groups::<{ 2 * ROW_LANES }>(x, grouped, features, &mut f);
        } else {
            self.row_groups::<ROW_LANES>(x, grouped, features, &mut f);
        }
        for row in grouped..rows {
            let offsets = [row * features; TREE_LANES];
            for (roots, &depth) in self.roots.chunks(TREE_LANES).zip(&self.group_depths) {
                // A short last group repeats its last tree; only the real trees are emitted.
                let at = std::array::from_fn(|k| roots[k.min(roots.len() - 1)]);
                let leaves = walk(&self.steps, at, x, offsets, depth);
                for &leaf in &leaves[..roots.len()] {
                    self.emit(row, leaf, &mut f);
                }
            }
        }
    }

    /// Rows `0..grouped` in groups of `ROW_LANES`, through `K / ROW_LANES` trees at a time.
    #[inline]
    fn row_groups<const K: usize>(
        &self,
        x: &[f32],
        grouped: usize,
        features: usize,
        f: &mut impl FnMut(usize, usize, f32),
    ) {
        let trees_at_once = K / ROW_LANES;
        for first_tree in (0..self.trees()).step_by(trees_at_once) {
            let trees = first_tree..(first_tree + trees_at_once).min(self.trees());
            let roots = &self.roots[trees.clone()];
            let depth = self.depths[trees].iter().copied().max().unwrap_or(0);
            // A short last set of trees repeats its last; only the real trees are emitted.
            let at = std::array::from_fn(|k| roots[(k / ROW_LANES).min(roots.len() - 1)]);
            for first in (0..grouped).step_by(ROW_LANES) {
                let offsets = std::array::from_fn(|k| (first + k % ROW_LANES) * features);
                let leaves: [u32; K] = walk(&self.steps, at, x, offsets, depth);
                for (k, &leaf) in leaves[..roots.len() * ROW_LANES].iter().enumerate() {
                    self.emit(first + k % ROW_LANES, leaf, f);
                }
            }
        }
    }

    #[inline]
    fn emit(&self, row: usize, leaf: u32, f: &mut impl FnMut(usize, usize, f32)) {
        let leaf = leaf as usize;
        let range = self.leaf_start[leaf] as usize..self.leaf_start[leaf + 1] as usize;
        for (&id, &w) in self.leaf_ids[range.clone()].iter().zip(&self.leaf_weights[range]) {
            f(row, id as usize, w);
        }
    }
}

/// `depth` steps of `K` walks; lane `k` reads its features from `x[offsets[k]..]`.
#[inline(always)]
fn walk<const K: usize>(
    steps: &[Step],
    mut at: [u32; K],
    x: &[f32],
    offsets: [usize; K],
    depth: u32,
) -> [u32; K] {
    for _ in 0..depth {
        for (slot, &offset) in at.iter_mut().zip(&offsets) {
            let step = steps[*slot as usize];
            let goes_left = x[offset + step.feature as usize] <= step.threshold;
            *slot = step.first_child.wrapping_add(u32::from(!goes_left));
        }
    }
    at
}

/// Slot counts never pass the node count, which the loader bounds to u32.
fn slot_index(len: usize) -> u32 {
    u32::try_from(len).expect("node count fits u32 (checked at load)")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tree 0 is a lone leaf (slot 0, whose "child" wraps around); tree 1 splits on feature 1.
    fn two_trees() -> LeqTrees {
        let shape = |node| match node {
            0 => Shape::Leaf { weights: 0..1 },
            1 => Shape::Branch { threshold: 0.5, feature: 1, if_true: 2, if_false: 3 },
            2 => Shape::Leaf { weights: 1..2 },
            _ => Shape::Leaf { weights: 2..3 },
        };
        LeqTrees::new(&[0, 1], shape, &[0, 0, 0], &[1.0, 10.0, 100.0])
    }

    fn sums(trees: &LeqTrees, x: &[f32], rows: usize) -> Vec<f32> {
        let mut out = vec![0.0; rows];
        trees.for_each_weight(x, rows, 2, |row, _, w| out[row] += w);
        out
    }

    #[test]
    fn leaves_hold_and_nan_goes_to_the_false_child() {
        let trees = two_trees();
        let x = [0.0, 0.2, 0.0, 0.9, 0.0, f32::NAN, 0.0, 0.5];
        assert_eq!(sums(&trees, &x, 4), [11.0, 101.0, 101.0, 11.0]);
    }

    #[test]
    fn grouped_rows_and_left_over_rows_agree() {
        let trees = two_trees();
        let one_row = |v: f32| sums(&trees, &[0.0, v], 1)[0];
        let values: Vec<f32> = (0..19).map(|i| i as f32 / 18.0).collect();
        let x: Vec<f32> = values.iter().flat_map(|&v| [0.0, v]).collect();
        let expected: Vec<f32> = values.iter().map(|&v| one_row(v)).collect();
        assert_eq!(sums(&trees, &x, values.len()), expected);
    }
}
