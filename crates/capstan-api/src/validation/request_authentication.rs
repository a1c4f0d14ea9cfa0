//! Placeholder for `RequestAuthentication` validation (being written).

use super::{Context, Validate};
use crate::report::Report;
use crate::security::RequestAuthentication;

impl Validate for RequestAuthentication {
    fn validate(&self, _cx: &Context<'_>, _out: &mut Report) {}
}
