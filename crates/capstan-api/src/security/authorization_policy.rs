//! Placeholder for `AuthorizationPolicy` (being written).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Placeholder: AuthorizationPolicy (being written).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthorizationPolicy {}
