//! Placeholder for `PeerAuthentication` (being written).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Placeholder: PeerAuthentication (being written).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PeerAuthentication {}
