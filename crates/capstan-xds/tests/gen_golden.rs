//! Golden tests: meshes from `testdata/meshes/<mesh>/{config,registry}.yaml`, generated xDS for
//! a few proxies rendered as readable, deterministic text under
//! `testdata/golden/<mesh>/<proxy>/<type>.txt`. Regenerate with `CAPSTAN_UPDATE_GOLDEN=1`.

mod common;

use common::*;
use std::path::PathBuf;

fn check(mesh: &str, proxy_name: &str, type_name: &str, text: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/golden")
        .join(mesh)
        .join(proxy_name)
        .join(format!("{type_name}.txt"));
    if std::env::var_os("CAPSTAN_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with CAPSTAN_UPDATE_GOLDEN=1)", path.display()));
    assert!(
        want == text,
        "{} differs from the generated output (CAPSTAN_UPDATE_GOLDEN=1 to accept)",
        path.display()
    );
}

fn golden_for(mesh: &str, proxies: &[(&str, capstan_xds::Proxy)]) {
    let generator = load_mesh(mesh);
    for (name, proxy) in proxies {
        for (type_name, text) in render_all(&generator, proxy) {
            check(mesh, name, type_name, &text);
        }
    }
}

#[test]
fn bookinfo_plain() {
    golden_for(
        "bookinfo",
        &[("reviews-v1", reviews_v1()), ("grpc-client", grpc_client())],
    );
}

#[test]
fn bookinfo_routing() {
    golden_for(
        "bookinfo-routing",
        &[
            ("reviews-v1", reviews_v1()),
            ("ingressgateway", ingress_gateway()),
            ("grpc-client", grpc_client()),
        ],
    );
}

#[test]
fn egress_scoped() {
    golden_for("egress-scoped", &[("reviews-v1", reviews_v1())]);
}

#[test]
fn mtls() {
    golden_for(
        "mtls",
        &[("reviews-v1", reviews_v1()), ("grpc-client", grpc_client())],
    );
}

#[test]
fn authz() {
    golden_for(
        "authz",
        &[
            ("reviews-v1", reviews_v1()),
            ("ingressgateway", ingress_gateway()),
        ],
    );
}
