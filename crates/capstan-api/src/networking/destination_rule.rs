//! Placeholder for `DestinationRule` (being written).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Placeholder: DestinationRule (being written).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DestinationRule {}
