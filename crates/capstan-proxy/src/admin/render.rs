//! Envoy resources as proto3 JSON for `/config_dump`, hand-written because envoy-types has no
//! serde support. Each resource is rendered with its `@type`, its name and the fields operators
//! read most (addresses, filter names, virtual hosts and routes, endpoints); the rest is left
//! out, so a dump is a summary, not a lossless copy.

use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::{address, socket_address, Address};
use envoy_types::pb::envoy::config::endpoint::v3::{lb_endpoint, ClusterLoadAssignment};
use envoy_types::pb::envoy::config::listener::v3::{filter, listener_filter, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    route, route_action, route_match, RouteConfiguration,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{secret, Secret};
use envoy_types::pb::google::protobuf::{Any, Duration};
use prost::Message;
use serde_json::{json, Map, Value};

/// Proto3 JSON of a `Duration`: `"1.500s"`.
fn duration(d: &Duration) -> Value {
    if d.nanos == 0 {
        Value::String(format!("{}s", d.seconds))
    } else {
        let s = format!("{}.{:09}", d.seconds, d.nanos.unsigned_abs());
        Value::String(format!("{}s", s.trim_end_matches('0')))
    }
}

/// Proto3 JSON of an `Address`.
pub fn address(a: &Address) -> Value {
    match &a.address {
        Some(address::Address::SocketAddress(sa)) => {
            let mut m = Map::new();
            m.insert("address".into(), json!(sa.address));
            match &sa.port_specifier {
                Some(socket_address::PortSpecifier::PortValue(p)) => {
                    m.insert("port_value".into(), json!(p));
                }
                Some(socket_address::PortSpecifier::NamedPort(p)) => {
                    m.insert("named_port".into(), json!(p));
                }
                None => {}
            }
            json!({ "socket_address": m })
        }
        Some(address::Address::Pipe(p)) => json!({ "pipe": { "path": p.path } }),
        Some(address::Address::EnvoyInternalAddress(_)) => json!({ "envoy_internal_address": {} }),
        None => json!({}),
    }
}

fn typed(type_url: &str, mut fields: Map<String, Value>) -> Value {
    let mut m = Map::new();
    m.insert("@type".into(), json!(type_url));
    m.append(&mut fields);
    Value::Object(m)
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn cluster(c: &Cluster) -> Map<String, Value> {
    let mut m = obj(json!({ "name": c.name }));
    match &c.cluster_discovery_type {
        Some(cluster::ClusterDiscoveryType::Type(t)) => {
            let name = cluster::DiscoveryType::try_from(*t)
                .map(|t| t.as_str_name())
                .unwrap_or("UNKNOWN");
            m.insert("type".into(), json!(name));
        }
        Some(cluster::ClusterDiscoveryType::ClusterType(ct)) => {
            m.insert("cluster_type".into(), json!({ "name": ct.name }));
        }
        None => {}
    }
    if let Some(eds) = &c.eds_cluster_config {
        m.insert(
            "eds_cluster_config".into(),
            json!({ "service_name": eds.service_name, "eds_config": { "ads": {} } }),
        );
    }
    if let Some(d) = &c.connect_timeout {
        m.insert("connect_timeout".into(), duration(d));
    }
    let lb = cluster::LbPolicy::try_from(c.lb_policy)
        .map(|p| p.as_str_name())
        .unwrap_or("UNKNOWN");
    m.insert("lb_policy".into(), json!(lb));
    if let Some(la) = &c.load_assignment {
        m.insert("load_assignment".into(), Value::Object(assignment(la)));
    }
    if let Some(ts) = &c.transport_socket {
        m.insert(
            "transport_socket".into(),
            json!({ "name": ts.name, "typed_config": any_typed_config(&ts.config_type) }),
        );
    }
    m
}

fn any_typed_config(
    c: &Option<envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType>,
) -> Value {
    match c {
        Some(
            envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(a),
        ) => {
            json!({ "@type": a.type_url })
        }
        None => Value::Null,
    }
}

fn assignment(la: &ClusterLoadAssignment) -> Map<String, Value> {
    let endpoints: Vec<Value> = la
        .endpoints
        .iter()
        .map(|l| {
            let mut lm = Map::new();
            if let Some(loc) = &l.locality {
                lm.insert(
                    "locality".into(),
                    json!({ "region": loc.region, "zone": loc.zone, "sub_zone": loc.sub_zone }),
                );
            }
            let hosts: Vec<Value> = l
                .lb_endpoints
                .iter()
                .map(|e| {
                    let mut em = Map::new();
                    if let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &e.host_identifier {
                        let addr = ep.address.as_ref().map(address).unwrap_or(Value::Null);
                        em.insert("endpoint".into(), json!({ "address": addr }));
                    }
                    let health = envoy_types::pb::envoy::config::core::v3::HealthStatus::try_from(
                        e.health_status,
                    )
                    .map(|h| h.as_str_name())
                    .unwrap_or("UNKNOWN");
                    em.insert("health_status".into(), json!(health));
                    if let Some(w) = &e.load_balancing_weight {
                        em.insert("load_balancing_weight".into(), json!(w.value));
                    }
                    Value::Object(em)
                })
                .collect();
            lm.insert("lb_endpoints".into(), Value::Array(hosts));
            if let Some(w) = &l.load_balancing_weight {
                lm.insert("load_balancing_weight".into(), json!(w.value));
            }
            if l.priority != 0 {
                lm.insert("priority".into(), json!(l.priority));
            }
            Value::Object(lm)
        })
        .collect();
    obj(json!({ "cluster_name": la.cluster_name, "endpoints": endpoints }))
}

fn listener(l: &Listener) -> Map<String, Value> {
    let mut m = obj(json!({ "name": l.name }));
    if let Some(a) = &l.address {
        m.insert("address".into(), address(a));
    }
    let chains: Vec<Value> = l
        .filter_chains
        .iter()
        .chain(l.default_filter_chain.iter())
        .map(|fc| {
            let filters: Vec<Value> = fc
                .filters
                .iter()
                .map(|f| {
                    let tc = match &f.config_type {
                        Some(filter::ConfigType::TypedConfig(a)) => json!({ "@type": a.type_url }),
                        _ => Value::Null,
                    };
                    json!({ "name": f.name, "typed_config": tc })
                })
                .collect();
            let mut cm = obj(json!({ "filters": filters }));
            if !fc.name.is_empty() {
                cm.insert("name".into(), json!(fc.name));
            }
            if let Some(fm) = &fc.filter_chain_match {
                let mut fmm = Map::new();
                if let Some(p) = &fm.destination_port {
                    fmm.insert("destination_port".into(), json!(p.value));
                }
                if !fm.transport_protocol.is_empty() {
                    fmm.insert("transport_protocol".into(), json!(fm.transport_protocol));
                }
                if !fm.application_protocols.is_empty() {
                    fmm.insert(
                        "application_protocols".into(),
                        json!(fm.application_protocols),
                    );
                }
                if !fm.server_names.is_empty() {
                    fmm.insert("server_names".into(), json!(fm.server_names));
                }
                cm.insert("filter_chain_match".into(), Value::Object(fmm));
            }
            Value::Object(cm)
        })
        .collect();
    m.insert("filter_chains".into(), Value::Array(chains));
    let lfs: Vec<Value> = l
        .listener_filters
        .iter()
        .map(|f| {
            let tc = match &f.config_type {
                Some(listener_filter::ConfigType::TypedConfig(a)) => json!({ "@type": a.type_url }),
                _ => Value::Null,
            };
            json!({ "name": f.name, "typed_config": tc })
        })
        .collect();
    if !lfs.is_empty() {
        m.insert("listener_filters".into(), Value::Array(lfs));
    }
    if let Some(b) = &l.use_original_dst {
        m.insert("use_original_dst".into(), json!(b.value));
    }
    m.insert(
        "traffic_direction".into(),
        json!(
            envoy_types::pb::envoy::config::core::v3::TrafficDirection::try_from(
                l.traffic_direction
            )
            .map(|d| d.as_str_name())
            .unwrap_or("UNSPECIFIED")
        ),
    );
    m
}

fn route_config(rc: &RouteConfiguration) -> Map<String, Value> {
    let vhosts: Vec<Value> = rc
        .virtual_hosts
        .iter()
        .map(|vh| {
            let routes: Vec<Value> = vh
                .routes
                .iter()
                .map(|r| {
                    let mut rm = Map::new();
                    if !r.name.is_empty() {
                        rm.insert("name".into(), json!(r.name));
                    }
                    let mut mm = Map::new();
                    if let Some(rmatch) = &r.r#match {
                        match &rmatch.path_specifier {
                            Some(route_match::PathSpecifier::Prefix(p)) => {
                                mm.insert("prefix".into(), json!(p));
                            }
                            Some(route_match::PathSpecifier::Path(p)) => {
                                mm.insert("path".into(), json!(p));
                            }
                            Some(route_match::PathSpecifier::SafeRegex(re)) => {
                                mm.insert("safe_regex".into(), json!({ "regex": re.regex }));
                            }
                            Some(route_match::PathSpecifier::PathSeparatedPrefix(p)) => {
                                mm.insert("path_separated_prefix".into(), json!(p));
                            }
                            _ => {}
                        }
                    }
                    rm.insert("match".into(), Value::Object(mm));
                    match &r.action {
                        Some(route::Action::Route(ra)) => {
                            let mut am = Map::new();
                            match &ra.cluster_specifier {
                                Some(route_action::ClusterSpecifier::Cluster(c)) => {
                                    am.insert("cluster".into(), json!(c));
                                }
                                Some(route_action::ClusterSpecifier::WeightedClusters(w)) => {
                                    let cs: Vec<Value> = w
                                        .clusters
                                        .iter()
                                        .map(|c| {
                                            json!({ "name": c.name, "weight": c.weight.as_ref().map(|w| w.value) })
                                        })
                                        .collect();
                                    am.insert("weighted_clusters".into(), json!({ "clusters": cs }));
                                }
                                Some(route_action::ClusterSpecifier::ClusterHeader(h)) => {
                                    am.insert("cluster_header".into(), json!(h));
                                }
                                _ => {}
                            }
                            if let Some(t) = &ra.timeout {
                                am.insert("timeout".into(), duration(t));
                            }
                            rm.insert("route".into(), Value::Object(am));
                        }
                        Some(route::Action::Redirect(_)) => {
                            rm.insert("redirect".into(), json!({}));
                        }
                        Some(route::Action::DirectResponse(d)) => {
                            rm.insert("direct_response".into(), json!({ "status": d.status }));
                        }
                        _ => {}
                    }
                    Value::Object(rm)
                })
                .collect();
            json!({ "name": vh.name, "domains": vh.domains, "routes": routes })
        })
        .collect();
    obj(json!({ "name": rc.name, "virtual_hosts": vhosts }))
}

/// Proto3 JSON of a `DataSource` (bytes in base64).
fn data_source(d: &envoy_types::pb::envoy::config::core::v3::DataSource) -> Value {
    use base64::Engine;
    use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
    match &d.specifier {
        Some(Specifier::Filename(f)) => json!({ "filename": f }),
        Some(Specifier::InlineBytes(b)) => {
            json!({ "inline_bytes": base64::engine::general_purpose::STANDARD.encode(b) })
        }
        Some(Specifier::InlineString(s)) => json!({ "inline_string": s }),
        Some(Specifier::EnvironmentVariable(v)) => json!({ "environment_variable": v }),
        None => json!({}),
    }
}

/// A secret: the certificates and CA bundles; a private key is shown as `[redacted]` whatever
/// the copy holds (the store keeps only redacted copies: this is the second guard).
fn secret(s: &Secret) -> Map<String, Value> {
    let mut m = obj(json!({ "name": s.name }));
    let redacted = json!({ "inline_string": crate::sds::secret::REDACTED });
    match &s.r#type {
        Some(secret::Type::TlsCertificate(c)) => {
            let mut t = Map::new();
            if let Some(d) = &c.certificate_chain {
                t.insert("certificate_chain".into(), data_source(d));
            }
            if c.private_key.is_some() {
                t.insert("private_key".into(), redacted);
            }
            m.insert("tls_certificate".into(), Value::Object(t));
        }
        Some(secret::Type::ValidationContext(v)) => {
            let mut t = Map::new();
            if let Some(d) = &v.trusted_ca {
                t.insert("trusted_ca".into(), data_source(d));
            }
            if let Some(d) = &v.crl {
                t.insert("crl".into(), data_source(d));
            }
            m.insert("validation_context".into(), Value::Object(t));
        }
        Some(secret::Type::SessionTicketKeys(_)) => {
            m.insert("session_ticket_keys".into(), json!({ "keys": [redacted] }));
        }
        Some(secret::Type::GenericSecret(_)) => {
            m.insert("generic_secret".into(), json!({ "secret": redacted }));
        }
        None => {}
    }
    m
}

/// One resource as received, rendered by its type URL; an undecodable resource is rendered as
/// its `@type` and the decode error.
pub fn resource(any: &Any) -> Value {
    fn decoded<M: Message + Default>(
        any: &Any,
        f: fn(&M) -> Map<String, Value>,
    ) -> Map<String, Value> {
        match M::decode(any.value.as_slice()) {
            Ok(m) => f(&m),
            Err(e) => obj(json!({ "error": format!("cannot decode: {e}") })),
        }
    }
    let fields = match any.type_url.as_str() {
        crate::resources::CLUSTER => decoded::<Cluster>(any, cluster),
        crate::resources::LISTENER => decoded::<Listener>(any, listener),
        crate::resources::ROUTE => decoded::<RouteConfiguration>(any, route_config),
        crate::resources::ENDPOINT => decoded::<ClusterLoadAssignment>(any, assignment),
        crate::resources::SECRET => decoded::<Secret>(any, secret),
        _ => Map::new(),
    };
    typed(&any.type_url, fields)
}
