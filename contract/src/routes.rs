//! The serving routes the operator's pods and probes rely on.

/// Liveness: the process answers.
pub const HEALTH: &str = "/health";
/// Readiness: every model loaded and answered a warm-up inference.
pub const READY: &str = "/ready";
/// The Prometheus exposition analysis scrapes.
pub const METRICS: &str = "/metrics";
