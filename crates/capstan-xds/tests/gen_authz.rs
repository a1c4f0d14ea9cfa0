//! AuthorizationPolicy as generated for reviews-v1 in `testdata/meshes/authz`: RBAC filters
//! ahead of fault, CORS and the router on every inbound HTTP chain, none on TCP chains, and their policies
//! rendered readably under `testdata/golden/authz/reviews-v1/rbac.txt`
//! (`CAPSTAN_UPDATE_GOLDEN=1` to accept changes).

mod common;

use common::*;
use envoy_types::pb::envoy::config::listener::v3::{filter, Listener};
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::JwtAuthentication;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as RbacFilter;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpConnectionManager,
};
use prost::Message;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn inbound() -> Listener {
    let g = load_mesh("authz");
    generate_all(&g, &reviews_v1())
        .into_iter()
        .find(|(t, _)| *t == "lds")
        .expect("lds is generated")
        .1
        .iter()
        .find(|r| r.name == "virtualInbound")
        .expect("a sidecar has virtualInbound")
        .decode()
        .expect("a listener")
}

/// Each chain's name with its HCM, if it has one.
fn chains(l: &Listener) -> Vec<(String, Option<HttpConnectionManager>)> {
    l.filter_chains
        .iter()
        .map(|fc| {
            let hcm = fc.filters.iter().find_map(|f| match &f.config_type {
                Some(filter::ConfigType::TypedConfig(a))
                    if a.type_url.ends_with("HttpConnectionManager") =>
                {
                    Some(HttpConnectionManager::decode(a.value.as_slice()).expect("an HCM"))
                }
                _ => None,
            });
            (fc.name.clone(), hcm)
        })
        .collect()
}

fn rbac_text(hcm: &HttpConnectionManager) -> String {
    let mut out = String::new();
    for f in &hcm.http_filters {
        let Some(http_filter::ConfigType::TypedConfig(a)) = &f.config_type else {
            continue;
        };
        if f.name != "envoy.filters.http.rbac" {
            continue;
        }
        let rules = RbacFilter::decode(a.value.as_slice())
            .expect("an RBAC filter")
            .rules
            .expect("rules");
        // HashMap order is random: render the policies sorted.
        let policies: BTreeMap<_, _> = rules.policies.iter().collect();
        out += &format!("--- action {}\n{policies:#?}\n", rules.action);
    }
    out
}

#[test]
fn http_chains_carry_rbac_before_the_router_and_tcp_chains_none() {
    let l = inbound();
    let mut http_seen = 0;
    for (name, hcm) in chains(&l) {
        match hcm {
            Some(hcm) => {
                http_seen += 1;
                let names: Vec<&str> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
                assert_eq!(
                    names,
                    [
                        "envoy.filters.http.jwt_authn",
                        "envoy.filters.http.rbac",
                        "envoy.filters.http.rbac",
                        "envoy.filters.http.rbac",
                        "envoy.filters.http.rbac",
                        "envoy.filters.http.fault",
                        "envoy.filters.http.cors",
                        "envoy.filters.http.router"
                    ],
                    "{name}: JWT, then CUSTOM's fail-closed deny-all, AUDIT, DENY, ALLOW, then \
                     fault, CORS and the router"
                );
            }
            None => assert!(
                name != "0.0.0.0_9080",
                "{name}: an HTTP port must have an HCM"
            ),
        }
    }
    assert!(http_seen >= 1);
}

#[test]
fn rbac_policies_golden() {
    let l = inbound();
    let (_, hcm) = chains(&l)
        .into_iter()
        .find(|(n, h)| n == "0.0.0.0_9080" && h.is_some())
        .expect("the HTTP chain of 9080");
    let text = rbac_text(&hcm.expect("checked above"));
    for name in [
        "ns[istio-system]-policy[audit-admin]-rule[0]",
        "ns[istio-system]-policy[deny-foreign-writes]-rule[1]",
        "ns[default]-policy[reviews-readers]-rule[1]",
        "ns[default]-policy[reviews-readers]-rule[3]",
        "default-deny-all-due-to-bad-CUSTOM-action",
    ] {
        assert!(text.contains(name), "{name}");
    }
    for left_out in [
        "reviews-readers]-rule[2]",
        "ext-check",
        "productpage-only",
        "policy[deny-all]",
    ] {
        assert!(!text.contains(left_out), "{left_out} must not be generated");
    }
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/golden/authz/reviews-v1/rbac.txt");
    if std::env::var_os("CAPSTAN_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).expect("golden is writable");
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with CAPSTAN_UPDATE_GOLDEN=1)", path.display()));
    assert!(
        want == text,
        "{} differs (CAPSTAN_UPDATE_GOLDEN=1 to accept)",
        path.display()
    );
}

/// The JWT filter config of an HCM, rendered with its providers in name order.
fn jwt_text(hcm: &HttpConnectionManager) -> Option<String> {
    let f = hcm
        .http_filters
        .iter()
        .find(|f| f.name == "envoy.filters.http.jwt_authn")?;
    let Some(http_filter::ConfigType::TypedConfig(a)) = &f.config_type else {
        panic!("the JWT filter has a typed config")
    };
    assert_eq!(
        a.type_url,
        "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
    );
    let mut config = JwtAuthentication::decode(a.value.as_slice()).expect("a JwtAuthentication");
    let providers: BTreeMap<_, _> = std::mem::take(&mut config.providers).into_iter().collect();
    Some(format!("{providers:#?}\n{config:#?}\n"))
}

fn check_golden(path: &str, text: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path);
    if std::env::var_os("CAPSTAN_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, text).expect("golden is writable");
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with CAPSTAN_UPDATE_GOLDEN=1)", path.display()));
    assert!(
        want == text,
        "{} differs (CAPSTAN_UPDATE_GOLDEN=1 to accept)",
        path.display()
    );
}

/// RequestAuthentication on reviews-v1: the mesh-wide rule (its jwksUri not fetched here, so
/// the fake key set) and the workload's (inline keys), sorted by issuer; productpage's and the
/// gateway's rules are not applied. The same filter on every inbound HTTP chain.
#[test]
fn jwt_filter_golden() {
    let l = inbound();
    let texts: Vec<String> = chains(&l)
        .into_iter()
        .filter_map(|(_, h)| h)
        .map(|h| jwt_text(&h).expect("every inbound HTTP chain has the JWT filter"))
        .collect();
    assert!(!texts.is_empty());
    assert!(texts.iter().all(|t| *t == texts[0]));
    let text = &texts[0];
    assert!(text.contains("https://idp.example.com"));
    assert!(text.contains("testing@secure.istio.io"));
    assert!(
        capstan_xds::context::FAKE_JWKS.contains("capstan-fake-jwks")
            && text.contains("capstan-fake-jwks"),
        "the unfetched jwksUri inlines the fake key set"
    );
    for other in ["other.example.com", "gateway-idp.example.com"] {
        assert!(!text.contains(other), "{other} does not select reviews");
    }
    check_golden("testdata/golden/authz/reviews-v1/jwt.txt", text);
}

/// Outbound listeners carry no JWT filter (istiod authenticates requests inbound only).
#[test]
fn outbound_listeners_have_no_jwt_filter() {
    let g = load_mesh("authz");
    let lds = generate_all(&g, &reviews_v1())
        .into_iter()
        .find(|(t, _)| *t == "lds")
        .expect("lds")
        .1;
    let mut outbound = 0;
    for r in lds.iter().filter(|r| r.name != "virtualInbound") {
        let l: Listener = r.decode().expect("a listener");
        for (_, hcm) in chains(&l) {
            if let Some(hcm) = hcm {
                outbound += 1;
                assert!(jwt_text(&hcm).is_none(), "{}", r.name);
            }
        }
    }
    assert!(outbound > 0, "some outbound HTTP chain was checked");
}

/// The ingress gateway validates the RequestAuthentications selecting its workload (its own
/// and the mesh-wide one), ahead of CORS, fault and the router.
#[test]
fn gateway_http_chains_carry_the_jwt_filter_then_rbac() {
    let g = load_mesh("authz");
    let l = gateway_listener(&g, "0.0.0.0_80");
    let (_, hcm) = chains(&l).into_iter().next().expect("a chain");
    let hcm = hcm.expect("an HTTP chain");
    let names: Vec<&str> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
    // istiod's gateway order: authentication, the AuthorizationPolicies selecting the gateway
    // (here the mesh-wide ones of the root namespace), then CORS, fault and the router.
    let rbac = names
        .iter()
        .filter(|n| **n == "envoy.filters.http.rbac")
        .count();
    assert!(rbac >= 1, "{names:?}");
    let mut want = vec!["envoy.filters.http.jwt_authn"];
    want.extend(std::iter::repeat_n("envoy.filters.http.rbac", rbac));
    want.extend([
        "envoy.filters.http.fault",
        "envoy.filters.http.cors",
        "envoy.filters.http.router",
    ]);
    assert_eq!(names, want);
    let text = jwt_text(&hcm).expect("checked above");
    assert!(text.contains("gateway-idp.example.com") && text.contains("https://idp.example.com"));
    assert!(!text.contains("testing@secure.istio.io"));
    check_golden("testdata/golden/authz/ingressgateway/jwt.txt", &text);
}

/// Writes the authz mesh's resources for `scripts/pgv_validate.py` (Envoy's proto rules), when
/// `CAPSTAN_PGV_DUMP` names a directory; see the script for the setup.
#[test]
fn dump_for_envoy_validation() {
    let Some(dir) = std::env::var_os("CAPSTAN_PGV_DUMP") else {
        return;
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("dump directory");
    let g = load_mesh("authz");
    let mut n = 0;
    let all = generate_all(&g, &reviews_v1())
        .into_iter()
        .chain(generate_all(&g, &ingress_gateway()));
    for (_, resources) in all {
        for r in resources {
            let any = r.any().expect("resources pack as Any");
            std::fs::write(dir.join(format!("authz-{n:05}.any")), any.encode_to_vec())
                .expect("dump is writable");
            n += 1;
        }
    }
    assert!(n > 0);
}

/// The ingress gateway's listener `name`, decoded.
fn gateway_listener(g: &capstan_xds::IstioGenerator, name: &str) -> Listener {
    let lds = generate_all(g, &ingress_gateway())
        .into_iter()
        .find(|(t, _)| *t == "lds")
        .expect("lds")
        .1;
    lds.iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no listener {name}"))
        .decode()
        .expect("a listener")
}

/// TLS passthrough on a gateway: istiod authorizes the connection with the network RBAC
/// filters of the policies selecting the gateway, before `tcp_proxy`.
#[test]
fn gateway_passthrough_chains_carry_network_rbac() {
    let g = load_mesh("authz");
    let l = gateway_listener(&g, "0.0.0.0_443");
    let chain = l.filter_chains.first().expect("a passthrough chain");
    let names: Vec<&str> = chain.filters.iter().map(|f| f.name.as_str()).collect();
    assert!(names.len() >= 2, "{names:?}");
    let (last, rbac) = names.split_last().unwrap();
    assert_eq!(*last, "envoy.filters.network.tcp_proxy");
    assert!(
        rbac.iter().all(|n| *n == "envoy.filters.network.rbac"),
        "{names:?}"
    );
}
