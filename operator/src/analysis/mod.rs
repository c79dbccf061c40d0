//! Canary analysis from the serving pods' own Prometheus metrics.
//!
//! The candidate's pods are scraped directly (no Prometheus server is needed); their counters
//! are cumulative since the pods started, and the pods were created for this rollout, so a
//! measurement covers the candidate's whole life.
//!
//! - [`scrape`]: the one part that does I/O: fetch every candidate pod's `/metrics`;
//! - [`measure`]: pure: the pods' samples combined into one [`Measurement`];
//! - [`judge`]: pure: a measurement against the thresholds of `spec.strategy.analysis`.
//!
//! The planner only ever sees a [`Measurement`] and calls [`judge`]; this module knows
//! nothing of the planner.

pub mod judge;
pub mod measure;
pub mod scrape;

pub use judge::{Verdict, judge};

/// One analysis measurement of the candidate, taken by the controller before planning.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    pub requests: i64,
    pub error_rate: Option<f64>,
    pub latency_p95_seconds: Option<f64>,
    pub drift_score: Option<f64>,
    /// Pods that could not be scraped.
    pub unreachable_pods: usize,
}
