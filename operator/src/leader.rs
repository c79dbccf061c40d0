//! Leader election on a Lease with `kube-lease-manager`, plus a watchdog that fences the
//! leader: when this instance cannot confirm its own lease renewal in time (for example
//! because it is cut off from the API server), leadership counts as lost before another
//! instance could take the lease, and the process stops writing and exits.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::{Api, Client};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::error::{Error, Result};

#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub duration_seconds: u64,
    pub grace_seconds: u64,
}

/// Held while this instance leads. `lost` is cancelled when leadership ends.
pub struct Leadership {
    pub lost: CancellationToken,
    state: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
    manager: tokio::task::JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
}

impl Leadership {
    /// Give the lease up (on a clean shutdown) so the standby takes over at once: with every
    /// receiver of its state gone, the lease manager clears the holder and stops; this waits
    /// for that (a few seconds at most) so the process does not exit before.
    pub async fn release(self) {
        drop(self.state);
        self.task.abort();
        let _ = self.task.await;
        match tokio::time::timeout(Duration::from_secs(5), self.manager).await {
            Ok(Ok(Ok(_))) => info!("released the lease"),
            Ok(Ok(Err(err))) => warn!(error = %err, "could not release the lease"),
            Ok(Err(err)) => warn!(error = %err, "the lease manager ended abnormally"),
            Err(_) => warn!("releasing the lease timed out"),
        }
    }
}

/// How waiting for leadership ended.
enum Wait {
    Leader,
    /// The holder released the lease; the manager sleeps until the lease's expiry, so a new
    /// one is started to take the lease at once.
    Released,
    Shutdown,
}

/// How often a standby reads the Lease to notice a release (the lease manager itself only
/// looks again when the holder's lease would expire).
const STANDBY_POLL: Duration = Duration::from_millis(400);

/// Wait until this instance holds the lease, or until `shutdown` is cancelled (`Ok(None)`).
pub async fn acquire(
    client: Client,
    settings: LeaseSettings,
    shutdown: CancellationToken,
) -> Result<Option<Leadership>> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &settings.namespace);
    info!(lease = %settings.name, namespace = %settings.namespace, identity = %settings.identity, "waiting for leadership");
    let (state, handle) = loop {
        let manager = LeaseManagerBuilder::new(client.clone(), &settings.name)
            .with_namespace(&settings.namespace)
            .with_identity(&settings.identity)
            .with_duration(settings.duration_seconds)
            .with_grace(settings.grace_seconds)
            .build()
            .await
            .map_err(|e| Error::Lease(e.to_string()))?;
        let (mut state, handle) = manager.watch().await;
        match wait_for_lead(&mut state, &leases, &settings, &shutdown).await {
            Ok(Wait::Leader) => break (state, handle),
            Ok(Wait::Released) => {
                info!("the lease was released; trying to take it now");
                handle.abort();
            }
            Ok(Wait::Shutdown) => {
                handle.abort();
                return Ok(None);
            }
            Err(err) => {
                handle.abort();
                return Err(err);
            }
        }
    };
    info!(identity = %settings.identity, "became the leader");
    let lost = CancellationToken::new();
    let mut follower = state.clone();
    let on_change = lost.clone();
    let watchdog_lost = lost.clone();
    let task = tokio::spawn(async move {
        tokio::select! {
            () = async {
                loop {
                    if follower.changed().await.is_err() || !*follower.borrow_and_update() {
                        warn!("the lease manager reports the lease lost");
                        return;
                    }
                }
            } => on_change.cancel(),
            () = watchdog(leases, settings) => watchdog_lost.cancel(),
        }
    });
    Ok(Some(Leadership { lost, state, task, manager: handle }))
}

/// Waits on the lease manager's state, and reads the Lease every [`STANDBY_POLL`] to notice
/// a holder that released it.
async fn wait_for_lead(
    state: &mut watch::Receiver<bool>,
    leases: &Api<Lease>,
    settings: &LeaseSettings,
    shutdown: &CancellationToken,
) -> Result<Wait> {
    let mut held_by_another = false;
    let mut poll = tokio::time::interval(STANDBY_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if *state.borrow_and_update() {
            return Ok(Wait::Leader);
        }
        tokio::select! {
            changed = state.changed() => {
                if changed.is_err() {
                    return Err(Error::Lease("the lease manager stopped".into()));
                }
            }
            () = shutdown.cancelled() => return Ok(Wait::Shutdown),
            _ = poll.tick() => {
                let Ok(Ok(Some(lease))) =
                    tokio::time::timeout(Duration::from_secs(2), leases.get_opt(&settings.name)).await
                else {
                    continue;
                };
                let holder = lease.spec.and_then(|s| s.holder_identity).filter(|h| !h.is_empty());
                match holder {
                    Some(holder) if holder != settings.identity => held_by_another = true,
                    None if held_by_another => return Ok(Wait::Released),
                    _ => {}
                }
            }
        }
    }
}

/// Returns when this instance can no longer prove that it holds the lease.
async fn watchdog(leases: Api<Lease>, settings: LeaseSettings) {
    let duration = SignedDuration::from_secs(settings.duration_seconds as i64);
    let grace = SignedDuration::from_secs(settings.grace_seconds as i64);
    let mut last_renewal = Timestamp::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = Timestamp::now();
        match tokio::time::timeout(Duration::from_secs(2), leases.get(&settings.name)).await {
            Ok(Ok(lease)) => {
                let spec = lease.spec.unwrap_or_default();
                if spec.holder_identity.as_deref() != Some(settings.identity.as_str()) {
                    error!(holder = ?spec.holder_identity, "another instance holds the lease");
                    return;
                }
                if let Some(renewed) = spec.renew_time {
                    last_renewal = last_renewal.max(renewed.0);
                }
            }
            Ok(Err(err)) => warn!(error = %err, "cannot read the lease"),
            Err(_) => warn!("reading the lease timed out"),
        }
        if let Some(reason) = fenced(last_renewal, now, duration, grace) {
            error!(%reason, "giving up leadership");
            return;
        }
    }
}

/// Leadership must end before another instance may take the lease: by the last renewal plus
/// the lease duration, minus half the grace period as a margin for clock skew.
pub fn fenced(
    last_renewal: Timestamp,
    now: Timestamp,
    duration: SignedDuration,
    grace: SignedDuration,
) -> Option<String> {
    let deadline = last_renewal + duration - grace / 2;
    (now >= deadline).then(|| format!("no lease renewal confirmed since {last_renewal}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fencing_deadline() {
        let renewed: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let duration = SignedDuration::from_secs(15);
        let grace = SignedDuration::from_secs(4);
        let at = |s: i64| renewed + SignedDuration::from_secs(s);
        assert!(fenced(renewed, at(12), duration, grace).is_none());
        assert!(fenced(renewed, at(13), duration, grace).is_some());
    }
}
