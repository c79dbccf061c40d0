//! Finding a node by its (tree id, node id) pair while a forest loads.

use std::collections::HashMap;

/// Marks a (tree, node id) pair no node has.
const ABSENT: u32 = u32::MAX;

pub(super) enum NodeIndex {
    /// skl2onnx numbers trees and each tree's nodes from 0: a table beats hashing a big forest.
    Dense {
        first_tree: i64,
        tree_start: Vec<usize>,
        positions: Vec<u32>,
    },
    Sparse(HashMap<(i64, i64), u32>),
}

impl NodeIndex {
    /// Node `i` has key `(tree_ids[i], node_ids[i])`; at most `u32::MAX` nodes. A key given
    /// twice is returned as the error.
    pub(super) fn new(tree_ids: &[i64], node_ids: &[i64]) -> Result<Self, (i64, i64)> {
        dense(tree_ids, node_ids).unwrap_or_else(|| sparse(tree_ids, node_ids))
    }

    pub(super) fn get(&self, tree: i64, id: i64) -> Option<u32> {
        match self {
            Self::Dense { first_tree, tree_start, positions } => {
                let t = usize::try_from(tree.checked_sub(*first_tree)?).ok()?;
                let (start, end) = (*tree_start.get(t)?, *tree_start.get(t + 1)?);
                let id = usize::try_from(id).ok().filter(|&id| id < end - start)?;
                Some(positions[start + id]).filter(|&p| p != ABSENT)
            }
            Self::Sparse(map) => map.get(&(tree, id)).copied(),
        }
    }
}

/// `None` when the ids are too spread out for a table at most twice the node count.
fn dense(tree_ids: &[i64], node_ids: &[i64]) -> Option<Result<NodeIndex, (i64, i64)>> {
    let n = tree_ids.len();
    let first_tree = *tree_ids.iter().min()?;
    let last_tree = *tree_ids.iter().max()?;
    let trees = usize::try_from(last_tree.checked_sub(first_tree)?).ok()?.checked_add(1)?;
    if trees > n {
        return None;
    }
    let mut sizes = vec![0usize; trees];
    for (&t, &id) in tree_ids.iter().zip(node_ids) {
        let id = usize::try_from(id).ok().filter(|&id| id < 2 * n)?;
        let size = &mut sizes[(t - first_tree) as usize];
        *size = (*size).max(id + 1);
    }
    let mut tree_start = Vec::with_capacity(trees + 1);
    let mut total = 0;
    for size in sizes {
        tree_start.push(total);
        total += size;
    }
    tree_start.push(total);
    if total > 2 * n {
        return None;
    }
    let mut positions = vec![ABSENT; total];
    for (i, (&t, &id)) in tree_ids.iter().zip(node_ids).enumerate() {
        let at = &mut positions[tree_start[(t - first_tree) as usize] + id as usize];
        if *at != ABSENT {
            return Some(Err((t, id)));
        }
        *at = i as u32;
    }
    Some(Ok(NodeIndex::Dense { first_tree, tree_start, positions }))
}

fn sparse(tree_ids: &[i64], node_ids: &[i64]) -> Result<NodeIndex, (i64, i64)> {
    let mut map = HashMap::with_capacity(tree_ids.len());
    for (i, (&t, &id)) in tree_ids.iter().zip(node_ids).enumerate() {
        if map.insert((t, id), i as u32).is_some() {
            return Err((t, id));
        }
    }
    Ok(NodeIndex::Sparse(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookups(index: &NodeIndex) -> Vec<Option<u32>> {
        [(0, 0), (0, 2), (1, 0), (1, 1), (2, 0), (-1, 0), (0, -1), (0, 1)]
            .iter()
            .map(|&(t, id)| index.get(t, id))
            .collect()
    }

    #[test]
    fn dense_and_sparse_tables_answer_alike() {
        let (trees, ids) = ([0, 0, 0, 1, 1], [0, 2, 1, 0, 1]);
        let dense = dense(&trees, &ids).expect("dense ids").expect("no repeats");
        let sparse = sparse(&trees, &ids).expect("no repeats");
        assert!(matches!(dense, NodeIndex::Dense { .. }));
        assert_eq!(lookups(&dense), lookups(&sparse));
        assert_eq!(dense.get(0, 2), Some(1));
    }

    #[test]
    fn spread_out_ids_fall_back_to_a_map_and_repeats_are_refused() {
        let index = NodeIndex::new(&[0, 0], &[0, 1 << 40]).expect("no repeats");
        assert!(matches!(index, NodeIndex::Sparse(_)));
        assert_eq!(index.get(0, 1 << 40), Some(1));
        assert_eq!(NodeIndex::new(&[0, 0], &[3, 3]).err(), Some((0, 3)));
        assert_eq!(NodeIndex::new(&[0, 7], &[1 << 40, 1 << 40]).ok().map(|_| ()), Some(()));
    }
}
