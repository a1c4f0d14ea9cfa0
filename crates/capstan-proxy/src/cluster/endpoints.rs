//! `ClusterLoadAssignment` → [`EndpointSet`]: priority levels, localities with their
//! load-balancing weights, hosts with weights and health status. Used for EDS and for the inline
//! `load_assignment` of STATIC and DNS clusters (where hosts may be names, resolved later).

use crate::CompileError;
use envoy_types::pb::envoy::config::core::v3::{address, socket_address, HealthStatus};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, LbEndpoint,
};
use std::net::{IpAddr, SocketAddr};

/// Envoy's default overprovisioning factor (140, i.e. 1.4).
pub const DEFAULT_OVERPROVISIONING: u32 = 140;

/// Where a host is: an IP socket address, or (DNS clusters only) a name to resolve.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostAddress {
    /// An IP address and port.
    Ip(SocketAddr),
    /// A hostname and port, resolved by STRICT_DNS / LOGICAL_DNS clusters.
    Name(String, u16),
}

/// A host's health as the control plane reports it (`LbEndpoint.health_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// `HEALTHY` or `UNKNOWN`: receives traffic.
    Healthy,
    /// `DEGRADED`: counted as not healthy; used only in panic mode.
    Degraded,
    /// `UNHEALTHY`, `DRAINING`, `TIMEOUT`: used only in panic mode.
    Unhealthy,
}

/// One endpoint of a locality.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    /// Its address.
    pub address: HostAddress,
    /// `load_balancing_weight` (default 1).
    pub weight: u32,
    /// Its reported health.
    pub health: Health,
    /// `envoy.transport_socket_match` metadata (string fields).
    pub socket_match: Vec<(String, String)>,
}

/// `Locality` (region/zone/sub_zone), for locality-weighted balancing and the admin page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct LocalityName {
    /// Region.
    pub region: String,
    /// Zone.
    pub zone: String,
    /// Sub-zone.
    pub sub_zone: String,
}

/// The hosts of one locality at one priority.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalityHosts {
    /// Which locality.
    pub locality: LocalityName,
    /// `load_balancing_weight` of the locality (0 when unset: excluded by locality weighting).
    pub weight: u32,
    /// Its hosts.
    pub hosts: Vec<Host>,
}

/// One priority level: its localities in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriorityLevel {
    /// The localities of this level.
    pub localities: Vec<LocalityHosts>,
}

impl PriorityLevel {
    /// Every host of the level, locality by locality.
    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        self.localities.iter().flat_map(|l| l.hosts.iter())
    }
}

/// A cluster's endpoints, compiled from a `ClusterLoadAssignment`.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointSet {
    /// Priority levels, 0 (preferred) first, without gaps.
    pub priorities: Vec<PriorityLevel>,
    /// `policy.overprovisioning_factor` in percent (default 140).
    pub overprovisioning: u32,
}

impl Default for EndpointSet {
    fn default() -> Self {
        EndpointSet {
            priorities: Vec::new(),
            overprovisioning: DEFAULT_OVERPROVISIONING,
        }
    }
}

impl EndpointSet {
    /// Every host, all priorities.
    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        self.priorities.iter().flat_map(|p| p.hosts())
    }
    /// The IP addresses of every host (names excluded).
    pub fn addresses(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.hosts().filter_map(|h| match h.address {
            HostAddress::Ip(a) => Some(a),
            HostAddress::Name(..) => None,
        })
    }
    /// A set of equal-weight healthy hosts at priority 0, one locality (tests and builders).
    pub fn from_addrs(addrs: &[SocketAddr]) -> EndpointSet {
        EndpointSet {
            priorities: vec![PriorityLevel {
                localities: vec![LocalityHosts {
                    locality: LocalityName::default(),
                    weight: 1,
                    hosts: addrs
                        .iter()
                        .map(|a| Host {
                            socket_match: Vec::new(),
                            address: HostAddress::Ip(*a),
                            weight: 1,
                            health: Health::Healthy,
                        })
                        .collect(),
                }],
            }],
            overprovisioning: DEFAULT_OVERPROVISIONING,
        }
    }
}

/// Compiles an EDS resource (IP addresses only).
pub fn compile_assignment(cla: &ClusterLoadAssignment) -> Result<EndpointSet, CompileError> {
    compile_with(cla, false)
}

/// Compiles an assignment; `names` allows hostnames (STRICT_DNS / LOGICAL_DNS inline
/// assignments).
pub(crate) fn compile_with(
    cla: &ClusterLoadAssignment,
    names: bool,
) -> Result<EndpointSet, CompileError> {
    if !cla.named_endpoints.is_empty() {
        return Err(CompileError::new(
            "named_endpoints",
            "named endpoints are not supported",
        ));
    }
    let mut overprovisioning = DEFAULT_OVERPROVISIONING;
    if let Some(p) = &cla.policy {
        if !p.drop_overloads.is_empty() {
            return Err(CompileError::new(
                "policy.drop_overloads",
                "drop overloads are not supported",
            ));
        }
        if p.endpoint_stale_after.is_some() {
            return Err(CompileError::new(
                "policy.endpoint_stale_after",
                "not supported",
            ));
        }
        if p.weighted_priority_health {
            return Err(CompileError::new(
                "policy.weighted_priority_health",
                "not supported",
            ));
        }
        if let Some(f) = p.overprovisioning_factor {
            if f.value == 0 {
                return Err(CompileError::new(
                    "policy.overprovisioning_factor",
                    "must be greater than 0",
                ));
            }
            overprovisioning = f.value;
        }
    }
    let mut by_priority: std::collections::BTreeMap<u32, PriorityLevel> = Default::default();
    for (i, group) in cla.endpoints.iter().enumerate() {
        let at = |e: CompileError| e.within(&format!("endpoints[{i}]"));
        if group.proximity.is_some() {
            return Err(at(CompileError::new("proximity", "not supported")));
        }
        if group.lb_config.is_some() {
            return Err(at(CompileError::new(
                "lb_config",
                "LEDS (leds_cluster_locality_config) is not supported",
            )));
        }
        let locality = group.locality.clone().unwrap_or_default();
        let mut hosts = Vec::with_capacity(group.lb_endpoints.len());
        for (j, e) in group.lb_endpoints.iter().enumerate() {
            hosts
                .push(host(e, names).map_err(|err| at(err.within(&format!("lb_endpoints[{j}]"))))?);
        }
        by_priority
            .entry(group.priority)
            .or_default()
            .localities
            .push(LocalityHosts {
                locality: LocalityName {
                    region: locality.region,
                    zone: locality.zone,
                    sub_zone: locality.sub_zone,
                },
                weight: group.load_balancing_weight.map_or(0, |w| w.value),
                hosts,
            });
    }
    // Envoy numbers priorities without gaps in practice; gaps would leave empty levels that
    // take no load, so they are closed here.
    Ok(EndpointSet {
        priorities: by_priority.into_values().collect(),
        overprovisioning,
    })
}

fn host(e: &LbEndpoint, names: bool) -> Result<Host, CompileError> {
    let endpoint = match &e.host_identifier {
        Some(lb_endpoint::HostIdentifier::Endpoint(ep)) => ep,
        Some(lb_endpoint::HostIdentifier::EndpointName(_)) => {
            return Err(CompileError::new(
                "endpoint_name",
                "named endpoints are not supported",
            ))
        }
        None => return Err(CompileError::new("endpoint", "missing")),
    };
    if !endpoint.additional_addresses.is_empty() {
        return Err(CompileError::new(
            "endpoint.additional_addresses",
            "not supported",
        ));
    }
    let sa = match endpoint.address.as_ref().and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(sa)) => sa,
        Some(_) => {
            return Err(CompileError::new(
                "endpoint.address",
                "only socket addresses are supported (no pipes or internal addresses)",
            ))
        }
        None => return Err(CompileError::new("endpoint.address", "missing")),
    };
    let path = "endpoint.address.socket_address";
    if sa.protocol != 0 {
        return Err(CompileError::new(
            format!("{path}.protocol"),
            "only TCP is supported",
        ));
    }
    if !sa.resolver_name.is_empty() {
        return Err(CompileError::new(
            format!("{path}.resolver_name"),
            "custom resolvers are not supported",
        ));
    }
    if !sa.network_namespace_filepath.is_empty() {
        return Err(CompileError::new(
            format!("{path}.network_namespace_filepath"),
            "not supported",
        ));
    }
    let port = match sa.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(p)) => u16::try_from(p)
            .map_err(|_| CompileError::new(format!("{path}.port_value"), "out of range"))?,
        Some(socket_address::PortSpecifier::NamedPort(_)) => {
            return Err(CompileError::new(
                format!("{path}.named_port"),
                "named ports are not supported",
            ))
        }
        None => return Err(CompileError::new(format!("{path}.port_value"), "missing")),
    };
    let address = match sa.address.parse::<IpAddr>() {
        Ok(ip) => HostAddress::Ip(SocketAddr::new(ip, port)),
        Err(_) if names && !sa.address.is_empty() => HostAddress::Name(sa.address.clone(), port),
        Err(_) => {
            return Err(CompileError::new(
                format!("{path}.address"),
                format!("{:?} is not an IP address", sa.address),
            ))
        }
    };
    let weight = match e.load_balancing_weight {
        Some(w) if w.value == 0 => {
            return Err(CompileError::new(
                "load_balancing_weight",
                "must be at least 1",
            ))
        }
        Some(w) => w.value,
        None => 1,
    };
    let health = match HealthStatus::try_from(e.health_status) {
        Ok(HealthStatus::Unknown | HealthStatus::Healthy) => Health::Healthy,
        Ok(HealthStatus::Degraded) => Health::Degraded,
        Ok(HealthStatus::Unhealthy | HealthStatus::Draining | HealthStatus::Timeout) => {
            Health::Unhealthy
        }
        Err(_) => {
            return Err(CompileError::new(
                "health_status",
                format!("unknown value {}", e.health_status),
            ))
        }
    };
    // `envoy.transport_socket_match` metadata chooses the transport socket (Istio's auto mTLS
    // marks sidecar endpoints `tlsMode: istio`).
    let socket_match = e
        .metadata
        .as_ref()
        .and_then(|m| m.filter_metadata.get("envoy.transport_socket_match"))
        .map(|s| {
            s.fields
                .iter()
                .filter_map(|(k, v)| match &v.kind {
                    Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(v)) => {
                        Some((k.clone(), v.clone()))
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Host {
        address,
        weight,
        health,
        socket_match,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::{Address, Locality, SocketAddress};
    use envoy_types::pb::envoy::config::endpoint::v3::{Endpoint, LocalityLbEndpoints};
    use envoy_types::pb::google::protobuf::UInt32Value;

    /// An `LbEndpoint` at `ip:port`.
    pub(crate) fn lb_endpoint(ip: &str, port: u32) -> LbEndpoint {
        LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: ip.into(),
                        port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                        ..SocketAddress::default()
                    })),
                }),
                ..Endpoint::default()
            })),
            ..LbEndpoint::default()
        }
    }

    /// An assignment of one locality at priority 0.
    pub(crate) fn cla(endpoints: Vec<LbEndpoint>) -> ClusterLoadAssignment {
        ClusterLoadAssignment {
            cluster_name: "c".into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: endpoints,
                ..LocalityLbEndpoints::default()
            }],
            ..ClusterLoadAssignment::default()
        }
    }

    #[test]
    fn compiles_priorities_localities_weights_health() {
        let mut unhealthy = lb_endpoint("10.0.0.2", 80);
        unhealthy.health_status = HealthStatus::Draining as i32;
        let mut heavy = lb_endpoint("10.0.0.3", 80);
        heavy.load_balancing_weight = Some(UInt32Value { value: 5 });
        let a = ClusterLoadAssignment {
            endpoints: vec![
                LocalityLbEndpoints {
                    priority: 2,
                    locality: Some(Locality {
                        region: "r2".into(),
                        ..Locality::default()
                    }),
                    load_balancing_weight: Some(UInt32Value { value: 7 }),
                    lb_endpoints: vec![heavy],
                    ..LocalityLbEndpoints::default()
                },
                LocalityLbEndpoints {
                    lb_endpoints: vec![lb_endpoint("10.0.0.1", 80), unhealthy],
                    ..LocalityLbEndpoints::default()
                },
            ],
            ..ClusterLoadAssignment::default()
        };
        let set = compile_assignment(&a).expect("valid");
        assert_eq!(set.priorities.len(), 2, "gap between 0 and 2 closed");
        let p0: Vec<_> = set.priorities[0].hosts().map(|h| h.health).collect();
        assert_eq!(p0, vec![Health::Healthy, Health::Unhealthy]);
        let p1 = &set.priorities[1].localities[0];
        assert_eq!((p1.locality.region.as_str(), p1.weight), ("r2", 7));
        assert_eq!(p1.hosts[0].weight, 5);
        assert_eq!(set.overprovisioning, 140);
    }

    #[test]
    fn rejects_with_field_paths() {
        let mut zero = lb_endpoint("10.0.0.1", 80);
        zero.load_balancing_weight = Some(UInt32Value { value: 0 });
        let cases: Vec<(ClusterLoadAssignment, bool, &str)> = vec![
            (
                cla(vec![lb_endpoint("reviews", 80)]),
                false,
                "endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address",
            ),
            (
                cla(vec![lb_endpoint("10.0.0.1", 70000)]),
                false,
                "endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value",
            ),
            (
                cla(vec![zero]),
                false,
                "endpoints[0].lb_endpoints[0].load_balancing_weight",
            ),
        ];
        for (input, names, path) in cases {
            let err = compile_with(&input, names).expect_err(path);
            assert_eq!(err.path, path, "{err}");
        }
    }

    #[test]
    fn dns_assignments_keep_names() {
        let set = compile_with(&cla(vec![lb_endpoint("reviews.default", 9080)]), true)
            .expect("names allowed");
        let h = set.hosts().next().expect("one host");
        assert_eq!(h.address, HostAddress::Name("reviews.default".into(), 9080));
    }
}
