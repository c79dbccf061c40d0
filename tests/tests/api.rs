//! The ModelDeployment API on the real kube-apiserver: the generated CRD installs, the
//! examples are accepted, invalid objects are refused with messages that name the field, the
//! printer columns and the `/scale` subresource work, and Pod Security `restricted` holds for
//! the pods the operator creates.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use modelship_crds::{ModelDeployment, Phase};
use modelship_tests::harness::{wait_until, with_namespace, with_namespace_labels};
use modelship_tests::models::{self, apply, model, wait_phase};
use modelship_tests::operator::OperatorProcess;
use serde_json::json;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// Run kubectl; returns (success, stdout + stderr).
async fn kubectl(args: &[&str]) -> (bool, String) {
    let output =
        tokio::process::Command::new("kubectl").args(args).output().await.expect("run kubectl");
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_generated_crd_installs_and_is_established() {
    let client = modelship_tests::harness::client().await;
    let path = repo().join(modelship_crds::CRD_PATH);
    let (ok, text) = kubectl(&["apply", "--server-side", "-f", path.to_str().unwrap()]).await;
    assert!(ok, "{text}");
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    let crd = wait_until(Duration::from_secs(30), "the CRD to be established", async || {
        let crd = crds.get("modeldeployments.modelship.io").await.ok()?;
        let established = crd
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        established.then_some(crd)
    })
    .await;
    assert_eq!(crd.spec.names.short_names, Some(vec!["md".to_string()]));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_examples_are_accepted() {
    with_namespace(async |client, ns| {
        let api: Api<ModelDeployment> = Api::namespaced(client.clone(), &ns);
        for path in yaml_files("examples") {
            let mut md: ModelDeployment =
                serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            md.metadata.namespace = Some(ns.clone());
            api.create(&PostParams::default(), &md)
                .await
                .unwrap_or_else(|e| panic!("{} was refused: {e}", path.display()));
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_objects_are_refused_naming_the_field() {
    with_namespace(async |_client, ns| {
        let files = yaml_files("crds/tests/invalid");
        assert!(files.len() >= 10, "at least ten invalid fixtures");
        for path in files {
            let text = std::fs::read_to_string(&path).unwrap();
            let expect = text.lines().next().unwrap().trim_start_matches("# expect: ");
            let (ok, output) = kubectl(&["apply", "-n", &ns, "-f", path.to_str().unwrap()]).await;
            assert!(!ok, "{} was accepted", path.display());
            assert!(
                output.contains(expect),
                "{}: the refusal does not name {expect:?}:\n{output}",
                path.display()
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn strategy_type_cannot_change_during_a_rollout() {
    with_namespace(async |client, ns| {
        apply(
            &client,
            &ns,
            model("m", "2", 1, json!({"type": "Canary", "canary": {"weight": 10}})),
        )
        .await;
        models::models(&client, &ns)
            .patch_status(
                "m",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"stableVersion": "1", "candidateVersion": "2"}})),
            )
            .await
            .expect("write status");
        let (ok, output) = kubectl(&[
            "patch",
            "md",
            "m",
            "-n",
            &ns,
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"strategy":{"type":"RollingUpdate","canary":null}}}"#,
        ])
        .await;
        assert!(!ok, "{output}");
        assert!(
            output.contains("spec.strategy.type cannot change while a rollout is in progress"),
            "{output}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_get_md_shows_the_columns() {
    with_namespace(async |client, ns| {
        let _operator = OperatorProcess::start(&ns);
        apply(
            &client,
            &ns,
            model("fraud", "1", 2, json!({"type": "Canary", "canary": {"weight": 50}})),
        )
        .await;
        wait_phase(&client, &ns, "fraud", Phase::Healthy, Duration::from_secs(60)).await;
        let (ok, output) = kubectl(&["get", "md", "-n", &ns]).await;
        assert!(ok, "{output}");
        let mut lines = output.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            [
                "NAME",
                "VERSION",
                "STABLE",
                "PHASE",
                "WEIGHT",
                "EFFECTIVE",
                "REPLICAS",
                "READY",
                "AGE"
            ]
        );
        let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(&row[..8], ["fraud", "1", "1", "Healthy", "0", "0", "2", "2"]);
        let (_, wide) =
            kubectl(&["get", "modeldeployments.modelship.io", "-n", &ns, "-o", "wide"]).await;
        assert!(wide.lines().next().unwrap().contains("STRATEGY"), "{wide}");
        let (_, category) = kubectl(&["get", "modelship", "-n", &ns]).await;
        assert!(category.contains("fraud"), "the modelship category lists it: {category}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scale_subresource_reads_and_writes_replicas() {
    with_namespace(async |client, ns| {
        let _operator = OperatorProcess::start(&ns);
        apply(&client, &ns, model("m", "1", 2, json!({"type": "RollingUpdate"}))).await;
        wait_phase(&client, &ns, "m", Phase::Healthy, Duration::from_secs(60)).await;
        let (ok, output) = kubectl(&["scale", "-n", &ns, "md/m", "--replicas=5"]).await;
        assert!(ok, "{output}");
        let api = models::models(&client, &ns);
        let scale =
            wait_until(Duration::from_secs(60), "status.replicas 5 through /scale", async || {
                let scale = api.get_scale("m").await.ok()?;
                (scale.status.as_ref()?.replicas == 5).then_some(scale)
            })
            .await;
        assert_eq!(scale.spec.and_then(|s| s.replicas), Some(5));
        assert_eq!(scale.status.unwrap().selector.as_deref(), Some("modelship.io/name=m"));
        assert_eq!(models::track(&client, &ns, "m", "stable").await.map(|t| t.1), Some(5));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn restricted_namespaces_refuse_privileged_pods_and_accept_the_operators() {
    let labels = [("pod-security.kubernetes.io/enforce", "restricted")];
    with_namespace_labels(&labels, async |client, ns| {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let plain: Pod = serde_json::from_value(json!({
            "metadata": {"name": "plain"},
            "spec": {"containers": [{"name": "c", "image": "example.com/app:1"}]}
        }))
        .unwrap();
        let error = pods.create(&PostParams::default(), &plain).await.unwrap_err().to_string();
        assert!(error.contains("violates PodSecurity \"restricted"), "{error}");
        for field in ["allowPrivilegeEscalation", "runAsNonRoot", "seccompProfile"] {
            assert!(error.contains(field), "the refusal names {field}: {error}");
        }

        let _operator = OperatorProcess::start(&ns);
        apply(&client, &ns, model("m", "1", 2, json!({"type": "BlueGreen"}))).await;
        wait_phase(&client, &ns, "m", Phase::Healthy, Duration::from_secs(60)).await;
        assert_eq!(models::ready_pods(&client, &ns, "m").await.len(), 2, "serving pods admitted");
    })
    .await;
}
