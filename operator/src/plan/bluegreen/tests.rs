//! Each blue-green decision by table: what the planner sees, and what it decides.
// Each table is a list of tuples, one row per case; naming every row type would hide them.
#![allow(clippy::type_complexity)]

use std::time::Duration;

use modelship_crds::StrategySpec;

use super::*;
use crate::plan::tests::fixtures::*;
use crate::plan::{Endpoint, Plan};

const TOTAL: i32 = 3;

/// Version 2 rolling out over version 1, which blue serves.
fn rollout(strategy: StrategySpec) -> Case {
    Case::new(spec("2", TOTAL, strategy))
        .rolling_out_from("1")
        .with(Track::Blue, settled("1", 3, 3))
}

fn auto() -> Case {
    rollout(blue_green(true, None))
}

/// Green runs the candidate in full, and the Service selects `selected`.
fn green_ready(selected: Option<Track>) -> Case {
    auto().with(Track::Green, settled("2", 3, 3)).selecting(selected)
}

/// What a plan does to the traffic: the tracks, the Service, the preview, the stage, the events.
type Outcome =
    (Vec<String>, Option<Track>, Option<Track>, (&'static str, Option<Reason>), Vec<Reason>);

fn outcome(plan: &Plan) -> Outcome {
    (sizes(plan), plan.service_track, plan.preview_track, stage(plan), events(plan))
}

fn expect(
    tracks: &[&str],
    service: Track,
    preview: Option<Track>,
    stage: (&'static str, Option<Reason>),
    events: &[Reason],
) -> Outcome {
    let tracks = tracks.iter().map(|t| t.to_string()).collect();
    (tracks, Some(service), preview, stage, events.to_vec())
}

#[test]
fn before_switch_table() {
    let manual = |approved: Option<&str>| {
        let mut case = rollout(blue_green(false, Some(1)));
        case.spec.strategy.approved_version = approved.map(String::from);
        case.with(Track::Green, settled("2", 1, 1))
    };
    let no_preview = {
        let mut case = auto();
        case.spec.strategy.blue_green.as_mut().expect("options").preview_service = false;
        case
    };
    let waiting = ("Progressing", Some(Reason::WaitingForCandidate));
    #[rustfmt::skip]
    let table: Vec<(&str, Case, Outcome, &str)> = vec![
        ("the idle color is brought up in full; blue keeps serving",
            auto(),
            expect(&["blue 1 x3 held", "green 2 x3"], Track::Blue, Some(Track::Green), waiting, &[]),
            "green version 2: 0/3 ready"),
        ("every new pod ready: the Service switches at once",
            auto().with(Track::Green, settled("2", 3, 3)),
            expect(&["blue 1 x3 held", "green 2 x3"], Track::Green, Some(Track::Green),
                ("Progressing", Some(Reason::WaitingForEndpoints)), &[Reason::SwitchedService]),
            "only green pods"),
        ("manual: the preview replicas wait for approval",
            manual(None),
            expect(&["blue 1 x3 held", "green 2 x1"], Track::Blue, Some(Track::Green),
                ("Paused", Some(Reason::AwaitingApproval)), &[]),
            "set spec.strategy.approvedVersion to 2"),
        ("approved: scaled to full before the switch",
            manual(Some("2")),
            expect(&["blue 1 x3 held", "green 2 x3"], Track::Blue, Some(Track::Green), waiting, &[]),
            "green version 2: 1/3 ready"),
        ("without a preview Service",
            no_preview,
            expect(&["blue 1 x3 held", "green 2 x3"], Track::Blue, None, waiting, &[]),
            ""),
    ];
    for (name, case, expected, words) in table {
        let (_, plan) = decide(&case, |d| before_switch(d, Track::Blue, "1", "2"));
        assert_eq!(outcome(&plan), expected, "{name}");
        assert!(message(&plan).contains(words), "{name}: {}", message(&plan));
    }
}

#[test]
fn switched_table() {
    let delay_over = {
        let mut case = green_ready(Some(Track::Green));
        case.status.scale_down_at = Some(seconds_ago(1));
        case
    };
    let unproven = {
        let mut case = green_ready(Some(Track::Green));
        case.status.scale_down_at = Some(seconds_ago(1));
        case.spec.strategy.analysis = Some(analysis(30, 1));
        case
    };
    let failing = {
        let mut case = green_ready(Some(Track::Green));
        case.spec.strategy.analysis = Some(analysis(30, 0));
        case.measurement = Some(measurement(100, 0.5));
        case
    };
    let delay = ("Progressing", Some(Reason::ScaleDownDelay));
    // (case, outcome, message words, wake-up)
    #[rustfmt::skip]
    let table: Vec<(&str, Case, Outcome, &str, Option<u64>)> = vec![
        ("old pods still behind the Service: blue stays whole",
            green_ready(None),
            expect(&["blue 1 x3 held", "green 2 x3"], Track::Green, Some(Track::Green),
                ("Progressing", Some(Reason::WaitingForEndpoints)), &[]),
            "only green pods", None),
        ("only green pods behind the Service: the scale-down delay starts",
            green_ready(Some(Track::Green)),
            expect(&["blue 1 x3 held", "green 2 x3"], Track::Green, Some(Track::Green), delay,
                &[Reason::TrafficSwitched]),
            "blue (version 1) kept until", Some(10)),
        ("delay over: blue scales to zero, green is stable",
            delay_over,
            expect(&["blue 1 x0 held", "green 2 x3"], Track::Green, Some(Track::Green),
                ("Complete", None), &[Reason::Promoted]),
            "", None),
        ("delay over, but no passing measurement: blue is kept",
            unproven,
            expect(&["blue 1 x3 held", "green 2 x3"], Track::Green, Some(Track::Green), delay, &[]),
            "waiting for a passing analysis measurement", Some(30)),
        ("analysis fails while blue is up: switch back",
            failing,
            expect(&["blue 1 x3 held", "green 2 x3"], Track::Blue, Some(Track::Blue),
                ("RolledBack", Some(Reason::RolledBack)),
                &[Reason::AnalysisMeasurementFailed, Reason::AnalysisFailed, Reason::SwitchedService]),
            "version 2 rolled back to 1", Some(30)),
    ];
    for (name, case, expected, words, wake) in table {
        let (_, plan) = decide(&case, |d| switched(d, Track::Green, "1", "2", None));
        assert_eq!(outcome(&plan), expected, "{name}");
        assert!(message(&plan).contains(words), "{name}: {}", message(&plan));
        assert_eq!(plan.requeue_after, wake.map(Duration::from_secs), "{name}");
    }
}

#[test]
fn steady_table() {
    let idle = |scale_down_at: String| {
        let mut case = Case::new(spec("1", TOTAL, blue_green(true, None)))
            .rolling_out_from("1")
            .with(Track::Blue, settled("1", 3, 3))
            .with(Track::Green, settled("2", 3, 3));
        case.status.scale_down_at = Some(scale_down_at);
        case
    };
    let only_blue = |ready| {
        Case::new(spec("1", TOTAL, blue_green(true, None)))
            .rolling_out_from("1")
            .with(Track::Blue, settled("1", 3, ready))
    };
    let complete = ("Complete", None);
    // (case, rolled back, outcome, scale-down time kept, wake-up)
    #[rustfmt::skip]
    let table: Vec<(&str, Case, Option<(Reason, String)>, Outcome, bool, Option<u64>)> = vec![
        ("nothing to do",
            only_blue(3), None,
            expect(&["blue 1 x3"], Track::Blue, Some(Track::Blue), complete, &[]), false, None),
        ("the active color is short of ready pods",
            only_blue(1), None,
            expect(&["blue 1 x3"], Track::Blue, Some(Track::Blue),
                ("Progressing", Some(Reason::Scaling)), &[]), false, None),
        ("the other color is kept until its scale-down time",
            idle(seconds_from_now(5)), None,
            expect(&["blue 1 x3", "green 2 x3 held"], Track::Blue, Some(Track::Blue), complete, &[]),
            true, Some(5)),
        ("then scaled to zero",
            idle(seconds_ago(1)), None,
            expect(&["blue 1 x3", "green 2 x0 held"], Track::Blue, Some(Track::Blue), complete, &[]),
            false, None),
        ("after a rollback the active color keeps its template",
            only_blue(3), Some((Reason::RolledBack, "rolled back".into())),
            expect(&["blue 1 x3 held"], Track::Blue, Some(Track::Blue), ("RolledBack", Some(Reason::RolledBack)), &[]),
            false, None),
    ];
    for (name, case, rolled_back, expected, kept, wake) in table {
        let (_, plan) = decide(&case, |d| steady(d, Track::Blue, "1", rolled_back));
        assert_eq!(outcome(&plan), expected, "{name}");
        assert_eq!(plan.state.scale_down_at.is_some(), kept, "{name}");
        assert_eq!(plan.requeue_after, wake.map(Duration::from_secs), "{name}");
    }
}

#[test]
fn switch_back_if_serving_table() {
    let serving = |blue_ready| {
        Case::new(spec("1", TOTAL, blue_green(true, None)))
            .rolling_out_from("1")
            .with(Track::Blue, settled("1", 3, blue_ready))
            .with(Track::Green, settled("2", 3, 3))
    };
    // (case, active, serves afterwards, events)
    #[rustfmt::skip]
    let table: Vec<(&str, Case, Track, Track, Vec<Reason>)> = vec![
        ("the candidate serves and blue is up: back to blue", serving(3), Track::Green, Track::Blue,
            vec![Reason::SwitchedService]),
        ("blue has no ready pod: stay", serving(0), Track::Green, Track::Green, vec![]),
        ("the active color runs the stable version already", serving(3), Track::Blue, Track::Blue,
            vec![]),
    ];
    for (name, case, active, after, expected_events) in table {
        let (serves, plan) = decide(&case, |d| switch_back_if_serving(d, active, "2"));
        assert_eq!(serves, after, "{name}");
        assert_eq!(events(&plan), expected_events, "{name}");
    }
}

#[test]
fn endpoints_only_table() {
    let ready = |pod: &str, ready| Endpoint { pod: format!("{NAME}-{pod}"), ready };
    #[rustfmt::skip]
    let table: Vec<(&str, Vec<Endpoint>, bool)> = vec![
        ("no endpoints yet", vec![], false),
        ("only green", vec![ready("green-abc-1", true)], true),
        ("green and blue", vec![ready("green-abc-1", true), ready("blue-def-1", true)], false),
        ("a blue pod on its way out does not count", vec![ready("green-abc-1", true), ready("blue-def-1", false)], true),
        ("nothing ready", vec![ready("green-abc-1", false)], false),
    ];
    for (name, endpoints, expected) in table {
        let mut case = auto();
        case.observed.endpoints = endpoints;
        let (only, _) = decide(&case, |d| endpoints_only(d, Track::Green));
        assert_eq!(only, expected, "{name}");
    }
}

#[test]
fn plan_table() {
    let set_back = {
        let mut case = Case::new(spec("1", TOTAL, blue_green(true, None)))
            .rolling_out_from("1")
            .with(Track::Blue, settled("1", 3, 3))
            .with(Track::Green, settled("2", 3, 3))
            .selecting(Some(Track::Green));
        case.status.candidate_version = Some("2".into());
        case
    };
    let next_version = {
        let mut case = green_ready(Some(Track::Green));
        case.spec.model.version = "3".into();
        case
    };
    let aborted = {
        let mut case = auto().selecting(Some(Track::Blue));
        case.status.candidate_version = None;
        case.status.aborted_version = Some("2".into());
        case
    };
    // Green never gets ready: the Service stays on blue, green goes.
    let stalled = auto()
        .with(Track::Green, settled("2", 3, 1))
        .selecting(Some(Track::Blue))
        .stalled_for(700, Reason::WaitingForCandidate);
    // Switched, but the endpoints never hold only green pods: back to blue.
    let stalled_after_switch = auto()
        .with(Track::Green, settled("2", 3, 3))
        .selecting(None)
        .stalled_for(700, Reason::WaitingForEndpoints);
    let mut stalled_after_switch = stalled_after_switch;
    stalled_after_switch.observed.service_track = Some(Some(Track::Green));
    // (case, events, Service after, stable version after, stage)
    #[rustfmt::skip]
    let table: Vec<(&str, Case, Vec<Reason>, Option<Track>, &str, (&str, Option<Reason>))> = vec![
        ("the version set back while green serves: back to blue at once",
            set_back, vec![Reason::SwitchedService, Reason::RolledBack], Some(Track::Blue), "1",
            ("Complete", None)),
        ("a new version while the candidate serves: the candidate becomes stable",
            next_version, vec![Reason::Promoted, Reason::RolloutStarted], Some(Track::Green), "2",
            ("Progressing", Some(Reason::WaitingForCandidate))),
        ("a rolled-back version is not retried while the spec names it",
            aborted, vec![], Some(Track::Blue), "1", ("RolledBack", Some(Reason::RolledBack))),
        ("no progress by the deadline before the switch: aborted, the Service never moved",
            stalled, vec![Reason::ProgressDeadlineAborted], Some(Track::Blue), "1",
            ("RolledBack", Some(Reason::ProgressDeadlineAborted))),
        ("no progress by the deadline after the switch: back to blue",
            stalled_after_switch, vec![Reason::ProgressDeadlineAborted, Reason::SwitchedService],
            Some(Track::Blue), "1", ("RolledBack", Some(Reason::ProgressDeadlineAborted))),
    ];
    for (name, case, expected_events, service, stable, expected_stage) in table {
        let (_, plan) = decide(&case, plan);
        assert_eq!(events(&plan), expected_events, "{name}");
        assert_eq!(plan.service_track, service, "{name}");
        assert_eq!(plan.state.stable_version.as_deref(), Some(stable), "{name}");
        assert_eq!(stage(&plan), expected_stage, "{name}");
    }
}

#[test]
fn the_scale_down_delay_counts_from_now() {
    let (at, _) = decide(&auto(), |d| delay_from_now(d));
    assert_eq!(at, start() + k8s_openapi::jiff::SignedDuration::from_secs(10));
}
