//! The API server's own counters, read from its /metrics before and after a phase: which
//! requests (verb, resource) it served and which watch events it sent, so a phase's cost on
//! the API server can be told apart request by request.

use std::collections::BTreeMap;

use kube::Client;
use serde::{Deserialize, Serialize};

use crate::Res;
use crate::procs::round;

/// Counters at one moment, by series key.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Counters {
    /// "VERB resource[/subresource]" -> requests.
    requests: BTreeMap<String, f64>,
    /// The same keys -> seconds spent serving them (summed latencies).
    seconds: BTreeMap<String, f64>,
    /// Watched kind -> events sent to watchers.
    watch_events: BTreeMap<String, f64>,
    /// Watched kind -> bytes of those events.
    watch_bytes: BTreeMap<String, f64>,
}

/// What a phase cost the API server: the difference of two [`Counters`].
#[derive(Serialize, Deserialize, Debug, Default, Clone)]
pub struct ApiCost {
    pub requests: f64,
    /// The busiest request kinds: (requests, summed seconds), most requests first.
    pub requests_by_kind: Vec<(String, f64, f64)>,
    pub watch_events: f64,
    pub watch_mib: f64,
    /// Watch events by kind: (events, MiB), most events first.
    pub watch_events_by_kind: Vec<(String, f64, f64)>,
}

/// Request kinds and watched kinds listed in an [`ApiCost`].
const LISTED: usize = 12;

/// Seconds of the API server's CPU profile taken from the start of each timed phase: the same
/// window in both, shorter than either phase at the default size.
pub const PROFILE_SECONDS: u64 = 30;

/// Start a CPU profile of the API server (Go's pprof, served on /debug/pprof/profile) over
/// the next [`PROFILE_SECONDS`]; the task writes it to `path` when it is done.
pub fn profile(client: &Client, path: std::path::PathBuf) -> tokio::task::JoinHandle<Res<()>> {
    let client = client.clone();
    tokio::spawn(async move {
        use http_body_util::BodyExt;
        let uri = format!("/debug/pprof/profile?seconds={PROFILE_SECONDS}");
        let request = hyper::http::Request::get(uri).body(kube::client::Body::empty())?;
        let response = client.send(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(format!("API server profile: {status} {}", text.trim()).into());
        }
        std::fs::write(path, body)?;
        Ok(())
    })
}

pub async fn counters(client: &Client) -> Res<Counters> {
    let request = hyper::http::Request::get("/metrics").body(Vec::new())?;
    Ok(parse(&client.request_text(request).await?))
}

fn parse(page: &str) -> Counters {
    let mut out = Counters::default();
    for line in page.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let Some((name, labels)) = series.split_once('{') else { continue };
        let label = |key: &str| {
            labels.trim_end_matches('}').split(',').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                (k == key).then(|| v.trim_matches('"').to_string())
            })
        };
        let request_key = || {
            let verb = label("verb").unwrap_or_default();
            let resource = label("resource").unwrap_or_default();
            match label("subresource").unwrap_or_default() {
                sub if sub.is_empty() => format!("{verb} {resource}"),
                sub => format!("{verb} {resource}/{sub}"),
            }
        };
        let watched = || label("kind").or_else(|| label("resource")).unwrap_or_default();
        let map = match name {
            "apiserver_request_total" => (&mut out.requests, request_key()),
            "apiserver_request_duration_seconds_sum" => (&mut out.seconds, request_key()),
            "apiserver_watch_events_total" => (&mut out.watch_events, watched()),
            "apiserver_watch_events_sizes_sum" => (&mut out.watch_bytes, watched()),
            _ => continue,
        };
        *map.0.entry(map.1).or_default() += value;
    }
    out
}

/// The difference `after - before`, the busiest kinds first.
pub fn cost(before: &Counters, after: &Counters) -> ApiCost {
    fn delta(
        before: &BTreeMap<String, f64>,
        after: &BTreeMap<String, f64>,
    ) -> BTreeMap<String, f64> {
        after
            .iter()
            .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
            .filter(|(_, v)| *v > 0.0)
            .collect()
    }
    fn busiest(
        counts: &BTreeMap<String, f64>,
        other: &BTreeMap<String, f64>,
        scale: f64,
    ) -> Vec<(String, f64, f64)> {
        let mut rows: Vec<_> = counts
            .iter()
            .map(|(k, v)| (k.clone(), *v, round(other.get(k).copied().unwrap_or(0.0) * scale, 2)))
            .collect();
        rows.sort_by(|a, b| b.1.total_cmp(&a.1));
        rows.truncate(LISTED);
        rows
    }
    let requests = delta(&before.requests, &after.requests);
    let seconds = delta(&before.seconds, &after.seconds);
    let events = delta(&before.watch_events, &after.watch_events);
    let bytes = delta(&before.watch_bytes, &after.watch_bytes);
    let mib = 1.0 / (1024.0 * 1024.0);
    ApiCost {
        requests: requests.values().sum(),
        requests_by_kind: busiest(&requests, &seconds, 1.0),
        watch_events: events.values().sum(),
        watch_mib: round(bytes.values().sum::<f64>() * mib, 1),
        watch_events_by_kind: busiest(&events, &bytes, mib),
    }
}

/// One line: the request kinds, then the watch events, busiest first.
pub fn describe(cost: &ApiCost) -> String {
    let requests: Vec<String> = cost
        .requests_by_kind
        .iter()
        .map(|(kind, n, seconds)| format!("{kind} {n:.0} ({seconds:.1} s)"))
        .collect();
    let events: Vec<String> = cost
        .watch_events_by_kind
        .iter()
        .map(|(kind, n, mib)| format!("{kind} {n:.0} ({mib:.1} MiB)"))
        .collect();
    format!(
        "{:.0} requests: {}; {:.0} watch events sent ({:.1} MiB): {}",
        cost.requests,
        requests.join(", "),
        cost.watch_events,
        cost.watch_mib,
        events.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_cost_is_the_difference_by_request_and_watched_kind() {
        let before = parse(
            "# HELP x\n\
             apiserver_request_total{code=\"201\",resource=\"deployments\",subresource=\"\",verb=\"PATCH\"} 10\n\
             apiserver_watch_events_total{group=\"apps\",kind=\"Deployment\",version=\"v1\"} 100\n",
        );
        let after = parse(
            "apiserver_request_total{code=\"201\",resource=\"deployments\",subresource=\"\",verb=\"PATCH\"} 30\n\
             apiserver_request_total{code=\"200\",resource=\"deployments\",subresource=\"\",verb=\"PATCH\"} 5\n\
             apiserver_request_total{code=\"200\",resource=\"modeldeployments\",subresource=\"status\",verb=\"PATCH\"} 40\n\
             apiserver_request_duration_seconds_sum{resource=\"modeldeployments\",subresource=\"status\",verb=\"PATCH\"} 2.5\n\
             apiserver_watch_events_total{group=\"apps\",kind=\"Deployment\",version=\"v1\"} 400\n\
             apiserver_watch_events_sizes_sum{group=\"apps\",kind=\"Deployment\",version=\"v1\"} 1048576\n",
        );
        let cost = cost(&before, &after);
        assert_eq!(cost.requests, 65.0);
        assert_eq!(cost.requests_by_kind[0], ("PATCH modeldeployments/status".into(), 40.0, 2.5));
        assert_eq!(cost.requests_by_kind[1], ("PATCH deployments".into(), 25.0, 0.0));
        assert_eq!(cost.watch_events, 300.0);
        assert_eq!(cost.watch_events_by_kind[0], ("Deployment".into(), 300.0, 1.0));
    }
}
