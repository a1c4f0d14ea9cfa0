//! Generated xDS resources and the type URLs Capstan serves.
//!
//! A [`Resource`] is encoded once, when it is generated, as the `google.protobuf.Any` that goes
//! on the wire; responses to every proxy share those bytes (see [`crate::server`]'s wire
//! messages), so a push to a thousand proxies encodes each resource once and copies it only
//! into each stream's output buffer.
//!
//! A body can be made of parts ([`Body`]): a sidecar's route configuration is its own few
//! fields, then the encoded virtual hosts that the push's cache holds anyway, so the
//! configurations of ten namespaces share one copy of each virtual host instead of holding
//! ten concatenations of them.

use bytes::Bytes;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// `type.googleapis.com/envoy.config.listener.v3.Listener`
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// `type.googleapis.com/envoy.config.route.v3.RouteConfiguration`
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// `type.googleapis.com/envoy.config.cluster.v3.Cluster`
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// `type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment`
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// `type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret` (SDS over ADS: the
/// gateways' `credentialName` secrets, `kubernetes://<name>`).
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// Envoy's xDS types Capstan generates, in the order Envoy wants them pushed (CDS before EDS,
/// LDS before RDS) to avoid traffic drops during updates; secrets last, as istiod pushes them.
/// A generator may serve other types besides ([`crate::Generator::extra_types`]), pushed after
/// these.
pub const PUSH_ORDER: [&str; 5] = [CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET];

/// Whether `type_url` is one of Envoy's xDS types ([`PUSH_ORDER`]).
pub fn is_xds_type(type_url: &str) -> bool {
    PUSH_ORDER.contains(&type_url)
}

/// True for types whose subscription without names means "everything" (wildcard): as istiod's
/// `IsWildcardTypeURL`, every type but those the xDS spec makes named-only (EDS, RDS, SDS).
pub fn is_wildcard_type(type_url: &str) -> bool {
    !matches!(type_url, ENDPOINT | ROUTE | SECRET)
}

/// One named resource, encoded, with a version that changes exactly when its content does.
/// Generators hand out `Arc<Resource>`s: one generated resource is shared by every proxy that
/// gets it and by every connection's record of what it sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    /// Resource name (`outbound|9080||reviews.default.svc.cluster.local`, `0.0.0.0_9080`, `9080`).
    pub name: String,
    /// Content hash of the encoded resource (sent as 16 hex digits).
    pub version: u64,
    /// The encoded `google.protobuf.Any` holding the resource.
    pub body: Body,
    /// Where the name was last found in a connection's record of what it was sent.
    pub(crate) sent_at: Hint,
    /// Where the name was last found in a connection's subscribed names.
    pub(crate) subscribed_at: Hint,
}

/// Where a name was last found in a sorted per-connection list. A thousand connections hold
/// the same names in the same order, so the next connection usually finds the name at the
/// same index with one comparison instead of a binary search (whose dozen probes into each
/// connection's own list are cache misses, the largest cost of an endpoints-only push). Only
/// a hint: it is checked before use, and it never takes part in equality.
#[derive(Debug)]
pub(crate) struct Hint(std::sync::atomic::AtomicU32);

impl Default for Hint {
    fn default() -> Hint {
        Hint(std::sync::atomic::AtomicU32::new(u32::MAX))
    }
}

impl Clone for Hint {
    fn clone(&self) -> Hint {
        Hint(std::sync::atomic::AtomicU32::new(self.get() as u32))
    }
}

impl PartialEq for Hint {
    fn eq(&self, _: &Hint) -> bool {
        true
    }
}

impl Eq for Hint {}

impl Hint {
    pub(crate) fn get(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed) as usize
    }

    pub(crate) fn set(&self, at: usize) {
        self.0.store(
            at.min(u32::MAX as usize) as u32,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// The index of `name` in `list` (sorted by `key`), as `binary_search_by` gives it, trying
    /// the hinted index first and remembering where it was found.
    pub(crate) fn search<T>(
        &self,
        list: &[T],
        name: &str,
        key: impl Fn(&T) -> &str,
    ) -> Result<usize, usize> {
        let at = self.get();
        if list.get(at).is_some_and(|t| key(t) == name) {
            return Ok(at);
        }
        let found = list.binary_search_by(|t| key(t).cmp(name));
        if let Ok(i) = found {
            self.set(i);
        }
        found
    }
}

impl Resource {
    /// Packs a message under `name`, versioning it by a hash of its encoding.
    pub fn new<M: Message + prost::Name>(name: impl Into<String>, message: &M) -> Resource {
        let value = message.encode_to_vec();
        let mut hasher = crate::fast::content_hasher();
        value.hash(&mut hasher);
        let any = Any {
            type_url: M::type_url(),
            value,
        };
        Resource {
            name: name.into(),
            version: hasher.finish(),
            body: Body::One(Bytes::from(any.encode_to_vec())),
            sent_at: Hint::default(),
            subscribed_at: Hint::default(),
        }
    }

    /// A resource from an already encoded message of type `type_url` (for messages assembled
    /// from cached encoded parts).
    pub fn from_encoded(name: impl Into<String>, type_url: &str, value: Vec<u8>) -> Resource {
        let mut hasher = crate::fast::content_hasher();
        value.hash(&mut hasher);
        Resource::with_version(name, type_url, &value, hasher.finish())
    }

    /// A resource from an encoded message and a version the caller derived from its content
    /// (e.g. from the versions of the parts it was assembled from).
    pub fn with_version(
        name: impl Into<String>,
        type_url: &str,
        value: &[u8],
        version: u64,
    ) -> Resource {
        use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
        // google.protobuf.Any: type_url = 1, value = 2, written directly (no second copy).
        let mut body = Vec::with_capacity(
            type_url.len() + value.len() + 2 + encoded_len_varint(value.len() as u64) + 8,
        );
        encode_key(1, WireType::LengthDelimited, &mut body);
        encode_varint(type_url.len() as u64, &mut body);
        body.extend_from_slice(type_url.as_bytes());
        encode_key(2, WireType::LengthDelimited, &mut body);
        encode_varint(value.len() as u64, &mut body);
        body.extend_from_slice(value);
        Resource {
            name: name.into(),
            version,
            body: Body::One(Bytes::from(body)),
            sent_at: Hint::default(),
            subscribed_at: Hint::default(),
        }
    }

    /// A resource whose encoded message of type `type_url` is `head` followed by `parts`, kept
    /// as they are (not copied into one buffer), with a version the caller derived from their
    /// content as for [`Resource::with_version`].
    pub fn from_parts(
        name: impl Into<String>,
        type_url: &str,
        head: &[u8],
        parts: impl IntoIterator<Item = Bytes>,
        version: u64,
    ) -> Resource {
        use prost::encoding::{encode_key, encode_varint, WireType};
        let mut all = vec![Bytes::new()];
        all.extend(parts.into_iter().filter(|p| !p.is_empty()));
        let value_len = head.len() + all.iter().map(Bytes::len).sum::<usize>();
        // google.protobuf.Any: type_url = 1, value = 2; the first part is the Any's framing
        // and `head`.
        let mut first = Vec::with_capacity(type_url.len() + head.len() + 2 + 10 + 8);
        encode_key(1, WireType::LengthDelimited, &mut first);
        encode_varint(type_url.len() as u64, &mut first);
        first.extend_from_slice(type_url.as_bytes());
        encode_key(2, WireType::LengthDelimited, &mut first);
        encode_varint(value_len as u64, &mut first);
        first.extend_from_slice(head);
        all[0] = Bytes::from(first);
        let len = all.iter().map(Bytes::len).sum();
        Resource {
            name: name.into(),
            version,
            body: Body::Parts {
                parts: all.into(),
                len,
                joined: Arc::default(),
            },
            sent_at: Hint::default(),
            subscribed_at: Hint::default(),
        }
    }

    /// [`Resource::new`], shared.
    pub fn shared<M: Message + prost::Name>(name: impl Into<String>, message: &M) -> Arc<Resource> {
        Arc::new(Resource::new(name, message))
    }

    /// The version as sent on the wire: 16 lower-case hex digits.
    pub fn version_string(&self) -> String {
        format!("{:016x}", self.version)
    }

    /// The `Any` the resource is packed in.
    pub fn any(&self) -> Result<Any, prost::DecodeError> {
        Any::decode(self.body.to_bytes())
    }

    /// Decodes the body back into its message (for tests and debugging).
    pub fn decode<M: Message + Default>(&self) -> Result<M, prost::DecodeError> {
        M::decode(self.any()?.value.as_slice())
    }
}

/// An encoded resource: one buffer, or parts whose concatenation is the encoding (shared
/// with whatever else holds them; the response encoder writes them one by one).
#[derive(Clone, Debug)]
pub enum Body {
    /// The whole encoding.
    One(Bytes),
    /// The encoding in order, in at least one part.
    Parts {
        /// The parts, concatenated in order.
        parts: Arc<[Bytes]>,
        /// Their total length.
        len: usize,
        /// Their concatenation while some response being sent holds it.
        joined: Arc<Joined>,
    },
}

/// The concatenation of a body in parts, kept only as long as responses hold it: a push
/// sends a route configuration to every proxy of its namespace at about the same time, and
/// written part by part it cost each stream a copy of every virtual host (~460 KiB; +30 % of
/// the server's CPU per VirtualService change at 100 proxies, docs/benchmarks.md). Joined
/// once per push and shared, it costs one copy, and nothing once the push is sent.
#[derive(Debug, Default)]
pub struct Joined(std::sync::Mutex<std::sync::Weak<JoinedBytes>>);

/// The joined bytes behind their own `Arc`, so that the buffer is freed with the last
/// response holding it; [`Joined`]'s `Weak` then keeps only this small header allocated (a
/// `Weak<[u8]>` would keep the whole buffer's allocation).
#[derive(Debug)]
pub struct JoinedBytes(Vec<u8>);

/// A response's hold on the joined bytes.
struct Held(Arc<JoinedBytes>);

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.0 .0
    }
}

impl Body {
    /// Length of the encoding.
    pub fn len(&self) -> usize {
        match self {
            Body::One(b) => b.len(),
            Body::Parts { len, .. } => *len,
        }
    }

    /// Whether the encoding is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The encoding's parts in order (one for [`Body::One`]).
    pub fn parts(&self) -> &[Bytes] {
        match self {
            Body::One(b) => std::slice::from_ref(b),
            Body::Parts { parts, .. } => parts,
        }
    }

    /// The encoding in one buffer to send: shared for [`Body::One`]; for parts, the joined
    /// copy that responses in flight share, made again when none holds it any more.
    pub fn for_sending(&self) -> Bytes {
        match self {
            Body::One(b) => b.clone(),
            Body::Parts { parts, len, joined } => {
                let mut held = joined.0.lock().unwrap_or_else(|e| e.into_inner());
                let all = held.upgrade().unwrap_or_else(|| {
                    let mut all = Vec::with_capacity(*len);
                    for p in parts.iter() {
                        all.extend_from_slice(p);
                    }
                    let all = Arc::new(JoinedBytes(all));
                    *held = Arc::downgrade(&all);
                    all
                });
                Bytes::from_owner(Held(all))
            }
        }
    }

    /// The encoding in one buffer: shared for [`Body::One`], a concatenated copy otherwise
    /// (for debugging and tests; responses are written part by part).
    pub fn to_bytes(&self) -> Bytes {
        match self {
            Body::One(b) => b.clone(),
            Body::Parts { parts, len, .. } => {
                let mut all = Vec::with_capacity(*len);
                for p in parts.iter() {
                    all.extend_from_slice(p);
                }
                Bytes::from(all)
            }
        }
    }

    /// The encoding, copied into a `Vec`.
    pub fn to_vec(&self) -> Vec<u8> {
        self.to_bytes().into()
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Body {
        Body::One(bytes)
    }
}

/// Bodies are equal when their encodings are, however they are cut into parts.
impl PartialEq for Body {
    fn eq(&self, other: &Body) -> bool {
        self.len() == other.len()
            && self
                .parts()
                .iter()
                .flat_map(|p| p.iter())
                .eq(other.parts().iter().flat_map(|p| p.iter()))
    }
}

impl Eq for Body {}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;

    #[test]
    fn versions_follow_content_and_bodies_round_trip() {
        let a = Cluster {
            name: "a".into(),
            ..Cluster::default()
        };
        let b = Cluster {
            name: "b".into(),
            ..Cluster::default()
        };
        let ra = Resource::new("a", &a);
        assert_eq!(ra.version, Resource::new("a", &a).version);
        assert_ne!(ra.version, Resource::new("b", &b).version);
        assert_eq!(ra.decode::<Cluster>().unwrap(), a);
        assert_eq!(ra.any().unwrap().type_url, CLUSTER);
        assert_eq!(ra.version_string().len(), 16);
        let rebuilt = Resource::from_encoded("a", CLUSTER, a.encode_to_vec());
        assert_eq!(rebuilt.any().unwrap(), ra.any().unwrap());
        assert_eq!(rebuilt.decode::<Cluster>().unwrap(), a);
    }

    /// A body in parts is the same encoding as the message encoded at once, and equal to it.
    #[test]
    fn a_body_in_parts_is_the_whole_encoding() {
        let c = Cluster {
            name: "outbound|9080||reviews.default.svc.cluster.local".into(),
            alt_stat_name: "x".repeat(300),
            ..Cluster::default()
        };
        let value = c.encode_to_vec();
        let whole = Resource::with_version("c", CLUSTER, &value, 7);
        let (head, rest) = value.split_at(5);
        let pieces = [&rest[..100], &rest[100..100], &rest[100..]];
        let parts = Resource::from_parts(
            "c",
            CLUSTER,
            head,
            pieces.iter().map(|p| Bytes::copy_from_slice(p)),
            7,
        );
        assert_eq!(parts.body.to_bytes(), whole.body.to_bytes());
        assert_eq!(parts.body.len(), whole.body.len());
        assert_eq!(parts.body.parts().len(), 3, "empty parts are dropped");
        assert_eq!(parts, whole);
        assert_eq!(parts.decode::<Cluster>().unwrap(), c);
        let other = Resource::from_parts("c", CLUSTER, &value[..4], [Bytes::new()], 7);
        assert_ne!(other.body, whole.body);
    }

    #[test]
    fn a_body_in_parts_is_joined_once_while_responses_hold_it() {
        let parts = Resource::from_parts(
            "r",
            ROUTE,
            b"\n\x01r",
            (0..4).map(|i| Bytes::from(vec![b'a' + i; 50])),
            7,
        );
        let first = parts.body.for_sending();
        assert_eq!(first, parts.body.to_bytes());
        let second = parts.body.clone().for_sending();
        assert_eq!(first.as_ptr(), second.as_ptr(), "shared while held");
        let at = first.as_ptr() as usize;
        drop((first, second));
        let Body::Parts { joined, .. } = &parts.body else {
            panic!("a body in parts");
        };
        let held = joined.0.lock().unwrap();
        assert!(
            held.upgrade().is_none(),
            "freed once no response holds it ({at:#x})"
        );
        drop(held);
        assert_eq!(parts.body.for_sending(), parts.body.to_bytes());
    }
}
