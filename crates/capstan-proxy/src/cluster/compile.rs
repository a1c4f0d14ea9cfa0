//! CDS `Cluster` → [`ClusterConfig`]. Every field that changes behaviour is either compiled or
//! rejected with its field path (a NACK); fields that only inform (stats names, metadata, DNS TTL
//! respect, warming hints) are accepted. Deprecated fields are read as Envoy still reads them.
#![allow(deprecated)]

use super::breaker::BreakerConfig;
use super::endpoints::{compile_with, EndpointSet};
use super::lb::{LbConfig, LbPolicy};
use super::outlier::OutlierConfig;
use super::pool::PoolConfig;
use super::protocol;
use super::{ClusterConfig, Discovery, DnsConfig, LookupFamily};
use crate::CompileError;
use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster, OutlierDetection};
use envoy_types::pb::envoy::config::core::v3::{config_source, socket_address, RoutingPriority};
use std::time::Duration;

pub(crate) fn err(path: &str, message: impl Into<String>) -> CompileError {
    CompileError::new(path, message)
}

/// A protobuf duration as a std one; negative ones are rejected at `path`.
pub(crate) fn duration(
    path: &str,
    d: &envoy_types::pb::google::protobuf::Duration,
) -> Result<Duration, CompileError> {
    if d.seconds < 0 || d.nanos < 0 {
        return Err(err(path, "must not be negative"));
    }
    Ok(Duration::new(
        d.seconds as u64,
        d.nanos.min(999_999_999) as u32,
    ))
}

/// Compiles a CDS resource.
pub fn compile(c: &Cluster) -> Result<ClusterConfig, CompileError> {
    if c.name.is_empty() {
        return Err(err("name", "must not be empty"));
    }
    unsupported(c)?;
    if let Some(t) = &c.typed_dns_resolver_config {
        super::dns_resolver::check(t).map_err(|e| e.within("typed_dns_resolver_config"))?;
    }
    let transport = super::transport::compile(c)?;
    let discovery = discovery(c)?;
    let lb = lb_config(c, &discovery)?;
    let mut pool = PoolConfig {
        connect_timeout: match &c.connect_timeout {
            Some(d) => duration("connect_timeout", d)?,
            None => Duration::from_secs(5),
        },
        ..PoolConfig::default()
    };
    protocol::http_options(c, &mut pool)?;
    bind_config(c, &mut pool)?;
    let endpoints = match discovery {
        Discovery::Static | Discovery::Dns => Some(match &c.load_assignment {
            Some(cla) => compile_with(cla, discovery == Discovery::Dns)
                .map_err(|e| e.within("load_assignment"))?,
            None => EndpointSet::default(),
        }),
        _ => None,
    };
    let dns = if discovery == Discovery::Dns {
        Some(dns_config(c)?)
    } else {
        None
    };
    Ok(ClusterConfig {
        name: c.name.clone(),
        discovery,
        lb,
        breaker: breakers(c)?,
        outlier: c
            .outlier_detection
            .as_ref()
            .map(outlier)
            .transpose()
            .map_err(|e| e.within("outlier_detection"))?,
        pool,
        endpoints,
        dns,
        transport,
    })
}

/// Fields with behaviour not implemented: rejected when set.
fn unsupported(c: &Cluster) -> Result<(), CompileError> {
    let checks: [(bool, &str); 18] = [
        (!c.health_checks.is_empty(), "health_checks"),
        (c.lb_subset_config.is_some(), "lb_subset_config"),
        (
            // Istio's upstream metadata exchange is telemetry only (crate::istio_ext).
            c.filters.iter().any(|f| {
                !crate::istio_ext::telemetry_network_filter(&f.name, f.typed_config.as_ref())
            }),
            "filters",
        ),
        (c.load_balancing_policy.is_some(), "load_balancing_policy"),
        (c.lrs_server.is_some(), "lrs_server"),
        (
            !c.lrs_report_endpoint_metrics.is_empty(),
            "lrs_report_endpoint_metrics",
        ),
        (c.upstream_config.is_some(), "upstream_config"),
        (c.preconnect_policy.is_some(), "preconnect_policy"),
        (
            c.connection_pool_per_downstream_connection,
            "connection_pool_per_downstream_connection",
        ),
        (c.queuing_policies.is_some(), "queuing_policies"),
        (
            c.transport_socket_matcher.is_some(),
            "transport_socket_matcher",
        ),
        (
            c.per_connection_buffer_high_watermark_timeout.is_some(),
            "per_connection_buffer_high_watermark_timeout",
        ),
        (!c.dns_resolvers.is_empty(), "dns_resolvers"),
        (c.use_tcp_for_dns_lookups, "use_tcp_for_dns_lookups"),
        (c.dns_resolution_config.is_some(), "dns_resolution_config"),
        (
            c.upstream_connection_options.is_some(),
            "upstream_connection_options",
        ),
        (
            c.close_connections_on_host_health_failure,
            "close_connections_on_host_health_failure",
        ),
        (c.http_protocol_options.is_some(), "http_protocol_options"),
    ];
    match checks.iter().find(|(set, _)| *set) {
        Some((_, path)) => Err(err(path, "not supported")),
        None => Ok(()),
    }
}

fn discovery(c: &Cluster) -> Result<Discovery, CompileError> {
    use cluster::DiscoveryType as T;
    let t = match &c.cluster_discovery_type {
        None => T::Static,
        Some(cluster::ClusterDiscoveryType::Type(t)) => {
            T::try_from(*t).map_err(|_| err("type", format!("unknown discovery type {t}")))?
        }
        Some(cluster::ClusterDiscoveryType::ClusterType(ct)) => {
            return Err(err(
                "cluster_type",
                format!("custom cluster type {:?} is not supported", ct.name),
            ))
        }
    };
    Ok(match t {
        T::Static => Discovery::Static,
        T::StrictDns | T::LogicalDns => Discovery::Dns,
        T::OriginalDst => Discovery::OriginalDst,
        T::Eds => {
            let eds = c.eds_cluster_config.clone().unwrap_or_default();
            match eds.eds_config.and_then(|s| s.config_source_specifier) {
                None | Some(config_source::ConfigSourceSpecifier::Ads(_)) => {}
                Some(_) => {
                    return Err(err(
                        "eds_cluster_config.eds_config",
                        "only ADS is supported",
                    ))
                }
            }
            Discovery::Eds(if eds.service_name.is_empty() {
                c.name.clone()
            } else {
                eds.service_name
            })
        }
    })
}

fn lb_config(c: &Cluster, d: &Discovery) -> Result<LbConfig, CompileError> {
    use cluster::LbPolicy as P;
    let policy = P::try_from(c.lb_policy)
        .map_err(|_| err("lb_policy", format!("unknown value {}", c.lb_policy)))?;
    let policy = match (policy, &c.lb_config) {
        (P::ClusterProvided, _) | (_, _) if *d == Discovery::OriginalDst => {
            if !matches!(policy, P::ClusterProvided | P::RoundRobin) {
                return Err(err(
                    "lb_policy",
                    "ORIGINAL_DST clusters need CLUSTER_PROVIDED",
                ));
            }
            if let Some(cluster::LbConfig::OriginalDstLbConfig(o)) = &c.lb_config {
                if o.use_http_header
                    || o.upstream_port_override.is_some()
                    || o.metadata_key.is_some()
                {
                    return Err(err("original_dst_lb_config", "not supported"));
                }
            }
            LbPolicy::ClusterProvided
        }
        (P::ClusterProvided, _) => {
            return Err(err(
                "lb_policy",
                "CLUSTER_PROVIDED needs an ORIGINAL_DST cluster",
            ))
        }
        (P::RoundRobin, None) => LbPolicy::RoundRobin,
        (P::RoundRobin, Some(cluster::LbConfig::RoundRobinLbConfig(r))) => {
            if r.slow_start_config.is_some() {
                return Err(err("round_robin_lb_config", "not supported"));
            }
            LbPolicy::RoundRobin
        }
        (P::Random, None) => LbPolicy::Random,
        (P::LeastRequest, None) => LbPolicy::LeastRequest { choice_count: 2 },
        (P::LeastRequest, Some(cluster::LbConfig::LeastRequestLbConfig(l))) => {
            let bias = l
                .active_request_bias
                .as_ref()
                .map_or(1.0, |b| b.default_value);
            if l.slow_start_config.is_some() || bias != 1.0 {
                return Err(err(
                    "least_request_lb_config",
                    "only choice_count is supported",
                ));
            }
            let n = l.choice_count.map_or(2, |n| n.value);
            if n < 2 {
                return Err(err(
                    "least_request_lb_config.choice_count",
                    "must be at least 2",
                ));
            }
            LbPolicy::LeastRequest { choice_count: n }
        }
        (P::RingHash, r) => {
            let r = match r {
                Some(cluster::LbConfig::RingHashLbConfig(r)) => *r,
                None => Default::default(),
                Some(_) => return Err(err("lb_config", "does not match lb_policy RING_HASH")),
            };
            if r.hash_function != 0 {
                return Err(err(
                    "ring_hash_lb_config.hash_function",
                    "only XX_HASH is supported",
                ));
            }
            let min_size = r.minimum_ring_size.map_or(1024, |v| v.value);
            let max_size = r.maximum_ring_size.map_or(8 << 20, |v| v.value);
            if min_size == 0 || min_size > max_size || max_size > 8 << 20 {
                return Err(err(
                    "ring_hash_lb_config",
                    "ring sizes must satisfy 0 < minimum ≤ maximum ≤ 8M",
                ));
            }
            LbPolicy::RingHash { min_size, max_size }
        }
        (P::Maglev, m) => {
            let table_size = match m {
                Some(cluster::LbConfig::MaglevLbConfig(m)) => {
                    m.table_size.map_or(65537, |v| v.value)
                }
                None => 65537,
                Some(_) => return Err(err("lb_config", "does not match lb_policy MAGLEV")),
            };
            if !is_prime(table_size) || table_size > 5_000_011 {
                return Err(err(
                    "maglev_lb_config.table_size",
                    "must be a prime no larger than 5000011",
                ));
            }
            LbPolicy::Maglev { table_size }
        }
        (P::LoadBalancingPolicyConfig, _) => {
            return Err(err(
                "lb_policy",
                "LOAD_BALANCING_POLICY_CONFIG is not supported",
            ))
        }
        (_, Some(_)) => return Err(err("lb_config", "does not match lb_policy")),
    };
    let mut out = LbConfig {
        policy,
        ..LbConfig::default()
    };
    if let Some(common) = &c.common_lb_config {
        use cluster::common_lb_config::LocalityConfigSpecifier as L;
        let path = "common_lb_config";
        if let Some(p) = &common.healthy_panic_threshold {
            if !(0.0..=100.0).contains(&p.value) {
                return Err(err(
                    &format!("{path}.healthy_panic_threshold"),
                    "must be 0..=100",
                ));
            }
            out.panic_threshold = p.value;
        }
        out.locality_weighted = matches!(
            common.locality_config_specifier,
            Some(L::LocalityWeightedLbConfig(_))
        );
        // zone_aware_lb_config only acts with a bootstrap local cluster, which is not modelled
        // (as in Envoy without `local_cluster_name`); update_merge_window and
        // ignore_new_hosts_until_first_hc are timing hints without health checks.
        let hashing = common.consistent_hashing_lb_config.as_ref();
        let checks = [
            (
                common.close_connections_on_host_set_change,
                "close_connections_on_host_set_change",
            ),
            (
                common.override_host_status.is_some(),
                "override_host_status",
            ),
            (
                hashing.is_some_and(|h| h.use_hostname_for_hashing),
                "consistent_hashing_lb_config.use_hostname_for_hashing",
            ),
            (
                hashing.is_some_and(|h| h.hash_balance_factor.is_some()),
                "consistent_hashing_lb_config.hash_balance_factor",
            ),
        ];
        if let Some((_, f)) = checks.iter().find(|(set, _)| *set) {
            return Err(err(&format!("{path}.{f}"), "not supported"));
        }
    }
    Ok(out)
}

fn is_prime(n: u64) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

fn breakers(c: &Cluster) -> Result<BreakerConfig, CompileError> {
    let mut out = BreakerConfig::default();
    let Some(cb) = &c.circuit_breakers else {
        return Ok(out);
    };
    if !cb.per_host_thresholds.is_empty() {
        return Err(err("circuit_breakers.per_host_thresholds", "not supported"));
    }
    for (i, t) in cb.thresholds.iter().enumerate() {
        let path = format!("circuit_breakers.thresholds[{i}]");
        if t.priority != RoutingPriority::Default as i32 {
            return Err(err(&path, "only DEFAULT priority thresholds are supported"));
        }
        if t.retry_budget.is_some() {
            return Err(err(&format!("{path}.retry_budget"), "not supported"));
        }
        if t.max_connection_pools.is_some() {
            return Err(err(
                &format!("{path}.max_connection_pools"),
                "not supported",
            ));
        }
        // track_remaining only adds gauges.
        let v = |f: &Option<envoy_types::pb::google::protobuf::UInt32Value>, d: u32| {
            f.map_or(d, |v| v.value)
        };
        out = BreakerConfig {
            max_connections: v(&t.max_connections, out.max_connections),
            max_pending_requests: v(&t.max_pending_requests, out.max_pending_requests),
            max_requests: v(&t.max_requests, out.max_requests),
            max_retries: v(&t.max_retries, out.max_retries),
        };
    }
    Ok(out)
}

fn outlier(o: &OutlierDetection) -> Result<OutlierConfig, CompileError> {
    let d = OutlierConfig::default();
    let u = |f: &Option<envoy_types::pb::google::protobuf::UInt32Value>, d: u32| {
        f.map_or(d, |v| v.value)
    };
    let pct = |path: &str, v: u32| {
        if v > 100 {
            Err(err(path, "must be 0..=100"))
        } else {
            Ok(v)
        }
    };
    // Success-rate and failure-percentage ejection are not implemented: they must be off
    // (Istio sets enforcing_success_rate: 0; Envoy's default is 100).
    if u(&o.enforcing_success_rate, 100) != 0 {
        return Err(err(
            "enforcing_success_rate",
            "success-rate ejection is not supported; set it to 0",
        ));
    }
    let checks = [
        (
            o.split_external_local_origin_errors,
            "split_external_local_origin_errors",
        ),
        (
            u(&o.enforcing_failure_percentage, 0) != 0,
            "enforcing_failure_percentage",
        ),
        (
            u(&o.enforcing_failure_percentage_local_origin, 0) != 0,
            "enforcing_failure_percentage_local_origin",
        ),
        (!o.monitors.is_empty(), "monitors"),
        (
            o.always_eject_one_host.is_some_and(|b| b.value),
            "always_eject_one_host",
        ),
        (
            o.detect_degraded_hosts.is_some_and(|b| b.value),
            "detect_degraded_hosts",
        ),
    ];
    if let Some((_, f)) = checks.iter().find(|(set, _)| *set) {
        return Err(err(f, "not supported"));
    }
    let time = |path: &str,
                f: &Option<envoy_types::pb::google::protobuf::Duration>,
                d: Duration| { f.as_ref().map_or(Ok(d), |v| duration(path, v)) };
    let out = OutlierConfig {
        consecutive_5xx: u(&o.consecutive_5xx, d.consecutive_5xx),
        enforcing_5xx: pct(
            "enforcing_consecutive_5xx",
            u(&o.enforcing_consecutive_5xx, d.enforcing_5xx),
        )?,
        consecutive_gateway: u(&o.consecutive_gateway_failure, d.consecutive_gateway),
        enforcing_gateway: pct(
            "enforcing_consecutive_gateway_failure",
            u(
                &o.enforcing_consecutive_gateway_failure,
                d.enforcing_gateway,
            ),
        )?,
        interval: time("interval", &o.interval, d.interval)?,
        base_ejection_time: time(
            "base_ejection_time",
            &o.base_ejection_time,
            d.base_ejection_time,
        )?,
        max_ejection_time: time(
            "max_ejection_time",
            &o.max_ejection_time,
            d.max_ejection_time,
        )?,
        jitter: time(
            "max_ejection_time_jitter",
            &o.max_ejection_time_jitter,
            d.jitter,
        )?,
        max_ejection_percent: pct(
            "max_ejection_percent",
            u(&o.max_ejection_percent, d.max_ejection_percent),
        )?,
    };
    if out.interval.is_zero() {
        return Err(err("interval", "must be greater than 0"));
    }
    Ok(out)
}

fn bind_config(c: &Cluster, pool: &mut PoolConfig) -> Result<(), CompileError> {
    let Some(b) = &c.upstream_bind_config else {
        return Ok(());
    };
    let path = "upstream_bind_config";
    let extra = b.freebind.is_some()
        || !b.socket_options.is_empty()
        || !b.extra_source_addresses.is_empty()
        || !b.additional_source_addresses.is_empty()
        || b.local_address_selector.is_some();
    if extra {
        return Err(err(path, "only source_address is supported"));
    }
    if let Some(sa) = &b.source_address {
        let ip = sa.address.parse().map_err(|_| {
            err(
                &format!("{path}.source_address.address"),
                format!("{:?} is not an IP address", sa.address),
            )
        })?;
        if !matches!(
            sa.port_specifier,
            None | Some(socket_address::PortSpecifier::PortValue(0))
        ) {
            return Err(err(
                &format!("{path}.source_address.port_value"),
                "only port 0 is supported",
            ));
        }
        pool.bind = Some(ip);
    }
    Ok(())
}

fn dns_config(c: &Cluster) -> Result<DnsConfig, CompileError> {
    use cluster::DnsLookupFamily as F;
    let family = match F::try_from(c.dns_lookup_family) {
        Ok(F::Auto) => LookupFamily::Auto,
        Ok(F::V4Only) => LookupFamily::V4Only,
        Ok(F::V6Only) => LookupFamily::V6Only,
        Ok(F::V4Preferred) => LookupFamily::V4Preferred,
        Ok(F::All) => LookupFamily::All,
        Err(_) => return Err(err("dns_lookup_family", "unknown value")),
    };
    let refresh = match &c.dns_refresh_rate {
        Some(d) => duration("dns_refresh_rate", d)?,
        None => Duration::from_secs(5),
    };
    let failure_refresh = match c
        .dns_failure_refresh_rate
        .as_ref()
        .and_then(|r| r.base_interval.as_ref())
    {
        Some(d) => duration("dns_failure_refresh_rate.base_interval", d)?,
        None => refresh,
    };
    let jitter = match &c.dns_jitter {
        Some(d) => duration("dns_jitter", d)?,
        None => Duration::ZERO,
    };
    let logical = c.cluster_discovery_type
        == Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::LogicalDns as i32,
        ));
    Ok(DnsConfig {
        refresh: refresh.max(Duration::from_millis(1)),
        failure_refresh: failure_refresh.max(Duration::from_millis(1)),
        jitter,
        family,
        logical,
    })
}

#[cfg(test)]
mod tests;
