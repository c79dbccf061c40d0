//! TreeEnsembleClassifier and TreeEnsembleRegressor: the scores of a [`Forest`] turned into
//! class labels and probabilities, or regression targets.

mod forest;
mod general;
mod index;
mod leq;
mod node;

use forest::Forest;

use super::attrs;
use super::transform::{PostTransform, argmax, logistic};
use crate::error::Result;
use crate::runtime::proto::NodeProto;

#[derive(Clone, Debug)]
pub struct TreeEnsembleClassifier {
    forest: Forest,
    labels: Vec<i64>,
    base: Vec<f32>,
    post: PostTransform,
    /// Two classes and every weight on one class: onnxruntime's single-score layout.
    binary_single: bool,
    all_non_negative: bool,
    features: usize,
}

impl TreeEnsembleClassifier {
    pub fn new(node: &NodeProto, features: usize) -> Result<Self> {
        let labels = attrs::ints(node, "classlabels_int64s");
        if labels.len() < 2 {
            return Err(if labels.is_empty() {
                super::linear::no_int_labels(node, "classlabels_int64s")
            } else {
                attrs::bad(node, "classlabels_int64s", "needs at least two classes")
            });
        }
        let (forest, stats) = Forest::new(node, features, "class", labels.len())?;
        let base = attrs::floats(node, "base_values")?.unwrap_or_default();
        if base.len() > labels.len()
            || (labels.len() > 2 && !base.is_empty() && base.len() != labels.len())
        {
            return Err(attrs::bad(
                node,
                "base_values",
                &format!("has {} values for {} classes", base.len(), labels.len()),
            ));
        }
        Ok(Self {
            forest,
            binary_single: labels.len() == 2 && stats.distinct_ids == 1,
            all_non_negative: stats.all_non_negative,
            features,
            labels,
            base,
            post: PostTransform::from_node(node)?,
        })
    }

    pub fn labels(&self) -> &[i64] {
        &self.labels
    }

    pub fn classes(&self) -> usize {
        self.labels.len()
    }

    pub fn run(&self, x: &[f32], rows: usize, labels: &mut Vec<i64>, scores: &mut Vec<f32>) {
        let classes = self.classes();
        labels.clear();
        scores.clear();
        scores.resize(rows * classes, 0.0);
        let forest = &self.forest;
        if let Some(reached) = forest.reached() {
            // Which classes get a score is the same for every row: no need to track it.
            forest.for_each_weight(x, rows, self.features, |row, id, w| {
                scores[row * classes + id] += w;
            });
            for out in scores.chunks_exact_mut(classes) {
                labels.push(self.finish(out, reached));
            }
            return;
        }
        let mut has = vec![false; rows * classes];
        forest.for_each_weight(x, rows, self.features, |row, id, w| {
            scores[row * classes + id] += w;
            has[row * classes + id] = true;
        });
        for (out, has) in scores.chunks_exact_mut(classes).zip(has.chunks_exact(classes)) {
            labels.push(self.finish(out, has));
        }
    }

    fn finish(&self, out: &mut [f32], has: &[bool]) -> i64 {
        if out.len() == 2 { self.finish_binary(out, has) } else { self.finish_multi(out, has) }
    }

    /// onnxruntime's binary conventions; see feasibility notes in the README.
    fn finish_binary(&self, out: &mut [f32], has: &[bool]) -> i64 {
        let mut two_scores = has[1];
        match self.base.as_slice() {
            [b0, b1] => {
                out[0] += b0;
                out[1] += b1;
                two_scores = true;
            }
            [b0] => out[0] += b0,
            _ => {}
        }
        if two_scores {
            let label = self.labels[argmax(out)];
            self.post.apply(out);
            return label;
        }
        let s = out[0];
        if self.binary_single && self.all_non_negative {
            // Random forest: the score is already P(class 1).
            out[0] = 1.0 - s;
            out[1] = s;
            if s > 0.5 { self.labels[1] } else { self.labels[0] }
        } else {
            // Boosting: the score is a logit.
            if self.post == PostTransform::Logistic {
                out[0] = logistic(-s);
                out[1] = logistic(s);
            } else {
                out[0] = -s;
                out[1] = s;
            }
            if s > 0.0 { self.labels[1] } else { self.labels[0] }
        }
    }

    fn finish_multi(&self, out: &mut [f32], has: &[bool]) -> i64 {
        for (k, b) in self.base.iter().enumerate() {
            out[k] += b;
        }
        // Only classes that received a score (or a base value) compete, first maximum wins.
        let competes = |k: usize| has[k] || k < self.base.len();
        let mut best: Option<usize> = None;
        for k in 0..out.len() {
            if competes(k) && best.is_none_or(|b| out[k] > out[b]) {
                best = Some(k);
            }
        }
        self.post.apply(out);
        self.labels[best.unwrap_or(0)]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Aggregate {
    Sum,
    Average,
    Min,
    Max,
}

#[derive(Clone, Debug)]
pub struct TreeEnsembleRegressor {
    forest: Forest,
    targets: usize,
    base: Vec<f32>,
    post: PostTransform,
    aggregate: Aggregate,
    features: usize,
}

impl TreeEnsembleRegressor {
    pub fn new(node: &NodeProto, features: usize) -> Result<Self> {
        let targets = attrs::int(node, "n_targets").unwrap_or(1);
        let targets =
            usize::try_from(targets).ok().filter(|&t| (1..=1024).contains(&t)).ok_or_else(
                || attrs::bad(node, "n_targets", &format!("is {targets}, expected 1..=1024")),
            )?;
        let (forest, _) = Forest::new(node, features, "target", targets)?;
        let base = attrs::floats(node, "base_values")?.unwrap_or_default();
        if !base.is_empty() && base.len() != targets {
            return Err(attrs::bad(
                node,
                "base_values",
                &format!("has {} values for {targets} targets", base.len()),
            ));
        }
        let aggregate = match attrs::string(node, "aggregate_function").as_deref() {
            None | Some("SUM") => Aggregate::Sum,
            Some("AVERAGE") => Aggregate::Average,
            Some("MIN") => Aggregate::Min,
            Some("MAX") => Aggregate::Max,
            Some(other) => {
                return Err(attrs::bad(
                    node,
                    "aggregate_function",
                    &format!("value {other} is not supported"),
                ));
            }
        };
        Ok(Self {
            forest,
            targets,
            base,
            post: PostTransform::from_node(node)?,
            aggregate,
            features,
        })
    }

    pub fn targets(&self) -> usize {
        self.targets
    }

    pub fn run(&self, x: &[f32], rows: usize, out: &mut Vec<f32>) {
        let t = self.targets;
        out.clear();
        out.resize(rows * t, 0.0);
        let agg = self.aggregate;
        if matches!(agg, Aggregate::Sum | Aggregate::Average) {
            self.forest.for_each_weight(x, rows, self.features, |row, id, w| {
                out[row * t + id] += w;
            });
        } else {
            let mut has = vec![false; rows * t];
            self.forest.for_each_weight(x, rows, self.features, |row, id, w| {
                let k = row * t + id;
                let s = &mut out[k];
                *s = match agg {
                    Aggregate::Min if has[k] => s.min(w),
                    Aggregate::Max if has[k] => s.max(w),
                    _ => w,
                };
                has[k] = true;
            });
        }
        let trees = self.forest.trees() as f32;
        for o in out.chunks_exact_mut(t) {
            for (k, v) in o.iter_mut().enumerate() {
                if agg == Aggregate::Average {
                    *v /= trees;
                }
                *v += self.base.get(k).copied().unwrap_or(0.0);
            }
            self.post.apply(o);
        }
    }
}
