//! Who may open a stream for which node: istiod's check on its TLS port (15012) that a proxy
//! only claims a node in a namespace it holds an identity for (`pilot/pkg/xds/authentication.go`,
//! `checkConnectionIdentity`). Authentication itself is the transport's job: it attaches the
//! caller's identities to the request as an [`AuthenticatedPeer`] extension; the stream task
//! calls an [`Authorizer`] with them and the node of the first request.

use crate::proxy::Proxy;
use std::fmt;
use std::sync::Arc;
use tonic::Status;

/// One authenticated identity of a caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The identity as shown in messages, e.g. `spiffe://cluster.local/ns/default/sa/reviews`.
    pub id: String,
    /// The Kubernetes namespace the identity belongs to.
    pub namespace: String,
}

/// The caller's identities as the transport authenticated them (client certificate, token):
/// insert it in the request extensions before the ADS service sees the request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthenticatedPeer {
    /// Every identity the caller proved; empty means none.
    pub identities: Arc<[PeerIdentity]>,
}

impl AuthenticatedPeer {
    /// A peer with these identities.
    pub fn new(identities: Vec<PeerIdentity>) -> Self {
        AuthenticatedPeer {
            identities: identities.into(),
        }
    }
}

/// Decides whether an authenticated caller may be the proxy its first request names.
pub trait Authorizer: Send + Sync + fmt::Debug {
    /// `Ok` to serve the stream; otherwise the status it is closed with. `peer` is `None`
    /// when the transport attached no identities.
    fn authorize(&self, peer: Option<&AuthenticatedPeer>, proxy: &Proxy) -> Result<(), Status>;
}

/// Istio's rule: the caller must be authenticated, and every namespace the node claims (its
/// config namespace, the pod's namespace in the id, the DNS domain's) must be the namespace of
/// one of the caller's identities.
#[derive(Clone, Copy, Debug, Default)]
pub struct NamespaceAuthorizer;

/// The namespaces a node claims, without repeats: the one config is generated for, then those
/// written in the id (`POD.NAMESPACE` and `NAMESPACE.svc.DOMAIN`), which other consumers may
/// read. Stricter than istiod, which checks only the first: a node may not name one namespace
/// in its metadata and another in its id.
pub fn claimed_namespaces(proxy: &Proxy) -> Vec<&str> {
    let mut out = vec![proxy.namespace.as_str()];
    let from_pod = proxy.pod_id.rsplit_once('.').map(|(_, ns)| ns);
    let from_domain = proxy.dns_domain.split('.').next();
    for ns in [from_pod, from_domain].into_iter().flatten() {
        if !ns.is_empty() && !out.contains(&ns) {
            out.push(ns);
        }
    }
    out
}

impl Authorizer for NamespaceAuthorizer {
    fn authorize(&self, peer: Option<&AuthenticatedPeer>, proxy: &Proxy) -> Result<(), Status> {
        let Some(peer) = peer.filter(|p| !p.identities.is_empty()) else {
            return Err(Status::unauthenticated(
                "the stream is not authenticated: present a client certificate issued by the \
                 mesh CA or a service-account token",
            ));
        };
        let held = |ns: &str| peer.identities.iter().any(|id| id.namespace == ns);
        if let Some(foreign) = claimed_namespaces(proxy).into_iter().find(|ns| !held(ns)) {
            let ids: Vec<&str> = peer.identities.iter().map(|i| i.id.as_str()).collect();
            return Err(Status::permission_denied(format!(
                "node {} claims namespace {foreign:?}, but the caller is authenticated only \
                 as {}",
                proxy.id,
                ids.join(", ")
            )));
        }
        Ok(())
    }
}

/// What a stream on an authorizing service checks once it knows its node.
#[derive(Clone, Debug)]
pub(crate) struct Gate {
    pub authorizer: Arc<dyn Authorizer>,
    pub peer: Option<AuthenticatedPeer>,
}

impl Gate {
    pub fn check(&self, proxy: &Proxy) -> Result<(), Status> {
        self.authorizer.authorize(self.peer.as_ref(), proxy)
    }

    /// Whether the transport proved an identity (once [`Gate::check`] passed, the node's
    /// namespaces are among the identities').
    pub fn authenticated(&self) -> bool {
        self.peer.as_ref().is_some_and(|p| !p.identities.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};

    fn proxy(id: &str, namespace_metadata: Option<&str>) -> Proxy {
        let metadata = namespace_metadata.map(|ns| Struct {
            fields: [(
                "NAMESPACE".to_string(),
                Value {
                    kind: Some(Kind::StringValue(ns.into())),
                },
            )]
            .into(),
        });
        Proxy::from_node(Some(&Node {
            id: id.into(),
            metadata,
            ..Node::default()
        }))
        .unwrap()
    }

    fn peer(namespaces: &[&str]) -> AuthenticatedPeer {
        AuthenticatedPeer::new(
            namespaces
                .iter()
                .map(|ns| PeerIdentity {
                    id: format!("spiffe://cluster.local/ns/{ns}/sa/app"),
                    namespace: ns.to_string(),
                })
                .collect(),
        )
    }

    const IN_DEFAULT: &str = "sidecar~10.1.1.1~reviews-v1.default~default.svc.cluster.local";
    const IN_OTHER: &str = "sidecar~10.1.1.1~reviews-v1.other~other.svc.cluster.local";

    /// Name, caller, node, expected code and message part.
    type Case = (
        &'static str,
        Option<AuthenticatedPeer>,
        Proxy,
        Result<(), (tonic::Code, &'static str)>,
    );

    #[test]
    fn decisions_table() {
        use tonic::Code;
        let cases: Vec<Case> = vec![
            (
                "same namespace",
                Some(peer(&["default"])),
                proxy(IN_DEFAULT, None),
                Ok(()),
            ),
            (
                "one of several identities",
                Some(peer(&["other", "default"])),
                proxy(IN_DEFAULT, None),
                Ok(()),
            ),
            (
                "no peer",
                None,
                proxy(IN_DEFAULT, None),
                Err((Code::Unauthenticated, "not authenticated")),
            ),
            (
                "peer without identities",
                Some(peer(&[])),
                proxy(IN_DEFAULT, None),
                Err((Code::Unauthenticated, "not authenticated")),
            ),
            (
                "another namespace",
                Some(peer(&["default"])),
                proxy(IN_OTHER, None),
                Err((
                    Code::PermissionDenied,
                    "node sidecar~10.1.1.1~reviews-v1.other~other.svc.cluster.local claims \
                     namespace \"other\", but the caller is authenticated only as \
                     spiffe://cluster.local/ns/default/sa/app",
                )),
            ),
            (
                "metadata says ours, id says another",
                Some(peer(&["default"])),
                proxy(IN_OTHER, Some("default")),
                Err((Code::PermissionDenied, "claims namespace \"other\"")),
            ),
            (
                "id says ours, metadata says another",
                Some(peer(&["default"])),
                proxy(IN_DEFAULT, Some("other")),
                Err((Code::PermissionDenied, "claims namespace \"other\"")),
            ),
        ];
        for (name, peer, proxy, want) in cases {
            let got = NamespaceAuthorizer.authorize(peer.as_ref(), &proxy);
            match (got, want) {
                (Ok(()), Ok(())) => {}
                (Err(status), Err((code, message))) => {
                    assert_eq!(status.code(), code, "{name}: {status:?}");
                    assert!(status.message().contains(message), "{name}: {status:?}");
                }
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn claimed_namespaces_of_ids() {
        assert_eq!(claimed_namespaces(&proxy(IN_DEFAULT, None)), ["default"]);
        assert_eq!(
            claimed_namespaces(&proxy(IN_OTHER, Some("default"))),
            ["default", "other"]
        );
    }
}
