//! The flattened trees both tree-ensemble operators evaluate.
//!
//! Trees are flattened once at load: `(tree_id, node_id)` pairs become indices into one node
//! array, leaf weights sit in one array addressed by a range per leaf, and the structure is
//! checked (children exist, features are in range, every tree is a tree) so evaluation can
//! neither fail nor loop.

use std::collections::HashMap;

use super::super::attrs;
use crate::error::Result;
use crate::runtime::proto::NodeProto;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
    Leaf,
}

impl Mode {
    fn parse(node: &NodeProto, s: &str) -> Result<Self> {
        Ok(match s {
            "BRANCH_LEQ" => Self::Leq,
            "BRANCH_LT" => Self::Lt,
            "BRANCH_GTE" => Self::Gte,
            "BRANCH_GT" => Self::Gt,
            "BRANCH_EQ" => Self::Eq,
            "BRANCH_NEQ" => Self::Neq,
            "LEAF" => Self::Leaf,
            other => {
                return Err(attrs::bad(
                    node,
                    "nodes_modes",
                    &format!("holds unknown mode {other}"),
                ));
            }
        })
    }
}

#[derive(Clone, Copy, Debug)]
struct Node {
    threshold: f32,
    feature: u32,
    if_true: u32,
    if_false: u32,
    leaf_start: u32,
    leaf_end: u32,
    mode: Mode,
    nan_true: bool,
}

/// A node as evaluated: 16 bytes, four to a cache line. Branches keep their children in `a`
/// and `b`; leaves (`feature == LEAF`) keep their range of leaf weights there.
#[derive(Clone, Copy, Debug)]
struct Packed {
    threshold: f32,
    feature: u32,
    a: u32,
    b: u32,
}

const LEAF: u32 = u32::MAX;

/// The flattened trees shared by both operators.
#[derive(Clone, Debug)]
pub(super) struct Forest {
    nodes: Vec<Packed>,
    /// Per node, only read when some branch is not a plain BRANCH_LEQ.
    modes: Vec<Mode>,
    nan_true: Vec<bool>,
    pub(super) roots: Vec<u32>,
    /// Class or target index of each leaf weight.
    leaf_ids: Vec<u32>,
    leaf_weights: Vec<f32>,
    /// Every branch is BRANCH_LEQ without missing-value routing (all scikit-learn trees).
    all_leq: bool,
}

/// What the leaf-weight attributes told us beyond the forest itself.
pub(super) struct LeafStats {
    pub(super) distinct_ids: usize,
    pub(super) all_non_negative: bool,
}

impl Forest {
    /// `prefix` is `class` or `target`; `outputs` bounds the ids in `{prefix}_ids`.
    pub(super) fn new(
        node: &NodeProto,
        features: usize,
        prefix: &str,
        outputs: usize,
    ) -> Result<(Self, LeafStats)> {
        let tree_ids = attrs::required_ints(node, "nodes_treeids")?;
        let node_ids = attrs::required_ints(node, "nodes_nodeids")?;
        let feature_ids = attrs::required_ints(node, "nodes_featureids")?;
        let modes = attrs::strings(node, "nodes_modes");
        let values = attrs::required_floats(node, "nodes_values")?;
        let true_ids = attrs::required_ints(node, "nodes_truenodeids")?;
        let false_ids = attrs::required_ints(node, "nodes_falsenodeids")?;
        let nan_true = attrs::ints(node, "nodes_missing_value_tracks_true");
        let n = tree_ids.len();
        let lens = [
            ("nodes_nodeids", node_ids.len()),
            ("nodes_featureids", feature_ids.len()),
            ("nodes_modes", modes.len()),
            ("nodes_values", values.len()),
            ("nodes_truenodeids", true_ids.len()),
            ("nodes_falsenodeids", false_ids.len()),
        ];
        for (name, len) in lens {
            if len != n {
                return Err(attrs::bad(
                    node,
                    name,
                    &format!("has {len} values, nodes_treeids has {n}"),
                ));
            }
        }
        if !nan_true.is_empty() && nan_true.len() != n {
            return Err(attrs::bad(
                node,
                "nodes_missing_value_tracks_true",
                "length differs from nodes_treeids",
            ));
        }
        let u32_len = |len: usize| u32::try_from(len).ok();
        if u32_len(n).is_none() || n == 0 {
            return Err(attrs::bad(node, "nodes_treeids", "must hold between 1 and 2^32 nodes"));
        }

        let mut index = HashMap::with_capacity(n);
        for (i, key) in tree_ids.iter().zip(&node_ids).enumerate() {
            if index.insert((*key.0, *key.1), i as u32).is_some() {
                return Err(attrs::bad(
                    node,
                    "nodes_nodeids",
                    &format!("repeats node {} of tree {}", key.1, key.0),
                ));
            }
        }
        let resolve = |tree: i64, id: i64, name: &str| {
            index.get(&(tree, id)).copied().ok_or_else(|| {
                attrs::bad(
                    node,
                    name,
                    &format!("points at node {id} of tree {tree}, which does not exist"),
                )
            })
        };

        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let mode = Mode::parse(node, &modes[i])?;
            let (if_true, if_false, feature) = if mode == Mode::Leaf {
                (0, 0, 0)
            } else {
                (
                    resolve(tree_ids[i], true_ids[i], "nodes_truenodeids")?,
                    resolve(tree_ids[i], false_ids[i], "nodes_falsenodeids")?,
                    attrs::index(node, "nodes_featureids", feature_ids[i], features)?,
                )
            };
            nodes.push(Node {
                threshold: values[i],
                feature,
                if_true,
                if_false,
                leaf_start: 0,
                leaf_end: 0,
                mode,
                nan_true: nan_true.get(i).is_some_and(|&v| v != 0),
            });
        }

        let (leaf_ids, leaf_weights, stats) =
            attach_leaves(node, prefix, outputs, &mut nodes, &resolve)?;
        let roots = find_roots(node, &tree_ids, &nodes)?;
        check_trees(node, &nodes, &roots)?;
        let all_leq = nodes.iter().all(|n| matches!(n.mode, Mode::Leq | Mode::Leaf) && !n.nan_true);
        let packed = nodes.iter().map(pack).collect();
        let (modes, nan_true) = if all_leq {
            (Vec::new(), Vec::new())
        } else {
            (nodes.iter().map(|n| n.mode).collect(), nodes.iter().map(|n| n.nan_true).collect())
        };
        let forest =
            Self { nodes: packed, modes, nan_true, roots, leaf_ids, leaf_weights, all_leq };
        Ok((forest, stats))
    }

    /// Walk one tree to its leaf.
    #[inline]
    fn leaf(&self, root: u32, x: &[f32]) -> &Packed {
        let mut i = root as usize;
        let mut n = &self.nodes[i];
        if self.all_leq {
            while n.feature != LEAF {
                i = if x[n.feature as usize] <= n.threshold { n.a } else { n.b } as usize;
                n = &self.nodes[i];
            }
        } else {
            while n.feature != LEAF {
                let v = x[n.feature as usize];
                let t = n.threshold;
                let go = match self.modes[i] {
                    Mode::Leq => v <= t,
                    Mode::Lt => v < t,
                    Mode::Gte => v >= t,
                    Mode::Gt => v > t,
                    Mode::Eq => v == t,
                    Mode::Neq => v != t,
                    Mode::Leaf => unreachable!("leaves have feature LEAF"),
                } || (self.nan_true[i] && v.is_nan());
                i = if go { n.a } else { n.b } as usize;
                n = &self.nodes[i];
            }
        }
        n
    }

    /// Calls `f(row, id, weight)` for every leaf weight each row reaches. Trees go in order, so
    /// each row sums its weights exactly as a row-at-a-time walk would; walking one tree for
    /// several rows keeps that tree in cache and lets the rows' independent loads overlap.
    pub(super) fn for_each_weight(
        &self,
        x: &[f32],
        rows: usize,
        features: usize,
        mut f: impl FnMut(usize, usize, f32),
    ) {
        let mut emit = |row: usize, leaf: &Packed| {
            let range = leaf.a as usize..leaf.b as usize;
            for (&id, &w) in self.leaf_ids[range.clone()].iter().zip(&self.leaf_weights[range]) {
                f(row, id as usize, w);
            }
        };
        for &root in &self.roots {
            let mut row = 0;
            if self.all_leq {
                while row + LANES <= rows {
                    for (k, leaf) in self.leaves_leq(root, x, row, features).iter().enumerate() {
                        emit(row + k, &self.nodes[*leaf]);
                    }
                    row += LANES;
                }
            }
            for r in row..rows {
                emit(r, self.leaf(root, &x[r * features..(r + 1) * features]));
            }
        }
    }

    /// [`Self::leaf`] for `LANES` consecutive rows in lockstep (BRANCH_LEQ forests only).
    #[inline]
    fn leaves_leq(&self, root: u32, x: &[f32], first: usize, features: usize) -> [usize; LANES] {
        let mut at = [root as usize; LANES];
        loop {
            let mut moved = false;
            for (lane, i) in at.iter_mut().enumerate() {
                let n = &self.nodes[*i];
                if n.feature != LEAF {
                    moved = true;
                    let v = x[(first + lane) * features + n.feature as usize];
                    *i = if v <= n.threshold { n.a } else { n.b } as usize;
                }
            }
            if !moved {
                return at;
            }
        }
    }
}

/// Rows walked together through one tree.
const LANES: usize = 4;

fn pack(n: &Node) -> Packed {
    if n.mode == Mode::Leaf {
        Packed { threshold: 0.0, feature: LEAF, a: n.leaf_start, b: n.leaf_end }
    } else {
        Packed { threshold: n.threshold, feature: n.feature, a: n.if_true, b: n.if_false }
    }
}

type Resolve<'a> = dyn Fn(i64, i64, &str) -> Result<u32> + 'a;

fn attach_leaves(
    node: &NodeProto,
    prefix: &str,
    outputs: usize,
    nodes: &mut [Node],
    resolve: &Resolve<'_>,
) -> Result<(Vec<u32>, Vec<f32>, LeafStats)> {
    let name = |s: &str| format!("{prefix}_{s}");
    let trees = attrs::required_ints(node, &name("treeids"))?;
    let ids = attrs::required_ints(node, &name("nodeids"))?;
    let targets = attrs::required_ints(node, &name("ids"))?;
    let weights = attrs::required_floats(node, &name("weights"))?;
    if ids.len() != trees.len() || targets.len() != trees.len() || weights.len() != trees.len() {
        return Err(attrs::bad(
            node,
            &name("weights"),
            "and its sibling leaf attributes differ in length",
        ));
    }
    let mut entries = Vec::with_capacity(trees.len());
    let mut seen = vec![false; outputs];
    for k in 0..trees.len() {
        let at = resolve(trees[k], ids[k], &name("nodeids"))?;
        if nodes[at as usize].mode != Mode::Leaf {
            return Err(attrs::bad(
                node,
                &name("nodeids"),
                &format!("puts a weight on branch node {} of tree {}", ids[k], trees[k]),
            ));
        }
        let target = attrs::index(node, &name("ids"), targets[k], outputs)?;
        seen[target as usize] = true;
        entries.push((at, target, weights[k]));
    }
    // Stable: weights of one leaf keep their attribute order, as onnxruntime sums them.
    entries.sort_by_key(|e| e.0);
    let mut leaf_ids = Vec::with_capacity(entries.len());
    let mut leaf_weights = Vec::with_capacity(entries.len());
    let mut i = 0;
    while i < entries.len() {
        let at = entries[i].0;
        let start = leaf_ids.len() as u32;
        while i < entries.len() && entries[i].0 == at {
            leaf_ids.push(entries[i].1);
            leaf_weights.push(entries[i].2);
            i += 1;
        }
        let n = &mut nodes[at as usize];
        n.leaf_start = start;
        n.leaf_end = leaf_ids.len() as u32;
    }
    let stats = LeafStats {
        distinct_ids: seen.iter().filter(|&&s| s).count(),
        all_non_negative: weights.iter().all(|&w| w >= 0.0),
    };
    Ok((leaf_ids, leaf_weights, stats))
}

/// One root per tree (the node no other node points at), in order of first appearance.
fn find_roots(node: &NodeProto, tree_ids: &[i64], nodes: &[Node]) -> Result<Vec<u32>> {
    let mut is_child = vec![false; nodes.len()];
    for n in nodes.iter().filter(|n| n.mode != Mode::Leaf) {
        is_child[n.if_true as usize] = true;
        is_child[n.if_false as usize] = true;
    }
    let mut order: Vec<i64> = Vec::new();
    let mut roots: HashMap<i64, Vec<u32>> = HashMap::new();
    for (i, &t) in tree_ids.iter().enumerate() {
        let entry = roots.entry(t).or_insert_with(|| {
            order.push(t);
            Vec::new()
        });
        if !is_child[i] {
            entry.push(i as u32);
        }
    }
    order
        .into_iter()
        .map(|t| match roots[&t].as_slice() {
            [root] => Ok(*root),
            r => Err(attrs::bad(
                node,
                "nodes_treeids",
                &format!("tree {t} has {} roots, expected 1", r.len()),
            )),
        })
        .collect()
}

/// Every node is reached at most once from its root: no cycles, no shared subtrees.
fn check_trees(node: &NodeProto, nodes: &[Node], roots: &[u32]) -> Result<()> {
    let mut seen = vec![false; nodes.len()];
    let mut stack = Vec::new();
    for &root in roots {
        stack.push(root);
        while let Some(i) = stack.pop() {
            if std::mem::replace(&mut seen[i as usize], true) {
                return Err(attrs::bad(
                    node,
                    "nodes_truenodeids",
                    "do not describe trees (a node is reached twice)",
                ));
            }
            let n = &nodes[i as usize];
            if n.mode != Mode::Leaf {
                stack.push(n.if_true);
                stack.push(n.if_false);
            }
        }
    }
    Ok(())
}
