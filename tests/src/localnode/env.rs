//! The environment and arguments of a process container, resolved the way the kubelet does it.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::{Api, Client};

use crate::{Error, Result};

/// The value of a `fieldRef` path, for the paths the downward API offers on env vars.
pub fn field_value(pod: &Pod, pod_ip: Ipv4Addr, path: &str) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let from_map = |map: Option<&BTreeMap<String, String>>, key: &str| {
        map.and_then(|m| m.get(key)).cloned().or(Some(String::new()))
    };
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.podIP" | "status.podIPs" => Some(pod_ip.to_string()),
        "status.hostIP" | "status.hostIPs" => Some(super::status::HOST_IP.to_string()),
        _ => {
            let key =
                |prefix: &str| path.strip_prefix(prefix)?.strip_suffix("']").map(str::to_string);
            if let Some(label) = key("metadata.labels['") {
                from_map(meta.labels.as_ref(), &label)
            } else if let Some(annotation) = key("metadata.annotations['") {
                from_map(meta.annotations.as_ref(), &annotation)
            } else {
                None
            }
        }
    }
}

/// Replaces `$(NAME)` with defined variables, turns `$$` into `$`, and leaves references to
/// undefined variables as they are.
pub fn expand(text: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(close) = inner.find(')')
        {
            let name = &inner[..close];
            match vars.get(name) {
                Some(value) => out.push_str(value),
                None => out.push_str(&rest[dollar..dollar + close + 3]),
            }
            rest = &inner[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Looks up Secrets and ConfigMaps once each while one container's environment is resolved.
struct Sources {
    secrets: Api<Secret>,
    config_maps: Api<ConfigMap>,
    secret_cache: HashMap<String, Option<Secret>>,
    config_map_cache: HashMap<String, Option<ConfigMap>>,
}

impl Sources {
    async fn secret(&mut self, name: &str) -> Result<Option<&Secret>> {
        if !self.secret_cache.contains_key(name) {
            let secret = self.secrets.get_opt(name).await?;
            self.secret_cache.insert(name.to_string(), secret);
        }
        Ok(self.secret_cache[name].as_ref())
    }

    async fn config_map(&mut self, name: &str) -> Result<Option<&ConfigMap>> {
        if !self.config_map_cache.contains_key(name) {
            let config_map = self.config_maps.get_opt(name).await?;
            self.config_map_cache.insert(name.to_string(), config_map);
        }
        Ok(self.config_map_cache[name].as_ref())
    }

    async fn secret_data(&mut self, name: &str) -> Result<Option<Vec<(String, String)>>> {
        Ok(self.secret(name).await?.map(|secret| {
            secret
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
                .collect()
        }))
    }

    async fn config_map_data(&mut self, name: &str) -> Result<Option<Vec<(String, String)>>> {
        Ok(self
            .config_map(name)
            .await?
            .map(|cm| cm.data.iter().flatten().map(|(k, v)| (k.clone(), v.clone())).collect()))
    }
}

/// The container's environment: `envFrom` first, then `env` in order, with `$(VAR)` references
/// to earlier variables expanded. A missing Secret or ConfigMap that is not optional is an error
/// (the kubelet's CreateContainerConfigError).
pub async fn resolve_env(
    client: &Client,
    pod: &Pod,
    container: &Container,
    pod_ip: Ipv4Addr,
) -> Result<Vec<(String, String)>> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut sources = Sources {
        secrets: Api::namespaced(client.clone(), namespace),
        config_maps: Api::namespaced(client.clone(), namespace),
        secret_cache: HashMap::new(),
        config_map_cache: HashMap::new(),
    };
    let mut vars: Vec<(String, String)> = Vec::new();

    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (data, name, optional) = if let Some(r) = &from.secret_ref {
            (sources.secret_data(&r.name).await?, &r.name, r.optional)
        } else if let Some(r) = &from.config_map_ref {
            (sources.config_map_data(&r.name).await?, &r.name, r.optional)
        } else {
            continue;
        };
        match data {
            Some(data) => {
                for (key, value) in data {
                    set(&mut vars, format!("{prefix}{key}"), value);
                }
            }
            None if optional == Some(true) => {}
            None => {
                return Err(Error::ContainerConfig(format!("envFrom source {name:?} not found")));
            }
        }
    }

    for var in container.env.iter().flatten() {
        let value = match &var.value_from {
            None => {
                Some(expand(var.value.as_deref().unwrap_or_default(), &defined_snapshot(&vars)))
            }
            Some(from) => {
                if let Some(field) = &from.field_ref {
                    Some(field_value(pod, pod_ip, &field.field_path).ok_or_else(|| {
                        Error::ContainerConfig(format!(
                            "env {}: unsupported fieldRef {:?}",
                            var.name, field.field_path
                        ))
                    })?)
                } else if let Some(key) = &from.secret_key_ref {
                    let data = sources.secret_data(&key.name).await?;
                    lookup(data, "Secret", &key.name, &key.key, key.optional, &var.name)?
                } else if let Some(key) = &from.config_map_key_ref {
                    let data = sources.config_map_data(&key.name).await?;
                    lookup(data, "ConfigMap", &key.name, &key.key, key.optional, &var.name)?
                } else {
                    tracing::warn!(env = %var.name, "unsupported valueFrom; variable left unset");
                    None
                }
            }
        };
        if let Some(value) = value {
            set(&mut vars, var.name.clone(), value);
        }
    }
    Ok(vars)
}

/// Later definitions replace earlier ones, as in a container.
fn set(vars: &mut Vec<(String, String)>, name: String, value: String) {
    vars.retain(|(n, _)| *n != name);
    vars.push((name, value));
}

fn defined_snapshot(vars: &[(String, String)]) -> HashMap<String, String> {
    vars.iter().cloned().collect()
}

fn lookup(
    data: Option<Vec<(String, String)>>,
    kind: &str,
    name: &str,
    key: &str,
    optional: Option<bool>,
    var: &str,
) -> Result<Option<String>> {
    let found = data.and_then(|data| data.into_iter().find(|(k, _)| k == key).map(|(_, v)| v));
    match found {
        Some(value) => Ok(Some(value)),
        None if optional == Some(true) => Ok(None),
        None => Err(Error::ContainerConfig(format!(
            "env {var}: key {key:?} of {kind} {name:?} not found"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn expands_defined_references_only() {
        let v = vars(&[("PORT", "8080"), ("HOST", "h")]);
        assert_eq!(expand("--port=$(PORT)", &v), "--port=8080");
        assert_eq!(expand("$(HOST):$(PORT)/$(NOPE)", &v), "h:8080/$(NOPE)");
        assert_eq!(expand("$$(PORT) costs $5", &v), "$(PORT) costs $5");
        assert_eq!(expand("tail $(PORT", &v), "tail $(PORT");
        assert_eq!(expand("", &v), "");
    }

    #[test]
    fn downward_api_fields() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u",
                         "labels": {"app": "web"}},
            "spec": {"nodeName": "n", "containers": []}
        }))
        .unwrap();
        let ip = Ipv4Addr::new(192, 0, 2, 5);
        assert_eq!(field_value(&pod, ip, "metadata.name").as_deref(), Some("p"));
        assert_eq!(field_value(&pod, ip, "metadata.namespace").as_deref(), Some("ns"));
        assert_eq!(field_value(&pod, ip, "status.podIP").as_deref(), Some("192.0.2.5"));
        assert_eq!(field_value(&pod, ip, "spec.nodeName").as_deref(), Some("n"));
        assert_eq!(field_value(&pod, ip, "metadata.labels['app']").as_deref(), Some("web"));
        assert_eq!(field_value(&pod, ip, "metadata.labels['none']").as_deref(), Some(""));
        assert_eq!(field_value(&pod, ip, "spec.unknown"), None);
    }
}
