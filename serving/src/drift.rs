//! Data drift: recent rows against reference feature statistics.
//!
//! The score is the source design's: the mean over features of
//! `|mean(window) - mean(reference)| / (std(reference) + 1e-8)`. The window holds the last
//! `capacity` rows in a ring with running sums, so each row costs O(features).

use serde::Deserialize;

use crate::error::{Error, Result};

/// Per-feature statistics of the data the model was trained on.
#[derive(Clone, Debug, PartialEq)]
pub struct Reference {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReference {
    #[serde(default)]
    mean: Option<Vec<f64>>,
    #[serde(default)]
    std: Option<Vec<f64>>,
    #[serde(default)]
    count: Option<u64>,
    /// Raw rows instead of statistics, as the source design's detector took them.
    #[serde(default)]
    data: Option<Vec<Vec<f64>>>,
}

impl Reference {
    /// `{"mean": [...], "std": [...]}` or `{"data": [[...], ...]}`.
    pub fn parse(bytes: &[u8], features: usize) -> Result<Self> {
        let raw: RawReference = serde_json::from_slice(bytes)
            .map_err(|e| Error::Config(format!("reference data is not valid JSON: {e}")))?;
        let _ = raw.count;
        let reference = match (raw.mean, raw.std, raw.data) {
            (Some(mean), Some(std), None) => Self { mean, std },
            (None, None, Some(rows)) => Self::from_rows(&rows)?,
            _ => {
                return Err(Error::Config(
                    "reference data needs `mean` and `std`, or `data`".into(),
                ));
            }
        };
        if reference.mean.len() != features || reference.std.len() != features {
            return Err(Error::Config(format!(
                "reference data has {} means and {} stds; the model has {features} features",
                reference.mean.len(),
                reference.std.len()
            )));
        }
        if reference.mean.iter().chain(&reference.std).any(|v| !v.is_finite())
            || reference.std.iter().any(|s| *s < 0.0)
        {
            return Err(Error::Config("reference statistics must be finite, with std >= 0".into()));
        }
        Ok(reference)
    }

    fn from_rows(rows: &[Vec<f64>]) -> Result<Self> {
        let features = rows.first().map(Vec::len).unwrap_or(0);
        if rows.is_empty() || rows.iter().any(|r| r.len() != features) {
            return Err(Error::Config(
                "reference `data` must be a non-empty list of equal-length rows".into(),
            ));
        }
        let n = rows.len() as f64;
        let mean: Vec<f64> =
            (0..features).map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n).collect();
        let std = (0..features)
            .map(|j| (rows.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n).sqrt())
            .collect();
        Ok(Self { mean, std })
    }

    pub fn features(&self) -> usize {
        self.mean.len()
    }
}

#[derive(Clone, Debug)]
pub struct DriftWindow {
    reference: Reference,
    capacity: usize,
    ring: Vec<f32>,
    /// Next row slot to overwrite.
    head: usize,
    len: usize,
    sums: Vec<f64>,
}

impl DriftWindow {
    pub fn new(reference: Reference, capacity: usize) -> Self {
        let features = reference.features();
        let capacity = capacity.max(1);
        Self {
            ring: vec![0.0; capacity * features],
            sums: vec![0.0; features],
            reference,
            capacity,
            head: 0,
            len: 0,
        }
    }

    /// Add rows (row-major, `features` wide) and evict the oldest beyond capacity.
    pub fn push(&mut self, rows: &[f32]) {
        let f = self.reference.features();
        for row in rows.chunks_exact(f) {
            let slot = &mut self.ring[self.head * f..(self.head + 1) * f];
            for ((s, old), new) in self.sums.iter_mut().zip(slot.iter_mut()).zip(row) {
                if self.len == self.capacity {
                    *s -= f64::from(*old);
                }
                *s += f64::from(*new);
                *old = *new;
            }
            self.len = (self.len + 1).min(self.capacity);
            self.head = (self.head + 1) % self.capacity;
            if self.head == 0 {
                self.resum();
            }
        }
    }

    /// Recompute the sums once per lap so rounding from add/subtract cannot accumulate.
    fn resum(&mut self) {
        let f = self.reference.features();
        self.sums.iter_mut().for_each(|s| *s = 0.0);
        for row in self.ring[..self.len * f].chunks_exact(f) {
            for (s, v) in self.sums.iter_mut().zip(row) {
                *s += f64::from(*v);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn score(&self) -> f64 {
        if self.len == 0 {
            return 0.0;
        }
        let n = self.len as f64;
        let r = &self.reference;
        let total: f64 = self
            .sums
            .iter()
            .zip(r.mean.iter().zip(&r.std))
            .map(|(s, (m, sd))| (s / n - m).abs() / (sd + 1e-8))
            .sum();
        total / r.features() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> Reference {
        Reference { mean: vec![0.0, 10.0], std: vec![1.0, 2.0] }
    }

    #[test]
    fn no_drift_when_the_window_matches_the_reference() {
        let mut w = DriftWindow::new(reference(), 4);
        w.push(&[-1.0, 8.0, 1.0, 12.0]);
        assert!(w.score().abs() < 1e-12);
    }

    #[test]
    fn score_is_the_mean_normalised_shift() {
        let mut w = DriftWindow::new(reference(), 4);
        // Feature 0 shifted by 1 std, feature 1 by 2 stds: mean 1.5.
        w.push(&[1.0, 14.0]);
        assert!((w.score() - 1.5).abs() < 1e-6);
    }

    #[test]
    fn the_window_forgets_old_rows() {
        let mut w = DriftWindow::new(reference(), 2);
        w.push(&[100.0, 100.0]);
        w.push(&[0.0, 10.0, 0.0, 10.0, 0.0, 10.0]);
        assert_eq!(w.len(), 2);
        assert!(w.score().abs() < 1e-9);
    }

    #[test]
    fn parses_statistics_or_rows() {
        let r = Reference::parse(br#"{"mean":[0,1],"std":[1,1],"count":3}"#, 2).unwrap();
        assert_eq!(r.mean, vec![0.0, 1.0]);
        let r = Reference::parse(br#"{"data":[[0,2],[2,4]]}"#, 2).unwrap();
        assert_eq!(r.mean, vec![1.0, 3.0]);
        assert_eq!(r.std, vec![1.0, 1.0]);
        assert!(Reference::parse(br#"{"mean":[0],"std":[1]}"#, 2).is_err());
        assert!(Reference::parse(br#"{"mean":[0,1],"std":[1,-1]}"#, 2).is_err());
    }
}
