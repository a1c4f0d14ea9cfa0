//! Placeholder for `WorkloadEntry` (being written).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Placeholder: WorkloadEntry (being written).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadEntry {}

/// Placeholder: WorkloadGroup (being written).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadGroup {}
