//! The wire format as the simulated proxy speaks it: gRPC message framing, the requests it
//! sends, and a `DeltaDiscoveryResponse` read as its envelope (type, nonce, names, versions)
//! with the resource bodies left as slices of the received bytes.

use anyhow::{bail, Result};
use bytes::{Buf, Bytes, BytesMut};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use prost::Message;

/// Largest response accepted (the initial CDS response of a 1,000-service mesh is ~1 MiB).
const MAX_MESSAGE: usize = 64 << 20;

/// A `DeltaDiscoveryResponse` as the client reads it (field numbers from
/// `envoy/service/discovery/v3/discovery.proto`; the fields it does not use are skipped).
#[derive(Clone, PartialEq, Message)]
pub(crate) struct Envelope {
    #[prost(message, repeated, tag = "2")]
    pub(crate) resources: Vec<EnvelopeResource>,
    #[prost(string, tag = "4")]
    pub(crate) type_url: String,
    #[prost(string, tag = "5")]
    pub(crate) nonce: String,
    #[prost(string, repeated, tag = "6")]
    pub(crate) removed_resources: Vec<String>,
}

/// A `Resource`: name, version and the packed `Any`. The name and version are strings on the
/// wire, read as slices of the received message (a proxy receives ~4,000 a sync: no
/// allocation or UTF-8 check for each).
#[derive(Clone, PartialEq, Message)]
pub(crate) struct EnvelopeResource {
    #[prost(bytes = "bytes", tag = "1")]
    pub(crate) version: Bytes,
    #[prost(message, optional, tag = "2")]
    pub(crate) resource: Option<PackedAny>,
    #[prost(bytes = "bytes", tag = "3")]
    pub(crate) name: Bytes,
}

impl EnvelopeResource {
    /// The name as text.
    pub(crate) fn name_text(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// A `google.protobuf.Any` whose value stays a slice of the received message.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct PackedAny {
    #[prost(string, tag = "1")]
    pub(crate) type_url: String,
    #[prost(bytes = "bytes", tag = "2")]
    pub(crate) value: Bytes,
}

/// A gRPC message frame: uncompressed flag, big-endian length, the message.
pub(crate) fn frame(req: &DeltaDiscoveryRequest) -> Bytes {
    let len = req.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.extend_from_slice(&[0]);
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    req.encode(&mut buf)
        .expect("a BytesMut with the message's capacity");
    buf.freeze()
}

pub(crate) fn request(
    type_url: &str,
    nonce: &str,
    subscribe: Vec<String>,
    node: Option<Node>,
) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node,
        type_url: type_url.to_string(),
        response_nonce: nonce.to_string(),
        resource_names_subscribe: subscribe,
        ..DeltaDiscoveryRequest::default()
    }
}

/// Takes the next complete gRPC message off the front of `buf`.
pub(crate) fn next_message(buf: &mut BytesMut) -> Result<Option<Bytes>> {
    if buf.len() < 5 {
        return Ok(None);
    }
    if buf[0] != 0 {
        bail!(
            "compressed gRPC message (flag {}); none was asked for",
            buf[0]
        );
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > MAX_MESSAGE {
        bail!("gRPC message of {len} bytes");
    }
    if buf.len() < 5 + len {
        buf.reserve(5 + len - buf.len());
        return Ok(None);
    }
    buf.advance(5);
    Ok(Some(buf.split_to(len).freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{CLUSTER, ENDPOINT, ROUTE};
    use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, Resource};
    use envoy_types::pb::google::protobuf::Any;

    #[test]
    fn envelope_reads_what_the_full_message_holds() {
        let full = DeltaDiscoveryResponse {
            system_version_info: "7".into(),
            type_url: ENDPOINT.into(),
            nonce: "n-1".into(),
            removed_resources: vec!["gone".into()],
            resources: vec![Resource {
                name: "outbound|80||a".into(),
                version: "3".into(),
                resource: Some(Any {
                    type_url: ENDPOINT.into(),
                    value: vec![1, 2, 3],
                }),
                ..Resource::default()
            }],
            ..DeltaDiscoveryResponse::default()
        };
        let e = Envelope::decode(Bytes::from(full.encode_to_vec())).unwrap();
        assert_eq!(e.type_url, ENDPOINT);
        assert_eq!(e.nonce, "n-1");
        assert_eq!(e.removed_resources, vec!["gone".to_string()]);
        assert_eq!(e.resources[0].name_text(), "outbound|80||a");
        assert_eq!(e.resources[0].version, "3");
        assert_eq!(
            e.resources[0].resource.as_ref().unwrap().value,
            &[1, 2, 3][..]
        );
    }

    #[test]
    fn frames_split_and_joined() {
        let a = frame(&request(CLUSTER, "x", vec![], None));
        let b = frame(&request(ROUTE, "y", vec!["80".into()], None));
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&a[..3]);
        assert!(next_message(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&a[3..]);
        buf.extend_from_slice(&b);
        let m1 = next_message(&mut buf).unwrap().unwrap();
        let m2 = next_message(&mut buf).unwrap().unwrap();
        assert!(next_message(&mut buf).unwrap().is_none());
        assert_eq!(
            DeltaDiscoveryRequest::decode(m1).unwrap().response_nonce,
            "x"
        );
        assert_eq!(DeltaDiscoveryRequest::decode(m2).unwrap().type_url, ROUTE);
        let mut compressed = BytesMut::from(&[1u8, 0, 0, 0, 0][..]);
        assert!(next_message(&mut compressed).is_err());
    }
}
