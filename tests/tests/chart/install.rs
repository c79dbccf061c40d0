//! On the local cluster: install, upgrade and uninstall with the chart's defaults.

use super::*;

/// Objects of a rendered release: (kind, namespace, name).
pub(crate) fn release_objects(manifest: &str, namespace: &str) -> Vec<(String, String, String)> {
    yaml_documents(manifest)
        .iter()
        .map(|o| {
            let ns = o["metadata"]["namespace"].as_str().unwrap_or(namespace).to_string();
            (kind(o).to_string(), ns, name(o).to_string())
        })
        .collect()
}

/// Uninstalls a release when dropped, so a failing test leaves no cluster-scoped objects.
pub(crate) struct Release {
    pub(crate) name: String,
    pub(crate) namespace: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = run(helm().args([
            "uninstall",
            &self.name,
            "-n",
            &self.namespace,
            "--ignore-not-found",
        ]));
    }
}

pub(crate) fn exists(kind: &str, namespace: &str, name: &str) -> bool {
    let cluster_scoped = matches!(kind, "ClusterRole" | "ClusterRoleBinding");
    let mut command = kubectl();
    command.args(["get", kind, name, "--ignore-not-found", "-o", "name"]);
    if !cluster_scoped {
        command.args(["-n", namespace]);
    }
    !run_ok(&mut command, "kubectl get").trim().is_empty()
}

#[tokio::test(flavor = "multi_thread")]
pub(crate) async fn chart_installs_into_a_restricted_namespace_upgrades_and_uninstalls() {
    harness::with_namespace_labels(RESTRICTED, async |client: Client, namespace: String| {
        let release = unique_name("chart");
        let _guard = Release { name: release.clone(), namespace: namespace.clone() };
        let ksm_account = format!("serviceAccountName={release}-ksm");
        // Everything that needs no Prometheus Operator CRDs.
        let install = run_ok(
            helm()
                .args(["install", &release])
                .arg(chart())
                .args(["--namespace", &namespace, "--wait", "--timeout", "120s"])
                // Its operator pods watch this namespace only, so they leave the models of
                // tests running beside this one alone.
                .args(["--set", &format!("operator.watchNamespace={namespace}")])
                .args(["--set", "dashboard.enabled=true"])
                .args(["--set", "kubeStateMetrics.customResourceState.enabled=true"])
                .args(["--set", "kubeStateMetrics.rbac.create=true"])
                .args(["--set", &format!("kubeStateMetrics.rbac.{ksm_account}")])
                .args(["--set", "networkPolicy.enabled=true"]),
            "helm install",
        );
        assert!(install.contains("STATUS: deployed"), "{install}");
        let fullname = format!("{release}-modelship");
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
        let ready = |d: &Deployment| d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
        let deployment = deployments.get(&fullname).await.expect("operator Deployment");
        assert_eq!(ready(&deployment), 2, "{:?}", deployment.status);

        // The admission plugin let the pods in, and the pods as stored pass the profile.
        let pods: Value = serde_json::from_str(&run_ok(
            kubectl()
                .args(["get", "pods", "-n", &namespace, "-o", "json", "-l"])
                .arg(format!("app.kubernetes.io/instance={release}")),
            "kubectl get pods",
        ))
        .unwrap();
        let pods = pods["items"].as_array().unwrap();
        assert_eq!(pods.len(), 2);
        for pod in pods {
            let found = restricted_violations(&pod["spec"]);
            assert!(found.is_empty(), "{}: {found:?}", name(pod));
        }
        let refused = run_ok(
            kubectl().args([
                "get",
                "events",
                "-n",
                &namespace,
                "--field-selector",
                "reason=FailedCreate",
                "-o",
                "name",
            ]),
            "kubectl get events",
        );
        assert!(refused.trim().is_empty(), "pods were refused: {refused}");

        // The pods run the operator image on the node; one of them holds the Lease, through
        // the in-cluster API (the `kubernetes` Service and the pod's ServiceAccount token).
        let pod_names: Vec<String> = pods.iter().map(|p| name(p).to_string()).collect();
        for pod in pods {
            let status = &pod["status"]["containerStatuses"][0];
            assert_eq!(status["image"], format!("ghcr.io/modelship/operator:{}", app_version()));
            assert!(status["state"]["running"].is_object(), "{}: {status}", name(pod));
        }
        let holder =
            wait_until(Duration::from_secs(60), "an operator pod to hold the Lease", async || {
                let lease = run(
                    kubectl().args(["get", "lease", &fullname, "-n", &namespace, "-o", "json"])
                )
                .1;
                let holder = serde_json::from_str::<Value>(&lease)
                    .ok()
                    .and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
                    .unwrap_or_default();
                pod_names.iter().any(|p| holder.starts_with(p.as_str())).then_some(holder)
            })
            .await;
        for pod in &pod_names {
            let logs = run_ok(kubectl().args(["logs", pod, "-n", &namespace]), "kubectl logs");
            assert!(
                logs.lines().any(|l| l.contains("\"level\"")),
                "{pod} logs no JSON lines:\n{logs}"
            );
        }
        eprintln!("operator pods {pod_names:?}, Lease held by {holder}");

        // The in-cluster operator rolls a model out: its serving pod runs the serving image.
        let models: Api<ModelDeployment> = Api::namespaced(client.clone(), &namespace);
        let md =
            modelship_tests::models::model("in-cluster", "1", 1, json!({"type": "RollingUpdate"}));
        modelship_tests::models::apply(&client, &namespace, md).await;
        wait_for_version(&models, "in-cluster", "1").await;
        let service = harness::routed_service_addr(&client, &namespace, "in-cluster").await;
        let features: Vec<f64> = (0..20).map(|i| f64::from(i) / 10.0).collect();
        let answer = harness::TestHttp::new()
            .request(
                service,
                axum::http::Method::POST,
                "/predict",
                Some(json!({"features": features}).to_string().into()),
            )
            .await
            .expect("predict through the Service");
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(answer.json()["model_version"], "1");
        let logs = run_ok(
            kubectl().args(["logs", "-n", &namespace, "-l", "modelship.io/name=in-cluster"]),
            "kubectl logs of the serving pod",
        );
        assert!(logs.contains("in-cluster"), "the serving log does not name its model:\n{logs}");
        models.delete("in-cluster", &Default::default()).await.expect("delete the model");

        let manifest = run_ok(
            helm().args(["get", "manifest", &release, "-n", &namespace]),
            "helm get manifest",
        );
        let objects = release_objects(&manifest, &namespace);
        assert!(objects.len() >= 12, "{objects:?}");

        // Upgrade: change values; the Deployment rolls to the new settings.
        run_ok(
            helm()
                .args(["upgrade", &release])
                .arg(chart())
                .args(["--namespace", &namespace, "--reuse-values", "--wait", "--timeout", "120s"])
                .args(["--set", "replicaCount=3", "--set", "operator.concurrency=8"]),
            "helm upgrade",
        );
        let deployment = deployments.get(&fullname).await.unwrap();
        assert_eq!(ready(&deployment), 3, "{:?}", deployment.status);
        let args = deployment.spec.template.spec.unwrap().containers[0].args.clone().unwrap();
        assert!(args.contains(&"--concurrency=8".to_string()), "{args:?}");
        let history = run_ok(
            helm().args(["history", &release, "-n", &namespace, "-o", "json"]),
            "helm history",
        );
        let history: Value = serde_json::from_str(&history).unwrap();
        assert_eq!(history.as_array().unwrap().last().unwrap()["revision"], 2);
        assert_eq!(history.as_array().unwrap().last().unwrap()["status"], "deployed");

        // Uninstall: every object of the release goes, the CRD stays by design.
        run_ok(helm().args(["uninstall", &release, "-n", &namespace, "--wait"]), "helm uninstall");
        for (kind, ns, name) in &objects {
            assert!(!exists(kind, ns, name), "{kind} {ns}/{name} survived helm uninstall");
        }
        let selector = format!("app.kubernetes.io/instance={release}");
        wait_until(Duration::from_secs(60), "the release's pods to go", async || {
            run_ok(
                kubectl().args([
                    "get",
                    "pods,replicasets",
                    "-n",
                    &namespace,
                    "-o",
                    "name",
                    "-l",
                    &selector,
                ]),
                "kubectl get",
            )
            .trim()
            .is_empty()
        })
        .await;
        let cluster = run_ok(
            kubectl().args([
                "get",
                "clusterroles,clusterrolebindings",
                "-o",
                "name",
                "-l",
                &selector,
            ]),
            "kubectl get",
        );
        assert!(cluster.trim().is_empty(), "cluster-scoped leftovers: {cluster}");
        assert!(exists("CustomResourceDefinition", "", "modeldeployments.modelship.io"));
    })
    .await;
}

/// A kubeconfig for the local API server that authenticates with `token`.
pub(crate) fn token_kubeconfig(dir: &TempDir, token: &str) -> PathBuf {
    let config: Value = serde_json::from_str(&run_ok(
        kubectl().args(["config", "view", "--minify", "--raw", "-o", "json"]),
        "kubectl config view",
    ))
    .unwrap();
    let cluster = &config["clusters"][0]["cluster"];
    let mut cluster_entry = json!({"server": cluster["server"]});
    for key in ["certificate-authority", "certificate-authority-data"] {
        if !cluster[key].is_null() {
            cluster_entry[key] = cluster[key].clone();
        }
    }
    let kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster_entry}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "local", "user": "operator"}}],
        "current-context": "operator",
    });
    dir.write("kubeconfig.json", &kubeconfig.to_string())
}

/// The operator binary, authenticated as the chart's ServiceAccount.
pub(crate) struct OperatorAs(pub(crate) std::process::Child, pub(crate) PathBuf);

impl Drop for OperatorAs {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) async fn wait_for_version(api: &Api<ModelDeployment>, name: &str, version: &str) {
    wait_until(
        Duration::from_secs(90),
        &format!("{name} to serve version {version}"),
        async || {
            let md = api.get(name).await.map_err(|e| e.to_string())?;
            let status = md.status.clone().unwrap_or_default();
            let done = status.observed_generation == md.metadata.generation
                && status.stable_version.as_deref() == Some(version)
                && status.candidate_version.is_none()
                && status.phase.map(|p| format!("{p:?}")).as_deref() == Some("Healthy");
            if done { Ok(()) } else { Err(format!("status {status:?}")) }
        },
    )
    .await;
}

pub(crate) async fn names_of(kind: &str, namespace: &str, selector: &str) -> BTreeSet<String> {
    run_ok(
        kubectl().args(["get", kind, "-n", namespace, "-o", "name", "-l", selector]),
        "kubectl get",
    )
    .lines()
    .map(|l| l.rsplit('/').next().unwrap().to_string())
    .collect()
}
