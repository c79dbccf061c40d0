//! A node drain against the disruption budget, on the real node: `kubectl drain` evicts the
//! model's pods through the eviction API, which honours the operator's PodDisruptionBudget.
//! The node is the only one, so an evicted pod's replacement cannot be scheduled anywhere
//! (the node is cordoned): the drain evicts what the budget allows and then waits, and the
//! model's ready pods never drop below total − maxUnavailable.
//!
//! Cordoning the only node stops every other test's pods from scheduling, so this is a test
//! binary of its own with a single test (cargo runs test binaries one after another), and
//! the node is uncordoned whatever happens.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use modelship_crds::Phase;
use modelship_tests::harness::{wait_until, with_namespace};
use modelship_tests::models::{apply, model, patch_spec, ready_pods, wait_phase};
use modelship_tests::operator::OperatorProcess;
use serde_json::json;

const T: Duration = Duration::from_secs(60);
/// A name no other test uses: the drain's pod selector spans every namespace on the node.
const NAME: &str = "drained";
const REPLICAS: usize = 3;
const MAX_UNAVAILABLE: usize = 1;

/// Uncordons the node when dropped, also when the test panics.
struct Uncordon(String);

impl Drop for Uncordon {
    fn drop(&mut self) {
        let status = Command::new("kubectl").args(["uncordon", &self.0]).status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("could not uncordon node {}: run `kubectl uncordon {}`", self.0, self.0);
        }
    }
}

fn the_node() -> String {
    let output = Command::new("kubectl")
        .args(["get", "nodes", "-o", "jsonpath={.items[*].metadata.name}"])
        .output()
        .expect("kubectl get nodes");
    let names = String::from_utf8_lossy(&output.stdout).to_string();
    let nodes: Vec<&str> = names.split_whitespace().collect();
    assert_eq!(nodes.len(), 1, "the test cluster has one node: {names}");
    nodes[0].to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drain_never_takes_a_model_below_its_budget() {
    with_namespace(async |client, ns| {
        let _operator = OperatorProcess::start(&ns);
        let mut md =
            model(NAME, "1", REPLICAS as i32, json!({"type": "Canary", "canary": {"weight": 0}}));
        md["spec"]["disruptionBudget"] = json!({"maxUnavailable": MAX_UNAVAILABLE});
        apply(&client, &ns, md).await;
        wait_phase(&client, &ns, NAME, Phase::Healthy, T).await;
        let budgets: kube::Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
            kube::Api::namespaced(client.clone(), &ns);
        wait_until(T, "the budget to allow one disruption", async || {
            let budget = budgets.get_opt(NAME).await.ok().flatten();
            budget.and_then(|b| b.status).and_then(|s| s.disruptions_allowed)
                == Some(MAX_UNAVAILABLE as i32)
        })
        .await;
        let before = ready_pods(&client, &ns, NAME).await;
        assert_eq!(before.len(), REPLICAS);

        // Watch the ready pods through the whole drain.
        let lowest = Arc::new(AtomicUsize::new(REPLICAS));
        let done = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (client, ns, lowest, done) =
                (client.clone(), ns.clone(), lowest.clone(), done.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    let ready = ready_pods(&client, &ns, NAME).await.len();
                    lowest.fetch_min(ready, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };

        let node = the_node();
        let _uncordon = Uncordon(node.clone());
        let selector = format!("modelship.io/name={NAME}");
        let drain = tokio::process::Command::new("kubectl")
            .args([
                "drain",
                &node,
                "--pod-selector",
                &selector,
                "--ignore-daemonsets",
                "--delete-emptydir-data",
                "--timeout=15s",
            ])
            .output()
            .await
            .expect("kubectl drain");
        let text = String::from_utf8_lossy(&drain.stdout).to_string()
            + &String::from_utf8_lossy(&drain.stderr);
        done.store(true, Ordering::Relaxed);
        watcher.await.unwrap();

        // The drain could not finish: the budget held the other pods.
        assert!(!drain.status.success(), "the drain finished, evicting every pod:\n{text}");
        assert!(text.contains("disruption budget"), "{text}");
        let lowest = lowest.load(Ordering::Relaxed);
        eprintln!(
            "drain: lowest ready pods observed {lowest} of {REPLICAS} (budget: at least {})",
            REPLICAS - MAX_UNAVAILABLE
        );
        assert!(
            lowest >= REPLICAS - MAX_UNAVAILABLE,
            "ready pods dropped to {lowest}, below {} - {}",
            REPLICAS,
            MAX_UNAVAILABLE
        );
        let after = ready_pods(&client, &ns, NAME).await;
        let evicted = before.keys().filter(|p| !after.contains_key(*p)).count();
        assert_eq!(
            evicted, MAX_UNAVAILABLE,
            "exactly the budget was evicted: {before:?} -> {after:?}"
        );

        // Uncordoned, the replacement is scheduled and the model is whole again.
        drop(_uncordon);
        wait_until(T, "all pods ready again", async || {
            ready_pods(&client, &ns, NAME).await.len() == REPLICAS
        })
        .await;
        // Turned off, the budget goes: it is the operator's.
        patch_spec(&client, &ns, NAME, json!({"disruptionBudget": {"enabled": false}})).await;
        wait_until(T, "the budget removed", async || {
            budgets.get_opt(NAME).await.ok().flatten().is_none()
        })
        .await;
    })
    .await;
}
