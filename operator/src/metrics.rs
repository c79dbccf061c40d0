//! Operator metrics on an explicit registry, so tests can read them.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabels {
    pub category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// sent, failed or dropped
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// deployment, service, hpa, status
    pub kind: &'static str,
    /// apply or delete
    pub verb: &'static str,
}

pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Counter,
    pub reconcile_errors: Family<CategoryLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub writes: Family<WriteLabels, Counter>,
    pub invalid_objects: Counter,
    pub notifications: Family<OutcomeLabels, Counter>,
    pub leader: Gauge,
    /// Unix seconds since watches have been failing without a success in between; 0 when
    /// they are healthy.
    pub watch_failing_since: AtomicI64,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("modelship_operator");
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconciliations run", reconciles.clone());
        let reconcile_errors = Family::<CategoryLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciliations that failed, by error category",
            reconcile_errors.clone(),
        );
        let reconcile_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "reconcile_duration_seconds",
            "Time to reconcile one ModelDeployment",
            reconcile_duration.clone(),
        );
        let writes = Family::<WriteLabels, Counter>::default();
        registry.register("writes", "Writes sent to the API server", writes.clone());
        let invalid_objects = Counter::default();
        registry.register(
            "invalid_objects",
            "ModelDeployments skipped because they could not be decoded",
            invalid_objects.clone(),
        );
        let notifications = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "notifications",
            "Webhook notifications, by outcome: sent, failed (after every retry, or refused) or dropped (too many in flight)",
            notifications.clone(),
        );
        let leader = Gauge::default();
        registry.register("leader", "1 while this instance holds the leader lease", leader.clone());
        Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            writes,
            invalid_objects,
            notifications,
            leader,
            watch_failing_since: AtomicI64::new(0),
        }
    }
}

impl Metrics {
    pub fn count_write(&self, kind: &'static str, verb: &'static str) {
        self.writes.get_or_create(&WriteLabels { kind, verb }).inc();
    }

    pub fn count_notification(&self, outcome: &'static str) {
        self.notifications.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Start timing a reconcile; the guard records the duration when dropped.
    pub fn time_reconcile(&self) -> ReconcileTimer<'_> {
        self.reconciles.inc();
        ReconcileTimer { histogram: &self.reconcile_duration, started: Instant::now() }
    }

    pub fn watch_ok(&self) {
        self.watch_failing_since.store(0, Ordering::Relaxed);
    }

    pub fn watch_failed(&self, now_unix: i64) {
        let _ = self.watch_failing_since.compare_exchange(
            0,
            now_unix,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Liveness: watches have not been failing continuously for longer than `window` seconds.
    pub fn watches_healthy(&self, now_unix: i64, window: i64) -> bool {
        let since = self.watch_failing_since.load(Ordering::Relaxed);
        since == 0 || now_unix - since <= window
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

pub struct ReconcileTimer<'a> {
    histogram: &'a Histogram,
    started: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_fails_only_after_the_window() {
        let metrics = Metrics::default();
        assert!(metrics.watches_healthy(1000, 300));
        metrics.watch_failed(1000);
        metrics.watch_failed(1100); // the first failure time is kept
        assert!(metrics.watches_healthy(1300, 300));
        assert!(!metrics.watches_healthy(1301, 300));
        metrics.watch_ok();
        assert!(metrics.watches_healthy(5000, 300));
    }

    #[test]
    fn exposes_the_families() {
        let metrics = Metrics::default();
        metrics.count_write("deployment", "apply");
        metrics.reconcile_errors.get_or_create(&CategoryLabels { category: "conflict" }).inc();
        drop(metrics.time_reconcile());
        let text = metrics.encode();
        for family in [
            "modelship_operator_reconciles_total 1",
            "modelship_operator_writes_total{kind=\"deployment\",verb=\"apply\"} 1",
            "modelship_operator_reconcile_errors_total{category=\"conflict\"} 1",
            "modelship_operator_reconcile_duration_seconds_count 1",
            "modelship_operator_leader 0",
        ] {
            assert!(text.contains(family), "missing {family} in\n{text}");
        }
    }
}
