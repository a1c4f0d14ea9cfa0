//! `PeerAuthentication`: which mutual-TLS mode workloads accept for incoming traffic.

use crate::common::WorkloadSelector;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Mutual-TLS settings for a mesh, a namespace or selected workloads, optionally per port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PeerAuthentication {
    /// Workloads the policy applies to; the whole namespace (or mesh, in the root namespace) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Mutual-TLS settings for the selected workloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MutualTls>,
    /// Per-port overrides, keyed by the workload's port number (as a string in YAML).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_level_mtls: Option<BTreeMap<String, MutualTls>>,
}

/// Mutual-TLS settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MutualTls {
    /// The mode; UNSET inherits from the parent policy.
    #[serde(default, skip_serializing_if = "is_unset")]
    pub mode: MtlsMode,
}

fn is_unset(m: &MtlsMode) -> bool {
    *m == MtlsMode::Unset
}

/// Mutual-TLS mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit from the parent policy (PERMISSIVE when nothing sets it).
    #[default]
    Unset,
    /// Plain text only.
    Disable,
    /// Both plain text and mutual TLS.
    Permissive,
    /// Mutual TLS only.
    Strict,
}
