//! Forwarding headers on the way in, as Envoy's connection manager sets them:
//! `x-forwarded-for`, `x-forwarded-proto`, `x-request-id`, `x-envoy-internal`, and removal of
//! `x-envoy-*` headers from untrusted (external) requests, and `x-forwarded-client-cert`.

use super::{names, Downstream, HcmConfig};
use http::header::Entry;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

/// Whether an address is internal (RFC 1918, loopback, link-local, unique-local), as Envoy's
/// default `internal_address_config`.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_loopback() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_internal(IpAddr::V4(v4)))
        }
    }
}

/// A random UUID v4, for `x-request-id` (Envoy's format: lowercase hex, 8-4-4-4-12).
pub fn uuid4() -> String {
    String::from_utf8_lossy(&uuid4_bytes()).into_owned()
}

/// [`uuid4`] as ASCII bytes, written in place: it runs once per request, so no formatting.
fn uuid4_bytes() -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b: [u8; 16] = fastrand::u128(..).to_le_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = [b'-'; 36];
    let mut at = 0;
    for (i, x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            at += 1;
        }
        out[at] = HEX[usize::from(x >> 4)];
        out[at + 1] = HEX[usize::from(x & 0x0f)];
        at += 2;
    }
    out
}

/// The trusted client address: the peer with `use_remote_address`, else the XFF entry
/// `xff_num_trusted_hops` from the right.
pub fn client_ip(hcm: &HcmConfig, headers: &HeaderMap, down: &Downstream) -> Option<IpAddr> {
    if hcm.use_remote_address {
        return Some(down.peer.ip());
    }
    let xff = super::super::route::matcher::header_value(headers, "x-forwarded-for")?;
    let hops: Vec<&str> = xff.split(',').map(str::trim).collect();
    let idx = hops
        .len()
        .checked_sub(1 + hcm.xff_num_trusted_hops as usize)?;
    hops.get(idx)?.parse().ok()
}

/// `x-forwarded-for` with `ip` appended to `old`'s entries; an IPv4 address is written
/// digit by digit (this runs on every request at a gateway: no formatting machinery).
fn xff_appended(old: Option<&str>, ip: IpAddr) -> Option<HeaderValue> {
    let mut v = Vec::with_capacity(old.map_or(0, |o| o.len() + 1) + 15);
    if let Some(o) = old {
        v.extend_from_slice(o.as_bytes());
        v.push(b',');
    }
    match ip {
        IpAddr::V4(a) => {
            for (i, octet) in a.octets().into_iter().enumerate() {
                if i > 0 {
                    v.push(b'.');
                }
                if octet >= 100 {
                    v.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    v.push(b'0' + octet / 10 % 10);
                }
                v.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(a) => {
            use std::io::Write as _;
            let _ = write!(v, "{a}");
        }
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from(v)).ok()
}

/// Edits request headers on arrival; returns whether the request is internal (its `x-envoy-*`
/// headers are honoured).
pub fn on_request(hcm: &HcmConfig, headers: &mut HeaderMap, down: &Downstream) -> bool {
    let client = client_ip(hcm, headers, down);
    let internal = client.is_some_and(is_internal);
    if hcm.use_remote_address {
        if !internal {
            // Envoy removes x-envoy-* headers from external requests.
            let names: Vec<_> = headers
                .keys()
                .filter(|k| k.as_str().starts_with("x-envoy-"))
                .cloned()
                .collect();
            for n in names {
                headers.remove(n);
            }
        } else {
            headers.insert(names::X_ENVOY_INTERNAL, HeaderValue::from_static("true"));
        }
        if !hcm.skip_xff_append {
            // One lookup for the read and the write (the name is hashed once).
            match headers.entry(names::X_FORWARDED_FOR) {
                Entry::Occupied(mut e) => {
                    let old = e.get().to_str().ok().filter(|v| !v.is_empty());
                    if let Some(v) = xff_appended(old, down.peer.ip()) {
                        e.insert(v);
                    }
                }
                Entry::Vacant(e) => {
                    if let Some(v) = xff_appended(None, down.peer.ip()) {
                        e.insert(v);
                    }
                }
            }
        }
        let proto = if down.tls { "https" } else { "http" };
        headers.insert(names::X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    } else if !headers.contains_key(names::X_FORWARDED_PROTO) {
        let proto = if down.tls { "https" } else { "http" };
        headers.insert(names::X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if hcm.generate_request_id {
        let keep_id = internal || hcm.preserve_external_request_id || !hcm.use_remote_address;
        let new_id = || HeaderValue::from_bytes(&uuid4_bytes()).ok();
        match headers.entry(names::X_REQUEST_ID) {
            Entry::Occupied(_) if keep_id => {}
            Entry::Occupied(mut e) => {
                if let Some(v) = new_id() {
                    e.insert(v);
                }
            }
            Entry::Vacant(e) => {
                if let Some(v) = new_id() {
                    e.insert(v);
                }
            }
        }
    }
    xfcc(&hcm.xfcc, headers, down);
    internal || !hcm.use_remote_address
}

/// `forward_client_cert_details` (Envoy's enum order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XfccMode {
    /// Remove the header (the default).
    #[default]
    Sanitize,
    /// Forward it untouched on mTLS connections.
    ForwardOnly,
    /// On mTLS, append this hop's client-certificate details.
    AppendForward,
    /// On mTLS, replace it with this hop's details.
    SanitizeSet,
    /// Forward it untouched, mTLS or not.
    AlwaysForwardOnly,
}

/// `forward_client_cert_details` with `set_current_client_cert_details`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Xfcc {
    /// The mode.
    pub mode: XfccMode,
    /// Add `Cert="…"` (the leaf, URL-encoded PEM).
    pub cert: bool,
    /// Add `Chain="…"` (every presented certificate, URL-encoded PEM).
    pub chain: bool,
    /// Add `Subject="…"`.
    pub subject: bool,
    /// Add `URI=…`.
    pub uri: bool,
    /// Add `DNS=…` (one per DNS SAN).
    pub dns: bool,
}

const XFCC: HeaderName = names::X_FORWARDED_CLIENT_CERT;

impl Xfcc {
    /// Reads the two fields of a connection manager.
    pub fn compile(
        h: &envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager,
    ) -> Result<Xfcc, crate::CompileError> {
        let mode = match h.forward_client_cert_details {
            0 => XfccMode::Sanitize,
            1 => XfccMode::ForwardOnly,
            2 => XfccMode::AppendForward,
            3 => XfccMode::SanitizeSet,
            4 => XfccMode::AlwaysForwardOnly,
            n => {
                return Err(crate::CompileError::new(
                    "forward_client_cert_details",
                    format!("unknown value {n}"),
                ))
            }
        };
        let set = h.set_current_client_cert_details.unwrap_or_default();
        Ok(Xfcc {
            mode,
            cert: set.cert,
            chain: set.chain,
            subject: set.subject.is_some_and(|b| b.value),
            uri: set.uri,
            dns: set.dns,
        })
    }
}

/// Certificates as PEM, percent-encoded as Envoy encodes XFCC's `Cert` and `Chain`: every
/// byte but the URL-unreserved ones (`A-Z a-z 0-9 - . _ ~`) as `%XX`.
fn url_encoded_pem(certs: &[Vec<u8>]) -> String {
    use base64::Engine as _;
    let mut pem = String::new();
    for der in certs {
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    let mut out = String::with_capacity(pem.len() * 3 / 2);
    for b in pem.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// This hop's element: `By=<our URI SAN>;Hash=<sha256>;Cert="…";Chain="…";Subject="…";URI=…;DNS=…`
/// (Envoy's order).
fn xfcc_element(cfg: &Xfcc, peer: &crate::identity::PeerCert) -> String {
    let mut parts = Vec::with_capacity(5);
    if let Some(by) = crate::identity::Identity::workload()
        .current()
        .and_then(|m| m.spiffe.clone())
    {
        parts.push(format!("By={by}"));
    }
    parts.push(format!("Hash={}", peer.hash));
    if cfg.cert {
        if let Some(leaf) = peer.chain.first() {
            parts.push(format!(
                "Cert=\"{}\"",
                url_encoded_pem(std::slice::from_ref(leaf))
            ));
        }
    }
    if cfg.chain && !peer.chain.is_empty() {
        parts.push(format!("Chain=\"{}\"", url_encoded_pem(&peer.chain)));
    }
    if cfg.subject {
        parts.push(format!("Subject=\"{}\"", peer.subject.replace('"', "\\\"")));
    }
    if cfg.uri {
        if let Some(u) = peer.uris.first() {
            parts.push(format!("URI={u}"));
        }
    }
    if cfg.dns {
        parts.extend(peer.dns.iter().map(|d| format!("DNS={d}")));
    }
    parts.join(";")
}

fn xfcc(cfg: &Xfcc, headers: &mut HeaderMap, down: &Downstream) {
    let mtls = down.peer_cert.as_ref();
    let set = |headers: &mut HeaderMap, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            headers.insert(XFCC, v);
        }
    };
    match (cfg.mode, mtls) {
        (XfccMode::AlwaysForwardOnly, _) | (XfccMode::ForwardOnly, Some(_)) => {}
        (XfccMode::AppendForward, Some(peer)) => {
            let element = xfcc_element(cfg, peer);
            let v = match headers.get(XFCC).and_then(|v| v.to_str().ok()) {
                Some(old) if !old.is_empty() => format!("{old},{element}"),
                _ => element,
            };
            set(headers, v);
        }
        (XfccMode::SanitizeSet, Some(peer)) => set(headers, xfcc_element(cfg, peer)),
        _ => {
            headers.remove(XFCC);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::tests::hcm_config;

    fn down(peer: &str, tls: bool) -> Downstream {
        Downstream {
            peer_cert: None,
            peer: peer.parse().unwrap(),
            local: "10.0.0.9:80".parse().unwrap(),
            tls,
            buffer_limit: crate::listener::DEFAULT_BUFFER_LIMIT,
            alpn_h2: false,
        }
    }

    #[test]
    fn xfcc_cert_and_chain_are_url_encoded_pem() {
        let peer = crate::identity::PeerCert {
            hash: "ab".into(),
            chain: vec![vec![0xfb; 50], vec![1, 2, 3]],
            ..Default::default()
        };
        let cfg = Xfcc {
            mode: XfccMode::SanitizeSet,
            cert: true,
            chain: true,
            subject: false,
            uri: false,
            dns: false,
        };
        let e = xfcc_element(&cfg, &peer);
        // base64 of 50 bytes 0xfb is 68 characters: a 64-character line, then 4 ("+/v7" = %2B%2Fv7).
        let leaf = format!(
            "-----BEGIN%20CERTIFICATE-----%0A{}%0A{}%0A-----END%20CERTIFICATE-----%0A",
            "%2B%2Fv7".repeat(16),
            "%2B%2Fs%3D"
        );
        let second = "-----BEGIN%20CERTIFICATE-----%0AAQID%0A-----END%20CERTIFICATE-----%0A";
        assert_eq!(
            e,
            format!("Hash=ab;Cert=\"{leaf}\";Chain=\"{leaf}{second}\"")
        );
    }

    #[test]
    fn xfcc_modes() {
        let peer = std::sync::Arc::new(crate::identity::PeerCert {
            hash: "ab12".into(),
            uris: vec!["spiffe://cluster.local/ns/default/sa/sleep".into()],
            dns: vec![],
            subject: String::new(),
            chain: vec![],
        });
        let mtls = Downstream {
            peer_cert: Some(peer),
            ..down("10.0.0.1:1", true)
        };
        let run = |mode: XfccMode, d: &Downstream, incoming: Option<&str>| {
            let mut hcm = hcm_config();
            hcm.xfcc = Xfcc {
                mode,
                cert: false,
                chain: false,
                subject: true,
                uri: true,
                dns: true,
            };
            let mut h = HeaderMap::new();
            if let Some(v) = incoming {
                h.insert(XFCC, v.parse().unwrap());
            }
            on_request(&hcm, &mut h, d);
            h.get(XFCC).map(|v| v.to_str().unwrap().to_string())
        };
        let plain = down("10.0.0.1:1", false);
        let element = "Hash=ab12;Subject=\"\";URI=spiffe://cluster.local/ns/default/sa/sleep";
        // The workload identity is unset in unit tests, so there is no By= element.
        assert_eq!(
            run(XfccMode::AppendForward, &mtls, Some("By=x;Hash=1")).as_deref(),
            Some(format!("By=x;Hash=1,{element}").as_str())
        );
        assert_eq!(run(XfccMode::AppendForward, &plain, Some("forged")), None);
        assert_eq!(
            run(XfccMode::SanitizeSet, &mtls, Some("forged")).as_deref(),
            Some(element)
        );
        assert_eq!(run(XfccMode::Sanitize, &mtls, Some("forged")), None);
        assert_eq!(
            run(XfccMode::ForwardOnly, &mtls, Some("kept")).as_deref(),
            Some("kept")
        );
        assert_eq!(run(XfccMode::ForwardOnly, &plain, Some("kept")), None);
        assert_eq!(
            run(XfccMode::AlwaysForwardOnly, &plain, Some("kept")).as_deref(),
            Some("kept")
        );
    }

    #[test]
    fn forwarding_headers_table() {
        // (use_remote_address, peer, incoming xff, incoming x-envoy-retry-on, want xff, want retry header kept, want internal)
        let cases = [
            (
                true,
                "1.2.3.4:1",
                Some("9.9.9.9"),
                true,
                Some("9.9.9.9,1.2.3.4"),
                false,
                false,
            ),
            (true, "10.1.1.1:1", None, true, Some("10.1.1.1"), true, true),
            (
                false,
                "1.2.3.4:1",
                Some("9.9.9.9"),
                true,
                Some("9.9.9.9"),
                true,
                true,
            ),
        ];
        for (i, (ura, peer, xff, retry, want_xff, kept, want_trusted)) in
            cases.into_iter().enumerate()
        {
            let mut hcm = hcm_config();
            hcm.use_remote_address = ura;
            let mut h = HeaderMap::new();
            if let Some(x) = xff {
                h.insert("x-forwarded-for", x.parse().unwrap());
            }
            if retry {
                h.insert("x-envoy-retry-on", "5xx".parse().unwrap());
            }
            let trusted = on_request(&hcm, &mut h, &down(peer, false));
            assert_eq!(
                h.get("x-forwarded-for").map(|v| v.to_str().unwrap()),
                want_xff,
                "case {i}"
            );
            assert_eq!(h.contains_key("x-envoy-retry-on"), kept, "case {i}");
            assert_eq!(trusted, want_trusted, "case {i}");
            assert_eq!(h["x-forwarded-proto"], "http");
            assert_eq!(h["x-request-id"].len(), 36);
        }
    }

    #[test]
    fn request_id_preserved_when_internal() {
        let hcm = hcm_config();
        let mut h = HeaderMap::new();
        h.insert("x-request-id", "abc".parse().unwrap());
        on_request(&hcm, &mut h, &down("127.0.0.1:1", false));
        assert_eq!(h["x-request-id"], "abc");
        assert_ne!(uuid4(), uuid4());
    }

    #[test]
    fn xff_entries_are_appended() {
        let cases: Vec<(Option<&str>, &str, &str)> = vec![
            (None, "10.0.0.1", "10.0.0.1"),
            (None, "192.168.100.255", "192.168.100.255"),
            (None, "0.9.10.99", "0.9.10.99"),
            (Some("1.2.3.4"), "127.0.0.1", "1.2.3.4,127.0.0.1"),
            (Some("1.2.3.4, 5.6.7.8"), "::1", "1.2.3.4, 5.6.7.8,::1"),
            (None, "fd00::a:1", "fd00::a:1"),
        ];
        for (old, ip, want) in cases {
            let got = xff_appended(old, ip.parse().unwrap()).expect("valid header value");
            assert_eq!(got, want);
        }
    }

    #[test]
    fn request_ids_are_uuid4s() {
        for _ in 0..100 {
            let id = uuid4();
            let groups: Vec<&str> = id.split('-').collect();
            let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
            assert_eq!(lens, [8, 4, 4, 4, 12], "{id}");
            assert!(
                id.bytes()
                    .all(|c| c == b'-' || c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
                "{id}"
            );
            assert!(groups[2].starts_with('4'), "version 4: {id}");
            assert!(
                groups[3].starts_with(['8', '9', 'a', 'b']),
                "RFC 4122 variant: {id}"
            );
        }
    }
}
