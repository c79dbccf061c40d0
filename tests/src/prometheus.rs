//! A real Prometheus server (Debian's `prometheus`) for one test namespace: it scrapes the
//! namespace's serving pods every second, with the labels the chart's PodMonitor adds
//! (`namespace`, `pod`, `track`, `modelship_name`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};
use modelship_crds::labels;
use modelship_operator::analysis::prometheus::read_answer;
use modelship_operator::http::ApiClient;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::harness::wait_until;
use crate::operator::free_port;

pub struct PrometheusServer {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
    follower: JoinHandle<()>,
    /// Set when it serves https; the client trusts its certificate.
    tls: Option<Vec<u8>>,
    http: ApiClient,
}

/// A server certificate for 127.0.0.1 issued by a CA of its own (openssl): the server
/// serves `cert` and `key`, a client trusts `pem`, the CA.
pub struct Certificate {
    pub pem: Vec<u8>,
    cert: PathBuf,
    key: PathBuf,
}

impl Certificate {
    /// Made in `dir` under `name`, valid for a day.
    pub fn issued(dir: &Path, name: &str) -> Certificate {
        std::fs::create_dir_all(dir).expect("a directory for the certificate");
        let file = |ext: &str| dir.join(format!("{name}.{ext}"));
        let (ca, ca_key) = (file("ca.crt"), file("ca.key"));
        let (cert, key, request, extensions) = (file("crt"), file("key"), file("csr"), file("ext"));
        std::fs::write(&extensions, "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
            .expect("write the extensions");
        let new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        openssl(|c| {
            c.args(["req", "-x509"]).args(new_key).args(["-days", "1"]);
            c.args(["-subj", &format!("/CN={name} CA")]).arg("-keyout").arg(&ca_key);
            c.arg("-out").arg(&ca);
        });
        openssl(|c| {
            c.arg("req").args(new_key).args(["-subj", &format!("/CN={name}")]);
            c.arg("-keyout").arg(&key).arg("-out").arg(&request);
        });
        openssl(|c| {
            c.args(["x509", "-req", "-days", "1", "-set_serial", "1"]).arg("-in").arg(&request);
            c.arg("-CA").arg(&ca).arg("-CAkey").arg(&ca_key);
            c.arg("-extfile").arg(&extensions).arg("-out").arg(&cert);
        });
        Certificate { pem: std::fs::read(&ca).expect("read the CA"), cert, key }
    }
}

/// Run openssl with the arguments `args` adds; it must succeed.
fn openssl(args: impl FnOnce(&mut Command)) {
    let mut command = Command::new("openssl");
    args(&mut command);
    let output = command.output().expect("run openssl");
    assert!(output.status.success(), "openssl: {}", String::from_utf8_lossy(&output.stderr));
}

/// The scrape configuration. Debian's Prometheus is built without Kubernetes service
/// discovery, so the targets come from a file that `follow_pods` keeps current from the API
/// server, with the labels the chart's PodMonitor adds.
pub fn scrape_config(targets: &Path) -> String {
    format!(
        r#"global:
  scrape_interval: 1s
  scrape_timeout: 900ms
scrape_configs:
  - job_name: modelship-serving
    file_sd_configs:
      - files: [{}]
"#,
        targets.display()
    )
}

/// The file_sd entry of every ready serving pod of `pods`: its `http` port and the labels
/// `namespace`, `pod`, `track` and `modelship_name`.
pub fn targets(pods: &[Pod]) -> Value {
    let entries: Vec<Value> = pods
        .iter()
        .filter_map(|pod| {
            let labels = pod.metadata.labels.as_ref()?;
            let model = labels.get(labels::NAME)?;
            let ip = pod.status.as_ref()?.pod_ip.as_ref()?;
            let port = pod.spec.as_ref()?.containers.iter().find_map(|c| {
                c.ports.as_ref()?.iter().find(|p| p.name.as_deref() == Some("http"))
            })?;
            Some(json!({
                "targets": [format!("{ip}:{}", port.container_port)],
                "labels": {
                    "namespace": pod.metadata.namespace,
                    "pod": pod.metadata.name,
                    "track": labels.get(labels::TRACK),
                    "modelship_name": model,
                },
            }))
        })
        .collect();
    Value::Array(entries)
}

/// Rewrite `file` with the namespace's serving pods every 500 ms, until aborted.
async fn follow_pods(client: Client, namespace: String, file: PathBuf) {
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let params = ListParams::default().labels(labels::NAME);
    let mut written = Value::Null;
    loop {
        if let Ok(list) = pods.list(&params).await {
            let now = targets(&list.items);
            if now != written {
                let staging = file.with_extension("tmp");
                if std::fs::write(&staging, now.to_string()).is_ok()
                    && std::fs::rename(&staging, &file).is_ok()
                {
                    written = now;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

impl PrometheusServer {
    /// Start Prometheus on a free 127.0.0.1 port, scraping the serving pods of `namespace`,
    /// and wait until it is ready.
    pub async fn start(client: &Client, namespace: &str) -> PrometheusServer {
        Self::start_with(client, namespace, None).await
    }

    /// The same, serving https with `certificate` only.
    pub async fn start_tls(
        client: &Client,
        namespace: &str,
        certificate: &Certificate,
    ) -> PrometheusServer {
        Self::start_with(client, namespace, Some(certificate)).await
    }

    async fn start_with(
        client: &Client,
        namespace: &str,
        tls: Option<&Certificate>,
    ) -> PrometheusServer {
        let dir = std::env::temp_dir().join(format!("modelship-prometheus-{namespace}"));
        std::fs::create_dir_all(&dir).expect("a directory for Prometheus");
        let file = dir.join("targets.json");
        std::fs::write(&file, "[]").expect("write the targets");
        let follower =
            tokio::spawn(follow_pods(client.clone(), namespace.to_string(), file.clone()));
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, scrape_config(&file)).expect("write the config");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("a log file");
        let mut command = Command::new(prometheus_bin());
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"));
        if let Some(certificate) = tls {
            let web = dir.join("web.yml");
            let settings = format!(
                "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
                certificate.cert.display(),
                certificate.key.display()
            );
            std::fs::write(&web, settings).expect("write the web config");
            command.arg(format!("--web.config.file={}", web.display()));
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus (tests/node/packages.sh installs it)");
        let tls = tls.map(|c| c.pem.clone());
        let http = ApiClient::new(tls.as_deref(), None).expect("a client for Prometheus");
        let server = PrometheusServer { child, addr, dir, follower, tls, http };
        let ready = format!("{}/-/ready", server.address());
        wait_until(Duration::from_secs(30), "Prometheus ready", async || {
            server.http.get_text(&ready).await.map(|_| ()).map_err(|e| e.to_string())
        })
        .await;
        server
    }

    /// Base URL of its HTTP API, as a ModelDeployment names it.
    pub fn address(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The number a PromQL query answers now, if any.
    pub async fn query(&self, promql: &str) -> Option<f64> {
        let encoded: String = form_urlencoded::byte_serialize(promql.as_bytes()).collect();
        let url = format!("{}/api/v1/query?query={encoded}", self.address());
        let text = self.http.get_text(&url).await.ok()?;
        read_answer(&text).ok().flatten()
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        self.follower.abort();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn prometheus_bin() -> PathBuf {
    std::env::var_os("MODELSHIP_PROMETHEUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/prometheus"))
}
