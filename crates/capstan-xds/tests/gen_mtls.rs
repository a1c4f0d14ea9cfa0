//! Istio's mutual TLS as generated: auto mTLS on outbound clusters with endpoint metadata,
//! DestinationRule TLS taking over, and PeerAuthentication shaping `virtualInbound`.

mod common;

use common::*;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
use envoy_types::pb::envoy::config::core::v3::TransportSocket;
use envoy_types::pb::envoy::config::endpoint::v3::{lb_endpoint, ClusterLoadAssignment};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::ValidationContextType, DownstreamTlsContext, UpstreamTlsContext,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::google::protobuf::value::Kind;
use prost::Message;

const MTLS_REGISTRY: &str = "mtls";

/// The resource `name` of type `t` ("cds", "eds", "lds") reviews-v1's sidecar gets.
fn generated<M: Message + Default>(g: &capstan_xds::IstioGenerator, t: &str, name: &str) -> M {
    generate_all(g, &reviews_v1())
        .into_iter()
        .find(|(n, _)| *n == t)
        .unwrap()
        .1
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("{t} {name}"))
        .decode()
        .unwrap()
}

fn cluster(g: &capstan_xds::IstioGenerator, name: &str) -> Cluster {
    generated(g, "cds", name)
}

fn assignment(g: &capstan_xds::IstioGenerator, name: &str) -> ClusterLoadAssignment {
    generated(g, "eds", name)
}

fn inbound(g: &capstan_xds::IstioGenerator) -> Listener {
    generated(g, "lds", "virtualInbound")
}

fn upstream(ts: &TransportSocket) -> UpstreamTlsContext {
    let Some(ConfigType::TypedConfig(a)) = &ts.config_type else {
        panic!("typed config")
    };
    UpstreamTlsContext::decode(a.value.as_slice()).unwrap()
}

#[allow(deprecated)]
fn sans(ctx: &UpstreamTlsContext) -> Vec<String> {
    let common = ctx.common_tls_context.as_ref().unwrap();
    let Some(ValidationContextType::CombinedValidationContext(c)) = &common.validation_context_type
    else {
        panic!("combined validation context")
    };
    assert_eq!(
        c.validation_context_sds_secret_config
            .as_ref()
            .unwrap()
            .name,
        "ROOTCA"
    );
    c.default_validation_context
        .as_ref()
        .unwrap()
        .match_subject_alt_names
        .iter()
        .map(|m| match &m.match_pattern {
            Some(MatchPattern::Exact(s)) => s.clone(),
            other => panic!("{other:?}"),
        })
        .collect()
}

/// Each endpoint's address and its `envoy.transport_socket_match` tlsMode, if any.
fn tls_modes(cla: &ClusterLoadAssignment) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for group in &cla.endpoints {
        for e in &group.lb_endpoints {
            let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
                panic!()
            };
            let Some(envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(a)) =
                &ep.address.as_ref().unwrap().address
            else {
                panic!()
            };
            let mode = e
                .metadata
                .as_ref()
                .and_then(|m| m.filter_metadata.get("envoy.transport_socket_match"))
                .and_then(|s| s.fields.get("tlsMode"))
                .map(|v| match &v.kind {
                    Some(Kind::StringValue(s)) => s.clone(),
                    other => panic!("{other:?}"),
                });
            out.push((a.address.clone(), mode));
        }
    }
    out.sort();
    out
}

fn mode(m: Option<&str>) -> Option<String> {
    m.map(str::to_string)
}

#[test]
fn auto_mtls_matches_and_endpoint_metadata() {
    let g = load_mesh("mtls");
    let reviews = cluster(&g, "outbound|9080||reviews.default.svc.cluster.local");
    assert!(reviews.transport_socket.is_none());
    let names: Vec<&str> = reviews
        .transport_socket_matches
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(names, ["tlsMode-istio", "tlsMode-disabled"]);
    let ctx = upstream(
        reviews.transport_socket_matches[0]
            .transport_socket
            .as_ref()
            .unwrap(),
    );
    assert_eq!(
        ctx.sni,
        "outbound_.9080_._.reviews.default.svc.cluster.local"
    );
    assert_eq!(
        sans(&ctx),
        [
            "spiffe://cluster.local/ns/default/sa/bookinfo-reviews",
            "spiffe://cluster.local/ns/default/sa/bookinfo-reviews-v3"
        ],
        "every identity behind the port, sorted and unique"
    );
    assert_eq!(
        tls_modes(&assignment(
            &g,
            "outbound|9080||reviews.default.svc.cluster.local"
        )),
        [
            ("10.1.0.21".into(), mode(Some("istio"))),
            ("10.1.0.22".into(), mode(Some("istio"))),
            ("10.1.0.23".into(), None),
        ]
    );
    // gRPC ports offer h2 after Istio's ALPNs.
    let ratings = cluster(&g, "outbound|9090||ratings.default.svc.cluster.local");
    let ctx = upstream(
        ratings.transport_socket_matches[0]
            .transport_socket
            .as_ref()
            .unwrap(),
    );
    assert_eq!(
        ctx.common_tls_context.unwrap().alpn_protocols,
        ["istio-peer-exchange", "istio", "h2"]
    );
}

/// One row per service of the `mtls` mesh: what its default cluster and endpoints get.
#[test]
fn who_gets_mtls() {
    let g = load_mesh("mtls");
    // (cluster, socket matches, plain socket, endpoint tlsMode)
    let cases: [(&str, usize, bool, Option<&str>); 6] = [
        // Workload-level DISABLE on the server: the cluster keeps auto mTLS, the endpoint
        // loses its label (Istio's ENABLE_AUTO_MTLS_CHECK_POLICIES).
        (
            "outbound|9090||ratings.default.svc.cluster.local",
            2,
            false,
            None,
        ),
        // DestinationRule DISABLE: neither.
        (
            "outbound|9080||details.default.svc.cluster.local",
            0,
            false,
            None,
        ),
        // DestinationRule ISTIO_MUTUAL: a plain socket, the label kept.
        (
            "outbound|9080||productpage.default.svc.cluster.local",
            0,
            true,
            Some("istio"),
        ),
        // Namespace-level DISABLE: clients infer the service is plaintext, and the endpoint's
        // own (namespace) policy drops its label too.
        ("outbound|3306||mysql.db.svc.cluster.local", 0, false, None),
        // Headless with every endpoint in the mesh.
        (
            "outbound|6379||cache.default.svc.cluster.local",
            0,
            true,
            None,
        ),
        // Outside the mesh.
        ("outbound|443||api.example.com", 0, false, None),
    ];
    for (name, matches, plain, label) in cases {
        let c = cluster(&g, name);
        assert_eq!(
            (
                c.transport_socket_matches.len(),
                c.transport_socket.is_some()
            ),
            (matches, plain),
            "{name}"
        );
        if name.contains("6379") || name.contains("443") {
            continue; // not EDS clusters
        }
        let modes = tls_modes(&assignment(&g, name));
        assert!(
            modes.iter().all(|(_, m)| *m == mode(label)),
            "{name}: {modes:?}"
        );
    }
}

#[test]
fn istio_mutual_rules_keep_their_sans_else_use_the_service_accounts() {
    let g = load_mesh("mtls");
    let pinned = cluster(&g, "outbound|9080||productpage.default.svc.cluster.local");
    let ctx = upstream(pinned.transport_socket.as_ref().unwrap());
    assert_eq!(
        sans(&ctx),
        ["spiffe://cluster.local/ns/default/sa/productpage-canary"]
    );
    assert_eq!(
        ctx.sni,
        "outbound_.9080_._.productpage.default.svc.cluster.local"
    );
    let subset = cluster(&g, "outbound|9080|v1|productpage.default.svc.cluster.local");
    assert_eq!(
        upstream(subset.transport_socket.as_ref().unwrap()).sni,
        "outbound_.9080_.v1_.productpage.default.svc.cluster.local"
    );
    // Without subjectAltNames in the rule: the endpoints' identities, in the trust domain.
    let registry = registry_text(MTLS_REGISTRY);
    let rule = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r, namespace: default}\nspec:\n  host: reviews\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}\n";
    let mesh = capstan_xds::MeshConfig {
        trust_domain: "example.org".into(),
        ..capstan_xds::MeshConfig::default()
    };
    let g = build_with_mesh(rule, &registry, mesh);
    let c = cluster(&g, "outbound|9080||reviews.default.svc.cluster.local");
    assert_eq!(
        sans(&upstream(c.transport_socket.as_ref().unwrap())),
        [
            "spiffe://example.org/ns/default/sa/bookinfo-reviews",
            "spiffe://example.org/ns/default/sa/bookinfo-reviews-v3"
        ]
    );
    assert!(c.transport_socket_matches.is_empty());
}

#[test]
fn destination_rule_disable_turns_auto_mtls_off_per_subset() {
    let registry = registry_text(MTLS_REGISTRY);
    let rule = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r, namespace: default}\nspec:\n  host: reviews\n  subsets:\n  - name: v1\n    labels: {version: v1}\n    trafficPolicy: {tls: {mode: DISABLE}}\n  - name: v2\n    labels: {version: v2}\n";
    let g = build(rule, &registry);
    let v1 = cluster(&g, "outbound|9080|v1|reviews.default.svc.cluster.local");
    assert!(v1.transport_socket.is_none() && v1.transport_socket_matches.is_empty());
    let v2 = cluster(&g, "outbound|9080|v2|reviews.default.svc.cluster.local");
    assert_eq!(v2.transport_socket_matches.len(), 2);
    // The default cluster's endpoints follow their subset's rule (Istio's mtlsChecker).
    assert_eq!(
        tls_modes(&assignment(
            &g,
            "outbound|9080||reviews.default.svc.cluster.local"
        )),
        [
            ("10.1.0.21".into(), None),
            ("10.1.0.22".into(), mode(Some("istio"))),
            ("10.1.0.23".into(), None),
        ]
    );
}

#[test]
fn auto_mtls_can_be_turned_off_and_never_reaches_proxyless_clients() {
    let registry = registry_text(MTLS_REGISTRY);
    let mesh = capstan_xds::MeshConfig {
        enable_auto_mtls: false,
        ..capstan_xds::MeshConfig::default()
    };
    let g = build_with_mesh("", &registry, mesh);
    let c = cluster(&g, "outbound|9080||reviews.default.svc.cluster.local");
    assert!(c.transport_socket.is_none() && c.transport_socket_matches.is_empty());
    let g = load_mesh("mtls");
    let grpc = generate_all(&g, &grpc_client());
    for r in &grpc.iter().find(|(n, _)| *n == "cds").unwrap().1 {
        let c: Cluster = r.decode().unwrap();
        assert!(
            c.transport_socket.is_none() && c.transport_socket_matches.is_empty(),
            "{}",
            c.name
        );
    }
}

/// A chain's shape: (destination port, transport protocol, number of ALPNs matched,
/// terminates TLS).
type Shape = (Option<u32>, String, usize, bool);

fn shapes(l: &Listener) -> Vec<Shape> {
    l.filter_chains
        .iter()
        .map(|c| {
            let m = c.filter_chain_match.clone().unwrap_or_default();
            (
                m.destination_port.map(|p| p.value),
                m.transport_protocol,
                m.application_protocols.len(),
                c.transport_socket.is_some(),
            )
        })
        .collect()
}

fn shape(port: Option<u32>, transport: &str, alpns: usize, tls: bool) -> Shape {
    (port, transport.to_string(), alpns, tls)
}

/// The chains of an HTTP port (istiod's `inbound*HTTPFilterChainMatchOptions`).
fn http_port(mode: &str, port: Option<u32>) -> Vec<Shape> {
    match mode {
        "PERMISSIVE" => vec![
            shape(port, "tls", 5, true),
            shape(port, "raw_buffer", 0, false),
        ],
        "STRICT" => vec![shape(port, "tls", 0, true)],
        _ => vec![shape(port, "raw_buffer", 0, false)],
    }
}

/// The chains of a port of undeclared protocol and of the passthrough (istiod's
/// `inbound*FilterChainMatchOptions`): HTTP over mTLS (3 ALPNs), plaintext HTTP (2), TCP over
/// mTLS (2), plaintext TCP, one-way TLS.
fn sniffed(mode: &str, port: Option<u32>) -> Vec<Shape> {
    match mode {
        "PERMISSIVE" => vec![
            shape(port, "tls", 3, true),
            shape(port, "raw_buffer", 2, false),
            shape(port, "tls", 2, true),
            shape(port, "raw_buffer", 0, false),
            shape(port, "tls", 0, false),
        ],
        "STRICT" => vec![shape(port, "tls", 3, true), shape(port, "tls", 0, true)],
        _ => vec![
            shape(port, "raw_buffer", 2, false),
            shape(port, "raw_buffer", 0, false),
        ],
    }
}

/// The first chain: traffic to 15006 itself goes to the blackhole.
fn blackhole() -> Shape {
    shape(Some(15006), "", 0, false)
}

fn peer_authentication(ns: &str, name: &str, spec: &str) -> String {
    format!("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n---\n")
}

/// PeerAuthentication at each level, one case a row: policies → the chains of reviews-v1's
/// port 9080, then of the catch-all.
#[test]
fn peer_authentication_shapes_virtual_inbound() {
    let registry = registry_text("bookinfo");
    let mesh = |m: &str| {
        peer_authentication(
            "istio-system",
            "default",
            &format!("{{mtls: {{mode: {m}}}}}"),
        )
    };
    let ns =
        |m: &str| peer_authentication("default", "default", &format!("{{mtls: {{mode: {m}}}}}"));
    let workload = |m: &str, app: &str| {
        peer_authentication(
            "default",
            "wl",
            &format!("{{selector: {{matchLabels: {{app: {app}}}}}, mtls: {{mode: {m}}}}}"),
        )
    };
    let port = Some(9080);
    // (case, policies, mode of 9080, mode of the passthrough)
    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("none: PERMISSIVE", String::new(), "PERMISSIVE", "PERMISSIVE"),
        ("mesh STRICT", mesh("STRICT"), "STRICT", "STRICT"),
        ("mesh DISABLE", mesh("DISABLE"), "DISABLE", "DISABLE"),
        ("namespace over mesh", mesh("STRICT") + &ns("DISABLE"), "DISABLE", "DISABLE"),
        ("namespace UNSET inherits", mesh("STRICT") + &ns("UNSET"), "STRICT", "STRICT"),
        ("workload over namespace", ns("STRICT") + &workload("DISABLE", "reviews"), "DISABLE", "DISABLE"),
        ("a workload policy for others", ns("STRICT") + &workload("DISABLE", "ratings"), "STRICT", "STRICT"),
        (
            "port level over workload",
            peer_authentication(
                "default",
                "wl",
                "{selector: {matchLabels: {app: reviews}}, mtls: {mode: PERMISSIVE}, portLevelMtls: {\"9080\": {mode: STRICT}}}",
            ),
            "STRICT",
            "PERMISSIVE",
        ),
    ];
    for (name, config, on_port, passthrough) in cases {
        let l = inbound(&build(&config, &registry));
        let want = [
            vec![blackhole()],
            sniffed(passthrough, None),
            http_port(on_port, port),
        ]
        .concat();
        assert_eq!(shapes(&l), want, "{name}");
    }
}

#[test]
fn inbound_tls_is_istio_mutual_with_http_and_tcp_alpns() {
    let g = load_mesh("mtls");
    let l = inbound(&g);
    let tls: Vec<(String, DownstreamTlsContext)> = l
        .filter_chains
        .iter()
        .filter_map(|c| {
            let ts = c.transport_socket.as_ref()?;
            let Some(ConfigType::TypedConfig(a)) = &ts.config_type else {
                panic!()
            };
            assert_eq!(ts.name, "envoy.transport_sockets.tls");
            Some((
                c.name.clone(),
                DownstreamTlsContext::decode(a.value.as_slice()).unwrap(),
            ))
        })
        .collect();
    let find = |name: &str| {
        tls.iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no mTLS chain {name}"))
    };
    let (http, tcp) = (find("0.0.0.0_9080"), find("virtualInbound"));
    for (_, ctx) in &tls {
        assert!(ctx.require_client_certificate.unwrap().value);
        let common = ctx.common_tls_context.as_ref().unwrap();
        assert_eq!(common.tls_certificate_sds_secret_configs[0].name, "default");
        let Some(ValidationContextType::CombinedValidationContext(v)) =
            &common.validation_context_type
        else {
            panic!()
        };
        assert_eq!(
            v.validation_context_sds_secret_config
                .as_ref()
                .unwrap()
                .name,
            "ROOTCA"
        );
        #[allow(deprecated)]
        let sans = &v
            .default_validation_context
            .as_ref()
            .unwrap()
            .match_subject_alt_names;
        assert_eq!(
            sans.iter()
                .map(|m| format!("{:?}", m.match_pattern))
                .collect::<Vec<_>>(),
            [r#"Some(Prefix("spiffe://cluster.local/"))"#],
            "the peer must be of the trust domain"
        );
    }
    let alpn = |c: &DownstreamTlsContext| {
        c.common_tls_context
            .as_ref()
            .unwrap()
            .alpn_protocols
            .clone()
    };
    assert_eq!(alpn(&http.1), ["h2", "http/1.1"]);
    assert_eq!(alpn(&tcp.1), ["istio-peer-exchange", "h2", "http/1.1"]);
    // The mesh is STRICT, reviews' 9080 PERMISSIVE and 8081 (no service) DISABLE.
    assert_eq!(
        shapes(&l),
        [
            vec![blackhole()],
            sniffed("STRICT", None),
            sniffed("DISABLE", Some(8081)),
            http_port("PERMISSIVE", Some(9080)),
        ]
        .concat()
    );
}

/// With `CAPSTAN_PGV_DUMP=DIR`, writes every resource the golden meshes generate (as packed
/// `Any`s) for `scripts/pgv_validate.py`, which checks them against Envoy's
/// protoc-gen-validate rules (Envoy NACKs what breaks them; no Envoy runs here).
#[test]
fn dump_for_envoy_validation() {
    let Some(dir) = std::env::var_os("CAPSTAN_PGV_DUMP") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut n = 0;
    for mesh in ["bookinfo", "bookinfo-routing", "egress-scoped", "mtls"] {
        let g = load_mesh(mesh);
        for proxy in [reviews_v1(), ingress_gateway(), grpc_client()] {
            for (_, resources) in generate_all(&g, &proxy) {
                for r in resources {
                    let path = dir.join(format!("{n:05}.any"));
                    std::fs::write(path, r.any().unwrap().encode_to_vec()).unwrap();
                    n += 1;
                }
            }
        }
    }
    assert!(n > 0);
}
