//! Listeners compiled from LDS: address, listener filters, filter chains and Envoy's filter-chain
//! selection. Pure: no sockets here (see [`crate::server`]).

use crate::http::{self, HcmConfig, RouteSource};
use crate::listener_filter::ListenerFilters;
use crate::CompileError;
use envoy_types::pb::envoy::config::core::v3::{address, socket_address, Address, CidrRange};
use envoy_types::pb::envoy::config::listener::v3::{
    filter, Filter, FilterChain as FilterChainProto, Listener,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{tcp_proxy, TcpProxy};
use prost::Message;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

const HCM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const TCP_PROXY_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const NETWORK_RBAC_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC";

/// Envoy's default `listener_filters_timeout`.
const DEFAULT_FILTERS_TIMEOUT: Duration = Duration::from_secs(15);
/// Envoy's default TCP proxy `idle_timeout`.
const DEFAULT_TCP_IDLE: Duration = Duration::from_secs(3600);
/// Envoy's default `per_connection_buffer_limit_bytes` (1 MiB).
pub const DEFAULT_BUFFER_LIMIT: usize = 1 << 20;

/// A compiled listener.
#[derive(Debug)]
pub struct ListenerConfig {
    /// Its name.
    pub name: String,
    /// The address it listens on (or, with `bind_to_port: false`, is handed connections for).
    pub address: SocketAddr,
    /// Whether it binds its address (`bind_to_port`, default true).
    pub bind_to_port: bool,
    /// `use_original_dst`: hand a redirected connection to the listener of its original
    /// destination, as Istio's `virtualOutbound` relies on.
    pub use_original_dst: bool,
    /// Listener filters, in order, with their `filter_disabled` predicates.
    pub listener_filters: ListenerFilters,
    /// `listener_filters_timeout`: how long the inspectors wait for the first bytes (`None`:
    /// no limit, as Envoy's `0s`).
    pub filters_timeout: Option<Duration>,
    /// `continue_on_listener_filters_timeout`: on timeout, choose a chain with what is known
    /// instead of closing the connection.
    pub continue_on_timeout: bool,
    /// Filter chains, in order.
    pub chains: Vec<FilterChain>,
    /// `default_filter_chain`: used when no chain matches.
    pub default_chain: Option<FilterChain>,
    /// `per_connection_buffer_limit_bytes` (default 1 MiB; `0`, no limit, is `u32::MAX` as in
    /// Envoy's router): what the router keeps of a request body for retries and mirrors, unless
    /// the route says otherwise ([`crate::route::BodyBufferLimit`]).
    pub buffer_limit: usize,
}

/// One filter chain: its match and its terminal network filter.
#[derive(Debug)]
pub struct FilterChain {
    /// Its name (for logs and stats).
    pub name: String,
    /// When it applies.
    pub matcher: ChainMatch,
    /// `envoy.filters.network.rbac` filters before the terminal one, in order.
    pub rbac: Vec<Arc<NetworkRbac>>,
    /// What handles the connection.
    pub filter: NetworkFilter,
    /// TLS termination (`transport_socket` with a `DownstreamTlsContext`), when set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The SDS secrets its TLS termination reads over ADS.
    pub sds_names: Vec<String>,
}

/// The terminal network filter of a chain.
#[derive(Debug, Clone)]
pub enum NetworkFilter {
    /// `envoy.filters.network.http_connection_manager`.
    Http(Arc<HcmConfig>),
    /// `envoy.filters.network.tcp_proxy`.
    Tcp(Arc<TcpProxyConfig>),
}

/// A compiled network RBAC filter (`envoy.filters.network.rbac`): the HTTP filter's policies
/// evaluated once per connection on what a connection shows (addresses, SNI, the peer
/// certificate); header and path permissions match nothing, as in Envoy.
///
/// Envoy (enforcement `ONE_TIME_ON_FIRST_BYTE`) decides when the client's first byte arrives;
/// we decide as soon as the connection (and its TLS handshake) is accepted, before connecting
/// upstream, so a refused client of a server-first protocol never sees the server's greeting.
#[derive(Debug)]
pub struct NetworkRbac {
    /// The stats instance: Envoy counts `<stat_prefix>rbac.allowed`; Istio's prefix `tcp.` makes
    /// that `tcp.rbac.allowed`, which we keep as scope `tcp`, instance `rbac`.
    pub stats_instance: String,
    /// The policies.
    pub filter: http::rbac::RbacFilter,
    /// `delay_deny`: how long a refused connection is held before it is closed.
    pub delay_deny: Option<Duration>,
}

fn network_rbac(
    r: &envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac,
) -> Result<NetworkRbac, CompileError> {
    use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::rbac::EnforcementType;
    let filter = http::rbac::RbacFilter::from_rules(r.rules.as_ref(), r.matcher.is_some())?;
    // CONTINUOUS re-checks on dynamic metadata changes; nothing here sets any, so the one
    // decision stands for the connection's life either way.
    if EnforcementType::try_from(r.enforcement_type).is_err() {
        return Err(CompileError::new(
            "enforcement_type",
            format!("unknown enforcement type {}", r.enforcement_type),
        ));
    }
    let delay_deny = r
        .delay_deny
        .as_ref()
        .map(|d| duration(d).map_err(|e| e.within("delay_deny")))
        .transpose()?;
    Ok(NetworkRbac {
        stats_instance: format!(
            "{}rbac",
            r.stat_prefix.strip_prefix("tcp.").unwrap_or(&r.stat_prefix)
        ),
        filter,
        delay_deny,
    })
}

/// A compiled `TcpProxy`.
#[derive(Debug, PartialEq)]
pub struct TcpProxyConfig {
    /// `stat_prefix`.
    pub stat_prefix: String,
    /// Clusters and their weights (one entry of weight 1 for a single cluster).
    pub clusters: Vec<(String, u32)>,
    /// Idle timeout; `None` disables it (`idle_timeout: 0s`).
    pub idle_timeout: Option<Duration>,
}

impl TcpProxyConfig {
    /// Picks a cluster by weight; `roll` is uniform in `0..total weight`.
    pub fn pick(&self, roll: u64) -> Option<&str> {
        let mut left = roll;
        for (name, w) in &self.clusters {
            if left < u64::from(*w) {
                return Some(name);
            }
            left -= u64::from(*w);
        }
        self.clusters.last().map(|(n, _)| n.as_str())
    }
    /// Sum of weights.
    pub fn total_weight(&self) -> u64 {
        self.clusters.iter().map(|(_, w)| u64::from(*w)).sum()
    }
}

/// An IP prefix (`CidrRange`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    /// Whether `ip` is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

/// A compiled `FilterChainMatch`; empty fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainMatch {
    /// `destination_port`.
    pub destination_port: Option<u16>,
    /// `prefix_ranges` (destination IP).
    pub prefix_ranges: Vec<Cidr>,
    /// `server_names` (SNI), exact or `*.suffix`.
    pub server_names: Vec<String>,
    /// `transport_protocol`: `tls` or `raw_buffer`.
    pub transport_protocol: Option<String>,
    /// `application_protocols` (ALPN, or what the HTTP inspector detected).
    pub application_protocols: Vec<String>,
    /// `source_prefix_ranges`.
    pub source_prefix_ranges: Vec<Cidr>,
    /// `source_ports`.
    pub source_ports: Vec<u16>,
}

/// What is known of a connection when its filter chain is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// Destination (the original destination when captured).
    pub destination: SocketAddr,
    /// Source.
    pub source: SocketAddr,
    /// SNI, when TLS.
    pub server_name: Option<String>,
    /// `tls` or `raw_buffer`.
    pub transport_protocol: &'static str,
    /// ALPN offered, or `http/1.1` / `http/1.0` / `h2c` from the HTTP inspector.
    pub application_protocols: Vec<String>,
}

impl ListenerConfig {
    /// The route configurations its HTTP filter chains read over RDS.
    pub fn rds_names(&self) -> impl Iterator<Item = &str> {
        self.chains
            .iter()
            .chain(self.default_chain.iter())
            .filter_map(|c| match &c.filter {
                NetworkFilter::Http(h) => match &h.routes {
                    RouteSource::Rds(name) => Some(name.as_str()),
                    RouteSource::Inline(_) => None,
                },
                NetworkFilter::Tcp(_) => None,
            })
    }

    /// The SDS secrets its filter chains read over ADS (gateway `credentialName`s), as the
    /// store subscribes to them; `default` and `ROOTCA` are the workload's own, never listed.
    pub fn sds_names(&self) -> impl Iterator<Item = &str> {
        self.chains
            .iter()
            .chain(self.default_chain.iter())
            .flat_map(|c| c.sds_names.iter().map(String::as_str))
    }

    /// Chooses the filter chain for a connection as Envoy does: criteria in order (destination
    /// port, destination IP, server name, transport protocol, application protocols, source IP,
    /// source port); at each step the most specific matching chains survive, and chains that
    /// leave the criterion empty survive only when no chain names it specifically.
    pub fn select(&self, c: &ConnectionInfo) -> Option<&FilterChain> {
        let mut candidates: Vec<&FilterChain> = self.chains.iter().collect();
        candidates = narrow(candidates, |m| {
            m.destination_port
                .map(|p| (p == c.destination.port()).then_some(1))
        });
        candidates = narrow(candidates, |m| {
            prefix_score(&m.prefix_ranges, c.destination.ip())
        });
        candidates = narrow(candidates, |m| {
            if m.server_names.is_empty() {
                return None;
            }
            let Some(sni) = c.server_name.as_deref() else {
                return Some(None);
            };
            Some(
                m.server_names
                    .iter()
                    .filter_map(|n| sni_score(n, sni))
                    .max(),
            )
        });
        candidates = narrow(candidates, |m| {
            m.transport_protocol
                .as_ref()
                .map(|t| (t == c.transport_protocol).then_some(1))
        });
        candidates = narrow(candidates, |m| {
            if m.application_protocols.is_empty() {
                return None;
            }
            let hit = m
                .application_protocols
                .iter()
                .any(|p| c.application_protocols.contains(p));
            Some(hit.then_some(1))
        });
        candidates = narrow(candidates, |m| {
            prefix_score(&m.source_prefix_ranges, c.source.ip())
        });
        candidates = narrow(candidates, |m| {
            if m.source_ports.is_empty() {
                return None;
            }
            Some(m.source_ports.contains(&c.source.port()).then_some(1))
        });
        candidates
            .into_iter()
            .next()
            .or(self.default_chain.as_ref())
    }
}

/// One selection step. `score` is `None` when the chain leaves the criterion empty,
/// `Some(None)` when it names the criterion and does not match, `Some(Some(s))` when it matches
/// with specificity `s`.
fn narrow(
    chains: Vec<&FilterChain>,
    score: impl Fn(&ChainMatch) -> Option<Option<u32>>,
) -> Vec<&FilterChain> {
    let scored: Vec<(Option<Option<u32>>, &FilterChain)> =
        chains.into_iter().map(|c| (score(&c.matcher), c)).collect();
    let best = scored.iter().filter_map(|(s, _)| s.flatten()).max();
    match best {
        Some(best) => scored
            .into_iter()
            .filter(|(s, _)| *s == Some(Some(best)))
            .map(|(_, c)| c)
            .collect(),
        None => scored
            .into_iter()
            .filter(|(s, _)| s.is_none())
            .map(|(_, c)| c)
            .collect(),
    }
}

fn prefix_score(ranges: &[Cidr], ip: IpAddr) -> Option<Option<u32>> {
    if ranges.is_empty() {
        return None;
    }
    Some(
        ranges
            .iter()
            .filter(|r| r.contains(ip))
            .map(|r| u32::from(r.len) + 1)
            .max(),
    )
}

/// Exact names beat wildcards; longer wildcard suffixes beat shorter ones.
fn sni_score(pattern: &str, sni: &str) -> Option<u32> {
    if pattern.eq_ignore_ascii_case(sni) {
        return Some(u32::MAX);
    }
    let suffix = pattern.strip_prefix('*')?;
    let sni = sni.to_ascii_lowercase();
    (sni.len() > suffix.len() && sni.ends_with(&suffix.to_ascii_lowercase()))
        .then_some(suffix.len() as u32)
}

/// Reads a socket address.
pub fn socket_address(a: Option<&Address>) -> Result<SocketAddr, CompileError> {
    let Some(address::Address::SocketAddress(sa)) = a.and_then(|a| a.address.as_ref()) else {
        return Err(CompileError::new("", "a socket_address is required"));
    };
    if !sa.resolver_name.is_empty() {
        return Err(CompileError::new(
            "resolver_name",
            "custom resolvers are not supported",
        ));
    }
    let ip: IpAddr = sa.address.parse().map_err(|_| {
        CompileError::new("address", format!("{:?} is not an IP address", sa.address))
    })?;
    let port = match sa.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(p)) => u16::try_from(p)
            .map_err(|_| CompileError::new("port_value", format!("{p} is out of range")))?,
        Some(socket_address::PortSpecifier::NamedPort(_)) => {
            return Err(CompileError::new(
                "named_port",
                "named ports are not supported",
            ))
        }
        None => return Err(CompileError::new("port_value", "a port is required")),
    };
    Ok(SocketAddr::new(ip, port))
}

fn cidr(r: &CidrRange) -> Result<Cidr, CompileError> {
    let addr: IpAddr = r.address_prefix.parse().map_err(|_| {
        CompileError::new(
            "address_prefix",
            format!("{:?} is not an IP address", r.address_prefix),
        )
    })?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = r.prefix_len.map_or(max, |l| l.value);
    if len > max {
        return Err(CompileError::new(
            "prefix_len",
            format!("{len} exceeds {max}"),
        ));
    }
    Ok(Cidr {
        addr,
        len: len as u8,
    })
}

fn cidrs(ranges: &[CidrRange], field: &str) -> Result<Vec<Cidr>, CompileError> {
    ranges
        .iter()
        .enumerate()
        .map(|(i, r)| cidr(r).map_err(|e| e.within(&format!("{field}[{i}]"))))
        .collect()
}

fn port(p: u32, field: &str) -> Result<u16, CompileError> {
    u16::try_from(p).map_err(|_| CompileError::new(field, format!("{p} is out of range")))
}

fn chain_match(
    m: &envoy_types::pb::envoy::config::listener::v3::FilterChainMatch,
) -> Result<ChainMatch, CompileError> {
    if !m.direct_source_prefix_ranges.is_empty() {
        return Err(CompileError::new(
            "direct_source_prefix_ranges",
            "is not supported",
        ));
    }
    if m.source_type != 0 {
        return Err(CompileError::new("source_type", "is not supported"));
    }
    if !m.address_suffix.is_empty() || m.suffix_len.is_some() {
        return Err(CompileError::new("address_suffix", "is not supported"));
    }
    let transport_protocol = match m.transport_protocol.as_str() {
        "" => None,
        t @ ("tls" | "raw_buffer") => Some(t.to_string()),
        other => {
            return Err(CompileError::new(
                "transport_protocol",
                format!("{other:?} is not one of tls, raw_buffer"),
            ))
        }
    };
    Ok(ChainMatch {
        destination_port: m
            .destination_port
            .map(|p| port(p.value, "destination_port"))
            .transpose()?,
        prefix_ranges: cidrs(&m.prefix_ranges, "prefix_ranges")?,
        server_names: m
            .server_names
            .iter()
            .map(|s| s.to_ascii_lowercase())
            .collect(),
        transport_protocol,
        application_protocols: m.application_protocols.clone(),
        source_prefix_ranges: cidrs(&m.source_prefix_ranges, "source_prefix_ranges")?,
        source_ports: m
            .source_ports
            .iter()
            .map(|p| port(*p, "source_ports"))
            .collect::<Result<_, _>>()?,
    })
}

fn typed<M: Message + Default>(
    any: &envoy_types::pb::google::protobuf::Any,
    expected: &str,
) -> Result<M, CompileError> {
    if any.type_url != expected {
        return Err(CompileError::new(
            "typed_config",
            format!("type {} where {expected} was expected", any.type_url),
        ));
    }
    M::decode(any.value.as_slice())
        .map_err(|e| CompileError::new("typed_config", format!("cannot decode: {e}")))
}

fn tcp_proxy(p: &TcpProxy) -> Result<TcpProxyConfig, CompileError> {
    let unsupported = [
        ("on_demand", p.on_demand.is_some()),
        ("metadata_match", p.metadata_match.is_some()),
        ("tunneling_config", p.tunneling_config.is_some()),
        ("hash_policy", !p.hash_policy.is_empty()),
        (
            "max_downstream_connection_duration",
            p.max_downstream_connection_duration.is_some(),
        ),
    ];
    if let Some((field, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err(CompileError::new(*field, "is not supported"));
    }
    let clusters = match &p.cluster_specifier {
        Some(tcp_proxy::ClusterSpecifier::Cluster(c)) if !c.is_empty() => vec![(c.clone(), 1)],
        Some(tcp_proxy::ClusterSpecifier::WeightedClusters(w)) if !w.clusters.is_empty() => {
            let clusters: Vec<(String, u32)> = w
                .clusters
                .iter()
                .map(|c| (c.name.clone(), c.weight))
                .collect();
            if clusters.iter().all(|(_, w)| *w == 0) {
                return Err(CompileError::new(
                    "weighted_clusters",
                    "the weights add up to 0",
                ));
            }
            clusters
        }
        _ => {
            return Err(CompileError::new(
                "cluster_specifier",
                "a cluster or weighted_clusters is required",
            ))
        }
    };
    let idle = match &p.idle_timeout {
        None => Some(DEFAULT_TCP_IDLE),
        Some(d) if d.seconds == 0 && d.nanos == 0 => None,
        Some(d) => Some(duration(d)?),
    };
    if p.stat_prefix.is_empty() {
        return Err(CompileError::new("stat_prefix", "is required"));
    }
    Ok(TcpProxyConfig {
        stat_prefix: p.stat_prefix.clone(),
        clusters,
        idle_timeout: idle,
    })
}

/// A protobuf duration; negative ones are an error.
pub fn duration(d: &envoy_types::pb::google::protobuf::Duration) -> Result<Duration, CompileError> {
    if d.seconds < 0 || d.nanos < 0 {
        return Err(CompileError::new("", "a duration must not be negative"));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

fn network_filter(f: &Filter) -> Result<NetworkFilter, CompileError> {
    let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
        return Err(CompileError::new(
            "config_type",
            format!("filter {} needs a typed_config", f.name),
        ));
    };
    match any.type_url.as_str() {
        HCM_TYPE => {
            let hcm: HttpConnectionManager = typed(any, HCM_TYPE)?;
            Ok(NetworkFilter::Http(Arc::new(
                http::compile_hcm(&hcm).map_err(|e| e.within("typed_config"))?,
            )))
        }
        TCP_PROXY_TYPE => {
            let p: TcpProxy = typed(any, TCP_PROXY_TYPE)?;
            Ok(NetworkFilter::Tcp(Arc::new(
                tcp_proxy(&p).map_err(|e| e.within("typed_config"))?,
            )))
        }
        other => Err(CompileError::new(
            "typed_config",
            format!("network filter {} ({other}) is not supported", f.name),
        )),
    }
}

fn filter_chain(c: &FilterChainProto) -> Result<FilterChain, CompileError> {
    let tls = match &c.transport_socket {
        Some(ts) => crate::tls::downstream(ts).map_err(|e| e.within("transport_socket"))?,
        None => None,
    };
    let (tls, sds_names) = match tls {
        Some(t) => (Some(t.config), t.sds_names),
        None => (None, Vec::new()),
    };
    #[allow(deprecated)]
    let proxy_proto = c.use_proxy_proto.is_some_and(|b| b.value);
    if proxy_proto {
        return Err(CompileError::new("use_proxy_proto", "is not supported"));
    }
    let matcher = match &c.filter_chain_match {
        Some(m) => chain_match(m).map_err(|e| e.within("filter_chain_match"))?,
        None => ChainMatch::default(),
    };
    let (last, rest) = c
        .filters
        .split_last()
        .ok_or_else(|| CompileError::new("filters", "a terminal network filter is required"))?;
    let mut rbac = Vec::new();
    for (i, f) in rest.iter().enumerate() {
        let at = |e: CompileError| e.within(&format!("filters[{i}]"));
        match &f.config_type {
            Some(filter::ConfigType::TypedConfig(any)) if any.type_url == NETWORK_RBAC_TYPE => {
                let r = typed(any, NETWORK_RBAC_TYPE).map_err(at)?;
                rbac.push(Arc::new(
                    network_rbac(&r).map_err(|e| at(e.within("typed_config")))?,
                ));
            }
            Some(filter::ConfigType::TypedConfig(any))
                if crate::istio_ext::telemetry_network_filter(&f.name, Some(any)) => {}
            _ => {
                return Err(at(CompileError::new(
                    "",
                    format!(
                        "network filter {} is not supported before the terminal filter",
                        f.name
                    ),
                )))
            }
        }
    }
    let filter =
        network_filter(last).map_err(|e| e.within(&format!("filters[{}]", c.filters.len() - 1)))?;
    Ok(FilterChain {
        name: c.name.clone(),
        matcher,
        rbac,
        filter,
        tls,
        sds_names,
    })
}

/// Compiles a listener. Fields that would change behaviour and are not implemented are errors
/// naming the field.
pub fn compile(l: &Listener) -> Result<ListenerConfig, CompileError> {
    if l.name.is_empty() {
        return Err(CompileError::new("name", "is required"));
    }
    let unsupported = [
        ("api_listener", l.api_listener.is_some()),
        ("udp_listener_config", l.udp_listener_config.is_some()),
        ("filter_chain_matcher", l.filter_chain_matcher.is_some()),
        ("fcds_config", l.fcds_config.is_some()),
        ("additional_addresses", !l.additional_addresses.is_empty()),
        ("transparent", l.transparent.is_some_and(|b| b.value)),
    ];
    if let Some((field, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err(CompileError::new(*field, "is not supported"));
    }
    let address = socket_address(l.address.as_ref()).map_err(|e| e.within("address"))?;
    let chains = l
        .filter_chains
        .iter()
        .enumerate()
        .map(|(i, c)| filter_chain(c).map_err(|e| e.within(&format!("filter_chains[{i}]"))))
        .collect::<Result<Vec<_>, _>>()?;
    let default_chain = l
        .default_filter_chain
        .as_ref()
        .map(|c| filter_chain(c).map_err(|e| e.within("default_filter_chain")))
        .transpose()?;
    if chains.is_empty() && default_chain.is_none() {
        return Err(CompileError::new("filter_chains", "no filter chain"));
    }
    let filters_timeout = match &l.listener_filters_timeout {
        None => Some(DEFAULT_FILTERS_TIMEOUT),
        Some(d) => {
            let d = duration(d).map_err(|e| e.within("listener_filters_timeout"))?;
            (!d.is_zero()).then_some(d)
        }
    };
    let buffer_limit = match l.per_connection_buffer_limit_bytes {
        None => DEFAULT_BUFFER_LIMIT,
        // Envoy: a connection without a limit leaves the router's at its initial maximum.
        Some(v) if v.value == 0 => u32::MAX as usize,
        Some(v) => v.value as usize,
    };
    Ok(ListenerConfig {
        name: l.name.clone(),
        address,
        bind_to_port: l.bind_to_port.is_none_or(|b| b.value),
        use_original_dst: l.use_original_dst.is_some_and(|b| b.value),
        listener_filters: crate::listener_filter::compile(&l.listener_filters)?,
        filters_timeout,
        continue_on_timeout: l.continue_on_listener_filters_timeout,
        chains,
        default_chain,
        buffer_limit,
    })
}

#[cfg(test)]
#[path = "listener_tests.rs"]
mod tests;
