//! The flattened trees both tree-ensemble operators evaluate.
//!
//! Trees are flattened once at load: `(tree_id, node_id)` pairs become indices into one node
//! array, leaf weights sit in one array addressed by a range per leaf, and the structure is
//! checked (children exist, features are in range, every tree is a tree) so evaluation can
//! neither fail nor loop.

use std::collections::HashMap;

use super::super::attrs;
use super::general::GeneralTrees;
use super::index::NodeIndex;
use super::leq::{LeqTrees, Shape};
use super::node::{Mode, Node};
use crate::error::Result;
use crate::runtime::proto::NodeProto;

/// The flattened trees shared by both operators.
#[derive(Clone, Debug)]
pub(super) struct Forest {
    layout: Layout,
    /// Per output id, whether every row gets a weight for it, when that is the same for every
    /// row (an id on every leaf of some tree, or on no leaf): then callers need not track it.
    reached: Option<Vec<bool>>,
}

#[derive(Clone, Debug)]
enum Layout {
    Leq(LeqTrees),
    General(GeneralTrees),
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
        let modes = node.attr("nodes_modes").map_or(&[][..], |a| a.strings.as_slice());
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

        let index = NodeIndex::new(&tree_ids, &node_ids).map_err(|(tree, id)| {
            attrs::bad(node, "nodes_nodeids", &format!("repeats node {id} of tree {tree}"))
        })?;
        let resolve = |tree: i64, id: i64, name: &str| {
            index.get(tree, id).ok_or_else(|| {
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
        let reached = reached_by_every_row(&nodes, &roots, &leaf_ids, outputs);
        // The branch-free walk reads feature 0 at leaves, so it needs one.
        let layout = if all_leq && features > 0 {
            Layout::Leq(LeqTrees::new(
                &roots,
                |i| shape(&nodes[i as usize]),
                &leaf_ids,
                &leaf_weights,
            ))
        } else {
            Layout::General(GeneralTrees::new(&nodes, roots, leaf_ids, leaf_weights))
        };
        let forest = Self { layout, reached };
        Ok((forest, stats))
    }

    pub(super) fn trees(&self) -> usize {
        match &self.layout {
            Layout::Leq(t) => t.trees(),
            Layout::General(t) => t.trees(),
        }
    }

    /// See [`Self::reached`].
    pub(super) fn reached(&self) -> Option<&[bool]> {
        self.reached.as_deref()
    }

    /// Calls `f(row, id, weight)` for every leaf weight each row reaches; for each row, trees
    /// go in order and a leaf's weights in attribute order, as onnxruntime sums them.
    #[inline]
    pub(super) fn for_each_weight(
        &self,
        x: &[f32],
        rows: usize,
        features: usize,
        f: impl FnMut(usize, usize, f32),
    ) {
        match &self.layout {
            Layout::Leq(t) => t.for_each_weight(x, rows, features, f),
            Layout::General(t) => t.for_each_weight(x, rows, features, f),
        }
    }
}

fn shape(n: &Node) -> Shape {
    if n.mode == Mode::Leaf {
        Shape::Leaf { weights: n.leaf_start as usize..n.leaf_end as usize }
    } else {
        Shape::Branch {
            threshold: n.threshold,
            feature: n.feature,
            if_true: n.if_true,
            if_false: n.if_false,
        }
    }
}

/// See [`Forest::reached`]: `None` when it depends on the row.
fn reached_by_every_row(
    nodes: &[Node],
    roots: &[u32],
    leaf_ids: &[u32],
    outputs: usize,
) -> Option<Vec<bool>> {
    let mut on_some_leaf = vec![false; outputs];
    let mut on_every_leaf_of_a_tree = vec![false; outputs];
    let mut on_this_leaf = vec![false; outputs];
    let mut stack = Vec::new();
    for &root in roots {
        let mut on_every_leaf = vec![true; outputs];
        stack.push(root);
        while let Some(i) = stack.pop() {
            let n = &nodes[i as usize];
            if n.mode != Mode::Leaf {
                stack.extend([n.if_true, n.if_false]);
                continue;
            }
            let ids = &leaf_ids[n.leaf_start as usize..n.leaf_end as usize];
            for &id in ids {
                on_this_leaf[id as usize] = true;
                on_some_leaf[id as usize] = true;
            }
            for (every, this) in on_every_leaf.iter_mut().zip(&on_this_leaf) {
                *every &= this;
            }
            for &id in ids {
                on_this_leaf[id as usize] = false;
            }
        }
        for (any_tree, every) in on_every_leaf_of_a_tree.iter_mut().zip(on_every_leaf) {
            *any_tree |= every;
        }
    }
    let settled =
        on_some_leaf.iter().zip(&on_every_leaf_of_a_tree).all(|(some, every)| every == some);
    settled.then_some(on_every_leaf_of_a_tree)
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
