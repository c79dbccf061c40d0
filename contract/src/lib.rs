//! The contract between the serving binary and the operator.
//!
//! The operator configures serving pods through their environment ([`mod@env`]), probes them on
//! their [`routes`] and judges candidates from the metrics they expose ([`metrics`]). Both
//! programs take these names from here, and serving's tests read its own `/metrics` back through
//! [`exposition::parse_sample`], the operator's reader, so renaming a metric, a label or a
//! status value on one side fails a test instead of silently blinding canary analysis.
//!
//! No dependencies: the serving binary stays small.

pub mod env;
pub mod exposition;
pub mod metrics;
pub mod routes;
