//! The startup benchmark's mesh: [`crate::kube_mesh`]'s Services and EndpointSlices plus a
//! given number of Istio objects in the proportions a large cluster holds them — mostly
//! VirtualServices and DestinationRules (one per service they route, varied: canary header
//! routes, retries, faults; outlier detection, Istio mTLS, consistent hashing), then
//! ServiceEntries for external and VM-hosted services, AuthorizationPolicies,
//! PeerAuthentications, Gateways and Sidecars. Every object is valid for both servers.
//!
//! VirtualService and DestinationRule `i` keep [`kube_mesh`]'s names and its 80/20 `v1`/`v2`
//! route and subsets, so the kube mode's probe proxy (last service's endpoints, last
//! DestinationRule's `v2` subset, last VirtualService's weight 80) shows a server has all of
//! it.

use crate::kube_mesh::{self, PORT};
use crate::mesh::{self, MeshSpec};
use serde_json::{json, Value};

/// How many objects of each Istio kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IstioCounts {
    pub virtual_services: usize,
    pub destination_rules: usize,
    pub service_entries: usize,
    pub authorization_policies: usize,
    pub peer_authentications: usize,
    pub gateways: usize,
    pub sidecars: usize,
}

impl IstioCounts {
    /// `total` objects: 30 % VirtualServices, 30 % DestinationRules (each at most one per
    /// service), 20 % ServiceEntries (plus what VirtualServices and DestinationRules could not
    /// take), 10 % AuthorizationPolicies, 5 % PeerAuthentications, 3 % Gateways, 2 % Sidecars.
    pub fn split(total: usize, services: usize) -> IstioCounts {
        let share = |percent: usize| total * percent / 100;
        let virtual_services = share(30).min(services);
        let destination_rules = share(30).min(services);
        let authorization_policies = share(10);
        let peer_authentications = share(5);
        let gateways = share(3);
        let sidecars = share(2);
        let service_entries = total
            - virtual_services
            - destination_rules
            - authorization_policies
            - peer_authentications
            - gateways
            - sidecars;
        IstioCounts {
            virtual_services,
            destination_rules,
            service_entries,
            authorization_policies,
            peer_authentications,
            gateways,
            sidecars,
        }
    }

    /// All of them.
    pub fn total(&self) -> usize {
        self.virtual_services
            + self.destination_rules
            + self.service_entries
            + self.authorization_policies
            + self.peer_authentications
            + self.gateways
            + self.sidecars
    }
}

fn meta(name: String, i: usize) -> Value {
    json!({"name": name, "namespace": mesh::namespace(i)})
}

/// VirtualService `i`: [`kube_mesh::virtual_service`] (80/20 split, timeout), and for every
/// other service more — a canary route on a header before it with retries, or a fault on a
/// header with an extra public host.
pub fn virtual_service(i: usize) -> Value {
    let mut vs = kube_mesh::virtual_service(i, 80);
    let name = kube_mesh::name(i);
    match i % 4 {
        1 => {
            let canary = json!({
                "name": "canary",
                "match": [{"headers": {"x-canary": {"exact": "true"}}, "uri": {"prefix": "/api"}}],
                "route": [{"destination": {"host": name, "subset": "v2"}}],
                "retries": {"attempts": 3, "perTryTimeout": "1s", "retryOn": "5xx,connect-failure"}
            });
            vs["spec"]["http"]
                .as_array_mut()
                .expect("kube_mesh's VirtualService has http routes")
                .insert(0, canary);
        }
        3 => {
            let chaos = json!({
                "name": "chaos",
                "match": [{"headers": {"x-chaos": {"exact": "on"}}}],
                "fault": {"delay": {"percentage": {"value": 5.0}, "fixedDelay": "2s"},
                          "abort": {"percentage": {"value": 1.0}, "httpStatus": 503}},
                "route": [{"destination": {"host": name, "subset": "v1"}}]
            });
            vs["spec"]["http"]
                .as_array_mut()
                .expect("kube_mesh's VirtualService has http routes")
                .insert(0, chaos);
        }
        _ => {}
    }
    vs
}

/// DestinationRule `i`: [`kube_mesh::destination_rule`] (two subsets, a connection pool), and
/// for every third service outlier detection with Istio mTLS, or consistent hashing per port.
pub fn destination_rule(i: usize) -> Value {
    let mut dr = kube_mesh::destination_rule(i);
    let policy = &mut dr["spec"]["trafficPolicy"];
    match i % 3 {
        1 => {
            policy["outlierDetection"] = json!({"consecutive5xxErrors": 5, "interval": "10s",
                "baseEjectionTime": "30s", "maxEjectionPercent": 50});
            policy["tls"] = json!({"mode": "ISTIO_MUTUAL"});
        }
        2 => {
            policy["loadBalancer"] = json!({"consistentHash": {"httpHeaderName": "x-user"}});
            policy["portLevelSettings"] = json!([{"port": {"number": PORT},
                "connectionPool": {"http": {"http2MaxRequests": 1000, "maxRequestsPerConnection": 100}}}]);
        }
        _ => {}
    }
    dr
}

/// ServiceEntry `k`: three of four an external API over TLS (DNS), the fourth a VM-hosted
/// HTTP service with two static endpoints.
pub fn service_entry(k: usize) -> Value {
    let spec = if k % 4 == 3 {
        let ip = |e: usize| {
            format!(
                "10.250.{}.{}",
                (k * 2 + e) / 250 % 250,
                (k * 2 + e) % 250 + 1
            )
        };
        json!({
            "hosts": [format!("vm-{k}.internal.example.com")],
            "location": "MESH_INTERNAL", "resolution": "STATIC",
            "ports": [{"number": 8080, "name": "http", "protocol": "HTTP"}],
            "endpoints": [{"address": ip(0), "labels": {"app": format!("vm-{k}")}},
                          {"address": ip(1), "labels": {"app": format!("vm-{k}")}}]
        })
    } else {
        json!({
            "hosts": [format!("api-{k}.external.example.com")],
            "location": "MESH_EXTERNAL", "resolution": "DNS",
            "ports": [{"number": 443, "name": "tls", "protocol": "TLS"}]
        })
    };
    json!({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
           "metadata": meta(format!("se-{k}"), k), "spec": spec})
}

/// AuthorizationPolicy `k`: service `k mod services` admits GET/POST on `/api/*` from
/// another service's account.
pub fn authorization_policy(k: usize, services: usize) -> Value {
    let target = k % services.max(1);
    let caller = (k * 7 + 1) % services.max(1);
    json!({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": meta(format!("allow-{k}"), target),
        "spec": {
            "selector": {"matchLabels": {"app": kube_mesh::name(target)}},
            "action": "ALLOW",
            "rules": [{
                "from": [{"source": {"principals": [format!(
                    "cluster.local/ns/{}/sa/{}", mesh::namespace(caller), kube_mesh::name(caller))]}}],
                "to": [{"operation": {"methods": ["GET", "POST"], "paths": ["/api/*"]}}]
            }]
        }
    })
}

/// PeerAuthentication `k`: strict mTLS for service `k mod services`, permissive on its port.
pub fn peer_authentication(k: usize, services: usize) -> Value {
    let target = k % services.max(1);
    json!({
        "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
        "metadata": meta(format!("mtls-{k}"), target),
        "spec": {
            "selector": {"matchLabels": {"app": kube_mesh::name(target)}},
            "mtls": {"mode": "STRICT"},
            "portLevelMtls": {PORT.to_string(): {"mode": "PERMISSIVE"}}
        }
    })
}

/// Gateway `k`: the ingress gateway serving one more host over HTTP.
pub fn gateway(k: usize) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "Gateway",
        "metadata": meta(format!("gw-{k}"), k),
        "spec": {
            "selector": {"istio": "ingressgateway"},
            "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"},
                         "hosts": [format!("shop-{k}.example.com")]}]
        }
    })
}

/// Sidecar `k`: service `k mod services`'s proxies see only their namespace and istio-system.
pub fn sidecar(k: usize, services: usize) -> Value {
    let target = k % services.max(1);
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
        "metadata": meta(format!("scope-{k}"), target),
        "spec": {
            "workloadSelector": {"labels": {"app": kube_mesh::name(target)}},
            "egress": [{"hosts": ["./*", "istio-system/*"]}]
        }
    })
}

/// The mesh's Kubernetes objects (namespaces first, then Services and EndpointSlices) and its
/// Istio objects, and the [`MeshSpec`] whose VirtualServices and DestinationRules they hold.
pub fn objects(
    services: usize,
    endpoints: usize,
    counts: &IstioCounts,
) -> (MeshSpec, Vec<Value>, Vec<Value>) {
    let spec = MeshSpec {
        services,
        endpoints,
        virtual_services: counts.virtual_services,
        destination_rules: counts.destination_rules,
    };
    let mut kube: Vec<Value> = kube_mesh::namespaces(&spec)
        .iter()
        .map(|n| kube_mesh::namespace_object(n))
        .collect();
    for i in 0..services {
        kube.push(kube_mesh::service(i));
        kube.push(kube_mesh::endpoint_slice(&spec, i, 0));
    }
    let mut istio = Vec::with_capacity(counts.total());
    istio.extend((0..counts.virtual_services).map(virtual_service));
    istio.extend((0..counts.destination_rules).map(destination_rule));
    istio.extend((0..counts.service_entries).map(service_entry));
    istio.extend((0..counts.authorization_policies).map(|k| authorization_policy(k, services)));
    istio.extend((0..counts.peer_authentications).map(|k| peer_authentication(k, services)));
    istio.extend((0..counts.gateways).map(gateway));
    istio.extend((0..counts.sidecars).map(|k| sidecar(k, services)));
    (spec, kube, istio)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_thousand_objects_split_by_kind() {
        let c = IstioCounts::split(10_000, 5_000);
        assert_eq!(
            c,
            IstioCounts {
                virtual_services: 3_000,
                destination_rules: 3_000,
                service_entries: 2_000,
                authorization_policies: 1_000,
                peer_authentications: 500,
                gateways: 300,
                sidecars: 200,
            }
        );
        assert_eq!(c.total(), 10_000);
        // Fewer services than the routing share: the rest become ServiceEntries.
        let few = IstioCounts::split(1_000, 100);
        assert_eq!((few.virtual_services, few.destination_rules), (100, 100));
        assert_eq!(few.total(), 1_000);
        assert_eq!(few.service_entries, 1_000 - 200 - 100 - 50 - 30 - 20);
    }

    #[test]
    fn objects_have_unique_names_and_the_probes_route() {
        let counts = IstioCounts::split(400, 50);
        let (spec, kube, istio) = objects(50, 3, &counts);
        assert_eq!(kube.len(), 10 + 2 * 50);
        assert_eq!(istio.len(), 400);
        let mut keys: Vec<String> = istio
            .iter()
            .map(|o| {
                format!(
                    "{}/{}/{}",
                    o["kind"].as_str().expect("kind"),
                    o["metadata"]["namespace"].as_str().expect("namespaced"),
                    o["metadata"]["name"].as_str().expect("named")
                )
            })
            .collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 400, "no two objects share a name");
        // Every VirtualService keeps kube_mesh's 80/20 route, which the probe looks for.
        let last = spec.virtual_services - 1;
        for i in [0, 1, 3, last] {
            let vs = virtual_service(i);
            let routes = vs["spec"]["http"].as_array().expect("routes");
            assert!(
                routes
                    .iter()
                    .any(|r| r == &kube_mesh::virtual_service(i, 80)["spec"]["http"][0]),
                "VirtualService {i}"
            );
        }
        for i in 0..3 {
            assert_eq!(
                destination_rule(i)["spec"]["subsets"],
                kube_mesh::destination_rule(i)["spec"]["subsets"]
            );
        }
    }

    #[test]
    fn selectors_and_principals_name_mesh_services() {
        let ap = authorization_policy(12, 10);
        assert_eq!(ap["metadata"]["namespace"], "ns-2");
        assert_eq!(ap["spec"]["selector"]["matchLabels"]["app"], "svc-2");
        assert_eq!(
            ap["spec"]["rules"][0]["from"][0]["source"]["principals"][0],
            "cluster.local/ns/ns-5/sa/svc-5"
        );
        assert_eq!(
            peer_authentication(3, 10)["spec"]["portLevelMtls"]["9080"]["mode"],
            "PERMISSIVE"
        );
        let vm = service_entry(3);
        assert_eq!(vm["spec"]["resolution"], "STATIC");
        assert_ne!(
            vm["spec"]["endpoints"][0]["address"],
            vm["spec"]["endpoints"][1]["address"]
        );
        assert_eq!(service_entry(4)["spec"]["resolution"], "DNS");
    }
}
