//! The config consumer's side of MCP-over-xDS, without I/O: what it has of each type, the
//! requests that (re)open a Delta stream, and how a response changes the store.
//!
//! State outlives streams: after a disconnect the store keeps every object (an upstream that is
//! down must not empty a mesh), and the next stream claims what is held in
//! `initial_resource_versions`, so the server sends only what changed meanwhile and, for names
//! it no longer has, removals (the xDS rule for wildcard subscriptions). A restarted upstream
//! therefore leaves exactly its current objects: nothing dropped, nothing left over twice.
//!
//! Each received object goes through the same decoding and validation as a file's objects
//! ([`capstan_api::decode::check_value`]). An object that fails is logged, named in the NACK,
//! and skipped; the others of the response apply, and a last good version of it stays.

use super::envelope::decode;
use super::wire::{kind_of_type_url, TYPE_URLS};
use crate::store::{ConfigChange, ConfigKey, ConfigStore};
use capstan_api::decode::{check_value, CheckOptions, RawDocument, Verdict};
use capstan_api::Kind;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use std::collections::BTreeMap;

/// `google.rpc.Code.INVALID_ARGUMENT`, the code of a NACK.
const INVALID_ARGUMENT: i32 = 3;

/// What the client has of one type.
#[derive(Debug)]
struct TypeState {
    type_url: &'static str,
    /// Name → version of what the server last sent: applied, or rejected (then the last good
    /// version, if any, stays in the store and the rejected content is not asked for again).
    have: BTreeMap<String, String>,
    /// A response of this type has been applied.
    answered: bool,
}

/// One received object that was not applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// Its type URL.
    pub type_url: String,
    /// Its resource name (`namespace/name`).
    pub name: String,
    /// Why.
    pub error: String,
}

/// The outcome of one response.
#[derive(Debug)]
pub struct Applied {
    /// The ACK, or the NACK naming every rejected object, to send back.
    pub reply: DeltaDiscoveryRequest,
    /// The objects that were not applied.
    pub rejected: Vec<Rejection>,
    /// What changed in the store.
    pub change: Option<ConfigChange>,
}

/// The state of one MCP config source across its streams.
#[derive(Debug)]
pub struct McpClient {
    source: String,
    opts: CheckOptions,
    types: Vec<TypeState>,
}

impl McpClient {
    /// A client putting objects in the store as `source`, subscribing to every Istio kind.
    pub fn new(source: impl Into<String>, opts: CheckOptions) -> McpClient {
        McpClient {
            source: source.into(),
            opts,
            types: TYPE_URLS
                .iter()
                .map(|type_url| TypeState {
                    type_url,
                    have: BTreeMap::new(),
                    answered: false,
                })
                .collect(),
        }
    }

    /// The name the objects have as their source in the store.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The requests that open a stream: a wildcard subscription to every type, claiming what
    /// is held; the first carries the node.
    pub fn subscriptions(&self, node: Node) -> Vec<DeltaDiscoveryRequest> {
        let mut node = Some(node);
        self.types
            .iter()
            .map(|t| DeltaDiscoveryRequest {
                node: node.take(),
                type_url: t.type_url.to_string(),
                resource_names_subscribe: vec!["*".to_string()],
                initial_resource_versions: t
                    .have
                    .iter()
                    .map(|(name, version)| (name.clone(), version.clone()))
                    .collect(),
                ..DeltaDiscoveryRequest::default()
            })
            .collect()
    }

    /// Whether every type has had a response applied (the first sync).
    pub fn synced(&self) -> bool {
        self.types.iter().all(|t| t.answered)
    }

    /// How many objects of `type_url` the client has been sent and holds on to.
    pub fn held(&self, type_url: &str) -> usize {
        self.types
            .iter()
            .find(|t| t.type_url == type_url)
            .map_or(0, |t| t.have.len())
    }

    /// Applies one response to `store` (as one store revision) and says what to answer.
    pub fn apply(&mut self, store: &ConfigStore, response: DeltaDiscoveryResponse) -> Applied {
        let reply = |error: Option<String>| DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            error_detail: error.map(|message| RpcStatus {
                code: INVALID_ARGUMENT,
                message,
                details: Vec::new(),
            }),
            ..DeltaDiscoveryRequest::default()
        };
        let (Some(kind), Some(state)) = (
            kind_of_type_url(&response.type_url),
            self.types
                .iter_mut()
                .find(|t| t.type_url == response.type_url),
        ) else {
            let error = format!("type {} was not subscribed to", response.type_url);
            tracing::warn!(source = %self.source, %error, "unexpected MCP response");
            return Applied {
                reply: reply(Some(error)),
                rejected: Vec::new(),
                change: None,
            };
        };
        let mut upserts = Vec::new();
        let mut rejected = Vec::new();
        for resource in &response.resources {
            let verdict = match &resource.resource {
                None => Err("the resource has no body".to_string()),
                Some(any) => decode(state.type_url, &resource.name, any)
                    .map_err(|e| e.to_string())
                    .and_then(|json| validate(json, &self.opts)),
            };
            match verdict {
                Ok(object) => upserts.push(object),
                Err(error) => {
                    tracing::error!(source = %self.source, type_url = state.type_url,
                        name = %resource.name, %error,
                        "invalid config object rejected; keeping its last good version");
                    rejected.push(Rejection {
                        type_url: state.type_url.to_string(),
                        name: resource.name.clone(),
                        error,
                    });
                }
            }
            state
                .have
                .insert(resource.name.clone(), resource.version.clone());
        }
        let mut deletes = Vec::new();
        for name in &response.removed_resources {
            state.have.remove(name);
            if let Some(key) = key_of(kind, name) {
                deletes.push(key);
            }
        }
        state.answered = true;
        let change = store.update_source(&self.source, upserts, &deletes);
        if let Some(change) = &change {
            tracing::info!(source = %self.source, type_url = state.type_url,
                revision = change.revision, events = change.events.len(), "config updated over MCP");
        }
        let error = (!rejected.is_empty()).then(|| {
            rejected
                .iter()
                .map(|r| format!("{}: {}", r.name, r.error))
                .collect::<Vec<_>>()
                .join("; ")
        });
        Applied {
            reply: reply(error),
            rejected,
            change,
        }
    }
}

/// The key of resource `namespace/name` of `kind`.
fn key_of(kind: Kind, name: &str) -> Option<ConfigKey> {
    let (namespace, name) = name.split_once('/')?;
    Some(ConfigKey {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
    })
}

/// Decodes and validates one object as the file source does.
fn validate(
    json: serde_json::Value,
    opts: &CheckOptions,
) -> Result<capstan_api::IstioObject, String> {
    let doc = RawDocument {
        index: 0,
        line: 1,
        text: "",
    };
    let mut results = Vec::with_capacity(1);
    check_value(json, &doc, opts, &mut results);
    let result = results
        .pop()
        .ok_or_else(|| "nothing to validate".to_string())?;
    match (result.verdict, result.object) {
        (Verdict::Valid, Some(object)) => Ok(*object),
        _ => Err(result
            .errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::envelope::{encode, resource_name};
    use crate::mcp::wire::{type_url, RESOURCE_TYPE};
    use capstan_api::{check_text, IstioObject};
    use envoy_types::pb::envoy::service::discovery::v3::Resource;
    use envoy_types::pb::google::protobuf::Any;

    const PA: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: NAME, namespace: ns}\nspec: {mtls: {mode: MODE}}\n";
    const PA_URL: &str = "security.istio.io/v1beta1/PeerAuthentication";

    fn pa(name: &str, mode: &str) -> IstioObject {
        let text = PA.replace("NAME", name).replace("MODE", mode);
        *check_text(&text, &CheckOptions::default())
            .remove(0)
            .object
            .expect("valid")
    }

    fn resource(object: &IstioObject, version: &str) -> Resource {
        Resource {
            name: resource_name(&object.metadata.namespace, &object.metadata.name),
            version: version.into(),
            resource: Some(Any {
                type_url: RESOURCE_TYPE.into(),
                value: encode(object),
            }),
            ..Resource::default()
        }
    }

    fn response(
        type_url: &str,
        nonce: &str,
        resources: Vec<Resource>,
        removed: &[&str],
    ) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            type_url: type_url.into(),
            nonce: nonce.into(),
            resources,
            removed_resources: removed.iter().map(|s| s.to_string()).collect(),
            ..DeltaDiscoveryResponse::default()
        }
    }

    fn names(store: &ConfigStore) -> Vec<String> {
        store
            .snapshot()
            .objects
            .keys()
            .map(|k| k.to_string())
            .collect()
    }

    fn empty(type_url: &str) -> DeltaDiscoveryResponse {
        response(type_url, "n0", vec![], &[])
    }

    #[test]
    fn first_sync_needs_every_type() {
        let store = ConfigStore::new();
        let mut client = McpClient::new("xds://a:15010", CheckOptions::default());
        let opening = client.subscriptions(Node {
            id: "me".into(),
            ..Node::default()
        });
        assert_eq!(opening.len(), Kind::ALL.len());
        assert_eq!(opening[0].node.as_ref().map(|n| n.id.as_str()), Some("me"));
        assert!(opening[1..].iter().all(|r| r.node.is_none()));
        assert!(
            opening
                .iter()
                .all(|r| r.resource_names_subscribe == ["*"]
                    && r.initial_resource_versions.is_empty())
        );
        for kind in Kind::ALL {
            assert!(!client.synced());
            let applied = client.apply(&store, empty(type_url(*kind)));
            assert!(applied.reply.error_detail.is_none() && applied.change.is_none());
            assert_eq!(applied.reply.response_nonce, "n0");
        }
        assert!(client.synced());
    }

    #[test]
    fn applies_updates_and_removals_and_nacks_bad_objects_only() {
        let store = ConfigStore::new();
        let mut client = McpClient::new("xds://a:15010", CheckOptions::default());
        let (a, b) = (pa("a", "STRICT"), pa("b", "PERMISSIVE"));
        let applied = client.apply(
            &store,
            response(
                PA_URL,
                "1",
                vec![resource(&a, "va"), resource(&b, "vb")],
                &[],
            ),
        );
        assert!(applied.reply.error_detail.is_none());
        assert_eq!(applied.change.expect("added").events.len(), 2);
        assert_eq!(
            names(&store),
            ["PeerAuthentication/ns/a", "PeerAuthentication/ns/b"]
        );
        assert_eq!(
            store
                .snapshot()
                .objects
                .values()
                .next()
                .unwrap()
                .source
                .as_ref(),
            "xds://a:15010"
        );

        // One bad update (port-level mTLS without a selector: decodes, fails validation)
        // next to a good one and a removal.
        let json = serde_json::json!({
            "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "a", "namespace": "ns"},
            "spec": {"portLevelMtls": {"8080": {"mode": "DISABLE"}}},
        });
        let Ok(capstan_api::Decoded::Istio(bad)) = IstioObject::decode(json) else {
            panic!("decodes")
        };
        let bad_resource = resource(&bad, "va2");
        let c = pa("c", "STRICT");
        let applied = client.apply(
            &store,
            response(
                PA_URL,
                "2",
                vec![bad_resource, resource(&c, "vc")],
                &["ns/b"],
            ),
        );
        let nack = applied.reply.error_detail.expect("NACK");
        assert!(
            nack.message
                .contains("ns/a: spec.portLevelMtls: mesh/namespace peer authentication"),
            "{nack:?}"
        );
        assert_eq!(applied.reply.response_nonce, "2");
        assert_eq!(applied.rejected.len(), 1);
        assert_eq!(
            names(&store),
            ["PeerAuthentication/ns/a", "PeerAuthentication/ns/c"],
            "a keeps its last good version, b is removed, c is added"
        );
        let kept = store
            .snapshot()
            .objects
            .values()
            .next()
            .unwrap()
            .object
            .clone();
        assert_eq!((&kept.metadata, &kept.spec), (&a.metadata, &a.spec));
        assert_eq!(client.held(PA_URL), 2);
    }

    #[test]
    fn a_reconnect_claims_what_is_held_and_keeps_the_store() {
        let store = ConfigStore::new();
        let mut client = McpClient::new("xds://a:15010", CheckOptions::default());
        let (a, b) = (pa("a", "STRICT"), pa("b", "STRICT"));
        client.apply(
            &store,
            response(
                PA_URL,
                "1",
                vec![resource(&a, "va"), resource(&b, "vb")],
                &[],
            ),
        );
        let revision = store.snapshot().revision;
        // The stream breaks: nothing happens to the store. The next stream claims both.
        let again = client.subscriptions(Node::default());
        let claim = again.iter().find(|r| r.type_url == PA_URL).expect("PA");
        assert_eq!(claim.initial_resource_versions.len(), 2);
        assert_eq!(claim.initial_resource_versions["ns/a"], "va");
        assert_eq!(store.snapshot().revision, revision);
        // The restarted upstream no longer has b and changed nothing else.
        let applied = client.apply(&store, response(PA_URL, "1", vec![], &["ns/b"]));
        assert_eq!(applied.change.expect("b removed").events.len(), 1);
        assert_eq!(names(&store), ["PeerAuthentication/ns/a"]);
        // Resending an unchanged object changes nothing.
        let applied = client.apply(&store, response(PA_URL, "2", vec![resource(&a, "va")], &[]));
        assert!(applied.change.is_none());
        let claim = client.subscriptions(Node::default());
        let claim = claim.iter().find(|r| r.type_url == PA_URL).unwrap();
        assert_eq!(
            claim.initial_resource_versions.keys().collect::<Vec<_>>(),
            ["ns/a"]
        );
    }

    #[test]
    fn unexpected_types_and_bodies_are_refused() {
        let store = ConfigStore::new();
        let mut client = McpClient::new("s", CheckOptions::default());
        let applied = client.apply(
            &store,
            empty("type.googleapis.com/envoy.config.cluster.v3.Cluster"),
        );
        assert!(applied.reply.error_detail.is_some());
        let mut no_body = resource(&pa("a", "STRICT"), "v");
        no_body.resource = None;
        let applied = client.apply(&store, response(PA_URL, "1", vec![no_body], &[]));
        assert_eq!(applied.rejected[0].error, "the resource has no body");
        assert!(store.snapshot().objects.is_empty());
        // A resource of another kind's type is judged as that type says: it must match.
        let vs_url = type_url(Kind::VirtualService);
        let applied = client.apply(
            &store,
            response(vs_url, "1", vec![resource(&pa("a", "STRICT"), "v")], &[]),
        );
        assert_eq!(
            applied.rejected.len(),
            1,
            "a PeerAuthentication spec is no VirtualService"
        );
    }
}
