//! The operator's RBAC: least privilege in the rendered rules, and the rules against the API
//! server's audit log of a real run in both directions.

use super::*;

/// (verb, API group, resource[/subresource]).
pub(crate) type Access = (String, String, String);

/// The operator's rules in rendered manifests, expanded into accesses, and the resourceNames
/// each access is limited to (empty: not limited).
pub(crate) fn operator_rules(objects: &[Value], account: &str) -> BTreeMap<Access, Vec<String>> {
    let bound: BTreeSet<(String, String)> = objects
        .iter()
        .filter(|o| matches!(kind(o), "RoleBinding" | "ClusterRoleBinding"))
        .filter(|b| b["subjects"].as_array().unwrap().iter().any(|s| s["name"] == account))
        .map(|b| {
            (
                b["roleRef"]["kind"].as_str().unwrap().into(),
                b["roleRef"]["name"].as_str().unwrap().into(),
            )
        })
        .collect();
    let mut rules = BTreeMap::new();
    for role in objects.iter().filter(|o| matches!(kind(o), "Role" | "ClusterRole")) {
        if !bound.contains(&(kind(role).to_string(), name(role).to_string())) {
            continue;
        }
        for rule in role["rules"].as_array().unwrap() {
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        let names = strings(&rule["resourceNames"]);
                        let previous = rules.insert((verb, group.clone(), resource.clone()), names);
                        assert!(previous.is_none(), "a verb is granted twice in {}", name(role));
                    }
                }
            }
        }
    }
    rules
}

#[test]
pub(crate) fn rbac_is_least_privilege_without_wildcards() {
    let readme = read(chart().join("README.md"));
    for (variant, args) in variants() {
        let objects = render(&args);
        for role in objects.iter().filter(|o| matches!(kind(o), "Role" | "ClusterRole")) {
            for rule in role["rules"].as_array().unwrap() {
                for field in ["apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"]
                {
                    assert!(
                        !strings(&rule[field]).iter().any(|v| v.contains('*')),
                        "{variant}/{}: wildcard in {field}",
                        name(role)
                    );
                }
                for resource in strings(&rule["resources"]) {
                    assert!(
                        !matches!(
                            resource.as_str(),
                            "pods" | "pods/exec" | "customresourcedefinitions"
                        ) || name(role).ends_with("-kube-state-metrics"),
                        "{variant}/{}: grants {resource}",
                        name(role)
                    );
                    // Secrets: only get, only the webhook and Prometheus Secrets, by name.
                    if resource == "secrets" {
                        assert_eq!(strings(&rule["verbs"]), ["get"], "{variant}: secrets verbs");
                        assert_eq!(
                            strings(&rule["resourceNames"]),
                            ["modelship-webhook", "modelship-prometheus"],
                            "{variant}: secrets by name"
                        );
                    }
                }
            }
        }
        let rules = operator_rules(&objects, "ms-modelship");
        // Leases: create is not limited by name (it cannot be); the rest is, to the one lease.
        for ((verb, group, resource), names) in &rules {
            if resource == "leases" {
                assert_eq!(group, "coordination.k8s.io");
                match verb.as_str() {
                    "create" => assert!(names.is_empty()),
                    "get" | "patch" => assert_eq!(names, &["ms-modelship".to_string()]),
                    other => panic!("{variant}: lease verb {other} is not used by the operator"),
                }
            } else if resource == "secrets" {
                assert_eq!(
                    (verb.as_str(), names.as_slice()),
                    (
                        "get",
                        &["modelship-webhook".to_string(), "modelship-prometheus".to_string()][..]
                    )
                );
                assert!(readme.contains(
                    "| `\"\"` | `secrets`, only `resourceNames: rbac.webhookSecretNames` and `rbac.prometheusSecretNames` | get |"
                ));
            } else {
                assert!(names.is_empty(), "{verb} {resource} limited by name");
                // The README's RBAC table lists the same verbs.
                let shown = if group.is_empty() { "\"\"" } else { group.as_str() };
                let row = readme
                    .lines()
                    .find(|l| l.contains(&format!("| `{shown}` | `{resource}` |")))
                    .unwrap_or_else(|| panic!("README has no RBAC row for {group} {resource}"));
                assert!(
                    row.contains(verb.as_str()),
                    "README row for {resource} lacks {verb}: {row}"
                );
            }
        }
        let granted: BTreeSet<String> =
            rules.keys().map(|(v, g, r)| format!("{v} {g}/{r}")).collect();
        assert_eq!(granted.len(), 32, "{variant}: {granted:#?}");
        let deployment = one(&objects, "Deployment");
        let args = strings(&deployment["spec"]["template"]["spec"]["containers"][0]["args"]);
        if variant == "namespaced" {
            // Confined: a Role in the watched namespace, no ClusterRole for the operator.
            assert!(args.contains(&"--namespace=ml".to_string()), "{args:?}");
            let role =
                of_kind(&objects, "Role").into_iter().find(|r| name(r) == "ms-modelship").unwrap();
            assert_eq!(role["metadata"]["namespace"], "ml");
            assert!(of_kind(&objects, "ClusterRole").is_empty());
            assert!(of_kind(&objects, "ClusterRoleBinding").is_empty());
        } else {
            assert!(!args.iter().any(|a| a.starts_with("--namespace")), "{args:?}");
        }
        assert!(args.contains(&"--leader-elect=true".to_string()));
        assert!(args.contains(&format!("--lease-namespace={NAMESPACE}")));
        assert!(args.contains(&"--lease-name=ms-modelship".to_string()));
    }
}

/// Accesses the chart grants the operator that a run may not exercise, with the reason. Empty:
/// the scenario below uses every rule.
pub(crate) const UNUSED_BY_DESIGN: &[(&str, &str, &str, &str)] = &[];

/// Runs the real operator with a token of the chart's ServiceAccount through two blue-green
/// rollouts with webhook notifications, a strategy change and the removal of the autoscaler
/// and the disruption budget, then compares the requests
/// the API server's audit log recorded for that account with the chart's rules.
#[tokio::test(flavor = "multi_thread")]
pub(crate) async fn operator_rbac_matches_the_audit_log() {
    let audit_log = PathBuf::from(
        std::env::var("MODELSHIP_AUDIT_LOG")
            .unwrap_or_else(|_| panic!("MODELSHIP_AUDIT_LOG is not set: {KUBE_HINT}")),
    );
    harness::with_namespace_labels(RESTRICTED, async |client: Client, chart_ns: String| {
        harness::with_namespace_labels(RESTRICTED, async |_: Client, models_ns: String| {
            let release = unique_name("rbac");
            let _guard = Release { name: release.clone(), namespace: chart_ns.clone() };
            // No operator pods: only the operator below acts as the ServiceAccount.
            run_ok(
                helm()
                    .args(["install", &release])
                    .arg(chart())
                    .args(["--namespace", &chart_ns, "--set", "replicaCount=0"]),
                "helm install",
            );
            let manifest =
                run_ok(helm().args(["get", "manifest", &release, "-n", &chart_ns]), "helm get manifest");
            // The ServiceAccount and the Lease are named after the release's full name.
            let account = format!("{release}-modelship");
            let lease = account.as_str();
            let granted = operator_rules(&yaml_documents(&manifest), &account);
            assert!(!granted.is_empty());

            let token = run_ok(
                kubectl().args(["create", "token", &account, "-n", &chart_ns, "--duration", "1h"]),
                "kubectl create token",
            );
            let dir = TempDir::new("rbac-operator");
            let kubeconfig = token_kubeconfig(&dir, token.trim());
            let log = dir.0.join("operator.log");
            let file = std::fs::File::create(&log).unwrap();
            let child = Command::new(operator_bin())
                .env("KUBECONFIG", &kubeconfig)
                .env_remove("POD_NAMESPACE")
                .env("RUST_LOG", "info,modelship_operator=debug,kube=warn")
                .args(["--namespace", &models_ns, "--lease-namespace", &chart_ns, "--lease-name", lease])
                .args(["--leader-elect=true", "--identity", "rbac-audit", "--resync-seconds", "30"])
                .arg(format!("--admin-listen=127.0.0.1:{}", free_port()))
                .stdout(Stdio::from(file.try_clone().unwrap()))
                .stderr(Stdio::from(file))
                .spawn()
                .expect("start the operator");
            let operator = OperatorAs(child, log);
            let started = std::time::Instant::now();

            // Blue-green, with an autoscaler and a preview Service.
            let api: Api<ModelDeployment> = Api::namespaced(client.clone(), &models_ns);
            let md_name = "rbac-probe";
            let strategy = json!({"type": "BlueGreen",
                                  "blueGreen": {"autoPromote": true, "previewService": true, "scaleDownDelaySeconds": 0}});
            let mut md = modelship_tests::models::model(md_name, "1", 2, strategy);
            md["metadata"]["namespace"] = json!(models_ns);
            md["spec"].as_object_mut().unwrap().remove("replicas");
            md["spec"]["autoscaling"] = json!({"minReplicas": 2, "maxReplicas": 4});
            // Notifications read the webhook Secret; nothing listens at its URL on this
            // machine, so they are retried and given up, which the audit does not mind.
            let hook = json!({"apiVersion": "v1", "kind": "Secret",
                              "metadata": {"name": "modelship-webhook", "namespace": models_ns},
                              "stringData": {"url": "http://127.0.0.1:9/hook"}});
            run_with_input(kubectl().args(["apply", "-f", "-"]), &hook.to_string(), "kubectl apply secret");
            md["spec"]["notifications"] = json!({"webhook": {"secretName": "modelship-webhook"}});
            run_with_input(kubectl().args(["apply", "-f", "-"]), &md.to_string(), "kubectl apply");
            let patch = |body: Value| {
                let api = api.clone();
                async move {
                    api.patch(md_name, &PatchParams::default(), &Patch::Merge(&body)).await.expect("patch")
                }
            };
            wait_for_version(&api, md_name, "1").await;
            // Two rollouts: the second repeats the first's events, which the recorder patches.
            patch(json!({"spec": {"model": {"version": "2"}}})).await;
            wait_for_version(&api, md_name, "2").await;
            patch(json!({"spec": {"model": {"version": "3"}}})).await;
            wait_for_version(&api, md_name, "3").await;
            let selector = format!("modelship.io/name={md_name}");
            assert_eq!(names_of("hpa", &models_ns, &selector).await.len(), 1);
            // Strategy change and no autoscaler: the colors, the preview Service and the
            // autoscaler are deleted.
            assert_eq!(names_of("pdb", &models_ns, &selector).await.len(), 1);
            patch(json!({"spec": {"autoscaling": null, "disruptionBudget": {"enabled": false},
                                  "strategy": {"type": "RollingUpdate", "blueGreen": null}}}))
                .await;
            wait_until(Duration::from_secs(90), "one Deployment, one Service, no autoscaler, no budget", async || {
                let deployments = names_of("deployments", &models_ns, &selector).await;
                let services = names_of("services", &models_ns, &selector).await;
                let hpas = names_of("hpa", &models_ns, &selector).await;
                let pdbs = names_of("pdb", &models_ns, &selector).await;
                let done = deployments.len() == 1
                    && !deployments.iter().any(|d| d.ends_with("-blue") || d.ends_with("-green"))
                    && services == BTreeSet::from([md_name.to_string()])
                    && hpas.is_empty()
                    && pdbs.is_empty();
                if done { Ok(()) } else { Err(format!("{deployments:?} {services:?} {hpas:?} {pdbs:?}")) }
            })
            .await;
            wait_for_version(&api, md_name, "3").await;
            let md = api.get(md_name).await.unwrap();
            assert!(
                md.status.as_ref().unwrap().conditions.iter().all(|c| c.reason != "ApplyFailed"),
                "{:?}",
                md.status
            );
            let elapsed = started.elapsed();
            let log_text = read(&operator.1);
            drop(operator);
            tokio::time::sleep(Duration::from_secs(1)).await;

            let user = format!("system:serviceaccount:{chart_ns}:{account}");
            let audit = audit_accesses(&audit_log, &user);
            assert!(audit.requests > 0, "no audited request from {user} in {}", audit_log.display());
            assert!(audit.refused.is_empty(), "refused requests: {:#?}\noperator log:\n{log_text}", audit.refused);
            for name in &audit.lease_names {
                assert_eq!(name, lease, "the operator touched another Lease");
            }
            let granted_set: BTreeSet<Access> = granted.keys().cloned().collect();
            let extras: BTreeSet<Access> = UNUSED_BY_DESIGN
                .iter()
                .map(|(v, g, r, _why)| (v.to_string(), g.to_string(), r.to_string()))
                .collect();
            let not_granted: Vec<&Access> = audit.used.keys().filter(|a| !granted_set.contains(*a)).collect();
            assert!(not_granted.is_empty(), "used but not granted: {not_granted:?}");
            let unused: Vec<&Access> =
                granted_set.iter().filter(|a| !audit.used.contains_key(*a) && !extras.contains(*a)).collect();
            assert!(unused.is_empty(), "granted but never used: {unused:?}");
            eprintln!(
                "operator as {user}: {} audited requests in {elapsed:.1?}, {} rules granted, all used:",
                audit.requests,
                granted_set.len()
            );
            for ((verb, group, resource), count) in &audit.used {
                eprintln!("  {count:>5}  {verb:<7} {group}/{resource}");
            }
            run_ok(helm().args(["uninstall", &release, "-n", &chart_ns, "--wait"]), "helm uninstall");
        })
        .await;
    })
    .await;
}

pub(crate) struct Audit {
    /// Accesses used, with how many requests used each.
    used: BTreeMap<Access, usize>,
    /// Requests answered 403.
    refused: Vec<String>,
    requests: usize,
    lease_names: BTreeSet<String>,
}

/// The accesses `user` made, from the API server's audit log. A server-side apply (a patch)
/// answered 201 created its object, which the API server authorized as create too.
pub(crate) fn audit_accesses(log: &Path, user: &str) -> Audit {
    let mut audit = Audit {
        used: BTreeMap::new(),
        refused: Vec::new(),
        requests: 0,
        lease_names: BTreeSet::new(),
    };
    let requests = audit::requests(&read(log), user).into_iter().filter(|r| r.user == user);
    for audit::Request { verb, group, resource, name, code, .. } in requests {
        audit.requests += 1;
        if code == 403 {
            audit.refused.push(format!("{verb} {group}/{resource} {}", name.unwrap_or_default()));
            continue;
        }
        if resource == "leases"
            && let Some(name) = name
        {
            audit.lease_names.insert(name);
        }
        if verb == "patch" && code == 201 {
            *audit.used.entry(("create".into(), group.clone(), resource.clone())).or_default() += 1;
        }
        *audit.used.entry((verb, group, resource)).or_default() += 1;
    }
    audit
}

#[test]
pub(crate) fn helpers_read_the_audit_log_and_metric_names() {
    let dir = TempDir::new("audit-parse");
    let log = dir.write(
        "audit.log",
        concat!(
            r#"{"auditID":"1","stage":"ResponseComplete","verb":"patch","user":{"username":"u"},"objectRef":{"resource":"deployments","apiGroup":"apps","name":"a"},"requestReceivedTimestamp":"2026-01-01T00:00:00Z","responseStatus":{"code":201}}"#,
            "\n",
            r#"{"auditID":"2","stage":"ResponseComplete","verb":"patch","user":{"username":"u"},"objectRef":{"resource":"modeldeployments","subresource":"status","apiGroup":"modelship.io"},"requestReceivedTimestamp":"2026-01-01T00:00:00Z","responseStatus":{"code":200}}"#,
            "\n",
            r#"{"auditID":"5","stage":"ResponseStarted","verb":"watch","user":{"username":"u"},"objectRef":{"resource":"services","apiVersion":"v1"},"requestReceivedTimestamp":"2026-01-01T00:00:00Z","responseStatus":{"code":200}}"#,
            "\n",
            r#"{"auditID":"5","stage":"ResponseComplete","verb":"watch","user":{"username":"u"},"objectRef":{"resource":"services","apiVersion":"v1"},"requestReceivedTimestamp":"2026-01-01T00:00:00Z","responseStatus":{"code":200}}"#,
            "\n",
            r#"{"auditID":"3","stage":"ResponseComplete","verb":"get","user":{"username":"u"},"objectRef":{"resource":"secrets","name":"s"},"requestReceivedTimestamp":"2026-01-01T00:00:00Z","responseStatus":{"code":403}}"#,
            "\n",
            r#"{"auditID":"4","stage":"ResponseComplete","verb":"get","user":{"username":"other"},"objectRef":{"resource":"pods"},"requestReceivedTimestamp":"2026-01-01T00:00:00Z","responseStatus":{"code":200}}"#,
            "\n"
        ),
    );
    let audit = audit_accesses(&log, "u");
    let used: Vec<String> = audit.used.keys().map(|(v, g, r)| format!("{v} {g}/{r}")).collect();
    assert_eq!(
        used,
        [
            "create apps/deployments",
            "patch apps/deployments",
            "patch modelship.io/modeldeployments/status",
            "watch /services"
        ]
    );
    assert_eq!(audit.used[&("watch".into(), "".into(), "services".into())], 1);
    assert_eq!(audit.refused, ["get /secrets s"]);
    assert_eq!(audit.requests, 4);
    assert_eq!(
        metric_names(
            "sum by (le) (rate(ml_request_duration_seconds_bucket{model=~\"x\"}[5m])) / modelship_operator_leader"
        ),
        BTreeSet::from([
            "ml_request_duration_seconds_bucket".to_string(),
            "modelship_operator_leader".to_string()
        ])
    );
}
