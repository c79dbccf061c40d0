//! Forests with any branch mode or missing-value routing: one row at a time, node by node.

use super::node::{Mode, Node};

#[derive(Clone, Debug)]
pub(super) struct GeneralTrees {
    nodes: Vec<Node>,
    roots: Vec<u32>,
    leaf_ids: Vec<u32>,
    leaf_weights: Vec<f32>,
}

impl GeneralTrees {
    pub(super) fn new(
        nodes: &[Node],
        roots: Vec<u32>,
        leaf_ids: Vec<u32>,
        leaf_weights: Vec<f32>,
    ) -> Self {
        Self { nodes: nodes.to_vec(), roots, leaf_ids, leaf_weights }
    }

    pub(super) fn trees(&self) -> usize {
        self.roots.len()
    }

    /// See [`super::forest::Forest::for_each_weight`].
    pub(super) fn for_each_weight(
        &self,
        x: &[f32],
        rows: usize,
        features: usize,
        mut f: impl FnMut(usize, usize, f32),
    ) {
        for row in 0..rows {
            let values = &x[row * features..(row + 1) * features];
            for &root in &self.roots {
                let leaf = self.leaf(root, values);
                let range = leaf.leaf_start as usize..leaf.leaf_end as usize;
                let ids = &self.leaf_ids[range.clone()];
                for (&id, &w) in ids.iter().zip(&self.leaf_weights[range]) {
                    f(row, id as usize, w);
                }
            }
        }
    }

    fn leaf(&self, root: u32, x: &[f32]) -> &Node {
        let mut n = &self.nodes[root as usize];
        while n.mode != Mode::Leaf {
            let v = x[n.feature as usize];
            let t = n.threshold;
            let go = match n.mode {
                Mode::Leq => v <= t,
                Mode::Lt => v < t,
                Mode::Gte => v >= t,
                Mode::Gt => v > t,
                Mode::Eq => v == t,
                Mode::Neq => v != t,
                Mode::Leaf => unreachable!("the loop stops at leaves"),
            } || (n.nan_true && v.is_nan());
            n = &self.nodes[if go { n.if_true } else { n.if_false } as usize];
        }
        n
    }
}
