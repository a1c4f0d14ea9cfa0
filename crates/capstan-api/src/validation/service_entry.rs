//! `ServiceEntry` validation, following Istio's `ValidateServiceEntry`.

use super::common::{
    check, validate_export_to, validate_fqdn, validate_port, validate_port_name, validate_protocol,
    validate_selector_value_length, validate_wildcard_domain,
};
use super::workload_entry::{is_ip, validate_ip_subnet, validate_workload_entry};
use super::{Context, Validate};
use crate::networking::{ServiceEntry, ServiceEntryLocation, ServiceEntryResolution};
use crate::path::Path;
use crate::report::Report;

/// Istio's `protocol.Parse(p).IsHTTP()`.
fn is_http(protocol: &str) -> bool {
    ["HTTP", "HTTP2", "HTTP_PROXY", "GRPC", "GRPC-WEB"]
        .iter()
        .any(|p| p.eq_ignore_ascii_case(protocol))
}

/// Istio's `protocol.Parse(p).IsTLS()`.
fn is_tls(protocol: &str) -> bool {
    ["HTTPS", "TLS"]
        .iter()
        .any(|p| p.eq_ignore_ascii_case(protocol))
}

/// Istio's `protocol.Parse(p).IsTCP()`.
fn is_tcp(protocol: &str) -> bool {
    ["TCP", "HTTPS", "TLS", "MONGO", "REDIS", "MYSQL"]
        .iter()
        .any(|p| p.eq_ignore_ascii_case(protocol))
}

/// Istio's `ValidatePartialWildCard`: a `*` only as the whole host or as a `*.` prefix.
fn is_partial_wildcard(host: &str) -> bool {
    host.contains('*') && host.len() != 1 && !host.starts_with("*.")
}

impl Validate for ServiceEntry {
    fn validate(&self, cx: &Context<'_>, out: &mut Report) {
        let spec = Path::root("spec");
        let resolution = self.resolution;

        // ValidateAlphaWorkloadSelector (networking selector: `labels`).
        if let Some(sel) = &self.workload_selector {
            let sp = spec.field("workloadSelector");
            let lp = sp.field("labels");
            for (k, v) in &sel.labels {
                let p = lp.key(k);
                if k.is_empty() {
                    out.error(
                        &p,
                        format!(
                            "empty key is not supported in selector: {:?}",
                            format!("{k}={v}")
                        ),
                    );
                    continue;
                }
                if k.contains('*') || v.contains('*') {
                    out.error(
                        &p,
                        format!(
                            "wildcard is not supported in selector: {:?}",
                            format!("{k}={v}")
                        ),
                    );
                    continue;
                }
                // Istio checks no label syntax here; the CRD schema bounds values to 63.
                check(validate_selector_value_length(v), &p, out);
            }
            if sel.labels.is_empty() {
                out.warn(
                    &sp,
                    "service entry: workload selector specified without labels, will be applied to all services in namespace",
                );
            }
            if !self.endpoints.is_empty() {
                out.error(
                    &sp,
                    "only one of WorkloadSelector or Endpoints is allowed in Service Entry",
                );
            }
        }

        let hosts = spec.field("hosts");
        if self.hosts.is_empty() {
            out.error(&hosts, "service entry must have at least one host");
        }
        for (i, host) in self.hosts.iter().enumerate() {
            let p = hosts.index(i);
            if host == "*" {
                out.error(&p, format!("invalid host {host}"));
            } else {
                check(validate_wildcard_domain(host), &p, out);
                if is_partial_wildcard(host) {
                    out.warn(&p, format!("partial wildcard {host:?} not allowed"));
                }
            }
        }

        let addresses = spec.field("addresses");
        let mut cidr_found = false;
        for (i, address) in self.addresses.iter().enumerate() {
            cidr_found |= address.contains('/');
            check(validate_ip_subnet(address), &addresses.index(i), out);
        }
        if cidr_found
            && resolution != ServiceEntryResolution::None
            && resolution != ServiceEntryResolution::Static
        {
            out.error(
                &addresses,
                "CIDR addresses are allowed only for NONE/STATIC resolution types",
            );
        }

        // Istio auto-allocates a VIP (feature on by default) unless the resolution is NONE or
        // a host is a wildcard; without one, TCP ports cannot be told apart.
        let auto_allocation = resolution != ServiceEntryResolution::None
            && !self.hosts.iter().any(|h| h.starts_with('*'));
        let ports = spec.field("ports");
        for (i, port) in self.ports.iter().enumerate() {
            let p = ports.index(i);
            let earlier = self.ports.get(..i).unwrap_or_default();
            if earlier.iter().any(|e| e.name == port.name) {
                out.error(
                    &p.field("name"),
                    format!("service entry port name {:?} already defined", port.name),
                );
            }
            if earlier.iter().any(|e| e.number == port.number) {
                out.error(
                    &p.field("number"),
                    format!("service entry port {} already defined", port.number),
                );
            }
            if port.target_port != 0 {
                check(validate_port(port.target_port), &p.field("targetPort"), out);
            }
            if self.addresses.is_empty()
                && !auto_allocation
                && (port.protocol.is_empty() || port.protocol == "TCP")
            {
                out.warn(
                    &p,
                    "addresses are required for ports serving TCP (or unset) protocol when IP Autoallocation is not enabled",
                );
            }
            check(validate_port_name(&port.name), &p.field("name"), out);
            if !port.protocol.is_empty() {
                check(validate_protocol(&port.protocol), &p.field("protocol"), out);
            }
            check(validate_port(port.number), &p.field("number"), out);
        }

        let endpoints = spec.field("endpoints");
        match resolution {
            ServiceEntryResolution::None => {
                if !self.endpoints.is_empty() {
                    out.error(
                        &endpoints,
                        "no endpoints should be provided for resolution type none",
                    );
                }
                if self.workload_selector.is_some() {
                    out.warn(
                        &spec.field("workloadSelector"),
                        "workloadSelector should not be set when resolution mode is NONE",
                    );
                }
            }
            ServiceEntryResolution::Static => {
                for (i, ep) in self.endpoints.iter().enumerate() {
                    validate_workload_entry(ep, &endpoints.index(i), Some(&self.ports), false, out);
                }
            }
            ServiceEntryResolution::Dns | ServiceEntryResolution::DnsRoundRobin => {
                if self.endpoints.is_empty() {
                    for (i, host) in self.hosts.iter().enumerate() {
                        if host != "*" && validate_fqdn(host).is_err() {
                            out.error(
                                &hosts.index(i),
                                format!(
                                    "hosts must be FQDN if no endpoints are provided for resolution mode {}",
                                    resolution.as_str()
                                ),
                            );
                        }
                    }
                }
                if resolution == ServiceEntryResolution::DnsRoundRobin && self.endpoints.len() > 1 {
                    out.error(
                        &endpoints,
                        format!(
                            "there must only be 0 or 1 endpoint for resolution mode {}",
                            resolution.as_str()
                        ),
                    );
                }
                for (i, ep) in self.endpoints.iter().enumerate() {
                    let ep_path = endpoints.index(i);
                    if !is_ip(&ep.address) && validate_fqdn(&ep.address).is_err() {
                        out.error(
                            &ep_path.field("address"),
                            format!(
                                "endpoint address {:?} is not a valid FQDN or an IP address",
                                ep.address
                            ),
                        );
                    }
                    super::common::validate_labels(&ep.labels, &ep_path.field("labels"), out);
                    super::workload_entry::validate_endpoint_ports(
                        ep,
                        &ep_path,
                        Some(&self.ports),
                        out,
                    );
                }
                if !self.addresses.is_empty()
                    && self.hosts.len() > 1
                    && self.ports.iter().any(|p| is_tcp(&p.protocol))
                {
                    out.warn(
                        &hosts,
                        "service entry can not have more than one host specified simultaneously with address and tcp port",
                    );
                }
            }
            ServiceEntryResolution::DynamicDns => {
                // DYNAMIC_DNS resolves the name from the Host header or SNI: it needs wildcard
                // hosts, only applies to MESH_EXTERNAL services and ignores endpoints.
                for (i, host) in self.hosts.iter().enumerate() {
                    if !host.starts_with('*') {
                        out.error(
                            &hosts.index(i),
                            format!("hosts must be wildcard for resolution mode DYNAMIC_DNS, got {host:?}"),
                        );
                    }
                }
                if self.location != ServiceEntryLocation::MeshExternal {
                    out.error(
                        &spec.field("location"),
                        "resolution mode DYNAMIC_DNS is only supported for MESH_EXTERNAL service entries",
                    );
                }
                if !self.endpoints.is_empty() {
                    out.warn(
                        &endpoints,
                        "endpoints are ignored for resolution mode DYNAMIC_DNS",
                    );
                }
                if self.workload_selector.is_some() {
                    out.warn(
                        &spec.field("workloadSelector"),
                        "workloadSelector is ignored for resolution mode DYNAMIC_DNS",
                    );
                }
            }
        }

        // Plain TCP cannot tell several hosts apart (no Host header, no SNI), unless NONE.
        if resolution != ServiceEntryResolution::None && self.hosts.len() > 1 {
            if let Some(i) = self
                .ports
                .iter()
                .position(|p| !is_http(&p.protocol) && !is_tls(&p.protocol))
            {
                out.error(
                    &ports.index(i).field("protocol"),
                    "multiple hosts provided with non-HTTP, non-TLS ports",
                );
            }
        }

        validate_export_to(
            cx.namespace,
            &self.export_to,
            true,
            &spec.field("exportTo"),
            out,
        );

        let sans = spec.field("subjectAltNames");
        for (i, san) in self.subject_alt_names.iter().enumerate() {
            if san.is_empty() {
                out.warn(
                    &sans.index(i),
                    "empty subject alternative name matches nothing",
                );
            }
        }
    }
}
