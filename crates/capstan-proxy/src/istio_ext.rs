//! Istio's own proxy extensions, as istiod puts them in the xDS it sends Envoy: filters that
//! exist only in Istio's build of Envoy and serve its telemetry. `capstan proxy` computes
//! Istio's standard metrics and peer labels natively (see [`crate::istio_metrics`]), so these
//! filters are accepted as telemetry-only and do nothing on the data path:
//!
//! - `istio.metadata_exchange`, HTTP (`io.istio.http.peer_metadata.Config`): peer metadata in
//!   `x-envoy-peer-metadata` headers;
//! - `istio.metadata_exchange`, network, on listeners and as a cluster's upstream filter
//!   (`envoy.tcp.metadataexchange.config.MetadataExchange`, protocol `istio-peer-exchange`):
//!   peer metadata exchanged in-band at the start of a TCP stream — but only when the TLS
//!   handshake negotiated ALPN `istio-peer-exchange`, which this proxy never offers nor selects
//!   (see [`without_peer_exchange`]), so no peer ever sends it the in-band header;
//! - `istio.stats` (HTTP and network, `stats.PluginConfig`) and Envoy's
//!   `envoy.filters.http.grpc_stats`: counters only;
//! - `istio.alpn` (`istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig`): overrides the
//!   upstream ALPN by HTTP version (`istio-http/1.1`, `istio-h2`) so that an Envoy server picks
//!   its HTTP filter chain; not applied yet (the upstream offers the cluster's ALPN).
//!
//! Anything else Istio-specific stays a NACK by name.

use envoy_types::pb::google::protobuf::Any;
use prost::Message;

/// `udpa.type.v1.TypedStruct` and its successor `xds.type.v3.TypedStruct`: an untyped config
/// (a `Struct`) labelled with the type it stands for.
const TYPED_STRUCTS: [&str; 2] = [
    "type.googleapis.com/udpa.type.v1.TypedStruct",
    "type.googleapis.com/xds.type.v3.TypedStruct",
];

/// The part of a TypedStruct read here: the type it stands for (field 1).
#[derive(Clone, PartialEq, Message)]
struct TypedStructType {
    #[prost(string, tag = "1")]
    type_url: String,
}

/// The type a filter's config stands for: the TypedStruct's inner type, else the Any's.
pub fn config_type(any: &Any) -> String {
    if TYPED_STRUCTS.contains(&any.type_url.as_str()) {
        if let Ok(t) = TypedStructType::decode(any.value.as_slice()) {
            return t.type_url;
        }
    }
    any.type_url.clone()
}

const PEER_METADATA_HTTP: &str = "type.googleapis.com/io.istio.http.peer_metadata.Config";
const METADATA_EXCHANGE_TCP: &str =
    "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange";
const STATS: &str = "type.googleapis.com/stats.PluginConfig";
const GRPC_STATS: &str =
    "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig";
const ALPN: &str = "type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig";

/// Whether an HTTP filter is one of Istio's telemetry-only filters (accepted, no effect).
pub fn telemetry_http_filter(name: &str, any: Option<&Any>) -> bool {
    let t = any.map(config_type).unwrap_or_default();
    match t.as_str() {
        PEER_METADATA_HTTP | STATS | GRPC_STATS | ALPN => true,
        "" => matches!(
            name,
            "istio.metadata_exchange"
                | "istio.stats"
                | "envoy.filters.http.grpc_stats"
                | "istio.alpn"
        ),
        _ => false,
    }
}

/// Whether a network filter (listener or cluster upstream filter) is one of Istio's
/// telemetry-only filters.
pub fn telemetry_network_filter(name: &str, any: Option<&Any>) -> bool {
    let t = any.map(config_type).unwrap_or_default();
    match t.as_str() {
        METADATA_EXCHANGE_TCP | STATS => true,
        "" => matches!(name, "istio.metadata_exchange" | "istio.stats"),
        _ => false,
    }
}

/// The ALPN protocol of Istio's in-band metadata exchange.
pub const PEER_EXCHANGE_ALPN: &str = "istio-peer-exchange";

/// An ALPN list without `istio-peer-exchange`: negotiating it obliges both ends to exchange
/// metadata in-band, which this proxy does not implement; Istio's peers then settle on `istio`
/// (clients) or no ALPN (servers), exactly as with a peer that does not offer it.
pub fn without_peer_exchange<T: AsRef<[u8]>>(alpn: impl IntoIterator<Item = T>) -> Vec<Vec<u8>> {
    alpn.into_iter()
        .map(|p| p.as_ref().to_vec())
        .filter(|p| p.as_slice() != PEER_EXCHANGE_ALPN.as_bytes())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::Struct;

    #[derive(Clone, PartialEq, Message)]
    struct TypedStruct {
        #[prost(string, tag = "1")]
        type_url: String,
        #[prost(message, optional, tag = "2")]
        value: Option<Struct>,
    }

    fn typed_struct(inner: &str) -> Any {
        Any {
            type_url: TYPED_STRUCTS[0].into(),
            value: TypedStruct {
                type_url: inner.into(),
                value: Some(Struct::default()),
            }
            .encode_to_vec(),
        }
    }

    #[test]
    fn istios_telemetry_filters_are_recognised_by_their_inner_type() {
        let mx = typed_struct(PEER_METADATA_HTTP);
        assert_eq!(config_type(&mx), PEER_METADATA_HTTP);
        assert!(telemetry_http_filter("istio.metadata_exchange", Some(&mx)));
        assert!(telemetry_http_filter("anything", Some(&typed_struct(ALPN))));
        let tcp = typed_struct(METADATA_EXCHANGE_TCP);
        assert!(telemetry_network_filter(
            "istio.metadata_exchange",
            Some(&tcp)
        ));
        assert!(!telemetry_http_filter(
            "istio.metadata_exchange",
            Some(&tcp)
        ));
        // A TypedStruct standing for something else is not waved through by its name.
        let other = typed_struct("type.googleapis.com/envoy.extensions.wasm.v3.PluginConfig");
        assert!(!telemetry_http_filter(
            "istio.metadata_exchange",
            Some(&other)
        ));
        assert!(!telemetry_network_filter(
            "istio.metadata_exchange",
            Some(&other)
        ));
        let plain = Any {
            type_url: GRPC_STATS.into(),
            value: vec![],
        };
        assert!(telemetry_http_filter(
            "envoy.filters.http.grpc_stats",
            Some(&plain)
        ));
    }

    #[test]
    fn peer_exchange_is_never_offered_or_selected() {
        assert_eq!(
            without_peer_exchange(["istio-peer-exchange", "istio"]),
            [b"istio".to_vec()]
        );
        assert_eq!(
            without_peer_exchange(["istio-peer-exchange", "h2", "http/1.1"]),
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }
}
