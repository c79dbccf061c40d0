//! The map from a process pod to the loopback address its process listens on, shared by the
//! agent (which writes it) and both HTTP servers (which read it on every request).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

/// `namespace/name`, the key of the directory and of the proxy's endpoint lists.
pub fn pod_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct LocalPod {
    uid: String,
    addr: SocketAddr,
}

/// Lock-free for readers: a request loads a snapshot; writers (rare: a process pod starts or
/// ends) copy the map.
#[derive(Debug, Default)]
pub struct PodDirectory {
    pods: ArcSwap<HashMap<String, LocalPod>>,
}

impl PodDirectory {
    /// Records where the pod `uid` named `key` listens.
    pub fn insert(&self, key: &str, uid: &str, addr: SocketAddr) {
        let pod = LocalPod { uid: uid.to_string(), addr };
        self.pods.rcu(|pods| {
            let mut pods = HashMap::clone(pods);
            pods.insert(key.to_string(), pod.clone());
            Arc::new(pods)
        });
    }

    /// Forgets `key`, but only if it still belongs to `uid`: a pod recreated under the same name
    /// may already have registered its own address.
    pub fn remove(&self, key: &str, uid: &str) {
        self.pods.rcu(|pods| {
            let mut pods = HashMap::clone(pods);
            if pods.get(key).is_some_and(|pod| pod.uid == uid) {
                pods.remove(key);
            }
            Arc::new(pods)
        });
    }

    /// Where the pod `key` listens, if it is a process pod of this node.
    pub fn get(&self, key: &str) -> Option<SocketAddr> {
        self.pods.load().get(key).map(|pod| pod.addr)
    }

    /// How many process pods are registered.
    pub fn len(&self) -> usize {
        self.pods.load().len()
    }

    /// Whether no process pod is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_respects_uid() {
        let directory = PodDirectory::default();
        let addr: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        directory.insert("ns/web-0", "old", addr);
        let newer: SocketAddr = "127.0.0.1:4001".parse().unwrap();
        directory.insert("ns/web-0", "new", newer);
        directory.remove("ns/web-0", "old");
        assert_eq!(directory.get("ns/web-0"), Some(newer));
        directory.remove("ns/web-0", "new");
        assert_eq!(directory.get("ns/web-0"), None);
        assert!(directory.is_empty());
    }
}
