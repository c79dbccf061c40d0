//! The operator under test: its process, memory and metrics.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child as ProcessChild, Command as Process, Stdio};
use std::time::Duration;

use modelship_tests::harness::TestHttp;
use modelship_tests::operator::free_port;

use crate::procs::{mib, status_kib};
use crate::{OPERATOR_NS, Res, RunArgs};

/// The operator under test, started by the bench so that its start is the cold start.
pub struct Operator {
    child: Option<ProcessChild>,
    pub pid: u32,
    admin: SocketAddr,
    log: PathBuf,
    http: TestHttp,
}

impl Operator {
    pub fn start(args: &RunArgs) -> Res<Operator> {
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let log = args.out_dir.join("operator.log");
        let file = std::fs::File::create(&log)?;
        let child = Process::new(&args.operator_bin)
            .arg("--namespace")
            .arg(OPERATOR_NS)
            .arg("--leader-elect=false")
            .arg("--identity=operator-bench")
            .arg(format!("--admin-listen={admin}"))
            .arg(format!("--resync-seconds={}", args.resync_seconds))
            .args(&args.operator_args)
            // The operator's own default filter unless OPERATOR_RUST_LOG asks for more (for a
            // diagnosis, not for a measurement).
            .env(
                "RUST_LOG",
                std::env::var("OPERATOR_RUST_LOG")
                    .unwrap_or_else(|_| "info,kube=warn,kube_lease_manager=warn".into()),
            )
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .spawn()?;
        let pid = child.id();
        // down.sh stops it too if this process dies first.
        let pids = args.state_dir.join("pids");
        let mut text = std::fs::read_to_string(&pids).unwrap_or_default();
        text.push_str(&format!("{pid} modelship-operator\n"));
        std::fs::write(&pids, text)?;
        Ok(Operator { child: Some(child), pid, admin, log, http: TestHttp::new() })
    }

    pub fn check_alive(&mut self) -> Res<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait()?
        {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(format!("the operator exited ({status}); log:\n{}", tail.join("\n")).into());
        }
        Ok(())
    }

    pub async fn metrics(&self) -> Res<OperatorMetrics> {
        let response = self.http.get(self.admin, "/metrics").await?;
        Ok(OperatorMetrics::parse(&response.text()))
    }

    pub fn rss_mib(&self) -> f64 {
        mib(status_kib(self.pid, "VmRSS"))
    }

    pub fn hwm_mib(&self) -> f64 {
        mib(status_kib(self.pid, "VmHWM"))
    }

    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Debug, Default, Clone)]
pub struct OperatorMetrics {
    /// `kind/verb` -> writes.
    pub writes: BTreeMap<String, f64>,
    pub reconciles: f64,
    pub errors: BTreeMap<String, f64>,
    pub duration_sum: f64,
    pub duration_count: f64,
}

impl OperatorMetrics {
    pub fn parse(page: &str) -> OperatorMetrics {
        let mut out = OperatorMetrics::default();
        for line in page.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else { continue };
            let Ok(value) = value.parse::<f64>() else { continue };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let label = |key: &str| {
                labels.split(',').find_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    (k == key).then(|| v.trim_matches('"').to_string())
                })
            };
            match name {
                "modelship_operator_writes_total" => {
                    let kind = label("kind").unwrap_or_default();
                    let verb = label("verb").unwrap_or_default();
                    *out.writes.entry(format!("{kind}/{verb}")).or_default() += value;
                }
                "modelship_operator_reconciles_total" => out.reconciles = value,
                "modelship_operator_reconcile_errors_total" => {
                    let category = label("category").unwrap_or_default();
                    *out.errors.entry(category).or_default() += value;
                }
                "modelship_operator_reconcile_duration_seconds_sum" => out.duration_sum = value,
                "modelship_operator_reconcile_duration_seconds_count" => {
                    out.duration_count = value;
                }
                _ => {}
            }
        }
        out
    }

    pub fn total_writes(&self) -> f64 {
        self.writes.values().sum()
    }

    pub fn writes_since(&self, before: &OperatorMetrics) -> BTreeMap<String, f64> {
        self.writes
            .iter()
            .map(|(k, v)| (k.clone(), v - before.writes.get(k).copied().unwrap_or(0.0)))
            .filter(|(_, v)| *v != 0.0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_operator_metrics() {
        let page = "# HELP x\n\
            modelship_operator_writes_total{kind=\"deployment\",verb=\"apply\"} 10\n\
            modelship_operator_writes_total{kind=\"status\",verb=\"apply\"} 4\n\
            modelship_operator_reconciles_total 20\n\
            modelship_operator_reconcile_errors_total{category=\"conflict\"} 2\n\
            modelship_operator_reconcile_duration_seconds_sum 0.5\n\
            modelship_operator_reconcile_duration_seconds_count 20\n";
        let m = OperatorMetrics::parse(page);
        assert_eq!(m.total_writes(), 14.0);
        assert_eq!(m.writes["deployment/apply"], 10.0);
        assert_eq!(m.reconciles, 20.0);
        assert_eq!(m.errors["conflict"], 2.0);
        assert_eq!(m.duration_count, 20.0);
    }
}
