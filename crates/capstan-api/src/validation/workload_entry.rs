//! `WorkloadEntry` and `WorkloadGroup` validation, following Istio's `ValidateWorkloadEntry`,
//! `ValidateWorkloadGroup` and `validateReadinessProbe`. The endpoint checks are shared with
//! `ServiceEntry` (see [`validate_workload_entry`]).

use super::common::{
    check, validate_header_name, validate_labels, validate_port, validate_port_name,
};
use super::{Context, Validate};
use crate::networking::{ReadinessProbe, ServicePort, WorkloadEntry, WorkloadGroup};
use crate::path::Path;
use crate::report::Report;
use std::net::IpAddr;

/// Prefix of Unix domain socket addresses in endpoints.
pub(super) const UNIX_ADDRESS_PREFIX: &str = "unix://";

/// True for an IPv4 or IPv6 address (no prefix length, no zone).
pub(super) fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

/// `a.b.c.d/n` or `x::y/n` with a prefix length valid for the address family.
pub(super) fn is_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return false;
    };
    if bits.is_empty() || bits.len() > 3 || !bits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    // Go rejects leading zeros in the prefix length ("/08").
    if bits.len() > 1 && bits.starts_with('0') {
        return false;
    }
    let Ok(bits) = bits.parse::<u8>() else {
        return false;
    };
    match ip {
        IpAddr::V4(_) => bits <= 32,
        IpAddr::V6(_) => bits <= 128,
    }
}

/// Istio's `ValidateIPSubnet`: a CIDR block (one `/`) or a single IP address.
pub(super) fn validate_ip_subnet(s: &str) -> Result<(), String> {
    if s.matches('/').count() == 1 {
        if is_cidr(s) {
            Ok(())
        } else {
            Err(format!("{s} is not a valid CIDR block"))
        }
    } else if is_ip(s) {
        Ok(())
    } else {
        Err(format!("{s} is not a valid IP"))
    }
}

/// Istio's `ValidateUnixAddress` (on the part after `unix://`).
fn validate_unix_address(addr: &str) -> Result<(), String> {
    if addr.is_empty() {
        return Err("unix address must not be empty".into());
    }
    // Abstract sockets start with '@'.
    if addr.starts_with('@') {
        return Ok(());
    }
    if !addr.starts_with('/') || addr.ends_with('/') {
        return Err(format!("{addr} is not an absolute path to a file"));
    }
    Ok(())
}

/// Istio's `validateWorkloadEntry`. `service_ports` are the port names of the enclosing
/// ServiceEntry (None for a standalone WorkloadEntry); `allow_fqdn` is false for STATIC endpoints.
pub(super) fn validate_workload_entry(
    we: &WorkloadEntry,
    path: &Path<'_>,
    service_ports: Option<&[ServicePort]>,
    allow_fqdn: bool,
    out: &mut Report,
) {
    let addr = we.address.as_str();
    let address_path = path.field("address");
    if addr.is_empty() {
        if we.network.is_empty() {
            out.error(&address_path, "address is required");
            return;
        }
        out.warn(
            &address_path,
            format!("address is unset with network {:?}", we.network),
        );
    }
    let mut unix_endpoint = false;
    if let Some(socket) = addr.strip_prefix(UNIX_ADDRESS_PREFIX) {
        unix_endpoint = true;
        check(validate_unix_address(socket), &address_path, out);
        if !we.ports.is_empty() {
            out.error(
                &path.field("ports"),
                format!("unix endpoint {addr} must not include ports"),
            );
        }
    } else if !addr.is_empty() && !is_ip(addr) {
        if !allow_fqdn {
            out.error(
                &address_path,
                format!("endpoint address {addr:?} is not a valid IP address"),
            );
        } else if super::common::validate_fqdn(addr).is_err() {
            out.error(
                &address_path,
                format!("endpoint address {addr:?} is not a valid FQDN or an IP address"),
            );
        }
    }
    validate_endpoint_ports(we, path, service_ports, out);
    validate_labels(&we.labels, &path.field("labels"), out);
    if unix_endpoint {
        if let Some(ports) = service_ports {
            if ports.len() != 1 {
                out.error(
                    &address_path,
                    "exactly 1 service port required for unix endpoints",
                );
            }
        }
    }
}

/// Endpoint port map: names are service port names (DNS-1123 labels), values valid port numbers.
pub(super) fn validate_endpoint_ports(
    we: &WorkloadEntry,
    path: &Path<'_>,
    service_ports: Option<&[ServicePort]>,
    out: &mut Report,
) {
    let ports_path = path.field("ports");
    for (name, port) in &we.ports {
        let p = ports_path.key(name);
        if let Some(declared) = service_ports {
            if !declared.iter().any(|sp| sp.name == *name) {
                out.error(
                    &p,
                    format!("endpoint port {port} ({name}) is not defined by the service entry"),
                );
            }
        }
        check(validate_port_name(name), &p, out);
        check(validate_port(*port), &p, out);
    }
}

impl Validate for WorkloadEntry {
    fn validate(&self, _cx: &Context<'_>, out: &mut Report) {
        let spec = Path::root("spec");
        // Istio does not check ports against a ServiceEntry here (it is not known).
        validate_workload_entry(self, &spec, None, true, out);
    }
}

impl Validate for WorkloadGroup {
    fn validate(&self, _cx: &Context<'_>, out: &mut Report) {
        let spec = Path::root("spec");
        if let Some(meta) = &self.metadata {
            let m = spec.field("metadata");
            validate_labels(&meta.labels, &m.field("labels"), out);
        }
        match &self.template {
            None => out.error(&spec.field("template"), "template is required"),
            Some(t) => {
                // Istio skips validateWorkloadEntry for templates: address and labels are
                // filled in when a VM joins. The CRD schema still checks ports.
                let tp = spec.field("template");
                if !t.address.is_empty() {
                    out.warn(
                        &tp.field("address"),
                        "address should not be set in a WorkloadGroup template; it is populated when a workload joins",
                    );
                }
                if !t.labels.is_empty() {
                    out.warn(
                        &tp.field("labels"),
                        "labels should be set in metadata.labels rather than in the template",
                    );
                }
                validate_endpoint_ports(t, &tp, None, out);
            }
        }
        if let Some(probe) = &self.probe {
            validate_readiness_probe(probe, &spec.field("probe"), out);
        }
    }
}

/// Istio's `validateReadinessProbe`.
fn validate_readiness_probe(probe: &ReadinessProbe, path: &Path<'_>, out: &mut Report) {
    for (name, value) in [
        ("periodSeconds", probe.period_seconds),
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("successThreshold", probe.success_threshold),
        ("failureThreshold", probe.failure_threshold),
    ] {
        if value < 0 {
            out.error(&path.field(name), format!("{name} must be non-negative"));
        }
    }
    let set = [
        probe.http_get.is_some(),
        probe.tcp_socket.is_some(),
        probe.exec.is_some(),
        probe.grpc.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if set == 0 {
        out.error(
            path,
            "unknown health check method: exactly one of httpGet, tcpSocket, exec or grpc must be set",
        );
    } else if set > 1 {
        out.error(
            path,
            "only one health check method (httpGet, tcpSocket, exec or grpc) may be set",
        );
    }
    if let Some(h) = &probe.http_get {
        let hp = path.field("httpGet");
        check(validate_port(h.port), &hp.field("port"), out);
        if !h.scheme.is_empty() && h.scheme != "HTTP" && h.scheme != "HTTPS" {
            out.error(
                &hp.field("scheme"),
                format!(
                    "httpGet.scheme must be one of \"HTTPS\", \"HTTP\", got {:?}",
                    h.scheme
                ),
            );
        }
        let headers = hp.field("httpHeaders");
        for (i, header) in h.http_headers.iter().enumerate() {
            let p = headers.index(i);
            check(validate_header_name(&header.name), &p.field("name"), out);
        }
    }
    if let Some(t) = &probe.tcp_socket {
        check(
            validate_port(t.port),
            &path.field("tcpSocket").field("port"),
            out,
        );
    }
    if let Some(e) = &probe.exec {
        if e.command.is_empty() {
            out.error(
                &path.field("exec").field("command"),
                "exec.command is required",
            );
        }
    }
    if let Some(g) = &probe.grpc {
        check(
            validate_port(g.port),
            &path.field("grpc").field("port"),
            out,
        );
    }
}
