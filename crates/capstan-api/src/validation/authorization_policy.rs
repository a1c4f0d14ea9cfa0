//! Placeholder for `AuthorizationPolicy` validation (being written).

use super::{Context, Validate};
use crate::report::Report;
use crate::security::AuthorizationPolicy;

impl Validate for AuthorizationPolicy {
    fn validate(&self, _cx: &Context<'_>, _out: &mut Report) {}
}
