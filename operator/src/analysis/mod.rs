//! Canary analysis from the serving pods' own Prometheus metrics.
//!
//! Each measurement covers one window: the interval since the previous measurement. The
//! serving pods' counters and histogram buckets are cumulative, so the scraper remembers each
//! pod's last sample and judges the difference; a pod whose counters went down restarted, and
//! its window starts at zero. Candidate pods are created for the rollout, so a candidate pod
//! without an earlier sample is measured since it started. With relative thresholds the
//! stable pods are measured on the same window, to compare the two versions on the same
//! traffic.
//!
//! - [`scrape`]: the one part that does I/O: fetch every pod's `/metrics`, keep the last
//!   samples;
//! - [`measure`]: pure: one window of a pod, and the pods' windows combined into one
//!   [`Measurement`];
//! - [`judge()`]: pure: a measurement against the thresholds of `spec.strategy.analysis`;
//! - [`prometheus`]: the other source: PromQL over the window, for clusters whose Prometheus
//!   already scrapes the serving pods.
//!
//! The planner only ever sees a [`Measurement`] and calls [`judge()`]; this module knows
//! nothing of the planner.

pub mod judge;
pub mod measure;
pub mod prometheus;
pub mod scrape;

pub use judge::{Verdict, judge};

/// One analysis window of a version, taken by the controller before planning.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Measurement {
    pub requests: i64,
    pub error_rate: Option<f64>,
    pub latency_p95_seconds: Option<f64>,
    pub latency_p99_seconds: Option<f64>,
    pub drift_score: Option<f64>,
    /// The lowest accuracy any pod reports; absent without feedback.
    pub accuracy: Option<f64>,
    /// Pods that could not be scraped.
    pub unreachable_pods: usize,
    /// Why the source could not measure at all (Prometheus unreachable or refusing a query).
    pub unavailable: Option<String>,
    /// The stable version on the same window, for relative thresholds.
    pub stable: Comparison,
}

/// What the stable version looked like on the candidate's window.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Comparison {
    /// Not measured: no relative thresholds, or no stable track serving traffic.
    #[default]
    NotMeasured,
    /// No stable pod had an earlier sample (the operator just started leading): this window
    /// only recorded where stable's counters stand.
    BaselineTaken,
    /// Stable's own window.
    Stable(Box<Measurement>),
}
