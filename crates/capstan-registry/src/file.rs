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
//!     tlsMode: istio                           # has a sidecar (auto mTLS); default `disabled`
//!     workload: reviews-v1-0
//! workloads:                                   # optional: workloads with several addresses
//! - {name: vm-1, namespace: default, addresses: [10.1.0.9, 192.168.7.9], labels: {app: legacy}}
//! ```
//! A bad file is reported with the field path and the registry keeps its last good state.

use crate::index::{RegistryDelta, RegistryId, RegistryState, ServiceIndex};
use crate::model::{
    Endpoint, EndpointMeta, Health, Locality, Protocol, RegistryKind, Resolution, Service,
    ServicePort, Workload,
};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Label carrying a workload's TLS mode (`istio` when it has a sidecar).
const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

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

#[derive(Deserialize, Hash)]
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

#[derive(Deserialize, Hash)]
#[serde(deny_unknown_fields)]
struct FilePort {
    #[serde(default)]
    name: String,
    port: u16,
    #[serde(default)]
    protocol: Option<String>,
}

#[derive(Deserialize, Default, Clone, Copy, Hash)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum FileResolution {
    #[default]
    Static,
    Dns,
    DnsRoundRobin,
    None,
}

#[derive(Deserialize, Hash)]
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

#[derive(Deserialize, Default, Clone, Copy, Hash)]
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

/// Decodes a registry document; errors name the field path.
fn decode(text: &str) -> Result<FileDoc, String> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        // JSON (what machines write) straight into the typed document: no intermediate value,
        // and no field-path tracking unless it fails (then parsed again for the path).
        return match serde_json::from_str(text) {
            Ok(doc) => Ok(doc),
            Err(_) => {
                let mut de = serde_json::Deserializer::from_str(text);
                let doc = serde_path_to_error::deserialize(&mut de)
                    .map_err(|e| format!("{}: {}", e.path(), e.inner()))?;
                de.end().map_err(|e| format!("invalid JSON: {e}"))?;
                Ok(doc)
            }
        };
    }
    let value: serde_json::Value = capstan_api::decode::parse_document(text)?;
    if value.is_null() {
        return Ok(FileDoc::default());
    }
    serde_path_to_error::deserialize(&value).map_err(|e| format!("{}: {}", e.path(), e.inner()))
}

/// The checks serde cannot make, over the whole document (so a bad file changes nothing).
fn check(doc: &FileDoc) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for (si, s) in doc.services.iter().enumerate() {
        check_service(s).map_err(|e| format!("services[{si}].{e}"))?;
        if !seen.insert(s.hostname.as_str()) {
            return Err(format!(
                "services[{si}].hostname: {} is defined twice",
                s.hostname
            ));
        }
    }
    Ok(())
}

/// The checks of one service; the error's path is relative to the service.
fn check_service(s: &FileService) -> Result<(), String> {
    if s.hostname.is_empty() {
        return Err("hostname: must not be empty".into());
    }
    for (pi, p) in s.ports.iter().enumerate() {
        if p.port == 0 {
            return Err(format!("ports[{pi}].port: must be 1..65535"));
        }
    }
    for (ei, e) in s.endpoints.iter().enumerate() {
        for name in e.ports.keys() {
            if !s.ports.iter().any(|p| &p.name == name) {
                return Err(format!(
                    "endpoints[{ei}].ports[{name}]: no service port named {name:?}"
                ));
            }
        }
    }
    Ok(())
}

/// The service ports of a file service, sorted.
fn service_ports(s: &FileService) -> Vec<ServicePort> {
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
    ports
}

/// A checked file service's model: the service and its endpoints per service port (every port
/// present, possibly empty).
fn build_service(s: &FileService) -> (Service, BTreeMap<u16, Vec<Endpoint>>) {
    let ports = service_ports(s);
    let mut endpoints: BTreeMap<u16, Vec<Endpoint>> =
        ports.iter().map(|p| (p.port, Vec::new())).collect();
    for e in &s.endpoints {
        // One shared description for the endpoint's ports.
        let meta = std::sync::Arc::new(EndpointMeta {
            labels: e.labels.clone(),
            locality: Locality::parse(&e.locality),
            network: e.network.clone(),
            service_account: e.service_account.clone(),
            tls_mode: tls_mode(e),
            workload: e.workload.clone(),
            namespace: s.namespace.clone(),
        });
        for port in &ports {
            let endpoint = Endpoint {
                address: e.address.clone(),
                port: e.ports.get(&port.name).copied().unwrap_or(port.port),
                service_port: port.port,
                meta: std::sync::Arc::clone(&meta),
                weight: e.weight,
                health: match e.health {
                    FileHealth::Healthy => Health::Healthy,
                    FileHealth::Unhealthy => Health::Unhealthy,
                    FileHealth::Draining => Health::Draining,
                },
            };
            endpoints.entry(port.port).or_default().push(endpoint);
        }
    }
    for list in endpoints.values_mut() {
        list.sort();
    }
    let service = Service {
        hostname: s.hostname.clone(),
        namespace: s.namespace.clone(),
        ports,
        addresses: s.addresses.clone(),
        labels: s.labels.clone(),
        resolution: match s.resolution {
            FileResolution::Static => Resolution::ClientSideLb,
            FileResolution::Dns => Resolution::DnsLb,
            FileResolution::DnsRoundRobin => Resolution::DnsRoundRobinLb,
            FileResolution::None => Resolution::Passthrough,
        },
        mesh_external: s.mesh_external,
        export_to: s.export_to.clone(),
        registry: RegistryKind::File,
        external_name: None,
    };
    (service, endpoints)
}

/// An endpoint's TLS mode: `tlsMode`, else Istio's `security.istio.io/tlsMode` label, else
/// `disabled`. A file-registry backend has no sidecar unless the entry says so, and only
/// `istio` endpoints get auto mTLS (Istio's `GetTLSModeFromEndpointLabels`).
fn tls_mode(e: &FileEndpoint) -> String {
    e.tls_mode
        .clone()
        .or_else(|| e.labels.get(TLS_MODE_LABEL).cloned())
        .unwrap_or_else(|| "disabled".into())
}

/// The workloads one service's endpoints name (`workload`), in document order: the key, and
/// the workload as that endpoint describes it (one address).
fn endpoint_workloads(s: &FileService) -> Vec<(String, Workload)> {
    s.endpoints
        .iter()
        .filter(|e| !e.workload.is_empty())
        .map(|e| {
            let key = format!("{}/{}", s.namespace, e.workload);
            let w = Workload {
                name: e.workload.clone(),
                namespace: s.namespace.clone(),
                addresses: vec![e.address.clone()],
                labels: e.labels.clone(),
                service_account: e.service_account.clone(),
                locality: Locality::parse(&e.locality),
                network: e.network.clone(),
                registry: RegistryKind::File,
            };
            (key, w)
        })
        .collect()
}

/// Workloads: those named by endpoints (`from_endpoints`, every service's in document order;
/// the first mention of a workload describes it, later ones add addresses), merged with the
/// `workloads` list.
fn build_workloads<'a>(
    from_endpoints: impl Iterator<Item = &'a [(String, Workload)]>,
    listed: &[FileWorkload],
) -> BTreeMap<String, Workload> {
    let mut workloads: BTreeMap<String, Workload> = BTreeMap::new();
    for (key, w) in from_endpoints.flatten() {
        match workloads.get_mut(key) {
            Some(known) => {
                for a in &w.addresses {
                    if !known.addresses.contains(a) {
                        known.addresses.push(a.clone());
                    }
                }
            }
            None => {
                workloads.insert(key.clone(), w.clone());
            }
        }
    }
    for w in listed {
        let key = format!("{}/{}", w.namespace, w.name);
        let entry = workloads.entry(key).or_insert_with(|| Workload {
            name: w.name.clone(),
            namespace: w.namespace.clone(),
            addresses: Vec::new(),
            labels: w.labels.clone(),
            service_account: w.service_account.clone(),
            locality: Locality::parse(&w.locality),
            network: w.network.clone(),
            registry: RegistryKind::File,
        });
        for a in &w.addresses {
            if !entry.addresses.contains(a) {
                entry.addresses.push(a.clone());
            }
        }
    }
    workloads
}

/// Parses a registry document into a registry state; errors name the field path.
pub fn parse(text: &str) -> Result<RegistryState, String> {
    let doc = decode(text)?;
    check(&doc)?;
    let mut state = RegistryState::default();
    for s in &doc.services {
        let (service, endpoints) = build_service(s);
        for (port, list) in endpoints {
            if !list.is_empty() {
                state.endpoints.insert((s.hostname.clone(), port), list);
            }
        }
        state.services.insert(s.hostname.clone(), service);
    }
    let named: Vec<_> = doc.services.iter().map(endpoint_workloads).collect();
    state.workloads = build_workloads(named.iter().map(Vec::as_slice), &doc.workloads);
    Ok(state)
}

fn content_hash(s: &FileService) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// A hash of one service's text, to recognise it unchanged in the next read (a fast
/// non-cryptographic hash: the whole file passes through it on every read).
fn text_hash(text: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::quality::FixedState::with_seed(0x5ca1_ab1e).hash_one(text)
}

/// One service of the file, reduced to what the next read needs if its text is unchanged.
#[derive(Debug)]
struct Summary {
    hostname: String,
    /// Hash of the decoded service (formatting-independent).
    content: u64,
    ports: Vec<u16>,
    workloads: Vec<(String, Workload)>,
}

impl Summary {
    fn of(s: &FileService) -> Summary {
        Summary {
            hostname: s.hostname.clone(),
            content: content_hash(s),
            ports: s.ports.iter().map(|p| p.port).collect(),
            workloads: endpoint_workloads(s),
        }
    }
}

/// A read of the file: every service in document order, as its summary, with the decoded
/// service where its text changed since the last read (or the file is not JSON), and the text
/// hashes that let the next read skip unchanged services.
struct Read {
    services: Vec<(Arc<Summary>, Option<FileService>)>,
    workloads: Vec<FileWorkload>,
    by_text: HashMap<u64, Arc<Summary>>,
}

/// A JSON registry document with each service left as its text.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDoc<'a> {
    #[serde(borrow, default)]
    services: Vec<&'a serde_json::value::RawValue>,
    #[serde(default)]
    workloads: Vec<FileWorkload>,
}

impl Read {
    /// Everything decoded (YAML, or a JSON file the service-by-service path cannot take).
    fn full(doc: FileDoc) -> Read {
        Read {
            services: doc
                .services
                .into_iter()
                .map(|s| (Arc::new(Summary::of(&s)), Some(s)))
                .collect(),
            workloads: doc.workloads,
            by_text: HashMap::new(),
        }
    }

    /// JSON, decoding only the services whose text is not among `known` (from the last read).
    /// `None` when anything is wrong: the caller then decodes the whole document, whose errors
    /// name the field path.
    fn incremental(text: &str, known: &HashMap<u64, Arc<Summary>>) -> Option<Read> {
        let raw: RawDoc = serde_json::from_str(text).ok()?;
        let mut read = Read {
            services: Vec::with_capacity(raw.services.len()),
            workloads: raw.workloads,
            by_text: HashMap::with_capacity(raw.services.len()),
        };
        let mut hosts = std::collections::HashSet::with_capacity(raw.services.len());
        for service in raw.services {
            let hash = text_hash(service.get());
            let entry = match known.get(&hash) {
                Some(summary) => (summary.clone(), None),
                None => {
                    let s: FileService = serde_json::from_str(service.get()).ok()?;
                    check_service(&s).ok()?;
                    (Arc::new(Summary::of(&s)), Some(s))
                }
            };
            if !hosts.insert(entry.0.hostname.clone()) {
                return None;
            }
            read.by_text.insert(hash, entry.0.clone());
            read.services.push(entry);
        }
        Some(read)
    }
}

/// What the file held when last applied: its services by hostname, the workloads, and the
/// services by the hash of their text.
#[derive(Default)]
struct Applied {
    services: HashMap<String, Arc<Summary>>,
    workloads: BTreeMap<String, Workload>,
    by_text: HashMap<u64, Arc<Summary>>,
}

impl Applied {
    /// Applies `read` (checked) to this record, returning the delta from the old state. The
    /// record is updated in place: an endpoint change in a large file touches one entry.
    fn apply(&mut self, read: Read) -> RegistryDelta {
        let mut delta = RegistryDelta::default();
        for (summary, decoded) in &read.services {
            let host = &summary.hostname;
            let Some(s) = decoded else {
                // Its text is unchanged since the last read, so it is already recorded.
                continue;
            };
            let before = self.services.get(host);
            if before.map(|b| b.content) != Some(summary.content) {
                let (service, endpoints) = build_service(s);
                delta.services.insert(host.clone(), Some(service));
                for (port, list) in endpoints {
                    let list = (!list.is_empty()).then_some(list);
                    delta.endpoints.insert((host.clone(), port), list);
                }
                for port in before
                    .iter()
                    .flat_map(|b| &b.ports)
                    .filter(|p| !summary.ports.contains(p))
                {
                    delta.endpoints.insert((host.clone(), *port), None);
                }
            }
            self.services.insert(host.clone(), summary.clone());
        }
        // Every hostname of the read is now recorded, and they are unique within the read: if
        // the counts agree, none went away; otherwise find those that did.
        if self.services.len() != read.services.len() {
            let present: std::collections::HashSet<&str> = read
                .services
                .iter()
                .map(|(s, _)| s.hostname.as_str())
                .collect();
            let gone: Vec<String> = self
                .services
                .keys()
                .filter(|h| !present.contains(h.as_str()))
                .cloned()
                .collect();
            for host in gone {
                if let Some(old) = self.services.remove(&host) {
                    for port in &old.ports {
                        delta.endpoints.insert((host.clone(), *port), None);
                    }
                }
                delta.services.insert(host, None);
            }
        }
        let workloads = build_workloads(
            read.services.iter().map(|(s, _)| s.workloads.as_slice()),
            &read.workloads,
        );
        for (key, w) in &workloads {
            if self.workloads.get(key) != Some(w) {
                delta.workloads.insert(key.clone(), Some(w.clone()));
            }
        }
        for key in self.workloads.keys() {
            if !workloads.contains_key(key) {
                delta.workloads.insert(key.clone(), None);
            }
        }
        self.workloads = workloads;
        self.by_text = read.by_text;
        delta
    }
}

/// A file registry bound to one file.
pub struct FileRegistry {
    path: PathBuf,
    id: RegistryId,
    applied: std::sync::Mutex<Applied>,
}

impl FileRegistry {
    /// A registry reading `path`.
    pub fn new(path: PathBuf) -> FileRegistry {
        let id = RegistryId {
            kind: RegistryKind::File,
            name: format!("file:{}", path.display()),
        };
        FileRegistry {
            path,
            id,
            applied: std::sync::Mutex::default(),
        }
    }

    /// The registry's id in the index.
    pub fn id(&self) -> &RegistryId {
        &self.id
    }

    /// Reads the file; a JSON file's services whose text is among `known` are not decoded.
    fn read(path: &Path, known: &HashMap<u64, Arc<Summary>>) -> Result<Read, String> {
        use std::io::Read as _;
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
        // JSON goes service by service (all decoded on the first read, only the changed ones
        // after); a file that path cannot take, and YAML, are decoded whole, whose errors name
        // the field path.
        if text.trim_start().starts_with('{') {
            if let Some(read) = Read::incremental(&text, known) {
                return Ok(read);
            }
        }
        let doc = decode(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        check(&doc).map_err(|e| format!("{}: {e}", path.display()))?;
        let read = Read::full(doc);
        Ok(read)
    }

    /// Reads the file and brings this registry's state in the index up to date; on error the
    /// index keeps the last good state and the error is returned. Only services whose part of
    /// the file changed are decoded, rebuilt and handed to the index (the first sync hands
    /// everything).
    pub fn sync(&self, index: &ServiceIndex) -> Result<usize, String> {
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        let read = FileRegistry::read(&self.path, &applied.by_text)?;
        let delta = applied.apply(read);
        if delta.is_empty() {
            return Ok(0);
        }
        Ok(index.apply(&self.id, delta).len())
    }

    /// Syncs, then re-syncs on every change of the file until everyone else drops the index.
    pub async fn run(
        self,
        index: Arc<ServiceIndex>,
        debounce: Duration,
    ) -> Result<(), capstan_fswatch::Error> {
        let log = |(r, took): (Result<usize, String>, Duration)| match r {
            Ok(events) => {
                tracing::info!(registry = %self.id.name, events, ?took, "file registry synced")
            }
            Err(error) => {
                tracing::error!(registry = %self.id.name, %error, "file registry not updated; keeping last good state")
            }
        };
        let timed_sync = || {
            let started = std::time::Instant::now();
            let r = self.sync(&index);
            (r, started.elapsed())
        };
        log(timed_sync());
        // A file target watches the directory (editors replace files by rename) but reacts only
        // to this file.
        let target = capstan_fswatch::Target::File(self.path.clone());
        capstan_fswatch::watch(&[target], debounce, || {
            log(timed_sync());
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

    /// Plain file-registry backends have no sidecar: only `tlsMode: istio` (or Istio's label)
    /// marks an endpoint for auto mTLS.
    #[test]
    fn endpoints_are_plaintext_unless_they_say_istio() {
        let state = parse(
            "services:\n- hostname: a\n  ports: [{name: http, port: 80}]\n  endpoints:\n  \
             - {address: 10.0.0.1}\n  - {address: 10.0.0.2, tlsMode: istio}\n  \
             - {address: 10.0.0.3, labels: {security.istio.io/tlsMode: istio}}\n  \
             - {address: 10.0.0.4, tlsMode: disabled, labels: {security.istio.io/tlsMode: istio}}\n",
        )
        .unwrap();
        let modes: Vec<(&str, &str)> = state.endpoints[&("a".to_string(), 80)]
            .iter()
            .map(|e| (e.address.as_str(), e.meta.tls_mode.as_str()))
            .collect();
        assert_eq!(
            modes,
            [
                ("10.0.0.1", "disabled"),
                ("10.0.0.2", "istio"),
                ("10.0.0.3", "istio"),
                ("10.0.0.4", "disabled")
            ]
        );
    }

    /// Everything the index shows, as text, for comparing two indexes.
    fn view(index: &ServiceIndex) -> String {
        let snap = index.snapshot();
        let mut out = String::new();
        for svc in snap.services() {
            out += &format!("{svc:?}\n");
            for p in &svc.ports {
                out += &format!(
                    "  {}: {:?}\n",
                    p.port,
                    snap.endpoint_set(&svc.hostname, p.port)
                );
            }
        }
        // Every key the test uses, present or not (a stale endpoint list shows here).
        for host in ["a", "b", "c"] {
            for port in [80, 90] {
                out += &format!("{host}:{port} {:?}\n", snap.endpoint_set(host, port));
            }
        }
        let mut workloads: Vec<String> = snap.workloads().map(|w| format!("{w:?}")).collect();
        workloads.sort();
        out + &workloads.join("\n")
    }

    /// Each incremental sync leaves the index exactly as a full replace of the same file.
    #[test]
    fn incremental_syncs_match_a_full_reload() {
        let svc = |host: &str, ports: &str, eps: &str| {
            format!(
                r#"{{"hostname": "{host}", "namespace": "default", "ports": [{ports}], "endpoints": [{eps}]}}"#
            )
        };
        let http = r#"{"name": "http", "port": 80}"#;
        let grpc = r#"{"name": "grpc", "port": 90}"#;
        let ep = |ip: &str, wl: &str| {
            format!(r#"{{"address": "{ip}", "labels": {{"app": "x"}}, "workload": "{wl}"}}"#)
        };
        let doc = |services: Vec<String>| format!(r#"{{"services": [{}]}}"#, services.join(","));
        let versions = [
            doc(vec![svc("a", http, &ep("10.0.0.1", "a-1")), svc("b", http, &ep("10.0.0.2", ""))]),
            // One endpoint moves.
            doc(vec![svc("a", http, &ep("10.0.0.9", "a-1")), svc("b", http, &ep("10.0.0.2", ""))]),
            // A port is added, then removed; a service goes away; endpoints go to none.
            doc(vec![svc("a", &format!("{http},{grpc}"), &ep("10.0.0.9", "a-1")), svc("b", http, &ep("10.0.0.2", ""))]),
            doc(vec![svc("a", grpc, &ep("10.0.0.9", "a-2"))]),
            doc(vec![svc("a", grpc, ""), svc("c", http, &ep("10.0.0.3", "c-1"))]),
            r#"{"services": [], "workloads": [{"name": "vm", "namespace": "default", "addresses": ["10.9.0.1"]}]}"#.to_string(),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.json");
        let registry = FileRegistry::new(path.clone());
        let incremental = ServiceIndex::new();
        for text in &versions {
            std::fs::write(&path, text).unwrap();
            registry.sync(&incremental).unwrap();
            let full = ServiceIndex::new();
            full.replace(registry.id(), parse(text).unwrap());
            assert_eq!(view(&incremental), view(&full), "after {text}");
        }
        // A bad file changes nothing, and an unchanged file makes no events.
        let before = view(&incremental);
        std::fs::write(&path, r#"{"services": [{"hostname": ""}]}"#).unwrap();
        assert!(registry.sync(&incremental).is_err());
        assert_eq!(view(&incremental), before);
        std::fs::write(&path, &versions[5]).unwrap();
        assert_eq!(registry.sync(&incremental), Ok(0));

        // Unchanged service texts are skipped, and what they were still counts: a new service
        // reusing an unchanged one's hostname is an error naming the field; reformatting a
        // service changes nothing.
        let a = svc("a", http, &ep("10.0.0.1", "a-1"));
        let b = svc("b", http, &ep("10.0.0.2", ""));
        std::fs::write(&path, doc(vec![a.clone(), b.clone()])).unwrap();
        registry.sync(&incremental).unwrap();
        let before = view(&incremental);
        std::fs::write(&path, doc(vec![a.clone(), b.clone(), svc("a", grpc, "")])).unwrap();
        let err = registry.sync(&incremental).unwrap_err();
        assert!(
            err.contains("services[2].hostname") && err.contains("defined twice"),
            "{err}"
        );
        assert_eq!(view(&incremental), before);
        let reformatted = b.replace(", ", ",\n  ");
        std::fs::write(&path, doc(vec![a.clone(), reformatted])).unwrap();
        assert_eq!(registry.sync(&incremental), Ok(0));
        assert_eq!(view(&incremental), before);
        // The same service in YAML (no text skipping) is also no change.
        std::fs::write(&path, "services:\n- hostname: a\n  namespace: default\n  ports: [{name: http, port: 80}]\n  endpoints: [{address: 10.0.0.1, labels: {app: x}, workload: a-1}]\n- hostname: b\n  namespace: default\n  ports: [{name: http, port: 80}]\n  endpoints: [{address: 10.0.0.2, labels: {app: x}, workload: ''}]\n").unwrap();
        assert_eq!(registry.sync(&incremental), Ok(0));
        assert_eq!(view(&incremental), before);
    }

    /// A JSON read decodes only the services whose text changed since the last read.
    #[test]
    fn unchanged_service_texts_are_not_decoded_again() {
        let text = |ip: &str| {
            format!(
                r#"{{"services": [{{"hostname": "a", "ports": [{{"port": 80}}]}},
                {{"hostname": "b", "ports": [{{"port": 80}}], "endpoints": [{{"address": "{ip}"}}]}}]}}"#
            )
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.json");
        std::fs::write(&path, text("10.0.0.1")).unwrap();
        let first = FileRegistry::read(&path, &HashMap::new()).unwrap();
        assert!(first.services.iter().all(|(_, decoded)| decoded.is_some()));
        assert_eq!(first.by_text.len(), 2);
        std::fs::write(&path, text("10.0.0.2")).unwrap();
        let second = FileRegistry::read(&path, &first.by_text).unwrap();
        let decoded: Vec<(&str, bool)> = second
            .services
            .iter()
            .map(|(s, d)| (s.hostname.as_str(), d.is_some()))
            .collect();
        assert_eq!(decoded, vec![("a", false), ("b", true)]);
    }
}
