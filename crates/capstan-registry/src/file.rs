//! The file registry: services, endpoints and workloads described in YAML, hot-reloaded. It is
//! how Capstan runs without Kubernetes (the embedded default).
//!
//! ```yaml
//! services:
//! - hostname: reviews.default.svc.cluster.local
//!   namespace: default
//!   ports: [{name: http, port: 9080}]          # protocol from `protocol`, else the name prefix
//!   addresses: [10.96.0.12]                    # VIPs; omit for headless
//!   endpoints:
//!   - address: 10.1.0.5
//!     labels: {app: reviews, version: v1}
//!     ports: {http: 9080}                      # target port by service port name (default: same number)
//!     locality: us-east1/us-east1-b
//!     serviceAccount: bookinfo-reviews
//!     workload: reviews-v1-0
//! workloads:                                   # optional: workloads with several addresses
//! - {name: vm-1, namespace: default, addresses: [10.1.0.9, 192.168.7.9], labels: {app: legacy}}
//! ```
//! A bad file is reported with the field path and the registry keeps its last good state.

use crate::index::{RegistryId, RegistryState, ServiceIndex};
use crate::model::{
    Endpoint, Health, Locality, Protocol, RegistryKind, Resolution, Service, ServicePort, Workload,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Largest registry file read.
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    services: Vec<FileService>,
    #[serde(default)]
    workloads: Vec<FileWorkload>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileService {
    hostname: String,
    #[serde(default)]
    namespace: String,
    ports: Vec<FilePort>,
    #[serde(default)]
    addresses: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    resolution: FileResolution,
    #[serde(default)]
    mesh_external: bool,
    #[serde(default)]
    export_to: Vec<String>,
    #[serde(default)]
    endpoints: Vec<FileEndpoint>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePort {
    #[serde(default)]
    name: String,
    port: u16,
    #[serde(default)]
    protocol: Option<String>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum FileResolution {
    #[default]
    Static,
    Dns,
    DnsRoundRobin,
    None,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileEndpoint {
    address: String,
    #[serde(default)]
    ports: BTreeMap<String, u16>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    locality: String,
    #[serde(default)]
    weight: u32,
    #[serde(default)]
    health: FileHealth,
    #[serde(default)]
    network: String,
    #[serde(default)]
    service_account: String,
    #[serde(default)]
    workload: String,
    #[serde(default)]
    tls_mode: Option<String>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum FileHealth {
    #[default]
    Healthy,
    Unhealthy,
    Draining,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileWorkload {
    name: String,
    #[serde(default)]
    namespace: String,
    addresses: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    service_account: String,
    #[serde(default)]
    locality: String,
    #[serde(default)]
    network: String,
}

/// Parses a registry document into a registry state; errors name the field path.
pub fn parse(text: &str) -> Result<RegistryState, String> {
    let trimmed = text.trim_start();
    let doc: FileDoc = if trimmed.starts_with('{') {
        // JSON (what machines write) straight into the typed document: no intermediate value,
        // and no field-path tracking unless it fails (then parsed again for the path).
        match serde_json::from_str(text) {
            Ok(doc) => doc,
            Err(_) => {
                let mut de = serde_json::Deserializer::from_str(text);
                let doc = serde_path_to_error::deserialize(&mut de)
                    .map_err(|e| format!("{}: {}", e.path(), e.inner()))?;
                de.end().map_err(|e| format!("invalid JSON: {e}"))?;
                doc
            }
        }
    } else {
        let value: serde_json::Value = capstan_api::decode::parse_document(text)?;
        if value.is_null() {
            return Ok(RegistryState::default());
        }
        serde_path_to_error::deserialize(&value)
            .map_err(|e| format!("{}: {}", e.path(), e.inner()))?
    };
    let mut state = RegistryState::default();
    for (si, s) in doc.services.into_iter().enumerate() {
        if s.hostname.is_empty() {
            return Err(format!("services[{si}].hostname: must not be empty"));
        }
        if state.services.contains_key(&s.hostname) {
            return Err(format!(
                "services[{si}].hostname: {} is defined twice",
                s.hostname
            ));
        }
        let mut ports: Vec<ServicePort> = s
            .ports
            .iter()
            .map(|p| ServicePort {
                name: p.name.clone(),
                port: p.port,
                protocol: match &p.protocol {
                    Some(proto) => Protocol::parse(proto),
                    None => Protocol::for_port(None, &p.name),
                },
            })
            .collect();
        ports.sort();
        for (pi, p) in s.ports.iter().enumerate() {
            if p.port == 0 {
                return Err(format!("services[{si}].ports[{pi}].port: must be 1..65535"));
            }
        }
        for (ei, e) in s.endpoints.iter().enumerate() {
            for name in e.ports.keys() {
                if !s.ports.iter().any(|p| &p.name == name) {
                    return Err(format!("services[{si}].endpoints[{ei}].ports[{name}]: no service port named {name:?}"));
                }
            }
            let locality = Locality::parse(&e.locality);
            for port in &ports {
                let endpoint = Endpoint {
                    address: e.address.clone(),
                    port: e.ports.get(&port.name).copied().unwrap_or(port.port),
                    service_port: port.port,
                    labels: e.labels.clone(),
                    locality: locality.clone(),
                    weight: e.weight,
                    health: match e.health {
                        FileHealth::Healthy => Health::Healthy,
                        FileHealth::Unhealthy => Health::Unhealthy,
                        FileHealth::Draining => Health::Draining,
                    },
                    network: e.network.clone(),
                    service_account: e.service_account.clone(),
                    tls_mode: e.tls_mode.clone().unwrap_or_else(|| "istio".into()),
                    workload: e.workload.clone(),
                    namespace: s.namespace.clone(),
                };
                state
                    .endpoints
                    .entry((s.hostname.clone(), port.port))
                    .or_default()
                    .push(endpoint);
            }
            if !e.workload.is_empty() {
                let key = format!("{}/{}", s.namespace, e.workload);
                let w = state.workloads.entry(key).or_insert_with(|| Workload {
                    name: e.workload.clone(),
                    namespace: s.namespace.clone(),
                    addresses: Vec::new(),
                    labels: e.labels.clone(),
                    service_account: e.service_account.clone(),
                    locality: locality.clone(),
                    network: e.network.clone(),
                    registry: RegistryKind::File,
                });
                if !w.addresses.contains(&e.address) {
                    w.addresses.push(e.address.clone());
                }
            }
        }
        state.services.insert(
            s.hostname.clone(),
            Service {
                hostname: s.hostname,
                namespace: s.namespace,
                ports,
                addresses: s.addresses,
                labels: s.labels,
                resolution: match s.resolution {
                    FileResolution::Static => Resolution::ClientSideLb,
                    FileResolution::Dns => Resolution::DnsLb,
                    FileResolution::DnsRoundRobin => Resolution::DnsRoundRobinLb,
                    FileResolution::None => Resolution::Passthrough,
                },
                mesh_external: s.mesh_external,
                export_to: s.export_to,
                registry: RegistryKind::File,
                external_name: None,
            },
        );
    }
    for endpoints in state.endpoints.values_mut() {
        endpoints.sort();
    }
    for w in doc.workloads {
        let key = format!("{}/{}", w.namespace, w.name);
        let entry = state.workloads.entry(key).or_insert_with(|| Workload {
            name: w.name.clone(),
            namespace: w.namespace.clone(),
            addresses: Vec::new(),
            labels: w.labels.clone(),
            service_account: w.service_account.clone(),
            locality: Locality::parse(&w.locality),
            network: w.network.clone(),
            registry: RegistryKind::File,
        });
        for a in w.addresses {
            if !entry.addresses.contains(&a) {
                entry.addresses.push(a);
            }
        }
    }
    Ok(state)
}

/// A file registry bound to one file.
pub struct FileRegistry {
    path: PathBuf,
    id: RegistryId,
}

impl FileRegistry {
    /// A registry reading `path`.
    pub fn new(path: PathBuf) -> FileRegistry {
        let id = RegistryId {
            kind: RegistryKind::File,
            name: format!("file:{}", path.display()),
        };
        FileRegistry { path, id }
    }

    /// The registry's id in the index.
    pub fn id(&self) -> &RegistryId {
        &self.id
    }

    fn read(path: &Path) -> Result<RegistryState, String> {
        use std::io::Read;
        let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut text = String::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(format!(
                "{}: larger than {MAX_FILE_BYTES} bytes",
                path.display()
            ));
        }
        parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Reads the file and replaces this registry's state in the index; on error the index keeps
    /// the last good state and the error is returned.
    pub fn sync(&self, index: &ServiceIndex) -> Result<usize, String> {
        let state = FileRegistry::read(&self.path)?;
        Ok(index.replace(&self.id, state).len())
    }

    /// Syncs, then re-syncs on every change of the file until everyone else drops the index.
    pub async fn run(
        self,
        index: Arc<ServiceIndex>,
        debounce: Duration,
    ) -> Result<(), capstan_fswatch::Error> {
        let log = |r: Result<usize, String>| match r {
            Ok(events) => tracing::info!(registry = %self.id.name, events, "file registry synced"),
            Err(error) => {
                tracing::error!(registry = %self.id.name, %error, "file registry not updated; keeping last good state")
            }
        };
        log(self.sync(&index));
        // A file target watches the directory (editors replace files by rename) but reacts only
        // to this file.
        let target = capstan_fswatch::Target::File(self.path.clone());
        capstan_fswatch::watch(&[target], debounce, || {
            log(self.sync(&index));
            Arc::strong_count(&index) > 1
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_documents_name_the_field() {
        let err = parse("services:\n- hostname: a\n  ports: [{name: http, port: 80}]\n  endpoints:\n  - address: 1.2.3.4\n    wieght: 3\n").unwrap_err();
        assert!(
            err.contains("services[0].endpoints[0]") && err.contains("wieght"),
            "{err}"
        );
        let err = parse("services:\n- hostname: a\n  ports: [{name: http, port: 80}]\n  endpoints:\n  - address: 1.2.3.4\n    ports: {grpc: 81}\n").unwrap_err();
        assert!(err.contains("no service port named"), "{err}");
    }

    #[test]
    fn json_documents_parse_directly_and_errors_still_name_the_field() {
        let good = r#"{"services": [{"hostname": "a", "ports": [{"name": "http", "port": 80}],
            "endpoints": [{"address": "1.2.3.4", "weight": 3}]}]}"#;
        let state = parse(good).unwrap();
        assert_eq!(state.endpoints[&("a".to_string(), 80)][0].weight, 3);
        let err = parse(&good.replace("weight", "wieght")).unwrap_err();
        assert!(
            err.contains("services[0].endpoints[0]") && err.contains("wieght"),
            "{err}"
        );
        let err = parse(&format!("{good} trailing")).unwrap_err();
        assert!(err.contains("trailing") || err.contains("JSON"), "{err}");
    }
}
