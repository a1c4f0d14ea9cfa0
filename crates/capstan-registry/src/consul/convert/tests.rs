use super::*;
use serde_json::json;

fn opts() -> ConvertOptions {
    ConvertOptions {
        domain: "service.consul".into(),
        namespace: "default".into(),
        datacenter: "dc0".into(),
    }
}

fn entry(v: serde_json::Value) -> HealthEntry {
    serde_json::from_value(v).unwrap()
}

fn web(id: &str, port: u16, extra: serde_json::Value) -> serde_json::Value {
    let mut service = json!({"ID": id, "Service": "web", "Tags": null, "Address": "", "Port": port,
        "Meta": null, "TaggedAddresses": null, "Weights": {"Passing": 1, "Warning": 1}});
    for (k, v) in extra.as_object().unwrap() {
        service[k] = v.clone();
    }
    json!({
        "Node": {"Node": "n1", "Address": "10.0.0.1", "Datacenter": "dc1", "TaggedAddresses": null, "Meta": null},
        "Service": service,
        "Checks": [{"CheckID": "serfHealth", "Status": "passing", "ServiceID": ""}],
    })
}

#[test]
fn labels_from_tags_and_meta() {
    let tags = vec![
        "version=v1".into(),
        "env|prod".into(),
        "plain".into(),
        "=x".into(),
    ];
    let meta = BTreeMap::from([("version".to_string(), "v2".to_string())]);
    let l = labels(&tags, &meta);
    assert_eq!(
        l,
        BTreeMap::from([
            ("env".to_string(), "prod".to_string()),
            ("version".to_string(), "v2".to_string())
        ]),
        "meta wins; tags without a separator or key are ignored"
    );
}

#[test]
fn protocol_sources_in_order() {
    let cases = [
        (json!({}), Protocol::Tcp, "tcp"),
        (
            json!({"Meta": {"protocol": "HTTP"}}),
            Protocol::Http,
            "http",
        ),
        (json!({"Tags": ["protocol=grpc"]}), Protocol::Grpc, "grpc"),
        (
            json!({"Tags": ["protocol=grpc"], "Meta": {"protocol": "http2"}}),
            Protocol::Http2,
            "http2",
        ),
        (
            json!({"Meta": {"protocol": "weird"}}),
            Protocol::Unknown,
            "weird",
        ),
    ];
    for (extra, want, name) in cases {
        let c = convert("web", &[entry(web("w1", 80, extra.clone()))], &opts());
        let s = c.service.unwrap();
        assert_eq!(s.ports.len(), 1);
        assert_eq!(s.ports[0].protocol, want, "{extra}");
        assert_eq!(s.ports[0].name, name, "{extra}");
    }
    // Node meta is where Istio's adapter read it.
    let mut e = web("w1", 80, json!({}));
    e["Node"]["Meta"] = json!({"protocol": "http"});
    let c = convert("web", &[entry(e)], &opts());
    assert_eq!(c.service.unwrap().ports[0].protocol, Protocol::Http);
}

#[test]
fn health_from_checks() {
    let cases = [
        (vec![("passing", "")], Health::Healthy),
        (vec![("warning", "w1")], Health::Healthy),
        (vec![("critical", "w1")], Health::Unhealthy),
        (vec![("critical", "other")], Health::Healthy),
        (vec![("critical", "")], Health::Unhealthy),
        (vec![("maintenance", "w1")], Health::Unhealthy),
    ];
    for (checks, want) in cases {
        let mut e = web("w1", 80, json!({}));
        e["Checks"] = checks
            .iter()
            .map(|(s, id)| json!({"CheckID": "c", "Status": s, "ServiceID": id}))
            .collect();
        assert_eq!(health(&entry(e)), want, "{checks:?}");
    }
}

#[test]
fn addresses_and_workload() {
    let mut e = web(
        "w1",
        8080,
        json!({"Address": "10.1.0.5", "TaggedAddresses": {
            "lan_ipv4": {"Address": "10.1.0.5", "Port": 8080},
            "wan_ipv4": {"Address": "192.168.7.5", "Port": 8080}}}),
    );
    e["Node"]["TaggedAddresses"] = json!({"lan": "10.0.0.1", "wan": "10.0.0.1"});
    e["Node"]["Meta"] = json!({"zone": "z1"});
    let c = convert("web", &[entry(e)], &opts());
    let w = &c.workloads["default/n1/w1"];
    assert_eq!(
        w.addresses,
        vec!["10.1.0.5", "192.168.7.5"],
        "an instance with its own address does not own its node's"
    );
    assert_eq!(w.locality.region, "dc1", "datacenter as region");
    assert_eq!(w.locality.zone, "z1");
    let eps = &c.endpoints[&("web.service.consul".to_string(), 8080)];
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].address, "10.1.0.5");
    assert_eq!(eps[0].meta.workload, "n1/w1");
    assert_eq!(eps[0].meta.tls_mode, "disabled");
    // No service address: the node's, with the node's tagged addresses.
    let mut e = web("w1", 80, json!({}));
    e["Node"]["TaggedAddresses"] = json!({"lan": "10.0.0.1", "wan": "172.16.0.1"});
    let c = convert("web", &[entry(e)], &opts());
    assert_eq!(
        c.endpoints[&("web.service.consul".to_string(), 80)][0].address,
        "10.0.0.1"
    );
    assert_eq!(
        c.workloads["default/n1/w1"].addresses,
        vec!["10.0.0.1", "172.16.0.1"]
    );
}

#[test]
fn ports_one_per_distinct_instance_port() {
    let entries = [
        entry(web(
            "w2",
            81,
            json!({"Meta": {"protocol": "grpc", "serviceAccount": "sa"}}),
        )),
        entry(web("w1", 80, json!({"Meta": {"protocol": "http"}}))),
        entry(web("w3", 80, json!({"Meta": {"protocol": "tcp"}}))),
    ];
    let c = convert("web", &entries, &opts());
    let s = c.service.unwrap();
    assert_eq!(s.hostname, "web.service.consul");
    let ports: Vec<(&str, u16, Protocol)> = s
        .ports
        .iter()
        .map(|p| (p.name.as_str(), p.port, p.protocol))
        .collect();
    assert_eq!(
        ports,
        vec![
            ("http-80", 80, Protocol::Http),
            ("grpc-81", 81, Protocol::Grpc)
        ],
        "first instance (by id) wins a conflicting protocol"
    );
    assert_eq!(
        c.endpoints[&("web.service.consul".to_string(), 80)].len(),
        2
    );
    assert_eq!(
        c.endpoints[&("web.service.consul".to_string(), 81)][0]
            .meta
            .service_account,
        "sa"
    );
    assert_eq!(c.workloads.len(), 3);
}

#[test]
fn bad_entries_are_skipped() {
    let body =
        json!([web("w1", 80, json!({})), {"Service": "not an object"}, web("w2", 0, json!({}))]);
    let entries = parse_entries(body.to_string().as_bytes(), "web").unwrap();
    assert_eq!(entries.len(), 2);
    let c = convert("web", &entries, &opts());
    assert_eq!(c.workloads.len(), 1, "port 0 skipped");
    assert!(parse_entries(b"{not json", "web").is_err());
    assert_eq!(convert("web", &[], &opts()), ServiceContribution::default());
}
