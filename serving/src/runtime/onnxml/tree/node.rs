//! A node of the flattened trees, as every layout of them reads it.

use super::super::attrs;
use crate::error::Result;
use crate::runtime::proto::NodeProto;

/// How a node compares its feature with its threshold, or that it is a leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
    Leaf,
}

impl Mode {
    /// From the attribute's raw bytes: a big forest has a mode per node, not worth a String each.
    pub(super) fn parse(node: &NodeProto, s: &[u8]) -> Result<Self> {
        Ok(match s {
            b"BRANCH_LEQ" => Self::Leq,
            b"BRANCH_LT" => Self::Lt,
            b"BRANCH_GTE" => Self::Gte,
            b"BRANCH_GT" => Self::Gt,
            b"BRANCH_EQ" => Self::Eq,
            b"BRANCH_NEQ" => Self::Neq,
            b"LEAF" => Self::Leaf,
            other => {
                return Err(attrs::bad(
                    node,
                    "nodes_modes",
                    &format!("holds unknown mode {}", String::from_utf8_lossy(other)),
                ));
            }
        })
    }
}

/// One node of the flattened trees: children and leaf weights are indices into the forest's
/// arrays.
#[derive(Clone, Copy, Debug)]
pub(super) struct Node {
    pub(super) threshold: f32,
    pub(super) feature: u32,
    pub(super) if_true: u32,
    pub(super) if_false: u32,
    pub(super) leaf_start: u32,
    pub(super) leaf_end: u32,
    pub(super) mode: Mode,
    pub(super) nan_true: bool,
}
