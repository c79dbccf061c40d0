//! Leader election on the real API server (S16, S17). Every operator instance runs as a
//! ServiceAccount of its own, so the API server's audit log tells their writes apart, and a
//! watch records the leader Lease for the whole test. Each test ends by checking, over the
//! whole run, that every write of an instance (its Lease writes aside: they are the election)
//! fell inside one of its own tenures, so no two instances ever wrote in the same instant, and
//! that no instance wrote again once another had taken over.
//!
//! - a leader of two, then SIGTERM: it releases the lease and the standby leads within 2 s;
//!   then SIGKILL: a third instance takes over within the lease duration plus its retry;
//! - a leader cut off from the API server (every connection dropped), and a leader whose
//!   writes fail while its reads pass: each stops writing and exits before its lease could be
//!   taken, and the standby takes over only after that.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use modelship_crds::Phase;
use modelship_tests::accounts::{Account, operator_account};
use modelship_tests::audit;
use modelship_tests::faults::{Chaos, ChaosApi, FaultyLink, api_server, kubeconfig_via};
use modelship_tests::harness::{hold_for, unique_name, wait_until, with_namespace};
use modelship_tests::lease::{LeaseRecorder, writer_runs, writes_outside_tenures};
use modelship_tests::models::{apply, current, model, patch_spec, wait_for, wait_phase};
use modelship_tests::operator::OperatorProcess;
use serde_json::json;

const T: Duration = Duration::from_secs(60);
const LEASE: &str = "modelship-operator";
const LEASE_SECONDS: i64 = 6;
const GRACE_SECONDS: i64 = 2;

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name("modelship-leaders"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn leader_args(namespace: &str) -> Vec<String> {
    [
        "--leader-elect=true",
        "--lease-namespace",
        namespace,
        "--lease-name",
        LEASE,
        "--lease-duration-seconds",
        &LEASE_SECONDS.to_string(),
        "--lease-grace-seconds",
        &GRACE_SECONDS.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// An operator instance named after `account`, authenticating through `kubeconfig`.
fn start(namespace: &str, account: &Account, kubeconfig: &std::path::Path) -> OperatorProcess {
    let args = leader_args(namespace);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    OperatorProcess::start_full(
        namespace,
        &account.name,
        &args,
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    )
}

/// The audit-log check every test ends with: the writes of this namespace's accounts (Lease
/// writes aside) each inside a tenure of their writer, and each writer's writes in one run.
/// Returns the writers in the order they wrote.
async fn assert_one_writer_at_a_time(namespace: &str, recorder: &LeaseRecorder) -> Vec<String> {
    // The audit log is written as requests complete: give the last ones a moment.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let prefix = format!("system:serviceaccount:{namespace}:");
    let requests = audit::read_requests(&prefix);
    assert!(!requests.is_empty(), "no audited request from {prefix}*");
    let writes: Vec<(String, Timestamp)> = requests
        .iter()
        .filter(|r| r.is_write() && r.resource != "leases")
        .map(|r| (r.user.trim_start_matches(&prefix).to_string(), r.at))
        .collect();
    let tenures = recorder.tenures();
    eprintln!("tenures: {tenures:#?}");
    let outside = writes_outside_tenures(&writes, &tenures);
    assert!(outside.is_empty(), "writes outside their writer's tenure:\n{}", outside.join("\n"));
    let runs = writer_runs(&writes);
    let mut distinct = runs.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), runs.len(), "an instance wrote again after another had: {runs:?}");
    eprintln!("{} writes by {runs:?}", writes.len());
    runs
}

/// S16: a leader and a standby; the standby never writes; SIGTERM hands the lease over within
/// 2 s and exits 0; SIGKILL lets a third instance take over within the lease duration plus
/// its retry; the rollout goes on across both handovers.
#[tokio::test(flavor = "multi_thread")]
async fn one_leader_writes_and_hands_over_on_sigterm_and_on_kill() {
    with_namespace(async |client: Client, ns: String| {
        let dir = tempdir();
        let recorder = LeaseRecorder::start(&client, &ns, LEASE);
        let a = operator_account(&client, &ns, LEASE, "op-a", &dir).await;
        let b = operator_account(&client, &ns, LEASE, "op-b", &dir).await;
        let c = operator_account(&client, &ns, LEASE, "op-c", &dir).await;

        let mut op_a = start(&ns, &a, &a.kubeconfig);
        wait_until(T, "a to lead", async || op_a.is_leader().await).await;
        let mut op_b = start(&ns, &b, &b.kubeconfig);
        apply(
            &client,
            &ns,
            model("m", "1", 2, json!({"type": "Canary", "canary": {"weight": 50}})),
        )
        .await;
        wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        hold_for(Duration::from_secs(2), "b to stand by without writing", async || {
            !op_b.is_leader().await && op_b.writes().await == 0.0
        })
        .await;
        assert!(op_a.writes().await > 0.0, "the leader reconciled");

        // SIGTERM: a releases the lease on its way out, and b leads at once.
        let signalled = Instant::now();
        op_a.sigterm();
        wait_until(Duration::from_secs(2), "b to lead within 2 s of a's SIGTERM", async || {
            op_b.is_leader().await
        })
        .await;
        eprintln!("b leads {:?} after a's SIGTERM", signalled.elapsed());
        let code = op_a.exited_within(Duration::from_secs(10)).await;
        assert_eq!(code, Some(Some(0)), "a's exit after SIGTERM; log:\n{}", op_a.log_tail());
        patch_spec(&client, &ns, "m", json!({"model": {"version": "2"}})).await;
        wait_phase(&client, &ns, "m", Phase::Paused, T).await;
        assert!(op_b.writes().await > 0.0, "the new leader reconciles");

        // SIGKILL: no release; c takes over once b's lease expires.
        let op_c = start(&ns, &c, &c.kubeconfig);
        hold_for(Duration::from_secs(1), "c to stand by", async || !op_c.is_leader().await).await;
        op_b.kill();
        let killed = Instant::now();
        wait_until(Duration::from_secs(20), "c to lead", async || op_c.is_leader().await).await;
        let takeover = killed.elapsed();
        eprintln!("c leads {takeover:?} after b was killed");
        assert!(
            takeover <= Duration::from_secs(LEASE_SECONDS as u64 + 3),
            "takeover took {takeover:?}, more than the lease duration plus a retry"
        );
        patch_spec(&client, &ns, "m", json!({"strategy": {"canary": {"weight": 100}}})).await;
        let md = wait_phase(&client, &ns, "m", Phase::Healthy, T).await;
        assert_eq!(md.status.unwrap().stable_version.as_deref(), Some("2"));

        let runs = assert_one_writer_at_a_time(&ns, &recorder).await;
        assert_eq!(runs, ["op-a", "op-b", "op-c"], "each leader wrote, in turn");
        let holders: Vec<String> = recorder.tenures().into_iter().map(|t| t.holder).collect();
        assert_eq!(holders, ["op-a", "op-b", "op-c"]);
    })
    .await;
}

/// How a partition cuts a leader off.
enum Partition {
    /// Every connection to the API server dropped and new ones refused.
    Full(FaultyLink),
    /// Reads pass, every write fails (as when the API server has lost etcd).
    WritesFail(ChaosApi),
}

impl Partition {
    fn apply(&self) {
        match self {
            Partition::Full(link) => link.cut(),
            Partition::WritesFail(api) => api.fail_writes(true),
        }
    }
}

/// S17: the leader `a` partitioned as `partition` says, `b` standing by: `a` exits non-zero
/// before its lease could be taken (its last renewal plus the lease duration), sends no write
/// after that, and `b` acquires only after it.
async fn partitioned_leader_steps_down(full: bool) {
    with_namespace(async |client: Client, ns: String| {
        let dir = tempdir();
        let recorder = LeaseRecorder::start(&client, &ns, LEASE);
        let a = operator_account(&client, &ns, LEASE, "op-a", &dir).await;
        let b = operator_account(&client, &ns, LEASE, "op-b", &dir).await;
        let (partition, a_kubeconfig) = if full {
            let link = FaultyLink::start(api_server(&a.kubeconfig)).await;
            let via = kubeconfig_via(&a.kubeconfig, &link, &dir);
            (Partition::Full(link), via)
        } else {
            let api = ChaosApi::start(a.client().await, Chaos::default()).await;
            let via = api.kubeconfig(&dir);
            (Partition::WritesFail(api), via)
        };
        let mut op_a = start(&ns, &a, &a_kubeconfig);
        wait_until(T, "a to lead", async || op_a.is_leader().await).await;
        let op_b = start(&ns, &b, &b.kubeconfig);
        apply(&client, &ns, model("m", "1", 2, json!({"type": "RollingUpdate"}))).await;
        wait_phase(&client, &ns, "m", Phase::Healthy, T).await;

        partition.apply();
        let cut = Instant::now();
        let code =
            wait_until(Duration::from_secs(20), "a to exit", async || op_a.exit_code()).await;
        let exited = Timestamp::now();
        eprintln!("a exited {:?} after the partition", cut.elapsed());
        assert_ne!(
            code,
            Some(0),
            "a deposed leader exits with an error; log:\n{}",
            op_a.log_tail()
        );
        wait_until(Duration::from_secs(20), "b to lead", async || op_b.is_leader().await).await;

        let tenures = recorder.tenures();
        let a_tenure = tenures.iter().find(|t| t.holder == "op-a").expect("a's tenure");
        let b_tenure = tenures.iter().find(|t| t.holder == "op-b").expect("b's tenure");
        let takeable = a_tenure.last_renewal + SignedDuration::from_secs(LEASE_SECONDS);
        eprintln!(
            "a's last renewal {}, its lease takeable at {takeable}, a exited at {exited}, b \
             acquired at {}",
            a_tenure.last_renewal, b_tenure.from
        );
        assert!(exited < takeable, "a exited at {exited}, after its lease could be taken");
        assert!(
            b_tenure.from >= takeable,
            "b acquired at {} before a's lease expired",
            b_tenure.from
        );
        if let Partition::WritesFail(api) = &partition {
            // What a tried to write, failing or not: nothing once its lease could be taken.
            let last = api.writes().iter().map(|w| w.when).max().expect("a wrote");
            assert!(last < takeable, "a still tried to write at {last}");
        }

        patch_spec(&client, &ns, "m", json!({"model": {"version": "2"}})).await;
        wait_for(&client, &ns, "m", "b to roll out version 2", T, |md| {
            current(md) && md.status.as_ref().and_then(|s| s.stable_version.as_deref()) == Some("2")
        })
        .await;
        let runs = assert_one_writer_at_a_time(&ns, &recorder).await;
        assert_eq!(runs, ["op-a", "op-b"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_cut_off_from_the_api_exits_before_its_lease_can_be_taken() {
    partitioned_leader_steps_down(true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_whose_writes_fail_while_reads_pass_exits_before_its_lease_can_be_taken() {
    partitioned_leader_steps_down(false).await;
}
