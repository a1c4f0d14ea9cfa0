//! Hash maps and sets keyed by names: resource, cluster and host names from configuration and
//! from proxies' subscriptions. foldhash instead of std's SipHash, which was ~22 % of the
//! server's instructions in the 100-proxy benchmark (docs/benchmarks.md, session 9): SipHash
//! is built to resist keys chosen to collide, and here the keys come from the API server and
//! from authenticated proxies, whose requests are bounded in size. The seed is still random
//! per process, so collisions cannot be precomputed.

/// A `HashMap` with foldhash's fast, randomly seeded hasher.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A `HashSet` with foldhash's fast, randomly seeded hasher.
pub type FastSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

/// The hasher for resource versions (a hash of the encoded content): the same in every
/// process and run, so a restarted server names unchanged resources as before and a
/// reconnecting proxy's `initial_resource_versions` still match. foldhash's quality variant
/// with a fixed seed; SipHash with std's fixed keys cost as much per byte as the rest of
/// versioning a route configuration.
pub fn content_hasher() -> foldhash::quality::FoldHasher<'static> {
    use std::hash::BuildHasher;
    foldhash::quality::FixedState::with_seed(0x6361_7073_7461_6e31).build_hasher()
}
