//! AuthorizationPolicy as generated for reviews-v1 in `testdata/meshes/authz`: RBAC filters
//! ahead of the router on every inbound HTTP chain, none on TCP chains, and their policies
//! rendered readably under `testdata/golden/authz/reviews-v1/rbac.txt`
//! (`CAPSTAN_UPDATE_GOLDEN=1` to accept changes).

mod common;

use common::*;
use envoy_types::pb::envoy::config::listener::v3::{filter, Listener};
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
                        "envoy.filters.http.rbac",
                        "envoy.filters.http.rbac",
                        "envoy.filters.http.rbac",
                        "envoy.filters.http.router"
                    ],
                    "{name}: AUDIT, DENY, ALLOW, then the router"
                );
            }
            None => assert!(
                !name.starts_with("inbound|9080"),
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
        .find(|(n, h)| n == "inbound|9080||" && h.is_some())
        .expect("the HTTP chain of 9080");
    let text = rbac_text(&hcm.expect("checked above"));
    for name in [
        "ns[istio-system]-policy[audit-admin]-rule[0]",
        "ns[istio-system]-policy[deny-foreign-writes]-rule[1]",
        "ns[default]-policy[reviews-readers]-rule[1]",
    ] {
        assert!(text.contains(name), "{name}");
    }
    for left_out in [
        "reviews-readers]-rule[2]",
        "ext-check",
        "productpage-only",
        "deny-all",
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
    for (_, resources) in generate_all(&g, &reviews_v1()) {
        for r in resources {
            let any = r.any().expect("resources pack as Any");
            std::fs::write(dir.join(format!("authz-{n:05}.any")), any.encode_to_vec())
                .expect("dump is writable");
            n += 1;
        }
    }
    assert!(n > 0);
}
