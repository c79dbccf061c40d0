//! Each canary decision by table: what the planner sees, and what it decides.
// Each table is a list of tuples, one row per case; naming every row type would hide them.
#![allow(clippy::type_complexity)]

use std::time::Duration;

use modelship_crds::{CanarySpec, RolloutOutcome};

use super::*;
use crate::plan::TrackState;
use crate::plan::tests::fixtures::*;

const TOTAL: i32 = 4;

/// A canary at `weight` rolling version 2 out over stable version 1.
fn manual(weight: Option<i32>) -> Case {
    Case::new(spec("2", TOTAL, canary(weight, None))).rolling_out_from("1")
}

fn steps() -> Vec<CanaryStep> {
    vec![set_weight(25), pause(Some(5)), set_weight(50), pause(None)]
}

fn stepped(current_step: Option<i32>, started_seconds_ago: i64) -> Case {
    let mut case = Case::new(spec("2", TOTAL, canary(None, Some(steps())))).rolling_out_from("1");
    case.status.current_step = current_step;
    case.status.step_started_at = Some(seconds_ago(started_seconds_ago));
    case
}

/// The target as (weight, pause reason); `None` for promotion.
fn aimed(target: &Target) -> Option<(i32, Option<Reason>)> {
    match target {
        Target::Weight { weight, pause } => Some((*weight, pause.as_ref().map(|(r, _)| *r))),
        Target::Promote => None,
    }
}

#[test]
fn target_table() {
    let legacy = {
        let mut case = manual(None);
        case.spec.strategy.canary = None;
        case
    };
    #[rustfmt::skip]
    let table: Vec<(&str, Case, Option<(i32, Option<Reason>)>, &str)> = vec![
        ("weight 100 promotes", manual(Some(100)), None, ""),
        ("the split is not there yet",
            manual(Some(25)).with(Track::Stable, settled("1", 4, 4)),
            Some((25, None)), ""),
        ("a candidate pod not ready yet",
            manual(Some(25)).with(Track::Stable, settled("1", 3, 3)).with(Track::Canary, settled("2", 1, 0)),
            Some((25, None)), ""),
        ("the split is reached: wait for the user",
            manual(Some(25)).with(Track::Stable, settled("1", 3, 3)).with(Track::Canary, settled("2", 1, 1)),
            Some((25, Some(Reason::CanaryWeightReached))), "candidate 2 serves 25%"),
        ("weight 0 holds no traffic",
            manual(Some(0)).with(Track::Stable, settled("1", 4, 4)),
            Some((0, Some(Reason::CanaryWeightReached))), "holds no traffic"),
        ("no canary options: a manual canary at 0",
            legacy.with(Track::Stable, settled("1", 4, 4)),
            Some((0, Some(Reason::CanaryWeightReached))), "holds no traffic"),
    ];
    for (name, case, expected, words) in table {
        let (target, _) = decide(&case, |d| target(d, "2"));
        assert_eq!(aimed(&target), expected, "{name}");
        if let Target::Weight { pause: Some((_, message)), .. } = &target {
            assert!(message.contains(words), "{name}: {message}");
        }
    }
}

#[test]
fn walk_steps_table() {
    let at_25 = |case: Case| {
        case.with(Track::Stable, settled("1", 3, 3)).with(Track::Canary, settled("2", 1, 1))
    };
    let at_50 = |case: Case| {
        case.with(Track::Stable, settled("1", 2, 2)).with(Track::Canary, settled("2", 2, 2))
    };
    let approved = |mut case: Case| {
        case.spec.strategy.approved_version = Some("2".into());
        case
    };
    // (case, target, current step after, steps completed, wake-up)
    #[rustfmt::skip]
    let table: Vec<(&str, Case, Option<(i32, Option<Reason>)>, i32, usize, Option<u64>)> = vec![
        ("first step starts: set the weight",
            stepped(None, 0).with(Track::Stable, settled("1", 4, 4)),
            Some((25, None)), 0, 0, None),
        ("weight reached: the timed pause begins",
            at_25(stepped(Some(0), 0)),
            Some((25, Some(Reason::CanaryPause))), 1, 1, Some(5)),
        ("pausing: wake when it ends",
            at_25(stepped(Some(1), 3)),
            Some((25, Some(Reason::CanaryPause))), 1, 0, Some(2)),
        ("pause over: the next weight",
            at_25(stepped(Some(1), 6)),
            Some((50, None)), 2, 1, None),
        ("an indefinite pause waits for approval",
            at_50(stepped(Some(3), 60)),
            Some((50, Some(Reason::AwaitingApproval))), 3, 0, None),
        ("approving another version releases nothing",
            at_50({ let mut c = stepped(Some(3), 60); c.spec.strategy.approved_version = Some("3".into()); c }),
            Some((50, Some(Reason::AwaitingApproval))), 3, 0, None),
        ("approved: past the last step, promote",
            approved(at_50(stepped(Some(3), 60))),
            None, 4, 1, None),
        ("already past the last step",
            stepped(Some(9), 0),
            None, 9, 0, None),
    ];
    for (name, case, expected, step, completed, wake) in table {
        let (target, plan) = decide(&case, |d| walk_steps(d, "2", &steps()));
        assert_eq!(aimed(&target), expected, "{name}");
        assert_eq!(plan.state.current_step, Some(step), "{name}");
        let done = events(&plan).iter().filter(|e| **e == Reason::StepCompleted).count();
        assert_eq!(done, completed, "{name}");
        assert_eq!(plan.requeue_after, wake.map(Duration::from_secs), "{name}");
    }
}

#[test]
fn weight_before_table() {
    let steps = steps();
    for (index, weight) in [(0, 0), (1, 25), (2, 25), (3, 50), (4, 50), (9, 50)] {
        assert_eq!(weight_before(&steps, index), weight, "before step {index}");
    }
}

#[test]
fn split_achieved_table() {
    let unsettled = TrackState { rolled_out: false, ..settled("2", 1, 1) };
    #[rustfmt::skip]
    let table: Vec<(&str, i32, Vec<(Track, TrackState)>, bool)> = vec![
        ("25%: three stable, one candidate, all ready", 25,
            vec![(Track::Stable, settled("1", 3, 3)), (Track::Canary, settled("2", 1, 1))], true),
        ("stable not shrunk yet", 25,
            vec![(Track::Stable, settled("1", 4, 4)), (Track::Canary, settled("2", 1, 1))], false),
        ("a stable pod not ready", 25,
            vec![(Track::Stable, settled("1", 3, 2)), (Track::Canary, settled("2", 1, 1))], false),
        ("the canary runs another version", 25,
            vec![(Track::Stable, settled("1", 3, 3)), (Track::Canary, settled("3", 1, 1))], false),
        ("the canary is still rolling out", 25,
            vec![(Track::Stable, settled("1", 3, 3)), (Track::Canary, unsettled)], false),
        ("0%: no canary pod at all", 0, vec![(Track::Stable, settled("1", 4, 4))], true),
        ("0% with a canary pod left", 0,
            vec![(Track::Stable, settled("1", 4, 4)), (Track::Canary, settled("2", 1, 1))], false),
        ("100%: everything on the canary", 100, vec![(Track::Canary, settled("2", 4, 4))], true),
    ];
    for (name, weight, tracks, expected) in table {
        let case = tracks.into_iter().fold(manual(Some(weight)), |c, (t, s)| c.with(t, s));
        let (achieved, _) = decide(&case, |d| split_achieved(d, "2", weight));
        assert_eq!(achieved, expected, "{name}");
    }
}

#[test]
fn run_split_table() {
    let weighted = |status_weight: i32, case: Case| {
        let mut case = case;
        case.status.canary_weight = status_weight;
        case
    };
    // (case, weight, pause, tracks, stage, events)
    #[rustfmt::skip]
    let table: Vec<(&str, Case, Option<(Reason, String)>, Vec<&str>, (&str, Option<Reason>), Vec<Reason>)> = vec![
        ("a new weight: canary first, stable kept until it is ready",
            weighted(0, manual(Some(25)).with(Track::Stable, settled("1", 4, 4))),
            None,
            vec!["stable 1 x4 held", "canary 2 x1"],
            ("Progressing", Some(Reason::ScalingTracks)), vec![Reason::WeightChanged]),
        ("canary ready: stable shrinks to its share",
            weighted(25, manual(Some(25)).with(Track::Stable, settled("1", 4, 4)).with(Track::Canary, settled("2", 1, 1))),
            None,
            vec!["stable 1 x3 held", "canary 2 x1"],
            ("Progressing", Some(Reason::ScalingTracks)), vec![]),
        ("reached: paused with the reason given",
            weighted(25, manual(Some(25)).with(Track::Stable, settled("1", 3, 3)).with(Track::Canary, settled("2", 1, 1))),
            Some((Reason::CanaryWeightReached, "here".into())),
            vec!["stable 1 x3 held", "canary 2 x1"],
            ("Paused", Some(Reason::CanaryWeightReached)), vec![]),
    ];
    for (name, case, pause, tracks, expected_stage, expected_events) in table {
        let (_, plan) = decide(&case, |d| run_split(d, "1", "2", 25, pause));
        assert_eq!(sizes(&plan), tracks, "{name}");
        assert_eq!(stage(&plan), expected_stage, "{name}");
        assert_eq!(events(&plan), expected_events, "{name}");
        assert_eq!(plan.state.canary_weight, 25, "{name}");
    }
}

#[test]
fn begin_promotion_table() {
    let analysed = |mut case: Case| {
        case.spec.strategy.analysis = Some(analysis(30, 1));
        case
    };
    let proven = || {
        manual(Some(100))
            .with(Track::Stable, settled("1", 3, 3))
            .with(Track::Canary, settled("2", 1, 1))
    };
    // (case, tracks, stage, events, message words)
    #[rustfmt::skip]
    let table: Vec<(&str, Case, Vec<&str>, (&str, Option<Reason>), Vec<Reason>, &str)> = vec![
        ("no ready candidate pod yet: hold the split",
            manual(Some(100)).with(Track::Stable, settled("1", 3, 3)).with(Track::Canary, settled("2", 1, 0)),
            vec!["stable 1 x3 held", "canary 2 x1"],
            ("Progressing", Some(Reason::WaitingForCandidate)), vec![], "0/1 ready"),
        ("no canary at all: one pod must prove the version first",
            manual(Some(100)).with(Track::Stable, settled("1", 4, 4)),
            vec!["stable 1 x4 held", "canary 2 x1"],
            ("Progressing", Some(Reason::WaitingForCandidate)), vec![], "0/1 ready"),
        ("proven: stable takes the candidate, the canary keeps serving",
            proven(),
            vec!["stable 2 x4", "canary 2 x1 held"],
            ("Progressing", Some(Reason::Promoting)), vec![Reason::PromotionStarted], "3/4 ready"),
        ("proven, but analysis has not passed yet",
            analysed(proven()),
            vec!["stable 1 x3 held", "canary 2 x1"],
            ("Paused", Some(Reason::WaitingForAnalysis)), vec![], "waiting for the first analysis measurement"),
    ];
    for (name, case, tracks, expected_stage, expected_events, words) in table {
        let (_, plan) = decide(&case, |d| begin_promotion(d, "1", "2"));
        assert_eq!(sizes(&plan), tracks, "{name}");
        assert_eq!(stage(&plan), expected_stage, "{name}");
        assert_eq!(events(&plan), expected_events, "{name}");
        assert!(message(&plan).contains(words), "{name}: {}", message(&plan));
        assert_eq!(plan.state.canary_weight, 100, "{name}");
    }
}

#[test]
fn promote_table() {
    // (case, tracks, removed, stage, events, stable version after, weight after)
    #[rustfmt::skip]
    let table: Vec<(&str, Case, Vec<&str>, Vec<Track>, (&str, Option<Reason>), Vec<Reason>, &str, i32)> = vec![
        ("stable still rolling: the canary keeps its pods",
            manual(Some(100)).with(Track::Stable, TrackState { rolled_out: false, ..settled("2", 4, 2) }).with(Track::Canary, settled("2", 1, 1)),
            vec!["stable 2 x4", "canary 2 x1 held"], vec![],
            ("Progressing", Some(Reason::Promoting)), vec![], "1", 100),
        ("stable settled on the candidate: promoted, the canary goes",
            manual(Some(100)).with(Track::Stable, settled("2", 4, 4)).with(Track::Canary, settled("2", 1, 1)),
            vec!["stable 2 x4"], vec![Track::Canary],
            ("Complete", None), vec![Reason::Promoted], "2", 0),
    ];
    for (name, case, tracks, removed, expected_stage, expected_events, stable, weight) in table {
        let (_, plan) = decide(&case, |d| promote(d, "2"));
        assert_eq!(sizes(&plan), tracks, "{name}");
        assert_eq!(plan.remove, removed, "{name}");
        assert_eq!(stage(&plan), expected_stage, "{name}");
        assert_eq!(events(&plan), expected_events, "{name}");
        assert_eq!(plan.state.stable_version.as_deref(), Some(stable), "{name}");
        assert_eq!(plan.state.canary_weight, weight, "{name}");
    }
}

#[test]
fn drain_table() {
    let back = || Case::new(spec("1", TOTAL, canary(Some(50), None))).rolling_out_from("1");
    // (case, rolled back, tracks, removed, stage)
    #[rustfmt::skip]
    let table: Vec<(&str, Case, Option<(Reason, String)>, Vec<&str>, Vec<Track>, (&str, Option<Reason>))> = vec![
        ("stable grows first; the canary shrinks as stable gets ready",
            back().with(Track::Stable, settled("1", 1, 1)).with(Track::Canary, settled("2", 3, 3)),
            None, vec!["stable 1 x4", "canary 2 x3 held"], vec![],
            ("Progressing", Some(Reason::ScalingTracks))),
        ("stable ready: the canary goes",
            back().with(Track::Stable, settled("1", 4, 4)).with(Track::Canary, settled("2", 1, 1)),
            None, vec!["stable 1 x4"], vec![Track::Canary],
            ("Complete", None)),
        ("all on stable",
            back().with(Track::Stable, settled("1", 4, 4)),
            None, vec!["stable 1 x4"], vec![],
            ("Complete", None)),
        ("rolled back: stable keeps its template although the spec names the candidate",
            manual(Some(50)).with(Track::Stable, settled("1", 4, 4)).with(Track::Canary, settled("2", 1, 1)),
            Some((Reason::RolledBack, "bad".into())), vec!["stable 1 x4 held"], vec![Track::Canary],
            ("RolledBack", Some(Reason::RolledBack))),
    ];
    for (name, case, rolled_back, tracks, removed, expected_stage) in table {
        let (_, plan) = decide(&case, |d| drain(d, "1", rolled_back));
        assert_eq!(sizes(&plan), tracks, "{name}");
        assert_eq!(plan.remove, removed, "{name}");
        assert_eq!(stage(&plan), expected_stage, "{name}");
        assert_eq!(plan.state.canary_weight, 0, "{name}");
    }
}

#[test]
fn plan_table() {
    let failing = {
        let mut case = manual(Some(25))
            .with(Track::Stable, settled("1", 3, 3))
            .with(Track::Canary, settled("2", 1, 1));
        case.spec.strategy.analysis = Some(analysis(30, 0));
        case.measurement = Some(measurement(100, 0.5));
        case
    };
    let aborted = {
        let mut case = Case::new(spec("2", TOTAL, canary(Some(25), None))).rolling_out_from("1");
        case.status.candidate_version = None;
        case.status.aborted_version = Some("2".into());
        case.with(Track::Stable, settled("1", 4, 4))
    };
    let fresh = Case::new(spec("2", TOTAL, canary(Some(25), None)))
        .rolling_out_from("1")
        .with(Track::Stable, settled("1", 4, 4));
    let mut started = fresh;
    started.status.candidate_version = None;
    let stalled = |case: Case| {
        let mut case = case
            .with(Track::Stable, settled("1", 3, 3))
            .with(Track::Canary, settled("2", 1, 0))
            .stalled_for(700, Reason::ScalingTracks);
        case.status.canary_weight = 25;
        case
    };
    let mut keep_on_deadline = stalled(manual(Some(25)));
    keep_on_deadline.spec.strategy.abort_on_deadline = Some(false);
    let mut paused_long = manual(Some(25))
        .with(Track::Stable, settled("1", 3, 3))
        .with(Track::Canary, settled("2", 1, 1))
        .stalled_for(700, Reason::CanaryWeightReached);
    paused_long.status.canary_weight = 25;
    let approved = |mut case: Case, before: Option<&str>| {
        case.spec.strategy.approved_version = Some("2".into());
        case.status.aborted_approval = before.map(String::from);
        case
    };
    // (case, events, stage, candidate after)
    #[rustfmt::skip]
    let table: Vec<(&str, Case, Vec<Reason>, (&str, Option<Reason>), Option<&str>)> = vec![
        ("a new version starts a rollout",
            started, vec![Reason::RolloutStarted, Reason::WeightChanged],
            ("Progressing", Some(Reason::ScalingTracks)), Some("2")),
        ("the version set back abandons the candidate",
            { let mut c = Case::new(spec("1", TOTAL, canary(Some(25), None))).rolling_out_from("1"); c.status.candidate_version = Some("2".into()); c.with(Track::Stable, settled("1", 4, 4)) },
            vec![Reason::RolledBack], ("Complete", None), None),
        ("a rolled-back version is not retried while the spec names it",
            aborted.clone(), vec![], ("RolledBack", Some(Reason::RolledBack)), None),
        ("failed analysis beyond the limit rolls back",
            failing, vec![Reason::AnalysisMeasurementFailed, Reason::AnalysisFailed],
            ("RolledBack", Some(Reason::RolledBack)), None),
        ("stable already runs the candidate: promotion finishes whatever the weight",
            manual(Some(25)).with(Track::Stable, settled("2", 4, 4)),
            vec![Reason::Promoted], ("Complete", None), None),
        ("no progress by the deadline: the candidate is aborted",
            stalled(manual(Some(25))), vec![Reason::ProgressDeadlineAborted],
            ("RolledBack", Some(Reason::ProgressDeadlineAborted)), None),
        ("abortOnDeadline false: the candidate stays (Degraded, said by the rules)",
            keep_on_deadline, vec![], ("Progressing", Some(Reason::ScalingTracks)), Some("2")),
        ("a pause is not a lack of progress",
            paused_long, vec![], ("Paused", Some(Reason::CanaryWeightReached)), Some("2")),
        ("an approval naming the aborted version retries it",
            approved(aborted.clone(), None), vec![Reason::RolloutStarted, Reason::WeightChanged],
            ("Progressing", Some(Reason::ScalingTracks)), Some("2")),
        ("an approval that already named it when it was aborted does not",
            approved(aborted.clone(), Some("2")), vec![],
            ("RolledBack", Some(Reason::RolledBack)), None),
    ];
    for (name, case, expected_events, expected_stage, candidate) in table {
        let (_, plan) = decide(&case, plan);
        assert_eq!(events(&plan), expected_events, "{name}");
        assert_eq!(stage(&plan), expected_stage, "{name}");
        assert_eq!(plan.state.candidate_version.as_deref(), candidate, "{name}");
    }
}

#[test]
fn a_missing_canary_spec_is_a_manual_canary_at_zero() {
    let expected = CanarySpec { weight: Some(0), steps: None, max_surge: None };
    assert_eq!(CanarySpec::default(), expected);
}

#[test]
fn a_deadline_abort_is_recorded_with_its_times() {
    let mut case = manual(Some(25))
        .with(Track::Stable, settled("1", 3, 3))
        .with(Track::Canary, settled("2", 1, 0))
        .stalled_for(700, Reason::ScalingTracks);
    case.status.candidate_started_at = Some(seconds_ago(800));
    let (_, decided) = decide(&case, plan);
    assert_eq!(decided.state.aborted_version.as_deref(), Some("2"));
    let record = &decided.state.history[0];
    assert_eq!((record.version.as_str(), record.outcome), ("2", RolloutOutcome::Aborted));
    assert_eq!(record.started_at.as_deref(), Some(seconds_ago(800).as_str()));
    assert_eq!(record.ready_at, None, "its pods were never ready");
    assert!(record.reason.as_deref().unwrap_or_default().contains("no progress for 600s"));
    // The next reconcile keeps the reason.
    let mut after = Case::new(spec("2", TOTAL, canary(Some(25), None))).rolling_out_from("1");
    after.status.candidate_version = None;
    after.status.aborted_version = Some("2".into());
    after.status.history = decided.state.history.clone();
    let (_, next) = decide(&after.with(Track::Stable, settled("1", 4, 4)), plan);
    assert_eq!(stage(&next), ("RolledBack", Some(Reason::ProgressDeadlineAborted)));
    assert!(message(&next).contains("aborted at its progress deadline"), "{}", message(&next));
}

#[test]
fn an_unreachable_weight_warns_once_with_the_split() {
    // One replica at 10 %: a surge pod, 50 %, and a warning when the weight is set.
    let case = Case::new(spec("2", 1, canary(Some(10), None)))
        .rolling_out_from("1")
        .with(Track::Stable, settled("1", 1, 1));
    let (_, decided) = decide(&case, plan);
    assert_eq!(sizes(&decided), ["stable 1 x1 held", "canary 2 x1"]);
    assert_eq!(events(&decided), [Reason::WeightChanged, Reason::WeightNotReachable]);
    let warning = decided.events.iter().find(|e| e.reason == Reason::WeightNotReachable).unwrap();
    assert!(warning.warning && warning.note.contains("give the candidate 50%"), "{}", warning.note);
    // Stored at 10 %: no repeat.
    let mut again = case;
    again.status.canary_weight = 10;
    let (_, decided) = decide(&again, plan);
    assert!(events(&decided).is_empty(), "{:?}", events(&decided));
    // Four replicas at 25 %: exact, no warning.
    let fine = Case::new(spec("2", 4, canary(Some(25), None)))
        .rolling_out_from("1")
        .with(Track::Stable, settled("1", 4, 4));
    let (_, decided) = decide(&fine, plan);
    assert_eq!(events(&decided), [Reason::WeightChanged]);
}
