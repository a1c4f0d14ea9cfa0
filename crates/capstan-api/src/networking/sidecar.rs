//! Placeholder for `Sidecar` (being written).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Placeholder: Sidecar (being written).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Sidecar {
    /// Placeholder field used by batch checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<crate::common::WorkloadSelector>,
}
