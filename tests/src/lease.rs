//! Leader election as the API server saw it: a watch on the leader Lease for the whole test,
//! the tenures it shows, and the check that every write of an operator fell inside one of its
//! own tenures, so two instances never wrote in the same instant.

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

/// One state of the Lease, as a watch delivered it.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseState {
    /// When the test saw it.
    pub seen: Timestamp,
    pub holder: Option<String>,
    pub acquired: Option<Timestamp>,
    pub renewed: Option<Timestamp>,
    pub duration_seconds: Option<i32>,
}

/// One holder's time with the lease: from its `acquireTime` until another holder's
/// acquisition or a release was seen (`None`: still holding at the end).
#[derive(Clone, Debug, PartialEq)]
pub struct Tenure {
    pub holder: String,
    pub from: Timestamp,
    pub last_renewal: Timestamp,
    pub until: Option<Timestamp>,
}

/// Records every state of one Lease from now on.
pub struct LeaseRecorder {
    states: Arc<Mutex<Vec<LeaseState>>>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaseRecorder {
    pub fn start(client: &Client, namespace: &str, name: &str) -> LeaseRecorder {
        let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let states = Arc::new(Mutex::new(Vec::new()));
        let sink = states.clone();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher(api, config).applied_objects());
            while let Some(event) = stream.next().await {
                let Ok(lease) = event else { continue };
                let spec = lease.spec.unwrap_or_default();
                let state = LeaseState {
                    seen: Timestamp::now(),
                    holder: spec.holder_identity.filter(|h| !h.is_empty()),
                    acquired: spec.acquire_time.map(|t| t.0),
                    renewed: spec.renew_time.map(|t| t.0),
                    duration_seconds: spec.lease_duration_seconds,
                };
                sink.lock().expect("lock").push(state);
            }
        });
        LeaseRecorder { states, task }
    }

    pub fn states(&self) -> Vec<LeaseState> {
        self.states.lock().expect("lock").clone()
    }

    pub fn tenures(&self) -> Vec<Tenure> {
        tenures(&self.states())
    }
}

impl Drop for LeaseRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The tenures a sequence of Lease states shows, oldest first.
pub fn tenures(states: &[LeaseState]) -> Vec<Tenure> {
    let mut out: Vec<Tenure> = Vec::new();
    for state in states {
        let current = out.last_mut().filter(|t| t.until.is_none());
        match (&state.holder, current) {
            (Some(holder), Some(tenure))
                if *holder == tenure.holder && state.acquired == Some(tenure.from) =>
            {
                if let Some(renewed) = state.renewed {
                    tenure.last_renewal = tenure.last_renewal.max(renewed);
                }
            }
            (holder, current) => {
                if let Some(tenure) = current {
                    // Ended by the next acquisition, or by a release seen now.
                    tenure.until =
                        Some(state.acquired.filter(|_| holder.is_some()).unwrap_or(state.seen));
                }
                if let Some(holder) = holder {
                    let from = state.acquired.unwrap_or(state.seen);
                    out.push(Tenure {
                        holder: holder.clone(),
                        from,
                        last_renewal: state.renewed.unwrap_or(from),
                        until: None,
                    });
                }
            }
        }
    }
    out
}

/// Every write (writer, when the API server received it) that fell outside its writer's own
/// tenures, described; empty means at most one instance wrote at any instant.
pub fn writes_outside_tenures(writes: &[(String, Timestamp)], tenures: &[Tenure]) -> Vec<String> {
    writes
        .iter()
        .filter(|(writer, at)| {
            !tenures.iter().any(|t| {
                t.holder == *writer && t.from <= *at && t.until.is_none_or(|until| *at < until)
            })
        })
        .map(|(writer, at)| {
            format!("{writer} wrote at {at}, outside its tenures; tenures: {tenures:?}")
        })
        .collect()
}

/// The writers in order of their writes, each run of one writer's writes folded: an instance
/// that lost the lease and wrote again would appear twice.
pub fn writer_runs(writes: &[(String, Timestamp)]) -> Vec<String> {
    let mut runs: Vec<String> = Vec::new();
    for (writer, _) in writes {
        if runs.last() != Some(writer) {
            runs.push(writer.clone());
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn state(
        seen: i64,
        holder: Option<&str>,
        acquired: Option<i64>,
        renewed: Option<i64>,
    ) -> LeaseState {
        LeaseState {
            seen: at(seen),
            holder: holder.map(str::to_string),
            acquired: acquired.map(at),
            renewed: renewed.map(at),
            duration_seconds: Some(6),
        }
    }

    #[test]
    fn tenures_follow_acquisitions_renewals_and_releases() {
        let states = [
            state(0, Some("a"), Some(0), Some(0)),
            state(2, Some("a"), Some(0), Some(2)),
            state(4, Some("a"), Some(0), Some(4)),
            state(5, None, None, None),
            state(6, Some("b"), Some(6), Some(6)),
            state(20, Some("c"), Some(19), Some(19)),
        ];
        let t = tenures(&states);
        assert_eq!(t.len(), 3);
        assert_eq!((t[0].holder.as_str(), t[0].from, t[0].last_renewal), ("a", at(0), at(4)));
        assert_eq!(t[0].until, Some(at(5)), "released");
        assert_eq!(t[1].until, Some(at(19)), "taken over at c's acquisition");
        assert_eq!(t[2].until, None);
    }

    #[test]
    fn a_write_outside_its_tenure_is_found() {
        let t = tenures(&[
            state(0, Some("a"), Some(0), Some(0)),
            state(10, Some("b"), Some(10), Some(10)),
        ]);
        let fine = [("a".to_string(), at(5)), ("b".to_string(), at(11))];
        assert!(writes_outside_tenures(&fine, &t).is_empty());
        let late = [("a".to_string(), at(10))];
        assert_eq!(writes_outside_tenures(&late, &t).len(), 1);
        let early = [("b".to_string(), at(9))];
        assert_eq!(writes_outside_tenures(&early, &t).len(), 1);
        assert_eq!(
            writer_runs(&[
                ("a".into(), at(1)),
                ("a".into(), at(2)),
                ("b".into(), at(3)),
                ("a".into(), at(4))
            ]),
            ["a", "b", "a"]
        );
    }
}
