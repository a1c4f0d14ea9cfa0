//! STRICT_DNS / LOGICAL_DNS: the inline assignment's hostnames resolved with the system
//! resolver (tokio's `lookup_host`). STRICT_DNS turns every address of a name into a host with
//! the endpoint's weight and health; LOGICAL_DNS uses the first address only. The cluster
//! resolves when a pick finds the result older than `dns_refresh_rate` (after a failure,
//! `dns_failure_refresh_rate`), keeping the previous hosts when resolution fails.

use super::endpoints::{EndpointSet, Host, HostAddress};
use std::net::SocketAddr;
use std::time::Duration;

/// `dns_lookup_family`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupFamily {
    /// IPv6 when the name has any, else IPv4.
    Auto,
    /// IPv4 only.
    V4Only,
    /// IPv6 only.
    V6Only,
    /// IPv4 when the name has any, else IPv6.
    V4Preferred,
    /// Every address.
    All,
}

/// How a DNS cluster resolves.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsConfig {
    /// `dns_refresh_rate` (default 5s).
    pub refresh: Duration,
    /// `dns_failure_refresh_rate.base_interval` (default: the refresh rate).
    pub failure_refresh: Duration,
    /// `dns_jitter`: up to this much is added to each refresh.
    pub jitter: Duration,
    /// `dns_lookup_family`.
    pub family: LookupFamily,
    /// LOGICAL_DNS: first address only.
    pub logical: bool,
}

/// Bounds one lookup, so a stuck resolver does not hold requests forever.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Keeps the addresses of the family asked for.
pub fn filter_family(addrs: Vec<SocketAddr>, family: LookupFamily) -> Vec<SocketAddr> {
    let (v4, v6): (Vec<_>, Vec<_>) = addrs.into_iter().partition(|a| a.is_ipv4());
    match family {
        LookupFamily::V4Only => v4,
        LookupFamily::V6Only => v6,
        LookupFamily::Auto if !v6.is_empty() => v6,
        LookupFamily::Auto => v4,
        LookupFamily::V4Preferred if !v4.is_empty() => v4,
        LookupFamily::V4Preferred => v6,
        LookupFamily::All => v4.into_iter().chain(v6).collect(),
    }
}

/// Replaces each named host of `set` with its resolved addresses.
pub async fn resolve(set: &EndpointSet, config: &DnsConfig) -> Result<EndpointSet, String> {
    let mut out = set.clone();
    for level in &mut out.priorities {
        for locality in &mut level.localities {
            let mut hosts = Vec::with_capacity(locality.hosts.len());
            for h in &locality.hosts {
                let HostAddress::Name(name, port) = &h.address else {
                    hosts.push(h.clone());
                    continue;
                };
                let found = tokio::time::timeout(
                    LOOKUP_TIMEOUT,
                    tokio::net::lookup_host((name.as_str(), *port)),
                )
                .await
                .map_err(|_| format!("resolving {name}: timed out"))?
                .map_err(|e| format!("resolving {name}: {e}"))?;
                let mut addrs = filter_family(found.collect(), config.family);
                addrs.dedup();
                if config.logical {
                    addrs.truncate(1);
                }
                hosts.extend(addrs.into_iter().map(|a| Host {
                    address: HostAddress::Ip(a),
                    ..h.clone()
                }));
            }
            locality.hosts = hosts;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families() {
        let v4: SocketAddr = "10.0.0.1:80".parse().expect("literal");
        let v6: SocketAddr = "[::1]:80".parse().expect("literal");
        let cases = [
            (LookupFamily::V4Only, vec![v4]),
            (LookupFamily::V6Only, vec![v6]),
            (LookupFamily::Auto, vec![v6]),
            (LookupFamily::V4Preferred, vec![v4]),
            (LookupFamily::All, vec![v4, v6]),
        ];
        for (family, want) in cases {
            assert_eq!(filter_family(vec![v6, v4], family), want, "{family:?}");
        }
    }

    #[tokio::test]
    async fn resolves_names_keeping_weights() {
        let set = super::super::endpoints::compile_with(
            &super::super::endpoints::tests::cla(vec![
                super::super::endpoints::tests::lb_endpoint("localhost", 8080),
                super::super::endpoints::tests::lb_endpoint("10.0.0.9", 80),
            ]),
            true,
        )
        .expect("names allowed");
        let config = DnsConfig {
            refresh: Duration::from_secs(5),
            failure_refresh: Duration::from_secs(5),
            jitter: Duration::ZERO,
            family: LookupFamily::V4Only,
            logical: true,
        };
        let out = resolve(&set, &config).await.expect("localhost resolves");
        let addrs: Vec<_> = out.addresses().collect();
        assert_eq!(
            addrs,
            vec![
                "127.0.0.1:8080".parse::<SocketAddr>().expect("literal"),
                "10.0.0.9:80".parse().expect("literal")
            ]
        );
    }
}
