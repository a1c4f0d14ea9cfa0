//! The Istio kinds Capstan understands: their group, versions, names and spec types.

use crate::networking::{
    DestinationRule, Gateway, ServiceEntry, Sidecar, VirtualService, WorkloadEntry, WorkloadGroup,
};
use crate::security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};
use serde::Serialize;
use std::fmt;

/// `networking.istio.io`
pub const NETWORKING_GROUP: &str = "networking.istio.io";
/// `security.istio.io`
pub const SECURITY_GROUP: &str = "security.istio.io";

/// Versions served for networking kinds; the first is the storage version.
pub const NETWORKING_VERSIONS: &[&str] = &["v1", "v1beta1", "v1alpha3"];
/// Versions served for security kinds; the first is the storage version.
pub const SECURITY_VERSIONS: &[&str] = &["v1", "v1beta1"];

macro_rules! kinds {
    ($( $variant:ident : $ty:ty, $group:expr, $versions:expr, $plural:literal, [$($short:literal),*], [$($cat:literal),*] ;)*) => {
        /// An Istio configuration kind.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        pub enum Kind {
            $(
                #[doc = concat!("`", stringify!($variant), "`")]
                $variant,
            )*
        }

        impl Kind {
            /// Every kind, in a stable order.
            pub const ALL: &'static [Kind] = &[$(Kind::$variant),*];

            /// The kind's name as written in `kind:`.
            pub const fn name(self) -> &'static str {
                match self { $(Kind::$variant => stringify!($variant)),* }
            }

            /// API group.
            pub const fn group(self) -> &'static str {
                match self { $(Kind::$variant => $group),* }
            }

            /// Served versions; the first is the storage version.
            pub const fn versions(self) -> &'static [&'static str] {
                match self { $(Kind::$variant => $versions),* }
            }

            /// Lower-case plural resource name (`virtualservices`).
            pub const fn plural(self) -> &'static str {
                match self { $(Kind::$variant => $plural),* }
            }

            /// `kubectl` short names, as Istio's CRDs declare them.
            pub const fn short_names(self) -> &'static [&'static str] {
                match self { $(Kind::$variant => &[$($short),*]),* }
            }

            /// `kubectl get <category>` categories, as Istio's CRDs declare them.
            pub const fn categories(self) -> &'static [&'static str] {
                match self { $(Kind::$variant => &[$($cat),*]),* }
            }
        }

        /// The typed spec of an Istio object, one variant per kind. Shared (`Arc`): the push
        /// contexts' config indexes hold the specs the store holds instead of copies.
        #[derive(Clone, Debug, PartialEq, Serialize)]
        #[serde(untagged)]
        pub enum Spec {
            $(
                #[doc = concat!("A `", stringify!($variant), "` spec.")]
                $variant(std::sync::Arc<$ty>),
            )*
        }

        impl Spec {
            /// The kind of this spec.
            pub fn kind(&self) -> Kind {
                match self { $(Spec::$variant(_) => Kind::$variant),* }
            }

            /// Decodes the spec of `kind` from JSON, naming the failing field path.
            pub(crate) fn decode(kind: Kind, value: &serde_json::Value) -> Result<Spec, serde_path_to_error::Error<serde_json::Error>> {
                Ok(match kind {
                    $(Kind::$variant => Spec::$variant(std::sync::Arc::new(serde_path_to_error::deserialize(value)?))),*
                })
            }

            /// Validates the spec against Istio's rules.
            pub fn validate(&self, cx: &crate::validation::Context<'_>, out: &mut crate::report::Report) {
                use crate::validation::Validate;
                match self { $(Spec::$variant(s) => s.validate(cx, out)),* }
            }

            /// The JSON schema of a kind's spec (for CRDs).
            pub fn schema(kind: Kind, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
                match kind { $(Kind::$variant => generator.subschema_for::<$ty>()),* }
            }
        }
    };
}

kinds! {
    VirtualService: VirtualService, NETWORKING_GROUP, NETWORKING_VERSIONS, "virtualservices", ["vs"], ["istio-io", "networking-istio-io"];
    DestinationRule: DestinationRule, NETWORKING_GROUP, NETWORKING_VERSIONS, "destinationrules", ["dr"], ["istio-io", "networking-istio-io"];
    Gateway: Gateway, NETWORKING_GROUP, NETWORKING_VERSIONS, "gateways", ["gw"], ["istio-io", "networking-istio-io"];
    ServiceEntry: ServiceEntry, NETWORKING_GROUP, NETWORKING_VERSIONS, "serviceentries", ["se"], ["istio-io", "networking-istio-io"];
    Sidecar: Sidecar, NETWORKING_GROUP, NETWORKING_VERSIONS, "sidecars", [], ["istio-io", "networking-istio-io"];
    WorkloadEntry: WorkloadEntry, NETWORKING_GROUP, NETWORKING_VERSIONS, "workloadentries", ["we"], ["istio-io", "networking-istio-io"];
    WorkloadGroup: WorkloadGroup, NETWORKING_GROUP, NETWORKING_VERSIONS, "workloadgroups", ["wg"], ["istio-io", "networking-istio-io"];
    PeerAuthentication: PeerAuthentication, SECURITY_GROUP, SECURITY_VERSIONS, "peerauthentications", ["pa"], ["istio-io", "security-istio-io"];
    AuthorizationPolicy: AuthorizationPolicy, SECURITY_GROUP, SECURITY_VERSIONS, "authorizationpolicies", ["ap"], ["istio-io", "security-istio-io"];
    RequestAuthentication: RequestAuthentication, SECURITY_GROUP, SECURITY_VERSIONS, "requestauthentications", ["ra"], ["istio-io", "security-istio-io"];
}

impl Kind {
    /// Looks a kind up by `apiVersion` (`group/version`) and `kind`.
    /// Returns `Ok(None)` for groups that are not Istio's, and `Err` for an Istio group
    /// with an unknown kind or version.
    pub fn from_type(api_version: &str, kind: &str) -> Result<Option<Kind>, String> {
        let Some((group, version)) = api_version.split_once('/') else {
            return Ok(None);
        };
        if group != NETWORKING_GROUP && group != SECURITY_GROUP {
            return Ok(None);
        }
        let Some(found) = Kind::ALL
            .iter()
            .copied()
            .find(|k| k.group() == group && k.name() == kind)
        else {
            let known: Vec<&str> = Kind::ALL
                .iter()
                .filter(|k| k.group() == group)
                .map(|k| k.name())
                .collect();
            return Err(format!(
                "unknown kind {kind:?} in group {group} (known: {})",
                known.join(", ")
            ));
        };
        if !found.versions().contains(&version) {
            return Err(format!(
                "{kind} is not served at version {version:?} (served: {})",
                found.versions().join(", ")
            ));
        }
        Ok(Some(found))
    }

    /// The storage version's `apiVersion` (`networking.istio.io/v1`).
    pub fn api_version(self) -> String {
        format!("{}/{}", self.group(), self.versions()[0])
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
