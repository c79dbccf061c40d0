//! The served models: each name and version with its backend, batcher, metrics and
//! feedback, and the catalog requests select them from.

use std::cmp::Ordering as CmpOrdering;
use std::sync::{Arc, Mutex};

use crate::batching::Batcher;
use crate::error::{Error, Result};
use crate::feedback::Feedback;
use crate::metrics::ModelMetrics;
use crate::runtime::Backend;

/// One servable model version.
pub struct ServedModel {
    pub name: String,
    pub version: String,
    pub backend: Arc<dyn Backend>,
    pub batcher: Batcher,
    pub metrics: ModelMetrics,
    /// Short critical sections only, never held across an await.
    pub feedback: Mutex<Feedback>,
    pub drift: bool,
}

impl ServedModel {
    pub fn feedback(&self) -> std::sync::MutexGuard<'_, Feedback> {
        // A panic while holding the lock cannot leave Feedback inconsistent; keep going.
        self.feedback.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The loaded models, sorted by name, then version with the newest last.
pub struct Models {
    all: Vec<Arc<ServedModel>>,
    /// Distinct names, computed once: `/predict` consults them on every request.
    names: Vec<String>,
}

impl Models {
    pub fn new(mut all: Vec<Arc<ServedModel>>) -> Self {
        all.sort_by(|a, b| {
            a.name.cmp(&b.name).then_with(|| compare_versions(&a.version, &b.version))
        });
        let mut names: Vec<String> = all.iter().map(|m| m.name.clone()).collect();
        names.dedup();
        Self { all, names }
    }

    pub fn all(&self) -> &[Arc<ServedModel>] {
        &self.all
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn versions(&self, name: &str) -> Vec<&str> {
        self.all.iter().filter(|m| m.name == name).map(|m| m.version.as_str()).collect()
    }

    /// A model by name, at `version` or else its newest version.
    pub fn get(&self, name: &str, version: Option<&str>) -> Result<&Arc<ServedModel>> {
        let mut versions = self.all.iter().filter(|m| m.name == name).peekable();
        if versions.peek().is_none() {
            return Err(Error::NotFound(format!("model {name:?} is not served here")));
        }
        match version {
            None => Ok(versions.last().unwrap_or_else(|| unreachable!("peeked"))),
            Some(v) => versions
                .find(|m| m.version == v)
                .ok_or_else(|| Error::NotFound(format!("model {name:?} has no version {v:?}"))),
        }
    }

    /// For `/predict`: the `model` field may be left out when one model name is served.
    pub fn select(&self, name: Option<&str>, version: Option<&str>) -> Result<&Arc<ServedModel>> {
        match name {
            Some(n) => self.get(n, version),
            None => match self.names.as_slice() {
                [only] => self.get(only, version).map_err(|_| {
                    Error::NotFound(format!(
                        "`model_version` {:?} is not served; served: {:?}",
                        version.unwrap_or_default(),
                        self.versions(only)
                    ))
                }),
                names => Err(Error::invalid(format!(
                    "several models are served ({names:?}); set `model`"
                ))),
            },
        }
    }
}

/// Numeric when both are numbers (an optional leading `v` allowed), else lexicographic.
pub fn compare_versions(a: &str, b: &str) -> CmpOrdering {
    let num = |s: &str| s.strip_prefix('v').unwrap_or(s).parse::<u64>().ok();
    match (num(a), num(b)) {
        (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.cmp(b)),
        _ => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_numerically_when_they_can() {
        assert_eq!(compare_versions("2", "10"), CmpOrdering::Less);
        assert_eq!(compare_versions("v2", "v10"), CmpOrdering::Less);
        assert_eq!(compare_versions("b", "a"), CmpOrdering::Greater);
    }
}
