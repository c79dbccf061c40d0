//! Typed access to node attributes, with errors that name the node and the attribute.

use crate::error::{Error, Result};
use crate::runtime::proto::NodeProto;

pub fn floats(node: &NodeProto, name: &str) -> Result<Option<Vec<f32>>> {
    if let Some(a) = node.attr(name) {
        return Ok(Some(a.floats.clone()));
    }
    // Newer exporters may store the same list as a tensor (`*_as_tensor`).
    match node.attr(&format!("{name}_as_tensor")).and_then(|a| a.t.as_ref()) {
        Some(t) => t.to_f32().map(Some).ok_or_else(|| {
            bad(node, &format!("{name}_as_tensor"), "must be a FLOAT or DOUBLE tensor")
        }),
        None => Ok(None),
    }
}

pub fn required_floats(node: &NodeProto, name: &str) -> Result<Vec<f32>> {
    floats(node, name)?.ok_or_else(|| missing(node, name))
}

pub fn ints(node: &NodeProto, name: &str) -> Vec<i64> {
    node.attr(name).map(|a| a.ints.clone()).unwrap_or_default()
}

pub fn required_ints(node: &NodeProto, name: &str) -> Result<Vec<i64>> {
    node.attr(name).map(|a| a.ints.clone()).ok_or_else(|| missing(node, name))
}

pub fn int(node: &NodeProto, name: &str) -> Option<i64> {
    node.attr(name).map(|a| a.i)
}

pub fn string(node: &NodeProto, name: &str) -> Option<String> {
    node.attr(name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

pub fn missing(node: &NodeProto, name: &str) -> Error {
    bad(node, name, "is required")
}

pub fn bad(node: &NodeProto, name: &str, why: &str) -> Error {
    Error::load(format!("{} node {:?}: attribute {name} {why}", node.qualified_op(), node.name))
}

/// Indices must fit the structure they point into; `what` names it in the error.
pub fn index(node: &NodeProto, name: &str, v: i64, len: usize) -> Result<u32> {
    usize::try_from(v)
        .ok()
        .filter(|&i| i < len)
        .and_then(|i| u32::try_from(i).ok())
        .ok_or_else(|| bad(node, name, &format!("holds {v}, outside 0..{len}")))
}
