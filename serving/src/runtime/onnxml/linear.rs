//! LinearClassifier and LinearRegressor.

use super::attrs;
use super::transform::{PostTransform, argmax};
use crate::error::{Error, Result};
use crate::runtime::proto::NodeProto;

/// `scores = x · coefficientsᵀ + intercepts`, one row of coefficients per target.
#[derive(Clone, Debug)]
struct Affine {
    coefficients: Vec<f32>,
    intercepts: Vec<f32>,
    features: usize,
    targets: usize,
}

impl Affine {
    fn new(node: &NodeProto, features: usize) -> Result<Self> {
        let coefficients = attrs::required_floats(node, "coefficients")?;
        if coefficients.is_empty() || coefficients.len() % features != 0 {
            return Err(attrs::bad(
                node,
                "coefficients",
                &format!(
                    "has {} values, not a multiple of the {features} input features",
                    coefficients.len()
                ),
            ));
        }
        let targets = coefficients.len() / features;
        let intercepts = attrs::floats(node, "intercepts")?.unwrap_or_else(|| vec![0.0; targets]);
        if intercepts.len() != targets {
            return Err(attrs::bad(
                node,
                "intercepts",
                &format!("has {} values for {targets} targets", intercepts.len()),
            ));
        }
        Ok(Self { coefficients, intercepts, features, targets })
    }

    fn row(&self, x: &[f32], out: &mut [f32]) {
        for ((o, w), b) in
            out.iter_mut().zip(self.coefficients.chunks_exact(self.features)).zip(&self.intercepts)
        {
            *o = x.iter().zip(w).map(|(a, b)| a * b).sum::<f32>() + b;
        }
    }
}

#[derive(Clone, Debug)]
pub struct LinearClassifier {
    affine: Affine,
    labels: Vec<i64>,
    post: PostTransform,
}

impl LinearClassifier {
    pub fn new(node: &NodeProto, features: usize) -> Result<Self> {
        let affine = Affine::new(node, features)?;
        let labels = attrs::ints(node, "classlabels_ints");
        if labels.is_empty() {
            return Err(no_int_labels(node, "classlabels_ints"));
        }
        let ok = affine.targets == labels.len() || (affine.targets == 1 && labels.len() == 2);
        if !ok {
            return Err(attrs::bad(
                node,
                "coefficients",
                &format!("describe {} targets for {} class labels", affine.targets, labels.len()),
            ));
        }
        Ok(Self { affine, labels, post: PostTransform::from_node(node)? })
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
        for (row, out) in x.chunks_exact(self.affine.features).zip(scores.chunks_exact_mut(classes))
        {
            if self.affine.targets == 1 {
                // One score for two classes: onnxruntime labels by its sign and adds the
                // complement as the first column.
                let mut s = [0.0];
                self.affine.row(row, &mut s);
                labels.push(if s[0] > 0.0 { self.labels[1] } else { self.labels[0] });
                let p = match self.post {
                    PostTransform::Logistic => super::transform::logistic(s[0]),
                    _ => s[0],
                };
                out[0] = 1.0 - p;
                out[1] = p;
            } else {
                self.affine.row(row, out);
                labels.push(self.labels[argmax(out)]);
                self.post.apply(out);
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct LinearRegressor {
    affine: Affine,
    post: PostTransform,
}

impl LinearRegressor {
    pub fn new(node: &NodeProto, features: usize) -> Result<Self> {
        let affine = Affine::new(node, features)?;
        if let Some(t) = attrs::int(node, "targets")
            && usize::try_from(t).ok() != Some(affine.targets)
        {
            let why = format!("is {t} but the coefficients describe {}", affine.targets);
            return Err(attrs::bad(node, "targets", &why));
        }
        Ok(Self { affine, post: PostTransform::from_node(node)? })
    }

    pub fn targets(&self) -> usize {
        self.affine.targets
    }

    pub fn run(&self, x: &[f32], rows: usize, out: &mut Vec<f32>) {
        let t = self.affine.targets;
        out.clear();
        out.resize(rows * t, 0.0);
        for (row, o) in x.chunks_exact(self.affine.features).zip(out.chunks_exact_mut(t)) {
            self.affine.row(row, o);
            self.post.apply(o);
        }
    }
}

pub fn no_int_labels(node: &NodeProto, name: &str) -> Error {
    if node.attr("classlabels_strings").is_some() {
        attrs::bad(
            node,
            "classlabels_strings",
            "holds string class labels; only integer labels are supported",
        )
    } else {
        attrs::missing(node, name)
    }
}
