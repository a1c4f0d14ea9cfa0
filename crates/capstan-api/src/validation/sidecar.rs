//! `Sidecar` validation, following Istio's `ValidateSidecar`, `validateSidecarIngressPortAndBind`,
//! `validateSidecarEgressPortBindAndCaptureMode` and `validateSidecarOutboundTrafficPolicy`.

use super::common::{
    check, validate_fqdn, validate_port, validate_port_name, validate_selector_labels,
    validate_wildcard_domain,
};
use super::destination_rule::{validate_connection_pool, validate_subset_name};
use super::gateway::{
    is_http, validate_ip_address, validate_namespace_slash_host, validate_server_tls,
    validate_unix_address, UNIX_ADDRESS_PREFIX,
};
use super::{Context, Validate};
use crate::networking::{
    CaptureMode, IstioEgressListener, IstioIngressListener, OutboundTrafficMode,
    OutboundTrafficPolicy, Port, ServerTlsMode, Sidecar,
};
use crate::path::Path;
use crate::report::Report;
use std::collections::{BTreeMap, BTreeSet};

impl Validate for Sidecar {
    fn validate(&self, cx: &Context<'_>, out: &mut Report) {
        let spec = Path::root("spec");

        if let Some(selector) = &self.workload_selector {
            let sp = spec.field("workloadSelector");
            validate_selector_labels(&selector.labels, &sp.field("labels"), out);
            if selector.labels.is_empty() {
                out.warn(
                    &sp,
                    "sidecar: workload selector specified without labels, will be applied to all services in namespace",
                );
            }
        }

        if self.egress.is_empty()
            && self.ingress.is_empty()
            && self.outbound_traffic_policy.is_none()
            && self.inbound_connection_pool.is_none()
        {
            out.error(&spec, "sidecar: empty configuration provided (set at least one of ingress, egress, outboundTrafficPolicy or inboundConnectionPool)");
            return;
        }

        let ingress = spec.field("ingress");
        let mut ports: BTreeSet<u32> = BTreeSet::new();
        for (i, listener) in self.ingress.iter().enumerate() {
            validate_ingress(listener, &ingress.index(i), &mut ports, out);
        }

        if let Some(cp) = &self.inbound_connection_pool {
            validate_connection_pool(cp, &spec.field("inboundConnectionPool"), out);
        }

        let egress = spec.field("egress");
        let mut ports: BTreeSet<u32> = BTreeSet::new();
        let mut sockets: BTreeSet<&str> = BTreeSet::new();
        let mut catch_all_found = false;
        let last = self.egress.len().saturating_sub(1);
        for (i, listener) in self.egress.iter().enumerate() {
            let p = egress.index(i);
            match &listener.port {
                None => {
                    if catch_all_found {
                        out.error(
                            &p,
                            "sidecar: egress can have only one listener with empty port",
                        );
                        continue;
                    }
                    if i == last {
                        catch_all_found = true;
                    } else {
                        out.error(
                            &p,
                            "sidecar: the egress listener with empty port should be the last listener in the list",
                        );
                    }
                }
                Some(port) => {
                    let pp = p.field("port");
                    if port.target_port.unwrap_or(0) > 0 {
                        out.error(
                            &pp.field("targetPort"),
                            "targetPort has no impact on Sidecars",
                        );
                    }
                    validate_egress_port_bind_capture(listener, port, &p, out);
                    if port.number == 0 {
                        if !sockets.insert(listener.bind.as_str()) {
                            out.error(
                                &p.field("bind"),
                                "sidecar: unix domain socket values for listeners must be unique",
                            );
                        }
                    } else if !ports.insert(port.number) {
                        out.error(
                            &pp.field("number"),
                            format!(
                                "sidecar: ports on IP bound listeners must be unique (port {} repeated)",
                                port.number
                            ),
                        );
                    }
                }
            }
            validate_egress_hosts(listener, cx.namespace, &p.field("hosts"), out);
        }

        if let Some(policy) = &self.outbound_traffic_policy {
            validate_outbound_traffic_policy(policy, &spec.field("outboundTrafficPolicy"), out);
        }
    }
}

fn validate_ingress(
    listener: &IstioIngressListener,
    path: &Path<'_>,
    ports: &mut BTreeSet<u32>,
    out: &mut Report,
) {
    let pp = path.field("port");
    let Some(port) = &listener.port else {
        out.error(&pp, "sidecar: port is required for ingress listeners");
        return;
    };
    if port.target_port.unwrap_or(0) > 0 {
        out.error(
            &pp.field("targetPort"),
            "targetPort has no impact on Sidecars",
        );
    }
    if !port.name.is_empty() {
        check(validate_port_name(&port.name), &pp.field("name"), out);
    }
    validate_optional_protocol(&port.protocol, &pp.field("protocol"), out);
    check(validate_port(port.number), &pp.field("number"), out);
    if !listener.bind.is_empty() {
        check(
            validate_ip_address(&listener.bind),
            &path.field("bind"),
            out,
        );
    }
    if !ports.insert(port.number) {
        out.error(
            &pp.field("number"),
            format!(
                "sidecar: ports on IP bound listeners must be unique (port {} repeated)",
                port.number
            ),
        );
    }

    if !listener.default_endpoint.is_empty() {
        validate_default_endpoint(
            &listener.default_endpoint,
            &path.field("defaultEndpoint"),
            out,
        );
    }

    if let Some(tls) = &listener.tls {
        let tp = path.field("tls");
        if !tls.subject_alt_names.is_empty() {
            out.error(
                &tp.field("subjectAltNames"),
                "sidecar: subjectAltNames is not supported in ingress tls",
            );
        }
        if tls.https_redirect {
            out.error(
                &tp.field("httpsRedirect"),
                "sidecar: httpsRedirect is not supported",
            );
        }
        if !tls.credential_name.is_empty() || !tls.credential_names.is_empty() {
            out.error(
                &tp.field("credentialName"),
                "sidecar: credentialName is not currently supported",
            );
        }
        match tls.mode.unwrap_or_default() {
            ServerTlsMode::IstioMutual => out.error(
                &tp.field("mode"),
                "configuration is invalid: cannot set mode to ISTIO_MUTUAL in sidecar ingress tls",
            ),
            ServerTlsMode::AutoPassthrough => out.error(
                &tp.field("mode"),
                "configuration is invalid: cannot set mode to AUTO_PASSTHROUGH in sidecar ingress tls",
            ),
            _ => {}
        }
        validate_server_tls(tls, &tp, out);
    }

    if let Some(cp) = &listener.connection_pool {
        let cpp = path.field("connectionPool");
        validate_connection_pool(cp, &cpp, out);
        if cp.http.is_some() && !is_http(&port.protocol) {
            out.warn(
                &cpp.field("http"),
                format!(
                    "sidecar: HTTP connection pool settings are configured for port {} ({:?}) but its protocol is not HTTP ({}); only TCP settings will apply",
                    port.number, port.name, port.protocol
                ),
            );
        }
    }
}

/// Istio's `ValidateProtocol` for sidecar ports: empty (sniffing) or a known protocol.
fn validate_optional_protocol(protocol: &str, path: &Path<'_>, out: &mut Report) {
    if !protocol.is_empty() {
        check(super::common::validate_protocol(protocol), path, out);
    }
}

/// `127.0.0.1:PORT`, `0.0.0.0:PORT`, `[::1]:PORT`, `[::]:PORT`, `:PORT` or `unix://path`.
fn validate_default_endpoint(endpoint: &str, path: &Path<'_>, out: &mut Report) {
    if let Some(addr) = endpoint.strip_prefix(UNIX_ADDRESS_PREFIX) {
        check(validate_unix_address(addr), path, out);
        return;
    }
    const FORM: &str = "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,[::]:port,unix://filepath or unset";
    // Go's net.SplitHostPort: `host:port` or `[v6]:port`.
    let split = if let Some(rest) = endpoint.strip_prefix('[') {
        rest.split_once(']')
            .and_then(|(h, p)| p.strip_prefix(':').map(|p| (h, p)))
    } else {
        match endpoint.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => Some((h, p)),
            _ => None,
        }
    };
    let Some((host, port)) = split else {
        out.error(
            path,
            format!("{FORM}; missing or malformed port in {endpoint:?}"),
        );
        return;
    };
    if !host.is_empty() && !matches!(host, "127.0.0.1" | "0.0.0.0" | "::1" | "::") {
        out.error(path, FORM);
    }
    match port.parse::<u32>() {
        Ok(n) => check(validate_port(n), path, out),
        Err(_) => out.error(
            path,
            format!("sidecar: defaultEndpoint port ({port}) is not a number"),
        ),
    }
}

fn validate_egress_port_bind_capture(
    listener: &IstioEgressListener,
    port: &Port,
    path: &Path<'_>,
    out: &mut Report,
) {
    let pp = path.field("port");
    let bind = path.field("bind");
    if !port.name.is_empty() {
        check(validate_port_name(&port.name), &pp.field("name"), out);
    }
    validate_optional_protocol(&port.protocol, &pp.field("protocol"), out);
    if port.number == 0 {
        match listener.bind.strip_prefix(UNIX_ADDRESS_PREFIX) {
            None => out.error(
                &bind,
                "sidecar: ports with 0 value must have a unix domain socket bind address",
            ),
            Some(addr) => check(validate_unix_address(addr), &bind, out),
        }
        if !matches!(
            listener.capture_mode.unwrap_or_default(),
            CaptureMode::Default | CaptureMode::None
        ) {
            out.error(
                &path.field("captureMode"),
                "sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners",
            );
        }
    } else {
        check(validate_port(port.number), &pp.field("number"), out);
        if !listener.bind.is_empty() {
            check(validate_ip_address(&listener.bind), &bind, out);
        }
    }
}

fn validate_egress_hosts(
    listener: &IstioEgressListener,
    namespace: &str,
    path: &Path<'_>,
    out: &mut Report,
) {
    if listener.hosts.is_empty() {
        out.error(
            path,
            "sidecar: egress listener must contain at least one host",
        );
        return;
    }
    // namespace -> hosts seen, to warn about duplicates (as Istio does).
    let mut seen: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (i, host) in listener.hosts.iter().enumerate() {
        let p = path.index(i);
        if let Some((ns, svc)) = host.split_once('/') {
            let ns = if ns == "." && !namespace.is_empty() {
                namespace
            } else {
                ns
            };
            let entry = seen.entry(ns).or_default();
            let duplicate = if svc == "*" {
                !entry.is_empty()
            } else {
                entry.contains(svc) || entry.contains("*")
            };
            if duplicate {
                out.warn(&p, format!("duplicated egress host: {host}"));
            }
            entry.insert(svc);
        }
        validate_namespace_slash_host(host, false, &p, out);
    }
    if seen.get("*").is_some_and(|s| s.contains("*")) && seen.len() != 1 {
        out.warn(
            path,
            "`*/*` host select all resources, no other hosts can be added",
        );
    }
}

fn validate_outbound_traffic_policy(
    policy: &OutboundTrafficPolicy,
    path: &Path<'_>,
    out: &mut Report,
) {
    let Some(proxy) = &policy.egress_proxy else {
        return;
    };
    let pp = path.field("egressProxy");
    if policy.mode.unwrap_or_default() != OutboundTrafficMode::AllowAny {
        out.error(
            &pp,
            "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode",
        );
        return;
    }
    let host = pp.field("host");
    check(validate_fqdn(&proxy.host), &host, out);
    let Some(port) = &proxy.port else {
        out.error(
            &pp.field("port"),
            "sidecar: egress_proxy port must be non-nil",
        );
        return;
    };
    // Istio's `validateDestination`.
    if proxy.host == "*" {
        out.error(&host, format!("invalid destination host {}", proxy.host));
    } else if validate_fqdn(&proxy.host).is_ok() {
        check(validate_wildcard_domain(&proxy.host), &host, out);
    }
    if !proxy.subset.is_empty() {
        check(
            validate_subset_name(&proxy.subset),
            &pp.field("subset"),
            out,
        );
    }
    let port_path = pp.field("port");
    check(validate_port(port.number), &port_path.field("number"), out);
}

#[cfg(test)]
mod tests {
    use super::validate_default_endpoint;
    use crate::path::Path;
    use crate::report::Report;

    fn errs(e: &str) -> usize {
        let mut r = Report::default();
        validate_default_endpoint(e, &Path::root("x"), &mut r);
        r.errors.len()
    }

    #[test]
    fn default_endpoints() {
        assert_eq!(errs("127.0.0.1:8080"), 0);
        assert_eq!(errs("0.0.0.0:8080"), 0);
        assert_eq!(errs("[::1]:8080"), 0);
        assert_eq!(errs(":8080"), 0);
        assert_eq!(errs("unix:///var/run/app.sock"), 0);
        assert!(errs("10.0.0.1:8080") > 0);
        assert!(errs("127.0.0.1") > 0);
        assert!(errs("127.0.0.1:http") > 0);
        assert!(errs("127.0.0.1:0") > 0);
        assert!(errs("unix://relative") > 0);
    }
}
