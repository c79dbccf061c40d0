//! Which notifications a reconcile produces, their ids and bodies, and the signature.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use modelship_crds::{NotificationsSpec, WebhookSpec};
use serde_json::Value;

use super::*;

fn model(events: Vec<NotificationEvent>) -> ModelDeployment {
    let mut md: ModelDeployment = serde_json::from_value(json!({
        "apiVersion": "modelship.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "fraud", "namespace": "ml", "uid": "u-1"},
        "spec": {"model": {"version": "2", "uri": "file:///m.onnx"}},
    }))
    .unwrap();
    md.spec.notifications =
        Some(NotificationsSpec { webhook: WebhookSpec { secret_name: "hook".into(), events } });
    md
}

fn status(phase: Phase, degraded: Option<Reason>) -> ModelDeploymentStatus {
    let at = |type_: ConditionType, reason: Reason, holds: bool| Condition {
        type_: type_.to_string(),
        status: condition_status(holds).into(),
        reason: reason.to_string(),
        message: format!("{reason} message"),
        observed_generation: Some(1),
        last_transition_time: Time(Timestamp::UNIX_EPOCH),
    };
    let mut conditions =
        vec![at(ConditionType::Paused, Reason::AwaitingApproval, phase == Phase::Paused)];
    conditions.push(match degraded {
        Some(reason) => at(ConditionType::Degraded, reason, true),
        None => at(ConditionType::Degraded, Reason::AsExpected, false),
    });
    ModelDeploymentStatus {
        phase: Some(phase),
        stable_version: Some("1".into()),
        candidate_version: Some("2".into()),
        conditions,
        ..ModelDeploymentStatus::default()
    }
}

fn planned(reason: Reason) -> PlannedEvent {
    PlannedEvent { reason, note: format!("{reason} note"), warning: false }
}

fn kinds(due: &[Due]) -> Vec<NotificationEvent> {
    due.iter().map(|d| d.event).collect()
}

/// A case: its name, the status before and after, the planned events, the notifications due.
type Case<'a> = (
    &'a str,
    &'a ModelDeploymentStatus,
    &'a ModelDeploymentStatus,
    Vec<Reason>,
    Vec<NotificationEvent>,
);

#[test]
fn due_table() {
    use NotificationEvent::*;
    let healthy = status(Phase::Healthy, None);
    let progressing = status(Phase::Progressing, None);
    let paused = status(Phase::Paused, None);
    let late = status(Phase::Degraded, Some(Reason::ProgressDeadlineExceeded));
    let aborted = status(Phase::RolledBack, Some(Reason::ProgressDeadlineAborted));
    let analysis_failed = status(Phase::RolledBack, Some(Reason::RolledBack));
    #[rustfmt::skip]
    let table: Vec<Case<'_>> = vec![
        ("a rollout starts", &healthy, &progressing, vec![Reason::RolloutStarted, Reason::WeightChanged], vec![Started]),
        ("it pauses", &progressing, &paused, vec![], vec![Paused]),
        ("still paused: nothing", &paused, &paused, vec![], vec![]),
        ("promoted", &paused, &healthy, vec![Reason::PromotionStarted, Reason::Promoted], vec![Promoted]),
        ("set back by the user", &paused, &healthy, vec![Reason::RolledBack], vec![RolledBack]),
        ("aborted at the deadline: one rollback, no Degraded", &progressing, &aborted,
            vec![Reason::ProgressDeadlineAborted], vec![RolledBack]),
        ("failed analysis", &progressing, &analysis_failed,
            vec![Reason::AnalysisMeasurementFailed, Reason::AnalysisFailed], vec![AnalysisFailed]),
        ("past the deadline without abort", &progressing, &late,
            vec![Reason::ProgressDeadlineExceeded], vec![Degraded]),
        ("still degraded: nothing", &late, &late, vec![], vec![]),
        ("superseded, started again", &paused, &progressing,
            vec![Reason::Superseded, Reason::RolloutStarted], vec![Started]),
    ];
    let md = model(vec![]);
    for (name, previous, next, events, expected) in table {
        let events: Vec<PlannedEvent> = events.into_iter().map(planned).collect();
        assert_eq!(kinds(&due(&md, previous, next, &events)), expected, "{name}");
    }
}

#[test]
fn only_the_chosen_events_and_none_without_a_webhook() {
    let events = [planned(Reason::RolloutStarted), planned(Reason::Promoted)];
    let (before, after) = (status(Phase::Healthy, None), status(Phase::Healthy, None));
    let chosen = model(vec![NotificationEvent::Promoted]);
    assert_eq!(kinds(&due(&chosen, &before, &after, &events)), [NotificationEvent::Promoted]);
    let mut none = model(vec![]);
    none.spec.notifications = None;
    assert!(due(&none, &before, &after, &events).is_empty());
}

#[test]
fn ids_follow_the_last_claimed_one_and_bodies_say_what_happened() {
    let md = model(vec![]);
    let mut next = status(Phase::Progressing, None);
    next.last_notification = Some(NotificationRecord {
        id: 4,
        event: NotificationEvent::Paused,
        at: "2026-01-01T00:00:00.000Z".into(),
    });
    let due = vec![
        Due { event: NotificationEvent::Promoted, reason: Reason::Promoted, message: "v2".into() },
        Due {
            event: NotificationEvent::Started,
            reason: Reason::RolloutStarted,
            message: "v3".into(),
        },
    ];
    let now: Timestamp = "2026-01-01T00:00:05Z".parse().unwrap();
    let (sent, last) = claim(&md, &next, due, now);
    assert_eq!(sent.iter().map(|n| n.id).collect::<Vec<_>>(), [5, 6]);
    let last = last.unwrap();
    assert_eq!((last.id, last.event), (6, NotificationEvent::Started));
    let body: Value = serde_json::from_str(&sent[0].body).unwrap();
    assert_eq!(body["id"], 5);
    assert_eq!(body["event"], "Promoted");
    assert_eq!(body["model"], "fraud");
    assert_eq!(body["namespace"], "ml");
    assert_eq!(body["version"], "2");
    assert_eq!(body["stableVersion"], "1");
    assert_eq!(body["candidateVersion"], "2");
    assert_eq!(body["phase"], "Progressing");
    assert_eq!(body["reason"], "Promoted");
    assert_eq!(body["message"], "v2");
    assert_eq!(body["time"], "2026-01-01T00:00:05.000Z");
    // Nothing due: the record stays.
    let (none, kept) = claim(&md, &next, Vec::new(), now);
    assert!(none.is_empty());
    assert_eq!(kept, next.last_notification);
}

#[test]
fn hmac_matches_rfc_4231() {
    // Test case 2 of RFC 4231.
    assert_eq!(
        hmac_sha256(b"Jefe", b"what do ya want for nothing?"),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    // Test case 6: a key longer than the block is hashed first.
    assert_eq!(
        hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First"),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
    );
}
