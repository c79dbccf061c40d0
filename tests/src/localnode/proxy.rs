//! The Service proxy: routes a request by its Host (`<service>.<namespace>[:port]`) to one of
//! the Service's ready endpoints, round-robin, through the pod's local process.
//!
//! Services and EndpointSlices are followed with watches into a cache owned by one task; each
//! change reaches the routing table `--propagation-delay` after it was seen. Requests read an
//! immutable snapshot of the table, so they never wait on a lock or the API server.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Response, StatusCode, header};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;

use super::directory::{PodDirectory, pod_key};
use super::http::{HttpClient, forward, json_error};

/// Label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Where a request is meant to go, from its Host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostTarget<'a> {
    pub service: &'a str,
    pub namespace: &'a str,
    pub port: Option<u16>,
}

/// Parses `<service>.<namespace>`, optionally followed by `.svc` or `.svc.cluster.local`, and
/// `:port`.
pub fn parse_host(host: &str) -> Option<HostTarget<'_>> {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port.parse::<u16>().ok()?)),
        None => (host, None),
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    let labels: Vec<&str> = name.split('.').collect();
    let known_suffix =
        matches!(labels.as_slice(), [_, _] | [_, _, "svc"] | [_, _, "svc", "cluster", "local"]);
    if !known_suffix || labels[0].is_empty() || labels[1].is_empty() {
        return None;
    }
    Some(HostTarget { service: labels[0], namespace: labels[1], port })
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub port: i32,
    /// The port's name; EndpointSlice ports carry the same name (empty when unnamed).
    pub name: String,
}

/// The ports of a Service, in order.
pub fn service_ports(service: &Service) -> Vec<ServicePort> {
    service
        .spec
        .iter()
        .flat_map(|spec| spec.ports.iter().flatten())
        .map(|p| ServicePort { port: p.port, name: p.name.clone().unwrap_or_default() })
        .collect()
}

/// A pod behind an endpoint: `namespace/name` and the name alone (for the response header).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodRef {
    pub key: String,
    pub name: String,
}

/// What the proxy needs of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    pub pod: Option<PodRef>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

/// What the proxy needs of one EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceInfo {
    /// `namespace/name` of the Service.
    pub service: String,
    /// Names of the slice's ports.
    pub ports: Vec<String>,
    pub endpoints: Vec<EndpointInfo>,
}

/// Reduces a slice to what routing needs; `None` for a slice without a Service label.
pub fn slice_info(slice: &EndpointSlice) -> Option<SliceInfo> {
    let namespace = slice.namespace().unwrap_or_default();
    let service = slice.labels().get(SERVICE_NAME_LABEL)?;
    let endpoints = slice
        .endpoints
        .iter()
        .flatten()
        .map(|endpoint| {
            let conditions = endpoint.conditions.as_ref();
            // The API says an unset `ready` means ready, and unset `serving` follows `ready`.
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            let pod = endpoint
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref().is_none_or(|kind| kind == "Pod"))
                .and_then(|r| {
                    let name = r.name.clone()?;
                    let pod_namespace = r.namespace.as_deref().unwrap_or(&namespace);
                    Some(PodRef { key: pod_key(pod_namespace, &name), name })
                });
            EndpointInfo { pod, ready, serving, terminating }
        })
        .collect();
    Some(SliceInfo {
        service: pod_key(&namespace, service),
        ports: slice.ports.iter().flatten().map(|p| p.name.clone().unwrap_or_default()).collect(),
        endpoints,
    })
}

/// The pods a request to one Service port may go to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointSet {
    pub pods: Vec<PodRef>,
    /// The pods are serving but terminating: used only because no endpoint is ready.
    pub terminating: bool,
}

/// Ready endpoints of the slices that carry `port_name`; if there are none, the serving
/// terminating ones (as kube-proxy does, so a draining pod still answers rather than nothing).
pub fn choose_endpoints<'a>(
    slices: impl IntoIterator<Item = &'a SliceInfo>,
    port_name: &str,
) -> EndpointSet {
    let mut ready = BTreeSet::new();
    let mut terminating = BTreeSet::new();
    for slice in slices {
        if !slice.ports.is_empty() && !slice.ports.iter().any(|p| p == port_name) {
            continue;
        }
        for endpoint in &slice.endpoints {
            let Some(pod) = &endpoint.pod else { continue };
            if endpoint.ready {
                ready.insert(pod.clone());
            } else if endpoint.serving && endpoint.terminating {
                terminating.insert(pod.clone());
            }
        }
    }
    if ready.is_empty() {
        EndpointSet { pods: terminating.into_iter().collect(), terminating: true }
    } else {
        EndpointSet { pods: ready.into_iter().collect(), terminating: false }
    }
}

/// Round-robin from `start`, skipping pods that run no local process (fake pods).
pub fn pick(
    pods: &[PodRef],
    start: usize,
    locate: impl Fn(&str) -> Option<SocketAddr>,
) -> Option<(&PodRef, SocketAddr)> {
    (0..pods.len()).find_map(|offset| {
        let pod = &pods[(start + offset) % pods.len()];
        locate(&pod.key).map(|addr| (pod, addr))
    })
}

/// A routable port of a Service.
#[derive(Debug)]
pub struct RoutePort {
    pub port: i32,
    pub endpoints: EndpointSet,
}

/// A Service as the proxy routes it.
#[derive(Debug)]
pub struct ServiceRoute {
    pub ports: Vec<RoutePort>,
    next: AtomicUsize,
}

impl ServiceRoute {
    /// The port asked for by number, or the first port.
    pub fn port(&self, requested: Option<u16>) -> Option<&RoutePort> {
        match requested {
            Some(number) => self.ports.iter().find(|p| p.port == i32::from(number)),
            None => self.ports.first(),
        }
    }
}

/// `namespace/name` -> route.
pub type RouteTable = HashMap<String, Arc<ServiceRoute>>;

/// A change to the cache, as the watches report it.
#[derive(Debug, Clone)]
pub enum Change {
    Service(String, Option<Vec<ServicePort>>),
    AllServices(Vec<(String, Vec<ServicePort>)>),
    Slice(String, Option<SliceInfo>),
    AllSlices(Vec<(String, SliceInfo)>),
}

/// Services and slices as last seen (after the delay).
#[derive(Debug, Default)]
pub struct Cache {
    services: HashMap<String, Vec<ServicePort>>,
    /// Service key -> slice key -> slice.
    slices: HashMap<String, HashMap<String, SliceInfo>>,
    /// Slice key -> service key, to find a deleted slice.
    slice_owner: HashMap<String, String>,
}

impl Cache {
    /// Applies `change`, adding the keys of the Services whose route may differ to `dirty`.
    pub fn apply(&mut self, change: Change, dirty: &mut HashSet<String>) {
        match change {
            Change::Service(key, ports) => {
                match ports {
                    Some(ports) => self.services.insert(key.clone(), ports),
                    None => self.services.remove(&key),
                };
                dirty.insert(key);
            }
            Change::AllServices(all) => {
                dirty.extend(self.services.keys().cloned());
                self.services = all.into_iter().collect();
                dirty.extend(self.services.keys().cloned());
            }
            Change::Slice(key, slice) => {
                if let Some(owner) = self.slice_owner.remove(&key) {
                    if let Some(slices) = self.slices.get_mut(&owner) {
                        slices.remove(&key);
                        if slices.is_empty() {
                            self.slices.remove(&owner);
                        }
                    }
                    dirty.insert(owner);
                }
                if let Some(slice) = slice {
                    dirty.insert(slice.service.clone());
                    self.slice_owner.insert(key.clone(), slice.service.clone());
                    self.slices.entry(slice.service.clone()).or_default().insert(key, slice);
                }
            }
            Change::AllSlices(all) => {
                dirty.extend(self.slices.keys().cloned());
                self.slices.clear();
                self.slice_owner.clear();
                for (key, slice) in all {
                    self.apply(Change::Slice(key, Some(slice)), dirty);
                }
            }
        }
    }

    /// The route of Service `key`, or `None` if the Service does not exist.
    pub fn route(&self, key: &str) -> Option<ServiceRoute> {
        let ports = self.services.get(key)?;
        let slices = self.slices.get(key);
        let ports = ports
            .iter()
            .map(|port| RoutePort {
                port: port.port,
                endpoints: choose_endpoints(
                    slices.into_iter().flat_map(|s| s.values()),
                    &port.name,
                ),
            })
            .collect();
        Some(ServiceRoute { ports, next: AtomicUsize::new(0) })
    }
}

/// Holds changes until they are `delay` old. Changes arrive in order, so the queue stays sorted
/// by due time.
#[derive(Debug)]
pub struct DelayQueue<T> {
    delay: Duration,
    items: VecDeque<(Instant, T)>,
}

impl<T> DelayQueue<T> {
    pub fn new(delay: Duration) -> DelayQueue<T> {
        DelayQueue { delay, items: VecDeque::new() }
    }

    /// Adds `item`, seen at `now`.
    pub fn push(&mut self, now: Instant, item: T) {
        self.items.push_back((now + self.delay, item));
    }

    /// When the oldest item becomes due.
    pub fn next_due(&self) -> Option<Instant> {
        self.items.front().map(|(due, _)| *due)
    }

    /// Removes and returns every item due at `now`, oldest first.
    pub fn pop_due(&mut self, now: Instant) -> Vec<T> {
        let mut due = Vec::new();
        while self.items.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, item)) = self.items.pop_front() {
                due.push(item);
            }
        }
        due
    }
}

/// Turns watch events into cache changes, collecting a relist into one replacement.
struct Relist<T> {
    buffer: Option<Vec<(String, T)>>,
}

impl<T> Relist<T> {
    fn new() -> Self {
        Relist { buffer: None }
    }

    fn change<K>(
        &mut self,
        event: Event<K>,
        key: impl Fn(&K) -> String,
        convert: impl Fn(&K) -> Option<T>,
        single: impl Fn(String, Option<T>) -> Change,
        all: impl Fn(Vec<(String, T)>) -> Change,
    ) -> Option<Change> {
        match event {
            Event::Init => {
                self.buffer = Some(Vec::new());
                None
            }
            Event::InitApply(object) => {
                if let (Some(buffer), Some(value)) = (&mut self.buffer, convert(&object)) {
                    buffer.push((key(&object), value));
                }
                None
            }
            Event::InitDone => self.buffer.take().map(all),
            Event::Apply(object) => Some(single(key(&object), convert(&object))),
            Event::Delete(object) => Some(single(key(&object), None)),
        }
    }
}

fn object_key<K: ResourceExt>(object: &K) -> String {
    pod_key(&object.namespace().unwrap_or_default(), &object.name_any())
}

/// Follows Services and EndpointSlices into `table` until shutdown.
pub async fn follow(
    client: Client,
    delay: Duration,
    table: Arc<ArcSwap<RouteTable>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut services = watcher(Api::<Service>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .boxed();
    let slice_config = watcher::Config::default().labels(SERVICE_NAME_LABEL);
    let mut slices =
        watcher(Api::<EndpointSlice>::all(client), slice_config).default_backoff().boxed();
    let mut service_relist = Relist::new();
    let mut slice_relist = Relist::new();
    let mut queue = DelayQueue::new(delay);
    let mut cache = Cache::default();
    let far = Duration::from_secs(3600);
    loop {
        let wake = queue
            .next_due()
            .map_or_else(|| tokio::time::Instant::now() + far, tokio::time::Instant::from_std);
        tokio::select! {
            event = services.next() => match event {
                Some(Ok(event)) => {
                    let change = service_relist.change(
                        event, object_key, |s| Some(service_ports(s)), Change::Service, Change::AllServices);
                    if let Some(change) = change {
                        queue.push(Instant::now(), change);
                    }
                }
                Some(Err(error)) => tracing::warn!(%error, "Service watch failed; retrying"),
                None => return,
            },
            event = slices.next() => match event {
                Some(Ok(event)) => {
                    let change = slice_relist.change(
                        event, object_key, slice_info, Change::Slice, Change::AllSlices);
                    if let Some(change) = change {
                        queue.push(Instant::now(), change);
                    }
                }
                Some(Err(error)) => tracing::warn!(%error, "EndpointSlice watch failed; retrying"),
                None => return,
            },
            () = tokio::time::sleep_until(wake), if queue.next_due().is_some() => {
                let mut dirty = HashSet::new();
                for change in queue.pop_due(Instant::now()) {
                    cache.apply(change, &mut dirty);
                }
                publish(&cache, &table, dirty);
            }
            _ = shutdown.changed() => return,
        }
    }
}

fn publish(cache: &Cache, table: &ArcSwap<RouteTable>, dirty: HashSet<String>) {
    if dirty.is_empty() {
        return;
    }
    let mut next = RouteTable::clone(&table.load());
    for key in dirty {
        match cache.route(&key) {
            Some(route) => {
                tracing::debug!(service = %key, ports = ?route.ports, "route updated");
                next.insert(key, Arc::new(route));
            }
            None => {
                next.remove(&key);
            }
        }
    }
    table.store(Arc::new(next));
}

/// State of the proxy's HTTP server.
#[derive(Clone)]
pub struct ProxyState {
    pub table: Arc<ArcSwap<RouteTable>>,
    pub directory: Arc<PodDirectory>,
    pub client: HttpClient,
}

/// Every request goes through [`handle`].
pub fn router(state: ProxyState) -> Router {
    Router::new().fallback(handle).with_state(state)
}

async fn handle(State(state): State<ProxyState>, request: Request) -> Response<Body> {
    // An absolute-form target (the client treats us as an HTTP proxy) wins over Host.
    let host = match request.uri().authority() {
        Some(authority) => authority.as_str().to_string(),
        None => request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_string(),
    };
    let Some(target) = parse_host(&host) else {
        return json_error(
            StatusCode::NOT_FOUND,
            format!("host {host:?} is not <service>.<namespace>[.svc[.cluster.local]][:port]"),
        );
    };
    let service = pod_key(target.namespace, target.service);
    let table = state.table.load();
    let Some(route) = table.get(&service) else {
        return json_error(StatusCode::NOT_FOUND, format!("service {service} not found"));
    };
    let Some(port) = route.port(target.port) else {
        let message = match target.port {
            Some(number) => format!("service {service} has no port {number}"),
            None => format!("service {service} has no ports"),
        };
        return json_error(StatusCode::NOT_FOUND, message);
    };
    let pods = &port.endpoints.pods;
    let start = route.next.fetch_add(1, Ordering::Relaxed);
    let Some((pod, addr)) = pick(pods, start, |key| state.directory.get(key)) else {
        let message = if pods.is_empty() {
            format!("no ready endpoints for service {service}")
        } else {
            format!(
                "no ready endpoints for service {service}: none of its {} endpoint pods runs a local process",
                pods.len()
            )
        };
        return json_error(StatusCode::SERVICE_UNAVAILABLE, message);
    };
    let path_and_query = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
    let pod_name = pod.name.clone();
    drop(table);
    forward(&state.client, request, addr, &path_and_query, &pod_name).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str) -> PodRef {
        PodRef { key: format!("ns/{name}"), name: name.to_string() }
    }

    fn endpoint(name: &str, ready: bool, serving: bool, terminating: bool) -> EndpointInfo {
        EndpointInfo { pod: Some(pod(name)), ready, serving, terminating }
    }

    fn slice(ports: &[&str], endpoints: Vec<EndpointInfo>) -> SliceInfo {
        SliceInfo {
            service: "ns/web".into(),
            ports: ports.iter().map(|p| p.to_string()).collect(),
            endpoints,
        }
    }

    #[test]
    fn host_forms() {
        let t = |service, namespace, port| Some(HostTarget { service, namespace, port });
        assert_eq!(parse_host("web.ml"), t("web", "ml", None));
        assert_eq!(parse_host("web.ml:8080"), t("web", "ml", Some(8080)));
        assert_eq!(parse_host("web.ml.svc"), t("web", "ml", None));
        assert_eq!(parse_host("web.ml.svc.cluster.local:80"), t("web", "ml", Some(80)));
        assert_eq!(parse_host("web.ml.svc.cluster.local."), t("web", "ml", None));
        for bad in [
            "",
            "web",
            "127.0.0.1:8080",
            "web.ml.cluster",
            "web.ml:http",
            ".ml",
            "web.",
            "a.b.c.d",
            "[::1]:80",
        ] {
            assert_eq!(parse_host(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn ready_endpoints_win_and_are_deduplicated() {
        let slices = [
            slice(
                &["http"],
                vec![
                    endpoint("b", true, true, false),
                    endpoint("a", true, true, false),
                    endpoint("old", false, true, true),
                ],
            ),
            slice(&["http"], vec![endpoint("a", true, true, false)]),
        ];
        let set = choose_endpoints(&slices, "http");
        assert_eq!(set.pods, vec![pod("a"), pod("b")]);
        assert!(!set.terminating);
    }

    #[test]
    fn serving_terminating_endpoints_are_the_fallback() {
        let slices = [slice(
            &[""],
            vec![
                endpoint("draining", false, true, true),
                endpoint("dead", false, false, true),
                endpoint("starting", false, false, false),
            ],
        )];
        let set = choose_endpoints(&slices, "");
        assert_eq!(set.pods, vec![pod("draining")]);
        assert!(set.terminating);
        let none = choose_endpoints(&[slice(&[""], vec![endpoint("x", false, false, false)])], "");
        assert!(none.pods.is_empty());
    }

    #[test]
    fn slices_for_other_ports_are_ignored() {
        let slices = [
            slice(&["metrics"], vec![endpoint("m", true, true, false)]),
            slice(&["http"], vec![endpoint("h", true, true, false)]),
        ];
        assert_eq!(choose_endpoints(&slices, "http").pods, vec![pod("h")]);
    }

    #[test]
    fn pick_rotates_and_skips_pods_without_a_process() {
        let pods = vec![pod("a"), pod("fake"), pod("c")];
        let addr = |key: &str| -> Option<SocketAddr> {
            match key {
                "ns/a" => Some("127.0.0.1:1".parse().unwrap()),
                "ns/c" => Some("127.0.0.1:3".parse().unwrap()),
                _ => None,
            }
        };
        let names: Vec<&str> =
            (0..4).map(|start| pick(&pods, start, addr).unwrap().0.name.as_str()).collect();
        assert_eq!(names, ["a", "c", "c", "a"]);
        assert!(pick(&pods[1..2], 0, addr).is_none());
        assert!(pick(&[], 0, addr).is_none());
    }

    #[test]
    fn slice_info_reads_conditions_and_target_refs() {
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "namespace": "ml",
                         "labels": {SERVICE_NAME_LABEL: "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": ["192.0.2.1"], "conditions": {"ready": true},
                 "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "ml"}},
                {"addresses": ["192.0.2.2"],
                 "conditions": {"ready": false, "serving": true, "terminating": true},
                 "targetRef": {"kind": "Pod", "name": "web-2"}},
                {"addresses": ["192.0.2.3"]},
            ]
        }))
        .unwrap();
        let info = slice_info(&slice).unwrap();
        assert_eq!(info.service, "ml/web");
        assert_eq!(info.ports, vec!["http"]);
        assert_eq!(info.endpoints[0].pod.as_ref().unwrap().key, "ml/web-1");
        assert!(info.endpoints[0].ready);
        assert_eq!(info.endpoints[1].pod.as_ref().unwrap().key, "ml/web-2");
        assert!(
            !info.endpoints[1].ready && info.endpoints[1].serving && info.endpoints[1].terminating
        );
        assert!(info.endpoints[2].pod.is_none() && info.endpoints[2].ready);
    }

    #[test]
    fn cache_routes_follow_services_and_slices() {
        let mut cache = Cache::default();
        let mut dirty = HashSet::new();
        let ports = vec![
            ServicePort { port: 80, name: "http".into() },
            ServicePort { port: 9090, name: "metrics".into() },
        ];
        cache.apply(Change::Service("ns/web".into(), Some(ports)), &mut dirty);
        cache.apply(
            Change::Slice(
                "ns/web-1".into(),
                Some(slice(&["http", "metrics"], vec![endpoint("a", true, true, false)])),
            ),
            &mut dirty,
        );
        assert_eq!(dirty, HashSet::from(["ns/web".to_string()]));
        let route = cache.route("ns/web").unwrap();
        assert_eq!(route.port(None).unwrap().port, 80);
        assert_eq!(route.port(Some(9090)).unwrap().endpoints.pods, vec![pod("a")]);
        assert!(route.port(Some(81)).is_none());

        dirty.clear();
        cache.apply(Change::Slice("ns/web-1".into(), None), &mut dirty);
        assert_eq!(dirty, HashSet::from(["ns/web".to_string()]));
        assert!(cache.route("ns/web").unwrap().ports[0].endpoints.pods.is_empty());

        cache.apply(Change::AllServices(vec![]), &mut dirty);
        assert!(cache.route("ns/web").is_none());
    }

    #[test]
    fn delay_queue_releases_in_order_when_due() {
        let start = Instant::now();
        let mut queue = DelayQueue::new(Duration::from_millis(100));
        queue.push(start, 1);
        queue.push(start + Duration::from_millis(50), 2);
        assert_eq!(queue.next_due(), Some(start + Duration::from_millis(100)));
        assert!(queue.pop_due(start + Duration::from_millis(99)).is_empty());
        assert_eq!(queue.pop_due(start + Duration::from_millis(100)), vec![1]);
        assert_eq!(queue.pop_due(start + Duration::from_millis(200)), vec![2]);
        assert_eq!(queue.next_due(), None);

        let mut immediate = DelayQueue::new(Duration::ZERO);
        immediate.push(start, "x");
        assert_eq!(immediate.pop_due(start), vec!["x"]);
    }
}
