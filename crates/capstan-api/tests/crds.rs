//! The CRDs in `deploy/crds/` are generated from the Rust types and must be current.
//! Regenerate with `CAPSTAN_UPDATE_CRDS=1 cargo test -p capstan-api --test crds`.

use capstan_api::crd::{crd, crd_yaml, file_name};
use capstan_api::Kind;
use std::path::Path;

#[test]
fn checked_in_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds");
    let update = std::env::var_os("CAPSTAN_UPDATE_CRDS").is_some();
    let mut stale = Vec::new();
    for &kind in Kind::ALL {
        let path = dir.join(file_name(kind));
        let want = crd_yaml(kind);
        if update {
            std::fs::create_dir_all(&dir).expect("create deploy/crds");
            std::fs::write(&path, &want).expect("write CRD");
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(want.as_str()) {
            stale.push(path.display().to_string());
        }
    }
    assert!(stale.is_empty(), "CRDs out of date (run CAPSTAN_UPDATE_CRDS=1 cargo test -p capstan-api --test crds): {stale:?}");
}

/// Kubernetes rejects non-structural schemas; check the rules it enforces that the rewrite handles.
fn assert_structural(schema: &serde_json::Value, path: &str) {
    let map = schema
        .as_object()
        .unwrap_or_else(|| panic!("{path}: schema must be an object"));
    for banned in [
        "$ref",
        "$defs",
        "const",
        "oneOf",
        "anyOf",
        "nullable",
        "default",
        "uniqueItems",
    ] {
        assert!(!map.contains_key(banned), "{path}: has {banned}");
    }
    let free = map.contains_key("x-kubernetes-preserve-unknown-fields")
        || map.contains_key("x-kubernetes-int-or-string");
    assert!(
        map.get("type").is_some_and(|t| t.is_string()) || free,
        "{path}: needs a single type: {schema}"
    );
    assert!(
        !(map.contains_key("properties") && map.contains_key("additionalProperties")),
        "{path}: properties with additionalProperties"
    );
    if let Some(props) = map.get("properties").and_then(|p| p.as_object()) {
        for (k, v) in props {
            assert_structural(v, &format!("{path}.{k}"));
        }
    }
    if let Some(items) = map.get("items") {
        assert_structural(items, &format!("{path}[]"));
    }
    if let Some(extra) = map.get("additionalProperties").filter(|v| v.is_object()) {
        assert_structural(extra, &format!("{path}{{}}"));
    }
}

#[test]
fn every_crd_is_structural_with_istio_names_and_versions() {
    for &kind in Kind::ALL {
        let c = crd(kind);
        let spec = &c["spec"];
        assert_eq!(spec["names"]["kind"], kind.name());
        let versions = spec["versions"].as_array().expect("versions");
        let names: Vec<&str> = versions
            .iter()
            .map(|v| v["name"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(names, kind.versions());
        let stored: Vec<&str> = versions
            .iter()
            .filter(|v| v["storage"] == true)
            .map(|v| v["name"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(stored, vec!["v1"], "{kind}: v1 must be the storage version");
        assert!(spec["names"]["categories"]
            .as_array()
            .expect("categories")
            .iter()
            .any(|c| c == "istio-io"));
        assert_structural(&versions[0]["schema"]["openAPIV3Schema"], kind.name());
    }
    assert_eq!(
        crd(Kind::VirtualService)["spec"]["names"]["shortNames"],
        serde_json::json!(["vs"])
    );
    assert_eq!(
        crd(Kind::DestinationRule)["spec"]["names"]["shortNames"],
        serde_json::json!(["dr"])
    );
    assert_eq!(
        crd(Kind::Gateway)["spec"]["names"]["shortNames"],
        serde_json::json!(["gw"])
    );
    assert_eq!(
        crd(Kind::ServiceEntry)["spec"]["names"]["shortNames"],
        serde_json::json!(["se"])
    );
}
