//! Readiness probes of process containers.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use k8s_openapi::api::core::v1::Probe;
use tokio::net::TcpStream;

use super::http::HttpClient;

/// Probes run at most this far apart, whatever `periodSeconds` says, to keep tests fast.
pub const MAX_PERIOD: Duration = Duration::from_secs(1);
/// Until the first success after a start, probe this often so a pod turns Ready soon after its
/// server does rather than up to a period later.
pub const STARTUP_PERIOD: Duration = Duration::from_millis(100);

/// What to check and how often. Only the path of `httpGet` is used: the process always listens
/// on the loopback port localnode gave it, whatever port the probe names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    /// `None`: a TCP connect check (tcpSocket, and exec or grpc probes, which cannot run here).
    pub path: Option<String>,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl ProbeSpec {
    /// Reads a Kubernetes probe, with the API's defaults and the period capped at [`MAX_PERIOD`].
    pub fn from_probe(probe: &Probe) -> ProbeSpec {
        let seconds = |v: Option<i32>, default: i32| {
            Duration::from_secs(u64::try_from(v.unwrap_or(default)).unwrap_or(0))
        };
        let count = |v: Option<i32>, default: i32| u32::try_from(v.unwrap_or(default).max(1));
        let path = probe.http_get.as_ref().map(|get| {
            let path = get.path.clone().unwrap_or_default();
            if path.starts_with('/') { path } else { format!("/{path}") }
        });
        ProbeSpec {
            path,
            initial_delay: seconds(probe.initial_delay_seconds, 0),
            period: seconds(probe.period_seconds, 10).clamp(Duration::from_millis(100), MAX_PERIOD),
            timeout: seconds(probe.timeout_seconds, 1)
                .clamp(Duration::from_millis(100), MAX_PERIOD),
            success_threshold: count(probe.success_threshold, 1).unwrap_or(1),
            failure_threshold: count(probe.failure_threshold, 3).unwrap_or(3),
        }
    }
}

/// The readiness verdict from consecutive probe results, as the kubelet keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeState {
    pub ready: bool,
    successes: u32,
    failures: u32,
    succeeded_since_start: bool,
}

impl ProbeState {
    /// A freshly started container: not ready until its probe passes.
    pub fn started() -> ProbeState {
        ProbeState { ready: false, successes: 0, failures: 0, succeeded_since_start: false }
    }

    /// Records one result; returns whether `ready` changed.
    pub fn observe(&mut self, ok: bool, spec: &ProbeSpec) -> bool {
        let was = self.ready;
        if ok {
            self.succeeded_since_start = true;
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if self.successes >= spec.success_threshold {
                self.ready = true;
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            // Before the first success the container is not ready anyway; after it, the
            // threshold decides.
            if self.failures >= spec.failure_threshold {
                self.ready = false;
            }
        }
        was != self.ready
    }

    /// How long until the next probe.
    pub fn next_interval(&self, spec: &ProbeSpec) -> Duration {
        if self.succeeded_since_start { spec.period } else { STARTUP_PERIOD.min(spec.period) }
    }
}

/// Runs one probe against `addr`: an HTTP GET answered with 200-399, or a TCP connect.
pub async fn probe_once(client: &HttpClient, addr: SocketAddr, spec: &ProbeSpec) -> bool {
    let attempt = async {
        match &spec.path {
            Some(path) => {
                let Ok(request) = Request::get(format!("http://{addr}{path}"))
                    .header("user-agent", "localnode-probe")
                    .body(Body::empty())
                else {
                    return false;
                };
                match client.request(request).await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        (200..400).contains(&status)
                    }
                    Err(_) => false,
                }
            }
            None => TcpStream::connect(addr).await.is_ok(),
        }
    };
    tokio::time::timeout(spec.timeout, attempt).await.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> ProbeSpec {
        ProbeSpec::from_probe(&serde_json::from_value(value).unwrap())
    }

    #[test]
    fn defaults_and_caps() {
        let s = spec(json!({"httpGet": {"path": "ready", "port": 8080}}));
        assert_eq!(s.path.as_deref(), Some("/ready"));
        assert_eq!(s.period, MAX_PERIOD);
        assert_eq!(s.initial_delay, Duration::ZERO);
        assert_eq!((s.success_threshold, s.failure_threshold), (1, 3));
        let s =
            spec(json!({"tcpSocket": {"port": 1}, "periodSeconds": 5, "initialDelaySeconds": 2,
                            "failureThreshold": 1, "timeoutSeconds": 9}));
        assert_eq!(s.path, None);
        assert_eq!(s.period, MAX_PERIOD);
        assert_eq!(s.timeout, MAX_PERIOD);
        assert_eq!(s.initial_delay, Duration::from_secs(2));
        assert_eq!(s.failure_threshold, 1);
    }

    #[test]
    fn thresholds_decide_transitions() {
        let s = spec(json!({"httpGet": {"path": "/r", "port": 1}, "successThreshold": 2,
                            "failureThreshold": 2}));
        let mut state = ProbeState::started();
        assert_eq!(state.next_interval(&s), STARTUP_PERIOD);
        assert!(!state.observe(true, &s));
        assert_eq!(state.next_interval(&s), s.period);
        assert!(state.observe(true, &s));
        assert!(state.ready);
        assert!(!state.observe(false, &s));
        assert!(!state.observe(true, &s), "a success resets the failure count");
        assert!(!state.observe(false, &s));
        assert!(state.observe(false, &s));
        assert!(!state.ready);
    }
}
