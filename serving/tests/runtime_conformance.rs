//! Every fixture against onnxruntime's own outputs: labels equal, floats within 1e-5.

use std::path::{Path, PathBuf};

use modelship_serving::runtime::{self, ModelKind, Predictions};
use serde::Deserialize;

const TOLERANCE: f32 = 1e-5;

#[derive(Deserialize)]
struct Expected {
    model: String,
    inputs: String,
    #[serde(default)]
    labels: Vec<i64>,
    #[serde(default)]
    probabilities: Vec<Vec<f32>>,
    #[serde(default)]
    values: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct Inputs {
    inputs: Vec<Vec<f32>>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn check(name: &str, backend_name: &str) {
    let dir = fixtures();
    let expected: Expected =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.expected.json"))).unwrap())
            .unwrap();
    let inputs: Inputs =
        serde_json::from_slice(&std::fs::read(dir.join(&expected.inputs)).unwrap()).unwrap();
    let model = runtime::load(&std::fs::read(dir.join(&expected.model)).unwrap()).unwrap();
    assert_eq!(model.name(), backend_name, "{name}: backend");
    let sig = model.signature();
    let rows = inputs.inputs.len();
    assert!(rows > 0, "{name}: no input rows");
    let x: Vec<f32> = inputs.inputs.concat();

    // The whole set in one call, and row by row: batching must not change a result.
    let mut all = Predictions::default();
    model.predict(&x, rows, &mut all).unwrap();
    let mut single = Predictions::default();
    for r in (0..rows).step_by(97) {
        model.predict(&x[r * sig.features..(r + 1) * sig.features], 1, &mut single).unwrap();
        assert_eq!(
            single.scores.as_slice(),
            &all.scores[r * all.width..(r + 1) * all.width],
            "{name}: row {r} alone"
        );
    }

    let (want, width) = match &sig.kind {
        ModelKind::Classifier { classes, .. } => {
            assert_eq!(all.labels, expected.labels, "{name}: labels");
            (&expected.probabilities, *classes)
        }
        ModelKind::Regressor { targets, .. } => {
            assert!(all.labels.is_empty());
            (&expected.values, *targets)
        }
    };
    assert_eq!(all.width, width);
    assert_eq!(want.len(), rows, "{name}: expected outputs for every input row");
    let mut worst = 0.0f32;
    for (r, want_row) in want.iter().enumerate() {
        for (c, w) in want_row.iter().enumerate() {
            let got = all.scores[r * width + c];
            let diff = (got - w).abs();
            worst = worst.max(diff);
            assert!(diff <= TOLERANCE, "{name}: row {r} col {c}: got {got}, onnxruntime {w}");
        }
    }
    println!("{name}: {rows} rows, labels equal, max |diff| = {worst:e}");
}

#[test]
fn logreg_matches_onnxruntime() {
    check("logreg", "onnx-ml");
}

#[test]
fn logreg3_with_normalizer_matches_onnxruntime() {
    check("logreg3", "onnx-ml");
}

#[test]
fn random_forest_matches_onnxruntime() {
    check("rf", "onnx-ml");
}

#[test]
fn binary_gradient_boosting_matches_onnxruntime() {
    check("gb", "onnx-ml");
}

#[test]
fn multiclass_gradient_boosting_matches_onnxruntime() {
    check("gb3", "onnx-ml");
}

#[test]
fn random_forest_regressor_matches_onnxruntime() {
    check("rfreg", "onnx-ml");
}

#[test]
fn linear_regressor_matches_onnxruntime() {
    check("linreg", "onnx-ml");
}

#[test]
fn scaler_pipeline_matches_onnxruntime() {
    check("scaled_logreg", "onnx-ml");
}

#[cfg(feature = "tract")]
#[test]
fn one_vs_rest_graph_runs_on_tract_and_matches_onnxruntime() {
    check("ovr3", "tract");
}

/// A deliberately slow model (a per-row 384x384 matrix product), the slower version in the
/// end-to-end analysis tests: its answers still match onnxruntime's.
#[cfg(feature = "tract")]
#[test]
fn heavy_general_graph_matches_onnxruntime() {
    check("heavy", "tract");
}
