//! The synthetic mesh of the load simulator (`capstan-loadgen`'s `mesh` module), as text: N
//! services with M endpoints each in 10 namespaces, an 80/20 v1/v2 VirtualService and a
//! two-subset DestinationRule (with a connection pool) for the first services. Same shape as the
//! loadgen writes to disk; kept here so the bench does not depend on the loadgen crate.

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

/// The load simulator's default mesh: 1,000 services × 10 endpoints, 500 VirtualServices,
/// 500 DestinationRules.
pub const LOADGEN: MeshSpec = MeshSpec {
    services: 1_000,
    endpoints: 10,
    virtual_services: 500,
    destination_rules: 500,
};

/// Namespace of service `i`.
pub fn namespace(i: usize) -> String {
    format!("ns-{}", i % 10)
}

/// Hostname of service `i`.
pub fn hostname(i: usize) -> String {
    format!("svc-{i}.{}.svc.cluster.local", namespace(i))
}

/// IP of endpoint `e` of service `i`.
fn endpoint_ip(i: usize, e: usize) -> String {
    let n = i * 64 + e;
    format!(
        "10.{}.{}.{}",
        100 + (n >> 16) % 100,
        (n >> 8) & 255,
        n & 255
    )
}

/// The file registry, as JSON.
pub fn registry_json(spec: &MeshSpec) -> String {
    let services: Vec<serde_json::Value> = (0..spec.services)
        .map(|i| {
            let endpoints: Vec<serde_json::Value> = (0..spec.endpoints)
                .map(|e| {
                    serde_json::json!({
                        "address": endpoint_ip(i, e),
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

/// The VirtualService of service `i`: an 80/20 split over subsets v1/v2.
fn virtual_service_yaml(i: usize) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: svc-{i}\n  namespace: {ns}\nspec:\n  hosts: [svc-{i}]\n  http:\n  - route:\n    - destination: {{host: svc-{i}, subset: v1}}\n      weight: 80\n    - destination: {{host: svc-{i}, subset: v2}}\n      weight: 20\n    timeout: 2s\n",
        ns = namespace(i)
    )
}

/// The DestinationRule of service `i`: subsets v1/v2 and a TCP connection pool.
fn destination_rule_yaml(i: usize) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: svc-{i}\n  namespace: {ns}\nspec:\n  host: svc-{i}\n  trafficPolicy:\n    connectionPool:\n      tcp: {{maxConnections: 100}}\n  subsets:\n  - name: v1\n    labels: {{version: v1}}\n  - name: v2\n    labels: {{version: v2}}\n",
        ns = namespace(i)
    )
}

/// All VirtualServices and DestinationRules, as one multi-document YAML text.
pub fn config_yaml(spec: &MeshSpec) -> String {
    let vs = (0..spec.virtual_services.min(spec.services)).map(virtual_service_yaml);
    let dr = (0..spec.destination_rules.min(spec.services)).map(destination_rule_yaml);
    vs.chain(dr).collect::<Vec<_>>().join("---\n")
}

/// Node id of simulated sidecar `i` (as the load simulator's clients send it): namespace
/// `ns-{i % 10}`, an IP outside the services' endpoints.
pub fn node_id(i: usize) -> String {
    format!(
        "sidecar~10.200.{}.{}~load-{i}.ns-{}~ns-{}.svc.cluster.local",
        (i >> 8) & 255,
        i & 255,
        i % 10,
        i % 10
    )
}
