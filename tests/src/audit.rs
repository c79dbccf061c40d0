//! The API server's audit log (`MODELSHIP_AUDIT_LOG`, written by the control plane for every
//! ServiceAccount request outside kube-system): who did what, and when the API server got it.

use std::path::PathBuf;

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

/// Where the control plane writes its audit log. Panics when it is not set.
pub fn log_path() -> PathBuf {
    std::env::var_os("MODELSHIP_AUDIT_LOG")
        .map(PathBuf::from)
        .expect("MODELSHIP_AUDIT_LOG is not set: run the tests with `make test` (tests/run.sh)")
}

/// One audited request.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub user: String,
    pub verb: String,
    /// The API group (empty for the core group).
    pub group: String,
    /// `resource` or `resource/subresource`.
    pub resource: String,
    pub name: Option<String>,
    /// When the API server received it.
    pub at: Timestamp,
    pub code: i64,
}

impl Request {
    /// A request that may change state (whether or not it succeeded).
    pub fn is_write(&self) -> bool {
        matches!(self.verb.as_str(), "create" | "update" | "patch" | "delete" | "deletecollection")
    }
}

/// Every request whose user name starts with `user_prefix`, in the order received. A request
/// logged at several stages (a watch: when it starts and when it ends) counts once.
pub fn requests(text: &str, user_prefix: &str) -> Vec<Request> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<Value>(line) else { continue };
        let user = event["user"]["username"].as_str().unwrap_or_default();
        if !user.starts_with(user_prefix) || event["stage"] == "RequestReceived" {
            continue;
        }
        if !seen.insert(event["auditID"].as_str().unwrap_or_default().to_string()) {
            continue;
        }
        let object = &event["objectRef"];
        let mut resource = object["resource"].as_str().unwrap_or_default().to_string();
        if let Some(sub) = object["subresource"].as_str() {
            resource = format!("{resource}/{sub}");
        }
        let Some(at) = event["requestReceivedTimestamp"].as_str().and_then(|t| t.parse().ok())
        else {
            continue;
        };
        out.push(Request {
            user: user.to_string(),
            verb: event["verb"].as_str().unwrap_or_default().to_string(),
            group: object["apiGroup"].as_str().unwrap_or_default().to_string(),
            resource,
            name: object["name"].as_str().map(str::to_string),
            at,
            code: event["responseStatus"]["code"].as_i64().unwrap_or(0),
        });
    }
    out.sort_by_key(|r| r.at);
    out
}

/// [`requests`] from the log file.
pub fn read_requests(user_prefix: &str) -> Vec<Request> {
    let path = log_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read the audit log {}: {e}", path.display()));
    requests(&text, user_prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_requests_once_in_order() {
        let log = concat!(
            r#"{"auditID":"2","stage":"ResponseComplete","verb":"patch","user":{"username":"system:serviceaccount:ns:a"},"objectRef":{"resource":"modeldeployments","subresource":"status","apiGroup":"modelship.io","name":"m"},"requestReceivedTimestamp":"2026-01-01T00:00:02.000001Z","responseStatus":{"code":200}}"#,
            "\n",
            r#"{"auditID":"1","stage":"ResponseStarted","verb":"watch","user":{"username":"system:serviceaccount:ns:b"},"objectRef":{"resource":"deployments"},"requestReceivedTimestamp":"2026-01-01T00:00:01Z","responseStatus":{"code":200}}"#,
            "\n",
            r#"{"auditID":"1","stage":"ResponseComplete","verb":"watch","user":{"username":"system:serviceaccount:ns:b"},"objectRef":{"resource":"deployments"},"requestReceivedTimestamp":"2026-01-01T00:00:01Z","responseStatus":{"code":200}}"#,
            "\n",
            r#"{"auditID":"3","stage":"ResponseComplete","verb":"get","user":{"username":"system:serviceaccount:other:a"},"objectRef":{"resource":"leases"},"requestReceivedTimestamp":"2026-01-01T00:00:00Z","responseStatus":{"code":200}}"#,
            "\n",
        );
        let seen = requests(log, "system:serviceaccount:ns:");
        assert_eq!(seen.len(), 2);
        assert_eq!((seen[0].verb.as_str(), seen[0].resource.as_str()), ("watch", "deployments"));
        assert_eq!(seen[1].resource, "modeldeployments/status");
        assert_eq!((seen[1].group.as_str(), seen[0].group.as_str()), ("modelship.io", ""));
        assert!(seen[1].is_write() && !seen[0].is_write());
        assert_eq!(seen[1].name.as_deref(), Some("m"));
    }
}
