//! TCP and TLS routes: L4 match attributes, SNI hosts, subnets.

use super::*;

/// Istio's `ValidateIPSubnet`: an IP address or a CIDR block.
pub(super) fn validate_ip_subnet(subnet: &str) -> Result<(), String> {
    if subnet.matches('/').count() == 1 {
        let ok = subnet.split_once('/').is_some_and(|(addr, len)| {
            let Ok(ip) = addr.parse::<std::net::IpAddr>() else {
                return false;
            };
            let max = if ip.is_ipv4() { 32 } else { 128 };
            !len.is_empty()
                && len.len() <= 3
                && len.bytes().all(|c| c.is_ascii_digit())
                && len.parse::<u32>().is_ok_and(|l| l <= max)
        });
        return if ok {
            Ok(())
        } else {
            Err(format!("{subnet} is not a valid CIDR block"))
        };
    }
    if is_ip_address(subnet) {
        Ok(())
    } else {
        Err(format!("{subnet} is not a valid IP"))
    }
}

/// Match attributes shared by TLS and TCP matches.
pub(super) fn validate_l4_common(
    subnets: &[String],
    port: Option<u32>,
    labels: &BTreeMap<String, String>,
    gateways: &[String],
    source_namespace: &str,
    path: &Path<'_>,
    out: &mut Report,
) {
    let sp = path.field("destinationSubnets");
    for (i, s) in subnets.iter().enumerate() {
        if let Err(e) = validate_ip_subnet(s) {
            out.error(&sp.index(i), e);
        }
    }
    if let Some(port) = port {
        if port != 0 {
            if let Err(e) = validate_port(port) {
                out.error(&path.field("port"), e);
            }
        }
    }
    validate_labels(labels, &path.field("sourceLabels"), out);
    validate_gateway_names(gateways, &path.field("gateways"), out);
    validate_source_namespace(source_namespace, &path.field("sourceNamespace"), out);
}

/// Istio's `validateTLSRoute` / `validateTLSMatch` / `validateSniHost`.
pub(super) fn validate_tls_route(
    route: &TlsRoute,
    vs: &VirtualService,
    index: &HostIndex<'_>,
    path: &Path<'_>,
    out: &mut Report,
) {
    let mp = path.field("match");
    if route.r#match.is_empty() {
        out.error(&mp, "TLS route must have at least one match condition");
    }
    for (j, m) in route.r#match.iter().enumerate() {
        validate_tls_match(m, vs, index, &mp.index(j), out);
    }
    if route.route.is_empty() {
        out.error(&path.field("route"), "TLS route is required");
    }
    validate_route_destinations(&route.route, &path.field("route"), out);
}

pub(super) fn validate_tls_match(
    m: &TlsMatchAttributes,
    vs: &VirtualService,
    index: &HostIndex<'_>,
    path: &Path<'_>,
    out: &mut Report,
) {
    let sp = path.field("sniHosts");
    if m.sni_hosts.is_empty() {
        out.error(&sp, "TLS match must have at least one SNI host");
    }
    for (k, sni) in m.sni_hosts.iter().enumerate() {
        validate_sni_host(sni, vs, index, &sp.index(k), out);
    }
    validate_l4_common(
        &m.destination_subnets,
        m.port,
        &m.source_labels,
        &m.gateways,
        &m.source_namespace,
        path,
        out,
    );
}

pub(super) fn validate_sni_host(
    sni: &str,
    vs: &VirtualService,
    index: &HostIndex<'_>,
    path: &Path<'_>,
    out: &mut Report,
) {
    let result = if is_gateway(vs) {
        validate_wildcard_domain_for_gateway(true, sni)
    } else {
        validate_wildcard_domain(sni)
    };
    if let Err(e) = result {
        if is_ip_address(sni) {
            out.warn(
                path,
                format!("using an IP address ({sni:?}) goes against SNI spec and most clients do not support this"),
            );
        } else {
            out.error(path, e);
        }
        return;
    }
    if index.has_superset_of(sni) {
        return;
    }
    out.error(
        path,
        format!(
            "SNI host {sni:?} is not a compatible subset of any of the virtual service hosts: [{}]",
            vs.hosts.join(", ")
        ),
    );
}

/// Istio's `validateTCPRoute` / `validateTCPMatch`.
pub(super) fn validate_tcp_route(route: &TcpRoute, path: &Path<'_>, out: &mut Report) {
    let mp = path.field("match");
    for (j, m) in route.r#match.iter().enumerate() {
        validate_tcp_match(m, &mp.index(j), out);
    }
    if route.route.is_empty() {
        out.error(&path.field("route"), "TCP route is required");
    }
    validate_route_destinations(&route.route, &path.field("route"), out);
}

pub(super) fn validate_tcp_match(m: &L4MatchAttributes, path: &Path<'_>, out: &mut Report) {
    validate_l4_common(
        &m.destination_subnets,
        m.port,
        &m.source_labels,
        &m.gateways,
        &m.source_namespace,
        path,
        out,
    );
    if !m.source_subnet.is_empty() {
        if let Err(e) = validate_ip_subnet(&m.source_subnet) {
            out.error(&path.field("sourceSubnet"), e);
        }
    }
}

// ---- unreachable rules (Istio reports these as warnings) ----
