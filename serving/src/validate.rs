//! `modelship-serving validate`: the check a CI job runs before it applies a new version.
//!
//! The model is fetched and loaded exactly as the server loads it (same URI schemes, same
//! SHA-256 check, same backends, same warm-up), then the sample inputs run through it and the
//! outputs are compared with the expected ones. The verdict is printed and is the exit code:
//! 0 when every check passes, 1 otherwise. Bad files get an error that names what is wrong.
//!
//! Inputs: `{"inputs": [[f, ...], ...]}` or `[[f, ...], ...]`. Expected outputs: a classifier's
//! `{"labels": [...], "probabilities": [[...], ...]}` (either may be left out) or a
//! regressor's `{"values": [...]}` (one number, or one list per row) — the fixtures' format.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use crate::config::ValidateArgs;
use crate::error::{Error, Result};
use crate::runtime::{self, Backend, ModelKind, Predictions};

/// One check and how it went.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

/// Everything checked, in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    fn pass(&mut self, name: &'static str, detail: impl Into<String>) {
        self.checks.push(Check { name, passed: true, detail: detail.into() });
    }

    fn fail(&mut self, name: &'static str, detail: impl Into<String>) {
        self.checks.push(Check { name, passed: false, detail: detail.into() });
    }

    /// The report as printed: one line per check, then the verdict.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for check in &self.checks {
            let mark = if check.passed { "ok  " } else { "FAIL" };
            out.push_str(&format!("{mark} {:<9} {}\n", check.name, check.detail));
        }
        out.push_str(if self.passed() { "PASS\n" } else { "FAIL\n" });
        out
    }
}

/// Run every check `args` asks for.
pub async fn run(args: &ValidateArgs) -> Report {
    let mut report = Report::default();
    let bytes = match crate::fetch::fetch(&args.model, args.sha256.as_deref()).await {
        Ok(bytes) => bytes,
        Err(error) => {
            report.fail("fetch", error.to_string());
            return report;
        }
    };
    let started = Instant::now();
    let backend = match runtime::load(&bytes) {
        Ok(backend) => backend,
        Err(error) => {
            report.fail("load", error.to_string());
            return report;
        }
    };
    let signature = backend.signature();
    let kind = match &signature.kind {
        ModelKind::Classifier { classes, .. } => format!("classifier, {classes} classes"),
        ModelKind::Regressor { targets, .. } => format!("regressor, {targets} targets"),
    };
    report.pass(
        "load",
        format!(
            "{} bytes, {} backend, {} features, {kind}, in {:.1} ms",
            bytes.len(),
            backend.name(),
            signature.features,
            started.elapsed().as_secs_f64() * 1000.0
        ),
    );
    match crate::loader::warm_up(backend.as_ref()) {
        Ok(cost) => report.pass(
            "warm-up",
            format!("answered a zero row in {:.1} µs", cost.row_time().as_secs_f64() * 1e6),
        ),
        Err(error) => {
            report.fail("warm-up", error.to_string());
            return report;
        }
    }
    let Some(inputs_path) = &args.inputs else {
        return report;
    };
    let rows = match read_inputs(inputs_path, signature.features) {
        Ok(rows) => rows,
        Err(error) => {
            report.fail("inputs", error.to_string());
            return report;
        }
    };
    let (outputs, slowest) = match infer_each(backend.as_ref(), &rows) {
        Ok(done) => done,
        Err(error) => {
            report.fail("inference", error.to_string());
            return report;
        }
    };
    report.pass("inference", format!("{} rows", rows.len()));
    if let Some(path) = &args.expected {
        match read_expected(path)
            .and_then(|e| compare(backend.as_ref(), &outputs, &e, args.tolerance))
        {
            Ok(detail) => report.pass("outputs", detail),
            Err(error) => report.fail("outputs", error.to_string()),
        }
    }
    let slowest_ms = slowest.as_secs_f64() * 1000.0;
    match args.max_latency_ms {
        Some(limit) if slowest_ms > limit => report.fail(
            "latency",
            format!("the slowest row took {slowest_ms:.3} ms, more than --max-latency-ms {limit}"),
        ),
        Some(limit) => {
            report.pass("latency", format!("slowest row {slowest_ms:.3} ms (limit {limit} ms)"))
        }
        None => report.pass("latency", format!("slowest row {slowest_ms:.3} ms")),
    }
    report
}

fn invalid(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::Config(format!("{}: {why}", path.display()))
}

/// The rows of an inputs file, each checked against the model's feature count.
pub fn read_inputs(path: &Path, features: usize) -> Result<Vec<Vec<f32>>> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Inputs {
        Wrapped { inputs: Vec<Vec<f32>> },
        Bare(Vec<Vec<f32>>),
    }
    let text = std::fs::read_to_string(path).map_err(|e| invalid(path, e))?;
    let rows = match serde_json::from_str::<Inputs>(&text) {
        Ok(Inputs::Wrapped { inputs } | Inputs::Bare(inputs)) => inputs,
        Err(error) => {
            return Err(invalid(
                path,
                format!("not an inputs file ({{\"inputs\": [[numbers]]}} or [[numbers]]): {error}"),
            ));
        }
    };
    if rows.is_empty() {
        return Err(invalid(path, "no rows"));
    }
    for (i, row) in rows.iter().enumerate() {
        if row.len() != features {
            return Err(invalid(
                path,
                format!("row {i} has {} features; the model takes {features}", row.len()),
            ));
        }
        if let Some(j) = row.iter().position(|v| !v.is_finite()) {
            return Err(invalid(path, format!("row {i}, feature {j} is not a finite number")));
        }
    }
    Ok(rows)
}

/// Each row on its own, as single requests run: the outputs, and the slowest row's time.
fn infer_each(backend: &dyn Backend, rows: &[Vec<f32>]) -> Result<(Predictions, Duration)> {
    let mut all = Predictions { width: backend.signature().width(), ..Predictions::default() };
    let mut one = Predictions::default();
    let mut slowest = Duration::ZERO;
    for row in rows {
        let started = Instant::now();
        backend.predict(row, 1, &mut one)?;
        slowest = slowest.max(started.elapsed());
        all.rows += 1;
        all.labels.extend_from_slice(&one.labels);
        all.scores.extend_from_slice(&one.scores);
        one.clear();
    }
    Ok((all, slowest))
}

/// Expected outputs, in the fixtures' format.
#[derive(Debug, Default, Deserialize)]
pub struct Expected {
    #[serde(default)]
    pub labels: Option<Vec<i64>>,
    #[serde(default)]
    pub probabilities: Option<Vec<Vec<f64>>>,
    #[serde(default)]
    pub values: Option<Vec<Value>>,
}

fn read_expected(path: &Path) -> Result<Expected> {
    let text = std::fs::read_to_string(path).map_err(|e| invalid(path, e))?;
    let expected: Expected = serde_json::from_str(&text).map_err(|e| {
        invalid(path, format!("not an expected-outputs file ({{\"labels\", \"probabilities\"}} or {{\"values\"}}): {e}"))
    })?;
    if expected.labels.is_none() && expected.probabilities.is_none() && expected.values.is_none() {
        return Err(invalid(path, "names no labels, probabilities or values"));
    }
    Ok(expected)
}

/// Compare the outputs with what was expected; the summary, or the first mismatch.
pub fn compare(
    backend: &dyn Backend,
    outputs: &Predictions,
    expected: &Expected,
    tolerance: f64,
) -> Result<String> {
    let width = backend.signature().width();
    let rows = outputs.rows;
    let count = |n: usize, what: &str| {
        if n == rows {
            Ok(())
        } else {
            Err(Error::invalid(format!("{n} expected {what} for {rows} input rows")))
        }
    };
    let mut worst = 0.0f64;
    let mut compared = Vec::new();
    if let Some(labels) = &expected.labels {
        count(labels.len(), "labels")?;
        if !backend.signature().is_classifier() {
            return Err(Error::invalid("labels expected, but the model is a regressor"));
        }
        if let Some(i) = (0..rows).find(|&i| outputs.labels[i] != labels[i]) {
            return Err(Error::invalid(format!(
                "row {i}: label {}, expected {}",
                outputs.labels[i], labels[i]
            )));
        }
        compared.push(format!("{rows} labels equal"));
    }
    let mut scores = |expected: Vec<Vec<f64>>, what: &str| -> Result<()> {
        count(expected.len(), what)?;
        for (i, row) in expected.iter().enumerate() {
            if row.len() != width {
                return Err(Error::invalid(format!(
                    "row {i}: {} expected {what}, the model gives {width}",
                    row.len()
                )));
            }
            for (j, want) in row.iter().enumerate() {
                let got = f64::from(outputs.scores[i * width + j]);
                let diff = (got - want).abs();
                worst = worst.max(diff);
                if diff > tolerance {
                    return Err(Error::invalid(format!(
                        "row {i}, {what} {j}: {got}, expected {want} (difference {diff:.3e}, tolerance {tolerance:e})"
                    )));
                }
            }
        }
        compared.push(format!("{rows} rows of {what} within {tolerance:e}"));
        Ok(())
    };
    if let Some(probabilities) = &expected.probabilities {
        scores(probabilities.clone(), "probabilities")?;
    }
    if let Some(values) = &expected.values {
        let rows: Vec<Vec<f64>> = values
            .iter()
            .map(|v| match v {
                Value::Array(items) => items.iter().filter_map(Value::as_f64).collect(),
                other => other.as_f64().into_iter().collect(),
            })
            .collect();
        scores(rows, "values")?;
    }
    Ok(format!("{} (largest difference {worst:.3e})", compared.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(checks: &[(&'static str, bool)]) -> Report {
        Report {
            checks: checks
                .iter()
                .map(|(name, passed)| Check { name, passed: *passed, detail: String::new() })
                .collect(),
        }
    }

    #[test]
    fn the_verdict_needs_every_check() {
        assert!(report(&[("load", true), ("outputs", true)]).passed());
        assert!(!report(&[("load", true), ("outputs", false)]).passed());
        assert!(!report(&[]).passed(), "nothing checked is no pass");
        assert!(report(&[("load", false)]).render().ends_with("FAIL\n"));
    }
}
