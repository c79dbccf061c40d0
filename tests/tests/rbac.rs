//! The chart's RBAC on the real API server, in both of its variants: cluster-wide (the
//! default) and confined to one namespace (`operator.watchNamespace`).
//!
//! - By impersonation (`kubectl auth can-i --as=system:serviceaccount:NS:NAME`): every verb
//!   the operator's code uses is allowed where it needs it, and every other verb on those
//!   resources, on Pods, Secrets and ConfigMaps, and anywhere outside the watched namespace
//!   (for the confined variant), is refused.
//! - At runtime: the operator binary, authenticated as the confined variant's ServiceAccount,
//!   rolls a model out in the watched namespace, and the audit log shows no refused request.
//!   (`chart/rbac.rs` runs the same check for the cluster-wide variant, through two blue-green
//!   rollouts, comparing the accesses used with the rules in both directions.)

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use kube::Client;
use modelship_crds::Phase;
use modelship_tests::audit;
use modelship_tests::harness::{unique_name, wait_until, with_namespace_labels};
use modelship_tests::models::{apply, model, patch_spec, wait_phase};
use modelship_tests::operator::OperatorProcess;
use serde_json::json;

const RESTRICTED: &[(&str, &str)] = &[("pod-security.kubernetes.io/enforce", "restricted")];
const T: Duration = Duration::from_secs(90);

/// What the operator's code does, per resource (`resource.group[/subresource]` as
/// `kubectl auth can-i` names it), in the namespace it watches.
const USED: &[(&str, &[&str])] = &[
    ("modeldeployments.modelship.io", &["list", "watch"]),
    ("modeldeployments.modelship.io/status", &["patch"]),
    ("deployments.apps", &["list", "watch", "create", "patch", "delete"]),
    ("deployments.apps/scale", &["patch"]),
    ("services", &["list", "watch", "create", "patch", "delete"]),
    ("horizontalpodautoscalers.autoscaling", &["list", "watch", "create", "patch", "delete"]),
    ("endpointslices.discovery.k8s.io", &["list", "watch"]),
    ("events.events.k8s.io", &["create", "patch"]),
];

/// Resources the operator never touches: no verb on them may be allowed.
const UNTOUCHED: &[&str] = &[
    "modeldeployments.modelship.io/scale",
    "pods",
    "pods/exec",
    "secrets",
    "configmaps",
    "events",
    "serviceaccounts",
    "roles.rbac.authorization.k8s.io",
];

const VERBS: &[&str] =
    &["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"];

fn chart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/modelship")
}

async fn run(program: &str, args: &[&str]) -> (bool, String) {
    let output = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// Uninstalls a release when dropped, so a failing test leaves nothing behind.
struct Release {
    name: String,
    namespace: String,
}

impl Release {
    /// `helm install` the chart with no operator pods (only the accounts and rules matter
    /// here) and `extra` values.
    async fn install(namespace: &str, extra: &[&str]) -> Release {
        let name = unique_name("rbac");
        let chart = chart();
        let mut args = vec!["install", &name, chart.to_str().unwrap(), "--namespace", namespace];
        args.extend(["--set", "replicaCount=0"]);
        args.extend(extra);
        let (ok, text) = run("helm", &args).await;
        assert!(ok, "helm install: {text}");
        Release { name, namespace: namespace.to_string() }
    }

    /// The chart's ServiceAccount (and Lease) name.
    fn account(&self) -> String {
        format!("{}-modelship", self.name)
    }

    fn user(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.account())
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = std::process::Command::new("helm")
            .args(["uninstall", &self.name, "--namespace", &self.namespace, "--wait"])
            .output();
    }
}

/// One `kubectl auth can-i` question and the answer the rules must give.
struct Question {
    verb: &'static str,
    resource: String,
    namespace: String,
    allowed: bool,
}

/// Asks every question as `user` (eight at a time) and returns the wrong answers.
async fn wrong_answers(user: &str, questions: Vec<Question>) -> Vec<String> {
    let mut wrong = Vec::new();
    for chunk in questions.chunks(8) {
        let asks = chunk.iter().map(|q| async move {
            let (resource, subresource) = match q.resource.split_once('/') {
                // `leases.coordination.k8s.io/NAME` names an object; anything else a subresource.
                Some((kind, _name)) if kind.starts_with("leases") => (q.resource.clone(), None),
                Some((kind, sub)) => (kind.to_string(), Some(sub.to_string())),
                None => (q.resource.clone(), None),
            };
            let as_user = format!("--as={user}");
            let mut args = vec!["auth", "can-i", q.verb, resource.as_str(), "-n", &q.namespace];
            args.push(&as_user);
            let sub_flag;
            if let Some(sub) = &subresource {
                sub_flag = format!("--subresource={sub}");
                args.push(&sub_flag);
            }
            let (_, text) = run("kubectl", &args).await;
            let answer = text.trim().lines().last().unwrap_or_default().to_string();
            let expected = if q.allowed { "yes" } else { "no" };
            (answer != expected).then(|| {
                format!(
                    "can-i {} {} -n {}: {answer}, expected {expected}",
                    q.verb, q.resource, q.namespace
                )
            })
        });
        wrong.extend(futures::future::join_all(asks).await.into_iter().flatten());
    }
    wrong
}

/// The questions for an operator that watches `watched` (every namespace when `None`), with
/// its Lease `lease` in `release_ns`; `other` is a namespace it must not touch when confined.
fn questions(
    watched: &str,
    confined: bool,
    other: &str,
    release_ns: &str,
    lease: &str,
) -> Vec<Question> {
    let mut out = Vec::new();
    let used: BTreeSet<(&str, &str)> =
        USED.iter().flat_map(|(r, verbs)| verbs.iter().map(move |v| (*r, *v))).collect();
    for namespace in [watched, other] {
        let reach = namespace == watched || !confined;
        for (resource, _) in USED {
            for &verb in VERBS {
                out.push(Question {
                    verb,
                    resource: resource.to_string(),
                    namespace: namespace.to_string(),
                    allowed: reach && used.contains(&(*resource, verb)),
                });
            }
        }
        for resource in UNTOUCHED {
            for &verb in VERBS {
                out.push(Question {
                    verb,
                    resource: resource.to_string(),
                    namespace: namespace.to_string(),
                    allowed: false,
                });
            }
        }
    }
    // The Lease, only in the release namespace: read and written by its name only; created
    // under any name (RBAC cannot limit create by name: the name is not known when it is
    // authorized).
    for &verb in VERBS {
        out.push(Question {
            verb,
            resource: format!("leases.coordination.k8s.io/{lease}"),
            namespace: release_ns.to_string(),
            allowed: matches!(verb, "get" | "patch" | "create"),
        });
        out.push(Question {
            verb,
            resource: "leases.coordination.k8s.io/another-lease".to_string(),
            namespace: release_ns.to_string(),
            allowed: verb == "create",
        });
        out.push(Question {
            verb,
            resource: "leases.coordination.k8s.io".to_string(),
            namespace: release_ns.to_string(),
            allowed: verb == "create",
        });
        out.push(Question {
            verb,
            resource: "leases.coordination.k8s.io".to_string(),
            namespace: other.to_string(),
            allowed: false,
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn both_chart_variants_allow_exactly_what_the_operator_uses() {
    with_namespace_labels(RESTRICTED, async |_client: Client, release_ns: String| {
        with_namespace_labels(RESTRICTED, async |_client: Client, watched: String| {
            with_namespace_labels(RESTRICTED, async |_client: Client, other: String| {
                let cluster_wide = Release::install(&release_ns, &[]).await;
                let watch = format!("operator.watchNamespace={watched}");
                let confined = Release::install(&release_ns, &["--set", &watch]).await;
                for (variant, release, is_confined) in
                    [("cluster-wide", &cluster_wide, false), ("confined", &confined, true)]
                {
                    let asked =
                        questions(&watched, is_confined, &other, &release_ns, &release.account());
                    let count = asked.len();
                    let wrong = wrong_answers(&release.user(), asked).await;
                    assert!(
                        wrong.is_empty(),
                        "{variant}: {} wrong answers:\n{}",
                        wrong.len(),
                        wrong.join("\n")
                    );
                    eprintln!(
                        "{variant}: {count} impersonated questions answered as the code needs"
                    );
                }
            })
            .await
        })
        .await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_confined_variant_runs_the_operator_without_a_refusal() {
    with_namespace_labels(RESTRICTED, async |_client: Client, release_ns: String| {
        with_namespace_labels(RESTRICTED, async |client: Client, watched: String| {
            let watch = format!("operator.watchNamespace={watched}");
            let release = Release::install(&release_ns, &["--set", &watch]).await;
            let (ok, token) = run(
                "kubectl",
                &["create", "token", &release.account(), "-n", &release_ns, "--duration", "1h"],
            )
            .await;
            assert!(ok, "kubectl create token: {token}");
            let dir = std::env::temp_dir().join(unique_name("modelship-rbac"));
            std::fs::create_dir_all(&dir).unwrap();
            let kubeconfig = modelship_tests::accounts::token_kubeconfig(
                &dir.join("kubeconfig.yaml"),
                token.trim(),
            );
            let account = release.account();
            let operator = OperatorProcess::start_full(
                &watched,
                "rbac",
                &[
                    "--leader-elect=true",
                    "--lease-namespace",
                    &release_ns,
                    "--lease-name",
                    &account,
                ],
                &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
            );
            let strategy = json!({"type": "Canary", "canary": {"weight": 50}});
            apply(&client, &watched, model("m", "1", 2, strategy)).await;
            wait_phase(&client, &watched, "m", Phase::Healthy, T).await;
            patch_spec(&client, &watched, "m", json!({"model": {"version": "2"}})).await;
            wait_phase(&client, &watched, "m", Phase::Paused, T).await;
            patch_spec(&client, &watched, "m", json!({"strategy": {"canary": {"weight": 100}}}))
                .await;
            let md = wait_phase(&client, &watched, "m", Phase::Healthy, T).await;
            assert_eq!(md.status.unwrap().stable_version.as_deref(), Some("2"));
            drop(operator);
            wait_until(Duration::from_secs(5), "the audit log to show the run", async || {
                !audit::read_requests(&release.user()).is_empty()
            })
            .await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let requests = audit::read_requests(&release.user());
            let refused: Vec<String> = requests
                .iter()
                .filter(|r| r.code == 403)
                .map(|r| format!("{} {} {:?}", r.verb, r.resource, r.name))
                .collect();
            assert!(refused.is_empty(), "refused requests: {refused:#?}");
            let writes = requests.iter().filter(|r| r.is_write()).count();
            eprintln!(
                "confined operator: {} audited requests, {writes} writes, none refused",
                requests.len()
            );
            assert!(writes > 5, "the operator wrote ({writes} writes)");
        })
        .await
    })
    .await;
}
