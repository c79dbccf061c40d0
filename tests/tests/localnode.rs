//! localnode against the real control plane: the Deployment controller, the scheduler and the
//! EndpointSlice controller act on what localnode reports, and requests go through its Service
//! proxy to real echo-server processes.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use bytes::Bytes;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use modelship_tests::harness::{
    TestHttp, create, hold_for, http_via_proxy, require_run_image, unique_name, wait_until,
    with_namespace,
};
use serde_json::{Value, json};

/// The image pattern that `tests/run.sh` maps to the echo-server binary.
const ECHO: &str = "modelship/echo";
const ECHO_IMAGE: &str = "example.invalid/modelship/echo:test";
const FAKE_IMAGE: &str = "example.invalid/fake/app:1";
const SHORT: Duration = Duration::from_secs(30);
const LONG: Duration = Duration::from_secs(60);

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref())
}

async fn pods(client: &Client, namespace: &str, selector: &str) -> kube::Result<Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    Ok(api.list(&ListParams::default().labels(selector)).await?.items)
}

/// One endpoint of a Service as the EndpointSlice controller published it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SliceEndpoint {
    pod: String,
    ready: bool,
    serving: bool,
    terminating: bool,
}

async fn slice_endpoints(
    client: &Client,
    namespace: &str,
    service: &str,
) -> kube::Result<Vec<SliceEndpoint>> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let selector = format!("kubernetes.io/service-name={service}");
    let slices = api.list(&ListParams::default().labels(&selector)).await?;
    Ok(slices
        .items
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .map(|e| {
            let c = e.conditions.clone().unwrap_or_default();
            SliceEndpoint {
                pod: e.target_ref.as_ref().and_then(|r| r.name.clone()).unwrap_or_default(),
                ready: c.ready.unwrap_or(false),
                serving: c.serving.unwrap_or(false),
                terminating: c.terminating.unwrap_or(false),
            }
        })
        .collect())
}

async fn ready_endpoint_pods(
    client: &Client,
    namespace: &str,
    service: &str,
) -> kube::Result<BTreeSet<String>> {
    Ok(slice_endpoints(client, namespace, service)
        .await?
        .into_iter()
        .filter(|e| e.ready)
        .map(|e| e.pod)
        .collect())
}

fn names(pods: &[Pod]) -> BTreeSet<String> {
    pods.iter().map(|p| p.name_any()).collect()
}

fn service(name: &str, selector: Value) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": {"selector": selector, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    })
}

fn deployment(name: &str, replicas: i32, container: Value, pod_spec_extra: Value) -> Value {
    let mut spec = json!({"containers": [container]});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), pod_spec_extra.as_object()) {
        spec.extend(extra.clone());
    }
    json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        }
    })
}

/// An echo-server container with a real readiness probe on `/ready`.
fn echo_container(env: &[(&str, &str)]) -> Value {
    let env: Vec<Value> =
        env.iter().map(|(name, value)| json!({"name": name, "value": value})).collect();
    json!({
        "name": "echo",
        "image": ECHO_IMAGE,
        "env": env,
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1,
                           "failureThreshold": 1},
    })
}

/// A directory where echo-server records the SIGTERMs it receives.
fn term_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name("echo-term"));
    std::fs::create_dir_all(&dir).expect("create the SIGTERM directory");
    dir
}

fn terminated_pods(dir: &PathBuf) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.strip_suffix(".term").map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Sends `count` requests to `service`; Ok if every one was answered 200 by `pod`. The proxy
/// follows EndpointSlices a moment after the API shows them, so callers poll this.
async fn only_from(
    http: &TestHttp,
    service: &str,
    namespace: &str,
    pod: &str,
    count: usize,
) -> Result<(), String> {
    for _ in 0..count {
        let response = http.get(service, namespace, "/only").await.map_err(|e| e.to_string())?;
        if response.status != StatusCode::OK || response.pod().as_deref() != Some(pod) {
            return Err(format!(
                "{} from {:?}: {}",
                response.status,
                response.pod(),
                response.text()
            ));
        }
    }
    Ok(())
}

#[tokio::test]
async fn fake_deployment_becomes_available_with_ready_endpoints() {
    with_namespace(async |client: Client, ns: String| {
        create::<Service>(&client, &ns, service("web", json!({"app": "web"}))).await;
        let container = json!({"name": "app", "image": FAKE_IMAGE});
        create::<Deployment>(&client, &ns, deployment("web", 3, container, json!({}))).await;

        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        wait_until(SHORT, "deployment web 3/3 available", async || {
            let d = deployments.get("web").await.ok()?;
            let available = d.status?.available_replicas.unwrap_or(0);
            (available == 3).then_some(())
        })
        .await;

        let web = pods(&client, &ns, "app=web").await.unwrap();
        assert_eq!(web.len(), 3);
        for pod in &web {
            assert_eq!(phase(pod), Some("Running"));
            assert!(is_ready(pod), "{} is not Ready", pod.name_any());
            let ip: std::net::Ipv4Addr = pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.as_deref())
                .expect("pod IP")
                .parse()
                .unwrap();
            let [a, b, c, _] = ip.octets();
            assert!(
                [a, b, c] == [198, 51, 100] || [a, b, c] == [203, 0, 113],
                "fake pod IP {ip} outside the documentation ranges"
            );
        }
        let expected = names(&web);
        wait_until(SHORT, "3 ready endpoints for web", async || {
            let ready = ready_endpoint_pods(&client, &ns, "web").await.ok()?;
            (ready == expected).then_some(())
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn fake_pod_annotations_steer_readiness() {
    with_namespace(async |client: Client, ns: String| {
        create::<Service>(&client, &ns, service("steer", json!({"app": "steer"}))).await;
        let pod = |name: &str, annotations: Value| {
            json!({
                "metadata": {"name": name, "labels": {"app": "steer"}, "annotations": annotations},
                "spec": {"containers": [{"name": "app", "image": FAKE_IMAGE}]}
            })
        };
        create::<Pod>(&client, &ns, pod("plain", json!({}))).await;
        create::<Pod>(&client, &ns, pod("never", json!({"localnode.modelship.io/ready": "false"})))
            .await;
        create::<Pod>(
            &client,
            &ns,
            pod("slow", json!({"localnode.modelship.io/ready-delay": "2s"})),
        )
        .await;

        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        wait_until(SHORT, "plain and slow ready in the endpoints", async || {
            let ready = ready_endpoint_pods(&client, &ns, "steer").await.ok()?;
            (ready == BTreeSet::from(["plain".to_string(), "slow".to_string()])).then_some(())
        })
        .await;

        // The delayed pod turned Ready at least ~2 s after it was created.
        let slow = api.get("slow").await.unwrap();
        let ready_at = slow
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten())
            .find(|c| c.type_ == "Ready")
            .and_then(|c| c.last_transition_time.clone())
            .expect("Ready transition time");
        let created = slow.creation_timestamp().expect("creation time");
        let waited = ready_at.0.as_second() - created.0.as_second();
        assert!(waited >= 1, "slow pod was Ready {waited}s after creation");

        // The pod annotated not-ready runs, is listed as a not-ready endpoint, and stays so.
        wait_until(SHORT, "never to run", async || {
            let pod = api.get("never").await.ok()?;
            (phase(&pod) == Some("Running")).then_some(())
        })
        .await;
        hold_for(
            Duration::from_secs(2),
            "never to stay unready",
            async || -> Result<(), String> {
                let pod = api.get("never").await.map_err(|e| e.to_string())?;
                if is_ready(&pod) {
                    return Err("pod never is Ready".into());
                }
                let endpoints =
                    slice_endpoints(&client, &ns, "steer").await.map_err(|e| e.to_string())?;
                match endpoints.iter().find(|e| e.pod == "never") {
                    Some(e) if e.ready => Err("never is a ready endpoint".into()),
                    _ => Ok(()),
                }
            },
        )
        .await;
        let endpoints = slice_endpoints(&client, &ns, "steer").await.unwrap();
        let never = endpoints.iter().find(|e| e.pod == "never");
        assert!(
            never.is_some_and(|e| !e.ready),
            "never should be a not-ready endpoint: {endpoints:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn process_pods_turn_ready_only_when_their_probe_passes() {
    require_run_image(ECHO).await;
    with_namespace(async |client: Client, ns: String| {
        create::<Service>(&client, &ns, service("probe", json!({"app": "probe"}))).await;
        let container = echo_container(&[("ECHO_READY_DELAY_MS", "1500")]);
        create::<Deployment>(&client, &ns, deployment("probe", 2, container, json!({}))).await;

        let ready = wait_until(LONG, "2 ready probe pods", async || {
            let pods = pods(&client, &ns, "app=probe").await.ok()?;
            (pods.len() == 2 && pods.iter().all(is_ready)).then_some(pods)
        })
        .await;

        // Ready came from the probe: at least ~1.5 s after the process started.
        for pod in &ready {
            let status = pod.status.as_ref().unwrap();
            let started = status.container_statuses.as_ref().unwrap()[0]
                .state
                .as_ref()
                .and_then(|s| s.running.as_ref())
                .and_then(|r| r.started_at.clone())
                .expect("running container");
            let ready_at = status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "Ready")
                .and_then(|c| c.last_transition_time.clone())
                .unwrap();
            let waited = ready_at.0.as_second() - started.0.as_second();
            assert!(waited >= 1, "{} Ready {waited}s after start", pod.name_any());
            let ip = status.pod_ip.as_deref().unwrap();
            assert!(ip.starts_with("192.0.2."), "process pod IP {ip}");
        }
        assert_ne!(
            ready[0].status.as_ref().unwrap().pod_ip,
            ready[1].status.as_ref().unwrap().pod_ip
        );

        // The server says it is not ready: the pod leaves the ready endpoints and the proxy
        // stops sending it traffic; then it comes back.
        let http = TestHttp::new();
        let victim = ready[0].name_any();
        let other = ready[1].name_any();
        let flip = async |value: &'static str| {
            let response = http
                .pod(Method::POST, &ns, &victim, "/control/ready", Some(Bytes::from(value)))
                .await
                .expect("agent reaches the pod");
            assert_eq!(response.status, StatusCode::NO_CONTENT, "{}", response.text());
        };
        flip("false").await;
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        wait_until(SHORT, "the flipped pod to turn unready", async || {
            let pod = api.get(&victim).await.ok()?;
            let endpoints = ready_endpoint_pods(&client, &ns, "probe").await.ok()?;
            (!is_ready(&pod) && endpoints == BTreeSet::from([other.clone()])).then_some(())
        })
        .await;
        wait_until(SHORT, "10 answers in a row from the ready pod", async || {
            only_from(&http, "probe", &ns, &other, 10).await
        })
        .await;
        flip("true").await;
        wait_until(SHORT, "the flipped pod to be ready again", async || {
            let endpoints = ready_endpoint_pods(&client, &ns, "probe").await.ok()?;
            (endpoints.len() == 2).then_some(())
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn process_pods_serve_through_the_proxy_and_stop_on_sigterm() {
    require_run_image(ECHO).await;
    with_namespace(async |client: Client, ns: String| {
        let terms = term_dir();
        let terms_env = terms.to_string_lossy().into_owned();
        create::<Service>(&client, &ns, service("echo", json!({"app": "echo"}))).await;
        let container =
            echo_container(&[("MODELSHIP_MODEL_VERSION", "v7"), ("ECHO_TERM_DIR", &terms_env)]);
        let extra = json!({"terminationGracePeriodSeconds": 10});
        create::<Deployment>(&client, &ns, deployment("echo", 3, container, extra)).await;

        let all = wait_until(LONG, "3 ready echo endpoints", async || {
            let ready = ready_endpoint_pods(&client, &ns, "echo").await.ok()?;
            (ready.len() == 3).then_some(ready)
        })
        .await;

        // Requests are spread over all pods; each answer names the pod it came from.
        let http = TestHttp::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        wait_until(SHORT, "the proxy to know all 3 pods", async || {
            for _ in 0..30 {
                let response =
                    http.get("echo", &ns, "/v1/hello?x=1").await.map_err(|e| e.to_string())?;
                if response.status != StatusCode::OK {
                    return Err(format!("{}: {}", response.status, response.text()));
                }
                let body = response.json();
                let pod = response.pod().ok_or("no x-modelship-pod header")?;
                assert_eq!(body["pod"], pod.as_str());
                assert_eq!(body["version"], "v7");
                assert_eq!(body["path"], "/v1/hello");
                *seen.entry(pod).or_default() += 1;
            }
            let pods: BTreeSet<String> = seen.keys().cloned().collect();
            if pods == all { Ok(()) } else { Err(format!("answers so far: {seen:?}")) }
        })
        .await;

        // The agent reaches one pod directly, as the operator's metrics scrape does.
        let one = all.iter().next().unwrap().clone();
        let response = http.pod(Method::GET, &ns, &one, "/metrics", None).await.unwrap();
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.json()["pod"], one.as_str());
        assert_eq!(response.json()["path"], "/metrics");
        let missing = http.pod(Method::GET, &ns, "no-such-pod", "/metrics", None).await.unwrap();
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        assert!(missing.json()["error"].is_string());

        // Scale down: two pods get SIGTERM and disappear, the proxy sends everything to the
        // survivor.
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        deployments
            .patch("echo", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 1}})))
            .await
            .unwrap();
        let survivor = wait_until(SHORT, "one echo pod left", async || {
            let left = pods(&client, &ns, "app=echo").await.ok()?;
            (left.len() == 1).then(|| left[0].name_any())
        })
        .await;
        let gone: BTreeSet<String> = all.iter().filter(|p| **p != survivor).cloned().collect();
        assert_eq!(gone.len(), 2);
        assert_eq!(terminated_pods(&terms), gone, "SIGTERM reached exactly the removed pods");
        wait_until(SHORT, "the survivor as the only ready endpoint", async || {
            let ready = ready_endpoint_pods(&client, &ns, "echo").await.ok()?;
            (ready == BTreeSet::from([survivor.clone()])).then_some(())
        })
        .await;
        wait_until(SHORT, "10 answers in a row from the survivor", async || {
            only_from(&http, "echo", &ns, &survivor, 10).await
        })
        .await;
        let _ = std::fs::remove_dir_all(&terms);
    })
    .await;
}

#[tokio::test]
async fn deleted_pod_with_pre_stop_sleep_keeps_serving_while_terminating() {
    require_run_image(ECHO).await;
    with_namespace(async |client: Client, ns: String| {
        let terms = term_dir();
        let terms_env = terms.to_string_lossy().into_owned();
        create::<Service>(&client, &ns, service("drain", json!({"app": "drain"}))).await;
        let mut container = echo_container(&[("ECHO_TERM_DIR", &terms_env)]);
        container["lifecycle"] = json!({"preStop": {"sleep": {"seconds": 3}}});
        create::<Pod>(
            &client,
            &ns,
            json!({
                "metadata": {"name": "drain-0", "labels": {"app": "drain"}},
                "spec": {"containers": [container], "terminationGracePeriodSeconds": 20}
            }),
        )
        .await;
        let http = TestHttp::new();
        wait_until(LONG, "drain-0 reachable through the proxy", async || {
            let response = http.get("drain", &ns, "/").await.ok()?;
            (response.status == StatusCode::OK).then_some(())
        })
        .await;

        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        api.delete("drain-0", &DeleteParams::default()).await.unwrap();
        // While the preStop hook sleeps: the pod is terminating, its endpoint serving and
        // terminating, and the proxy still uses it because no other endpoint is ready.
        wait_until(SHORT, "a serving, terminating endpoint", async || {
            let endpoints = slice_endpoints(&client, &ns, "drain").await.ok()?;
            endpoints
                .iter()
                .any(|e| e.pod == "drain-0" && e.serving && e.terminating && !e.ready)
                .then_some(())
        })
        .await;
        hold_for(
            Duration::from_millis(1500),
            "the draining pod to keep answering",
            async || -> Result<(), String> {
                let response =
                    http.get("drain", &ns, "/during").await.map_err(|e| e.to_string())?;
                match (response.status, response.pod()) {
                    (StatusCode::OK, Some(pod)) if pod == "drain-0" => Ok(()),
                    (status, pod) => Err(format!("{status} from {pod:?}: {}", response.text())),
                }
            },
        )
        .await;
        assert!(terminated_pods(&terms).is_empty(), "SIGTERM must wait for the preStop sleep");

        wait_until(SHORT, "drain-0 to be gone", async || {
            api.get_opt("drain-0").await.ok().map(|p| p.is_none()).unwrap_or(false)
        })
        .await;
        assert_eq!(terminated_pods(&terms), BTreeSet::from(["drain-0".to_string()]));
        let response = http_via_proxy("drain", &ns, "/after").await;
        assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
        let _ = std::fs::remove_dir_all(&terms);
    })
    .await;
}

#[tokio::test]
async fn process_gets_the_pods_env_args_and_listen_address() {
    require_run_image(ECHO).await;
    with_namespace(async |client: Client, ns: String| {
        create::<Secret>(
            &client,
            &ns,
            json!({"metadata": {"name": "creds"}, "stringData": {"token": "s3cret"}}),
        )
        .await;
        create::<ConfigMap>(
            &client,
            &ns,
            json!({"metadata": {"name": "settings"}, "data": {"mode": "fast", "LEVEL": "3"}}),
        )
        .await;
        let shown = "POD,NS,IP,NODE,TOKEN,MODE,CFG_LEVEL,GREETING,MODELSHIP_LISTEN,MODELSHIP_POD_NAME";
        let container = json!({
            "name": "echo",
            "image": ECHO_IMAGE,
            "command": ["/ignored"],
            "args": ["--mode=$(MODE)", "--pod", "$(POD)", "$$(POD)"],
            "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
            "env": [
                {"name": "ECHO_SHOW_ENV", "value": shown},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
                {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
                {"name": "GREETING", "value": "hello $(POD)"},
                {"name": "MODELSHIP_LISTEN", "value": "0.0.0.0:8080"},
            ],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1},
        });
        create::<Service>(&client, &ns, service("env", json!({"app": "env"}))).await;
        create::<Pod>(
            &client,
            &ns,
            json!({
                "metadata": {"name": "env-0", "labels": {"app": "env"}},
                "spec": {"containers": [container]}
            }),
        )
        .await;
        let http = TestHttp::new();
        let response = wait_until(LONG, "env-0 answering through the proxy", async || {
            let response = http.get("env", &ns, "/").await.ok()?;
            (response.status == StatusCode::OK).then_some(response)
        })
        .await;
        let body = response.json();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let pod = api.get("env-0").await.unwrap();
        let ip = pod.status.and_then(|s| s.pod_ip).unwrap();
        let env = &body["env"];
        assert_eq!(env["POD"], "env-0");
        assert_eq!(env["NS"], ns.as_str());
        assert_eq!(env["IP"], ip.as_str());
        assert_eq!(env["NODE"], pod.spec.unwrap().node_name.unwrap().as_str());
        assert_eq!(env["TOKEN"], "s3cret");
        assert_eq!(env["MODE"], "fast");
        assert_eq!(env["CFG_LEVEL"], "3");
        assert_eq!(env["GREETING"], "hello env-0");
        assert_eq!(env["MODELSHIP_POD_NAME"], "env-0");
        // localnode's listen address wins over the pod's own.
        let listen = env["MODELSHIP_LISTEN"].as_str().unwrap();
        assert!(listen.starts_with("127.0.0.1:"), "listen {listen}");
        assert_eq!(body["args"], json!(["--mode=fast", "--pod", "env-0", "$(POD)"]));
    })
    .await;
}

#[tokio::test]
async fn proxy_answers_503_without_ready_endpoints_and_404_for_unknown_services() {
    with_namespace(async |client: Client, ns: String| {
        create::<Service>(&client, &ns, service("nobody", json!({"app": "nobody"}))).await;
        // A fake, unready pod exists but is never usable.
        create::<Pod>(
            &client,
            &ns,
            json!({
                "metadata": {"name": "idle", "labels": {"app": "nobody"},
                             "annotations": {"localnode.modelship.io/ready": "false"}},
                "spec": {"containers": [{"name": "app", "image": FAKE_IMAGE}]}
            }),
        )
        .await;
        let expected = format!("no ready endpoints for service {ns}/nobody");
        let http = TestHttp::new();
        let response = wait_until(SHORT, "the proxy to know service nobody", async || {
            let response = http.get("nobody", &ns, "/").await.ok()?;
            (response.status != StatusCode::NOT_FOUND).then_some(response)
        })
        .await;
        assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.json()["error"], expected.as_str());

        let unknown = http.get("missing", &ns, "/").await.unwrap();
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);
        assert!(unknown.json()["error"].as_str().unwrap().contains("not found"));

        let wrong_port = http
            .request(
                modelship_tests::harness::cluster().proxy,
                Method::GET,
                &format!("nobody.{ns}.svc.cluster.local:81"),
                "/",
                None,
            )
            .await
            .unwrap();
        assert_eq!(wrong_port.status, StatusCode::NOT_FOUND);
        assert!(wrong_port.json()["error"].as_str().unwrap().contains("no port 81"));
    })
    .await;
}

#[tokio::test]
async fn crashing_process_goes_into_crash_loop_backoff() {
    require_run_image(ECHO).await;
    with_namespace(async |client: Client, ns: String| {
        let mut container = echo_container(&[("ECHO_EXIT_CODE", "3")]);
        container["name"] = json!("crash");
        create::<Pod>(
            &client,
            &ns,
            json!({
                "metadata": {"name": "crasher", "labels": {"app": "crasher"}},
                "spec": {"containers": [container]}
            }),
        )
        .await;
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let check = async || -> Result<i32, String> {
            let pod = api.get("crasher").await.map_err(|e| e.to_string())?;
            if is_ready(&pod) {
                panic!("a crashing pod must never be Ready");
            }
            let status = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first().cloned())
                .ok_or("no container status yet")?;
            let waiting = status
                .state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.clone());
            let last_exit =
                status.last_state.as_ref().and_then(|s| s.terminated.as_ref()).map(|t| t.exit_code);
            match (waiting.as_deref(), last_exit) {
                (Some("CrashLoopBackOff"), Some(3)) if status.restart_count >= 2 => {
                    Ok(status.restart_count)
                }
                other => Err(format!("restarts {}, state {other:?}", status.restart_count)),
            }
        };
        let restarts = wait_until(SHORT, "two restarts in CrashLoopBackOff", check).await;
        assert!(restarts >= 2);
        hold_for(Duration::from_secs(2), "crasher never Ready", async || {
            api.get("crasher").await.map(|p| !is_ready(&p)).unwrap_or(false)
        })
        .await;
    })
    .await;
}
