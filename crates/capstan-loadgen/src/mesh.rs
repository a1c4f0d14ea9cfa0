//! Writes a synthetic mesh for the embedded default (file config + file registry): N services
//! with M endpoints each in 10 namespaces, plus VirtualServices and DestinationRules for some.

use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::Path;

/// Mesh shape.
#[derive(Clone, Copy, Debug)]
pub struct MeshSpec {
    /// Services.
    pub services: usize,
    /// Endpoints per service.
    pub endpoints: usize,
    /// VirtualServices (one per service, for the first N services).
    pub virtual_services: usize,
    /// DestinationRules (one per service, for the first N services).
    pub destination_rules: usize,
}

/// Namespace of service `i`.
pub fn namespace(i: usize) -> String {
    format!("ns-{}", i % 10)
}

/// Hostname of service `i`.
pub fn hostname(i: usize) -> String {
    format!("svc-{i}.{}.svc.cluster.local", namespace(i))
}

/// IP of endpoint `e` of service `i`; `generation` shifts it, to make an endpoint change.
pub fn endpoint_ip(i: usize, e: usize, generation: usize) -> String {
    let n = i * 64 + e + generation * 7919;
    format!(
        "10.{}.{}.{}",
        100 + (n >> 16) % 100,
        (n >> 8) & 255,
        n & 255
    )
}

/// The registry as JSON (what a machine writes; it parses several times faster than YAML), with
/// service `changed` (if any) at endpoint generation `generation`.
pub fn registry_json(spec: &MeshSpec, changed: Option<(usize, usize)>) -> String {
    let services: Vec<serde_json::Value> = (0..spec.services)
        .map(|i| {
            let gen = match changed {
                Some((s, g)) if s == i => g,
                _ => 0,
            };
            let endpoints: Vec<serde_json::Value> = (0..spec.endpoints)
                .map(|e| {
                    serde_json::json!({
                        "address": endpoint_ip(i, e, gen),
                        "labels": {"app": format!("svc-{i}"), "version": format!("v{}", e % 2 + 1)},
                        "serviceAccount": format!("svc-{i}"),
                        "locality": format!("region-a/zone-{}", e % 3),
                    })
                })
                .collect();
            serde_json::json!({
                "hostname": hostname(i),
                "namespace": namespace(i),
                "ports": [{"name": "http", "port": 9080}],
                "addresses": [format!("10.96.{}.{}", i / 250, i % 250 + 1)],
                "endpoints": endpoints,
            })
        })
        .collect();
    serde_json::json!({ "services": services }).to_string()
}

/// The registry YAML, with service `changed` (if any) at endpoint generation `generation`.
pub fn registry_yaml(spec: &MeshSpec, changed: Option<(usize, usize)>) -> String {
    let mut out = String::from("services:\n");
    for i in 0..spec.services {
        let gen = match changed {
            Some((s, g)) if s == i => g,
            _ => 0,
        };
        let _ = writeln!(out, "- hostname: {}\n  namespace: {}\n  ports: [{{name: http, port: 9080}}]\n  addresses: [10.96.{}.{}]\n  endpoints:", hostname(i), namespace(i), i / 250, i % 250 + 1);
        for e in 0..spec.endpoints {
            let _ = writeln!(out, "  - {{address: {}, labels: {{app: svc-{i}, version: v{}}}, serviceAccount: svc-{i}, locality: region-a/zone-{}}}", endpoint_ip(i, e, gen), e % 2 + 1, e % 3);
        }
    }
    out
}

/// The VirtualService of service `i`: an 80/20 (or `weight`/100-`weight`) split over v1/v2.
pub fn virtual_service_yaml(i: usize, weight: u32) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: svc-{i}\n  namespace: {ns}\nspec:\n  hosts: [svc-{i}]\n  http:\n  - route:\n    - destination: {{host: svc-{i}, subset: v1}}\n      weight: {weight}\n    - destination: {{host: svc-{i}, subset: v2}}\n      weight: {rest}\n    timeout: 2s\n",
        ns = namespace(i),
        rest = 100 - weight
    )
}

fn destination_rule_yaml(i: usize) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: svc-{i}\n  namespace: {ns}\nspec:\n  host: svc-{i}\n  trafficPolicy:\n    connectionPool:\n      tcp: {{maxConnections: 100}}\n  subsets:\n  - name: v1\n    labels: {{version: v1}}\n  - name: v2\n    labels: {{version: v2}}\n",
        ns = namespace(i)
    )
}

/// Node id of simulated sidecar `i` (namespace `ns-{i % 10}`, an IP outside the endpoints).
pub fn node_id(i: usize) -> String {
    format!(
        "sidecar~10.200.{}.{}~load-{i}.ns-{}~ns-{}.svc.cluster.local",
        (i >> 8) & 255,
        i & 255,
        i % 10,
        i % 10
    )
}

/// Every VirtualService (80/20) and DestinationRule of the mesh, as one multi-document YAML
/// text (what `write` puts in separate files).
pub fn config_yaml(spec: &MeshSpec) -> String {
    let vs = (0..spec.virtual_services.min(spec.services)).map(|i| virtual_service_yaml(i, 80));
    let dr = (0..spec.destination_rules.min(spec.services)).map(destination_rule_yaml);
    vs.chain(dr).collect::<Vec<_>>().join("---\n")
}

/// Writes `dir/registry.yaml` and `dir/config/{virtual-services,destination-rules}/*.yaml`.
pub fn write(dir: &Path, spec: &MeshSpec) -> Result<()> {
    let config = dir.join("config");
    std::fs::create_dir_all(config.join("virtual-services"))
        .context("creating mesh directories")?;
    std::fs::create_dir_all(config.join("destination-rules"))?;
    std::fs::write(dir.join("registry.yaml"), registry_yaml(spec, None))?;
    std::fs::write(dir.join("registry.json"), registry_json(spec, None))?;
    for i in 0..spec.virtual_services.min(spec.services) {
        std::fs::write(
            config.join(format!("virtual-services/svc-{i}.yaml")),
            virtual_service_yaml(i, 80),
        )?;
    }
    for i in 0..spec.destination_rules.min(spec.services) {
        std::fs::write(
            config.join(format!("destination-rules/svc-{i}.yaml")),
            destination_rule_yaml(i),
        )?;
    }
    Ok(())
}
