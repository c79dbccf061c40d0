//! The real operator binary as a child process, one per test namespace, so tests can kill,
//! restart and count the writes of each instance.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Path of the operator binary, from `MODELSHIP_OPERATOR_BIN` (set by `make test`).
pub fn operator_bin() -> PathBuf {
    std::env::var_os("MODELSHIP_OPERATOR_BIN")
        .map(PathBuf::from)
        .expect("MODELSHIP_OPERATOR_BIN is not set: run the tests with `make test` (tests/run.sh)")
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub struct OperatorProcess {
    child: Option<Child>,
    pub admin: SocketAddr,
    pub log: PathBuf,
    pub identity: String,
}

impl OperatorProcess {
    /// An operator watching only `namespace`, without leader election. It runs on the host,
    /// which reaches the node's pod addresses, so analysis scrapes pods directly as it would
    /// in a cluster.
    pub fn start(namespace: &str) -> OperatorProcess {
        Self::start_with(namespace, "solo", &["--leader-elect=false"])
    }

    /// An operator with extra flags; `identity` names its log file and lease identity.
    pub fn start_with(namespace: &str, identity: &str, extra: &[&str]) -> OperatorProcess {
        Self::start_full(namespace, identity, extra, &[])
    }

    /// An operator with extra flags and environment (for example another `KUBECONFIG`).
    pub fn start_full(
        namespace: &str,
        identity: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> OperatorProcess {
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = std::env::temp_dir()
            .join(format!("modelship-operator-{namespace}-{identity}-{}.log", std::process::id()));
        let file = std::fs::File::create(&log).expect("operator log file");
        let mut command = Command::new(operator_bin());
        command
            .arg("--namespace")
            .arg(namespace)
            .arg("--admin-listen")
            .arg(admin.to_string())
            .arg("--identity")
            .arg(identity)
            .args(if extra.contains(&"--resync-seconds") {
                &[][..]
            } else {
                &["--resync-seconds", "30"][..]
            })
            .args(extra)
            // OPERATOR_TEST_LOG widens the filter for a diagnosis (kube_runtime=debug, ...).
            .env(
                "RUST_LOG",
                std::env::var("OPERATOR_TEST_LOG")
                    .unwrap_or_else(|_| "info,modelship_operator=debug,kube=warn".into()),
            )
            .envs(env.iter().copied())
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file));
        let child = command.spawn().expect("start the operator");
        let process =
            OperatorProcess { child: Some(child), admin, log, identity: identity.to_string() };
        process.wait_admin();
        process
    }

    fn wait_admin(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(self.admin).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("operator admin server never listened; log:\n{}", self.log_tail());
    }

    /// The last lines of the operator's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, as a crash or `kill -9` would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Send SIGTERM and wait for the exit; returns the exit code and how long it took.
    pub fn terminate(&mut self, timeout: Duration) -> (Option<i32>, Duration) {
        let started = Instant::now();
        let Some(mut child) = self.child.take() else {
            return (None, Duration::ZERO);
        };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        while started.elapsed() < timeout {
            if let Ok(Some(status)) = child.try_wait() {
                return (status.code(), started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        (None, started.elapsed())
    }

    /// Send SIGTERM and return at once.
    pub fn sigterm(&self) {
        if let Some(child) = &self.child {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("a pid"));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
    }

    /// Wait up to `timeout` for the process to exit; its exit code (`None` inside: killed by
    /// a signal), or `None` if it is still running.
    pub async fn exited_within(&mut self, timeout: Duration) -> Option<Option<i32>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(code) = self.exit_code() {
                return Some(code);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Exit code if the process has exited.
    pub fn exit_code(&mut self) -> Option<Option<i32>> {
        match self.child.as_mut()?.try_wait() {
            Ok(Some(status)) => Some(status.code()),
            _ => None,
        }
    }

    /// GET a path on the admin server; returns (status, body).
    pub async fn admin_get(&self, path: &str) -> Option<(u16, String)> {
        let http = crate::harness::TestHttp::new();
        let response = http.get(self.admin, path).await.ok()?;
        Some((response.status.as_u16(), response.text()))
    }

    /// The operator's metrics page. Panics when it cannot be read: a page that is not there
    /// must never read as "not leader, no writes".
    pub async fn metrics(&self) -> String {
        match self.admin_get("/metrics").await {
            Some((200, body)) if body.contains("# EOF") => body,
            other => panic!(
                "cannot read the metrics of operator {} ({other:?}); log:\n{}",
                self.identity,
                self.log_tail()
            ),
        }
    }

    /// A metric without labels (always on the page); panics when the page cannot be read or
    /// lacks it.
    pub async fn metric(&self, name: &str) -> f64 {
        let page = self.metrics().await;
        let family = name.strip_suffix("_total").unwrap_or(name);
        assert!(
            page.lines().any(|l| l.starts_with(&format!("# TYPE {family} "))),
            "operator {} exports no {name}:\n{page}",
            self.identity
        );
        sum_metric(&page, name)
    }

    /// Sum of `modelship_operator_writes_total` over all labels (a labelled family is on the
    /// page only once it has a sample: none means no write). Panics when the page cannot be
    /// read.
    pub async fn writes(&self) -> f64 {
        sum_metric(&self.metrics().await, "modelship_operator_writes_total")
    }

    /// Whether this instance says it holds the leader lease.
    pub async fn is_leader(&self) -> bool {
        self.metric("modelship_operator_leader").await == 1.0
    }

    /// Reconciles this instance has run.
    pub async fn reconciles(&self) -> f64 {
        self.metric("modelship_operator_reconciles_total").await
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sum every sample of a metric family in a Prometheus text page.
pub fn sum_metric(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_a_family() {
        let page = "x_total{a=\"1\"} 2\nx_total{a=\"2\"} 3\nx_total_other 9\n# x_total 100\n";
        assert_eq!(sum_metric(page, "x_total"), 5.0);
    }
}
