//! Differential xDS: istiod (`pilot-discovery` at the pinned Istio version) and
//! `capstan discovery` watch the same private kube-apiserver holding the same Nodes, Pods,
//! Services, EndpointSlices and Istio config — Bookinfo with the traffic-management tasks of
//! Istio's documentation (request routing, fault injection, traffic shifting, TCP traffic
//! shifting, request timeouts, circuit breaking, mirroring, ingress gateway, egress with
//! ServiceEntry, locality load balancing, Sidecar scoping, delegate VirtualServices), then its
//! security tasks (PeerAuthentication, AuthorizationPolicy, RequestAuthentication, client TLS
//! modes) in a last phase. The same
//! sidecar and gateway node identities fetch everything from each over Delta ADS, and the
//! answers are compared semantically (`xds_diff`: what is compared and the Istio-only rule).
//!
//! Every difference must be listed, with its reason, in `tests/testdata/xds-differences.yaml`
//! (the table in docs/compatibility.md), and every listed difference must still occur. The
//! report names each difference by phase, node, resource and field path;
//! `CAPSTAN_XDS_DIFF_REPORT=<file>` also writes it, listed or not, and
//! `CAPSTAN_XDS_DIFF_FACTS=<dir>` writes every phase's facts of each node and server.

mod discovery_support;
mod xds_diff;
mod xds_fetch;

use anyhow::{Context, Result};
use capstan_e2e::istiod::Istiod;
use capstan_e2e::private_kube::PrivateKube;
use capstan_proxy::resources::{Update, CLUSTER, ENDPOINT, LISTENER, ROUTE};
use discovery_support::Discovery;
use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::listener::v3::{filter, Listener};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use prost::Message;
use std::collections::BTreeSet;
use std::time::Duration;
use xds_fetch::Wants;

/// A pod of the mesh: namespace, app, version, IP, node, service account.
struct Pod {
    ns: &'static str,
    app: &'static str,
    version: &'static str,
    ip: &'static str,
    node: &'static str,
}

const PODS: &[Pod] = &[
    Pod {
        ns: "bookinfo",
        app: "productpage",
        version: "v1",
        ip: "10.9.0.1",
        node: "node-a",
    },
    Pod {
        ns: "bookinfo",
        app: "details",
        version: "v1",
        ip: "10.9.0.2",
        node: "node-a",
    },
    Pod {
        ns: "bookinfo",
        app: "reviews",
        version: "v1",
        ip: "10.9.0.3",
        node: "node-a",
    },
    Pod {
        ns: "bookinfo",
        app: "reviews",
        version: "v2",
        ip: "10.9.0.4",
        node: "node-b",
    },
    Pod {
        ns: "bookinfo",
        app: "reviews",
        version: "v3",
        ip: "10.9.0.5",
        node: "node-b",
    },
    Pod {
        ns: "bookinfo",
        app: "ratings",
        version: "v1",
        ip: "10.9.0.6",
        node: "node-a",
    },
    Pod {
        ns: "default",
        app: "httpbin",
        version: "v1",
        ip: "10.9.1.1",
        node: "node-a",
    },
    Pod {
        ns: "default",
        app: "httpbin",
        version: "v2",
        ip: "10.9.1.2",
        node: "node-b",
    },
    Pod {
        ns: "default",
        app: "tcp-echo",
        version: "v1",
        ip: "10.9.1.3",
        node: "node-a",
    },
    Pod {
        ns: "default",
        app: "tcp-echo",
        version: "v2",
        ip: "10.9.1.4",
        node: "node-b",
    },
    Pod {
        ns: "default",
        app: "helloworld",
        version: "v1",
        ip: "10.9.1.5",
        node: "node-a",
    },
    Pod {
        ns: "default",
        app: "helloworld",
        version: "v2",
        ip: "10.9.1.6",
        node: "node-b",
    },
    Pod {
        ns: "scoped",
        app: "sleep",
        version: "v1",
        ip: "10.9.2.1",
        node: "node-a",
    },
    Pod {
        ns: "istio-system",
        app: "istio-ingressgateway",
        version: "",
        ip: "10.9.3.1",
        node: "node-a",
    },
];

/// A service port: name, port, target port.
type Port = (&'static str, u16, u16);

/// Services: namespace, name, ports.
const SERVICES: &[(&str, &str, &[Port])] = &[
    ("bookinfo", "productpage", &[("http", 9080, 9080)]),
    ("bookinfo", "details", &[("http", 9080, 9080)]),
    ("bookinfo", "reviews", &[("http", 9080, 9080)]),
    ("bookinfo", "ratings", &[("http", 9080, 9080)]),
    ("default", "httpbin", &[("http", 8000, 80)]),
    (
        "default",
        "tcp-echo",
        &[("tcp", 9000, 9000), ("tcp-other", 9001, 9001)],
    ),
    ("default", "helloworld", &[("http", 5000, 5000)]),
    ("scoped", "sleep", &[("http", 80, 80)]),
    (
        "istio-system",
        "istio-ingressgateway",
        &[
            ("http2", 80, 8080),
            ("https", 443, 8443),
            ("tcp", 31400, 31400),
        ],
    ),
];

fn pod_name(p: &Pod) -> String {
    if p.version.is_empty() {
        format!("{}-0", p.app)
    } else {
        format!("{}-{}-0", p.app, p.version)
    }
}

fn pod_labels(p: &Pod) -> Vec<(&'static str, &'static str)> {
    if p.app == "istio-ingressgateway" {
        return vec![("istio", "ingressgateway"), ("app", "istio-ingressgateway")];
    }
    vec![
        ("app", p.app),
        ("version", p.version),
        ("security.istio.io/tlsMode", "istio"),
    ]
}

fn service_account(p: &Pod) -> String {
    if p.ns == "bookinfo" {
        format!("bookinfo-{}", p.app)
    } else {
        p.app.to_string()
    }
}

/// Nodes, namespaces, pods, services and their EndpointSlices.
fn mesh_yaml() -> String {
    let mut out = String::new();
    for (node, region, zone) in [
        ("node-a", "us-east", "us-east-1a"),
        ("node-b", "us-west", "us-west-1b"),
    ] {
        out.push_str(&format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: {node}\n  labels: {{topology.kubernetes.io/region: {region}, topology.kubernetes.io/zone: {zone}}}\n---\n"
        ));
    }
    for ns in ["bookinfo", "scoped"] {
        out.push_str(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n---\n"
        ));
    }
    let mut accounts = BTreeSet::new();
    for p in PODS {
        if accounts.insert((p.ns, service_account(p))) {
            out.push_str(&format!(
                "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {}, namespace: {}}}\n---\n",
                service_account(p),
                p.ns
            ));
        }
    }
    for p in PODS {
        let labels: Vec<String> = pod_labels(p)
            .iter()
            .map(|(k, v)| format!("{k}: \"{v}\""))
            .collect();
        out.push_str(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {}\n  namespace: {}\n  labels: {{{}}}\nspec:\n  nodeName: {}\n  serviceAccountName: {}\n  containers: [{{name: app, image: app}}]\n---\n",
            pod_name(p),
            p.ns,
            labels.join(", "),
            p.node,
            service_account(p),
        ));
    }
    for (ns, name, ports) in SERVICES {
        let selector = if *name == "istio-ingressgateway" {
            "{istio: ingressgateway}".to_string()
        } else {
            format!("{{app: {name}}}")
        };
        let svc_ports: Vec<String> = ports
            .iter()
            .map(|(n, p, t)| format!("{{name: {n}, port: {p}, targetPort: {t}}}"))
            .collect();
        out.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {name}}}}}\nspec:\n  selector: {selector}\n  ports: [{}]\n---\n",
            svc_ports.join(", ")
        ));
        let slice_ports: Vec<String> = ports
            .iter()
            .map(|(n, _, t)| format!("{{name: {n}, port: {t}, protocol: TCP}}"))
            .collect();
        let endpoints: Vec<String> = PODS
            .iter()
            .filter(|p| p.ns == *ns && p.app == *name)
            .map(|p| {
                let zone = if p.node == "node-a" { "us-east-1a" } else { "us-west-1b" };
                format!(
                    "- addresses: [{}]\n  conditions: {{ready: true}}\n  nodeName: {}\n  zone: {zone}\n  targetRef: {{kind: Pod, name: {}, namespace: {}}}\n",
                    p.ip, p.node, pod_name(p), p.ns
                )
            })
            .collect();
        out.push_str(&format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{}]\nendpoints:\n{}---\n",
            slice_ports.join(", "),
            endpoints.concat()
        ));
    }
    out
}

/// The traffic-management tasks' configuration not taken from the conformance corpus (the
/// corpus holds Istio's sample files; these follow the task pages).
const TASKS_YAML: &str = r#"
# Circuit breaking and mirroring (httpbin v1, mirrored to v2).
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin, namespace: default}
spec:
  host: httpbin
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1}
      http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1}
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 3m, maxEjectionPercent: 100}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin, namespace: default}
spec:
  hosts: [httpbin]
  http:
  - route:
    - destination: {host: httpbin, subset: v1}
      weight: 100
    mirror: {host: httpbin, subset: v2}
    mirrorPercentage: {value: 100.0}
---
# Locality load balancing (failover between the two regions).
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: helloworld, namespace: default}
spec:
  host: helloworld.default.svc.cluster.local
  trafficPolicy:
    connectionPool:
      http: {maxRequestsPerConnection: 1}
    loadBalancer:
      simple: ROUND_ROBIN
      localityLbSetting:
        enabled: true
        failover:
        - {from: us-east, to: us-west}
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 1m}
---
# Ingress: httpbin through the ingress gateway by host.
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: httpbin-gateway, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [httpbin.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin-ingress, namespace: default}
spec:
  hosts: [httpbin.example.com]
  gateways: [httpbin-gateway]
  http:
  - match:
    - uri: {prefix: /status}
    - uri: {prefix: /delay}
    route:
    - destination:
        port: {number: 8000}
        host: httpbin
---
# Egress: an external HTTP service with a timeout.
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: httpbin-ext, namespace: default}
spec:
  hosts: [httpbin.org]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  resolution: DNS
  location: MESH_EXTERNAL
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin-ext, namespace: default}
spec:
  hosts: [httpbin.org]
  http:
  - timeout: 3s
    route:
    - destination: {host: httpbin.org}
      weight: 100
---
# Sidecar scoping: the `scoped` namespace sees itself, the gateways and httpbin only.
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: scoped}
spec:
  egress:
  - hosts: ["./*", "istio-system/*", "default/httpbin.default.svc.cluster.local"]
---
# Delegate VirtualServices: a gateway root delegating /productpage to bookinfo's owners.
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: delegate-gateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [delegate.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: root, namespace: istio-system}
spec:
  hosts: [delegate.example.com]
  gateways: [delegate-gateway]
  http:
  - match:
    - uri: {prefix: /productpage}
    delegate: {name: productpage-delegate, namespace: bookinfo}
  - route:
    - destination: {host: httpbin.default.svc.cluster.local, port: {number: 8000}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: productpage-delegate, namespace: bookinfo}
spec:
  http:
  - match:
    - uri: {exact: /productpage}
    route:
    - destination: {host: productpage.bookinfo.svc.cluster.local, port: {number: 9080}}
"#;

/// The request-timeouts task: reviews to v2 with a 0.5 s timeout, ratings delayed 2 s.
const TIMEOUTS_YAML: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v2}
    timeout: 0.5s
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: bookinfo}
spec:
  hosts: [ratings]
  http:
  - fault:
      delay: {percentage: {value: 100}, fixedDelay: 2s}
    route:
    - destination: {host: ratings, subset: v1}
"#;

/// The security tasks (mutual TLS migration, authentication policy, HTTP/TCP/JWT/deny/IP
/// authorization, ingress JWT), aimed at the compared nodes. Last: the mesh-wide STRICT policy
/// changes every inbound listener. The JWKS is inline (Istio's sample key set), so neither
/// server fetches a `jwksUri`.
const SECURITY_YAML: &str = r#"
# Mutual TLS: mesh-wide STRICT; bookinfo PERMISSIVE; reviews inherits it but disables mTLS on
# its service port and requires it on an undeclared one.
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: bookinfo}
spec:
  mtls: {mode: PERMISSIVE}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: reviews}}
  portLevelMtls:
    9080: {mode: DISABLE}
    8081: {mode: STRICT}
---
# Client TLS: tcp-echo in plaintext (DISABLE); bookinfo's rules become ISTIO_MUTUAL (corpus).
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tcp-echo-destination, namespace: default}
spec:
  host: tcp-echo
  trafficPolicy:
    tls: {mode: DISABLE}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
# Allow nothing in `scoped` (its one workload, sleep).
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: scoped}
spec: {}
---
# reviews: HTTP authorization (principals, namespaces, methods, paths, ports, headers,
# source IPs), a DENY, an AUDIT, and a JWT requirement.
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-viewer, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/bookinfo/sa/bookinfo-productpage"]}
    to:
    - operation: {methods: ["GET"], paths: ["/reviews/*", "/health"]}
  - from:
    - source: {namespaces: ["bookinfo", "istio-system"], notPrincipals: ["*/sa/bookinfo-ratings"]}
    to:
    - operation: {methods: ["GET", "HEAD"], ports: ["9080"]}
    when:
    - key: request.headers[version]
      values: ["v1", "v2"]
  - from:
    - source: {ipBlocks: ["10.9.0.0/16"], notIpBlocks: ["10.9.0.6"]}
    when:
    - key: source.ip
      values: ["10.9.0.1"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-method-delete, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules:
  - to:
    - operation: {methods: ["DELETE"], notPaths: ["/admin/*"]}
    when:
    - key: request.headers[x-token]
      notValues: ["admin"]
  - from:
    - source: {notNamespaces: ["bookinfo"]}
    to:
    - operation: {ports: ["8081"]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-reviews, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: reviews}}
  action: AUDIT
  rules:
  - to:
    - operation: {paths: ["/reviews/*"]}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt-example, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: reviews}}
  jwtRules:
  - issuer: "testing@secure.istio.io"
    audiences: ["reviews.bookinfo"]
    jwks: '{ "keys":[ {"e":"AQAB","kid":"DHFbpoIUqrY8t2zpA2qXfCmr5VO5ZEr4RzHU_-envvQ","kty":"RSA","n":"xAE7eB6qugXyCAG3yhh7pkDkT65pHymX-P7KfIupjf59vsdo91bSP9C8H07pSAGQO1MV_xFj9VswgsCg4R6otmg5PV2He95lZdHtOcU5DXIg_pbhLdKXbi66GlVeK6ABZOUW3WYtnNHD-91gVuoeJT_DwtGGcp4ignkgXfkiEm4sw-4sfb4qdt5oLbyVpmW6x9cfa7vs2WTfURiCrBoUqgBo_-4WTiULmmHSGZHOjzwa8WtrtOQGsAFjIbno85jp6MnGGGZPYZbDAa_b3y5u-YpW7ypZrvD8BgtKVjgtQgZhLAGezMt0ua3DRrWnKqTZ0BJ_EyxOGuHJrLsn00fnMQ"}]}'
    fromHeaders: [{name: x-jwt-assertion, prefix: "Bearer "}]
    fromParams: [token]
    forwardOriginalToken: true
    outputPayloadToHeader: x-jwt-payload
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-jwt, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules:
  - from:
    - source: {requestPrincipals: ["testing@secure.istio.io/testing@secure.istio.io"]}
    when:
    - key: request.auth.claims[groups]
      values: ["group1"]
---
# The ingress gateway: JWT on ingress, IP-based allow, and a TCP (31400) deny.
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: ingress-jwt, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  jwtRules:
  - issuer: "testing@secure.istio.io"
    jwks: '{ "keys":[ {"e":"AQAB","kid":"DHFbpoIUqrY8t2zpA2qXfCmr5VO5ZEr4RzHU_-envvQ","kty":"RSA","n":"xAE7eB6qugXyCAG3yhh7pkDkT65pHymX-P7KfIupjf59vsdo91bSP9C8H07pSAGQO1MV_xFj9VswgsCg4R6otmg5PV2He95lZdHtOcU5DXIg_pbhLdKXbi66GlVeK6ABZOUW3WYtnNHD-91gVuoeJT_DwtGGcp4ignkgXfkiEm4sw-4sfb4qdt5oLbyVpmW6x9cfa7vs2WTfURiCrBoUqgBo_-4WTiULmmHSGZHOjzwa8WtrtOQGsAFjIbno85jp6MnGGGZPYZbDAa_b3y5u-YpW7ypZrvD8BgtKVjgtQgZhLAGezMt0ua3DRrWnKqTZ0BJ_EyxOGuHJrLsn00fnMQ"}]}'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ingress-policy, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: ALLOW
  rules:
  - from:
    - source: {remoteIpBlocks: ["1.2.3.4", "5.6.7.0/24"]}
  - from:
    - source: {requestPrincipals: ["*"]}
    to:
    - operation: {hosts: ["httpbin.example.com"], paths: ["/headers"]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ingress-deny-tcp, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: DENY
  rules:
  - to:
    - operation: {ports: ["31400"], methods: ["GET"]}
  - from:
    - source: {ipBlocks: ["10.0.0.0/8"]}
    to:
    - operation: {ports: ["31400"]}
"#;

/// One step of the run: corpus files applied (namespace, path under
/// `conformance/istio/valid`), then inline YAML.
struct Phase {
    name: &'static str,
    corpus: &'static [(&'static str, &'static str)],
    inline: &'static str,
}

const PHASES: &[Phase] = &[
    Phase {
        name: "routing",
        corpus: &[
            ("bookinfo", "bookinfo/destination-rule-all.yaml"),
            ("bookinfo", "bookinfo/bookinfo-gateway.yaml"),
            ("bookinfo", "bookinfo/virtual-service-all-v1.yaml"),
            ("bookinfo", "bookinfo/virtual-service-reviews-test-v2.yaml"),
            (
                "bookinfo",
                "bookinfo/virtual-service-ratings-test-delay.yaml",
            ),
            ("bookinfo", "bookinfo/fault-injection-details-v1.yaml"),
            ("bookinfo", "bookinfo/egress-rule-google-apis.yaml"),
            ("default", "samples/tcp-echo__tcp-echo-all-v1.yaml"),
        ],
        inline: TASKS_YAML,
    },
    Phase {
        name: "shifting",
        corpus: &[
            ("bookinfo", "bookinfo/virtual-service-reviews-50-v3.yaml"),
            (
                "bookinfo",
                "bookinfo/virtual-service-ratings-test-abort.yaml",
            ),
            ("default", "samples/tcp-echo__tcp-echo-20-v2.yaml"),
        ],
        inline: "",
    },
    Phase {
        name: "timeouts",
        corpus: &[],
        inline: TIMEOUTS_YAML,
    },
    Phase {
        name: "security",
        corpus: &[("bookinfo", "bookinfo/destination-rule-all-mtls.yaml")],
        inline: SECURITY_YAML,
    },
];

/// The node identities compared: (short name, pod).
fn nodes() -> Vec<(&'static str, envoy_types::pb::envoy::config::core::v3::Node)> {
    let node = |kind: &str, app: &str, version: &str| {
        let p = PODS
            .iter()
            .find(|p| p.app == app && p.version == version)
            .expect("a pod of the table");
        xds_fetch::node(
            &format!(
                "{kind}~{}~{}.{}~{}.svc.cluster.local",
                p.ip,
                pod_name(p),
                p.ns,
                p.ns
            ),
            p.ns,
            &pod_labels(p),
        )
    };
    vec![
        ("sidecar-reviews", node("sidecar", "reviews", "v1")),
        ("sidecar-scoped", node("sidecar", "sleep", "v1")),
        ("gateway", node("router", "istio-ingressgateway", "")),
    ]
}

/// EDS and RDS names read from the decoded clusters and listeners (independent of what the
/// proxy implements).
#[derive(Default)]
struct DecodedWants {
    eds: BTreeSet<String>,
    rds: BTreeSet<String>,
}

impl Wants for DecodedWants {
    fn offer(&mut self, type_url: &'static str, u: &Update) {
        if type_url == CLUSTER {
            if let Ok(c) = Cluster::decode(u.resource.value.as_slice()) {
                let eds = matches!(c.cluster_discovery_type, Some(cluster::ClusterDiscoveryType::Type(t)) if t == cluster::DiscoveryType::Eds as i32);
                if eds {
                    let service = c
                        .eds_cluster_config
                        .map(|e| e.service_name)
                        .filter(|s| !s.is_empty())
                        .unwrap_or(c.name);
                    self.eds.insert(service);
                }
            }
        } else if type_url == LISTENER {
            if let Ok(l) = Listener::decode(u.resource.value.as_slice()) {
                for chain in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
                    for f in &chain.filters {
                        let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                            continue;
                        };
                        if !any.type_url.ends_with("HttpConnectionManager") {
                            continue;
                        }
                        if let Ok(hcm) = HttpConnectionManager::decode(any.value.as_slice()) {
                            if let Some(RouteSpecifier::Rds(r)) = hcm.route_specifier {
                                self.rds.insert(r.route_config_name);
                            }
                        }
                    }
                }
            }
        }
    }

    fn wanted(&self, type_url: &'static str) -> BTreeSet<String> {
        match type_url {
            ENDPOINT => self.eds.clone(),
            ROUTE => self.rds.clone(),
            _ => BTreeSet::new(),
        }
    }
}

async fn facts_of(
    port: u16,
    node: envoy_types::pb::envoy::config::core::v3::Node,
) -> Result<xds_diff::Facts> {
    let mut wants = DecodedWants::default();
    let fetched = xds_fetch::fetch_all(port, node, Duration::from_millis(1500), &mut wants).await?;
    xds_diff::facts(&fetched)
}

/// A listed, intended difference: a glob over `<phase> <node> <path>`, and why.
#[derive(serde::Deserialize)]
struct Listed {
    path: String,
    why: String,
}

fn listed() -> Result<Vec<Listed>> {
    let file = capstan_e2e::repo_root().join("tests/testdata/xds-differences.yaml");
    let text = std::fs::read_to_string(&file).with_context(|| file.display().to_string())?;
    let listed: Vec<Listed> =
        serde_yaml_ng::from_str(&text).with_context(|| file.display().to_string())?;
    for l in &listed {
        anyhow::ensure!(
            !l.why.trim().is_empty(),
            "{}: `{}` has no reason",
            file.display(),
            l.path
        );
    }
    Ok(listed)
}

fn apply_phase(kube: &PrivateKube, phase: &Phase) -> Result<()> {
    let corpus = capstan_e2e::repo_root().join("../shared/conformance/istio/valid");
    for (ns, file) in phase.corpus {
        let path = corpus.join(file);
        kube.kubectl(&["-n", ns, "apply", "-f", &path.display().to_string()])
            .with_context(|| format!("applying {file}"))?;
    }
    if !phase.inline.trim().is_empty() {
        kube.apply(phase.inline)
            .with_context(|| format!("applying the inline config of {}", phase.name))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istiod_and_capstan_send_the_same_xds_for_istios_traffic_management_tasks() -> Result<()> {
    let Some(ctx) = capstan_e2e::context("xds-differential")? else {
        return Ok(());
    };
    let listed = listed()?;
    let kube = PrivateKube::start("xds-differential", &[])?;
    let istiod = Istiod::start(&kube, &ctx.scratch)?;
    kube.apply(&mesh_yaml())?;
    for p in PODS {
        let status = format!(
            r#"{{"status":{{"phase":"Running","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}],"conditions":[{{"type":"Ready","status":"True"}}]}}}}"#,
            ip = p.ip
        );
        kube.kubectl(&[
            "-n",
            p.ns,
            "patch",
            "pod",
            &pod_name(p),
            "--subresource=status",
            "--type=merge",
            "-p",
            &status,
        ])?;
    }
    let kubeconfig = kube.kubeconfig().display().to_string();
    let capstan = Discovery::start(&ctx.scratch, "capstan", &["--kubeconfig", &kubeconfig])?;

    let mut report: Vec<(String, xds_diff::Difference)> = Vec::new();
    for phase in PHASES {
        apply_phase(&kube, phase)?;
        // Both debounce (istiod 100 ms) and then push: let them see everything first.
        tokio::time::sleep(Duration::from_secs(3)).await;
        for (short, node) in nodes() {
            let reference = facts_of(istiod.grpc_port, node.clone())
                .await
                .with_context(|| format!("istiod, {short}: {}", istiod.tail()))?;
            let ours = facts_of(capstan.xds_port, node)
                .await
                .with_context(|| format!("capstan, {short}: {}", capstan.tail()))?;
            anyhow::ensure!(
                reference.keys().any(|k| k.starts_with("cluster ")),
                "istiod sent {short} no clusters:\n{}",
                istiod.tail()
            );
            if let Some(dir) = std::env::var_os("CAPSTAN_XDS_DIFF_FACTS") {
                for (side, facts) in [("istiod", &reference), ("capstan", &ours)] {
                    let text: String = facts.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
                    let file = std::path::Path::new(&dir)
                        .join(format!("{}-{short}-{side}.txt", phase.name));
                    std::fs::write(file, text)?;
                }
            }
            for d in xds_diff::diff(&reference, &ours) {
                report.push((format!("{} {short} {}", phase.name, d.path), d));
            }
        }
    }

    let mut used = vec![false; listed.len()];
    let mut unlisted = Vec::new();
    let mut text = String::new();
    for (key, d) in &report {
        let hit = listed.iter().position(|l| xds_diff::glob(&l.path, key));
        match hit {
            Some(i) => used[i] = true,
            None => unlisted.push(format!(
                "{key}\n    istiod:  {}\n    capstan: {}",
                show(&d.reference),
                show(&d.capstan)
            )),
        }
        text.push_str(&format!(
            "{}{key}\n    istiod:  {}\n    capstan: {}\n",
            if hit.is_some() { "[listed] " } else { "" },
            show(&d.reference),
            show(&d.capstan)
        ));
    }
    if let Some(file) = std::env::var_os("CAPSTAN_XDS_DIFF_REPORT") {
        std::fs::write(&file, &text)?;
    }
    let stale: Vec<&str> = listed
        .iter()
        .zip(&used)
        .filter(|(_, u)| !**u)
        .map(|(l, _)| l.path.as_str())
        .collect();
    eprintln!(
        "{} differences, {} listed in tests/testdata/xds-differences.yaml",
        report.len(),
        report.len() - unlisted.len()
    );
    anyhow::ensure!(
        unlisted.is_empty() && stale.is_empty(),
        "{} differences between istiod and capstan are not listed in \
         tests/testdata/xds-differences.yaml (fix them or list them with the reason):\n{}\n\n\
         listed but no longer seen (remove them): {stale:#?}",
        unlisted.len(),
        unlisted.join("\n")
    );
    Ok(())
}

fn show(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "(absent)".into())
}
