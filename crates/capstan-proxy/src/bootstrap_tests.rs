use super::*;
use serde_json::json;

fn testdata(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/bootstrap")
        .join(name);
    std::fs::read_to_string(&path).expect("testdata file exists in the repository")
}

fn str_meta<'a>(node: &'a Node, key: &str) -> Option<&'a Kind> {
    node.metadata.as_ref()?.fields.get(key)?.kind.as_ref()
}

#[test]
fn pilot_agent_delta_json() {
    let b = Bootstrap::parse(&testdata("pilot-agent.json")).expect("valid bootstrap");
    assert_eq!(
        b.node.id,
        "sidecar~10.244.0.12~productpage-v1-7d6cfb7dfd-5kxqn.bookinfo~bookinfo.svc.cluster.local"
    );
    assert_eq!(b.node.cluster, "productpage.bookinfo");
    let loc = b.node.locality.as_ref().expect("locality set");
    assert_eq!(
        (loc.region.as_str(), loc.zone.as_str()),
        ("us-central1", "us-central1-a")
    );
    assert_eq!(
        str_meta(&b.node, "NAMESPACE"),
        Some(&Kind::StringValue("bookinfo".into()))
    );
    assert_eq!(
        str_meta(&b.node, "ENVOY_STATUS_PORT"),
        Some(&Kind::NumberValue(15021.0))
    );
    // Nested metadata passes through unchanged.
    let labels = struct_to_json(b.node.metadata.as_ref().expect("metadata set"));
    assert_eq!(labels["LABELS"]["version"], "v1");
    assert_eq!(labels["PILOT_SAN"][0], "istiod.istio-system.svc");
    let ads = b.ads.expect("ads config");
    assert!(ads.delta);
    assert_eq!(ads.endpoints, ["http://10.96.0.10:15010"]);
    assert_eq!(b.admin, Some("127.0.0.1:15000".parse().expect("literal")));
}

#[test]
fn pilot_agent_sotw_yaml_camel_case_and_pipe() {
    let b = Bootstrap::parse(&testdata("pilot-agent-sotw-uds.yaml")).expect("valid bootstrap");
    let ads = b.ads.expect("ads config");
    assert!(!ads.delta);
    assert_eq!(ads.endpoints, ["unix:./etc/istio/proxy/XDS"]);
    assert_eq!(b.admin.map(|a| a.port()), Some(15000));
    assert!(b.node.locality.is_none());
}

/// Table: a broken field → the JSON path the error names.
#[test]
fn errors_name_the_field() {
    let good: Json =
        serde_json::from_str(&testdata("pilot-agent.json")).expect("testdata is valid JSON");
    type Mutate = fn(&mut Json);
    let cases: [(&str, Mutate, &str); 9] = [
        ("no node", |b| b["node"] = Json::Null, "node: required"),
        ("no id", |b| b["node"]["id"] = json!(""), "node.id: required"),
        (
            "metadata not object",
            |b| b["node"]["metadata"] = json!([1]),
            "node.metadata: expected an object",
        ),
        (
            "api type",
            |b| b["dynamic_resources"]["ads_config"]["api_type"] = json!("REST"),
            "dynamic_resources.ads_config.api_type: REST is not supported",
        ),
        (
            "v2",
            |b| b["dynamic_resources"]["ads_config"]["transport_api_version"] = json!("V2"),
            "dynamic_resources.ads_config.transport_api_version: V2: only V3",
        ),
        (
            "no services",
            |b| b["dynamic_resources"]["ads_config"]["grpc_services"] = json!([]),
            "dynamic_resources.ads_config.grpc_services: must not be empty",
        ),
        (
            "unknown cluster",
            |b| {
                b["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"]
                    ["cluster_name"] = json!("nope")
            },
            "static_resources.clusters: no cluster named nope",
        ),
        (
            "bad port",
            |b| {
                b["static_resources"]["clusters"][2]["load_assignment"]["endpoints"][0]
                    ["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"] =
                    json!(70000)
            },
            "static_resources.clusters[2].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value: expected a port",
        ),
        (
            "admin host",
            |b| b["admin"]["address"]["socket_address"]["address"] = json!("example.com"),
            "admin.address.socket_address.address: \"example.com\" is not an IP address",
        ),
    ];
    for (what, mutate, want) in cases {
        let mut b = good.clone();
        mutate(&mut b);
        let err = Bootstrap::from_json(&b).expect_err(what).to_string();
        assert!(
            err.contains(want),
            "{what}: {err:?} does not contain {want:?}"
        );
    }
}

#[test]
fn no_ads_is_not_an_error() {
    let b = Bootstrap::parse(r#"{"node": {"id": "a"}}"#).expect("valid");
    assert!(b.ads.is_none() && b.admin.is_none());
    assert_eq!(b.node.user_agent_name, "envoy");
}

#[test]
fn syntax_errors() {
    assert!(matches!(
        Bootstrap::parse("node: [unclosed"),
        Err(BootstrapError::Syntax(_))
    ));
    assert!(Bootstrap::parse("42").is_err());
}

#[test]
fn from_parts() {
    let b = Bootstrap::from_parts(
        "sidecar~1.2.3.4~a.ns~ns.svc.cluster.local",
        "a.ns",
        "127.0.0.1:15010",
        true,
        None,
        json!({"NAMESPACE": "ns"}),
    )
    .expect("valid parts");
    let ads = b.ads.expect("ads set");
    assert_eq!(ads.endpoints, ["http://127.0.0.1:15010"]);
    assert!(ads.delta);
    assert_eq!(
        str_meta(&b.node, "NAMESPACE"),
        Some(&Kind::StringValue("ns".into()))
    );
    assert!(Bootstrap::from_parts("", "", "x:1", false, None, Json::Null).is_err());
    assert!(Bootstrap::from_parts("a", "", "x:1", false, None, json!(3)).is_err());
}

/// Every endpoint of the xDS cluster is kept, in order, across localities (istiod's replicas).
#[test]
fn every_xds_endpoint_is_kept_in_order() {
    let mut b: Json =
        serde_json::from_str(&testdata("pilot-agent.json")).expect("testdata is valid JSON");
    let address = |host: &str, port: u16| json!({"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}});
    b["static_resources"]["clusters"][2]["load_assignment"]["endpoints"] = json!([
        {"lb_endpoints": [address("10.0.0.1", 15012), address("fd00::2", 15012)]},
        {"lb_endpoints": [address("10.0.0.3", 15012)]},
    ]);
    let ads = Bootstrap::parse(&b.to_string())
        .expect("valid bootstrap")
        .ads
        .expect("ads config");
    assert_eq!(
        ads.endpoints,
        [
            "http://10.0.0.1:15012",
            "http://[fd00::2]:15012",
            "http://10.0.0.3:15012"
        ]
    );
    b["static_resources"]["clusters"][2]["load_assignment"]["endpoints"][1]["lb_endpoints"][0]
        ["endpoint"] = json!({});
    let err = Bootstrap::parse(&b.to_string()).unwrap_err().to_string();
    assert!(
        err.contains("load_assignment.endpoints[1].lb_endpoints[0].endpoint.address: required"),
        "{err}"
    );
    b["static_resources"]["clusters"][2]["load_assignment"]["endpoints"] = json!([]);
    let err = Bootstrap::parse(&b.to_string()).unwrap_err().to_string();
    assert!(
        err.contains("lb_endpoints[0].endpoint.address: required"),
        "{err}"
    );
}
