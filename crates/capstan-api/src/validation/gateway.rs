//! `Gateway` validation, following Istio's `ValidateGateway`, `validateServer`, `validateServerPort`,
//! `validateServerBind` and `validateTLSOptions`, plus the `namespace/host` checks shared with
//! `Sidecar` (`ValidateNamespaceSlashWildcardHostname`).

use super::common::{
    check, is_dns1123_label, validate_port, validate_protocol, validate_wildcard_domain, Check,
};
use super::{Context, Validate};
use crate::networking::{Gateway, Server, ServerTlsMode, ServerTlsSettings, TlsProtocol};
use crate::path::Path;
use crate::report::Report;
use std::collections::BTreeSet;

/// Prefix of Unix domain socket addresses in `bind` and `defaultEndpoint`.
pub(crate) const UNIX_ADDRESS_PREFIX: &str = "unix://";

impl Validate for Gateway {
    fn validate(&self, cx: &Context<'_>, out: &mut Report) {
        let spec = Path::root("spec");
        if !cx.name.is_empty() && !is_dns1123_label(cx.name) {
            let meta = Path::root("metadata");
            out.error(
                &meta.field("name"),
                format!(
                    "invalid gateway name: {:?} (must be a DNS-1123 label: no dots)",
                    cx.name
                ),
            );
        }
        let servers = spec.field("servers");
        if self.servers.is_empty() {
            out.error(&servers, "gateway must have at least one server");
        }
        // Istio rejects any port name used by two servers, even for the same port number.
        let mut port_names: BTreeSet<&str> = BTreeSet::new();
        for (i, server) in self.servers.iter().enumerate() {
            let sp = servers.index(i);
            validate_server(server, &sp, out);
            if let Some(port) = &server.port {
                if !port.name.is_empty() && !port_names.insert(port.name.as_str()) {
                    let pp = sp.field("port");
                    out.error(
                        &pp.field("name"),
                        format!(
                            "port names in servers must be unique: duplicate name {} (give each server its own port name)",
                            port.name
                        ),
                    );
                }
                if !is_http(&port.protocol) && server.tls.as_ref().is_some_and(|t| t.https_redirect)
                {
                    let tp = sp.field("tls");
                    out.warn(
                        &tp.field("httpsRedirect"),
                        "tls.httpsRedirect should only be used with http servers",
                    );
                }
            }
        }
    }
}

/// Istio's `protocol.IsHTTP`: HTTP, HTTP2, HTTP_PROXY, GRPC, GRPC-WEB.
pub(crate) fn is_http(protocol: &str) -> bool {
    ["HTTP", "HTTP2", "HTTP_PROXY", "GRPC", "GRPC-WEB"]
        .iter()
        .any(|p| p.eq_ignore_ascii_case(protocol))
}

/// Istio's `protocol.IsTLS`: HTTPS, TLS.
pub(crate) fn is_tls(protocol: &str) -> bool {
    protocol.eq_ignore_ascii_case("HTTPS") || protocol.eq_ignore_ascii_case("TLS")
}

/// Istio's `ValidateUnixAddress` (the part after `unix://`).
pub(crate) fn validate_unix_address(addr: &str) -> Check {
    if addr.is_empty() {
        return Err("unix address must not be empty".into());
    }
    if addr.starts_with('@') {
        return Ok(());
    }
    if !addr.starts_with('/') || addr.ends_with('/') {
        return Err(format!("{addr} is not an absolute path to a file"));
    }
    Ok(())
}

/// Istio's `ValidateIPAddress`.
pub(crate) fn validate_ip_address(addr: &str) -> Check {
    match addr.parse::<std::net::IpAddr>() {
        Ok(_) => Ok(()),
        Err(_) => Err(format!("{addr} is not a valid IP")),
    }
}

fn validate_hostname_part(host: &str, is_gateway: bool, path: &Path<'_>, out: &mut Report) {
    if host != "*" && !host.contains('.') {
        out.error(
            path,
            format!("short names (non FQDN) are not allowed: {host:?}"),
        );
    }
    if let Err(e) = validate_wildcard_domain(host) {
        // Gateways also accept an IP address as the host.
        if !is_gateway || host.parse::<std::net::IpAddr>().is_err() {
            out.error(path, e);
        }
    }
    if host.contains('*') && host.len() != 1 && !host.starts_with("*.") {
        out.error(path, format!("partial wildcard {host:?} not allowed"));
    }
}

/// Istio's `ValidateNamespaceSlashWildcardHostname`: `namespace/dnsName` hosts of Gateway servers
/// (where a bare host is also accepted) and Sidecar egress listeners.
pub(crate) fn validate_namespace_slash_host(
    host: &str,
    is_gateway: bool,
    path: &Path<'_>,
    out: &mut Report,
) {
    let Some((ns, name)) = host.split_once('/') else {
        if is_gateway {
            validate_hostname_part(host, true, path, out);
        } else {
            out.error(
                path,
                format!("host must be of form namespace/dnsName, got {host:?}"),
            );
        }
        return;
    };
    if ns.is_empty() || name.is_empty() {
        out.error(
            path,
            "config namespace and dnsName in host entry cannot be empty",
        );
    }
    let special = if is_gateway {
        matches!(ns, "*" | ".")
    } else {
        matches!(ns, "*" | "." | "~")
    };
    if !special && !is_dns1123_label(ns) {
        let kind = if is_gateway { "gateway" } else { "sidecar" };
        out.error(path, format!("invalid namespace value {ns:?} in {kind}"));
    }
    validate_hostname_part(name, is_gateway, path, out);
}

fn validate_server(server: &Server, path: &Path<'_>, out: &mut Report) {
    let hosts = path.field("hosts");
    if server.hosts.is_empty() {
        out.error(&hosts, "server config must contain at least one host");
    }
    for (i, h) in server.hosts.iter().enumerate() {
        validate_namespace_slash_host(h, true, &hosts.index(i), out);
    }

    let port_path = path.field("port");
    let errors_before = out.errors.len();
    let unix_bind = server.bind.starts_with(UNIX_ADDRESS_PREFIX);
    match &server.port {
        None => out.error(&port_path, "port is required"),
        Some(port) => {
            if validate_protocol(&port.protocol).is_err() {
                out.error(
                    &port_path.field("protocol"),
                    format!(
                        "invalid protocol {:?}, supported protocols are HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP, TLS",
                        port.protocol
                    ),
                );
            }
            if port.number > 0 || !unix_bind {
                check(validate_port(port.number), &port_path.field("number"), out);
            }
            if port.target_port.unwrap_or(0) > 0 {
                out.error(
                    &port_path.field("targetPort"),
                    "targetPort has no impact on Gateways",
                );
            }
            if port.name.is_empty() {
                out.error(&port_path.field("name"), "port name must be set");
            }
        }
    }
    let port_ok = out.errors.len() == errors_before;

    let bind = path.field("bind");
    if let Some(addr) = server.bind.strip_prefix(UNIX_ADDRESS_PREFIX) {
        check(validate_unix_address(addr), &bind, out);
        if let Some(port) = &server.port {
            if port.number != 0 {
                out.error(
                    &port_path.field("number"),
                    format!(
                        "port number must be 0 for unix domain socket, got {}",
                        port.number
                    ),
                );
            }
        }
    } else if !server.bind.is_empty() {
        check(validate_ip_address(&server.bind), &bind, out);
    }

    let tls_path = path.field("tls");
    if let Some(tls) = &server.tls {
        validate_server_tls(tls, &tls_path, out);
    }

    if let (true, Some(port)) = (port_ok, &server.port) {
        let tls_protocol = is_tls(&port.protocol);
        match &server.tls {
            None if tls_protocol => out.error(
                &tls_path,
                "server must have TLS settings for HTTPS/TLS protocols",
            ),
            Some(tls) if !tls_protocol => {
                if is_http(&port.protocol) {
                    let passthrough = matches!(
                        tls.mode.unwrap_or_default(),
                        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough
                    );
                    if !passthrough
                        || !tls.ca_certificates.is_empty()
                        || !tls.private_key.is_empty()
                        || !tls.server_certificate.is_empty()
                    {
                        out.error(
                            &tls_path,
                            "server cannot have TLS settings for plain text HTTP ports (only httpsRedirect is allowed)",
                        );
                    }
                } else {
                    out.error(
                        &tls_path,
                        "server cannot have TLS settings for non HTTPS/TLS ports",
                    );
                }
            }
            _ => {}
        }
    }
}

/// Cipher suites Envoy (BoringSSL) accepts, as in Istio's `security.ValidCipherSuites`.
const VALID_CIPHER_SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "ECDHE-PSK-AES128-CBC-SHA",
    "ECDHE-PSK-AES256-CBC-SHA",
    "ECDHE-PSK-CHACHA20-POLY1305",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "PSK-AES128-CBC-SHA",
    "PSK-AES256-CBC-SHA",
    "DES-CBC3-SHA",
];

fn is_valid_cipher_suite(cs: &str) -> bool {
    // Equal-preference groups: `[A|B]`.
    if let Some(inner) = cs.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        return !inner.is_empty() && inner.split('|').all(|c| VALID_CIPHER_SUITES.contains(&c));
    }
    VALID_CIPHER_SUITES.contains(&cs)
}

/// Istio's `validateTLSOptions` for server TLS settings; shared with `Sidecar` ingress listeners.
pub(crate) fn validate_server_tls(tls: &ServerTlsSettings, path: &Path<'_>, out: &mut Report) {
    if matches!(
        tls.min_protocol_version,
        Some(TlsProtocol::TlsV1_0 | TlsProtocol::TlsV1_1)
    ) && tls.cipher_suites.is_empty()
    {
        out.warn(
            &path.field("minProtocolVersion"),
            "TLS version below TLSV1_2 require setting compatible ciphers as by default they no longer include compatible ciphers.",
        );
    }
    if let (Some(min), Some(max)) = (tls.min_protocol_version, tls.max_protocol_version) {
        if min != TlsProtocol::TlsAuto && max != TlsProtocol::TlsAuto && min > max {
            out.warn(
                &path.field("maxProtocolVersion"),
                "maxProtocolVersion is lower than minProtocolVersion; no TLS version can be negotiated",
            );
        }
    }

    let mut invalid: Vec<&str> = Vec::new();
    let mut duplicate: Vec<&str> = Vec::new();
    for (i, cs) in tls.cipher_suites.iter().enumerate() {
        if !is_valid_cipher_suite(cs) {
            if !invalid.contains(&cs.as_str()) {
                invalid.push(cs);
            }
        } else if tls.cipher_suites[..i].contains(cs) && !duplicate.contains(&cs.as_str()) {
            duplicate.push(cs);
        }
    }
    let cp = path.field("cipherSuites");
    if !invalid.is_empty() {
        invalid.sort_unstable();
        out.warn(
            &cp,
            format!("ignoring invalid cipher suites: [{}]", invalid.join(" ")),
        );
    }
    if !duplicate.is_empty() {
        duplicate.sort_unstable();
        out.warn(
            &cp,
            format!(
                "ignoring duplicate cipher suites: [{}]",
                duplicate.join(" ")
            ),
        );
    }

    let has_credential = !tls.credential_name.is_empty() || !tls.credential_names.is_empty();
    if !tls.credential_name.is_empty() && !tls.credential_names.is_empty() {
        out.error(
            &path.field("credentialNames"),
            "only one of credentialName or credentialNames can be set",
        );
    }
    if tls.credential_names.len() > 2 {
        out.warn(
            &path.field("credentialNames"),
            "at most two credentialNames (one RSA and one ECDSA certificate) are used",
        );
    }
    let certs = path.field("tlsCertificates");
    if !tls.tls_certificates.is_empty() {
        if !tls.server_certificate.is_empty() || !tls.private_key.is_empty() {
            out.error(
                &certs,
                "only one of serverCertificate/privateKey or tlsCertificates can be set",
            );
        }
        if has_credential {
            out.error(
                &certs,
                "only one of credentialName(s) or tlsCertificates can be set",
            );
        }
    }

    let mode = tls.mode.unwrap_or_default();
    let mode_name = |m: ServerTlsMode| match m {
        ServerTlsMode::Passthrough => "PASSTHROUGH",
        ServerTlsMode::Simple => "SIMPLE",
        ServerTlsMode::Mutual => "MUTUAL",
        ServerTlsMode::AutoPassthrough => "AUTO_PASSTHROUGH",
        ServerTlsMode::IstioMutual => "ISTIO_MUTUAL",
        ServerTlsMode::OptionalMutual => "OPTIONAL_MUTUAL",
    };

    if mode == ServerTlsMode::IstioMutual {
        if !tls.server_certificate.is_empty() {
            out.error(
                &path.field("serverCertificate"),
                "ISTIO_MUTUAL TLS cannot have associated server certificate",
            );
        }
        if !tls.private_key.is_empty() {
            out.error(
                &path.field("privateKey"),
                "ISTIO_MUTUAL TLS cannot have associated private key",
            );
        }
        if !tls.ca_certificates.is_empty() {
            out.error(
                &path.field("caCertificates"),
                "ISTIO_MUTUAL TLS cannot have associated CA bundle",
            );
        }
        if has_credential {
            out.error(
                &path.field("credentialName"),
                "ISTIO_MUTUAL TLS cannot have associated credentialName",
            );
        }
        if !tls.tls_certificates.is_empty() {
            out.error(
                &certs,
                "ISTIO_MUTUAL TLS cannot have associated tlsCertificates",
            );
        }
        return;
    }

    if matches!(
        mode,
        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough
    ) && (!tls.ca_crl.is_empty()
        || !tls.server_certificate.is_empty()
        || !tls.private_key.is_empty()
        || !tls.ca_certificates.is_empty()
        || has_credential
        || !tls.tls_certificates.is_empty())
    {
        out.warn(
            path,
            format!(
                "{} mode does not use certificates, they will be ignored",
                mode_name(mode)
            ),
        );
    }

    let terminating = matches!(
        mode,
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
    );
    if terminating && has_credential {
        // Credentials come from the secret; no files needed.
        return;
    }
    if terminating && !tls.tls_certificates.is_empty() {
        for (i, c) in tls.tls_certificates.iter().enumerate() {
            let p = certs.index(i);
            if c.server_certificate.is_empty() {
                out.error(
                    &p.field("serverCertificate"),
                    format!("{} TLS requires a server certificate", mode_name(mode)),
                );
            }
            if c.private_key.is_empty() {
                out.error(
                    &p.field("privateKey"),
                    format!("{} TLS requires a private key", mode_name(mode)),
                );
            }
        }
        if mode != ServerTlsMode::Simple
            && tls.ca_certificates.is_empty()
            && tls
                .tls_certificates
                .iter()
                .all(|c| c.ca_certificates.is_empty())
        {
            out.error(
                &path.field("caCertificates"),
                "MUTUAL TLS requires a client CA bundle",
            );
        }
    } else if mode == ServerTlsMode::Simple {
        if tls.server_certificate.is_empty() {
            out.error(
                &path.field("serverCertificate"),
                "SIMPLE TLS requires a server certificate",
            );
        }
        if tls.private_key.is_empty() {
            out.error(
                &path.field("privateKey"),
                "SIMPLE TLS requires a private key",
            );
        }
    } else if terminating {
        if tls.server_certificate.is_empty() {
            out.error(
                &path.field("serverCertificate"),
                "MUTUAL TLS requires a server certificate",
            );
        }
        if tls.private_key.is_empty() {
            out.error(
                &path.field("privateKey"),
                "MUTUAL TLS requires a private key",
            );
        }
        if tls.ca_certificates.is_empty() {
            out.error(
                &path.field("caCertificates"),
                "MUTUAL TLS requires a client CA bundle",
            );
        }
    }
    if !tls.ca_crl.is_empty() {
        let crl = path.field("caCrl");
        if has_credential {
            out.error(
                &crl,
                "CRL is not supported with credentialName. CRL has to be specified in the credential",
            );
        }
        if mode == ServerTlsMode::Simple {
            out.error(&crl, "CRL is not supported with SIMPLE TLS");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_suites() {
        assert!(is_valid_cipher_suite("ECDHE-RSA-AES128-GCM-SHA256"));
        assert!(is_valid_cipher_suite(
            "[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]"
        ));
        assert!(!is_valid_cipher_suite("[]"));
        assert!(!is_valid_cipher_suite("foo"));
    }

    #[test]
    fn unix_addresses() {
        assert!(validate_unix_address("/var/run/x.sock").is_ok());
        assert!(validate_unix_address("@abstract").is_ok());
        assert!(validate_unix_address("relative").is_err());
        assert!(validate_unix_address("/dir/").is_err());
        assert!(validate_unix_address("").is_err());
    }
}
