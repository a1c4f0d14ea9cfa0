//! `DestinationRule` validation, following Istio's `ValidateDestinationRule`, `validateTrafficPolicy`,
//! `validateLoadBalancer`, `validateConnectionPool`, `validateOutlierDetection`, `ValidateTLS`,
//! `ValidateLocalityLbSetting` and `validateSubset`.

use super::common::{
    check, is_dns1123_label, validate_duration, validate_export_to, validate_fqdn, validate_labels,
    validate_port, validate_wildcard_domain, validate_workload_selector,
};
use super::{Context, Validate};
use crate::common::Duration;
use crate::networking::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, ConsistentHashLb, DestinationRule,
    H2UpgradePolicy, LoadBalancerSettings, LocalityLoadBalancerSetting, OutlierDetection,
    PortTrafficPolicy, RetryBudget, TrafficPolicy, TunnelSettings, WarmupConfiguration,
};
use crate::path::Path;
use crate::report::Report;
use std::collections::{BTreeMap, BTreeSet};

impl Validate for DestinationRule {
    fn validate(&self, cx: &Context<'_>, out: &mut Report) {
        let spec = Path::root("spec");
        check(
            validate_wildcard_domain(&self.host),
            &spec.field("host"),
            out,
        );

        if let Some(tp) = &self.traffic_policy {
            validate_traffic_policy(tp, cx, &spec.field("trafficPolicy"), out);
        }

        let subsets = spec.field("subsets");
        let mut names: BTreeSet<&str> = BTreeSet::new();
        for (i, subset) in self.subsets.iter().enumerate() {
            let p = subsets.index(i);
            let name_path = p.field("name");
            if !names.insert(subset.name.as_str()) {
                out.error(
                    &name_path,
                    format!("duplicate subset names: {}", subset.name),
                );
            }
            check(validate_subset_name(&subset.name), &name_path, out);
            validate_labels(&subset.labels, &p.field("labels"), out);
            if let Some(tp) = &subset.traffic_policy {
                validate_traffic_policy(tp, cx, &p.field("trafficPolicy"), out);
            }
        }

        let export_to = spec.field("exportTo");
        validate_export_to(cx.namespace, &self.export_to, false, &export_to, out);
        if self.workload_selector.is_some() && !self.export_to.is_empty() {
            validate_selector_export_to(cx.namespace, &self.export_to, &export_to, out);
        }

        if let Some(selector) = &self.workload_selector {
            let p = spec.field("workloadSelector");
            validate_workload_selector(selector, &p, out);
            if selector.match_labels.is_empty() {
                out.warn(&p, "workload selector specified without labels");
            }
        }
    }
}

/// Istio: a DestinationRule with a workload selector may only be exported to its own namespace.
fn validate_selector_export_to(
    namespace: &str,
    export_to: &[String],
    path: &Path<'_>,
    out: &mut Report,
) {
    let is_current = |e: &str| e == "." || (!namespace.is_empty() && e == namespace);
    // Without a namespace on the object, a namespace name cannot be compared; give it the benefit of the doubt.
    let is_unknown = |e: &str| namespace.is_empty() && !matches!(e, "*" | "~" | ".");
    let mut distinct: BTreeSet<&str> = BTreeSet::new();
    for e in export_to {
        distinct.insert(if e == "." && !namespace.is_empty() {
            namespace
        } else {
            e.as_str()
        });
    }
    if export_to.iter().any(|e| is_current(e)) {
        if distinct.len() > 1 {
            out.error(
                path,
                "destination rule with workload selector cannot have multiple entries in exportTo",
            );
        }
    } else if !export_to.iter().all(|e| is_unknown(e)) {
        out.error(
            path,
            "destination rule with workload selector cannot have exportTo beyond current namespace",
        );
    }
}

/// Istio's `validateSubsetName`: non-empty DNS-1123 label.
pub(crate) fn validate_subset_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("subset name cannot be empty".into());
    }
    if !is_dns1123_label(name) {
        return Err(format!("subset name is invalid: {name}"));
    }
    Ok(())
}

fn duration_field(d: &Option<Duration>, path: &Path<'_>, name: &str, out: &mut Report) {
    if let Some(d) = d {
        check(validate_duration(d), &path.field(name), out);
    }
}

fn validate_traffic_policy(
    tp: &TrafficPolicy,
    cx: &Context<'_>,
    path: &Path<'_>,
    out: &mut Report,
) {
    if tp.outlier_detection.is_none()
        && tp.connection_pool.is_none()
        && tp.load_balancer.is_none()
        && tp.tls.is_none()
        && tp.port_level_settings.is_empty()
        && tp.tunnel.is_none()
        && tp.proxy_protocol.is_none()
        && tp.retry_budget.is_none()
    {
        out.error(path, "traffic policy must have at least one field");
        return;
    }
    if tp.tunnel.is_some() && tp.proxy_protocol.is_some() {
        out.error(path, "tunnel and proxyProtocol must not be set together");
        return;
    }
    if let Some(od) = &tp.outlier_detection {
        validate_outlier_detection(od, &path.field("outlierDetection"), out);
    }
    if let Some(cp) = &tp.connection_pool {
        validate_connection_pool(cp, &path.field("connectionPool"), out);
    }
    if let Some(lb) = &tp.load_balancer {
        validate_load_balancer(
            lb,
            tp.outlier_detection.as_deref(),
            &path.field("loadBalancer"),
            out,
        );
    }
    if let Some(tls) = &tp.tls {
        validate_client_tls(tls, cx.namespace, &path.field("tls"), out);
    }
    validate_port_traffic_policies(
        &tp.port_level_settings,
        cx,
        &path.field("portLevelSettings"),
        out,
    );
    if let Some(tunnel) = &tp.tunnel {
        validate_tunnel(tunnel, &path.field("tunnel"), out);
    }
    if let Some(rb) = &tp.retry_budget {
        validate_retry_budget(rb, &path.field("retryBudget"), out);
    }
}

fn validate_port_traffic_policies(
    policies: &[PortTrafficPolicy],
    cx: &Context<'_>,
    path: &Path<'_>,
    out: &mut Report,
) {
    let mut seen: BTreeSet<u32> = BTreeSet::new();
    for (i, t) in policies.iter().enumerate() {
        let p = path.index(i);
        match &t.port {
            None => out.error(&p.field("port"), "portTrafficPolicy must have valid port"),
            Some(port) => {
                // Istio's validatePortTrafficPolicies checks neither the range nor duplicates
                // (nor does the CRD schema beyond uint32), so these only warn; found by
                // differential fuzzing against istioctl.
                let pp = p.field("port");
                let np = pp.field("number");
                if let Err(e) = validate_port(port.number) {
                    out.warn(&np, format!("{e}: the policy applies to no port"));
                }
                if port.number != 0 && !seen.insert(port.number) {
                    out.warn(
                        &np,
                        format!(
                            "duplicate port {} in portLevelSettings: only the first policy for a port applies",
                            port.number
                        ),
                    );
                }
            }
        }
        if t.outlier_detection.is_none()
            && t.connection_pool.is_none()
            && t.load_balancer.is_none()
            && t.tls.is_none()
        {
            out.error(&p, "port traffic policy must have at least one field");
            continue;
        }
        if let Some(od) = &t.outlier_detection {
            validate_outlier_detection(od, &p.field("outlierDetection"), out);
        }
        if let Some(cp) = &t.connection_pool {
            validate_connection_pool(cp, &p.field("connectionPool"), out);
        }
        if let Some(lb) = &t.load_balancer {
            validate_load_balancer(
                lb,
                t.outlier_detection.as_deref(),
                &p.field("loadBalancer"),
                out,
            );
        }
        if let Some(tls) = &t.tls {
            validate_client_tls(tls, cx.namespace, &p.field("tls"), out);
        }
    }
}

fn validate_tunnel(tunnel: &TunnelSettings, path: &Path<'_>, out: &mut Report) {
    if !tunnel.protocol.is_empty() && tunnel.protocol != "CONNECT" && tunnel.protocol != "POST" {
        out.error(
            &path.field("protocol"),
            format!(
                "tunnel protocol must be \"CONNECT\" or \"POST\", got {:?}",
                tunnel.protocol
            ),
        );
    }
    if tunnel.target_host.parse::<std::net::IpAddr>().is_err() {
        if let Err(e) = validate_fqdn(&tunnel.target_host) {
            out.error(
                &path.field("targetHost"),
                format!("tunnel target host must be valid FQDN or IP address: {e}"),
            );
        }
    }
    if let Err(e) = validate_port(tunnel.target_port) {
        out.error(
            &path.field("targetPort"),
            format!("tunnel target port is invalid: {e}"),
        );
    }
}

fn validate_retry_budget(rb: &RetryBudget, path: &Path<'_>, out: &mut Report) {
    if let Some(p) = rb.percent {
        if !(0.0..=100.0).contains(&p) {
            out.error(
                &path.field("percent"),
                format!("retry budget percent {p} is not in range 0..100"),
            );
        }
    }
}

fn validate_percent_i32(value: Option<i32>, path: &Path<'_>, out: &mut Report) {
    if let Some(v) = value {
        if !(0..=100).contains(&v) {
            out.error(path, format!("percentage {v} is not in range 0..100"));
        }
    }
}

fn validate_outlier_detection(od: &OutlierDetection, path: &Path<'_>, out: &mut Report) {
    duration_field(&od.base_ejection_time, path, "baseEjectionTime", out);
    if od.consecutive_errors.is_some_and(|v| v != 0) {
        out.warn(
            &path.field("consecutiveErrors"),
            "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead",
        );
    }
    if !od.split_external_local_origin_errors.unwrap_or(false)
        && od.consecutive_local_origin_failures.unwrap_or(0) > 0
    {
        out.error(
            &path.field("consecutiveLocalOriginFailures"),
            "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false",
        );
    }
    duration_field(&od.interval, path, "interval", out);
    validate_percent_i32(
        od.max_ejection_percent,
        &path.field("maxEjectionPercent"),
        out,
    );
    validate_percent_i32(od.min_health_percent, &path.field("minHealthPercent"), out);
}

fn non_negative(value: Option<i32>, path: &Path<'_>, name: &str, what: &str, out: &mut Report) {
    if let Some(v) = value {
        if v < 0 {
            out.error(
                &path.field(name),
                format!("{what} must be non-negative, got {v}"),
            );
        }
    }
}

/// Istio's `validateConnectionPool`; shared with `Sidecar` (inbound connection pools).
pub(crate) fn validate_connection_pool(
    cp: &ConnectionPoolSettings,
    path: &Path<'_>,
    out: &mut Report,
) {
    if cp.http.is_none() && cp.tcp.is_none() {
        out.error(path, "connection pool must have at least one field");
        return;
    }
    if let Some(http) = &cp.http {
        let p = path.field("http");
        non_negative(
            http.http1_max_pending_requests,
            &p,
            "http1MaxPendingRequests",
            "http1 max pending requests",
            out,
        );
        non_negative(
            http.http2_max_requests,
            &p,
            "http2MaxRequests",
            "http2 max requests",
            out,
        );
        non_negative(
            http.max_requests_per_connection,
            &p,
            "maxRequestsPerConnection",
            "max requests per connection",
            out,
        );
        non_negative(http.max_retries, &p, "maxRetries", "max retries", out);
        duration_field(&http.idle_timeout, &p, "idleTimeout", out);
        if http.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade)
            && http.use_client_protocol == Some(true)
        {
            out.error(
                &p.field("useClientProtocol"),
                "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
            );
        }
        non_negative(
            http.max_concurrent_streams,
            &p,
            "maxConcurrentStreams",
            "max concurrent streams",
            out,
        );
    }
    if let Some(tcp) = &cp.tcp {
        let p = path.field("tcp");
        non_negative(
            tcp.max_connections,
            &p,
            "maxConnections",
            "max connections",
            out,
        );
        duration_field(&tcp.connect_timeout, &p, "connectTimeout", out);
        duration_field(
            &tcp.max_connection_duration,
            &p,
            "maxConnectionDuration",
            out,
        );
        duration_field(&tcp.idle_timeout, &p, "idleTimeout", out);
        if let Some(ka) = &tcp.tcp_keepalive {
            let kp = p.field("tcpKeepalive");
            duration_field(&ka.time, &kp, "time", out);
            duration_field(&ka.interval, &kp, "interval", out);
        }
    }
}

/// Envoy's primality test (Istio copies it) for Maglev table sizes.
fn is_prime(x: u64) -> bool {
    if x != 0 && x < 4 {
        return true;
    }
    if x & 1 == 0 {
        return false;
    }
    let mut factor = 3u64;
    while factor.saturating_mul(factor) <= x {
        if x % factor == 0 {
            return false;
        }
        factor += 2;
    }
    true
}

const MAGLEV_TABLE_SIZE_LIMIT: u64 = 5_000_011;

fn validate_consistent_hash(ch: &ConsistentHashLb, path: &Path<'_>, out: &mut Report) {
    let keys = [
        ch.http_header_name.is_some(),
        ch.http_cookie.is_some(),
        ch.use_source_ip.is_some(),
        ch.http_query_parameter_name.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if keys > 1 {
        out.error(
            path,
            "only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName may be set",
        );
    }
    if ch.ring_hash.is_some() && ch.maglev.is_some() {
        out.error(path, "only one of ringHash or maglev may be set");
    }
    if let Some(cookie) = &ch.http_cookie {
        let cp = path.field("httpCookie");
        if cookie.name.is_empty() {
            out.error(&cp.field("name"), "name required for HttpCookie");
        }
        let ap = cp.field("attributes");
        for (i, a) in cookie.attributes.iter().enumerate() {
            if a.name.is_empty() {
                out.error(
                    &ap.index(i).field("name"),
                    "cookie attribute name cannot be empty",
                );
            }
        }
    }
    let min_ring = ch.minimum_ring_size.map_or(0, |v| v.0);
    if min_ring != 0 {
        let mp = path.field("minimumRingSize");
        out.warn(
            &mp,
            "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash configuration instead",
        );
        if ch.ring_hash.is_some() || ch.maglev.is_some() {
            out.error(
                &mp,
                "only one of MinimumRingSize or Maglev/Ringhash can be specified",
            );
        }
    }
    if let Some(ml) = &ch.maglev {
        let tp = path.field("maglev");
        let tp = tp.field("tableSize");
        let size = ml.table_size.map_or(0, |v| v.0);
        if size == 0 {
            out.error(&tp, "tableSize must be set for maglev");
        } else if size >= MAGLEV_TABLE_SIZE_LIMIT {
            out.error(
                &tp,
                format!("tableSize must be less than {MAGLEV_TABLE_SIZE_LIMIT} for maglev"),
            );
        } else if !is_prime(size) {
            out.error(&tp, "tableSize must be a prime number for maglev");
        }
    }
}

fn validate_warmup(w: &WarmupConfiguration, path: &Path<'_>, out: &mut Report) {
    duration_field(&w.duration, path, "duration", out);
    if let Some(p) = w.minimum_percent {
        if !(0.0..=100.0).contains(&p) {
            out.error(
                &path.field("minimumPercent"),
                format!("minimumPercent {p} is not in range 0..100"),
            );
        }
    }
    if let Some(a) = w.aggression {
        if a.is_nan() || a < 0.0 {
            out.error(
                &path.field("aggression"),
                format!("aggression {a} must be non-negative"),
            );
        }
    }
}

fn validate_load_balancer(
    lb: &LoadBalancerSettings,
    outlier: Option<&OutlierDetection>,
    path: &Path<'_>,
    out: &mut Report,
) {
    if lb.simple.is_some() && lb.consistent_hash.is_some() {
        out.error(path, "only one of simple or consistentHash may be set");
    }
    if let Some(ch) = &lb.consistent_hash {
        validate_consistent_hash(ch, &path.field("consistentHash"), out);
    }
    if let Some(l) = &lb.locality_lb_setting {
        validate_locality_lb_setting(l, outlier, &path.field("localityLbSetting"), out);
    }
    duration_field(&lb.warmup_duration_secs, path, "warmupDurationSecs", out);
    if let Some(w) = &lb.warmup {
        validate_warmup(w, &path.field("warmup"), out);
        if lb.warmup_duration_secs.is_some() {
            out.warn(
                &path.field("warmupDurationSecs"),
                "warmupDurationSecs is deprecated and overridden by warmup; set only warmup",
            );
        }
    }
}

const TOPOLOGY_LABELS: &[&str] = &[
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
];

/// Istio's `ValidateLocalityLbSetting`.
fn validate_locality_lb_setting(
    lb: &LocalityLoadBalancerSetting,
    outlier: Option<&OutlierDetection>,
    path: &Path<'_>,
    out: &mut Report,
) {
    if !lb.distribute.is_empty() && !lb.failover.is_empty() {
        out.error(
            path,
            "can not simultaneously specify 'distribute' and 'failover'",
        );
        return;
    }
    if !lb.failover.is_empty() {
        let fp = path.field("failoverPriority");
        for (i, label) in lb.failover_priority.iter().enumerate() {
            if TOPOLOGY_LABELS.contains(&label.as_str()) {
                out.error(
                    &fp.index(i),
                    format!("can not simultaneously set 'failover' and topology label '{label}' in 'failover_priority'"),
                );
                return;
            }
        }
    }

    let dp = path.field("distribute");
    for (i, d) in lb.distribute.iter().enumerate() {
        let p = dp.index(i);
        let to = p.field("to");
        let mut total: u64 = 0;
        for (loc, weight) in &d.to {
            if *weight == 0 || *weight > 100 {
                out.error(&to.key(loc), "locality weight must be in range [1, 100]");
                return;
            }
            total += u64::from(*weight);
        }
        if total != 100 {
            out.error(&to, format!("total locality weight {total} != 100"));
            return;
        }
        if let Err(e) = validate_localities(d.to.keys().map(String::as_str)) {
            out.error(&to, e);
        }
    }
    if let Err(e) = validate_localities(lb.distribute.iter().map(|d| d.from.as_str())) {
        out.error(&dp, e);
    }

    if (!lb.failover.is_empty() || !lb.failover_priority.is_empty()) && outlier.is_none() {
        out.warn(
            path,
            "outlier detection policy must be provided for failover",
        );
    }

    let fo = path.field("failover");
    for (i, f) in lb.failover.iter().enumerate() {
        let p = fo.index(i);
        if f.from == f.to {
            out.error(
                &p,
                "locality lb failover settings must specify different regions",
            );
        }
        if f.from.contains('/') || f.to.contains('/') {
            out.error(&p, "locality lb failover only specify region");
        }
        if f.from.contains('*') || f.to.contains('*') {
            out.error(
                &p,
                "locality lb failover region should not contain '*' wildcard",
            );
        }
    }
}

/// Istio's `validateLocalities`: wildcards only at the end, no empty parts, no overlaps.
fn validate_localities<'a>(localities: impl Iterator<Item = &'a str>) -> Result<(), String> {
    // region -> zone -> subzones; "*" marks "everything below".
    let mut map: BTreeMap<&str, BTreeMap<&str, BTreeSet<&str>>> = BTreeMap::new();
    for locality in localities {
        let stars = locality.matches('*').count();
        if stars > 0 && (stars > 1 || !locality.ends_with('*')) {
            return Err(format!(
                "locality {locality} wildcard '*' number can not exceed 1 and must be in the end"
            ));
        }
        let overlap = || format!("locality {locality} overlap with previous specified ones");
        if map.contains_key("*") {
            return Err(overlap());
        }
        let items: Vec<&str> = locality.splitn(3, '/').collect();
        if items.iter().any(|s| s.is_empty()) {
            return Err(format!(
                "locality {locality} must not contain empty region/zone/subzone info"
            ));
        }
        match items.as_slice() {
            [region] => {
                if map.contains_key(region) {
                    return Err(overlap());
                }
                map.insert(region, BTreeMap::from([("*", BTreeSet::from(["*"]))]));
            }
            [region, zone] => match map.get_mut(region) {
                Some(zones) => {
                    if zones.contains_key("*") || zones.contains_key(zone) {
                        return Err(overlap());
                    }
                    zones.insert(zone, BTreeSet::from(["*"]));
                }
                None => {
                    map.insert(region, BTreeMap::from([(*zone, BTreeSet::from(["*"]))]));
                }
            },
            [region, zone, subzone] => match map.get_mut(region) {
                Some(zones) => {
                    if zones.contains_key("*") {
                        return Err(overlap());
                    }
                    match zones.get_mut(zone) {
                        Some(subs) => {
                            if subs.contains("*") || subs.contains(subzone) {
                                return Err(overlap());
                            }
                            subs.insert(subzone);
                        }
                        None => {
                            zones.insert(zone, BTreeSet::from([*subzone]));
                        }
                    }
                }
                None => {
                    map.insert(
                        region,
                        BTreeMap::from([(*zone, BTreeSet::from([*subzone]))]),
                    );
                }
            },
            _ => {}
        }
    }
    Ok(())
}

const CONFIGMAP_PREFIX: &str = "configmap://";

/// Istio's `ValidateTLS` for client TLS settings.
pub(crate) fn validate_client_tls(
    tls: &ClientTlsSettings,
    namespace: &str,
    path: &Path<'_>,
    out: &mut Report,
) {
    let cred = path.field("credentialName");
    if let Some(rest) = tls.credential_name.strip_prefix(CONFIGMAP_PREFIX) {
        let (ns, name) = match rest.split_once('/') {
            Some((ns, name)) => (ns, name),
            None => (namespace, rest),
        };
        if name.is_empty() || name.contains('/') {
            out.error(
                &cred,
                format!(
                    "invalid configmap:// credentialName: {:?} must be configmap://[namespace/]name",
                    tls.credential_name
                ),
            );
        } else if namespace.is_empty() || ns != namespace {
            out.error(
                &cred,
                format!("invalid configmap:// credentialName: namespace must match the configuration namespace {namespace:?}"),
            );
        }
    }

    if tls.insecure_skip_verify == Some(true) {
        let isv = path.field("insecureSkipVerify");
        match tls.mode {
            ClientTlsMode::Simple
                if !tls.ca_certificates.is_empty()
                    || !tls.credential_name.is_empty()
                    || !tls.subject_alt_names.is_empty() =>
            {
                out.error(
                    &isv,
                    "cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is set true",
                );
            }
            ClientTlsMode::Mutual
                if !tls.ca_certificates.is_empty() || !tls.subject_alt_names.is_empty() =>
            {
                out.error(
                    &isv,
                    "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true",
                );
            }
            _ => {}
        }
    }

    let simple_or_mutual = matches!(tls.mode, ClientTlsMode::Simple | ClientTlsMode::Mutual);
    if simple_or_mutual && !tls.credential_name.is_empty() {
        if !tls.client_certificate.is_empty()
            || !tls.ca_certificates.is_empty()
            || !tls.private_key.is_empty()
            || !tls.ca_crl.is_empty()
        {
            out.error(
                path,
                "cannot specify client certificates or CA certificate or CA CRL If credentialName is set",
            );
        }
        return;
    }
    if tls.mode == ClientTlsMode::Mutual {
        if tls.client_certificate.is_empty() {
            out.error(
                &path.field("clientCertificate"),
                "client certificate required for mutual tls",
            );
        }
        if tls.private_key.is_empty() {
            out.error(
                &path.field("privateKey"),
                "private key required for mutual tls",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{is_prime, validate_localities};

    #[test]
    fn primes() {
        assert!(is_prime(65537));
        assert!(is_prime(2));
        assert!(!is_prime(65536));
        assert!(!is_prime(9));
        assert!(!is_prime(0));
    }

    #[test]
    fn localities() {
        assert!(validate_localities(["us-west/zone1/*", "us-west/zone2/*"].into_iter()).is_ok());
        assert!(validate_localities(["us-west/*", "us-west/zone2"].into_iter()).is_err());
        assert!(validate_localities(["*", "us-east"].into_iter()).is_err());
        assert!(validate_localities(["us-*/zone"].into_iter()).is_err());
        assert!(validate_localities(["us//a"].into_iter()).is_err());
        assert!(validate_localities(["a/b/c", "a/b/d", "a/c"].into_iter()).is_ok());
        assert!(validate_localities(["a/b/c", "a/b/c"].into_iter()).is_err());
    }
}
