//! A control plane of a test's own, for tests that change cluster-wide state (such as the
//! CRD) and must not disturb the others. Started with the same scripts as the shared one.

use std::path::PathBuf;
use std::process::Command;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

pub struct OwnControlPlane {
    pub state: PathBuf,
    pub kubeconfig: PathBuf,
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("controlplane").join(name)
}

impl OwnControlPlane {
    /// Start etcd, kube-apiserver, controller-manager and scheduler in a temporary directory.
    pub fn start() -> OwnControlPlane {
        let state = std::env::temp_dir().join(crate::harness::unique_name("modelship-own-plane"));
        let status = Command::new("bash")
            .arg(script("up.sh"))
            .arg(&state)
            .status()
            .expect("run tests/controlplane/up.sh");
        assert!(status.success(), "tests/controlplane/up.sh failed");
        let kubeconfig = state.join("kubeconfig");
        OwnControlPlane { state, kubeconfig }
    }

    pub async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("read the kubeconfig");
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .expect("a client configuration");
        Client::try_from(config).expect("a client")
    }
}

impl Drop for OwnControlPlane {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(script("down.sh")).arg(&self.state).status();
    }
}
