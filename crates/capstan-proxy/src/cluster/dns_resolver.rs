//! A cluster's `typed_dns_resolver_config`. The proxy resolves DNS clusters with the system
//! resolver (see [`super::dns`]), so a resolver config is accepted only when resolving with it
//! gives the same answers: options that tune the transport, timing or load of the queries are
//! accepted and ignored; anything that changes which server answers or which names are asked
//! is NACKed by path. istiod sets c-ares with `udp_max_queries` on every DNS cluster
//! (`cluster_builder.go`, `PILOT_DNS_CARES_UDP_MAX_QUERIES`).

use crate::CompileError;
use envoy_types::pb::envoy::config::core::v3::{DnsResolverOptions, TypedExtensionConfig};
use envoy_types::pb::envoy::extensions::network::dns_resolver::cares::v3::CaresDnsResolverConfig;
use envoy_types::pb::envoy::extensions::network::dns_resolver::getaddrinfo::v3::GetAddrInfoDnsResolverConfig;
use prost::{Message, Name};

/// Checks a `typed_dns_resolver_config` (paths relative to it).
pub fn check(t: &TypedExtensionConfig) -> Result<(), CompileError> {
    let Some(any) = &t.typed_config else {
        return Err(CompileError::new("typed_config", "is required"));
    };
    let decode_err =
        |e: prost::DecodeError| CompileError::new("typed_config", format!("cannot decode: {e}"));
    if any.type_url == CaresDnsResolverConfig::type_url() {
        let c = CaresDnsResolverConfig::decode(any.value.as_slice()).map_err(decode_err)?;
        cares(&c).map_err(|e| e.within("typed_config"))
    } else if any.type_url == GetAddrInfoDnsResolverConfig::type_url() {
        // The system's getaddrinfo() is what the proxy uses: `num_retries` and
        // `num_resolver_threads` only pace it (each lookup is bounded by the proxy's own
        // timeout).
        GetAddrInfoDnsResolverConfig::decode(any.value.as_slice())
            .map(|_| ())
            .map_err(decode_err)
    } else {
        Err(CompileError::new(
            "typed_config",
            format!(
                "DNS resolver {} ({}) is not supported",
                t.name, any.type_url
            ),
        ))
    }
}

/// c-ares: accepted when it asks the system's name servers for the same names.
fn cares(c: &CaresDnsResolverConfig) -> Result<(), CompileError> {
    // `resolvers` replaces the system's name servers (or backs them up with
    // `use_resolvers_as_fallback`, which then matters when the system has none): other answers.
    if !c.resolvers.is_empty() {
        return Err(CompileError::new(
            "resolvers",
            "custom name servers are not supported (the proxy uses the system resolver)",
        ));
    }
    // Dropping the addresses of a family the host has no interface for changes the host set.
    if c.filter_unroutable_families {
        return Err(CompileError::new(
            "filter_unroutable_families",
            "is not supported (the proxy uses the system resolver)",
        ));
    }
    if let Some(o) = &c.dns_resolver_options {
        options(o).map_err(|e| e.within("dns_resolver_options"))?;
    }
    // Accepted and ignored, as they do not change the answers: `use_resolvers_as_fallback`
    // (no resolvers listed), `udp_max_queries` (queries per UDP socket), `query_timeout_seconds`
    // and `query_tries` (how long to wait; each lookup is bounded by the proxy's own timeout),
    // `rotate_nameservers` (which of the same servers is asked first),
    // `edns0_max_payload_size`, `max_udp_channel_duration` and `reinit_channel_on_timeout`
    // (the transport), `qcache_max_ttl` (caching within the records' own TTL).
    Ok(())
}

/// `DnsResolverOptions`: TCP instead of UDP carries the same answers; skipping the search
/// domains asks for other names.
fn options(o: &DnsResolverOptions) -> Result<(), CompileError> {
    if o.no_default_search_domain {
        return Err(CompileError::new(
            "no_default_search_domain",
            "is not supported (the system resolver applies the search domains)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::{
        address, socket_address, Address, SocketAddress,
    };
    use envoy_types::pb::google::protobuf::{Any, UInt32Value};

    fn typed(name: &str, type_url: String, value: Vec<u8>) -> TypedExtensionConfig {
        TypedExtensionConfig {
            name: name.into(),
            typed_config: Some(Any { type_url, value }),
        }
    }

    fn cares_config(c: CaresDnsResolverConfig) -> TypedExtensionConfig {
        typed(
            "envoy.network.dns_resolver.cares",
            CaresDnsResolverConfig::type_url(),
            c.encode_to_vec(),
        )
    }

    #[test]
    fn accepts_what_keeps_the_answers_and_nacks_the_rest() {
        let resolver = Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "10.0.0.53".into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(53)),
                ..SocketAddress::default()
            })),
        };
        let opts = |tcp, no_search| {
            Some(DnsResolverOptions {
                use_tcp_for_dns_lookups: tcp,
                no_default_search_domain: no_search,
            })
        };
        let cases: Vec<(&str, TypedExtensionConfig, Option<&str>)> = vec![
            (
                "istiod's",
                cares_config(CaresDnsResolverConfig {
                    udp_max_queries: Some(UInt32Value { value: 100 }),
                    ..CaresDnsResolverConfig::default()
                }),
                None,
            ),
            (
                "timing and transport",
                cares_config(CaresDnsResolverConfig {
                    use_resolvers_as_fallback: true,
                    dns_resolver_options: opts(true, false),
                    query_tries: Some(UInt32Value { value: 2 }),
                    rotate_nameservers: true,
                    reinit_channel_on_timeout: true,
                    ..CaresDnsResolverConfig::default()
                }),
                None,
            ),
            (
                "custom name servers",
                cares_config(CaresDnsResolverConfig {
                    resolvers: vec![resolver],
                    use_resolvers_as_fallback: true,
                    ..CaresDnsResolverConfig::default()
                }),
                Some("typed_config.resolvers"),
            ),
            (
                "no search domains",
                cares_config(CaresDnsResolverConfig {
                    dns_resolver_options: opts(false, true),
                    ..CaresDnsResolverConfig::default()
                }),
                Some("typed_config.dns_resolver_options.no_default_search_domain"),
            ),
            (
                "unroutable families filtered",
                cares_config(CaresDnsResolverConfig {
                    filter_unroutable_families: true,
                    ..CaresDnsResolverConfig::default()
                }),
                Some("typed_config.filter_unroutable_families"),
            ),
            (
                "getaddrinfo",
                typed(
                    "envoy.network.dns_resolver.getaddrinfo",
                    GetAddrInfoDnsResolverConfig::type_url(),
                    GetAddrInfoDnsResolverConfig {
                        num_retries: Some(UInt32Value { value: 3 }),
                        num_resolver_threads: None,
                    }
                    .encode_to_vec(),
                ),
                None,
            ),
            (
                "another resolver",
                typed(
                    "envoy.network.dns_resolver.apple",
                    "type.googleapis.com/envoy.extensions.network.dns_resolver.apple.v3.AppleDnsResolverConfig".into(),
                    vec![],
                ),
                Some("typed_config"),
            ),
            (
                "no config",
                TypedExtensionConfig {
                    name: "envoy.network.dns_resolver.cares".into(),
                    typed_config: None,
                },
                Some("typed_config"),
            ),
        ];
        for (what, config, want) in cases {
            let got = check(&config).err().map(|e| e.path);
            assert_eq!(got.as_deref(), want, "{what}");
        }
    }
}
