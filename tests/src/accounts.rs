//! Operators with identities of their own: a ServiceAccount per operator instance, bound to a
//! Role in the test namespace with the rules the chart grants an operator confined to that
//! namespace (rendered from the chart, so they follow it), and a kubeconfig holding a token of
//! that account. The API server's audit log records ServiceAccount requests (see
//! `tests/controlplane/up.sh`), so a test can tell which instance made which write.

use std::path::{Path, PathBuf};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::json;

use crate::harness::{cluster, create};

/// The Role every test operator account of a namespace gets: the rules of the chart's Roles
/// for an operator confined to that namespace with its Lease there (`tests/tests/chart/rbac.rs`
/// checks the chart's rules against the audit log of a real run, in both directions).
pub const OPERATOR_ROLE: &str = "modelship-test-operator";

/// An operator account in a namespace: its name, audit user name and kubeconfig.
#[derive(Clone, Debug)]
pub struct Account {
    pub name: String,
    pub namespace: String,
    pub kubeconfig: PathBuf,
}

impl Account {
    /// How the audit log names this account.
    pub fn user(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }

    /// A client that authenticates as this account.
    pub async fn client(&self) -> Client {
        client_from(&self.kubeconfig).await
    }
}

/// A client from a kubeconfig file.
pub async fn client_from(path: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("read the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("a client configuration");
    Client::try_from(config).expect("a client")
}

/// Creates the operator Role in `namespace` (once; the Lease it may use is `lease`) and an
/// account `name` bound to it, with a one-hour token in a kubeconfig under `dir`.
pub async fn operator_account(
    client: &Client,
    namespace: &str,
    lease: &str,
    name: &str,
    dir: &Path,
) -> Account {
    let roles: Api<Role> = Api::namespaced(client.clone(), namespace);
    if roles.get_opt(OPERATOR_ROLE).await.expect("read Roles").is_none() {
        let rules = chart_rules(namespace, lease);
        let _: Role =
            create(client, namespace, json!({"metadata": {"name": OPERATOR_ROLE}, "rules": rules}))
                .await;
    }
    let _: ServiceAccount = create(client, namespace, json!({"metadata": {"name": name}})).await;
    let _: RoleBinding = create(
        client,
        namespace,
        json!({
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": OPERATOR_ROLE},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        }),
    )
    .await;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}}))
            .expect("a token request");
    let token = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("a token for {name}: {e}"))
        .status
        .and_then(|s| s.token)
        .expect("a token in the answer");
    let kubeconfig =
        token_kubeconfig(&dir.join(format!("kubeconfig-{namespace}-{name}.yaml")), &token);
    Account { name: name.to_string(), namespace: namespace.to_string(), kubeconfig }
}

/// The rules of every Role the chart renders for an operator confined to `namespace`, with
/// its Lease `lease` there.
fn chart_rules(namespace: &str, lease: &str) -> Vec<serde_json::Value> {
    let chart = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/modelship");
    let output = std::process::Command::new("helm")
        .args(["template", "modelship-test"])
        .arg(&chart)
        .args(["--namespace", namespace, "--show-only", "templates/rbac.yaml"])
        .args(["--set", &format!("operator.watchNamespace={namespace}")])
        .args(["--set", &format!("leaderElection.leaseName={lease}")])
        .output()
        .expect("run helm (on PATH in `make test`)");
    assert!(output.status.success(), "helm template: {}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout);
    let mut rules = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let Ok(object) = serde_json::Value::deserialize(document) else { continue };
        if object["kind"] == "Role" {
            rules.extend(object["rules"].as_array().cloned().unwrap_or_default());
        }
    }
    assert!(rules.len() >= 8, "the chart's Roles have too few rules: {rules:?}");
    rules
}

/// Writes at `path` a kubeconfig for the local API server (as the shared kubeconfig names it)
/// that authenticates with `token`, and returns `path`. YAML in the layout of the control
/// plane's own kubeconfigs, so `faults::kubeconfig_via` can route it through a link.
pub fn token_kubeconfig(path: &Path, token: &str) -> PathBuf {
    let admin = Kubeconfig::read_from(&cluster().kubeconfig).expect("read the kubeconfig");
    let cluster = admin
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .expect("a cluster in the kubeconfig");
    let server = cluster.server.expect("a server in the kubeconfig");
    let authority = match (cluster.certificate_authority, cluster.certificate_authority_data) {
        (Some(file), _) => format!("certificate-authority: {}", json!(file)),
        (None, Some(data)) => format!("certificate-authority-data: {}", json!(data)),
        (None, None) => panic!("the kubeconfig has no certificate authority"),
    };
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster: {{server: \"{server}\", \
         {authority}}}\nusers:\n- name: operator\n  user: {{token: {}}}\ncontexts:\n- name: \
         operator\n  context: {{cluster: local, user: operator}}\ncurrent-context: operator\n",
        json!(token)
    );
    std::fs::write(path, text).expect("write the kubeconfig");
    path.to_path_buf()
}
