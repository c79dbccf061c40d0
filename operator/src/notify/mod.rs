//! Webhook notifications of rollout events.
//!
//! Deciding is pure and lives here: which notifications a reconcile produced ([`due`]), their
//! ids ([`claim`]), the JSON body ([`payload`]) and its signature ([`hmac_sha256`]). Sending
//! is I/O and lives in [`send`].
//!
//! An event is sent at most once: the report step writes the claimed id into
//! `status.lastNotification` before anything is sent, and events are planned from the stored
//! status, so a retried reconcile or a restarted operator never produces the same event
//! again. A notification whose sending was cut short (a crash, a lost leadership) is lost,
//! never repeated. Only the leader reconciles, so only the leader sends.

pub mod send;

use k8s_openapi::jiff::Timestamp;
use modelship_crds::{
    ModelDeployment, ModelDeploymentStatus, NotificationEvent, NotificationRecord, Phase,
};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::plan::PlannedEvent;
use crate::plan::state::format_time;
use crate::vocabulary::{ConditionType, Reason, condition_status};

/// Header carrying the HMAC-SHA256 of the body, as `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-modelship-signature";
/// Header carrying the event type.
pub const EVENT_HEADER: &str = "x-modelship-event";

/// An event the webhook wants, before it gets an id.
#[derive(Clone, Debug, PartialEq)]
pub struct Due {
    pub event: NotificationEvent,
    pub reason: Reason,
    pub message: String,
}

/// A notification with its id, ready to send.
#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    pub id: i64,
    pub event: NotificationEvent,
    pub body: String,
}

/// Degraded reasons that are notified as `Degraded`; a rollback has its own events.
const DEGRADED: [Reason; 3] =
    [Reason::ProgressDeadlineExceeded, Reason::ModelSourceMismatch, Reason::ApplyFailed];

/// The notifications this reconcile produced, in order: from the plan's events (a rollout
/// started, was promoted, rolled back, aborted, failed its analysis) and from the status
/// moving into Paused or into a Degraded condition that no rollback explains. Only the
/// events the webhook chose; none without a webhook.
pub fn due(
    md: &ModelDeployment,
    previous: &ModelDeploymentStatus,
    next: &ModelDeploymentStatus,
    events: &[PlannedEvent],
) -> Vec<Due> {
    let Some(webhook) = md.spec.notifications.as_ref().map(|n| &n.webhook) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for planned in events {
        let event = match planned.reason {
            Reason::RolloutStarted => NotificationEvent::Started,
            Reason::Promoted => NotificationEvent::Promoted,
            Reason::RolledBack | Reason::ProgressDeadlineAborted => NotificationEvent::RolledBack,
            Reason::AnalysisFailed => NotificationEvent::AnalysisFailed,
            _ => continue,
        };
        out.push(Due { event, reason: planned.reason, message: planned.note.clone() });
    }
    if next.phase == Some(Phase::Paused) && previous.phase != Some(Phase::Paused) {
        let (reason, message) = condition(next, ConditionType::Paused)
            .map_or((Reason::NotPaused, String::new()), |(r, m)| (r, m.to_string()));
        out.push(Due { event: NotificationEvent::Paused, reason, message });
    }
    if let Some((reason, message)) = condition(next, ConditionType::Degraded)
        && DEGRADED.contains(&reason)
        && condition(previous, ConditionType::Degraded).map(|(r, _)| r) != Some(reason)
    {
        let message = message.to_string();
        out.push(Due { event: NotificationEvent::Degraded, reason, message });
    }
    out.retain(|d| webhook.wants(d.event));
    out
}

/// A condition that holds: its reason and message.
fn condition(status: &ModelDeploymentStatus, type_: ConditionType) -> Option<(Reason, &str)> {
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == type_.as_str() && c.status == condition_status(true))?;
    Some((Reason::parse(&condition.reason)?, condition.message.as_str()))
}

/// Give each due notification the next id after the last claimed one, and build its body.
/// Returns them with the record to store in `status.lastNotification`.
pub fn claim(
    md: &ModelDeployment,
    next: &ModelDeploymentStatus,
    due: Vec<Due>,
    now: Timestamp,
) -> (Vec<Notification>, Option<NotificationRecord>) {
    let mut last = next.last_notification.clone();
    let mut out = Vec::with_capacity(due.len());
    for d in due {
        let id = last.as_ref().map_or(1, |l| l.id + 1);
        let body = payload(md, next, id, &d, now);
        last = Some(NotificationRecord { id, event: d.event, at: format_time(now) });
        out.push(Notification { id, event: d.event, body });
    }
    (out, last)
}

/// The JSON body: which model, which event, the versions, the phase, why, and when.
pub fn payload(
    md: &ModelDeployment,
    status: &ModelDeploymentStatus,
    id: i64,
    due: &Due,
    now: Timestamp,
) -> String {
    let phase = status.phase.map(|p| format!("{p:?}"));
    json!({
        "id": id,
        "event": due.event.as_str(),
        "model": md.metadata.name,
        "namespace": md.metadata.namespace,
        "uid": md.metadata.uid,
        "version": md.spec.model.version,
        "stableVersion": status.stable_version,
        "candidateVersion": status.candidate_version,
        "phase": phase,
        "reason": due.reason.as_str(),
        "message": due.message,
        "time": format_time(now),
    })
    .to_string()
}

/// HMAC-SHA256 (RFC 2104) of `message` under `key`, as lowercase hex.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> String {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    let outer = Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
