//! Turning configuration into served models: fetch, decode, warm up, start batching.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use modelship_contract::env;

use crate::batching::{BatchConfig, Batcher, CallCost};
use crate::config::Config;
use crate::drift::{DriftWindow, Reference};
use crate::error::{Error, Result};
use crate::feedback::Feedback;
use crate::models::{Models, ServedModel};
use crate::runtime::{self, Backend, Predictions};
use crate::state::AppState;

/// Rows in the drift window and in the accuracy window.
pub const DRIFT_WINDOW_ROWS: usize = 1000;
pub const ACCURACY_WINDOW_ROWS: usize = 1000;
/// Request ids remembered for feedback, per model.
pub const PREDICTION_LOG_ENTRIES: usize = 10_000;
/// Rows remembered for feedback, per model, across all ids.
pub const PREDICTION_LOG_ROWS: usize = 100_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSource {
    pub name: String,
    pub version: String,
    pub uri: String,
    pub sha256: Option<String>,
    pub reference: Option<String>,
}

/// Model sources from `MODELSHIP_MODEL_URI` or from `MODELSHIP_MODEL_DIR`.
pub fn sources(config: &Config) -> Result<Vec<ModelSource>> {
    let sources = match (&config.model_uri, &config.model_dir) {
        (Some(_), Some(_)) => {
            return Err(Error::Config(format!(
                "set {} or {}, not both",
                env::MODEL_URI,
                env::MODEL_DIR
            )));
        }
        (None, None) => {
            return Err(Error::Config(format!("set {} or {}", env::MODEL_URI, env::MODEL_DIR)));
        }
        (Some(uri), None) => vec![ModelSource {
            name: config.model_name.clone().unwrap_or_else(|| name_from_uri(uri)),
            version: config.model_version.clone(),
            uri: uri.clone(),
            sha256: config.model_sha256.clone(),
            reference: config.reference_data.clone(),
        }],
        (None, Some(dir)) => scan_dir(dir)?,
    };
    for s in &sources {
        check_name("model name", &s.name)?;
        check_name("model version", &s.version)?;
    }
    Ok(sources)
}

/// Names become URL path segments and metric labels: keep them plain and short.
fn check_name(what: &str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!("{what} {s:?} must be 1-128 characters of [A-Za-z0-9._-]")))
    }
}

fn name_from_uri(uri: &str) -> String {
    let path = uri.split(['?', '#']).next().unwrap_or(uri);
    let stem = Path::new(path).file_stem().and_then(|s| s.to_str()).unwrap_or("model");
    let clean: String = stem
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    if clean.is_empty() { "model".into() } else { clean }
}

/// `<dir>/<name>/<version>/model.onnx`, with an optional `reference.json` beside it.
fn scan_dir(dir: &Path) -> Result<Vec<ModelSource>> {
    let read = |p: &Path| {
        std::fs::read_dir(p).map_err(|e| Error::io(format!("reading {}", p.display()), e))
    };
    let mut out = Vec::new();
    for name in read(dir)? {
        let name = name.map_err(|e| Error::io("reading model dir", e))?.path();
        if !name.is_dir() {
            continue;
        }
        for version in read(&name)? {
            let version = version.map_err(|e| Error::io("reading model dir", e))?.path();
            let model = version.join("model.onnx");
            if !model.is_file() {
                continue;
            }
            let reference = version.join("reference.json");
            let file_name =
                |p: &Path| p.file_name().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
            out.push(ModelSource {
                name: file_name(&name),
                version: file_name(&version),
                uri: model.display().to_string(),
                sha256: None,
                reference: reference.is_file().then(|| reference.display().to_string()),
            });
        }
    }
    if out.is_empty() {
        return Err(Error::Config(format!(
            "no <name>/<version>/model.onnx under {}",
            dir.display()
        )));
    }
    out.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    Ok(out)
}

/// Load every model, warm each up, and start its batching task.
pub async fn load_all(
    state: &AppState,
    sources: &[ModelSource],
    batch: BatchConfig,
) -> Result<Models> {
    let mut models = Vec::with_capacity(sources.len());
    for source in sources {
        let started = std::time::Instant::now();
        let bytes = crate::fetch::fetch(&source.uri, source.sha256.as_deref()).await?;
        let backend = tokio::task::spawn_blocking(move || runtime::load(&bytes))
            .await
            .map_err(|e| Error::load(format!("loader task failed: {e}")))??;
        let features = backend.signature().features;
        let reference = match &source.reference {
            Some(uri) => Some(Reference::parse(&crate::fetch::fetch(uri, None).await?, features)?),
            None => None,
        };
        let cost = warm_up(backend.as_ref())?;
        let metrics = state.metrics.model(&source.name, &source.version, reference.is_some());
        let drift = reference.map(|r| DriftWindow::new(r, DRIFT_WINDOW_ROWS));
        let has_drift = drift.is_some();
        let batcher = Batcher::spawn(backend.clone(), batch, cost, metrics.clone(), drift);
        tracing::info!(
            model = %source.name,
            version = %source.version,
            backend = backend.name(),
            features,
            drift = has_drift,
            ?cost,
            elapsed_us = started.elapsed().as_micros() as u64,
            "model loaded and warmed up"
        );
        models.push(Arc::new(ServedModel {
            name: source.name.clone(),
            version: source.version.clone(),
            backend,
            batcher,
            metrics,
            feedback: Mutex::new(Feedback::new(
                ACCURACY_WINDOW_ROWS,
                PREDICTION_LOG_ENTRIES,
                PREDICTION_LOG_ROWS,
            )),
            drift: has_drift,
        }));
    }
    Ok(Models::new(models))
}

/// Warm-up calls at most: the fastest is the model's cost per row.
const WARM_UP_CALLS: usize = 3;

/// Whether warm-up has measured enough after `calls` calls, the fastest taking `fastest`. A
/// costly model is known to be costly after two calls, with no need to wait for a third; one
/// call is never enough, since a model's first call can take several times as long as the
/// next (cold caches, first allocations) and would pass a cheap model for a costly one.
fn warm_up_done(calls: usize, fastest: Duration) -> bool {
    calls >= WARM_UP_CALLS || (calls >= 2 && CallCost::per_row(fastest).offload(1))
}

/// Inferences on a zero row: readiness promises the model has answered once. The fastest of
/// a few calls is what a row costs the model, which decides where its calls run.
pub fn warm_up(backend: &dyn Backend) -> Result<CallCost> {
    let sig = backend.signature();
    let x = vec![0.0; sig.features];
    let mut out = Predictions::default();
    let mut fastest = Duration::MAX;
    for calls in 1.. {
        let started = std::time::Instant::now();
        backend.predict(&x, 1, &mut out)?;
        fastest = fastest.min(started.elapsed());
        if out.rows != 1 || out.scores.len() != sig.width() {
            return Err(Error::load("warm-up inference returned outputs of the wrong size"));
        }
        if warm_up_done(calls, fastest) {
            break;
        }
    }
    Ok(CallCost::per_row(fastest))
}

/// Fuzz entry point of the model loader: arbitrary bytes as a model file. Loading may refuse
/// them; a model it accepts must survive what loading does next (the warm-up inference) and a
/// prediction on a few rows, answering with outputs of the declared size, or refuse with an
/// error. Nothing may panic.
pub fn fuzz_load(data: &[u8]) {
    let Ok(backend) = runtime::load(data) else { return };
    let sig = backend.signature().clone();
    assert!(sig.features > 0, "a loaded model has inputs");
    if warm_up(backend.as_ref()).is_err() {
        return;
    }
    let rows = 3;
    let x: Vec<f32> = (0..rows * sig.features).map(|i| (i % 7) as f32 - 3.0).collect();
    let mut out = Predictions::default();
    if backend.predict(&x, rows, &mut out).is_ok() {
        assert_eq!(out.rows, rows);
        assert_eq!(out.scores.len(), rows * sig.width());
        if sig.is_classifier() {
            assert_eq!(out.labels.len(), rows);
        }
    }
}

pub fn batch_config(config: &Config) -> BatchConfig {
    BatchConfig {
        max_rows: config.max_batch_size as usize,
        max_delay: config.max_batch_delay(),
        queue_capacity: config.queue_capacity as usize,
        inline_call_max: config.inline_call_max(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_file_stem() {
        assert_eq!(name_from_uri("file:///models/fraud.onnx"), "fraud");
        assert_eq!(name_from_uri("https://h/m/iris.onnx?sig=1"), "iris");
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("n", "fraud-detector_v2.1").is_ok());
        assert!(check_name("n", "a/b").is_err());
        assert!(check_name("n", "").is_err());
    }

    #[test]
    fn warm_up_trusts_no_single_call() {
        let cheap = Duration::from_micros(10);
        let costly = CallCost::OFFLOAD_ABOVE * 2;
        assert!(!warm_up_done(1, costly), "a slow first call alone decides nothing");
        assert!(warm_up_done(2, costly), "two slow calls make a costly model");
        assert!(!warm_up_done(2, cheap));
        assert!(warm_up_done(WARM_UP_CALLS, cheap));
    }
}
