//! Hash maps on the request path keyed by names and addresses from configuration (clusters,
//! route tables, virtual-host domains, endpoints): foldhash instead of std's SipHash, which
//! showed as ~2k instructions per request in the proxy's profile (docs/benchmarks.md). Their
//! keys come from xDS, not from requests, so SipHash's flooding resistance buys nothing here;
//! the seed is still random per process.

/// A `HashMap` with foldhash's fast, randomly seeded hasher.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
