//! What a simulated proxy subscribes to and when it has all of it: like Envoy, CDS and LDS
//! wildcard, then EDS for every EDS cluster and RDS for every route name its listeners'
//! HTTP connection managers use; synced once it has a response for each.
//!
//! Clusters and listeners are read because what to subscribe to next is in them. Checking
//! their bodies (`check_bodies`) decodes them whole with Envoy's types and NACKs what does not
//! decode; otherwise only the fields that name the next subscriptions are read (a skipped
//! field costs no allocation), which keeps the proxies cheap beside the server they measure.

use crate::client::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use crate::wire::{Envelope, PackedAny};
use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::{
    cluster::ClusterDiscoveryType, cluster::DiscoveryType, Cluster,
};
use envoy_types::pb::envoy::config::listener::v3::{filter::ConfigType, Listener};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::RouteSpecifier, HttpConnectionManager,
};
use prost::Message;
use std::collections::HashSet;
use std::hash::BuildHasher;

const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// The type URL as one of the known constants (`"unknown"` otherwise).
pub(crate) fn known(type_url: &str) -> &'static str {
    [CLUSTER, LISTENER, ENDPOINT, ROUTE]
        .into_iter()
        .find(|t| *t == type_url)
        .unwrap_or("unknown")
}

/// A `Cluster`'s name and `type` (field 2 of the `cluster_discovery_type` oneof).
#[derive(Clone, PartialEq, Message)]
struct ClusterHead {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int32, optional, tag = "2")]
    discovery_type: Option<i32>,
}

/// A `Listener`'s filter chains (field 3).
#[derive(Clone, PartialEq, Message)]
struct ListenerHead {
    #[prost(message, repeated, tag = "3")]
    filter_chains: Vec<FilterChainHead>,
}

/// A `FilterChain`'s filters (field 3).
#[derive(Clone, PartialEq, Message)]
struct FilterChainHead {
    #[prost(message, repeated, tag = "3")]
    filters: Vec<FilterHead>,
}

/// A `Filter`'s `typed_config` (field 4).
#[derive(Clone, PartialEq, Message)]
struct FilterHead {
    #[prost(message, optional, tag = "4")]
    typed_config: Option<PackedAny>,
}

/// An `HttpConnectionManager`'s `rds` (field 3).
#[derive(Clone, PartialEq, Message)]
struct HcmHead {
    #[prost(message, optional, tag = "3")]
    rds: Option<RdsHead>,
}

/// `Rds.route_config_name` (field 2).
#[derive(Clone, PartialEq, Message)]
struct RdsHead {
    #[prost(string, tag = "2")]
    route_config_name: String,
}

/// The cluster's name if it is an EDS cluster.
fn eds_cluster(body: Bytes, check_bodies: bool) -> Result<Option<String>, prost::DecodeError> {
    let eds = DiscoveryType::Eds as i32;
    if check_bodies {
        let c = Cluster::decode(body)?;
        let is_eds =
            matches!(c.cluster_discovery_type, Some(ClusterDiscoveryType::Type(t)) if t == eds);
        Ok(is_eds.then_some(c.name))
    } else {
        let c = ClusterHead::decode(body)?;
        Ok((c.discovery_type == Some(eds)).then_some(c.name))
    }
}

/// The route configuration names the listener's HTTP connection managers fetch over RDS.
fn route_names(body: Bytes, check_bodies: bool) -> Result<Vec<String>, prost::DecodeError> {
    let mut out = Vec::new();
    if check_bodies {
        let listener = Listener::decode(body)?;
        for filter in listener.filter_chains.iter().flat_map(|c| &c.filters) {
            if let Some(ConfigType::TypedConfig(any)) = &filter.config_type {
                if any.type_url == HCM {
                    if let Ok(hcm) = HttpConnectionManager::decode(any.value.as_slice()) {
                        if let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier {
                            out.push(rds.route_config_name);
                        }
                    }
                }
            }
        }
    } else {
        let listener = ListenerHead::decode(body)?;
        for filter in listener.filter_chains.into_iter().flat_map(|c| c.filters) {
            if let Some(any) = filter.typed_config.filter(|a| a.type_url == HCM) {
                if let Ok(HcmHead { rds: Some(rds) }) = HcmHead::decode(any.value) {
                    out.push(rds.route_config_name);
                }
            }
        }
    }
    Ok(out)
}

/// Names as 64-bit hashes: a proxy tracks ~2,000 of them until it is synced, and a set of
/// hashes costs no allocation or string comparison per name.
type NameSet = HashSet<u64, foldhash::fast::FixedState>;

fn key(name: &[u8]) -> u64 {
    foldhash::fast::FixedState::with_seed(13).hash_one(name)
}

/// What the client knows it needs and has, until it is synced.
#[derive(Default)]
pub(crate) struct Sync {
    eds: NameSet,
    rds: NameSet,
    got_eds: NameSet,
    got_rds: NameSet,
    got_cds: bool,
    got_lds: bool,
    pub(crate) done: bool,
}

/// What one response asks of the client.
pub(crate) struct Next {
    /// EDS names to subscribe to.
    pub(crate) eds: Vec<String>,
    /// RDS names to subscribe to.
    pub(crate) rds: Vec<String>,
    /// Why the response is NACKed, if it is.
    pub(crate) error: Option<String>,
    /// This response completed the sync.
    pub(crate) synced: bool,
}

impl Sync {
    /// Reads one response of known type `type_url`.
    pub(crate) fn read(&mut self, response: &Envelope, type_url: &str, check_bodies: bool) -> Next {
        let mut next = Next {
            eds: Vec::new(),
            rds: Vec::new(),
            error: None,
            synced: false,
        };
        for r in &response.resources {
            let Some(any) = &r.resource else { continue };
            if type_url == CLUSTER {
                match eds_cluster(any.value.clone(), check_bodies) {
                    Ok(Some(name)) => {
                        if self.eds.insert(key(name.as_bytes())) {
                            next.eds.push(name);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => next.error = Some(format!("cluster {}: {e}", r.name_text())),
                }
            } else if type_url == LISTENER {
                match route_names(any.value.clone(), check_bodies) {
                    Ok(names) => next.rds.extend(
                        names
                            .into_iter()
                            .filter(|n| self.rds.insert(key(n.as_bytes()))),
                    ),
                    Err(e) => next.error = Some(format!("listener {}: {e}", r.name_text())),
                }
            }
        }
        if self.done {
            return next;
        }
        let names = response.resources.iter().map(|r| key(&r.name));
        match type_url {
            CLUSTER => self.got_cds = true,
            LISTENER => self.got_lds = true,
            ENDPOINT => self.got_eds.extend(names),
            ROUTE => self.got_rds.extend(names),
            _ => {}
        }
        if self.got_cds
            && self.got_lds
            && next.eds.is_empty()
            && next.rds.is_empty()
            && self.eds.is_subset(&self.got_eds)
            && self.rds.is_subset(&self.got_rds)
        {
            // Synced: the bookkeeping is no longer needed.
            *self = Sync {
                done: true,
                ..Sync::default()
            };
            next.synced = true;
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::EnvelopeResource;
    use envoy_types::pb::envoy::config::cluster::v3::cluster::EdsClusterConfig;
    use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain};
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::Rds;
    use envoy_types::pb::google::protobuf::Any;

    fn cluster(name: &str, kind: DiscoveryType) -> Vec<u8> {
        Cluster {
            name: name.into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(kind as i32)),
            eds_cluster_config: Some(EdsClusterConfig::default()),
            ..Cluster::default()
        }
        .encode_to_vec()
    }

    fn listener(routes: &[&str]) -> Vec<u8> {
        let hcm = |route: &str| Filter {
            name: "envoy.filters.network.http_connection_manager".into(),
            config_type: Some(ConfigType::TypedConfig(Any {
                type_url: HCM.into(),
                value: HttpConnectionManager {
                    stat_prefix: "x".into(),
                    route_specifier: Some(RouteSpecifier::Rds(Rds {
                        route_config_name: route.into(),
                        ..Rds::default()
                    })),
                    ..HttpConnectionManager::default()
                }
                .encode_to_vec(),
            })),
        };
        Listener {
            name: "0.0.0.0_9080".into(),
            filter_chains: routes
                .iter()
                .map(|r| FilterChain {
                    filters: vec![hcm(r)],
                    ..FilterChain::default()
                })
                .collect(),
            ..Listener::default()
        }
        .encode_to_vec()
    }

    fn response(type_url: &str, bodies: Vec<(&str, Vec<u8>)>) -> Envelope {
        Envelope {
            type_url: type_url.into(),
            resources: bodies
                .into_iter()
                .map(|(name, body)| EnvelopeResource {
                    name: Bytes::copy_from_slice(name.as_bytes()),
                    version: Bytes::from_static(b"1"),
                    resource: Some(PackedAny {
                        type_url: type_url.into(),
                        value: Bytes::from(body),
                    }),
                })
                .collect(),
            ..Envelope::default()
        }
    }

    /// Both ways of reading ask for the same subscriptions and see the sync through.
    #[test]
    fn light_and_full_reads_agree_and_sync() {
        for check_bodies in [false, true] {
            let mut sync = Sync::default();
            let cds = response(
                CLUSTER,
                vec![
                    ("a", cluster("a", DiscoveryType::Eds)),
                    ("b", cluster("b", DiscoveryType::StrictDns)),
                    ("c", cluster("c", DiscoveryType::Eds)),
                ],
            );
            let next = sync.read(&cds, CLUSTER, check_bodies);
            assert_eq!(next.eds, ["a", "c"], "check_bodies={check_bodies}");
            assert!(next.error.is_none() && !next.synced);
            let lds = response(LISTENER, vec![("l", listener(&["9080", "80", "9080"]))]);
            let next = sync.read(&lds, LISTENER, check_bodies);
            assert_eq!(next.rds, ["9080", "80"]);
            let eds = response(ENDPOINT, vec![("a", vec![]), ("c", vec![])]);
            assert!(!sync.read(&eds, ENDPOINT, check_bodies).synced);
            let rds = response(ROUTE, vec![("9080", vec![]), ("80", vec![])]);
            assert!(sync.read(&rds, ROUTE, check_bodies).synced);
            // A body that is not protobuf is an error either way.
            let bad = response(CLUSTER, vec![("x", vec![0xff, 0xff])]);
            assert!(Sync::default()
                .read(&bad, CLUSTER, check_bodies)
                .error
                .is_some());
        }
    }
}
