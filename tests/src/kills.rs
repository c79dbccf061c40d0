//! The operator killed at each phase boundary of a rollout (S15): a [`Killer`] runs the
//! operator binary behind a [`ChaosApi`] and walks a list of [`KillPoint`]s. At each one the
//! proxy stops the operator's writes at the boundary and the killer SIGKILLs it a seeded
//! random few milliseconds later, either between a given child write and the status write
//! that follows it (the status write never reaches the API server), or right after the
//! status write that shows the boundary (the operator's next write never does). Nothing the
//! operator writes after the boundary gets through before the kill, so no boundary can be
//! crossed without one. Then the killer starts a new instance (a new identity, as a new pod
//! would have) that must take the lease over and reconcile again, and measures how long that
//! took.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use modelship_crds::ModelDeploymentStatus;

use crate::faults::{Chaos, ChaosApi, HoldRule};
use crate::operator::OperatorProcess;
use crate::world::{Snapshot, World};

/// Lease settings of the killed operators: a new instance takes over once the killed one's
/// lease has expired.
pub const LEASE_SECONDS: u64 = 4;
pub const LEASE_GRACE_SECONDS: u64 = 1;

/// A boundary of a rollout at which the operator dies.
pub struct KillPoint {
    pub name: &'static str,
    /// The write after which the operator's writes are held; the kill lands while they are.
    pub hold: HoldRule,
    /// The boundary as the watches show it: when the operator writes nothing more for a while
    /// after it, the kill lands then.
    pub reached: Box<dyn Fn(&Snapshot) -> bool + Send + Sync>,
}

impl KillPoint {
    /// Kill between the write to the child whose path ends with `child` (and whose body
    /// contains `body_contains`) and the status write after it.
    pub fn between_child_and_status(
        name: &'static str,
        child: &str,
        body_contains: &str,
        reached: impl Fn(&Snapshot) -> bool + Send + Sync + 'static,
    ) -> KillPoint {
        KillPoint {
            name,
            hold: HoldRule::status_after(child, &[body_contains]),
            reached: Box::new(reached),
        }
    }

    /// Kill after the status write whose body contains every one of `status_contains`,
    /// before the operator's next write.
    pub fn after_status(
        name: &'static str,
        status_contains: &[&str],
        reached: impl Fn(&Snapshot) -> bool + Send + Sync + 'static,
    ) -> KillPoint {
        KillPoint {
            name,
            hold: HoldRule::any_after_status(status_contains),
            reached: Box::new(reached),
        }
    }
}

/// One kill, as it happened, or a boundary passed without one.
#[derive(Clone, Debug)]
pub struct Kill {
    pub point: &'static str,
    /// Whether the operator was killed there: a boundary not reached before the scenario
    /// ended is passed without a kill.
    pub killed: bool,
    /// How the kill met its boundary.
    pub how: String,
    /// From the kill until the new instance led and had reconciled.
    pub resume: Duration,
    /// The status as the watch showed it at the kill.
    pub status: Option<ModelDeploymentStatus>,
}

/// Seeded draws (xorshift): the same seed gives the same offsets.
pub struct Draws(u64);

impl Draws {
    pub fn new(seed: u64) -> Draws {
        Draws(seed | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// The seed of a run: `MODELSHIP_KILL_SEED` when set (to repeat a run), else the clock.
pub fn seed() -> u64 {
    std::env::var("MODELSHIP_KILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64 & 0xffff_ffff)
    })
}

/// The arguments every test operator with leader election gets.
pub fn leader_args(namespace: &str) -> Vec<String> {
    vec![
        "--leader-elect=true".into(),
        "--lease-namespace".into(),
        namespace.into(),
        "--lease-duration-seconds".into(),
        LEASE_SECONDS.to_string(),
        "--lease-grace-seconds".into(),
        LEASE_GRACE_SECONDS.to_string(),
    ]
}

/// Starts an operator with leader election in `namespace`, named `identity`, with `env`.
pub fn start_leader(namespace: &str, identity: &str, env: &[(&str, &str)]) -> OperatorProcess {
    let args = leader_args(namespace);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    OperatorProcess::start_full(namespace, identity, &args, env)
}

/// Waits until `operator` leads and has reconciled.
pub async fn resumed(operator: &OperatorProcess, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if operator.is_leader().await && operator.reconciles().await >= 1.0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The instance running once a [`Killer`] has passed its last point, with the proxy it talks
/// to the API server through: the proxy lives as long as the instance, which still has the
/// rollout to finish.
pub struct Survivor {
    pub operator: OperatorProcess,
    _api: Option<Arc<ChaosApi>>,
}

impl Survivor {
    /// An operator that talks to the API server directly.
    pub fn direct(operator: OperatorProcess) -> Survivor {
        Survivor { operator, _api: None }
    }
}

/// The operator under test and what kills it.
pub struct Killer {
    namespace: String,
    api: Arc<ChaosApi>,
    kubeconfig: PathBuf,
    operator: OperatorProcess,
    instances: u32,
    draws: Draws,
    ended: Arc<AtomicBool>,
}

impl Killer {
    /// Starts the first instance behind a proxy of the test's own client.
    pub async fn start(client: &kube::Client, namespace: &str, seed: u64, dir: &Path) -> Killer {
        let api = Arc::new(ChaosApi::start(client.clone(), Chaos::default()).await);
        let kubeconfig = api.kubeconfig(dir);
        let operator =
            start_leader(namespace, "k0", &[("KUBECONFIG", kubeconfig.to_str().unwrap())]);
        Killer {
            namespace: namespace.to_string(),
            api,
            kubeconfig,
            operator,
            instances: 1,
            draws: Draws::new(seed),
            ended: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Set when the scenario has ended: the points not reached by then are passed without a
    /// kill.
    pub fn ended(&self) -> Arc<AtomicBool> {
        self.ended.clone()
    }

    /// Walks `points` in order, killing the operator at each; returns the kills and the
    /// instance running at the end, with its proxy. A point's hold is armed before the
    /// instance that could make its write starts, so the write cannot slip past it.
    pub async fn run(mut self, world: Arc<World>, points: Vec<KillPoint>) -> (Vec<Kill>, Survivor) {
        let mut kills = Vec::new();
        let mut held = points.first().map(|p| self.api.hold_after(p.hold.clone()));
        for (i, point) in points.iter().enumerate() {
            let arm_next =
                |api: &ChaosApi| points.get(i + 1).map(|p| api.hold_after(p.hold.clone()));
            let Some(armed) = held.take() else { unreachable!("every point's hold is armed") };
            let how = match self.reach(&world, point, armed).await {
                Ok(how) => how,
                Err(passed) => {
                    self.api.clear_hold();
                    held = arm_next(&self.api);
                    kills.push(Kill {
                        point: point.name,
                        killed: false,
                        how: passed,
                        resume: Duration::ZERO,
                        status: None,
                    });
                    continue;
                }
            };
            let status = world.now().status().cloned();
            self.operator.kill();
            self.api.drop_held();
            let killed = Instant::now();
            held = arm_next(&self.api);
            let identity = format!("k{}", self.instances);
            self.instances += 1;
            self.operator = start_leader(
                &self.namespace,
                &identity,
                &[("KUBECONFIG", self.kubeconfig.to_str().unwrap())],
            );
            let limit = Duration::from_secs(LEASE_SECONDS + 30);
            assert!(
                resumed(&self.operator, limit).await,
                "{identity} did not resume within {limit:?} after the kill at {}; log:\n{}",
                point.name,
                self.operator.log_tail()
            );
            kills.push(Kill {
                point: point.name,
                killed: true,
                how,
                resume: killed.elapsed(),
                status,
            });
        }
        (kills, Survivor { operator: self.operator, _api: Some(self.api) })
    }

    /// Waits for `point`, whose hold is armed (`held` tells when a write is held), and
    /// returns how the kill meets it; the kill follows at once, while the operator's writes
    /// are still held. When the watches show the boundary and the operator has written
    /// nothing for [`QUIET`] since, the kill lands then (its next write would be held anyway).
    /// `Err`: the scenario ended before the boundary.
    async fn reach(
        &mut self,
        world: &World,
        point: &KillPoint,
        mut held: tokio::sync::oneshot::Receiver<String>,
    ) -> Result<String, String> {
        const LONG: Duration = Duration::from_secs(180);
        const QUIET: Duration = Duration::from_secs(3);
        let deadline = tokio::time::Instant::now() + LONG;
        let mut reached_since: Option<tokio::time::Instant> = None;
        loop {
            match tokio::time::timeout(Duration::from_millis(20), &mut held).await {
                Ok(Ok(path)) => {
                    let offset = self.draws.below(20);
                    tokio::time::sleep(Duration::from_millis(offset)).await;
                    return Ok(format!("write to {path} held, killed {offset} ms later"));
                }
                Ok(Err(_)) => panic!("the hold for {} was dropped", point.name),
                Err(_) => {}
            }
            if world.holds(&point.reached) {
                let since = *reached_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() > QUIET {
                    return Ok(format!(
                        "nothing written within {QUIET:?} of the boundary: killed then"
                    ));
                }
            } else if self.ended.load(Ordering::SeqCst) {
                return Err(match reached_since {
                    Some(_) => "seen by the watches, but no write after it was held: no kill",
                    None => "not reached before the scenario ended: no kill",
                }
                .into());
            }
            assert!(tokio::time::Instant::now() < deadline, "{} never came", point.name);
        }
    }
}
