//! Placeholder for `ServiceEntry` (being written).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Placeholder: ServiceEntry (being written).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceEntry {}
